"""Tests of the Evolink Seedream simulator over real loopback HTTP."""

from __future__ import annotations

import ast
import hashlib
import io
import itertools
import json
import logging
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image, UnidentifiedImageError

from prefect_seedream.simulator import (
    RunningSimulator,
    SimulatorConfig,
    create_app,
    key_id_for,
    parse_fault_plan,
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
    wait_until,
)

__all__ = ["client", "sim"]  # fixtures, shared with the other simulator tests

TASK_ID = re.compile(r"^task-unified-(\d+)-[a-z0-9]{8}$")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SUBMIT_ANSWER_STATS = ("submits_hung", "submits_late", "submits_dropped", "submits_undelivered")


# -- fixtures and helpers ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def shared_sim() -> Iterator[RunningSimulator]:
    config = SimulatorConfig(**FAST, download_max_bytes_oversize=2_000_000)
    with running_simulator(config) as sim:
        yield sim


def submit_ok(client: httpx.Client, **fields: Any) -> dict[str, Any]:
    response = client.post(SUBMIT, json=body(**fields))
    assert response.status_code == 200, response.text
    payload: dict[str, Any] = response.json()
    return payload


def answer_stats(sim: RunningSimulator) -> dict[str, int]:
    stats = sim.stats()
    return {name: stats[name] for name in SUBMIT_ANSWER_STATS}


def assert_error(
    response: httpx.Response, status: int, error_type: str, param: str | None = None
) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert error["code"] == status
    assert error["type"] == error_type
    assert isinstance(error["message"], str) and error["message"]
    if param is not None:
        assert error.get("param") == param
    return error


# -- submit ---------------------------------------------------------------------------------


def test_submit_response_matches_contract(client: httpx.Client) -> None:
    before = int(time.time())
    payload = submit_ok(client)
    assert set(payload) == {
        "created",
        "id",
        "model",
        "object",
        "progress",
        "status",
        "task_info",
        "type",
        "usage",
    }
    match = TASK_ID.match(payload["id"])
    assert match is not None
    assert int(match.group(1)) == payload["created"]
    assert before <= payload["created"] <= int(time.time()) + 1
    assert payload["model"] == M45
    assert payload["object"] == "image.generation.task"
    assert payload["progress"] == 0
    assert payload["status"] == "pending"
    assert payload["type"] == "image"
    assert payload["task_info"] == {"can_cancel": True, "estimated_time": 1}
    assert payload["usage"] == {
        "billing_rule": "per_call",
        "credits_reserved": 2.0,
        "user_group": "default",
    }


def test_estimated_time_can_be_configured() -> None:
    config = SimulatorConfig(**FAST, estimated_time=45)
    with running_simulator(config) as sim, make_client(sim) as c:
        assert submit_ok(c)["task_info"]["estimated_time"] == 45


def test_authentication(sim: RunningSimulator, client: httpx.Client) -> None:
    anonymous = httpx.Client(base_url=sim.base_url, timeout=10)
    assert_error(anonymous.post(SUBMIT, json=body()), 401, "authentication_error")
    for header in ("Bearer", "Basic abc", "sk-test", "Token sk-test"):
        response = anonymous.post(SUBMIT, json=body(), headers={"Authorization": header})
        assert_error(response, 401, "authentication_error")
    task_id = submit_ok(client)["id"]
    assert_error(anonymous.get(f"/v1/tasks/{task_id}"), 401, "authentication_error")
    anonymous.close()
    assert sim.stats()["submit_requests"] == 1  # only the authenticated submit counts


def test_configured_api_keys_only() -> None:
    with running_simulator(SimulatorConfig(**FAST, api_keys={"good-key"})) as sim:
        with make_client(sim, key="bad-key") as bad, make_client(sim, key="good-key") as good:
            assert_error(bad.post(SUBMIT, json=body()), 401, "authentication_error")
            submit_ok(good)
        assert sim.stats()["tasks_created"] == 1


P4_0_OK = [
    {"size": "1K"},
    {"size": "4K"},
    {"size": "1280x720"},
    {"size": "3840x240"},  # exactly the minimum pixels and an aspect ratio of exactly 16
    {"size": "4096x4096"},
    {"prompt_priority": "fast"},
    {"image_urls": [f"https://example.com/{i}.png" for i in range(5)], "n": 10},
    {"n": 15},
    {"prompt": "x" * 2000},
    {"callback_url": "https://example.com/hook"},
]
P4_5_OK = [
    {"size": "2K"},
    {"size": "2560x1440"},
    {"size": "1440x2560"},
    {"prompt_priority": "standard"},
    {"image_urls": [f"https://example.com/{i}.png" for i in range(14)], "n": 1},
]


@pytest.mark.parametrize(
    ("model", "fields"), [(M40, f) for f in P4_0_OK] + [(M45, f) for f in P4_5_OK]
)
def test_valid_bodies_are_accepted(client: httpx.Client, model: str, fields: dict) -> None:
    payload = submit_ok(client, model=model, **fields)
    assert payload["status"] == "pending"


INVALID = [
    ({"model": None}, "model"),
    ({"prompt": None}, "prompt"),
    ({"prompt": ""}, "prompt"),
    ({"prompt": "   "}, "prompt"),
    ({"prompt": "x" * 2001}, "prompt"),
    ({"prompt": 42}, "prompt"),
    ({"n": 0}, "n"),
    ({"n": 16}, "n"),
    ({"n": "2"}, "n"),
    ({"n": True}, "n"),
    ({"n": 1.5}, "n"),
    ({"size": "1K"}, "size"),  # not a 4.5 preset
    ({"size": "2048x1152"}, "size"),  # below 2560*1440 pixels for 4.5
    ({"size": "4097x4096"}, "size"),
    ({"size": "big"}, "size"),
    ({"size": 2048}, "size"),
    ({"size": "2k"}, "size"),
    ({"prompt_priority": "fast"}, "prompt_priority"),  # 4.5 is standard only
    ({"image_urls": [f"https://e.com/{i}.png" for i in range(15)]}, "image_urls"),
    ({"image_urls": [f"https://e.com/{i}.png" for i in range(14)], "n": 2}, "n"),
    ({"image_urls": "https://e.com/a.png"}, "image_urls"),
    ({"image_urls": ["ftp://e.com/a.png"]}, "image_urls"),
    ({"callback_url": "http://example.com/hook"}, "callback_url"),
    ({"callback_url": "https://127.0.0.1/hook"}, "callback_url"),
    ({"callback_url": "https://192.168.1.4/hook"}, "callback_url"),
    ({"callback_url": "https://example.com/" + "a" * 2030}, "callback_url"),
    ({"prompt": "a cat [[sim:no_such_marker]]"}, "prompt"),
    ({"prompt": "a cat [[sim:submit_status=418]]"}, "prompt"),
    ({"prompt": "a cat [[sim:poll_404]] [[sim:poll_404*2]]"}, "prompt"),
    ({"prompt": "a cat [[sim:submit_hang=1]]"}, "prompt"),
    ({"prompt": "a cat [[sim:download_delay]]"}, "prompt"),
    ({"prompt": "a cat [[sim:download_delay=soon]]"}, "prompt"),
    ({"prompt": "a cat [[sim:download_delay=-1]]"}, "prompt"),
]
INVALID_4_0 = [
    ({"size": "1279x720"}, "size"),
    ({"size": "3900x240"}, "size"),  # aspect ratio above 16
    ({"size": "240x3900"}, "size"),
    ({"prompt_priority": "urgent"}, "prompt_priority"),
    # 4.0 took 5 references on the seed pages; Evolink documents 14 today (section 6)
    ({"image_urls": [f"https://e.com/{i}.png" for i in range(15)]}, "image_urls"),
    ({"image_urls": [f"https://e.com/{i}.png" for i in range(5)], "n": 11}, "n"),
]


@pytest.mark.parametrize(
    ("model", "fields", "param"),
    [(M45, f, p) for f, p in INVALID] + [(M40, f, p) for f, p in INVALID_4_0],
)
def test_validation_errors(
    sim: RunningSimulator, client: httpx.Client, model: str, fields: dict, param: str
) -> None:
    request = {k: v for k, v in {**body(model=model), **fields}.items() if v is not None}
    assert_error(client.post(SUBMIT, json=request), 400, "invalid_request_error", param)
    stats = sim.stats()
    assert stats["tasks_created"] == 0
    assert stats["submit_requests"] == 1


def test_malformed_and_non_object_bodies(sim: RunningSimulator, client: httpx.Client) -> None:
    response = client.post(
        SUBMIT, content=b"{not json", headers={"content-type": "application/json"}
    )
    assert_error(response, 400, "invalid_request_error")
    assert_error(client.post(SUBMIT, json=[1, 2]), 400, "invalid_request_error")
    assert sim.stats()["tasks_created"] == 0


def test_unknown_model(client: httpx.Client) -> None:
    error = assert_error(client.post(SUBMIT, json=body(model="dall-e-3")), 404, "not_found_error")
    assert error["message"] == "Specified model not found"


# -- query ----------------------------------------------------------------------------------


def test_task_query_errors(client: httpx.Client, sim: RunningSimulator) -> None:
    error = assert_error(client.get("/v1/tasks/abc"), 400, "invalid_request_error")
    assert error["message"] == "Invalid task ID format"
    error = assert_error(
        client.get("/v1/tasks/task-unified-1757165031-zzzzzzzz"), 404, "not_found_error"
    )
    assert error["message"] == "Task not found or expired"
    task_id = submit_ok(client)["id"]
    with make_client(sim, key=OTHER_KEY) as other:
        assert_error(other.get(f"/v1/tasks/{task_id}"), 404, "not_found_error")
    assert client.get(f"/v1/tasks/{task_id}").status_code == 200


def test_status_progression_in_real_time(client: httpx.Client) -> None:
    task_id = submit_ok(client, prompt="progress [[sim:latency=0.6]]")["id"]
    seen: list[tuple[str, int]] = []
    while True:
        task = client.get(f"/v1/tasks/{task_id}").json()
        seen.append((task["status"], task["progress"]))
        if task["status"] == "completed":
            break
        time.sleep(0.03)
    statuses = [s for s, _ in seen]
    order = {"pending": 0, "processing": 1, "completed": 2}
    assert statuses == sorted(statuses, key=order.__getitem__)
    # "pending" lasts only the first 20% (0.12 s); the clock-driven test below pins it down
    assert {"processing", "completed"} <= set(statuses)
    progresses = [p for _, p in seen]
    assert progresses == sorted(progresses)
    assert all(1 <= p <= 99 for s, p in seen if s == "processing")


def test_status_progression_with_clock(client: httpx.Client, sim: RunningSimulator) -> None:
    task_id = submit_ok(client, prompt="clock [[sim:latency=100]]")["id"]
    first = client.get(f"/v1/tasks/{task_id}").json()
    assert (first["status"], first["progress"]) == ("pending", 0)
    assert first["task_info"]["can_cancel"] is True
    assert "results" not in first
    assert set(first["usage"]) == {"billing_rule", "credits_reserved", "user_group"}
    sim.app_state.advance_time(50)
    middle = client.get(f"/v1/tasks/{task_id}").json()
    assert middle["status"] == "processing"
    assert 49 <= middle["progress"] <= 51
    sim.app_state.advance_time(50)
    done = client.get(f"/v1/tasks/{task_id}").json()
    assert set(done) == {
        "created",
        "id",
        "model",
        "object",
        "progress",
        "status",
        "results",
        "result_data",
        "task_info",
        "type",
        "usage",
    }
    assert (done["status"], done["progress"]) == ("completed", 100)
    assert done["task_info"] == {"can_cancel": False}
    assert done["usage"]["credits_used"] == 2.0


# -- results --------------------------------------------------------------------------------


def test_results_are_downscaled_images(client: httpx.Client) -> None:
    task = submit_ok(client, model=M40, size="4096x1024", n=3, prompt="three foxes")
    done = wait_terminal(client, task["id"])
    assert done["status"] == "completed"
    assert len(done["results"]) == 3
    contents = []
    anonymous = httpx.Client(timeout=10)  # result URLs need no auth, like a CDN
    for url in done["results"]:
        assert url.startswith(str(client.base_url).rstrip("/") + "/files/")
        response = anonymous.get(url)
        assert response.status_code == 200
        assert response.headers["content-type"] == "image/png"
        image = Image.open(io.BytesIO(response.content))
        assert image.format == "PNG"
        assert image.size == (256, 64)
        assert anonymous.get(url).content == response.content  # deterministic
        contents.append(response.content)
    anonymous.close()
    assert len(set(contents)) == 3  # one distinct image per index


def test_full_size_jpeg_results() -> None:
    config = SimulatorConfig(**FAST, image_max_side=None, image_format="jpeg")
    with running_simulator(config) as sim, make_client(sim) as c:
        task = submit_ok(c, model=M40, size="1280x720")
        done = wait_terminal(c, task["id"])
        assert done["results"][0].endswith(".jpg")
        response = c.get(done["results"][0])
        assert response.headers["content-type"] == "image/jpeg"
        image = Image.open(io.BytesIO(response.content))
        assert (image.format, image.size) == ("JPEG", (1280, 720))


@pytest.mark.parametrize(
    ("model", "n", "per_image"), [(M45, 1, 2.0), (M45, 3, 2.0), (M40, 1, 1.5), (M40, 4, 1.5)]
)
def test_credits(client: httpx.Client, model: str, n: int, per_image: float) -> None:
    task = submit_ok(client, model=model, n=n)
    assert task["usage"]["credits_reserved"] == per_image * n
    done = wait_terminal(client, task["id"])
    assert len(done["results"]) == n
    assert done["usage"] == {
        "billing_rule": "per_call",
        "credits_reserved": per_image * n,
        "credits_used": per_image * n,
        "user_group": "default",
    }


def test_ttl_expiry() -> None:
    config = SimulatorConfig(**FAST, result_ttl_seconds=0.3)
    with running_simulator(config) as sim, make_client(sim) as c:
        task_id = submit_ok(c)["id"]
        url = wait_terminal(c, task_id)["results"][0]
        assert c.get(url).status_code == 200
        time.sleep(0.4)
        assert_error(c.get(url), 404, "not_found_error")
        error = assert_error(c.get(f"/v1/tasks/{task_id}"), 404, "not_found_error")
        assert error["message"] == "Task not found or expired"


def test_ttl_expiry_with_clock(client: httpx.Client, sim: RunningSimulator) -> None:
    url = wait_terminal(client, submit_ok(client)["id"])["results"][0]
    sim.app_state.advance_time(86400 - 60)
    assert client.get(url).status_code == 200
    sim.app_state.advance_time(120)
    assert client.get(url).status_code == 404


def test_unknown_files_and_routes(client: httpx.Client) -> None:
    task = submit_ok(client, prompt="slow [[sim:latency=30]]")
    assert client.get(f"/files/{task['id']}/0.png").status_code == 404  # not completed yet
    assert client.get("/files/task-unified-1-abcdefgh/0.png").status_code == 404
    assert_error(client.get("/nothing/here"), 404, "not_found_error")
    assert client.get("/healthz").json() == {"ok": True}


# -- concurrency and stats ------------------------------------------------------------------


def test_concurrency_limit() -> None:
    config = SimulatorConfig(
        latency_seconds=30, jitter_seconds=0, max_concurrent_tasks_per_key=2,
        rate_limit_retry_after=3,
    )  # fmt: skip
    with running_simulator(config) as sim:
        with make_client(sim) as c, make_client(sim, key=OTHER_KEY) as other:
            submit_ok(c)
            submit_ok(c)
            error = assert_error(c.post(SUBMIT, json=body()), 429, "rate_limit_error")
            assert error["fallback_suggestion"] == "retry after 3 seconds"
            submit_ok(other)  # the limit is per key
            sim.app_state.advance_time(31)  # both tasks are terminal now
            submit_ok(c)
        stats = sim.stats()
        assert stats["tasks_created"] == 4
        assert stats["submit_requests"] == 5
        assert stats["peak_concurrent_tasks"] == 2
        assert stats["per_key"][key_id_for(KEY)]["peak_concurrent_tasks"] == 2
        assert stats["per_key"][key_id_for(OTHER_KEY)]["peak_concurrent_tasks"] == 1
        assert stats["active_tasks"] == 1


def test_stats(sim: RunningSimulator, client: httpx.Client) -> None:
    same, other_prompt = "same prompt [[sim:latency=5]]", "other prompt [[sim:latency=5]]"
    client.post(SUBMIT, json=body(n=99))  # counted as a request, creates nothing
    ids = [submit_ok(client, prompt=same)["id"] for _ in range(3)]
    with make_client(sim, key=OTHER_KEY) as other:
        submit_ok(other, prompt=other_prompt)
    stats = sim.stats()
    assert stats["peak_concurrent_tasks"] == 3
    assert stats["active_tasks"] == 4
    sim.app_state.advance_time(5)
    done = wait_terminal(client, ids[0])
    client.get(done["results"][0])
    stats = sim.stats()
    alpha, beta = key_id_for(KEY), key_id_for(OTHER_KEY)
    assert alpha == hashlib.sha256(KEY.encode()).hexdigest()[:12]
    assert stats["submit_requests"] == 5
    assert stats["tasks_created"] == 4
    assert stats["polls"] >= 1
    assert stats["downloads"] == 1
    assert stats["active_tasks"] == 0
    assert stats["submissions_by_prompt"] == {same: 3, other_prompt: 1}  # tasks, not requests
    assert {name: stats[name] for name in SUBMIT_ANSWER_STATS} == {
        "submits_hung": 0,
        "submits_late": 0,
        "submits_dropped": 0,
        "submits_undelivered": 0,
    }
    assert stats["per_key"][alpha] == {
        "submit_requests": 4,
        "tasks_created": 3,
        "polls": stats["polls"],
        "downloads": 1,
        "peak_concurrent_tasks": 3,
    }
    assert stats["per_key"][beta]["tasks_created"] == 1
    assert stats["per_key"][beta]["peak_concurrent_tasks"] == 1
    raw = httpx.get(f"{sim.base_url}/_sim/stats").text
    assert KEY not in raw and OTHER_KEY not in raw
    sim.reset()
    stats = sim.stats()
    assert stats["tasks_created"] == 0 and stats["per_key"] == {}
    assert stats["submissions_by_prompt"] == {}
    assert all(stats[name] == 0 for name in SUBMIT_ANSWER_STATS)
    assert_error(client.get(f"/v1/tasks/{ids[0]}"), 404, "not_found_error")


# -- markers --------------------------------------------------------------------------------


def test_task_error_marker(client: httpx.Client) -> None:
    prompt = "a beach [[sim:task_error=content_policy_violation]]"
    for _ in range(2):
        done = wait_terminal(client, submit_ok(client, prompt=prompt)["id"])
        assert done["status"] == "failed"
        assert done["error"] == {
            "code": "content_policy_violation",
            "message": "simulated failure: content_policy_violation",
        }
        assert "results" not in done
        assert done["usage"]["credits_used"] == 0.0


def test_task_error_marker_first_n(client: httpx.Client, sim: RunningSimulator) -> None:
    prompt = "a forest [[sim:task_error=service_error*1]]"
    first = wait_terminal(client, submit_ok(client, prompt=prompt)["id"])
    second = wait_terminal(client, submit_ok(client, prompt=prompt)["id"])
    assert (first["status"], first["error"]["code"]) == ("failed", "service_error")
    assert second["status"] == "completed"
    assert sim.stats()["submissions_by_prompt"][prompt] == 2


@pytest.mark.parametrize(
    ("status", "error_type"),
    [
        (400, "invalid_request_error"),
        (401, "authentication_error"),
        (402, "insufficient_quota_error"),
        (403, "permission_error"),
        (404, "not_found_error"),
        (413, "request_too_large_error"),
        (429, "rate_limit_error"),
        (500, "internal_server_error"),
        (502, "upstream_error"),
        (503, "service_unavailable_error"),
    ],
)
def test_submit_status_marker(
    sim: RunningSimulator, client: httpx.Client, status: int, error_type: str
) -> None:
    response = client.post(SUBMIT, json=body(prompt=f"x [[sim:submit_status={status}]]"))
    error = assert_error(response, status, error_type)
    if status in (429, 503):
        assert error["fallback_suggestion"] == "retry after 1 seconds"
    else:
        assert "fallback_suggestion" not in error
    assert sim.stats()["tasks_created"] == 0


def test_submit_status_marker_first_n_and_retry_after(
    sim: RunningSimulator, client: httpx.Client
) -> None:
    prompt = "x [[sim:submit_status=429*2]] [[sim:retry_after=2]]"
    for _ in range(2):
        error = assert_error(client.post(SUBMIT, json=body(prompt=prompt)), 429, "rate_limit_error")
        assert error["fallback_suggestion"] == "retry after 2 seconds"
    submit_ok(client, prompt=prompt)
    # counted per exact prompt text: another prompt starts from zero
    other = prompt + " again"
    assert client.post(SUBMIT, json=body(prompt=other)).status_code == 429
    stats = sim.stats()
    assert stats["submit_requests"] == 4
    assert stats["submissions_by_prompt"] == {prompt: 1}


def test_poll_status_marker(client: httpx.Client) -> None:
    prompt = "x [[sim:poll_status=503*2]]"
    for _ in range(2):  # counted per task
        task_id = submit_ok(client, prompt=prompt)["id"]
        for _ in range(2):
            error = assert_error(
                client.get(f"/v1/tasks/{task_id}"), 503, "service_unavailable_error"
            )
            assert error["fallback_suggestion"] == "retry after 1 seconds"
        assert client.get(f"/v1/tasks/{task_id}").status_code == 200


def test_poll_404_then_poll_malformed(client: httpx.Client) -> None:
    task_id = submit_ok(client, prompt="x [[sim:poll_404*2]] [[sim:poll_malformed*1]]")["id"]
    for _ in range(2):
        error = assert_error(client.get(f"/v1/tasks/{task_id}"), 404, "not_found_error")
        assert error["message"] == "Task not found or expired"
    malformed = client.get(f"/v1/tasks/{task_id}")
    assert malformed.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        json.loads(malformed.content)
    assert client.get(f"/v1/tasks/{task_id}").json()["id"] == task_id


def test_poll_429_has_retry_hint(client: httpx.Client) -> None:
    task_id = submit_ok(client, prompt="x [[sim:poll_status=429*1]] [[sim:retry_after=7]]")["id"]
    error = assert_error(client.get(f"/v1/tasks/{task_id}"), 429, "rate_limit_error")
    assert error["fallback_suggestion"] == "retry after 7 seconds"


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_drop_after_create(sim: RunningSimulator, client: httpx.Client) -> None:
    prompt = "a harbour [[sim:drop_after_create*1]]"
    server_log = logging.getLogger("uvicorn.error")
    handler = _Records()
    server_log.addHandler(handler)
    try:
        with pytest.raises(httpx.TransportError) as caught:
            client.post(SUBMIT, json=body(prompt=prompt))
    finally:
        server_log.removeHandler(handler)
    assert isinstance(caught.value, httpx.RemoteProtocolError)
    assert handler.records == []  # the deliberate drop logs no traceback
    stats = sim.stats()
    assert stats["tasks_created"] == 1
    assert stats["submissions_by_prompt"] == {prompt: 1}
    assert stats["submits_dropped"] == stats["submits_undelivered"] == 1
    (task_id,) = sim.app_state.tasks  # the task exists and can be polled by id
    assert wait_terminal(client, task_id)["status"] == "completed"
    submit_ok(client, prompt=prompt)  # *1: the second submission answers normally
    assert sim.stats()["submissions_by_prompt"] == {prompt: 2}
    assert [t["answered"] for t in sim.tasks(prompt)] == [False, True]
    assert answer_stats(sim)["submits_dropped"] == 1


def test_submit_delay(sim: RunningSimulator) -> None:
    prompt = "x [[sim:submit_delay=0.6]]"
    with (
        make_client(sim, timeout=httpx.Timeout(5, read=0.2)) as c,
        pytest.raises(httpx.ReadTimeout),
    ):
        c.post(SUBMIT, json=body(prompt=prompt))
    assert sim.stats()["tasks_created"] == 1
    (task,) = sim.tasks(prompt)
    assert task["answered"] is False  # the answer is still waiting
    assert answer_stats(sim) == {
        "submits_hung": 0,
        "submits_late": 1,
        "submits_dropped": 0,
        "submits_undelivered": 0,
    }
    # when the delay is over, the client has gone: the answer is counted as undelivered
    wait_until(lambda: answer_stats(sim)["submits_undelivered"] == 1, what="the late answer")
    assert sim.tasks(prompt)[0]["answered"] is False


def test_a_late_answer_after_reset_is_not_counted(sim: RunningSimulator) -> None:
    with (
        make_client(sim, timeout=httpx.Timeout(5, read=0.1)) as c,
        pytest.raises(httpx.ReadTimeout),
    ):
        c.post(SUBMIT, json=body(prompt="x [[sim:submit_delay=0.3]]"))
    sim.reset()
    time.sleep(0.4)  # the abandoned answer's delay ends after the reset
    assert all(value == 0 for value in answer_stats(sim).values())


def test_submit_delay_waited_for_is_answered(sim: RunningSimulator, client: httpx.Client) -> None:
    prompt = "x [[sim:submit_delay=0.2]]"
    started = time.monotonic()
    task_id = submit_ok(client, prompt=prompt)["id"]
    assert time.monotonic() - started >= 0.2
    assert sim.tasks(prompt)[0] | {"created_at": 0} == {
        "id": task_id,
        "prompt": prompt,
        "status": "completed",
        "created_at": 0,
        "answered": True,
        "polls": 0,
        "downloads": 0,
    }
    assert answer_stats(sim)["submits_late"] == 1
    assert answer_stats(sim)["submits_undelivered"] == 0


def raw_submit(sim: RunningSimulator, prompt: str) -> socket.socket:
    """Send a submit over a bare socket, so that a test sees every byte (or none) of the answer."""
    payload = json.dumps(body(prompt=prompt)).encode()
    head = (
        f"POST {SUBMIT} HTTP/1.1\r\nHost: {sim.host}\r\nAuthorization: Bearer {KEY}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
    )
    sock = socket.create_connection((sim.host, sim.port), timeout=5)
    sock.sendall(head.encode() + payload)
    return sock


def test_submit_hang_sends_no_byte_while_the_task_completes(
    sim: RunningSimulator, client: httpx.Client
) -> None:
    prompt = "a mill [[sim:submit_hang]]"
    sock = raw_submit(sim, prompt)
    try:
        sock.settimeout(0.6)
        with pytest.raises(TimeoutError):
            sock.recv(1)  # not a byte, not even a status line
        assert sim.app_state.holds.clients  # the answer is held
        (task,) = sim.tasks(prompt)  # how a test learns the id of a task never answered
        assert TASK_ID.match(task["id"])
        assert task["answered"] is False
        assert abs(task["created_at"] - sim.app_state.wall_time()) < 5  # the simulator's clock
        done = wait_terminal(client, task["id"])  # it runs and completes like any task
        assert done["status"] == "completed"
        assert client.get(done["results"][0]).status_code == 200
        stats = sim.stats()
        assert stats["tasks_created"] == 1 and stats["submissions_by_prompt"] == {prompt: 1}
        assert stats["submits_hung"] == stats["submits_undelivered"] == 1
        assert stats["submits_late"] == stats["submits_dropped"] == 0
        with pytest.raises(TimeoutError):
            sock.recv(1)  # still nothing after the task completed
    finally:
        sock.close()
    # the client gave up: the server lets the request go
    wait_until(lambda: not sim.app_state.holds.clients, what="the hang to end")
    assert sim.tasks(prompt)[0]["answered"] is False
    assert sim.tasks(prompt)[0]["downloads"] == 1


def test_submit_hang_first_n(sim: RunningSimulator, client: httpx.Client) -> None:
    prompt = "a dam [[sim:submit_hang*1]]"
    with make_client(sim, timeout=httpx.Timeout(5, read=0.3)) as impatient:
        started = time.monotonic()
        with pytest.raises(httpx.ReadTimeout):
            impatient.post(SUBMIT, json=body(prompt=prompt))
        assert time.monotonic() - started >= 0.3
    second = submit_ok(client, prompt=prompt)  # *1: only the first submission hangs
    hung, answered = sim.tasks(prompt)
    assert (hung["answered"], answered["answered"]) == (False, True)
    assert answered["id"] == second["id"] != hung["id"]
    assert wait_terminal(client, hung["id"])["status"] == "completed"
    stats = sim.stats()
    assert stats["tasks_created"] == 2 and stats["submissions_by_prompt"] == {prompt: 2}
    assert stats["submits_hung"] == stats["submits_undelivered"] == 1
    wait_until(lambda: not sim.app_state.holds.clients, what="the hang to end")


def test_tasks_listing(sim: RunningSimulator, client: httpx.Client) -> None:
    first, second = "one [[sim:latency=30]]", "two"
    ids = [submit_ok(client, prompt=first)["id"] for _ in range(2)]
    other = submit_ok(client, prompt=second)["id"]
    listed = sim.tasks(first)
    assert [t["id"] for t in listed] == ids  # creation order, only this exact prompt
    assert {t["status"] for t in listed} == {"pending"}
    assert all(t["answered"] and t["prompt"] == first for t in listed)
    assert listed[0]["created_at"] <= listed[1]["created_at"] <= sim.app_state.wall_time()
    assert [t["id"] for t in sim.tasks()] == [*ids, other]
    assert sim.tasks("one") == [] and sim.tasks("nobody") == []
    url = wait_terminal(client, other)["results"][0]
    client.get(url)
    (done,) = sim.tasks(second)
    assert done["status"] == "completed" and done["downloads"] == 1 and done["polls"] >= 1
    sim.app_state.advance_time(86400 + 60)  # results expired: the tasks are gone
    assert sim.tasks() == []
    response = httpx.get(f"{sim.base_url}/_sim/tasks", params={"prompt": first})
    assert response.status_code == 200 and response.json() == {"tasks": []}


def test_latency_marker(sim: RunningSimulator, client: httpx.Client) -> None:
    task_id = submit_ok(client, prompt="never [[sim:latency=100000]]")["id"]
    time.sleep(0.15)
    assert client.get(f"/v1/tasks/{task_id}").json()["status"] == "pending"
    assert sim.stats()["active_tasks"] == 1


def test_images_marker(client: httpx.Client) -> None:
    task = submit_ok(client, n=3, prompt="x [[sim:images=1]]")
    assert task["usage"]["credits_reserved"] == 6.0
    done = wait_terminal(client, task["id"])
    assert len(done["results"]) == 1
    assert done["usage"]["credits_used"] == 2.0
    urls = [f"https://e.com/{i}.png" for i in range(14)]
    capped = submit_ok(client, prompt="y [[sim:images=5]]", image_urls=urls)
    assert len(wait_terminal(client, capped["id"])["results"]) == 1


def test_extra_fields_marker(client: httpx.Client) -> None:
    task = submit_ok(client, prompt="x [[sim:extra_fields]]")
    done = wait_terminal(client, task["id"])
    for payload, base_info in ((task, {"can_cancel", "estimated_time"}), (done, {"can_cancel"})):
        assert set(payload["task_info"]) > base_info
        assert set(payload["usage"]) - {
            "billing_rule",
            "credits_reserved",
            "credits_used",
            "user_group",
        }
    assert set(done) - {
        "created",
        "id",
        "model",
        "object",
        "progress",
        "status",
        "results",
        "task_info",
        "type",
        "usage",
    }


def completed_url(client: httpx.Client, prompt: str) -> str:
    done = wait_terminal(client, submit_ok(client, prompt=prompt)["id"])
    url: str = done["results"][0]
    return url


def test_download_status_marker(client: httpx.Client) -> None:
    url = completed_url(client, "x [[sim:download_status=500*1]]")
    assert_error(client.get(url), 500, "internal_server_error")
    assert client.get(url).status_code == 200


def test_download_truncated_marker(client: httpx.Client) -> None:
    url = completed_url(client, "x [[sim:download=truncated*1]]")
    with pytest.raises(httpx.RemoteProtocolError):
        client.get(url)
    Image.open(io.BytesIO(client.get(url).content)).verify()


def test_download_not_image_marker(client: httpx.Client) -> None:
    response = client.get(completed_url(client, "x [[sim:download=not_image]]"))
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    with pytest.raises(UnidentifiedImageError):
        Image.open(io.BytesIO(response.content))


def test_download_oversize_marker(client: httpx.Client) -> None:
    url = completed_url(client, "x [[sim:download=oversize]]")
    with client.stream("GET", url) as response:
        assert response.status_code == 200
        assert response.headers["content-type"] == "image/png"
        assert "content-length" not in response.headers
        received = b""
        for chunk in response.iter_bytes():
            received += chunk
    assert len(received) == 2_000_000
    assert received.startswith(PNG_SIGNATURE)


def test_download_expired_marker(client: httpx.Client) -> None:
    assert_error(
        client.get(completed_url(client, "x [[sim:download=expired]]")), 404, "not_found_error"
    )


def test_download_delay_pauses_mid_body(client: httpx.Client) -> None:
    url = completed_url(client, "x [[sim:download_delay=0.8*1]]")
    arrivals: list[tuple[float, bytes]] = []
    with client.stream("GET", url) as response:
        assert response.status_code == 200
        assert response.headers["content-type"] == "image/png"
        total = int(response.headers["content-length"])
        for chunk in response.iter_raw():
            arrivals.append((time.monotonic(), chunk))
    gaps = [later[0] - earlier[0] for earlier, later in itertools.pairwise(arrivals)]
    assert gaps and max(gaps) >= 0.6
    pause_at = gaps.index(max(gaps)) + 1
    before = b"".join(chunk for _, chunk in arrivals[:pause_at])
    whole = b"".join(chunk for _, chunk in arrivals)
    assert len(before) == max(len(PNG_SIGNATURE), total // 2)  # the first half, then the pause
    assert before.startswith(PNG_SIGNATURE)
    assert len(whole) == total
    Image.open(io.BytesIO(whole)).verify()
    started = time.monotonic()
    assert client.get(url).content == whole  # *1 per result URL: no pause the second time
    assert time.monotonic() - started < 0.6


def test_download_delay_leaves_a_partial_body(sim: RunningSimulator, client: httpx.Client) -> None:
    url = completed_url(client, "x [[sim:download_delay=2]]")
    received = b""
    with (
        make_client(sim, timeout=httpx.Timeout(5, read=0.3)) as impatient,
        pytest.raises(httpx.ReadTimeout),
        impatient.stream("GET", url) as response,
    ):
        total = int(response.headers["content-length"])
        for chunk in response.iter_raw():
            received += chunk
    assert received.startswith(PNG_SIGNATURE)
    assert len(received) == total // 2  # what a client killed during the pause has on disk


def test_marker_parsing() -> None:
    plan = parse_fault_plan("[[sim:task_error=service_error*3]] text [[sim:latency=2.5]]")
    assert plan.task_error is not None and plan.task_error.limit == 3
    assert plan.latency is not None and plan.latency.value == 2.5
    assert parse_fault_plan("[[sim:broken").is_empty  # not a marker: ordinary text
    plan = parse_fault_plan("[[sim:submit_hang*2]] [[sim:download_delay=1.5*3]]")
    assert plan.submit_hang is not None and (plan.submit_hang.value, plan.submit_hang.limit) == (
        True,
        2,
    )
    assert plan.download_delay is not None and plan.download_delay.value == 1.5


# -- random faults --------------------------------------------------------------------------


def run_soak_script(sim: RunningSimulator) -> list[str]:
    outcomes: list[str] = []
    with make_client(sim) as c:
        ids = []
        for i in range(25):
            try:
                response = c.post(SUBMIT, json=body(prompt=f"soak {i}"))
            except httpx.TransportError:
                outcomes.append("drop")
                continue
            outcomes.append(str(response.status_code))
            if response.status_code == 200:
                ids.append(response.json()["id"])
        sim.app_state.advance_time(10)
        for task_id in ids:
            response = c.get(f"/v1/tasks/{task_id}")
            if response.status_code != 200:
                outcomes.append(f"poll {response.status_code}")
                continue
            task = response.json()
            outcomes.append(task["status"] + ":" + task.get("error", {}).get("code", ""))
            if task["status"] == "completed":
                try:
                    outcomes.append(f"dl {c.get(task['results'][0]).status_code}")
                except httpx.TransportError:
                    outcomes.append("dl cut")
    return outcomes


def test_random_faults_are_deterministic() -> None:
    rates = {
        "submit_500": 0.1,
        "submit_429": 0.1,
        "submit_503": 0.1,
        "drop_after_create": 0.1,
        "task_service_error": 0.15,
        "task_content_policy": 0.15,
        "poll_500": 0.1,
        "poll_503": 0.1,
        "poll_429": 0.1,
        "download_500": 0.2,
        "download_truncated": 0.2,
    }
    config = SimulatorConfig(latency_seconds=1, jitter_seconds=0.5, seed=7, fault_rates=rates)
    with running_simulator(config) as sim:
        first = run_soak_script(sim)
        sim.reset()  # re-seeds
        second = run_soak_script(sim)
    with running_simulator(config) as sim:
        third = run_soak_script(sim)
    assert first == second == third
    kinds = {o.split(":")[0] for o in first}
    assert {"200", "completed", "failed"} <= kinds
    assert any(o in ("500", "429", "503", "drop") for o in first)


def test_fault_rate_one_always_fires() -> None:
    config = SimulatorConfig(**FAST, fault_rates={"task_content_policy": 1.0})
    with running_simulator(config) as sim, make_client(sim) as c:
        for task_id in [submit_ok(c)["id"] for _ in range(3)]:
            assert wait_terminal(c, task_id)["error"]["code"] == "content_policy_violation"


def run_answer_script(sim: RunningSimulator, count: int = 12) -> list[str]:
    """Submit ``count`` prompts; each outcome is read from the server's answer counters."""
    outcomes: list[str] = []
    with make_client(sim, timeout=httpx.Timeout(5, read=0.2)) as c:
        for i in range(count):
            before = answer_stats(sim)
            try:
                c.post(SUBMIT, json=body(prompt=f"answer {i}"))
                answered = True
            except httpx.ReadTimeout:
                answered = False
            after = answer_stats(sim)
            if after["submits_hung"] > before["submits_hung"]:
                assert not answered  # a hung answer never comes
                outcomes.append("hang")
            elif after["submits_late"] > before["submits_late"]:
                outcomes.append("late")
            else:
                outcomes.append("ok")
    stats = sim.stats()
    assert stats["tasks_created"] == count  # every one of these submissions created its task
    assert stats["submits_hung"] == outcomes.count("hang")
    assert stats["submits_late"] == outcomes.count("late")
    hung = [sim.tasks(f"answer {i}")[0] for i, o in enumerate(outcomes) if o == "hang"]
    assert not any(task["answered"] for task in hung)
    return outcomes


def test_random_submit_hang_and_late_are_deterministic() -> None:
    config = SimulatorConfig(
        **FAST,
        seed=5,
        fault_rates={"submit_hang": 0.2, "submit_late": 0.3},
        late_submit_seconds=0.05,
    )
    with running_simulator(config) as sim:
        first = run_answer_script(sim)
        sim.reset()  # re-seeds
        second = run_answer_script(sim)
    with running_simulator(config) as sim:
        third = run_answer_script(sim)
    assert first == second == third
    assert {"hang", "late", "ok"} <= set(first)


def test_late_submit_seconds() -> None:
    config = SimulatorConfig(**FAST, fault_rates={"submit_late": 1.0}, late_submit_seconds=0.4)
    with running_simulator(config) as sim, make_client(sim) as c:
        started = time.monotonic()
        task_id = submit_ok(c)["id"]
        assert time.monotonic() - started >= 0.4
        assert sim.tasks()[0]["id"] == task_id and sim.tasks()[0]["answered"] is True
        assert answer_stats(sim) == {
            "submits_hung": 0,
            "submits_late": 1,
            "submits_dropped": 0,
            "submits_undelivered": 0,
        }


def test_zero_rates_draw_no_random_number() -> None:
    def error_codes(rates: dict[str, float]) -> list[str]:
        config = SimulatorConfig(**FAST, seed=2, fault_rates=rates)
        with running_simulator(config) as sim, make_client(sim) as c:
            ids = [submit_ok(c, prompt=f"zero {i}")["id"] for i in range(12)]
            sim.app_state.advance_time(1)
            codes = [c.get(f"/v1/tasks/{i}").json().get("error", {}).get("code", "") for i in ids]
            assert answer_stats(sim)["submits_hung"] == answer_stats(sim)["submits_late"] == 0
            return codes

    rates = {"task_service_error": 0.5}
    baseline = error_codes(rates)
    assert error_codes({**rates, "submit_hang": 0.0, "submit_late": 0.0}) == baseline
    assert set(baseline) == {"", "service_error"}


def test_config_rejects_unknown_fault_rates() -> None:
    with pytest.raises(ValueError):
        SimulatorConfig(fault_rates={"poll_418": 0.5})
    with pytest.raises(ValueError):
        SimulatorConfig(fault_rates={"poll_500": 1.5})
    with pytest.raises(ValueError):
        SimulatorConfig(fault_rates={"submit_hang": 1.5})
    with pytest.raises(ValueError):
        SimulatorConfig(fault_rates={"submit_late": -0.1})
    for seconds in (-1.0, float("inf"), float("nan")):
        with pytest.raises(ValueError):
            SimulatorConfig(late_submit_seconds=seconds)
    config = SimulatorConfig(fault_rates={"submit_hang": 0.1, "submit_late": 1.0})
    assert config.fault_rates == {"submit_hang": 0.1, "submit_late": 1.0}
    assert config.late_submit_seconds == 5.0


# -- held responses and shutdown ------------------------------------------------------------


def test_shutdown_is_not_blocked_by_held_responses() -> None:
    outcomes: dict[str, BaseException | None] = {}
    partial: list[bytes] = []

    def submit(name: str, prompt: str, base_url: str) -> None:
        try:
            httpx.post(
                f"{base_url}{SUBMIT}",
                json=body(prompt=prompt),
                headers={"Authorization": f"Bearer {KEY}"},
                timeout=30,
            )
            outcomes[name] = None
        except httpx.HTTPError as err:
            outcomes[name] = err

    def download(url: str) -> None:
        try:
            with httpx.stream("GET", url, timeout=30) as response:
                partial.extend(response.iter_raw())
            outcomes["download"] = None
        except httpx.HTTPError as err:
            outcomes["download"] = err

    server_log = logging.getLogger("uvicorn.error")
    handler = _Records()
    server_log.addHandler(handler)
    try:
        with running_simulator(SimulatorConfig(**FAST)) as sim:
            with make_client(sim) as c:
                url = completed_url(c, "held [[sim:download_delay=30]]")
            threads = [
                threading.Thread(target=submit, args=(name, prompt, sim.base_url))
                for name, prompt in (
                    ("hang", "h [[sim:submit_hang]]"),
                    ("late", "l [[sim:submit_delay=30]]"),
                )
            ]
            threads.append(threading.Thread(target=download, args=(url,)))
            for thread in threads:
                thread.start()
            wait_until(lambda: len(sim.app_state.holds.clients) == 2, what="two held submits")
            wait_until(lambda: len(b"".join(partial)) > 0, what="the first half of the image")
            holds = sim.app_state.holds
            started = time.monotonic()
        shutdown_seconds = time.monotonic() - started
        for thread in threads:
            thread.join(timeout=5)
            assert not thread.is_alive()
    finally:
        server_log.removeHandler(handler)
    # uvicorn alone would wait its 2 s graceful timeout, then cancel the requests with an error
    assert shutdown_seconds < 1.5
    assert [r for r in handler.records if r.levelno >= logging.ERROR] == []
    assert holds.released
    for name in ("hang", "late"):  # the connection closed without a byte of answer
        assert isinstance(outcomes[name], httpx.RemoteProtocolError), outcomes[name]
        assert "without sending a response" in str(outcomes[name])
    assert isinstance(outcomes["download"], httpx.RemoteProtocolError)  # cut mid-body
    assert b"".join(partial).startswith(PNG_SIGNATURE)
    answers = sim.app_state.answers
    assert (answers.hung, answers.late, answers.undelivered) == (1, 1, 2)


# -- packaging, CLI -------------------------------------------------------------------------


def test_simulator_imports_neither_prefect_nor_the_api_layer() -> None:
    package = Path(create_app.__code__.co_filename).parent
    for source in package.glob("*.py"):
        tree = ast.parse(source.read_text(), filename=str(source))
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                assert name.split(".")[0] != "prefect", f"{source.name} imports {name}"
                assert not name.startswith("prefect_seedream.api"), f"{source.name}: {name}"


def test_cli_arguments() -> None:
    args = build_parser().parse_args(
        [
            "--latency", "0.5", "--jitter", "0", "--ttl", "60", "--max-concurrency", "3",
            "--image-max-side", "0", "--format", "jpeg", "--seed", "3",
            "--api-key", "a", "--api-key", "b", "--fault-rate", "poll_503=0.25",
            "--fault-rate", "submit_hang=0.1", "--late-submit-seconds", "7.5",
        ]
    )  # fmt: skip
    config = config_from_args(args)
    assert config.latency_seconds == 0.5 and config.jitter_seconds == 0
    assert config.result_ttl_seconds == 60 and config.max_concurrent_tasks_per_key == 3
    assert config.image_max_side is None and config.image_format == "jpeg"
    assert config.seed == 3 and config.api_keys == {"a", "b"}
    assert config.fault_rates == {"poll_503": 0.25, "submit_hang": 0.1}
    assert config.late_submit_seconds == 7.5
    assert build_parser().parse_args([]).late_submit_seconds == 5.0
    assert args.port == 8787
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--fault-rate", "nonsense=1"])


def test_cli_serves_until_interrupted() -> None:
    code = (
        "import sys; from prefect_seedream.simulator.server import main_simulator; "
        "sys.exit(main_simulator(sys.argv[1:]))"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", code, "--port", "0", "--latency", "0.1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline().strip()
        match = re.fullmatch(r"Seedream simulator listening on (http://127\.0\.0\.1:\d+)", line)
        assert match, line
        deadline = time.monotonic() + 10
        while True:
            try:
                assert httpx.get(f"{match.group(1)}/healthz").json() == {"ok": True}
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline
                time.sleep(0.05)
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=10) == 0
        assert process.stderr is not None
        assert "Traceback" not in process.stderr.read()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
