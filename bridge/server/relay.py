"""Passthrough: relay a request to the engine and its answer back, streamed both ways, changing nothing."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterable, AsyncIterator, Mapping
from dataclasses import dataclass

from aiohttp import web

from bridge.errors import BridgeHTTPError, ClientDisconnected
from bridge.search.body import client_body
from bridge.server.fidelity import record_headers
from bridge.server.http1 import EngineDisconnected, EngineError
from bridge.server.upstream import Upstream, end_to_end

log = logging.getLogger(__name__)

# aiohttp writes its own framing; the engine's length is restored explicitly where the body is unchanged.
_FRAMING = frozenset({"content-length"})
_SMALL = 256 * 1024


@dataclass(frozen=True)
class ClientTimeouts:
    """How long a client may keep the bridge waiting: pausing within its body, or leaving an answer unread."""

    body_s: float = 60.0
    write_s: float = 60.0


client_timeouts_key = web.AppKey("client_timeouts", ClientTimeouts)
_DEFAULT_TIMEOUTS = ClientTimeouts()


def client_timeouts(request: web.Request) -> ClientTimeouts:
    return request.config_dict.get(client_timeouts_key, _DEFAULT_TIMEOUTS)


async def relay(
    request: web.Request,
    upstream: Upstream,
    *,
    path: str | None = None,
    body: bytes | None = None,
    drop_headers: tuple[str, ...] = (),
    add_headers: Mapping[str, str] | None = None,
) -> web.StreamResponse:
    """Forward ``request`` as is. ``body`` (and ``path``) are given when the bridge already read (or cleaned) them;
    ``add_headers`` (the bridge's own, such as ``X-Rerank``) go on the answer, streamed or not."""
    headers = upstream.forward_headers(request.headers)
    for name in drop_headers:
        headers.popall(name, None)
    timeouts = client_timeouts(request)
    data: bytes | AsyncIterable[bytes] | None
    if body is not None:
        data = body
    elif request.body_exists:
        # Stream: a large _bulk body never sits whole in memory. The client's Content-Length is kept so the
        # engine sees the same framing; without one (chunked) the bridge sends chunked too.
        data = client_body(request, timeouts.body_s)
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
            if add_headers:
                small.headers.update(add_headers)
            return small
        response = web.StreamResponse(status=answer.status, reason=answer.reason)
        response.headers.extend(headers)
        if add_headers:
            response.headers.update(add_headers)
        if known is not None:
            response.content_length = known
        record_headers(response)
        try:
            await response.prepare(request)
            if request.method == "HEAD":
                return response
            await _copy(answer.iter_chunks(), response, timeouts.write_s)
            async with asyncio.timeout(timeouts.write_s):
                await response.write_eof()
        except EngineError:
            # Headers are gone already: the only honest signal left is a broken connection.
            log.warning("upstream broke off mid-answer", extra={"path": request.path})
            if request.transport is not None:
                request.transport.close()
            return response
        except TimeoutError as error:  # the client's, not the engine's (EngineTimeout is an EngineError)
            if request.transport is not None:
                request.transport.close()
            raise ClientDisconnected(response, "write_timeout") from error
        except ConnectionError as error:
            raise ClientDisconnected(response, "closed") from error
        return response


async def send_whole(request: web.Request, response: web.StreamResponse) -> None:
    """Write an answer built whole (a small relay, a reranked search, an error) here, under the client write
    timeout. Left to aiohttp it would be written after the handler, with no bound: a client that never reads
    would pin it in memory for good, and be access-logged as a 200."""
    try:
        await response.prepare(request)
        async with asyncio.timeout(client_timeouts(request).write_s):
            await response.write_eof()
            await _flushed(request)
    except TimeoutError as error:
        if request.transport is not None:
            request.transport.close()
        raise ClientDisconnected(response, "write_timeout") from error
    except ConnectionError as error:
        raise ClientDisconnected(response, "closed") from error


async def _copy(chunks: AsyncIterator[bytes], response: web.StreamResponse, write_timeout_s: float) -> None:
    """The engine's body to the client; a client that takes nothing for ``write_timeout_s`` is given up on, so
    a slow reader cannot hold an upstream connection for good."""
    async for chunk in chunks:
        async with asyncio.timeout(write_timeout_s):
            await response.write(chunk)


async def _flushed(request: web.Request) -> None:
    """Until the transport has handed the answer to the socket: ``write_eof`` returns once a large body sits in
    the transport's buffer, read or not. Small answers leave nothing there, so nothing waits."""
    transport = request.transport
    pause = 0.005
    while transport is not None and not transport.is_closing() and transport.get_write_buffer_size() > 0:
        await asyncio.sleep(pause)
        pause = min(pause * 2, 0.1)
