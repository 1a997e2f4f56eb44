"""Elasticsearch's ``_async_search`` (Kibana's Discover and Lens) for searches the bridge reranks.

The engine may have no async search at all (OpenSearch, an Elasticsearch without x-pack), so the bridge runs such
a search itself: planned as a ``_search`` is, fetched as one windowed plain ``_search``, reranked, and answered in
Elasticsearch's async-search shape (``AsyncSearchResponse`` / ``AsyncStatusResponse`` in x-pack core). Kibana reads
``id``, ``is_running``, ``is_partial`` and ``response`` from the body (8.x ``response_utils.ts``) or the
``X-Elasticsearch-Async-Id`` / ``X-Elasticsearch-Async-Is-Running`` headers (newer ones); both are written.

A search no rule or request marks for reranking never gets here: it is relayed untouched, to the engine's own
async search. So is every ``_async_search/<id>`` whose id the bridge did not issue.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, NoReturn

from aiohttp import web
from multidict import CIMultiDict

from bridge.config import Settings
from bridge.errors import BridgeHTTPError, error_body
from bridge.ops.metrics import Metrics
from bridge.search.apis.search import search_answer
from bridge.search.async_store import AsyncEntry, AsyncResult, AsyncStore, is_bridge_id, owner_of
from bridge.search.body import off_loop_if_large, parse_answer_off_loop
from bridge.search.call import SearchCall, skipped_header
from bridge.search.engine import Deadline, Engine, EngineClient, EngineReply
from bridge.search.filter_path import apply_filter_path
from bridge.search.json_codec import JSONRefused, dump_json
from bridge.search.plan import Plan, Skip, plan_search
from bridge.search.request import QueryString
from bridge.search.rerank import Outcome, Reranker

log = logging.getLogger(__name__)

# Parameters only the async API reads; a plain _search refuses them. Everything else the submit carries
# (batched_reduce_size, ccs_minimize_roundtrips, ignore_unavailable, preference, typed_keys...) is _search's too.
ASYNC_PARAMS = frozenset({"wait_for_completion_timeout", "keep_on_completion", "keep_alive"})
# Elasticsearch's defaults (SubmitAsyncSearchRequest): wait 1s, keep 5 days, forget a search done in time.
DEFAULT_WAIT_MS = 1000
DEFAULT_KEEP_ALIVE_MS = 5 * 24 * 3600 * 1000
MIN_KEEP_ALIVE_MS = 60 * 1000
ID_HEADER = "X-Elasticsearch-Async-Id"
RUNNING_HEADER = "X-Elasticsearch-Async-Is-Running"
# Engine headers a kept result answers again; framing and coding are written anew.
_KEPT_HEADERS = ("Content-Type", "Warning", "X-Opaque-Id")
_TIME = re.compile(r"(?P<number>[0-9]+(?:\.[0-9]+)?)\s*(?P<unit>nanos|micros|ms|s|m|h|d)")
_UNIT_MS = {
    "nanos": 1e-6,
    "micros": 1e-3,
    "ms": 1.0,
    "s": 1000.0,
    "m": 60_000.0,
    "h": 3_600_000.0,
    "d": 86_400_000.0,
}


# --- reading the parameters (pure) ----------------------------------------------------------------------


def parse_time_ms(name: str, value: str) -> int:
    """A time value as Elasticsearch's ``TimeValue.parseTimeValue`` reads it (``60000ms``, ``1m``, ``-1``), in
    milliseconds; -1 stays -1. Anything else is its 400 ``parse_exception``."""
    text = value.strip().lower()
    if text in ("-1", "0"):
        return int(text)
    match = _TIME.fullmatch(text)
    if match is None:
        why = (
            "negative durations are not supported"
            if text.startswith("-")
            else "unit is missing or unrecognized"
        )
        raise BridgeHTTPError(
            400,
            "parse_exception",
            f"failed to parse setting [{name}] with value [{value}] as a time value: {why}",
        )
    return round(float(match["number"]) * _UNIT_MS[match["unit"]])


def parse_flag(name: str, value: str | None, default: bool) -> bool:
    """``paramAsBoolean``: absent or empty is the default, else only ``true`` or ``false``."""
    if value is None or value == "":
        return default
    if value in ("true", "false"):
        return value == "true"
    raise BridgeHTTPError(
        400,
        "illegal_argument_exception",
        f"Failed to parse value [{value}] as only [true] or [false] are allowed.",
    )


@dataclass(frozen=True)
class SubmitOptions:
    wait_ms: int
    """How long the submit waits for the result; <= 0 answers at once."""
    keep_on_completion: bool
    keep_alive_ms: int


def submit_options(query: QueryString, settings: Settings) -> SubmitOptions:
    """The submit's async parameters with Elasticsearch's defaults; ``keep_alive`` capped by the config."""
    wait = query.get("wait_for_completion_timeout")
    keep_alive = query.get("keep_alive")
    wait_ms = parse_time_ms("wait_for_completion_timeout", wait) if wait is not None else DEFAULT_WAIT_MS
    keep_ms = parse_time_ms("keep_alive", keep_alive) if keep_alive is not None else DEFAULT_KEEP_ALIVE_MS
    if keep_ms < MIN_KEEP_ALIVE_MS:
        raise BridgeHTTPError(
            400,
            "action_request_validation_exception",
            f"Validation Failed: 1: [keep_alive] must be greater than 1 minute, got:{keep_alive};",
        )
    keep = parse_flag("keep_on_completion", query.get("keep_on_completion"), False)
    cap_ms = round(settings.async_search.max_keep_alive_s * 1000)
    return SubmitOptions(wait_ms, keep, min(keep_ms, cap_ms))


@dataclass(frozen=True)
class GetOptions:
    wait_ms: int
    """<= 0 (the default): answer what there is now."""
    keep_alive_ms: int | None


def get_options(query: QueryString, settings: Settings) -> GetOptions:
    wait = query.get("wait_for_completion_timeout")
    keep_alive = query.get("keep_alive")
    wait_ms = parse_time_ms("wait_for_completion_timeout", wait) if wait is not None else -1
    keep_ms = parse_time_ms("keep_alive", keep_alive) if keep_alive is not None else None
    if keep_ms is not None and keep_ms <= 0:
        keep_ms = None  # Elasticsearch: a keep_alive of -1 (or 0) leaves the expiration as it is
    if keep_ms is not None:
        keep_ms = min(keep_ms, round(settings.async_search.max_keep_alive_s * 1000))
    return GetOptions(wait_ms, keep_ms)


# --- the answers' shapes (pure) ---------------------------------------------------------------------------


def running_response(took_ms: int) -> dict[str, Any]:
    """What Elasticsearch answers as ``response`` before any shard has reported: nothing yet.

    Kibana reads ``response.hits`` and ``_shards`` of every answer, a running one too."""
    return {
        "took": took_ms,
        "timed_out": False,
        "terminated_early": False,
        "num_reduce_phases": 0,
        "_shards": {"total": 0, "successful": 0, "skipped": 0, "failed": 0},
        "hits": {"total": {"value": 0, "relation": "gte"}, "max_score": None, "hits": []},
    }


def async_answer(entry: AsyncEntry, *, with_id: bool, now_ms: int) -> dict[str, Any]:
    """``AsyncSearchResponse.toXContent``: id (when kept), is_partial, is_running, the times, response or error."""
    result = entry.result
    body: dict[str, Any] = {}
    if with_id:
        body["id"] = entry.async_id
    body["is_partial"] = result is None or result.response is None
    body["is_running"] = result is None
    body["start_time_in_millis"] = entry.start_ms
    body["expiration_time_in_millis"] = entry.expiration_ms
    if entry.completion_ms is not None:
        body["completion_time_in_millis"] = entry.completion_ms
    if result is None:
        body["response"] = running_response(max(0, now_ms - entry.start_ms))
    elif result.response is not None:
        body["response"] = result.response
    if result is not None and result.error is not None:
        body["error"] = result.error
    return body


def status_answer(entry: AsyncEntry) -> dict[str, Any]:
    """``AsyncStatusResponse.toXContent``: the shard counts so far and, once done, ``completion_status``."""
    result = entry.result
    shards: Mapping[str, Any] = {}
    if (
        result is not None
        and result.response is not None
        and isinstance(result.response.get("_shards"), dict)
    ):
        shards = result.response["_shards"]
    body: dict[str, Any] = {
        "id": entry.async_id,
        "is_running": result is None,
        "is_partial": result is None or result.response is None,
        "start_time_in_millis": entry.start_ms,
        "expiration_time_in_millis": entry.expiration_ms,
    }
    if entry.completion_ms is not None:
        body["completion_time_in_millis"] = entry.completion_ms
    body["_shards"] = {key: _count(shards.get(key)) for key in ("total", "successful", "skipped", "failed")}
    if result is not None:
        body["completion_status"] = result.status
    return body


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def failure(status: int, error: Mapping[str, Any]) -> AsyncResult:
    return AsyncResult(status, None, dict(error), {}, None)


def failure_of(status: int, error_type: str, reason: str) -> AsyncResult:
    return failure(status, error_body(status, error_type, reason)["error"])


async def failure_from_reply(reply: EngineReply) -> AsyncResult:
    """The engine's own error as the async answer's ``error``; a body it did not write as one is described."""
    try:
        value = await parse_answer_off_loop(reply.body)
    except JSONRefused:
        value = None
    status = reply.status if reply.status >= 400 else 502
    if isinstance(value, dict) and isinstance(value.get("error"), dict):
        return failure(status, value["error"])
    return failure_of(status, "bridge_exception", f"the engine answered the search with HTTP {reply.status}")


# --- the API ----------------------------------------------------------------------------------------------


class AsyncSearches:
    """Submit, get, status and delete of the bridge's own async searches, and the store that holds them."""

    def __init__(
        self, settings: Settings, client: EngineClient, reranker: Reranker, metrics: Metrics
    ) -> None:
        self.settings = settings
        self.client = client
        self.reranker = reranker
        self.metrics = metrics
        self.store = AsyncStore(settings.async_search.max_entries, settings.async_search.max_bytes)
        metrics.watch_async_store(self.store.state)

    async def close(self) -> None:
        await self.store.close()

    async def submit(self, call: SearchCall) -> web.StreamResponse:
        if not self.settings.async_search.enabled:
            return await call.untouched("async_search_disabled")
        options = submit_options(call.query, self.settings)
        body = await call.optional_object()
        if isinstance(body, web.StreamResponse):
            return body
        # filter_path filters the async answer as a whole (``response.hits.hits._id``), not the search inside it.
        filter_path = call.query.get("filter_path")
        decision = await off_loop_if_large(
            len(call.body.text),
            plan_search,
            self.settings,
            call.endpoint.index,
            call.query.without({"filter_path"}),
            body,
        )
        if isinstance(decision, Skip):
            if not decision.body_changed and not call.query.has("rerank"):
                return await call.untouched(decision.reason)
            # Not reranked but cleaned of the bridge's own keys: the engine's async search runs it.
            kept = tuple(p for p in call.query.pieces if p.partition("=")[0] == "filter_path")
            return await call.skipped(replace(decision, query=QueryString(decision.query.pieces + kept)))
        return await self._start(call, decision, options, filter_path)

    async def _start(
        self, call: SearchCall, plan: Plan, options: SubmitOptions, filter_path: str | None
    ) -> web.StreamResponse:
        target = call.endpoint.path("_search") + plan.upstream_query.without(ASYNC_PARAMS).render()
        payload = await off_loop_if_large(len(call.body.text), dump_json, plan.upstream_body, request=True)
        task = asyncio.create_task(self._run(call.endpoint.route, target, call.json_headers(), payload, plan))
        start = self.store.clock()
        entry = AsyncEntry(
            self.store.new_id(),
            start,
            start + options.keep_alive_ms,
            task,
            options.keep_on_completion,
            owner=owner_of(call.request.headers.get("Authorization")),
        )
        try:
            self.store.add(entry)
        except BridgeHTTPError:
            call.decide("async", "too_many")
            raise
        handed_out = False
        try:
            wait_ms = options.wait_ms
            if self.settings.server.workers > 1:
                # A poll may reach another worker process, which does not hold this search: wait for it here.
                wait_ms = -1
            if wait_ms != 0:
                await asyncio.wait({task}, timeout=wait_ms / 1000 if wait_ms > 0 else None)
            if task.done() and not task.cancelled() and not entry.keep_on_completion:
                return self._answer(call, entry, task.result(), with_id=False, filter_path=filter_path)
            handed_out = True
        finally:
            if not handed_out:
                self.store.remove(entry.async_id)
        if task.done():
            self._settle(entry, task)
        else:
            task.add_done_callback(lambda done: self._settle(entry, done))
        return self._answer(call, entry, entry.result, with_id=True, filter_path=filter_path)

    async def get(self, call: SearchCall) -> web.StreamResponse:
        entry = await self._entry(call)
        if not isinstance(entry, AsyncEntry):
            return entry
        options = get_options(call.query, self.settings)
        if options.keep_alive_ms is not None:
            self.store.extend(entry, options.keep_alive_ms)
        if entry.running and options.wait_ms > 0:
            await asyncio.wait({entry.task}, timeout=options.wait_ms / 1000)
        if entry.task.done() and entry.result is None:
            self._settle(entry, entry.task)
        if self.store.get(entry.async_id) is not entry:
            return self._not_found(call)  # deleted (or expired) while the poll waited
        return self._answer(
            call, entry, entry.result, with_id=True, filter_path=call.query.get("filter_path")
        )

    async def status(self, call: SearchCall) -> web.StreamResponse:
        entry = await self._entry(call)
        if not isinstance(entry, AsyncEntry):
            return entry
        keep_alive = get_options(call.query, self.settings).keep_alive_ms
        if keep_alive is not None:
            # Kibana 9 asks the status first on each poll, with its keep_alive, and fetches once done.
            self.store.extend(entry, keep_alive)
        if entry.task.done() and entry.result is None:
            self._settle(entry, entry.task)
        call.decide("async", "status")
        return self._render(call, status_answer(entry), 200, {}, None, call.query.get("filter_path"))

    async def delete(self, call: SearchCall) -> web.StreamResponse:
        entry = await self._entry(call)
        if not isinstance(entry, AsyncEntry):
            return entry
        self.store.remove(entry.async_id)  # cancels the search if it still runs
        call.decide("async", "deleted")
        return self._render(call, {"acknowledged": True}, 200, {}, None, call.query.get("filter_path"))

    # --- helpers ------------------------------------------------------------------------------------------

    async def _entry(self, call: SearchCall) -> AsyncEntry | web.StreamResponse:
        """The bridge's entry for the id in the path; the engine's answer for an id the bridge did not issue."""
        async_id = call.endpoint.async_id or ""
        if not is_bridge_id(async_id):
            return await call.untouched("engine_async_id")
        entry = self.store.get(async_id)
        if entry is None or entry.owner != owner_of(call.request.headers.get("Authorization")):
            self._not_found(call)  # as Elasticsearch answers another user's id
        return entry

    def _not_found(self, call: SearchCall) -> NoReturn:
        """Elasticsearch's answer for an id it no longer (or never) held: 404, the id as the reason."""
        call.decide("async", "not_found")
        raise BridgeHTTPError(404, "resource_not_found_exception", call.endpoint.async_id or "")

    def _settle(self, entry: AsyncEntry, task: asyncio.Task[AsyncResult]) -> None:
        """A kept search ended: its result joins the store, unless it is larger than the store keeps."""
        if task.cancelled() or entry.result is not None:
            return
        result = task.result()
        limit = self.settings.async_search.max_response_bytes
        if result.size > limit:
            result = failure_of(
                400,
                "illegal_argument_exception",
                f"Can't store an async search response larger than [{limit}] bytes. "
                "This limit can be set by changing the [async_search.max_response_bytes] setting.",
            )
        self.store.settle(entry, result)

    def _answer(
        self,
        call: SearchCall,
        entry: AsyncEntry,
        result: AsyncResult | None,
        *,
        with_id: bool,
        filter_path: str | None,
    ) -> web.StreamResponse:
        """The async answer to this request, recorded once: a result (reranked or not), a failure, or running."""
        shown = replace(entry, result=result) if result is not entry.result else entry
        if result is not None and shown.completion_ms is None:
            shown = replace(shown, completion_ms=self.store.clock())
        body = async_answer(shown, with_id=with_id, now_ms=self.store.clock())
        headers = {RUNNING_HEADER: "?1" if result is None else "?0"}
        if with_id:
            headers[ID_HEADER] = entry.async_id
        if result is None:
            call.decide("async", "running")
            headers["X-Rerank"] = "pending; reason=async_running"
            return self._render(call, body, 200, headers, None, filter_path)
        if result.outcome is None:
            call.decide("passthrough", "engine_error", status=result.status)
            headers.update(skipped_header("engine_error"))
            return self._render(call, body, result.status, {**result.headers, **headers}, None, filter_path)
        call.record(result.outcome)
        return self._render(call, body, 200, {**result.headers, **headers}, result.outcome, filter_path)

    def _render(
        self,
        call: SearchCall,
        body: dict[str, Any],
        status: int,
        headers: Mapping[str, str],
        outcome: Outcome | None,
        filter_path: str | None,
    ) -> web.Response:
        answer: Any = apply_filter_path(body, filter_path) if filter_path else body
        response = call.json_answer(CIMultiDict(headers), answer, outcome)
        response.set_status(status)
        return response

    async def _run(
        self, route: str, target: str, headers: CIMultiDict[str], payload: bytes, plan: Plan
    ) -> AsyncResult:
        """The search, start to end, in the background: never raises but when cancelled (DELETE, expiry,
        shutdown). Bounded by the engine's timeout, the rerank budget and ``limits.search_deadline_s``."""
        engine = Engine(self.client, Deadline.after(self.settings.upstream.timeout_s))
        deadline = self.settings.limits.search_deadline_s
        try:
            async with asyncio.timeout(deadline):
                reply = await engine.exchange("POST", target, headers, payload)
                self.metrics.upstream_latency.labels(route).observe(engine.elapsed_ms / 1000)
                response = await search_answer(reply)
                if response is None:
                    return await failure_from_reply(reply)
                answer, outcome = await self.reranker.apply(plan, response)
        except BridgeHTTPError as error:
            return failure_of(error.status, error.error_type, error.reason)
        except TimeoutError:
            return failure_of(
                504,
                "search_deadline_exceeded_exception",
                f"the search took longer than the bridge's {deadline}s deadline",
            )
        except Exception:  # a bug must not leave a poll without an answer
            log.exception("async search failed", extra={"route": route})
            return failure_of(
                502, "bridge_exception", "the bridge failed to handle this request; see its log"
            )
        size = len(await off_loop_if_large(len(payload), dump_json, answer))
        kept = {name: reply.headers[name] for name in _KEPT_HEADERS if name in reply.headers}
        return AsyncResult(200, answer, None, kept, outcome, size)
