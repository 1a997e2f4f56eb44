"""The evaluation's results: a terminal table, a JSON file, and a PNG of the per-query NDCG@10 change."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bridge.evaluation.metrics import METRICS

LABELS = {"ndcg@10": "NDCG@10", "mrr@10": "MRR@10", "recall@100": "Recall@100"}


def table(report: dict[str, Any]) -> str:
    """A few readable lines: metrics side by side, win/tie/loss, latency, rerank outcomes, the exactness check."""
    run = report["run"]
    bm25, reranked = report["metrics"]["bm25"], report["metrics"]["reranked"]
    lines = [
        f"{report['collection']['name']}: {run['queries']} queries, index {report['index']['name']}, "
        f"model {report['model']['label']}, window {run['window']}, depth {run['depth']}",
        "",
        f"{'':<12}{'BM25':>9}{'reranked':>10}{'change':>9}",
    ]
    for metric in METRICS:
        delta = reranked[metric] - bm25[metric]
        lines.append(f"{LABELS[metric]:<12}{bm25[metric]:>9.4f}{reranked[metric]:>10.4f}{delta:>+9.4f}")
    wtl = report["per_query_ndcg@10"]
    lines += [
        "",
        f"per query (NDCG@10): {wtl['wins']} better, {wtl['ties']} same, {wtl['losses']} worse",
        "",
        f"{'latency ms':<12}{'p50':>9}{'p95':>10}",
    ]
    for path, label in (("bm25", "BM25"), ("reranked", "reranked")):
        latency = report["latency_ms"][path]
        if latency.get("count"):
            lines.append(f"{label:<12}{latency['p50']:>9.1f}{latency['p95']:>10.1f}")
        else:
            lines.append(f"{label:<12}{'-':>9}{'-':>10}")
    outcomes = report["bridge"]["x_rerank"]
    line = f"bridge: reranked {outcomes['applied']}/{outcomes['total']} (X-Rerank: applied)"
    if outcomes["not_applied"]:
        line += "; not reranked: " + ", ".join(f"{k} x{v}" for k, v in outcomes["not_applied"].items())
    lines.append(line)
    errors = report["errors"]
    if errors["bm25"] or errors["reranked"]:
        lines.append(f"failed requests: BM25 {errors['bm25']}, reranked {errors['reranked']}")
    verify = report.get("verify")
    if verify:
        lines.append(
            f"exactness: {verify['agree']}/{verify['queries']} sampled windows match the model applied directly "
            f"({verify['exact']} identical, ties within {verify['tolerance']:g})"
        )
    return "\n".join(lines)


def write_json(report: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def plot_ndcg_change(report: dict[str, Any], path: Path) -> None:
    """Bars of reranked minus BM25 NDCG@10 for every query, sorted, green above zero and red below."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    per_query = report["per_query"]
    deltas = sorted(q["reranked"]["ndcg@10"] - q["bm25"]["ndcg@10"] for q in per_query.values())
    colours = ["#2e7d32" if d > 0 else "#c62828" if d < 0 else "#9e9e9e" for d in deltas]
    figure, axes = plt.subplots(figsize=(10, 4.5), dpi=110)
    axes.bar(range(len(deltas)), deltas, width=1.0, color=colours, linewidth=0)
    axes.axhline(0, color="black", linewidth=0.8)
    axes.set_xlim(-0.5, max(len(deltas), 1) - 0.5)
    axes.set_ylim(-1.02, 1.02)
    axes.set_xlabel("queries, sorted by change")
    axes.set_ylabel("NDCG@10 reranked - BM25")
    wtl = report["per_query_ndcg@10"]
    means = report["metrics"]
    axes.set_title(
        f"{report['collection']['name']} · {report['model']['label']} (window {report['run']['window']}): "
        f"NDCG@10 {means['bm25']['ndcg@10']:.3f} → {means['reranked']['ndcg@10']:.3f}; "
        f"{wtl['wins']} better / {wtl['ties']} same / {wtl['losses']} worse",
        fontsize=10,
    )
    axes.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)
