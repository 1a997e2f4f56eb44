"""OpenSearch response filtering (``?filter_path=``), reimplemented for bridge-built bodies.

The bridge builds the search response itself after reranking, so it cannot let the
engine apply ``filter_path`` upstream (it needs the hits, scores and ``_source`` the
client filtered away). It asks for the full response and applies the client's
``filter_path`` at the end, the way OpenSearch 2.19 does it while serialising
(``FilterPath`` + ``FilterPathBasedFilter`` driving Jackson's filtering generator):

* the value is split on commas; each entry is trimmed, empties are ignored, and an
  entry starting with ``-`` is an exclusion;
* an entry is a dotted path (``\\.`` is a literal dot in a name); a segment may use
  ``*`` as a glob within one name, and ``**`` stands for one or more levels;
* includes are applied first, then exclusions to what is left;
* arrays are transparent: the same path goes on into each element;
* a container reached only on the way to deeper matches disappears when nothing
  inside it is kept (even when it was empty to begin with); plain array values on
  that way are dropped by includes and kept by exclusions;
* the top-level object is always written, so a filter that keeps nothing gives ``{}``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

__all__ = ["apply_filter_path", "parse_filter_path"]

_Path = tuple[str, ...]  # the segments still to match; () means "matched"


class _Drop:
    """Marks a value that the filter removes (``None`` is a legitimate JSON value)."""


_DROP = _Drop()
_MATCHED = object()  # a whole value matched an entry


def _split_segments(entry: str) -> _Path:
    """Split one entry on dots that are not escaped with a backslash.

    The engine turns a backslash and whatever follows it into a dot inside a segment
    (``\\.`` is the documented use); that is mirrored so names compare the same.
    """
    segments: list[str] = []
    current: list[str] = []
    i = 0
    while i < len(entry):
        char = entry[i]
        if char == ".":
            segments.append("".join(current))
            current = []
            i += 1
            continue
        if char == "\\" and i + 1 < len(entry):
            current.append(".")
            i += 2
            continue
        current.append(char)
        i += 1
    segments.append("".join(current))
    return tuple(segments)


@lru_cache(maxsize=256)
def parse_filter_path(filter_path: str) -> tuple[tuple[_Path, ...], tuple[_Path, ...]]:
    """``(includes, excludes)`` as segment tuples, parsed as the engine parses them."""
    includes: dict[_Path, None] = {}
    excludes: dict[_Path, None] = {}
    for token in filter_path.split(","):
        token = token.strip()
        if not token:
            continue
        target = includes
        if token.startswith("-"):
            target = excludes
            token = token[1:].strip()
            if not token:
                continue
        target[_split_segments(token)] = None
    return tuple(includes), tuple(excludes)


@lru_cache(maxsize=1024)
def _glob(pattern: str) -> re.Pattern[str]:
    return re.compile(".*".join(re.escape(part) for part in pattern.split("*")), re.DOTALL)


def _segment_matches(segment: str, name: str) -> bool:
    if "*" not in segment:
        return segment == name
    return _glob(segment).fullmatch(name) is not None


def _evaluate(paths: tuple[_Path, ...], name: str) -> object | tuple[_Path, ...] | None:
    """``_MATCHED`` if ``name`` completes an entry, else the entries still open below
    ``name`` (``None`` when there are none)."""
    below: list[_Path] = []
    for path in paths:
        if not path:
            continue
        segment = path[0]
        if segment in ("*", "**") or _segment_matches(segment, name):
            rest = path[1:]
            if not rest:
                return _MATCHED
            if segment == "**":
                below.append(path)  # "**" may go on consuming levels
            below.append(rest)
    return tuple(dict.fromkeys(below)) if below else None


def _filter_object(obj: Mapping[str, Any], paths: tuple[_Path, ...], inclusive: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in obj.items():
        verdict = _evaluate(paths, str(key))
        if verdict is _MATCHED:
            if inclusive:
                out[key] = value
        elif verdict is None:
            if not inclusive:
                out[key] = value
        else:
            assert isinstance(verdict, tuple)
            kept = _filter_value(value, verdict, inclusive)
            if kept is not _DROP:
                out[key] = kept
    return out


def _filter_value(value: Any, paths: tuple[_Path, ...], inclusive: bool) -> Any:
    """A value reached on the way to deeper entries: keep only what they select."""
    if isinstance(value, Mapping):
        kept = _filter_object(value, paths, inclusive)
        return kept if kept else _DROP
    if isinstance(value, list):
        items = [item for item in (_filter_value(v, paths, inclusive) for v in value) if item is not _DROP]
        return items if items else _DROP
    return _DROP if inclusive else value


def apply_filter_path(document: Any, filter_path: str) -> Any:
    """``document`` as the engine would serialise it under ``?filter_path=filter_path``.

    A blank ``filter_path`` leaves the document as it is. A top-level object always
    survives (possibly as ``{}``); a top-level array is filtered element-wise and may
    come back empty; a top-level scalar is returned unchanged.
    """
    includes, excludes = parse_filter_path(filter_path)
    if isinstance(document, Mapping):
        result: Any = dict(document)
        if includes:
            result = _filter_object(result, includes, inclusive=True)
        if excludes:
            result = _filter_object(result, excludes, inclusive=False)
        return result
    if isinstance(document, list):
        items: Any = document
        for paths, inclusive in ((includes, True), (excludes, False)):
            if paths:
                filtered = _filter_value(items, paths, inclusive)
                items = [] if filtered is _DROP else filtered
        return list(items)
    return document
