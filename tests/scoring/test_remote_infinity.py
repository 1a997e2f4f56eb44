"""The remote scorer against a real serving engine: infinity-emb on 127.0.0.1, run by ``scripts/infinity.sh``.

infinity serves the shared cross-encoder (``minilm-l6-ce-v1``) from its directory, on the CPU, with its own
torch engine, in its own cached virtual environment (it pins numpy<2 and sentence-transformers<4). The tests
check what a scripted server cannot: that the bridge scoring through it (``protocol: cohere``) gives the scores
and order of the bridge's in-process scorer on the same model, for its default sigmoid and for
``raw_scores: true``; that a search through a running bridge in front of the real OpenSearch fails open when
the server dies and is reranked again once it is back; and that with two servers in ``urls`` one stopped
server fails no search. Skipped, with the script's reason, only where its venv cannot be made (no package
index, no venv module); the scripted servers of ``test_scoring_remote.py`` cover both protocols everywhere.
"""

from __future__ import annotations

import asyncio
import functools
import json
import re
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest

from bench.remote import InfinityServer, InfinityUnavailable, install_infinity
from bridge.config import Settings
from bridge.scoring.local import LocalScorer
from bridge.scoring.remote import RemoteScorer
from bridge.scoring.settings import ModelSettings, RemoteSettings
from tests.bridge_server import running_bridge
from tests.indices import create_index, delete_indices, scratch_name

pytestmark = pytest.mark.slow

NAME = "minilm-l6-ce-v1"
CRANFIELD = Path(__file__).resolve().parents[3] / "shared" / "collections" / "cranfield"
TOLERANCE = 1e-3


def cranfield() -> tuple[dict[str, dict[str, str]], list[tuple[str, str]], dict[str, list[str]]]:
    """The corpus by id, the queries in order, and each query's judged documents."""
    if not (CRANFIELD / "corpus.jsonl").is_file():
        pytest.skip(f"{CRANFIELD} is not present (shared test collections)")
    with open(CRANFIELD / "corpus.jsonl", encoding="utf8") as handle:
        corpus = {doc["_id"]: doc for doc in map(json.loads, handle)}
    with open(CRANFIELD / "queries.jsonl", encoding="utf8") as handle:
        queries = [(q["_id"], q["text"]) for q in map(json.loads, handle)]
    judged: dict[str, list[str]] = {}
    with open(CRANFIELD / "qrels.tsv", encoding="utf8") as handle:
        for line in handle:
            parts = line.split()
            if len(parts) >= 3 and parts[0] != "query-id" and parts[1] in corpus:
                judged.setdefault(parts[0], []).append(parts[1])
    return corpus, queries, judged


def query_sets(count: int = 4, size: int = 12) -> list[tuple[str, list[str]]]:
    """Realistic sets: a cranfield query with its judged documents, topped up with others (title + abstract)."""
    corpus, queries, judged = cranfield()
    ids = list(corpus)
    sets = []
    for number, (query_id, text) in enumerate(queries[:count]):
        chosen = judged.get(query_id, [])[: size // 2]
        chosen += [i for i in ids[number * 37 :] if i not in chosen][: size - len(chosen)]
        sets.append((text, [f"{corpus[i]['title']}\n{corpus[i]['text']}" for i in chosen]))
    return sets


def assert_same_ranking(local: list[float], remote: list[float]) -> None:
    """Scores within the tolerance, and every pair the local scores separate by more than it in the same order."""
    np.testing.assert_allclose(remote, local, atol=TOLERANCE, rtol=0)
    for i, a in enumerate(local):
        for j, b in enumerate(local):
            if a > b + TOLERANCE:
                assert remote[i] > remote[j], f"passages {i} and {j} swapped: {remote[i]} <= {remote[j]}"


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def venv(real_model: Path) -> str:
    try:
        return install_infinity(real_model)
    except InfinityUnavailable as exc:
        pytest.skip(f"infinity-emb cannot run here: {exc}")


def serve(model: Path) -> Iterator[InfinityServer]:
    server = InfinityServer(model=model, name=NAME, threads=1)
    try:
        server.start()
        yield server
    finally:
        server.stop()  # whatever this fixture started (a test may have killed and restarted it)


@pytest.fixture(scope="module")
def infinity(venv: str, real_model: Path) -> Iterator[InfinityServer]:
    yield from serve(real_model)


@pytest.fixture(scope="module")
def second_infinity(venv: str, real_model: Path) -> Iterator[InfinityServer]:
    yield from serve(real_model)


def local_settings(model: Path, activation: str = "sigmoid") -> ModelSettings:
    return ModelSettings(
        source=str(model), device="cpu", dtype="float32", activation=activation,
        workers=1, threads=1, cache_size=0, warmup=False,
    )  # fmt: skip


def remote_settings(urls: list[str], activation: str = "sigmoid", **remote: Any) -> ModelSettings:
    where: dict[str, Any] = {"url": urls[0]} if len(urls) == 1 else {"urls": urls}
    options: dict[str, Any] = {"timeout_s": 60.0, "retries": 1, "backoff_s": 0.05, "eject_s": 1.0, **remote}
    return ModelSettings(
        source="remote",
        activation=activation,
        cache_size=0,
        warmup=False,
        remote=RemoteSettings(protocol="cohere", model=NAME, **where, **options),
    )


@pytest.fixture(scope="module")
async def local_scorers(real_model: Path) -> AsyncIterator[dict[str, LocalScorer]]:
    scorers = {a: LocalScorer(f"local-{a}", local_settings(real_model, a)) for a in ("sigmoid", "identity")}
    for scorer in scorers.values():
        await scorer.start()
    yield scorers
    for scorer in scorers.values():
        await scorer.close()


async def remote_scores(settings: ModelSettings, sets: list[tuple[str, list[str]]]) -> list[list[float]]:
    scorer = RemoteScorer("infinity", settings)
    await scorer.start()
    try:
        return [await scorer.score(query, passages) for query, passages in sets]
    finally:
        await scorer.close()


# ---------------------------------------------------------------- scores through infinity = in-process scores


@pytest.mark.parametrize("client_batch", [32, 5])
async def test_sigmoid_scores_match_the_in_process_scorer(
    infinity: InfinityServer, local_scorers: dict[str, LocalScorer], client_batch: int
) -> None:
    """infinity's default relevance_score is the sigmoid of the logit: the bridge's sigmoid activation as is;
    5 texts per call splits each set into parts that must come back in place."""
    sets = query_sets()
    remote = await remote_scores(
        remote_settings([infinity.rerank_url], max_client_batch_size=client_batch), sets
    )
    for (query, passages), scores in zip(sets, remote, strict=True):
        local = await local_scorers["sigmoid"].score(query, passages)
        assert_same_ranking(local, scores)
        assert all(0 < s < 1 for s in scores)


async def test_raw_scores_give_the_logits(
    infinity: InfinityServer, local_scorers: dict[str, LocalScorer]
) -> None:
    """``raw_scores: true`` makes infinity answer the logits, the bridge's identity activation."""
    sets = query_sets()
    remote = await remote_scores(remote_settings([infinity.rerank_url], "identity", raw_scores=True), sets)
    for (query, passages), scores in zip(sets, remote, strict=True):
        local = await local_scorers["identity"].score(query, passages)
        assert_same_ranking(local, scores)
        assert min(scores) < 0, "logits, not probabilities"


async def test_a_sigmoid_server_is_converted_to_the_wanted_logits(
    infinity: InfinityServer, local_scorers: dict[str, LocalScorer]
) -> None:
    """Without raw_scores the bridge turns infinity's probabilities back into the logits its activation asks for."""
    sets = query_sets(count=2)
    remote = await remote_scores(remote_settings([infinity.rerank_url], "identity"), sets)
    for (query, passages), scores in zip(sets, remote, strict=True):
        assert_same_ranking(await local_scorers["identity"].score(query, passages), scores)


# ---------------------------------------------------------------- through a bridge in front of OpenSearch

INDEX = scratch_name("infinity")
WINDOW = 8


@pytest.fixture(scope="module")
async def cranfield_index(opensearch_url: str) -> AsyncIterator[str]:
    corpus, _, _ = cranfield()
    docs = {
        doc_id: {"title": doc["title"], "text": doc["text"]} for doc_id, doc in list(corpus.items())[:200]
    }
    async with aiohttp.ClientSession() as http:
        await create_index(http, opensearch_url, INDEX, docs)
    try:
        yield INDEX
    finally:
        async with aiohttp.ClientSession() as http:
            await delete_indices(http, opensearch_url, INDEX)


def bridge_settings(opensearch_url: str, model: dict[str, Any]) -> Settings:
    return Settings(
        upstream={"url": opensearch_url},
        models={"ce": model},
        rules=[{"indices": [INDEX], "fields": ["title", "text"], "window": WINDOW, "timeout_ms": 60_000}],
    )


def remote_model(urls: list[str]) -> dict[str, Any]:
    where: dict[str, Any] = {"url": urls[0]} if len(urls) == 1 else {"urls": urls}
    return {
        "source": NAME,
        "activation": "sigmoid",
        "cache_size": 0,
        "remote": {"protocol": "cohere", "model": NAME, "timeout_s": 60, "retries": 1, "backoff_s": 0.05,
                   "eject_s": 1.0, **where},
    }  # fmt: skip


@functools.cache
def search_queries() -> list[str]:
    """Cranfield's first queries, as the text of ``match`` searches."""
    _, queries, _ = cranfield()
    return [text for _, text in queries[:6]]


def body(query: str) -> dict[str, Any]:
    return {"query": {"match": {"text": query}}, "size": WINDOW}


async def search(url: str, query: str, window: int | None = None) -> tuple[int, str, list[dict[str, Any]]]:
    """A ``match`` search through ``url`` (a bridge, or the engine itself); ``window`` widens it by ``ext.rerank``."""
    request = body(query)
    if window is not None:
        request.update(size=window, ext={"rerank": {"window": window}})
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{url}/{INDEX}/_search", json=request) as response,
    ):
        data = await response.json()
        hits = data["hits"]["hits"] if response.status == 200 else []
        return response.status, response.headers.get("X-Rerank", ""), hits


async def engine_hits(opensearch_url: str, query: str, size: int = WINDOW) -> list[dict[str, Any]]:
    """The engine's own answer to the search the bridge forwards."""
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{opensearch_url}/{INDEX}/_search", json={**body(query), "size": size}) as response,
    ):
        assert response.status == 200, await response.text()
        return list((await response.json())["hits"]["hits"])


def ranking(hits: list[dict[str, Any]]) -> list[tuple[str, float]]:
    return [(hit["_id"], hit["_score"]) for hit in hits]


def assert_hits_match(reranked: list[dict[str, Any]], reference: list[dict[str, Any]]) -> None:
    assert [h["_id"] for h in reranked] == [h["_id"] for h in reference]
    np.testing.assert_allclose(
        [h["_score"] for h in reranked], [h["_score"] for h in reference], atol=TOLERANCE
    )


@pytest.fixture(scope="module")
async def local_bridge(opensearch_url: str, cranfield_index: str, real_model: Path) -> AsyncIterator[str]:
    """The same rule on the in-process model: the reference answers."""
    model = {"source": str(real_model), "device": "cpu", "dtype": "float32", "activation": "sigmoid",
             "workers": 1, "threads": 1, "cache_size": 0, "warmup": False}  # fmt: skip
    async with running_bridge(bridge_settings(opensearch_url, model)) as url:
        yield url


async def reranked_until(url: str, query: str, seconds: float) -> tuple[str, list[dict[str, Any]]]:
    """Search until X-Rerank says applied (an ejected endpoint is probed again after its back-off)."""
    deadline = time.monotonic() + seconds
    while True:
        status, rerank, hits = await search(url, query)
        assert status == 200
        if rerank.startswith("applied") or time.monotonic() > deadline:
            return rerank, hits
        await asyncio.sleep(0.5)


@pytest.mark.engine
async def test_search_fails_open_while_infinity_is_down_and_reranks_again_after(
    opensearch_url: str, infinity: InfinityServer, local_bridge: str
) -> None:
    queries = search_queries()
    settings = bridge_settings(opensearch_url, remote_model([infinity.rerank_url]))
    scorer = RemoteScorer("ce", settings.models["ce"])  # ours, to see its calls in flight
    async with running_bridge(settings, {"ce": scorer}) as url:
        status, rerank, hits = await search(url, queries[0])
        assert status == 200 and rerank.startswith(f"applied; model=ce; window={WINDOW}"), rerank
        _, local_rerank, reference = await search(local_bridge, queries[0])
        assert local_rerank.startswith("applied"), local_rerank
        assert_hits_match(hits, reference)

        # Killed while it scores a search of 100 hits: that search still answers, in the engine's order.
        pending = asyncio.create_task(search(url, queries[1], window=100))
        deadline = time.monotonic() + 30
        while not any(state["in_flight"] for state in scorer.endpoint_states()):
            assert not pending.done() and time.monotonic() < deadline, "the bridge never called infinity"
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.2)  # infinity is reading or scoring 100 passages: seconds on one thread
        try:
            await asyncio.to_thread(infinity.kill)
            status, rerank, hits = await pending
            assert status == 200 and rerank == "skipped; reason=model_error", rerank
            assert ranking(hits) == ranking(await engine_hits(opensearch_url, queries[1], 100))

            started = time.monotonic()
            status, rerank, hits = await search(url, queries[2])
            assert status == 200 and rerank == "skipped; reason=model_error", rerank
            assert ranking(hits) == ranking(await engine_hits(opensearch_url, queries[2]))
            assert time.monotonic() - started < 10, "a refused connection fails fast, not at the timeout"
        finally:
            await asyncio.to_thread(infinity.start)  # the same port: the ejected endpoint is probed again

        rerank, hits = await reranked_until(url, queries[3], seconds=30)
        assert rerank.startswith("applied"), rerank
        _, _, reference = await search(local_bridge, queries[3])
        assert_hits_match(hits, reference)


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one Prometheus sample whose labels include ``labels`` (0 when absent)."""
    total = 0.0
    for line in text.splitlines():
        match = re.match(rf"{name}\{{(.*)\}} (\S+)$", line)
        if match and all(f'{k}="{v}"' in match.group(1) for k, v in labels.items()):
            total += float(match.group(2))
    return total


async def bridge_metrics(url: str) -> str:
    async with aiohttp.ClientSession() as http, http.get(f"{url}/_bridge/metrics") as response:
        return await response.text()


@pytest.mark.engine
async def test_two_servers_one_stopped_fail_no_search(
    opensearch_url: str, infinity: InfinityServer, second_infinity: InfinityServer, local_bridge: str
) -> None:
    up, down = infinity.rerank_url, second_infinity.rerank_url
    queries = search_queries()
    async with running_bridge(bridge_settings(opensearch_url, remote_model([up, down]))) as url:
        for query in queries[:4]:
            status, rerank, _ = await search(url, query)
            assert status == 200 and rerank.startswith("applied"), rerank
        before = await bridge_metrics(url)
        for endpoint in (up, down):
            ok = metric(before, "rerank_bridge_remote_requests_total", endpoint=endpoint, outcome="ok")
            assert ok >= 1, f"both servers get traffic: {endpoint} got none"

        await asyncio.to_thread(second_infinity.kill)
        for round_ in range(2):  # the second round also meets the stopped server's half-open probes
            for query in queries:
                status, rerank, hits = await search(url, query)
                assert status == 200 and rerank.startswith("applied"), (round_, query, rerank)
            await asyncio.sleep(1.0)  # eject_s: the stopped server is probed again
        _, _, reference = await search(local_bridge, queries[-1])
        assert_hits_match(hits, reference)

        after = await bridge_metrics(url)
        assert metric(after, "rerank_bridge_remote_requests_total", endpoint=down, outcome="unreachable") >= 1
        assert metric(after, "rerank_bridge_remote_ejections_total", endpoint=down) >= 1
        assert metric(after, "rerank_bridge_remote_endpoint_up", endpoint=down) == 0
        assert metric(after, "rerank_bridge_remote_endpoint_up", endpoint=up) == 1
        assert metric(after, "rerank_bridge_remote_requests_total", endpoint=up, outcome="ok") >= metric(
            before, "rerank_bridge_remote_requests_total", endpoint=up, outcome="ok"
        ) + 2 * len(queries)
