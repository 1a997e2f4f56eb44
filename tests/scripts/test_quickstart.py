"""The quickstart reranks a window (the bridge's default for the device it runs on) scored within the rule's budget.

Measured, not assumed: the window the quickstart would configure here (``--dry-run``) is scored by the bridge's
own scorer, with the model settings the quickstart leaves at their defaults, on ~200-word abstracts from a shared
test collection, two searches at once, and both must finish within the rule's ``timeout_ms``; past it every
search answers ``X-Rerank: skipped; reason=timeout`` after waiting the whole budget.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from bridge.config import Settings
from bridge.scoring.local import LocalScorer
from bridge.scoring.settings import ModelSettings

REPO = Path(__file__).resolve().parents[2]
QUICKSTART = REPO / "scripts" / "quickstart.sh"
CONCURRENT = 2  # a person trying it out, plus one more search in flight


def dry_run(model: Path) -> dict[str, object]:
    done = subprocess.run(
        [str(QUICKSTART), "--dry-run", "--model", str(model), "--index", "docs*", "--fields", "title,text"],
        capture_output=True, text=True, timeout=300, cwd=REPO, env={**os.environ},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return dict(yaml.safe_load(done.stdout))


def abstracts(shared_dir: Path, count: int) -> list[str]:
    """Title and text of ~200-word documents (180-260 words), as a rule with fields title,text passes them."""
    found = []
    with open(shared_dir / "collections" / "nfcorpus" / "corpus.jsonl", encoding="utf-8") as corpus:
        for line in corpus:
            doc = json.loads(line)
            passage = f"{doc.get('title', '')}\n{doc['text']}"
            if 180 <= len(passage.split()) <= 260:
                found.append(passage)
            if len(found) == count:
                return found
    pytest.skip(f"nfcorpus has fewer than {count} abstracts of ~200 words")


def test_dry_run_prints_a_valid_config_and_starts_nothing(shared_model: Path) -> None:
    config = dry_run(shared_model)
    [rule] = config["rules"]  # type: ignore[misc]
    assert rule["indices"] == ["docs*"] and rule["fields"] == ["title", "text"]
    assert config["log_format"] == "text"
    assert config["admin"] == {"compare": True}  # the compare page is on in the quickstart, off by default
    assert Settings(**config).admin.compare


@pytest.mark.slow
def test_quickstart_window_is_reranked_within_budget_on_this_device(
    shared_model: Path, shared_dir: Path
) -> None:
    config = dry_run(shared_model)
    [rule] = Settings(**config).rules  # the window the bridge resolves for this device
    [model_config] = config["models"].values()  # type: ignore[attr-defined]
    passages = abstracts(shared_dir, rule.window * CONCURRENT)  # a new query each round: no pair twice
    queries = ["dietary fiber and colon cancer risk", "statin side effects in older adults", "vitamin d and bone"]

    async def measure() -> list[float]:
        scorer = LocalScorer("default", ModelSettings(**model_config, cache_size=0))
        await scorer.start()
        try:

            async def one(query: str, start: int) -> float:
                began = time.perf_counter()
                await scorer.score(query, passages[start : start + rule.window])
                return (time.perf_counter() - began) * 1000

            latencies: list[float] = []
            for query in queries:
                starts = [i * rule.window for i in range(CONCURRENT)]
                latencies += await asyncio.gather(*(one(query, start) for start in starts))
            return latencies
        finally:
            await scorer.close()

    latencies = asyncio.run(measure())
    assert max(latencies) < rule.timeout_ms, (
        f"window {rule.window}: {CONCURRENT} searches at once took up to {max(latencies):.0f} ms, "
        f"over the {rule.timeout_ms} ms budget"
    )
