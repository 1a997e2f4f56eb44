"""NDCG@10, MRR@10 and Recall@100 per query, computed by ir-measures (trec_eval through pytrec_eval)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

Gain = Literal["exponential", "linear"]
METRICS = ("ndcg@10", "mrr@10", "recall@100")
TIE_EPSILON = 1e-9


@dataclass(frozen=True)
class Evaluation:
    """Per-query values for every metric, and their means over all evaluated queries."""

    per_query: dict[str, dict[str, float]]
    means: dict[str, float]


def _measures(gain: Gain, labels: Iterable[int]) -> dict[str, Any]:
    from ir_measures import RR, R, nDCG

    ndcg = nDCG @ 10
    if gain == "exponential":
        # Gain 2^rel - 1 (Burges et al.), as in the collections' reference figures; trec_eval's own is linear.
        ndcg = nDCG(gains={label: 2**label - 1 for label in sorted(set(labels)) if label > 0}) @ 10
    return {"ndcg@10": ndcg, "mrr@10": RR @ 10, "recall@100": R @ 100}


def evaluate(
    qrels: Mapping[str, Mapping[str, int]],
    run: Mapping[str, Sequence[str]],
    gain: Gain = "exponential",
) -> Evaluation:
    """Score ranked lists (``run``: query id to document ids, best first) against judgments.

    Every query in ``run`` counts, also one with no hits (all zeros). Rank order is what is judged: the
    documents get descending synthetic scores, so the engine's or the bridge's own score ties cannot reorder
    them inside trec_eval.
    """
    import ir_measures

    query_ids = list(run)
    judged = [
        ir_measures.Qrel(query_id, doc_id, int(relevance))
        for query_id in query_ids
        for doc_id, relevance in qrels.get(query_id, {}).items()
    ]
    scored = [
        ir_measures.ScoredDoc(query_id, doc_id, float(len(ids) - rank))
        for query_id, ids in run.items()
        for rank, doc_id in enumerate(_unique(ids))
    ]
    labels = {q.relevance for q in judged}
    per_query: dict[str, dict[str, float]] = {query_id: dict.fromkeys(METRICS, 0.0) for query_id in query_ids}
    # One measure per call: ir-measures 0.4 mixes up nDCG variants with different gains in a single call.
    for name, measure in _measures(gain, labels).items():
        for metric in ir_measures.iter_calc([measure], judged, scored):
            per_query[metric.query_id][name] = float(metric.value)
    means = {
        name: (sum(values[name] for values in per_query.values()) / len(per_query) if per_query else 0.0)
        for name in METRICS
    }
    return Evaluation(per_query, means)


def win_tie_loss(
    baseline: Mapping[str, Mapping[str, float]], other: Mapping[str, Mapping[str, float]], metric: str = "ndcg@10"
) -> dict[str, int]:
    """Per query: ``other`` better (win), equal (tie) or worse (loss) than ``baseline`` on ``metric``."""
    counts = {"wins": 0, "ties": 0, "losses": 0}
    for query_id, values in baseline.items():
        delta = other[query_id][metric] - values[metric]
        if delta > TIE_EPSILON:
            counts["wins"] += 1
        elif delta < -TIE_EPSILON:
            counts["losses"] += 1
        else:
            counts["ties"] += 1
    return counts


def _unique(ids: Sequence[str]) -> list[str]:
    """First occurrence of each id (trec_eval rejects a document twice in one ranking)."""
    return list(dict.fromkeys(ids))
