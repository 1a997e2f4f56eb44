"""The search path: recognise a search, read its body once, hand it to its API, answer in the engine's format."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from aiohttp import web

from bridge.config import Settings
from bridge.errors import BridgeHTTPError
from bridge.ops.access_log import decision_key
from bridge.ops.metrics import Metrics
from bridge.scoring.base import Scorer
from bridge.search.apis.async_search import AsyncSearches
from bridge.search.body import read_search_body
from bridge.search.call import SearchCall
from bridge.search.dialects import may_apply
from bridge.search.endpoints import SearchAPI, SearchEndpoint
from bridge.search.engine import Deadline, Engine, EngineClient
from bridge.search.request import QueryString
from bridge.search.rerank import Reranker
from bridge.search.routes import route_table
from bridge.search.rules import match_rule, touches_system


class SearchInterceptor:
    """Every search the bridge may rerank. Reaches the engine only through ``engine`` (see ``engine.py``)."""

    def __init__(
        self, settings: Settings, engine: EngineClient, scorers: Mapping[str, Scorer], metrics: Metrics
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.metrics = metrics
        self.reranker = Reranker(scorers, metrics, settings.limits)
        # The async searches this bridge runs itself, and their store: owned here, never global.
        self.async_searches = AsyncSearches(settings, engine, self.reranker, metrics)
        self.routes = route_table(self.async_searches)

    async def close(self) -> None:
        """Cancel the async searches still running and forget the kept results (shutdown)."""
        await self.async_searches.close()

    async def handle(self, request: web.Request, endpoint: SearchEndpoint) -> web.StreamResponse | None:
        """The answer for a search (``endpoint``, from :func:`classify`); None to relay the request untouched.

        ``limits.search_deadline_s`` bounds the bridge's own work on it (reading, asking the engine, reranking);
        an untouched relay lifts it, since a streamed answer cut short would reach the client as a broken 200.
        """
        if not self.settings.models:
            # Nothing to rerank with: a plain relay, streamed, announcing nothing; still counted as a search.
            self.metrics.requests.labels(endpoint.route, "passthrough", "no_rule").inc()
            return None
        deadline = self.settings.limits.search_deadline_s
        try:
            async with asyncio.timeout(deadline) as overall:
                return await self._handle(request, endpoint, overall)
        except TimeoutError as error:
            if not overall.expired():
                raise
            raise BridgeHTTPError(
                504,
                "search_deadline_exceeded_exception",
                f"the search took longer than the bridge's {deadline}s deadline",
            ) from error

    async def _handle(
        self, request: web.Request, endpoint: SearchEndpoint, overall: asyncio.Timeout
    ) -> web.StreamResponse:
        wants_json = _wants_json(request)
        try:
            body = await read_search_body(
                request, self.settings.limits.max_search_body_bytes, self.settings.server.client_body_timeout_s
            )
        except BridgeHTTPError as refusal:  # 413 (too large, inflated or not) or 408 (the body stopped)
            refused = "body_too_large" if refusal.status == 413 else "body_timeout"
            self.metrics.requests.labels(endpoint.route, "refused", refused).inc()
            request[decision_key] = {"route": endpoint.route, "outcome": "refused", "reason": refused}
            raise
        call = SearchCall(
            request=request,
            endpoint=endpoint,
            query=QueryString.parse(request.raw_path.partition("?")[2]),
            body=body,
            # One engine budget for everything this request asks: a render and its search share it.
            engine=Engine(self.engine, Deadline.after(self.settings.upstream.timeout_s), overall),
            settings=self.settings,
            metrics=self.metrics,
            reranker=self.reranker,
        )
        route = self.routes[endpoint.api]
        if not route.planned:
            return await route.handler(call)
        if not body.readable:
            return await call.untouched("unreadable_body")
        if not wants_json:
            return await call.relayed_if_safe("format")
        if not body.empty and "json" not in request.headers.get("Content-Type", "").lower():
            # YAML, CBOR, Smile or an unsupported type: the engine reads it (or refuses it) itself.
            return await call.untouched("not_json")
        reason = _passthrough_reason(self.settings, call)
        if reason is not None:
            return await call.relayed_if_safe(reason)
        return await route.handler(call)


def _passthrough_reason(settings: Settings, call: SearchCall) -> str | None:
    """Why no rule can apply when the request does not opt in: relayed unparsed (the common, cheap case)."""
    if call.query.has("rerank") or b"rerank" in call.body.text or may_apply(settings, call.query, call.body.text):
        return None
    if call.endpoint.api in (SearchAPI.MSEARCH, SearchAPI.MSEARCH_TEMPLATE):
        # Items name their own indices; only no rules at all rules them all out.
        return "no_rule" if not settings.rules else None
    index = call.endpoint.index
    if touches_system(index):
        return "system_index"
    return "no_rule" if match_rule(index, settings.rules) is None else None


def _wants_json(request: web.Request) -> bool:
    """The bridge writes JSON only; YAML, CBOR or Smile answers stay the engine's."""
    accept = request.headers.get("Accept", "").lower()
    fmt = request.query.get("format", "json").lower()
    return fmt == "json" and not any(kind in accept for kind in ("yaml", "cbor", "smile"))
