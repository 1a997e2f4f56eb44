"""``eval --html``: ``report.html``, one self-contained file beside ``report.json``.

The summary table and the per-query change chart (inline SVG) are written here; each query's two top-10 lists
are drawn by the compare page's own script (``bridge/server/static/compare/compare.js``, ``renderReport`` →
``renderColumns``), inlined with its stylesheet, from a ``<script type="application/json">`` block. The data
is JSON with every ``<``, ``>`` and ``&`` escaped, so no document title can close that block (``</script>``);
the page's Content-Security-Policy lets only those two inline blocks run and style it (by their hashes).
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from bridge.evaluation.collection import Collection
from bridge.evaluation.metrics import METRICS, TIE_EPSILON
from bridge.evaluation.report import LABELS
from bridge.evaluation.runner import Answer, ModeRun
from bridge.search.compare import title
from bridge.server.compare import static_text

TOP = 10
_CHART_WIDTH = 1000
_PANEL_HEIGHT = 150
_PANEL_GAP = 34


def embed_json(value: Any) -> str:
    """JSON safe inside an HTML ``<script>`` element: ``<``, ``>``, ``&`` (only ever inside strings in JSON)
    and the JavaScript line separators written as ``\\u`` escapes, which JSON reads back unchanged."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    for char, escape in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("\u2028", "\\u2028"),
                         ("\u2029", "\\u2029")):
        text = text.replace(char, escape)
    return text


_WINDOW = re.compile(r"(?:^|;)\s*window=(\d+)\s*(?:;|$)")


def reranked_window(answer: Answer) -> int | None:
    """How many of the answer's first hits the bridge reranked (``X-Rerank: applied; ...; window=N``); None
    when it did not rerank this answer (skipped, failed open, an error)."""
    header = (answer.x_rerank or "").strip()
    if answer.error is not None or not header.startswith("applied"):
        return None
    found = _WINDOW.search(header)
    return int(found.group(1)) if found else None


def model_scores(answers: Sequence[Answer]) -> dict[str, float] | None:
    """The model's own score of each window document, read from the first replace-mode answer the bridge
    reranked: there a window hit's ``_score`` is the model's score (past the window it is the engine's, so
    those are left out). Fused modes (linear, rrf) answer only the fused score; the same query's replace answer
    is what holds the model's score of the same window (the same passages, the same model). None when no
    replace answer was reranked."""
    for answer in answers:
        window = reranked_window(answer)
        if window is None:
            continue
        return {
            doc: float(score)
            for doc, score in zip(answer.ids[:window], answer.scores[:window], strict=False)
            if isinstance(score, int | float)
        }
    return None


def anchors(query_ids: Sequence[str]) -> dict[str, str]:
    """Each query's element id in report.html, ``q-<id>`` with anything but letters, digits, ``-`` and ``_``
    made ``_`` (one id fits HTML ids, URL fragments and CSS selectors alike), made unique by a suffix."""
    taken: set[str] = set()
    out: dict[str, str] = {}
    for query_id in query_ids:
        base = "q-" + re.sub(r"[^A-Za-z0-9_-]", "_", query_id)
        anchor, n = base, 2
        while anchor in taken:
            anchor, n = f"{base}-{n}", n + 1
        taken.add(anchor)
        out[query_id] = anchor
    return out


def _column(
    answer: Answer, other: Answer, scores_here: Sequence[float | None], scores_there: Sequence[float | None],
    engine_first: bool, model: dict[str, float] | None = None, reranked: int | None = None,
) -> list[dict[str, Any]]:
    """The first :data:`TOP` hits of ``answer``, each with its rank in both lists and the rank change; with
    ``model`` (the window's model scores, or None when this mode's answer has none), ``model_score`` too: the
    document's model score where it lay in the first ``reranked`` hits of the mode's answer, else null."""
    rank_there = {doc: rank for rank, doc in reversed(list(enumerate(other.ids, start=1)))}
    score_there = dict(zip(reversed(other.ids), reversed(list(scores_there)), strict=False))
    hits = []
    for rank, (doc, score) in enumerate(zip(answer.ids[:TOP], scores_here, strict=False), start=1):
        there = rank_there.get(doc)
        engine_rank, rerank_rank = (rank, there) if engine_first else (there, rank)
        move = engine_rank - rerank_rank if engine_rank is not None and rerank_rank is not None else None
        engine_score, final_score = (score, score_there.get(doc)) if engine_first else (score_there.get(doc), score)
        hit: dict[str, Any] = {
            "_id": doc,
            "engine_rank": engine_rank,
            "rerank_rank": rerank_rank,
            "move": move,
            "engine_score": engine_score,
            "final_score": final_score,
        }
        if model is not None:
            in_window = rerank_rank is not None and reranked is not None and rerank_rank <= reranked
            hit["model_score"] = model.get(doc) if in_window else None
        hits.append(hit)
    return hits


def report_data(
    report: Mapping[str, Any], run: ModeRun, collection: Collection, fields: Sequence[str]
) -> dict[str, Any]:
    """What ``renderReport`` draws: per query, for each mode, BM25's top 10 and the mode's top 10 (ranks in
    both lists, rank changes, scores), the judgments of the documents shown, and the report's NDCG@10 values
    (ir-measures'); ``docs`` holds each shown document's title once (its ``fields`` joined, cut as on the
    compare page). A hit has ``model_score`` (null past the window) when the query's replace answer gave the
    window's model scores (:func:`model_scores`); without one the key is absent and the report shows no model
    score rather than a dash on every hit. ``anchor`` is the query's element id, the chart bars' link target."""
    labels = list(report["modes"])
    replace = [label for label in labels if _replace(report, label)]
    targets = anchors(list(report["per_query"]))
    queries: list[dict[str, Any]] = []
    shown: set[str] = set()
    for query_id, entry in report["per_query"].items():
        engine = run.engine[query_id]
        model = model_scores([run.modes[label][query_id] for label in replace])
        columns: dict[str, Any] = {}
        for label in labels:
            mode = run.modes[label][query_id]
            window = reranked_window(mode)
            scored = model if window is not None else None
            columns[label] = {
                "engine": _column(engine, mode, engine.scores, mode.scores, True, scored, window),
                "reranked": _column(mode, engine, mode.scores, engine.scores, False, scored, window),
                "error": mode.error,
            }
            shown.update(engine.ids[:TOP], mode.ids[:TOP])
        judged = collection.qrels.get(query_id, {})
        on_screen = {doc for pair in columns.values() for side in ("engine", "reranked") for doc in
                     (hit["_id"] for hit in pair[side])}  # fmt: skip
        queries.append(
            {
                "id": query_id,
                "anchor": targets[query_id],
                "text": collection.queries.get(query_id, ""),
                "ndcg": {
                    "bm25": entry["bm25"]["ndcg@10"],
                    "modes": {label: entry["modes"][label]["ndcg@10"] for label in labels},
                },
                "judged": {doc: grade for doc, grade in judged.items() if doc in on_screen},
                "engine_error": engine.error,
                "columns": columns,
            }
        )
    docs = {}
    for document in collection.documents():
        if document.id in shown:
            hit = {"_id": document.id, "_source": {"title": document.title, "text": document.text}}
            docs[document.id] = title(hit, fields, "\n")
    return {
        "collection": report["collection"]["name"],
        "index": report["index"]["name"],
        "modes": labels,
        "replace_modes": replace,
        "docs": docs,
        "queries": queries,
    }


def _replace(report: Mapping[str, Any], label: str) -> bool:
    """Whether a mode's final score is the model's own: ``replace``, or a rule that answered combine=replace."""
    if report["modes"][label].get("combine") == "replace":
        return True
    headers = [entry["x_rerank"].get(label) or "" for entry in report["per_query"].values()]
    return bool(headers) and all("combine=replace" in header for header in headers)


def summary_table(report: Mapping[str, Any]) -> str:
    """BM25 and every mode: the metrics, win/tie/loss against BM25, latency and the model's time."""
    head = "".join(f"<th scope=\"col\">{LABELS[m]}</th>" for m in METRICS)
    rows = [
        "<table class=\"summary\"><thead><tr><th scope=\"col\">run</th>" + head
        + "<th scope=\"col\">W/T/L</th><th scope=\"col\">p50 ms</th><th scope=\"col\">p95 ms</th>"
        "<th scope=\"col\">model p50 ms</th><th scope=\"col\">X-Rerank applied</th></tr></thead><tbody>"
    ]

    def latency(summary: Mapping[str, Any], key: str) -> str:
        return f"{summary[key]:.1f}" if summary.get("count") else "&ndash;"

    bm25 = report["metrics"]["bm25"]
    engine_latency = report["latency_ms"]["bm25"]
    rows.append(
        "<tr><th scope=\"row\">BM25</th>" + "".join(f"<td>{bm25[m]:.4f}</td>" for m in METRICS)
        + f"<td>&ndash;</td><td>{latency(engine_latency, 'p50')}</td><td>{latency(engine_latency, 'p95')}</td>"
        "<td>&ndash;</td><td>engine</td></tr>"
    )
    for label, entry in report["modes"].items():
        cells = "".join(
            f"<td>{entry['metrics'][m]:.4f} <span class=\"hint\">({entry['change'][m]:+.4f})</span></td>"
            for m in METRICS
        )
        wtl = entry["per_query_ndcg@10"]
        rerank = entry.get("rerank_ms") or {}
        outcomes = entry["x_rerank"]
        rows.append(
            f"<tr><th scope=\"row\">{html.escape(label)}</th>{cells}"
            f"<td>{wtl['wins']}/{wtl['ties']}/{wtl['losses']}</td>"
            f"<td>{latency(entry['latency_ms'], 'p50')}</td><td>{latency(entry['latency_ms'], 'p95')}</td>"
            f"<td>{latency(rerank, 'p50')}</td><td>{outcomes['applied']}/{outcomes['total']}</td></tr>"
        )
    rows.append("</tbody></table>")
    return "".join(rows)


def change_chart(report: Mapping[str, Any]) -> str:
    """Inline SVG, one panel per mode: every query's NDCG@10 minus BM25's as a bar, sorted, green above zero
    and red below, on a shared -1..1 scale (the PNG's layout). Each bar is a link to its query's lists below
    (``#<anchor>``, see :func:`anchors`); ``data-mode`` lets the script show that mode's lists first."""
    per_query = report["per_query"]
    labels = list(report["modes"])
    targets = anchors(list(per_query))
    count = max(len(per_query), 1)
    height = len(labels) * (_PANEL_HEIGHT + _PANEL_GAP) + 8
    left, width = 44, _CHART_WIDTH - 52
    parts = [
        f"<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {_CHART_WIDTH} {height}\" "
        f"width=\"{_CHART_WIDTH}\" height=\"{height}\" role=\"group\" "
        "aria-label=\"per-query NDCG@10 change against BM25, one panel per mode\">"
    ]
    for panel, label in enumerate(labels):
        top = panel * (_PANEL_HEIGHT + _PANEL_GAP) + _PANEL_GAP - 8
        middle = top + _PANEL_HEIGHT / 2
        scale = _PANEL_HEIGHT / 2
        deltas = sorted(
            ((q["modes"][label]["ndcg@10"] - q["bm25"]["ndcg@10"], query_id) for query_id, q in per_query.items()),
            key=lambda item: item[0],
        )
        wtl = report["modes"][label]["per_query_ndcg@10"]
        caption = (
            f"{label}: NDCG@10 {report['metrics']['bm25']['ndcg@10']:.3f} → "
            f"{report['modes'][label]['metrics']['ndcg@10']:.3f}; {wtl['wins']} better / {wtl['ties']} same / "
            f"{wtl['losses']} worse"
        )
        parts.append(
            f"<text x=\"{left}\" y=\"{top - 8}\" font-size=\"13\" fill=\"#1b1f24\">{html.escape(caption)}</text>"
        )
        parts.append(
            f"<rect x=\"{left}\" y=\"{top}\" width=\"{width}\" height=\"{_PANEL_HEIGHT}\" fill=\"#f5f7fa\" "
            "stroke=\"#d5d9e0\"/>"
        )
        for value, text in ((1, "+1"), (0, "0"), (-1, "&minus;1")):
            y = middle - value * scale
            parts.append(
                f"<text x=\"{left - 6}\" y=\"{y + 4:.1f}\" font-size=\"11\" text-anchor=\"end\" "
                f"fill=\"#5a6270\">{text}</text>"
            )
        bar = width / count
        for i, (delta, query_id) in enumerate(deltas):
            colour = "#2e7d32" if delta > TIE_EPSILON else "#c62828" if delta < -TIE_EPSILON else "#9e9e9e"
            size = max(abs(delta) * scale, 0.75)
            y = middle - size if delta >= 0 else middle
            tip = html.escape(f"{query_id}: {delta:+.4f}")
            parts.append(
                f"<a href=\"#{targets[query_id]}\" data-mode=\"{html.escape(label)}\" "
                f"aria-label=\"{html.escape(label)}, query {tip}\">"
                f"<rect class=\"bar\" x=\"{left + i * bar:.2f}\" y=\"{y:.2f}\" width=\"{max(bar - 0.2, 0.5):.2f}\" "
                f"height=\"{size:.2f}\" fill=\"{colour}\"><title>{tip}</title></rect></a>"
            )
        parts.append(
            f"<line x1=\"{left}\" x2=\"{left + width}\" y1=\"{middle}\" y2=\"{middle}\" stroke=\"#1b1f24\" "
            "stroke-width=\"0.8\"/>"
        )
    parts.append("</svg>")
    return "".join(parts)


def _hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode() + "'"


def render_html(report: Mapping[str, Any], data: Mapping[str, Any]) -> str:
    """The whole page: summary, chart, and the per-query lists the inlined compare script draws from ``data``."""
    script, style = static_text("compare.js"), static_text("compare.css")
    if "</script" in script.lower() or "</style" in style.lower():
        raise ValueError("compare.js / compare.css cannot be inlined: they close their own element")
    policy = (
        f"default-src 'none'; script-src {_hash(script)}; style-src {_hash(style)}; img-src data:; "
        "base-uri 'none'; form-action 'none'"
    )
    collection, model, run = report["collection"], report["model"], report["run"]
    heading = f"{collection['name']}: BM25 against {', '.join(report['modes'])}"
    facts = (
        f"{run['queries']} queries, index {report['index']['name']}, model {model['label']}"
        f"{', ' + model['kind'] if model.get('kind') else ''}, window {run['window']}, depth {run['depth']}, "
        f"NDCG gain {run['gain']}; created {report.get('created', '')}"
    )
    notes = [
        "W/T/L: queries whose NDCG@10 is better/same/worse than BM25's; in brackets the change against BM25.",
        "Latency is client-side per search; a query's modes run back to back, so later modes read the bridge's "
        "score cache. model p50: the bridge's Server-Timing rerank time.",
    ]
    verify = report.get("verify")
    if verify and "skipped" in verify:
        notes.append(f"Exactness check skipped: {verify['skipped']}")
    elif verify:
        notes.append(
            f"Exactness ({verify.get('mode', 'replace')}): {verify['agree']}/{verify['queries']} sampled windows "
            "match the model applied directly."
        )
    note_items = "".join(f"<li>{html.escape(note)}</li>" for note in notes)
    filters = "".join(
        f"<option value=\"{value}\">{text}</option>"
        for value, text in (("all", "all queries"), ("better", "better than BM25"), ("worse", "worse than BM25"),
                            ("same", "same as BM25"))
    )
    orders = "".join(
        f"<option value=\"{value}\">{text}</option>"
        for value, text in (("id", "as in the queries file"), ("worst", "by change, worst first"),
                            ("best", "by change, best first"))
    )
    return (
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f"<meta http-equiv=\"Content-Security-Policy\" content=\"{html.escape(policy)}\">\n"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
        f"<title>{html.escape('rerank-bridge eval · ' + collection['name'])}</title>\n"
        f"<style>{style}</style>\n</head>\n<body>\n"
        f"<header class=\"top\"><h1>{html.escape(heading)}</h1><p class=\"hint\">{html.escape(facts)}</p></header>\n"
        "<main>\n<section id=\"summary\"><h2>Summary</h2>\n"
        f"{summary_table(report)}\n<ul class=\"hint\">{note_items}</ul></section>\n"
        "<section id=\"chart\" class=\"chart\"><h2>Per-query NDCG@10 change against BM25 "
        "<span class=\"hint\">(a bar links to its query's lists)</span></h2>\n"
        f"{change_chart(report)}\n</section>\n"
        "<section id=\"per-query\"><h2>Each query's top 10: BM25 and the reranked order</h2>\n"
        "<div class=\"controls\"><label for=\"mode\">Mode</label><select id=\"mode\"></select>"
        f"<label for=\"filter\">Show</label><select id=\"filter\">{filters}</select>"
        f"<label for=\"sort\">Order</label><select id=\"sort\">{orders}</select>"
        "<span id=\"shown\" class=\"hint\" aria-live=\"polite\"></span>"
        "<span class=\"hint\">Judged documents are marked with their grade; ▲/▼ is the rank change.</span></div>\n"
        "<div id=\"queries\"></div>\n</section>\n</main>\n"
        f"<script type=\"application/json\" id=\"report-data\">{embed_json(data)}</script>\n"
        f"<script>{script}</script>\n</body>\n</html>\n"
    )


def write_html(
    report: Mapping[str, Any], run: ModeRun, collection: Collection, fields: Sequence[str], path: Path
) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_html(report, report_data(report, run, collection, fields)), encoding="utf-8")
