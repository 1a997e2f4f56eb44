"""The bridge's HTTP/1.1 client to the engine, against scripted servers on 127.0.0.1 that send exact bytes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import pytest

from bridge.server.http1 import HIGH_WATER, ConnectionPool, EngineDisconnected, EngineTimeout, PoolTimeout

Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@dataclass
class Seen:
    connections: int = 0
    open_now: int = 0
    most_open: int = 0
    requests: list[tuple[list[str], bytes]] = field(default_factory=list)


@asynccontextmanager
async def scripted(script: Script) -> AsyncIterator[tuple[ConnectionPool, Seen]]:
    """A server running ``script`` on each connection, and a pool pointed at it."""
    seen = Seen()

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.connections += 1
        seen.open_now += 1
        seen.most_open = max(seen.most_open, seen.open_now)
        try:
            await script(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            seen.open_now -= 1
            writer.close()

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    pool = ConnectionPool(
        "127.0.0.1",
        port,
        host_header=f"127.0.0.1:{port}",
        ssl_context=None,
        limit=4,
        connect_timeout=2,
        read_timeout=0.5,
    )
    try:
        yield pool, seen
    finally:
        await pool.close()
        server.close()
        await server.wait_closed()


async def read_request(reader: asyncio.StreamReader, seen: Seen) -> tuple[list[str], bytes]:
    """One request: head lines and body (Content-Length or chunked, decoded)."""
    head = (await reader.readuntil(b"\r\n\r\n")).decode().split("\r\n")[:-2]
    fields = {line.split(":", 1)[0].lower(): line.split(":", 1)[1].strip() for line in head[1:]}
    body = b""
    if "content-length" in fields:
        body = await reader.readexactly(int(fields["content-length"]))
    elif fields.get("transfer-encoding") == "chunked":
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip(), 16)
            chunk = await reader.readexactly(size + 2)
            if size == 0:
                break
            body += chunk[:-2]
    seen.requests.append((head, body))
    return head, body


def answer(body: bytes, *extra: str) -> bytes:
    lines = ["HTTP/1.1 200 OK", "Content-Type: application/json", f"Content-Length: {len(body)}", *extra]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def get(pool: ConnectionPool, target: str = "/", method: str = "GET", body: object = None) -> bytes:
    response = await pool.send(method, target, {"Accept": "application/json"}, body)  # type: ignore[arg-type]
    try:
        return await response.read()
    finally:
        response.close()


async def test_keep_alive_connection_is_reused_and_the_head_is_exact() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await read_request(reader, seen)
            writer.write(answer(b'{"ok":true}'))

    async with scripted(script) as (pool, seen):
        assert await get(pool, "/a%2Fb?q=%C3%A9") == b'{"ok":true}'
        assert await get(pool, "/second") == b'{"ok":true}'
    assert seen.connections == 1
    head, _ = seen.requests[0]
    assert head[0] == "GET /a%2Fb?q=%C3%A9 HTTP/1.1"
    assert head[1] == f"Host: 127.0.0.1:{pool.port}"
    assert "Accept: application/json" in head


async def test_chunked_answer_with_extensions_and_trailers() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await read_request(reader, seen)
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            writer.write(b"5;ext=1\r\nhello\r\n")
            await writer.drain()
            await asyncio.sleep(0.01)  # the rest arrives later, split mid-chunk
            writer.write(b"6\r\n wo")
            await writer.drain()
            await asyncio.sleep(0.01)
            writer.write(b"rld\r\n0\r\nX-Trailer: t\r\n\r\n")

    async with scripted(script) as (pool, seen):
        response = await pool.send("GET", "/", {}, None)
        chunks = [chunk async for chunk in response.iter_chunks()]
        response.close()
        assert b"".join(chunks) == b"hello world" and len(chunks) >= 2
        assert await get(pool) == b"hello world"
    assert seen.connections == 1


async def test_answer_framed_by_the_connections_end_is_read_whole_and_not_reused() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader, seen)
        writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end")
        await writer.drain()

    async with scripted(script) as (pool, seen):
        assert await get(pool) == b"until the end"
        assert await get(pool) == b"until the end"
    assert seen.connections == 2


async def test_head_204_and_304_have_no_body_and_keep_the_connection() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            head, _ = await read_request(reader, seen)
            if head[0].startswith("HEAD"):
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n")
            elif head[0].startswith("DELETE"):
                writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
            else:
                writer.write(b"HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n")

    async with scripted(script) as (pool, seen):
        response = await pool.send("HEAD", "/index", {}, None)
        assert response.status == 200 and response.headers["Content-Length"] == "1234"
        response.close()
        assert await get(pool, method="DELETE") == b""
        assert await get(pool) == b""
    assert seen.connections == 1


async def test_interim_100_continue_is_skipped() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader, seen)
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n" + answer(b"final", "Warning: 299 x"))

    async with scripted(script) as (pool, seen):
        response = await pool.send("PUT", "/doc", {"Expect": "100-continue"}, b"{}")
        assert response.status == 200 and response.reason == "OK"
        assert response.headers["Warning"] == "299 x"
        assert await response.read() == b"final"
        response.close()


async def test_idle_connection_closed_by_the_engine_is_replaced() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader, seen)
        writer.write(answer(b"once"))  # keep-alive promised, then the connection is closed
        await writer.drain()

    async with scripted(script) as (pool, seen):
        assert await get(pool) == b"once"
        await asyncio.sleep(0.05)
        assert await get(pool) == b"once"  # the closed idle connection is noticed and replaced
    assert seen.connections == 2


async def test_connection_closed_as_a_request_arrives_is_retried_for_idempotent_requests_only() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader, seen)
        writer.write(answer(b"once"))
        await writer.drain()
        await reader.readuntil(b"\r\n\r\n")  # the next request arrives; the engine closes without a word

    async with scripted(script) as (pool, seen):
        assert await get(pool) == b"once"
        assert await get(pool, method="PUT", body=b"{}") == b"once"  # sent again on a fresh connection
        assert seen.connections == 2
        with pytest.raises(EngineDisconnected):
            await get(pool, method="POST", body=b"{}")
        assert seen.connections == 2  # a POST is not sent twice


async def test_streamed_upload_goes_chunked_without_a_length_and_as_is_with_one() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            _, body = await read_request(reader, seen)
            writer.write(answer(str(len(body)).encode()))

    async def parts() -> AsyncIterator[bytes]:
        for index in range(50):
            yield b'{"index":{}}\n{"n":%d}\n' % index
            await asyncio.sleep(0)

    expected = b"".join(b'{"index":{}}\n{"n":%d}\n' % index for index in range(50))
    async with scripted(script) as (pool, seen):
        response = await pool.send("POST", "/_bulk", {"Content-Type": "application/x-ndjson"}, parts())
        assert await response.read() == str(len(expected)).encode()
        response.close()
        headers = {"Content-Length": str(len(expected))}
        response = await pool.send("POST", "/_bulk", headers, parts())
        assert await response.read() == str(len(expected)).encode()
        response.close()
    (chunked_head, chunked_body), (plain_head, plain_body) = seen.requests
    assert "Transfer-Encoding: chunked" in chunked_head and chunked_body == expected
    assert f"Content-Length: {len(expected)}" in plain_head and plain_body == expected
    assert seen.connections == 1


async def test_early_answer_while_the_body_still_streams() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(answer(b'{"status":413}').replace(b"200 OK", b"413 Request Entity Too Large"))
        await writer.drain()

    async def endless() -> AsyncIterator[bytes]:
        while True:
            yield b"x" * 65536
            await asyncio.sleep(0.001)

    async with scripted(script) as (pool, _):
        response = await pool.send("POST", "/_bulk", {}, endless())
        assert response.status == 413 and response.reason == "Request Entity Too Large"
        assert await response.read() == b'{"status":413}'
        response.close()
        assert not pool._idle  # a connection with a half-sent body is never reused


async def test_silence_is_a_timeout_and_a_truncated_body_a_disconnect() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head, _ = await read_request(reader, seen)
        if head[0].startswith("GET /silent"):
            await asyncio.sleep(5)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten b")
        await writer.drain()

    async with scripted(script) as (pool, seen):
        started = time.monotonic()
        with pytest.raises(EngineTimeout):
            await get(pool, "/silent")
        assert 0.4 < time.monotonic() - started < 2
        with pytest.raises(EngineDisconnected):
            await get(pool, "/truncated")


@pytest.mark.parametrize(
    "head",
    [
        b"SPDY/3 200 OK\r\n\r\n",
        b"HTTP/1.1 2000 OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n",
    ],
)
async def test_malformed_answers_are_disconnects(head: bytes) -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader, seen)
        writer.write(head)
        await writer.drain()
        await asyncio.sleep(1)

    async with scripted(script) as (pool, seen):
        with pytest.raises(EngineDisconnected):
            await get(pool)
        assert not pool._idle


async def test_connection_limit_queues_requests() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await read_request(reader, seen)
            await asyncio.sleep(0.02)
            writer.write(answer(b"ok"))

    async with scripted(script) as (pool, seen):
        results = await asyncio.gather(*(get(pool, f"/{index}") for index in range(12)))
    assert results == [b"ok"] * 12
    assert seen.most_open <= 4 and len(seen.requests) == 12


async def test_a_slow_reader_of_a_large_answer_holds_little_in_memory() -> None:
    size = 12 * HIGH_WATER

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader, seen)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size)
        block = b"y" * 65536
        for _ in range(size // len(block)):
            writer.write(block)
            await writer.drain()

    async with scripted(script) as (pool, seen):
        response = await pool.send("GET", "/big", {}, None)
        connection = response._connection
        assert connection is not None
        await asyncio.sleep(0.5)  # time enough for the server to send it all, were nothing paused
        buffered = len(connection.buffer)
        received = 0
        async for chunk in response.iter_chunks():
            received += len(chunk)
        response.close()
    assert received == size
    assert buffered < 2 * HIGH_WATER


async def test_a_slow_upload_is_not_the_engines_silence() -> None:
    """The read timeout (0.5 s here) starts once the request is all out, not while its body still streams."""

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        _, body = await read_request(reader, seen)
        writer.write(answer(str(len(body)).encode()))

    async def trickle() -> AsyncIterator[bytes]:
        for _ in range(6):
            await asyncio.sleep(0.2)
            yield b"z" * 100

    async with scripted(script) as (pool, seen):
        response = await pool.send("POST", "/_bulk", {}, trickle())
        assert await response.read() == b"600"
        response.close()


async def test_unsolicited_bytes_on_an_idle_connection_never_reach_the_next_request() -> None:
    """An engine (or middlebox) that writes on an idle keep-alive connection: the bytes are nobody's answer."""

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            head, _ = await read_request(reader, seen)
            writer.write(answer(head[0].split()[1].encode()))
            await writer.drain()
            if head[0].startswith("GET /first"):
                await asyncio.sleep(0.05)
                writer.write(answer(b"stray"))  # after the answer, unasked

    async with scripted(script) as (pool, seen):
        assert await get(pool, "/first") == b"/first"
        await asyncio.sleep(0.2)
        assert await get(pool, "/second") == b"/second"
        assert await get(pool, "/third") == b"/third"
    assert seen.connections == 2  # the connection that carried the stray answer was dropped, not reused


async def test_a_busy_pool_refuses_after_its_deadline_instead_of_queueing_forever() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            head, _ = await read_request(reader, seen)
            if head[0].startswith("GET /hold"):
                await asyncio.sleep(3)
            writer.write(answer(b"ok"))

    async with scripted(script) as (pool, seen):
        pool.pool_timeout = 0.3
        holders = [asyncio.create_task(get(pool, "/hold")) for _ in range(pool.limit)]
        await asyncio.sleep(0.1)
        assert pool.in_use == pool.limit and not pool.saturated
        started = time.monotonic()
        waiter = asyncio.create_task(get(pool, "/queued"))
        await asyncio.sleep(0.1)
        assert pool.saturated and pool.waiting == 1
        with pytest.raises(PoolTimeout):
            await waiter
        assert 0.25 < time.monotonic() - started < 1.5
        assert pool.waiting == 0 and not pool.saturated
        for holder in holders:
            holder.cancel()
        await asyncio.gather(*holders, return_exceptions=True)
        assert pool.in_use == 0
        assert await get(pool, "/after") == b"ok"  # the slots came back


async def test_an_upload_that_stops_flowing_is_bounded_by_the_read_timeout() -> None:
    """A body that stops mid-way (the client went quiet): the engine's read timeout (0.5 s) applies again."""

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(65536)
        await asyncio.sleep(5)

    async def stalls() -> AsyncIterator[bytes]:
        yield b"z" * 100
        await asyncio.sleep(30)
        yield b"never"

    async with scripted(script) as (pool, _):
        started = time.monotonic()
        with pytest.raises(EngineTimeout):
            await pool.send("POST", "/_bulk", {"Content-Length": "105"}, stalls())
        assert time.monotonic() - started < 2
        assert pool.in_use == 0
