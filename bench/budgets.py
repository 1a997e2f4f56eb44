"""Passage token budgets: what ``max_passage_tokens`` saves in time and costs in relevance, same pairs, one run.

The queries are the first ``--queries`` judged NFCorpus test queries (``queries.jsonl`` with ``qrels.tsv``); each
gets 50-100 corpus documents (a deterministic count per query) that share the most distinct query words with it
(ties by corpus order): a crude lexical first stage, so relevant and irrelevant abstracts are mixed as in a real
result list. A passage is the document's title and text joined by a newline, as ``rerank-bridge eval`` sends them.

Measured per dtype (``--dtypes``; ``bfloat16`` only on a CPU with AMX or AVX512-BF16, as the scorer would choose)
and per budget (``--budgets``, ``none`` = the model's whole ``max_length``): one ``LocalScorer`` each (score cache
off), every query's ``await scorer.score(query, passages)`` timed, one caller. The configurations take turns per
round (``--rounds``; the machine may be shared) and each reports its best round. Beside ms per query: model
tokens per pair (what the scorer's batches held), NDCG@10 of the reranked windows against the judgments, and how
much of each query's top 10 the budget leaves as the whole passages give it. The last line of output is one JSON
object with the figures.

    python bench/budgets.py                                  # 20 queries, fp32 and bf16, none/256/128/64
    python bench/budgets.py --dtypes float32 --budgets none,64 --rounds 1
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import random
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
_WORD = re.compile(r"[a-z0-9]+")

Window = tuple[str, str, list[str], list[str]]  # query id, query, passages, document ids


def load_windows(queries: int, smallest: int, largest: int, seed: int) -> tuple[list[Window], dict[str, Any]]:
    """(query id, query, passages, ids) per judged query, and the judgments."""
    from bridge.evaluation.collection import load_collection

    collection = load_collection(COLLECTION)
    docs: list[tuple[str, str, set[str]]] = []
    for doc in collection.documents():
        text = "\n".join(part for part in (doc.title, doc.text) if part)
        docs.append((doc.id, text, set(_WORD.findall(text.lower()))))
    rng = random.Random(seed)
    windows: list[Window] = []
    for query_id in collection.judged_queries(queries):
        query = collection.queries[query_id]
        words = set(_WORD.findall(query.lower()))
        size = rng.randint(smallest, largest)
        ranked = sorted(range(len(docs)), key=lambda i: -len(words & docs[i][2]))[:size]
        windows.append((query_id, query, [docs[i][1] for i in ranked], [docs[i][0] for i in ranked]))
    return windows, collection.qrels


async def one_pass(scorer: Any, windows: list[Window]) -> tuple[list[float], dict[str, list[str]], float]:
    """Seconds per query, each query's reranked ids, and model tokens per pair over the pass."""
    before = scorer.stats
    seconds: list[float] = []
    ranked: dict[str, list[str]] = {}
    for query_id, query, passages, ids in windows:
        started = time.perf_counter()
        scores = await scorer.score(query, passages)
        seconds.append(time.perf_counter() - started)
        order = sorted(range(len(ids)), key=lambda i: -scores[i])
        ranked[query_id] = [ids[i] for i in order]
    after = scorer.stats
    pairs = max(after.items_scored - before.items_scored, 1)
    return seconds, ranked, (after.tokens - before.tokens) / pairs


def overlap_at_10(ranked: dict[str, list[str]], reference: dict[str, list[str]]) -> float:
    """Mean share of the reference's top 10 that a ranking's top 10 keeps (all of a window under 10 is kept)."""
    shares = [len(set(ids[:10]) & set(reference[q][:10])) / len(reference[q][:10]) for q, ids in ranked.items()]
    return statistics.mean(shares)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    from bridge.evaluation.metrics import evaluate
    from bridge.scoring.device import cpu_bf16_flags
    from bridge.scoring.local import LocalScorer
    from bridge.scoring.settings import ModelSettings

    windows, qrels = load_windows(args.queries, args.min_window, args.max_window, args.seed)
    flags = cpu_bf16_flags() if args.device == "cpu" else {"gpu"}
    dtypes = [d for d in args.dtypes.split(",") if d and (d != "bfloat16" or flags)]
    budgets: list[int | None] = [None if b == "none" else int(b) for b in args.budgets.split(",") if b]
    configs = [(dtype, budget) for dtype in dtypes for budget in budgets]
    scorers: dict[tuple[str, int | None], Any] = {}
    for dtype, budget in configs:
        settings = ModelSettings(
            source=str(args.model), device=args.device, dtype=dtype, cache_size=0, max_passage_tokens=budget
        )
        scorer = LocalScorer(f"{dtype}-{budget}", settings)
        await scorer.start()
        await scorer.score("warm up query", windows[0][2][:8])
        scorers[dtype, budget] = scorer
    best: dict[tuple[str, int | None], tuple[list[float], dict[str, list[str]], float]] = {}
    try:
        for round_no in range(1, args.rounds + 1):
            line = []
            for config in configs:
                result = await one_pass(scorers[config], windows)
                if config not in best or sum(result[0]) < sum(best[config][0]):
                    best[config] = result
                line.append(f"{config[0]}/{config[1] or 'none'} {sum(result[0]):.1f}s")
            print(f"  round {round_no}: " + ", ".join(line), flush=True)
    finally:
        for scorer in scorers.values():
            await scorer.close()

    pairs = sum(len(w[2]) for w in windows)
    print()
    print(
        f"{len(windows)} judged NFCorpus queries, {pairs} pairs ({args.min_window}-{args.max_window} passages "
        f"per query); {args.model.name}; {cpu_name()}, {len(os.sched_getaffinity(0))} usable cores, "
        f"bf16 flags: {', '.join(sorted(flags)) or 'none'}; best of {args.rounds} rounds"
    )
    header = (
        f"{'dtype':<10}{'max_passage_tokens':>19}{'tokens/pair':>12}{'median ms/q':>12}{'mean ms/q':>11}"
        f"{'pairs/s':>9}{'x none':>8}{'NDCG@10':>9}{'top10 kept':>11}"
    )
    print(header)
    rows = []
    for dtype in dtypes:
        base_seconds, base_ranked, _ = best[dtype, budgets[0]]
        for budget in budgets:
            seconds, ranked, tokens = best[dtype, budget]
            ndcg = evaluate(qrels, ranked).means["ndcg@10"]
            row = {
                "dtype": dtype,
                "max_passage_tokens": budget,
                "tokens_per_pair": round(tokens, 1),
                "median_ms_per_query": round(statistics.median(seconds) * 1000, 1),
                "mean_ms_per_query": round(statistics.mean(seconds) * 1000, 1),
                "pairs_per_s": round(pairs / sum(seconds), 1),
                "time_vs_first_budget": round(sum(seconds) / sum(base_seconds), 3),
                "ndcg@10": round(ndcg, 4),
                "top10_kept_vs_first_budget": round(overlap_at_10(ranked, base_ranked), 3),
            }
            rows.append(row)
            print(
                f"{dtype:<10}{budget or 'none'!s:>19}{tokens:>12.1f}{row['median_ms_per_query']:>12.1f}"
                f"{row['mean_ms_per_query']:>11.1f}{row['pairs_per_s']:>9.1f}{row['time_vs_first_budget']:>8.3f}"
                f"{ndcg:>9.4f}{row['top10_kept_vs_first_budget']:>11.3f}"
            )
    summary: dict[str, Any] = {
        "queries": len(windows),
        "pairs": pairs,
        "model": args.model.name,
        "device": args.device,
        "cpu": cpu_name(),
        "rounds": args.rounds,
        "rows": rows,
    }
    with contextlib.suppress(OSError):
        summary["load_average_1min"] = round(os.getloadavg()[0], 2)
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=20)
    parser.add_argument("--min-window", type=int, default=50)
    parser.add_argument("--max-window", type=int, default=100)
    parser.add_argument("--budgets", default="none,256,128,64", help="max_passage_tokens values; none = unset")
    parser.add_argument("--dtypes", default="float32,bfloat16", help="bfloat16 is skipped without CPU support")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--model", type=Path, default=CROSS_ENCODER, help="cross-encoder directory")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seed", type=int, default=5)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")
    summary = asyncio.run(run(args))
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
