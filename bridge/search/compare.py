"""The compare page's search: one ``_search`` planned, fetched and scored as the bridge does it, both orders kept.

The bridge's answer to a search is one order; the compare page needs two (the engine's window as the engine
ranked it, and the same hits as the bridge reorders them) plus what decided it. This runs the bridge's own
pieces on one search: :func:`plan_search` decides, the engine is asked with the caller's headers (so it sees
the caller's credentials, exactly as for an intercepted search), :class:`Reranker` scores with its budget and
fail-open, and :class:`Fusion` says what each hit's final score and fate were. Nothing here writes, and nothing
reaches the engine but one ``_search`` on the given index expression.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from multidict import CIMultiDict

from bridge.config import RuleSettings, Settings
from bridge.errors import BridgeHTTPError, bad_request
from bridge.scoring.base import CacheTally, Scorer, tally_cache_lookups
from bridge.search import merge
from bridge.search.apis.search import search_answer
from bridge.search.call import skipped_header
from bridge.search.endpoints import SearchAPI, classify
from bridge.search.engine import Deadline, Engine, EngineClient, EngineReply
from bridge.search.json_codec import dump_json
from bridge.search.passages import passage_text
from bridge.search.plan import Plan, Skip, plan_search
from bridge.search.request import QueryString
from bridge.search.rerank import Reranker
from bridge.search.rules import match_rule

DEFAULT_HITS = 10
MAX_HITS = 100
TITLE_CHARS = 200
_KEYS = frozenset({"index", "q", "body", "size"})
# Headers describing the caller's body, which is not what the engine gets (as ``SearchCall.json_headers``).
_BODY_HEADERS = ("Content-Length", "Content-Encoding", "Accept-Encoding", "Content-Type")
# Characters that would make the index expression another path, or another API.
_PATH_CHARS = frozenset("/\\?#%\"<>| ")


@dataclass(frozen=True)
class CompareRequest:
    """What the page asks: an index expression, the search body a client would send, how many hits to show."""

    index: str
    body: dict[str, Any]
    size: int

    @property
    def path(self) -> str:
        """The engine path: a plain ``_search`` on the index expression, nothing else (checked by
        :func:`compare_request`)."""
        return f"/{quote(self.index, safe='*,:+-_.')}/_search"


def query_body(q: str, size: int) -> dict[str, Any]:
    """The search a typed query becomes: ``multi_match`` over the index's default fields
    (``index.query.default_field``, every field by default), lenient so a number field cannot refuse text."""
    return {"query": {"multi_match": {"query": q, "lenient": True}}, "size": size}


def compare_request(payload: Any) -> CompareRequest:
    """The page's JSON (``{index, q | body, size?}``) checked: every mistake is the engine-shaped 400."""
    if not isinstance(payload, Mapping):
        raise bad_request("the compare request must be a JSON object {index, q | body, size}")
    unknown = sorted(set(payload) - _KEYS)
    if unknown:
        raise bad_request(f"unknown field [{unknown[0]}]; the compare request takes index, q, body and size")
    index = payload.get("index")
    if not isinstance(index, str) or not index.strip():
        raise bad_request("[index] is required: an index name or pattern")
    index = index.strip()
    if _PATH_CHARS.intersection(index) or any(ord(c) < 32 for c in index):
        raise bad_request(f"[index] must be an index name or pattern, got [{index}]")
    size = payload.get("size")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= MAX_HITS):
        raise bad_request(f"[size] must be an integer from 1 to {MAX_HITS}, got [{size}]")
    q, body = payload.get("q"), payload.get("body")
    if body is not None and body != "":
        if isinstance(body, str):
            raise bad_request("[body] must be a JSON object (the search body), not a string")
        if not isinstance(body, Mapping):
            raise bad_request("[body] must be a JSON object (the search body)")
        search = dict(body)
        given = search.get("size")
        if size is None and given is not None:
            if isinstance(given, bool) or not isinstance(given, int) or not 1 <= given <= MAX_HITS:
                raise bad_request(f"[body.size] must be an integer from 1 to {MAX_HITS} here, got [{given}]")
            size = given
        if search.get("from") not in (None, 0):
            raise bad_request("[body.from] must be 0 or absent: the compare page shows the top of the ranking")
        search.pop("from", None)
        size = size or DEFAULT_HITS
        search["size"] = size
    elif isinstance(q, str) and q.strip():
        size = size or DEFAULT_HITS
        search = query_body(q.strip(), size)
    else:
        raise bad_request("give [q] (the query text) or [body] (a search body)")
    request = CompareRequest(index, search, size)
    endpoint = classify("POST", request.path)
    if endpoint is None or endpoint.api is not SearchAPI.SEARCH or endpoint.index != index:
        raise bad_request(f"[index] must be an index name or pattern, got [{index}]")
    return request


@dataclass(frozen=True)
class ComparedHit:
    """One document in one column: where the engine put it, where the bridge put it, and its scores."""

    index: str | None
    id: str | None
    title: str
    engine_rank: int
    rerank_rank: int | None
    """None: the bridge left it out (below ``min_score``)."""
    engine_score: float | None
    model_score: float | None
    """None: not scored (past the window, or the model failed and the engine's order stands)."""
    final_score: float | None
    status: str
    """``reranked``, ``unranked`` (past ``top_n``, engine order), ``cut`` (below ``min_score``),
    ``beyond_window`` (engine order after the window) or ``engine`` (not reranked: skipped or failed open)."""

    @property
    def move(self) -> int | None:
        """Places gained (positive) or lost (negative) from the engine's order to the bridge's."""
        return None if self.rerank_rank is None else self.engine_rank - self.rerank_rank

    def as_dict(self) -> dict[str, Any]:
        return {
            "_index": self.index,
            "_id": self.id,
            "title": self.title,
            "engine_rank": self.engine_rank,
            "rerank_rank": self.rerank_rank,
            "move": self.move,
            "engine_score": self.engine_score,
            "model_score": self.model_score,
            "final_score": self.final_score,
            "status": self.status,
        }


@dataclass(frozen=True)
class Comparison:
    """Both orders of one search and what decided them; a pure value, the page's JSON as it stands."""

    engine: list[ComparedHit]
    reranked: list[ComparedHit]
    plan: dict[str, Any] | None
    x_rerank: str
    reason: str | None
    engine_ms: float
    scoring_ms: float
    search: dict[str, Any]
    total: Any
    rule: dict[str, Any] | None = None
    """The rule the index expression matches, whether or not it applied (:func:`matched_rule`); None: none."""
    cache: CacheTally | None = None
    """This search's score-cache lookups (texts found / looked up); None when it did not score."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "engine": [hit.as_dict() for hit in self.engine],
            "reranked": [hit.as_dict() for hit in self.reranked],
            "plan": self.plan,
            "x_rerank": self.x_rerank,
            "reason": self.reason,
            "rule": self.rule,
            "timings": {
                "engine_ms": round(self.engine_ms, 2),
                "scoring_ms": round(self.scoring_ms, 2),
                "cached": None if self.cache is None else {"hits": self.cache.hits, "of": self.cache.hits + self.cache.misses},
            },
            "search": self.search,
            "total": self.total,
        }


class _Recording:
    """The plan's scorer, keeping the scores it answered: the reranker's own path (budget, fail-open, metrics)
    runs unchanged, and the page still sees the model's raw scores beside the final ones."""

    def __init__(self, inner: Scorer) -> None:
        self.inner = inner
        self.name = inner.name
        self.scores: list[float] | None = None

    async def start(self) -> None:
        await self.inner.start()

    async def close(self) -> None:
        await self.inner.close()

    async def score(
        self, query: str, passages: Sequence[str], keys: Sequence[str | None] | None = None
    ) -> list[float]:
        scores = await self.inner.score(query, passages, keys=keys)
        self.scores = list(scores)
        return scores


def engine_headers(client: Mapping[str, str]) -> CIMultiDict[str]:
    """The caller's headers (credentials included) for the JSON body the bridge writes, JSON asked back: the
    engine client drops hop-by-hop ones and adds the bridge's own credentials only when the caller sent none,
    as for any search."""
    headers: CIMultiDict[str] = CIMultiDict(client)
    for name in _BODY_HEADERS:
        headers.popall(name, None)
    headers["Content-Type"] = "application/json"
    headers["Accept"] = "application/json"  # the page reads JSON, whatever the caller's client prefers
    return headers


async def compare(
    settings: Settings,
    client: EngineClient,
    reranker: Reranker,
    request: CompareRequest,
    headers: Mapping[str, str],
) -> Comparison | EngineReply:
    """Both orders of ``request``'s search; the engine's own reply when it does not answer a search (its 401,
    403, 404 or 400 is the caller's answer). ``limits.search_deadline_s`` bounds it as any search."""
    deadline = settings.limits.search_deadline_s
    try:
        async with asyncio.timeout(deadline) as overall:
            return await _compare(settings, client, reranker, request, engine_headers(headers))
    except TimeoutError as error:
        if not overall.expired():
            raise
        raise BridgeHTTPError(
            504, "search_deadline_exceeded_exception", f"the search took longer than the bridge's {deadline}s deadline"
        ) from error


async def _compare(
    settings: Settings,
    client: EngineClient,
    reranker: Reranker,
    request: CompareRequest,
    headers: CIMultiDict[str],
) -> Comparison | EngineReply:
    engine = Engine(client, Deadline.after(settings.upstream.timeout_s))
    decision = plan_search(settings, request.index, QueryString(()), request.body)
    shown = {"path": request.path, "body": request.body}
    if isinstance(decision, Skip):
        body = decision.body if decision.body is not None else {}
        target = request.path + decision.query.render()
        reply = await engine.exchange("POST", target, headers, dump_json(body, request=True))
        response = await _search_answer(reply)
        if response is None:
            return reply
        hits = _hits(response)
        fields = _rule_fields(settings, request.index)
        column = engine_column(hits, fields, "\n")[: request.size]
        header = skipped_header(decision.reason)["X-Rerank"]
        return Comparison(
            column,
            column,
            None,
            header,
            decision.reason,
            engine.elapsed_ms,
            0.0,
            shown,
            _total(response),
            rule=matched_rule(settings, request.index),
        )
    # The whole fetched list, unpaged and unfiltered: the page shows ranks 1..size, and where every engine hit
    # of the window went, also below the page.
    plan = decision
    upstream_size = plan.upstream_body["size"]
    full = dataclasses.replace(plan, offset=0, size=upstream_size, filter_path=None)
    path = request.path + plan.upstream_query.render()
    reply = await engine.exchange("POST", path, headers, dump_json(plan.upstream_body, request=True))
    response = await _search_answer(reply)
    if response is None:
        return reply
    recording = _Recording(reranker.scorers[plan.model])
    with tally_cache_lookups() as cache:
        answer, outcome = await Reranker({plan.model: recording}, reranker.metrics, reranker.limits).apply(
            full, response
        )
    engine_hits = _hits(response)
    answered = list(answer["hits"]["hits"]) if isinstance(answer, dict) else []
    engine_col, rerank_col = columns(plan, engine_hits, answered, recording.scores if outcome.applied else None)
    return Comparison(
        engine=engine_col[: request.size],
        reranked=rerank_col[: request.size],
        plan=describe_plan(settings, request.index, plan, window_hits=outcome.window),
        x_rerank=outcome.header(),
        reason=outcome.reason,
        engine_ms=engine.elapsed_ms,
        scoring_ms=outcome.model_ms,
        search=shown,
        total=_total(response),
        rule=matched_rule(settings, request.index),
        cache=cache,
    )


def columns(
    plan: Plan,
    engine_hits: Sequence[Mapping[str, Any]],
    answered: Sequence[Mapping[str, Any]],
    scores: Sequence[float] | None,
) -> tuple[list[ComparedHit], list[ComparedHit]]:
    """Both columns of a planned search: ``engine_hits`` as the engine answered them, ``answered`` as the bridge
    did (:meth:`Reranker.apply` on the whole list), ``scores`` the model's for the window (None: not reranked).

    Every hit's fate comes from the plan's own :class:`Fusion` on the same scores, so the statuses and final
    scores are those the bridge's answer was built from."""
    window = list(engine_hits[: plan.window])
    fates: dict[int, str] = {}
    finals: dict[int, float] = {}
    if scores is not None and len(scores) == len(window):
        ranking = plan.fusion.rank(scores, [merge.engine_score(hit) for hit in window])
        fates.update({i: "reranked" for i in ranking.reranked})
        fates.update({i: "unranked" for i in ranking.unranked})
        fates.update({i: "cut" for i in ranking.cut})
        finals = {i: score for i, score in enumerate(ranking.scores) if i not in ranking.unranked}
    else:
        scores = None
    rank_of = {_key(hit): position for position, hit in enumerate(answered, start=1)}
    hits: list[ComparedHit] = []
    for i, hit in enumerate(engine_hits):
        in_window = i < len(window)
        hits.append(
            ComparedHit(
                index=_text_or_none(hit.get("_index")),
                id=_text_or_none(hit.get("_id")),
                title=title(hit, plan.fields, plan.separator),
                engine_rank=i + 1,
                rerank_rank=rank_of.get(_key(hit)),
                engine_score=merge.engine_score(hit),
                model_score=float(scores[i]) if scores is not None and in_window else None,
                final_score=_final(finals[i]) if i in finals else merge.engine_score(hit),
                status=fates.get(i, "engine") if in_window else "beyond_window",
            )
        )
    by_key = {_key(hit): compared for hit, compared in zip(engine_hits, hits, strict=True)}
    reranked = [by_key[_key(hit)] for hit in answered if _key(hit) in by_key]
    return hits, reranked


def engine_column(
    hits: Sequence[Mapping[str, Any]], fields: Sequence[str], separator: str
) -> list[ComparedHit]:
    """A search the bridge does not rerank: the engine's order is both columns."""
    return [
        ComparedHit(
            index=_text_or_none(hit.get("_index")),
            id=_text_or_none(hit.get("_id")),
            title=title(hit, fields, separator),
            engine_rank=rank,
            rerank_rank=rank,
            engine_score=merge.engine_score(hit),
            model_score=None,
            final_score=merge.engine_score(hit),
            status="engine",
        )
        for rank, hit in enumerate(hits, start=1)
    ]


def title(hit: Mapping[str, Any], fields: Sequence[str], separator: str) -> str:
    """The rule's passage fields of a hit joined (whitespace collapsed), cut to :data:`TITLE_CHARS`; without
    fields, the ``_source``'s top-level strings; else the ``_id``."""
    text = passage_text(hit, fields, separator) if fields else ""
    if not text.strip():
        source = hit.get("_source")
        if isinstance(source, Mapping):
            text = " · ".join(value for value in source.values() if isinstance(value, str))
    text = " ".join(text.split()) or str(hit.get("_id", ""))
    return text if len(text) <= TITLE_CHARS else text[: TITLE_CHARS - 1].rstrip() + "…"


def matched_rule(settings: Settings, index: str) -> dict[str, Any] | None:
    """The rule ``index`` matches, applied or not: ``label`` (``rules[<i>]: <patterns>``), ``rule_index`` and
    the rule's own ``enabled``; None when no rule matches. A skipped search has no plan, and the page still
    has to say which rule the request (``ext.rerank.enabled: false``) or the rule itself turned off."""
    matched = match_rule(index, settings.rules)
    position = next((i for i, rule in enumerate(settings.rules) if rule is matched), None)
    if matched is None or position is None:
        return None
    return {
        "label": f"rules[{position}]: {', '.join(matched.indices)}",
        "rule_index": position,
        "enabled": matched.enabled,
    }


def describe_plan(settings: Settings, index: str, plan: Plan, window_hits: int | None = None) -> dict[str, Any]:
    """What applied: which rule (by position in ``rules``, or none: ``ext.rerank`` alone), model, combination
    and its parameters, window, passage fields and the query text the model was given.

    ``window`` is the configured window; ``window_hits`` the hits it held (what ``X-Rerank``'s ``window=``
    says), fewer when the engine returned fewer."""
    matched = matched_rule(settings, index)
    position = matched["rule_index"] if matched is not None else None
    rule: RuleSettings = plan.rule
    label = matched["label"] if matched is not None else "no rule: ext.rerank"
    if plan.dialect is not None:
        label += f" (dialect {plan.dialect})"
    combine: dict[str, Any] = {"mode": plan.fusion.name}
    if rule.combine == "linear":
        combine.update(alpha=rule.alpha, normalization=rule.normalization)
    elif rule.combine == "rrf":
        combine.update(rank_constant=rule.rank_constant)
    if rule.score_transform != "none":
        combine["score_transform"] = rule.score_transform
    if rule.min_score is not None:
        combine["min_score"] = rule.min_score
    if rule.top_n is not None:
        combine["top_n"] = rule.top_n
    return {
        "rule": label,
        "rule_index": position,
        "model": plan.model,
        "combine": combine,
        "window": plan.window,
        "window_hits": plan.window if window_hits is None else window_hits,
        "fields": list(plan.fields),
        "query_text": plan.query_text,
        "timeout_ms": rule.timeout_ms,
    }


async def _search_answer(reply: EngineReply) -> dict[str, Any] | None:
    """The engine's search answer; None for its refusal (answered as it is); a 502 for a 200 that is none."""
    if reply.status != 200:
        return None
    value = await search_answer(reply)
    if value is None:
        raise BridgeHTTPError(502, "bridge_exception", "the engine's answer to the search is not a search response")
    return value


def _rule_fields(settings: Settings, index: str) -> tuple[str, ...]:
    """Passage fields for the titles of a search not reranked: the matching rule's (a disabled one too)."""
    matched = match_rule(index, settings.rules)
    return tuple(matched.fields) if matched is not None else ()


def _hits(response: Mapping[str, Any]) -> list[dict[str, Any]]:
    hits = response.get("hits", {}).get("hits", [])
    return [hit for hit in hits if isinstance(hit, dict)] if isinstance(hits, list) else []


def _key(hit: Mapping[str, Any]) -> tuple[Any, Any]:
    return (hit.get("_index"), hit.get("_id"))


def _text_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _final(score: float) -> float | None:
    return score if math.isfinite(score) else None


def _total(response: Mapping[str, Any]) -> Any:
    return response.get("hits", {}).get("total")


__all__ = [
    "CompareRequest",
    "ComparedHit",
    "Comparison",
    "compare",
    "compare_request",
    "describe_plan",
    "matched_rule",
    "query_body",
]
