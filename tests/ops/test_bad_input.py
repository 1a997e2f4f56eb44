"""Bad input through the bridge: the engine's own error (or the bridge's, in the engine's shape), never a 500.

Compared with the real engine: a request the bridge cannot read is relayed so the engine answers it itself.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.config import Settings
from tests.bridge_server import running_bridge
from tests.indices import create_index, delete_indices, scratch_name

pytestmark = pytest.mark.engine

RULED = scratch_name("rr-bad")
PLAIN = scratch_name("plain-bad")
BULK = scratch_name("bulk-big")
MSEARCH_HEADER = json.dumps({"index": RULED}).encode()


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
        rules=[{"indices": [scratch_name("rr-*")], "fields": ["title", "text"], "window": 20}],
        limits={"max_search_body_bytes": 200_000},
    )
    async with running_bridge(settings_) as url:
        yield url
    async with aiohttp.ClientSession() as http:
        await delete_indices(http, opensearch_url, RULED, PLAIN)


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
        MSEARCH_HEADER + b'\n{"query": {"match_all": {}}}\n' + MSEARCH_HEADER + b"\n",
        NDJSON,
    ),
    ("msearch bad json line", "/_msearch", MSEARCH_HEADER + b'\n{"query": \n', NDJSON),
    (
        "msearch no trailing newline",
        "/_msearch",
        MSEARCH_HEADER + b'\n{"query": {"match": {"title": "wind"}}}',
        NDJSON,
    ),
    ("template missing id", f"/{RULED}/_search/template", b'{"id": "no-such-template", "params": {}}', JSON),
    ("template bad json", f"/{RULED}/_search/template", b'{"source": ', JSON),
    # Bodies Python's json reads but the engine refuses (items 9, 13): the engine's own refusal, never a 502.
    ("size Infinity", f"/{RULED}/_search", b'{"query": {"match": {"title": "wind"}}, "size": Infinity}', JSON),
    ("from -Infinity", f"/{RULED}/_search", b'{"query": {"match": {"title": "wind"}}, "from": -Infinity}', JSON),
    ("size 1e400", f"/{RULED}/_search", b'{"query": {"match": {"title": "wind"}}, "size": 1e400}', JSON),
    ("size NaN", f"/{RULED}/_search", b'{"query": {"match": {"title": "wind"}}, "size": NaN}', JSON),
    ("duplicate key", f"/{RULED}/_search", b'{"query": {"match": {"title": "wind"}}, "size": 2, "size": 3}', JSON),
    ("duplicate nested key", f"/{RULED}/_search", b'{"query": {"match": {"title": "a", "title": "b"}}}', JSON),
    (
        "msearch duplicate key",
        "/_msearch",
        MSEARCH_HEADER + b'\n{"query": {"match": {"title": "wind"}}, "size": 2, "size": 3}\n',
        NDJSON,
    ),
    (
        "template duplicate key",
        f"/{RULED}/_search/template",
        b'{"source": {"query": {"match": {"title": "{{q}}"}}}, "params": {"q": "wind"}, "params": {}}',
        JSON,
    ),
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


async def test_a_decompression_bomb_is_413_without_stalling_the_bridge(bridge: str) -> None:
    """153 KB of gzip inflating to 150 MiB: refused at the body limit, while health keeps answering at once."""
    bomb = gzip.compress(b'{"query": {"match_all": {}}, "pad": "' + b"a" * (150 * 1024 * 1024) + b'"}')
    headers = {**JSON, "Content-Encoding": "gzip"}
    health: list[float] = []
    async with aiohttp.ClientSession() as http:

        async def poll_health() -> None:
            while True:
                started = time.perf_counter()
                async with http.get(f"{bridge}/_bridge/health") as response:
                    assert response.status == 200
                health.append(time.perf_counter() - started)
                await asyncio.sleep(0.01)

        poller = asyncio.create_task(poll_health())
        try:
            await asyncio.sleep(0.05)
            for path in (f"/{RULED}/_search", f"/{PLAIN}/_search", "/_msearch"):
                started = time.perf_counter()
                async with http.post(bridge + path, data=bomb, headers=headers) as response:
                    answer = await response.json()
                    assert response.status == 413, path
                assert time.perf_counter() - started < 1.0, path
                assert answer["error"]["type"] == "content_too_long_exception"
        finally:
            poller.cancel()
    assert health and max(health) < 0.25, max(health)


async def test_a_stored_lone_surrogate_is_reranked_not_a_bridge_error(opensearch_url: str, bridge: str) -> None:
    """Lone surrogates in a stored document, a query and an msearch line: 200s, as the engine answers them."""
    poisoned = scratch_name("rr-surrogate")
    async with aiohttp.ClientSession() as http:
        docs = [{"title": "wind \ud800 tunnel", "text": "flow"}, {"title": "wind tunnel", "text": "flow"}]
        await create_index(http, opensearch_url, poisoned, docs)
        try:
            searches = [
                (f"/{poisoned}/_search", b'{"query": {"match": {"title": "wind"}}}', JSON),
                (f"/{poisoned}/_search", b'{"query": {"match": {"title": "wind \\ud800"}}}', JSON),
                (
                    "/_msearch",
                    json.dumps({"index": poisoned}).encode() + b'\n{"query": {"match": {"title": "\\udfff wind"}}}\n',
                    NDJSON,
                ),
            ]
            for path, body, headers in searches:
                direct, bridged = await both(opensearch_url, bridge, "POST", path, body, headers)
                assert direct[0] == bridged[0] == 200, (path, body, bridged[:2])
                assert bridged[2]["X-Rerank"].startswith("applied"), path
                got, expected = json.loads(bridged[1]), json.loads(direct[1])
                if "responses" in got:
                    got, expected = got["responses"][0], expected["responses"][0]
                assert sorted(json.dumps(h["_source"]) for h in got["hits"]["hits"]) == sorted(
                    json.dumps(h["_source"]) for h in expected["hits"]["hits"]
                )
        finally:
            await delete_indices(http, opensearch_url, poisoned)


async def test_large_bulk_streams_through_without_the_search_limit(opensearch_url: str, bridge: str) -> None:
    lines = []
    for i in range(4000):
        lines += [
            json.dumps({"index": {"_index": BULK, "_id": str(i)}}),
            json.dumps({"text": "x" * 500}),
        ]
    payload = ("\n".join(lines) + "\n").encode()
    assert len(payload) > 2_000_000
    async with aiohttp.ClientSession() as http:
        try:
            async with http.post(f"{bridge}/_bulk", data=payload, headers=NDJSON) as response:
                assert response.status == 200
                assert (await response.json())["errors"] is False
            async with http.get(f"{opensearch_url}/{BULK}/_count?") as response:
                assert response.status == 200
        finally:
            await delete_indices(http, opensearch_url, BULK)


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
