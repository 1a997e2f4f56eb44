"""The bridge's own endpoints under ``/_bridge/``, a prefix no engine API uses."""

from __future__ import annotations

import json
from collections.abc import Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from bridge.errors import BridgeHTTPError
from bridge.ops.access_log import Handler
from bridge.server.state import state_key


async def health(request: web.Request) -> web.Response:
    """Liveness: the process answers. Nothing else is checked so a slow engine never restarts the bridge."""
    return web.json_response({"status": "ok"})


async def ready(request: web.Request) -> web.Response:
    """Readiness: models loaded and the engine answering; load balancers send traffic only then."""
    state = request.app[state_key]
    checks = {"models_loaded": state.models_ready.is_set(), "upstream": False}
    try:
        status, _, _ = await state.upstream.fetch_json("GET", "/", state.upstream.forward_headers({}), None)
        checks["upstream"] = status < 500
    except BridgeHTTPError:
        checks["upstream"] = False
    ok = all(checks.values())
    return web.Response(
        status=200 if ok else 503,
        body=json.dumps({"status": "ready" if ok else "not_ready", **checks}).encode(),
        content_type="application/json",
    )


async def metrics(request: web.Request) -> web.Response:
    body = request.app[state_key].metrics.exposition()
    response = web.Response(body=body)
    response.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return response


def add_admin_routes(app: web.Application, wrap: Callable[[Handler], Handler]) -> None:
    """``wrap`` gives the bridge's routes what every route gets (access log, engine-shaped errors)."""
    app.router.add_get("/_bridge/health", wrap(health))
    app.router.add_get("/_bridge/ready", wrap(ready))
    app.router.add_get("/_bridge/metrics", wrap(metrics))
