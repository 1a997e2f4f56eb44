"""Scripted rerank servers on 127.0.0.1 (TEI's ``/rerank``, the Cohere-style ``/v2/rerank``) and the settings
and scorer bookkeeping the ``test_remote_*`` / ``test_scoring_remote`` files share.

A plain module, not a test file, so that test files import their helpers from here instead of from each other.
"""

from __future__ import annotations

import asyncio
import math
import socket
from typing import Any, Self

from aiohttp import web

from bridge.scoring import ModelSettings, RemoteSettings
from bridge.scoring.base import ScoringObserver
from bridge.scoring.remote import RemoteScorer

TEXTS = [f"passage number {i} " + "x" * i for i in range(10)]


def raw_score(text: str) -> float:
    """The scripted servers' logit for a text: deterministic, spread over [-2, 2]."""
    return (len(text) % 17) / 4 - 2


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def free_port() -> int:
    """A port nothing listens on (for a server that refuses connections)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class ScriptedServer:
    """One scripted ``POST`` rerank route: records every call and its headers, counts calls in flight, waits
    ``delay`` before answering; subclasses say what to answer. It can be stopped and started again on the same
    port (a server that goes away and comes back)."""

    path = "/rerank"

    def __init__(self, max_batch: int) -> None:
        self.max_batch = max_batch
        self.calls: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.delay = 0.0
        self.in_flight = 0
        self.max_in_flight = 0
        self.port = 0
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.path}"

    async def start(self) -> Self:
        app = web.Application()
        app.router.add_post(self.path, self.rerank)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def rerank(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.calls.append(body)
        self.headers.append(dict(request.headers))
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.delay:
                await asyncio.sleep(self.delay)
            return self.answer(body)
        finally:
            self.in_flight -= 1

    def answer(self, body: dict[str, Any]) -> web.Response:
        raise NotImplementedError


class TEI(ScriptedServer):
    """A scripted TEI ``/rerank``: batch cap, answers in reverse order, injectable failures (status, headers)
    and malformed answers. ``url`` is the server's root, as TEI users configure it (the bridge adds
    ``/rerank``)."""

    def __init__(self, max_batch: int = 4) -> None:
        super().__init__(max_batch)
        self.failures: list[tuple[int, dict[str, str]]] = []
        self.malformed = False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def answer(self, body: dict[str, Any]) -> web.Response:
        if self.failures:
            status, headers = self.failures.pop(0)
            error = {"error": f"scripted failure {status}", "error_type": "overloaded"}
            return web.json_response(error, status=status, headers=headers)
        texts = body["texts"]
        if len(texts) > self.max_batch:
            message = f"batch size {len(texts)} > maximum allowed batch size {self.max_batch}"
            return web.json_response({"error": message, "error_type": "validation"}, status=413)
        if self.malformed:
            return web.json_response([{"index": 0}])
        ranks = []
        for index, text in enumerate(texts):
            score = raw_score(text)
            ranks.append({"index": index, "score": score if body["raw_scores"] else sigmoid(score)})
        return web.json_response(ranks[::-1])


class Cohere(ScriptedServer):
    """A scripted Cohere-style ``POST /v2/rerank`` (the shape of Cohere, Jina, vLLM, infinity): sigmoid
    ``relevance_score`` (the logit with ``raw_scores``), answers sorted by score as real servers do, a batch
    cap, injectable failures (status, headers, body) and malformed answers."""

    def __init__(self, max_batch: int = 4, path: str = "/v2/rerank") -> None:
        super().__init__(max_batch)
        self.path = path
        self.failures: list[tuple[int, dict[str, str], Any]] = []
        self.malformed: Any = None

    def answer(self, body: dict[str, Any]) -> web.Response:
        if self.failures:
            status, headers, error = self.failures.pop(0)
            return web.json_response(error, status=status, headers=headers)
        documents = body["documents"]
        if len(documents) > self.max_batch:
            message = f"{len(documents)} documents; this server takes at most {self.max_batch}"
            return web.json_response({"message": message}, status=400)
        if self.malformed is not None:
            return web.json_response(self.malformed)
        results = []
        for index, text in enumerate(documents):
            logit = raw_score(text)
            score = logit if body.get("raw_scores") else sigmoid(logit)
            results.append({"index": index, "relevance_score": score})
        results.sort(key=lambda entry: -entry["relevance_score"])
        return web.json_response({"id": "scripted", "results": results[: body["top_n"]], "meta": {}})


def remote_settings(
    urls: list[str], activation: str = "auto", cache_size: int = 0, **remote: Any
) -> ModelSettings:
    """A remote model's settings as the tests want them: short timeouts and backoff, a batch cap of 4, no
    warm-up; one URL goes in ``url``, several in ``urls``."""
    remote = {"timeout_s": 2.0, "backoff_s": 0.01, "max_client_batch_size": 4, **remote}
    where = {"url": urls[0]} if len(urls) == 1 else {"urls": urls}
    return ModelSettings(
        source="remote-model",
        activation=activation,  # type: ignore[arg-type]
        cache_size=cache_size,
        warmup=False,
        remote=RemoteSettings(**where, **remote),
    )


def cohere_settings(
    urls: list[str], activation: str = "auto", cache_size: int = 0, **remote: Any
) -> ModelSettings:
    """:func:`remote_settings` speaking the Cohere-style protocol to the shared model."""
    remote = {"protocol": "cohere", "model": "minilm-l6-ce-v1", **remote}
    return remote_settings(urls, activation, cache_size, **remote)


class Scorers:
    """The remote scorers one test started, so that its fixture closes every one of them afterwards."""

    def __init__(self) -> None:
        self.made: list[RemoteScorer] = []

    async def start(
        self, settings: ModelSettings, name: str = "remote", observer: ScoringObserver | None = None
    ) -> RemoteScorer:
        scorer = RemoteScorer(name, settings, observer)
        await scorer.start()
        self.made.append(scorer)
        return scorer

    async def close(self) -> None:
        for scorer in self.made:
            await scorer.close()
