# shellcheck shell=bash
# Shared machinery of scripts/opensearch.sh and scripts/elasticsearch.sh:
# both run a search engine's Maven Central "integ-test zip" as a loopback-only
# single node, without Docker, in the same way. Sourced, never executed.
#
# Why a library: the two scripts differ only in the engine's coordinates,
# module assembly, launcher environment and config extras; everything else
# (Java choice, Maven fetching, run dir, commands; process handling via
# lib/proc.sh, which scripts/infinity.sh shares) lives here
# so that a fix to one engine's lifecycle reaches the other.
#
# The sourcing script sets, then calls set_engine_paths:
#   ENGINE_ID          "opensearch" / "elasticsearch": cache, dist and pidfile names
#   ENGINE_NAME        "OpenSearch" / "Elasticsearch" (messages)
#   ENGINE_TAG         script name used as log prefix, e.g. "opensearch.sh"
#   ENGINE_ENV_PREFIX  "OPENSEARCH" / "ELASTICSEARCH": names $PREFIX_PORT and
#                      $PREFIX_JAVA_HOME in messages and the JDK lookup
#   ENGINE_VERSION ENGINE_USER PORT RUN_ROOT START_TIMEOUT
#   JAVA_MIN JAVA_MAX  supported Java majors (inclusive)
#   DIST_COORDS        Maven coordinates of the integ-test zip
#   MODULE_GROUP       Maven group of the extra modules
#   MODULE_POM_PREFIX  artifactId prefix of the throwaway module poms
#   SERVER_GROUP SERVER_ARTIFACT  the server jar, excluded from module deps
#   MODULES            extra modules, one "folder|artifactId|class|extended|description" a line
# optionally:
#   UNSUPPORTED_REASON non-empty: `start` refuses with this message
#   LOG_TAIL_EXCLUDE   grep -v pattern applied to log tails (e.g. stack frames)
# and defines these functions:
#   healthy            exit 0 when $URL is our engine and at least yellow
#   launch_node JDK    calls run_launcher with the engine's env and launcher (not daemonized)
#   write_descriptor DIR NAME CLASS EXTENDED DESCRIPTION, write_security_policy DIR NAME
#   prepare_run_dir    built from copy_home_dir, reset_run_state, write_node_config, own_run_dir
# Logging, locks, the pidfile's ownership check, waiting for health and
# stopping come from lib/proc.sh (shared with scripts/infinity.sh).

# SCRIPTDIR is scripts/lib when this file is checked alone, scripts/ when through opensearch.sh:
# shellcheck source-path=SCRIPTDIR source-path=SCRIPTDIR/.. source=lib/proc.sh
source "$(dirname "${BASH_SOURCE[0]}")/proc.sh"

DEP_PLUGIN="org.apache.maven.plugins:maven-dependency-plugin:3.6.1"
# shellcheck disable=SC2034 # used by the scripts' launch_node
JAVA_OPTS_DEFAULT="-Xms512m -Xmx512m" # small machine

set_engine_paths() {
    # One cache and run-dir layout for both engines, so the paths cannot drift.
    CACHE_DIR="${XDG_CACHE_HOME:-$HOME/.cache}/rerank-bridge/$ENGINE_ID"
    M2_REPO="$CACHE_DIR/m2"                # private Maven repo: the cache is self-contained
    DIST_NAME="$ENGINE_ID-$ENGINE_VERSION" # the integ-test zip's file name and top folder
    DIST_DIR="$CACHE_DIR/$DIST_NAME"       # assembled distribution (zip + modules)
    RUN_DIR="$RUN_ROOT/$PORT"              # copy of DIST_DIR + data/logs, owned by $ENGINE_USER
    HOME_DIR="$RUN_DIR/home"
    PID_FILE="$RUN_DIR/$ENGINE_ID.pid"
    URL="http://127.0.0.1:$PORT"
    # shellcheck disable=SC2034 # read by lib/proc.sh
    LOG_TAG="$ENGINE_TAG" SERVER_LABEL="the $ENGINE_NAME node"
}

# Root must hand the node to a service user (the launchers refuse root).
is_root() { [ "$(id -u)" -eq 0 ]; }

is_ours() {
    # is_ours PID (for lib/proc.sh): the process runs as the run dir's owner
    # with this port's run dir on its command line (the node's home, config,
    # tmp dir and pidfile all are).
    local pid="$1" owner
    [ -d "/proc/$pid" ] || return 1
    owner="$(stat -c %u "$RUN_DIR" 2>/dev/null)" || return 1
    [ "$(stat -c %u "/proc/$pid" 2>/dev/null)" = "$owner" ] || return 1
    grep -qzF -- "$RUN_DIR/" "/proc/$pid/cmdline" 2>/dev/null # -z: its arguments end in NULs
}

# ---------------------------------------------------------------- Java

java_major() {
    # "17.0.15" -> 17, "1.8.0_x" -> 8
    "$1/bin/java" -version 2>&1 | awk -F'"' '/version/ { split($2, v, "."); print (v[1] == "1" ? v[2] : v[1]); exit }'
}

find_java_home() {
    # Both engines rely on the security manager (gone in Java 24) and have a
    # minimum Java, so an env JDK outside JAVA_MIN..JAVA_MAX falls back to
    # /usr/lib/jvm's Java 17, then to the `java` on PATH. Fails when none fits.
    local candidate major java_home_var="${ENGINE_ENV_PREFIX}_JAVA_HOME"
    for candidate in "${!java_home_var:-}" "${JAVA_HOME:-}" \
        /usr/lib/jvm/java-17-openjdk-amd64 /usr/lib/jvm/java-17-openjdk-arm64 /usr/lib/jvm/java-17-openjdk \
        "$(dirname "$(dirname "$(readlink -f "$(command -v java 2>/dev/null || echo /nonexistent)")")")"; do
        if [ -z "$candidate" ] || [ ! -x "$candidate/bin/java" ]; then
            continue
        fi
        major="$(java_major "$candidate")"
        if [ -n "$major" ] && [ "$major" -ge "$JAVA_MIN" ] && [ "$major" -le "$JAVA_MAX" ]; then
            echo "$candidate"
            return 0
        fi
        log "skipping JDK $candidate (Java $major; $ENGINE_NAME $ENGINE_VERSION needs $JAVA_MIN..$JAVA_MAX)"
    done
    return 1
}

pick_java_home() {
    find_java_home || die "no Java $JAVA_MIN..$JAVA_MAX found; set ${ENGINE_ENV_PREFIX}_JAVA_HOME"
}

# ---------------------------------------------------------------- download

mvn_run() {
    # mvn_run LOG ARGS...: quiet on success; on failure show Maven's output (it
    # prints stray colour codes even in batch mode, hence the log file and the
    # sed). The private repo under $CACHE_DIR keeps the cache self-contained.
    command -v mvn >/dev/null || die "mvn not found (apt-get install maven)"
    local out="$1"
    shift
    if ! mvn -B -q -Dmaven.repo.local="$M2_REPO" "$@" >"$out" 2>&1; then
        sed -E 's/\x1b\[[0-9;]*m//g' "$out" | tail -n 30 >&2
        return 1
    fi
}

distribution_stamp() {
    # What $DIST_DIR is built from: a changed module list rebuilds it.
    printf '%s\n%s' "$ENGINE_VERSION" "$MODULES" | sha256sum | cut -d' ' -f1
}

verify_distribution() {
    # verify_distribution DIR: prints each defect and fails when DIR is not a
    # complete distribution (launcher, server jar, every module with its
    # descriptor and jar, nothing nested). Run before stamping and before
    # every use, so a cache broken by an older script rebuilds itself.
    local dir="$1" name artifact module found=0 bad=0
    [ -x "$dir/bin/$ENGINE_ID" ] || { log "  $dir: no executable bin/$ENGINE_ID"; bad=1; }
    [ -f "$dir/config/jvm.options" ] || { log "  $dir: no config/jvm.options"; bad=1; }
    [ -f "$dir/lib/$SERVER_ARTIFACT-$ENGINE_VERSION.jar" ] ||
        { log "  $dir: no lib/$SERVER_ARTIFACT-$ENGINE_VERSION.jar"; bad=1; }
    [ ! -e "$dir/$DIST_NAME" ] || { log "  $dir: a nested $DIST_NAME/ (a half-finished unpack)"; bad=1; }
    for module in "$dir"/modules/*/; do
        [ -d "$module" ] || continue
        found=1
        [ -f "$module/plugin-descriptor.properties" ] ||
            { log "  $dir: modules/$(basename "$module") has no plugin-descriptor.properties"; bad=1; }
    done
    [ "$found" = 1 ] || { log "  $dir: no modules/"; bad=1; }
    while IFS='|' read -r name artifact _; do
        [ -n "$name" ] || continue
        module="$dir/modules/$name"
        if [ ! -f "$module/$artifact-$ENGINE_VERSION.jar" ]; then
            log "  $dir: modules/$name lacks $artifact-$ENGINE_VERSION.jar"
            bad=1
        elif ! grep -qx "name=$name" "$module/plugin-descriptor.properties" 2>/dev/null; then
            log "  $dir: modules/$name/plugin-descriptor.properties does not name $name"
            bad=1
        fi
    done <<<"$MODULES"
    return "$bad"
}

distribution_is_current() {
    # distribution_is_current DIR: stamped for this version and module list, and complete.
    local dir="${1:-$DIST_DIR}" stamp="${1:-$DIST_DIR}/.rerank-bridge-stamp"
    [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$(distribution_stamp)" ] && verify_distribution "$dir" 2>/dev/null
}

fetch_integ_test_zip() {
    # The zip is kept in download/ once complete: fetched into the build dir,
    # tested, then renamed into place, so a killed fetch leaves nothing behind.
    local build="$1" zip="$CACHE_DIR/download/$DIST_NAME.zip"
    if [ -s "$zip" ] && ! python3 -m zipfile -t "$zip" >/dev/null 2>&1; then
        log "discarding the damaged $zip"
        rm -f "$zip"
    fi
    [ -s "$zip" ] && return 0
    mkdir -p "$CACHE_DIR/download" "$build/download"
    mvn_run "$build/mvn.log" "$DEP_PLUGIN:copy" -Dartifact="$DIST_COORDS" -DoutputDirectory="$build/download" ||
        die "could not fetch $DIST_COORDS"
    python3 -m zipfile -t "$build/download/$DIST_NAME.zip" >/dev/null || die "$DIST_COORDS is not a valid zip"
    mv "$build/download/$DIST_NAME.zip" "$zip"
}

unpack_integ_test_zip() {
    # unpack_integ_test_zip BUILD: $BUILD/$DIST_NAME from the zip; unzip when
    # present, else Python's zipfile.
    local build="$1" zip="$CACHE_DIR/download/$DIST_NAME.zip" dist="$1/$DIST_NAME"
    mkdir -p "$build/extract"
    if command -v unzip >/dev/null; then
        unzip -q "$zip" -d "$build/extract"
    else
        python3 -m zipfile -e "$zip" "$build/extract"
    fi
    [ -d "$build/extract/$DIST_NAME" ] || die "$zip has no top folder $DIST_NAME/"
    mv "$build/extract/$DIST_NAME" "$dist"
    chmod +x "$dist"/bin/* # python's zipfile drops the exec bits
    rm -rf "$dist/jdk"     # never bundled in integ-test zips; be sure we use ours
}

module_pom() {
    # A throwaway pom whose only dependency is the module jar, so that
    # copy-dependencies brings its runtime deps transitively. The server jar is
    # excluded: it is in lib/ already (OpenSearch's lang-painless spi drags it,
    # and all of lib/, in).
    local artifact="$1"
    cat <<POM
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.rerank-bridge</groupId>
  <artifactId>$MODULE_POM_PREFIX-$artifact</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>$MODULE_GROUP</groupId>
      <artifactId>$artifact</artifactId>
      <version>$ENGINE_VERSION</version>
      <exclusions>
        <exclusion><groupId>$SERVER_GROUP</groupId><artifactId>$SERVER_ARTIFACT</artifactId></exclusion>
      </exclusions>
    </dependency>
  </dependencies>
</project>
POM
}

jar_basename() {
    # "log4j-api-2.25.4.jar" -> "log4j-api", "zstd-jni-1.5.5-5.jar" -> "zstd-jni"
    basename "$1" | sed -E 's/-[0-9].*\.jar$//'
}

drop_jars_already_in_lib() {
    # The server's lib/ is the parent class loader of every module: a second
    # copy of one of its jars in a module is "jar hell" and the node refuses to start.
    local dist="$1" module_dir="$2" jar base
    for jar in "$module_dir"/*.jar; do
        base="$(jar_basename "$jar")"
        if compgen -G "$dist/lib/$base-[0-9]*.jar" >/dev/null; then
            rm -f "$jar"
        fi
    done
}

install_module() {
    # Module jars on Maven Central are bare: fetch one with its runtime deps,
    # then add what the engine's own packaging would have added (the script's
    # descriptor and security policy).
    local build="$1" name="$2" artifact="$3" classname="$4" extended="$5" description="$6"
    local work="$build/work/$name" dir="$build/$DIST_NAME/modules/$name"
    mkdir -p "$work" "$dir"
    module_pom "$artifact" >"$work/pom.xml"
    mvn_run "$work/mvn.log" -f "$work/pom.xml" "$DEP_PLUGIN:copy-dependencies" \
        -DincludeScope=runtime -DoutputDirectory="$dir" ||
        die "could not fetch $MODULE_GROUP:$artifact:$ENGINE_VERSION and its dependencies"
    drop_jars_already_in_lib "$build/$DIST_NAME" "$dir"
    write_descriptor "$dir" "$name" "$classname" "$extended" "$description"
    write_security_policy "$dir" "$name"
    # shellcheck disable=SC2012 # jar names are plain; ls gives a sorted, readable list
    log "  module $name: $(cd "$dir" && ls -- *.jar | tr '\n' ' ')"
}

install_modules() {
    # Every line of $MODULES becomes a module under BUILD/$DIST_NAME/modules.
    local build="$1" name artifact classname extended description
    while IFS='|' read -r name artifact classname extended description; do
        [ -n "$name" ] || continue
        install_module "$build" "$name" "$artifact" "$classname" "$extended" "$description"
    done <<<"$MODULES"
}

BUILD_DIR="" # the build in progress, removed on exit whatever happens

remove_build_dir() { [ -z "$BUILD_DIR" ] || rm -rf "$BUILD_DIR"; }

build_distribution() {
    # Builds the distribution in a private folder, verifies and stamps it, and
    # only then renames it to $DIST_DIR: a failed or killed build never leaves
    # a stamped, incomplete cache. Runs under the cache lock.
    local old
    rm -rf "$CACHE_DIR"/build.* "$CACHE_DIR/extract" "$CACHE_DIR/work" # left by killed builds (we hold the lock)
    BUILD_DIR="$(mktemp -d "$CACHE_DIR/build.XXXXXX")"
    trap remove_build_dir EXIT
    log "preparing $ENGINE_NAME $ENGINE_VERSION in $DIST_DIR (one-time download from Maven Central)"
    fetch_integ_test_zip "$BUILD_DIR"
    unpack_integ_test_zip "$BUILD_DIR"
    install_modules "$BUILD_DIR"
    if ! verify_distribution "$BUILD_DIR/$DIST_NAME"; then
        die "the assembled distribution is incomplete (see above); nothing was cached"
    fi
    distribution_stamp >"$BUILD_DIR/$DIST_NAME/.rerank-bridge-stamp"
    if [ -e "$DIST_DIR" ]; then
        old="$BUILD_DIR/previous"
        mv "$DIST_DIR" "$old"
    fi
    mv "$BUILD_DIR/$DIST_NAME" "$DIST_DIR"
    remove_build_dir
    BUILD_DIR=""
}

ensure_distribution() {
    # Builds $DIST_DIR once: the integ-test zip plus $MODULES. Caller holds the cache lock.
    distribution_is_current && return 0
    if [ -e "$DIST_DIR" ]; then
        log "the cached $DIST_DIR is outdated or incomplete; rebuilding it"
        verify_distribution "$DIST_DIR" || true
    fi
    build_distribution
}

# ---------------------------------------------------------------- run dir

ensure_user() {
    # The launchers refuse to run as root ("can not run ... as root").
    if ! id "$ENGINE_USER" >/dev/null 2>&1; then
        log "creating system user $ENGINE_USER"
        useradd --system --no-create-home --shell /usr/sbin/nologin "$ENGINE_USER"
    fi
}

copy_home_dir() {
    # A private copy per port: the cache may sit under /root (unreadable to the
    # service user), and what the node writes must be writable by it. Recopied
    # only when the distribution changed or the copy is incomplete; copied
    # aside and renamed, so an interrupted copy is never taken for a good one.
    mkdir -p "$RUN_ROOT" "$RUN_DIR"
    chmod 755 "$RUN_ROOT"
    if ! cmp -s "$DIST_DIR/.rerank-bridge-stamp" "$HOME_DIR/.rerank-bridge-stamp" ||
        ! verify_distribution "$HOME_DIR" 2>/dev/null; then
        rm -rf "$HOME_DIR" "$HOME_DIR.new"
        cp -a "$DIST_DIR" "$HOME_DIR.new"
        mv "$HOME_DIR.new" "$HOME_DIR"
    fi
}

reset_run_state() {
    # The node's data survives a restart: start never deletes indices (tests
    # create, and remove, their own uniquely named ones). `wipe` deletes it.
    rm -rf "$RUN_DIR/tmp" "$PID_FILE"
    mkdir -p "$RUN_DIR/data" "$RUN_DIR/logs" "$RUN_DIR/tmp"
}

write_node_config() {
    # The settings both engines share, written to the given config file.
    cat >"$1" <<EOC
# Written by scripts/$ENGINE_TAG: loopback-only single node for tests.
cluster.name: rerank-bridge
node.name: rerank-bridge-$PORT
path.data: $RUN_DIR/data
path.logs: $RUN_DIR/logs
network.host: 127.0.0.1
http.port: $PORT
discovery.type: single-node
# Small shared disks must not turn indices read-only mid-test.
cluster.routing.allocation.disk.threshold_enabled: false
action.auto_create_index: true
EOC
}

own_run_dir() {
    # Hands the run dir to the service user that the node runs as under root.
    if is_root; then
        chown -R "$ENGINE_USER:" "$RUN_DIR"
    fi
}

# ---------------------------------------------------------------- commands

NODE_LOG_OFFSET=0 # size of the node's log before this start: logs survive restarts

print_log_tail() {
    # Shown before dying, so a failed start explains itself on stderr; only
    # what this start wrote (launcher.log is rewritten per start).
    show_log_tail "$RUN_DIR/launcher.log"
    show_log_tail "$RUN_DIR/logs/rerank-bridge.log" "$NODE_LOG_OFFSET"
}

run_launcher() {
    # Runs the engine's launcher ("$@", from launch_node) in the foreground of
    # its own session, in the background of ours, as the service user when
    # root. Not daemonized (-d): then the node's pid is known from the first
    # instant, and a node that dies while loading its modules is noticed at
    # once instead of after START_TIMEOUT. From the home dir: jvm.options
    # uses relative paths (logs/gc.log). Lock fds are closed for the node, so
    # it never holds a lock after this script exits.
    local -a launch=("$@")
    if is_root; then
        launch=(runuser -u "$ENGINE_USER" -- "${launch[@]}")
    fi
    NODE_LOG_OFFSET="$(stat -c %s "$RUN_DIR/logs/rerank-bridge.log" 2>/dev/null || echo 0)"
    local here="$PWD"
    cd "$HOME_DIR" || die "cannot enter $HOME_DIR"
    # setsid -w stays the parent when it must fork: its pid lives exactly as long as the node.
    setsid -w "${launch[@]}" >"$RUN_DIR/launcher.log" 2>&1 </dev/null {RUN_LOCK_FD}>&- &
    LAUNCHED_PID=$! # the launcher process: alive as long as the node
    cd "$here" || die "cannot return to $here"
}

cmd_start() {
    local t0 pid java_home ready=0
    t0="$(now)"
    [ -z "${UNSUPPORTED_REASON:-}" ] || die "$UNSUPPORTED_REASON"
    # One start per port at a time: a second one waits, then finds the first's node.
    take_lock "$RUN_ROOT/$PORT.lock" RUN_LOCK_FD
    if healthy; then
        log "already running and healthy at $URL"
        echo "$URL"
        return 0
    fi
    if ! pid="$(running_pid)"; then
        if port_in_use; then
            die "port $PORT is taken by something that is not a healthy $ENGINE_NAME; set ${ENGINE_ENV_PREFIX}_PORT"
        fi
        take_lock "$CACHE_DIR/.lock" CACHE_LOCK_FD # one builder of the shared cache at a time
        ensure_distribution
        java_home="$(pick_java_home)"
        if is_root; then ensure_user; fi
        prepare_run_dir
        release_lock "$CACHE_LOCK_FD"
        log "starting $ENGINE_NAME $ENGINE_VERSION on $URL (JDK $java_home)"
        launch_node "$java_home"
        pid="$LAUNCHED_PID"
    else
        log "process $pid is running; waiting for it to become healthy"
    fi

    await_ready healthy "$pid" 0.5 || ready=$?
    if [ "$ready" = 1 ]; then
        print_log_tail
        die "$ENGINE_NAME exited during startup after $(elapsed_since "$t0")s${EXIT_STATUS:+ (exit code $EXIT_STATUS)} (logs in $RUN_DIR)"
    elif [ "$ready" = 2 ]; then
        print_log_tail
        die "not healthy after ${START_TIMEOUT}s (logs in $RUN_DIR/logs)"
    fi
    log "healthy at $URL after $(elapsed_since "$t0")s"
    record_launch "$pid"
    echo "$URL"
}

cmd_wipe() {
    # The only command that deletes a node's data: it must be stopped first.
    local pid
    if pid="$(running_pid)"; then
        die "pid $pid is running on $URL; stop it first"
    fi
    rm -rf "$RUN_DIR/data"
    log "deleted the data of the node on port $PORT ($RUN_DIR/data)"
}

cmd_check() {
    # Exit 0 when `start` has what it needs here: a healthy node already on
    # $URL (start just uses it), or a JDK in JAVA_MIN..JAVA_MAX plus `mvn`
    # (unless the distribution is cached). Exit 4, naming what is missing,
    # otherwise: CI installs those before starting. Changes nothing.
    local missing=""
    [ -z "${UNSUPPORTED_REASON:-}" ] || die "$UNSUPPORTED_REASON"
    if healthy; then
        log "a healthy $ENGINE_NAME answers at $URL: start needs nothing else"
        return 0
    fi
    find_java_home >/dev/null || missing="a JDK $JAVA_MIN..$JAVA_MAX (or set ${ENGINE_ENV_PREFIX}_JAVA_HOME)"
    if ! command -v mvn >/dev/null && ! distribution_is_current; then
        missing="${missing:+$missing and }mvn (to download $ENGINE_NAME $ENGINE_VERSION once)"
    fi
    if [ -n "$missing" ]; then
        log "start needs $missing"
        return 4
    fi
    log "start has what it needs (a JDK $JAVA_MIN..$JAVA_MAX$(command -v mvn >/dev/null && echo ' and mvn'))"
}

cmd_status() {
    # Exit 0 when healthy, 3 when not (so callers can tell "down" from errors).
    local pid
    pid="$(running_pid || true)"
    if healthy; then
        log "healthy at $URL${pid:+ (pid $pid)}"
        curl -fsS -m 5 "$URL/_cluster/health" >&2
        echo >&2
        return 0
    fi
    report_down "$pid" "$URL is not healthy"
}

main() {
    # stdout carries only the URL; everything else goes to stderr.
    case "${1:-}" in
    start) cmd_start ;;
    stop) stop_server TERM 60 ;; # up to 60 s for a clean shutdown
    wipe) cmd_wipe ;;
    url) echo "$URL" ;;
    status) cmd_status ;;
    check) cmd_check ;;
    *)
        echo "usage: $0 {start|stop|wipe|url|status|check}" >&2
        exit 2
        ;;
    esac
}
