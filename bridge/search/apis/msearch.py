"""``_msearch`` and ``_msearch/template``: each item planned on its own, one engine call per kind, item for item."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine, Sequence
from typing import Any, TypeVar

from aiohttp import web
from multidict import CIMultiDict

from bridge.search.body import off_loop_if_large, parse_answer_off_loop
from bridge.search.call import SearchCall
from bridge.search.engine import EngineReply
from bridge.search.filter_path import apply_filter_path
from bridge.search.json_codec import JSONRefused
from bridge.search.multi import MultiItem, encode_line, join_lines, parse_multi
from bridge.search.plan import Plan, Skip, plan_search
from bridge.search.request import QueryString
from bridge.search.rerank import Outcome
from bridge.search.template_render import render_template

# An _msearch item has no query string of its own: its paging lives in its body.
_ITEM_QUERY = QueryString(())

# At most this many of one _msearch/template's items render at once. Each render holds an engine connection
# until it is answered: unbounded, one large request (a 300-item one opened ~144 at once) takes every slot of
# the pool (upstream.max_connections) on a slow engine, and other clients get 503 after pool_timeout_s.
_RENDERS_IN_FLIGHT = 8

T = TypeVar("T")

Fetched = tuple[dict[str, Any], CIMultiDict[str]]
Rendered = dict[str, Any] | EngineReply | None


async def msearch(call: SearchCall) -> web.StreamResponse:
    items = await _items(call)
    if not isinstance(items, list):
        return items
    decisions = await off_loop_if_large(len(call.body.text), _plan_items, call, items)
    if all(isinstance(d, Skip) and not d.body_changed for d in decisions) and not call.query.has("rerank"):
        return await call.untouched(_first_reason(decisions))
    lines = [(item.header_line, _upstream_line(item, d)) for item, d in zip(items, decisions, strict=True)]
    fetched = await _fetch(call, "_msearch", lines)
    if isinstance(fetched, EngineReply):
        return await call.not_answered(fetched)
    assert fetched is not None
    return await _answer(call, fetched, decisions)


async def msearch_template(call: SearchCall) -> web.StreamResponse:
    items = await _items(call)
    if not isinstance(items, list):
        return items
    rendered = await _render_all(call, items)
    if isinstance(rendered, EngineReply):
        # The engine is overloaded or failing: its answer, not a second round of the same templates.
        return call.engine_answer(rendered, "template_not_rendered")
    decisions: list[Plan | Skip] = []
    for item, body in zip(items, rendered, strict=True):
        if not isinstance(body, dict):
            # The engine answers this item itself, as a template, with its own error.
            decisions.append(Skip("template_not_rendered", None, False, call.query))
            continue
        params = item.body.get("params") if isinstance(item.body.get("params"), dict) else {}
        decisions.append(
            plan_search(call.settings, item.index(call.endpoint.index), _ITEM_QUERY, body, params)
        )
    if all(isinstance(d, Skip) and not d.body_changed for d in decisions) and not call.query.has("rerank"):
        return await call.untouched(_first_reason(decisions))
    # Reranked items, and those whose rendered body carried ext.rerank (which the engine refuses), run as plain
    # searches of their cleaned rendered body; the rest stay templates, untouched.
    searched_at = [i for i, d in enumerate(decisions) if _as_search(d)]
    templated_at = [i for i, d in enumerate(decisions) if not _as_search(d)]
    search_lines = [(items[i].header_line, _upstream_line(items[i], decisions[i])) for i in searched_at]
    template_lines = [(items[i].header_line, items[i].body_line) for i in templated_at]
    searched, templated = await _all(
        [_fetch(call, "_msearch", search_lines), _fetch(call, "_msearch/template", template_lines)]
    )
    for fetched in (searched, templated):
        if isinstance(fetched, EngineReply):
            return await call.not_answered(fetched)
    responses: list[Any] = [None] * len(items)
    took = 0
    engine_headers: CIMultiDict[str] = CIMultiDict()
    for indices, fetched in ((searched_at, searched), (templated_at, templated)):
        if fetched is None or isinstance(fetched, EngineReply):
            continue
        result, engine_headers = fetched
        took = max(took, result["took"] if isinstance(result.get("took"), int) else 0)
        for i, item_response in zip(indices, result["responses"], strict=False):
            responses[i] = item_response
    return await _answer(call, ({"took": took, "responses": responses}, engine_headers), decisions)


class _Overloaded(Exception):
    """A render the engine answered with a 429 or 5xx: that answer is the request's, the other renders stop."""

    def __init__(self, reply: EngineReply) -> None:
        super().__init__(reply.status)
        self.reply = reply


async def _render_all(call: SearchCall, items: Sequence[MultiItem]) -> list[Rendered] | EngineReply:
    """Every item's rendered body, at most :data:`_RENDERS_IN_FLIGHT` at once; the engine's 429/5xx answer to
    one render instead, the other renders cancelled. A timeout or an unreachable engine raises its 504/502."""
    headers = call.json_headers()
    rendered: list[Rendered] = [None] * len(items)
    pending = iter(enumerate(items))

    async def worker() -> None:
        for position, item in pending:  # shared by the workers: each item is rendered once
            body = await render_template(call.engine, headers, item.body, item.body_line)
            if isinstance(body, EngineReply) and (body.status == 429 or body.status >= 500):
                raise _Overloaded(body)
            rendered[position] = body

    try:
        await _all([worker() for _ in range(min(_RENDERS_IN_FLIGHT, len(items)))])
    except _Overloaded as overloaded:
        return overloaded.reply
    return rendered


async def _all(aws: Sequence[Coroutine[Any, Any, T]]) -> list[T]:
    """Their results in order; the first failure cancels the others and is raised as itself (not as a group),
    so an engine-shaped 502/504 reaches the client as it would from a single call."""
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(aw) for aw in aws]
    except BaseExceptionGroup as failures:
        raise failures.exceptions[0] from None
    return [task.result() for task in tasks]


def _as_search(decision: Plan | Skip) -> bool:
    """Whether an ``_msearch/template`` item goes to the engine as a plain search of its rendered body."""
    return isinstance(decision, Plan) or (decision.body_changed and decision.body is not None)


async def _items(call: SearchCall) -> list[MultiItem] | web.StreamResponse:
    try:
        items = await _parse_multi(call.body.text)
    except JSONRefused as refusal:
        return await call.refused(refusal)
    if items is None:
        return await call.untouched("unreadable_body")
    return items


async def _parse_multi(raw: bytes) -> list[MultiItem] | None:
    return await off_loop_if_large(len(raw), parse_multi, raw)


def _plan_items(call: SearchCall, items: Sequence[MultiItem]) -> list[Plan | Skip]:
    index = call.endpoint.index
    return [plan_search(call.settings, item.index(index), _ITEM_QUERY, item.body) for item in items]


async def _fetch(
    call: SearchCall, api: str, lines: list[tuple[bytes, bytes]]
) -> Fetched | EngineReply | None:
    """The engine's parsed answer and headers; its own reply when it is not a readable one; None: nothing asked."""
    if not lines:
        return None
    path = call.endpoint.path(api) + call.query.without({"rerank", "filter_path"}).render()
    content_type = call.request.headers.get("Content-Type", "application/x-ndjson")
    reply = await call.engine.exchange("POST", path, call.json_headers(content_type), join_lines(lines))
    if reply.status != 200:
        return reply
    try:
        result = await parse_answer_off_loop(reply.body)
    except JSONRefused:
        return reply
    if not isinstance(result, dict) or not isinstance(result.get("responses"), list):
        return reply
    return result, reply.headers


async def _answer(call: SearchCall, fetched: Fetched, decisions: Sequence[Plan | Skip]) -> web.StreamResponse:
    result, engine_headers = fetched
    call.metrics.upstream_latency.labels(call.endpoint.route).observe(call.engine.elapsed_ms / 1000)
    started = time.perf_counter()
    responses = result["responses"]

    async def one(position: int, decision: Plan | Skip) -> Outcome | None:
        item = responses[position] if position < len(responses) else None
        if (
            not isinstance(decision, Plan)
            or not isinstance(item, dict)
            or not isinstance(item.get("hits"), dict)
        ):
            return None
        status = item.get("status")
        answer, outcome = await call.reranker.apply(decision, item)
        if status is not None and isinstance(answer, dict):
            answer["status"] = status
        responses[position] = answer
        return outcome

    outcomes = await asyncio.gather(*(one(i, d) for i, d in enumerate(decisions)))
    rerank_ms = (time.perf_counter() - started) * 1000
    if isinstance(result.get("took"), int):
        result["took"] += round(rerank_ms)
    applied = [o for o in outcomes if o is not None]
    for outcome in applied:
        call.record(outcome)
    for decision in decisions:
        if isinstance(decision, Skip):
            call.count("skipped" if decision.reason != "no_rule" else "passthrough", decision.reason)
    answer: Any = result
    filter_path = call.query.get("filter_path")
    if filter_path:
        answer = apply_filter_path(result, filter_path)
    summary = _summary(applied, decisions)
    return call.json_answer(engine_headers, answer, summary)


def _upstream_line(item: MultiItem, decision: Plan | Skip) -> bytes:
    if isinstance(decision, Plan):
        return encode_line(decision.upstream_body)
    if decision.body_changed and decision.body is not None:
        return encode_line(decision.body)
    return item.body_line


def _first_reason(decisions: Sequence[Plan | Skip]) -> str:
    return next((d.reason for d in decisions if isinstance(d, Skip)), "no_rule")


def _summary(outcomes: list[Outcome], decisions: Sequence[Plan | Skip]) -> Outcome:
    """One ``X-Rerank`` for the whole request: applied when any item was, else the first reason why not."""
    applied = [o for o in outcomes if o.applied]
    longest = max((o.model_ms for o in outcomes), default=0.0)
    if applied:
        models = ",".join(sorted({o.model for o in applied}))
        modes = ",".join(sorted({o.combine for o in applied}))
        return Outcome(True, models, sum(o.window for o in applied), model_ms=longest, combine=modes)
    if outcomes:
        return Outcome(False, outcomes[0].model, 0, outcomes[0].reason, longest)
    return Outcome(False, "", 0, _first_reason(decisions))
