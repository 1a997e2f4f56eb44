"""The aiohttp application: bridge endpoints under ``/_bridge/``, searches intercepted, everything else relayed."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from aiohttp import web

from bridge.config import Settings
from bridge.errors import BridgeHTTPError, ClientDisconnected, error_response
from bridge.ops.access_log import Handler, access_logged
from bridge.scoring.base import Scorer
from bridge.search.endpoints import classify
from bridge.server.admin import add_admin_routes, is_reserved, refuse
from bridge.server.fidelity import drop_added_headers, record_headers
from bridge.server.protocol import bad_version_key
from bridge.server.relay import ClientTimeouts, client_timeouts_key, relay, send_whole
from bridge.server.state import BridgeState, state_key

log = logging.getLogger(__name__)


async def dispatch(request: web.Request) -> web.StreamResponse:
    """Every engine path: a search the interceptor takes, or a plain relay. ``/_bridge/…`` is never relayed."""
    state = request.app[state_key]
    if is_reserved(request.raw_path):
        return refuse(request)
    endpoint = classify(request.method, request.raw_path)
    if endpoint is None:
        return await relay(request, state.upstream)
    answer = await state.interceptor.handle(request, endpoint)
    if answer is not None:
        return answer
    return await relay(request, state.upstream)


def _client_gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


def engine_shaped_errors(handler: Handler) -> Handler:
    """No stack trace ever reaches a client: every failure leaves in the engine's error shape. A client that went
    away is not a failure (``ClientDisconnected``, logged by the access log)."""

    async def guarded(request: web.Request) -> web.StreamResponse:
        version = request.get(bad_version_key)
        if version is not None:
            refused = error_response(
                400, "illegal_argument_exception", f"unsupported HTTP version [{version}]"
            )
            refused.force_close()
            return refused
        try:
            response = await handler(request)
        except BridgeHTTPError as error:
            response = error.to_response()
        except (web.HTTPException, ClientDisconnected):
            raise
        except Exception as error:
            if isinstance(error, ConnectionError) and _client_gone(request):
                raise ClientDisconnected(web.Response(status=499), "closed") from error
            log.exception("unexpected failure", extra={"path": request.path, "method": request.method})
            return error_response(
                502, "bridge_exception", "the bridge failed to handle this request; see its log"
            )
        record_headers(response)
        if not response.prepared:
            await send_whole(request, response)
        return response

    return guarded


def create_app(settings: Settings, scorers: Mapping[str, Scorer] | None = None) -> web.Application:
    """Build the application. ``scorers`` replaces the configured models (tests inject their own)."""
    state = BridgeState.build(settings, scorers)
    app = web.Application(client_max_size=settings.limits.max_search_body_bytes)
    app[state_key] = state
    app[client_timeouts_key] = ClientTimeouts(
        body_s=settings.server.client_body_timeout_s, write_s=settings.server.client_write_timeout_s
    )

    # Wrappers rather than middlewares: the same guarantees for every route, without aiohttp's middleware
    # chain on each relayed request.
    def guarded(handler: Handler) -> Handler:
        return access_logged(engine_shaped_errors(handler), state.metrics)

    add_admin_routes(app, guarded)
    app.router.add_route("*", "/{tail:.*}", guarded(dispatch))
    app.on_response_prepare.append(drop_added_headers)
    app.on_startup.append(_start)
    app.on_cleanup.append(_close)
    return app


async def _start(app: web.Application) -> None:
    await app[state_key].start()


async def _close(app: web.Application) -> None:
    await app[state_key].close()
