"""The contract between search interception and the scoring engine."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Protocol

_log = logging.getLogger(__name__)


class ScoringError(Exception):
    """The model could not score; interception fails open on it."""

    reason = "model_error"


class QueueFullError(ScoringError):
    """Backpressure: too many pairs are waiting already."""

    reason = "queue_full"


class ModelConfigError(ValueError):
    """A model's settings do not fit the model (unknown label, impossible activation); raised at start."""


class Scorer(Protocol):
    """Scores (query, passage) pairs; one per configured model name."""

    name: str

    async def start(self) -> None:
        """Load weights and warm up, so the first request pays nothing extra."""

    async def score(
        self, query: str, passages: Sequence[str], keys: Sequence[str | None] | None = None
    ) -> list[float]:
        """One score per passage, in the passages' order. Cancelling drops the pairs not yet scored.

        ``keys[i]`` is a stable identity of passage i's document (``"<_index>/<_id>"``) or None; scorers that
        cache per document (the bi-encoder's passage vectors) use it, the others ignore it.
        """

    async def close(self) -> None:
        """Stop workers and free the model."""


class ScoringObserver(Protocol):
    """Where the engine reports what operators watch (Prometheus in production, nothing in tests)."""

    def batch_done(self, model: str, pairs: int, padded_tokens: int, seconds: float) -> None: ...

    def queue_depth(self, model: str, pairs: int) -> None: ...

    def cache_lookup(self, model: str, hits: int, misses: int) -> None: ...


class NullObserver:
    """Used when nobody watches."""

    def batch_done(self, model: str, pairs: int, padded_tokens: int, seconds: float) -> None:
        pass

    def queue_depth(self, model: str, pairs: int) -> None:
        pass

    def cache_lookup(self, model: str, hits: int, misses: int) -> None:
        pass


class GuardedObserver:
    """Wraps an observer so that a failing metrics call is logged, never raised into the scoring path."""

    def __init__(self, inner: ScoringObserver | None) -> None:
        self.inner: ScoringObserver = inner or NullObserver()

    def batch_done(self, model: str, pairs: int, padded_tokens: int, seconds: float) -> None:
        try:
            self.inner.batch_done(model, pairs, padded_tokens, seconds)
        except Exception:
            _log.exception("observer failed in batch_done")

    def queue_depth(self, model: str, pairs: int) -> None:
        try:
            self.inner.queue_depth(model, pairs)
        except Exception:
            _log.exception("observer failed in queue_depth")

    def cache_lookup(self, model: str, hits: int, misses: int) -> None:
        try:
            self.inner.cache_lookup(model, hits, misses)
        except Exception:
            _log.exception("observer failed in cache_lookup")
