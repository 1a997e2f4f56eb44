"""Score fusion and cutoffs through a real bridge in front of the real engine: _search, _msearch and templates.

The expected answers are computed here from the model's scores (read from a ``replace`` search) and the engine's
own scores and order (read from the engine directly), with the formulas written out, not imported.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bridge.config import Settings
from bridge.scoring.base import ScoringError
from tests.bridge_server import running_bridge
from tests.indices import create_index, delete_indices, scratch_name

pytestmark = pytest.mark.engine

INDEX = scratch_name("fusion-docs")
WINDOW = 30
WORDS = (
    "wind flow pressure wing shock heat boundary layer laminar turbulent supersonic nozzle drag lift".split()
)
QUERY = {"match": {"text": "wind boundary layer drag"}}
MAPPINGS = {"properties": {"title": {"type": "text"}, "text": {"type": "text"}}}


def documents(count: int) -> list[dict[str, Any]]:
    rng = random.Random(15)
    return [
        {
            "title": " ".join(rng.choices(WORDS, k=rng.randint(2, 5))) + f" {i}",
            "text": " ".join(rng.choices(WORDS, k=rng.randint(8, 30))),
        }
        for i in range(count)
    ]


def settings_for(opensearch_url: str, model: Path) -> Settings:
    rule = {
        "indices": [scratch_name("fusion-*")],
        "fields": ["title", "text"],
        "window": WINDOW,
        "model": "tiny",
        "keep_previous_score": True,
    }
    return Settings(
        upstream={"url": opensearch_url},
        models={"tiny": {"source": str(model), "dtype": "float32", "max_wait_ms": 1}},
        rules=[rule],
    )


@pytest.fixture(scope="module")
async def index(opensearch_url: str) -> AsyncIterator[None]:
    async with aiohttp.ClientSession() as http:
        await create_index(http, opensearch_url, INDEX, documents(80), MAPPINGS)
        try:
            yield
        finally:
            await delete_indices(http, opensearch_url, INDEX)


@pytest.fixture(scope="module")
async def bridge(opensearch_url: str, tiny_model: Path, index: None) -> AsyncIterator[str]:
    async with running_bridge(settings_for(opensearch_url, tiny_model)) as url:
        yield url


async def post(url: str, path: str, body: Any) -> tuple[int, Any, str]:
    async with aiohttp.ClientSession() as http:
        if isinstance(body, bytes):
            headers = {"Content-Type": "application/x-ndjson"}
            async with http.post(url + path, data=body, headers=headers) as response:
                return response.status, await response.json(), response.headers.get("X-Rerank", "")
        async with http.post(url + path, json=body) as response:
            return response.status, await response.json(), response.headers.get("X-Rerank", "")


async def search(url: str, body: dict[str, Any]) -> tuple[dict[str, Any], str]:
    status, answer, header = await post(url, f"/{INDEX}/_search", body)
    assert status == 200, answer
    return answer, header


def ids(answer: dict[str, Any]) -> list[str]:
    return [hit["_id"] for hit in answer["hits"]["hits"]]


def with_ext(ext: dict[str, Any] | bool, **body: Any) -> dict[str, Any]:
    return {"query": QUERY, **body, "ext": {"rerank": ext}}


class Window:
    """The window as the engine ranks it, and the model's score of each of its hits."""

    def __init__(self, engine_order: list[str], engine: dict[str, float], model: dict[str, float]) -> None:
        self.order = engine_order
        self.engine = engine
        self.model = model

    def ranked(self, final: dict[str, float]) -> list[str]:
        """Best final score first; ties keep the engine's order."""
        return sorted(self.order, key=lambda doc: (-final[doc], self.order.index(doc)))


@pytest.fixture(scope="module")
async def window(bridge: str, opensearch_url: str) -> Window:
    direct, _ = await search(opensearch_url, {"query": QUERY, "size": WINDOW})
    replaced, header = await search(bridge, with_ext({"combine": "replace"}, size=WINDOW))
    assert header == f"applied; model=tiny; window={WINDOW}; combine=replace"
    model = {hit["_id"]: hit["_score"] for hit in replaced["hits"]["hits"]}
    engine = {hit["_id"]: hit["fields"]["_engine_score"][0] for hit in replaced["hits"]["hits"]}
    assert engine == {hit["_id"]: hit["_score"] for hit in direct["hits"]["hits"]}
    found = Window(ids(direct), engine, model)
    assert found.ranked(model) != found.order  # the model disagrees with the engine: fusion has work to do
    return found


def min_max(values: dict[str, float]) -> dict[str, float]:
    low, high = min(values.values()), max(values.values())
    return {doc: 1.0 if high == low else (value - low) / (high - low) for doc, value in values.items()}


def linear(window: Window, alpha: float) -> dict[str, float]:
    model, engine = min_max(window.model), min_max(window.engine)
    return {doc: alpha * model[doc] + (1 - alpha) * engine[doc] for doc in window.order}


def rrf(window: Window, k: int) -> dict[str, float]:
    by_model = window.ranked(window.model)
    return {
        doc: 1 / (k + window.order.index(doc) + 1) + 1 / (k + by_model.index(doc) + 1) for doc in window.order
    }


def assert_scored(answer: dict[str, Any], expected_ids: Sequence[str], final: dict[str, float]) -> None:
    assert ids(answer) == list(expected_ids)
    for hit in answer["hits"]["hits"]:
        assert hit["_score"] == pytest.approx(final[hit["_id"]], rel=1e-9, abs=1e-12)


# --- _search ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("alpha", [0.0, 0.3, 1.0])
async def test_linear_is_alpha_times_the_models_min_max_plus_the_rest_times_the_engines(
    bridge: str, window: Window, alpha: float
) -> None:
    answer, header = await search(bridge, with_ext({"combine": "linear", "alpha": alpha}, size=WINDOW))
    assert header == f"applied; model=tiny; window={WINDOW}; combine=linear"
    final = linear(window, alpha)
    assert_scored(answer, window.ranked(final), final)
    assert answer["hits"]["max_score"] == pytest.approx(max(final.values()))
    if alpha == 0.0:
        assert ids(answer) == window.order  # the engine alone decides


async def test_rrf_sums_reciprocal_ranks_of_the_engine_and_the_model(bridge: str, window: Window) -> None:
    answer, header = await search(bridge, with_ext({"combine": "rrf", "rank_constant": 10}, size=WINDOW))
    assert header == f"applied; model=tiny; window={WINDOW}; combine=rrf"
    final = rrf(window, 10)
    assert_scored(answer, window.ranked(final), final)


async def test_the_engines_previous_score_is_kept_under_fusion(bridge: str, window: Window) -> None:
    answer, _ = await search(bridge, with_ext({"combine": "rrf"}, size=10))
    for hit in answer["hits"]["hits"]:
        assert hit["fields"]["_engine_score"] == [window.engine[hit["_id"]]]


async def test_min_score_answers_the_window_hits_that_reach_it_and_counts_them(
    bridge: str, window: Window
) -> None:
    final = linear(window, 0.5)
    threshold = sorted(final.values())[WINDOW // 2]
    passing = [doc for doc in window.ranked(final) if final[doc] >= threshold]
    body = with_ext({"combine": "linear", "min_score": threshold}, size=50)
    answer, _ = await search(bridge, body)
    assert_scored(answer, passing, final)
    assert answer["hits"]["total"] == {"value": len(passing), "relation": "eq"}
    paged, _ = await search(bridge, {**body, "from": 3, "size": 4})
    assert ids(paged) == passing[3:7] and paged["hits"]["total"]["value"] == len(passing)
    past, header = await search(bridge, {**body, "from": WINDOW + 5, "size": 5})
    assert header.startswith("applied") and ids(past) == [] and past["hits"]["total"]["value"] == len(passing)


async def test_min_score_above_every_hit_answers_no_hits(bridge: str) -> None:
    answer, _ = await search(bridge, with_ext({"combine": "rrf", "min_score": 1.0}))  # rrf is at most 2/61
    assert answer["hits"]["hits"] == [] and answer["hits"]["total"]["value"] == 0
    assert answer["hits"]["max_score"] is None


async def test_top_n_reranks_the_best_and_the_rest_follow_as_the_engine_answered(
    bridge: str, opensearch_url: str, window: Window
) -> None:
    direct, _ = await search(opensearch_url, {"query": QUERY, "size": WINDOW + 10})
    answer, _ = await search(bridge, with_ext({"top_n": 5}, size=WINDOW + 10))
    best = window.ranked(window.model)[:5]
    rest = [doc for doc in window.order if doc not in best]
    assert ids(answer) == best + rest + ids(direct)[WINDOW:]
    engine_scores = {hit["_id"]: hit["_score"] for hit in direct["hits"]["hits"]}
    for position, hit in enumerate(answer["hits"]["hits"]):
        expected = window.model[hit["_id"]] if position < 5 else engine_scores[hit["_id"]]
        assert hit["_score"] == expected
    assert answer["hits"]["total"] == direct["hits"]["total"]


async def test_score_transform_positive_maps_model_scores_as_elastic_does(
    bridge: str, window: Window
) -> None:
    answer, _ = await search(bridge, with_ext({"score_transform": "positive"}, size=WINDOW))
    final = {doc: max(s, 0) + min(math.exp(s), 1) for doc, s in window.model.items()}
    assert_scored(answer, window.ranked(window.model), final)


async def test_bad_fusion_options_are_the_engines_kind_of_400(bridge: str) -> None:
    for ext in ({"combine": "max"}, {"alpha": 2}, {"top_n": 0}, {"min_score": "x"}, {"fusion": "rrf"}):
        status, error, _ = await post(bridge, f"/{INDEX}/_search", with_ext(ext))
        assert status == 400 and error["status"] == 400, ext
        assert error["error"]["type"] == "x_content_parse_exception", ext


# --- _msearch and templates ------------------------------------------------------------------------------------


async def test_msearch_items_fuse_as_their_own_searches(
    bridge: str, opensearch_url: str, window: Window
) -> None:
    bodies = [
        with_ext({"combine": "linear", "alpha": 0.3}, size=10),
        with_ext({"combine": "rrf", "min_score": sorted(rrf(window, 60).values())[20]}, size=20),
        with_ext({"top_n": 3}, size=8),
        with_ext(False, size=10),
    ]
    lines = [json.dumps(line) for body in bodies for line in ({"index": INDEX}, body)]
    status, multi, header = await post(bridge, "/_msearch", ("\n".join(lines) + "\n").encode())
    assert status == 200 and header.startswith("applied")
    for body, item in zip(bodies, multi["responses"], strict=True):
        alone, _ = await search(bridge, body)
        assert item["status"] == 200
        assert [(h["_id"], h["_score"]) for h in item["hits"]["hits"]] == [
            (h["_id"], h["_score"]) for h in alone["hits"]["hits"]
        ]
        assert item["hits"]["total"] == alone["hits"]["total"]
    # the opted-out item is the engine's own answer
    direct, _ = await search(opensearch_url, {"query": QUERY, "size": 10})
    assert ids(multi["responses"][3]) == ids(direct)
    # the rrf + min_score item kept the 10 best (ranks 21..30 of the final scores are below the threshold)
    assert multi["responses"][1]["hits"]["total"] == {"value": 10, "relation": "eq"}


async def test_search_templates_carry_fusion_options(bridge: str, window: Window) -> None:
    template = {
        "source": {
            "size": "{{size}}",
            "query": {"match": {"text": "{{text}}"}},
            "ext": {"rerank": {"combine": "linear", "alpha": 0.7, "min_score": 0.5}},
        },
        "params": {"text": QUERY["match"]["text"], "size": WINDOW},
    }
    final = linear(window, 0.7)
    passing = [doc for doc in window.ranked(final) if final[doc] >= 0.5]
    status, answer, header = await post(bridge, f"/{INDEX}/_search/template", template)
    assert status == 200, answer
    assert header == f"applied; model=tiny; window={WINDOW}; combine=linear"
    assert_scored(answer, passing, final)
    assert answer["hits"]["total"]["value"] == len(passing)
    lines = [json.dumps({"index": INDEX}), json.dumps(template)]
    status, multi, _ = await post(bridge, "/_msearch/template", ("\n".join(lines) + "\n").encode())
    assert status == 200
    assert_scored(multi["responses"][0], passing, final)


# --- the scorer sees document keys; a failing model still answers the engine's page --------------------------


class RecordingScorer:
    """A model that scores by passage length and remembers the document keys it was given."""

    def __init__(self, name: str, fail: bool = False) -> None:
        self.name = name
        self.fail = fail
        self.keys: list[list[str | None] | None] = []

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def score(
        self, query: str, passages: Sequence[str], keys: Sequence[str | None] | None = None
    ) -> list[float]:
        self.keys.append(list(keys) if keys is not None else None)
        if self.fail:
            raise ScoringError("model unavailable")
        return [float(len(passage)) for passage in passages]


async def test_the_scorer_gets_index_and_id_of_every_window_hit(
    opensearch_url: str, tiny_model: Path, index: None, window: Window
) -> None:
    scorer = RecordingScorer("tiny")
    async with running_bridge(settings_for(opensearch_url, tiny_model), scorers={"tiny": scorer}) as url:
        await search(url, {"query": QUERY, "size": 5})
    assert scorer.keys == [[f"{INDEX}/{doc}" for doc in window.order]]


async def test_a_failing_model_answers_exactly_the_engines_page_whatever_the_cutoffs(
    opensearch_url: str, tiny_model: Path, index: None
) -> None:
    scorer = RecordingScorer("tiny", fail=True)
    body = with_ext({"combine": "rrf", "min_score": 0.5, "top_n": 2}, size=7)
    body["from"] = 3
    async with running_bridge(settings_for(opensearch_url, tiny_model), scorers={"tiny": scorer}) as url:
        answer, header = await search(url, body)
    direct, _ = await search(opensearch_url, {"query": QUERY, "size": 7, "from": 3})
    assert header == "skipped; reason=model_error"
    assert [(h["_id"], h["_score"]) for h in answer["hits"]["hits"]] == [
        (h["_id"], h["_score"]) for h in direct["hits"]["hits"]
    ]
    assert answer["hits"]["total"] == direct["hits"]["total"]
    assert answer["hits"]["max_score"] == direct["hits"]["max_score"]
