"""Putting the bridge between a client and the real engine changes nothing for requests it does not rerank.

Each case runs twice in the same order: straight to the engine on indices named ``rbtest-<run>-fd-*`` and through
the bridge on the mirror indices ``rbtest-<run>-fb-*``; answers must agree after the index prefix is normalised.
"""

from __future__ import annotations

import gzip
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest

from bridge.config import Settings
from tests.bridge_server import running_bridge
from tests.indices import delete_indices, scratch_name

pytestmark = pytest.mark.engine

# Answers carry timings, node-level counters, generated ids or the clock (`_cat`'s epoch and timestamp, which
# tick when the direct and the bridged call straddle a second) that differ between any two calls.
VOLATILE = re.compile(
    rb'"(took|_id|uuid|creation_date|scroll_id|_scroll_id|time_in_queue_millis|epoch|timestamp)"\s*:\s*("[^"]*"|\d+)'
)
INDEX_UUID = re.compile(rb"(?<![A-Za-z0-9_-])[A-Za-z0-9_-]{22}(?![A-Za-z0-9_-])")
COMPARED_HEADERS = ("content-type", "content-encoding", "warning", "x-elastic-product", "x-opaque-id")


@dataclass
class Case:
    name: str
    method: str
    path: str
    body: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    compare_body: bool = True


def j(value: Any) -> bytes:
    return json.dumps(value).encode()


def nd(*lines: Any) -> bytes:
    return b"".join(json.dumps(line).encode() + b"\n" for line in lines)


JSON = {"Content-Type": "application/json"}
NDJSON = {"Content-Type": "application/x-ndjson"}

CASES: list[Case] = [
    Case(
        "create index",
        "PUT",
        "/{p}-books",
        j(
            {
                "settings": {"number_of_shards": 1, "number_of_replicas": 0},
                "mappings": {
                    "properties": {
                        "title": {"type": "text", "analyzer": "english"},
                        "year": {"type": "integer"},
                        "tag": {"type": "keyword"},
                    }
                },
            }
        ),
        JSON,
    ),
    Case("create existing index (400)", "PUT", "/{p}-books", j({}), JSON),
    Case(
        "bulk ndjson",
        "POST",
        "/_bulk?refresh=true",
        nd(
            {"index": {"_index": "{p}-books", "_id": "1"}},
            {"title": "The Wind in the Willows", "year": 1908, "tag": "a"},
            {"index": {"_index": "{p}-books", "_id": "2"}},
            {"title": "Winds of physics and flow", "year": 1950, "tag": "b"},
            {"create": {"_index": "{p}-books", "_id": "3"}},
            {"title": "Boundary layers in wind", "year": 1960, "tag": "a"},
            {"index": {"_index": "{p}-books", "_id": "4"}},
            {"title": "Über Strömungen — unicode", "year": 2001, "tag": "c"},
        ),
        NDJSON,
    ),
    Case(
        "bulk with an error item",
        "POST",
        "/_bulk?refresh=true",
        nd(
            {"create": {"_index": "{p}-books", "_id": "1"}},
            {"title": "duplicate"},
        ),
        NDJSON,
    ),
    Case("doc get", "GET", "/{p}-books/_doc/1"),
    Case("doc get missing (404)", "GET", "/{p}-books/_doc/404"),
    Case(
        "doc put",
        "PUT",
        "/{p}-books/_doc/5?refresh=true",
        j({"title": "Gusts", "year": 1999, "tag": "b"}),
        JSON,
    ),
    Case("doc update", "POST", "/{p}-books/_update/5?refresh=true", j({"doc": {"year": 2000}}), JSON),
    Case("doc get source only", "GET", "/{p}-books/_source/5"),
    Case("doc head exists", "HEAD", "/{p}-books/_doc/5"),
    Case("doc delete", "DELETE", "/{p}-books/_doc/5?refresh=true"),
    Case("mget", "POST", "/{p}-books/_mget", j({"ids": ["1", "2", "404"]}), JSON),
    Case("count", "GET", "/{p}-books/_count"),
    Case(
        "count with query body", "POST", "/{p}-books/_count", j({"query": {"match": {"title": "wind"}}}), JSON
    ),
    Case("search match", "POST", "/{p}-books/_search", j({"query": {"match": {"title": "wind"}}}), JSON),
    Case(
        "search GET with body",
        "GET",
        "/{p}-books/_search",
        j({"query": {"match": {"title": "flow"}}, "size": 2}),
        JSON,
    ),
    Case("search uri q", "GET", "/{p}-books/_search?q=title:wind&size=1"),
    Case(
        "search aggs",
        "POST",
        "/{p}-books/_search",
        j({"size": 0, "aggs": {"t": {"terms": {"field": "tag"}}}}),
        JSON,
    ),
    Case("search pretty", "GET", "/{p}-books/_search?pretty&q=wind"),
    Case("search filter_path", "GET", "/{p}-books/_search?q=wind&filter_path=hits.hits._id,hits.total"),
    Case(
        "search gzip request body",
        "POST",
        "/{p}-books/_search",
        gzip.compress(j({"query": {"match": {"title": "wind"}}})),
        {**JSON, "Content-Encoding": "gzip"},
    ),
    Case(
        "search gzip response",
        "POST",
        "/{p}-books/_search",
        j({"query": {"match_all": {}}}),
        {**JSON, "Accept-Encoding": "gzip"},
    ),
    Case(
        "search chunked body",
        "POST",
        "/{p}-books/_search",
        j({"query": {"term": {"tag": "a"}}}),
        {**JSON, "Transfer-Encoding": "chunked"},
    ),
    Case("search parse error (400)", "POST", "/{p}-books/_search", b'{"query": {"match": ', JSON),
    Case("search unknown query (400)", "POST", "/{p}-books/_search", j({"query": {"nope": {}}}), JSON),
    Case("search missing index (404)", "GET", "/{p}-missing/_search"),
    Case("search ignore_unavailable", "GET", "/{p}-missing/_search?ignore_unavailable=true"),
    Case(
        "msearch",
        "POST",
        "/_msearch",
        nd(
            {"index": "{p}-books"},
            {"query": {"match": {"title": "wind"}}},
            {"index": "{p}-missing"},
            {"query": {"match_all": {}}},
        ),
        NDJSON,
    ),
    Case("opaque id echoed", "GET", "/{p}-books/_count", None, {"X-Opaque-Id": "abc-123"}),
    Case("mapping", "GET", "/{p}-books/_mapping"),
    Case(
        "put mapping", "PUT", "/{p}-books/_mapping", j({"properties": {"extra": {"type": "keyword"}}}), JSON
    ),
    Case("field caps", "GET", "/{p}-books/_field_caps?fields=title,year"),
    Case(
        "alias add",
        "POST",
        "/_aliases",
        j({"actions": [{"add": {"index": "{p}-books", "alias": "{p}-alias"}}]}),
        JSON,
    ),
    Case("alias get", "GET", "/{p}-books/_alias"),
    Case("search through alias", "GET", "/{p}-alias/_search?q=wind"),
    Case("resolve index", "GET", "/_resolve/index/{p}-*"),
    Case("head index", "HEAD", "/{p}-books"),
    Case("head missing index", "HEAD", "/{p}-missing"),
    Case("cat indices", "GET", "/_cat/indices/{p}-books?h=index,health,status,docs.count&v"),
    Case("cat count json", "GET", "/_cat/count/{p}-books?format=json"),
    Case("cat aliases", "GET", "/_cat/aliases/{p}-alias?h=alias,index"),
    Case("cluster health", "GET", "/_cluster/health/{p}-books"),
    Case("settings", "GET", "/{p}-books/_settings/index.number_of_shards"),
    Case("analyze", "POST", "/_analyze", j({"analyzer": "english", "text": "Running winds"}), JSON),
    Case("method not allowed (405)", "DELETE", "/_cluster/health"),
    Case("unknown endpoint (400)", "GET", "/_nonexistent_api"),
    Case("unknown param (400)", "GET", "/{p}-books/_count?bogus=1"),
    Case("scroll start", "POST", "/{p}-books/_search?scroll=1m", j({"size": 2, "sort": ["_doc"]}), JSON),
    Case(
        "delete by query",
        "POST",
        "/{p}-books/_delete_by_query?refresh=true",
        j({"query": {"term": {"tag": "c"}}}),
        JSON,
        compare_body=False,
    ),
    Case("count after delete", "GET", "/{p}-books/_count"),
    Case("delete index", "DELETE", "/{p}-books"),
    Case("delete missing index (404)", "DELETE", "/{p}-books"),
]


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes


async def send(session: aiohttp.ClientSession, base: str, case: Case, prefix: str) -> Answer:
    body = case.body
    if body is not None and b"{p}" in (body if not case.headers.get("Content-Encoding") else b""):
        body = body.replace(b"{p}", prefix.encode())
    if body is not None and case.headers.get("Content-Encoding") == "gzip":
        body = gzip.compress(gzip.decompress(body).replace(b"{p}", prefix.encode()))
    headers = dict(case.headers)
    data: Any = body
    if headers.pop("Transfer-Encoding", None) == "chunked" and body is not None:
        payload = body

        async def chunks() -> AsyncIterator[bytes]:
            for i in range(0, len(payload), 7):
                yield payload[i : i + 7]

        data = chunks()
    async with session.request(
        case.method,
        base + case.path.replace("{p}", prefix),
        data=data,
        headers=headers,
        skip_auto_headers=("Accept-Encoding",),
    ) as response:
        raw = await response.read()
        return Answer(response.status, {k.lower(): v for k, v in response.headers.items()}, raw)


def normalised(answer: Answer, prefix: str) -> bytes:
    body = answer.body
    if answer.headers.get("content-encoding") == "gzip":
        body = gzip.decompress(body)
    body = VOLATILE.sub(rb'"\1":"*"', body.replace(prefix.encode(), b"{p}"))
    return INDEX_UUID.sub(b"<uuid>", body)


@pytest.fixture(scope="module")
async def bridge_url(opensearch_url: str) -> AsyncIterator[str]:
    async with running_bridge(Settings(upstream={"url": opensearch_url})) as url:
        yield url


DIRECT, BRIDGED = scratch_name("fd"), scratch_name("fb")  # same length: _cat columns line up alike


async def test_requests_answer_the_same_through_the_bridge(opensearch_url: str, bridge_url: str) -> None:
    mismatches = []
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        try:
            for case in CASES:
                direct = await send(session, opensearch_url, case, DIRECT)
                bridged = await send(session, bridge_url, case, BRIDGED)
                if direct.status != bridged.status:
                    mismatches.append(f"{case.name}: status {direct.status} != {bridged.status}")
                    continue
                for header in COMPARED_HEADERS:
                    if direct.headers.get(header) != bridged.headers.get(header):
                        mismatches.append(
                            f"{case.name}: header {header} {direct.headers.get(header)!r} != "
                            f"{bridged.headers.get(header)!r}"
                        )
                if case.compare_body and normalised(direct, DIRECT) != normalised(bridged, BRIDGED):
                    mismatches.append(
                        f"{case.name}: body\n  direct {normalised(direct, DIRECT)[:300]!r}\n"
                        f"  bridge {normalised(bridged, BRIDGED)[:300]!r}"
                    )
        finally:
            await delete_indices(session, opensearch_url, f"{DIRECT}-books", f"{BRIDGED}-books")
    assert len(CASES) >= 40
    assert not mismatches, "\n".join(mismatches)
