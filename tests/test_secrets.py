"""The API key never leaks: not in logs, files, artifacts, events, states, results or errors.

A canary key (``sk-CANARY-<uuid>``) is the only key the simulator accepts, so a run that
succeeds proves the key was really sent; then every place a key could end up is read
back and searched: log records at DEBUG (httpx and httpcore included), the Prefect logs,
artifacts, events, flow and task runs with their state histories (read back through the
Prefect client), every file in the output folder, the Prefect server's database files,
PREFECT_HOME, stdout/stderr, the run summary and every exception text.
"""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterId,
    LogFilter,
    LogFilterFlowRunId,
)
from prefect.events.filters import EventFilter, EventOccurredFilter

from prefect_seedream.credentials import SeedreamCredentials
from prefect_seedream.flows import DatasetRunSummary
from prefect_seedream.simulator import RunningSimulator, SimulatorConfig, running_simulator
from tests.helpers import manifest, run_dataset, write_jsonl

pytestmark = pytest.mark.usefixtures("prefect_api")

CANARY = f"sk-CANARY-{uuid.uuid4()}"

ROWS = [
    {"id": "ok-1", "prompt": "a paper lantern"},
    {"id": "ok-2", "prompt": "a paper kite"},
    {"id": "policy", "prompt": "a lantern [[sim:task_error=content_policy_violation]]"},
    {"id": "service", "prompt": "a lantern [[sim:task_error=service_error*1]]"},
    {"id": "s400", "prompt": "a lantern [[sim:submit_status=400]]"},
    {"id": "s429", "prompt": "a lantern [[sim:submit_status=429*1]] [[sim:retry_after=0]]"},
    {"id": "p503", "prompt": "a lantern [[sim:poll_status=503*1]] [[sim:retry_after=0]]"},
    {"id": "p404", "prompt": "a lantern [[sim:poll_404*1]]"},
    {"id": "drop", "prompt": "a lantern [[sim:drop_after_create]]"},
    {"id": "not-image", "prompt": "a lantern [[sim:download=not_image]]"},
    {"id": "slow", "prompt": "a lantern [[sim:latency=600]]"},
    {"id": "invalid", "prompt": "a lantern", "n": "abc"},
]
#: A 401 stops every later submission: run on its own, one row at a time.
ROWS_401 = [
    {"id": "s401", "prompt": "a lantern [[sim:submit_status=401]]"},
    {"id": "after", "prompt": "a paper boat"},
]
EXPECTED_STATUS = {
    "ok-1": "succeeded",
    "ok-2": "succeeded",
    "policy": "failed",
    "service": "succeeded",
    "s400": "failed",
    "s429": "succeeded",
    "p503": "succeeded",
    "p404": "succeeded",
    "drop": "succeeded",  # its lost answer's task is found in the task list (issue 16)
    "not-image": "failed",
    "slow": "in_flight",
    "invalid": "failed",
}


@pytest.fixture
def canary_sim() -> Iterator[RunningSimulator]:
    """A simulator that accepts the canary key only (any other key gets 401)."""
    config = SimulatorConfig(latency_seconds=0.3, jitter_seconds=0.05, api_keys={CANARY})
    with running_simulator(config) as sim:
        yield sim


class _Everything(logging.Handler):
    """Keeps every record, formatted with its traceback, and its raw attributes."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.texts: list[str] = []
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.texts.append(self.format(record))
            self.texts.append(repr(record.__dict__))
        except Exception as exc:  # noqa: BLE001 - an unformattable record is evidence too
            self.texts.append(f"unformattable record {record.name}: {exc!r}")


@pytest.fixture
def debug_logs(caplog: pytest.LogCaptureFixture) -> Iterator[_Everything]:
    """DEBUG everywhere that matters, captured both by caplog and by a direct handler."""
    names = [
        "",
        "httpx",
        "httpcore",
        "prefect_seedream",
        "prefect",
        "prefect.flow_runs",
        "prefect.task_runs",
    ]
    handler = _Everything()
    for name in names:
        caplog.set_level(logging.DEBUG, logger=name)
    loggers = [
        logging.getLogger(name) for name in ["httpx", "httpcore", "prefect_seedream", "prefect"]
    ]
    for logger in loggers:
        logger.addHandler(handler)
    try:
        yield handler
    finally:
        for logger in loggers:
            logger.removeHandler(handler)


def _file_bytes(root: Path) -> Iterator[tuple[Path, bytes]]:
    for path in root.rglob("*"):
        if path.is_file():
            try:
                yield path, path.read_bytes()
            except OSError:
                continue


def _database_files() -> list[Path]:
    from prefect.settings import get_current_settings

    url = get_current_settings().server.database.connection_url
    text = url.get_secret_value() if url is not None else ""
    if "sqlite" not in text:
        return []
    db = Path(text.split(":///", 1)[-1])
    return [p for p in db.parent.glob(db.name + "*") if p.is_file()]


async def _read_back(flow_run_id: Any, since: datetime) -> dict[str, list[str]]:
    """Everything the Prefect API holds about a run, as JSON texts."""
    found: dict[str, list[str]] = {}
    async with get_client() as client:
        flow_run = await client.read_flow_run(flow_run_id)
        found["flow run"] = [flow_run.model_dump_json()]
        found["flow run states"] = [
            s.model_dump_json() for s in await client.read_flow_run_states(flow_run_id)
        ]
        task_runs = await client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
        )
        found["task runs"] = [t.model_dump_json() for t in task_runs]
        found["task run states"] = []
        for task_run in task_runs:
            states = await client.read_task_run_states(task_run.id)
            found["task run states"].extend(s.model_dump_json() for s in states)

        logs: list[str] = []
        offset = 0
        while True:
            page = await client.read_logs(
                LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])),
                limit=200,
                offset=offset,
            )
            logs.extend(log.model_dump_json() for log in page)
            if len(page) < 200:
                break
            offset += 200
        found["prefect logs"] = logs

        found["artifacts"] = [
            a.model_dump_json()
            for a in await client.read_artifacts(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
            )
        ]

        # Events reach the database through the server's persister: wait for ours.
        events: list[Any] = []
        deadline = asyncio.get_running_loop().time() + 30
        while True:
            events = []
            page = await client.read_events(
                filter=EventFilter(occurred=EventOccurredFilter(since=since)), limit=50
            )
            events.extend(page.events)
            while page.next_page:
                page = await client.read_events_page(str(page.next_page))
                events.extend(page.events)
            names = {event.event for event in events}
            if {"seedream.generation.failed", "seedream.generation.completed"} <= names and any(
                n.startswith("prefect.flow-run.") and n.endswith(("Failed", "Completed"))
                for n in names
            ):
                break
            if asyncio.get_running_loop().time() > deadline:
                break
            await asyncio.sleep(0.5)
        found["events"] = [event.model_dump_json() for event in events]
    return found


def _assert_no_canary(where: str, text: str | bytes) -> None:
    needle: Any = CANARY.encode() if isinstance(text, bytes) else CANARY
    assert needle not in text, f"the API key leaked into {where}"
    # Also its distinctive tail (a key cut in half, or re-encoded, still leaks).
    tail = CANARY[-16:]
    tail_needle: Any = tail.encode() if isinstance(text, bytes) else tail
    assert tail_needle not in text, f"part of the API key leaked into {where}"


async def _run_and_search(
    sim: RunningSimulator,
    tmp_path: Path,
    handler: _Everything,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
    **options: Any,
) -> None:
    since = datetime.now(timezone.utc) - timedelta(seconds=5)
    output = tmp_path / "out"
    state = await run_dataset(
        write_jsonl(tmp_path / "rows.jsonl", ROWS),
        output,
        max_concurrency=16,
        retries=1,
        max_wait_seconds=4,
        **options,
    )

    # The run really used the key and really went down the error paths.
    lines = {line["row_id"]: line for line in manifest(output)}
    assert {row_id: line["status"] for row_id, line in lines.items()} == EXPECTED_STATUS
    summary = state.data
    if not isinstance(summary, DatasetRunSummary):
        summary = await state.aresult(raise_on_failure=False)
    assert isinstance(summary, DatasetRunSummary)
    assert state.is_failed()
    assert sim.stats()["tasks_created"] >= 9
    assert len(handler.texts) > 100
    assert any(record.name.startswith("httpcore") for record in caplog.records)
    assert any(record.name.startswith("httpx") for record in caplog.records)

    # A 401 stops the run (issue 16): its sentence, lines and logs must not show the key either.
    stopped_output = tmp_path / "out-401"
    stopped = await run_dataset(
        write_jsonl(tmp_path / "rows-401.jsonl", ROWS_401), stopped_output, max_concurrency=1, **options
    )
    stopped_lines = {line["row_id"]: line for line in manifest(stopped_output)}
    assert {row_id: line["status"] for row_id, line in stopped_lines.items()} == {"s401": "skipped", "after": "skipped"}
    assert stopped_lines["s401"]["error"]["code"] == "authentication_error"
    assert "Stopped: the API key was refused" in (stopped.message or "")
    _assert_no_canary("the stopped run's message", stopped.message or "")
    for text in (await _read_back(stopped.state_details.flow_run_id, since)).get("prefect logs", []):
        _assert_no_canary("a log of the stopped run", text)

    found = await _read_back(state.state_details.flow_run_id, since)
    assert found["task runs"] and found["prefect logs"] and found["artifacts"]
    assert any("seedream.generation" in event for event in found["events"]), "no events read back"
    for where, texts in found.items():
        for text in texts:
            _assert_no_canary(where, text)

    for text in handler.texts:
        _assert_no_canary("a log record", text)
    _assert_no_canary("caplog", caplog.text)
    for record in caplog.records:
        _assert_no_canary(f"log record {record.name}", repr(record.__dict__))
    captured = capsys.readouterr()
    _assert_no_canary("stdout", captured.out)
    _assert_no_canary("stderr", captured.err)

    _assert_no_canary("the final state", repr(state))
    _assert_no_canary("the state message", state.message or "")
    _assert_no_canary("the run summary", summary.model_dump_json())

    files = [*_file_bytes(output), *_file_bytes(stopped_output)]
    assert any(path.name == "manifest.jsonl" for path, _ in files)
    assert any(".seedream" in path.parts for path, _ in files)
    for path, data in files:
        _assert_no_canary(str(path), data)
    for path, data in _file_bytes(Path(os.environ["PREFECT_HOME"])):
        _assert_no_canary(str(path), data)
    database = _database_files()
    assert database, "the Prefect test server's database was not found"
    contents = [path.read_bytes() for path in database]
    # Positive control: this run's own records are readable in those bytes.
    async with get_client() as client:
        run_name = (await client.read_flow_run(state.state_details.flow_run_id)).name
    assert any(run_name.encode() in data for data in contents)
    for path, data in zip(database, contents):
        _assert_no_canary(str(path), data)


@pytest.mark.slow  # a whole run with debug logs searched everywhere: about a minute
async def test_api_key_from_the_environment_never_leaks(
    canary_sim: RunningSimulator,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    debug_logs: _Everything,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("SEEDREAM_API_KEY", CANARY)
    monkeypatch.setenv("SEEDREAM_BASE_URL", canary_sim.base_url)
    await _run_and_search(canary_sim, tmp_path, debug_logs, caplog, capsys)


@pytest.mark.slow  # a whole run with debug logs searched everywhere: about a minute
async def test_api_key_from_a_credentials_block_parameter_never_leaks(
    canary_sim: RunningSimulator,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    debug_logs: _Everything,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.delenv("SEEDREAM_API_KEY", raising=False)
    monkeypatch.delenv("SEEDREAM_BASE_URL", raising=False)
    credentials = SeedreamCredentials(api_key=CANARY, base_url=canary_sim.base_url)
    await _run_and_search(canary_sim, tmp_path, debug_logs, caplog, capsys, credentials=credentials)


async def test_saved_credentials_block_never_shows_the_key() -> None:
    name = f"canary-{uuid.uuid4().hex[:8]}"
    block = SeedreamCredentials(api_key=CANARY, base_url="http://127.0.0.1:9")
    await block.save(name, overwrite=True)
    loaded = await SeedreamCredentials.load(name)

    assert loaded.api_key.get_secret_value() == CANARY  # the key is really in there
    assert loaded.base_url == "http://127.0.0.1:9"
    for shown in (
        repr(loaded),
        str(loaded),
        loaded.model_dump_json(),
        repr(loaded.model_dump()),
        str(loaded.model_dump(mode="json")),
        repr(loaded.api_key),
        str(loaded.api_key),
        repr(loaded.get_client()),
        repr(block),
    ):
        _assert_no_canary("the block's representation", shown)

    async with get_client() as client:
        document = await client.read_block_document_by_name(
            name, block_type_slug="seedream-credentials", include_secrets=False
        )
    _assert_no_canary("the stored block document", document.model_dump_json())
    for path in _database_files():
        _assert_no_canary(str(path), path.read_bytes())
