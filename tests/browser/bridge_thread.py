"""A real bridge on its own event loop in a background thread, for tests that drive a browser synchronously.

Selenium's calls block; a bridge served from the test's own event loop could not answer the browser while the
test waits on it. This runs :func:`tests.bridge_server.running_bridge` (exactly what the other end-to-end tests
start) on a second loop and hands back its base URL.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from bridge.config import Settings
from bridge.scoring.base import Scorer
from tests.bridge_server import running_bridge

START_TIMEOUT_S = 180.0  # model loading included (a tiny model: seconds; the shared MiniLM: tens on a busy CPU)


@contextmanager
def bridge_in_thread(settings: Settings, scorers: Mapping[str, Scorer] | None = None) -> Iterator[str]:
    """Start the bridge, yield its ``http://127.0.0.1:<port>``, then drain it and join the thread."""
    started = threading.Event()
    url: list[str] = []
    failure: list[BaseException] = []
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()

    async def serve() -> None:
        try:
            async with running_bridge(settings, scorers) as base:
                url.append(base)
                started.set()
                await stop.wait()
        except BaseException as error:  # startup failed: the test's thread re-raises it
            failure.append(error)
            started.set()

    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), name="bridge", daemon=True)
    thread.start()
    try:
        if not started.wait(START_TIMEOUT_S):
            raise TimeoutError(f"the bridge did not start within {START_TIMEOUT_S:.0f}s")
        if failure:
            raise RuntimeError("the bridge failed to start") from failure[0]
        yield url[0]
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(60)
        if not thread.is_alive():
            loop.close()
