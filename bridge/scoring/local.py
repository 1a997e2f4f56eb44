"""The in-process scorer: score cache, then the batcher, then the model on its worker thread.

The model is whatever engine the factory returns (:mod:`bridge.scoring.backends`: torch or OpenVINO); the
scorer only starts it, batches for it and reports its precision.
"""

from __future__ import annotations

from collections.abc import Sequence

from bridge.scoring.backends import CrossEncoderEngine, EngineFactory
from bridge.scoring.backends import engine_factory as default_factory
from bridge.scoring.base import ScoringObserver
from bridge.scoring.batcher import Batcher
from bridge.scoring.cache import ScoreCache, score_through_cache
from bridge.scoring.in_process import InProcessScorer
from bridge.scoring.settings import ModelSettings

_WARMUP_QUERY = "how does warm-up work"
_WARMUP_PASSAGES = (
    "Warm-up runs one small batch at start.",
    "The first request should not pay for lazy initialisation of kernels, thread pools and caches, "
    "so the scorer runs a small batch of pairs of different lengths before it takes traffic.",
)


class LocalScorer(InProcessScorer[CrossEncoderEngine, float]):
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
        super().__init__(name, settings, observer)
        self._cache = ScoreCache(settings.cache_size)
        self._engine_factory: EngineFactory = engine_factory or default_factory(settings)

    def _load(self) -> CrossEncoderEngine:
        return self._engine_factory(self.name, self.settings)

    async def _warm_up(self, batcher: Batcher[float]) -> None:
        await batcher.submit(_WARMUP_QUERY, list(_WARMUP_PASSAGES))

    def clear_cache(self) -> None:
        self._cache.clear()

    async def score(
        self, query: str, passages: Sequence[str], keys: Sequence[str | None] | None = None
    ) -> list[float]:
        """Cross-encoder scores; ``keys`` are ignored (scores are cached by query and passage text)."""
        batcher = self._started()

        async def compute(missing: list[str]) -> list[float]:
            return await batcher.submit(query, missing)

        return await score_through_cache(self._cache, self.name, query, passages, compute, self._observer)
