"""``/_bridge/`` belongs to the bridge in every spelling: a path no endpoint there takes is an engine-shaped 404,
a wrong method on an endpoint the engine's 405, and neither is ever relayed (it would go out with the bridge's own credentials)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from bridge.config import Settings
from tests.bridge_server import running_bridge
from tests.ops.test_upstream_faults import serve
from tests.raw_http import fetch_raw


@pytest.fixture
async def recording_engine() -> AsyncIterator[tuple[str, list[str]]]:
    seen: list[str] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        seen.append(f"{request.method} {request.raw_path} {request.headers.get('Authorization')}")
        return web.json_response({"relayed": True})

    runner, url = await serve(handler)
    yield url, seen
    await runner.cleanup()


def bridge_settings(engine: str) -> Settings:
    return Settings(upstream={"url": engine, "username": "bridge", "password": "bridge-secret"})


@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", "/_bridge/health"), ("PUT", "/_bridge/ready"), ("DELETE", "/_bridge/metrics")],
)
async def test_a_wrong_method_on_a_bridge_endpoint_is_the_engines_405(
    method: str, path: str, recording_engine: tuple[str, list[str]]
) -> None:
    engine, seen = recording_engine
    async with running_bridge(bridge_settings(engine)) as url:
        answer = await fetch_raw(
            url,
            f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}".encode(),
        )
    assert answer.status == 405 and answer.header("Allow") == "GET"
    assert json.loads(answer.body) == {
        "error": f"Incorrect HTTP method for uri [{path}] and method [{method}], allowed: [GET]",
        "status": 405,
    }
    assert seen == []


@pytest.mark.parametrize(
    ("method", "target"),
    [
        ("GET", "/_bridge/other"),
        ("POST", "/_bridge/"),
        ("GET", "/_bridge"),
        ("DELETE", "/_bridge/other/deeper?x=1"),
        ("GET", "//_bridge/health"),
        ("POST", "//_bridge/anything"),
        ("GET", "/%5Fbridge/other"),
        ("PUT", "///_bridge"),
    ],
)
async def test_unknown_bridge_paths_in_any_spelling_are_answered_never_relayed(
    method: str, target: str, recording_engine: tuple[str, list[str]]
) -> None:
    engine, seen = recording_engine
    async with running_bridge(bridge_settings(engine)) as url:
        answer = await fetch_raw(
            url,
            f"{method} {target} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".encode(),
        )
    assert answer.status == 404
    body = json.loads(answer.body)
    assert body["status"] == 404 and body["error"]["type"] == "resource_not_found_exception"
    assert body["error"]["reason"].startswith("no handler found for uri [")
    assert body["error"]["reason"].endswith(f"and method [{method}]")
    assert seen == []


async def test_engine_paths_that_merely_mention_bridge_are_still_relayed(
    recording_engine: tuple[str, list[str]],
) -> None:
    engine, seen = recording_engine
    async with running_bridge(bridge_settings(engine)) as url:
        for target in ("/my_bridge/_doc/1", "/idx/_doc/_bridge"):
            answer = await fetch_raw(
                url, f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
            )
            assert answer.status == 200 and json.loads(answer.body) == {"relayed": True}
    assert [line.split()[1] for line in seen] == ["/my_bridge/_doc/1", "/idx/_doc/_bridge"]
