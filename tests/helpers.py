"""Helpers shared by the Prefect-level tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from prefect.states import State

from prefect_seedream.flows import DatasetRunSummary, generate_dataset

#: Options that keep test runs fast: quick polls and retry delays.
FAST = {"poll_interval": 0.05, "retry_delay_seconds": 0.05, "max_wait_seconds": 30.0}


def write_csv(path: Path, rows: list[dict[str, Any]]) -> Path:
    """A CSV dataset with the union of the rows' keys as its header."""
    import csv

    fields: list[str] = []
    for row in rows:
        fields.extend(key for key in row if key not in fields)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    return path


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    """A JSONL dataset, one JSON value per line."""
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


async def run_dataset(dataset: Path | str, output: Path | str, **options: Any) -> State:
    """Run the dataset flow with fast options and return its final state."""
    params = {**FAST, **options}
    return await generate_dataset(str(dataset), str(output), return_state=True, **params)


async def summary_of(state: State) -> DatasetRunSummary:
    """The run summary carried by a final state (Completed or Failed)."""
    summary = await state.aresult(raise_on_failure=False)
    assert isinstance(summary, DatasetRunSummary), state
    return summary


def manifest(output: Path) -> list[dict[str, Any]]:
    """The manifest's lines as dicts."""
    text = (output / "manifest.jsonl").read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]
