"""Cancelling a deployed dataset run, then collecting what it left in flight."""

import json
import sys
import time
from pathlib import Path

import pytest

from prefect_seedream.flows import recover_dataset
from prefect_seedream.simulator import SimulatorConfig, running_simulator
from tests.browser.prefect_ui import serve_deployment, start_prefect_server

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

REPO = Path(__file__).resolve().parents[1]
DEPLOYMENT = "seedream-generate-dataset/generate-dataset"


def _wait(predicate, timeout: float, what: str):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def _ledger(output: Path) -> list[dict]:
    folder = output / ".seedream" / "tasks"
    return [json.loads(p.read_text()) for p in folder.glob("*.json")] if folder.exists() else []


async def test_cancelled_run_stops_submitting_and_recover_collects_in_flight(
    tmp_path: Path, prefect_api: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = "".join(f"r{i},Slow scene {i}\n" for i in range(12))
    (tmp_path / "slow.csv").write_text("id,prompt\n" + rows, encoding="utf-8")
    output = tmp_path / "out"
    config = SimulatorConfig(latency_seconds=12.0, jitter_seconds=0.0)
    with running_simulator(config) as simulator, start_prefect_server(tmp_path / "srv") as server:
        env = {"SEEDREAM_API_KEY": "sk-cancel-test", "SEEDREAM_BASE_URL": simulator.base_url}
        argv = [sys.executable, str(REPO / "deployments" / "serve.py")]
        with serve_deployment(server, argv, DEPLOYMENT, tmp_path, extra_env=env, cwd=tmp_path) as dep:
            run = server.api("POST", f"/deployments/{dep.id}/create_flow_run", {
                "parameters": {"dataset": "slow.csv", "output": str(output), "max_concurrency": 3,
                               "poll_interval": 0.5},
            })
            _wait(lambda: len(_ledger(output)) >= 3, 240, "three submissions")

            server.api("POST", f"/flow_runs/{run['id']}/set_state", {
                "state": {"type": "CANCELLING", "name": "Cancelling"}, "force": True,
            })
            _wait(lambda: server.api("GET", f"/flow_runs/{run['id']}")["state"]["type"] == "CANCELLED",
                  120, "the run to be cancelled")
            submitted = simulator.stats()["tasks_created"]
            time.sleep(3)  # nothing new is submitted after the cancellation
            assert simulator.stats()["tasks_created"] == submitted
            assert 3 <= submitted < 12

            manifest = _wait(lambda: (output / "manifest.jsonl").exists()
                             and (output / "manifest.jsonl").read_text(), 60, "the manifest")
        lines = [json.loads(line) for line in manifest.splitlines()]
        assert len(lines) == 12
        in_flight = [line for line in lines if line["status"] == "in_flight"]
        assert len(in_flight) == submitted and all(line["task_id"] for line in in_flight)
        assert all(line["status"] == "skipped" for line in lines if line not in in_flight)

        monkeypatch.setenv("SEEDREAM_API_KEY", "sk-cancel-test")
        monkeypatch.setenv("SEEDREAM_BASE_URL", simulator.base_url)
        state = await recover_dataset(str(output), poll_interval=0.5, return_state=True)

        assert state.is_completed(), state.message
        assert simulator.stats()["tasks_created"] == submitted  # collected, never resubmitted
        after = [json.loads(line) for line in (output / "manifest.jsonl").read_text().splitlines()]
        recovered = [line for line in after if line["status"] == "succeeded"]
        assert {line["task_id"] for line in recovered} == {line["task_id"] for line in in_flight}
        assert all((Path(image["uri"])).exists() for line in recovered for image in line["images"])
