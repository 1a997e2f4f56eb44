"""Turning a model's logits into the one score per pair that the bridge ranks by.

``activation: auto`` reproduces sentence-transformers' ``CrossEncoder`` exactly, so a model scores the same
here as where it was trained and evaluated. Its rule (sentence-transformers 6.x, reimplemented):

1. ``activation_fn`` in ``config_sentence_transformers.json`` (written by sentence-transformers 5 and later),
2. else ``config.json``'s ``sentence_transformers.activation_fn``,
3. else ``config.json``'s legacy ``sbert_ce_default_activation_function`` (sentence-transformers < 4),
4. else a sigmoid for 1-label models and the identity for multi-label ones.

A named activation is only honoured when it is a ``torch.*`` class or ``trust_remote_code`` is on; otherwise it
is ignored with a warning and the default applies. Multi-label models (NLI) additionally get a softmax, like
``CrossEncoder.predict(apply_softmax=True)``, so that ``label`` picks a probability.
"""

from __future__ import annotations

import importlib
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from bridge.scoring.base import ModelConfigError

log = logging.getLogger(__name__)

Transform = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class OutputRule:
    """How logits of shape ``[pairs, labels]`` become scores of shape ``[pairs]``."""

    labels: tuple[str, ...]
    transform: Transform | None
    softmax: bool
    label_index: int
    description: str

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """All labels' outputs after the activation, float32, shape ``[pairs, labels]``."""
        scores = logits.float()
        if self.transform is not None:
            scores = self.transform(scores)
        if self.softmax:
            scores = torch.softmax(scores, dim=1)
        return scores

    def scores(self, logits: torch.Tensor) -> torch.Tensor:
        """The configured label's output, float32, shape ``[pairs]``."""
        return self.probabilities(logits)[:, self.label_index]


def _import_activation(path: str) -> Transform:
    module_path, _, name = path.rpartition(".")
    if not module_path:
        raise ModelConfigError(f"activation {path!r} is not a dotted import path")
    try:
        factory = getattr(importlib.import_module(module_path), name)
    except (ImportError, AttributeError) as exc:
        raise ModelConfigError(f"activation {path!r} named by the model config cannot be imported") from exc
    transform: Transform = factory()
    return transform


def configured_activation(config: Any, st_config: Mapping[str, Any] | None) -> tuple[str | None, str]:
    """The activation path a model names for itself, and where it was found (``None`` when it names none)."""
    if st_config is not None and st_config.get("activation_fn") is not None:
        return str(st_config["activation_fn"]), "config_sentence_transformers.json activation_fn"
    st_section = getattr(config, "sentence_transformers", None)
    if isinstance(st_section, Mapping) and "activation_fn" in st_section:
        path = st_section["activation_fn"]
        return (None if path is None else str(path)), "config.json sentence_transformers.activation_fn"
    legacy = getattr(config, "sbert_ce_default_activation_function", None)
    if legacy is not None:
        return str(legacy), "config.json sbert_ce_default_activation_function"
    return None, "no activation in the model config"


def load_st_config(path: str | None) -> dict[str, Any] | None:
    """Parse ``config_sentence_transformers.json`` if the model ships one."""
    if path is None:
        return None
    with open(path, encoding="utf8") as handle:
        data = json.load(handle)
    return data if isinstance(data, dict) else None


def model_labels(config: Any) -> tuple[str, ...]:
    """Label names by index, from ``config.id2label`` (``LABEL_i`` where the config has none)."""
    num_labels = int(getattr(config, "num_labels", 1))
    id2label = getattr(config, "id2label", None) or {}
    return tuple(str(id2label.get(i, id2label.get(str(i), f"LABEL_{i}"))) for i in range(num_labels))


def _label_index(labels: tuple[str, ...], label: str | None, model: str) -> int:
    if label is None:
        if len(labels) == 1:
            return 0
        raise ModelConfigError(
            f"model {model!r} has {len(labels)} labels ({', '.join(labels)}); set `label` to the one whose "
            "probability is the score"
        )
    if label in labels:
        return labels.index(label)
    folded = [name.casefold() for name in labels]
    if label.casefold() in folded:
        return folded.index(label.casefold())
    raise ModelConfigError(f"model {model!r} has no label {label!r}; its labels are: {', '.join(labels)}")


def resolve_output(
    config: Any,
    *,
    activation: str = "auto",
    label: str | None = None,
    st_config: Mapping[str, Any] | None = None,
    trust_remote_code: bool = False,
    model: str = "model",
) -> OutputRule:
    """Build the :class:`OutputRule` for a model config and the ``activation``/``label`` settings.

    Raises :class:`ModelConfigError` for a label the model does not have (naming the labels it has), for a
    multi-label model without ``label``, and for ``softmax`` on a 1-label model (it would score 1.0 always).
    """
    labels = model_labels(config)
    index = _label_index(labels, label, model)
    multi = len(labels) > 1
    picked = f"label {labels[index]!r} of {', '.join(labels)}" if multi else "the single logit"

    if activation == "identity":
        return OutputRule(labels, None, False, index, f"identity (raw logit) of {picked}: configured")
    if activation == "sigmoid":
        return OutputRule(labels, torch.sigmoid, False, index, f"sigmoid of {picked}: configured")
    if activation == "softmax":
        if not multi:
            raise ModelConfigError(
                f"model {model!r} has one label; softmax over it is always 1.0 — use identity or sigmoid"
            )
        return OutputRule(labels, None, True, index, f"softmax probability of {picked}: configured")
    if activation != "auto":
        raise ModelConfigError(f"unknown activation {activation!r}")

    path, source = configured_activation(config, st_config)
    transform: Transform | None = None
    name: str
    if path is not None and (trust_remote_code or path.startswith("torch.")):
        transform = _import_activation(path)
        name = f"{path} ({source})"
    else:
        if path is not None:
            log.warning(
                "model %s names activation %r in its %s, which is ignored without trust_remote_code; "
                "using the default",
                model,
                path,
                source,
            )
        if multi:
            name = f"identity (multi-label default; {source})"
        else:
            transform = torch.sigmoid
            name = f"sigmoid (1-label default; {source})"
    if multi:
        return OutputRule(labels, transform, True, index, f"auto: {name}, then softmax; score = {picked}")
    return OutputRule(labels, transform, False, index, f"auto: {name}; score = {picked}")
