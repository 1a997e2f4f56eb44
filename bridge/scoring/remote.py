"""Scoring on separate servers: text-embeddings-inference's ``POST /rerank`` or the Cohere-style rerank API.

What is sent and how answers are read lives in :mod:`bridge.scoring.remote_protocols`; which server gets each
request in :mod:`bridge.scoring.remote_endpoints`. This module does the HTTP: texts above the server's batch
cap are split and the parts sent concurrently, each to the endpoint with the fewest requests in flight.
Connection errors, 500/502/503/504 and 429 are retried with exponential backoff (a 429 waits for its
``Retry-After``), on another endpoint when one is usable and then without waiting, but never past one
overall deadline per ``score()`` call. A timeout or an unreadable answer is retried only on another endpoint
(resending to a server that may still be working would double its load); any other 4xx is a configuration
or input problem and fails at once with the server's message. Every failure ends in :class:`ScoringError`,
on which the search answers in the engine's order.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from urllib.parse import urlsplit, urlunsplit

import aiohttp

from bridge.redact import hide_url_credentials, hide_url_secrets
from bridge.scoring.base import GuardedObserver, ScoringError, ScoringObserver
from bridge.scoring.cache import ScoreCache, score_through_cache
from bridge.scoring.remote_endpoints import Change, Endpoint, EndpointPool, Outcome
from bridge.scoring.remote_protocols import (
    BadAnswer,
    RemoteProtocol,
    build_protocol,
    error_message,
    retry_after,
)
from bridge.scoring.settings import ModelSettings, RemoteSettings
from bridge.scoring.truncation import cut_text, sanitize

log = logging.getLogger(__name__)

_RETRY_STATUS = frozenset({429, 500, 502, 503, 504})

# Characters of each text sent: the server truncates pairs to its model's input (8192 tokens for the longest
# rerankers TEI serves), which text averaging under 8 characters per token reaches well within 64 Ki characters;
# a 1 MiB query would otherwise be re-sent in every call and tokenised whole for every pair on the server.
REMOTE_TEXT_CHARS = 64 * 1024


def _bounded(text: str) -> str:
    """``text`` cut at a word boundary to :data:`REMOTE_TEXT_CHARS`, lone surrogates replaced (TEI's JSON
    parser refuses them)."""
    return sanitize(cut_text(text, REMOTE_TEXT_CHARS).text)


def endpoint_label(url: str) -> str:
    """What logs, errors and metrics call an endpoint: its URL without user:password, query or fragment."""
    try:
        parts = urlsplit(url)
        bare = urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
    except ValueError:
        bare = url.split("?", 1)[0].split("#", 1)[0]
    return hide_url_credentials(bare)


class _CallFailed(Exception):
    """One HTTP request that did not give scores, with what it says about the endpoint and about retrying.

    ``outcome`` is the metrics label (busy, server_error, client_error, unreachable, timeout, bad_response);
    ``retry`` is ``yes`` (any endpoint, after backoff), ``elsewhere`` (only on another endpoint) or ``no``.
    """

    def __init__(
        self, message: str, outcome: str, health: Outcome, retry: str, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.outcome = outcome
        self.health = health
        self.retry = retry
        self.retry_after = retry_after


class RemoteScorer:
    """Remote reranking servers behind the :class:`~bridge.scoring.base.Scorer` interface."""

    def __init__(self, name: str, settings: ModelSettings, observer: ScoringObserver | None = None) -> None:
        if settings.remote is None:
            raise ValueError(f"model {name!r} has no `remote` section")
        self.name = name
        self.settings = settings
        self.remote: RemoteSettings = settings.remote
        self.protocol: RemoteProtocol = build_protocol(name, settings)
        targets = [self.protocol.endpoint(url) for url in self.remote.endpoint_urls]
        self.pool = EndpointPool([(url, endpoint_label(url)) for url in targets], self.remote.eject_s)
        self._deadline = self.remote.deadline_s or self.remote.timeout_s * (self.remote.retries + 1)
        self._observer: ScoringObserver = GuardedObserver(observer)
        self._cache = ScoreCache(settings.cache_size)
        self._session: aiohttp.ClientSession | None = None
        for endpoint in self.pool.endpoints:
            self._observer.remote_endpoint_up(name, endpoint.label, True)

    async def start(self) -> None:
        """Open the connection pool and try one tiny call on every endpoint, so a misconfigured URL shows up
        in the start log (and a dead endpoint starts ejected); never fails: servers may come up later."""
        if self._session is not None:
            return
        key = self.remote.api_key
        headers = {"Authorization": f"Bearer {key.get_secret_value()}"} if key is not None else {}
        self._session = aiohttp.ClientSession(headers=headers)
        if self.settings.warmup:
            await asyncio.gather(*(self._warm_up(endpoint) for endpoint in self.pool.endpoints))

    async def _warm_up(self, endpoint: Endpoint) -> None:
        probe = self.pool.take(endpoint)
        try:
            await self._attempt(endpoint, probe, "warm-up", ["warm-up"], self.remote.timeout_s)
        except _CallFailed as exc:
            log.warning(
                "scorer %s: remote %s did not answer the warm-up call: %s", self.name, endpoint.label, exc
            )
        else:
            log.info("scorer %s: remote %s answers", self.name, endpoint.label)

    async def score(
        self, query: str, passages: Sequence[str], keys: Sequence[str | None] | None = None
    ) -> list[float]:
        """Scores from the servers; ``keys`` are ignored (scores are cached by query and passage text)."""
        if self._session is None:
            raise ScoringError(f"scorer {self.name} is not started")
        deadline = time.monotonic() + self._deadline
        sent_query = _bounded(query)

        async def compute(missing: list[str]) -> list[float]:
            return await self._score_texts(sent_query, [_bounded(text) for text in missing], deadline)

        return await score_through_cache(self._cache, self.name, query, passages, compute, self._observer)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
        self._cache.clear()

    def endpoint_states(self) -> list[dict[str, object]]:
        """How each endpoint is doing, for ``/_bridge/ready`` (labels carry no credentials)."""
        return [
            {
                "endpoint": endpoint.label,
                "state": self.pool.state(endpoint),
                "up": endpoint.up,
                "in_flight": endpoint.in_flight,
            }
            for endpoint in self.pool.endpoints
        ]

    async def _score_texts(self, query: str, texts: list[str], deadline: float) -> list[float]:
        if not texts:
            return []
        cap = self.remote.max_client_batch_size
        parts = [texts[i : i + cap] for i in range(0, len(texts), cap)]
        tasks = [asyncio.create_task(self._call_with_retries(query, part, deadline)) for part in parts]
        try:
            results = await asyncio.gather(*tasks)
        except BaseException:
            for task in tasks:
                task.cancel()
            raise
        return [score for part in results for score in part]

    async def _call_with_retries(self, query: str, texts: list[str], deadline: float) -> list[float]:
        delay = self.remote.backoff_s
        attempt = 0
        last: Endpoint | None = None
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                where = last.label if last is not None else self.pool.endpoints[0].label
                raise ScoringError(
                    f"scorer {self.name}: no time left for {where} (deadline {self._deadline} s)"
                )
            endpoint = self.pool.choose(avoid=(last,) if last is not None else ())
            probe = self.pool.take(endpoint)
            try:
                return await self._attempt(
                    endpoint, probe, query, texts, min(self.remote.timeout_s, remaining)
                )
            except _CallFailed as exc:
                attempt += 1
                last = endpoint
                following = self.pool.choose(avoid=(endpoint,))
                elsewhere = following is not endpoint and self.pool.usable(following)
                if exc.retry == "no" or (exc.retry == "elsewhere" and not elsewhere):
                    raise ScoringError(f"scorer {self.name}: {exc}") from exc.__cause__ or exc
                if elsewhere:
                    wait = self.pool.wait_s(following)  # another endpoint: at once, unless it is busy too
                else:
                    wait = max(delay, exc.retry_after or 0.0)
                    delay *= 2
                if attempt > self.remote.retries or time.monotonic() + wait >= deadline:
                    raise ScoringError(f"scorer {self.name}: failed after {attempt} tries: {exc}") from (
                        exc.__cause__ or exc
                    )
                log.warning("scorer %s: %s (try %d), retrying in %.2f s", self.name, exc, attempt, wait)
                if wait > 0:
                    await asyncio.sleep(wait)

    async def _attempt(
        self, endpoint: Endpoint, probe: bool, query: str, texts: list[str], seconds: float
    ) -> list[float]:
        """One request to ``endpoint`` (already taken from the pool), its outcome given back to the pool."""
        started = time.perf_counter()
        try:
            scores = await self._call(endpoint, query, texts, seconds)
        except _CallFailed as exc:
            self._finish(endpoint, probe, exc.outcome, exc.health, started, exc.retry_after)
            raise
        # Cancelled (the caller gave up: nothing learnt about the endpoint) or a bug.
        except BaseException as exc:
            kind = "cancelled" if isinstance(exc, asyncio.CancelledError) else "bad_response"
            self._finish(endpoint, probe, kind, Outcome.CANCELLED, started)
            raise
        self._finish(endpoint, probe, "ok", Outcome.OK, started)
        self._observer.batch_done(self.name, len(texts), 0, time.perf_counter() - started)
        return scores

    def _finish(
        self,
        endpoint: Endpoint,
        probe: bool,
        outcome: str,
        health: Outcome,
        started: float,
        wait: float | None = None,
    ) -> None:
        self._observer.remote_request(self.name, endpoint.label, outcome, time.perf_counter() - started)
        change = self.pool.release(endpoint, health, probe=probe, retry_after=wait)
        if change is not None:
            self._report(change)

    def _report(self, change: Change) -> None:
        label = change.endpoint.label
        if change.kind == "ejected":
            log.warning(
                "scorer %s: remote %s ejected for %.1f s (%d failures in a row)",
                self.name,
                label,
                change.seconds,
                change.endpoint.failures,
            )
            self._observer.remote_ejected(self.name, label)
            self._observer.remote_endpoint_up(self.name, label, False)
        else:
            log.info("scorer %s: remote %s answers again", self.name, label)
            self._observer.remote_endpoint_up(self.name, label, True)

    async def _call(self, endpoint: Endpoint, query: str, texts: list[str], seconds: float) -> list[float]:
        assert self._session is not None
        where = endpoint.label
        payload = self.protocol.payload(query, texts)
        try:
            async with self._session.post(
                endpoint.url, json=payload, timeout=aiohttp.ClientTimeout(total=seconds, sock_connect=seconds)
            ) as response:
                body = await response.text()
                status = response.status
                if status in _RETRY_STATUS:
                    message = f"{where} answered {error_message(status, body)}"
                    if status == 429:
                        wait = retry_after(response.headers.get("Retry-After"))
                        raise _CallFailed(message, "busy", Outcome.BUSY, "yes", wait)
                    raise _CallFailed(message, "server_error", Outcome.FAILED, "yes")
                if status >= 400:
                    kind = "server_error" if status >= 500 else "client_error"
                    message = f"{where} refused: {error_message(status, body)}"
                    raise _CallFailed(message, kind, Outcome.OK, "no")
                data = await response.json(content_type=None)
        except _CallFailed:
            raise
        except aiohttp.ConnectionTimeoutError as exc:
            raise _CallFailed(
                f"connecting to {where} timed out", "unreachable", Outcome.FAILED, "yes"
            ) from exc
        except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
            message = f"{where} did not answer within {seconds:.2f} s"
            raise _CallFailed(message, "timeout", Outcome.FAILED, "elsewhere") from exc
        except aiohttp.ClientConnectionError as exc:
            message = f"cannot reach {where}: {hide_url_secrets(str(exc))}"
            raise _CallFailed(message, "unreachable", Outcome.FAILED, "yes") from exc
        except (aiohttp.ClientError, ValueError) as exc:
            message = f"bad response from {where}: {hide_url_secrets(str(exc))}"
            raise _CallFailed(message, "bad_response", Outcome.FAILED, "elsewhere") from exc
        try:
            return self.protocol.scores(data, len(texts))
        except BadAnswer as exc:
            message = f"malformed {self.protocol.name} response from {where}: {exc}"
            raise _CallFailed(message, "bad_response", Outcome.FAILED, "elsewhere") from exc
