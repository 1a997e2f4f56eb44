"""Engine faults seen through the bridge: refused, reset mid-answer, too slow. Real servers on 127.0.0.1."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import pytest
from aiohttp import web

from bridge.config import Settings
from tests.bridge_server import running_bridge


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def serve(handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> tuple[web.AppRunner, str]:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]


@pytest.fixture
async def fake_engine() -> AsyncIterator[str]:
    async def handler(request: web.Request) -> web.StreamResponse:
        if request.path.startswith("/reset"):
            response = web.StreamResponse(headers={"Content-Type": "application/json"})
            response.content_length = 100_000 if request.path == "/reset-small" else 5_000_000
            await response.prepare(request)
            await response.write(b'{"partial":' + b" " * 1000)
            assert request.transport is not None
            request.transport.close()
            return response
        if request.path == "/slow" or request.path.endswith("/_search"):
            await asyncio.sleep(2)
        return web.json_response({"ok": True, "path": request.path})

    runner, url = await serve(handler)
    yield url
    await runner.cleanup()


def assert_engine_error(body: dict[str, object], status: int, error_type: str) -> None:
    assert body["status"] == status
    error = body["error"]
    assert isinstance(error, dict)
    assert error["type"] == error_type
    assert isinstance(error["root_cause"], list) and error["root_cause"][0]["type"] == error_type
    assert isinstance(error["reason"], str) and "Traceback" not in error["reason"]


async def test_refused_upstream_is_a_502_in_the_engine_shape() -> None:
    settings = Settings(upstream={"url": f"http://127.0.0.1:{free_port()}"})
    async with running_bridge(settings) as url, aiohttp.ClientSession() as http:
        for method, path in (
            ("GET", "/_cluster/health"),
            ("POST", "/books/_search"),
            ("PUT", "/books/_doc/1"),
        ):
            async with http.request(method, url + path, json={"a": 1}) as response:
                assert response.status == 502
                assert_engine_error(await response.json(), 502, "upstream_unavailable_exception")


async def test_slow_upstream_is_a_504(fake_engine: str) -> None:
    settings = Settings(upstream={"url": fake_engine, "timeout_s": 0.3})
    async with running_bridge(settings) as url, aiohttp.ClientSession() as http:
        async with http.get(url + "/slow") as response:
            assert response.status == 504
            assert_engine_error(await response.json(), 504, "upstream_timeout_exception")
        async with http.get(url + "/fine") as response:
            assert response.status == 200 and (await response.json())["path"] == "/fine"


async def test_reset_mid_answer(fake_engine: str) -> None:
    """A small answer is read whole, so its loss is a clean 502; a large one streams, so the client connection
    breaks (headers are gone already). Either way the bridge lives on."""
    settings = Settings(upstream={"url": fake_engine})
    async with running_bridge(settings) as url, aiohttp.ClientSession() as http:
        async with http.get(url + "/reset-small") as response:
            assert response.status == 502
            assert_engine_error(await response.json(), 502, "upstream_unavailable_exception")
        with pytest.raises(aiohttp.ClientPayloadError):
            async with http.get(url + "/reset-large") as response:
                assert response.status == 200
                await response.read()
        async with http.get(url + "/after") as response:
            assert response.status == 200 and (await response.json())["path"] == "/after"
