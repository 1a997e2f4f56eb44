"""``rerank-bridge eval --html``'s report.html, opened from disk in a real headless Chromium.

A real run (a tiny collection on the real OpenSearch, a tiny model through the in-process bridge, two modes)
writes report.html; the browser must show the same figures as report.json, each query's engine list as the
engine itself ranks it, reranked lists whose NDCG@10 is the report's, judged documents marked, and the titles
and query texts that carry markup (a ``<script>``, an ``<img onerror>``, a ``</script>`` meant to close the
report's inline data block) as text.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bridge.evaluation.metrics import evaluate
from bridge.evaluation.runner import QueryBuilder
from tests.browser.chromium import screenshot, wait_for
from tests.indices import scratch_name

pytestmark = [pytest.mark.engine, pytest.mark.slow, pytest.mark.browser]

REPO = Path(__file__).resolve().parents[2]
HOSTILE = {
    "d-script": "<script>window.__pwned=1</script>",
    "d-img": '<img src=x onerror="window.__pwned=2">',
    "d-close": "</script><script>window.__pwned=4</script>",
}
HOSTILE_QUERY = "<img src=x onerror=window.__pwned=3> shock wave"
MODES = ("replace", "rrf:60")


def collection(folder: Path) -> tuple[Path, dict[str, str], dict[str, dict[str, int]]]:
    """Twenty plain documents, the three hostile ones, five queries with graded judgments."""
    words = "wing flow pressure heat boundary layer shock wave electron physics theory model city people".split()
    docs = [
        {"_id": f"d{i}", "title": f"{words[i % 14]} {words[(i * 3) % 14]}", "text": " ".join(words[i % 7 : i % 7 + 6])}
        for i in range(20)
    ]
    docs += [
        {"_id": "d-script", "title": HOSTILE["d-script"], "text": "aircraft wing flow pressure"},
        {"_id": "d-img", "title": HOSTILE["d-img"], "text": "shock wave pressure on a wing"},
        {"_id": "d-close", "title": HOSTILE["d-close"], "text": "boundary layer heat and shock wave"},
    ]
    queries = {
        "q1": "aircraft wing flow",
        "q2": HOSTILE_QUERY,
        "q3": "boundary layer heat",
        "q4": "electron theory model",
        "q5": "pressure wing",
    }
    qrels = {
        "q1": {"d-script": 2, "d0": 1, "d7": 1},
        "q2": {"d-img": 2, "d-close": 1, "d6": 1},
        "q3": {"d-close": 2, "d4": 1, "d11": 0},
        "q4": {"d8": 1, "d15": 2},
        "q5": {"d2": 1, "d-img": 1, "d9": 2},
    }
    folder.mkdir(parents=True)
    (folder / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs), encoding="utf-8")
    (folder / "queries.jsonl").write_text(
        "".join(json.dumps({"_id": q, "text": t}) + "\n" for q, t in queries.items()), encoding="utf-8"
    )
    rows = [f"{q}\t{d}\t{g}\n" for q, judged in qrels.items() for d, g in judged.items()]
    (folder / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(rows), encoding="utf-8")
    return folder, queries, qrels


@pytest.fixture(scope="module")
def report_run(
    opensearch_url: str, tiny_model: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Path, dict[str, str], dict[str, dict[str, int]], str]]:
    """``rerank-bridge eval --html`` as a user runs it; yields (out dir, queries, qrels, index)."""
    work = tmp_path_factory.mktemp("eval-report")
    folder, queries, qrels = collection(work / "tiny")
    index = scratch_name("eval-report")
    out = work / "out"
    command = [
        sys.executable, "-m", "bridge", "eval", str(folder), "--upstream", opensearch_url, "--index", index,
        "--model", str(tiny_model), "--device", "cpu", "--combine", ",".join(MODES), "--window", "20",
        "--depth", "20", "--verify-sample", "2", "--no-progress", "--html", "--out", str(out),
    ]  # fmt: skip
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=REPO)
        assert done.returncode == 0, f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        assert (out / "report.html").is_file(), done.stdout[-2000:]
        yield out, queries, qrels, index
    finally:
        urllib.request.urlopen(
            urllib.request.Request(f"{opensearch_url}/{index}?ignore_unavailable=true", method="DELETE"), timeout=60
        ).read()


def engine_top10(opensearch_url: str, index: str, text: str) -> list[str]:
    """The engine's own ranking for the body eval sends (its QueryBuilder, default fields and type)."""
    body = QueryBuilder(["title", "text"], 20).body(text)
    request = urllib.request.Request(
        f"{opensearch_url}/{index}/_search", data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"}, method="POST",
    )  # fmt: skip
    with urllib.request.urlopen(request, timeout=60) as response:
        return [hit["_id"] for hit in json.loads(response.read())["hits"]["hits"]][:10]


def shown_queries(driver: Any) -> list[dict[str, Any]]:
    """Every ``article.query`` as drawn: id, text, NDCG line, and both lists' hits in display order."""
    return list(
        driver.execute_script(
            """
            const hits = ol => Array.from(ol.querySelectorAll(':scope > li.hit')).map(li => ({
              id: li.dataset.id, grade: li.getAttribute('data-grade'),
              title: li.querySelector('.title').textContent,
              move: li.querySelector('.move').getAttribute('data-move')}));
            return Array.from(document.querySelectorAll('#queries article.query')).map(a => ({
              id: a.dataset.queryId, text: a.querySelector('.query-text').textContent,
              ndcg: a.querySelector('.query-ndcg').textContent,
              engine: hits(a.querySelector('ol.engine-col')), reranked: hits(a.querySelector('ol.rerank-col'))}));
            """
        )
    )


def summary_rows(driver: Any) -> dict[str, list[str]]:
    return dict(
        driver.execute_script(
            """
            return Array.from(document.querySelectorAll('table.summary tbody tr')).map(tr =>
              [tr.querySelector('th').textContent, Array.from(tr.querySelectorAll('td')).map(td => td.textContent)]);
            """
        )
    )


def select(driver: Any, css: str, value: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.select import Select

    Select(driver.find_element(By.CSS_SELECTOR, css)).select_by_value(value)


def test_report_html_shows_the_run(
    browser: Any, report_run: tuple[Path, dict[str, str], dict[str, dict[str, int]], str], opensearch_url: str,
    tmp_path: Path,
) -> None:  # fmt: skip
    out, queries, qrels, index = report_run
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    browser.get((out / "report.html").as_uri())
    wait_for(browser, "#queries article.query")
    screenshot(browser, tmp_path / "shots", "report-top")
    screenshot(browser, tmp_path / "shots", "report-full", full_page=True)

    # Nothing from the data ran, and the inline data block was not cut short by a "</script>" title.
    assert browser.execute_script("return typeof window.__pwned") == "undefined"
    assert browser.execute_script("return document.querySelectorAll('main img, main script').length") == 0
    assert browser.execute_script("return typeof window.RerankCompare.renderReport") == "function"

    # The summary table: BM25 and one row per mode, the figures report.json holds (4 decimals).
    rows = summary_rows(browser)
    assert list(rows) == ["BM25", *MODES]
    metrics = ("ndcg@10", "mrr@10", "recall@100")
    assert [cell.split()[0] for cell in rows["BM25"][:3]] == [f"{report['metrics']['bm25'][m]:.4f}" for m in metrics]
    for label in MODES:
        entry = report["modes"][label]
        assert [cell.split()[0] for cell in rows[label][:3]] == [f"{entry['metrics'][m]:.4f}" for m in metrics]
        wtl = entry["per_query_ndcg@10"]
        assert rows[label][3] == f"{wtl['wins']}/{wtl['ties']}/{wtl['losses']}"
        assert rows[label][-1] == f"{len(queries)}/{len(queries)}"  # X-Rerank applied on every query
    # The change chart: one panel per mode, one bar per query.
    assert browser.execute_script("return document.querySelectorAll('#chart svg rect.bar').length") == (
        len(MODES) * len(queries)
    )

    # Per query, first mode (the select's default): the engine's own top 10, a reranked top 10 whose NDCG@10
    # is the report's, every judged document marked with its grade, hostile text shown as text.
    for label in MODES:
        select(browser, "#mode", label)
        drawn = shown_queries(browser)
        assert [q["id"] for q in drawn] == list(queries)
        for query in drawn:
            qid = query["id"]
            assert query["text"] == queries[qid]
            engine_ids = [hit["id"] for hit in query["engine"]]
            reranked_ids = [hit["id"] for hit in query["reranked"]]
            assert engine_ids == engine_top10(opensearch_url, index, queries[qid]), qid
            per_query = report["per_query"][qid]
            for ids, want in ((engine_ids, per_query["bm25"]["ndcg@10"]),
                              (reranked_ids, per_query["modes"][label]["ndcg@10"])):  # fmt: skip
                assert evaluate({qid: qrels[qid]}, {qid: ids}).per_query[qid]["ndcg@10"] == pytest.approx(want, abs=1e-6)  # report.json: 6 decimals
            assert f"{per_query['modes'][label]['ndcg@10']:.4f}" in query["ndcg"] and label in query["ndcg"]
            for hit in query["engine"] + query["reranked"]:
                grade = qrels[qid].get(hit["id"])
                assert hit["grade"] == (None if grade is None else str(grade)), (qid, hit)
                if hit["id"] in HOSTILE:
                    assert hit["title"].startswith(HOSTILE[hit["id"]]), hit
            for hit in query["reranked"]:
                if hit["id"] in engine_ids and hit["move"] is not None:
                    assert int(hit["move"]) == engine_ids.index(hit["id"]) - reranked_ids.index(hit["id"])
        if label == "replace":
            assert any(q["engine"] != q["reranked"] for q in drawn)  # the model really reordered something
    shown_titles = {hit["id"] for q in shown_queries(browser) for hit in q["engine"] + q["reranked"]}
    assert set(HOSTILE) <= shown_titles  # all three hostile documents are on the page

    # The filter: "worse than BM25" keeps exactly the queries the report counts as losses for the mode shown.
    select(browser, "#mode", MODES[0])
    select(browser, "#filter", "worse")
    losses = [q for q, v in report["per_query"].items() if v["modes"][MODES[0]]["ndcg@10"] < v["bm25"]["ndcg@10"] - 1e-9]
    assert [q["id"] for q in shown_queries(browser)] == losses
    assert browser.execute_script("return document.getElementById('shown').textContent") == (
        f"{len(losses)} of {len(queries)} queries"
    )
    assert browser.execute_script("return typeof window.__pwned") == "undefined"

    # "Order: worst first" is the chart's order (NDCG@10 change, ties in file order); every bar of the chart
    # links to its query's lists.
    select(browser, "#filter", "all")
    select(browser, "#sort", "worst")
    change = {q: v["modes"][MODES[0]]["ndcg@10"] - v["bm25"]["ndcg@10"] for q, v in report["per_query"].items()}
    worst_first = sorted(change, key=lambda q: change[q])
    drawn_order = [q["id"] for q in shown_queries(browser)]
    assert [round(change[q], 5) for q in drawn_order] == [round(change[q], 5) for q in worst_first]
    targets = browser.execute_script(
        """
        return Array.from(document.querySelectorAll('#chart svg a')).map(a => {
          const target = document.getElementById((a.getAttribute('href') || '').slice(1));
          return target && target.matches('article.query') ? target.dataset.queryId : null;
        });
        """
    )
    assert len(targets) == len(MODES) * len(queries) and sorted(targets) == sorted(list(queries) * len(MODES))
