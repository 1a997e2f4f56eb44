"""Other engines' reranking dialects, translated into the bridge's own (``ext.rerank``) before planning.

Pure functions: JSON in, the body the bridge plans with out. (Placeholder seam: the identity until the
OpenSearch and Elastic translators land.)
"""

from __future__ import annotations

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

    @property
    def changed(self) -> bool:
        return self.dialect is not None


def translate(
    settings: Settings, index: str | None, query: QueryString, body: dict[str, Any] | None
) -> Translated:
    """The search in the bridge's own dialect; raises engine-shaped 400s for a dialect's bad requests."""
    return Translated(body, query)


def may_apply(settings: Settings, query: QueryString, raw_body: bytes) -> bool:
    """Cheap pre-check on the unparsed request: could a dialect ask for reranking here?"""
    return False
