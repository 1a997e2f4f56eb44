"""Find or start a real OpenSearch for the tests.

Tests must exercise the real engine (search templates, stored mustache
scripts, analyzers), and where they run differs: CI and developers' machines
here have no Docker engine, other machines may. This module picks, in order:

1. ``OPENSEARCH_URL`` when set (an engine someone already runs);
2. a testcontainers ``OpenSearchContainer`` when a Docker engine answers;
3. ``scripts/opensearch.sh start`` (a real OpenSearch 2.19 from Maven Central).

It is a plain module, not a set of pytest fixtures, so conftest files, scripts
and benchmarks can all share it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
SCRIPT = REPO_ROOT / "scripts" / "opensearch.sh"

# Docker image used only on the testcontainers path; the script runs 2.19.6.
DEFAULT_IMAGE = "opensearchproject/opensearch:2.19.1"

_url: str | None = None
_container: Any = None  # testcontainers OpenSearchContainer we started
_script_started = False  # True only when scripts/opensearch.sh start was ours


def ensure_opensearch() -> str:
    """Return the base URL (no trailing slash) of a healthy OpenSearch.

    Cached per process, so every test module can call it cheaply.
    """
    global _url
    if _url is None:
        _url = (
            _from_env()
            or _start_container()
            or _start_with_script()
        )
    return _url


def stop_opensearch_if_started() -> None:
    """Stop the engine only if this module started it.

    An engine given by OPENSEARCH_URL or already running before us belongs to
    someone else (another session, a developer) and must outlive our tests.
    """
    global _url, _container, _script_started
    if _container is not None:
        try:
            _container.stop()
        finally:
            _container = None
    if _script_started:
        _script_started = False
        subprocess.run([str(SCRIPT), "stop"], check=False, cwd=REPO_ROOT)
    _url = None


def _from_env() -> str | None:
    url = os.environ.get("OPENSEARCH_URL", "").strip()
    return url.rstrip("/") or None


def _docker_answers() -> bool:
    """True when a Docker engine responds: the CLI alone is not enough."""
    if shutil.which("docker"):
        try:
            done = subprocess.run(
                ["docker", "info"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                timeout=10,
                check=False,
            )
            return done.returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            return False
    try:  # no CLI: ask the Docker SDK (a testcontainers dependency) directly
        import docker  # type: ignore[import-not-found]

        return bool(docker.from_env(timeout=5).ping())
    except Exception:
        return False


def _start_container() -> str | None:
    """Start an OpenSearchContainer; None when Docker or testcontainers is missing."""
    global _container
    if not _docker_answers():
        return None
    try:  # imported lazily: testcontainers is optional where Docker is absent
        try:
            from testcontainers.community.opensearch import OpenSearchContainer
        except ImportError:
            from testcontainers.opensearch import OpenSearchContainer  # older releases
    except ImportError:
        _warn("Docker answers but testcontainers[opensearch] is not installed")
        return None
    image = os.environ.get("OPENSEARCH_IMAGE", DEFAULT_IMAGE)
    try:
        container = OpenSearchContainer(
            image=image, initial_admin_password="Rerank-Bridge-Test-1!"
        )
        container.start()
    except Exception as exc:  # fall back to the script rather than fail the run
        _warn(f"could not start container {image}: {exc!r}")
        return None
    _container = container
    config = container.get_config()
    return f"http://{config['host']}:{config['port']}"


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(
            f"{url}/_cluster/health?wait_for_status=yellow&timeout=1s", timeout=5
        ) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _start_with_script() -> str:
    """Run scripts/opensearch.sh start; remember whether the engine is ours."""
    global _script_started
    url = subprocess.run(
        [str(SCRIPT), "url"], check=True, capture_output=True, text=True, cwd=REPO_ROOT
    ).stdout.strip()
    already_running = _healthy(url)
    done = subprocess.run(
        [str(SCRIPT), "start"],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO_ROOT,
        check=False,
    )  # stderr (progress, log tail on failure) goes straight to the terminal
    if done.returncode != 0:
        raise RuntimeError(
            f"{SCRIPT} start failed with exit code {done.returncode}; see its output above"
        )
    lines = done.stdout.strip().splitlines()
    if not already_running:
        _script_started = True
    return lines[-1].rstrip("/") if lines else url


def _warn(message: str) -> None:
    print(f"tests/engine.py: {message}", file=sys.stderr)
