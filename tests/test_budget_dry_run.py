"""The credit budget (``max_credits``) and the dry run, against the simulator.

What the simulator bills is read back from its own tasks: a completed task costs
``credits_per_image`` per generated image, a failed one nothing (see its payloads). The
simulator here bills today's published prices (4.5 at 2.5, 4.0 at 1.5), the client's estimates.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from prefect_seedream.api.models import MODEL_LIMITS
from prefect_seedream.simulator import RunningSimulator, SimulatorConfig, running_simulator
from tests.conftest import TEST_API_KEY
from tests.helpers import manifest, run_dataset, summary_of, write_jsonl

pytestmark = pytest.mark.usefixtures("prefect_api")

M45, M40 = "doubao-seedream-4.5", "doubao-seedream-4.0"


@pytest.fixture
def simulator() -> Iterator[RunningSimulator]:
    """The conftest's simulator, billing today's published prices."""
    config = SimulatorConfig(latency_seconds=0.3, jitter_seconds=0.05, price_list="published")
    with running_simulator(config) as sim:
        yield sim


@pytest.fixture
def silent_list_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[RunningSimulator]:
    """The conftest's ``silent_list_env``, billing today's published prices."""
    config = SimulatorConfig(
        latency_seconds=0.3, jitter_seconds=0.05, task_list_echoes_prompt=False, price_list="published"
    )
    with running_simulator(config) as sim:
        monkeypatch.setenv("SEEDREAM_API_KEY", TEST_API_KEY)
        monkeypatch.setenv("SEEDREAM_BASE_URL", sim.base_url)
        yield sim


def by_id(lines: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {line["row_id"]: line for line in lines}


def billed(sim: RunningSimulator) -> float:
    """Credits the simulator charged: completed tasks, per generated image."""
    now = sim.app_state.now()
    total = 0.0
    for task in sim.app_state.tasks.values():
        status, _ = task.status_at(now)
        if status == "completed":
            total += task.model.credits_per_image * task.image_count
    return total


def rows_of(*specs: tuple[str, str, int]) -> list[dict[str, Any]]:
    return [{"id": row_id, "prompt": prompt, "n": n} for row_id, prompt, n in specs]


# -- max_credits -------------------------------------------------------------------------------


@pytest.mark.parametrize("concurrency", [1, 4])
async def test_rows_beyond_the_budget_are_skipped_and_never_submitted(
    seedream_env: RunningSimulator, tmp_path: Path, concurrency: int
) -> None:
    rows = rows_of(*[(f"r{i}", f"a lantern number {i}", 1) for i in range(1, 5)])
    output = tmp_path / "out"
    state = await run_dataset(
        write_jsonl(tmp_path / "rows.jsonl", rows),
        output,
        max_credits=5,
        max_concurrency=concurrency,
    )
    lines = by_id(manifest(output))
    stats = seedream_env.stats()
    summary = await summary_of(state)

    assert sorted(lines) == ["r1", "r2", "r3", "r4"]
    for row_id in ("r1", "r2"):
        assert lines[row_id]["status"] == "succeeded"
    for row_id in ("r3", "r4"):
        line = lines[row_id]
        assert line["status"] == "skipped", line
        assert line["error"]["code"] == "budget_exceeded"
        assert "max_credits=5" in line["error"]["message"]
        assert line["task_id"] is None and line["submissions"] == 0
        assert line["prompt"] not in stats["submissions_by_prompt"]
    assert stats["tasks_created"] == 2 and stats["submit_requests"] == 2
    assert summary.skipped == 2 and summary.succeeded == 2
    assert summary.credits == 5.0 == billed(seedream_env)
    assert summary.credits <= 5
    assert state.is_failed()
    assert "2 skipped" in (state.message or "") and "5 credits" in (state.message or "")


async def test_a_row_too_big_for_the_rest_of_the_budget_does_not_block_smaller_ones(
    seedream_env: RunningSimulator, tmp_path: Path
) -> None:
    rows = rows_of(
        ("small1", "a lantern", 1), ("big", "three lanterns", 3), ("small2", "a kite", 1)
    )
    output = tmp_path / "out"
    state = await run_dataset(
        write_jsonl(tmp_path / "rows.jsonl", rows), output, max_credits=5, max_concurrency=1
    )
    lines = by_id(manifest(output))
    stats = seedream_env.stats()

    assert lines["small1"]["status"] == lines["small2"]["status"] == "succeeded"
    assert lines["big"]["status"] == "skipped"
    assert lines["big"]["error"]["code"] == "budget_exceeded"
    assert "reserving 7.5 credits" in lines["big"]["error"]["message"]
    assert "three lanterns" not in stats["submissions_by_prompt"]
    summary = await summary_of(state)
    assert summary.credits == 5.0 == billed(seedream_env)


async def test_an_unbilled_failure_gives_its_reservation_back(
    seedream_env: RunningSimulator, tmp_path: Path
) -> None:
    rows = rows_of(
        ("refused", "a lantern [[sim:task_error=content_policy_violation]]", 1),
        ("a", "a kite", 1),
        ("b", "a boat", 1),
    )
    output = tmp_path / "out"
    state = await run_dataset(
        write_jsonl(tmp_path / "rows.jsonl", rows), output, max_credits=5, max_concurrency=1
    )
    lines = by_id(manifest(output))

    assert lines["refused"]["status"] == "failed"
    assert lines["a"]["status"] == lines["b"]["status"] == "succeeded"
    assert seedream_env.stats()["tasks_created"] == 3
    summary = await summary_of(state)
    assert summary.credits == 5.0 == billed(seedream_env)


async def test_an_unknown_outcome_counts_against_the_budget(
    silent_list_env: RunningSimulator, tmp_path: Path
) -> None:
    """A submission that may have been billed keeps its credits reserved.

    (Changed with the split of the summary's credits: `credits` is what was charged,
    `credits_at_risk` what may still be; both count against max_credits. The task list of
    this simulator does not show prompts, so the dropped row's task stays unknown.)
    """
    seedream_env = silent_list_env
    rows = rows_of(
        ("dropped", "a lantern [[sim:drop_after_create]]", 1),
        ("a", "a kite", 1),
        ("b", "a boat", 1),
    )
    output = tmp_path / "out"
    state = await run_dataset(
        write_jsonl(tmp_path / "rows.jsonl", rows), output, max_credits=5, max_concurrency=1
    )
    lines = by_id(manifest(output))
    stats = seedream_env.stats()

    assert lines["dropped"]["status"] == "outcome_unknown"
    assert lines["a"]["status"] == "succeeded"
    assert lines["b"]["status"] == "skipped"
    assert lines["b"]["error"]["code"] == "budget_exceeded"
    assert "a boat" not in stats["submissions_by_prompt"]
    summary = await summary_of(state)
    assert (summary.credits, summary.credits_at_risk) == (2.5, 2.5)
    assert billed(seedream_env) <= 5


async def test_a_billed_task_whose_download_failed_counts_against_the_budget(
    seedream_env: RunningSimulator, tmp_path: Path
) -> None:
    """(Found as a bug: spent was settled to 0 for any SeedreamError; fixed in flows.py.)"""
    rows = rows_of(("bad", "a lantern [[sim:download=not_image]]", 1), ("next", "a kite", 1))
    output = tmp_path / "out"
    state = await run_dataset(
        write_jsonl(tmp_path / "rows.jsonl", rows), output, max_credits=2.5, max_concurrency=1
    )
    lines = by_id(manifest(output))

    assert lines["bad"]["status"] == "failed"
    assert lines["bad"]["error"]["code"] == "not_an_image"
    # The first task completed: the simulator charged it 2.5 credits, the whole budget.
    assert billed(seedream_env) <= 2.5, f"{billed(seedream_env)} credits billed with max_credits=2.5"
    assert lines["next"]["status"] == "skipped"
    assert (await summary_of(state)).credits == 2.5


async def test_reattached_tasks_do_not_push_the_reported_credits_past_the_budget(
    seedream_env: RunningSimulator, tmp_path: Path
) -> None:
    """Re-attaching costs this run nothing: the budget is all for new submissions.

    (Found as a bug: re-attached rows reserved 0 but then added their credits to
    budget.spent, so summary.credits ended above max_credits; fixed in flows.py.)
    """
    slow = [("a", "a lantern [[sim:latency=600]]", 1), ("b", "a kite [[sim:latency=600]]", 1)]
    output = tmp_path / "out"
    first = await run_dataset(
        write_jsonl(tmp_path / "first.jsonl", rows_of(*slow)), output, max_wait_seconds=1.0
    )
    assert (await summary_of(first)).in_flight == 2
    seedream_env.app_state.advance_time(601)  # both tasks are done now

    rows = rows_of(*slow, ("c", "a boat", 1))
    state = await run_dataset(
        write_jsonl(tmp_path / "second.jsonl", rows), output, max_credits=2.5, max_concurrency=3
    )
    lines = by_id(manifest(output))
    assert seedream_env.stats()["tasks_created"] <= 3
    assert lines["a"]["status"] == lines["b"]["status"] == "succeeded"
    assert lines["a"]["reused"] is lines["b"]["reused"] is False
    assert lines["c"]["status"] == "succeeded"  # the only new submission fits the budget
    assert seedream_env.stats()["submissions_by_prompt"]["a boat"] == 1
    summary = await summary_of(state)
    assert summary.credits <= 2.5, f"summary.credits={summary.credits} with max_credits=2.5"


# -- dry run ---------------------------------------------------------------------------------


async def test_dry_run_validates_estimates_and_submits_nothing(
    seedream_env: RunningSimulator, tmp_path: Path
) -> None:
    rows = [
        {"id": "one", "prompt": "a lantern"},  # flow defaults: 4.0, n=2
        {"id": "three", "prompt": "three lanterns", "n": 3, "model": M45},
        {"id": "four-oh", "prompt": "a kite", "n": 4, "model": M40, "size": "1K"},
        {"id": "bad-size", "prompt": "a boat", "model": M45, "size": "1K"},  # invalid on 4.5
        {"id": "bad-n", "prompt": "a boat", "n": "lots"},  # invalid
    ]
    output = tmp_path / "out"
    state = await run_dataset(
        write_jsonl(tmp_path / "rows.jsonl", rows),
        output,
        dry_run=True,
        model=M40,
        n=2,
        max_credits=1,  # a budget is no reason for a dry run to fail
    )
    summary = await summary_of(state)

    expected = (
        MODEL_LIMITS[M40].credits_per_image * 2
        + MODEL_LIMITS[M45].credits_per_image * 3
        + MODEL_LIMITS[M40].credits_per_image * 4
    )
    assert expected == 16.5
    assert state.is_completed(), state
    assert summary.dry_run is True
    assert summary.rows == 5 and summary.invalid == 2
    assert summary.estimated_credits == pytest.approx(expected)
    assert summary.credits == 0 and summary.succeeded == 0 and summary.manifest is None
    assert "dry run" in (state.message or "") and "16.5" in (state.message or "")
    stats = seedream_env.stats()
    assert stats["submit_requests"] == 0 and stats["tasks_created"] == 0 and stats["polls"] == 0
    assert not (output / "manifest.jsonl").exists()
    assert not output.exists() or not any(output.rglob("*"))


async def test_dry_run_leaves_an_earlier_output_untouched(
    seedream_env: RunningSimulator, tmp_path: Path
) -> None:
    output = tmp_path / "out"
    dataset = write_jsonl(tmp_path / "rows.jsonl", [{"id": "x", "prompt": "a lantern"}])
    assert (await run_dataset(dataset, output)).is_completed()
    before = {p: p.read_bytes() for p in output.rglob("*") if p.is_file()}
    requests = seedream_env.stats()["submit_requests"]

    more = write_jsonl(
        tmp_path / "more.jsonl",
        [{"id": "x", "prompt": "a lantern"}, {"id": "y", "prompt": "a kite"}],
    )
    state = await run_dataset(more, output, dry_run=True)
    assert state.is_completed()
    assert (await summary_of(state)).estimated_credits == pytest.approx(
        2 * MODEL_LIMITS[M45].credits_per_image
    )
    after = {p: p.read_bytes() for p in output.rglob("*") if p.is_file()}
    assert after == before
    assert json.loads((output / "manifest.jsonl").read_text().splitlines()[0])["row_id"] == "x"
    assert seedream_env.stats()["submit_requests"] == requests


async def test_a_gone_task_is_resubmitted_only_within_the_budget(
    seedream_env: RunningSimulator, tmp_path: Path
) -> None:
    """A row that re-attaches reserves nothing; if its task turns out gone and it must
    submit after all, the budget is asked first."""
    output = tmp_path / "out"
    dataset = write_jsonl(tmp_path / "rows.jsonl", rows_of(("fox", "A red fox [[sim:latency=600]]", 1)))
    first = await run_dataset(dataset, output, max_wait_seconds=1.0)
    assert by_id(manifest(output))["fox"]["status"] == "in_flight", first.message
    # The task is forgotten by the service (an hour ago, say): it is gone for good.
    [path] = (output / ".seedream" / "tasks").glob("*.json")
    record = json.loads(path.read_text())
    record["task_id"], record["submitted_at"] = "task-unified-1700000000-forgottn", record["submitted_at"] - 3600
    path.write_text(json.dumps(record))
    created = seedream_env.stats()["tasks_created"]

    state = await run_dataset(dataset, output, max_credits=1)

    line = by_id(manifest(output))["fox"]
    assert line["status"] == "skipped" and line["error"]["code"] == "budget_exceeded", line
    assert seedream_env.stats()["tasks_created"] == created  # nothing sent
    assert (await summary_of(state)).credits == 0

    again = await run_dataset(dataset.with_name("rows.jsonl"), output, max_credits=10, max_wait_seconds=1.0)
    assert by_id(manifest(output))["fox"]["status"] == "in_flight", again.message
    assert seedream_env.stats()["tasks_created"] == created + 1  # within the budget: submitted
