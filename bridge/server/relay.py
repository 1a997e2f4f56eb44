"""Passthrough: relay a request to the engine and its answer back, streamed both ways, changing nothing."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterable

from aiohttp import web

from bridge.errors import BridgeHTTPError
from bridge.server.http1 import EngineDisconnected, EngineError
from bridge.server.upstream import Upstream, end_to_end

log = logging.getLogger(__name__)

# aiohttp writes its own framing; the engine's length is restored explicitly where the body is unchanged.
_FRAMING = frozenset({"content-length"})
_SMALL = 256 * 1024


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
    data: bytes | AsyncIterable[bytes] | None
    if body is not None:
        data = body
    elif request.body_exists:
        # Stream: a large _bulk body never sits whole in memory. The client's Content-Length is kept so the
        # engine sees the same framing; without one (chunked) the bridge sends chunked too.
        data = request.content.iter_any()
    else:
        data = None
    async with upstream.request(request.method, path or request.raw_path, headers, data) as answer:
        headers = end_to_end(answer.headers, drop=_FRAMING)
        length = answer.headers.get("Content-Length")
        known = int(length) if length is not None and length.isdigit() else None
        if request.method != "HEAD" and known is not None and known <= _SMALL:
            # Most answers are small: one read and one write beat a streamed copy.
            try:
                payload = await answer.read()
            except EngineDisconnected as error:
                raise BridgeHTTPError(
                    502, "upstream_unavailable_exception", "the search engine broke off its answer"
                ) from error
            small = web.Response(status=answer.status, reason=answer.reason, body=payload)
            small.headers.extend(headers)
            return small
        response = web.StreamResponse(status=answer.status, reason=answer.reason)
        response.headers.extend(headers)
        if known is not None:
            response.content_length = known
        await response.prepare(request)
        if request.method == "HEAD":
            return response
        try:
            async for chunk in answer.iter_chunks():
                await response.write(chunk)
        except EngineError:
            # Headers are gone already: the only honest signal left is a broken connection.
            log.warning("upstream broke off mid-answer", extra={"path": request.path})
            if request.transport is not None:
                request.transport.close()
            return response
        await response.write_eof()
        return response
