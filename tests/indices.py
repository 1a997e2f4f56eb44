"""Creating and filling test indices on the real engine (tests and benches share it)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import aiohttp


async def create_index(
    http: aiohttp.ClientSession,
    url: str,
    name: str,
    docs: Sequence[Mapping[str, Any]] | Mapping[str, Mapping[str, Any]],
    mappings: Mapping[str, Any] | None = None,
) -> None:
    """(Re)create ``name`` with one shard and no replica, bulk-load ``docs`` (ids: list positions or mapping keys)
    and refresh, failing loudly on any engine error."""
    await http.delete(f"{url}/{name}")
    body: dict[str, Any] = {"settings": {"number_of_shards": 1, "number_of_replicas": 0}}
    if mappings is not None:
        body["mappings"] = mappings
    async with http.put(f"{url}/{name}", json=body) as response:
        assert response.status == 200, await response.text()
    items = docs.items() if isinstance(docs, Mapping) else ((str(i), doc) for i, doc in enumerate(docs))
    lines: list[str] = []
    for doc_id, doc in items:
        lines += [json.dumps({"index": {"_index": name, "_id": doc_id}}), json.dumps(doc)]
    async with http.post(
        f"{url}/_bulk?refresh=true",
        data="\n".join(lines) + "\n",
        headers={"Content-Type": "application/x-ndjson"},
    ) as response:
        assert response.status == 200, await response.text()
        assert not (await response.json())["errors"]
