"""The library path seen in the Prefect UI (issue 23): a user's own flow calls
``generate_many`` on 40 requests, 4 of which the API refuses (content policy).

A real ``prefect server start`` (SQLite) and the simulator run for the module; the user's flow
runs in a subprocess against the server, as a data team's script would. Headless Chromium then
opens the run's page: its Artifacts tab holds the call's four artifacts and nothing per batch,
the rows table lists the refused rows first with the API's code, the gallery's thumbnails load,
and the Logs tab shows the refused rows as warnings with no traceback. Screenshots go to
``$SEEDREAM_TEST_ARTIFACTS`` (default ``test-artifacts/browser/``).
"""

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page

from prefect_seedream.simulator import RunningSimulator, SimulatorConfig, running_simulator
from tests.browser.prefect_ui import (
    CHROMIUM_PATH,
    UI,
    PrefectServer,
    open_artifacts_and_check_images,
    run_page_url,
    start_prefect_server,
    wait_for_quiet_network,
)

REPO = Path(__file__).resolve().parents[2]
REFUSED = "[[sim:task_error=content_policy_violation]]"
STORY_KEYS = {f"seedream-posters-{part}" for part in ("progress", "summary", "rows", "gallery")}

pytestmark = [
    pytest.mark.slow,
    pytest.mark.browser,
    pytest.mark.timeout(900),
    pytest.mark.skipif(
        not Path(CHROMIUM_PATH).exists() and not os.environ.get("CI"),
        reason=f"{CHROMIUM_PATH} missing: run .ci/install-browser.sh (in CI this fails instead)",
    ),
]

#: The user's flow, as a data team would write it (sync, default options but fast polls).
USER_FLOW = textwrap.dedent(
    f"""
    import sys
    from prefect import flow
    from prefect_seedream import GenerationRequest, generate_many

    @flow
    def posters(output: str) -> int:
        requests = [
            GenerationRequest(prompt=f"a paper lantern number {{i}}" + (" {REFUSED}" if i % 10 == 3 else ""))
            for i in range(40)
        ]
        results = generate_many(requests, output, rows_per_task=8, poll_interval=0.05)
        return sum(result.ok for result in results)

    if __name__ == "__main__":
        state = posters(sys.argv[1], return_state=True)
        print("FLOW_RUN_ID", state.state_details.flow_run_id, state.type.value, flush=True)
    """
)


@pytest.fixture(scope="module")
def user_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[PrefectServer, str, Path]]:
    """The server, and the id of the user's flow run (finished), and its work folder."""
    work = tmp_path_factory.mktemp("ui-library")
    script = work / "posters_flow.py"
    script.write_text(USER_FLOW, encoding="utf-8")
    config = SimulatorConfig(latency_seconds=0.5, jitter_seconds=0.1)
    with running_simulator(config) as simulator, start_prefect_server(work) as server:
        yield server, _run_user_flow(server, simulator, script, work), work


def _run_user_flow(server: PrefectServer, simulator: RunningSimulator, script: Path, work: Path) -> str:
    env = server.client_env({
        "SEEDREAM_API_KEY": "sk-ui-test", "SEEDREAM_BASE_URL": simulator.base_url,
        "PYTHONPATH": str(REPO),
    })
    done = subprocess.run(
        [sys.executable, str(script), str(work / "posters")], env=env, cwd=work,
        capture_output=True, text=True, timeout=600, check=False,
    )
    marker = [line for line in done.stdout.splitlines() if line.startswith("FLOW_RUN_ID")]
    assert done.returncode == 0 and marker, done.stdout[-3000:] + done.stderr[-3000:]
    _, run_id, state = marker[0].split()
    assert state == "COMPLETED", done.stdout[-3000:]
    return run_id


@pytest.mark.parametrize("ui", ["v2", "v1"])
def test_a_user_flow_with_generate_many_shows_its_story(
    user_run: tuple[PrefectServer, str, Path], page: Page, ui: UI, browser_artifacts_dir: Path
) -> None:
    server, run_id, _ = user_run

    views = {view.key: view for view in open_artifacts_and_check_images(
        page, server.ui_url, run_id, types=("markdown", "table", "progress"),
        screenshot_dir=browser_artifacts_dir / f"library-{ui}", ui=ui,
    )}  # (it checks that the Artifacts tab shows as many cards as the run has artifacts)
    assert set(views) == STORY_KEYS, sorted(str(key) for key in views)

    summary = views["seedream-posters-summary"].text
    assert "rows succeeded" in summary and "36" in summary and "manifest.jsonl" in summary
    rows = views["seedream-posters-rows"].text
    first_rows = rows[: rows.index("succeeded")] if "succeeded" in rows else rows
    assert first_rows.count("change the prompt") == 4, rows[:2000]  # the failures first
    assert "task-unified-" in rows and "change the prompt" in rows
    gallery = views["seedream-posters-gallery"]
    assert len(gallery.images) == 36, gallery.images[:3]
    assert all(image.complete and image.natural_width > 0 for image in gallery.images)

    logs_text = _logs_tab_text(page, server, run_id, ui, browser_artifacts_dir / f"library-{ui}-logs.png")
    assert "content_policy_violation" in logs_text
    assert "Traceback" not in logs_text and "no running event loop" not in logs_text


def test_the_server_has_no_traceback_for_refused_rows(user_run: tuple[PrefectServer, str, Path]) -> None:
    """Every log line of the run, read from the API: 4 warnings, no traceback."""
    server, run_id, _ = user_run
    logs = server.api("POST", "/logs/filter", {"logs": {"flow_run_id": {"any_": [run_id]}}, "limit": 200})
    assert not [log["message"][:300] for log in logs if "Traceback" in log["message"]]
    warnings = [log for log in logs if log["level"] == 30 and "content_policy_violation" in log["message"]]
    assert len(warnings) == 4, json.dumps(warnings)[:2000]
    errors = [log["message"] for log in logs if log["level"] >= 40]
    assert all(message.startswith("Finished in state Failed('rows ") for message in errors), errors


def _logs_tab_text(page: Page, server: PrefectServer, run_id: str, ui: UI, screenshot: Path) -> str:
    """The run page's Logs tab, as the user reads it."""
    page.goto(run_page_url(server.ui_url, run_id, ui))
    if ui == "v1":
        page.locator("li.p-tab").filter(has_text="Logs").first.click()
    else:
        page.get_by_role("tab", name="Logs", exact=True).click()
    page.get_by_text("content_policy_violation").first.wait_for(state="visible", timeout=30_000)
    wait_for_quiet_network(page)
    page.screenshot(path=str(screenshot), full_page=True)
    return page.locator("body").inner_text()
