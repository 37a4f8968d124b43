"""In-process listeners for row outcomes (the command line's progress bar uses it)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from prefect_seedream.manifest import ManifestLine

RowListener = Callable[[ManifestLine], None]
TotalListener = Callable[[int], None]
_listeners: list[RowListener] = []
_total_listeners: list[TotalListener] = []


@contextmanager
def listening(listener: RowListener, on_total: TotalListener | None = None) -> Iterator[None]:
    """Call ``listener`` with each finished row (and ``on_total`` with the row count).

    Examples:
        ```python
        with listening(lambda line: print(line.row_id, line.status)):
            generate_dataset("prompts.csv", "output")
        ```
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
    for listener in list(_total_listeners):
        listener(rows)


def notify(line: ManifestLine) -> None:
    """Tell every listener that a row finished."""
    for listener in list(_listeners):
        listener(line)
