"""One module per search front door; each takes a :class:`~bridge.search.call.SearchCall` and answers it."""
