"""JSON bodies of task objects, shaped exactly like the contract's examples.

A submit answer::

    {"created": 1757165031, "id": "task-unified-1757165031-ab12cd34",
     "model": "doubao-seedream-4.5", "object": "image.generation.task", "progress": 0,
     "status": "pending", "task_info": {"can_cancel": true, "estimated_time": 2},
     "type": "image",
     "usage": {"billing_rule": "per_call", "credits_reserved": 2.0, "user_group": "default"}}

A poll adds ``results`` and ``result_data`` (completed) or ``error`` (failed), ``task_info.can_cancel`` false and
``usage.credits_used`` once the task is terminal (``cancelled`` tasks have neither ``results``
nor ``error``, and ``credits_used`` 0). The same body is used for the entries of
``GET /v1/tasks`` (plus ``prompt`` when ``SimulatorConfig.task_list_echoes_prompt``) and for
idempotent replays. ``result_data`` lists the same URLs as ``results``, in the same order,
as ``[{"result_id": "<task id>-<index>", "image_url": URL}, ...]`` (Evolink's client reads
both); a layerize task's first result is its base image, the others its layers.
"""

from __future__ import annotations

import math
from typing import Any

from .config import SimulatorConfig
from .images import EXTENSIONS
from .state import SimTask

OBJECT_TYPE = "image.generation.task"


def _credits(amount: float) -> float:
    return round(amount, 6)


def _usage(task: SimTask, used: int | None) -> dict[str, Any]:
    usage: dict[str, Any] = {
        "billing_rule": "per_call",
        "credits_reserved": _credits(task.model.credits_per_image * task.n),
        "user_group": "default",
    }
    if used is not None:
        usage["credits_used"] = _credits(task.model.credits_per_image * used)
    if task.extra_fields:
        usage["x_sim_discount"] = 0.0
    return usage


def _with_extra_fields(task: SimTask, body: dict[str, Any]) -> dict[str, Any]:
    if task.extra_fields:
        body["task_info"]["queue_position"] = 0
        body["x_sim_extra"] = {"note": "unknown field: clients must ignore it"}
        body["request_id"] = f"req-{task.id[-8:]}"
    return body


def result_urls(task: SimTask, base_url: str, config: SimulatorConfig) -> list[str]:
    """The result URLs of a task, served by the simulator under ``base_url``.

    Examples:
        >>> from prefect_seedream.simulator.rules import MODEL_RULES
        >>> from prefect_seedream.simulator.faults import FaultPlan
        >>> task = SimTask("task-unified-1-abcdefgh", "k", MODEL_RULES["doubao-seedream-4.5"],
        ...                "p", 2, 2, 2048, 2048, 1, 0.0, 1.0, None, False, FaultPlan())
        >>> for url in result_urls(task, "http://127.0.0.1:8787/", SimulatorConfig()):
        ...     print(url)
        http://127.0.0.1:8787/files/task-unified-1-abcdefgh/0.png
        http://127.0.0.1:8787/files/task-unified-1-abcdefgh/1.png
    """
    base = base_url.rstrip("/")
    return [
        f"{base}/files/{task.id}/{index}.{EXTENSIONS[task.image_format(index, config.image_format)]}"
        for index in range(task.image_count)
    ]


def result_data(task: SimTask, urls: list[str]) -> list[dict[str, str]]:
    """The ``result_data`` entries of a completed task whose ``results`` are ``urls``.

    Examples:
        >>> from prefect_seedream.simulator.rules import MODEL_RULES
        >>> from prefect_seedream.simulator.faults import FaultPlan
        >>> task = SimTask("task-unified-1-abcdefgh", "k", MODEL_RULES["doubao-seedream-4.5"],
        ...                "p", 1, 1, 2048, 2048, 1, 0.0, 1.0, None, False, FaultPlan())
        >>> result_data(task, ["http://h/files/task-unified-1-abcdefgh/0.png"])
        [{'result_id': 'task-unified-1-abcdefgh-0', 'image_url': 'http://h/files/task-unified-1-abcdefgh/0.png'}]
    """
    return [{"result_id": f"{task.id}-{index}", "image_url": url} for index, url in enumerate(urls)]


def submit_payload(task: SimTask, config: SimulatorConfig) -> dict[str, Any]:
    """The HTTP 200 body of a successful submit.

    Examples:
        >>> from prefect_seedream.simulator.rules import MODEL_RULES
        >>> from prefect_seedream.simulator.faults import FaultPlan
        >>> task = SimTask("task-unified-1-abcdefgh", "k", MODEL_RULES["doubao-seedream-4.0"],
        ...                "p", 2, 2, 2048, 2048, 1, 0.0, 1.0, None, False, FaultPlan())
        >>> submit_payload(task, SimulatorConfig())["usage"]["credits_reserved"]
        3.0
    """
    body: dict[str, Any] = {
        "created": task.created,
        "id": task.id,
        "model": task.model.name,
        "object": OBJECT_TYPE,
        "progress": 0,
        "status": "pending",
        "task_info": {"can_cancel": True, "estimated_time": config.effective_estimated_time},
        "type": "image",
        "usage": _usage(task, None),
    }
    return _with_extra_fields(task, body)


def task_payload(
    task: SimTask,
    now: float,
    base_url: str,
    config: SimulatorConfig,
    status: str | None = None,
) -> dict[str, Any]:
    """The HTTP 200 body of a poll at state-clock time ``now``.

    Args:
        task: The task.
        now: State-clock time.
        base_url: Root URL of the simulator (for result URLs).
        config: The simulator's configuration.
        status: Status shown instead of pending/processing (``[[sim:unknown_status]]``, see
            :meth:`SimulatorState.visible_status`); ignored once the task is terminal.

    Examples:
        >>> from prefect_seedream.simulator.rules import MODEL_RULES
        >>> from prefect_seedream.simulator.faults import FaultPlan
        >>> task = SimTask("task-unified-1-abcdefgh", "k", MODEL_RULES["doubao-seedream-4.5"],
        ...                "p", 1, 1, 2048, 2048, 1, 0.0, 1.0, "service_error", False,
        ...                FaultPlan())
        >>> body = task_payload(task, 2.0, "http://127.0.0.1:8787/", SimulatorConfig())
        >>> body["status"], body["error"]["code"], body["usage"]["credits_used"]
        ('failed', 'service_error', 0.0)
        >>> body = task_payload(task, 0.5, "http://127.0.0.1:8787/", SimulatorConfig(),
        ...                     status="queued")
        >>> body["status"], body["progress"], body["task_info"]["estimated_time"]
        ('queued', 50, 1)
    """
    actual, progress = task.status_at(now)
    body: dict[str, Any] = {
        "created": task.created,
        "id": task.id,
        "model": task.model.name,
        "object": OBJECT_TYPE,
        "progress": progress,
        "status": actual,
    }
    if actual == "completed":
        body["results"] = result_urls(task, base_url, config)
        body["result_data"] = result_data(task, body["results"])
        body["task_info"] = {"can_cancel": False}
        used: int | None = task.image_count
    elif actual == "failed":
        code = task.error_code or "unknown_error"
        message = task.error_message or f"simulated failure: {code}"
        body["error"] = {"code": code, "message": message}
        body["task_info"] = {"can_cancel": False}
        used = 0
    elif actual == "cancelled":
        body["task_info"] = {"can_cancel": False}
        used = 0
    else:
        if status is not None:
            body["status"] = status
        remaining = max(0, math.ceil(task.scheduled_end - now))
        body["task_info"] = {"can_cancel": True, "estimated_time": remaining}
        used = None
    body["type"] = "image"
    body["usage"] = _usage(task, used)
    return _with_extra_fields(task, body)
