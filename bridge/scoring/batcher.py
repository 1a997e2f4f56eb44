"""Many concurrent requests in, few dense model calls out.

Requests from the event loop go into one bounded queue. A dedicated worker thread takes them in arrival order into
a *pool* of tokenised pairs (admission stops at a window of a few batches' worth of tokens), keeps the pool sorted
by length, and plans batches over it: consecutive runs of the sorted pool, chosen to waste the fewest padded
tokens while staying under the token budget (:func:`plan_batches`). It runs the planned batch that holds the
pool's oldest pair, so completion stays roughly first-come first-served and nothing starves, while pairs from
different callers that have similar lengths share batches: the more callers, the less padding.

Everything slow (tokenising, the forward pass) happens on the worker thread; the event loop only enqueues and
receives results. A cancelled request's pairs leave the queue and the pool before they are scored.
"""

from __future__ import annotations

import asyncio
import bisect
import collections
import contextlib
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from bridge.scoring.base import NullObserver, QueueFullError, ScoringError, ScoringObserver
from bridge.scoring.model import Encoded, padded_tokens

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


class BatchEngine(Protocol):
    """What the batcher needs from a model (implemented by :class:`~bridge.scoring.model.CrossEncoderModel`)."""

    max_batch_tokens: int

    def encode(self, query: str, passages: Sequence[str]) -> list[Encoded]: ...

    def score_batch(self, batch: Sequence[Encoded]) -> list[float]: ...


class _Request:
    __slots__ = ("arrival", "cancelled", "future", "loop", "passages", "query", "remaining", "scores")

    def __init__(self, query: str, passages: list[str], loop: asyncio.AbstractEventLoop) -> None:
        self.query = query
        self.passages = passages
        self.loop = loop
        self.future: asyncio.Future[list[float]] = loop.create_future()
        self.arrival = time.monotonic()
        self.cancelled = False
        self.remaining = 0
        self.scores = [float("-inf")] * len(passages)


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
    future: asyncio.Future[list[float]], scores: list[float] | None, error: BaseException | None
) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        assert scores is not None
        future.set_result(scores)


class Batcher:
    """Queue plus inference worker for one model."""

    def __init__(
        self,
        name: str,
        engine: BatchEngine,
        *,
        max_wait_ms: float = 2.0,
        max_queue_pairs: int = 20000,
        observer: ScoringObserver | None = None,
    ) -> None:
        self.name = name
        self._engine = engine
        self._max_wait = max_wait_ms / 1000.0
        self._max_queue_pairs = max_queue_pairs
        self._observer: ScoringObserver = observer or NullObserver()
        self._cond = threading.Condition()
        self._pending: collections.deque[_Request] = collections.deque()
        self._queued_pairs = 0
        self._stopping = False
        self._thread: threading.Thread | None = None
        # Worker-thread state.
        self._pool: list[_Item] = []
        self._pool_tokens = 0
        self._segments: list[int] | None = None  # planned batch sizes over the sorted pool
        self._seq = 0
        self._batches = 0
        self._items_scored = 0
        self._padded = 0
        self._tokens = 0
        self._dropped = 0

    # -- event-loop side ---------------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._work, name=f"scorer-{self.name}", daemon=True)
        self._thread.start()

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

    async def submit(self, query: str, passages: Sequence[str]) -> list[float]:
        """Scores in the passages' order; raises :class:`QueueFullError` instead of queueing without bound."""
        if not passages:
            return []
        request = _Request(query, list(passages), asyncio.get_running_loop())
        count = len(request.passages)
        with self._cond:
            if self._stopping or self._thread is None or not self._thread.is_alive():
                raise ScoringError(f"scorer {self.name} is not running")
            if self._queued_pairs + count > self._max_queue_pairs:
                raise QueueFullError(
                    f"scorer {self.name}: {self._queued_pairs} pairs waiting, {count} more would exceed "
                    f"max_queue_pairs={self._max_queue_pairs}"
                )
            self._queued_pairs += count
            depth = self._queued_pairs
            self._pending.append(request)
            self._cond.notify()
        self._observer.queue_depth(self.name, depth)
        try:
            return await request.future
        except asyncio.CancelledError:
            self._cancel(request)
            raise

    def _cancel(self, request: _Request) -> None:
        request.cancelled = True
        with self._cond:
            try:
                self._pending.remove(request)
            except ValueError:
                return  # in the pool (or done): the worker drops what is left before its next batch
            self._queued_pairs -= len(request.passages)
            self._dropped += len(request.passages)

    async def close(self) -> None:
        """Stop the worker; requests still waiting fail with :class:`ScoringError`."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join)

    # -- worker side -------------------------------------------------------------------------------------

    def _deliver(self, request: _Request, scores: list[float] | None, error: BaseException | None) -> None:
        with self._cond:
            self._queued_pairs -= len(request.passages)
            depth = self._queued_pairs
        request.remaining = 0
        with contextlib.suppress(RuntimeError):  # the caller's loop is closed; nobody is waiting any more
            request.loop.call_soon_threadsafe(_resolve, request.future, scores, error)
        self._observer.queue_depth(self.name, depth)

    def _take_one(self, block: bool) -> _Request | None:
        """The next waiting request, or None; blocks only while there is nothing at all to do."""
        with self._cond:
            while block and not self._stopping and not self._pending:
                self._cond.wait()
            if self._stopping or not self._pending:
                return None
            return self._pending.popleft()

    def _admit(self, request: _Request) -> None:
        """Tokenise a request (once) and put its items into the sorted pool."""
        if request.cancelled:
            with self._cond:
                self._queued_pairs -= len(request.passages)
                self._dropped += len(request.passages)
            return
        try:
            encoded = self._engine.encode(request.query, request.passages)
        except Exception as exc:
            error = ScoringError(f"scorer {self.name}: could not tokenise the request: {exc}")
            error.__cause__ = exc
            self._deliver(request, None, error)
            return
        request.remaining = len(encoded)
        self._segments = None
        for item in encoded:
            self._seq += 1
            bisect.insort(self._pool, _Item(len(item), self._seq, request, item))
            self._pool_tokens += len(item)
        if not encoded:
            self._deliver(request, [], None)

    def _purge_cancelled(self) -> None:
        if not any(item.request.cancelled for item in self._pool):
            return
        gone = {id(item.request): item.request for item in self._pool if item.request.cancelled}
        self._pool = [item for item in self._pool if not item.request.cancelled]
        self._segments = None
        self._pool_tokens = sum(item.length for item in self._pool)
        with self._cond:
            for request in gone.values():
                self._queued_pairs -= len(request.passages)
                self._dropped += len(request.passages)

    def _plan(self) -> tuple[int, int]:
        """Pool slice ``[lo, hi)`` for the next batch: the planned batch that holds the oldest item."""
        pool = self._pool
        if self._segments is None:
            budget = self._engine.max_batch_tokens
            self._segments = plan_batches(
                [item.length for item in pool], budget, budget // CALL_OVERHEAD_DIVISOR
            )
        oldest = min(range(len(pool)), key=lambda i: pool[i].seq)
        lo = 0
        for index, size in enumerate(self._segments):
            if oldest < lo + size:
                del self._segments[index]
                return lo, lo + size
            lo += size
        raise AssertionError("batch plan does not cover the pool")

    def _run_batch(self, lo: int, hi: int) -> None:
        items = self._pool[lo:hi]
        del self._pool[lo:hi]
        self._pool_tokens -= sum(item.length for item in items)
        batch = [item.encoded for item in items]
        padded = padded_tokens(batch)
        started = time.perf_counter()
        try:
            scores = self._engine.score_batch(batch)
            if len(scores) != len(batch):
                raise RuntimeError(f"model returned {len(scores)} scores for {len(batch)} inputs")
        except Exception as exc:
            self._fail_batch(items, exc)
            return
        seconds = time.perf_counter() - started
        with self._cond:
            self._batches += 1
            self._items_scored += len(items)
            self._padded += padded
            self._tokens += sum(item.length for item in items)
        self._observer.batch_done(self.name, len(items), padded, seconds)
        for item, score in zip(items, scores, strict=True):
            request = item.request
            index = item.encoded.passage
            if score > request.scores[index]:
                request.scores[index] = score
            request.remaining -= 1
            if request.remaining == 0:
                self._deliver(request, request.scores, None)

    def _fail_batch(self, items: list[_Item], exc: Exception) -> None:
        """Fail every request with a pair in the batch; the worker itself carries on."""
        log.error("scorer %s: batch of %d failed: %r", self.name, len(items), exc)
        failed = {id(item.request): item.request for item in items}
        kept = [item for item in self._pool if id(item.request) not in failed]
        self._pool_tokens = sum(item.length for item in kept)
        self._pool = kept
        self._segments = None
        kind = (
            "ran out of memory" if isinstance(exc, MemoryError) or "out of memory" in str(exc) else "failed"
        )
        for request in failed.values():
            error = ScoringError(f"scorer {self.name}: the model {kind} on a batch of {len(items)}: {exc}")
            error.__cause__ = exc
            self._deliver(request, None, error)

    def _work(self) -> None:
        window = WINDOW_BATCHES * self._engine.max_batch_tokens
        while True:
            try:
                request = self._take_one(block=not self._pool)
                while request is not None:
                    self._admit(request)
                    request = self._take_one(block=False) if self._pool_tokens < window else None
                with self._cond:
                    if self._stopping:
                        break
                self._purge_cancelled()
                if not self._pool:
                    continue
                lo, hi = self._plan()
                whole_pool = lo == 0 and hi == len(self._pool)
                if (
                    whole_pool
                    and padded_tokens([item.encoded for item in self._pool]) < self._engine.max_batch_tokens
                ):
                    oldest = min(self._pool, key=lambda item: item.seq).request.arrival
                    wait = oldest + self._max_wait - time.monotonic()
                    if wait > 0:
                        self._segments = None
                        with self._cond:
                            if not self._pending and not self._stopping:
                                self._cond.wait(wait)
                        continue
                self._run_batch(lo, hi)
            except Exception:  # never let the worker die: fail what it holds and go on
                log.exception("scorer %s: worker error", self.name)
                self._fail_batch(list(self._pool), RuntimeError("internal batching error"))
        self._shutdown()

    def _shutdown(self) -> None:
        with self._cond:
            waiting = list(self._pending)
            self._pending.clear()
        requests = {id(item.request): item.request for item in self._pool}
        requests.update({id(request): request for request in waiting})
        self._pool = []
        for request in requests.values():
            self._deliver(request, None, ScoringError(f"scorer {self.name} is closed"))
