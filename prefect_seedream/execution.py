"""Running a range of a dataset's rows in this process: what a single run and each shard do.

The pieces (:mod:`~prefect_seedream.engine.runner` for a row, :mod:`~prefect_seedream.batches`
for task runs, :mod:`~prefect_seedream.slots` for a global concurrency limit's leases,
:mod:`~prefect_seedream.engine.run_folder` for the manifest) are put together here, once, for
the dataset flow and for the shard flow.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass

from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import ConcurrencyLeaseHolder
from prefect.exceptions import ObjectNotFound
from prefect.logging import get_run_logger  # not `from prefect`: prefect.main costs 0.1 s
from prefect.runtime import flow_run

from prefect_seedream.batches import run_batches
from prefect_seedream.clients import api_client, shared_clients
from prefect_seedream.credentials import SeedreamCredentials, resolve_credentials
from prefect_seedream.engine.account import AccountStop, SubmissionGate
from prefect_seedream.engine.budget import CreditBudget
from prefect_seedream.engine.dataset import iter_rows
from prefect_seedream.engine.manifest import RunLine
from prefect_seedream.engine.options import RunOptions
from prefect_seedream.engine.output import Output
from prefect_seedream.engine.reconcile import TaskListIndex
from prefect_seedream.engine.rows import (
    RowRange,
    RowsReport,
    dataset_shared_prompts,
    rows_per_task_for,
)
from prefect_seedream.engine.run_folder import RunParts
from prefect_seedream.engine.runner import RowLimiter, RowRunner
from prefect_seedream.engine.slot_pool import SlotPool
from prefect_seedream.events import PREFECT_EVENTS
from prefect_seedream.slots import GlobalLimitLeases


@dataclass(frozen=True)
class RowsJob:
    """What a process needs to run rows of a dataset run (the run itself, or one shard).

    Attributes:
        dataset: The dataset's path or URL.
        options: The run's options (a shard's share of them).
        credentials: The API's credentials (None: the environment's).
        run_id: The run that holds the output (a sharded run's parent): charges are its own.
        total_rows: Rows of the whole dataset (they choose the rows per task run).
        concurrency_limit: The value of ``options.concurrency_limit_name``, when one is named.
        sharded: The run is one of several shards (they share stops through the output).
        stop: Submissions are stopped before the run starts (the balance is below its
            estimate): rows are still read, stored ones reused and tasks in flight collected.
    """

    dataset: str
    options: RunOptions
    credentials: SeedreamCredentials | None
    run_id: str
    total_rows: int
    concurrency_limit: int | None = None
    sharded: bool = False
    stop: AccountStop | None = None

    @property
    def rows_per_task(self) -> int:
        """Rows per Prefect task run."""
        return rows_per_task_for(self.total_rows, self.options.rows_per_task)


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
    job: RowsJob,
    rows: RowRange,
    *,
    output: Output,
    parts: RunParts,
    on_row: Callable[[RunLine], None],
    before_batch: Callable[[], None] = lambda: None,
    guard: Callable[[], None] = lambda: None,
) -> RowsReport:
    """Run rows ``rows.first..rows.last``; each batch's lines go to ``parts``.

    ``before_batch`` is called before each batch starts and ``guard`` before each row's first
    submission (it must be cheap); either raises to stop (the run lost its output's lock).
    """
    options = job.options
    report = RowsReport()
    slots = await _global_slots(job)
    gate = _submission_gate(job, parts)
    try:
        async with shared_clients(), api_client(job.credentials) as client:
            finder = TaskListIndex(
                client, submit_timeout=resolve_credentials(job.credentials).submit_timeout,
                shared_prompts=lambda: asyncio.to_thread(dataset_shared_prompts, job.dataset, job.options),
            )
            runner = RowRunner(
                ledger=output.ledger(client.identity),
                client=client,
                budget=CreditBudget(limit=options.max_credits),
                limiter=RowLimiter(options.max_concurrency, slots),
                generation=options.generation(options.references()),
                retry=options.retry(),
                row_events=options.row_events,
                gallery=report.gallery,
                run_id=job.run_id,
                gate=gate,
                finder=finder,
                on_row=on_row,
                guard=guard,
                listener=PREFECT_EVENTS,
            )
            await run_batches(
                iter_rows(
                    job.dataset, options.row_defaults(), rows.first, rows.last,
                    options.dataset_storage_options,
                ),
                runner=runner,
                parts=parts,
                rows_per_task=job.rows_per_task,
                max_concurrency=options.max_concurrency,
                before_batch=before_batch,
            )
        report.reconciled = finder.found
        report.stop = gate.report()
        _log_rows_end(runner, report, finder)
    finally:
        if slots is not None:
            await slots.close()
            _log_slot_stats(slots)
    return report


async def _global_slots(job: RowsJob) -> SlotPool | None:
    """The slots of the run's global concurrency limit, leased as rows need them (None:
    no limit named)."""
    options = job.options
    if not (options.concurrency_limit_name and job.concurrency_limit):
        return None
    holder = ConcurrencyLeaseHolder(type="flow_run", id=flow_run.id) if flow_run.id else None
    slots = SlotPool(
        GlobalLimitLeases(options.concurrency_limit_name, holder),
        limit=job.concurrency_limit, max_slots=options.max_concurrency,
    )
    await slots.__aenter__()
    return slots


def _submission_gate(job: RowsJob, parts: RunParts) -> SubmissionGate:
    """The gate of the rows' submissions: shards share its stop through the run folder; a
    stop known before the run (a balance below the estimate) closes it from the start."""
    gate = SubmissionGate(
        wait_for_quota=job.options.wait_for_quota,
        on_stop=parts.write_stop if job.sharded else None,
        peek=parts.read_stop if job.sharded else None,
    )
    if job.stop is not None:
        gate.close(job.stop)
    return gate


def _log_rows_end(runner: RowRunner, report: RowsReport, finder: TaskListIndex) -> None:
    """The run's lines on what its rows' outcomes do not say one by one."""
    logger = get_run_logger()
    if runner.failures.unlogged:
        logger.warning(
            "%d more rows did not succeed (past the first %d, not logged one by one): "
            "see the run's rows table artifact and the manifest",
            runner.failures.unlogged, runner.failures.limit,
        )
    if report.stop is not None:
        logger.error("%s", report.stop.sentence())
    if finder.lookups:
        logger.info(
            "%d row(s) had a submission of unknown outcome: the API's task list showed the "
            "task of %d of them (re-attached, nothing paid again)", finder.lookups, finder.found,
        )


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
