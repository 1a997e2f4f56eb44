"""Running every query straight to the engine and through the bridge once per combination mode, timing each."""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from bridge.config import UpstreamSettings
from bridge.engine_access import credential_headers
from bridge.evaluation.modes import Mode
from bridge.redact import hide_url_credentials

PLACEHOLDER = "{{query_text}}"
QUERY_TYPES = ("best_fields", "most_fields", "cross_fields", "phrase", "phrase_prefix", "bool_prefix")


class RunError(Exception):
    """The runs cannot start (bad template, unreachable engine); the message says which and why."""


@dataclass
class Answer:
    """One path's answer to one query: the hit ids in order, their scores, and how long it took."""

    ids: list[str] = field(default_factory=list)
    scores: list[float | None] = field(default_factory=list)
    latency_ms: float = 0.0
    x_rerank: str | None = None
    error: str | None = None
    rerank_ms: float | None = None
    """The bridge's own ``Server-Timing: rerank;dur=``: model time, or a score-cache lookup."""


@dataclass
class ModeRun:
    """The engine's answers and each mode's bridge answers, keyed by query id in the order given."""

    engine: dict[str, Answer]
    modes: dict[str, dict[str, Answer]]
    wall_s: float


class QueryBuilder:
    """The search body for one query: ``multi_match`` over the fields, or the user's template."""

    def __init__(
        self,
        fields: Sequence[str],
        depth: int,
        query_type: str = "best_fields",
        template_file: Path | None = None,
    ) -> None:
        self.fields = list(fields)
        self.depth = depth
        self.query_type = query_type
        self.template: str | None = None
        if template_file is not None:
            try:
                self.template = template_file.read_text(encoding="utf-8")
            except OSError as error:
                raise RunError(f"cannot read query template {template_file}: {error.strerror}") from error
            if PLACEHOLDER not in self.template:
                raise RunError(f"query template {template_file}: no {PLACEHOLDER!r} placeholder for the query text")
            try:
                probe = json.loads(self.template.replace(PLACEHOLDER, "probe"))
            except ValueError as error:
                raise RunError(f"query template {template_file}: not JSON once filled in ({error})") from error
            if not isinstance(probe, dict):
                raise RunError(f"query template {template_file}: must be a search body (a JSON object)")

    def body(self, query_text: str) -> dict[str, Any]:
        """``size`` is always the evaluation depth; ``_source`` is off unless the template asks for it."""
        if self.template is not None:
            # json.dumps(...)[1:-1] escapes the text for a JSON string without its quotes.
            body: dict[str, Any] = json.loads(self.template.replace(PLACEHOLDER, json.dumps(query_text)[1:-1]))
        else:
            body = {
                "query": {"multi_match": {"query": query_text, "fields": self.fields, "type": self.query_type}}
            }
        body["size"] = self.depth
        body.setdefault("_source", False)
        return body

    def describe(self) -> dict[str, Any]:
        if self.template is not None:
            return {"template": json.loads(self.template.replace(PLACEHOLDER, "<query_text>"))}
        return {"multi_match": {"fields": self.fields, "type": self.query_type}}


def engine_headers(upstream: UpstreamSettings) -> dict[str, str]:
    """Content type plus the configured credentials, sent to both paths as a client would send them."""
    return {"Content-Type": "application/json", **credential_headers(upstream)}


class Searcher:
    """POSTs search bodies to ``{base}/{index}/_search`` on one pooled session."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        index: str,
        headers: Mapping[str, str],
        ssl_context: ssl.SSLContext | bool | None = None,
    ) -> None:
        self.session = session
        self.url = f"{base_url.rstrip('/')}/{index}/_search"
        self.headers = dict(headers)
        self.ssl = ssl_context if ssl_context is not None else True

    async def search(self, body: Mapping[str, Any]) -> tuple[Answer, dict[str, Any] | None]:
        payload = json.dumps(body).encode()
        started = time.perf_counter()
        try:
            async with self.session.post(self.url, data=payload, headers=self.headers, ssl=self.ssl) as response:
                raw = await response.read()
                elapsed = (time.perf_counter() - started) * 1000
                x_rerank = response.headers.get("X-Rerank")
                rerank_ms = server_timing(response.headers.get("Server-Timing"), "rerank")
                status = response.status
        except (aiohttp.ClientError, TimeoutError) as error:
            elapsed = (time.perf_counter() - started) * 1000
            return Answer(latency_ms=elapsed, error=describe_request_error(error, self.url)), None
        if status != 200:
            text = raw.decode("utf-8", "replace")[:300]
            return Answer(latency_ms=elapsed, x_rerank=x_rerank, error=f"HTTP {status}: {text}"), None
        try:
            document = json.loads(raw)
            hits = document["hits"]["hits"]
            answer = Answer(
                ids=[str(hit["_id"]) for hit in hits],
                scores=[hit.get("_score") for hit in hits],
                latency_ms=elapsed,
                x_rerank=x_rerank,
                rerank_ms=rerank_ms,
            )
        except (ValueError, KeyError, TypeError) as error:
            return Answer(latency_ms=elapsed, x_rerank=x_rerank, error=f"unreadable answer: {error!r}"), None
        return answer, document


def describe_request_error(error: BaseException, url: str) -> str:
    """The error's type and what went wrong, from a masked URL: aiohttp's URL errors are the raw URL itself,
    password included, so their text is never shown."""
    kind = type(error).__name__
    if isinstance(error, (aiohttp.InvalidURL, aiohttp.NonHttpUrlClientError)):
        return f"{kind}: {hide_url_credentials(url)}"
    detail = hide_url_credentials(str(error).replace(url, hide_url_credentials(url)))
    return f"{kind}: {detail}" if detail else kind


def server_timing(header: str | None, name: str) -> float | None:
    """``dur`` of one metric of a ``Server-Timing`` header (``upstream;dur=3.1, rerank;dur=40.2``)."""
    for entry in (header or "").split(","):
        metric, *parameters = (piece.strip() for piece in entry.split(";"))
        if metric != name:
            continue
        for parameter in parameters:
            key, _, value = parameter.partition("=")
            if key.strip() == "dur":
                try:
                    return float(value.strip().strip('"'))
                except ValueError:
                    return None
    return None


async def run_modes(
    queries: Mapping[str, str],
    builder: QueryBuilder,
    engine: Searcher,
    bridge: Searcher,
    modes: Sequence[Mode],
    concurrency: int,
    on_done: Callable[[], None] | None = None,
) -> ModeRun:
    """Each query to the engine, then to the bridge once per mode, back to back; ``concurrency`` queries at once.

    Back to back, the first mode pays for the model and the later ones find the window's scores in the
    bridge's score cache: what their latency then measures is the engine, the cache and the combination.
    Grouping one query's requests keeps every path under the same load, so their latencies compare fairly.
    """
    gate = asyncio.Semaphore(concurrency)
    engine_answers: dict[str, Answer] = {}
    mode_answers: dict[str, dict[str, Answer]] = {mode.label: {} for mode in modes}

    async def one(query_id: str, text: str) -> None:
        body = builder.body(text)
        async with gate:
            engine_answers[query_id], _ = await engine.search(body)
            for mode in modes:
                mode_answers[mode.label][query_id], _ = await bridge.search(mode.body(body))
        if on_done is not None:
            on_done()

    started = time.perf_counter()
    await asyncio.gather(*(one(query_id, text) for query_id, text in queries.items()))
    wall = time.perf_counter() - started
    order = list(queries)
    return ModeRun(
        engine={q: engine_answers[q] for q in order},
        modes={label: {q: answers[q] for q in order} for label, answers in mode_answers.items()},
        wall_s=wall,
    )


def latency_summary(answers: Mapping[str, Answer], of: str = "latency_ms") -> dict[str, float | int]:
    """p50/p95/mean/max in milliseconds over answered requests: client-side latency, or ``rerank_ms``."""
    import numpy as np

    values = [
        float(value) for a in answers.values() if a.error is None and (value := getattr(a, of)) is not None
    ]
    if not values:
        return {"count": 0}
    array = np.asarray(values)
    return {
        "count": len(values),
        "p50": round(float(np.percentile(array, 50)), 2),
        "p95": round(float(np.percentile(array, 95)), 2),
        "mean": round(float(array.mean()), 2),
        "max": round(float(array.max()), 2),
    }


def rerank_outcomes(answers: Mapping[str, Answer]) -> dict[str, Any]:
    """How the bridge answered: ``X-Rerank: applied`` counts, and every other header value with its count."""
    applied = 0
    other: dict[str, int] = {}
    for answer in answers.values():
        value = (answer.x_rerank or "").strip()
        if value.startswith("applied"):
            applied += 1
        else:
            key = value or ("error" if answer.error else "no X-Rerank header")
            other[key] = other.get(key, 0) + 1
    return {"applied": applied, "not_applied": other, "total": len(answers)}
