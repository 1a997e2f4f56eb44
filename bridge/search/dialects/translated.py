"""What every dialect translator returns, and the few helpers they share."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bridge.config import Settings
from bridge.search.request import QueryString


@dataclass(frozen=True)
class Translated:
    """A search in the bridge's own dialect."""

    body: dict[str, Any] | None
    """The body to plan with: a plain search whose ``ext.rerank`` holds bridge keys only."""
    query: QueryString
    """The query string to plan with (a ``search_pipeline`` the bridge takes over is rewritten or removed)."""
    dialect: str | None = None
    """Which dialect was translated (``opensearch_rerank``, ``elastic_retriever``), None when none."""
    engine_owned: str | None = None
    """Why the engine itself must get this request exactly as sent (its own pipeline reads ``ext.rerank``):
    the plan skips it with this reason, the body untouched. None for every other request."""

    @property
    def changed(self) -> bool:
        return self.dialect is not None


def resolve_model(settings: Settings, name: str) -> str | None:
    """The configured model a request names, by its name or one of its ``aliases``; None when none."""
    if name in settings.models:
        return name
    for model, model_settings in settings.models.items():
        if name in model_settings.aliases:
            return model
    return None


def ext_rerank(body: Mapping[str, Any] | None) -> Any:
    """The raw ``ext.rerank`` value of a body, or None when there is none."""
    if body is None or not isinstance(body.get("ext"), Mapping):
        return None
    return body["ext"].get("rerank")


def with_ext_rerank(body: Mapping[str, Any], rerank: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``body`` whose ``ext.rerank`` is ``rerank`` (other ``ext`` sections kept)."""
    out = dict(body)
    ext = dict(out["ext"]) if isinstance(out.get("ext"), Mapping) else {}
    ext["rerank"] = dict(rerank)
    out["ext"] = ext
    return out
