"""Running a range of a dataset's rows in this process: what a single run and each shard do.

The pieces (:mod:`runner` for a row, :mod:`batches` for task runs, :mod:`slots` for a global
concurrency limit, :mod:`parts` for the manifest) are put together here, once, for the
dataset flow and for the shard flow.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from prefect import get_run_logger
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import ConcurrencyLeaseHolder
from prefect.exceptions import ObjectNotFound
from prefect.runtime import flow_run

from prefect_seedream.artifacts import Gallery
from prefect_seedream.batches import run_batches
from prefect_seedream.budget import CreditBudget
from prefect_seedream.clients import client_for, close_clients
from prefect_seedream.credentials import SeedreamCredentials
from prefect_seedream.dataset import RowDefaults, iter_rows
from prefect_seedream.defaults import ROW_EVENTS, RowEvents
from prefect_seedream.generation import GenerationOptions
from prefect_seedream.ledger import TaskLedger
from prefect_seedream.manifest import RunLine
from prefect_seedream.parts import RunParts
from prefect_seedream.runner import RetryOptions, RowLimiter, RowRunner
from prefect_seedream.slots import SlotPool


@dataclass(frozen=True)
class RowRange:
    """Rows ``first..last`` of a dataset (1-based, both included), as a shard gets them."""

    first: int
    last: int

    @property
    def rows(self) -> int:
        """How many rows the range holds."""
        return self.last - self.first + 1


@dataclass(frozen=True)
class RunSettings:
    """How rows run: everything a dataset run's parameters say, checked.

    Attributes:
        dataset: The dataset's path or URL.
        defaults: Request parameters rows may override.
        credentials: The API's credentials (None: the environment's).
        max_concurrency: Most generations in flight in this process.
        concurrency_limit: A Prefect global concurrency limit (name, limit) shared with
            every run and worker, or None.
        max_credits: This process's budget, or None.
        generation: Wait and resubmission options.
        retry: Row retries.
        rows_per_task: Rows per task run.
        row_events: Which per-row events to emit.
        tables: Attach a table of its rows to each batch's task run.
        storage_options: fsspec options of the output.
    """

    dataset: str
    defaults: RowDefaults
    credentials: SeedreamCredentials | None
    max_concurrency: int
    concurrency_limit: tuple[str, int] | None
    max_credits: float | None
    generation: GenerationOptions
    retry: RetryOptions
    rows_per_task: int
    row_events: RowEvents = ROW_EVENTS
    tables: bool = False
    storage_options: dict[str, Any] | None = field(default=None, hash=False)


async def read_concurrency_limit(name: str) -> int:
    """The limit of a Prefect global concurrency limit; a missing one fails before any submit."""
    async with get_client() as client:
        try:
            found = await client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            raise ValueError(
                f"global concurrency limit {name!r} does not exist: create it with "
                f"`prefect gcl create {name} --limit N`"
            ) from None
    return int(found.limit)


async def execute_rows(
    settings: RunSettings,
    rows: RowRange,
    *,
    ledger: TaskLedger,
    parts: RunParts,
    on_row: Callable[[RunLine], None],
    before_batch: Callable[[], None] = lambda: None,
) -> Gallery:
    """Run rows ``rows.first..rows.last``; each batch's lines go to ``parts``.

    Returns:
        The gallery of the images this process stored.
    """
    gallery = Gallery()
    slots: SlotPool | None = None
    if settings.concurrency_limit is not None:
        name, limit = settings.concurrency_limit
        holder = ConcurrencyLeaseHolder(type="flow_run", id=flow_run.id) if flow_run.id else None
        slots = SlotPool(name, limit=limit, max_slots=settings.max_concurrency, holder=holder)
        await slots.__aenter__()
    try:
        runner = RowRunner(
            ledger=ledger,
            client=client_for(settings.credentials),
            budget=CreditBudget(limit=settings.max_credits),
            limiter=RowLimiter(settings.max_concurrency, slots),
            generation=settings.generation,
            retry=settings.retry,
            row_events=settings.row_events,
            gallery=gallery,
            on_row=on_row,
        )
        await run_batches(
            iter_rows(settings.dataset, settings.defaults, rows.first, rows.last),
            runner=runner,
            parts=parts,
            rows_per_task=settings.rows_per_task,
            max_concurrency=settings.max_concurrency,
            tables=settings.tables,
            before_batch=before_batch,
        )
        if runner.failures.unlogged:
            get_run_logger().warning(
                "%d more rows did not succeed (past the first %d, not logged one by one): "
                "see the seedream-failures artifact and the manifest",
                runner.failures.unlogged, runner.failures.limit,
            )
    finally:
        if slots is not None:
            await slots.close()
        await close_clients()
    return gallery
