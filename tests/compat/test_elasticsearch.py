"""The bridge in front of a real Elasticsearch (7.10.x or 8.x) instead of OpenSearch.

The engine is ``ELASTICSEARCH_URL`` when set, else one started by ``scripts/elasticsearch.sh``
(8.17.4 by default, ``ELASTICSEARCH_VERSION=7.10.2`` for the last OSS release) and stopped
afterwards; the module is skipped when the script cannot start one (no fitting Java, no Maven...).
Elasticsearch answers differ from OpenSearch's in ways the bridge must carry through untouched:
the ``X-Elastic-Product`` header (7.14+, official clients refuse answers without it), the
``compatible-with=8`` media type, ``_type`` in 7.x hits. The integ-test distributions have no
analysis-common, so the mappings use the standard analyzer; 8.x has no lang-mustache either.
"""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bridge.config import Settings
from tests.bridge_server import running_bridge
from tests.indices import delete_indices, scratch_name

pytestmark = pytest.mark.engine

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "elasticsearch.sh"

RULED, PLAIN = scratch_name("rr-docs"), scratch_name("es-plain")
DIRECT, BRIDGED = scratch_name("zzd"), scratch_name("zzb")  # passthrough cases, same length
WINDOW = 20
WORDS = (
    "wind flow pressure wing shock heat boundary layer laminar turbulent supersonic nozzle drag lift "
    "vortex plate cylinder jet mach number stream"
).split()
QUERY = {"match": {"text": "wind flow boundary layer"}}
COMPAT8 = "application/vnd.elasticsearch+json; compatible-with=8"

# ---------------------------------------------------------------- engine


@pytest.fixture(scope="module")
def es_url() -> Iterator[str]:
    """ELASTICSEARCH_URL, else scripts/elasticsearch.sh start (stopped afterwards if we started it)."""
    given = os.environ.get("ELASTICSEARCH_URL", "").strip().rstrip("/")
    if given:
        yield given
        return
    from tests.engine import start_with_script

    try:
        url, ours = start_with_script(SCRIPT)  # ours: this call launched it (not found running)
    except RuntimeError as error:  # its stderr (the reason) went to the terminal
        pytest.skip(f"{error}: no Elasticsearch to test against")
    try:
        yield url
    finally:
        if ours:
            subprocess.run([str(SCRIPT), "stop"], check=False)


@pytest.fixture(scope="module")
def es_version(es_url: str) -> tuple[int, int]:
    # Not GET /: the 8.x integ-test zip lacks the rest-root module and answers it with 405.
    with urllib.request.urlopen(f"{es_url}/_nodes/_local?filter_path=nodes.*.version", timeout=10) as r:
        nodes = json.load(r)["nodes"]
    major, minor = next(iter(nodes.values()))["version"].split(".")[:2]
    return int(major), int(minor)


def documents(count: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    return [
        {
            "title": " ".join(rng.choices(WORDS, k=rng.randint(2, 6))),
            "text": " ".join(rng.choices(WORDS, k=rng.randint(10, 40))),
            "year": 1950 + i % 50,
            "kind": rng.choice(["report", "paper", "note"]),
        }
        for i in range(count)
    ]


MAPPING = {
    "settings": {"number_of_shards": 1, "number_of_replicas": 0},
    "mappings": {
        "properties": {
            "title": {"type": "text"},
            "text": {"type": "text"},
            "year": {"type": "integer"},
            "kind": {"type": "keyword"},
        }
    },
}


async def create_index(http: aiohttp.ClientSession, url: str, name: str, docs: list[dict[str, Any]]) -> None:
    async with http.put(f"{url}/{name}", json=MAPPING) as response:
        assert response.status == 200, await response.text()
    lines = []
    for i, doc in enumerate(docs):
        lines += [json.dumps({"index": {"_index": name, "_id": str(i)}}), json.dumps(doc)]
    async with http.post(
        f"{url}/_bulk?refresh=true",
        data="\n".join(lines) + "\n",
        headers={"Content-Type": "application/x-ndjson"},
    ) as response:
        assert response.status == 200
        assert not (await response.json())["errors"]


@pytest.fixture(scope="module")
async def indices(es_url: str) -> AsyncIterator[None]:
    async with aiohttp.ClientSession() as http:
        await create_index(http, es_url, RULED, documents(80, 1))
        await create_index(http, es_url, PLAIN, documents(30, 2))
        try:
            yield
        finally:
            await delete_indices(http, es_url, RULED, PLAIN)


@pytest.fixture(scope="module")
async def bridge(es_url: str, tiny_model: Path) -> AsyncIterator[str]:
    settings = Settings(
        upstream={"url": es_url},
        models={"tiny": {"source": str(tiny_model), "dtype": "float32"}},
        rules=[{"indices": [scratch_name("rr-*")], "fields": ["title", "text"], "window": WINDOW}],
    )
    async with running_bridge(settings) as url:
        yield url


def ids(answer: dict[str, Any]) -> list[str]:
    return [hit["_id"] for hit in answer["hits"]["hits"]]


def expects_product_header(version: tuple[int, int]) -> bool:
    return version >= (7, 14)


# ---------------------------------------------------------------- (a) passthrough fidelity


@dataclass
class Case:
    name: str
    method: str
    path: str
    body: Any = None  # dict -> JSON, list -> NDJSON lines, None -> no body
    compare_body: bool = True


CASES = [
    Case("create index", "PUT", "/{p}-books", MAPPING),
    Case("create existing index (400)", "PUT", "/{p}-books", {}),
    Case(
        "bulk",
        "POST",
        "/_bulk?refresh=true",
        [
            {"index": {"_index": "{p}-books", "_id": "1"}},
            {"title": "The Wind in the Willows", "text": "river bank wind", "year": 1908, "kind": "a"},
            {"index": {"_index": "{p}-books", "_id": "2"}},
            {"title": "Winds of physics and flow", "text": "boundary layer flow", "year": 1950, "kind": "b"},
            {"create": {"_index": "{p}-books", "_id": "1"}},
            {"title": "duplicate id: a 409 item"},
        ],
    ),
    Case("doc get", "GET", "/{p}-books/_doc/1"),
    Case("doc get missing (404)", "GET", "/{p}-books/_doc/404"),
    Case("count", "GET", "/{p}-books/_count"),
    Case("search unruled index", "POST", "/{p}-books/_search", {"query": {"match": {"text": "wind flow"}}}),
    Case("search uri q", "GET", "/{p}-books/_search?q=title:wind&size=1"),
    Case("search parse error (400)", "POST", "/{p}-books/_search", {"query": {"nope": {}}}),
    Case("search missing index (404)", "GET", "/{p}-missing/_search"),
    Case(
        "msearch unruled",
        "POST",
        "/_msearch",
        [
            {"index": "{p}-books"},
            {"query": {"match_all": {}}},
            {"index": "{p}-missing"},
            {"query": {"match_all": {}}},
        ],
    ),
    Case(
        "cat indices json",
        "GET",
        "/_cat/indices/{p}-books?format=json&h=index,health,status,docs.count,pri,rep",
    ),
    Case("mapping", "GET", "/{p}-books/_mapping"),
    Case("head index", "HEAD", "/{p}-books"),
    Case("head missing index (404)", "HEAD", "/{p}-missing"),
    Case("unknown param (400)", "GET", "/{p}-books/_count?bogus=1"),
    Case("delete index", "DELETE", "/{p}-books"),
    Case("delete missing index (404)", "DELETE", "/{p}-books"),
]

VOLATILE = re.compile(rb'"(took|uuid|creation_date)"\s*:\s*("[^"]*"|\d+)')
UUID = re.compile(rb"(?<![A-Za-z0-9_-])[A-Za-z0-9_-]{22}(?![A-Za-z0-9_-])")


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes


async def send(http: aiohttp.ClientSession, base: str, case: Case, prefix: str) -> Answer:
    def fill(value: Any) -> bytes:
        return json.dumps(value).replace("{p}", prefix).encode()

    headers: dict[str, str] = {}
    data = None
    if isinstance(case.body, list):
        data = b"".join(fill(line) + b"\n" for line in case.body)
        headers["Content-Type"] = "application/x-ndjson"
    elif case.body is not None:
        data = fill(case.body)
        headers["Content-Type"] = "application/json"
    async with http.request(
        case.method, base + case.path.replace("{p}", prefix), data=data, headers=headers
    ) as r:
        return Answer(r.status, {k.lower(): v for k, v in r.headers.items()}, await r.read())


def normalised(answer: Answer, prefix: str) -> bytes:
    body = VOLATILE.sub(rb'"\1":"*"', answer.body.replace(f"{prefix}-".encode(), b"{p}-"))
    return UUID.sub(b"<uuid>", body)


@pytest.fixture
async def passthrough_indices(es_url: str) -> AsyncIterator[None]:
    """The passthrough cases create and delete their own indices; these are removed even when a case fails."""
    yield
    async with aiohttp.ClientSession() as http:
        await delete_indices(http, es_url, f"{DIRECT}-books", f"{BRIDGED}-books")


async def test_passthrough_answers_match_the_engine(
    es_url: str, bridge: str, es_version: tuple[int, int], passthrough_indices: None
) -> None:
    mismatches = []
    product_seen = []
    async with aiohttp.ClientSession() as http:
        for case in CASES:
            direct = await send(http, es_url, case, DIRECT)
            bridged = await send(http, bridge, case, BRIDGED)
            if direct.status != bridged.status:
                mismatches.append(
                    f"{case.name}: status {direct.status} != {bridged.status}: {bridged.body[:200]!r}"
                )
                continue
            compared = ["content-type", "warning", "x-elastic-product"]
            if case.method == "HEAD":
                compared.append("content-length")
            for header in compared:
                if direct.headers.get(header) != bridged.headers.get(header):
                    mismatches.append(
                        f"{case.name}: {header} {direct.headers.get(header)!r} != {bridged.headers.get(header)!r}"
                    )
            if bridged.headers.get("x-rerank", "skipped").startswith("applied"):
                mismatches.append(
                    f"{case.name}: X-Rerank {bridged.headers['x-rerank']!r} on an unruled index"
                )
            if case.compare_body and normalised(direct, DIRECT) != normalised(bridged, BRIDGED):
                mismatches.append(
                    f"{case.name}: body\n  direct {normalised(direct, DIRECT)[:300]!r}\n"
                    f"  bridge {normalised(bridged, BRIDGED)[:300]!r}"
                )
            product_seen.append(bridged.headers.get("x-elastic-product"))
    assert not mismatches, "\n".join(mismatches)
    if expects_product_header(es_version):
        assert product_seen == ["Elasticsearch"] * len(CASES)


# ---------------------------------------------------------------- (b) reranked search


async def test_ruled_search_is_reranked_in_elasticsearch_format(
    es_url: str, bridge: str, indices: None, es_version: tuple[int, int]
) -> None:
    body = {"query": QUERY, "size": WINDOW}
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{es_url}/{RULED}/_search", json=body) as response:
            assert response.status == 200
            direct, direct_headers = await response.json(), response.headers
        async with http.post(f"{bridge}/{RULED}/_search", json=body) as response:
            assert response.status == 200, await response.text()
            bridged, headers = await response.json(), response.headers
    assert headers["X-Rerank"] == f"applied; model=tiny; window={WINDOW}; combine=replace"
    assert len(ids(direct)) == WINDOW
    assert sorted(ids(bridged)) == sorted(ids(direct))
    # Elasticsearch's shape, as the engine gave it.
    assert set(bridged) == set(direct)
    assert bridged["hits"]["total"] == direct["hits"]["total"]
    assert set(bridged["hits"]["total"]) == {"value", "relation"}
    assert bridged["_shards"] == direct["_shards"] and bridged["timed_out"] is False
    assert isinstance(bridged["took"], int)
    by_id = {hit["_id"]: hit for hit in direct["hits"]["hits"]}
    for hit in bridged["hits"]["hits"]:
        assert set(hit) == set(by_id[hit["_id"]]), hit  # 7.x keeps "_type": "_doc"
        assert hit["_source"] == by_id[hit["_id"]]["_source"]
    scores = [hit["_score"] for hit in bridged["hits"]["hits"]]
    assert scores == sorted(scores, reverse=True) and bridged["hits"]["max_score"] == scores[0]
    assert headers.get("X-Elastic-Product") == direct_headers.get("X-Elastic-Product")
    if expects_product_header(es_version):
        assert headers.get("X-Elastic-Product") == "Elasticsearch"


async def test_compatible_with_8_media_type_is_kept(
    es_url: str, bridge: str, indices: None, es_version: tuple[int, int]
) -> None:
    """elasticsearch-py 8 sends this media type; a reranked answer must come back in it like the engine's."""
    if es_version < (8, 0):
        pytest.skip("compatible-with=8 is an 8.x media type")
    headers = {"Accept": COMPAT8, "Content-Type": COMPAT8}
    body = json.dumps({"query": QUERY, "size": 5})
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{es_url}/{RULED}/_search", data=body, headers=headers) as response:
            assert response.status == 200
            direct_type = response.headers["Content-Type"]
        async with http.post(f"{bridge}/{RULED}/_search", data=body, headers=headers) as response:
            assert response.status == 200, await response.text()
            assert response.headers["X-Rerank"].startswith("applied")
            assert response.headers.get("X-Elastic-Product") == "Elasticsearch"
            answer = json.loads(await response.read())
            bridged_type = response.headers["Content-Type"]
    assert len(answer["hits"]["hits"]) == 5
    assert bridged_type.replace(" ", "") == direct_type.replace(" ", ""), (direct_type, bridged_type)


# ---------------------------------------------------------------- (c) _msearch


async def test_msearch_reranks_only_the_ruled_item(es_url: str, bridge: str, indices: None) -> None:
    items = [
        ({"index": RULED}, {"query": QUERY, "size": WINDOW}),
        ({"index": PLAIN}, {"query": QUERY, "size": 5}),
    ]
    data = "".join(json.dumps(head) + "\n" + json.dumps(body) + "\n" for head, body in items)
    headers = {"Content-Type": "application/x-ndjson"}
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{es_url}/_msearch", data=data, headers=headers) as response:
            assert response.status == 200
            direct = (await response.json())["responses"]
        async with http.post(f"{bridge}/_msearch", data=data, headers=headers) as response:
            assert response.status == 200, await response.text()
            assert response.headers["X-Rerank"].startswith("applied")
            bridged = (await response.json())["responses"]
    assert len(bridged) == 2
    assert bridged[0]["status"] == 200 and sorted(ids(bridged[0])) == sorted(ids(direct[0]))
    assert bridged[0]["hits"]["total"] == direct[0]["hits"]["total"]
    assert bridged[1]["hits"] == direct[1]["hits"] and bridged[1]["status"] == direct[1]["status"]


# ---------------------------------------------------------------- search templates (7.x: lang-mustache added)


async def test_inline_search_template_is_reranked(es_url: str, bridge: str, indices: None) -> None:
    template = {
        "source": {"size": "{{size}}", "query": {"match": {"text": "{{query_text}}"}}},
        "params": {"query_text": "wind flow boundary layer", "size": 10},
    }
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{es_url}/_render/template", json=template) as response:
            if response.status != 200:
                pytest.skip(f"no lang-mustache in this Elasticsearch (_render/template: {response.status})")
        async with http.post(f"{es_url}/{RULED}/_search/template", json=template) as response:
            direct = await response.json()
        async with http.post(f"{bridge}/{RULED}/_search", json={"query": QUERY, "size": 10}) as response:
            reference = await response.json()
        async with http.post(f"{bridge}/{RULED}/_search/template", json=template) as response:
            assert response.status == 200, await response.text()
            assert response.headers["X-Rerank"] == f"applied; model=tiny; window={WINDOW}; combine=replace"
            answer = await response.json()
    assert len(ids(direct)) == 10  # the engine renders and runs the template itself
    assert ids(answer) == ids(reference)  # the bridge reranks it like the same plain search
