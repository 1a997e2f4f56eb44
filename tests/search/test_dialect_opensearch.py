"""OpenSearch's rerank-processor dialect, as the bridge reads it: the specification, one rule a test.

An app written for neural-search's ``rerank`` response processor names a pipeline and passes
``ext.rerank.query_context``; the bridge applies the pipeline's ``ml_opensearch`` rerank processor itself and
leaves every other processor to the engine.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from bridge.config import ConfigError, Settings, load_settings
from bridge.errors import BridgeHTTPError
from bridge.search.dialects import may_apply, translate
from bridge.search.dialects.opensearch import parse_rerank_processor, resolve_query_text_path
from bridge.search.request import QueryString, take_rerank_options

RERANK = {
    "rerank": {"ml_opensearch": {"model_id": "os-model-7"}, "context": {"document_fields": ["title", "text"]}}
}
FILTER = {"filter_query": {"query": {"term": {"kind": "paper"}}}}
RENAME = {"rename_field": {"field": "title", "target_field": "heading"}}
SETTINGS = Settings(
    models={"ce": {"source": "/models/ce", "aliases": ["os-model-7"]}, "other": {"source": "/models/other"}},
    rules=[{"indices": ["ruled-*"], "fields": ["text"]}],
    search_pipelines={
        "rerank-only": {"response_processors": [RERANK]},
        "with-others": {
            "description": "filter, rerank, rename",
            "request_processors": [FILTER],
            "response_processors": [RERANK, RENAME],
        },
    },
)
MATCH = {"match": {"text": "wing flow"}}


def tr(body: dict[str, Any] | None, query: str = "", index: str | None = "docs") -> Any:
    return translate(SETTINGS, index, QueryString.parse(query), body)


def rerank_of(body: dict[str, Any] | None) -> Any:
    assert body is not None
    return body["ext"]["rerank"]


def refusal(body: dict[str, Any] | None, query: str = "", index: str | None = "docs") -> BridgeHTTPError:
    with pytest.raises(BridgeHTTPError) as caught:
        tr(body, query, index)
    return caught.value


# ------------------------------------------------------------------ ext.rerank.query_context


def test_query_context_query_text_becomes_the_bridges_query_text() -> None:
    out = tr(
        {"query": MATCH, "ext": {"rerank": {"query_context": {"query_text": "how wings lift"}}}},
        index="ruled-1",
    )
    assert out.dialect == "opensearch_rerank"
    assert rerank_of(out.body) == {"query_text": "how wings lift"}
    options, _ = take_rerank_options(out.body, out.query)  # the bridge's parser takes what came out
    assert options.query_text == "how wings lift"


def test_query_text_path_reads_the_request_as_opensearch_resolves_it() -> None:
    body = {
        "query": {"bool": {"must": [{"match": {"text": {"query": "boundary layer"}}}]}},
        "ext": {"rerank": {"query_context": {"query_text_path": "query.bool.must.0.match.text.query"}}},
    }
    assert rerank_of(tr(body, index="ruled-1").body)["query_text"] == "boundary layer"


def test_query_text_path_finds_a_short_form_match_as_its_long_form() -> None:
    # OpenSearch re-serialises {"match": {"text": "x"}} as {"match": {"text": {"query": "x", ...}}}.
    body = {
        "query": MATCH,
        "ext": {"rerank": {"query_context": {"query_text_path": "query.match.text.query"}}},
    }
    assert rerank_of(tr(body, index="ruled-1").body)["query_text"] == "wing flow"
    assert resolve_query_text_path({"q": {"term": {"k": "v"}}}, "q.term.k.value") == "v"
    assert resolve_query_text_path({"a": ["x", "y"]}, "a.1") == "y"
    assert resolve_query_text_path({"a": ["x"]}, "a.5") is None
    assert resolve_query_text_path({"a": ["x"]}, "a.²") is None  # a digit, but no list position


@pytest.mark.parametrize(
    ("context", "reason"),
    [
        ("text", "query_context must be a map"),
        (
            {"query_text": "a", "query_text_path": "query"},
            'Cannot specify both "query_text" and "query_text_path"',
        ),
        ({}, 'Must specify either "query_text" or "query_text_path"'),
        ({"query_text_path": "query.match"}, "query_text_path must point to a string field"),
        ({"query_text_path": "query.nothing.here"}, "query_text_path must point to a string field"),
        ({"query_text": 7}, "query_context.query_text must be a string"),
    ],
)
def test_query_context_refusals_are_neural_searchs(context: Any, reason: str) -> None:
    error = refusal({"query": MATCH, "ext": {"rerank": {"query_context": context}}}, index="ruled-1")
    assert (error.status, error.error_type, error.reason) == (400, "illegal_argument_exception", reason)


def test_query_context_and_the_bridges_query_text_must_agree() -> None:
    agreeing = {"query_text": "wing", "query_context": {"query_text": "wing"}}
    assert (
        rerank_of(tr({"query": MATCH, "ext": {"rerank": agreeing}}, index="ruled-1").body)["query_text"]
        == "wing"
    )
    error = refusal(
        {"query": MATCH, "ext": {"rerank": {"query_text": "wing", "query_context": {"query_text": "lift"}}}},
        index="ruled-1",
    )
    assert error.status == 400 and "give one of them" in error.reason


def test_query_context_sits_next_to_the_bridges_own_keys() -> None:
    rerank = {"query_context": {"query_text": "lift"}, "window": 30, "fields": ["title"], "model": "other"}
    out = tr({"query": MATCH, "ext": {"rerank": rerank}}, index="ruled-1")
    assert rerank_of(out.body) == {"query_text": "lift", "window": 30, "fields": ["title"], "model": "other"}


def test_query_context_without_pipeline_or_rule_is_left_to_the_engines_default_pipeline() -> None:
    body = {"query": MATCH, "ext": {"rerank": {"query_context": {"query_text": "lift"}}}}
    out = tr(body, index="unruled")
    assert out.body is body and out.engine_owned == "engine_pipeline" and out.dialect is None


# ------------------------------------------------------------------ search_pipeline: which pipeline


@pytest.mark.parametrize(
    ("query", "where"),
    [("search_pipeline=rerank-only", "url"), ("", "body")],
)
def test_a_configured_pipeline_by_id_is_applied_by_the_bridge(query: str, where: str) -> None:
    body: dict[str, Any] = {"query": MATCH, "ext": {"rerank": {"query_context": {"query_text": "lift"}}}}
    if where == "body":
        body["search_pipeline"] = "rerank-only"
    out = tr(body, query)
    assert out.dialect == "opensearch_rerank"
    assert rerank_of(out.body) == {
        "query_text": "lift",
        "enabled": True,
        "model": "ce",
        "fields": ["title", "text"],
        "combine": "replace",  # the processor replaces the engine's scores, whatever a rule combines
    }
    # Nothing is left for the engine, and the index's default pipeline must not run in the named one's place;
    # said in the body, as an _msearch item has no query string of its own.
    assert out.body["search_pipeline"] == "_none" and not out.query.has("search_pipeline")


def test_the_rest_of_a_configured_pipeline_runs_on_the_engine_inline() -> None:
    out = tr({"query": MATCH}, "search_pipeline=with-others&pretty")
    assert out.body["search_pipeline"] == {"request_processors": [FILTER], "response_processors": [RENAME]}
    assert out.query.render() == "?pretty"  # an inline pipeline and a named one together are refused
    assert rerank_of(out.body)["model"] == "ce"


def test_the_rest_of_an_inline_pipeline_stays_inline() -> None:
    inline = {"request_processors": [FILTER], "response_processors": [RENAME, RERANK]}
    body = {
        "query": MATCH,
        "search_pipeline": inline,
        "ext": {"rerank": {"query_context": {"query_text": "x"}}},
    }
    out = tr(body)
    assert out.body["search_pipeline"] == {"request_processors": [FILTER], "response_processors": [RENAME]}
    assert rerank_of(out.body)["fields"] == ["title", "text"]
    assert body["search_pipeline"] is inline and inline["response_processors"] == [
        RENAME,
        RERANK,
    ]  # not mutated


def test_an_inline_pipeline_of_only_the_rerank_processor_leaves_none() -> None:
    out = tr({"query": MATCH, "search_pipeline": {"response_processors": [RERANK]}})
    assert out.body["search_pipeline"] == "_none" and not out.query.has("search_pipeline")


def test_the_bridges_own_keys_override_the_pipelines() -> None:
    out = tr(
        {"query": MATCH, "ext": {"rerank": {"model": "other", "fields": ["abstract"]}}},
        "search_pipeline=rerank-only",
    )
    assert rerank_of(out.body) == {"model": "other", "fields": ["abstract"], "enabled": True, "combine": "replace"}
    mixed = tr({"query": MATCH, "ext": {"rerank": {"combine": "rrf"}}}, "search_pipeline=rerank-only")
    assert rerank_of(mixed.body)["combine"] == "rrf"  # the request's own combination wins over the processor's
    off = tr({"query": MATCH, "ext": {"rerank": False}}, "search_pipeline=with-others")
    assert rerank_of(off.body)["enabled"] is False  # not reranked; the rest of the pipeline still runs
    assert off.body["search_pipeline"]["response_processors"] == [RENAME]


def test_without_query_context_the_bridge_reads_the_query_text_itself() -> None:
    # neural-search would fail ("must specify query_context"); the bridge falls back to the query's own text.
    out = tr({"query": MATCH}, "search_pipeline=rerank-only")
    assert "query_text" not in rerank_of(out.body)


@pytest.mark.parametrize(
    ("body", "query"),
    [
        ({"query": MATCH}, "search_pipeline=engine-side"),
        ({"query": MATCH, "search_pipeline": "engine-side"}, ""),
        ({"query": MATCH}, "search_pipeline=_none"),
        ({"query": MATCH, "search_pipeline": {"response_processors": [RENAME]}}, ""),
        (
            {
                "query": MATCH,
                "search_pipeline": {"response_processors": [{"rerank": {"by_field": {"target_field": "s"}}}]},
            },
            "",
        ),
    ],
)
def test_pipelines_the_bridge_does_not_know_reach_the_engine_untouched(
    body: dict[str, Any], query: str
) -> None:
    out = tr(body, query)
    assert out.body is body and out.query == QueryString.parse(query) and not out.changed
    assert out.engine_owned is None  # nothing in ext.rerank is the engine's: rules may still rerank it


def test_the_engines_own_pipeline_keeps_its_query_context() -> None:
    body = {"query": MATCH, "ext": {"rerank": {"query_context": {"query_text": "lift"}}}}
    out = tr(body, "search_pipeline=engine-side", index="ruled-1")
    assert out.body is body and out.engine_owned == "engine_pipeline"


def test_the_urls_pipeline_wins_over_the_bodys_name() -> None:
    out = tr({"query": MATCH, "search_pipeline": "engine-side"}, "search_pipeline=rerank-only")
    assert out.dialect == "opensearch_rerank" and out.body["search_pipeline"] == "_none"


def test_a_named_and_an_inline_pipeline_together_are_opensearchs_400() -> None:
    error = refusal(
        {"query": MATCH, "search_pipeline": {"response_processors": [RERANK]}}, "search_pipeline=x"
    )
    assert (
        error.reason
        == "Both named and inline search pipeline were specified. Please only specify one or the other."
    )


# ------------------------------------------------------------------ the rerank processor


def test_model_id_maps_to_a_model_name_or_alias() -> None:
    assert parse_rerank_processor(SETTINGS, RERANK).model == "ce"
    by_name = {"rerank": {"ml_opensearch": {"model_id": "other"}, "context": {"document_fields": ["t"]}}}
    assert parse_rerank_processor(SETTINGS, by_name).model == "other"


@pytest.mark.parametrize(
    ("config", "reason"),
    [
        (
            {"ml_opensearch": {"model_id": "nope"}, "context": {"document_fields": ["t"]}},
            "is not a model of the bridge",
        ),
        (
            {"ml_opensearch": {}, "context": {"document_fields": ["t"]}},
            "[model_id] required property is missing",
        ),
        ({"ml_opensearch": {"model_id": "ce"}}, "[context] required property is missing"),
        (
            {"ml_opensearch": {"model_id": "ce"}, "context": {"document_fields": []}},
            "document_fields must be nonempty",
        ),
        (
            {"ml_opensearch": {"model_id": "ce"}, "context": {"document_fields": "t"}},
            "must be a list of field names",
        ),
    ],
)
def test_a_bad_rerank_processor_is_a_400_in_opensearchs_shape(config: dict[str, Any], reason: str) -> None:
    error = refusal({"query": MATCH, "search_pipeline": {"response_processors": [{"rerank": config}]}})
    assert error.status == 400 and error.error_type == "illegal_argument_exception" and reason in error.reason


def test_two_model_rerank_processors_are_refused() -> None:
    error = refusal({"search_pipeline": {"response_processors": [RERANK, RERANK]}})
    assert error.status == 400 and "has 2" in error.reason


# ------------------------------------------------------------------ may_apply and configuration


def test_may_apply_for_a_configured_pipeline_only() -> None:
    assert may_apply(SETTINGS, QueryString.parse("search_pipeline=rerank-only"), b"")
    assert not may_apply(SETTINGS, QueryString.parse("search_pipeline=engine-side"), b"{}")
    assert may_apply(SETTINGS, QueryString(()), b'{"search_pipeline":"rerank-only"}')
    assert not may_apply(SETTINGS, QueryString(()), b'{"query":{"match_all":{}}}')
    assert not may_apply(
        Settings(models={"m": {"source": "/m"}}), QueryString.parse("search_pipeline=x"), b""
    )


def test_a_configured_pipeline_must_name_a_known_model(tmp_path: Any) -> None:
    config = tmp_path / "bridge.yaml"
    config.write_text(
        "models: {ce: {source: /m}}\n"
        "search_pipelines:\n  p: {response_processors: [{rerank: {ml_opensearch: {model_id: gone},"
        " context: {document_fields: [t]}}}]}\n"
    )
    with pytest.raises(
        ConfigError,
        match=re.escape("search_pipelines.p: rerank.ml_opensearch.model_id: unknown model 'gone'"),
    ):
        load_settings(config)
    config.write_text(
        "models: {ce: {source: /m}}\nsearch_pipelines:\n  p: {response_processors: [{rename_field: {}}]}\n"
    )
    with pytest.raises(ConfigError, match="exactly one rerank response processor"):
        load_settings(config)


@pytest.mark.parametrize(
    ("models", "problem"),
    [
        ({"a": {"source": "/a", "aliases": ["b"]}, "b": {"source": "/b"}}, "'b' is the name of a model"),
        (
            {"a": {"source": "/a", "aliases": ["x"]}, "b": {"source": "/b", "aliases": ["x"]}},
            "also an alias of 'a'",
        ),
        ({"a": {"source": "/a", "aliases": ["x", "x"]}}, "'x' is listed twice"),
    ],
)
def test_model_aliases_must_name_one_model(models: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        Settings(models=models)
