"""``limits.search_deadline_s`` bounds the bridge's own work on a search, not an untouched relay's streaming: an
answer cut off mid-stream would reach the client as a broken 200 (and be logged as a 504 that never left)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from bridge.search.engine import EngineReply
from tests.bridge_server import running_bridge
from tests.search.scripted_engine import (
    Asked,
    ScriptedEngine,
    WordScorer,
    hits_answer,
    intercepting,
    reply,
    ruled_settings,
)

JSON = {"Content-Type": "application/json"}
DEADLINE = {"limits": {"search_deadline_s": 0.2}}


async def slow(asked: Asked) -> EngineReply:
    await asyncio.sleep(0.5)  # past the search deadline
    return reply(200, hits_answer([{"title": "red car"}], 10))


async def test_an_untouched_relay_is_not_cut_by_the_search_deadline() -> None:
    engine = ScriptedEngine(slow)
    async with intercepting(engine, ruled_settings(**DEADLINE)) as client:
        response = await client.post("/unruled/_search", json={"query": {"match": {"title": "car"}}})
        assert response.status == 200
        assert response.headers["X-Rerank"] == "skipped; reason=no_rule"
        assert (await response.json())["hits"]["total"]["value"] == 1
    assert [asked.relayed for asked in engine.asked] == [True]


async def test_the_bridges_own_work_past_the_search_deadline_is_a_504() -> None:
    engine = ScriptedEngine(slow)
    async with intercepting(engine, ruled_settings(**DEADLINE)) as client:
        response = await client.post("/rr-docs/_search", json={"query": {"match": {"title": "car"}}})
        assert response.status == 504
        assert (await response.json())["error"]["type"] == "search_deadline_exceeded_exception"


@pytest.fixture
async def streaming_engine() -> AsyncIterator[str]:
    """An engine whose (large, unruled) search answer streams in pieces for longer than the search deadline."""

    async def search(request: web.Request) -> web.StreamResponse:
        await request.read()
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        await response.write(b'{"hits":{"hits":[')
        for i in range(6):
            await asyncio.sleep(0.1)
            await response.write(b'{"_id":"%d","pad":"%s"},' % (i, b"x" * 100_000))
        await response.write(b'{"_id":"last"}]}}')
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_post("/{index}/_search", search)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def test_a_streamed_passthrough_answer_outlives_the_search_deadline_whole(streaming_engine: str) -> None:
    settings = ruled_settings(upstream={"url": streaming_engine}, **DEADLINE)
    async with (
        running_bridge(settings, {"words": WordScorer()}) as url,
        aiohttp.ClientSession() as http,
        http.post(f"{url}/unruled/_search", json={"query": {"match_all": {}}}) as response,
    ):
        assert response.status == 200
        body = await response.read()
    assert body.endswith(b'{"_id":"last"}]}}') and len(body) > 600_000
