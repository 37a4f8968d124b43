"""The real scale-out stack: PostgreSQL, a Prefect server, a process work pool, 2 workers (slow).

One stack for the module (``deployments/stack.py``; bringing it up costs 20-40 s): a
deployment run completes on a worker and is recorded in PostgreSQL, and a flow run whose worker
dies with it (SIGKILL of the worker's process group and of the flow run's own session, as when
a machine is lost) is marked Crashed by the zombie automation once its heartbeats stop.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from deployments.stack import (
    ZOMBIE_AUTOMATION_NAME,
    ZOMBIE_MESSAGE,
    Stack,
    ensure_concurrency_limit,
    ensure_zombie_automation,
    find_pg_bin,
    is_alive,
    kill_worker,
    online_workers,
    running_stack,
    start_worker,
    status,
    worker_of_flow_run,
)
from prefect_seedream.simulator import RunningSimulator, SimulatorConfig, running_simulator

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        find_pg_bin() is None, reason="PostgreSQL is not installed: run .ci/install-postgres.sh"
    ),
]

DEPLOYMENT = "seedream-generate-dataset/generate-dataset"
LIMIT = "seedream-stack-test"
#: Shorter than the default 90 s to keep the module near 3 minutes; still 2 heartbeats (30 s).
ZOMBIE_AFTER = 60
API_KEY = "sk-stack-test"
FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


@pytest.fixture(scope="module")
def simulator() -> Iterator[RunningSimulator]:
    with running_simulator(SimulatorConfig(latency_seconds=0.3, jitter_seconds=0.05)) as sim:
        yield sim


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, simulator: RunningSimulator) -> Iterator[Stack]:
    env = {"SEEDREAM_API_KEY": API_KEY, "SEEDREAM_BASE_URL": simulator.base_url}
    with running_stack(
        tmp_path_factory.mktemp("stack"), workers=2, limits={LIMIT: 3},
        deploy=["generate-dataset"], env=env, zombie_after=ZOMBIE_AFTER,
    ) as running:  # fmt: skip
        yield running


def _write_csv(path: Path, rows: dict[str, str]) -> Path:
    lines = ["id,prompt"] + [f'{row_id},"{prompt}"' for row_id, prompt in rows.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def _run_deployment(stack: Stack, dataset: Path, output: Path) -> str:
    """``prefect deployment run`` as a user types it; return the flow run's id."""
    out = stack.cli(
        "deployment", "run", DEPLOYMENT, "--param", f"dataset={dataset}", "--param", f"output={output}"
    )  # fmt: skip
    match = re.search(r"UUID: ([0-9a-f-]{36})", out)
    assert match, out
    return match.group(1)


def _wait_for(stack: Stack, flow_run_id: str, types: set[str], timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        run = stack.api("GET", f"/flow_runs/{flow_run_id}")
        if run["state"] and run["state"]["type"] in types:
            return run
        if time.monotonic() > deadline:
            raise AssertionError(f"flow run not {types} after {timeout:.0f} s: {run['state']}")
        time.sleep(1)


def _heartbeats(stack: Stack, flow_run_id: str) -> list[float]:
    """Times (epoch s) of the heartbeat events of a flow run that the server has received."""
    page = stack.api("POST", "/events/filter", {
        "filter": {"event": {"name": ["prefect.flow-run.heartbeat"]},
                   "resource": {"id": [f"prefect.flow-run.{flow_run_id}"]}},
        "limit": 50,
    })  # fmt: skip
    return sorted(_epoch(e["occurred"]) for e in page["events"])


def _epoch(timestamp: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()


async def _state_in_postgres(stack: Stack, flow_run_id: str) -> str | None:
    import asyncpg

    conn = await asyncpg.connect(stack.postgres.url().replace("postgresql+asyncpg", "postgresql"))
    try:
        return await conn.fetchval(
            "SELECT state_type::text FROM flow_run WHERE id = $1::uuid", flow_run_id
        )
    finally:
        await conn.close()


@pytest.mark.timeout(420)
def test_a_deployment_run_completes_on_a_worker_of_the_stack(stack: Stack, tmp_path: Path) -> None:
    info = status(stack.dir)
    assert info["running"], info
    assert info["deployments"] == [DEPLOYMENT]
    state_text = (stack.dir / "state.json").read_text()
    assert stack.postgres.password_file.read_text().strip() not in state_text
    assert API_KEY not in state_text

    dataset = _write_csv(tmp_path / "prompts.csv", {
        "lighthouse": "A lighthouse on a cliff at dawn",
        "fox": "A red fox curled up in fresh snow",
        "teapot": "Still life of a ceramic teapot",
    })  # fmt: skip
    output = tmp_path / "out"
    flow_run_id = _run_deployment(stack, dataset, output)

    run = _wait_for(stack, flow_run_id, FINAL, timeout=180)
    assert run["state"]["type"] == "COMPLETED", run["state"]
    assert run["work_pool_name"] == stack.pool
    manifest = (output / "manifest.jsonl").read_text().splitlines()
    assert len(manifest) == 3
    assert len(list(output.glob("*.png"))) == 3
    # The server keeps its records in the stack's PostgreSQL, not in a SQLite file.
    assert asyncio.run(_state_in_postgres(stack, flow_run_id)) == "COMPLETED"
    assert not list(stack.home.glob("*.db"))


def test_set_up_steps_are_idempotent(stack: Stack) -> None:
    assert stack.api("GET", f"/v2/concurrency_limits/{LIMIT}")["limit"] == 3
    ensure_concurrency_limit(stack, LIMIT, 5)  # exists: updated, not duplicated
    assert stack.api("GET", f"/v2/concurrency_limits/{LIMIT}")["limit"] == 5

    first = stack.automation_id
    assert ensure_zombie_automation(stack) == first
    found = stack.api("POST", "/automations/filter",
                      {"automations": {"name": {"any_": [ZOMBIE_AUTOMATION_NAME]}}})  # fmt: skip
    assert [a["id"] for a in found] == [first]
    [automation] = found
    assert automation["trigger"]["posture"] == "Proactive"
    assert automation["trigger"]["within"] == ZOMBIE_AFTER


@pytest.mark.timeout(300)
def test_a_flow_run_whose_worker_dies_ends_crashed(stack: Stack, tmp_path: Path) -> None:
    dataset = _write_csv(tmp_path / "slow.csv", {"slow": "A slow one [[sim:latency=600]]"})
    flow_run_id = _run_deployment(stack, dataset, tmp_path / "out")
    _wait_for(stack, flow_run_id, {"RUNNING"} | FINAL, timeout=90)

    # Kill only after the server has a heartbeat: a run that dies before its first one is
    # never detected (the proactive trigger starts at a heartbeat).
    deadline = time.monotonic() + 60
    while not _heartbeats(stack, flow_run_id) or worker_of_flow_run(stack, flow_run_id) is None:
        assert time.monotonic() < deadline, "no heartbeat / flow run process"
        time.sleep(1)
    index = worker_of_flow_run(stack, flow_run_id)
    assert index is not None
    worker = stack.workers[index]
    killed = kill_worker(stack, index)
    killed_at = time.time()
    assert len(killed) >= 2  # the worker and the flow run's process (its own session)
    assert not is_alive(worker)
    # What the killed worker leaves behind (its run's temporary folders) is in the stack's dir.
    assert any((stack.dir / "tmp").iterdir())
    other = stack.worker_name(3 - index)
    assert other in online_workers(stack)

    # The pool gets its capacity back; the crashed run is not re-run by the new worker.
    start_worker(stack, index)

    run = _wait_for(stack, flow_run_id, FINAL, timeout=ZOMBIE_AFTER + 45)
    assert run["state"]["type"] == "CRASHED", run["state"]
    crashed_at = _epoch(run["state"]["timestamp"])
    assert run["state"]["message"] == ZOMBIE_MESSAGE.format(seconds=ZOMBIE_AFTER)
    last_heartbeat = _heartbeats(stack, flow_run_id)[-1]
    assert last_heartbeat <= killed_at
    # Crashed one window after the last heartbeat (the triggers service checks every 5 s).
    assert ZOMBIE_AFTER - 1 <= crashed_at - last_heartbeat <= ZOMBIE_AFTER + 20
