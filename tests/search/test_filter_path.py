"""filter_path: OpenSearch's response filtering, on a search response shaped like the engine's."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.search.filter_path import apply_filter_path, parse_filter_path

RESPONSE: dict[str, Any] = {
    "took": 5,
    "timed_out": False,
    "_shards": {"total": 1, "successful": 1, "skipped": 0, "failed": 0},
    "hits": {
        "total": {"value": 2, "relation": "eq"},
        "max_score": 1.5,
        "hits": [
            {
                "_index": "idx",
                "_id": "1",
                "_score": 1.5,
                "_source": {
                    "title": "one",
                    "a.b": "dotted",
                    "a": {"b": "nested"},
                    "tags": ["x", "y"],
                    "comments": [{"author": "ann", "text": "hi"}, {"author": "bob"}],
                    "empty": {},
                    "none": [],
                },
            },
            {"_index": "idx", "_id": "2", "_score": 0.5, "_source": {"title": "two"}},
        ],
    },
}


def hits_with(**fields: Any) -> dict[str, Any]:
    return {"hits": {"hits": [fields.get("first", {}), fields.get("second", {})]}}


def test_parse() -> None:
    includes, excludes = parse_filter_path(" a.b , -c.*, ,-, d\\.e.f,a.b")
    assert includes == (("a", "b"), ("d.e", "f"))
    assert excludes == (("c", "*"),)


@pytest.mark.parametrize(
    ("filter_path", "expected"),
    [
        ("took", {"took": 5}),
        ("took,timed_out", {"took": 5, "timed_out": False}),
        ("hits.total.value", {"hits": {"total": {"value": 2}}}),
        ("hits.hits._id", {"hits": {"hits": [{"_id": "1"}, {"_id": "2"}]}}),
        (
            "hits.hits._source.title",
            {"hits": {"hits": [{"_source": {"title": "one"}}, {"_source": {"title": "two"}}]}},
        ),
        # Arrays are transparent and elements with nothing left vanish.
        (
            "hits.hits._source.comments.text",
            {"hits": {"hits": [{"_source": {"comments": [{"text": "hi"}]}}]}},
        ),
        # A name with a dot needs the escape; unescaped, the path walks objects.
        ("hits.hits._source.a\\.b", {"hits": {"hits": [{"_source": {"a.b": "dotted"}}]}}),
        ("hits.hits._source.a.b", {"hits": {"hits": [{"_source": {"a": {"b": "nested"}}}]}}),
        # Globs within one name.
        ("_shards.*ful", {"_shards": {"successful": 1}}),
        (
            "hits.hits._s*",
            {
                "hits": {
                    "hits": [
                        {"_score": 1.5, "_source": RESPONSE["hits"]["hits"][0]["_source"]},
                        {"_score": 0.5, "_source": {"title": "two"}},
                    ]
                }
            },
        ),
        ("*", RESPONSE),
        ("**", RESPONSE),
        # "**" spans one or more levels, never zero.
        ("**.total", {"_shards": {"total": 1}, "hits": {"total": {"value": 2, "relation": "eq"}}}),
        ("**.took", {}),
        (
            "hits.**.author",
            {"hits": {"hits": [{"_source": {"comments": [{"author": "ann"}, {"author": "bob"}]}}]}},
        ),
        # Plain values in an array on the way to a deeper path are dropped.
        ("hits.hits._source.tags.x", {}),
        # Empty containers: kept when matched, dropped when only walked through.
        ("hits.hits._source.empty", {"hits": {"hits": [{"_source": {"empty": {}}}]}}),
        ("hits.hits._source.empty.x", {}),
        # Nothing matched gives an empty object, not nothing.
        ("nope", {}),
        ("", RESPONSE),
        (" , ", RESPONSE),
    ],
)
def test_includes(filter_path: str, expected: dict[str, Any]) -> None:
    assert apply_filter_path(RESPONSE, filter_path) == expected


def test_exclusions_only() -> None:
    out = apply_filter_path(RESPONSE, "-took,-_shards,-hits.hits._source")
    assert out == {
        "timed_out": False,
        "hits": {
            "total": {"value": 2, "relation": "eq"},
            "max_score": 1.5,
            "hits": [
                {"_index": "idx", "_id": "1", "_score": 1.5},
                {"_index": "idx", "_id": "2", "_score": 0.5},
            ],
        },
    }


def test_exclusion_keeps_plain_values_and_drops_emptied_containers() -> None:
    doc = {"a": {"x": 1}, "b": [{"x": 1}, 2, [{"x": 3}]], "c": {}, "d": [], "e": 5, "f": {"x": 1, "y": 2}}
    out = apply_filter_path(doc, "-a.x,-b.x,-c.x,-d.x,-e.x,-f.x")
    # a lost its only key; b keeps its plain value; c and d were empty on the way: gone.
    assert out == {"b": [2], "e": 5, "f": {"y": 2}}


def test_includes_then_exclusions() -> None:
    out = apply_filter_path(RESPONSE, "hits.hits._source,-hits.hits._source.comments,-hits.hits._source.a*")
    dropped = ("comments", "a", "a.b")
    source_one = {k: v for k, v in RESPONSE["hits"]["hits"][0]["_source"].items() if k not in dropped}
    assert out == {"hits": {"hits": [{"_source": source_one}, {"_source": {"title": "two"}}]}}


def test_double_star_exclusion_drops_every_empty_container() -> None:
    """Checked on OpenSearch 2.19: "**" walks into everything, and walked-through
    containers with nothing left are not written, so ``-**.x`` removes all empty ones."""
    doc = {"t": "a", "e": {}, "l": [], "o": {"e2": {}}, "m": [{}, 1]}
    assert apply_filter_path(doc, "-**.zzz") == {"t": "a", "m": [1]}
    assert apply_filter_path(doc, "-zzz") == doc


def test_exclusion_wins_over_longer_include() -> None:
    assert apply_filter_path(RESPONSE, "hits.total.value,-hits.total") == {}


def test_first_full_match_wins_among_entries() -> None:
    # "hits.total" fully matches even though "hits.total.value" only partially does.
    assert apply_filter_path(RESPONSE, "hits.total.value,hits.total") == {
        "hits": {"total": RESPONSE["hits"]["total"]}
    }


def test_backslash_quirk_turns_any_escaped_char_into_a_dot() -> None:
    assert parse_filter_path("a\\xb")[0] == (("a.b",),)


def test_top_level_array_and_scalar() -> None:
    rows = [{"index": "a", "health": "green"}, {"index": "b"}, 3]
    assert apply_filter_path(rows, "health") == [{"health": "green"}]
    assert apply_filter_path(rows, "nope") == []
    assert apply_filter_path(rows, "-health") == [{"index": "a"}, {"index": "b"}, 3]
    assert apply_filter_path("text", "a") == "text"


def test_input_is_not_modified() -> None:
    before = copy.deepcopy(RESPONSE)
    apply_filter_path(RESPONSE, "hits.hits._id,-hits.total")
    apply_filter_path(RESPONSE, "-hits.hits._source.comments.author")
    assert before == RESPONSE


def test_null_values_survive() -> None:
    assert apply_filter_path({"a": None, "b": {"c": None}}, "a,b.c") == {"a": None, "b": {"c": None}}


_JSON = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-3, 3), st.sampled_from(["s", "t"])),
    lambda children: st.one_of(
        st.lists(children, max_size=3), st.dictionaries(st.sampled_from("abc"), children, max_size=3)
    ),
    max_leaves=10,
)
_FILTERS = st.lists(
    st.sampled_from(["a", "b.c", "*", "**", "a.*", "**.c", "-a", "-b.c", "-**.a", "x*", "-*.b"]), max_size=4
).map(",".join)


@given(st.dictionaries(st.sampled_from("abc"), _JSON, max_size=4), _FILTERS)
def test_never_raises_and_top_object_survives(doc: dict[str, Any], filter_path: str) -> None:
    out = apply_filter_path(doc, filter_path)
    assert isinstance(out, dict)
    assert apply_filter_path(out, filter_path) == out  # filtering twice changes nothing more


@given(st.dictionaries(st.sampled_from("abc"), _JSON, max_size=4))
def test_double_star_keeps_everything(doc: dict[str, Any]) -> None:
    assert apply_filter_path(doc, "**") == doc
