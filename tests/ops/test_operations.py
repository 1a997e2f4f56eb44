"""Operator-facing behaviour: health, readiness, metrics, one log line per request, draining on SIGTERM."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from bridge.config import Settings
from tests.bridge_server import running_bridge
from tests.ops.test_upstream_faults import free_port, serve


async def wait_until_healthy(http: aiohttp.ClientSession, url: str, timeout_s: float = 60) -> None:
    """A bridge process just started: poll its liveness endpoint until it answers."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            async with http.get(url + "/_bridge/health") as response:
                if response.status == 200:
                    return
        except aiohttp.ClientConnectionError:
            if time.monotonic() > deadline:
                raise
        await asyncio.sleep(0.1)


@pytest.fixture
async def slow_engine() -> AsyncIterator[str]:
    async def handler(request: web.Request) -> web.StreamResponse:
        if request.path == "/slow":
            await asyncio.sleep(1.5)
        return web.json_response({"path": request.path})

    runner, url = await serve(handler)
    yield url
    await runner.cleanup()


async def test_health_ready_and_metrics(slow_engine: str) -> None:
    async with (
        running_bridge(Settings(upstream={"url": slow_engine})) as url,
        aiohttp.ClientSession() as http,
    ):
        async with http.get(url + "/_bridge/health") as response:
            assert response.status == 200 and (await response.json())["status"] == "ok"
        async with http.get(url + "/_bridge/ready") as response:
            assert response.status == 200
            assert await response.json() == {
                "status": "ready",
                "models_loaded": True,
                "upstream": True,
                "upstream_pool": True,
                "models": {},
            }
        for _ in range(3):
            async with http.post(url + "/books/_search", json={"query": {"match_all": {}}}) as response:
                assert response.status == 200
        async with http.get(url + "/_bridge/metrics") as response:
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("text/plain")
            text = await response.text()
    assert 'rerank_bridge_requests_total{outcome="passthrough",reason="no_rule",route="_search"} 3.0' in text
    for family in (
        "rerank_bridge_upstream_request_duration_seconds",
        "rerank_bridge_requests_in_flight",
        "rerank_bridge_fail_open_total",
        "rerank_bridge_batch_pairs",
        "rerank_bridge_queue_pairs",
    ):
        assert f"# TYPE {family}" in text


async def test_not_ready_while_the_engine_is_down() -> None:
    settings = Settings(upstream={"url": f"http://127.0.0.1:{free_port()}"})
    async with running_bridge(settings) as url, aiohttp.ClientSession() as http:
        async with http.get(url + "/_bridge/ready") as response:
            assert response.status == 503
            assert (await response.json())["upstream"] is False
        async with http.get(url + "/_bridge/health") as response:
            assert response.status == 200


async def test_one_json_log_line_per_request_without_credentials(
    slow_engine: str, caplog: pytest.LogCaptureFixture
) -> None:
    from bridge.ops.logs import JsonFormatter

    caplog.set_level(logging.INFO, logger="bridge.access")
    secret = "Basic c2VjcmV0OnNlY3JldA=="
    body = {"query": {"match": {"t": "body-text"}}}
    headers = {"X-Opaque-Id": "req-42", "Authorization": secret}
    async with (
        running_bridge(Settings(upstream={"url": slow_engine})) as url,
        aiohttp.ClientSession() as http,
        http.post(url + "/books/_search?q=private", json=body, headers=headers) as response,
    ):
        assert response.status == 200
    records = [r for r in caplog.records if r.name == "bridge.access"]
    assert len(records) == 1
    line = json.loads(JsonFormatter().format(records[0]))
    assert line["request_id"] == "req-42"
    assert line["path"] == "/books/_search" and line["status"] == 200 and line["outcome"] == "passthrough"
    assert isinstance(line["duration_ms"], float)
    text = json.dumps(line)
    assert secret not in text and "c2VjcmV0" not in text and "body-text" not in text and "private" not in text


async def test_sigterm_drains_in_flight_requests(slow_engine: str) -> None:
    port = free_port()
    env = {
        **os.environ,
        "BRIDGE_UPSTREAM__URL": slow_engine,
        "BRIDGE_SERVER__PORT": str(port),
        "BRIDGE_SERVER__DRAIN_TIMEOUT_S": "10",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bridge", "serve", env=env, stderr=asyncio.subprocess.PIPE
    )
    url = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as http:
            await wait_until_healthy(http, url)
            in_flight = asyncio.create_task(http.get(url + "/slow"))
            await asyncio.sleep(0.3)
            process.send_signal(signal.SIGTERM)
            response = await in_flight
            assert response.status == 200 and (await response.json())["path"] == "/slow"
            code = await asyncio.wait_for(process.wait(), 15)
            assert code == 0
            with pytest.raises(aiohttp.ClientConnectionError):
                async with http.get(url + "/_bridge/health"):
                    pass
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.stderr is not None
    log = (await process.stderr.read()).decode()
    assert '"message": "draining"' in log and '"message": "stopped"' in log


async def test_workers_share_the_port_and_stop_together(slow_engine: str) -> None:
    port = free_port()
    env = {
        **os.environ,
        "BRIDGE_UPSTREAM__URL": slow_engine,
        "BRIDGE_SERVER__PORT": str(port),
        "BRIDGE_SERVER__WORKERS": "2",
    }
    process = await asyncio.create_subprocess_exec(sys.executable, "-m", "bridge", "serve", env=env)
    try:
        async with aiohttp.ClientSession() as http:
            await wait_until_healthy(http, f"http://127.0.0.1:{port}")
            for _ in range(10):
                async with http.get(f"http://127.0.0.1:{port}/any") as response:
                    assert response.status == 200
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 30) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
