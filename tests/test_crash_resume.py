"""A real ``prefect-seedream run`` killed with SIGKILL mid-run, then run again.

The simulator runs as its own process (``prefect-seedream simulator``), the dataset run
as another, with its own PREFECT_HOME (so Prefect starts its temporary local server in
the run's process group). The run is killed while every worker waits on a remote task
that was submitted moments before (so no submission is on the wire and no task can have
finished), then the same command is run again to completion. Nothing may be paid twice:
every prompt is submitted exactly once, the tasks in flight at the kill are re-attached
by id, and every row ends with its image stored.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
CLI = Path(sys.executable).parent / "prefect-seedream"
ROWS = 20
CONCURRENCY = 4
KEY = "sk-crash-resume-test"


def _stop(process: subprocess.Popen[Any]) -> None:
    """End a process we started, with its whole process group."""
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    process.wait(timeout=30)


def _group_gone(pgid: int, timeout: float = 15) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


@pytest.fixture
def simulator_process(tmp_path: Path) -> Iterator[str]:
    """``prefect-seedream simulator`` on a free port (``--port 0``); yields its base URL."""
    log = (tmp_path / "simulator.log").open("w+")
    process = subprocess.Popen(
        [str(CLI), "simulator", "--port", "0", "--latency", "3", "--jitter", "0.5"],
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
        start_new_session=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert "listening on http://" in line, (line, log.read())
        base_url = line.rsplit(" ", 1)[-1].strip()
        deadline = time.monotonic() + 15
        while httpx.get(f"{base_url}/healthz", timeout=2).status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        yield base_url
    finally:
        _stop(process)
        log.close()


def _ledger(output: Path) -> dict[str, dict[str, Any]]:
    """Row id -> ledger record, read the way another process would see it."""
    records: dict[str, dict[str, Any]] = {}
    for path in (output / ".seedream" / "tasks").glob("*.json"):
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue  # being replaced right now: read it next time
        records[record["row_id"]] = record
    return records


def _run_command(dataset: Path, output: Path) -> list[str]:
    return [
        str(CLI),
        "run",
        str(dataset),
        "--output",
        str(output),
        "--max-concurrency",
        str(CONCURRENCY),
        "--retry-delay",
        "0.1",
    ]


def _environment(base_url: str, prefect_home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "SEEDREAM_"))}
    env.update(
        SEEDREAM_API_KEY=KEY,
        SEEDREAM_BASE_URL=base_url,
        PREFECT_HOME=str(prefect_home),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        # The temporary local server may start slowly on a busy machine.
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="180",
        PYTHONUNBUFFERED="1",
    )
    return env


def _health(base_url: str) -> str:
    try:
        return f"answers {httpx.get(base_url + '/healthz', timeout=2).status_code}"
    except httpx.HTTPError as exc:
        return f"unreachable: {exc!r}"


def _dataset(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    prompts = {f"row-{i:02d}": f"a paper lantern over a river number {i}" for i in range(ROWS)}
    dataset = tmp_path / "rows.csv"
    dataset.write_text(
        "id,prompt\n" + "".join(f"{row_id},{prompt}\n" for row_id, prompt in prompts.items()),
        encoding="utf-8",
    )
    return dataset, prompts


def _sigint_as_in_a_terminal() -> None:
    """In the run's process, before it starts: SIGINT does what Ctrl-C does in a terminal.

    A signal ignored by the test's process stays ignored in its children (a suite started in
    the background of a non-interactive shell ignores SIGINT: ``cmd &``, ``nohup``), and a
    Python started with SIGINT ignored never raises ``KeyboardInterrupt``."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _interrupt_mid_run(
    command: list[str], env: dict[str, str], tmp_path: Path, output: Path, stop: Any,
) -> subprocess.Popen[Any]:
    """Start the run; call ``stop(process)`` once some rows are stored and others wait on
    fresh tasks, with no submission on the wire (no record "submitting": whether its task
    exists is what the tests must know).

    With jitter, rows do not move in waves: at any instant some tasks are older (their first
    poll came too early, or they are downloading: a row gives its slot to the next one once
    its task is done, and its record says "submitted" until its images are stored). Two fresh
    submissions (under 2 s old, the first poll comes at 3 s) guarantee tasks still running
    at the API when the stop lands."""
    log_path = tmp_path / "run1.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            command,
            env=env,
            cwd=tmp_path,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_sigint_as_in_a_terminal,
        )
        try:
            deadline = time.monotonic() + 360
            while True:
                assert process.poll() is None, (
                    f"the run ended before it could be stopped (simulator "
                    f"{_health(env['SEEDREAM_BASE_URL'])}):\n" + log_path.read_text()
                )
                assert time.monotonic() < deadline, "never caught the run with tasks in flight"
                records = _ledger(output)
                submitted = {r: rec for r, rec in records.items() if rec["state"] == "submitted"}
                stored = {r for r, rec in records.items() if rec["state"] == "stored"}
                now = time.time()
                fresh = [rec for rec in submitted.values() if now - rec["submitted_at"] < 2.0]
                settled = all(rec["state"] in ("submitted", "stored") for rec in records.values())
                if len(fresh) >= 2 and stored and settled:
                    stop(process)
                    break
                time.sleep(0.02)
            process.wait(timeout=120)
        finally:
            _stop(process)
    return process


def _run_to_completion(command: list[str], env: dict[str, str], cwd: Path) -> tuple[int, str]:
    process = subprocess.Popen(
        command,
        env=env,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        out, _ = process.communicate(timeout=360)
    finally:
        _stop(process)
    return process.returncode, out


def _check_finished(
    output: Path,
    base_url: str,
    prompts: dict[str, str],
    in_flight: dict[str, str],
    stored_earlier: set[str],
    at_stop: dict[str, dict[str, Any]],
) -> None:
    """Every prompt paid once, in-flight tasks re-attached, every image stored."""
    stats = httpx.get(f"{base_url}/_sim/stats").json()
    by_prompt = stats["submissions_by_prompt"]
    assert sorted(by_prompt) == sorted(prompts.values())
    assert all(count == 1 for count in by_prompt.values()), by_prompt
    assert stats["tasks_created"] == ROWS

    final = _ledger(output)
    assert sorted(final) == sorted(prompts)
    for row_id, task_id in in_flight.items():
        assert final[row_id]["task_id"] == task_id, "an in-flight task was not re-attached"
        assert final[row_id]["submissions"] == 1
    for row_id in stored_earlier:
        assert final[row_id]["task_id"] == at_stop[row_id]["task_id"]

    lines = [json.loads(line) for line in (output / "manifest.jsonl").read_text().splitlines()]
    assert len(lines) == ROWS
    assert sorted(line["row_id"] for line in lines) == sorted(prompts)
    assert len({line["task_id"] for line in lines}) == ROWS
    for line in lines:
        assert line["status"] == "succeeded", line
        assert line["task_id"] == final[line["row_id"]]["task_id"]
        assert len(line["images"]) == 1
        image = Path(line["images"][0]["uri"])
        assert image.is_file() and image.stat().st_size == line["images"][0]["bytes"] > 0
        assert image.parent == output.resolve()


@pytest.mark.timeout(600)
def test_sigkill_mid_run_then_rerun_pays_nothing_twice(
    simulator_process: str, tmp_path: Path
) -> None:
    base_url = simulator_process
    dataset, prompts = _dataset(tmp_path)
    output = tmp_path / "out"
    env = _environment(base_url, tmp_path / "prefect-home")
    command = _run_command(dataset, output)

    first = _interrupt_mid_run(
        command, env, tmp_path, output, lambda p: os.killpg(p.pid, signal.SIGKILL)
    )
    assert first.returncode == -signal.SIGKILL
    assert _group_gone(first.pid), "processes of the killed run survived"

    at_kill = _ledger(output)
    in_flight = {r: rec["task_id"] for r, rec in at_kill.items() if rec["state"] == "submitted"}
    stored_at_kill = {r for r, rec in at_kill.items() if rec["state"] == "stored"}
    assert len(in_flight) >= 2 and stored_at_kill
    assert len(stored_at_kill) + len(in_flight) < ROWS
    assert not (output / "manifest.jsonl").exists()  # the run never got to the end
    stats = httpx.get(f"{base_url}/_sim/stats").json()
    # Precondition: every task the simulator created is in the ledger (none on the wire).
    assert stats["tasks_created"] == len(at_kill), (stats, at_kill)
    assert stats["active_tasks"] >= 1

    code, report = _run_to_completion(command, env, tmp_path)
    assert code == 0, report
    assert f"Succeeded:  {ROWS}" in report, report

    _check_finished(output, base_url, prompts, in_flight, stored_at_kill, at_kill)
    lines = [json.loads(line) for line in (output / "manifest.jsonl").read_text().splitlines()]
    for line in lines:
        assert line["reused"] is (line["row_id"] in stored_at_kill)


@pytest.mark.timeout(600)
def test_ctrl_c_writes_the_manifest_then_recover_and_rerun_finish_the_job(
    simulator_process: str, tmp_path: Path
) -> None:
    """SIGINT (Ctrl-C): the crash hook writes the manifest from the ledger; ``recover``
    collects the tasks left in flight without submitting; a re-run does the rest."""
    base_url = simulator_process
    dataset, prompts = _dataset(tmp_path)
    output = tmp_path / "out"
    env = _environment(base_url, tmp_path / "prefect-home")
    command = _run_command(dataset, output)

    first = _interrupt_mid_run(
        command, env, tmp_path, output, lambda p: os.kill(p.pid, signal.SIGINT)
    )
    log = (tmp_path / "run1.log").read_text()
    assert first.returncode != 0, log

    at_stop = _ledger(output)
    in_flight = {r: rec["task_id"] for r, rec in at_stop.items() if rec["state"] == "submitted"}
    stored = {r for r, rec in at_stop.items() if rec["state"] == "stored"}
    assert len(in_flight) >= 2 and stored, at_stop
    assert httpx.get(f"{base_url}/_sim/stats").json()["tasks_created"] == len(at_stop)

    # The hook's manifest: one line per row, saying what was done.
    manifest_path = output / "manifest.jsonl"
    assert manifest_path.exists(), "the on_crashed/on_cancellation hook wrote no manifest:\n" + log
    lines = {json.loads(x)["row_id"]: json.loads(x) for x in manifest_path.read_text().splitlines()}
    assert sorted(lines) == sorted(prompts)
    for row_id, line in lines.items():
        if row_id in stored:
            assert line["status"] == "succeeded", line
            assert Path(line["images"][0]["uri"]).is_file()
        elif row_id in in_flight:
            assert line["status"] == "in_flight", line
            assert line["task_id"] == in_flight[row_id]
        else:
            assert line["status"] == "skipped", line
            assert line["error"]["code"] == "not_started"
            assert line["task_id"] is None

    # recover: collects the in-flight tasks, submits nothing, updates their lines.
    code, report = _run_to_completion(
        [str(CLI), "recover", str(output), "--max-wait", "60"], env, tmp_path
    )
    assert code == 0, report
    assert f"collected {len(in_flight)} of {len(in_flight)}" in report, report
    stats = httpx.get(f"{base_url}/_sim/stats").json()
    assert stats["tasks_created"] == len(at_stop)
    lines = {json.loads(x)["row_id"]: json.loads(x) for x in manifest_path.read_text().splitlines()}
    for row_id, task_id in in_flight.items():
        assert lines[row_id]["status"] == "succeeded", lines[row_id]
        assert lines[row_id]["task_id"] == task_id
        assert Path(lines[row_id]["images"][0]["uri"]).is_file()
    assert sum(line["status"] == "skipped" for line in lines.values()) == ROWS - len(at_stop)

    # a re-run: everything collected so far is reused, the rest submitted once.
    code, report = _run_to_completion(command, env, tmp_path)
    assert code == 0, report
    _check_finished(output, base_url, prompts, in_flight, stored, at_stop)
