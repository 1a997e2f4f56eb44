"""Compressed search bodies: inflated once, never past ``limits.max_search_body_bytes``, never stalling the loop."""

from __future__ import annotations

import asyncio
import gzip
import json
import time
import tracemalloc
import zlib
from collections.abc import Callable
from typing import Any

import pytest

from bridge.errors import BridgeHTTPError
from bridge.search import body as body_module
from tests.search.scripted_engine import ScriptedEngine, hits_answer, intercepting, reply, ruled_settings

LIMIT = 1024 * 1024
TITLES = [{"title": t} for t in ("red car", "blue boat", "fast red car")]
SEARCH = {"query": {"match": {"title": "fast red car"}}, "size": 2}


def raw_deflate(data: bytes) -> bytes:
    compressor = zlib.compressobj(wbits=-15)
    return compressor.compress(data) + compressor.flush()


CODINGS: list[tuple[str, Callable[[bytes], bytes]]] = [
    ("gzip", gzip.compress),
    ("deflate", zlib.compress),
    ("deflate", raw_deflate),
]


def answering() -> ScriptedEngine:
    return ScriptedEngine(lambda asked: reply(200, hits_answer(TITLES, 10)))


class LoopLag:
    """The longest the event loop went without running a 5 ms ticker."""

    def __init__(self) -> None:
        self.worst = 0.0
        self._task: asyncio.Task[None] | None = None

    async def _tick(self) -> None:
        last = time.perf_counter()
        while True:
            await asyncio.sleep(0.005)
            now = time.perf_counter()
            self.worst = max(self.worst, now - last - 0.005)
            last = now

    def __enter__(self) -> LoopLag:
        self._task = asyncio.get_running_loop().create_task(self._tick())
        return self

    def __exit__(self, *exc: Any) -> None:
        assert self._task is not None
        self._task.cancel()


@pytest.mark.parametrize(("coding", "compress"), CODINGS, ids=["gzip", "zlib", "raw-deflate"])
async def test_a_decompression_bomb_is_refused_413_without_inflating_it(
    coding: str, compress: Callable[[bytes], bytes]
) -> None:
    bomb = compress(b'{"query":{"match_all":{}},"pad":"' + b"a" * (150 * 1024 * 1024) + b'"}')
    assert len(bomb) < 200_000
    scripted = answering()
    async with intercepting(scripted, ruled_settings(limits={"max_search_body_bytes": LIMIT})) as client:
        tracemalloc.start()
        try:
            with LoopLag() as lag:
                started = time.perf_counter()
                response = await client.post(
                    "/rr-docs/_search",
                    data=bomb,
                    headers={"Content-Type": "application/json", "Content-Encoding": coding},
                )
                elapsed = time.perf_counter() - started
                answer = await response.json()
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert response.status == 413
    assert answer["status"] == 413 and answer["error"]["type"] == "content_too_long_exception"
    assert scripted.asked == []
    assert elapsed < 1.0
    assert lag.worst < 0.1
    assert peak < 32 * 1024 * 1024  # the whole request path: the cap and some, never the 150 MiB


async def test_a_body_inflating_to_the_limit_is_read_and_one_byte_more_is_413() -> None:
    base = json.dumps({**SEARCH, "pad": ""}, separators=(",", ":")).encode()
    at_limit = base.replace(b'"pad":""', b'"pad":"' + b"a" * (LIMIT - len(base)) + b'"')
    assert len(at_limit) == LIMIT
    over = at_limit.replace(b'"pad":"', b'"pad":"a')
    headers = {"Content-Type": "application/json", "Content-Encoding": "gzip"}
    async with intercepting(answering(), ruled_settings(limits={"max_search_body_bytes": LIMIT})) as client:
        response = await client.post("/rr-docs/_search", data=gzip.compress(at_limit), headers=headers)
        assert response.status == 200 and response.headers["X-Rerank"].startswith("applied")
        response = await client.post("/rr-docs/_search", data=gzip.compress(over), headers=headers)
        assert response.status == 413


@pytest.mark.parametrize(("coding", "compress"), CODINGS, ids=["gzip", "zlib", "raw-deflate"])
async def test_a_compressed_search_is_inflated_once_and_reranked(
    coding: str, compress: Callable[[bytes], bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    inflate = body_module.inflate

    async def counting(raw: bytes, *, gzip: bool, limit: int) -> bytes | None:
        calls.append(len(raw))
        return await inflate(raw, gzip=gzip, limit=limit)

    monkeypatch.setattr(body_module, "inflate", counting)
    scripted = answering()
    async with intercepting(scripted) as client:
        response = await client.post(
            "/rr-docs/_search",
            data=compress(json.dumps(SEARCH).encode()),
            headers={"Content-Type": "application/json", "Content-Encoding": coding},
        )
        assert response.status == 200
        assert response.headers["X-Rerank"] == "applied; model=words; window=3; combine=replace"
    assert len(calls) == 1
    [asked] = scripted.asked
    assert "Content-Encoding" not in asked.headers and asked.json()["size"] == 5


async def test_a_body_the_bridge_cannot_inflate_goes_to_the_engine_as_sent() -> None:
    truncated = gzip.compress(json.dumps(SEARCH).encode())[:-6]
    scripted = ScriptedEngine(lambda asked: reply(400, {"error": "engine's own"}))
    async with intercepting(scripted) as client:
        response = await client.post(
            "/rr-docs/_search",
            data=truncated,
            headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
        )
        assert response.status == 400
        assert response.headers["X-Rerank"] == "skipped; reason=unreadable_body"
    [asked] = scripted.asked
    assert asked.relayed and asked.body == truncated and asked.headers["Content-Encoding"] == "gzip"


async def test_a_large_inflation_finishes_off_the_event_loop() -> None:
    data = json.dumps({**SEARCH, "pad": "x" * (8 * 1024 * 1024)}).encode()
    with LoopLag() as lag:
        inflated = await body_module.inflate(gzip.compress(data), gzip=True, limit=len(data))
    assert inflated == data
    assert lag.worst < 0.1


async def test_many_empty_gzip_members_inflate_in_linear_time_off_the_event_loop() -> None:
    """A real member and then ~2 MiB of empty ones: each inflates to nothing, so only counting the input read
    and members started keeps the loop free, and only bounded input slices keep the whole linear."""
    empty = gzip.compress(b"", mtime=0)
    many = gzip.compress(json.dumps(SEARCH).encode(), mtime=0) + empty * (2 * 1024 * 1024 // len(empty))
    scripted = answering()
    async with intercepting(scripted) as client:
        with LoopLag() as lag:
            started = time.perf_counter()
            response = await client.post(
                "/rr-docs/_search",
                data=many,
                headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
            )
            elapsed = time.perf_counter() - started
        assert response.status == 200
        assert response.headers["X-Rerank"] == "applied; model=words; window=3; combine=replace"
    assert lag.worst < 0.1
    assert elapsed < 2.0
    [asked] = scripted.asked
    assert asked.json()["query"] == SEARCH["query"] and asked.json()["size"] == 5


async def test_gzip_members_inflating_past_the_inline_budget_are_all_read_in_order() -> None:
    texts = [b"a" * (300 * 1024), b"b" * 10, b"", b"c" * (700 * 1024)]
    members = b"".join(gzip.compress(text, mtime=0) for text in texts)
    assert await body_module.inflate(members, gzip=True, limit=LIMIT) == b"".join(texts)


async def test_nul_padding_after_gzip_members_is_tolerated_and_anything_else_after_it_is_unreadable() -> None:
    members = gzip.compress(b'{"query":', mtime=0) + gzip.compress(b' {"match_all": {}}}', mtime=0)
    padded = await body_module.inflate(members + b"\0" * 100_000, gzip=True, limit=LIMIT)
    assert padded == b'{"query": {"match_all": {}}}'
    assert await body_module.inflate(members + b"\0" * 10 + members, gzip=True, limit=LIMIT) is None
    assert await body_module.inflate(members + b"junk", gzip=True, limit=LIMIT) is None


async def test_inflating_a_bomb_holds_no_more_than_the_limit() -> None:
    bomb = gzip.compress(b"a" * (150 * 1024 * 1024))
    tracemalloc.start()
    try:
        with pytest.raises(BridgeHTTPError) as refused:
            await body_module.inflate(bomb, gzip=True, limit=LIMIT)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert refused.value.status == 413
    assert peak < 3 * LIMIT


async def test_a_search_body_that_stops_arriving_is_a_408() -> None:
    async def stalling() -> Any:
        yield b'{"query": {"match": '
        await asyncio.sleep(3600)

    scripted = answering()
    settings = ruled_settings(server={"client_body_timeout_s": 0.2})
    async with intercepting(scripted, settings) as client:
        started = time.perf_counter()
        response = await client.post(
            "/rr-docs/_search", data=stalling(), headers={"Content-Type": "application/json"}
        )
        assert response.status == 408
        assert (await response.json())["error"]["type"] == "request_timeout_exception"
        assert time.perf_counter() - started < 1.0
    assert scripted.asked == []
