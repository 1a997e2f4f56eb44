"""Bounded LRUs of a bi-encoder's vectors: passages by (model, document key, text digest), queries by text.

A passage's vector depends on its text alone, so a document costs one encoding however many queries rank it.
The key carries the document's identity (``"<_index>/<_id>"``, or None when the caller has none) as well as
the digest of the text actually embedded, so an updated document (same key, new text) is embedded afresh and
two documents never share an entry by accident of identity. The bound is in entries; each entry holds one
float32 vector (``dimension x 4`` bytes: 1.5 KiB for a 384-dimension MiniLM), so 20,000 entries take ~30 MiB.
Used from the event loop only, so no lock.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import TypeVar

import numpy as np

from bridge.scoring.cache import LRUCache

K = TypeVar("K", bound=Hashable)

PassageKey = tuple[str, str | None, bytes]
QueryKey = tuple[str, bytes]

# Query vectors kept per passage vector entry: queries repeat less than the documents they rank (a page of
# results shares its query; the documents recur across many queries), so they get a smaller share.
QUERY_CACHE_DIVISOR = 8


class VectorCache(LRUCache[K, np.ndarray]):
    """LRU of float32 vectors; ``size`` 0 turns it off."""

    @property
    def nbytes(self) -> int:
        """Memory the vectors take (the keys add about 100 bytes an entry)."""
        return sum(vector.nbytes for vector in self._entries.values())


def query_cache_size(cache_size: int) -> int:
    """Query vectors kept for a ``cache_size`` of passage vectors (at least one when caching is on)."""
    return max(1, cache_size // QUERY_CACHE_DIVISOR) if cache_size > 0 else 0
