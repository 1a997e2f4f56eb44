"""The bridge applies a real model exactly: its reranked window is the order the model itself gives those hits.

Uses the cross-encoder in ../shared/models and a collection in ../shared/collections. The model is weak on
purpose (see its README): this checks plumbing, not relevance.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from bridge.config import Settings
from tests.bridge_server import running_bridge
from tests.cranfield import cranfield_index
from tests.indices import scratch_name

pytestmark = [pytest.mark.engine, pytest.mark.slow]

INDEX = scratch_name("rr-cranfield")
WINDOW = 30


@pytest.fixture(scope="module")
async def cranfield(opensearch_url: str, shared_dir: Path) -> AsyncIterator[list[str]]:
    async with cranfield_index(opensearch_url, shared_dir, INDEX, queries=3) as queries:
        yield queries


def model_scores(model_dir: Path, query: str, passages: list[str]) -> list[float]:
    """The model's own scores, straight from transformers in fp32 (no bridge code involved)."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, dtype=torch.float32).eval()
    scores: list[float] = []
    with torch.inference_mode():
        for start in range(0, len(passages), 8):
            chunk = passages[start : start + 8]
            batch = tokenizer([query] * len(chunk), chunk, padding=True, truncation=True, return_tensors="pt")
            scores += torch.sigmoid(model(**batch).logits[:, 0]).tolist()
    return scores


async def test_reranked_window_is_the_models_order(
    opensearch_url: str, shared_model: Path, cranfield: list[str]
) -> None:
    settings = Settings(
        upstream={"url": opensearch_url},
        models={"minilm": {"source": str(shared_model), "dtype": "float32", "cache_size": 0}},
        rules=[{"indices": [INDEX], "fields": ["title", "text"], "window": WINDOW, "timeout_ms": 60000}],
    )
    async with running_bridge(settings) as bridge, aiohttp.ClientSession() as http:
        for query in cranfield:
            body = {"query": {"multi_match": {"query": query, "fields": ["title", "text"]}}, "size": WINDOW}
            async with http.post(f"{opensearch_url}/{INDEX}/_search", json=body) as response:
                engine_hits = (await response.json())["hits"]["hits"]
            async with http.post(f"{bridge}/{INDEX}/_search", json=body) as response:
                assert response.headers["X-Rerank"] == f"applied; model=minilm; window={WINDOW}; combine=replace"
                bridged = (await response.json())["hits"]["hits"]
            passages = [f"{h['_source']['title']}\n{h['_source']['text']}" for h in engine_hits]
            expected = model_scores(shared_model, query, passages)
            by_id = {h["_id"]: s for h, s in zip(engine_hits, expected, strict=True)}
            # Same hits, each with the model's own score, in the model's order (ties within fp32 noise aside).
            assert sorted(by_id) == sorted(h["_id"] for h in bridged)
            for hit in bridged:
                assert hit["_score"] == pytest.approx(by_id[hit["_id"]], abs=1e-4)
            model_order = sorted(by_id, key=lambda i: -by_id[i])
            for position, (got, want) in enumerate(
                zip([h["_id"] for h in bridged], model_order, strict=True)
            ):
                assert got == want or abs(by_id[got] - by_id[want]) < 1e-4, position
            assert [h["_id"] for h in bridged] != [h["_id"] for h in engine_hits]
