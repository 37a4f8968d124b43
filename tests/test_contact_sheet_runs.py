"""Every entry point writes the contact sheet (`index.html`) beside its manifest, against
the simulator under a real Prefect API: the dataset flow, `generate_many`, a sharded run's
merged manifest, on a local disk and on S3 (moto).

The simulator here serves 512-pixel images (its default, 256, is no larger than a thumbnail,
and such images are their own thumbnail): every image gets a thumbnail file."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image
from prefect import flow

from prefect_seedream import GenerationRequest, generate_many
from prefect_seedream.engine.contact_sheet import INDEX_NAME, PAGES_DIR
from prefect_seedream.engine.thumbnails import THUMBNAIL_SIDE, thumbnail_name
from prefect_seedream.simulator import RunningSimulator, SimulatorConfig, running_simulator
from tests.conftest import TEST_API_KEY
from tests.helpers import manifest, run_dataset, summary_of, write_csv, write_jsonl

pytestmark = pytest.mark.usefixtures("prefect_api")

ROWS = [
    {"id": "fox", "prompt": "A red fox in fresh snow"},
    {"id": "policy", "prompt": "Forbidden <script>window.pwned=1</script> [[sim:task_error=content_policy_violation]]"},
    {"id": "lighthouse", "prompt": "Two images of a lighthouse at dawn", "n": 2},
    {"id": "bad-n", "prompt": "Too many", "n": "16"},
]


@pytest.fixture
def seedream_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[RunningSimulator]:
    """The simulator (as tests/conftest.py's), serving images larger than a thumbnail."""
    config = SimulatorConfig(latency_seconds=0.3, jitter_seconds=0.05, image_max_side=512)
    with running_simulator(config) as sim:
        monkeypatch.setenv("SEEDREAM_API_KEY", TEST_API_KEY)
        monkeypatch.setenv("SEEDREAM_BASE_URL", sim.base_url)
        yield sim


def sheet_rows(read_text: Any) -> list[dict[str, Any]]:
    """Every row of a contact sheet, in its order (``read_text``: a file's text by name)."""
    index = read_text(INDEX_NAME)
    meta = json.loads(re.search(r'id="sheet-meta">(.*?)</script>', index, re.DOTALL).group(1))  # type: ignore[union-attr]
    rows: list[dict[str, Any]] = []
    for number in range(1, meta["pages"] + 1):
        text = read_text(f"{PAGES_DIR}/page-{number}.js")
        rows += json.loads(re.fullmatch(r"seedreamSheetPage\(\d+, (.*)\);\n", text, re.DOTALL).group(1))  # type: ignore[union-attr]
    assert len(rows) == meta["rows"]
    return rows


def local_rows(output: Path) -> list[dict[str, Any]]:
    return sheet_rows(lambda name: (output / name).read_text(encoding="utf-8"))


def assert_sheet_names_every_row(output: Path) -> list[dict[str, Any]]:
    """The sheet lists the manifest's rows (failures first), each image with its thumbnail."""
    rows = local_rows(output)
    lines = manifest(output)
    failed_first = [line for line in lines if line["status"] != "succeeded"] + [
        line for line in lines if line["status"] == "succeeded"
    ]
    assert [row["id"] for row in rows] == [line["row_id"] for line in failed_first]
    for row, line in zip(rows, failed_first):
        assert row["status"] == line["status"] and row["prompt"] == line["prompt"]
        assert len(row["images"]) == len(line["images"])
        for image, stored in zip(row["images"], line["images"]):
            assert (output / image["href"]).resolve() == Path(stored["uri"])
            with Image.open(output / image["thumb"]) as small:
                assert small.format == "JPEG" and max(small.size) <= THUMBNAIL_SIDE
    return rows


async def test_the_dataset_flow_writes_a_contact_sheet_and_thumbnails_once(
    seedream_env: RunningSimulator, tmp_path: Path
) -> None:
    dataset = write_csv(tmp_path / "d.csv", ROWS)
    output = tmp_path / "out"

    state = await run_dataset(dataset, output)

    summary = await summary_of(state)
    assert summary.contact_sheet == str(output.resolve() / INDEX_NAME)
    rows = assert_sheet_names_every_row(output)
    assert [row["id"] for row in rows] == ["policy", "bad-n", "fox", "lighthouse"]
    assert rows[0]["error"]["code"] == "content_policy_violation" and rows[1]["error"]["code"] == "invalid_row"
    assert "<script>window.pwned" in rows[0]["prompt"]  # kept as text, shown with textContent
    assert "window.pwned" not in (output / INDEX_NAME).read_text()
    thumbs = sorted((output / "thumbs").iterdir())
    assert [path.name for path in thumbs] == ["fox-1.png.jpg", "lighthouse-1.png.jpg", "lighthouse-2.png.jpg"]
    made_at = {path.name: path.stat().st_mtime_ns for path in thumbs}

    rerun = await run_dataset(dataset, output)  # stored rows are reused: no thumbnail is redone

    assert (await summary_of(rerun)).reused == 2
    assert {path.name: path.stat().st_mtime_ns for path in (output / "thumbs").iterdir()} == made_at
    assert_sheet_names_every_row(output)


async def test_generate_many_and_a_sharded_run_write_the_sheet(
    seedream_env: RunningSimulator, tmp_path: Path
) -> None:
    requests: list[Any] = [GenerationRequest(prompt=f"A cat, take {i}") for i in range(6)]
    requests.insert(2, {"id": "refused", "prompt": "no [[sim:task_error=content_policy_violation]]"})
    output = tmp_path / "many"

    @flow
    async def composed() -> list[Any]:
        return await generate_many(requests, str(output), poll_interval=0.05, retry_delay_seconds=0.05)

    results = await composed()
    assert [result.ok for result in results].count(True) == 6
    rows = assert_sheet_names_every_row(output)
    assert rows[0]["id"] == "refused" and rows[0]["error"]["code"] == "content_policy_violation"
    assert len(list((output / "thumbs").iterdir())) == 6

    await _sharded_run(seedream_env, tmp_path)


async def _sharded_run(sim: RunningSimulator, tmp_path: Path) -> None:
    """Two shards of one parent run, then the parent's merge: the merged manifest's sheet."""
    from prefect_seedream.api.client import api_identity
    from prefect_seedream.engine.options import RunOptions
    from prefect_seedream.engine.output import Output
    from prefect_seedream.engine.output_lock import OutputLock
    from prefect_seedream.engine.run_folder import RunDescription, RunParts
    from prefect_seedream.engine.storage import ImageStore
    from prefect_seedream.engine.summary import DatasetRunSummary
    from prefect_seedream.flows import generate_shard
    from prefect_seedream.runs import merge_manifest

    rows = [{"id": f"s{i}", "prompt": f"A shard picture {i}"} for i in range(1, 7)]
    rows[4]["prompt"] += " [[sim:task_error=content_policy_violation]]"
    dataset = write_jsonl(tmp_path / "shards.jsonl", rows)
    output = tmp_path / "sharded"
    store, parent = ImageStore(str(output)), "parent-run"
    options = RunOptions(poll_interval=0.05, max_wait_seconds=30, retry_delay_seconds=0.05)
    summary = DatasetRunSummary()
    async with OutputLock(store, parent):
        for first, last in ((1, 3), (4, 6)):
            await generate_shard(str(dataset), str(output), first, last, parent, 6, options, return_state=True)
        assert not (output / INDEX_NAME).exists()  # shards leave the sheet to the parent
        run = RunDescription(dataset=str(dataset), api=api_identity(sim.base_url), options=options, total_rows=6)
        await asyncio.to_thread(
            merge_manifest, Output.open(str(output)), RunParts(store, parent), run, summary, None,
        )
    assert summary.contact_sheet == str(output.resolve() / INDEX_NAME)
    sheet = assert_sheet_names_every_row(output)
    assert [row["id"] for row in sheet] == ["s5", "s1", "s2", "s3", "s4", "s6"]


async def test_recover_writes_the_sheet_again(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A lost answer leaves a row outcome_unknown (first on the sheet); `recover` collects its
    task, and the sheet shows it succeeded, with its thumbnail."""
    from prefect_seedream import recover_dataset

    config = SimulatorConfig(
        latency_seconds=0.3, jitter_seconds=0.05, image_max_side=512, task_list_echoes_prompt=False,
    )
    rows = [{"id": "calm", "prompt": "A calm sea"}, {"id": "dropped", "prompt": "a kite [[sim:drop_after_create]]"}]
    output = tmp_path / "out"
    with running_simulator(config) as sim:
        monkeypatch.setenv("SEEDREAM_API_KEY", TEST_API_KEY)
        monkeypatch.setenv("SEEDREAM_BASE_URL", sim.base_url)
        await run_dataset(write_jsonl(tmp_path / "rows.jsonl", rows), output)
        assert [(row["id"], row["status"]) for row in local_rows(output)] == [
            ("dropped", "outcome_unknown"), ("calm", "succeeded"),
        ]
        sim.app_state.config.task_list_echoes_prompt = True
        state = await recover_dataset(str(output), return_state=True)

    assert state.is_completed(), state.message
    sheet = assert_sheet_names_every_row(output)
    assert [(row["id"], row["status"]) for row in sheet] == [("calm", "succeeded"), ("dropped", "succeeded")]
    assert (output / thumbnail_name("dropped-1.png")).is_file()


async def test_a_run_into_s3_writes_a_sheet_a_browser_can_be_served(
    seedream_env: RunningSimulator, s3_endpoint: str, tmp_path: Path
) -> None:
    import s3fs

    options = {"client_kwargs": {"endpoint_url": s3_endpoint}, "key": "testing", "secret": "testing"}
    fs = s3fs.S3FileSystem(**options)
    fs.mkdir("renders")

    state = await run_dataset(write_csv(tmp_path / "d.csv", ROWS), "s3://renders/run", storage_options=options)

    summary = await summary_of(state)
    assert summary.contact_sheet == "s3://renders/run/index.html"
    fs.invalidate_cache()
    rows = sheet_rows(lambda name: fs.cat_file(f"renders/run/{name}").decode("utf-8"))
    assert [row["id"] for row in rows] == ["policy", "bad-n", "fox", "lighthouse"]
    hrefs = [(image["href"], image["thumb"]) for row in rows for image in row["images"]]
    assert hrefs == [
        ("fox-1.png", thumbnail_name("fox-1.png")),
        ("lighthouse-1.png", thumbnail_name("lighthouse-1.png")),
        ("lighthouse-2.png", thumbnail_name("lighthouse-2.png")),
    ]
    # Served from the bucket over HTTP (public reads, as a bucket serving pages has), each
    # file says what it is, so a browser shows it.
    allow_public_reads(s3_endpoint, "renders")
    async with httpx.AsyncClient(base_url=f"{s3_endpoint}/renders/run/") as http:
        for name, content_type in (
            (INDEX_NAME, "text/html"), (f"{PAGES_DIR}/page-1.js", "javascript"),
            (hrefs[0][0], "image/png"), (hrefs[0][1], "image/jpeg"),
        ):
            response = await http.get(name)
            assert response.status_code == 200 and content_type in response.headers["content-type"], name


def allow_public_reads(endpoint: str, bucket: str) -> None:
    """Let anyone read the bucket's objects over HTTP (a bucket policy, as for a static site)."""
    import boto3

    policy = {"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": "*", "Action": "s3:GetObject", "Resource": f"arn:aws:s3:::{bucket}/*",
    }]}
    boto3.client("s3", endpoint_url=endpoint).put_bucket_policy(Bucket=bucket, Policy=json.dumps(policy))
