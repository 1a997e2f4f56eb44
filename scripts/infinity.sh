#!/usr/bin/env bash
# Run a real infinity-emb rerank server (https://github.com/michaelfeil/infinity) on 127.0.0.1, on the CPU,
# from a local model directory, for the bridge's `remote.protocol: cohere` tests and benchmarks.
#
# Why this exists: the bridge's remote scorer must be tested against a serving engine people really run, not
# only against a scripted fake. infinity-emb is a Python server with the Cohere-style `POST /rerank`, but it
# pins numpy<2 and sentence-transformers<4 (hence transformers<5), while the bridge runs numpy 2,
# transformers 5 and sentence-transformers 6; so it gets a virtual environment of its own, made once and
# cached. The venv is made with --system-site-packages: it reuses the base interpreter's torch (PyPI's Linux
# torch is a multi-GB CUDA build) and holds only the pinned packages below, which shadow the base ones.
# The base interpreter is never installed into.
#
# Usage: scripts/infinity.sh {check|install|venv|start|stop|kill|status|url} [--port N] [--model DIR] [--name NAME]
#   check    exit 0 when `start` has what it needs (a healthy server on the port, or the cached venv, or a
#            Python 3.9..3.13 with venv and a reachable package index to make it); 4, naming what is missing
#   install  make the cached venv if needed (one-time download from the package index); print its path
#   venv     print the venv's path without making it; exit 0 when it is complete, 3 when not
#   start    install if needed, start the server, wait until it serves the model, print its base URL
#            (the rerank endpoint is <URL>/rerank); two starts on one port at once are safe (a lock)
#   stop     stop the server this script started on the port (SIGTERM, then SIGKILL after 30 s)
#   kill     SIGKILL it at once: a crashed scorer, for tests
#   status   exit 0 when the server answers and serves the model, 3 when not
#   url      print http://127.0.0.1:$PORT
#
# Environment (the options above win over these):
#   RERANK_INFINITY_PORT        port (default 7997, infinity's own); each port gets its own run dir
#   RERANK_INFINITY_MODEL       model directory (default ../shared/models/minilm-l6-ce-v1 next to the repo)
#   RERANK_INFINITY_NAME        served model name, what requests send as "model" (default: the dir's name)
#   RERANK_INFINITY_THREADS     torch CPU threads (OMP_NUM_THREADS; default: torch's, all cores)
#   RERANK_INFINITY_BATCH_SIZE  infinity's batch size (default 32)
#   RERANK_INFINITY_API_KEY     when set, the server requires it as a Bearer token (passed by environment,
#                               never on the command line)
#   RERANK_INFINITY_PYTHON      interpreter the venv is made from (default python3; its torch is reused)
#   RERANK_INFINITY_START_TIMEOUT  seconds to wait for the model to be served (default 180)
#   RERANK_INFINITY_RUN_ROOT    where run dirs live (default /tmp/rerank-bridge-infinity)
#   XDG_CACHE_HOME              the venv lives in $XDG_CACHE_HOME/rerank-bridge/infinity (as the engines' cache)
#   RERANK_BRIDGE_LAUNCHED_FILE when set, `start` writes the URL into this file only if it launched the
#                               server itself (not when it found one running): who started it stops it
#
# The server runs offline (HF_HUB_OFFLINE=1), without telemetry (DO_NOT_TRACK=1,
# INFINITY_ANONYMOUS_USAGE_STATS=0), on the CPU (CUDA_VISIBLE_DEVICES=""), float32, torch engine, without
# BetterTransformer (it needs optimum) or torch.compile, bound to 127.0.0.1 only; any INFINITY_* variable of
# the caller's environment is dropped, so nothing but this script's settings reaches it.
#
# stdout carries only the URL (start, url) or the venv path (install); progress and errors go to stderr.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(dirname "$SCRIPT_DIR")"

# Logging, locks, the pidfile's ownership check, waiting for the server and stopping it: shared with the
# engine scripts.
# shellcheck source-path=SCRIPTDIR source=lib/proc.sh
source "$SCRIPT_DIR/lib/proc.sh"
# shellcheck disable=SC2034 # read by lib/proc.sh
LOG_TAG="infinity.sh" SERVER_LABEL="the infinity server"

# What the venv holds, pinned: infinity-emb's own pins (METADATA of 0.0.78: numpy>=1.20,<2;
# sentence-transformers>=3.0.1,<4 for the torch extra; torch>=2.2.1) resolved to versions tested here, plus
# the web stack it was tested with. torch is not listed: the base interpreter's is used when it has one.
INFINITY_VERSION="0.0.78"
REQUIREMENTS="infinity-emb[server,torch]==$INFINITY_VERSION
numpy==1.26.4
sentence-transformers==3.4.1
transformers==4.57.6
tokenizers==0.22.2
huggingface_hub==0.36.2
fastapi==0.165.0
starlette==1.10.0
uvicorn[standard]==0.32.1
typer==0.12.5
click==8.1.8"

PORT="${RERANK_INFINITY_PORT:-7997}"
MODEL="${RERANK_INFINITY_MODEL:-$(dirname "$REPO")/shared/models/minilm-l6-ce-v1}"
NAME="${RERANK_INFINITY_NAME:-}"
BATCH_SIZE="${RERANK_INFINITY_BATCH_SIZE:-32}"
PYTHON="${RERANK_INFINITY_PYTHON:-python3}"
START_TIMEOUT="${RERANK_INFINITY_START_TIMEOUT:-180}"
RUN_ROOT="${RERANK_INFINITY_RUN_ROOT:-/tmp/rerank-bridge-infinity}"
CACHE_DIR="${XDG_CACHE_HOME:-$HOME/.cache}/rerank-bridge/infinity"

usage() {
    echo "usage: $0 {check|install|venv|start|stop|kill|status|url} [--port N] [--model DIR] [--name NAME]" >&2
    exit 2
}

parse_options() {
    while [ $# -gt 0 ]; do
        case "$1" in
        --port) [ $# -ge 2 ] || usage; PORT="$2"; shift 2 ;;
        --model) [ $# -ge 2 ] || usage; MODEL="$2"; shift 2 ;;
        --name) [ $# -ge 2 ] || usage; NAME="$2"; shift 2 ;;
        *) usage ;;
        esac
    done
    [[ "$PORT" =~ ^[0-9]+$ ]] && [ "$PORT" -ge 1 ] && [ "$PORT" -le 65535 ] || die "bad port: $PORT"
    [[ "$BATCH_SIZE" =~ ^[0-9]+$ ]] && [ "$BATCH_SIZE" -ge 1 ] || die "bad RERANK_INFINITY_BATCH_SIZE: $BATCH_SIZE"
    MODEL="${MODEL%/}"
    [ -n "$NAME" ] || NAME="$(basename "$MODEL")"
    RUN_DIR="$RUN_ROOT/$PORT"
    PID_FILE="$RUN_DIR/infinity.pid"
    LOG_FILE="$RUN_DIR/infinity.log"
    URL="http://127.0.0.1:$PORT"
}

# ---------------------------------------------------------------- the venv

venv_stamp() {
    # What the venv is made from: the pins and the base interpreter (its torch is part of the venv).
    local base
    base="$("$PYTHON" -c 'import sys; print(sys.version, sys.prefix)' 2>/dev/null)" || return 1
    printf '%s\n%s\n' "$REQUIREMENTS" "$base" | sha256sum | cut -c1-12
}

set_venv_dir() {
    local stamp
    stamp="$(venv_stamp)" || die "cannot run $PYTHON (set RERANK_INFINITY_PYTHON)"
    VENV="$CACHE_DIR/venv-$INFINITY_VERSION-$stamp"
}

venv_is_current() { [ -x "$VENV/bin/infinity_emb" ] && [ -f "$VENV/.rerank-bridge-complete" ]; }

verify_venv() {
    # The venv's own view: infinity-emb and the pinned versions shadow the base ones, torch imports and hands
    # tensors to this numpy (a torch built against numpy 2 must still work with numpy 1.26).
    "$VENV/bin/python" - "$INFINITY_VERSION" <<'PY'
import sys
from importlib.metadata import version

import numpy
import sentence_transformers
import torch
import transformers
from sentence_transformers import CrossEncoder  # noqa: F401  (what infinity's torch reranker subclasses)

import infinity_emb  # noqa: F401

problems = []
if version("infinity_emb") != sys.argv[1]:
    problems.append(f"infinity-emb {version('infinity_emb')} != {sys.argv[1]}")
if int(numpy.__version__.split(".")[0]) >= 2:
    problems.append(f"numpy {numpy.__version__} (infinity needs < 2): the venv's copy does not shadow the base one")
if int(sentence_transformers.__version__.split(".")[0]) >= 4:
    problems.append(f"sentence-transformers {sentence_transformers.__version__} (infinity needs < 4)")
if torch.ones(3).numpy().sum() != 3:
    problems.append("torch cannot hand a tensor to numpy")
if problems:
    sys.exit("; ".join(problems))
print(f"torch {torch.__version__} ({torch.__file__}), numpy {numpy.__version__}, transformers "
      f"{transformers.__version__}, sentence-transformers {sentence_transformers.__version__}", file=sys.stderr)
PY
}

check_python() {
    # infinity-emb 0.0.78 takes Python >=3.9,<3.14; the venv module must be able to bootstrap pip.
    "$PYTHON" -c 'import sys; sys.exit(0 if (3, 9) <= sys.version_info[:2] < (3, 14) else 1)' 2>/dev/null ||
        { echo "a Python 3.9..3.13 (RERANK_INFINITY_PYTHON=$PYTHON is not one)"; return 1; }
    "$PYTHON" -c 'import ensurepip, venv' 2>/dev/null ||
        { echo "the venv module with ensurepip for $PYTHON (Debian: apt-get install python3-venv)"; return 1; }
}

make_venv() {
    # Made in place (a venv cannot be moved: its scripts name their interpreter), under the cache lock; the
    # completion mark is written last, so a killed install is found incomplete and redone.
    local problem
    problem="$(check_python)" || die "making the venv needs $problem"
    rm -rf "$VENV"
    mkdir -p "$CACHE_DIR"
    log "making infinity-emb $INFINITY_VERSION's venv in $VENV (one-time download from the package index)"
    "$PYTHON" -m venv --system-site-packages "$VENV"
    "$PYTHON" -c 'import torch' 2>/dev/null ||
        log "WARNING: $PYTHON has no torch, so pip installs one into the venv (PyPI's Linux wheel is the large CUDA build)"
    local requirements=()
    mapfile -t requirements <<<"$REQUIREMENTS"
    if ! "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-input \
        --root-user-action=ignore "${requirements[@]}" >&2; then
        rm -rf "$VENV"
        die "pip could not install infinity-emb $INFINITY_VERSION into the venv (no package index reachable?)"
    fi
    if ! verify_venv; then
        rm -rf "$VENV"
        die "the venv does not work (see above); nothing was cached"
    fi
    touch "$VENV/.rerank-bridge-complete"
    log "venv ready"
}

CACHE_LOCK_FD=""

ensure_venv() {
    set_venv_dir
    venv_is_current && return 0
    take_lock "$CACHE_DIR/.lock" CACHE_LOCK_FD # one builder of the cache at a time
    venv_is_current || make_venv                 # a second start finds the first one's venv
    release_lock "$CACHE_LOCK_FD"
    CACHE_LOCK_FD=""
}

# ---------------------------------------------------------------- the server

serves_model() {
    # The server on $URL is an infinity that serves $NAME for reranking (GET /models lists each model with
    # its capabilities); anything else on the port is not ours. A server started with the API key wants it on
    # /models too; curl reads that header from stdin, so the key is on no command line.
    { [ -z "${RERANK_INFINITY_API_KEY:-}" ] || printf 'Authorization: Bearer %s\n' "$RERANK_INFINITY_API_KEY"; } |
        curl -fsS -m 5 -H @- "$URL/models" 2>/dev/null | "$PYTHON" -c '
import json, sys
try:
    data = json.load(sys.stdin)["data"]
except (ValueError, KeyError, TypeError):
    sys.exit(1)
sys.exit(0 if any(m.get("id") == sys.argv[1] and "rerank" in m.get("capabilities", []) for m in data) else 1)
' "$NAME"
}

is_ours() {
    # is_ours PID (for lib/proc.sh): the process runs this cache's infinity_emb with --port $PORT.
    local pid="$1" arg saw_cache="" prev="" saw_port=""
    [ -r "/proc/$pid/cmdline" ] || return 1
    while IFS= read -r -d '' arg; do
        case "$arg" in "$CACHE_DIR"/*/bin/infinity_emb) saw_cache=1 ;; esac
        if [ "$prev" = "--port" ] && [ "$arg" = "$PORT" ]; then saw_port=1; fi
        prev="$arg"
    done <"/proc/$pid/cmdline"
    [ -n "$saw_cache" ] && [ -n "$saw_port" ]
}

launch_server() {
    # In its own session (setsid: a Ctrl-C in the caller's terminal does not reach it), in the background;
    # the subshell, setsid and env exec, so $! is the server's own pid. The port lock's fd is not inherited
    # (the cache lock is released before). The API key goes by environment only: as a `NAME=value` argument of
    # setsid/env it would show in `ps` for as long as those two run.
    local -a scrub=() name
    for name in $(compgen -e); do
        case "$name" in INFINITY_* | CUDA_VISIBLE_DEVICES) scrub+=("$name") ;; esac
    done
    local -a settings=(
        HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 DO_NOT_TRACK=1
        INFINITY_ANONYMOUS_USAGE_STATS=0 CUDA_VISIBLE_DEVICES=
        "HF_HOME=$RUN_DIR/home" "INFINITY_HOME=$RUN_DIR/home" TOKENIZERS_PARALLELISM=false
    )
    if [ -n "${RERANK_INFINITY_THREADS:-}" ]; then
        settings+=("OMP_NUM_THREADS=$RERANK_INFINITY_THREADS" "MKL_NUM_THREADS=$RERANK_INFINITY_THREADS")
    fi
    mkdir -p "$RUN_DIR/home"
    rm -f "$PID_FILE"
    (
        [ ${#scrub[@]} -eq 0 ] || unset "${scrub[@]}"
        if [ -n "${RERANK_INFINITY_API_KEY:-}" ]; then export INFINITY_API_KEY="$RERANK_INFINITY_API_KEY"; fi
        exec setsid env "${settings[@]}" "$VENV/bin/infinity_emb" v2 \
            --model-id "$MODEL" --served-model-name "$NAME" \
            --engine torch --device cpu --dtype float32 --no-bettertransformer --no-compile \
            --batch-size "$BATCH_SIZE" --host 127.0.0.1 --port "$PORT" --log-level info
    ) >"$LOG_FILE" 2>&1 </dev/null {RUN_LOCK_FD}>&- &
    LAUNCHED_PID=$!
    echo "$LAUNCHED_PID" >"$PID_FILE"
}

cmd_start() {
    local t0 pid ready=0
    t0="$(now)"
    take_lock "$RUN_ROOT/$PORT.lock" RUN_LOCK_FD # one start per port at a time
    if serves_model; then
        log "already running at $URL, serving $NAME"
        echo "$URL"
        return 0
    fi
    if ! pid="$(running_pid)"; then
        port_in_use && die "port $PORT is taken by something that is not an infinity serving $NAME; use --port"
        [ -f "$MODEL/config.json" ] || die "no model at $MODEL (config.json missing); use --model"
        ensure_venv
        log "starting infinity-emb $INFINITY_VERSION on $URL with $MODEL as \"$NAME\" (CPU, float32)"
        launch_server
        pid="$LAUNCHED_PID"
    else
        log "process $pid is running; waiting for it to serve $NAME"
    fi
    await_ready serves_model "$pid" 0.3 || ready=$?
    if [ "$ready" = 1 ]; then
        rm -f "$PID_FILE"
        show_log_tail "$LOG_FILE"
        die "infinity exited during startup after $(elapsed_since "$t0")s${EXIT_STATUS:+ (exit code $EXIT_STATUS)} (log: $LOG_FILE)"
    elif [ "$ready" = 2 ]; then
        show_log_tail "$LOG_FILE"
        die "not serving $NAME after ${START_TIMEOUT}s (log: $LOG_FILE; still running: stop it with $0 stop --port $PORT)"
    fi
    log "serving $NAME at $URL/rerank after $(elapsed_since "$t0")s (pid $pid)"
    record_launch "$pid"
    echo "$URL"
}

cmd_check() {
    local problem missing="" tool
    for tool in curl flock setsid; do
        command -v "$tool" >/dev/null || missing="${missing:+$missing and }$tool"
    done
    if [ -z "$missing" ] && serves_model; then
        log "an infinity serving $NAME answers at $URL: start needs nothing else"
        return 0
    fi
    [ -f "$MODEL/config.json" ] || missing="the model directory $MODEL"
    set_venv_dir
    if ! venv_is_current; then
        if ! problem="$(check_python)"; then
            missing="${missing:+$missing and }$problem"
        else
            local probe
            probe="$(mktemp -d)"
            if ! "$PYTHON" -m pip download --quiet --disable-pip-version-check --no-input --no-deps \
                --dest "$probe" "infinity-emb==$INFINITY_VERSION" >/dev/null 2>&1; then
                missing="${missing:+$missing and }a reachable package index (to download infinity-emb $INFINITY_VERSION once)"
            fi
            rm -rf "$probe"
        fi
    fi
    if [ -n "$missing" ]; then
        log "start needs $missing"
        return 4
    fi
    if venv_is_current; then
        log "start has what it needs (the cached venv $VENV)"
    else
        log "start has what it needs (it makes the venv $VENV first: a one-time download)"
    fi
}

cmd_status() {
    local pid
    pid="$(running_pid || true)"
    if serves_model; then
        log "serving $NAME at $URL${pid:+ (pid $pid)}"
        return 0
    fi
    report_down "$pid" "does not serve $NAME at $URL"
}

main() {
    local command="${1:-}"
    [ $# -eq 0 ] || shift
    parse_options "$@"
    case "$command" in
    check) cmd_check ;;
    install) ensure_venv && echo "$VENV" ;;
    venv)
        set_venv_dir
        echo "$VENV"
        venv_is_current || return 3
        ;;
    start) cmd_start ;;
    stop) stop_server TERM 30 ;;
    kill) stop_server KILL 30 ;; # a crashed scorer, for tests
    status) cmd_status ;;
    url) echo "$URL" ;;
    *) usage ;;
    esac
}

main "$@"
