"""The in-process scorer end to end on a tiny model: cache, concurrency, failures, warm-up, registry."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import torch

from bridge.scoring import ModelConfigError, ModelSettings, RemoteSettings, ScoringError
from bridge.scoring.local import LocalScorer
from bridge.scoring.registry import build_scorers, close_scorers, start_scorers
from bridge.scoring.remote import RemoteScorer

WORDS = (
    "berlin people live population museums city million paris weather lovely today man eating pizza".split()
)


def passages(seed: int, count: int) -> list[str]:
    return [
        " ".join(WORDS[(seed + i + k) % len(WORDS)] for k in range(1 + (seed * 7 + i) % 23))
        for i in range(count)
    ]


class Recorder:
    def __init__(self) -> None:
        self.lookups: list[tuple[int, int]] = []
        self.batches: list[tuple[int, int]] = []

    def batch_done(self, model: str, pairs: int, padded_tokens: int, seconds: float) -> None:
        self.batches.append((pairs, padded_tokens))

    def queue_depth(self, model: str, pairs: int) -> None:
        pass

    def cache_lookup(self, model: str, hits: int, misses: int) -> None:
        self.lookups.append((hits, misses))


@pytest.fixture
async def tiny_scorer(tiny_ce) -> AsyncIterator[tuple[LocalScorer, Recorder]]:
    recorder = Recorder()
    scorer = LocalScorer(
        "tiny", ModelSettings(source=str(tiny_ce), dtype="float32", cache_size=100), recorder
    )
    await scorer.start()
    yield scorer, recorder
    await scorer.close()


async def test_warm_up_runs_at_start(tiny_scorer):
    scorer, recorder = tiny_scorer
    assert recorder.batches, "start() scored a warm-up batch on the worker thread"
    assert scorer.stats.items_scored == 2


async def test_cache_hits_on_repeat_and_pages(tiny_scorer):
    scorer, recorder = tiny_scorer
    page1, page2 = passages(1, 10), passages(2, 10)
    first = await scorer.score("berlin people", page1)
    scored = scorer.stats.items_scored
    assert await scorer.score("berlin people", page1) == first
    assert scorer.stats.items_scored == scored, "a repeat scores nothing"
    assert recorder.lookups[-1] == (10, 0)
    both = await scorer.score("berlin people", page1 + page2)
    assert both[:10] == first
    assert scorer.stats.items_scored == scored + len(set(page2) - set(page1))
    other_query = await scorer.score("paris weather", page1)
    assert other_query != first, "the query is part of the key"


async def test_duplicate_passages_are_scored_once(tiny_scorer):
    scorer, _ = tiny_scorer
    before = scorer.stats.items_scored
    scores = await scorer.score("museums", ["paris city", "paris city", "berlin", "paris city"])
    assert scores[0] == scores[1] == scores[3]
    assert scorer.stats.items_scored - before == 2


async def test_cache_off_scores_every_time(tiny_ce):
    scorer = LocalScorer(
        "nocache", ModelSettings(source=str(tiny_ce), dtype="float32", cache_size=0, warmup=False)
    )
    await scorer.start()
    try:
        ps = passages(3, 5)
        assert await scorer.score("q", ps) == await scorer.score("q", ps)
        assert scorer.stats.items_scored == 10
    finally:
        await scorer.close()


async def test_lru_evicts_oldest(tiny_ce):
    scorer = LocalScorer(
        "lru", ModelSettings(source=str(tiny_ce), dtype="float32", cache_size=4, warmup=False)
    )
    await scorer.start()
    try:
        await scorer.score("q", ["a", "b", "c", "d"])
        await scorer.score("q", ["a"])  # refresh "a"
        await scorer.score("q", ["e"])  # evicts "b"
        scored = scorer.stats.items_scored
        await scorer.score("q", ["a", "c", "d", "e"])
        assert scorer.stats.items_scored == scored
        await scorer.score("q", ["b"])
        assert scorer.stats.items_scored == scored + 1
    finally:
        await scorer.close()


async def test_concurrent_callers_get_their_own_scores_in_their_order(tiny_ce):
    scorer = LocalScorer(
        "conc", ModelSettings(source=str(tiny_ce), dtype="float32", cache_size=0, max_batch_tokens=512)
    )
    await scorer.start()
    try:
        work = [(WORDS[i], passages(i, 12 + i)) for i in range(10)]
        alone = [await scorer.score(q, ps) for q, ps in work]
        before = scorer.stats
        together = await asyncio.gather(*(scorer.score(q, ps) for q, ps in work))
        for expected, got in zip(alone, together, strict=True):
            assert got == pytest.approx(expected, abs=1e-5)
        assert scorer.stats.batches - before.batches < sum(len(ps) for _, ps in work) / 4
    finally:
        await scorer.close()


async def test_model_exception_is_scoring_error_and_worker_survives(tiny_scorer, monkeypatch):
    scorer, _ = tiny_scorer
    assert scorer.model is not None
    real_forward = scorer.model.model.forward
    failures = [torch.cuda.OutOfMemoryError("CUDA out of memory"), RuntimeError("kernel failed")]

    def flaky(*args, **kwargs):
        if failures:
            raise failures.pop(0)
        return real_forward(*args, **kwargs)

    monkeypatch.setattr(scorer.model.model, "forward", flaky)
    with pytest.raises(ScoringError, match="out of memory") as caught:
        await scorer.score("q", ["first"])
    assert isinstance(caught.value.__cause__, torch.cuda.OutOfMemoryError)
    with pytest.raises(ScoringError, match="kernel failed"):
        await scorer.score("q", ["second"])
    assert len(await scorer.score("q", ["third", "fourth"])) == 2


async def test_timeout_from_the_caller_drops_pending_pairs(tiny_ce, monkeypatch):
    # One worker, kept busy: the second request waits in the queue when its caller gives up.
    scorer = LocalScorer("one", ModelSettings(source=str(tiny_ce), workers=1, warmup=False))
    await scorer.start()
    assert scorer.model is not None
    real_forward = scorer.model.model.forward
    entered = asyncio.Event()
    loop = asyncio.get_running_loop()
    gate = asyncio.Event()

    def slow(*args, **kwargs):
        loop.call_soon_threadsafe(entered.set)
        asyncio.run_coroutine_threadsafe(gate.wait(), loop).result(5)
        return real_forward(*args, **kwargs)

    monkeypatch.setattr(scorer.model.model, "forward", slow)
    first = asyncio.create_task(scorer.score("q", ["occupies the worker"]))
    await entered.wait()
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(scorer.score("q", passages(5, 20)), timeout=0.05)
    gate.set()
    await first
    assert scorer.stats.pairs_dropped == 20
    assert scorer.stats.items_scored == 1, "only the first request's pair reached the model"
    assert scorer.stats.queued_pairs == 0
    await scorer.close()


async def test_not_started_and_empty(tiny_ce):
    scorer = LocalScorer("x", ModelSettings(source=str(tiny_ce)))
    with pytest.raises(ScoringError, match="not started"):
        await scorer.score("q", ["p"])
    await scorer.start()
    try:
        assert await scorer.score("q", []) == []
    finally:
        await scorer.close()


async def test_int8_quantised_cpu_model_scores(tiny_ce):
    exact = LocalScorer("fp32", ModelSettings(source=str(tiny_ce), dtype="float32", warmup=False))
    int8 = LocalScorer(
        "int8", ModelSettings(source=str(tiny_ce), device="cpu", quantize="int8", warmup=False)
    )
    await start_scorers({"a": exact, "b": int8})
    try:
        ps = passages(4, 6)
        a, b = await exact.score("berlin", ps), await int8.score("berlin", ps)
        assert b == pytest.approx(a, abs=0.05)
    finally:
        await close_scorers({"a": exact, "b": int8})


async def test_registry_builds_named_local_and_remote_scorers(tiny_ce, tiny_ce_identity):
    models = {
        "sigmoid": ModelSettings(source=str(tiny_ce), dtype="float32"),
        "raw": ModelSettings(source=str(tiny_ce_identity), dtype="float32"),
        "far": ModelSettings(source="unused", remote=RemoteSettings(url="http://127.0.0.1:9/")),  # type: ignore[arg-type]
    }
    scorers = build_scorers(models)
    assert isinstance(scorers["sigmoid"], LocalScorer) and isinstance(scorers["far"], RemoteScorer)
    local = {name: scorers[name] for name in ("sigmoid", "raw")}
    await start_scorers(local)
    try:
        s = await local["sigmoid"].score("berlin", ["paris"])
        r = await local["raw"].score("berlin", ["paris"])
        assert 0 < s[0] < 1 and s != r
    finally:
        await close_scorers(scorers)


async def test_failed_start_closes_the_scorers_already_started(tiny_ce, tmp_path):
    good = LocalScorer("good", ModelSettings(source=str(tiny_ce), warmup=False))
    bad = LocalScorer("bad", ModelSettings(source=str(tmp_path / "missing")))
    with pytest.raises((OSError, ModelConfigError)):  # the missing directory is named before loading
        await start_scorers({"good": good, "bad": bad})
    with pytest.raises(ScoringError, match="not started"):
        await good.score("q", ["p"])


async def test_a_failing_observer_never_breaks_scoring(tiny_ce, caplog):
    class Broken:
        def batch_done(self, *args: object) -> None:
            raise RuntimeError("metrics backend down")

        queue_depth = cache_lookup = batch_done

    scorer = LocalScorer("observed", ModelSettings(source=str(tiny_ce), cache_size=10), Broken())  # type: ignore[arg-type]
    await scorer.start()
    try:
        assert len(await scorer.score("q", ["a", "b"])) == 2
        assert len(await scorer.score("q", ["a", "b"])) == 2
    finally:
        await scorer.close()
    assert "observer failed" in caplog.text
