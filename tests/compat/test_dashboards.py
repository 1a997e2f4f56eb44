"""What OpenSearch Dashboards and Kibana really send (../shared/compat) goes through the bridge.

Time-sorted Discover searches, aggregation-only visualisations and saved-object calls are untouched byte for byte;
the _score-sorted Discover search on a ruled index pattern is reranked and keeps Dashboards' highlight tags.

The recorded requests name ``products``, ``opensearch_dashboards_sample_data_logs`` and ``.kibana``; they are
replayed on this run's own scratch indices instead (``.kibana`` becomes ``.kibana_rbtest_<run>``, still a
system index for the bridge), so a user's indices of those names are never read, changed or deleted.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bridge.config import Settings
from tests.bridge_server import running_bridge
from tests.indices import RUN_ID, TEST_PREFIX, delete_indices, scratch_name

pytestmark = pytest.mark.engine

LOGS, PRODUCTS = scratch_name("opensearch_dashboards_sample_data_logs"), scratch_name("products")
KIBANA = f".kibana_{TEST_PREFIX}_{RUN_ID}"
RECORDED_NAMES = {"opensearch_dashboards_sample_data_logs": LOGS, "products": PRODUCTS, ".kibana": KIBANA}
RECORDED_NAME = re.compile(r"(?<![\w.-])(\.kibana|products|opensearch_dashboards_sample_data_logs)(?![\w-])")
HIGHLIGHT_TAG = "@opensearch-dashboards-highlighted-field@"
RERANKED = {
    "discover/04-non-time-index-pattern-dql-free-text",
    "console/01-get-search-with-body-as-typed",
    "console/02-post-search-user-query-string-kept-pretty-appended",
    "console/04-msearch-ndjson-sent-as-application-json",
}
MUTATING = {"startup/05-ui-settings-update-config-doc", "startup/06-saved-objects-bulk-create-import"}
UNSENT_HEADERS = {"host", "content-length", "connection"}


def requests_file(shared_dir: Path) -> list[dict[str, Any]]:
    path = shared_dir / "compat" / "dashboards-requests.json"
    if not path.is_file():
        pytest.skip(f"{path} is not present")
    return [on_scratch_indices(request) for request in json.loads(path.read_text())]


def on_scratch_indices(request: dict[str, Any]) -> dict[str, Any]:
    """The recorded request with every index name it uses replaced by this run's scratch index."""

    def rename(text: str) -> str:
        return RECORDED_NAME.sub(lambda found: RECORDED_NAMES[found[1]], text)

    body = request["body"]
    if isinstance(body, str):
        body = rename(body)
    elif body is not None:
        body = json.loads(rename(json.dumps(body)))
    return {**request, "path": rename(request["path"]), "body": body}


async def seed(http: aiohttp.ClientSession, url: str) -> None:
    logs_mapping = {
        "properties": {
            "timestamp": {"type": "date"},
            "utc_time": {"type": "date"},
            "message": {"type": "text"},
            "machine": {"properties": {"os": {"type": "text", "fields": {"keyword": {"type": "keyword"}}}}},
            "bytes": {"type": "long"},
            "geo": {"properties": {"src": {"type": "keyword"}}},
            "response": {"type": "keyword"},
            "extension": {"type": "keyword"},
            "tags": {"type": "keyword"},
        }
    }
    product_mapping = {
        "properties": {
            "title": {"type": "text"},
            "description": {"type": "text"},
            "brand": {"type": "keyword"},
            "price": {"type": "float"},
        }
    }
    for index, mapping in ((LOGS, logs_mapping), (PRODUCTS, product_mapping)):
        async with http.put(
            f"{url}/{index}",
            json={"settings": {"number_of_replicas": 0, "number_of_shards": 1}, "mappings": mapping},
        ) as response:
            assert response.status == 200, await response.text()
    lines = []
    oses = ["win 8", "win xp", "osx", "ios", "windows 10"]
    for i in range(60):
        minute = i % 15
        doc = {
            "timestamp": f"2025-05-15T09:{45 + minute:02d}:{i % 60:02d}.000Z",
            "utc_time": f"2025-05-15T09:{45 + minute:02d}:{i % 60:02d}.000Z",
            "message": f"GET /page{i}.php {'error' if i % 3 == 0 else 'ok'} response from server",
            "machine": {"os": oses[i % 5]},
            "bytes": 1000 + i * 37,
            "geo": {"src": ["US", "CN", "IN"][i % 3]},
            "response": ["200", "503", "404"][i % 3],
            "extension": ["php", "css", "html"][i % 3],
            "tags": ["success"] if i % 2 else ["error"],
        }
        lines += [json.dumps({"index": {"_index": LOGS, "_id": f"log-{i}"}}), json.dumps(doc)]
    products = [
        "wireless headphones with noise cancelling",
        "wired headphones for studio",
        "usb c charger 65W",
        "usb c cable braided",
        "wireless mouse",
        "bluetooth speaker wireless",
        "laptop stand",
        "usb c hub with hdmi",
        "headphones case",
        "wireless charger pad",
    ]
    for i in range(40):
        title = products[i % len(products)] + f" model {i}"
        lines += [
            json.dumps({"index": {"_index": PRODUCTS, "_id": f"p-{i}"}}),
            json.dumps(
                {
                    "title": title,
                    "description": f"{title}: great value, ships fast",
                    "brand": ["acme", "globex"][i % 2],
                    "price": 10 + i,
                }
            ),
        ]
    async with http.post(
        f"{url}/_bulk?refresh=true",
        data="\n".join(lines) + "\n",
        headers={"Content-Type": "application/x-ndjson"},
    ) as response:
        assert response.status == 200 and not (await response.json())["errors"]


async def reset_kibana(http: aiohttp.ClientSession, url: str) -> None:
    """This run's stand-in for ``.kibana``, back to one config document (a saved-object import changes it)."""
    await (await http.delete(f"{url}/{KIBANA}", params={"ignore_unavailable": "true"})).release()
    await http.put(f"{url}/{KIBANA}", json={"settings": {"number_of_replicas": 0, "number_of_shards": 1}})
    await http.put(
        f"{url}/{KIBANA}/_doc/config:3.6.0?refresh=true",
        json={"type": "config", "config": {"buildNum": 1}, "updated_at": "2025-05-15T09:00:00.000Z"},
    )


@pytest.fixture(scope="module")
async def engine(opensearch_url: str) -> AsyncIterator[str]:
    async with aiohttp.ClientSession() as http:
        try:
            await seed(http, opensearch_url)
            await reset_kibana(http, opensearch_url)
            yield opensearch_url
        finally:
            await delete_indices(http, opensearch_url, LOGS, PRODUCTS)
            await (await http.delete(f"{opensearch_url}/{KIBANA}", params={"ignore_unavailable": "true"})).release()


@pytest.fixture(scope="module")
async def bridge(engine: str, tiny_model: Path) -> AsyncIterator[str]:
    settings = Settings(
        upstream={"url": engine},
        models={"tiny": {"source": str(tiny_model), "dtype": "float32"}},
        rules=[
            {"indices": [PRODUCTS], "fields": ["title", "description"], "window": 100},
            {"indices": [LOGS], "fields": ["message"], "window": 100},
        ],
    )
    async with running_bridge(settings) as url:
        yield url


async def send(
    http: aiohttp.ClientSession, base: str, request: dict[str, Any]
) -> tuple[int, bytes, dict[str, str]]:
    headers = {k: v for k, v in request["headers"].items() if k.lower() not in UNSENT_HEADERS}
    body = request["body"]
    data = (
        body.encode() if isinstance(body, str) else (json.dumps(body).encode() if body is not None else None)
    )
    async with http.request(
        request["method"], base + request["path"], data=data, headers=headers
    ) as response:
        return response.status, await response.read(), dict(response.headers)


def without_took(raw: bytes) -> bytes:
    return re.sub(rb'"took"\s*:\s*\d+', b'"took":0', raw)


async def test_every_dashboards_request_goes_through(engine: str, bridge: str, shared_dir: Path) -> None:
    requests = requests_file(shared_dir)
    assert len(requests) == 21
    checked = set()
    async with aiohttp.ClientSession() as http:
        for request in requests:
            name = request["name"]
            if name in MUTATING:
                await reset_kibana(http, engine)
            direct = await send(http, engine, request)
            if name in MUTATING:
                await reset_kibana(http, engine)
            bridged = await send(http, bridge, request)
            assert bridged[0] == direct[0], (name, direct[:2], bridged[:2])
            if name in RERANKED:
                assert bridged[2]["X-Rerank"].startswith("applied"), (name, bridged[2].get("X-Rerank"))
                assert json_shape(json.loads(bridged[1])) == json_shape(json.loads(direct[1])), name
                if "pretty" in request["path"]:
                    assert bridged[1].startswith(b"{\n"), name
            elif name.startswith("console/05"):
                # _cat/indices lists store sizes that change between two calls; the columns must not.
                assert bridged[1].splitlines()[0] == direct[1].splitlines()[0]
            else:
                assert "X-Rerank" not in bridged[2] or bridged[2]["X-Rerank"].startswith("skipped"), name
                assert without_took(bridged[1]) == without_took(direct[1]), name
            checked.add(name)
    assert len(checked) == 21


def json_shape(value: Any, key: str = "") -> Any:
    """The structure of an answer: reranking may change which hits a page holds, never how a hit looks."""
    if isinstance(value, dict):
        return {k: json_shape(v, k) for k, v in value.items() if k not in ("took", "max_score", "_score", "sort")}
    if isinstance(value, list) and key == "hits":
        return sorted({json.dumps(_keys(hit), sort_keys=True) for hit in value})
    if isinstance(value, list):
        return sorted(json.dumps(json_shape(v), sort_keys=True) for v in value)
    return value


def _keys(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _keys(v) for k, v in value.items() if k not in ("_id", "_score", "sort", "highlight", "_source")}
    return type(value).__name__


async def test_score_sorted_discover_is_reranked_with_highlights(
    engine: str, bridge: str, shared_dir: Path
) -> None:
    request = next(r for r in requests_file(shared_dir) if r["name"].startswith("discover/04"))
    async with aiohttp.ClientSession() as http:
        status, raw, headers = await send(http, bridge, request)
        _, direct_raw, _ = await send(http, engine, request)
    assert status == 200
    answer, direct = json.loads(raw), json.loads(direct_raw)
    # All matching products fit in the rule's window of 100: each one was reranked.
    assert headers["X-Rerank"] == f"applied; model=tiny; window={len(direct['hits']['hits'])}; combine=replace"
    hits = answer["hits"]["hits"]
    assert {h["_id"] for h in hits} == {h["_id"] for h in direct["hits"]["hits"]}
    assert [h["_id"] for h in hits] != [h["_id"] for h in direct["hits"]["hits"]]
    scores = [h["_score"] for h in hits]
    assert scores == sorted(scores, reverse=True)
    assert all(h.get("sort", [h["_score"]]) == [h["_score"]] for h in hits)
    highlighted = [h for h in hits if "highlight" in h]
    assert highlighted and all(HIGHLIGHT_TAG in json.dumps(h["highlight"]) for h in highlighted)
    assert answer["hits"]["total"] == direct["hits"]["total"]
