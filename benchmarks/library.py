"""The plugin as a library, measured: ``generate_many`` against the dataset flow on the same
rows, and the memory of a dataset held in memory against a file of the same rows.

Each contender runs as its own process (``_library_driver.py``) against one simulator process
and one ``prefect server start`` (default settings), measured the way ``compare.py`` measures:
wall time, CPU of the contender's process tree and of the server (from ``/proc``), peak memory,
and the run's task runs, read back from the server.

    .venv/bin/python benchmarks/library.py many --rows 1000 --concurrency 50 --latency 2
    .venv/bin/python benchmarks/library.py memory --rows 100000 --concurrency 100 --latency 0.2

``many`` compares the dataset flow on a CSV file, ``generate_many`` (one call inside a flow) and,
with ``--with-map``, ``generate_images.map`` (a task run per request). ``memory`` compares the
dataset flow on the CSV file with the dataset flow on the same rows as a list of dicts (written
once to the output by the flow, see ``prefect_seedream/engine/sources.py``).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _proc import (
    Simulator,
    become_subreaper,
    simulator_cli_command,
    simulator_process,
    write_dataset,
)
from compare import API_KEY, StartedServer, clean_env, run_process

HERE = Path(__file__).resolve().parent


def simulator_command(latency: float) -> list[str]:
    command = simulator_cli_command(latency, 0.0, 0, {})
    return [*command, "--image-max-side", "64"]  # tiny images: measure the plugin, not Pillow


def measure(mode: str, args: argparse.Namespace, server: StartedServer, sim: Simulator,
            dataset: Path, workdir: Path) -> dict[str, Any]:
    rundir = workdir / mode
    output = rundir / "out"
    env = server.cli_env(clean_env(SEEDREAM_API_KEY=API_KEY, SEEDREAM_BASE_URL=sim.base_url))
    sim.reset()
    before = server.before_run()
    command = [sys.executable, str(HERE / "_library_driver.py"), mode, str(dataset), str(output),
               "--concurrency", str(args.concurrency)]
    run = run_process(command, env, rundir, "client", timeout=args.timeout)
    figures = server.after_run(before, run)
    result = json.loads(next(line for line in reversed(run.stdout.splitlines()) if line.startswith("{")))
    stats = sim.stats()
    rows = args.rows
    server_cpu = figures["cpu_incl_settle_s"]
    peak_client = max((p["peak_rss_mb"] for p in run.processes if p["role"] == "client"), default=None)
    return {
        "mode": mode,
        "exit": run.exit_code,
        "succeeded": result["succeeded"],
        "wall_s": round(run.wall_s, 1),
        "wall_over_ideal": round(run.wall_s / args.ideal, 2),
        "client_cpu_ms_per_row": round(run.cpu_tree_s * 1000 / rows, 1),
        "server_cpu_ms_per_row": round(server_cpu * 1000 / rows, 1),
        "whole_cpu_ms_per_row": round((run.cpu_tree_s + server_cpu) * 1000 / rows, 1),
        "peak_rss_client_mb": peak_client,
        "task_runs": figures.get("task_runs"),
        "stuck": figures.get("stuck"),
        "events_dropped": figures.get("events_dropped"),
        "tasks_created": stats["tasks_created"],
        "polls_per_task": round(stats["polls"] / max(1, stats["tasks_created"]), 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenario", choices=["many", "memory"])
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--latency", type=float, default=2.0)
    parser.add_argument("--with-map", action="store_true", help="many: also measure generate_images.map")
    parser.add_argument("--timeout", type=float, default=7200)
    args = parser.parse_args()
    args.ideal = math.ceil(args.rows / args.concurrency) * args.latency
    become_subreaper()
    modes = {"many": ["dataset-file", "many"] + (["map"] if args.with_map else []),
             "memory": ["dataset-file", "dataset-memory"]}[args.scenario]
    workdir = Path(tempfile.mkdtemp(prefix=f"seedream-library-{args.scenario}-"))
    dataset = workdir / "rows.csv"
    write_dataset(dataset, args.rows)
    print(f"{args.scenario}: {args.rows} rows, C={args.concurrency}, L={args.latency} s, "
          f"ideal {args.ideal:.0f} s; work in {workdir}", flush=True)
    server = StartedServer(workdir, settle_timeout=600)
    server.start()
    results = []
    try:
        with simulator_process(simulator_command(args.latency), workdir) as sim:
            for mode in modes:
                started = time.monotonic()
                results.append(measure(mode, args, server, sim, dataset, workdir))
                print(f"  {mode}: done in {time.monotonic() - started:.0f} s", flush=True)
    finally:
        server.stop()
    keys = list(results[0])
    print()
    print("| " + " | ".join(keys) + " |")
    print("|" + "---|" * len(keys))
    for result in results:
        print("| " + " | ".join(str(result[key]) for key in keys) + " |")
    (workdir / "results.json").write_text(json.dumps(results, indent=2))
    return 0 if all(r["exit"] == 0 and r["succeeded"] == args.rows for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
