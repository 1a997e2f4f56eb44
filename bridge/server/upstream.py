"""The engine as the bridge reaches it: one keep-alive connection pool, its TLS, the bridge's own credentials,
and failures turned into the engine-shaped 502/504 answers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, Mapping
from types import TracebackType

from multidict import CIMultiDict
from yarl import URL

from bridge.config import UpstreamSettings
from bridge.engine_access import authorization, ssl_context
from bridge.errors import BridgeHTTPError
from bridge.server.http1 import (
    ConnectFailed,
    ConnectionPool,
    EngineError,
    EngineResponse,
    PoolTimeout,
    connection_options,
)

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


# Host names the bridge; the engine gets its own.
_NOT_FORWARDED = frozenset({"host"})


def end_to_end(headers: Mapping[str, str], *, drop: frozenset[str] = frozenset()) -> CIMultiDict[str]:
    """Headers minus hop-by-hop ones, including those the ``Connection`` header names.

    A copy, then a few removals: multidict does both in C, which matters on every relayed request.
    """
    result: CIMultiDict[str] = CIMultiDict(headers)
    for name in connection_options(result):
        result.popall(name, None)
    for name in HOP_BY_HOP:
        result.popall(name, None)
    for name in drop:
        result.popall(name, None)
    return result


class Upstream:
    """The engine as the bridge sees it. Start once per process; every request shares the pool."""

    def __init__(self, settings: UpstreamSettings) -> None:
        self.settings = settings
        self.base = URL(str(settings.url).rstrip("/"))
        self._base_path = self.base.raw_path.rstrip("/")
        self._pool: ConnectionPool | None = None
        self._authorization = authorization(settings)  # the same on every request: built once

    async def start(self) -> None:
        host = self.base.raw_host
        port = self.base.port
        if host is None or port is None:
            raise ValueError(f"upstream URL {self.base} has no host")
        self._pool = ConnectionPool(
            host,
            port,
            host_header=self.base.host_port_subcomponent or host,
            ssl_context=ssl_context(self.settings),
            limit=self.settings.max_connections,
            connect_timeout=self.settings.connect_timeout_s,
            read_timeout=self.settings.timeout_s,
            pool_timeout=self.settings.pool_timeout_s,
        )

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    def pool_state(self) -> dict[str, int | bool]:
        """How busy the connection pool is, for ``/_bridge/health`` and ``/_bridge/ready``."""
        pool = self._pool
        if pool is None:
            return {"limit": self.settings.max_connections, "in_use": 0, "waiting": 0, "saturated": False}
        return {
            "limit": pool.limit,
            "in_use": pool.in_use,
            "waiting": pool.waiting,
            "saturated": pool.saturated,
        }

    def target(self, raw_path_and_query: str) -> str:
        """The request target for a client's raw path and query string, byte for byte (no re-encoding)."""
        return self._base_path + raw_path_and_query

    def credentials(self) -> str | None:
        """The bridge's own Authorization value, used only when the client sends none."""
        return self._authorization

    def forward_headers(self, incoming: Mapping[str, str]) -> CIMultiDict[str]:
        """What the engine receives: the client's end-to-end headers; Host is the engine's own."""
        headers = end_to_end(incoming, drop=_NOT_FORWARDED)
        if "Authorization" not in headers:
            own = self.credentials()
            if own is not None:
                headers["Authorization"] = own
        return headers

    def request(
        self,
        method: str,
        raw_path_and_query: str,
        headers: Mapping[str, str],
        data: bytes | AsyncIterable[bytes] | None = None,
    ) -> Exchange:
        """``async with upstream.request(...) as response``: one request, its answer's body read inside.

        ``headers`` are sent as given, except the framing: ``Content-Length`` is the bridge's own for a ``bytes``
        body (or none), and a streamed body keeps the client's length or goes chunked. Connection failures and
        timeouts, on sending or on reading, become engine-shaped 502/504 errors.
        """
        if self._pool is None:
            raise RuntimeError("Upstream.start() was not awaited")
        return Exchange(self, self._pool, method, self.target(raw_path_and_query), headers, data)

    def http_error(self, error: BaseException) -> BridgeHTTPError | None:
        """The engine-shaped answer for a failure talking to the engine; None for any other error."""
        if isinstance(error, TimeoutError):
            return BridgeHTTPError(
                504, "upstream_timeout_exception", f"the search engine at {self.base} did not answer in time"
            )
        if isinstance(error, PoolTimeout):
            return BridgeHTTPError(
                503,
                "upstream_saturated_exception",
                f"no connection to the search engine at {self.base} came free in time: {error}",
            )
        if isinstance(error, ConnectFailed):
            return BridgeHTTPError(
                502,
                "upstream_unavailable_exception",
                f"cannot reach the search engine at {self.base}: {error.os_error}",
            )
        if isinstance(error, EngineError):
            return BridgeHTTPError(
                502, "upstream_unavailable_exception", f"the search engine at {self.base}: {error}"
            )
        return None

    async def fetch_json(
        self,
        method: str,
        raw_path_and_query: str,
        headers: Mapping[str, str],
        body: bytes | None,
        *,
        timeout_s: float | None = None,
    ) -> tuple[int, CIMultiDict[str], bytes]:
        """A whole exchange in memory: for the searches the bridge rewrites (bounded by their size).

        ``timeout_s`` bounds the whole exchange, waiting for a connection included (a 503/504 beyond it).
        """
        try:
            async with asyncio.timeout(timeout_s):
                async with self.request(method, raw_path_and_query, headers, body) as response:
                    payload = await response.read()
                    return response.status, response.headers, payload
        except TimeoutError as error:
            shaped = self.http_error(error)
            assert shaped is not None
            raise shaped from error


class Exchange:
    """One request to the engine as an async context manager (a plain class: it runs on every relayed request)."""

    __slots__ = ("_body", "_headers", "_method", "_pool", "_response", "_target", "_upstream")

    def __init__(
        self,
        upstream: Upstream,
        pool: ConnectionPool,
        method: str,
        target: str,
        headers: Mapping[str, str],
        body: bytes | AsyncIterable[bytes] | None,
    ) -> None:
        self._upstream = upstream
        self._pool = pool
        self._method = method
        self._target = target
        self._headers = headers
        self._body = body
        self._response: EngineResponse | None = None

    async def __aenter__(self) -> EngineResponse:
        try:
            self._response = await self._pool.send(self._method, self._target, self._headers, self._body)
        except Exception as error:
            shaped = self._upstream.http_error(error)
            if shaped is None:
                raise
            raise shaped from error
        return self._response

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        if self._response is not None:
            self._response.close()
        if error is not None:
            shaped = self._upstream.http_error(error)
            if shaped is not None:
                raise shaped from error
