"""Test data on a real engine: uniquely named scratch indices, created, filled and removed by the tests themselves.

A developer may point the tests at an engine that holds their own data (``OPENSEARCH_URL``), so a test never
deletes or overwrites anything it did not create: every index, alias or template name a test uses comes from
:func:`scratch_name` (the ``rbtest-<run id>-`` prefix, unique per test run), creating fails rather than replace
an existing index, and cleanup deletes exact names only (no wildcards: Elasticsearch 8 refuses them anyway).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping, Sequence
from typing import Any

import aiohttp

TEST_PREFIX = "rbtest"
RUN_ID = secrets.token_hex(4)  # one per test process: two runs against one engine never share a name


def scratch_name(label: str) -> str:
    """``rbtest-<run id>-<label>``: the name of an index/alias/template that this test run owns."""
    return f"{TEST_PREFIX}-{RUN_ID}-{label}"


async def create_index(
    http: aiohttp.ClientSession,
    url: str,
    name: str,
    docs: Sequence[Mapping[str, Any]] | Mapping[str, Mapping[str, Any]],
    mappings: Mapping[str, Any] | None = None,
    *,
    replace: bool = False,
) -> None:
    """Create ``name`` (use a :func:`scratch_name`) with one shard and no replica, bulk-load ``docs`` (ids: list
    positions or mapping keys) and refresh, failing loudly on any engine error. An existing index is an error,
    never silently replaced: ``replace=True`` is for a caller whose index names are its own (a benchmark on its
    own engine)."""
    if replace:
        await (await http.delete(f"{url}/{name}", params={"ignore_unavailable": "true"})).release()
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


async def delete_indices(http: aiohttp.ClientSession, url: str, *names: str) -> None:
    """Delete exactly these scratch indices (missing ones are fine): cleanup never reaches beyond the run's own."""
    for name in names:
        assert name.startswith(f"{TEST_PREFIX}-{RUN_ID}-"), f"refusing to delete {name}: not created by this run"
        async with http.delete(f"{url}/{name}", params={"ignore_unavailable": "true"}) as response:
            assert response.status in (200, 404), await response.text()
