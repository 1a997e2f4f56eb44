"""``rerank-bridge eval`` against the real engine: idempotent loading, BM25 as the references say, end to end."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from bridge.config import UpstreamSettings
from bridge.engine_access import opensearch_client
from bridge.evaluation.collection import load_collection
from bridge.evaluation.indexing import IndexingError, ensure_index, index_body
from bridge.evaluation.metrics import METRICS, evaluate
from bridge.evaluation.runner import QueryBuilder, Searcher
from tests.indices import scratch_name

pytestmark = pytest.mark.engine

REPO = Path(__file__).resolve().parents[2]
# The settings that reproduce the collections' reference BM25 (k1=0.9, b=0.4, lower-cased [a-z0-9] runs).
REFERENCE_FLAGS = ["--analyzer", "plain", "--bm25-k1", "0.9", "--bm25-b", "0.4"]


def tiny_collection(folder: Path, texts: list[str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "corpus.jsonl").write_text(
        "".join(json.dumps({"_id": f"d{i}", "title": f"doc {i}", "text": t}) + "\n" for i, t in enumerate(texts))
    )
    (folder / "queries.jsonl").write_text(json.dumps({"_id": "q1", "text": "wing"}) + "\n")
    (folder / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td0\t1\n")
    return folder


def test_loading_is_idempotent(opensearch_url: str, tmp_path: Path) -> None:
    client = opensearch_client(UpstreamSettings(url=opensearch_url))
    name = scratch_name("eval-idempotent")
    foreign = f"{name}-foreign"
    try:
        collection = load_collection(tiny_collection(tmp_path / "c", ["wing lift", "drag", "flutter"]))
        body = index_body("plain", 0.9, 0.4)
        first = ensure_index(client, collection, name, body, progress=False)
        assert (first.action, first.documents) == ("created", 3)
        meta = client.indices.get_mapping(index=name)[name]["mappings"]["_meta"]["rerank_bridge_eval"]
        assert meta == {"fingerprint": first.fingerprint, "complete": True, "documents": 3, "collection": "c"}
        settings = client.indices.get_settings(index=name)[name]["settings"]["index"]
        assert settings["similarity"]["default"] == {"type": "BM25", "k1": "0.9", "b": "0.4"}
        assert ensure_index(client, collection, name, body, progress=False).action == "kept"
        # Another mapping or another corpus: the index this tool made is rebuilt.
        assert ensure_index(client, collection, name, index_body("english"), progress=False).action == "recreated"
        changed = load_collection(tiny_collection(tmp_path / "c", ["wing lift", "drag"]))
        again = ensure_index(client, changed, name, index_body("english"), progress=False)
        assert (again.action, again.documents) == ("recreated", 2)
        # An index loaded halfway (no complete mark) is rebuilt too.
        client.index(index=name, id="extra", body={"text": "x"}, refresh=True)
        assert ensure_index(client, changed, name, index_body("english"), progress=False).action == "recreated"
        assert ensure_index(client, changed, name, index_body("english"), load=False).action == "existing"
        # Someone else's index is never replaced without --reindex.
        client.indices.create(index=foreign, body={"settings": {"number_of_replicas": 0}})
        with pytest.raises(IndexingError, match="not created by rerank-bridge eval"):
            ensure_index(client, changed, foreign, body, progress=False)
        assert ensure_index(client, changed, foreign, body, reindex=True, progress=False).action == "recreated"
        with pytest.raises(IndexingError, match="does not exist"):
            ensure_index(client, changed, f"{name}-absent", body, load=False)
    finally:
        # Exact names only: the index, the foreign one, and "-absent" (never created: load=False writes nothing).
        for created in (name, foreign, f"{name}-absent"):
            client.indices.delete(index=created, ignore_unavailable=True)
        client.close()


def reference_ndcg(readme: Path) -> float:
    found = re.search(r"BM25 sanity run[^=]*nDCG@10 = ([0-9]+\.[0-9]+)", readme.read_text(), re.S)
    assert found, f"no reference BM25 figure in {readme}"
    return float(found.group(1))


async def bm25_run(url: str, index: str, queries: dict[str, str]) -> dict[str, list[str]]:
    builder = QueryBuilder(["title", "text"], 100)
    async with aiohttp.ClientSession() as session:
        searcher = Searcher(session, url, index, {"Content-Type": "application/json"})
        run: dict[str, list[str]] = {}
        for query_id, text in queries.items():
            answer, _ = await searcher.search(builder.body(text))
            assert answer.error is None, answer.error
            run[query_id] = answer.ids
    return run


@pytest.mark.slow
@pytest.mark.parametrize("name", ["cranfield", "nfcorpus", "vaswani"])
def test_bm25_matches_the_reference_figures(opensearch_url: str, shared_dir: Path, name: str) -> None:
    """The default query (multi_match over title and text) on the plain-analyzer, k1=0.9 b=0.4 index."""
    folder = shared_dir / "collections" / name
    collection = load_collection(folder)
    client = opensearch_client(UpstreamSettings(url=opensearch_url))
    index = scratch_name(f"eval-{name}")  # the body rerank-bridge eval uses, on this run's own index
    try:
        ensure_index(client, collection, index, index_body("plain", 0.9, 0.4), progress=False)
        query_ids = collection.judged_queries()
        run = asyncio.run(bm25_run(opensearch_url, index, {q: collection.queries[q] for q in query_ids}))
    finally:
        client.indices.delete(index=index, ignore_unavailable=True)
        client.close()
    ndcg = evaluate(collection.qrels, run).means["ndcg@10"]
    assert ndcg == pytest.approx(reference_ndcg(folder / "README.md"), abs=0.03)


@pytest.mark.slow
def test_eval_end_to_end_on_a_cranfield_slice(
    opensearch_url: str, shared_dir: Path, shared_model: Path, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    out = tmp_path / "out"
    index = scratch_name("eval-cranfield-slice")

    def remove_index() -> None:
        client = opensearch_client(UpstreamSettings(url=opensearch_url))
        client.indices.delete(index=index, ignore_unavailable=True)
        client.close()

    request.addfinalizer(remove_index)
    command = [
        sys.executable, "-m", "bridge", "eval", str(shared_dir / "collections" / "cranfield"),
        "--upstream", opensearch_url, "--model", str(shared_model), "--index", index,
        *REFERENCE_FLAGS, "--queries", "30", "--window", "30", "--verify-sample", "5",
        "--combine", "replace,linear:0.5,rrf", "--out", str(out), "--no-progress",
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=900, cwd=REPO)
    assert done.returncode == 0, f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    assert "NDCG@10" in done.stdout and "5/5 sampled windows" in done.stdout

    report = json.loads((out / "report.json").read_text())
    assert report["run"]["queries"] == 30 and len(report["per_query"]) == 30
    for path in ("bm25", "reranked"):
        assert set(report["metrics"][path]) == set(METRICS)
        assert all(0.0 <= value <= 1.0 for value in report["metrics"][path].values())
        assert report["latency_ms"][path]["count"] == 30
    assert report["metrics"]["bm25"]["ndcg@10"] > 0.2
    assert sum(report["per_query_ndcg@10"].values()) == 30
    # The reranked path went through the bridge and was reranked there, every time.
    assert report["bridge"]["x_rerank"] == {"applied": 30, "not_applied": {}, "total": 30}
    modes = report["modes"]
    assert list(modes) == ["replace", "linear:0.5:min_max", "rrf:60"]
    for label, combine in (("replace", "replace"), ("linear:0.5:min_max", "linear"), ("rrf:60", "rrf")):
        assert all(
            q["x_rerank"][label] == f"applied; model=eval; window=30; combine={combine}"
            for q in report["per_query"].values()
        )
        assert modes[label]["x_rerank"] == {"applied": 30, "not_applied": {}, "total": 30}
        assert modes[label]["latency_ms"]["count"] == 30 and modes[label]["rerank_ms"]["count"] == 30
        # Reranking the top 30 of 100 keeps the same 100 hits, so recall cannot move.
        assert modes[label]["metrics"]["recall@100"] == report["metrics"]["bm25"]["recall@100"]
    assert report["errors"]["bm25"] == report["errors"]["reranked"] == 0
    assert report["metrics"]["reranked"] == modes["replace"]["metrics"]
    # The later modes read the first one's scores from the bridge's cache: no model time of their own.
    assert modes["rrf:60"]["rerank_ms"]["p50"] < modes["replace"]["rerank_ms"]["p50"] / 10
    verify = report["verify"]
    assert verify["queries"] == 5 and verify["all_agree"], verify
    assert verify["bridge_score_vs_reference"]["max_abs_difference"] < 1e-3
    assert (out / "ndcg_change.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
