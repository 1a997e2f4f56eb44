"""Passthrough overhead: the same bounded load straight to the engine and through the bridge, in one run.

Usage: python bench/passthrough.py [--upstream URL] [--requests 20000] [--concurrency 32] [--rounds 4]
Starts the engine with scripts/opensearch.sh when --upstream is not given and nothing answers on :9200, and the
bridge as a separate ``rerank-bridge serve`` process (as deployed). Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import aiohttp
from harness import engine_url, start_bridge, stop_bridge

REPO = Path(__file__).resolve().parent.parent
INDEX = "bench-passthrough"


async def prepare(url: str) -> None:
    async with aiohttp.ClientSession() as session:
        await session.delete(f"{url}/{INDEX}")
        await session.put(f"{url}/{INDEX}", json={"settings": {"number_of_replicas": 0}})
        lines = []
        for i in range(200):
            lines.append(json.dumps({"index": {"_index": INDEX, "_id": str(i)}}))
            lines.append(json.dumps({"title": f"wind tunnel flow {i}", "text": "boundary layer " * (i % 7)}))
        await session.post(
            f"{url}/_bulk?refresh=true",
            data="\n".join(lines) + "\n",
            headers={"Content-Type": "application/x-ndjson"},
        )


async def load(url: str, total: int, concurrency: int) -> tuple[float, list[float]]:
    """Run ``total`` requests (half small searches, half cluster health); return seconds and latencies (ms)."""
    search = json.dumps({"query": {"match": {"title": "wind"}}, "size": 5}).encode()
    latencies: list[float] = []
    counter = iter(range(total))
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            for i in counter:
                start = time.perf_counter()
                if i % 2:
                    request = session.post(
                        f"{url}/{INDEX}/_search", data=search, headers={"Content-Type": "application/json"}
                    )
                else:
                    request = session.get(f"{url}/_cluster/health")
                async with request as response:
                    await response.read()
                    if response.status != 200:
                        raise SystemExit(f"unexpected status {response.status}")
                latencies.append((time.perf_counter() - start) * 1000)

        begin = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.perf_counter() - begin, latencies


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--upstream", default=None)
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--serial-requests", type=int, default=4000, help="requests at concurrency 1")
    parser.add_argument("--rounds", type=int, default=4, help="interleaved rounds per path and concurrency")
    parser.add_argument("--port", type=int, default=9411)
    parser.add_argument("--workers", type=int, default=1, help="bridge processes (server.workers)")
    args = parser.parse_args()
    upstream = engine_url(args.upstream)
    await prepare(upstream)
    scratch = Path(tempfile.mkdtemp())
    bridge = start_bridge(
        {
            "upstream": {"url": upstream},
            "server": {"host": "127.0.0.1", "port": args.port, "workers": args.workers},
            "log_level": "warning",
        },
        scratch,
    )
    bridged_url = f"http://127.0.0.1:{args.port}"
    rows = []
    try:
        for concurrency, total in ((1, args.serial_requests), (args.concurrency, args.requests)):
            paths = {"direct": upstream, "bridge": bridged_url}
            seconds = dict.fromkeys(paths, 0.0)
            latencies: dict[str, list[float]] = {name: [] for name in paths}
            for url in paths.values():
                await load(url, min(total, 200), concurrency)  # warm connections and JIT
            # Interleaved rounds, alternating which path goes first: drift in the machine's load or in the
            # engine's JIT falls on both paths alike.
            share = total // args.rounds
            for round_no in range(args.rounds):
                order = list(paths.items()) if round_no % 2 == 0 else list(reversed(paths.items()))
                for name, url in order:
                    spent, measured = await load(url, share, concurrency)
                    seconds[name] += spent
                    latencies[name].extend(measured)
            for name in paths:
                rows.append(
                    {
                        "path": name,
                        "concurrency": concurrency,
                        "requests": share * args.rounds,
                        "rps": share * args.rounds / seconds[name],
                        "p50_ms": percentile(latencies[name], 50),
                        "p99_ms": percentile(latencies[name], 99),
                    }
                )
    finally:
        stop_bridge(bridge)

    print(
        f"machine: {platform.machine()} {os.cpu_count()} cores, python {platform.python_version()}; "
        "engine, bridge and load generator share the cores"
    )
    print(f"{'path':<8}{'conc':>6}{'requests':>10}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}")
    for row in rows:
        print(
            f"{row['path']:<8}{row['concurrency']:>6}{row['requests']:>10}{row['rps']:>10.0f}"
            f"{row['p50_ms']:>9.2f}{row['p99_ms']:>9.2f}"
        )
    by = {(r["path"], r["concurrency"]): r for r in rows}
    c = args.concurrency
    summary = {
        "added_p50_ms_c1": round(by[("bridge", 1)]["p50_ms"] - by[("direct", 1)]["p50_ms"], 3),
        "added_p99_ms_c1": round(by[("bridge", 1)]["p99_ms"] - by[("direct", 1)]["p99_ms"], 3),
        f"throughput_ratio_c{c}": round(by[("bridge", c)]["rps"] / by[("direct", c)]["rps"], 3),
        f"direct_rps_c{c}": round(by[("direct", c)]["rps"]),
        f"bridge_rps_c{c}": round(by[("bridge", c)]["rps"]),
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    asyncio.run(main())
