"""Running a range of a dataset's rows in this process: what a single run and each shard do.

The pieces (:mod:`runner` for a row, :mod:`batches` for task runs, :mod:`slots` for a global
concurrency limit, :mod:`parts` for the manifest) are put together here, once, for the
dataset flow and for the shard flow.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from prefect import get_run_logger
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import ConcurrencyLeaseHolder
from prefect.exceptions import ObjectNotFound
from prefect.runtime import flow_run

from prefect_seedream.api.models import GenerationRequest
from prefect_seedream.artifacts import Gallery
from prefect_seedream.batches import rows_per_task_for, run_batches
from prefect_seedream.budget import CreditBudget
from prefect_seedream.clients import client_for, close_clients
from prefect_seedream.credentials import SeedreamCredentials
from prefect_seedream.dataset import InvalidRow, RowDefaults, iter_rows
from prefect_seedream.defaults import FAILURES_LOGGED, ROW_EVENTS, RowEvents
from prefect_seedream.generation import GenerationOptions, WaitOptions
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


#: Parameters of a dataset run that shape how its rows run (a shard gets them as they are).
ROW_PARAMETERS = (
    "model", "size", "n", "prompt_priority", "max_concurrency", "concurrency_limit_name",
    "max_credits", "max_wait_seconds", "poll_interval", "retries", "retry_delay_seconds",
    "resubmit_unknown", "storage_options", "rows_per_task", "row_events",
)


def row_defaults(model: str, size: str | None, n: int, prompt_priority: str | None) -> RowDefaults:
    """Check the flow-level request parameters together, before anything is read or spent."""
    GenerationRequest(model=model, prompt="parameter check", size=size, n=n, prompt_priority=prompt_priority)
    return RowDefaults(model=model, size=size, n=n, prompt_priority=prompt_priority)


def settings_from(
    dataset: str,
    parameters: Mapping[str, Any],
    credentials: SeedreamCredentials | None,
    *,
    total_rows: int,
    concurrency_limit: int | None,
) -> RunSettings:
    """Turn a dataset run's parameters (or a shard's copy of them) into :class:`RunSettings`.

    Args:
        dataset: The dataset.
        parameters: The values of :data:`ROW_PARAMETERS`.
        credentials: The API's credentials.
        total_rows: Rows of the whole dataset (they choose the rows per task run).
        concurrency_limit: The global concurrency limit's value, when one is named.
    """
    p = parameters
    rows_per_task = rows_per_task_for(total_rows, p["rows_per_task"])
    limit_name = p["concurrency_limit_name"]
    return RunSettings(
        dataset=dataset,
        defaults=row_defaults(p["model"], p["size"], p["n"], p["prompt_priority"]),
        credentials=credentials,
        max_concurrency=p["max_concurrency"],
        concurrency_limit=(limit_name, concurrency_limit) if limit_name and concurrency_limit else None,
        max_credits=p["max_credits"],
        generation=GenerationOptions(
            wait=WaitOptions(p["max_wait_seconds"], p["poll_interval"]),
            resubmit_unknown=p["resubmit_unknown"],
        ),
        retry=RetryOptions(p["retries"], p["retry_delay_seconds"]),
        rows_per_task=rows_per_task,
        row_events=p["row_events"],
        tables=rows_per_task > 1,
        storage_options=p["storage_options"],
    )


def scan_dataset(dataset: str, defaults: RowDefaults) -> DatasetScan:
    """Pass 1: validate every row (streamed) and estimate the credits; spends nothing."""
    logger = get_run_logger()
    scan = DatasetScan()
    for row in iter_rows(dataset, defaults):
        scan.rows += 1
        if isinstance(row, InvalidRow):
            scan.invalid += 1
            if scan.invalid <= FAILURES_LOGGED:
                logger.warning("Row %s (line %d) is invalid: %s", row.row_id, row.number, row.reason)
        else:
            scan.estimated_credits += row.request.reserved_credits
    logger.info(
        "Dataset %s: %d rows, %d invalid; at most %g credits",
        dataset, scan.rows, scan.invalid, scan.estimated_credits,
    )
    return scan


@dataclass
class DatasetScan:
    """What pass 1 found: rows, invalid rows, the most the valid ones can cost."""

    rows: int = 0
    invalid: int = 0
    estimated_credits: float = 0.0


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
    guard: Callable[[], None] = lambda: None,
) -> Gallery:
    """Run rows ``rows.first..rows.last``; each batch's lines go to ``parts``.

    ``before_batch`` is called before each batch starts and ``guard`` before each row's first
    submission (it must be cheap); either raises to stop (the run lost its output's lock).

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
            guard=guard,
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
            _log_slot_stats(slots)
        await close_clients()
    return gallery


def _log_slot_stats(slots: SlotPool) -> None:
    """One line on how the run used its global concurrency limit (benchmarks read it)."""
    stats = slots.stats
    get_run_logger().info(
        "Concurrency limit %s: %d lease(s) taken, %d refused (limit full), %d given back; "
        "at most %d slot(s) held; %.1f slot-seconds held idle; rows waited %.1f s for slots "
        "[slot-stats %s]",
        slots.name, stats.acquisitions, stats.denials, stats.releases, stats.peak_held,
        stats.idle_slot_seconds, stats.starved_seconds,
        json.dumps({k: round(v, 2) if isinstance(v, float) else v for k, v in stats.__dict__.items()
                    if not k.startswith("_")}),
    )
