"""Drive the Prefect 3.8 web UI with Playwright (sync API) and Debian's chromium.

Reusable building blocks for end-to-end browser tests:

* :func:`start_prefect_server`: a throw-away ``prefect server start`` on a free port, with an
  isolated ``PREFECT_HOME`` and SQLite database.
* :func:`serve_deployment`: a subprocess that serves a flow (``flow.serve(...)``) against it.
* :func:`launch_browser` / :func:`new_page`: Debian's headless chromium (``playwright install``
  cannot download its own browser on our machines).
* :func:`open_custom_run`, :func:`fill_run_form`, :func:`wait_for_flow_run_state`,
  :func:`open_artifacts_and_check_images`: the user's path through the UI.

Prefect 3.8 ships **two** UIs, served by the same server, and every UI helper here works
with both (``ui="v1"`` or ``ui="v2"``):

* ``v1``, the Vue UI, at ``/`` (``/deployments/deployment/<id>``, ``/runs/flow-run/<id>``,
  ``/artifacts/artifact/<id>``). Deep links printed by the CLI and by ``flow.serve()`` are
  v1 paths, and v1 paths other than ``/`` are always served as v1.
* ``v2``, the React UI, at ``/v2/...`` (same paths under ``/v2``). ``/`` redirects to
  ``/v2/`` unless ``PREFECT_SERVER_UI_V2_ENABLED=false`` or the browser has the
  ``prefect_ui_version=v1`` cookie, so this is what a user opening the dashboard sees.

Typical use (see ``test_dataset_ui.py``; ``tests`` is a package, the repo root on sys.path)::

    from tests.browser.prefect_ui import (
        launch_browser, new_page, open_artifacts_and_check_images, open_custom_run,
        fill_run_form, serve_deployment, start_prefect_server, wait_for_flow_run_state)

    with start_prefect_server(tmp_path) as server, serve_deployment(
        server, [sys.executable, "deployments/serve.py"], "flow/deployment", tmp_path
    ):
        with sync_playwright() as pw:
            browser = launch_browser(pw)
            page = new_page(browser)
            open_custom_run(page, server.ui_url, "flow/deployment", ui="v2")
            run_id = fill_run_form(page, {"dataset": "x.csv", "model": "doubao-seedream-4.0",
                                          "size": "1K", "n": "2"})
            wait_for_flow_run_state(page, server.ui_url, run_id, "Completed", timeout=180)
            views = open_artifacts_and_check_images(page, server.ui_url, run_id)
            assert all(img.natural_width > 0 for v in views for img in v.images)
"""

import contextlib
import ctypes
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from playwright.sync_api import Browser, Locator, Page, Playwright, Request, Response
from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

# One minimal REST client and port picker for every real server the tests start.
from deployments.stack import api_request, free_port, tail_of

UI = Literal["v1", "v2"]

#: UI used when a helper is not told which one (and cannot tell from the page's URL).
DEFAULT_UI: UI = "v2"

CHROMIUM_PATH = "/usr/bin/chromium"
CHROMIUM_ARGS: list[str] = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]

#: Names the UIs show in a flow run's state badge.
STATE_NAMES: tuple[str, ...] = (
    "Scheduled", "Late", "AwaitingRetry", "AwaitingConcurrencySlot", "Pending", "Submitting",
    "Running", "Retrying", "Paused", "Suspended", "Cancelling", "Cancelled", "Completed",
    "Cached", "RolledBack", "Failed", "Crashed", "TimedOut",
)  # fmt: skip
#: Final states: waiting for another state is pointless once one of these is shown.
FINAL_STATES: frozenset[str] = frozenset(
    {"Completed", "Cached", "RolledBack", "Failed", "Crashed", "Cancelled", "TimedOut"}
)
_STATE_RE = re.compile(rf"^\s*({'|'.join(STATE_NAMES)})\s*$")
_UUID_RE = re.compile(
    r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.IGNORECASE
)


# --------------------------------------------------------------------------------------------
# Processes: server and served deployment
# --------------------------------------------------------------------------------------------

#: urllib opener that ignores *_proxy variables: the server is on 127.0.0.1.
_LOCAL = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def venv_bin(name: str) -> str:
    """Path of executable ``name`` in the running interpreter's ``bin`` directory (the venv's).

    ``sys.executable`` is deliberately not resolved: the venv's ``python`` is a symlink and
    resolving it would leave the venv.
    """
    return str(Path(sys.executable).parent / name)


def _die_with_parent() -> None:
    """``preexec_fn``: have the kernel SIGTERM the child if the test process dies (Linux only).

    Without it a pytest killed by SIGKILL (CI timeout) leaves the server and the serve
    process running forever.
    """
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _stop_process_group(proc: "subprocess.Popen[bytes]", grace: float) -> None:
    """SIGTERM the process group of ``proc`` (its session leader), SIGKILL it after ``grace`` s."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
    # Children of the leader may outlive it (same group): kill what is left either way.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)


def _clean_env(home: Path) -> dict[str, str]:
    """The caller's environment without any ``PREFECT_*`` variable, plus isolated settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(
        PREFECT_HOME=str(home),
        PREFECT_PROFILES_PATH=str(home / "profiles.toml"),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_SERVER_UI_SHOW_PROMOTIONAL_CONTENT="false",
        PYTHONUNBUFFERED="1",
    )
    return env


@dataclass
class PrefectServer:
    """A running ``prefect server start`` subprocess (yielded by :func:`start_prefect_server`)."""

    port: int
    home: Path
    log_path: Path
    process: "subprocess.Popen[bytes]" = field(repr=False)
    base_env: dict[str, str] = field(repr=False)

    @property
    def api_url(self) -> str:
        """``http://127.0.0.1:PORT/api``, the value of ``PREFECT_API_URL`` for clients."""
        return f"http://127.0.0.1:{self.port}/api"

    @property
    def ui_url(self) -> str:
        """``http://127.0.0.1:PORT``, the UI's root, without a trailing slash."""
        return f"http://127.0.0.1:{self.port}"

    def client_env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """Environment for a client subprocess (``serve``, a flow, the CLI) of this server."""
        env = dict(self.base_env)
        env["PREFECT_API_URL"] = self.api_url
        env.update(extra or {})
        return env

    def api(self, method: str, path: str, body: Any = None, timeout: float = 10.0) -> Any:
        """Call the REST API (``path`` relative to ``/api``) and return the decoded JSON."""
        return api_request(self.api_url, method, path, body, timeout)

    def log_tail(self, lines: int = 60) -> str:
        """The last ``lines`` lines of the server's log, for error messages."""
        return tail_of(self.log_path, lines)


@contextlib.contextmanager
def start_prefect_server(
    tmp_dir: Path | str,
    *,
    startup_timeout: float = 180.0,
    extra_env: Mapping[str, str] | None = None,
) -> Iterator[PrefectServer]:
    """Run ``prefect server start`` on a free port for the duration of the ``with`` block.

    The server uses the venv's ``prefect`` executable, an isolated ``PREFECT_HOME``
    (``tmp_dir/prefect-home``) with its own SQLite database, no analytics, and
    ``PREFECT_UI_API_URL`` / ``PREFECT_SERVER_API_PORT`` set to the chosen port: without them
    the UI in the browser keeps calling port 4200 ("Can't connect to Server API").
    Output goes to ``tmp_dir/prefect-server.log``. The process group is terminated at exit
    (SIGTERM, then SIGKILL after 15 s), and the kernel terminates it if the caller dies.

    Startup took 6-40 s on a busy 2-core machine (a fresh database runs its migrations
    first).

    Args:
        tmp_dir: a directory owned by the caller (e.g. pytest's ``tmp_path``).
        startup_timeout: seconds to wait for ``/api/health``.
        extra_env: more environment variables for the server process.

    Yields:
        A :class:`PrefectServer` with ``api_url`` and ``ui_url``.

    Raises:
        RuntimeError: the server exited during startup (the log's tail is in the message).
        TimeoutError: ``/api/health`` did not answer in time.
    """
    tmp = Path(tmp_dir)
    home = tmp / "prefect-home"
    home.mkdir(parents=True, exist_ok=True)
    log_path = tmp / "prefect-server.log"
    base_env = _clean_env(home)
    base_env["PREFECT_API_DATABASE_CONNECTION_URL"] = f"sqlite+aiosqlite:///{home / 'prefect.db'}"

    for attempt in range(3):  # the free port can be taken between free_port() and bind()
        port = free_port()
        env = dict(base_env)
        env.update(
            PREFECT_SERVER_API_HOST="127.0.0.1",
            PREFECT_SERVER_API_PORT=str(port),
            PREFECT_UI_API_URL=f"http://127.0.0.1:{port}/api",
        )
        env.update(extra_env or {})
        with open(log_path, "ab") as log:
            log.write(f"--- attempt {attempt + 1}, port {port}\n".encode())
            log.flush()
            proc = subprocess.Popen(
                [venv_bin("prefect"), "server", "start", "--host", "127.0.0.1",
                 "--port", str(port)],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                # Safe: nothing here runs threads that hold locks at fork time.
                preexec_fn=_die_with_parent,  # noqa: PLW1509
            )  # fmt: skip
        server = PrefectServer(port, home, log_path, proc, base_env)
        try:
            deadline = time.monotonic() + startup_timeout
            while True:
                if proc.poll() is not None:
                    tail = server.log_tail()
                    if "address already in use" in tail.lower() and attempt < 2:
                        break  # retry on another port
                    raise RuntimeError(
                        f"prefect server exited with code {proc.returncode}:\n{tail}"
                    )
                try:
                    _LOCAL.open(f"{server.api_url}/health", timeout=2).close()
                    break
                except (urllib.error.URLError, OSError):
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"prefect server not healthy after {startup_timeout:.0f} s:\n"
                        f"{server.log_tail()}"
                    )
                time.sleep(0.3)
            if proc.poll() is not None:
                continue
            yield server
            return
        finally:
            _stop_process_group(proc, grace=15)
    raise RuntimeError(f"could not start prefect server:\n{tail_of(log_path, 60)}")


@dataclass
class ServedDeployment:
    """A running serve subprocess and the deployment(s) it serves."""

    id: str
    """Id of the first (or only) deployment."""
    name: str
    log_path: Path
    process: "subprocess.Popen[bytes]" = field(repr=False)
    ids: dict[str, str] = field(default_factory=dict)
    """``"flow-name/deployment-name"`` -> id, for every deployment waited for."""


@contextlib.contextmanager
def serve_deployment(
    server: PrefectServer,
    argv: Sequence[str],
    deployment: str | Sequence[str],
    log_dir: Path | str,
    *,
    timeout: float = 120.0,
    poll_seconds: int = 2,
    extra_env: Mapping[str, str] | None = None,
    cwd: Path | str | None = None,
) -> Iterator[ServedDeployment]:
    """Run a process that serves a deployment (e.g. a script calling ``flow.serve(name=...)``).

    Waits until the server knows ``deployment`` ("flow-name/deployment-name", or a list of
    them when the process serves several with ``prefect.serve(...)``). The runner
    polls for work every ``poll_seconds`` (``PREFECT_RUNNER_POLL_FREQUENCY``; Prefect's
    default is 10 s, which would add up to 10 s to every run). The process group is stopped at
    exit (SIGTERM: the runner pauses its deployments; SIGKILL after 20 s).

    Notes on ``serve()`` in Prefect 3.8.7: each run executes a cloudpickled copy of the
    in-memory flow in a spawned subprocess (``prefect.flow_engine.run_flow_in_subprocess``):

    * editing the flow's file while it serves changes nothing until it is restarted;
    * a flow module with ``from __future__ import annotations`` whose signature uses names
      only in annotations (``Annotated``, ``Literal``, type aliases) fails *every* run:
      "Validation of flow parameters failed ... `<Flow>Model` is not fully defined; you
      should define `Annotated`". Calling the flow directly works; the UI shows "Failed".

    Args:
        server: from :func:`start_prefect_server`.
        argv: the command, e.g. ``[sys.executable, "deployments/serve.py"]``.
        deployment: ``"flow-name/deployment-name"`` or a list of them.
        log_dir: the process's output goes to ``log_dir/serve-<deployment-name>.log``.
        timeout: seconds to wait for the deployment to appear.
        poll_seconds: the runner's polling interval.
        extra_env: more environment variables.
        cwd: working directory of the process.

    Yields:
        A :class:`ServedDeployment` with the (first) deployment's ``id`` and all ``ids``.
    """
    names = [deployment] if isinstance(deployment, str) else list(deployment)
    paths = []
    for name in names:
        flow_name, _, dep_name = name.partition("/")
        if not dep_name:
            raise ValueError(f"deployment must be 'flow-name/deployment-name', got {name!r}")
        paths.append(
            "/deployments/name/"
            + "/".join(urllib.parse.quote(p, safe="") for p in (flow_name, dep_name))
        )
    log_path = Path(log_dir) / f"serve-{names[0].partition('/')[2]}.log"
    env = server.client_env(
        {"PREFECT_RUNNER_POLL_FREQUENCY": str(poll_seconds), **(extra_env or {})}
    )
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            list(argv),
            env=env,
            cwd=None if cwd is None else str(cwd),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent,  # noqa: PLW1509
        )
    try:
        deadline = time.monotonic() + timeout
        ids: dict[str, str] = {}
        while len(ids) < len(names):
            if proc.poll() is not None:
                raise RuntimeError(
                    f"serve process exited with code {proc.returncode}:\n{tail_of(log_path, 60)}"
                )
            for name, path in zip(names, paths):
                if name in ids:
                    continue
                try:
                    ids[name] = str(server.api("GET", path)["id"])
                except urllib.error.HTTPError as exc:
                    if exc.code != 404:
                        raise
                except (urllib.error.URLError, OSError):
                    pass
            if len(ids) == len(names):
                break
            if time.monotonic() > deadline:
                missing = [n for n in names if n not in ids]
                raise TimeoutError(
                    f"deployments {missing} not registered after {timeout:.0f} s:\n"
                    f"{tail_of(log_path, 60)}"
                )
            time.sleep(0.5)
        yield ServedDeployment(ids[names[0]], names[0], log_path, proc, ids)
    finally:
        _stop_process_group(proc, grace=20)


# --------------------------------------------------------------------------------------------
# Browser
# --------------------------------------------------------------------------------------------


def launch_browser(playwright: Playwright, *, headless: bool = True, **kwargs: Any) -> Browser:
    """Launch Debian's chromium (``/usr/bin/chromium``) headless with the flags that work here.

    ``playwright install`` cannot be used on our machines; install the browser with
    ``.ci/install-browser.sh`` (``apt-get install chromium``).

    Args:
        playwright: from ``sync_playwright().start()`` or ``with sync_playwright() as pw``.
        headless: keep True on CI.
        **kwargs: passed to ``playwright.chromium.launch`` (e.g. ``slow_mo=200``).
    """
    return playwright.chromium.launch(
        executable_path=CHROMIUM_PATH, args=list(CHROMIUM_ARGS), headless=headless, **kwargs
    )


def new_page(
    browser: Browser,
    *,
    width: int = 1400,
    height: int = 1000,
    timeout_ms: float = 30_000,
    navigation_timeout_ms: float = 60_000,
) -> Page:
    """Open a page in a fresh browser context (no cookies) with a desktop-sized viewport.

    The viewport matters: narrower windows switch both UIs to mobile layouts with other
    controls. Close it with ``page.context.close()``.
    """
    # en-US: the browser's own validation messages are asserted on, and are localised.
    context = browser.new_context(viewport={"width": width, "height": height}, locale="en-US")
    page = context.new_page()
    page.set_default_timeout(timeout_ms)
    page.set_default_navigation_timeout(navigation_timeout_ms)
    return page


# --------------------------------------------------------------------------------------------
# UI helpers
# --------------------------------------------------------------------------------------------


class RunFormRejected(AssertionError):
    """The custom-run form did not create a flow run.

    Attributes:
        reason: ``"browser"`` (HTML constraint validation stopped the submit: v2's number
            inputs carry the JSON schema's ``minimum``/``maximum`` as ``min``/``max``) or
            ``"server"`` (the API refused ``create_flow_run``: v1 sends whatever was typed and
            the server enforces the parameter schema).
        messages: what the UI showed: the browser's validation messages, or the error toast
            (falling back to the API's ``detail``).
        status: the HTTP status for ``"server"``, else None.
    """

    def __init__(self, reason: str, messages: list[str], status: int | None = None) -> None:
        super().__init__(f"run form rejected ({reason}, status={status}): {messages}")
        self.reason = reason
        self.messages = messages
        self.status = status


def ui_of(page: Page) -> UI:
    """Which UI the page shows, from its URL (``/v2/...`` is v2)."""
    return "v2" if urllib.parse.urlsplit(page.url).path.startswith("/v2") else "v1"


def ui_path(ui: UI, path: str) -> str:
    """A UI path for ``ui``: ``/runs/flow-run/x`` -> ``/v2/runs/flow-run/x`` for v2."""
    return ("/v2" + path) if ui == "v2" else path


def api_json(page: Page, ui_url: str, method: str, path: str, body: Any = None) -> Any:
    """Call the REST API from the page's browser context (same cookies as the UI)."""
    url = ui_url.rstrip("/") + "/api" + path
    resp = page.request.fetch(url, method=method, data=body)
    if not resp.ok:
        raise RuntimeError(f"{method} {path} -> {resp.status}: {resp.text()[:500]}")
    return resp.json()


def resolve_deployment_id(page: Page, ui_url: str, deployment: str) -> str:
    """Deployment id for ``"flow-name/deployment-name"`` (an id is returned unchanged)."""
    if _UUID_RE.match(deployment):
        return deployment
    flow_name, _, dep_name = deployment.partition("/")
    if not dep_name:
        raise ValueError(f"expected 'flow-name/deployment-name' or an id, got {deployment!r}")
    q = urllib.parse.quote
    return str(
        api_json(
            page, ui_url, "GET", f"/deployments/name/{q(flow_name, safe='')}/{q(dep_name, safe='')}"
        )["id"]
    )


def _submit_button(page: Page) -> Locator:
    return page.get_by_role("button", name="Submit", exact=True)


def _run_form(page: Page) -> Locator:
    return page.locator("form").filter(has=_submit_button(page))


def wait_for_quiet_network(page: Page, timeout_s: float = 10.0) -> None:
    """Wait for ``networkidle``, but give up silently after ``timeout_s`` (polling pages)."""
    with contextlib.suppress(PlaywrightTimeoutError):
        page.wait_for_load_state("networkidle", timeout=timeout_s * 1000)


def open_custom_run(page: Page, ui_url: str, deployment_name: str, *, ui: UI | None = None) -> str:
    """Open a deployment's page and its "Run" > "Custom run" form, as a user does.

    Selectors: the "Run" button is ``get_by_role("button", name="Run", exact=True)`` (not
    exact, it also matches the "Runs" navigation item); the menu item is
    ``get_by_text("Custom run", exact=True)`` (v1: a popover item; v2: a Radix menu item).
    The form is at ``.../deployments/deployment/<id>/run`` in both UIs.

    Args:
        page: from :func:`new_page`.
        ui_url: ``server.ui_url``.
        deployment_name: ``"flow-name/deployment-name"`` or the deployment's id.
        ui: ``"v1"`` or ``"v2"`` (default :data:`DEFAULT_UI`).

    Returns:
        The deployment id.
    """
    ui = ui or DEFAULT_UI
    dep_id = resolve_deployment_id(page, ui_url, deployment_name)
    page.goto(ui_url.rstrip("/") + ui_path(ui, f"/deployments/deployment/{dep_id}"))
    run_button = page.get_by_role("button", name="Run", exact=True)
    custom = page.get_by_text("Custom run", exact=True)
    wait_for_quiet_network(page)
    for _ in range(3):  # a click made while the page is still hydrating can be lost
        if custom.is_visible():
            break
        run_button.click()
        with contextlib.suppress(PlaywrightTimeoutError):
            custom.wait_for(state="visible", timeout=5_000)
    custom.click()
    page.wait_for_url(re.compile(rf"/deployments/deployment/{dep_id}/run"))
    _submit_button(page).wait_for(state="visible")
    return dep_id


def _label_re(label: str) -> re.Pattern[str]:
    # Optional parameters are labelled "name (Optional)", required ones just "name". Nested
    # pydantic fields are labelled with their title ("Prompt Prefix"), not their name.
    return re.compile(rf"^\s*{re.escape(label)}(\s*\(Optional\))?\s*$")


def parameter_block(page: Page, path: str, *, ui: UI | None = None) -> Locator:
    """The block of the form holding one parameter: its label, description and control.

    Args:
        page: a page showing the custom-run form.
        path: the parameter's label without "(Optional)"; a field of a pydantic-model
            parameter is ``"parent/Field Title"`` (labels of nested fields are the model
            fields' *titles*, e.g. ``"options/Prompt Prefix"`` for ``prompt_prefix``).
        ui: default: from the page's URL.

    Selectors: v1 labels are ``span.schema-form-property__label``, v2 labels are
    ``<label>`` elements; the block is the label's nearest ancestor containing a
    ``<fieldset>`` (v1 ``.schema-form-property``, v2 ``div.group``).
    """
    ui = ui or ui_of(page)
    label_sel = ".schema-form-property__label" if ui == "v1" else "label"
    scope: Locator = _run_form(page)
    for part in path.split("/"):
        label = scope.locator(label_sel).filter(has_text=_label_re(part)).first
        scope = label.locator("xpath=ancestor::*[.//fieldset][1]")
    return scope


def _choose_option(page: Page, block: Locator, value: str, ui: UI) -> None:
    """Pick ``value`` in a custom select (Literal / Enum parameter)."""
    if ui == "v1":
        # prefect-design PSelect (a combobox with a search box) in a teleported
        # ".p-pop-over-content". In headless chromium a mouse click on the button opens it and
        # it closes again at once; the keyboard (ArrowDown) opens it reliably.
        button = block.locator("button.p-select-button__control")
        button.focus()
        button.press("ArrowDown")
        popover = page.locator(".p-pop-over-content").filter(has=page.locator("[role=option]"))
        popover.wait_for(state="visible")
        search = popover.locator("input[type=search]")
        if search.count():
            search.fill(value)  # the list is virtualised: filter so the option is rendered
        popover.locator("[role=option]").filter(has_text=_exact_re(value)).first.click()
        current = block.locator(".p-select-button__value")
    else:
        # shadcn/Radix popover with a cmdk list: button[aria-haspopup=listbox] ("Select <name>").
        button = block.locator("button[aria-haspopup=listbox]")
        button.click()
        page.get_by_role("listbox").wait_for(state="visible")
        option = page.get_by_role("option", name=value, exact=True)
        if not option.count():
            # cmdk filters on the items' values (their indexes here), so typing the label may
            # hide everything: only search when the option is not rendered at all.
            page.locator("[cmdk-input]").fill(value)
        option.first.click()
        current = button
    _wait_text(current, value)


def _exact_re(text: str) -> re.Pattern[str]:
    return re.compile(rf"^\s*{re.escape(text)}\s*$")


def _wait_text(locator: Locator, text: str, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        got = locator.inner_text().strip()
        if got == text:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"select shows {got!r}, expected {text!r}")
        time.sleep(0.1)


def _set_switch(block: Locator, value: str) -> None:
    switch = block.locator("[role=switch]").first
    want = value.strip().lower() in ("1", "true", "yes", "on")
    if (switch.get_attribute("aria-checked") == "true") != want:
        switch.click()
    deadline = time.monotonic() + 5
    while (switch.get_attribute("aria-checked") == "true") != want:  # re-rendered async
        if time.monotonic() > deadline:
            raise AssertionError(f"switch did not turn {'on' if want else 'off'}")
        time.sleep(0.1)


def fill_parameter(page: Page, path: str, value: str, *, ui: UI | None = None) -> str:
    """Set one parameter of the custom-run form; return the kind of control it used.

    How the UIs render parameters (both UIs alike unless noted):

    * ``str``: a ``<textarea>`` (one row), filled with ``fill``. Kind ``"text"``.
    * ``int``/``float``: ``<input type=number>`` (step 1 / 0.01). v2 also writes the JSON
      schema's ``minimum``/``maximum`` as ``min``/``max`` attributes; v1 does not. ``"number"``.
    * ``Literal[...]``/``Enum``: not a native ``<select>`` but a custom select with a search
      box (v1: prefect-design PSelect; v2: Radix popover + cmdk list). ``"select"``.
    * ``bool``: a switch (``[role=switch]``, ``aria-checked``); value "true"/"false".
      ``"switch"``.
    * pydantic model: a nested group of its fields (address them as ``"parent/Field Title"``).
    * ``Optional[X]``: a type toggle ("int" / "None") above the field; not supported here.
    * ``list[...]``: "Add item" rows; not supported here.

    Descriptions come from the flow docstring's ``Args:`` section when it has one, otherwise
    from ``Field(description=...)``; they render as markdown under the label.

    Raises:
        NotImplementedError: the block holds a control this helper does not know.
    """
    ui = ui or ui_of(page)
    block = parameter_block(page, path, ui=ui)
    block.wait_for(state="visible")
    fields = block.locator("fieldset").first
    if fields.locator("[role=switch]").count():
        _set_switch(fields, value)
        return "switch"
    select_sel = (
        "button.p-select-button__control" if ui == "v1" else "button[aria-haspopup=listbox]"
    )
    if fields.locator(select_sel).count():
        _choose_option(page, fields, value, ui)
        return "select"
    for selector, kind in (
        ("textarea", "text"),
        ("input[type=number]", "number"),
        ("input[type=text], input:not([type])", "text"),
    ):
        control = fields.locator(selector)
        if control.count():
            control.first.fill(value)
            return kind
    raise NotImplementedError(
        f"parameter {path!r}: unsupported control:\n{block.inner_html()[:2000]}"
    )


def _is_create_flow_run(url: str, method: str) -> bool:
    return method == "POST" and bool(re.search(r"/api/deployments/[^/]+/create_flow_run$", url))


def fill_run_form(
    page: Page,
    values: Mapping[str, str | int | float | bool],
    *,
    submit: bool = True,
    timeout_s: float = 30.0,
    ui: UI | None = None,
) -> str | None:
    """Fill the custom-run form's parameters and (by default) submit it.

    Args:
        page: a page showing the form (after :func:`open_custom_run`).
        values: parameter label (see :func:`parameter_block`) -> value as typed by a user.
            Booleans become "true"/"false".
        submit: click "Submit" and wait for the flow run to be created.
        timeout_s: seconds to wait for ``create_flow_run`` after the click.
        ui: default: from the page's URL.

    Returns:
        The new flow run's id (see :func:`submit_run_form`), or None when ``submit`` is False.

    Raises:
        RunFormRejected: no run was created; see its ``reason`` and ``messages``.
    """
    ui = ui or ui_of(page)
    for path, value in values.items():
        text = str(value).lower() if isinstance(value, bool) else str(value)
        fill_parameter(page, path, text, ui=ui)
    if not submit:
        return None
    return submit_run_form(page, timeout_s=timeout_s)


def submit_run_form(page: Page, *, timeout_s: float = 30.0) -> str:
    """Click the custom-run form's "Submit" and return the id of the flow run it creates.

    The id comes from the ``POST /api/deployments/<id>/create_flow_run`` response that the
    click triggers. After a successful submit both UIs go back to the deployment page and show
    a toast "<run name> scheduled to start now" with a "View run" button.

    What each UI does with a value outside the JSON schema's ``minimum``/``maximum``:

    * v2: its ``<input type=number>`` has ``min``/``max``, so the browser's constraint
      validation blocks the submit and shows a native bubble ("Value must be less than or
      equal to 15."); no request is sent. Raises ``RunFormRejected("browser", ...)``.
    * v1: sends the request; the server (the form's "Validate parameters" box, i.e.
      ``enforce_parameter_schema``, is on by default) answers 409 and the UI shows a toast
      "Error creating flow run: Validation failed for field 'n'. Failure reason: 0 is less
      than the minimum of 1"; the form stays open. Raises ``RunFormRejected("server", ...)``.

    Raises:
        RunFormRejected: no run was created (reason "ui": nothing was sent within
            ``timeout_s`` for another reason; the fields marked ``aria-invalid`` are listed).
    """
    form = _run_form(page)
    # v2's form has no "novalidate": inputs violating min/max keep the browser from submitting.
    invalid: list[str] = form.evaluate(
        """f => f.noValidate ? [] : Array.from(f.querySelectorAll('input, textarea, select'))
                 .filter(e => !e.checkValidity()).map(e => e.validationMessage)"""
    )
    seen: list[Request] = []

    def on_request(req: Request) -> None:
        if _is_create_flow_run(req.url, req.method):
            seen.append(req)

    page.on("request", on_request)
    try:
        response: Response | None
        if invalid:
            # The browser shows its validation bubble (not part of the DOM) and sends nothing.
            _submit_button(page).click()
            page.wait_for_timeout(1_000)
            if not seen:
                raise RunFormRejected("browser", invalid)
            response = seen[0].response()
        else:
            try:
                with page.expect_response(
                    lambda r: _is_create_flow_run(r.url, r.request.method),
                    timeout=timeout_s * 1000,
                ) as info:
                    _submit_button(page).click()
            except PlaywrightTimeoutError:
                if seen:
                    raise
                # Some other client-side check stopped the submit: report what is shown.
                errors = form.locator("[aria-invalid=true]").evaluate_all(
                    "els => els.map(e => e.id || e.name || e.tagName)"
                )
                raise RunFormRejected(
                    "ui", _toast_texts(page, 1.0) + [f"aria-invalid: {errors}"]
                ) from None
            response = info.value
        if response is None:
            raise RuntimeError("create_flow_run got no response")
        # Read the body now: the UI navigates away right after, and then it is gone.
        body_text = response.text()
    finally:
        page.remove_listener("request", on_request)

    if response.ok:
        return str(json.loads(body_text)["id"])
    detail = body_text
    with contextlib.suppress(ValueError, KeyError, TypeError):
        detail = str(json.loads(body_text)["detail"])
    raise RunFormRejected("server", _toast_texts(page) or [detail], response.status)


def _toast_texts(page: Page, timeout_s: float = 5.0) -> list[str]:
    """Texts of the visible notification toasts (v1: ``.p-toast``, v2: sonner ``<li>``)."""
    sel = ".p-toast-container .p-toast, [data-sonner-toast], section[aria-label^=Notifications] li"
    toasts = page.locator(sel)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        texts = [t.strip() for t in toasts.all_inner_texts() if t.strip()]
        if texts:
            # v1 mounts two toast containers; drop duplicates and the "Close" button label.
            clean = [re.sub(r"\s*Close\s*$", "", t).strip() for t in texts]
            return list(dict.fromkeys(clean))
        time.sleep(0.2)
    return []


def run_page_url(ui_url: str, flow_run_id: str, ui: UI) -> str:
    """URL of a flow run's page: ``/runs/flow-run/<id>`` (v1) or ``/v2/runs/flow-run/<id>``."""
    return ui_url.rstrip("/") + ui_path(ui, f"/runs/flow-run/{flow_run_id}")


def open_run_from_toast(page: Page, timeout_s: float = 10.0) -> str:
    """Click "View run" in the toast shown after a submit; return the flow run id from the URL."""
    page.get_by_role("button", name="View run").first.click(timeout=timeout_s * 1000)
    page.wait_for_url(re.compile(r"/runs/flow-run/[0-9a-f-]{36}"))
    return page.url.split("/runs/flow-run/")[1][:36]


def state_badge(page: Page, ui: UI | None = None) -> Locator:
    """The flow run page's state badge (v1 ``.page-heading-flow-run__meta .state-badge``;
    v2 the first ``[data-slot=badge]`` whose text is a state name)."""
    ui = ui or ui_of(page)
    if ui == "v1":
        return page.locator(".page-heading-flow-run__meta .state-badge").first
    return page.locator("[data-slot=badge]").filter(has_text=_STATE_RE).first


def wait_for_flow_run_state(
    page: Page,
    ui_url: str,
    flow_run_id: str | None = None,
    state: str = "Completed",
    timeout: float = 120.0,
    *,
    ui: UI | None = None,
    reload_every_s: float = 30.0,
) -> list[str]:
    """Watch a flow run's page until its state badge shows ``state``.

    Both UIs update the badge live (seen: "Submitting" -> "Completed"); the page is still
    reloaded every ``reload_every_s`` seconds without a change, as a safety net.

    Args:
        page: any page of the UI.
        ui_url: ``server.ui_url``.
        flow_run_id: the run to watch. None: the page is already on the run's page, or shows
            the post-submit toast, whose "View run" is then clicked.
        state: the state name the UI shows ("Completed", "Failed", ...).
        timeout: seconds.
        ui: default: from the page's URL.

    Returns:
        The states seen, in order (the last is ``state``).

    Raises:
        AssertionError: the run reached another final state (e.g. Failed), or timed out;
            the message holds the states seen.
    """
    ui = ui or ui_of(page)
    if flow_run_id is None:
        match = re.search(r"/runs/flow-run/([0-9a-f-]{36})", page.url)
        flow_run_id = match.group(1) if match else open_run_from_toast(page)
    url = run_page_url(ui_url, flow_run_id, ui)
    if not page.url.startswith(url):
        page.goto(url)
    badge = state_badge(page, ui)
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    last_change = time.monotonic()
    while True:
        current = ""
        with contextlib.suppress(Exception):
            current = badge.inner_text(timeout=2_000).strip()
        if current and (not seen or seen[-1] != current):
            seen.append(current)
            last_change = time.monotonic()
        if current == state:
            return seen
        if current in FINAL_STATES and current != state:
            raise AssertionError(
                f"flow run {flow_run_id} ended {current!r}, expected {state!r}; states {seen}"
            )
        if time.monotonic() > deadline:
            raise AssertionError(
                f"flow run {flow_run_id} not {state!r} after {timeout:.0f} s; states {seen}"
            )
        if time.monotonic() - last_change > reload_every_s:
            page.reload()
            last_change = time.monotonic()
        page.wait_for_timeout(300)


@dataclass
class ImageInfo:
    """An ``<img>`` of a rendered artifact, as the browser loaded it."""

    src: str
    natural_width: int
    natural_height: int
    complete: bool
    alt: str

    def __repr__(self) -> str:
        src = self.src if len(self.src) <= 60 else self.src[:57] + "..."
        return f"ImageInfo({src!r}, {self.natural_width}x{self.natural_height}, alt={self.alt!r})"


@dataclass
class ArtifactView:
    """An artifact as its page in the UI rendered it."""

    id: str
    key: str | None
    type: str
    url: str
    images: list[ImageInfo]
    text: str
    screenshot: Path | None = None


def _artifact_container(page: Page, ui: UI) -> Locator:
    if ui == "v1":
        return page.locator(".p-layout-well__content section.artifact-data-view").first
    return page.locator("[role=tabpanel][id$='-content-Artifact']").first


def open_run_artifacts_tab(
    page: Page, ui_url: str, flow_run_id: str, *, ui: UI | None = None
) -> Locator:
    """Open the run page's "Artifacts" tab; return the locator of the artifact cards' links.

    Selectors: tab v1 ``li.p-tab`` "Artifacts", v2 ``get_by_role("tab", name="Artifacts")``
    (both set ``?tab=Artifacts``); cards v1 ``.flow-run-artifacts a[href*='/artifacts/']``,
    v2 ``[data-testid=flow-run-artifacts-grid] a``. v1 cards link to
    ``/artifacts/artifact/<id>``; v2 cards of *keyed* artifacts link to the key's history
    page ``/v2/artifacts/key/<key>`` (all runs' versions), unkeyed ones to
    ``/v2/artifacts/artifact/<id>``.
    """
    ui = ui or ui_of(page)
    url = run_page_url(ui_url, flow_run_id, ui)
    if not page.url.startswith(url):
        page.goto(url)
    if ui == "v1":
        page.locator("li.p-tab").filter(has_text=_exact_re("Artifacts")).click()
        cards = page.locator(".flow-run-artifacts a[href*='/artifacts/']")
    else:
        page.get_by_role("tab", name="Artifacts", exact=True).click()
        cards = page.get_by_test_id("flow-run-artifacts-grid").locator("a")
    page.wait_for_url(re.compile(r"[?&]tab=Artifacts"))
    return cards


_IMAGES_JS = """async (el, timeoutMs) => {
    const imgs = Array.from(el.querySelectorAll('img'));
    for (const i of imgs) i.scrollIntoView({block: 'center'});  // lazy images load in view
    const loaded = Promise.all(imgs.map(i => i.complete ? null : new Promise(r => {
        i.addEventListener('load', r, {once: true});
        i.addEventListener('error', r, {once: true});
    })));
    await Promise.race([loaded, new Promise(r => setTimeout(r, timeoutMs))]);
    return {
        connected: el.isConnected,
        text: el.innerText,
        images: imgs.map(i => ({src: i.currentSrc || i.src, w: i.naturalWidth,
                                h: i.naturalHeight, complete: i.complete, alt: i.alt || ''})),
    };
}"""


def wait_until_stable(
    page: Page, locator: Locator, *, quiet_s: float = 0.8, timeout_s: float = 15.0
) -> None:
    """Wait until ``locator`` is visible and neither its HTML nor the page URL changed for
    ``quiet_s`` seconds.

    Both UIs render in steps: v2 re-renders an artifact page once more when it adds
    ``?tab=Artifact`` to the URL, and markdown is rendered after the container appears, so
    "visible" alone can mean "no images yet" or "about to be replaced".
    """
    locator.wait_for(state="visible", timeout=timeout_s * 1000)
    deadline = time.monotonic() + timeout_s
    last: tuple[str, int] | None = None
    since = time.monotonic()
    while time.monotonic() < deadline:
        try:
            sig = (page.url, len(locator.inner_html(timeout=2_000)))
        except PlaywrightTimeoutError:
            sig = (page.url, -1)
        if sig != last:
            last, since = sig, time.monotonic()
        elif time.monotonic() - since >= quiet_s and sig[1] >= 0:
            return
        page.wait_for_timeout(150)


def _rendered_images(
    page: Page, container: Locator, image_timeout_s: float, attempts: int = 3
) -> dict[str, Any]:
    """``{"text": ..., "images": [{src, w, h, complete, alt}]}`` of ``container``, once its
    images have loaded (or failed)."""
    for attempt in range(attempts):
        wait_until_stable(page, container)
        try:
            result: dict[str, Any] = container.evaluate(_IMAGES_JS, image_timeout_s * 1000)
        except PlaywrightError as exc:  # detached / navigated while evaluating
            if attempt == attempts - 1:
                raise
            print(f"prefect_ui: retrying image check after: {exc}".splitlines()[0])
            continue
        if result["connected"]:
            return result
    raise AssertionError(f"artifact content kept re-rendering: {page.url}")


def open_artifacts_and_check_images(
    page: Page,
    ui_url: str,
    flow_run_id: str,
    *,
    types: Iterable[str] = ("markdown", "image", "table"),
    screenshot_dir: Path | str | None = None,
    ui: UI | None = None,
    image_timeout_s: float = 15.0,
) -> list[ArtifactView]:
    """Open the run's Artifacts tab, then each artifact's page, and inspect what rendered.

    The artifacts are listed through the API (``POST /api/artifacts/filter`` by flow run),
    checked against the cards shown in the tab (same count), then each one of ``types`` is
    opened at ``/artifacts/artifact/<id>`` (the first by clicking its card when the card links
    there, the others by URL; v2 cards of keyed artifacts lead to the key's history instead,
    so those are opened by URL). On each page, every
    ``<img>`` inside the rendered artifact (v1 ``section.artifact-data-view``, v2 the
    "Artifact" tab panel) is scrolled into view and awaited, then its ``src`` and
    ``naturalWidth`` (0 = broken) are read in the page.

    Args:
        page: any page of the UI.
        ui_url: ``server.ui_url``.
        flow_run_id: the run.
        types: artifact types to open ("markdown", "image", "table", "progress", "link").
        screenshot_dir: if given, full-page screenshots ``artifacts-tab-<ui>.png`` and
            ``artifact-<ui>-<key or id>.png`` are saved there.
        ui: default: from the page's URL.
        image_timeout_s: seconds to wait for the images to finish loading.

    Returns:
        One :class:`ArtifactView` per opened artifact, oldest first.
    """
    ui = ui or ui_of(page)
    wanted = set(types)
    shots = Path(screenshot_dir) if screenshot_dir is not None else None
    if shots:
        shots.mkdir(parents=True, exist_ok=True)

    artifacts = sorted(
        api_json(
            page, ui_url, "POST", "/artifacts/filter",
            {"artifacts": {"flow_run_id": {"any_": [flow_run_id]}}},
        ),
        key=lambda a: str(a["created"]),
    )  # fmt: skip
    cards = open_run_artifacts_tab(page, ui_url, flow_run_id, ui=ui)
    deadline = time.monotonic() + 15
    while cards.count() < len(artifacts) and time.monotonic() < deadline:
        page.wait_for_timeout(300)
    if cards.count() != len(artifacts):
        raise AssertionError(
            f"Artifacts tab shows {cards.count()} cards, the API has {len(artifacts)}"
        )
    if shots:
        page.screenshot(path=str(shots / f"artifacts-tab-{ui}.png"), full_page=True)

    views: list[ArtifactView] = []
    for art in artifacts:
        if art["type"] not in wanted:
            continue
        path = ui_path(ui, f"/artifacts/artifact/{art['id']}")
        card = cards.and_(page.locator(f"a[href='{path}']"))
        if not views and card.count():
            # The first one as a user would: click its card in the tab (v1 cards and v2
            # cards of unkeyed artifacts link to the artifact's page). The others by URL,
            # which saves reloading the run page (2-4 s each).
            card.first.click()
            page.wait_for_url(re.compile(re.escape(path)))
        else:
            page.goto(ui_url.rstrip("/") + path)
        container = _artifact_container(page, ui)
        rendered = _rendered_images(page, container, image_timeout_s)
        shot = None
        if shots:
            shot = shots / f"artifact-{ui}-{art.get('key') or art['id']}.png"
            page.screenshot(path=str(shot), full_page=True)
        views.append(
            ArtifactView(
                id=art["id"],
                key=art.get("key"),
                type=art["type"],
                url=page.url,
                images=[
                    ImageInfo(r["src"], r["w"], r["h"], r["complete"], r["alt"])
                    for r in rendered["images"]
                ],
                text=str(rendered["text"]),
                screenshot=shot,
            )
        )
    return views
