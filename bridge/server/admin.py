"""The bridge's own endpoints under ``/_bridge/``, a prefix no engine API uses and the bridge keeps for itself:
no ``/_bridge/…`` request, in any spelling, ever reaches the engine (with the bridge's credentials)."""

from __future__ import annotations

import json
from collections.abc import Callable
from urllib.parse import unquote

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from bridge.errors import BridgeHTTPError, error_response, message_response
from bridge.ops.access_log import Handler
from bridge.scoring.base import ReportsEndpoints
from bridge.server.compare import add_compare_routes
from bridge.server.state import state_key

PREFIX = "_bridge"
# The readiness probe's own deadline: a probe that waits for a busy pool says nothing a 503 would not.
_READY_TIMEOUT_S = 5.0


async def health(request: web.Request) -> web.Response:
    """Liveness: the process answers, and how busy the engine's connection pool is. Always 200, so a slow or
    saturated engine never restarts the bridge; ``status`` is ``saturated`` while requests queue for a
    connection (``/_bridge/ready`` is 503 then)."""
    pool = request.app[state_key].upstream.pool_state()
    status = "saturated" if pool["saturated"] else "ok"
    return web.json_response({"status": status, "upstream_pool": pool})


async def ready(request: web.Request) -> web.Response:
    """Readiness: models loaded, the engine answering and a connection free; load balancers send traffic only
    then. ``models`` says, per local model, the precision it scores in and its start-up precision check, and
    per remote model how each endpoint is doing (an ejected endpoint does not make the bridge unready: searches
    fail open)."""
    state = request.app[state_key]
    pool = state.upstream.pool_state()
    checks = {
        "models_loaded": state.models_ready.is_set(),
        "upstream": False,
        "upstream_pool": not pool["saturated"],
    }
    if checks["upstream_pool"]:
        try:
            status, _, _ = await state.upstream.fetch_json(
                "GET", "/", state.upstream.forward_headers({}), None, timeout_s=_READY_TIMEOUT_S
            )
            checks["upstream"] = status < 500
        except BridgeHTTPError:
            checks["upstream"] = False
    ok = all(checks.values())
    models: dict[str, dict[str, object]] = {name: report.as_dict() for name, report in state.precisions().items()}
    for name, model in state.settings.models.items():
        if model.remote is None and name in models:  # which runtime computes the precision shown
            models[name]["backend"] = model.backend
    for name, scorer in state.scorers.items():
        if isinstance(scorer, ReportsEndpoints):  # remote endpoints: shown, never a reason to be unready
            models.setdefault(name, {})["endpoints"] = scorer.endpoint_states()
    return web.Response(
        status=200 if ok else 503,
        body=json.dumps({"status": "ready" if ok else "not_ready", **checks, "models": models}).encode(),
        content_type="application/json",
    )


async def metrics(request: web.Request) -> web.Response:
    body = request.app[state_key].metrics.exposition()
    response = web.Response(body=body)
    response.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return response


_ROUTES = {"/_bridge/health": health, "/_bridge/ready": ready, "/_bridge/metrics": metrics}
_ALLOWED = ("GET", "HEAD")


def add_admin_routes(app: web.Application, wrap: Callable[[Handler], Handler]) -> None:
    """``wrap`` gives the bridge's routes what every route gets (access log, engine-shaped errors). The compare
    page exists only with ``admin.compare: true``; otherwise its paths are unknown ones (404, never relayed)."""
    for path, handler in _ROUTES.items():
        app.router.add_get(path, wrap(handler))
    if app[state_key].settings.admin.compare:
        add_compare_routes(app, wrap)


def is_reserved(raw_path: str) -> bool:
    """Whether a request target is under ``/_bridge`` in any spelling: ``//_bridge/x``, ``/%5Fbridge``."""
    path = raw_path.split("?", 1)[0]
    if "%" in path:
        path = unquote(path)
    if PREFIX not in path:  # the common case, answered without splitting
        return False
    return path.lstrip("/").split("/", 1)[0] == PREFIX


def refuse(request: web.Request) -> web.Response:
    """A ``/_bridge/…`` request no endpoint takes: 405 for a known endpoint, 404 for any other path."""
    path = request.path
    if path in _ROUTES and request.method not in _ALLOWED:
        response = message_response(
            405,
            f"Incorrect HTTP method for uri [{path}] and method [{request.method}], allowed: [GET]",
            with_status=True,
        )
        response.headers["Allow"] = "GET"
        return response
    # The engine says 400 "no handler found" here; a 404 in its full error shape tells a client (and a probe)
    # plainly that the bridge has no such endpoint, as the reservation promises.
    return error_response(
        404, "resource_not_found_exception", f"no handler found for uri [{path}] and method [{request.method}]"
    )
