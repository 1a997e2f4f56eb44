"""The evaluation index: its mapping and an idempotent bulk load of the corpus, with a progress bar."""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from bridge.evaluation.collection import Collection, CollectionError

META_KEY = "rerank_bridge_eval"
FIELDS = ("title", "text")
Analyzer = Literal["english", "standard", "plain"]
ANALYZERS: tuple[str, ...] = ("english", "standard", "plain")

# Lower-cased runs of [a-z0-9], no stemming, no stop words: the tokenisation of classic IR baselines.
_PLAIN_ANALYSIS = {
    "tokenizer": {"alnum_runs": {"type": "pattern", "pattern": "[^A-Za-z0-9]+"}},
    "analyzer": {"plain": {"type": "custom", "tokenizer": "alnum_runs", "filter": ["lowercase"]}},
}


class IndexingError(Exception):
    """The index cannot be created or loaded; the message says what to do."""


@dataclass(frozen=True)
class IndexReport:
    """What ``ensure_index`` did."""

    name: str
    action: Literal["created", "recreated", "kept", "existing"]
    documents: int
    fingerprint: str
    body: dict[str, Any]


def index_body(
    analyzer: Analyzer = "english",
    k1: float | None = None,
    b: float | None = None,
    mapping_file: Path | None = None,
) -> dict[str, Any]:
    """Settings and mappings for the index: ``analyzer`` on title and text, or ``mapping_file`` as given.

    One shard, so every document shares one set of term statistics. ``k1``/``b`` set the index's default BM25
    similarity (also over a mapping file); left out, the engine's defaults (1.2, 0.75) or the file's hold.
    """
    if mapping_file is not None:
        try:
            body = json.loads(mapping_file.read_text(encoding="utf-8"))
        except OSError as error:
            raise IndexingError(f"cannot read mapping file {mapping_file}: {error.strerror}") from error
        except ValueError as error:
            raise IndexingError(f"mapping file {mapping_file} is not valid JSON: {error}") from error
        if not isinstance(body, dict) or not set(body) <= {"settings", "mappings", "aliases"}:
            raise IndexingError(
                f"mapping file {mapping_file}: expected a create-index body with 'settings' and/or 'mappings'"
            )
    else:
        settings: dict[str, Any] = {"index": {"number_of_shards": 1, "number_of_replicas": 0}}
        if analyzer == "plain":
            settings["analysis"] = copy.deepcopy(_PLAIN_ANALYSIS)
        body = {
            "settings": settings,
            "mappings": {"properties": {name: {"type": "text", "analyzer": analyzer} for name in FIELDS}},
        }
    if k1 is not None or b is not None:
        index_settings = body.setdefault("settings", {}).setdefault("index", {})
        if not isinstance(index_settings, dict):
            raise IndexingError("mapping file: 'settings.index' must be an object to set the BM25 similarity")
        similarity = index_settings.setdefault("similarity", {}).setdefault("default", {"type": "BM25"})
        if k1 is not None:
            similarity["k1"] = k1
        if b is not None:
            similarity["b"] = b
    return body


def content_fingerprint(collection: Collection, body: dict[str, Any]) -> str:
    """Same corpus bytes and same index body give the same fingerprint."""
    digest = hashlib.sha256(collection.fingerprint().encode())
    digest.update(json.dumps(body, sort_keys=True).encode())
    return digest.hexdigest()


def ensure_index(
    client: Any,
    collection: Collection,
    name: str,
    body: dict[str, Any],
    *,
    reindex: bool = False,
    load: bool = True,
    progress: bool = True,
    chunk_size: int = 500,
) -> IndexReport:
    """Create and load ``name`` unless it already holds this corpus under this body.

    An index this tool made earlier is rebuilt when its fingerprint or document count differs (a changed
    corpus or mapping, an interrupted load). Any other existing index is refused unless ``reindex``.
    ``load=False`` uses an existing index as it is (the user's own, e.g. production): nothing is written.
    """
    exists = bool(client.indices.exists(index=name))
    fingerprint = content_fingerprint(collection, body)
    if not load:
        if not exists:
            raise IndexingError(f"index {name!r} does not exist (drop --no-load to create and load it)")
        return IndexReport(name, "existing", _count(client, name), fingerprint, body)
    action: Literal["created", "recreated"] = "created"
    if exists:
        meta = _meta(client, name)
        if meta is None and not reindex:
            raise IndexingError(
                f"index {name!r} exists and was not created by rerank-bridge eval; "
                "pass --reindex to replace it, --no-load to evaluate it as it is, or --index to pick another name"
            )
        count = _count(client, name)
        if meta is not None and meta.get("fingerprint") == fingerprint and meta.get("complete") and (
            meta.get("documents") == count
        ):
            return IndexReport(name, "kept", count, fingerprint, body)
        client.indices.delete(index=name)
        action = "recreated"
    created = copy.deepcopy(body)
    mappings = created.setdefault("mappings", {})
    mappings["_meta"] = {**mappings.get("_meta", {}), META_KEY: {"fingerprint": fingerprint, "complete": False}}
    try:
        client.indices.create(index=name, body=created)
    except Exception as error:
        raise IndexingError(f"cannot create index {name!r}: {_reason(error)}") from error
    loaded = _bulk_load(client, collection, name, progress, chunk_size)
    client.indices.refresh(index=name)
    count = _count(client, name)
    if count != loaded:
        raise IndexingError(f"index {name!r}: loaded {loaded} documents but the index counts {count}")
    meta = {"fingerprint": fingerprint, "complete": True, "documents": count, "collection": collection.name}
    client.indices.put_mapping(index=name, body={"_meta": {**mappings.get("_meta", {}), META_KEY: meta}})
    return IndexReport(name, action, count, fingerprint, body)


def _bulk_load(client: Any, collection: Collection, name: str, progress: bool, chunk_size: int) -> int:
    from opensearchpy import helpers
    from tqdm import tqdm

    total = _line_count(collection.corpus_path)

    def actions() -> Iterator[dict[str, Any]]:
        for document in collection.documents():
            yield {
                "_op_type": "index",
                "_index": name,
                "_id": document.id,
                "_source": {"title": document.title, "text": document.text},
            }

    loaded = 0
    with tqdm(total=total, unit="doc", desc=f"indexing {name}", disable=not progress) as bar:
        try:
            for ok, item in helpers.streaming_bulk(
                client, actions(), chunk_size=chunk_size, raise_on_error=False, raise_on_exception=True
            ):
                if not ok:
                    raise IndexingError(f"bulk indexing into {name!r} failed: {json.dumps(item)[:500]}")
                loaded += 1
                bar.update(1)
        except (IndexingError, CollectionError):
            raise
        except Exception as error:
            raise IndexingError(f"bulk indexing into {name!r} failed: {_reason(error)}") from error
    return loaded


def _meta(client: Any, name: str) -> dict[str, Any] | None:
    mapping = client.indices.get_mapping(index=name)
    for definition in mapping.values():
        meta = definition.get("mappings", {}).get("_meta", {}).get(META_KEY)
        if isinstance(meta, dict):
            return meta
    return None


def _count(client: Any, name: str) -> int:
    return int(client.count(index=name)["count"])


def _line_count(path: Path) -> int:
    with path.open("rb") as handle:
        return sum(1 for line in handle if line.strip())


def _reason(error: Exception) -> str:
    info = getattr(error, "info", None)
    if isinstance(info, dict) and isinstance(info.get("error"), dict):
        return str(info["error"].get("reason", error))
    return str(error)
