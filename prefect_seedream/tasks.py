"""Reusable Prefect tasks: submit a generation, wait for it, store its images.

Each task is one Prefect task run whose work is a plain async call of
:mod:`prefect_seedream.generation`, the functions the dataset flow's rows run too.
:func:`generate_images` does all three steps in **one** task run, resuming from the ledger.

Retries are Prefect's, with exponential backoff and jitter, and happen only for
errors whose ``retryable`` flag says so (429, 5xx, service-side task failures).
A request's own faults (validation, ``content_policy_violation``) and a
submission whose outcome is unknown are never retried.
"""

from __future__ import annotations

import re
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import State, TaskRun
from prefect.runtime import task_run as current_task_run
from prefect.tasks import Task, exponential_backoff
from pydantic import BaseModel, Field

from prefect_seedream.api.errors import (
    SeedreamError,
    SubmissionOutcomeUnknownError,
    TaskFailedError,
)
from prefect_seedream.api.models import GenerationRequest, GenerationTask
from prefect_seedream.clients import client_for
from prefect_seedream.credentials import SeedreamCredentials
from prefect_seedream.defaults import (
    MAX_IMAGE_BYTES,
    MAX_POLL_INTERVAL_SECONDS,
    MAX_WAIT_SECONDS,
    POLL_INTERVAL_SECONDS,
    RETRIES,
    RETRY_DELAY_SECONDS,
    RETRY_JITTER_FACTOR,
)
from prefect_seedream.generation import (
    GenerationOptions,
    StepReporter,
    WaitOptions,
    generate_recorded,
    next_step_of,
    store_task_images,
    submit_request,
    wait_for_task,
)
from prefect_seedream.ledger import LedgerRecord, NextStep, TaskLedger, request_hash
from prefect_seedream.storage import ImageStore, StoredImage


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
    return StepReporter(get_run_logger())


@task(
    **_task_options(
        "submit-generation", "submit", "Submit one Seedream generation; returns the remote task.",
        retries=1, backoff=2, condition=is_retryable_failure,
    )
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
    return await submit_request(client_for(credentials), request, _reporter(), label or slug(request.prompt))


@task(
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
        done = await wait_for_generation(task.id, max_wait_seconds=600)
        print(done.results)
        ```
    """
    options = WaitOptions(max_wait_seconds, poll_interval, max_poll_interval)
    return await wait_for_task(
        client_for(credentials), task_id, _reporter(), label or task_id,
        options=options, estimated_time=estimated_time,
    )


@task(
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
        images = await store_images(done, "s3://my-bucket/renders", name="row-7")
        print([image.uri for image in images])
        ```
    """
    store = ImageStore(destination, storage_options)
    images = await store_task_images(
        client_for(credentials), store, task, name or task.id, max_bytes=max_bytes
    )
    _reporter().stored(label or task.id, len(images), store.destination)
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

    @classmethod
    def of(cls, record: LedgerRecord, *, reused: bool) -> GeneratedImages:
        """The outcome a stored record stands for."""
        return cls(
            row_id=record.row_id, task_id=record.task_id, images=record.images,
            credits=record.credits, submissions=record.submissions, reused=reused,
        )


@task(
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
    ledger = TaskLedger(ImageStore(destination, storage_options))
    record = ledger.record_for(label or request_hash(request)[:16], request)
    if next_step_of(record, ledger.store, resubmit_unknown=resubmit_unknown) is NextStep.REUSE:
        get_run_logger().info("%s: already stored by an earlier run (task %s)", record.row_id, record.task_id)
        return GeneratedImages.of(record, reused=True)
    options = GenerationOptions(
        wait=WaitOptions(max_wait_seconds, poll_interval), resubmit_unknown=resubmit_unknown
    )
    record = await generate_recorded(
        record, request, client=client_for(credentials), ledger=ledger, options=options,
        reporter=_reporter(),
    )
    return GeneratedImages.of(record, reused=False)
