"""Benchmark ``generate_dataset`` end to end against the bundled simulator.

What it does:

1. writes a CSV of ``--rows`` distinct prompts (no fault markers);
2. starts the simulator, by default in a **separate process**
   (``python -m prefect_seedream.cli simulator --port 0 ...``, i.e. the
   ``prefect-seedream simulator`` command) so that its CPU does not
   share the GIL with the flow (``--simulator thread`` runs it in-process with
   ``running_simulator`` instead, for comparison);
3. starts Prefect's ephemeral API server explicitly (no ``PREFECT_API_URL``; a temporary
   ``PREFECT_HOME``; analytics off) and times that start on its own;
4. runs ``generate_dataset(dataset, output, max_concurrency=C, poll_interval=P)`` with
   ``SEEDREAM_API_KEY`` / ``SEEDREAM_BASE_URL`` pointing at the simulator;
5. counts the flow run's task runs with the Prefect client (``read_task_runs`` filtered by the
   flow run id, paged), waiting until the server has recorded all of them;
6. prints the figures and a compact table (see ``benchmarks/README.md``).

Usage::

    .venv/bin/python benchmarks/dataset_benchmark.py --rows 200 --latency 2 --concurrency 16

The helpers here are reused by ``benchmarks/soak.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from _proc import (
    Simulator,
    proc_cpu_seconds,
    proc_peak_rss_mb,
    simulator_cli_command,
    simulator_process,
    write_dataset,
)

from prefect_seedream.embedded_server import EMBEDDED_SERVER_SETTINGS  # imports no Prefect

API_KEY = "sk-benchmark"

#: The server batch sizes `prefect-seedream run` sets for its embedded server (they raise the
#: SQLite server's task-run throughput, see prefect-notes.md); used only with ``--tuned-server``.
TUNED_SERVER_SETTINGS = {
    name: value
    for name, value in EMBEDDED_SERVER_SETTINGS.items()
    if name.startswith("PREFECT_SERVER_SERVICES_")
}


# --------------------------------------------------------------------------- environment


def prepare_environment(
    prefect_home: Path, *, tuned_server: bool = False, verbose: bool = False
) -> None:
    """Embedded Prefect (ephemeral server) in a throw-away home. Call before importing prefect."""
    for name in ("PREFECT_API_URL", "PREFECT_API_KEY", "PREFECT_PROFILES_PATH"):
        os.environ.pop(name, None)
    os.environ["PREFECT_HOME"] = str(prefect_home)
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    # The default (20 s) is too short on a busy 2-core machine (measured: a cold start with a
    # fresh SQLite database took 15 s idle and timed out under load).
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    os.environ.setdefault(
        "PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "INFO" if verbose else "WARNING"
    )
    if tuned_server:
        os.environ.update(TUNED_SERVER_SETTINGS)


# --------------------------------------------------------------------------- processes


def self_peak_rss_mb() -> float:
    """Peak RSS of this process (ru_maxrss is in KB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def self_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@contextmanager
def start_simulator(
    mode: str,
    workdir: Path,
    *,
    latency: float,
    jitter: float,
    seed: int = 0,
    fault_rates: dict[str, float] | None = None,
) -> Iterator[Simulator]:
    """The simulator in a subprocess (default) or in a thread of this process."""
    fault_rates = fault_rates or {}
    if mode == "subprocess":
        with simulator_process(
            simulator_cli_command(latency, jitter, seed, fault_rates), workdir
        ) as sim:
            yield sim
        return
    from prefect_seedream.simulator import SimulatorConfig, running_simulator

    config = SimulatorConfig(
        latency_seconds=latency, jitter_seconds=jitter, seed=seed, fault_rates=fault_rates
    )
    with running_simulator(config) as running:
        yield Simulator(base_url=running.base_url, mode="thread")


def start_ephemeral_server(log_path: Path | None = None) -> tuple[float, int | None]:
    """Start Prefect's ephemeral API server now; returns (seconds taken, its pid).

    The server process inherits this process's stderr; with ``log_path`` its stderr goes to
    that file instead (fd 2 is pointed at it only while the process is spawned), so that its
    warnings (for example "Subscription queue is full, dropping message") can be counted.
    """
    from prefect.server.api.server import SubprocessASGIServer

    saved = None
    if log_path is not None:
        sys.stderr.flush()
        saved = os.dup(2)
        target = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(target, 2)
        os.close(target)
    started = time.monotonic()
    try:
        server = SubprocessASGIServer()
        server.start()
    finally:
        if saved is not None:
            os.dup2(saved, 2)
            os.close(saved)
    elapsed = time.monotonic() - started
    pid = server.server_process.pid if server.server_process else None
    return elapsed, pid


def server_log_summary(log_path: Path) -> dict[str, Any]:
    """Counts of notable lines in the ephemeral server's stderr."""
    text = log_path.read_text(errors="replace") if log_path.exists() else ""
    lines = text.splitlines()
    return {
        "events_dropped": sum("queue is full, dropping message" in line for line in lines),
        "warnings": sum("| WARNING |" in line for line in lines),
        "errors": sum("| ERROR " in line or "Traceback" in line for line in lines),
        "log": str(log_path),
    }


# --------------------------------------------------------------------------- the flow


class ProgressPrinter:
    """Prints rows done every ``every`` seconds while the flow runs (from the row listener)."""

    def __init__(self, total: int, every: float = 15.0) -> None:
        self.total = total
        self.every = every
        self.done = 0
        self.statuses: Counter[str] = Counter()
        self.started = time.monotonic()
        self.first_row_at: float | None = None
        self.last_row_at: float | None = None
        self.loop_lag: LoopLagMonitor | None = None

    def on_row(self, line: Any) -> None:
        self.last_row_at = time.monotonic()
        if self.first_row_at is None:
            self.first_row_at = self.last_row_at
        self.done += 1
        self.statuses[line.status] += 1

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.every)
            elapsed = time.monotonic() - self.started
            rate = self.done / elapsed if elapsed else 0.0
            print(
                f"  [{elapsed:7.1f} s] {self.done}/{self.total} rows ({rate:.1f} rows/s) "
                f"{dict(self.statuses)} cpu(self)={self_cpu_seconds():.1f} s "
                f"load={os.getloadavg()[0]:.1f}",
                flush=True,
            )


class LoopLagMonitor:
    """How late the flow's event loop wakes up a 100 ms sleep: a saturated or blocked loop."""

    period = 0.1

    def __init__(self) -> None:
        self.lags: list[float] = []

    async def run(self) -> None:
        while True:
            before = time.monotonic()
            await asyncio.sleep(self.period)
            self.lags.append(max(0.0, time.monotonic() - before - self.period))

    def summary(self) -> dict[str, float | None]:
        if not self.lags:
            return {"p50_ms": None, "p99_ms": None, "max_ms": None}
        return {
            "p50_ms": round(statistics.median(self.lags) * 1000, 1),
            "p99_ms": round(percentile(self.lags, 0.99) * 1000, 1),
            "max_ms": round(max(self.lags) * 1000, 1),
        }


async def run_flow(
    dataset: Path, output: Path, rows: int, flow_kwargs: dict[str, Any], progress_every: float
) -> tuple[Any, float, ProgressPrinter]:
    """Run generate_dataset; returns (final state, wall seconds, progress).

    ``progress.loop_lag`` holds the event-loop lag measured while the flow ran (the flow runs
    on this loop: an async flow awaited here uses the caller's loop).
    """
    from prefect_seedream.engine.progress import listening
    from prefect_seedream.flows import generate_dataset

    printer = ProgressPrinter(rows, progress_every)
    monitor = LoopLagMonitor()
    printer.loop_lag = monitor
    lag_task = asyncio.create_task(monitor.run())
    reporter = asyncio.create_task(printer.run())
    try:
        with listening(printer.on_row):
            started = time.monotonic()
            printer.started = started
            state = await generate_dataset(
                str(dataset), str(output), return_state=True, **flow_kwargs
            )
            wall = time.monotonic() - started
    finally:
        reporter.cancel()
        lag_task.cancel()
    return state, wall, printer


async def count_task_runs(
    flow_run_id: Any,
    expected: int | None,
    settle_timeout: float = 300.0,
    report_every: float = 15.0,
) -> dict[str, Any]:
    """Task runs of a flow run, by task and by state, once the server has recorded them.

    Task-run states reach the server as events, persisted by its task-run recorder, so the
    count may lag behind the flow's end: poll until the count reaches ``expected`` (when
    given) with every run final, or stops changing for 3 reads with every run final, or
    ``settle_timeout`` passes. Returns the count found right after the flow too.
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    started = time.monotonic()
    last_report = started
    previous = -1
    stable = 0
    at_flow_end: int | None = None
    final_at_flow_end: int | None = None
    runs: list[Any] = []
    async with get_client() as client:
        while True:
            runs = []
            offset = 0
            while True:
                page = await client.read_task_runs(
                    flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])),
                    limit=200,
                    offset=offset,
                )
                runs.extend(page)
                if len(page) < 200:
                    break
                offset += 200
            finals = sum(1 for r in runs if r.state is not None and r.state.is_final())
            if at_flow_end is None:
                at_flow_end, final_at_flow_end = len(runs), finals
            final = finals == len(runs)
            stable = stable + 1 if len(runs) == previous and final else 0
            previous = len(runs)
            if final and expected is not None and len(runs) >= expected:
                break
            if stable >= 3 or time.monotonic() - started > settle_timeout:
                break
            if time.monotonic() - last_report >= report_every:
                last_report = time.monotonic()
                print(
                    f"  server has recorded {len(runs)} task runs ({finals} final) "
                    f"{last_report - started:.0f} s after the flow",
                    flush=True,
                )
            await asyncio.sleep(1.0)
    lag = time.monotonic() - started
    by_task = Counter(r.name.split("-", 1)[0] for r in runs)
    by_state = Counter(r.state.type.value if r.state else "none" for r in runs)
    retried = sum(1 for r in runs if (r.run_count or 0) > 1)
    caught_up = all(r.state is not None and r.state.is_final() for r in runs) and (
        expected is None or len(runs) >= expected
    )
    return {
        "total": len(runs),
        "by_task": dict(by_task),
        "by_state": dict(by_state),
        "retried_runs": retried,
        "recorder_lag_s": round(lag, 1),
        "caught_up": caught_up,
        "at_flow_end": at_flow_end,
        "final_at_flow_end": final_at_flow_end,
    }


def read_manifest_lines(output: Path) -> list[dict[str, Any]]:
    path = output / "manifest.jsonl"
    if not path.exists():
        return []
    return [
        json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()
    ]


def row_phases(output: Path, lines: list[dict[str, Any]]) -> dict[str, Any]:
    """Split each row's duration using its ledger record: wait = submitted -> task seen terminal.

    ``other`` = row duration - wait: task-run start-up, submit, download, decode, storing and
    the ledger writes.
    """
    folder = output / ".seedream" / "tasks"
    records = {}
    for path in folder.glob("*.json") if folder.exists() else []:
        record = json.loads(path.read_text(encoding="utf-8"))
        records[record["row_id"]] = record
    waits, others = [], []
    for line in lines:
        record = records.get(line["row_id"])
        duration = line.get("duration_seconds")
        if (
            not record
            or duration is None
            or not record.get("submitted_at")
            or not record.get("finished_at")
        ):
            continue
        wait = record["finished_at"] - record["submitted_at"]
        waits.append(wait)
        others.append(duration - wait)
    if not waits:
        return {}
    return {
        "wait_p50_s": round(statistics.median(waits), 2),
        "wait_p95_s": round(percentile(waits, 0.95), 2),
        "other_p50_s": round(statistics.median(others), 2),
        "other_p95_s": round(percentile(others, 0.95), 2),
    }


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    index = min(len(values) - 1, max(0, math.ceil(q * len(values)) - 1))
    return values[index]


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200, help="dataset rows (distinct prompts)")
    parser.add_argument("--latency", type=float, default=2.0, help="simulator seconds per task")
    parser.add_argument(
        "--jitter",
        type=float,
        default=0.0,
        help="simulator latency jitter, +/- seconds (default 0)",
    )
    parser.add_argument(
        "--concurrency", type=int, default=16, help="generate_dataset max_concurrency"
    )
    parser.add_argument(
        "--poll-interval",
        type=float,
        default=None,
        help="generate_dataset poll_interval (default min(3, latency/4))",
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=None,
        help="working folder (dataset, images, manifest); default a temp dir, removed after",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temp working folder")
    parser.add_argument(
        "--simulator",
        choices=["subprocess", "thread"],
        default="subprocess",
        help="where the simulator runs (default: its own process)",
    )
    parser.add_argument("--seed", type=int, default=0, help="simulator seed")
    parser.add_argument(
        "--tuned-server",
        action="store_true",
        help="the ephemeral server's batch sizes that `prefect-seedream run` uses",
    )
    parser.add_argument(
        "--progress-every", type=float, default=15.0, help="progress line period (s)"
    )
    parser.add_argument(
        "--settle-timeout",
        type=float,
        default=300.0,
        help="longest wait for the server to record every task run after the flow (s)",
    )
    parser.add_argument(
        "--json", type=Path, default=None, help="also write the figures as JSON here"
    )
    parser.add_argument("--verbose", action="store_true", help="show Prefect's INFO log lines")
    args = parser.parse_args(argv)
    if args.poll_interval is None:
        args.poll_interval = min(3.0, args.latency / 4) if args.latency > 0 else 0.1
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    temp = args.output is None
    workdir = Path(tempfile.mkdtemp(prefix="seedream-bench-")) if temp else args.output.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    prepare_environment(
        workdir / "prefect-home", tuned_server=args.tuned_server, verbose=args.verbose
    )
    dataset = workdir / "dataset.csv"
    output = workdir / "output"
    if output.exists():
        shutil.rmtree(output)
    write_dataset(dataset, args.rows)
    try:
        figures = run_benchmark(args, workdir, dataset, output)
    finally:
        if temp and not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    ok = (
        figures["peak_concurrent_tasks"] <= args.concurrency
        and figures["rows_succeeded"] == args.rows
    )
    return 0 if ok else 1


def run_benchmark(
    args: argparse.Namespace, workdir: Path, dataset: Path, output: Path
) -> dict[str, Any]:
    load_before = os.getloadavg()[0]
    print(
        f"dataset_benchmark: rows={args.rows} latency={args.latency}s jitter={args.jitter}s "
        f"concurrency={args.concurrency} poll_interval={args.poll_interval}s "
        f"simulator={args.simulator} tuned_server={args.tuned_server} workdir={workdir}",
        flush=True,
    )
    with start_simulator(
        args.simulator, workdir, latency=args.latency, jitter=args.jitter, seed=args.seed
    ) as sim:
        os.environ["SEEDREAM_API_KEY"] = API_KEY
        os.environ["SEEDREAM_BASE_URL"] = sim.base_url
        import_started = time.monotonic()
        import prefect_seedream.flows  # noqa: F401  (import cost is not the flow's)

        import_s = time.monotonic() - import_started
        server_log = workdir / "prefect-server.err"
        server_s, server_pid = start_ephemeral_server(server_log)
        print(
            f"  simulator at {sim.base_url} ({sim.mode}); imports {import_s:.1f} s; "
            f"ephemeral Prefect server started in {server_s:.1f} s",
            flush=True,
        )
        cpu_before = self_cpu_seconds()
        server_cpu_before = proc_cpu_seconds(server_pid) if server_pid else None
        sim_cpu_before = proc_cpu_seconds(sim.pid) if sim.pid else None
        flow_kwargs = {"max_concurrency": args.concurrency, "poll_interval": args.poll_interval}
        state, wall, printer = asyncio.run(
            run_flow(dataset, output, args.rows, flow_kwargs, args.progress_every)
        )
        flow_cpu = self_cpu_seconds() - cpu_before
        server_cpu = (
            (proc_cpu_seconds(server_pid) or 0) - (server_cpu_before or 0) if server_pid else None
        )
        sim_cpu = (proc_cpu_seconds(sim.pid) or 0) - (sim_cpu_before or 0) if sim.pid else None
        stats = sim.stats()
        flow_run_id = state.state_details.flow_run_id
        from prefect_seedream.engine.rows import rows_per_task_for

        # One task run per row up to 50 rows, else one per batch (retries are inside them).
        expected = math.ceil(args.rows / rows_per_task_for(args.rows))
        task_runs = asyncio.run(
            count_task_runs(flow_run_id, expected, settle_timeout=args.settle_timeout)
        )
        server_peak = proc_peak_rss_mb(server_pid) if server_pid else None
        sim_peak = proc_peak_rss_mb(sim.pid) if sim.pid else None
    server_notes = server_log_summary(server_log)
    lines = read_manifest_lines(output)
    durations = [
        line["duration_seconds"] for line in lines if line.get("duration_seconds") is not None
    ]
    succeeded = sum(1 for line in lines if line["status"] == "succeeded")
    phases = row_phases(output, lines)
    lag = printer.loop_lag.summary() if printer.loop_lag else {}
    ideal = math.ceil(args.rows / args.concurrency) * args.latency
    tasks_created = stats.get("tasks_created", 0)
    figures = {
        "rows": args.rows,
        "latency_s": args.latency,
        "jitter_s": args.jitter,
        "concurrency": args.concurrency,
        "poll_interval_s": args.poll_interval,
        "simulator": args.simulator,
        "tuned_server": args.tuned_server,
        "flow_state": f"{state.type.value}: {state.message}",
        "ephemeral_server_start_s": round(server_s, 2),
        "flow_wall_s": round(wall, 2),
        "wall_incl_server_start_s": round(wall + server_s, 2),
        "first_row_done_s": round(printer.first_row_at - printer.started, 2)
        if printer.first_row_at
        else None,
        "last_row_done_s": round(printer.last_row_at - printer.started, 2)
        if printer.last_row_at
        else None,
        "ideal_s": ideal,
        "ratio_to_ideal": round(wall / ideal, 2) if ideal else None,
        "rows_per_s": round(args.rows / wall, 2),
        "task_runs": task_runs["total"],
        "task_runs_per_row": round(task_runs["total"] / args.rows, 2),
        "task_runs_by_task": task_runs["by_task"],
        "task_runs_by_state": task_runs["by_state"],
        "task_runs_retried": task_runs["retried_runs"],
        "task_runs_per_s": round(task_runs["total"] / wall, 1),
        "recorder_lag_s": task_runs["recorder_lag_s"],
        "recorder_caught_up": task_runs["caught_up"],
        "server_events_dropped": server_notes["events_dropped"],
        "server_warnings": server_notes["warnings"],
        "server_errors": server_notes["errors"],
        "task_runs_recorded_at_flow_end": task_runs["at_flow_end"],
        "task_runs_final_at_flow_end": task_runs["final_at_flow_end"],
        "submit_requests": stats.get("submit_requests"),
        "tasks_created": tasks_created,
        "polls": stats.get("polls"),
        "polls_per_generation": round(stats.get("polls", 0) / tasks_created, 2)
        if tasks_created
        else None,
        "downloads": stats.get("downloads"),
        "peak_concurrent_tasks": stats.get("peak_concurrent_tasks", 0),
        "row_duration_p50_s": round(statistics.median(durations), 2) if durations else None,
        "row_duration_p95_s": round(percentile(durations, 0.95), 2) if durations else None,
        "row_duration_max_s": round(max(durations), 2) if durations else None,
        "row_wait_p50_s": phases.get("wait_p50_s"),
        "row_wait_p95_s": phases.get("wait_p95_s"),
        "row_other_p50_s": phases.get("other_p50_s"),
        "row_other_p95_s": phases.get("other_p95_s"),
        "loop_lag_p50_ms": lag.get("p50_ms"),
        "loop_lag_p99_ms": lag.get("p99_ms"),
        "loop_lag_max_ms": lag.get("max_ms"),
        "rows_succeeded": succeeded,
        "manifest_lines": len(lines),
        "peak_rss_flow_process_mb": round(self_peak_rss_mb(), 1),
        "peak_rss_prefect_server_mb": round(server_peak, 1) if server_peak else None,
        "peak_rss_simulator_mb": round(sim_peak, 1) if sim_peak else None,
        "load_avg_1min_before_after": [round(load_before, 1), round(os.getloadavg()[0], 1)],
        "cpu_flow_process_s": round(flow_cpu, 1),
        "cpu_prefect_server_s": round(server_cpu, 1) if server_cpu is not None else None,
        "cpu_simulator_s": round(sim_cpu, 1) if sim_cpu is not None else None,
    }
    print_report(figures)
    return figures


def print_report(f: dict[str, Any]) -> None:
    print()
    print(f"Flow state: {f['flow_state']}")
    lag = (
        f"server caught up {f['recorder_lag_s']} s after the flow"
        if f["recorder_caught_up"]
        else f"server had NOT caught up {f['recorder_lag_s']} s after the flow"
    )
    print(
        f"Task runs by task: {f['task_runs_by_task']}  by state: {f['task_runs_by_state']}  "
        f"retried: {f['task_runs_retried']}"
    )
    print(
        f"Task runs recorded by the server when the flow returned: {f['task_runs_recorded_at_flow_end']} "
        f"({f['task_runs_final_at_flow_end']} final); {lag}"
    )
    print(
        f"Prefect server log: {f['server_events_dropped']} 'Subscription queue is full, dropping message' "
        f"lines (events lost), {f['server_warnings']} warnings, {f['server_errors']} errors"
    )
    peak_ok = (
        "OK"
        if f["peak_concurrent_tasks"] <= f["concurrency"]
        else "VIOLATION: above max_concurrency"
    )
    rows = [
        (
            "rows / concurrency / latency",
            f"{f['rows']} / {f['concurrency']} / {f['latency_s']} s (jitter {f['jitter_s']} s)",
        ),
        ("poll_interval", f"{f['poll_interval_s']} s"),
        ("simulator", f"{f['simulator']}{' (tuned server)' if f['tuned_server'] else ''}"),
        ("ephemeral server start", f"{f['ephemeral_server_start_s']} s"),
        ("flow wall time", f"{f['flow_wall_s']} s"),
        ("wall incl. server start", f"{f['wall_incl_server_start_s']} s"),
        ("ideal ceil(N/C)*L", f"{f['ideal_s']:g} s"),
        ("ratio wall/ideal", f"{f['ratio_to_ideal']}"),
        ("rows/s", f"{f['rows_per_s']}"),
        ("first / last row finished at", f"{f['first_row_done_s']} / {f['last_row_done_s']} s"),
        (
            "row duration p50/p95/max",
            f"{f['row_duration_p50_s']} / {f['row_duration_p95_s']} / {f['row_duration_max_s']} s",
        ),
        (
            "  of which wait p50/p95",
            f"{f['row_wait_p50_s']} / {f['row_wait_p95_s']} s (submit -> terminal status seen)",
        ),
        (
            "  other p50/p95",
            f"{f['row_other_p50_s']} / {f['row_other_p95_s']} s (task runs, submit, download, store)",
        ),
        (
            "event-loop lag p50/p99/max",
            f"{f['loop_lag_p50_ms']} / {f['loop_lag_p99_ms']} / {f['loop_lag_max_ms']} ms",
        ),
        (
            "task runs (per row)",
            f"{f['task_runs']} ({f['task_runs_per_row']}){'' if f['recorder_caught_up'] else ' NOT all recorded yet'}",
        ),
        ("task runs/s", f"{f['task_runs_per_s']}"),
        ("events dropped by the server", f"{f['server_events_dropped']}"),
        (
            "polls per generation",
            f"{f['polls_per_generation']} ({f['polls']} polls / {f['tasks_created']} tasks)",
        ),
        ("submit requests / downloads", f"{f['submit_requests']} / {f['downloads']}"),
        (
            "peak concurrent tasks",
            f"{f['peak_concurrent_tasks']} (<= {f['concurrency']}: {peak_ok})",
        ),
        (
            "rows succeeded",
            f"{f['rows_succeeded']} of {f['rows']} ({f['manifest_lines']} manifest lines)",
        ),
        (
            "peak RSS flow/server/sim",
            f"{f['peak_rss_flow_process_mb']} / {f['peak_rss_prefect_server_mb']} / {f['peak_rss_simulator_mb']} MB",
        ),
        (
            "CPU flow/server/sim",
            f"{f['cpu_flow_process_s']} / {f['cpu_prefect_server_s']} / {f['cpu_simulator_s']} s",
        ),
        (
            "machine load 1-min before/after",
            f"{f['load_avg_1min_before_after']} ({os.cpu_count()} CPUs)",
        ),
    ]
    width = max(len(name) for name, _ in rows)
    print("+" + "-" * (width + 2) + "+" + "-" * 62)
    for name, value in rows:
        print(f"| {name:<{width}} | {value}")
    print("+" + "-" * (width + 2) + "+" + "-" * 62, flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
