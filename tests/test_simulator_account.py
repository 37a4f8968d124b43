"""Tests of the simulator's section-5 behaviour over real loopback HTTP: idempotency, credits
and quotas, account-wide refusals, Retry-After headers, the task list, and the cancelled and
unknown statuses."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from prefect_seedream.simulator import (
    RunningSimulator,
    SimulatorConfig,
    key_id_for,
    running_simulator,
)
from prefect_seedream.simulator.server import build_parser, config_from_args
from tests.sim_http import (
    FAST,
    KEY,
    M40,
    M45,
    OTHER_KEY,
    SUBMIT,
    body,
    client,
    make_client,
    sim,
    wait_terminal,
)

__all__ = ["client", "sim"]  # fixtures, shared with the other simulator tests

LIST = "/v1/tasks"
SLOW = "[[sim:latency=30]]"


# -- fixtures and helpers ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def shared_sim() -> Iterator[RunningSimulator]:
    with running_simulator(SimulatorConfig(**FAST)) as sim:
        yield sim


def submit_ok(client: httpx.Client, idempotency_key: str | None = None, **fields: Any) -> dict:
    headers = {"Idempotency-Key": idempotency_key} if idempotency_key is not None else {}
    response = client.post(SUBMIT, json=body(**fields), headers=headers)
    assert response.status_code == 200, response.text
    assert "idempotency-replayed" not in response.headers
    payload: dict[str, Any] = response.json()
    return payload


def post_with_key(client: httpx.Client, idempotency_key: str, **fields: Any) -> httpx.Response:
    return client.post(SUBMIT, json=body(**fields), headers={"Idempotency-Key": idempotency_key})


def poll(client: httpx.Client, task_id: str) -> dict[str, Any]:
    response = client.get(f"/v1/tasks/{task_id}")
    assert response.status_code == 200, response.text
    task: dict[str, Any] = response.json()
    return task


def error_of(
    response: httpx.Response, status: int, error_type: str, code: int | str | None = None
) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert error["type"] == error_type
    assert error["code"] == (code if code is not None else status)
    assert isinstance(error["message"], str) and error["message"]
    assert response.headers["x-request-id"].startswith("req-")
    return error


def list_tasks(client: httpx.Client, **params: Any) -> dict[str, Any]:
    response = client.get(LIST, params=params)
    assert response.status_code == 200, response.text
    page: dict[str, Any] = response.json()
    return page


# -- idempotency ------------------------------------------------------------------------------


def test_replay_answers_the_original_task_and_creates_nothing() -> None:
    config = SimulatorConfig(**FAST, account_credits=10)
    with running_simulator(config) as sim, make_client(sim) as c:
        prompt = "replayed [[sim:latency=5]]"
        first = submit_ok(c, idempotency_key="row-1", prompt=prompt)
        replay = c.post(
            SUBMIT, json=body(prompt=prompt), headers={"IDEMPOTENCY-KEY": "row-1"}
        )  # the header name is case-insensitive
        assert replay.status_code == 200
        assert replay.headers["idempotency-replayed"] == "true"
        assert replay.json()["id"] == first["id"]
        assert replay.json()["status"] == "pending"
        sim.app_state.advance_time(5)
        done = post_with_key(c, "row-1", prompt=prompt)  # as a poll shows it now
        assert done.headers["idempotency-replayed"] == "true"
        assert done.json() == poll(c, first["id"])
        assert done.json()["status"] == "completed" and len(done.json()["results"]) == 1
        stats = sim.stats()
        assert stats["tasks_created"] == 1 and stats["submit_requests"] == 3
        assert stats["idempotent_replays"] == 2
        assert stats["credits_charged"] == 2.0 and stats["credits_balance"] == 8.0
        assert stats["per_key_billing"][key_id_for(KEY)] == {
            "credits_charged": 2.0,
            "idempotent_replays": 2,
            "idempotency_conflicts": 0,
            "quota_refusals": 0,
        }


def test_keys_are_scoped_per_api_key(sim: RunningSimulator, client: httpx.Client) -> None:
    mine = submit_ok(client, idempotency_key="shared", prompt="scoped")
    with make_client(sim, key=OTHER_KEY) as other:
        theirs = submit_ok(other, idempotency_key="shared", prompt="scoped")
    assert mine["id"] != theirs["id"]
    assert sim.stats()["tasks_created"] == 2 and sim.stats()["idempotent_replays"] == 0


def test_same_key_with_another_body_is_a_conflict(
    sim: RunningSimulator, client: httpx.Client
) -> None:
    submit_ok(client, idempotency_key="k-1", prompt="first body")
    response = post_with_key(client, "k-1", prompt="first body", n=2)
    assert response.status_code == 409
    assert response.json() == {
        "error": {
            "code": "idempotency_conflict",
            "message": "Idempotency-Key k-1 was already used with a different request body",
            "type": "invalid_request_error",
            "param": "Idempotency-Key",
        }
    }
    # the body is compared canonically: key order does not matter
    reordered = client.post(
        SUBMIT,
        json={"prompt": "first body", "model": M45},
        headers={"Idempotency-Key": "k-1"},
    )
    assert reordered.headers["idempotency-replayed"] == "true"
    stats = sim.stats()
    assert stats["tasks_created"] == 1
    assert stats["idempotency_conflicts"] == 1 and stats["idempotent_replays"] == 1


@pytest.mark.parametrize("value", ["", "x" * 256, "tab\there"])
def test_invalid_idempotency_keys(sim: RunningSimulator, client: httpx.Client, value: str) -> None:
    response = post_with_key(client, value)
    error = error_of(response, 400, "invalid_request_error")
    assert error["param"] == "Idempotency-Key"
    assert sim.stats()["tasks_created"] == 0
    submit_ok(client, idempotency_key="x" * 255)  # the longest accepted key


def test_a_refused_submission_stores_no_key(sim: RunningSimulator, client: httpx.Client) -> None:
    prompt = "refused first [[sim:submit_status=429*1]]"
    refused = post_with_key(client, "retry-me", prompt=prompt)
    assert refused.status_code == 429
    created = post_with_key(client, "retry-me", prompt=prompt)
    assert created.status_code == 200 and "idempotency-replayed" not in created.headers
    replay = post_with_key(client, "retry-me", prompt=prompt)
    assert replay.headers["idempotency-replayed"] == "true"
    assert replay.json()["id"] == created.json()["id"]
    invalid = post_with_key(client, "bad-body", prompt=prompt, n=99)
    assert invalid.status_code == 400
    other = post_with_key(client, "bad-body", prompt="now valid")
    assert other.status_code == 200 and "idempotency-replayed" not in other.headers
    assert sim.stats()["tasks_created"] == 2


def test_a_402_stores_no_key_and_a_top_up_lets_the_retry_through() -> None:
    with running_simulator(SimulatorConfig(**FAST, account_credits=0)) as sim:
        with make_client(sim) as c:
            refused = post_with_key(c, "paid-1", prompt="no money yet")
            error_of(refused, 402, "insufficient_quota_error", "insufficient_quota")
            sim.account(add_credits=2)
            created = post_with_key(c, "paid-1", prompt="no money yet")
            assert created.status_code == 200 and "idempotency-replayed" not in created.headers
            replay = post_with_key(c, "paid-1", prompt="no money yet")
            assert replay.json()["id"] == created.json()["id"]
        stats = sim.stats()
        assert stats["tasks_created"] == 1 and stats["quota_refusals"] == 1
        assert stats["credits_balance"] == 0.0


def test_keys_expire_after_their_ttl() -> None:
    config = SimulatorConfig(**FAST, idempotency_ttl_seconds=60)
    with running_simulator(config) as sim, make_client(sim) as c:
        first = submit_ok(c, idempotency_key="ttl", prompt="ttl")
        sim.app_state.advance_time(59)
        assert post_with_key(c, "ttl", prompt="ttl").json()["id"] == first["id"]
        sim.app_state.advance_time(2)
        second = submit_ok(c, idempotency_key="ttl", prompt="ttl")
        assert second["id"] != first["id"]
        assert sim.stats()["tasks_created"] == 2


def test_create_then_status_creates_one_task_that_the_replay_returns() -> None:
    config = SimulatorConfig(**FAST, account_credits=10)
    with running_simulator(config) as sim, make_client(sim) as c:
        prompt = "gateway fails after creation [[sim:create_then_status=502]]"
        failed = post_with_key(c, "after-create", prompt=prompt)
        error_of(failed, 502, "upstream_error")
        (task,) = sim.tasks(prompt)
        assert task["answered"] is False
        replay = post_with_key(c, "after-create", prompt=prompt)
        assert replay.status_code == 200 and replay.headers["idempotency-replayed"] == "true"
        assert replay.json()["id"] == task["id"]
        assert len(sim.tasks(prompt)) == 1
        stats = sim.stats()
        assert stats["tasks_created"] == 1 and stats["credits_charged"] == 2.0
        assert stats["submits_errored"] == 1 and stats["submits_undelivered"] == 1
        assert wait_terminal(c, task["id"])["status"] == "completed"
        # without a key, a retry creates (and pays for) a second task: the double billing
        busy = c.post(SUBMIT, json=body(prompt="again [[sim:create_then_status=503*1]]"))
        error = error_of(busy, 503, "service_unavailable_error")
        assert busy.headers["Retry-After"] == "1"
        assert error["fallback_suggestion"] == "retry after 1 seconds"
        submit_ok(c, prompt="again [[sim:create_then_status=503*1]]")
        assert sim.stats()["tasks_created"] == 3 and sim.stats()["credits_charged"] == 6.0


def test_random_create_then_500() -> None:
    config = SimulatorConfig(**FAST, fault_rates={"create_then_500": 1.0})
    with running_simulator(config) as sim, make_client(sim) as c:
        error_of(c.post(SUBMIT, json=body(prompt="random")), 500, "internal_server_error")
        assert len(sim.tasks("random")) == 1 and sim.stats()["submits_errored"] == 1


def test_a_replay_works_while_the_original_answer_is_held(sim: RunningSimulator) -> None:
    prompt = "held original [[sim:submit_hang]]"
    with (
        make_client(sim, timeout=httpx.Timeout(5, read=0.3)) as impatient,
        pytest.raises(httpx.ReadTimeout),
    ):
        post_with_key(impatient, "held", prompt=prompt)
    with make_client(sim) as c:
        replay = post_with_key(c, "held", prompt=prompt)
        assert replay.status_code == 200 and replay.headers["idempotency-replayed"] == "true"
        (task,) = sim.tasks(prompt)
        assert replay.json()["id"] == task["id"] and task["answered"] is False
    assert sim.stats()["tasks_created"] == 1


# -- credits and quotas -----------------------------------------------------------------------


def test_insufficient_quota_then_a_top_up() -> None:
    with running_simulator(SimulatorConfig(**FAST, account_credits=10)) as sim:
        with make_client(sim) as c, make_client(sim, key=OTHER_KEY) as other:
            for index in range(5):  # 2 credits each: the balance is shared by every key
                submit_ok(c if index % 2 else other, prompt=f"paid {index} {SLOW}")
            response = c.post(SUBMIT, json=body(prompt=f"one too many {SLOW}"))
            error = error_of(response, 402, "insufficient_quota_error", "insufficient_quota")
            assert error["message"] == "Insufficient credits: 0 left, this request reserves 2"
            assert error["action_url"] == "https://evolink.ai/dashboard/billing"
            assert error["request_id"] == response.headers["x-request-id"]
            assert error["request_id"].startswith("req-")
            assert sim.stats()["credits_balance"] == 0.0
            account = sim.account(add_credits=1.5)
            assert account["credits_balance"] == 1.5
            error_of(
                c.post(SUBMIT, json=body()), 402, "insufficient_quota_error", "insufficient_quota"
            )
            submit_ok(c, model=M40, prompt=f"1.5 credits fit {SLOW}")
            sim.account(set_credits=None)  # unlimited
            submit_ok(c, n=15)
        stats = sim.stats()
        assert stats["tasks_created"] == 7 and stats["quota_refusals"] == 2
        assert stats["credits_balance"] is None and stats["credits_charged"] == 10 + 1.5 + 30
        assert stats["per_key_billing"][key_id_for(KEY)]["quota_refusals"] == 2


def test_failed_and_cancelled_tasks_are_refunded() -> None:
    with (
        running_simulator(SimulatorConfig(**FAST, account_credits=6)) as sim,
        make_client(sim) as c,
    ):
        failing = submit_ok(c, prompt="fails [[sim:task_error=service_error]] [[sim:latency=5]]")
        cancelled = submit_ok(c, prompt="cancelled [[sim:cancel]] [[sim:latency=5]]")
        partial = submit_ok(c, model=M40, prompt=f"fewer images [[sim:images=0]] {SLOW}")
        assert sim.stats()["credits_balance"] == 6 - 2 - 2 - 1.5
        error_of(c.post(SUBMIT, json=body()), 402, "insufficient_quota_error", "insufficient_quota")
        sim.app_state.advance_time(5)
        assert poll(c, failing["id"])["status"] == "failed"
        assert poll(c, cancelled["id"])["usage"]["credits_used"] == 0.0
        stats = sim.stats()
        assert stats["credits_balance"] == 6 - 1.5 and stats["credits_charged"] == 1.5
        sim.app_state.advance_time(30)  # images=0: completed, 0 images, charged 0
        assert poll(c, partial["id"])["usage"]["credits_used"] == 0.0
        assert sim.stats()["credits_balance"] == 6.0
        for _ in range(3):
            submit_ok(c)
        error_of(c.post(SUBMIT, json=body()), 402, "insufficient_quota_error", "insufficient_quota")


def test_charges_follow_the_clock_in_any_order() -> None:
    with (
        running_simulator(SimulatorConfig(**FAST, account_credits=100)) as sim,
        make_client(sim) as c,
    ):
        submit_ok(c, n=3, prompt="three [[sim:images=1]] [[sim:latency=50]]")
        submit_ok(c, model=M40, n=2, prompt="two [[sim:latency=10]]")
        submit_ok(c, prompt="fails [[sim:task_error=service_error]] [[sim:latency=20]]")
        assert sim.stats()["credits_charged"] == 6 + 3 + 2
        sim.app_state.advance_time(60)  # all three settle at once
        stats = sim.stats()
        assert stats["credits_charged"] == 2 + 3 + 0
        assert stats["credits_balance"] == 95.0
        assert stats["per_key_billing"][key_id_for(KEY)]["credits_charged"] == 5.0


def test_key_quota_exhausted_and_reset() -> None:
    with (
        running_simulator(SimulatorConfig(**FAST, key_quota_credits=4)) as sim,
        make_client(sim) as c,
        make_client(sim, key=OTHER_KEY) as other,
    ):
        submit_ok(c, prompt=f"a {SLOW}")
        submit_ok(c, prompt=f"b {SLOW}")
        response = c.post(SUBMIT, json=body(prompt="c"))
        error = error_of(response, 402, "insufficient_quota_error", "key_quota_exhausted")
        assert "quota of this API key is used up" in error["message"]
        assert error["request_id"].startswith("req-")
        submit_ok(other, prompt="the other key has its own quota")
        account = sim.account(reset_quotas=True)
        assert account["per_key"][key_id_for(KEY)]["key_quota_used"] == 0.0
        submit_ok(c, prompt=f"after reset {SLOW}")
        # tasks reserved before the reset settle without counting again
        sim.app_state.advance_time(31)
        submit_ok(c, prompt="still within the quota")
        error_of(
            c.post(SUBMIT, json=body(n=2)),
            402,
            "insufficient_quota_error",
            "key_quota_exhausted",
        )


def test_key_daily_quota_with_retry_after() -> None:
    config = SimulatorConfig(**FAST, daily_quota_credits=4, quota_window_seconds=100)
    with running_simulator(config) as sim:
        with make_client(sim) as c, make_client(sim, key=OTHER_KEY) as other:
            submit_ok(c, prompt="first of the day")
            sim.app_state.advance_time(30)
            submit_ok(c, prompt="second of the day")
            response = c.post(SUBMIT, json=body(prompt="third"))
            error = error_of(response, 402, "insufficient_quota_error", "key_daily_quota_exhausted")
            retry_after = int(response.headers["Retry-After"])
            assert 69 <= retry_after <= 70  # the window started at the first submission
            assert error["fallback_suggestion"] == f"retry after {retry_after} seconds"
            submit_ok(other, prompt="another key, another window")
            sim.app_state.advance_time(retry_after)
            submit_ok(c, prompt="a new window")
            submit_ok(c, prompt="still fits")
            again = c.post(SUBMIT, json=body(prompt="over again"))
            error_of(again, 402, "insufficient_quota_error", "key_daily_quota_exhausted")
            assert 99 <= int(again.headers["Retry-After"]) <= 100
        assert sim.stats()["quota_refusals"] == 2


def test_denied_model() -> None:
    with running_simulator(SimulatorConfig(**FAST, denied_models={M40})) as sim:
        with make_client(sim) as c:
            response = c.post(SUBMIT, json=body(model=M40))
            assert response.status_code == 403
            assert response.json() == {
                "error": {
                    "code": 403,
                    "message": "Access denied for this model",
                    "type": "permission_error",
                    "param": "model",
                }
            }
            submit_ok(c, model=M45)
        assert sim.stats()["tasks_created"] == 1


@pytest.mark.parametrize(
    "code", ["insufficient_quota", "key_quota_exhausted", "key_daily_quota_exhausted"]
)
def test_quota_error_marker(sim: RunningSimulator, client: httpx.Client, code: str) -> None:
    prompt = f"x [[sim:quota_error={code}*1]] [[sim:retry_after=9]]"
    response = client.post(SUBMIT, json=body(prompt=prompt))
    error = error_of(response, 402, "insufficient_quota_error", code)
    assert error["action_url"] == "https://evolink.ai/dashboard/billing"
    if code == "key_daily_quota_exhausted":
        assert response.headers["Retry-After"] == "9"
        assert error["fallback_suggestion"] == "retry after 9 seconds"
    else:
        assert "Retry-After" not in response.headers
    submit_ok(client, prompt=prompt)
    assert sim.stats()["quota_refusals"] == 1


def test_unknown_api_key_is_still_401() -> None:
    with (
        running_simulator(SimulatorConfig(**FAST, api_keys={"good"})) as sim,
        make_client(sim, key="bad") as bad,
    ):
        error_of(bad.post(SUBMIT, json=body()), 401, "authentication_error")
        error_of(bad.get(LIST), 401, "authentication_error")


def test_account_admin_route(sim: RunningSimulator, client: httpx.Client) -> None:
    assert sim.account()["credits_balance"] is None
    assert sim.account(add_credits=5)["credits_balance"] is None  # unlimited stays unlimited
    submit_ok(client)
    account = sim.account(set_credits=3)
    assert account["credits_balance"] == 3.0 and account["credits_charged"] == 2.0
    assert account["per_key"][key_id_for(KEY)]["credits_charged"] == 2.0
    read = httpx.get(f"{sim.base_url}/_sim/account").json()
    assert (read["credits_balance"], read["credits_charged"]) == (3.0, 2.0)
    for bad in ({"add_credits": -1}, {"set_credits": "x"}, {"reset_quotas": 1}, {"nope": 1}):
        response = httpx.post(f"{sim.base_url}/_sim/account", json=bad)
        assert response.status_code == 400, bad
    sim.reset()
    assert sim.account()["credits_balance"] is None  # back to the configuration


# -- Retry-After ------------------------------------------------------------------------------


def test_retry_after_headers(sim: RunningSimulator, client: httpx.Client) -> None:
    for status in (429, 503):
        response = client.post(SUBMIT, json=body(prompt=f"x [[sim:submit_status={status}]]"))
        assert response.status_code == status and response.headers["Retry-After"] == "1"
    response = client.post(
        SUBMIT, json=body(prompt="x [[sim:submit_status=503]] [[sim:retry_after=7]]")
    )
    assert response.headers["Retry-After"] == "7"
    assert response.json()["error"]["fallback_suggestion"] == "retry after 7 seconds"
    response = client.post(SUBMIT, json=body(prompt="x [[sim:submit_status=500]]"))
    assert response.status_code == 500 and "Retry-After" not in response.headers
    task_id = submit_ok(client, prompt="x [[sim:poll_status=429*1]] [[sim:retry_after=4]]")["id"]
    polled = client.get(f"/v1/tasks/{task_id}")
    assert polled.status_code == 429 and polled.headers["Retry-After"] == "4"
    missing = client.get("/v1/tasks/task-unified-1-abcdefgh")
    assert missing.status_code == 404 and missing.headers["x-request-id"].startswith("req-")


def test_retry_after_on_concurrency_and_random_faults() -> None:
    config = SimulatorConfig(
        latency_seconds=30, jitter_seconds=0, max_concurrent_tasks_per_key=1,
        rate_limit_retry_after=12,
    )  # fmt: skip
    with running_simulator(config) as sim, make_client(sim) as c:
        submit_ok(c)
        response = c.post(SUBMIT, json=body())
        error_of(response, 429, "rate_limit_error")
        assert response.headers["Retry-After"] == "12"
    config = SimulatorConfig(**FAST, fault_rates={"submit_503": 1.0})
    with running_simulator(config) as sim, make_client(sim) as c:
        response = c.post(SUBMIT, json=body())
        assert response.status_code == 503 and response.headers["Retry-After"] == "1"


# -- the task list ----------------------------------------------------------------------------


def test_task_list_pages_newest_first(sim: RunningSimulator, client: httpx.Client) -> None:
    ids = [submit_ok(client, prompt=f"row {i} {SLOW}")["id"] for i in range(25)]
    newest_first = ids[::-1]
    first = list_tasks(client, page_size=10)
    assert (first["total"], first["page"], first["page_size"]) == (25, 1, 10)
    assert [t["id"] for t in first["data"]] == newest_first[:10]
    third = list_tasks(client, page=3, page_size=10)
    assert [t["id"] for t in third["data"]] == newest_first[20:]
    assert list_tasks(client, page=4, page_size=10)["data"] == []
    default = list_tasks(client)
    assert default["page_size"] == 20 and len(default["data"]) == 20
    entry = first["data"][0]
    assert entry["prompt"] == "row 24 " + SLOW
    assert {k: v for k, v in entry.items() if k != "prompt"} == poll(client, ids[-1])
    assert sim.stats()["task_list_requests"] == 4


def test_task_list_filters_and_key_isolation(sim: RunningSimulator, client: httpx.Client) -> None:
    slow = submit_ok(client, prompt=f"slow {SLOW}")
    quick = submit_ok(client, model=M40, prompt="quick")
    failed = submit_ok(client, prompt="failed [[sim:task_error=service_error]]")
    cancelled = submit_ok(client, prompt="cancelled [[sim:cancel]]")
    with make_client(sim, key=OTHER_KEY) as other:
        theirs = submit_ok(other, prompt="someone else's")
        assert [t["id"] for t in list_tasks(other)["data"]] == [theirs["id"]]
    sim.app_state.advance_time(1)

    def ids(**params: Any) -> list[str]:
        page = list_tasks(client, **params)
        assert page["total"] == len(page["data"])
        return [t["id"] for t in page["data"]]

    assert ids() == [cancelled["id"], failed["id"], quick["id"], slow["id"]]
    assert ids(status="pending") == [slow["id"]]
    assert ids(status="completed") == [quick["id"]]
    assert ids(status="failed") == [failed["id"]]
    assert ids(status="cancelled") == [cancelled["id"]]
    assert ids(status="processing") == []
    assert ids(model=M40) == [quick["id"]]
    assert ids(model=M45, status="completed") == []
    assert ids(type="image") == ids()
    assert ids(type="video") == []
    page = list_tasks(client, status="pending", page=2, page_size=1)
    assert page["data"] == [] and page["total"] == 1
    (done,) = list_tasks(client, status="completed")["data"]
    assert done["results"] and done["status"] == "completed"


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({"page_size": 0}, "page_size"),
        ({"page_size": 101}, "page_size"),
        ({"page": 0}, "page"),
        ({"page": "two"}, "page"),
        ({"status": "running"}, "status"),
    ],
)
def test_task_list_bad_queries(client: httpx.Client, params: dict, param: str) -> None:
    error = error_of(client.get(LIST, params=params), 400, "invalid_request_error")
    assert error["param"] == param


def test_task_list_excludes_expired_tasks(sim: RunningSimulator, client: httpx.Client) -> None:
    old = submit_ok(client, prompt="old")
    sim.app_state.advance_time(86400 - 10)
    new = submit_ok(client, prompt="new")
    assert [t["id"] for t in list_tasks(client)["data"]] == [new["id"], old["id"]]
    sim.app_state.advance_time(20)
    page = list_tasks(client)
    assert [t["id"] for t in page["data"]] == [new["id"]] and page["total"] == 1
    assert httpx.get(f"{sim.base_url}{LIST}").status_code == 401


def test_task_list_without_the_prompt() -> None:
    config = SimulatorConfig(**FAST, task_list_echoes_prompt=False)
    with running_simulator(config) as sim, make_client(sim) as c:
        task = submit_ok(c)
        (entry,) = list_tasks(c)["data"]
        assert "prompt" not in entry and entry["id"] == task["id"]


def test_task_list_of_many_tasks_is_quick() -> None:
    with running_simulator(SimulatorConfig(**FAST)) as sim, make_client(sim) as c:
        from prefect_seedream.simulator.faults import CreationFaults, parse_fault_plan
        from prefect_seedream.simulator.rules import validate_generation_request

        state = sim.app_state
        request = validate_generation_request(body(prompt="bulk"))
        plan = parse_fault_plan("bulk")
        key_id = key_id_for(KEY)
        for _ in range(20_000):
            state.create_task(request, key_id, plan, CreationFaults())
        started = time.monotonic()
        page = list_tasks(c, page=1000, page_size=20)
        assert page["total"] == 20_000 and len(page["data"]) == 20
        assert time.monotonic() - started < 1.0


# -- statuses ---------------------------------------------------------------------------------


def test_unknown_status_then_known_ones(sim: RunningSimulator, client: httpx.Client) -> None:
    task_id = submit_ok(client, prompt=f"odd [[sim:unknown_status=queued*2]] {SLOW}")["id"]
    assert list_tasks(client)["data"][0]["status"] == "queued"  # a list does not use it up
    first, second, third = (poll(client, task_id) for _ in range(3))
    assert (first["status"], second["status"], third["status"]) == ("queued", "queued", "pending")
    assert first["progress"] == 0 and first["task_info"]["can_cancel"] is True
    sim.app_state.advance_time(30)
    assert poll(client, task_id)["status"] == "completed"

    forever = submit_ok(client, prompt="odder [[sim:unknown_status=in_review]] [[sim:latency=10]]")
    statuses = [poll(client, forever["id"])["status"] for _ in range(3)]
    assert statuses == ["in_review"] * 3
    sim.app_state.advance_time(5)
    middle = poll(client, forever["id"])
    assert middle["status"] == "in_review" and 45 <= middle["progress"] <= 55
    assert list_tasks(client, status="processing")["data"] == []  # filters see what polls see
    sim.app_state.advance_time(5)
    assert poll(client, forever["id"])["status"] == "completed"


@pytest.mark.parametrize("name", ["Queued", "completed", "cancelled", "x" * 41, "in-review"])
def test_unknown_status_names_are_checked(client: httpx.Client, name: str) -> None:
    response = client.post(SUBMIT, json=body(prompt=f"x [[sim:unknown_status={name}]]"))
    assert error_of(response, 400, "invalid_request_error")["param"] == "prompt"


def test_cancel_marker(sim: RunningSimulator, client: httpx.Client) -> None:
    task = submit_ok(client, prompt="call it off [[sim:cancel*1]]")
    done = wait_terminal(client, task["id"])
    assert done["status"] == "cancelled" and done["progress"] == 100
    assert "error" not in done and "results" not in done
    assert done["task_info"] == {"can_cancel": False}
    assert done["usage"]["credits_used"] == 0.0
    assert client.get(f"/files/{task['id']}/0.png").status_code == 404
    again = wait_terminal(client, submit_ok(client, prompt="call it off [[sim:cancel*1]]")["id"])
    assert again["status"] == "completed"  # *1: only the first task is cancelled
    assert sim.stats()["credits_charged"] == 2.0


# -- command line -----------------------------------------------------------------------------


def test_cli_account_options() -> None:
    args = build_parser().parse_args(
        [
            "--account-credits", "50", "--key-quota", "20", "--daily-quota", "8",
            "--quota-window", "3600", "--deny-model", M40, "--deny-model", "other",
            "--latency", "1",
        ]
    )  # fmt: skip
    config = config_from_args(args)
    assert config.account_credits == 50 and config.key_quota_credits == 20
    assert config.daily_quota_credits == 8 and config.quota_window_seconds == 3600
    assert config.denied_models == frozenset({M40, "other"})
    assert config.fetch_reference_images is True  # the command fetches, as the real API does
    assert not config_from_args(
        build_parser().parse_args(["--no-fetch-reference-images"])
    ).fetch_reference_images
    defaults = config_from_args(build_parser().parse_args([]))
    assert defaults.account_credits is None and defaults.denied_models == frozenset()
    assert defaults.quota_window_seconds == 86400
