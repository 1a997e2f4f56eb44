"""The client side of the wire: what aiohttp's server does with requests that are not HTTP/1.0 or HTTP/1.1.

aiohttp answers a request it cannot parse with ``text/plain`` that echoes the offending bytes, and logs an ERROR
with a traceback quoting them (an ``Authorization`` line, say); it also serves ``HTTP/0.9`` and ``HTTP/2.0``
request lines and answers them in that version. The bridge answers both with the engine's 400 shape, logs one
WARNING line without any of the request's bytes, and closes the connection.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from typing import Any

from aiohttp import hdrs, web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.http import HttpVersion10, HttpVersion11, RawRequestMessage
from aiohttp.http_exceptions import (
    BadHttpMethod,
    BadStatusLine,
    HttpProcessingError,
    InvalidHeader,
    InvalidURLError,
    LineTooLong,
    PayloadEncodingError,
)
from aiohttp.streams import StreamReader
from aiohttp.web_protocol import ERROR as PARSE_FAILED
from aiohttp.web_protocol import RequestHandler, _RequestFactory

from bridge.errors import error_body

log = logging.getLogger("bridge.server")

_HTTP1 = frozenset({HttpVersion10, HttpVersion11})
# Set on a request whose request line named another HTTP version; the app answers it 400 (in HTTP/1.1).
bad_version_key = web.RequestKey("unsupported_http_version", str)

# Fixed descriptions: an exception's own message quotes the request's bytes.
_PROBLEMS: tuple[tuple[type[HttpProcessingError], str], ...] = (
    (BadHttpMethod, "invalid method"),
    (BadStatusLine, "invalid request line"),
    (LineTooLong, "request line or header too long"),
    (InvalidHeader, "invalid header"),
    (InvalidURLError, "invalid request target"),
    (PayloadEncodingError, "invalid body framing"),
)
# llhttp's own descriptions ("Invalid header token", "Duplicate Content-Length") are fixed words before a colon.
_DESCRIPTION = re.compile(r"[A-Za-z][A-Za-z -]{2,60}")


def describe(error: BaseException) -> str:
    """What was wrong with a request, in words that quote none of its bytes."""
    for kind, problem in _PROBLEMS:
        if isinstance(error, kind):
            return problem
    if isinstance(error, HttpProcessingError):
        first = error.message.split("\n", 1)[0].split(":", 1)[0].strip()
        if _DESCRIPTION.fullmatch(first):
            return first[0].lower() + first[1:]
    return "malformed request"


class BridgeProtocol(RequestHandler):
    """aiohttp's request handler, answering requests it cannot parse as the engine does."""

    __slots__ = ()

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if not isinstance(exc, HttpProcessingError):
            return super().handle_error(request, status, exc, message)
        problem = describe(exc)
        log.warning("malformed request", extra={"remote": request.remote, "problem": problem})
        if request.writer.output_size > 0:
            raise ConnectionError("an answer is under way; the connection is dropped")
        code = status if 400 <= status < 500 else 400
        body = error_body(code, "illegal_argument_exception", f"malformed HTTP request: {problem}")
        response = _Unadorned(
            status=code, body=json.dumps(body).encode(), content_type="application/json", charset="UTF-8"
        )
        response.force_close()
        return response


class _Unadorned(web.Response):
    """An answer without aiohttp's ``Server`` and ``Date``: the app's prepare hook that strips them from every
    other answer (``fidelity.py``) never runs for a request that did not parse."""

    async def _prepare_headers(self) -> None:
        await super()._prepare_headers()
        self.headers.popall(hdrs.SERVER, None)
        self.headers.popall(hdrs.DATE, None)


def _checking_version(factory: _RequestFactory) -> _RequestFactory:
    """Requests in an HTTP version other than 1.0 or 1.1 are marked, and answered in HTTP/1.1, then closed; so
    are requests that did not parse (aiohttp's placeholder for them says HTTP/1.0)."""

    def make(
        message: RawRequestMessage,
        payload: StreamReader,
        protocol: RequestHandler,
        writer: AbstractStreamWriter,
        task: asyncio.Task[None],
    ) -> web.BaseRequest:
        if message is PARSE_FAILED:
            message = message._replace(version=HttpVersion11, should_close=True)
            return factory(message, payload, protocol, writer, task)
        if message.version in _HTTP1:
            return factory(message, payload, protocol, writer, task)
        version = f"HTTP/{message.version.major}.{message.version.minor}"
        request = factory(
            message._replace(version=HttpVersion11, should_close=True), payload, protocol, writer, task
        )
        request[bad_version_key] = version
        return request

    return make


class BridgeServer(web.Server):
    """aiohttp's server with the bridge's protocol."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._protocol_loop = kwargs["loop"]
        self._protocol_options = {
            name: value
            for name, value in kwargs.items()
            if name not in ("loop", "request_factory", "handler_cancellation")
        }

    def __call__(self) -> RequestHandler:
        return BridgeProtocol(self, loop=self._protocol_loop, **self._protocol_options)


class BridgeRunner(web.AppRunner):
    """``web.AppRunner`` serving through ``BridgeServer``."""

    def __init__(self, app: web.Application, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self._server_options = {
            name: value
            for name, value in kwargs.items()
            if name not in ("handle_signals", "shutdown_timeout")
        }

    async def _make_server(self) -> web.Server:
        plain = await super()._make_server()  # runs the app's startup and freezes it
        return BridgeServer(
            plain.request_handler,
            request_factory=_checking_version(plain.request_factory),
            loop=asyncio.get_running_loop(),
            **self._server_options,
        )
