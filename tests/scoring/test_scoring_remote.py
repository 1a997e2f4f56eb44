"""The remote scorer against a real aiohttp server on 127.0.0.1 that speaks text-embeddings-inference's /rerank."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from bridge.scoring import ModelConfigError, ModelSettings, ScoringError
from bridge.scoring.remote import REMOTE_TEXT_CHARS, RemoteScorer
from tests.scoring.remote_servers import TEI, TEXTS, Scorers, free_port, raw_score, remote_settings


@pytest.fixture
async def tei() -> AsyncIterator[TEI]:
    server = await TEI().start()
    yield server
    await server.stop()


def settings(url: str, activation: str = "auto", cache_size: int = 0, **remote: Any) -> ModelSettings:
    return remote_settings([url], activation, cache_size, **remote)


@pytest.fixture
def make(tei: TEI, scorers: Scorers) -> Any:
    async def factory(**kwargs: Any) -> RemoteScorer:
        url = kwargs.pop("url", tei.url)
        return await scorers.start(settings(url, **kwargs))

    return factory


async def test_splits_above_the_batch_cap_concurrently_and_keeps_order(tei, make):
    tei.delay = 0.05
    scorer = await make(activation="identity")
    scores = await scorer.score("query", TEXTS)
    assert scores == pytest.approx([raw_score(t) for t in TEXTS])
    assert [len(call["texts"]) for call in tei.calls] == [4, 4, 2]
    assert tei.max_in_flight == 3, "the parts are sent at the same time"
    assert all(call["query"] == "query" and call["truncate"] is True for call in tei.calls)


async def test_raw_scores_follows_the_activation(tei, make):
    raw = await make(activation="identity")
    squashed = await make(activation="auto")
    assert await raw.score("q", ["abc"]) == pytest.approx([raw_score("abc")])
    assert await squashed.score("q", ["abc"]) == pytest.approx([1 / (1 + math.exp(-raw_score("abc")))])
    assert [call["raw_scores"] for call in tei.calls] == [True, False]
    for bad in ({"activation": "softmax"}, {"label": "entailment"}):
        with pytest.raises(ModelConfigError):
            RemoteScorer("x", settings(tei.url).model_copy(update=bad))


async def test_retries_5xx_and_gives_up_after_the_configured_tries(tei, make):
    tei.failures = [(503, {}), (502, {})]
    scorer = await make(retries=2)
    assert len(await scorer.score("q", ["a", "b"])) == 2
    assert len(tei.calls) == 3
    tei.calls.clear()
    tei.failures = [(503, {}), (503, {})]
    stingy = await make(retries=1)
    with pytest.raises(ScoringError, match=r"failed after 2 tries: http://127\.0\.0\.1:[0-9]+/rerank answered HTTP 503: scripted failure 503"):
        await stingy.score("q", ["a"])
    assert len(tei.calls) == 2


async def test_429_waits_for_retry_after(tei, make):
    tei.failures = [(429, {"Retry-After": "0.3"})]
    scorer = await make(retries=1)
    started = time.monotonic()
    assert len(await scorer.score("q", ["a"])) == 1
    assert time.monotonic() - started >= 0.3


async def test_timeout_is_a_scoring_error_without_resending(tei, make):
    tei.delay = 1.5
    scorer = await make(timeout_s=0.2, retries=3)
    started = time.monotonic()
    with pytest.raises(ScoringError, match=r"did not answer within 0\.20 s"):
        await scorer.score("q", ["a"])
    assert time.monotonic() - started < 1.0
    assert len(tei.calls) == 1


async def test_retries_stop_at_the_deadline(tei, make):
    tei.failures = [(500, {})] * 100
    scorer = await make(retries=50, backoff_s=0.1, deadline_s=0.5)
    started = time.monotonic()
    with pytest.raises(ScoringError):
        await scorer.score("q", ["a"])
    assert time.monotonic() - started < 0.8
    assert 2 <= len(tei.calls) <= 4


async def test_4xx_fails_at_once_with_the_servers_message(tei, make):
    scorer = await make(max_client_batch_size=8)  # more than this server takes
    with pytest.raises(ScoringError, match="maximum allowed batch size 4"):
        await scorer.score("q", TEXTS)
    assert [len(call["texts"]) for call in tei.calls].count(8) == 1, "a 4xx is not retried"


async def test_unreachable_server_is_retried_then_fails(make):
    port = free_port()
    scorer = await make(url=f"http://127.0.0.1:{port}", retries=2)
    with pytest.raises(ScoringError, match="failed after 3 tries: cannot reach") as caught:
        await scorer.score("q", ["a"])
    assert caught.value.__cause__ is not None


async def test_credentials_in_the_remote_url_never_reach_an_error_or_log_line(make, caplog):
    port = free_port()
    scorer = await make(url=f"http://tei-user:s3cret-pw@127.0.0.1:{port}", retries=0)
    with pytest.raises(ScoringError) as caught:
        await scorer.score("q", ["a"])
    assert "s3cret-pw" not in str(caught.value) and f"127.0.0.1:{port}" in str(caught.value)
    assert "s3cret-pw" not in caplog.text


async def test_malformed_response_is_a_scoring_error(tei, make):
    tei.malformed = True
    scorer = await make()
    with pytest.raises(ScoringError, match="malformed"):
        await scorer.score("q", ["a"])


async def test_cache_and_api_key(tei, make):
    scorer = await make(cache_size=10, api_key="s3cret")
    first = await scorer.score("q", ["a", "b"])
    assert await scorer.score("q", ["b", "a"]) == first[::-1]
    assert len(tei.calls) == 1
    assert tei.headers[0]["Authorization"] == "Bearer s3cret"


async def test_cancelled_call_leaves_the_scorer_usable(tei, make):
    scorer = await make()
    tei.delay = 1.0
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(scorer.score("q", TEXTS), timeout=0.1)
    tei.delay = 0.0
    assert len(await scorer.score("q", ["a"])) == 1


async def test_start_warms_up_and_tolerates_a_dead_server(tei, caplog):
    scorer = RemoteScorer("warm", settings(tei.url).model_copy(update={"warmup": True}))
    await scorer.start()
    await scorer.close()
    assert len(tei.calls) == 1
    dead = RemoteScorer("dead", settings("http://127.0.0.1:9", retries=0).model_copy(update={"warmup": True}))
    await dead.start()  # logs, does not raise: the server may come up later
    await dead.close()
    assert "did not answer the warm-up call" in caplog.text


async def test_huge_texts_and_lone_surrogates_are_bounded_before_sending(tei, make):
    scorer = await make()
    huge = "berlin people live " * 60_000  # 1.1 MB
    scores = await scorer.score(huge + "\ud800", [huge, "paris \udfff", "ok"])
    assert len(scores) == 3
    (call,) = tei.calls
    assert 0 < len(call["query"]) <= REMOTE_TEXT_CHARS and huge.startswith(call["query"])
    assert len(call["texts"][0]) <= REMOTE_TEXT_CHARS and call["texts"][1:] == ["paris \ufffd", "ok"]
