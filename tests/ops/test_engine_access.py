"""Every part of the bridge that talks to the engine (the relay, ``templates install``, ``eval``'s indexing
client and its timed searches) presents the same client certificate and the same credentials, with TLS
verification on or off: one place builds them (``bridge/engine_access.py``)."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from bridge.config import Settings, UpstreamSettings
from bridge.engine_access import opensearch_client, ssl_context
from bridge.evaluation.runner import Searcher, engine_headers
from bridge.server.upstream import Upstream
from bridge.templates import client_for

CLIENT_NAME = "bridge-client"


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _issue(
    folder: Path, name: str, issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None, *, server: bool = False
) -> tuple[x509.Name, ec.EllipticCurvePrivateKey, Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    issuer_name, issuer_key = issuer if issuer is not None else (subject, key)
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True)
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False
        )
    if issuer is None:
        usage = x509.KeyUsage(False, False, False, False, False, True, True, False, False)
        builder = builder.add_extension(usage, critical=True)
        builder = builder.add_extension(
            x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
        )
    else:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False
        )
    certificate = builder.sign(issuer_key, hashes.SHA256())
    cert_path, key_path = folder / f"{name}.pem", folder / f"{name}.key"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return subject, key, cert_path, key_path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    folder = tmp_path_factory.mktemp("pki")
    ca_name, ca_key, ca_path, _ = _issue(folder, "test-ca", None)
    _, _, server_cert, server_key = _issue(folder, "engine", (ca_name, ca_key), server=True)
    _, _, client_cert, client_key = _issue(folder, CLIENT_NAME, (ca_name, ca_key))
    return Pki(ca_path, server_cert, server_key, client_cert, client_key)


@dataclass
class Seen:
    client: str | None
    authorization: str | None


@pytest.fixture
async def mtls_engine(pki: Pki) -> AsyncIterator[tuple[int, list[Seen]]]:
    """An engine that demands a client certificate signed by the test CA and records who called."""
    seen: list[Seen] = []

    async def handle(request: web.Request) -> web.Response:
        assert request.transport is not None
        peer = request.transport.get_extra_info("peercert") or {}
        names = [value for rdn in peer.get("subject", ()) for key, value in rdn if key == "commonName"]
        seen.append(Seen(names[0] if names else None, request.headers.get("Authorization")))
        if request.path.endswith("/_search"):
            return web.json_response({"hits": {"total": {"value": 0}, "hits": []}})
        return web.json_response({"version": {"number": "2.19.0", "distribution": "opensearch"}})

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(pki.ca))
    context.load_cert_chain(str(pki.server_cert), str(pki.server_key))
    context.verify_mode = ssl.CERT_REQUIRED
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    yield site._server.sockets[0].getsockname()[1], seen  # type: ignore[union-attr]
    await runner.cleanup()


async def via_relay(settings: UpstreamSettings) -> None:
    upstream = Upstream(settings)
    await upstream.start()
    try:
        status, _, _ = await upstream.fetch_json("GET", "/", upstream.forward_headers({}), None)
        assert status == 200
    finally:
        await upstream.close()


async def via_templates_install(settings: UpstreamSettings) -> None:
    client = client_for(Settings(upstream=settings))
    try:
        await asyncio.to_thread(client.info)
    finally:
        client.close()


async def via_eval_indexing(settings: UpstreamSettings) -> None:
    client = opensearch_client(settings)
    try:
        await asyncio.to_thread(client.info)
    finally:
        client.close()


async def via_eval_searches(settings: UpstreamSettings) -> None:
    async with aiohttp.ClientSession() as session:
        searcher = Searcher(session, str(settings.url), "eval-x", engine_headers(settings), ssl_context(settings))
        answer, _ = await searcher.search({"query": {"match_all": {}}})
        assert answer.error is None, answer.error


USERS: dict[str, Callable[[UpstreamSettings], Awaitable[None]]] = {
    "relay": via_relay,
    "templates install": via_templates_install,
    "eval indexing": via_eval_indexing,
    "eval searches": via_eval_searches,
}


@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
@pytest.mark.parametrize("verify_tls", [True, False], ids=["verified", "verification-off"])
@pytest.mark.parametrize("credentials", ["basic", "api_key"])
async def test_every_engine_user_presents_the_same_client_certificate_and_credentials(
    pki: Pki, mtls_engine: tuple[int, list[Seen]], verify_tls: bool, credentials: str
) -> None:
    port, seen = mtls_engine
    secret = {"username": "bridge", "password": "s3cret"} if credentials == "basic" else {"api_key": "k3y"}
    settings = UpstreamSettings(
        url=f"https://127.0.0.1:{port}",  # type: ignore[arg-type]
        verify_tls=verify_tls,
        ca_bundle=pki.ca if verify_tls else None,
        client_cert=pki.client_cert,
        client_key=pki.client_key,
        **secret,  # type: ignore[arg-type]
    )
    expected = "Basic YnJpZGdlOnMzY3JldA==" if credentials == "basic" else "ApiKey k3y"
    for name, use in USERS.items():
        seen.clear()
        await use(settings)
        assert seen, f"{name}: the engine saw no request"
        assert all(call == Seen(CLIENT_NAME, expected) for call in seen), f"{name}: {seen}"


async def test_an_untrusted_engine_certificate_is_refused_by_every_user(
    pki: Pki, mtls_engine: tuple[int, list[Seen]]
) -> None:
    port, seen = mtls_engine
    settings = UpstreamSettings(
        url=f"https://127.0.0.1:{port}",  # type: ignore[arg-type]
        client_cert=pki.client_cert,
        client_key=pki.client_key,
    )
    for name, use in USERS.items():
        with pytest.raises(Exception):  # noqa: B017 - each user has its own error type
            await use(settings)
        assert not seen, f"{name} sent a request to an engine it should not trust"
