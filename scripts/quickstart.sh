#!/usr/bin/env bash
# One command from a fresh checkout to a bridge in front of a local OpenSearch:
#   install the project, start a real OpenSearch on 127.0.0.1:9200, run the bridge on 127.0.0.1:9400.
#
# Usage: scripts/quickstart.sh [--model HUB_ID_OR_PATH] [--index PATTERN] [--fields title,text] [--window 100]
# Without --model the bridge only relays (passthrough). With it, searches on --index (default "*", user
# indices only) are reranked on --fields with that cross-encoder. Ctrl-C stops the bridge; the engine
# keeps running (scripts/opensearch.sh stop).
set -euo pipefail
cd "$(dirname "$0")/.."

model="" index="*" fields="title,text" window=100
while [ $# -gt 0 ]; do
  case "$1" in
    --model) model="$2"; shift 2 ;;
    --index) index="$2"; shift 2 ;;
    --fields) fields="$2"; shift 2 ;;
    --window) window="$2"; shift 2 ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done

python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore -e .
upstream=$(scripts/opensearch.sh start)

config=$(mktemp --suffix=.yaml)
trap 'rm -f "$config"' EXIT
{
  echo "upstream: {url: \"$upstream\"}"
  echo "server: {host: 127.0.0.1, port: ${BRIDGE_PORT:-9400}}"
  echo "log_format: text"
  if [ -n "$model" ]; then
    echo "models: {default: {source: \"$model\"}}"
    python3 - "$index" "$fields" "$window" <<'PY'
import json, sys
index, fields, window = sys.argv[1], sys.argv[2], int(sys.argv[3])
rule = {"indices": index.split(","), "fields": fields.split(","), "window": window, "model": "default"}
print("rules: " + json.dumps([rule]))
PY
  fi
} >"$config"
rerank-bridge config check --config "$config" >/dev/null
echo "bridge on http://127.0.0.1:${BRIDGE_PORT:-9400} in front of $upstream" >&2
rerank-bridge serve --config "$config"
