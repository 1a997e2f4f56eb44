"""Both reranking dialects through the bridge, against the real engines.

OpenSearch 2.19 (``OPENSEARCH_URL``): apps written for neural-search's ``rerank`` processor name a pipeline the
bridge knows (URL, body id, inline) and pass ``ext.rerank.query_context``; the bridge reranks and the rest of the
pipeline reaches the engine. Elasticsearch 8.17 and 7.10 (``scripts/elasticsearch.sh`` on their own ports): the
``text_similarity_reranker`` retriever, which neither engine here can run itself, is run by the bridge; the
engine's own answers to retrievers it lacks reach the client as the engine gives them.
"""

from __future__ import annotations

import json
import math
import os
import random
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bridge.config import Settings
from tests.bridge_server import running_bridge
from tests.indices import create_index, delete_indices, scratch_name

pytestmark = pytest.mark.engine

REPO = Path(__file__).resolve().parents[2]
ES_SCRIPT = REPO / "scripts" / "elasticsearch.sh"
FIXTURES = Path(__file__).parent / "fixtures"
RULED, PLAIN = scratch_name("dl-ruled"), scratch_name("dl-plain")
WORDS = (
    "wind flow pressure wing shock heat boundary layer laminar turbulent nozzle drag lift vortex jet".split()
)
MATCH = {"match": {"text": "wing flow boundary layer"}}
MODEL_ID = "aBcD-ml-commons-model-id"
RERANK_PROCESSOR = {
    "rerank": {"ml_opensearch": {"model_id": MODEL_ID}, "context": {"document_fields": ["text"]}}
}
MAPPING = {"properties": {"title": {"type": "text"}, "text": {"type": "text"}, "kind": {"type": "keyword"}}}


def fixture(name: str) -> Any:
    """A request shape from tests/compat/fixtures, less its ``_comment`` (where the shape comes from)."""
    loaded = json.loads((FIXTURES / name).read_text(encoding="utf-8"))
    return {key: value for key, value in loaded.items() if key != "_comment"}


def documents(count: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    return [
        {
            "title": " ".join(rng.choices(WORDS, k=3)),
            "text": " ".join(rng.choices(WORDS, k=rng.randint(8, 30))),
            "kind": rng.choice(["paper", "note"]),
        }
        for _ in range(count)
    ]


async def post(
    http: aiohttp.ClientSession, url: str, body: Any, ndjson: bool = False
) -> tuple[int, Any, dict[str, str]]:
    if ndjson:
        data = "".join(json.dumps(line) + "\n" for line in body)
        headers = {"Content-Type": "application/x-ndjson"}
    else:
        data, headers = json.dumps(body), {"Content-Type": "application/json"}
    async with http.post(url, data=data, headers=headers) as response:
        return response.status, await response.json(content_type=None), dict(response.headers)


def ids(answer: dict[str, Any]) -> list[str]:
    return [hit["_id"] for hit in answer["hits"]["hits"]]


def assert_reranked(answer: dict[str, Any], engine_top: list[str], size: int) -> None:
    """The page is the best ``size`` of the engine's window, reordered by the model (scores descending)."""
    scores = [hit["_score"] for hit in answer["hits"]["hits"]]
    assert len(scores) == size and scores == sorted(scores, reverse=True)
    assert set(ids(answer)) <= set(engine_top)


def tiny_settings(url: str, tiny_model: Path, **extra: Any) -> Settings:
    return Settings(
        upstream={"url": url},
        models={
            "tiny": {
                "source": str(tiny_model),
                "dtype": "float32",
                "aliases": [MODEL_ID, "my-elastic-rerank"],
            }
        },
        rules=[{"indices": [RULED], "fields": ["text"], "window": 20, "enabled": False}],
        **extra,
    )


# ====================================================================== OpenSearch 2.19


@pytest.fixture(scope="module")
async def os_indices(opensearch_url: str) -> AsyncIterator[str]:
    async with aiohttp.ClientSession() as http:
        await create_index(http, opensearch_url, RULED, documents(60, 1), MAPPING)
        await create_index(http, opensearch_url, PLAIN, documents(40, 2), MAPPING)
        try:
            yield opensearch_url
        finally:
            await delete_indices(http, opensearch_url, RULED, PLAIN)


@pytest.fixture(scope="module")
async def os_bridge(os_indices: str, tiny_model: Path) -> AsyncIterator[str]:
    pipelines = {"rerank-only": {"response_processors": [RERANK_PROCESSOR]}}
    async with running_bridge(tiny_settings(os_indices, tiny_model, search_pipelines=pipelines)) as url:
        yield url


async def engine_top(http: aiohttp.ClientSession, engine: str, index: str, size: int) -> list[str]:
    status, answer, _ = await post(http, f"{engine}/{index}/_search", {"query": MATCH, "size": size})
    assert status == 200
    return ids(answer)


async def os_processor_types(http: aiohttp.ClientSession, engine: str) -> set[str]:
    async with http.get(f"{engine}/_nodes/search_pipelines") as response:
        nodes = (await response.json())["nodes"]
    kinds: set[str] = set()
    for node in nodes.values():
        for group in node.get("search_pipelines", {}).values():
            kinds.update(p["type"] for p in group)
    return kinds


def naming_the_pipeline(target: str, where: str, body: dict[str, Any]) -> str:
    """``target``, with the bridge's ``rerank-only`` pipeline named in the URL or (in place) in ``body``."""
    if where == "url":
        return target + "?search_pipeline=rerank-only"
    body["search_pipeline"] = "rerank-only"
    return target


@pytest.mark.parametrize("where", ["url", "body"])
async def test_opensearch_named_pipeline_with_query_context(
    os_bridge: str, os_indices: str, where: str
) -> None:
    request = fixture("opensearch_rerank_query_context.json")
    body = {"query": MATCH, "size": 5, "ext": request["ext"]}
    target = naming_the_pipeline(f"{os_bridge}/{PLAIN}/_search", where, body)
    async with aiohttp.ClientSession() as http:
        top = await engine_top(http, os_indices, PLAIN, 20)
        status, answer, headers = await post(http, target, body)
    assert status == 200, answer
    assert headers["X-Rerank"].startswith("applied; model=tiny; window=20")
    assert_reranked(answer, top, 5)


@pytest.mark.parametrize("where", ["url", "body"])
async def test_opensearch_named_pipeline_alone_asks_for_reranking(
    os_bridge: str, os_indices: str, where: str
) -> None:
    """No ``rerank`` anywhere in the request: naming the pipeline is enough (the interceptor's pre-check)."""
    body: dict[str, Any] = {"query": MATCH, "size": 5}
    target = naming_the_pipeline(f"{os_bridge}/{PLAIN}/_search", where, body)
    async with aiohttp.ClientSession() as http:
        top = await engine_top(http, os_indices, PLAIN, 20)
        status, answer, headers = await post(http, target, body)
    assert status == 200, answer
    assert headers["X-Rerank"].startswith("applied; model=tiny")
    assert_reranked(answer, top, 5)


async def test_opensearch_query_text_path(os_bridge: str, os_indices: str) -> None:
    body = {
        "query": MATCH,
        "size": 4,
        "search_pipeline": {"response_processors": [RERANK_PROCESSOR]},  # inline, rerank only
        "ext": {"rerank": {"query_context": {"query_text_path": "query.match.text.query"}}},
    }
    async with aiohttp.ClientSession() as http:
        top = await engine_top(http, os_indices, PLAIN, 20)
        status, answer, headers = await post(http, f"{os_bridge}/{PLAIN}/_search", body)
        # The same text given directly scores the same: the path found the query's words.
        direct = {**body, "ext": {"rerank": {"query_context": {"query_text": "wing flow boundary layer"}}}}
        _, same, _ = await post(http, f"{os_bridge}/{PLAIN}/_search", direct)
    assert status == 200 and headers["X-Rerank"].startswith("applied")
    assert_reranked(answer, top, 4)
    assert answer["hits"]["hits"] == same["hits"]["hits"]


async def test_opensearch_the_rest_of_an_inline_pipeline_runs_on_the_engine(
    os_bridge: str, os_indices: str
) -> None:
    """Processors other than the model rerank reach the engine as an inline pipeline; the rerank one never does."""
    rename = {"rename_field": {"field": "title", "target_field": "heading"}}
    body = {
        "query": MATCH,
        "size": 3,
        "search_pipeline": {"response_processors": [RERANK_PROCESSOR, rename]},
        "ext": {"rerank": {"query_context": {"query_text": "wing lift"}}},
    }
    async with aiohttp.ClientSession() as http:
        available = await os_processor_types(http, os_indices)
        status, answer, headers = await post(http, f"{os_bridge}/{PLAIN}/_search", body)
        _, direct, _ = await post(http, f"{os_indices}/{PLAIN}/_search", body)
    if "rename_field" in available:
        assert status == 200 and headers["X-Rerank"].startswith("applied")
        assert all(
            "heading" in hit["_source"] and "title" not in hit["_source"] for hit in answer["hits"]["hits"]
        )
    else:
        # This engine lacks search-pipeline-common, so it refuses the rewritten search, and that refusal is the
        # answer: it names the processor the engine was left, not the rerank one the bridge took (the client's
        # own request would only be refused for the ext section this engine cannot read).
        assert status == 400 and headers["X-Rerank"] == "skipped; reason=engine_error"
        assert answer["error"]["reason"] == "Invalid processor type rename_field"
        assert direct["error"]["reason"] != answer["error"]["reason"]


async def test_opensearch_pipeline_ids_the_bridge_does_not_know_go_to_the_engine(
    os_bridge: str, os_indices: str
) -> None:
    name = scratch_name("dl-pipe")
    async with aiohttp.ClientSession() as http:
        async with http.put(
            f"{os_indices}/_search/pipeline/{name}", json={"description": "engine-side"}
        ) as made:
            assert made.status == 200
        try:
            status, answer, headers = await post(
                http, f"{os_bridge}/{PLAIN}/_search?search_pipeline={name}", {"query": MATCH, "size": 2}
            )
            assert status == 200 and len(answer["hits"]["hits"]) == 2
            assert not headers.get("X-Rerank", "").startswith("applied")
            missing = scratch_name("dl-nopipe")
            status, answer, _ = await post(http, f"{os_bridge}/{PLAIN}/_search", {"search_pipeline": missing})
            assert status == 400 and answer["error"]["reason"] == f"Pipeline {missing} is not defined"
        finally:
            async with http.delete(f"{os_indices}/_search/pipeline/{name}"):
                pass


async def test_opensearch_unknown_model_id_is_a_400(os_bridge: str) -> None:
    processor = {"rerank": {"ml_opensearch": {"model_id": "nope"}, "context": {"document_fields": ["text"]}}}
    async with aiohttp.ClientSession() as http:
        status, answer, _ = await post(
            http, f"{os_bridge}/{PLAIN}/_search", {"search_pipeline": {"response_processors": [processor]}}
        )
    assert status == 400 and answer["status"] == 400
    assert answer["error"]["type"] == "illegal_argument_exception" and "[nope]" in answer["error"]["reason"]


async def test_opensearch_query_context_on_a_ruled_index(os_bridge: str, os_indices: str) -> None:
    body = {
        "query": MATCH,
        "size": 5,
        "ext": {"rerank": {"query_context": {"query_text": "turbulent nozzle"}}},
    }
    async with aiohttp.ClientSession() as http:
        top = await engine_top(http, os_indices, RULED, 20)
        status, answer, headers = await post(http, f"{os_bridge}/{RULED}/_search", body)
    assert status == 200 and headers["X-Rerank"].startswith("applied; model=tiny; window=20")
    assert_reranked(answer, top, 5)


async def test_opensearch_msearch_items_name_pipelines(os_bridge: str, os_indices: str) -> None:
    lines = [
        {"index": PLAIN},
        {
            "query": MATCH,
            "size": 3,
            "search_pipeline": "rerank-only",
            **fixture("opensearch_rerank_query_context.json"),
        },
        {"index": PLAIN},
        {"query": MATCH, "size": 3},
    ]
    async with aiohttp.ClientSession() as http:
        top = await engine_top(http, os_indices, PLAIN, 20)
        plain = await engine_top(http, os_indices, PLAIN, 3)
        status, answer, headers = await post(http, f"{os_bridge}/_msearch", lines, ndjson=True)
    assert status == 200 and headers["X-Rerank"].startswith("applied")
    first, second = answer["responses"]
    assert_reranked(first, top, 3)
    assert ids(second) == plain  # not reranked: the engine's order


async def test_opensearch_query_context_for_the_engines_own_pipeline_is_left_alone(
    os_bridge: str, os_indices: str
) -> None:
    body = {"query": MATCH, "ext": {"rerank": {"query_context": {"query_text": "x"}}}}
    async with aiohttp.ClientSession() as http:
        direct = await post(http, f"{os_indices}/{PLAIN}/_search", body)
        bridged = await post(http, f"{os_bridge}/{PLAIN}/_search", body)
    assert bridged[:2] == direct[:2]  # this engine has no neural-search: its own refusal of ext.rerank


# ====================================================================== Elasticsearch 8.17 and 7.10

ES_VERSIONS = {"8.17.4": 9261, "7.10.2": 9262}


@pytest.fixture(scope="module", params=list(ES_VERSIONS))
def es_engine(request: pytest.FixtureRequest) -> Iterator[tuple[str, str]]:
    """scripts/elasticsearch.sh on this module's own port per version; stopped afterwards if started here."""
    from tests.engine import start_with_script

    version: str = request.param
    port = ES_VERSIONS[version]
    saved = {key: os.environ.get(key) for key in ("ELASTICSEARCH_VERSION", "ELASTICSEARCH_PORT")}
    os.environ.update(ELASTICSEARCH_VERSION=version, ELASTICSEARCH_PORT=str(port))
    try:
        try:
            url, ours = start_with_script(ES_SCRIPT)
        except RuntimeError as error:
            pytest.skip(f"{error}: no Elasticsearch {version} to test against")
        try:
            yield version, url
        finally:
            if ours:
                subprocess.run([str(ES_SCRIPT), "stop"], check=False, env=dict(os.environ))
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture(scope="module")
async def es_bridge(es_engine: tuple[str, str], tiny_model: Path) -> AsyncIterator[tuple[str, str, str]]:
    version, engine = es_engine
    async with aiohttp.ClientSession() as http:
        await create_index(http, engine, PLAIN, documents(40, 3), MAPPING)
        try:
            async with running_bridge(tiny_settings(engine, tiny_model)) as url:
                yield version, engine, url
        finally:
            await delete_indices(http, engine, PLAIN)


def es_major(version: str) -> int:
    return int(version.split(".")[0])


async def test_elastic_reranker_runs_through_the_bridge(es_bridge: tuple[str, str, str]) -> None:
    _, engine, bridge = es_bridge
    body = fixture("elastic_text_similarity_reranker.json")
    async with aiohttp.ClientSession() as http:
        top = await engine_top(http, engine, PLAIN, 10)  # rank_window_size 10
        status, answer, headers = await post(http, f"{bridge}/{PLAIN}/_search", body)
    assert status == 200, answer
    assert headers["X-Rerank"].startswith("applied; model=tiny; window=10")
    assert_reranked(answer, top, 5)
    # Elastic's normalisation max(s, 0) + min(exp(s), 1) of the model's own score, as the bridge's own
    # dialect (no transform) gives it for the same window and text.
    own = {
        "query": body["retriever"]["text_similarity_reranker"]["retriever"]["standard"]["query"],
        "size": 10,
        "ext": {"rerank": {"query_text": "how does a wing produce lift", "fields": ["text"], "window": 10}},
    }
    async with aiohttp.ClientSession() as http:
        _, raw, _ = await post(http, f"{bridge}/{PLAIN}/_search", own)
    model_score = {hit["_id"]: hit["_score"] for hit in raw["hits"]["hits"]}
    for hit in answer["hits"]["hits"]:
        s = model_score[hit["_id"]]
        assert hit["_score"] == pytest.approx(max(s, 0) + min(math.exp(s), 1), rel=1e-5)
        assert hit["_score"] > 0


def _raw(normalised: float) -> float:
    """The model score Elastic's ``max(s, 0) + min(exp(s), 1)`` turned into ``normalised``."""
    return normalised - 1 if normalised >= 1 else math.log(normalised)


async def test_elastic_min_score_removes_hits_below_it(es_bridge: tuple[str, str, str]) -> None:
    _, _, bridge = es_bridge
    body = fixture("elastic_text_similarity_reranker.json")
    async with aiohttp.ClientSession() as http:
        _, full, _ = await post(http, f"{bridge}/{PLAIN}/_search", body)
        # Elastic's min_score is on the model's raw score (it normalises the hits it keeps afterwards).
        raw = [_raw(hit["_score"]) for hit in full["hits"]["hits"]]
        threshold = (raw[1] + raw[2]) / 2
        body["retriever"]["text_similarity_reranker"]["min_score"] = threshold
        status, answer, _ = await post(http, f"{bridge}/{PLAIN}/_search", body)
    assert status == 200, answer
    assert ids(answer) == ids(full)[:2]


async def test_elastic_page_past_the_window_is_cut_and_size_over_it_refused(
    es_bridge: tuple[str, str, str],
) -> None:
    _, _, bridge = es_bridge
    body = fixture("elastic_text_similarity_reranker.json")
    async with aiohttp.ClientSession() as http:
        status, answer, _ = await post(http, f"{bridge}/{PLAIN}/_search", {**body, "from": 8, "size": 5})
        assert status == 200 and len(answer["hits"]["hits"]) == 2  # hits 8 and 9 of rank_window_size 10
        status, answer, _ = await post(http, f"{bridge}/{PLAIN}/_search", {**body, "size": 20})
    assert status == 400
    assert answer["error"]["type"] == "action_request_validation_exception"
    assert answer["error"]["reason"] == (
        "Validation Failed: 1: [text_similarity_reranker] requires [rank_window_size: 10] "
        "be greater than or equal to [size: 20];"
    )


async def test_elastic_query_next_to_a_retriever_is_refused_as_the_engine_refuses_it(
    es_bridge: tuple[str, str, str],
) -> None:
    version, engine, bridge = es_bridge
    reranked = {**fixture("elastic_text_similarity_reranker.json"), "query": MATCH}
    async with aiohttp.ClientSession() as http:
        status, answer, _ = await post(http, f"{bridge}/{PLAIN}/_search", reranked)
        # The engine's own answer to the same mistake with the retriever it has (8.x: standard).
        own = await post(
            http, f"{engine}/{PLAIN}/_search", {"retriever": {"standard": {"query": MATCH}}, "query": MATCH}
        )
    assert (
        status == 400
        and answer["error"]["reason"] == "Validation Failed: 1: cannot specify [retriever] and [query];"
    )
    if es_major(version) >= 8:
        assert own[0] == 400
        assert (own[1]["error"]["type"], own[1]["error"]["reason"]) == (
            answer["error"]["type"],
            answer["error"]["reason"],
        )


async def test_elastic_retrievers_the_bridge_does_not_run_are_the_engines(
    es_bridge: tuple[str, str, str],
) -> None:
    """``rrf`` and a ``standard`` retriever alone reach the engine as sent: its answer, whatever it is."""
    _, engine, bridge = es_bridge
    bodies = [
        {
            "retriever": {
                "rrf": {"retrievers": [{"standard": {"query": MATCH}}, {"standard": {"query": MATCH}}]}
            }
        },
        {"retriever": {"standard": {"query": MATCH}}, "size": 3},
    ]
    async with aiohttp.ClientSession() as http:
        for body in bodies:
            direct = await post(http, f"{engine}/{PLAIN}/_search", body)
            bridged = await post(http, f"{bridge}/{PLAIN}/_search", body)
            assert bridged[0] == direct[0]
            if direct[0] == 200:
                assert ids(bridged[1]) == ids(direct[1])
            else:
                assert bridged[1]["error"] == direct[1]["error"]


async def test_elastic_the_engine_itself_lacks_the_reranker(es_bridge: tuple[str, str, str]) -> None:
    """What the README says: sent to these engines directly, the retriever is refused (7.10: no retrievers at all;
    8.17 basic: no inference plugin or licence); through the bridge it runs."""
    _, engine, bridge = es_bridge
    body = fixture("elastic_text_similarity_reranker.json")
    async with aiohttp.ClientSession() as http:
        direct = await post(http, f"{engine}/{PLAIN}/_search", body)
        bridged = await post(http, f"{bridge}/{PLAIN}/_search", body)
    assert direct[0] in (400, 403), direct
    assert bridged[0] == 200
