"""What one running bridge holds: settings, the upstream pool, the scorers, metrics. Built per app, never global."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

from aiohttp import web

from bridge.config import Settings
from bridge.ops.metrics import Metrics
from bridge.scoring.base import Scorer
from bridge.scoring.precision import PrecisionReport, ReportsPrecision
from bridge.search.interceptor import SearchInterceptor
from bridge.server.search_engine import UpstreamEngine
from bridge.server.upstream import Upstream

log = logging.getLogger(__name__)


@dataclass
class BridgeState:
    settings: Settings
    upstream: Upstream
    scorers: dict[str, Scorer]
    metrics: Metrics
    interceptor: SearchInterceptor
    models_ready: asyncio.Event = field(default_factory=asyncio.Event)

    @classmethod
    def build(cls, settings: Settings, scorers: Mapping[str, Scorer] | None = None) -> BridgeState:
        metrics = Metrics()
        if scorers is None and settings.models:
            # Imported here: the registry pulls in torch, which a passthrough-only bridge never needs.
            from bridge.scoring.registry import build_scorers

            scorers = build_scorers(settings.models, metrics)
        upstream = Upstream(settings.upstream)
        metrics.watch_pool(upstream.pool_state)
        owned = dict(scorers or {})
        interceptor = SearchInterceptor(settings, UpstreamEngine(upstream), owned, metrics)
        return cls(settings, upstream, owned, metrics, interceptor)

    async def start(self) -> None:
        await self.upstream.start()
        try:
            if self.scorers:
                from bridge.scoring.registry import start_scorers

                log.info("loading models", extra={"models": sorted(self.scorers)})
                await start_scorers(self.scorers)
                for name, report in self.precisions().items():
                    self.metrics.model_loaded(name, report)
        except BaseException:
            await self.upstream.close()  # aiohttp runs no cleanup for a startup that failed
            raise
        self.models_ready.set()

    def precisions(self) -> dict[str, PrecisionReport]:
        """Each started local model's precision report (remote scorers have none)."""
        reports = {}
        for name, scorer in self.scorers.items():
            report = scorer.precision if isinstance(scorer, ReportsPrecision) else None
            if report is not None:
                reports[name] = report
        return reports

    async def close(self) -> None:
        """Background async searches first (they may still be using the scorers and the upstream pool), then the
        scorers, then the engine's connections."""
        await self.interceptor.close()
        if self.scorers:
            from bridge.scoring.registry import close_scorers

            await close_scorers(self.scorers)
        await self.upstream.close()


state_key = web.AppKey("bridge_state", BridgeState)
