"""OpenSearch's reranking dialect: neural-search's ``rerank`` response processor, in the shapes apps send it.

An app written for that processor names a search pipeline (``?search_pipeline=<id>``, the body's
``"search_pipeline": "<id>"``, or an inline ``"search_pipeline": {...}``) whose response processors hold
``{"rerank": {"ml_opensearch": {"model_id": M}, "context": {"document_fields": [F, ...]}}}``, and passes the text
to score against in ``ext.rerank.query_context`` (``query_text``, or ``query_text_path`` into the request).

The bridge runs that rerank processor itself, with the configured model ``M`` names (a model name or one of its
``aliases``), and leaves every other processor of the pipeline to the engine as an inline pipeline, so filters,
renames and truncations still happen where OpenSearch does them. A named pipeline is the bridge's only when its
config declares it (``search_pipelines``); any other name is the engine's own, and so is a request the engine's
pipeline reads ``ext.rerank`` for: those reach the engine exactly as sent.

Pure: JSON in, the body (and query string) the bridge plans with out; errors are OpenSearch-shaped 400s.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bridge.config import Settings
from bridge.errors import bad_request
from bridge.search.dialects.translated import Translated, ext_rerank, resolve_model, with_ext_rerank
from bridge.search.request import QueryString
from bridge.search.rules import match_rule

DIALECT = "opensearch_rerank"
PIPELINE_PARAM = "search_pipeline"
NO_PIPELINE = "_none"
"""OpenSearch's name for "no pipeline, not even the index's default one"."""
PROCESSOR_LISTS = ("request_processors", "response_processors", "phase_results_processors")
_QUERY_CONTEXT = "query_context"
_QUERY_TEXT = "query_text"
_QUERY_TEXT_PATH = "query_text_path"
# Where OpenSearch's re-serialised request holds a query's text that a request may write in short form:
# {"match": {"f": "x"}} reads back as {"match": {"f": {"query": "x", ...}}}, {"term": {"f": "x"}} as {"value": ...}.
_SHORT_FORM_LEAVES = frozenset({"query", "value"})


@dataclass(frozen=True)
class RerankProcessor:
    """The one ``rerank`` processor with ``ml_opensearch`` of a pipeline, as the bridge applies it."""

    model: str
    """A configured model's name (``model_id`` resolved through names and aliases)."""
    fields: tuple[str, ...]
    """``context.document_fields``: the passage fields."""


@dataclass(frozen=True)
class _Named:
    """How the request names its pipeline: by id (URL or body) or inline (body)."""

    origin: str
    """``url`` or ``body``."""
    name: str | None
    inline: Any = None


def translate(
    settings: Settings, index: str | None, query: QueryString, body: dict[str, Any] | None
) -> Translated:
    """The search in the bridge's dialect when it uses OpenSearch's rerank-processor shapes; else as it came."""
    rerank = ext_rerank(body)
    has_context = isinstance(rerank, Mapping) and _QUERY_CONTEXT in rerank
    named = _named_pipeline(query, body)
    if named is None:
        if not has_context:
            return Translated(body, query)
        if match_rule(index, settings.rules) is None:
            # No pipeline named and no rule: only the index's default pipeline (the engine's) can read it.
            return Translated(body, query, engine_owned="engine_pipeline")
        assert body is not None and isinstance(rerank, Mapping)
        own = _bridge_keys(rerank, _context_text(rerank[_QUERY_CONTEXT], body))
        return Translated(with_ext_rerank(body, own), query, DIALECT)
    pipeline = _pipeline_body(settings, named)
    processor_at = _bridge_processor(pipeline) if pipeline is not None else None
    if pipeline is None or processor_at is None:
        # The engine's pipeline (or one with no model rerank): what it reads in ext.rerank is its own.
        return (
            Translated(body, query, engine_owned="engine_pipeline")
            if has_context
            else Translated(body, query)
        )
    processor = parse_rerank_processor(settings, pipeline["response_processors"][processor_at])
    remaining = _without_processor(pipeline, processor_at)
    out = dict(body or {})
    # The body names what is left: inline processors, or none at all (so the index's default pipeline does not
    # run in place of the one the request named). A body key, as _msearch items have no query string.
    out[PIPELINE_PARAM] = remaining or NO_PIPELINE
    out_query = query.without({PIPELINE_PARAM})
    context_text = _context_text(rerank[_QUERY_CONTEXT], body or {}) if has_context else None
    if isinstance(rerank, bool):
        base: Mapping[str, Any] = {"enabled": rerank}
    elif isinstance(rerank, Mapping):
        base = rerank
    elif rerank is None:
        base = {}
    else:
        return Translated(body, query)  # not a shape of either dialect: the bridge's parser names the problem
    own = _bridge_keys(base, context_text)
    own.setdefault("enabled", True)
    own.setdefault("model", processor.model)
    own.setdefault("fields", list(processor.fields))
    # The processor replaces the engine's scores by the model's, whatever a bridge rule combines.
    own.setdefault("combine", "replace")
    return Translated(with_ext_rerank(out, own), out_query, DIALECT)


def may_apply(settings: Settings, query: QueryString, raw_body: bytes) -> bool:
    """Whether the request may name one of the bridge's pipelines (a body that says ``rerank`` is read anyway)."""
    if not settings.search_pipelines:
        return False
    name = query.get(PIPELINE_PARAM)
    if name is not None:
        return name in settings.search_pipelines
    return PIPELINE_PARAM.encode() in raw_body


def parse_rerank_processor(settings: Settings, processor: Any) -> RerankProcessor:
    """``{"rerank": {"ml_opensearch": {"model_id": ...}, "context": {"document_fields": [...]}}}``, checked as
    neural-search's factory checks it, with ``model_id`` resolved to a configured model."""
    config = processor.get("rerank") if isinstance(processor, Mapping) else None
    if not isinstance(config, Mapping):
        raise bad_request("[rerank] processor must be an object")
    ml = config.get("ml_opensearch")
    if not isinstance(ml, Mapping):
        raise bad_request("[rerank] [ml_opensearch] must be an object")
    model_id = ml.get("model_id")
    if model_id is None:
        raise bad_request("[rerank] [model_id] required property is missing")
    if not isinstance(model_id, str):
        raise bad_request("[rerank] [model_id] property isn't a string")
    context = config.get("context")
    if context is None:
        raise bad_request("[rerank] [context] required property is missing")
    if not isinstance(context, Mapping) or "document_fields" not in context:
        raise bad_request("[rerank] [context] must hold [document_fields]")
    fields = context["document_fields"]
    if not isinstance(fields, list):
        raise bad_request("document_fields must be a list of field names")
    if not fields:
        raise bad_request("document_fields must be nonempty")
    if not all(isinstance(field, str) and field for field in fields):
        raise bad_request("document_fields must be a list of field names")
    model = resolve_model(settings, model_id)
    if model is None:
        raise bad_request(
            f"[rerank] model_id [{model_id}] is not a model of the bridge: name one of its models or their aliases"
        )
    return RerankProcessor(model, tuple(fields))


def resolve_query_text_path(document: Any, path: str) -> Any:
    """``query_text_path`` as OpenSearch resolves it: dot-separated keys, list positions as numbers.

    OpenSearch reads the path on the request as it re-serialises it, where short forms are spelled out
    (``{"match": {"f": "x"}}`` becomes ``{"match": {"f": {"query": "x", ...}}}``); the bridge reads the request
    as sent, so a path that ends in ``query``/``value`` past such a short form finds its string too.
    """
    current = document
    keys = path.split(".")
    for position, key in enumerate(keys):
        if isinstance(current, Mapping):
            if key not in current:
                return None
            current = current[key]
        elif isinstance(current, list):
            if not key.isdecimal() or int(key) >= len(current):  # isdigit() holds for "²", which int() refuses
                return None
            current = current[int(key)]
        elif isinstance(current, str) and position == len(keys) - 1 and key in _SHORT_FORM_LEAVES:
            return current
        else:
            return None
    return current


def _named_pipeline(query: QueryString, body: Mapping[str, Any] | None) -> _Named | None:
    in_body = body.get(PIPELINE_PARAM) if body is not None else None
    if query.has(PIPELINE_PARAM):
        if isinstance(in_body, Mapping):
            raise bad_request(
                "Both named and inline search pipeline were specified. Please only specify one or the other."
            )
        return _Named("url", query.get(PIPELINE_PARAM))  # the URL's name wins over one in the body
    if body is None or PIPELINE_PARAM not in body:
        return None
    if isinstance(in_body, Mapping):
        return _Named("body", None, in_body)
    if isinstance(in_body, str) or (isinstance(in_body, int | float) and not isinstance(in_body, bool)):
        return _Named("body", str(in_body))
    return _Named("body", None)  # null, a list...: the engine judges it


def _pipeline_body(settings: Settings, named: _Named) -> Mapping[str, Any] | None:
    """The pipeline the bridge may take over: inline, or a configured one; None for the engine's own."""
    if named.inline is not None:
        return named.inline if isinstance(named.inline, Mapping) else None
    if named.name is None or named.name == NO_PIPELINE:
        return None
    configured = settings.search_pipelines.get(named.name)
    if configured is None:
        return None
    return configured.model_dump(exclude_none=True)


def _bridge_processor(pipeline: Mapping[str, Any]) -> int | None:
    processors = pipeline.get("response_processors")
    if not isinstance(processors, list):
        return None
    found = [
        position
        for position, processor in enumerate(processors)
        if isinstance(processor, Mapping)
        and isinstance(processor.get("rerank"), Mapping)
        and "ml_opensearch" in processor["rerank"]
    ]
    if len(found) > 1:
        raise bad_request(
            f"[rerank] the bridge applies one [rerank] processor with [ml_opensearch] per search pipeline, "
            f"this one has {len(found)}"
        )
    return found[0] if found else None


def _without_processor(pipeline: Mapping[str, Any], position: int) -> dict[str, Any]:
    """The pipeline left for the engine: its processors but the bridge's; empty lists (and all else) left out."""
    remaining: dict[str, Any] = {}
    for name in PROCESSOR_LISTS:
        processors = pipeline.get(name)
        if not isinstance(processors, list):
            continue
        kept = [
            copy.deepcopy(p)
            for at, p in enumerate(processors)
            if not (name == "response_processors" and at == position)
        ]
        if kept:
            remaining[name] = kept
    return remaining


def _context_text(context: Any, body: Mapping[str, Any]) -> str:
    """The text ``ext.rerank.query_context`` gives, as neural-search's query-context fetcher reads it."""
    if not isinstance(context, Mapping):
        raise bad_request(f"{_QUERY_CONTEXT} must be a map")
    if _QUERY_TEXT in context:
        if _QUERY_TEXT_PATH in context:
            raise bad_request(f'Cannot specify both "{_QUERY_TEXT}" and "{_QUERY_TEXT_PATH}"')
        text = context[_QUERY_TEXT]
        if not isinstance(text, str):
            raise bad_request(f"{_QUERY_CONTEXT}.{_QUERY_TEXT} must be a string")
        return text
    if _QUERY_TEXT_PATH in context:
        path = context[_QUERY_TEXT_PATH]
        if not isinstance(path, str):
            raise bad_request(f"{_QUERY_CONTEXT}.{_QUERY_TEXT_PATH} must be a string")
        found = resolve_query_text_path(body, path)
        if not isinstance(found, str):
            raise bad_request(f"{_QUERY_TEXT_PATH} must point to a string field")
        return found
    raise bad_request(f'Must specify either "{_QUERY_TEXT}" or "{_QUERY_TEXT_PATH}"')


def _bridge_keys(rerank: Mapping[str, Any], context_text: str | None) -> dict[str, Any]:
    """``ext.rerank`` in bridge keys only: ``query_context`` becomes ``query_text``; both given must agree."""
    own = {key: value for key, value in rerank.items() if key != _QUERY_CONTEXT}
    if context_text is None:
        return own
    given = own.get(_QUERY_TEXT)
    if given is not None and given != context_text:
        raise bad_request(
            f"[ext.rerank] [{_QUERY_TEXT}] and [{_QUERY_CONTEXT}] give different texts: give one of them"
        )
    own[_QUERY_TEXT] = context_text
    return own
