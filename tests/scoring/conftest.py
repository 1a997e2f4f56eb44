"""Fixtures for the scoring engine: tiny random cross-encoders built on the fly, the shared trained model, the
remote scorers a test starts."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.scoring.remote_servers import Scorers
from tests.tiny_models import build_cross_encoder

REPO = Path(__file__).resolve().parents[2]
SHARED_MODEL = REPO.parent / "shared" / "models" / "minilm-l6-ce-v1"

NLI_LABELS = ("contradiction", "entailment", "neutral")


@pytest.fixture(scope="session")
def tiny_ce(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """1 label, no activation named: sentence-transformers applies a sigmoid."""
    return build_cross_encoder(tmp_path_factory.mktemp("tiny-ce"))


@pytest.fixture(scope="session")
def tiny_ce_identity(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """1 label naming the identity, like the ms-marco cross-encoders: raw logits."""
    return build_cross_encoder(
        tmp_path_factory.mktemp("tiny-ce-identity"),
        config_extra={"sentence_transformers": {"activation_fn": "torch.nn.modules.linear.Identity"}},
        seed=1,
    )


@pytest.fixture(scope="session")
def tiny_nli(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 labels (contradiction, entailment, neutral), trained for a moment to separate two example pairs."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    directory = build_cross_encoder(tmp_path_factory.mktemp("tiny-nli"), labels=NLI_LABELS, seed=2)
    tokenizer = AutoTokenizer.from_pretrained(directory)
    model = AutoModelForSequenceClassification.from_pretrained(directory)
    examples = [
        ("a man is eating pizza", "a man eats something", "entailment"),
        (
            "a black race car starts up in front of a crowd of people",
            "a man is driving down a lonely road",
            "contradiction",
        ),
        ("the weather is lovely today", "it is sunny outside", "neutral"),
    ]
    batch = tokenizer(
        [a for a, _, _ in examples], [b for _, b, _ in examples], padding=True, return_tensors="pt"
    )
    targets = torch.tensor([NLI_LABELS.index(label) for _, _, label in examples])
    torch.manual_seed(0)
    model.train()
    optimiser = torch.optim.AdamW(model.parameters(), lr=1e-2)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny ops: one thread is many times faster than a team on a busy machine
    try:
        for _ in range(25):
            optimiser.zero_grad()
            loss = model(**batch, labels=targets).loss
            loss.backward()
            optimiser.step()
    finally:
        torch.set_num_threads(threads)
    model.eval()
    model.save_pretrained(directory)
    return directory


KEYWORDS = ("population", "inhabitants")


@pytest.fixture(scope="session")
def keyword_ce(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A hand-wired 1-label BERT that scores a pair high exactly when the passage holds a keyword.

    No real model here can find one sentence inside a long window (see the chunking tests), so this one is
    built to: keyword embeddings carry a feature, [CLS] attends uniformly, layer norms make the feature's
    presence (not its share of the window) decide, and the classifier reads it: sigmoid(-3) = 0.047 without a
    keyword, sigmoid(+3) = 0.953 with one, wherever it sits in the window.
    """
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    directory = build_cross_encoder(tmp_path_factory.mktemp("keyword-ce"), seed=3)
    tokenizer = AutoTokenizer.from_pretrained(directory)
    model = AutoModelForSequenceClassification.from_pretrained(directory)
    bert = model.bert
    hidden = model.config.hidden_size
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.zero_()
        for keyword in KEYWORDS:
            bert.embeddings.word_embeddings.weight[tokenizer.convert_tokens_to_ids(keyword), 0] = 1.0
        norms = [bert.embeddings.LayerNorm]
        for layer in bert.encoder.layer:
            norms += [layer.attention.output.LayerNorm, layer.output.LayerNorm]
            layer.attention.self.value.weight.copy_(torch.eye(hidden))
            layer.attention.output.dense.weight.copy_(torch.eye(hidden))
        for norm in norms:
            norm.weight.fill_(1.0)
        bert.pooler.dense.weight.copy_(torch.eye(hidden))
        model.classifier.weight[0, 0] = 6.0
        model.classifier.bias[0] = -3.0
    model.save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def real_model() -> Path:
    if not (SHARED_MODEL / "config.json").is_file():
        pytest.skip(f"the trained test model {SHARED_MODEL} is not present (../shared/models)")
    return SHARED_MODEL


@pytest.fixture(scope="session")
def st_cross_encoder() -> Any:
    """``CrossEncoder`` loader, float32 on the CPU: the reference the scorer must match."""
    import torch
    from sentence_transformers import CrossEncoder

    def load(path: Path) -> Any:
        return CrossEncoder(str(path), device="cpu", model_kwargs={"dtype": torch.float32})

    return load


@pytest.fixture
async def scorers() -> AsyncIterator[Scorers]:
    """Remote scorers started through it are closed after the test (before the servers they talk to)."""
    started = Scorers()
    yield started
    await started.close()
