"""Kibana's ``_async_search`` through the bridge: submit → poll → fetch → delete, answered in Elasticsearch's
async-search shape, over HTTP against a scripted engine that has no async search of its own."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from bridge.config import Settings
from bridge.errors import BridgeHTTPError
from bridge.ops.metrics import Metrics
from bridge.search.apis.async_search import parse_time_ms
from bridge.search.endpoints import SearchAPI, classify
from bridge.search.engine import EngineReply
from bridge.search.interceptor import SearchInterceptor
from tests.search.scripted_engine import (
    Asked,
    ScriptedEngine,
    WordScorer,
    engine_error,
    front,
    hits_answer,
    reply,
    ruled_settings,
)

FIXTURES = json.loads(
    (Path(__file__).parents[1] / "compat" / "fixtures" / "kibana-async-search.json").read_text(
        encoding="utf-8"
    )
)
REQUESTS = {request["name"]: request for request in FIXTURES["requests"]}
TITLES = [{"title": t} for t in ("blue boat", "red car", "fast red car", "green tree", "red")]
JSON = {"Content-Type": "application/json"}
ASYNC_KEYS = {"is_partial", "is_running", "start_time_in_millis", "expiration_time_in_millis"}


def fast_engine() -> ScriptedEngine:
    return ScriptedEngine(lambda asked: reply(200, hits_answer(TITLES, 5)))


class GatedEngine(ScriptedEngine):
    """Answers a search only once ``gate`` opens; records whether a search was cancelled while it waited."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.cancelled = 0
        super().__init__(self._script)

    async def _script(self, asked: Asked) -> EngineReply:
        try:
            await self.gate.wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        return reply(200, hits_answer(TITLES, 5))


@asynccontextmanager
async def bridge(
    engine: ScriptedEngine, settings: Settings | None = None
) -> AsyncIterator[tuple[TestClient[web.Request, web.Application], SearchInterceptor]]:
    """As ``scripted_engine.intercepting``, also handing out the interceptor (its store) and closing it after."""
    settings = settings or ruled_settings()
    interceptor = SearchInterceptor(settings, engine, {"words": WordScorer()}, Metrics())
    try:
        async with front(interceptor, engine, settings) as client:
            yield client, interceptor
    finally:
        await interceptor.close()


def titles(response: dict[str, Any]) -> list[str]:
    return [hit["_source"]["title"] for hit in response["hits"]["hits"]]


def submit_body(size: int = 3) -> dict[str, Any]:
    return {"track_total_hits": True, "size": size, "query": {"match": {"title": "red car"}}}


# --- routes -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "api", "index", "async_id"),
    [
        ("POST", "/_async_search", SearchAPI.ASYNC_SUBMIT, None, None),
        ("POST", "/_all/_async_search", SearchAPI.ASYNC_SUBMIT, None, None),
        ("POST", "/logs-%2A/_async_search?keep_alive=1m", SearchAPI.ASYNC_SUBMIT, "logs-*", None),
        ("GET", "/_async_search/abc%3D", SearchAPI.ASYNC_GET, None, "abc="),
        ("GET", "/_async_search/status/abc", SearchAPI.ASYNC_STATUS, None, "abc"),
        ("DELETE", "/_async_search/abc", SearchAPI.ASYNC_DELETE, None, "abc"),
    ],
)
def test_async_search_routes(
    method: str, path: str, api: SearchAPI, index: str | None, async_id: str | None
) -> None:
    endpoint = classify(method, path)
    assert endpoint is not None
    assert (endpoint.api, endpoint.index, endpoint.async_id) == (api, index, async_id)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/docs/_async_search"),  # submit is POST only
        ("PUT", "/_async_search"),
        ("POST", "/_async_search/abc"),
        ("DELETE", "/_async_search/status/abc"),
        ("POST", "/_cat/_async_search"),
        ("GET", "/docs/_doc/_async_search"),
    ],
)
def test_other_async_shapes_are_the_engines(method: str, path: str) -> None:
    assert classify(method, path) is None


@pytest.mark.parametrize(
    ("value", "ms"),
    [
        ("60000ms", 60_000),
        ("1m", 60_000),
        ("200ms", 200),
        ("1s", 1000),
        ("5d", 432_000_000),
        ("2h", 7_200_000),
        ("-1", -1),
        ("0", 0),
        ("1.5s", 1500),
        (" 10S ", 10_000),
        ("1000000micros", 1000),
    ],
)
def test_time_values_read_as_elasticsearch_reads_them(value: str, ms: int) -> None:
    assert parse_time_ms("keep_alive", value) == ms


@pytest.mark.parametrize(
    ("value", "why"), [("10", "unit is missing"), ("1w", "unit is missing"), ("-5s", "negative durations")]
)
def test_bad_time_values_are_parse_exceptions(value: str, why: str) -> None:
    with pytest.raises(BridgeHTTPError) as raised:
        parse_time_ms("keep_alive", value)
    assert raised.value.status == 400 and raised.value.error_type == "parse_exception"
    assert f"[keep_alive] with value [{value}]" in raised.value.reason and why in raised.value.reason


# --- Kibana's sequence ----------------------------------------------------------------------------------------


async def test_kibana_submit_that_finishes_in_time_is_kept_and_reranked() -> None:
    kibana = REQUESTS["discover-submit"]
    engine = fast_engine()
    async with bridge(engine) as (client, interceptor):
        response = await client.post(
            kibana["path"], data=json.dumps(kibana["body"]), headers=kibana["headers"]
        )
        assert response.status == 200
        answer = await response.json()
        assert response.headers["X-Rerank"].startswith("applied; model=words")
        # keep_on_completion=true (Kibana with a search session): an id even though it is done.
        async_id = answer["id"]
        assert response.headers["X-Elasticsearch-Async-Id"] == async_id
        assert response.headers["X-Elasticsearch-Async-Is-Running"] == "?0"
        assert answer["is_running"] is False and answer["is_partial"] is False
        assert answer["expiration_time_in_millis"] - answer["start_time_in_millis"] == 60_000
        assert answer["completion_time_in_millis"] >= answer["start_time_in_millis"]
        assert len(answer["response"]["hits"]["hits"]) == 3
        assert (
            answer["response"]["hits"]["hits"][0]["_score"]
            >= answer["response"]["hits"]["hits"][-1]["_score"]
        )
        assert "_source" not in answer["response"]["hits"]["hits"][0]  # the client's _source: false, restored
        assert len(interceptor.async_searches.store) == 1

    # The engine got one plain, windowed _search, without the async-only parameters.
    (asked,) = engine.asked
    assert not asked.relayed and asked.target.startswith("/rr-docs/_search?")
    params = dict(parse_qsl(asked.target.partition("?")[2]))
    assert params == {
        "batched_reduce_size": "64",
        "ccs_minimize_roundtrips": "true",
        "ignore_unavailable": "true",
        "preference": "1747303201337",
    }
    sent = asked.json()
    assert sent["size"] == 5 and sent["from"] == 0 and sent["track_total_hits"] is True


async def test_submit_poll_fetch_delete() -> None:
    engine = GatedEngine()
    async with bridge(engine) as (client, interceptor):
        submitted = await client.post(
            "/rr-docs/_async_search?wait_for_completion_timeout=50ms&keep_alive=1m", json=submit_body()
        )
        assert submitted.status == 200
        running = await submitted.json()
        assert running["is_running"] is True and running["is_partial"] is True
        assert "completion_time_in_millis" not in running
        assert running["response"]["hits"] == {
            "total": {"value": 0, "relation": "gte"},
            "max_score": None,
            "hits": [],
        }
        assert submitted.headers["X-Elasticsearch-Async-Is-Running"] == "?1"
        assert submitted.headers["X-Rerank"] == "pending; reason=async_running"
        async_id = running["id"]

        status = await client.get(f"/_async_search/status/{async_id}?keep_alive=60000ms")
        still = await status.json()
        assert still["is_running"] is True and "completion_status" not in still
        assert still["_shards"] == {"total": 0, "successful": 0, "skipped": 0, "failed": 0}

        poll = await client.get(
            f"/_async_search/{async_id}?wait_for_completion_timeout=20ms&keep_alive=60000ms"
        )
        assert (await poll.json())["is_running"] is True

        engine.gate.set()
        fetched = await client.get(
            f"/_async_search/{async_id}?wait_for_completion_timeout=2s&keep_alive=60000ms"
        )
        done = await fetched.json()
        assert fetched.status == 200 and fetched.headers["X-Rerank"].startswith("applied")
        assert fetched.headers["X-Elasticsearch-Async-Is-Running"] == "?0"
        assert done["id"] == async_id and done["is_running"] is False and done["is_partial"] is False
        assert titles(done["response"])[0] in ("red car", "fast red car")
        assert done["completion_time_in_millis"] >= done["start_time_in_millis"]

        status = await client.get(f"/_async_search/status/{async_id}")
        final = await status.json()
        assert final["completion_status"] == 200 and final["is_running"] is False
        assert final["_shards"]["total"] == 1 and final["_shards"]["successful"] == 1
        assert final["completion_time_in_millis"] == done["completion_time_in_millis"]

        scraped = interceptor.metrics.exposition().decode()
        assert 'rerank_bridge_async_searches{state="done"} 1.0' in scraped
        assert "rerank_bridge_async_search_bytes 0.0" not in scraped

        deleted = await client.delete(f"/_async_search/{async_id}")
        assert deleted.status == 200 and await deleted.json() == {"acknowledged": True}
        assert len(interceptor.async_searches.store) == 0
        assert 'rerank_bridge_async_searches{state="done"} 0.0' in interceptor.metrics.exposition().decode()

        gone = await client.get(f"/_async_search/{async_id}")
        assert gone.status == 404
        error = (await gone.json())["error"]
        assert error["type"] == "resource_not_found_exception" and error["reason"] == async_id
        assert (await client.delete(f"/_async_search/{async_id}")).status == 404
        assert (await client.get(f"/_async_search/status/{async_id}")).status == 404
    assert len(engine.asked) == 1  # polls never reach the engine


async def test_a_search_done_in_time_is_not_kept_by_default() -> None:
    async with bridge(fast_engine()) as (client, interceptor):
        response = await client.post("/rr-docs/_async_search", json=submit_body())
        answer = await response.json()
        assert "id" not in answer and "X-Elasticsearch-Async-Id" not in response.headers
        assert set(answer) == ASYNC_KEYS | {"completion_time_in_millis", "response"}
        assert answer["expiration_time_in_millis"] - answer["start_time_in_millis"] == 5 * 24 * 3600 * 1000
        assert len(interceptor.async_searches.store) == 0


async def test_delete_cancels_a_running_search() -> None:
    engine = GatedEngine()
    async with bridge(engine) as (client, _):
        response = await client.post(
            "/rr-docs/_async_search?wait_for_completion_timeout=0", json=submit_body()
        )
        async_id = (await response.json())["id"]
        await asyncio.sleep(0.01)
        deleted = await client.delete(f"/_async_search/{async_id}")
        assert await deleted.json() == {"acknowledged": True}
        await asyncio.sleep(0.01)
        assert engine.cancelled == 1


async def test_shutdown_cancels_running_searches() -> None:
    engine = GatedEngine()
    async with bridge(engine) as (client, interceptor):
        await client.post("/rr-docs/_async_search?wait_for_completion_timeout=0", json=submit_body())
        await asyncio.sleep(0.01)
        await interceptor.close()
        assert engine.cancelled == 1 and len(interceptor.async_searches.store) == 0


async def test_ids_the_bridge_did_not_issue_go_to_the_engine_untouched() -> None:
    engine_id = "FmRldE8zREVEUzA2ZVpUeGs2ejJFUFEaMkZ5QTVrSTZSaVN3WlNFVmtlWHJsdzoxMDc="
    engine = ScriptedEngine(lambda asked: reply(200, {"id": engine_id, "is_running": False}))
    async with bridge(engine) as (client, _):
        for method, path in (
            ("GET", f"/_async_search/{engine_id}?wait_for_completion_timeout=100ms"),
            ("GET", f"/_async_search/status/{engine_id}"),
            ("DELETE", f"/_async_search/{engine_id}"),
        ):
            response = await client.request(method, path)
            assert (
                response.status == 200 and response.headers["X-Rerank"] == "skipped; reason=engine_async_id"
            )
    assert [(a.method, a.target, a.relayed) for a in engine.asked] == [
        ("GET", f"/_async_search/{engine_id}?wait_for_completion_timeout=100ms", True),
        ("GET", f"/_async_search/status/{engine_id}", True),
        ("DELETE", f"/_async_search/{engine_id}", True),
    ]


@pytest.mark.parametrize(
    ("path", "body", "reason"),
    [
        ("/other/_async_search?wait_for_completion_timeout=200ms", submit_body(), "no_rule"),
        ("/rr-docs/_async_search?keep_alive=1m", {**submit_body(), "sort": [{"@timestamp": "desc"}]}, "sort"),
        (
            "/rr-docs/_async_search",
            {**submit_body(), "size": 0, "aggs": {"a": {"terms": {"field": "x"}}}},
            "size_zero",
        ),
    ],
)
async def test_searches_not_reranked_reach_the_engines_async_search_byte_for_byte(
    path: str, body: dict[str, Any], reason: str
) -> None:
    raw = json.dumps(body, indent=1).encode()
    engine = ScriptedEngine(lambda asked: engine_error(404, "no_handler", "no async search here"))
    async with bridge(engine) as (client, _):
        response = await client.post(path, data=raw, headers=JSON)
        assert response.status == 404 and response.headers["X-Rerank"] == f"skipped; reason={reason}"
    (asked,) = engine.asked
    assert asked.relayed and asked.target == path and asked.body == raw


async def test_ext_rerank_marks_a_search_no_rule_covers() -> None:
    engine = ScriptedEngine(lambda asked: reply(200, hits_answer(TITLES, 5, index="other")))
    body = {**submit_body(), "ext": {"rerank": {"fields": ["title"], "window": 5}}}
    async with bridge(engine) as (client, _):
        response = await client.post("/other/_async_search", json=body)
        answer = await response.json()
        assert response.headers["X-Rerank"].startswith("applied") and answer["is_running"] is False
    assert "ext" not in engine.asked[0].json()


async def test_cluster_wide_submit() -> None:
    settings = ruled_settings(rules=[{"indices": ["*"], "fields": ["title"], "window": 5, "model": "words"}])
    engine = fast_engine()
    async with bridge(engine, settings) as (client, _):
        response = await client.post("/_async_search?keep_on_completion=true", json=submit_body())
        assert response.headers["X-Rerank"].startswith("applied")
    assert engine.asked[0].target == "/_search"


async def test_engine_failure_is_an_async_answer_with_the_engines_error() -> None:
    engine = ScriptedEngine(lambda asked: engine_error(400, "parsing_exception", "unknown query [matchh]"))
    async with bridge(engine) as (client, _):
        response = await client.post("/rr-docs/_async_search?keep_on_completion=true", json=submit_body())
        assert response.status == 400 and response.headers["X-Rerank"] == "skipped; reason=engine_error"
        answer = await response.json()
        # Kibana reads "not running but partial" as a failed search.
        assert answer["is_running"] is False and answer["is_partial"] is True and "response" not in answer
        assert answer["error"]["type"] == "parsing_exception"
        status = await (await client.get(f"/_async_search/status/{answer['id']}")).json()
        assert status["completion_status"] == 400


@pytest.mark.parametrize(
    ("query", "error_type", "reason"),
    [
        (
            "keep_alive=30s",
            "action_request_validation_exception",
            "[keep_alive] must be greater than 1 minute",
        ),
        (
            "wait_for_completion_timeout=soon",
            "parse_exception",
            "[wait_for_completion_timeout] with value [soon]",
        ),
        ("keep_on_completion=yes", "illegal_argument_exception", "Failed to parse value [yes]"),
    ],
)
async def test_bad_async_parameters_are_400s(query: str, error_type: str, reason: str) -> None:
    engine = fast_engine()
    async with bridge(engine) as (client, _):
        response = await client.post(f"/rr-docs/_async_search?{query}", json=submit_body())
        assert response.status == 400
        error = (await response.json())["error"]
        assert error["type"] == error_type and reason in error["reason"]
    assert engine.asked == []


async def test_filter_path_filters_the_async_answer() -> None:
    async with bridge(fast_engine()) as (client, _):
        response = await client.post(
            "/rr-docs/_async_search?filter_path=is_running,response.hits.hits._id", json=submit_body()
        )
        answer = await response.json()
    assert set(answer) == {"is_running", "response"}
    assert [set(hit) for hit in answer["response"]["hits"]["hits"]] == [{"_id"}] * 3


async def test_a_full_store_refuses_only_when_every_search_still_runs() -> None:
    settings = ruled_settings(async_search={"max_entries": 1})
    engine = GatedEngine()
    async with bridge(engine, settings) as (client, _):
        first = await client.post("/rr-docs/_async_search?wait_for_completion_timeout=0", json=submit_body())
        first_id = (await first.json())["id"]
        refused = await client.post(
            "/rr-docs/_async_search?wait_for_completion_timeout=0", json=submit_body()
        )
        assert refused.status == 429
        assert (await refused.json())["error"]["type"] == "rejected_execution_exception"
        engine.gate.set()
        done = await client.get(f"/_async_search/{first_id}?wait_for_completion_timeout=1s")
        assert (await done.json())["is_running"] is False
        # The done result makes room for a new search.
        second = await client.post("/rr-docs/_async_search?keep_on_completion=true", json=submit_body())
        assert second.status == 200 and (await second.json())["id"] != first_id
        assert (await client.get(f"/_async_search/{first_id}")).status == 404


async def test_a_result_larger_than_the_store_keeps_is_elastics_400() -> None:
    settings = ruled_settings(async_search={"max_response_bytes": 100, "max_bytes": 1000})
    async with bridge(fast_engine(), settings) as (client, _):
        kept = await client.post("/rr-docs/_async_search?keep_on_completion=true", json=submit_body())
        assert kept.status == 400
        answer = await kept.json()
        assert answer["error"]["type"] == "illegal_argument_exception" and answer["is_partial"] is True
        # Not kept, the same result is simply answered.
        plain = await client.post("/rr-docs/_async_search", json=submit_body())
        assert plain.status == 200 and len((await plain.json())["response"]["hits"]["hits"]) == 3


async def test_with_several_workers_the_submit_waits_for_the_result() -> None:
    settings = ruled_settings(server={"workers": 2})
    engine = GatedEngine()
    async with bridge(engine, settings) as (client, interceptor):
        submitted = asyncio.ensure_future(
            client.post("/rr-docs/_async_search?wait_for_completion_timeout=0", json=submit_body())
        )
        await asyncio.sleep(0.05)
        assert not submitted.done()
        engine.gate.set()
        answer = await (await submitted).json()
        assert answer["is_running"] is False and "id" not in answer
        assert len(interceptor.async_searches.store) == 0


async def test_async_search_can_be_switched_off() -> None:
    settings = ruled_settings(async_search={"enabled": False})
    engine = ScriptedEngine(lambda asked: reply(200, {"is_running": False}))
    async with bridge(engine, settings) as (client, _):
        response = await client.post("/rr-docs/_async_search", json=submit_body())
        assert response.headers["X-Rerank"] == "skipped; reason=async_search_disabled"
    assert engine.asked[0].relayed and engine.asked[0].target == "/rr-docs/_async_search"


async def test_only_the_submitters_credentials_see_the_search() -> None:
    alice = {"Authorization": "Basic YWxpY2U6c2VjcmV0"}
    async with bridge(fast_engine()) as (client, _):
        response = await client.post(
            "/rr-docs/_async_search?keep_on_completion=true", json=submit_body(), headers=alice
        )
        async_id = (await response.json())["id"]
        for headers in ({}, {"Authorization": "Basic Ym9iOnNlY3JldA=="}):
            for method, path in (
                ("GET", f"/_async_search/{async_id}"),
                ("GET", f"/_async_search/status/{async_id}"),
                ("DELETE", f"/_async_search/{async_id}"),
            ):
                refused = await client.request(method, path, headers=headers)
                assert refused.status == 404
                assert (await refused.json())["error"]["type"] == "resource_not_found_exception"
        fetched = await client.get(f"/_async_search/{async_id}", headers=alice)
        assert fetched.status == 200 and (await fetched.json())["is_running"] is False


async def test_the_search_deadline_bounds_a_waiting_submit_and_a_background_search() -> None:
    settings = ruled_settings(limits={"search_deadline_s": 0.2})
    engine = GatedEngine()
    async with bridge(engine, settings) as (client, interceptor):
        waited = await client.post(
            "/rr-docs/_async_search?wait_for_completion_timeout=5s", json=submit_body()
        )
        assert waited.status == 504
        assert (await waited.json())["error"]["type"] == "search_deadline_exceeded_exception"
        await asyncio.sleep(0.01)
        assert engine.cancelled == 1 and len(interceptor.async_searches.store) == 0  # nobody got its id

        running = await client.post(
            "/rr-docs/_async_search?wait_for_completion_timeout=0", json=submit_body()
        )
        async_id = (await running.json())["id"]
        await asyncio.sleep(0.3)
        late = await client.get(f"/_async_search/{async_id}")
        assert late.status == 504
        answer = await late.json()
        assert answer["is_running"] is False and answer["is_partial"] is True
        assert answer["error"]["type"] == "search_deadline_exceeded_exception"
