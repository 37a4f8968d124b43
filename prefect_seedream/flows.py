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
from typing import Annotated, Any

from prefect.logging import get_run_logger  # not `from prefect`: prefect.main costs 0.1 s
from prefect.runtime import flow_run
from prefect.states import Completed, Failed, State
from pydantic import Field

from prefect_seedream.api.defaults import MAX_WAIT_SECONDS, POLL_INTERVAL_SECONDS
from prefect_seedream.api.errors import SeedreamError
from prefect_seedream.api.models import DEFAULT_MODEL, ModelName, OutputFormat, Quality
from prefect_seedream.artifacts import ProgressArtifact
from prefect_seedream.clients import api_client, shared_clients
from prefect_seedream.credentials import SeedreamCredentials, resolve_credentials
from prefect_seedream.dispatch import dual_flow
from prefect_seedream.engine.contact_sheet import publish_contact_sheet
from prefect_seedream.engine.defaults import (
    DEFAULT_N,
    DEFAULT_OUTPUT,
    DEFAULT_PROMPT_PRIORITY,
    DEFAULT_SIZE,
    MAX_CONCURRENCY,
    MAX_CONCURRENCY_BOUND,
    RETRIES,
    RETRY_DELAY_SECONDS,
    ROW_EVENTS,
    SHARD_DEPLOYMENT,
    PromptPriority,
    RowEvents,
)
from prefect_seedream.engine.generation import (
    StepReporter,
    SubmissionPolicy,
    generate_recorded,
)
from prefect_seedream.engine.ledger import LedgerRecord, NextStep
from prefect_seedream.engine.lines import update_manifest_lines
from prefect_seedream.engine.options import RunOptions
from prefect_seedream.engine.output import Output
from prefect_seedream.engine.progress import RunProgress, notify_total
from prefect_seedream.engine.reconcile import PromptKey, TaskListIndex, shared_prompt_keys
from prefect_seedream.engine.rows import RowRange, scan_dataset
from prefect_seedream.engine.run_report import DEFAULT_PREFIX, RunTables
from prefect_seedream.engine.sources import is_in_memory, spill_rows
from prefect_seedream.engine.summary import DatasetRunSummary
from prefect_seedream.events import PREFECT_EVENTS
from prefect_seedream.execution import RowsJob, execute_rows, read_concurrency_limit
from prefect_seedream.hooks import record_stopped_run
from prefect_seedream.runs import ShardPlan, account_balance, run_in_output
from prefect_seedream.shards import check_shard_deployment, unfair_share_warning
from prefect_seedream.story import claim_story_keys, emit_run_end_event, publish_run_story

#: What the dataset flow accepts as its `dataset` through the API and the UI: a path or URL,
#: or rows as a list of objects. Called from Python it also takes a list of
#: `GenerationRequest` and pandas or polars DataFrames (see `prefect_seedream.engine.sources`).
DatasetParameter = str | list[dict[str, Any]]


async def _rows_to_file(parameters: dict[str, Any]) -> dict[str, Any]:
    """Before a dataset run is created: rows held in memory are written to a file in the
    output, so that the flow run's parameters hold its path, not the rows."""
    dataset = parameters.get("dataset")
    if dataset is not None and is_in_memory(dataset):
        output = parameters.get("output", DEFAULT_OUTPUT)
        parameters = {**parameters, "dataset": await asyncio.to_thread(
            spill_rows, dataset, output, parameters.get("storage_options"),
        )}
    return parameters


@dual_flow(
    name="seedream-generate-dataset",
    prepare=_rows_to_file,
    validate_parameters=True,
    description="Generate images for every row of a prompt dataset (CSV, JSONL, Parquet, or rows "
    "in memory) and write a manifest with one line per row.",
)
async def generate_dataset(
    dataset: DatasetParameter,
    output: str = DEFAULT_OUTPUT,
    model: ModelName = DEFAULT_MODEL,
    size: str = DEFAULT_SIZE,
    quality: Quality | None = None,
    output_format: OutputFormat | None = None,
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
    wait_for_quota: bool = False,
    storage_options: dict[str, Any] | None = None,
    dataset_storage_options: dict[str, Any] | None = None,
    rows_per_task: Annotated[int, Field(ge=1, le=10_000)] | None = None,
    row_events: RowEvents = ROW_EVENTS,
    reference_store: str | None = None,
    reference_storage_options: dict[str, Any] | None = None,
    reference_public_url: str | None = None,
    shards: Annotated[int, Field(ge=1, le=256)] = 1,
    work_pool: str | None = None,
    shard_deployment: str = SHARD_DEPLOYMENT,
    artifact_key: str = DEFAULT_PREFIX,
) -> State:
    """Generate images for every row of a prompt dataset and write a manifest.

    Rows are validated first (an invalid row is recorded with its reason and
    submits nothing), then run with at most `max_concurrency` generations at
    once. One failed row never stops the others; an answer that concerns the whole
    account (out of credits, key refused) stops every later submission at once, and the
    run says why. The run ends **Completed** when every row succeeded, and **Failed**
    with a message counting the rows that did not (and naming the manifest) otherwise;
    the summary is its result either way.

    The dataset is a file (CSV, TSV, JSONL, Parquet; a path or fsspec URL) or rows in
    memory: a list of dicts, a list of `GenerationRequest`, a pandas or polars DataFrame.
    Rows in memory are written once to `<output>/.seedream/inputs/<hash>.jsonl` and the run
    reads that file, so the flow run's parameters stay small. A row's `id` names its files
    and keys its ledger record; rows in memory without one get an id derived from their
    content, so running the same rows again resumes instead of paying again.

    Up to 50 rows, each row is a task run named after it; bigger datasets run batches of
    consecutive rows per task run (`rows_per_task`), so that a run of 10,000 rows costs
    about 50 task runs, not 40,000. With `shards` > 1 the rows are split in row ranges,
    each run as a flow run of `shard_deployment` on a work pool; their lines are merged
    into this run's manifest.

    Call it as `generate_dataset(...)` from sync code or `await generate_dataset(...)` from
    async code.

    Args:
        dataset: Path or fsspec URL of a .csv, .tsv, .jsonl or .parquet file with a `prompt`
            column (optional: id, model, size, quality, n, prompt_priority, image_urls,
            output_format, watermark, background, web_search), or the rows themselves.
        output: Folder or fsspec URL (`s3://bucket/prefix`) for images and manifest.
        model: Default model for rows that do not name one: a known model, or any other
            name, sent as is (its rules are then not checked locally).
        size: Default size: `auto`, a ratio (`16:9`, with `quality`), a preset (`2K`) or
            `WxH`; applied to the rows whose model takes a size.
        quality: Default resolution of a ratio size (`1K`, `1.5K`, `2K`, `3K`, `4K`: per model).
        output_format: Default image format of the 5.0 models (`png` or `jpeg`, their default).
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
        resubmit_unknown: Submit again rows whose earlier submission's outcome is unknown
            (with the same Idempotency-Key, so a task it created is returned, not paid twice).
        wait_for_quota: When the key's daily quota is used up and the API says when it
            renews, pause until then instead of stopping.
        storage_options: fsspec options for `output` (for example endpoint_url).
        dataset_storage_options: fsspec options to read `dataset` with; default:
            `storage_options` when the dataset is on the same kind of storage as the output
            (rows in memory are written into the output).
        rows_per_task: Rows per task run; default: 1 up to 50 rows, else about 50 task runs.
        row_events: Per-row events: `failures` (default: `seedream.generation.failed` for each
            failed row), `all` (also `.submitted` and `.completed`) or `none`.
        reference_store: An fsspec prefix (`s3://bucket/refs`) where reference images named
            by local paths or storage URLs in `image_urls` are uploaded, once each, and sent
            as presigned URLs (valid longer than the waits). Without it such rows are refused.
        reference_storage_options: fsspec options of `reference_store`.
        reference_public_url: The public base URL of `reference_store`, if it is served
            publicly (then no URL is presigned).
        shards: Split the rows into this many shard flow runs (1: run here).
        work_pool: With shards: (re)create the shard deployment on this work pool first.
        shard_deployment: With shards: the deployment that runs one shard.
        artifact_key: Prefix of the run's artifact keys (`<prefix>-progress`, `-summary`,
            `-rows`, `-gallery`): give each deployment its own to keep each one's history
            under its own keys (lowercase letters, digits and dashes).

    Returns:
        The final state; its result is a `DatasetRunSummary` (`.lines()` reads the rows).

    Examples:
        A file (`prompts.csv` has a `prompt` column):
        ```python
        from prefect_seedream import generate_dataset

        state = generate_dataset("prompts.csv", output="output", max_concurrency=4,
                                 return_state=True)
        print(state.message)
        ```

        Rows in memory, from async code:
        ```python
        from prefect_seedream import generate_dataset

        rows = [{"id": "fox", "prompt": "A red fox in the snow"}, {"prompt": "A lighthouse"}]
        state = await generate_dataset(rows, output="output", return_state=True)
        summary = await state.aresult(raise_on_failure=False)
        print([image.uri for line in summary.lines() for image in line.images])
        ```
    """
    logger = get_run_logger()
    options = RunOptions.from_parameters(locals())
    resolved = resolve_credentials(credentials)  # fail now, not per row, when there is no key
    opened: Output | None = None
    if is_in_memory(dataset):  # rows that came through the API (the body of a flow run)
        opened = Output.open(output, options.storage_options)
        dataset = await asyncio.to_thread(opened.spill, dataset)
    options = options.for_dataset(dataset, output)
    limit = None
    if concurrency_limit_name and not dry_run:
        limit = await read_concurrency_limit(concurrency_limit_name)
    if shards > 1 and not dry_run:
        await check_shard_deployment(shard_deployment, work_pool)
        warning = unfair_share_warning(max_concurrency, shards, limit)
        if warning:
            logger.warning(warning)

    scan = scan_dataset(
        dataset, options.row_defaults(), options.dataset_storage_options, logger=get_run_logger()
    )
    summary = DatasetRunSummary(dry_run=dry_run, estimated_credits=scan.estimated_credits)
    notify_total(scan.rows)
    if dry_run:
        summary.rows, summary.invalid = scan.rows, scan.invalid
        summary.balance = await account_balance(credentials or resolved)
        balance = f"; the account holds {summary.balance:g}" if summary.balance is not None else ""
        return Completed(message=f"dry run: {scan.rows} rows, {scan.invalid} invalid, "
                         f"at most {scan.estimated_credits:g} credits{balance}", data=summary)

    tables = RunTables()
    keys = claim_story_keys(artifact_key)
    opened = opened or Output.open(output, options.storage_options)
    gallery = await run_in_output(
        dataset, opened, options, credentials or resolved, total_rows=scan.rows,
        run_id=str(flow_run.id), summary=summary, concurrency_limit=limit, tables=tables,
        estimated_credits=scan.estimated_credits,
        shard_plan=ShardPlan(shards, shard_deployment, work_pool, generate_shard) if shards > 1 else None,
        keys=keys,
    )
    await publish_run_story(summary, tables, gallery, opened.store, keys)
    logger.info("Manifest written to %s", summary.manifest)
    if summary.contact_sheet:
        logger.info("Contact sheet (open it in a browser): %s", summary.contact_sheet)
    emit_run_end_event(summary, dataset=dataset, output=output)
    if summary.not_succeeded:
        return Failed(message=summary.message(), data=summary)
    return Completed(message=summary.message(), data=summary)


generate_dataset.on_cancellation_hooks.append(record_stopped_run)
generate_dataset.on_crashed_hooks.append(record_stopped_run)


@dual_flow(
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
    options: RunOptions,
    credentials: SeedreamCredentials | None = None,
    concurrency_limit: int | None = None,
) -> State:
    """Run rows `first_row..last_row` of a dataset for the sharded run `run_id`.

    The shard works under its parent's output lock (it refuses to run if another run holds
    the output), writes the lines of each batch of rows to the parent's part files, and
    leaves the manifest to the parent. Started by :func:`generate_dataset` with `shards` > 1;
    re-running a shard (or the parent) re-attaches to its tasks in flight and skips its
    stored rows, as any run does. When one shard is stopped by an answer that concerns the
    whole account (out of credits, ...), the others stop submitting within seconds.

    Args:
        dataset: The dataset (a path every worker can read, or an fsspec URL).
        output: The parent's output (shared by every worker).
        first_row: First row of the range (1-based).
        last_row: Last row of the range.
        run_id: The parent run's id (the holder of the output's lock).
        total_rows: Rows of the whole dataset.
        options: The parent's options (with this shard's share of the budget).
        credentials: A SeedreamCredentials block; default: the worker's environment.
        concurrency_limit: The value of the global concurrency limit named in `options`.

    Returns:
        Completed when every row of the range succeeded, else Failed with the counts.

    Examples:
        `generate_dataset(..., shards=4)` starts each shard on a work pool with
        `run_deployment("seedream-generate-shard/generate-shard", parameters={...})`, the
        parameters below, while it holds the output's lock as `run_id`. The same shard, run
        here:
        ```python
        from prefect_seedream import RunOptions, generate_shard
        from prefect_seedream.engine.output_lock import OutputLock
        from prefect_seedream.engine.storage import ImageStore

        async with OutputLock(ImageStore("output"), run_id="parent-run"):  # the parent's part
            state = await generate_shard(
                dataset="prompts.csv", output="output", first_row=1, last_row=2,
                run_id="parent-run", total_rows=2, options=RunOptions(max_concurrency=50),
                return_state=True,
            )
        print(state.message)  # its rows' lines are in the parent's part files
        ```
    """
    logger = get_run_logger()
    opened = Output.open(output, options.storage_options)
    await asyncio.to_thread(opened.check_held_by, run_id)
    rows = RowRange(first_row, min(last_row, total_rows))
    job = RowsJob(
        dataset, options, credentials, run_id, total_rows, concurrency_limit=concurrency_limit,
        sharded=True,
    )
    counts = DatasetRunSummary()
    # Unkeyed: the parent's keyed artifacts tell the run's story (one key, one history).
    artifact = await ProgressArtifact.create(total=rows.rows, description=f"Rows {rows.first}-{rows.last} finished")
    progress = RunProgress(rows.rows, artifact, logger)

    def on_row(item: Any) -> None:
        counts.add(item)
        progress.row_done(item)

    report = await execute_rows(
        job, rows, output=opened, parts=opened.run_folder(run_id), on_row=on_row,
        before_batch=lambda: opened.check_held_by(run_id),
    )
    await artifact.finish()
    counts.stopped = report.stop
    message = f"rows {rows.first}-{rows.last}: {counts.message()}"
    return Completed(message=message) if not counts.not_succeeded else Failed(message=message)


@dual_flow(
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

    Reads the ledger in `output` (the records of this API), waits for every recorded task
    that is still in flight (and whose results have not expired), looks up in the API's task
    list the tasks of submissions whose outcome is unknown (and collects those it finds),
    stores the images and updates the manifest's lines (and its contact sheet, `index.html`).
    Nothing is ever submitted.

    Args:
        output: The output folder or URL of the earlier run.
        credentials: A SeedreamCredentials block; default: the environment.
        max_wait_seconds: Wall-clock cap of each wait.
        poll_interval: Shortest pause between polls, in seconds.
        max_concurrency: Most tasks awaited at once.
        storage_options: fsspec options for `output`.

    Returns:
        Completed when every task in flight (and every unknown outcome) was collected, else
        Failed with the counts.

    Examples:
        ```python
        from prefect_seedream import recover_dataset

        state = recover_dataset("output", return_state=True)  # the earlier run's output
        print(state.message)
        ```
    """
    logger = get_run_logger()
    run_options = RunOptions.from_parameters(locals())
    api = resolve_credentials(credentials).api_identity
    opened = Output.open(output, run_options.storage_options)
    ledger = opened.ledger(api)
    records = await asyncio.to_thread(lambda: [r for r in ledger.records() if r.api in (api, None)])
    pending = [r for r in records if r.state.value in ("submitted", "completed") or r.outcome_unknown]
    logger.info(
        "%d task(s) in flight and %d submission(s) of unknown outcome in %s",
        sum(not r.outcome_unknown for r in pending), sum(r.outcome_unknown for r in pending), output,
    )
    limit = asyncio.Semaphore(run_options.max_concurrency)
    options = run_options.generation()
    reporter = StepReporter(logger, listener=PREFECT_EVENTS)
    collected: dict[str, LedgerRecord] = {}

    async def collect(record: LedgerRecord, client: Any, finder: TaskListIndex) -> None:
        async with limit:
            if not record.outcome_unknown and (
                record.next_step(images_present=False, resubmit_unknown=False) is not NextStep.REATTACH
            ):
                logger.error("%s: task %s is older than its results' 24 h life", record.row_id, record.task_id)
                return
            try:
                await generate_recorded(
                    record, None, client=client, ledger=ledger, options=options,
                    reporter=reporter, policy=SubmissionPolicy(finder=finder),
                )
            except SeedreamError as exc:
                logger.error("%s: could not collect %s: %s", record.row_id, record.task_id or "its task", exc)
            collected[record.row_id] = record

    async with opened.lock(str(flow_run.id)), shared_clients(), api_client(credentials) as client:
        shared = shared_prompt_keys((r.prompt_sha256, r.model) for r in records if r.prompt_sha256)

        async def shared_prompts() -> set[PromptKey]:
            return shared

        finder = TaskListIndex(
            client, submit_timeout=resolve_credentials(credentials).submit_timeout,
            shared_prompts=shared_prompts,
        )
        for record in records:
            if record.task_id:
                finder.claim(record.task_id)
        await asyncio.gather(*(collect(record, client, finder) for record in pending))
        stored = await asyncio.to_thread(update_manifest_lines, opened.store, collected)
        await asyncio.to_thread(publish_contact_sheet, opened.store)
    message = f"collected {stored} of {len(pending)} task(s) in {output}"
    return Completed(message=message) if stored == len(pending) else Failed(message=message)
