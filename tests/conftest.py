"""Shared fixtures of the test suite (keep small)."""

from __future__ import annotations

import io
import os
import tempfile
from collections.abc import Callable, Iterator
from typing import Any

# Before Prefect is imported anywhere: no telemetry, and a private Prefect home.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="seedream-prefect-home-"))

import httpx
import pytest
from PIL import Image

from prefect_seedream.simulator import RunningSimulator, SimulatorConfig, running_simulator

TEST_API_KEY = "sk-test-key"


@pytest.fixture(scope="session")
def png_bytes() -> bytes:
    """A real 64x48 PNG image (a few hundred bytes)."""
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 30, 90)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="session")
def prefect_api() -> Iterator[None]:
    """A real Prefect API (a subprocess server on a temporary SQLite database)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=90):
        yield


@pytest.fixture
def simulator() -> Iterator[RunningSimulator]:
    """A fresh simulator on a free loopback port, with short latency."""
    with running_simulator(SimulatorConfig(latency_seconds=0.3, jitter_seconds=0.05)) as sim:
        yield sim


@pytest.fixture
def seedream_env(simulator: RunningSimulator, monkeypatch: pytest.MonkeyPatch) -> RunningSimulator:
    """SEEDREAM_API_KEY / SEEDREAM_BASE_URL pointing at the simulator."""
    monkeypatch.setenv("SEEDREAM_API_KEY", TEST_API_KEY)
    monkeypatch.setenv("SEEDREAM_BASE_URL", simulator.base_url)
    return simulator


@pytest.fixture
def silent_list_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[RunningSimulator]:
    """Like ``seedream_env``, with a task list that does not show prompts (the real list's
    fields are not documented): a lost answer's task cannot be told apart there, so the row
    stays ``outcome_unknown``."""
    config = SimulatorConfig(latency_seconds=0.3, jitter_seconds=0.05, task_list_echoes_prompt=False)
    with running_simulator(config) as sim:
        monkeypatch.setenv("SEEDREAM_API_KEY", TEST_API_KEY)
        monkeypatch.setenv("SEEDREAM_BASE_URL", sim.base_url)
        yield sim


@pytest.fixture
def make_sim(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., RunningSimulator]]:
    """Start simulators with the given settings (short latency, no jitter); the environment
    points at the last one started, with ``key``."""
    running: list[Any] = []

    def make(key: str = TEST_API_KEY, **config: Any) -> RunningSimulator:
        config.setdefault("latency_seconds", 0.3)
        config.setdefault("jitter_seconds", 0.0)
        context = running_simulator(SimulatorConfig(**config))
        sim = context.__enter__()
        running.append(context)
        monkeypatch.setenv("SEEDREAM_API_KEY", key)
        monkeypatch.setenv("SEEDREAM_BASE_URL", sim.base_url)
        return sim

    yield make
    for context in reversed(running):
        context.__exit__(None, None, None)


@pytest.fixture
def s3_endpoint(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """moto's S3-compatible server on loopback, with test credentials; yields its URL."""
    from moto.server import ThreadedMotoServer

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    # moto keeps its buckets in process-wide state that outlives a server: start each test empty.
    httpx.post(f"{url}/moto-api/reset").raise_for_status()
    try:
        yield url
    finally:
        server.stop()
