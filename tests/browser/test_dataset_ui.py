"""A person's path through the Prefect UI, in headless Chromium, on the real dataset flow.

A real ``prefect server start`` (SQLite) and the simulator run for the module; the project's
own ``deployments/serve.py`` serves the deployments. Each test opens "Custom run" on
``seedream-generate-dataset/generate-dataset``, fills the form, submits, waits for Completed,
and checks the artifacts: the summary table is there and the gallery's images really loaded in
the browser (``naturalWidth > 0``). Screenshots of the form, the finished run and the gallery
are saved in ``$SEEDREAM_TEST_ARTIFACTS`` (default ``test-artifacts/browser/``).
"""

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page

from prefect_seedream.simulator import SimulatorConfig, running_simulator
from tests.browser.prefect_ui import (
    CHROMIUM_PATH,
    UI,
    PrefectServer,
    RunFormRejected,
    ServedDeployment,
    fill_run_form,
    open_artifacts_and_check_images,
    open_custom_run,
    parameter_block,
    serve_deployment,
    start_prefect_server,
    state_badge,
    submit_run_form,
    wait_for_flow_run_state,
    wait_for_quiet_network,
)

REPO = Path(__file__).resolve().parents[2]
DEPLOYMENT = "seedream-generate-dataset/generate-dataset"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.browser,
    pytest.mark.timeout(900),
    pytest.mark.skipif(
        not Path(CHROMIUM_PATH).exists() and not os.environ.get("CI"),
        reason=f"{CHROMIUM_PATH} missing: run .ci/install-browser.sh (in CI this fails instead)",
    ),
]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[PrefectServer, ServedDeployment, Path]]:
    """The server, the project's served deployments (against the simulator) and a work folder."""
    work = tmp_path_factory.mktemp("ui-e2e")
    (work / "prompts.csv").write_text(
        "id,prompt\nfox,A red fox in snow\nsea,A calm sea at dusk\n", encoding="utf-8"
    )
    config = SimulatorConfig(latency_seconds=1.0, jitter_seconds=0.2)
    with running_simulator(config) as simulator, start_prefect_server(work) as server:
        env = {"SEEDREAM_API_KEY": "sk-ui-test", "SEEDREAM_BASE_URL": simulator.base_url}
        argv = [sys.executable, str(REPO / "deployments" / "serve.py")]
        with serve_deployment(server, argv, DEPLOYMENT, work, extra_env=env, cwd=work) as deployment:
            yield server, deployment, work


@pytest.mark.parametrize("ui", ["v2", "v1"])
def test_custom_run_from_the_ui_shows_table_and_gallery(
    served: tuple[PrefectServer, ServedDeployment, Path], page: Page, ui: UI,
    browser_artifacts_dir: Path,
) -> None:
    server, deployment, work = served
    output = work / f"out-{ui}"

    assert open_custom_run(page, server.ui_url, DEPLOYMENT, ui=ui) == deployment.id
    assert "Default model for rows" in parameter_block(page, "model").inner_text()
    fill_run_form(
        page,
        {"dataset": "prompts.csv", "output": str(output), "model": "doubao-seedream-4.0", "size": "1K"},
        submit=False,
    )
    page.screenshot(path=str(browser_artifacts_dir / f"seedream-form-{ui}.png"), full_page=True)
    run_id = submit_run_form(page)

    states = wait_for_flow_run_state(page, server.ui_url, run_id, "Completed", timeout=300)
    assert states[-1] == "Completed"
    page.reload()
    state_badge(page, ui).wait_for(state="visible")
    wait_for_quiet_network(page)
    page.screenshot(path=str(browser_artifacts_dir / f"seedream-run-{ui}.png"), full_page=True)

    views = {view.key: view for view in open_artifacts_and_check_images(
        page, server.ui_url, run_id, screenshot_dir=browser_artifacts_dir
    )}
    # (Changed with the redesign of rows: the per-row table is `seedream-rows`, the summary
    # holds the counts.)
    assert {"seedream-summary", "seedream-rows", "seedream-gallery"} <= set(views), views
    assert "rows succeeded" in views["seedream-summary"].text
    table = views["seedream-rows"]
    assert "fox" in table.text and "succeeded" in table.text and "task-unified-" in table.text
    gallery = views["seedream-gallery"]
    assert len(gallery.images) == 2, gallery.images
    for image in gallery.images:
        assert image.src.startswith("data:image/jpeg;base64,"), image
        assert image.complete and image.natural_width > 0, image
    assert gallery.screenshot is not None
    gallery.screenshot.replace(browser_artifacts_dir / f"seedream-gallery-{ui}.png")

    lines = [json.loads(line) for line in (output / "manifest.jsonl").read_text().splitlines()]
    assert [(line["row_id"], line["status"], line["model"]) for line in lines] == [
        ("fox", "succeeded", "doubao-seedream-4.0"), ("sea", "succeeded", "doubao-seedream-4.0"),
    ]
    assert all(line["parameters"]["size"] == "1K" for line in lines)


def test_out_of_range_n_is_refused_by_the_form(
    served: tuple[PrefectServer, ServedDeployment, Path], page: Page, browser_artifacts_dir: Path
) -> None:
    server, deployment, _ = served
    count = {"deployments": {"id": {"any_": [deployment.id]}}}
    before = server.api("POST", "/flow_runs/count", count)
    open_custom_run(page, server.ui_url, DEPLOYMENT, ui="v2")

    with pytest.raises(RunFormRejected) as rejected:
        fill_run_form(page, {"n": "16"})

    page.screenshot(path=str(browser_artifacts_dir / "seedream-invalid-n.png"), full_page=True)
    assert any("less than or equal to 15" in message for message in rejected.value.messages)
    assert server.api("POST", "/flow_runs/count", count) == before
