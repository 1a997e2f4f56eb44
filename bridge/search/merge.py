"""Putting the scores back into the engine's own answer: reorder the window, cut the page, restore _source."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from bridge.search.filter_path import apply_filter_path
from bridge.search.passages import passage_text
from bridge.search.plan import Plan
from bridge.search.source_filter import filter_source


def window_hits(response: dict[str, Any], plan: Plan) -> list[dict[str, Any]]:
    return list(response.get("hits", {}).get("hits", []))[: plan.window]


def passages(response: dict[str, Any], plan: Plan) -> list[str]:
    return [passage_text(hit, plan.fields, plan.separator) for hit in window_hits(response, plan)]


def document_keys(response: dict[str, Any], plan: Plan) -> list[str | None]:
    """``"<_index>/<_id>"`` of each window hit, the document identity a scorer may cache by; None without one."""
    keys: list[str | None] = []
    for hit in window_hits(response, plan):
        index, doc = hit.get("_index"), hit.get("_id")
        keys.append(f"{index}/{doc}" if isinstance(index, str) and isinstance(doc, str) else None)
    return keys


def engine_score(hit: Mapping[str, Any]) -> float | None:
    """The engine's ``_score`` of a hit; None where it gave none (``null``, absent, not a finite number)."""
    score = hit.get("_score")
    if isinstance(score, bool) or not isinstance(score, int | float) or not math.isfinite(score):
        return None
    return float(score)


def reranked(
    response: dict[str, Any], plan: Plan, scores: Sequence[float], rerank_ms: float
) -> dict[str, Any]:
    """The engine's answer with the window ordered by the plan's fusion of ``scores`` and the engine's scores.

    Reranked hits carry their final score; hits past ``top_n`` follow in the engine's order with the engine's
    score, then the hits past the window, as the engine answered them. With ``min_score``, only the window's
    hits that reach it are answered (hits past the window have no final score to judge), and ``hits.total``
    counts them, as Elasticsearch's text_similarity_reranker does. Paging applies last.
    """
    hits = list(response["hits"]["hits"])
    window, rest = hits[: plan.window], hits[plan.window :]
    if len(scores) != len(window):
        raise ValueError(f"{len(scores)} scores for {len(window)} hits")
    ranking = plan.fusion.rank(scores, [engine_score(hit) for hit in window])
    ordered: list[dict[str, Any]] = []
    for i in ranking.reranked:
        hit = dict(window[i])
        previous = hit.get("_score")
        score = ranking.scores[i]
        hit["_score"] = score
        if plan.sorted_by_score and isinstance(hit.get("sort"), list):
            hit["sort"] = [score]
        if plan.keep_previous_score:
            hit["fields"] = {**hit.get("fields", {}), plan.previous_score_field: [previous]}
        ordered.append(hit)
    answered = ordered + [window[i] for i in ranking.unranked]
    cutoff = plan.fusion.min_score is not None
    if not cutoff:
        answered += rest
    answer = _paged(response, plan, answered, rerank_ms)
    if response["hits"].get("max_score") is not None and (ordered or ranking.cut):
        answer["hits"]["max_score"] = max((hit["_score"] for hit in ordered), default=None)
    total = response["hits"].get("total")
    if cutoff and isinstance(total, int) and not isinstance(total, bool):  # rest_total_hits_as_int
        answer["hits"]["total"] = len(answered)
    elif cutoff and isinstance(total, Mapping):
        answer["hits"]["total"] = {**total, "value": len(answered), "relation": "eq"}
    return answer


def engine_order(response: dict[str, Any], plan: Plan, rerank_ms: float) -> dict[str, Any]:
    """Fail-open: exactly the page the engine would have answered for the client's own request."""
    return _paged(response, plan, list(response["hits"]["hits"]), rerank_ms)


def _paged(
    response: dict[str, Any], plan: Plan, hits: list[dict[str, Any]], rerank_ms: float
) -> dict[str, Any]:
    page = hits[plan.offset : plan.offset + plan.size]
    if not plan.source.is_default:
        page = [_restore_source(hit, plan) for hit in page]
    answer = dict(response)
    answer["hits"] = {**response["hits"], "hits": page}
    if isinstance(answer.get("took"), int):
        answer["took"] = answer["took"] + round(rerank_ms)
    return answer


def _restore_source(hit: dict[str, Any], plan: Plan) -> dict[str, Any]:
    if "_source" not in hit:
        return hit
    restored = {k: v for k, v in hit.items() if k != "_source"}
    source = filter_source(hit["_source"], plan.source)
    if source is None:
        return restored
    # Keep the engine's key order: _source sits where it was.
    return {k: (source if k == "_source" else v) for k, v in hit.items()}


def finish(answer: dict[str, Any], plan: Plan) -> Any:
    """Response filtering last, as the engine applies it to the whole answer."""
    return apply_filter_path(answer, plan.filter_path) if plan.filter_path else answer
