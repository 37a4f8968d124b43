"""Reusable Prefect tasks: submit a generation, wait for it, store its images; many at once.

Each task is one Prefect task run whose work is a plain async call of
:mod:`prefect_seedream.engine.generation`, the functions the dataset flow's rows run too.
:func:`generate_images` does all three steps in **one** task run, resuming from the ledger;
:func:`generate_many` runs a whole list of requests with the dataset flow's batching (about
50 task runs whatever the size), concurrency, retries, ledger and budget.

Every task can be called as ``x(...)`` from sync code and ``await x(...)`` from async code
(:mod:`prefect_seedream.dispatch`), and keeps ``.submit``, ``.map`` and ``.with_options``.

Retries are Prefect's, with exponential backoff and jitter, and happen only for
errors whose ``retryable`` flag says so (429, 5xx, service-side task failures).
A request's own faults (validation, ``content_policy_violation``) and a
submission whose outcome is unknown are never retried. Every submission carries an
``Idempotency-Key``, the same on each Prefect retry of the task run.
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Annotated, Any

from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import State, TaskRun
from prefect.logging import get_run_logger  # not `from prefect`: prefect.main costs 0.1 s
from prefect.runtime import task_run as current_task_run
from prefect.tasks import Task, exponential_backoff
from pydantic import Field

from prefect_seedream.api.defaults import (
    MAX_IMAGE_BYTES,
    MAX_POLL_INTERVAL_SECONDS,
    MAX_WAIT_SECONDS,
    POLL_INTERVAL_SECONDS,
)
from prefect_seedream.api.errors import (
    SeedreamConfigurationError,
    SeedreamError,
    SubmissionOutcomeUnknownError,
    TaskFailedError,
)
from prefect_seedream.api.models import GenerationRequest, GenerationTask
from prefect_seedream.clients import api_client, shared_clients
from prefect_seedream.credentials import SeedreamCredentials, resolve_credentials
from prefect_seedream.dispatch import dual_task
from prefect_seedream.engine.dataset import ValidRow
from prefect_seedream.engine.defaults import (
    MAX_CONCURRENCY,
    MAX_CONCURRENCY_BOUND,
    RETRIES,
    RETRY_DELAY_SECONDS,
    RETRY_JITTER_FACTOR,
)
from prefect_seedream.engine.generation import (
    GenerationOptions,
    StepReporter,
    SubmissionPolicy,
    WaitOptions,
    generate_recorded,
    next_step_of,
    store_task_images,
    submit_request,
    wait_for_task,
)
from prefect_seedream.engine.ledger import NextStep, request_hash
from prefect_seedream.engine.lines import GeneratedImages, line_from_record
from prefect_seedream.engine.manifest import RunLine
from prefect_seedream.engine.options import RunOptions
from prefect_seedream.engine.output import Output
from prefect_seedream.engine.reconcile import TaskListIndex
from prefect_seedream.engine.references import ReferenceStore, no_store_message
from prefect_seedream.engine.rows import scan_dataset
from prefect_seedream.engine.run_report import RunTables, destination_prefix
from prefect_seedream.engine.storage import ImageStore, StoredImage
from prefect_seedream.engine.summary import DatasetRunSummary
from prefect_seedream.events import PREFECT_EVENTS
from prefect_seedream.execution import read_concurrency_limit
from prefect_seedream.runs import run_in_output
from prefect_seedream.story import (
    call_story,
    claim_story_keys,
    emit_run_end_event,
    publish_run_story,
)


def is_retryable_failure(task: Task[Any, Any], task_run: TaskRun, state: State[Any]) -> bool:
    """Retry condition: only errors that say they are retryable, never an unknown outcome.

    A plain function reading the exception from the state (no ``state.result()``),
    so it behaves the same in sync and async tasks.
    """
    error = state.data
    return (
        isinstance(error, SeedreamError)
        and error.retryable
        and not isinstance(error, SubmissionOutcomeUnknownError)
    )


def is_retryable_poll_failure(task: Task[Any, Any], task_run: TaskRun, state: State[Any]) -> bool:
    """Retry condition of a wait: transient poll errors, not a failed task."""
    return is_retryable_failure(task, task_run, state) and not isinstance(
        state.data, TaskFailedError
    )


def slug(text: str, length: int = 32) -> str:
    """A short readable slug of a prompt, for task run names.

    Examples:
        >>> slug("A lighthouse at dawn, oil painting")
        'a-lighthouse-at-dawn-oil-paintin'
        >>> slug("A lighthouse at dawn", length=12), slug("!!!")
        ('a-lighthouse', 'prompt')
    """
    words = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return words[:length].rstrip("-") or "prompt"


def _run_label() -> str:
    params = current_task_run.parameters
    label = params.get("label")
    if label:
        return str(label)[:60]
    destination = params.get("destination")
    if "requests" in params and isinstance(destination, str):
        return slug(destination.rstrip("/").rsplit("/", 1)[-1] or "requests")
    request = params.get("request")
    if isinstance(request, GenerationRequest):
        return slug(request.prompt)
    task_obj = params.get("task")
    if isinstance(task_obj, GenerationTask):
        return task_obj.id
    return str(params.get("task_id", "generation"))


def _named(prefix: str):  # type: ignore[no-untyped-def]
    def name() -> str:
        return f"{prefix}-{_run_label()}"

    return name


def _task_options(
    name: str, prefix: str, description: str, *, retries: int, backoff: float, condition: Any
) -> dict[str, Any]:
    """The ``@task(...)`` options the four tasks share: never cached, retried with jitter."""
    return {
        "name": name,
        "task_run_name": _named(prefix),
        "description": description,
        "retries": retries,
        "retry_delay_seconds": exponential_backoff(backoff_factor=backoff),
        "retry_jitter_factor": RETRY_JITTER_FACTOR,
        "retry_condition_fn": condition,
        "cache_policy": NO_CACHE,
    }


def _reporter() -> StepReporter:
    # A task the API refused is an expected outcome: one WARNING line with its code and message.
    return StepReporter(get_run_logger(), failure_level=logging.WARNING, listener=PREFECT_EVENTS)


@dual_task(
    **_task_options(
        "submit-generation", "submit", "Submit one Seedream generation; returns the remote task.",
        retries=1, backoff=2, condition=is_retryable_failure,
    )
)
async def submit_generation(
    request: GenerationRequest,
    credentials: SeedreamCredentials | None = None,
    label: str | None = None,
    idempotency_key: str | None = None,
) -> GenerationTask:
    """Submit one generation and return the remote task (status ``pending``).

    The remote task id is logged at once. Retried when the API answered 429/5xx, with the
    same ``Idempotency-Key`` (default: one derived from the task run, so a Prefect retry of
    this task run is a replay of its submission, never a second charge); a submission whose
    outcome is unknown raises ``SubmissionOutcomeUnknownError`` and is never resubmitted.

    Args:
        request: The validated request.
        credentials: A ``SeedreamCredentials`` block; defaults to the environment.
        label: A readable name for logs, events and the task run (a row id).
        idempotency_key: The submission's key; give the one of an earlier submission whose
            outcome is unknown to get its task back instead of paying again.

    Returns:
        The task as the API returned it.

    Examples:
        ```python
        from prefect import flow
        from prefect_seedream import GenerationRequest, submit_generation

        @flow
        def one() -> str:
            task = submit_generation(GenerationRequest(prompt="A red fox", size="2K"))
            return task.id

        print(one())  # task-unified-...
        ```
    """
    # The task run's id: the same on every Prefect retry of this task run. Outside a task run
    # (``submit_generation.fn(...)``), None: the client makes a new key for this call.
    task_run_id = current_task_run.id
    key = idempotency_key or (f"seedream-task-run-{task_run_id}" if task_run_id else None)
    async with api_client(credentials) as client:
        return await submit_request(
            client, request, _reporter(), label or slug(request.prompt), idempotency_key=key
        )


@dual_task(
    **_task_options(
        "wait-for-generation", "wait", "Wait until a Seedream task is terminal; raise if it failed.",
        retries=2, backoff=2, condition=is_retryable_poll_failure,
    )
)
async def wait_for_generation(
    task_id: str,
    credentials: SeedreamCredentials | None = None,
    max_wait_seconds: float = MAX_WAIT_SECONDS,
    estimated_time: float | None = None,
    poll_interval: float = POLL_INTERVAL_SECONDS,
    max_poll_interval: float = MAX_POLL_INTERVAL_SECONDS,
    label: str | None = None,
) -> GenerationTask:
    """Wait until a remote task is terminal; raise if it failed.

    Never cached. Logs each state change once (progress only at DEBUG), and the
    API's own error message on failure.

    Args:
        task_id: The remote task id.
        credentials: A ``SeedreamCredentials`` block; defaults to the environment.
        max_wait_seconds: Wall-clock cap; ``WaitTimeoutError`` after it.
        estimated_time: The submit response's estimate, which times the first poll.
        poll_interval: Shortest pause between polls.
        max_poll_interval: Longest pause between polls.
        label: A readable name for logs, events and the task run.

    Returns:
        The completed task.

    Raises:
        TaskFailedError: the task failed (``kind`` says whose fault).
        WaitTimeoutError: the cap ran out; the task may still finish.

    Examples:
        ```python
        from prefect import flow
        from prefect_seedream import GenerationRequest, submit_generation, wait_for_generation

        @flow
        def one() -> list[str]:
            task = submit_generation(GenerationRequest(prompt="A red fox"))
            done = wait_for_generation(task.id, max_wait_seconds=600,  # `await` it in async code
                                       estimated_time=task.task_info.estimated_time)
            return done.results

        print(one())  # the result URLs (they expire after 24 h)
        ```
    """
    options = WaitOptions(max_wait_seconds, poll_interval, max_poll_interval)
    async with api_client(credentials) as client:
        return await wait_for_task(
            client, task_id, _reporter(), label or task_id,
            options=options, estimated_time=estimated_time,
        )


@dual_task(
    **_task_options(
        "store-images", "store", "Download a completed Seedream task's images into storage.",
        retries=2, backoff=1, condition=is_retryable_failure,
    )
)
async def store_images(
    task: GenerationTask,
    destination: str,
    credentials: SeedreamCredentials | None = None,
    name: str | None = None,
    storage_options: dict[str, Any] | None = None,
    max_bytes: int = MAX_IMAGE_BYTES,
    label: str | None = None,
) -> list[StoredImage]:
    """Download every result of a completed task into durable storage.

    Each image is streamed, checked to be an image (it must decode), and saved
    as ``<name>-<i>.<ext>`` below ``destination``: a local folder or any fsspec
    URL such as ``s3://bucket/prefix`` (install ``prefect-seedream[s3]``).
    The name is sanitised, so it never escapes the destination.

    Args:
        task: The completed task.
        destination: Folder or fsspec URL.
        credentials: A ``SeedreamCredentials`` block; defaults to the environment.
        name: File-name stem (default: the task id), for example the row id.
        storage_options: fsspec options (credentials, ``endpoint_url``, ...).
        max_bytes: Size cap per image.
        label: A readable name for logs and the task run.

    Returns:
        Where each image went, with its width, height and size.

    Examples:
        ```python
        from prefect import flow
        from prefect_seedream import (
            GenerationRequest, store_images, submit_generation, wait_for_generation)

        @flow
        def one() -> list[str]:
            task = submit_generation(GenerationRequest(prompt="A red fox"))
            done = wait_for_generation(task.id, estimated_time=task.task_info.estimated_time)
            images = store_images(done, "renders", name="row-7")  # or "s3://my-bucket/renders"
            return [image.uri for image in images]

        print(one())  # [".../renders/row-7-1.png"]
        ```
    """
    store = ImageStore(destination, storage_options)
    async with api_client(credentials) as client:
        images = await store_task_images(client, store, task, name or task.id, max_bytes=max_bytes)
    _reporter().stored(label or task.id, len(images), store.destination)
    return images


@dual_task(
    **_task_options(
        "generate-images", "generate",
        "Submit, wait and store one Seedream generation, resuming from the ledger.",
        retries=RETRIES, backoff=RETRY_DELAY_SECONDS, condition=is_retryable_failure,
    )
)
async def generate_images(
    request: GenerationRequest,
    destination: str,
    credentials: SeedreamCredentials | None = None,
    label: str | None = None,
    max_wait_seconds: float = MAX_WAIT_SECONDS,
    poll_interval: float = POLL_INTERVAL_SECONDS,
    storage_options: dict[str, Any] | None = None,
    resubmit_unknown: bool = False,
    reference_store: str | None = None,
    reference_storage_options: dict[str, Any] | None = None,
    reference_public_url: str | None = None,
    artifact_key: str | None = None,
) -> GeneratedImages:
    """Submit, wait and store in one task run, resuming from the ledger instead of paying twice.

    The write-ahead intent and then the remote task id are written to
    ``<destination>/.seedream/tasks/`` before waiting. Run again (a Prefect retry or a re-run
    of the flow), this task returns the stored images without any API call, re-attaches to a
    task still in flight, and submits anew only when there is no usable earlier task (never
    submitted, failed on the service's side, or older than the results' life). A submission
    whose answer was lost (even by a killed process) is not resubmitted unless
    ``resubmit_unknown=True``.

    Args:
        request: The validated request.
        destination: Folder or fsspec URL for the images and the ledger.
        credentials: A ``SeedreamCredentials`` block; defaults to the environment.
        label: The row id: the idempotency key with the request, and file-name stem.
        max_wait_seconds: Wall-clock cap of the wait.
        poll_interval: Shortest pause between polls.
        storage_options: fsspec options for ``destination``.
        resubmit_unknown: Submit again after an earlier submission whose outcome
            is unknown (with the same Idempotency-Key: the API returns the task it created,
            if any). Off by default.
        reference_store: An fsspec prefix (``s3://bucket/refs``) where reference images named
            by local paths in ``request.image_urls`` are uploaded once and sent as presigned
            URLs; without it, such a request is refused before anything is spent.
        reference_storage_options: fsspec options of ``reference_store``.
        reference_public_url: The public base URL of ``reference_store``, if it is served
            publicly (then no URL is presigned).
        artifact_key: Prefix of the artifacts the flow run's calls share (default:
            ``seedream-<last part of destination>``; see :mod:`prefect_seedream.story`).

    The calls of a flow run (``.map`` included) with the same ``artifact_key`` share four
    artifacts, updated as each call ends: progress, a summary, their rows (failures first)
    and a gallery. A request the API refused raises :class:`TaskFailedError` (the task run
    ends Failed with the API's code and message, one WARNING line, no ERROR traceback).

    Returns:
        The stored images, task id, credits and submission count.

    Examples:
        ```python
        from prefect import flow
        from prefect_seedream import GenerationRequest, generate_images

        @flow
        def poster() -> list[str]:  # or `async def poster()` and `await generate_images(...)`
            result = generate_images(
                GenerationRequest(prompt="A poster of a red fox", size="2K"),
                destination="output/posters",
                label="fox-poster",
            )
            return [image.uri for image in result.images]

        print(poster())  # run again: the stored images, with no API call
        ```
    """
    story = call_story(artifact_key or destination_prefix(destination), _ledger_location(destination))
    run_id = str(current_task_run.id)
    async with api_client(credentials) as client:
        ledger = Output.open(destination, storage_options).ledger(client.identity)
        record = await ledger.arecord_for(label or request_hash(request)[:16], request)
        row = ValidRow(story.start(), record.row_id, request)
        reused = next_step_of(record, ledger.store, resubmit_unknown=resubmit_unknown) is NextStep.REUSE
        try:
            if reused:
                get_run_logger().info("%s: already stored by an earlier run (task %s)", record.row_id, record.task_id)
                return GeneratedImages.of(record, reused=True)
            references = (
                ReferenceStore(reference_store, reference_storage_options, public_url=reference_public_url,
                               url_life_seconds=2 * max_wait_seconds)
                if reference_store else None
            )
            if request.local_references and references is None:
                raise SeedreamConfigurationError(no_store_message(request.local_references[0]))
            options = GenerationOptions(
                wait=WaitOptions(max_wait_seconds, poll_interval), resubmit_unknown=resubmit_unknown,
                references=references,
            )
            record = await generate_recorded(
                record, request, client=client, ledger=ledger, options=options, reporter=_reporter(),
                thumbnails=story.wants_thumbnails(),
                policy=SubmissionPolicy(
                    run_id=run_id,
                    finder=TaskListIndex(client, submit_timeout=resolve_credentials(credentials).submit_timeout),
                ),
            )
        finally:  # the call's outcome, success or not, joins the flow run's story
            charge = record.charge_for(run_id)
            await story.finish(RunLine(
                line=line_from_record(row, record, reused=reused), spent=charge.spent,
                at_risk=charge.at_risk, stored=record.images,
            ))
    return GeneratedImages.of(record, reused=False)


def _ledger_location(destination: str) -> str:
    """Where a destination's ledger records are (what the calls' summary names).

    Examples:
        >>> _ledger_location("s3://bucket/out/")
        's3://bucket/out/.seedream/tasks'
    """
    return f"{destination.rstrip('/')}/.seedream/tasks"


@dual_task(
    name="generate-many",
    task_run_name=_named("many"),
    description="Generate a list of Seedream requests in one call: batched, bounded, resumable.",
    cache_policy=NO_CACHE,
    persist_result=False,
)
async def generate_many(
    requests: Any,
    destination: str,
    credentials: SeedreamCredentials | None = None,
    max_concurrency: Annotated[int, Field(ge=1, le=MAX_CONCURRENCY_BOUND)] = MAX_CONCURRENCY,
    concurrency_limit_name: str | None = None,
    max_credits: Annotated[float, Field(gt=0)] | None = None,
    max_wait_seconds: Annotated[float, Field(gt=0)] = MAX_WAIT_SECONDS,
    poll_interval: Annotated[float, Field(gt=0)] = POLL_INTERVAL_SECONDS,
    retries: Annotated[int, Field(ge=0, le=10)] = RETRIES,
    retry_delay_seconds: Annotated[float, Field(ge=0)] = RETRY_DELAY_SECONDS,
    resubmit_unknown: bool = False,
    wait_for_quota: bool = False,
    storage_options: dict[str, Any] | None = None,
    rows_per_task: Annotated[int, Field(ge=1, le=10_000)] | None = None,
    reference_store: str | None = None,
    reference_storage_options: dict[str, Any] | None = None,
    reference_public_url: str | None = None,
    artifact_key: str | None = None,
) -> list[GeneratedImages]:
    """Generate many requests in one call; returns one result per request, in order.

    The answer to ``generate_images.map(requests)`` over thousands of prompts: ``.map`` costs
    a task run (and an HTTP client) per request, which a Prefect server records one by one.
    ``generate_many`` runs the requests with the dataset flow's machinery: batches of
    consecutive requests as task runs (about 50 of them whatever the size, children of this
    one), at most ``max_concurrency`` generations in flight, retries of what is worth
    retrying, the write-ahead ledger in ``destination`` (a re-run skips what is stored and
    re-attaches to tasks in flight), the budget, and a stop at the first answer that concerns
    the whole account. ``destination`` also gets ``manifest.jsonl``. A request that fails
    does not raise: its result says why (``result.ok``, ``result.error``).

    Requests without an id get one derived from their content, so the same list run again
    resumes instead of paying again (see :mod:`prefect_seedream.engine.sources`).

    Args:
        requests: A list of :class:`GenerationRequest` or of dicts (the dataset's columns:
            prompt, id, model, size, n, ...), or a pandas or polars DataFrame.
        destination: Folder or fsspec URL for the images, the ledger and the manifest.
        credentials: A ``SeedreamCredentials`` block; defaults to the environment.
        max_concurrency: Most generations in flight at once.
        concurrency_limit_name: A Prefect global concurrency limit shared by all runs.
        max_credits: No submission may take the call's credits past this.
        max_wait_seconds: Wall-clock cap of each wait.
        poll_interval: Shortest pause between polls.
        retries: Retries of a request for failures worth retrying.
        retry_delay_seconds: First retry delay (doubles each retry, with jitter).
        resubmit_unknown: Submit again requests whose earlier submission's outcome is unknown.
        wait_for_quota: Pause (instead of stopping) until a daily quota renews.
        storage_options: fsspec options of ``destination``.
        rows_per_task: Requests per task run (default: about 50 task runs).
        reference_store: An fsspec prefix (``s3://bucket/refs``) where reference images named
            by local paths in ``image_urls`` are uploaded once and sent as presigned URLs.
        reference_storage_options: fsspec options of ``reference_store``.
        reference_public_url: The public base URL of ``reference_store``, if it has one.
        artifact_key: Prefix of the call's artifact keys (default:
            ``seedream-<last part of destination>``, ``-2`` for a second call of the flow
            run with the same prefix; see :mod:`prefect_seedream.story`).

    The call shows what the dataset flow shows, in four artifacts: ``<prefix>-progress``,
    ``<prefix>-summary`` (counts, images, credits, the manifest), ``<prefix>-rows`` (the
    rows, failures first, with the API's code and message and what to run next) and
    ``<prefix>-gallery``. Its batches write none: each batch's state message counts its rows.
    It ends with the event ``seedream.dataset.completed`` (every request succeeded) or
    ``seedream.dataset.failed``, with the counts, as the dataset flow does.

    Returns:
        One :class:`GeneratedImages` per request, in the order given.

    Examples:
        ```python
        import asyncio

        from prefect import flow
        from prefect_seedream import GenerationRequest, generate_many

        @flow
        async def posters(prompts: list[str]) -> list[str]:  # or a sync flow, without await
            results = await generate_many([GenerationRequest(prompt=p) for p in prompts], "output")
            return [image.uri for result in results if result.ok for image in result.images]

        print(asyncio.run(posters(["A red fox", "An owl"])))
        ```
    """
    options = RunOptions.from_parameters(locals())
    resolve_credentials(credentials)  # fail now, not per request, when there is no key
    output = Output.open(destination, options.storage_options)
    dataset = await asyncio.to_thread(output.spill, requests)
    limit = await read_concurrency_limit(concurrency_limit_name) if concurrency_limit_name else None
    if "://" in destination and storage_options:  # the requests were written into the destination
        options = options.model_copy(update={"dataset_storage_options": storage_options})
    scan = await asyncio.to_thread(
        scan_dataset, dataset, options.row_defaults(), options.dataset_storage_options,
        logger=get_run_logger(),
    )
    results: list[GeneratedImages | None] = [None] * scan.rows

    def collect(item: RunLine) -> None:
        results[item.line.row_number - 1] = GeneratedImages.of_line(item)

    summary, tables = DatasetRunSummary(), RunTables()
    keys = claim_story_keys(artifact_key or destination_prefix(destination))
    async with shared_clients():
        gallery = await run_in_output(
            dataset, output, options, credentials, total_rows=scan.rows,
            run_id=str(current_task_run.id), summary=summary, concurrency_limit=limit,
            on_row=collect, tables=tables, keys=keys, estimated_credits=scan.estimated_credits,
        )
    await publish_run_story(summary, tables, gallery, output.store, keys)
    emit_run_end_event(summary, dataset=dataset, output=destination)
    get_run_logger().info("%s", summary.message())
    return [result for result in results if result is not None]
