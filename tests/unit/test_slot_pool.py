"""The engine's slot pool on leases held in memory: chunks, refusals, server errors, expiry.

What a Prefect server cannot be made to do on demand (answer 503 three times, let a lease
expire under a row) is driven here by an in-memory limit; the pool against a real Prefect
global concurrency limit is tested in tests/test_slots.py.
"""

from __future__ import annotations

import asyncio
from uuid import UUID, uuid4

import pytest

from prefect_seedream.engine import slot_pool
from prefect_seedream.engine.slot_pool import SlotPool, SlotServerUnavailable, SlotsRefused

pytestmark = pytest.mark.unit


class MemoryLimit:
    """A concurrency limit of ``size`` slots, leased in memory (a :class:`SlotLeases`)."""

    def __init__(self, size: int, *, errors: int = 0, fatal: Exception | None = None) -> None:
        self.name = "memory"
        self.size = size
        self.leases: dict[UUID, int] = {}
        self.errors = errors
        self.fatal = fatal
        self.opened = self.closed = False
        self.takes: list[int] = []
        self.expired: set[UUID] = set()

    @property
    def active(self) -> int:
        return sum(self.leases.values())

    async def open(self) -> None:
        self.opened = True

    async def close(self) -> None:
        self.closed = True

    async def take(self, slots: int, lease_seconds: float) -> UUID:
        self.takes.append(slots)
        if self.fatal is not None:
            raise self.fatal
        if self.errors:
            self.errors -= 1
            raise SlotServerUnavailable("503 from the server")
        if self.active + slots > self.size:
            raise SlotsRefused("423: not enough free slots")
        lease = uuid4()
        self.leases[lease] = slots
        return lease

    async def give_back(self, lease_id: UUID) -> None:
        self.leases.pop(lease_id, None)

    async def renew(self, lease_id: UUID, lease_seconds: float) -> bool:
        if lease_id in self.expired:
            self.leases.pop(lease_id, None)
            return False
        return lease_id in self.leases


async def hammer(pool: SlotPool, limit: MemoryLimit, rows: int, hold: float) -> int:
    """``rows`` rows each holding a slot for ``hold`` seconds; the most slots leased at once."""
    peak = 0

    async def row() -> None:
        nonlocal peak
        async with pool.slot():
            peak = max(peak, limit.active)
            await asyncio.sleep(hold)

    await asyncio.gather(*(row() for _ in range(rows)))
    return peak


async def test_rows_share_leases_taken_in_chunks_and_all_are_given_back() -> None:
    limit = MemoryLimit(size=4)
    async with SlotPool(limit, limit=4, max_slots=8, linger=0.01) as pool:
        assert limit.opened
        peak = await hammer(pool, limit, rows=20, hold=0.01)
        assert peak <= 4 and pool.stats.peak_held <= 4
        assert pool.stats.acquisitions < 20  # slots went from row to row, not a lease each
        assert max(limit.takes) == 1  # a chunk is a quarter of max_slots (4 of a limit of 4)
    assert limit.active == 0 and limit.closed


async def test_a_refused_request_is_halved_and_asked_again() -> None:
    limit = MemoryLimit(size=3)
    limit.leases[uuid4()] = 2  # another run holds 2 of the 3 slots
    async with SlotPool(limit, limit=8, max_slots=8, linger=0.01) as pool:  # chunks of 2
        await hammer(pool, limit, rows=4, hold=0.01)
        assert pool.stats.denials >= 1
        assert limit.takes[0] == 2 and 1 in limit.takes  # 2 refused, then 1 granted
        assert pool.stats.peak_held == 1


async def test_server_errors_are_tolerated_then_the_rows_fail(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(slot_pool, "MAX_DENIED_PAUSE_SECONDS", 0.01)
    monkeypatch.setattr(slot_pool, "FIRST_DENIED_PAUSE_SECONDS", 0.01)
    flaky = MemoryLimit(size=2, errors=2)
    async with SlotPool(flaky, limit=2, max_slots=2, linger=0.01) as pool:
        await hammer(pool, flaky, rows=2, hold=0.0)  # two 503s, then slots
    down = MemoryLimit(size=2, errors=100)
    async with SlotPool(down, limit=2, max_slots=2, linger=0.01) as pool:
        with pytest.raises(SlotServerUnavailable):
            await hammer(pool, down, rows=1, hold=0.0)


async def test_a_missing_limit_fails_the_waiting_rows_at_once() -> None:
    missing = MemoryLimit(size=2, fatal=RuntimeError("global concurrency limit 'x' does not exist"))
    async with SlotPool(missing, limit=2, max_slots=2) as pool:
        with pytest.raises(RuntimeError, match="does not exist"):
            await hammer(pool, missing, rows=3, hold=0.0)
        assert missing.takes == [1]  # asked once: nothing to wait for


async def test_an_expired_lease_is_replaced_for_the_rows_that_wait() -> None:
    limit = MemoryLimit(size=1)
    async with SlotPool(limit, limit=1, max_slots=1, lease_seconds=0.06, linger=0.01) as pool:
        async with pool.slot():
            (lease,) = limit.leases
            limit.expired.add(lease)  # the server takes it back at the next renewal
            await asyncio.sleep(0.05)
            assert limit.leases == {}
        await hammer(pool, limit, rows=2, hold=0.0)  # a new lease serves the next rows
        assert pool.stats.acquisitions == 2


async def test_a_cancelled_waiter_keeps_no_slot() -> None:
    limit = MemoryLimit(size=1)
    async with SlotPool(limit, limit=1, max_slots=1, linger=0.01) as pool:
        async with pool.slot():
            waiter = asyncio.create_task(hammer(pool, limit, rows=1, hold=0.0))
            await asyncio.sleep(0.02)
            waiter.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiter
        await asyncio.sleep(0.05)
        assert pool.in_use == 0
    assert limit.active == 0
