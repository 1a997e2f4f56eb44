"""The real engine is the reference: _source filtering and filter_path must give its answers.

Runs against ``OPENSEARCH_URL`` (skipped when unset). One scratch index holds documents
with the shapes where the rules get subtle: objects in objects, arrays of objects and
arrays in arrays, keys with dots, empty objects and arrays, nulls, mixed arrays. Key
order is not compared: the engine's filtered ``_source`` comes out of a hash map.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterator
from typing import Any

import pytest

from bridge.search.filter_path import apply_filter_path
from bridge.search.source_filter import SourceSpec, filter_source, parse_source_spec, widen
from tests.indices import scratch_name

pytestmark = pytest.mark.engine

DOCS: dict[str, dict[str, Any]] = {
    "1": {
        "n": 1,
        "title": "Cross-encoders",
        "body": {"text": "rerank the top hits", "lang": "en", "meta": {"words": 4, "tags": ["ml", "ir"]}},
        "body.extra": "a dotted key",
        "a.b": "dotted a.b",
        "a": {"b": "nested a.b", "c": "nested a.c"},
        "comments": [
            {"author": "ann", "text": "nice", "votes": 1},
            {"author": "bob", "votes": 3},
            [{"author": "cy", "text": "array in array"}],
        ],
        "reviews": [{"stars": 5, "text": "great", "by": {"name": "dee"}}, {"stars": 1, "text": "meh"}],
        "tags": ["x", "y"],
        "mixed": ["plain", {"k": "v", "j": 2}, 7, {"j": 3}],
        "empty_obj": {},
        "empty_list": [],
        "nothing": None,
    },
    "2": {
        "n": 2,
        "title": "Only a title",
        "body": {"meta": {}},
        "reviews": [],
        "deep": {"l1": {"l2": {"l3": {"text": "deep text", "other": True}}}},
    },
    "3": {"n": 3, "a": {"b": {"c": "three levels"}}, "comments": [{"text": "solo"}], "tags": []},
}

# (body _source or None when absent, URL parameters)
SOURCE_CASES: list[tuple[Any, dict[str, str]]] = [
    (True, {}),
    (False, {}),
    ("title", {}),
    (["title", "body.text"], {}),
    ({"includes": ["body.*"]}, {}),
    ({"excludes": ["body.meta"]}, {}),
    ({"includes": ["comments.text", "reviews.*"], "excludes": ["reviews.stars"]}, {}),
    ({"includes": ["b*"], "excludes": ["*.tags"]}, {}),
    ({"include": "body", "exclude": "body.meta.*"}, {}),
    ({"excludes": ["*.author", "empty*.x", "reviews.by.name"]}, {}),
    (["*.text"], {}),
    ({"includes": ["empty_obj", "empty_list", "nothing", "tags"]}, {}),
    ({"includes": ["empty_obj.x", "empty_list.x", "tags.x"]}, {}),
    ({"includes": ["mixed.k"]}, {}),
    ({"includes": ["mixed"], "excludes": ["mixed.k"]}, {}),
    ({"excludes": ["mixed.j", "deep.l1.l2.l3.*"]}, {}),
    (["a.b"], {}),
    ({"excludes": ["a.b"]}, {}),
    ({"includes": ["a"], "excludes": ["a.b.c"]}, {}),
    (["deep.l1.l2.l3.text", "n"], {}),
    (None, {"_source": "false"}),
    (None, {"_source": "title,body.text"}),
    (None, {"_source_includes": "body", "_source_excludes": "body.meta"}),
    ({"includes": ["title"]}, {"_source_excludes": "comments,reviews"}),
    (False, {"_source": "true"}),
    (None, {"_source": "False"}),
    (None, {"_source": "a.b,tags"}),
    (None, {"_source": ""}),
    ("title", {"_source": "false", "_source_includes": "body"}),
    (None, {"_source": "title, n"}),
    (["*o*y.t*", "deep.*.l3"], {}),
    ({"excludes": ["*"]}, {}),
    ({"includes": ["reviews"], "excludes": ["reviews.*"]}, {}),
]

FILTER_PATHS = [
    "hits.hits._id",
    "hits.hits._source.title,hits.total.value",
    "-hits.hits._source",
    "-took,-_shards,-hits.hits._source.body.meta",
    "**.text",
    "hits.**.w*",
    "hits.hits._source.comments.author",
    "hits.hits._source.mixed.k",
    "-hits.hits._source.mixed.k",
    "hits.hits._source.a\\.b",
    "-hits.hits._source.empty_obj.x,-hits.hits._source.empty_list.x,-hits.hits._source.body.meta.x",
    "hits.hits.*score,hits.hits.sort",
    "hits.hits._source.tags.x",
    "-hits.hits._source.tags.x",
    "hits.hits._source,-hits.hits._source.body,-hits.hits._source.comments.votes",
    "hits.hits._source.comments",
    "-hits.hits._source.comments.author,-hits.hits._source.comments.votes,-hits.hits._source.comments.text",
    " hits.total , ,_shards.*ful ",
    "nothing.here",
    "*",
    "**",
    "**.took,**._id,**.n",
    "hits.hits._source.a.b",
    "-**._source,-**.total",
    "hits.hits._source.*.text",
    "hits.hits._source.deep.**",
    "hits.*.*.r*s.text",
    "-**.zzz",
    "hits.hits._source,-**.zzz",
]

PASSAGE_PATHS = ["body.text", "comments.text"]


@pytest.fixture(scope="module")
def engine() -> Iterator[tuple[Any, str]]:
    url = os.environ.get("OPENSEARCH_URL")
    if not url:
        pytest.skip("OPENSEARCH_URL is not set")
    from opensearchpy import OpenSearch

    client = OpenSearch(url, timeout=30)
    index = scratch_name("source-filter")
    client.indices.create(
        index=index,
        body={
            "settings": {"number_of_shards": 1, "number_of_replicas": 0},
            # dynamic: false keeps _source exactly as sent, mixed arrays included.
            "mappings": {
                "dynamic": False,
                "properties": {
                    "n": {"type": "integer"},
                    "title": {"type": "text"},
                    "reviews": {"type": "nested"},
                },
            },
        },
    )
    try:
        for doc_id, doc in DOCS.items():
            client.index(index=index, id=doc_id, body=doc)
        client.indices.refresh(index=index)
        yield client, index
    finally:
        client.indices.delete(index=index, ignore_unavailable=True)


def _search(engine: tuple[Any, str], body: dict[str, Any], params: dict[str, str]) -> dict[str, Any]:
    client, index = engine
    full = {"query": {"match_all": {}}, "sort": [{"n": "asc"}], **body}
    result: dict[str, Any] = client.transport.perform_request(
        "POST", f"/{index}/_search", params=params, body=full
    )
    return result


def _body_form(spec: SourceSpec) -> Any:
    """How the bridge would send a spec upstream (no empty arrays: newer engines reject them)."""
    if not spec.fetch:
        return False
    if spec.is_default:
        return True
    out: dict[str, list[str]] = {}
    if spec.includes:
        out["includes"] = list(spec.includes)
    if spec.excludes:
        out["excludes"] = list(spec.excludes)
    return out


@pytest.mark.parametrize(("body_value", "params"), SOURCE_CASES, ids=lambda v: repr(v))
def test_source_filtering_matches_engine(
    engine: tuple[Any, str], body_value: Any, params: dict[str, str]
) -> None:
    body = {} if body_value is None else {"_source": body_value}
    answer = _search(engine, body, params)
    client_spec = parse_source_spec(body_value, params)
    hits = answer["hits"]["hits"]
    assert [hit["_id"] for hit in hits] == list(DOCS)
    for hit in hits:
        expected = filter_source(DOCS[hit["_id"]], client_spec)
        if expected is None:
            assert "_source" not in hit
        else:
            assert hit["_source"] == expected, hit["_id"]

    # The bridge's own round trip: fetch the widened spec, restore the client's locally.
    wide = widen(client_spec, PASSAGE_PATHS)
    widened_hits = _search(engine, {"_source": _body_form(wide)}, {})["hits"]["hits"]
    for hit, widened in zip(hits, widened_hits, strict=True):
        assert filter_source(widened["_source"], client_spec) == hit.get("_source"), hit["_id"]


@pytest.mark.parametrize("filter_path", FILTER_PATHS)
def test_filter_path_matches_engine(engine: tuple[Any, str], filter_path: str) -> None:
    unfiltered = _search(engine, {}, {})
    filtered = _search(engine, {}, {"filter_path": filter_path})
    mine = apply_filter_path(copy.deepcopy(unfiltered), filter_path)
    # took is the only part that differs between the two calls.
    for answer in (filtered, mine):
        answer.pop("took", None)
    assert mine == filtered


@pytest.mark.parametrize("name", ["_source_include", "_source_exclude"])
def test_engine_rejects_pre_7_source_parameters(engine: tuple[Any, str], name: str) -> None:
    """Why accepting them in parse_source_spec is harmless: such a request never succeeds upstream."""
    from opensearchpy.exceptions import RequestError

    with pytest.raises(RequestError):
        _search(engine, {}, {name: "title"})
