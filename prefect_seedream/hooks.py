"""Writing a dataset run's manifest: at the end of a run, and when a run is stopped.

The manifest is the run's part files in row order, with every row no part covers (a batch or
shard that never finished) filled from the ledger. So a run that is cancelled or crashes
(``on_cancellation`` / ``on_crashed``) still leaves a manifest with one line per input row,
saying what was done: stored rows ``succeeded``, tasks in flight ``in_flight`` (collect them
with ``recover``), submissions without a recorded answer ``outcome_unknown``, the rest
``skipped``. A run killed outright (SIGKILL) gets its manifest from the next run.
"""

from __future__ import annotations

import inspect
from typing import Any

from prefect.states import State

from prefect_seedream.artifacts import RunTables
from prefect_seedream.dataset import RowDefaults
from prefect_seedream.execution import RunSettings
from prefect_seedream.ledger import TaskLedger
from prefect_seedream.lines import lines_from_ledger
from prefect_seedream.parts import RunParts
from prefect_seedream.storage import ImageStore
from prefect_seedream.summary import DatasetRunSummary


def _merge(
    store: ImageStore, parts: RunParts, dataset: str, defaults: RowDefaults, total_rows: int | None,
    summary: DatasetRunSummary, tables: RunTables | None,
) -> str:
    ledger = TaskLedger(store)

    def on_line(item: Any) -> None:
        summary.add(item)
        if tables is not None:
            tables.add(item.line)

    uri = parts.merge(
        total_rows,
        lambda first, last: lines_from_ledger(dataset, ledger, defaults, first, last),
        on_line,
    )
    parts.remove()
    return uri


def write_manifest(
    store: ImageStore,
    parts: RunParts,
    settings: RunSettings,
    total_rows: int,
    summary: DatasetRunSummary,
    tables: RunTables,
) -> str:
    """Write the manifest of a finished run; ``summary`` and ``tables`` count its lines.

    Returns:
        The manifest's URI.
    """
    return _merge(store, parts, settings.dataset, settings.defaults, total_rows, summary, tables)


def record_stopped_run(flow: Any, flow_run: Any, state: State) -> None:
    """``on_cancellation`` / ``on_crashed`` hook: write the manifest of what was done.

    Remote tasks in flight cannot be cancelled (the API has no cancel endpoint);
    their ids are already in the ledger, and the manifest lists them ``in_flight``.
    """
    bound = inspect.signature(flow.fn).bind_partial(**flow_run.parameters)
    bound.apply_defaults()
    params = bound.arguments
    if params["dry_run"]:
        return
    defaults = RowDefaults(
        model=params["model"], size=params["size"], n=params["n"], prompt_priority=params["prompt_priority"]
    )
    store = ImageStore(params["output"], params["storage_options"])
    parts = RunParts(store, str(flow_run.id))
    uri = _merge(store, parts, params["dataset"], defaults, None, DatasetRunSummary(), None)
    print(f"Run {state.type.value.lower()}: manifest of what was done written to {uri}")
