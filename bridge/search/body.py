"""A search body read once, inflated once, and never larger than ``limits.max_search_body_bytes``.

A 150 KB gzip body can inflate to 150 MiB: inflating it whole stalls the event loop for seconds and holds the
whole result in memory. Inflation here is streamed with a cap (one byte past the limit is enough to refuse),
starts on the event loop for the common small body and finishes on a worker thread for a large one.
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar

from aiohttp import web

from bridge.errors import BridgeHTTPError
from bridge.search.json_codec import parse_answer, parse_json

# Inflated on the event loop at most; a body that inflates further finishes on a worker thread.
INLINE_INFLATE_BYTES = 256 * 1024
# Compressed input is fed in slices of at most this, the first of each gzip member smaller: a member that ends
# early leaves the slice's rest to be copied, and a body can hold hundreds of thousands of members.
_FIRST_SLICE = 1024
_MAX_SLICE = 64 * 1024
# The work of starting a gzip member, in bytes of the inline budget: empty members inflate to nothing.
_MEMBER_COST = 1024
# Work on a body longer than this (parsing, planning, re-encoding) runs on a worker thread: for a 10 MiB body
# each takes from a few hundred milliseconds to seconds, which the event loop must not wait out.
INLINE_WORK_BYTES = 256 * 1024
P = ParamSpec("P")
T = TypeVar("T")
_GZIP = frozenset({"gzip", "x-gzip"})
_DEFLATE = frozenset({"deflate", "x-deflate"})


@dataclass(frozen=True)
class SearchBody:
    raw: bytes
    """The bytes as the client sent them: what an untouched relay sends on."""
    text: bytes
    """The body the bridge reads: ``raw`` inflated once (``raw`` itself when not compressed)."""
    readable: bool
    """False for a content coding the bridge cannot decode (unknown, corrupt, truncated): the engine judges it."""

    @property
    def empty(self) -> bool:
        return not self.text.strip()


async def read_search_body(request: web.Request, limit: int, timeout_s: float) -> SearchBody:
    """The body of a search, or an engine-shaped 413 when it (or what it inflates to) exceeds ``limit``, or a
    408 when the client pauses longer than ``timeout_s`` while sending it."""
    if request.content_length is not None and request.content_length > limit:
        raise too_large(f"search body of {request.content_length} bytes", limit, close=True)
    raw = await _read(request, limit, timeout_s)
    coding = request.headers.get("Content-Encoding", "").strip().lower()
    if coding in ("", "identity"):
        return SearchBody(raw, raw, True)
    if coding not in _GZIP and coding not in _DEFLATE:
        return SearchBody(raw, raw, False)
    text = await inflate(raw, gzip=coding in _GZIP, limit=limit)
    return SearchBody(raw, raw, False) if text is None else SearchBody(raw, text, True)


async def client_body(request: web.Request, timeout_s: float) -> AsyncIterator[bytes]:
    """The request body as it arrives; a pause longer than ``timeout_s`` is the engine-shaped 408.

    Without it a client that sends headers and then nothing holds its upstream connection (or its search) for
    good. The relay streams it on; a search reads it whole.
    """
    content = request.content
    while True:
        try:
            async with asyncio.timeout(timeout_s):
                chunk = await content.readany()
        except TimeoutError as error:
            raise BridgeHTTPError(
                408,
                "request_timeout_exception",
                f"the request body did not arrive: nothing for {timeout_s}s",
                close=True,
            ) from error
        if not chunk:
            return
        yield chunk


async def _read(request: web.Request, limit: int, timeout_s: float) -> bytes:
    parts: list[bytes] = []
    size = 0
    async for chunk in client_body(request, timeout_s):
        size += len(chunk)
        if size > limit:
            raise too_large(f"search body of at least {size} bytes", limit, close=True)
        parts.append(chunk)
    return b"".join(parts)


async def inflate(raw: bytes, *, gzip: bool, limit: int) -> bytes | None:
    """``raw`` inflated, None when it is not a complete stream of that coding; a 413 beyond ``limit`` bytes."""
    inflation = _Inflation(raw, gzip=gzip, limit=limit)
    try:
        if inflation.run(INLINE_INFLATE_BYTES):
            return inflation.result()
        return await asyncio.to_thread(inflation.finish)
    except _Unreadable:
        return None
    except _TooLarge:
        raise too_large("search body inflating", limit) from None


async def off_loop_if_large(size: int, function: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """``function(*args, **kwargs)``, on a worker thread when the body it works on has more than
    :data:`INLINE_WORK_BYTES` (it must then touch nothing but its arguments)."""
    if size <= INLINE_WORK_BYTES:
        return function(*args, **kwargs)
    return await asyncio.to_thread(function, *args, **kwargs)


async def parse_off_loop(raw: bytes) -> Any:
    """:func:`parse_json` of a client body, off the event loop when large."""
    return await off_loop_if_large(len(raw), parse_json, raw)


async def parse_answer_off_loop(raw: bytes) -> Any:
    """:func:`parse_answer` of an engine's answer, off the event loop when large."""
    return await off_loop_if_large(len(raw), parse_answer, raw)


def too_large(what: str, limit: int, *, close: bool = False) -> BridgeHTTPError:
    """The engine-shaped 413; ``close`` when the rest of the body is left unread on the connection."""
    return BridgeHTTPError(
        413, "content_too_long_exception", f"{what} exceeds the bridge's limit of {limit} bytes", close=close
    )


class _Unreadable(Exception):
    pass


class _TooLarge(Exception):
    pass


class _Inflation:
    """One body's streamed inflation; ``run`` may continue on another thread where the last one stopped.

    The decompressor is fed bounded slices of ``raw`` (never the rest of the body) and a new gzip member starts
    from a small slice: otherwise each member end copies the whole remaining body, and a body of thousands of
    empty members inflates in quadratic time.
    """

    def __init__(self, raw: bytes, *, gzip: bool, limit: int) -> None:
        self._gzip = gzip
        self._limit = limit
        self._raw = raw
        self._view = memoryview(raw)
        self._at = 0
        """How much of ``raw`` the decompressor has consumed."""
        self._slice = _FIRST_SLICE
        self._parts: list[bytes] = []
        self.size = 0
        self._inflater = self._new()

    def _new(self) -> zlib._Decompress:
        if self._gzip:
            return zlib.decompressobj(31)
        # As the engine's decoder: a zlib stream, or raw deflate when the zlib header is absent.
        data = self._raw
        zlib_header = len(data) >= 2 and data[0] & 0x0F == 8 and (data[0] << 8 | data[1]) % 31 == 0
        return zlib.decompressobj(15 if zlib_header else -15)

    def run(self, budget: int | None) -> bool:
        """Inflate with up to ``budget`` more bytes of work (input read, output made, members started; all with
        None); True once the whole body is inflated."""
        spent = 0
        try:
            while True:
                if self._inflater.eof:
                    if not self._next_member():
                        return True
                    spent += _MEMBER_COST
                room = self._limit + 1 - self.size
                if budget is not None:
                    room = min(room, budget - spent)
                if room <= 0:
                    return False
                chunk = self._view[self._at : self._at + self._slice]
                out = self._inflater.decompress(chunk, room)
                # At a member's end the input left is ``unused_data`` (``unconsumed_tail`` may be left stale).
                left = self._inflater.unused_data if self._inflater.eof else self._inflater.unconsumed_tail
                used = len(chunk) - len(left)
                self._at += used
                spent += used + len(out)
                self._slice = min(2 * self._slice, _MAX_SLICE)
                if out:
                    self._parts.append(out)
                    self.size += len(out)
                    if self.size > self._limit:
                        raise _TooLarge
                elif not used and not self._inflater.eof:
                    raise _Unreadable  # truncated: no input left and the stream has not ended
        except zlib.error as error:
            raise _Unreadable from error

    def _next_member(self) -> bool:
        """Start the gzip member after the one just ended; False when the body ends there (trailing NUL padding
        after a gzip member is tolerated)."""
        rest = len(self._raw) - self._at
        if not self._gzip or rest == 0:
            return False
        if self._raw[self._at] == 0:
            if self._raw.count(0, self._at) == rest:
                return False
            raise _Unreadable  # NULs and then more: not a gzip member
        self._inflater = self._new()
        self._slice = _FIRST_SLICE
        return True

    def result(self) -> bytes:
        return b"".join(self._parts)

    def finish(self) -> bytes:
        self.run(None)
        return self.result()
