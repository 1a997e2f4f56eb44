"""Checking the plumbing: the bridge's reranked window against the model applied directly with transformers.

For a sample of queries the engine's own candidate window is fetched, each (query, passage) pair is scored by
``AutoModelForSequenceClassification`` in float32, and the candidates are ordered by that score. The bridge's
window must be that order, except where two scores tie within a tolerance: this holds whatever the model's
quality, so it tells a plumbing fault (wrong text, fields, truncation, order) from a weak model.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

# Score differences below this count as ties, per dtype the bridge ran the model in (logit scale).
TOLERANCES = {"float32": 1e-4, "auto": 1e-4, "float16": 2e-2, "bfloat16": 1e-1}


@dataclass
class QueryCheck:
    query_id: str
    candidates: int
    exact: bool
    agrees: bool
    first_difference: int | None = None
    """Position where the bridge's order leaves the reference order, if it does."""
    violation: dict[str, Any] | None = None
    """Where the bridge put a document the reference scores clearly lower than one it left for later."""
    max_score_difference: float | None = None


@dataclass
class VerifyReport:
    model_source: str
    tolerance: float
    max_length: int
    checks: list[QueryCheck] = field(default_factory=list)
    score_transform: str | None = None

    @property
    def agreeing(self) -> int:
        return sum(check.agrees for check in self.checks)

    def as_dict(self) -> dict[str, Any]:
        differences = [c.max_score_difference for c in self.checks if c.max_score_difference is not None]
        return {
            "queries": len(self.checks),
            "agree": self.agreeing,
            "exact": sum(check.exact for check in self.checks),
            "all_agree": self.agreeing == len(self.checks),
            "tolerance": self.tolerance,
            "reference": f"transformers AutoModelForSequenceClassification float32, max_length {self.max_length}",
            "model_source": self.model_source,
            "bridge_score_vs_reference": {
                "transform": self.score_transform,
                "max_abs_difference": max(differences) if differences else None,
            },
            "disagreements": [
                {
                    "query_id": c.query_id,
                    "first_difference": c.first_difference,
                    "violation": c.violation,
                }
                for c in self.checks
                if not c.agrees
            ],
        }


class ReferenceScorer:
    """The model as plain transformers runs it: float32, eval mode, one logit (or one label's probability)."""

    def __init__(
        self,
        source: str,
        *,
        max_length: int | None = None,
        revision: str | None = None,
        trust_remote_code: bool = False,
        label: str | None = None,
        batch_size: int = 16,
    ) -> None:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        from bridge.scoring.preflight import check_source

        found = check_source("reference", source, revision)  # one line, not from_pretrained's retries
        if found.problem is not None:
            raise ValueError(f"exactness check: {found.problem}")
        common: dict[str, Any] = {
            "revision": revision,
            "trust_remote_code": trust_remote_code,
            "local_files_only": found.local_files_only,
        }
        self.source = source
        self.tokenizer = AutoTokenizer.from_pretrained(source, **common)
        self.model = AutoModelForSequenceClassification.from_pretrained(source, **common, **_float32()).eval()
        limits = [
            value
            for value in (
                max_length,
                getattr(self.tokenizer, "model_max_length", None),
                getattr(self.model.config, "max_position_embeddings", None),
            )
            if isinstance(value, int) and 0 < value < 1_000_000
        ]
        self.max_length = min(limits) if limits else 512
        self.batch_size = batch_size
        labels = self.model.config.num_labels
        self.label_index: int | None = None
        if labels > 1:
            # The bridge requires ``label`` for these models and matches it ignoring case.
            named = {str(v).casefold(): int(k) for k, v in (self.model.config.id2label or {}).items()}
            self.label_index = named.get(label.casefold(), labels - 1) if label is not None else labels - 1

    def score(self, query: str, passages: Sequence[str]) -> list[float]:
        """One logit per passage (for several labels: the chosen label's softmax probability)."""
        import torch

        scores: list[float] = []
        with torch.inference_mode():
            for start in range(0, len(passages), self.batch_size):
                batch = list(passages[start : start + self.batch_size])
                encoded = self.tokenizer(
                    [query] * len(batch),
                    batch,
                    padding=True,
                    truncation=True,
                    max_length=self.max_length,
                    return_tensors="pt",
                )
                logits = self.model(**encoded).logits.float()
                if self.label_index is None:
                    scores.extend(float(v) for v in logits[:, 0])
                else:
                    scores.extend(float(v) for v in logits.softmax(-1)[:, self.label_index])
        return scores


def _float32() -> dict[str, Any]:
    """``dtype=float32`` as this transformers spells it (``torch_dtype`` before 4.56)."""
    import torch
    import transformers

    major, minor = (int(part) for part in transformers.__version__.split(".")[:2])
    return {"dtype": torch.float32} if (major, minor) >= (4, 56) else {"torch_dtype": torch.float32}


def passage(source: Mapping[str, Any] | None, fields: Sequence[str], separator: str) -> str:
    """The rule's fields from ``_source``, non-blank ones joined by the separator (top-level string fields)."""
    pieces: list[str] = []
    for name in fields:
        value = (source or {}).get(name)
        values = value if isinstance(value, list) else [value]
        pieces.extend(str(v) for v in values if isinstance(v, str | int | float) and str(v).strip())
    return separator.join(pieces)


def check_query(
    query_id: str,
    candidate_ids: Sequence[str],
    reference_scores: Sequence[float],
    bridge_ids: Sequence[str],
    tolerance: float,
    bridge_scores: Sequence[float | None] | None = None,
) -> QueryCheck:
    """Does the bridge's top of the window follow the reference order, ties within ``tolerance`` aside?

    ``reference_scores`` are on the bridge's scale (see ``best_transform``). At each position the bridge's
    document must score no more than ``tolerance`` below the best candidate not placed yet: that checks the
    order and that nothing better was left out.
    """
    score = dict(zip(candidate_ids, reference_scores, strict=True))
    expected = sorted(candidate_ids, key=lambda doc_id: -score[doc_id])  # stable: ties keep the engine's order
    shown = list(bridge_ids[: len(candidate_ids)])
    exact = shown == expected[: len(shown)]
    first = next((i for i, (a, b) in enumerate(zip(shown, expected, strict=False)) if a != b), None)
    violation: dict[str, Any] | None = None
    remaining = set(candidate_ids)
    for position, doc_id in enumerate(shown):
        if doc_id not in remaining:
            violation = {"position": position, "document": doc_id, "problem": "not among the engine's candidates"}
            break
        best = max(remaining, key=lambda d: score[d])
        if score[doc_id] < score[best] - tolerance:
            violation = {
                "position": position,
                "document": doc_id,
                "reference_score": score[doc_id],
                "better_left_out": best,
                "its_score": score[best],
            }
            break
        remaining.discard(doc_id)
    difference: float | None = None
    if bridge_scores is not None:
        gaps = [
            abs(score[d] - float(s))
            for d, s in zip(shown, bridge_scores, strict=False)
            if d in score and isinstance(s, int | float)
        ]
        difference = max(gaps, default=None)
    return QueryCheck(query_id, len(candidate_ids), exact, violation is None, first, violation, difference)


def best_transform(pairs: Sequence[tuple[float, float]]) -> str | None:
    """Which activation the bridge applied to the logits (identity or sigmoid), judged on (logit, score) pairs."""
    if not pairs:
        return None
    errors = {name: max(abs(apply_transform(name, ref) - got) for ref, got in pairs) for name in ("identity", "sigmoid")}
    return min(errors, key=lambda name: errors[name])


def apply_transform(name: str | None, value: float) -> float:
    """A reference logit on the bridge's scale; sigmoid in float32, so it saturates where the bridge's does."""
    if name == "sigmoid":
        import numpy as np

        with np.errstate(over="ignore"):
            return float(np.float32(1.0) / (np.float32(1.0) + np.exp(-np.float32(value))))
    return value


def sample(query_ids: Sequence[str], count: int) -> list[str]:
    """``count`` query ids spread evenly over the run (the first, then every k-th)."""
    if count <= 0 or not query_ids:
        return []
    if count >= len(query_ids):
        return list(query_ids)
    step = len(query_ids) / count
    return [query_ids[int(i * step)] for i in range(count)]


async def verify_sample(
    query_ids: Sequence[str],
    queries: Mapping[str, str],
    bridge_answers: Mapping[str, Any],
    fetch_window: Any,
    reference: ReferenceScorer,
    fields: Sequence[str],
    separator: str,
    tolerance: float,
) -> VerifyReport:
    """Re-score each sampled query's engine window with ``reference`` and compare with the bridge's answer.

    ``fetch_window(query_text)`` returns the engine's window hits (with ``_source``); ``bridge_answers`` maps
    query ids to the bridge path's ``Answer`` from the main run.
    """
    import asyncio

    scored: list[tuple[str, list[str], list[float]]] = []
    for query_id in query_ids:
        hits = await fetch_window(queries[query_id])
        ids = [str(hit["_id"]) for hit in hits]
        passages = [passage(hit.get("_source"), fields, separator) for hit in hits]
        logits = await asyncio.to_thread(reference.score, queries[query_id], passages)
        scored.append((query_id, ids, logits))
    pairs: list[tuple[float, float]] = []
    for query_id, ids, logits in scored:
        answer = bridge_answers[query_id]
        if not (answer.x_rerank or "").startswith("applied"):
            continue  # the engine's scores say nothing about the model's scale
        by_id = dict(zip(ids, logits, strict=True))
        pairs.extend(
            (by_id[d], float(s))
            for d, s in zip(answer.ids, answer.scores, strict=False)
            if d in by_id and isinstance(s, int | float)
        )
    transform = best_transform(pairs)
    report = VerifyReport(reference.source, tolerance, reference.max_length, score_transform=transform)
    for query_id, ids, logits in scored:
        answer = bridge_answers[query_id]
        if not (answer.x_rerank or "").startswith("applied"):
            # The engine's order can match the model's by chance (few hits); it still proves nothing.
            problem = f"not reranked (X-Rerank: {answer.x_rerank or 'absent'})"
            report.checks.append(QueryCheck(query_id, len(ids), False, False, 0, {"problem": problem}))
            continue
        on_scale = [apply_transform(transform, value) for value in logits]
        report.checks.append(
            check_query(query_id, ids, on_scale, answer.ids, tolerance, answer.scores[: len(ids)])
        )
    return report
