"""The plugin as a library (issue 15): rows in memory, sync and async use, `generate_many`,
results as objects, local reference images, the block found by its slug.

Every test runs real flows on a real Prefect API and talks HTTP to the simulator.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from prefect import flow
from prefect.client.orchestration import get_client

from prefect_seedream import (
    DatasetRunSummary,
    GeneratedImages,
    GenerationRequest,
    ManifestLine,
    SeedreamClient,
    generate_dataset,
    generate_images,
    generate_many,
    read_manifest,
)
from prefect_seedream.simulator import RunningSimulator, SimulatorConfig, running_simulator
from tests.conftest import TEST_API_KEY
from tests.helpers import FAST, manifest
from tests.prefect_reads import flow_run_id_of, task_runs_by_name

pytestmark = pytest.mark.usefixtures("prefect_api")


def prompts(count: int, word: str = "lantern") -> list[str]:
    return [f"a paper {word} number {index}" for index in range(count)]


async def test_rows_in_memory_keep_parameters_small_and_a_rerun_resumes(
    seedream_env: RunningSimulator, tmp_path: Path
) -> None:
    rows: list[dict[str, Any]] = [{"prompt": text} for text in prompts(20)]
    rows[0]["id"] = "first"
    rows.append({"prompt": prompts(20)[5]})  # the same content twice: two rows, two ids
    output = tmp_path / "out"

    state = await generate_dataset(rows, output=str(output), return_state=True, **FAST)
    assert state.is_completed(), state.message
    lines = manifest(output)
    assert len(lines) == 21 and lines[0]["row_id"] == "first"
    ids = [line["row_id"] for line in lines[1:]]
    assert all(row_id.startswith("r-") for row_id in ids) and len(set(ids)) == 20
    assert ids[-1] == f"{ids[4]}-2"

    async with get_client() as client:
        run = await client.read_flow_run(flow_run_id_of(state))
    dataset = run.parameters["dataset"]  # a path, not the rows
    assert isinstance(dataset, str) and "/.seedream/inputs/" in dataset and dataset.endswith(".jsonl")
    assert len(json.dumps(run.parameters)) < 2000

    created = seedream_env.stats()["tasks_created"]
    again = await generate_dataset(list(rows), output=str(output), return_state=True, **FAST)
    summary = await again.aresult()
    assert summary.reused == 21 and seedream_env.stats()["tasks_created"] == created


async def test_requests_and_dataframes_are_datasets(seedream_env: RunningSimulator, tmp_path: Path) -> None:
    import pandas as pd
    import polars as pl

    requests = [GenerationRequest(prompt=text, n=1) for text in prompts(3, "kite")]
    frame = pd.DataFrame({"prompt": prompts(3, "boat"), "n": [1, None, 2], "id": ["b0", None, "b2"]})
    polars_frame = pl.DataFrame({"prompt": prompts(3, "fox"), "size": ["2K", "4K", None]})
    for index, data in enumerate((requests, frame, polars_frame)):
        output = tmp_path / f"out-{index}"
        state = await generate_dataset(data, output=str(output), return_state=True, **FAST)
        assert state.is_completed(), state.message
        lines = manifest(output)
        assert [line["status"] for line in lines] == ["succeeded"] * 3
    frame_lines = manifest(tmp_path / "out-1")
    assert [line["row_id"] for line in frame_lines][::2] == ["b0", "b2"]  # NaN id: derived
    assert [line["parameters"]["n"] for line in frame_lines] == [1, 1, 2]  # NaN n: the default
    assert manifest(tmp_path / "out-2")[1]["parameters"]["size"] == "4K"


@pytest.fixture
def client_count(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """How many API clients were opened and closed."""
    counts = {"opened": 0, "closed": 0}
    init, close = SeedreamClient.__init__, SeedreamClient.aclose

    def counting_init(self: SeedreamClient, *args: Any, **kwargs: Any) -> None:
        counts["opened"] += 1
        init(self, *args, **kwargs)

    async def counting_close(self: SeedreamClient) -> None:
        counts["closed"] += 1
        await close(self)

    monkeypatch.setattr(SeedreamClient, "__init__", counting_init)
    monkeypatch.setattr(SeedreamClient, "aclose", counting_close)
    return counts


def test_a_sync_flow_calls_tasks_and_flows_directly(
    seedream_env: RunningSimulator, tmp_path: Path, client_count: dict[str, int]
) -> None:
    """From a sync flow: `x(...)` returns the result; `.submit`, `.map` work as before; every
    client a call opened is closed."""
    output = str(tmp_path / "out")

    @flow
    def content_team() -> tuple[Any, ...]:
        one = generate_images(GenerationRequest(prompt="a red fox"), output, label="fox", poll_interval=0.05)
        submitted = generate_images.submit(GenerationRequest(prompt="a blue fox"), output, label="blue-fox",
                                           poll_interval=0.05).result()
        mapped = [f.result() for f in generate_images.map(
            [GenerationRequest(prompt=p) for p in prompts(2, "owl")], output, label=["owl-0", "owl-1"],
            poll_interval=0.05,
        )]
        many = generate_many([GenerationRequest(prompt=p) for p in prompts(4, "cat")], output,
                             poll_interval=0.05, retry_delay_seconds=0.05)
        summary = generate_dataset([{"id": "sync-row", "prompt": "a sync lighthouse"}], output=output, **FAST)
        return one, submitted, mapped, many, summary

    one, submitted, mapped, many, summary = content_team()
    assert isinstance(one, GeneratedImages) and one.ok and Path(one.images[0].uri).is_file()
    assert submitted.ok and all(result.ok for result in mapped)
    assert [result.ok for result in many] == [True] * 4
    assert isinstance(summary, DatasetRunSummary) and summary.succeeded == 1
    assert client_count["opened"] >= 5 and client_count["opened"] == client_count["closed"]


async def test_an_async_flow_awaits_them(seedream_env: RunningSimulator, tmp_path: Path) -> None:
    output = str(tmp_path / "out")

    @flow
    async def content_team() -> tuple[Any, ...]:
        one = await generate_images(GenerationRequest(prompt="a red fox"), output, label="fox", poll_interval=0.05)
        many = await generate_many([GenerationRequest(prompt=p) for p in prompts(3, "cat")], output,
                                   poll_interval=0.05)
        state = await generate_dataset([{"id": "async-row", "prompt": "a lighthouse"}], output=output,
                                       return_state=True, **FAST)
        return one, many, state

    one, many, state = await content_team()
    assert one.ok and [result.ok for result in many] == [True, True, True]
    assert state.is_completed()


async def test_generate_many_batches_and_returns_one_result_per_request_in_order(
    seedream_env: RunningSimulator, tmp_path: Path
) -> None:
    requests: list[Any] = [GenerationRequest(prompt=text) for text in prompts(59)]
    requests.insert(10, {"prompt": "an invalid row", "n": 99})
    output = tmp_path / "out"

    @flow
    async def composed() -> list[GeneratedImages]:
        return await generate_many(requests, str(output), max_concurrency=16, poll_interval=0.05)

    state = await composed(return_state=True)
    results = await state.aresult()
    assert len(results) == 60
    assert [result.ok for result in results].count(True) == 59
    bad = results[10]
    assert bad.status == "failed" and bad.error is not None and bad.error.code == "invalid_row"
    ordered = [line["row_id"] for line in manifest(output)]
    assert [result.row_id for result in results] == ordered  # in the order given
    image = results[0].images[0].open()
    assert image.size == (results[0].images[0].width, results[0].images[0].height)

    runs = await task_runs_by_name(flow_run_id_of(state))
    batches = [name for name in runs if name.startswith("rows-")]
    assert len(batches) == 30 and len([name for name in runs if name.startswith("many-")]) == 1
    assert seedream_env.stats()["tasks_created"] == 59

    rerun = await generate_many(requests, str(output), poll_interval=0.05)  # nothing paid again
    assert [r.reused for r in rerun].count(True) == 59 and seedream_env.stats()["tasks_created"] == 59


async def test_results_are_objects_read_lazily_from_any_storage(
    seedream_env: RunningSimulator, s3_endpoint: str, tmp_path: Path
) -> None:
    import s3fs

    options = {"client_kwargs": {"endpoint_url": s3_endpoint}, "key": "testing", "secret": "testing"}
    s3fs.S3FileSystem(**options).makedirs("renders", exist_ok=True)
    state = await generate_dataset(
        [{"id": f"r{i}", "prompt": text} for i, text in enumerate(prompts(3))],
        output="s3://renders/run", storage_options=options, return_state=True, **FAST,
    )
    summary = await state.aresult()
    lines = summary.lines(options)
    assert not isinstance(lines, list)  # read lazily, line by line
    first = next(lines)
    assert isinstance(first, ManifestLine) and first.row_id == "r0"
    picture = first.images[0].open(options)
    assert picture.size == (first.images[0].width, first.images[0].height)
    assert first.images[0].read_bytes(options)[:4] == b"\x89PNG"
    assert [line.row_id for line in summary.lines(options, status="succeeded")] == ["r0", "r1", "r2"]
    assert [line.status for line in read_manifest("s3://renders/run", options)] == ["succeeded"] * 3


# -- local reference images ----------------------------------------------------------------------


@pytest.fixture
def fetching_sim(monkeypatch: pytest.MonkeyPatch) -> Iterator[RunningSimulator]:
    """A simulator that downloads reference images, as the real API does."""
    config = SimulatorConfig(latency_seconds=0.3, jitter_seconds=0.0, fetch_reference_images=True)
    with running_simulator(config) as sim:
        monkeypatch.setenv("SEEDREAM_API_KEY", TEST_API_KEY)
        monkeypatch.setenv("SEEDREAM_BASE_URL", sim.base_url)
        yield sim


def _solid_png(path: Path, colour: tuple[int, int, int]) -> Path:
    Image.new("RGB", (64, 64), colour).save(path, format="PNG")
    return path


async def test_a_local_reference_image_is_uploaded_once_and_fetched_by_the_api(
    fetching_sim: RunningSimulator, s3_endpoint: str, tmp_path: Path
) -> None:
    import s3fs

    options = {"client_kwargs": {"endpoint_url": s3_endpoint}, "key": "testing", "secret": "testing"}
    fs = s3fs.S3FileSystem(**options)
    fs.makedirs("refs", exist_ok=True)
    red = _solid_png(tmp_path / "red.png", (230, 10, 10))
    rows = [
        {"id": "edit-1", "prompt": "the same scene, at night", "image_urls": [str(red)]},
        {"id": "edit-2", "prompt": "the same scene, in snow", "image_urls": [str(red)]},
    ]
    output = tmp_path / "out"
    state = await generate_dataset(
        rows, output=str(output), reference_store="s3://refs/seedream",
        reference_storage_options=options, return_state=True, **FAST,
    )
    assert state.is_completed(), state.message
    assert len(fs.ls("refs/seedream")) == 1  # uploaded once, named by its content
    assert fetching_sim.stats()["reference_fetches"] == 2
    for line in manifest(output):
        assert line["parameters"]["image_urls"] == [str(red)]  # the manifest names the user's file
        with Image.open(line["images"][0]["uri"]) as image:
            left = image.convert("RGB").getpixel((image.width // 4, image.height // 2))
        assert left[0] > 200 and left[1] < 40 and left[2] < 40, left  # the reference came through

    # Without a reference store, such a row is refused before anything is spent.
    refused = await generate_dataset(rows[:1], output=str(tmp_path / "out-2"), return_state=True, **FAST)
    line = manifest(tmp_path / "out-2")[0]
    assert refused.is_failed() and line["error"]["code"] == "invalid_row"
    assert "reference_store" in line["error"]["message"]
    assert fetching_sim.stats()["tasks_created"] == 2


# -- the block, found by its slug -------------------------------------------------------------


async def test_the_credentials_block_is_found_by_its_slug_in_a_fresh_process(tmp_path: Path) -> None:
    from prefect.settings import PREFECT_API_URL

    from prefect_seedream import SeedreamCredentials

    await SeedreamCredentials(api_key="sk-block-test", base_url="http://127.0.0.1:9").save(
        "slug-test", overwrite=True
    )
    code = (
        "from prefect.blocks.core import Block\n"
        "block = Block.load('seedream-credentials/slug-test')\n"
        "print(type(block).__module__, type(block).__name__, block.base_url)\n"
    )
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()}
    done = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True,
        text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["prefect_seedream.credentials", "SeedreamCredentials", "http://127.0.0.1:9"]
