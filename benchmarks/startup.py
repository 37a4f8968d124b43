"""Start-up: what the plugin adds to ``import prefect``, and a small run end to end, next to the peer.

Two questions, each answered side by side with a reference measured in the same run:

1. **Import cost.** ``python -c "import prefect"`` against ``python -c "import prefect,
   prefect_seedream.flows"`` (and ``prefect_seedream``, ``prefect_seedream.tasks``, the CLI
   module...): each statement runs ``--import-runs`` times in a fresh interpreter, the runs
   interleaved, and the script prints the median wall time and the seconds added to
   ``import prefect``. Goal: the plugin's flows and tasks add at most 0.2 s. ``--why`` also
   prints which modules cost (``python -X importtime``, the modules beyond ``import prefect``).

2. **A small run, end to end.** 14 rows (the sample dataset's size) at 2 s per generation,
   ``max_concurrency`` 8 (the plugin's default, what ``make run`` uses): the wall time of each
   contender, **from process start to exit** (a subprocess: interpreter start, imports, server
   start and the run's tail all count), against the plain asyncio + httpx peer (``peer.py``) on
   the same simulator process and dataset:

   - ``peer``: ``benchmarks/peer.py`` (no Prefect);
   - ``flow, started server``: ``python -c "from prefect_seedream.flows import generate_dataset;
     generate_dataset(...)"`` with ``PREFECT_API_URL`` of a ``prefect server start`` this script
     started (free port, temporary ``PREFECT_HOME``, default settings). Goal: <= 1.5 x the peer;
   - ``flow, temporary server``: the same script with no ``PREFECT_API_URL``: Prefect starts its
     temporary server itself (the database exists: a warm-up run goes first, as in compare.py).
     Goal: <= 2.5 x the peer;
   - ``CLI, started server`` / ``CLI, own server``: ``prefect-seedream run DATASET --output DIR``
     with and without ``PREFECT_API_URL`` (without it the CLI starts its own temporary server);
   - ``CLI --simulator``: ``prefect-seedream run DATASET --output DIR --simulator``, the path of
     ``make run`` (its own server and the bundled simulator in its process; that simulator has
     jitter latency/4, so its rows end up to 0.5 s later than the peer's);
   - ``make run``: the same on ``examples/prompts.csv`` (other rows: 2 images for some, other
     sizes; shown, its ratio is not like for like).

   For the contenders on the simulator process, a watcher reads ``/_sim/stats`` every 0.1 s:
   "first submit" (start-up: imports, server start, flow-run creation, the validation pass) and
   "last download" (the rows' work) are seconds after launch; "tail" is exit - last download
   (manifest, artifacts, contact sheet, server stop, interpreter exit).

CPU is counted as in compare.py (``run_process``): the subprocess and every descendant it
reaped (``getrusage``), the subprocess's own CPU exact; for the started server, its process
tree's CPU from before the run until it settled.

Usage::

    .venv/bin/python benchmarks/startup.py                 # both parts, 3 repeats (about 5 min)
    .venv/bin/python benchmarks/startup.py --repeat 5 --import-runs 11 --json startup.json
    .venv/bin/python benchmarks/startup.py --only imports --why
    .venv/bin/python benchmarks/startup.py --only runs --contenders peer,flow-started

The machine is shared: read the ratios (each against the peer of the same run), and compare
figures from one invocation. Exit code 1 when a run failed a row or exited non-zero (goals
missed are printed, not an error).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from _proc import (
    REPO,
    Simulator,
    become_subreaper,
    simulator_cli_command,
    simulator_process,
    write_dataset,
)
from compare import API_KEY, StartedServer, clean_env, executable, read_manifest, run_process

HERE = Path(__file__).resolve().parent
EXAMPLES = REPO / "examples" / "prompts.csv"

#: (label, statement): the first is the reference the others are compared with.
IMPORTS: list[tuple[str, str]] = [
    ("python (no import)", "pass"),
    ("import prefect", "import prefect"),
    ("import prefect, prefect.main", "import prefect, prefect.main"),
    ("import prefect, prefect_seedream", "import prefect, prefect_seedream"),
    ("import prefect, prefect_seedream.flows", "import prefect, prefect_seedream.flows"),
    ("import prefect, prefect_seedream.tasks", "import prefect, prefect_seedream.tasks"),
    ("from prefect_seedream import generate_dataset",
     "from prefect_seedream import generate_dataset"),
    ("from prefect_seedream import generate_many", "from prefect_seedream import generate_many"),
    ("import prefect_seedream.cli (before its server)", "import prefect_seedream.cli"),
    ("import httpx (the peer)", "import httpx"),
]  # fmt: skip
REFERENCE = "import prefect"
#: Statements with the <= 0.2 s goal.
IMPORT_GOALS = {
    "import prefect, prefect_seedream.flows": 0.2,
    "import prefect, prefect_seedream.tasks": 0.2,
}

FLOW_SCRIPT = """\
import sys
from prefect_seedream.flows import generate_dataset
state = generate_dataset(sys.argv[1], output=sys.argv[2], max_concurrency=int(sys.argv[3]),
                         return_state=True)
print(state.message)
sys.exit(0 if state.is_completed() else 1)
"""

#: name -> (label, kind, server, goal ratio to the peer)
CONTENDERS: dict[str, tuple[str, str, str, float | None]] = {
    "peer": ("peer (asyncio + httpx)", "peer", "-", None),
    "flow-started": ("flow, started server", "flow", "started", 1.5),
    "flow-temporary": ("flow, temporary server", "flow", "temporary", 2.5),
    "cli-started": ("CLI, started server", "cli", "started", 1.5),
    "cli-own": ("CLI, its own server", "cli", "temporary", 2.5),
    "cli-simulator": ("CLI --simulator (make run path)", "cli-simulator", "temporary", None),
    "make-run": ("make run (examples/prompts.csv)", "make-run", "temporary", None),
}


# --------------------------------------------------------------------------- imports


def import_env(home: Path) -> dict[str, str]:
    return clean_env(PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false",
                     PYTHONSAFEPATH="1")  # fmt: skip


def compile_plugin(env: dict[str, str]) -> str:
    """Write the .pyc files of the plugin that ``env`` imports (as an install has them: with
    ``PYTHONDONTWRITEBYTECODE`` set, every import would compile the sources again)."""
    code = (
        "import compileall, importlib.util; "
        "folder = importlib.util.find_spec('prefect_seedream').submodule_search_locations[0]; "
        "compileall.compile_dir(folder, quiet=1); print(folder)"
    )
    result = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True,
                            text=True, check=True)  # fmt: skip
    return result.stdout.strip()


def measure_imports(runs: int, env: dict[str, str]) -> dict[str, dict[str, float]]:
    """Each statement ``runs`` times in a fresh interpreter, interleaved; wall seconds."""
    times: dict[str, list[float]] = {label: [] for label, _ in IMPORTS}
    for _ in range(runs):
        for label, statement in IMPORTS:
            started = time.perf_counter()
            subprocess.run([sys.executable, "-c", statement], env=env, cwd=REPO, check=True)
            times[label].append(time.perf_counter() - started)
    reference = statistics.median(times[REFERENCE])
    return {
        label: {
            "median_s": round(statistics.median(values), 3),
            "min_s": round(min(values), 3),
            "added_s": round(statistics.median(values) - reference, 3),
            "added_min_s": round(min(values) - min(times[REFERENCE]), 3),
        }
        for label, values in times.items()
    }


def print_imports(figures: dict[str, dict[str, float]], runs: int) -> None:
    print()
    print(f"Import cost: wall seconds of `python -c STATEMENT`, median (min) of {runs} runs")
    width = max(len(label) for label in figures)
    print(f"  {'statement':<{width}}  {'median':>7}  {'min':>6}  {'added to import prefect':>24}")
    for label, row in figures.items():
        goal = IMPORT_GOALS.get(label)
        verdict = ""
        if goal is not None:
            verdict = f"  goal <= {goal:g}: {'ok' if row['added_s'] <= goal else 'MISSED'}"
        added = "" if label == REFERENCE else f"{row['added_s']:+.3f} ({row['added_min_s']:+.3f})"
        print(f"  {label:<{width}}  {row['median_s']:7.3f}  {row['min_s']:6.3f}  {added:>24}{verdict}")


def print_why(env: dict[str, str], statement: str, top: int = 25) -> None:
    """The modules ``statement`` imports beyond ``import prefect``, by cumulative time."""

    def importtime(code: str) -> list[tuple[int, int, str]]:
        result = subprocess.run(
            [sys.executable, "-X", "importtime", "-c", code],
            env=env, cwd=REPO, capture_output=True, text=True, check=True,
        )  # fmt: skip
        rows = []
        for line in result.stderr.splitlines():
            if line.startswith("import time:") and "self [us]" not in line:
                own, cumulative, name = line.split(":", 1)[1].split("|")
                rows.append((int(own), int(cumulative), name.rstrip()))
        return rows

    base = {name.strip() for _, _, name in importtime("import prefect")}
    extra = [row for row in importtime(statement) if row[2].strip() not in base]
    print()
    print(f"Modules `{statement}` imports beyond `import prefect` (python -X importtime; "
          f"{len(extra)} modules, {sum(r[0] for r in extra) / 1000:.0f} ms own time in all):")  # fmt: skip
    print(f"  {'cumulative ms':>13}  {'own ms':>6}  module")
    for own, cumulative, name in sorted(extra, key=lambda r: -r[1])[:top]:
        print(f"  {cumulative / 1000:13.1f}  {own / 1000:6.1f}  {name.strip()}")


# --------------------------------------------------------------------------- runs


class Timeline:
    """Polls ``/_sim/stats`` every ``period`` s while a contender runs: when its first submit
    arrived, and when the downloads count last changed (its last download; read once more
    after the process exited, so that downloads just before its exit are not missed: then the
    figure is the time of that read, an upper bound)."""

    def __init__(self, sim: Simulator, period: float = 0.1) -> None:
        self.sim = sim
        self.period = period
        self.first_submit: float | None = None
        self.last_download: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="timeline", daemon=True)

    def start(self) -> Timeline:
        self._thread.start()
        return self

    def _run(self) -> None:
        import httpx

        downloads = 0
        with httpx.Client(base_url=self.sim.base_url, timeout=10) as client:
            while True:
                stopping = self._stop.is_set()  # one read after the process exited: its last
                try:  # downloads may have come after the previous read (then: at exit, at most)
                    stats = client.get("/_sim/stats").json()
                except (httpx.HTTPError, ValueError):
                    stats = {}
                now = time.monotonic()
                if self.first_submit is None and stats.get("submit_requests", 0) > 0:
                    self.first_submit = now
                if stats.get("downloads", 0) > downloads:
                    downloads = stats["downloads"]
                    self.last_download = now
                if stopping:
                    return
                self._stop.wait(self.period)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def command_for(name: str, args: argparse.Namespace, dataset: Path, output: Path, sim: Simulator) -> list[str]:
    kind = CONTENDERS[name][1]
    if kind == "peer":
        return [
            sys.executable, str(HERE / "peer.py"), str(dataset), "--output", str(output),
            "--base-url", sim.base_url, "--api-key", API_KEY,
            "--concurrency", str(args.concurrency), "--poll-interval", str(args.poll_interval),
        ]  # fmt: skip
    if kind == "flow":
        return [sys.executable, "-c", FLOW_SCRIPT, str(dataset), str(output), str(args.concurrency)]
    cli = executable("prefect-seedream")
    if kind == "cli":
        return [cli, "run", str(dataset), "--output", str(output), "--max-concurrency", str(args.concurrency)]
    if kind == "cli-simulator":
        return [cli, "run", str(dataset), "--output", str(output), "--simulator",
                "--max-concurrency", str(args.concurrency), "--simulator-latency", str(args.latency)]  # fmt: skip
    return [cli, "run", str(EXAMPLES), "--output", str(output), "--simulator"]  # make run


def env_for(name: str, sim: Simulator, started: StartedServer | None, temporary_home: Path) -> dict[str, str]:
    kind, server = CONTENDERS[name][1:3]
    if kind in ("cli-simulator", "make-run"):
        env = clean_env()  # no key, no base URL: the command's own simulator
    else:
        env = clean_env(SEEDREAM_API_KEY=API_KEY, SEEDREAM_BASE_URL=sim.base_url)
    env["PYTHONSAFEPATH"] = "1"  # `python -c` imports the installed plugin, not ./prefect_seedream
    if server == "started":
        assert started is not None
        return started.cli_env(env)
    env["PREFECT_HOME"] = str(temporary_home)
    env["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    return env


def measure_run(
    name: str, args: argparse.Namespace, sim: Simulator, started: StartedServer | None,
    temporary_home: Path, dataset: Path, rundir: Path,
) -> dict[str, Any]:  # fmt: skip
    output = rundir / "out"
    kind, server = CONTENDERS[name][1:3]
    sim.reset()
    server_cpu = started.cpu() if server == "started" and started else None
    on_sim = kind in ("peer", "flow", "cli")
    timeline = Timeline(sim).start() if on_sim else None
    load = os.getloadavg()[0]
    run = run_process(
        command_for(name, args, dataset, output, sim), env_for(name, sim, started, temporary_home),
        rundir, "client", timeout=args.timeout,
    )  # fmt: skip
    if timeline is not None:
        timeline.stop()
    if server == "started" and started is not None and server_cpu is not None:
        started.settle([])
        server_cpu = started.cpu() - server_cpu
    lines, statuses, _ = read_manifest(output)
    expected = args.rows if kind != "make-run" else sum(1 for _ in EXAMPLES.open()) - 1

    def after_launch(at: float | None) -> float | None:
        return round(at - run.started, 2) if at is not None else None

    first = after_launch(timeline.first_submit) if timeline else None
    last = after_launch(timeline.last_download) if timeline else None
    whole = run.cpu_tree_s + (server_cpu or 0.0)
    return {
        "contender": name,
        "exit_code": run.exit_code,
        "wall_s": round(run.wall_s, 2),
        "rows": expected,
        "rows_succeeded": statuses.get("succeeded", 0),
        "manifest_lines": lines,
        "first_submit_s": first,
        "last_download_s": last,
        "tail_s": round(run.wall_s - last, 2) if last is not None else None,
        "cpu_client_s": round(run.cpu_root_s, 2),
        "cpu_tree_s": round(run.cpu_tree_s, 2),
        "cpu_server_s": round(server_cpu, 2) if server_cpu is not None else None,
        "cpu_whole_s": round(whole, 2),
        "processes": len(run.processes),
        "left_running": run.left_running,
        "load_avg_1min_at_start": round(load, 2),
        "stdout_last_line": next(
            (ln.strip() for ln in reversed(run.stdout.splitlines()) if ln.strip()), ""
        ),
        "logs": str(rundir),
    }


def warm_up(args: argparse.Namespace, sim: Simulator, started: StartedServer | None,
            temporary_home: Path, workdir: Path, names: list[str]) -> None:  # fmt: skip
    """One unmeasured run of each kind of client on 3 rows: the temporary servers' database is
    created and migrated, every .pyc written, the started server's first flow run done."""
    dataset = workdir / "warmup.csv"
    write_dataset(dataset, 3, prefix="warmup")
    kinds_done: set[tuple[str, str]] = set()
    for name in names:
        kind, server = CONTENDERS[name][1:3]
        if kind not in ("flow", "cli") or (kind, server) in kinds_done:
            continue
        kinds_done.add((kind, server))
        result = measure_run(name, args, sim, started, temporary_home, dataset, workdir / f"warmup-{name}")
        print(f"  warm-up {name}: {result['wall_s']} s, exit {result['exit_code']}", flush=True)


def median_of(results: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in results if isinstance(r.get(key), (int, float))]
    return round(statistics.median(values), 2) if values else None


def print_runs(results: dict[str, list[dict[str, Any]]], args: argparse.Namespace) -> None:
    peer = median_of(results.get("peer", []), "wall_s")
    ideal = -(-args.rows // args.concurrency) * args.latency
    print()
    print(f"Small run: {args.rows} rows, latency {args.latency:g} s, max_concurrency {args.concurrency} "
          f"(ideal ceil(N/C)*L = {ideal:g} s); median of {args.repeat}; seconds from launch")  # fmt: skip
    header = ("contender", "wall", "min", "x peer", "goal", "1st submit", "last dl", "tail",
              "CPU client", "CPU tree+srv", "rows ok")  # fmt: skip
    rows = []
    for name, runs in results.items():
        label, _, _, goal = CONTENDERS[name]
        wall = median_of(runs, "wall_s")
        ratio = round(wall / peer, 2) if wall and peer else None
        verdict = "-" if goal is None else f"<={goal:g} {'ok' if ratio and ratio <= goal else 'MISSED'}"
        ok = f"{min(r['rows_succeeded'] for r in runs)}/{runs[0]['rows']}"
        rows.append((
            label, wall, min(r["wall_s"] for r in runs), ratio, verdict,
            median_of(runs, "first_submit_s"), median_of(runs, "last_download_s"),
            median_of(runs, "tail_s"), median_of(runs, "cpu_client_s"), median_of(runs, "cpu_whole_s"), ok,
        ))  # fmt: skip
    cells = [[("-" if v is None else str(v)) for v in row] for row in [header, *rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    for index, row in enumerate(cells):
        print("  " + "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))))
        if index == 0:
            print("  " + "  ".join("-" * w for w in widths))
    print("  (make run: other rows than the peer's; CLI --simulator and make run: the simulator in "
          "the CLI's process, jitter latency/4)")  # fmt: skip


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=["imports", "runs"], help="one part only")
    parser.add_argument("--import-runs", type=int, default=7, help="runs per import statement")
    parser.add_argument("--why", action="store_true", help="also list the modules that cost")
    parser.add_argument("--rows", type=int, default=14)
    parser.add_argument("--latency", type=float, default=2.0)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--poll-interval", type=float, default=3.0, help="the peer's (default 3)")
    parser.add_argument("--repeat", type=int, default=3, help="rounds of every contender")
    parser.add_argument("--contenders", default=",".join(CONTENDERS),
                        help=f"comma-separated, of: {', '.join(CONTENDERS)}")  # fmt: skip
    parser.add_argument("--timeout", type=float, default=300.0, help="per run (s)")
    parser.add_argument("--json", type=Path, help="also write every figure here")
    parser.add_argument("--keep", type=Path, metavar="DIR", help="keep the working folder here")
    args = parser.parse_args(argv)
    args.contender_names = [n.strip() for n in args.contenders.split(",") if n.strip()]
    unknown = set(args.contender_names) - set(CONTENDERS)
    if unknown:
        parser.error(f"unknown contender(s): {', '.join(sorted(unknown))}")
    if "peer" not in args.contender_names:
        args.contender_names.insert(0, "peer")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    workdir = args.keep.resolve() if args.keep else Path(tempfile.mkdtemp(prefix="seedream-startup-"))
    workdir.mkdir(parents=True, exist_ok=True)
    subreaper = become_subreaper()
    load_before = os.getloadavg()
    print(f"startup: workdir={workdir} load average before: {' '.join(f'{x:.2f}' for x in load_before)} "
          f"({os.cpu_count()} CPUs); subreaper: {subreaper}", flush=True)  # fmt: skip
    report: dict[str, Any] = {"load_avg_before": load_before}
    ok = True
    try:
        env = import_env(workdir / "prefect-home-imports")
        report["plugin_source"] = source = compile_plugin(env)
        print(f"  the plugin imported from {source} (its .pyc files written)", flush=True)
        if args.only != "runs":
            subprocess.run([sys.executable, "-c", "import prefect_seedream.flows, prefect_seedream.cli"],
                           env=env, cwd=REPO, check=True)  # the Prefect home created  # fmt: skip
            report["imports"] = measure_imports(args.import_runs, env)
            print_imports(report["imports"], args.import_runs)
            if args.why:
                print_why(env, "import prefect, prefect_seedream.flows")
                print_why(env, "import prefect, prefect_seedream.tasks")
        if args.only != "imports":
            report["runs"] = results = run_all(args, workdir)
            print_runs(results, args)
            for runs in results.values():
                for run in runs:
                    ok &= run["exit_code"] == 0 and run["rows_succeeded"] == run["rows"]
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    load_after = os.getloadavg()
    print(f"load average before: {' '.join(f'{x:.2f}' for x in load_before)}; "
          f"after: {' '.join(f'{x:.2f}' for x in load_after)} ({os.cpu_count()} CPUs)")  # fmt: skip
    if args.json:
        report.update(load_avg_after=load_after, ok=ok,
                      config={k: v for k, v in vars(args).items() if k not in ("json", "keep")})  # fmt: skip
        args.json.write_text(json.dumps(report, indent=2, default=str))
    if not ok:
        print("NOT OK: a run exited non-zero or a row did not succeed (see the logs with --keep)")
    return 0 if ok else 1


def run_all(args: argparse.Namespace, workdir: Path) -> dict[str, list[dict[str, Any]]]:
    dataset = workdir / "dataset.csv"
    write_dataset(dataset, args.rows)
    temporary_home = workdir / "prefect-home-temporary"
    temporary_home.mkdir()
    names = args.contender_names
    started = None
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    command = simulator_cli_command(args.latency, 0.0, 0, {})
    with simulator_process(command, workdir) as sim:
        print(f"  simulator at {sim.base_url} (pid {sim.pid})", flush=True)
        try:
            if any(CONTENDERS[n][2] == "started" for n in names):
                started = StartedServer(workdir, settle_timeout=30.0)
                started.start()
            warm_up(args, sim, started, temporary_home, workdir, names)
            for repeat in range(args.repeat):
                # rotate the order: each contender runs first once in a while
                order = names[repeat % len(names):] + names[: repeat % len(names)]
                for name in order:
                    rundir = workdir / "runs" / f"{repeat + 1}-{name}"
                    result = measure_run(name, args, sim, started, temporary_home, dataset, rundir)
                    results[name].append(result)
                    print(
                        f"  {repeat + 1}/{args.repeat} {name}: {result['wall_s']} s, exit "
                        f"{result['exit_code']}, {result['rows_succeeded']}/{result['rows']} ok, "
                        f"first submit {result['first_submit_s']}, last download "
                        f"{result['last_download_s']} (load {result['load_avg_1min_at_start']})",
                        flush=True,
                    )
        finally:
            if started is not None:
                started.stop()
    return results


if __name__ == "__main__":
    raise SystemExit(main())
