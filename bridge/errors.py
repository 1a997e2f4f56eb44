"""Errors answered in the engine's own shape, so clients parse them as they parse OpenSearch's."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web


def error_body(status: int, error_type: str, reason: str, **extra: Any) -> dict[str, Any]:
    """``{"error":{"root_cause":[...],"type":...,"reason":...},"status":N}`` as OpenSearch writes it."""
    cause = {"type": error_type, "reason": reason, **extra}
    return {"error": {"root_cause": [cause], **cause}, "status": status}


def error_response(status: int, error_type: str, reason: str, **extra: Any) -> web.Response:
    return web.Response(
        status=status,
        body=json.dumps(error_body(status, error_type, reason, **extra)).encode(),
        content_type="application/json",
        charset="UTF-8",
    )


def message_response(status: int, message: str, *, with_status: bool) -> web.Response:
    """The engine's terser shape for requests no handler takes: ``{"error":"…"}`` (405s add ``"status"``)."""
    body: dict[str, Any] = {"error": message}
    if with_status:
        body["status"] = status
    return web.Response(
        status=status, body=json.dumps(body).encode(), content_type="application/json", charset="UTF-8"
    )


class BridgeHTTPError(Exception):
    """Raised anywhere on the request path; the HTTP surface turns it into the engine's error shape."""

    def __init__(self, status: int, error_type: str, reason: str, *, close: bool = False) -> None:
        super().__init__(reason)
        self.status = status
        self.error_type = error_type
        self.reason = reason
        self.close = close  # the client connection cannot carry another request (say, half a body is unread)

    def to_response(self) -> web.Response:
        response = error_response(self.status, self.error_type, self.reason)
        if self.close:
            response.force_close()
        return response


class ClientDisconnected(Exception):
    """The client went away (``cause``: ``closed``) or stopped reading (``write_timeout``): nobody to answer.

    Not an error of the bridge's: logged at INFO and access-logged as 499. ``response`` is what was under way.
    """

    def __init__(self, response: web.StreamResponse, cause: str) -> None:
        super().__init__(cause)
        self.response = response
        self.cause = cause


def bad_request(reason: str, error_type: str = "illegal_argument_exception") -> BridgeHTTPError:
    return BridgeHTTPError(400, error_type, reason)


def parsing_error(reason: str) -> BridgeHTTPError:
    return BridgeHTTPError(400, "parsing_exception", reason)
