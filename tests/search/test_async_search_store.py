"""The async-search store: bounded in entries and bytes, every entry expiring, running searches cancelled."""

from __future__ import annotations

import asyncio

import pytest

from bridge.errors import BridgeHTTPError
from bridge.search.async_store import ID_PREFIX, AsyncEntry, AsyncResult, AsyncStore, is_bridge_id


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000

    def __call__(self) -> int:
        return self.now


def result(size: int) -> AsyncResult:
    return AsyncResult(200, {"hits": {"hits": []}}, None, {}, None, size)


async def never() -> AsyncResult:
    await asyncio.Event().wait()
    raise AssertionError("unreachable")


def entry(
    store: AsyncStore, keep_ms: int = 60_000, task: asyncio.Task[AsyncResult] | None = None
) -> AsyncEntry:
    start = store.clock()
    return AsyncEntry(store.new_id(), start, start + keep_ms, task or asyncio.ensure_future(never()), False)


async def test_ids_are_recognisably_the_bridges() -> None:
    store = AsyncStore(10, 1000)
    first, second = store.new_id(), store.new_id()
    assert first != second and is_bridge_id(first) and first.startswith(ID_PREFIX)
    assert not is_bridge_id("FmRldE8zREVEUzA2ZVpUeGs2ejJFUFEaMkZ5QTVrSTZSaVN3WlNFVmtlWHJsdzoxMDc=")


async def test_entries_expire_and_their_searches_are_cancelled() -> None:
    clock = Clock()
    store = AsyncStore(10, 1000, clock)
    running = entry(store)
    store.add(running)
    clock.now += 59_999
    assert store.get(running.async_id) is running
    clock.now += 1
    assert store.get(running.async_id) is None
    await asyncio.sleep(0)
    assert running.task.cancelled()


async def test_the_expiry_timer_removes_an_entry_nobody_asks_for() -> None:
    store = AsyncStore(10, 1000)
    short = entry(store, keep_ms=20)
    store.add(short)
    await asyncio.sleep(0.08)
    assert len(store) == 0 and short.task.cancelled()


async def test_extend_moves_the_expiration() -> None:
    clock = Clock()
    store = AsyncStore(10, 1000, clock)
    kept = entry(store)
    store.add(kept)
    clock.now += 50_000
    store.extend(kept, 60_000)
    clock.now += 50_000
    assert store.get(kept.async_id) is kept and kept.expiration_ms == clock.now + 10_000
    await store.close()


async def test_bytes_are_bounded_by_dropping_the_oldest_done_results() -> None:
    store = AsyncStore(10, 1000)
    entries = [entry(store) for _ in range(3)]
    for item in entries:
        store.add(item)
    store.settle(entries[0], result(400))
    store.settle(entries[1], result(400))
    assert store.bytes == 800
    store.settle(entries[2], result(400))  # 1200 > 1000: the oldest done result goes
    assert store.bytes == 800
    assert store.get(entries[0].async_id) is None
    assert store.get(entries[1].async_id) is entries[1] and store.get(entries[2].async_id) is entries[2]
    store.remove(entries[1].async_id)
    assert store.bytes == 400
    await store.close()


async def test_entries_are_bounded_running_ones_never_dropped() -> None:
    store = AsyncStore(2, 1000)
    done, running = entry(store), entry(store)
    store.add(done)
    store.add(running)
    store.settle(done, result(10))
    newest = entry(store)
    store.add(newest)  # room made by dropping the done one
    assert store.get(done.async_id) is None and len(store) == 2
    refused = entry(store)
    with pytest.raises(BridgeHTTPError) as raised:
        store.add(refused)
    assert raised.value.status == 429
    await asyncio.sleep(0)
    assert refused.task.cancelled() and not running.task.cancelled()
    await store.close()
    assert running.task.cancelled() and newest.task.cancelled() and len(store) == 0 and store.bytes == 0


async def test_a_result_for_a_removed_entry_is_not_kept() -> None:
    store = AsyncStore(10, 1000)
    gone = entry(store)
    store.add(gone)
    store.remove(gone.async_id)
    store.settle(gone, result(100))
    assert store.bytes == 0 and len(store) == 0
