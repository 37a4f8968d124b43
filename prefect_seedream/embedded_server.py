"""The command line's own temporary Prefect server, started at once, in its own process.

With no ``PREFECT_API_URL``, Prefect starts a temporary server for a flow the first time the
flow calls its API: the flow's process first imports the whole server package to do so
(seconds of CPU), then waits seconds more for the server process to boot. ``prefect-seedream
run`` instead starts the very same server (``uvicorn prefect.server.api.server:create_app``,
as Prefect's ``SubprocessASGIServer`` does) as the first thing it does, without importing any
of Prefect, and points ``PREFECT_API_URL`` at it: the server boots on one core while the run
loads its own code on the other, and the run's process never loads the server's code.

A flow or task of the plugin called from Python with no ``PREFECT_API_URL`` (a script, a
notebook) gets the same server, started by :func:`ensure_temporary_server` when the call
begins, instead of the temporary server Prefect would start: the same app on the same database
(``PREFECT_HOME``), kept for the rest of the process and stopped at its exit, as Prefect does,
but without loading the server's code into the calling process first (about 1.5 s of CPU, and
half a second more when the interpreter exits).

This module imports no Prefect at import time (it must run before Prefect is imported).
"""

from __future__ import annotations

import atexit
import importlib
import importlib.util
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import TracebackType

#: Settings of the embedded server: it serves one run. The task-run recorder's and the event
#: persister's batches are raised (measured in benchmarks/: they keep up with any burst).
EMBEDDED_SERVER_SETTINGS = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_BATCH_SIZE": "100",
    "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_READ_BATCH_SIZE": "100",
    "PREFECT_SERVER_SERVICES_EVENT_PERSISTER_BATCH_SIZE": "200",
    "PREFECT_SERVER_SERVICES_EVENT_PERSISTER_READ_BATCH_SIZE": "100",
}
STARTUP_TIMEOUT_SECONDS = 120.0
#: What Prefect loads at the first flow call of a process (the flow engine, and with it
#: ``prefect.main``; FastAPI's encoder of the parameters; the visualization check): loaded while
#: the server boots instead of after (see :meth:`EmbeddedServer.wait_ready`).
FIRST_CALL_MODULES = ("prefect.flow_engine", "fastapi.encoders", "prefect.utilities.visualization")


def preload_first_call() -> None:
    """Import :data:`FIRST_CALL_MODULES` once Prefect is loaded (a server boots meanwhile)."""
    if "prefect" not in sys.modules:
        return
    for name in FIRST_CALL_MODULES:
        try:
            importlib.import_module(name)
        except Exception:  # an optional part missing: Prefect loads (or skips) it itself later
            pass


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class EmbeddedServer:
    """A temporary Prefect API server on a free loopback port, for one command.

    Entering the ``with`` block starts the server and sets ``PREFECT_API_URL`` (call
    :meth:`wait_ready` before using it); leaving it stops the server and unsets the variable.
    """

    def __init__(self, *, export_url: bool = True) -> None:
        self.port = _free_port()
        self.api_url = f"http://127.0.0.1:{self.port}/api"
        self.process: subprocess.Popen[bytes] | None = None
        #: Set (and at the end remove) ``PREFECT_API_URL`` in this process's environment.
        self.export_url = export_url

    def start(self) -> None:
        """Start the server process (returns at once; see :meth:`wait_ready`)."""
        spec = importlib.util.find_spec("prefect")
        assert spec is not None and spec.origin is not None, "prefect is not installed"
        app_dir = str(Path(spec.origin).resolve().parent.parent)
        env = {**os.environ, **EMBEDDED_SERVER_SETTINGS}
        env.update(PREFECT_UI_ENABLED="0", PREFECT__SERVER_EPHEMERAL="1", PREFECT__SERVER_FINAL="1")
        env.pop("PREFECT_API_URL", None)
        self.process = subprocess.Popen(
            [
                sys.executable, "-m", "uvicorn", "--app-dir", app_dir, "--factory",
                "prefect.server.api.server:create_app", "--host", "127.0.0.1",
                "--port", str(self.port), "--log-level", "error", "--lifespan", "on",
            ],
            env=env,
        )
        if self.export_url:
            os.environ["PREFECT_API_URL"] = self.api_url

    def wait_ready(self, timeout: float = STARTUP_TIMEOUT_SECONDS) -> None:
        """Block until the server answers its health check.

        Raises:
            RuntimeError: the server exited or did not answer in time.
        """
        import httpx  # here, not above: the server starts before any library is loaded

        assert self.process is not None
        if self.process.poll() is None:
            preload_first_call()
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=2.0) as client:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(
                        f"the temporary Prefect server exited with code {self.process.returncode}"
                    )
                try:
                    if client.get(f"{self.api_url}/health").status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                time.sleep(0.05)
        raise RuntimeError(f"the temporary Prefect server did not start within {timeout:g} s")

    def stop(self) -> None:
        """Stop the server and wait for it (it flushes the events it still holds)."""
        if self.export_url:
            os.environ.pop("PREFECT_API_URL", None)
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> EmbeddedServer:
        self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop()


# -- a flow or task called from Python without PREFECT_API_URL ---------------------------------

_temporary: EmbeddedServer | None = None
_temporary_lock = threading.Lock()
logger = logging.getLogger("prefect")  # where Prefect says it starts its temporary server


def needs_temporary_server() -> bool:
    """True when a call of the plugin's flows or tasks would make Prefect start a temporary
    server: no API URL in the settings in force, outside any flow or task run, and no
    temporary server of Prefect's or the plugin's already running in this process.

    A block of ``temporary_settings`` (Prefect's test harness, for one) is left to Prefect.
    """
    if _temporary is not None or os.environ.get("PREFECT_API_URL"):
        return False
    if "prefect.context" not in sys.modules:
        return False
    import prefect.context as context

    if context.FlowRunContext.get() is not None or context.TaskRunContext.get() is not None:
        return False
    settings_context = context.SettingsContext.get()
    if settings_context is None or settings_context is not getattr(
        context, "GLOBAL_SETTINGS_CONTEXT", None
    ):
        return False
    if settings_context.settings.api.url:
        return False
    server_module = sys.modules.get("prefect.server.api.server")
    if server_module is not None and any(
        getattr(server, "running", False)
        for server in getattr(server_module.SubprocessASGIServer, "_instances", {}).values()
    ):
        return False
    return True


def ensure_temporary_server() -> None:
    """Start the plugin's temporary server for this process, if a call needs one (see
    :func:`needs_temporary_server`), and point Prefect's settings at it.

    The server is the one ``prefect-seedream run`` starts (:class:`EmbeddedServer`): Prefect's
    API app on the database of ``PREFECT_HOME``, as Prefect's own temporary server. It serves
    every later call of the process (the plugin's, Prefect's) and stops at the process's exit,
    after Prefect has sent the log lines and events it still holds. ``PREFECT_API_URL`` is set
    in Prefect's settings, not in the environment: processes started later do not inherit it.

    Raises:
        RuntimeError: the server exited or did not answer in time.
    """
    global _temporary
    if not needs_temporary_server():
        return
    with _temporary_lock:
        if not needs_temporary_server():
            return
        server = EmbeddedServer(export_url=False)
        server.start()
        try:
            preload_first_call()  # while the server boots; sets up Prefect's logging too
            logger.info(
                "Starting temporary server on http://127.0.0.1:%s (prefect-seedream)\nSee "
                "https://www.prefect.io/docs/v3/concepts/server#how-to-guides for more "
                "information on running a dedicated Prefect server.", server.port,
            )
            server.wait_ready()
        except BaseException:
            server.stop()
            raise
        _point_prefect_at(server.api_url)
        _temporary = server
        atexit.register(_stop_temporary)


def _point_prefect_at(api_url: str) -> None:
    """Make ``api_url`` the API of Prefect's process-wide settings."""
    import prefect.context as context
    from prefect.settings import PREFECT_API_URL

    current = context.GLOBAL_SETTINGS_CONTEXT
    context.GLOBAL_SETTINGS_CONTEXT = context.SettingsContext(
        profile=current.profile,
        settings=current.settings.copy_with_update(updates={PREFECT_API_URL: api_url}),
    )


def _stop_temporary() -> None:
    """At exit: send what Prefect still holds to the server, then stop it."""
    global _temporary
    server, _temporary = _temporary, None
    if server is None:
        return
    try:
        from prefect.events.worker import EventsWorker
        from prefect.logging.handlers import APILogWorker

        for worker in (APILogWorker, EventsWorker):
            try:
                worker.drain_all(timeout=10)
            except Exception:  # nothing started, or already stopped
                pass
    finally:
        logger.info("Stopping temporary server on http://127.0.0.1:%s", server.port)
        server.stop()
