"""A row's state machine without Prefect: :class:`RowRunner` and :func:`generate_recorded`
against the bundled simulator over loopback HTTP, and against a mock transport for answers the
simulator cannot give in that order.

Each test drives rows the way the dataset flow does (a ledger in a folder, a budget, a
concurrency limiter, a submission gate, a listener), then checks what a row leaves behind: its
manifest line, its ledger record, its files and what the API saw (the simulator's counters).
No task run, no flow run, no Prefect server.
"""

from __future__ import annotations

import asyncio
import io
import itertools
import json
import logging
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from prefect_seedream.api.client import PollPolicy, RetryPolicy, SeedreamClient
from prefect_seedream.api.models import GenerationRequest
from prefect_seedream.engine.account import SubmissionGate
from prefect_seedream.engine.budget import CreditBudget
from prefect_seedream.engine.dataset import InvalidRow, ValidRow
from prefect_seedream.engine.gallery import Gallery
from prefect_seedream.engine.generation import (
    GenerationOptions,
    StepReporter,
    SubmissionPolicy,
    WaitOptions,
    generate_recorded,
)
from prefect_seedream.engine.ledger import LedgerState, TaskLedger
from prefect_seedream.engine.listener import RunListener
from prefect_seedream.engine.manifest import RunLine, read_manifest
from prefect_seedream.engine.reconcile import TaskListIndex
from prefect_seedream.engine.run_folder import RunParts
from prefect_seedream.engine.runner import RetryOptions, RowLimiter, RowRunner
from prefect_seedream.engine.storage import ImageStore
from prefect_seedream.simulator import RunningSimulator, SimulatorConfig, running_simulator

KEY = "sk-unit-runner-0123456789"
RUN_ID = "run-unit-1"
LOGGER = logging.getLogger("tests.unit.row_runner")
#: Fast waits: the first poll at the task's estimate (0.5 s at least), then every 0.05-0.2 s.
FAST_WAIT = WaitOptions(max_wait_seconds=20.0, poll_interval=0.05, max_poll_interval=0.2)
FAST_CLIENT_RETRY = RetryPolicy(max_attempts=2, backoff_base=0.01, backoff_max=0.02, max_retry_after=5.0)
_counter = itertools.count()


def prompt(text: str) -> str:
    """A prompt no other test sends (the simulator counts ``*N`` markers per prompt text)."""
    return f"{text} #{next(_counter)}-{time.monotonic_ns()}"


def row(number: int, text: str, **fields: Any) -> ValidRow:
    return ValidRow(number=number, row_id=f"r{number}", request=GenerationRequest(prompt=text, **fields))


class Recorder(RunListener):
    """A listener that keeps every ``seedream.generation.*`` call."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, str | None, dict[str, Any]]] = []

    def generation_event(self, kind, task_id, *, label=None, model=None, payload=None) -> None:  # type: ignore[no-untyped-def,override]
        self.events.append((kind, task_id, label, dict(payload or {})))

    def kinds(self, label: str | None = None) -> list[str]:
        return [kind for kind, _, seen, _ in self.events if label is None or seen == label]


@pytest.fixture(scope="module")
def shared_sim() -> Iterator[RunningSimulator]:
    config = SimulatorConfig(latency_seconds=0.1, jitter_seconds=0.0, estimated_time=0, api_keys={KEY})
    with running_simulator(config) as running:
        yield running


@pytest.fixture
def sim(shared_sim: RunningSimulator) -> RunningSimulator:
    """The module's simulator with no task and no counter."""
    shared_sim.reset()
    return shared_sim


def sim_client(sim: RunningSimulator, **kwargs: Any) -> SeedreamClient:
    kwargs.setdefault("retry", FAST_CLIENT_RETRY)
    kwargs.setdefault("batch_status_reads", False)
    return SeedreamClient(api_key=KEY, base_url=sim.base_url, **kwargs)


def make_runner(
    client: SeedreamClient,
    output: Path,
    *,
    max_credits: float | None = None,
    retries: int = 0,
    max_concurrency: int = 4,
    listener: RunListener | None = None,
    gate: SubmissionGate | None = None,
    finder: TaskListIndex | None = None,
    resubmit_unknown: bool = False,
    row_events: Any = "all",
    slots: Any = None,
    on_row: Any = None,
) -> RowRunner:
    """A runner as the dataset flow builds one (``execution.execute_rows``), with fast waits
    and retries: the one place these tests build a :class:`RowRunner`."""
    return RowRunner(
        ledger=TaskLedger(ImageStore(output), client.identity),
        client=client,
        budget=CreditBudget(limit=max_credits),
        limiter=RowLimiter(max_concurrency, slots),
        generation=GenerationOptions(wait=FAST_WAIT, resubmit_unknown=resubmit_unknown),
        retry=RetryOptions(retries=retries, delay_seconds=0.05),
        row_events=row_events,
        gallery=Gallery(),
        run_id=RUN_ID,
        gate=gate,
        finder=finder,
        listener=listener or RunListener(),
        on_row=on_row or (lambda item: None),
    )


async def run_rows(runner: RowRunner, rows: list[Any], *, together: bool = False) -> list[RunLine]:
    """Run rows one after the other (or all at once), as a batch of the dataset flow does."""
    reporter = runner.reporter_for(LOGGER, verbose=False)
    if together:
        return list(await asyncio.gather(*(runner.run(r, reporter) for r in rows)))
    return [await runner.run(r, reporter) for r in rows]


def merge(output: Path, items: list[RunLine]) -> list[dict[str, Any]]:
    """Write the lines as the run's part and merge them into ``manifest.jsonl``; read it back."""
    parts = RunParts(ImageStore(output), RUN_ID)
    numbers = [item.line.row_number for item in items]
    parts.write(min(numbers), max(numbers), items)
    parts.merge(max(numbers), lambda first, last: [], lambda item: None)
    return [json.loads(raw) for raw in (output / "manifest.jsonl").read_text().splitlines()]


# -- success -----------------------------------------------------------------------------------


async def test_a_row_is_submitted_waited_for_stored_and_listed_in_the_manifest(
    sim: RunningSimulator, tmp_path: Path
) -> None:
    output = tmp_path / "out"
    text = prompt("A lighthouse at dawn")
    async with sim_client(sim) as client:
        runner = make_runner(client, output)
        [item] = await run_rows(runner, [row(1, text)])
        ledger = runner.ledger

    line = item.line
    assert line.status == "succeeded", line.error
    assert line.error is None and line.submissions == 1 and not line.reused
    [task] = sim.tasks(text)
    assert line.task_id == task["id"]
    stats = sim.stats()
    assert stats["tasks_created"] == 1 and stats["submit_requests"] == 1
    assert item.spent == line.credits == stats["credits_charged"] > 0
    assert item.at_risk == 0.0 and runner.budget.spent == item.spent and runner.budget.reserved == 0.0

    # The image is on disk, a real image of the size the line says.
    [image] = line.images
    assert Path(image.uri).parent == output.resolve() and Path(image.uri).name.startswith("r1")
    with Image.open(image.uri) as opened:
        assert opened.size == (image.width, image.height)
    assert image.bytes == Path(image.uri).stat().st_size

    # The ledger says it is stored, with the same task and image.
    record = ledger.record_for("r1", GenerationRequest(prompt=text))
    assert record.state is LedgerState.STORED and record.task_id == task["id"]
    assert [i.uri for i in record.images] == [image.uri]

    # The manifest line, as the run writes it.
    [written] = merge(output, [item])
    assert written["row_id"] == "r1" and written["status"] == "succeeded"
    assert written["task_id"] == task["id"] and written["images"][0]["uri"] == image.uri
    assert read_manifest(str(output))[0].images[0].uri == image.uri


async def test_a_stored_row_is_reused_by_the_next_run_without_any_submission(
    sim: RunningSimulator, tmp_path: Path
) -> None:
    output = tmp_path / "out"
    rows = [row(n, prompt(f"A kite number {n}")) for n in (1, 2)]
    async with sim_client(sim) as client:
        first = await run_rows(make_runner(client, output), rows, together=True)
        again = make_runner(client, output)
        again.run_id = "run-unit-2"  # another run: what the first paid is not its spending
        second = await run_rows(again, rows)

    assert [i.line.status for i in first] == ["succeeded", "succeeded"]
    assert [i.line.status for i in second] == ["succeeded", "succeeded"]
    assert all(i.line.reused and i.spent == 0.0 for i in second)
    assert [i.line.images for i in second] == [i.line.images for i in first]
    assert sim.stats()["tasks_created"] == 2 and sim.stats()["submit_requests"] == 2


async def test_rows_hold_a_slot_while_in_flight_and_never_more_than_the_limit(
    sim: RunningSimulator, tmp_path: Path
) -> None:
    """A slot of the global limit per generation in flight; never more than
    ``max_concurrency`` at once."""

    class CountingSlots:
        def __init__(self) -> None:
            self.held = self.peak = self.taken = 0

        @asynccontextmanager
        async def slot(self) -> AsyncIterator[None]:
            self.held += 1
            self.taken += 1
            self.peak = max(self.peak, self.held)
            try:
                yield
            finally:
                self.held -= 1

    slots = CountingSlots()
    rows = [row(n, prompt(f"A paper lantern {n}")) for n in range(1, 7)]
    async with sim_client(sim) as client:
        items = await run_rows(make_runner(client, tmp_path / "out", max_concurrency=2, slots=slots), rows, together=True)

    assert [i.line.status for i in items] == ["succeeded"] * 6
    assert slots.taken == 6 and slots.held == 0
    assert slots.peak == 2  # the limit was reached, and never passed
    assert sim.stats()["peak_concurrent_tasks"] <= 2


async def test_a_row_gives_its_slot_back_once_its_task_is_terminal_not_after_its_download(
    sim: RunningSimulator, tmp_path: Path
) -> None:
    """With one slot, the second row is submitted while the first one's image downloads."""
    log: list[str] = []

    class Log(RunListener):
        def generation_event(self, kind, task_id, *, label=None, model=None, payload=None) -> None:  # type: ignore[no-untyped-def,override]
            log.append(f"{label} {kind}")

    rows = [row(1, prompt("A slow download [[sim:download_delay=0.5]]")), row(2, prompt("A quick one"))]
    async with sim_client(sim) as client:
        runner = make_runner(
            client, tmp_path / "out", max_concurrency=1, listener=Log(),
            on_row=lambda item: log.append(f"{item.line.row_id} done"),
        )
        items = await run_rows(runner, rows, together=True)

    assert [i.line.status for i in items] == ["succeeded", "succeeded"]
    assert log.index("r1 completed") < log.index("r2 submitted") < log.index("r1 done"), log


async def test_an_invalid_row_is_a_failed_line_and_sends_nothing(sim: RunningSimulator, tmp_path: Path) -> None:
    invalid = InvalidRow(number=3, row_id="r3", prompt="", reason="prompt is missing", parameters={})
    async with sim_client(sim) as client:
        [item] = await run_rows(make_runner(client, tmp_path / "out"), [invalid])
    assert item.line.status == "failed" and item.line.row_number == 3
    assert item.line.error is not None and item.line.error.code == "invalid_row"
    assert item.line.error.message == "prompt is missing"
    assert sim.stats()["submit_requests"] == 0


# -- failures ----------------------------------------------------------------------------------


async def test_a_5xx_on_submit_is_retried_with_the_same_key_and_pays_once(
    sim: RunningSimulator, tmp_path: Path
) -> None:
    """Two 502 answers use up the client's two attempts; the row's retry sends the submission
    again with the same Idempotency-Key (a 5xx may follow a creation) and succeeds."""
    text = prompt("A red fox [[sim:submit_status=502*2]] [[sim:retry_after=0]]")
    async with sim_client(sim) as client:
        runner = make_runner(client, tmp_path / "out", retries=1)
        [item] = await run_rows(runner, [row(1, text)])

    assert item.line.status == "succeeded", item.line.error
    stats = sim.stats()
    assert stats["submit_requests"] == 3 and stats["tasks_created"] == 1
    assert item.line.submissions == 1  # one key: one submission that may have created a task
    assert item.spent == stats["credits_charged"]


async def test_a_5xx_on_every_submission_fails_the_row_after_its_retries_with_the_apis_answer(
    sim: RunningSimulator, tmp_path: Path
) -> None:
    text = prompt("A red fox [[sim:submit_status=502]] [[sim:retry_after=0]]")
    async with sim_client(sim) as client:
        [item] = await run_rows(make_runner(client, tmp_path / "out", retries=1), [row(1, text)])

    assert item.line.status == "failed"
    assert item.line.error is not None and item.line.error.code == "upstream_error"
    assert sim.stats()["submit_requests"] == 4 and sim.stats()["tasks_created"] == 0  # 2 attempts x 2
    assert item.spent == 0.0 and item.at_risk == 0.0


async def test_a_refused_row_fails_with_the_apis_reason_and_is_not_retried(
    sim: RunningSimulator, tmp_path: Path
) -> None:
    listener = Recorder()
    text = prompt("A red fox [[sim:submit_status=400]]")
    async with sim_client(sim) as client:
        runner = make_runner(client, tmp_path / "out", retries=3, listener=listener)
        [item] = await run_rows(runner, [row(1, text)])

    line = item.line
    assert line.status == "failed" and line.task_id is None
    assert line.error is not None and line.error.code == "invalid_request_error"
    assert line.error.message  # the API's own message
    assert sim.stats()["submit_requests"] == 1  # a 400 is final: no retry
    assert line.submissions == 0 and item.spent == 0.0 and item.at_risk == 0.0
    assert listener.events == []  # nothing was submitted
    assert runner.budget.reserved == 0.0 and runner.budget.spent == 0.0


async def test_a_task_that_fails_is_a_failed_line_and_a_failed_event(sim: RunningSimulator, tmp_path: Path) -> None:
    listener = Recorder()
    text = prompt("A red fox [[sim:task_error=content_policy_violation]]")
    async with sim_client(sim) as client:
        [item] = await run_rows(make_runner(client, tmp_path / "out", retries=2, listener=listener), [row(1, text)])

    line = item.line
    assert line.status == "failed" and line.task_id is not None
    assert line.error is not None and line.error.code == "content_policy_violation"
    assert sim.stats()["tasks_created"] == 1  # the request's own fault: never submitted again
    assert listener.kinds() == ["submitted", "failed"]
    assert {task_id for _, task_id, _, _ in listener.events} == {line.task_id}
    assert listener.events[-1][3]["code"] == "content_policy_violation"


# -- a submission whose answer never came ---------------------------------------------------------


async def test_a_submit_timeout_is_found_in_the_task_list_and_never_paid_twice(
    sim: RunningSimulator, tmp_path: Path
) -> None:
    """The task is created, its answer never comes (the client gives up after 0.5 s): the row
    finds its task in the API's task list, re-attaches to it and stores its image, in the same
    run, without a second submission."""
    text = prompt("A red fox [[sim:submit_hang]]")
    async with sim_client(sim, submit_timeout=0.5) as client:
        finder = TaskListIndex(client, submit_timeout=0.5)
        runner = make_runner(client, tmp_path / "out", retries=2, finder=finder)
        [item] = await run_rows(runner, [row(1, text)])

    assert item.line.status == "succeeded", item.line.error
    [task] = sim.tasks(text)
    assert item.line.task_id == task["id"] and item.line.images
    stats = sim.stats()
    assert stats["submit_requests"] == 1 and stats["tasks_created"] == 1
    assert stats["submits_hung"] == 1 and stats["task_list_requests"] >= 1
    assert finder.lookups == 1 and finder.found == 1
    assert item.spent == stats["credits_charged"]


async def test_an_unknown_outcome_is_not_resubmitted_unless_asked_and_then_with_its_key(
    sim: RunningSimulator, tmp_path: Path
) -> None:
    """Without a task list to look at, the row stays ``outcome_unknown`` (its credits at risk,
    never retried); a run with ``resubmit_unknown`` sends the same key, which the API answers
    with the task the lost submission created: still one task, paid once."""
    output = tmp_path / "out"
    rows = [row(1, prompt("A red fox [[sim:submit_hang]]"))]
    async with sim_client(sim, submit_timeout=0.5) as client:
        first = make_runner(client, output, retries=3)
        [lost] = await run_rows(first, rows)
        assert lost.line.status == "outcome_unknown"
        assert lost.line.error is not None and "--resubmit-unknown" in lost.line.error.message
        assert lost.at_risk == rows[0].request.reserved_credits and lost.spent == 0.0
        assert sim.stats()["submit_requests"] == 1  # not retried: it may have been billed

        # The same run (or a re-run) without resubmit_unknown refuses it again, sending nothing.
        [refused] = await run_rows(make_runner(client, output, retries=3), rows)
        assert refused.line.status == "outcome_unknown" and sim.stats()["submit_requests"] == 1

        [resent] = await run_rows(make_runner(client, output, resubmit_unknown=True), rows)

    assert resent.line.status == "succeeded", resent.line.error
    stats = sim.stats()
    assert stats["submit_requests"] == 2 and stats["tasks_created"] == 1
    assert stats["idempotent_replays"] == 1
    assert resent.line.submissions == 1


# -- the account and the budget ------------------------------------------------------------------


async def test_a_402_closes_the_gate_and_later_rows_are_skipped_unsent(
    sim: RunningSimulator, tmp_path: Path
) -> None:
    gate = SubmissionGate()
    rows = [
        row(1, prompt("A red fox [[sim:quota_error=insufficient_quota]]")),
        row(2, prompt("A blue hare")),
        row(3, prompt("A green owl")),
    ]
    async with sim_client(sim) as client:
        items = await run_rows(make_runner(client, tmp_path / "out", retries=2, gate=gate), rows)

    assert [i.line.status for i in items] == ["skipped"] * 3
    assert {i.line.error.code for i in items if i.line.error} == {"insufficient_quota"}
    stop = gate.report()
    assert stop is not None and stop.code == "insufficient_quota"
    stats = sim.stats()
    assert stats["submit_requests"] == 1 and stats["tasks_created"] == 0  # rows 2 and 3: never sent
    assert all(i.spent == 0.0 and i.at_risk == 0.0 for i in items)


async def test_a_402_for_the_run_leaves_rows_already_in_flight_to_finish(
    sim: RunningSimulator, tmp_path: Path
) -> None:
    """A row submitted before the 402 is still waited for and stored."""
    gate = SubmissionGate()
    slow = row(1, prompt("A slow fox [[sim:latency=0.6]]"))
    broke = row(2, prompt("A red fox [[sim:quota_error=insufficient_quota]]"))
    after = row(3, prompt("A green owl"))
    async with sim_client(sim) as client:
        runner = make_runner(client, tmp_path / "out", gate=gate)
        reporter = runner.reporter_for(LOGGER, verbose=False)
        in_flight = asyncio.create_task(runner.run(slow, reporter))
        while sim.stats()["tasks_created"] < 1:
            await asyncio.sleep(0.02)
        refused = await runner.run(broke, reporter)
        skipped = await runner.run(after, reporter)
        finished = await in_flight

    assert finished.line.status == "succeeded"
    assert refused.line.status == "skipped" and skipped.line.status == "skipped"
    assert sim.stats()["tasks_created"] == 1 and sim.stats()["submit_requests"] == 2


async def test_the_budget_skips_rows_past_max_credits_and_submits_none_of_them(
    sim: RunningSimulator, tmp_path: Path
) -> None:
    """The first row reserves the model's list price (2.5 credits); the simulator's answer
    says it pre-charges 2, which the budget learns: with max_credits=5, two rows are sent, and
    the third would pass it."""
    rows = [row(n, prompt(f"A tin robot {n}")) for n in range(1, 5)]
    assert rows[0].request.reserved_credits == 2.5
    async with sim_client(sim) as client:
        runner = make_runner(client, tmp_path / "out", max_credits=5.0)
        items = await run_rows(runner, rows)

    assert [i.line.status for i in items] == ["succeeded", "succeeded", "skipped", "skipped"]
    assert runner.budget.estimate(rows[0].request) == 2.0  # learned from the API's answer
    for skipped in items[2:]:
        assert skipped.line.error is not None and skipped.line.error.code == "budget_exceeded"
        assert "max_credits=5" in skipped.line.error.message and skipped.line.submissions == 0
    stats = sim.stats()
    assert stats["tasks_created"] == 2 and stats["submit_requests"] == 2
    assert runner.budget.spent == sum(i.spent for i in items) == stats["credits_charged"] == 4.0
    assert runner.budget.reserved == 0.0


async def test_rows_at_once_never_reserve_past_max_credits(sim: RunningSimulator, tmp_path: Path) -> None:
    """Eight rows at once against a budget for three: three are sent, whatever the order."""
    rows = [row(n, prompt(f"A glass bird {n}")) for n in range(1, 9)]
    price = rows[0].request.reserved_credits
    async with sim_client(sim) as client:
        runner = make_runner(client, tmp_path / "out", max_credits=3 * price, max_concurrency=8)
        items = await run_rows(runner, rows, together=True)

    statuses = [i.line.status for i in items]
    assert statuses.count("succeeded") == 3 and statuses.count("skipped") == 5
    assert sim.stats()["tasks_created"] == 3


# -- what a listener hears -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("row_events", "success", "failure"),
    [
        ("all", ["submitted", "completed"], ["submitted", "failed"]),
        ("failures", [], ["failed"]),
        ("none", [], []),
    ],
)
async def test_a_listener_hears_what_row_events_asks_for(
    sim: RunningSimulator, tmp_path: Path, row_events: str, success: list[str], failure: list[str]
) -> None:
    listener = Recorder()
    rows = [row(1, prompt("A calm sea")), row(2, prompt("A storm [[sim:task_error=service_error]]"))]
    async with sim_client(sim) as client:
        runner = make_runner(client, tmp_path / "out", listener=listener, row_events=row_events)
        items = await run_rows(runner, rows, together=True)

    assert [i.line.status for i in items] == ["succeeded", "failed"]
    assert listener.kinds("r1") == success and listener.kinds("r2") == failure
    for kind, task_id, label, payload in listener.events:
        assert task_id == items[int(label[1:]) - 1].line.task_id
    completed = [payload for kind, _, _, payload in listener.events if kind == "completed"]
    assert completed == ([{"images": 1, "credits": items[0].line.credits}] if success else [])


async def test_a_listener_that_fails_changes_nothing_of_the_row(
    sim: RunningSimulator, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The submitted event comes after the API accepted (and charged) the submission: a
    listener raising there must not leave the row looking unanswered."""

    class Broken(RunListener):
        def generation_event(self, kind: Any, task_id: str, **facts: Any) -> None:
            raise RuntimeError("the events endpoint is down")

    async with sim_client(sim) as client:
        runner = make_runner(client, tmp_path / "out", listener=Broken(), row_events="all")
        (item,) = await run_rows(runner, [row(1, prompt("A quiet harbour"))])

    assert item.line.status == "succeeded" and item.line.task_id and item.line.submissions == 1
    assert "the submitted event of task" in caplog.text and "the completed event of task" in caplog.text


# -- generate_recorded: the write-ahead rule, against a mock transport ------------------------


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 24), (10, 120, 200)).save(buffer, format="PNG")
    return buffer.getvalue()


class ScriptedAPI:
    """A mock API: each submission is checked against the ledger on disk as it arrives."""

    def __init__(self, ledger: TaskLedger, key: str, submit_answers: list[Any]) -> None:
        self.ledger, self.key = ledger, key
        self.submit_answers = submit_answers
        self.seen_on_disk: list[tuple[str, str | None, str]] = []
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.method == "POST" and request.url.path == "/v1/images/generations":
            saved = self.ledger.load(self.key)
            assert saved is not None  # the intent is on disk before a byte is sent
            self.seen_on_disk.append((saved.state.value, saved.idempotency_key, request.headers["Idempotency-Key"]))
            answer = self.submit_answers.pop(0)
            if isinstance(answer, BaseException):
                raise answer
            return answer
        if request.url.path.startswith("/v1/tasks/"):
            return httpx.Response(200, json=_task("completed", results=["https://cdn.test/t1-0.png"]))
        if request.url.host == "cdn.test":
            return httpx.Response(200, content=_png(), headers={"Content-Type": "image/png"})
        return httpx.Response(404, json={"error": {"code": 404, "message": "no route"}})


def _task(status: str, **extra: Any) -> dict[str, Any]:
    return {
        "id": "task-unified-1-mock", "model": "doubao-seedream-4.5", "object": "image.generation.task",
        "status": status, "created": int(time.time()), "progress": 100 if status == "completed" else 0,
        "task_info": {"estimated_time": 0}, "usage": {"credits_reserved": 2.0, "credits_used": 2.0},
        **extra,
    }


def mock_client(handler: ScriptedAPI) -> SeedreamClient:
    return SeedreamClient(
        api_key=KEY, base_url="https://api.seedream.test", transport=httpx.MockTransport(handler),
        retry=RetryPolicy(max_attempts=1), batch_status_reads=False,
        poll=PollPolicy(min_interval=0.01, max_interval=0.02, first_poll_floor=0.0, not_found_grace=0.0),
    )


async def test_the_intent_and_its_key_are_saved_before_the_submission_leaves(tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "out")
    ledger = TaskLedger(store, "https://api.seedream.test")
    request = GenerationRequest(prompt="A red fox in the snow")
    record = ledger.record_for("fox", request)
    handler = ScriptedAPI(ledger, record.key, [httpx.Response(200, json=_task("pending"))])
    reporter = StepReporter(LOGGER, events="none")

    async with mock_client(handler) as client:
        done = await generate_recorded(
            record, request, client=client, ledger=ledger, reporter=reporter,
            options=GenerationOptions(wait=WaitOptions(poll_interval=0.01, max_poll_interval=0.02)),
            thumbnails=False, policy=SubmissionPolicy(run_id=RUN_ID),
        )

    [(state, saved_key, sent_key)] = handler.seen_on_disk
    assert state == "submitting" and saved_key == sent_key and sent_key.startswith("seedream-")
    assert done.state is LedgerState.STORED and done.task_id == "task-unified-1-mock"
    loaded = ledger.load(record.key)
    assert loaded is not None and loaded.state is LedgerState.STORED and loaded.run_id == RUN_ID
    assert [Path(i.uri).exists() for i in loaded.images] == [True]
    assert loaded.charge().spent == 2.0 and loaded.charge().at_risk == 0.0


async def test_a_5xx_then_a_timeout_keeps_one_key_and_the_row_stays_unknown(tmp_path: Path) -> None:
    """A 502 (the task may exist) then a submission that times out after it was sent: the
    row's retry sent the same key, and the row ends ``outcome_unknown``, its credits at risk,
    never sent a third time (a simulator answers a submission, it cannot lose it on cue)."""
    output = tmp_path / "out"
    request = GenerationRequest(prompt="A red fox in the snow")
    ledger = TaskLedger(ImageStore(output), "https://api.seedream.test")
    key = ledger.record_for("r1", request).key
    bad_gateway = httpx.Response(502, json={"error": {"code": 502, "message": "Upstream unavailable", "type": "upstream_error"}})
    handler = ScriptedAPI(ledger, key, [bad_gateway, httpx.ReadTimeout("no answer"), bad_gateway])

    async with mock_client(handler) as client:
        runner = make_runner(client, output, retries=5)
        [item] = await run_rows(runner, [ValidRow(number=1, row_id="r1", request=request)])

    assert item.line.status == "outcome_unknown"
    assert [state for state, _, _ in handler.seen_on_disk] == ["submitting", "submitting"]
    assert len({sent for _, _, sent in handler.seen_on_disk}) == 1  # one key, sent twice
    assert item.at_risk == request.reserved_credits and item.spent == 0.0
    assert runner.budget.spent == item.at_risk  # counted against max_credits
    record = ledger.load(key)
    assert record is not None and record.outcome_unknown and record.submissions == 1
