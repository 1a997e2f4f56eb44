"""Checking the plumbing: the bridge's reranked window against the model applied directly, outside the bridge.

For a sample of queries the engine's own candidate window is fetched, each (query, passage) pair is scored in
float32 by an independent implementation — a cross-encoder by transformers' ``AutoModelForSequenceClassification``,
a bi-encoder by sentence-transformers' ``encode_query``/``encode_document`` and the similarity the bridge is
specified to use (:func:`reference_similarity`) — and the candidates are ordered by that score. The bridge's ``replace`` window must be
that order, except where two scores tie within a tolerance: this holds whatever the model's quality, so it tells
a plumbing fault (wrong text, fields, truncation, pooling, order) from a weak model.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

# Score differences below this count as ties, per dtype the bridge ran the model in (logit scale).
TOLERANCES = {"float32": 1e-4, "auto": 1e-4, "float16": 2e-2, "bfloat16": 1e-1}
# The same for a bi-encoder's similarity (cosine, in [-1, 1]); bf16: about 3x the 0.003 measured on all-MiniLM-L6-v2.
BI_ENCODER_TOLERANCES = {"float32": 1e-5, "auto": 1e-5, "float16": 5e-3, "bfloat16": 1e-2}
CROSS_ENCODER_REFERENCE = "transformers AutoModelForSequenceClassification float32"


class Reference(Protocol):
    """What the check needs of a reference model: its source, token budget, and one score per passage."""

    source: str
    max_length: int

    def score(self, query: str, passages: Sequence[str]) -> list[float]: ...


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
    reference: str = CROSS_ENCODER_REFERENCE
    mode: str = "replace"
    """The bridge answers checked: the model's order is what ``replace`` answers."""

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
            "reference": f"{self.reference}, max_length {self.max_length}",
            "mode": self.mode,
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

        common: dict[str, Any] = {
            "revision": revision,
            "trust_remote_code": trust_remote_code,
            "local_files_only": _local_files_only(source, revision),
        }
        self.source = source
        self.description = CROSS_ENCODER_REFERENCE
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


class BiEncoderReference:
    """A sentence-transformers model as sentence-transformers itself runs it: ``encode`` in float32 on the CPU,
    then ``similarity`` with the function the bridge is specified to use (:func:`reference_similarity`)."""

    def __init__(
        self,
        source: str,
        *,
        max_length: int | None = None,
        revision: str | None = None,
        trust_remote_code: bool = False,
        similarity: str | None = None,
        batch_size: int = 32,
    ) -> None:
        import torch
        from sentence_transformers import SentenceTransformer

        self.source = source
        self.model = SentenceTransformer(
            source,
            device="cpu",
            revision=revision,
            trust_remote_code=trust_remote_code,
            local_files_only=_local_files_only(source, revision),
        ).eval()
        self.model.to(dtype=torch.float32)
        if max_length is not None and (self.model.max_seq_length is None or max_length < self.model.max_seq_length):
            self.model.max_seq_length = max_length
        self.max_length = int(self.model.max_seq_length or 512)
        self.batch_size = batch_size
        self.similarity = similarity or reference_similarity(
            getattr(self.model, "_similarity_fn_name", None),
            any(type(module).__name__ == "Normalize" for module in self.model),
        )
        self.model.similarity_fn_name = self.similarity  # type: ignore[assignment]  # a name ST supports
        # encode_query/encode_document are encode with the model's prompts, if it has any.
        self.description = f"sentence-transformers SentenceTransformer.encode float32 + {self.similarity}"

    def score(self, query: str, passages: Sequence[str]) -> list[float]:
        """The model's similarity of the query to each passage."""
        import torch

        if not passages:
            return []
        # encode_query/encode_document (sentence-transformers 5+) apply the model's "query"/"document" prompts.
        encode_query = getattr(self.model, "encode_query", self.model.encode)
        encode_document = getattr(self.model, "encode_document", self.model.encode)
        with torch.inference_mode():
            query_vector = encode_query([query], convert_to_tensor=True, batch_size=self.batch_size)
            vectors = encode_document(list(passages), convert_to_tensor=True, batch_size=self.batch_size)
            similarity = self.model.similarity(query_vector.float(), vectors.float())
        return [float(value) for value in similarity[0]]


def reference_similarity(declared: str | None, normalizes: bool) -> str:
    """The similarity a bi-encoder scores with, by issue 15's rule: the bridge's configured one (given to
    :class:`BiEncoderReference` directly), else the model's declared ``similarity_fn_name``, else the cosine —
    which is the dot product of a model that normalises — or the raw dot product for one that does not.
    (``SentenceTransformer.similarity`` would take the cosine in that last case.)"""
    if declared is not None:
        return str(declared)
    return "cosine" if normalizes else "dot"


def bi_encoder_reference_problem() -> str | None:
    """Why the bi-encoder check cannot run here (None when it can): it needs sentence-transformers itself."""
    from importlib.util import find_spec

    if find_spec("sentence_transformers") is None:
        return (
            "sentence-transformers is not installed (pip install sentence-transformers, or the [test] extra): "
            "the bi-encoder's reference is SentenceTransformer.encode itself"
        )
    return None


def _local_files_only(source: str, revision: str | None) -> bool:
    """Whether to load ``source`` without the Hub; a source that is not there fails here in one line (not after
    from_pretrained's retries)."""
    from bridge.scoring.preflight import check_source

    found = check_source("reference", source, revision)
    if found.problem is not None:
        raise ValueError(f"exactness check: {found.problem}")
    return found.local_files_only


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
    reference: Reference,
    fields: Sequence[str],
    separator: str,
    tolerance: float,
    mode: str = "replace",
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
    description = getattr(reference, "description", CROSS_ENCODER_REFERENCE)
    report = VerifyReport(
        reference.source, tolerance, reference.max_length, score_transform=transform, reference=description, mode=mode
    )
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
