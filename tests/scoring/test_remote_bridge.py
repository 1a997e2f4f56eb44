"""End to end through a running bridge and the real engine: a rule's model scores on a scripted Cohere-style
server; when the server goes away the search fails open (the reason in ``X-Rerank``), when it comes back
reranking resumes; ``/_bridge/ready`` and ``/_bridge/metrics`` show each endpoint without its credentials."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from bridge.config import Settings
from tests.bridge_server import running_bridge
from tests.indices import create_index, delete_indices, scratch_name
from tests.scoring.remote_servers import Cohere, free_port, raw_score

pytestmark = pytest.mark.engine

INDEX = scratch_name("rr-remote")
API_KEY = "c0here-api-k3y"
WORDS = "wind flow pressure wing shock heat boundary layer laminar turbulent".split()
QUERY = {"query": {"match": {"text": "wind boundary layer"}}, "size": 10}


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


@pytest.fixture(scope="module")
async def index(opensearch_url: str) -> AsyncIterator[str]:
    docs = [
        {"text": f"wind {i} " + " ".join(WORDS[(i * 3 + k) % len(WORDS)] for k in range(3 + i % 5))}
        for i in range(30)
    ]
    async with aiohttp.ClientSession() as http:
        await create_index(http, opensearch_url, INDEX, docs)
        try:
            yield INDEX
        finally:
            await delete_indices(http, opensearch_url, INDEX)


@pytest.fixture
async def scorer_server() -> AsyncIterator[Cohere]:
    server = await Cohere(max_batch=8).start()
    yield server
    await server.stop()


@pytest.fixture
async def bridge(opensearch_url: str, index: str, scorer_server: Cohere) -> AsyncIterator[tuple[str, str]]:
    dead = f"http://127.0.0.1:{free_port()}/v2/rerank"
    settings = Settings(
        upstream={"url": opensearch_url},
        models={
            "ce": {
                "source": "remote-model",
                "cache_size": 0,  # every search asks the server
                "remote": {
                    "protocol": "cohere",
                    "urls": [scorer_server.url, dead],
                    "model": "minilm-l6-ce-v1",
                    "api_key": API_KEY,
                    "max_client_batch_size": 8,
                    "eject_s": 0.3,
                    "backoff_s": 0.02,
                    "timeout_s": 1.0,
                },
            }
        },
        rules=[{"indices": [index], "fields": ["text"], "window": 20, "model": "ce"}],
    )
    async with running_bridge(settings) as url:
        yield url, dead


async def search(http: aiohttp.ClientSession, url: str) -> tuple[dict[str, Any], str]:
    async with http.post(f"{url}/{INDEX}/_search", json=QUERY) as response:
        assert response.status == 200, await response.text()
        return await response.json(), response.headers.get("X-Rerank", "")


def ids(answer: dict[str, Any]) -> list[str]:
    return [hit["_id"] for hit in answer["hits"]["hits"]]


async def test_scores_remotely_fails_open_when_the_server_goes_and_resumes_when_it_returns(
    bridge: tuple[str, str], scorer_server: Cohere, opensearch_url: str
) -> None:
    url, dead = bridge
    async with aiohttp.ClientSession() as http:
        engine, _ = await search(http, opensearch_url)
        answer, header = await search(http, url)
        assert header == "applied; model=ce; window=20; combine=replace"
        hits = answer["hits"]["hits"]
        assert [hit["_score"] for hit in hits] == pytest.approx(
            sorted((sigmoid(raw_score(hit["_source"]["text"])) for hit in hits), reverse=True)
        )
        for hit in hits:
            assert hit["_score"] == pytest.approx(sigmoid(raw_score(hit["_source"]["text"])))
        windows = [call for call in scorer_server.calls if call["documents"] != ["warm-up"]]
        assert sorted(len(call["documents"]) for call in windows) == [4, 8, 8], (
            "the window split at the batch cap"
        )
        assert all(h["Authorization"] == f"Bearer {API_KEY}" for h in scorer_server.headers)

        async with http.get(f"{url}/_bridge/ready") as response:
            ready = await response.json()
        assert response.status == 200, "a dead scorer endpoint does not make the bridge unready"
        assert [(e["endpoint"], e["up"]) for e in ready["models"]["ce"]["endpoints"]] == [
            (scorer_server.url, True),
            (dead, False),
        ]
        async with http.get(f"{url}/_bridge/metrics") as response:
            metrics = await response.text()
        assert (
            f'rerank_bridge_remote_requests_total{{endpoint="{scorer_server.url}",model="ce",outcome="ok"}}'
            in metrics
        )
        assert f'rerank_bridge_remote_endpoint_up{{endpoint="{dead}",model="ce"}} 0.0' in metrics
        assert API_KEY not in metrics

        await scorer_server.stop()
        failed_open, header = await search(http, url)
        assert header == "skipped; reason=model_error"
        assert ids(failed_open) == ids(engine), "the engine's order, untouched"

        await scorer_server.start()  # the same port again
        await asyncio.sleep(0.35)  # past the ejection: the next request probes it
        resumed, header = await search(http, url)
        assert header.startswith("applied; model=ce")
        assert ids(resumed) == ids(answer)
