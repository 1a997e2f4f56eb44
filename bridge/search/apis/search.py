"""``_search`` and ``_search/template``: one planned search, fetched once, reranked, answered as the engine's."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from bridge.search.body import off_loop_if_large, parse_answer_off_loop
from bridge.search.call import SearchCall
from bridge.search.engine import EngineReply
from bridge.search.json_codec import JSONRefused, dump_json
from bridge.search.plan import Plan, Skip, plan_search
from bridge.search.template_render import render_template


async def search(call: SearchCall) -> web.StreamResponse:
    body = await call.optional_object()
    if isinstance(body, web.StreamResponse):
        return body
    size = len(call.body.text)
    decision = await off_loop_if_large(
        size, plan_search, call.settings, call.endpoint.index, call.query, body
    )
    if isinstance(decision, Skip):
        return await call.skipped(decision)
    return await run_planned(call, decision)


async def search_template(call: SearchCall) -> web.StreamResponse:
    if call.body.empty:
        return await call.untouched("unreadable_body")
    template = await call.parsed_object()
    if isinstance(template, web.StreamResponse):
        return template
    rendered = await render_template(call.engine, call.json_headers(), template, call.body.text)
    if isinstance(rendered, EngineReply):
        # The engine's refusal to render is its refusal of this template: answered, never asked twice.
        return call.engine_answer(rendered, "template_not_rendered")
    if rendered is None:
        return await call.untouched("template_not_rendered")
    params = template.get("params") if isinstance(template.get("params"), dict) else {}
    decision = await off_loop_if_large(
        len(call.body.text), plan_search, call.settings, call.endpoint.index, call.query, rendered, params
    )
    if isinstance(decision, Skip):
        if not decision.body_changed and not call.query.has("rerank"):
            return await call.untouched(decision.reason)
        # The rendered body carried ext.rerank (or the URL ?rerank): run it cleaned, as a plain search.
        return await call.skipped(decision, api_path="_search")
    return await run_planned(call, decision)


async def run_planned(call: SearchCall, plan: Plan) -> web.StreamResponse:
    """Fetch the window once; rerank it, or answer what the engine said instead."""
    path = call.endpoint.path("_search") + plan.upstream_query.render()
    body = await off_loop_if_large(len(call.body.text), dump_json, plan.upstream_body, request=True)
    reply = await call.engine.exchange("POST", path, call.json_headers(), body)
    call.metrics.upstream_latency.labels(call.endpoint.route).observe(call.engine.elapsed_ms / 1000)
    response = await search_answer(reply)
    if response is None:
        return await call.not_answered(reply, resend=plan.dialect is None)
    answer, outcome = await call.reranker.apply(plan, response)
    call.record(outcome)
    return call.json_answer(reply.headers, answer, outcome)


async def search_answer(reply: EngineReply) -> dict[str, Any] | None:
    """The engine's answer as a search response, or None when it is not one (a refusal, an unreadable body)."""
    if reply.status != 200:
        return None
    try:
        value = await parse_answer_off_loop(reply.body)
    except JSONRefused:
        return None
    return value if isinstance(value, dict) and isinstance(value.get("hits"), dict) else None
