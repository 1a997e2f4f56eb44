"""Through the bridge and the real engine: a search with a 1 MiB query text leaves other searches reranked.

The engine accepts a huge ``match`` on a field that does not exist; the bridge takes its text (and
``ext.rerank.query_text``) as the query for the model. Tokenised whole for every pair, such a query held the
tokenizer for tens of seconds and every other search failed open with ``reason=timeout``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bridge.config import Settings
from tests.bridge_server import running_bridge
from tests.indices import create_index, delete_indices, scratch_name

pytestmark = pytest.mark.engine

RULED = scratch_name("rr-longq")
TIMEOUT_MS = 2000
HUGE = ("wind tunnel flow " * 70_000)[: 1 << 20]


@pytest.fixture(scope="module")
async def bridge(opensearch_url: str, tiny_model: Path) -> AsyncIterator[str]:
    docs = [{"title": f"wind tunnel {i}", "text": "flow boundary layer " * (i % 5)} for i in range(60)]
    async with aiohttp.ClientSession() as http:
        await create_index(http, opensearch_url, RULED, docs)
    settings = Settings(
        upstream={"url": opensearch_url},
        models={"tiny": {"source": str(tiny_model), "dtype": "float32", "cache_size": 0}},
        rules=[{"indices": [RULED], "fields": ["title", "text"], "window": 50, "timeout_ms": TIMEOUT_MS}],
        limits={"max_search_body_bytes": 10_000_000},
    )
    try:
        async with running_bridge(settings) as url:
            yield url
    finally:
        async with aiohttp.ClientSession() as http:
            await delete_indices(http, opensearch_url, RULED)


async def search(http: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> tuple[int, str, float]:
    started = time.perf_counter()
    async with http.post(f"{url}/{RULED}/_search", json=body) as response:
        await response.read()
        return response.status, response.headers.get("X-Rerank", ""), time.perf_counter() - started


async def test_search_beside_a_1_mib_query_is_still_reranked_within_its_budget(bridge: str) -> None:
    huge = {
        "query": {"bool": {"should": [{"match": {"no_such_field": HUGE}}, {"match_all": {}}]}},
        "size": 10,
        "ext": {"rerank": {"query_text": HUGE}},
    }
    normal = {"query": {"match": {"title": "wind"}}, "size": 10}
    async with aiohttp.ClientSession() as http:
        in_flight = asyncio.create_task(search(http, bridge, huge))
        await asyncio.sleep(0.1)  # the huge search is being scored
        status, rerank, seconds = await search(http, bridge, normal)
        huge_status, huge_rerank, _ = await in_flight
    assert status == 200 and rerank.startswith("applied"), rerank
    assert seconds < TIMEOUT_MS / 1000
    assert huge_status == 200 and huge_rerank.startswith("applied"), "the huge query is reranked too"
