"""Requests aiohttp cannot parse, or in HTTP versions the engine does not speak: the engine's 400, one WARNING
line that quotes none of the request's bytes, and the connection closed. Raw sockets, a recording fake engine."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from bridge.config import Settings
from tests.bridge_server import running_bridge
from tests.ops.test_upstream_faults import serve
from tests.raw_http import fetch_raw

BASIC = "c2VjcmV0LXVzZXI6c2VjcmV0LXBhc3N3b3Jk"  # secret-user:secret-password
BEARER = "eyJhbGciOiJIUzI1NiJ9.secret-bearer-token"


@pytest.fixture
async def engine_seen() -> AsyncIterator[tuple[str, list[str]]]:
    seen: list[str] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        seen.append(f"{request.method} {request.raw_path}")
        return web.json_response({"ok": True})

    runner, url = await serve(handler)
    yield url, seen
    await runner.cleanup()


MALFORMED = {
    "header line without a colon": (
        f"GET / HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {BASIC}\r\nBad Header\r\n\r\n"
    ),
    "space in the target": f"GET /a b HTTP/1.1\r\nAuthorization: Bearer {BEARER}\r\n\r\n",
    "not a method": f"G{BASIC} / HTTP/1.1\r\nHost: x\r\n\r\n",
    "two lengths": (
        f"POST /i/_doc HTTP/1.1\r\nAuthorization: Basic {BASIC}\r\n"
        "Content-Length: 2\r\nContent-Length: 3\r\n\r\n{}"
    ),
    "token in a bad header value": f"GET / HTTP/1.1\r\nX-Token: Bearer {BEARER}\x01\r\n\r\n",
}


def assert_engine_400(answer_body: bytes) -> dict[str, object]:
    body = json.loads(answer_body)
    assert body["status"] == 400
    assert body["error"]["type"] == "illegal_argument_exception"
    assert body["error"]["root_cause"][0]["type"] == "illegal_argument_exception"
    return body


@pytest.mark.parametrize("case", sorted(MALFORMED))
async def test_a_malformed_request_is_an_engine_400_and_one_warning_without_its_bytes(
    case: str, engine_seen: tuple[str, list[str]], caplog: pytest.LogCaptureFixture
) -> None:
    engine, seen = engine_seen
    caplog.set_level(logging.DEBUG)
    async with running_bridge(Settings(upstream={"url": engine})) as url:
        caplog.clear()
        answer = await fetch_raw(url, MALFORMED[case].encode("latin-1"))
    assert answer.status_line.startswith("HTTP/1.1 400 ")
    assert answer.header("Connection") == "close"
    assert (answer.header("Content-Type") or "").startswith("application/json")
    assert answer.header("Server") is None and answer.header("Date") is None  # nothing of aiohttp's
    body = assert_engine_400(answer.body)
    text = json.dumps(body)
    assert BASIC not in text and BEARER[:12] not in text
    assert seen == []  # nothing reached the engine
    records = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [(r.levelname, r.getMessage()) for r in records] == [("WARNING", "malformed request")]
    assert records[0].exc_info is None  # no traceback per malformed request
    for record in caplog.records:
        logged = record.getMessage() + json.dumps(record.__dict__, default=str)
        assert BASIC not in logged and BEARER[:12] not in logged


@pytest.mark.parametrize(
    "request_line", ["GET /", "GET / HTTP/0.9", "GET / HTTP/2.0", "GET / HTTP/1.2", "GET / HTTP/3.0"]
)
async def test_request_lines_in_other_http_versions_are_refused_with_400(
    request_line: str, engine_seen: tuple[str, list[str]]
) -> None:
    """The engine (OpenSearch 2.19) answers ``GET /`` (HTTP/0.9) with 400 and drops the connection on
    ``HTTP/2.0``; aiohttp served both, in HTTP/0.9 and HTTP/2.0. The bridge answers 400 in HTTP/1.1."""
    engine, seen = engine_seen
    async with running_bridge(Settings(upstream={"url": engine})) as url:
        answer = await fetch_raw(url, f"{request_line}\r\nHost: x\r\n\r\n".encode())
    assert answer.status_line.startswith("HTTP/1.1 400 ")
    assert answer.header("Connection") == "close"
    assert_engine_400(answer.body)
    assert seen == []


async def test_http_1_0_and_1_1_still_pass(engine_seen: tuple[str, list[str]]) -> None:
    engine, seen = engine_seen
    async with running_bridge(Settings(upstream={"url": engine})) as url:
        for version in ("1.0", "1.1"):
            answer = await fetch_raw(
                url, f"GET /x HTTP/{version}\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
            )
            assert answer.status_line.startswith(f"HTTP/{version} 200 ")
    assert seen == ["GET /x", "GET /x"]
