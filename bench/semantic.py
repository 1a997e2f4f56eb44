"""Reranking cost per query: cross-encoder vs bi-encoder (cold, then with passages cached), same queries, one run.

The queries are the first ``--queries`` of the shared NFCorpus test queries (``queries.jsonl``, raw text); each
gets the ``--window`` corpus documents (``corpus.jsonl``, preprocessed abstracts) that share the most distinct
query words with it (ties by corpus order): a crude lexical first stage, so windows overlap across queries as
real result lists do. Passages are the documents' ``text``.

Measured, each as wall time of one ``await scorer.score(query, passages, keys)`` per query, one caller:

* ``cross-encoder <dtype>``: ``LocalScorer`` on ``--cross-encoder`` (score cache off), per dtype in ``--dtypes``
  (``bfloat16`` only on a CPU with AMX or AVX512-BF16, as the scorer itself would choose it).
* ``bi-encoder <dtype> cold``: ``BiEncoderScorer`` on ``--bi-encoder`` with both vector caches cleared before every
  query: the query and all its passages are embedded (what the first query over new documents pays).
* ``bi-encoder <dtype> cached``: the same after one pass over all queries; the query-vector cache is cleared before
  every query, so each still pays its query's encoding (a new query over documents seen before).

Median and mean per query; the last line of output is one JSON object with the figures and the ratios.

    python bench/semantic.py                       # 20 queries x 100 passages, CPU
    python bench/semantic.py --queries 5 --dtypes float32
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import logging
import os
import re
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.harness import cpu_name  # noqa: E402  (needs REPO on the path when run as a script)

SHARED = REPO.parent / "shared"
COLLECTION = SHARED / "collections" / "nfcorpus"
CROSS_ENCODER = SHARED / "models" / "minilm-l6-ce-v1"
BI_ENCODER = SHARED / "models" / "all-minilm-l6-v2"
_WORD = re.compile(r"[a-z0-9]+")


def load_windows(queries: int, window: int) -> list[tuple[str, list[str], list[str]]]:
    """(query, passages, keys) per query: the documents sharing the most distinct query words."""
    docs: list[tuple[str, str, set[str]]] = []
    with open(COLLECTION / "corpus.jsonl", encoding="utf8") as handle:
        for line in handle:
            doc = json.loads(line)
            text = " ".join(part for part in (doc.get("title", ""), doc.get("text", "")) if part)
            docs.append((doc["_id"], text, set(_WORD.findall(text.lower()))))
    windows = []
    with open(COLLECTION / "queries.jsonl", encoding="utf8") as handle:
        for line in handle:
            if len(windows) == queries:
                break
            query = json.loads(line)["text"]
            words = set(_WORD.findall(query.lower()))
            ranked = sorted(range(len(docs)), key=lambda i: -len(words & docs[i][2]))[:window]
            windows.append((query, [docs[i][1] for i in ranked], [f"nfcorpus/{docs[i][0]}" for i in ranked]))
    return windows


async def time_queries(
    scorer: Any, windows: list[tuple[str, list[str], list[str]]], before: Any = None
) -> list[float]:
    seconds = []
    for query, passages, keys in windows:
        if before is not None:
            before()
        started = time.perf_counter()
        scores = await scorer.score(query, passages, keys)
        seconds.append(time.perf_counter() - started)
        assert len(scores) == len(passages)
    return seconds


async def run(args: argparse.Namespace) -> dict[str, Any]:
    from bridge.scoring.device import cpu_bf16_flags
    from bridge.scoring.local import LocalScorer
    from bridge.scoring.semantic import BiEncoderScorer
    from bridge.scoring.settings import ModelSettings

    windows = load_windows(args.queries, args.window)
    flags = cpu_bf16_flags()
    dtypes = [d for d in args.dtypes.split(",") if d and (d != "bfloat16" or flags)]
    rows: dict[str, list[float]] = {}
    for dtype in dtypes:
        settings = ModelSettings(
            source=str(args.cross_encoder), device=args.device, dtype=dtype, cache_size=0
        )
        cross = LocalScorer("ce", settings)
        await cross.start()
        try:
            rows[f"cross-encoder {dtype}"] = await time_queries(cross, windows)
        finally:
            await cross.close()
        bi = BiEncoderScorer(
            "bi",
            ModelSettings(kind="bi-encoder", source=str(args.bi_encoder), device=args.device, dtype=dtype),
        )
        await bi.start()
        try:
            rows[f"bi-encoder {dtype} cold"] = await time_queries(bi, windows, bi.clear_cache)
            await time_queries(
                bi, windows
            )  # every window's passages cached (the cold pass kept only the last)
            rows[f"bi-encoder {dtype} cached"] = await time_queries(
                bi, windows, functools.partial(bi.clear_cache, "queries")
            )
        finally:
            await bi.close()

    print(
        f"{len(windows)} NFCorpus queries x {args.window} passages; {cpu_name()}, "
        f"{len(os.sched_getaffinity(0))} usable cores, bf16 flags: {', '.join(sorted(flags)) or 'none'}"
    )
    print(f"{'scorer':<30} {'median ms/query':>16} {'mean ms/query':>14} {'x cross-encoder':>16}")
    summary: dict[str, Any] = {
        "queries": len(windows),
        "window": args.window,
        "cpu": cpu_name(),
        "timings_ms": {},
    }
    for name, seconds in rows.items():
        dtype = name.split()[1]
        base = statistics.median(rows[f"cross-encoder {dtype}"])
        median = statistics.median(seconds)
        print(
            f"{name:<30} {median * 1000:>16.1f} {statistics.mean(seconds) * 1000:>14.1f} {median / base:>16.3f}"
        )
        summary["timings_ms"][name] = {
            "median": round(median * 1000, 2),
            "mean": round(statistics.mean(seconds) * 1000, 2),
        }
    ratios = {}
    for dtype in dtypes:
        base = statistics.median(rows[f"cross-encoder {dtype}"])
        ratios[f"bi_cached_over_cross_{dtype}"] = round(
            statistics.median(rows[f"bi-encoder {dtype} cached"]) / base, 4
        )
        ratios[f"bi_cold_over_cross_{dtype}"] = round(
            statistics.median(rows[f"bi-encoder {dtype} cold"]) / base, 4
        )
    summary["ratios"] = ratios
    summary["target_bi_cached_under_a_tenth"] = all(v < 0.1 for k, v in ratios.items() if "cached" in k)
    with contextlib.suppress(OSError):
        summary["load_average_1min"] = round(os.getloadavg()[0], 2)
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=20)
    parser.add_argument("--window", type=int, default=100)
    parser.add_argument(
        "--dtypes", default="float32,bfloat16", help="bfloat16 is skipped without CPU support"
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--cross-encoder", type=Path, default=CROSS_ENCODER)
    parser.add_argument("--bi-encoder", type=Path, default=BI_ENCODER)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    summary = asyncio.run(run(args))
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
