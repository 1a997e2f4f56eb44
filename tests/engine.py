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


def start_with_script(script: Path) -> tuple[str, bool]:
    """``script start`` (scripts/opensearch.sh or scripts/elasticsearch.sh): the engine's URL, and whether this
    call launched the node — only then may the caller stop it (a node found running, or one another session
    launched while we waited on the script's lock, belongs to someone else)."""
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        launched = Path(folder) / "launched"
        done = subprocess.run(
            [str(script), "start"],
            stdout=subprocess.PIPE,
            text=True,
            cwd=REPO_ROOT,
            env={**os.environ, "RERANK_BRIDGE_LAUNCHED_FILE": str(launched)},
            check=False,
        )  # stderr (progress, log tail on failure) goes straight to the terminal
        ours = launched.is_file() and launched.stat().st_size > 0
    if done.returncode != 0:
        raise RuntimeError(f"{script} start failed with exit code {done.returncode}; see its output above")
    lines = done.stdout.strip().splitlines()
    if not lines:
        raise RuntimeError(f"{script} start printed no URL")
    return lines[-1].rstrip("/"), ours


def _start_with_script() -> str:
    """Run scripts/opensearch.sh start; remember whether the engine is ours."""
    global _script_started
    url, _script_started = start_with_script(SCRIPT)
    return url


def remove_leftovers(url: str) -> list[str]:
    """Delete the indices this test run created and did not remove (a test that failed half-way), by exact
    name; returns their names. Only ``rbtest-<this run>-*`` and ``.kibana_rbtest_<this run>``: never anything
    the engine held before, nor another run's."""
    import json

    from tests.indices import RUN_ID, TEST_PREFIX

    pattern = f"{TEST_PREFIX}-{RUN_ID}-*,.kibana_{TEST_PREFIX}_{RUN_ID}*"  # wildcards: none is no error
    try:
        with urllib.request.urlopen(
            f"{url}/_cat/indices/{pattern}?format=json&h=index&expand_wildcards=all", timeout=10
        ) as resp:
            names = sorted(row["index"] for row in json.load(resp))
        for name in names:
            request = urllib.request.Request(f"{url}/{name}", method="DELETE")
            urllib.request.urlopen(request, timeout=30).close()
    except (urllib.error.URLError, OSError, ValueError) as error:
        _warn(f"could not remove this run's leftover indices: {error}")
        return []
    if names:
        _warn(f"removed indices this run left behind: {', '.join(names)}")
    return names


def _warn(message: str) -> None:
    print(f"tests/engine.py: {message}", file=sys.stderr)
