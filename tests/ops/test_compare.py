"""``/_bridge/compare``: off unless ``admin.compare: true``; then the page, its files and an API that runs one
``_search`` with the caller's credentials and answers both orders, the engine's and the bridge's, exactly.

The API's orders are checked against the engine's own ``_search`` and the bridge's ``_search`` answer on a real
OpenSearch with a tiny random model; credentials and refusals against an engine that records what it is asked.
"""

from __future__ import annotations

import json
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from bridge.config import Settings
from bridge.errors import BridgeHTTPError
from bridge.search.compare import MAX_HITS, TITLE_CHARS, compare_request, matched_rule, query_body, title
from bridge.server.compare import CSP, static_text
from tests.bridge_server import running_bridge
from tests.indices import create_index, delete_indices, scratch_name
from tests.ops.test_upstream_faults import serve
from tests.search.scripted_engine import WordScorer, hits_answer
from tests.tiny_models import WORDS

HOSTILE_SCRIPT = "<script>window.pwned = 1</script> wing pressure"
HOSTILE_IMG = '<img src=x onerror="window.pwned = 2"> wing flow'


# ------------------------------------------------------------------ an engine that records what it is asked


class Recorder:
    """A stand-in engine: answers every ``_search`` with ``sources`` (or ``status``), keeps what it was asked."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, str, str | None, Any]] = []
        self.status = 200
        self.garbage = False
        self.accept: list[str | None] = []
        self.sources = [{"title": f"wing pressure {word}"} for word in ("flow", "heat", "shock", "layer")]

    async def handler(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.asked.append(
            (request.method, request.raw_path, request.headers.get("Authorization"), json.loads(body or b"null"))
        )
        self.accept.append(request.headers.get("Accept"))
        if self.garbage:
            return web.json_response({"acknowledged": True})
        if self.status != 200:
            reason = {"type": "security_exception", "reason": "no permissions for [indices:data/read/search]"}
            return web.json_response({"error": {"root_cause": [reason], **reason}, "status": 403}, status=403)
        size = json.loads(body).get("size", 10) if body else 10
        return web.json_response(hits_answer(self.sources, size, index="rr-docs"))


@pytest.fixture
async def recorder() -> AsyncIterator[tuple[str, Recorder]]:
    engine = Recorder()
    runner, url = await serve(engine.handler)
    yield url, engine
    await runner.cleanup()


def scripted_settings(engine: str, compare: bool = True) -> Settings:
    return Settings(
        upstream={"url": engine, "username": "bridge", "password": "bridge-secret"},
        admin={"compare": compare},
        models={"words": {"source": "unused"}},
        rules=[{"indices": ["rr-*"], "fields": ["title"], "window": 3, "model": "words"}],
    )


@asynccontextmanager
async def scripted_bridge(engine: str, compare: bool = True) -> AsyncIterator[tuple[str, aiohttp.ClientSession]]:
    """A bridge in front of the recording engine, scoring with :class:`WordScorer`, and a client for it."""
    scorers = {"words": WordScorer()}
    async with running_bridge(scripted_settings(engine, compare), scorers) as bridge, aiohttp.ClientSession() as http:
        yield bridge, http


async def post_api(http: aiohttp.ClientSession, bridge: str, payload: Any, **headers: str) -> aiohttp.ClientResponse:
    data = payload if isinstance(payload, bytes | str) else json.dumps(payload)
    return await http.post(
        f"{bridge}/_bridge/compare/api", data=data, headers={"Content-Type": "application/json", **headers}
    )


# ------------------------------------------------------------------ off by default


def test_compare_is_off_unless_asked_for() -> None:
    assert Settings().admin.compare is False


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/_bridge/compare"),
        ("GET", "/_bridge/compare/static/compare.js"),
        ("POST", "/_bridge/compare/api"),
    ],
)
async def test_disabled_compare_paths_are_unknown_bridge_paths(
    method: str, path: str, recorder: tuple[str, Recorder]
) -> None:
    engine, asked = recorder
    async with (
        scripted_bridge(engine, compare=False) as (bridge, http),
        http.request(method, bridge + path, json={"index": "rr-docs", "q": "wing"}) as response,
    ):
        assert response.status == 404
        body = await response.json()
    assert body["error"]["type"] == "resource_not_found_exception"
    assert asked.asked == []  # never relayed either


# ------------------------------------------------------------------ the page and its files


async def test_page_and_static_files_are_served_with_a_restrictive_policy(recorder: tuple[str, Recorder]) -> None:
    engine, asked = recorder
    async with scripted_bridge(engine) as (bridge, http):
        async with http.get(f"{bridge}/_bridge/compare") as response:
            assert response.status == 200
            assert response.headers["Content-Type"] == "text/html; charset=utf-8"
            policy = response.headers["Content-Security-Policy"]
            assert policy.startswith("default-src 'self'") and "script-src 'self'" in policy
            assert "unsafe-inline" not in policy and "frame-ancestors 'none'" in policy
            assert response.headers["X-Content-Type-Options"] == "nosniff"
            page = await response.text()
        for name, kind in (("compare.js", "text/javascript"), ("compare.css", "text/css")):
            async with http.get(f"{bridge}/_bridge/compare/static/{name}") as response:
                assert response.status == 200
                assert response.headers["Content-Type"] == f"{kind}; charset=utf-8"
                assert response.headers["Content-Security-Policy"] == CSP
                assert await response.text() == static_text(name)
        for missing in ("index.html", "other.js", "..%2Fcompare.py"):
            async with http.get(f"{bridge}/_bridge/compare/static/{missing}") as response:
                assert response.status == 404
        async with http.post(f"{bridge}/_bridge/compare", data=b"{}") as response:
            assert response.status == 405 and response.headers["Allow"] == "GET"
        async with http.get(f"{bridge}/_bridge/compare/api") as response:
            assert response.status == 405 and response.headers["Allow"] == "POST"
    # The DOM the browser test and users rely on, loading only the bridge's own files.
    for anchor in ('id="compare-form"', 'id="index"', 'id="q"', 'id="body"', 'id="run"', 'id="results"',
                   'id="engine-col"', 'id="rerank-col"', 'id="meta"', 'id="reason"', 'id="qrels"',
                   'id="ndcg-engine"', 'id="ndcg-rerank"', 'for="q"', 'for="index"', 'for="qrels"'):  # fmt: skip
        assert anchor in page, anchor
    assert 'src="compare/static/compare.js"' in page and "http" not in page.split("<body>")[0].replace(
        'content="width', ""
    )
    assert asked.asked == []


def test_page_script_never_parses_data_as_html() -> None:
    """Hit texts reach the DOM only as text: no HTML-parsing sink appears in the script at all."""
    script = static_text("compare.js")
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"):
        assert sink not in script, sink
    assert "textContent" in script
    # report.html inlines it: nothing in it may end (or, through "<!--", prolong) its script element.
    assert "</script" not in script.lower() and "<!--" not in script and "<script" not in script.lower()


# ------------------------------------------------------------------ credentials and refusals (recording engine)


async def test_the_callers_credentials_reach_the_engine(recorder: tuple[str, Recorder]) -> None:
    engine, asked = recorder
    async with scripted_bridge(engine) as (bridge, http):
        async with await post_api(
            http, bridge, {"index": "rr-docs", "q": "wing shock"}, Authorization="Basic YWxpY2U6czNjcmV0"
        ) as response:
            assert response.status == 200, await response.text()
            answer = await response.json()
        asked.status = 403
        async with await post_api(
            http, bridge, {"index": "rr-docs", "q": "wing"}, Authorization="Basic Ym9iOm5vcGU="
        ) as response:
            assert response.status == 403
            refused = await response.json()
    (method, target, authorization, body), (_, _, second, _) = asked.asked
    assert (method, target.split("?")[0]) == ("POST", "/rr-docs/_search")
    assert authorization == "Basic YWxpY2U6czNjcmV0"  # the caller's, not the bridge's own
    assert second == "Basic Ym9iOm5vcGU="
    assert body["query"] == {"multi_match": {"query": "wing shock", "lenient": True}}
    assert refused["error"]["type"] == "security_exception"  # the engine's refusal is the caller's answer
    assert answer["x_rerank"] == "applied; model=words; window=3; combine=replace"
    # WordScorer: the hit holding "shock" goes first; the rest keep the engine's order.
    assert [hit["_id"] for hit in answer["engine"]] == ["0", "1", "2", "3"]
    assert [hit["_id"] for hit in answer["reranked"]] == ["2", "0", "1", "3"]
    moves = {hit["_id"]: hit["move"] for hit in answer["reranked"]}
    assert moves == {"2": 2, "0": -1, "1": -1, "3": 0}
    assert [hit["status"] for hit in answer["reranked"]] == ["reranked"] * 3 + ["beyond_window"]
    assert answer["reranked"][0]["model_score"] == 2.0 and answer["reranked"][3]["model_score"] is None
    assert answer["plan"]["window"] == 3 and answer["plan"]["window_hits"] == 3
    assert answer["rule"] == {"label": "rules[0]: rr-*", "rule_index": 0, "enabled": True}


async def test_the_window_the_model_scored_is_told_apart_from_the_configured_one(
    recorder: tuple[str, Recorder],
) -> None:
    """The engine found fewer hits than the window: ``window`` stays the rule's, ``window_hits`` is what the
    model scored, the ``window=`` of X-Rerank."""
    engine, asked = recorder
    asked.sources = asked.sources[:2]
    async with (
        scripted_bridge(engine) as (bridge, http),
        await post_api(http, bridge, {"index": "rr-docs", "q": "wing shock"}) as response,
    ):
        assert response.status == 200, await response.text()
        answer = await response.json()
    assert answer["x_rerank"] == "applied; model=words; window=2; combine=replace"
    assert answer["plan"]["window"] == 3 and answer["plan"]["window_hits"] == 2


async def test_a_search_skipped_by_request_still_names_the_rule_it_turned_off(recorder: tuple[str, Recorder]) -> None:
    engine, _ = recorder
    off = {"query": {"match": {"title": "wing"}}, "ext": {"rerank": {"enabled": False}}}
    async with scripted_bridge(engine) as (bridge, http):
        async with await post_api(http, bridge, {"index": "rr-docs", "body": off}) as response:
            disabled = await response.json()
        async with await post_api(http, bridge, {"index": "elsewhere", "q": "wing"}) as response:
            unruled = await response.json()
    assert disabled["reason"] == "disabled_by_request" and disabled["plan"] is None
    assert disabled["rule"] == {"label": "rules[0]: rr-*", "rule_index": 0, "enabled": True}
    assert unruled["reason"] == "no_rule" and unruled["rule"] is None


def test_the_matched_rule_is_the_first_that_covers_the_index_enabled_or_not() -> None:
    settings = Settings(
        models={"words": {"source": "unused"}},
        rules=[
            {"indices": ["logs-*"], "fields": ["message"], "enabled": False},
            {"indices": ["logs-*", "docs"], "fields": ["title"]},
        ],
    )
    assert matched_rule(settings, "logs-2026") == {"label": "rules[0]: logs-*", "rule_index": 0, "enabled": False}
    assert matched_rule(settings, "docs,logs-1") == {"label": "rules[1]: logs-*, docs", "rule_index": 1, "enabled": True}
    assert matched_rule(settings, "other") is None


async def test_json_is_asked_of_the_engine_and_a_200_that_is_no_search_answer_is_a_502(
    recorder: tuple[str, Recorder],
) -> None:
    engine, asked = recorder
    async with scripted_bridge(engine) as (bridge, http):
        async with await post_api(http, bridge, {"index": "rr-docs", "q": "wing"}, Accept="application/yaml") as response:
            assert response.status == 200 and response.headers["Content-Type"].startswith("application/json")
        asked.garbage = True
        async with await post_api(http, bridge, {"index": "rr-docs", "q": "wing"}) as response:
            assert response.status == 502
            assert (await response.json())["error"]["type"] == "bridge_exception"
    assert asked.accept == ["application/json", "application/json"]


async def test_without_credentials_the_bridge_adds_its_own_as_for_any_search(recorder: tuple[str, Recorder]) -> None:
    engine, asked = recorder
    async with scripted_bridge(engine) as (bridge, http):
        async with await post_api(http, bridge, {"index": "rr-docs", "q": "wing"}) as response:
            assert response.status == 200
        async with http.post(f"{bridge}/rr-docs/_search", json=query_body("wing", 10)) as response:
            assert response.status == 200
    [(_, _, compared, _), (_, _, searched, _)] = asked.asked
    assert compared == searched and compared is not None and compared.startswith("Basic ")


@pytest.mark.parametrize(
    ("payload", "content_type", "reason"),
    [
        (b"{", "application/json", "line: 1, column: 2"),
        (b'"rr-docs"', "application/json", "JSON object"),
        (b'{"index": "rr-docs", "q": "x"}', "text/plain", "Content-Type: application/json"),
        ({"q": "wing"}, None, "[index] is required"),
        ({"index": "", "q": "wing"}, None, "[index] is required"),
        ({"index": "rr-docs"}, None, "give [q]"),
        ({"index": "rr-docs", "q": "  "}, None, "give [q]"),
        ({"index": "rr-docs/_doc/1", "q": "x"}, None, "[index] must be"),
        ({"index": "rr-docs/../_bulk", "q": "x"}, None, "[index] must be"),
        ({"index": "_cat", "q": "x"}, None, "[index] must be"),
        ({"index": "rr-docs?pretty", "q": "x"}, None, "[index] must be"),
        ({"index": "rr-%2Fdocs", "q": "x"}, None, "[index] must be"),
        ({"index": "rr-docs", "q": "x", "size": 0}, None, "[size]"),
        ({"index": "rr-docs", "q": "x", "size": MAX_HITS + 1}, None, "[size]"),
        ({"index": "rr-docs", "q": "x", "size": "3"}, None, "[size]"),
        ({"index": "rr-docs", "body": "{}"}, None, "[body] must be a JSON object"),
        ({"index": "rr-docs", "body": [1]}, None, "[body] must be a JSON object"),
        ({"index": "rr-docs", "body": {"query": {"match_all": {}}, "from": 5}}, None, "[body.from]"),
        ({"index": "rr-docs", "body": {"size": 1000}}, None, "[body.size]"),
        ({"index": "rr-docs", "q": "x", "method": "DELETE"}, None, "unknown field [method]"),
        ({"index": "rr-docs", "body": {"query": {"match": {"title": "x"}}, "ext": {"rerank": {"window": -1}}}},
         None, "[ext.rerank.window]"),
    ],
)
async def test_bad_input_is_an_engine_shaped_400_and_never_reaches_the_engine(
    payload: Any, content_type: str | None, reason: str, recorder: tuple[str, Recorder]
) -> None:
    engine, asked = recorder
    async with scripted_bridge(engine) as (bridge, http):
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        async with http.post(
            f"{bridge}/_bridge/compare/api",
            data=data,
            headers={"Content-Type": content_type or "application/json"},
        ) as response:
            assert response.status == 400
            answer = await response.json()
    assert answer["status"] == 400 and reason in answer["error"]["reason"], answer
    assert answer["error"]["root_cause"][0]["reason"] == answer["error"]["reason"]
    assert asked.asked == []


def test_compare_request_reads_q_body_and_size() -> None:
    typed = compare_request({"index": "docs-*", "q": " wing ", "size": 5})
    assert (typed.index, typed.size, typed.path) == ("docs-*", 5, "/docs-*/_search")
    assert typed.body == {"query": {"multi_match": {"query": "wing", "lenient": True}}, "size": 5}
    pasted = compare_request({"index": "a,b", "q": "ignored", "body": {"query": {"match_all": {}}, "size": 3}})
    assert pasted.body == {"query": {"match_all": {}}, "size": 3} and pasted.size == 3 and pasted.path == "/a,b/_search"
    assert compare_request({"index": "a", "body": {"from": 0}}).body == {"size": 10}
    with pytest.raises(BridgeHTTPError):
        compare_request({"index": "_all/_doc", "q": "x"})


def test_titles_join_the_rule_fields_and_are_cut() -> None:
    hit = {"_id": "7", "_source": {"title": "Wing", "text": "flow\n\nover  it " * 40}}
    made = title(hit, ["title", "text"], "\n")
    assert made.startswith("Wing flow over it flow") and len(made) == TITLE_CHARS and made.endswith("…")
    assert title({"_id": "7", "_source": {"n": 3, "name": "x"}}, [], "\n") == "x"
    assert title({"_id": "7"}, ["title"], "\n") == "7"


# ------------------------------------------------------------------ both orders on the real engine


INDEX = scratch_name("compare")
OTHER = scratch_name("compare-norule")
WINDOW = 8


def documents() -> dict[str, dict[str, str]]:
    """Varied short texts from the tiny model's vocabulary (so its random scores differ), plus two hostile ones."""
    pick = random.Random(7)
    docs = {
        f"d{i}": {
            "title": "wing " + " ".join(pick.choice(WORDS) for _ in range(3)),
            "text": "pressure " + " ".join(pick.choice(WORDS) for _ in range(12)),
        }
        for i in range(14)
    }
    docs["evil-script"] = {"title": HOSTILE_SCRIPT, "text": "wing pressure boundary layer"}
    docs["evil-img"] = {"title": HOSTILE_IMG, "text": "wing pressure shock wave"}
    return docs


@pytest.fixture(scope="module")
async def indices(opensearch_url: str) -> AsyncIterator[str]:
    async with aiohttp.ClientSession() as http:
        await create_index(http, opensearch_url, INDEX, documents())
        await create_index(http, opensearch_url, OTHER, documents())
        try:
            yield opensearch_url
        finally:
            await delete_indices(http, opensearch_url, INDEX, OTHER)


def engine_settings(url: str, model: Path) -> Settings:
    return Settings(
        upstream={"url": url},
        admin={"compare": True},
        models={"tiny": {"source": str(model), "cache_size": 0, "dtype": "float32"}},
        rules=[{"indices": [INDEX], "fields": ["title", "text"], "window": WINDOW, "timeout_ms": 60000}],
    )


async def searched(http: aiohttp.ClientSession, base: str, index: str, body: Any) -> tuple[list[dict[str, Any]], str]:
    async with http.post(f"{base}/{index}/_search", json=body) as response:
        assert response.status == 200, await response.text()
        return (await response.json())["hits"]["hits"], response.headers.get("X-Rerank", "")


@pytest.mark.engine
@pytest.mark.slow
async def test_both_columns_are_the_engines_and_the_bridges_own_orders(indices: str, tiny_model: Path) -> None:
    async with running_bridge(engine_settings(indices, tiny_model)) as bridge, aiohttp.ClientSession() as http:
        for payload in (
            {"index": INDEX, "q": "wing pressure flow shock", "size": 12},
            {"index": INDEX, "q": "pressure"},
            {"index": INDEX, "body": {"query": {"match": {"text": "pressure wing"}}, "size": 10,
                                      "ext": {"rerank": {"combine": "linear", "alpha": 0.5}}}},
        ):
            async with await post_api(http, bridge, payload) as response:
                assert response.status == 200, await response.text()
                assert response.headers["Content-Type"].startswith("application/json")
                answer = await response.json()
            body = answer["search"]["body"]
            assert answer["search"]["path"] == f"/{INDEX}/_search"
            engine_hits, _ = await searched(http, indices, INDEX, {k: v for k, v in body.items() if k != "ext"})
            bridge_hits, header = await searched(http, bridge, INDEX, body)
            assert answer["x_rerank"] == header and header.startswith(f"applied; model=tiny; window={WINDOW}")
            assert [h["_id"] for h in answer["engine"]] == [h["_id"] for h in engine_hits]
            assert [h["_id"] for h in answer["reranked"]] == [h["_id"] for h in bridge_hits]
            assert [h["engine_score"] for h in answer["engine"]] == pytest.approx([h["_score"] for h in engine_hits])
            assert [h["final_score"] for h in answer["reranked"]] == pytest.approx([h["_score"] for h in bridge_hits])
            for hit in answer["reranked"]:
                assert hit["move"] == hit["engine_rank"] - hit["rerank_rank"]
                assert (hit["model_score"] is None) == (hit["engine_rank"] > WINDOW)
            plan = answer["plan"]
            assert plan["rule"] == f"rules[0]: {INDEX}" and plan["rule_index"] == 0
            assert plan["model"] == "tiny" and plan["window"] == WINDOW and plan["fields"] == ["title", "text"]
            assert answer["timings"]["engine_ms"] > 0 and answer["timings"]["scoring_ms"] > 0
            assert answer["reason"] is None
        assert plan["combine"] == {"mode": "linear", "alpha": 0.5, "normalization": "min_max"}
        # Ranks past the window keep the engine's order, in both columns.
        assert [h["status"] for h in answer["reranked"]][WINDOW:] == ["beyond_window"] * (10 - WINDOW)


@pytest.mark.engine
@pytest.mark.slow
async def test_the_timings_say_how_many_scores_came_from_the_score_cache(indices: str, tiny_model: Path) -> None:
    settings = engine_settings(indices, tiny_model)
    settings.models["tiny"] = settings.models["tiny"].model_copy(update={"cache_size": 1000})
    payload = {"index": INDEX, "q": "shock wave boundary layer"}
    async with running_bridge(settings) as bridge, aiohttp.ClientSession() as http:
        seen = []
        for _ in range(2):
            async with await post_api(http, bridge, payload) as response:
                assert response.status == 200, await response.text()
                answer = await response.json()
            seen.append(answer["timings"]["cached"])
        window = answer["plan"]["window_hits"]
    # First: every passage scored by the model; then the same window again, all from this bridge's cache.
    assert seen == [{"hits": 0, "of": window}, {"hits": window, "of": window}]


@pytest.mark.engine
@pytest.mark.slow
async def test_a_search_the_bridge_skips_shows_the_engines_order_twice_and_why(
    indices: str, tiny_model: Path
) -> None:
    async with running_bridge(engine_settings(indices, tiny_model)) as bridge, aiohttp.ClientSession() as http:
        async with await post_api(http, bridge, {"index": OTHER, "q": "wing pressure"}) as response:
            assert response.status == 200
            assert response.headers["X-Rerank"] == "skipped; reason=no_rule"
            unruled = await response.json()
        off = {"query": {"match": {"title": "wing"}}, "ext": {"rerank": False}}
        async with await post_api(http, bridge, {"index": INDEX, "body": off}) as response:
            disabled = await response.json()
        engine_hits, _ = await searched(http, indices, OTHER, query_body("wing pressure", 10))
    assert unruled["reason"] == "no_rule" and unruled["plan"] is None
    assert unruled["x_rerank"] == "skipped; reason=no_rule"
    assert [h["_id"] for h in unruled["engine"]] == [h["_id"] for h in engine_hits]
    assert unruled["engine"] == unruled["reranked"]
    assert all(h["move"] == 0 and h["status"] == "engine" for h in unruled["engine"])
    assert disabled["reason"] == "disabled_by_request" and disabled["engine"] == disabled["reranked"]
    assert disabled["rule"] == {"label": f"rules[0]: {INDEX}", "rule_index": 0, "enabled": True}
    assert unruled["rule"] is None


@pytest.mark.engine
@pytest.mark.slow
async def test_stored_markup_comes_back_as_the_text_it_is(indices: str, tiny_model: Path) -> None:
    async with running_bridge(engine_settings(indices, tiny_model)) as bridge, aiohttp.ClientSession() as http:
        wanted = {"index": INDEX, "q": "onerror script pwned", "size": 20}
        async with await post_api(http, bridge, wanted) as response:
            assert response.headers["X-Content-Type-Options"] == "nosniff"
            answer = await response.json()
    titles = {hit["_id"]: hit["title"] for hit in answer["engine"]}
    assert titles["evil-script"] == f"{HOSTILE_SCRIPT} wing pressure boundary layer"
    assert titles["evil-img"] == f"{HOSTILE_IMG} wing pressure shock wave"
