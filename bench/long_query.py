"""One huge query text against everyone else: what it costs to tokenise, and what it does to a normal search.

Measured on the shared trained model (or ``--model``), CPU by default, score cache off:

* ``tokenise_s``: ``CrossEncoderModel.encode`` of a ``--query-mib`` MiB query with ``--pairs`` passages of about
  200 words (the work a worker does before the model sees anything); ``tokenise_long_passages_s`` the same for
  a short query with ``--pairs`` passages of that size (a stored 1 MiB document in every hit).
* ``normal_alone_s``: latency of a normal search (short query, ``--pairs`` passages) with nothing else running.
* ``normal_beside_huge_s``: the same search submitted 50 ms after the huge one, while the huge one is in flight;
  ``huge_s`` is the huge one's own latency. ``--budget`` caps each wait (a search over it counts as timed out).

The best of ``--rounds`` rounds is reported (the machine may be shared). The last line is one JSON object.

    python bench/long_query.py
    PYTHONPATH=/tmp/old-tree python bench/long_query.py   # the same against another checkout
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if not os.environ.get("PYTHONPATH"):
    sys.path.insert(0, str(REPO))

DEFAULT_MODEL = REPO.parent / "shared" / "models" / "minilm-l6-ce-v1"
WORDS = (
    "berlin population people live museums city the of and paris weather inhabitants area square kilometers "
    "river history capital wall east west government university music art science"
).split()


def text(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words))


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


async def timed(coro: object, budget: float) -> float:
    started = time.perf_counter()
    try:
        await asyncio.wait_for(coro, budget)  # type: ignore[arg-type]
    except TimeoutError:
        return float("inf")
    return time.perf_counter() - started


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default=str(DEFAULT_MODEL))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--query-mib", type=float, default=1.0)
    parser.add_argument("--pairs", type=int, default=20)
    parser.add_argument("--budget", type=float, default=60.0, help="seconds each measured search may take")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()

    import bridge.scoring.model as model_module
    from bridge.scoring.local import LocalScorer
    from bridge.scoring.settings import ModelSettings

    rng = random.Random(0)
    huge = text(rng, int(args.query_mib * (1 << 20) / 6))[: int(args.query_mib * (1 << 20))]
    passages = [text(rng, 200) for _ in range(args.pairs)]
    settings = ModelSettings(source=args.model, device=args.device, cache_size=0)
    print(f"code from {model_module.__file__}; CPU {cpu_name()}, {os.cpu_count()} cores", flush=True)

    scorer = LocalScorer("bench", settings)
    await scorer.start()
    assert scorer.model is not None
    rows = []
    try:
        for round_ in range(args.rounds):
            started = time.perf_counter()
            await asyncio.to_thread(scorer.model.encode, huge, passages)
            tokenise = time.perf_counter() - started
            started = time.perf_counter()
            await asyncio.to_thread(scorer.model.encode, "berlin", [huge] * len(passages))
            tokenise_passages = time.perf_counter() - started
            normal_query = f"how many people live in berlin {round_}"
            alone = await timed(scorer.score(normal_query + " alone", passages), args.budget)
            huge_task = asyncio.create_task(timed(scorer.score(huge + str(round_), passages), args.budget))
            await asyncio.sleep(0.05)
            beside = await timed(scorer.score(normal_query + " beside", passages), args.budget)
            huge_latency = await huge_task
            row = {
                "tokenise_s": round(tokenise, 4),
                "tokenise_long_passages_s": round(tokenise_passages, 4),
                "normal_alone_s": round(alone, 4),
                "normal_beside_huge_s": round(beside, 4),
                "huge_s": round(huge_latency, 4),
            }
            print(f"round {round_ + 1}: {row}", flush=True)
            rows.append(row)
    finally:
        await scorer.close()
    best = {key: min(row[key] for row in rows) for key in rows[0]}
    print(json.dumps({"cpu": cpu_name(), "query_mib": args.query_mib, "pairs": args.pairs, **best}))


if __name__ == "__main__":
    asyncio.run(main())
