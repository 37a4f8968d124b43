"""Fixtures for the Playwright browser tests: Debian's chromium, a page, a screenshot dir.

The tests here are marked ``slow`` and ``browser`` and skip (with the reason) when
``/usr/bin/chromium`` is missing: install it with ``.ci/install-browser.sh``.
"""

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, sync_playwright
from playwright.sync_api import Error as PlaywrightError

from tests.browser.prefect_ui import CHROMIUM_PATH, launch_browser, new_page

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def browser_artifacts_dir() -> Path:
    """Where screenshots go: ``$SEEDREAM_TEST_ARTIFACTS`` or ``<repo>/test-artifacts/browser``."""
    default = REPO_ROOT / "test-artifacts" / "browser"
    path = Path(os.environ.get("SEEDREAM_TEST_ARTIFACTS") or default)
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Headless Debian chromium, one per test module (skips if it is not installed)."""
    if not Path(CHROMIUM_PATH).exists():
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM_PATH} missing in CI: .ci/install-browser.sh should have installed it")
        pytest.skip(f"{CHROMIUM_PATH} missing: run .ci/install-browser.sh")
    pw = sync_playwright().start()
    try:
        b = launch_browser(pw)
        try:
            yield b
        finally:
            b.close()
    finally:
        pw.stop()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    """Remember each phase's report on the item, for the ``page`` fixture's failure dump."""
    rep = yield
    setattr(item, f"rep_{rep.when}", rep)
    return rep


@pytest.fixture
def page(
    browser: Browser, request: pytest.FixtureRequest, browser_artifacts_dir: Path
) -> Iterator[Page]:
    """A fresh page (own context, 1400x1000, en-US). On failure its screenshot and HTML are
    saved as ``FAILED-<test>.png/.html`` in the artifacts directory."""
    pg = new_page(browser)
    try:
        yield pg
    finally:
        rep = getattr(request.node, "rep_call", None)
        if rep is not None and rep.failed:
            name = "".join(c if c.isalnum() or c in "-_." else "_" for c in request.node.name)
            stem = f"FAILED-{name}"
            try:
                pg.screenshot(path=str(browser_artifacts_dir / f"{stem}.png"), full_page=True)
                (browser_artifacts_dir / f"{stem}.html").write_text(pg.content())
            except (PlaywrightError, OSError) as exc:  # the failure itself matters more
                print(f"could not save the failed page: {exc}")
        pg.context.close()
