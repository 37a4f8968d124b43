"""Prefect events for each generation, so automations can react to them.

Events are named ``seedream.generation.<kind>`` with the remote task as their
resource (``seedream.task.<task id>``); Prefect relates them to the current
flow and task run.
"""

from __future__ import annotations

from typing import Any

from prefect.events import emit_event

from prefect_seedream.engine.listener import GenerationEventKind, RunListener

EVENT_PREFIX = "seedream.generation"


def task_resource_id(task_id: str) -> str:
    """The Prefect resource id of a remote task.

    Examples:
        >>> task_resource_id("task-unified-1-abc")
        'seedream.task.task-unified-1-abc'
    """
    return f"seedream.task.{task_id}"


def emit_generation_event(
    kind: GenerationEventKind,
    task_id: str,
    *,
    label: str | None = None,
    model: str | None = None,
    payload: dict[str, Any] | None = None,
) -> None:
    """Emit ``seedream.generation.<kind>`` for a remote task.

    Args:
        kind: ``submitted``, ``completed`` or ``failed``.
        task_id: The remote task id.
        label: A readable name (row id or prompt slug).
        model: The model name.
        payload: Extra facts (credits, error code, image count, ...).
    """
    resource = {
        "prefect.resource.id": task_resource_id(task_id),
        "prefect.resource.name": label or task_id,
    }
    if model:
        resource["seedream.model"] = model
    emit_event(event=f"{EVENT_PREFIX}.{kind}", resource=resource, payload=payload or {})


def emit_dataset_event(
    succeeded: bool, *, dataset: str, output: str, payload: dict[str, Any]
) -> None:
    """Emit ``seedream.dataset.completed`` or ``seedream.dataset.failed`` when a run ends.

    The resource is ``seedream.dataset.<output>``; the payload carries ``dataset``,
    ``output`` and the run's counts, so an automation can run ``recover_dataset`` on it.
    """
    emit_event(
        event=f"seedream.dataset.{'completed' if succeeded else 'failed'}",
        resource={"prefect.resource.id": f"seedream.dataset.{output}", "prefect.resource.name": output},
        payload={"dataset": dataset, "output": output, **payload},
    )


class PrefectEvents(RunListener):
    """The engine's listener in a Prefect run: each generation event becomes a Prefect event
    (the tasks and flows give :data:`PREFECT_EVENTS` to their
    :class:`~prefect_seedream.engine.generation.StepReporter`)."""

    def generation_event(self, kind: GenerationEventKind, task_id: str, **facts: Any) -> None:
        """Emit ``seedream.generation.<kind>`` (see :func:`emit_generation_event`)."""
        emit_generation_event(kind, task_id, **facts)


#: The listener the tasks and flows give the engine.
PREFECT_EVENTS = PrefectEvents()
