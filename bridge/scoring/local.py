"""The in-process scorer: score cache, then the batcher, then the model on its worker thread.

The model is whatever engine the factory returns (:mod:`bridge.scoring.backends`: torch or OpenVINO); the
scorer only starts it, batches for it and reports its precision.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence

from bridge.scoring.backends import CrossEncoderEngine, EngineFactory
from bridge.scoring.backends import engine_factory as default_factory
from bridge.scoring.base import GuardedObserver, ScoringError, ScoringObserver
from bridge.scoring.batcher import Batcher, BatcherStats
from bridge.scoring.cache import ScoreCache, score_through_cache
from bridge.scoring.precision import PrecisionReport
from bridge.scoring.settings import ModelSettings

log = logging.getLogger(__name__)

_WARMUP_QUERY = "how does warm-up work"
_WARMUP_PASSAGES = (
    "Warm-up runs one small batch at start.",
    "The first request should not pay for lazy initialisation of kernels, thread pools and caches, "
    "so the scorer runs a small batch of pairs of different lengths before it takes traffic.",
)


class LocalScorer:
    """A cross-encoder in this process, behind the :class:`~bridge.scoring.base.Scorer` interface.

    ``engine_factory`` builds the engine (synchronously, on a worker thread); by default the one
    ``settings.backend`` names.
    """

    def __init__(
        self,
        name: str,
        settings: ModelSettings,
        observer: ScoringObserver | None = None,
        engine_factory: EngineFactory | None = None,
    ) -> None:
        if settings.remote is not None:
            raise ValueError(f"model {name!r} is configured as remote; use RemoteScorer")
        if settings.kind != "cross-encoder":
            raise ValueError(f"model {name!r} is a {settings.kind}; use BiEncoderScorer (or build_scorer)")
        self.name = name
        self.settings = settings
        self._observer: ScoringObserver = GuardedObserver(observer)
        self._cache = ScoreCache(settings.cache_size)
        self._engine_factory: EngineFactory = engine_factory or default_factory(settings)
        self.model: CrossEncoderEngine | None = None
        self._batcher: Batcher[float] | None = None

    async def start(self) -> None:
        """Load the model off the event loop, start the worker, and warm up through the real path."""
        if self._batcher is not None:
            return
        started = time.perf_counter()
        self.model = await asyncio.to_thread(self._engine_factory, self.name, self.settings)
        self._batcher = Batcher(
            self.name,
            self.model,
            workers=self.model.workers,
            max_wait_ms=self.settings.max_wait_ms,
            max_queue_pairs=self.settings.max_queue_pairs,
            observer=self._observer,
        )
        self._batcher.start()
        # Each worker warms itself up (its own thread pools); then one request takes the whole path.
        await asyncio.to_thread(self._batcher.wait_ready)
        if self.settings.warmup:
            await self._batcher.submit(_WARMUP_QUERY, list(_WARMUP_PASSAGES))
        log.info("scorer %s: ready in %.1f s", self.name, time.perf_counter() - started)

    @property
    def precision(self) -> PrecisionReport | None:
        """The precision the model runs in and its start-up check (None until started)."""
        return None if self.model is None else self.model.precision

    @property
    def stats(self) -> BatcherStats:
        if self._batcher is None:
            raise ScoringError(f"scorer {self.name} is not started")
        return self._batcher.stats

    def clear_cache(self) -> None:
        self._cache.clear()

    async def score(
        self, query: str, passages: Sequence[str], keys: Sequence[str | None] | None = None
    ) -> list[float]:
        """Cross-encoder scores; ``keys`` are ignored (scores are cached by query and passage text)."""
        batcher = self._batcher
        if batcher is None:
            raise ScoringError(f"scorer {self.name} is not started")

        async def compute(missing: list[str]) -> list[float]:
            return await batcher.submit(query, missing)

        return await score_through_cache(self._cache, self.name, query, passages, compute, self._observer)

    async def close(self) -> None:
        if self._batcher is not None:
            await self._batcher.close()
            self._batcher = None
        if self.model is not None:
            self.model.close()
            self.model = None
        self._cache.clear()
