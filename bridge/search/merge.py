"""Putting the scores back into the engine's own answer: reorder the window, cut the page, restore _source."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bridge.search.filter_path import apply_filter_path
from bridge.search.passages import passage_text
from bridge.search.plan import Plan
from bridge.search.source_filter import filter_source


def window_hits(response: dict[str, Any], plan: Plan) -> list[dict[str, Any]]:
    return list(response.get("hits", {}).get("hits", []))[: plan.window]


def passages(response: dict[str, Any], plan: Plan) -> list[str]:
    return [passage_text(hit, plan.fields, plan.separator) for hit in window_hits(response, plan)]


def reranked(
    response: dict[str, Any], plan: Plan, scores: Sequence[float], rerank_ms: float
) -> dict[str, Any]:
    """The engine's answer with the window ordered by ``scores`` (ties keep the engine's order)."""
    hits = list(response["hits"]["hits"])
    window, rest = hits[: plan.window], hits[plan.window :]
    if len(scores) != len(window):
        raise ValueError(f"{len(scores)} scores for {len(window)} hits")
    order = sorted(range(len(window)), key=lambda i: -scores[i])
    ordered: list[dict[str, Any]] = []
    for i in order:
        hit = dict(window[i])
        previous = hit.get("_score")
        score = float(scores[i])
        hit["_score"] = score
        if plan.sorted_by_score and isinstance(hit.get("sort"), list):
            hit["sort"] = [score]
        if plan.keep_previous_score:
            hit["fields"] = {**hit.get("fields", {}), plan.previous_score_field: [previous]}
        ordered.append(hit)
    answer = _paged(response, plan, ordered + rest, rerank_ms)
    if response["hits"].get("max_score") is not None and scores:
        answer["hits"]["max_score"] = max(float(s) for s in scores)
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
