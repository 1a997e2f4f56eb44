"""scripts/infinity.sh with a scripted infinity: start/stop/kill/status/check, offline, in seconds.

The real script runs end to end; only the server in its cached venv is a fake: ``bin/infinity_emb`` is a small
Python HTTP server that answers ``GET /models`` like infinity (the model by its served name, with the rerank
capability; only with the Bearer token when started with an API key) and writes down the arguments and
environment it was started with, or dies at once like a server that cannot load its model. The real infinity is tested in ``tests/scoring/test_remote_infinity.py``.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.scripts.script_helpers import free_port, needs_tools, stale_pidfile, with_json_handler

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "infinity.sh"

pytestmark = needs_tools("flock", "setsid", "curl")

FAKE_SERVER = with_json_handler(r'''
"""Stands in for `infinity_emb v2`: GET /models, and a record of how it was started."""
import json, os, sys, time
from http.server import HTTPServer
from pathlib import Path
# JSON_HANDLER

args = sys.argv[1:]
option = lambda name: args[args.index(name) + 1]
home = Path(os.environ["HF_HOME"])
(home.parent / "launch.json").write_text(json.dumps({"argv": args, "env": dict(os.environ)}))
mode = os.environ.get("FAKE_INFINITY_MODE", "")
if mode == "die":
    print("OSError: could not load the model (scripted)", flush=True)
    sys.exit(3)
time.sleep(float(os.environ.get("FAKE_INFINITY_DELAY", "0")))

class Handler(JsonHandler):
    def do_GET(self):
        key = os.environ.get("INFINITY_API_KEY")
        if key and self.headers.get("Authorization") != f"Bearer {key}":
            self.reply(401, {"detail": "Unauthorized"})  # as infinity answers every route without the key
        elif self.path != "/models":
            self.reply(404, {"detail": "Not Found"})
        else:
            self.reply(200, {"data": [{"id": option("--served-model-name"), "capabilities": ["rerank"]}]})

HTTPServer((option("--host"), int(option("--port"))), Handler).serve_forever()
''')


@dataclass
class Env:
    root: Path
    port: int
    model: Path
    env: dict[str, str]

    def run(self, *args: str, timeout: float = 60, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(SCRIPT), *args, "--port", str(self.port), "--model", str(self.model)],
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**self.env, **extra},
        )

    @property
    def run_dir(self) -> Path:
        return self.root / "run" / str(self.port)

    def launch(self) -> dict[str, object]:
        return dict(json.loads((self.run_dir / "launch.json").read_text()))

    def pid(self) -> int:
        return int((self.run_dir / "infinity.pid").read_text())


@pytest.fixture
def fake(tmp_path: Path) -> Iterator[Env]:
    model = tmp_path / "models" / "tiny-ce"
    model.mkdir(parents=True)
    (model / "config.json").write_text("{}")
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path / "home"),
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
        "RERANK_INFINITY_RUN_ROOT": str(tmp_path / "run"),
        "RERANK_INFINITY_PYTHON": sys.executable,
        "RERANK_INFINITY_START_TIMEOUT": "20",
    }
    setup = Env(tmp_path, free_port(), model, env)
    listed = setup.run("venv")
    assert listed.returncode == 3, listed.stderr  # not made yet
    venv = Path(listed.stdout.strip())
    assert venv.parent == tmp_path / "cache" / "rerank-bridge" / "infinity"
    (venv / "bin").mkdir(parents=True)
    server = venv / "bin" / "infinity_emb"
    server.write_text(f"#!{sys.executable}\n{FAKE_SERVER}")
    server.chmod(0o755)
    (venv / ".rerank-bridge-complete").touch()
    yield setup
    setup.run("kill")


def test_start_prints_the_url_owns_what_it_launched_and_finds_it_again(fake: Env, tmp_path: Path) -> None:
    launched = tmp_path / "launched"
    first = fake.run("start", RERANK_BRIDGE_LAUNCHED_FILE=str(launched))
    assert first.returncode == 0, first.stderr
    url = f"http://127.0.0.1:{fake.port}"
    assert first.stdout == f"{url}\n", "stdout carries only the URL"
    assert launched.read_text().strip() == url
    launched.write_text("")
    again = fake.run("start", RERANK_BRIDGE_LAUNCHED_FILE=str(launched))
    assert again.returncode == 0 and again.stdout.strip() == url
    assert "already running" in again.stderr and launched.read_text() == "", "a found server is not ours"
    assert fake.run("status").returncode == 0
    assert fake.run("url").stdout.strip() == url


def test_the_server_runs_offline_on_loopback_with_only_the_scripts_settings(fake: Env) -> None:
    done = fake.run(
        "start",
        INFINITY_API_KEY="from-the-callers-shell",
        INFINITY_PORT="1",
        CUDA_VISIBLE_DEVICES="0",
        RERANK_INFINITY_API_KEY="s3cret-key",
        RERANK_INFINITY_THREADS="3",
    )
    assert done.returncode == 0, done.stderr
    assert fake.run("status", RERANK_INFINITY_API_KEY="s3cret-key").returncode == 0, (
        "status asks with the key"
    )
    assert fake.run("status").returncode == 3, "the server wants the key"
    launch = fake.launch()
    argv, env = launch["argv"], launch["env"]
    assert isinstance(argv, list) and isinstance(env, dict)
    assert argv[0] == "v2"
    pairs = dict(zip(argv[1::2], argv[2::2], strict=False))
    assert pairs["--host"] == "127.0.0.1" and pairs["--port"] == str(fake.port)
    assert pairs["--model-id"] == str(fake.model) and pairs["--served-model-name"] == "tiny-ce"
    assert pairs["--engine"] == "torch" and pairs["--device"] == "cpu" and pairs["--dtype"] == "float32"
    assert "--no-bettertransformer" in argv and "--no-compile" in argv
    assert env["HF_HUB_OFFLINE"] == "1" and env["DO_NOT_TRACK"] == "1"
    assert env["INFINITY_ANONYMOUS_USAGE_STATS"] == "0" and env["CUDA_VISIBLE_DEVICES"] == ""
    assert env["OMP_NUM_THREADS"] == "3"
    assert env["INFINITY_API_KEY"] == "s3cret-key", "the key by environment ..."
    assert not any("s3cret-key" in arg for arg in argv), "... never on the command line"
    assert "INFINITY_PORT" not in env, "the caller's INFINITY_* variables do not reach the server"


def test_the_api_key_is_on_no_command_line_on_the_way_to_the_server(fake: Env, tmp_path: Path) -> None:
    """``setsid`` and ``env`` run before the server does, and ``ps`` shows their arguments too: wrappers on PATH
    write down what each was given, then exec the real one (the same pid, as the script expects)."""
    wrappers = tmp_path / "wrappers"
    wrappers.mkdir()
    for tool in ("setsid", "env"):
        real = shutil.which(tool)
        assert real is not None
        wrapper = wrappers / tool
        wrapper.write_text(
            f'#!/bin/sh\nprintf "%s\\n" "{tool} $*" >>"{tmp_path}/argv.log"\nexec {real} "$@"\n'
        )
        wrapper.chmod(0o755)
    done = fake.run(
        "start", PATH=f"{wrappers}:{fake.env['PATH']}", INFINITY_API_KEY="from-the-callers-shell",
        RERANK_INFINITY_API_KEY="s3cret-key",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert fake.launch()["env"]["INFINITY_API_KEY"] == "s3cret-key"  # type: ignore[index]
    calls = (tmp_path / "argv.log").read_text()
    assert "setsid " in calls and "infinity_emb v2" in calls, calls
    assert "s3cret-key" not in calls and "from-the-callers-shell" not in calls
    assert "s3cret-key" not in done.stderr + done.stdout


@pytest.mark.parametrize(("command", "signal"), [("stop", "SIGTERM"), ("kill", "SIGKILL")])
def test_stop_and_kill_end_the_server_with_their_signal(fake: Env, command: str, signal: str) -> None:
    assert fake.run("start").returncode == 0
    pid = fake.pid()
    done = fake.run(command)
    assert done.returncode == 0 and signal in done.stderr
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert fake.run("status").returncode == 3
    assert not (fake.run_dir / "infinity.pid").exists()


def test_kill_and_stop_touch_only_the_server_they_started(fake: Env) -> None:
    assert fake.run("start").returncode == 0
    assert fake.run("kill").returncode == 0
    assert fake.run("stop").returncode == 0, "stopping a stopped server is fine"
    assert fake.run("start").returncode == 0, "and it starts again on the same port"
    assert fake.run("stop").returncode == 0
    assert fake.run("status").returncode == 3

    with stale_pidfile(fake.run_dir / "infinity.pid") as bystander:
        stale = fake.run("stop")
        assert stale.returncode == 0 and "stale" in stale.stderr
        assert bystander.poll() is None, "a pidfile naming another process never gets it killed"
        assert not (fake.run_dir / "infinity.pid").exists()


def test_a_server_that_dies_at_startup_fails_the_start_with_its_log(fake: Env) -> None:
    started = time.monotonic()
    done = fake.run("start", FAKE_INFINITY_MODE="die")
    assert done.returncode == 1 and done.stdout == ""
    assert "exited during startup" in done.stderr and "exit code 3" in done.stderr
    assert "could not load the model (scripted)" in done.stderr, "the server's own words"
    assert time.monotonic() - started < 15, "noticed at once, not at the start timeout"
    assert not (fake.run_dir / "infinity.pid").exists()


def test_a_port_taken_by_something_else_is_refused(fake: Env) -> None:
    with socket.socket() as other:
        other.bind(("127.0.0.1", fake.port))
        other.listen()
        done = fake.run("start")
    assert done.returncode == 1 and f"port {fake.port} is taken" in done.stderr
    assert not (fake.run_dir / "launch.json").exists(), "nothing was launched"


def test_check_says_what_is_missing(fake: Env) -> None:
    ready = fake.run("check")
    assert ready.returncode == 0 and "cached venv" in ready.stderr, "the cached venv needs no network"
    shutil.rmtree(fake.model)
    missing = fake.run("check")
    assert missing.returncode == 4 and f"the model directory {fake.model}" in missing.stderr
    assert fake.run("start").returncode == 1


def test_install_reuses_a_complete_venv_and_bad_arguments_are_refused(fake: Env) -> None:
    done = fake.run("install")
    assert done.returncode == 0 and done.stdout.strip() == fake.run("venv").stdout.strip()
    assert "making" not in done.stderr, "no second install"
    assert fake.run("frobnicate").returncode == 2
    assert subprocess.run([str(SCRIPT), "start", "--port", "nope"], capture_output=True).returncode == 1
