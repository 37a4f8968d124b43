"""The dataset flow against the simulator's deterministic fault markers.

Every case runs a two-row dataset (the faulty row and a clean control row) and checks
three things:

(a) every input row has exactly one manifest line;
(b) nothing was submitted twice unless the first submission provably created no task:
    the simulator's ``submissions_by_prompt`` (tasks created per prompt) must equal
    what the marker allows, and the manifest's ``submissions`` must agree with it;
(c) the recorded outcome and reason are the right ones.

Client back-off and the Prefect retry delays of the inner tasks are shortened by the
``fast_retries`` fixture (the number of attempts is unchanged); "retry after N seconds"
hints are left alone, so a test can check that they are honoured.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from prefect_seedream.api.client import RetryPolicy
from prefect_seedream.api.defaults import MAX_IMAGE_BYTES
from prefect_seedream.api.models import TASK_ERROR_KINDS, TaskErrorKind
from prefect_seedream.flows import recover_dataset
from prefect_seedream.simulator import RunningSimulator, SimulatorConfig, running_simulator
from tests.conftest import TEST_API_KEY
from tests.helpers import manifest, run_dataset, summary_of, write_jsonl

pytestmark = pytest.mark.usefixtures("prefect_api")

CONTROL = "a quiet harbour at dawn, watercolour (control row)"

REQUEST_CODES = sorted(c for c, k in TASK_ERROR_KINDS.items() if k is TaskErrorKind.REQUEST)
SERVICE_CODES = sorted(c for c, k in TASK_ERROR_KINDS.items() if k is TaskErrorKind.SERVICE)


def _inner_tasks() -> tuple[Any, ...]:
    from prefect_seedream import tasks

    return (tasks.submit_generation, tasks.wait_for_generation, tasks.store_images)


#: The inner tasks' own retry delays, for the tests that need the real ones.
REAL_DELAYS = {task.name: task.retry_delay_seconds for task in _inner_tasks()}


@pytest.fixture(autouse=True)
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tiny client back-off and inner-task retry delays; attempts and hints unchanged."""
    monkeypatch.setattr(RetryPolicy, "backoff", lambda self, attempt: 0.01)
    for task in _inner_tasks():
        monkeypatch.setattr(task, "retry_delay_seconds", 0)


# -- helpers ---------------------------------------------------------------------------------


def dataset(tmp_path: Path, fault_prompt: str) -> Path:
    return write_jsonl(
        tmp_path / "rows.jsonl",
        [{"id": "fault", "prompt": fault_prompt}, {"id": "control", "prompt": CONTROL}],
    )


def by_id(lines: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {line["row_id"]: line for line in lines}


def check_invariants(
    lines: list[dict[str, Any]],
    stats: dict[str, Any],
    expected_tasks: dict[str, int],
    row_ids: tuple[str, ...] = ("fault", "control"),
    submissions: dict[str, int] | None = None,
) -> None:
    """(a) one line per row, (b) tasks per prompt exactly as allowed, (c) each line counts
    its submissions (``submissions`` overrides it per prompt: a 5xx "may have created")."""
    assert sorted(line["row_id"] for line in lines) == sorted(row_ids)
    assert len(lines) == len(row_ids)
    by_prompt = stats["submissions_by_prompt"]
    for prompt, count in expected_tasks.items():
        assert by_prompt.get(prompt, 0) == count, (prompt, by_prompt)
    assert stats["tasks_created"] == sum(expected_tasks.values()), stats
    expected_submissions = {**expected_tasks, **(submissions or {})}
    for line in lines:
        if line["prompt"] in expected_submissions:
            assert line["submissions"] == expected_submissions[line["prompt"]], line


def check_control(lines: list[dict[str, Any]]) -> None:
    control = by_id(lines)["control"]
    assert control["status"] == "succeeded", control
    assert control["error"] is None
    assert len(control["images"]) == 1 and Path(control["images"][0]["uri"]).is_file()


def check_succeeded(line: dict[str, Any], sim: RunningSimulator) -> None:
    assert line["status"] == "succeeded", line
    assert line["error"] is None
    assert line["task_id"] in sim.app_state.tasks
    assert len(line["images"]) == 1
    image = Path(line["images"][0]["uri"])
    assert image.is_file() and image.stat().st_size == line["images"][0]["bytes"] > 0


async def run_case(
    sim: RunningSimulator, tmp_path: Path, fault_prompt: str, **options: Any
) -> tuple[Any, list[dict[str, Any]], dict[str, Any]]:
    output = tmp_path / "out"
    state = await run_dataset(dataset(tmp_path, fault_prompt), output, **options)
    lines = manifest(output)
    return state, lines, sim.stats()


async def run_rows(
    sim: RunningSimulator, tmp_path: Path, prompts: dict[str, str], **options: Any
) -> tuple[Any, list[dict[str, Any]], dict[str, Any]]:
    """Run several faulty rows (plus the control row) in one flow run."""
    rows = [{"id": row_id, "prompt": prompt} for row_id, prompt in prompts.items()]
    rows.append({"id": "control", "prompt": CONTROL})
    output = tmp_path / "out"
    options.setdefault("max_concurrency", 16)
    state = await run_dataset(write_jsonl(tmp_path / "rows.jsonl", rows), output, **options)
    return state, manifest(output), sim.stats()


async def check_state(state: Any, lines: list[dict[str, Any]]) -> None:
    summary = await summary_of(state)
    assert summary.rows == len(lines)
    succeeded = sum(line["status"] == "succeeded" for line in lines)
    assert summary.succeeded == succeeded
    if succeeded == len(lines):
        assert state.is_completed(), state
    else:
        assert state.is_failed(), state
        assert f"{succeeded} of {len(lines)} rows succeeded" in (state.message or "")


# -- 429 storms, honouring "retry after N seconds" -------------------------------------------


async def test_429_storms_on_submit_and_on_poll_honour_retry_after(
    seedream_env: RunningSimulator, tmp_path: Path
) -> None:
    prompts = {
        "submit429": "a red fox [[sim:submit_status=429*2]] [[sim:retry_after=1]]",
        "poll429": "a red fox [[sim:poll_status=429*2]] [[sim:retry_after=1]]",
    }
    state, lines, stats = await run_rows(seedream_env, tmp_path, prompts)

    check_invariants(
        lines, stats, {**dict.fromkeys(prompts.values(), 1), CONTROL: 1}, (*prompts, "control")
    )
    check_control(lines)
    for row_id in prompts:
        line = by_id(lines)[row_id]
        check_succeeded(line, seedream_env)
        # Back-off is patched to 0.01 s: only the two "retry after 1 seconds" hints take time.
        assert line["duration_seconds"] >= 2.0, line
    assert seedream_env.app_state.tasks[by_id(lines)["poll429"]["task_id"]].polls >= 3
    assert stats["submit_requests"] == 3 + 1 + 1  # two 429s and the task; poll row; control
    await check_state(state, lines)


async def test_submit_429_storm_longer_than_the_clients_attempts(
    seedream_env: RunningSimulator, tmp_path: Path
) -> None:
    """Five 429s: the client gives up after 4 attempts, the row's retry carries on.

    (Changed with the redesign of rows: the inner submit task's own Prefect retry is gone,
    so the row's retry, `retries=1`, is the second layer.)
    """
    fault = "a red fox [[sim:submit_status=429*5]] [[sim:retry_after=0]]"
    state, lines, stats = await run_case(seedream_env, tmp_path, fault, retries=1)

    check_invariants(lines, stats, {fault: 1, CONTROL: 1})
    check_control(lines)
    check_succeeded(by_id(lines)["fault"], seedream_env)
    assert stats["submit_requests"] == 6 + 1
    await check_state(state, lines)


async def test_submit_429_forever_fails_without_any_task(
    seedream_env: RunningSimulator, tmp_path: Path
) -> None:
    fault = "a red fox [[sim:submit_status=429]] [[sim:retry_after=0]]"
    state, lines, stats = await run_case(seedream_env, tmp_path, fault, retries=1)

    check_invariants(lines, stats, {fault: 0, CONTROL: 1})
    check_control(lines)
    line = by_id(lines)["fault"]
    assert line["status"] == "failed"
    assert line["error"]["code"] == "rate_limit_error"  # the API's code, not a class name
    assert line["error"]["message"] == "Rate limit exceeded - retry after 0 seconds"
    assert line["task_id"] is None
    # 4 client attempts x 2 attempts of the row (retries=1), never a task. (Was 16: the
    # inner submit task's Prefect retry doubled it; rows no longer have inner task runs.)
    assert stats["submit_requests"] == 8 + 1
    await check_state(state, lines)


@pytest.mark.parametrize("where", ["submit", "poll"])
async def test_a_long_retry_after_hint_is_not_cut_short(
    seedream_env: RunningSimulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    """A hint above the client's max_retry_after (120 s): no retry layer may call sooner.

    (Found as a bug: the task-level Prefect retry resubmitted after ~2 s and the wait
    loop polled again after poll_interval; fixed in api/client.py.)
    """
    for task in _inner_tasks():  # the package's own retry delays, not the test's fast ones
        monkeypatch.setattr(task, "retry_delay_seconds", REAL_DELAYS[task.name])
    hint = 121
    fault = f"a red fox [[sim:{where}_status=429*1]] [[sim:retry_after={hint}]]"
    _, lines, stats = await run_case(seedream_env, tmp_path, fault, retries=0)

    tasks = stats["submissions_by_prompt"].get(fault, 0)
    assert tasks <= 1
    check_invariants(lines, stats, {fault: tasks, CONTROL: 1})
    line = by_id(lines)["fault"]
    if where == "submit":
        asked_again = stats["submit_requests"] - 1 > 1  # the control row made one request
    else:
        asked_again = seedream_env.app_state.tasks[line["task_id"]].polls > 1
    # Either the row waits as long as the API asked, or it gives up at once and says why.
    if asked_again:
        assert line["duration_seconds"] >= hint, (
            f"the API asked for {hint} s and was called again after {line['duration_seconds']} s"
        )
    else:
        assert line["error"]["code"] == "rate_limit_error", line
        assert f"retry after {hint} seconds" in line["error"]["message"]
        if where == "submit":  # nothing was created: the row failed
            assert line["status"] == "failed" and tasks == 0
        else:  # the task runs on remotely: recover can still collect it
            assert line["status"] == "in_flight" and line["task_id"] is not None


async def test_read_timeout_after_sending_is_found_in_the_task_list(
    simulator: RunningSimulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The task is created, its answer comes after the submit timeout: the row finds its task
    in the API's task list and re-attaches in the same run. Never resubmitted (issue 16)."""
    from prefect_seedream.credentials import SeedreamCredentials

    monkeypatch.delenv("SEEDREAM_API_KEY", raising=False)
    credentials = SeedreamCredentials(
        api_key=TEST_API_KEY, base_url=simulator.base_url, submit_timeout=1.0
    )
    fault = "a red fox [[sim:submit_delay=2.5]]"
    state, lines, stats = await run_case(
        simulator, tmp_path, fault, retries=2, credentials=credentials
    )

    check_invariants(lines, stats, {fault: 1, CONTROL: 1})
    check_control(lines)
    check_succeeded(by_id(lines)["fault"], simulator)
    assert stats["submit_requests"] == 1 + 1
    assert stats["task_list_requests"] >= 1
    await check_state(state, lines)


# -- 5xx on submit and on poll ---------------------------------------------------------------

STATUSES_5XX = (500, 502, 503)
#: The API's error type and message for each 5xx (evolink-api.md, section 3).
SERVER_ERROR_TYPES = {500: "internal_server_error", 502: "upstream_error", 503: "service_unavailable_error"}
SERVER_ERROR_MESSAGES = {
    500: "Internal server error", 502: "Upstream AI service unavailable", 503: "Service temporarily unavailable",
}


async def test_5xx_on_submit_and_on_poll_then_success(
    seedream_env: RunningSimulator, tmp_path: Path
) -> None:
    prompts = {
        f"{where}{status}": f"a red fox [[sim:{where}_status={status}*2]] [[sim:retry_after=0]]"
        for where in ("submit", "poll")
        for status in STATUSES_5XX
    }
    state, lines, stats = await run_rows(seedream_env, tmp_path, prompts)

    check_invariants(
        lines, stats, {**dict.fromkeys(prompts.values(), 1), CONTROL: 1}, (*prompts, "control")
    )
    check_control(lines)
    for row_id in prompts:
        line = by_id(lines)[row_id]
        check_succeeded(line, seedream_env)
        if row_id.startswith("poll"):
            assert seedream_env.app_state.tasks[line["task_id"]].polls >= 3
    # Each submit row: two 5xx answers, then the task; poll rows and control: one request.
    assert stats["submit_requests"] == 3 * 3 + 3 + 1
    await check_state(state, lines)


async def test_5xx_on_submit_forever_fails_without_any_task(
    seedream_env: RunningSimulator, tmp_path: Path
) -> None:
    prompts = {
        f"s{status}": f"a red fox [[sim:submit_status={status}]] [[sim:retry_after=0]]"
        for status in STATUSES_5XX
    }
    state, lines, stats = await run_rows(seedream_env, tmp_path, prompts, retries=0)

    # A 5xx may come from a gateway after the task was created: the row counts the submission
    # (its key is kept, and the next attempt would be a replay), though none was created here.
    check_invariants(
        lines, stats, {**dict.fromkeys(prompts.values(), 0), CONTROL: 1}, (*prompts, "control"),
        submissions=dict.fromkeys(prompts.values(), 1),
    )
    check_control(lines)
    for status in STATUSES_5XX:
        line = by_id(lines)[f"s{status}"]
        assert line["status"] == "failed"
        assert line["error"]["code"] == SERVER_ERROR_TYPES[status]  # the API's type
        assert line["error"]["message"].startswith(SERVER_ERROR_MESSAGES[status])
        assert line["task_id"] is None
    # 4 client attempts for each row (retries=0); never a task. (Was 8: the inner submit
    # task's Prefect retry doubled it; rows no longer have inner task runs.)
    assert stats["submit_requests"] == 4 * 3 + 1
    await check_state(state, lines)


async def test_submit_400_is_not_retried(seedream_env: RunningSimulator, tmp_path: Path) -> None:
    fault = "a red fox [[sim:submit_status=400]]"
    state, lines, stats = await run_case(seedream_env, tmp_path, fault, retries=2)

    check_invariants(lines, stats, {fault: 0, CONTROL: 1})
    check_control(lines)
    line = by_id(lines)["fault"]
    assert line["status"] == "failed"
    assert line["error"]["code"] == "invalid_request_error"
    assert line["error"]["message"] == "Invalid request parameters"
    assert stats["submit_requests"] == 1 + 1
    await check_state(state, lines)


# -- connection refused before sending ---------------------------------------------------------


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A loopback port that is bound but not listening: connections are refused."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()


async def test_connection_refused_then_rerun_against_the_live_simulator(
    simulator: RunningSimulator, tmp_path: Path, closed_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    fault = "a red fox in the snow"
    monkeypatch.setenv("SEEDREAM_API_KEY", TEST_API_KEY)
    monkeypatch.setenv("SEEDREAM_BASE_URL", f"http://127.0.0.1:{closed_port}")
    output = tmp_path / "out"
    rows = dataset(tmp_path, fault)

    state = await run_dataset(rows, output, retries=1)
    lines = manifest(output)
    assert state.is_failed()
    assert sorted(line["row_id"] for line in lines) == ["control", "fault"]
    for line in lines:
        assert line["status"] == "failed", line
        assert line["error"]["code"] == "connection_error"
        assert "cannot reach" in line["error"]["message"]
        assert line["task_id"] is None and line["submissions"] == 0
    assert (await summary_of(state)).failed == 2
    stats = simulator.stats()
    assert stats["submit_requests"] == 0 and stats["tasks_created"] == 0

    monkeypatch.setenv("SEEDREAM_BASE_URL", simulator.base_url)
    state = await run_dataset(rows, output)
    lines = manifest(output)
    stats = simulator.stats()
    check_invariants(lines, stats, {fault: 1, CONTROL: 1})
    check_control(lines)
    check_succeeded(by_id(lines)["fault"], simulator)
    assert state.is_completed(), state


# -- connection dropped after the task was created -------------------------------------------


async def test_drop_after_create_is_re_attached_through_the_task_list(
    seedream_env: RunningSimulator, tmp_path: Path
) -> None:
    """The connection drops after the task was created: the task list shows it (its prompt),
    so the row re-attaches in the same run; one task, one charge."""
    fault = "a red fox [[sim:drop_after_create*1]]"
    state, lines, stats = await run_case(seedream_env, tmp_path, fault, retries=2)

    check_invariants(lines, stats, {fault: 1, CONTROL: 1})
    check_control(lines)
    check_succeeded(by_id(lines)["fault"], seedream_env)
    assert stats["submits_dropped"] == 1 and stats["submit_requests"] == 1 + 1
    await check_state(state, lines)


async def test_drop_after_create_is_outcome_unknown_and_resubmitted_only_with_the_same_key(
    silent_list_env: RunningSimulator, tmp_path: Path
) -> None:
    """When the task list cannot tell the row's task, the row is outcome_unknown and a plain
    re-run pays nothing; `resubmit_unknown` sends the same Idempotency-Key, which the API
    answers with the task the lost submission created: still one task (0 double charges)."""
    sim = silent_list_env
    fault = "a red fox [[sim:drop_after_create*1]]"
    output = tmp_path / "out"
    rows = dataset(tmp_path, fault)

    state = await run_dataset(rows, output, retries=2)
    lines = manifest(output)
    stats = sim.stats()
    check_invariants(lines, stats, {fault: 1, CONTROL: 1})
    check_control(lines)
    line = by_id(lines)["fault"]
    assert line["status"] == "outcome_unknown"
    assert line["error"]["code"] == "outcome_unknown"
    assert "resubmit-unknown" in line["error"]["message"]
    assert line["images"] == []
    assert (await summary_of(state)).outcome_unknown == 1
    await check_state(state, lines)
    requests_after_first_run = stats["submit_requests"]

    # A plain re-run must not pay again.
    state = await run_dataset(rows, output, retries=2)
    lines = manifest(output)
    stats = sim.stats()
    check_invariants(lines, stats, {fault: 1, CONTROL: 1})
    assert stats["submit_requests"] == requests_after_first_run
    assert by_id(lines)["fault"]["status"] == "outcome_unknown"
    assert by_id(lines)["control"]["status"] == "succeeded"
    assert by_id(lines)["control"]["reused"] is True
    assert state.is_failed()

    # Asked for explicitly, the row is sent once more, with the same key: a replay.
    state = await run_dataset(rows, output, resubmit_unknown=True)
    lines = manifest(output)
    stats = sim.stats()
    check_invariants(lines, stats, {fault: 1, CONTROL: 1})
    check_succeeded(by_id(lines)["fault"], sim)
    assert stats["submit_requests"] == requests_after_first_run + 1
    assert stats["idempotent_replays"] == 1
    assert state.is_completed(), state


async def test_5xx_after_the_task_was_created_is_a_replay_not_a_second_charge(
    seedream_env: RunningSimulator, tmp_path: Path
) -> None:
    """A gateway answers 502 after the task was created and charged: the client retries with
    the same Idempotency-Key and gets that task back (issue 16: it used to pay again)."""
    fault = "a red fox [[sim:create_then_status=502*1]] [[sim:retry_after=0]]"
    state, lines, stats = await run_case(seedream_env, tmp_path, fault, retries=1)

    check_invariants(lines, stats, {fault: 1, CONTROL: 1})
    check_control(lines)
    check_succeeded(by_id(lines)["fault"], seedream_env)
    assert stats["idempotent_replays"] == 1
    assert stats["submit_requests"] == 2 + 1
    await check_state(state, lines)


# -- eventual consistency: 404 on the first poll ---------------------------------------------


async def test_poll_404_once_then_success(seedream_env: RunningSimulator, tmp_path: Path) -> None:
    fault = "a red fox [[sim:poll_404*1]]"
    state, lines, stats = await run_case(seedream_env, tmp_path, fault, retries=2)

    check_invariants(lines, stats, {fault: 1, CONTROL: 1})
    check_control(lines)
    line = by_id(lines)["fault"]
    check_succeeded(line, seedream_env)
    assert seedream_env.app_state.tasks[line["task_id"]].polls >= 2
    await check_state(state, lines)


# -- a task that outlives the wait cap -------------------------------------------------------


#: The slow task never finishes on its own; the simulator's clock is moved past it instead.
#: The wait cap is generous enough for the control row on a busy machine.
SLOW = "a red fox [[sim:latency=600]]"
WAIT_CAP = 3.0


def _finish_now(sim: RunningSimulator, task_id: str) -> None:
    task = sim.app_state.tasks[task_id]
    assert task.is_active(sim.app_state.now())
    sim.app_state.advance_time(task.finishes_at - sim.app_state.now() + 0.1)
    assert not task.is_active(sim.app_state.now())


async def test_wait_cap_leaves_the_task_in_flight_and_recover_collects_it(
    seedream_env: RunningSimulator, tmp_path: Path
) -> None:
    fault = SLOW
    output = tmp_path / "out"
    state, lines, stats = await run_case(seedream_env, tmp_path, fault, max_wait_seconds=WAIT_CAP)

    check_invariants(lines, stats, {fault: 1, CONTROL: 1})
    check_control(lines)
    line = by_id(lines)["fault"]
    assert line["status"] == "in_flight", line
    assert line["error"]["code"] == "wait_timeout"
    assert line["images"] == []
    task_id = line["task_id"]
    assert task_id is not None and task_id in seedream_env.app_state.tasks
    assert seedream_env.app_state.tasks[task_id].prompt == fault
    assert (await summary_of(state)).in_flight == 1
    await check_state(state, lines)

    assert seedream_env.app_state.tasks[task_id].polls >= 1
    _finish_now(seedream_env, task_id)
    requests_before = seedream_env.stats()["submit_requests"]
    recovered = await recover_dataset(
        str(output), max_wait_seconds=10, poll_interval=0.05, return_state=True
    )
    assert recovered.is_completed(), recovered
    assert "collected 1 of 1" in (recovered.message or "")

    lines = manifest(output)
    stats = seedream_env.stats()
    check_invariants(lines, stats, {fault: 1, CONTROL: 1})
    assert stats["submit_requests"] == requests_before
    line = by_id(lines)["fault"]
    check_succeeded(line, seedream_env)
    assert line["task_id"] == task_id
    check_control(lines)


async def test_rerun_reattaches_to_a_task_left_in_flight(
    seedream_env: RunningSimulator, tmp_path: Path
) -> None:
    fault = SLOW
    output = tmp_path / "out"
    _, lines, _ = await run_case(seedream_env, tmp_path, fault, max_wait_seconds=WAIT_CAP)
    task_id = by_id(lines)["fault"]["task_id"]
    assert by_id(lines)["fault"]["status"] == "in_flight"
    _finish_now(seedream_env, task_id)

    state = await run_dataset(dataset(tmp_path, fault), output)
    lines = manifest(output)
    stats = seedream_env.stats()
    check_invariants(lines, stats, {fault: 1, CONTROL: 1})
    line = by_id(lines)["fault"]
    check_succeeded(line, seedream_env)
    assert line["task_id"] == task_id
    assert state.is_completed(), state


async def test_rerun_at_once_takes_a_not_yet_visible_task_for_in_flight(
    seedream_env: RunningSimulator, tmp_path: Path
) -> None:
    """A run stopped right after a submission, run again at once: the task answers 404
    (not visible yet) at first. The re-run must keep waiting, not take it for gone and pay
    again; only a task older than the grace a fresh one gets is gone."""
    fault = "a red fox [[sim:latency=600]][[sim:poll_404*100000]]"
    output = tmp_path / "out"
    _, lines, _ = await run_case(seedream_env, tmp_path, fault, max_wait_seconds=WAIT_CAP)
    task_id = by_id(lines)["fault"]["task_id"]
    assert by_id(lines)["fault"]["status"] == "in_flight" and task_id is not None

    state = await run_dataset(dataset(tmp_path, fault), output, max_wait_seconds=WAIT_CAP)

    lines = manifest(output)
    stats = seedream_env.stats()
    check_invariants(lines, stats, {fault: 1, CONTROL: 1})  # no second task
    line = by_id(lines)["fault"]
    assert line["status"] == "in_flight" and line["task_id"] == task_id, line
    assert state.is_failed()


# -- task error codes, by whose fault they are -------------------------------------------------


async def test_task_error_codes_by_whose_fault_they_are(
    seedream_env: RunningSimulator, tmp_path: Path
) -> None:
    """One run, every documented code (retries=2 everywhere, so a retry would be allowed).

    * the request's fault: failed with the code, never retried (1 task);
    * the service's fault, once: retried with a new submission, succeeded (2 tasks);
    * the service's fault, always: retries exhausted, failed (retries + 1 tasks);
    * gone (resource_not_found): failed, not retried, not polled again (1 task);
    * an unlisted code: taken as the request's fault (1 task).
    """
    retries = 2
    prompts: dict[str, str] = {}
    expected: dict[str, tuple[int, str | None]] = {}  # row id -> (tasks, failure code)
    for code in REQUEST_CODES:
        prompts[f"req-{code}"] = f"a red fox [[sim:task_error={code}]]"
        expected[f"req-{code}"] = (1, code)
    for code in SERVICE_CODES:
        prompts[f"svc1-{code}"] = f"a red fox [[sim:task_error={code}*1]]"
        expected[f"svc1-{code}"] = (2, None)
    prompts["svc-always"] = "a red fox [[sim:task_error=service_error]]"
    expected["svc-always"] = (retries + 1, "service_error")
    prompts["gone"] = "a red fox [[sim:task_error=resource_not_found]]"
    expected["gone"] = (1, "resource_not_found")
    prompts["unlisted"] = "a red fox [[sim:task_error=brand_new_code]]"
    expected["unlisted"] = (1, "brand_new_code")

    state, lines, stats = await run_rows(seedream_env, tmp_path, prompts, retries=retries)

    check_invariants(
        lines,
        stats,
        {**{prompts[r]: tasks for r, (tasks, _) in expected.items()}, CONTROL: 1},
        (*prompts, "control"),
    )
    check_control(lines)
    sim_tasks = seedream_env.app_state.tasks
    for row_id, (tasks, code) in expected.items():
        line = by_id(lines)[row_id]
        if code is None:
            check_succeeded(line, seedream_env)
            failed = [t for t in sim_tasks.values() if t.prompt == prompts[row_id] and t.error_code]
            assert len(failed) == 1 and failed[0].id != line["task_id"]
        else:
            assert line["status"] == "failed", line
            assert line["error"] == {"code": code, "message": f"simulated failure: {code}"}
            assert line["task_id"] in sim_tasks
            assert line["images"] == []
    assert sim_tasks[by_id(lines)["gone"]["task_id"]].polls == 1  # "do not poll again"
    summary = await summary_of(state)
    assert summary.failed == len(REQUEST_CODES) + 3
    assert summary.succeeded == len(SERVICE_CODES) + 1
    await check_state(state, lines)


@pytest.mark.parametrize("retries", [0, 1])
async def test_service_error_always_uses_exactly_retries_plus_one_tasks(
    seedream_env: RunningSimulator, tmp_path: Path, retries: int
) -> None:
    fault = "a red fox [[sim:task_error=service_error]]"
    state, lines, stats = await run_case(seedream_env, tmp_path, fault, retries=retries)

    check_invariants(lines, stats, {fault: retries + 1, CONTROL: 1})
    check_control(lines)
    line = by_id(lines)["fault"]
    assert line["status"] == "failed"
    assert line["error"]["code"] == "service_error"
    await check_state(state, lines)


async def test_request_fault_is_not_resubmitted_by_a_rerun(
    seedream_env: RunningSimulator, tmp_path: Path
) -> None:
    fault = "a red fox [[sim:task_error=content_policy_violation]]"
    await run_case(seedream_env, tmp_path, fault, retries=2)
    state, lines, stats = await run_case(seedream_env, tmp_path, fault, retries=2)

    check_invariants(lines, stats, {fault: 1, CONTROL: 1})
    line = by_id(lines)["fault"]
    assert line["status"] == "failed"
    assert line["error"]["code"] == "content_policy_violation"
    assert state.is_failed()


# -- download faults -------------------------------------------------------------------------


def _downloads_of(sim: RunningSimulator, task_id: str) -> int:
    return sim.app_state.tasks[task_id].downloads


async def test_download_500_once_or_truncated_once_then_success(
    seedream_env: RunningSimulator, tmp_path: Path
) -> None:
    prompts = {
        "d500": "a red fox [[sim:download_status=500*1]]",
        "cut": "a red fox [[sim:download=truncated*1]]",
    }
    state, lines, stats = await run_rows(seedream_env, tmp_path, prompts, retries=2)

    check_invariants(
        lines, stats, {**dict.fromkeys(prompts.values(), 1), CONTROL: 1}, (*prompts, "control")
    )
    check_control(lines)
    for row_id in prompts:
        line = by_id(lines)[row_id]
        check_succeeded(line, seedream_env)
        assert _downloads_of(seedream_env, line["task_id"]) == 2
    await check_state(state, lines)


DOWNLOAD_FAILURES = {
    # mode: (failure code, words of the reason)
    "truncated": ("download_failed", "RemoteProtocolError"),
    "not_image": ("not_an_image", "not an image"),
    "expired": ("result_expired", "HTTP 404"),
}


async def test_download_faults_fail_the_row_without_resubmission(
    seedream_env: RunningSimulator, tmp_path: Path
) -> None:
    prompts = {mode: f"a red fox [[sim:download={mode}]]" for mode in DOWNLOAD_FAILURES}
    state, lines, stats = await run_rows(seedream_env, tmp_path, prompts, retries=1)

    check_invariants(
        lines, stats, {**dict.fromkeys(prompts.values(), 1), CONTROL: 1}, (*prompts, "control")
    )
    check_control(lines)
    for mode, (code, words) in DOWNLOAD_FAILURES.items():
        line = by_id(lines)[mode]
        assert line["status"] == "failed", line
        assert line["error"]["code"] == code, line
        assert words in line["error"]["message"], line
        assert line["task_id"] in seedream_env.app_state.tasks
        assert line["images"] == []
        assert not list((tmp_path / "out").glob(f"{mode}*.*"))
    # Neither a bad body nor an expired URL is worth a second download; a cut one is.
    tasks = seedream_env.app_state.tasks
    assert tasks[by_id(lines)["not_image"]["task_id"]].downloads == 1
    assert tasks[by_id(lines)["expired"]["task_id"]].downloads == 1
    assert tasks[by_id(lines)["truncated"]["task_id"]].downloads > 1
    await check_state(state, lines)


@pytest.fixture
def oversize_sim(monkeypatch: pytest.MonkeyPatch) -> Iterator[RunningSimulator]:
    """A simulator whose oversize body really is above the flow's 50 MiB cap."""
    config = SimulatorConfig(
        latency_seconds=0.3,
        jitter_seconds=0.05,
        download_max_bytes_oversize=MAX_IMAGE_BYTES + (1 << 20),
    )
    with running_simulator(config) as sim:
        monkeypatch.setenv("SEEDREAM_API_KEY", TEST_API_KEY)
        monkeypatch.setenv("SEEDREAM_BASE_URL", sim.base_url)
        yield sim


async def test_download_over_the_size_cap(oversize_sim: RunningSimulator, tmp_path: Path) -> None:
    fault = "a red fox [[sim:download=oversize]]"
    state, lines, stats = await run_case(oversize_sim, tmp_path, fault, retries=1)

    check_invariants(lines, stats, {fault: 1, CONTROL: 1})
    check_control(lines)
    line = by_id(lines)["fault"]
    assert line["status"] == "failed", line
    assert line["error"]["code"] == "image_too_large"
    assert str(MAX_IMAGE_BYTES) in line["error"]["message"]
    assert _downloads_of(oversize_sim, line["task_id"]) == 1  # not retried
    assert not list((tmp_path / "out").glob("fault*"))
    await check_state(state, lines)


# -- malformed and extended bodies -----------------------------------------------------------


async def test_malformed_poll_and_extra_fields_still_succeed(
    seedream_env: RunningSimulator, tmp_path: Path
) -> None:
    prompts = {
        "malformed": "a red fox [[sim:poll_malformed*1]]",
        "extra": "a red fox [[sim:extra_fields]]",
        "both": "a red fox [[sim:poll_malformed*2]] [[sim:extra_fields]]",
    }
    state, lines, stats = await run_rows(seedream_env, tmp_path, prompts)

    check_invariants(
        lines, stats, {**dict.fromkeys(prompts.values(), 1), CONTROL: 1}, (*prompts, "control")
    )
    check_control(lines)
    for row_id in prompts:
        check_succeeded(by_id(lines)[row_id], seedream_env)
    tasks = seedream_env.app_state.tasks
    assert tasks[by_id(lines)["both"]["task_id"]].polls >= 3
    await check_state(state, lines)


# -- everything at once --------------------------------------------------------------------


async def test_many_faults_in_one_run_each_row_once(
    seedream_env: RunningSimulator, tmp_path: Path
) -> None:
    """One dataset mixing the faults: rows stay independent and none is paid twice."""
    cases: dict[str, tuple[str, int, str | None]] = {
        "ok": ("a lighthouse", 1, None),
        "s429": ("a lighthouse [[sim:submit_status=429*1]] [[sim:retry_after=0]]", 1, None),
        "p503": ("a lighthouse [[sim:poll_status=503*1]] [[sim:retry_after=0]]", 1, None),
        # Its task is found in the task list (issue 16): re-attached, not resubmitted.
        "drop": ("a lighthouse [[sim:drop_after_create]]", 1, None),
        "policy": (
            "a lighthouse [[sim:task_error=content_policy_violation]]",
            1,
            "content_policy_violation",
        ),
        "svc1": ("a lighthouse [[sim:task_error=service_error*1]]", 2, None),
        "bad": ("a lighthouse [[sim:download=not_image]]", 1, "not_an_image"),
        "s400": ("a lighthouse [[sim:submit_status=400]]", 0, "invalid_request_error"),
        "p404": ("a lighthouse [[sim:poll_404*1]]", 1, None),
        "extra": ("a lighthouse [[sim:extra_fields]]", 1, None),
    }
    rows = [{"id": row_id, "prompt": prompt} for row_id, (prompt, _, _) in cases.items()]
    output = tmp_path / "out"
    state = await run_dataset(write_jsonl(tmp_path / "rows.jsonl", rows), output, max_concurrency=4)
    lines = manifest(output)
    stats = seedream_env.stats()

    check_invariants(
        lines, stats, {prompt: tasks for prompt, tasks, _ in cases.values()}, tuple(cases)
    )
    for row_id, (_, _, code) in cases.items():
        line = by_id(lines)[row_id]
        if code is None:
            check_succeeded(line, seedream_env)
        else:
            assert line["status"] != "succeeded"
            assert line["error"]["code"] == code, line
    summary = await summary_of(state)
    assert (summary.succeeded, summary.failed, summary.outcome_unknown) == (7, 3, 0)
    await check_state(state, lines)


def test_the_control_prompt_carries_no_marker() -> None:
    """Guard: the control row would hide faults if it carried a marker itself."""
    from prefect_seedream.simulator import parse_fault_plan

    assert parse_fault_plan(CONTROL).is_empty
