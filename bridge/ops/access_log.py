"""One structured log line per request, and the in-flight gauge. Never bodies, query strings or credentials."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.typedefs import Middleware

from bridge.ops.metrics import Metrics

log = logging.getLogger("bridge.access")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
decision_key = web.RequestKey("rerank_decision", dict)


def access_log(metrics: Metrics) -> Middleware:
    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.perf_counter()
        status = 499  # stays so when the client goes away before an answer
        metrics.in_flight.inc()
        try:
            response = await handler(request)
            status = response.status
            return response
        finally:
            metrics.in_flight.dec()
            if log.isEnabledFor(logging.INFO):
                _log_line(request, status, started)

    return middleware


def _log_line(request: web.Request, status: int, started: float) -> None:
    decision = request.get(decision_key, {"outcome": "passthrough"})
    log.info(
        "request",
        extra={
            "request_id": request.headers.get("X-Opaque-Id") or uuid.uuid4().hex[:16],
            "method": request.method,
            "path": request.path,
            "status": status,
            "duration_ms": round((time.perf_counter() - started) * 1000, 2),
            **decision,
        },
    )
