"""The async searches the bridge answers itself: in memory, bounded in entries and bytes, each one expiring.

Elasticsearch keeps async results in a system index; the bridge's engine may have none (OpenSearch has no
``_async_search``), so results live here, in the process that ran them. One store per interceptor, never global.
Bounds: at most ``max_entries`` searches (running or done) and ``max_bytes`` of done results; beyond them the
oldest done results are dropped first, and a new search is refused (429) only when every entry is still running.
An entry leaves at its expiration (``keep_alive``), on DELETE, or at shutdown; a running one is cancelled then.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bridge.errors import BridgeHTTPError
from bridge.search.rerank import Outcome

# Every id the bridge issues starts so. A dot is outside the URL-safe base64 alphabet of Elasticsearch's own ids,
# so no id the engine issued is ever taken for one of the bridge's.
ID_PREFIX = "rerank-bridge."


def is_bridge_id(async_id: str) -> bool:
    return async_id.startswith(ID_PREFIX)


@dataclass
class AsyncResult:
    """How a search ended: the engine's answer reranked (``status`` 200), or its error in the engine's shape."""

    status: int
    response: dict[str, Any] | None
    """The search response (what ``_search`` answers), None for a failure."""
    error: dict[str, Any] | None
    """The ``error`` object of a failure, as the engine writes it."""
    headers: dict[str, str]
    """The engine's headers worth answering again (its media type, a ``Warning``)."""
    outcome: Outcome | None
    """How the search was reranked (or why not); None for a failure."""
    size: int = 0
    """Bytes the result holds, as JSON."""


@dataclass
class AsyncEntry:
    async_id: str
    start_ms: int
    expiration_ms: int
    task: asyncio.Task[AsyncResult]
    keep_on_completion: bool
    owner: str = ""
    """A digest of the submitter's credentials: only the same credentials read, poll or delete the search."""
    completion_ms: int | None = None
    result: AsyncResult | None = None
    _timer: asyncio.TimerHandle | None = field(default=None, repr=False)

    @property
    def running(self) -> bool:
        return self.result is None


def owner_of(authorization: str | None) -> str:
    """Who may see an async search: a digest of the ``Authorization`` it came with (never the secret itself).

    Elasticsearch answers another user's get with 404; the bridge, which authenticates nobody, tells users apart
    by the credentials it forwards for them."""
    return hashlib.sha256((authorization or "").encode("utf-8", "surrogateescape")).hexdigest()


def now_ms() -> int:
    return int(time.time() * 1000)


class AsyncStore:
    """Entries by id, oldest first. ``clock`` (epoch milliseconds) is replaceable for tests."""

    def __init__(self, max_entries: int, max_bytes: int, clock: Callable[[], int] = now_ms) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.clock = clock
        self._entries: OrderedDict[str, AsyncEntry] = OrderedDict()
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    def state(self) -> dict[str, int]:
        """Running and done entries and the bytes held: what the metrics report."""
        done = sum(1 for entry in self._entries.values() if entry.result is not None)
        return {"running": len(self._entries) - done, "done": done, "bytes": self.bytes}

    @staticmethod
    def new_id() -> str:
        return ID_PREFIX + secrets.token_urlsafe(24)

    def add(self, entry: AsyncEntry) -> None:
        """Keep ``entry``, making room by dropping the oldest done results; a 429 when all are running."""
        self._expire()
        while len(self._entries) >= self.max_entries:
            if not self._drop_oldest_done():
                entry.task.cancel()
                raise BridgeHTTPError(
                    429,
                    "rejected_execution_exception",
                    f"the bridge already runs {self.max_entries} async searches (async_search.max_entries)",
                )
        self._entries[entry.async_id] = entry
        self._schedule(entry)

    def get(self, async_id: str) -> AsyncEntry | None:
        """The live entry for ``async_id``; None once it expired or was deleted (or never was)."""
        self._expire()
        return self._entries.get(async_id)

    def extend(self, entry: AsyncEntry, keep_alive_ms: int) -> None:
        """A GET's ``keep_alive``: the entry now expires that long from now, as Elasticsearch extends it."""
        entry.expiration_ms = self.clock() + keep_alive_ms
        self._schedule(entry)

    def settle(self, entry: AsyncEntry, result: AsyncResult) -> None:
        """Record a finished search's result, dropping the oldest done results it needs room from."""
        if self._entries.get(entry.async_id) is not entry:
            return  # deleted or expired meanwhile
        while self.bytes + result.size > self.max_bytes and self._drop_oldest_done():
            pass
        entry.result = result
        entry.completion_ms = self.clock()
        self.bytes += result.size

    def remove(self, async_id: str) -> AsyncEntry | None:
        """Forget the entry, cancelling its search if it still runs."""
        entry = self._entries.pop(async_id, None)
        if entry is None:
            return None
        if entry._timer is not None:
            entry._timer.cancel()
        if entry.result is not None:
            self.bytes -= entry.result.size
        if not entry.task.done():
            entry.task.cancel()
        return entry

    async def close(self) -> None:
        """Cancel every running search and forget every result (shutdown)."""
        tasks = [entry.task for entry in self._entries.values()]
        for async_id in list(self._entries):
            self.remove(async_id)
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    def _schedule(self, entry: AsyncEntry) -> None:
        if entry._timer is not None:
            entry._timer.cancel()
        delay = max(0.0, (entry.expiration_ms - self.clock()) / 1000)
        loop = asyncio.get_running_loop()
        entry._timer = loop.call_later(delay, self._expire_one, entry.async_id, entry)

    def _expire_one(self, async_id: str, entry: AsyncEntry) -> None:
        if self._entries.get(async_id) is entry and entry.expiration_ms <= self.clock():
            self.remove(async_id)

    def _expire(self) -> None:
        """Entries past their expiration (their timers may not have run yet) leave now."""
        moment = self.clock()
        for async_id in [i for i, e in self._entries.items() if e.expiration_ms <= moment]:
            self.remove(async_id)

    def _drop_oldest_done(self) -> bool:
        for async_id, entry in self._entries.items():
            if entry.result is not None:
                self.remove(async_id)
                return True
        return False
