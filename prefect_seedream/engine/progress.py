"""In-process listeners for row outcomes (the command line's progress bar uses it)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from prefect_seedream.engine.defaults import PROGRESS_LOG_STEP
from prefect_seedream.engine.manifest import ManifestLine, RunLine

RowListener = Callable[[ManifestLine], None]
TotalListener = Callable[[int], None]
_listeners: list[RowListener] = []
_total_listeners: list[TotalListener] = []


@contextmanager
def listening(listener: RowListener, on_total: TotalListener | None = None) -> Iterator[None]:
    """Call ``listener`` with each finished row (and ``on_total`` with the row count) of the
    runs in this process (``generate_dataset(...)`` called within the block, say).

    Examples:
        >>> with listening(lambda line: print(line.row_id, line.status), on_total=print):
        ...     notify_total(1)  # what a run does: the row count, then each row
        ...     notify(ManifestLine(row_id="fox", row_number=1, prompt="A red fox", model=None,
        ...                         status="succeeded"))
        1
        fox succeeded
        >>> notify_total(1)  # after the block: nobody listens
    """
    _listeners.append(listener)
    if on_total is not None:
        _total_listeners.append(on_total)
    try:
        yield
    finally:
        _listeners.remove(listener)
        if on_total is not None:
            _total_listeners.remove(on_total)


def notify_total(rows: int) -> None:
    """Tell every listener how many rows the dataset has."""
    for listener in _total_listeners:
        listener(rows)


def notify(line: ManifestLine) -> None:
    """Tell every listener that a row finished."""
    for listener in _listeners:
        listener(line)


class RunProgress:
    """A run's progress: the progress artifact, the in-process listeners and a log line at
    each tenth of the rows (never one per row).

    Args:
        total: Rows in the run.
        artifact: The progress artifact, or None (a shard reports through its parts).
        logger: Where the progress lines go.

    Examples:
        >>> import logging
        >>> progress = RunProgress(total=10, artifact=None, logger=logging.getLogger("docs"))
        >>> progress.row_done(RunLine(line=ManifestLine(row_id="fox", row_number=1,
        ...     prompt="A red fox", model=None, status="failed")))
        >>> progress.done, progress.not_succeeded
        (1, 1)
    """

    def __init__(self, total: int, artifact: Any, logger: Any, log_step: float = PROGRESS_LOG_STEP) -> None:
        self.total = max(total, 1)
        self.artifact = artifact
        self.logger = logger
        self.step = max(1, int(self.total * log_step))
        self.done = 0
        self.not_succeeded = 0
        self._next_log = self.step

    def row_done(self, item: RunLine) -> None:
        """Count a finished row."""
        self.done += 1
        self.not_succeeded += item.line.status != "succeeded"
        if self.artifact is not None:
            self.artifact.advance()
        notify(item.line)
        if self.done >= self._next_log and self.done < self.total:
            self._next_log += self.step
            self.logger.info(
                "%d of %d rows done (%d%%), %d did not succeed", self.done, self.total,
                100 * self.done // self.total, self.not_succeeded,
            )
