"""A test collection in BEIR layout: ``corpus.jsonl``, ``queries.jsonl`` and ``qrels.tsv`` (with a header)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CORPUS = "corpus.jsonl"
QUERIES = "queries.jsonl"
QRELS = "qrels.tsv"


class CollectionError(Exception):
    """The collection cannot be read; the message names the file, the line and what is wrong."""


@dataclass(frozen=True)
class Document:
    id: str
    title: str
    text: str


@dataclass
class Collection:
    """Queries and judgments in memory; the corpus is streamed from disk when needed."""

    path: Path
    queries: dict[str, str]
    """Query id to text, in file order."""
    qrels: dict[str, dict[str, int]]
    """Query id to {document id: relevance}, all judged rows (relevance 0 and negatives included)."""
    warnings: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.path.resolve().name

    @property
    def corpus_path(self) -> Path:
        return self.path / CORPUS

    def judged_queries(self, limit: int | None = None) -> list[str]:
        """Ids of the queries with at least one relevant (score > 0) judgment, in ``queries.jsonl`` order."""
        ids = [qid for qid in self.queries if any(rel > 0 for rel in self.qrels.get(qid, {}).values())]
        return ids if limit is None else ids[:limit]

    def documents(self) -> Iterator[Document]:
        """Every corpus document, in file order (checked line by line)."""
        yield from read_corpus(self.corpus_path)

    def fingerprint(self) -> str:
        """SHA-256 of the corpus file's bytes: what the index was loaded from."""
        digest = hashlib.sha256()
        with self.corpus_path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        return digest.hexdigest()


def load_collection(path: Path) -> Collection:
    """Read and check queries and judgments; the corpus is checked as it is streamed (and counted here)."""
    if not path.is_dir():
        raise CollectionError(f"{path}: not a directory (expected a BEIR collection: {CORPUS}, {QUERIES}, {QRELS})")
    missing = [name for name in (CORPUS, QUERIES, QRELS) if not (path / name).is_file()]
    if missing:
        raise CollectionError(f"{path}: missing {', '.join(missing)} (BEIR layout: {CORPUS}, {QUERIES}, {QRELS})")
    queries = read_queries(path / QUERIES)
    qrels = read_qrels(path / QRELS)
    collection = Collection(path=path, queries=queries, qrels=qrels)
    unknown = sorted(set(qrels) - set(queries))
    if unknown:
        collection.warnings.append(
            f"{QRELS}: {len(unknown)} judged query id(s) not in {QUERIES}, ignored (e.g. {unknown[0]!r})"
        )
    if not collection.judged_queries():
        raise CollectionError(f"{path}: no query in {QUERIES} has a relevant (score > 0) judgment in {QRELS}")
    return collection


def _json_lines(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    try:
        with path.open(encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except ValueError as error:
                    raise CollectionError(f"{path}:{number}: not valid JSON ({error})") from error
                if not isinstance(record, dict):
                    raise CollectionError(f"{path}:{number}: expected a JSON object, got {type(record).__name__}")
                yield number, record
    except UnicodeDecodeError as error:
        raise CollectionError(f"{path}: not UTF-8 text ({error})") from error


def _identifier(path: Path, number: int, record: dict[str, Any]) -> str:
    value = record.get("_id")
    if isinstance(value, bool) or not isinstance(value, str | int) or str(value).strip() == "":
        raise CollectionError(f"{path}:{number}: '_id' must be a non-empty string (got {value!r})")
    return str(value)


def _text(path: Path, number: int, record: dict[str, Any], key: str, required: bool) -> str:
    value = record.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str):
        shown = "missing" if key not in record else f"got {type(value).__name__}"
        raise CollectionError(f"{path}:{number}: '{key}' must be a string ({shown})")
    return value


def read_corpus(path: Path) -> Iterator[Document]:
    """Documents with ``_id``, optional ``title`` and required ``text``; duplicate ids are an error."""
    seen: set[str] = set()
    for number, record in _json_lines(path):
        doc_id = _identifier(path, number, record)
        if doc_id in seen:
            raise CollectionError(f"{path}:{number}: duplicate document id {doc_id!r}")
        seen.add(doc_id)
        yield Document(doc_id, _text(path, number, record, "title", False), _text(path, number, record, "text", True))
    if not seen:
        raise CollectionError(f"{path}: no documents")


def read_queries(path: Path) -> dict[str, str]:
    queries: dict[str, str] = {}
    for number, record in _json_lines(path):
        query_id = _identifier(path, number, record)
        if query_id in queries:
            raise CollectionError(f"{path}:{number}: duplicate query id {query_id!r}")
        text = _text(path, number, record, "text", True)
        if not text.strip():
            raise CollectionError(f"{path}:{number}: query {query_id!r} has empty text")
        queries[query_id] = text
    if not queries:
        raise CollectionError(f"{path}: no queries")
    return queries


def read_qrels(path: Path) -> dict[str, dict[str, int]]:
    """TREC-style judgments as BEIR writes them: a header line, then ``query-id corpus-id score`` rows."""
    qrels: dict[str, dict[str, int]] = {}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as error:
        raise CollectionError(f"{path}: not UTF-8 text ({error})") from error
    rows = [(number, line) for number, line in enumerate(lines, start=1) if line.strip()]
    if not rows:
        raise CollectionError(f"{path}: empty (expected a 'query-id corpus-id score' header and rows)")
    header_number, header = rows[0]
    columns = header.split("\t") if "\t" in header else header.split()
    if len(columns) != 3 or _is_int(columns[2]):
        raise CollectionError(
            f"{path}:{header_number}: expected a header 'query-id<TAB>corpus-id<TAB>score', got {header!r}"
        )
    for number, line in rows[1:]:
        parts = line.split("\t") if "\t" in line else line.split()
        parts = [part.strip() for part in parts]
        if len(parts) != 3 or not parts[0] or not parts[1]:
            raise CollectionError(f"{path}:{number}: expected 3 columns 'query-id corpus-id score', got {line!r}")
        query_id, doc_id, score = parts
        if not _is_int(score):
            raise CollectionError(f"{path}:{number}: score must be an integer, got {score!r}")
        judged = qrels.setdefault(query_id, {})
        if doc_id in judged and judged[doc_id] != int(score):
            raise CollectionError(
                f"{path}:{number}: query {query_id!r} judges document {doc_id!r} twice, differently"
            )
        judged[doc_id] = int(score)
    if not qrels:
        raise CollectionError(f"{path}: a header but no judgments")
    return qrels


def _is_int(text: str) -> bool:
    try:
        int(text)
    except ValueError:
        return False
    return True
