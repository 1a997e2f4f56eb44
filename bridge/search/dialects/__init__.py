"""Other engines' reranking dialects, translated into the bridge's own (``ext.rerank``) before planning.

Pure functions: JSON in, the body the bridge plans with out. ``opensearch``: neural-search's ``rerank``
processor (``search_pipeline``, ``ext.rerank.query_context``); ``elastic``: the ``text_similarity_reranker``
retriever. A request in neither dialect comes back as it was.
"""

from __future__ import annotations

from typing import Any

from bridge.config import Settings
from bridge.search.dialects import elastic, opensearch
from bridge.search.dialects.translated import Translated
from bridge.search.request import QueryString

__all__ = ["Translated", "may_apply", "translate"]


def translate(
    settings: Settings, index: str | None, query: QueryString, body: dict[str, Any] | None
) -> Translated:
    """The search in the bridge's own dialect; raises engine-shaped 400s for a dialect's bad requests.

    A body with a ``retriever`` is Elastic's (OpenSearch has none); any other is read for OpenSearch's shapes.
    """
    if body is not None and "retriever" in body:
        return elastic.translate(settings, query, body)
    return opensearch.translate(settings, index, query, body)


def may_apply(settings: Settings, query: QueryString, raw_body: bytes) -> bool:
    """Cheap pre-check on the unparsed request: could a dialect ask for reranking here?

    Both dialects' bodies say ``rerank`` (``ext.rerank``, ``text_similarity_reranker``, a ``rerank`` processor),
    which the interceptor looks for anyway; what is left is a pipeline of the bridge's named by id.
    """
    return opensearch.may_apply(settings, query, raw_body)
