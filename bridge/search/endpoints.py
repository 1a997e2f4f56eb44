"""Which engine APIs are searches the bridge may rerank, recognised from method and raw path.

Which handler answers each :class:`SearchAPI` is ``routes.py``'s one table.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from urllib.parse import unquote


class SearchAPI(enum.Enum):
    SEARCH = "_search"
    MSEARCH = "_msearch"
    SEARCH_TEMPLATE = "_search/template"
    MSEARCH_TEMPLATE = "_msearch/template"
    # Elasticsearch's async search (Kibana's Discover and Lens); the values are the routes metrics name.
    ASYNC_SUBMIT = "_async_search"
    ASYNC_GET = "_async_search/{id}"
    ASYNC_STATUS = "_async_search/status/{id}"
    ASYNC_DELETE = "_async_search/{id}:delete"


@dataclass(frozen=True)
class SearchEndpoint:
    api: SearchAPI
    index: str | None
    """The decoded index expression from the path (``a,b``, ``logs-*``), None for cluster-wide."""
    raw_index: str | None = None
    """The same, as the client encoded it: what the engine gets back."""
    async_id: str | None = None
    """The decoded id of ``_async_search/<id>`` (get, status, delete)."""

    def path(self, api: str) -> str:
        """The engine path for ``api`` on this endpoint's indices."""
        return f"/{self.raw_index}/{api}" if self.raw_index is not None else f"/{api}"

    @property
    def route(self) -> str:
        return self.api.value


_ALL = "_all"
_SUFFIXES = {
    ("_search",): SearchAPI.SEARCH,
    ("_msearch",): SearchAPI.MSEARCH,
    ("_search", "template"): SearchAPI.SEARCH_TEMPLATE,
    ("_msearch", "template"): SearchAPI.MSEARCH_TEMPLATE,
}


def classify(method: str, raw_path: str) -> SearchEndpoint | None:
    """The search API a request targets, or None for everything the bridge only relays.

    Paths the engine does not route as a search are left to it, so the client gets the engine's own answer: a
    leading ``//`` (OpenSearch reads ``//docs/_search`` as a URI authority and answers 400) or an empty segment
    inside the path (``/docs//_search``: 400). Trailing slashes are routed as without them. ``_all`` is the
    cluster-wide search, as ``/_search`` is.
    """
    path = raw_path.split("?", 1)[0]
    if path.startswith("//"):
        return None
    parts = path.strip("/").split("/")
    if "" in parts:
        return None
    if "_async_search" in parts:
        return _classify_async(method, parts)
    if method not in ("GET", "POST"):
        return None
    for length in (2, 1):
        if len(parts) < length:
            continue
        api = _SUFFIXES.get(tuple(parts[-length:]))
        if api is None:
            continue
        prefix = parts[:-length]
        if len(prefix) > 1:
            # e.g. /index/_doc/_search is not a search endpoint; the engine answers it.
            return None
        if not prefix:
            return SearchEndpoint(api, None)
        index = unquote(prefix[0])
        if index == _ALL:
            return SearchEndpoint(api, None, prefix[0])
        if index.startswith("_"):
            return None
        return SearchEndpoint(api, index, prefix[0])
    return None


_ASYNC_BY_ID = {"GET": SearchAPI.ASYNC_GET, "DELETE": SearchAPI.ASYNC_DELETE}


def _classify_async(method: str, parts: list[str]) -> SearchEndpoint | None:
    """Elasticsearch's routes: ``POST [<index>/]_async_search``, ``GET|DELETE _async_search/<id>``,
    ``GET _async_search/status/<id>``. Any other method or shape is the engine's to answer."""
    if parts[-1] == "_async_search" and len(parts) <= 2:
        if method != "POST":
            return None
        if len(parts) == 1:
            return SearchEndpoint(SearchAPI.ASYNC_SUBMIT, None)
        index = unquote(parts[0])
        if index == _ALL:
            return SearchEndpoint(SearchAPI.ASYNC_SUBMIT, None, parts[0])
        if index.startswith("_"):
            return None
        return SearchEndpoint(SearchAPI.ASYNC_SUBMIT, index, parts[0])
    if parts[0] != "_async_search":
        return None
    if len(parts) == 2 and method in _ASYNC_BY_ID:
        return SearchEndpoint(_ASYNC_BY_ID[method], None, async_id=unquote(parts[1]))
    if len(parts) == 3 and parts[1] == "status" and method == "GET":
        return SearchEndpoint(SearchAPI.ASYNC_STATUS, None, async_id=unquote(parts[2]))
    return None
