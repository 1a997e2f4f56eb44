"""Splitting long passages into overlapping windows (``long_documents: chunk``), over token ids only.

A passage longer than the model's budget is scored by its best window (MaxP): relevant text deep inside a long
document still counts, where plain truncation would never show it to the model.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any


def window_spans(
    length: int, size: int, stride: int, max_windows: int | None = None
) -> list[tuple[int, int]]:
    """``[start, end)`` token spans of at most ``size`` tokens covering ``length`` tokens.

    Neighbouring windows share ``stride`` tokens, so a sentence cut at one window's edge is whole in the next.
    ``max_windows`` caps the work per passage (the passage's tail beyond it is not scored). An empty passage
    still gets one (empty) window, so every passage gets a score.
    """
    if size <= 0:
        raise ValueError(f"window size must be positive, got {size}")
    if length <= size:
        return [(0, length)]
    step = max(1, size - min(stride, size - 1))
    spans: list[tuple[int, int]] = []
    start = 0
    while True:
        end = min(start + size, length)
        spans.append((start, end))
        if end >= length or (max_windows is not None and len(spans) >= max_windows):
            return spans
        start += step


@dataclass(frozen=True)
class PairTemplate:
    """Where a tokenizer puts its special tokens around a (query, passage) pair.

    Learned once from the tokenizer itself (see :meth:`from_tokenizer`), so that windows cut from token ids can be
    reassembled exactly as the tokenizer would have encoded the pair: ``[CLS] q [SEP] p [SEP]`` for BERT,
    ``<s> q </s></s> p </s>`` for RoBERTa, and so on.
    """

    prefix: tuple[int, ...]
    middle: tuple[int, ...]
    suffix: tuple[int, ...]
    # Token type ids per part, or None when the model takes none (RoBERTa-like).
    types: tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...], int, int] | None

    @property
    def special_tokens(self) -> int:
        return len(self.prefix) + len(self.middle) + len(self.suffix)

    def build(self, query: Sequence[int], passage: Sequence[int]) -> tuple[list[int], list[int] | None]:
        """Input ids (and token type ids) for one pair."""
        ids = [*self.prefix, *query, *self.middle, *passage, *self.suffix]
        if self.types is None:
            return ids, None
        prefix_t, middle_t, suffix_t, query_t, passage_t = self.types
        types = [*prefix_t, *([query_t] * len(query)), *middle_t, *([passage_t] * len(passage)), *suffix_t]
        return ids, types

    @classmethod
    def from_tokenizer(cls, tokenizer: Callable[..., Any]) -> PairTemplate:
        """Probe the tokenizer with two one-token texts and read off what it adds around them."""
        special = set(getattr(tokenizer, "all_special_ids", []) or [])
        for first, second in (("a", "b"), ("x", "y"), ("hello", "world"), ("one", "two")):
            first_ids = tokenizer(first, add_special_tokens=False)["input_ids"]
            second_ids = tokenizer(second, add_special_tokens=False)["input_ids"]
            if len(first_ids) != 1 or len(second_ids) != 1 or first_ids == second_ids:
                continue
            a, b = first_ids[0], second_ids[0]
            if a in special or b in special:
                continue
            encoded = tokenizer(first, second)
            ids = list(encoded["input_ids"])
            if ids.count(a) != 1 or ids.count(b) != 1 or ids.index(a) > ids.index(b):
                continue
            ia, ib = ids.index(a), ids.index(b)
            types = None
            type_ids = encoded.get("token_type_ids")
            if type_ids is not None:
                t = list(type_ids)
                types = (tuple(t[:ia]), tuple(t[ia + 1 : ib]), tuple(t[ib + 1 :]), t[ia], t[ib])
            return cls(tuple(ids[:ia]), tuple(ids[ia + 1 : ib]), tuple(ids[ib + 1 :]), types)
        raise ValueError(
            "could not learn how this tokenizer encodes a text pair; use long_documents: truncate"
        )
