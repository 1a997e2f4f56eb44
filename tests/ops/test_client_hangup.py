"""A client that hangs up mid-answer is a client disconnect: access-logged 499 at INFO, no ERROR, no 502."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from bridge.config import Settings
from tests.bridge_server import running_bridge
from tests.ops.test_upstream_faults import serve


@pytest.fixture
async def streaming_engine() -> AsyncIterator[str]:
    """Answers ``/stream`` with a long chunked body, as fast as it is taken."""

    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        with contextlib.suppress(ConnectionError):
            for _ in range(400):
                await response.write(b" " * 65536)
        return response

    runner, url = await serve(handler)
    yield url
    await runner.cleanup()


async def test_a_client_hanging_up_mid_answer_is_a_499_at_info_not_an_error(
    streaming_engine: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    async with running_bridge(Settings(upstream={"url": streaming_engine})) as url:
        for _ in range(3):
            reader, writer = await asyncio.open_connection("127.0.0.1", int(url.rsplit(":", 1)[1]))
            writer.write(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
            await reader.readexactly(300_000)  # well under way: the bridge is writing as it goes
            writer.close()
            await asyncio.sleep(0.3)
        async with aiohttp.ClientSession() as http, http.get(url + "/_bridge/health") as response:
            assert response.status == 200
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    lines = [r for r in caplog.records if r.name == "bridge.access" and r.__dict__.get("path") == "/stream"]
    assert [(r.levelname, r.__dict__["status"], r.__dict__.get("disconnect")) for r in lines] == [
        ("INFO", 499, "closed")
    ] * 3
