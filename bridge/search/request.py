"""The parts of a search request the bridge reads or rewrites: query-string pairs and the ``ext.rerank`` block."""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_plus

from bridge.errors import BridgeHTTPError, bad_request

# Parameters the bridge consumes or re-applies itself; the engine never sees them on a reranked search.
BRIDGE_PARAMS = frozenset({"rerank"})


@dataclass(frozen=True)
class QueryString:
    """A raw query string kept as its original pieces, so untouched parameters reach the engine byte for byte."""

    pieces: tuple[str, ...]

    @classmethod
    def parse(cls, raw: str) -> QueryString:
        return cls(tuple(piece for piece in raw.split("&") if piece))

    def items(self) -> Iterable[tuple[str, str]]:
        for piece in self.pieces:
            key, _, value = piece.partition("=")
            yield unquote_plus(key), unquote_plus(value)

    def get(self, name: str) -> str | None:
        found = None
        for key, value in self.items():
            if key == name:
                found = value
        return found

    def params(self) -> dict[str, str]:
        return dict(self.items())

    def has(self, name: str) -> bool:
        return any(key == name for key, _ in self.items())

    def without(self, names: Iterable[str]) -> QueryString:
        drop = set(names)
        return QueryString(tuple(p for p in self.pieces if unquote_plus(p.partition("=")[0]) not in drop))

    def render(self) -> str:
        return ("?" + "&".join(self.pieces)) if self.pieces else ""


@dataclass(frozen=True)
class RerankOptions:
    """What a request says for itself in ``ext.rerank`` (or ``?rerank=``); None: not said."""

    enabled: bool | None = None
    query_text: str | None = None
    fields: tuple[str, ...] | None = None
    window: int | None = None
    model: str | None = None
    combine: str | None = None
    alpha: float | None = None
    normalization: str | None = None
    rank_constant: int | None = None
    min_score: float | None = None
    top_n: int | None = None
    score_transform: str | None = None

    def rule_updates(self) -> dict[str, Any]:
        """The rule fields this request overrides (``fields`` and the fusion keys), for ``model_copy``."""
        updates: dict[str, Any] = {name: getattr(self, name) for name in FUSION_KEYS}
        if self.fields is not None:
            updates["fields"] = list(self.fields)
        return {name: value for name, value in updates.items() if value is not None}


# The ext.rerank keys that are also rule fields of the same name, with the same meaning.
FUSION_KEYS = ("combine", "alpha", "normalization", "rank_constant", "min_score", "top_n", "score_transform")
_CHOICES: dict[str, tuple[str, ...]] = {
    "combine": ("replace", "linear", "rrf"),
    "normalization": ("min_max", "z_score", "none"),
    "score_transform": ("none", "positive"),
}
_KNOWN_KEYS = frozenset({"enabled", "query_text", "fields", "window", "model", *FUSION_KEYS})


def _flag(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("", "true"):
        return True
    if lowered == "false":
        return False
    raise bad_request(f"Failed to parse value [{value}] as only [true] or [false] are allowed.")


def take_rerank_options(
    body: dict[str, Any] | None, query: QueryString
) -> tuple[RerankOptions, dict[str, Any] | None]:
    """Read and remove ``ext.rerank`` (the engine would reject an unknown ext section) and ``?rerank``."""
    enabled_param = query.get("rerank")
    enabled = _flag(enabled_param) if enabled_param is not None else None
    if body is None or not isinstance(body.get("ext"), dict) or "rerank" not in body["ext"]:
        return RerankOptions(enabled=enabled), body
    stripped = copy.copy(body)
    ext = dict(stripped["ext"])
    raw = ext.pop("rerank")
    if ext:
        stripped["ext"] = ext
    else:
        del stripped["ext"]
    options = _parse_options(raw)
    if enabled is not None:
        options = dataclasses.replace(options, enabled=enabled)
    return options, stripped


def _parse_options(raw: Any) -> RerankOptions:
    if isinstance(raw, bool):
        return RerankOptions(enabled=raw)
    if not isinstance(raw, Mapping):
        raise _ext_error(f"[ext.rerank] must be an object or a boolean, got {type(raw).__name__}")
    unknown = set(raw) - _KNOWN_KEYS
    if unknown:
        raise _ext_error(f"[ext.rerank] unknown field [{sorted(unknown)[0]}]")
    enabled = raw.get("enabled", True)
    if not isinstance(enabled, bool):
        raise _ext_error("[ext.rerank.enabled] must be true or false")
    query_text = raw.get("query_text")
    if query_text is not None and not isinstance(query_text, str):
        raise _ext_error("[ext.rerank.query_text] must be a string")
    fields = raw.get("fields")
    if isinstance(fields, str):
        fields = [fields]
    if fields is not None and (
        not isinstance(fields, list) or not fields or not all(isinstance(f, str) and f for f in fields)
    ):
        raise _ext_error("[ext.rerank.fields] must be a non-empty list of field names")
    model = raw.get("model")
    if model is not None and not isinstance(model, str):
        raise _ext_error("[ext.rerank.model] must be a string")
    alpha = _number(raw, "alpha")
    if alpha is not None and not 0 <= alpha <= 1:
        raise _ext_error(f"[ext.rerank.alpha] must be between 0 and 1, got [{raw['alpha']}]")
    return RerankOptions(
        enabled=enabled,
        query_text=query_text,
        fields=tuple(fields) if fields else None,
        window=_positive_int(raw, "window"),
        model=model,
        combine=_choice(raw, "combine"),
        alpha=alpha,
        normalization=_choice(raw, "normalization"),
        rank_constant=_positive_int(raw, "rank_constant"),
        min_score=_number(raw, "min_score"),
        top_n=_positive_int(raw, "top_n"),
        score_transform=_choice(raw, "score_transform"),
    )


def _positive_int(raw: Mapping[str, Any], name: str) -> int | None:
    value = raw.get(name)
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise _ext_error(f"[ext.rerank.{name}] must be a positive integer, got [{value}]")
    return value


def _number(raw: Mapping[str, Any], name: str) -> float | None:
    value = raw.get(name)
    if value is None:
        return None
    number = _as_float(value)
    if number is None:
        raise _ext_error(f"[ext.rerank.{name}] must be a finite number, got [{value}]")
    return number


def _as_float(value: Any) -> float | None:
    """A JSON number as a finite float; None for anything else (an integer past float's range too)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def _choice(raw: Mapping[str, Any], name: str) -> str | None:
    value = raw.get(name)
    if value is not None and value not in _CHOICES[name]:
        allowed = ", ".join(_CHOICES[name])
        raise _ext_error(f"[ext.rerank.{name}] must be one of [{allowed}], got [{value}]")
    return value


def _ext_error(reason: str) -> BridgeHTTPError:
    return BridgeHTTPError(400, "x_content_parse_exception", reason)
