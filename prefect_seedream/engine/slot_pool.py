"""Slots of a concurrency limit shared beyond this process, leased in chunks and shared by a
run's rows.

The pool knows nothing of where the slots come from: a :class:`SlotLeases` grants, renews and
takes back leases of them (the Prefect layer's :class:`prefect_seedream.slots.GlobalLimitLeases`
does it with a Prefect global concurrency limit; a test can do it in memory).

Prefect's own ``concurrency()`` context manager costs, per use, an acquisition call, a lease
renewal thread, a release call and two events. For a row that takes a few seconds that is
most of its Prefect overhead. A :class:`SlotPool` leases slots from the server in chunks
(``POST /v2/concurrency_limits/increment-with-lease``) and hands them to rows locally: a row
that finishes gives its slot straight to the next waiting row, with no API call, so a steady
run makes no slot calls at all. The server still bounds the total across every run and
worker: a row only runs on a slot leased from it, so the limit is never exceeded.

* A chunk is at most a quarter of the run's own concurrency (so that the tail of a run gives
  slots back gradually); a request the server refuses (423: not enough free slots) is halved
  before it is tried again, down to one slot, so free slots are taken even when a big
  request would not fit, and asked again after 0.1 s, doubling up to 1 s while refused.
* A lease whose slots all sit unused for ``linger`` seconds with no row waiting is released.
* Leases are renewed by one task for the whole pool (every third of their duration). If the
  process dies, the server reclaims its leases when they expire (``SLOT_LEASE_SECONDS``).
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Protocol
from uuid import UUID

from prefect_seedream.engine.defaults import SLOT_LEASE_SECONDS, SLOT_LINGER_SECONDS

logger = logging.getLogger("prefect_seedream.slots")

#: Pauses before asking again for slots the server refused: from the first, doubling to the
#: longest (the server's own Retry-After can be 30 s when slots are held long, which would
#: leave freed slots idle that long; asking every few hundred ms costs it little).
FIRST_DENIED_PAUSE_SECONDS = 0.1
MAX_DENIED_PAUSE_SECONDS = 1.0
#: Server errors (5xx, connection) tolerated in a row while asking for slots, with the same
#: pauses, before the rows waiting for them fail.
SERVER_ERRORS_TOLERATED = 8
#: How long closing waits for a slot request in progress (so its lease is given back).
CLOSE_TIMEOUT_SECONDS = 5.0


class SlotsRefused(Exception):
    """The limit has too few free slots for the request (ask for fewer, a little later)."""


class SlotServerUnavailable(Exception):
    """The slots' server did not answer, or answered with a server error (ask again)."""


class SlotLeases(Protocol):
    """Where a :class:`SlotPool`'s slots come from: leases of a limit shared by every run."""

    name: str

    async def open(self) -> None:
        """Connect (before the first lease)."""

    async def close(self) -> None:
        """Disconnect (after the last lease was given back)."""

    async def take(self, slots: int, lease_seconds: float) -> UUID:
        """Lease ``slots`` slots for ``lease_seconds``; returns the lease's id.

        Raises:
            SlotsRefused: Too few slots are free now.
            SlotServerUnavailable: The server could not answer now.
            Exception: Anything else: the rows cannot run safely without slots.
        """
        ...

    async def give_back(self, lease_id: UUID) -> None:
        """Release a lease's slots."""

    async def renew(self, lease_id: UUID, lease_seconds: float) -> bool:
        """Extend a lease; False when the server had already taken its slots back."""
        ...


@dataclass
class _Lease:
    lease_id: UUID
    slots: int
    in_use: int = 0
    lost: bool = False

    @property
    def free(self) -> int:
        return 0 if self.lost else self.slots - self.in_use


@dataclass
class SlotStats:
    """What a pool did, for benchmarks and logs.

    Attributes:
        acquisitions: Leases granted by the server.
        denials: Requests the server refused (423) because too few slots were free.
        releases: Leases given back.
        peak_held: Most slots leased at once.
        idle_slot_seconds: Slot-seconds leased but unused while no row was waiting.
        starved_seconds: Seconds during which rows waited for slots the server had not granted.
    """

    acquisitions: int = 0
    denials: int = 0
    releases: int = 0
    peak_held: int = 0
    idle_slot_seconds: float = 0.0
    starved_seconds: float = 0.0
    _since: float = field(default_factory=time.monotonic, repr=False)


class SlotPool:
    """Local tokens backed by leased slots of one shared concurrency limit.

    Args:
        leases: Where the slots are leased from (its ``name`` names the limit in logs).
        limit: The limit's size (a request is never bigger).
        max_slots: Most slots this pool holds (the run's own concurrency).
        lease_seconds: Duration of each lease (Prefect's minimum is 60 s).
        linger: Seconds an unused lease is kept for a row that may come.

    Examples:
        ```python
        from prefect_seedream.slots import GlobalLimitLeases

        # The limit exists: `prefect gcl create evolink --limit 50`
        async with SlotPool(GlobalLimitLeases("evolink"), limit=50, max_slots=16) as pool:
            async with pool.slot():
                assert pool.in_use == 1  # one generation in flight
        ```
    """

    def __init__(
        self,
        leases: SlotLeases,
        *,
        limit: int,
        max_slots: int,
        lease_seconds: float = SLOT_LEASE_SECONDS,
        linger: float = SLOT_LINGER_SECONDS,
    ) -> None:
        self.leases = leases
        self.name = leases.name
        self.limit = max(1, limit)
        self.max_slots = max(1, min(max_slots, self.limit))
        self.chunk = max(1, math.ceil(self.max_slots / 4))
        self.lease_seconds = lease_seconds
        self.linger = linger
        self.stats = SlotStats()
        self._leases: list[_Lease] = []
        self._waiters: deque[asyncio.Future[_Lease]] = deque()
        self._open = False
        self._grower: asyncio.Task[None] | None = None
        self._renewer: asyncio.Task[None] | None = None
        self._releasers: set[asyncio.Task[None]] = set()
        #: Every lease granted and not yet given back (closing gives back what is left).
        self._unreleased: dict[UUID, _Lease] = {}
        self._request = self.chunk

    async def __aenter__(self) -> SlotPool:
        await self.leases.open()
        self._open = True
        self._renewer = asyncio.create_task(self._renew_forever())
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    @property
    def held(self) -> int:
        """Slots leased now."""
        return sum(lease.slots for lease in self._leases if not lease.lost)

    @property
    def in_use(self) -> int:
        """Slots rows are using now."""
        return sum(lease.in_use for lease in self._leases)

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one slot for the duration of the block."""
        lease = await self._take()
        try:
            yield
        finally:
            self._give(lease)

    async def close(self) -> None:
        """Give every lease back and stop renewing."""
        self._account()
        for waiter in self._waiters:
            waiter.cancel()
        self._waiters.clear()
        if self._renewer is not None:
            self._renewer.cancel()
        if self._grower is not None and not self._grower.done():
            # A request in progress may be granted: let it finish so its lease is known.
            try:
                await asyncio.wait_for(asyncio.shield(self._grower), CLOSE_TIMEOUT_SECONDS)
            except Exception:  # timed out or failed: stop it either way
                self._grower.cancel()
        for task in list(self._releasers):
            task.cancel()
        await asyncio.gather(*self._releasers, return_exceptions=True)
        self._leases = []
        leases, self._unreleased = list(self._unreleased.values()), {}
        if self._open:
            for lease in leases:
                await self._release(lease)
            await self.leases.close()
            self._open = False

    # -- tokens ----------------------------------------------------------------------------

    async def _take(self) -> _Lease:
        lease = self._lease_with_room()
        if lease is not None:
            self._account()
            lease.in_use += 1
            return lease
        waiter: asyncio.Future[_Lease] = asyncio.get_running_loop().create_future()
        self._account()
        self._waiters.append(waiter)
        self._ensure_grower()
        try:
            return await waiter
        except asyncio.CancelledError:
            if waiter in self._waiters:
                self._waiters.remove(waiter)
            elif waiter.done() and not waiter.cancelled():
                self._give(waiter.result())  # granted as we were cancelled: hand it on
            raise

    def _give(self, lease: _Lease) -> None:
        self._account()
        lease.in_use -= 1
        while self._waiters and lease.free > 0:
            waiter = self._waiters.popleft()
            if not waiter.done():
                lease.in_use += 1
                waiter.set_result(lease)
                return
        if lease.lost and lease.in_use == 0 and lease in self._leases:
            self._leases.remove(lease)  # the server took it back: nothing to release
            self._unreleased.pop(lease.lease_id, None)
        elif lease.in_use == 0:
            self._release_soon(lease)
        self._ensure_grower()

    def _ensure_grower(self) -> None:
        """Rows wait and nobody is asking the server: ask (after a lease was lost, say)."""
        if self._waiters and (self._grower is None or self._grower.done()):
            self._grower = asyncio.create_task(self._grow())

    def _release_soon(self, lease: _Lease) -> None:
        task = asyncio.create_task(self._release_when_idle(lease))
        self._releasers.add(task)
        task.add_done_callback(self._releasers.discard)

    def _lease_with_room(self) -> _Lease | None:
        """The fullest lease with a free slot, so that emptier ones drain and go back."""
        candidates = [lease for lease in self._leases if lease.free > 0]
        return max(candidates, key=lambda lease: lease.in_use) if candidates else None

    def _account(self) -> None:
        """Integrate idle and starved time up to now (called at every change)."""
        now = time.monotonic()
        elapsed = now - self.stats._since
        self.stats._since = now
        if self._waiters:
            self.stats.starved_seconds += elapsed
        else:
            self.stats.idle_slot_seconds += elapsed * max(0, self.held - self.in_use)

    # -- the server --------------------------------------------------------------------------

    async def _grow(self) -> None:
        """Lease more slots while rows wait and this pool may hold more."""
        pause = FIRST_DENIED_PAUSE_SECONDS
        errors = 0
        while self._waiters:
            room = self.max_slots - self.held
            if room <= 0:
                return  # rows wait for a slot to be given back
            want = max(1, min(len(self._waiters), room, self._request))
            try:
                lease_id = await self.leases.take(want, self.lease_seconds)
            except (SlotsRefused, SlotServerUnavailable) as exc:
                if isinstance(exc, SlotsRefused):  # not enough free slots: ask for fewer, a little later
                    self.stats.denials += 1
                    self._request = max(1, want // 2)
                elif errors < SERVER_ERRORS_TOLERATED:
                    errors += 1  # the server is struggling or restarting: ask again
                    logger.warning("asking for slots of %s failed (%s); asking again", self.name, exc)
                else:  # the rows cannot run safely without slots
                    self._fail_waiters(exc.__cause__ or exc)
                    return
                await asyncio.sleep(pause * random.uniform(0.5, 1.0))
                pause = min(MAX_DENIED_PAUSE_SECONDS, pause * 2)
                continue
            except Exception as exc:  # anything else: the rows cannot run safely
                self._fail_waiters(exc)
                return
            self._account()
            lease = _Lease(lease_id, want)
            self._leases.append(lease)
            self._unreleased[lease.lease_id] = lease
            errors = 0
            self.stats.acquisitions += 1
            self.stats.peak_held = max(self.stats.peak_held, self.held)
            self._request = min(self.chunk, want * 2)
            pause = FIRST_DENIED_PAUSE_SECONDS
            while self._waiters and lease.free > 0:
                waiter = self._waiters.popleft()
                if not waiter.done():
                    lease.in_use += 1
                    waiter.set_result(lease)
            if lease.in_use == 0:  # the rows that asked were cancelled meanwhile
                self._release_soon(lease)

    def _fail_waiters(self, error: BaseException) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(error)

    async def _release_when_idle(self, lease: _Lease) -> None:
        await asyncio.sleep(self.linger)
        if lease.in_use == 0 and not self._waiters and lease in self._leases:
            self._account()
            self._leases.remove(lease)
            await self._release(lease)

    async def _release(self, lease: _Lease) -> None:
        try:
            await self.leases.give_back(lease.lease_id)
            self.stats.releases += 1
        except Exception as exc:  # the server reclaims it when the lease expires
            logger.warning("could not release %d slot(s) of %s: %s", lease.slots, self.name, exc)
        self._unreleased.pop(lease.lease_id, None)  # (not when cancelled: closing retries it)

    async def _renew_forever(self) -> None:
        while True:
            await asyncio.sleep(self.lease_seconds / 3)
            for lease in list(self._leases):
                try:
                    renewed = await self.leases.renew(lease.lease_id, self.lease_seconds)
                except Exception as exc:
                    logger.warning("could not renew a lease of %s: %s", self.name, exc)
                    continue
                if not renewed:  # expired: the server took the slots back
                    lease.lost = True
                    logger.warning("a lease of %d slot(s) of %s expired", lease.slots, self.name)
                    if lease.in_use == 0 and lease in self._leases:
                        self._leases.remove(lease)
                    self._unreleased.pop(lease.lease_id, None)
                    self._ensure_grower()
