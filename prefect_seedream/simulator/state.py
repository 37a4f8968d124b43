"""In-memory state of a simulator: tasks, counters, statistics, concurrency and credits.

One :class:`SimulatorState` lives in ``app.state.sim``. Every route runs on the server's single
asyncio event loop and never awaits while it changes the state, so no lock is needed.
Time is read through :meth:`SimulatorState.now`, which tests may move forward with
:meth:`SimulatorState.advance_time` instead of sleeping.

A task's status is derived from the clock (:meth:`SimTask.status_at`), so nothing happens
when a task finishes. What depends on tasks becoming terminal (the number of active tasks per
key, the credits charged, the expiry of results) is settled lazily by
:meth:`SimulatorState.settle`, which pops a heap of finish times: O(log n) per task, never a
scan of every task per request.
"""

from __future__ import annotations

import hashlib
import heapq
import itertools
import math
import random
import secrets
import string
import time
from dataclasses import asdict, dataclass
from typing import Any, Literal

from .billing import Account, Reservation, credits_value
from .config import SimulatorConfig
from .errors import SimulatorHTTPError
from .faults import CreationFaults, FaultCounters, FaultDice, FaultPlan
from .holds import HeldResponses
from .idempotency import IdempotencyStore, conflict_error
from .images import ImageCache, ImageFormat
from .listing import ListQuery, page_of
from .model_table import ModelRules, model_catalog
from .references import FetchOutcome, ReferenceFetcher
from .rules import MAX_IMAGES_TOTAL, GenerationRequest
from .task_batch import ReadCounters

TaskStatus = Literal["pending", "processing", "completed", "failed", "cancelled"]
#: Statuses after which a task never changes.
TERMINAL_STATUSES: frozenset[str] = frozenset({"completed", "failed", "cancelled"})

#: Where the reference images of a task are: not fetched (none, or fetching is off),
#: being fetched, all fetched, or one failed.
FetchState = Literal["none", "pending", "done", "failed"]

#: Fraction of a task's latency during which it is reported ``pending``.
PENDING_FRACTION = 0.2

_ID_ALPHABET = string.ascii_lowercase + string.digits


def key_id_for(api_key: str) -> str:
    """The public identifier of an API key: the first 12 hex digits of its SHA-256.

    Examples:
        >>> key_id_for("sk-test")
        'f3abf2a6cc4f'
    """
    return hashlib.sha256(api_key.encode("utf-8")).hexdigest()[:12]


@dataclass
class SimTask:
    """One generation task.

    Attributes:
        id: ``task-unified-<created>-<8 lowercase alphanumerics>``.
        key_id: :func:`key_id_for` of the API key that created it.
        model: The model's rules.
        prompt: The prompt, markers included.
        n: Requested number of images (credits are reserved for ``n``).
        image_count: Number of images generated (``n`` unless ``[[sim:images=K]]``).
        width: Requested width.
        height: Requested height.
        created: Unix time of creation (seconds).
        created_at: :meth:`SimulatorState.now` at creation (strictly increasing per state).
        latency: Seconds from creation until the task is terminal (when its reference images,
            if fetched, are in by then).
        error_code: ``error.code`` of a task that fails, else ``None``.
        extra_fields: Whether task objects carry unknown extra fields.
        plan: The prompt's fault markers.
        polls: Number of polls of this task so far.
        downloads: Number of downloads of this task's results so far.
        created_unix: :meth:`SimulatorState.wall_time` at creation (float seconds).
        answered: Whether the submit's 200 answer (with the task id) was sent on a connection
            that was still open; ``False`` while a delayed answer waits, and for hung, dropped,
            errored (``create_then_status``) and abandoned answers.
        cancelled: Whether the task ends ``cancelled`` (``[[sim:cancel]]``).
        error_message: ``error.message`` when it is not ``simulated failure: CODE`` (a failed
            reference fetch).
        image_urls: The reference image URLs of the request.
        fetch_state: See :data:`FetchState`.
        fetch_done_at: State-clock time at which the reference fetches ended.
        reference: Bytes of the first reference image once fetched (pasted into results).
        reference_digest: SHA-256 (hex) of :attr:`reference`.
        reservation: What the task counts in the account (set at creation by the state).
        settled: Whether the state has counted the task as terminal.
        output_format: ``png`` or ``jpeg`` of the results (of the base image for layerize);
            ``None``: the simulator's ``image_format``.
        transparent: Whether every result is a PNG with alpha (``background: transparent``).
        layers: Layer images after the base image (layerize models), PNG with alpha.

    Examples:
        >>> from prefect_seedream.simulator.rules import validate_generation_request
        >>> state = SimulatorState(SimulatorConfig(latency_seconds=1.0, jitter_seconds=0.0))
        >>> req = validate_generation_request({"model": "doubao-seedream-4.5", "prompt": "a"})
        >>> task = state.create_task(req, "k", FaultPlan(), CreationFaults())
        >>> task.status_at(task.created_at + 0.5)
        ('processing', 50)
        >>> task.status_at(task.created_at + 1.0), task.credits_at(task.created_at + 1.0)
        (('completed', 100), 2.0)
    """

    id: str
    key_id: str
    model: ModelRules
    prompt: str
    n: int
    image_count: int
    width: int
    height: int
    created: int
    created_at: float
    latency: float
    error_code: str | None
    extra_fields: bool
    plan: FaultPlan
    polls: int = 0
    downloads: int = 0
    created_unix: float = 0.0
    answered: bool = False
    cancelled: bool = False
    error_message: str | None = None
    image_urls: tuple[str, ...] = ()
    fetch_state: FetchState = "none"
    fetch_done_at: float | None = None
    reference: bytes | None = None
    reference_digest: str | None = None
    reservation: Reservation | None = None
    settled: bool = False
    output_format: str | None = None
    transparent: bool = False
    layers: int = 0

    def image_format(self, index: int, default: ImageFormat) -> ImageFormat:
        """Encoding of result ``index``: layers and transparent results are PNG, the others
        :attr:`output_format` or ``default`` (the simulator's ``image_format``)."""
        if self.is_alpha_image(index):
            return "png"
        return "jpeg" if (self.output_format or default) == "jpeg" else "png"

    def is_alpha_image(self, index: int) -> bool:
        """Whether result ``index`` is a PNG with alpha (a layer, or a transparent result)."""
        return self.transparent or (self.layers > 0 and index > 0)

    @property
    def scheduled_end(self) -> float:
        """State-clock time at which the generation itself is over (creation + latency)."""
        return self.created_at + self.latency

    @property
    def finishes_at(self) -> float:
        """State-clock time at which the task becomes terminal.

        ``inf`` while reference images are being fetched; the fetch's end if one failed;
        else the later of :attr:`scheduled_end` and the fetch's end.
        """
        if self.fetch_state == "pending":
            return math.inf
        if self.fetch_done_at is not None:
            if self.fetch_state == "failed":
                return self.fetch_done_at
            return max(self.scheduled_end, self.fetch_done_at)
        return self.scheduled_end

    @property
    def terminal_status(self) -> TaskStatus:
        """The status the task ends with: a failed fetch, else cancelled, failed, completed."""
        if self.fetch_state == "failed":
            return "failed"
        if self.cancelled:
            return "cancelled"
        return "failed" if self.error_code is not None else "completed"

    @property
    def reserved_credits(self) -> float:
        """Credits reserved at creation: ``credits_per_image * n``."""
        return self.model.credits_per_image * self.n

    @property
    def final_credits(self) -> float:
        """The charge once terminal: per generated image if completed, else 0 (refunded)."""
        if self.terminal_status != "completed":
            return 0.0
        return self.model.credits_per_image * self.image_count

    def is_active(self, now: float) -> bool:
        """Whether the task is still non-terminal at ``now``."""
        return now < self.finishes_at

    def status_at(self, now: float) -> tuple[TaskStatus, int]:
        """``(status, progress)`` at ``now``, derived from the elapsed time.

        Pending for the first 20% of the latency (progress 0), then processing with a
        proportional progress in 1..99 (99 while reference fetches outlast the latency),
        then :attr:`terminal_status` (progress 100).
        """
        if now >= self.finishes_at:
            return self.terminal_status, 100
        elapsed = now - self.created_at
        if elapsed < PENDING_FRACTION * self.latency:
            return "pending", 0
        progress = int(elapsed / self.latency * 100) if self.latency > 0 else 99
        return "processing", min(99, max(1, progress))

    def credits_at(self, now: float) -> float:
        """The task's charge at ``now``: its reservation until terminal, then the final one."""
        return self.reserved_credits if self.is_active(now) else self.final_credits

    def is_expired(self, now: float, ttl: float) -> bool:
        """Whether the task and its results are gone (``ttl`` seconds after completion)."""
        return now >= self.finishes_at + ttl


@dataclass
class KeyCounters:
    """Request counters, for one API key or in total.

    Examples:
        >>> KeyCounters(polls=2).as_dict()["polls"]
        2
    """

    submit_requests: int = 0
    tasks_created: int = 0
    polls: int = 0
    downloads: int = 0
    peak_concurrent_tasks: int = 0

    def as_dict(self) -> dict[str, int]:
        """The counters as a JSON-ready dict."""
        return asdict(self)


@dataclass
class AccountCounters:
    """Idempotency and quota counters, for one API key or in total.

    Examples:
        >>> AccountCounters(quota_refusals=1).as_dict()["quota_refusals"]
        1
    """

    idempotent_replays: int = 0
    idempotency_conflicts: int = 0
    quota_refusals: int = 0

    def as_dict(self) -> dict[str, int]:
        """The counters as a JSON-ready dict."""
        return asdict(self)


SubmitAnswerFault = Literal["hung", "late", "dropped", "errored", "undelivered"]


@dataclass
class SubmitAnswerCounters:
    """What happened to the answers of submits that created a task (``submits_*`` stats).

    Attributes:
        hung: Answers held open by ``submit_hang`` (marker or random); never sent.
        late: Answers delayed by ``submit_delay`` or the random ``submit_late`` (counted when
            the delay starts, whether or not the answer is delivered in the end).
        dropped: Answers cut by ``drop_after_create`` (marker or random).
        errored: Answers replaced by an error status by ``create_then_status`` (marker or the
            random ``create_then_500``).
        undelivered: Tasks created whose 200 answer was not sent on an open connection:
            hung, dropped, errored, delayed answers whose client had gone (or that a shutdown
            ended), and answers to a client that disconnected before them.

    Examples:
        >>> SubmitAnswerCounters(hung=1).as_dict()["submits_hung"]
        1
    """

    hung: int = 0
    late: int = 0
    dropped: int = 0
    errored: int = 0
    undelivered: int = 0

    def as_dict(self) -> dict[str, int]:
        """The counters as a JSON-ready dict, keys prefixed with ``submits_``."""
        return {f"submits_{name}": value for name, value in asdict(self).items()}


IdempotentAnswer = Literal["replay", "conflict"]


class SimulatorState:
    """Everything a simulator remembers; reset by :meth:`reset` (``POST /_sim/reset``).

    Args:
        config: The simulator's configuration.

    Examples:
        >>> state = SimulatorState(SimulatorConfig())
        >>> state.stats()["tasks_created"]
        0
    """

    def __init__(self, config: SimulatorConfig) -> None:
        self.config = config
        self.models: dict[str, ModelRules] = model_catalog(config)
        self.tasks: dict[str, SimTask] = {}
        self.fault_counters = FaultCounters()
        self.dice = FaultDice(config.fault_rates, seed=config.seed)
        self.images = ImageCache()
        self.totals = KeyCounters()
        self.per_key: dict[str, KeyCounters] = {}
        self.account_totals = AccountCounters()
        self.per_key_account: dict[str, AccountCounters] = {}
        self.submissions_by_prompt: dict[str, int] = {}
        self.answers = SubmitAnswerCounters()
        self.holds = HeldResponses()
        self.account = Account(config)
        self.idempotency: IdempotencyStore[SimTask] = IdempotencyStore()
        self.references = ReferenceFetcher()
        self.task_list_requests = 0
        self.unauthorized_requests = 0
        self.reads = ReadCounters()
        self.time_offset = 0.0
        self._jitter_rng = random.Random(config.seed)
        self._seq = itertools.count()
        self._last_created_at = -math.inf
        # Heaps of (time, sequence, task), so that counting active tasks, settling charges and
        # forgetting expired tasks cost O(log n) per task, not a scan of every task per
        # request: a run of 20,000 rows would otherwise spend most of the simulator's CPU
        # scanning.
        self._finishing: list[tuple[float, int, SimTask]] = []
        self._expiring: list[tuple[float, int, SimTask]] = []
        self._active: dict[str, int] = {}
        self._active_total = 0
        # Each key's tasks in creation order (for GET /v1/tasks), and how many of them have
        # expired since the list was last compacted.
        self._by_key: dict[str, list[SimTask]] = {}
        self._expired_listed: dict[str, int] = {}

    # -- time -------------------------------------------------------------------------------

    def now(self) -> float:
        """Monotonic clock of the simulator, in seconds (moved by :meth:`advance_time`)."""
        return time.monotonic() + self.time_offset

    def wall_time(self) -> float:
        """Unix time of the simulator (moved by :meth:`advance_time`)."""
        return time.time() + self.time_offset

    def advance_time(self, seconds: float) -> None:
        """Jump the simulator's clock forward, e.g. to expire results without sleeping.

        Examples:
            >>> state = SimulatorState(SimulatorConfig())
            >>> before = state.now()
            >>> state.advance_time(3600)
            >>> state.now() - before >= 3600
            True
        """
        self.time_offset += seconds

    # -- counters ---------------------------------------------------------------------------

    def key_counters(self, key_id: str) -> KeyCounters:
        """The counters of one key, created on first use."""
        counters = self.per_key.get(key_id)
        if counters is None:
            counters = self.per_key[key_id] = KeyCounters()
        return counters

    def account_counters(self, key_id: str) -> AccountCounters:
        """The idempotency and quota counters of one key, created on first use."""
        counters = self.per_key_account.get(key_id)
        if counters is None:
            counters = self.per_key_account[key_id] = AccountCounters()
        return counters

    def record_submit(self, key_id: str) -> None:
        """Count an authenticated submit request."""
        self.totals.submit_requests += 1
        self.key_counters(key_id).submit_requests += 1

    def record_poll(self, key_id: str) -> None:
        """Count an authenticated poll."""
        self.totals.polls += 1
        self.key_counters(key_id).polls += 1

    def record_answer(self, fault: SubmitAnswerFault) -> None:
        """Count a submit answer that was hung, delayed, dropped, errored or not delivered."""
        setattr(self.answers, fault, getattr(self.answers, fault) + 1)

    def record_download(self, task: SimTask | None) -> None:
        """Count a download, attributed to the key that created the task (if known)."""
        self.totals.downloads += 1
        if task is not None:
            task.downloads += 1
            self.key_counters(task.key_id).downloads += 1

    def record_quota_refusal(self, key_id: str) -> None:
        """Count a submit answered 402."""
        self.account_totals.quota_refusals += 1
        self.account_counters(key_id).quota_refusals += 1

    # -- settling ---------------------------------------------------------------------------

    def settle(self) -> float:
        """Count every task that became terminal by now; returns :meth:`now`.

        A terminal task leaves its key's active count, its reservation is replaced by its final
        charge, and its expiry is scheduled.
        """
        now = self.now()
        while self._finishing and self._finishing[0][0] <= now:
            when, _, task = heapq.heappop(self._finishing)
            if task.settled or when != task.finishes_at:
                continue  # a stale entry: the task's finish time moved
            task.settled = True
            self._active[task.key_id] -= 1
            self._active_total -= 1
            if task.reservation is not None:
                self.account.settle(task.reservation, task.final_credits, now)
            expiry = task.finishes_at + self.config.result_ttl_seconds
            heapq.heappush(self._expiring, (expiry, next(self._seq), task))
        return now

    def _schedule_finish(self, task: SimTask) -> None:
        heapq.heappush(self._finishing, (task.finishes_at, next(self._seq), task))

    # -- tasks ------------------------------------------------------------------------------

    def active_tasks(self, key_id: str | None = None) -> int:
        """Number of non-terminal tasks, of one key or of all keys."""
        self.settle()
        if key_id is None:
            return self._active_total
        return self._active.get(key_id, 0)

    def _draw_latency(self) -> float:
        jitter = self.config.jitter_seconds
        offset = self._jitter_rng.uniform(-jitter, jitter) if jitter > 0 else 0.0
        return max(0.0, self.config.latency_seconds + offset)

    def _new_task_id(self, created: int) -> str:
        while True:
            suffix = "".join(secrets.choice(_ID_ALPHABET) for _ in range(8))
            task_id = f"task-unified-{created}-{suffix}"
            if task_id not in self.tasks:
                return task_id

    def create_task(
        self,
        request: GenerationRequest,
        key_id: str,
        plan: FaultPlan,
        faults: CreationFaults,
    ) -> SimTask:
        """Create and remember a task, updating counters, peak concurrency and credits.

        When ``SimulatorConfig.fetch_reference_images`` is on and the request has
        ``image_urls``, their fetch starts in the background: this must then be called on the
        server's running event loop.

        Args:
            request: The validated submit body.
            key_id: Identifier of the creating key.
            plan: The prompt's markers.
            faults: Faults decided for this task.

        Returns:
            The new task.
        """
        self.prune()
        wall_time = self.wall_time()
        created = int(wall_time)
        now = self.now()
        if now <= self._last_created_at:  # keep creation times strictly increasing
            now = math.nextafter(self._last_created_at, math.inf)
        self._last_created_at = now
        latency = faults.latency if faults.latency is not None else self._draw_latency()
        images = faults.images if faults.images is not None else request.image_count
        images = min(images, MAX_IMAGES_TOTAL - len(request.image_urls))
        task = SimTask(
            id=self._new_task_id(created),
            key_id=key_id,
            model=request.model,
            prompt=request.prompt,
            n=request.n,
            image_count=max(0, images),
            width=request.width,
            height=request.height,
            created=created,
            created_at=now,
            latency=latency,
            error_code=faults.error_code,
            extra_fields=faults.extra_fields,
            plan=plan,
            created_unix=wall_time,
            cancelled=faults.cancelled,
            image_urls=request.image_urls,
            output_format=request.output.output_format,
            transparent=request.output.transparent,
            layers=request.layers,
        )
        fetch = bool(request.image_urls) and self.config.fetch_reference_images
        if fetch:
            task.fetch_state = "pending"
            self.references.start(
                request.image_urls, lambda outcome: self.finish_reference_fetch(task, outcome)
            )
        else:
            self._schedule_finish(task)
        self.tasks[task.id] = task
        self._by_key.setdefault(key_id, []).append(task)
        self._active[key_id] = self._active.get(key_id, 0) + 1
        self._active_total += 1
        task.reservation = self.account.open(key_id, task.reserved_credits, now)
        counters = self.key_counters(key_id)
        counters.tasks_created += 1
        self.totals.tasks_created += 1
        self.submissions_by_prompt[task.prompt] = self.submissions_by_prompt.get(task.prompt, 0) + 1
        concurrent = self.active_tasks(key_id)
        counters.peak_concurrent_tasks = max(counters.peak_concurrent_tasks, concurrent)
        self.totals.peak_concurrent_tasks = max(self.totals.peak_concurrent_tasks, concurrent)
        return task

    def finish_reference_fetch(self, task: SimTask, outcome: FetchOutcome) -> None:
        """Record the end of a task's reference fetches (ignored if the task was forgotten).

        A failure makes the task fail now with ``image_processing_error``; a success lets it
        complete at the end of its latency (or now, if that is over).
        """
        if self.tasks.get(task.id) is not task or task.fetch_state != "pending":
            return
        task.fetch_done_at = max(self.now(), task.created_at)
        if outcome.ok:
            task.fetch_state = "done"
            task.reference = outcome.reference
            if outcome.reference is not None:
                task.reference_digest = hashlib.sha256(outcome.reference).hexdigest()
        else:
            task.fetch_state = "failed"
            task.error_code = "image_processing_error"
            task.error_message = outcome.error
        self._schedule_finish(task)

    def find_task(self, task_id: str, key_id: str | None = None) -> SimTask | None:
        """A live task by id, optionally only if ``key_id`` created it; ``None`` if expired."""
        task = self.tasks.get(task_id)
        if task is None or (key_id is not None and task.key_id != key_id):
            return None
        if task.is_expired(self.now(), self.config.result_ttl_seconds):
            return None
        return task

    def visible_status(self, task: SimTask, now: float, *, consume: bool) -> str:
        """The status a poll shows at ``now``: ``[[sim:unknown_status=NAME]]`` replaces
        pending/processing while its count lasts.

        Args:
            task: The task.
            now: State-clock time.
            consume: Whether this is a poll (it uses up one of the marker's N); task lists
                and idempotent replays only look.

        Examples:
            >>> from prefect_seedream.simulator.faults import parse_fault_plan
            >>> from prefect_seedream.simulator.rules import validate_generation_request
            >>> state = SimulatorState(SimulatorConfig(latency_seconds=10, jitter_seconds=0))
            >>> prompt = "a [[sim:unknown_status=queued*1]]"
            >>> req = validate_generation_request(
            ...     {"model": "doubao-seedream-4.5", "prompt": prompt})
            >>> task = state.create_task(req, "k", parse_fault_plan(prompt), CreationFaults())
            >>> now = task.created_at
            >>> [state.visible_status(task, now, consume=c) for c in (False, True, True)]
            ['queued', 'queued', 'pending']
        """
        status, _ = task.status_at(now)
        marker = task.plan.unknown_status
        if marker is None or status in TERMINAL_STATUSES:
            return status
        counters = self.fault_counters
        fires = (
            counters.take(task.id, "unknown_status", marker)
            if consume
            else counters.peek(task.id, "unknown_status", marker)
        )
        return marker.value if fires else status

    # -- idempotency ------------------------------------------------------------------------

    def idempotent_answer(
        self, key_id: str, key: str, digest: str
    ) -> tuple[IdempotentAnswer, SimTask] | None:
        """Whether a submit with ``Idempotency-Key`` ``key`` is a replay of a live task.

        Returns:
            ``("replay", task)`` for the same body (counted), ``None`` when the key is not
            remembered (or its task is gone: the key is forgotten).

        Raises:
            SimulatorHTTPError: 409 ``idempotency_conflict`` for another body (counted).
        """
        now = self.now()
        record = self.idempotency.lookup(key_id, key, now)
        if record is None:
            return None
        task = record.task
        if self.tasks.get(task.id) is not task or task.is_expired(
            now, self.config.result_ttl_seconds
        ):
            self.idempotency.forget(key_id, key)
            return None
        if record.body_hash != digest:
            self.account_totals.idempotency_conflicts += 1
            self.account_counters(key_id).idempotency_conflicts += 1
            raise conflict_error(key)
        self.account_totals.idempotent_replays += 1
        self.account_counters(key_id).idempotent_replays += 1
        return "replay", task

    def remember_idempotency(self, key: str, digest: str, task: SimTask) -> None:
        """Remember that ``key`` (of ``task``'s API key) created ``task``."""
        expires_at = task.created_at + self.config.idempotency_ttl_seconds
        self.idempotency.remember(task.key_id, key, digest, task, expires_at)

    # -- credits ----------------------------------------------------------------------------

    def quota_refusal(self, key_id: str, amount: float) -> SimulatorHTTPError | None:
        """The 402 answer for a submit of ``key_id`` reserving ``amount``, or ``None``."""
        now = self.settle()
        return self.account.refusal(key_id, amount, now)

    def account_snapshot(self) -> dict[str, Any]:
        """The ``/_sim/account`` body (see :meth:`Account.snapshot`)."""
        return self.account.snapshot(self.settle())

    # -- listings ---------------------------------------------------------------------------

    def tasks_of_key(self, key_id: str) -> list[SimTask]:
        """The live tasks of one key, in creation order (expired ones are dropped)."""
        self.prune()
        tasks = self._by_key.get(key_id, [])
        if self._expired_listed.get(key_id):
            tasks[:] = [task for task in tasks if self.tasks.get(task.id) is task]
            self._expired_listed[key_id] = 0
        return tasks

    def list_tasks(self, key_id: str, query: ListQuery) -> tuple[list[SimTask], int, float]:
        """A page of ``GET /v1/tasks``: the key's matching tasks, newest first.

        Returns:
            The page's tasks, the number of matching tasks, and the time of the listing
            (statuses are those a poll shows at that time, see :meth:`visible_status`).

        Examples:
            >>> state = SimulatorState(SimulatorConfig())
            >>> state.list_tasks("k", ListQuery())
            ([], 0, ...)
        """
        self.task_list_requests += 1
        tasks = self.tasks_of_key(key_id)
        now = self.now()

        def matches(task: SimTask) -> bool:
            if query.task_type is not None and query.task_type != "image":
                return False
            if query.model is not None and task.model.name != query.model:
                return False
            if query.status is not None:
                return self.visible_status(task, now, consume=False) == query.status
            return True

        page, total = page_of(tasks, query, matches)
        return page, total, now

    def task_listing(self, prompt: str | None = None) -> list[dict[str, Any]]:
        """The ``GET /_sim/tasks`` entries: live tasks in creation order, optionally of one prompt.

        Args:
            prompt: Exact prompt text (markers included); ``None`` lists every task.

        Returns:
            One dict per task that has not expired: ``id``, ``prompt``, ``status``,
            ``created_at`` (Unix time, float), ``answered``, ``polls`` and ``downloads``.

        Examples:
            >>> SimulatorState(SimulatorConfig()).task_listing("a cat")
            []
        """
        now = self.now()
        ttl = self.config.result_ttl_seconds
        return [
            {
                "id": task.id,
                "prompt": task.prompt,
                "status": task.status_at(now)[0],
                "created_at": task.created_unix,
                "answered": task.answered,
                "polls": task.polls,
                "downloads": task.downloads,
            }
            for task in self.tasks.values()
            if (prompt is None or task.prompt == prompt) and not task.is_expired(now, ttl)
        ]

    def prune(self) -> None:
        """Forget tasks whose results have expired, and expired idempotency keys."""
        now = self.settle()
        while self._expiring and self._expiring[0][0] <= now:
            _, _, task = heapq.heappop(self._expiring)
            if self.tasks.get(task.id) is task:
                del self.tasks[task.id]
                self._expired_listed[task.key_id] = self._expired_listed.get(task.key_id, 0) + 1
        self.idempotency.prune(now)

    # -- statistics -------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """The ``GET /_sim/stats`` body.

        Returns:
            ``submit_requests``, ``tasks_created`` (an idempotent replay creates nothing),
            ``polls``, ``downloads``, ``peak_concurrent_tasks``, ``active_tasks``, the
            :class:`SubmitAnswerCounters` (``submits_hung``, ``submits_late``,
            ``submits_dropped``, ``submits_errored``, ``submits_undelivered``),
            ``submissions_by_prompt`` (tasks *created* per exact prompt text; rejected submit
            requests are not counted), ``per_key`` (the :class:`KeyCounters`, keyed by
            :func:`key_id_for`, never by the raw key), ``credits_charged`` (the sum over every
            task ever created of its charge now: its reservation while it runs, its final
            charge once terminal), ``credits_balance`` (``None`` when unlimited), the
            :class:`AccountCounters` (``idempotent_replays``, ``idempotency_conflicts``,
            ``quota_refusals``: 402 answers to submits), ``reference_fetches`` and
            ``reference_fetch_failures`` (URL fetches attempted, failed),
            ``task_list_requests`` (``GET /v1/tasks``), ``unauthorized_requests`` (401 answers:
            no key, or a key not in ``api_keys``) and ``per_key_billing``: for each key
            of ``per_key``, ``credits_charged`` and its :class:`AccountCounters`; and the
            batch read and balance counters (:class:`ReadCounters`: ``batch_requests``,
            ``batch_task_reads``, ``credits_requests``, ``get_task_requests``,
            ``status_requests``). ``polls`` counts task reads: each ``GET /v1/tasks/{id}``
            and each task answered by ``POST /v1/tasks/batch``.
        """
        self.settle()
        body: dict[str, Any] = self.totals.as_dict()
        body["active_tasks"] = self._active_total
        body.update(self.answers.as_dict())
        body["submissions_by_prompt"] = dict(self.submissions_by_prompt)
        body["per_key"] = {key: c.as_dict() for key, c in sorted(self.per_key.items())}
        balance = self.account.balance()
        body["credits_charged"] = credits_value(self.account.charged)
        body["credits_balance"] = credits_value(balance) if balance is not None else None
        body.update(self.account_totals.as_dict())
        body["reference_fetches"] = self.references.fetches
        body["reference_fetch_failures"] = self.references.failures
        body["task_list_requests"] = self.task_list_requests
        body["unauthorized_requests"] = self.unauthorized_requests
        body.update(self.reads.as_dict(polls=self.totals.polls))
        body["per_key_billing"] = {
            key: {
                "credits_charged": credits_value(self.account.key_charged(key)),
                **self.per_key_account.get(key, AccountCounters()).as_dict(),
            }
            for key in sorted(self.per_key)
        }
        return body

    def reset(self) -> None:
        """Forget every task, counter, charge and idempotency key, cancel reference fetches
        in progress, and re-seed the random generators."""
        self.references.cancel_all()
        self.references.reset_counters()
        self.tasks.clear()
        self._finishing.clear()
        self._expiring.clear()
        self._active.clear()
        self._active_total = 0
        self._by_key.clear()
        self._expired_listed.clear()
        self.fault_counters.clear()
        self.dice.reset()
        self.images.clear()
        self.totals = KeyCounters()
        self.per_key.clear()
        self.account_totals = AccountCounters()
        self.per_key_account.clear()
        self.submissions_by_prompt.clear()
        self.answers = SubmitAnswerCounters()
        self.account.reset()
        self.idempotency.clear()
        self.task_list_requests = 0
        self.unauthorized_requests = 0
        self.reads = ReadCounters()
        self._jitter_rng = random.Random(self.config.seed)
