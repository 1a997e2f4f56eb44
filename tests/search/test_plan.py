"""The rerank decision for one search, as pure logic: which searches are reranked and what the engine is asked."""

from __future__ import annotations

from typing import Any

import pytest

from bridge.config import RuleSettings, Settings
from bridge.errors import BridgeHTTPError
from bridge.search.combine import Fusion, Linear, ReciprocalRank, Replace
from bridge.search.endpoints import SearchAPI, classify
from bridge.search.plan import Plan, Skip, adhoc_rule, plan_search
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


# --- paging the engine refuses (or may): never reranked, never an OverflowError -----------------------------


@pytest.mark.parametrize(
    ("body", "query"),
    [
        ({"size": None}, ""),  # the engine: "Unknown key for a VALUE_NULL in [size]."
        ({"from": None}, ""),
        ({"size": float("inf")}, ""),  # what 1e400 reads as: "out of range of int"
        ({"from": float("-inf")}, ""),
        ({"size": float("nan")}, ""),
        ({"size": 2**31}, ""),
        ({"size": 2147483647.5}, ""),
        ({"size": True}, ""),
        ({"size": [3]}, ""),
        ({"size": {}}, ""),
        ({"size": "x"}, ""),
        ({"size": "1e400"}, ""),
        ({"size": -1}, ""),
        ({"from": -1}, ""),
        ({}, "size=Infinity"),
        ({}, "size=1e400"),
        ({}, "size=99999999999"),
        ({}, "size=3.0"),
        ({}, "size="),
        ({}, "size=+3"),  # a space once decoded: Integer.parseInt refuses " 3"
        ({}, "from=-1"),
        ({"size": None}, "size=3"),  # the engine parses (and refuses) the body even when the URL overrides it
    ],
)
def test_paging_the_engine_may_refuse_is_left_to_the_engine(body: dict[str, Any], query: str) -> None:
    decided = plan("docs-1", {"query": MATCH, **body}, query)
    assert isinstance(decided, Skip) and decided.reason == "invalid_paging"
    assert decided.body is not None and decided.body.items() >= body.items()  # sent on as the client wrote it


@pytest.mark.parametrize(
    ("body", "query", "offset", "size"),
    [
        ({"size": 1.9}, "", 0, 1),  # the engine truncates toward zero
        ({"size": "3"}, "", 0, 3),
        ({"size": " 3 "}, "", 0, 3),
        ({"size": "3.5", "from": "+2"}, "", 2, 3),
        ({"size": "1e1"}, "", 0, 10),
        ({"size": 2.0, "from": 1.5}, "", 1, 2),
        ({"size": 7}, "size=4&from=%2B3", 3, 4),  # the URL wins; Integer.parseInt takes "+3"
        ({}, "size=3&size=2", 0, 2),  # the last one counts, as in the engine
    ],
)
def test_paging_is_read_as_the_engine_reads_it(
    body: dict[str, Any], query: str, offset: int, size: int
) -> None:
    decided = plan("docs-1", {"query": MATCH, **body}, query)
    assert isinstance(decided, Plan)
    assert (decided.offset, decided.size) == (offset, size)
    assert decided.upstream_body["from"] == 0 and decided.upstream_body["size"] == max(50, offset + size)


def test_lone_surrogates_in_the_query_text_are_made_tokenizable() -> None:
    for body in (
        {"query": {"match": {"title": "jet \ud800 noise"}}},
        {"query": {"match_all": {}}, "ext": {"rerank": {"query_text": "jet \udc00 noise"}}},
    ):
        decided = plan("docs-1", body)
        assert isinstance(decided, Plan)
        assert decided.query_text == "jet \ufffd noise"
        decided.query_text.encode()


# --- which paths are searches ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "api"),
    [
        ("/_all/_search", SearchAPI.SEARCH),
        ("/_all/_msearch", SearchAPI.MSEARCH),
        ("/_all/_search/template", SearchAPI.SEARCH_TEMPLATE),
        ("/_all/_msearch/template?x=1", SearchAPI.MSEARCH_TEMPLATE),
        ("/%5Fall/_search", SearchAPI.SEARCH),
    ],
)
def test_all_is_searched_cluster_wide_like_the_bare_search(path: str, api: SearchAPI) -> None:
    endpoint = classify("POST", path)
    assert endpoint is not None and endpoint.api is api
    assert endpoint.index is None  # the rules see a cluster-wide search, as for /_search
    assert endpoint.path("_search") == "/" + path.split("/")[1] + "/_search"  # the engine still gets _all


def test_trailing_slashes_are_routed_as_without_them() -> None:
    for path in ("/docs/_search/", "/docs/_search//", "/docs/_msearch/"):
        endpoint = classify("POST", path)
        assert endpoint is not None and endpoint.index == "docs"


@pytest.mark.parametrize(
    "path",
    [
        "//docs/_search",  # OpenSearch: 400 "no handler found for uri [/_search]"
        "//docs/_msearch",
        "//_search",
        "/docs//_search",  # 400 "no handler found"
        "/docs//_msearch",
        "/_ALL/_search",  # 400 invalid_index_name_exception
        "/_all,docs/_search",
        "/%5Fcat/_search",
    ],
)
def test_paths_the_engine_does_not_route_as_a_search_are_left_to_it(path: str) -> None:
    assert classify("POST", path) is None


@pytest.mark.parametrize(
    "source",
    [
        None,  # the engine: "Unknown key for a VALUE_NULL in [_source]."
        5,
        {"includes": "title", "excludes": None},
        {"includes": ["title", None]},
        {"includes": 5},
        {"includes": {"a": 1}},
        {"foo": ["x"]},
        [None],
    ],
)
def test_a_source_the_engine_may_refuse_is_not_widened_but_left_to_it(source: Any) -> None:
    decided = plan("docs-1", {"query": MATCH, "_source": source})
    assert isinstance(decided, Skip) and decided.reason == "invalid_source"
    assert decided.body is not None and decided.body["_source"] == source


@pytest.mark.parametrize(
    "source", [True, False, "title", ["title"], [], {}, {"includes": []}, {"include": "a", "exclude": ["b"]}]
)
def test_a_source_the_engine_takes_is_planned(source: Any) -> None:
    assert isinstance(plan("docs-1", {"query": MATCH, "_source": source}), Plan)


# --- the effective rule: the matched rule (or the defaults), updated by ext.rerank ------------------------------


def test_the_plan_carries_the_matched_rule_with_the_resolved_model_and_window() -> None:
    decided = plan("docs-1", {"query": MATCH})
    assert isinstance(decided, Plan)
    assert decided.rule.indices == ["docs-*", "alias-docs"]
    assert (decided.rule.model, decided.rule.window) == ("small", 50) == (decided.model, decided.window)
    assert (decided.separator, decided.timeout_s, decided.keep_previous_score) == ("\n", 2.0, False)
    assert decided.previous_score_field == "_engine_score"
    assert decided.fusion.name == "replace"
    assert SETTINGS.rules[0].model is None  # the configured rule is not changed


def test_an_opted_in_search_without_a_rule_gets_every_rule_default() -> None:
    decided = plan("other", {"query": MATCH, "ext": {"rerank": {"fields": ["t"]}}})
    assert isinstance(decided, Plan)
    defaults = RuleSettings(indices=["x"], fields=["x"])
    assert decided.rule.indices == ["other"] and decided.fields == ("t",)
    for name in (
        "separator",
        "timeout_ms",
        "keep_previous_score",
        "previous_score_field",
        "combine",
        "alpha",
    ):
        assert getattr(decided.rule, name) == getattr(defaults, name), name
    assert decided.rule.max_window == SETTINGS.limits.max_window


def test_the_ad_hoc_rule_is_capped_by_the_limits_only() -> None:
    settings = Settings(models={"m": {"source": "/m"}}, limits={"max_window": 3000})
    body = {"query": MATCH, "ext": {"rerank": {"fields": ["t"], "window": 2500}}}
    decided = plan_search(settings, "any", QueryString.parse(""), body)
    assert isinstance(decided, Plan) and decided.window == 2500
    assert adhoc_rule(settings, "a,b", ["t"]).indices == ["a", "b"]


def test_ext_rerank_fusion_keys_update_the_rule() -> None:
    ext = {
        "combine": "linear",
        "alpha": 0.3,
        "normalization": "z_score",
        "rank_constant": 10,
        "min_score": 0.25,
        "top_n": 5,
        "score_transform": "positive",
    }
    decided = plan("docs-1", {"query": MATCH, "ext": {"rerank": ext}})
    assert isinstance(decided, Plan)
    assert {name: getattr(decided.rule, name) for name in ext} == ext
    assert decided.fusion == Fusion(Linear(0.3, "z_score"), "positive", 0.25, 5)
    assert decided.fields == ("title", "body.text")  # what ext.rerank does not name stays the rule's


def test_the_rules_own_fusion_settings_apply_unless_the_request_overrides_them() -> None:
    settings = Settings(
        models={"m": {"source": "/m"}},
        rules=[{"indices": ["r"], "fields": ["t"], "combine": "rrf", "rank_constant": 20, "min_score": 0.01}],
    )
    decided = plan_search(settings, "r", QueryString.parse(""), {"query": MATCH})
    assert isinstance(decided, Plan) and decided.fusion == Fusion(ReciprocalRank(20), min_score=0.01)
    body = {"query": MATCH, "ext": {"rerank": {"combine": "replace", "min_score": -1}}}
    overridden = plan_search(settings, "r", QueryString.parse(""), body)
    assert isinstance(overridden, Plan) and overridden.fusion == Fusion(Replace(), min_score=-1.0)


def test_alpha_and_min_score_take_any_json_number() -> None:
    decided = plan("docs-1", {"query": MATCH, "ext": {"rerank": {"alpha": 1, "min_score": 3}}})
    assert isinstance(decided, Plan)
    assert decided.rule.alpha == 1.0 and decided.rule.min_score == 3.0


def test_a_page_past_the_window_is_planned_when_min_score_cuts_the_answer_to_the_window() -> None:
    body = {"query": MATCH, "from": 60, "ext": {"rerank": {"min_score": 0.5}}}
    decided = plan("docs-1", body)
    assert isinstance(decided, Plan) and decided.offset == 60 and decided.upstream_body["size"] == 70


@pytest.mark.parametrize(
    ("ext", "named"),
    [
        ({"combine": "sum"}, "combine"),
        ({"combine": 1}, "combine"),
        ({"alpha": 1.5}, "alpha"),
        ({"alpha": -0.01}, "alpha"),
        ({"alpha": "0.5"}, "alpha"),
        ({"alpha": True}, "alpha"),
        ({"alpha": 10**400}, "alpha"),
        ({"normalization": "l2"}, "normalization"),
        ({"rank_constant": 0}, "rank_constant"),
        ({"rank_constant": 2.5}, "rank_constant"),
        ({"rank_constant": False}, "rank_constant"),
        ({"min_score": "high"}, "min_score"),
        ({"min_score": float("inf")}, "min_score"),
        ({"min_score": [1]}, "min_score"),
        ({"top_n": 0}, "top_n"),
        ({"top_n": -3}, "top_n"),
        ({"top_n": "5"}, "top_n"),
        ({"score_transform": "sigmoid"}, "score_transform"),
        ({"score_transform": {"positive": True}}, "score_transform"),
        ({"weights": [1, 2]}, "weights"),
    ],
)
def test_bad_fusion_options_are_engine_shaped_400s_naming_the_key(ext: dict[str, Any], named: str) -> None:
    with pytest.raises(BridgeHTTPError) as raised:
        plan("docs-1", {"query": MATCH, "ext": {"rerank": ext}})
    error = raised.value
    assert (error.status, error.error_type) == (400, "x_content_parse_exception")
    assert named in error.reason


def test_null_fusion_options_mean_not_given() -> None:
    decided = plan("docs-1", {"query": MATCH, "ext": {"rerank": {"min_score": None, "combine": None}}})
    assert isinstance(decided, Plan) and decided.fusion == Fusion(Replace())
