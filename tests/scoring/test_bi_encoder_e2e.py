"""Through the bridge and the real engine: a rule whose model is ``kind: bi-encoder`` reranks ``_search`` by
the all-MiniLM-L6-v2 cosine, keys its passage vectors by ``<_index>/<_id>``, and a second query over the same
documents embeds only itself."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import numpy as np
import pytest

from bridge.config import Settings
from bridge.scoring.registry import build_scorers
from bridge.scoring.semantic import BiEncoderScorer
from tests.bridge_server import running_bridge
from tests.indices import create_index, delete_indices, scratch_name

from .test_bi_encoder_exactness import REAL_BI_ENCODER, st_scores

pytestmark = pytest.mark.engine

RULED = scratch_name("rr-bi")
DOCS = [
    {"title": "Berlin museums", "text": "Berlin is well known for its museums and its nightlife."},
    {"title": "Berlin population", "text": "Berlin has about 3.8 million registered inhabitants."},
    {"title": "Berlin wall", "text": "The Berlin wall fell in 1989."},
    {"title": "Paris", "text": "Paris is the capital of France, on the Seine."},
    {"title": "Wing flow", "text": "The boundary layer over a wing thickens with the pressure gradient."},
]


@pytest.fixture(scope="module")
async def bridge(opensearch_url: str) -> AsyncIterator[tuple[str, BiEncoderScorer]]:
    if not (REAL_BI_ENCODER / "modules.json").is_file():
        pytest.skip(f"the shared bi-encoder {REAL_BI_ENCODER} is not present (../shared/models)")
    async with aiohttp.ClientSession() as http:
        await create_index(http, opensearch_url, RULED, DOCS)
    settings = Settings(
        upstream={"url": opensearch_url},
        models={"minilm": {"kind": "bi-encoder", "source": str(REAL_BI_ENCODER), "dtype": "float32"}},
        rules=[{"indices": [RULED], "fields": ["title", "text"], "timeout_ms": 10_000}],
    )
    assert settings.rules[0].window == 100, "a bi-encoder's default window, on the CPU too"
    scorers = build_scorers(settings.models)
    scorer = scorers["minilm"]
    assert isinstance(scorer, BiEncoderScorer)
    try:
        async with running_bridge(settings, scorers) as url:
            yield url, scorer
    finally:
        async with aiohttp.ClientSession() as http:
            await delete_indices(http, opensearch_url, RULED)


async def search(url: str, body: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    async with aiohttp.ClientSession() as http, http.post(f"{url}/{RULED}/_search", json=body) as response:
        assert response.status == 200, await response.text()
        return response.headers.get("X-Rerank", ""), (await response.json())["hits"]["hits"]


async def test_a_bi_encoder_rule_reranks_search_and_caches_by_document(
    bridge: tuple[str, BiEncoderScorer],
) -> None:
    url, scorer = bridge
    scorer.clear_cache()
    query = "how many people live in berlin"
    rerank, hits = await search(url, {"query": {"match": {"text": "berlin"}}, "size": 10})
    assert rerank.startswith("applied; model=minilm; window=3"), rerank
    titles = [hit["_source"]["title"] for hit in hits]
    passages = [f"{hit['_source']['title']}\n{hit['_source']['text']}" for hit in hits]
    expected = st_scores(REAL_BI_ENCODER, "berlin", passages)
    np.testing.assert_allclose([hit["_score"] for hit in hits], expected, atol=1e-5)
    assert list(expected) == sorted(expected, reverse=True), f"ordered by the model: {titles}"
    assert scorer.cached[0] == 3, "the three Berlin documents"
    assert {key[1] for key in scorer._passages._entries} == {f"{RULED}/{hit['_id']}" for hit in hits}

    before = scorer.stats.items_scored
    rerank, hits = await search(
        url, {"query": {"match": {"text": "berlin"}}, "size": 10, "ext": {"rerank": {"query_text": query}}}
    )
    assert rerank.startswith("applied"), rerank
    assert scorer.stats.items_scored - before == 1, "only the new query was embedded"
    assert hits[0]["_source"]["title"] == "Berlin population"
