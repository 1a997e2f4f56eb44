"""The upstream pool as search interception's :class:`~bridge.search.engine.EngineClient`."""

from __future__ import annotations

from collections.abc import Mapping

from aiohttp import web

from bridge.search.engine import EngineReply
from bridge.server.relay import relay
from bridge.server.upstream import Upstream, end_to_end


class UpstreamEngine:
    """Adapts :class:`Upstream` (and the passthrough relay) to the protocol interception owns."""

    def __init__(self, upstream: Upstream) -> None:
        self.upstream = upstream

    async def exchange(
        self, method: str, target: str, headers: Mapping[str, str], body: bytes | None
    ) -> EngineReply:
        status, answer_headers, payload = await self.upstream.fetch_json(
            method, target, self.upstream.forward_headers(headers), body
        )
        return EngineReply(status, end_to_end(answer_headers), payload)

    async def relay(
        self,
        request: web.Request,
        *,
        target: str | None = None,
        body: bytes | None = None,
        drop_headers: tuple[str, ...] = (),
        add_headers: Mapping[str, str] | None = None,
    ) -> web.StreamResponse:
        return await relay(
            request, self.upstream, path=target, body=body, drop_headers=drop_headers, add_headers=add_headers
        )
