"""The words a user searched for, recovered from an OpenSearch query.

A cross-encoder scores (query text, passage) pairs, but clients send query DSL, not
text. This module digs the typed text out of the clauses that carry it (``match``,
``multi_match``, ``query_string`` …), walking through compound queries, and ignores
clauses that only restrict the result set (``term``, ``range``, ``exists`` …) or that
say what the user does *not* want (``must_not``, ``boosting.negative``, ``-word``).

Lucene syntax (``query_string``, ``simple_query_string``, ``?q=``) is reduced to
plain words: field prefixes, operators, boosts, fuzziness, ranges, regular
expressions and wildcards mean nothing to a language model and would only add noise.

Nothing here raises on malformed input: a request the engine would reject still
gets relayed, and a partial answer is better than none for scoring.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from bridge.search.json_codec import scrub_surrogates

__all__ = ["clean_lucene_query", "extract_query_text", "query_text_from_uri"]

# Deeper than any real query; stops hostile nesting from exhausting the stack.
_MAX_DEPTH = 64

# Clauses whose value is {field: text} or {field: {"query": text, ...}}.
_FIELD_TEXT_QUERIES = frozenset({"match", "match_phrase", "match_phrase_prefix", "match_bool_prefix"})
# Clauses whose value carries the text under "query".
_PLAIN_TEXT_QUERIES = frozenset({"multi_match", "combined_fields"})
# Compound clauses: where their scoring sub-queries live.
_SUBQUERY_KEYS: dict[str, tuple[str, ...]] = {
    "bool": ("must", "should", "filter"),
    "dis_max": ("queries",),
    "hybrid": ("queries",),
    "constant_score": ("filter",),
    "function_score": ("query",),
    "script_score": ("query",),
    "boosting": ("positive",),
    "nested": ("query",),
    "has_child": ("query",),
    "has_parent": ("query",),
}


def _scalar_text(value: Any) -> str | None:
    """Text of a scalar query value; numbers and booleans as JSON writes them."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        text = " ".join(str(value).split())
        return text or None
    return None


def _as_clauses(value: Any) -> Iterator[Any]:
    """A clause slot holds one query or a list of them."""
    if isinstance(value, list | tuple):
        yield from value
    else:
        yield value


def _field_texts(body: Any) -> Iterator[str | None]:
    """``{"field": "text"}`` or ``{"field": {"query": "text", ...}}``."""
    if not isinstance(body, Mapping):
        return
    for value in body.values():
        if isinstance(value, Mapping):
            yield _scalar_text(value.get("query"))
        else:
            yield _scalar_text(value)


def _interval_texts(rule: Any, depth: int) -> Iterator[str | None]:
    """Text of an ``intervals`` rule: ``match`` rules, through ``all_of``/``any_of``."""
    if depth > _MAX_DEPTH or not isinstance(rule, Mapping):
        return
    for kind, body in rule.items():
        if not isinstance(body, Mapping):
            continue
        if kind == "match":
            yield _scalar_text(body.get("query"))
        elif kind in ("all_of", "any_of"):
            for sub in _as_clauses(body.get("intervals")):
                yield from _interval_texts(sub, depth + 1)


def _clause_texts(clause: Any, depth: int) -> Iterator[str | None]:
    if depth > _MAX_DEPTH or not isinstance(clause, Mapping):
        return
    for kind, body in clause.items():
        if kind in _FIELD_TEXT_QUERIES:
            yield from _field_texts(body)
        elif not isinstance(body, Mapping):
            continue
        elif kind in _PLAIN_TEXT_QUERIES:
            yield _scalar_text(body.get("query"))
        elif kind == "query_string":
            yield clean_lucene_query(_scalar_text(body.get("query")) or "")
        elif kind == "simple_query_string":
            yield clean_lucene_query(_scalar_text(body.get("query")) or "", simple=True)
        elif kind == "intervals":
            for rule in body.values():
                yield from _interval_texts(rule, depth + 1)
        elif kind == "neural":
            for value in body.values():
                if isinstance(value, Mapping):
                    yield _scalar_text(value.get("query_text"))
        elif kind in _SUBQUERY_KEYS:
            for key in _SUBQUERY_KEYS[kind]:
                for sub in _as_clauses(body.get(key)):
                    yield from _clause_texts(sub, depth + 1)


def _join_unique(texts: Iterator[str | None]) -> str | None:
    seen: dict[str, None] = {}
    for text in texts:
        if text:
            seen.setdefault(text, None)
    return " ".join(seen) or None


def extract_query_text(query: Mapping[str, Any] | None) -> str | None:
    """The text to score hits against, from the query DSL clause ``query``.

    Texts of several clauses are joined with a space, each distinct text once, in
    the order met. ``None`` when the query carries no typed text (``match_all``,
    only filters, or nothing at all).
    """
    try:
        text = _join_unique(_clause_texts(query, 0))
    except RecursionError:  # pragma: no cover - guarded by _MAX_DEPTH
        return None
    # A JSON "\ud800" escape gives a lone surrogate, which tokenizers refuse.
    return scrub_surrogates(text) if text is not None else None


def query_text_from_uri(q: str) -> str | None:
    """The text of a URI search (``?q=``), which is Lucene query syntax."""
    if not isinstance(q, str):
        return None
    text = clean_lucene_query(q)
    return scrub_surrogates(text) if text else None


# --------------------------------------------------------------------------- Lucene


@dataclass(frozen=True)
class _Token:
    kind: str  # word, phrase, field, open, close, not, must, skip, op
    text: str = ""


_BOOLEAN_WORDS = {"AND": "op", "OR": "op", "NOT": "not"}
# Characters that end a bare word when not escaped.
_WORD_END = set(' \t\r\n\f\v()"[]{}^~:')
_SIMPLE_WORD_END = set(' \t\r\n\f\v()"|+~')


def _skip_suffix(text: str, i: int) -> int:
    """Skip boosts ``^2.5`` and fuzziness / proximity ``~``, ``~2``, ``~0.8``."""
    while i < len(text) and text[i] in "^~":
        i += 1
        while i < len(text) and (text[i].isdigit() or text[i] == "."):
            i += 1
    return i


def _read_quoted(text: str, i: int) -> tuple[str, int]:
    """The unescaped content of a ``"…"`` starting at ``text[i]``; returns the end."""
    out: list[str] = []
    i += 1
    while i < len(text):
        char = text[i]
        if char == "\\":
            out.append(text[i + 1 : i + 2])
            i += 2
            continue
        if char == '"':
            return "".join(out), i + 1
        out.append(char)
        i += 1
    return "".join(out), i


def _skip_range(text: str, i: int) -> int:
    """Skip ``[a TO b]`` / ``{a TO b}`` (either closing bracket), quotes respected."""
    i += 1
    while i < len(text):
        char = text[i]
        if char == "\\":
            i += 2
            continue
        if char == '"':
            _, i = _read_quoted(text, i)
            continue
        if char in "]}":
            return i + 1
        i += 1
    return i


def _lucene_tokens(text: str) -> Iterator[_Token]:
    """Tokens of classic Lucene query syntax, just enough to keep the plain words."""
    i = 0
    n = len(text)
    while i < n:
        char = text[i]
        if char.isspace():
            i += 1
        elif char == "(":
            yield _Token("open")
            i += 1
        elif char == ")":
            yield _Token("close")
            i = _skip_suffix(text, i + 1)
        elif char == '"':
            phrase, i = _read_quoted(text, i)
            if i < n and text[i] == ":":  # a quoted field name
                yield _Token("field", phrase)
                i += 1
            else:
                yield _Token("phrase", phrase)
                i = _skip_suffix(text, i)
        elif char in "[{":
            yield _Token("skip")
            i = _skip_suffix(text, _skip_range(text, i))
        elif char in "<>":  # field:>=10 style ranges
            i += 1
            if i < n and text[i] == "=":
                i += 1
            while i < n and not text[i].isspace() and text[i] != ")":
                i += 2 if text[i] == "\\" else 1
            yield _Token("skip")
        elif char == "/" and text.find("/", i + 1) != -1:  # regular expression
            end = i + 1
            while end < n and text[end] != "/":
                end += 2 if text[end] == "\\" else 1
            yield _Token("skip")
            i = _skip_suffix(text, end + 1)
        elif text.startswith(("&&", "||"), i):
            yield _Token("op")
            i += 2
        elif char in "!-":
            yield _Token("not")
            i += 1
        elif char == "+":
            yield _Token("must")
            i += 1
        elif char in "^~]}":  # stray syntax
            i = _skip_suffix(text, i) if char in "^~" else i + 1
        else:
            word: list[str] = []
            while i < n and text[i] not in _WORD_END:
                if text[i] == "\\":  # escaped: taken literally; a lone trailing one is dropped
                    word.append(text[i + 1 : i + 2])
                    i += 2
                else:
                    word.append(text[i])
                    i += 1
            raw = "".join(word)
            if i < n and text[i] == ":":
                yield _Token("field", raw)
                i += 1
            elif raw in _BOOLEAN_WORDS:
                yield _Token(_BOOLEAN_WORDS[raw])
            else:
                yield _Token("word", raw)
                i = _skip_suffix(text, i)


def _simple_tokens(text: str) -> Iterator[_Token]:
    """Tokens of ``simple_query_string`` syntax: ``+ | - " * ( ) ~N``, no fields."""
    i = 0
    n = len(text)
    while i < n:
        char = text[i]
        if char.isspace() or char == "|" or char == "+":
            i += 1
        elif char == "(":
            yield _Token("open")
            i += 1
        elif char == ")":
            yield _Token("close")
            i = _skip_suffix(text, i + 1)
        elif char == '"':
            phrase, i = _read_quoted(text, i)
            yield _Token("phrase", phrase)
            i = _skip_suffix(text, i)
        elif char == "-":
            yield _Token("not")
            i += 1
        elif char == "~":
            i = _skip_suffix(text, i)
        else:
            word: list[str] = []
            while i < n and text[i] not in _SIMPLE_WORD_END:
                if text[i] == "\\":  # escaped: taken literally; a lone trailing one is dropped
                    word.append(text[i + 1 : i + 2])
                    i += 2
                else:
                    word.append(text[i])
                    i += 1
            yield _Token("word", "".join(word))
            i = _skip_suffix(text, i)


def _plain_words(text: str) -> list[str]:
    """Words of a term or phrase with wildcard characters removed."""
    return text.replace("*", " ").replace("?", " ").split()


def _kept_words(tokens: list[_Token]) -> list[str]:
    """Walk the tokens, dropping negated terms/groups and ``_exists_:field``."""
    words: list[str] = []
    negate = False
    skip_next = False
    i = 0
    while i < len(tokens):
        token = tokens[i]
        i += 1
        if token.kind in ("op", "must"):
            continue
        if token.kind == "not":
            negate = True
            continue
        if token.kind == "field":
            if token.text == "_exists_":
                skip_next = True
            continue
        if token.kind == "close":
            negate = skip_next = False
            continue
        if token.kind == "open":
            if negate or skip_next:
                depth = 1
                while i < len(tokens) and depth:
                    depth += {"open": 1, "close": -1}.get(tokens[i].kind, 0)
                    i += 1
            negate = skip_next = False
            continue
        if token.kind in ("word", "phrase") and not negate and not skip_next:
            words.extend(_plain_words(token.text))
        negate = skip_next = False
    return words


def clean_lucene_query(text: str, *, simple: bool = False) -> str | None:
    """Plain words of a Lucene (or, with ``simple``, ``simple_query_string``) query.

    Field prefixes, boolean operators, ``+``, boosts, fuzziness, ranges, regular
    expressions and wildcard characters are removed; escaped characters are kept
    literally; negated terms and groups (``-x``, ``!x``, ``NOT x``) are left out, as
    they name what the user does not want. ``None`` when no word is left (``*``,
    ``*:*``).
    """
    if not isinstance(text, str):
        return None
    tokens = list(_simple_tokens(text) if simple else _lucene_tokens(text))
    return " ".join(_kept_words(tokens)) or None
