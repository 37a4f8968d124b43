"""Compare ``prefect-seedream run`` with the plain asyncio + httpx peer (peer.py), side by side.

One command, one simulator process, the same dataset: each contender runs as a subprocess
against the same simulator (its counters reset between runs) and this script prints, for both:
wall time, rows/s, CPU per row of the whole process tree, split by process (peer / CLI client /
Prefect server / anything else), polls per generation, submits and downloads, peak memory of
each process, and the ratios plugin/peer for wall and CPU, plus the ideal ceil(N/C)*L.

The plugin is a black box: ``prefect-seedream run DATASET --output DIR --max-concurrency C
[extra args]`` with ``SEEDREAM_API_KEY`` / ``SEEDREAM_BASE_URL`` pointing at the simulator;
its exit code and ``DIR/manifest.jsonl`` (one line per row with a ``status``) are all that is
read. Which Prefect server it talks to is a strategy (``--server``):

- ``embedded`` (default): no ``PREFECT_API_URL`` and a private ``PREFECT_HOME``, so the CLI starts
  Prefect's temporary server as its child process; the CLI runs once on a 3-row dataset first so
  that the measured run is a second run (database already created). The server's start-up and
  CPU count in the plugin's figures.
- ``started``: ``prefect server start`` with default settings (SQLite, a fresh private
  ``PREFECT_HOME``, analytics off, its port) in its own process, the CLI pointed at it with
  ``PREFECT_API_URL``. After each run the script waits for the server to settle, then reads the
  run's flow runs, task runs (by state; "stuck" = left non-final), logs and events through the
  Prefect client, and counts "Subscription queue is full, dropping message" lines in its log.

CPU accounting: ``getrusage(RUSAGE_CHILDREN)`` deltas around each subprocess (they include
every descendant that was waited for), the exact own CPU of the subprocess read from
``/proc/<pid>/stat`` while it is a zombie (exited, not yet reaped: ``os.waitid(WNOWAIT)``),
which also gives the exact CPU of the children it reaped, and a sampler reading ``/proc`` of
every process in the tree every 0.5 s (command line, CPU, ``VmHWM`` peak memory). This script
makes itself a child subreaper, so a grandchild left running by its parent is still seen,
stopped and counted. A started server's CPU is read from /proc of its live process tree
before and after each run.

Usage::

    .venv/bin/python benchmarks/compare.py --rows 1000 --concurrency 50 --latency 2
    .venv/bin/python benchmarks/compare.py --rows 3000 --concurrency 64 --latency 1 --server started

See ``benchmarks/README.md`` for every figure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from _proc import (
    REPO,
    ProcRecord,
    Simulator,
    TreeSampler,
    become_subreaper,
    descendants,
    proc_cpu_seconds,
    proc_peak_rss_mb,
    read_stat,
    simulator_cli_command,
    simulator_process,
    tree_cpu_seconds,
    write_dataset,
)

API_KEY = "sk-compare"
HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
DROPPED = "Subscription queue is full, dropping message"
NON_FINAL = ("SCHEDULED", "PENDING", "RUNNING", "PAUSED", "CANCELLING")
STATE_TYPES = (*NON_FINAL, "COMPLETED", "FAILED", "CANCELLED", "CRASHED")
WARMUP_ROWS = 3


# --------------------------------------------------------------------------- helpers


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without any ``PREFECT_*`` / ``SEEDREAM_*`` setting, plus extra."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("PREFECT_", "SEEDREAM_"))
    }
    env.update(extra)
    return env


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def executable(name: str) -> str:
    candidate = BIN / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if not found:
        raise SystemExit(f"compare: cannot find the {name!r} command next to {sys.executable}")
    return found


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def count_in_file(path: Path, needle: str) -> int:
    if not path.exists():
        return 0
    with path.open(errors="replace") as handle:
        return sum(needle in line for line in handle)


def read_manifest(output: Path) -> tuple[int, Counter[str], list[float]]:
    """Manifest lines, their ``status`` counts and the ``duration_seconds`` found (if any)."""
    path = output / "manifest.jsonl"
    statuses: Counter[str] = Counter()
    durations: list[float] = []
    lines = 0
    if path.exists():
        for text in path.read_text(encoding="utf-8").splitlines():
            if text.strip():
                lines += 1
                try:
                    line = json.loads(text)
                except ValueError:
                    statuses["unparsable"] += 1
                    continue
                statuses[str(line.get("status"))] += 1
                if isinstance(line.get("duration_seconds"), (int, float)):
                    durations.append(float(line["duration_seconds"]))
    return lines, statuses, durations


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, max(0, math.ceil(q * len(values)) - 1))]


class FirstSubmitWatcher:
    """Notes when the simulator sees its first submit (polls ``/_sim/stats`` until then).

    Launch -> first submit is the contender's start-up: interpreter, imports, and for the
    plugin the Prefect server start (embedded), flow-run creation and dataset validation.
    It stops polling at the first submit; until then each poll costs the simulator a
    millisecond or two (counted in its CPU).
    """

    def __init__(self, sim: Simulator, period: float = 0.25) -> None:
        self.sim = sim
        self.period = period
        self.at: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="first-submit", daemon=True)

    def start(self) -> FirstSubmitWatcher:
        self._thread.start()
        return self

    def _run(self) -> None:
        import httpx

        with httpx.Client(base_url=self.sim.base_url, timeout=10) as client:
            while not self._stop.is_set():
                try:
                    if client.get("/_sim/stats").json().get("submit_requests", 0) > 0:
                        self.at = time.monotonic()
                        return
                except (httpx.HTTPError, ValueError):
                    pass
                self._stop.wait(self.period)

    def stop(self) -> float | None:
        self._stop.set()
        self._thread.join()
        return self.at


def role_of(record: ProcRecord, root: int, root_role: str) -> str:
    if record.pid == root:
        return root_role
    text = " ".join(record.cmdline)
    if "uvicorn" in text and "prefect" in text:
        return "Prefect server"
    if "prefect" in text and "server" in text:
        return "Prefect server"
    return "other"


def short_cmd(cmdline: list[str], width: int = 70) -> str:
    parts = [Path(cmdline[0]).name, *cmdline[1:]] if cmdline else ["?"]
    text = " ".join(parts)
    return text if len(text) <= width else text[: width - 3] + "..."


# --------------------------------------------------------------------------- one subprocess


@dataclass
class ProcessRun:
    """One measured subprocess: its wall time and CPU, split by process."""

    command: list[str]
    pid: int
    root_role: str
    exit_code: int
    wall_s: float
    cpu_tree_s: float  # getrusage(RUSAGE_CHILDREN) delta: the subprocess + reaped descendants
    cpu_root_s: float  # the subprocess's own CPU (exact, read while it was a zombie)
    cpu_reaped_by_root_s: float  # the descendants it waited for (exact)
    processes: list[dict[str, Any]] = field(default_factory=list)
    left_running: int = 0  # descendants still alive when the subprocess exited
    timed_out: bool = False
    started: float = 0.0  # time.monotonic() at launch
    stdout: str = ""
    stderr: str = ""

    def cpu_by_role(self) -> dict[str, float]:
        """CPU seconds per role; descendants' total is exact, its split between roles sampled."""
        roles: Counter[str] = Counter()
        roles[self.root_role] = self.cpu_root_s
        descendants_total = max(0.0, self.cpu_tree_s - self.cpu_root_s)
        sampled: Counter[str] = Counter()
        for proc in self.processes:
            if proc["pid"] != self.pid:
                sampled[proc["role"]] += proc["cpu_s"]
        if len(sampled) == 1:
            (role,) = sampled
            roles[role] += descendants_total
        elif sampled:
            total = sum(sampled.values()) or 1.0
            for role, value in sampled.items():
                roles[role] += descendants_total * value / total
        elif descendants_total > 0.05:  # below: /proc's clock ticks against getrusage's us
            roles["other (not sampled)"] += descendants_total
        return dict(roles)


def wait_exited(pid: int, timeout: float) -> bool:
    """Wait until child ``pid`` has exited, without reaping it (it stays a zombie)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
            return True
        time.sleep(0.02)
    return False


def stop_group(pid: int) -> None:
    """SIGTERM, then SIGKILL, the process group that our subprocess ``pid`` leads."""
    for sig, grace in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            try:
                os.killpg(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)


def wait_child(pid: int, timeout: float) -> bool:
    """Reap our child ``pid`` once it exits; False if it is still running after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if os.waitpid(pid, os.WNOHANG)[0]:
                return True
        except ChildProcessError:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)


def reap_orphans(records: list[ProcRecord], root: int) -> int:
    """Stop and reap descendants re-parented to us (we are a subreaper); returns how many
    were still running (not merely unreaped) when ``root`` exited."""
    me = os.getpid()
    left = 0
    for record in records:
        if record.pid == root:
            continue
        stat = read_stat(record.pid)
        if stat is None or stat.starttime != record.starttime or stat.ppid != me:
            continue
        left += stat.state != "Z"
        for sig, grace in ((None, 5.0), (signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
            if sig is not None:
                try:
                    os.kill(record.pid, sig)
                except ProcessLookupError:
                    pass
            if wait_child(record.pid, grace):
                break
    return left


def run_process(
    command: list[str],
    env: dict[str, str],
    logs: Path,
    root_role: str,
    timeout: float,
) -> ProcessRun:
    """Run ``command`` to its end and measure it and every process it starts."""
    logs.mkdir(parents=True, exist_ok=True)
    out_path, err_path = logs / "stdout.log", logs / "stderr.log"
    cpu_before = children_cpu_seconds()
    started = time.monotonic()
    with out_path.open("w") as out, err_path.open("w") as err:
        proc = subprocess.Popen(
            command, env=env, stdout=out, stderr=err, cwd=REPO, start_new_session=True
        )
    sampler = TreeSampler(proc.pid, period=0.5).start()
    timed_out = not wait_exited(proc.pid, timeout)
    if timed_out:
        print(f"  TIMEOUT after {timeout:.0f} s: stopping {command[0]} (pid {proc.pid})")
        stop_group(proc.pid)
        wait_exited(proc.pid, 30)
    wall = time.monotonic() - started
    zombie = read_stat(proc.pid)
    sampler.sample()  # the descendants' last readings, and who is left running
    records = sampler.stop()
    exit_code = proc.wait()
    left = reap_orphans(records, proc.pid)
    cpu_tree = children_cpu_seconds() - cpu_before
    processes = []
    for record in records:
        role = role_of(record, proc.pid, root_role)
        own = zombie.cpu if record.pid == proc.pid and zombie else record.cpu + record.children_cpu
        processes.append(
            {
                "role": role,
                "pid": record.pid,
                "ppid": record.ppid,
                "cmd": short_cmd(record.cmdline),
                "cpu_s": round(own, 2),
                "peak_rss_mb": round(record.peak_rss_kb / 1024, 1),
                "lifetime_s": round(record.last_seen - record.first_seen, 1),
            }
        )
    return ProcessRun(
        command=command,
        pid=proc.pid,
        root_role=root_role,
        exit_code=exit_code,
        wall_s=wall,
        cpu_tree_s=cpu_tree,
        cpu_root_s=zombie.cpu if zombie else float("nan"),
        cpu_reaped_by_root_s=zombie.children_cpu if zombie else float("nan"),
        processes=processes,
        left_running=left,
        timed_out=timed_out,
        started=started,
        stdout=out_path.read_text(errors="replace")[-2000:],
        stderr=str(err_path),
    )


# --------------------------------------------------------------------------- server strategies


class EmbeddedServer:
    """No ``PREFECT_API_URL``: the CLI starts Prefect's temporary server as its child."""

    name = "embedded"

    def __init__(self, workdir: Path) -> None:
        self.home = workdir / "prefect-home-cli"

    def start(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)

    def cli_env(self, env: dict[str, str]) -> dict[str, str]:
        env["PREFECT_HOME"] = str(self.home)
        return env

    def before_run(self) -> dict[str, Any]:
        return {}

    def after_run(self, before: dict[str, Any], run: ProcessRun) -> dict[str, Any]:
        # the temporary server writes its warnings to the CLI's stderr (inherited)
        return {"events_dropped": count_in_file(Path(run.stderr), DROPPED)}

    def stop(self) -> None:
        pass


class StartedServer:
    """``prefect server start`` in its own process, default settings; the CLI points at it.

    ``extra_env`` is where a variant plugs in (e.g. a PostgreSQL server:
    ``{"PREFECT_API_DATABASE_CONNECTION_URL": url}``); nothing else would change.
    """

    name = "started"

    def __init__(
        self, workdir: Path, settle_timeout: float, extra_env: dict[str, str] | None = None
    ) -> None:
        self.workdir = workdir
        self.settle_timeout = settle_timeout
        self.extra_env = extra_env or {}
        self.home = workdir / "prefect-home-server"
        self.cli_home = workdir / "prefect-home-cli"
        self.log = workdir / "prefect-server.log"
        self.proc: subprocess.Popen[Any] | None = None
        self.sampler: TreeSampler | None = None
        self.port = 0
        self.start_s = 0.0

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    def start(self) -> None:
        import httpx

        self.port = free_port()
        self.home.mkdir(parents=True, exist_ok=True)
        self.cli_home.mkdir(parents=True, exist_ok=True)
        env = clean_env(
            PREFECT_HOME=str(self.home),
            PREFECT_SERVER_ANALYTICS_ENABLED="false",
            PREFECT_UI_API_URL=self.api_url,
            PREFECT_SERVER_API_PORT=str(self.port),
            **self.extra_env,
        )
        command = [executable("prefect"), "server", "start", "--host", "127.0.0.1"]
        command += ["--port", str(self.port)]
        started = time.monotonic()
        with self.log.open("w") as log:
            self.proc = subprocess.Popen(
                command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir,
                start_new_session=True,
            )  # fmt: skip
        self.sampler = TreeSampler(self.proc.pid, period=0.5).start()
        deadline = started + 180
        while True:
            if self.proc.poll() is not None:
                raise SystemExit(f"compare: prefect server exited; see {self.log}")
            try:
                if httpx.get(f"{self.api_url}/health", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit(f"compare: prefect server not up after 180 s; see {self.log}")
            time.sleep(0.2)
        self.start_s = time.monotonic() - started
        time.sleep(1.0)
        tree = descendants(self.proc.pid)
        print(
            f"  prefect server start: up in {self.start_s:.1f} s at {self.api_url} "
            f"(pid {self.proc.pid}, {len(tree)} child process(es){': ' if tree else ''}"
            f"{', '.join(str(p) for p in tree)}); log {self.log}",
            flush=True,
        )
        os.environ["PREFECT_HOME"] = str(self.workdir / "prefect-home-compare")
        import prefect.client.orchestration  # noqa: F401  (imported before any measured run)

    def cli_env(self, env: dict[str, str]) -> dict[str, str]:
        env["PREFECT_API_URL"] = self.api_url
        env["PREFECT_HOME"] = str(self.cli_home)
        return env

    def cpu(self) -> float:
        assert self.proc is not None
        return tree_cpu_seconds(self.proc.pid)

    def before_run(self) -> dict[str, Any]:
        return {
            "cpu": self.cpu(),
            "dropped": count_in_file(self.log, DROPPED),
            "flow_runs": set(self._query(self._flow_run_ids)),
            "since": datetime.now(timezone.utc) - timedelta(minutes=1),
        }

    def after_run(self, before: dict[str, Any], run: ProcessRun) -> dict[str, Any]:
        cpu_run = self.cpu() - before["cpu"]
        new_ids = [i for i in self._query(self._flow_run_ids) if i not in before["flow_runs"]]
        settle_started = time.monotonic()
        settled = self.settle(new_ids)
        figures = self._query(self._run_figures, new_ids, before["since"])
        figures.update(
            cpu_run_s=round(cpu_run, 2),
            cpu_incl_settle_s=round(self.cpu() - before["cpu"], 2),
            settle_s=round(time.monotonic() - settle_started, 1),
            settled=settled,
            events_dropped=count_in_file(self.log, DROPPED) - before["dropped"],
        )
        return figures

    def processes(self) -> list[dict[str, Any]]:
        assert self.proc is not None and self.sampler is not None
        self.sampler.sample()
        out = []
        for record in self.sampler.snapshot():
            out.append(
                {
                    "role": "Prefect server",
                    "pid": record.pid,
                    "ppid": record.ppid,
                    "cmd": short_cmd(record.cmdline),
                    "cpu_s": round(record.cpu + record.children_cpu, 2),
                    "peak_rss_mb": round(record.peak_rss_kb / 1024, 1),
                    "alive": record.alive,
                    "note": "CPU since the server started",
                }
            )
        return out

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.sampler is not None:
            self.sampler.stop()
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGINT)
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                stop_group(self.proc.pid)
                self.proc.wait()
            except ProcessLookupError:
                self.proc.wait()

    # -- Prefect client queries ----------------------------------------------------------

    def _query(self, function: Any, *arguments: Any) -> Any:
        """Run ``function(client, *arguments)`` with a Prefect client pointed at this server."""
        from prefect.client.orchestration import get_client
        from prefect.settings import PREFECT_API_URL, temporary_settings

        async def call() -> Any:
            async with get_client() as client:
                return await function(client, *arguments)

        with temporary_settings({PREFECT_API_URL: self.api_url}):
            return asyncio.run(call())

    @staticmethod
    async def _flow_run_ids(client: Any) -> list[str]:
        ids, offset = [], 0
        while True:
            page = await client.read_flow_runs(limit=200, offset=offset)
            ids += [str(run.id) for run in page]
            if len(page) < 200:
                return ids
            offset += 200

    @staticmethod
    async def _task_run_counts(client: Any, ids: list[str]) -> dict[str, int]:
        async def count(state: str | None) -> int:
            body: dict[str, Any] = {"flow_runs": {"id": {"any_": ids}}}
            if state:
                body["task_runs"] = {"state": {"type": {"any_": [state]}}}
            response = await client.request("POST", "/task_runs/count", json=body)
            response.raise_for_status()
            return int(response.json())

        counts = {"total": await count(None)}
        for state in STATE_TYPES:
            counts[state] = await count(state)
        return counts

    def settle(self, ids: list[str]) -> bool:
        """Wait until the run's task-run counts stop changing and the server goes quiet.

        Every 2 s: the task-run counts by state, the dropped-message lines and the server's
        CPU; settled after two unchanged readings with the server below a quarter of a core.
        """
        return self._query(self._settle, ids)

    async def _settle(self, client: Any, ids: list[str]) -> bool:
        deadline = time.monotonic() + self.settle_timeout
        previous: tuple[Any, ...] | None = None
        stable = 0
        cpu = self.cpu()
        while True:
            await asyncio.sleep(2.0)
            counts = await self._task_run_counts(client, ids) if ids else {}
            dropped = count_in_file(self.log, DROPPED)
            now_cpu = self.cpu()
            busy = (now_cpu - cpu) / 2.0 > 0.25
            cpu = now_cpu
            key = (tuple(sorted(counts.items())), dropped)
            stable = stable + 1 if key == previous and not busy else 0
            previous = key
            if stable >= 2:
                return True
            if time.monotonic() > deadline:
                return False

    async def _run_figures(self, client: Any, ids: list[str], since: datetime) -> dict[str, Any]:
        from prefect.client.schemas.filters import (
            FlowRunFilter,
            FlowRunFilterId,
            LogFilter,
            LogFilterFlowRunId,
        )
        from prefect.events.filters import (
            EventAnyResourceFilter,
            EventFilter,
            EventOccurredFilter,
        )

        figures: dict[str, Any] = {"flow_run_ids": ids}
        if not ids:
            return figures
        runs = await client.read_flow_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=ids))
        )
        figures["flow_runs_by_state"] = dict(
            Counter(run.state.type.value if run.state else "none" for run in runs)
        )
        counts = await self._task_run_counts(client, ids)
        figures["task_runs"] = counts["total"]
        figures["task_runs_by_state"] = {
            state: counts[state] for state in STATE_TYPES if counts[state]
        }
        stuck_flows = sum(figures["flow_runs_by_state"].get(s, 0) for s in NON_FINAL)
        figures["stuck"] = stuck_flows + sum(counts[s] for s in NON_FINAL)
        # logs: no count endpoint; page through (bounded in time)
        logs, offset, started = 0, 0, time.monotonic()
        log_filter = LogFilter(flow_run_id=LogFilterFlowRunId(any_=ids))
        complete = True
        while True:
            page = await client.read_logs(log_filter=log_filter, limit=200, offset=offset)
            logs += len(page)
            if len(page) < 200:
                break
            offset += 200
            if time.monotonic() - started > 60:
                complete = False
                break
        figures["logs"] = logs if complete else f">= {logs}"
        event_filter = EventFilter(
            occurred=EventOccurredFilter(
                since=since, until=datetime.now(timezone.utc) + timedelta(minutes=1)
            ),
            any_resource=EventAnyResourceFilter(id=[f"prefect.flow-run.{i}" for i in ids]),
        )
        events = await client.read_events(filter=event_filter, limit=1)
        figures["events"] = events.total
        return figures


# --------------------------------------------------------------------------- the comparison


@dataclass
class Contender:
    name: str  # "peer" or "plugin"
    root_role: str


PEER = Contender("peer", "peer")
PLUGIN = Contender("plugin", "CLI client")


def cli_supports(option: str) -> bool:
    result = subprocess.run(
        [executable("prefect-seedream"), "run", "--help"],
        capture_output=True, text=True, env=clean_env(), cwd=REPO, timeout=120, check=False,
    )  # fmt: skip
    return option in result.stdout


def command_for(
    contender: Contender, args: argparse.Namespace, dataset: Path, output: Path, sim: Simulator
) -> list[str]:
    if contender is PEER:
        return [
            sys.executable, str(HERE / "peer.py"), str(dataset), "--output", str(output),
            "--base-url", sim.base_url, "--api-key", API_KEY,
            "--concurrency", str(args.concurrency), "--poll-interval", str(args.poll_interval),
        ]  # fmt: skip
    return [
        executable("prefect-seedream"), "run", str(dataset), "--output", str(output),
        "--max-concurrency", str(args.concurrency), *args.cli_arg,
    ]  # fmt: skip


def measure(
    contender: Contender,
    args: argparse.Namespace,
    server: EmbeddedServer | StartedServer,
    sim: Simulator,
    dataset: Path,
    rundir: Path,
    timeout: float,
) -> dict[str, Any]:
    output = rundir / "out"
    env = clean_env(SEEDREAM_API_KEY=API_KEY, SEEDREAM_BASE_URL=sim.base_url)
    if contender is PLUGIN:
        env = server.cli_env(env)
    sim.reset()
    before = server.before_run() if contender is PLUGIN else {}
    sim_cpu = proc_cpu_seconds(sim.pid) if sim.pid else None
    load = os.getloadavg()[0]
    watcher = FirstSubmitWatcher(sim).start()
    run = run_process(
        command_for(contender, args, dataset, output, sim), env, rundir, contender.root_role,
        timeout,
    )  # fmt: skip
    sim_cpu = (proc_cpu_seconds(sim.pid) or 0) - sim_cpu if sim_cpu is not None else None
    first_submit = watcher.stop()
    stats = sim.stats()
    server_figures = server.after_run(before, run) if contender is PLUGIN else {}
    lines, statuses, durations = read_manifest(output)
    by_role = run.cpu_by_role()
    rows = args.rows
    processes = list(run.processes)
    if contender is PLUGIN and isinstance(server, StartedServer):
        processes += server.processes()
    server_cpu = by_role.get("Prefect server")
    if isinstance(server, StartedServer) and contender is PLUGIN:
        server_cpu = server_figures["cpu_incl_settle_s"]
    whole = run.cpu_tree_s + (
        server_figures["cpu_incl_settle_s"]
        if isinstance(server, StartedServer) and contender is PLUGIN
        else 0.0
    )
    tasks = stats.get("tasks_created", 0)
    last_line = next((ln for ln in reversed(run.stdout.splitlines()) if ln.strip()), "")

    def ms_per_row(seconds: float | None) -> float | None:
        return round(seconds * 1000 / rows, 1) if seconds is not None else None

    def peak(role: str) -> float | None:
        values = [p["peak_rss_mb"] for p in processes if p["role"] == role]
        return max(values) if values else None

    return {
        "contender": contender.name,
        "exit_code": run.exit_code,
        "timed_out": run.timed_out,
        "wall_s": round(run.wall_s, 2),
        "rows_per_s": round(rows / run.wall_s, 2),
        "ratio_to_ideal": round(run.wall_s / args.ideal, 2) if args.ideal else None,
        "rows_succeeded": statuses.get("succeeded", 0),
        "manifest_lines": lines,
        "manifest_statuses": dict(statuses),
        "first_submit_s": round(first_submit - run.started, 2) if first_submit else None,
        "row_duration_p50_s": round(statistics.median(durations), 2) if durations else None,
        "row_duration_p95_s": round(percentile(durations, 0.95) or 0, 2) if durations else None,
        "cpu_reaped_by_compare_s": round(
            run.cpu_tree_s - run.cpu_root_s - run.cpu_reaped_by_root_s, 2
        ),
        "cpu_whole_s": round(whole, 2),
        "cpu_whole_ms_per_row": ms_per_row(whole),
        "cpu_tree_rusage_s": round(run.cpu_tree_s, 2),
        "cpu_client_s": round(run.cpu_root_s, 2),
        "cpu_client_ms_per_row": ms_per_row(run.cpu_root_s),
        "cpu_reaped_by_client_s": round(run.cpu_reaped_by_root_s, 2),
        "cpu_server_s": round(server_cpu, 2) if server_cpu is not None else None,
        "cpu_server_ms_per_row": ms_per_row(server_cpu),
        "cpu_server_during_run_s": server_figures.get("cpu_run_s"),
        "cpu_other_s": round(sum(v for k, v in by_role.items() if k.startswith("other")), 2),
        "cpu_simulator_s": round(sim_cpu, 2) if sim_cpu is not None else None,
        "cpu_simulator_ms_per_row": ms_per_row(sim_cpu),
        "submit_requests": stats.get("submit_requests"),
        "tasks_created": tasks,
        "polls": stats.get("polls"),
        "polls_per_generation": round(stats.get("polls", 0) / tasks, 2) if tasks else None,
        "downloads": stats.get("downloads"),
        "peak_concurrent_tasks": stats.get("peak_concurrent_tasks"),
        "peak_rss_client_mb": peak(contender.root_role),
        "peak_rss_server_mb": peak("Prefect server"),
        "peak_rss_simulator_mb": round(proc_peak_rss_mb(sim.pid) or 0, 1) if sim.pid else None,
        "processes": processes,
        "tree_processes": len(run.processes),
        "left_running_after_exit": run.left_running,
        "server": server_figures,
        "load_avg_1min_at_start": round(load, 2),
        "stdout_last_line": last_line.strip(),
        "logs": str(rundir),
    }


def warm_up(args: argparse.Namespace, server: Any, sim: Simulator, workdir: Path) -> None:
    dataset = workdir / "warmup.csv"
    write_dataset(dataset, WARMUP_ROWS, prefix="warmup")
    rundir = workdir / "warmup"
    env = server.cli_env(clean_env(SEEDREAM_API_KEY=API_KEY, SEEDREAM_BASE_URL=sim.base_url))
    command = command_for(PLUGIN, args, dataset, rundir / "out", sim)
    run = run_process(command, env, rundir, PLUGIN.root_role, timeout=600)
    if isinstance(server, StartedServer):
        server.settle([])
    _, statuses, _ = read_manifest(rundir / "out")
    print(
        f"  warm-up: CLI on {WARMUP_ROWS} rows in {run.wall_s:.1f} s, exit {run.exit_code}, "
        f"{dict(statuses)} (first run{' with a new database' if server.name == 'embedded' else ''})",
        flush=True,
    )
    if run.exit_code != 0:
        print(f"  warm-up failed: see {rundir}")


# --------------------------------------------------------------------------- report


def fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, dict):
        return " ".join(f"{k}={v}" for k, v in value.items()) or "-"
    return str(value)


def ratio(a: Any, b: Any) -> str:
    try:
        return f"{a / b:.2f}" if b else "-"
    except TypeError:
        return "-"


def median_figures(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per figure: the median over the runs (the worst for exit codes and flags)."""
    merged: dict[str, Any] = {}
    for key in runs[0]:
        values = [run.get(key) for run in runs]
        if key in ("exit_code", "left_running_after_exit") or all(
            isinstance(v, bool) for v in values
        ):
            merged[key] = max(values)
        elif all(isinstance(v, (int, float)) for v in values):
            middle = statistics.median(values)
            merged[key] = int(middle) if float(middle).is_integer() else round(middle, 2)
        else:
            merged[key] = values[-1]
    return merged


def print_table(title: str, peer: dict[str, Any], plugin: dict[str, Any], args: Any) -> None:
    started = args.server == "started"
    srv = plugin.get("server") or {}
    rows: list[tuple[str, str, str]] = [
        ("exit code", fmt(peer["exit_code"]), fmt(plugin["exit_code"])),
        (
            "rows succeeded / manifest lines",
            f"{peer['rows_succeeded']} / {peer['manifest_lines']}",
            f"{plugin['rows_succeeded']} / {plugin['manifest_lines']}",
        ),
        ("wall s", fmt(peer["wall_s"]), fmt(plugin["wall_s"])),
        ("wall / ideal", fmt(peer["ratio_to_ideal"]), fmt(plugin["ratio_to_ideal"])),
        (
            "first submit at, s after launch",
            fmt(peer["first_submit_s"]),
            fmt(plugin["first_submit_s"]),
        ),
        (
            "row duration p50 / p95 s (manifest)",
            f"{fmt(peer['row_duration_p50_s'])} / {fmt(peer['row_duration_p95_s'])}",
            f"{fmt(plugin['row_duration_p50_s'])} / {fmt(plugin['row_duration_p95_s'])}",
        ),
        ("rows/s", fmt(peer["rows_per_s"]), fmt(plugin["rows_per_s"])),
        (
            "CPU ms/row, whole" + (" (CLI tree + server)" if started else " (process tree)"),
            fmt(peer["cpu_whole_ms_per_row"]),
            fmt(plugin["cpu_whole_ms_per_row"]),
        ),
        (
            "  client process",
            fmt(peer["cpu_client_ms_per_row"]),
            fmt(plugin["cpu_client_ms_per_row"]),
        ),
        (
            "  Prefect server" + (" (run + settle)" if started else " (embedded)"),
            "-",
            fmt(plugin["cpu_server_ms_per_row"]),
        ),
    ]
    if started:
        rows.append(
            (
                "  Prefect server, during the run only",
                "-",
                fmt(round(plugin["cpu_server_during_run_s"] * 1000 / args.rows, 1)),
            )
        )
    rows += [
        ("  other processes, CPU s", fmt(peer["cpu_other_s"]), fmt(plugin["cpu_other_s"])),
        (
            "CPU s, whole / client / server",
            f"{peer['cpu_whole_s']} / {peer['cpu_client_s']} / -",
            f"{plugin['cpu_whole_s']} / {plugin['cpu_client_s']} / {fmt(plugin['cpu_server_s'])}",
        ),
        (
            "simulator CPU ms/row",
            fmt(peer["cpu_simulator_ms_per_row"]),
            fmt(plugin["cpu_simulator_ms_per_row"]),
        ),
        (
            "polls per generation",
            fmt(peer["polls_per_generation"]),
            fmt(plugin["polls_per_generation"]),
        ),
        (
            "submits / tasks / downloads",
            f"{peer['submit_requests']} / {peer['tasks_created']} / {peer['downloads']}",
            f"{plugin['submit_requests']} / {plugin['tasks_created']} / {plugin['downloads']}",
        ),
        (
            f"peak concurrent tasks (<= {args.concurrency})",
            fmt(peer["peak_concurrent_tasks"]),
            fmt(plugin["peak_concurrent_tasks"]),
        ),
        ("peak RSS MB, client process", fmt(peer["peak_rss_client_mb"]), fmt(plugin["peak_rss_client_mb"])),
        ("peak RSS MB, Prefect server", "-", fmt(plugin["peak_rss_server_mb"])),
        ("processes (left running at exit)",
         f"{peer['tree_processes']} ({peer['left_running_after_exit']})",
         f"{plugin['tree_processes']} ({plugin['left_running_after_exit']})"),
        ("events dropped (server log)", "-", fmt(srv.get("events_dropped"))),
    ]  # fmt: skip
    if started:
        rows += [
            ("flow runs by state", "-", fmt(srv.get("flow_runs_by_state"))),
            ("task runs (per row)", "-",
             f"{srv.get('task_runs')} ({ratio(srv.get('task_runs'), args.rows)})"),
            ("task runs by state", "-", fmt(srv.get("task_runs_by_state"))),
            ("stuck (non-final runs)", "-", fmt(srv.get("stuck"))),
            ("logs / events of the run", "-", f"{fmt(srv.get('logs'))} / {fmt(srv.get('events'))}"),
            ("server settled", "-", f"{srv.get('settled')} after {srv.get('settle_s')} s"),
        ]  # fmt: skip
    width = max(len(r[0]) for r in rows)
    col = max(12, *(len(r[1]) for r in rows))
    print()
    print(title)
    line = "+" + "-" * (width + 2) + "+" + "-" * (col + 2) + "+" + "-" * 40
    print(line)
    print(f"| {'figure':<{width}} | {'peer':<{col}} | plugin ({args.server} server)")
    print(line)
    for name, a, b in rows:
        print(f"| {name:<{width}} | {a:<{col}} | {b}")
    print(line)
    print(
        f"ratio plugin/peer: wall {ratio(plugin['wall_s'], peer['wall_s'])}, "
        f"CPU whole {ratio(plugin['cpu_whole_s'], peer['cpu_whole_s'])}, "
        f"CPU client process {ratio(plugin['cpu_client_s'], peer['cpu_client_s'])}"
    )
    print(f"ideal ceil(N/C)*L = ceil({args.rows}/{args.concurrency})*{args.latency:g} = "
          f"{args.ideal:g} s")  # fmt: skip


def print_processes(result: dict[str, Any]) -> None:
    for proc in result["processes"]:
        print(
            f"    {result['contender']:<6} {proc['role']:<14} pid {proc['pid']:<7} "
            f"CPU {proc['cpu_s']:>7.2f} s  peak RSS {proc['peak_rss_mb']:>6.1f} MB  "
            f"{proc['cmd']}{'  (' + proc['note'] + ')' if proc.get('note') else ''}"
        )


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200, help="dataset rows (distinct prompts)")
    parser.add_argument("--concurrency", type=int, default=16, help="C: rows in flight")
    parser.add_argument("--latency", type=float, default=2.0, help="L: simulator s per task")
    parser.add_argument("--jitter", type=float, default=0.0, help="simulator +/- s (default 0)")
    parser.add_argument(
        "--poll-interval",
        type=float,
        default=3.0,
        help="the peer's P (default 3, the plugin's default); also passed to the CLI when "
        "its `run --help` lists --poll-interval and no --cli-arg sets it",
    )
    parser.add_argument("--repeat", type=int, default=1, help="R: pairs of runs (median shown)")
    parser.add_argument(
        "--cli-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="extra argument for `prefect-seedream run` (repeatable; --cli-arg=--flag)",
    )
    parser.add_argument("--server", choices=["embedded", "started"], default="embedded")
    parser.add_argument(
        "--settle-timeout",
        type=float,
        default=30.0,
        help="started server: longest wait after a run for it to settle (s, default 30)",
    )
    parser.add_argument("--timeout", type=float, default=None, help="per run (s)")
    parser.add_argument("--seed", type=int, default=0, help="simulator seed")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument(
        "--keep", type=Path, default=None, metavar="DIR",
        help="working folder to keep (dataset, outputs, logs); default a temp dir, removed",
    )  # fmt: skip
    args = parser.parse_args(argv)
    args.ideal = math.ceil(args.rows / args.concurrency) * args.latency
    if args.timeout is None:
        args.timeout = max(600.0, 20 * args.ideal + 300)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    workdir = (
        args.keep.resolve() if args.keep else Path(tempfile.mkdtemp(prefix="seedream-compare-"))
    )
    if args.keep and workdir.exists() and any(workdir.iterdir()):
        raise SystemExit(f"compare: --keep {workdir} must be a new or empty folder")
    workdir.mkdir(parents=True, exist_ok=True)
    subreaper = become_subreaper()
    load_before = os.getloadavg()
    given = any(a.split("=")[0] == "--poll-interval" for a in args.cli_arg)
    if not given and cli_supports("--poll-interval"):
        args.cli_arg += ["--poll-interval", str(args.poll_interval)]
    print(
        f"compare: rows={args.rows} concurrency={args.concurrency} latency={args.latency:g}s "
        f"jitter={args.jitter:g}s peer poll_interval={args.poll_interval:g}s "
        f"server={args.server} repeat={args.repeat} cli args={args.cli_arg or 'none'} "
        f"workdir={workdir}",
        flush=True,
    )
    print(
        f"  load average before: {' '.join(f'{x:.2f}' for x in load_before)} "
        f"({os.cpu_count()} CPUs); subreaper: {subreaper}",
        flush=True,
    )
    dataset = workdir / "dataset.csv"
    write_dataset(dataset, args.rows)
    server: EmbeddedServer | StartedServer = (
        StartedServer(workdir, args.settle_timeout)
        if args.server == "started"
        else EmbeddedServer(workdir)
    )
    results: list[dict[str, dict[str, Any]]] = []
    ok = True
    try:
        command = simulator_cli_command(args.latency, args.jitter, args.seed, {})
        with simulator_process(command, workdir) as sim:
            print(f"  simulator at {sim.base_url} (pid {sim.pid})", flush=True)
            server.start()
            warm_up(args, server, sim, workdir)
            for repeat in range(args.repeat):
                order = [PEER, PLUGIN] if repeat % 2 == 0 else [PLUGIN, PEER]
                pair: dict[str, dict[str, Any]] = {}
                for contender in order:
                    rundir = workdir / "runs" / f"{repeat + 1}-{contender.name}"
                    print(f"  run {repeat + 1}/{args.repeat}: {contender.name} ...", flush=True)
                    pair[contender.name] = result = measure(
                        contender, args, server, sim, dataset, rundir, args.timeout
                    )
                    print(
                        f"    {contender.name}: exit {result['exit_code']}, "
                        f"{result['wall_s']} s, {result['rows_succeeded']}/{args.rows} "
                        f"succeeded (load {result['load_avg_1min_at_start']} at start); "
                        f"last line: {result['stdout_last_line'][:90]}",
                        flush=True,
                    )
                    if abs(result["cpu_reaped_by_compare_s"]) > 0.1:
                        print(
                            f"    {result['cpu_reaped_by_compare_s']} s CPU of descendants "
                            "left behind by their parent and reaped here (subreaper)"
                        )
                    print_processes(result)
                results.append(pair)
                title = f"Run {repeat + 1} of {args.repeat}"
                print_table(title, pair["peer"], pair["plugin"], args)
    finally:
        server.stop()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    medians = {}
    if args.repeat > 1:
        medians = {
            name: median_figures([pair[name] for pair in results]) for name in ("peer", "plugin")
        }
        print_table(f"Median of {args.repeat} runs", medians["peer"], medians["plugin"], args)
    load_after = os.getloadavg()
    print(
        f"load average before: {' '.join(f'{x:.2f}' for x in load_before)}; "
        f"after: {' '.join(f'{x:.2f}' for x in load_after)} ({os.cpu_count()} CPUs)"
    )
    for pair in results:
        for result in pair.values():
            srv = result.get("server") or {}
            ok &= result["rows_succeeded"] == args.rows and result["exit_code"] == 0
            ok &= (result["peak_concurrent_tasks"] or 0) <= args.concurrency
            ok &= not srv.get("events_dropped") and not srv.get("stuck")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "config": {k: v for k, v in vars(args).items() if k not in ("json", "keep")},
                    "load_avg_before": load_before,
                    "load_avg_after": load_after,
                    "runs": results,
                    "median": medians,
                    "ok": ok,
                },
                indent=2,
                default=str,
            )
        )
    if not ok:
        print("NOT OK: a row did not succeed, a limit was passed, or the server lost runs")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
