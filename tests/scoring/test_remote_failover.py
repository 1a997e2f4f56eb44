"""Several endpoints per remote model over real HTTP on 127.0.0.1: traffic spread by least in-flight, failing
endpoints ejected and probed back, one endpoint down never failing a search, per-endpoint metrics."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from bridge.ops.metrics import Metrics
from bridge.scoring import ScoringError
from bridge.scoring.remote import RemoteScorer
from tests.scoring.remote_servers import (
    TEXTS,
    Cohere,
    Scorers,
    cohere_settings,
    free_port,
    raw_score,
    sigmoid,
)

EXPECTED = [sigmoid(raw_score(t)) for t in TEXTS]


@pytest.fixture
async def pair() -> AsyncIterator[tuple[Cohere, Cohere]]:
    a, b = await Cohere(max_batch=100).start(), await Cohere(max_batch=100).start()
    yield a, b
    await a.stop()
    await b.stop()


@pytest.fixture
def make(scorers: Scorers) -> Any:
    async def factory(
        urls: list[str], observer: Any = None, warmup: bool = False, **remote: Any
    ) -> RemoteScorer:
        settings = cohere_settings(urls, **remote).model_copy(update={"warmup": warmup})
        return await scorers.start(settings, "ce", observer)

    return factory


async def test_parts_and_concurrent_searches_spread_over_both_endpoints(
    pair: tuple[Cohere, Cohere], make: Any
) -> None:
    a, b = pair
    a.delay = b.delay = 0.1
    scorer = await make([a.url, b.url], max_client_batch_size=2)
    results = await asyncio.gather(*(scorer.score(f"query {i}", TEXTS) for i in range(4)))
    assert all(scores == pytest.approx(EXPECTED) for scores in results)
    assert len(a.calls) == len(b.calls) == 10, "20 parts in flight at once: half each"
    assert a.max_in_flight == b.max_in_flight == 10
    a.calls.clear()
    b.calls.clear()
    a.delay, b.delay = 0.2, 0.01  # a slow endpoint holds its requests longer, so it gets fewer

    async def caller(n: int) -> None:
        until = time.monotonic() + 1.0
        while time.monotonic() < until:
            await scorer.score(f"caller {n} {time.monotonic()}", TEXTS[:2])

    await asyncio.gather(*(caller(n) for n in range(4)))
    assert len(b.calls) > 3 * len(a.calls) > 0


async def test_one_endpoint_refusing_connections_never_fails_a_search(
    pair: tuple[Cohere, Cohere], make: Any, caplog: pytest.LogCaptureFixture
) -> None:
    a, b = pair
    await a.stop()  # a refuses connections from now on
    scorer = await make([a.url, b.url], eject_s=0.3, backoff_s=0.5, retries=1)
    started = time.monotonic()
    for i in range(12):
        assert await scorer.score(f"search {i}", TEXTS) == pytest.approx(EXPECTED), f"search {i} failed open"
    assert time.monotonic() - started < 2.0, "a retry on the other endpoint does not wait for the backoff"
    ejected = scorer.pool.endpoints[0]
    assert not ejected.up and scorer.pool.state(ejected) in ("ejected", "half-open")
    assert "ejected for 0.3 s" in caplog.text
    await a.start()  # back, on the same port
    await asyncio.sleep(0.35)
    assert scorer.pool.state(ejected) == "half-open"
    for i in range(6):
        assert await scorer.score(f"again {i}", TEXTS) == pytest.approx(EXPECTED)
    assert ejected.up, "the probe succeeded"
    assert len(a.calls) >= 3, "a gets traffic again after its probe"


async def test_a_timing_out_endpoint_is_ejected_and_the_part_retried_elsewhere(
    pair: tuple[Cohere, Cohere], make: Any
) -> None:
    a, b = pair
    a.delay = 3.0
    scorer = await make([a.url, b.url], timeout_s=0.3, eject_s=5.0, max_client_batch_size=10)
    started = time.monotonic()
    first = await scorer.score("q", TEXTS)
    assert first == pytest.approx(EXPECTED)
    assert scorer.pool.state(scorer.pool.endpoints[0]) == "ejected" and scorer.pool.endpoints[1].up
    assert time.monotonic() - started < 1.5
    calls = len(a.calls)
    for i in range(5):
        assert await scorer.score(f"q{i}", TEXTS) == pytest.approx(EXPECTED)
    assert len(a.calls) == calls, "an ejected endpoint gets nothing"


async def test_5xx_and_bad_answers_go_to_the_other_endpoint(pair: tuple[Cohere, Cohere], make: Any) -> None:
    a, b = pair
    scorer = await make([a.url, b.url], backoff_s=1.0, max_client_batch_size=5)
    a.failures = [(503, {}, {"message": "loading"})]
    started = time.monotonic()
    assert await scorer.score("q1", TEXTS) == pytest.approx(EXPECTED)  # two parts: one each
    assert time.monotonic() - started < 0.5, "retried on b at once, not after the 1 s backoff"
    assert (len(a.calls), len(b.calls)) == (1, 2)
    assert [endpoint.up for endpoint in scorer.pool.endpoints] == [False, True]
    fresh = await make([a.url, b.url], max_client_batch_size=5)
    b.malformed = {"results": []}
    assert await fresh.score("q2", TEXTS) == pytest.approx(EXPECTED)
    assert [endpoint.up for endpoint in fresh.pool.endpoints] == [True, False], "garbage ejects too"


async def test_429_moves_to_the_other_endpoint_without_ejecting(
    pair: tuple[Cohere, Cohere], make: Any
) -> None:
    a, b = pair
    scorer = await make([a.url, b.url], max_client_batch_size=10)
    a.failures = [(429, {"Retry-After": "5"}, {"message": "slow down"})]
    started = time.monotonic()
    assert await scorer.score("q", TEXTS) == pytest.approx(EXPECTED)
    assert time.monotonic() - started < 1.0, "the retry did not wait for a's Retry-After"
    endpoint_a = scorer.pool.endpoints[0]
    assert endpoint_a.up and scorer.pool.wait_s(endpoint_a) > 4
    for i in range(4):
        await scorer.score(f"q{i}", TEXTS)
    assert len(a.calls) == 1, "a is left alone until its Retry-After"


async def test_every_endpoint_down_fails_within_the_deadline(make: Any) -> None:
    urls = [f"http://127.0.0.1:{free_port()}/rerank", f"http://127.0.0.1:{free_port()}/rerank"]
    scorer = await make(urls, retries=3, backoff_s=0.05, deadline_s=1.0)
    started = time.monotonic()
    with pytest.raises(ScoringError, match="cannot reach"):
        await scorer.score("q", ["a"])
    assert time.monotonic() - started < 1.2
    assert not any(endpoint.up for endpoint in scorer.pool.endpoints)
    with pytest.raises(ScoringError, match="cannot reach"):
        await scorer.score("q", ["a"])  # still tried: never a bare "no endpoint"


async def test_warm_up_tries_every_endpoint_and_a_dead_one_starts_ejected(
    pair: tuple[Cohere, Cohere], make: Any, caplog: pytest.LogCaptureFixture
) -> None:
    a, _ = pair
    dead = f"http://127.0.0.1:{free_port()}/rerank"
    caplog.set_level(logging.INFO, logger="bridge.scoring.remote")
    scorer = await make([a.url, dead], warmup=True, retries=0)
    assert len(a.calls) == 1 and a.calls[0]["documents"] == ["warm-up"]
    assert f"remote {a.url} answers" in caplog.text
    assert f"remote {dead} did not answer the warm-up call" in caplog.text
    assert [endpoint.up for endpoint in scorer.pool.endpoints] == [True, False]
    assert [state["state"] for state in scorer.endpoint_states()] == ["up", "ejected"]


async def test_metrics_name_each_endpoint_without_credentials(pair: tuple[Cohere, Cohere], make: Any) -> None:
    a, b = pair
    metrics = Metrics()
    secret_url = f"http://scorer:pa55w0rd-s3cret@127.0.0.1:{a.port}/v2/rerank?token=t0ken-s3cret"
    await a.stop()
    scorer = await make([secret_url, b.url], observer=metrics, eject_s=30.0)
    for i in range(3):
        assert await scorer.score(f"q{i}", TEXTS[:2]) == pytest.approx(EXPECTED[:2])
    text = metrics.exposition().decode()
    hidden = f"http://***@127.0.0.1:{a.port}/v2/rerank"
    assert (
        f'rerank_bridge_remote_requests_total{{endpoint="{hidden}",model="ce",outcome="unreachable"}} 1.0'
        in text
    )
    assert f'rerank_bridge_remote_requests_total{{endpoint="{b.url}",model="ce",outcome="ok"}} 3.0' in text
    assert f'rerank_bridge_remote_request_seconds_count{{endpoint="{b.url}",model="ce"}} 3.0' in text
    assert f'rerank_bridge_remote_ejections_total{{endpoint="{hidden}",model="ce"}} 1.0' in text
    assert f'rerank_bridge_remote_endpoint_up{{endpoint="{hidden}",model="ce"}} 0.0' in text
    assert f'rerank_bridge_remote_endpoint_up{{endpoint="{b.url}",model="ce"}} 1.0' in text
    assert "s3cret" not in text and "t0ken" not in text
    keyed = await make([b.url], observer=metrics, api_key="k3y-s3cret")
    await keyed.score("q", ["a"])
    assert "s3cret" not in metrics.exposition().decode()
    assert all("s3cret" not in str(state) for state in scorer.endpoint_states())
