"""One intercepted search request: what it asked, its engine (under one deadline), and every way it is answered.

Each way out records its decision once (metrics, access log, ``X-Rerank``): a search on an intercepted route
always says whether it was reranked and, if not, why.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.web import ContentCoding
from multidict import CIMultiDict

from bridge.config import Settings
from bridge.ops.access_log import decision_key
from bridge.ops.metrics import Metrics
from bridge.search.body import SearchBody, off_loop_if_large, parse_off_loop
from bridge.search.endpoints import SearchAPI, SearchEndpoint
from bridge.search.engine import Engine, EngineReply
from bridge.search.json_codec import JSONRefused, depth_refusal, dump_json, nesting_exceeds
from bridge.search.multi import bodies_too_deep
from bridge.search.plan import Skip
from bridge.search.request import QueryString
from bridge.search.rerank import Outcome, Reranker

# Headers describing the client's body, which the bridge re-encodes itself, or asking for compressed answers,
# which the bridge would have to inflate.
_BODY_HEADERS = ("Content-Length", "Content-Encoding", "Accept-Encoding")
# Framing and coding of the engine's bytes, which the bridge writes anew.
_RESPONSE_DROP = ("Content-Length", "Content-Encoding", "Transfer-Encoding")
TEMPLATE_APIS = frozenset({SearchAPI.SEARCH_TEMPLATE, SearchAPI.MSEARCH_TEMPLATE})


@dataclass
class SearchCall:
    request: web.Request
    endpoint: SearchEndpoint
    query: QueryString
    body: SearchBody
    engine: Engine
    settings: Settings
    metrics: Metrics
    reranker: Reranker

    # --- asking the engine --------------------------------------------------------------------------------

    def json_headers(self, content_type: str | None = None) -> CIMultiDict[str]:
        """The client's headers for a body the bridge wrote itself (uncompressed, its own length)."""
        headers: CIMultiDict[str] = CIMultiDict(self.request.headers)
        for name in _BODY_HEADERS:
            headers.popall(name, None)
        # Keep a JSON media type the client chose (Elasticsearch's compatible-with=8 one, say).
        given = self.request.headers.get("Content-Type", "")
        if content_type is not None:
            headers["Content-Type"] = content_type
        else:
            headers["Content-Type"] = (
                given if "json" in given and "ndjson" not in given else "application/json"
            )
        return headers

    async def parsed_object(self) -> dict[str, Any] | web.StreamResponse:
        """The body as a JSON object, or the answer for a body the bridge does not read as one."""
        try:
            value = await parse_off_loop(self.body.text)
        except JSONRefused as refusal:
            return await self.refused(refusal)
        if not isinstance(value, dict):
            return await self.untouched("unreadable_body")
        return value

    async def optional_object(self) -> dict[str, Any] | web.StreamResponse | None:
        """The body as a JSON object, None when the request has none, or the answer for one the bridge does not
        read as an object (see :meth:`parsed_object`)."""
        if self.body.empty:
            return None
        return await self.parsed_object()

    async def relayed_if_safe(self, reason: str) -> web.StreamResponse:
        """Not the bridge's to answer: the client's request as it is, unless it nests deeper than the engine
        survives (OpenSearch 2.19 dies of such search and template bodies): the bridge refuses those instead
        of being the way they reach the engine."""
        if not self.body.empty:
            multi = self.endpoint.api in (SearchAPI.MSEARCH, SearchAPI.MSEARCH_TEMPLATE)
            scan = bodies_too_deep if multi else nesting_exceeds
            if await off_loop_if_large(len(self.body.text), scan, self.body.text):
                return await self.refused(depth_refusal())
        return await self.untouched(reason)

    async def refused(self, refusal: JSONRefused) -> web.StreamResponse:
        """A body the engine refuses: its own refusal of the client's bytes, unless sending them is dangerous."""
        if not refusal.relayable:
            # Too deep to send on: OpenSearch 2.19 dies of such bodies (StackOverflowError, the node exits) on
            # _search/template and on _search alike, so the refusal is the bridge's, in the engine's shape.
            self.decide("refused", refusal.kind)
            raise refusal.to_http_error()
        return await self.untouched("refused_body")

    async def not_answered(self, reply: EngineReply, resend: bool = True) -> web.StreamResponse:
        """The engine did not answer the rewritten search with a readable 200.

        Only a 400 (the engine's parse or validation error, positions included) needs the client's own bytes;
        a 200 the bridge cannot read is answered the same way, the engine's answer to the client's request.
        A 429 or 5xx is the engine's answer as it stands: sending the search again would only add load.
        ``resend=False`` (a dialect the engine does not speak): the engine's answer to the translated search is
        the only meaningful one, since it would refuse the client's own bytes for the dialect alone.
        """
        if resend and reply.status == 200:
            return await self.untouched("unreadable_answer")
        if resend and reply.status == 400:
            return await self.untouched("engine_error")
        return self.engine_answer(reply, "engine_error")

    # --- answering ----------------------------------------------------------------------------------------

    async def untouched(self, reason: str) -> web.StreamResponse:
        """The client's own request to the engine, byte for byte, and the engine's answer."""
        self.decide("passthrough", reason)
        return await self.engine.relay(self.request, body=self.body.raw, add_headers=skipped_header(reason))

    async def skipped(self, decision: Skip, api_path: str | None = None) -> web.StreamResponse:
        """Not reranked by design: the request as the client sent it, less the bridge's own parameters."""
        outcome = "passthrough" if decision.reason == "no_rule" else "skipped"
        self.decide(outcome, decision.reason)
        header = skipped_header(decision.reason)
        base = self.request.raw_path.partition("?")[0] if api_path is None else self.endpoint.path(api_path)
        target = base + decision.query.render()
        if not decision.body_changed and api_path is None:
            return await self.engine.relay(
                self.request, target=target, body=self.body.raw, add_headers=header
            )
        body = dump_json(decision.body, request=True) if decision.body is not None else b""
        return await self.engine.relay(
            self.request,
            target=target,
            body=body,
            drop_headers=("Content-Encoding", "Content-Length"),
            add_headers=header,
        )

    def engine_answer(self, reply: EngineReply, reason: str) -> web.Response:
        """The engine's own answer to what the bridge asked, as it is (its refusal, its 429, its 5xx)."""
        self.decide("passthrough", reason, status=reply.status)
        response = web.Response(status=reply.status, body=reply.body)
        response.headers.extend(_without(reply.headers, _RESPONSE_DROP))
        response.headers.update(skipped_header(reason))
        self._timing(response, None)
        return response

    def json_answer(self, headers: CIMultiDict[str], answer: Any, outcome: Outcome | None) -> web.Response:
        """The bridge's answer, written as the engine writes JSON (``?pretty`` too)."""
        pretty = self.request.query.get("pretty") not in (None, "false")
        payload = dump_json(answer, pretty=pretty)
        response = web.Response(status=200, body=payload)
        response.headers.extend(_without(headers, _RESPONSE_DROP))
        # The engine's media type stays (Elasticsearch 8 answers its compatible-with=8 type, say).
        response.headers.setdefault("Content-Type", "application/json; charset=UTF-8")
        if outcome is not None:
            response.headers["X-Rerank"] = outcome.header()
        self._timing(response, outcome)
        if accepts_gzip(self.request.headers.get("Accept-Encoding", "")):
            response.enable_compression(ContentCoding.gzip)
        return response

    def _timing(self, response: web.Response, outcome: Outcome | None) -> None:
        timing = f"upstream;dur={self.engine.elapsed_ms:.1f}"
        if outcome is not None:
            timing += f", rerank;dur={outcome.model_ms:.1f}"
        response.headers["Server-Timing"] = timing

    # --- recording ----------------------------------------------------------------------------------------

    def record(self, outcome: Outcome) -> None:
        self.decide(
            "reranked" if outcome.applied else "skipped",
            outcome.reason or "",
            model=outcome.model,
            window=outcome.window,
            combine=outcome.combine,
            upstream_ms=round(self.engine.elapsed_ms, 2),
            rerank_ms=round(outcome.model_ms, 2),
        )

    def decide(self, outcome: str, reason: str, **details: Any) -> None:
        """The one record of how this search was answered: the metric and the access log's fields."""
        self.count(outcome, reason)
        self.request[decision_key] = {
            "route": self.endpoint.route,
            "outcome": outcome,
            "reason": reason or None,
            **details,
        }

    def count(self, outcome: str, reason: str) -> None:
        self.metrics.requests.labels(self.endpoint.route, outcome, reason).inc()


def accepts_gzip(accept_encoding: str) -> bool:
    """Whether ``Accept-Encoding`` allows gzip (RFC 9110 12.5.3): named, or ``*``, with a q-value above 0.

    A plain substring test would compress for ``gzip;q=0``, which says the opposite."""
    weights: dict[str, float] = {}
    for part in accept_encoding.split(","):
        coding, *params = (piece.strip() for piece in part.split(";"))
        weight = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    weight = float(value)
                except ValueError:
                    weight = 0.0
        if coding:
            weights[coding.lower()] = weight
    for coding in ("gzip", "x-gzip", "*"):
        if coding in weights:
            return weights[coding] > 0
    return False


def skipped_header(reason: str) -> dict[str, str]:
    return {"X-Rerank": f"skipped; reason={reason}"}


def _without(headers: CIMultiDict[str], names: tuple[str, ...]) -> CIMultiDict[str]:
    kept = CIMultiDict(headers)
    for name in names:
        kept.popall(name, None)
    return kept
