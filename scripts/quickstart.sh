#!/usr/bin/env bash
# One command from a fresh checkout to a bridge in front of a local OpenSearch:
#   install the project, start a real OpenSearch on 127.0.0.1:9200, run the bridge on 127.0.0.1:9400.
#
# Usage: scripts/quickstart.sh [--model HUB_ID_OR_PATH] [--index PATTERN] [--fields title,text] [--window N]
# Without --model the bridge only relays (passthrough). With it, searches on --index (default "*", user
# indices only) are reranked on --fields with that cross-encoder: the top --window hits, by default 100 on a
# CUDA GPU and 20 on a CPU (what a 2-core CPU scores within the 2 s rerank budget, two searches at once, for
# ~200-word passages with a MiniLM-L6 cross-encoder; see the README). Ctrl-C stops the bridge; the engine keeps
# running, with its data (scripts/opensearch.sh stop). The compare page (/_bridge/compare: both orders side by
# side) is on. --dry-run installs and starts nothing: it prints the bridge configuration it would serve
# (checked by `rerank-bridge config check`).
set -euo pipefail
cd "$(dirname "$0")/.."

model="" index="*" fields="title,text" window="" dry_run=""
while [ $# -gt 0 ]; do
  case "$1" in
    --model) model="$2"; shift 2 ;;
    --index) index="$2"; shift 2 ;;
    --fields) fields="$2"; shift 2 ;;
    --window) window="$2"; shift 2 ;;
    --dry-run) dry_run=1; shift ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done

if [ -n "$dry_run" ]; then
  upstream=$(scripts/opensearch.sh url)
else
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore -e .
  upstream=$(scripts/opensearch.sh start)
fi

config=$(mktemp --suffix=.yaml)
trap 'rm -f "$config"' EXIT
{
  echo "upstream: {url: \"$upstream\"}"
  echo "server: {host: 127.0.0.1, port: ${BRIDGE_PORT:-9400}}"
  echo "log_format: text"
  echo "admin: {compare: true}"  # /_bridge/compare: engine order vs reranked (off unless asked for)
  if [ -n "$model" ]; then
    echo "models: {default: {source: \"$model\"}}"
    python3 - "$index" "$fields" "$window" <<'PY'
import json, sys
index, fields, window = sys.argv[1], sys.argv[2], sys.argv[3]
rule = {"indices": index.split(","), "fields": fields.split(","), "model": "default"}
if window:  # else the bridge's default for the model's device: 100 on a GPU, 20 on a CPU
    rule["window"] = int(window)
print("rules: " + json.dumps([rule]))
PY
  fi
} >"$config"
effective=$(rerank-bridge config check --config "$config")
if [ -n "$model" ]; then
  window=$(python3 -c 'import json, sys; print(json.load(sys.stdin)["rules"][0]["window"])' <<<"$effective")
  echo "reranking the top $window hits of each search (the default for this device; --window N to change)" >&2
fi
if [ -n "$dry_run" ]; then
  cat "$config"
  exit 0
fi
echo "bridge on http://127.0.0.1:${BRIDGE_PORT:-9400} in front of $upstream" >&2
if [ -n "$model" ]; then
  echo "compare the engine's order with the reranked one: http://127.0.0.1:${BRIDGE_PORT:-9400}/_bridge/compare" >&2
fi
rerank-bridge serve --config "$config"
