"""HTTP/1.1 to the engine: a keep-alive connection pool that parses only what a relay needs.

aiohttp's client is general (URL objects, cookies, redirects, tracing, automatic headers) and on the passthrough
path it cost the bridge more than everything else together. The engine is one known origin, so the bridge writes
the request head itself and reads the answer with a small parser: a status line, headers, then a body framed by
``Content-Length``, by chunked transfer coding or by the end of the connection. Bodies stream both ways.
"""

from __future__ import annotations

import asyncio
import collections
import re
import ssl
import time
from collections.abc import AsyncIterable, AsyncIterator, Mapping
from typing import cast

from multidict import CIMultiDict

MAX_HEAD_BYTES = 64 * 1024
# Reading from the engine pauses while this much of an answer waits unread (a slow client of a large answer).
HIGH_WATER = 1 << 20
_NO_BODY_STATUSES = frozenset({204, 304})
_CHUNK_SIZE = re.compile(rb"[0-9A-Fa-f]{1,15}")
_IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})


class EngineError(Exception):
    """The engine could not be reached, went quiet or broke off; the bridge answers 502 or 504."""


class ConnectFailed(EngineError):
    def __init__(self, error: OSError) -> None:
        super().__init__(str(error))
        self.os_error = error


class EngineTimeout(EngineError, TimeoutError):
    pass


class PoolTimeout(EngineError):
    """Every connection stayed busy for the pool's deadline: the bridge answers 503 rather than queue forever."""


class EngineDisconnected(EngineError):
    """The connection closed before the answer was complete, or the answer was not HTTP/1.x."""


class _Connection(asyncio.Protocol):
    """One socket to the engine: a receive buffer the parser reads from, with flow control both ways."""

    def __init__(self, loop: asyncio.AbstractEventLoop, read_timeout: float) -> None:
        self.loop = loop
        self.read_timeout = read_timeout
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.eof = False
        self.idle_since = 0.0
        self.idle = False  # parked in the pool: any byte arriving now is unsolicited
        self.last_write = 0.0
        self.received = False  # any byte since the current request was sent
        self._waiter: asyncio.Future[None] | None = None
        self._drained: asyncio.Future[None] | None = None
        self._reading_paused = False

    # -- asyncio.Protocol ---------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass asyncio's

    def data_received(self, data: bytes) -> None:
        if self.idle:
            # Bytes nobody asked for (a misbehaving engine or middlebox): they would be read as the next
            # request's answer, and every later answer would be one behind. The connection is never reused.
            self.close()
            return
        self.buffer += data
        self.received = True
        if len(self.buffer) > HIGH_WATER and not self._reading_paused and self.transport is not None:
            self.transport.pause_reading()
            self._reading_paused = True
        self.wake()

    def eof_received(self) -> bool:
        self.eof = True
        self.wake()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.eof = True
        self.wake()
        self.resume_writing()  # a writer waiting to drain wakes up and fails on its next write

    def pause_writing(self) -> None:
        if self._drained is None:
            self._drained = self.loop.create_future()

    def resume_writing(self) -> None:
        drained, self._drained = self._drained, None
        if drained is not None and not drained.done():
            drained.set_result(None)

    # -- used by the exchange -----------------------------------------------------------------------------

    @property
    def usable(self) -> bool:
        return not self.eof and self.transport is not None and not self.transport.is_closing()

    def write(self, data: bytes) -> None:
        if self.eof or self.transport is None or self.transport.is_closing():
            raise EngineDisconnected("the engine closed the connection")
        self.transport.write(data)
        self.last_write = time.monotonic()

    async def drain(self) -> None:
        if self._drained is not None:
            await self._drained

    async def more(self) -> None:
        """Wait for bytes beyond those buffered; raises after ``read_timeout`` seconds of silence or at the end."""
        if self.eof:
            raise EngineDisconnected("the engine closed the connection before its answer was complete")
        if self._reading_paused and self.transport is not None:
            self._reading_paused = False
            self.transport.resume_reading()
        waiter = self.loop.create_future()
        self._waiter = waiter
        timer = self.loop.call_later(self.read_timeout, _expire, waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            self._waiter = None

    def take(self, count: int) -> bytes:
        if count >= len(self.buffer):
            data = bytes(self.buffer)
            self.buffer.clear()
            return data
        with memoryview(self.buffer) as view:
            data = bytes(view[:count])
        del self.buffer[:count]
        return data

    def park(self) -> None:
        """Idle in the pool: reading resumes so that anything the engine sends now is noticed."""
        self.idle = True
        self.idle_since = time.monotonic()
        if self._reading_paused and self.transport is not None:
            self._reading_paused = False
            self.transport.resume_reading()

    def close(self) -> None:
        self.eof = True
        self.idle = False
        if self.transport is not None:
            self.transport.close()

    def wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(EngineTimeout("the engine did not answer in time"))


class EngineResponse:
    """One answer: status and headers parsed, the body still on the connection until read or iterated."""

    def __init__(
        self,
        pool: ConnectionPool,
        connection: _Connection,
        status: int,
        reason: str,
        headers: CIMultiDict[str],
        framing: str,
        length: int,
        keep_alive: bool,
        writer: asyncio.Task[None] | None,
    ) -> None:
        self.status = status
        self.reason = reason
        self.headers = headers
        self._pool = pool
        self._connection: _Connection | None = connection
        self._framing = framing  # "none", "length", "chunked" or "eof"
        self._remaining = length
        self._keep_alive = keep_alive
        self._writer = writer
        self._consumed = False

    async def read(self) -> bytes:
        """The whole body (the caller bounds its size by the headers)."""
        connection = self._connection
        if (
            self._framing == "length"
            and connection is not None
            and len(connection.buffer) >= self._remaining
            and not self._consumed
        ):
            # The common case: the whole answer arrived with its head.
            self._consumed = True
            body = connection.take(self._remaining)
            self._remaining = 0
            self._done()
            return body
        return b"".join([chunk async for chunk in self.iter_chunks()])

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives, transfer coding removed."""
        if self._consumed:
            raise RuntimeError("the answer's body was read already")
        self._consumed = True
        connection = self._connection
        if connection is None:
            return
        if self._framing == "length":
            while self._remaining:
                if not connection.buffer:
                    await connection.more()
                chunk = connection.take(min(self._remaining, len(connection.buffer)))
                self._remaining -= len(chunk)
                yield chunk
        elif self._framing == "chunked":
            async for chunk in _dechunk(connection):
                yield chunk
        elif self._framing == "eof":
            while True:
                if connection.buffer:
                    yield connection.take(len(connection.buffer))
                if connection.eof:
                    break
                try:
                    await connection.more()
                except EngineDisconnected:
                    break
        self._done()

    def _done(self) -> None:
        """The body is complete: the connection goes back to the pool if both sides are finished with it."""
        connection, self._connection = self._connection, None
        if connection is None:
            return
        sent = _settle(self._writer)
        reusable = sent and self._keep_alive and self._framing != "eof" and not connection.buffer
        self._pool.release(connection, reusable=reusable)

    def close(self) -> None:
        """Give the connection up: back to the pool when the answer was read whole, else closed."""
        if self._connection is None:
            return
        if self._framing == "none":
            self._done()
            return
        connection, self._connection = self._connection, None
        _settle(self._writer)
        self._pool.release(connection, reusable=False)


def _settle(writer: asyncio.Task[None] | None) -> bool:
    """True when the request body went out whole; a writer still running is stopped."""
    if writer is None:
        return True
    if not writer.done():
        writer.cancel()
        return False
    return not writer.cancelled() and writer.exception() is None


async def _dechunk(connection: _Connection) -> AsyncIterator[bytes]:
    """Chunked transfer coding (RFC 9112 7.1): data chunks out, sizes, extensions and trailers dropped."""

    async def line() -> bytes:
        while True:
            end = connection.buffer.find(b"\r\n")
            if end >= 0:
                return connection.take(end + 2)[:-2]
            if len(connection.buffer) > MAX_HEAD_BYTES:
                raise EngineDisconnected("the engine sent a malformed chunk")
            await connection.more()

    while True:
        size_line = (await line()).split(b";", 1)[0].strip(b" \t")
        if _CHUNK_SIZE.fullmatch(size_line) is None:  # int(..., 16) alone would take "0x5", "+5" and "5_0"
            raise EngineDisconnected(f"the engine sent a malformed chunk size: {size_line[:20]!r}")
        size = int(size_line, 16)
        if size == 0:
            while await line():  # trailer fields, up to the empty line
                pass
            return
        while size:
            if not connection.buffer:
                await connection.more()
            chunk = connection.take(min(size, len(connection.buffer)))
            size -= len(chunk)
            yield chunk
        if await line():
            raise EngineDisconnected("the engine sent a malformed chunk")


class ConnectionPool:
    """Connections to one engine node: at most ``limit`` requests at once (each holds one connection from its
    send until its answer is read), idle ones kept alive and reused most recently used first. A request that
    finds all ``limit`` busy waits at most ``pool_timeout`` seconds for one."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        host_header: str,
        ssl_context: ssl.SSLContext | None,
        limit: int,
        connect_timeout: float,
        read_timeout: float,
        keepalive_timeout: float = 60.0,
        pool_timeout: float = 10.0,
    ) -> None:
        self.host = host
        self.port = port
        self.host_header = host_header
        self.ssl_context = ssl_context
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.keepalive_timeout = keepalive_timeout
        self.pool_timeout = pool_timeout
        self.limit = limit
        self.in_use = 0
        self.waiting = 0
        self._slots = asyncio.Semaphore(limit)
        self._idle: collections.deque[_Connection] = collections.deque()
        self._closed = False

    async def send(
        self,
        method: str,
        target: str,
        headers: Mapping[str, str],
        body: bytes | AsyncIterable[bytes] | None,
    ) -> EngineResponse:
        """Send a request and read the answer's head; the caller reads the body, then closes the answer."""
        if self._closed:
            raise EngineDisconnected("the bridge is shutting down")
        await self._acquire()
        try:
            connection = self._reuse()
            if connection is not None:
                try:
                    return await self._exchange(connection, method, target, headers, body)
                except EngineDisconnected:
                    # The engine closed an idle connection as the request went out. As browsers and Go's client
                    # do, retry once on a fresh one, only where that cannot apply a change twice: an idempotent
                    # method, a body that can be sent again, and not a byte of an answer seen.
                    replayable = body is None or isinstance(body, bytes)
                    if connection.received or not replayable or method not in _IDEMPOTENT:
                        raise
            connection = await self._connect()
            return await self._exchange(connection, method, target, headers, body)
        except BaseException:
            self._release_slot()
            raise

    @property
    def saturated(self) -> bool:
        """Every connection busy and requests queued behind them."""
        return self.in_use >= self.limit and self.waiting > 0

    def release(self, connection: _Connection, *, reusable: bool) -> None:
        if reusable and connection.usable and not connection.buffer and not self._closed:
            connection.park()
            self._idle.append(connection)
        else:
            connection.close()
        self._release_slot()

    async def _acquire(self) -> None:
        if self._slots.locked():
            self.waiting += 1
            try:
                async with asyncio.timeout(self.pool_timeout):
                    await self._slots.acquire()
            except TimeoutError as error:
                raise PoolTimeout(
                    f"all {self.limit} connections stayed busy for {self.pool_timeout}s"
                ) from error
            finally:
                self.waiting -= 1
        else:
            await self._slots.acquire()
        self.in_use += 1

    def _release_slot(self) -> None:
        self.in_use -= 1
        self._slots.release()

    async def close(self) -> None:
        self._closed = True
        while self._idle:
            self._idle.pop().close()

    def _reuse(self) -> _Connection | None:
        oldest = time.monotonic() - self.keepalive_timeout
        while self._idle:
            connection = self._idle.pop()
            if connection.usable and not connection.buffer and connection.idle_since >= oldest:
                connection.idle = False
                return connection
            connection.close()
        return None

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, connection = await loop.create_connection(
                    lambda: _Connection(loop, self.read_timeout),
                    self.host,
                    self.port,
                    ssl=self.ssl_context,
                    server_hostname=self.host if self.ssl_context is not None else None,
                )
        except TimeoutError as error:
            raise EngineTimeout(
                f"no connection to {self.host}:{self.port} within {self.connect_timeout}s"
            ) from error
        except OSError as error:
            raise ConnectFailed(error) from error
        return connection

    async def _exchange(
        self,
        connection: _Connection,
        method: str,
        target: str,
        headers: Mapping[str, str],
        body: bytes | AsyncIterable[bytes] | None,
    ) -> EngineResponse:
        writer: asyncio.Task[None] | None = None
        try:
            connection.received = False
            head = [f"{method} {target} HTTP/1.1\r\nHost: {self.host_header}\r\n"]
            whole = isinstance(body, bytes)
            head.extend(
                f"{name}: {value}\r\n"
                for name, value in headers.items()
                if not whole or name.lower() != "content-length"
            )
            if isinstance(body, bytes):
                head.append(f"Content-Length: {len(body)}\r\n\r\n")
                connection.write("".join(head).encode("utf-8", "surrogateescape") + body)
            elif body is None:
                head.append("\r\n")
                connection.write("".join(head).encode("utf-8", "surrogateescape"))
            else:
                chunked = not any(name.lower() == "content-length" for name in headers)
                if chunked:
                    head.append("Transfer-Encoding: chunked\r\n")
                head.append("\r\n")
                connection.write("".join(head).encode("utf-8", "surrogateescape"))
                # The body goes out beside the answer's reading: an engine may answer (say, refuse) early.
                writer = asyncio.create_task(_stream_body(connection, body, chunked))
                writer.add_done_callback(lambda _: connection.wake())
            return await self._read_head(connection, method, writer)
        except BaseException:
            _settle(writer)
            connection.close()
            raise

    async def _read_head(
        self, connection: _Connection, method: str, writer: asyncio.Task[None] | None
    ) -> EngineResponse:
        while True:
            end = connection.buffer.find(b"\r\n\r\n")
            while end < 0:
                if len(connection.buffer) > MAX_HEAD_BYTES:
                    raise EngineDisconnected("the engine's answer head is too large")
                if writer is not None and writer.done() and not writer.cancelled():
                    failure = writer.exception()
                    if failure is not None:
                        raise failure
                try:
                    await connection.more()
                except EngineTimeout:
                    if writer is None or writer.done():
                        raise
                    # Still sending a large body: the engine's silence counts once the request is all out, or
                    # once the upload itself stalls (the engine stopped reading it, or the client stopped
                    # sending it) for as long.
                    if time.monotonic() - connection.last_write >= self.read_timeout:
                        raise
                end = connection.buffer.find(b"\r\n\r\n")
            lines = connection.take(end + 4)[:-4].decode("utf-8", "surrogateescape").split("\r\n")
            version, status, reason = _status_line(lines[0])
            if 100 <= status < 200 and status != 101:
                continue  # 100 Continue and other interim answers: the final one follows
            headers = _header_fields(lines[1:])
            framing, length = _framing(method, status, headers)
            keep_alive = _keep_alive(version, headers) and status != 101
            return EngineResponse(
                self, connection, status, reason, headers, framing, length, keep_alive, writer
            )


async def _stream_body(connection: _Connection, body: AsyncIterable[bytes], chunked: bool) -> None:
    async for chunk in body:
        if not chunk:
            continue
        connection.write(b"%x\r\n%b\r\n" % (len(chunk), chunk) if chunked else chunk)
        await connection.drain()
    if chunked:
        connection.write(b"0\r\n\r\n")


def _status_line(line: str) -> tuple[str, int, str]:
    version, _, rest = line.partition(" ")
    code, _, reason = rest.partition(" ")
    if not version.startswith("HTTP/1.") or len(code) != 3 or not code.isdigit():
        raise EngineDisconnected(f"the engine's answer is not HTTP/1.x: {line[:80]!r}")
    return version, int(code), reason.strip()


def _header_fields(lines: list[str]) -> CIMultiDict[str]:
    fields: list[tuple[str, str]] = []
    for line in lines:
        if line[:1] in (" ", "\t") and fields:  # obsolete line folding: a continuation of the field above
            name, value = fields[-1]
            fields[-1] = (name, f"{value} {line.strip()}")
            continue
        name, colon, value = line.partition(":")
        if not colon or not name or name != name.strip():
            raise EngineDisconnected(f"the engine sent a malformed header line: {line[:80]!r}")
        fields.append((name, value.strip(" \t")))
    return CIMultiDict(fields)


def _framing(method: str, status: int, headers: CIMultiDict[str]) -> tuple[str, int]:
    """How the body ends (RFC 9112 6.3): no body, a length, chunked, or the connection's end."""
    if method == "HEAD" or status in _NO_BODY_STATUSES or status < 200:
        return "none", 0
    codings = headers.getall("Transfer-Encoding", [])
    if codings:
        last = ",".join(codings).rsplit(",", 1)[-1].strip().lower()
        return ("chunked", 0) if last == "chunked" else ("eof", 0)
    lengths = {value.strip() for value in headers.getall("Content-Length", [])}
    if lengths:
        if len(lengths) != 1 or not next(iter(lengths)).isdigit():
            raise EngineDisconnected(f"the engine sent an invalid Content-Length: {sorted(lengths)}")
        length = int(next(iter(lengths)))
        return ("length", length) if length else ("none", 0)
    return "eof", 0


def connection_options(headers: CIMultiDict[str]) -> set[str]:
    """The lower-cased tokens of every ``Connection`` header (``close``, ``keep-alive``, header names)."""
    return {
        token.strip().lower()
        for value in headers.getall("Connection", ())
        for token in value.split(",")
        if token.strip()
    }


def _keep_alive(version: str, headers: CIMultiDict[str]) -> bool:
    tokens = connection_options(headers)
    if "close" in tokens:
        return False
    return version != "HTTP/1.0" or "keep-alive" in tokens
