"""Scoring throughput: sentence-transformers vs the bridge's scorer, one caller vs many, on identical pairs.

What is measured, in one run, on the same deterministic pairs (``--pairs`` pairs = groups of ``--per-call``
passages of 40-300 words, each group with its own query):

* ``st_fp32``: sentence-transformers ``CrossEncoder.predict(all pairs, batch_size=32)`` in float32, the baseline.
* ``bridge_single``: one caller awaiting ``LocalScorer.score(query, group)`` for each group in turn (the way one
  search request after another arrives), in the scorer's ``--dtype`` (``auto``: bf16 on AMX/AVX512-BF16 CPUs and
  on GPUs).
* ``bridge_concurrent``: ``--callers`` callers at once, each scoring one group of ``--per-call`` passages
  (groups reused round-robin when there are more callers than groups).
* ``model alone``: the concurrent run's pairs, tokenised beforehand and planned into the same batches, run by
  the scorer's worker threads with nothing else: the most any scheduling can get from the model on these cores,
  and so the bound on what concurrency can add over one caller.

The score cache is off. The machine may be shared, so each measurement is repeated ``--rounds`` times,
interleaved, and the best round is reported (the least disturbed one); all rounds are printed too.
The last line of output is one JSON object with the headline numbers.

    python bench/scoring.py                      # CPU, model from ../shared/models
    python bench/scoring.py --device cuda        # the same on a GPU
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import platform
import random
import re
import statistics
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

if TYPE_CHECKING:
    from bridge.scoring.batcher import BatcherStats

SHARED = REPO.parent / "shared"
DEFAULT_MODELS = [SHARED / "models" / "minilm-l6-ce-v1"]
COLLECTIONS = ["vaswani", "nfcorpus", "cranfield"]

# A fallback vocabulary for machines without the shared collections: common English and IR words.
FALLBACK_WORDS = (
    "the of and to in is was for on that with as by at from this which are be an or it has have were not "
    "their its also more been other can one two first new most may used such into than only some these time "
    "system results data model method information retrieval search query document ranking relevance score "
    "network energy temperature pressure flow wave electron field current voltage magnetic signal frequency "
    "analysis theory measurement effect study patients treatment clinical risk disease cells protein gene "
    "city population river history museum university government language music science research people"
).split()


def default_model() -> Path | None:
    return next((path for path in DEFAULT_MODELS if (path / "config.json").exists()), None)


def load_texts() -> tuple[list[str], list[str]]:
    """Corpus words and query texts from the first shared collection found, else a synthetic vocabulary."""
    for name in COLLECTIONS:
        folder = SHARED / "collections" / name
        if (folder / "corpus.jsonl").exists() and (folder / "queries.jsonl").exists():
            words: list[str] = []
            with open(folder / "corpus.jsonl", encoding="utf8") as handle:
                for line in handle:
                    doc = json.loads(line)
                    words.extend(re.findall(r"\S+", f"{doc.get('title', '')} {doc.get('text', '')}"))
                    if len(words) > 400_000:
                        break
            with open(folder / "queries.jsonl", encoding="utf8") as handle:
                queries = [json.loads(line)["text"] for line in handle]
            return words, queries
    rng = random.Random(7)
    words = [rng.choice(FALLBACK_WORDS) for _ in range(200_000)]
    queries = [" ".join(rng.choice(FALLBACK_WORDS) for _ in range(rng.randint(3, 9))) for _ in range(200)]
    return words, queries


def build_groups(pairs: int, per_call: int, seed: int) -> list[tuple[str, list[str]]]:
    """Deterministic (query, passages) groups; passages are 40-300 consecutive corpus words."""
    words, queries = load_texts()
    rng = random.Random(seed)
    groups = []
    for start in range(0, pairs, per_call):
        count = min(per_call, pairs - start)
        passages = []
        for _ in range(count):
            length = rng.randint(40, 300)
            offset = rng.randrange(0, len(words) - length)
            passages.append(" ".join(words[offset : offset + length]))
        groups.append((rng.choice(queries), passages))
    return groups


def machine_notes(device: str) -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    notes = [
        f"cpu: {cpu}",
        f"cores usable: {len(os.sched_getaffinity(0))}",
        f"torch {torch.__version__}",
    ]
    if device.startswith("cuda") and torch.cuda.is_available():
        notes.append(f"gpu: {torch.cuda.get_device_name(0)}")
    with contextlib.suppress(OSError):
        notes.append(f"load average (1 min) at the end: {os.getloadavg()[0]:.2f}")
    return "; ".join(notes)


def run_st(
    model_path: str, device: str, groups: list[tuple[str, list[str]]], threads: int
) -> tuple[float, list[float]]:
    import torch
    from sentence_transformers import CrossEncoder

    # Explicit: the scorer's workers size their own thread teams, which can leak into torch's global default.
    torch.set_num_threads(threads)

    st_device = None if device == "auto" else device
    encoder = CrossEncoder(model_path, device=st_device, model_kwargs={"dtype": torch.float32})
    pairs = [(query, passage) for query, passages in groups for passage in passages]
    encoder.predict(pairs[:32], batch_size=32, show_progress_bar=False)  # warm-up
    started = time.perf_counter()
    scores = encoder.predict(pairs, batch_size=32, show_progress_bar=False)
    seconds = time.perf_counter() - started
    return len(pairs) / seconds, [float(score) for score in scores]


async def run_single(scorer: object, groups: list[tuple[str, list[str]]]) -> tuple[float, list[float]]:
    started = time.perf_counter()
    scores: list[float] = []
    for query, passages in groups:
        scores.extend(await scorer.score(query, passages))  # type: ignore[attr-defined]
    seconds = time.perf_counter() - started
    return len(scores) / seconds, scores


def run_ceiling(model: object, groups: list[tuple[str, list[str]]], callers: int) -> float:
    """The model alone on the concurrent run's pairs: no queue, no event loop, no tokenising in the timing.

    The pairs are tokenised up front, sorted and planned into batches as the batcher plans them, then the
    scorer's own worker layout (``workers`` threads of ``threads`` torch threads) runs them, longest first, each
    thread taking the next batch as it frees up. No scheduling of the same model on the same cores can beat it,
    so it bounds what many callers can gain over one.
    """
    import threading

    import torch

    from bridge.scoring.batcher import CALL_OVERHEAD_DIVISOR, plan_batches

    work = [groups[i % len(groups)] for i in range(callers)]
    items = sorted((item for q, ps in work for item in model.encode(q, ps)), key=len)  # type: ignore[attr-defined]
    budget = model.max_batch_tokens  # type: ignore[attr-defined]
    batches, lo = [], 0
    for size in plan_batches([len(item) for item in items], budget, budget // CALL_OVERHEAD_DIVISOR):
        batches.append(items[lo : lo + size])
        lo += size
    batches.sort(key=lambda batch: -len(batch) * len(batch[-1]))
    pending = iter(batches)
    lock = threading.Lock()

    def worker() -> None:
        if model.placement.device.type == "cpu":  # type: ignore[attr-defined]
            torch.set_num_threads(model.threads)  # type: ignore[attr-defined]
        while True:
            with lock:
                batch = next(pending, None)
            if batch is None:
                return
            model.score_batch(batch)  # type: ignore[attr-defined]

    threads = [threading.Thread(target=worker) for _ in range(model.workers)]  # type: ignore[attr-defined]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return len(items) / (time.perf_counter() - started)


async def run_concurrent(scorer: object, groups: list[tuple[str, list[str]]], callers: int) -> float:
    work = [groups[i % len(groups)] for i in range(callers)]
    started = time.perf_counter()
    results = await asyncio.gather(*(scorer.score(q, ps) for q, ps in work))  # type: ignore[attr-defined]
    seconds = time.perf_counter() - started
    return sum(map(len, results)) / seconds


def batch_shape(before: BatcherStats, after: BatcherStats) -> str:
    batches = after.batches - before.batches
    items = after.items_scored - before.items_scored
    padded = after.padded_tokens - before.padded_tokens
    tokens = after.tokens - before.tokens
    return (
        f"{batches} model calls, {items / max(batches, 1):.1f} pairs and {padded / max(batches, 1):.0f} "
        f"padded tokens per call, padding overhead {padded / max(tokens, 1) - 1:.1%}"
    )


async def bench(args: argparse.Namespace) -> dict[str, float]:
    from bridge.scoring.local import LocalScorer
    from bridge.scoring.settings import ModelSettings

    with contextlib.suppress(OSError):
        print(
            f"load average (1 min) at the start: {os.getloadavg()[0]:.2f} on {len(os.sched_getaffinity(0))} cores"
        )
    groups = build_groups(args.pairs, args.per_call, args.seed)
    settings = ModelSettings(
        source=str(args.model),
        device=args.device,
        dtype=args.dtype,
        cache_size=0,
        max_batch_tokens=args.max_batch_tokens,
        threads=args.threads,
        workers=args.workers,
    )
    scorer = LocalScorer("bench", settings)
    await scorer.start()
    assert scorer.model is not None
    model = scorer.model
    print(
        f"bridge: {model.placement.describe()}, {model.workers} workers x {model.threads} torch threads, "
        f"batches up to {model.max_batch_tokens} padded tokens"
    )
    print(f"sentence-transformers: float32, batch_size 32, {args.st_threads} torch threads")
    print(
        f"pairs: {sum(len(p) for _, p in groups)} in {len(groups)} groups; concurrent: {args.callers} callers "
        f"x {args.per_call} passages; {args.rounds} rounds, best reported"
    )

    st_runs: list[float] = []
    single_runs: list[float] = []
    concurrent_runs: list[float] = []
    ceiling_runs: list[float] = []
    st_scores: list[float] = []
    bridge_scores: list[float] = []
    for round_no in range(1, args.rounds + 1):
        if not args.skip_st:
            # Blocks the event loop on purpose: nothing else runs meanwhile.
            rate, st_scores = run_st(str(args.model), args.device, groups, args.st_threads)
            st_runs.append(rate)
        before = scorer.stats
        rate, bridge_scores = await run_single(scorer, groups)
        single_runs.append(rate)
        single_batches = batch_shape(before, scorer.stats)
        before = scorer.stats
        concurrent_runs.append(await run_concurrent(scorer, groups, args.callers))
        concurrent_batches = batch_shape(before, scorer.stats)
        ceiling_runs.append(await asyncio.to_thread(run_ceiling, model, groups, args.callers))
        print(
            f"  round {round_no}: st {st_runs[-1] if st_runs else float('nan'):7.1f}  single "
            f"{single_runs[-1]:7.1f}  concurrent {concurrent_runs[-1]:7.1f}  model alone "
            f"{ceiling_runs[-1]:7.1f} pairs/s",
            flush=True,
        )
    await scorer.close()

    st = max(st_runs) if st_runs else float("nan")
    single, concurrent, ceiling = max(single_runs), max(concurrent_runs), max(ceiling_runs)
    diff = (
        max(abs(a - b) for a, b in zip(st_scores, bridge_scores, strict=True)) if st_scores else float("nan")
    )
    print()
    print(f"{'measure':<44}{'best':>10}{'median':>10}")
    rows = [
        ("sentence-transformers fp32, batch 32 (pairs/s)", st_runs),
        (f"bridge, 1 caller x {args.per_call} passages (pairs/s)", single_runs),
        (f"bridge, {args.callers} callers x {args.per_call} passages (pairs/s)", concurrent_runs),
        ("the model alone, same batches (pairs/s)", ceiling_runs),
    ]
    for label, runs in rows:
        if runs:
            print(f"{label:<44}{max(runs):>10.1f}{statistics.median(runs):>10.1f}")
    print(f"{'speed-up single vs sentence-transformers':<44}{single / st:>10.2f}x")
    print(f"{'speed-up concurrent vs single':<44}{concurrent / single:>10.2f}x")
    print(f"{'single caller / model alone':<44}{single / ceiling:>10.1%}")
    print(f"{'concurrent callers / model alone':<44}{concurrent / ceiling:>10.1%}")
    print(f"{'max |score - s-t fp32| (' + args.dtype + ')':<44}{diff:>10.5f}")
    print(f"batches, single caller: {single_batches}")
    print(f"batches, {args.callers} callers: {concurrent_batches}")
    print(f"machine: {machine_notes(args.device)}")
    return {
        "st_fp32_pairs_per_s": round(st, 2),
        "bridge_single_pairs_per_s": round(single, 2),
        "bridge_concurrent16_pairs_per_s": round(concurrent, 2),
        "speedup_single_vs_st": round(single / st, 3),
        "speedup_concurrent_vs_single": round(concurrent / single, 3),
        "model_alone_pairs_per_s": round(ceiling, 2),
        "single_share_of_model_alone": round(single / ceiling, 3),
        "concurrent_share_of_model_alone": round(concurrent / ceiling, 3),
        "max_abs_diff_bf16": round(diff, 6),
        "callers": args.callers,
        "device": args.device,
        "dtype": args.dtype,
        "st_threads": args.st_threads,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model", type=Path, default=default_model(), help="cross-encoder directory or Hub id"
    )
    parser.add_argument("--pairs", type=int, default=1000)
    parser.add_argument("--per-call", type=int, default=100, help="passages per score() call")
    parser.add_argument("--callers", type=int, default=16)
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps")
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "float16", "bfloat16"])
    parser.add_argument("--max-batch-tokens", type=int, default=None, help="default: the scorer's own")
    parser.add_argument(
        "--workers", type=int, default=None, help="scorer inference threads (default: its own)"
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads per worker (default: its own)"
    )
    parser.add_argument(
        "--st-threads",
        type=int,
        default=None,
        help="torch threads for sentence-transformers (default: usable cores)",
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--skip-st", action="store_true", help="bridge numbers only")
    args = parser.parse_args()
    args.st_threads = args.st_threads or len(os.sched_getaffinity(0))
    if args.model is None:
        parser.error("no model found under ../shared/models; pass --model")
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")
    result = asyncio.run(bench(args))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
