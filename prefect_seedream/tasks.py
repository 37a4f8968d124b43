"""Reusable Prefect tasks: submit a generation, wait for it, store its images.

Retries are Prefect's, with exponential backoff and jitter, and happen only for
errors whose ``retryable`` flag says so (429, 5xx, service-side task failures).
A request's own faults (validation, ``content_policy_violation``) and a
submission whose outcome is unknown are never retried.
"""

from __future__ import annotations

import re
import time
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import State, TaskRun
from prefect.runtime import task_run as current_task_run
from prefect.tasks import Task, exponential_backoff
from pydantic import BaseModel, Field

from prefect_seedream.api.client import DEFAULT_MAX_IMAGE_BYTES, DEFAULT_MAX_WAIT_SECONDS, PollPolicy
from prefect_seedream.api.errors import (
    NotFoundError,
    SeedreamError,
    SubmissionOutcomeUnknownError,
    TaskFailedError,
)
from prefect_seedream.api.models import GenerationRequest, GenerationTask, TaskStatus
from prefect_seedream.clients import client_for
from prefect_seedream.credentials import SeedreamCredentials
from prefect_seedream.events import emit_generation_event
from prefect_seedream.ledger import LedgerRecord, LedgerState, TaskLedger, request_hash
from prefect_seedream.storage import ImageStore, StoredImage, safe_stem


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
        'a-lighthouse-at-dawn-oil-painting'
    """
    words = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return words[:length].rstrip("-") or "prompt"


def _run_label() -> str:
    params = current_task_run.parameters
    label = params.get("label")
    if label:
        return str(label)[:60]
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


@task(
    name="submit-generation",
    task_run_name=_named("submit"),
    retries=1,
    retry_delay_seconds=exponential_backoff(backoff_factor=2),
    retry_jitter_factor=0.5,
    retry_condition_fn=is_retryable_failure,
    cache_policy=NO_CACHE,
)
async def submit_generation(
    request: GenerationRequest,
    credentials: SeedreamCredentials | None = None,
    label: str | None = None,
) -> GenerationTask:
    """Submit one generation and return the remote task (status ``pending``).

    The remote task id is logged at once. Retried only when the API answered
    429/5xx; a submission whose outcome is unknown raises
    ``SubmissionOutcomeUnknownError`` and is never resubmitted.

    Args:
        request: The validated request.
        credentials: A ``SeedreamCredentials`` block; defaults to the environment.
        label: A readable name for logs, events and the task run (a row id).

    Returns:
        The task as the API returned it.

    Examples:
        ```python
        from prefect import flow
        from prefect_seedream import GenerationRequest, submit_generation

        @flow
        async def one():
            task = await submit_generation(GenerationRequest(prompt="A red fox", size="2K"))
            return task.id
        ```
    """
    logger = get_run_logger()
    remote = await client_for(credentials).submit(request)
    logger.info(
        "Submitted %s: remote task %s (%s, n=%d, %s credits reserved)",
        label or slug(request.prompt),
        remote.id,
        request.model,
        request.n,
        remote.usage.credits_reserved if remote.usage else "?",
    )
    emit_generation_event(
        "submitted",
        remote.id,
        label=label,
        model=request.model,
        payload={"n": request.n, "credits_reserved": remote.credits},
    )
    return remote


@task(
    name="wait-for-generation",
    task_run_name=_named("wait"),
    retries=2,
    retry_delay_seconds=exponential_backoff(backoff_factor=2),
    retry_jitter_factor=0.5,
    retry_condition_fn=is_retryable_poll_failure,
    cache_policy=NO_CACHE,
)
async def wait_for_generation(
    task_id: str,
    credentials: SeedreamCredentials | None = None,
    max_wait_seconds: float = DEFAULT_MAX_WAIT_SECONDS,
    estimated_time: float | None = None,
    poll_interval: float = 3.0,
    max_poll_interval: float = 15.0,
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
        done = await wait_for_generation(task.id, max_wait_seconds=600)
        print(done.results)
        ```
    """
    logger = get_run_logger()
    name = label or task_id
    seen: dict[str, TaskStatus] = {}

    def on_progress(update: GenerationTask) -> None:
        if seen.get("status") != update.status:
            seen["status"] = update.status
            logger.info("%s: remote task %s is %s", name, task_id, update.status.value)
        else:
            logger.debug("%s: %s at %d%%", name, task_id, update.progress)

    policy = PollPolicy(
        min_interval=poll_interval, max_interval=max(poll_interval, max_poll_interval)
    )
    done = await client_for(credentials).wait(
        task_id,
        max_wait=max_wait_seconds,
        estimated_time=estimated_time,
        on_progress=on_progress,
        poll=policy,
    )
    if done.status is not TaskStatus.COMPLETED:
        error = done.error
        code = error.code if error else done.status.value
        message = error.message if error else ""
        logger.error("%s: remote task %s failed with %s: %s", name, task_id, code, message)
        emit_generation_event(
            "failed", task_id, label=label, model=done.model, payload={"code": code, "message": message}
        )
        done.raise_for_failure()
    emit_generation_event(
        "completed",
        task_id,
        label=label,
        model=done.model,
        payload={"images": len(done.results), "credits": done.credits},
    )
    return done


@task(
    name="store-images",
    task_run_name=_named("store"),
    retries=2,
    retry_delay_seconds=exponential_backoff(backoff_factor=1),
    retry_jitter_factor=0.5,
    retry_condition_fn=is_retryable_failure,
    cache_policy=NO_CACHE,
)
async def store_images(
    task: GenerationTask,
    destination: str,
    credentials: SeedreamCredentials | None = None,
    name: str | None = None,
    storage_options: dict[str, Any] | None = None,
    max_bytes: int = DEFAULT_MAX_IMAGE_BYTES,
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
        images = await store_images(done, "s3://my-bucket/renders", name="row-7")
        print([image.uri for image in images])
        ```
    """
    store = ImageStore(destination, storage_options)
    images = await store.save_results(
        client_for(credentials), task.results, safe_stem(name or task.id), max_bytes=max_bytes
    )
    get_run_logger().info(
        "%s: stored %d image(s) in %s", label or task.id, len(images), store.destination
    )
    return images


class GeneratedImages(BaseModel):
    """The outcome of :func:`generate_images`.

    Attributes:
        row_id: The idempotency key's row id.
        task_id: The remote task that produced the images.
        images: The stored images.
        credits: Credits charged (or reserved, when the final charge is unknown).
        submissions: Submissions made for this row so far (across retries and runs).
        reused: True when the images were stored by an earlier run (nothing was paid now).
    """

    row_id: str
    task_id: str | None
    images: list[StoredImage] = Field(default_factory=list)
    credits: float | None = None
    submissions: int = 0
    reused: bool = False


@task(
    name="generate-images",
    task_run_name=_named("generate"),
    retries=2,
    retry_delay_seconds=exponential_backoff(backoff_factor=10),
    retry_jitter_factor=0.5,
    retry_condition_fn=is_retryable_failure,
    cache_policy=NO_CACHE,
)
async def generate_images(
    request: GenerationRequest,
    destination: str,
    credentials: SeedreamCredentials | None = None,
    label: str | None = None,
    max_wait_seconds: float = DEFAULT_MAX_WAIT_SECONDS,
    poll_interval: float = 3.0,
    storage_options: dict[str, Any] | None = None,
    resubmit_unknown: bool = False,
) -> GeneratedImages:
    """Submit, wait and store, resuming from the ledger instead of paying twice.

    The remote task id is written to ``<destination>/.seedream/tasks/`` before
    waiting. Run again (a Prefect retry or a re-run of the flow), this task
    returns the stored images without any API call, re-attaches to a task still
    in flight, and submits anew only when there is no usable earlier task (never
    submitted, failed on the service's side, or older than the results' life).

    Args:
        request: The validated request.
        destination: Folder or fsspec URL for the images and the ledger.
        credentials: A ``SeedreamCredentials`` block; defaults to the environment.
        label: The row id: the idempotency key with the request, and file-name stem.
        max_wait_seconds: Wall-clock cap of the wait.
        poll_interval: Shortest pause between polls.
        storage_options: fsspec options for ``destination``.
        resubmit_unknown: Submit again after an earlier submission whose outcome
            is unknown (it may have been billed). Off by default.

    Returns:
        The stored images, task id, credits and submission count.

    Examples:
        ```python
        from prefect import flow
        from prefect_seedream import GenerationRequest, generate_images

        @flow
        async def poster():
            result = await generate_images(
                GenerationRequest(prompt="A poster of a red fox", size="2K"),
                destination="output/posters",
                label="fox-poster",
            )
            return [image.uri for image in result.images]
        ```
    """
    logger = get_run_logger()
    digest = request_hash(request)
    row_id = label or digest[:16]
    store = ImageStore(destination, storage_options)
    ledger = TaskLedger(store)
    key = ledger.key_for(row_id, request)
    record = ledger.load(key) or LedgerRecord(
        key=key,
        row_id=row_id,
        request_hash=digest,
        state=LedgerState.NEW,
        model=request.model,
    )

    if record.state is LedgerState.STORED and all(store.exists(i.uri) for i in record.images):
        logger.info("%s: already stored by an earlier run (task %s)", row_id, record.task_id)
        return _outcome(record, reused=True)
    if record.state is LedgerState.OUTCOME_UNKNOWN and not resubmit_unknown:
        raise SubmissionOutcomeUnknownError(
            f"{row_id}: an earlier submission's outcome is unknown (it may have been billed); "
            "not resubmitted. Check the Evolink dashboard, or re-run with resubmit_unknown=True"
        )

    if record.failed_by_request():
        assert record.error is not None and record.task_id is not None
        code, message = record.error["code"], record.error.get("message", "")
        logger.error("%s: failed earlier with %s (%s); change the request to try again", row_id, code, message)
        raise TaskFailedError(record.task_id, code, message, "request")

    estimated = await _attach_or_submit(record, request, credentials, ledger)
    await finish_recorded_task(
        record,
        ledger,
        destination,
        credentials,
        max_wait_seconds=max_wait_seconds,
        poll_interval=poll_interval,
        estimated_time=estimated,
        storage_options=storage_options,
    )
    return _outcome(record, reused=False)


async def _attach_or_submit(
    record: LedgerRecord,
    request: GenerationRequest,
    credentials: SeedreamCredentials | None,
    ledger: TaskLedger,
) -> float | None:
    """Keep the recorded task if it is usable, else submit; the task id is saved at once.

    Returns:
        The new task's estimated time, when one was submitted.
    """
    logger = get_run_logger()
    if record.reattachable():
        assert record.task_id is not None
        try:
            await client_for(credentials).get_task(record.task_id)
            logger.info("%s: re-attaching to remote task %s", record.row_id, record.task_id)
            return None
        except NotFoundError:
            logger.warning(
                "%s: recorded task %s is gone; submitting again", record.row_id, record.task_id
            )
    try:
        submitted = await submit_generation(request, credentials, label=record.row_id)
    except SubmissionOutcomeUnknownError:
        record.state, record.submitted_at = LedgerState.OUTCOME_UNKNOWN, time.time()
        record.submissions += 1
        record.error = {"code": "outcome_unknown", "message": "submission outcome unknown"}
        await ledger.asave(record)
        raise
    record.task_id, record.state = submitted.id, LedgerState.SUBMITTED
    record.submitted_at, record.submissions = time.time(), record.submissions + 1
    record.credits, record.error, record.results = submitted.credits, None, []
    await ledger.asave(record)  # persisted before waiting: a retry or re-run re-attaches
    return submitted.task_info.estimated_time


async def finish_recorded_task(
    record: LedgerRecord,
    ledger: TaskLedger,
    destination: str,
    credentials: SeedreamCredentials | None,
    *,
    max_wait_seconds: float = DEFAULT_MAX_WAIT_SECONDS,
    poll_interval: float = 3.0,
    estimated_time: float | None = None,
    storage_options: dict[str, Any] | None = None,
) -> LedgerRecord:
    """Wait for a recorded task and store its images, saving each step in the ledger.

    Used by :func:`generate_images` and by the recovery flow (which never submits).

    Raises:
        TaskFailedError: the task failed (recorded as such).
        WaitTimeoutError: the cap ran out (the record stays in flight).
    """
    assert record.task_id is not None
    try:
        done = await wait_for_generation(
            record.task_id,
            credentials,
            max_wait_seconds=max_wait_seconds,
            estimated_time=estimated_time,
            poll_interval=poll_interval,
            label=record.row_id,
        )
    except TaskFailedError as exc:
        record.state, record.finished_at = LedgerState.FAILED, time.time()
        record.error = {"code": exc.code, "message": exc.message}
        await ledger.asave(record)
        raise
    record.state, record.finished_at = LedgerState.COMPLETED, time.time()
    record.results, record.credits = list(done.results), done.credits
    await ledger.asave(record)
    record.images = await store_images(
        done,
        destination,
        credentials,
        name=record.row_id,
        storage_options=storage_options,
        label=record.row_id,
    )
    record.state = LedgerState.STORED
    await ledger.asave(record)
    return record


def _outcome(record: LedgerRecord, *, reused: bool) -> GeneratedImages:
    return GeneratedImages(
        row_id=record.row_id,
        task_id=record.task_id,
        images=record.images,
        credits=record.credits,
        submissions=record.submissions,
        reused=reused,
    )
