# shellcheck shell=bash
# Process handling shared by the scripts that run a local server for the bridge's tests:
# scripts/lib/engine.sh (so scripts/opensearch.sh and scripts/elasticsearch.sh) and scripts/infinity.sh.
# Sourced, never executed.
#
# Why a library: each of them runs one server per port from a run dir with a pidfile, under a port lock,
# waits for it to answer, hands it to its caller through RERANK_BRIDGE_LAUNCHED_FILE, and stops only the
# process it started. Their safety rules (never signal a pid that is not ours, never build a cache twice at
# once, never wait forever on a dead server) live here once, so a fix reaches every script.
#
# The sourcing script sets (before calling these functions):
#   LOG_TAG        prefix of every message, e.g. "opensearch.sh"
#   PORT URL PID_FILE START_TIMEOUT
#   SERVER_LABEL   what the pidfile's process is, in messages: "the OpenSearch node", "the infinity server"
# optionally:
#   LOG_TAIL_EXCLUDE  grep -v pattern applied to log tails (e.g. stack frames)
# and defines:
#   is_ours PID    exit 0 when PID is the server this script runs on $PORT
# It stores the pid of the process it launches in LAUNCHED_PID.

log() { printf '[%s] %s\n' "$LOG_TAG" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# Timing for the "healthy after N s" messages.
now() { date +%s.%N; }
elapsed_since() { awk -v s="$1" -v e="$(now)" 'BEGIN { printf "%.1f", e - s }'; }

port_in_use() {
    # bash's /dev/tcp: no extra tool needed to see whether anything listens.
    (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null
}

# ---------------------------------------------------------------- locks

# How long a start waits for another one that holds the cache or port lock
# (a first download takes minutes; a stuck holder must not block forever).
LOCK_TIMEOUT="${RERANK_BRIDGE_LOCK_TIMEOUT:-1800}"

take_lock() {
    # take_lock FILE VAR: an exclusive flock on FILE, its fd stored in VAR.
    # Two starts at once (two shells, CI and a developer) used to build the
    # cache into the same folders and left it half-built for good; now the
    # second waits, then finds the first one's result.
    local file="$1" var="$2" fd
    mkdir -p "$(dirname "$file")"
    exec {fd}>>"$file"
    printf -v "$var" '%s' "$fd"
    if ! flock -n "$fd"; then
        log "waiting for another start that holds $file"
        flock -w "$LOCK_TIMEOUT" "$fd" || die "still locked after ${LOCK_TIMEOUT}s: $file"
    fi
}

release_lock() {
    # release_lock FD: closing the fd drops the lock.
    [ -n "${1:-}" ] || return 0
    eval "exec $1>&-"
}

# ---------------------------------------------------------------- the server's process

LAUNCHED_PID="" # the process this run of the script launched (set by the sourcing script's launcher)

running_pid() {
    # Prints the pid from the pidfile when that process is ours (is_ours), so
    # that start/stop/status only ever touch the server this script started
    # on $PORT. A live pid alone proves nothing: after a crash or a reboot the
    # pidfile's number may name any process, and `stop`, often run as root,
    # would kill it. A pidfile naming a dead or foreign process is stale:
    # removed. (An empty one is left alone: the server may be writing it.)
    local pid
    [ -f "$PID_FILE" ] || return 1
    pid="$(cat "$PID_FILE" 2>/dev/null || true)"
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    if is_ours "$pid"; then
        echo "$pid"
        return 0
    fi
    log "removing the stale $PID_FILE: pid $pid is not $SERVER_LABEL of port $PORT"
    rm -f "$PID_FILE" 2>/dev/null || true
    return 1
}

await_ready() {
    # await_ready CHECK PID INTERVAL: polls the function CHECK every INTERVAL
    # seconds until it succeeds (returns 0), the process PID is gone (1), or
    # START_TIMEOUT seconds have passed (2). Watching the pid means a server
    # that dies while loading is noticed at once, not after START_TIMEOUT.
    # When PID is the one this script launched, EXIT_STATUS holds its exit code.
    local check="$1" pid="$2" interval="$3" deadline
    # shellcheck disable=SC2034 # read by the sourcing script
    EXIT_STATUS=""
    deadline=$(($(date +%s) + START_TIMEOUT))
    until "$check"; do
        if ! kill -0 "$pid" 2>/dev/null; then
            if [ "$pid" = "$LAUNCHED_PID" ]; then
                # shellcheck disable=SC2034 # read by the sourcing script
                wait "$pid" && EXIT_STATUS=0 || EXIT_STATUS=$?
            fi
            return 1
        fi
        [ "$(date +%s)" -lt "$deadline" ] || return 2
        sleep "$interval"
    done
}

record_launch() {
    # record_launch PID: when PID is the process this start launched (not one
    # it found running), write $URL into $RERANK_BRIDGE_LAUNCHED_FILE: who
    # started the server owns it and stops it (CI, tests/engine.py read it).
    if [ -n "${RERANK_BRIDGE_LAUNCHED_FILE:-}" ] && [ "$1" = "$LAUNCHED_PID" ]; then
        echo "$URL" >"$RERANK_BRIDGE_LAUNCHED_FILE"
    fi
}

show_log_tail() {
    # show_log_tail FILE [OFFSET]: the last 40 lines of what FILE got past
    # byte OFFSET (logs that survive restarts: only this start's part), on
    # stderr, so that a failed start explains itself.
    local file="$1" offset="${2:-0}"
    [ -s "$file" ] || return 0
    [ "$(stat -c %s "$file")" -gt "$offset" ] || return 0
    log "---- last lines of $file"
    if [ -n "${LOG_TAIL_EXCLUDE:-}" ]; then
        tail -c +$((offset + 1)) "$file" | grep -v "$LOG_TAIL_EXCLUDE" | tail -n 40 >&2
    else
        tail -c +$((offset + 1)) "$file" | tail -n 40 >&2
    fi
}

wait_gone() {
    # wait_gone PID TENTHS: until the pid is gone or TENTHS tenths of a second have passed.
    local pid="$1" n
    for ((n = 0; n < $2; n++)); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    ! kill -0 "$pid" 2>/dev/null
}

stop_server() {
    # stop_server SIGNAL GRACE_S: sends SIGNAL to the pidfile's process, only
    # when it is ours (a server someone else runs on $PORT is never touched),
    # waits up to GRACE_S seconds for it to go, then SIGKILLs it if it is
    # still ours (checked again: the pid may have been reused meanwhile).
    local signal="$1" grace="$2" pid
    if ! pid="$(running_pid)"; then
        log "not running (no live pid in $PID_FILE)"
        return 0
    fi
    log "stopping pid $pid (SIG$signal)"
    if ! kill "-$signal" "$pid" 2>/dev/null; then
        is_ours "$pid" || { rm -f "$PID_FILE"; log "stopped"; return 0; } # gone meanwhile
        die "cannot signal pid $pid (run stop as its owner or as root)"
    fi
    if ! wait_gone "$pid" $((grace * 10)) && is_ours "$pid"; then
        log "pid $pid ignored SIG$signal; sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        wait_gone "$pid" 100 || die "pid $pid survived SIGKILL"
    fi
    rm -f "$PID_FILE"
    log "stopped"
}

report_down() {
    # report_down PID NOT_READY: the status line of a server that does not
    # answer (NOT_READY says how, for a live PID); returns 3, so that callers
    # can tell "down" from errors.
    if [ -n "$1" ]; then
        log "pid $1 is running but $2 (yet)"
    else
        log "not running on $URL"
    fi
    return 3
}
