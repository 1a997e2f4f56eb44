"""The shared Cranfield collection (../shared/collections/cranfield) in a scratch index on the real engine, for
the end-to-end tests that rerank real text through a bridge: title and text analysed as English, as BEIR's
BM25 baseline does, and the index removed afterwards."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp

from tests.indices import create_index, delete_indices


@asynccontextmanager
async def cranfield_index(
    url: str, shared_dir: Path, index: str, *, queries: int, lines: int | None = None
) -> AsyncIterator[list[str]]:
    """Index the corpus (its first ``lines`` lines, all by default) as ``index`` (a scratch name) and give the
    text of the first ``queries`` queries; the index is deleted on exit."""
    folder = shared_dir / "collections" / "cranfield"
    corpus = [
        json.loads(line) for line in (folder / "corpus.jsonl").read_text().splitlines()[:lines] if line.strip()
    ]
    texts = [json.loads(line)["text"] for line in (folder / "queries.jsonl").read_text().splitlines()[:queries]]
    async with aiohttp.ClientSession() as http:
        english = {"type": "text", "analyzer": "english"}
        docs = {doc["_id"]: {"title": doc.get("title", ""), "text": doc.get("text", "")} for doc in corpus}
        await create_index(http, url, index, docs, {"properties": {"title": english, "text": english}})
        try:
            yield texts
        finally:
            await delete_indices(http, url, index)
