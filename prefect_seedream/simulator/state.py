"""In-memory state of a simulator: tasks, counters, statistics and concurrency.

One :class:`SimulatorState` lives in ``app.state.sim``. Every route runs on the server's single
asyncio event loop and never awaits while it changes the state, so no lock is needed.
Time is read through :meth:`SimulatorState.now`, which tests may move forward with
:meth:`SimulatorState.advance_time` instead of sleeping.
"""

from __future__ import annotations

import hashlib
import heapq
import random
import secrets
import string
import time
from dataclasses import asdict, dataclass
from typing import Any, Literal

from .config import SimulatorConfig
from .faults import CreationFaults, FaultCounters, FaultDice, FaultPlan
from .holds import HeldResponses
from .images import ImageCache
from .rules import MAX_IMAGES_TOTAL, GenerationRequest, ModelRules

TaskStatus = Literal["pending", "processing", "completed", "failed"]

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
        created_at: :meth:`SimulatorState.now` at creation.
        latency: Seconds from creation until the task is terminal.
        error_code: ``error.code`` of a task that fails, else ``None``.
        extra_fields: Whether task objects carry unknown extra fields.
        plan: The prompt's fault markers.
        polls: Number of polls of this task so far.
        downloads: Number of downloads of this task's results so far.
        created_unix: :meth:`SimulatorState.wall_time` at creation (float seconds).
        answered: Whether the submit's 200 answer (with the task id) was sent on a connection
            that was still open; ``False`` while a delayed answer waits, and for hung, dropped
            and abandoned answers.

    Examples:
        >>> from prefect_seedream.simulator.rules import validate_generation_request
        >>> state = SimulatorState(SimulatorConfig(latency_seconds=1.0, jitter_seconds=0.0))
        >>> req = validate_generation_request({"model": "doubao-seedream-4.5", "prompt": "a"})
        >>> task = state.create_task(req, "k", FaultPlan(), CreationFaults())
        >>> task.status_at(task.created_at + 0.5)
        ('processing', 50)
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

    @property
    def finishes_at(self) -> float:
        """State-clock time at which the task becomes terminal."""
        return self.created_at + self.latency

    def is_active(self, now: float) -> bool:
        """Whether the task is still non-terminal at ``now``."""
        return now < self.finishes_at

    def status_at(self, now: float) -> tuple[TaskStatus, int]:
        """``(status, progress)`` at ``now``, derived from the elapsed time.

        Pending for the first 20% of the latency (progress 0), then processing with a
        proportional progress in 1..99, then completed or failed (progress 100).
        """
        elapsed = now - self.created_at
        if elapsed >= self.latency:
            return ("failed" if self.error_code is not None else "completed"), 100
        if elapsed < PENDING_FRACTION * self.latency:
            return "pending", 0
        progress = int(elapsed / self.latency * 100)
        return "processing", min(99, max(1, progress))

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


SubmitAnswerFault = Literal["hung", "late", "dropped", "undelivered"]


@dataclass
class SubmitAnswerCounters:
    """What happened to the answers of submits that created a task (``submits_*`` stats).

    Attributes:
        hung: Answers held open by ``submit_hang`` (marker or random); never sent.
        late: Answers delayed by ``submit_delay`` or the random ``submit_late`` (counted when
            the delay starts, whether or not the answer is delivered in the end).
        dropped: Answers cut by ``drop_after_create`` (marker or random).
        undelivered: Tasks created whose 200 answer was not sent on an open connection:
            hung, dropped, delayed answers whose client had gone (or that a shutdown ended),
            and answers to a client that disconnected before them.

    Examples:
        >>> SubmitAnswerCounters(hung=1).as_dict()["submits_hung"]
        1
    """

    hung: int = 0
    late: int = 0
    dropped: int = 0
    undelivered: int = 0

    def as_dict(self) -> dict[str, int]:
        """The counters as a JSON-ready dict, keys prefixed with ``submits_``."""
        return {f"submits_{name}": value for name, value in asdict(self).items()}


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
        self.tasks: dict[str, SimTask] = {}
        self.fault_counters = FaultCounters()
        self.dice = FaultDice(config.fault_rates, seed=config.seed)
        self.images = ImageCache()
        self.totals = KeyCounters()
        self.per_key: dict[str, KeyCounters] = {}
        self.submissions_by_prompt: dict[str, int] = {}
        self.answers = SubmitAnswerCounters()
        self.holds = HeldResponses()
        self.time_offset = 0.0
        self._jitter_rng = random.Random(config.seed)
        # Heaps of (time, task id), so that counting active tasks and forgetting expired ones
        # cost O(log n) per task, not a scan of every task per request: a run of 20,000 rows
        # would otherwise spend most of the simulator's CPU scanning.
        self._running: dict[str, list[tuple[float, str]]] = {}
        self._expiring: list[tuple[float, str]] = []

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

    def record_submit(self, key_id: str) -> None:
        """Count an authenticated submit request."""
        self.totals.submit_requests += 1
        self.key_counters(key_id).submit_requests += 1

    def record_poll(self, key_id: str) -> None:
        """Count an authenticated poll."""
        self.totals.polls += 1
        self.key_counters(key_id).polls += 1

    def record_answer(self, fault: SubmitAnswerFault) -> None:
        """Count a submit answer that was hung, delayed, dropped or not delivered."""
        setattr(self.answers, fault, getattr(self.answers, fault) + 1)

    def record_download(self, task: SimTask | None) -> None:
        """Count a download, attributed to the key that created the task (if known)."""
        self.totals.downloads += 1
        if task is not None:
            task.downloads += 1
            self.key_counters(task.key_id).downloads += 1

    # -- tasks ------------------------------------------------------------------------------

    def active_tasks(self, key_id: str | None = None) -> int:
        """Number of non-terminal tasks, of one key or of all keys."""
        now = self.now()
        keys = [key_id] if key_id is not None else list(self._running)
        count = 0
        for key in keys:
            running = self._running.get(key, [])
            while running and running[0][0] <= now:
                heapq.heappop(running)
            count += len(running)
        return count

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
        """Create and remember a task, updating counters and peak concurrency.

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
        latency = faults.latency if faults.latency is not None else self._draw_latency()
        images = faults.images if faults.images is not None else request.n
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
            created_at=self.now(),
            latency=latency,
            error_code=faults.error_code,
            extra_fields=faults.extra_fields,
            plan=plan,
            created_unix=wall_time,
        )
        self.tasks[task.id] = task
        heapq.heappush(self._running.setdefault(key_id, []), (task.finishes_at, task.id))
        heapq.heappush(self._expiring, (task.finishes_at + self.config.result_ttl_seconds, task.id))
        counters = self.key_counters(key_id)
        counters.tasks_created += 1
        self.totals.tasks_created += 1
        self.submissions_by_prompt[task.prompt] = self.submissions_by_prompt.get(task.prompt, 0) + 1
        concurrent = self.active_tasks(key_id)
        counters.peak_concurrent_tasks = max(counters.peak_concurrent_tasks, concurrent)
        self.totals.peak_concurrent_tasks = max(self.totals.peak_concurrent_tasks, concurrent)
        return task

    def find_task(self, task_id: str, key_id: str | None = None) -> SimTask | None:
        """A live task by id, optionally only if ``key_id`` created it; ``None`` if expired."""
        task = self.tasks.get(task_id)
        if task is None or (key_id is not None and task.key_id != key_id):
            return None
        if task.is_expired(self.now(), self.config.result_ttl_seconds):
            return None
        return task

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
        """Forget tasks whose results have expired."""
        now = self.now()
        while self._expiring and self._expiring[0][0] <= now:
            _, task_id = heapq.heappop(self._expiring)
            self.tasks.pop(task_id, None)

    # -- statistics -------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """The ``GET /_sim/stats`` body.

        Returns:
            ``submit_requests``, ``tasks_created``, ``polls``, ``downloads``,
            ``peak_concurrent_tasks``, ``active_tasks``, the :class:`SubmitAnswerCounters`
            (``submits_hung``, ``submits_late``, ``submits_dropped``, ``submits_undelivered``),
            ``submissions_by_prompt`` (tasks *created* per exact prompt text; rejected submit
            requests are not counted) and ``per_key`` (keyed by :func:`key_id_for`, never by
            the raw key).
        """
        body: dict[str, Any] = self.totals.as_dict()
        body["active_tasks"] = self.active_tasks()
        body.update(self.answers.as_dict())
        body["submissions_by_prompt"] = dict(self.submissions_by_prompt)
        body["per_key"] = {key: c.as_dict() for key, c in sorted(self.per_key.items())}
        return body

    def reset(self) -> None:
        """Forget every task and counter and re-seed the random generators."""
        self.tasks.clear()
        self._running.clear()
        self._expiring.clear()
        self.fault_counters.clear()
        self.dice.reset()
        self.images.clear()
        self.totals = KeyCounters()
        self.per_key.clear()
        self.submissions_by_prompt.clear()
        self.answers = SubmitAnswerCounters()
        self._jitter_rng = random.Random(self.config.seed)
