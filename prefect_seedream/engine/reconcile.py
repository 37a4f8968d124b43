"""Finding the task a submission of unknown outcome created, in the API's task list.

A submission whose answer was lost (a timeout, a dropped connection, a process killed while
waiting for it) may or may not have created a task. ``GET /v1/tasks`` lists the account's
tasks: a :class:`TaskListIndex` reads it (once per run, page after page, only as far back as
the oldest submission it is asked about) and recognises a row's task by, in order:

1. the submission's ``Idempotency-Key``, when the listed task carries it
   (``idempotency_key`` or ``client_request_id``);
2. otherwise the prompt (compared by sha256), the model, and a creation time within the
   submission's window (from its intent, written before sending, to the submit timeout
   after it), when the listed task carries its prompt, with exactly one such task not
   claimed by another row, that shows no other submission's key, and only when no other row
   of the run's dataset has the same prompt and model (such a row's task, or its submission
   still unanswered, would be indistinguishable from this one's: only the key tells them
   apart).

A task of another pipeline on the same account, with the same prompt and model, created in
the same window, while the list shows prompts but not keys, cannot be told apart from ours
either; that is the one wrong match this rule leaves possible.

The API does not document which request fields its task list shows: when it shows neither,
nothing is matched (never a guess: a wrong match would store another prompt's images as this
row's) and the row stays ``outcome_unknown``; re-running with ``resubmit_unknown`` then sends
the same ``Idempotency-Key``, which the API answers with the task it created, if any.

This module knows no Prefect.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from prefect_seedream.api.client import SeedreamClient
from prefect_seedream.api.defaults import SUBMIT_TIMEOUT_SECONDS
from prefect_seedream.api.errors import SeedreamError
from prefect_seedream.api.models import GenerationTask
from prefect_seedream.engine.ledger import LedgerRecord

logger = logging.getLogger("prefect_seedream.engine.reconcile")

#: Seconds of clock difference allowed between our intent's time and the API's ``created``.
CLOCK_SLACK_SECONDS = 5.0
#: Fields of a listed task that may echo the submission's ``Idempotency-Key``.
KEY_FIELDS = ("idempotency_key", "client_request_id")
#: The newest page is read again for a later lookup at most this often.
HEAD_REFRESH_SECONDS = 1.0

#: A prompt's identity in the task list: (sha256 of the prompt, model).
PromptKey = tuple[str, str | None]


def shared_prompt_keys(keys: Iterable[PromptKey]) -> set[PromptKey]:
    """The (prompt sha256, model) pairs that occur more than once.

    Examples:
        >>> sorted(shared_prompt_keys([("a", "m"), ("b", "m"), ("a", "m"), ("a", "n")]))
        [('a', 'm')]
    """
    seen: set[PromptKey] = set()
    shared: set[PromptKey] = set()
    for key in keys:
        (shared if key in seen else seen).add(key)
    return shared


def listed_prompt(task: GenerationTask) -> str | None:
    """The prompt a listed task shows, if it shows one (top level, or in ``input``/``request``).

    Examples:
        >>> listed_prompt(GenerationTask.model_validate(
        ...     {"id": "t", "status": "completed", "input": {"prompt": "a fox"}}))
        'a fox'
        >>> listed_prompt(GenerationTask.model_validate({"id": "t", "status": "completed"})) is None
        True
    """
    extra: dict[str, Any] = task.model_extra or {}
    for holder in (extra, extra.get("input"), extra.get("request"), extra.get("params")):
        if isinstance(holder, dict) and isinstance(holder.get("prompt"), str):
            return str(holder["prompt"])
    return None


def listed_key(task: GenerationTask) -> str | None:
    """The idempotency key a listed task shows, if any."""
    extra: dict[str, Any] = task.model_extra or {}
    for name in KEY_FIELDS:
        value = extra.get(name)
        if isinstance(value, str) and value:
            return value
    return None


class TaskListIndex:
    """The account's task list, read as far back as needed, to find tasks of unknown outcome.

    Args:
        client: The API client.
        submit_timeout: How long after its intent a lost submission may have created its task.
        page_size: Tasks per page read.
        max_pages: Most pages read per model (a bound on the cost of a huge account).
        shared_prompts: Returns the (prompt sha256, model) pairs that several rows of the run
            have; called once, at the first lookup by prompt (a pass over the dataset, paid
            only when an answer was lost). None: the run has a single row.
    """

    def __init__(
        self,
        client: SeedreamClient,
        *,
        submit_timeout: float = SUBMIT_TIMEOUT_SECONDS,
        page_size: int = 100,
        max_pages: int = 50,
        shared_prompts: Callable[[], Awaitable[set[PromptKey]]] | None = None,
    ) -> None:
        self.client = client
        self._shared_prompts = shared_prompts
        self._shared: set[PromptKey] | None = None
        self.submit_timeout = submit_timeout
        self.page_size = page_size
        self.max_pages = max_pages
        self._tasks: dict[str | None, dict[str, GenerationTask]] = {}
        self._pages_read: dict[str | None, int] = {}
        self._complete_since: dict[str | None, float] = {}
        self._head_read_at: dict[str | None, float] = {}
        self._claimed: set[str] = set()
        self._lock = asyncio.Lock()
        self.lookups = 0
        self.found = 0

    async def find(self, record: LedgerRecord) -> GenerationTask | None:
        """The task the record's lost submission created, when the list tells it for sure."""
        if not record.outcome_unknown or record.intent_at is None:
            return None
        self.lookups += 1
        start = record.intent_at - CLOCK_SLACK_SECONDS
        end = record.intent_at + self.submit_timeout + CLOCK_SLACK_SECONDS
        try:
            async with self._lock:
                tasks = await self._read_back_to(record.model, start, end)
                shared = await self._shared_keys()
        except SeedreamError as exc:  # the list is an aid: without it the row stays unknown
            logger.warning("the task list could not be read (%s); %s stays unknown", exc, record.row_id)
            return None
        window = [
            task for task in tasks
            if task.id not in self._claimed and task.created is not None and start <= task.created <= end
            and listed_key(task) in (None, record.idempotency_key)  # another key: another's task
        ]
        match = self._match(record, window, shared)
        if match is not None:
            self._claimed.add(match.id)
            self.found += 1
        return match

    def claim(self, task_id: str) -> None:
        """A task known to belong to some row (never matched to another)."""
        self._claimed.add(task_id)

    async def _shared_keys(self) -> set[PromptKey]:
        if self._shared is None:
            self._shared = await self._shared_prompts() if self._shared_prompts else set()
        return self._shared

    def _match(
        self, record: LedgerRecord, window: list[GenerationTask], shared: set[PromptKey]
    ) -> GenerationTask | None:
        if record.idempotency_key:
            keyed = [task for task in window if listed_key(task) == record.idempotency_key]
            if keyed:
                return keyed[0]
        if record.prompt_sha256 is None or (record.prompt_sha256, record.model) in shared:
            return None
        same_prompt = [
            task for task in window
            if (prompt := listed_prompt(task)) is not None
            and hashlib.sha256(prompt.encode("utf-8", "surrogatepass")).hexdigest() == record.prompt_sha256
            and (task.model is None or record.model is None or task.model == record.model)
        ]
        return same_prompt[0] if len(same_prompt) == 1 else None

    async def _read_back_to(self, model: str | None, start: float, end: float) -> list[GenerationTask]:
        """The model's listed tasks, read until a page is older than ``start`` (or the end).

        Tasks created since the newest page was read (a submission of this run whose answer
        was lost) are seen by reading the newest pages again, at most every second.
        """
        tasks = self._tasks.setdefault(model, {})
        now = time.time()
        read_at = self._head_read_at.get(model)
        if read_at is not None and read_at < min(end, now) and now - read_at >= HEAD_REFRESH_SECONDS:
            self._pages_read.pop(model, None)  # read from the newest page again
            self._complete_since.pop(model, None)
        if model not in self._pages_read:
            self._head_read_at[model] = now
        while self._complete_since.get(model, float("inf")) > start:
            page = self._pages_read.get(model, 0) + 1
            if page > self.max_pages:
                break
            found = await self.client.list_tasks(model=model, page=page, page_size=self.page_size)
            self._pages_read[model] = page
            tasks.update((task.id, task) for task in found.data)  # pages shift as tasks are created
            created = [task.created for task in found.data if task.created is not None]
            newest_first = created == sorted(created, reverse=True)
            if not found.data or page * found.page_size >= found.total:
                self._complete_since[model] = float("-inf")  # the whole list is read
            elif newest_first and created:
                self._complete_since[model] = float(min(created))
        return list(tasks.values())
