"""The manifest of a stopped run: written by the flow's cancellation and crash hooks.

The manifest is the run's part files in row order, with every row no part covers (a batch or
shard that never finished) filled from the ledger. So a run that is cancelled or crashes
(``on_cancellation`` / ``on_crashed``, which Prefect may run in another process than the
run's) still leaves a manifest with one line per input row, saying what was done: stored
rows ``succeeded``, tasks in flight ``in_flight`` (collect them with ``recover``),
submissions without a recorded answer ``outcome_unknown``, the rest ``skipped``. What the run
was (its dataset, API and options) is read from the ``run.json`` it wrote when it started. A
run killed outright (SIGKILL) gets its manifest from the next run.
"""

from __future__ import annotations

from typing import Any

from prefect.states import State

from prefect_seedream.engine.options import dataset_storage_options_for
from prefect_seedream.engine.run_folder import RunParts
from prefect_seedream.engine.storage import ImageStore
from prefect_seedream.engine.summary import DatasetRunSummary
from prefect_seedream.runs import merge_manifest


def record_stopped_run(flow: Any, flow_run: Any, state: State) -> None:
    """``on_cancellation`` / ``on_crashed`` hook: write the manifest of what was done.

    Remote tasks in flight cannot be cancelled (the API has no cancel endpoint);
    their ids are already in the ledger, and the manifest lists them ``in_flight``.
    """
    parameters = flow_run.parameters
    output = parameters.get("output", "output")
    if parameters.get("dry_run") or not isinstance(output, str):
        return
    storage_options = parameters.get("storage_options")
    store = ImageStore(output, storage_options)
    parts = RunParts(store, str(flow_run.id))
    run = parts.description()
    if run is None:  # stopped before any row ran: nothing to tell
        return
    options = run.options.model_copy(update={  # run.json holds no fsspec options
        "storage_options": storage_options,
        "dataset_storage_options": dataset_storage_options_for(
            run.dataset, output, storage_options, parameters.get("dataset_storage_options")
        ),
    })
    uri = merge_manifest(
        store, parts, run.dataset, run.api, options, run.total_rows, str(flow_run.id),
        DatasetRunSummary(), None,
    )
    print(f"Run {state.type.value.lower()}: manifest of what was done written to {uri}")
