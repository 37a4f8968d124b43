"""Soak ``generate_dataset`` against the simulator with random faults; check nothing is paid twice.

Runs the dataset flow over ``--rows`` distinct prompts against a simulator with seeded random
fault rates (``--fault-rate KEY=P``, repeatable; defaults below), then checks the outcome:

* rows, succeeded, failed by reason (the manifest's ``error.code``), outcome_unknown, ...;
* **rows missing from the manifest**: dataset rows without exactly one manifest line (and
  manifest lines for rows that are not in the dataset);
* **duplicate submissions**: rows for which the service created a task that the flow had no
  right to create (paying twice for one image).

The exit code is 1 when there are duplicates or missing rows (or the ledger contradicts the
simulator), else 0.

What counts as a duplicate
--------------------------
Take the tasks the simulator created for one row's prompt, in creation order. The first is
the one the row pays for. Every later task is **legitimate** only when the task just before
it

1. failed **on the service's side** (an error code that ``classify_task_error`` calls
   ``service``, e.g. ``service_error``: resubmitting is the documented way to get the image), and
2. had already failed when the later one was created (the flow could have known), and
3. had its submit answer delivered to the flow (it was not a ``drop_after_create``: a
   submission whose outcome is unknown must never be resubmitted while
   ``resubmit_unknown=False``).

Any other later task is a **duplicate**: a second task after a completed one, after a
request-side failure (``content_policy_violation``), after a dropped submit answer (outcome
unknown), or while the first was still running. A submit answered with 429/5xx creates no task
(and the client retries only those), so it never counts.

Where the evidence comes from:

* the simulator's ``/_sim/stats`` ``submissions_by_prompt``: tasks created per prompt (``T``);
* the ledger, ``OUT/.seedream/tasks/*.json``: ``submissions`` (``S``, submissions the flow
  knows it made: a task id came back, or the outcome was unknown), ``state``, ``task_id``;
* the manifest: each row's final ``status``, ``error.code``, ``task_id``, ``submissions``.

From these alone: ``T > S`` means the service created tasks the flow never recorded
(**untracked**, always a duplicate); ``T == S`` with ``S > 1`` means resubmissions the flow made
on purpose, which are legitimate only under rules 1-3. The ledger keeps only a row's *last*
task, so whether each *earlier* task failed service-side (and when, and whether its answer
was dropped) is read from the simulator itself: this script serves the bundled simulator app
(same code, same config) with one extra read-only route, ``/_bench/tasks``, listing every
task's prompt, creation time, finish time, error code and whether its submit answer was
dropped. Cross-checks (reported as **ledger mismatches**, which also fail the run): the
manifest's ``task_id`` and ``submissions`` equal the ledger's, the ledger's task is the row's
last task, a row that succeeded ended on a completed task, and an ``outcome_unknown`` row's
last task is the dropped one.

Usage::

    .venv/bin/python benchmarks/soak.py --rows 3000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
from collections import Counter, defaultdict
from itertools import pairwise
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from dataset_benchmark import (
    API_KEY,
    count_task_runs,
    prepare_environment,
    proc_cpu_seconds,
    proc_peak_rss_mb,
    read_manifest_lines,
    run_flow,
    self_cpu_seconds,
    self_peak_rss_mb,
    server_log_summary,
    simulator_process,
    start_ephemeral_server,
    write_dataset,
)

DEFAULT_FAULT_RATES = {
    "submit_500": 0.03,
    "submit_429": 0.03,
    "poll_503": 0.03,
    "drop_after_create": 0.02,
    "task_service_error": 0.03,
    "task_content_policy": 0.02,
    "download_500": 0.03,
    "download_truncated": 0.02,
}


# --------------------------------------------------------------------------- simulator


def serve_simulator(config_json: str) -> int:
    """Serve the bundled simulator app plus ``GET /_bench/tasks`` (runs in a subprocess)."""
    from fastapi.responses import JSONResponse

    from prefect_seedream.simulator import SimulatorConfig, create_app, get_state
    from prefect_seedream.simulator import server as sim_server
    from prefect_seedream.simulator.state import SimulatorState

    config = SimulatorConfig.model_validate_json(config_json)
    dropped: set[str] = set()
    original_create = SimulatorState.create_task

    def create_task(self: SimulatorState, request: Any, key_id: str, plan: Any, faults: Any) -> Any:
        task = original_create(self, request, key_id, plan, faults)
        if faults.drop_after_create:
            dropped.add(task.id)
        return task

    SimulatorState.create_task = create_task  # type: ignore[method-assign]  # observe only
    app = create_app(config)
    state = get_state(app)

    @app.get("/_bench/tasks")
    async def bench_tasks() -> JSONResponse:
        return JSONResponse(
            [
                {
                    "seq": seq,
                    "id": task.id,
                    "prompt": task.prompt,
                    "created_at": task.created_at,
                    "finishes_at": task.finishes_at,
                    "error_code": task.error_code,
                    "dropped": task.id in dropped,
                    "polls": task.polls,
                    "downloads": task.downloads,
                }
                for seq, task in enumerate(state.tasks.values())
            ]
        )

    sock = sim_server._bind("127.0.0.1", 0)
    print(
        f"Seedream soak simulator listening on http://127.0.0.1:{sock.getsockname()[1]}", flush=True
    )
    try:
        sim_server._serve(app, sock, "warning")
    except KeyboardInterrupt:
        pass
    return 0


# --------------------------------------------------------------------------- analysis


def load_ledger(output: Path) -> dict[str, dict[str, Any]]:
    """Ledger records by row id."""
    records: dict[str, dict[str, Any]] = {}
    folder = output / ".seedream" / "tasks"
    for path in sorted(folder.glob("*.json")) if folder.exists() else []:
        record = json.loads(path.read_text(encoding="utf-8"))
        records[record["row_id"]] = record
    return records


def analyse(
    items: list[tuple[str, str]],
    lines: list[dict[str, Any]],
    ledger: dict[str, dict[str, Any]],
    stats: dict[str, Any],
    sim_tasks: list[dict[str, Any]],
) -> dict[str, Any]:
    from prefect_seedream.api.models import TaskErrorKind, classify_task_error

    def service_side(code: str | None) -> bool:
        return code is not None and classify_task_error(code) is TaskErrorKind.SERVICE

    by_prompt: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for task in sorted(sim_tasks, key=lambda t: t["seq"]):
        by_prompt[task["prompt"]].append(task)
    created = stats.get("submissions_by_prompt", {})
    lines_by_row: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for line in lines:
        lines_by_row[line["row_id"]].append(line)
    dataset_ids = {row_id for row_id, _ in items}

    report: dict[str, Any] = {
        "rows": len(items),
        "status": Counter(),
        "failed_by_reason": Counter(),
        "not_succeeded_by_reason": Counter(),
        "missing_rows": [],
        "extra_manifest_rows": sorted(set(lines_by_row) - dataset_ids),
        "duplicate_rows": [],
        "duplicate_tasks": 0,
        "duplicate_reasons": Counter(),
        "untracked_rows": [],
        "legit_resubmissions": 0,
        "legit_resubmission_rows": 0,
        "ledger_mismatches": [],
        "tasks_created": stats.get("tasks_created", 0),
        "paid_not_collected": 0,
    }
    for row_id, prompt in items:
        row_lines = lines_by_row.get(row_id, [])
        if len(row_lines) != 1:
            report["missing_rows"].append(f"{row_id} ({len(row_lines)} lines)")
        line = row_lines[0] if row_lines else None
        if line is not None:
            report["status"][line["status"]] += 1
            if line["status"] != "succeeded":
                code = (line.get("error") or {}).get("code", "?")
                report["not_succeeded_by_reason"][f"{line['status']}:{code}"] += 1
                if line["status"] == "failed":
                    report["failed_by_reason"][code] += 1
        record = ledger.get(row_id)
        tasks = by_prompt.get(prompt, [])
        t_count = created.get(prompt, 0)
        s_count = record["submissions"] if record else 0
        if t_count != len(tasks):
            report["ledger_mismatches"].append(
                f"{row_id}: stats say {t_count} tasks, task list has {len(tasks)}"
            )

        # Rule: a later task is legitimate only after a service-side failure the flow saw.
        row_duplicates = []
        for previous, task in pairwise(tasks):
            if previous["dropped"]:
                row_duplicates.append("after a dropped submit answer (outcome unknown)")
            elif not service_side(previous["error_code"]):
                what = previous["error_code"] or "a completed task"
                row_duplicates.append(f"after {what}")
            elif task["created_at"] < previous["finishes_at"]:
                row_duplicates.append("while the previous task was still running")
            else:
                report["legit_resubmissions"] += 1
        if len(tasks) > 1 and not row_duplicates:
            report["legit_resubmission_rows"] += 1
        if t_count > s_count:
            row_duplicates.append(f"untracked: {t_count} tasks created, ledger knows {s_count}")
            report["untracked_rows"].append(row_id)
        if row_duplicates:
            report["duplicate_rows"].append(f"{row_id}: " + "; ".join(row_duplicates))
            report["duplicate_tasks"] += max(0, t_count - 1 - report_legit(tasks, service_side))
            for reason in row_duplicates:
                report["duplicate_reasons"][
                    reason.split(":")[0] if reason.startswith("untracked") else reason
                ] += 1

        # Cross-checks between the manifest, the ledger and the simulator.
        if line is None:
            continue
        problems = []
        if record is None:
            if tasks:
                problems.append(f"{len(tasks)} task(s) created but no ledger record")
        else:
            if line.get("task_id") != record.get("task_id"):
                problems.append(
                    f"manifest task {line.get('task_id')} != ledger task {record.get('task_id')}"
                )
            if line.get("submissions", 0) != s_count:
                problems.append(
                    f"manifest submissions {line.get('submissions')} != ledger {s_count}"
                )
            if s_count > t_count:
                problems.append(
                    f"ledger counts {s_count} submissions, simulator created {t_count} tasks"
                )
            last = tasks[-1] if tasks else None
            if record["state"] == "outcome_unknown":
                if last is None or not last["dropped"]:
                    problems.append("outcome_unknown but the last task's answer was not dropped")
                else:
                    report["paid_not_collected"] += 1
            elif record.get("task_id") and (last is None or last["id"] != record["task_id"]):
                problems.append(f"ledger task {record['task_id']} is not the row's last task")
        if line["status"] == "succeeded" and (not tasks or tasks[-1]["error_code"] is not None):
            problems.append("succeeded but the last task did not complete")
        if problems:
            report["ledger_mismatches"].append(f"{row_id}: " + "; ".join(problems))
    return report


def report_legit(tasks: list[dict[str, Any]], service_side: Any) -> int:
    """Number of legitimate resubmissions among a row's tasks (see the module docstring)."""
    return sum(
        1
        for previous, task in pairwise(tasks)
        if not previous["dropped"]
        and service_side(previous["error_code"])
        and task["created_at"] >= previous["finishes_at"]
    )


# --------------------------------------------------------------------------- main


def _fault_rate(text: str) -> tuple[str, float]:
    from prefect_seedream.simulator import FAULT_RATE_KEYS

    key, sep, value = text.partition("=")
    if not sep or key not in FAULT_RATE_KEYS:
        raise argparse.ArgumentTypeError(
            f"expected KEY=P with KEY one of {', '.join(sorted(FAULT_RATE_KEYS))}"
        )
    return key, float(value)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=32, help="max_concurrency (default 32)")
    parser.add_argument(
        "--latency", type=float, default=0.5, help="simulator seconds per task (default 0.5)"
    )
    parser.add_argument(
        "--jitter", type=float, default=None, help="latency jitter (default latency/4)"
    )
    parser.add_argument("--seed", type=int, default=0, help="simulator seed (faults and jitter)")
    parser.add_argument(
        "--fault-rate",
        action="append",
        type=_fault_rate,
        default=[],
        metavar="KEY=P",
        help="random fault probability, repeatable; overrides that key's default "
        f"(defaults: {', '.join(f'{k}={v}' for k, v in DEFAULT_FAULT_RATES.items())})",
    )
    parser.add_argument(
        "--no-default-faults", action="store_true", help="only the --fault-rate given"
    )
    parser.add_argument(
        "--retries", type=int, default=2, help="generate_dataset retries (default 2)"
    )
    parser.add_argument(
        "--retry-delay",
        type=float,
        default=1.0,
        help="generate_dataset retry_delay_seconds (default 1; the flow's own default is 10)",
    )
    parser.add_argument(
        "--poll-interval", type=float, default=None, help="default min(3, latency/4)"
    )
    parser.add_argument(
        "--output", type=Path, default=None, help="working folder (default: a temp dir, removed)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the temp working folder")
    parser.add_argument(
        "--tuned-server", action="store_true", help="raise the server's recorder batch sizes"
    )
    parser.add_argument("--progress-every", type=float, default=30.0)
    parser.add_argument(
        "--rerun",
        choices=["none", "plain", "resubmit-unknown"],
        default="none",
        help="then run the flow again into the same output: 'plain' must create no new "
        "task (idempotent re-run), nor must 'resubmit-unknown' (resubmit_unknown=True: "
        "outcome-unknown rows are sent again with their Idempotency-Key, a replay)",
    )
    parser.add_argument(
        "--settle-timeout",
        type=float,
        default=60.0,
        help="longest wait for the server to record the task runs after the flow (s)",
    )
    parser.add_argument(
        "--json", type=Path, default=None, help="also write the report(s) as JSON here"
    )
    parser.add_argument("--verbose", action="store_true")
    parser.add_argument("--serve-simulator", metavar="CONFIG_JSON", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.jitter is None:
        args.jitter = args.latency / 4
    if args.poll_interval is None:
        args.poll_interval = min(3.0, args.latency / 4) if args.latency > 0 else 0.1
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.serve_simulator:
        return serve_simulator(args.serve_simulator)
    rates = {} if args.no_default_faults else dict(DEFAULT_FAULT_RATES)
    rates.update(dict(args.fault_rate))
    temp = args.output is None
    workdir = Path(tempfile.mkdtemp(prefix="seedream-soak-")) if temp else args.output.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    if not args.verbose:  # every injected fault logs an ERROR line; keep the console readable
        os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "CRITICAL")
    prepare_environment(
        workdir / "prefect-home", tuned_server=args.tuned_server, verbose=args.verbose
    )
    try:
        return run_soak(args, rates, workdir)
    finally:
        if temp and not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)


def run_soak(args: argparse.Namespace, rates: dict[str, float], workdir: Path) -> int:
    from prefect_seedream.simulator import SimulatorConfig

    dataset, output = workdir / "dataset.csv", workdir / "output"
    if output.exists():
        shutil.rmtree(output)
    items = write_dataset(dataset, args.rows, prefix="soak")
    config = SimulatorConfig(
        latency_seconds=args.latency, jitter_seconds=args.jitter, seed=args.seed, fault_rates=rates
    )
    print(
        f"soak: rows={args.rows} concurrency={args.concurrency} latency={args.latency}s jitter={args.jitter}s "
        f"seed={args.seed} retries={args.retries} retry_delay={args.retry_delay}s poll_interval={args.poll_interval}s "
        f"rerun={args.rerun}",
        flush=True,
    )
    print(f"  fault rates: {rates}", flush=True)
    runs = [("run 1", False)]
    if args.rerun != "none":
        runs.append(
            (f"run 2 (re-run into the same output, {args.rerun})", args.rerun == "resubmit-unknown")
        )
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--serve-simulator",
        config.model_dump_json(),
    ]
    reports = []
    with simulator_process(command, workdir) as sim:
        os.environ["SEEDREAM_API_KEY"] = API_KEY
        os.environ["SEEDREAM_BASE_URL"] = sim.base_url
        import prefect_seedream.flows  # noqa: F401

        server_log = workdir / "prefect-server.err"
        server_s, server_pid = start_ephemeral_server(server_log)
        print(
            f"  simulator at {sim.base_url}; ephemeral Prefect server started in {server_s:.1f} s",
            flush=True,
        )
        tasks_before = 0
        for label, resubmit_unknown in runs:
            print(f"\n== {label}", flush=True)
            cpu0 = self_cpu_seconds()
            server_cpu0 = proc_cpu_seconds(server_pid) if server_pid else None
            flow_kwargs = {
                "max_concurrency": args.concurrency,
                "poll_interval": args.poll_interval,
                "retries": args.retries,
                "retry_delay_seconds": args.retry_delay,
                "resubmit_unknown": resubmit_unknown,
            }
            state, wall, _ = asyncio.run(
                run_flow(dataset, output, args.rows, flow_kwargs, args.progress_every)
            )
            flow_cpu = self_cpu_seconds() - cpu0
            server_cpu = (
                round((proc_cpu_seconds(server_pid) or 0) - (server_cpu0 or 0), 1)
                if server_pid
                else None
            )
            stats = sim.stats()
            sim_tasks = sim.get("/_bench/tasks")
            task_runs = asyncio.run(
                count_task_runs(
                    state.state_details.flow_run_id, None, settle_timeout=args.settle_timeout
                )
            )
            server_rss = proc_peak_rss_mb(server_pid) if server_pid else None
            server_notes = server_log_summary(server_log)
            report = analyse(
                items, read_manifest_lines(output), load_ledger(output), stats, sim_tasks
            )
            report["new_tasks_this_run"] = stats.get("tasks_created", 0) - tasks_before
            tasks_before = stats.get("tasks_created", 0)
            print()
            print(f"Flow state: {state.type.value}: {state.message}")
            print(
                f"Wall {wall:.1f} s; flow-process CPU {flow_cpu:.1f} s; Prefect server CPU {server_cpu} s; "
                f"peak RSS flow {self_peak_rss_mb():.0f} MB, server {server_rss and round(server_rss)} MB"
            )
            print(
                f"Task runs recorded: {task_runs['total']} by task {task_runs['by_task']} by state "
                f"{task_runs['by_state']}; runs retried: {task_runs['retried_runs']}; "
                f"{'all recorded' if task_runs['caught_up'] else 'the server had NOT recorded them all'} "
                f"{task_runs['recorder_lag_s']} s after the flow; server dropped {server_notes['events_dropped']} events"
            )
            print(
                f"Simulator (cumulative): {stats.get('submit_requests')} submit requests, "
                f"{stats.get('tasks_created')} tasks created ({report['new_tasks_this_run']} in this run), "
                f"{stats.get('polls')} polls, {stats.get('downloads')} downloads, peak concurrent "
                f"{stats.get('peak_concurrent_tasks')} (max_concurrency {args.concurrency})"
            )
            print_report(report, stats, args.concurrency)
            report.update(
                label=label,
                wall_s=round(wall, 1),
                flow_cpu_s=round(flow_cpu, 1),
                server_cpu_s=server_cpu,
                task_runs=task_runs,
                server_events_dropped=server_notes["events_dropped"],
                sim_stats={k: v for k, v in stats.items() if k != "submissions_by_prompt"},
            )
            reports.append(report)
    if args.json:
        args.json.write_text(
            json.dumps(
                [
                    {k: (dict(v) if isinstance(v, Counter) else v) for k, v in r.items()}
                    for r in reports
                ],
                indent=2,
            )
        )
    bad = any(
        r["duplicate_rows"]
        or r["missing_rows"]
        or r["ledger_mismatches"]
        or r["extra_manifest_rows"]
        or r["sim_stats"].get("peak_concurrent_tasks", 0) > args.concurrency
        for r in reports
    )
    print(
        f"\nsoak: {'FAILED (duplicates, missing rows or mismatches above)' if bad else 'OK'}",
        flush=True,
    )
    return 1 if bad else 0


def print_report(report: dict[str, Any], stats: dict[str, Any], concurrency: int) -> None:
    counts = report["status"]
    rows = [
        ("rows", report["rows"]),
        ("succeeded", counts.get("succeeded", 0)),
        ("failed", counts.get("failed", 0)),
        ("  by reason", dict(report["failed_by_reason"]) or "-"),
        ("outcome_unknown", counts.get("outcome_unknown", 0)),
        ("in_flight / skipped", f"{counts.get('in_flight', 0)} / {counts.get('skipped', 0)}"),
        (
            "paid but not collected",
            f"{report['paid_not_collected']} (outcome_unknown rows whose task exists)",
        ),
        (
            "tasks created",
            f"{report['tasks_created']} ({report['new_tasks_this_run']} in this run)",
        ),
        (
            "legit resubmissions",
            (
                f"{report['legit_resubmissions']} tasks in "
                f"{report['legit_resubmission_rows']} rows (after a service-side failure)"
            ),
        ),
        (
            "DUPLICATE rows",
            f"{len(report['duplicate_rows'])} ({report['duplicate_tasks']} extra tasks)",
        ),
        ("  untracked (T > S)", len(report["untracked_rows"])),
        ("MISSING rows", len(report["missing_rows"])),
        ("extra manifest rows", len(report["extra_manifest_rows"])),
        ("ledger mismatches", len(report["ledger_mismatches"])),
        (
            "peak concurrent <= C",
            "OK" if stats.get("peak_concurrent_tasks", 0) <= concurrency else "VIOLATION",
        ),
    ]
    width = max(len(name) for name, _ in rows)
    print("+" + "-" * (width + 2) + "+" + "-" * 60)
    for name, value in rows:
        print(f"| {name:<{width}} | {value}")
    print("+" + "-" * (width + 2) + "+" + "-" * 60)
    for title, key in (
        ("Duplicates", "duplicate_rows"),
        ("Missing", "missing_rows"),
        ("Extra manifest rows", "extra_manifest_rows"),
        ("Ledger mismatches", "ledger_mismatches"),
    ):
        if report[key]:
            print(f"{title} (first 20 of {len(report[key])}):")
            for entry in report[key][:20]:
                print(f"  {entry}")
    if report["duplicate_reasons"]:
        print(f"Duplicate reasons: {dict(report['duplicate_reasons'])}")
    print(f"Not succeeded by status:reason: {dict(report['not_succeeded_by_reason'])}", flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
