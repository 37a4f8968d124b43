"""Start-up: what importing the plugin loads, and the temporary server of a flow called from
Python with no ``PREFECT_API_URL`` (see ``prefect_seedream/embedded_server.py`` and
``benchmarks/startup.py``)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from prefect_seedream.simulator import RunningSimulator
from tests.conftest import TEST_API_KEY


def _python(code: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout, check=False,
        env=env,
    )


def test_importing_the_flows_and_tasks_loads_neither_pillow_nor_prefect_main() -> None:
    """Pillow loads where an image is decoded; ``prefect.main`` (0.1 s) at the first flow call."""
    code = (
        "import sys, prefect, prefect_seedream.flows, prefect_seedream.tasks; "
        "loaded = [m for m in ('PIL', 'prefect.main', 'prefect.server.api.server') if m in sys.modules]; "
        "assert not loaded, loaded"
    )
    result = _python(code)
    assert result.returncode == 0, result.stderr


def test_the_command_line_starts_its_server_before_loading_httpx_or_prefect() -> None:
    code = (
        "import sys, prefect_seedream.cli; "
        "loaded = [m for m in ('prefect', 'httpx', 'pydantic') if m in sys.modules]; "
        "assert not loaded, loaded"
    )
    result = _python(code)
    assert result.returncode == 0, result.stderr


def test_a_flow_called_without_an_api_url_runs_on_the_plugins_temporary_server(
    simulator: RunningSimulator, tmp_path: Path
) -> None:
    dataset = tmp_path / "rows.csv"
    dataset.write_text("id,prompt\nfox,A red fox\nowl,An owl at night\n", encoding="utf-8")
    env = {name: value for name, value in os.environ.items() if not name.startswith("PREFECT_")}
    env.update(
        PREFECT_HOME=str(tmp_path / "home"), PREFECT_SERVER_ANALYTICS_ENABLED="false",
        SEEDREAM_API_KEY=TEST_API_KEY, SEEDREAM_BASE_URL=simulator.base_url,
    )
    code = f"""
import sys
from prefect.settings import PREFECT_API_URL
from prefect_seedream import generate_dataset
state = generate_dataset({str(dataset)!r}, output={str(tmp_path / "out")!r}, poll_interval=0.2,
                         return_state=True)
print("STATE", state.type.value, state.message)
print("SERVER CODE LOADED", "prefect.server.api.server" in sys.modules)
print("API", PREFECT_API_URL.value())
again = generate_dataset({str(dataset)!r}, output={str(tmp_path / "out")!r}, return_state=True)
print("AGAIN", again.type.value, PREFECT_API_URL.value())
"""
    result = _python(code, env=env, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert "STATE COMPLETED 2 of 2 rows succeeded" in out, out + result.stderr[-3000:]
    assert "SERVER CODE LOADED False" in out  # the server's code stays in the server's process
    api = next(line for line in out.splitlines() if line.startswith("API ")).split()[1]
    assert api.startswith("http://127.0.0.1:") and api.endswith("/api")
    assert f"AGAIN COMPLETED {api}" in out  # one server for the whole process
    assert "Starting temporary server on" in result.stderr
