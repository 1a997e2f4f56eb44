"""What the in-process scorers (cross-encoder and bi-encoder) share: a model loaded off the event loop and run by
worker threads behind a :class:`~bridge.scoring.batcher.Batcher`, warmed up through that path before traffic.

Subclasses say how the model is loaded (:meth:`InProcessScorer._load`), how the batcher folds an item's result
(:meth:`InProcessScorer._batcher_options`), what warm-up submits, and what their caches are.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Generic, Protocol, TypeVar

from bridge.scoring.base import GuardedObserver, ScoringError, ScoringObserver
from bridge.scoring.batcher import BatchEngine, Batcher, BatcherStats
from bridge.scoring.precision import PrecisionReport
from bridge.scoring.settings import ModelSettings

log = logging.getLogger(__name__)

R = TypeVar("R")


class InProcessEngine(BatchEngine[Any], Protocol):
    """What the shared lifecycle uses of a loaded model, besides what the batcher needs."""

    workers: int
    precision: PrecisionReport

    def close(self) -> None: ...


M = TypeVar("M", bound=InProcessEngine)


class InProcessScorer(Generic[M, R]):
    """Start, stats, precision and close of a model in this process; ``R`` is one text's result."""

    def __init__(self, name: str, settings: ModelSettings, observer: ScoringObserver | None) -> None:
        self.name = name
        self.settings = settings
        self._observer: ScoringObserver = GuardedObserver(observer)
        self.model: M | None = None
        self._batcher: Batcher[R] | None = None

    def _load(self) -> M:
        """Build the model (synchronous: seconds; run on a worker thread)."""
        raise NotImplementedError

    def _batcher_options(self) -> dict[str, Any]:
        """``initial`` / ``merge`` for the batcher (default: a passage keeps its best window's score)."""
        return {}

    async def _warm_up(self, batcher: Batcher[R]) -> None:
        """One small request through the real path (run when ``settings.warmup``)."""
        raise NotImplementedError

    async def _drain(self) -> None:
        """Wait for work of the scorer's own that outlives its requests (after the batcher closed)."""

    def clear_cache(self) -> None:
        raise NotImplementedError

    async def start(self) -> None:
        """Load the model off the event loop, start the workers, and warm up through the real path."""
        if self._batcher is not None:
            return
        started = time.perf_counter()
        self.model = model = await asyncio.to_thread(self._load)
        self._batcher = Batcher(
            self.name,
            model,
            workers=model.workers,
            max_wait_ms=self.settings.max_wait_ms,
            max_queue_pairs=self.settings.max_queue_pairs,
            observer=self._observer,
            **self._batcher_options(),
        )
        self._batcher.start()
        # Each worker warms itself up (its own thread pools); then one request takes the whole path.
        await asyncio.to_thread(self._batcher.wait_ready)
        if self.settings.warmup:
            await self._warm_up(self._batcher)
        log.info("scorer %s: ready in %.1f s", self.name, time.perf_counter() - started)

    def _started(self) -> Batcher[R]:
        """The running batcher; :class:`ScoringError` before :meth:`start` or after :meth:`close`."""
        if self._batcher is None:
            raise ScoringError(f"scorer {self.name} is not started")
        return self._batcher

    @property
    def precision(self) -> PrecisionReport | None:
        """The precision the model runs in and its start-up check (None until started)."""
        return None if self.model is None else self.model.precision

    @property
    def stats(self) -> BatcherStats:
        return self._started().stats

    async def close(self) -> None:
        if self._batcher is not None:
            await self._batcher.close()  # fails what still waits
            self._batcher = None
        await self._drain()
        if self.model is not None:
            self.model.close()
            self.model = None
        self.clear_cache()
