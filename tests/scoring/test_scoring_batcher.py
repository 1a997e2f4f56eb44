"""The queue and worker, with a scripted engine: ordering, batching across callers, cancellation, backpressure,
failures, waiting to fill a batch."""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence

import pytest

from bridge.scoring.base import QueueFullError, ScoringError
from bridge.scoring.batcher import Batcher, plan_batches, split_point
from bridge.scoring.model import Encoded


def fake_score(passage: str) -> float:
    return float(sum(map(ord, passage)) % 1000)


class Engine:
    """Tokens = words; score = a function of the passage text; records every batch it runs."""

    def __init__(self, max_batch_tokens: int = 64) -> None:
        self.max_batch_tokens = max_batch_tokens
        self.batches: list[list[str]] = []
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        self.fail_on: str | None = None
        self.fail_with: Exception = RuntimeError("boom")
        self.texts: dict[tuple[int, int], str] = {}
        self.lock = threading.Lock()
        self.inside = 0  # batches running right now
        self._ids = itertools.count()

    def encode(
        self, query: str, passages: Sequence[str], should_stop: Callable[[], bool] | None = None
    ) -> list[Encoded]:
        if query == "untokenisable":
            raise ValueError("bad input")
        items = []
        for index, passage in enumerate(passages):
            key = next(self._ids)
            self.texts[(key, 0)] = passage
            ids = [key] + [0] * max(len(passage.split()), 1)
            items.append(Encoded(index, ids, None))
        return items

    def score_batch(self, batch: Sequence[Encoded]) -> list[float]:
        texts = [self.texts[(item.input_ids[0], 0)] for item in batch]
        with self.lock:
            self.inside += 1
        self.entered.set()
        self.gate.wait(5)
        with self.lock:
            self.inside -= 1
        if self.fail_on is not None and self.fail_on in texts:
            raise self.fail_with
        self.batches.append(texts)
        return [fake_score(text) for text in texts]


class Recorder:
    def __init__(self) -> None:
        self.batches: list[tuple[int, int]] = []
        self.depths: list[int] = []

    def batch_done(self, model: str, pairs: int, padded_tokens: int, seconds: float) -> None:
        self.batches.append((pairs, padded_tokens))

    def queue_depth(self, model: str, pairs: int) -> None:
        self.depths.append(pairs)

    def cache_lookup(self, model: str, hits: int, misses: int) -> None:
        raise AssertionError("the batcher does not use the cache")


@pytest.fixture(params=[1, 2], ids=["1-worker", "2-workers"])
async def engine_and_batcher(request) -> AsyncIterator[tuple[Engine, Batcher, Recorder]]:
    engine = Engine()
    recorder = Recorder()
    batcher = Batcher(
        "fake", engine, workers=request.param, max_wait_ms=1, max_queue_pairs=500, observer=recorder
    )
    batcher.start()
    yield engine, batcher, recorder
    engine.gate.set()
    await batcher.close()


async def occupy_workers(engine: Engine, batcher: Batcher) -> list[asyncio.Task[list[float]]]:
    """Hold every worker inside a batch (one long blocker each), so new requests have to wait in the queue."""
    engine.gate.clear()
    blockers = [
        asyncio.create_task(batcher.submit("q", [f"blocker{i} " + "w " * 40])) for i in range(batcher.workers)
    ]
    deadline = time.monotonic() + 5
    while engine.inside < batcher.workers:
        assert time.monotonic() < deadline, "workers did not pick up the blockers"
        await asyncio.sleep(0.005)
    return blockers


def passages(prefix: str, count: int) -> list[str]:
    return [f"{prefix} " + "w " * (i % 7) for i in range(count)]


def test_plan_batches_is_optimal_and_within_budget():
    def brute(lengths: list[int], budget: int, overhead: int) -> int:
        best = {0: 0}
        for i in range(1, len(lengths) + 1):
            best[i] = min(
                best[j] + overhead + (i - j) * lengths[i - 1]
                for j in range(i)
                if (i - j) * lengths[i - 1] <= budget or i - j == 1
            )
        return best[len(lengths)]

    for seed in range(20):
        import random

        rng = random.Random(seed)
        lengths = sorted(rng.randint(1, 40) for _ in range(rng.randint(1, 30)))
        sizes = plan_batches(lengths, budget=100, overhead=10)
        assert sum(sizes) == len(lengths) and all(size > 0 for size in sizes)
        start, cost = 0, 0
        for size in sizes:
            width = lengths[start + size - 1]
            assert size * width <= 100 or size == 1
            cost += 10 + size * width
            start += size
        assert cost == brute(lengths, 100, 10)
    assert plan_batches([500], budget=100, overhead=10) == [1], "an over-long item still gets a batch"
    assert plan_batches([], budget=100, overhead=10) == []


def test_split_point_balances_padded_cost():
    assert split_point([6] * 8, budget=64) == 4
    assert split_point([2, 2, 2, 2, 10, 10], budget=64) == 4  # 4 x 2 = 8 beside 2 x 10 = 20: the least max
    assert split_point([1, 1], budget=64) == 2, "under half the budget: not worth a second call"
    assert split_point([40], budget=64) == 1


async def test_concurrent_callers_get_their_own_scores_in_order(engine_and_batcher):
    engine, batcher, recorder = engine_and_batcher
    work = {f"caller{c}": passages(f"caller{c}", 13 + c) for c in range(12)}
    results = await asyncio.gather(*(batcher.submit("q", ps) for ps in work.values()))
    for ps, scores in zip(work.values(), results, strict=True):
        assert scores == [fake_score(p) for p in ps]
    assert any(len({text.split()[0] for text in batch}) > 1 for batch in engine.batches), (
        "callers share batches"
    )
    assert all(padded <= engine.max_batch_tokens for _, padded in recorder.batches)
    assert batcher.stats.queued_pairs == 0 and recorder.depths[-1] == 0


async def test_many_callers_make_fewer_denser_calls_than_one_by_one(engine_and_batcher):
    engine, batcher, _ = engine_and_batcher
    work = [passages(f"c{c}", 10) for c in range(8)]
    for ps in work:
        await batcher.submit("q", ps)
    sequential_calls = len(engine.batches)
    engine.batches.clear()
    engine.gate.clear()  # hold the worker so all callers queue up together
    tasks = [asyncio.create_task(batcher.submit("q", ps)) for ps in work]
    await asyncio.sleep(0.05)
    engine.gate.set()
    await asyncio.gather(*tasks)
    assert len(engine.batches) < sequential_calls


async def test_cancelled_request_is_dropped_before_scoring(engine_and_batcher):
    engine, batcher, _ = engine_and_batcher
    blockers = await occupy_workers(engine, batcher)
    doomed = passages("doomed", 9)
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(batcher.submit("q", doomed), timeout=0.05)
    engine.gate.set()
    await asyncio.gather(*blockers)
    assert await batcher.submit("q", ["after"]) == [fake_score("after")]
    scored = [text for batch in engine.batches for text in batch]
    assert not any(text.startswith("doomed") for text in scored)
    assert batcher.stats.pairs_dropped == len(doomed)
    assert batcher.stats.queued_pairs == 0


async def test_cancelled_request_already_in_the_pool_loses_its_remaining_batches(engine_and_batcher):
    engine, batcher, _ = engine_and_batcher
    engine.gate.clear()
    long_request = ["big " + "w " * 30 for _ in range(8)]  # 32 tokens each: 2 per batch, 4 batches
    task = asyncio.create_task(batcher.submit("q", long_request))
    deadline = time.monotonic() + 5
    while engine.inside < batcher.workers:  # every worker is running one of its batches
        assert time.monotonic() < deadline
        await asyncio.sleep(0.005)
    task.cancel()
    await asyncio.sleep(0.02)
    engine.gate.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await batcher.submit("q", ["after"]) == [fake_score("after")]
    deadline = time.monotonic() + 5
    while engine.inside:  # the other worker may still be finishing its batch
        assert time.monotonic() < deadline
        await asyncio.sleep(0.005)
    big_batches = [batch for batch in engine.batches if batch[0].startswith("big")]
    assert len(big_batches) == batcher.workers, "only the batches already running were scored"
    assert batcher.stats.pairs_dropped == len(long_request)
    assert batcher.stats.queued_pairs == 0


async def test_queue_full_is_backpressure():
    engine = Engine()
    batcher = Batcher("fake", engine, max_queue_pairs=50)
    batcher.start()
    engine.gate.clear()
    first = asyncio.create_task(batcher.submit("q", passages("a", 30)))
    second = asyncio.create_task(batcher.submit("q", passages("b", 20)))
    await asyncio.sleep(0.02)
    with pytest.raises(QueueFullError, match="max_queue_pairs=50"):
        await batcher.submit("q", ["one too many"])
    engine.gate.set()
    assert len(await first) == 30 and len(await second) == 20
    assert await batcher.submit("q", ["fits again"]) == [fake_score("fits again")]
    await batcher.close()


@pytest.mark.parametrize("error", [RuntimeError("kernel failed"), MemoryError("out of memory")])
async def test_model_error_becomes_scoring_error_and_worker_survives(engine_and_batcher, error):
    engine, batcher, _ = engine_and_batcher
    engine.fail_on, engine.fail_with = "poison", error
    with pytest.raises(ScoringError) as caught:
        await batcher.submit("q", ["fine", "poison"])
    assert caught.value.__cause__ is error
    if isinstance(error, MemoryError):
        assert "out of memory" in str(caught.value)
    engine.fail_on = None
    assert await batcher.submit("q", ["fine"]) == [fake_score("fine")]
    assert batcher.stats.queued_pairs == 0


async def test_tokeniser_error_becomes_scoring_error(engine_and_batcher):
    _, batcher, _ = engine_and_batcher
    with pytest.raises(ScoringError, match="tokenise") as caught:
        await batcher.submit("untokenisable", ["x"])
    assert isinstance(caught.value.__cause__, ValueError)
    assert await batcher.submit("q", ["x"]) == [fake_score("x")]


async def test_waits_briefly_to_fill_a_batch():
    engine = Engine(max_batch_tokens=1000)
    batcher = Batcher("fake", engine, max_wait_ms=300)
    batcher.start()
    try:
        first = asyncio.create_task(batcher.submit("q", ["one"]))
        await asyncio.sleep(0.05)
        second = asyncio.create_task(batcher.submit("q", ["two"]))
        started = time.monotonic()
        assert await first == [fake_score("one")] and await second == [fake_score("two")]
        assert engine.batches == [["one", "two"]], "the second request joined the waiting batch"
        assert time.monotonic() - started < 1.0
    finally:
        await batcher.close()


async def test_close_fails_waiting_requests_and_refuses_new_ones():
    engine = Engine()
    batcher = Batcher("fake", engine)
    batcher.start()
    engine.gate.clear()
    engine.entered.clear()
    running = asyncio.create_task(batcher.submit("q", ["running"]))
    await asyncio.to_thread(engine.entered.wait, 5)
    waiting = asyncio.create_task(batcher.submit("q", ["waiting"]))
    await asyncio.sleep(0.01)
    closing = asyncio.create_task(batcher.close())
    await asyncio.sleep(0.01)
    engine.gate.set()
    await closing
    assert await running == [fake_score("running")]
    with pytest.raises(ScoringError, match="closed"):
        await waiting
    with pytest.raises(ScoringError, match="not running"):
        await batcher.submit("q", ["late"])


async def test_empty_request_needs_no_worker(engine_and_batcher):
    engine, batcher, _ = engine_and_batcher
    assert await batcher.submit("q", []) == []
    assert engine.batches == []


@pytest.mark.parametrize("workers", [1, 2])
async def test_a_lone_request_is_shared_by_the_workers(workers: int) -> None:
    """One request that fits one batch: with two workers its rows are split once, and both halves run at once."""
    engine = Engine()
    batcher = Batcher("fake", engine, workers=workers, max_wait_ms=1)
    batcher.start()
    try:
        engine.gate.clear()
        texts = [f"p{i} w w w w" for i in range(8)]  # 8 rows of 6 tokens: 48 padded tokens of a 64 budget
        task = asyncio.create_task(batcher.submit("q", texts))
        deadline = time.monotonic() + 5
        while engine.inside < workers:
            assert time.monotonic() < deadline, "the workers did not both get a share"
            await asyncio.sleep(0.005)
        engine.gate.set()
        assert await task == [fake_score(text) for text in texts]
        assert sorted(len(batch) for batch in engine.batches) == ([4, 4] if workers == 2 else [8])
    finally:
        engine.gate.set()
        await batcher.close()


async def test_many_short_requests_are_not_split() -> None:
    engine = Engine()
    batcher = Batcher("fake", engine, workers=2, max_wait_ms=1)
    batcher.start()
    try:
        assert await batcher.submit("q", ["a", "b"]) == [fake_score("a"), fake_score("b")]
        assert [len(batch) for batch in engine.batches] == [2], "a batch under half the budget stays whole"
    finally:
        await batcher.close()
