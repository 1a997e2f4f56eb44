"""What the benchmarks share: finding (or starting) the engine, running the bridge as deployed, naming the CPU."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent


def cpu_name() -> str:
    """The CPU's model name, for a benchmark's table and JSON line (figures mean little without it)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def engine_url(given: str | None) -> str:
    """``given``, else OPENSEARCH_URL (default :9200) when it answers, else a fresh one from scripts/opensearch.sh."""
    if given:
        return given.rstrip("/")
    url = os.environ.get("OPENSEARCH_URL", "http://127.0.0.1:9200")
    try:
        urllib.request.urlopen(url, timeout=2).read()
    except OSError:
        script = REPO / "scripts" / "opensearch.sh"
        url = subprocess.run(
            [str(script), "start"], check=True, capture_output=True, text=True
        ).stdout.strip()
    return url


def start_bridge(config: dict[str, Any], scratch: Path, timeout_s: float = 120) -> subprocess.Popen[bytes]:
    """``rerank-bridge serve`` in its own process with ``config``; returns once /_bridge/ready answers 200."""
    path = scratch / "bridge.yaml"
    path.write_text(json.dumps(config))  # JSON is YAML
    process = subprocess.Popen([sys.executable, "-m", "bridge", "serve", "--config", str(path)], cwd=REPO)
    port = config["server"]["port"]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the bridge exited with {process.returncode}")
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/_bridge/ready", timeout=1).read()
            return process
        except OSError:
            time.sleep(0.2)
    process.kill()
    raise SystemExit("the bridge did not become ready")


def stop_bridge(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    process.wait(timeout=60)
