"""The engine as search interception sees it: a protocol owned here, implemented by the server's upstream.

Interception needs exactly two things from the engine: one in-memory exchange for the requests it reads or
rewrites, and an untouched relay for everything it hands back to the engine as the client sent it (answers
streamed, byte for byte). Owning that seam here keeps ``bridge.search`` free of ``bridge.server``, so
interception and merging run in tests against a scripted engine.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import NamedTuple, Protocol

from aiohttp import web
from multidict import CIMultiDict

from bridge.errors import BridgeHTTPError


class EngineReply(NamedTuple):
    """The engine's whole answer: status, its end-to-end headers (no hop-by-hop ones), the body as sent."""

    status: int
    headers: CIMultiDict[str]
    body: bytes


class EngineClient(Protocol):
    """What interception asks of the engine. ``headers`` are the client's: the implementation removes
    hop-by-hop ones and adds the bridge's own credentials when the client sent none, so no secret passes here."""

    async def exchange(
        self, method: str, target: str, headers: Mapping[str, str], body: bytes | None
    ) -> EngineReply:
        """One request, its answer read whole; engine failures raise engine-shaped 502/504s."""
        ...

    async def relay(
        self,
        request: web.Request,
        *,
        target: str | None = None,
        body: bytes | None = None,
        drop_headers: tuple[str, ...] = (),
        add_headers: Mapping[str, str] | None = None,
    ) -> web.StreamResponse:
        """``request`` to the engine as is (``body`` when already read, else streamed), the answer streamed
        back unchanged except for ``add_headers``."""
        ...


@dataclass(frozen=True)
class Deadline:
    """One engine budget per client request: a render, a search and a re-send share it, never multiply it."""

    at: float
    """A ``loop.time()`` instant."""
    seconds: float

    @classmethod
    def after(cls, seconds: float) -> Deadline:
        return cls(asyncio.get_running_loop().time() + seconds, seconds)


class Engine:
    """An :class:`EngineClient` bound to one request's deadline; the interceptor's only way to the engine."""

    def __init__(
        self, client: EngineClient, deadline: Deadline, overall: asyncio.Timeout | None = None
    ) -> None:
        self.client = client
        self.deadline = deadline
        self._overall = overall  # the request's search deadline, lifted once an untouched relay starts
        self._first: float | None = None
        self._last = 0.0

    @property
    def elapsed_ms(self) -> float:
        """From the first exchange's start to the last one's end (concurrent ones overlap, not add up)."""
        return 0.0 if self._first is None else (self._last - self._first) * 1000

    async def exchange(
        self, method: str, target: str, headers: Mapping[str, str], body: bytes | None
    ) -> EngineReply:
        if self._first is None:
            self._first = time.perf_counter()
        try:
            async with asyncio.timeout_at(self.deadline.at):
                return await self.client.exchange(method, target, headers, body)
        except TimeoutError as error:
            raise BridgeHTTPError(
                504,
                "upstream_timeout_exception",
                f"the search engine did not answer within {self.deadline.seconds:g}s",
            ) from error
        finally:
            self._last = time.perf_counter()

    async def relay(
        self,
        request: web.Request,
        *,
        target: str | None = None,
        body: bytes | None = None,
        drop_headers: tuple[str, ...] = (),
        add_headers: Mapping[str, str] | None = None,
    ) -> web.StreamResponse:
        """Untouched relays stream: the engine's read timeout bounds them, not the request's deadline."""
        if self._overall is not None:
            self._overall.reschedule(None)
        return await self.client.relay(
            request, target=target, body=body, drop_headers=drop_headers, add_headers=add_headers
        )
