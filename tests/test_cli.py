"""The command line: config check prints the effective config with secrets masked; bad config names field and value."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run(
        [sys.executable, "-m", "bridge", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=120,
    )


def test_config_check_prints_effective_config_with_secrets_masked(tmp_path: Path, tiny_model: Path) -> None:
    config = tmp_path / "bridge.yaml"
    config.write_text(
        "upstream: {url: 'https://search.internal:9200', username: bridge, password: hunter2}\n"
        f"models: {{minilm: {{source: '{tiny_model}'}}}}\n"
        "rules: [{indices: ['products*'], fields: [title, description], window: 50}]\n"
    )
    done = run(
        "config",
        "check",
        "--config",
        str(config),
        env={"BRIDGE_SERVER__PORT": "9555", "BRIDGE_UPSTREAM__API_KEY": "k3y"},
    )
    assert done.returncode == 0, done.stderr
    effective = json.loads(done.stdout)
    assert effective["server"]["port"] == 9555
    assert effective["upstream"]["password"] == "**********"
    assert effective["upstream"]["api_key"] == "**********"
    assert "hunter2" not in done.stdout and "k3y" not in done.stdout
    assert effective["rules"][0]["window"] == 50


@pytest.mark.parametrize(
    ("yaml_text", "expected"),
    [
        ("rules: [{indices: ['a*'], fields: [t], window: -3}]\nmodels: {m: {source: x}}\n", "rules.0.window"),
        ("upstream: {url: 'not a url'}\n", "upstream.url"),
        ("models: {m: {source: x, dtype: float8}}\n", "models.m.dtype"),
        ("rules: [{indices: ['a'], fields: [t], model: ghost}]\nmodels: {m: {source: x}}\n", "ghost"),
        ("servr: {port: 1}\n", "servr"),
        ("- just\n- a list\n", "mapping"),
    ],
)
def test_bad_config_names_the_field_and_value(tmp_path: Path, yaml_text: str, expected: str) -> None:
    config = tmp_path / "bridge.yaml"
    config.write_text(yaml_text)
    done = run("config", "check", "--config", str(config))
    assert done.returncode == 2
    assert expected in done.stderr
    assert "Traceback" not in done.stderr


def test_credentials_in_the_upstream_url_are_taken_out_of_it() -> None:
    """``https://user:password@host`` is how many engine clients are configured; the secret must not show."""
    done = run("config", "check", env={"BRIDGE_UPSTREAM_URL": "https://admin:s%40cret@search.internal:9200/os"})
    assert done.returncode == 0, done.stderr
    upstream = json.loads(done.stdout)["upstream"]
    assert upstream["url"] == "https://search.internal:9200/os"
    assert upstream["username"] == "admin" and upstream["password"] == "**********"
    assert "cret" not in done.stdout

    twice = run(
        "config",
        "check",
        env={"BRIDGE_UPSTREAM__URL": "https://admin:x@h:9200", "BRIDGE_UPSTREAM__API_KEY": "k"},
    )
    assert twice.returncode == 2 and "one place" in twice.stderr and "Traceback" not in twice.stderr


def test_bad_environment_value_is_named() -> None:
    done = run("config", "check", env={"BRIDGE_SERVER__PORT": "eighty"})
    assert done.returncode == 2 and "server.port" in done.stderr and "eighty" in done.stderr


def test_missing_config_file() -> None:
    done = run("config", "check", "--config", "/nonexistent/bridge.yaml")
    assert done.returncode == 2 and "/nonexistent/bridge.yaml" in done.stderr


def test_serve_exits_with_a_clear_error_when_a_model_does_not_load() -> None:
    done = run(
        "serve", env={"BRIDGE_MODELS__BROKEN__SOURCE": "/nonexistent/model-dir", "BRIDGE_SERVER__PORT": "0"}
    )
    assert done.returncode == 1
    assert "cannot load the configured models" in done.stderr and "Traceback" not in done.stderr


def test_serve_exits_with_a_clear_error_when_the_port_is_taken() -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = run("serve", env={"BRIDGE_SERVER__PORT": str(port)})
    assert done.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in done.stderr
