#!/usr/bin/env bash
# Run a real single-node Elasticsearch (8.17.x by default, or 7.10.x) on this
# machine, without Docker, as a second engine behind the bridge.
#
# Same approach as scripts/opensearch.sh: Elastic publishes the "integ-test zip"
# (real launcher, server and config) on Maven Central, fetched by coordinates
# with `mvn`. What it holds differs by major version:
#   8.x  modules transport-netty4, x-pack-core, x-pack-security, apm. Security
#        is on by default, so it is switched off here (plain HTTP, no users).
#        Nothing else is published for 8.x: no lang-mustache (no search
#        templates), no analysis-common (no `english` analyzer), no rest-root
#        (`GET /` answers 405), no painless.
#   7.x  the OSS build with only transport-netty4; lang-mustache is added from
#        Maven Central (org.elasticsearch.plugin:lang-mustache-client), so search
#        templates work. No analysis-common, no painless.
#
# Usage: scripts/elasticsearch.sh {start|stop|url|status}
#   start   download once (cached), start the node, wait until yellow, print URL
#   stop    stop the node started by this script (pidfile) and wait until gone
#   url     print http://127.0.0.1:$ELASTICSEARCH_PORT
#   status  print the cluster health; exit 0 when healthy, 3 when not
#
# Environment:
#   ELASTICSEARCH_PORT       HTTP port (default 9250); each port gets its own run dir
#   ELASTICSEARCH_VERSION    7.x or 8.x integ-test zip to run (default 8.17.4; 7.10.2 also tested)
#   ELASTICSEARCH_JAVA_OPTS  JVM options (default "-Xms512m -Xmx512m": small machine)
#   ELASTICSEARCH_START_TIMEOUT  seconds to wait for health (default 120)
#   ELASTICSEARCH_RUN_ROOT   where run dirs live (default /tmp/rerank-bridge-elasticsearch)
#   ELASTICSEARCH_JAVA_HOME / JAVA_HOME  JDK to run with (7.x: Java 11..21, 8.x: 17..23;
#                            falls back to /usr/lib/jvm's Java 17). Java 24+ fails: 7.x dies with
#                            "Setting a Security Manager is not supported", 8.17 refuses
#                            "cannot run with JDK 24+".
#   XDG_CACHE_HOME           download cache lives in $XDG_CACHE_HOME/rerank-bridge/elasticsearch
#
# stdout carries only the URL (for `url=$(scripts/elasticsearch.sh start)`);
# progress and errors go to stderr.
set -euo pipefail

ES_VERSION="${ELASTICSEARCH_VERSION:-8.17.4}"
PORT="${ELASTICSEARCH_PORT:-9250}"
JAVA_OPTS_DEFAULT="-Xms512m -Xmx512m"
START_TIMEOUT="${ELASTICSEARCH_START_TIMEOUT:-120}"
ES_USER="elasticsearch"

CACHE_DIR="${XDG_CACHE_HOME:-$HOME/.cache}/rerank-bridge/elasticsearch"
M2_REPO="$CACHE_DIR/m2"                          # private Maven repo: the cache is self-contained
DIST_DIR="$CACHE_DIR/elasticsearch-$ES_VERSION"  # assembled distribution (zip + modules)
RUN_ROOT="${ELASTICSEARCH_RUN_ROOT:-/tmp/rerank-bridge-elasticsearch}"
RUN_DIR="$RUN_ROOT/$PORT"                        # copy of DIST_DIR + data/logs, owned by $ES_USER
HOME_DIR="$RUN_DIR/home"
PID_FILE="$RUN_DIR/elasticsearch.pid"
URL="http://127.0.0.1:$PORT"

DEP_PLUGIN="org.apache.maven.plugins:maven-dependency-plugin:3.6.1"

log() { printf '[elasticsearch.sh] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

ES_MAJOR="${ES_VERSION%%.*}"
JAVA_MIN="" JAVA_MAX="" MODULES=""
case "$ES_MAJOR" in
7)
    JAVA_MIN=11 JAVA_MAX=21 # the launcher installs a security manager (gone in Java 24)
    # folder | Maven artifactId (group org.elasticsearch.plugin) | plugin class | extended plugins | description
    MODULES="
lang-mustache|lang-mustache-client|org.elasticsearch.script.mustache.MustachePlugin||Mustache scripting integration for Elasticsearch
"
    ;;
8)
    JAVA_MIN=17 JAVA_MAX=23 # 8.17's launcher: "cannot run with JDK 24+"
    MODULES=""              # lang-mustache-client etc. are not published for 8.x
    ;;
*) ;; # refused by cmd_start, so that url/stop/status still work
esac

now() { date +%s.%N; }
elapsed_since() { awk -v s="$1" -v e="$(now)" 'BEGIN { printf "%.1f", e - s }'; }

is_root() { [ "$(id -u)" -eq 0 ]; }

healthy() {
    # Yellow, and Elasticsearch: an OpenSearch (scripts/opensearch.sh) on the
    # same port answers the same health call and must not be taken for ours.
    local answer root
    answer="$(curl -fsS -m 5 -D - "$URL/_cluster/health?wait_for_status=yellow&timeout=1s" 2>/dev/null)" || return 1
    grep -qi '^x-elastic-product: *Elasticsearch' <<<"$answer" && return 0
    # 7.x before 7.14 sends no product header: tell it from OpenSearch by GET /.
    root="$(curl -fsS -m 5 "$URL/" 2>/dev/null)" || return 1
    grep -q '"number"' <<<"$root" && ! grep -q '"distribution" *: *"opensearch"' <<<"$root"
}

port_in_use() {
    (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null
}

running_pid() {
    local pid
    [ -f "$PID_FILE" ] || return 1
    pid="$(cat "$PID_FILE" 2>/dev/null || true)"
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && echo "$pid"
}

java_major() {
    "$1/bin/java" -version 2>&1 | awk -F'"' '/version/ { split($2, v, "."); print (v[1] == "1" ? v[2] : v[1]); exit }'
}

pick_java_home() {
    local candidate major
    for candidate in "${ELASTICSEARCH_JAVA_HOME:-}" "${JAVA_HOME:-}" \
        /usr/lib/jvm/java-17-openjdk-amd64 /usr/lib/jvm/java-17-openjdk-arm64 /usr/lib/jvm/java-17-openjdk \
        "$(dirname "$(dirname "$(readlink -f "$(command -v java 2>/dev/null || echo /nonexistent)")")")"; do
        [ -n "$candidate" ] && [ -x "$candidate/bin/java" ] || continue
        major="$(java_major "$candidate")"
        if [ -n "$major" ] && [ "$major" -ge "$JAVA_MIN" ] && [ "$major" -le "$JAVA_MAX" ]; then
            echo "$candidate"
            return 0
        fi
        log "skipping JDK $candidate (Java $major; Elasticsearch $ES_VERSION needs $JAVA_MIN..$JAVA_MAX)"
    done
    die "no Java $JAVA_MIN..$JAVA_MAX found; set ELASTICSEARCH_JAVA_HOME"
}

mvn_run() {
    command -v mvn >/dev/null || die "mvn not found (apt-get install maven)"
    local out="$CACHE_DIR/mvn.log"
    if ! mvn -B -q -Dmaven.repo.local="$M2_REPO" "$@" >"$out" 2>&1; then
        sed -E 's/\x1b\[[0-9;]*m//g' "$out" | tail -n 30 >&2
        return 1
    fi
}

# ---------------------------------------------------------------- download

module_pom() {
    # Only dependency: the module jar, so copy-dependencies brings its runtime
    # deps; the server jar (already in lib/) is excluded.
    local artifact="$1"
    cat <<EOF
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.rerank-bridge</groupId>
  <artifactId>es-module-$artifact</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.elasticsearch.plugin</groupId>
      <artifactId>$artifact</artifactId>
      <version>$ES_VERSION</version>
      <exclusions>
        <exclusion><groupId>org.elasticsearch</groupId><artifactId>elasticsearch</artifactId></exclusion>
      </exclusions>
    </dependency>
  </dependencies>
</project>
EOF
}

jar_basename() {
    basename "$1" | sed -E 's/-[0-9].*\.jar$//'
}

drop_jars_already_in_lib() {
    # A second copy of a lib/ jar in a module is "jar hell": the node refuses to start.
    local module_dir="$1" jar base
    for jar in "$module_dir"/*.jar; do
        base="$(jar_basename "$jar")"
        if compgen -G "$DIST_DIR/lib/$base-[0-9]*.jar" >/dev/null; then
            rm -f "$jar"
        fi
    done
}

write_descriptor() {
    # Same keys as the descriptor of the zip's own 7.x transport-netty4 module.
    local dir="$1" name="$2" classname="$3" extended="$4" description="$5"
    cat >"$dir/plugin-descriptor.properties" <<EOF
# Written by scripts/elasticsearch.sh (module jars on Maven Central ship no descriptor).
description=$description
version=$ES_VERSION
name=$name
classname=$classname
java.version=1.8
elasticsearch.version=$ES_VERSION
extended.plugins=$extended
has.native.controller=false
EOF
}

write_security_policy() {
    local dir="$1" name="$2"
    case "$name" in
    lang-mustache)
        cat >"$dir/plugin-security.policy" <<'EOF'
grant {
  // mustache.java reflects over the template's scope objects
  permission java.lang.RuntimePermission "accessDeclaredMembers";
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
        die "could not fetch org.elasticsearch.plugin:$artifact:$ES_VERSION and its dependencies"
    drop_jars_already_in_lib "$dir"
    write_descriptor "$dir" "$name" "$classname" "$extended" "$description"
    write_security_policy "$dir" "$name"
    log "  module $name: $(cd "$dir" && ls -- *.jar | tr '\n' ' ')"
}

ensure_distribution() {
    local stamp want zip
    want="$(printf '%s\n%s' "$ES_VERSION" "$MODULES" | sha256sum | cut -d' ' -f1)"
    stamp="$DIST_DIR/.rerank-bridge-stamp"
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
        return 0
    fi
    log "preparing Elasticsearch $ES_VERSION in $DIST_DIR (one-time download from Maven Central)"
    mkdir -p "$CACHE_DIR/download"
    zip="$CACHE_DIR/download/elasticsearch-$ES_VERSION.zip"
    if [ ! -s "$zip" ]; then
        mvn_run "$DEP_PLUGIN:copy" \
            -Dartifact="org.elasticsearch.distribution.integ-test-zip:elasticsearch:$ES_VERSION:zip" \
            -DoutputDirectory="$CACHE_DIR/download" ||
            die "could not fetch org.elasticsearch.distribution.integ-test-zip:elasticsearch:$ES_VERSION:zip"
    fi
    rm -rf "$DIST_DIR" "$CACHE_DIR/extract"
    mkdir -p "$CACHE_DIR/extract"
    if command -v unzip >/dev/null; then
        unzip -q "$zip" -d "$CACHE_DIR/extract"
    else
        python3 -m zipfile -e "$zip" "$CACHE_DIR/extract"
    fi
    mv "$CACHE_DIR/extract/elasticsearch-$ES_VERSION" "$DIST_DIR"
    rmdir "$CACHE_DIR/extract"
    chmod +x "$DIST_DIR"/bin/* # python's zipfile drops the exec bits
    if [ -d "$DIST_DIR/jdk" ]; then
        rm -rf "$DIST_DIR/jdk" # never bundled in integ-test zips; be sure we use ours
    fi

    local name artifact classname extended description
    while IFS='|' read -r name artifact classname extended description; do
        [ -n "$name" ] || continue
        install_module "$name" "$artifact" "$classname" "$extended" "$description"
    done <<<"$MODULES"
    echo "$want" >"$stamp"
}

# ---------------------------------------------------------------- run dir

ensure_user() {
    # The launcher refuses root ("can not run elasticsearch as root").
    if ! id "$ES_USER" >/dev/null 2>&1; then
        log "creating system user $ES_USER"
        useradd --system --no-create-home --shell /usr/sbin/nologin "$ES_USER"
    fi
}

prepare_run_dir() {
    # A private copy per port: the cache may sit under /root, and data, logs
    # and (8.x) the keystore ES writes into config/ must be writable by the
    # service user. Data is fresh on every start; tests create their indices.
    mkdir -p "$RUN_ROOT"
    chmod 755 "$RUN_ROOT"
    if ! cmp -s "$DIST_DIR/.rerank-bridge-stamp" "$HOME_DIR/.rerank-bridge-stamp"; then
        rm -rf "$HOME_DIR"
        mkdir -p "$RUN_DIR"
        cp -a "$DIST_DIR" "$HOME_DIR"
    fi
    rm -rf "$RUN_DIR/data" "$RUN_DIR/logs" "$RUN_DIR/tmp" "$PID_FILE" "$HOME_DIR/config/elasticsearch.keystore"
    mkdir -p "$RUN_DIR/data" "$RUN_DIR/logs" "$RUN_DIR/tmp"

    cat >"$HOME_DIR/config/elasticsearch.yml" <<EOF
# Written by scripts/elasticsearch.sh: loopback-only single node for tests.
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
    if [ "$ES_MAJOR" -ge 8 ]; then
        cat >>"$HOME_DIR/config/elasticsearch.yml" <<EOF
# The 8.x integ-test zip carries x-pack-security, on by default (TLS + users).
xpack.security.enabled: false
EOF
    fi
    if is_root; then
        chown -R "$ES_USER:" "$RUN_DIR"
    fi
}

# ---------------------------------------------------------------- commands

print_log_tail() {
    local f
    for f in "$RUN_DIR/launcher.log" "$RUN_DIR/logs/rerank-bridge.log"; do
        [ -s "$f" ] || continue
        log "---- last lines of $f"
        grep -v '^[[:space:]]*at ' "$f" | tail -n 40 >&2
    done
}

cmd_start() {
    local t0 pid java_home deadline
    t0="$(now)"
    [ -n "$JAVA_MIN" ] || die "ELASTICSEARCH_VERSION=$ES_VERSION: only 7.x and 8.x integ-test zips are supported"
    if healthy; then
        log "already running and healthy at $URL"
        echo "$URL"
        return 0
    fi
    if ! pid="$(running_pid)"; then
        if port_in_use; then
            die "port $PORT is taken by something that is not a healthy Elasticsearch; set ELASTICSEARCH_PORT"
        fi
        ensure_distribution
        java_home="$(pick_java_home)"
        if is_root; then ensure_user; fi
        prepare_run_dir
        log "starting Elasticsearch $ES_VERSION on $URL (JDK $java_home)"
        # 7.x reads JAVA_HOME, 8.x ES_JAVA_HOME; launch from the home dir
        # (jvm.options uses relative paths such as logs/gc.log).
        local -a launch=(env
            "ES_JAVA_HOME=$java_home" "JAVA_HOME=$java_home"
            "ES_JAVA_OPTS=${ELASTICSEARCH_JAVA_OPTS:-$JAVA_OPTS_DEFAULT}"
            "ES_PATH_CONF=$HOME_DIR/config"
            "ES_TMPDIR=$RUN_DIR/tmp"
            "$HOME_DIR/bin/elasticsearch" -d -p "$PID_FILE")
        if is_root; then
            launch=(runuser -u "$ES_USER" -- "${launch[@]}")
        fi
        if ! (cd "$HOME_DIR" && "${launch[@]}" >"$RUN_DIR/launcher.log" 2>&1 </dev/null); then
            print_log_tail
            die "launcher failed"
        fi
    else
        log "process $pid is running; waiting for it to become healthy"
    fi

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
            die "Elasticsearch exited during startup (logs in $RUN_DIR/logs)"
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
