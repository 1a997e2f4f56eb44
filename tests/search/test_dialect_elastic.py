"""Elastic's ``text_similarity_reranker`` retriever, as the bridge runs it: the specification, one rule a test.

The retriever becomes a plain search of its inner ``standard`` (or ``knn``) retriever, fetched
``rank_window_size`` deep and reranked by the bridge with Elastic's score normalisation; Elastic's errors for
bad combinations are answered in Elastic's shape.
"""

from __future__ import annotations

import math
from typing import Any

import pytest

from bridge.config import Settings
from bridge.errors import BridgeHTTPError
from bridge.search.dialects import translate
from bridge.search.request import QueryString

SETTINGS = Settings(
    models={
        "ce": {"source": "/models/ce", "aliases": ["my-rerank-endpoint"]},
        "other": {"source": "/models/o"},
    }
)
MATCH = {"match": {"text": "wing flow"}}


def reranker(inner: dict[str, Any] | None = None, **options: Any) -> dict[str, Any]:
    spec = {
        "retriever": inner or {"standard": {"query": MATCH}},
        "field": "text",
        "inference_text": "how wings lift",
    }
    spec.update(options)
    return {"retriever": {"text_similarity_reranker": spec}}


def tr(body: dict[str, Any] | None, query: str = "") -> Any:
    return translate(SETTINGS, "docs", QueryString.parse(query), body)


def refusal(body: dict[str, Any], query: str = "") -> BridgeHTTPError:
    with pytest.raises(BridgeHTTPError) as caught:
        tr(body, query)
    return caught.value


# ------------------------------------------------------------------ the translation


def test_the_reranker_becomes_a_windowed_plain_search_and_a_rerank() -> None:
    body = reranker(inference_id="my-rerank-endpoint", rank_window_size=50, min_score=0.5)
    out = tr(body)
    assert out.dialect == "elastic_retriever"
    assert "retriever" not in out.body
    assert out.body["query"] == MATCH  # the standard retriever's query is the search's query
    assert (
        out.body["ext"]["rerank"]
        == {
            "enabled": True,
            "query_text": "how wings lift",  # inference_text, not the query's words
            "fields": ["text"],  # the one field Elastic scores
            "window": 50,  # rank_window_size
            "model": "ce",  # inference_id, here an alias
            # Elastic keeps hits whose raw score reaches 0.5, then normalises them: the same hits reach
            # positive(0.5) = 0.5 + 1 on the normalised score the bridge compares with.
            "min_score": 1.5,
            "score_transform": "positive",  # max(s, 0) + min(exp(s), 1), the scores Elastic answers
            "combine": "replace",  # Elastic's reranker replaces the first-stage scores, whatever a rule combines
        }
    )
    assert body["retriever"]["text_similarity_reranker"]["rank_window_size"] == 50  # the input is not mutated


def test_rank_window_size_defaults_to_elastics_ten_and_the_page_to_its_top() -> None:
    out = tr(reranker())
    assert out.body["ext"]["rerank"]["window"] == 10
    assert (out.body["from"], out.body["size"]) == (0, 10)


def test_an_inference_id_by_model_name_and_none_at_all() -> None:
    assert tr(reranker(inference_id="other")).body["ext"]["rerank"]["model"] == "other"
    assert "model" not in tr(reranker()).body["ext"]["rerank"]  # the rule's, or the default model


def test_the_answer_holds_the_window_only_a_page_past_it_is_cut() -> None:
    # Elastic pages within the reranked top rank_window_size: from 8 size 5 of 10 answers hits 8 and 9.
    out = tr({**reranker(rank_window_size=10), "from": 8, "size": 5})
    assert (out.body["from"], out.body["size"]) == (8, 2)
    beyond = tr({**reranker(rank_window_size=10), "from": 12, "size": 5})
    assert beyond.body["size"] == 0  # nothing to answer but totals and aggregations


def test_url_paging_moves_into_the_body() -> None:
    out = tr(reranker(rank_window_size=20), "from=5&size=3&pretty")
    assert (out.body["from"], out.body["size"]) == (5, 3) and out.query.render() == "?pretty"


def test_filters_of_the_standard_and_of_the_reranker_both_apply() -> None:
    inner = {"standard": {"query": MATCH, "filter": {"term": {"kind": "paper"}}, "min_score": 1.5}}
    out = tr(reranker(inner, filter=[{"range": {"year": {"gte": 1990}}}]))
    assert out.body["query"] == {
        "bool": {"filter": [{"term": {"kind": "paper"}}, {"range": {"year": {"gte": 1990}}}], "must": [MATCH]}
    }
    assert out.body["min_score"] == 1.5  # the standard retriever's, on the engine's first-stage score


def test_a_standard_retriever_without_a_query_matches_all() -> None:
    out = tr(reranker({"standard": {}}))
    assert "query" not in out.body  # the engine's default: match_all


def test_a_knn_inner_retriever_becomes_the_top_level_knn_search() -> None:
    knn = {"field": "vec", "query_vector": [0.1, 0.2], "k": 20, "num_candidates": 50}
    out = tr(reranker({"knn": knn}, filter={"term": {"kind": "paper"}}))
    assert out.body["knn"] == {**knn, "filter": [{"term": {"kind": "paper"}}]} and "query" not in out.body


def test_the_rest_of_the_request_is_kept() -> None:
    extra = {"_source": ["title"], "aggs": {"k": {"terms": {"field": "kind"}}}, "track_total_hits": True}
    out = tr({**reranker(), **extra, "ext": {"other": {"a": 1}}})
    assert {key: out.body[key] for key in extra} == extra and out.body["ext"]["other"] == {"a": 1}


# ------------------------------------------------------------------ what stays with the engine


@pytest.mark.parametrize(
    "retriever",
    [
        {"standard": {"query": MATCH}},
        {"knn": {"field": "vec", "query_vector": [1.0], "k": 3, "num_candidates": 5}},
        {"rrf": {"retrievers": [{"standard": {"query": MATCH}}]}},
        {
            "text_similarity_reranker": {
                "retriever": {"rrf": {"retrievers": []}},
                "field": "t",
                "inference_text": "x",
            }
        },
        {
            "text_similarity_reranker": {
                "retriever": {
                    "text_similarity_reranker": {
                        "retriever": {"standard": {}},
                        "field": "t",
                        "inference_text": "y",
                    }
                },
                "field": "t",
                "inference_text": "x",
            }
        },
        {
            "text_similarity_reranker": {
                "retriever": {"standard": {"sort": ["year"]}},
                "field": "t",
                "inference_text": "x",
            }
        },
        {
            "text_similarity_reranker": {
                "retriever": {"standard": {"collapse": {"field": "k"}}},
                "field": "t",
                "inference_text": "x",
            }
        },
    ],
)
def test_retrievers_the_bridge_does_not_rerank_go_to_the_engine_untouched(retriever: dict[str, Any]) -> None:
    body = {"retriever": retriever, "size": 3}
    out = tr(body)
    assert out.body is body and out.dialect is None and out.engine_owned == "retriever"


def test_a_body_without_a_retriever_is_not_elastics_dialect() -> None:
    body = {"query": MATCH}
    out = tr(body)
    assert out.body is body and not out.changed and out.engine_owned is None


# ------------------------------------------------------------------ Elastic's errors


def test_size_over_rank_window_size_is_elastics_validation_error() -> None:
    error = refusal({**reranker(rank_window_size=5), "size": 20})
    assert (error.status, error.error_type) == (400, "action_request_validation_exception")
    assert error.reason == (
        "Validation Failed: 1: [text_similarity_reranker] requires [rank_window_size: 5] "
        "be greater than or equal to [size: 20];"
    )
    # Elastic checks an explicit size only: the default size is not held against a smaller window.
    assert tr(reranker(rank_window_size=5)).body["size"] == 5


def test_keys_elastic_forbids_next_to_a_retriever() -> None:
    error = refusal({**reranker(), "query": MATCH, "sort": ["_score"], "min_score": 1})
    assert error.error_type == "action_request_validation_exception"
    assert error.reason == "Validation Failed: 1: cannot specify [retriever] and [query, sort];"


def test_several_problems_are_numbered_as_elastic_numbers_them() -> None:
    error = refusal({**reranker(rank_window_size=5), "size": 6, "rescore": {"window_size": 3}}, "scroll=1m")
    assert error.reason == (
        "Validation Failed: 1: cannot specify [retriever] and [rescore];"
        "2: [text_similarity_reranker] requires [rank_window_size: 5] be greater than or equal to [size: 6];"
        "3: cannot specify [text_similarity_reranker] and [scroll];"
    )


def test_partial_results_cannot_be_allowed() -> None:
    error = refusal(reranker(), "allow_partial_search_results=true")
    assert error.reason.endswith(
        "cannot specify [text_similarity_reranker] and [allow_partial_search_results];"
    )
    assert tr(reranker(), "allow_partial_search_results=false").dialect == "elastic_retriever"


def test_an_unknown_inference_id_is_elastics_404() -> None:
    error = refusal(reranker(inference_id="nope"))
    assert (error.status, error.error_type, error.reason) == (
        404,
        "resource_not_found_exception",
        "Inference endpoint not found [nope]",
    )


@pytest.mark.parametrize(
    ("spec_change", "reason"),
    [
        ({"bogus": 1}, "[text_similarity_reranker] unknown field [bogus]"),
        ({"field": None}, "[text_similarity_reranker] failed to parse field [field]"),
        ({"rank_window_size": "many"}, "[text_similarity_reranker] failed to parse field [rank_window_size]"),
        ({"min_score": math.inf}, "[text_similarity_reranker] failed to parse field [min_score]"),
        ({"min_score": 10**400}, "[text_similarity_reranker] failed to parse field [min_score]"),
    ],
)
def test_parse_errors_are_elastics_x_content_parse_exception(
    spec_change: dict[str, Any], reason: str
) -> None:
    body = reranker()
    body["retriever"]["text_similarity_reranker"].update(spec_change)
    error = refusal(body)
    assert (error.status, error.error_type, error.reason) == (400, "x_content_parse_exception", reason)


def test_required_fields() -> None:
    error = refusal({"retriever": {"text_similarity_reranker": {"retriever": {"standard": {}}}}})
    assert error.reason == "[text_similarity_reranker] failed to parse: Required [inference_text, field]"
    unknown = refusal(reranker({"standard": {"query": MATCH, "size": 3}}))
    assert unknown.reason == "[standard] unknown field [size]"


def test_numbers_read_as_elastics_parser_reads_them() -> None:
    out = tr(reranker(rank_window_size="30", min_score="0.25", inference_id="other"))
    assert (out.body["ext"]["rerank"]["window"], out.body["ext"]["rerank"]["min_score"]) == (30, 1.25)
