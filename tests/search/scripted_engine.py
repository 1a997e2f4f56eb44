"""A scripted engine behind the real search interceptor: tests say what the engine answers and see what it was asked.

The interceptor reaches the engine only through :class:`~bridge.search.engine.EngineClient`; this is one, so
interception, merging and the engine's failure modes run without a live engine (and without endangering one).
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from multidict import CIMultiDict

from bridge.config import Settings
from bridge.errors import BridgeHTTPError
from bridge.ops.metrics import Metrics
from bridge.search.endpoints import classify
from bridge.search.engine import EngineReply
from bridge.search.interceptor import SearchInterceptor
from bridge.search.json_codec import dump_json, parse_json


@dataclass(frozen=True)
class Asked:
    method: str
    target: str
    headers: CIMultiDict[str]
    body: bytes
    relayed: bool
    """True for an untouched relay (the client's request as it came), False for the bridge's own request."""

    def json(self) -> Any:
        return parse_json(self.body)


Script = Callable[[Asked], EngineReply | Awaitable[EngineReply]]


class ScriptedEngine:
    """An :class:`EngineClient` answering with ``script``; every request lands in ``asked``."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.asked: list[Asked] = []

    async def exchange(
        self, method: str, target: str, headers: Mapping[str, str], body: bytes | None
    ) -> EngineReply:
        return await self._answer(Asked(method, target, CIMultiDict(headers), body or b"", False))

    async def relay(
        self,
        request: web.Request,
        *,
        target: str | None = None,
        body: bytes | None = None,
        drop_headers: tuple[str, ...] = (),
        add_headers: Mapping[str, str] | None = None,
    ) -> web.StreamResponse:
        headers: CIMultiDict[str] = CIMultiDict(request.headers)
        for name in drop_headers:
            headers.popall(name, None)
        data = body if body is not None else await request.read()
        reply = await self._answer(Asked(request.method, target or request.raw_path, headers, data, True))
        response = web.Response(status=reply.status, body=reply.body)
        response.headers.extend(reply.headers)
        response.headers.update(add_headers or {})
        return response

    async def _answer(self, asked: Asked) -> EngineReply:
        self.asked.append(asked)
        reply = self.script(asked)
        return await reply if inspect.isawaitable(reply) else reply


def reply(status: int, body: Any, **headers: str) -> EngineReply:
    raw = body if isinstance(body, bytes) else dump_json(body)
    return EngineReply(
        status, CIMultiDict({"Content-Type": "application/json; charset=UTF-8", **headers}), raw
    )


def engine_error(status: int, error_type: str, reason: str) -> EngineReply:
    cause = {"type": error_type, "reason": reason}
    return reply(status, {"error": {"root_cause": [cause], **cause}, "status": status})


def hits_answer(sources: Sequence[Mapping[str, Any]], size: int, index: str = "rr-docs") -> dict[str, Any]:
    """The engine's answer to a search of ``size``: documents in the given order, scores descending."""
    hits = [
        {"_index": index, "_id": str(i), "_score": float(len(sources) - i), "_source": dict(source)}
        for i, source in enumerate(sources[:size])
    ]
    return {
        "took": 1,
        "timed_out": False,
        "_shards": {"total": 1, "successful": 1, "skipped": 0, "failed": 0},
        "hits": {
            "total": {"value": len(sources), "relation": "eq"},
            "max_score": hits[0]["_score"] if hits else None,
            "hits": hits,
        },
    }


class WordScorer:
    """Scores a passage by how many of the query's words it holds: a model whose order a test can predict."""

    def __init__(self, name: str = "words") -> None:
        self.name = name
        self.queries: list[str] = []
        self.keys: list[list[str | None] | None] = []

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def score(
        self, query: str, passages: Sequence[str], keys: Sequence[str | None] | None = None
    ) -> list[float]:
        self.queries.append(query)
        self.keys.append(list(keys) if keys is not None else None)
        words = set(query.split())
        return [float(sum(word in words for word in passage.split())) for passage in passages]


def ruled_settings(**overrides: Any) -> Settings:
    """One model, one rule for ``rr-*`` on ``title``, window 5; ``upstream``/``limits`` overridable."""
    values: dict[str, Any] = {
        "models": {"words": {"source": "unused"}},
        "rules": [{"indices": ["rr-*"], "fields": ["title"], "window": 5, "model": "words"}],
    }
    values.update(overrides)
    return Settings(**values)


@asynccontextmanager
async def intercepting(
    engine: ScriptedEngine, settings: Settings | None = None, scorer: WordScorer | None = None
) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    """An HTTP client to a bridge front whose searches go through the real interceptor onto ``engine``."""
    settings = settings or ruled_settings()
    interceptor = SearchInterceptor(settings, engine, {"words": scorer or WordScorer()}, Metrics())
    try:
        async with front(interceptor, engine, settings) as client:
            yield client
    finally:
        await interceptor.close()


@asynccontextmanager
async def front(
    interceptor: SearchInterceptor, engine: ScriptedEngine, settings: Settings
) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    """An HTTP client to a bridge front: what ``interceptor`` answers, else ``engine``'s relay (as the server)."""

    async def handler(request: web.Request) -> web.StreamResponse:
        endpoint = classify(request.method, request.raw_path)
        try:
            answer = await interceptor.handle(request, endpoint) if endpoint is not None else None
        except BridgeHTTPError as error:
            return error.to_response()
        return answer if answer is not None else await engine.relay(request)

    app = web.Application(client_max_size=settings.limits.max_search_body_bytes)
    app.router.add_route("*", "/{tail:.*}", handler)
    async with TestClient(_EncodedBodies(app)) as client:
        yield client


class _EncodedBodies(TestServer):
    """As the bridge's own runner: request bodies reach the handler as the client encoded them."""

    async def _make_runner(self, **kwargs: Any) -> web.AppRunner:
        return web.AppRunner(self.app, auto_decompress=False, **kwargs)
