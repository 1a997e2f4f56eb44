"""Deciding whether one search is reranked, and how: the window to fetch and the request the engine gets."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bridge.config import RuleSettings, Settings
from bridge.errors import bad_request
from bridge.search.combine import Fusion, choose
from bridge.search.dialects import translate
from bridge.search.json_codec import scrub_surrogates
from bridge.search.query_text import extract_query_text, query_text_from_uri
from bridge.search.request import QueryString, RerankOptions, take_rerank_options
from bridge.search.rules import index_names, match_rule, touches_system
from bridge.search.source_filter import SourceSpec, parse_source_spec, widen

# Query-string parameters the bridge re-applies itself on a reranked search.
_PAGING_PARAMS = ("from", "size")
_SOURCE_PARAMS = ("_source", "_source_includes", "_source_excludes", "_source_include", "_source_exclude")
# Body features whose order the client defines itself; reranking them would break their contract.
_OWN_ORDERING = ("search_after", "pit", "collapse", "rescore")
# Java's int range, and the number spellings both Jackson and Java's parsers surely take.
_INT_MIN, _INT_MAX = -(2**31), 2**31 - 1
_URL_INT = re.compile(r"[+-]?[0-9]+")
_NUMERIC_STRING = re.compile(r"[+-]?[0-9]+(?:\.[0-9]*)?(?:[eE][+-]?[0-9]+)?")
_JAVA_BLANKS = " \t\n\r"
_SOURCE_KEYS = frozenset({"includes", "include", "excludes", "exclude"})


@dataclass(frozen=True)
class Skip:
    """Not reranked: the (cleaned) request goes to the engine as it is."""

    reason: str
    body: dict[str, Any] | None
    """The body without ``ext.rerank``; None when there was none."""
    body_changed: bool
    query: QueryString


@dataclass(frozen=True)
class Plan:
    """A search to rerank: what to ask the engine, and how to cut the answer back to the client's page."""

    model: str
    rule: RuleSettings
    """The effective rule: the matched one (or :func:`adhoc_rule`) updated by ``ext.rerank``."""
    fusion: Fusion
    """How the window is ordered, chosen once from ``rule``."""
    query_text: str
    window: int
    offset: int
    size: int
    source: SourceSpec
    filter_path: str | None
    sorted_by_score: bool
    upstream_body: dict[str, Any]
    upstream_query: QueryString
    dialect: str | None = None
    """The dialect the search came in (``Translated.dialect``): its rewritten form is the only one the engine
    can answer, so the engine's refusal of it is the answer."""

    @property
    def fields(self) -> tuple[str, ...]:
        return tuple(self.rule.fields)

    @property
    def separator(self) -> str:
        return self.rule.separator

    @property
    def timeout_s(self) -> float:
        return self.rule.timeout_ms / 1000

    @property
    def keep_previous_score(self) -> bool:
        return self.rule.keep_previous_score

    @property
    def previous_score_field(self) -> str:
        return self.rule.previous_score_field


def adhoc_rule(settings: Settings, index: str | None, fields: Sequence[str]) -> RuleSettings:
    """The rule of a search that no configured rule covers but ``ext.rerank`` opts in: every rule default, for
    the indices it names, capped by ``limits.max_window`` alone (no rule narrows it)."""
    return RuleSettings(
        indices=index_names(index), fields=list(fields), max_window=settings.limits.max_window
    )


def _body_paging(body: Mapping[str, Any] | None, name: str, default: int) -> int | None:
    """``from``/``size`` of a body as the engine reads it, or None where the engine may refuse it.

    The engine reads them as Java ints: numbers are truncated toward zero (``1.9`` is 1), numeric strings are
    coerced (``" 3"``, ``"1e2"``), and ``null``, booleans, objects, arrays, non-finite or out-of-int-range values
    are refused. The bridge must never rewrite a value the engine would refuse into one it accepts, so anything
    it is not sure of is left for the engine to judge (None).
    """
    if body is None or name not in body:
        return default
    value = body[name]
    if isinstance(value, str):
        text = value.strip(_JAVA_BLANKS)
        value = float(text) if _NUMERIC_STRING.fullmatch(text) else None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if not (_INT_MIN <= value <= _INT_MAX):  # also every non-finite float (1e400 reads as inf)
        return None
    return int(value)


def _url_paging(query: QueryString, name: str) -> int | None:
    """``?from=``/``?size=`` as Java's ``Integer.parseInt`` reads them; None where it may refuse."""
    text = query.get(name)
    if text is None or not _URL_INT.fullmatch(text):
        return None
    value = int(text)
    return value if _INT_MIN <= value <= _INT_MAX else None


def _paging(query: QueryString, body: Mapping[str, Any] | None, name: str, default: int) -> int | None:
    """The value in effect (the URL's wins) when the engine certainly accepts both, else None."""
    from_body = _body_paging(body, name, default)
    if from_body is None:
        return None  # the engine parses (and refuses) the body even when the URL overrides it
    return _url_paging(query, name) if query.has(name) else from_body


def _plain_source(value: Any) -> bool:
    """A body ``_source`` in a shape the engine surely takes, and the bridge reads whole.

    The bridge replaces ``_source`` by a widened one on a reranked search: a value the engine would refuse
    (``null``, ``{"excludes": null}``, ``{"includes": ["a", null]}``, an unknown key...) must not be rewritten
    into one it accepts, so such a search is left for the engine to judge.
    """
    if isinstance(value, bool | str):
        return True
    if isinstance(value, Mapping):
        return all(key in _SOURCE_KEYS and _string_or_strings(item) for key, item in value.items())
    return _string_or_strings(value)


def _string_or_strings(value: Any) -> bool:
    return isinstance(value, str) or (isinstance(value, list) and all(isinstance(v, str) for v in value))


def _score_sort_only(sort: Any) -> bool | None:
    """True when sort is by _score descending only, None when absent, False otherwise."""
    if sort is None:
        return None
    entries = sort if isinstance(sort, list) else [sort]
    if not entries:
        return None
    for entry in entries:
        if entry == "_score":
            continue
        if isinstance(entry, Mapping) and list(entry) == ["_score"]:
            order = entry["_score"]
            if isinstance(order, Mapping):
                order = order.get("order", "desc")
            if str(order).lower() == "desc":
                continue
        return False
    return True


def _lookup_json_path(document: Any, path: str) -> Any:
    """``$.a.b[0].c`` into a request body: the simple JSONPath subset a config can name."""
    current = document
    for raw in path.lstrip("$").strip(".").replace("]", "").split("."):
        for part in raw.split("["):
            if part == "":
                continue
            if isinstance(current, list) and part.isdigit() and int(part) < len(current):
                current = current[int(part)]
            elif isinstance(current, Mapping) and part in current:
                current = current[part]
            else:
                return None
    return current


def _query_text(
    options: RerankOptions,
    rule: RuleSettings | None,
    body: Mapping[str, Any] | None,
    query: QueryString,
    template_params: Mapping[str, Any] | None,
) -> str | None:
    if options.query_text is not None:
        return options.query_text.strip() or None
    source = rule.query_text if rule is not None else "auto"
    if source.startswith("$"):
        found = _lookup_json_path(body or {}, source)
        return str(found).strip() or None if isinstance(found, str | int | float) else None
    if source.startswith("param:"):
        found = (template_params or {}).get(source.removeprefix("param:"))
        return str(found).strip() or None if isinstance(found, str | int | float) else None
    if template_params is not None and isinstance(template_params.get("query_text"), str):
        return template_params["query_text"].strip() or None
    text = extract_query_text(body.get("query") if body else None)
    if text is None and query.get("q") is not None:
        text = query_text_from_uri(query.get("q") or "")
    return text


def plan_search(
    settings: Settings,
    index: str | None,
    query: QueryString,
    body: dict[str, Any] | None,
    template_params: Mapping[str, Any] | None = None,
) -> Plan | Skip:
    """Decide for one search; raises engine-shaped 400s only for the bridge's own parameters."""
    translated = translate(settings, index, query, body)
    if translated.engine_owned is not None:
        # The engine's own pipeline reads this request (its ext.rerank included): it gets it as sent.
        return Skip(translated.engine_owned, translated.body, False, translated.query)
    query = translated.query
    options, body = take_rerank_options(translated.body, query)
    changed = translated.changed or (options != RerankOptions() and body is not None)
    clean_query = query.without({"rerank"})

    def skip(reason: str) -> Skip:
        return Skip(reason, body, changed, clean_query)

    if options.enabled is False:
        return skip("disabled_by_request")
    if touches_system(index):
        return skip("system_index")
    matched = match_rule(index, settings.rules)
    if matched is None and options.enabled is not True:
        return skip("no_rule")
    if matched is not None and not matched.enabled and options.enabled is not True:
        return skip("rule_disabled")
    fields = options.fields or (tuple(matched.fields) if matched else None)
    if not fields:
        raise bad_request("[ext.rerank.fields] is required: no rerank rule matches this index")
    rule = (matched or adhoc_rule(settings, index, fields)).model_copy(update=options.rule_updates())
    model = options.model or rule.model or settings.default_model()
    if model is None:
        raise bad_request("no rerank model is configured")
    if model not in settings.models:
        raise bad_request(f"[ext.rerank.model] unknown model [{model}]; known: {sorted(settings.models)}")

    size = _paging(query, body, "size", 10)
    offset = _paging(query, body, "from", 0)
    if size is None or offset is None or offset < 0 or size < 0:
        # The engine refuses it (or may): it gets the request as the client sent it, and answers itself.
        return skip("invalid_paging")
    if size == 0:
        return skip("size_zero")
    if body and "_source" in body and not _plain_source(body["_source"]):
        return skip("invalid_source")
    if query.has("scroll"):
        return skip("scroll")
    if query.has("sort"):
        return skip("sort")
    sorted_by_score = _score_sort_only(body.get("sort") if body else None)
    if sorted_by_score is False:
        return skip("sort")
    for feature in _OWN_ORDERING:
        if body and body.get(feature) is not None:
            return skip(feature)
    text = _query_text(options, matched, body, query, template_params)
    if text is None:
        return skip("no_query_text")
    text = scrub_surrogates(text)  # ext.rerank.query_text or a template parameter may hold a lone surrogate

    cap = min(rule.max_window, settings.limits.max_window)
    window = min(options.window or rule.window or settings.default_window(model), cap)
    if offset >= window and rule.min_score is None:
        # The page lies wholly past the reranked window, where the engine's order stands anyway. (With
        # min_score, only the window's hits that pass it are answered: such a page is empty, and planned.)
        return skip("beyond_window")
    rule = rule.model_copy(update={"model": model, "window": window})

    source = parse_source_spec(body.get("_source") if body else None, query.params())
    upstream_body = dict(body or {})
    upstream_body["from"] = 0
    upstream_body["size"] = max(window, offset + size)
    wide = widen(source, fields)
    upstream_query = clean_query.without(_PAGING_PARAMS)
    if wide != source:
        upstream_query = upstream_query.without(_SOURCE_PARAMS)
        upstream_body["_source"] = _source_body(wide)
    filter_path = query.get("filter_path")
    upstream_query = upstream_query.without({"filter_path"})
    return Plan(
        model=model,
        rule=rule,
        fusion=choose(rule),
        query_text=text,
        window=window,
        offset=offset,
        size=size,
        source=source,
        filter_path=filter_path,
        sorted_by_score=bool(sorted_by_score),
        upstream_body=upstream_body,
        upstream_query=upstream_query,
        dialect=translated.dialect,
    )


def _source_body(spec: SourceSpec) -> Any:
    if not spec.fetch:
        return False
    if not spec.includes and not spec.excludes:
        return True
    # Empty lists are left out: newer engines reject them.
    source: dict[str, list[str]] = {}
    if spec.includes:
        source["includes"] = list(spec.includes)
    if spec.excludes:
        source["excludes"] = list(spec.excludes)
    return source
