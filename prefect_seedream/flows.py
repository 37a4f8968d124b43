"""The dataset flow, the shard flow and the recovery flow.

(No `from __future__ import annotations` here: served runs rebuild the parameter model
from the live annotations, and string annotations break it in prefect 3.8.)

`generate_dataset` fans out over a prompt dataset with bounded concurrency (and optionally a
Prefect global concurrency limit shared by every run and worker), in this process or as
shard flow runs on a work pool, stores every image, and writes `manifest.jsonl` with exactly
one line per input row. `generate_shard` runs one row range of a sharded run.
`recover_dataset` collects remote tasks that a stopped run left in flight, without paying
again.
"""


import asyncio
import contextlib
import math
from typing import Annotated, Any

from prefect import flow, get_run_logger
from prefect.runtime import flow_run
from prefect.states import Completed, Failed, State
from pydantic import Field

from prefect_seedream.api.errors import SeedreamError
from prefect_seedream.api.models import DEFAULT_MODEL, SeedreamModel
from prefect_seedream.artifacts import Gallery, ProgressArtifact, RunTables
from prefect_seedream.clients import client_for, close_clients
from prefect_seedream.credentials import SeedreamCredentials, resolve_credentials
from prefect_seedream.defaults import (
    DEFAULT_N,
    DEFAULT_PROMPT_PRIORITY,
    DEFAULT_SIZE,
    MAX_CONCURRENCY,
    MAX_CONCURRENCY_BOUND,
    MAX_WAIT_SECONDS,
    POLL_INTERVAL_SECONDS,
    RETRIES,
    RETRY_DELAY_SECONDS,
    ROW_EVENTS,
    SHARD_DEPLOYMENT,
    PromptPriority,
    RowEvents,
    SizePreset,
)
from prefect_seedream.events import emit_dataset_event
from prefect_seedream.execution import (
    ROW_PARAMETERS,
    RowRange,
    execute_rows,
    read_concurrency_limit,
    row_defaults,
    scan_dataset,
    settings_from,
)
from prefect_seedream.generation import (
    GenerationOptions,
    StepReporter,
    WaitOptions,
    generate_recorded,
)
from prefect_seedream.hooks import record_stopped_run, write_manifest
from prefect_seedream.ledger import LedgerRecord, NextStep, TaskLedger
from prefect_seedream.lines import update_manifest_lines
from prefect_seedream.output_lock import OutputLock, OutputLockedError, check_held_by
from prefect_seedream.parts import RunParts, clear_runs
from prefect_seedream.progress import RunProgress, notify_total
from prefect_seedream.shards import check_shard_deployment, run_shards, unfair_share_warning
from prefect_seedream.storage import ImageStore
from prefect_seedream.summary import DatasetRunSummary

#: More task runs than this in one run is what a default `prefect server start` cannot record
#: as fast as they come (measured, see the README's "Scale and cost").
TASK_RUNS_A_SERVER_KEEPS_UP_WITH = 2000

@flow(
    name="seedream-generate-dataset",
    validate_parameters=True,
    description="Generate images for every row of a prompt dataset (CSV, JSONL, Parquet) and "
    "write a manifest with one line per row.",
)
async def generate_dataset(
    dataset: str,
    output: str = "output",
    model: SeedreamModel = DEFAULT_MODEL,
    size: SizePreset = DEFAULT_SIZE,
    n: Annotated[int, Field(ge=1, le=15)] = DEFAULT_N,
    prompt_priority: PromptPriority = DEFAULT_PROMPT_PRIORITY,
    max_concurrency: Annotated[int, Field(ge=1, le=MAX_CONCURRENCY_BOUND)] = MAX_CONCURRENCY,
    concurrency_limit_name: str | None = None,
    credentials: SeedreamCredentials | None = None,
    max_credits: Annotated[float, Field(gt=0)] | None = None,
    dry_run: bool = False,
    max_wait_seconds: Annotated[float, Field(gt=0)] = MAX_WAIT_SECONDS,
    poll_interval: Annotated[float, Field(gt=0)] = POLL_INTERVAL_SECONDS,
    retries: Annotated[int, Field(ge=0, le=10)] = RETRIES,
    retry_delay_seconds: Annotated[float, Field(ge=0)] = RETRY_DELAY_SECONDS,
    resubmit_unknown: bool = False,
    storage_options: dict[str, Any] | None = None,
    rows_per_task: Annotated[int, Field(ge=1, le=10_000)] | None = None,
    row_events: RowEvents = ROW_EVENTS,
    shards: Annotated[int, Field(ge=1, le=256)] = 1,
    work_pool: str | None = None,
    shard_deployment: str = SHARD_DEPLOYMENT,
) -> State:
    """Generate images for every row of a prompt dataset and write a manifest.

    Rows are validated first (an invalid row is recorded with its reason and
    submits nothing), then run with at most `max_concurrency` generations at
    once. One failed row never stops the others. The run ends **Completed** when
    every row succeeded, and **Failed** with a message counting the rows that
    did not (and naming the manifest) otherwise; the summary is its result.

    Up to 50 rows, each row is a task run named after it; bigger datasets run batches of
    consecutive rows per task run (`rows_per_task`), so that a run of 10,000 rows costs
    about 50 task runs, not 40,000. With `shards` > 1 the rows are split in row ranges,
    each run as a flow run of `shard_deployment` on a work pool; their lines are merged
    into this run's manifest.

    Args:
        dataset: Path or fsspec URL of a .csv, .tsv, .jsonl or .parquet file with
            a `prompt` column (optional: id, model, size, n, prompt_priority, image_urls).
        output: Folder or fsspec URL (`s3://bucket/prefix`) for images and manifest.
        model: Default model for rows that do not name one.
        size: Default size preset (rows may give a preset or WxH); 1K exists on 4.0 only.
        n: Default most images per prompt (1-15).
        prompt_priority: Default prompt priority (`fast` exists on 4.0 only).
        max_concurrency: Most generations in flight at once in this run (in each shard).
        concurrency_limit_name: A Prefect global concurrency limit shared by all
            runs and workers (must exist: `prefect gcl create NAME --limit N`).
        credentials: A SeedreamCredentials block; default: SEEDREAM_API_KEY / SEEDREAM_BASE_URL.
        max_credits: Budget: no submission may take the run's credits past it (each
            shard gets its share of the rows' share of it).
        dry_run: Validate every row and estimate credits; submit nothing.
        max_wait_seconds: Wall-clock cap of each wait; a task still running after
            it is recorded `in_flight` with its id for `recover`.
        poll_interval: Shortest pause between polls, in seconds.
        retries: Retries of a row for retryable failures (429, 5xx, service errors).
        retry_delay_seconds: First retry delay; doubles each retry, with jitter.
        resubmit_unknown: Resubmit rows whose earlier submission outcome is unknown.
        storage_options: fsspec options for `output` (for example endpoint_url).
        rows_per_task: Rows per task run; default: 1 up to 50 rows, else about 50 task runs.
        row_events: Per-row events: `failures` (default: `seedream.generation.failed` for each
            failed row), `all` (also `.submitted` and `.completed`) or `none`.
        shards: Split the rows into this many shard flow runs (1: run here).
        work_pool: With shards: (re)create the shard deployment on this work pool first.
        shard_deployment: With shards: the deployment that runs one shard.

    Returns:
        The final state; its result is a `DatasetRunSummary`.

    Examples:
        ```python
        from prefect_seedream.flows import generate_dataset

        state = generate_dataset("prompts.csv", output="output", max_concurrency=4,
                                 return_state=True)
        print(state.message)
        ```
    """
    logger = get_run_logger()
    parameters = {name: value for name, value in locals().items() if name in ROW_PARAMETERS}
    defaults = row_defaults(model, size, n, prompt_priority)
    if credentials is None:
        resolve_credentials(None)  # fail now, not per row, when there is no key
    limit = None
    if concurrency_limit_name and not dry_run:
        limit = await read_concurrency_limit(concurrency_limit_name)
    if shards > 1 and not dry_run:
        await check_shard_deployment(shard_deployment, work_pool)
        warning = unfair_share_warning(max_concurrency, shards, limit)
        if warning:
            logger.warning(warning)

    scan = scan_dataset(dataset, defaults)
    summary = DatasetRunSummary(dry_run=dry_run, estimated_credits=scan.estimated_credits)
    notify_total(scan.rows)
    if dry_run:
        summary.rows, summary.invalid = scan.rows, scan.invalid
        return Completed(message=f"dry run: {scan.rows} rows, {scan.invalid} invalid, "
                         f"at most {scan.estimated_credits:g} credits", data=summary)

    settings = settings_from(dataset, parameters, credentials, total_rows=scan.rows, concurrency_limit=limit)
    store = ImageStore(output, storage_options)
    run_id = str(flow_run.id)
    tables = RunTables(scan.rows)
    async with OutputLock(store, run_id) as lock:
        await asyncio.to_thread(_clear_leftovers, store)
        parts = RunParts(store, run_id)
        artifact = await ProgressArtifact.create(total=scan.rows)
        progress = RunProgress(scan.rows, artifact, logger)
        task_runs = math.ceil(scan.rows / settings.rows_per_task)
        logger.info(
            "Running %d rows: %d per task run (%d task runs), at most %d at once%s",
            scan.rows, settings.rows_per_task, task_runs, max_concurrency,
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
        try:
            if shards > 1:
                gallery = Gallery()  # made from the manifest at the end
                await run_shards(
                    settings, parameters, credentials, rows=scan.rows, shards=shards,
                    run_id=run_id, deployment=shard_deployment, work_pool=work_pool, parts=parts,
                    progress=artifact, output=output,
                )
            else:
                gallery = await execute_rows(
                    settings, RowRange(1, scan.rows), ledger=TaskLedger(store), parts=parts,
                    on_row=progress.row_done, before_batch=lock.check, guard=lock.check,
                )
        except OutputLockedError:
            raise  # another run holds the output now: its manifest is its own
        except Exception:
            # The run fails, but its manifest still says what was done, one line per row,
            # written while the lock is held (the ledger has every fact).
            logger.exception("The run stopped on an error; writing the manifest of what was done")
            with contextlib.suppress(Exception):
                await asyncio.to_thread(
                    write_manifest, store, parts, settings, scan.rows, DatasetRunSummary(),
                    RunTables(scan.rows),
                )
            raise
        summary.manifest = await asyncio.to_thread(
            write_manifest, store, parts, settings, scan.rows, summary, tables
        )
        artifact.set_done(summary.rows)
        await artifact.finish()
    await tables.publish(summary)
    await _publish_gallery(gallery, tables, store)
    logger.info("Manifest written to %s", summary.manifest)
    emit_dataset_event(
        not summary.not_succeeded,
        dataset=dataset,
        output=output,
        payload=summary.model_dump(include={"rows", "succeeded", "failed", "in_flight", "outcome_unknown", "skipped", "credits", "images"}),
    )
    if summary.not_succeeded:
        return Failed(message=summary.message(), data=summary)
    return Completed(message=summary.message(), data=summary)


def _clear_leftovers(store: ImageStore) -> None:
    """What killed runs left: temporary files and unmerged parts (the ledger keeps the facts)."""
    store.clear_temporary()
    clear_runs(store)


async def _publish_gallery(gallery: Gallery, tables: RunTables, store: ImageStore) -> None:
    """The gallery of this process's images, or (sharded runs) of the manifest's first ones."""
    if not gallery.shown:
        for line in tables.gallery_lines:
            for image in line.images:
                if gallery.wants_more():
                    thumbnail = await store.call(store.thumbnail_of, image.uri)
                    if thumbnail:
                        gallery.add_thumbnail(line.row_id, image, thumbnail)
    await gallery.publish()


generate_dataset.on_cancellation_hooks.append(record_stopped_run)
generate_dataset.on_crashed_hooks.append(record_stopped_run)


@flow(
    name="seedream-generate-shard",
    validate_parameters=True,
    description="Generate one row range of a sharded dataset run (started by seedream-generate-dataset).",
)
async def generate_shard(
    dataset: str,
    output: str,
    first_row: Annotated[int, Field(ge=1)],
    last_row: Annotated[int, Field(ge=1)],
    run_id: str,
    total_rows: Annotated[int, Field(ge=1)],
    options: dict[str, Any],
    credentials: SeedreamCredentials | None = None,
    concurrency_limit: int | None = None,
) -> State:
    """Run rows `first_row..last_row` of a dataset for the sharded run `run_id`.

    The shard works under its parent's output lock (it refuses to run if another run holds
    the output), writes the lines of each batch of rows to the parent's part files, and
    leaves the manifest to the parent. Started by :func:`generate_dataset` with `shards` > 1;
    re-running a shard (or the parent) re-attaches to its tasks in flight and skips its
    stored rows, as any run does.

    Args:
        dataset: The dataset (a path every worker can read, or an fsspec URL).
        output: The parent's output (shared by every worker).
        first_row: First row of the range (1-based).
        last_row: Last row of the range.
        run_id: The parent run's id (the holder of the output's lock).
        total_rows: Rows of the whole dataset.
        options: The parent's row parameters (model, size, concurrency, budget share, ...).
        credentials: A SeedreamCredentials block; default: the worker's environment.
        concurrency_limit: The value of the global concurrency limit named in `options`.

    Returns:
        Completed when every row of the range succeeded, else Failed with the counts.

    Examples:
        ```python
        from prefect.deployments import run_deployment

        await run_deployment("seedream-generate-shard/generate-shard", parameters={
            "dataset": "s3://bucket/prompts.csv", "output": "s3://bucket/out",
            "first_row": 1, "last_row": 5000, "run_id": parent_id, "total_rows": 20000,
            "options": options})
        ```
    """
    logger = get_run_logger()
    store = ImageStore(output, options.get("storage_options"))
    await asyncio.to_thread(check_held_by, store, run_id)
    rows = RowRange(first_row, min(last_row, total_rows))
    settings = settings_from(
        dataset, options, credentials, total_rows=total_rows, concurrency_limit=concurrency_limit,
    )
    counts = DatasetRunSummary()
    artifact = await ProgressArtifact.create(total=rows.rows, description=f"Rows {rows.first}-{rows.last} finished")
    progress = RunProgress(rows.rows, artifact, logger)

    def on_row(item: Any) -> None:
        counts.add(item)
        progress.row_done(item)

    await execute_rows(
        settings, rows, ledger=TaskLedger(store), parts=RunParts(store, run_id), on_row=on_row,
        before_batch=lambda: check_held_by(store, run_id),
    )
    await artifact.finish()
    message = f"rows {rows.first}-{rows.last}: {counts.message()}"
    return Completed(message=message) if not counts.not_succeeded else Failed(message=message)


@flow(
    name="seedream-recover-dataset",
    validate_parameters=True,
    description="Collect the remote tasks a stopped dataset run left in flight, without paying again.",
)
async def recover_dataset(
    output: str,
    credentials: SeedreamCredentials | None = None,
    max_wait_seconds: Annotated[float, Field(gt=0)] = MAX_WAIT_SECONDS,
    poll_interval: Annotated[float, Field(gt=0)] = POLL_INTERVAL_SECONDS,
    max_concurrency: Annotated[int, Field(ge=1, le=MAX_CONCURRENCY_BOUND)] = MAX_CONCURRENCY,
    storage_options: dict[str, Any] | None = None,
) -> State:
    """Collect the remote tasks a stopped run left in flight, without paying again.

    Reads the ledger in `output`, waits for every recorded task that is still
    in flight (and whose results have not expired), stores its images and updates
    the manifest's lines. Nothing is ever submitted.

    Args:
        output: The output folder or URL of the earlier run.
        credentials: A SeedreamCredentials block; default: the environment.
        max_wait_seconds: Wall-clock cap of each wait.
        poll_interval: Shortest pause between polls, in seconds.
        max_concurrency: Most tasks awaited at once.
        storage_options: fsspec options for `output`.

    Returns:
        Completed when every in-flight task was collected, else Failed with counts.

    Examples:
        ```python
        import asyncio
        from prefect_seedream.flows import recover_dataset

        asyncio.run(recover_dataset("output"))
        ```
    """
    logger = get_run_logger()
    resolve_credentials(credentials)
    store = ImageStore(output, storage_options)
    ledger = TaskLedger(store)
    records = await asyncio.to_thread(lambda: list(ledger.records()))
    pending = [r for r in records if r.state.value in ("submitted", "completed")]
    logger.info("%d task(s) in flight in %s", len(pending), output)
    limit = asyncio.Semaphore(max_concurrency)
    options = GenerationOptions(wait=WaitOptions(max_wait_seconds, poll_interval))
    reporter = StepReporter(logger)
    collected: dict[str, LedgerRecord] = {}

    async def collect(record: LedgerRecord) -> None:
        async with limit:
            if record.next_step(images_present=False, resubmit_unknown=False) is not NextStep.REATTACH:
                logger.error("%s: task %s is older than its results' 24 h life", record.row_id, record.task_id)
                return
            try:
                await generate_recorded(
                    record, None, client=client_for(credentials), ledger=ledger,
                    options=options, reporter=reporter,
                )
            except SeedreamError as exc:
                logger.error("%s: could not collect task %s: %s", record.row_id, record.task_id, exc)
            collected[record.task_id or record.key] = record

    async with OutputLock(store, str(flow_run.id)):
        try:
            await asyncio.gather(*(collect(record) for record in pending))
        finally:
            await close_clients()
        stored = await asyncio.to_thread(update_manifest_lines, store, collected)
    message = f"collected {stored} of {len(pending)} in-flight task(s) in {output}"
    return Completed(message=message) if stored == len(pending) else Failed(message=message)
