"""The evaluation's results: a terminal table, a JSON file, and a PNG of the per-query NDCG@10 change per mode."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bridge.evaluation.metrics import METRICS

LABELS = {"ndcg@10": "NDCG@10", "mrr@10": "MRR@10", "recall@100": "Recall@100"}


def table(report: dict[str, Any]) -> str:
    """A few readable lines: BM25 and every mode side by side (metrics, win/tie/loss against BM25, latency),
    rerank outcomes and the exactness check."""
    run, model = report["run"], report["model"]
    kind = f", {model['kind']}" if model.get("kind") else ""
    lines = [
        f"{report['collection']['name']}: {run['queries']} queries, index {report['index']['name']}, "
        f"model {model['label']}{kind}, window {run['window']}, depth {run['depth']}",
        "",
    ]
    modes: dict[str, Any] = report["modes"]
    width = max([len("BM25"), *(len(label) for label in modes)]) + 2
    header = f"{'':<{width}}" + "".join(f"{LABELS[m]:>11}" for m in METRICS)
    header += f"{'W/T/L':>13}{'p50 ms':>9}{'p95 ms':>9}{'model p50':>11}  scores"
    lines.append(header)
    bm25 = report["metrics"]["bm25"]
    latency = report["latency_ms"]["bm25"]
    row = f"{'BM25':<{width}}" + "".join(f"{bm25[m]:>11.4f}" for m in METRICS) + f"{'-':>13}"
    lines.append(row + _latency(latency) + f"{'-':>11}  engine")
    for label, entry in modes.items():
        row = f"{label:<{width}}"
        for metric in METRICS:
            row += f"{entry['metrics'][metric]:>11.4f}"
        wtl = entry["per_query_ndcg@10"]
        row += f"{str(wtl['wins']) + '/' + str(wtl['ties']) + '/' + str(wtl['losses']):>13}"
        row += _latency(entry["latency_ms"])
        rerank = entry.get("rerank_ms") or {}
        row += f"{rerank['p50']:>11.1f}" if rerank.get("count") else f"{'-':>11}"
        lines.append(row + f"  {entry.get('scores_from', '')}")
    lines += [
        "",
        f"{'change':<{width}}" + "".join(f"{LABELS[m]:>11}" for m in METRICS),
    ]
    for label, entry in modes.items():
        lines.append(f"{label:<{width}}" + "".join(f"{entry['change'][m]:>+11.4f}" for m in METRICS))
    lines += [
        "",
        "W/T/L: queries whose NDCG@10 is better/same/worse than BM25's. Latency: client-side per search; a query's",
        "modes run back to back, so the first mode pays for the model and later ones read the bridge's score",
        "cache ('scores'). model p50: the bridge's Server-Timing rerank time.",
    ]
    outcomes_by_mode = {label: entry["x_rerank"] for label, entry in modes.items()}
    if len(modes) > 1 and all(o["applied"] == o["total"] for o in outcomes_by_mode.values()):
        total = next(iter(outcomes_by_mode.values()))["total"]
        lines.append(f"bridge: reranked {total}/{total} with every mode (X-Rerank: applied)")
    else:
        for label, outcomes in outcomes_by_mode.items():
            line = f"bridge, {label}: reranked {outcomes['applied']}/{outcomes['total']} (X-Rerank: applied)"
            if outcomes["not_applied"]:
                line += "; not reranked: " + ", ".join(f"{k} x{v}" for k, v in outcomes["not_applied"].items())
            lines.append(line)
    errors = report["errors"]
    failed = {label: count for label, count in errors.get("modes", {}).items() if count}
    if errors["bm25"] or failed:
        lines.append(
            f"failed requests: BM25 {errors['bm25']}"
            + "".join(f", {label} {count}" for label, count in failed.items())
        )
    verify = report.get("verify")
    if verify and "skipped" in verify:
        lines.append(f"exactness: skipped ({verify['skipped']})")
    elif verify:
        lines.append(
            f"exactness ({verify.get('mode', 'replace')}): {verify['agree']}/{verify['queries']} sampled windows "
            f"match the model applied directly ({verify['exact']} identical, ties within {verify['tolerance']:g})"
        )
    return "\n".join(lines)


def _latency(summary: dict[str, Any]) -> str:
    if summary.get("count"):
        return f"{summary['p50']:>9.1f}{summary['p95']:>9.1f}"
    return f"{'-':>9}{'-':>9}"


def write_json(report: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def plot_ndcg_change(report: dict[str, Any], path: Path) -> None:
    """One panel per mode: bars of that mode's NDCG@10 minus BM25's for every query, sorted, green above zero
    and red below, on shared axes so the modes compare at a glance."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    per_query = report["per_query"]
    modes: dict[str, Any] = report["modes"]
    figure, panels = plt.subplots(
        len(modes), 1, figsize=(10, 1.2 + 3.0 * len(modes)), dpi=110, sharex=True, squeeze=False,
        layout="constrained",  # room for the figure title above the first panel's
    )
    bm25 = report["metrics"]["bm25"]["ndcg@10"]
    for axes, (label, entry) in zip(panels[:, 0], modes.items(), strict=True):
        deltas = sorted(q["modes"][label]["ndcg@10"] - q["bm25"]["ndcg@10"] for q in per_query.values())
        colours = ["#2e7d32" if d > 0 else "#c62828" if d < 0 else "#9e9e9e" for d in deltas]
        axes.bar(range(len(deltas)), deltas, width=1.0, color=colours, linewidth=0)
        axes.axhline(0, color="black", linewidth=0.8)
        axes.set_xlim(-0.5, max(len(deltas), 1) - 0.5)
        axes.set_ylim(-1.02, 1.02)
        axes.set_ylabel("NDCG@10 - BM25")
        wtl = entry["per_query_ndcg@10"]
        axes.set_title(
            f"{label}: NDCG@10 {bm25:.3f} → {entry['metrics']['ndcg@10']:.3f}; "
            f"{wtl['wins']} better / {wtl['ties']} same / {wtl['losses']} worse",
            fontsize=10,
        )
        axes.grid(axis="y", alpha=0.3)
    panels[-1, 0].set_xlabel("queries, sorted by change (per panel)")
    figure.suptitle(
        f"{report['collection']['name']} · {report['model']['label']} (window {report['run']['window']}): "
        "per-query NDCG@10 change against BM25",
        fontsize=11,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)
