"""A bi-encoder's scores equal sentence-transformers' ``encode_query``/``encode_document`` + similarity (fp32,
1e-5): the shared all-MiniLM-L6-v2, and tiny random models for every pooling mode, normalised or not,
``do_lower_case``, prompts (pooled or excluded), Dense layers, left padding and a directory without
``modules.json``."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bridge.scoring.bi_encoder import BiEncoderModel
from bridge.scoring.semantic import BiEncoderScorer
from bridge.scoring.settings import ModelSettings
from tests.tiny_models import build_bi_encoder

REAL_BI_ENCODER = Path(__file__).resolve().parents[2].parent / "shared" / "models" / "all-minilm-l6-v2"

QUERY = "How many people live in Berlin?"
PASSAGES = [
    "Berlin had a population of 3,520,031 registered inhabitants in an area of 891.82 square kilometers.",
    "Berlin is well known for its museums.",
    "Paris is the capital of France.",
    "The boundary layer of a wing in a slipstream was measured at several pressures.",
    "Many people live in cities. " * 150,  # beyond max_seq_length: truncated identically
    "How many people live in Berlin?",
    "",
]
TINY_PASSAGES = [
    "Berlin has a population of 3 million registered inhabitants.",
    "berlin is well known for its museums",
    "a man is eating pizza",
    "",
    "aircraft wing flow pressure " * 40,  # beyond the tiny models' max_seq_length of 64
    "Paris",
]


def st_scores(path: Path, query: str, passages: list[str], similarity: str = "cosine") -> np.ndarray:
    """The reference: sentence-transformers' own query and document encodings, float32 on the CPU."""
    import torch
    from sentence_transformers import SentenceTransformer, util

    model = SentenceTransformer(str(path), device="cpu", model_kwargs={"dtype": torch.float32})
    q = model.encode_query([query], convert_to_tensor=True, batch_size=4)
    p = model.encode_document(passages, convert_to_tensor=True, batch_size=4)
    scores = util.cos_sim(q, p) if similarity == "cosine" else util.dot_score(q, p)
    return np.asarray(scores[0].cpu())


def st_vectors(path: Path, role: str, texts: list[str]) -> np.ndarray:
    import torch
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(path), device="cpu", model_kwargs={"dtype": torch.float32})
    encode = model.encode_query if role == "query" else model.encode_document
    return np.asarray(encode(texts, batch_size=4))


@pytest.fixture
async def scorers() -> AsyncIterator[list[BiEncoderScorer]]:
    made: list[BiEncoderScorer] = []
    yield made
    for scorer in made:
        await scorer.close()


async def started(made: list[BiEncoderScorer], source: Path, **options: Any) -> BiEncoderScorer:
    options.setdefault("dtype", "float32")
    scorer = BiEncoderScorer("m", ModelSettings(kind="bi-encoder", source=str(source), **options))
    made.append(scorer)
    await scorer.start()
    return scorer


@pytest.fixture(scope="session")
def real_bi_encoder() -> Path:
    if not (REAL_BI_ENCODER / "modules.json").is_file():
        pytest.skip(f"the shared bi-encoder {REAL_BI_ENCODER} is not present (../shared/models)")
    return REAL_BI_ENCODER


async def test_all_minilm_scores_equal_sentence_transformers_cosine(real_bi_encoder, scorers):
    scorer = await started(scorers, real_bi_encoder, max_batch_tokens=600)  # several batches
    ours = np.asarray(await scorer.score(QUERY, PASSAGES, [f"i/{n}" for n in range(len(PASSAGES))]))
    expected = st_scores(real_bi_encoder, QUERY, PASSAGES)
    np.testing.assert_allclose(ours, expected, atol=1e-5, rtol=0)
    assert ours[0] > ours[2] and ours[5] > 0.99, "a trained model: the answer beats an unrelated passage"
    # Normalised vectors: the dot product the scorer uses is the cosine.
    assert scorer.similarity == "dot" and scorer.model is not None and scorer.model.pipeline.normalize
    cached = np.asarray(await scorer.score(QUERY, PASSAGES, [f"i/{n}" for n in range(len(PASSAGES))]))
    np.testing.assert_array_equal(cached, ours)


async def test_all_minilm_in_bfloat16_stays_close(real_bi_encoder, scorers):
    scorer = await started(scorers, real_bi_encoder, dtype="bfloat16")
    ours = np.asarray(await scorer.score(QUERY, PASSAGES))
    np.testing.assert_allclose(ours, st_scores(real_bi_encoder, QUERY, PASSAGES), atol=0.01, rtol=0)


POOLINGS = [
    "cls",
    "max",
    "mean",
    "mean_sqrt_len_tokens",
    "weightedmean",
    "lasttoken",
    ("cls", "mean", "max"),
]


@pytest.mark.parametrize("normalize", [True, False], ids=["normalised", "raw"])
@pytest.mark.parametrize("pooling", POOLINGS, ids=lambda p: p if isinstance(p, str) else "+".join(p))
async def test_every_pooling_mode_equals_sentence_transformers(tmp_path, scorers, pooling, normalize):
    source = build_bi_encoder(tmp_path / "tiny", pooling=pooling, normalize=normalize, seed=4)
    scorer = await started(scorers, source, similarity="cosine" if normalize else "dot")
    ours = np.asarray(await scorer.score(QUERY, TINY_PASSAGES))
    np.testing.assert_allclose(
        ours, st_scores(source, QUERY, TINY_PASSAGES, "cosine" if normalize else "dot"), atol=1e-5, rtol=1e-6
    )
    assert scorer.model is not None
    np.testing.assert_allclose(
        scorer.model.embed("document", TINY_PASSAGES),
        st_vectors(source, "document", TINY_PASSAGES),
        atol=1e-5,
    )


async def test_legacy_pooling_booleans_are_read_in_sentence_transformers_order(tmp_path, scorers):
    legacy = {
        "pooling_mode_mean_tokens": True,
        "pooling_mode_cls_token": True,
        "pooling_mode_max_tokens": False,
    }
    source = build_bi_encoder(tmp_path / "legacy", pooling=legacy, seed=5)
    scorer = await started(scorers, source)
    assert scorer.model is not None and scorer.model.pipeline.pooling == ("cls", "mean")
    np.testing.assert_allclose(
        np.asarray(await scorer.score(QUERY, TINY_PASSAGES)),
        st_scores(source, QUERY, TINY_PASSAGES),
        atol=1e-5,
    )


async def test_do_lower_case_lowercases_like_sentence_transformers(tmp_path, scorers):
    cased = build_bi_encoder(tmp_path / "cased", do_lower_case=False, seed=6)
    lowered = build_bi_encoder(tmp_path / "lowered", do_lower_case=True, seed=6)
    upper = [text.upper() for text in TINY_PASSAGES]
    low = await started(scorers, lowered)
    ours = np.asarray(await low.score(QUERY.upper(), upper))
    np.testing.assert_allclose(ours, st_scores(lowered, QUERY.upper(), upper), atol=1e-5)
    np.testing.assert_allclose(
        ours, np.asarray(await low.score(QUERY.lower(), [t.lower() for t in upper])), atol=1e-6
    )
    keep = await started(scorers, cased)
    assert not np.allclose(np.asarray(await keep.score(QUERY.upper(), upper)), ours, atol=1e-3)


@pytest.mark.parametrize("include_prompt", [True, False])
async def test_query_and_document_prompts_are_applied_as_encode_query_and_encode_document_do(
    tmp_path, scorers, include_prompt
):
    st_config = {"prompts": {"query": "query: ", "document": "passage: "}, "default_prompt_name": None}
    source = build_bi_encoder(tmp_path / "prompts", st_config=st_config, seed=7)
    pooling = json.loads((source / "1_Pooling" / "config.json").read_text())
    pooling["include_prompt"] = include_prompt
    (source / "1_Pooling" / "config.json").write_text(json.dumps(pooling))
    scorer = await started(scorers, source)
    assert scorer.model is not None and scorer.model.prompts == {"query": "query: ", "document": "passage: "}
    ours = np.asarray(await scorer.score(QUERY, TINY_PASSAGES))
    np.testing.assert_allclose(ours, st_scores(source, QUERY, TINY_PASSAGES), atol=1e-5)


@pytest.mark.parametrize("pooling", ["lasttoken", "cls", "weightedmean"])
def test_left_padding_tokenizers_pool_from_the_first_and_last_real_token(tmp_path, pooling):
    """With left padding a text's vector depends on the width of its batch (absolute positions shift), in
    sentence-transformers too; so both sides embed the texts as one batch here."""
    source = build_bi_encoder(tmp_path / "left", pooling=pooling, seed=8)
    config_path = source / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config["padding_side"] = "left"
    config_path.write_text(json.dumps(config))
    model = BiEncoderModel(
        "m",
        ModelSettings(
            kind="bi-encoder", source=str(source), dtype="float32", warmup=False, max_batch_tokens=4096
        ),
    )
    assert model.padding.left
    import torch
    from sentence_transformers import SentenceTransformer

    reference = SentenceTransformer(str(source), device="cpu", model_kwargs={"dtype": torch.float32})
    expected = reference.encode_document(TINY_PASSAGES, batch_size=len(TINY_PASSAGES))
    np.testing.assert_allclose(model.embed("document", TINY_PASSAGES), expected, atol=1e-5)


async def test_a_directory_without_modules_json_is_mean_pooled_as_sentence_transformers_does(
    tmp_path, scorers
):
    source = build_bi_encoder(tmp_path / "plain", seed=9)
    for name in ("modules.json", "sentence_bert_config.json"):
        (source / name).unlink()
    scorer = await started(scorers, source)
    assert scorer.model is not None and scorer.model.pipeline.pooling == ("mean",)
    assert not scorer.model.pipeline.normalize
    np.testing.assert_allclose(
        np.asarray(await scorer.score(QUERY, TINY_PASSAGES)),
        st_scores(source, QUERY, TINY_PASSAGES, "dot"),
        atol=1e-5,
        rtol=1e-6,
    )


def test_long_texts_cost_what_max_seq_length_needs_and_truncate_identically(tmp_path):
    source = build_bi_encoder(tmp_path / "long", seed=10)
    model = BiEncoderModel(
        "m", ModelSettings(kind="bi-encoder", source=str(source), dtype="float32", warmup=False)
    )
    huge = "aircraft wing flow pressure " * 40_000  # ~1.1 MB
    (item,) = model.encode("document", [huge])
    assert len(item) == 64
    np.testing.assert_allclose(
        model.embed("document", [huge]), st_vectors(source, "document", [huge[:5000]]), atol=1e-5
    )


DENSES = {
    "tanh by default": [{"out_features": 16}],
    "identity, no bias": [
        {"out_features": 24, "bias": False, "activation_function": "torch.nn.modules.linear.Identity"}
    ],
    "two layers": [
        {"out_features": 16, "activation_function": "torch.nn.modules.activation.GELU"},
        {"out_features": 8, "activation_function": "torch.nn.modules.activation.ReLU"},
    ],
    "residual, same size": [{"out_features": 32, "use_residual": True}],
    "residual, projected": [{"out_features": 12, "use_residual": True}],
    "untrusted activation: tanh": [{"out_features": 16, "activation_function": "my_package.Swish"}],
}


@pytest.mark.parametrize("normalize", [True, False], ids=["normalised", "raw"])
@pytest.mark.parametrize("dense", list(DENSES.values()), ids=list(DENSES))
async def test_dense_modules_equal_sentence_transformers(tmp_path, scorers, dense, normalize):
    source = build_bi_encoder(tmp_path / "dense", dense=dense, normalize=normalize, seed=13)
    scorer = await started(scorers, source, similarity="cosine")
    assert scorer.model is not None and len(scorer.model.dense) == len(dense)
    np.testing.assert_allclose(
        scorer.model.embed("document", TINY_PASSAGES),
        st_vectors(source, "document", TINY_PASSAGES),
        atol=1e-5,
    )
    np.testing.assert_allclose(
        np.asarray(await scorer.score(QUERY, TINY_PASSAGES)),
        st_scores(source, QUERY, TINY_PASSAGES),
        atol=1e-5,
    )


async def test_a_left_truncating_tokenizer_takes_the_whole_text_path_and_keeps_the_end(tmp_path, scorers):
    source = build_bi_encoder(tmp_path / "left-cut", seed=14)
    config_path = source / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config["truncation_side"] = "left"
    config_path.write_text(json.dumps(config))
    scorer = await started(scorers, source)
    assert scorer.model is not None and scorer.model.template is None, (
        "prefix cutting would keep the wrong end"
    )
    texts = [*TINY_PASSAGES, "berlin museums " * 10 + "aircraft wing flow pressure " * 40]
    np.testing.assert_allclose(
        np.asarray(await scorer.score(QUERY, texts)), st_scores(source, QUERY, texts), atol=1e-5
    )
