"""The added latency of the remote hop: the same cross-encoder in-process vs behind infinity on 127.0.0.1.

Two scorers on one model (``--model``, float32, score cache off, one worker with ``--threads`` torch threads;
the server gets the same thread count), and the hop alone:

* ``in-process``: the bridge's ``LocalScorer``;
* ``remote``: the bridge's ``RemoteScorer`` (``protocol: cohere``) calling a real infinity-emb server on
  127.0.0.1, started by ``scripts/infinity.sh`` on a free port (or ``--infinity-url``, left running), which runs
  the model with its own torch engine;
* ``hop``: the same ``RemoteScorer`` calling a Cohere-style server in another process on 127.0.0.1 that
  answers at once without a model: what the remote hop itself costs (the bridge's client, HTTP, JSON both ways,
  the server's parsing) for that many passages, apart from how fast the server's engine runs the model.

Each request is one ``await scorer.score(query, passages)`` for one query and ``size`` passages (``--sizes``;
1 shows the fixed cost of a call), every one a different cranfield query with different cranfield documents
(title and abstract), so no cache anywhere answers. Rounds are interleaved (each round measures every size
on both scorers, their order alternating), bounded by ``--rounds`` and ``--max-seconds``. Reported per size:
p50/p95 of each, the remote's excess (remote minus in-process at the same quantile: the hop plus infinity's
queue plus any difference between the two engines' batching and padding), the hop alone, the largest score
difference between in-process and infinity, and, last line, one JSON object with the figures.

    python bench/remote.py                               # sizes 1,20,50,100; 5 rounds; 1 thread
    python bench/remote.py --threads 2 --rounds 10
    python bench/remote.py --infinity-url http://127.0.0.1:7997 --served-name minilm-l6-ce-v1
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.harness import cpu_name  # noqa: E402  (needs REPO on the path when run as a script)

SCRIPT = REPO / "scripts" / "infinity.sh"
SHARED = REPO.parent / "shared"
CROSS_ENCODER = SHARED / "models" / "minilm-l6-ce-v1"
CRANFIELD = SHARED / "collections" / "cranfield"


# ---------------------------------------------------------------- running infinity (also used by the tests)


class InfinityUnavailable(RuntimeError):
    """infinity cannot run here (``scripts/infinity.sh check`` says what is missing): callers skip."""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _script(
    *args: str, env: dict[str, str] | None = None, timeout: float = 1200
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def install_infinity(model: Path = CROSS_ENCODER) -> str:
    """Make (once) infinity's cached venv; returns its path. Raises :class:`InfinityUnavailable` with the script's
    reason when ``check`` finds something missing (no package index, no venv module, no model), and
    ``RuntimeError`` when the install itself fails."""
    check = _script("check", "--model", str(model), "--port", str(free_port()), timeout=120)
    if check.returncode == 4:
        raise InfinityUnavailable(
            check.stderr.strip().splitlines()[-1] if check.stderr.strip() else "check failed"
        )
    if check.returncode != 0:
        raise RuntimeError(f"scripts/infinity.sh check failed ({check.returncode}): {check.stderr[-2000:]}")
    done = _script("install", "--model", str(model))
    if done.returncode != 0:
        raise RuntimeError(f"scripts/infinity.sh install failed ({done.returncode}): {done.stderr[-3000:]}")
    return done.stdout.strip()


@dataclass
class InfinityServer:
    """One infinity-emb server that ``scripts/infinity.sh`` runs on ``port``; stop/kill touch only what it started."""

    model: Path = CROSS_ENCODER
    name: str = "minilm-l6-ce-v1"
    port: int = field(default_factory=free_port)
    threads: int = 1
    api_key: str | None = None
    launched: bool = False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def rerank_url(self) -> str:
        return f"{self.url}/rerank"

    def _args(self) -> list[str]:
        return ["--port", str(self.port), "--model", str(self.model), "--name", self.name]

    def start(self) -> str:
        """Start it (the venv must exist: :func:`install_infinity`) and wait until it serves the model."""
        env = {"RERANK_INFINITY_THREADS": str(self.threads), **self._key_env()}
        with tempfile.NamedTemporaryFile("r", suffix=".launched") as launched:
            env["RERANK_BRIDGE_LAUNCHED_FILE"] = launched.name
            done = _script("start", *self._args(), env=env, timeout=600)
            if done.returncode != 0:
                raise RuntimeError(
                    f"scripts/infinity.sh start failed ({done.returncode}): {done.stderr[-3000:]}"
                )
            self.launched = self.launched or bool(launched.read().strip())
        return done.stdout.strip()

    def _key_env(self) -> dict[str, str]:
        """The server's key, for the script's own readiness checks (a keyed server answers 401 without it)."""
        return {} if self.api_key is None else {"RERANK_INFINITY_API_KEY": self.api_key}

    def running(self) -> bool:
        return _script("status", *self._args(), env=self._key_env(), timeout=60).returncode == 0

    def stop(self) -> None:
        """SIGTERM (then SIGKILL) the server this object launched; one found running is left alone."""
        if self.launched:
            _script("stop", *self._args(), timeout=120)
            self.launched = False

    def kill(self) -> None:
        """SIGKILL it at once, like a crash (only one this object launched)."""
        if self.launched:
            done = _script("kill", *self._args(), timeout=120)
            if done.returncode != 0:
                raise RuntimeError(f"scripts/infinity.sh kill failed: {done.stderr[-2000:]}")
            self.launched = False


# ---------------------------------------------------------------- the hop without a model


def serve_echo(port: int) -> None:
    """A Cohere-style ``POST /rerank`` that parses the request and answers every document at once (a fixed
    score each): the remote hop with no model behind it. Runs until killed (``--serve-echo PORT``)."""
    from aiohttp import web

    async def rerank(request: web.Request) -> web.Response:
        body = await request.json()
        count = len(body["documents"])
        results = [{"index": i, "relevance_score": 0.5} for i in range(count)]
        return web.json_response({"object": "rerank", "results": results, "model": body.get("model")})

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/rerank", rerank)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


@contextlib.contextmanager
def echo_server() -> Any:
    """The echo server in its own process (its CPU is not the client's event loop); yields its /rerank URL."""
    port = free_port()
    process = subprocess.Popen([sys.executable, __file__, "--serve-echo", str(port)])
    try:
        deadline = time.monotonic() + 30
        while True:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the echo server did not start")
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}/rerank"
    finally:
        process.terminate()
        process.wait(timeout=30)


# ---------------------------------------------------------------- the bench


def load_requests(count: int, size: int, offset: int) -> list[tuple[str, list[str]]]:
    """``count`` (query, passages) pairs: cranfield queries in order from ``offset``, each with ``size`` documents
    taken round the corpus from a different place, so no two requests repeat a (query, passage) pair."""
    docs = []
    with open(CRANFIELD / "corpus.jsonl", encoding="utf8") as handle:
        for line in handle:
            doc = json.loads(line)
            docs.append(f"{doc.get('title', '')}\n{doc.get('text', '')}".strip())
    with open(CRANFIELD / "queries.jsonl", encoding="utf8") as handle:
        queries = [json.loads(line)["text"] for line in handle]
    requests = []
    for k in range(count):
        index = offset + k
        start = (index * 97) % len(docs)
        passages = [docs[(start + j) % len(docs)] for j in range(size)]
        requests.append((queries[index % len(queries)], passages))
    return requests


def quantile(values: list[float], q: float) -> float:
    """Linear-interpolated quantile (numpy's default); nan for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    position = (len(ordered) - 1) * q
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def model_settings(args: argparse.Namespace, remote_url: str | None) -> Any:
    from bridge.scoring.settings import ModelSettings, RemoteSettings

    common: dict[str, Any] = {"source": str(args.model), "cache_size": 0, "activation": "sigmoid"}
    if remote_url is None:
        return ModelSettings(
            **common, device="cpu", dtype="float32", workers=1, threads=args.threads, warmup=True
        )
    remote = RemoteSettings(
        protocol="cohere",
        url=remote_url,
        model=args.served_name,
        max_client_batch_size=args.client_batch,
        timeout_s=120.0,
        retries=0,
    )
    return ModelSettings(**common, warmup=True, remote=remote)


async def measure(args: argparse.Namespace, remote_url: str, echo_url: str) -> dict[str, Any]:
    from bridge.scoring.local import LocalScorer
    from bridge.scoring.remote import RemoteScorer

    sizes = [int(s) for s in args.sizes.split(",") if s]
    scorers: dict[str, Any] = {
        "in-process": LocalScorer("in-process", model_settings(args, None)),
        "remote": RemoteScorer("remote", model_settings(args, remote_url)),
        "hop": RemoteScorer("hop", model_settings(args, echo_url)),
    }
    for scorer in scorers.values():
        await scorer.start()
    times: dict[tuple[str, int], list[float]] = {(n, s): [] for n in scorers for s in sizes}
    max_diff = {s: 0.0 for s in sizes}
    started = time.monotonic()
    rounds = 0
    offset = 0
    try:
        for round_index in range(args.rounds):
            if round_index and time.monotonic() - started > args.max_seconds:
                break
            order = list(scorers)[round_index % 3 :] + list(scorers)[: round_index % 3]  # rotated
            for size in sizes:
                requests = load_requests(args.per_round, size, offset)
                offset += args.per_round
                scores: dict[str, list[list[float]]] = {}
                for name in order:
                    scores[name] = []
                    for query, passages in requests:
                        t0 = time.perf_counter()
                        scores[name].append(await scorers[name].score(query, passages))
                        times[(name, size)].append(time.perf_counter() - t0)
                for local, remote in zip(scores["in-process"], scores["remote"], strict=True):
                    diff = max((abs(a - b) for a, b in zip(local, remote, strict=True)), default=0.0)
                    max_diff[size] = max(max_diff[size], diff)
            rounds += 1
    finally:
        for scorer in scorers.values():
            await scorer.close()
    results = []
    for size in sizes:
        local, remote, hop = (times[(name, size)] for name in ("in-process", "remote", "hop"))
        row: dict[str, Any] = {"passages": size, "requests": len(local), "max_abs_diff": max_diff[size]}
        for q, label in ((0.5, "p50"), (0.95, "p95")):
            row[f"in_process_{label}_ms"] = quantile(local, q) * 1000
            row[f"remote_{label}_ms"] = quantile(remote, q) * 1000
            row[f"added_{label}_ms"] = row[f"remote_{label}_ms"] - row[f"in_process_{label}_ms"]
            row[f"hop_{label}_ms"] = quantile(hop, q) * 1000
        results.append(row)
    return {
        "bench": "remote",
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "threads": args.threads,
        "model": args.model.name,
        "server": "infinity-emb (torch, float32, CPU) via scripts/infinity.sh"
        if args.infinity_url is None
        else f"given: {args.infinity_url}",
        "client_batch": args.client_batch,
        "rounds": rounds,
        "seconds": round(time.monotonic() - started, 1),
        "sizes": results,
    }


def table(report: dict[str, Any]) -> str:
    lines = [
        f"remote hop on {report['cpu']} ({report['cores']} cores), {report['threads']} torch thread(s) each, "
        f"{report['rounds']} rounds, {report['seconds']} s",
        f"{'passages':>8} {'n':>3} {'in-proc p50':>11} {'remote p50':>10} {'added p50':>9} {'hop p50':>8} "
        f"{'in-proc p95':>11} {'remote p95':>10} {'added p95':>9} {'hop p95':>8} {'max|Δ|':>8}",
    ]
    for row in report["sizes"]:
        lines.append(
            f"{row['passages']:>8} {row['requests']:>3} {row['in_process_p50_ms']:>9.1f}ms "
            f"{row['remote_p50_ms']:>8.1f}ms {row['added_p50_ms']:>7.1f}ms {row['hop_p50_ms']:>6.1f}ms "
            f"{row['in_process_p95_ms']:>9.1f}ms {row['remote_p95_ms']:>8.1f}ms {row['added_p95_ms']:>7.1f}ms "
            f"{row['hop_p95_ms']:>6.1f}ms {row['max_abs_diff']:>8.1e}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=CROSS_ENCODER, help="cross-encoder directory")
    parser.add_argument("--sizes", default="1,20,50,100", help="passages per request")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--per-round", type=int, default=2, help="requests per size, scorer and round")
    parser.add_argument("--max-seconds", type=float, default=600, help="no new round after this")
    parser.add_argument("--threads", type=int, default=1, help="torch threads, in-process and in the server")
    parser.add_argument("--client-batch", type=int, default=128, help="the remote's max_client_batch_size")
    parser.add_argument("--infinity-url", help="a running infinity (base URL) instead of starting one")
    parser.add_argument(
        "--served-name", help="the model's name on the server (default: the model dir's name)"
    )
    parser.add_argument("--serve-echo", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_echo:
        serve_echo(args.serve_echo)
        return 0
    args.served_name = args.served_name or args.model.name
    import logging

    logging.basicConfig(level=logging.WARNING)
    import torch

    torch.set_num_threads(args.threads)
    server: InfinityServer | None = None
    try:
        if args.infinity_url is None:
            try:
                install_infinity(args.model)
            except InfinityUnavailable as exc:
                print(f"infinity cannot run here: {exc}", file=sys.stderr)
                print(json.dumps({"bench": "remote", "skipped": str(exc)}))
                return 3
            server = InfinityServer(model=args.model, name=args.served_name, threads=args.threads)
            base = server.start()
        else:
            base = args.infinity_url.rstrip("/")
        with echo_server() as echo_url:
            report = asyncio.run(measure(args, f"{base}/rerank", echo_url))
    finally:
        if server is not None:
            server.stop()
    print(table(report))
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
