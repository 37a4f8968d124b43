"""The steps of one generation as plain async functions: submit, wait, store.

The four public tasks (:mod:`prefect_seedream.tasks`) and the dataset flow's rows are built on
these same functions. They know no Prefect task: a caller decides how a step is observed
(a :class:`StepReporter` says which log lines and events it emits), so a dataset of 10,000
rows costs no task run, event or INFO line per step, while a task used on its own logs and
emits everything.

:func:`generate_recorded` runs one attempt of a ledger-backed generation: it follows the
record's :meth:`~prefect_seedream.engine.ledger.LedgerRecord.next_step`, saves the write-ahead intent
(with the submission's ``Idempotency-Key``) before submitting, saves the task id before
waiting, and saves the stored images last. A row whose earlier submission's outcome is unknown
is first looked up in the API's task list (:mod:`prefect_seedream.engine.reconcile`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from prefect_seedream.api.client import PollPolicy, SeedreamClient
from prefect_seedream.api.defaults import (
    FIRST_POLL_FLOOR_SECONDS,
    MAX_IMAGE_BYTES,
    MAX_POLL_INTERVAL_SECONDS,
    MAX_WAIT_SECONDS,
    NOT_FOUND_GRACE_SECONDS,
    POLL_INTERVAL_SECONDS,
)
from prefect_seedream.api.errors import (
    NotFoundError,
    SeedreamAPIError,
    SeedreamConnectionError,
    ServerError,
    SubmissionOutcomeUnknownError,
    TaskFailedError,
)
from prefect_seedream.api.models import GenerationRequest, GenerationTask, TaskStatus
from prefect_seedream.engine.account import SubmissionsPaused, SubmissionsStopped
from prefect_seedream.engine.defaults import RowEvents
from prefect_seedream.engine.guidance import OUTCOME_UNKNOWN_GUIDANCE
from prefect_seedream.engine.ledger import LedgerRecord, LedgerState, NextStep, TaskLedger
from prefect_seedream.engine.listener import NO_LISTENER, GenerationEventKind, RunListener
from prefect_seedream.engine.reconcile import TaskListIndex
from prefect_seedream.engine.references import ReferenceImageError, ReferenceStore, no_store_message
from prefect_seedream.engine.storage import ImageStore, StoredImage, safe_stem


@dataclass(frozen=True)
class WaitOptions:
    """How long and how often to poll a task.

    Attributes:
        max_wait_seconds: Wall-clock cap of the wait.
        poll_interval: Shortest pause between polls (the first comes at the task's estimate).
        max_poll_interval: Longest pause between polls.
    """

    max_wait_seconds: float = MAX_WAIT_SECONDS
    poll_interval: float = POLL_INTERVAL_SECONDS
    max_poll_interval: float = MAX_POLL_INTERVAL_SECONDS

    def policy(self, *, not_found_grace: float | None = None) -> PollPolicy:
        """The client's poll policy for these options."""
        policy = PollPolicy(
            min_interval=self.poll_interval,
            max_interval=max(self.poll_interval, self.max_poll_interval),
            max_wait=self.max_wait_seconds,
        )
        return policy if not_found_grace is None else replace(policy, not_found_grace=not_found_grace)


@dataclass(frozen=True)
class GenerationOptions:
    """Options of a ledger-backed generation (:func:`generate_recorded`).

    Attributes:
        wait: How to wait for the task.
        resubmit_unknown: Submit again after an earlier submission whose outcome is unknown.
        max_bytes: Size cap per image.
        references: Where local reference images are uploaded (None: they are refused).
    """

    wait: WaitOptions = WaitOptions()
    resubmit_unknown: bool = False
    max_bytes: int = MAX_IMAGE_BYTES
    references: ReferenceStore | None = field(default=None, compare=False)


class StepReporter:
    """What the steps of a generation tell the world: log lines and events (through a listener).

    Args:
        logger: Where log lines go (a Prefect run logger, usually).
        level: Level of the step lines (submitted, state changes, stored): INFO for a task
            used on its own, DEBUG for the rows of a dataset run.
        failure_level: Level of the line naming a failed task and the API's message
            (a dataset run logs its failed rows itself, with a cap).
        events: Which ``seedream.generation.*`` events to emit: ``all``, ``failures``
            (a failed task only) or ``none``.
        on_submitted: Called with the request and the API's task when a submission is
            answered (a run learns the model's price from it).
        listener: Receives the ``seedream.generation.*`` events (the Prefect layer's emits
            them as Prefect events; the default drops them).
    """

    def __init__(
        self,
        logger: logging.Logger | logging.LoggerAdapter[Any],
        *,
        level: int = logging.INFO,
        failure_level: int = logging.ERROR,
        events: RowEvents = "all",
        on_submitted: Callable[[GenerationRequest, GenerationTask], None] | None = None,
        listener: RunListener = NO_LISTENER,
    ) -> None:
        self.logger = logger
        self.listener = listener
        self.level = level
        self.failure_level = failure_level
        self.events = events
        self.on_submitted = on_submitted

    def submitted(self, label: str, request: GenerationRequest, task: GenerationTask) -> None:
        """A submission was answered with a task."""
        if self.on_submitted is not None:
            self.on_submitted(request, task)
        if task.replayed:
            self.logger.log(
                self.level,
                "Submitted %s again with the same Idempotency-Key: the API answered remote task "
                "%s, which the earlier submission had created (nothing new charged)", label, task.id,
            )
        else:
            self.logger.log(
                self.level,
                "Submitted %s: remote task %s (%s, n=%d, %s credits reserved)",
                label, task.id, request.model, request.n,
                task.usage.credits_reserved if task.usage else "?",
            )
        if self.events == "all":
            self._tell(
                "submitted", task.id, label=label, model=request.model,
                payload={"n": request.n, "credits_reserved": task.credits},
            )

    def _tell(self, kind: GenerationEventKind, task_id: str, **facts: Any) -> None:
        """Pass an event to the listener; a listener that fails never changes the row (its
        submission may be paid already), it is logged."""
        try:
            self.listener.generation_event(kind, task_id, **facts)
        except Exception:
            self.logger.warning("the %s event of task %s could not be sent", kind, task_id, exc_info=True)

    def reattached(self, label: str, task_id: str) -> None:
        """A run waits for a task an earlier run submitted."""
        self.logger.log(self.level, "%s: re-attaching to remote task %s", label, task_id)

    def reconciled(self, label: str, task_id: str) -> None:
        """The task of a submission whose answer was lost was found in the API's task list."""
        self.logger.log(
            max(self.level, logging.INFO),
            "%s: the earlier submission's answer was lost, but the API's task list shows its "
            "task %s: re-attaching (nothing is paid again)", label, task_id,
        )

    def status_changed(self, label: str, task_id: str, status: TaskStatus) -> None:
        """A poll saw a new status."""
        if not status.is_known:
            self.logger.warning(
                "%s: remote task %s reports the status %r, which the API does not document; "
                "waiting on until a known final status (or the wait's cap)", label, task_id, status.value,
            )
            return
        self.logger.log(self.level, "%s: remote task %s is %s", label, task_id, status.value)

    def failed(self, label: str, task: GenerationTask, code: str, message: str) -> None:
        """The task ended failed; the API's own message is logged."""
        self.logger.log(
            self.failure_level, "%s: remote task %s failed with %s: %s", label, task.id, code, message
        )
        if self.events in ("all", "failures"):
            self._tell(
                "failed", task.id, label=label, model=task.model,
                payload={"code": code, "message": message},
            )

    def completed(self, label: str, task: GenerationTask) -> None:
        """The task completed."""
        if self.events == "all":
            self._tell(
                "completed", task.id, label=label, model=task.model,
                payload={"images": len(task.image_urls), "credits": task.credits},
            )

    def stored(self, label: str, count: int, destination: str) -> None:
        """The task's images are stored."""
        self.logger.log(self.level, "%s: stored %d image(s) in %s", label, count, destination)


async def submit_request(
    client: SeedreamClient,
    request: GenerationRequest,
    reporter: StepReporter,
    label: str,
    *,
    idempotency_key: str | None = None,
) -> GenerationTask:
    """Submit one generation; every retry of it carries the same ``Idempotency-Key``."""
    task = await client.submit(request, idempotency_key=idempotency_key)
    reporter.submitted(label, request, task)
    return task


async def wait_for_task(
    client: SeedreamClient,
    task_id: str,
    reporter: StepReporter,
    label: str,
    *,
    options: WaitOptions = WaitOptions(),
    estimated_time: float | None = None,
    not_found_grace: float | None = None,
) -> GenerationTask:
    """Poll a task until it is terminal; log each state change once; raise if it failed.

    Raises:
        TaskFailedError: the task failed (``kind`` says whose fault), after it was reported.
        WaitTimeoutError: the cap ran out; the task may still finish.
        NotFoundError: the API does not know the task (after ``not_found_grace`` seconds).
    """
    seen: list[TaskStatus] = []

    def on_progress(update: GenerationTask) -> None:
        if update.status not in seen or (update.status.is_known and seen[-1] is not update.status):
            seen.append(update.status)  # each undocumented status is reported once
            reporter.status_changed(label, task_id, update.status)

    done = await client.wait(
        task_id,
        max_wait=options.max_wait_seconds,
        estimated_time=estimated_time,
        on_progress=on_progress,
        poll=options.policy(not_found_grace=not_found_grace),
    )
    if done.status is not TaskStatus.COMPLETED:
        code = done.error.code if done.error else done.status.value
        message = done.error.message if done.error else ""
        reporter.failed(label, done, code, message)
        done.raise_for_failure()
    reporter.completed(label, done)
    return done


async def store_task_images(
    client: SeedreamClient,
    store: ImageStore,
    task: GenerationTask,
    stem: str,
    *,
    max_bytes: int = MAX_IMAGE_BYTES,
    thumbnails: bool = True,
) -> list[StoredImage]:
    """Download, verify and store every result of a completed task as ``<stem>-<i>.<ext>``."""
    return await store.save_results(
        client, task.image_urls, safe_stem(stem), max_bytes=max_bytes, thumbnails=thumbnails
    )


def next_step_of(record: LedgerRecord, store: ImageStore, *, resubmit_unknown: bool) -> NextStep:
    """What to do with a row now, checking that a stored row's files are still there."""
    images_present = record.state is LedgerState.STORED and all(
        store.exists(image.uri) for image in record.images
    )
    return record.next_step(images_present=images_present, resubmit_unknown=resubmit_unknown)


class SubmissionPolicy:
    """What a caller of :func:`generate_recorded` decides about its submissions.

    The default submits freely, looks nothing up and charges no run; a caller overrides what
    it needs (the dataset runner checks its account gate and budget, and frees the row's
    concurrency slot once the task is terminal).

    Attributes:
        run_id: The run making the submission (its charge is that run's).
        finder: Looks up, in the API's task list, the task of an earlier submission whose
            outcome is unknown (found: re-attached, nothing is submitted).

    Examples:
        >>> class NoMoreThanOne(SubmissionPolicy):
        ...     sent = 0
        ...     async def before_submit(self) -> None:
        ...         if self.sent:
        ...             raise RuntimeError("one submission only")
        ...         self.sent += 1
        >>> policy = NoMoreThanOne(run_id="run-1")
        >>> policy.run_id, policy.finder
        ('run-1', None)
    """

    def __init__(self, *, run_id: str | None = None, finder: TaskListIndex | None = None) -> None:
        self.run_id = run_id
        self.finder = finder

    async def before_submit(self) -> None:
        """Awaited before a submission is prepared (nothing is written yet); raises to stop
        the attempt."""

    def before_send(self) -> None:
        """Called once the intent is saved, right before the request leaves; raises
        :class:`SubmissionsStopped` or :class:`SubmissionsPaused` to withdraw the submission
        (an account-wide answer may have come while the intent was written). The record
        then says it was not sent."""

    async def on_terminal(self) -> None:
        """Awaited once the remote task is seen terminal, before its images are downloaded:
        the generation is no longer in flight at the API, so its concurrency slot may go to
        the next row while this one downloads."""


#: The policy of a caller that decides nothing.
SUBMIT_FREELY = SubmissionPolicy()


async def generate_recorded(
    record: LedgerRecord,
    request: GenerationRequest | None,
    *,
    client: SeedreamClient,
    ledger: TaskLedger,
    options: GenerationOptions,
    reporter: StepReporter,
    thumbnails: bool = True,
    policy: SubmissionPolicy = SUBMIT_FREELY,
) -> LedgerRecord:
    """One attempt at a row: reuse, re-attach or submit, then wait and store.

    Every change of the record is saved before the step that depends on it: the intent
    before the submission is sent, the task id before waiting, the images last.

    Args:
        record: The row's ledger record (changed in place, and saved).
        request: The row's request; None to collect a recorded task only, never submitting
            (the recovery flow): a gone task then raises ``NotFoundError``.
        client: The API client.
        ledger: The ledger the record belongs to (its store receives the images).
        options: Wait, resubmission and size options.
        reporter: Which log lines and events the steps emit.
        thumbnails: Also make gallery thumbnails of the images.
        policy: The caller's checks before submitting and sending, its lookup of lost
            answers, its run, and what it does once the task is terminal.

    Raises:
        SubmissionOutcomeUnknownError: an earlier or this submission may have been billed.
        TaskFailedError: the task failed (or failed earlier through the request's fault).
        SeedreamError: anything else that stopped the attempt; ``retryable`` says if
            another attempt may help.
    """
    step = next_step_of(record, ledger.store, resubmit_unknown=options.resubmit_unknown)
    if step is NextStep.REUSE:
        return record
    step = await _reconcile_unknown(record, step, ledger, reporter, policy.finder)
    done = None
    if step is NextStep.REATTACH:
        done = await _reattach(record, request, client, ledger, reporter, options)
    if done is None:
        if request is None:
            raise NotFoundError(404, f"{record.row_id}: no task in flight to collect ({record.state.value})")
        await policy.before_submit()
        estimated_time = await _submit_recorded(
            record, request, client, ledger, reporter, options.references, policy
        )
        done = await _wait_recorded(record, client, ledger, reporter, options, estimated_time=estimated_time)
    await policy.on_terminal()
    record.task_completed(done)
    images = await store_task_images(
        client, ledger.store, done, record.row_id, max_bytes=options.max_bytes, thumbnails=thumbnails
    )
    reporter.stored(record.row_id, len(images), ledger.store.destination)
    record.images_stored(images)
    await ledger.asave(record)
    return record


async def _reconcile_unknown(
    record: LedgerRecord, step: NextStep, ledger: TaskLedger, reporter: StepReporter,
    finder: TaskListIndex | None,
) -> NextStep:
    """The step once an unknown outcome was looked up: re-attach to a task found in the
    API's task list; raise for what must not be submitted (an unknown outcome not found, a
    failure the request caused)."""
    label = record.row_id
    if record.outcome_unknown and finder is not None and step in (NextStep.REFUSE_UNKNOWN, NextStep.SUBMIT):
        found = await finder.find(record)
        if found is not None:
            record.reconciled(found)
            await ledger.asave(record)
            reporter.reconciled(label, found.id)
            step = NextStep.REATTACH
    if step is NextStep.REFUSE_UNKNOWN:
        raise SubmissionOutcomeUnknownError(
            f"{label}: {OUTCOME_UNKNOWN_GUIDANCE}",
            idempotency_key=record.idempotency_key,
            looked_up=finder is not None,
        )
    if step is NextStep.REPEAT_FAILURE:
        assert record.error is not None and record.task_id is not None
        raise TaskFailedError(
            record.task_id, record.error["code"], record.error.get("message", ""), "request"
        )
    return step


async def _reattach(
    record: LedgerRecord, request: GenerationRequest | None, client: SeedreamClient,
    ledger: TaskLedger, reporter: StepReporter, options: GenerationOptions,
) -> GenerationTask | None:
    """Wait for the task an earlier attempt or run submitted; None when it is gone (and a
    request may submit it again)."""
    assert record.task_id is not None
    if record.state is LedgerState.STORED:
        record.images_lost()  # its files went missing: fetch the results again
    reporter.reattached(record.row_id, record.task_id)
    # Submitted by an earlier attempt or run: look at once (its estimate has passed or is
    # unknown). A 404 means "gone" only once the task is older than the grace a fresh
    # task gets: a run killed right after a submission and run again at once must not
    # take "not visible yet" for "gone" and pay again.
    age = time.time() - (record.submitted_at or 0.0)
    try:
        return await _wait_recorded(
            record, client, ledger, reporter, options,
            estimated_time=FIRST_POLL_FLOOR_SECONDS,
            not_found_grace=max(0.0, NOT_FOUND_GRACE_SECONDS - age),
        )
    except NotFoundError:
        record.task_gone()
        await ledger.asave(record)
        if request is None:
            raise
        return None


async def _submit_recorded(
    record: LedgerRecord,
    request: GenerationRequest,
    client: SeedreamClient,
    ledger: TaskLedger,
    reporter: StepReporter,
    references: ReferenceStore | None,
    policy: SubmissionPolicy,
) -> float | None:
    """Write the intent, submit, record the answer; returns the task's estimated time."""
    sent = await _api_request(record, request, references)
    # A key already in doubt (an earlier submission's 5xx or lost answer) stays in doubt
    # whatever this submission hears: its task may exist.
    key_reused = record.key_in_doubt and record.idempotency_key is not None
    record.begin_submission(
        request.reserved_credits, run_id=policy.run_id,
        sent_image_urls=list(sent.image_urls) if request.local_references else None,
    )
    if record.sent_image_urls is not None:  # the key's first body, again: a replay matches it
        sent = sent.model_copy(update={"image_urls": tuple(record.sent_image_urls)})
    await ledger.asave(record)  # durable before a byte is sent
    try:
        policy.before_send()
    except (SubmissionsStopped, SubmissionsPaused) as exc:  # withdrawn: nothing was sent
        stop = exc.stop if isinstance(exc, SubmissionsStopped) else None
        record.submission_refused(
            stop.code if stop else "quota_paused",
            stop.skip_message() if stop else str(exc),
            key_settled=not key_reused, stopped=True,
        )
        await ledger.asave(record)
        raise
    try:
        task = await submit_request(
            client, sent, reporter, record.row_id, idempotency_key=record.idempotency_key
        )
    except SubmissionOutcomeUnknownError:
        record.submission_lost()
        await ledger.asave(record)
        raise
    except SeedreamAPIError as exc:  # answered: no task is known to exist
        record.submission_refused(
            exc.code, exc.detail,
            # a 5xx (this answer or an earlier attempt's) may follow a creation
            key_settled=not (key_reused or exc.submission_in_doubt or isinstance(exc, ServerError)),
            stopped=exc.account_scope is not None,
        )
        await ledger.asave(record)
        raise
    except SeedreamConnectionError as exc:  # this attempt never sent
        record.submission_refused(
            exc.code, str(exc), key_settled=not (key_reused or exc.submission_in_doubt)
        )
        await ledger.asave(record)
        raise
    record.submitted(task)
    await ledger.asave(record)  # durable before waiting: a retry or a re-run re-attaches
    return task.task_info.estimated_time


async def _api_request(
    record: LedgerRecord, request: GenerationRequest, references: ReferenceStore | None
) -> GenerationRequest:
    """The request as sent: local reference images uploaded and named by URLs (a submission
    sent again with its key reuses the URLs it was first sent with)."""
    if not request.local_references:
        return request
    if record.key_in_doubt and record.sent_image_urls is not None:
        return request.model_copy(update={"image_urls": tuple(record.sent_image_urls)})
    if references is None:
        raise ReferenceImageError(no_store_message(request.local_references[0]))
    return await references.resolve(request)


async def _wait_recorded(
    record: LedgerRecord,
    client: SeedreamClient,
    ledger: TaskLedger,
    reporter: StepReporter,
    options: GenerationOptions,
    *,
    estimated_time: float | None = None,
    not_found_grace: float | None = None,
) -> GenerationTask:
    """Wait for the recorded task; a failed task is recorded (and raised)."""
    assert record.task_id is not None
    try:
        return await wait_for_task(
            client, record.task_id, reporter, record.row_id, options=options.wait,
            estimated_time=estimated_time, not_found_grace=not_found_grace,
        )
    except TaskFailedError as exc:
        record.task_failed(exc.code, exc.message)
        await ledger.asave(record)
        raise
