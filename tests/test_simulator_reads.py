"""The simulator's batch status read (``POST /v1/tasks/batch``) and balance (``GET /v1/credits``),
over HTTP: what they answer, whose tasks they show, their switches and their counters."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from prefect_seedream.simulator import RunningSimulator, SimulatorConfig, running_simulator
from tests.sim_http import (
    FAST,
    KEY,
    OTHER_KEY,
    SUBMIT,
    body,
    client,
    make_client,
    sim,
    wait_terminal,
)

__all__ = ["client", "sim"]  # fixtures used by the tests below

BATCH = "/v1/tasks/batch"
CREDITS = "/v1/credits"


@pytest.fixture(scope="module")
def shared_sim() -> Iterator[RunningSimulator]:
    config = SimulatorConfig(**FAST, api_keys={KEY, OTHER_KEY}, account_credits=100.0)
    with running_simulator(config) as running:
        yield running


def submit(client: httpx.Client, prompt: str = "a lighthouse at dusk") -> str:
    response = client.post(SUBMIT, json=body(prompt=prompt))
    assert response.status_code == 200, response.text
    task_id: str = response.json()["id"]
    return task_id


def batch(client: httpx.Client, ids: list[Any]) -> httpx.Response:
    return client.post(BATCH, json={"task_ids": ids})


def reads(sim: RunningSimulator) -> dict[str, int]:
    stats = sim.stats()
    names = ("polls", "batch_requests", "batch_task_reads", "get_task_requests", "status_requests")
    return {name: stats[name] for name in names}


def test_batch_answers_own_tasks_as_get_does(sim: RunningSimulator, client: httpx.Client) -> None:
    mine = [submit(client, f"mine {i}") for i in range(3)]
    with make_client(sim, OTHER_KEY) as other:
        theirs = submit(other, "theirs")
    for task_id in mine:
        wait_terminal(client, task_id)
    before = reads(sim)
    answer = batch(client, [*mine, theirs, "task-unified-1-unknown", "not-a-task-id", mine[0]])
    assert answer.status_code == 200
    data = answer.json()["data"]
    assert [task["id"] for task in data] == mine  # others', unknown, malformed ids left out; once each
    single = client.get(f"/v1/tasks/{mine[1]}").json()
    assert data[1] == single  # the same payload as GET /v1/tasks/{id}
    after = reads(sim)
    assert after["batch_requests"] - before["batch_requests"] == 1
    assert after["batch_task_reads"] - before["batch_task_reads"] == 3
    assert after["get_task_requests"] - before["get_task_requests"] == 1
    assert after["status_requests"] - before["status_requests"] == 2  # one POST, one GET
    assert after["polls"] - before["polls"] == 4  # task reads: 3 in the batch, 1 alone


def test_batch_shows_running_tasks(sim: RunningSimulator, client: httpx.Client) -> None:
    slow = submit(client, "slow [[sim:latency=5]]")
    data = batch(client, [slow]).json()["data"]
    assert data[0]["status"] in ("pending", "processing") and "results" not in data[0]


def test_batch_refuses_more_than_50_ids_and_bad_bodies(client: httpx.Client) -> None:
    too_many = batch(client, [f"task-unified-1-{i:08d}" for i in range(51)])
    assert too_many.status_code == 400
    assert too_many.json()["error"]["param"] == "task_ids"
    assert batch(client, [f"task-unified-1-{i:08d}" for i in range(50)]).json() == {"data": []}
    for bad in ({"task_ids": "task-unified-1-x"}, {"ids": []}, {"task_ids": [1, 2]}, []):
        assert client.post(BATCH, json=bad).status_code == 400, bad
    assert client.post(BATCH, content=b"{not json").status_code == 400
    assert batch(client, []).json() == {"data": []}


def test_batch_and_credits_need_a_key(sim: RunningSimulator) -> None:
    with httpx.Client(base_url=sim.base_url) as anonymous:
        assert anonymous.post(BATCH, json={"task_ids": []}).status_code == 401
        assert anonymous.get(CREDITS).status_code == 401
    with make_client(sim, "sk-not-a-key") as wrong:
        assert wrong.post(BATCH, json={"task_ids": []}).status_code == 401
        assert wrong.get(CREDITS).status_code == 401


def test_a_pending_poll_marker_leaves_the_task_to_its_get(client: httpx.Client) -> None:
    flaky = submit(client, "flaky [[sim:poll_status=503*1]] [[sim:retry_after=0]]")
    plain = submit(client, "plain")
    assert [task["id"] for task in batch(client, [flaky, plain]).json()["data"]] == [plain]
    assert client.get(f"/v1/tasks/{flaky}").status_code == 503  # the marker fires on the GET
    assert [task["id"] for task in batch(client, [flaky, plain]).json()["data"]] == [flaky, plain]


def test_credits_follow_the_account(sim: RunningSimulator, client: httpx.Client) -> None:
    sim.reset()
    sim.account(set_credits=100)
    start = client.get(CREDITS).json()
    assert start == {
        "user": {"remaining_credits": 100.0, "used_credits": 0.0},
        "token": {"remaining_credits": None, "used_credits": 0.0, "unlimited_credits": True},
    }
    task_id = submit(client, "one image")
    wait_terminal(client, task_id)
    spent = client.get(CREDITS).json()
    charged = sim.stats()["credits_charged"]
    assert charged > 0
    assert spent["user"] == {"remaining_credits": 100.0 - charged, "used_credits": charged}
    assert spent["token"]["used_credits"] == charged
    with make_client(sim, OTHER_KEY) as other:
        theirs = other.get(CREDITS).json()
    assert theirs["user"]["remaining_credits"] == 100.0 - charged  # the account is shared
    assert theirs["token"]["used_credits"] == 0.0  # the key's own use is not
    assert sim.stats()["credits_requests"] == 3


def test_credits_of_a_key_quota_and_an_unlimited_account() -> None:
    config = SimulatorConfig(**FAST, key_quota_credits=10.0)
    with running_simulator(config) as limited, make_client(limited) as client:
        wait_terminal(client, submit(client))
        answer = client.get(CREDITS).json()
    charged = answer["token"]["used_credits"]
    assert charged > 0 and answer["user"]["remaining_credits"] is None  # no account balance
    assert answer["token"] == {
        "remaining_credits": pytest.approx(10.0 - charged),
        "used_credits": charged,
        "unlimited_credits": False,
    }


@pytest.mark.parametrize(
    ("mode", "status"), [("missing", 404), ("not_allowed", 405), ("failing", 500)]
)
def test_endpoint_switches(mode: str, status: int) -> None:
    config = SimulatorConfig(**FAST, batch_endpoint=mode, credits_endpoint=mode)
    with running_simulator(config) as switched, make_client(switched) as client:
        task_id = submit(client)
        refused = batch(client, [task_id])
        credits = client.get(CREDITS)
        single = client.get(f"/v1/tasks/{task_id}")
        stats = switched.stats()
    for answer in (refused, credits):
        assert answer.status_code == status
        assert answer.json()["error"]["code"] == status
    assert single.status_code == 200  # GET /v1/tasks/{id} is untouched
    assert stats["batch_requests"] == 1 and stats["credits_requests"] == 1
    assert stats["batch_task_reads"] == 0 and stats["status_requests"] == 2
