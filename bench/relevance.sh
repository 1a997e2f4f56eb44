#!/usr/bin/env bash
# Relevance on the shared test collections: BM25 straight from the engine vs reranked through the bridge.
#
# Runs `rerank-bridge eval` on every collection in ../shared/collections/ with every model in ../shared/models/
# (cross-encoders and sentence-transformers bi-encoders alike: eval's --kind auto tells them apart), each with the
# combination modes `replace`, `linear` (alpha 0.5, min-max) and `rrf` unless --combine is given, then prints one
# summary table, a row per mode (with each collection README's reference BM25 NDCG@10 next to ours).
#
# The index uses the settings that reproduce those reference figures: BM25 k1=0.9 b=0.4 and the `plain`
# analyzer (lower-cased [a-z0-9] runs, no stemming, no stop words); the query is eval's default multi_match
# over title and text. Indices are loaded once and kept (eval-<collection>), so reruns only search.
#
# Usage: bench/relevance.sh [extra eval flags...]      e.g. bench/relevance.sh --queries 30 --window 30
# Environment:
#   OPENSEARCH_URL   engine (default http://127.0.0.1:9200)
#   SHARED           shared assets folder (default: ../shared next to the repository)
#   OUT              results folder (default eval-out/bench-relevance); one report.json + PNG per run
#   COLLECTIONS      space-separated subset of collection names (default: all)
#   MODELS           space-separated subset of model names (default: all)
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SHARED="${SHARED:-$REPO/../shared}"
UPSTREAM="${OPENSEARCH_URL:-http://127.0.0.1:9200}"
OUT="${OUT:-$REPO/eval-out/bench-relevance}"
PYTHON="${PYTHON:-python}"

[ -d "$SHARED/collections" ] || { echo "bench/relevance.sh: no $SHARED/collections" >&2; exit 2; }
[ -d "$SHARED/models" ] || { echo "bench/relevance.sh: no $SHARED/models" >&2; exit 2; }
collections="${COLLECTIONS:-$(cd "$SHARED/collections" && for d in */; do [ -f "$d/qrels.tsv" ] && echo "${d%/}"; done)}"
models="${MODELS:-$(cd "$SHARED/models" && for d in */; do [ -f "$d/config.json" ] && echo "${d%/}"; done)}"

combine=(--combine replace,linear,rrf)
for arg in "$@"; do case "$arg" in --combine|--combine=*) combine=() ;; esac; done

status=0
for model in $models; do
  for collection in $collections; do
    dir="$OUT/$model/$collection"
    mkdir -p "$dir"
    echo "=== $collection with $model" >&2
    started=$SECONDS
    set +e
    (cd "$REPO" && "$PYTHON" -m bridge eval "$SHARED/collections/$collection" \
        --upstream "$UPSTREAM" --model "$SHARED/models/$model" --index "eval-$collection" \
        --analyzer plain --bm25-k1 0.9 --bm25-b 0.4 --out "$dir" "${combine[@]}" "$@")
    rc=$?
    set -e
    printf '{"seconds": %d, "exit_code": %d}\n' "$((SECONDS - started))" "$rc" > "$dir/bench.json"
    [ "$rc" -eq 0 ] || status=1
  done
done

"$PYTHON" - "$OUT" "$SHARED" <<'PY'
import json, re, sys
from pathlib import Path

out, shared = Path(sys.argv[1]), Path(sys.argv[2])
rows = []
for report_file in sorted(out.glob("*/*/report.json")):
    report = json.loads(report_file.read_text())
    bench_file = report_file.with_name("bench.json")
    bench = json.loads(bench_file.read_text()) if bench_file.exists() else {}
    readme = shared / "collections" / report["collection"]["name"] / "README.md"
    found = re.search(r"BM25 sanity run[^=]*nDCG@10 = ([0-9]+\.[0-9]+)", readme.read_text(), re.S) if readme.exists() else None
    rows.append((report, bench, float(found.group(1)) if found else None))

header = (f"{'collection':<10} {'model':<16} {'mode':<20} {'q':>4} {'win':>4} | {'ref':>5} {'NDCG@10 bm25→rr':>15} "
          f"{'MRR@10 bm25→rr':>15} {'R@100 bm25→rr':>15} | {'W/T/L':>11} | {'p50/p95 rr ms':>15} | "
          f"{'applied':>7} {'exact':>5} {'time':>6}")
print()
print(header)
print("-" * len(header))
for report, bench, reference in rows:
    bm25 = report["metrics"]["bm25"]
    verify = report.get("verify") or {}
    for label, mode in report["modes"].items():
        m = mode["metrics"]
        pair = lambda key: f"{bm25[key]:.3f}→{m[key]:.3f}"
        lat = mode["latency_ms"]
        wtl = mode["per_query_ndcg@10"]
        x = mode["x_rerank"]
        exact = f"{verify.get('agree', '-')}/{verify.get('queries', '-')}" if label == next(iter(report["modes"])) else ""
        print(f"{report['collection']['name']:<10} {report['model']['label'][:16]:<16} {label[:20]:<20} "
              f"{report['run']['queries']:>4} {report['run']['window']:>4} | "
              f"{reference if reference is not None else '-':>5} {pair('ndcg@10'):>15} {pair('mrr@10'):>15} "
              f"{pair('recall@100'):>15} | {str(wtl['wins']) + '/' + str(wtl['ties']) + '/' + str(wtl['losses']):>11} | "
              f"{lat.get('p50', 0):>7.0f}/{lat.get('p95', 0):<7.0f} | {str(x['applied']) + '/' + str(x['total']):>7} "
              f"{exact:>5} {bench.get('seconds', 0):>5.0f}s")
print("\nref = the collection README's BM25 NDCG@10; rr = the mode through the bridge; W/T/L = per-query NDCG@10 "
      "better/same/worse than BM25;\napplied = answers with X-Rerank: applied; exact = sampled windows equal to the "
      "model applied outside the bridge (first mode's row); a run's later modes read the bridge's score cache.")
print(json.dumps({"runs": [
    {"collection": report["collection"]["name"], "model": report["model"]["label"], "mode": label,
     "queries": report["run"]["queries"], "window": report["run"]["window"],
     "bm25": report["metrics"]["bm25"], "reranked": mode["metrics"], "change": mode["change"],
     "wins_ties_losses": mode["per_query_ndcg@10"], "latency_ms": mode["latency_ms"]}
    for report, _, _ in rows for label, mode in report["modes"].items()
]}))
PY
exit $status
