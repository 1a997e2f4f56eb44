"""Passthrough: relay a request to the engine and its answer back, streamed both ways, changing nothing."""

from __future__ import annotations

import logging

import aiohttp
from aiohttp import web

from bridge.server.upstream import Upstream, end_to_end

log = logging.getLogger(__name__)

# aiohttp writes its own framing; the engine's length is restored explicitly where the body is unchanged.
_FRAMING = frozenset({"content-length"})


async def relay(
    request: web.Request,
    upstream: Upstream,
    *,
    path: str | None = None,
    body: bytes | None = None,
    drop_headers: tuple[str, ...] = (),
) -> web.StreamResponse:
    """Forward ``request`` as is. ``body`` (and ``path``) are given when the bridge already read (or cleaned) them."""
    headers = upstream.forward_headers(request.headers)
    for name in drop_headers:
        headers.popall(name, None)
    data: object
    if body is not None:
        data = body
        headers.popall("Content-Length", None)
    elif request.body_exists:
        # Stream: a large _bulk body never sits whole in memory. The client's Content-Length is kept so the
        # engine sees the same framing; without one (chunked) aiohttp sends chunked too.
        data = request.content
    else:
        data = None
    async with upstream.request(request.method, path or request.raw_path, headers, data) as answer:
        response = web.StreamResponse(status=answer.status, reason=answer.reason)
        response.headers.extend(end_to_end(answer.headers, drop=_FRAMING))
        length = answer.headers.get("Content-Length")
        if length is not None and length.isdigit():
            response.content_length = int(length)
        await response.prepare(request)
        if request.method == "HEAD":
            return response
        try:
            async for chunk in answer.content.iter_any():
                await response.write(chunk)
        except (aiohttp.ClientPayloadError, aiohttp.ClientOSError, aiohttp.ServerDisconnectedError):
            # Headers are gone already: the only honest signal left is a broken connection.
            log.warning("upstream broke off mid-answer", extra={"path": request.path})
            if request.transport is not None:
                request.transport.close()
            return response
        await response.write_eof()
        return response
