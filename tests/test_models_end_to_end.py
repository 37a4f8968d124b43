"""A dataset mixing every model Evolink serves today, in today's documented forms, run end to
end on the simulator (which refuses a field a model does not take, or takes it in the wrong
place): every row succeeds, each file is what its name says, layerize stores base and layers,
and a model the table does not know is sent as is."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from prefect_seedream.simulator import SimulatorConfig, running_simulator
from tests.conftest import TEST_API_KEY
from tests.helpers import manifest, run_dataset, summary_of, write_jsonl

pytestmark = pytest.mark.usefixtures("prefect_api")

REF = "https://cdn.example.com/reference.png"
NEW_MODEL = "doubao-seedream-5.1-preview"
ROWS: list[dict[str, Any]] = [
    {"id": "v45", "model": "doubao-seedream-4.5", "size": "16:9", "quality": "2K"},
    {"id": "v45-auto", "model": "doubao-seedream-4.5", "size": "auto"},
    {"id": "v40", "model": "doubao-seedream-4.0", "size": "21:9", "quality": "1K",
     "image_urls": [f"https://cdn.example.com/ref-{i}.png" for i in range(8)]},
    {"id": "lite", "model": "doubao-seedream-5.0-lite", "size": "3:4", "quality": "3K", "web_search": True},
    {"id": "lite-png", "model": "doubao-seedream-5.0-lite", "output_format": "png"},
    {"id": "pro", "model": "doubao-seedream-5.0-pro", "size": "1:1", "quality": "1.5K", "watermark": False},
    {"id": "pro-clear", "model": "doubao-seedream-5.0-pro", "background": "transparent",
     "output_format": "png", "image_urls": [REF]},
    {"id": "flash", "model": "doubao-seedream-5.0-flash", "size": "9:16", "quality": "1K"},
    {"id": "layers", "model": "doubao-seedream-5.0-pro-layerize", "image_urls": [REF]},
    {"id": "flash-layers", "model": "doubao-seedream-5.0-flash-layerize", "image_urls": [REF],
     "output_format": "png"},
    {"id": "new", "model": NEW_MODEL, "size": "4:3"},
]
#: What each row's files must be (the base image first for layerize).
FORMATS = {
    "v45": "png", "v45-auto": "png", "v40": "png", "lite": "jpeg", "lite-png": "png", "pro": "jpeg",
    "pro-clear": "png", "flash": "jpeg", "layers": "jpeg", "flash-layers": "png", "new": "jpeg",
}
MAGIC = {"png": b"\x89PNG", "jpeg": b"\xff\xd8\xff"}
SUFFIX = {"png": ".png", "jpeg": ".jpg"}


async def test_a_dataset_mixing_every_model_runs_end_to_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    rows = [{"prompt": f"a small still life, take {i}", **row} for i, row in enumerate(ROWS)]
    del rows[8]["prompt"]  # layerize: the prompt is optional
    dataset = write_jsonl(tmp_path / "rows.jsonl", rows)
    config = SimulatorConfig(
        latency_seconds=0.2, jitter_seconds=0.0, extra_models={NEW_MODEL: "doubao-seedream-5.0-pro"}
    )
    with running_simulator(config) as sim, caplog.at_level(logging.WARNING):
        monkeypatch.setenv("SEEDREAM_API_KEY", TEST_API_KEY)
        monkeypatch.setenv("SEEDREAM_BASE_URL", sim.base_url)
        state = await run_dataset(dataset, tmp_path / "out", max_concurrency=4)
        stats = sim.stats()
    summary = await summary_of(state)
    lines = {line["row_id"]: line for line in manifest(tmp_path / "out")}

    assert state.is_completed(), state.message
    assert summary.succeeded == len(ROWS) == stats["tasks_created"]
    assert summary.credits == pytest.approx(stats["credits_charged"])
    for row_id, expected in FORMATS.items():
        images = lines[row_id]["images"]
        assert images, row_id
        first = Path(images[0]["uri"].removeprefix("file://"))
        assert first.suffix == SUFFIX[expected], (row_id, first)
        assert first.read_bytes().startswith(MAGIC[expected]), (row_id, first)
        for image in images:
            path = Path(image["uri"].removeprefix("file://"))
            kind = "png" if path.read_bytes().startswith(MAGIC["png"]) else "jpeg"
            assert path.suffix == SUFFIX[kind], (row_id, path)  # every file is what its name says
    for row_id in ("layers", "flash-layers"):
        images = lines[row_id]["images"]
        assert len(images) >= 3, images  # the base image and its layers, every one listed
        for layer in images[1:]:
            assert Path(layer["uri"].removeprefix("file://")).read_bytes().startswith(MAGIC["png"])
    assert lines["layers"]["parameters"].get("size") is None  # the run's size does not reach it
    warned = [r for r in caplog.records if NEW_MODEL in r.getMessage() and "not checked locally" in r.getMessage()]
    assert warned, "a model the table does not know gets one warning"
