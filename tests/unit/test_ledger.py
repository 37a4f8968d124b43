"""Unit tests of the rules that keep a row from being paid twice, and of the manifest's parts.

No server here: the ledger record's transitions and next steps, the part files merged into
one manifest line per row, a stop shared by shards, the batches of rows, and every docstring
example of the Prefect-free modules (the API layer, the engine, the simulator; they are
documentation; this keeps them true). The docstring examples of the Prefect layer, and the row
ranges of shards, are tested in ``tests/test_ledger_and_parts.py``.
"""

from __future__ import annotations

import doctest
import importlib
import json
import pkgutil
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import prefect_seedream
from prefect_seedream.api.models import GenerationRequest, GenerationTask
from prefect_seedream.engine.account import AccountStop
from prefect_seedream.engine.dataset import ValidRow
from prefect_seedream.engine.defaults import REATTACH_WINDOW_SECONDS
from prefect_seedream.engine.ledger import (
    LedgerRecord,
    LedgerState,
    LedgerTransitionError,
    NextStep,
    TaskLedger,
)
from prefect_seedream.engine.manifest import ManifestLine, RunLine
from prefect_seedream.engine.rows import batches_of, rows_per_task_for
from prefect_seedream.engine.run_folder import RunParts
from prefect_seedream.engine.storage import ImageStore, StoredImage

#: The packages that import no Prefect: their docstring examples run in the unit tier.
PREFECT_FREE = ("prefect_seedream.api", "prefect_seedream.engine", "prefect_seedream.simulator")


def prefect_free(module_name: str) -> bool:
    return any(module_name == p or module_name.startswith(p + ".") for p in PREFECT_FREE)


def _modules() -> list[str]:
    return sorted(
        info.name for info in pkgutil.walk_packages(prefect_seedream.__path__, "prefect_seedream.")
        if prefect_free(info.name)
    )


@pytest.mark.parametrize("module_name", _modules())
def test_docstring_examples_run(module_name: str) -> None:
    module = importlib.import_module(module_name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{result.failed} docstring example(s) of {module_name} failed"


# -- the ledger record ------------------------------------------------------------------------


def _record() -> LedgerRecord:
    return LedgerRecord(key="fox-0123", row_id="fox", request_hash="h" * 64, model="doubao-seedream-4.5")


def _task(state: str = "pending", results: list[str] | None = None, credits: float | None = None) -> GenerationTask:
    body: dict[str, object] = {"id": "task-unified-1", "model": "doubao-seedream-4.5", "status": state}
    if results:
        body["results"] = results
    if credits is not None:
        body["usage"] = {"credits_used": credits}
    return GenerationTask.model_validate(body)


def _image() -> StoredImage:
    return StoredImage(uri="/out/fox.png", width=2048, height=2048, bytes=10, format="png", source_url="http://x/1.png")


def test_happy_path_transitions_and_charges() -> None:
    record = _record()
    assert record.next_step(images_present=False, resubmit_unknown=False) is NextStep.SUBMIT

    record.begin_submission(reserved_credits=2.0, now=100.0)
    assert (record.state, record.submissions, record.intent_at) == (LedgerState.SUBMITTING, 1, 100.0)
    assert record.charge().at_risk == 2.0 and record.status()[0] == "outcome_unknown"

    record.submitted(_task(), now=101.0)
    assert (record.state, record.task_id) == (LedgerState.SUBMITTED, "task-unified-1")
    assert record.charge().at_risk == 2.0 and record.status()[0] == "in_flight"
    assert record.next_step(images_present=False, resubmit_unknown=False, now=102.0) is NextStep.REATTACH

    record.task_completed(_task("completed", results=["http://x/1.png"], credits=2.0), now=103.0)
    assert record.charge().spent == 2.0 and record.results == ["http://x/1.png"]
    # Completed but not stored: a re-run downloads again (re-attaches), paying nothing.
    assert record.next_step(images_present=False, resubmit_unknown=False, now=104.0) is NextStep.REATTACH

    record.images_stored([_image()])
    assert record.status() == ("succeeded", None)
    assert record.next_step(images_present=True, resubmit_unknown=False) is NextStep.REUSE
    # Its images were deleted since: while the results are valid they are fetched again
    # (nothing paid); after that, the row is generated again, a new submission.
    assert record.next_step(images_present=False, resubmit_unknown=False, now=200.0) is NextStep.REATTACH
    late = 101.0 + REATTACH_WINDOW_SECONDS + 1
    assert record.next_step(images_present=False, resubmit_unknown=False, now=late) is NextStep.SUBMIT
    record.images_lost()
    assert record.state is LedgerState.COMPLETED and record.images == []
    record.begin_submission(reserved_credits=2.0)
    assert record.images == [] and record.submissions == 2 and record.task_id is None


def test_refused_submission_clears_its_intent() -> None:
    record = _record()
    record.begin_submission(reserved_credits=2.0)
    record.submission_refused("rate_limit_error", "slow down")

    assert (record.state, record.submissions, record.intent_at) == (LedgerState.NEW, 0, None)
    assert record.charge().total == 0
    assert record.next_step(images_present=False, resubmit_unknown=False) is NextStep.SUBMIT
    status, error = record.status()
    assert status == "failed" and error is not None and error.code == "rate_limit_error"


@pytest.mark.parametrize("lost", ["died_while_sending", "answer_lost"])
def test_unknown_outcome_is_not_resubmitted_unless_asked(lost: str) -> None:
    record = _record()
    record.begin_submission(reserved_credits=4.0)
    if lost == "answer_lost":
        record.submission_lost()
    # A record left in `submitting` (the process died) counts exactly like a lost answer.
    assert record.outcome_unknown
    assert record.charge().at_risk == 4.0  # counts against max_credits
    assert record.next_step(images_present=False, resubmit_unknown=False) is NextStep.REFUSE_UNKNOWN
    assert record.next_step(images_present=False, resubmit_unknown=True) is NextStep.SUBMIT
    status, error = record.status()
    assert status == "outcome_unknown" and error is not None
    assert "--resubmit-unknown" in error.message


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("content_policy_violation", NextStep.REPEAT_FAILURE),  # the request's fault: final
        ("service_error", NextStep.SUBMIT),  # the service's: worth another submission
    ],
)
def test_failed_task_next_step_depends_on_whose_fault(code: str, expected: NextStep) -> None:
    record = _record()
    record.begin_submission(reserved_credits=2.0)
    record.submitted(_task())
    record.task_failed(code, "no")

    assert record.charge().total == 0  # a failed task is not charged
    assert record.status()[0] == "failed"
    assert record.next_step(images_present=False, resubmit_unknown=True) is expected


def test_task_past_the_reattach_window_is_submitted_again() -> None:
    record = _record()
    record.begin_submission(reserved_credits=2.0)
    record.submitted(_task(), now=1000.0)

    late = 1000.0 + REATTACH_WINDOW_SECONDS + 1
    assert record.next_step(images_present=False, resubmit_unknown=False, now=late) is NextStep.SUBMIT


def test_gone_task_can_be_submitted_again() -> None:
    record = _record()
    record.begin_submission(reserved_credits=2.0)
    record.submitted(_task())
    record.task_gone()

    assert record.state is LedgerState.NEW and record.task_id is None
    assert record.next_step(images_present=False, resubmit_unknown=False) is NextStep.SUBMIT


@pytest.mark.parametrize(
    "transition",
    [
        lambda r: r.submitted(_task()),
        lambda r: r.submission_refused("x", "y"),
        lambda r: r.submission_lost(),
        lambda r: r.task_completed(_task("completed")),
        lambda r: r.task_failed("x", "y"),
        lambda r: r.images_stored([]),
    ],
)
def test_transition_from_a_wrong_state_is_refused(transition: object) -> None:
    with pytest.raises(LedgerTransitionError, match="cannot go from new"):
        transition(_record())  # type: ignore[operator]


def test_record_survives_a_save_and_load(tmp_path: Path) -> None:
    ledger = TaskLedger(ImageStore(str(tmp_path)), "https://api.evolink.ai")
    request = GenerationRequest(prompt="A red fox")
    record = ledger.record_for("fox", request)
    record.begin_submission(reserved_credits=2.0)
    ledger.save(record)

    loaded = ledger.record_for("fox", request)
    assert loaded.state is LedgerState.SUBMITTING and loaded.submissions == 1
    assert loaded.idempotency_key == record.idempotency_key and loaded.key_in_doubt
    assert [r.key for r in ledger.records()] == [record.key]
    # Another request for the same row id is another record.
    assert ledger.record_for("fox", GenerationRequest(prompt="A blue fox")).state is LedgerState.NEW
    # The same row and request against another API is another record too (issue 16).
    simulated = TaskLedger(ImageStore(str(tmp_path)), "http://127.0.0.1:8787")
    assert simulated.record_for("fox", request).state is LedgerState.NEW


def test_idempotency_key_is_kept_while_its_outcome_is_in_doubt() -> None:
    """The key of a submission whose outcome is unknown (or answered 5xx) is sent again; a
    clear refusal or a known task gives the next submission a new one."""
    record = _record()
    record.begin_submission(reserved_credits=2.0, run_id="run-1")
    lost_key = record.idempotency_key
    record.submission_lost()
    record.begin_submission(reserved_credits=2.0)  # --resubmit-unknown
    assert record.idempotency_key == lost_key
    record.submission_refused("internal_server_error", "bad gateway", key_settled=False)
    record.begin_submission(reserved_credits=2.0)
    assert record.idempotency_key == lost_key
    record.submission_refused("rate_limit_error", "slow down")  # a clear refusal: no task
    record.begin_submission(reserved_credits=2.0)
    assert record.idempotency_key != lost_key
    settled_key = record.idempotency_key
    record.submitted(GenerationTask(id="task-unified-1-abc", status="pending"))
    record.task_failed("service_error", "try again")
    record.begin_submission(reserved_credits=2.0)  # a new submission after a known task
    assert record.idempotency_key not in (lost_key, settled_key)


def test_account_refusal_makes_the_row_skipped_not_failed() -> None:
    record = _record()
    record.begin_submission(reserved_credits=2.0)
    record.submission_refused("insufficient_quota", "No credits", stopped=True)
    status, error = record.status()
    assert status == "skipped" and error is not None and error.code == "insufficient_quota"
    assert record.charge().total == 0.0


# -- parts and the manifest ---------------------------------------------------------------


def _line(number: int, status: str = "succeeded") -> RunLine:
    line = ManifestLine(
        row_id=f"r{number}", row_number=number, prompt=f"prompt {number}", model=None, status=status
    )
    return RunLine(line=line)


def test_parts_merge_in_row_order_and_fill_gaps(tmp_path: Path) -> None:
    store = ImageStore(str(tmp_path))
    # A manifest of an earlier run over another dataset: its rows are kept after this run's.
    (tmp_path / "manifest.jsonl").write_text('{"row_id": "old", "status": "succeeded"}\n')
    parts = RunParts(store, "run-1")
    parts.write(7, 9, [_line(9), _line(7), _line(8)])  # any order inside a part
    parts.write(1, 3, [_line(1), _line(2), _line(3)])
    assert parts.rows_done() == 6

    gaps: list[tuple[int, int | None]] = []

    def fill(first: int, last: int | None) -> list[RunLine]:
        gaps.append((first, last))
        return [_line(n, "skipped") for n in range(first, (last or first) + 1)]

    seen: list[str] = []
    uri = parts.merge(10, fill, lambda item: seen.append(item.line.row_id))

    assert gaps == [(4, 6), (10, 10)]
    lines = [json.loads(raw) for raw in Path(uri).read_text().splitlines()]
    assert [line["row_id"] for line in lines] == [f"r{n}" for n in range(1, 11)] + ["old"]
    assert seen == [f"r{n}" for n in range(1, 11)]
    assert [line["status"] for line in lines[3:6]] == ["skipped"] * 3
    parts.remove()
    assert parts.names() == []


def test_overlapping_parts_are_a_loud_error(tmp_path: Path) -> None:
    parts = RunParts(ImageStore(str(tmp_path)), "run-1")
    parts.write(1, 3, [_line(1), _line(2), _line(3)])
    parts.write(3, 4, [_line(3), _line(4)])

    with pytest.raises(RuntimeError, match="overlaps"):
        parts.merge(4, lambda first, last: [], lambda item: None)
    assert not (tmp_path / "manifest.jsonl").exists()  # nothing half-written


def _write_stops_at_once(parts: RunParts, stops: list[AccountStop]) -> list[bool]:
    """Each stop written by its own thread, all released at the same instant."""
    start = threading.Barrier(len(stops))

    def write(stop: AccountStop) -> bool:
        start.wait()
        return parts.write_stop(stop)

    with ThreadPoolExecutor(len(stops)) as pool:
        return list(pool.map(write, stops))


@pytest.mark.parametrize("where", ["local", "memory"])
def test_shards_stopping_at_once_keep_exactly_the_first_stop(where: str, tmp_path: Path) -> None:
    """`write_stop` from shards at once (threads here): one stop is recorded, and every other
    writer, then a later one, keeps it (on a folder, and on fsspec's memory filesystem)."""
    destination = str(tmp_path) if where == "local" else f"memory://stop-race-{uuid.uuid4().hex}"
    writers = 8
    for attempt in range(10):
        parts = RunParts(ImageStore(destination), f"run-{attempt}")
        stops = [
            AccountStop(status_code=402, code="insufficient_quota", message=f"shard {n}")
            for n in range(writers)
        ]
        recorded = _write_stops_at_once(parts, stops)
        assert recorded.count(True) == 1, recorded
        first = stops[recorded.index(True)]
        assert parts.read_stop() == first
        assert parts.write_stop(AccountStop(status_code=401, code="late", message="later")) is False
        assert parts.read_stop() == first
        assert [path.rsplit("/", 1)[-1] for path in parts.store.list(parts.folder)] == ["stop.json"]


# -- batches of rows ------------------------------------------------------------------------


def test_batching_rule_and_batches() -> None:
    assert [rows_per_task_for(n) for n in (1, 50, 51, 1000, 25_000, 1_000_000)] == [1, 1, 2, 20, 500, 500]
    request = GenerationRequest(prompt="p")
    rows = [ValidRow(number=n, row_id=f"r{n}", request=request) for n in range(1, 11)]
    batches = list(batches_of(iter(rows), 4))
    assert [(b.first, b.last, b.label) for b in batches] == [
        (1, 4, "rows-1-4"), (5, 8, "rows-5-8"), (9, 10, "rows-9-10"),
    ]
    assert list(batches_of(iter(rows[:1]), 4))[0].label == "row-r1"
