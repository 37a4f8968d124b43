"""Rows in batches: one Prefect task run per batch of consecutive rows.

A Prefect task run costs a few milliseconds of the flow's CPU and tens of milliseconds of the
server's (its states travel as events that the server's task-run recorder writes to its
database, see ``benchmarks/README.md``). One per row is what makes a big dataset slow, and
what overwhelms a default ``prefect server start``. So a dataset of up to
``ONE_TASK_RUN_PER_ROW_UP_TO`` rows runs one task run per row, named after the row
(``row-<id>``), and a bigger one runs batches of consecutive rows (``rows-<first>-<last>``),
about ``TARGET_TASK_RUNS`` of them, at most ``MAX_ROWS_PER_TASK`` rows each.

Rows of every batch in progress share the run's concurrency: a batch is a unit of
observation (a task run with its logs and its state, whose message counts its rows by
outcome), not a unit of scheduling; a slow row never holds up the rows of later batches.
A batch writes no artifact: its rows are in the run's table (see :mod:`prefect_seedream.story`).

A batch holding rows that did not succeed ends **Failed** with its counts as the state's
message (a one-row task run: the API's code and message), and no traceback: a refused row is
an expected outcome, logged once at WARNING by the row runner; Prefect logs the batch's end
in one line ("Finished in state Failed('rows 1-8: 7 succeeded, 1 failed')", at ERROR, as
it does for every failed task run). A traceback is logged only when our code raised.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable, Iterable
from typing import Any

from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import TaskRun
from prefect.logging import get_run_logger  # not `from prefect`: prefect.main costs 0.1 s
from prefect.states import Completed, Failed, State
from prefect.tasks import Task, task
from prefect.utilities.annotations import quote

from prefect_seedream.engine.dataset import DatasetRow
from prefect_seedream.engine.rows import RowBatch, batches_of, row_counts, row_message
from prefect_seedream.engine.run_folder import RunParts
from prefect_seedream.engine.runner import RowRunner


def never_retried(task: Task[Any, Any], task_run: TaskRun, state: State[Any]) -> bool:
    """Retry condition of a batch: never (its rows were retried by the row runner).

    With a retry allowed and this condition, Prefect (3.8, 3.9) does not log "Task run failed
    with state ..." for a batch ending Failed: it logs that line for a task run with no retry
    left, at ERROR with ``exc_info``, so with the exception being handled (or ``NoneType:
    None``) as a traceback. Its one line "Finished in state Failed(...)" remains.

    Examples:
        >>> never_retried(None, None, Failed())  # type: ignore[arg-type]
        False
    """
    return False


@task(
    name="generate-rows",
    task_run_name="{label}",
    description="Generate and store the images of a batch of consecutive dataset rows.",
    cache_policy=NO_CACHE,
    persist_result=False,
    retries=1,
    retry_condition_fn=never_retried,
)
async def generate_rows(
    label: str, batch: RowBatch, runner: RowRunner, parts: RunParts
) -> State:
    """Run a batch of rows and write their part of the manifest.

    The task run ends Completed when every row succeeded, else Failed with the counts as its
    message (a failed row never stops the others, and is not an error of the batch: no
    traceback is logged); its rows' lines are in the run's part file. Only an exception of
    our own is logged with its traceback (then raised).

    Args:
        label: The task run's name.
        batch: The rows.
        runner: Runs each row.
        parts: Where the batch's lines go (the arguments other than ``label`` are passed
            wrapped in ``prefect.utilities.annotations.quote``: Prefect does not inspect them).
    """
    logger = get_run_logger()
    reporter = runner.reporter_for(logger, verbose=len(batch.rows) == 1)
    try:
        items = list(await asyncio.gather(*(runner.run(row, reporter) for row in batch.rows)))
        await asyncio.to_thread(parts.write, batch.first, batch.last, items)
    except Exception:
        # Prefect does not log it (see `never_retried`): a bug of ours gets its traceback here.
        logger.exception("Rows %d-%d stopped on an error", batch.first, batch.last)
        raise
    counts = row_counts(items)
    summary = ", ".join(f"{count} {status.replace('_', ' ')}" for status, count in counts.items() if count)
    message = f"rows {batch.first}-{batch.last}: {summary}" if len(items) > 1 else row_message(items[0])
    if counts["succeeded"] == len(items):
        return Completed(message=message)
    return Failed(message=message)


async def run_batches(
    rows: Iterable[DatasetRow],
    *,
    runner: RowRunner,
    parts: RunParts,
    rows_per_task: int,
    max_concurrency: int,
    before_batch: Callable[[], None] = lambda: None,
) -> None:
    """Run every batch of a row stream, keeping enough batches going to fill the concurrency.

    Only the batches in progress are in memory: ``ceil(max_concurrency / rows_per_task) + 1``
    of them, so that rows are always queued for every free slot while a batch finishes its
    last rows.

    Args:
        rows: The rows, streamed.
        runner: Runs each row.
        parts: Where each batch's lines go.
        rows_per_task: Rows per batch.
        max_concurrency: The run's concurrency.
        before_batch: Called before each batch starts (raises to stop the run).
    """
    most_active = max(2, math.ceil(max_concurrency / rows_per_task) + 1)
    active: set[asyncio.Task[Any]] = set()
    try:
        for batch in batches_of(rows, rows_per_task):
            while len(active) >= most_active:
                done, active = await asyncio.wait(active, return_when=asyncio.FIRST_COMPLETED)
                _log_crashed_batches(done)
            before_batch()
            active.add(asyncio.create_task(generate_rows(
                batch.label, quote(batch), quote(runner), quote(parts), return_state=True,
            )))
        if active:
            done, _ = await asyncio.wait(active)
            _log_crashed_batches(done)
    except BaseException:
        for pending in active:
            pending.cancel()
        await asyncio.gather(*active, return_exceptions=True)
        raise


def _log_crashed_batches(done: set[asyncio.Task[Any]]) -> None:
    """A batch's task run returns its state; an exception here is the engine's, not a row's."""
    for finished in done:
        error = finished.exception()
        if error is not None:
            logging.getLogger("prefect_seedream").error("a batch stopped: %r", error)
