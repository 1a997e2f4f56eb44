"""The in-process bi-encoder scorer: cached vectors, the batcher for the rest, then one similarity per passage.

``score(query, passages, keys)`` looks the query's vector up by its text and each passage's by
(model, document key, text digest) (:mod:`bridge.scoring.vector_cache`); only the missing ones are embedded,
each distinct one once, through the same batcher (token-budget batches, backpressure, worker threads) as the
cross-encoder. The score is the similarity of the two vectors (:func:`~bridge.scoring.bi_encoder.similarities`):
with cached passages a request costs one query encoding and a matrix-vector product.

Passage embeddings that a request started are finished and cached even when that request gives up (its
timeout fails open): the work is the same for the next query that ranks those documents, so a window too cold
for one request's budget warms for the following ones. Concurrent requests that miss the same passage share one
embedding. Query encodings are dropped with their request, as cross-encoder pairs are.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

from bridge.scoring.base import ScoringError, ScoringObserver
from bridge.scoring.batcher import Batcher
from bridge.scoring.bi_encoder import BiEncoderModel, similarities
from bridge.scoring.cache import DIGEST_OFF_LOOP_CHARS, digest
from bridge.scoring.in_process import InProcessScorer
from bridge.scoring.settings import ModelSettings
from bridge.scoring.vector_cache import PassageKey, QueryKey, VectorCache, query_cache_size

_WARMUP_QUERY = "how does warm-up work"
_WARMUP_PASSAGES = (
    "Warm-up runs one small batch at start.",
    "The first request should not pay for lazy initialisation of kernels, thread pools and caches, "
    "so the scorer embeds a few texts of different lengths before it takes traffic.",
)


def _only(old: object, new: object) -> object:
    """Merge for the batcher: a text has exactly one vector."""
    return new


class BiEncoderScorer(InProcessScorer[BiEncoderModel, np.ndarray]):
    """A sentence-transformers embedding model in this process, behind the :class:`~bridge.scoring.base.Scorer`
    interface."""

    def __init__(self, name: str, settings: ModelSettings, observer: ScoringObserver | None = None) -> None:
        if settings.kind != "bi-encoder":
            raise ValueError(f"model {name!r} is a {settings.kind}; use LocalScorer (or build_scorer)")
        super().__init__(name, settings, observer)
        self._passages: VectorCache[PassageKey] = VectorCache(settings.cache_size)
        self._queries: VectorCache[QueryKey] = VectorCache(query_cache_size(settings.cache_size))
        self._inflight: dict[PassageKey, asyncio.Future[np.ndarray]] = {}
        self._fills: set[asyncio.Task[None]] = set()
        self.similarity = "dot"

    def _load(self) -> BiEncoderModel:
        model = BiEncoderModel(self.name, self.settings)
        self.similarity = model.similarity
        return model

    def _batcher_options(self) -> dict[str, Any]:
        return {"initial": None, "merge": _only}

    async def _warm_up(self, batcher: Batcher[np.ndarray]) -> None:
        # Straight to the batcher: warm-up texts must not occupy the caches.
        await asyncio.gather(
            batcher.submit("query", [_WARMUP_QUERY]),
            batcher.submit("document", list(_WARMUP_PASSAGES)),
        )

    @property
    def cached(self) -> tuple[int, int]:
        """(passage vectors, query vectors) held now."""
        return len(self._passages), len(self._queries)

    def clear_cache(self, which: Literal["all", "queries"] = "all") -> None:
        """Forget cached vectors: all of them, or the query vectors only (benchmarks of new queries)."""
        self._queries.clear()
        if which == "all":
            self._passages.clear()

    def _keys(
        self, query: str, passages: Sequence[str], keys: Sequence[str | None] | None
    ) -> tuple[QueryKey, list[PassageKey]]:
        identities = keys if keys is not None else [None] * len(passages)
        passage_keys = [
            (self.name, key, digest(text)) for key, text in zip(identities, passages, strict=True)
        ]
        return (self.name, digest(query)), passage_keys

    async def score(
        self, query: str, passages: Sequence[str], keys: Sequence[str | None] | None = None
    ) -> list[float]:
        """Similarity of the query's vector to each passage's; ``keys[i]`` identifies passage i's document."""
        batcher = self._started()
        if keys is not None and len(keys) != len(passages):
            raise ValueError(f"{len(keys)} keys for {len(passages)} passages")
        if not passages:
            return []
        if len(query) + sum(map(len, passages)) > DIGEST_OFF_LOOP_CHARS:
            query_key, passage_keys = await asyncio.to_thread(self._keys, query, passages, keys)
        else:
            query_key, passage_keys = self._keys(query, passages, keys)

        query_vector = self._queries.get(query_key)
        found: dict[PassageKey, np.ndarray] = {}
        waiting: dict[PassageKey, asyncio.Future[np.ndarray]] = {}
        todo: dict[PassageKey, str] = {}
        for key, text in zip(passage_keys, passages, strict=True):
            if key in found or key in waiting or key in todo:
                continue
            vector = self._passages.get(key)
            if vector is not None:
                found[key] = vector
            elif key in self._inflight:
                waiting[key] = self._inflight[key]
            else:
                todo[key] = text
        # Texts looked up (the query and each passage position), as the score cache counts pairs.
        hits = sum(key in found for key in passage_keys) + (query_vector is not None)
        self._observer.cache_lookup(self.name, hits, len(passages) + 1 - hits)

        if todo:
            waiting.update(self._start_fill(batcher, todo))
        if query_vector is None:
            (query_vector,) = await batcher.submit("query", [query])
            self._queries.put(query_key, query_vector)
        for key, future in waiting.items():
            # Shielded: a caller that gives up leaves the embedding to finish into the cache.
            found[key] = await asyncio.shield(future)
        matrix = np.stack([found[key] for key in passage_keys])
        scores: list[float] = similarities(query_vector, matrix, self.similarity).tolist()
        return scores

    def _start_fill(
        self, batcher: Batcher[np.ndarray], todo: dict[PassageKey, str]
    ) -> dict[PassageKey, asyncio.Future[np.ndarray]]:
        """Embed ``todo``'s passages in a task of their own, each key's vector delivered through a future that
        concurrent requests missing the same passage share."""
        loop = asyncio.get_running_loop()
        futures = {key: loop.create_future() for key in todo}
        self._inflight.update(futures)
        task = loop.create_task(self._fill(batcher, list(todo), list(todo.values()), futures))
        self._fills.add(task)
        task.add_done_callback(self._fills.discard)
        return futures

    async def _fill(
        self,
        batcher: Batcher[np.ndarray],
        keys: list[PassageKey],
        texts: list[str],
        futures: dict[PassageKey, asyncio.Future[np.ndarray]],
    ) -> None:
        try:
            vectors = await batcher.submit("document", texts)
        except BaseException as error:
            failure = (
                error if isinstance(error, ScoringError) else ScoringError(f"scorer {self.name}: {error!r}")
            )
            for key in keys:
                future = futures[key]
                if self._inflight.get(key) is future:
                    del self._inflight[key]
                if not future.done():
                    future.set_exception(failure)
                    future.exception()  # retrieved: nobody may be waiting any more
            if not isinstance(error, Exception):
                raise
            return
        for key, vector in zip(keys, vectors, strict=True):
            self._passages.put(key, vector)
            future = futures[key]
            if self._inflight.get(key) is future:
                del self._inflight[key]
            if not future.done():
                future.set_result(vector)

    async def _drain(self) -> None:
        # The closed batcher failed what still waited, so the fills end.
        if self._fills:
            await asyncio.gather(*list(self._fills), return_exceptions=True)
