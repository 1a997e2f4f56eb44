"""_source parsing, filtering and widening: the engine's rules, case by case and by property."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.search.passages import source_values
from bridge.search.source_filter import SourceSpec, filter_source, parse_source_spec, widen

DOC: dict[str, Any] = {
    "title": "Rerank bridge",
    "body": {"text": "long text", "lang": "en", "meta": {"words": 2, "tags": ["a", "b"]}},
    "body.extra": "dotted key",
    "comments": [
        {"author": "ann", "text": "nice"},
        {"author": "bob", "votes": 3},
        "loose string",
        [{"author": "cy", "text": "nested array"}, 7],
    ],
    "tags": ["x", "y"],
    "empty_obj": {},
    "empty_list": [],
    "nothing": None,
}


# --------------------------------------------------------------------------- SourceSpec


def test_default_spec() -> None:
    assert SourceSpec().is_default
    assert not SourceSpec(fetch=False).is_default
    assert not SourceSpec(includes=("a",)).is_default
    assert not SourceSpec(excludes=("a",)).is_default


# --------------------------------------------------------------------------- parsing


@pytest.mark.parametrize(
    ("body_value", "expected"),
    [
        (None, SourceSpec()),
        (True, SourceSpec()),
        (False, SourceSpec(fetch=False)),
        ("title", SourceSpec(includes=("title",))),
        ("", SourceSpec(includes=("",))),
        (["title", "body.*"], SourceSpec(includes=("title", "body.*"))),
        (["a", "a", "b"], SourceSpec(includes=("a", "b"))),
        ({}, SourceSpec()),
        ({"includes": ["a"], "excludes": ["b", "c"]}, SourceSpec(includes=("a",), excludes=("b", "c"))),
        ({"includes": "a", "excludes": "b"}, SourceSpec(includes=("a",), excludes=("b",))),
        ({"include": ["a"], "exclude": "b"}, SourceSpec(includes=("a",), excludes=("b",))),
        ({"excludes": []}, SourceSpec()),
        ({"includes": ["a"], "include": ["b"]}, SourceSpec(includes=("b",))),
        # Malformed: never raise, keep what is usable.
        ({"includes": ["a", 1, None]}, SourceSpec(includes=("a",))),
        ({"includes": 5}, SourceSpec()),
        ({"unknown": ["a"]}, SourceSpec()),
        (42, SourceSpec()),
        ([1, 2], SourceSpec()),
    ],
)
def test_body_forms(body_value: Any, expected: SourceSpec) -> None:
    assert parse_source_spec(body_value, {}) == expected


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"_source": "true"}, SourceSpec()),
        ({"_source": "false"}, SourceSpec(fetch=False)),
        ({"_source": "title,body.text"}, SourceSpec(includes=("title", "body.text"))),
        # Only the exact words are booleans; the rest is an include list.
        ({"_source": "False"}, SourceSpec(includes=("False",))),
        ({"_source": "1"}, SourceSpec(includes=("1",))),
        # Java's String.split: no trimming, trailing empties dropped, inner ones kept.
        ({"_source": "a, b,,c,,"}, SourceSpec(includes=("a", " b", "", "c"))),
        ({"_source": ""}, SourceSpec()),
        ({"_source_includes": "a,b"}, SourceSpec(includes=("a", "b"))),
        ({"_source_excludes": "b"}, SourceSpec(excludes=("b",))),
        ({"_source": "a", "_source_includes": "b"}, SourceSpec(includes=("b",))),
        ({"_source": "false", "_source_includes": "b"}, SourceSpec(fetch=False, includes=("b",))),
        ({"_source": "true", "_source_excludes": "b"}, SourceSpec(excludes=("b",))),
        ({"_source_include": "a", "_source_exclude": "b"}, SourceSpec(includes=("a",), excludes=("b",))),
        ({"_source_includes": "a", "_source_include": "z"}, SourceSpec(includes=("a",))),
    ],
)
def test_url_forms(params: dict[str, str], expected: SourceSpec) -> None:
    assert parse_source_spec(None, params) == expected


def test_url_replaces_body_wholesale() -> None:
    body = {"includes": ["title"], "excludes": ["body"]}
    assert parse_source_spec(body, {"_source_excludes": "tags"}) == SourceSpec(excludes=("tags",))
    assert parse_source_spec(False, {"_source": "true"}) == SourceSpec()
    assert parse_source_spec(["a"], {"size": "3"}) == SourceSpec(includes=("a",))


# --------------------------------------------------------------------------- filtering


def spec(includes: tuple[str, ...] = (), excludes: tuple[str, ...] = ()) -> SourceSpec:
    return SourceSpec(includes=includes, excludes=excludes)


def test_fetch_false_gives_none() -> None:
    assert filter_source(DOC, SourceSpec(fetch=False)) is None
    assert filter_source(DOC, SourceSpec(fetch=False, includes=("title",))) is None


def test_default_is_a_copy_of_everything() -> None:
    out = filter_source(DOC, SourceSpec())
    assert out == DOC
    assert out is not DOC


@pytest.mark.parametrize(
    ("includes", "excludes", "expected"),
    [
        (("title",), (), {"title": "Rerank bridge"}),
        # An object path keeps the whole object, and dotted keys below it.
        (("body",), (), {"body": DOC["body"], "body.extra": "dotted key"}),
        (("body.text",), (), {"body": {"text": "long text"}}),
        (("body.extra",), (), {"body.extra": "dotted key"}),
        (("body.meta.words",), (), {"body": {"meta": {"words": 2}}}),
        # "*" matches across dots.
        (("b*t",), (), {"body": {"text": "long text"}}),
        (("b*a",), (), {"body": {"meta": DOC["body"]["meta"]}, "body.extra": "dotted key"}),
        (("*.words",), (), {"body": {"meta": {"words": 2}}}),
        (("ti*",), (), {"title": "Rerank bridge"}),
        (("*tle",), (), {"title": "Rerank bridge"}),
        # No partial-name matches without a wildcard.
        (("tit",), (), {}),
        (("body.tex",), (), {}),
        # Arrays of objects are filtered element-wise; empty elements and plain values go.
        (
            ("comments.text",),
            (),
            {"comments": [{"text": "nice"}, [{"text": "nested array"}]]},
        ),
        (("comments.votes",), (), {"comments": [{"votes": 3}]}),
        (("comments.nope",), (), {}),
        (("tags",), (), {"tags": ["x", "y"]}),
        (("tags.x",), (), {}),
        # Included empty containers stay; walked-through ones do not.
        (("empty_obj", "empty_list"), (), {"empty_obj": {}, "empty_list": []}),
        (("empty_obj.x", "empty_list.x"), (), {}),
        (("nothing",), (), {"nothing": None}),
        # Excludes.
        ((), ("body",), {k: v for k, v in DOC.items() if k not in ("body", "body.extra")}),
        ((), ("comments", "tags", "body*", "empty_*", "nothing"), {"title": "Rerank bridge"}),
        ((), ("*",), {}),
        # An exclude below an included object: what is left stays, even when empty.
        (
            ("body",),
            ("body.meta", "body.lang"),
            {"body": {"text": "long text"}, "body.extra": "dotted key"},
        ),
        (("body.meta",), ("body.meta.*",), {"body": {"meta": {}}}),
        # Excludes inside arrays remove keys of elements, never plain values.
        (
            ("comments",),
            ("comments.author",),
            {"comments": [{"text": "nice"}, {"votes": 3}, "loose string", [{"text": "nested array"}, 7]]},
        ),
        (
            ("comments",),
            ("comments.author", "comments.votes"),
            {"comments": [{"text": "nice"}, "loose string", [{"text": "nested array"}, 7]]},
        ),
        (("tags",), ("tags.*",), {"tags": ["x", "y"]}),
        # Exclude wins over include of the same path.
        (("title", "tags"), ("title",), {"tags": ["x", "y"]}),
        # Only excludes: every object stays, emptied or not.
        ((), ("body.*",), {**{k: v for k, v in DOC.items() if k != "body.extra"}, "body": {}}),
    ],
)
def test_filtering(includes: tuple[str, ...], excludes: tuple[str, ...], expected: dict[str, Any]) -> None:
    assert filter_source(DOC, spec(includes, excludes)) == expected


def test_only_excludes_keep_emptied_objects() -> None:
    doc = {"a": {"b": 1}, "c": [{"b": 2}], "d": 1}
    assert filter_source(doc, spec(excludes=("a.b", "c.b"))) == {"a": {}, "c": [], "d": 1}


def test_key_order_follows_the_document() -> None:
    doc = {"z": 1, "a": {"y": 1, "b": 2, "x": 3}, "m": 4}
    out = filter_source(doc, spec(("m", "a.x", "a.y", "z")))
    assert out is not None
    assert list(out) == ["z", "a", "m"]
    assert list(out["a"]) == ["y", "x"]


def test_both_spellings_of_a_dotted_field() -> None:
    doc = {"a": {"b": 1, "c": 2}, "a.b": 3, "a.c": 4}
    assert filter_source(doc, spec(("a.b",))) == {"a": {"b": 1}, "a.b": 3}
    assert filter_source(doc, spec(excludes=("a.b",))) == {"a": {"c": 2}, "a.c": 4}


def test_multiple_wildcards_and_literal_specials() -> None:
    doc = {"a+b": 1, "a?b": 2, "x": {"y.z": {"w": 3}}, "xyz": 4}
    assert filter_source(doc, spec(("a?b",))) == {"a?b": 2}  # "?" is not a wildcard
    assert filter_source(doc, spec(("*y*z*",))) == {"x": {"y.z": {"w": 3}}, "xyz": 4}
    assert filter_source(doc, spec(("x.y.z.w",))) == {"x": {"y.z": {"w": 3}}}


def test_empty_pattern_selects_nothing() -> None:
    assert filter_source(DOC, spec(("",))) == {}


def test_values_are_shared_not_copied() -> None:
    out = filter_source(DOC, spec(("body",)))
    assert out is not None
    assert out["body"] is DOC["body"]


# --------------------------------------------------------------------------- widening


@pytest.mark.parametrize(
    ("client", "paths", "expected"),
    [
        (SourceSpec(), ["body.text"], SourceSpec()),
        (SourceSpec(includes=("title",)), [], SourceSpec(includes=("title",))),
        (SourceSpec(fetch=False), ["body.text", "title"], SourceSpec(includes=("body.text", "title"))),
        (SourceSpec(includes=("title",)), ["body.text"], SourceSpec(includes=("title", "body.text"))),
        (SourceSpec(includes=("title",)), ["title"], SourceSpec(includes=("title",))),
        # Excludes that cannot reach the paths stay; those that can go.
        (SourceSpec(excludes=("embedding",)), ["body.text"], SourceSpec(excludes=("embedding",))),
        (SourceSpec(excludes=("body",)), ["body.text"], SourceSpec()),
        (SourceSpec(excludes=("body.text.raw",)), ["body.text"], SourceSpec()),
        (SourceSpec(excludes=("b*",)), ["body.text"], SourceSpec()),
        (SourceSpec(excludes=("bodies",)), ["body.text"], SourceSpec(excludes=("bodies",))),
        (
            SourceSpec(includes=("t*",), excludes=("title", "vec*")),
            ["title"],
            SourceSpec(includes=("t*", "title"), excludes=("vec*",)),
        ),
        # An exclude equal to an include would be rejected by the engine in a body.
        (SourceSpec(includes=("a", "x"), excludes=("a",)), ["x"], SourceSpec(includes=("a", "x"))),
    ],
)
def test_widen(client: SourceSpec, paths: list[str], expected: SourceSpec) -> None:
    assert widen(client, paths) == expected


# --------------------------------------------------------------------------- properties

_KEYS = st.sampled_from(["a", "b", "ab", "a.b", "c"])
_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.sampled_from(["s", "t"]))
_DOCS = st.recursive(
    _SCALARS,
    lambda children: st.one_of(st.lists(children, max_size=3), st.dictionaries(_KEYS, children, max_size=4)),
    max_leaves=12,
)
_SOURCES = st.dictionaries(_KEYS, _DOCS, max_size=5)
_PATTERNS = st.lists(
    st.sampled_from(["a", "b", "ab", "c", "a.b", "a.a", "b.a", "*", "a*", "*b", "a.*", "*.b", "a.b.c"]),
    max_size=3,
    unique=True,
).map(tuple)
_PATHS = st.lists(st.sampled_from(["a", "b", "a.b", "c.a", "ab", "b.b.a"]), min_size=1, max_size=2)


@given(_SOURCES)
def test_star_include_is_identity(source: dict[str, Any]) -> None:
    assert filter_source(source, spec(("*",))) == source


@given(_SOURCES, _PATTERNS, _PATTERNS)
def test_filtering_is_idempotent(
    source: dict[str, Any], includes: tuple[str, ...], excludes: tuple[str, ...]
) -> None:
    once = filter_source(source, spec(includes, excludes))
    assert once is not None
    assert filter_source(once, spec(includes, excludes)) == once


@settings(max_examples=300)
@given(_SOURCES, st.booleans(), _PATTERNS, _PATTERNS, _PATHS)
def test_widened_fetch_restores_exactly_and_keeps_passages(
    source: dict[str, Any],
    fetch: bool,
    includes: tuple[str, ...],
    excludes: tuple[str, ...],
    paths: list[str],
) -> None:
    client = SourceSpec(fetch=fetch, includes=includes, excludes=excludes)
    upstream = widen(client, paths)
    fetched = filter_source(source, upstream)
    assert fetched is not None  # the bridge always gets a source to read passages from
    assert filter_source(fetched, client) == filter_source(source, client)
    for path in paths:
        assert source_values(fetched, path) == source_values(source, path)
