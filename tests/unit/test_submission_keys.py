"""What keeps a paid submission from being paid twice or taken for another row's (issue 16):
a key in doubt stays in doubt, a submission is withdrawn when the account stopped while its
intent was written, the task list never matches another submission's task, and sharing a stop
between shards never breaks a run. The engine alone, no Prefect (``submit_generation`` in a flow
is tested in ``tests/test_submission_safety.py``).

Mock transports and a stub task list stand in for answers a server cannot be made to give in
that order (a 502, then the connection refused).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from prefect_seedream.api import (
    BadRequestError,
    GenerationRequest,
    SeedreamConnectionError,
    ServerError,
)
from prefect_seedream.api.errors import RateLimitError, api_error_for_status
from prefect_seedream.api.models import TaskPage
from prefect_seedream.engine.account import SubmissionGate, SubmissionsStopped
from prefect_seedream.engine.generation import (
    GenerationOptions,
    StepReporter,
    SubmissionPolicy,
    generate_recorded,
)
from prefect_seedream.engine.ledger import LedgerRecord, LedgerState, TaskLedger, prompt_sha256
from prefect_seedream.engine.reconcile import TaskListIndex
from prefect_seedream.engine.storage import ImageStore
from tests.unit.test_client_edge_cases import Recorder, error_json, make_client, sleeps, task_json

__all__ = ["sleeps"]  # the fixture

REQUEST = GenerationRequest(prompt="A red fox in the snow", size="2K")
MODEL = REQUEST.model
REPORTER = StepReporter(logging.getLogger("tests.submission_safety"), events="none")
BAD_GATEWAY = httpx.Response(502, json=error_json(502, "Upstream unavailable", type="upstream_error"))
REFUSED = httpx.ConnectError("connection refused")
RATE_LIMITED = httpx.Response(429, json=error_json(429, "Too many requests", type="rate_limit_error"))


async def attempt(handler: Recorder, ledger: TaskLedger, record: LedgerRecord, **kwargs: Any) -> None:
    async with make_client(handler) as client:
        await generate_recorded(
            record, REQUEST, client=client, ledger=ledger, options=GenerationOptions(),
            reporter=REPORTER, thumbnails=False, **kwargs,
        )


def keys_sent(handler: Recorder) -> list[str]:
    return [request.headers["Idempotency-Key"] for request in handler.requests]


async def test_a_key_in_doubt_stays_in_doubt_whatever_a_later_attempt_hears(
    tmp_path: Path, sleeps: list[float]
) -> None:
    """A 502 may follow the creation of the task: a connection refused on the retry after it,
    or a 429 on a later submission with that key, proves nothing about that task, so the next
    submission sends the same key again (a new key could pay a second time)."""
    ledger = TaskLedger(ImageStore(str(tmp_path)), "https://api.seedream.test")
    record = ledger.record_for("fox", REQUEST)

    first = Recorder(BAD_GATEWAY, REFUSED, REFUSED)  # 3 attempts: 502, then never sent
    with pytest.raises(SeedreamConnectionError):
        await attempt(first, ledger, record)
    [key] = set(keys_sent(first))
    saved = ledger.load(record.key)
    assert saved is not None and saved.key_in_doubt and saved.idempotency_key == key
    assert saved.state is LedgerState.NEW and saved.submissions == 1

    second = Recorder(RATE_LIMITED)  # the same key, refused 3 times: still in doubt
    with pytest.raises(RateLimitError):
        await attempt(second, ledger, saved)
    assert set(keys_sent(second)) == {key} and ledger.load(record.key).key_in_doubt  # type: ignore[union-attr]

    third = Recorder(httpx.Response(400, json=error_json(400, "Bad size", param="size")))
    with pytest.raises(BadRequestError):
        await attempt(third, ledger, ledger.load(record.key))  # type: ignore[arg-type]
    assert keys_sent(third) == [key] and ledger.load(record.key).key_in_doubt  # type: ignore[union-attr]


async def test_a_clear_refusal_of_a_new_key_settles_it(tmp_path: Path, sleeps: list[float]) -> None:
    """Without a 5xx anywhere, a refused submission created nothing: the next one gets a new key."""
    ledger = TaskLedger(ImageStore(str(tmp_path)), "https://api.seedream.test")
    record = ledger.record_for("fox", REQUEST)
    handler = Recorder(RATE_LIMITED)
    with pytest.raises(RateLimitError):
        await attempt(handler, ledger, record)
    saved = ledger.load(record.key)
    assert saved is not None and not saved.key_in_doubt and saved.submissions == 0

    handler = Recorder(BAD_GATEWAY)  # every attempt 502: the key is in doubt
    with pytest.raises(ServerError):
        await attempt(handler, ledger, saved)
    assert ledger.load(record.key).key_in_doubt  # type: ignore[union-attr]


async def test_a_submission_is_withdrawn_when_the_account_stopped_while_its_intent_was_written(
    tmp_path: Path, sleeps: list[float]
) -> None:
    """The gate is checked again right before the request leaves: nothing is sent, and the
    record says the row was stopped (not a submission of unknown outcome)."""
    ledger = TaskLedger(ImageStore(str(tmp_path)), "https://api.seedream.test")
    record = ledger.record_for("fox", REQUEST)
    gate = SubmissionGate()
    handler = Recorder(httpx.Response(200, json=task_json()))

    class TheKeyIsRefusedMeanwhile(SubmissionPolicy):
        async def before_submit(self) -> None:  # the gate was still open
            gate.check(MODEL)
            gate.trip(api_error_for_status(401, "Invalid or expired token"), MODEL)

        def before_send(self) -> None:
            gate.check(MODEL)

    with pytest.raises(SubmissionsStopped):
        await attempt(handler, ledger, record, policy=TheKeyIsRefusedMeanwhile())
    assert handler.calls == 0
    saved = ledger.load(record.key)
    assert saved is not None and saved.state is LedgerState.NEW and saved.stopped
    assert not saved.outcome_unknown and saved.submissions == 0
    assert saved.error is not None and saved.error["code"] == "authentication_error"


class StubTaskList:
    """``list_tasks`` of a client, answering from a fixed list (newest first)."""

    def __init__(self, tasks: list[dict[str, Any]]) -> None:
        now = time.time()  # created a second after the lost submission's intent (see lost())
        self.tasks = [{"created": int(now - 59), **task} for task in tasks]

    async def list_tasks(self, model: str | None = None, page: int = 1, page_size: int = 100) -> TaskPage:
        chosen = [t for t in self.tasks if model is None or t["model"] == model]
        return TaskPage.model_validate(
            {"data": chosen[(page - 1) * page_size:page * page_size], "total": len(chosen),
             "page": page, "page_size": page_size}
        )


def lost(prompt: str = REQUEST.prompt, key: str = "seedream-mine") -> LedgerRecord:
    """A record whose submission's answer was lost a minute ago."""
    return LedgerRecord(
        key="k", row_id="row", request_hash="h", model=MODEL, api="a", state=LedgerState.OUTCOME_UNKNOWN,
        intent_at=time.time() - 60, idempotency_key=key, key_in_doubt=True, submissions=1,
        prompt_sha256=prompt_sha256(prompt),
    )


def listed(task_id: str, prompt: str = REQUEST.prompt, **extra: Any) -> dict[str, Any]:
    return {"id": task_id, "status": "completed", "model": MODEL, "prompt": prompt, **extra}


def shared(*prompts: str) -> Any:
    async def keys() -> set[tuple[str, str | None]]:
        return {(prompt_sha256(p), MODEL) for p in prompts}
    return keys


@pytest.mark.parametrize(
    ("tasks", "shared_prompts", "found"),
    [
        ([listed("t1")], (), "t1"),  # one task of that prompt, in the window: ours
        ([listed("t1", idempotency_key="seedream-other")], (), None),  # another's key
        ([listed("t1", idempotency_key="seedream-mine")], (REQUEST.prompt,), "t1"),  # our key
        ([listed("t1")], (REQUEST.prompt,), None),  # another row has that prompt: could be its
        ([listed("t1"), listed("t2")], (), None),  # two candidates: no guess
        ([listed("t1", prompt="another prompt")], (), None),
    ],
)
async def test_the_task_list_never_matches_another_submissions_task(
    tasks: list[dict[str, Any]], shared_prompts: tuple[str, ...], found: str | None
) -> None:
    index = TaskListIndex(StubTaskList(tasks), shared_prompts=shared(*shared_prompts))  # type: ignore[arg-type]
    task = await index.find(lost())
    assert (task.id if task else None) == found


def test_sharing_a_stop_between_shards_never_breaks_the_run() -> None:
    """A store that fails to read or write ``stop.json`` costs the sharing, not the run."""

    def broken(*_: Any) -> Any:
        raise OSError("the object store timed out")

    gate = SubmissionGate(on_stop=broken, peek=broken)
    gate.check(MODEL)  # a failed read is no stop
    assert gate.trip(api_error_for_status(402, "No credits", api_code="insufficient_quota"), MODEL)
    with pytest.raises(SubmissionsStopped):
        gate.check(MODEL)


def test_only_the_model_field_makes_a_403_about_one_model() -> None:
    assert api_error_for_status(403, "Access denied", param="model").account_scope == "model"
    assert api_error_for_status(403, "This key may not access any model").account_scope == "account"
