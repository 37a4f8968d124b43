"""Deployments: prefect.yaml registers what it promises; a schedule really runs the pipeline."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from prefect_seedream.simulator import RunningSimulator
from tests.browser.prefect_ui import PrefectServer, serve_deployment, start_prefect_server, venv_bin

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def server(tmp_path_factory: pytest.TempPathFactory):
    """A server per test: `prefect deploy` and `serve` must not share deployment records."""
    with start_prefect_server(tmp_path_factory.mktemp("server")) as running:
        yield running


def _cli(server: PrefectServer, *args: str) -> str:
    result = subprocess.run(
        [venv_bin("prefect"), *args], cwd=REPO, env=server.client_env(),
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_prefect_yaml_registers_the_deployments(server: PrefectServer) -> None:
    _cli(server, "work-pool", "create", "seedream-process", "--type", "process")

    _cli(server, "--no-prompt", "deploy", "--prefect-file", "deployments/prefect.yaml", "--all")

    dataset = server.api("GET", "/deployments/name/seedream-generate-dataset/generate-dataset")
    assert dataset["work_pool_name"] == "seedream-process"
    assert dataset["entrypoint"] == "prefect_seedream.flows:generate_dataset"
    schema = dataset["parameter_openapi_schema"]["properties"]
    assert schema["model"]["enum"] == ["doubao-seedream-4.0", "doubao-seedream-4.5"]
    assert all(prop.get("description") for prop in schema.values())

    shard = server.api("GET", "/deployments/name/seedream-generate-shard/generate-shard")
    assert shard["entrypoint"] == "prefect_seedream.flows:generate_shard"
    assert shard["work_pool_name"] == "seedream-process"

    daily = server.api("GET", "/deployments/name/seedream-daily-content/daily-content")
    [schedule] = daily["schedules"]
    assert schedule["schedule"]["cron"] == "0 7 * * *"
    assert schedule["schedule"]["timezone"] == "UTC"
    assert schedule["active"] is True

    recover = server.api("GET", "/deployments/name/seedream-recover-dataset/recover-after-failures")
    automations = server.api("POST", "/automations/filter", {})
    [trigger] = [a for a in automations if recover["id"] in str(a["actions"])]
    assert trigger["trigger"]["expect"] == ["seedream.dataset.failed"]


@pytest.mark.timeout(720)
def test_short_interval_schedule_completes_a_run_by_itself(
    server: PrefectServer, simulator: RunningSimulator, tmp_path: Path
) -> None:
    env = {"SEEDREAM_API_KEY": "sk-schedule-test", "SEEDREAM_BASE_URL": simulator.base_url}
    argv = [sys.executable, str(REPO / "deployments" / "serve.py"), "--interval", "20"]

    with serve_deployment(
        server, argv, "seedream-daily-content/daily-content", tmp_path, extra_env=env, cwd=tmp_path
    ) as served:
        deadline = time.monotonic() + 360
        completed: list[dict] = []
        while time.monotonic() < deadline and not completed:
            # The scheduler creates many future runs: ask for the completed ones only.
            completed = server.api("POST", "/flow_runs/filter", {
                "deployments": {"id": {"any_": [served.id]}},
                "flow_runs": {"state": {"type": {"any_": ["COMPLETED"]}}},
                "limit": 5,
            })
            time.sleep(2)

    assert completed, f"no completed scheduled run:\n{served.log_path.read_text()[-3000:]}"
    assert completed[0]["auto_scheduled"] is True
    day_folders = list((tmp_path / "output" / "daily").iterdir())
    manifest = day_folders[0] / "manifest.jsonl"
    assert len(manifest.read_text().splitlines()) == 6
    assert simulator.stats()["tasks_created"] == 6
