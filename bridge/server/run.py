"""Run the bridge until SIGTERM/SIGINT, then drain in-flight requests before exiting."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal

from aiohttp import web

from bridge.config import Settings
from bridge.ops.logs import configure_logging
from bridge.server.app import create_app
from bridge.server.protocol import BridgeRunner

log = logging.getLogger(__name__)


def make_runner(app: web.Application, settings: Settings) -> web.AppRunner:
    """The runner every entry point uses: request bodies stay as the client encoded them (gzip passes through);
    malformed requests and other HTTP versions get the engine's 400 (``protocol.py``)."""
    return BridgeRunner(
        app,
        auto_decompress=False,
        handle_signals=False,
        shutdown_timeout=settings.server.drain_timeout_s,
        access_log=None,
        # A client that goes away cancels its handler, so its pairs leave the model queue unscored.
        handler_cancellation=True,
    )


class StartupError(Exception):
    """The bridge cannot start; the message says which part failed."""


async def run_until_stopped(settings: Settings) -> None:
    app = create_app(settings)
    runner = make_runner(app, settings)
    try:
        await runner.setup()  # loads and warms the models
    except Exception as error:
        await runner.cleanup()
        raise StartupError(f"cannot load the configured models: {error}") from error
    site = web.TCPSite(
        runner,
        settings.server.host,
        settings.server.port,
        backlog=1024,
        reuse_port=settings.server.workers > 1 or None,
    )
    try:
        await site.start()
    except OSError as error:
        await runner.cleanup()
        raise StartupError(
            f"cannot listen on {settings.server.host}:{settings.server.port}: {error}"
        ) from error
    log.info(
        "listening",
        extra={
            "address": f"http://{settings.server.host}:{settings.server.port}",
            "upstream": str(settings.upstream.url),
        },
    )
    stopped = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopped.set)
    await stopped.wait()
    log.info("draining", extra={"drain_timeout_s": settings.server.drain_timeout_s})
    await runner.cleanup()
    log.info("stopped")


def serve(settings: Settings) -> None:
    configure_logging(settings.log_level, settings.log_format)
    if settings.server.workers > 1:
        raise SystemExit(_serve_in_workers(settings))
    _serve_one(settings)


def _serve_one(settings: Settings) -> None:
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    try:
        asyncio.run(run_until_stopped(settings))
    except StartupError as error:
        log.error(str(error))
        raise SystemExit(1) from error


def _serve_in_workers(settings: Settings) -> int:
    """Several single-threaded event loops on one port: the kernel spreads connections across them."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")  # no torch or event-loop state crosses a fork
    workers = [context.Process(target=serve_worker, args=(settings,)) for _ in range(settings.server.workers)]
    for worker in workers:
        worker.start()

    def forward(signum: int, _frame: object) -> None:
        for worker in workers:
            if worker.pid is not None and worker.is_alive():
                os.kill(worker.pid, signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    for worker in workers:
        worker.join()
    return max((worker.exitcode or 0) for worker in workers)


def serve_worker(settings: Settings) -> None:
    """One worker process of ``server.workers``."""
    configure_logging(settings.log_level, settings.log_format)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent forwards it as it comes
    _serve_one(settings)
