"""Search interception stands on its own: it reaches the engine through a protocol it owns, not the server."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import REPO


def test_search_interception_imports_nothing_of_the_server() -> None:
    code = (
        "import sys, bridge.search.interceptor, bridge.search.merge, bridge.search.engine;"
        "print(sorted(m for m in sys.modules if m.startswith('bridge.server')))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert done.stdout.strip() == "[]"
