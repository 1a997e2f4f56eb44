"""The contract between search interception and the scoring engine."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

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

    def remote_request(self, model: str, endpoint: str, outcome: str, seconds: float) -> None:
        """One HTTP request to a remote scorer's ``endpoint`` (a URL without credentials or query) ended:
        ``outcome`` is ``ok``, ``busy`` (429), ``server_error`` (5xx), ``client_error`` (other 4xx),
        ``unreachable``, ``timeout``, ``bad_response`` or ``cancelled``."""

    def remote_ejected(self, model: str, endpoint: str) -> None:
        """The endpoint failed and gets no traffic for a while."""

    def remote_endpoint_up(self, model: str, endpoint: str, up: bool) -> None:
        """The endpoint is in (True) or ejected / waiting for its probe (False)."""


@runtime_checkable
class ReportsEndpoints(Protocol):
    """A scorer that sends to remote endpoints and can say how each is doing (``/_bridge/ready``)."""

    def endpoint_states(self) -> list[dict[str, object]]:
        """One entry per endpoint: ``endpoint`` (no credentials), ``state`` (up, ejected, half-open), ``up``,
        ``in_flight``."""


class NullObserver:
    """Used when nobody watches."""

    def batch_done(self, model: str, pairs: int, padded_tokens: int, seconds: float) -> None:
        pass

    def queue_depth(self, model: str, pairs: int) -> None:
        pass

    def cache_lookup(self, model: str, hits: int, misses: int) -> None:
        pass

    def remote_request(self, model: str, endpoint: str, outcome: str, seconds: float) -> None:
        pass

    def remote_ejected(self, model: str, endpoint: str) -> None:
        pass

    def remote_endpoint_up(self, model: str, endpoint: str, up: bool) -> None:
        pass


@dataclass
class CacheTally:
    """Cache lookups made while :func:`tally_cache_lookups` is active: one caller's share, which the shared
    metrics (every request's lookups together) cannot tell."""

    hits: int = 0
    misses: int = 0


_TALLY: ContextVar[CacheTally | None] = ContextVar("rerank_bridge_cache_tally", default=None)


@contextmanager
def tally_cache_lookups() -> Iterator[CacheTally]:
    """Count the score-cache lookups of the scoring calls made in this context (tasks started in it included,
    as they copy the context); scorers report them through :class:`GuardedObserver`, so every kind counts."""
    tally = CacheTally()
    token = _TALLY.set(tally)
    try:
        yield tally
    finally:
        _TALLY.reset(token)


class GuardedObserver:
    """Wraps an observer so that a failing metrics call is logged, never raised into the scoring path."""

    def __init__(self, inner: ScoringObserver | None) -> None:
        # Unwrapped when already guarded, so a lookup is tallied once.
        self.inner: ScoringObserver = (inner.inner if isinstance(inner, GuardedObserver) else inner) or NullObserver()

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
        tally = _TALLY.get()
        if tally is not None:
            tally.hits += hits
            tally.misses += misses
        try:
            self.inner.cache_lookup(model, hits, misses)
        except Exception:
            _log.exception("observer failed in cache_lookup")

    def remote_request(self, model: str, endpoint: str, outcome: str, seconds: float) -> None:
        try:
            self.inner.remote_request(model, endpoint, outcome, seconds)
        except Exception:
            _log.exception("observer failed in remote_request")

    def remote_ejected(self, model: str, endpoint: str) -> None:
        try:
            self.inner.remote_ejected(model, endpoint)
        except Exception:
            _log.exception("observer failed in remote_ejected")

    def remote_endpoint_up(self, model: str, endpoint: str, up: bool) -> None:
        try:
            self.inner.remote_endpoint_up(model, endpoint, up)
        except Exception:
            _log.exception("observer failed in remote_endpoint_up")
