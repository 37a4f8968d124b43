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

import inspect
from typing import Any

from prefect.states import State
from pydantic import ValidationError

from prefect_seedream.engine.options import RunOptions
from prefect_seedream.engine.output import Output
from prefect_seedream.engine.summary import DatasetRunSummary
from prefect_seedream.runs import merge_manifest


def record_stopped_run(flow: Any, flow_run: Any, state: State) -> None:
    """``on_cancellation`` / ``on_crashed`` hook: write the manifest of what was done.

    Remote tasks in flight cannot be cancelled (the API has no cancel endpoint);
    their ids are already in the ledger, and the manifest lists them ``in_flight``.
    """
    parameters = call_parameters(flow, flow_run.parameters)
    uri = parameters.get("output")
    if parameters.get("dry_run") or not isinstance(uri, str):
        return
    try:
        given = RunOptions.from_parameters(parameters)
    except ValidationError:  # the run refused its parameters: it ran nothing
        return
    output = Output.open(uri, given.storage_options)
    parts = output.run_folder(str(flow_run.id))
    run = parts.description()
    if run is None:  # stopped before any row ran: nothing to tell
        return
    # run.json holds no fsspec options: those the run was called with are given back.
    options = run.options.with_storage_options_of(given).for_dataset(run.dataset, uri)
    manifest = merge_manifest(
        output, parts, run.model_copy(update={"options": options}), DatasetRunSummary(), None,
    )
    print(f"Run {state.type.value.lower()}: manifest of what was done written to {manifest}")


def call_parameters(flow: Any, parameters: dict[str, Any]) -> dict[str, Any]:
    """A flow run's parameters, with the flow's defaults of those it was not given (a
    deployment's run holds only the parameters it was given).

    Examples:
        >>> def flow(dataset: str, output: str = "output", dry_run: bool = False): ...
        >>> class Flow:
        ...     fn = staticmethod(flow)
        >>> call_parameters(Flow(), {"dataset": "rows.csv", "dry_run": True})
        {'output': 'output', 'dry_run': True, 'dataset': 'rows.csv'}
    """
    defaults = {
        name: parameter.default
        for name, parameter in inspect.signature(flow.fn).parameters.items()
        if parameter.default is not inspect.Parameter.empty
    }
    return {**defaults, **parameters}
