"""A client that goes away mid-rerank: its handler is cancelled, its pairs leave the queue unscored, no task leaks."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import aiohttp
import pytest

from bridge.config import Settings
from bridge.scoring.local import LocalScorer
from bridge.scoring.settings import ModelSettings
from tests.bridge_server import running_bridge
from tests.indices import create_index, delete_indices, scratch_name

pytestmark = [pytest.mark.engine, pytest.mark.slow]

INDEX = scratch_name("rr-disconnect")
WINDOW = 400


async def test_disconnect_drops_pairs_and_leaks_nothing(opensearch_url: str, shared_model: Path) -> None:
    rng = random.Random(3)
    words = "wind flow pressure wing shock heat boundary layer laminar turbulent nozzle drag lift".split()
    docs = [{"text": "wind " + " ".join(rng.choices(words, k=200))} for _ in range(WINDOW)]
    async with aiohttp.ClientSession() as http:
        await create_index(http, opensearch_url, INDEX, docs)

    model = ModelSettings(source=str(shared_model), cache_size=0, max_batch_tokens=4096)
    scorer = LocalScorer("minilm", model)
    settings = Settings(
        upstream={"url": opensearch_url},
        models={"minilm": model},
        rules=[{"indices": [INDEX], "fields": ["text"], "window": WINDOW, "timeout_ms": 60000}],
    )
    try:
        async with running_bridge(settings, scorers={"minilm": scorer}) as url:
            before = scorer.stats
            baseline = len(asyncio.all_tasks())
            body = {"query": {"match": {"text": "wind"}}, "size": WINDOW}
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=0.5)) as http:
                with pytest.raises(asyncio.TimeoutError):
                    async with http.post(f"{url}/{INDEX}/_search", json=body) as response:
                        await response.read()
            # Give the bridge time to notice the closed connection and the worker to finish its current batch.
            for _ in range(100):
                await asyncio.sleep(0.1)
                if scorer.stats.queued_pairs == 0 and len(asyncio.all_tasks()) <= baseline:
                    break
            after = scorer.stats
            assert after.queued_pairs == 0
            assert after.pairs_dropped - before.pairs_dropped > 0
            assert after.items_scored - before.items_scored < WINDOW
            assert len(asyncio.all_tasks()) <= baseline
            # and it still serves the next request
            async with aiohttp.ClientSession() as http:
                small = {"query": {"match": {"text": "wind"}}, "size": 5, "ext": {"rerank": {"window": 5}}}
                async with http.post(f"{url}/{INDEX}/_search", json=small) as response:
                    assert response.status == 200
                    assert response.headers["X-Rerank"] == "applied; model=minilm; window=5; combine=replace"
    finally:
        async with aiohttp.ClientSession() as http:
            await delete_indices(http, opensearch_url, INDEX)
