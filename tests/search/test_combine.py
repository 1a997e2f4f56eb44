"""The combination rulebook: how the model's and the engine's scores make one order, and what the cutoffs leave."""

from __future__ import annotations

import math
from typing import Any

import pytest

from bridge.config import RuleSettings, Settings
from bridge.search import merge
from bridge.search.combine import Fusion, Linear, ReciprocalRank, Replace, choose, normalize, positive
from bridge.search.plan import Plan, plan_search
from bridge.search.request import QueryString


def rule(**values: object) -> RuleSettings:
    return RuleSettings.model_validate({"indices": ["docs"], "fields": ["title"], **values})


# --- replace -------------------------------------------------------------------------------------------------


def test_replace_answers_the_model_score_and_ignores_the_engine() -> None:
    assert Replace().combine([0.2, 3.0, -1.0], [9.0, None, 1.0]) == [0.2, 3.0, -1.0]


# --- normalisation ---------------------------------------------------------------------------------------------


def test_min_max_maps_the_window_onto_zero_to_one() -> None:
    assert normalize([2.0, 4.0, 3.0], "min_max") == [0.0, 1.0, 0.5]


def test_min_max_of_equal_scores_is_one_for_every_hit() -> None:
    """No spread, no order information: every hit keeps the signal's full weight (OpenSearch's min-max does)."""
    assert normalize([7.0, 7.0, 7.0], "min_max") == [1.0, 1.0, 1.0]
    assert normalize([7.0], "min_max") == [1.0]


def test_z_score_centres_on_the_mean_in_standard_deviations() -> None:
    z = normalize([1.0, 2.0, 3.0], "z_score")
    spread = math.sqrt(2 / 3)  # population standard deviation of 1, 2, 3
    assert z == pytest.approx([-1 / spread, 0.0, 1 / spread])


def test_z_score_of_equal_scores_is_zero() -> None:
    assert normalize([5.0, 5.0], "z_score") == [0.0, 0.0]


def test_none_keeps_raw_scores() -> None:
    assert normalize([0.9, 0.1], "none") == [0.9, 0.1]
    assert normalize([], "min_max") == []


# --- linear ----------------------------------------------------------------------------------------------------


def test_linear_weights_the_normalised_model_by_alpha_and_the_engine_by_one_minus_alpha() -> None:
    model = [0.0, 10.0, 5.0]  # min-max: 0, 1, 0.5
    engine: list[float | None] = [30.0, 10.0, 20.0]  # min-max: 1, 0, 0.5
    assert Linear(0.5, "min_max").combine(model, engine) == pytest.approx([0.5, 0.5, 0.5])
    assert Linear(0.8, "min_max").combine(model, engine) == pytest.approx([0.2, 0.8, 0.5])
    assert Linear(1.0, "min_max").combine(model, engine) == pytest.approx([0.0, 1.0, 0.5])
    assert Linear(0.0, "min_max").combine(model, engine) == pytest.approx([1.0, 0.0, 0.5])


def test_linear_without_normalisation_adds_raw_scores() -> None:
    assert Linear(0.25, "none").combine([0.8, 0.4], [2.0, 4.0]) == pytest.approx([1.7, 3.1])


def test_linear_with_z_scores() -> None:
    combined = Linear(0.5, "z_score").combine([1.0, 2.0, 3.0], [3.0, 2.0, 1.0])
    assert combined == pytest.approx([0.0, 0.0, 0.0])


def test_a_hit_without_an_engine_score_counts_as_the_windows_lowest() -> None:
    # Engine scores 8 and 4 → 1 and 0; the null one ranks with the lowest (0).
    assert Linear(0.5, "min_max").combine([1.0, 1.0, 1.0], [8.0, None, 4.0]) == pytest.approx([1.0, 0.5, 0.5])


def test_when_no_hit_has_an_engine_score_only_the_model_speaks() -> None:
    assert Linear(0.5, "min_max").combine([0.0, 4.0, 2.0], [None, None, None]) == pytest.approx(
        [0.0, 0.5, 0.25]
    )


# --- rrf -------------------------------------------------------------------------------------------------------


def test_rrf_sums_reciprocal_one_based_ranks() -> None:
    # engine ranks: a=1, b=2, c=3 (their order in the answer); model ranks: c=1, a=2, b=3
    fused = ReciprocalRank(60).combine([0.5, 0.1, 0.9], [3.0, 2.0, 1.0])
    assert fused == pytest.approx([1 / 61 + 1 / 62, 1 / 62 + 1 / 63, 1 / 63 + 1 / 61])


def test_rrf_ranks_the_engine_by_position_even_without_scores() -> None:
    assert ReciprocalRank(1).combine([1.0, 2.0], [None, None]) == pytest.approx(
        [1 / 2 + 1 / 3, 1 / 3 + 1 / 2]
    )


def test_rrf_model_ties_are_ranked_in_the_engines_order() -> None:
    fused = ReciprocalRank(10).combine([0.5, 0.5, 0.5], [None, None, None])
    assert fused == pytest.approx([2 / 11, 2 / 12, 2 / 13])


def test_a_smaller_rank_constant_favours_the_top_of_each_list() -> None:
    # a: engine 1st, model 3rd; b: engine 2nd, model 2nd. With small k the single first place wins.
    model, engine = [0.1, 0.5, 0.9], [3.0, 2.0, 1.0]
    small = ReciprocalRank(1).combine(model, engine)
    assert small[0] > small[1]
    large = ReciprocalRank(1000).combine(model, engine)
    assert large[0] == pytest.approx(large[1], rel=1e-5)


# --- score transform -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("score", [-30.0, -2.5, -0.1, 0.0, 0.3, 1.0, 12.0, 800.0])
def test_positive_is_elastics_normalisation(score: float) -> None:
    assert positive(score) == pytest.approx(max(score, 0) + min(math.exp(min(score, 700)), 1))


def test_positive_maps_negatives_into_zero_one_and_keeps_the_order() -> None:
    values = [-5.0, -1.0, 0.0, 0.5, 3.0]
    mapped = [positive(v) for v in values]
    assert all(0 < m < 1 for m in mapped[:2]) and mapped[2] == 1.0 and mapped[3] == 1.5
    assert mapped == sorted(mapped)
    assert positive(1e6) == 1e6 + 1  # no overflow for large logits


def test_the_transform_applies_before_combining_and_cutting() -> None:
    fusion = Fusion(Replace(), "positive", min_score=1.0)
    ranking = fusion.rank([-0.5, 0.0, 2.0], [3.0, 2.0, 1.0])
    assert ranking.scores == pytest.approx([math.exp(-0.5), 1.0, 3.0])
    assert ranking.reranked == [2, 1] and ranking.cut == [0]


# --- ordering and cutoffs --------------------------------------------------------------------------------------


def test_ties_in_the_final_score_keep_the_engines_order() -> None:
    ranking = Fusion(Replace()).rank([1.0, 2.0, 1.0, 2.0], [None] * 4)
    assert ranking.reranked == [1, 3, 0, 2]


def test_min_score_cuts_below_and_keeps_equal() -> None:
    ranking = Fusion(Replace(), min_score=0.5).rank([0.4, 0.5, 0.9, 0.1], [4.0, 3.0, 2.0, 1.0])
    assert ranking.reranked == [2, 1]
    assert ranking.cut == [0, 3] and ranking.unranked == []


def test_min_score_applies_to_the_final_combined_score() -> None:
    # linear, alpha 0.5, min-max: finals are 0.5, 0.5, 0.5 except where both agree
    model, engine = [0.0, 10.0, 10.0], [0.0, 0.0, 10.0]
    ranking = Fusion(Linear(0.5, "min_max"), min_score=0.75).rank(model, engine)
    assert ranking.scores == pytest.approx([0.0, 0.5, 1.0])
    assert ranking.reranked == [2] and ranking.cut == [0, 1]


def test_top_n_reranks_the_best_n_and_keeps_the_rest_in_engine_order() -> None:
    ranking = Fusion(Replace(), top_n=2).rank([0.1, 0.2, 0.9, 0.3, 0.8], [5.0, 4.0, 3.0, 2.0, 1.0])
    assert ranking.reranked == [2, 4]
    assert ranking.unranked == [0, 1, 3]  # the engine's order, not the model's (3 would precede 1)


def test_top_n_larger_than_the_window_reranks_everything() -> None:
    ranking = Fusion(Replace(), top_n=10).rank([0.1, 0.2], [2.0, 1.0])
    assert ranking.reranked == [1, 0] and ranking.unranked == []


def test_min_score_then_top_n() -> None:
    ranking = Fusion(Replace(), min_score=0.2, top_n=1).rank([0.1, 0.2, 0.9, 0.3], [4.0, 3.0, 2.0, 1.0])
    assert ranking.cut == [0]
    assert ranking.reranked == [2] and ranking.unranked == [1, 3]


def test_everything_below_min_score_leaves_nothing() -> None:
    ranking = Fusion(Replace(), min_score=5.0).rank([0.1, 0.2], [2.0, 1.0])
    assert ranking.reranked == [] and ranking.unranked == [] and ranking.cut == [0, 1]


def test_an_empty_window_ranks_nothing() -> None:
    for combiner in (Replace(), Linear(0.5, "min_max"), Linear(0.5, "z_score"), ReciprocalRank(60)):
        assert Fusion(combiner).rank([], []).reranked == []


def test_model_and_engine_scores_must_pair_up() -> None:
    with pytest.raises(ValueError, match="2 model scores for 1 hits"):
        Fusion(Replace()).rank([1.0, 2.0], [1.0])


# --- choosing the strategy from the effective rule -----------------------------------------------------------


def test_the_strategy_is_chosen_from_the_rule() -> None:
    assert choose(rule()) == Fusion(Replace())
    assert choose(rule(combine="linear", alpha=0.3, normalization="z_score")) == Fusion(
        Linear(0.3, "z_score")
    )
    assert choose(rule(combine="rrf", rank_constant=10)) == Fusion(ReciprocalRank(10))
    chosen = choose(rule(combine="rrf", min_score=0.02, top_n=5, score_transform="positive"))
    assert chosen == Fusion(ReciprocalRank(60), "positive", 0.02, 5)
    assert [choose(rule(combine=mode)).name for mode in ("replace", "linear", "rrf")] == [
        "replace",
        "linear",
        "rrf",
    ]


def test_rule_defaults() -> None:
    defaults = rule()
    assert (defaults.combine, defaults.alpha, defaults.normalization, defaults.rank_constant) == (
        "replace",
        0.5,
        "min_max",
        60,
    )
    assert (defaults.min_score, defaults.top_n, defaults.score_transform) == (None, None, "none")


@pytest.mark.parametrize(
    "values",
    [
        {"combine": "sum"},
        {"alpha": 1.5},
        {"alpha": -0.1},
        {"normalization": "l2"},
        {"rank_constant": 0},
        {"min_score": float("nan")},
        {"min_score": float("inf")},
        {"top_n": 0},
        {"score_transform": "sigmoid"},
    ],
)
def test_bad_rule_values_are_configuration_errors(values: dict[str, object]) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        rule(**values)


# --- through the merge: the window's order, the cutoffs, paging and hits.total ---------------------------------

SETTINGS = Settings(
    models={"m": {"source": "/m"}}, rules=[{"indices": ["docs"], "fields": ["title"], "window": 4}]
)


def planned(ext: dict[str, Any] | None = None, query: str = "", **body: Any) -> Plan:
    request = {"query": {"match": {"title": "jet"}}, **body}
    if ext is not None:
        request["ext"] = {"rerank": ext}
    decided = plan_search(SETTINGS, "docs", QueryString.parse(query), request)
    assert isinstance(decided, Plan)
    return decided


def engine_answer(count: int = 6, total: Any = None) -> dict[str, Any]:
    """Hits d0..d5 in the engine's order, scores 6, 5, 4...; the window (4) is d0..d3."""
    hits = [
        {"_index": "docs", "_id": f"d{i}", "_score": float(count - i), "_source": {}} for i in range(count)
    ]
    return {
        "took": 3,
        "hits": {
            "total": {"value": 42, "relation": "eq"} if total is None else total,
            "max_score": float(count),
            "hits": hits,
        },
    }


def ids(answer: dict[str, Any]) -> list[str]:
    return [hit["_id"] for hit in answer["hits"]["hits"]]


MODEL = [0.1, 0.9, 0.4, 0.6]  # for d0..d3


def test_replace_orders_the_window_and_keeps_the_hits_past_it() -> None:
    answer = merge.reranked(engine_answer(), planned(size=6), MODEL, 0.0)
    assert ids(answer) == ["d1", "d3", "d2", "d0", "d4", "d5"]
    assert [hit["_score"] for hit in answer["hits"]["hits"][:4]] == [0.9, 0.6, 0.4, 0.1]
    assert answer["hits"]["max_score"] == 0.9 and answer["hits"]["total"]["value"] == 42


def test_linear_fuses_with_the_engine_score() -> None:
    # model min-max: d0 0, d1 1, d2 0.375, d3 0.625; engine 6,5,4,3 min-max: 1, 2/3, 1/3, 0
    answer = merge.reranked(engine_answer(), planned({"combine": "linear"}, size=4), MODEL, 0.0)
    assert ids(answer) == ["d1", "d0", "d2", "d3"]
    assert [hit["_score"] for hit in answer["hits"]["hits"]] == pytest.approx(
        [(1 + 2 / 3) / 2, 0.5, (0.375 + 1 / 3) / 2, 0.625 / 2]
    )


def test_keep_previous_score_still_holds_the_engines_score() -> None:
    settings = Settings(
        models={"m": {"source": "/m"}},
        rules=[{"indices": ["docs"], "fields": ["title"], "window": 4, "keep_previous_score": True}],
    )
    body = {"query": {"match": {"title": "jet"}}, "ext": {"rerank": {"combine": "rrf"}}}
    plan = plan_search(settings, "docs", QueryString.parse(""), body)
    assert isinstance(plan, Plan)
    answer = merge.reranked(engine_answer(), plan, MODEL, 0.0)
    for hit in answer["hits"]["hits"][:4]:
        assert hit["fields"]["_engine_score"] == [6.0 - int(hit["_id"][1])]


def test_min_score_answers_only_the_window_hits_that_reach_it_and_counts_them() -> None:
    answer = merge.reranked(engine_answer(), planned({"min_score": 0.4}, size=10), MODEL, 0.0)
    assert ids(answer) == ["d1", "d3", "d2"]  # d0 is cut; d4, d5 were never scored and are not answered
    assert answer["hits"]["total"] == {"value": 3, "relation": "eq"}
    assert answer["hits"]["max_score"] == 0.9


def test_min_score_counts_exactly_even_where_the_engine_only_bounded_the_total() -> None:
    engine = engine_answer(total={"value": 10, "relation": "gte"})
    answer = merge.reranked(engine, planned({"min_score": 0.5}), MODEL, 0.0)
    assert answer["hits"]["total"] == {"value": 2, "relation": "eq"}


def test_min_score_with_total_hits_as_an_int_or_untracked() -> None:
    as_int = merge.reranked(engine_answer(total=42), planned({"min_score": 0.5}), MODEL, 0.0)
    assert as_int["hits"]["total"] == 2
    untracked = engine_answer()
    del untracked["hits"]["total"]
    assert "total" not in merge.reranked(untracked, planned({"min_score": 0.5}), MODEL, 0.0)["hits"]


def test_min_score_above_every_hit_answers_none_and_no_max_score() -> None:
    answer = merge.reranked(engine_answer(), planned({"min_score": 5}), MODEL, 0.0)
    assert ids(answer) == [] and answer["hits"]["total"]["value"] == 0
    assert answer["hits"]["max_score"] is None


def test_paging_applies_after_min_score() -> None:
    pages = [
        ids(
            merge.reranked(
                engine_answer(), planned({"min_score": 0.2}, size=2, **{"from": start}), MODEL, 0.0
            )
        )
        for start in (0, 2, 4)
    ]
    assert pages == [["d1", "d3"], ["d2"], []]


def test_a_page_past_the_window_is_empty_with_min_score() -> None:
    plan = planned({"min_score": 0.2}, size=2, **{"from": 4})
    answer = merge.reranked(engine_answer(), plan, MODEL, 0.0)
    assert ids(answer) == [] and answer["hits"]["total"]["value"] == 3


def test_top_n_reranks_the_best_and_keeps_the_rest_as_the_engine_answered() -> None:
    answer = merge.reranked(engine_answer(), planned({"top_n": 2}, size=6), MODEL, 0.0)
    assert ids(answer) == ["d1", "d3", "d0", "d2", "d4", "d5"]
    scores = [hit["_score"] for hit in answer["hits"]["hits"]]
    assert scores == [0.9, 0.6, 6.0, 4.0, 2.0, 1.0]  # past top_n: the engine's own scores, as past the window
    assert answer["hits"]["total"]["value"] == 42 and answer["hits"]["max_score"] == 0.9


def test_top_n_with_min_score_and_paging() -> None:
    plan = planned({"top_n": 1, "min_score": 0.2}, size=2, **{"from": 1})
    answer = merge.reranked(engine_answer(), plan, MODEL, 0.0)
    # kept: d1 (reranked), then d2, d3 in the engine's order; d0 cut; page [1:3]
    assert ids(answer) == ["d2", "d3"] and answer["hits"]["total"]["value"] == 3


def test_the_score_transform_reaches_the_answer() -> None:
    plan = planned({"score_transform": "positive"}, size=4)
    answer = merge.reranked(engine_answer(), plan, [-1.0, 2.0, 0.0, 1.0], 0.0)
    assert [hit["_score"] for hit in answer["hits"]["hits"]] == pytest.approx([3.0, 2.0, 1.0, math.exp(-1)])


def test_hits_with_null_engine_scores_are_fused_as_the_lowest() -> None:
    engine = engine_answer()
    engine["hits"]["hits"][0]["_score"] = None
    plan = planned({"combine": "linear", "alpha": 0.5}, size=4)
    answer = merge.reranked(engine, plan, [0.0, 0.0, 0.0, 0.0], 0.0)
    # model all equal (1 each after min-max); engine: d0 counts as 3 (lowest) → 0, d1 5 → 1, d2 → 0.5, d3 → 0
    assert ids(answer) == ["d1", "d2", "d0", "d3"]


def test_fail_open_is_exactly_the_engines_page_whatever_the_cutoffs() -> None:
    plan = planned({"min_score": 0.5, "top_n": 1, "combine": "rrf"}, size=3, **{"from": 1})
    engine = engine_answer()
    answer = merge.engine_order(engine, plan, 0.0)
    assert ids(answer) == ["d1", "d2", "d3"] and answer["hits"]["total"] == engine["hits"]["total"]
    assert answer["hits"]["max_score"] == 6.0


def test_document_keys_name_index_and_id() -> None:
    engine = engine_answer()
    del engine["hits"]["hits"][2]["_id"]
    assert merge.document_keys(engine, planned()) == ["docs/d0", "docs/d1", None, "docs/d3"]
