"""One run of rows into an output: what the dataset flow and ``generate_many`` share.

Given a dataset file (in-memory rows were written to one already, see
:mod:`prefect_seedream.engine.sources`) whose rows were validated and counted, :func:`run_in_output`
takes the output's lock, records what the run is (``run.json``), runs the rows in this
process or as shards, and merges the manifest, one line per input row, whatever happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from prefect.flows import Flow
from prefect.logging import get_run_logger  # not `from prefect`: prefect.main costs 0.1 s

from prefect_seedream.artifacts import ProgressArtifact
from prefect_seedream.clients import api_client
from prefect_seedream.credentials import SeedreamCredentials, resolve_credentials
from prefect_seedream.engine.balance import balance_stop, read_balance
from prefect_seedream.engine.contact_sheet import publish_contact_sheet
from prefect_seedream.engine.gallery import Gallery
from prefect_seedream.engine.lines import lines_from_ledger
from prefect_seedream.engine.manifest import RunLine
from prefect_seedream.engine.options import RunOptions
from prefect_seedream.engine.output import Output
from prefect_seedream.engine.output_lock import OutputLock, OutputLockedError
from prefect_seedream.engine.progress import RunProgress
from prefect_seedream.engine.rows import RowRange
from prefect_seedream.engine.run_folder import RunDescription, RunParts
from prefect_seedream.engine.run_report import RunTables, StoryKeys
from prefect_seedream.engine.summary import DatasetRunSummary
from prefect_seedream.execution import RowsJob, execute_rows
from prefect_seedream.shards import run_shards

#: More task runs than this in one run is what a default `prefect server start` cannot record
#: as fast as they come (measured, see the README's "Scale and cost").
TASK_RUNS_A_SERVER_KEEPS_UP_WITH = 2000


@dataclass(frozen=True)
class ShardPlan:
    """How a run is split over a work pool's workers.

    Attributes:
        shards: How many shard flow runs.
        deployment: The deployment that runs one shard.
        work_pool: (Re)create that deployment on this pool first, or None.
        flow: The shard flow (to create its deployment).
    """

    shards: int
    deployment: str
    work_pool: str | None
    flow: Flow[..., Any]


async def run_in_output(
    dataset: str,
    output: Output,
    options: RunOptions,
    credentials: SeedreamCredentials | None,
    *,
    total_rows: int,
    run_id: str,
    summary: DatasetRunSummary,
    concurrency_limit: int | None = None,
    shard_plan: ShardPlan | None = None,
    tables: RunTables | None = None,
    on_row: Callable[[RunLine], None] = lambda item: None,
    estimated_credits: float | None = None,
    keys: StoryKeys | None = None,
) -> Gallery:
    """Run every row of ``dataset`` into ``output``; ``summary`` counts the manifest's lines.

    With ``estimated_credits`` (the valid rows' pre-charges), the account's balance is read
    first: when the run may need more than it holds, nothing is submitted (stored rows are
    still reused and tasks in flight collected) and ``summary.stopped`` says why. The balance
    after the run is in ``summary.balance``.

    The run's progress artifact is ``keys.progress`` (default: ``seedream-progress``); the
    caller publishes the rest of its story (:func:`prefect_seedream.story.publish_run_story`)
    from ``summary``, ``tables`` and the gallery returned.

    Returns:
        The gallery of the images this process stored (empty for a sharded run).

    Raises:
        OutputLockedError: another live run holds the output.
    """
    logger = get_run_logger()
    run = RunDescription(
        dataset=dataset, api=resolve_credentials(credentials).api_identity, options=options,
        total_rows=total_rows,
    )
    job = RowsJob(
        dataset, options, credentials, run_id, total_rows, concurrency_limit=concurrency_limit,
    )
    if estimated_credits is not None:
        job = await _stop_below_estimate(job, summary, estimated_credits)
        if job.stop is not None:
            logger.error("%s", job.stop.sentence())
            shard_plan = None  # nothing will be submitted: no workers needed
    async with output.lock(run_id) as lock:
        parts = output.run_folder(run_id)
        await asyncio.to_thread(_start_run, output, parts, run)
        artifact = await ProgressArtifact.create(total=total_rows, key=(keys or StoryKeys()).progress)
        progress = RunProgress(total_rows, artifact, logger)

        def row_done(item: RunLine) -> None:
            progress.row_done(item)
            on_row(item)

        _log_plan(job, shard_plan)
        gallery = await _run_rows(
            job, output, parts, run, lock=lock, shard_plan=shard_plan, artifact=artifact,
            on_row=row_done, summary=summary,
        )
        summary.manifest = await asyncio.to_thread(merge_manifest, output, parts, run, summary, tables)
        artifact.set_done(summary.rows)
        await artifact.finish()
    if job.stop is not None and summary.stopped == job.stop and not summary.skipped:
        summary.stopped = None  # every row was stored already (or collected): nothing held back
    if summary.balance_before is not None:
        summary.balance = await account_balance(credentials)
    return gallery


async def _stop_below_estimate(
    job: RowsJob, summary: DatasetRunSummary, estimated_credits: float
) -> RowsJob:
    """The job, with its submissions stopped when the account's balance (read now, into
    ``summary.balance_before``) is below what the run may need."""
    summary.balance_before = await account_balance(job.credentials)
    return dataclasses.replace(
        job, stop=balance_stop(summary.balance_before, estimated_credits, job.options.max_credits)
    )


def _start_run(output: Output, parts: RunParts, run: RunDescription) -> None:
    """Under the output's lock: clear what killed runs left, then write the run's ``run.json``."""
    output.clear_leftovers()
    parts.describe(run)


def _log_plan(job: RowsJob, shard_plan: ShardPlan | None) -> None:
    """Say how the rows will run, and warn when that is more task runs than a server records."""
    logger = get_run_logger()
    task_runs = math.ceil(job.total_rows / job.rows_per_task)
    shards = shard_plan.shards if shard_plan is not None else 1
    logger.info(
        "Running %d rows: %d per task run (%d task runs), at most %d at once%s",
        job.total_rows, job.rows_per_task, task_runs, job.options.max_concurrency,
        f", in {shards} shards" if shards > 1 else "",
    )
    if task_runs > TASK_RUNS_A_SERVER_KEEPS_UP_WITH:
        logger.warning(
            "%d task runs for one run: a Prefect server with default settings (SQLite) "
            "records about 65 task runs a second and drops events beyond a queue of "
            "10,000, leaving runs stuck in the UI. Leave rows_per_task unset (about 50 "
            "task runs whatever the size), or see the README's \"Scale and cost\" for the "
            "server settings that raise it.", task_runs,
        )


async def _run_rows(
    job: RowsJob,
    output: Output,
    parts: RunParts,
    run: RunDescription,
    *,
    lock: OutputLock,
    shard_plan: ShardPlan | None,
    artifact: ProgressArtifact,
    on_row: Callable[[RunLine], None],
    summary: DatasetRunSummary,
) -> Gallery:
    """Run the rows, here or as shards, under the output's lock (``summary.stopped`` says why
    submissions stopped, if they did); returns the gallery of what this process stored.

    A run that fails on an error still writes the manifest of what was done before the error
    is raised again.
    """
    try:
        if shard_plan is not None and shard_plan.shards > 1:
            await run_shards(
                job, shard_flow=shard_plan.flow, shards=shard_plan.shards,
                deployment=shard_plan.deployment, work_pool=shard_plan.work_pool,
                parts=parts, progress=artifact, output=output.uri,
            )
            summary.stopped = await asyncio.to_thread(parts.read_stop)
            return Gallery()
        report = await execute_rows(
            job, RowRange(1, job.total_rows), output=output, parts=parts, on_row=on_row,
            before_batch=lock.check, guard=lock.check,
        )
        summary.stopped = report.stop
        return report.gallery
    except OutputLockedError:
        raise  # another run holds the output now: its manifest is its own
    except Exception:
        # The run fails, but its manifest still says what was done, one line per row,
        # written while the lock is held (the ledger has every fact).
        get_run_logger().exception("The run stopped on an error; writing the manifest of what was done")
        with contextlib.suppress(Exception):
            await asyncio.to_thread(merge_manifest, output, parts, run, DatasetRunSummary(), None)
        raise


async def account_balance(credentials: SeedreamCredentials | None) -> float | None:
    """The credits the account can still spend (None, with one warning, when unknown)."""
    async with api_client(credentials) as client:
        return await read_balance(client)


def merge_manifest(
    output: Output,
    parts: RunParts,
    run: RunDescription,
    summary: DatasetRunSummary,
    tables: RunTables | None,
) -> str:
    """Merge the run's parts into the manifest (gaps filled from the ledger); returns its URI.

    ``run`` is what the run is: its dataset, API, options (with the fsspec options the dataset
    is read with) and rows. ``summary`` (and
    ``tables``, if given) count each of the run's lines as it is written. Then the output's
    contact sheet (``index.html``) is written from the new manifest.
    """
    ledger = output.ledger(run.api)
    defaults = run.options.row_defaults()

    def on_line(item: RunLine) -> None:
        summary.add(item)
        if tables is not None:
            tables.add(item.line)

    uri = parts.merge(
        run.total_rows,
        lambda first, last: lines_from_ledger(
            run.dataset, ledger, defaults, first, last, run_id=parts.run_id,
            storage_options=run.options.dataset_storage_options,
        ),
        on_line,
    )
    parts.remove()
    summary.contact_sheet = publish_contact_sheet(output.store)
    return uri
