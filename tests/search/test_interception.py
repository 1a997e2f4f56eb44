"""Search interception against the real engine: reranked answers keep the engine's shape, only better ordered."""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bridge.config import Settings
from bridge.scoring.base import ScoringError
from tests.bridge_server import running_bridge
from tests.indices import create_index, delete_indices, scratch_name

pytestmark = pytest.mark.engine

WORDS = (
    "wind flow pressure wing shock heat boundary layer laminar turbulent supersonic nozzle drag lift "
    "vortex plate cylinder jet mach number stream"
).split()
RULED = scratch_name("rr-docs")
PLAIN = scratch_name("plain-docs")
RULED_PATTERN = scratch_name("rr-*")


def documents(count: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    docs = []
    for i in range(count):
        docs.append(
            {
                "title": " ".join(rng.choices(WORDS, k=rng.randint(2, 6))),
                "text": " ".join(rng.choices(WORDS, k=rng.randint(10, 40))),
                "meta": {"tags": rng.sample(["a", "b", "c", "d"], 2), "n": i},
                "year": 1950 + i % 50,
                "kind": rng.choice(["report", "paper", "note"]),
            }
        )
    return docs


ENGLISH_MAPPINGS = {
    "properties": {
        "title": {"type": "text", "analyzer": "english"},
        "text": {"type": "text", "analyzer": "english"},
        "year": {"type": "integer"},
        "kind": {"type": "keyword"},
    }
}


def settings_for(opensearch_url: str, model: Path, **rule: Any) -> Settings:
    return Settings(
        upstream={"url": opensearch_url},
        models={"tiny": {"source": str(model), "dtype": "float32", "max_wait_ms": 1}},
        rules=[
            {"indices": [RULED_PATTERN], "fields": ["title", "text"], "window": 50, "model": "tiny", **rule}
        ],
    )


@pytest.fixture(scope="module")
async def indices(opensearch_url: str) -> AsyncIterator[None]:
    async with aiohttp.ClientSession() as http:
        await create_index(http, opensearch_url, RULED, documents(120, 1), ENGLISH_MAPPINGS)
        await create_index(http, opensearch_url, PLAIN, documents(40, 2), ENGLISH_MAPPINGS)
        try:
            yield
        finally:
            await delete_indices(http, opensearch_url, RULED, PLAIN)


@pytest.fixture(scope="module")
async def bridge(opensearch_url: str, tiny_model: Path, indices: None) -> AsyncIterator[str]:
    async with running_bridge(settings_for(opensearch_url, tiny_model)) as url:
        yield url


async def search(
    http: aiohttp.ClientSession, url: str, index: str, body: dict[str, Any], params: str = ""
) -> tuple[int, dict[str, Any], aiohttp.typedefs.LooseHeaders]:
    async with http.post(f"{url}/{index}/_search{params}", json=body) as response:
        return response.status, await response.json(), response.headers


def ids(answer: dict[str, Any]) -> list[str]:
    return [hit["_id"] for hit in answer["hits"]["hits"]]


QUERY = {"match": {"text": "wind flow boundary layer"}}


async def test_paging_concatenates_to_the_reranked_window(bridge: str) -> None:
    async with aiohttp.ClientSession() as http:
        status, whole, headers = await search(http, bridge, RULED, {"query": QUERY, "size": 50})
        assert status == 200
        assert headers["X-Rerank"] == "applied; model=tiny; window=50; combine=replace"
        pages = []
        for page in range(5):
            status, answer, headers = await search(
                http, bridge, RULED, {"query": QUERY, "size": 10, "from": page * 10}
            )
            assert status == 200 and headers["X-Rerank"].startswith("applied")
            pages += ids(answer)
        assert pages == ids(whole)
        assert len(set(pages)) == 50
        scores = [hit["_score"] for hit in whole["hits"]["hits"]]
        assert scores == sorted(scores, reverse=True)
        assert whole["hits"]["max_score"] == scores[0]


async def test_hits_beyond_the_window_keep_engine_order(bridge: str, opensearch_url: str) -> None:
    async with aiohttp.ClientSession() as http:
        _, direct, _ = await search(http, opensearch_url, RULED, {"query": QUERY, "size": 70})
        _, bridged, _ = await search(http, bridge, RULED, {"query": QUERY, "size": 20, "from": 45})
        # positions 45..49 are reranked window hits, 50..64 the engine's own order
        assert ids(bridged)[5:] == ids(direct)[50:65]
        assert set(ids(bridged)[:5]) <= set(ids(direct)[:50])
        _, deep, headers = await search(http, bridge, RULED, {"query": QUERY, "size": 10, "from": 60})
        assert ids(deep) == ids(direct)[60:70]
        assert headers["X-Rerank"] == "skipped; reason=beyond_window"


def shape(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: shape(item) for key, item in value.items() if key not in ("took",)}
    if isinstance(value, list):
        return [shape(item) for item in value]
    if isinstance(value, bool) or value is None:
        return value
    return type(value).__name__ if isinstance(value, int | float) else value


SHAPES: list[tuple[str, dict[str, Any], str]] = [
    ("plain", {"query": QUERY}, ""),
    ("size 5", {"query": QUERY, "size": 5}, ""),
    (
        "aggs",
        {"query": QUERY, "aggs": {"kinds": {"terms": {"field": "kind"}}, "y": {"avg": {"field": "year"}}}},
        "",
    ),
    ("highlight", {"query": QUERY, "highlight": {"fields": {"text": {}}}}, ""),
    ("source includes", {"query": QUERY, "_source": ["year", "kind"]}, ""),
    ("source excludes", {"query": QUERY, "_source": {"excludes": ["text", "meta.*"]}}, ""),
    ("source false", {"query": QUERY, "_source": False}, ""),
    ("source url", {"query": QUERY}, "?_source_includes=meta.tags,year"),
    ("fields", {"query": QUERY, "fields": ["year", "kind"], "_source": False}, ""),
    ("docvalue fields", {"query": QUERY, "docvalue_fields": ["year"]}, ""),
    ("track_total_hits false", {"query": QUERY, "track_total_hits": False}, ""),
    ("track_total_hits 10", {"query": QUERY, "track_total_hits": 10}, ""),
    ("rest_total_hits_as_int", {"query": QUERY}, "?rest_total_hits_as_int=true"),
    ("typed_keys", {"query": QUERY, "aggs": {"k": {"terms": {"field": "kind"}}}}, "?typed_keys=true"),
    ("filter_path", {"query": QUERY}, "?filter_path=hits.hits._id,hits.hits._score,hits.total"),
    ("bool with filter", {"query": {"bool": {"must": [QUERY], "filter": [{"term": {"kind": "paper"}}]}}}, ""),
    (
        "multi_match",
        {"query": {"multi_match": {"query": "shock wave drag", "fields": ["title^2", "text"]}}},
        "",
    ),
    ("version and seq_no", {"query": QUERY, "version": True, "seq_no_primary_term": True}, ""),
    ("sort by _score", {"query": QUERY, "sort": [{"_score": {"order": "desc"}}]}, ""),
    ("explain", {"query": QUERY, "size": 3, "explain": True}, ""),
    ("suggest", {"query": QUERY, "suggest": {"s": {"text": "wnd", "term": {"field": "text"}}}}, ""),
    ("uri q", {}, "?q=text:turbulent"),
]


async def test_reranked_answers_keep_the_engine_shape(bridge: str, opensearch_url: str) -> None:
    from opensearchpy import AsyncOpenSearch

    client = AsyncOpenSearch(hosts=[bridge])
    try:
        async with aiohttp.ClientSession() as http:
            for name, body, params in SHAPES:
                status, direct, _ = await search(http, opensearch_url, RULED, body, params)
                bstatus, bridged, headers = await search(http, bridge, RULED, body, params)
                assert (status, bstatus) == (200, 200), name
                assert headers.get("X-Rerank", "").startswith("applied"), (name, headers.get("X-Rerank"))
                assert shape(_without_hits(bridged)) == shape(_without_hits(direct)), name
                if "hits" in direct and "hits" in direct["hits"]:
                    assert len(bridged["hits"]["hits"]) == len(direct["hits"]["hits"]), name
                    # every returned hit is the engine's own hit for that document (source, highlight, fields...)
                    _, widened, _ = await search(http, opensearch_url, RULED, {**body, "size": 50}, params)
                    own = (
                        {hit["_id"]: hit for hit in widened["hits"]["hits"]} if "_id" in str(widened) else {}
                    )
                    for hit in bridged["hits"]["hits"]:
                        if "_id" in hit:
                            expected = {
                                k: v for k, v in own[hit["_id"]].items() if k not in ("_score", "sort")
                            }
                            got = {k: v for k, v in hit.items() if k not in ("_score", "sort")}
                            assert got == expected, name
                            assert list(got) == list(expected), name
                # opensearch-py parses what the bridge answers
                parsed = await client.search(index=RULED, body=body, params=_params(params))
                assert (isinstance(parsed, dict) and "hits" in parsed) or "took" in parsed, name
    finally:
        await client.close()


def _params(query: str) -> dict[str, str]:
    return dict(pair.split("=", 1) for pair in query.lstrip("?").split("&") if pair)


def _without_hits(answer: dict[str, Any]) -> dict[str, Any]:
    rest = {k: v for k, v in answer.items() if k != "hits"}
    if "hits" in answer:
        rest["hits"] = {k: v for k, v in answer["hits"].items() if k not in ("hits", "max_score")}
    return rest


async def test_skipped_searches_are_the_engines_answer(bridge: str, opensearch_url: str) -> None:
    cases = [
        (RULED, {"query": QUERY, "sort": [{"year": "asc"}]}, ""),
        (RULED, {"query": QUERY, "size": 0, "aggs": {"k": {"terms": {"field": "kind"}}}}, ""),
        (RULED, {"query": QUERY, "ext": {"rerank": {"enabled": False}}}, ""),
        (RULED, {"query": QUERY}, "?rerank=false"),
        (RULED, {"query": {"match_all": {}}}, ""),
        (RULED, {"query": QUERY, "collapse": {"field": "kind"}}, ""),
        (PLAIN, {"query": QUERY}, ""),
    ]
    async with aiohttp.ClientSession() as http:
        for index, body, params in cases:
            clean = {k: v for k, v in body.items() if k != "ext"}
            direct_params = params.replace("?rerank=false", "")
            async with http.post(f"{opensearch_url}/{index}/_search{direct_params}", json=clean) as response:
                direct = _strip_took(await response.read())
            async with http.post(f"{bridge}/{index}/_search{params}", json=body) as response:
                bridged = _strip_took(await response.read())
                assert not response.headers.get("X-Rerank", "").startswith("applied"), body
            assert bridged == direct, body


def _strip_took(raw: bytes) -> bytes:
    import re

    return re.sub(rb'"took":\d+', b'"took":0', raw)


async def test_ext_rerank_opts_in_and_overrides(bridge: str) -> None:
    async with aiohttp.ClientSession() as http:
        body = {
            "query": QUERY,
            "size": 5,
            "ext": {"rerank": {"fields": ["title"], "window": 20, "query_text": "supersonic nozzle"}},
        }
        status, answer, headers = await search(http, bridge, PLAIN, body)
        assert status == 200
        assert headers["X-Rerank"] == "applied; model=tiny; window=20; combine=replace"
        assert len(answer["hits"]["hits"]) == 5 and "ext" not in answer
        status, error, _ = await search(
            http, bridge, RULED, {"query": QUERY, "ext": {"rerank": {"window": -1}}}
        )
        assert status == 400
        assert error["error"]["type"] == "x_content_parse_exception" and "window" in error["error"]["reason"]
        status, error, _ = await search(
            http, bridge, RULED, {"query": QUERY, "ext": {"rerank": {"model": "nope"}}}
        )
        assert status == 400 and "nope" in error["error"]["reason"]


async def test_msearch_answers_item_for_item(bridge: str, opensearch_url: str) -> None:
    items = [
        ({"index": RULED}, {"query": QUERY, "size": 50}),  # reranked
        ({"index": PLAIN}, {"query": QUERY, "size": 5}),  # no rule: engine's answer
        ({"index": scratch_name("rr-missing")}, {"query": QUERY}),  # engine error item
        ({"index": RULED}, {"query": QUERY, "size": 5, "ext": {"rerank": False}}),  # opted out
        ({"index": RULED}, {"query": {"match": {"year": "not a number"}}}),  # engine error for this item only
    ]

    def ndjson(strip_ext: bool) -> bytes:
        lines = []
        for head, body in items:
            if strip_ext:
                body = {k: v for k, v in body.items() if k != "ext"}
            lines += [json.dumps(head), json.dumps(body)]
        return ("\n".join(lines) + "\n").encode()

    headers = {"Content-Type": "application/x-ndjson"}
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{opensearch_url}/_msearch", data=ndjson(True), headers=headers) as response:
            direct = await response.json()
        async with http.post(f"{bridge}/_msearch", data=ndjson(False), headers=headers) as response:
            assert response.status == 200
            assert response.headers["X-Rerank"].startswith("applied")
            bridged = await response.json()
    assert len(bridged["responses"]) == len(direct["responses"])
    d, b = direct["responses"], bridged["responses"]
    assert set(ids(b[0])) == set(ids(d[0])) and ids(b[0]) != ids(d[0])
    assert b[0]["status"] == 200
    for i in (1, 3):
        assert ids(b[i]) == ids(d[i]) and b[i]["hits"] == d[i]["hits"]
    for i in (2, 4):
        assert b[i] == d[i]


async def test_search_templates_are_reranked(
    bridge: str, opensearch_url: str, request: pytest.FixtureRequest
) -> None:
    from opensearchpy import OpenSearch

    from bridge.templates import DEFAULT_DIRECTORY, install, load_templates

    # The project's templates under this run's names: a cluster's own rerank-match is never overwritten.
    client = OpenSearch(hosts=[opensearch_url])
    templates = {scratch_name(name): body for name, body in load_templates(DEFAULT_DIRECTORY).items()}
    install(client, templates)

    def remove_templates() -> None:
        for name in templates:
            client.delete_script(id=name)

    request.addfinalizer(remove_templates)
    params = {"query_text": "wind flow boundary layer", "field": "text", "size": 10}
    stored = {"id": scratch_name("rerank-match"), "params": params}
    inline = {
        "source": {"size": "{{size}}", "query": {"match": {"text": "{{query_text}}"}}},
        "params": params,
    }
    async with aiohttp.ClientSession() as http:
        _, reference, _ = await search(http, bridge, RULED, {"query": QUERY, "size": 10})
        for template in (stored, inline):
            async with http.post(f"{bridge}/{RULED}/_search/template", json=template) as response:
                assert response.status == 200, await response.text()
                assert response.headers["X-Rerank"] == "applied; model=tiny; window=50; combine=replace"
                answer = await response.json()
            assert ids(answer) == ids(reference)
        lines = []
        for template in (stored, inline):
            lines += [json.dumps({"index": RULED}), json.dumps(template)]
        lines += [json.dumps({"index": PLAIN}), json.dumps(stored)]
        async with http.post(
            f"{bridge}/_msearch/template",
            data="\n".join(lines) + "\n",
            headers={"Content-Type": "application/x-ndjson"},
        ) as response:
            assert response.status == 200
            multi = await response.json()
        async with http.post(
            f"{opensearch_url}/_msearch/template",
            data="\n".join(lines) + "\n",
            headers={"Content-Type": "application/x-ndjson"},
        ) as response:
            direct = await response.json()
    assert [ids(r) for r in multi["responses"][:2]] == [ids(reference), ids(reference)]
    assert multi["responses"][2]["hits"] == direct["responses"][2]["hits"]


class FailingScorer:
    """A model that raises, or one that never answers: reranking must fail open either way."""

    def __init__(self, name: str, mode: str) -> None:
        self.name = name
        self.mode = mode

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def score(
        self, query: str, passages: Sequence[str], keys: Sequence[str | None] | None = None
    ) -> list[float]:
        if self.mode == "raise":
            raise ScoringError("CUDA error: device-side assert triggered")
        if self.mode == "oom":
            raise MemoryError("out of memory")
        if self.mode == "short":
            return [1.0]  # a broken scorer: one score for many passages
        await asyncio.sleep(3600)
        return []


@pytest.mark.parametrize("mode", ["raise", "oom", "hang", "short"])
async def test_fail_open_gives_engine_order(
    mode: str, opensearch_url: str, tiny_model: Path, indices: None
) -> None:
    settings = settings_for(opensearch_url, tiny_model, timeout_ms=300)
    scorers = {"tiny": FailingScorer("tiny", mode)}
    async with running_bridge(settings, scorers=scorers) as url, aiohttp.ClientSession() as http:
        _, direct, _ = await search(http, opensearch_url, RULED, {"query": QUERY, "size": 10, "from": 10})
        started = time.perf_counter()
        status, bridged, headers = await search(http, url, RULED, {"query": QUERY, "size": 10, "from": 10})
        elapsed = time.perf_counter() - started
    assert status == 200
    reason = "timeout" if mode == "hang" else "model_error"
    assert headers["X-Rerank"] == f"skipped; reason={reason}"
    assert ids(bridged) == ids(direct)
    assert [h["_score"] for h in bridged["hits"]["hits"]] == [h["_score"] for h in direct["hits"]["hits"]]
    timings = dict(part.strip().split(";dur=") for part in headers["Server-Timing"].split(","))
    if mode == "hang":
        # The rerank step gives up at the rule's timeout; the engine's own fetch comes on top.
        assert 300 <= float(timings["rerank"]) <= 300 + 100
        assert elapsed * 1000 <= float(timings["upstream"]) + 300 + 100 + 50


async def test_previous_score_and_metrics(opensearch_url: str, tiny_model: Path, indices: None) -> None:
    settings = settings_for(opensearch_url, tiny_model, keep_previous_score=True, previous_score_field="bm25")
    async with running_bridge(settings) as url, aiohttp.ClientSession() as http:
        _, direct, _ = await search(http, opensearch_url, RULED, {"query": QUERY, "size": 50})
        engine_scores = {hit["_id"]: hit["_score"] for hit in direct["hits"]["hits"]}
        for page in range(2):
            status, answer, _ = await search(
                http, url, RULED, {"query": QUERY, "size": 10, "from": page * 10}
            )
            assert status == 200
            for hit in answer["hits"]["hits"]:
                assert hit["fields"]["bm25"] == [engine_scores[hit["_id"]]]
        async with http.get(f"{url}/_bridge/metrics") as response:
            metrics = await response.text()
    assert 'rerank_bridge_requests_total{outcome="reranked",reason="",route="_search"} 2.0' in metrics
    # page 2 rescored nothing: the window's 50 pairs came from the cache
    assert 'rerank_bridge_score_cache_hits_total{model="tiny"} 50.0' in metrics
    assert 'rerank_bridge_batch_pairs_count{model="tiny"}' in metrics
    assert 'rerank_bridge_rerank_duration_seconds_count{model="tiny"} 2.0' in metrics


@pytest.mark.parametrize(("over_limit", "status"), [("fail_open", 200), ("reject", 429)])
async def test_a_full_queue_fails_open_or_rejects(
    over_limit: str, status: int, opensearch_url: str, tiny_model: Path, indices: None
) -> None:
    settings = Settings(
        upstream={"url": opensearch_url},
        models={"tiny": {"source": str(tiny_model), "dtype": "float32", "max_queue_pairs": 5}},
        rules=[{"indices": [RULED_PATTERN], "fields": ["title", "text"], "window": 50}],
        limits={"over_limit": over_limit},
    )
    async with running_bridge(settings) as url, aiohttp.ClientSession() as http:
        got, answer, headers = await search(http, url, RULED, {"query": QUERY, "size": 10})
        _, direct, _ = await search(http, opensearch_url, RULED, {"query": QUERY, "size": 10})
    assert got == status
    if status == 200:
        assert headers["X-Rerank"] == "skipped; reason=queue_full"
        assert ids(answer) == ids(direct)
    else:
        assert answer["status"] == 429 and answer["error"]["type"] == "rejected_execution_exception"


async def test_search_deadline_is_a_504(opensearch_url: str, tiny_model: Path, indices: None) -> None:
    settings = Settings(
        upstream={"url": opensearch_url},
        models={"tiny": {"source": "unused"}},
        rules=[{"indices": [RULED_PATTERN], "fields": ["title", "text"], "window": 50, "timeout_ms": 60000}],
        limits={"search_deadline_s": 0.3},
    )
    async with (
        running_bridge(settings, scorers={"tiny": FailingScorer("tiny", "hang")}) as url,
        aiohttp.ClientSession() as http,
    ):
        got, answer, _ = await search(http, url, RULED, {"query": QUERY})
    assert got == 504
    assert answer["error"]["type"] == "search_deadline_exceeded_exception" and answer["status"] == 504


async def test_a_large_unruled_answer_streams_byte_for_byte_and_says_why_it_was_not_reranked(
    bridge: str, opensearch_url: str
) -> None:
    big = scratch_name("plain-big")
    async with aiohttp.ClientSession() as http:
        await create_index(
            http, opensearch_url, big, [{"text": f"doc {i} " + "x" * 20_000} for i in range(20)]
        )
        try:
            body = {"query": {"match_all": {}}, "size": 20}
            async with http.post(f"{opensearch_url}/{big}/_search", json=body) as response:
                direct = _strip_took(await response.read())
            async with http.post(f"{bridge}/{big}/_search", json=body) as response:
                assert response.headers["X-Rerank"] == "skipped; reason=no_rule"
                bridged = _strip_took(await response.read())
        finally:
            await delete_indices(http, opensearch_url, big)
    assert len(direct) > 256 * 1024  # past the relay's one-read size: streamed
    assert bridged == direct
