"""The search path: recognise a search, plan it, fetch the window, rerank, answer in the engine's format."""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
import time
import zlib
from collections.abc import Mapping
from typing import Any

from aiohttp import web
from multidict import CIMultiDict

from bridge.config import Settings
from bridge.errors import BridgeHTTPError
from bridge.ops.access_log import decision_key
from bridge.ops.metrics import Metrics
from bridge.scoring.base import Scorer
from bridge.search.endpoints import SearchAPI, SearchEndpoint
from bridge.search.filter_path import apply_filter_path
from bridge.search.multi import MultiItem, encode_line, join_lines, parse_multi
from bridge.search.plan import Plan, Skip, plan_search
from bridge.search.request import QueryString
from bridge.search.rerank import Outcome, Reranker
from bridge.search.rules import match_rule, touches_system
from bridge.search.templates import render_template
from bridge.server.relay import relay
from bridge.server.upstream import Upstream, end_to_end

log = logging.getLogger(__name__)

# Headers describing the client's body or the engine's bytes, which the bridge re-encodes itself.
_BODY_HEADERS = ("Content-Length", "Content-Encoding", "Accept-Encoding")
_RESPONSE_DROP = frozenset({"content-length", "content-encoding"})
# An _msearch item has no query string of its own: its paging lives in its body.
_ITEM_QUERY = QueryString(())


class SearchInterceptor:
    def __init__(
        self, settings: Settings, upstream: Upstream, scorers: Mapping[str, Scorer], metrics: Metrics
    ) -> None:
        self.settings = settings
        self.upstream = upstream
        self.metrics = metrics
        self.reranker = Reranker(scorers, metrics, settings.limits)

    async def handle(self, request: web.Request, endpoint: SearchEndpoint) -> web.StreamResponse | None:
        """The answer for a search (``endpoint``, from :func:`classify`); None to relay the request untouched."""
        if not _wants_json(request):
            return None
        raw = await self._read_body(request)
        query = QueryString.parse(request.raw_path.partition("?")[2])
        if raw.strip() and "json" not in request.headers.get("Content-Type", "").lower():
            # YAML, CBOR, Smile or an unsupported type: the engine reads it (or refuses it) itself.
            return await self._untouched(request, endpoint, raw, "not_json")
        if _plainly_passthrough(self.settings, endpoint, query, _decoded(request, raw)):
            return await self._untouched(request, endpoint, raw, "no_rule")
        handlers = {
            SearchAPI.SEARCH: self._search,
            SearchAPI.SEARCH_TEMPLATE: self._search_template,
            SearchAPI.MSEARCH: self._msearch,
            SearchAPI.MSEARCH_TEMPLATE: self._msearch_template,
        }
        return await handlers[endpoint.api](request, endpoint, query, raw)

    # --- _search -------------------------------------------------------------------------------------------

    async def _search(
        self, request: web.Request, endpoint: SearchEndpoint, query: QueryString, raw: bytes
    ) -> web.StreamResponse:
        text = _decoded(request, raw)
        body = _json_object(text) if text.strip() else None
        if text.strip() and body is None:
            return await self._untouched(request, endpoint, raw, "unreadable_body")
        decision = plan_search(self.settings, endpoint.index, query, body)
        if isinstance(decision, Skip):
            return await self._skipped(request, endpoint, raw, decision)
        path = endpoint.path("_search") + decision.upstream_query.render()
        return await self._run_planned(request, endpoint, path, decision, raw)

    async def _run_planned(
        self, request: web.Request, endpoint: SearchEndpoint, path: str, plan: Plan, raw: bytes
    ) -> web.StreamResponse:
        started = time.perf_counter()
        status, headers, payload = await self.upstream.fetch_json(
            "POST", path, self._json_headers(request), encode_line(plan.upstream_body)
        )
        upstream_ms = (time.perf_counter() - started) * 1000
        self.metrics.upstream_latency.labels(endpoint.route).observe(upstream_ms / 1000)
        response = _json_object(payload) if status == 200 else None
        if response is None or not isinstance(response.get("hits"), dict):
            # The engine refused the rewritten search: ask it the client's own bytes, so its error (positions
            # in the body included) is exactly the one the client would have had. Searches change nothing.
            return await self._untouched(request, endpoint, raw, "engine_error")
        answer, outcome = await self.reranker.apply(plan, response)
        self._record(request, endpoint, outcome, upstream_ms)
        return self._json_response(request, 200, headers, answer, outcome, upstream_ms)

    # --- _search/template ----------------------------------------------------------------------------------

    async def _search_template(
        self, request: web.Request, endpoint: SearchEndpoint, query: QueryString, raw: bytes
    ) -> web.StreamResponse:
        template = _json_object(_decoded(request, raw))
        if template is None:
            return await self._untouched(request, endpoint, raw, "unreadable_body")
        rendered = await render_template(self.upstream, self._json_headers(request), template)
        if rendered is None:
            return await self._untouched(request, endpoint, raw, "template_not_rendered")
        params = template.get("params") if isinstance(template.get("params"), dict) else {}
        decision = plan_search(self.settings, endpoint.index, query, rendered, template_params=params)
        if isinstance(decision, Skip):
            if not decision.body_changed and not query.has("rerank"):
                return await self._untouched(request, endpoint, raw, decision.reason)
            # The rendered body carried ext.rerank (or the URL ?rerank): run it cleaned, as a plain search.
            return await self._skipped(request, endpoint, raw, decision, api_path="_search")
        path = endpoint.path("_search") + decision.upstream_query.render()
        return await self._run_planned(request, endpoint, path, decision, raw)

    # --- _msearch and _msearch/template --------------------------------------------------------------------

    async def _msearch(
        self, request: web.Request, endpoint: SearchEndpoint, query: QueryString, raw: bytes
    ) -> web.StreamResponse:
        items = parse_multi(_decoded(request, raw))
        if items is None:
            return await self._untouched(request, endpoint, raw, "unreadable_body")
        decisions = [
            plan_search(self.settings, item.index(endpoint.index), _ITEM_QUERY, item.body)
            for item in items
        ]
        if all(isinstance(d, Skip) and not d.body_changed for d in decisions) and not query.has("rerank"):
            return await self._untouched(request, endpoint, raw, "no_rule")
        lines = [
            (item.header_line, _upstream_line(item, d)) for item, d in zip(items, decisions, strict=True)
        ]
        return await self._run_multi(request, endpoint, query, "_msearch", lines, decisions, raw)

    async def _msearch_template(
        self, request: web.Request, endpoint: SearchEndpoint, query: QueryString, raw: bytes
    ) -> web.StreamResponse:
        items = parse_multi(_decoded(request, raw))
        if items is None:
            return await self._untouched(request, endpoint, raw, "unreadable_body")
        headers = self._json_headers(request)
        rendered = await asyncio.gather(
            *(render_template(self.upstream, headers, item.body) for item in items)
        )
        decisions: list[Plan | Skip] = []
        for item, body in zip(items, rendered, strict=True):
            if body is None:
                decisions.append(Skip("template_not_rendered", None, False, query))
                continue
            params = item.body.get("params") if isinstance(item.body.get("params"), dict) else {}
            decisions.append(
                plan_search(self.settings, item.index(endpoint.index), _ITEM_QUERY, body, params)
            )
        if not any(isinstance(d, Plan) for d in decisions):
            return await self._untouched(request, endpoint, raw, "no_rule")
        # Reranked items run as plain searches of their rendered body; the rest stay templates, untouched.
        planned = [i for i, d in enumerate(decisions) if isinstance(d, Plan)]
        others = [i for i, d in enumerate(decisions) if not isinstance(d, Plan)]
        search_lines = [
            (items[i].header_line, encode_line(_plan(decisions[i]).upstream_body)) for i in planned
        ]
        template_lines = [(items[i].header_line, items[i].body_line) for i in others]
        started = time.perf_counter()
        searched, templated = await asyncio.gather(
            self._fetch_multi(request, endpoint, query, "_msearch", search_lines),
            self._fetch_multi(request, endpoint, query, "_msearch/template", template_lines),
        )
        upstream_ms = (time.perf_counter() - started) * 1000
        if any(fetched is False for fetched in (searched, templated)):
            return await self._untouched(request, endpoint, raw, "engine_error")
        responses: list[Any] = [None] * len(items)
        took = 0
        engine_headers: CIMultiDict[str] = CIMultiDict()
        for indices, fetched in ((planned, searched), (others, templated)):
            if not isinstance(fetched, tuple):
                continue
            result, engine_headers = fetched
            took = max(took, int(result.get("took", 0)))
            for i, item_response in zip(indices, result.get("responses", []), strict=False):
                responses[i] = item_response
        combined = {"took": took, "responses": responses}
        return await self._answer_multi(
            request, endpoint, query, (combined, engine_headers), decisions, upstream_ms
        )

    async def _run_multi(
        self,
        request: web.Request,
        endpoint: SearchEndpoint,
        query: QueryString,
        api: str,
        lines: list[tuple[bytes, bytes]],
        decisions: list[Plan | Skip],
        raw: bytes,
    ) -> web.StreamResponse:
        started = time.perf_counter()
        fetched = await self._fetch_multi(request, endpoint, query, api, lines)
        upstream_ms = (time.perf_counter() - started) * 1000
        if not isinstance(fetched, tuple):
            return await self._untouched(request, endpoint, raw, "engine_error")
        return await self._answer_multi(request, endpoint, query, fetched, decisions, upstream_ms)

    async def _fetch_multi(
        self,
        request: web.Request,
        endpoint: SearchEndpoint,
        query: QueryString,
        api: str,
        lines: list[tuple[bytes, bytes]],
    ) -> tuple[dict[str, Any], CIMultiDict[str]] | bool:
        """The engine's parsed answer and headers; False when it refused, True when there was nothing to ask."""
        if not lines:
            return True
        path = endpoint.path(api) + query.without({"rerank", "filter_path"}).render()
        headers = self._json_headers(request)
        headers["Content-Type"] = request.headers.get("Content-Type", "application/x-ndjson")
        status, response_headers, payload = await self.upstream.fetch_json(
            "POST", path, headers, join_lines(lines)
        )
        result = _json_object(payload) if status == 200 else None
        if result is None or not isinstance(result.get("responses"), list):
            return False
        return result, response_headers

    async def _answer_multi(
        self,
        request: web.Request,
        endpoint: SearchEndpoint,
        query: QueryString,
        fetched: tuple[dict[str, Any], CIMultiDict[str]],
        decisions: list[Plan | Skip],
        upstream_ms: float,
    ) -> web.StreamResponse:
        result, upstream_headers = fetched
        self.metrics.upstream_latency.labels(endpoint.route).observe(upstream_ms / 1000)
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
            answer, outcome = await self.reranker.apply(decision, item)
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
            self._record(request, endpoint, outcome, upstream_ms)
        for decision in decisions:
            if isinstance(decision, Skip):
                self._count(
                    "skipped" if decision.reason != "no_rule" else "passthrough",
                    endpoint.route,
                    decision.reason,
                )
        answer: Any = result
        filter_path = query.get("filter_path")
        if filter_path:
            answer = apply_filter_path(result, filter_path)
        summary = _multi_outcome(applied)
        return self._json_response(request, 200, upstream_headers, answer, summary, upstream_ms)

    # --- shared plumbing ----------------------------------------------------------------------------------

    async def _read_body(self, request: web.Request) -> bytes:
        limit = self.settings.limits.max_search_body_bytes
        if request.content_length is not None and request.content_length > limit:
            raise _too_large(request.content_length, limit)
        try:
            return await request.read()
        except web.HTTPRequestEntityTooLarge as error:
            raise _too_large(request.content_length or limit + 1, limit) from error

    async def _untouched(
        self, request: web.Request, endpoint: SearchEndpoint, raw: bytes, reason: str
    ) -> web.StreamResponse:
        self._count("passthrough", endpoint.route, reason)
        return await relay(request, self.upstream, body=raw)

    async def _skipped(
        self,
        request: web.Request,
        endpoint: SearchEndpoint,
        raw: bytes,
        decision: Skip,
        api_path: str | None = None,
    ) -> web.StreamResponse:
        outcome = "passthrough" if decision.reason == "no_rule" else "skipped"
        self._count(outcome, endpoint.route, decision.reason)
        request[decision_key] = {"outcome": outcome, "reason": decision.reason}
        base = request.raw_path.partition("?")[0] if api_path is None else endpoint.path(api_path)
        if not decision.body_changed and api_path is None:
            return await relay(request, self.upstream, path=base + decision.query.render(), body=raw)
        body = encode_line(decision.body) if decision.body is not None else b""
        path = base + decision.query.render()
        return await relay(request, self.upstream, path=path, body=body, drop_headers=("Content-Encoding",))

    def _json_headers(self, request: web.Request) -> CIMultiDict[str]:
        headers = self.upstream.forward_headers(request.headers)
        for name in _BODY_HEADERS:
            headers.popall(name, None)
        # Keep a JSON media type the client chose (Elasticsearch's compatible-with=8 one, say).
        given = request.headers.get("Content-Type", "")
        headers["Content-Type"] = given if "json" in given and "ndjson" not in given else "application/json"
        return headers

    def _json_response(
        self,
        request: web.Request,
        status: int,
        upstream_headers: CIMultiDict[str],
        answer: Any,
        outcome: Outcome | None,
        upstream_ms: float,
    ) -> web.Response:
        pretty = request.query.get("pretty") not in (None, "false")
        text = json.dumps(
            answer,
            ensure_ascii=False,
            indent=2 if pretty else None,
            separators=None if pretty else (",", ":"),
        )
        response = web.Response(status=status, body=(text + ("\n" if pretty else "")).encode())
        response.headers.extend(end_to_end(upstream_headers, drop=_RESPONSE_DROP))
        # The engine's media type stays (Elasticsearch 8 answers its compatible-with=8 type, say).
        response.headers.setdefault("Content-Type", "application/json; charset=UTF-8")
        if outcome is not None:
            response.headers["X-Rerank"] = outcome.header()
        timing = f"upstream;dur={upstream_ms:.1f}"
        if outcome is not None:
            timing += f", rerank;dur={outcome.model_ms:.1f}"
        response.headers["Server-Timing"] = timing
        if "gzip" in request.headers.get("Accept-Encoding", ""):
            response.enable_compression()
        return response

    def _record(
        self, request: web.Request, endpoint: SearchEndpoint, outcome: Outcome, upstream_ms: float
    ) -> None:
        self._count("reranked" if outcome.applied else "skipped", endpoint.route, outcome.reason or "")
        request[decision_key] = {
            "outcome": "reranked" if outcome.applied else "skipped",
            "reason": outcome.reason,
            "model": outcome.model,
            "window": outcome.window,
            "upstream_ms": round(upstream_ms, 2),
            "rerank_ms": round(outcome.model_ms, 2),
        }

    def _count(self, outcome: str, route: str, reason: str) -> None:
        self.metrics.requests.labels(route, outcome, reason).inc()


def _plainly_passthrough(
    settings: Settings, endpoint: SearchEndpoint, query: QueryString, raw: bytes
) -> bool:
    """No rule can apply and the request does not opt in: relay without parsing (the common, cheap case)."""
    if query.has("rerank") or b"rerank" in raw:
        return False
    if endpoint.api in (SearchAPI.MSEARCH, SearchAPI.MSEARCH_TEMPLATE):
        # Items name their own indices; only no rules at all rules them all out.
        return not settings.rules
    return match_rule(endpoint.index, settings.rules) is None or touches_system(endpoint.index)


def _wants_json(request: web.Request) -> bool:
    """The bridge writes JSON only; YAML, CBOR or Smile answers stay the engine's."""
    accept = request.headers.get("Accept", "").lower()
    fmt = request.query.get("format", "json").lower()
    return fmt == "json" and not any(kind in accept for kind in ("yaml", "cbor", "smile"))


def _json_object(raw: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _decoded(request: web.Request, raw: bytes) -> bytes:
    encoding = request.headers.get("Content-Encoding", "").lower()
    try:
        if encoding == "gzip":
            return gzip.decompress(raw)
        if encoding == "deflate":
            return zlib.decompress(raw)
    except (OSError, zlib.error, EOFError):
        return raw
    return raw


def _plan(decision: Plan | Skip) -> Plan:
    assert isinstance(decision, Plan)
    return decision


def _upstream_line(item: MultiItem, decision: Plan | Skip) -> bytes:
    if isinstance(decision, Plan):
        return encode_line(decision.upstream_body)
    if decision.body_changed and decision.body is not None:
        return encode_line(decision.body)
    return item.body_line


def _multi_outcome(outcomes: list[Outcome]) -> Outcome | None:
    if not outcomes:
        return None
    applied = [o for o in outcomes if o.applied]
    if applied:
        models = ",".join(sorted({o.model for o in applied}))
        return Outcome(
            True, models, sum(o.window for o in applied), model_ms=max(o.model_ms for o in outcomes)
        )
    return Outcome(False, outcomes[0].model, 0, outcomes[0].reason, max(o.model_ms for o in outcomes))


def _too_large(size: int, limit: int) -> BridgeHTTPError:
    return BridgeHTTPError(
        413,
        "content_too_long_exception",
        f"search body of {size} bytes exceeds the bridge's limit of {limit} bytes",
    )
