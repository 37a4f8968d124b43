"""Big datasets: one task run per batch of consecutive rows, under a real Prefect API."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from prefect_seedream.simulator import RunningSimulator
from tests.helpers import manifest, run_dataset, summary_of, write_csv
from tests.prefect_reads import artifacts_of, flow_run_id_of, task_runs_by_name

pytestmark = pytest.mark.usefixtures("prefect_api")

POLICY = "[[sim:task_error=content_policy_violation]]"


async def test_batches_are_task_runs_and_the_run_has_the_rows_table(
    seedream_env: RunningSimulator, tmp_path: Path
) -> None:
    rows = [{"id": f"r{n}", "prompt": f"A lantern, view {n}"} for n in range(1, 11)]
    rows[5]["prompt"] = f"Forbidden {POLICY}"  # row 6, in the second batch
    dataset = write_csv(tmp_path / "d.csv", rows)
    output = tmp_path / "out"

    state = await run_dataset(dataset, output, rows_per_task=4, max_concurrency=6)

    assert state.is_failed()
    run_id = flow_run_id_of(state)
    runs = await task_runs_by_name(run_id)
    assert sorted(runs) == ["rows-1-4", "rows-5-8", "rows-9-10"]
    assert runs["rows-1-4"].state.is_completed() and runs["rows-9-10"].state.is_completed()
    assert runs["rows-5-8"].state.is_failed()
    assert runs["rows-5-8"].state.message == "rows 5-8: 3 succeeded, 1 failed"

    # One line per row in input order, whatever order the batches finished in.
    lines = manifest(output)
    assert [line["row_id"] for line in lines] == [f"r{n}" for n in range(1, 11)]
    assert lines[5]["status"] == "failed" and lines[5]["error"]["code"] == "content_policy_violation"
    assert seedream_env.stats()["tasks_created"] == 10
    summary = await summary_of(state)
    assert (summary.rows, summary.succeeded, summary.failed) == (10, 9, 1)

    # (Changed with issue 23: a batch writes no table; the run's rows table lists every row,
    # the refused one first, with its remote task id.)
    artifacts = await artifacts_of(run_id)
    assert not [a for a in artifacts if a.task_run_id is not None]
    table = json.loads(next(a for a in artifacts if a.key == "seedream-rows").data)
    assert table[0]["row"] == "r6" and table[0]["task id"] == lines[5]["task_id"]
    assert table[0]["code"] == "content_policy_violation"
    assert not list((output / ".seedream").glob("runs/*"))  # parts merged, then removed

    # A re-run creates nothing new and gives the same manifest.
    again = await run_dataset(dataset, output, rows_per_task=4)
    assert again.is_failed()
    assert seedream_env.stats()["tasks_created"] == 10
    assert [line["task_id"] for line in manifest(output)] == [line["task_id"] for line in lines]


async def test_big_dataset_is_batched_by_default(seedream_env: RunningSimulator, tmp_path: Path) -> None:
    rows = [{"id": f"r{n}", "prompt": f"A kite over dunes, take {n}"} for n in range(1, 53)]

    state = await run_dataset(write_csv(tmp_path / "d.csv", rows), tmp_path / "out", max_concurrency=16)

    assert state.is_completed(), state.message
    runs = await task_runs_by_name(flow_run_id_of(state))
    # 52 rows > 50: ceil(52 / 50) = 2 rows per task run.
    assert sorted(runs, key=lambda name: int(name.split("-")[1])) == [
        f"rows-{first}-{first + 1}" for first in range(1, 53, 2)
    ]
    assert all(run.state.is_completed() for run in runs.values())
    assert len(manifest(tmp_path / "out")) == 52
    assert seedream_env.stats()["tasks_created"] == 52
