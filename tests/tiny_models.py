"""Tiny random-weight cross-encoders for plumbing tests (nothing can be downloaded here)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

WORDS = (
    "the of and a to in is was for on that with as by at from it an be this are or which who what where when "
    "how many people live population museums city million known well berlin paris registered inhabitants area "
    "square kilometers man eating pizza eats something black race car starts up front crowd driving down lonely "
    "road aircraft wing flow pressure heat boundary layer shock wave physics electron theory model search engine "
    "query passage document relevant weather lovely today sunny outside"
).split()

def build_cross_encoder(
    directory: Path,
    *,
    labels: tuple[str, ...] = ("relevance",),
    config_extra: Mapping[str, Any] | None = None,
    st_config: Mapping[str, Any] | None = None,
    max_positions: int = 128,
    seed: int = 0,
) -> Path:
    """Save a random-weight BERT sequence classifier plus a small WordPiece tokenizer into ``directory``."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    directory.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *sorted(set(WORDS))]
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    vocab += [c for c in letters if c not in vocab] + [f"##{c}" for c in letters]
    vocab += [str(d) for d in range(10)] + [f"##{d}" for d in range(10)] + [".", ",", "?", "!", "-", "'"]
    # transformers 5 takes the vocabulary as ``vocab`` (a ``vocab_file`` keyword is silently ignored).
    tokenizer = BertTokenizerFast(vocab={token: i for i, token in enumerate(vocab)}, do_lower_case=True)
    tokenizer.model_max_length = max_positions
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=max_positions,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
        **dict(config_extra or {}),
    )
    torch.manual_seed(seed)
    model = BertForSequenceClassification(config)
    model.eval()
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    if st_config is not None:
        (directory / "config_sentence_transformers.json").write_text(json.dumps(st_config), encoding="utf-8")
    return directory


def build_tiny_cross_encoder(directory: Path, num_labels: int = 1, seed: int = 0) -> Path:
    """A 1-label (or NLI-labelled 3-label) tiny model: real plumbing, meaningless scores."""
    labels = ("contradiction", "entailment", "neutral") if num_labels == 3 else ("relevance",)
    return build_cross_encoder(directory, labels=labels, seed=seed)
