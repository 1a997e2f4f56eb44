"""The parts of a search request the bridge reads or rewrites: query-string pairs and the ``ext.rerank`` block."""

from __future__ import annotations

import copy
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
    """What a request says for itself in ``ext.rerank`` (or ``?rerank=``)."""

    enabled: bool | None = None
    query_text: str | None = None
    fields: tuple[str, ...] | None = None
    window: int | None = None
    model: str | None = None


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
        options = RerankOptions(enabled, options.query_text, options.fields, options.window, options.model)
    return options, stripped


def _parse_options(raw: Any) -> RerankOptions:
    if isinstance(raw, bool):
        return RerankOptions(enabled=raw)
    if not isinstance(raw, Mapping):
        raise _ext_error(f"[ext.rerank] must be an object or a boolean, got {type(raw).__name__}")
    unknown = set(raw) - {"enabled", "query_text", "fields", "window", "model"}
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
    window = raw.get("window")
    if window is not None and (isinstance(window, bool) or not isinstance(window, int) or window < 1):
        raise _ext_error(f"[ext.rerank.window] must be a positive integer, got [{window}]")
    model = raw.get("model")
    if model is not None and not isinstance(model, str):
        raise _ext_error("[ext.rerank.model] must be a string")
    return RerankOptions(enabled, query_text, tuple(fields) if fields else None, window, model)


def _ext_error(reason: str) -> BridgeHTTPError:
    return BridgeHTTPError(400, "x_content_parse_exception", reason)
