"""Elastic's reranking dialect: the ``text_similarity_reranker`` retriever, run by the bridge on any engine.

``{"retriever": {"text_similarity_reranker": {"retriever": {"standard": {...}}, "field": F, "inference_text": T,
"inference_id": M, "rank_window_size": N, "min_score": S}}}`` becomes a plain search of the inner retriever's
query, fetched ``N`` deep and reranked by the bridge's model ``M`` (a model name or alias) on field ``F``, the
model's score normalised as Elastic does (``max(s, 0) + min(exp(s), 1)``, ``score_transform: positive``) so that
``min_score`` thresholds mean what they mean on Elastic. As on Elastic, the answer holds at most ``N`` hits: a
page that reaches past them is cut, and an explicit ``size`` over ``N`` is refused with Elastic's error.

Other retrievers (``standard`` or ``knn`` alone, ``rrf``, a reranker of a reranker, a ``standard`` with its own
``sort``/``collapse``/``search_after``) are not the bridge's: they reach the engine exactly as sent.

Pure: JSON in, the body (and query string) the bridge plans with out; errors are Elastic-shaped.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from bridge.config import Settings
from bridge.errors import BridgeHTTPError
from bridge.search.combine import positive
from bridge.search.dialects.translated import Translated, ext_rerank, resolve_model, with_ext_rerank
from bridge.search.request import QueryString

DIALECT = "elastic_retriever"
RERANKER = "text_similarity_reranker"
DEFAULT_RANK_WINDOW_SIZE = 10
"""Elastic's ``RankBuilder.DEFAULT_RANK_WINDOW_SIZE``."""
DEFAULT_SIZE = 10
_RERANKER_KEYS = frozenset(
    {
        "retriever",
        "field",
        "inference_text",
        "inference_id",
        "rank_window_size",
        "min_score",
        "filter",
        "_name",
    }
)
_REQUIRED = ("retriever", "inference_text", "field")
_STANDARD_KEYS = frozenset(
    {"query", "filter", "search_after", "terminate_after", "sort", "min_score", "collapse", "_name"}
)
# What a standard retriever may hold that orders or pages its hits itself: the bridge's rerank would undo it.
_STANDARD_OWN_ORDER = ("sort", "search_after", "collapse")
_KNN_KEYS = frozenset(
    {
        "field",
        "query_vector",
        "query_vector_builder",
        "k",
        "num_candidates",
        "filter",
        "similarity",
        "rescore_vector",
        "_name",
    }
)
# SearchSourceBuilder.validate's list: what a request may not hold next to a retriever, in Elastic's order.
_NOT_WITH_RETRIEVER = ("query", "knn", "search_after", "terminate_after", "sort", "rank", "rescore")


def translate(settings: Settings, query: QueryString, body: dict[str, Any] | None) -> Translated:
    """The search in the bridge's dialect for a ``text_similarity_reranker`` the bridge can run; else as it
    came, marked for the engine when it holds a retriever at all."""
    if body is None or "retriever" not in body:
        return Translated(body, query)
    retriever = body["retriever"]
    if not isinstance(retriever, Mapping) or len(retriever) != 1 or RERANKER not in retriever:
        return Translated(body, query, engine_owned="retriever")
    spec = retriever[RERANKER]
    if not isinstance(spec, Mapping):
        raise _parse_error(f"[{RERANKER}] expected an object, got [{_json_kind(spec)}]")
    unknown = sorted(set(spec) - _RERANKER_KEYS)
    if unknown:
        raise _parse_error(f"[{RERANKER}] unknown field [{unknown[0]}]")
    missing = [key for key in _REQUIRED if key not in spec]
    if missing:
        raise _parse_error(f"[{RERANKER}] failed to parse: Required [{', '.join(missing)}]")
    field = _string(spec, "field")
    inference_text = _string(spec, "inference_text")
    inference_id = _string(spec, "inference_id") if "inference_id" in spec else None
    rank_window_size = _integer(spec, "rank_window_size") if "rank_window_size" in spec else None
    window = DEFAULT_RANK_WINDOW_SIZE if rank_window_size is None else rank_window_size
    min_score = _number(spec, "min_score") if "min_score" in spec else None
    prefilters = _filters(spec.get("filter"))

    inner = _inner_search(spec["retriever"], prefilters)
    if inner is None:
        return Translated(body, query, engine_owned="retriever")

    problems = [f"cannot specify [retriever] and {_listed(present)}"] if (present := _beside(body)) else []
    offset, size, explicit_size = _paging(query, body)
    if explicit_size and size is not None and size > window:
        problems.append(
            f"[{RERANKER}] requires [rank_window_size: {window}] be greater than or equal to [size: {size}]"
        )
    if _flag(query.get("allow_partial_search_results")):
        problems.append(f"cannot specify [{RERANKER}] and [allow_partial_search_results]")
    if query.has("scroll"):
        problems.append(f"cannot specify [{RERANKER}] and [scroll]")
    if problems:
        raise validation_failed(problems)
    if window < 1:
        raise BridgeHTTPError(
            400, "illegal_argument_exception", f"[{RERANKER}] requires [rank_window_size] greater than [0]"
        )
    model = None
    if inference_id is not None:
        model = resolve_model(settings, inference_id)
        if model is None:
            raise BridgeHTTPError(
                404, "resource_not_found_exception", f"Inference endpoint not found [{inference_id}]"
            )

    out = {key: value for key, value in body.items() if key != "retriever"}
    out.update(inner)
    out_query = query
    if offset is not None and size is not None:
        # Elastic answers the reranked window only: a page reaching past it is cut, one beyond it is empty.
        out["from"] = offset
        out["size"] = max(0, min(size, window - offset))
        out_query = query.without({"from", "size"})
    rerank: dict[str, Any] = dict(existing) if isinstance(existing := ext_rerank(body), Mapping) else {}
    rerank.update(
        enabled=True, query_text=inference_text, fields=[field], window=window, score_transform="positive"
    )
    # Elastic's reranker replaces the first-stage scores by the model's, whatever a bridge rule combines.
    rerank.setdefault("combine", "replace")
    if model is not None:
        rerank["model"] = model
    if min_score is not None:
        # Elastic compares min_score with the model's raw score, then normalises the hits it keeps; the bridge
        # compares with the final (normalised) score. positive() is strictly increasing: the same hits pass.
        rerank["min_score"] = positive(min_score)
    return Translated(with_ext_rerank(out, rerank), out_query, DIALECT)


def validation_failed(problems: Sequence[str]) -> BridgeHTTPError:
    """Elastic's ``ActionRequestValidationException``: ``Validation Failed: 1: a;2: b;``, a 400."""
    reason = "Validation Failed: " + "".join(f"{n}: {problem};" for n, problem in enumerate(problems, 1))
    return BridgeHTTPError(400, "action_request_validation_exception", reason)


def _inner_search(retriever: Any, prefilters: list[Any]) -> dict[str, Any] | None:
    """The plain-search keys of the reranker's inner retriever; None when the bridge does not run it."""
    if not isinstance(retriever, Mapping) or len(retriever) != 1:
        raise _parse_error(f"[{RERANKER}] [retriever] must hold exactly one retriever")
    ((name, spec),) = retriever.items()
    if not isinstance(spec, Mapping):
        raise _parse_error(f"[{name}] expected an object, got [{_json_kind(spec)}]")
    if name == "standard":
        return _standard(spec, prefilters)
    if name == "knn":
        return _knn(spec, prefilters)
    return None  # rrf, another reranker, a retriever of a plugin: the engine's


def _standard(spec: Mapping[str, Any], prefilters: list[Any]) -> dict[str, Any] | None:
    unknown = sorted(set(spec) - _STANDARD_KEYS)
    if unknown:
        raise _parse_error(f"[standard] unknown field [{unknown[0]}]")
    if any(spec.get(key) is not None for key in _STANDARD_OWN_ORDER):
        return None
    filters = _filters(spec.get("filter")) + prefilters
    query = spec.get("query")
    out: dict[str, Any] = {}
    if filters:
        clause: dict[str, Any] = {"filter": filters}
        if query is not None:
            clause["must"] = [query]
        out["query"] = {"bool": clause}
    elif query is not None:
        out["query"] = query
    for key in ("min_score", "terminate_after"):
        if spec.get(key) is not None:
            out[key] = spec[key]
    return out


def _knn(spec: Mapping[str, Any], prefilters: list[Any]) -> dict[str, Any]:
    unknown = sorted(set(spec) - _KNN_KEYS)
    if unknown:
        raise _parse_error(f"[knn] unknown field [{unknown[0]}]")
    knn = {key: value for key, value in spec.items() if key != "_name"}
    if prefilters:
        knn["filter"] = _filters(spec.get("filter")) + prefilters
    return {"knn": knn}


def _beside(body: Mapping[str, Any]) -> list[str]:
    present = []
    for key in _NOT_WITH_RETRIEVER:
        value = body.get(key)
        if value is None or (key == "terminate_after" and value == 0) or (key == "knn" and value == []):
            continue
        present.append(key)
    return present


def _listed(names: Sequence[str]) -> str:
    return "[" + ", ".join(names) + "]"


def _paging(query: QueryString, body: Mapping[str, Any]) -> tuple[int | None, int | None, bool]:
    """``from`` and ``size`` in effect (the URL's win), and whether a size was given; None where unreadable
    (the engine judges those itself)."""
    offset = _int_or_none(query.get("from")) if query.has("from") else _int_or_none(body.get("from", 0))
    if query.has("size"):
        return offset, _int_or_none(query.get("size")), True
    if "size" in body:
        return offset, _int_or_none(body["size"]), True
    return offset, DEFAULT_SIZE, False


def _int_or_none(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("+-").isdigit():
        return int(value.strip())
    return None


def _flag(value: str | None) -> bool:
    return value is not None and value.strip().lower() in ("", "true")


def _filters(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, list) else [value]


def _string(spec: Mapping[str, Any], key: str) -> str:
    value = spec[key]
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)  # Elastic's parser reads a number's text
    raise _parse_error(f"[{RERANKER}] failed to parse field [{key}]")


def _integer(spec: Mapping[str, Any], key: str) -> int:
    value = spec[key]
    number = _int_or_none(value)
    if number is None and isinstance(value, float) and math.isfinite(value):
        number = int(value)  # Jackson truncates a float read as an int
    if number is None:
        raise _parse_error(f"[{RERANKER}] failed to parse field [{key}]")
    return number


def _number(spec: Mapping[str, Any], key: str) -> float:
    value = spec[key]
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            number = float(value)
        except OverflowError:  # an integer past float's range: JSON allows it, a float field cannot hold it
            number = math.inf
        if math.isfinite(number):
            return number
    elif isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            number = math.nan
        if math.isfinite(number):
            return number
    raise _parse_error(f"[{RERANKER}] failed to parse field [{key}]")


def _json_kind(value: Any) -> str:
    if value is None:
        return "VALUE_NULL"
    if isinstance(value, list):
        return "START_ARRAY"
    if isinstance(value, str):
        return "VALUE_STRING"
    if isinstance(value, bool):
        return "VALUE_BOOLEAN"
    return "VALUE_NUMBER"


def _parse_error(reason: str) -> BridgeHTTPError:
    return BridgeHTTPError(400, "x_content_parse_exception", reason)
