"""extract_query_text / query_text_from_uri: what the user typed, out of query DSL and Lucene syntax."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.search.query_text import clean_lucene_query, extract_query_text, query_text_from_uri

DASHBOARDS_REQUESTS = (
    Path(__file__).resolve().parents[2] / ".." / "shared" / "compat" / "dashboards-requests.json"
)


# --------------------------------------------------------------------------- full-text clauses


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({"match": {"title": "wireless headphones"}}, "wireless headphones"),
        ({"match": {"title": {"query": "wireless headphones", "operator": "and"}}}, "wireless headphones"),
        ({"match_phrase": {"title": "usb c"}}, "usb c"),
        ({"match_phrase": {"title": {"query": "usb c", "slop": 2}}}, "usb c"),
        ({"match_phrase_prefix": {"title": "quick brown f"}}, "quick brown f"),
        ({"match_bool_prefix": {"title": {"query": "quick brown f"}}}, "quick brown f"),
        ({"multi_match": {"query": "usb c charger", "fields": ["title^3", "description"]}}, "usb c charger"),
        (
            {"combined_fields": {"query": "database systems", "fields": ["title", "abstract"]}},
            "database systems",
        ),
        ({"query_string": {"query": "title:(quick OR brown) AND -fox"}}, "quick brown"),
        (
            {"simple_query_string": {"query": '"fried eggs" +(eggplant | potato) -frittata'}},
            "fried eggs eggplant potato",
        ),
        # Numbers and booleans as the user would have typed them.
        ({"match": {"response": 503}}, "503"),
        ({"match": {"price": {"query": 9.5}}}, "9.5"),
        ({"match": {"flag": True}}, "true"),
        ({"multi_match": {"query": 42}}, "42"),
        ({"query_string": {"query": 404}}, "404"),
        # Whitespace normalised.
        ({"match": {"title": "  spaced \n out  "}}, "spaced out"),
    ],
)
def test_full_text_clauses(query: dict[str, Any], expected: str) -> None:
    assert extract_query_text(query) == expected


def test_intervals() -> None:
    query = {
        "intervals": {
            "body": {
                "all_of": {
                    "ordered": True,
                    "intervals": [
                        {"match": {"query": "my favorite food", "max_gaps": 0}},
                        {
                            "any_of": {
                                "intervals": [
                                    {"match": {"query": "hot water"}},
                                    {"prefix": {"prefix": "col"}},
                                ]
                            }
                        },
                        {"wildcard": {"pattern": "co*"}},
                    ],
                }
            }
        }
    }
    assert extract_query_text(query) == "my favorite food hot water"
    assert extract_query_text({"intervals": {"body": {"match": {"query": 7}}}}) == "7"


@pytest.mark.parametrize(
    "query",
    [
        {"term": {"status": "published"}},
        {"terms": {"tags": ["a", "b"]}},
        {"range": {"price": {"gte": 10}}},
        {"exists": {"field": "title"}},
        {"match_all": {}},
        {"match_none": {}},
        {"ids": {"values": ["1"]}},
        {"wildcard": {"title": "qu*ck"}},
        {"prefix": {"title": "qu"}},
        {"regexp": {"title": "qu.*"}},
        {"fuzzy": {"title": "quikc"}},
        {"knn": {"vector": {"vector": [1, 2], "k": 3}}},
        {},
        None,
        {"bool": {}},
        {"bool": {"must": [], "filter": [], "should": [], "must_not": []}},
    ],
)
def test_no_typed_text(query: Any) -> None:
    assert extract_query_text(query) is None


# --------------------------------------------------------------------------- compound clauses


def test_bool_walks_must_should_filter_not_must_not() -> None:
    query = {
        "bool": {
            "must": [{"match": {"title": "alpha"}}],
            "should": {"match_phrase": {"body": "beta gamma"}},
            "filter": [{"term": {"lang": "en"}}, {"multi_match": {"query": "delta"}}],
            "must_not": [{"match": {"title": "omega"}}],
        }
    }
    assert extract_query_text(query) == "alpha beta gamma delta"


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        (
            {"dis_max": {"queries": [{"match": {"a": "one"}}, {"match": {"b": "two"}}], "tie_breaker": 0.7}},
            "one two",
        ),
        ({"constant_score": {"filter": {"match": {"a": "cs"}}, "boost": 1.2}}, "cs"),
        ({"function_score": {"query": {"match": {"a": "fs"}}, "functions": [{"weight": 2}]}}, "fs"),
        ({"script_score": {"query": {"match": {"a": "ss"}}, "script": {"source": "1"}}}, "ss"),
        (
            {
                "boosting": {
                    "positive": {"match": {"a": "good"}},
                    "negative": {"match": {"a": "bad"}},
                    "negative_boost": 0.5,
                }
            },
            "good",
        ),
        ({"nested": {"path": "comments", "query": {"match": {"comments.text": "nested"}}}}, "nested"),
        ({"has_child": {"type": "answer", "query": {"match": {"body": "child"}}}}, "child"),
        ({"has_parent": {"parent_type": "question", "query": {"match": {"body": "parent"}}}}, "parent"),
        (
            {
                "hybrid": {
                    "queries": [{"match": {"a": "lexical"}}, {"neural": {"emb": {"query_text": "semantic"}}}]
                }
            },
            "lexical semantic",
        ),
        (
            {
                "function_score": {
                    "query": {
                        "bool": {"must": {"nested": {"path": "p", "query": {"match": {"p.t": "deep"}}}}}
                    }
                }
            },
            "deep",
        ),
    ],
)
def test_compound_clauses(query: dict[str, Any], expected: str) -> None:
    assert extract_query_text(query) == expected


def test_texts_deduplicated_in_order() -> None:
    query = {
        "bool": {
            "should": [
                {"match": {"title": "laptop"}},
                {"match_phrase": {"body": "laptop"}},
                {"match": {"body": "gaming"}},
                {"multi_match": {"query": "laptop"}},
            ]
        }
    }
    assert extract_query_text(query) == "laptop gaming"


def test_several_fields_in_one_match_clause() -> None:
    assert extract_query_text({"match": {"a": "x", "b": {"query": "y"}}}) == "x y"


# --------------------------------------------------------------------------- Dashboards shapes


def test_dql_free_text() -> None:
    query = {
        "bool": {"filter": [{"multi_match": {"type": "best_fields", "query": "foo bar", "lenient": True}}]}
    }
    assert extract_query_text(query) == "foo bar"


def test_dql_field_value() -> None:
    query = {"bool": {"should": [{"match": {"field": "value"}}], "minimum_should_match": 1}}
    assert extract_query_text(query) == "value"


# --------------------------------------------------------------------------- malformed


@pytest.mark.parametrize(
    "query",
    [
        {"match": ["not", "a", "dict"]},
        {"match": {"title": ["list", "value"]}},
        {"match": {"title": {"no_query": "x"}}},
        {"match": {"title": None}},
        {"multi_match": "string instead of object"},
        {"multi_match": {"query": {"nested": "object"}}},
        {"bool": [{"match": {"a": "x"}}]},
        {"bool": {"must": "string"}},
        {"bool": {"must": [None, 3, "x", []]}},
        {"query_string": {"query": None}},
        {"query_string": {"query": ["a"]}},
        {"intervals": {"body": ["x"]}},
        {"intervals": {"body": {"all_of": {"intervals": "x"}}}},
        {"nested": {"query": [{"match": {"a": "x"}}]}},
        ["not", "a", "mapping"],
        "match_all",
        42,
    ],
)
def test_malformed_never_raises(query: Any) -> None:
    result = extract_query_text(query)
    assert result is None or (isinstance(result, str) and result)


def test_malformed_keeps_what_can_be_found() -> None:
    query = {"bool": {"must": [None, {"match": {"a": "found"}}, {"match": 5}], "should": "junk"}}
    assert extract_query_text(query) == "found"
    assert extract_query_text({"nested": {"query": [{"match": {"a": "x"}}]}}) == "x"


def test_deep_nesting_is_bounded() -> None:
    query: dict[str, Any] = {"match": {"a": "bottom"}}
    for _ in range(5000):
        query = {"bool": {"must": [query]}}
    assert extract_query_text(query) is None  # past any real query's depth: given up, not crashed


_JSON = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=8)),
    lambda children: st.one_of(
        st.lists(children, max_size=3),
        st.dictionaries(
            st.one_of(
                st.sampled_from(
                    [
                        "bool",
                        "must",
                        "should",
                        "filter",
                        "must_not",
                        "match",
                        "query",
                        "multi_match",
                        "query_string",
                        "simple_query_string",
                        "intervals",
                        "all_of",
                        "intervals",
                        "nested",
                        "dis_max",
                        "queries",
                        "boosting",
                        "positive",
                        "match_phrase",
                        "field",
                    ]
                ),
                st.text(max_size=3),
            ),
            children,
            max_size=4,
        ),
    ),
    max_leaves=20,
)


@settings(max_examples=300)
@given(_JSON)
def test_never_raises_on_arbitrary_json(query: Any) -> None:
    result = extract_query_text(query)
    assert result is None or (isinstance(result, str) and result.strip() == result and result)


# --------------------------------------------------------------------------- Lucene cleaning


@pytest.mark.parametrize(
    ("q", "expected"),
    [
        ("wireless headphones", "wireless headphones"),
        ("response:503 AND extension:php", "503 php"),
        ("title:quick OR body:brown", "quick brown"),
        ("quick && brown || fox", "quick brown fox"),
        # Negated terms and groups are what the user does not want.
        ("quick -brown !fox NOT dog cat", "quick cat"),
        ("quick NOT (brown fox) dog", "quick dog"),
        ("+quick +brown", "quick brown"),
        ("title:(quick brown)^2 fox", "quick brown fox"),
        ('title:"quick brown"~3 fox', "quick brown fox"),
        ('"quick \\"brown\\" fox"', 'quick "brown" fox'),
        ("quick^2 brown^0.5 fox~ dog~1 cat~0.8", "quick brown fox dog cat"),
        ("price:[10 TO 20] cheap", "cheap"),
        ("date:{2020-01-01 TO *] recent", "recent"),
        ('name:["a b" TO "c]d"] ok', "ok"),
        ("age:>=10 old age:<5", "old"),
        ("qu*ck bro?n", "qu ck bro n"),
        ("micro*", "micro"),
        ("name:/joh?n(ath[oa]n)/ jonathan", "jonathan"),
        ("_exists_:title lonely", "lonely"),
        ("C\\+\\+ \\(language\\)", "C++ (language)"),
        ("first\\ name:John", "John"),
        ("geo.src:US", "US"),
        ("machine.os\\:raw:win", "win"),
        ('"quoted field":value', "value"),
        ("wi-fi e-mail", "wi-fi e-mail"),
        ("(a OR (b AND c)) d", "a b c d"),
        ("*", None),
        ("*:*", None),
        ("title:*", None),
        ("", None),
        ("   ", None),
        ("AND OR", None),
        ("-only", None),
        # Unbalanced or broken syntax still gives the words.
        ('unclosed "phrase here', "unclosed phrase here"),
        ("(open group", "open group"),
        ("stray) close ]", "stray close"),
        ("range:[1 TO", None),
        ("trailing\\", "trailing"),
        ("a:", None),
    ],
)
def test_query_text_from_uri(q: str, expected: str | None) -> None:
    assert query_text_from_uri(q) == expected


@pytest.mark.parametrize(
    ("q", "expected"),
    [
        ('"fried eggs" +(eggplant | potato) -frittata', "fried eggs eggplant potato"),
        ("error: disk full", "error: disk full"),
        ("quick~2 bro*", "quick bro"),
        ("a -(b c) d", "a d"),
        ("*", None),
    ],
)
def test_simple_query_string_syntax(q: str, expected: str | None) -> None:
    assert clean_lucene_query(q, simple=True) == expected


@given(st.text(max_size=40))
def test_lucene_cleaning_never_raises(q: str) -> None:
    for simple in (False, True):
        result = clean_lucene_query(q, simple=simple)
        assert result is None or (result and result == " ".join(result.split()))
    assert query_text_from_uri(q) == clean_lucene_query(q)


# --------------------------------------------------------------------------- real Dashboards traffic

# What each recorded request's query should give (None: no typed text).
EXPECTED_FROM_DASHBOARDS: dict[str, list[str | None]] = {
    "discover/01-initial-load-empty-dql-last-15m": [None],
    # DQL free text plus a filter pill (match_phrase in filter); the negated pill is ignored.
    "discover/02-dql-free-text-plus-filter-pills-last-24h": ["error US"],
    "discover/03-lucene-query-string-last-7d": ["503 php"],
    "discover/04-non-time-index-pattern-dql-free-text": ["wireless headphones"],
    "discover/05-courier-batchSearches-enabled-msearch": [None],
    "visualization/01-pie-terms-top5-count-last-24h": [None],
    "visualization/02-line-date-histogram-avg-bytes-last-7d": [None],
    "visualization/03-metric-unique-count-and-sum-no-buckets": [None],
    "visualization/04-dashboard-panel-dql-and-negated-filter-terms-by-avg": ["US"],
    "visualization/05-query-bar-value-suggestions-legacy-client": [None],
    "console/01-get-search-with-body-as-typed": ["error"],
    "console/02-post-search-user-query-string-kept-pretty-appended": ["usb c charger"],
    "console/04-msearch-ndjson-sent-as-application-json": ["usb c cable", None],
    "startup/04-saved-objects-find-index-patterns": [None],
}


def _search_bodies(request: dict[str, Any]) -> list[dict[str, Any]]:
    """The search bodies in a recorded request: JSON, or the body lines of _msearch NDJSON."""
    path = urlsplit(request["path"]).path
    if not path.endswith(("_search", "_msearch")):
        return []
    body = request.get("body")
    if isinstance(body, dict):
        return [body]
    if not isinstance(body, str) or not body.strip():
        return []
    if path.endswith("_msearch"):
        lines = [line for line in body.splitlines() if line.strip()]
        return [json.loads(line) for line in lines[1::2]]
    return [json.loads(body)]


def _dashboards_requests() -> list[dict[str, Any]]:
    if not DASHBOARDS_REQUESTS.is_file():
        pytest.skip(f"{DASHBOARDS_REQUESTS} is not present")
    requests: list[dict[str, Any]] = json.loads(DASHBOARDS_REQUESTS.read_text())
    return requests


def test_dashboards_requests() -> None:
    seen: dict[str, list[str | None]] = {}
    for request in _dashboards_requests():
        bodies = _search_bodies(request)
        if bodies:
            seen[request["name"]] = [extract_query_text(body.get("query")) for body in bodies]
        uri_q = parse_qs(urlsplit(request["path"]).query).get("q")
        if uri_q:
            assert query_text_from_uri(uri_q[0]) is not None
    assert seen == EXPECTED_FROM_DASHBOARDS


def test_lone_surrogates_in_query_text_become_replacement_characters() -> None:
    # {"match": {"title": "usb \ud800 charger"}} as the engine accepts it: a tokenizer must be able to take it.
    assert extract_query_text({"match": {"title": "usb \ud800 charger"}}) == "usb \ufffd charger"
    assert extract_query_text({"multi_match": {"query": "\udc00x"}}) == "\ufffdx"
    assert query_text_from_uri("title:usb \ud800") == "usb \ufffd"
    text = extract_query_text(
        {"bool": {"must": [{"match": {"t": "a\ud83d"}}, {"match": {"t": "\U0001f600"}}]}}
    )
    assert text == "a\ufffd \U0001f600"  # a real astral character is kept
    assert text is not None and text.encode()
