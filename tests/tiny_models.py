"""Tiny random-weight cross-encoders for plumbing tests (nothing can be downloaded here)."""

from __future__ import annotations

from pathlib import Path

_WORDS = (
    "the of and a to in is was for on that with as by at from it an be this are or which "
    "berlin people live population museums how many city million aircraft wing flow pressure "
    "heat boundary layer shock wave physics electron theory model search engine query passage"
).split()


def build_tiny_cross_encoder(directory: Path, num_labels: int = 1, seed: int = 0) -> Path:
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *sorted(set(_WORDS))]
    vocab += [chr(c) for c in range(ord("a"), ord("z") + 1) if chr(c) not in vocab]
    vocab += [f"##{chr(c)}" for c in range(ord("a"), ord("z") + 1)]
    vocab += [str(d) for d in range(10)] + [".", ",", "?", "!", "-", "'"]
    (directory / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    tokenizer = BertTokenizerFast(vocab_file=str(directory / "vocab.txt"), do_lower_case=True)
    tokenizer.model_max_length = 128
    labels = {1: ["relevance"], 3: ["contradiction", "entailment", "neutral"]}.get(
        num_labels, [f"LABEL_{i}" for i in range(num_labels)]
    )
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
        num_labels=num_labels,
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
    )
    torch.manual_seed(seed)
    model = BertForSequenceClassification(config)
    model.eval()
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory
