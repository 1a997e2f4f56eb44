"""Bad input through the bridge: the engine's own error (or the bridge's, in the engine's shape), never a 500.

Compared with the real engine: a request the bridge cannot read is relayed so the engine answers it itself.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.config import Settings
from tests.bridge_server import running_bridge
from tests.indices import create_index

pytestmark = pytest.mark.engine

RULED = "rr-bad"
PLAIN = "plain-bad"


@pytest.fixture(scope="module")
async def bridge(opensearch_url: str, tiny_model: Path) -> AsyncIterator[str]:
    async with aiohttp.ClientSession() as http:
        docs = [
            {"title": f"wind tunnel {i}", "text": "flow über ∂ boundary layer " * (i % 4)} for i in range(30)
        ]
        for index in (RULED, PLAIN):
            await create_index(http, opensearch_url, index, docs)
    settings_ = Settings(
        upstream={"url": opensearch_url},
        models={"tiny": {"source": str(tiny_model), "dtype": "float32"}},
        rules=[{"indices": ["rr-*"], "fields": ["title", "text"], "window": 20}],
        limits={"max_search_body_bytes": 200_000},
    )
    async with running_bridge(settings_) as url:
        yield url
    async with aiohttp.ClientSession() as http:
        for index in (RULED, PLAIN):
            await http.delete(f"{opensearch_url}/{index}")


async def both(
    opensearch_url: str, bridge: str, method: str, path: str, data: Any, headers: dict[str, str]
) -> tuple[tuple[int, bytes], tuple[int, bytes, dict[str, str]]]:
    async with aiohttp.ClientSession() as http:
        async with http.request(method, opensearch_url + path, data=data, headers=headers) as response:
            direct = (response.status, await response.read())
        async with http.request(method, bridge + path, data=data, headers=headers) as response:
            bridged = (response.status, await response.read(), dict(response.headers))
    return direct, bridged


def without_took(raw: bytes) -> bytes:
    return re.sub(rb'"took":\d+', b'"took":0', raw)


JSON = {"Content-Type": "application/json"}
NDJSON = {"Content-Type": "application/x-ndjson"}

GARBAGE: list[tuple[str, str, bytes, dict[str, str]]] = [
    ("truncated json", f"/{RULED}/_search", b'{"query": {"match": {"title": "wind"', JSON),
    ("json array", f"/{RULED}/_search", b"[1, 2, 3]", JSON),
    ("json string", f"/{RULED}/_search", b'"just a string"', JSON),
    ("binary", f"/{RULED}/_search", bytes(range(256)) * 4, JSON),
    ("invalid utf-8", f"/{RULED}/_search", b'{"query": {"match": {"title": "\xff\xfe wind"}}}', JSON),
    (
        "text/plain",
        f"/{RULED}/_search",
        b'{"query": {"match": {"title": "wind"}}}',
        {"Content-Type": "text/plain"},
    ),
    (
        "wrong content type",
        f"/{RULED}/_search",
        b'{"query": {"match_all": {}}}',
        {"Content-Type": "application/x-www-form-urlencoded"},
    ),
    ("unknown field", f"/{RULED}/_search", b'{"query": {"match": {"title": "wind"}}, "bogus": 1}', JSON),
    (
        "size not a number",
        f"/{RULED}/_search",
        b'{"query": {"match": {"title": "wind"}}, "size": "ten"}',
        JSON,
    ),
    ("negative from", f"/{RULED}/_search", b'{"query": {"match": {"title": "wind"}}, "from": -5}', JSON),
    (
        "size param not a number",
        f"/{RULED}/_search?size=abc",
        b'{"query": {"match": {"title": "wind"}}}',
        JSON,
    ),
    (
        "unicode query",
        f"/{RULED}/_search",
        json.dumps({"query": {"match": {"title": "über ∂ 风 🌬️"}}}).encode(),
        JSON,
    ),
    (
        "msearch odd lines",
        "/_msearch",
        b'{"index": "rr-bad"}\n{"query": {"match_all": {}}}\n{"index": "rr-bad"}\n',
        NDJSON,
    ),
    ("msearch bad json line", "/_msearch", b'{"index": "rr-bad"}\n{"query": \n', NDJSON),
    (
        "msearch no trailing newline",
        "/_msearch",
        b'{"index": "rr-bad"}\n{"query": {"match": {"title": "wind"}}}',
        NDJSON,
    ),
    ("template missing id", f"/{RULED}/_search/template", b'{"id": "no-such-template", "params": {}}', JSON),
    ("template bad json", f"/{RULED}/_search/template", b'{"source": ', JSON),
]


@pytest.mark.parametrize(("name", "path", "body", "headers"), GARBAGE, ids=[g[0] for g in GARBAGE])
async def test_garbage_gets_the_engines_answer(
    opensearch_url: str, bridge: str, name: str, path: str, body: bytes, headers: dict[str, str]
) -> None:
    direct, bridged = await both(opensearch_url, bridge, "POST", path, body, headers)
    assert bridged[0] != 500 or direct[0] == 500
    assert bridged[0] == direct[0], (name, direct, bridged[:2])
    if not bridged[2].get("X-Rerank", "").startswith("applied"):
        assert without_took(bridged[1]) == without_took(direct[1]), name


async def test_oversized_search_is_413_in_the_engine_shape(bridge: str) -> None:
    body = json.dumps({"query": {"match": {"title": "wind " * 60_000}}}).encode()
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{bridge}/{RULED}/_search", data=body, headers=JSON) as r,
    ):
        assert r.status == 413
        answer = await r.json()
    assert answer["status"] == 413
    assert answer["error"]["type"] == "content_too_long_exception"
    assert answer["error"]["root_cause"][0]["type"] == "content_too_long_exception"


async def test_large_bulk_streams_through_without_the_search_limit(opensearch_url: str, bridge: str) -> None:
    lines = []
    for i in range(4000):
        lines += [
            json.dumps({"index": {"_index": "bulk-big", "_id": str(i)}}),
            json.dumps({"text": "x" * 500}),
        ]
    payload = ("\n".join(lines) + "\n").encode()
    assert len(payload) > 2_000_000
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{bridge}/_bulk", data=payload, headers=NDJSON) as response:
            assert response.status == 200
            assert (await response.json())["errors"] is False
        async with http.get(f"{opensearch_url}/bulk-big/_count?") as response:
            assert response.status == 200
        await http.delete(f"{opensearch_url}/bulk-big")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 5) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)
query_clauses = st.one_of(
    st.fixed_dictionaries({"match": st.fixed_dictionaries({"title": st.text(max_size=20) | json_values})}),
    st.fixed_dictionaries(
        {
            "multi_match": st.fixed_dictionaries(
                {"query": st.text(max_size=20), "fields": st.just(["title", "text"])}
            )
        }
    ),
    st.fixed_dictionaries(
        {
            "bool": st.fixed_dictionaries(
                {
                    "should": st.lists(
                        st.fixed_dictionaries(
                            {"match": st.fixed_dictionaries({"text": st.text(max_size=12)})}
                        ),
                        max_size=3,
                    )
                }
            )
        }
    ),
    st.dictionaries(st.sampled_from(["match_all", "term", "query_string", "nope"]), json_values, max_size=1),
)
search_bodies = st.fixed_dictionaries(
    {"query": query_clauses},
    optional={
        "size": st.integers(-1, 40) | st.text(max_size=3),
        "from": st.integers(-1, 30),
        "sort": st.sampled_from([["_score"], [{"_score": "desc"}], [{"title.keyword": "asc"}], "_doc"]),
        "_source": st.booleans() | st.lists(st.sampled_from(["title", "text", "t*"]), max_size=2),
        "ext": st.fixed_dictionaries({"rerank": st.booleans() | json_values}),
        "track_total_hits": st.booleans(),
        "highlight": st.just({"fields": {"title": {}}}),
    },
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=search_bodies, ruled=st.booleans())
async def test_generated_searches_never_500_and_passthrough_is_unchanged(
    opensearch_url: str, bridge: str, body: dict[str, Any], ruled: bool
) -> None:
    index = RULED if ruled else PLAIN
    data = json.dumps(body).encode()
    direct, bridged = await both(opensearch_url, bridge, "POST", f"/{index}/_search", data, JSON)
    # The engine never sees ext.rerank: compare with what it says to the body without it.
    clean = json.dumps({k: v for k, v in body.items() if k != "ext"}).encode()
    cleaned, _ = await both(opensearch_url, bridge, "POST", f"/{index}/_search", clean, JSON)
    assert bridged[0] != 500 or cleaned[0] == 500
    if not ruled and "ext" not in body:
        assert bridged[0] == direct[0]
        assert without_took(bridged[1]) == without_took(direct[1])
    if ruled and "ext" not in body and direct[0] != 200:
        # The engine refused it; the bridge answers the same refusal.
        assert bridged[0] == direct[0]
