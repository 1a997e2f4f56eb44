#!/usr/bin/env bash
# Run a real single-node OpenSearch 2.19.x on this machine, without Docker.
#
# Why this exists: the reranking proxy must be tested against the real engine
# (search templates, stored mustache scripts, the `english` analyzer...), and
# there is no Docker engine here. OpenSearch publishes its "integ-test zip"
# (the real launcher, server and config, but only the transport-netty4 module)
# and its standard modules as plain jars on Maven Central, so we fetch those by
# coordinates with `mvn` and assemble the modules/ directory ourselves.
#
# Usage: scripts/opensearch.sh {start|stop|url|status}
#   start   download once (cached), start the node, wait until yellow, print URL
#   stop    stop the node started by this script (pidfile) and wait until gone
#   url     print http://127.0.0.1:$OPENSEARCH_PORT
#   status  print the cluster health; exit 0 when healthy, 3 when not
#
# Environment:
#   OPENSEARCH_PORT       HTTP port (default 9200); each port gets its own run dir
#   OPENSEARCH_VERSION    2.19.x to run (default 2.19.6; newest served for Java 17)
#   OPENSEARCH_JAVA_OPTS  JVM options (default "-Xms512m -Xmx512m": small machine)
#   OPENSEARCH_START_TIMEOUT  seconds to wait for health (default 120)
#   OPENSEARCH_RUN_ROOT   where run dirs live (default /tmp/rerank-bridge-opensearch)
#   OPENSEARCH_JAVA_HOME / JAVA_HOME  JDK to run with (Java 11..21; falls back to 17)
#   XDG_CACHE_HOME        download cache lives in $XDG_CACHE_HOME/rerank-bridge/opensearch
#
# stdout carries only the URL (for `url=$(scripts/opensearch.sh start)`);
# progress and errors go to stderr.
set -euo pipefail

OS_VERSION="${OPENSEARCH_VERSION:-2.19.6}"
PORT="${OPENSEARCH_PORT:-9200}"
JAVA_OPTS_DEFAULT="-Xms512m -Xmx512m"
START_TIMEOUT="${OPENSEARCH_START_TIMEOUT:-120}"
OS_USER="opensearch"

CACHE_DIR="${XDG_CACHE_HOME:-$HOME/.cache}/rerank-bridge/opensearch"
M2_REPO="$CACHE_DIR/m2"                       # private Maven repo: the cache is self-contained
DIST_DIR="$CACHE_DIR/opensearch-$OS_VERSION"  # assembled distribution (zip + modules)
RUN_ROOT="${OPENSEARCH_RUN_ROOT:-/tmp/rerank-bridge-opensearch}"
RUN_DIR="$RUN_ROOT/$PORT"                     # copy of DIST_DIR + data/logs, owned by $OS_USER
HOME_DIR="$RUN_DIR/home"
PID_FILE="$RUN_DIR/opensearch.pid"
URL="http://127.0.0.1:$PORT"

DEP_PLUGIN="org.apache.maven.plugins:maven-dependency-plugin:3.6.1"

# Modules to add to the integ-test zip, one per line:
#   folder | Maven artifactId (group org.opensearch.plugin) | plugin class | extended plugins | description
# Class names were checked against the 2.19.6 jars. analysis-common extends
# lang-painless (its jar registers a PainlessExtension), so painless must stay.
MODULES="
lang-painless|lang-painless|org.opensearch.painless.PainlessPlugin||An easy, safe and fast scripting language for OpenSearch
lang-mustache|lang-mustache-client|org.opensearch.script.mustache.MustachePlugin||Mustache scripting integration for OpenSearch
analysis-common|analysis-common|org.opensearch.analysis.common.CommonAnalysisPlugin|lang-painless|Adds \"built in\" analyzers to OpenSearch.
mapper-extras|mapper-extras-client|org.opensearch.index.mapper.MapperExtrasPlugin||Adds advanced field mappers
reindex|reindex-client|org.opensearch.index.reindex.ReindexPlugin||The Reindex module adds APIs to reindex from one index to another or update documents in place.
"

log() { printf '[opensearch.sh] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

now() { date +%s.%N; }
elapsed_since() { awk -v s="$1" -v e="$(now)" 'BEGIN { printf "%.1f", e - s }'; }

is_root() { [ "$(id -u)" -eq 0 ]; }

healthy() {
    curl -fsS -m 5 "$URL/_cluster/health?wait_for_status=yellow&timeout=1s" >/dev/null 2>&1
}

port_in_use() {
    # bash's /dev/tcp: no extra tool needed to see whether anything listens.
    (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null
}

running_pid() {
    # Prints the pid from the pidfile when that process is alive.
    local pid
    [ -f "$PID_FILE" ] || return 1
    pid="$(cat "$PID_FILE" 2>/dev/null || true)"
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && echo "$pid"
}

java_major() {
    # "17.0.15" -> 17, "1.8.0_x" -> 8
    "$1/bin/java" -version 2>&1 | awk -F'"' '/version/ { split($2, v, "."); print (v[1] == "1" ? v[2] : v[1]); exit }'
}

pick_java_home() {
    # OpenSearch 2.19 needs Java 11..21 (Java 24+ dropped the security manager
    # it relies on), so an env JDK outside that range falls back to Java 17.
    local candidate major
    for candidate in "${OPENSEARCH_JAVA_HOME:-}" "${JAVA_HOME:-}" \
        /usr/lib/jvm/java-17-openjdk-amd64 /usr/lib/jvm/java-17-openjdk-arm64 /usr/lib/jvm/java-17-openjdk \
        "$(dirname "$(dirname "$(readlink -f "$(command -v java 2>/dev/null || echo /nonexistent)")")")"; do
        [ -n "$candidate" ] && [ -x "$candidate/bin/java" ] || continue
        major="$(java_major "$candidate")"
        if [ -n "$major" ] && [ "$major" -ge 11 ] && [ "$major" -le 21 ]; then
            echo "$candidate"
            return 0
        fi
        log "skipping JDK $candidate (Java $major; OpenSearch $OS_VERSION needs 11..21)"
    done
    die "no Java 11..21 found; set OPENSEARCH_JAVA_HOME"
}

mvn_run() {
    # Quiet on success; on failure show Maven's output (it prints stray colour
    # codes even in batch mode, hence the log file and the sed).
    command -v mvn >/dev/null || die "mvn not found (apt-get install maven)"
    local out="$CACHE_DIR/mvn.log"
    if ! mvn -B -q -Dmaven.repo.local="$M2_REPO" "$@" >"$out" 2>&1; then
        sed -E 's/\x1b\[[0-9;]*m//g' "$out" | tail -n 30 >&2
        return 1
    fi
}

# ---------------------------------------------------------------- download

module_pom() {
    # A throwaway pom whose only dependency is the module jar, so that
    # copy-dependencies brings its runtime deps transitively. The server jar is
    # excluded: lang-painless' spi drags it (and all of lib/) in.
    local artifact="$1"
    cat <<EOF
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.rerank-bridge</groupId>
  <artifactId>os-module-$artifact</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.opensearch.plugin</groupId>
      <artifactId>$artifact</artifactId>
      <version>$OS_VERSION</version>
      <exclusions>
        <exclusion><groupId>org.opensearch</groupId><artifactId>opensearch</artifactId></exclusion>
      </exclusions>
    </dependency>
  </dependencies>
</project>
EOF
}

jar_basename() {
    # "log4j-api-2.25.4.jar" -> "log4j-api", "zstd-jni-1.5.5-5.jar" -> "zstd-jni"
    basename "$1" | sed -E 's/-[0-9].*\.jar$//'
}

drop_jars_already_in_lib() {
    # The server's lib/ is the parent class loader of every module: a second
    # copy of one of its jars in a module is "jar hell" and the node refuses to start.
    local module_dir="$1" jar base
    for jar in "$module_dir"/*.jar; do
        base="$(jar_basename "$jar")"
        if compgen -G "$DIST_DIR/lib/$base-[0-9]*.jar" >/dev/null; then
            rm -f "$jar"
        fi
    done
}

write_descriptor() {
    # Same keys as the descriptor in the zip's own transport-netty4 module.
    local dir="$1" name="$2" classname="$3" extended="$4" description="$5"
    cat >"$dir/plugin-descriptor.properties" <<EOF
# Written by scripts/opensearch.sh (module jars on Maven Central ship no descriptor).
description=$description
version=$OS_VERSION
name=$name
classname=$classname
java.version=11
opensearch.version=$OS_VERSION
custom.foldername=
extended.plugins=$extended
has.native.controller=false
EOF
}

write_security_policy() {
    # The permissions these modules declare in OpenSearch's source
    # (src/main/plugin-metadata/plugin-security.policy); without them the
    # security manager denies e.g. painless' class generation at runtime.
    local dir="$1" name="$2"
    case "$name" in
    lang-painless)
        cat >"$dir/plugin-security.policy" <<'EOF'
grant {
  // needed to generate runtime classes
  permission java.lang.RuntimePermission "createClassLoader";
  // needed to find the classloader to load whitelisted classes from
  permission java.lang.RuntimePermission "getClassLoader";
};
EOF
        ;;
    lang-mustache)
        cat >"$dir/plugin-security.policy" <<'EOF'
grant {
  // mustache.java reflects over the template's scope objects
  permission java.lang.RuntimePermission "accessDeclaredMembers";
};
EOF
        ;;
    reindex)
        cat >"$dir/plugin-security.policy" <<'EOF'
grant {
  // reindex-from-remote opens sockets through the rest client
  permission java.net.SocketPermission "*", "connect";
};
grant codeBase "${codebase.opensearch-rest-client}" {
  permission java.net.NetPermission "getProxySelector";
};
grant codeBase "${codebase.httpasyncclient}" {
  permission java.net.NetPermission "getProxySelector";
};
EOF
        ;;
    esac
}

install_module() {
    local name="$1" artifact="$2" classname="$3" extended="$4" description="$5"
    local work="$CACHE_DIR/work/$name" dir="$DIST_DIR/modules/$name"
    rm -rf "$work" "$dir"
    mkdir -p "$work" "$dir"
    module_pom "$artifact" >"$work/pom.xml"
    mvn_run -f "$work/pom.xml" "$DEP_PLUGIN:copy-dependencies" \
        -DincludeScope=runtime -DoutputDirectory="$dir" ||
        die "could not fetch org.opensearch.plugin:$artifact:$OS_VERSION and its dependencies"
    drop_jars_already_in_lib "$dir"
    write_descriptor "$dir" "$name" "$classname" "$extended" "$description"
    write_security_policy "$dir" "$name"
    log "  module $name: $(cd "$dir" && ls -- *.jar | tr '\n' ' ')"
}

ensure_distribution() {
    # Builds $DIST_DIR once; the stamp records what it was built from, so a
    # changed module list rebuilds it and an unchanged one is used offline.
    local stamp want zip
    want="$(printf '%s\n%s' "$OS_VERSION" "$MODULES" | sha256sum | cut -d' ' -f1)"
    stamp="$DIST_DIR/.rerank-bridge-stamp"
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
        return 0
    fi
    log "preparing OpenSearch $OS_VERSION in $DIST_DIR (one-time download from Maven Central)"
    mkdir -p "$CACHE_DIR/download"
    zip="$CACHE_DIR/download/opensearch-$OS_VERSION.zip"
    if [ ! -s "$zip" ]; then
        mvn_run "$DEP_PLUGIN:copy" \
            -Dartifact="org.opensearch.distribution.integ-test-zip:opensearch:$OS_VERSION:zip" \
            -DoutputDirectory="$CACHE_DIR/download" ||
            die "could not fetch org.opensearch.distribution.integ-test-zip:opensearch:$OS_VERSION:zip"
    fi
    rm -rf "$DIST_DIR" "$CACHE_DIR/extract"
    mkdir -p "$CACHE_DIR/extract"
    if command -v unzip >/dev/null; then
        unzip -q "$zip" -d "$CACHE_DIR/extract"
    else
        python3 -m zipfile -e "$zip" "$CACHE_DIR/extract"
    fi
    mv "$CACHE_DIR/extract/opensearch-$OS_VERSION" "$DIST_DIR"
    rmdir "$CACHE_DIR/extract"
    chmod +x "$DIST_DIR"/bin/* # python's zipfile drops the exec bits

    local name artifact classname extended description
    while IFS='|' read -r name artifact classname extended description; do
        [ -n "$name" ] || continue
        install_module "$name" "$artifact" "$classname" "$extended" "$description"
    done <<<"$MODULES"
    echo "$want" >"$stamp"
}

# ---------------------------------------------------------------- run dir

ensure_user() {
    # The launcher refuses to run as root ("can not run opensearch as root").
    if ! id "$OS_USER" >/dev/null 2>&1; then
        log "creating system user $OS_USER"
        useradd --system --no-create-home --shell /usr/sbin/nologin "$OS_USER"
    fi
}

prepare_run_dir() {
    # A private copy per port: the cache may sit under /root (unreadable to the
    # service user), and data/logs must be writable by it. Data is fresh on
    # every start; tests create their own indices.
    mkdir -p "$RUN_ROOT"
    chmod 755 "$RUN_ROOT"
    if ! cmp -s "$DIST_DIR/.rerank-bridge-stamp" "$HOME_DIR/.rerank-bridge-stamp"; then
        rm -rf "$HOME_DIR"
        mkdir -p "$RUN_DIR"
        cp -a "$DIST_DIR" "$HOME_DIR"
    fi
    rm -rf "$RUN_DIR/data" "$RUN_DIR/logs" "$RUN_DIR/tmp" "$PID_FILE"
    mkdir -p "$RUN_DIR/data" "$RUN_DIR/logs" "$RUN_DIR/tmp"

    cat >"$HOME_DIR/config/opensearch.yml" <<EOF
# Written by scripts/opensearch.sh: loopback-only single node for tests.
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
EOF
    if is_root; then
        chown -R "$OS_USER:" "$RUN_DIR"
    fi
}

# ---------------------------------------------------------------- commands

print_log_tail() {
    local f
    for f in "$RUN_DIR/launcher.log" "$RUN_DIR/logs/rerank-bridge.log"; do
        [ -s "$f" ] || continue
        log "---- last lines of $f"
        tail -n 40 "$f" >&2
    done
}

cmd_start() {
    local t0 pid java_home deadline
    t0="$(now)"
    if healthy; then
        log "already running and healthy at $URL"
        echo "$URL"
        return 0
    fi
    if ! pid="$(running_pid)"; then
        if port_in_use; then
            die "port $PORT is taken by something that is not a healthy OpenSearch; set OPENSEARCH_PORT"
        fi
        ensure_distribution
        java_home="$(pick_java_home)"
        if is_root; then ensure_user; fi
        prepare_run_dir
        log "starting OpenSearch $OS_VERSION on $URL (JDK $java_home)"
        # Launch from the home dir: jvm.options uses relative paths (logs/gc.log).
        local -a launch=(env
            "OPENSEARCH_JAVA_HOME=$java_home" "JAVA_HOME=$java_home"
            "OPENSEARCH_JAVA_OPTS=${OPENSEARCH_JAVA_OPTS:-$JAVA_OPTS_DEFAULT}"
            "OPENSEARCH_PATH_CONF=$HOME_DIR/config"
            "OPENSEARCH_TMPDIR=$RUN_DIR/tmp"
            "$HOME_DIR/bin/opensearch" -d -p "$PID_FILE")
        if is_root; then
            launch=(runuser -u "$OS_USER" -- "${launch[@]}")
        fi
        if ! (cd "$HOME_DIR" && "${launch[@]}" >"$RUN_DIR/launcher.log" 2>&1 </dev/null); then
            print_log_tail
            die "launcher failed"
        fi
    else
        log "process $pid is running; waiting for it to become healthy"
    fi

    # The node writes its pidfile early and deletes it when it exits, so
    # remember the pid once seen to notice a node that died while starting.
    local seen_pid="${pid:-}"
    deadline=$(($(date +%s) + START_TIMEOUT))
    until healthy; do
        if [ "$(date +%s)" -ge "$deadline" ]; then
            print_log_tail
            die "not healthy after ${START_TIMEOUT}s (logs in $RUN_DIR/logs)"
        fi
        if [ -z "$seen_pid" ] && [ -s "$PID_FILE" ]; then
            seen_pid="$(cat "$PID_FILE" 2>/dev/null || true)"
        fi
        if [ -n "$seen_pid" ] && ! kill -0 "$seen_pid" 2>/dev/null; then
            print_log_tail
            die "OpenSearch exited during startup (logs in $RUN_DIR/logs)"
        fi
        sleep 0.5
    done
    log "healthy at $URL after $(elapsed_since "$t0")s"
    echo "$URL"
}

cmd_stop() {
    local pid i
    if ! pid="$(running_pid)"; then
        log "not running (no live pid in $PID_FILE)"
        return 0
    fi
    log "stopping pid $pid"
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 1 120); do # up to 60 s for a clean shutdown
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.5
    done
    if kill -0 "$pid" 2>/dev/null; then
        log "pid $pid ignored SIGTERM; sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        while kill -0 "$pid" 2>/dev/null; do sleep 0.2; done
    fi
    rm -f "$PID_FILE"
    log "stopped"
}

cmd_status() {
    local pid
    pid="$(running_pid || true)"
    if healthy; then
        log "healthy at $URL${pid:+ (pid $pid)}"
        curl -fsS -m 5 "$URL/_cluster/health" >&2
        echo >&2
        return 0
    fi
    if [ -n "$pid" ]; then
        log "pid $pid is running but $URL is not healthy (yet)"
    else
        log "not running on $URL"
    fi
    return 3
}

main() {
    case "${1:-}" in
    start) cmd_start ;;
    stop) cmd_stop ;;
    url) echo "$URL" ;;
    status) cmd_status ;;
    *)
        echo "usage: $0 {start|stop|url|status}" >&2
        exit 2
        ;;
    esac
}

main "$@"
