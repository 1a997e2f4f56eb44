"""Bodies as the engine reads them, on a ruled path: what it refuses gets its refusal (never the bridge's 502),
what it takes (lone surrogates) is reranked, and what would kill it (deep bodies) never reaches it."""

from __future__ import annotations

import json

from bridge.search.engine import EngineReply
from bridge.search.json_codec import parse_json
from tests.search.scripted_engine import (
    Asked,
    ScriptedEngine,
    WordScorer,
    engine_error,
    hits_answer,
    intercepting,
    reply,
    ruled_settings,
)

JSON = {"Content-Type": "application/json"}
NDJSON = {"Content-Type": "application/x-ndjson"}
TITLES = [{"title": t} for t in ("red car", "blue boat", "fast red \ud800 car")]
OWN_REFUSAL = engine_error(400, "json_parse_exception", "the engine's own words")


def answering(asked: Asked) -> EngineReply:
    if asked.relayed:
        return OWN_REFUSAL
    if asked.target.endswith("_msearch"):
        return reply(200, {"took": 1, "responses": [{**hits_answer(TITLES, 10), "status": 200}]})
    return reply(200, hits_answer(TITLES, 10))


def deep(levels: int) -> str:
    return '{"a":' * levels + "1" + "}" * levels


async def test_a_stored_document_with_a_lone_surrogate_is_reranked() -> None:
    engine = ScriptedEngine(answering)
    async with intercepting(engine) as client:
        response = await client.post("/rr-docs/_search", json={"query": {"match": {"title": "fast red car"}}})
        assert response.status == 200
        assert response.headers["X-Rerank"] == "applied; model=words; window=3; combine=replace"
        raw = await response.read()
    assert b"\\UD800" in raw.upper()
    titles = [hit["_source"]["title"] for hit in parse_json(raw)["hits"]["hits"]]
    assert titles[0] == "fast red \ud800 car"


async def test_a_query_with_a_lone_surrogate_is_reranked_and_sent_on_as_the_engine_reads_it() -> None:
    scorer = WordScorer()
    engine = ScriptedEngine(answering)
    body = b'{"query": {"match": {"title": "red \\ud800 car"}}}'
    async with intercepting(engine, scorer=scorer) as client:
        response = await client.post("/rr-docs/_search", data=body, headers=JSON)
        assert response.status == 200 and response.headers["X-Rerank"].startswith("applied")
        lines = b'{"index": "rr-docs"}\n' + body + b"\n"
        response = await client.post("/_msearch", data=lines, headers=NDJSON)
        assert response.status == 200 and response.headers["X-Rerank"].startswith("applied")
    assert parse_json(engine.asked[0].body)["query"]["match"]["title"] == "red \ud800 car"
    assert scorer.queries[0] == "red \ufffd car"  # tokenizers refuse lone surrogates


async def test_a_template_nested_past_the_engines_limit_never_reaches_it() -> None:
    engine = ScriptedEngine(answering)
    template = '{"source": {"query": {"match": {"title": "{{q}}"}}}, "params": {"q": "car", "x": ' + deep(1100) + "}}"
    async with intercepting(engine) as client:
        response = await client.post("/rr-docs/_search/template", data=template, headers=JSON)
        assert response.status == 400
        error = await response.json()
        lines = '{"index": "rr-docs"}\n' + template + "\n"
        multi = await client.post("/_msearch/template", data=lines, headers=NDJSON)
        assert multi.status == 400
    assert error["error"]["type"] == "parsing_exception" and "nesting depth" in error["error"]["reason"]
    assert engine.asked == []


async def test_a_template_nested_past_the_engines_limit_never_reaches_it_on_an_unruled_index_either() -> None:
    engine = ScriptedEngine(answering)
    template = '{"id": "t", "params": {"x": ' + deep(1100) + "}}"
    async with intercepting(engine, ruled_settings(rules=[])) as client:
        response = await client.post("/plain/_search/template", data=template, headers=JSON)
        assert response.status == 400
        lines = '{"index": "plain"}\n' + template + "\n"
        multi = await client.post("/_msearch/template", data=lines, headers=NDJSON)
        assert multi.status == 400
        yaml = await client.post("/plain/_search/template?format=yaml", data=template, headers=JSON)
        assert yaml.status == 400
        shallow = await client.post("/plain/_search/template", data='{"id": "t", "params": {}}', headers=JSON)
        assert shallow.headers["X-Rerank"] == "skipped; reason=no_rule"
    assert [asked.relayed for asked in engine.asked] == [True]


async def test_a_deep_search_on_a_ruled_path_is_refused_by_the_bridge_and_never_sent() -> None:
    """OpenSearch 2.19 dies of deep search bodies too (498 nested bools killed the node): on a ruled path the
    bridge is never the way one reaches it; the refusal is the engine's 400 shape."""
    engine = ScriptedEngine(answering)
    body = '{"query": {"match": {"title": "car"}}, "ext": ' + deep(1100) + "}"
    async with intercepting(engine) as client:
        response = await client.post("/rr-docs/_search", data=body, headers=JSON)
        assert response.status == 400
        error = await response.json()
        lines = '{"index": "rr-docs"}\n' + body + "\n"
        multi = await client.post("/_msearch", data=lines, headers=NDJSON)
        assert multi.status == 400
    assert error["error"]["type"] == "parsing_exception" and "nesting depth" in error["error"]["reason"]
    assert engine.asked == []


async def test_bodies_the_engine_refuses_get_the_engines_refusal() -> None:
    bodies = [
        b'{"query": {"match": {"title": "car"}}, "size": Infinity}',
        b'{"query": {"match": {"title": "car"}}, "from": -Infinity}',
        b'{"query": {"match": {"title": "car"}}, "size": NaN}',
        b'{"query": {"match": {"title": "car"}}, "size": 3, "size": 4}',
        b'{"query": {"match": {"title": "car", "title": "boat"}}}',
    ]
    engine = ScriptedEngine(answering)
    async with intercepting(engine) as client:
        for body in bodies:
            response = await client.post("/rr-docs/_search", data=body, headers=JSON)
            assert response.status == 400 and await response.read() == OWN_REFUSAL.body, body
            assert response.headers["X-Rerank"] == "skipped; reason=refused_body"
            lines = b'{"index": "rr-docs"}\n' + body + b"\n"
            response = await client.post("/_msearch", data=lines, headers=NDJSON)
            assert response.status == 400 and await response.read() == OWN_REFUSAL.body, body
    assert all(asked.relayed for asked in engine.asked)
    assert [asked.body for asked in engine.asked[::2]] == bodies


async def test_out_of_range_numbers_are_never_a_bridge_error() -> None:
    engine = ScriptedEngine(answering)
    async with intercepting(engine) as client:
        for body in (b'{"query": {"match": {"title": "car"}}, "size": 1e400}', b'{"size": -1e400, "query": {}}'):
            response = await client.post("/rr-docs/_search", data=body, headers=JSON)
            assert response.status == 400 and await response.read() == OWN_REFUSAL.body, body
            assert json.loads(engine.asked[-1].body) is not None and engine.asked[-1].body == body
