"""The command line's own temporary Prefect server, started at once, in its own process.

With no ``PREFECT_API_URL``, Prefect starts a temporary server for a flow the first time the
flow calls its API: the flow's process first imports the whole server package to do so
(seconds of CPU), then waits seconds more for the server process to boot. ``prefect-seedream
run`` instead starts the very same server (``uvicorn prefect.server.api.server:create_app``,
as Prefect's ``SubprocessASGIServer`` does) as the first thing it does, without importing any
of Prefect, and points ``PREFECT_API_URL`` at it: the server boots on one core while the run
loads its own code on the other, and the run's process never loads the server's code.

This module imports no Prefect (it must run before Prefect is imported).
"""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
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


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class EmbeddedServer:
    """A temporary Prefect API server on a free loopback port, for one command.

    Entering the ``with`` block starts the server and sets ``PREFECT_API_URL`` (call
    :meth:`wait_ready` before using it); leaving it stops the server and unsets the variable.
    """

    def __init__(self) -> None:
        self.port = _free_port()
        self.api_url = f"http://127.0.0.1:{self.port}/api"
        self.process: subprocess.Popen[bytes] | None = None

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
        os.environ["PREFECT_API_URL"] = self.api_url

    def wait_ready(self, timeout: float = STARTUP_TIMEOUT_SECONDS) -> None:
        """Block until the server answers its health check.

        Raises:
            RuntimeError: the server exited or did not answer in time.
        """
        import httpx  # here, not above: the server starts before any library is loaded

        assert self.process is not None
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
