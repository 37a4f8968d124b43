"""The dataset flow and the recovery flow.

(No `from __future__ import annotations` here: served runs rebuild the parameter model
from the live annotations, and string annotations break it in prefect 3.8.)

`generate_dataset` fans out over a prompt dataset with bounded concurrency
(and optionally a Prefect global concurrency limit shared by every run and
worker), stores every image, and writes `manifest.jsonl` with exactly one
line per input row. `recover_dataset` collects remote tasks that a stopped
run left in flight, without paying again.
"""


import asyncio
import inspect
import time
from contextlib import AsyncExitStack
from datetime import datetime, timezone
from typing import Annotated, Any, Literal

from prefect import flow, get_run_logger
from prefect.client.orchestration import get_client
from prefect.concurrency.asyncio import concurrency
from prefect.exceptions import ObjectNotFound
from prefect.states import Completed, Failed, State
from prefect.tasks import exponential_backoff
from pydantic import BaseModel, Field

from prefect_seedream.api.client import DEFAULT_MAX_WAIT_SECONDS
from prefect_seedream.api.errors import (
    SeedreamError,
    SubmissionOutcomeUnknownError,
    TaskFailedError,
    WaitTimeoutError,
)
from prefect_seedream.api.models import DEFAULT_MODEL, GenerationRequest, SeedreamModel
from prefect_seedream.artifacts import Gallery, ProgressArtifact, publish_gallery, publish_summary_table
from prefect_seedream.budget import CreditBudget
from prefect_seedream.clients import close_clients
from prefect_seedream.credentials import SeedreamCredentials, resolve_credentials
from prefect_seedream.events import emit_dataset_event
from prefect_seedream.dataset import InvalidRow, RowDefaults, ValidRow, iter_rows
from prefect_seedream.ledger import LedgerRecord, LedgerState, TaskLedger
from prefect_seedream.manifest import (
    ManifestError,
    ManifestImage,
    ManifestLine,
    RowStatus,
    read_manifest,
    write_manifest,
)
from prefect_seedream.progress import notify, notify_total
from prefect_seedream.storage import ImageStore, StoredImage
from prefect_seedream.tasks import finish_recorded_task, generate_images

SizePreset = Literal["1K", "2K", "4K"]
PromptPriority = Literal["standard", "fast"]
OUTCOME_UNKNOWN_GUIDANCE = (
    "the submission may have created (and billed) a task but no answer came back; it was not "
    "resubmitted. Check the Evolink dashboard, then re-run with resubmit_unknown=True if needed"
)


class DatasetRunSummary(BaseModel):
    """What a dataset run did (the flow's result)."""

    rows: int = 0
    succeeded: int = 0
    failed: int = 0
    invalid: int = 0
    outcome_unknown: int = 0
    in_flight: int = 0
    skipped: int = 0
    reused: int = 0
    images: int = 0
    credits: float = 0.0
    estimated_credits: float = 0.0
    dry_run: bool = False
    manifest: str | None = None

    def count(self, status: RowStatus) -> None:
        """Count one row's outcome."""
        setattr(self, status, getattr(self, status) + 1)

    @property
    def not_succeeded(self) -> int:
        """Rows that did not end with stored images."""
        return self.rows - self.succeeded

    def message(self) -> str:
        """One line for the flow run's state."""
        parts = [f"{self.succeeded} of {self.rows} rows succeeded"]
        for status in ("failed", "outcome_unknown", "in_flight", "skipped"):
            if getattr(self, status):
                parts.append(f"{getattr(self, status)} {status.replace('_', ' ')}")
        text = ", ".join(parts) + f"; {self.images} images, {self.credits:g} credits"
        if self.manifest:
            text += f"; see {self.manifest}"
        return text


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _images(images: list[StoredImage]) -> list[ManifestImage]:
    return [ManifestImage(uri=i.uri, width=i.width, height=i.height, bytes=i.bytes) for i in images]


def _line(row: ValidRow | InvalidRow, status: RowStatus, **fields: Any) -> ManifestLine:
    if isinstance(row, ValidRow):
        request = row.request
        parameters = request.model_dump(include={"size", "n", "prompt_priority", "image_urls"})
        parameters["image_urls"] = list(request.image_urls)
        return ManifestLine(
            row_id=row.row_id,
            row_number=row.number,
            prompt=request.prompt,
            model=request.model,
            parameters=parameters,
            status=status,
            **fields,
        )
    return ManifestLine(
        row_id=row.row_id,
        row_number=row.number,
        prompt=row.prompt,
        model=row.parameters.get("model"),
        parameters={k: v for k, v in row.parameters.items() if k != "model"},
        status=status,
        **fields,
    )


def line_from_record(row: ValidRow, record: LedgerRecord | None, **fields: Any) -> ManifestLine:
    """The manifest line that a row's ledger record stands for (cancelled or recovered runs)."""
    if record is None or record.state is LedgerState.NEW:
        return _line(row, "skipped", error=ManifestError(code="not_started", message="the run stopped before this row was submitted"), **fields)
    common = {"task_id": record.task_id, "credits": record.credits, "submissions": record.submissions}
    if record.state is LedgerState.STORED:
        return _line(row, "succeeded", images=_images(record.images), **common, **fields)
    if record.state is LedgerState.OUTCOME_UNKNOWN:
        error = ManifestError(code="outcome_unknown", message=OUTCOME_UNKNOWN_GUIDANCE)
        return _line(row, "outcome_unknown", error=error, **common, **fields)
    if record.state is LedgerState.FAILED:
        error = ManifestError(**(record.error or {"code": "failed", "message": ""}))
        return _line(row, "failed", error=error, **common, **fields)
    message = f"task {record.task_id} is still in flight; collect it with `prefect-seedream recover`"
    return _line(row, "in_flight", error=ManifestError(code="in_flight", message=message), **common, **fields)


class _RowRunner:
    """Runs the rows of one dataset run: budget, concurrency, outcome of each row."""

    def __init__(
        self,
        output: str,
        credentials: SeedreamCredentials | None,
        budget: CreditBudget,
        concurrency_limit_name: str | None,
        task_options: dict[str, Any],
        call_options: dict[str, Any],
    ) -> None:
        self.store = ImageStore(output, call_options.get("storage_options"))
        self.ledger = TaskLedger(self.store)
        self.output = output
        self.credentials = credentials
        self.budget = budget
        self.limit_name = concurrency_limit_name
        self.generate = generate_images.with_options(**task_options)
        self.call_options = call_options
        self.gallery = Gallery()

    async def run(self, row: ValidRow | InvalidRow) -> ManifestLine:
        if isinstance(row, InvalidRow):
            return _line(row, "failed", error=ManifestError(code="invalid_row", message=row.reason))
        key = self.ledger.key_for(row.row_id, row.request)
        record = self.ledger.load(key)
        if record is not None and record.state is LedgerState.STORED and all(
            self.store.exists(image.uri) for image in record.images
        ):  # stored by an earlier run: no task run, no API call
            return line_from_record(row, record, reused=True)
        # Re-attaching costs nothing new, nor does repeating a request-side failure.
        free = record is not None and (record.reattachable() or record.failed_by_request())
        reserve = 0.0 if free else row.request.reserved_credits
        if not self.budget.try_reserve(reserve):
            message = (
                f"reserving {reserve:g} credits would pass max_credits={self.budget.limit:g} "
                f"({self.budget.spent:g} spent, {self.budget.reserved:g} reserved)"
            )
            return _line(row, "skipped", error=ManifestError(code="budget_exceeded", message=message))
        started, started_at = time.monotonic(), _now()
        submissions_before = record.submissions if record else 0
        try:
            line = await self._generate(row, key)
        finally:
            after = self.ledger.load(key)
            self.budget.settle(reserved=reserve, spent=_charged(after, submissions_before, reserve))
        line.started_at, line.finished_at = started_at, _now()
        line.duration_seconds = round(time.monotonic() - started, 3)
        return line

    async def _generate(self, row: ValidRow, key: str) -> ManifestLine:
        """Run one row's generation; every outcome becomes its manifest line."""
        try:
            async with AsyncExitStack() as stack:
                if self.limit_name:
                    await stack.enter_async_context(
                        concurrency(self.limit_name, occupy=1, strict=True)
                    )
                result = await self.generate(
                    row.request, self.output, self.credentials, label=row.row_id, **self.call_options
                )
        except SubmissionOutcomeUnknownError:
            return self._from_ledger(row, key, "outcome_unknown", "outcome_unknown", OUTCOME_UNKNOWN_GUIDANCE)
        except TaskFailedError as exc:
            return self._from_ledger(row, key, "failed", exc.code, exc.message)
        except SeedreamError as exc:
            code = "wait_timeout" if isinstance(exc, WaitTimeoutError) else type(exc).__name__
            return self._from_ledger(row, key, None, code, str(exc))
        except Exception as exc:  # a bug must not lose the row: record it and go on
            return self._from_ledger(row, key, None, "internal_error", f"{type(exc).__name__}: {exc}")
        for image in result.images:
            self.gallery.add(row.row_id, image)
        return _line(
            row,
            "succeeded",
            task_id=result.task_id,
            images=_images(result.images),
            credits=result.credits,
            submissions=result.submissions,
            reused=result.reused,
        )

    def _from_ledger(
        self, row: ValidRow, key: str, status: RowStatus | None, code: str, message: str
    ) -> ManifestLine:
        """A line for a row that did not succeed; with no status, the ledger decides.

        A task still running remotely (the wait stopped: cap, rate limit, poll errors) is
        `in_flight`, so that `recover` can collect it; anything else is `failed`.
        """
        record = self.ledger.load(key)
        if status is None:
            status = "in_flight" if record and record.state is LedgerState.SUBMITTED else "failed"
        if status == "in_flight":
            message += "; collect it with `prefect-seedream recover`"
        return _line(
            row,
            status,
            task_id=record.task_id if record else None,
            submissions=record.submissions if record else 0,
            credits=record.credits if record and record.state is not LedgerState.FAILED else None,
            error=ManifestError(code=code, message=message),
        )


def _charged(record: LedgerRecord | None, submissions_before: int, reserved: float) -> float:
    """Credits this run spent on a row, as the ledger tells it.

    Nothing when this run submitted nothing (a re-attached task was paid by the run that
    submitted it) or when the task failed (the API charges generated images only); the
    final charge when the task completed; the reservation while a task may still be billed
    (in flight, or a submission whose outcome is unknown).
    """
    if record is None or record.submissions == submissions_before:
        return 0.0
    if record.state in (LedgerState.STORED, LedgerState.COMPLETED):
        return record.credits or 0.0
    if record.state in (LedgerState.SUBMITTED, LedgerState.OUTCOME_UNKNOWN):
        return reserved
    return 0.0


async def _check_concurrency_limit(name: str) -> None:
    async with get_client() as client:
        try:
            await client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            raise ValueError(
                f"global concurrency limit {name!r} does not exist: create it with "
                f"`prefect gcl create {name} --limit N`"
            ) from None


def _defaults(model: str, size: str | None, n: int, prompt_priority: str | None) -> RowDefaults:
    """Check the flow-level parameters together before anything is read or spent."""
    GenerationRequest(model=model, prompt="parameter check", size=size, n=n, prompt_priority=prompt_priority)
    return RowDefaults(model=model, size=size, n=n, prompt_priority=prompt_priority)


@flow(name="seedream-generate-dataset", validate_parameters=True)
async def generate_dataset(
    dataset: str,
    output: str = "output",
    model: SeedreamModel = DEFAULT_MODEL,
    size: SizePreset = "2K",
    n: Annotated[int, Field(ge=1, le=15)] = 1,
    prompt_priority: PromptPriority = "standard",
    max_concurrency: Annotated[int, Field(ge=1, le=256)] = 8,
    concurrency_limit_name: str | None = None,
    credentials: SeedreamCredentials | None = None,
    max_credits: Annotated[float, Field(gt=0)] | None = None,
    dry_run: bool = False,
    max_wait_seconds: Annotated[float, Field(gt=0)] = DEFAULT_MAX_WAIT_SECONDS,
    poll_interval: Annotated[float, Field(gt=0)] = 3.0,
    retries: Annotated[int, Field(ge=0, le=10)] = 2,
    retry_delay_seconds: Annotated[float, Field(ge=0)] = 10.0,
    resubmit_unknown: bool = False,
    storage_options: dict[str, Any] | None = None,
) -> State:
    """Generate images for every row of a prompt dataset and write a manifest.

    Rows are validated first (an invalid row is recorded with its reason and
    submits nothing), then run with at most `max_concurrency` generations at
    once. One failed row never stops the others. The run ends **Completed** when
    every row succeeded, and **Failed** with a message counting the rows that
    did not (and naming the manifest) otherwise; the summary is its result.

    Args:
        dataset: Path or fsspec URL of a .csv, .tsv, .jsonl or .parquet file with
            a `prompt` column (optional: id, model, size, n, prompt_priority, image_urls).
        output: Folder or fsspec URL (`s3://bucket/prefix`) for images and manifest.
        model: Default model for rows that do not name one.
        size: Default size preset (rows may give a preset or WxH); 1K exists on 4.0 only.
        n: Default most images per prompt (1-15).
        prompt_priority: Default prompt priority (`fast` exists on 4.0 only).
        max_concurrency: Most generations in flight at once in this run.
        concurrency_limit_name: A Prefect global concurrency limit shared by all
            runs and workers (must exist: `prefect gcl create NAME --limit N`).
        credentials: A SeedreamCredentials block; default: SEEDREAM_API_KEY / SEEDREAM_BASE_URL.
        max_credits: Budget: no submission may take the run's credits past it.
        dry_run: Validate every row and estimate credits; submit nothing.
        max_wait_seconds: Wall-clock cap of each wait; a task still running after
            it is recorded `in_flight` with its id for `recover`.
        poll_interval: Shortest pause between polls, in seconds.
        retries: Retries of a row for retryable failures (429, 5xx, service errors).
        retry_delay_seconds: First retry delay; doubles each retry, with jitter.
        resubmit_unknown: Resubmit rows whose earlier submission outcome is unknown.
        storage_options: fsspec options for `output` (for example endpoint_url).

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
    defaults = _defaults(model, size, n, prompt_priority)
    resolve_credentials(credentials)  # fail now, not per row, when there is no key
    if concurrency_limit_name and not dry_run:
        await _check_concurrency_limit(concurrency_limit_name)

    summary = DatasetRunSummary(dry_run=dry_run)
    for row in iter_rows(dataset, defaults):  # pass 1: validate everything, spend nothing
        summary.rows += 1
        if isinstance(row, InvalidRow):
            summary.invalid += 1
            logger.warning("Row %s (line %d) is invalid: %s", row.row_id, row.number, row.reason)
        else:
            summary.estimated_credits += row.request.reserved_credits
    logger.info(
        "Dataset %s: %d rows, %d invalid; at most %g credits",
        dataset, summary.rows, summary.invalid, summary.estimated_credits,
    )
    notify_total(summary.rows)
    if dry_run:
        return Completed(message=f"dry run: {summary.rows} rows, {summary.invalid} invalid, "
                         f"at most {summary.estimated_credits:g} credits", data=summary)

    runner = _RowRunner(
        output,
        credentials,
        CreditBudget(limit=max_credits),
        concurrency_limit_name,
        {
            "retries": retries,
            "retry_delay_seconds": exponential_backoff(backoff_factor=retry_delay_seconds)
            if retry_delay_seconds
            else 0,
            "retry_jitter_factor": 0.5 if retry_delay_seconds else None,
        },
        {
            "max_wait_seconds": max_wait_seconds,
            "poll_interval": poll_interval,
            "storage_options": storage_options,
            "resubmit_unknown": resubmit_unknown,
        },
    )
    progress = await ProgressArtifact.create(total=summary.rows)
    lines: list[ManifestLine] = []
    try:
        lines = await _run_rows(iter_rows(dataset, defaults), runner, max_concurrency, progress)
    finally:
        await close_clients()
    await progress.finish()

    summary.invalid = 0
    for line in lines:
        summary.count(line.status)
        if line.error and line.error.code == "invalid_row":
            summary.invalid += 1
        summary.images += len(line.images)
        summary.reused += line.reused
    summary.credits = round(runner.budget.spent, 6)
    summary.manifest = write_manifest(runner.store, lines)
    await publish_summary_table(lines)
    await publish_gallery(runner.gallery)
    logger.info("Manifest written to %s", summary.manifest)
    emit_dataset_event(
        not summary.not_succeeded,
        dataset=dataset,
        output=output,
        payload=summary.model_dump(include={"rows", "succeeded", "failed", "in_flight", "outcome_unknown", "skipped", "credits"}),
    )
    if summary.not_succeeded:
        return Failed(message=summary.message(), data=summary)
    return Completed(message=summary.message(), data=summary)


async def _run_rows(
    rows: Any, runner: _RowRunner, max_concurrency: int, progress: ProgressArtifact
) -> list[ManifestLine]:
    """Feed rows to `max_concurrency` workers; the dataset is streamed, not loaded."""
    queue: asyncio.Queue[ValidRow | InvalidRow | None] = asyncio.Queue(maxsize=2 * max_concurrency)
    lines: list[ManifestLine] = []

    async def worker() -> None:
        while (row := await queue.get()) is not None:
            line = await runner.run(row)
            lines.append(line)
            notify(line)
            progress.advance()

    workers = [asyncio.create_task(worker()) for _ in range(max_concurrency)]
    try:
        for row in rows:
            await queue.put(row)
        for _ in workers:
            await queue.put(None)
        await asyncio.gather(*workers)
    except BaseException:
        for task in workers:
            task.cancel()
        raise
    return lines


def manifest_from_ledger(
    dataset: str,
    output: str,
    defaults: RowDefaults,
    storage_options: dict[str, Any] | None = None,
) -> str:
    """Write the manifest of a stopped run from its ledger: one line per input row.

    Rows with stored images are `succeeded`, rows with a recorded task still
    running are `in_flight` (collect them with :func:`recover_dataset`), rows
    never submitted are `skipped`, invalid rows `failed`.

    Returns:
        The manifest's URI.
    """
    store = ImageStore(output, storage_options)
    ledger = TaskLedger(store)
    lines = []
    for row in iter_rows(dataset, defaults):
        if isinstance(row, InvalidRow):
            lines.append(_line(row, "failed", error=ManifestError(code="invalid_row", message=row.reason)))
        else:
            lines.append(line_from_record(row, ledger.load(ledger.key_for(row.row_id, row.request))))
    return write_manifest(store, lines)


def _record_stopped_run(flow: Any, flow_run: Any, state: State) -> None:
    """`on_cancellation` / `on_crashed` hook: write the manifest from the ledger.

    Remote tasks in flight cannot be cancelled (the API has no cancel endpoint);
    their ids are already in the ledger, and the manifest lists them `in_flight`.
    """
    bound = inspect.signature(flow.fn).bind_partial(**flow_run.parameters)
    bound.apply_defaults()
    params = bound.arguments
    if params["dry_run"]:
        return
    defaults = RowDefaults(
        model=params["model"], size=params["size"], n=params["n"], prompt_priority=params["prompt_priority"]
    )
    uri = manifest_from_ledger(params["dataset"], params["output"], defaults, params["storage_options"])
    print(f"Run {state.type.value.lower()}: manifest of what was done written to {uri}")


generate_dataset.on_cancellation_hooks.append(_record_stopped_run)
generate_dataset.on_crashed_hooks.append(_record_stopped_run)


@flow(name="seedream-recover-dataset", validate_parameters=True)
async def recover_dataset(
    output: str,
    credentials: SeedreamCredentials | None = None,
    max_wait_seconds: Annotated[float, Field(gt=0)] = DEFAULT_MAX_WAIT_SECONDS,
    poll_interval: Annotated[float, Field(gt=0)] = 3.0,
    max_concurrency: Annotated[int, Field(ge=1, le=256)] = 8,
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
    pending = [r for r in ledger.records() if r.state in (LedgerState.SUBMITTED, LedgerState.COMPLETED)]
    logger.info("%d task(s) in flight in %s", len(pending), output)
    limit = asyncio.Semaphore(max_concurrency)
    outcomes: dict[str, LedgerRecord] = {}

    async def collect(record: LedgerRecord) -> None:
        async with limit:
            if not record.reattachable():
                logger.error("%s: task %s is older than its results' 24 h life", record.row_id, record.task_id)
                return
            try:
                await finish_recorded_task(
                    record, ledger, output, credentials, max_wait_seconds=max_wait_seconds,
                    poll_interval=poll_interval, storage_options=storage_options,
                )
            except SeedreamError as exc:
                logger.error("%s: could not collect task %s: %s", record.row_id, record.task_id, exc)
            outcomes[record.key] = record

    try:
        await asyncio.gather(*(collect(record) for record in pending))
    finally:
        await close_clients()
    collected = _update_manifest(store, outcomes.values())
    message = f"collected {collected} of {len(pending)} in-flight task(s) in {output}"
    return Completed(message=message) if collected == len(pending) else Failed(message=message)


def _update_manifest(store: ImageStore, records: Any) -> int:
    """Rewrite the manifest lines of recovered rows; returns how many were stored."""
    by_task = {record.task_id: record for record in records}
    lines = read_manifest(store)
    for line in lines:
        record = by_task.get(line.task_id)
        if record is None:
            continue
        if record.state is LedgerState.STORED:
            line.status, line.error = "succeeded", None
            line.images, line.credits = _images(record.images), record.credits
        elif record.state is LedgerState.FAILED and record.error:
            line.status, line.error = "failed", ManifestError(**record.error)
    if lines:
        write_manifest(store, lines)
    return sum(record.state is LedgerState.STORED for record in by_task.values())
