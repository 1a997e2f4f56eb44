"""``/_all/_search`` and ``/_all/_msearch`` are the cluster-wide search, as ``/_search`` is: the rules treat them
alike, and the engine still gets the path the client named."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.search.scripted_engine import (
    Asked,
    ScriptedEngine,
    hits_answer,
    intercepting,
    reply,
    ruled_settings,
)

TITLES = [{"title": t} for t in ("blue boat", "red car", "fast red car")]
MATCH = {"match": {"title": "red car"}}
# A rule for every index: what covers a cluster-wide search.
EVERYWHERE = ruled_settings(rules=[{"indices": ["*"], "fields": ["title"], "window": 5, "model": "words"}])


def engine() -> ScriptedEngine:
    def script(asked: Asked) -> Any:
        if "_msearch" in asked.target:
            return reply(200, {"took": 1, "responses": [{**hits_answer(TITLES, 5), "status": 200}]})
        return reply(200, hits_answer(TITLES, 5))

    return ScriptedEngine(script)


@pytest.mark.parametrize("prefix", ["", "/_all"])
async def test_all_search_is_reranked_like_the_bare_search(prefix: str) -> None:
    scripted = engine()
    async with intercepting(scripted, EVERYWHERE) as client:
        response = await client.post(
            f"{prefix}/_search",
            data=json.dumps({"query": MATCH}),
            headers={"Content-Type": "application/json"},
        )
        assert response.status == 200
        assert response.headers["X-Rerank"].startswith("applied")
        titles = [hit["_source"]["title"] for hit in (await response.json())["hits"]["hits"]]
        assert titles[0] != "blue boat"  # reordered by the scorer, not the engine's order
    assert [a.target.split("?")[0] for a in scripted.asked] == [f"{prefix}/_search"]
    assert not scripted.asked[0].relayed  # the bridge's windowed search, not a relay


@pytest.mark.parametrize("prefix", ["", "/_all"])
async def test_all_msearch_is_reranked_like_the_bare_msearch(prefix: str) -> None:
    scripted = engine()
    body = json.dumps({}) + "\n" + json.dumps({"query": MATCH}) + "\n"
    async with intercepting(scripted, EVERYWHERE) as client:
        response = await client.post(
            f"{prefix}/_msearch", data=body, headers={"Content-Type": "application/x-ndjson"}
        )
        assert response.status == 200
        assert response.headers["X-Rerank"].startswith("applied")
    assert [a.target.split("?")[0] for a in scripted.asked] == [f"{prefix}/_msearch"]


async def test_all_is_not_reranked_by_a_rule_for_some_indices_only() -> None:
    scripted = engine()
    async with intercepting(scripted) as client:  # the rule covers rr-* only
        response = await client.post(
            "/_all/_search", data=json.dumps({"query": MATCH}), headers={"Content-Type": "application/json"}
        )
        assert response.headers["X-Rerank"] == "skipped; reason=no_rule"
