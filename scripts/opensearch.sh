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
# Usage: scripts/opensearch.sh {start|stop|wipe|url|status|check}
#   start   download once (cached), start the node, wait until yellow, print URL
#           (the node's data survives restarts; two starts at once are safe: they take
#           a lock on the cache and on the port, and the second finds the first's node)
#   stop    stop the node started by this script (pidfile, checked to name this port's node)
#           and wait until gone
#   wipe    delete the (stopped) node's data: the only command that deletes indices
#   url     print http://127.0.0.1:$OPENSEARCH_PORT
#   status  print the cluster health; exit 0 when healthy, 3 when not
#   check   exit 0 when `start` has what it needs (a healthy node, or a JDK and mvn unless
#           cached); 4, naming what is missing, when not (CI installs it then)
#
# Environment:
#   OPENSEARCH_PORT       HTTP port (default 9200); each port gets its own run dir
#   OPENSEARCH_VERSION    2.19.x to run (default 2.19.6; newest served for Java 17)
#   OPENSEARCH_JAVA_OPTS  JVM options (default "-Xms512m -Xmx512m": small machine)
#   OPENSEARCH_START_TIMEOUT  seconds to wait for health (default 120)
#   OPENSEARCH_RUN_ROOT   where run dirs live (default /tmp/rerank-bridge-opensearch)
#   OPENSEARCH_JAVA_HOME / JAVA_HOME  JDK to run with (Java 11..21; falls back to 17)
#   XDG_CACHE_HOME        download cache lives in $XDG_CACHE_HOME/rerank-bridge/opensearch
#   RERANK_BRIDGE_LAUNCHED_FILE  when set, `start` writes the URL into this file only if it launched the
#                         node itself (not when it found one running): who started it stops it
#
# stdout carries only the URL (for `url=$(scripts/opensearch.sh start)`);
# progress and errors go to stderr.
set -euo pipefail

ENGINE_ID="opensearch"
ENGINE_NAME="OpenSearch"
ENGINE_TAG="opensearch.sh"
ENGINE_ENV_PREFIX="OPENSEARCH"
ENGINE_VERSION="${OPENSEARCH_VERSION:-2.19.6}"
ENGINE_USER="opensearch"
PORT="${OPENSEARCH_PORT:-9200}"
START_TIMEOUT="${OPENSEARCH_START_TIMEOUT:-120}"
JAVA_MIN=11 JAVA_MAX=21 # Java 24+ dropped the security manager OpenSearch 2.19 relies on
RUN_ROOT="${OPENSEARCH_RUN_ROOT:-/tmp/rerank-bridge-opensearch}"

DIST_COORDS="org.opensearch.distribution.integ-test-zip:opensearch:$ENGINE_VERSION:zip"
MODULE_GROUP="org.opensearch.plugin"
MODULE_POM_PREFIX="os-module"
SERVER_GROUP="org.opensearch" SERVER_ARTIFACT="opensearch"

# Modules to add to the integ-test zip, one per line:
#   folder | Maven artifactId (group org.opensearch.plugin) | plugin class | extended plugins | description
# Class names were checked against the 2.19.6 jars; parent-join gives the `join`
# field type that common client suites (opensearch-py's among them) map. analysis-common extends
# lang-painless (its jar registers a PainlessExtension), so painless must stay.
MODULES="
lang-painless|lang-painless|org.opensearch.painless.PainlessPlugin||An easy, safe and fast scripting language for OpenSearch
lang-mustache|lang-mustache-client|org.opensearch.script.mustache.MustachePlugin||Mustache scripting integration for OpenSearch
analysis-common|analysis-common|org.opensearch.analysis.common.CommonAnalysisPlugin|lang-painless|Adds \"built in\" analyzers to OpenSearch.
mapper-extras|mapper-extras-client|org.opensearch.index.mapper.MapperExtrasPlugin||Adds advanced field mappers
reindex|reindex-client|org.opensearch.index.reindex.ReindexPlugin||The Reindex module adds APIs to reindex from one index to another or update documents in place.
parent-join|parent-join-client|org.opensearch.join.ParentJoinPlugin||This module adds the support parent-child queries and aggregations
"

# shellcheck source-path=SCRIPTDIR source=lib/engine.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/engine.sh"
set_engine_paths

healthy() {
    # Yellow is enough for a single node (replicas stay unassigned).
    curl -fsS -m 5 "$URL/_cluster/health?wait_for_status=yellow&timeout=1s" >/dev/null 2>&1
}

launch_node() {
    # The launcher's own env variables: JDK, heap, config dir, temp dir.
    local java_home="$1"
    run_launcher env \
        "OPENSEARCH_JAVA_HOME=$java_home" "JAVA_HOME=$java_home" \
        "OPENSEARCH_JAVA_OPTS=${OPENSEARCH_JAVA_OPTS:-$JAVA_OPTS_DEFAULT}" \
        "OPENSEARCH_PATH_CONF=$HOME_DIR/config" \
        "OPENSEARCH_TMPDIR=$RUN_DIR/tmp" \
        "$HOME_DIR/bin/opensearch" -q -p "$PID_FILE"
}

# ---------------------------------------------------------------- modules

write_descriptor() {
    # Same keys as the descriptor in the zip's own transport-netty4 module.
    local dir="$1" name="$2" classname="$3" extended="$4" description="$5"
    cat >"$dir/plugin-descriptor.properties" <<EOF
# Written by scripts/opensearch.sh (module jars on Maven Central ship no descriptor).
description=$description
version=$ENGINE_VERSION
name=$name
classname=$classname
java.version=11
opensearch.version=$ENGINE_VERSION
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

# ---------------------------------------------------------------- run dir

prepare_run_dir() {
    # Fresh data/logs on every start; the shared node settings are all OpenSearch needs.
    copy_home_dir
    reset_run_state
    write_node_config "$HOME_DIR/config/opensearch.yml"
    own_run_dir
}

main "$@"
