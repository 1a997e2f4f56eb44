"""The one table of search routes: which handler answers each :class:`SearchAPI` the interceptor takes.

``endpoints.classify`` names the API from method and path; this table says who answers it. ``planned`` routes
are searches the rules decide on (a request no rule can touch is relayed unparsed first); the others address an
async search by id, which only its handler can tell the bridge's from the engine's.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from aiohttp import web

from bridge.search.apis.async_search import AsyncSearches
from bridge.search.apis.msearch import msearch, msearch_template
from bridge.search.apis.search import search, search_template
from bridge.search.call import SearchCall
from bridge.search.endpoints import SearchAPI

__all__ = ["Handler", "Route", "SearchAPI", "route_table"]

Handler = Callable[[SearchCall], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Route:
    handler: Handler
    planned: bool = True
    """A search the rules decide on; False: an ``_async_search/<id>`` request, answered by its handler alone."""


def route_table(async_searches: AsyncSearches) -> Mapping[SearchAPI, Route]:
    """Every search API and its handler; the async ones share ``async_searches`` (its store), one per app."""
    return {
        SearchAPI.SEARCH: Route(search),
        SearchAPI.SEARCH_TEMPLATE: Route(search_template),
        SearchAPI.MSEARCH: Route(msearch),
        SearchAPI.MSEARCH_TEMPLATE: Route(msearch_template),
        SearchAPI.ASYNC_SUBMIT: Route(async_searches.submit),
        SearchAPI.ASYNC_GET: Route(async_searches.get, planned=False),
        SearchAPI.ASYNC_STATUS: Route(async_searches.status, planned=False),
        SearchAPI.ASYNC_DELETE: Route(async_searches.delete, planned=False),
    }
