"""Whatever the engine refuses, the client gets the engine's refusal through the bridge; whatever it answers, the
bridge answers too (lone surrogates included), reranked where a rule says so.

Each body is sent to the real engine and to a bridge in front of it, on a ruled index; the answers must be the
same. Nothing here nests bool queries deeply or sends a deep body to ``_search/template``: both kill OpenSearch
2.19 (``StackOverflowError``), and the engine may be shared.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from yarl import URL

from bridge.config import Settings
from bridge.search.json_codec import parse_json
from tests.bridge_server import running_bridge
from tests.indices import create_index, delete_indices, scratch_name
from tests.search.scripted_engine import WordScorer

pytestmark = pytest.mark.engine

INDEX = scratch_name("rr-refusals")
MATCH = b'{"query":{"match":{"title":"wind"}}'
JSON = {"Content-Type": "application/json"}
NDJSON = {"Content-Type": "application/x-ndjson"}


def _deep_objects(depth: int) -> bytes:
    """``{"a":{"a":...}}``: the engine stops at the first unknown key, so this is safe to send it."""
    return b'{"a":' * depth + b"1" + b"}" * depth


@pytest.fixture(scope="module")
async def engine(opensearch_url: str) -> AsyncIterator[str]:
    docs = {str(i): {"title": f"wind flow {'layer ' * i}"} for i in range(6)}
    async with aiohttp.ClientSession() as http:
        await create_index(http, opensearch_url, INDEX, docs, {"properties": {"title": {"type": "text"}}})
        # Stored with JSON escapes the engine accepts and hands back verbatim: a lone surrogate, and a pair.
        async with http.put(
            f"{opensearch_url}/{INDEX}/_doc/poisoned?refresh=true",
            data=b'{"title":"wind \\ud800 flow \\udc00","note":"\\ud83d\\ude00"}',
            headers=JSON,
        ) as response:
            assert response.status == 201, await response.text()
        try:
            yield opensearch_url
        finally:
            await delete_indices(http, opensearch_url, INDEX)


@pytest.fixture(scope="module")
async def bridge(engine: str) -> AsyncIterator[str]:
    settings = Settings(
        upstream={"url": engine},
        models={"words": {"source": "unused"}},
        rules=[{"indices": [INDEX], "fields": ["title"], "window": 5, "model": "words"}],
    )
    async with running_bridge(settings, scorers={"words": WordScorer()}) as url:
        yield url


async def _ask(base: str, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, Any, str | None]:
    async with (
        aiohttp.ClientSession() as http,
        http.post(URL(base + path, encoded=True), data=body, headers=headers) as response,
    ):
        raw = await response.read()
        value = parse_json(raw) if raw.strip() else None
        return response.status, _without_took(value), response.headers.get("X-Rerank")


def _without_took(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _without_took(item) for key, item in value.items() if key != "took"}
    if isinstance(value, list):
        return [_without_took(item) for item in value]
    return value


async def _same_as_engine(engine: str, bridge: str, path: str, body: bytes, headers: dict[str, str]) -> Any:
    direct = await _ask(engine, path, body, headers)
    through = await _ask(bridge, path, body, headers)
    assert through[:2] == direct[:2], f"{path} {body[:120]!r}"
    return direct[1]


@pytest.mark.parametrize(
    ("name", "body", "query"),
    [
        ("duplicate key", MATCH + b',"size":1,"size":2}', ""),
        ("duplicate nested key", b'{"query":{"match":{"title":"wind","title":"flow"}}}', ""),
        ("size null", MATCH + b',"size":null}', ""),
        ("from null", MATCH + b',"from":null}', ""),
        ("size NaN", MATCH + b',"size":NaN}', ""),
        ("size Infinity", MATCH + b',"size":Infinity}', ""),
        ("from -Infinity", MATCH + b',"from":-Infinity}', ""),
        ("size 1e400", MATCH + b',"size":1e400}', ""),
        ("size past int", MATCH + b',"size":99999999999}', ""),
        ("size true", MATCH + b',"size":true}', ""),
        ("size not a number", MATCH + b',"size":"x"}', ""),
        ("invalid UTF-8", b'{"query":{"match":{"title":"wind\xff"}}}', ""),
        ("source excludes null", MATCH + b',"_source":{"includes":"title","excludes":null}}', ""),
        ("source includes null", MATCH + b',"_source":{"includes":["title",null]}}', ""),
        ("URL size Infinity", MATCH + b"}", "?size=Infinity"),
        ("URL size 1e400", MATCH + b"}", "?size=1e400"),
        ("URL from negative", MATCH + b"}", "?from=-1"),
    ],
)
async def test_the_client_gets_the_engines_own_refusal(
    engine: str, bridge: str, name: str, body: bytes, query: str
) -> None:
    answer = await _same_as_engine(engine, bridge, f"/{INDEX}/_search{query}", body, JSON)
    assert answer["status"] == 400, name


async def test_a_body_nested_past_the_bound_is_the_engines_kind_of_400(engine: str, bridge: str) -> None:
    body = MATCH + b',"a":' + _deep_objects(1100) + b"}"
    status, answer, _ = await _ask(bridge, f"/{INDEX}/_search", body, JSON)
    direct_status, direct, _ = await _ask(engine, f"/{INDEX}/_search", body, JSON)
    assert status == direct_status == 400
    assert answer["error"]["type"] == direct["error"]["type"] == "parsing_exception"


async def test_a_refused_body_with_ext_rerank_is_refused_without_ext_rerank(engine: str, bridge: str) -> None:
    body = MATCH + b',"size":null,"ext":{"rerank":{"enabled":true}}}'
    status, answer, _ = await _ask(bridge, f"/{INDEX}/_search", body, JSON)
    _, direct, _ = await _ask(engine, f"/{INDEX}/_search", MATCH + b',"size":null}', JSON)
    assert status == 400
    assert answer["error"]["type"] == direct["error"]["type"] == "parsing_exception"
    assert answer["error"]["reason"] == direct["error"]["reason"] == "Unknown key for a VALUE_NULL in [size]."


@pytest.mark.parametrize("path", ["//{index}/_search", "/{index}//_search", "//{index}/_msearch"])
async def test_paths_the_engine_does_not_route_are_its_refusal(engine: str, bridge: str, path: str) -> None:
    body = b"{}\n" + MATCH + b"}\n" if "msearch" in path else MATCH + b"}"
    await _same_as_engine(engine, bridge, path.format(index=INDEX), body, JSON)


@pytest.mark.parametrize(
    ("name", "lines"),
    [
        ("duplicate key in a body", [b"{}", MATCH + b',"size":1,"size":1}']),
        ("size null in a body", [b"{}", MATCH + b',"size":null}']),
        ("NaN in a body", [b"{}", MATCH + b',"size":NaN}']),
        ("duplicate key in a header", [b'{"index":"x","index":"y"}', MATCH + b"}"]),
        # The engine reads a deep header's index as a name: a 200 whose item is index_not_found.
        ("deep header", [b'{"index":' + b"[" * 1002 + b"]" * 1002 + b"}", MATCH + b"}"]),
    ],
)
async def test_msearch_lines_the_engine_refuses_get_its_answer(
    engine: str, bridge: str, name: str, lines: list[bytes]
) -> None:
    body = b"".join(line + b"\n" for line in [b"{}", MATCH + b"}", *lines])
    await _same_as_engine(engine, bridge, f"/{INDEX}/_msearch", body, NDJSON)


async def test_a_stored_lone_surrogate_is_reranked_and_written_back(engine: str, bridge: str) -> None:
    status, answer, rerank = await _ask(bridge, f"/{INDEX}/_search", MATCH + b"}", JSON)
    _, direct, _ = await _ask(engine, f"/{INDEX}/_search", MATCH + b"}", JSON)
    assert status == 200 and rerank is not None and rerank.startswith("applied")
    sources = {hit["_id"]: hit["_source"] for hit in answer["hits"]["hits"]}
    assert sources["poisoned"] == {"title": "wind \ud800 flow \udc00", "note": "\U0001f600"}
    assert sources == {hit["_id"]: hit["_source"] for hit in direct["hits"]["hits"]}


@pytest.mark.parametrize(
    ("path", "body", "headers"),
    [
        ("_search", b'{"query":{"match":{"title":"wind \\ud800"}}}', JSON),
        (
            "_search",
            b'{"query":{"match":{"title":"wind \xed\xa0\x80"}}}',
            JSON,
        ),  # the raw bytes Jackson takes
        ("_msearch", b'{}\n{"query":{"match":{"title":"flow \\udc00"}}}\n', NDJSON),
    ],
)
async def test_lone_surrogates_in_a_query_are_reranked(
    engine: str, bridge: str, path: str, body: bytes, headers: dict[str, str]
) -> None:
    status, answer, rerank = await _ask(bridge, f"/{INDEX}/{path}", body, headers)
    direct_status, direct, _ = await _ask(engine, f"/{INDEX}/{path}", body, headers)
    assert status == direct_status == 200
    assert rerank is not None and rerank.startswith("applied")
    hits = answer["hits"] if path == "_search" else answer["responses"][0]["hits"]
    expected = direct["hits"] if path == "_search" else direct["responses"][0]["hits"]
    assert sorted(hit["_id"] for hit in hits["hits"]) == sorted(hit["_id"] for hit in expected["hits"])
