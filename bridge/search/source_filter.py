"""OpenSearch ``_source`` filtering, reimplemented to give the engine's exact answer.

The bridge must read passage fields that the client may not have asked for, so it
widens ``_source`` upstream (:func:`widen`) and then restores, hit by hit, what the
engine itself would have returned for the client's own request (:func:`filter_source`).
Clients compare these bodies with what they get from OpenSearch directly, so every
rule here follows OpenSearch 2.19 (``FetchSourceContext`` for parsing,
``XContentMapValues.filter`` for filtering), including its odd corners:

* patterns are simple globs where ``*`` matches any run of characters, dots included;
  every pattern ``p`` also matches everything below it (``p.*``);
* a key with dots in its name (``{"a.b": 1}``) is matched as if it were nested;
* an object (or array) whose own path is included keeps whatever is left after the
  excludes, even when that is empty; objects and arrays that were only walked
  through (a deeper include) disappear when nothing inside them survives;
* inside arrays, objects that end up empty are dropped, and plain values are kept
  only when the array's own path is included; excludes never remove single array
  values, only whole keys;
* URL parameters (``_source``, ``_source_includes``, ``_source_excludes``) replace
  the body's ``_source`` as a whole, they are not merged with it.

Key order follows the input document (the engine's order is that of a hash map, so a
client cannot rely on it; JSON object equality is what matters).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

__all__ = ["SourceSpec", "filter_source", "parse_source_spec", "widen"]


@dataclass(frozen=True)
class SourceSpec:
    """What the client asked to see of ``_source``: fetch it at all, and which paths.

    Empty ``includes`` means "everything"; empty ``excludes`` means "nothing removed".
    """

    fetch: bool = True
    includes: tuple[str, ...] = field(default=())
    excludes: tuple[str, ...] = field(default=())

    @property
    def is_default(self) -> bool:
        """True when the engine would return ``_source`` untouched."""
        return self.fetch and not self.includes and not self.excludes


# --------------------------------------------------------------------------- parsing


def _split_commas(value: str) -> tuple[str, ...]:
    """Split like Java's ``String.split(",")``: no trimming, trailing empties dropped."""
    if not value:
        return ()
    parts = value.split(",")
    while parts and parts[-1] == "":
        parts.pop()
    return tuple(parts)


def _unique(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(values))


def _string_list(value: Any) -> tuple[str, ...]:
    """A body ``includes``/``excludes`` value: one string or a list of strings."""
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list | tuple):
        return _unique(v for v in value if isinstance(v, str))
    return ()


def _spec_from_body(body_value: Any) -> SourceSpec:
    if body_value is None:
        return SourceSpec()
    if isinstance(body_value, bool):
        return SourceSpec(fetch=body_value)
    if isinstance(body_value, str):
        return SourceSpec(includes=(body_value,))
    if isinstance(body_value, list | tuple):
        return SourceSpec(includes=_string_list(body_value))
    if isinstance(body_value, Mapping):
        includes: tuple[str, ...] = ()
        excludes: tuple[str, ...] = ()
        # Same order of precedence as a parser reading the keys one by one: the last
        # spelling wins, and "includes"/"include" are the same field to the engine.
        for key, value in body_value.items():
            if key in ("includes", "include"):
                includes = _string_list(value)
            elif key in ("excludes", "exclude"):
                excludes = _string_list(value)
        return SourceSpec(includes=includes, excludes=excludes)
    return SourceSpec()


def parse_source_spec(body_value: Any, params: Mapping[str, str]) -> SourceSpec:
    """The client's ``_source`` request, from the body value and the URL parameters.

    ``body_value`` is the body's ``_source`` (``None`` when absent). When any of the URL
    parameters ``_source``, ``_source_includes`` or ``_source_excludes`` is present
    the body is ignored entirely, as in ``RestSearchAction``. ``_source=true`` /
    ``false`` must be spelled exactly so; anything else is a comma list of includes.
    The pre-7.0 spellings ``_source_include`` / ``_source_exclude`` are accepted as
    fallbacks (OpenSearch 2.x itself rejects them as unknown parameters with a 400,
    so a request carrying them never reaches a point where this matters upstream).

    Malformed values never raise: the engine rejects them itself and the bridge
    relays that error, so here they simply count as absent.
    """
    source = params.get("_source")
    includes_param = params.get("_source_includes", params.get("_source_include"))
    excludes_param = params.get("_source_excludes", params.get("_source_exclude"))
    if source is None and includes_param is None and excludes_param is None:
        return _spec_from_body(body_value)

    fetch: bool | None = None
    includes: tuple[str, ...] = ()
    excludes: tuple[str, ...] = ()
    if source is not None:
        if source == "true":
            fetch = True
        elif source == "false":
            fetch = False
        else:
            includes = _split_commas(source)
    if includes_param is not None:
        includes = _split_commas(includes_param)
    if excludes_param is not None:
        excludes = _split_commas(excludes_param)
    return SourceSpec(fetch=fetch is None or fetch, includes=includes, excludes=excludes)


# --------------------------------------------------------------------------- matching

# A matcher state is the set of NFA positions alive after reading a path prefix:
# (pattern index, position in the pattern), or (pattern index, _BELOW) once the
# pattern matched a parent path and a dot followed (everything below it matches).
# The empty set is the dead state.
_BELOW = -1
_State = frozenset[tuple[int, int]]
_DEAD: _State = frozenset()


class _PathMatcher:
    """Which dotted paths a list of ``*`` glob patterns selects, read char by char.

    Reading a path incrementally lets the filter ask, at every object key, both
    "is this path selected?" and "could anything below it still be selected?",
    which is what decides between keeping a whole value, descending, or dropping.
    """

    def __init__(self, patterns: Sequence[str]) -> None:
        self._patterns = tuple(patterns)
        self._cache: dict[tuple[_State, str], _State] = {}
        self.start = self._closure((i, 0) for i in range(len(self._patterns)))

    def _closure(self, states: Iterable[tuple[int, int]]) -> _State:
        out: set[tuple[int, int]] = set()
        todo = list(states)
        while todo:
            state = todo.pop()
            if state in out:
                continue
            out.add(state)
            index, pos = state
            pattern = self._patterns[index]
            if pos != _BELOW and pos < len(pattern) and pattern[pos] == "*":
                todo.append((index, pos + 1))  # the star may match nothing
        return frozenset(out)

    def step_char(self, states: _State, char: str) -> _State:
        nxt: list[tuple[int, int]] = []
        for index, pos in states:
            if pos == _BELOW:
                nxt.append((index, _BELOW))
                continue
            pattern = self._patterns[index]
            if pos < len(pattern):
                if pattern[pos] == "*":
                    nxt.append((index, pos))
                elif pattern[pos] == char:
                    nxt.append((index, pos + 1))
            elif char == ".":
                nxt.append((index, _BELOW))
        return self._closure(nxt) if nxt else _DEAD

    def step(self, states: _State, text: str) -> _State:
        """The state after reading ``text``; memoised, as documents repeat their keys."""
        if not states:
            return _DEAD
        cached = self._cache.get((states, text))
        if cached is not None:
            return cached
        result = states
        for char in text:
            result = self.step_char(result, char)
            if not result:
                break
        if len(self._cache) >= 4096:
            self._cache.clear()
        self._cache[(states, text)] = result
        return result

    def accepts(self, states: _State) -> bool:
        return any(pos == _BELOW or pos == len(self._patterns[index]) for index, pos in states)


_MATCH_ALL = _PathMatcher(("*",))


@lru_cache(maxsize=256)
def _matchers(includes: tuple[str, ...], excludes: tuple[str, ...]) -> tuple[_PathMatcher, _PathMatcher]:
    return (_PathMatcher(includes) if includes else _MATCH_ALL, _PathMatcher(excludes))


# --------------------------------------------------------------------------- filtering


def _filter_object(
    obj: Mapping[str, Any],
    inc: _PathMatcher,
    inc_state: _State,
    exc: _PathMatcher,
    exc_state: _State,
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in obj.items():
        key_inc = inc.step(inc_state, str(key))
        if not key_inc:
            continue
        key_exc = exc.step(exc_state, str(key)) if exc_state else _DEAD
        if exc.accepts(key_exc):
            continue
        included = inc.accepts(key_inc)
        sub_inc, sub_inc_state = inc, key_inc
        if included:
            if not key_exc or not exc.step_char(key_exc, "."):
                out[key] = value  # nothing below can be excluded: keep it whole
                continue
            sub_inc, sub_inc_state = _MATCH_ALL, _MATCH_ALL.start  # only excludes matter now
        if isinstance(value, Mapping):
            below_inc = sub_inc.step_char(sub_inc_state, ".")
            if not below_inc:
                continue
            below_exc = exc.step_char(key_exc, ".") if key_exc else _DEAD
            kept = _filter_object(value, sub_inc, below_inc, exc, below_exc)
            if included or kept:
                out[key] = kept
        elif isinstance(value, list):
            kept_list = _filter_array(value, sub_inc, sub_inc_state, exc, key_exc)
            if included or kept_list:
                out[key] = kept_list
        elif included:
            out[key] = value
    return out


def _filter_array(
    items: Sequence[Any],
    inc: _PathMatcher,
    inc_state: _State,
    exc: _PathMatcher,
    exc_state: _State,
) -> list[Any]:
    out: list[Any] = []
    values_included = inc.accepts(inc_state)
    for item in items:
        if isinstance(item, Mapping):
            below_inc = inc.step_char(inc_state, ".") if inc_state else _DEAD
            below_exc = exc.step_char(exc_state, ".") if exc_state else _DEAD
            kept = _filter_object(item, inc, below_inc, exc, below_exc)
            if kept:
                out.append(kept)
        elif isinstance(item, list):
            kept_list = _filter_array(item, inc, inc_state, exc, exc_state)
            if kept_list:
                out.append(kept_list)
        elif values_included:
            out.append(item)
    return out


def filter_source(source: Mapping[str, Any], spec: SourceSpec) -> dict[str, Any] | None:
    """The ``_source`` the engine would return for ``spec``; ``None`` when not fetched.

    Unfiltered values are shared with ``source``, not copied.
    """
    if not spec.fetch:
        return None
    if not spec.includes and not spec.excludes:
        return dict(source)
    inc, exc = _matchers(spec.includes, spec.excludes)
    return _filter_object(source, inc, inc.start, exc, exc.start)


# --------------------------------------------------------------------------- widening


def _may_touch(matcher: _PathMatcher, path: str) -> bool:
    """Whether a pattern can select ``path``, one of its parents, or anything below it."""
    return bool(matcher.step(matcher.start, path))


def widen(spec: SourceSpec, paths: Sequence[str]) -> SourceSpec:
    """The spec to send upstream so that ``paths`` come back whole, and ``spec`` can
    still be restored exactly with :func:`filter_source` on what comes back.

    Why not simply always ask for the full ``_source``: indices that rerank often
    carry large fields (embeddings, raw HTML) that clients exclude on purpose, and
    fetching them for every one of the top-N hits costs more than the reranking.
    So the widening is minimal instead:

    * a default spec stays default, and no paths means nothing to widen;
    * ``_source: false`` becomes an include list of exactly ``paths``;
    * includes gain ``paths`` (empty includes stay empty: they mean "all");
    * an exclude is kept only when it cannot select a path, a parent of one, or
      anything below one; an exclude that equals an include is dropped too (the
      engine rejects a body that names the same entry in both).

    Filtering the widened result again with ``spec`` gives exactly what ``spec``
    gives on the full source (property-tested in ``tests/search``).
    """
    wanted = _unique(p for p in paths if p)
    if spec.is_default or not wanted:
        return spec
    if not spec.fetch:
        return SourceSpec(includes=wanted)
    includes = _unique((*spec.includes, *wanted)) if spec.includes else ()
    excludes = tuple(
        pattern
        for pattern in spec.excludes
        if pattern not in includes and not any(_may_touch(_PathMatcher((pattern,)), p) for p in wanted)
    )
    return SourceSpec(includes=includes, excludes=excludes)
