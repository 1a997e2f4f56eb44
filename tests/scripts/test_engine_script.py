"""scripts/opensearch.sh (scripts/lib/engine.sh) with a scripted Maven and a scripted node.

The real script runs end to end; only ``mvn`` (first on PATH) and the node it "downloads" are fakes: the fake Maven
writes an integ-test zip whose ``bin/opensearch`` is a small Python HTTP server answering ``_cluster/health``, or one
that dies at once like a node missing a module's descriptor. So the cache's lock, its verification, the detection
of a dead node and the run dir's data are checked in seconds, offline, without Java running a real engine.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.scripts.script_helpers import free_port, needs_tools, stale_pidfile, with_json_handler

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "opensearch.sh"
VERSION = "2.19.6"
MODULES = ("lang-painless", "lang-mustache", "analysis-common", "mapper-extras", "reindex", "parent-join")

pytestmark = needs_tools("java", "flock", "setsid")

FAKE_MVN = r'''#!/usr/bin/env python3
"""Stands in for Maven: the dependency plugin's copy (the zip) and copy-dependencies (a module's jars)."""
import os, re, sys, time, zipfile
from pathlib import Path

args = sys.argv[1:]
with open(os.environ["FAKE_MVN_LOG"], "a") as log:
    log.write(" ".join(a for a in args if ":copy" in a or a.startswith("-Dartifact")) + "\n")
time.sleep(float(os.environ.get("FAKE_MVN_DELAY", "0")))
out = Path(next(a.split("=", 1)[1] for a in args if a.startswith("-DoutputDirectory=")))
out.mkdir(parents=True, exist_ok=True)
if any(a.endswith(":copy") for a in args):
    version = next(a for a in args if a.startswith("-Dartifact=")).split(":")[2]
    top = f"opensearch-{version}"
    with zipfile.ZipFile(out / f"{top}.zip", "w") as zf:
        zf.writestr(f"{top}/bin/opensearch", Path(os.environ["FAKE_NODE"]).read_text())
        zf.writestr(f"{top}/lib/opensearch-{version}.jar", "")
        zf.writestr(f"{top}/config/jvm.options", "-Xms1g\n")
        zf.writestr(f"{top}/config/opensearch.yml", "")
        zf.writestr(f"{top}/modules/transport-netty4/plugin-descriptor.properties", "name=transport-netty4\n")
        zf.writestr(f"{top}/modules/transport-netty4/transport-netty4-client-{version}.jar", "")
else:
    pom = Path(args[args.index("-f") + 1]).read_text()
    artifact, version = re.findall(r"<artifactId>([^<]+)</artifactId>\s*<version>([^<]+)</version>", pom)[1]
    if artifact not in os.environ.get("FAKE_MVN_MISSING", "").split(","):
        (out / f"{artifact}-{version}.jar").write_text("")
'''

SERVING_NODE = with_json_handler(r'''#!/usr/bin/env bash
# A node that answers like a healthy OpenSearch on http.port until SIGTERM; -p PIDFILE and -d as the real launcher.
if [[ " $* " == *" -d "* ]]; then
  "$0" "${@/-d/}" </dev/null >/dev/null 2>&1 &
  exit 0
fi
exec python3 - "$@" <<'PY'
import os, re, signal, sys
from http.server import HTTPServer
# JSON_HANDLER
pidfile = sys.argv[sys.argv.index("-p") + 1]
conf = open(os.path.join(os.environ["OPENSEARCH_PATH_CONF"], "opensearch.yml")).read()
port = int(re.search(r"^http.port: (\d+)", conf, re.M)[1])
class Health(JsonHandler):
    def do_GET(self):
        self.reply(200, {"status": "green", "version": {"distribution": "opensearch"}})
server = HTTPServer(("127.0.0.1", port), Health)
open(pidfile, "w").write(str(os.getpid()))
def stop(*_):
    os.unlink(pidfile)
    os._exit(0)
signal.signal(signal.SIGTERM, stop)
server.serve_forever()
PY
''')

DYING_NODE = r'''#!/usr/bin/env bash
# What a node with a half-built modules/ does: fail while loading plugins, long before any health answer
# (daemonized with -d, the launcher itself succeeds first, as the real one does).
if [[ " $* " == *" -d "* ]]; then
  "$0" "${@/-d/}" </dev/null >/dev/null 2>&1 &
  exit 0
fi
sleep 1
echo "java.nio.file.NoSuchFileException: modules/lang-painless/plugin-descriptor.properties" >&2
exit 78
'''


@dataclass
class Engine:
    """One scripted engine setup: a cache, a run root, the fake Maven's log."""

    env: dict[str, str]
    cache: Path
    run_root: Path
    mvn_log: Path

    @property
    def dist(self) -> Path:
        return self.cache / "rerank-bridge" / "opensearch" / f"opensearch-{VERSION}"

    def start(self, port: int, **extra: str) -> subprocess.Popen[str]:
        env = {**self.env, "OPENSEARCH_PORT": str(port), **extra}
        return subprocess.Popen(
            [str(SCRIPT), "start"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )

    def run(self, command: str, port: int, **extra: str) -> subprocess.CompletedProcess[str]:
        env = {**self.env, "OPENSEARCH_PORT": str(port), **extra}
        return subprocess.run([str(SCRIPT), command], env=env, capture_output=True, text=True, timeout=120)

    def fetches(self) -> list[str]:
        return self.mvn_log.read_text().splitlines() if self.mvn_log.exists() else []


def finish(process: subprocess.Popen[str]) -> tuple[int, str, str]:
    out, err = process.communicate(timeout=120)
    return process.returncode, out, err


@pytest.fixture
def engine(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Engine]:
    node = getattr(request, "param", SERVING_NODE)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "mvn").write_text(FAKE_MVN)
    (bin_dir / "mvn").chmod(0o755)
    (tmp_path / "node").write_text(node)
    # The node runs as the service user under root: its run dir must be outside root's private tmp_path.
    run_root = Path(tempfile.mkdtemp(prefix="rbtest-engine-", dir="/tmp"))
    setup = Engine(
        env={
            **os.environ,
            "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
            "XDG_CACHE_HOME": str(tmp_path / "cache"),
            "OPENSEARCH_RUN_ROOT": str(run_root),
            "OPENSEARCH_VERSION": VERSION,
            "OPENSEARCH_START_TIMEOUT": "60",
            "FAKE_MVN_LOG": str(tmp_path / "mvn.log"),
            "FAKE_NODE": str(tmp_path / "node"),
        },
        cache=tmp_path / "cache",
        run_root=run_root,
        mvn_log=tmp_path / "mvn.log",
    )
    try:
        yield setup
    finally:
        for port_dir in run_root.iterdir():
            if port_dir.is_dir():
                setup.run("stop", int(port_dir.name))
        shutil.rmtree(run_root, ignore_errors=True)


def assert_complete(dist: Path) -> None:
    for module in MODULES:
        descriptor = dist / "modules" / module / "plugin-descriptor.properties"
        assert f"name={module}\n" in descriptor.read_text(), descriptor
        assert any((dist / "modules" / module).glob(f"*-{VERSION}.jar")), module
    assert not (dist / dist.name).exists(), "a nested distribution folder"
    assert (dist / ".rerank-bridge-stamp").is_file()


def test_two_starts_at_once_build_the_cache_once_and_completely(engine: Engine) -> None:
    ports = free_port(), free_port()
    starts = [engine.start(port, FAKE_MVN_DELAY="0.5") for port in ports]
    results = [finish(process) for process in starts]
    for (code, out, err), port in zip(results, ports, strict=True):
        assert code == 0, err
        assert out.strip() == f"http://127.0.0.1:{port}"
    assert any("waiting for another start" in err for _, _, err in results)
    fetches = engine.fetches()
    assert sum(":copy " in f"{line} " for line in fetches) == 1, fetches  # the zip, once
    assert sum("copy-dependencies" in line for line in fetches) == len(MODULES), fetches
    assert_complete(engine.dist)
    assert not list(engine.dist.parent.glob("build.*")), "a build folder was left behind"


def test_two_starts_on_one_port_share_one_node_and_only_its_launcher_owns_it(
    engine: Engine, tmp_path: Path
) -> None:
    port = free_port()
    marks = [tmp_path / "first-launched", tmp_path / "second-launched"]
    starts = [engine.start(port, RERANK_BRIDGE_LAUNCHED_FILE=str(mark)) for mark in marks]
    results = [finish(process) for process in starts]
    assert [code for code, _, _ in results] == [0, 0], [err for _, _, err in results]
    assert sum("starting OpenSearch" in err for _, _, err in results) == 1
    assert sum("already running and healthy" in err for _, _, err in results) == 1
    # Whoever waited on the lock and found the node must not stop it (CI, tests/engine.py read this file).
    assert sorted(mark.is_file() for mark in marks) == [False, True]
    launched = next(mark for mark in marks if mark.is_file())
    assert launched.read_text().strip() == f"http://127.0.0.1:{port}"


def test_an_incomplete_download_is_never_stamped_and_is_redone(engine: Engine) -> None:
    port = free_port()
    code, _, err = finish(engine.start(port, FAKE_MVN_MISSING="lang-painless"))
    assert code != 0
    assert "modules/lang-painless lacks lang-painless-2.19.6.jar" in err
    assert "nothing was cached" in err
    assert not engine.dist.exists()
    assert not list(engine.dist.parent.glob("build.*"))
    code, _, err = finish(engine.start(port))
    assert code == 0, err
    assert_complete(engine.dist)


def test_a_cache_broken_by_an_older_script_is_rebuilt(engine: Engine) -> None:
    """The state two concurrent starts of the old script left: a nested folder, missing modules, a valid stamp."""
    port = free_port()
    assert finish(engine.start(port))[0] == 0
    assert engine.run("stop", port).returncode == 0
    shutil.rmtree(engine.dist / "modules" / "lang-painless")
    (engine.dist / "modules" / "reindex" / "plugin-descriptor.properties").unlink()
    (engine.dist / engine.dist.name / "modules").mkdir(parents=True)
    code, _, err = finish(engine.start(port))
    assert code == 0, err
    assert "outdated or incomplete; rebuilding it" in err
    assert "a nested opensearch-2.19.6/" in err
    assert_complete(engine.dist)
    assert_complete(engine.run_root / str(port) / "home")


@pytest.mark.parametrize("engine", [DYING_NODE], indirect=True)
def test_a_node_that_dies_at_start_is_reported_within_seconds(engine: Engine) -> None:
    started = time.monotonic()
    code, out, err = finish(engine.start(free_port(), OPENSEARCH_START_TIMEOUT="120"))
    elapsed = time.monotonic() - started
    assert code != 0 and out == ""
    assert "OpenSearch exited during startup" in err and "exit code 78" in err
    assert "NoSuchFileException" in err  # the node's own words, from its launcher log
    assert elapsed < 20, f"noticed only after {elapsed:.0f}s"


def test_a_restart_keeps_the_nodes_data_and_only_wipe_deletes_it(engine: Engine) -> None:
    port = free_port()
    assert finish(engine.start(port))[0] == 0
    marker = engine.run_root / str(port) / "data" / "someone-s-index"
    marker.write_text("user data")
    assert engine.run("wipe", port).returncode != 0  # refused while the node runs
    assert marker.exists()
    assert engine.run("stop", port).returncode == 0
    code, _, err = finish(engine.start(port))
    assert code == 0, err
    assert marker.read_text() == "user data"
    assert engine.run("stop", port).returncode == 0
    wiped = engine.run("wipe", port)
    assert wiped.returncode == 0, wiped.stderr
    assert not marker.exists()


def test_a_stale_pidfile_naming_another_process_is_never_killed(engine: Engine) -> None:
    port = free_port()
    with stale_pidfile(engine.run_root / str(port) / "opensearch.pid") as other:
        stopped = engine.run("stop", port)
        assert stopped.returncode == 0, stopped.stderr
        assert other.poll() is None, "stop killed a process that is not the node"
        assert "removing the stale" in stopped.stderr
        assert not (engine.run_root / str(port) / "opensearch.pid").exists()


def test_a_start_over_a_stale_pidfile_launches_its_own_node_at_once(engine: Engine) -> None:
    port = free_port()
    with stale_pidfile(engine.run_root / str(port) / "opensearch.pid") as other:
        code, out, err = finish(engine.start(port, OPENSEARCH_START_TIMEOUT="10"))
        assert code == 0, err
        assert out.strip() == f"http://127.0.0.1:{port}"
        assert "starting OpenSearch" in err  # not "waiting for it to become healthy" on the foreign pid
        assert other.poll() is None
        node_pid = int((engine.run_root / str(port) / "opensearch.pid").read_text())
        assert node_pid != other.pid
        assert engine.run("stop", port).returncode == 0
        assert other.poll() is None


def test_check_names_mvn_when_it_is_missing_and_nothing_is_cached(engine: Engine, tmp_path: Path) -> None:
    """CI installs a JDK and Maven exactly when this check fails."""
    no_mvn = tmp_path / "no-mvn"
    no_mvn.mkdir()
    for tool in Path("/usr/bin").iterdir():
        if tool.name != "mvn":
            (no_mvn / tool.name).symlink_to(tool)
    port = free_port()
    missing = engine.run("check", port, PATH=str(no_mvn))
    assert missing.returncode == 4, missing.stderr
    assert "start needs mvn" in missing.stderr
    present = engine.run("check", port)
    assert present.returncode == 0, present.stderr
    assert not (engine.run_root / str(port)).exists(), "check must change nothing"


def test_the_script_is_valid_bash() -> None:
    for script in ("opensearch.sh", "elasticsearch.sh", "infinity.sh", "lib/engine.sh", "lib/proc.sh", "quickstart.sh"):
        done = subprocess.run(["bash", "-n", str(REPO / "scripts" / script)], capture_output=True, text=True)
        assert done.returncode == 0, textwrap.shorten(done.stderr, 500)
