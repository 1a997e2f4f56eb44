"""One huge text does not stall the scorer: a normal search beside a 1 MiB query (or 1 MiB passages) is scored
within its budget, the huge one is scored like its truncation, and lone surrogates are scored, not refused."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from bridge.scoring.base import NullObserver
from bridge.scoring.cache import ScoreCache, score_through_cache
from bridge.scoring.local import LocalScorer
from bridge.scoring.settings import ModelSettings

MIB = 1 << 20
# A search's scoring budget (the rules' default timeout_ms is 2000): generous for a tiny model on a busy CPU,
# and far below the tens of seconds a 1 MiB query costs when it is tokenised whole for every pair.
BUDGET_S = 2.0
HUGE = ("berlin people live in the city " * (MIB // 31 + 1))[:MIB]
# 2000 characters of HUGE hold far more than the tiny model's 125 tokens of room: the tokens the model sees.
HUGE_AS_SEEN = HUGE[:2000]
PASSAGES = [f"paris museums {i} city of {i % 7} the weather is lovely today" for i in range(50)]


@pytest.fixture
async def scorer(tiny_ce: Path) -> AsyncIterator[LocalScorer]:
    scorer = LocalScorer("tiny", ModelSettings(source=str(tiny_ce), dtype="float32", cache_size=0))
    await scorer.start()
    yield scorer
    await scorer.close()


@pytest.mark.parametrize("huge_side", ["query", "passages"])
async def test_normal_search_is_scored_within_its_budget_beside_a_1_mib_text(scorer, huge_side):
    query, passages = (HUGE, PASSAGES) if huge_side == "query" else ("berlin", [HUGE] * 20)
    huge = asyncio.create_task(scorer.score(query, passages))
    await asyncio.sleep(0.05)  # the huge request reaches a worker first
    started = time.perf_counter()
    normal = await asyncio.wait_for(scorer.score("how many people live in berlin", PASSAGES[:10]), BUDGET_S)
    elapsed = time.perf_counter() - started
    assert len(normal) == 10 and elapsed < BUDGET_S
    huge_scores = await asyncio.wait_for(huge, BUDGET_S)
    assert len(huge_scores) == len(passages)


async def test_1_mib_query_scores_like_the_text_the_model_sees(scorer, tiny_ce, st_cross_encoder):
    ours = np.asarray(await asyncio.wait_for(scorer.score(HUGE, PASSAGES[:8]), BUDGET_S))
    encoder = st_cross_encoder(tiny_ce)
    expected = encoder.predict([(HUGE_AS_SEEN, p) for p in PASSAGES[:8]], show_progress_bar=False)
    np.testing.assert_allclose(ours, np.asarray(expected), atol=1e-4, rtol=0)


async def test_lone_surrogates_are_scored_like_replacement_characters(scorer):
    dirty = await scorer.score("berlin \ud800 people", ["paris \udfff city", "museums \ud83d"])
    clean = await scorer.score("berlin \ufffd people", ["paris \ufffd city", "museums \ufffd"])
    np.testing.assert_allclose(dirty, clean, atol=1e-5, rtol=0)


async def test_a_page_of_huge_passages_is_digested_off_the_event_loop(monkeypatch):
    cache = ScoreCache(10)
    digested_on: list[int] = []
    keys_for = cache.keys_for

    def recording(*args: object) -> object:
        digested_on.append(threading.get_ident())
        return keys_for(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(cache, "keys_for", recording)

    async def compute(missing: list[str]) -> list[float]:
        return [float(len(text)) for text in missing]

    huge_page = await score_through_cache(cache, "m", "q", [HUGE, HUGE + "!"], compute, NullObserver())
    small_page = await score_through_cache(cache, "m", "q", ["paris"], compute, NullObserver())
    assert huge_page == [MIB, MIB + 1] and small_page == [5.0]
    assert digested_on[0] != threading.get_ident(), "2 MiB of passages: digested on a thread"
    assert digested_on[1] == threading.get_ident(), "a normal page: digested in place, no thread hop"
