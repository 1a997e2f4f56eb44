"""Kibana's async-search sequence end to end: a real bridge with a tiny model in front of the real OpenSearch,
which has no ``_async_search`` at all, so every answer Kibana parses here is the bridge's own."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest

from bridge.config import Settings
from tests.bridge_server import running_bridge
from tests.indices import create_index, delete_indices, scratch_name

pytestmark = pytest.mark.engine

INDEX = scratch_name("rr-async")
PLAIN = scratch_name("plain-async")
FIXTURES = json.loads(
    (Path(__file__).parents[1] / "compat" / "fixtures" / "kibana-async-search.json").read_text(
        encoding="utf-8"
    )
)
KIBANA = {request["name"]: request for request in FIXTURES["requests"]}
DOCS = [
    {"title": t} for t in ("red car", "fast red car", "blue boat", "red red car", "green car", "car wash")
]


@pytest.fixture(scope="module")
async def bridge(opensearch_url: str, tiny_model: Path) -> AsyncIterator[str]:
    async with aiohttp.ClientSession() as http:
        for index in (INDEX, PLAIN):
            await create_index(http, opensearch_url, index, DOCS)
    settings = Settings(
        upstream={"url": opensearch_url},
        models={"tiny": {"source": str(tiny_model), "dtype": "float32"}},
        rules=[{"indices": [scratch_name("rr-*")], "fields": ["title"], "window": 6}],
    )
    try:
        async with running_bridge(settings) as url:
            yield url
    finally:
        async with aiohttp.ClientSession() as http:
            await delete_indices(http, opensearch_url, INDEX, PLAIN)


def kibana_path(name: str, index: str = INDEX) -> str:
    return KIBANA[name]["path"].replace("/rr-docs/", f"/{quote(index)}/")


async def test_kibana_8x_submit_poll_fetch_delete(bridge: str, opensearch_url: str) -> None:
    submit = KIBANA["discover-submit-8x"]
    # keep_on_completion=true: the result is kept, as with a Kibana search session, so it can be polled.
    path = kibana_path("discover-submit-8x").replace("keep_on_completion=false", "keep_on_completion=true")
    async with aiohttp.ClientSession() as http:
        async with http.post(bridge + path, json=submit["body"], headers=submit["headers"]) as response:
            assert response.status == 200, await response.text()
            answer: dict[str, Any] = await response.json()
            assert response.headers["X-Elasticsearch-Async-Id"] == answer["id"]
            rerank = response.headers["X-Rerank"]
        async_id = answer["id"]
        get_path = kibana_path("poll-get").replace("{id}", quote(async_id))
        while answer[
            "is_running"
        ]:  # the first model call may take longer than Kibana's 200ms: poll, as it does
            assert answer["is_partial"] is True and answer["response"]["hits"]["hits"] == []
            async with http.get(bridge + get_path) as response:
                answer = await response.json()
                rerank = response.headers["X-Rerank"]
        assert rerank.startswith("applied; model=tiny; window=5")  # 5 titles match "red car"
        assert answer["is_running"] is False and answer["is_partial"] is False
        hits = answer["response"]["hits"]
        assert hits["total"] == {"value": 5, "relation": "eq"} and len(hits["hits"]) == 3
        assert answer["response"]["_shards"]["successful"] == 1

        status_path = kibana_path("poll-status").replace("{id}", quote(async_id))
        async with http.get(bridge + status_path) as response:
            status = await response.json()
        assert (
            status["id"] == async_id and status["is_running"] is False and status["completion_status"] == 200
        )

        async with http.get(bridge + get_path) as response:
            fetched = await response.json()
            assert response.headers["X-Rerank"].startswith("applied")
        assert fetched["response"]["hits"]["hits"] == hits["hits"]

        async with http.delete(bridge + kibana_path("cancel").replace("{id}", quote(async_id))) as response:
            assert await response.json() == {"acknowledged": True}
        async with http.get(bridge + get_path) as response:
            assert response.status == 404
            assert (await response.json())["error"]["type"] == "resource_not_found_exception"

        # The engine itself has no async search: a search no rule covers gets the engine's own answer.
        plain = kibana_path("discover-submit-8x", PLAIN)
        async with http.post(bridge + plain, json=submit["body"]) as bridged:
            bridged_status, bridged_body = bridged.status, await bridged.read()
            assert bridged.headers["X-Rerank"] == "skipped; reason=no_rule"
        async with http.post(opensearch_url + plain, json=submit["body"]) as direct:
            assert (bridged_status, bridged_body) == (direct.status, await direct.read())
            assert direct.status != 200


async def test_a_search_done_in_time_is_answered_without_an_id(bridge: str) -> None:
    submit = KIBANA["discover-submit-8x"]
    # A wait long enough for any first model call, so the search surely ends within it.
    path = kibana_path("discover-submit-8x").replace("=200ms", "=30s")
    async with aiohttp.ClientSession() as http, http.post(bridge + path, json=submit["body"]) as response:
        assert response.status == 200
        assert "X-Elasticsearch-Async-Id" not in response.headers
        answer = await response.json()
    assert "id" not in answer and answer["is_running"] is False and answer["is_partial"] is False
    assert len(answer["response"]["hits"]["hits"]) == 3
