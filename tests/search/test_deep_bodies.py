"""Deep nesting never raises RecursionError on the request path: bodies up to the bridge's bound are reranked,
deeper ones get the engine-shaped 400, and a deep template body never reaches the engine (OpenSearch 2.19 dies of
it: StackOverflowError, the node exits)."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest

from bridge.search.json_codec import MAX_DEPTH
from tests.search.scripted_engine import (
    Asked,
    ScriptedEngine,
    engine_error,
    hits_answer,
    intercepting,
    reply,
    ruled_settings,
)

JSON = {"Content-Type": "application/json"}
NDJSON = {"Content-Type": "application/x-ndjson"}


def _nested(depth: int, leaf: Any) -> Any:
    for _ in range(depth):
        leaf = {"d": leaf}
    return leaf


def _deep_text(depth: int) -> str:
    return '{"d":' * depth + "1" + "}" * depth


def _engine(sources: list[dict[str, Any]]) -> ScriptedEngine:
    def script(asked: Asked) -> Any:
        if asked.relayed:  # the client's own bytes: what the engine says of a deep body
            return engine_error(400, "parsing_exception", "Unknown key for a START_OBJECT in [d].")
        return reply(200, hits_answer(sources, 5))

    return ScriptedEngine(script)


async def test_a_body_and_documents_at_the_bound_are_reranked(caplog: pytest.LogCaptureFixture) -> None:
    query: Any = {"match": {"title": "red car"}}
    for _ in range((MAX_DEPTH - 10) // 3):
        query = {"bool": {"must": [query]}}
    body = {"query": query, "ext": {"rerank": {"query_text": "red car"}}}
    sources = [{"title": "blue", "deep": _nested(MAX_DEPTH - 8, "x")}, {"title": "red car"}]
    scripted = _engine(sources)
    with caplog.at_level(logging.ERROR):
        async with intercepting(scripted) as client:
            response = await client.post(
                "/rr-docs/_search?filter_path=hits.hits._source", data=json.dumps(body), headers=JSON
            )
            assert response.status == 200
            assert response.headers["X-Rerank"].startswith("applied")
            hits = (await response.json())["hits"]["hits"]
    assert [hit["_source"]["title"] for hit in hits] == ["red car", "blue"]
    assert hits[1]["_source"]["deep"] == sources[0]["deep"]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 1001, 100_000])
async def test_a_search_nested_past_the_bound_is_a_parsing_exception(
    depth: int, caplog: pytest.LogCaptureFixture
) -> None:
    body = '{"query":{"match":{"title":"red"}},"d":' + _deep_text(depth) + "}"
    with caplog.at_level(logging.ERROR):
        async with intercepting(_engine([])) as client:
            response = await client.post("/rr-docs/_search", data=body, headers=JSON)
            assert response.status == 400
            assert (await response.json())["error"]["type"] == "parsing_exception"
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 1001, 100_000])
@pytest.mark.parametrize(
    ("path", "headers", "frame"),
    [
        ("/rr-docs/_search/template", JSON, '{{"id":"t","params":{{"p":{deep}}}}}'),
        ("/rr-docs/_msearch/template", NDJSON, '{{}}\n{{"id":"t","params":{{"p":{deep}}}}}\n'),
    ],
)
async def test_a_deep_template_body_never_reaches_the_engine(
    depth: int, path: str, headers: dict[str, str], frame: str
) -> None:
    scripted = _engine([])
    async with intercepting(scripted) as client:
        response = await client.post(path, data=frame.format(deep=_deep_text(depth)), headers=headers)
        assert response.status == 400
        error = (await response.json())["error"]
        assert error["type"] == "parsing_exception"
        assert error["reason"].startswith("Document nesting depth")
    assert scripted.asked == []


async def test_a_deep_msearch_header_is_the_engines_to_judge() -> None:
    # The engine reads a header's few keys as metadata: it answers a deep "index" with a 200 (the item an error).
    answered = {"took": 1, "responses": [{"error": {"type": "index_not_found_exception"}, "status": 404}]}
    scripted = ScriptedEngine(lambda asked: reply(200, answered))
    deep_header = '{"index":' + "[" * 1002 + "]" * 1002 + "}"
    async with intercepting(scripted) as client:
        response = await client.post(
            "/_msearch", data=deep_header + '\n{"query":{"match":{"title":"red"}}}\n', headers=NDJSON
        )
        assert response.status == 200
        assert await response.json() == answered
    assert [asked.relayed for asked in scripted.asked] == [True]


def _bools(levels: int) -> str:
    return '{"bool":{"must":' * levels + '{"match_all":{}}' + "}}" * levels


@pytest.mark.parametrize(
    ("path", "headers", "body"),
    [
        # Python finds the duplicate key only after the deep query; the engine would read the deep part first.
        ("/rr-docs/_search", JSON, '{"query":' + _bools(480) + ',"query":{"match_all":{}}}'),
        ("/rr-docs/_search/template", JSON, '{"source":' + _bools(480) + ',"source":{}}'),
        ("/rr-docs/_search", JSON, '{"q":' + "[" * 950 + "]" * 950 + ',"x":NaN}'),
        ("/rr-docs/_search", JSON, '{"q":' + "[" * 950 + "]" * 950 + ",}"),
        # A refused header line stops parsing; the deep body after it must not go out with it.
        ("/_msearch", NDJSON, '{"index":' + "[" * 450 + "]" * 450 + "}\n" + '{"query":' + _bools(700) + "}\n"),
        ("/_msearch/template", NDJSON, '{"index":' + "[" * 450 + "]" * 450 + '}\n{"source":' + _bools(700) + "}\n"),
        ("/_msearch", NDJSON, '{"index":"rr-docs","index":"x"}\n{"query":' + _bools(700) + "}\n"),
    ],
)
async def test_a_relayable_refusal_never_carries_a_deep_body_to_the_engine(
    path: str, headers: dict[str, str], body: str
) -> None:
    scripted = _engine([])
    async with intercepting(scripted) as client:
        response = await client.post(path, data=body, headers=headers)
        assert response.status == 400
        assert (await response.json())["error"]["reason"].startswith("Document nesting depth")
    assert scripted.asked == []


@pytest.mark.parametrize(
    ("path", "headers", "body"),
    [
        ("/unruled/_search", JSON, '{"query":' + _bools(500) + "}"),
        ("/unruled/_search?format=yaml", JSON, '{"query":' + _bools(500) + "}"),
        ("/.kibana/_search", JSON, '{"query":' + _bools(500) + "}"),
        ("/_msearch", NDJSON, '{"index":"unruled"}\n{"query":' + _bools(500) + "}\n"),
    ],
)
async def test_a_deep_search_never_reaches_the_engine_through_the_bridge_on_any_intercepted_route(
    path: str, headers: dict[str, str], body: str
) -> None:
    scripted = _engine([])
    async with intercepting(scripted, ruled_settings(rules=[{"indices": ["rr-*"], "fields": ["title"]}])) as client:
        response = await client.post(path, data=body, headers=headers)
        assert response.status == 400
        assert (await response.json())["error"]["type"] == "parsing_exception"
        shallow = await client.post("/unruled/_search", data='{"query":' + _bools(20) + "}", headers=JSON)
        assert shallow.headers["X-Rerank"] == "skipped; reason=no_rule"
    assert [asked.relayed for asked in scripted.asked] == [True]  # only the shallow one
