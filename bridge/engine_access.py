"""How anything in the bridge reaches the engine: its TLS and the bridge's own credentials, built in one place.

The relay, ``rerank-bridge eval`` (indexing and the timed searches) and ``templates install`` all connect to
``upstream``; when each built its own TLS and ``Authorization`` they drifted (a client certificate dropped when
verification was off, ``client_cert`` ignored by one tool). Every user takes them from here.
"""

from __future__ import annotations

import base64
import ssl
from typing import TYPE_CHECKING

from bridge.config import UpstreamSettings

if TYPE_CHECKING:
    from opensearchpy import OpenSearch


def tls_context(settings: UpstreamSettings) -> ssl.SSLContext:
    """TLS to the engine: the CA bundle (else the system's CAs), verification as configured, and the client
    certificate for mutual TLS whether or not the engine's certificate is verified."""
    context = ssl.create_default_context(cafile=str(settings.ca_bundle) if settings.ca_bundle else None)
    if not settings.verify_tls:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if settings.client_cert is not None:
        context.load_cert_chain(
            str(settings.client_cert), str(settings.client_key) if settings.client_key else None
        )
    return context


def ssl_context(settings: UpstreamSettings) -> ssl.SSLContext | None:
    """:func:`tls_context` for an ``https`` engine, ``None`` for plain HTTP."""
    return tls_context(settings) if settings.url.scheme == "https" else None


def authorization(settings: UpstreamSettings) -> str | None:
    """The bridge's own ``Authorization`` value: the API key, else Basic for username/password, else none."""
    if settings.api_key is not None:
        return f"ApiKey {settings.api_key.get_secret_value()}"
    if settings.username is not None:
        password = settings.password.get_secret_value() if settings.password is not None else ""
        token = base64.b64encode(f"{settings.username}:{password}".encode()).decode()
        return f"Basic {token}"
    return None


def credential_headers(settings: UpstreamSettings) -> dict[str, str]:
    """``{"Authorization": ...}`` when the bridge has credentials of its own, else nothing."""
    value = authorization(settings)
    return {"Authorization": value} if value is not None else {}


def opensearch_client(settings: UpstreamSettings, timeout_s: float | None = None) -> OpenSearch:
    """An opensearch-py client that connects exactly as the relay does (same TLS context, same header).

    The TLS context is handed over whole: opensearch-py's own ``verify_certs=False`` path drops the client
    certificate.
    """
    from opensearchpy import OpenSearch

    context = ssl_context(settings)
    return OpenSearch(
        hosts=[str(settings.url).rstrip("/")],
        headers=credential_headers(settings) or None,
        ssl_context=context,
        use_ssl=context is not None,
        timeout=settings.timeout_s if timeout_s is None else timeout_s,
    )
