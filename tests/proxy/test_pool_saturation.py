"""A few clients cannot hang everyone: stalled bodies time out (408), clients that do not read are let go, a
request that finds every engine connection busy gets a 503 after ``upstream.pool_timeout_s``, and
``/_bridge/health`` and ``/_bridge/ready`` say the pool is saturated (ready at once, without queueing itself)."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from bridge.config import Settings
from tests.bridge_server import running_bridge
from tests.ops.test_upstream_faults import assert_engine_error, serve
from tests.raw_http import parse_answer

BIG = 48 * 1024 * 1024


@pytest.fixture
async def engine() -> AsyncIterator[str]:
    big = b"x" * BIG

    async def handler(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        if request.path == "/big":
            return web.Response(body=big, content_type="application/octet-stream")
        return web.json_response({"path": request.path, "received": len(body)})

    runner, url = await serve(handler)
    yield url
    await runner.cleanup()


async def stalled_upload(url: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Headers promising a body, a few bytes of it, then nothing: a ``_bulk`` the bridge relays as it comes."""
    port = int(url.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        b"POST /_bulk HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-ndjson\r\n"
        b"Content-Length: 1000\r\n\r\n" + b'{"index":{}}\n'
    )
    await writer.drain()
    return reader, writer


async def test_stalled_uploads_get_503_for_others_then_408_for_themselves(engine: str) -> None:
    settings = Settings(
        upstream={"url": engine, "max_connections": 2, "pool_timeout_s": 0.5},
        server={"client_body_timeout_s": 2.0},
    )
    async with running_bridge(settings) as url, aiohttp.ClientSession() as http:
        stalled = [await stalled_upload(url) for _ in range(2)]
        await asyncio.sleep(0.3)  # both hold an engine connection now
        async with http.get(url + "/_bridge/health") as response:
            assert response.status == 200
            assert (await response.json())["upstream_pool"]["in_use"] == 2

        started = time.monotonic()
        queued = asyncio.create_task(http.get(url + "/some-index/_doc/1"))
        await asyncio.sleep(0.2)
        async with http.get(url + "/_bridge/health") as response:
            health = await response.json()
            assert response.status == 200 and health["status"] == "saturated"
            assert health["upstream_pool"] == {"limit": 2, "in_use": 2, "waiting": 1, "saturated": True}
        async with http.get(url + "/_bridge/metrics") as response:
            text = await response.text()
        assert "rerank_bridge_upstream_pool_waiting 1.0" in text
        assert "rerank_bridge_upstream_connections_in_use 2.0" in text
        ready_started = time.monotonic()
        async with http.get(url + "/_bridge/ready") as response:
            assert response.status == 503 and (await response.json())["upstream_pool"] is False
        assert time.monotonic() - ready_started < 0.2  # answered at once, not after a wait for a slot
        async with await queued as response:
            assert response.status == 503
            assert_engine_error(await response.json(), 503, "upstream_saturated_exception")
        assert time.monotonic() - started < 1.5

        for reader, writer in stalled:  # 2 s without a byte of the body: the engine-shaped 408, then closed
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            answer = parse_answer(head)
            answer.body = await reader.readexactly(int(answer.header("Content-Length") or 0))
            assert answer.status == 408 and answer.header("Connection") == "close"
            assert_engine_error(json.loads(answer.body), 408, "request_timeout_exception")
            writer.close()
        async with http.get(url + "/some-index/_doc/1") as response:
            assert response.status == 200  # the connections came back


async def test_a_client_that_does_not_read_lets_go_of_its_engine_connection(
    engine: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    settings = Settings(
        upstream={"url": engine, "max_connections": 1, "pool_timeout_s": 10},
        server={"client_write_timeout_s": 1.0},
    )
    async with running_bridge(settings) as url, aiohttp.ClientSession() as http:
        port = int(url.rsplit(":", 1)[1])
        sleeper = socket.socket()
        sleeper.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sleeper.connect(("127.0.0.1", port))
        sleeper.sendall(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")  # and never reads the answer
        try:
            await asyncio.sleep(0.3)
            started = time.monotonic()
            async with http.get(url + "/after") as response:
                assert response.status == 200 and (await response.json())["path"] == "/after"
            assert time.monotonic() - started < 5
        finally:
            sleeper.close()
    lines = [r for r in caplog.records if r.name == "bridge.access" and r.__dict__.get("path") == "/big"]
    assert [(r.levelname, r.__dict__["status"], r.__dict__.get("disconnect")) for r in lines] == [
        ("INFO", 499, "write_timeout")
    ]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_a_client_that_does_not_read_a_reranked_answer_is_let_go_and_logged_499(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A reranked answer is built whole by the bridge; it is written under the same client write timeout as a
    streamed relay, so a client that never reads cannot pin it in memory, and is not logged as a 200."""
    from tests.search.scripted_engine import WordScorer, hits_answer

    pages = hits_answer([{"title": f"red car {i}", "pad": "x" * 50_000} for i in range(400)], 400)  # 20 MB

    async def handler(request: web.Request) -> web.StreamResponse:
        await request.read()
        return web.json_response(pages)

    runner, engine_url = await serve(handler)
    caplog.set_level(logging.INFO)
    settings = Settings(
        upstream={"url": engine_url},
        server={"client_write_timeout_s": 1.0},
        models={"words": {"source": "unused"}},
        rules=[{"indices": ["rr-*"], "fields": ["title"], "window": 400, "model": "words"}],
    )
    body = json.dumps({"size": 400, "query": {"match": {"title": "red car"}}}).encode()
    try:
        async with running_bridge(settings, {"words": WordScorer()}) as url:
            port = int(url.rsplit(":", 1)[1])
            sleeper = socket.socket()
            sleeper.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sleeper.connect(("127.0.0.1", port))
            sleeper.sendall(
                b"POST /rr-docs/_search HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
            )  # and never reads the answer
            try:
                await asyncio.sleep(3)  # the write timeout is 1 s
            finally:
                sleeper.close()
    finally:
        await runner.cleanup()
    lines = _access_lines(caplog, "/rr-docs/_search")
    assert [(r.__dict__["status"], r.__dict__.get("disconnect")) for r in lines] == [(499, "write_timeout")]
    assert lines[0].__dict__.get("outcome") == "reranked"


def _access_lines(caplog: pytest.LogCaptureFixture, path: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "bridge.access" and r.__dict__.get("path") == path]
