"""One story per run in the Prefect UI, whatever the entry point (issue 23).

A user's flow calling ``generate_many``, the dataset flow and ``generate_images.map`` each
show four keyed artifacts (progress, summary, rows with the failures first, gallery), nothing
per batch, and no ERROR log (let alone a traceback) for rows the API refused: each refused
row is one WARNING line with its task id, code and message. Everything is read back from a
real Prefect server; the simulator refuses the prompts that carry a content-policy marker.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterId,
    LogFilter,
    LogFilterFlowRunId,
)
from prefect.futures import wait
from prefect.logging.handlers import APILogHandler

from prefect_seedream import GenerationRequest, generate_images, generate_many
from prefect_seedream.engine.defaults import GALLERY_LIMIT
from prefect_seedream.simulator import RunningSimulator
from tests.helpers import FAST, run_dataset, write_csv
from tests.prefect_reads import artifacts_of, events_of_run, flow_run_id_of

pytestmark = pytest.mark.usefixtures("prefect_api")

REFUSED = "[[sim:task_error=content_policy_violation]]"
STORY = ("progress", "summary", "rows", "gallery")


def requests_with_refusals(count: int, refused_every: int, word: str) -> list[GenerationRequest]:
    """``count`` requests with ids; every ``refused_every``-th one is refused by the API."""
    return [
        GenerationRequest(
            prompt=f"a {word} number {index}" + (f" {REFUSED}" if index % refused_every == 3 else ""),
            n=1,
        )
        for index in range(count)
    ]


async def read_run_logs(flow_run_id: UUID, settle_seconds: float = 1.5) -> list[Any]:
    """Every log line of a flow run (its task runs' included), once the server has them all."""
    await APILogHandler.aflush()
    found: list[Any] = []
    stable_since = time.monotonic()
    deadline = time.monotonic() + 30
    async with get_client() as client:
        while time.monotonic() < deadline:
            logs: list[Any] = []
            while True:
                page = await client.read_logs(
                    LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])), limit=200, offset=len(logs)
                )
                logs += page
                if len(page) < 200:
                    break
            if len(logs) != len(found):
                found, stable_since = logs, time.monotonic()
            elif time.monotonic() - stable_since >= settle_seconds:
                break
            await asyncio.sleep(0.3)
    return found


async def task_runs_of(flow_run_id: UUID) -> list[Any]:
    """Every task run of a flow run (two calls may give two task runs the same name)."""
    async with get_client() as client:
        return await client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
        )


def assert_no_traceback(logs: list[Any]) -> None:
    """No traceback anywhere (an expected outcome is not an exception), and nothing at ERROR
    but Prefect's one line for a task run that ended Failed, which carries our counts."""
    assert not [log.message[:300] for log in logs if "Traceback" in log.message or "NoneType: None" in log.message]
    errors = [log.message for log in logs if log.level >= 40]
    assert all(line.startswith("Finished in state Failed(") and "failed" in line for line in errors), errors


def refusal_warnings(logs: list[Any]) -> list[str]:
    """The WARNING lines that name a refused row's code."""
    return [log.message for log in logs if log.level == 30 and "content_policy_violation" in log.message]


def story_of(artifacts: list[Any], prefix: str) -> dict[str, Any]:
    """The four artifacts of the story ``prefix`` (fails if one is missing)."""
    by_key = {artifact.key: artifact for artifact in artifacts}
    missing = [f"{prefix}-{part}" for part in STORY if f"{prefix}-{part}" not in by_key]
    assert not missing, (missing, sorted(str(k) for k in by_key))
    return {part: by_key[f"{prefix}-{part}"] for part in STORY}


def check_story(story: dict[str, Any], *, rows: int, refused: int, images: int) -> list[dict[str, Any]]:
    """The story's figures: progress 100 %, counts, the refused rows first, the gallery."""
    assert float(story["progress"].data) == 100.0
    counts = {row["what"]: row["count"] for row in json.loads(story["summary"].data)}
    assert (counts["rows in all"], counts["rows succeeded"], counts["rows failed"]) == (rows, rows - refused, refused)
    assert counts["images stored"] == images
    assert f"{rows - refused} of {rows} rows succeeded" in story["summary"].description
    table = json.loads(story["rows"].data)
    assert len(table) == rows
    assert [row["status"] for row in table[:refused]] == ["failed"] * refused
    assert all(row["status"] == "succeeded" for row in table[refused:])
    for row in table[:refused]:
        assert row["code"] == "content_policy_violation" and row["message"]
        assert row["task id"].startswith("task-unified-") and row["next step"].startswith("change the prompt")
    gallery = story["gallery"].data
    assert gallery.count("](data:image/jpeg;base64,") == min(images, GALLERY_LIMIT)
    return table


def test_a_user_flow_calling_generate_many_twice_shows_two_stories(
    seedream_env: RunningSimulator, tmp_path: Path
) -> None:
    """A sync user flow (the path that ran the task body inside the loop probe's `except`)."""
    destination = str(tmp_path / "posters")
    first, second = requests_with_refusals(40, 10, "lantern"), requests_with_refusals(12, 6, "kite")

    @flow
    def posters() -> tuple[int, int]:
        one = generate_many(first, destination, rows_per_task=8, **FAST)
        two = generate_many(second, destination, **FAST)
        return sum(r.ok for r in one), sum(r.ok for r in two)

    state = posters(return_state=True)
    assert state.is_completed(), state.message
    assert state.result() == (36, 10)
    run_id = flow_run_id_of(state)

    artifacts = asyncio.run(artifacts_of(run_id))
    assert len(artifacts) == 8, sorted(str(a.key) for a in artifacts)  # two sets of four
    one = check_story(story_of(artifacts, "seedream-posters"), rows=40, refused=4, images=36)
    two = check_story(story_of(artifacts, "seedream-posters-2"), rows=12, refused=2, images=10)
    assert {row["row"] for row in one[:4]}.isdisjoint(row["row"] for row in two[:2])
    summary = {r["what"]: r["count"] for r in json.loads(story_of(artifacts, "seedream-posters")["summary"].data)}
    assert summary["manifest (one line per row)"].endswith("posters/manifest.jsonl")

    runs = asyncio.run(task_runs_of(run_id))
    many = {run.id for run in runs if run.name == "many-posters"}
    assert len(many) == 2 and {a.task_run_id for a in artifacts} == many  # nothing per batch
    batches = {run.name: run for run in runs if run.name.startswith("rows-")}
    assert len(batches) == 5 and batches["rows-25-32"].state.is_completed()
    failed = {name: run.state.message for name, run in batches.items() if run.state.is_failed()}
    assert failed == {f"rows-{first}-{first + 7}": f"rows {first}-{first + 7}: 7 succeeded, 1 failed"
                      for first in (1, 9, 17, 33)}

    logs = asyncio.run(read_run_logs(run_id))
    assert_no_traceback(logs)
    warnings = refusal_warnings(logs)
    assert len(warnings) == 6, warnings
    assert all("task-unified-" in line and "simulated failure" in line for line in warnings)

    # Each call ends with the run-end event an automation reacts to (see docs/run-page.md).
    ended = asyncio.run(events_of_run(run_id, "seedream.dataset.", expected=2))
    assert sorted((e["event"], e["payload"]["rows"], e["payload"]["failed"]) for e in ended) == [
        ("seedream.dataset.failed", 12, 2), ("seedream.dataset.failed", 40, 4)]
    assert all(e["payload"]["manifest"].endswith("posters/manifest.jsonl") for e in ended)


async def test_the_dataset_flow_tells_the_same_story_under_its_own_key(
    seedream_env: RunningSimulator, tmp_path: Path
) -> None:
    rows = [{"id": f"r{n}", "prompt": f"A kite over dunes, take {n}"} for n in range(1, 21)]
    for n in (4, 15):
        rows[n - 1]["prompt"] += f" {REFUSED}"

    state = await run_dataset(write_csv(tmp_path / "d.csv", rows), tmp_path / "out", rows_per_task=5)
    daily = await run_dataset(
        write_csv(tmp_path / "d.csv", rows), tmp_path / "daily", artifact_key="Daily Kites"
    )

    assert state.is_failed() and "18 of 20 rows succeeded" in str(state.message)
    artifacts = await artifacts_of(flow_run_id_of(state))
    assert len(artifacts) == 4
    table = check_story(story_of(artifacts, "seedream"), rows=20, refused=2, images=18)
    assert [row["row"] for row in table[:2]] == ["r4", "r15"]
    check_story(story_of(await artifacts_of(flow_run_id_of(daily)), "daily-kites"), rows=20, refused=2, images=18)
    for run_id in (flow_run_id_of(state), flow_run_id_of(daily)):
        logs = await read_run_logs(run_id)
        assert_no_traceback(logs)
        assert len(refusal_warnings(logs)) == 2


def test_generate_images_map_shares_one_story_per_flow_run(
    seedream_env: RunningSimulator, tmp_path: Path
) -> None:
    destination = str(tmp_path / "singles")
    requests = requests_with_refusals(8, 4, "owl")  # 2 of 8 refused

    @flow
    def singles() -> list[str]:
        futures = generate_images.map(requests, destination, label=[f"owl-{i}" for i in range(8)],
                                      poll_interval=0.05)
        wait(futures)
        return [future.state.type.value for future in futures]

    state = singles(return_state=True)
    assert state.is_completed(), state.message
    assert sorted(state.result()) == ["COMPLETED"] * 6 + ["FAILED"] * 2
    run_id = flow_run_id_of(state)

    artifacts = asyncio.run(artifacts_of(run_id))
    assert len(artifacts) == 4, sorted(str(a.key) for a in artifacts)
    table = check_story(story_of(artifacts, "seedream-singles"), rows=8, refused=2, images=6)
    assert {row["row"] for row in table[:2]} == {"owl-3", "owl-7"}

    refused = [run for run in asyncio.run(task_runs_of(run_id)) if run.state.is_failed()]
    assert len(refused) == 2
    assert all("content_policy_violation" in str(run.state.message) for run in refused)
    logs = asyncio.run(read_run_logs(run_id))
    assert_no_traceback(logs)
    assert len(refusal_warnings(logs)) == 2


def test_a_batch_that_raised_logs_its_traceback(
    seedream_env: RunningSimulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Quiet is for expected outcomes only: an exception of our own still shows its traceback."""
    from prefect_seedream.engine.run_folder import RunParts

    def broken_write(self: RunParts, *args: Any) -> None:
        raise RuntimeError("the part file could not be written")

    monkeypatch.setattr(RunParts, "write", broken_write)

    @flow
    def broken() -> None:
        generate_many(requests_with_refusals(2, 10, "owl"), str(tmp_path / "broken"), **FAST)

    state = broken(return_state=True)
    logs = asyncio.run(read_run_logs(flow_run_id_of(state)))
    tracebacks = [log.message for log in logs if log.level >= 40 and "Traceback" in log.message]
    assert any("the part file could not be written" in line for line in tracebacks), tracebacks
    assert not [line for line in tracebacks if "no running event loop" in line]


async def test_a_shard_writes_nothing_per_batch_and_no_traceback(
    seedream_env: RunningSimulator, tmp_path: Path
) -> None:
    """A shard flow run (run here under its parent's lock, as a worker would) shows its
    progress only: the parent's four artifacts tell the run's story."""
    from prefect_seedream import RunOptions, generate_shard
    from prefect_seedream.engine.output_lock import OutputLock
    from prefect_seedream.engine.storage import ImageStore

    rows = [{"id": f"s{n}", "prompt": f"A harbour at night, take {n}"} for n in range(1, 13)]
    rows[2]["prompt"] += f" {REFUSED}"
    dataset = write_csv(tmp_path / "d.csv", rows)
    output = tmp_path / "out"
    options = RunOptions(rows_per_task=4, **FAST)
    async with OutputLock(ImageStore(str(output)), "parent-run"):
        state = await generate_shard(
            str(dataset), str(output), first_row=1, last_row=12, run_id="parent-run", total_rows=12,
            options=options, return_state=True,
        )

    assert state.is_failed() and "11 of 12 rows succeeded" in str(state.message)
    run_id = flow_run_id_of(state)
    artifacts = await artifacts_of(run_id)
    assert [(a.type, a.key, a.task_run_id) for a in artifacts] == [("progress", None, None)]
    assert float(artifacts[0].data) == 100.0
    logs = await read_run_logs(run_id)
    assert_no_traceback(logs)
    assert len(refusal_warnings(logs)) == 1


def _code_block(text: str, language: str, after: str) -> str:
    start = text.index(f"```{language}\n", text.index(after)) + len(language) + 4
    return text[start:text.index("```", start)]


async def test_the_documented_automation_is_accepted_by_the_server() -> None:
    """The page's automation (Python and YAML) is created on a real server as written."""
    import yaml
    from prefect.blocks.notifications import SlackWebhook
    from prefect.events.schemas.automations import AutomationCore

    page = (Path(__file__).resolve().parents[1] / "docs" / "run-page.md").read_text(encoding="utf-8")
    await SlackWebhook(url="https://hooks.slack.com/services/T0/B0/x").save("seedream-alerts", overwrite=True)
    python = _code_block(page, "python", "## Being told when a run ends")
    scope: dict[str, Any] = {}
    await asyncio.to_thread(exec, python, scope)  # the documentation's own code

    async with get_client() as client:
        created = await client.read_automation(scope["automation"].id)
        assert created.trigger.expect == {"seedream.dataset.failed"}
        assert created.actions[0].type == "send-notification"
        from_yaml = AutomationCore.model_validate(yaml.safe_load(
            _code_block(page, "yaml", "## Being told when a run ends").replace(
                "00000000-0000-0000-0000-000000000000", str(created.actions[0].block_document_id))
        ))
        assert from_yaml.trigger.expect == created.trigger.expect
        assert await client.create_automation(from_yaml)


@pytest.mark.slow
def test_a_few_hundred_requests_make_four_artifacts_and_no_traceback(
    seedream_env: RunningSimulator, tmp_path: Path
) -> None:
    """The issue's case at its size: 400 requests, 10 refused, default batching (8 a batch)."""
    requests = requests_with_refusals(400, 40, "lighthouse")

    @flow
    def team() -> int:
        return sum(r.ok for r in generate_many(requests, str(tmp_path / "team"), max_concurrency=32, **FAST))

    started = time.monotonic()
    state = team(return_state=True)
    elapsed = time.monotonic() - started
    assert state.is_completed() and state.result() == 390
    run_id = flow_run_id_of(state)
    artifacts = asyncio.run(artifacts_of(run_id))
    assert len(artifacts) == 4
    check_story(story_of(artifacts, "seedream-team"), rows=400, refused=10, images=390)
    assert "the first 48 are shown, every one is listed in" in story_of(artifacts, "seedream-team")["gallery"].data
    logs = asyncio.run(read_run_logs(run_id))
    assert_no_traceback(logs)
    assert len(refusal_warnings(logs)) == 10
    errors = sum(log.level >= 40 for log in logs)
    print(f"400 requests: {len(artifacts)} artifacts, {len(logs)} log lines, {errors} at ERROR "
          f"(no traceback), {elapsed:.1f} s")


def test_sync_calls_run_their_body_with_no_exception_being_handled() -> None:
    """The sync dispatch probes for an event loop without leaving its `RuntimeError` as the
    exception being handled while the body runs (Prefect logged it as the traceback of every
    failed batch of a sync flow's `generate_many`)."""
    import sys

    from prefect_seedream.dispatch import run_sync

    async def body() -> Any:
        return sys.exc_info()

    assert run_sync(body()) == (None, None, None)
