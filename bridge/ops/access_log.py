"""One structured log line per request, and the in-flight gauge. Never bodies, query strings or credentials."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Awaitable, Callable

from aiohttp import web

from bridge.errors import ClientDisconnected
from bridge.ops.metrics import Metrics

log = logging.getLogger("bridge.access")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
decision_key = web.RequestKey("rerank_decision", dict)


def access_logged(handler: Handler, metrics: Metrics) -> Handler:
    """``handler``, counted in the in-flight gauge and logged once it has answered. A client that goes away
    (or stops reading) is logged as 499 with ``disconnect`` saying which, at INFO: not the bridge's failure."""

    async def logged(request: web.Request) -> web.StreamResponse:
        started = time.perf_counter()
        status = 499  # stays so when the client goes away before an answer
        disconnect: str | None = None
        metrics.in_flight.inc()
        try:
            response = await handler(request)
            status = response.status
            return response
        except ClientDisconnected as gone:
            disconnect = gone.cause
            return gone.response
        except web.HTTPException as error:
            status = error.status
            raise
        except BaseException:  # cancelled: aiohttp noticed the client's connection close
            disconnect = "closed"
            raise
        finally:
            metrics.in_flight.dec()
            if log.isEnabledFor(logging.INFO):
                _log_line(request, status, started, disconnect)

    return logged


def _log_line(request: web.Request, status: int, started: float, disconnect: str | None) -> None:
    decision = request.get(decision_key, {"outcome": "passthrough"})
    if disconnect is not None:
        decision = {**decision, "disconnect": disconnect}
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
