"""A bounded LRU of scores, so paging through the same results never scores a pair twice.

Keys are digests, not texts: a 20,000-entry cache of multi-kilobyte passages would otherwise hold them all.
Entries are used from the event loop only, so they need no lock; computing keys touches none, so for huge
pages it runs on a thread.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import Generic, TypeVar

from bridge.scoring.base import ScoringObserver

CacheKey = tuple[str, bytes, bytes]
K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

# Texts beyond this many characters in one call are digested on a thread (hashlib releases the GIL), so a page
# of huge stored documents does not hold the event loop for a tenth of a second.
DIGEST_OFF_LOOP_CHARS = 1 << 20


def digest(text: str) -> bytes:
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()


class LRUCache(Generic[K, V]):
    """A bounded LRU; ``size`` 0 turns it off. Shared by the score cache and the bi-encoder's vector caches."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._entries: OrderedDict[K, V] = OrderedDict()

    @property
    def enabled(self) -> bool:
        return self.size > 0

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: K) -> bool:
        return key in self._entries

    def get(self, key: K) -> V | None:
        value = self._entries.get(key)
        if value is not None:
            self._entries.move_to_end(key)
        return value

    def put(self, key: K, value: V) -> None:
        if not self.enabled:
            return
        self._entries[key] = value
        self._entries.move_to_end(key)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        self._entries.clear()


class ScoreCache(LRUCache[CacheKey, float]):
    """LRU of scores keyed by (model, query digest, passage digest)."""

    def keys_for(self, model: str, query: str, passages: Sequence[str]) -> list[CacheKey]:
        query_digest = digest(query)
        return [(model, query_digest, digest(passage)) for passage in passages]


async def score_through_cache(
    cache: ScoreCache,
    model: str,
    query: str,
    passages: Sequence[str],
    compute: Callable[[list[str]], Awaitable[list[float]]],
    observer: ScoringObserver,
) -> list[float]:
    """Scores for ``passages``: cached ones from ``cache``, the rest (each distinct passage once) from ``compute``."""
    if not cache.enabled:
        return await compute(list(passages))
    if len(query) + sum(map(len, passages)) > DIGEST_OFF_LOOP_CHARS:
        keys = await asyncio.to_thread(cache.keys_for, model, query, passages)
    else:
        keys = cache.keys_for(model, query, passages)
    scores: list[float | None] = [cache.get(key) for key in keys]
    missing: dict[CacheKey, list[int]] = {}
    for index, (key, score) in enumerate(zip(keys, scores, strict=True)):
        if score is None:
            missing.setdefault(key, []).append(index)
    misses = sum(map(len, missing.values()))
    observer.cache_lookup(model, len(passages) - misses, misses)
    if missing:
        todo = [positions[0] for positions in missing.values()]
        fresh = await compute([passages[i] for i in todo])
        for (key, positions), score in zip(missing.items(), fresh, strict=True):
            cache.put(key, score)
            for i in positions:
                scores[i] = score
    result: list[float] = []
    for score in scores:
        assert score is not None
        result.append(score)
    return result
