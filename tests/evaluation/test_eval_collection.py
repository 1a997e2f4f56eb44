"""Reading BEIR-layout collections: good input loads, bad input fails with the file, the line and the reason."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bridge.evaluation.collection import CollectionError, load_collection, read_corpus


def write(folder: Path, corpus: str | None = None, queries: str | None = None, qrels: str | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    docs = [{"_id": "d1", "title": "Wings", "text": "lift of wings"}, {"_id": "d2", "text": "drag"}]
    defaults = {
        "corpus.jsonl": "\n".join(json.dumps(d) for d in docs) + "\n",
        "queries.jsonl": json.dumps({"_id": "q1", "text": "wing lift"}) + "\n"
        + json.dumps({"_id": "q2", "text": "unjudged"}) + "\n"
        + json.dumps({"_id": "q3", "text": "only zero"}) + "\n",
        "qrels.tsv": "query-id\tcorpus-id\tscore\nq1\td1\t2\nq1\td2\t0\nq3\td2\t0\n",
    }
    for name, given in (("corpus.jsonl", corpus), ("queries.jsonl", queries), ("qrels.tsv", qrels)):
        (folder / name).write_text(defaults[name] if given is None else given, encoding="utf-8")
    return folder


def test_good_collection(tmp_path: Path) -> None:
    collection = load_collection(write(tmp_path / "mini"))
    assert collection.name == "mini"
    assert collection.queries == {"q1": "wing lift", "q2": "unjudged", "q3": "only zero"}
    assert collection.qrels == {"q1": {"d1": 2, "d2": 0}, "q3": {"d2": 0}}
    # Only queries with a relevant judgment are evaluated.
    assert collection.judged_queries() == ["q1"]
    documents = list(collection.documents())
    assert [(d.id, d.title, d.text) for d in documents] == [("d1", "Wings", "lift of wings"), ("d2", "", "drag")]
    assert len(collection.fingerprint()) == 64


def test_limit_and_order_follow_queries_file(tmp_path: Path) -> None:
    queries = "".join(json.dumps({"_id": f"q{i}", "text": f"text {i}"}) + "\n" for i in (3, 1, 2))
    qrels = "query-id corpus-id score\nq1 d1 1\nq2 d1 1\nq3 d2 1\n"  # spaces instead of tabs are accepted
    collection = load_collection(write(tmp_path / "c", queries=queries, qrels=qrels))
    assert collection.judged_queries() == ["q3", "q1", "q2"]
    assert collection.judged_queries(2) == ["q3", "q1"]


def test_numeric_ids_become_strings(tmp_path: Path) -> None:
    corpus = json.dumps({"_id": 7, "title": "t", "text": "x"}) + "\n"
    queries = json.dumps({"_id": 1, "text": "q"}) + "\n"
    collection = load_collection(write(tmp_path / "c", corpus=corpus, queries=queries, qrels="q c s\n1\t7\t1\n"))
    assert collection.judged_queries() == ["1"]
    assert [d.id for d in collection.documents()] == ["7"]


def test_unknown_judged_query_is_a_warning(tmp_path: Path) -> None:
    collection = load_collection(write(tmp_path / "c", qrels="query-id\tcorpus-id\tscore\nq1\td1\t1\nq9\td1\t1\n"))
    assert collection.judged_queries() == ["q1"]
    assert "q9" in collection.warnings[0]


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"qrels": "q1\td1\t1\n"}, "qrels.tsv:1: expected a header"),
        ({"qrels": "query-id\tcorpus-id\tscore\nq1\td1\n"}, "qrels.tsv:2: expected 3 columns"),
        ({"qrels": "query-id\tcorpus-id\tscore\nq1\td1\thigh\n"}, "qrels.tsv:2: score must be an integer"),
        ({"qrels": "query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\td1\t2\n"}, "qrels.tsv:3: query 'q1' judges"),
        ({"qrels": "query-id\tcorpus-id\tscore\n"}, "a header but no judgments"),
        ({"qrels": ""}, "qrels.tsv: empty"),
        ({"qrels": "query-id\tcorpus-id\tscore\nq2\td1\t0\n"}, "no query in queries.jsonl has a relevant"),
        ({"queries": '{"_id": "q1", "text": "a"}\n{"_id": "q1", "text": "b"}\n'}, "queries.jsonl:2: duplicate"),
        ({"queries": '{"_id": "q1"}\n'}, "queries.jsonl:1: 'text' must be a string (missing)"),
        ({"queries": '{"_id": "q1", "text": "  "}\n'}, "queries.jsonl:1: query 'q1' has empty text"),
        ({"queries": '{"text": "a"}\n'}, "queries.jsonl:1: '_id' must be a non-empty string"),
        ({"queries": '{"_id": "q1", "text": "a"}\n{not json\n'}, "queries.jsonl:2: not valid JSON"),
        ({"queries": '["q1", "a"]\n'}, "queries.jsonl:1: expected a JSON object, got list"),
        ({"queries": "\n\n"}, "queries.jsonl: no queries"),
    ],
)
def test_malformed_input_names_file_and_line(tmp_path: Path, files: dict[str, str], message: str) -> None:
    with pytest.raises(CollectionError) as caught:
        load_collection(write(tmp_path / "c", **files))
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("corpus", "message"),
    [
        ('{"_id": "d1", "text": "a"}\n{"_id": "d1", "text": "b"}\n', "corpus.jsonl:2: duplicate document id 'd1'"),
        ('{"_id": "d1", "title": "t"}\n', "corpus.jsonl:1: 'text' must be a string (missing)"),
        ('{"_id": "d1", "title": 3, "text": "x"}\n', "corpus.jsonl:1: 'title' must be a string (got int)"),
        ('{"_id": "", "text": "x"}\n', "corpus.jsonl:1: '_id' must be a non-empty string"),
        ('{"_id": "d1", "text": "x"}\n{"_id": "d2", "text": "y"\n', "corpus.jsonl:2: not valid JSON"),
        ("", "corpus.jsonl: no documents"),
    ],
)
def test_malformed_corpus_fails_while_streaming(tmp_path: Path, corpus: str, message: str) -> None:
    folder = write(tmp_path / "c", corpus=corpus)
    with pytest.raises(CollectionError) as caught:
        list(read_corpus(folder / "corpus.jsonl"))
    assert message in str(caught.value)


def test_missing_files_and_folder(tmp_path: Path) -> None:
    with pytest.raises(CollectionError, match="not a directory"):
        load_collection(tmp_path / "absent")
    folder = write(tmp_path / "c")
    (folder / "qrels.tsv").unlink()
    with pytest.raises(CollectionError, match=r"missing qrels\.tsv"):
        load_collection(folder)


def test_not_utf8(tmp_path: Path) -> None:
    folder = write(tmp_path / "c")
    (folder / "queries.jsonl").write_bytes(b'{"_id": "q1", "text": "\xff\xfe"}\n')
    with pytest.raises(CollectionError, match="not UTF-8"):
        load_collection(folder)
