"""Fault injection: deterministic prompt markers and seeded random fault rates.

Deterministic markers
---------------------
A prompt may contain any number of markers ``[[sim:KEY]]`` or ``[[sim:KEY=VALUE]]``, each
optionally ending in ``*N`` (``[[sim:KEY*N]]``, ``[[sim:KEY=VALUE*N]]``), which means "only the
first N times, then behave normally". Markers stay in the prompt (they count toward its 2000
characters and are part of the prompt text used for counting). Each KEY may appear at most
once per prompt; an unknown KEY or a bad VALUE is answered with 400 ``invalid_request_error``
(``param: "prompt"``), so a typo never passes silently. Text that does not have the exact
``[[sim:...]]`` shape is ordinary prompt text.

``*N`` is counted per exact prompt text across submissions for submit-time markers, per task
for poll markers, and per result URL for download markers. Without ``*N`` the marker applies
every time.

| marker | effect | ``*N`` counts |
|---|---|---|
| ``[[sim:task_error=CODE]]`` | the task ends ``failed`` with ``error.code`` CODE (any code, e.g. ``content_policy_violation``, ``service_error``); message ``simulated failure: CODE`` | tasks created with this prompt |
| ``[[sim:submit_status=STATUS]]`` | submit answers HTTP STATUS (400, 401, 402, 403, 404, 413, 429, 500, 502, 503) with the documented error body (integer ``code``, as section 3 of the contract shows it); no task is created | submissions of this prompt |
| ``[[sim:quota_error=CODE]]`` | submit answers 402 with the string ``code`` CODE (``insufficient_quota``, ``key_quota_exhausted`` or ``key_daily_quota_exhausted``, the last with a ``Retry-After`` header), ``action_url`` and ``request_id``, as the account's own quota refusals do; no task is created | submissions of this prompt |
| ``[[sim:retry_after=R]]`` | seconds in the ``"retry after R seconds"`` ``fallback_suggestion`` and the ``Retry-After`` header of simulated 429/503 answers (default 1) | (not counted) |
| ``[[sim:create_then_status=STATUS]]`` | the task IS created (charged, its ``Idempotency-Key`` remembered), then the submit answers HTTP STATUS (any of the ``submit_status`` statuses, typically 500/502/503) with the documented error body instead of the task: a gateway failing after the creation | tasks created with this prompt |
| ``[[sim:drop_after_create]]`` | the task is created, then the connection is dropped mid-response (declared Content-Length larger than the bytes sent); the client sees a transport error, not a status | tasks created with this prompt |
| ``[[sim:submit_delay=SECONDS]]`` | the task is created, then the submit response is delayed SECONDS | tasks created with this prompt |
| ``[[sim:submit_hang]]`` | the task is created (counted, and it runs and completes like any other task, so a poll by id finds it), then the submit response is held open without sending a single byte until the client disconnects; when the server shuts down, the connection is closed without an answer | tasks created with this prompt |
| ``[[sim:latency=SECONDS]]`` | this task's latency (no jitter) instead of the configured one; a huge value never finishes | tasks created with this prompt |
| ``[[sim:images=K]]`` | generate K images (0..15, capped so that reference images + K <= 15) instead of ``n``; ``credits_used`` follows K | tasks created with this prompt |
| ``[[sim:extra_fields]]`` | task objects carry unknown extra fields at top level and in ``task_info`` / ``usage`` | tasks created with this prompt |
| ``[[sim:cancel]]`` | the task ends with the terminal status ``cancelled`` (no ``error``, no ``results``, ``credits_used`` 0: refunded) instead of completed or failed (``task_error``); a failed reference fetch still fails it | tasks created with this prompt |
| ``[[sim:unknown_status=NAME]]`` | polls of a task that is not yet terminal answer ``status: NAME`` (NAME matches ``[a-z_]{1,40}`` and is none of the five known statuses; progress as usual) instead of pending/processing; terminal answers are unchanged | polls of each task answered while it is not terminal |
| ``[[sim:poll_404*N]]`` | the first N polls of each task answer 404 ``not_found_error`` (eventual consistency) | polls of each task |
| ``[[sim:poll_status=STATUS*N]]`` | the first N polls of each task answer HTTP STATUS with the documented error body (429/503 with a retry hint) | polls of each task |
| ``[[sim:poll_malformed*N]]`` | the first N polls of each task answer 200 with a body that is not valid JSON | polls of each task |
| ``[[sim:download_status=STATUS*N]]`` | the first N downloads of each result URL answer HTTP STATUS | downloads of each URL |
| ``[[sim:download=truncated]]`` | the image body is cut: declared Content-Length larger than the bytes sent, then the connection is closed (transport error) | downloads of each URL |
| ``[[sim:download=not_image]]`` | 200 with the image content type (``image/png`` by default), but the bytes are an HTML error page | downloads of each URL |
| ``[[sim:download=oversize]]`` | 200, the image content type, a chunked body (no Content-Length) of ``download_max_bytes_oversize`` bytes: a PNG signature, then padding | downloads of each URL |
| ``[[sim:download=expired]]`` | result URLs answer 404 as if expired | downloads of each URL |
| ``[[sim:download_delay=SECONDS]]`` | 200 with the full Content-Length; the first half of the image (at least the 8-byte PNG signature) is sent, then the body pauses SECONDS, then the rest is sent (a client killed during the pause leaves a partial image); when the server shuts down during the pause, the connection is dropped | downloads of each URL |

Polls answered by a poll marker do not count toward ``unknown_status``; neither do the task's
entries in ``GET /v1/tasks`` nor an idempotent replay, which show the status a poll would show
at that moment without using up a count.

The three poll markers combine in the order ``poll_404``, ``poll_status``, ``poll_malformed``:
each one, while it fires, consumes its own count, so ``[[sim:poll_404*1]][[sim:poll_status=503*2]]``
gives 404, 503, 503, then normal answers. Downloads likewise check ``download_status``, then
``download``, then the random download faults; ``download_delay`` only acts on (and is only
counted by) a download that none of these turned into a fault.

The submit answer of a created task: ``submit_hang`` (marker or random) wins, and nothing is
sent; otherwise the answer waits ``submit_delay`` plus ``late_submit_seconds`` when the random
``submit_late`` fired, then ``create_then_status`` (marker or the random ``create_then_500``)
answers its error status, or else ``drop_after_create`` cuts the answer, or it is sent.
Markers that fire on the same submission are each counted, even when ``submit_hang`` or
``create_then_status`` makes the others moot. An answer that waits (hang or delay) is registered as held: on server shutdown its connection is
closed without an answer, so that shutdown never waits for it. ``GET /_sim/stats`` counts these
answers (``submits_hung``, ``submits_late``, ``submits_dropped``, ``submits_errored`` for
``create_then_status``, and ``submits_undelivered``, which includes the errored ones) and
``GET /_sim/tasks`` tells for each task whether its answer was delivered (``answered``).

Random faults
-------------
``SimulatorConfig.fault_rates`` maps a fault name to a probability, decided with a
``random.Random`` seeded from ``SimulatorConfig.seed``: ``submit_500``, ``submit_429``,
``submit_503`` (no task created), ``drop_after_create``, ``task_service_error``,
``task_content_policy`` (at task creation), ``submit_hang`` (the task is created, its answer
never comes, as with the marker), ``submit_late`` (the task is created, its answer is delayed
``SimulatorConfig.late_submit_seconds``, default 5, on top of any ``submit_delay``),
``create_then_500`` (the task is created and charged, then the submit answers 500),
``poll_500``, ``poll_503``, ``poll_429``, ``download_500``, ``download_truncated``. At creation
they are drawn in the order task errors, ``drop_after_create``, ``submit_hang``,
``submit_late``, ``create_then_500``; a random fault is not drawn when a marker already caused
the same fault, nor ``submit_late`` or ``create_then_500`` when the answer hangs. A fault
whose rate is 0 draws no random number, so a
configuration without fault rates consumes none, and the same requests in the same order give
the same faults (``POST /_sim/reset`` re-seeds).

Order of decisions on a submit: authentication; JSON and contract validation (markers only act
on bodies that pass it), the reference hosts (``allow_private_image_urls``), marker syntax and
the ``Idempotency-Key`` header's syntax; the idempotency lookup (a replay or a conflict is
answered here, before any fault marker, quota or concurrency check); the denied models (403);
``submit_status``, ``quota_error``, random ``submit_500`` / ``submit_429`` / ``submit_503``;
the account's quotas (402: ``insufficient_quota``, ``key_quota_exhausted``,
``key_daily_quota_exhausted``); the per-key concurrency limit (429); then the task is created
with its creation-time faults (and charged, and its ``Idempotency-Key`` remembered), then its
answer is hung, delayed, errored, dropped or sent.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from functools import lru_cache
from typing import Generic, Literal, TypeVar, cast

from .errors import QUOTA_CODES, SIMULATED_STATUSES

T = TypeVar("T")

#: The shape of a marker: key, optional ``=value``, optional ``*N``.
MARKER_RE = re.compile(r"\[\[sim:([A-Za-z0-9_]+)(?:=([^\]*]*))?(?:\*([0-9]+))?\]\]")

#: Values of ``[[sim:download=...]]``.
DOWNLOAD_MODES: frozenset[str] = frozenset({"truncated", "not_image", "oversize", "expired"})

#: Statuses ``[[sim:unknown_status=...]]`` may not name: the ones clients know.
KNOWN_TASK_STATUSES: frozenset[str] = frozenset(
    {"pending", "processing", "completed", "failed", "cancelled"}
)

_ERROR_CODE_RE = re.compile(r"^[A-Za-z0-9_.\-]{1,100}$")
_STATUS_NAME_RE = re.compile(r"^[a-z_]{1,40}$")


class MarkerError(ValueError):
    """A ``[[sim:...]]`` marker with an unknown key or an invalid value.

    Examples:
        >>> try:
        ...     parse_fault_plan("a cat [[sim:nope]]")
        ... except MarkerError as err:
        ...     str(err).startswith("unknown simulator marker")
        True
    """


@dataclass(frozen=True)
class Marker(Generic[T]):
    """One parsed marker.

    Attributes:
        value: The parsed value (``True`` for markers without a value).
        limit: ``N`` of a ``*N`` suffix, or ``None`` for "every time".

    Examples:
        >>> parse_fault_plan("[[sim:poll_404*2]]").poll_404
        Marker(value=True, limit=2)
    """

    value: T
    limit: int | None = None


@dataclass(frozen=True)
class FaultPlan:
    """Every marker found in one prompt; ``None`` where a marker is absent.

    Examples:
        >>> plan = parse_fault_plan("a cat [[sim:task_error=service_error*1]]")
        >>> plan.task_error
        Marker(value='service_error', limit=1)
        >>> plan.is_empty
        False
        >>> parse_fault_plan("a cat").is_empty
        True
    """

    task_error: Marker[str] | None = None
    submit_status: Marker[int] | None = None
    quota_error: Marker[str] | None = None
    retry_after: Marker[int] | None = None
    create_then_status: Marker[int] | None = None
    drop_after_create: Marker[bool] | None = None
    submit_delay: Marker[float] | None = None
    submit_hang: Marker[bool] | None = None
    latency: Marker[float] | None = None
    images: Marker[int] | None = None
    extra_fields: Marker[bool] | None = None
    cancel: Marker[bool] | None = None
    unknown_status: Marker[str] | None = None
    poll_404: Marker[bool] | None = None
    poll_status: Marker[int] | None = None
    poll_malformed: Marker[bool] | None = None
    download_status: Marker[int] | None = None
    download: Marker[str] | None = None
    download_delay: Marker[float] | None = None

    @property
    def is_empty(self) -> bool:
        """Whether the prompt carried no marker at all."""
        return all(getattr(self, f.name) is None for f in fields(self))

    @property
    def retry_after_seconds(self) -> int:
        """Seconds for simulated "retry after" hints (``retry_after`` marker, default 1)."""
        return self.retry_after.value if self.retry_after is not None else 1


_FLAG_KEYS = frozenset(
    {"drop_after_create", "submit_hang", "extra_fields", "cancel", "poll_404", "poll_malformed"}
)
_STATUS_KEYS = frozenset({"submit_status", "create_then_status", "poll_status", "download_status"})
_SECONDS_KEYS = frozenset({"submit_delay", "latency", "download_delay"})
KNOWN_MARKERS: frozenset[str] = frozenset(f.name for f in fields(FaultPlan))


def _parse_value(key: str, raw: str | None) -> object:
    if key in _FLAG_KEYS:
        if raw is not None:
            raise MarkerError(f"simulator marker {key!r} takes no value")
        return True
    if raw is None or raw == "":
        raise MarkerError(f"simulator marker {key!r} needs a value: [[sim:{key}=...]]")
    if key in _STATUS_KEYS:
        if not raw.isdigit() or int(raw) not in SIMULATED_STATUSES:
            allowed = ", ".join(str(s) for s in sorted(SIMULATED_STATUSES))
            raise MarkerError(f"simulator marker {key!r}: status must be one of {allowed}")
        return int(raw)
    if key in _SECONDS_KEYS:
        try:
            seconds = float(raw)
        except ValueError:
            raise MarkerError(f"simulator marker {key!r}: {raw!r} is not a number") from None
        if not math.isfinite(seconds) or seconds < 0:
            raise MarkerError(f"simulator marker {key!r}: seconds must be finite and >= 0")
        return seconds
    if key in ("retry_after", "images"):
        if not raw.isdigit():
            raise MarkerError(f"simulator marker {key!r}: {raw!r} is not a non-negative integer")
        number = int(raw)
        if key == "images" and number > 15:
            raise MarkerError("simulator marker 'images': at most 15 images")
        return number
    if key == "task_error":
        if not _ERROR_CODE_RE.match(raw):
            raise MarkerError("simulator marker 'task_error': code must match [A-Za-z0-9_.-]+")
        return raw
    if key == "unknown_status":
        if not _STATUS_NAME_RE.match(raw) or raw in KNOWN_TASK_STATUSES:
            raise MarkerError(
                "simulator marker 'unknown_status': NAME must match [a-z_]{1,40} and not be "
                "one of " + ", ".join(sorted(KNOWN_TASK_STATUSES))
            )
        return raw
    if key == "quota_error":
        if raw not in QUOTA_CODES:
            allowed = ", ".join(sorted(QUOTA_CODES))
            raise MarkerError(f"simulator marker 'quota_error': value must be one of {allowed}")
        return raw
    if key == "download":
        if raw not in DOWNLOAD_MODES:
            allowed = ", ".join(sorted(DOWNLOAD_MODES))
            raise MarkerError(f"simulator marker 'download': value must be one of {allowed}")
        return raw
    raise MarkerError(f"unknown simulator marker {key!r}")  # pragma: no cover


@lru_cache(maxsize=1024)
def parse_fault_plan(prompt: str) -> FaultPlan:
    """Parse every ``[[sim:...]]`` marker of a prompt.

    Args:
        prompt: The prompt text as submitted.

    Returns:
        The prompt's fault plan.

    Raises:
        MarkerError: On an unknown key, a repeated key or an invalid value.

    Examples:
        >>> plan = parse_fault_plan("x [[sim:submit_status=429*2]] [[sim:retry_after=5]]")
        >>> (plan.submit_status, plan.retry_after_seconds)
        (Marker(value=429, limit=2), 5)
        >>> parse_fault_plan("x [[sim:download=oversize]]").download.value
        'oversize'
    """
    found: dict[str, Marker[object]] = {}
    for match in MARKER_RE.finditer(prompt):
        key, raw_value, raw_limit = match.group(1), match.group(2), match.group(3)
        if key not in KNOWN_MARKERS:
            known = ", ".join(sorted(KNOWN_MARKERS))
            raise MarkerError(f"unknown simulator marker {key!r}; known markers: {known}")
        if key in found:
            raise MarkerError(f"simulator marker {key!r} appears more than once")
        limit = int(raw_limit) if raw_limit is not None else None
        found[key] = Marker(_parse_value(key, raw_value), limit)
    return FaultPlan(**found)  # type: ignore[arg-type]


class FaultCounters:
    """Counts how often each limited (``*N``) marker has fired, per scope.

    The scope is the prompt text for submit-time markers, the task id for poll markers and
    ``"<task id>/<index>"`` for download markers.

    Examples:
        >>> counters = FaultCounters()
        >>> marker = Marker(True, limit=2)
        >>> [counters.take("prompt", "poll_404", marker) for _ in range(3)]
        [True, True, False]
        >>> counters.take("prompt", "extra_fields", Marker(True))
        True
        >>> counters.take("prompt", "latency", None)
        False
        >>> counters.peek("prompt", "poll_404", marker), counters.peek("other", "poll_404", marker)
        (False, True)
    """

    def __init__(self) -> None:
        self._used: dict[tuple[str, str], int] = {}

    def take(self, scope: str, name: str, marker: Marker[object] | None) -> bool:
        """Whether ``marker`` fires now; a firing limited marker uses up one of its N."""
        if marker is None:
            return False
        if marker.limit is None:
            return True
        used = self._used.get((scope, name), 0)
        if used >= marker.limit:
            return False
        self._used[(scope, name)] = used + 1
        return True

    def peek(self, scope: str, name: str, marker: Marker[object] | None) -> bool:
        """Whether ``marker`` would fire now, without using up one of its N."""
        if marker is None:
            return False
        return marker.limit is None or self._used.get((scope, name), 0) < marker.limit

    def clear(self) -> None:
        """Forget every count."""
        self._used.clear()


class FaultDice:
    """Seeded random fault decisions for soak runs.

    Args:
        rates: Fault name -> probability (see ``SimulatorConfig.fault_rates``).
        seed: Seed of the private ``random.Random`` (derived from it, so that it does not
            draw the same sequence as the latency jitter).

    Examples:
        >>> dice = FaultDice({"poll_503": 1.0}, seed=0)
        >>> dice.first(["poll_500", "poll_503", "poll_429"])
        'poll_503'
        >>> FaultDice({}, seed=0).roll("poll_500")
        False
    """

    def __init__(self, rates: Mapping[str, float], seed: int) -> None:
        self._rates = dict(rates)
        self._seed = seed
        self._rng = random.Random(f"sim-faults:{seed}")

    def roll(self, name: str) -> bool:
        """Whether fault ``name`` happens now (never draws when its rate is 0)."""
        rate = self._rates.get(name, 0.0)
        if rate <= 0.0:
            return False
        return self._rng.random() < rate

    def first(self, names: Iterable[str]) -> str | None:
        """The first of ``names`` whose roll fires, rolling in order and stopping there."""
        for name in names:
            if self.roll(name):
                return name
        return None

    def reset(self) -> None:
        """Re-seed, so the decisions start over."""
        self._rng = random.Random(f"sim-faults:{self._seed}")


FaultKind = Literal["status", "malformed", "truncated", "not_image", "oversize", "expired"]


@dataclass(frozen=True)
class FaultAction:
    """What a route must do instead of its normal answer.

    Attributes:
        kind: ``status`` (an error answer), ``malformed`` (a body that is not JSON),
            ``truncated`` (cut body, connection closed), ``not_image``, ``oversize`` or
            ``expired`` (a 404 download).
        status: The HTTP status for ``kind == "status"``.
        retry_after: Seconds for the "retry after" hint of 429/503 answers.
        source: The marker key or random fault name that caused it (for logs and tests).
        code: String ``error.code`` of a ``quota_error`` 402, else ``None``.

    Examples:
        >>> FaultAction("status", 503, retry_after=1, source="poll_503").status
        503
    """

    kind: FaultKind
    status: int | None = None
    retry_after: int = 1
    source: str = ""
    code: str | None = None


@dataclass(frozen=True)
class CreationFaults:
    """Faults decided when a task is created.

    Attributes:
        error_code: ``error.code`` the task fails with, or ``None`` to complete.
        latency: Latency override in seconds, or ``None`` for the configured latency.
        images: Number of images to generate instead of ``n``, or ``None``.
        extra_fields: Whether task objects carry unknown extra fields.
        drop_after_create: Whether the submit connection is dropped mid-response.
        submit_delay: Seconds to wait before answering the submit (``submit_delay`` marker).
        submit_hang: Whether the submit answer is never sent (marker or random fault).
        submit_late: Whether the random ``submit_late`` fault delays the answer by
            ``SimulatorConfig.late_submit_seconds`` (on top of ``submit_delay``).
        cancelled: Whether the task ends ``cancelled`` (``cancel`` marker).
        create_then_status: HTTP status answered instead of the created task
            (``create_then_status`` marker or random ``create_then_500``), or ``None``.

    Examples:
        >>> CreationFaults().error_code is None
        True
    """

    error_code: str | None = None
    latency: float | None = None
    images: int | None = None
    extra_fields: bool = False
    drop_after_create: bool = False
    submit_delay: float = 0.0
    submit_hang: bool = False
    submit_late: bool = False
    cancelled: bool = False
    create_then_status: int | None = None


_RANDOM_TASK_ERRORS: dict[str, str] = {
    "task_service_error": "service_error",
    "task_content_policy": "content_policy_violation",
}


def decide_submit_fault(
    plan: FaultPlan, prompt: str, counters: FaultCounters, dice: FaultDice
) -> FaultAction | None:
    """Whether a submit is answered with an error instead of creating a task.

    Examples:
        >>> plan = parse_fault_plan("p [[sim:submit_status=503*1]]")
        >>> counters, dice = FaultCounters(), FaultDice({}, 0)
        >>> decide_submit_fault(plan, "p", counters, dice).status
        503
        >>> decide_submit_fault(plan, "p", counters, dice) is None
        True
        >>> plan = parse_fault_plan("q [[sim:quota_error=key_quota_exhausted]]")
        >>> decide_submit_fault(plan, "q", counters, dice).code
        'key_quota_exhausted'
    """
    if counters.take(prompt, "submit_status", plan.submit_status):
        assert plan.submit_status is not None
        return FaultAction(
            "status", plan.submit_status.value, plan.retry_after_seconds, "submit_status"
        )
    if counters.take(prompt, "quota_error", plan.quota_error):
        assert plan.quota_error is not None
        return FaultAction(
            "status", 402, plan.retry_after_seconds, "quota_error", plan.quota_error.value
        )
    fault = dice.first(["submit_500", "submit_429", "submit_503"])
    if fault is not None:
        return FaultAction("status", int(fault[-3:]), plan.retry_after_seconds, fault)
    return None


def decide_creation_faults(
    plan: FaultPlan, prompt: str, counters: FaultCounters, dice: FaultDice
) -> CreationFaults:
    """The faults of a task being created (markers first, then random faults).

    Examples:
        >>> plan = parse_fault_plan("p [[sim:task_error=service_error]] [[sim:images=2]]")
        >>> faults = decide_creation_faults(plan, "p", FaultCounters(), FaultDice({}, 0))
        >>> (faults.error_code, faults.images)
        ('service_error', 2)
        >>> plan = parse_fault_plan("p [[sim:submit_hang*1]]")
        >>> counters, dice = FaultCounters(), FaultDice({}, 0)
        >>> [decide_creation_faults(plan, "p", counters, dice).submit_hang for _ in range(2)]
        [True, False]
        >>> late = FaultDice({"submit_late": 1.0}, 0)
        >>> decide_creation_faults(FaultPlan(), "p", counters, late).submit_late
        True
        >>> plan = parse_fault_plan("c [[sim:create_then_status=502*1]] [[sim:cancel]]")
        >>> faults = decide_creation_faults(plan, "c", counters, dice)
        >>> faults.create_then_status, faults.cancelled
        (502, True)
        >>> decide_creation_faults(plan, "c", counters, dice).create_then_status is None
        True
    """
    error_code: str | None = None
    if counters.take(prompt, "task_error", plan.task_error):
        assert plan.task_error is not None
        error_code = plan.task_error.value
    else:
        random_error = dice.first(_RANDOM_TASK_ERRORS)
        if random_error is not None:
            error_code = _RANDOM_TASK_ERRORS[random_error]
    latency = (
        plan.latency.value
        if plan.latency is not None and counters.take(prompt, "latency", plan.latency)
        else None
    )
    images = (
        plan.images.value
        if plan.images is not None and counters.take(prompt, "images", plan.images)
        else None
    )
    extra_fields = counters.take(prompt, "extra_fields", plan.extra_fields)
    drop = counters.take(prompt, "drop_after_create", plan.drop_after_create)
    if not drop:
        drop = dice.roll("drop_after_create")
    delay = (
        plan.submit_delay.value
        if plan.submit_delay is not None
        and counters.take(prompt, "submit_delay", plan.submit_delay)
        else 0.0
    )
    hang = counters.take(prompt, "submit_hang", plan.submit_hang) or dice.roll("submit_hang")
    late = not hang and dice.roll("submit_late")
    cancelled = counters.take(prompt, "cancel", plan.cancel)
    create_then: int | None = None
    if counters.take(prompt, "create_then_status", plan.create_then_status):
        assert plan.create_then_status is not None
        create_then = plan.create_then_status.value
    elif not hang and dice.roll("create_then_500"):
        create_then = 500
    return CreationFaults(
        error_code, latency, images, extra_fields, drop, delay, hang, late, cancelled, create_then
    )


def decide_poll_fault(
    plan: FaultPlan, task_id: str, counters: FaultCounters, dice: FaultDice
) -> FaultAction | None:
    """Whether a poll of an existing task is answered with a fault.

    Examples:
        >>> plan = parse_fault_plan("p [[sim:poll_404*1]] [[sim:poll_malformed*1]]")
        >>> counters, dice = FaultCounters(), FaultDice({}, 0)
        >>> [getattr(decide_poll_fault(plan, "t", counters, dice), "kind", None)
        ...  for _ in range(3)]
        ['status', 'malformed', None]
    """
    retry_after = plan.retry_after_seconds
    if counters.take(task_id, "poll_404", plan.poll_404):
        return FaultAction("status", 404, retry_after, "poll_404")
    if counters.take(task_id, "poll_status", plan.poll_status):
        assert plan.poll_status is not None
        return FaultAction("status", plan.poll_status.value, retry_after, "poll_status")
    if counters.take(task_id, "poll_malformed", plan.poll_malformed):
        return FaultAction("malformed", None, retry_after, "poll_malformed")
    fault = dice.first(["poll_500", "poll_503", "poll_429"])
    if fault is not None:
        return FaultAction("status", int(fault[-3:]), retry_after, fault)
    return None


def decide_download_fault(
    plan: FaultPlan, url_scope: str, counters: FaultCounters, dice: FaultDice
) -> FaultAction | None:
    """Whether a result download is answered with a fault.

    Examples:
        >>> plan = parse_fault_plan("p [[sim:download=truncated*1]]")
        >>> counters, dice = FaultCounters(), FaultDice({}, 0)
        >>> decide_download_fault(plan, "t/0", counters, dice).kind
        'truncated'
        >>> decide_download_fault(plan, "t/0", counters, dice) is None
        True
    """
    retry_after = plan.retry_after_seconds
    if counters.take(url_scope, "download_status", plan.download_status):
        assert plan.download_status is not None
        return FaultAction("status", plan.download_status.value, retry_after, "download_status")
    if counters.take(url_scope, "download", plan.download):
        assert plan.download is not None
        kind = cast(FaultKind, plan.download.value)
        return FaultAction(kind, None, retry_after, "download")
    if dice.roll("download_500"):
        return FaultAction("status", 500, retry_after, "download_500")
    if dice.roll("download_truncated"):
        return FaultAction("truncated", None, retry_after, "download_truncated")
    return None


def decide_download_delay(plan: FaultPlan, url_scope: str, counters: FaultCounters) -> float:
    """Seconds a fault-free download pauses mid-body (``download_delay`` marker), else 0.

    Examples:
        >>> plan = parse_fault_plan("p [[sim:download_delay=1.5*1]]")
        >>> counters = FaultCounters()
        >>> [decide_download_delay(plan, "t/0", counters) for _ in range(2)]
        [1.5, 0.0]
        >>> decide_download_delay(plan, "t/1", counters)  # counted per result URL
        1.5
    """
    if plan.download_delay is None or not counters.take(
        url_scope, "download_delay", plan.download_delay
    ):
        return 0.0
    return plan.download_delay.value
