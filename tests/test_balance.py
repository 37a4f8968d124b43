"""The balance read before a run (GET /v1/credits): a run that may need more than the account
holds submits nothing and says so; --max-credits within the balance runs; a missing or failing
balance endpoint never blocks a run; the dry run and the summary show the balance. Real parts:
the simulator over HTTP, a real Prefect API, the command line as a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from prefect_seedream.simulator import SimulatorConfig, running_simulator
from tests.conftest import TEST_API_KEY
from tests.helpers import manifest, run_dataset, summary_of, write_jsonl

pytestmark = pytest.mark.usefixtures("prefect_api")

M45 = "doubao-seedream-4.5"
CLI = Path(sys.executable).with_name("prefect-seedream")


def rows(count: int) -> list[dict[str, Any]]:
    return [{"id": f"r{i:03d}", "prompt": f"a paper boat number {i}", "model": M45} for i in range(count)]


async def test_a_run_the_balance_cannot_pay_for_submits_nothing_and_says_why(
    make_sim: Any, tmp_path: Path
) -> None:
    sim = make_sim(account_credits=7.0)
    dataset = write_jsonl(tmp_path / "rows.jsonl", rows(40))  # at most 40 x 2.5 = 100 credits
    output = tmp_path / "out"

    state = await run_dataset(dataset, output, max_concurrency=8)
    summary = await summary_of(state)
    lines = manifest(output)

    assert sim.stats()["tasks_created"] == 0
    assert summary.stopped is not None and summary.stopped.code == "insufficient_balance"
    sentence = summary.stopped.sentence()
    assert "holds 7 credits" in sentence and "100" in sentence
    assert "Top up" in sentence and "--max-credits 7" in sentence
    assert state.is_failed() and (state.message or "").startswith("Stopped before any submission")
    assert [line["status"] for line in lines] == ["skipped"] * 40
    assert all(line["error"]["code"] == "insufficient_balance" for line in lines)
    assert summary.balance_before == 7.0 and summary.balance == 7.0


async def test_max_credits_within_the_balance_runs_what_it_pays_for(make_sim: Any, tmp_path: Path) -> None:
    sim = make_sim(account_credits=7.0)
    dataset = write_jsonl(tmp_path / "rows.jsonl", rows(10))
    output = tmp_path / "out"

    state = await run_dataset(dataset, output, max_concurrency=1, max_credits=7.0)
    summary = await summary_of(state)
    stats = sim.stats()

    assert summary.stopped is None, summary.stopped
    assert summary.succeeded == stats["tasks_created"] >= 2  # what 7 credits pay for, no 402
    assert stats["quota_refusals"] == 0
    assert summary.credits <= 7.0
    assert summary.balance is not None and summary.balance == pytest.approx(7.0 - summary.credits)


async def test_a_low_balance_never_stops_a_run_that_has_nothing_left_to_pay_for(
    make_sim: Any, tmp_path: Path
) -> None:
    sim = make_sim(account_credits=100.0)
    dataset = write_jsonl(tmp_path / "rows.jsonl", rows(4))
    assert (await run_dataset(dataset, tmp_path / "out")).is_completed()
    sim.account(set_credits=1.0)

    state = await run_dataset(dataset, tmp_path / "out")  # every row is stored: reused
    summary = await summary_of(state)
    assert state.is_completed(), state.message
    assert summary.stopped is None and summary.reused == 4 and summary.balance == 1.0


@pytest.mark.parametrize("mode", ["missing", "failing"])
async def test_a_balance_endpoint_missing_or_failing_never_blocks_a_run(
    make_sim: Any, tmp_path: Path, mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    sim = make_sim(credits_endpoint=mode)
    state = await run_dataset(write_jsonl(tmp_path / "rows.jsonl", rows(3)), tmp_path / "out")
    summary = await summary_of(state)
    assert state.is_completed(), state.message
    assert summary.succeeded == 3 == sim.stats()["tasks_created"]
    assert summary.balance_before is None and summary.balance is None
    assert any("balance could not be read" in record.getMessage() for record in caplog.records)


async def test_the_dry_run_shows_the_balance_beside_the_estimate(make_sim: Any, tmp_path: Path) -> None:
    sim = make_sim(account_credits=42.0)
    state = await run_dataset(write_jsonl(tmp_path / "rows.jsonl", rows(4)), tmp_path / "out", dry_run=True)
    summary = await summary_of(state)
    assert summary.balance == 42.0 and summary.estimated_credits == pytest.approx(10.0)
    assert "the account holds 42" in (state.message or "")
    assert sim.stats()["tasks_created"] == 0


def _cli(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("SEEDREAM_", "PREFECT_API_URL"))}
    return subprocess.run(
        [str(CLI), *args], env={**clean, **env}, cwd=cwd, capture_output=True, text=True, timeout=300, check=False,
    )


def test_the_command_exits_3_before_any_submission_and_prints_the_balance(tmp_path: Path) -> None:
    dataset = write_jsonl(tmp_path / "rows.jsonl", rows(30))
    config = SimulatorConfig(latency_seconds=0.2, jitter_seconds=0.0, account_credits=10.0)
    with running_simulator(config) as sim:
        env = {"SEEDREAM_API_KEY": TEST_API_KEY, "SEEDREAM_BASE_URL": sim.base_url}
        dry = _cli(["run", str(dataset), "--output", str(tmp_path / "out"), "--dry-run"], env, tmp_path)
        done = _cli(["run", str(dataset), "--output", str(tmp_path / "out")], env, tmp_path)
        stats = sim.stats()
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert "Estimate:   at most 75 credits" in dry.stdout and "Balance:    10 credits" in dry.stdout
    assert done.returncode == 3, done.stdout + done.stderr
    assert "Stopped before any submission: the Evolink account holds 10 credits" in done.stdout
    assert "--max-credits 10" in done.stdout
    assert stats["tasks_created"] == 0
