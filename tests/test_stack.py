"""The real scale-out stack: PostgreSQL, a Prefect server, a process work pool, 2 workers (slow).

One stack for the module (``deployments/stack.py``; bringing it up costs 20-40 s): a
deployment run completes on a worker and is recorded in PostgreSQL, and a flow run whose worker
dies with it (SIGKILL of the worker's process group and of the flow run's own session, as when
a machine is lost) is marked Crashed by the zombie automation once its heartbeats stop.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
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
SHARD_DEPLOYMENT = "seedream-generate-shard/generate-shard"
CLI = Path(sys.executable).with_name("prefect-seedream")
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
        deploy=["generate-dataset", "generate-shard"], env=env, zombie_after=ZOMBIE_AFTER,
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
    assert info["deployments"] == [DEPLOYMENT, SHARD_DEPLOYMENT]
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


# -- sharded runs ---------------------------------------------------------------------------


def _shard_runs(stack: Stack, since: str) -> list[dict[str, Any]]:
    """The shard flow runs created after ``since`` (an ISO time), oldest first."""
    runs = stack.api("POST", "/flow_runs/filter", {
        "flows": {"name": {"any_": ["seedream-generate-shard"]}},
        "sort": "EXPECTED_START_TIME_ASC", "limit": 50,
    })  # fmt: skip
    return [run for run in runs if _epoch(run["created"]) >= _epoch(since)]


def _now_iso(stack: Stack) -> str:
    from datetime import datetime, timezone

    return datetime.now(timezone.utc).isoformat()


def _manifest(output: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (output / "manifest.jsonl").read_text().splitlines()]


def _run_sharded(stack: Stack, simulator: RunningSimulator, dataset: Path, output: Path,
                 *extra: str) -> subprocess.Popen[str]:
    env = stack.client_env({"SEEDREAM_API_KEY": API_KEY, "SEEDREAM_BASE_URL": simulator.base_url})
    return subprocess.Popen(
        [str(CLI), "run", str(dataset), "--output", str(output), "--retry-delay", "0.1", *extra],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )


@pytest.mark.timeout(420)
def test_a_sharded_run_spreads_over_the_workers_under_one_limit(
    stack: Stack, simulator: RunningSimulator, tmp_path: Path
) -> None:
    """3 shards on 2 workers, a global limit of 3 across them, one merged manifest."""
    ensure_concurrency_limit(stack, "seedream-shared", 3)
    rows = {f"s{i:02d}": f"Shard row number {i} [[sim:latency=1]]" for i in range(24)}
    dataset = _write_csv(tmp_path / "rows.csv", rows)
    output = tmp_path / "out"
    since = _now_iso(stack)
    # Earlier tests left a task that never ends: start from a clean count of tasks in flight.
    httpx.post(f"{simulator.base_url}/_sim/reset", timeout=10).raise_for_status()

    run = _run_sharded(stack, simulator, dataset, output, "--shards", "3", "--max-concurrency", "4",
                       "--concurrency-limit", "seedream-shared")
    out, _ = run.communicate(timeout=360)

    assert run.returncode == 0, out
    assert "Succeeded:  24" in out, out
    lines = _manifest(output)
    assert [line["row_id"] for line in lines] == list(rows)  # one line per row, input order
    assert all(line["status"] == "succeeded" for line in lines)
    by_prompt = simulator.stats()["submissions_by_prompt"]
    assert all(by_prompt[prompt] == 1 for prompt in rows.values())  # every row exactly once
    # 3 shards x 4 rows could be 12 in flight; the shared limit held them to 3.
    assert simulator.stats()["peak_concurrent_tasks"] <= 3
    shards = _shard_runs(stack, since)
    assert len(shards) == 3 and all(r["state"]["type"] == "COMPLETED" for r in shards)
    assert {r["work_pool_name"] for r in shards} == {stack.pool}
    assert sorted(r["parameters"]["first_row"] for r in shards) == [1, 9, 17]
    # The work really spread: each worker's log names at least one shard run.
    logs = [(stack.logs / f"worker-{i}.log").read_text() for i in sorted(stack.workers)]
    assert all(any(r["id"] in log for r in shards) for log in logs), "a worker ran no shard"


@pytest.mark.timeout(600)
def test_losing_a_worker_mid_shard_loses_nothing(
    stack: Stack, simulator: RunningSimulator, tmp_path: Path
) -> None:
    """SIGKILL the worker (and its flow run) of a shard whose rows are all in flight: the
    shard ends Crashed, the other goes on, the parent starts the crashed shard again, which
    re-attaches to the tasks in flight: every row stored, none submitted twice."""
    rows = {f"k{i:02d}": f"A lost worker, row {i} [[sim:latency=20]]" for i in range(8)}
    dataset = _write_csv(tmp_path / "rows.csv", rows)
    output = tmp_path / "out"
    since = _now_iso(stack)
    run = _run_sharded(stack, simulator, dataset, output, "--shards", "2", "--max-concurrency", "4")

    deadline = time.monotonic() + 180
    victim: dict[str, Any] | None = None
    while victim is None:
        assert run.poll() is None, run.communicate()[0]
        assert time.monotonic() < deadline, "the first shard never had all its rows in flight"
        for shard in _shard_runs(stack, since):
            records = [json.loads(p.read_text()) for p in (output / ".seedream" / "tasks").glob("*.json")]
            mine = [r for r in records if r["row_id"] in list(rows)[:4]]
            if (shard["parameters"]["first_row"] == 1 and len(mine) == 4
                    and all(r["state"] == "submitted" for r in mine)
                    and _heartbeats(stack, shard["id"]) and worker_of_flow_run(stack, shard["id"])):
                victim = shard
        time.sleep(1)
    index = worker_of_flow_run(stack, victim["id"])
    assert index is not None
    kill_worker(stack, index)
    start_worker(stack, index)

    out, _ = run.communicate(timeout=ZOMBIE_AFTER + 300)
    assert run.returncode == 0, out
    crashed = stack.api("GET", f"/flow_runs/{victim['id']}")
    assert crashed["state"]["type"] == "CRASHED", crashed["state"]
    retries = [r for r in _shard_runs(stack, since) if r["name"].endswith("-retry-1")]
    assert len(retries) == 1 and retries[0]["state"]["type"] == "COMPLETED", retries
    by_prompt = simulator.stats()["submissions_by_prompt"]
    assert all(by_prompt[prompt] == 1 for prompt in rows.values()), by_prompt
    lines = _manifest(output)
    assert [line["row_id"] for line in lines] == list(rows)
    assert all(line["status"] == "succeeded" for line in lines), lines
    # Truthful credits (issue 16): the rows the lost attempt paid for count too, 8 x 2 credits,
    # not only the rows the restarted shard submitted itself (it submitted none).
    charged = sum(line["credits"] for line in lines)
    assert charged == 16.0, lines
    assert "Credits:    16\n" in out, out
