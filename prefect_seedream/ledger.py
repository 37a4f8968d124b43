"""A durable record of every remote task, so that nothing is paid for twice.

For each row (or idempotency key) and request, one small JSON file under
``<destination>/.seedream/tasks/`` holds the remote task id (written **before**
waiting), its state and, once stored, its images. A retried task or a re-run of
a whole flow reads it back: a stored row is not submitted again, a task still
in flight is re-attached to, and only a row never submitted (or whose task
failed on the service's side) is submitted anew.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Iterator
from enum import Enum

from pydantic import BaseModel, Field

from prefect_seedream.api.models import GenerationRequest, TaskErrorKind, classify_task_error
from prefect_seedream.storage import ImageStore, StoredImage, safe_stem

LEDGER_DIR = ".seedream/tasks"
#: Result URLs expire 24 h after generation; re-attach only well within that.
REATTACH_WINDOW_SECONDS = 23 * 3600


class LedgerState(str, Enum):
    """Where a row's remote task stands."""

    NEW = "new"  # never submitted
    SUBMITTED = "submitted"  # task id known, not yet seen terminal (in flight)
    COMPLETED = "completed"  # task completed, images not stored yet
    STORED = "stored"  # images stored: nothing left to do
    FAILED = "failed"  # task failed (see error)
    OUTCOME_UNKNOWN = "outcome_unknown"  # a submission may or may not have created a task


class LedgerRecord(BaseModel):
    """What is known of one row's remote task."""

    key: str
    row_id: str
    request_hash: str
    state: LedgerState
    task_id: str | None = None
    model: str | None = None
    submitted_at: float | None = None
    finished_at: float | None = None
    submissions: int = 0
    credits: float | None = None
    results: list[str] = Field(default_factory=list)
    images: list[StoredImage] = Field(default_factory=list)
    error: dict[str, str] | None = None

    def failed_by_request(self) -> bool:
        """True when the task failed through the request's own fault (retrying cannot help)."""
        return (
            self.state is LedgerState.FAILED
            and self.error is not None
            and classify_task_error(self.error.get("code", "")) is TaskErrorKind.REQUEST
        )

    def reattachable(self, now: float | None = None) -> bool:
        """True when the recorded task can still be awaited instead of paying again."""
        if self.task_id is None or self.state not in (LedgerState.SUBMITTED, LedgerState.COMPLETED):
            return False
        age = (now or time.time()) - (self.submitted_at or 0)
        return age < REATTACH_WINDOW_SECONDS


def request_hash(request: GenerationRequest) -> str:
    """A stable hash of what a request asks for.

    Examples:
        >>> a = request_hash(GenerationRequest(prompt="fox"))
        >>> a == request_hash(GenerationRequest(prompt="fox")), len(a)
        (True, 64)
    """
    canonical = json.dumps(request.to_api_body(), sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


class TaskLedger:
    """Per-row records of remote tasks, stored beside the images.

    Args:
        store: The destination the images go to; the ledger lives below it.

    Examples:
        ```python
        ledger = TaskLedger(ImageStore("output"))
        record = ledger.load(ledger.key_for("row-1", request))
        ```
    """

    def __init__(self, store: ImageStore) -> None:
        self.store = store

    @staticmethod
    def key_for(row_id: str, request: GenerationRequest) -> str:
        """The record key of a row and its request."""
        return f"{safe_stem(row_id)}-{request_hash(request)[:16]}"

    def _relative(self, key: str) -> str:
        return f"{LEDGER_DIR}/{key}.json"

    def load(self, key: str) -> LedgerRecord | None:
        """The record for a key, or None when the row was never submitted."""
        text = self.store.read_text(self._relative(key))
        return LedgerRecord.model_validate_json(text) if text else None

    def save(self, record: LedgerRecord) -> LedgerRecord:
        """Write a record durably (fsync and atomic rename on local disks)."""
        self.store.write_text(self._relative(record.key), record.model_dump_json())
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
