"""Many concurrent requests in, few dense model calls out.

Requests from the event loop go into one bounded queue. Worker threads take them in arrival order into a *pool*
of tokenised pairs (admission stops at a window of a few batches' worth of tokens), keep the pool sorted by
length, and plan batches over it: consecutive runs of the sorted pool, chosen to waste the fewest padded tokens
while staying under the token budget (:func:`plan_batches`). A worker runs the planned batch that holds the
pool's oldest pair, so completion stays roughly first-come first-served and nothing starves, while pairs from
different callers with similar lengths share batches: the more callers, the less padding. With several workers,
the pool's last batch is split once in two, so a lone request does not end on one worker while the others idle.

Everything slow (tokenising, the forward pass) happens on the workers; the event loop only enqueues and receives
results. On a CPU there are usually two workers with their own batches rather than one worker with twice the
threads: torch's OpenMP threads synchronise after every operation, which costs little on an idle machine and a
great deal when another process holds one of the cores. A cancelled request's pairs leave the queue and the pool
before they are scored.

The queue knows only requests, items and batches: what a batch returns per item is the engine's business. A
cross-encoder returns one score per (query, passage) window and a passage keeps its best window's score (the
default ``merge``); a bi-encoder returns one vector per text (``merge`` keeps the only one).
"""

from __future__ import annotations

import asyncio
import bisect
import collections
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

import numpy as np

from bridge.scoring.base import GuardedObserver, QueueFullError, ScoringError, ScoringObserver
from bridge.scoring.encoder import Encoded, padded_tokens

log = logging.getLogger(__name__)

# The pool admits new requests while it holds fewer than this many batches' worth of tokens: enough to sort
# several callers' pairs together, few enough that a request waits for a handful of batches, not the backlog.
WINDOW_BATCHES = 16


# A model call costs a fixed overhead besides its tokens (kernel launches, Python, thread wake-ups); the planner
# counts it as this fraction of the batch budget, so it splits batches only where padding costs more than a call.
CALL_OVERHEAD_DIVISOR = 16


def plan_batches(lengths: Sequence[int], budget: int, overhead: int) -> list[int]:
    """Split ascending ``lengths`` into consecutive batches; returns the batch sizes.

    Minimises the padded tokens (rows x longest row) plus ``overhead`` per batch, with no batch over ``budget``
    padded tokens (an item longer than the budget still gets a batch of its own). Dynamic programming over the
    sorted lengths: best[i] = min over j of best[j] + overhead + (i - j) * lengths[i - 1].
    """
    n = len(lengths)
    if n == 0:
        return []
    widths = np.asarray(lengths, dtype=np.int64)
    best = np.zeros(n + 1, dtype=np.int64)
    start = np.zeros(n + 1, dtype=np.int64)
    for i in range(1, n + 1):
        width = int(widths[i - 1])
        rows = max(1, budget // max(width, 1))
        j0 = max(0, i - rows)
        costs = best[j0:i] + overhead + (i - np.arange(j0, i)) * width
        k = int(np.argmin(costs))
        best[i] = costs[k]
        start[i] = j0 + k
    sizes: list[int] = []
    i = n
    while i > 0:
        j = int(start[i])
        sizes.append(i - j)
        i = j
    sizes.reverse()
    return sizes


def split_point(lengths: Sequence[int], budget: int) -> int:
    """Rows to take from an ascending-length batch so that its two parts cost about the same padded tokens.

    ``len(lengths)`` (no split) when the batch is too small to be worth a second model call: under half the
    budget, or a single row.
    """
    n = len(lengths)
    if n < 2 or n * lengths[-1] < budget // 2:
        return n
    best, best_cost = n, n * lengths[-1]
    for rows in range(1, n):
        cost = max(rows * lengths[rows - 1], (n - rows) * lengths[-1])
        if cost < best_cost:
            best, best_cost = rows, cost
    return best


R = TypeVar("R")
R_co = TypeVar("R_co", covariant=True)


def keep_best(old: Any, new: Any) -> Any:
    """The default merge: a passage scored in several windows keeps its best window's score."""
    return new if new > old else old


class BatchEngine(Protocol[R_co]):
    """What the batcher needs from a model (a cross-encoder engine of any backend, see
    :mod:`bridge.scoring.backends`, or :class:`~bridge.scoring.bi_encoder.BiEncoderModel`).

    The batcher and the token types it moves (:class:`~bridge.scoring.encoder.Encoded`) import no torch: what
    runs a batch is the engine's business (tests/scoring/test_backend_seam.py keeps it so).

    ``encode(head, texts)`` turns one request into model inputs: for a cross-encoder ``head`` is the query and
    ``texts`` its passages; for a bi-encoder ``head`` says how the texts are embedded (query or document).

    ``score_batch`` is called from several worker threads at once when ``workers`` > 1. An engine may also
    define ``prepare_worker()``, called once at the start of each worker thread (thread-local set-up).
    ``encode`` costs work bounded by the model's budget per pair, whatever the texts' lengths, and polls
    ``should_stop`` between bounded pieces, so a cancelled request stops tokenising.
    """

    max_batch_tokens: int

    def encode(
        self, head: str, texts: Sequence[str], should_stop: Callable[[], bool] | None = None, /
    ) -> list[Encoded]: ...

    def score_batch(self, batch: Sequence[Encoded], /) -> Sequence[R_co]: ...


class _Request:
    __slots__ = (
        "arrival",
        "cancelled",
        "finished",
        "future",
        "loop",
        "passages",
        "query",
        "remaining",
        "scores",
    )

    def __init__(
        self, query: str, passages: list[str], loop: asyncio.AbstractEventLoop, initial: Any
    ) -> None:
        self.query = query
        self.passages = passages
        self.loop = loop
        self.future: asyncio.Future[list[Any]] = loop.create_future()
        self.arrival = time.monotonic()
        self.cancelled = False
        self.finished = False  # answered or dropped; its pairs no longer count as queued
        self.remaining = 0
        self.scores: list[Any] = [initial] * len(passages)


@dataclass(slots=True, eq=False)
class _Item:
    length: int
    seq: int
    request: _Request
    encoded: Encoded

    def __lt__(self, other: _Item) -> bool:
        return (self.length, self.seq) < (other.length, other.seq)


@dataclass(frozen=True)
class BatcherStats:
    """Counters for tests and diagnostics (items are model inputs: pairs, or windows when chunking)."""

    batches: int
    items_scored: int
    pairs_dropped: int
    padded_tokens: int
    tokens: int
    queued_pairs: int


def _resolve(
    future: asyncio.Future[list[Any]], scores: list[Any] | None, error: BaseException | None
) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        assert scores is not None
        future.set_result(scores)


class Batcher(Generic[R]):
    """Queue plus inference workers for one model. All shared state is guarded by one condition variable.

    ``initial`` is each text's result before any of its items is scored and ``merge(old, new)`` folds an item's
    result into it: the defaults (-inf, the larger) give a passage its best window's score.
    """

    def __init__(
        self,
        name: str,
        engine: BatchEngine[R],
        *,
        workers: int = 1,
        max_wait_ms: float = 2.0,
        max_queue_pairs: int = 20000,
        observer: ScoringObserver | None = None,
        initial: Any = float("-inf"),
        merge: Callable[[Any, Any], Any] = keep_best,
    ) -> None:
        self.name = name
        self._engine = engine
        self._initial = initial
        self._merge = merge
        self._workers = max(1, workers)
        self._max_wait = max_wait_ms / 1000.0
        self._max_queue_pairs = max_queue_pairs
        self._window = WINDOW_BATCHES * engine.max_batch_tokens
        self._observer: ScoringObserver = GuardedObserver(observer)
        self._cond = threading.Condition()
        self._threads: list[threading.Thread] = []
        self._stopping = False
        self._pending: collections.deque[_Request] = collections.deque()
        self._queued_pairs = 0
        self._pool: list[_Item] = []  # sorted by (length, arrival)
        self._pool_tokens = 0
        self._segments: list[int] | None = None  # planned batch sizes over the pool; None: re-plan
        self._pool_version = 0  # bumped when items enter or leave the pool other than by a planned batch
        self._tail_split = False  # the pool's last batch was split already (reset when new pairs arrive)
        self._seq = 0
        self._cancellations = 0
        self._ready = 0
        self._batches = 0
        self._items_scored = 0
        self._padded = 0
        self._tokens = 0
        self._dropped = 0

    # -- event-loop side ---------------------------------------------------------------------------------

    def start(self) -> None:
        if self._threads:
            return
        for index in range(self._workers):
            thread = threading.Thread(target=self._work, name=f"scorer-{self.name}-{index}", daemon=True)
            thread.start()
            self._threads.append(thread)

    @property
    def workers(self) -> int:
        return self._workers

    @property
    def stats(self) -> BatcherStats:
        with self._cond:
            return BatcherStats(
                self._batches,
                self._items_scored,
                self._dropped,
                self._padded,
                self._tokens,
                self._queued_pairs,
            )

    async def submit(self, query: str, passages: Sequence[str]) -> list[R]:
        """Results in the passages' order; raises :class:`QueueFullError` instead of queueing without bound."""
        if not passages:
            return []
        request = _Request(query, list(passages), asyncio.get_running_loop(), self._initial)
        count = len(request.passages)
        with self._cond:
            if self._stopping or not any(thread.is_alive() for thread in self._threads):
                raise ScoringError(f"scorer {self.name} is not running")
            if self._queued_pairs + count > self._max_queue_pairs:
                raise QueueFullError(
                    f"scorer {self.name}: {self._queued_pairs} pairs waiting, {count} more would exceed "
                    f"max_queue_pairs={self._max_queue_pairs}"
                )
            self._queued_pairs += count
            self._pending.append(request)
            self._cond.notify()
            # Reported under the lock, so reports from all threads arrive in order and the gauge ends true.
            self._observer.queue_depth(self.name, self._queued_pairs)
        try:
            return await request.future
        except asyncio.CancelledError:
            self._cancel(request)
            raise

    def _cancel(self, request: _Request) -> None:
        with self._cond:
            request.cancelled = True
            if request.finished:
                return
            try:
                self._pending.remove(request)
            except ValueError:
                # Being tokenised, in the pool or in a running batch: workers drop it at their next step.
                self._cancellations += 1
                return
            self._finish_locked(request, dropped=True)

    async def close(self) -> None:
        """Stop the workers (running batches finish); requests still waiting fail with :class:`ScoringError`."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        for thread in self._threads:
            await asyncio.to_thread(thread.join)
        with self._cond:
            requests = list(self._pending) + [item.request for item in self._pool]
            self._pending.clear()
            self._pool = []
            for request in requests:
                self._finish_locked(request, error=ScoringError(f"scorer {self.name} is closed"))

    # -- worker side: everything named *_locked runs with self._cond held ----------------------------------

    def _finish_locked(
        self,
        request: _Request,
        scores: list[Any] | None = None,
        error: BaseException | None = None,
        dropped: bool = False,
    ) -> None:
        """Answer (or drop) a request exactly once and take its pairs off the queue count."""
        if request.finished:
            return
        request.finished = True
        self._queued_pairs -= len(request.passages)
        if dropped:
            self._dropped += len(request.passages)
        self._observer.queue_depth(self.name, self._queued_pairs)
        if not dropped:
            with contextlib.suppress(RuntimeError):  # the caller's loop is closed; nobody is waiting any more
                request.loop.call_soon_threadsafe(_resolve, request.future, scores, error)

    def _purge_cancelled_locked(self) -> None:
        if not self._cancellations:
            return
        self._cancellations = 0
        kept = []
        for item in self._pool:
            if item.request.cancelled:
                self._finish_locked(item.request, dropped=True)
            else:
                kept.append(item)
        if len(kept) != len(self._pool):
            self._pool = kept
            self._pool_tokens = sum(item.length for item in kept)
            self._invalidate_plan_locked()

    def _invalidate_plan_locked(self) -> None:
        self._segments = None
        self._pool_version += 1

    def _plan_locked(self) -> tuple[int, int, int] | None:
        """Pool slice ``[lo, hi)`` and plan index of the planned batch that holds the oldest item.

        Planning a large pool takes milliseconds, so it runs with the lock released (the event loop's submit()
        takes the same lock); None means the pool changed meanwhile and the caller should look again.
        """
        if self._segments is None:
            version = self._pool_version
            budget = self._engine.max_batch_tokens
            lengths = [item.length for item in self._pool]
            self._cond.release()
            try:
                plan = plan_batches(lengths, budget, budget // CALL_OVERHEAD_DIVISOR)
            finally:
                self._cond.acquire()
            if version != self._pool_version or self._segments is not None:
                return None
            self._segments = plan
        pool = self._pool
        oldest = min(range(len(pool)), key=lambda i: pool[i].seq)
        lo = 0
        for index, size in enumerate(self._segments):
            if oldest < lo + size:
                return lo, lo + size, index
            lo += size
        raise AssertionError("batch plan does not cover the pool")

    def _next_job_locked(self) -> _Request | list[_Item] | None:
        """A request to tokenise, a batch to run, or None to stop; waits while there is nothing to do."""
        while True:
            if self._stopping:
                return None
            self._purge_cancelled_locked()
            if self._pending and (self._pool_tokens < self._window or not self._pool):
                return self._pending.popleft()
            if not self._pool:
                self._cond.wait()
                continue
            planned = self._plan_locked()
            if planned is None:
                continue
            lo, hi, index = planned
            whole_pool = lo == 0 and hi == len(self._pool) and not self._pending
            if (
                whole_pool
                and padded_tokens([item.encoded for item in self._pool]) < self._engine.max_batch_tokens
            ):
                # The whole pool fits in one batch with room to spare: give other callers max_wait to join it.
                wait = min(item.request.arrival for item in self._pool) + self._max_wait - time.monotonic()
                if wait > 0:
                    self._cond.wait(wait)
                    continue
            assert self._segments is not None
            end = hi
            if self._workers > 1 and not self._pending and len(self._segments) == 1 and not self._tail_split:
                # The pool's last batch: taken whole, it would run on one worker while the others wait for
                # the next request. Its shorter rows go now and the rest stays for the next free worker, so
                # a lone request finishes sooner.
                end = lo + split_point(
                    [item.length for item in self._pool[lo:hi]], self._engine.max_batch_tokens
                )
                self._tail_split = end < hi  # once: the rest is not split again
            items = self._pool[lo:end]
            del self._pool[lo:end]
            self._pool_tokens -= sum(item.length for item in items)
            if end < hi:
                self._invalidate_plan_locked()
                self._cond.notify()
            else:
                del self._segments[index]
            return items

    def _admit(self, request: _Request) -> None:
        """Tokenise a request (once, outside the lock) and put its items into the sorted pool."""
        encoded: list[Encoded] = []
        error: ScoringError | None = None
        if not request.cancelled:
            try:
                encoded = self._engine.encode(request.query, request.passages, lambda: request.cancelled)
            except Exception as exc:
                error = ScoringError(f"scorer {self.name}: could not tokenise the request: {exc}")
                error.__cause__ = exc
        with self._cond:
            if request.cancelled:
                self._finish_locked(request, dropped=True)
            elif error is not None or not encoded:
                self._finish_locked(request, [], error)
            else:
                request.remaining = len(encoded)
                self._tail_split = False
                for item in encoded:
                    self._seq += 1
                    bisect.insort(self._pool, _Item(len(item), self._seq, request, item))
                    self._pool_tokens += len(item)
                self._invalidate_plan_locked()
                self._cond.notify_all()

    def _run(self, items: list[_Item]) -> None:
        batch = [item.encoded for item in items]
        padded = padded_tokens(batch)
        started = time.perf_counter()
        try:
            scores = self._engine.score_batch(batch)
            if len(scores) != len(batch):
                raise RuntimeError(f"model returned {len(scores)} scores for {len(batch)} inputs")
        except Exception as exc:
            with self._cond:
                self._fail_locked(items, exc)
            return
        seconds = time.perf_counter() - started
        self._observer.batch_done(self.name, len(items), padded, seconds)
        with self._cond:
            self._batches += 1
            self._items_scored += len(items)
            self._padded += padded
            self._tokens += sum(item.length for item in items)
            for item, score in zip(items, scores, strict=True):
                request = item.request
                if request.finished:
                    continue
                if request.cancelled:
                    self._finish_locked(request, dropped=True)
                    continue
                index = item.encoded.passage
                request.scores[index] = self._merge(request.scores[index], score)
                request.remaining -= 1
                if request.remaining == 0:
                    self._finish_locked(request, request.scores)

    def _fail_locked(self, items: list[_Item], exc: BaseException) -> None:
        """Fail every request with a pair in ``items``; the workers themselves carry on."""
        log.error("scorer %s: batch of %d failed: %r", self.name, len(items), exc)
        failed = {id(item.request): item.request for item in items}
        kept = [item for item in self._pool if id(item.request) not in failed]
        if len(kept) != len(self._pool):
            self._pool = kept
            self._pool_tokens = sum(item.length for item in kept)
            self._invalidate_plan_locked()
        oom = isinstance(exc, MemoryError) or "out of memory" in str(exc)
        kind = "ran out of memory" if oom else "failed"
        for request in failed.values():
            error = ScoringError(f"scorer {self.name}: the model {kind} on a batch of {len(items)}: {exc}")
            error.__cause__ = exc
            self._finish_locked(request, error=error)

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Block until every worker has finished ``prepare_worker`` (blocking: call via ``asyncio.to_thread``)."""
        with self._cond:
            return self._cond.wait_for(lambda: self._ready >= len(self._threads), timeout)

    def _work(self) -> None:
        prepare = getattr(self._engine, "prepare_worker", None)
        try:
            if prepare is not None:
                prepare()
        except Exception:
            log.exception("scorer %s: worker set-up failed", self.name)
        finally:
            with self._cond:
                self._ready += 1
                self._cond.notify_all()
        while True:
            job: _Request | list[_Item] | None = None
            try:
                with self._cond:
                    job = self._next_job_locked()
                if job is None:
                    return
                if isinstance(job, _Request):
                    self._admit(job)
                else:
                    self._run(job)
            except Exception:  # never let a worker die: fail what it held and go on
                log.exception("scorer %s: worker error", self.name)
                with self._cond:
                    if isinstance(job, list):
                        self._fail_locked(job, RuntimeError("internal batching error"))
