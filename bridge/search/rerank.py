"""Scoring one planned search's window, failing open: a model problem never fails the search."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bridge.config import LimitsSettings
from bridge.errors import BridgeHTTPError
from bridge.ops.metrics import Metrics
from bridge.scoring.base import QueueFullError, Scorer, ScoringError
from bridge.search import merge
from bridge.search.plan import Plan

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Outcome:
    """What happened to one search, for the ``X-Rerank`` header, metrics and the log line."""

    applied: bool
    model: str
    window: int
    reason: str | None = None
    model_ms: float = 0.0
    combine: str = "replace"
    """How the model's scores were used (``replace``, ``linear``, ``rrf``; several comma-joined for msearch)."""

    def header(self) -> str:
        if self.applied:
            return f"applied; model={self.model}; window={self.window}; combine={self.combine}"
        return f"skipped; reason={self.reason}"


class Reranker:
    def __init__(self, scorers: Mapping[str, Scorer], metrics: Metrics, limits: LimitsSettings) -> None:
        self.scorers = scorers
        self.metrics = metrics
        self.limits = limits

    async def apply(self, plan: Plan, response: dict[str, Any]) -> tuple[Any, Outcome]:
        """The client's answer built from the engine's ``response`` to ``plan.upstream_body``."""
        texts = merge.passages(response, plan)
        keys = merge.document_keys(response, plan)
        started = time.perf_counter()
        reason: str | None = None
        scores: list[float] = []
        try:
            if texts:
                scores = await asyncio.wait_for(
                    self.scorers[plan.model].score(plan.query_text, texts, keys=keys), plan.timeout_s
                )
                if len(scores) != len(texts) or not all(math.isfinite(score) for score in scores):
                    raise ScoringError(f"{len(scores)} scores (or non-finite ones) for {len(texts)} passages")
        except TimeoutError:
            reason = "timeout"
        except QueueFullError:
            reason = "queue_full"
        except ScoringError as error:
            reason = "model_error"
            log.warning(
                "model failed; answering the engine's order", extra={"model": plan.model, "error": str(error)}
            )
        except Exception as error:  # a scorer bug must not fail the search either
            reason = "model_error"
            log.exception("scorer raised unexpectedly", extra={"model": plan.model, "error": repr(error)})
        elapsed_ms = (time.perf_counter() - started) * 1000
        self.metrics.rerank_latency.labels(plan.model).observe(elapsed_ms / 1000)
        if reason is None:
            answer = merge.reranked(response, plan, scores, elapsed_ms)
            outcome = Outcome(True, plan.model, len(texts), model_ms=elapsed_ms, combine=plan.fusion.name)
            return merge.finish(answer, plan), outcome
        self.metrics.fail_open.labels(reason).inc()
        if self.limits.over_limit == "reject" and reason == "queue_full":
            raise BridgeHTTPError(429, "rejected_execution_exception", "rerank queue is full; retry later")
        if self.limits.over_limit == "reject" and reason == "timeout":
            raise BridgeHTTPError(
                504, "rerank_timeout_exception", f"reranking took longer than {plan.timeout_s}s"
            )
        answer = merge.engine_order(response, plan, elapsed_ms)
        outcome = Outcome(False, plan.model, len(texts), reason, elapsed_ms, combine=plan.fusion.name)
        return merge.finish(answer, plan), outcome
