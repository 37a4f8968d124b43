"""A sharded run's story (issue 23), on the real scale-out stack (slow).

PostgreSQL, a Prefect server, a process work pool and one worker (``deployments/stack.py``):
``prefect-seedream run --shards 2`` on 12 rows, 2 of which the simulator refuses. The parent
run's page holds the four ``seedream-*`` artifacts, built from the merged manifest; each shard
run holds only its own progress; no run logs a traceback for the refused rows.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from deployments.stack import Stack, find_pg_bin, running_stack
from prefect_seedream.simulator import RunningSimulator, SimulatorConfig, running_simulator

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        find_pg_bin() is None, reason="PostgreSQL is not installed: run .ci/install-postgres.sh"
    ),
]

CLI = Path(sys.executable).with_name("prefect-seedream")
API_KEY = "sk-stack-story"
REFUSED = "[[sim:task_error=content_policy_violation]]"


@pytest.fixture(scope="module")
def simulator() -> Iterator[RunningSimulator]:
    with running_simulator(SimulatorConfig(latency_seconds=0.3, jitter_seconds=0.05)) as sim:
        yield sim


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, simulator: RunningSimulator) -> Iterator[Stack]:
    env = {"SEEDREAM_API_KEY": API_KEY, "SEEDREAM_BASE_URL": simulator.base_url}
    with running_stack(
        tmp_path_factory.mktemp("stack-story"), workers=1, deploy=["generate-shard"], env=env,
    ) as running:  # fmt: skip
        yield running


def _runs_of_flow(stack: Stack, flow: str, since: datetime) -> list[dict[str, Any]]:
    runs = stack.api("POST", "/flow_runs/filter", {"flows": {"name": {"any_": [flow]}}, "limit": 50})
    return [run for run in runs if datetime.fromisoformat(run["created"]) >= since]


def _artifacts(stack: Stack, flow_run_id: str) -> list[dict[str, Any]]:
    return stack.api("POST", "/artifacts/filter", {"artifacts": {"flow_run_id": {"any_": [flow_run_id]}}})


def _tracebacks(stack: Stack, flow_run_id: str) -> list[str]:
    logs = stack.api("POST", "/logs/filter", {"logs": {"flow_run_id": {"any_": [flow_run_id]}}, "limit": 200})
    return [log["message"][:300] for log in logs if "Traceback" in log["message"] or "NoneType: None" in log["message"]]


@pytest.mark.timeout(600)
def test_a_sharded_run_tells_one_story_on_its_parent(
    stack: Stack, simulator: RunningSimulator, tmp_path: Path
) -> None:
    rows = {f"h{i:02d}": f"A harbour at night, take {i}" + (f" {REFUSED}" if i in (2, 9) else "")
            for i in range(12)}
    dataset = tmp_path / "rows.csv"
    dataset.write_text("id,prompt\n" + "".join(f'{k},"{v}"\n' for k, v in rows.items()))
    since = datetime.now(timezone.utc)
    env = stack.client_env({"SEEDREAM_API_KEY": API_KEY, "SEEDREAM_BASE_URL": simulator.base_url})

    done = subprocess.run(
        [str(CLI), "run", str(dataset), "--output", str(tmp_path / "out"), "--shards", "2",
         "--retry-delay", "0.1"],
        env=env, capture_output=True, text=True, timeout=480, check=False,
    )

    assert "Succeeded:  10" in done.stdout, done.stdout[-3000:] + done.stderr[-3000:]
    [parent] = _runs_of_flow(stack, "seedream-generate-dataset", since)
    shards = _runs_of_flow(stack, "seedream-generate-shard", since)
    assert len(shards) == 2

    artifacts = {a["key"]: a for a in _artifacts(stack, parent["id"])}
    assert set(artifacts) == {f"seedream-{part}" for part in ("progress", "summary", "rows", "gallery")}
    counts = {row["what"]: row["count"] for row in json.loads(artifacts["seedream-summary"]["data"])}
    assert (counts["rows succeeded"], counts["rows failed"]) == (10, 2)
    table = json.loads(artifacts["seedream-rows"]["data"])
    assert [(row["row"], row["code"]) for row in table[:2]] == [
        ("h02", "content_policy_violation"), ("h09", "content_policy_violation")]
    assert artifacts["seedream-gallery"]["data"].count("](data:image/jpeg;base64,") == 10
    for shard in shards:
        assert [(a["type"], a["key"]) for a in _artifacts(stack, shard["id"])] == [("progress", None)]
    for run in [parent, *shards]:
        assert _tracebacks(stack, run["id"]) == []
