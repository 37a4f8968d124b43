"""``POST /v1/tasks/batch``: the status of many tasks in one read.

Evolink's client reads up to 50 tasks at once with ``{"task_ids": [...]}`` and gets
``{"data": [task, ...]}``: ids that are unknown, expired, malformed or another key's are left
out (no error). Each task is shown exactly as ``GET /v1/tasks/{id}`` shows it, and a batch
read counts as a poll of each task it answers (``[[sim:unknown_status]]`` markers are used up
as by a ``GET``).

Poll fault markers (``poll_404``, ``poll_status``, ``poll_malformed``) are per-request faults of
the single read: a task with such a marker still to fire is left out of a batch answer, so a
client that reads a missing task alone (as it should) meets the fault on its ``GET``. The random
poll faults (``poll_500``, ``poll_503``, ``poll_429`` fault rates) are rolled once per batch
request and fail the whole request.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from .errors import SimulatorHTTPError
from .faults import FaultCounters, FaultPlan

#: Most ids one batch read may ask for (more is answered 400).
MAX_BATCH_IDS = 50


def parse_batch_ids(raw: bytes) -> list[str]:
    """The task ids of a batch read's body, without duplicates, in the order given.

    Raises:
        SimulatorHTTPError: 400 when the body is not ``{"task_ids": [str, ...]}`` with at
            most :data:`MAX_BATCH_IDS` ids.

    Examples:
        >>> parse_batch_ids(b'{"task_ids": ["a", "b", "a"]}')
        ['a', 'b']
        >>> parse_batch_ids(b'{"task_ids": []}')
        []
        >>> parse_batch_ids(json.dumps({"task_ids": ["t"] * 51}).encode())
        Traceback (most recent call last):
        ...
        prefect_seedream.simulator.errors.SimulatorHTTPError: task_ids holds 51 ids; at most 50 per request
    """
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise SimulatorHTTPError(400, "Malformed JSON body") from None
    ids = body.get("task_ids") if isinstance(body, dict) else None
    if not isinstance(ids, list) or not all(isinstance(item, str) for item in ids):
        raise SimulatorHTTPError(400, "task_ids must be a list of task ids", param="task_ids")
    if len(ids) > MAX_BATCH_IDS:
        raise SimulatorHTTPError(
            400,
            f"task_ids holds {len(ids)} ids; at most {MAX_BATCH_IDS} per request",
            param="task_ids",
        )
    return list(dict.fromkeys(ids))


def poll_fault_pending(plan: FaultPlan, task_id: str, counters: FaultCounters) -> bool:
    """Whether a poll fault marker of the task would fire on its next ``GET`` (nothing used up).

    Examples:
        >>> from prefect_seedream.simulator.faults import parse_fault_plan
        >>> counters = FaultCounters()
        >>> plan = parse_fault_plan("p [[sim:poll_status=503*1]]")
        >>> poll_fault_pending(plan, "t", counters)
        True
        >>> counters.take("t", "poll_status", plan.poll_status)
        True
        >>> poll_fault_pending(plan, "t", counters)
        False
    """
    return (
        counters.peek(task_id, "poll_404", plan.poll_404)
        or counters.peek(task_id, "poll_status", plan.poll_status)
        or counters.peek(task_id, "poll_malformed", plan.poll_malformed)
    )


def batch_body(tasks: list[dict[str, Any]]) -> dict[str, Any]:
    """The 200 body of a batch read.

    Examples:
        >>> batch_body([{"id": "t"}])
        {'data': [{'id': 't'}]}
    """
    return {"data": tasks}


@dataclass
class ReadCounters:
    """Requests to the batch read and balance routes (``GET /_sim/stats`` shows them).

    Attributes:
        batch_requests: ``POST /v1/tasks/batch`` requests, whatever they were answered.
        batch_task_reads: Tasks answered by batch reads (each also counts as one of ``polls``).
        credits_requests: ``GET /v1/credits`` requests, whatever they were answered.

    Examples:
        >>> ReadCounters(batch_requests=2, batch_task_reads=90).as_dict(polls=95)["status_requests"]
        7
    """

    batch_requests: int = 0
    batch_task_reads: int = 0
    credits_requests: int = 0

    def as_dict(self, *, polls: int) -> dict[str, int]:
        """The counters, plus ``get_task_requests`` and ``status_requests`` (HTTP requests that
        read task status: every ``GET /v1/tasks/{id}`` and every batch request) given the
        state's ``polls`` (task reads: one per ``GET``, one per task of a batch answer)."""
        get_requests = polls - self.batch_task_reads
        return {
            **asdict(self),
            "get_task_requests": get_requests,
            "status_requests": get_requests + self.batch_requests,
        }
