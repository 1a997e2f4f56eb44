"""JSON read and written as the engine (Jackson) does: the refusals, their wording, and what never fails.

The expected reasons and columns are the ones OpenSearch 2.19 answered for the same bytes
(``tests/search/test_engine_refusals.py`` checks them against the real engine).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

import pytest

from bridge.search.filter_path import apply_filter_path
from bridge.search.json_codec import (
    ENGINE_MAX_DEPTH,
    MAX_DEPTH,
    JSONRefused,
    dump_json,
    parse_answer,
    parse_json,
    scrub_surrogates,
)
from bridge.search.passages import passage_text
from bridge.search.query_text import extract_query_text
from bridge.search.source_filter import filter_source, parse_source_spec

_AT = (
    "\n at [Source: REDACTED (`StreamReadFeature.INCLUDE_SOURCE_IN_LOCATION` disabled); line: {}, column: {}]"
)


def _refusal(raw: bytes) -> JSONRefused:
    with pytest.raises(JSONRefused) as caught:
        parse_json(raw)
    return caught.value


def test_duplicate_keys_are_refused_with_the_engines_reason_and_byte_column() -> None:
    refused = _refusal(b'{"size":1,"size":2}')
    assert (refused.kind, refused.error_type, refused.status) == (
        "duplicate_key",
        "json_parse_exception",
        400,
    )
    assert refused.reason == "Duplicate field 'size'" + _AT.format(1, 17)
    # Jackson counts bytes, not characters: "éé" is four of them.
    nested = _refusal('{"query":{"match":{"title":"éé"}},"size":1,"size":2}'.encode())
    assert nested.reason == "Duplicate field 'size'" + _AT.format(1, 52)
    assert refused.relayable and nested.relayable


def test_the_first_duplicate_in_document_order_is_the_one_reported() -> None:
    # Python closes the inner object first; Jackson, streaming, meets the outer duplicate... after the inner one.
    refused = _refusal(b'{"a":{"c":1,"c":2},"a":1}')
    assert refused.reason == "Duplicate field 'c'" + _AT.format(1, 16)
    earlier = _refusal(b'{"a":1,\n"a":{"c":1,"c":2}}')
    assert earlier.reason == "Duplicate field 'a'" + _AT.format(2, 4)


def test_same_key_in_sibling_objects_is_not_a_duplicate() -> None:
    assert parse_json(b'{"a":{"k":1},"b":{"k":2},"c":[{"k":1},{"k":2}]}') == {
        "a": {"k": 1},
        "b": {"k": 2},
        "c": [{"k": 1}, {"k": 2}],
    }


@pytest.mark.parametrize(
    ("raw", "token", "column"),
    [
        (b'{"size":NaN}', "NaN", 12),
        (b'{"size":Infinity}', "Infinity", 17),
        (b'{"from":-Infinity}', "-Infinity", 18),
    ],
)
def test_non_numeric_literals_are_refused(raw: bytes, token: str, column: int) -> None:
    refused = _refusal(raw)
    assert refused.kind == "non_numeric"
    assert refused.reason == (
        f"Non-standard token '{token}': enable `JsonReadFeature.ALLOW_NON_NUMERIC_NUMBERS` to allow"
        + _AT.format(1, column)
    )


def test_out_of_range_numbers_are_read_as_the_engine_reads_them() -> None:
    # Jackson reads 1e400 as a double (infinite); only a field that wants an int refuses it.
    assert parse_json(b'{"gte":1e400,"lte":-1e400}') == {"gte": float("inf"), "lte": float("-inf")}


def test_invalid_utf8_is_refused_with_the_engines_wording() -> None:
    start = _refusal(b'{"query":{"match":{"title":"a\xffb"}}}')
    assert (start.kind, start.reason) == ("encoding", "Invalid UTF-8 start byte 0xff" + _AT.format(1, 31))
    middle = _refusal(b'{"query":{"match":{"title":"a\xe2\x82"}}}')
    assert middle.reason == "Invalid UTF-8 middle byte 0x22" + _AT.format(1, 33)


def test_raw_surrogate_bytes_escaped_surrogates_and_a_bom_are_accepted_as_jackson_does() -> None:
    assert parse_json(b'{"t":"a\xed\xa0\x80b"}') == {"t": "a\ud800b"}
    assert parse_json(b'{"t":"\\ud800","u":"\\udc00x"}') == {"t": "\ud800", "u": "\udc00x"}
    assert parse_json(b'\xef\xbb\xbf{"a":1}') == {"a": 1}


def test_syntax_errors_are_refused_and_may_go_to_the_engine_for_its_own_wording() -> None:
    refused = _refusal(b'{"a":1} x')
    assert (refused.kind, refused.relayable, refused.line, refused.column) == ("syntax", True, 1, 9)


def test_nesting_past_the_bound_is_refused_without_recursion_error() -> None:
    for depth in (MAX_DEPTH + 1, ENGINE_MAX_DEPTH, ENGINE_MAX_DEPTH + 1, 300_000):
        refused = _refusal(b"[" * depth + b"]" * depth)
        assert refused.kind == "depth"
        assert refused.error_type == "parsing_exception"
        # The bridge answers these itself: OpenSearch 2.19 dies of deep bool queries and template bodies.
        assert not refused.relayable
        assert refused.reason == (
            f"Document nesting depth ({MAX_DEPTH + 1}) exceeds the maximum allowed ({MAX_DEPTH}, from "
            "`StreamReadConstraints.getMaxNestingDepth()`)"
        )
    objects = MAX_DEPTH + 1
    assert _refusal(b'{"a":' * objects + b"1" + b"}" * objects).kind == "depth"


def test_engine_answers_are_read_without_the_client_checks_but_within_the_depth_bound() -> None:
    answer = b'{"hits": {"hits": [{"_source": {"t": "a \\ud800 b", "t": "last"}}]}, "x": NaN}'
    value = parse_answer(answer)
    assert value["hits"]["hits"][0]["_source"] == {"t": "last"}
    for depth in (MAX_DEPTH + 1, 300_000):
        with pytest.raises(JSONRefused) as refused:
            parse_answer(b"[" * depth + b"]" * depth)
        assert refused.value.kind == "depth"
    with pytest.raises(JSONRefused):
        parse_answer(b'{"hits": ')


def test_brackets_inside_strings_are_not_nesting() -> None:
    text = "[" * 5000 + '\\"{' * 10
    assert parse_json(json.dumps({"q": text}).encode()) == {"q": text}


def test_to_http_error_is_the_engines_error_shape() -> None:
    error = _refusal(b"[" * (ENGINE_MAX_DEPTH + 1)).to_http_error()
    assert (error.status, error.error_type) == (400, "parsing_exception")
    assert error.reason.startswith(f"Document nesting depth ({MAX_DEPTH + 1}) exceeds the maximum allowed")


def _with_stack_used(frames: int, work: Callable[[], Any]) -> Any:
    """Run ``work`` under ``frames`` extra Python frames: the aiohttp request path is that deep already."""
    if frames == 0:
        return work()
    return _with_stack_used(frames - 1, work)


def test_bodies_at_the_bound_survive_every_recursive_walk_downstream() -> None:
    depth = MAX_DEPTH - 5
    inner: Any = {"match": {"title": "usb charger"}}
    for _ in range((depth - 4) // 3):  # three levels each: {"bool": {"must": [...]}}
        inner = {"bool": {"must": [inner]}}
    raw = json.dumps({"query": inner, "_source": {"includes": ["title"]}}).encode()
    deep_hit: Any = "x"
    for _ in range(depth - 6):
        deep_hit = {"d": deep_hit}
    hit = {"_source": {"title": "t", "deep": deep_hit}}

    def walk_all() -> None:
        body = parse_json(raw)
        extract_query_text(body["query"])
        spec = parse_source_spec(body["_source"], {})
        filter_source(hit["_source"], spec)
        passage_text(hit, ["deep", "title"], "\n")
        apply_filter_path({"hits": {"hits": [hit]}}, "hits.hits._source")
        parse_json(dump_json({"hits": {"hits": [hit]}}))
        dump_json(body, pretty=True)

    margin = sys.getrecursionlimit() - MAX_DEPTH * 2 - 100
    _with_stack_used(max(margin, 0), walk_all)


def test_lone_surrogates_are_written_as_jackson_escapes_and_everything_else_as_utf8() -> None:
    written = dump_json({"a": "x\ud800y", "b": "\udc00", "emoji": "\U0001f600", "é": "é"})
    assert written == b'{"a":"x\\uD800y","b":"\\uDC00","emoji":"\xf0\x9f\x98\x80","\xc3\xa9":"\xc3\xa9"}'
    assert parse_json(written) == {"a": "x\ud800y", "b": "\udc00", "emoji": "\U0001f600", "é": "é"}


def test_non_finite_floats_are_written_as_the_engine_writes_them() -> None:
    value = {"a": float("inf"), "b": [float("-inf"), {"c": float("nan")}], "d": 1.5}
    assert dump_json(value) == b'{"a":"Infinity","b":["-Infinity",{"c":"NaN"}],"d":1.5}'
    assert value["a"] == float("inf")  # the caller's value is left alone
    # In a body the engine reads, 1e400 stays the literal Jackson reads back as the same double.
    assert (
        dump_json({"gte": float("inf"), "lte": float("-inf")}, request=True) == b'{"gte":1e400,"lte":-1e400}'
    )
    assert parse_json(dump_json(parse_json(b'{"gte":1e400}'), request=True)) == {"gte": float("inf")}


def test_pretty_output_ends_with_a_newline_as_before() -> None:
    assert dump_json({"a": [1]}, pretty=True) == b'{\n  "a": [\n    1\n  ]\n}\n'


def test_scrub_surrogates_makes_text_a_tokenizer_takes() -> None:
    assert scrub_surrogates("a\ud800b\udfff") == "a\ufffdb\ufffd"
    assert scrub_surrogates("plain \U0001f600") == "plain \U0001f600"
    scrub_surrogates("a\ud800").encode()  # valid UTF-8 now
