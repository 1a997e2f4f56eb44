"""Scores equal sentence-transformers' ``CrossEncoder.predict`` (fp32), the NLI label path, bf16 closeness."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bridge.scoring.base import ModelConfigError
from bridge.scoring.local import LocalScorer
from bridge.scoring.model import CrossEncoderModel
from bridge.scoring.settings import ModelSettings

from .conftest import NLI_LABELS

QUERY = "how many people live in berlin?"
PASSAGES = [
    "berlin has a population of 3 million registered inhabitants.",
    "berlin is well known for its museums.",
    "a man is eating pizza",
    "",
    "aircraft wing flow pressure " * 60,  # longer than the tiny model's 128 positions: truncated identically
    "the weather is lovely today",
    "paris",
]

REAL_PASSAGES = [
    "Berlin had a population of 3,520,031 registered inhabitants in an area of 891.82 square kilometers.",
    "Berlin is well known for its museums.",
    "Paris is the capital of France.",
    "The boundary layer of a wing in a slipstream was measured at several pressures.",
    "Many people live in cities. " * 150,  # over 512 tokens: truncation must match
    "How many people live in Berlin?",
    "",
]


async def started(settings: ModelSettings, name: str = "m") -> LocalScorer:
    scorer = LocalScorer(name, settings)
    await scorer.start()
    return scorer


@pytest.fixture
async def scorers() -> AsyncIterator[list[LocalScorer]]:
    made: list[LocalScorer] = []
    yield made
    for scorer in made:
        await scorer.close()


def reference(
    loader: Callable[[Path], Any], path: Path, query: str, passages: list[str], **kw: Any
) -> np.ndarray:
    encoder = loader(path)
    return np.asarray(
        encoder.predict([(query, p) for p in passages], batch_size=4, show_progress_bar=False, **kw)
    )


async def test_tiny_model_matches_sentence_transformers(tiny_ce, st_cross_encoder, scorers):
    scorer = await started(ModelSettings(source=str(tiny_ce), dtype="float32", max_batch_tokens=256))
    scorers.append(scorer)
    ours = np.asarray(await scorer.score(QUERY, PASSAGES))
    expected = reference(st_cross_encoder, tiny_ce, QUERY, PASSAGES)
    assert expected.shape == (len(PASSAGES),)
    assert np.all((ours > 0) & (ours < 1)), "1-label model without a named activation: sigmoid, like s-t"
    np.testing.assert_allclose(ours, expected, atol=1e-4, rtol=0)


async def test_identity_named_in_config_gives_raw_logits_like_sentence_transformers(
    tiny_ce_identity, st_cross_encoder, scorers
):
    scorer = await started(ModelSettings(source=str(tiny_ce_identity), dtype="float32"))
    scorers.append(scorer)
    ours = np.asarray(await scorer.score(QUERY, PASSAGES))
    np.testing.assert_allclose(
        ours, reference(st_cross_encoder, tiny_ce_identity, QUERY, PASSAGES), atol=1e-4
    )
    assert scorer.model is not None and "Identity" in scorer.model.output.description


async def test_forced_activations_on_one_label_model(tiny_ce, tiny_ce_identity, scorers):
    raw = await started(ModelSettings(source=str(tiny_ce), dtype="float32", activation="identity"))
    sig = await started(ModelSettings(source=str(tiny_ce_identity), dtype="float32", activation="sigmoid"))
    auto = await started(ModelSettings(source=str(tiny_ce), dtype="float32"))
    scorers.extend([raw, sig, auto])
    logits = np.asarray(await raw.score(QUERY, PASSAGES))
    np.testing.assert_allclose(
        np.asarray(await auto.score(QUERY, PASSAGES)), 1 / (1 + np.exp(-logits)), atol=1e-5
    )
    forced = np.asarray(await sig.score(QUERY, PASSAGES))
    assert np.all((forced > 0) & (forced < 1))
    with pytest.raises(ModelConfigError, match="softmax"):
        CrossEncoderModel("m", ModelSettings(source=str(tiny_ce), activation="softmax"))


async def test_nli_label_probability_and_argmax_labels(tiny_nli, st_cross_encoder, scorers):
    pairs = [
        ("a man is eating pizza", "a man eats something"),
        ("a black race car starts up in front of a crowd of people", "a man is driving down a lonely road"),
    ]
    encoder = st_cross_encoder(tiny_nli)
    st_probs = np.asarray(encoder.predict(pairs, apply_softmax=True, show_progress_bar=False))
    st_labels = [encoder.model.config.id2label[int(i)] for i in st_probs.argmax(axis=1)]
    assert st_labels == ["entailment", "contradiction"], "the seed's example labels, via s-t"

    model = CrossEncoderModel("nli", ModelSettings(source=str(tiny_nli), dtype="float32", label="entailment"))
    assert model.labels == NLI_LABELS
    probs = model.probabilities(pairs).numpy()
    np.testing.assert_allclose(probs, st_probs, atol=1e-4)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert [model.labels[i] for i in probs.argmax(axis=1)] == ["entailment", "contradiction"]

    for label in NLI_LABELS:
        scorer = await started(ModelSettings(source=str(tiny_nli), dtype="float32", label=label), name=label)
        scorers.append(scorer)
        for (query, passage), row in zip(pairs, st_probs, strict=True):
            (score,) = await scorer.score(query, [passage])
            assert score == pytest.approx(row[NLI_LABELS.index(label)], abs=1e-4)


def test_nli_label_errors_name_the_labels(tiny_nli):
    with pytest.raises(ModelConfigError, match="contradiction, entailment, neutral"):
        CrossEncoderModel("nli", ModelSettings(source=str(tiny_nli), label="entails"))
    with pytest.raises(ModelConfigError, match=r"set `label`.*|contradiction, entailment, neutral"):
        CrossEncoderModel("nli", ModelSettings(source=str(tiny_nli)))
    model = CrossEncoderModel("nli", ModelSettings(source=str(tiny_nli), label="Entailment"))
    assert model.output.label_index == 1


async def test_real_model_matches_sentence_transformers_fp32(real_model, st_cross_encoder, scorers):
    scorer = await started(ModelSettings(source=str(real_model), dtype="float32"))
    scorers.append(scorer)
    query = "How many people live in Berlin?"
    ours = np.asarray(await scorer.score(query, REAL_PASSAGES))
    expected = reference(st_cross_encoder, real_model, query, REAL_PASSAGES)
    np.testing.assert_allclose(ours, expected, atol=1e-4, rtol=0)
    assert ours[0] > 0.8 > 0.1 > ours[1], "the seed's example: population sentence high, museums low"


async def test_real_model_auto_dtype_is_close_to_fp32(real_model, scorers):
    fp32 = await started(ModelSettings(source=str(real_model), dtype="float32"), name="fp32")
    auto = await started(ModelSettings(source=str(real_model)), name="auto")
    scorers.extend([fp32, auto])
    query = "How many people live in Berlin?"
    a = np.asarray(await fp32.score(query, REAL_PASSAGES))
    b = np.asarray(await auto.score(query, REAL_PASSAGES))
    assert np.max(np.abs(a - b)) < 0.02
