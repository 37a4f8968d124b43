"""`prefect-seedream run` killed with SIGKILL at many instants, then run again: never paid twice.

Each case runs the real command as a subprocess (its own process group, with the temporary
Prefect server it starts), waits until the run is at one instant of a row's life, as the
simulator and the output show it from outside, kills the whole process group with SIGKILL,
then runs the same command again to the end. After each kill, with the simulator's own
counts (tasks it created per prompt):

* at most one task was created per row;
* the manifest has exactly one line per row, each `succeeded` or `outcome_unknown`: a row
  whose submission was on the wire at the kill finds its task in the API's task list and
  re-attaches (issue 16); only a row whose intent was written but whose task does not exist
  stays `outcome_unknown` (nothing can tell it was not sent), and is not resubmitted;
* no partial image or manifest is left: every image decodes and has its manifest size, and
  nothing is left in `.seedream/tmp/` or next to a final file (a download goes to an
  anonymous temporary file, which the kernel removes with the process, then to
  `.seedream/tmp/` and is renamed into place);
* `--resubmit-unknown` then finishes those rows with exactly one more task each (the same
  Idempotency-Key is sent again: had the lost submission created a task, it would be
  returned, not paid again).

The windows are widened by the simulator's markers: `submit_delay` (the task is created, its
answer comes seconds later) and `download_delay` (an image stops half-way for seconds).
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

CLI = Path(sys.executable).parent / "prefect-seedream"
KEY = "sk-kill-matrix"
ROWS = 12
CONCURRENCY = 4


@dataclass
class Simulator:
    base_url: str

    def stats(self) -> dict[str, Any]:
        return httpx.get(f"{self.base_url}/_sim/stats", timeout=10).json()

    def tasks(self) -> list[dict[str, Any]]:
        return httpx.get(f"{self.base_url}/_sim/tasks", timeout=10).json()["tasks"]


@pytest.fixture(scope="module")
def simulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Simulator]:
    """`prefect-seedream simulator` in its own process, shared by the cases (distinct prompts)."""
    log = (tmp_path_factory.mktemp("sim") / "simulator.log").open("w")
    process = subprocess.Popen(
        [str(CLI), "simulator", "--port", "0", "--latency", "2", "--jitter", "0.2"],
        stdout=subprocess.PIPE, stderr=log, text=True, start_new_session=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert "listening on http://" in line, line
        yield Simulator(line.rsplit(" ", 1)[-1].strip())
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
        log.close()


def _prompts(case: str) -> dict[str, str]:
    """Row id -> prompt: slow answers on rows 1-3, slow downloads on rows 4-6."""
    prompts = {}
    for i in range(ROWS):
        marker = ""
        if i < 3:
            marker = " [[sim:submit_delay=4*1]]"
        elif i < 6:
            marker = " [[sim:download_delay=4*1]]"
        prompts[f"r{i:02d}"] = f"{case}: a paper lantern over a river, number {i}{marker}"
    return prompts


def _ledger(output: Path) -> dict[str, dict[str, Any]]:
    records = {}
    for path in (output / ".seedream" / "tasks").glob("*.json"):
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue  # being replaced right now
        records[record["row_id"]] = record
    return records


def _env(base_url: str, home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "SEEDREAM_"))}
    env.update(
        SEEDREAM_API_KEY=KEY, SEEDREAM_BASE_URL=base_url, PREFECT_HOME=str(home),
        PREFECT_SERVER_ANALYTICS_ENABLED="false", PYTHONUNBUFFERED="1",
    )
    return env


def _command(dataset: Path, output: Path, *extra: str) -> list[str]:
    return [str(CLI), "run", str(dataset), "--output", str(output), "--max-concurrency",
            str(CONCURRENCY), "--retry-delay", "0.1", *extra]


def _run(command: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True, timeout=300)


# -- the instants ---------------------------------------------------------------------------------


def _created(sim: Simulator, prompts: dict[str, str]) -> list[dict[str, Any]]:
    mine = set(prompts.values())
    return [task for task in sim.tasks() if task["prompt"] in mine]


def before_any_send(sim: Simulator, prompts: dict[str, str], output: Path, started: float) -> bool:
    return time.monotonic() - started > 1.0  # the command is still loading


def submissions_unanswered(sim: Simulator, prompts: dict[str, str], output: Path, started: float) -> bool:
    slow = {prompts[f"r{i:02d}"] for i in range(3)}
    return any(task["prompt"] in slow and not task["answered"] for task in _created(sim, prompts))


def right_after_answers(sim: Simulator, prompts: dict[str, str], output: Path, started: float) -> bool:
    states = [record["state"] for record in _ledger(output).values()]
    return states.count("submitted") >= 1 and "stored" not in states


def while_waiting(sim: Simulator, prompts: dict[str, str], output: Path, started: float) -> bool:
    records = _ledger(output).values()
    return any(r["state"] == "submitted" and time.time() - r["submitted_at"] < 1.0 for r in records) and any(
        r["state"] == "stored" for r in records
    )


def while_downloading(sim: Simulator, prompts: dict[str, str], output: Path, started: float) -> bool:
    slow = {prompts[f"r{i:02d}"] for i in range(3, 6)}
    return any(task["prompt"] in slow and task["downloads"] >= 1 for task in _created(sim, prompts))


def while_writing_the_manifest(sim: Simulator, prompts: dict[str, str], output: Path, started: float) -> bool:
    records = _ledger(output)
    return len(records) == ROWS and all(r["state"] == "stored" for r in records.values())


INSTANTS: dict[str, Callable[..., bool]] = {
    "before any send": before_any_send,
    "submissions unanswered": submissions_unanswered,
    "right after answers": right_after_answers,
    "while waiting": while_waiting,
    "while downloading and storing": while_downloading,
    "while the manifest is written": while_writing_the_manifest,
}


def _kill_at(
    instant: Callable[..., bool], command: list[str], env: dict[str, str], cwd: Path,
    sim: Simulator, prompts: dict[str, str], output: Path,
) -> None:
    """Start the run; SIGKILL its whole process group at the instant."""
    log = (cwd / "killed-run.log").open("w")
    process = subprocess.Popen(command, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT,
                               start_new_session=True)
    started = time.monotonic()
    try:
        while not instant(sim, prompts, output, started):
            assert process.poll() is None, "the run ended before the instant:\n" + (cwd / "killed-run.log").read_text()
            assert time.monotonic() - started < 240, "never reached the instant"
            time.sleep(0.01)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)
        log.close()
    assert process.returncode == -signal.SIGKILL


# -- the checks ---------------------------------------------------------------------------------


def _tasks_per_row(sim: Simulator, prompts: dict[str, str]) -> dict[str, int]:
    created = sim.stats()["submissions_by_prompt"]  # tasks created, per prompt
    return {row_id: created.get(prompt, 0) for row_id, prompt in prompts.items()}


def _check_no_partial_files(output: Path) -> None:
    leftovers = [p for p in (output / ".seedream" / "tmp").glob("*")] if (output / ".seedream" / "tmp").exists() else []
    assert leftovers == [], leftovers
    assert not [p for p in output.rglob("*") if ".tmp" in p.name], "a temporary file was left beside a final one"


def _check_manifest(output: Path, prompts: dict[str, str]) -> dict[str, dict[str, Any]]:
    lines = [json.loads(line) for line in (output / "manifest.jsonl").read_text().splitlines()]
    assert [line["row_id"] for line in lines] == list(prompts), "one line per row, in input order"
    for line in lines:
        assert line["status"] in ("succeeded", "outcome_unknown"), line
        for image in line["images"]:
            path = Path(image["uri"])
            assert path.stat().st_size == image["bytes"]
            with Image.open(path) as decoded:
                decoded.load()  # a partial image would not decode
                assert decoded.size == (image["width"], image["height"])
    return {line["row_id"]: line for line in lines}


@pytest.mark.parametrize("instant", list(INSTANTS))
def test_sigkill_at_an_instant_then_rerun_never_pays_twice(
    instant: str, simulator: Simulator, tmp_path: Path
) -> None:
    prompts = _prompts(instant)
    dataset = tmp_path / "rows.csv"
    with dataset.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "prompt"])
        writer.writerows(prompts.items())
    output = tmp_path / "out"
    env = _env(simulator.base_url, tmp_path / "prefect-home")
    command = _command(dataset, output)

    _kill_at(INSTANTS[instant], command, env, tmp_path, simulator, prompts, output)
    at_kill = _tasks_per_row(simulator, prompts)
    assert all(count <= 1 for count in at_kill.values()), at_kill
    ledger_at_kill = _ledger(output)
    # The kill really hit the instant it is named after:
    if instant == "before any send":
        assert sum(at_kill.values()) == 0 and not ledger_at_kill
    elif instant == "submissions unanswered":  # tasks exist whose answer was never recorded
        assert any(ledger_at_kill.get(f"r{i:02d}", {}).get("state") == "submitting" for i in range(3))
    elif instant == "while downloading and storing":  # a download had begun, not the storing
        slow = {f"r{i:02d}" for i in range(3, 6)}
        assert any(ledger_at_kill.get(row, {}).get("state") == "submitted" for row in slow)

    rerun = _run(command, env, tmp_path)
    assert rerun.returncode in (0, 1), rerun.stdout + rerun.stderr
    tasks = _tasks_per_row(simulator, prompts)
    assert all(count <= 1 for count in tasks.values()), f"a row was paid twice: {tasks}"
    lines = _check_manifest(output, prompts)
    _check_no_partial_files(output)
    unknown = sorted(row for row, line in lines.items() if line["status"] == "outcome_unknown")
    # A row is unknown exactly when the kill left its intent with no recorded answer and no
    # task exists for it; a task that does exist is found in the task list and re-attached.
    in_doubt = [r for r, rec in ledger_at_kill.items() if rec["state"] == "submitting"]
    assert unknown == sorted(r for r in in_doubt if tasks[r] == 0), (in_doubt, tasks)
    if instant == "submissions unanswered":  # their tasks were found, not paid again
        assert any(tasks[r] == 1 and lines[r]["status"] == "succeeded" for r in in_doubt)
    if unknown:
        assert rerun.returncode == 1
        assert f"{len(unknown)} row(s) have an unknown outcome" in rerun.stdout
        assert "--resubmit-unknown" in rerun.stdout
    else:
        assert rerun.returncode == 0, rerun.stdout + rerun.stderr

    finish = _run(_command(dataset, output, "--resubmit-unknown"), env, tmp_path)
    assert finish.returncode == 0, finish.stdout + finish.stderr
    final = _tasks_per_row(simulator, prompts)
    for row_id in prompts:
        expected = tasks[row_id] + (1 if row_id in unknown else 0)
        assert final[row_id] == expected, (row_id, tasks[row_id], final[row_id])
    assert all(line["status"] == "succeeded" for line in _check_manifest(output, prompts).values())
    _check_no_partial_files(output)
