"""Secrets stay secret: command-line overrides are validated like YAML and BRIDGE_* (credentials split off the
``--upstream`` URL, ranges checked), and no error message, log line or 502 body shows a password or key."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import socket
import sys
import time
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from bridge.cli import _settings, build_parser
from bridge.config import ConfigError, Settings
from tests.config_check import config_check

PASSWORD = "pa55-Wd-7731"


pytestmark = pytest.mark.usefixtures("no_bridge_environment")


def check(tmp_path: Path, yaml_text: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """``config check``'s status and all it printed (a secret must show on neither stream)."""
    status, out, err = config_check(tmp_path, yaml_text, capsys)
    return status, out + err


@pytest.mark.parametrize(
    ("yaml_text", "field", "secret"),
    [
        # YAML reads an unquoted number as an int: the password is refused, and not repeated.
        ("upstream: {username: bridge, password: 73317331}\n", "upstream.password", "73317331"),
        (f"upstream: {{url: 'http://admin:{PASSWORD}@search.internal:99999'}}\n", "upstream.url", PASSWORD),
        (f"upstream: {{url: 'admin:{PASSWORD}@search.internal:9200'}}\n", "upstream.url", PASSWORD),
        (f"upstream_url: 'https://admin:{PASSWORD}@search.internal:9200:1'\n", "upstream_url", PASSWORD),
        ("upstream: {api_key: [k3y-0ne-s3cret, k3y-tw0]}\n", "upstream.api_key", "s3cret"),
        # A password under a misspelt key is still a password.
        ("upstream: {passwd: hunter2-hunter2}\n", "upstream.passwd", "hunter2"),
        (
            "models: {m: {source: x, remote: {url: 'http://tei:t3i-s3cret@tei:bad', api_key: 12345678}}}\n",
            "models.m.remote.url",
            "s3cret",
        ),
        ("models: {m: {source: x, remote: {url: 'http://tei', api_key: 12345678}}}\n", "api_key", "12345678"),
        # A section written as a list or a string holds its secrets in the value the error would quote.
        (f"upstream:\n  - url: http://127.0.0.1:9200\n  - password: {PASSWORD}\n", "upstream", PASSWORD),
        (f"upstream: 'admin:{PASSWORD}'\n", "upstream", PASSWORD),
        (f"models: {{m: {{source: x, remote: ['http://tei', {{api_key: {PASSWORD}}}]}}}}\n", "remote", PASSWORD),
        # The host forgotten: the password reads as a port.
        (f"upstream: {{url: 'http://admin:{PASSWORD}'}}\n", "upstream.url", PASSWORD),
        # ... also as one entry of a URL list.
        (
            f"models: {{m: {{source: x, remote: {{protocol: cohere, model: m, urls: ['http://a', 'http://t:{PASSWORD}']}}}}}}\n",
            "models.m.remote.urls",
            PASSWORD,
        ),
    ],
)
def test_config_check_errors_name_the_field_but_never_a_secret_value(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], yaml_text: str, field: str, secret: str
) -> None:
    status, output = check(tmp_path, yaml_text, capsys)
    assert status == 2
    assert field in output
    assert secret not in output


@pytest.mark.parametrize(
    "yaml_text",
    [
        f'upstream:\n  password: "{PASSWORD}\n',  # unterminated quote
        f"upstream:\n  password:\t{PASSWORD}\n",  # a tab
        f"upstream: {{password: [{PASSWORD}, x\n",  # unclosed flow sequence
    ],
)
def test_a_config_file_that_is_not_yaml_is_refused_without_quoting_its_lines(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], yaml_text: str
) -> None:
    status, output = check(tmp_path, yaml_text, capsys)
    assert status == 2
    assert "not valid YAML" in output and "line " in output
    assert PASSWORD not in output


def test_config_check_still_shows_values_that_are_not_secret(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, output = check(tmp_path, "server: {port: eighty}\nupstream: {url: 'http://h:9200', timeout_s: -1}\n", capsys)
    assert status == 2
    assert "server.port" in output and "eighty" in output and "upstream.timeout_s" in output


def test_config_check_output_hides_credentials_in_any_url(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], tiny_model: Path
) -> None:
    status, output = check(
        tmp_path,
        f"models: {{m: {{source: '{tiny_model}', remote: {{url: 'http://tei:{PASSWORD}@tei.internal:8080'}}}}}}\n",
        capsys,
    )
    assert status == 0, output
    assert PASSWORD not in output
    assert json.loads(output)["models"]["m"]["remote"]["url"] == "http://***@tei.internal:8080/"


def settings_for(*argv: str) -> Settings:
    return _settings(build_parser().parse_args(list(argv)))


@pytest.mark.parametrize(
    "command",
    [
        ("serve",),
        ("templates", "install"),
        ("eval", "some/collection"),
    ],
)
def test_upstream_flag_credentials_become_username_and_password(command: tuple[str, ...]) -> None:
    settings = settings_for(*command, "--upstream", f"http://bridge:{PASSWORD}@127.0.0.1:9200/os")
    upstream = settings.upstream
    assert str(upstream.url) == "http://127.0.0.1:9200/os"
    assert upstream.username == "bridge"
    assert upstream.password is not None and upstream.password.get_secret_value() == PASSWORD


def test_upstream_flag_credentials_replace_the_configured_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BRIDGE_UPSTREAM__API_KEY", "configured-key")
    settings = settings_for("serve", "--upstream", f"http://other:{PASSWORD}@127.0.0.1:9200")
    assert settings.upstream.api_key is None and settings.upstream.username == "other"
    kept = settings_for("serve", "--upstream", "http://127.0.0.1:9201")
    assert kept.upstream.api_key is not None and kept.upstream.api_key.get_secret_value() == "configured-key"


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (("serve", "--port", "99999"), "--port (server.port)"),
        (("serve", "--port", "-1"), "--port (server.port)"),
        (("serve", "--upstream", "ftp://127.0.0.1:9200"), "--upstream (upstream.url)"),
        (("templates", "install", "--upstream", f"http://u:{PASSWORD}@127.0.0.1:99999"), "--upstream"),
    ],
)
def test_command_line_overrides_are_validated_like_the_config(argv: tuple[str, ...], named: str) -> None:
    with pytest.raises(ConfigError) as refused:
        settings_for(*argv)
    assert named in str(refused.value)
    assert PASSWORD not in str(refused.value)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def wait_listening(process: asyncio.subprocess.Process, url: str, deadline_s: float = 90.0) -> None:
    started = time.monotonic()
    async with aiohttp.ClientSession() as http:
        while time.monotonic() - started < deadline_s:
            assert process.returncode is None, "the bridge exited"
            try:
                async with http.get(f"{url}/_bridge/health") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                await asyncio.sleep(0.2)
    raise AssertionError("the bridge did not start")


async def test_upstream_flag_credentials_reach_the_engine_and_never_a_502_body_or_log_line() -> None:
    seen: list[str | None] = []

    async def engine(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization"))
        return web.json_response({"_index": "products", "found": False}, status=404)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", engine)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    engine_port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    bridge_port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bridge", "serve", "--port", str(bridge_port),
        "--upstream", f"http://bridge:{PASSWORD}@127.0.0.1:{engine_port}",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**env, "BRIDGE_LOG_LEVEL": "debug"},
    )
    url = f"http://127.0.0.1:{bridge_port}"
    try:
        await wait_listening(process, url)
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{url}/products/_doc/1") as relayed:
                assert relayed.status == 404
            await runner.cleanup()  # the engine goes away: its port is closed now
            async with http.get(f"{url}/products/_doc/1") as failed:
                body = await failed.text()
                status = failed.status
    finally:
        await runner.cleanup()
        process.send_signal(signal.SIGTERM)
        output, _ = await asyncio.wait_for(process.communicate(), 60)
        logs = output.decode()
    token = base64.b64encode(f"bridge:{PASSWORD}".encode()).decode()
    assert seen == [f"Basic {token}"]
    assert status == 502
    assert "cannot reach the search engine at http://127.0.0.1:" in body
    assert PASSWORD not in body and token not in body
    assert "listening" in logs and f"127.0.0.1:{engine_port}" in logs
    assert PASSWORD not in logs and token not in logs
