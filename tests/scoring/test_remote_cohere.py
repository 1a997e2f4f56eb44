"""The remote scorer speaking the Cohere-style rerank API to a scripted server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

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


@pytest.fixture
async def server() -> AsyncIterator[Cohere]:
    scripted = await Cohere().start()
    yield scripted
    await scripted.stop()


@pytest.fixture
def make(server: Cohere, scorers: Scorers) -> Any:
    async def factory(urls: list[str] | None = None, **kwargs: Any) -> RemoteScorer:
        return await scorers.start(cohere_settings(urls or [server.url], **kwargs))

    return factory


async def test_splits_above_the_cap_and_maps_any_order_back(server: Cohere, make: Any) -> None:
    server.delay = 0.05
    scorer = await make(api_key="c0here-key")
    scores = await scorer.score("query", TEXTS)
    assert scores == pytest.approx([sigmoid(raw_score(t)) for t in TEXTS])
    assert [len(call["documents"]) for call in server.calls] == [4, 4, 2]
    assert server.max_in_flight == 3, "the parts are sent at the same time"
    for call in server.calls:
        assert call["model"] == "minilm-l6-ce-v1" and call["query"] == "query"
        assert call["top_n"] == len(call["documents"]) and call["return_documents"] is False
        assert "raw_scores" not in call and "texts" not in call
    assert all(headers["Authorization"] == "Bearer c0here-key" for headers in server.headers)


async def test_identity_wanted_from_a_sigmoid_server_is_the_logit(server: Cohere, make: Any) -> None:
    scorer = await make(activation="identity")
    assert await scorer.score("q", TEXTS) == pytest.approx([raw_score(t) for t in TEXTS], abs=1e-6)
    assert "raw_scores" not in server.calls[0]


async def test_raw_scores_asks_for_logits_and_converts_them_when_sigmoid_is_wanted(
    server: Cohere, make: Any
) -> None:
    raw = await make(activation="identity", raw_scores=True)
    squashed = await make(activation="sigmoid", raw_scores=True)
    assert await raw.score("q", ["abc", "de"]) == pytest.approx([raw_score("abc"), raw_score("de")])
    assert await squashed.score("q", ["abc"]) == pytest.approx([sigmoid(raw_score("abc"))])
    assert [call["raw_scores"] for call in server.calls] == [True, True]


async def test_a_server_that_returns_logits_is_declared_so(server: Cohere, make: Any) -> None:
    scorer = await make(activation="sigmoid", raw_scores=True, score_activation="identity")
    assert await scorer.score("q", ["abc"]) == pytest.approx([sigmoid(raw_score("abc"))])


@pytest.mark.parametrize(
    ("status", "error", "shown"),
    [
        (401, {"message": "invalid api token"}, "HTTP 401: invalid api token"),  # Cohere
        (
            422,
            {"detail": "Model minilm-l6-ce-v1 not found"},
            "HTTP 422: Model minilm-l6-ce-v1 not found",
        ),  # Jina
        (400, {"error": {"message": "model `x` does not support `rerank`", "code": 400}}, "does not support"),
    ],
)
async def test_4xx_fails_at_once_with_the_servers_message(
    server: Cohere, make: Any, status: int, error: dict[str, Any], shown: str
) -> None:
    server.failures = [(status, {}, error)]
    scorer = await make(retries=3)
    with pytest.raises(ScoringError, match=shown):
        await scorer.score("q", ["a"])
    assert len(server.calls) == 1, "a 4xx is not retried"


async def test_a_batch_cap_above_the_servers_is_its_error(server: Cohere, make: Any) -> None:
    scorer = await make(max_client_batch_size=8)
    with pytest.raises(ScoringError, match="this server takes at most 4"):
        await scorer.score("q", TEXTS)


async def test_5xx_is_retried_then_gives_up(server: Cohere, make: Any) -> None:
    server.failures = [(503, {}, {"message": "overloaded"}), (502, {}, {"message": "bad gateway"})]
    scorer = await make(retries=2)
    assert len(await scorer.score("q", ["a", "b"])) == 2
    assert len(server.calls) == 3
    server.calls.clear()
    server.failures = [(500, {}, {"message": "boom"})] * 2
    stingy = await make(retries=1)
    with pytest.raises(
        ScoringError,
        match=r"failed after 2 tries: http://127\.0\.0\.1:[0-9]+/v2/rerank answered HTTP 500: boom",
    ):
        await stingy.score("q", ["a"])


async def test_429_waits_for_retry_after(server: Cohere, make: Any) -> None:
    server.failures = [(429, {"Retry-After": "0.3"}, {"message": "rate limited"})]
    scorer = await make(retries=1)
    started = time.monotonic()
    assert len(await scorer.score("q", ["a"])) == 1
    assert time.monotonic() - started >= 0.3


async def test_a_retry_after_beyond_the_deadline_fails_at_once(server: Cohere, make: Any) -> None:
    server.failures = [(429, {"Retry-After": "30"}, {"message": "rate limited"})]
    scorer = await make(retries=3, deadline_s=1.0)
    started = time.monotonic()
    with pytest.raises(ScoringError, match="rate limited"):
        await scorer.score("q", ["a"])
    assert time.monotonic() - started < 0.5


async def test_timeout_is_a_scoring_error_without_resending(server: Cohere, make: Any) -> None:
    server.delay = 1.5
    scorer = await make(timeout_s=0.2, retries=3)
    with pytest.raises(ScoringError, match=r"did not answer within 0\.20 s"):
        await scorer.score("q", ["a"])
    assert len(server.calls) == 1


async def test_retries_stop_at_the_deadline(server: Cohere, make: Any) -> None:
    server.failures = [(500, {}, {"message": "down"})] * 100
    scorer = await make(retries=50, backoff_s=0.1, deadline_s=0.5)
    started = time.monotonic()
    with pytest.raises(ScoringError):
        await scorer.score("q", ["a"])
    assert time.monotonic() - started < 0.8
    assert 2 <= len(server.calls) <= 4


@pytest.mark.parametrize(
    ("answer", "problem"),
    [
        ({"results": [{"index": 0, "relevance_score": 0.5}]}, "answered 1 of 2"),
        ({"results": [{"index": 0, "relevance_score": 0.5}, {"index": 0, "relevance_score": 0.1}]}, "twice"),
        (
            {"results": [{"index": 0, "relevance_score": 0.5}, {"index": 7, "relevance_score": 0.1}]},
            "out of range",
        ),
        (
            {"results": [{"index": 0, "relevance_score": 0.5}, {"index": 1, "relevance_score": "high"}]},
            "number",
        ),
        ({"message": "ok"}, "no results"),
    ],
)
async def test_bad_answers_are_scoring_errors(server: Cohere, make: Any, answer: Any, problem: str) -> None:
    server.malformed = answer
    scorer = await make(retries=3)
    with pytest.raises(ScoringError, match=f"malformed cohere response .*{problem}"):
        await scorer.score("q", ["a", "b"])
    assert len(server.calls) == 1, "a bad answer from the only endpoint is not asked again"


async def test_unreachable_server_is_retried_then_fails(make: Any) -> None:
    scorer = await make(urls=[f"http://127.0.0.1:{free_port()}/v1/rerank"], retries=2)
    with pytest.raises(ScoringError, match="failed after 3 tries: cannot reach"):
        await scorer.score("q", ["a"])


async def test_cancelled_call_leaves_the_scorer_usable(server: Cohere, make: Any) -> None:
    scorer = await make()
    server.delay = 1.0
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(scorer.score("q", TEXTS), timeout=0.1)
    server.delay = 0.0
    assert len(await scorer.score("q", ["a"])) == 1
    assert all(endpoint.in_flight == 0 for endpoint in scorer.pool.endpoints)
    assert scorer.pool.endpoints[0].up, "a cancelled request says nothing against the endpoint"


async def test_a_token_in_the_endpoints_query_string_reaches_no_error_or_log(
    make: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """aiohttp quotes the whole request URL in its errors (here: a redirect loop); the query is cut from them."""

    async def loop(request: web.Request) -> web.Response:
        raise web.HTTPTemporaryRedirect(str(request.url))  # keeps the POST: a loop

    app = web.Application()
    app.router.add_post("/rerank", loop)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        scorer = await make([f"http://127.0.0.1:{port}/rerank?token=t0k3n-s3cret"])
        with pytest.raises(ScoringError) as error:
            await scorer.score("q", ["a passage"])
    finally:
        await runner.cleanup()
    assert "redirect" in str(error.value).lower() or "bad response" in str(error.value)
    assert "t0k3n" not in str(error.value) and "t0k3n" not in caplog.text
