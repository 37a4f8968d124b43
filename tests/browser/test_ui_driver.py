"""End-to-end proof of the Prefect UI driver (prefect_ui.py) against a toy deployment.

A real ``prefect server start`` and a ``toy_flow.serve()`` process run for the module; each
test drives Debian's headless chromium through one UI (v1 = the Vue UI at ``/``, v2 = the
React UI at ``/v2``): custom run form -> submit -> wait for Completed -> artifacts, images.

Run: ``.venv/bin/pytest tests/browser -q -p no:cacheprovider -m slow``.
Screenshots: ``$SEEDREAM_TEST_ARTIFACTS`` or ``test-artifacts/browser/``.
"""

import json
import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page

from tests.browser.prefect_ui import (
    CHROMIUM_PATH,
    UI,
    PrefectServer,
    RunFormRejected,
    ServedDeployment,
    fill_parameter,
    fill_run_form,
    open_artifacts_and_check_images,
    open_custom_run,
    parameter_block,
    serve_deployment,
    start_prefect_server,
    submit_run_form,
    wait_for_flow_run_state,
    wait_for_quiet_network,
)
from tests.browser.toy_flow import GALLERY_KEY, IMAGE_KEY, TABLE_KEY

pytestmark = [
    pytest.mark.slow,
    pytest.mark.browser,
    pytest.mark.timeout(600),
    pytest.mark.skipif(
        not Path(CHROMIUM_PATH).exists(),
        reason=f"{CHROMIUM_PATH} missing: run .ci/install-browser.sh (apt-get install chromium)",
    ),
]

TOY_FLOW = Path(__file__).with_name("toy_flow.py")
DEPLOYMENT = "toy-flow/toy"
OPTIONS_DEPLOYMENT = "toy-options-flow/toy"
VALUES = {"dataset": "x.csv", "model": "doubao-seedream-4.0", "size": "1K", "n": "2"}
EXPECTED_PARAMETERS = {"dataset": "x.csv", "model": "doubao-seedream-4.0", "size": "1K", "n": 2}
THUMB_SIDE_1K = 32  # toy_flow.fake_generate: 1K -> 32x32 px


class Timer:
    """Wall-clock laps, written to ``timings-*.json`` next to the screenshots."""

    def __init__(self) -> None:
        self.t0 = self.last = time.monotonic()
        self.laps: dict[str, float] = {}

    def lap(self, name: str) -> None:
        now = time.monotonic()
        self.laps[name] = round(now - self.last, 2)
        self.last = now

    def dump(self, path: Path) -> None:
        self.laps["total"] = round(time.monotonic() - self.t0, 2)
        path.write_text(json.dumps(self.laps, indent=2) + "\n")


@pytest.fixture(scope="module")
def toy(
    tmp_path_factory: pytest.TempPathFactory, browser_artifacts_dir: Path
) -> Iterator[tuple[PrefectServer, ServedDeployment]]:
    """A Prefect server plus the toy flows served as ``toy-flow/toy`` and
    ``toy-options-flow/toy``."""
    tmp = tmp_path_factory.mktemp("prefect-ui")
    timer = Timer()
    with start_prefect_server(tmp) as server:
        timer.lap("server_start")
        argv = [sys.executable, str(TOY_FLOW), "--name", "toy"]
        with serve_deployment(server, argv, [DEPLOYMENT, OPTIONS_DEPLOYMENT], tmp) as dep:
            timer.lap("serve_start")
            timer.dump(browser_artifacts_dir / "timings-setup.json")
            yield server, dep


def _run_count(server: PrefectServer, dep: ServedDeployment) -> int:
    return int(server.api("POST", "/flow_runs/count", {"deployments": {"id": {"any_": [dep.id]}}}))


@pytest.mark.parametrize("ui", ["v1", "v2"])
def test_custom_run_completes_and_renders_images(
    toy: tuple[PrefectServer, ServedDeployment], page: Page, ui: UI, browser_artifacts_dir: Path
) -> None:
    server, dep = toy
    shots = browser_artifacts_dir
    timer = Timer()

    assert open_custom_run(page, server.ui_url, DEPLOYMENT, ui=ui) == dep.id
    timer.lap("open_custom_run")
    # Descriptions render under the labels (from the docstring's Args, or Field(description)).
    assert "Path or URL of the prompts dataset" in parameter_block(page, "dataset").inner_text()
    assert "Images per prompt" in parameter_block(page, "n").inner_text()

    fill_run_form(page, VALUES, submit=False)
    page.screenshot(path=str(shots / f"form-{ui}.png"), full_page=True)
    run_id = submit_run_form(page)
    timer.lap("fill_and_submit")
    assert server.api("GET", f"/flow_runs/{run_id}")["parameters"] == EXPECTED_PARAMETERS

    # v1: go to the run by id; v2: through the toast's "View run" button, as a user would.
    states = wait_for_flow_run_state(
        page, server.ui_url, run_id if ui == "v1" else None, "Completed", timeout=180
    )
    assert run_id in page.url
    timer.lap("wait_completed")
    # Logs and task runs arrive after the state: reload once so the screenshot shows them.
    page.reload()
    wait_for_quiet_network(page)
    page.screenshot(path=str(shots / f"run-{ui}.png"), full_page=True)
    assert states[-1] == "Completed"

    views = open_artifacts_and_check_images(page, server.ui_url, run_id, screenshot_dir=shots)
    timer.lap("artifacts")
    by_key = {v.key: v for v in views}
    assert set(by_key) == {GALLERY_KEY, IMAGE_KEY, TABLE_KEY}, views

    gallery = by_key[GALLERY_KEY]
    # n markdown images + the raw-HTML <img>: both UIs keep raw <img> tags in markdown.
    assert len(gallery.images) == 2 + 1, gallery.images
    image = by_key[IMAGE_KEY]
    assert len(image.images) == 1, image.images
    for img in gallery.images + image.images:
        assert img.src.startswith("data:image/png;base64,"), img
        assert img.complete and img.natural_width == THUMB_SIDE_1K, img
    assert by_key[TABLE_KEY].images == []
    assert "doubao-seedream-4.0" in by_key[TABLE_KEY].text and "1K" in by_key[TABLE_KEY].text
    assert gallery.screenshot is not None and gallery.screenshot.exists()
    gallery.screenshot.replace(shots / f"gallery-{ui}.png")
    timer.dump(shots / f"timings-{ui}.json")


@pytest.mark.parametrize("n", [0, 99])
@pytest.mark.parametrize("ui", ["v1", "v2"])
def test_out_of_range_n_is_refused(
    toy: tuple[PrefectServer, ServedDeployment],
    page: Page,
    ui: UI,
    n: int,
    browser_artifacts_dir: Path,
) -> None:
    server, dep = toy
    before = _run_count(server, dep)
    open_custom_run(page, server.ui_url, DEPLOYMENT, ui=ui)

    with pytest.raises(RunFormRejected) as excinfo:
        fill_run_form(page, {"n": str(n)})
    page.screenshot(path=str(browser_artifacts_dir / f"invalid-n{n}-{ui}.png"), full_page=True)

    rejected = excinfo.value
    bound = "greater than or equal to 1" if n < 1 else "less than or equal to 15"
    if ui == "v2":
        # Browser constraint validation (min/max on the input): nothing is sent.
        assert rejected.reason == "browser", rejected
        assert any(bound in m for m in rejected.messages), rejected.messages
    else:
        # v1 sends it; the server refuses (409) and the UI shows the reason in a toast.
        assert (rejected.reason, rejected.status) == ("server", 409), rejected
        reason = "less than the minimum of 1" if n < 1 else "greater than the maximum of 15"
        assert any(re.search(rf"\b{n} is {reason}", m) for m in rejected.messages), rejected
    assert re.search(r"/deployments/deployment/[0-9a-f-]+/run", page.url), page.url
    assert _run_count(server, dep) == before


@pytest.mark.parametrize("ui", ["v1", "v2"])
def test_model_enum_bool_float_parameters(
    toy: tuple[PrefectServer, ServedDeployment], page: Page, ui: UI, browser_artifacts_dir: Path
) -> None:
    """A pydantic-model parameter's fields, an Enum, a bool and a float, through the form."""
    server, _ = toy
    open_custom_run(page, server.ui_url, OPTIONS_DEPLOYMENT, ui=ui)
    values = {
        "dataset": "d.csv",  # required: labelled "dataset", without "(Optional)"
        "options/Prompt Prefix": "pre",  # nested fields are labelled by their titles
        "options/Watermark": "true",
        "options/Quality": "hd",
        "quality": "standard",
        "dry_run": "true",
        "ratio": "2.5",
    }
    kinds = {path: fill_parameter(page, path, value) for path, value in values.items()}
    assert kinds == {
        "dataset": "text",
        "options/Prompt Prefix": "text",
        "options/Watermark": "switch",
        "options/Quality": "select",
        "quality": "select",
        "dry_run": "switch",
        "ratio": "number",
    }
    page.screenshot(path=str(browser_artifacts_dir / f"form-options-{ui}.png"), full_page=True)
    run_id = submit_run_form(page)
    assert server.api("GET", f"/flow_runs/{run_id}")["parameters"] == {
        "dataset": "d.csv",
        "options": {"prompt_prefix": "pre", "watermark": True, "quality": "hd"},
        "quality": "standard",
        "dry_run": True,
        "ratio": 2.5,
    }
    # The deployed run validates the nested model too (see the note in toy_flow.py).
    wait_for_flow_run_state(page, server.ui_url, run_id, "Completed", timeout=180)
