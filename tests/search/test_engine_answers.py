"""What the bridge does with the engine's answer to a search it rewrote: rerank it, answer it as is, or (for a
400 only) ask again with the client's own bytes, all within one deadline per request."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

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
        assert response.headers["X-Rerank"] == "applied; model=words; window=5; combine=replace"
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
        assert response.headers["X-Rerank"] == "applied; model=words; window=5; combine=replace"
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


def msearch_lines(*pairs: tuple[dict[str, Any], dict[str, Any]]) -> str:
    return "".join(json.dumps(header) + "\n" + json.dumps(body) + "\n" for header, body in pairs)


def asked_lines(asked: Asked) -> list[dict[str, Any]]:
    return [json.loads(line) for line in asked.body.decode().splitlines()]


async def test_an_msearch_template_renders_at_most_a_few_items_at_once() -> None:
    """Each render holds an engine connection: one large request must not take the whole pool."""
    in_flight = 0
    peak = 0

    async def slow_render(asked: Asked) -> EngineReply:
        nonlocal in_flight, peak
        if asked.target != "/_render/template":
            searches = asked_lines(asked)[1::2]
            return reply(200, {"took": 1, "responses": [hits_answer(TITLES, s["size"]) for s in searches]})
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.01)
        in_flight -= 1
        return rendering(asked)

    engine = ScriptedEngine(slow_render)
    async with intercepting(engine) as client:
        response = await client.post(
            "/_msearch/template",
            data=msearch_lines(*[({"index": "rr-docs"}, TEMPLATE)] * 40),
            headers={"Content-Type": "application/x-ndjson"},
        )
        assert response.status == 200
        assert len((await response.json())["responses"]) == 40
    assert [asked.target for asked in engine.asked].count("/_render/template") == 40
    assert 1 < peak <= 8


async def test_a_failed_render_cancels_the_other_renders_of_the_request() -> None:
    started: list[str] = []
    cancelled: list[str] = []

    async def script(asked: Asked) -> EngineReply:
        q = asked.json()["params"]["q"]
        started.append(q)
        if q == "0":
            await asyncio.sleep(0.05)
            raise BridgeHTTPError(502, "upstream_unavailable_exception", "cannot reach the search engine")
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.append(q)
            raise
        raise AssertionError

    engine = ScriptedEngine(script)
    items = [({"index": "rr-docs"}, {**TEMPLATE, "params": {"q": str(n)}}) for n in range(30)]
    async with intercepting(engine) as client:
        response = await client.post(
            "/_msearch/template", data=msearch_lines(*items), headers={"Content-Type": "application/x-ndjson"}
        )
        assert response.status == 502
        assert (await response.json())["error"]["type"] == "upstream_unavailable_exception"
        # By the time the client has its answer, every other render is over and the rest were never sent.
        assert 1 < len(started) <= 8
        assert sorted(cancelled) == sorted(q for q in started if q != "0")
    assert {asked.target for asked in engine.asked} == {"/_render/template"}


async def test_an_msearch_template_stops_rendering_once_the_engine_is_overloaded() -> None:
    refusal = engine_error(429, "rejected_execution_exception", "search queue full")

    async def overloaded(asked: Asked) -> EngineReply:
        await asyncio.sleep(0.01)
        return refusal

    engine = ScriptedEngine(overloaded)
    async with intercepting(engine) as client:
        response = await client.post(
            "/_msearch/template",
            data=msearch_lines(*[({"index": "rr-docs"}, TEMPLATE)] * 30),
            headers={"Content-Type": "application/x-ndjson"},
        )
        assert response.status == 429 and await response.read() == refusal.body
        assert response.headers["X-Rerank"] == "skipped; reason=template_not_rendered"
    assert len(engine.asked) <= 8
    assert {asked.target for asked in engine.asked} == {"/_render/template"}


def opting_out(asked: Asked) -> EngineReply:
    """Renders ``ext.rerank.enabled: false`` from a template whose ``opt_out`` is set; refuses ``ext`` in a
    search, rendered or not, as OpenSearch does (the whole request is a 400); each search gets its ``size`` hits."""
    if asked.target == "/_render/template":
        return reply(200, {"template_output": rendered_search(asked.json())})
    lines = asked_lines(asked)[1::2]
    searches = lines if asked.target == "/_msearch" else [rendered_search(line) for line in lines]
    if any("ext" in search for search in searches):
        reason = "unknown named object category [org.opensearch.search.SearchExtBuilder]"
        return engine_error(400, "x_content_parse_exception", reason)
    responses = [{**hits_answer(TITLES, int(str(search["size"]))), "status": 200} for search in searches]
    return reply(200, {"took": 1, "responses": responses})


def rendered_search(template: dict[str, Any]) -> dict[str, Any]:
    output: dict[str, Any] = {"query": {"match": {"title": "fast red car"}}, "size": template["size"]}
    if template["params"].get("opt_out"):
        output["ext"] = {"rerank": {"enabled": False}}
    return output


def opt_out_item(opt_out: bool, size: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """A template whose own key ``size`` tells the scripted engine what to render (mustache is not the point)."""
    return {"index": "rr-docs"}, {"source": "{}", "size": size, "params": {"q": "x", "opt_out": opt_out}}


async def test_an_msearch_template_item_that_opts_out_goes_as_a_clean_search_and_the_others_are_reranked() -> None:
    engine = ScriptedEngine(opting_out)
    lines = msearch_lines(opt_out_item(False, 3), opt_out_item(True, 2), opt_out_item(False, 3))
    async with intercepting(engine) as client:
        response = await client.post(
            "/_msearch/template", data=lines, headers={"Content-Type": "application/x-ndjson"}
        )
        assert response.status == 200
        assert response.headers["X-Rerank"] == "applied; model=words; window=10; combine=replace"
        answer = await response.json()
    [search] = [asked for asked in engine.asked if asked.target != "/_render/template"]
    assert search.target == "/_msearch" and not search.relayed
    assert asked_lines(search)[1::2] == [
        {"query": {"match": {"title": "fast red car"}}, "size": 5, "from": 0},
        {"query": {"match": {"title": "fast red car"}}, "size": 2},
        {"query": {"match": {"title": "fast red car"}}, "size": 5, "from": 0},
    ]
    titles = [[hit["_source"]["title"] for hit in item["hits"]["hits"]] for item in answer["responses"]]
    assert titles == [
        ["red red car fast", "fast red car", "red car"],
        ["red car", "blue boat"],  # the engine's own order, as the client's opt-out asked
        ["red red car fast", "fast red car", "red car"],
    ]


async def test_an_msearch_template_whose_items_all_opt_out_goes_as_clean_searches() -> None:
    engine = ScriptedEngine(opting_out)
    lines = msearch_lines(opt_out_item(True, 2), opt_out_item(True, 3))
    async with intercepting(engine) as client:
        response = await client.post(
            "/_msearch/template", data=lines, headers={"Content-Type": "application/x-ndjson"}
        )
        assert response.status == 200
        assert response.headers["X-Rerank"] == "skipped; reason=disabled_by_request"
        answer = await response.json()
    assert [len(item["hits"]["hits"]) for item in answer["responses"]] == [2, 3]
    [search] = [asked for asked in engine.asked if asked.target != "/_render/template"]
    assert search.target == "/_msearch"
    assert all("ext" not in body for body in asked_lines(search)[1::2])
