"""Account-wide answers and the real API's rules (issue 16), over loopback HTTP to the simulator.

* 402 (out of credits, a key's quota) and 401 (a wrong key) stop every later submission within
  one round trip: at most the run's concurrency of submissions get the answer; the rows not
  submitted are ``skipped`` with the API's code and message; the run ends Failed with one
  sentence naming the cause and the fix; the same run after the fix finishes the rest and pays
  for nothing twice.
* A daily quota that renews pauses the run when asked (``wait_for_quota``).
* A 403 on one model stops that model's rows only.
* Statuses outside the documented ones keep the wait going.
* The ledger keeps records per API: a simulated result is never reused against another API.
* A sharded run's charges include the rows a lost shard attempt paid for.
* The command line: exit code 3 and the sentence; no silent simulator.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from prefect_seedream.engine.options import RunOptions
from prefect_seedream.simulator import RunningSimulator, SimulatorConfig, running_simulator
from tests.conftest import TEST_API_KEY
from tests.helpers import manifest, run_dataset, summary_of, write_jsonl

pytestmark = pytest.mark.usefixtures("prefect_api")

M45, M40 = "doubao-seedream-4.5", "doubao-seedream-4.0"
CLI = Path(sys.executable).with_name("prefect-seedream")


@pytest.fixture
def make_sim(make_sim: Any) -> Any:
    """The shared ``make_sim``, with no balance endpoint: these tests are of the answers that
    stop a run midway (the balance read before a run stops it earlier: tests/test_balance.py)."""

    def make(key: str = TEST_API_KEY, **config: Any) -> RunningSimulator:
        config.setdefault("credits_endpoint", "missing")
        return make_sim(key, **config)

    return make


def rows(count: int, model: str = M45, prefix: str = "a paper lantern") -> list[dict[str, Any]]:
    return [{"id": f"r{i:03d}", "prompt": f"{prefix} number {i}", "model": model} for i in range(count)]


def by_status(lines: list[dict[str, Any]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for line in lines:
        counts[line["status"]] = counts.get(line["status"], 0) + 1
    return counts


async def test_out_of_credits_stops_at_once_and_the_same_run_finishes_after_a_top_up(
    make_sim: Any, tmp_path: Path
) -> None:
    sim = make_sim(account_credits=20.0)  # 10 images of 4.5 at 2 credits
    dataset = write_jsonl(tmp_path / "rows.jsonl", rows(60))
    output = tmp_path / "out"

    state = await run_dataset(dataset, output, max_concurrency=8)
    lines = manifest(output)
    stats = sim.stats()
    summary = await summary_of(state)

    assert stats["tasks_created"] == 10
    assert 1 <= stats["quota_refusals"] <= 8, stats  # within one round trip: at most C
    assert by_status(lines) == {"succeeded": 10, "skipped": 50}
    for line in lines:
        if line["status"] == "skipped":
            assert line["error"]["code"] == "insufficient_quota", line  # the API's own code
            assert line["task_id"] is None
    assert summary.stopped is not None and summary.stopped.code == "insufficient_quota"
    assert state.is_failed()
    assert (state.message or "").startswith("Stopped: the Evolink account is out of credits")
    assert "Top up" in (state.message or "") and "run the same command again" in (state.message or "")
    assert summary.credits == stats["credits_charged"] == 20.0

    sim.account(add_credits=1000)
    state = await run_dataset(dataset, output, max_concurrency=8)
    lines = manifest(output)
    stats = sim.stats()
    summary = await summary_of(state)
    assert state.is_completed(), state.message
    assert by_status(lines) == {"succeeded": 60}
    assert stats["tasks_created"] == 60  # nothing paid twice
    assert summary.credits == 100.0 and summary.reused == 10 and summary.stopped is None


async def test_a_wrong_key_stops_at_once_and_says_so(make_sim: Any, tmp_path: Path) -> None:
    sim = make_sim(key="sk-wrong-key", api_keys={"sk-right-key"})
    output = tmp_path / "out"
    state = await run_dataset(write_jsonl(tmp_path / "rows.jsonl", rows(60)), output, max_concurrency=8)
    lines = manifest(output)
    stats = sim.stats()

    assert stats["tasks_created"] == 0
    assert 1 <= stats["unauthorized_requests"] <= 8, stats  # each answered 401; the rest never sent
    assert by_status(lines) == {"skipped": 60}
    assert {line["error"]["code"] for line in lines} == {"authentication_error"}
    assert (state.message or "").startswith("Stopped: the API key was refused (HTTP 401")
    assert "SEEDREAM_API_KEY" in (state.message or "")
    assert "sk-wrong-key" not in (state.message or "") and "sk-wrong-key" not in str(lines)


@pytest.mark.parametrize("wait", [False, True])
async def test_a_daily_quota_stops_or_pauses_until_it_renews(
    make_sim: Any, tmp_path: Path, wait: bool
) -> None:
    sim = make_sim(daily_quota_credits=6.0, quota_window_seconds=3.0)  # 3 tasks per 3 s
    output = tmp_path / "out"
    started = time.monotonic()
    state = await run_dataset(
        write_jsonl(tmp_path / "rows.jsonl", rows(5)), output, max_concurrency=2, wait_for_quota=wait
    )
    lines = manifest(output)
    stats = sim.stats()

    assert stats["quota_refusals"] <= 2 * (2 if wait else 1)
    if wait:  # paused until the window renewed, then finished: nothing skipped, nothing twice
        assert state.is_completed(), state.message
        assert by_status(lines) == {"succeeded": 5} and stats["tasks_created"] == 5
        assert time.monotonic() - started >= 2.5
    else:
        assert by_status(lines) == {"succeeded": 3, "skipped": 2}
        assert {l["error"]["code"] for l in lines if l["status"] == "skipped"} == {"key_daily_quota_exhausted"}
        assert "daily quota is used up" in (state.message or "") and "--wait-for-quota" in (state.message or "")


async def test_a_model_the_key_may_not_use_stops_that_model_only(make_sim: Any, tmp_path: Path) -> None:
    sim = make_sim(denied_models={M40})
    dataset = [*rows(6, M45, "a kite"), *rows(6, M40, "a boat")]
    for index, row in enumerate(dataset):
        row["id"] = f"r{index:02d}"
    output = tmp_path / "out"
    state = await run_dataset(write_jsonl(tmp_path / "rows.jsonl", dataset), output, max_concurrency=4)
    lines = {line["row_id"]: line for line in manifest(output)}
    summary = await summary_of(state)

    assert all(line["status"] == "succeeded" for line in lines.values() if line["model"] == M45)
    denied = [line for line in lines.values() if line["model"] == M40]
    assert all(line["status"] == "skipped" and line["error"]["code"] == "permission_error" for line in denied)
    assert sim.stats()["tasks_created"] == 6
    assert summary.stopped is not None and summary.stopped.scope == "model" and summary.stopped.model == M40


async def test_undocumented_statuses_keep_the_wait_going(
    seedream_env: RunningSimulator, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    dataset = [
        {"id": "queued", "prompt": "a lantern [[sim:unknown_status=queued*3]] [[sim:latency=2]]"},
        {"id": "cancelled", "prompt": "a lantern [[sim:cancel]]"},
    ]
    output = tmp_path / "out"
    await run_dataset(write_jsonl(tmp_path / "rows.jsonl", dataset), output)
    lines = {line["row_id"]: line for line in manifest(output)}

    assert lines["queued"]["status"] == "succeeded"
    assert lines["cancelled"]["status"] == "failed"  # a terminal status, not retried
    assert seedream_env.stats()["submissions_by_prompt"]["a lantern [[sim:cancel]]"] == 1
    warnings = [r.getMessage() for r in caplog.records if "does not document" in r.getMessage()]
    assert len(warnings) == 1 and "'queued'" in warnings[0]  # logged once, not per poll


async def test_simulated_results_are_never_reused_against_another_api(
    make_sim: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ledger keys records by the API's address: rows stored against one API (the
    simulator) are generated again against another one, and reused against the same one."""
    dataset = write_jsonl(tmp_path / "rows.jsonl", rows(3))
    output = tmp_path / "out"
    first = make_sim()
    assert (await run_dataset(dataset, output)).is_completed()
    first_url = first.base_url

    other = make_sim()  # another address: another API
    state = await run_dataset(dataset, output)
    assert state.is_completed()
    assert other.stats()["tasks_created"] == 3  # nothing taken from the first API's records
    assert not any(line["reused"] for line in manifest(output))

    monkeypatch.setenv("SEEDREAM_BASE_URL", first_url)
    state = await run_dataset(dataset, output)
    assert (await summary_of(state)).reused == 3 and first.stats()["tasks_created"] == 3


async def test_recover_finds_a_lost_answer_in_the_task_list(
    silent_list_env: RunningSimulator, tmp_path: Path
) -> None:
    """A run leaves a row outcome_unknown (its task list showed no prompts then); `recover`
    looks the task up again and collects it, submitting nothing."""
    from prefect_seedream import recover_dataset

    sim = silent_list_env
    dataset = write_jsonl(tmp_path / "rows.jsonl", [{"id": "dropped", "prompt": "a kite [[sim:drop_after_create]]"}])
    output = tmp_path / "out"
    await run_dataset(dataset, output)
    assert manifest(output)[0]["status"] == "outcome_unknown"

    sim.app_state.config.task_list_echoes_prompt = True
    state = await recover_dataset(str(output), return_state=True)
    line = manifest(output)[0]
    assert state.is_completed(), state.message
    assert line["status"] == "succeeded" and line["task_id"] is not None and Path(line["images"][0]["uri"]).is_file()
    assert sim.stats()["tasks_created"] == 1 and sim.stats()["submit_requests"] == 1


async def test_a_restarted_shard_counts_what_the_lost_attempt_paid(
    seedream_env: RunningSimulator, tmp_path: Path
) -> None:
    """Issue 16: a sharded run whose shard was restarted counted the rows its lost attempt
    paid for as free. A row's charge belongs to the parent run that made it, whichever
    attempt of whichever shard: the merged summary reports what the service charged."""
    from prefect_seedream.api.client import api_identity
    from prefect_seedream.engine.output import Output
    from prefect_seedream.engine.output_lock import OutputLock
    from prefect_seedream.engine.run_folder import RunDescription, RunParts
    from prefect_seedream.engine.storage import ImageStore
    from prefect_seedream.engine.summary import DatasetRunSummary
    from prefect_seedream.flows import generate_shard
    from prefect_seedream.runs import merge_manifest

    dataset = write_jsonl(tmp_path / "rows.jsonl", rows(8))
    output = tmp_path / "out"
    store = ImageStore(str(output))
    parent = "parent-run-1"
    options = RunOptions(poll_interval=0.05, max_wait_seconds=30)
    async with OutputLock(store, parent):
        await generate_shard(str(dataset), str(output), 1, 8, parent, 8, options, return_state=True)
        parts = RunParts(store, parent)
        parts.remove()  # the worker died before its parts were merged: its lines are lost
        # The shard is started again: every row is stored already (nothing is paid again).
        await generate_shard(str(dataset), str(output), 1, 8, parent, 8, options, return_state=True)
        summary = DatasetRunSummary()
        run = RunDescription(
            dataset=str(dataset), api=api_identity(seedream_env.base_url), options=options, total_rows=8,
        )
        await asyncio.to_thread(merge_manifest, Output.open(str(output)), parts, run, summary, None)
    stats = seedream_env.stats()
    assert stats["tasks_created"] == 8
    assert summary.succeeded == 8 and summary.credits == stats["credits_charged"] == 16.0


# -- the command line -------------------------------------------------------------------------


def _cli(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("SEEDREAM_", "PREFECT_API_URL"))}
    return subprocess.run(
        [str(CLI), *args], env={**clean, **env}, cwd=cwd, capture_output=True, text=True, timeout=300,
    )


def test_the_command_exits_3_and_says_why_when_the_account_is_out_of_credits(tmp_path: Path) -> None:
    dataset = write_jsonl(tmp_path / "rows.jsonl", rows(30))
    config = SimulatorConfig(
        latency_seconds=0.2, jitter_seconds=0.0, account_credits=10.0, credits_endpoint="missing"
    )
    with running_simulator(config) as sim:
        env = {"SEEDREAM_API_KEY": TEST_API_KEY, "SEEDREAM_BASE_URL": sim.base_url}
        args = ["run", str(dataset), "--output", str(tmp_path / "out"), "--max-concurrency", "8"]
        done = _cli(args, env, tmp_path)
        stats = sim.stats()
    assert done.returncode == 3, done.stdout + done.stderr
    assert "Stopped: the Evolink account is out of credits" in done.stdout
    assert f"prefect-seedream run {dataset}" in done.stdout  # the same command finishes it
    assert stats["tasks_created"] == 5 and stats["quota_refusals"] <= 8


def test_no_key_and_no_simulator_flag_is_refused_before_anything_runs(tmp_path: Path) -> None:
    dataset = write_jsonl(tmp_path / "rows.jsonl", rows(2))
    done = _cli(["run", str(dataset), "--output", str(tmp_path / "out")], {}, tmp_path)
    assert done.returncode == 2
    assert "no SEEDREAM_API_KEY set" in done.stderr and "--simulator" in done.stderr
    assert not (tmp_path / "out").exists()
