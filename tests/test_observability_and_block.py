"""The credentials block, artifacts, events and task usage from sync flows."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from prefect import flow
from prefect.settings import PREFECT_API_URL
from pydantic import SecretStr

from prefect_seedream import GenerationRequest, SeedreamCredentials, generate_images
from prefect_seedream.simulator import RunningSimulator
from tests.helpers import run_dataset, write_csv
from tests.prefect_reads import artifacts_of, events_of_run, flow_run_id_of

pytestmark = pytest.mark.usefixtures("prefect_api")


async def test_block_saves_loads_and_builds_a_client(simulator: RunningSimulator) -> None:
    await SeedreamCredentials(api_key=SecretStr("sk-block-key"), base_url=simulator.base_url).save(
        "test-evolink", overwrite=True
    )

    loaded = await SeedreamCredentials.load("test-evolink")

    assert loaded.api_key.get_secret_value() == "sk-block-key"
    async with loaded.get_client() as client:
        assert client.base_url == simulator.base_url
        task = await client.submit(GenerationRequest(prompt="A block-made fox"))
    assert task.status.value == "pending"
    assert "sk-block-key" not in repr(loaded) + loaded.model_dump_json()


def test_block_registers_through_the_collections_entry_point() -> None:
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()}
    prefect = Path(sys.executable).with_name("prefect")

    result = subprocess.run(
        [str(prefect), "block", "register", "-m", "prefect_seedream"],
        env=env, capture_output=True, text=True, timeout=120,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert "Seedream Credentials" in result.stdout
    listing = subprocess.run(
        [str(prefect), "block", "type", "ls"], env=env, capture_output=True, text=True, timeout=120
    )
    assert "seedream-credentials" in listing.stdout


async def test_run_creates_progress_summary_rows_gallery_and_events(
    seedream_env: RunningSimulator, tmp_path: Path
) -> None:
    """(Changed with the redesign of rows: `seedream-summary` holds the counts, the rows are in
    `seedream-rows`; per-row events are the failures only by default, `row_events="all"` adds
    `.submitted` and `.completed`. Changed with issue 23: one rows table, failures first, with
    the API's code and message in their own columns, instead of `seedream-failures`.)"""
    rows = [
        {"id": "sunrise", "prompt": "A sunrise over dunes"},
        {"id": "refused", "prompt": "Refused [[sim:task_error=content_policy_violation]]"},
    ]
    state = await run_dataset(write_csv(tmp_path / "d.csv", rows), tmp_path / "out")
    run_id = flow_run_id_of(state)

    artifacts = {artifact.key: artifact for artifact in await artifacts_of(run_id)}

    assert set(artifacts) == {"seedream-progress", "seedream-summary", "seedream-rows", "seedream-gallery"}
    assert float(artifacts["seedream-progress"].data) == 100.0
    counts = {row["what"]: row["count"] for row in json.loads(artifacts["seedream-summary"].data)}
    assert (counts["rows succeeded"], counts["rows failed"], counts["rows in all"]) == (1, 1, 2)
    table = json.loads(artifacts["seedream-rows"].data)
    assert [(row["row"], row["status"]) for row in table] == [("refused", "failed"), ("sunrise", "succeeded")]
    assert table[0]["code"] == "content_policy_violation" and table[0]["message"]
    assert all(row["task id"].startswith("task-unified-") for row in table)
    gallery = artifacts["seedream-gallery"].data
    assert "![sunrise](data:image/jpeg;base64," in gallery
    assert str((tmp_path / "out" / "sunrise-1.png").resolve()) in gallery

    failed = await events_of_run(run_id, "seedream.generation.failed", expected=1)
    assert [e["resource"]["prefect.resource.name"] for e in failed] == ["refused"]
    assert failed[0]["resource"]["prefect.resource.id"].startswith("seedream.task.task-unified-")
    assert failed[0]["payload"]["code"] == "content_policy_violation"
    assert await events_of_run(run_id, "seedream.generation.submitted", expected=1, timeout=3) == []
    [finished] = await events_of_run(run_id, "seedream.dataset.", expected=1)
    assert finished["event"] == "seedream.dataset.failed"
    assert finished["payload"]["output"] == str(tmp_path / "out")
    assert finished["payload"]["failed"] == 1

    every = await run_dataset(
        write_csv(tmp_path / "d.csv", rows), tmp_path / "out-all", row_events="all"
    )
    every_id = flow_run_id_of(every)
    submitted = await events_of_run(every_id, "seedream.generation.submitted", expected=2)
    assert len(submitted) == 2
    assert all(e["resource"]["prefect.resource.id"].startswith("seedream.task.task-unified-") for e in submitted)
    completed = await events_of_run(every_id, "seedream.generation.completed", expected=1)
    assert [e["resource"]["prefect.resource.name"] for e in completed] == ["sunrise"]


def test_tasks_are_usable_from_a_sync_flow(seedream_env: RunningSimulator, tmp_path: Path) -> None:
    @flow
    def sync_pipeline(destination: str) -> list[str]:
        future = generate_images.submit(
            GenerationRequest(prompt="A sync-flow lighthouse"), destination, label="sync-row"
        )
        return [image.uri for image in future.result().images]

    uris = sync_pipeline(str(tmp_path / "sync"))

    assert uris == [str((tmp_path / "sync" / "sync-row-1.png").resolve())]
    assert Path(uris[0]).stat().st_size > 0
