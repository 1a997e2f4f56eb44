"""A batch of tokenised inputs as the model's tensors: each row padded to the batch's longest, on its device.

One function for both model kinds (cross-encoder pairs, bi-encoder texts): the tokenizer's padding side, pad id
and whether it makes token type ids are read once per model (:meth:`Padding.of`). The padding itself is numpy
(:func:`pad_arrays`), which every backend takes; torch is imported only by :func:`collate`, which makes torch
tensors of it, so this module stays importable by torch-free backends.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from bridge.scoring.encoder import Encoded

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class Padding:
    pad_id: int
    left: bool
    """Pad on the left (the tokenizer's ``padding_side``): decoder-style models read their last token."""
    token_types: bool
    """The model takes ``token_type_ids`` (BERT-likes), as the tokenizer's ``model_input_names`` say."""

    @classmethod
    def of(cls, tokenizer: Any) -> Padding:
        pad_id = tokenizer.pad_token_id
        return cls(
            pad_id=int(pad_id) if pad_id is not None else 0,
            left=getattr(tokenizer, "padding_side", "right") == "left",
            token_types="token_type_ids" in getattr(tokenizer, "model_input_names", ()),
        )


def pad_arrays(batch: Sequence[Encoded], padding: Padding) -> dict[str, np.ndarray]:
    """``input_ids``, ``attention_mask`` (and ``token_type_ids``) for ``batch`` as int64 arrays ``[rows, width]``,
    each row padded to the batch's longest on the tokenizer's padding side."""
    rows, width = len(batch), max(len(item) for item in batch)
    ids = np.full((rows, width), padding.pad_id, dtype=np.int64)
    mask = np.zeros((rows, width), dtype=np.int64)
    types = np.zeros((rows, width), dtype=np.int64) if padding.token_types else None
    for row, item in enumerate(batch):
        n = len(item)
        span = slice(width - n, width) if padding.left else slice(0, n)
        ids[row, span] = item.input_ids
        mask[row, span] = 1
        if types is not None and item.token_type_ids is not None:
            types[row, span] = item.token_type_ids
    arrays = {"input_ids": ids, "attention_mask": mask}
    if types is not None:
        arrays["token_type_ids"] = types
    return arrays


def collate(batch: Sequence[Encoded], padding: Padding, device: torch.device) -> dict[str, torch.Tensor]:
    """:func:`pad_arrays` as torch tensors on ``device``; pinned and copied without blocking on CUDA, so the copy
    overlaps the previous batch's work."""
    import torch

    features = {name: torch.from_numpy(array) for name, array in pad_arrays(batch, padding).items()}
    if device.type == "cuda":
        return {k: v.pin_memory().to(device, non_blocking=True) for k, v in features.items()}
    if device.type != "cpu":
        return {k: v.to(device) for k, v in features.items()}
    return features
