"""A batch of tokenised inputs as the model's tensors: each row padded to the batch's longest, on its device.

One function for both model kinds (cross-encoder pairs, bi-encoder texts): the tokenizer's padding side, pad id
and whether it makes token type ids are read once per model (:meth:`Padding.of`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from bridge.scoring.encoder import Encoded


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


def collate(batch: Sequence[Encoded], padding: Padding, device: torch.device) -> dict[str, torch.Tensor]:
    """``input_ids``, ``attention_mask`` (and ``token_type_ids``) for ``batch``, moved to ``device``; pinned and
    copied without blocking on CUDA, so the copy overlaps the previous batch's work."""
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
    features = {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(mask)}
    if types is not None:
        features["token_type_ids"] = torch.from_numpy(types)
    if device.type == "cuda":
        return {k: v.pin_memory().to(device, non_blocking=True) for k, v in features.items()}
    if device.type != "cpu":
        return {k: v.to(device) for k, v in features.items()}
    return features
