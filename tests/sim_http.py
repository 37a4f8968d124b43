"""Helpers of the simulator's HTTP tests: a client with a key, a submit body, and the
`sim` / `client` fixtures (each test module defines its own module-scoped `shared_sim`)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from prefect_seedream.simulator import RunningSimulator

KEY = "sk-test-alpha"
OTHER_KEY = "sk-test-beta"
M40 = "doubao-seedream-4.0"
M45 = "doubao-seedream-4.5"
SUBMIT = "/v1/images/generations"
FAST = {"latency_seconds": 0.1, "jitter_seconds": 0.0}


def make_client(
    sim: RunningSimulator, key: str = KEY, timeout: httpx.Timeout | float = 10
) -> httpx.Client:
    """An HTTP client of the simulator that sends ``key``."""
    headers = {"Authorization": f"Bearer {key}"}
    return httpx.Client(base_url=sim.base_url, headers=headers, timeout=timeout)


def body(prompt: str = "a lighthouse at dusk", model: str = M45, **fields: Any) -> dict[str, Any]:
    """A submit body."""
    return {"model": model, "prompt": prompt, **fields}


def wait_terminal(client: httpx.Client, task_id: str, timeout: float = 8.0) -> dict[str, Any]:
    """Poll a task until it is completed, failed or cancelled (an error answer is polled again)."""
    deadline = time.monotonic() + timeout
    while True:
        response = client.get(f"/v1/tasks/{task_id}")
        if response.status_code == 200:
            task: dict[str, Any] = response.json()
            if task["status"] in ("completed", "failed", "cancelled"):
                return task
        assert time.monotonic() < deadline, f"task {task_id} did not finish: {response.text}"
        time.sleep(0.02)


def wait_until(condition: Callable[[], Any], timeout: float = 5.0, what: str = "condition") -> None:
    """Wait until ``condition()`` is true."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


@pytest.fixture
def sim(shared_sim: RunningSimulator) -> RunningSimulator:
    """The module's simulator, reset (no task, no counter)."""
    shared_sim.reset()
    return shared_sim


@pytest.fixture
def client(sim: RunningSimulator) -> Iterator[httpx.Client]:
    """A client of the module's simulator."""
    with make_client(sim) as c:
        yield c
