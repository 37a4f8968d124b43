"""Slots of a Prefect global concurrency limit, for the engine's :class:`SlotPool`.

The pool (:mod:`prefect_seedream.engine.slot_pool`) leases slots in chunks and hands them to
rows locally; :class:`GlobalLimitLeases` is where its leases come from in a Prefect run:
``POST /v2/concurrency_limits/increment-with-lease`` and the lease's renewal and release, through
the Prefect client.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

import httpx
from prefect.client.orchestration import PrefectClient, get_client
from prefect.client.schemas.objects import ConcurrencyLeaseHolder

from prefect_seedream.engine.slot_pool import SlotServerUnavailable, SlotsRefused


class GlobalLimitLeases:
    """Leases of a Prefect global concurrency limit's slots.

    Args:
        name: The global concurrency limit's name (it must exist).
        holder: Who holds the slots, shown by the server (the flow run).

    Examples:
        ```python
        # The limit exists: `prefect gcl create evolink --limit 50`
        leases = GlobalLimitLeases("evolink")
        await leases.open()
        lease = await leases.take(2, lease_seconds=60)
        assert await leases.renew(lease, lease_seconds=60)
        await leases.give_back(lease)
        await leases.close()
        ```
    """

    def __init__(self, name: str, holder: ConcurrencyLeaseHolder | None = None) -> None:
        self.name = name
        self.holder = holder
        self._client: PrefectClient | None = None

    async def open(self) -> None:
        """Open a Prefect client."""
        self._client = get_client()
        await self._client.__aenter__()

    async def close(self) -> None:
        """Close the client."""
        if self._client is not None:
            await self._client.__aexit__(None, None, None)
            self._client = None

    async def take(self, slots: int, lease_seconds: float) -> UUID:
        """Lease slots of the limit; a 423 is :class:`SlotsRefused`, a 5xx or no answer
        :class:`SlotServerUnavailable`."""
        assert self._client is not None
        try:
            response = await self._client.increment_concurrency_slots_with_lease(
                names=[self.name], slots=slots, mode="concurrency",
                lease_duration=lease_seconds, holder=self.holder,
            )
        except (httpx.HTTPStatusError, httpx.TransportError) as exc:
            status = exc.response.status_code if isinstance(exc, httpx.HTTPStatusError) else None
            if status == 423:
                raise SlotsRefused(str(exc)) from exc
            if status is None or status >= 500:
                raise SlotServerUnavailable(str(exc)) from exc
            raise
        body: dict[str, Any] = response.json()
        if not body.get("limits"):
            raise RuntimeError(f"global concurrency limit {self.name!r} does not exist")
        return UUID(body["lease_id"])

    async def give_back(self, lease_id: UUID) -> None:
        """Release a lease."""
        assert self._client is not None
        await self._client.release_concurrency_slots_with_lease(lease_id)

    async def renew(self, lease_id: UUID, lease_seconds: float) -> bool:
        """Renew a lease; False when it had expired (404)."""
        assert self._client is not None
        try:
            await self._client.renew_concurrency_lease(lease_id, lease_seconds)
        except httpx.HTTPStatusError as exc:
            if exc.response.status_code == 404:
                return False
            raise
        return True
