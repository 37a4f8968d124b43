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

from prefect_seedream.artifacts import ProgressArtifact, RunTables, StoryKeys
from prefect_seedream.clients import api_client
from prefect_seedream.credentials import SeedreamCredentials, resolve_credentials
from prefect_seedream.engine.balance import balance_stop, read_balance
from prefect_seedream.engine.contact_sheet import publish_contact_sheet
from prefect_seedream.engine.gallery import Gallery
from prefect_seedream.engine.ledger import TaskLedger
from prefect_seedream.engine.lines import lines_from_ledger
from prefect_seedream.engine.manifest import RunLine
from prefect_seedream.engine.options import RunOptions
from prefect_seedream.engine.output_lock import OutputLock, OutputLockedError
from prefect_seedream.engine.progress import RunProgress
from prefect_seedream.engine.run_folder import RunDescription, RunParts, clear_runs
from prefect_seedream.engine.storage import ImageStore
from prefect_seedream.engine.summary import DatasetRunSummary
from prefect_seedream.execution import RowRange, RowsJob, execute_rows
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
    output: str,
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
    store = ImageStore(output, options.storage_options)
    api = resolve_credentials(credentials).api_identity
    job = RowsJob(
        dataset, options, credentials, run_id, total_rows, concurrency_limit=concurrency_limit,
    )
    if estimated_credits is not None:
        summary.balance_before = await account_balance(credentials)
        job = dataclasses.replace(
            job, stop=balance_stop(summary.balance_before, estimated_credits, options.max_credits)
        )
        if job.stop is not None:
            logger.error("%s", job.stop.sentence())
            shard_plan = None  # nothing will be submitted: no workers needed
    async with OutputLock(store, run_id) as lock:
        await asyncio.to_thread(_clear_leftovers, store)
        parts = RunParts(store, run_id)
        await asyncio.to_thread(parts.describe, RunDescription(
            dataset=dataset, api=api, options=options.without_secrets(), total_rows=total_rows,
        ))
        artifact = await ProgressArtifact.create(total=total_rows, key=(keys or StoryKeys()).progress)
        progress = RunProgress(total_rows, artifact, logger)

        def row_done(item: RunLine) -> None:
            progress.row_done(item)
            on_row(item)

        task_runs = math.ceil(total_rows / job.rows_per_task)
        shards = shard_plan.shards if shard_plan is not None else 1
        logger.info(
            "Running %d rows: %d per task run (%d task runs), at most %d at once%s",
            total_rows, job.rows_per_task, task_runs, options.max_concurrency,
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
        gallery = Gallery()
        try:
            if shard_plan is not None and shard_plan.shards > 1:
                await run_shards(
                    job, shard_flow=shard_plan.flow, shards=shard_plan.shards,
                    deployment=shard_plan.deployment, work_pool=shard_plan.work_pool,
                    parts=parts, progress=artifact, output=output,
                )
                summary.stopped = await asyncio.to_thread(parts.read_stop)
            else:
                report = await execute_rows(
                    job, RowRange(1, total_rows), store=store, parts=parts, on_row=row_done,
                    before_batch=lock.check, guard=lock.check,
                )
                gallery, summary.stopped = report.gallery, report.stop
        except OutputLockedError:
            raise  # another run holds the output now: its manifest is its own
        except Exception:
            # The run fails, but its manifest still says what was done, one line per row,
            # written while the lock is held (the ledger has every fact).
            logger.exception("The run stopped on an error; writing the manifest of what was done")
            with contextlib.suppress(Exception):
                await asyncio.to_thread(
                    merge_manifest, store, parts, dataset, api, options, total_rows, run_id,
                    DatasetRunSummary(), None,
                )
            raise
        summary.manifest = await asyncio.to_thread(
            merge_manifest, store, parts, dataset, api, options, total_rows, run_id, summary, tables
        )
        artifact.set_done(summary.rows)
        await artifact.finish()
    if job.stop is not None and summary.stopped == job.stop and not summary.skipped:
        summary.stopped = None  # every row was stored already (or collected): nothing held back
    if summary.balance_before is not None:
        summary.balance = await account_balance(credentials)
    return gallery


async def account_balance(credentials: SeedreamCredentials | None) -> float | None:
    """The credits the account can still spend (None, with one warning, when unknown)."""
    async with api_client(credentials) as client:
        return await read_balance(client)


def merge_manifest(
    store: ImageStore,
    parts: RunParts,
    dataset: str,
    api: str,
    options: RunOptions,
    total_rows: int | None,
    run_id: str,
    summary: DatasetRunSummary,
    tables: RunTables | None,
) -> str:
    """Merge the run's parts into the manifest (gaps filled from the ledger); returns its URI.

    ``summary`` (and ``tables``, if given) count each of the run's lines as it is written.
    Then the output's contact sheet (``index.html``) is written from the new manifest.
    """
    ledger = TaskLedger(store, api)
    defaults = options.row_defaults()

    def on_line(item: RunLine) -> None:
        summary.add(item)
        if tables is not None:
            tables.add(item.line)

    uri = parts.merge(
        total_rows,
        lambda first, last: lines_from_ledger(
            dataset, ledger, defaults, first, last, run_id=run_id,
            storage_options=options.dataset_storage_options,
        ),
        on_line,
    )
    parts.remove()
    summary.contact_sheet = publish_contact_sheet(store)
    return uri


def _clear_leftovers(store: ImageStore) -> None:
    """What killed runs left: temporary files and unmerged parts (the ledger keeps the facts)."""
    store.clear_temporary()
    clear_runs(store)
