"""The bi-encoder's rules: what ``kind: bi-encoder`` accepts and refuses, how its vector caches behave (a
document costs one encoding however many queries rank it), and the scorer contract it shares with the
cross-encoder (backpressure, fail-open errors, metrics, close, keys)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bridge.cli import main
from bridge.config import ConfigError, load_settings
from bridge.scoring.base import ModelConfigError, QueueFullError, ScoringError
from bridge.scoring.bi_encoder import BiEncoderModel
from bridge.scoring.local import LocalScorer
from bridge.scoring.registry import build_scorer
from bridge.scoring.semantic import BiEncoderScorer
from bridge.scoring.settings import ModelSettings
from bridge.scoring.st_modules import pooling_modes
from tests.tiny_models import WORDS, build_bi_encoder

QUERY = "how many people live in berlin"


def passages(seed: int, count: int) -> list[str]:
    return [
        " ".join(WORDS[(seed + i + k) % len(WORDS)] for k in range(1 + (seed * 7 + i) % 23))
        for i in range(count)
    ]


class Recorder:
    def __init__(self) -> None:
        self.lookups: list[tuple[int, int]] = []
        self.batches: list[int] = []
        self.depths: list[int] = []

    def batch_done(self, model: str, pairs: int, padded_tokens: int, seconds: float) -> None:
        self.batches.append(pairs)

    def queue_depth(self, model: str, pairs: int) -> None:
        self.depths.append(pairs)

    def cache_lookup(self, model: str, hits: int, misses: int) -> None:
        self.lookups.append((hits, misses))


@pytest.fixture(scope="module")
def tiny_bi(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_bi_encoder(tmp_path_factory.mktemp("tiny-bi"), seed=11)


@pytest.fixture
async def scorers() -> AsyncIterator[list[BiEncoderScorer]]:
    made: list[BiEncoderScorer] = []
    yield made
    for scorer in made:
        await scorer.close()


async def started(
    made: list[BiEncoderScorer], source: Path, observer: Any = None, **options: Any
) -> BiEncoderScorer:
    options.setdefault("dtype", "float32")
    scorer = BiEncoderScorer("bi", ModelSettings(kind="bi-encoder", source=str(source), **options), observer)
    made.append(scorer)
    await scorer.start()
    return scorer


def write_config(tmp_path: Path, model: dict[str, Any]) -> Path:
    path = tmp_path / "bridge.yaml"
    path.write_text(json.dumps({"models": {"m": model}}))
    return path


# -- configuration ---------------------------------------------------------------------------------------


def test_kind_defaults_to_cross_encoder() -> None:
    assert ModelSettings(source="x").kind == "cross-encoder"


@pytest.mark.parametrize(
    ("option", "says"),
    [
        ({"activation": "sigmoid"}, "activation"),
        ({"label": "entailment"}, "label"),
        ({"long_documents": "chunk"}, "long_documents: chunk"),
        ({"remote": {"url": "http://127.0.0.1:9/"}}, "remote"),
    ],
)
def test_cross_encoder_options_are_refused_for_a_bi_encoder_at_config_time(
    tmp_path: Path, option: dict[str, Any], says: str
) -> None:
    with pytest.raises(ConfigError, match=says) as error:
        load_settings(write_config(tmp_path, {"kind": "bi-encoder", "source": "x", **option}))
    assert "models.m" in str(error.value)


def test_similarity_is_refused_for_a_cross_encoder(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="similarity applies to kind: bi-encoder only"):
        load_settings(write_config(tmp_path, {"source": "x", "similarity": "cosine"}))


def test_registry_picks_the_scorer_by_kind(tiny_bi: Path) -> None:
    settings = ModelSettings(kind="bi-encoder", source=str(tiny_bi))
    assert isinstance(build_scorer("bi", settings), BiEncoderScorer)
    with pytest.raises(ValueError, match="use BiEncoderScorer"):
        LocalScorer("bi", settings)
    with pytest.raises(ValueError, match="use LocalScorer"):
        BiEncoderScorer("ce", ModelSettings(source=str(tiny_bi)))


@pytest.mark.parametrize(
    ("modules", "says"),
    [
        (
            ["Transformer", "Pooling", "LayerNorm", "Normalize"],
            "lists LayerNorm after pooling; the bridge runs Transformer, Pooling, Dense modules and a final "
            "Normalize only",
        ),
        (["Transformer", "Pooling", "Normalize", "Dense"], "lists Normalize after pooling"),
        (["Transformer"], "no Pooling module"),
        (["Pooling"], "starts with 'Pooling'"),
    ],
)
def test_unsupported_pipelines_are_refused_by_config_check_and_serve_with_the_same_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], modules: list[str], says: str
) -> None:
    entries = [
        {
            "idx": i,
            "name": str(i),
            "path": "1_Pooling" if kind == "Pooling" else "",
            "type": f"sentence_transformers.models.{kind}",
        }
        for i, kind in enumerate(modules)
    ]
    source = build_bi_encoder(tmp_path / "model", modules=entries)
    capsys.readouterr()  # the model builder's progress bars
    status = main(
        [
            "config",
            "check",
            "--config",
            str(write_config(tmp_path, {"kind": "bi-encoder", "source": str(source)})),
        ]
    )
    err = capsys.readouterr().err
    assert status == 2 and says in err and "models.m.source" in err and len(err.strip().splitlines()) == 1
    with pytest.raises(ModelConfigError, match=says):
        BiEncoderModel("m", ModelSettings(kind="bi-encoder", source=str(source)))


def test_config_check_accepts_the_shared_bi_encoder_layout(tiny_bi: Path, tmp_path: Path, capsys) -> None:
    status = main(
        [
            "config",
            "check",
            "--config",
            str(write_config(tmp_path, {"kind": "bi-encoder", "source": str(tiny_bi)})),
        ]
    )
    assert status == 0, capsys.readouterr().err


def test_pooling_modes_new_and_legacy_forms_and_refusals() -> None:
    assert pooling_modes({"pooling_mode": "cls"}) == ("cls",)
    assert pooling_modes({"pooling_mode": ["mean", "max"]}) == ("mean", "max")
    assert pooling_modes({"pooling_mode_max_tokens": True, "pooling_mode_cls_token": True}) == ("cls", "max")
    assert pooling_modes({"pooling_mode_mean_tokens": False}) == ("mean",), "none set: mean, as s-t does"
    with pytest.raises(ModelConfigError, match="not one of"):
        pooling_modes({"pooling_mode": "median"})


def test_an_unsupported_declared_similarity_is_refused(tmp_path: Path) -> None:
    source = build_bi_encoder(tmp_path / "euclid", st_config={"similarity_fn_name": "euclidean"})
    with pytest.raises(ModelConfigError, match="similarity_fn_name 'euclidean' is not supported"):
        BiEncoderModel("m", ModelSettings(kind="bi-encoder", source=str(source)))


# -- similarity --------------------------------------------------------------------------------------------


async def test_similarity_is_dot_unless_the_model_or_the_config_says_cosine(tmp_path: Path, scorers) -> None:
    raw = build_bi_encoder(tmp_path / "raw", normalize=False, seed=12)
    dot = await started(scorers, raw)
    cosine = await started(scorers, raw, similarity="cosine")
    declared = build_bi_encoder(
        tmp_path / "declared", normalize=False, seed=12, st_config={"similarity_fn_name": "cosine"}
    )
    by_model = await started(scorers, declared)
    texts = passages(1, 5)
    assert dot.model is not None
    q, p = dot.model.embed("query", [QUERY])[0], dot.model.embed("document", texts)
    np.testing.assert_allclose(await dot.score(QUERY, texts), p @ q, rtol=1e-5)
    expected = (p @ q) / (np.linalg.norm(p, axis=1) * np.linalg.norm(q))
    np.testing.assert_allclose(await cosine.score(QUERY, texts), expected, rtol=1e-5)
    np.testing.assert_allclose(await by_model.score(QUERY, texts), expected, rtol=1e-5)
    assert (dot.similarity, cosine.similarity, by_model.similarity) == ("dot", "cosine", "cosine")


# -- caches ------------------------------------------------------------------------------------------------


async def test_a_document_costs_one_encoding_however_many_queries_rank_it(tiny_bi: Path, scorers) -> None:
    recorder = Recorder()
    scorer = await started(scorers, tiny_bi, recorder)
    texts, keys = passages(2, 20), [f"idx/{n}" for n in range(20)]
    before = scorer.stats.items_scored
    first = await scorer.score("first query", texts, keys)
    assert scorer.stats.items_scored - before == 21, "20 passages and the query"
    for n, query in enumerate(["second query", "third query", "fourth query"]):
        await scorer.score(query, texts[n:], keys[n:])
    assert scorer.stats.items_scored - before == 24, "later queries embed only themselves"
    assert recorder.lookups[-4:] == [(0, 21), (20, 1), (19, 1), (18, 1)]
    assert await scorer.score("first query", texts, keys) == first
    assert recorder.lookups[-1] == (21, 0), "the query vector is cached too"
    assert scorer.cached == (20, 4)


async def test_the_cache_key_is_the_document_and_its_text(tiny_bi: Path, scorers) -> None:
    scorer = await started(scorers, tiny_bi)
    await scorer.score(QUERY, ["old text"], ["idx/1"])
    before = scorer.stats.items_scored
    await scorer.score(QUERY, ["new text"], ["idx/1"])
    assert scorer.stats.items_scored - before == 1, (
        "an updated document (same key, new text) is embedded again"
    )
    await scorer.score(QUERY, ["new text"], ["idx/2"])
    assert scorer.stats.items_scored - before == 2, "another document with the same text has its own entry"
    await scorer.score(QUERY, ["new text", "new text"], None)
    assert scorer.stats.items_scored - before == 3, "without keys, one entry per distinct text"
    assert scorer.cached[0] == 4


async def test_the_passage_cache_is_bounded_in_entries(tiny_bi: Path, scorers) -> None:
    scorer = await started(scorers, tiny_bi, cache_size=8)
    for seed in range(5):
        await scorer.score(f"query {seed}", passages(seed * 10, 6), [f"i/{seed}/{n}" for n in range(6)])
    assert scorer.cached == (8, 1), "8 passage vectors, 8 // 8 query vectors"


async def test_cache_off_embeds_every_time_and_scores_the_same(tiny_bi: Path, scorers) -> None:
    cached = await started(scorers, tiny_bi)
    uncached = await started(scorers, tiny_bi, cache_size=0)
    texts = passages(3, 7)
    for _ in range(2):
        np.testing.assert_allclose(
            await uncached.score(QUERY, texts), await cached.score(QUERY, texts), rtol=1e-6
        )
    assert uncached.cached == (0, 0)
    assert uncached.stats.items_scored - 3 == 2 * 8, "warm-up (3 texts), then 7 passages and the query twice"


async def test_concurrent_requests_missing_the_same_passages_share_one_encoding(
    tiny_bi: Path, scorers
) -> None:
    scorer = await started(scorers, tiny_bi)
    texts, keys = passages(4, 30), [f"i/{n}" for n in range(30)]
    before = scorer.stats.items_scored
    results = await asyncio.gather(*(scorer.score(f"query {n}", texts, keys) for n in range(4)))
    assert scorer.stats.items_scored - before == 30 + 4
    assert all(len(scores) == 30 for scores in results)


async def test_a_request_that_gives_up_leaves_its_passages_to_finish_into_the_cache(
    tiny_bi: Path, scorers, monkeypatch: pytest.MonkeyPatch
) -> None:
    scorer = await started(scorers, tiny_bi)
    assert scorer.model is not None
    slow = scorer.model.score_batch

    def slowly(batch: Any) -> Any:
        import time

        time.sleep(0.2)
        return slow(batch)

    monkeypatch.setattr(scorer.model, "score_batch", slowly)
    texts, keys = passages(5, 10), [f"i/{n}" for n in range(10)]
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(scorer.score(QUERY, texts, keys), 0.05)
    for _ in range(100):
        if scorer.cached[0] == 10:
            break
        await asyncio.sleep(0.05)
    assert scorer.cached[0] == 10, "the timed-out request's passages were embedded and kept"
    monkeypatch.setattr(scorer.model, "score_batch", slow)
    before = scorer.stats.items_scored
    await scorer.score(QUERY, texts, keys)
    assert scorer.stats.items_scored - before == 1, "the next request embeds only its query"


# -- the scorer contract ----------------------------------------------------------------------------------


async def test_more_texts_than_the_queue_takes_is_queue_full(tiny_bi: Path, scorers) -> None:
    scorer = await started(scorers, tiny_bi, max_queue_pairs=10)
    with pytest.raises(QueueFullError):
        await scorer.score(QUERY, passages(6, 11))


async def test_a_failing_model_is_a_scoring_error_and_the_scorer_recovers(
    tiny_bi: Path, scorers, monkeypatch: pytest.MonkeyPatch
) -> None:
    scorer = await started(scorers, tiny_bi)
    assert scorer.model is not None
    works = scorer.model.score_batch

    def broken(batch: Any) -> Any:
        raise RuntimeError("CUDA error: device-side assert triggered")

    monkeypatch.setattr(scorer.model, "score_batch", broken)
    with pytest.raises(ScoringError, match="device-side assert"):
        await scorer.score(QUERY, passages(7, 3), ["a", "b", "c"])
    assert scorer.cached == (0, 0), "nothing failed is cached"
    monkeypatch.setattr(scorer.model, "score_batch", works)
    assert len(await scorer.score(QUERY, passages(7, 3), ["a", "b", "c"])) == 3


async def test_metrics_report_batches_queue_depth_and_lookups(tiny_bi: Path, scorers) -> None:
    recorder = Recorder()
    scorer = await started(scorers, tiny_bi, recorder)
    await scorer.score(QUERY, passages(8, 12))
    assert sum(recorder.batches) == 3 + 13, "warm-up texts, then the query and 12 passages"
    assert recorder.depths[-1] == 0 and max(recorder.depths) >= 12
    assert recorder.lookups == [(0, 13)]


async def test_keys_must_match_the_passages_and_empty_is_empty(tiny_bi: Path, scorers) -> None:
    scorer = await started(scorers, tiny_bi)
    with pytest.raises(ValueError, match="2 keys for 3 passages"):
        await scorer.score(QUERY, passages(9, 3), ["a", "b"])
    assert await scorer.score(QUERY, []) == []


async def test_not_started_and_closed_are_scoring_errors(tiny_bi: Path) -> None:
    scorer = BiEncoderScorer("bi", ModelSettings(kind="bi-encoder", source=str(tiny_bi), dtype="float32"))
    with pytest.raises(ScoringError, match="not started"):
        await scorer.score(QUERY, ["x"])
    await scorer.start()
    await scorer.score(QUERY, ["x"])
    await scorer.close()
    with pytest.raises(ScoringError, match="not started"):
        await scorer.score(QUERY, ["x"])
    assert scorer.cached == (0, 0)


async def test_the_cross_encoder_accepts_keys_and_ignores_them(tmp_path: Path) -> None:
    from tests.tiny_models import build_tiny_cross_encoder

    source = build_tiny_cross_encoder(tmp_path / "ce")
    scorer = LocalScorer("ce", ModelSettings(source=str(source), dtype="float32"))
    await scorer.start()
    try:
        texts = passages(10, 4)
        assert await scorer.score(QUERY, texts, ["a", "b", None, "d"]) == await scorer.score(QUERY, texts)
    finally:
        await scorer.close()


def test_a_bi_encoder_gets_a_window_of_100_on_the_cpu_too() -> None:
    from bridge.config import CPU_WINDOW, GPU_WINDOW, default_window

    assert default_window(ModelSettings(kind="bi-encoder", source="x", device="cpu")) == GPU_WINDOW == 100
    assert default_window(ModelSettings(source="x", device="cpu")) == CPU_WINDOW


async def test_int8_quantised_bi_encoder_stays_close_to_float32(tiny_bi: Path, scorers) -> None:
    exact = await started(scorers, tiny_bi)
    quantised = await started(scorers, tiny_bi, quantize="int8")
    texts = passages(11, 8)
    np.testing.assert_allclose(
        await quantised.score(QUERY, texts), await exact.score(QUERY, texts), atol=0.05
    )


def test_a_dense_activation_the_bridge_does_not_run_is_refused(tmp_path: Path) -> None:
    source = build_bi_encoder(
        tmp_path / "softplus",
        dense=[{"out_features": 8, "activation_function": "torch.nn.modules.activation.Softplus"}],
    )
    with pytest.raises(
        ModelConfigError, match=r"activation torch\.nn\.modules\.activation\.Softplus is not one of"
    ):
        BiEncoderModel("m", ModelSettings(kind="bi-encoder", source=str(source)))
