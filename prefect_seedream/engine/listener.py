"""How the engine tells the layer above it what happens, without importing that layer.

The engine calls a :class:`RunListener`; this one does nothing. The Prefect layer passes its
own (:class:`prefect_seedream.events.PrefectEvents`), which turns each call into a Prefect event;
a plain script or a unit test passes nothing, or a listener that records the calls.

Examples:
    >>> class Recorder(RunListener):
    ...     def __init__(self) -> None:
    ...         self.seen: list[str] = []
    ...     def generation_event(self, kind, task_id, **facts) -> None:
    ...         self.seen.append(f"{kind} {task_id}")
    >>> recorder = Recorder()
    >>> recorder.generation_event("submitted", "task-1", label="row-1")
    >>> recorder.seen
    ['submitted task-1']
"""

from __future__ import annotations

from typing import Any, Literal

GenerationEventKind = Literal["submitted", "completed", "failed"]


class RunListener:
    """What the engine reports as it goes; every method does nothing unless overridden."""

    def generation_event(
        self,
        kind: GenerationEventKind,
        task_id: str,
        *,
        label: str | None = None,
        model: str | None = None,
        payload: dict[str, Any] | None = None,
    ) -> None:
        """A remote task was ``submitted``, ``completed`` or ``failed``.

        Args:
            kind: What happened to the task.
            task_id: The remote task id.
            label: A readable name (row id or prompt slug).
            model: The model name.
            payload: Extra facts (credits, error code, image count, ...).
        """


#: The listener of code that does not listen.
NO_LISTENER = RunListener()
