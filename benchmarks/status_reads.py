"""Status requests per task: batch reads (``POST /v1/tasks/batch``) against a GET per read.

Four runs on one simulator process each (latency L, jitter 0), side by side: N tasks at
concurrency C through the API client (``SeedreamClient``: submit, then ``wait`` with the
submit answer's ``estimated_time``, default poll policy), with

- the right estimate (``estimated_time`` = L) and a wrong one (``--wrong-estimate``, 1 s);
- the client's status reader (batch reads, the default) and ``batch_status_reads=False`` (one
  ``GET /v1/tasks/{id}`` per read: the path every wait took before the reader).

The simulator counts the requests (``GET /_sim/stats``: ``status_requests`` = GET requests +
batch requests). Nothing is downloaded: only the status reads are measured.

    .venv/bin/python benchmarks/status_reads.py                # 200 tasks, C=100, 6 s
    .venv/bin/python benchmarks/status_reads.py --tasks 100 --concurrency 50 --latency 3

Exit code 1 when a task did not complete.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _proc import Simulator, simulator_cli_command, simulator_process

from prefect_seedream.api import GenerationRequest, SeedreamClient, TaskStatus

API_KEY = "sk-bench-status-reads"


async def run_tasks(sim: Simulator, args: argparse.Namespace, batch: bool) -> dict[str, Any]:
    """Submit and wait for ``args.tasks`` tasks, ``args.concurrency`` at a time."""
    gate = asyncio.Semaphore(args.concurrency)
    waits: list[float] = []

    async def one(client: SeedreamClient, index: int) -> bool:
        async with gate:
            task = await client.submit(GenerationRequest(prompt=f"status reads #{index}"))
            submitted = time.monotonic()
            done = await client.wait(task.id, estimated_time=task.task_info.estimated_time)
            waits.append(time.monotonic() - submitted)
            return done.status is TaskStatus.COMPLETED

    sim.reset()
    started = time.monotonic()
    async with SeedreamClient(
        api_key=API_KEY, base_url=sim.base_url, batch_status_reads=batch
    ) as client:
        completed = await asyncio.gather(*(one(client, i) for i in range(args.tasks)))
    wall = time.monotonic() - started
    stats = sim.stats()
    return {
        "completed": sum(completed),
        "wall_s": round(wall, 1),
        "mean_wait_s": round(statistics.fmean(waits), 2),
        "status_requests": stats["status_requests"],
        "batch_requests": stats["batch_requests"],
        "get_requests": stats["get_task_requests"],
        "per_task": round(stats["status_requests"] / args.tasks, 3),
    }


def measure(estimate: int, args: argparse.Namespace, rundir: Path) -> dict[str, dict[str, Any]]:
    """Both read paths on one simulator that announces ``estimate`` seconds."""
    command = simulator_cli_command(args.latency, 0.0, 0, {})
    command += ["--estimated-time", str(estimate), "--image-max-side", "64"]
    rundir.mkdir()
    with simulator_process(command, rundir) as sim:
        return {
            "batch reader": asyncio.run(run_tasks(sim, args, batch=True)),
            "GET per read": asyncio.run(run_tasks(sim, args, batch=False)),
        }


def print_table(results: dict[str, dict[str, dict[str, Any]]], args: argparse.Namespace) -> None:
    print(f"\n{args.tasks} tasks at C={args.concurrency}, latency {args.latency:g} s, jitter 0")
    header = (
        f"{'estimated_time':<16}{'reads':<14}{'requests/task':>14}{'requests':>10}"
        f"{'batch':>7}{'GET':>6}{'wall s':>8}{'mean wait s':>13}"
    )
    print(header)
    print("-" * len(header))
    for label, pair in results.items():
        for mode, row in pair.items():
            print(
                f"{label:<16}{mode:<14}{row['per_task']:>14.3f}{row['status_requests']:>10}"
                f"{row['batch_requests']:>7}{row['get_requests']:>6}{row['wall_s']:>8.1f}"
                f"{row['mean_wait_s']:>13.2f}"
            )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--latency", type=float, default=6.0, help="seconds per task")
    parser.add_argument("--wrong-estimate", type=int, default=1, help="announced seconds")
    parser.add_argument("--json", action="store_true", help="also print the figures as JSON")
    args = parser.parse_args(argv)
    right = max(1, round(args.latency))
    with tempfile.TemporaryDirectory(prefix="seedream-status-reads-") as tmp:
        results = {
            f"right ({right} s)": measure(right, args, Path(tmp) / "right"),
            f"wrong ({args.wrong_estimate} s)": measure(
                args.wrong_estimate, args, Path(tmp) / "wrong"
            ),
        }
    print_table(results, args)
    if args.json:
        print(json.dumps(results))
    complete = all(
        row["completed"] == args.tasks for pair in results.values() for row in pair.values()
    )
    return 0 if complete else 1


if __name__ == "__main__":
    sys.exit(main())
