"""A relayed answer carries exactly the engine's headers: aiohttp adds no ``Server``, ``Date`` or default
``Content-Type`` on the way. Checked byte-level against a scripted engine and against the real one."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from bridge.config import Settings
from tests.bridge_server import running_bridge
from tests.raw_http import RawAnswer, parse_answer

ANSWERS = {
    "/small": b"HTTP/1.1 200 OK\r\ncontent-type: application/json; charset=UTF-8\r\ncontent-length: 2\r\n\r\n{}",
    "/no-type": b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello",
    "/large": b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nX-Custom: a\r\ncontent-length: 300000\r\n\r\n"
    + b" " * 300_000,
    "/own-date": (
        b"HTTP/1.1 404 Not Found\r\nDate: Mon, 01 Jan 2024 00:00:00 GMT\r\nServer: engine/1\r\n"
        b"content-type: application/json; charset=UTF-8\r\ncontent-length: 2\r\n\r\n{}"
    ),
}


@pytest.fixture
async def scripted_engine() -> AsyncIterator[str]:
    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                writer.write(ANSWERS[head.split(b" ", 2)[1].decode()])
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    server.close()
    await server.wait_closed()


async def get_once(url: str, path: str) -> RawAnswer:
    """A keep-alive GET, its answer read by its length: nothing about the connection's end in the headers."""
    port = int(url.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n\r\n".encode())
        answer = parse_answer(await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10))
        answer.body = await reader.readexactly(int(answer.header("Content-Length") or 0))
        return answer
    finally:
        writer.close()


def header_set(answer: RawAnswer) -> list[tuple[str, str]]:
    return sorted((name.lower(), value) for name, value in answer.headers)


@pytest.mark.parametrize("path", sorted(ANSWERS))
async def test_relayed_answers_carry_exactly_the_engines_headers(scripted_engine: str, path: str) -> None:
    async with running_bridge(Settings(upstream={"url": scripted_engine})) as url:
        through = await get_once(url, path)
    direct = parse_answer(ANSWERS[path])
    assert through.status_line == direct.status_line
    assert header_set(through) == header_set(direct)
    assert through.body == direct.body


@pytest.mark.engine
@pytest.mark.parametrize("path", ["/", "/_cluster/health", "/no-such-index-rr-headers/_doc/1"])
async def test_the_real_engines_headers_pass_unchanged(opensearch_url: str, path: str) -> None:
    async with running_bridge(Settings(upstream={"url": opensearch_url})) as url:
        through = await get_once(url, path)
    direct = await get_once(opensearch_url, path)
    assert through.status_line == direct.status_line
    assert header_set(through) == header_set(direct)
