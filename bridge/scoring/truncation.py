"""How much of a text the model can see, decided before the text is tokenised.

A cross-encoder sees at most ``max_length`` tokens of a (query, passage) pair, so tokenising a 1 MiB query or
passage in full only to throw almost all of it away is pure cost (half a second per text on a CPU, per pair when
the query is repeated for every passage). This module cuts texts to a character prefix that still holds every
token the model will see, and reproduces Hugging Face's ``longest_first`` pair truncation from token counts, so
the tokens that reach the model are the ones ``tokenizer(query, passage, truncation=True)`` gives.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# First guess of characters per needed token: English prose averages 4-5 with WordPiece, byte-level BPE or
# SentencePiece, technical text with long words 6-7, so one cut nearly always suffices. A prefix that yields too
# few tokens is cut again, longer by what its own characters per token predict (at least 1.5 times, at most
# GROWTH times), so the work stays within a small factor of what the kept tokens need.
CHARS_PER_TOKEN = 8
GROWTH = 4
# A prefix cut inside a word (no usable space near the cut) must yield this many tokens beyond those kept: the cut
# can only change the tokens of the word it cuts, and they stay out of those kept unless that one word yields
# more (a run of hundreds of characters without a space or punctuation: not language, and its exact tokens are
# not worth tokenising a megabyte for).
MARGIN_TOKENS = 16

# The last space that follows a non-space within a window: cutting just before it leaves every pre-token before
# it whole for whitespace, punctuation and byte-level regex pre-tokenizers (BERT, RoBERTa, GPT-2/Llama-style BPE,
# SentencePiece's metaspace), so the prefix tokenises to exactly the first tokens of the whole text.
_WORD_END = re.compile(r".*\S( )", re.DOTALL)


@dataclass(frozen=True, slots=True)
class Cut:
    """A prefix of a text: the whole text, one cut at a word boundary, or a hard cut inside a word."""

    text: str
    whole: bool
    at_word_boundary: bool

    def enough(self, tokens: int, needed: int) -> bool:
        """Whether ``tokens`` from this prefix settle the first ``needed`` tokens of the whole text."""
        if self.whole:
            return True
        return tokens >= needed + (0 if self.at_word_boundary else MARGIN_TOKENS)


def cut_text(text: str, chars: int) -> Cut:
    """At most ``chars`` characters from the start of ``text``, cut before a space if one is in the last half.

    Without a usable space there (one very long "word", or a script written without spaces, which BERT-style
    tokenizers split per character anyway) the cut falls at ``chars`` exactly, and :data:`MARGIN_TOKENS` keeps
    the cut word's tokens out of those used.
    """
    if len(text) <= chars:
        return Cut(text, whole=True, at_word_boundary=True)
    chars = max(chars, 2)
    match = _WORD_END.match(text, chars // 2, chars)
    if match is not None:
        return Cut(text[: match.start(1)], whole=False, at_word_boundary=True)
    return Cut(text[:chars], whole=False, at_word_boundary=False)


def first_guess(needed: int) -> int:
    """Characters to cut first for a text of which ``needed`` tokens matter."""
    return needed * CHARS_PER_TOKEN + 64


def next_guess(cut: Cut, tokens: int, needed: int) -> int:
    """Characters to cut next after ``cut`` gave ``tokens`` tokens, too few of the ``needed``."""
    seen = max(len(cut.text), 1)
    estimate = seen * (needed + MARGIN_TOKENS) * 5 // (4 * tokens) if tokens else seen * GROWTH
    return min(max(estimate, seen * 3 // 2), seen * GROWTH) + 64


def sanitize(text: str) -> str:
    """``text`` with lone surrogates (from ``\\ud800`` JSON escapes) replaced by U+FFFD.

    The Rust tokenizer cannot take them (it raises a TypeError for the whole batch); a well-formed surrogate pair
    that arrived as two code points is joined into its character.
    """
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return text


def longest_first(first: int, second: int, room: int, first_is_longer: bool | None = None) -> tuple[int, int]:
    """Tokens kept of each sequence of a pair under Hugging Face's ``longest_first`` truncation.

    ``room`` is the model's ``max_length`` less the pair's special tokens. The same arithmetic as the
    ``tokenizers`` library (``truncate_encodings``): when only the longer sequence has to give, it keeps
    ``room - shorter``; when both would exceed half the room, they get ``room // 2`` each and the longer one the
    odd token. Counts are only needed up to ``room + 1``; when both sequences exceed the room the counts cannot
    tell which is longer, and ``first_is_longer`` decides (otherwise it is ignored).
    """
    if first + second <= room:
        return first, second
    swap = first > second if first_is_longer is None or first != second else first_is_longer
    shorter, longer = (second, first) if swap else (first, second)
    longer = shorter if shorter > room else max(shorter, room - shorter)
    if shorter + longer > room:
        shorter = room // 2
        longer = shorter + room % 2
    return (longer, shorter) if swap else (shorter, longer)
