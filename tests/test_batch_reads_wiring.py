"""Every entry point reads task status in batches, with no change to its callers: the dataset
flow and ``generate_many`` share one client per run, so one status reader per run."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prefect import flow

from prefect_seedream import GenerationRequest, generate_dataset, generate_many
from prefect_seedream.clients import api_client, shared_clients
from prefect_seedream.simulator import RunningSimulator, SimulatorConfig, running_simulator
from tests.conftest import TEST_API_KEY
from tests.helpers import manifest

ROWS = 12
#: Tasks of 0.5 s announced at 1 s; polls every second: without batches, 12 rows cost 12 GETs.
OPTIONS = {"poll_interval": 1.0, "retry_delay_seconds": 0.05, "max_wait_seconds": 30.0}


@pytest.fixture
def batch_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[RunningSimulator]:
    config = SimulatorConfig(latency_seconds=0.5, jitter_seconds=0.0, estimated_time=1)
    with running_simulator(config) as sim:
        monkeypatch.setenv("SEEDREAM_API_KEY", TEST_API_KEY)
        monkeypatch.setenv("SEEDREAM_BASE_URL", sim.base_url)
        yield sim


def assert_read_in_batches(sim: RunningSimulator) -> None:
    stats = sim.stats()
    assert stats["tasks_created"] == ROWS
    assert stats["batch_requests"] >= 1 and stats["batch_task_reads"] >= ROWS // 2, stats
    assert stats["status_requests"] <= ROWS // 2, stats  # not one GET per row


async def test_one_reader_per_shared_client(batch_env: RunningSimulator) -> None:
    async with shared_clients():
        async with api_client(None) as first, api_client(None) as second:
            assert first is second and first.status_reader is second.status_reader
        reader = first.status_reader
    assert not reader.running


@pytest.mark.usefixtures("prefect_api")
async def test_the_dataset_flow_reads_in_batches(batch_env: RunningSimulator, tmp_path: Path) -> None:
    rows = [{"id": f"row-{i}", "prompt": f"a paper lantern number {i}"} for i in range(ROWS)]
    state = await generate_dataset(
        rows, output=str(tmp_path / "out"), max_concurrency=ROWS, return_state=True, **OPTIONS
    )
    assert state.is_completed(), state.message
    assert [line["status"] for line in manifest(tmp_path / "out")] == ["succeeded"] * ROWS
    assert_read_in_batches(batch_env)


@pytest.mark.usefixtures("prefect_api")
async def test_generate_many_reads_in_batches(batch_env: RunningSimulator, tmp_path: Path) -> None:
    requests = [GenerationRequest(prompt=f"a paper crane number {i}") for i in range(ROWS)]

    @flow
    async def content_team() -> list[Any]:
        return await generate_many(requests, str(tmp_path / "many"), max_concurrency=ROWS, **OPTIONS)

    results = await content_team()
    assert [result.ok for result in results] == [True] * ROWS
    assert_read_in_batches(batch_env)
