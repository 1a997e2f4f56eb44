"""One caller's share of the score-cache lookups (``tally_cache_lookups``), which the shared metrics can't tell."""

from __future__ import annotations

import asyncio

from bridge.scoring.base import GuardedObserver, NullObserver, tally_cache_lookups
from bridge.scoring.cache import ScoreCache, score_through_cache


async def test_lookups_in_the_context_are_counted_once_and_others_not_at_all() -> None:
    cache = ScoreCache(100)
    observer = GuardedObserver(GuardedObserver(NullObserver()))  # guarded twice: still counted once

    async def compute(texts: list[str]) -> list[float]:
        return [float(len(text)) for text in texts]

    await score_through_cache(cache, "m", "q", ["a", "bb"], compute, observer)  # outside: not counted
    with tally_cache_lookups() as tally:
        # In a task started inside the context too (the reranker scores in tasks).
        await asyncio.create_task(score_through_cache(cache, "m", "q", ["a", "bb", "ccc"], compute, observer))
    assert (tally.hits, tally.misses) == (2, 1)
    await score_through_cache(cache, "m", "q", ["ccc"], compute, observer)
    assert (tally.hits, tally.misses) == (2, 1)


async def test_concurrent_callers_each_see_only_their_own_lookups() -> None:
    cache = ScoreCache(100)
    observer = GuardedObserver(None)

    async def compute(texts: list[str]) -> list[float]:
        await asyncio.sleep(0)
        return [0.0 for _ in texts]

    async def one(passages: list[str]) -> tuple[int, int]:
        with tally_cache_lookups() as tally:
            await score_through_cache(cache, "m", "q", passages, compute, observer)
            await score_through_cache(cache, "m", "q", passages, compute, observer)
        return tally.hits, tally.misses

    first, second = await asyncio.gather(one(["a", "b"]), one(["x", "y", "z"]))
    assert first == (2, 2) and second == (3, 3)
