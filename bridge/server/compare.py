"""``/_bridge/compare``: the page that shows the engine's order and the bridge's side by side, and its API.

Served only with ``admin.compare: true``. Read-only: the page and its static files are GETs of files shipped in
the package, and the API runs one ``_search`` with the caller's own headers (credentials included), through the
same planning, scoring and fail-open as any search, so it shows nothing the caller could not search anyway.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import resources
from typing import Any

from aiohttp import web

from bridge.errors import bad_request, error_response, message_response
from bridge.ops.access_log import Handler, decision_key
from bridge.search.body import parse_off_loop, read_search_body
from bridge.search.compare import compare, compare_request
from bridge.search.engine import EngineReply
from bridge.search.json_codec import JSONRefused, dump_json
from bridge.server.state import state_key

PAGE = "/_bridge/compare"
API = "/_bridge/compare/api"
STATIC = "/_bridge/compare/static"
# Everything the page loads comes from the bridge itself; nothing inline, no frames, no plugins, no forms
# posted elsewhere. The hit texts are data, rendered as text nodes, so even a stored <script> stays text.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
_TYPES = {
    "index.html": "text/html",
    "compare.js": "text/javascript",
    "compare.css": "text/css",
}
_SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def static_text(name: str) -> str:
    """One of the page's files, as shipped in the package (``bridge/server/static/compare/``)."""
    return resources.files("bridge.server").joinpath("static", "compare", name).read_text(encoding="utf-8")


def _file_response(name: str) -> web.Response:
    response = web.Response(body=static_text(name).encode("utf-8"), content_type=_TYPES[name], charset="utf-8")
    response.headers.update(_SECURITY_HEADERS)
    return response


def _only(request: web.Request, allowed: tuple[str, ...]) -> web.Response | None:
    """The engine's 405 for a method the endpoint does not take; None when it takes it."""
    if request.method in allowed:
        return None
    shown = ",".join(method for method in allowed if method != "HEAD")
    response = message_response(
        405,
        f"Incorrect HTTP method for uri [{request.path}] and method [{request.method}], allowed: [{shown}]",
        with_status=True,
    )
    response.headers["Allow"] = shown
    return response


async def page(request: web.Request) -> web.Response:
    refused = _only(request, ("GET", "HEAD"))
    return refused or _file_response("index.html")


async def static(request: web.Request) -> web.Response:
    refused = _only(request, ("GET", "HEAD"))
    if refused is not None:
        return refused
    name = request.match_info["name"]
    if name not in _TYPES or name == "index.html":
        return error_response(
            404, "resource_not_found_exception", f"no handler found for uri [{request.path}] and method [GET]"
        )
    return _file_response(name)


async def api(request: web.Request) -> web.StreamResponse:
    """``POST {index, q | body, size?}``: both orders of that search as JSON (see ``bridge.search.compare``)."""
    refused = _only(request, ("POST",))
    if refused is not None:
        return refused
    state = request.app[state_key]
    settings = state.settings
    if "json" not in request.headers.get("Content-Type", "").lower():
        # A JSON content type also keeps other sites' pages out: a cross-origin one needs a CORS preflight,
        # which the bridge never grants.
        raise bad_request("the compare API takes a JSON body (Content-Type: application/json)")
    body = await read_search_body(
        request, settings.limits.max_search_body_bytes, settings.server.client_body_timeout_s
    )
    if not body.readable:
        raise bad_request("the compare request's body could not be decoded")
    try:
        payload: Any = await parse_off_loop(body.text)
    except JSONRefused as refusal:
        raise refusal.to_http_error() from None
    wanted = compare_request(payload)
    if not settings.models:
        raise bad_request("no rerank model is configured: there is nothing to compare")
    interceptor = state.interceptor
    result = await compare(settings, interceptor.engine, interceptor.reranker, wanted, request.headers)
    if isinstance(result, EngineReply):
        request[decision_key] = {"route": "compare", "outcome": "passthrough", "reason": "engine_error"}
        response = web.Response(status=result.status, body=result.body)
        response.headers["Content-Type"] = result.headers.get("Content-Type", "application/json; charset=UTF-8")
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response
    request[decision_key] = {
        "route": "compare",
        "outcome": "reranked" if result.reason is None and result.plan is not None else "skipped",
        "reason": result.reason,
    }
    response = web.Response(body=dump_json(result.as_dict()), content_type="application/json", charset="UTF-8")
    response.headers["X-Rerank"] = result.x_rerank
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


def add_compare_routes(app: web.Application, wrap: Callable[[Handler], Handler]) -> None:
    """The page, its static files and its API; every method reaches the handler, which answers 405 itself
    (the catch-all route would otherwise take a wrong method and say 404)."""
    app.router.add_route("*", PAGE, wrap(page))
    app.router.add_route("*", STATIC + "/{name}", wrap(static))
    app.router.add_route("*", API, wrap(api))
