"""The backend seam: the batcher and its token types import no torch, and the scorer runs whatever engine its
factory builds (it never constructs a backend itself)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

from bridge.scoring.backends import engine_factory, load_openvino, load_torch
from bridge.scoring.encoder import Encoded, ShouldStop, padded_tokens
from bridge.scoring.local import LocalScorer
from bridge.scoring.precision import PrecisionReport
from bridge.scoring.settings import ModelSettings

REPO = Path(__file__).resolve().parents[2]


def test_batcher_tokens_and_backend_seam_import_without_torch() -> None:
    code = (
        "import sys\n"
        "import bridge.scoring.batcher, bridge.scoring.encoder, bridge.scoring.collate, bridge.scoring.backends\n"
        "heavy = sorted(m for m in ('torch', 'transformers', 'openvino') if m in sys.modules)\n"
        "print(','.join(heavy))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120, check=True
    )
    assert done.stdout.strip() == "", f"imported {done.stdout.strip()}"


def test_padded_tokens_is_rows_times_the_longest() -> None:
    batch = [Encoded(0, [1, 2, 3], None), Encoded(1, [1] * 7, None), Encoded(2, [4], None)]
    assert padded_tokens(batch) == 21
    assert padded_tokens([]) == 0


def test_the_factory_follows_the_backend_setting() -> None:
    assert engine_factory(ModelSettings(source="x")) is load_torch
    assert engine_factory(ModelSettings(source="x", backend="openvino")) is load_openvino


class WordOverlap:
    """A torch-free engine: score = how many query words the passage holds. Enough to prove the seam."""

    backend = "overlap"

    def __init__(self, name: str, settings: ModelSettings) -> None:
        self.name, self.settings = name, settings
        self.max_batch_tokens = 64
        self.workers, self.threads = 2, 1
        self.precision = PrecisionReport("float32", "float32", checked=False)
        self.vocab: dict[str, int] = {}
        self.prepared = 0
        self.closed = False

    def describe(self) -> str:
        return "word overlap"

    def _ids(self, text: str) -> list[int]:
        return [self.vocab.setdefault(word, len(self.vocab) + 1) for word in text.lower().split()]

    def encode(
        self, query: str, passages: Sequence[str], should_stop: ShouldStop | None = None
    ) -> list[Encoded]:
        head = self._ids(query)
        return [Encoded(i, [*head, 0, *self._ids(p)], None) for i, p in enumerate(passages)]

    def score_batch(self, batch: Sequence[Encoded]) -> list[float]:
        scores = []
        for item in batch:
            cut = item.input_ids.index(0)
            scores.append(float(len(set(item.input_ids[:cut]) & set(item.input_ids[cut + 1 :]))))
        return scores

    def prepare_worker(self) -> None:
        self.prepared += 1

    def predict(self, query: str, passages: Sequence[str]) -> list[float]:
        return self.score_batch(self.encode(query, passages))

    def close(self) -> None:
        self.closed = True


async def test_local_scorer_runs_the_engine_its_factory_builds() -> None:
    built: list[WordOverlap] = []

    def factory(name: str, settings: ModelSettings) -> WordOverlap:
        built.append(WordOverlap(name, settings))
        return built[-1]

    # A source that does not exist: only the factory's engine can make this scorer work.
    scorer = LocalScorer(
        "seam", ModelSettings(source="/nonexistent/model", cache_size=0), engine_factory=factory
    )
    await scorer.start()
    try:
        scores = await scorer.score("berlin population", ["berlin has a large population", "pizza", "berlin"])
        assert scores == [2.0, 0.0, 1.0]
        assert scorer.precision is not None and scorer.precision.precision == "float32"
        assert len(built) == 1 and built[0].prepared == 2  # one prepare per worker
        engine = built[0]
    finally:
        await scorer.close()
    assert engine.closed


async def test_an_engine_that_fails_to_load_fails_the_start() -> None:
    def factory(name: str, settings: ModelSettings) -> WordOverlap:
        raise RuntimeError("no such engine")

    scorer = LocalScorer("seam", ModelSettings(source="x"), engine_factory=factory)
    with pytest.raises(RuntimeError, match="no such engine"):
        await scorer.start()
