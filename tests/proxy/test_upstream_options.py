"""Upstream TLS and credentials, against real aiohttp servers on 127.0.0.1 (one of them speaking TLS)."""

from __future__ import annotations

import ssl
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from bridge.config import Settings
from tests.bridge_server import running_bridge


async def echo(request: web.Request) -> web.Response:
    return web.json_response({"authorization": request.headers.get("Authorization"), "path": request.path_qs})


async def start(ssl_context: ssl.SSLContext | None = None) -> tuple[web.AppRunner, int]:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", echo)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context)
    await site.start()
    return runner, site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


@pytest.fixture
async def tls_engine(certificate: tuple[Path, Path]) -> AsyncIterator[int]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*certificate)
    runner, port = await start(context)
    yield port
    await runner.cleanup()


@pytest.fixture
async def plain_engine() -> AsyncIterator[int]:
    runner, port = await start()
    yield port
    await runner.cleanup()


async def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, object]]:
    async with aiohttp.ClientSession() as http, http.get(url, headers=headers) as response:
        return response.status, await response.json()


async def test_tls_upstream_verified_with_the_configured_ca(
    tls_engine: int, certificate: tuple[Path, Path]
) -> None:
    settings = Settings(upstream={"url": f"https://127.0.0.1:{tls_engine}", "ca_bundle": str(certificate[0])})
    async with running_bridge(settings) as url:
        status, body = await get(url + "/_cluster/health?local=true")
    assert status == 200 and body["path"] == "/_cluster/health?local=true"


async def test_tls_upstream_refused_when_the_certificate_is_not_trusted(tls_engine: int) -> None:
    settings = Settings(upstream={"url": f"https://127.0.0.1:{tls_engine}"})
    async with running_bridge(settings) as url:
        status, body = await get(url + "/_cluster/health")
    assert status == 502
    error = body["error"]
    assert isinstance(error, dict) and error["type"] == "upstream_unavailable_exception"
    assert "certificate" in str(error["reason"]).lower()


async def test_verification_can_be_turned_off(tls_engine: int) -> None:
    settings = Settings(upstream={"url": f"https://127.0.0.1:{tls_engine}", "verify_tls": False})
    async with running_bridge(settings) as url:
        status, _ = await get(url + "/")
    assert status == 200


async def test_client_credentials_are_forwarded_and_win_over_the_bridges(plain_engine: int) -> None:
    settings = Settings(
        upstream={"url": f"http://127.0.0.1:{plain_engine}", "username": "bridge", "password": "s3cret"}
    )
    async with running_bridge(settings) as url:
        _, own = await get(url + "/")
        _, clients = await get(url + "/", {"Authorization": "ApiKey Y2xpZW50OmtleQ=="})
    assert own["authorization"] == "Basic YnJpZGdlOnMzY3JldA=="
    assert clients["authorization"] == "ApiKey Y2xpZW50OmtleQ=="


async def test_credentials_in_the_upstream_url_are_used(plain_engine: int) -> None:
    settings = Settings(upstream={"url": f"http://bridge:s3cret@127.0.0.1:{plain_engine}"})
    async with running_bridge(settings) as url:
        _, body = await get(url + "/")
    assert body["authorization"] == "Basic YnJpZGdlOnMzY3JldA=="


async def test_configured_api_key(plain_engine: int) -> None:
    settings = Settings(upstream={"url": f"http://127.0.0.1:{plain_engine}", "api_key": "abc"})
    async with running_bridge(settings) as url:
        _, body = await get(url + "/")
    assert body["authorization"] == "ApiKey abc"


async def test_upstream_path_prefix_is_kept(plain_engine: int) -> None:
    settings = Settings(upstream={"url": f"http://127.0.0.1:{plain_engine}/engine"})
    async with running_bridge(settings) as url:
        _, body = await get(url + "/idx/_doc/a%2Fb?routing=x")
    assert body["path"] == "/engine/idx/_doc/a%2Fb?routing=x"
