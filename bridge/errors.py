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


class BridgeHTTPError(Exception):
    """Raised anywhere on the request path; the HTTP surface turns it into the engine's error shape."""

    def __init__(self, status: int, error_type: str, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.error_type = error_type
        self.reason = reason

    def to_response(self) -> web.Response:
        return error_response(self.status, self.error_type, self.reason)


def bad_request(reason: str, error_type: str = "illegal_argument_exception") -> BridgeHTTPError:
    return BridgeHTTPError(400, error_type, reason)


def parsing_error(reason: str) -> BridgeHTTPError:
    return BridgeHTTPError(400, "parsing_exception", reason)
