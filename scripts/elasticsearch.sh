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
#   7.x  the OSS build with only transport-netty4; lang-mustache and parent-join are
#        added from Maven Central (org.elasticsearch.plugin:*-client), so search
#        templates and `join` fields work. No analysis-common, no painless.
#
# Usage: scripts/elasticsearch.sh {start|stop|wipe|url|status|check}
#   start   download once (cached), start the node, wait until yellow, print URL
#           (the node's data survives restarts; two starts at once are safe: they take
#           a lock on the cache and on the port, and the second finds the first's node)
#   stop    stop the node started by this script (pidfile, checked to name this port's node)
#           and wait until gone
#   wipe    delete the (stopped) node's data: the only command that deletes indices
#   url     print http://127.0.0.1:$ELASTICSEARCH_PORT
#   status  print the cluster health; exit 0 when healthy, 3 when not
#   check   exit 0 when `start` has what it needs (a healthy node, or a JDK and mvn unless
#           cached); 4, naming what is missing, when not (CI installs it then)
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
#   RERANK_BRIDGE_LAUNCHED_FILE  when set, `start` writes the URL into this file only if it launched the
#                         node itself (not when it found one running): who started it stops it
#
# stdout carries only the URL (for `url=$(scripts/elasticsearch.sh start)`);
# progress and errors go to stderr.
set -euo pipefail

ENGINE_ID="elasticsearch"
ENGINE_NAME="Elasticsearch"
ENGINE_TAG="elasticsearch.sh"
ENGINE_ENV_PREFIX="ELASTICSEARCH"
ENGINE_VERSION="${ELASTICSEARCH_VERSION:-8.17.4}"
ENGINE_USER="elasticsearch"
PORT="${ELASTICSEARCH_PORT:-9250}"
START_TIMEOUT="${ELASTICSEARCH_START_TIMEOUT:-120}"
RUN_ROOT="${ELASTICSEARCH_RUN_ROOT:-/tmp/rerank-bridge-elasticsearch}"

DIST_COORDS="org.elasticsearch.distribution.integ-test-zip:elasticsearch:$ENGINE_VERSION:zip"
MODULE_GROUP="org.elasticsearch.plugin"
MODULE_POM_PREFIX="es-module"
SERVER_GROUP="org.elasticsearch" SERVER_ARTIFACT="elasticsearch"
LOG_TAIL_EXCLUDE='^[[:space:]]*at ' # Java stack frames bury the cause

ES_MAJOR="${ENGINE_VERSION%%.*}"
JAVA_MIN="" JAVA_MAX="" MODULES="" UNSUPPORTED_REASON=""
case "$ES_MAJOR" in
7)
    JAVA_MIN=11 JAVA_MAX=21 # the launcher installs a security manager (gone in Java 24)
    # folder | Maven artifactId (group org.elasticsearch.plugin) | plugin class | extended plugins | description
    MODULES="
lang-mustache|lang-mustache-client|org.elasticsearch.script.mustache.MustachePlugin||Mustache scripting integration for Elasticsearch
parent-join|parent-join-client|org.elasticsearch.join.ParentJoinPlugin||This module adds the support parent-child queries and aggregations
"
    ;;
8)
    JAVA_MIN=17 JAVA_MAX=23 # 8.17's launcher: "cannot run with JDK 24+"
    MODULES=""              # lang-mustache-client etc. are not published for 8.x
    ;;
*) # refused by cmd_start, so that url/stop/status still work
    UNSUPPORTED_REASON="ELASTICSEARCH_VERSION=$ENGINE_VERSION: only 7.x and 8.x integ-test zips are supported"
    ;;
esac

# shellcheck source-path=SCRIPTDIR source=lib/engine.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/engine.sh"
set_engine_paths

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

launch_node() {
    # 7.x reads JAVA_HOME, 8.x ES_JAVA_HOME.
    local java_home="$1"
    run_launcher env \
        "ES_JAVA_HOME=$java_home" "JAVA_HOME=$java_home" \
        "ES_JAVA_OPTS=${ELASTICSEARCH_JAVA_OPTS:-$JAVA_OPTS_DEFAULT}" \
        "ES_PATH_CONF=$HOME_DIR/config" \
        "ES_TMPDIR=$RUN_DIR/tmp" \
        "$HOME_DIR/bin/elasticsearch" -q -p "$PID_FILE"
}

# ---------------------------------------------------------------- modules

write_descriptor() {
    # Same keys as the descriptor of the zip's own 7.x transport-netty4 module.
    local dir="$1" name="$2" classname="$3" extended="$4" description="$5"
    cat >"$dir/plugin-descriptor.properties" <<EOF
# Written by scripts/elasticsearch.sh (module jars on Maven Central ship no descriptor).
description=$description
version=$ENGINE_VERSION
name=$name
classname=$classname
java.version=1.8
elasticsearch.version=$ENGINE_VERSION
extended.plugins=$extended
has.native.controller=false
EOF
}

write_security_policy() {
    # The grant lang-mustache declares in Elasticsearch's source (7.x only adds that module).
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

# ---------------------------------------------------------------- run dir

prepare_run_dir() {
    # Besides data and logs, 8.x writes a keystore into config/: reset per start.
    copy_home_dir
    reset_run_state
    rm -f "$HOME_DIR/config/elasticsearch.keystore"
    write_node_config "$HOME_DIR/config/elasticsearch.yml"
    if [ "$ES_MAJOR" -ge 8 ]; then
        cat >>"$HOME_DIR/config/elasticsearch.yml" <<EOF
# The 8.x integ-test zip carries x-pack-security, on by default (TLS + users).
xpack.security.enabled: false
EOF
    fi
    own_run_dir
}

main "$@"
