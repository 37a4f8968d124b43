"""Storing to an S3 URL, against moto's S3-compatible server on loopback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from prefect_seedream.simulator import RunningSimulator
from tests.helpers import run_dataset, write_csv

pytestmark = pytest.mark.usefixtures("prefect_api")


async def test_dataset_run_stores_images_and_manifest_in_s3(
    seedream_env: RunningSimulator, s3_endpoint: str, tmp_path: Path
) -> None:
    import s3fs
    from PIL import Image

    options = {"client_kwargs": {"endpoint_url": s3_endpoint}, "key": "testing", "secret": "testing"}
    fs = s3fs.S3FileSystem(**options)
    fs.mkdir("renders")
    rows = [{"id": "s3-fox", "prompt": "A fox in S3"}, {"id": "s3-sea", "prompt": "The sea", "n": 2}]

    state = await run_dataset(
        write_csv(tmp_path / "d.csv", rows), "s3://renders/run-1", storage_options=options
    )

    assert state.is_completed(), state.message
    fs.invalidate_cache()
    lines = [json.loads(line) for line in fs.cat_file("renders/run-1/manifest.jsonl").decode().splitlines()]
    uris = [image["uri"] for line in lines for image in line["images"]]
    assert uris == [
        "s3://renders/run-1/s3-fox-1.png",
        "s3://renders/run-1/s3-sea-1.png",
        "s3://renders/run-1/s3-sea-2.png",
    ]
    with fs.open(uris[0], "rb") as handle, Image.open(handle) as image:
        assert image.size == (lines[0]["images"][0]["width"], lines[0]["images"][0]["height"])
    assert fs.ls("renders/run-1/.seedream/tasks")  # the ledger lives beside the images

    rerun = await run_dataset(
        write_csv(tmp_path / "d.csv", rows), "s3://renders/run-1", storage_options=options
    )
    assert rerun.is_completed()
    assert seedream_env.stats()["tasks_created"] == 2
