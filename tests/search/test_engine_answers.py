"""What the bridge does with the engine's answer to a search it rewrote: rerank it, answer it as is, or (for a
400 only) ask again with the client's own bytes, all within one deadline per request."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from bridge.errors import BridgeHTTPError
from bridge.search.engine import EngineReply
from tests.search.scripted_engine import (
    Asked,
    ScriptedEngine,
    engine_error,
    hits_answer,
    intercepting,
    reply,
    ruled_settings,
)

TITLES = [{"title": t} for t in ("red car", "blue boat", "fast red car", "green tree", "red red car fast")]
SEARCH = {"query": {"match": {"title": "fast red car"}}, "size": 3}


def searches(engine: ScriptedEngine) -> list[Asked]:
    return [asked for asked in engine.asked if "_search" in asked.target or "_msearch" in asked.target]


async def test_a_reranked_search_is_fetched_once_as_the_window_and_reordered() -> None:
    engine = ScriptedEngine(lambda asked: reply(200, hits_answer(TITLES, asked.json()["size"])))
    async with intercepting(engine) as client:
        response = await client.post("/rr-docs/_search", json=SEARCH)
        assert response.status == 200
        assert response.headers["X-Rerank"] == "applied; model=words; window=5"
        answer = await response.json()
    assert [hit["_source"]["title"] for hit in answer["hits"]["hits"]] == [
        "red red car fast",
        "fast red car",
        "red car",
    ]
    [asked] = engine.asked
    assert not asked.relayed and asked.json()["size"] == 5 and asked.json()["from"] == 0


@pytest.mark.parametrize("status", [429, 500, 502, 503])
async def test_an_overloaded_or_failing_engine_gets_the_search_once_and_its_answer_is_the_clients(
    status: int,
) -> None:
    refusal = engine_error(status, "rejected_execution_exception", "search queue full")
    engine = ScriptedEngine(lambda asked: refusal)
    async with intercepting(engine) as client:
        response = await client.post("/rr-docs/_search", json=SEARCH)
        assert response.status == status
        assert await response.read() == refusal.body
        assert response.headers["X-Rerank"] == "skipped; reason=engine_error"
    assert len(engine.asked) == 1


async def test_a_400_to_the_rewritten_search_is_asked_again_with_the_clients_own_bytes() -> None:
    """The engine's parse or validation error must be the one the client's own body gets (positions, limits)."""
    own = engine_error(400, "illegal_argument_exception", "Result window is too large: [10001]")

    def script(asked: Asked) -> EngineReply:
        return own if asked.relayed else engine_error(400, "illegal_argument_exception", "window [10005]")

    engine = ScriptedEngine(script)
    raw = json.dumps(SEARCH).encode()
    async with intercepting(engine) as client:
        response = await client.post(
            "/rr-docs/_search", data=raw, headers={"Content-Type": "application/json"}
        )
        assert response.status == 400 and await response.read() == own.body
    assert [asked.relayed for asked in engine.asked] == [False, True]
    assert engine.asked[1].body == raw and engine.asked[1].target == "/rr-docs/_search"


async def test_an_engine_that_does_not_answer_costs_one_deadline_and_one_request() -> None:
    async def frozen(asked: Asked) -> EngineReply:
        await asyncio.sleep(3600)
        raise AssertionError

    engine = ScriptedEngine(frozen)
    async with intercepting(engine, ruled_settings(upstream={"timeout_s": 0.3})) as client:
        started = time.perf_counter()
        response = await client.post("/rr-docs/_search", json=SEARCH)
        elapsed = time.perf_counter() - started
        assert response.status == 504
        assert (await response.json())["error"]["type"] == "upstream_timeout_exception"
    assert len(engine.asked) == 1
    assert 0.3 <= elapsed < 0.55


async def test_an_msearch_the_engine_answers_429_is_sent_once() -> None:
    refusal = engine_error(429, "rejected_execution_exception", "search queue full")
    engine = ScriptedEngine(lambda asked: refusal)
    lines = [json.dumps({"index": "rr-docs"}), json.dumps(SEARCH)]
    async with intercepting(engine) as client:
        response = await client.post(
            "/_msearch", data="\n".join(lines) + "\n", headers={"Content-Type": "application/x-ndjson"}
        )
        assert response.status == 429 and await response.read() == refusal.body
    assert len(engine.asked) == 1


# --- templates ---------------------------------------------------------------------------------------------

TEMPLATE = {"source": {"query": {"match": {"title": "{{q}}"}}, "size": 3}, "params": {"q": "fast red car"}}


def rendering(asked: Asked) -> EngineReply:
    if asked.target == "/_render/template":
        return reply(200, {"template_output": {"query": {"match": {"title": "fast red car"}}, "size": 3}})
    return reply(200, hits_answer(TITLES, asked.json()["size"]))


async def test_a_template_is_rendered_by_the_engine_from_the_clients_bytes_then_reranked() -> None:
    engine = ScriptedEngine(rendering)
    raw = json.dumps(TEMPLATE).encode()
    async with intercepting(engine) as client:
        response = await client.post(
            "/rr-docs/_search/template", data=raw, headers={"Content-Type": "application/json"}
        )
        assert response.status == 200
        assert response.headers["X-Rerank"] == "applied; model=words; window=5"
    render, search = engine.asked
    assert render.target == "/_render/template" and render.body == raw
    assert search.target == "/rr-docs/_search" and search.json()["size"] == 5


async def test_a_frozen_engine_costs_a_template_one_deadline_and_one_request() -> None:
    async def frozen(asked: Asked) -> EngineReply:
        await asyncio.sleep(3600)
        raise AssertionError

    engine = ScriptedEngine(frozen)
    async with intercepting(engine, ruled_settings(upstream={"timeout_s": 0.3})) as client:
        started = time.perf_counter()
        response = await client.post("/rr-docs/_search/template", json=TEMPLATE)
        elapsed = time.perf_counter() - started
        assert response.status == 504
    assert [asked.target for asked in engine.asked] == ["/_render/template"]
    assert elapsed < 0.55  # one timeout_s, not two


async def test_a_render_and_its_search_share_one_deadline() -> None:
    async def slow(asked: Asked) -> EngineReply:
        await asyncio.sleep(0.2)
        return rendering(asked)

    engine = ScriptedEngine(slow)
    async with intercepting(engine, ruled_settings(upstream={"timeout_s": 0.3})) as client:
        response = await client.post("/rr-docs/_search/template", json=TEMPLATE)
        assert response.status == 504
    assert len(engine.asked) == 2


async def test_an_unreachable_engine_while_rendering_is_one_502_and_no_second_request() -> None:
    def unreachable(asked: Asked) -> EngineReply:
        raise BridgeHTTPError(502, "upstream_unavailable_exception", "cannot reach the search engine")

    engine = ScriptedEngine(unreachable)
    async with intercepting(engine) as client:
        response = await client.post("/rr-docs/_search/template", json=TEMPLATE)
        assert response.status == 502
        assert (await response.json())["error"]["type"] == "upstream_unavailable_exception"
    assert len(engine.asked) == 1


@pytest.mark.parametrize("status", [404, 400, 429, 503])
async def test_a_template_the_engine_will_not_render_gets_that_answer_without_a_second_request(
    status: int,
) -> None:
    refusal = engine_error(status, "resource_not_found_exception", "unable to find script [nope]")
    engine = ScriptedEngine(lambda asked: refusal)
    async with intercepting(engine) as client:
        response = await client.post("/rr-docs/_search/template", json={"id": "nope", "params": {}})
        assert response.status == status and await response.read() == refusal.body
        assert response.headers["X-Rerank"] == "skipped; reason=template_not_rendered"
    assert len(engine.asked) == 1


async def test_an_msearch_template_the_engine_fails_to_render_is_answered_once() -> None:
    refusal = engine_error(503, "cluster_block_exception", "blocked")
    engine = ScriptedEngine(lambda asked: refusal)
    lines = [json.dumps({"index": "rr-docs"}), json.dumps(TEMPLATE)] * 2
    async with intercepting(engine) as client:
        response = await client.post(
            "/_msearch/template", data="\n".join(lines) + "\n", headers={"Content-Type": "application/x-ndjson"}
        )
        assert response.status == 503
    assert [asked.target for asked in engine.asked] == ["/_render/template"] * 2


async def test_a_render_the_bridge_cannot_read_lets_the_engine_answer_the_template_itself() -> None:
    def script(asked: Asked) -> EngineReply:
        if asked.target == "/_render/template":
            return reply(200, b'{"template_output": "not a search", "x": NaN}')
        return reply(200, hits_answer(TITLES, 10))

    engine = ScriptedEngine(script)
    raw = json.dumps(TEMPLATE).encode()
    async with intercepting(engine) as client:
        response = await client.post(
            "/rr-docs/_search/template", data=raw, headers={"Content-Type": "application/json"}
        )
        assert response.status == 200
        assert response.headers["X-Rerank"] == "skipped; reason=template_not_rendered"
    assert [(asked.target, asked.relayed) for asked in engine.asked] == [
        ("/_render/template", False),
        ("/rr-docs/_search/template", True),
    ]
    assert engine.asked[1].body == raw
