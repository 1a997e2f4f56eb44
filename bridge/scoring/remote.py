"""Scoring on separate GPU servers that speak text-embeddings-inference's ``POST /rerank``.

Request ``{"query", "texts", "raw_scores", "truncate"}``; response ``[{"index": i, "score": s}, ...]`` in any
order. Requests above the server's batch cap are split and the parts sent concurrently. Connection errors,
5xx and 429 are retried with exponential backoff, but never past one overall deadline per ``score()`` call; any
other 4xx is a configuration or input problem and fails at once with the server's message.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Sequence
from typing import Any

import aiohttp

from bridge.redact import hide_url_credentials
from bridge.scoring.base import GuardedObserver, ModelConfigError, ScoringError, ScoringObserver
from bridge.scoring.cache import ScoreCache, score_through_cache
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


class _Retryable(Exception):
    """A failure worth another try (if the deadline allows)."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def _raw_scores(name: str, settings: ModelSettings) -> bool:
    """TEI gives raw logits with ``raw_scores: true``, a sigmoid of them otherwise; it has no labels."""
    if settings.label is not None:
        raise ModelConfigError(f"model {name!r}: TEI /rerank scores 1-label models only; remove `label`")
    if settings.activation == "softmax":
        raise ModelConfigError(f"model {name!r}: TEI /rerank has no softmax; use identity or sigmoid")
    return settings.activation == "identity"


def _error_message(status: int, body: str) -> str:
    try:
        data = json.loads(body)
        if isinstance(data, dict) and "error" in data:
            return f"HTTP {status}: {data['error']}"
    except ValueError:
        pass
    return f"HTTP {status}: {body[:300]}"


def _retry_after(headers: Any) -> float | None:
    value = headers.get("Retry-After")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


class RemoteScorer:
    """A TEI-compatible reranking server behind the :class:`~bridge.scoring.base.Scorer` interface."""

    def __init__(self, name: str, settings: ModelSettings, observer: ScoringObserver | None = None) -> None:
        if settings.remote is None:
            raise ValueError(f"model {name!r} has no `remote` section")
        self.name = name
        self.settings = settings
        self.remote: RemoteSettings = settings.remote
        self._raw_scores = _raw_scores(name, settings)
        self._url = str(self.remote.url).rstrip("/")
        if not self._url.endswith("/rerank"):
            self._url += "/rerank"
        # What logs and errors name: the URL without any user:password it may carry.
        self._where = hide_url_credentials(self._url)
        retries = self.remote.retries
        self._deadline = self.remote.deadline_s or self.remote.timeout_s * (retries + 1)
        self._observer: ScoringObserver = GuardedObserver(observer)
        self._cache = ScoreCache(settings.cache_size)
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        """Open the connection pool and try one tiny call, so a misconfigured URL shows up in the start log."""
        if self._session is not None:
            return
        key = self.remote.api_key
        headers = {"Authorization": f"Bearer {key.get_secret_value()}"} if key is not None else {}
        self._session = aiohttp.ClientSession(headers=headers)
        if self.settings.warmup:
            try:
                await self._score_texts("warm-up", ["warm-up"], time.monotonic() + self.remote.timeout_s)
                log.info("scorer %s: remote %s answers", self.name, self._where)
            except ScoringError as exc:
                log.warning(
                    "scorer %s: remote %s did not answer the warm-up call: %s", self.name, self._where, exc
                )

    async def score(
        self, query: str, passages: Sequence[str], keys: Sequence[str | None] | None = None
    ) -> list[float]:
        """Scores from the server; ``keys`` are ignored (scores are cached by query and passage text)."""
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
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ScoringError(
                    f"scorer {self.name}: no time left for {self._where} (deadline {self._deadline} s)"
                )
            try:
                return await self._call(query, texts, min(self.remote.timeout_s, remaining))
            except _Retryable as exc:
                attempt += 1
                wait = max(delay, exc.retry_after or 0.0)
                if attempt > self.remote.retries or time.monotonic() + wait >= deadline:
                    raise ScoringError(
                        f"scorer {self.name}: {self._where} failed after {attempt} tries: {exc}"
                    ) from exc.__cause__ or exc
                log.warning("scorer %s: %s (try %d), retrying in %.2f s", self.name, exc, attempt, wait)
                await asyncio.sleep(wait)
                delay *= 2

    async def _call(self, query: str, texts: list[str], seconds: float) -> list[float]:
        assert self._session is not None
        payload = {
            "query": query,
            "texts": texts,
            "raw_scores": self._raw_scores,
            "truncate": self.remote.truncate,
        }
        started = time.perf_counter()
        try:
            async with self._session.post(
                self._url, json=payload, timeout=aiohttp.ClientTimeout(total=seconds, sock_connect=seconds)
            ) as response:
                body = await response.text()
                if response.status in _RETRY_STATUS:
                    raise _Retryable(_error_message(response.status, body), _retry_after(response.headers))
                if response.status >= 400:
                    raise ScoringError(
                        f"scorer {self.name}: {self._where} refused: {_error_message(response.status, body)}"
                    )
                data = await response.json(content_type=None)
        except aiohttp.ConnectionTimeoutError as exc:
            raise _Retryable(f"connecting to {self._where} timed out") from exc
        except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
            # The server may still be working on it; resending would only double its load.
            raise ScoringError(
                f"scorer {self.name}: {self._where} did not answer within {seconds:.2f} s"
            ) from exc
        except aiohttp.ClientConnectionError as exc:
            raise _Retryable(f"cannot reach {self._where}: {exc}") from exc
        except (aiohttp.ClientError, ValueError) as exc:
            raise ScoringError(f"scorer {self.name}: bad response from {self._where}: {exc}") from exc
        self._observer.batch_done(self.name, len(texts), 0, time.perf_counter() - started)
        return self._parse(data, len(texts))

    def _parse(self, data: Any, count: int) -> list[float]:
        scores: list[float | None] = [None] * count
        try:
            for entry in data:
                index = int(entry["index"])
                if not 0 <= index < count or scores[index] is not None:
                    raise ValueError(f"index {index} out of range or repeated")
                scores[index] = float(entry["score"])
        except (TypeError, KeyError, ValueError) as exc:
            raise ScoringError(
                f"scorer {self.name}: malformed /rerank response from {self._where}: {exc}"
            ) from exc
        result = [score for score in scores if score is not None]
        if len(result) != count:
            raise ScoringError(f"scorer {self.name}: /rerank answered {len(result)} of {count} texts")
        return result
