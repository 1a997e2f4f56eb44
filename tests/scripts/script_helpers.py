"""What the tests of the server scripts (scripts/opensearch.sh, scripts/infinity.sh) share.

Both scripts keep their process handling in scripts/lib/proc.sh, so their tests set up the same situations: a free
loopback port, a fake server that answers JSON, a pidfile left naming a process that is not the server.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

# Python source, pasted into the fake servers the tests run in the scripts' place: a request handler base class
# that answers JSON and keeps quiet (the servers' logs are what the scripts show when a start fails).
JSON_HANDLER = '''
import json
from http.server import BaseHTTPRequestHandler

class JsonHandler(BaseHTTPRequestHandler):
    def reply(self, status, payload):
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
'''


def with_json_handler(source: str) -> str:
    """The fake server's source with ``# JSON_HANDLER`` replaced by :data:`JSON_HANDLER`."""
    assert "# JSON_HANDLER\n" in source
    return source.replace("# JSON_HANDLER\n", JSON_HANDLER.lstrip("\n"))


def needs_tools(*tools: str) -> pytest.MarkDecorator:
    """Skip a module whose script needs these commands when one is missing."""
    missing = [tool for tool in tools if shutil.which(tool) is None]
    return pytest.mark.skipif(bool(missing), reason=f"the script needs {', '.join(tools)}; missing: {missing}")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def stale_pidfile(pidfile: Path) -> Iterator[subprocess.Popen[bytes]]:
    """The pidfile a crash or a reboot leaves: its number now names an unrelated live process (yielded)."""
    pidfile.parent.mkdir(parents=True, exist_ok=True)
    other = subprocess.Popen(["sleep", "60"])
    try:
        pidfile.write_text(f"{other.pid}\n")
        yield other
    finally:
        other.kill()
        other.wait()
