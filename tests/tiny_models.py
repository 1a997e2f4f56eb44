"""Tiny random-weight cross-encoders and bi-encoders for plumbing tests (nothing can be downloaded here), and a
tokenizer wrapper that records what it is given."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

WORDS = (
    "the of and a to in is was for on that with as by at from it an be this are or which who what where when "
    "how many people live population museums city million known well berlin paris registered inhabitants area "
    "square kilometers man eating pizza eats something black race car starts up front crowd driving down lonely "
    "road aircraft wing flow pressure heat boundary layer shock wave physics electron theory model search engine "
    "query passage document relevant weather lovely today sunny outside"
).split()


def _vocabulary(cased: bool) -> list[str]:
    """WordPiece vocabulary: special tokens, ``WORDS``, single letters (upper case too when ``cased``), digits
    and punctuation, each character also as a ``##`` continuation, so any test text tokenises without [UNK]."""
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *sorted(set(WORDS))]
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    vocab += [c for c in letters if c not in vocab] + [f"##{c}" for c in letters]
    if cased:
        vocab += [c.upper() for c in letters] + [f"##{c.upper()}" for c in letters]
    vocab += [str(d) for d in range(10)] + [f"##{d}" for d in range(10)] + [".", ",", "?", "!", "-", "'"]
    if cased:
        vocab.append(":")
    return vocab


class RecordingTokenizer:
    """Delegates to a real tokenizer and records the length of every text it is given."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.calls: list[list[int]] = []

    def __call__(self, texts: Sequence[str], *args: Any, **kw: Any) -> Any:
        pairs = args[0] if args and isinstance(args[0], list) else []
        self.calls.append([len(text) for text in [*texts, *pairs]])
        return self.inner(texts, *args, **kw)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


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
    vocab = _vocabulary(cased=False)
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


def build_bi_encoder(
    directory: Path,
    *,
    pooling: str | tuple[str, ...] | Mapping[str, Any] = "mean",
    normalize: bool = True,
    max_seq_length: int | None = 64,
    do_lower_case: bool = False,
    st_config: Mapping[str, Any] | None = None,
    modules: list[dict[str, Any]] | None = None,
    dense: Sequence[Mapping[str, Any]] = (),
    max_positions: int = 128,
    seed: int = 0,
) -> Path:
    """Save a random-weight BERT as a sentence-transformers bi-encoder: ``modules.json`` (Transformer, Pooling,
    a Dense module per ``dense`` entry, Normalize when ``normalize``), ``1_Pooling/config.json`` and
    ``sentence_bert_config.json``. A ``dense`` entry is a Dense ``config.json`` (``in_features`` filled in from
    the previous module's size); its random weights go to ``model.safetensors``.

    ``pooling`` is a mode name or tuple (written as ``pooling_mode``), or a whole pooling config (e.g. the
    legacy ``pooling_mode_*`` booleans); ``modules`` replaces the generated ``modules.json`` entirely.
    """
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    directory.mkdir(parents=True, exist_ok=True)
    # Case-sensitive vocabulary, so do_lower_case visibly changes the tokens.
    vocab = _vocabulary(cased=True)
    tokenizer = BertTokenizerFast(vocab={token: i for i, token in enumerate(vocab)}, do_lower_case=False)
    tokenizer.model_max_length = max_positions
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=max_positions,
    )
    torch.manual_seed(seed)
    model = BertModel(config)  # with its (unused) pooler, so loading reports no missing weights
    model.eval()
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    if modules is None:
        modules = [
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        ]
        for kind in ["Dense"] * len(dense) + (["Normalize"] if normalize else []):
            n = len(modules)
            path = f"{n}_{kind}"
            modules.append(
                {"idx": n, "name": str(n), "path": path, "type": f"sentence_transformers.models.{kind}"}
            )
    (directory / "modules.json").write_text(json.dumps(modules), encoding="utf-8")
    pooling_config: dict[str, Any] = {"word_embedding_dimension": config.hidden_size}
    if isinstance(pooling, Mapping):
        pooling_config.update(pooling)
    else:
        pooling_config["pooling_mode"] = pooling if isinstance(pooling, str) else list(pooling)
    (directory / "1_Pooling").mkdir(exist_ok=True)
    (directory / "1_Pooling" / "config.json").write_text(json.dumps(pooling_config), encoding="utf-8")
    bert_config: dict[str, Any] = {"do_lower_case": do_lower_case}
    if max_seq_length is not None:
        bert_config["max_seq_length"] = max_seq_length
    (directory / "sentence_bert_config.json").write_text(json.dumps(bert_config), encoding="utf-8")
    if st_config is not None:
        (directory / "config_sentence_transformers.json").write_text(json.dumps(st_config), encoding="utf-8")
    mode = pooling_config.get("pooling_mode")
    size = config.hidden_size * (len(mode) if isinstance(mode, list) else 1)
    for n, spec in enumerate(dense, start=2):
        from safetensors.torch import save_file

        dense_config = {"in_features": size, "bias": True, **dict(spec)}
        out = int(dense_config["out_features"])
        weights = {"linear.weight": torch.randn(out, size) * 0.3}
        if dense_config["bias"]:
            weights["linear.bias"] = torch.randn(out) * 0.1
        if dense_config.get("use_residual") and out != size:
            weights["residual.weight"] = torch.randn(out, size) * 0.3
        folder = directory / f"{n}_Dense"
        folder.mkdir(exist_ok=True)
        (folder / "config.json").write_text(json.dumps(dense_config), encoding="utf-8")
        save_file(weights, str(folder / "model.safetensors"))
        size = out
    return directory
