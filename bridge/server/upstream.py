"""One pooled keep-alive session to the engine, with its TLS and optional credentials."""

from __future__ import annotations

import base64
import ssl
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
from multidict import CIMultiDict
from yarl import URL

from bridge.config import UpstreamSettings
from bridge.errors import BridgeHTTPError

# RFC 9110 7.6.1: meaningful for one connection only, never forwarded.
HOP_BY_HOP = frozenset(
    h.lower()
    for h in (
        "Connection",
        "Keep-Alive",
        "Proxy-Authenticate",
        "Proxy-Authorization",
        "Proxy-Connection",
        "TE",
        "Trailer",
        "Trailers",
        "Transfer-Encoding",
        "Upgrade",
    )
)


def end_to_end(headers: Mapping[str, str], *, drop: frozenset[str] = frozenset()) -> CIMultiDict[str]:
    """Headers minus hop-by-hop ones, including those the ``Connection`` header names."""
    named = {
        token.strip().lower()
        for value in _all(headers, "Connection")
        for token in value.split(",")
        if token.strip()
    }
    skip = HOP_BY_HOP | named | drop
    return CIMultiDict((k, v) for k, v in headers.items() if k.lower() not in skip)


def _all(headers: Mapping[str, str], name: str) -> list[str]:
    getall = getattr(headers, "getall", None)
    if getall is not None:
        return list(getall(name, []))
    value = headers.get(name)
    return [value] if value is not None else []


class Upstream:
    """The engine as the bridge sees it. Start once per process; every request shares the pool."""

    def __init__(self, settings: UpstreamSettings) -> None:
        self.settings = settings
        self.base = URL(str(settings.url).rstrip("/"))
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(
            limit=self.settings.max_connections,
            ssl=self._ssl_context() if self.base.scheme == "https" else False,
            keepalive_timeout=60,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            # Bodies pass through as the engine sent them (gzip stays gzip).
            auto_decompress=False,
            timeout=aiohttp.ClientTimeout(
                total=None, sock_connect=self.settings.connect_timeout_s, sock_read=self.settings.timeout_s
            ),
            skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
            cookie_jar=aiohttp.DummyCookieJar(),
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _ssl_context(self) -> ssl.SSLContext | bool:
        if not self.settings.verify_tls:
            return False
        context = ssl.create_default_context(
            cafile=str(self.settings.ca_bundle) if self.settings.ca_bundle else None
        )
        if self.settings.client_cert is not None:
            context.load_cert_chain(
                str(self.settings.client_cert),
                str(self.settings.client_key) if self.settings.client_key else None,
            )
        return context

    def url(self, raw_path_and_query: str) -> URL:
        """The engine URL for a client's raw path and query string, byte for byte (no re-encoding)."""
        base_path = self.base.raw_path.rstrip("/")
        return URL(
            str(self.base.with_path("").with_query(None)) + base_path + raw_path_and_query, encoded=True
        )

    def credentials(self) -> str | None:
        """The bridge's own Authorization value, used only when the client sends none."""
        if self.settings.api_key is not None:
            return f"ApiKey {self.settings.api_key.get_secret_value()}"
        if self.settings.username is not None:
            password = self.settings.password.get_secret_value() if self.settings.password else ""
            token = base64.b64encode(f"{self.settings.username}:{password}".encode()).decode()
            return f"Basic {token}"
        return None

    def forward_headers(self, incoming: Mapping[str, str]) -> CIMultiDict[str]:
        """What the engine receives: the client's end-to-end headers, Host rewritten by the session."""
        headers = end_to_end(incoming, drop=frozenset({"host"}))
        if "Authorization" not in headers:
            own = self.credentials()
            if own is not None:
                headers["Authorization"] = own
        return headers

    @asynccontextmanager
    async def request(
        self, method: str, raw_path_and_query: str, headers: Mapping[str, str], data: Any = None
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """Send one request; connection failures and timeouts become engine-shaped 502/504 errors."""
        if self._session is None:
            raise RuntimeError("Upstream.start() was not awaited")
        try:
            async with self._session.request(
                method,
                self.url(raw_path_and_query),
                headers=headers,
                data=data,
                allow_redirects=False,
                compress=None,
            ) as response:
                yield response
        except (TimeoutError, aiohttp.ServerTimeoutError) as error:
            raise BridgeHTTPError(
                504, "upstream_timeout_exception", f"the search engine at {self.base} did not answer in time"
            ) from error
        except aiohttp.ClientConnectorError as error:
            raise BridgeHTTPError(
                502,
                "upstream_unavailable_exception",
                f"cannot reach the search engine at {self.base}: {error.os_error}",
            ) from error
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as error:
            raise BridgeHTTPError(
                502,
                "upstream_unavailable_exception",
                f"the search engine at {self.base} closed the connection",
            ) from error

    async def fetch_json(
        self, method: str, raw_path_and_query: str, headers: Mapping[str, str], body: bytes | None
    ) -> tuple[int, CIMultiDict[str], bytes]:
        """A whole exchange in memory: for the searches the bridge rewrites (bounded by their size)."""
        async with self.request(method, raw_path_and_query, headers, body) as response:
            try:
                payload = await response.read()
            except (aiohttp.ClientPayloadError, aiohttp.ClientOSError) as error:
                raise BridgeHTTPError(
                    502, "upstream_unavailable_exception", "the search engine broke off its answer"
                ) from error
            return response.status, CIMultiDict(response.headers), payload
