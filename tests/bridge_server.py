"""Running a real bridge on 127.0.0.1 inside a test, on a free port."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

from aiohttp import web

from bridge.config import Settings
from bridge.scoring.base import Scorer
from bridge.server.app import create_app
from bridge.server.run import make_runner


@asynccontextmanager
async def running_bridge(
    settings: Settings, scorers: Mapping[str, Scorer] | None = None
) -> AsyncIterator[str]:
    """Start the bridge as ``rerank-bridge serve`` would, yield its base URL, then shut it down."""
    app = create_app(settings, scorers)
    runner = make_runner(app, settings)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()
