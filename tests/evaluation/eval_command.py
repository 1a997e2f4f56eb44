"""``bridge eval`` run as a subprocess on a fresh scratch index, as the end-to-end evaluation tests run it."""

from __future__ import annotations

import subprocess
import sys
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def run_eval(opensearch_url: str, index: str, collection: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``bridge eval`` of ``collection`` into ``index`` (a scratch name) with ``args``; the index is deleted
    afterwards whatever happened, and a non-zero exit fails the test with the output's tail."""
    try:
        done = subprocess.run(
            [
                sys.executable, "-m", "bridge", "eval", str(collection), "--upstream", opensearch_url,
                "--index", index, *args, "--no-progress",
            ],
            capture_output=True, text=True, timeout=300, cwd=REPO,
        )  # fmt: skip
    finally:
        urllib.request.urlopen(
            urllib.request.Request(f"{opensearch_url}/{index}?ignore_unavailable=true", method="DELETE")
        ).read()
    assert done.returncode == 0, f"{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
    return done
