"""The text the cross-encoder scores for one search hit.

Operators name passage fields as the mapping does (``title``, ``body.text``), but a
document's ``_source`` may spell the same field nested (``{"body": {"text": …}}``),
with a dotted key (``{"body.text": …}``), or through arrays of objects; and fields
that are not in ``_source`` at all (stored fields, ``docvalue_fields``, ``fields``
retrieval) arrive under ``hit["fields"]``. All of these must give the same text, in
document order, or reranking quality silently depends on how documents were indexed.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from bridge.search.json_codec import scrub_surrogates

__all__ = ["passage_text", "source_values"]


def _leaves(value: Any) -> Iterator[Any]:
    """Scalar values inside ``value``, depth first, in document order."""
    if isinstance(value, Mapping):
        for item in value.values():
            yield from _leaves(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _leaves(item)
    elif value is not None:
        yield value


def _walk(node: Any, parts: Sequence[str]) -> Iterator[Any]:
    if not parts:
        yield from _leaves(node)
        return
    if isinstance(node, list | tuple):
        for item in node:
            if isinstance(item, Mapping | list | tuple):
                yield from _walk(item, parts)
        return
    if not isinstance(node, Mapping):
        return
    # The first i parts may be one key with dots in its name: try every split, the
    # plain nested spelling first, so {"a": {"b": 1}, "a.b": 2} gives 1 then 2.
    for i in range(1, len(parts) + 1):
        key = ".".join(parts[:i])
        if key in node:
            yield from _walk(node[key], parts[i:])


def source_values(source: Any, path: str) -> list[Any]:
    """Every non-null scalar stored under the dotted ``path`` of ``source``."""
    if not path:
        return []
    return list(_walk(source, path.split(".")))


def _to_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"  # as JSON writes it, not Python's "True"
    return str(value)


def passage_text(hit: Mapping[str, Any], fields: Sequence[str], separator: str) -> str:
    """Join the values of ``fields`` found in ``hit`` with ``separator``.

    Each path is read from ``hit["_source"]``; when the source has nothing for it,
    ``hit["fields"][path]`` is used instead. Numbers and booleans are stringified,
    nulls and blank strings skipped; lone surrogates (a stored ``"\\ud800"``) become
    U+FFFD, which tokenizers take. Returns ``""`` when nothing is found; never
    raises on odd hit shapes.
    """
    if not isinstance(hit, Mapping):
        return ""
    source = hit.get("_source")
    retrieved = hit.get("fields")
    pieces: list[str] = []
    for path in fields:
        if not isinstance(path, str):
            continue
        texts = [_to_text(v) for v in source_values(source, path)]
        texts = [t for t in texts if t.strip()]
        if not texts and isinstance(retrieved, Mapping) and path in retrieved:
            texts = [t for t in (_to_text(v) for v in _leaves(retrieved[path])) if t.strip()]
        pieces.extend(texts)
    return scrub_surrogates(separator.join(pieces))
