"""Deployments: the prefect.yaml that `prefect-seedream init` writes registers what it promises
and runs on a worker from that folder; a schedule really runs the pipeline."""

from __future__ import annotations

import json
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


def _cli(server: PrefectServer, *args: str, program: str = "prefect", cwd: Path = REPO) -> str:
    result = subprocess.run(
        [venv_bin(program), *args], cwd=cwd, env=server.client_env({"PWD": str(cwd)}),
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


@pytest.mark.timeout(600)
def test_an_init_folder_deploys_and_its_dataset_deployment_runs_on_a_worker(
    server: PrefectServer, simulator: RunningSimulator, tmp_path: Path
) -> None:
    """What a pip user does: `prefect-seedream init`, `prefect deploy --all` in that folder, a
    process worker started anywhere; a run with the deployment's defaults works in the folder."""
    project = tmp_path / "project"
    _cli(server, "init", str(project), program="prefect-seedream", cwd=tmp_path)
    _cli(server, "work-pool", "create", "seedream-process", "--type", "process")

    _cli(server, "--no-prompt", "deploy", "--all", cwd=project)

    dataset = server.api("GET", "/deployments/name/seedream-generate-dataset/generate-dataset")
    assert dataset["work_pool_name"] == "seedream-process"
    assert dataset["entrypoint"] == "prefect_seedream.flows:generate_dataset"
    assert dataset["parameters"] == {"dataset": "prompts.csv", "output": "output/ui-runs"}
    # No pull section in prefect.yaml: the runs work in the folder `prefect deploy` ran in.
    assert dataset["pull_steps"] == [
        {"prefect.deployments.steps.set_working_directory": {"directory": str(project.resolve())}}
    ]
    schema = dataset["parameter_openapi_schema"]["properties"]
    # The run form offers the known models and still accepts another name.
    from prefect_seedream.api.models import MODEL_LIMITS

    [known, other] = schema["model"]["anyOf"]
    assert known["enum"] == list(MODEL_LIMITS) and other == {"type": "string"}
    assert schema["quality"]["anyOf"][0]["enum"] == ["auto", "1K", "1.5K", "2K", "3K", "4K"]
    assert all(prop.get("description") for prop in schema.values())

    shard = server.api("GET", "/deployments/name/seedream-generate-shard/generate-shard")
    assert shard["entrypoint"] == "prefect_seedream.flows:generate_shard"
    assert shard["work_pool_name"] == "seedream-process"

    daily = server.api("GET", "/deployments/name/seedream-daily-content/daily-content")
    assert daily["entrypoint"] == "prefect_seedream.pipelines.content:daily_content"
    [schedule] = daily["schedules"]
    assert schedule["schedule"]["cron"] == "0 7 * * *"
    assert schedule["schedule"]["timezone"] == "UTC"
    assert schedule["active"] is True

    recover = server.api("GET", "/deployments/name/seedream-recover-dataset/recover-after-failures")
    automations = server.api("POST", "/automations/filter", {})
    [trigger] = [a for a in automations if recover["id"] in str(a["actions"])]
    assert trigger["trigger"]["expect"] == ["seedream.dataset.failed"]
    assert recover["entrypoint"] == "prefect_seedream.flows:recover_dataset"

    worker = tmp_path / "worker"  # the worker runs elsewhere: the deployment says where to work
    worker.mkdir()
    env = {"SEEDREAM_API_KEY": "sk-deploy-test", "SEEDREAM_BASE_URL": simulator.base_url,
           "PREFECT_WORKER_QUERY_SECONDS": "2"}
    argv = [venv_bin("prefect"), "worker", "start", "--pool", "seedream-process"]
    with serve_deployment(
        server, argv, "seedream-generate-dataset/generate-dataset", worker, extra_env=env, cwd=worker
    ) as started:
        run = server.api("POST", f"/deployments/{dataset['id']}/create_flow_run", {})
        deadline = time.monotonic() + 300
        state = run["state"]["type"]
        while state not in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED") and time.monotonic() < deadline:
            time.sleep(2)
            state = server.api("GET", f"/flow_runs/{run['id']}")["state"]["type"]
    assert state == "COMPLETED", f"{state}:\n{started.log_path.read_text()[-3000:]}"
    manifest = project / "output" / "ui-runs" / "manifest.jsonl"
    lines = [json.loads(line) for line in manifest.read_text().splitlines()]
    assert [line["status"] for line in lines] == ["succeeded"] * 14
    assert simulator.stats()["tasks_created"] == 14


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
