"""Tokenising (query, passage) pairs at a cost bounded by what the model sees, never by the text's length.

The query is tokenised once per request, not once per pair; every text is first cut to a character prefix that
holds the tokens the model can take (:mod:`bridge.scoring.truncation`), and the pair is assembled from token
ids with the tokenizer's own special tokens (:class:`~bridge.scoring.chunking.PairTemplate`), truncated the way
Hugging Face truncates pairs. So a 1 MiB query costs what a 3 KB one does, and the ids equal
``tokenizer(query, passage, truncation="longest_first", max_length=...)`` (one documented exception: when the
query and the passage each exceed the whole budget, the one with more characters counts as the longer one).

Token budgets (``max_query_tokens``, ``max_passage_tokens``) cut a text to its first N tokens before pairing: the
prefix tokenised is then bounded by the smaller of the budget and the model's room, and the pair equals Hugging
Face's ``longest_first`` on the texts' first N tokens (see :func:`budgeted`). With ``long_documents: chunk`` the
passage budget bounds the whole passage, and the windows cover what is left.

The tokenizer is called in pieces of bounded size under a lock (the Rust tokenizer must not have its settings
changed by two threads at once), so one request cannot hold it for long, and a cancelled request stops at the
next piece.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from bridge.scoring.base import ModelConfigError
from bridge.scoring.chunking import PairTemplate, window_spans
from bridge.scoring.settings import ModelSettings
from bridge.scoring.truncation import cut_text, first_guess, longest_first, next_guess, sanitize

log = logging.getLogger(__name__)

# Characters per tokenizer call: about 60 ms of tokenising on a slow CPU core, the longest any request holds
# the tokenizer before another request's texts get their turn.
PIECE_CHARS = 128 * 1024
# Tokenizers whose pair layout cannot be learned (or that truncate on the left) are called on whole pairs as
# Hugging Face does, with each text first cut to this many characters per token of the model's budget.
FALLBACK_CHARS_PER_TOKEN = 32

ShouldStop = Callable[[], bool]

# A pair of several tokens each, with punctuation, for checking the learned pair layout against the tokenizer.
_SAMPLE_PAIR = (
    "How many people live in Berlin, the capital?",
    "Berlin had a population of 3,520,031 registered inhabitants in 891.82 square kilometers.",
)


@dataclass(slots=True)
class Encoded:
    """One model input: a (query, passage) pair, or one window of a long passage."""

    passage: int
    input_ids: list[int]
    token_type_ids: list[int] | None

    def __len__(self) -> int:
        return len(self.input_ids)


def padded_tokens(batch: Sequence[Encoded]) -> int:
    """What a batch costs the model: every row is padded to the longest one."""
    return len(batch) * max((len(item) for item in batch), default=0)


class Stopped(Exception):
    """The caller no longer wants the pairs (its request was cancelled)."""


def budgeted(needed: int, budget: int | None) -> int:
    """Tokens of a text worth tokenising: ``needed`` by the model's layout, at most the text's own budget.

    ``prefix_ids`` returns the first ``min(needed, budget)`` tokens, which are exactly the first tokens of the text
    cut to its budget; when the budget is above ``needed`` the cut changes none of the tokens the pair keeps.
    """
    return needed if budget is None else min(needed, budget)


def pieces(lengths: Sequence[int]) -> Iterator[tuple[int, int]]:
    """``[start, end)`` runs of texts of at most :data:`PIECE_CHARS` characters together (at least one each)."""
    start, size = 0, 0
    for index, length in enumerate(lengths):
        if index > start and size + length > PIECE_CHARS:
            yield start, index
            start, size = index, 0
        size += length
    if start < len(lengths):
        yield start, len(lengths)


class PrefixTokenizer:
    """Token ids of texts' prefixes, at a cost bounded by the tokens needed; thread-safe (one lock around the
    tokenizer). Shared by the cross-encoder's pairs and the bi-encoder's single texts."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self._lock = threading.Lock()

    def locked(self, *args: Any, **kwargs: Any) -> Any:
        """One tokenizer call under the lock (the caller keeps its texts to a bounded piece)."""
        with self._lock:
            return self.tokenizer(*args, **kwargs)

    # -- tokenising --------------------------------------------------------------------------------------

    def _tokenize(self, texts: Sequence[str], should_stop: ShouldStop | None) -> list[list[int]]:
        """Token ids of each text without special tokens, in pieces; raises :class:`Stopped` between pieces."""
        ids: list[list[int]] = []
        for start, end in pieces([len(text) for text in texts]):
            if should_stop is not None and should_stop():
                raise Stopped
            piece = [sanitize(text) for text in texts[start:end]]
            with self._lock:
                encoded = self.tokenizer(
                    piece,
                    add_special_tokens=False,
                    return_attention_mask=False,
                    return_token_type_ids=False,
                    verbose=False,
                )
            ids.extend(encoded["input_ids"])
        return ids

    def prefix_ids(
        self, texts: Sequence[str], needed: int, should_stop: ShouldStop | None = None
    ) -> list[list[int]]:
        """The first ``needed`` token ids of each text (all of them when it has fewer), tokenising prefixes only.

        A text whose prefix yields too few tokens (much whitespace, markup, symbols the vocabulary drops) is
        cut again, longer (:func:`~bridge.scoring.truncation.next_guess`), up to the whole text.
        """
        result: list[list[int]] = [[] for _ in texts]
        todo = [(index, first_guess(needed)) for index in range(len(texts))]
        while todo:
            cuts = [cut_text(texts[index], chars) for index, chars in todo]
            ids = self._tokenize([cut.text for cut in cuts], should_stop)
            again = []
            for (index, _), cut, tokens in zip(todo, cuts, ids, strict=True):
                if cut.enough(len(tokens), needed):
                    result[index] = tokens[:needed]
                else:
                    again.append((index, next_guess(cut, len(tokens), needed)))
            todo = again
        return result

    def cut_to_tokens(
        self, texts: Sequence[str], budget: int | None, should_stop: ShouldStop | None = None
    ) -> list[str]:
        """Each text up to the last character of its ``budget``-th token (whole when it has fewer tokens).

        For tokenizers whose pairs cannot be assembled from ids (the fallback path): the cut text is what gets
        tokenised. Texts are first cut to :data:`FALLBACK_CHARS_PER_TOKEN` characters per token of the budget,
        so the cost stays bounded; the tokenizer's offsets (a fast tokenizer's) say where the token ends.
        """
        if budget is None:
            return list(texts)
        chars = FALLBACK_CHARS_PER_TOKEN * budget
        heads = [sanitize(text[:chars]) for text in texts]
        result: list[str] = []
        for start, end in pieces([len(text) for text in heads]):
            if should_stop is not None and should_stop():
                raise Stopped
            with self._lock:
                encoded = self.tokenizer(
                    heads[start:end],
                    add_special_tokens=False,
                    return_offsets_mapping=True,
                    return_attention_mask=False,
                    return_token_type_ids=False,
                    verbose=False,
                )
            for text, offsets in zip(heads[start:end], encoded["offset_mapping"], strict=True):
                result.append(text if len(offsets) <= budget else text[: offsets[budget - 1][1]])
        return result

    def check_offsets(self, what: str) -> None:
        """Raise :class:`~bridge.scoring.base.ModelConfigError` when the tokenizer cannot say where tokens end
        (a slow, pure-Python tokenizer), which :meth:`cut_to_tokens` needs."""
        try:
            encoded = self.tokenizer(["a b"], add_special_tokens=False, return_offsets_mapping=True)
            encoded["offset_mapping"]
        except (NotImplementedError, KeyError, ValueError, TypeError) as error:
            raise ModelConfigError(
                f"{what} need a tokenizer that gives token offsets (a fast tokenizer) for this model, whose "
                f"pair layout is not learnable ({error})"
            ) from None


class PairEncoder(PrefixTokenizer):
    """Turns one query and its passages into model inputs; thread-safe (one lock around the tokenizer)."""

    def __init__(
        self, tokenizer: Any, max_length: int, settings: ModelSettings, uses_token_types: bool
    ) -> None:
        super().__init__(tokenizer)
        self.max_length = max_length
        self.settings = settings
        self.uses_token_types = uses_token_types
        self.template: PairTemplate | None
        try:
            self.template = PairTemplate.from_tokenizer(tokenizer)
        except ValueError:
            if settings.long_documents == "chunk":
                raise
            self.template = None
        if settings.long_documents == "truncate" and not self._template_fits():
            self.template = None
        if self.template is None:
            log.warning(
                "tokenizer of %s: pair layout unknown or left truncation; texts are cut to %d characters per "
                "token of the budget, then tokenised in pairs",
                settings.source,
                FALLBACK_CHARS_PER_TOKEN,
            )
            if settings.max_query_tokens is not None or settings.max_passage_tokens is not None:
                self.check_offsets("max_query_tokens and max_passage_tokens")
        if settings.max_query_tokens is not None or settings.max_passage_tokens is not None:
            log.info(
                "model %s: token budgets: query %s, passage %s (first tokens kept, then longest_first to %d)",
                settings.source,
                settings.max_query_tokens or "whole",
                settings.max_passage_tokens or "whole",
                max_length,
            )

    def _template_fits(self) -> bool:
        """Whether assembling pairs from the template gives what the tokenizer gives for a real pair.

        Checked once on a sample pair, so a tokenizer whose pair encoding is not ``prefix q middle p suffix`` (or
        that truncates on the left, where prefixes hold the wrong tokens) takes the slow, exact path instead.
        """
        template = self.template
        if template is None or getattr(self.tokenizer, "truncation_side", "right") != "right":
            return False
        if self.max_length - template.special_tokens < 2:
            return False
        query, passage = _SAMPLE_PAIR
        expected = self.tokenizer([query], [passage], return_token_type_ids=self.uses_token_types)
        parts = self.tokenizer([query, passage], add_special_tokens=False)["input_ids"]
        ids, types = template.build(parts[0], parts[1])
        if ids != expected["input_ids"][0]:
            return False
        return not self.uses_token_types or types == expected["token_type_ids"][0]

    @property
    def room(self) -> int:
        """Tokens of query and passage together that fit beside the special tokens."""
        assert self.template is not None
        return self.max_length - self.template.special_tokens

    # -- pairs ---------------------------------------------------------------------------------------------

    def encode(
        self, query: str, passages: Sequence[str], should_stop: ShouldStop | None = None
    ) -> list[Encoded]:
        """One model input per passage, or in ``chunk`` mode several windows of a long passage.

        Raises :class:`Stopped` when ``should_stop`` turns true (checked between tokenizer calls)."""
        if not passages:
            return []
        if self.template is None:
            return self._encode_fallback(query, passages, should_stop)
        if self.settings.long_documents == "chunk":
            return self._encode_windows(query, passages, should_stop)
        template, room = self.template, self.room
        query_budget, passage_budget = self.settings.max_query_tokens, self.settings.max_passage_tokens
        # room + 1 tokens of each side tell whether it alone exceeds the room, all longest_first needs; a budget
        # below that gives the side's exact (cut) length.
        (query_ids,) = self.prefix_ids([query], budgeted(room + 1, query_budget), should_stop)
        items = []
        passage_ids_all = self.prefix_ids(passages, budgeted(room + 1, passage_budget), should_stop)
        for index, passage_ids in enumerate(passage_ids_all):
            both_over = len(query_ids) > room and len(passage_ids) > room
            hint = len(query) > len(passages[index]) if both_over else None
            keep_query, keep_passage = longest_first(len(query_ids), len(passage_ids), room, hint)
            ids, types = template.build(query_ids[:keep_query], passage_ids[:keep_passage])
            items.append(Encoded(index, ids, types if self.uses_token_types else None))
        return items

    def _encode_windows(
        self, query: str, passages: Sequence[str], should_stop: ShouldStop | None
    ) -> list[Encoded]:
        template = self.template
        assert template is not None
        room = self.room
        # A long query may take at most half the room, so passages keep windows worth scoring.
        (query_ids,) = self.prefix_ids([query], budgeted(room // 2, self.settings.max_query_tokens), should_stop)
        size = room - len(query_ids)
        stride, max_chunks = self.settings.chunk_stride, self.settings.max_chunks
        step = max(1, size - min(stride, size - 1))
        # Tokens past the last window's end change no window: one more tells window_spans there are more.
        needed = size + (max_chunks - 1) * step + 1
        # The passage budget bounds the whole passage: the windows cover its first max_passage_tokens tokens.
        needed = budgeted(needed, self.settings.max_passage_tokens)
        items = []
        for index, ids in enumerate(self.prefix_ids(passages, needed, should_stop)):
            for start, end in window_spans(len(ids), size, stride, max_chunks):
                input_ids, types = template.build(query_ids, ids[start:end])
                items.append(Encoded(index, input_ids, types if self.uses_token_types else None))
        return items

    def _encode_fallback(
        self, query: str, passages: Sequence[str], should_stop: ShouldStop | None
    ) -> list[Encoded]:
        """Hugging Face's own pair truncation, on texts cut to a generous number of characters first (and to
        their token budgets, by the tokenizer's offsets)."""
        chars = FALLBACK_CHARS_PER_TOKEN * self.max_length
        left = getattr(self.tokenizer, "truncation_side", "right") != "right"

        def bounded(text: str) -> str:
            return sanitize(text[-chars:] if left else text[:chars])

        (short_query,) = self.cut_to_tokens([query], self.settings.max_query_tokens, should_stop)
        short_query = bounded(short_query)
        texts = [bounded(text) for text in self.cut_to_tokens(passages, self.settings.max_passage_tokens, should_stop)]
        items: list[Encoded] = []
        for start, end in pieces([len(short_query) + len(text) for text in texts]):
            if should_stop is not None and should_stop():
                raise Stopped
            with self._lock:
                encoded = self.tokenizer(
                    [short_query] * (end - start),
                    texts[start:end],
                    truncation="longest_first",
                    max_length=self.max_length,
                    return_attention_mask=False,
                    return_token_type_ids=self.uses_token_types,
                    verbose=False,
                )
            types = encoded["token_type_ids"] if self.uses_token_types else [None] * (end - start)
            for offset, (ids, type_ids) in enumerate(zip(encoded["input_ids"], types, strict=True)):
                items.append(Encoded(start + offset, ids, type_ids))
        return items
