"""The slot pool against a real Prefect API: leased in chunks, never above the limit, no leak."""

from __future__ import annotations

import asyncio

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate

from prefect_seedream.engine.slot_pool import SlotPool
from prefect_seedream.slots import GlobalLimitLeases

pytestmark = pytest.mark.usefixtures("prefect_api")


async def _limit(name: str, limit: int) -> None:
    async with get_client() as client:
        await client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=limit))


async def _active_slots(name: str) -> int:
    async with get_client() as client:
        return (await client.read_global_concurrency_limit_by_name(name)).active_slots


async def _hammer(pools: list[SlotPool], rows: int, hold: float, seen: list[int]) -> None:
    """`rows` coroutines per pool, each holding one slot for `hold` seconds."""
    in_use = [0]

    async def row(pool: SlotPool) -> None:
        async with pool.slot():
            in_use[0] += 1
            seen.append(in_use[0])
            await asyncio.sleep(hold)
            in_use[0] -= 1

    await asyncio.gather(*(row(pool) for pool in pools for _ in range(rows)))


async def test_rows_share_leased_slots_and_never_pass_the_limit() -> None:
    await _limit("slots-one-pool", 3)
    seen: list[int] = []
    async with SlotPool(GlobalLimitLeases("slots-one-pool"), limit=3, max_slots=8) as pool:
        await _hammer([pool], rows=12, hold=0.2, seen=seen)
        assert pool.stats.peak_held <= 3
        # 12 rows, a handful of leases: slots go from row to row without a call each.
        assert pool.stats.acquisitions <= 4, pool.stats
    assert max(seen) == 3
    assert await _active_slots("slots-one-pool") == 0  # every lease given back


async def test_two_pools_on_one_limit_stay_under_it_together() -> None:
    """Two shards asking for 2 x 4 slots of a limit of 4: at most 4 in use, both finish."""
    await _limit("slots-two-pools", 4)
    seen: list[int] = []
    peaks: list[int] = []

    async def watch(stop: asyncio.Event) -> None:
        while not stop.is_set():
            peaks.append(await _active_slots("slots-two-pools"))
            await asyncio.sleep(0.05)

    stop = asyncio.Event()
    async with (
        SlotPool(GlobalLimitLeases("slots-two-pools"), limit=4, max_slots=4) as first,
        SlotPool(GlobalLimitLeases("slots-two-pools"), limit=4, max_slots=4) as second,
    ):
        watcher = asyncio.create_task(watch(stop))
        await _hammer([first, second], rows=8, hold=0.3, seen=seen)
        stop.set()
        await watcher
        # The limit really bound: a pool waited for slots (refused with 423, or held up by
        # the server's SQLite write lock until the other pool gave some back).
        assert max(first.stats.starved_seconds, second.stats.starved_seconds) > 0.2
    assert max(seen) <= 4 and max(peaks) <= 4
    assert await _active_slots("slots-two-pools") == 0


async def test_a_cancelled_waiter_leaks_no_slot() -> None:
    await _limit("slots-cancel", 1)
    async with SlotPool(GlobalLimitLeases("slots-cancel"), limit=1, max_slots=1) as pool:
        async with pool.slot():
            waiter = asyncio.create_task(_hold(pool))
            await asyncio.sleep(0.1)
            waiter.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiter
        async with pool.slot():  # the slot came back
            pass
    assert await _active_slots("slots-cancel") == 0


async def _hold(pool: SlotPool) -> None:
    async with pool.slot():
        await asyncio.sleep(10)


async def test_rows_waiting_when_a_lease_is_lost_get_a_new_one() -> None:
    """The server took a lease back (it expired: a stalled process, a restarted server):
    the rows waiting behind it must not wait forever."""
    await _limit("slots-lost", 1)
    async with SlotPool(GlobalLimitLeases("slots-lost"), limit=1, max_slots=1) as pool:
        async with pool.slot():
            waiter = asyncio.create_task(_hold_briefly(pool))
            await asyncio.sleep(0.3)
            assert not waiter.done()
            [lease] = pool._leases
            # What the server does when the lease expires, and what the renewer then notes.
            async with get_client() as client:
                await client.release_concurrency_slots_with_lease(lease.lease_id)
            lease.lost = True
        await asyncio.wait_for(waiter, timeout=10)
        assert pool.stats.acquisitions == 2
    assert await _active_slots("slots-lost") == 0


async def _hold_briefly(pool: SlotPool) -> None:
    async with pool.slot():
        await asyncio.sleep(0.05)
