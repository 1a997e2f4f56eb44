"""Soak: a bounded stream of mixed requests through the bridge, each answer checked against the engine's.

Usage: python bench/soak.py [--requests 20000] [--concurrency 32] [--model PATH] [--upstream URL]
Mix: passthrough searches, cluster/doc APIs, reranked searches, _msearch with reranked and plain items, and
requests the engine rejects. Passthrough answers must equal the engine's (``took`` aside); reranked ones must hold
the engine's hits for the window (order aside). Without --model a tiny random-weight cross-encoder is built (the
soak tests plumbing, not relevance). Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
from harness import engine_url, start_bridge, stop_bridge

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

RULED, PLAIN = "soak-ruled", "soak-plain"
WORDS = (
    "wind flow pressure wing shock heat boundary layer laminar turbulent nozzle drag lift vortex jet".split()
)
JSON_HEADERS = {"Content-Type": "application/json"}
WINDOW = 30
FAIL_OPEN_REASONS = frozenset({"timeout", "queue_full", "model_error"})


async def prepare(url: str) -> None:
    from tests.indices import create_index

    def doc(i: int) -> dict[str, Any]:
        words = [WORDS[(i * 7 + k * 3) % len(WORDS)] for k in range(5 + i % 20)]
        return {"title": " ".join(words[:4]), "text": " ".join(words), "n": i}

    async with aiohttp.ClientSession() as http:
        for index, count in ((RULED, 400), (PLAIN, 200)):
            await create_index(http, url, index, [doc(i) for i in range(count)], replace=True)


def request_for(i: int) -> tuple[str, str, str, bytes | None, dict[str, str]]:
    """(kind, method, path, body, headers) for request number i: a fixed, repeatable mix."""
    word = WORDS[i % len(WORDS)]
    other = WORDS[(i * 5 + 1) % len(WORDS)]
    search = json.dumps(
        {"query": {"match": {"text": f"{word} {other}"}}, "size": 10, "from": (i % 3) * 10}
    ).encode()
    kind = i % 20
    if kind < 6:
        return "passthrough", "POST", f"/{PLAIN}/_search", search, JSON_HEADERS
    if kind < 8:
        path = (f"/_cluster/health/{PLAIN}", f"/{PLAIN}/_count", f"/{PLAIN}/_doc/{i % 200}")[i % 3]
        return "passthrough", "GET", path, None, {}
    if kind < 14:
        return "reranked", "POST", f"/{RULED}/_search", search, JSON_HEADERS
    if kind < 17:
        lines = [{"index": RULED}, json.loads(search), {"index": PLAIN}, json.loads(search)]
        body = ("\n".join(json.dumps(line) for line in lines) + "\n").encode()
        return "msearch", "POST", "/_msearch", body, {"Content-Type": "application/x-ndjson"}
    if kind < 19:
        return "error", "POST", f"/{RULED}/_search", b'{"query": {"match": ', JSON_HEADERS
    return "error", "GET", "/soak-missing/_search", None, {}


def without_took(raw: bytes) -> bytes:
    return re.sub(rb'"took":\d+', b'"took":0', raw)


def window_for(search: dict[str, Any]) -> dict[str, Any]:
    return {**search, "from": 0, "size": max(WINDOW, search.get("from", 0) + search.get("size", 10))}


def same_search(bridged: dict[str, Any], direct_window: dict[str, Any], page: dict[str, Any]) -> bool:
    """A reranked page: same total, hits drawn from the engine's window, as many as the engine's page."""
    window_ids = {hit["_id"] for hit in direct_window["hits"]["hits"]}
    hits = bridged["hits"]["hits"]
    return (
        bridged["hits"]["total"] == direct_window["hits"]["total"]
        and len(hits) == len(page["hits"]["hits"])
        and all(hit["_id"] in window_ids for hit in hits)
    )


async def run(bridge: str, engine: str, total: int, concurrency: int) -> dict[str, Any]:
    counts: Counter[str] = Counter()
    mismatches: list[str] = []
    latencies: list[float] = []
    numbers = iter(range(total))
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency * 2)) as http:

        async def call(
            base: str, method: str, path: str, body: bytes | None, headers: dict[str, str]
        ) -> tuple[int, bytes, str]:
            async with http.request(method, base + path, data=body, headers=headers) as response:
                return response.status, await response.read(), response.headers.get("X-Rerank", "")

        async def worker() -> None:
            for i in numbers:
                kind, method, path, body, headers = request_for(i)
                started = time.perf_counter()
                try:
                    status, raw, rerank = await call(bridge, method, path, body, headers)
                except aiohttp.ClientError as error:
                    counts["errors"] += 1
                    mismatches.append(f"{i} {kind}: {error!r}")
                    continue
                latencies.append((time.perf_counter() - started) * 1000)
                counts[kind] += 1
                if status >= 500:
                    counts["errors"] += 1
                # Searches skipped by design say so too (no_rule, size_zero, ...); only model trouble fails open.
                if rerank.removeprefix("skipped; reason=") in FAIL_OPEN_REASONS:
                    counts["fail_open"] += 1
                if kind in ("passthrough", "error"):
                    d_status, d_raw, _ = await call(engine, method, path, body, headers)
                    if (d_status, without_took(d_raw)) != (status, without_took(raw)):
                        mismatches.append(f"{i} {kind} {path}: {d_status} != {status}")
                    continue
                search = json.loads(body or b"{}") if kind == "reranked" else None
                if kind == "reranked":
                    assert search is not None
                    _, window_raw, _ = await call(
                        engine, "POST", path, json.dumps(window_for(search)).encode(), JSON_HEADERS
                    )
                    _, page_raw, _ = await call(engine, method, path, body, headers)
                    if status != 200 or not same_search(
                        json.loads(raw), json.loads(window_raw), json.loads(page_raw)
                    ):
                        mismatches.append(f"{i} reranked {path}")
                    continue
                answer = json.loads(raw)["responses"] if status == 200 else []
                item = json.loads((body or b"").split(b"\n")[1])
                _, window_raw, _ = await call(
                    engine, "POST", f"/{RULED}/_search", json.dumps(window_for(item)).encode(), JSON_HEADERS
                )
                _, page_raw, _ = await call(
                    engine, "POST", f"/{RULED}/_search", json.dumps(item).encode(), JSON_HEADERS
                )
                _, plain_raw, _ = await call(
                    engine, "POST", f"/{PLAIN}/_search", json.dumps(item).encode(), JSON_HEADERS
                )
                ok = (
                    len(answer) == 2
                    and same_search(answer[0], json.loads(window_raw), json.loads(page_raw))
                    and answer[1]["hits"] == json.loads(plain_raw)["hits"]
                )
                if not ok:
                    mismatches.append(f"{i} msearch")

        begin = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        seconds = time.perf_counter() - begin
    quantiles = statistics.quantiles(latencies, n=100, method="inclusive")
    return {
        "counts": counts,
        "mismatches": mismatches,
        "seconds": seconds,
        "p50": quantiles[49],
        "p99": quantiles[98],
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--model", type=Path, default=None, help="default: a tiny random cross-encoder")
    parser.add_argument("--upstream", default=None)
    parser.add_argument("--port", type=int, default=9412)
    args = parser.parse_args()
    engine = engine_url(args.upstream)
    await prepare(engine)
    with tempfile.TemporaryDirectory() as scratch:
        model = args.model
        if model is None:
            from tests.tiny_models import build_tiny_cross_encoder

            model = build_tiny_cross_encoder(Path(scratch))
        bridge = start_bridge(
            {
                "upstream": {"url": engine},
                "server": {"host": "127.0.0.1", "port": args.port},
                "models": {"soak": {"source": str(model), "max_wait_ms": 2}},
                "rules": [
                    {
                        "indices": ["soak-ruled*"],
                        "fields": ["title", "text"],
                        "window": WINDOW,
                        "timeout_ms": 5000,
                    }
                ],
                "log_level": "warning",
            },
            Path(scratch),
        )
        try:
            result = await run(f"http://127.0.0.1:{args.port}", engine, args.requests, args.concurrency)
        finally:
            stop_bridge(bridge)
    counts = result["counts"]
    print(f"machine: {platform.machine()} {os.cpu_count()} cores; engine, bridge and load share them")
    print(
        f"{args.requests} requests at concurrency {args.concurrency} in {result['seconds']:.1f}s "
        f"({args.requests / result['seconds']:.0f} req/s through the bridge, each also checked on the engine)"
    )
    print(f"{'kind':<14}{'count':>8}")
    for kind in ("passthrough", "reranked", "msearch", "error"):
        print(f"{kind:<14}{counts[kind]:>8}")
    print(f"{'5xx/transport errors':<22}{counts['errors']:>6}")
    print(f"{'mismatches':<22}{len(result['mismatches']):>6}")
    print(f"{'fail-opens':<22}{counts['fail_open']:>6}")
    print(f"latency through the bridge: p50 {result['p50']:.1f} ms, p99 {result['p99']:.1f} ms")
    for line in result["mismatches"][:10]:
        print("  mismatch:", line)
    print(
        json.dumps(
            {
                "requests": args.requests,
                "errors": counts["errors"],
                "mismatches": len(result["mismatches"]),
                "fail_opens": counts["fail_open"],
                "p50_ms": round(result["p50"], 2),
                "p99_ms": round(result["p99"], 2),
            }
        )
    )


if __name__ == "__main__":
    asyncio.run(main())
