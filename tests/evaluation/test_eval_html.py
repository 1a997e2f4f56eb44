"""``eval --html``: report.html holds the summary, the change chart and every query's two top-10 lists, drawn by
the compare page's own script from embedded JSON that no document title can break out of."""

from __future__ import annotations

import base64
import hashlib
import json
import random
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from bridge.evaluation.collection import load_collection, read_qrels
from bridge.evaluation.html import TOP, anchors, change_chart, embed_json, render_html, report_data
from bridge.evaluation.metrics import evaluate, win_tie_loss
from bridge.evaluation.runner import Answer, ModeRun
from bridge.server.compare import static_text
from tests.evaluation.eval_command import run_eval
from tests.indices import scratch_name

REPO = Path(__file__).resolve().parents[2]
COMPARE_JS = REPO / "bridge" / "server" / "static" / "compare" / "compare.js"
HOSTILE = '</script><script>window.pwned = 1</script><img src=x onerror="window.pwned = 2"> & <!-- wing'


def write_collection(folder: Path, documents: int = 30, queries: int = 4) -> Path:
    words = "wing flow pressure heat boundary layer shock wave electron physics theory model city people".split()
    folder.mkdir(parents=True)
    docs = [
        {"_id": f"d{i}", "title": f"{words[i % 14]} {words[(i * 3) % 14]}", "text": " ".join(words[i % 7 : i % 7 + 6])}
        for i in range(documents)
    ]
    docs[3] = {"_id": "d3", "title": HOSTILE, "text": "wing flow pressure heat boundary layer shock wave"}  # a top hit
    (folder / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs), encoding="utf-8")
    texts = [{"_id": f"q{i}", "text": f"{words[i]} {words[i + 1]}"} for i in range(queries)]
    (folder / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in texts), encoding="utf-8")
    rows = [f"q{i}\td{(i * 7) % documents}\t{1 + i % 2}" for i in range(queries)] + [f"q{i}\td3\t2" for i in range(queries)]
    (folder / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\n" + "\n".join(rows) + "\n", encoding="utf-8")
    return folder


def synthetic(
    tmp_path: Path, window: int = 12, labels: tuple[str, ...] = ("replace", "rrf:60")
) -> tuple[dict[str, Any], ModeRun, Any]:
    """A report as ``build_report`` makes it (the keys the HTML reads, real ir-measures values) and its run:
    each mode reorders the engine's first ``window`` hits and says so in X-Rerank, as the bridge does."""
    collection = load_collection(write_collection(tmp_path / "tiny"))
    pick = random.Random(3)
    ids = [f"d{i}" for i in range(30)]
    engine: dict[str, Answer] = {}
    modes: dict[str, dict[str, Answer]] = {label: {} for label in labels}
    for query_id in collection.queries:
        order = ["d3", *pick.sample(ids[:3] + ids[4:], 19)]  # the hostile title is always shown
        engine[query_id] = Answer(ids=order, scores=[20.0 - i for i in range(20)])
        for label in modes:
            reordered = pick.sample(order[:window], window) + order[window:]
            scores = [1.0 - i / 40 for i in range(window)] + engine[query_id].scores[window:]
            header = f"applied; model=tiny-ce; window={window}; combine={label.split(':')[0]}"
            modes[label][query_id] = Answer(ids=reordered, scores=scores, x_rerank=header)
    run = ModeRun(engine=engine, modes=modes, wall_s=1.0)
    bm25 = evaluate(collection.qrels, {q: a.ids for q, a in engine.items()})
    per_mode = {label: evaluate(collection.qrels, {q: a.ids for q, a in answers.items()}) for label, answers in modes.items()}
    stats = {"count": 4, "p50": 3.0, "p95": 4.0}
    report = {
        "created": "2026-12-01T00:00:00+00:00",
        "collection": {"name": "tiny"},
        "index": {"name": "eval-tiny"},
        "model": {"label": "tiny-ce", "kind": "cross-encoder"},
        "run": {"queries": 4, "window": 12, "depth": 20, "gain": "exponential"},
        "metrics": {"bm25": bm25.means},
        "latency_ms": {"bm25": stats},
        "modes": {
            label: {
                "label": label,
                "combine": label.split(":")[0],
                "metrics": per_mode[label].means,
                "change": {m: per_mode[label].means[m] - bm25.means[m] for m in bm25.means},
                "per_query_ndcg@10": win_tie_loss(bm25.per_query, per_mode[label].per_query),
                "latency_ms": stats,
                "rerank_ms": stats,
                "x_rerank": {"applied": 4, "not_applied": {}, "total": 4},
            }
            for label in modes
        },
        "verify": {"skipped": "not in this test"},
        "per_query": {
            q: {
                "bm25": bm25.per_query[q],
                "modes": {label: per_mode[label].per_query[q] for label in modes},
                "x_rerank": {label: modes[label][q].x_rerank for label in modes},
            }
            for q in collection.queries
        },
    }
    return report, run, collection


def embedded(page: str) -> Any:
    [raw] = re.findall(r'<script type="application/json" id="report-data">(.*?)</script>', page, flags=re.S)
    return json.loads(raw)


def test_report_html_holds_the_data_and_a_hostile_title_stays_data(tmp_path: Path) -> None:
    report, run, collection = synthetic(tmp_path)
    data = report_data(report, run, collection, ["title", "text"])
    page = render_html(report, data)
    assert embedded(page) == data
    assert data["modes"] == ["replace", "rrf:60"] and data["replace_modes"] == ["replace"]
    assert data["docs"]["d3"].startswith(HOSTILE)  # the title as stored, whole
    # Nothing of it is markup: the only element closers are the page's own two scripts' and one style's.
    assert page.count("</script") == 2 and page.count("<script") == 2 and page.count("</style") == 1
    assert "<img" not in page and "<!-- wing" not in page
    # The inlined script and stylesheet are the compare page's own, and the policy lets only them run.
    script, style = static_text("compare.js"), static_text("compare.css")
    assert f"<script>{script}</script>" in page and f"<style>{style}</style>" in page
    digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    [policy] = re.findall(r'http-equiv="Content-Security-Policy" content="([^"]+)"', page)
    assert policy.startswith("default-src &#x27;none&#x27;") and f"sha256-{digest}" in policy
    assert "unsafe-inline" not in policy


def test_each_query_has_both_top_tens_with_ranks_moves_and_judgments(tmp_path: Path) -> None:
    report, run, collection = synthetic(tmp_path)
    data = report_data(report, run, collection, ["title", "text"])
    assert [q["id"] for q in data["queries"]] == list(collection.queries)
    for query in data["queries"]:
        engine = run.engine[query["id"]]
        assert query["ndcg"]["bm25"] == report["per_query"][query["id"]]["bm25"]["ndcg@10"]
        for label, pair in query["columns"].items():
            mode = run.modes[label][query["id"]]
            assert [h["_id"] for h in pair["engine"]] == engine.ids[:TOP]
            assert [h["_id"] for h in pair["reranked"]] == mode.ids[:TOP]
            for hit in pair["engine"] + pair["reranked"]:
                assert hit["engine_rank"] == engine.ids.index(hit["_id"]) + 1
                assert hit["rerank_rank"] == mode.ids.index(hit["_id"]) + 1
                assert hit["move"] == hit["engine_rank"] - hit["rerank_rank"]
                assert hit["engine_score"] == engine.scores[hit["engine_rank"] - 1]
                assert hit["final_score"] == mode.scores[hit["rerank_rank"] - 1]
        shown = {h["_id"] for pair in query["columns"].values() for side in pair.values() if isinstance(side, list)
                 for h in side}  # fmt: skip
        judged = collection.qrels[query["id"]]
        assert query["judged"] == {doc: grade for doc, grade in judged.items() if doc in shown}
        assert set(query["judged"]) <= set(data["docs"])


def test_the_change_chart_has_one_bar_per_query_and_mode_coloured_by_outcome(tmp_path: Path) -> None:
    report, _, _ = synthetic(tmp_path)
    svg = change_chart(report)
    assert svg.startswith("<svg") and svg.endswith("</svg>")
    assert svg.count('class="bar"') == len(report["per_query"]) * len(report["modes"])
    wins = sum(entry["per_query_ndcg@10"]["wins"] for entry in report["modes"].values())
    losses = sum(entry["per_query_ndcg@10"]["losses"] for entry in report["modes"].values())
    assert svg.count('fill="#2e7d32"><title>') == wins and svg.count('fill="#c62828"><title>') == losses


def all_hits(query: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(label, hit) for label, pair in query["columns"].items() for hit in pair["engine"] + pair["reranked"]]


def test_fused_modes_show_the_model_scores_of_the_same_querys_replace_answer(tmp_path: Path) -> None:
    """rrf answers only fused scores; the model's score of each window document comes from the replace answer
    (its window hits' _score), and a hit past the window (rank 9 and 10 here) has none."""
    report, run, collection = synthetic(tmp_path, window=8)
    data = report_data(report, run, collection, ["title", "text"])
    for query in data["queries"]:
        replace = run.modes["replace"][query["id"]]
        model = dict(zip(replace.ids[:8], replace.scores[:8], strict=True))
        fused_differs = False
        for label, hit in all_hits(query):
            in_window = hit["rerank_rank"] is not None and hit["rerank_rank"] <= 8
            assert hit["model_score"] == (model[hit["_id"]] if in_window else None), (label, hit)
            if label == "replace" and in_window:
                assert hit["model_score"] == hit["final_score"]
            fused_differs |= label == "rrf:60" and in_window and hit["model_score"] != hit["final_score"]
        assert fused_differs  # the rrf column's model scores are not its own final scores
        assert any(hit["model_score"] is None for _, hit in all_hits(query))  # ranks 9, 10: past the window


def test_without_a_reranked_replace_answer_hits_have_no_model_score(tmp_path: Path) -> None:
    """No replace mode in the run, or its answer skipped for a query: no model_score key (the report then shows
    no model score at all, not a dash on every hit); the other queries keep theirs."""
    report, run, collection = synthetic(tmp_path / "a", labels=("rrf:60",))
    data = report_data(report, run, collection, ["title", "text"])
    assert data["replace_modes"] == []
    assert all("model_score" not in hit for query in data["queries"] for _, hit in all_hits(query))

    report, run, collection = synthetic(tmp_path / "b")
    run.modes["replace"]["q1"].x_rerank = "skipped; reason=timeout"
    report["per_query"]["q1"]["x_rerank"]["replace"] = "skipped; reason=timeout"
    data = report_data(report, run, collection, ["title", "text"])
    for query in data["queries"]:
        has = {"model_score" in hit for _, hit in all_hits(query)}
        assert has == ({False} if query["id"] == "q1" else {True}), query["id"]


def test_anchors_are_safe_element_ids_and_unique() -> None:
    got = anchors(["1", "a b", "a_b", '"><script>', "é"])
    assert got["1"] == "q-1" and got["a b"] == "q-a_b" and got["a_b"] == "q-a_b-2"
    assert got['"><script>'] == "q-___script_" and got["é"] == "q-_"
    assert all(re.fullmatch(r"q-[A-Za-z0-9_-]+", value) for value in got.values())


def test_chart_bars_link_to_their_querys_article_and_the_list_can_be_sorted_by_change(tmp_path: Path) -> None:
    report, run, collection = synthetic(tmp_path)
    data = report_data(report, run, collection, ["title", "text"])
    page = render_html(report, data)
    targets = {query["anchor"] for query in data["queries"]}
    assert targets == {f"q-{query_id}" for query_id in collection.queries}
    links = re.findall(r'<a href="#([^"]+)" data-mode="([^"]+)"[^>]*><rect class="bar"', change_chart(report))
    assert len(links) == page.count('class="bar"') == len(report["per_query"]) * len(report["modes"])
    for label in report["modes"]:
        assert sorted(anchor for anchor, mode in links if mode == label) == sorted(targets)
    [sort] = re.findall(r'<select id="sort">(.*?)</select>', page)
    assert re.findall(r'<option value="([^"]+)"', sort) == ["id", "worst", "best"]  # file order first: default
    assert "onclick" not in page.lower() and "javascript:" not in page.lower()


def test_embedded_json_reads_back_unchanged() -> None:
    value = {"t": "</script><!-- \u2028 & <b>", "n": [1, 2.5, None]}
    text = embed_json(value)
    assert "<" not in text and ">" not in text and "&" not in text and "\u2028" not in text
    assert json.loads(text) == value


# ------------------------------------------------------------------ the script's own NDCG and qrels reader

NODE = shutil.which("node")


def run_node(program: str) -> Any:
    done = subprocess.run(
        [str(NODE), "-e", f"const c = require({json.dumps(str(COMPARE_JS))});\n{program}"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.skipif(NODE is None, reason="node is not installed: the script's NDCG is checked in the browser test only")
def test_the_pages_ndcg_is_the_evaluations_ndcg(shared_dir: Path) -> None:
    """compare.js's NDCG@10 equals ir-measures' (metrics.py, exponential gain) on real judgments and random
    rankings, and its qrels reader reads BEIR's file as collection.py does."""
    qrels = read_qrels(shared_dir / "collections" / "cranfield" / "qrels.tsv")
    pick = random.Random(11)
    chosen = sorted(qrels)[:40]
    runs: dict[str, list[str]] = {}
    for query_id in chosen:
        judged = list(qrels[query_id])
        others = [f"x{i}" for i in range(20)]
        runs[query_id] = pick.sample(judged + others, min(15, len(judged) + len(others)))
    expected = evaluate(qrels, runs).per_query
    path = json.dumps(str(shared_dir / "collections" / "cranfield" / "qrels.tsv"))
    got = run_node(
        f"const text = require('fs').readFileSync({path}, 'utf8');\n"
        "const parsed = c.parseQrels(text);\n"
        f"const runs = {json.dumps(runs)};\n"
        "const out = {rows: parsed.rows, queries: parsed.qrels.size, ndcg: {}};\n"
        "for (const q of Object.keys(runs)) out.ndcg[q] = c.ndcgAt10(runs[q], parsed.qrels.get(q));\n"
        "console.log(JSON.stringify(out));"
    )
    assert got["queries"] == len(qrels) and got["rows"] == sum(len(judged) for judged in qrels.values())
    for query_id in chosen:
        relevant = any(grade > 0 for grade in qrels[query_id].values())
        value = got["ndcg"][query_id]
        assert (value if relevant else 0.0) == pytest.approx(expected[query_id]["ndcg@10"], abs=1e-9), query_id


@pytest.mark.skipif(NODE is None, reason="node is not installed: the script's NDCG is checked in the browser test only")
def test_the_pages_ndcg_on_edge_cases_is_the_evaluations_ndcg() -> None:
    """Negative and zero grades (no gain), a judged document never retrieved (ideal DCG only), a document
    listed twice (counted once), more than ten hits and more than ten relevant judgments."""
    cases = {
        "negative": ({"a": -1, "b": 1, "c": 0}, ["a", "c", "b"]),
        "unretrieved": ({"a": 2, "z": 3}, ["x", "a", "y"]),
        "twice": ({"a": 1, "b": 2}, ["a", "a", "b"]),
        "long": ({f"d{i}": 1 + i % 3 for i in range(14)}, [f"d{i}" for i in range(13, -1, -1)] + ["e"]),
    }
    qrels = {name: judged for name, (judged, _) in cases.items()}
    runs = {name: ranking for name, (_, ranking) in cases.items()}
    expected = evaluate(qrels, runs).per_query
    got = run_node(
        f"const cases = {json.dumps(cases)};\n"
        "const out = {};\n"
        "for (const [name, [judged, ranking]] of Object.entries(cases))"
        " out[name] = c.ndcgAt10(ranking, new Map(Object.entries(judged)));\n"
        "console.log(JSON.stringify(out));"
    )
    for name in cases:
        assert got[name] == pytest.approx(expected[name]["ndcg@10"], abs=1e-12), name


@pytest.mark.skipif(NODE is None, reason="node is not installed: the score digits are checked in the browser test")
def test_scores_show_the_fewest_decimals_that_tell_neighbours_apart() -> None:
    """Four decimals unless two neighbouring, different scores would read the same; then more, up to eight.
    Equal scores (ties) and scores that are not neighbours in any order ask for nothing."""
    cases = {
        "plain": [[3.5, 2.25, 1.0]],
        "close": [[0.50844591, 0.50844562, 0.1]],
        "ties": [[0.5, 0.5, 0.5]],
        "far_apart": [[0.123451, 0.9, 0.123452]],
        "other_order": [[0.123451, 0.9, 0.123452], [0.123451, 0.123452, 0.9]],
        "beyond": [[0.1, 0.1 + 1e-12]],
        "gaps": [[None, 0.25, None]],
    }
    got = run_node(
        f"const cases = {json.dumps(cases)};\n"
        "const out = {};\n"
        "for (const [name, orders] of Object.entries(cases)) {\n"
        "  const d = c.decimalsFor(orders);\n"
        "  out[name] = [d, orders[orders.length - 1].map((v) => c.formatScore(v, d))];\n"
        "}\n"
        "console.log(JSON.stringify(out));"
    )
    assert got["plain"] == [4, ["3.5000", "2.2500", "1.0000"]]
    assert got["close"] == [7, ["0.5084459", "0.5084456", "0.1000000"]]
    assert got["ties"][0] == 4 and got["far_apart"][0] == 4
    assert got["other_order"] == [6, ["0.123451", "0.123452", "0.900000"]]
    assert got["beyond"][0] == 8  # the most it shows: closer scores than that read alike
    assert got["gaps"] == [4, ["\N{EN DASH}", "0.2500", "\N{EN DASH}"]]


# ------------------------------------------------------------------ the command, end to end


@pytest.mark.engine
@pytest.mark.slow
def test_eval_html_writes_report_html_next_to_report_json(opensearch_url: str, tiny_model: Path, tmp_path: Path) -> None:
    collection = write_collection(tmp_path / "tiny", documents=40, queries=6)
    index = scratch_name("eval-html")
    out = tmp_path / "out"
    done = run_eval(
        opensearch_url, index, collection, "--model", str(tiny_model), "--window", "10", "--depth", "20",
        "--verify-sample", "0", "--combine", "replace,linear:0.5", "--out", str(out), "--html",
    )  # fmt: skip
    assert f"and {out / 'report.html'}" in done.stdout
    report = json.loads((out / "report.json").read_text())
    page = (out / "report.html").read_text(encoding="utf-8")
    data = embedded(page)
    assert data["modes"] == ["replace", "linear:0.5:min_max"] and data["replace_modes"] == ["replace"]
    assert [q["id"] for q in data["queries"]] == list(report["per_query"])
    for query in data["queries"]:
        for label in data["modes"]:
            assert query["ndcg"]["modes"][label] == report["per_query"][query["id"]]["modes"][label]["ndcg@10"]
            assert len(query["columns"][label]["engine"]) == len(query["columns"][label]["reranked"]) > 0
        # The fused mode's hits carry the model's score of the same window: the replace answer's final score.
        replace = {h["_id"]: h["final_score"] for side in ("engine", "reranked") for h in query["columns"]["replace"][side]
                   if h["rerank_rank"] is not None and h["rerank_rank"] <= 10}  # fmt: skip
        linear = [h for side in ("engine", "reranked") for h in query["columns"]["linear:0.5:min_max"][side]]
        assert all(h["model_score"] is not None for h in linear if h["rerank_rank"] is not None and h["rerank_rank"] <= 10)
        for hit in linear:
            if hit["_id"] in replace:
                assert hit["model_score"] == pytest.approx(replace[hit["_id"]], rel=1e-6), hit
    assert any(doc.startswith(HOSTILE) for doc in data["docs"].values())
    assert page.count("</script") == 2 and "<img" not in page
    assert page.count('class="bar"') == 6 * 2


# ------------------------------------------------------------------ the report's script, in Chromium


@pytest.fixture
def browser(tmp_path: Path) -> Any:
    from tests.browser.chromium import browser_required, chromium, find_chromium

    found = find_chromium()
    if isinstance(found, str):
        if browser_required():
            pytest.fail(found)
        pytest.skip(found)
    with chromium(found, tmp_path / "chromium") as driver:
        yield driver


def open_report(browser: Any, tmp_path: Path, report: dict[str, Any], data: dict[str, Any], name: str) -> None:
    from tests.browser.chromium import console_errors, wait_for

    path = tmp_path / f"{name}.html"
    path.write_text(render_html(report, data), encoding="utf-8")
    browser.get(path.as_uri())
    wait_for(browser, "#queries article.query")
    assert console_errors(browser) == []


def drawn(browser: Any) -> list[dict[str, Any]]:
    return list(
        browser.execute_script(
            """
            return Array.from(document.querySelectorAll('#queries article.query')).map(a => ({
              id: a.dataset.queryId, anchor: a.id,
              hits: Array.from(a.querySelectorAll('ol.rerank-col > li.hit')).map(li => {
                const model = li.querySelector('.model-score');
                return {id: li.dataset.id, model: model ? model.getAttribute('data-value') : 'absent',
                        text: model ? model.textContent : null};
              })}));
            """
        )
    )


def choose(browser: Any, css: str, value: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.select import Select

    Select(browser.find_element(By.CSS_SELECTOR, css)).select_by_value(value)


@pytest.mark.browser
def test_the_report_shows_fused_model_scores_links_bars_to_queries_and_sorts(browser: Any, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    report, run, collection = synthetic(tmp_path, window=8)
    data = report_data(report, run, collection, ["title", "text"])
    open_report(browser, tmp_path, report, data, "report")
    by_id = {query["id"]: query for query in data["queries"]}

    # rrf: each window hit shows the model's score (the replace answer's), a hit past the window a dash.
    choose(browser, "#mode", "rrf:60")
    for query in drawn(browser):
        want = {hit["_id"]: hit["model_score"] for hit in by_id[query["id"]]["columns"]["rrf:60"]["reranked"]}
        for hit in query["hits"]:
            expected = want[hit["id"]]
            assert (None if hit["model"] is None else float(hit["model"])) == expected, hit
            assert (hit["text"] == "\u2013") == (expected is None)

    # Sorting by change: the NDCG@10 change under the mode shown, worst or best first; file order by default.
    def change(query_id: str, label: str) -> float:
        return by_id[query_id]["ndcg"]["modes"][label] - by_id[query_id]["ndcg"]["bm25"]

    assert [q["id"] for q in drawn(browser)] == list(collection.queries)
    choose(browser, "#sort", "worst")
    assert [q["id"] for q in drawn(browser)] == sorted(collection.queries, key=lambda q: change(q, "rrf:60"))
    choose(browser, "#sort", "best")
    assert [q["id"] for q in drawn(browser)] == sorted(collection.queries, key=lambda q: -change(q, "rrf:60"))
    choose(browser, "#sort", "id")

    # A bar is a link to its query's article: following it (mouse or keyboard) shows that panel's mode, and
    # every query when the filter had hidden the one linked.
    choose(browser, "#mode", "rrf:60")
    losers = [q for q in collection.queries if change(q, "replace") < -1e-9]
    target = losers[0] if losers else next(iter(collection.queries))
    choose(browser, "#filter", "better" if losers else "worse")
    link = browser.find_element(By.CSS_SELECTOR, f'#chart a[data-mode="replace"][href="#{by_id[target]["anchor"]}"]')
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", link)
    link.click()
    state = browser.execute_script(
        """
        const a = document.getElementById(arguments[0]);
        return {mode: document.getElementById('mode').value, filter: document.getElementById('filter').value,
                hash: location.hash, top: a ? a.getBoundingClientRect().top : null};
        """,
        by_id[target]["anchor"],
    )
    assert state["mode"] == "replace" and state["filter"] == "all" and state["hash"] == "#" + by_id[target]["anchor"]
    assert state["top"] is not None and 0 <= state["top"] < 100  # scrolled to it
    other = next(q for q in collection.queries if q != target)
    link = browser.find_element(By.CSS_SELECTOR, f'#chart a[data-mode="rrf:60"][href="#{by_id[other]["anchor"]}"]')
    browser.execute_script("arguments[0].focus()", link)
    link.send_keys(Keys.ENTER)
    assert browser.execute_script("return [document.getElementById('mode').value, location.hash]") == [
        "rrf:60", "#" + by_id[other]["anchor"]
    ]

    # No replace mode in the run: the hits carry no model score, and show none (no dash on every hit).
    report, run, collection = synthetic(tmp_path / "rrf-only", labels=("rrf:60",))
    open_report(browser, tmp_path, report, report_data(report, run, collection, ["title", "text"]), "rrf-only")
    assert {hit["model"] for query in drawn(browser) for hit in query["hits"]} == {"absent"}
