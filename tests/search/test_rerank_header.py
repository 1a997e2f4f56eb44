"""Every search on an intercepted route says whether it was reranked, and if not, why (``X-Rerank``)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from bridge.config import Settings
from tests.search.scripted_engine import ScriptedEngine, hits_answer, intercepting, reply, ruled_settings

TITLES = [{"title": t} for t in ("red car", "blue boat", "fast red car")]
MATCH = {"match": {"title": "red car"}}
NDJSON = {"Content-Type": "application/x-ndjson"}


def engine() -> ScriptedEngine:
    def script(asked: Any) -> Any:
        if asked.target == "/_render/template":
            return reply(200, {"template_output": {"query": MATCH, "size": 0}})
        return reply(200, hits_answer(TITLES, 10))

    return ScriptedEngine(script)


CASES: list[tuple[str, str, Any, str]] = [
    ("size 0", "/rr-docs/_search", {"query": MATCH, "size": 0}, "size_zero"),
    ("sort", "/rr-docs/_search", {"query": MATCH, "sort": [{"year": "asc"}]}, "sort"),
    ("no query text", "/rr-docs/_search", {"query": {"match_all": {}}}, "no_query_text"),
    ("no body", "/rr-docs/_search", None, "no_query_text"),
    ("?rerank=false", "/rr-docs/_search?rerank=false", {"query": MATCH}, "disabled_by_request"),
    ("ext.rerank false", "/rr-docs/_search", {"query": MATCH, "ext": {"rerank": False}}, "disabled_by_request"),
    ("no matching rule", "/plain/_search", {"query": MATCH}, "no_rule"),
    ("system index", "/.kibana/_search", {"query": MATCH}, "system_index"),
    ("collapse", "/rr-docs/_search", {"query": MATCH, "collapse": {"field": "k"}}, "collapse"),
    ("beyond the window", "/rr-docs/_search", {"query": MATCH, "from": 7}, "beyond_window"),
    ("template of size 0", "/rr-docs/_search/template", {"source": {}, "params": {}}, "size_zero"),
    ("template, no rule", "/plain/_search/template", {"id": "t", "params": {}}, "no_rule"),
]


@pytest.mark.parametrize(("name", "path", "body", "reason"), CASES, ids=[c[0] for c in CASES])
async def test_a_search_not_reranked_says_why(name: str, path: str, body: Any, reason: str) -> None:
    async with intercepting(engine()) as client:
        data = json.dumps(body) if body is not None else None
        response = await client.post(path, data=data, headers={"Content-Type": "application/json"})
        assert response.status == 200
        assert response.headers["X-Rerank"] == f"skipped; reason={reason}", name


async def test_an_msearch_with_no_item_reranked_says_why() -> None:
    lines = [json.dumps({"index": "plain"}), json.dumps({"query": MATCH})]
    async with intercepting(engine()) as client:
        response = await client.post("/_msearch", data="\n".join(lines) + "\n", headers=NDJSON)
        assert response.headers["X-Rerank"] == "skipped; reason=no_rule"
        lines = [json.dumps({"index": "rr-docs"}), json.dumps({"query": MATCH, "size": 0})]
        response = await client.post("/_msearch", data="\n".join(lines) + "\n", headers=NDJSON)
        assert response.headers["X-Rerank"] == "skipped; reason=size_zero"


async def test_a_search_asking_for_yaml_says_the_format_is_why() -> None:
    async with intercepting(engine()) as client:
        response = await client.post("/rr-docs/_search?format=yaml", json={"query": MATCH})
        assert response.headers["X-Rerank"] == "skipped; reason=format"


async def test_a_bridge_without_models_relays_searches_announcing_nothing() -> None:
    scripted = engine()
    async with intercepting(scripted, Settings()) as client:
        response = await client.post("/rr-docs/_search", json={"query": MATCH})
        assert "X-Rerank" not in response.headers
    assert [asked.relayed for asked in scripted.asked] == [True]


async def test_a_skipped_search_is_the_clients_own_request_byte_for_byte() -> None:
    scripted = engine()
    raw = b'{"query": {"match": {"title": "red car"}},  "size": 0}'
    async with intercepting(scripted, ruled_settings()) as client:
        response = await client.post("/rr-docs/_search?x=1", data=raw, headers={"Content-Type": "application/json"})
        assert response.headers["X-Rerank"] == "skipped; reason=size_zero"
    [asked] = scripted.asked
    assert asked.relayed and asked.body == raw and asked.target == "/rr-docs/_search?x=1"
