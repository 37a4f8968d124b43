"""A durable record of every remote task, so that nothing is paid for twice.

For each row (or idempotency key), request and API, one small JSON file under
``<destination>/.seedream/tasks/`` says where the row's remote task stands. The record owns
its transitions: every change of state is one method of :class:`LedgerRecord`, with the rule
of what may follow what, and the charge and the manifest status of a row are derived from the
record, never kept beside it. Records are keyed by the API's address too, so that a result of
the simulator is never taken for a result of the real API (or of another account's endpoint).

The write-ahead rule: **before** a submission is sent, the record is saved (fsync'd) in state
``submitting``, with the request's hash, the credits the API will pre-charge and the
submission's ``Idempotency-Key``. Whatever instant the process dies, a later run finds one of:

* ``submitting``: the submission may have reached the API and no answer was recorded. The row
  is ``outcome_unknown``: a later run looks its task up in the API's task list and re-attaches
  to it when found (:mod:`prefect_seedream.engine.reconcile`); it is submitted again only when the
  user asks (``resubmit_unknown=True``), and then with **the same key**, which the API answers
  with the task the lost submission created, if it created one.
* ``submitted``: the task id is known; the row re-attaches to it (within the results' 24 h).
* ``stored``: the images are stored; nothing is done.

A submission that the API clearly refused (a 4xx or 429 answer, or a connection never opened)
clears its intent, and the next submission gets a new key. A 5xx answer also clears it (the
row may be retried), but keeps the key: a gateway may answer 5xx after the task was created,
and the same key makes the next attempt a replay of that task, not a second charge.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum

from pydantic import BaseModel, Field

from prefect_seedream.api.client import new_idempotency_key
from prefect_seedream.api.models import (
    GenerationRequest,
    GenerationTask,
    TaskErrorKind,
    classify_task_error,
    is_local_reference,
)
from prefect_seedream.engine.defaults import REATTACH_WINDOW_SECONDS
from prefect_seedream.engine.guidance import OUTCOME_UNKNOWN_GUIDANCE, recover_hint
from prefect_seedream.engine.manifest import ManifestError, RowStatus
from prefect_seedream.engine.references import reference_fingerprint
from prefect_seedream.engine.storage import PRIVATE_DIR, ImageStore, StoredImage, safe_stem

LEDGER_DIR = f"{PRIVATE_DIR}/tasks"


class LedgerState(str, Enum):
    """Where a row's remote task stands."""

    NEW = "new"  # nothing remote exists for this row
    SUBMITTING = "submitting"  # a submission is being (or was) sent; no answer recorded
    SUBMITTED = "submitted"  # task id known, not yet seen terminal (in flight)
    COMPLETED = "completed"  # task completed, images not stored yet
    STORED = "stored"  # images stored: nothing left to do
    FAILED = "failed"  # task failed (see error)
    OUTCOME_UNKNOWN = "outcome_unknown"  # a submission may or may not have created a task


class NextStep(str, Enum):
    """What a run does with a row, given its record (:meth:`LedgerRecord.next_step`)."""

    REUSE = "reuse"  # stored by an earlier run: no API call
    REATTACH = "reattach"  # wait for the recorded task: nothing new is paid
    SUBMIT = "submit"  # submit (anew)
    REFUSE_UNKNOWN = "refuse_unknown"  # an earlier submission may have been billed
    REPEAT_FAILURE = "repeat_failure"  # failed through the request's own fault: free, final


class LedgerTransitionError(RuntimeError):
    """A transition that the record's state does not allow (a bug, never a user error)."""


@dataclass(frozen=True)
class Charge:
    """What a row's latest submission costs.

    Attributes:
        spent: Credits charged for sure (a completed task's final charge).
        at_risk: Credits reserved that may be charged: a task in flight, or a submission
            whose outcome is unknown.
    """

    spent: float = 0.0
    at_risk: float = 0.0

    @property
    def total(self) -> float:
        """Everything that counts against a budget."""
        return self.spent + self.at_risk


class LedgerRecord(BaseModel):
    """What is known of one row's remote task; its methods are the only way to change it.

    Examples:
        >>> record = LedgerRecord(key="k", row_id="r", request_hash="h")
        >>> record.begin_submission(reserved_credits=2.0, now=100.0, run_id="run-1")
        >>> record.state.value, record.charge().at_risk, record.idempotency_key.startswith("seedream-")
        ('submitting', 2.0, True)
        >>> first_key = record.idempotency_key
        >>> record.submission_refused("internal_server_error", "bad gateway", key_settled=False)
        >>> record.begin_submission(reserved_credits=2.0)  # a 5xx keeps the key
        >>> record.idempotency_key == first_key
        True
        >>> record.submission_refused("rate_limit_error", "too many requests")
        >>> record.state.value, record.submissions, record.charge().total
        ('new', 0, 0.0)
    """

    key: str
    row_id: str
    request_hash: str
    state: LedgerState = LedgerState.NEW
    task_id: str | None = None
    model: str | None = None
    #: The API the record's tasks belong to (its normalised address).
    api: str | None = None
    #: sha256 of the prompt, to recognise the row's task in the API's task list.
    prompt_sha256: str | None = None
    intent_at: float | None = None
    submitted_at: float | None = None
    finished_at: float | None = None
    #: Submissions that may have created a task: distinct idempotency keys sent (a key sent
    #: again is the same submission; a provably refused one is not counted).
    submissions: int = 0
    #: The latest submission's ``Idempotency-Key``.
    idempotency_key: str | None = None
    #: True while a submission with that key may have created a task nobody knows of: the
    #: next submission sends the same key (a replay of that task, if it exists).
    key_in_doubt: bool = False
    #: The run (the output lock's holder: a sharded run's parent) that made the latest
    #: submission: its charge is that run's.
    run_id: str | None = None
    #: The reference image URLs the latest submission sent for local files (presigned URLs):
    #: sent again with its key, so that a replay has the same body.
    sent_image_urls: list[str] | None = None
    #: Credits the API pre-charges for the latest submission.
    reserved_credits: float | None = None
    #: Credits of the latest task: its final charge once completed, else what it reserved.
    credits: float | None = None
    results: list[str] = Field(default_factory=list)
    images: list[StoredImage] = Field(default_factory=list)
    #: Why the row did not (yet) succeed: the task's error, or the last error of this run.
    error: dict[str, str] | None = None
    #: True when the API refused the submission for the whole account or model (out of
    #: credits, key refused, ...): the row was not submitted, and a later run submits it.
    stopped: bool = False

    # -- questions ------------------------------------------------------------------------

    def failed_by_request(self) -> bool:
        """True when the task failed through the request's own fault (retrying cannot help)."""
        return (
            self.state is LedgerState.FAILED
            and self.error is not None
            and classify_task_error(self.error.get("code", "")) is TaskErrorKind.REQUEST
        )

    def reattachable(self, now: float | None = None) -> bool:
        """True when the recorded task can still be awaited instead of paying again."""
        if self.state not in (LedgerState.SUBMITTED, LedgerState.COMPLETED):
            return False
        return self._within_window(now)

    def _within_window(self, now: float | None) -> bool:
        if self.task_id is None:
            return False
        age = (now or time.time()) - (self.submitted_at or 0)
        return age < REATTACH_WINDOW_SECONDS

    @property
    def outcome_unknown(self) -> bool:
        """True when a submission may have created a task that nobody knows of.

        A record left in ``submitting`` by a process that died is one of these.
        """
        return self.state in (LedgerState.SUBMITTING, LedgerState.OUTCOME_UNKNOWN)

    def next_step(
        self, *, images_present: bool, resubmit_unknown: bool, now: float | None = None
    ) -> NextStep:
        """What a run must do with this row. The rules of "never pay twice", in one place.

        Args:
            images_present: Whether every image the record lists is still in the store.
            resubmit_unknown: Whether the user accepts paying again after an unknown outcome.
            now: The time (for the re-attach window); default: now.
        """
        if self.state is LedgerState.STORED:
            if images_present:
                return NextStep.REUSE
            # Its files went missing: while the task's results are valid, download them
            # again (nothing is paid); after that, the row is generated anew.
            return NextStep.REATTACH if self._within_window(now) else NextStep.SUBMIT
        if self.outcome_unknown:
            return NextStep.SUBMIT if resubmit_unknown else NextStep.REFUSE_UNKNOWN
        if self.failed_by_request():
            return NextStep.REPEAT_FAILURE
        if self.reattachable(now):
            return NextStep.REATTACH
        return NextStep.SUBMIT

    def charge(self) -> Charge:
        """What the latest submission costs, as far as is known.

        The API pre-charges ``n`` images and finally charges the images generated: a
        completed task costs its final charge, a failed one nothing, a task in flight or a
        submission whose outcome is unknown its reservation (it may be charged).
        """
        if self.state in (LedgerState.STORED, LedgerState.COMPLETED):
            return Charge(spent=self.credits or 0.0)
        if self.state is LedgerState.SUBMITTED:
            return Charge(at_risk=self.credits if self.credits is not None else self.reserved_credits or 0.0)
        if self.outcome_unknown:
            return Charge(at_risk=self.reserved_credits or 0.0)
        return Charge()

    def charge_for(self, run_id: str | None) -> Charge:
        """What the row costs the run ``run_id``: its latest submission's charge when that run
        (a sharded run's parent: any attempt of any of its shards) made it, else nothing.

        Examples:
            >>> record = LedgerRecord(key="k", row_id="r", request_hash="h")
            >>> record.begin_submission(reserved_credits=2.0, run_id="run-1")
            >>> record.charge_for("run-1").at_risk, record.charge_for("run-2").at_risk
            (2.0, 0.0)
        """
        return self.charge() if run_id is not None and self.run_id == run_id else Charge()

    def status(self) -> tuple[RowStatus, ManifestError | None]:
        """The manifest status and error this record stands for."""
        error = ManifestError(**self.error) if self.error else None
        if self.state is LedgerState.STORED:
            return "succeeded", None
        if self.outcome_unknown:
            return "outcome_unknown", ManifestError(code="outcome_unknown", message=OUTCOME_UNKNOWN_GUIDANCE)
        if self.state is LedgerState.FAILED:
            return "failed", error or ManifestError(code="failed", message="the task failed")
        if self.state is LedgerState.COMPLETED and error is not None:
            # The task completed but its images could not be stored (a bad or expired
            # download): a re-run within the results' 24 h downloads again, paying nothing.
            return "failed", error
        if self.state in (LedgerState.SUBMITTED, LedgerState.COMPLETED):
            note = f"task {self.task_id} is still in flight; {recover_hint(what='it')}"
            if error is None:
                return "in_flight", ManifestError(code="in_flight", message=note)
            return "in_flight", ManifestError(code=error.code, message=f"{error.message}; {note}")
        if error is not None and self.stopped:  # refused for the whole account: not submitted
            return "skipped", error
        if error is not None:  # a submission refused (4xx, 429/5xx after retries, ...)
            return "failed", error
        return "skipped", ManifestError(
            code="not_started", message="the run stopped before this row was submitted"
        )

    # -- transitions --------------------------------------------------------------------------

    def begin_submission(
        self,
        reserved_credits: float,
        now: float | None = None,
        run_id: str | None = None,
        sent_image_urls: list[str] | None = None,
    ) -> None:
        """The write-ahead intent: a submission is about to be sent (save it before sending).

        Its ``Idempotency-Key`` is the previous one while that one's outcome is in doubt (a
        lost answer, a 5xx), else a new one.
        """
        if self.state is LedgerState.STORED and self.images:
            self.images = []  # stored files went missing: the row is generated again
        if self.idempotency_key is None or not self.key_in_doubt:
            self.idempotency_key = new_idempotency_key()
            self.submissions += 1  # a new key: a submission that may create a task
            self.sent_image_urls = sent_image_urls
        self.key_in_doubt = True
        self.state = LedgerState.SUBMITTING
        self.intent_at = now or time.time()
        self.reserved_credits = reserved_credits
        self.run_id = run_id or self.run_id
        self.task_id, self.credits, self.results, self.error = None, None, [], None
        self.submitted_at = self.finished_at = None
        self.stopped = False

    def submission_refused(
        self, code: str, message: str, *, key_settled: bool = True, stopped: bool = False
    ) -> None:
        """The API (or the network, before sending) refused it: no task is known to exist.

        Args:
            code: The API's error code.
            message: The API's message.
            key_settled: False when the refusal may have come after the task was created (a
                5xx from a gateway): the next submission sends the same key again.
            stopped: The refusal concerns the whole account (or model): the row is skipped,
                not failed, and a later run submits it.
        """
        self._require(LedgerState.SUBMITTING)
        self.state = LedgerState.NEW
        if key_settled:
            self.submissions -= 1  # provably no task: the key is not used again
        self.intent_at = None
        self.key_in_doubt = not key_settled
        self.error = {"code": code, "message": message}
        self.stopped = stopped

    def submission_lost(self) -> None:
        """The submission may have reached the API but no answer came back."""
        self._require(LedgerState.SUBMITTING)
        self.state = LedgerState.OUTCOME_UNKNOWN
        self.error = {"code": "outcome_unknown", "message": OUTCOME_UNKNOWN_GUIDANCE}

    def submitted(self, task: GenerationTask, now: float | None = None) -> None:
        """The API answered with a task: its id is known (save it before waiting)."""
        self._require(LedgerState.SUBMITTING)
        self._attach(task, now or time.time())

    def reconciled(self, task: GenerationTask) -> None:
        """The API's task list shows the task a submission of unknown outcome created."""
        self._require(LedgerState.SUBMITTING, LedgerState.OUTCOME_UNKNOWN)
        self._attach(task, float(task.created) if task.created else (self.intent_at or time.time()))

    def _attach(self, task: GenerationTask, submitted_at: float) -> None:
        self.state = LedgerState.SUBMITTED
        self.task_id = task.id
        self.model = task.model or self.model
        self.submitted_at = submitted_at
        self.key_in_doubt = False
        self.error = None
        self.credits = task.credits if task.credits is not None else self.reserved_credits

    def task_gone(self) -> None:
        """The recorded task is unknown to the API (expired or invalid): nothing to wait for."""
        self._require(LedgerState.SUBMITTED, LedgerState.COMPLETED)
        self.state = LedgerState.NEW
        self.task_id, self.credits, self.results = None, None, []
        self.error = {"code": "resource_not_found", "message": "the recorded task is gone"}

    def task_failed(self, code: str, message: str, now: float | None = None) -> None:
        """The task ended failed (or cancelled)."""
        self._require(LedgerState.SUBMITTED, LedgerState.COMPLETED)
        self.state = LedgerState.FAILED
        self.finished_at = now or time.time()
        self.credits = 0.0
        self.error = {"code": code, "message": message}

    def task_completed(self, task: GenerationTask, now: float | None = None) -> None:
        """The task completed; its result URLs are valid for 24 h."""
        self._require(LedgerState.SUBMITTED, LedgerState.COMPLETED)
        self.state = LedgerState.COMPLETED
        self.finished_at = now or time.time()
        self.results = list(task.image_urls)
        if task.credits is not None:
            self.credits = task.credits
        self.error = None

    def images_lost(self) -> None:
        """A stored row's files are gone; its task's results may be downloaded again."""
        self._require(LedgerState.STORED)
        self.state = LedgerState.COMPLETED
        self.images = []

    def images_stored(self, images: list[StoredImage]) -> None:
        """Every result is in durable storage: the row is done."""
        self._require(LedgerState.COMPLETED)
        self.state = LedgerState.STORED
        self.images = images
        self.error = None

    def note_error(self, code: str, message: str) -> None:
        """Why this run stops working on the row without a change of state (a wait cap, ...)."""
        self.error = {"code": code, "message": message}

    def _require(self, *states: LedgerState) -> None:
        if self.state not in states:
            allowed = " or ".join(state.value for state in states)
            raise LedgerTransitionError(
                f"row {self.row_id}: cannot go from {self.state.value} (needs {allowed})"
            )


def request_hash(request: GenerationRequest) -> str:
    """A stable hash of what a request asks for (a local reference image by its path, size
    and modification time: a changed file is a new request).

    Examples:
        >>> a = request_hash(GenerationRequest(prompt="fox"))
        >>> a == request_hash(GenerationRequest(prompt="fox")), len(a)
        (True, 64)
    """
    body = request.to_api_body()
    if request.local_references:
        body["image_urls"] = [
            reference_fingerprint(url) if is_local_reference(url) else url for url in request.image_urls
        ]
    canonical = json.dumps(body, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def prompt_sha256(prompt: str) -> str:
    """The hash of a prompt by which a row's task is recognised in the API's task list.

    Examples:
        >>> prompt_sha256("a fox")[:12]
        '5ebbe2a2650a'
    """
    return hashlib.sha256(prompt.encode("utf-8", "surrogatepass")).hexdigest()


class TaskLedger:
    """Per-row records of remote tasks, stored beside the images.

    Args:
        store: The destination the images go to; the ledger lives below it.
        api: The API's normalised address (``SeedreamClient.identity``): records are kept
            per API, so that a task or result of one API (the simulator) is never reused
            with another (the real one).

    Examples:
        >>> ledger = TaskLedger(ImageStore("memory://docs/ledger"), api="https://api.evolink.ai")
        >>> record = ledger.record_for("row-1", GenerationRequest(prompt="A red fox"))
        >>> record.state, record.next_step(images_present=False, resubmit_unknown=False)
        (<LedgerState.NEW: 'new'>, <NextStep.SUBMIT: 'submit'>)
        >>> record.begin_submission(reserved_credits=2.0)  # the intent, saved before sending
        >>> _ = ledger.save(record)
        >>> ledger.load(record.key).state  # what a run killed now finds
        <LedgerState.SUBMITTING: 'submitting'>
    """

    def __init__(self, store: ImageStore, api: str) -> None:
        self.store = store
        self.api = api

    def key_for(self, row_id: str, request: GenerationRequest, digest: str | None = None) -> str:
        """The record key of a row, its request and this ledger's API.

        Examples:
            >>> from prefect_seedream.engine.storage import ImageStore
            >>> import tempfile
            >>> store = ImageStore(tempfile.mkdtemp())
            >>> request = GenerationRequest(prompt="a fox")
            >>> real = TaskLedger(store, "https://api.evolink.ai").key_for("r1", request)
            >>> simulated = TaskLedger(store, "http://127.0.0.1:8787").key_for("r1", request)
            >>> real.startswith("r1-"), real == simulated
            (True, False)
        """
        scoped = hashlib.sha256(f"{self.api}\n{digest or request_hash(request)}".encode()).hexdigest()
        return f"{safe_stem(row_id)}-{scoped[:16]}"

    def _relative(self, key: str) -> str:
        return f"{LEDGER_DIR}/{key}.json"

    def load(self, key: str) -> LedgerRecord | None:
        """The record for a key, or None when the row was never submitted."""
        text = self.store.read_text(self._relative(key))
        return LedgerRecord.model_validate_json(text) if text else None

    def record_for(self, row_id: str, request: GenerationRequest) -> LedgerRecord:
        """The row's record, or a new one (not saved) when there is none."""
        digest = request_hash(request)
        key = self.key_for(row_id, request, digest)
        return self.load(key) or LedgerRecord(
            key=key, row_id=row_id, request_hash=digest, model=request.model, api=self.api,
            prompt_sha256=prompt_sha256(request.prompt),
        )

    async def arecord_for(self, row_id: str, request: GenerationRequest) -> LedgerRecord:
        """:meth:`record_for` without stalling the event loop on a remote store."""
        return await self.store.call(self.record_for, row_id, request)

    def save(self, record: LedgerRecord) -> LedgerRecord:
        """Write a record durably (fsync and atomic rename on local disks).

        An intent is also made to survive a power cut (its folder is fsynced after the
        rename): a lost intent is the one loss that could pay twice. Losing a later write
        leaves the intent, which is safe.
        """
        self.store.write_text(
            self._relative(record.key), record.model_dump_json(),
            sync_folder=record.state is LedgerState.SUBMITTING,
        )
        return record

    async def asave(self, record: LedgerRecord) -> LedgerRecord:
        """:meth:`save` in a worker thread, so an fsync never stalls the event loop."""
        return await asyncio.to_thread(self.save, record)

    def records(self) -> Iterator[LedgerRecord]:
        """Every record in the ledger (for recovery)."""
        for path in self.store.list(LEDGER_DIR):
            if path.endswith(".json"):
                text = self.store.fs.cat_file(path).decode("utf-8")
                yield LedgerRecord.model_validate_json(text)
