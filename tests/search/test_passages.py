"""passage_text: one text per hit, whatever spelling the document used for a field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.search.passages import passage_text, source_values


def hit(source: Any = None, fields: Any = None) -> dict[str, Any]:
    out: dict[str, Any] = {"_id": "1"}
    if source is not None:
        out["_source"] = source
    if fields is not None:
        out["fields"] = fields
    return out


def test_plain_fields_in_order() -> None:
    h = hit({"title": "T", "body": "B", "other": "O"})
    assert passage_text(h, ["title", "body"], "\n") == "T\nB"
    assert passage_text(h, ["body", "title"], " | ") == "B | T"


def test_nested_path() -> None:
    assert passage_text(hit({"body": {"text": {"en": "deep"}}}), ["body.text.en"], " ") == "deep"


def test_dotted_key() -> None:
    assert passage_text(hit({"a.b": "x"}), ["a.b"], " ") == "x"
    assert passage_text(hit({"a": {"b.c": "y"}}), ["a.b.c"], " ") == "y"
    assert passage_text(hit({"a.b": {"c": "z"}}), ["a.b.c"], " ") == "z"


def test_both_spellings_nested_first() -> None:
    assert passage_text(hit({"a.b": "dotted", "a": {"b": "nested"}}), ["a.b"], ",") == "nested,dotted"


def test_lists_of_values_and_objects_flattened_in_order() -> None:
    source = {
        "tags": ["x", "y"],
        "comments": [
            {"text": "c1"},
            {"author": "no text"},
            {"text": ["c2", "c3"]},
            [{"text": "c4"}],
            "stray",
        ],
    }
    assert passage_text(hit(source), ["tags"], " ") == "x y"
    assert passage_text(hit(source), ["comments.text"], "/") == "c1/c2/c3/c4"


def test_object_value_gives_its_leaves() -> None:
    source = {"body": {"en": "hello", "de": "hallo", "meta": {"n": 2}}}
    assert passage_text(hit(source), ["body"], " ") == "hello hallo 2"


def test_values_stringified_and_nulls_skipped() -> None:
    source = {
        "n": 3,
        "f": 1.5,
        "yes": True,
        "no": False,
        "none": None,
        "blank": "  ",
        "empty": "",
        "list": [None, 1],
    }
    fields = ["n", "f", "yes", "no", "none", "blank", "empty", "list"]
    assert passage_text(hit(source), fields, " ") == "3 1.5 true false 1"


def test_fields_fallback_when_source_lacks_the_path() -> None:
    h = hit({"title": "T"}, {"body": ["from fields", 2], "title": ["not used"]})
    assert passage_text(h, ["title", "body"], "\n") == "T\nfrom fields\n2"


def test_fields_fallback_when_source_value_is_null_or_absent() -> None:
    assert passage_text(hit({"body": None}, {"body": ["F"]}), ["body"], " ") == "F"
    assert passage_text(hit(fields={"body": ["F"]}), ["body"], " ") == "F"
    assert passage_text(hit(fields={"body": "not a list"}), ["body"], " ") == "not a list"
    assert passage_text(hit(fields={"nested": [{"text": ["a"]}, {"text": ["b"]}]}), ["nested"], " ") == "a b"


def test_nothing_found() -> None:
    assert passage_text(hit({"title": "T"}), ["body"], " ") == ""
    assert passage_text(hit(), ["body"], " ") == ""
    assert passage_text(hit({"title": "T"}), [], " ") == ""


@pytest.mark.parametrize(
    "weird",
    [
        {"_source": "not an object"},
        {"_source": ["a", "b"]},
        {"_source": {"title": {"x": [None, {"y": None}]}}, "fields": None},
        {"fields": ["list instead of object"]},
        {},
    ],
)
def test_odd_hits_never_raise(weird: dict[str, Any]) -> None:
    assert passage_text(weird, ["title", "title.x.y", ""], " ") == ""


def test_odd_field_names() -> None:
    assert passage_text(hit({"": "empty key", "a": "A"}), ["", "a", "a.", ".a"], " ") == "A"


def test_source_values() -> None:
    assert source_values({"a": [{"b": 1}, {"b": [2, None]}]}, "a.b") == [1, 2]
    assert source_values({"a": 1}, "") == []
    assert source_values(None, "a") == []


_JSON = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=4)),
    lambda children: st.one_of(
        st.lists(children, max_size=3),
        st.dictionaries(st.sampled_from(["a", "b", "a.b"]), children, max_size=3),
    ),
    max_leaves=10,
)


@given(_JSON, _JSON, st.lists(st.sampled_from(["a", "b", "a.b", "a.b.a", "c"]), max_size=3))
def test_never_raises(source: Any, fields: Any, paths: list[str]) -> None:
    out = passage_text({"_source": source, "fields": fields}, paths, "\n")
    assert isinstance(out, str)


def test_a_stored_lone_surrogate_gives_a_passage_a_tokenizer_takes() -> None:
    # A document stored as {"title": "a \ud800 b"} comes back with that escape: one such document must not
    # make the tokenizer (which refuses unpaired surrogates) fail the whole page.
    text = passage_text(
        hit({"title": "a \ud800 b", "body": {"text": "\udc00x\U0001f600"}}), ["title", "body.text"], "\n"
    )
    assert text == "a \ufffd b\n\ufffdx\U0001f600"
    text.encode()
    assert passage_text(hit(fields={"title": ["\ud800"]}), ["title"], " ") == "\ufffd"


def test_lone_surrogates_reach_a_fast_tokenizer_as_text_it_takes(tiny_model: Path) -> None:
    # Rust tokenizers raise "TextInputSequence must be str" on an unpaired surrogate: one poisoned document
    # would fail every page it is on.
    from transformers import AutoTokenizer

    from bridge.search.query_text import extract_query_text

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    query = extract_query_text({"match": {"title": "wind \udc00"}})
    passage = passage_text(hit({"title": "wind \ud800 flow"}), ["title"], "\n")
    assert query is not None
    encoded = tokenizer([query], [passage])
    assert len(encoded["input_ids"][0]) > 4
