"""The rerank decision for one search, as pure logic: which searches are reranked and what the engine is asked."""

from __future__ import annotations

from typing import Any

import pytest

from bridge.config import Settings
from bridge.errors import BridgeHTTPError
from bridge.search.endpoints import SearchAPI, classify
from bridge.search.plan import Plan, Skip, plan_search
from bridge.search.request import QueryString
from bridge.search.rules import index_names, match_rule

SETTINGS = Settings(
    models={"small": {"source": "/models/small"}, "big": {"source": "/models/big"}},
    rules=[
        {
            "indices": ["docs-*", "alias-docs"],
            "fields": ["title", "body.text"],
            "window": 50,
            "max_window": 200,
        },
        {"indices": ["tpl-*"], "fields": ["text"], "query_text": "param:q", "model": "big"},
        {"indices": ["path-*"], "fields": ["text"], "query_text": "$.query.bool.must[0].match.text.query"},
        {"indices": ["quiet-*"], "fields": ["text"], "enabled": False},
    ],
)
MATCH = {"match": {"title": "jet engine noise"}}


def plan(index: str | None, body: dict[str, Any] | None, query: str = "", **kwargs: Any) -> Plan | Skip:
    return plan_search(SETTINGS, index, QueryString.parse(query), body, **kwargs)


def test_a_ruled_search_fetches_the_window_from_zero() -> None:
    decided = plan("docs-2024", {"query": MATCH, "size": 10, "from": 20})
    assert isinstance(decided, Plan)
    assert decided.upstream_body["from"] == 0 and decided.upstream_body["size"] == 50
    assert (decided.offset, decided.size, decided.window) == (20, 10, 50)
    assert decided.query_text == "jet engine noise"
    assert decided.model == "small" and decided.fields == ("title", "body.text")


def test_pages_that_reach_past_the_window_fetch_enough() -> None:
    decided = plan("docs-1", {"query": MATCH, "size": 30, "from": 40})
    assert isinstance(decided, Plan) and decided.upstream_body["size"] == 70


def test_url_paging_wins_over_the_body_and_is_not_forwarded() -> None:
    decided = plan("docs-1", {"query": MATCH, "size": 5}, "size=7&from=3&typed_keys=true")
    assert isinstance(decided, Plan)
    assert (decided.offset, decided.size) == (3, 7)
    assert decided.upstream_query.render() == "?typed_keys=true"


@pytest.mark.parametrize(
    ("index", "body", "query", "reason"),
    [
        ("other", {"query": MATCH}, "", "no_rule"),
        (".kibana_1", {"query": MATCH}, "", "system_index"),
        ("docs-1,.tasks", {"query": MATCH}, "", "system_index"),
        ("docs-1", {"query": MATCH, "size": 0}, "", "size_zero"),
        ("docs-1", {"query": MATCH, "sort": [{"year": "desc"}]}, "", "sort"),
        ("docs-1", {"query": MATCH, "sort": [{"_score": "asc"}]}, "", "sort"),
        ("docs-1", {"query": MATCH}, "sort=year:desc", "sort"),
        ("docs-1", {"query": MATCH}, "scroll=1m", "scroll"),
        ("docs-1", {"query": MATCH, "search_after": [1]}, "", "search_after"),
        ("docs-1", {"query": MATCH, "pit": {"id": "x"}}, "", "pit"),
        ("docs-1", {"query": MATCH, "collapse": {"field": "k"}}, "", "collapse"),
        ("docs-1", {"query": MATCH, "rescore": {"window_size": 5}}, "", "rescore"),
        ("docs-1", {"query": {"match_all": {}}}, "", "no_query_text"),
        ("docs-1", {"query": MATCH, "from": 60}, "", "beyond_window"),
        ("docs-1", {"query": MATCH, "size": "ten"}, "", "invalid_paging"),
        ("docs-1", {"query": MATCH}, "rerank=false", "disabled_by_request"),
        ("quiet-1", {"query": MATCH}, "", "rule_disabled"),
    ],
)
def test_searches_that_are_not_reranked(index: str, body: dict[str, Any], query: str, reason: str) -> None:
    decided = plan(index, body, query)
    assert isinstance(decided, Skip) and decided.reason == reason
    assert not decided.query.has("rerank")


def test_score_sort_only_is_reranked() -> None:
    for sort in (["_score"], [{"_score": "desc"}], [{"_score": {"order": "desc"}}], "_score"):
        decided = plan("docs-1", {"query": MATCH, "sort": sort})
        assert isinstance(decided, Plan) and decided.sorted_by_score


def test_ext_rerank_is_removed_and_overrides_the_rule() -> None:
    body = {
        "query": MATCH,
        "ext": {
            "rerank": {"window": 500, "model": "big", "fields": ["abstract"], "query_text": "quiet jets"},
            "other": {},
        },
    }
    decided = plan("docs-1", body)
    assert isinstance(decided, Plan)
    assert decided.window == 200  # capped by the rule's max_window
    assert decided.model == "big" and decided.fields == ("abstract",) and decided.query_text == "quiet jets"
    assert decided.upstream_body["ext"] == {"other": {}}
    assert "ext" in body and "rerank" in body["ext"]  # the caller's body is not mutated


def test_ext_rerank_opts_in_where_no_rule_matches_and_opts_out_where_one_does() -> None:
    assert isinstance(plan("other", {"query": MATCH, "ext": {"rerank": {"fields": ["t"]}}}), Plan)
    assert isinstance(plan("quiet-1", {"query": MATCH, "ext": {"rerank": True}}), Plan)
    skipped = plan("docs-1", {"query": MATCH, "ext": {"rerank": False}})
    assert isinstance(skipped, Skip) and skipped.body_changed and skipped.body == {"query": MATCH}


@pytest.mark.parametrize(
    "ext",
    [
        {"window": 0},
        {"window": "9"},
        {"fields": []},
        {"fields": [1]},
        {"model": "nope"},
        {"enabled": "yes"},
        {"query_text": 5},
        {"colour": "red"},
        "yes",
    ],
)
def test_bad_ext_rerank_is_a_400(ext: Any) -> None:
    with pytest.raises(BridgeHTTPError) as raised:
        plan("docs-1", {"query": MATCH, "ext": {"rerank": ext}})
    assert raised.value.status == 400


def test_opting_in_without_fields_names_what_is_missing() -> None:
    with pytest.raises(BridgeHTTPError, match="fields"):
        plan("other", {"query": MATCH, "ext": {"rerank": True}})


def test_query_text_sources() -> None:
    templated = plan("tpl-1", {"query": MATCH}, template_params={"q": "from the template"})
    assert (
        isinstance(templated, Plan)
        and templated.query_text == "from the template"
        and templated.model == "big"
    )
    body = {"query": {"bool": {"must": [{"match": {"text": {"query": "by json path"}}}]}}}
    by_path = plan("path-1", body)
    assert isinstance(by_path, Plan) and by_path.query_text == "by json path"
    uri = plan("docs-1", None, "q=title:turbine%20blades")
    assert isinstance(uri, Plan) and uri.query_text == "turbine blades" and uri.upstream_body["size"] == 50


def test_source_filtering_is_widened_for_the_passage_fields() -> None:
    decided = plan("docs-1", {"query": MATCH, "_source": ["year"]})
    assert isinstance(decided, Plan)
    assert not decided.source.is_default
    wide = decided.upstream_body["_source"]
    assert {"title", "body.text", "year"} <= set(wide["includes"] if isinstance(wide, dict) else [])
    via_url = plan("docs-1", {"query": MATCH}, "_source=false")
    assert isinstance(via_url, Plan) and not via_url.upstream_query.has("_source")


def test_filter_path_is_applied_by_the_bridge_not_the_engine() -> None:
    decided = plan("docs-1", {"query": MATCH}, "filter_path=hits.hits._id")
    assert isinstance(decided, Plan)
    assert decided.filter_path == "hits.hits._id" and not decided.upstream_query.has("filter_path")


def test_rules_match_every_named_index() -> None:
    rules = SETTINGS.rules
    assert match_rule("docs-a,docs-b", rules) is rules[0]
    assert match_rule("docs-a,other", rules) is None
    assert match_rule("alias-docs", rules) is rules[0]
    assert match_rule("docs-a,-docs-b", rules) is rules[0]
    assert match_rule(None, rules) is None
    assert index_names(None) == ["_all"]


@pytest.mark.parametrize(
    ("method", "path", "api", "index"),
    [
        ("GET", "/_search", SearchAPI.SEARCH, None),
        ("POST", "/docs/_search?q=x", SearchAPI.SEARCH, "docs"),
        ("POST", "/a%2Cb/_search", SearchAPI.SEARCH, "a,b"),
        ("POST", "/logs-*/_msearch", SearchAPI.MSEARCH, "logs-*"),
        ("POST", "/_search/template", SearchAPI.SEARCH_TEMPLATE, None),
        ("GET", "/docs/_msearch/template", SearchAPI.MSEARCH_TEMPLATE, "docs"),
    ],
)
def test_search_endpoints(method: str, path: str, api: SearchAPI, index: str | None) -> None:
    endpoint = classify(method, path)
    assert endpoint is not None and endpoint.api is api and endpoint.index == index


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("PUT", "/docs/_search"),
        ("GET", "/docs/_doc/_search"),
        ("GET", "/_cat/_search"),
        ("GET", "/docs/_count"),
        ("POST", "/_search/scroll"),
        ("DELETE", "/_search/scroll"),
    ],
)
def test_not_search_endpoints(method: str, path: str) -> None:
    assert classify(method, path) is None
