"""The dataset flow end to end, under a real Prefect API, against the simulator."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from prefect_seedream.simulator import RunningSimulator
from tests.helpers import manifest, run_dataset, summary_of, write_csv, write_jsonl
from tests.prefect_reads import flow_run_id_of, task_runs_by_name

pytestmark = pytest.mark.usefixtures("prefect_api")

PROMPTS = [
    {"id": "fox", "prompt": "A red fox in fresh snow"},
    {"id": "lighthouse", "prompt": "Generate 2 different images of a lighthouse at dawn", "n": 2},
    {"id": "tea", "prompt": "A teapot on linen, morning light", "size": "2560x1440"},
    {"id": "market", "prompt": "Watercolor fruit market", "model": "doubao-seedream-4.0", "size": "1K"},
]


async def test_csv_dataset_end_to_end(seedream_env: RunningSimulator, tmp_path: Path) -> None:
    dataset = write_csv(tmp_path / "prompts.csv", PROMPTS)
    output = tmp_path / "out"

    state = await run_dataset(dataset, output)

    assert state.is_completed(), state.message
    summary = await summary_of(state)
    assert (summary.rows, summary.succeeded, summary.images) == (4, 4, 5)
    assert summary.credits == pytest.approx(2 + 4 + 2 + 1.5)
    lines = manifest(output)
    assert [line["row_id"] for line in lines] == ["fox", "lighthouse", "tea", "market"]
    for line in lines:
        assert line["status"] == "succeeded" and line["error"] is None
        assert line["task_id"].startswith("task-unified-")
        for image in line["images"]:
            path = Path(image["uri"])
            assert path.parent == output.resolve()
            with Image.open(path) as decoded:
                assert decoded.size == (image["width"], image["height"])
            assert path.stat().st_size == image["bytes"]
    assert lines[3]["model"] == "doubao-seedream-4.0"
    assert lines[2]["parameters"]["size"] == "2560x1440"
    assert seedream_env.stats()["tasks_created"] == 4


async def test_jsonl_dataset_with_row_overrides(seedream_env: RunningSimulator, tmp_path: Path) -> None:
    rows = [{"prompt": "A koi pond from above", "n": 1}, {"prompt": "A retro tin robot", "size": "4K"}]
    dataset = write_jsonl(tmp_path / "prompts.jsonl", rows)

    state = await run_dataset(dataset, tmp_path / "out", size="2K")

    assert state.is_completed(), state.message
    lines = manifest(tmp_path / "out")
    assert [line["row_id"] for line in lines] == ["row-1", "row-2"]
    assert [line["parameters"]["size"] for line in lines] == ["2K", "4K"]


async def test_partial_failure_and_invalid_rows(seedream_env: RunningSimulator, tmp_path: Path) -> None:
    rows = [
        {"id": "ok", "prompt": "A calm sea"},
        {"id": "policy", "prompt": "Forbidden [[sim:task_error=content_policy_violation]]"},
        {"id": "bad-size", "prompt": "A tiny picture", "size": "1K"},
        {"id": "bad-n", "prompt": "Too many", "n": "16"},
        {"id": "ok-2", "prompt": "A quiet forest"},
    ]
    output = tmp_path / "out"

    state = await run_dataset(write_csv(tmp_path / "d.csv", rows), output)

    assert state.is_failed()
    assert "2 of 5 rows succeeded, 3 failed" in state.message
    assert str(output / "manifest.jsonl") in state.message
    by_id = {line["row_id"]: line for line in manifest(output)}
    assert by_id["ok"]["status"] == by_id["ok-2"]["status"] == "succeeded"
    assert by_id["policy"]["error"]["code"] == "content_policy_violation"
    assert by_id["bad-size"]["error"]["code"] == "invalid_row"
    assert "1K" in by_id["bad-size"]["error"]["message"]
    assert "n=16" in by_id["bad-n"]["error"]["message"]
    assert by_id["bad-size"]["task_id"] is None
    stats = seedream_env.stats()
    assert stats["tasks_created"] == 3  # invalid rows submitted nothing


async def test_retryable_failure_is_retried_and_recovers(
    seedream_env: RunningSimulator, tmp_path: Path
) -> None:
    prompt = "A flaky render [[sim:task_error=service_error*1]]"
    state = await run_dataset(write_csv(tmp_path / "d.csv", [{"id": "flaky", "prompt": prompt}]), tmp_path / "o")

    assert state.is_completed(), state.message
    assert seedream_env.stats()["submissions_by_prompt"][prompt] == 2
    # The row really was retried, inside its one task run (retries are the row runner's,
    # not Prefect's: a retry costs no task run and gives its concurrency slot back).
    runs = await task_runs_by_name(flow_run_id_of(state))
    assert list(runs) == ["row-flaky"]
    assert runs["row-flaky"].state.is_completed() and runs["row-flaky"].run_count == 1
    assert manifest(tmp_path / "o")[0]["submissions"] == 2


async def test_policy_violation_is_not_retried(seedream_env: RunningSimulator, tmp_path: Path) -> None:
    prompt = "Forbidden [[sim:task_error=content_policy_violation]]"
    state = await run_dataset(write_csv(tmp_path / "d.csv", [{"id": "p", "prompt": prompt}]), tmp_path / "o", retries=3)

    assert state.is_failed()
    assert seedream_env.stats()["submissions_by_prompt"][prompt] == 1
    runs = await task_runs_by_name(flow_run_id_of(state))
    assert runs["row-p"].run_count == 1
    assert runs["row-p"].state.is_failed()


async def test_rerun_submits_nothing_new(seedream_env: RunningSimulator, tmp_path: Path) -> None:
    dataset = write_csv(tmp_path / "prompts.csv", PROMPTS)
    output = tmp_path / "out"
    first = await run_dataset(dataset, output)
    created = seedream_env.stats()["tasks_created"]
    first_task_ids = [line["task_id"] for line in manifest(output)]

    second = await run_dataset(dataset, output)

    assert first.is_completed() and second.is_completed()
    stats = seedream_env.stats()
    assert stats["tasks_created"] == created == 4
    assert (await summary_of(second)).reused == 4
    assert (await summary_of(second)).credits == 0
    second_lines = manifest(output)
    assert [line["task_id"] for line in second_lines] == first_task_ids
    assert all(line["reused"] and line["status"] == "succeeded" for line in second_lines)


async def test_a_deleted_image_is_downloaded_again_not_paid_again(
    seedream_env: RunningSimulator, tmp_path: Path
) -> None:
    dataset = write_csv(tmp_path / "d.csv", [{"id": "fox", "prompt": "A red fox"}])
    output = tmp_path / "out"
    await run_dataset(dataset, output)
    [line] = manifest(output)
    image = Path(line["images"][0]["uri"])
    image.unlink()

    state = await run_dataset(dataset, output)

    assert state.is_completed(), state.message
    [again] = manifest(output)
    assert again["task_id"] == line["task_id"] and again["status"] == "succeeded"
    assert image.is_file() and image.stat().st_size == line["images"][0]["bytes"]
    assert seedream_env.stats()["tasks_created"] == 1  # the task's results, fetched again
    assert (await summary_of(state)).credits == 0


async def test_rerun_keeps_lines_of_rows_from_an_earlier_dataset(
    seedream_env: RunningSimulator, tmp_path: Path
) -> None:
    output = tmp_path / "out"
    await run_dataset(write_csv(tmp_path / "a.csv", [{"id": "a", "prompt": "First set"}]), output)
    await run_dataset(write_csv(tmp_path / "b.csv", [{"id": "b", "prompt": "Second set"}]), output)

    assert [line["row_id"] for line in manifest(output)] == ["b", "a"]


async def test_peak_concurrency_never_exceeds_the_limit(
    seedream_env: RunningSimulator, tmp_path: Path
) -> None:
    rows = [{"id": f"r{i}", "prompt": f"Concurrency probe {i}"} for i in range(12)]

    state = await run_dataset(write_csv(tmp_path / "d.csv", rows), tmp_path / "o", max_concurrency=3)

    assert state.is_completed(), state.message
    peak = seedream_env.stats()["peak_concurrent_tasks"]
    assert 1 <= peak <= 3


async def test_global_concurrency_limit_bounds_the_run(
    seedream_env: RunningSimulator, tmp_path: Path
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate

    async with get_client() as client:
        await client.create_global_concurrency_limit(
            GlobalConcurrencyLimitCreate(name="seedream-test-budget", limit=2)
        )
    rows = [{"id": f"r{i}", "prompt": f"Shared budget {i}"} for i in range(6)]

    state = await run_dataset(
        write_csv(tmp_path / "d.csv", rows), tmp_path / "o",
        max_concurrency=6, concurrency_limit_name="seedream-test-budget",
    )

    assert state.is_completed(), state.message
    assert seedream_env.stats()["peak_concurrent_tasks"] <= 2


async def test_missing_global_concurrency_limit_fails_before_spending(
    seedream_env: RunningSimulator, tmp_path: Path
) -> None:
    state = await run_dataset(
        write_csv(tmp_path / "d.csv", [{"prompt": "x"}]), tmp_path / "o",
        concurrency_limit_name="no-such-limit",
    )

    assert state.is_failed()
    assert "prefect gcl create no-such-limit" in state.message or "no-such-limit" in str(
        await state.aresult(raise_on_failure=False)
    )
    assert seedream_env.stats()["submit_requests"] == 0


async def test_invalid_flow_parameters_fail_before_spending(
    seedream_env: RunningSimulator, tmp_path: Path
) -> None:
    state = await run_dataset(
        write_csv(tmp_path / "d.csv", [{"prompt": "x"}]), tmp_path / "o",
        model="doubao-seedream-4.5", size="1K",
    )

    assert state.is_failed()
    assert "1K" in str(await state.aresult(raise_on_failure=False))
    assert seedream_env.stats()["submit_requests"] == 0


async def test_parquet_dataset_is_streamed_in_batches(seedream_env: RunningSimulator, tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({
        "id": ["pq-1", "pq-2", "pq-3"],
        "prompt": ["A glass of water", "A paper boat", None],
        "n": [1, 2, 1],
    })
    pq.write_table(table, tmp_path / "prompts.parquet", row_group_size=1)

    state = await run_dataset(tmp_path / "prompts.parquet", tmp_path / "out")

    lines = manifest(tmp_path / "out")
    assert [(line["row_id"], line["status"]) for line in lines] == [
        ("pq-1", "succeeded"), ("pq-2", "succeeded"), ("pq-3", "failed"),
    ]
    assert lines[1]["parameters"]["n"] == 2 and len(lines[1]["images"]) == 2
    assert lines[2]["error"] == {"code": "invalid_row", "message": "prompt is missing"}
    assert state.is_failed()
