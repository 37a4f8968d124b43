"""Scale-out benchmark: one dataset run as K shards on K Prefect workers, on the real stack.

One command brings up the scale-out stack of ``deployments/stack.py`` in a temporary folder
(PostgreSQL, ``prefect server start``, the process work pool ``seedream-process``, K workers,
the deployments ``generate-dataset`` and ``generate-shard``, one global concurrency limit of C
slots), starts the bundled simulator as its own process (latency L, jitter 0), and runs the
parent as a user would::

    prefect-seedream run DATASET --output OUT --shards K --max-concurrency M \\
        --concurrency-limit NAME --retry-delay 1

with ``PREFECT_API_URL`` of the stack (``Stack.client_env``). Each shard asks for M slots, and
by default K x M = 1.3 x C, so that the shared limit binds. The stack is always torn down.

It reports:

* wall of the parent command against the ideal ceil(N/C) x L;
* every row exactly once (the simulator's ``submissions_by_prompt`` is 1 for every prompt,
  ``tasks_created`` = N, the manifest has N lines in input order, all ``succeeded``) and the
  simulator's peak of tasks in flight against C;
* CPU seconds, CPU ms per row and peak RSS (``VmHWM``) of the parent CLI process, the Prefect
  server, the PostgreSQL processes of the stack's cluster (the postmaster of
  ``<data dir>/postmaster.pid`` and its children), each worker, the flow-run processes each
  worker started, and the simulator; with how exact each figure is;
* events dropped by the server (its log), the run's flow runs and task runs by state after the
  server settled ("stuck" = non-final), events and logs;
* each shard's slot-pool figures, parsed from its "Concurrency limit ... [slot-stats {json}]"
  log line read from the API;
* a projection on paper to 100,000 and 1,000,000 rows of server + PostgreSQL CPU and of the
  rate at which the server must record task runs and events.

How CPU is counted (Linux ``/proc``; all CPU is user + system time, in clock ticks of 10 ms):

* A sampler thread reads ``/proc`` every 0.5 s: for every process of each tree (server,
  postmaster, each worker, the CLI, the simulator) its CPU, the CPU of the children it reaped,
  and ``VmHWM``. A flow-run process is a child of its worker, in a session of its own.
* The totals are differences of two readings of whole trees: a live member's own CPU plus
  what it reaped (``cutime``/``cstime``, i.e. ``getrusage(RUSAGE_CHILDREN)`` of that process
  as the kernel keeps it). A child that exited and was reaped moves from the first term to its
  parent's second, so the difference is exact: exact for the server, PostgreSQL (the
  postmaster reaps its backends) and each worker's flow runs (the worker reaps them).
* Per flow-run process: exact when the sampler read it as a zombie, or when it was the only
  child its worker reaped between two samples (the jump of the worker's ``cutime`` is its
  final CPU); otherwise the last sample before it exited (up to 0.5 s of CPU short).
* The CLI: its own CPU read while it is a zombie (``waitid(WNOWAIT)``), exact; its children
  through ``getrusage(RUSAGE_CHILDREN)`` of this script (a child subreaper).

Usage::

    .venv/bin/python benchmarks/scale_out.py --rows 20000 --workers 3 --limit 150 --latency 2
    .venv/bin/python benchmarks/scale_out.py --rows 300 --workers 2 --limit 20 --latency 0.5

Exit code 1 when a row was not generated exactly once, the peak exceeded C, an event was
dropped or a run was stuck. See ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
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
    ProcStat,
    become_subreaper,
    process_table,
    read_cmdline,
    read_stat,
    read_status_kb,
    simulator_cli_command,
    simulator_process,
    write_dataset,
)
from compare import (
    DROPPED,
    NON_FINAL,
    FirstSubmitWatcher,
    count_in_file,
    executable,
    percentile,
    reap_orphans,
    short_cmd,
    stop_group,
    wait_exited,
)

sys.path.insert(0, str(REPO))
from deployments.stack import Stack, find_pg_bin, running_stack
from prefect_seedream.engine.defaults import MAX_ROWS_PER_TASK, TARGET_TASK_RUNS  # imports nothing

API_KEY = "sk-scale-out"
LIMIT_NAME = "seedream-scale-out"
PARENT_FLOW = "seedream-generate-dataset"
SHARD_FLOW = "seedream-generate-shard"
FINAL = {"COMPLETED", "FAILED", "CANCELLED", "CRASHED"}
SLOT_STATS = "[slot-stats "
PROJECT_ROWS = (100_000, 1_000_000)
SAMPLE_PERIOD = 0.5


def log(message: str) -> None:
    print(f"  {message}", flush=True)


# --------------------------------------------------------------------------- /proc sampling


@dataclass
class Proc:
    """One process the sampler saw (a pid with its start time) and what it read of it."""

    group: str  # "server", "postgres", "worker 1", ..., "cli", "simulator"
    kind: str  # "Prefect server", "postmaster", "postgres", "worker", "flow run", ...
    pid: int
    starttime: int
    ppid: int
    cmdline: list[str]
    first_seen: float
    last_seen: float
    cpu: float = 0.0
    children_cpu: float = 0.0
    peak_rss_kb: int = 0
    zombie_read: bool = False  # its CPU was read while it was a zombie: final
    gone_at: float | None = None
    flow_run_id: str | None = None
    reaped_cpu: float | None = None  # from the jump of its reaper's cutime: final
    reaped_with: int = 0  # how many children the reaper reaped in the same interval

    @property
    def final_cpu(self) -> tuple[float, str]:
        """Its CPU (own + reaped children) and how exact that is."""
        if self.gone_at is None:
            return self.cpu + self.children_cpu, "live reading"
        if self.zombie_read:
            return self.cpu + self.children_cpu, "exact (read as a zombie)"
        if self.reaped_cpu is not None and self.reaped_with == 1:
            return self.reaped_cpu, "exact (its reaper's cutime jump)"
        if self.reaped_cpu is not None:
            return self.reaped_cpu, f"shared jump of {self.reaped_with} exits, split by samples"
        return self.cpu + self.children_cpu, "last sample (<= 0.5 s short)"


def _environ_flow_run_id(pid: int) -> str | None:
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return None
    for item in environ:
        if item.startswith(b"PREFECT__FLOW_RUN_ID="):
            return item.split(b"=", 1)[1].decode()
    return None


@dataclass
class Reading:
    """A reading of one process tree: root's own CPU, what it reaped, its live descendants."""

    own: float
    reaped: float
    descendants: float
    live_descendants: int

    @property
    def tree(self) -> float:
        return self.own + self.reaped + self.descendants

    def minus(self, before: Reading) -> dict[str, float]:
        return {
            "own": self.own - before.own,
            "children": (self.reaped + self.descendants) - (before.reaped + before.descendants),
            "tree": self.tree - before.tree,
        }


class StackSampler:
    """Samples the stack's process trees every ``period`` seconds in a thread."""

    def __init__(self, roots: dict[str, int], period: float = SAMPLE_PERIOD) -> None:
        self.roots = dict(roots)
        self.period = period
        self.records: dict[tuple[int, int], Proc] = {}
        self.unattributed_reaped: Counter[str] = Counter()
        self._reaper_prev: dict[str, float] = {}
        #: per worker: cutime jump and exited children not matched yet, and for how many samples
        self._pending: dict[str, tuple[float, list[Proc], int]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="stack-sampler", daemon=True)
        self.samples = 0
        self.sampling_cpu = 0.0

    def add_root(self, group: str, pid: int) -> None:
        with self._lock:
            self.roots[group] = pid

    def start(self) -> StackSampler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.period)

    @staticmethod
    def _kind(group: str, is_root: bool, cmdline: list[str]) -> str:
        if group == "server":
            return "Prefect server" if is_root else "server child"
        if group == "postgres":
            return "postmaster" if is_root else "postgres"
        if group.startswith("worker"):
            return "worker" if is_root else "flow run"
        if group == "cli":
            return "CLI parent" if is_root else "CLI child"
        return group

    def sample(self) -> None:
        cpu_before = time.thread_time()
        now = time.monotonic()
        table = process_table()
        kids: dict[int, list[int]] = {}
        for stat in table.values():
            kids.setdefault(stat.ppid, []).append(stat.pid)
        with self._lock:
            seen: set[tuple[int, int]] = set()
            for group, root in self.roots.items():
                members, todo = [], [root]
                while todo:
                    pid = todo.pop()
                    members.append(pid)
                    todo.extend(kids.get(pid, []))
                for pid in members:
                    stat = table.get(pid)
                    if stat is None:
                        continue
                    self._update(group, pid == root, stat, now, seen)
            vanished = []
            for key, record in self.records.items():
                if record.gone_at is not None or key in seen:
                    continue
                stat = table.get(key[0])
                if stat is not None and stat.starttime == key[1]:
                    self._update(record.group, False, stat, now, seen)  # left its tree, alive
                    continue
                record.gone_at = now
                vanished.append(record)
            for group, root in self.roots.items():
                if group.startswith("worker"):
                    self._attribute(group, root, [r for r in vanished if r.ppid == root])
            self.samples += 1
        self.sampling_cpu += time.thread_time() - cpu_before

    def _attribute(self, group: str, root: int, gone: list[Proc]) -> None:
        """Give the jump of a worker's reaped-children CPU to the children that vanished.

        A child disappears from /proc exactly when its parent reaps it, and the parent's
        cutime grows by its final CPU at that instant. The worker's stat is read after the
        process table, so a child absent from the table is in that reading; a child reaped
        between the two reads shows up one sample apart, hence the carry-over.
        """
        stat = read_stat(root)
        if stat is None:
            return
        previous = self._reaper_prev.get(group)
        self._reaper_prev[group] = stat.children_cpu
        if previous is None:
            return
        jump, waiting, age = self._pending.get(group, (0.0, [], 0))
        jump += stat.children_cpu - previous
        waiting = waiting + gone
        if waiting and jump > 0:
            sampled = [r.cpu + r.children_cpu for r in waiting]
            total = sum(sampled) or 1.0
            for record, value in zip(waiting, sampled):
                record.reaped_cpu = jump * value / total if len(waiting) > 1 else jump
                record.reaped_with = len(waiting)
            self._pending[group] = (0.0, [], 0)
        elif (jump > 0 or waiting) and age < 1:
            self._pending[group] = (jump, waiting, age + 1)
        else:  # a jump without an exit seen (a child shorter than a period), or the reverse
            self.unattributed_reaped[group] += jump
            self._pending[group] = (0.0, [], 0)

    def _update(
        self, group: str, is_root: bool, stat: ProcStat, now: float, seen: set[tuple[int, int]]
    ) -> None:
        key = (stat.pid, stat.starttime)
        seen.add(key)
        record = self.records.get(key)
        if record is None:
            cmdline = read_cmdline(stat.pid)
            record = self.records[key] = Proc(
                group=group, kind=self._kind(group, is_root, cmdline), pid=stat.pid,
                starttime=stat.starttime, ppid=stat.ppid, cmdline=cmdline,
                first_seen=now, last_seen=now,
            )  # fmt: skip
        record.cpu, record.children_cpu = stat.cpu, stat.children_cpu
        record.last_seen = now
        if stat.state == "Z":
            record.zombie_read = True  # a zombie's stat is final; it has no memory left
            return
        if now - record.first_seen < 10 or not record.cmdline:
            record.cmdline = read_cmdline(stat.pid) or record.cmdline  # fork before exec
        if record.kind == "flow run" and record.flow_run_id is None:
            record.flow_run_id = _environ_flow_run_id(stat.pid)
        hwm = read_status_kb(stat.pid, "VmHWM").get("VmHWM")
        if hwm:
            record.peak_rss_kb = max(record.peak_rss_kb, hwm)

    def snapshot(self) -> list[Proc]:
        with self._lock:
            return sorted(self.records.values(), key=lambda r: (r.group, r.first_seen))

    def read(self) -> dict[str, Reading]:
        """A reading of every tree now (fresh from /proc, not from the samples)."""
        table = process_table()
        kids: dict[int, list[int]] = {}
        for stat in table.values():
            kids.setdefault(stat.ppid, []).append(stat.pid)
        out = {}
        with self._lock:
            roots = dict(self.roots)
        for group, root in roots.items():
            stat = table.get(root)
            if stat is None:
                continue
            descendants, todo = [], list(kids.get(root, []))
            while todo:
                pid = todo.pop()
                descendants.append(pid)
                todo.extend(kids.get(pid, []))
            out[group] = Reading(
                own=stat.cpu,
                reaped=stat.children_cpu,
                descendants=sum(table[p].cpu + table[p].children_cpu for p in descendants),
                live_descendants=sum(table[p].state != "Z" for p in descendants),
            )
        return out


def postmaster_pid(stack: Stack) -> int:
    """The postmaster of the stack's cluster: first line of ``<data dir>/postmaster.pid``."""
    text = (stack.postgres.data_dir / "postmaster.pid").read_text().splitlines()
    pid = int(text[0])
    cmdline = " ".join(read_cmdline(pid))
    if str(stack.postgres.data_dir) not in cmdline and "postgres" not in cmdline:
        raise SystemExit(f"scale_out: pid {pid} of postmaster.pid is not the cluster's: {cmdline}")
    return pid


def event_driver(name: str) -> str:
    """What makes an event happen: ``task runs``, ``time`` or the run's ``structure``."""
    if name.startswith("prefect.task-run.") or name == "prefect.artifact.created":
        return "task runs"
    if name in ("prefect.flow-run.heartbeat", "prefect.artifact.updated"):
        return "time"
    return "structure"


def postgres_kind(cmdline: list[str]) -> str:
    """``postgres: checkpointer`` -> ``checkpointer``; a client connection -> ``backend``."""
    title = " ".join(cmdline).strip()
    if not title.startswith("postgres: "):
        return "other"
    words = title[len("postgres: "):].split()
    if len(words) >= 3 and "(" in words[2]:  # user database host(port) state
        return "backend"
    return " ".join(words[:2]) if words[:1] in (["autovacuum"], ["logical"], ["background"]) else (
        words[0] if words else "?"
    )


# --------------------------------------------------------------------------- the API


def iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat()


def epoch(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def flow_runs_since(stack: Stack, since: float) -> dict[str, list[dict[str, Any]]]:
    """The flow runs of the parent and shard flows created after ``since`` (epoch s)."""
    flows = {f["id"]: f["name"] for f in stack.api("POST", "/flows/filter", {})}
    found: dict[str, list[dict[str, Any]]] = {PARENT_FLOW: [], SHARD_FLOW: [], "other": []}
    offset = 0
    while True:
        page = stack.api("POST", "/flow_runs/filter", {
            "sort": "EXPECTED_START_TIME_ASC", "limit": 200, "offset": offset,
        })  # fmt: skip
        for run in page:
            if epoch(run["created"]) >= since - 1:
                name = flows.get(run["flow_id"], "other")
                found[name if name in (PARENT_FLOW, SHARD_FLOW) else "other"].append(run)
        if len(page) < 200:
            break
        offset += 200
    for runs in found.values():
        runs.sort(key=lambda r: r["name"])
    return found


def task_runs_of(stack: Stack, flow_run_ids: list[str]) -> list[dict[str, Any]]:
    runs, offset = [], 0
    while flow_run_ids:
        page = stack.api("POST", "/task_runs/filter", {
            "flow_runs": {"id": {"any_": flow_run_ids}}, "limit": 200, "offset": offset,
        })  # fmt: skip
        runs += page
        if len(page) < 200:
            break
        offset += 200
    return runs


def logs_of(stack: Stack, flow_run_id: str) -> list[dict[str, Any]]:
    logs, offset = [], 0
    while True:
        page = stack.api("POST", "/logs/filter", {
            "logs": {"flow_run_id": {"any_": [flow_run_id]}}, "limit": 200, "offset": offset,
            "sort": "TIMESTAMP_ASC",
        }, timeout=60)  # fmt: skip
        logs += page
        if len(page) < 200:
            return logs
        offset += 200


def slot_stats_of(logs: list[dict[str, Any]]) -> dict[str, Any] | None:
    for entry in logs:
        message = entry.get("message") or ""
        if "Concurrency limit" in message and SLOT_STATS in message:
            text = message.split(SLOT_STATS, 1)[1].rsplit("]", 1)[0]
            try:
                return json.loads(text)
            except ValueError:
                return {"unparsable": text}
    return None


def events_count(stack: Stack, since: datetime, until: datetime, ids: list[str] | None) -> int:
    flt: dict[str, Any] = {"occurred": {"since": iso(since), "until": iso(until)}}
    if ids is not None:
        flt["any_resource"] = {"id": [f"prefect.flow-run.{i}" for i in ids]}
    return int(stack.api("POST", "/events/filter", {"filter": flt, "limit": 1}, timeout=60)["total"])


def events_by_name(stack: Stack, since: datetime, until: datetime) -> dict[str, int]:
    body = {"filter": {"occurred": {"since": iso(since), "until": iso(until)}}}
    try:
        counts = stack.api("POST", "/events/count-by/event", body, timeout=60)
    except Exception as exc:  # noqa: BLE001  (a figure, not a check)
        return {"error": str(exc)[:80]}  # type: ignore[dict-item]
    return {c["value"]: int(c["count"]) for c in sorted(counts, key=lambda c: -c["count"])}


# --------------------------------------------------------------------------- the run


@dataclass
class CliRun:
    pid: int
    exit_code: int
    wall_s: float
    cpu_own_s: float
    cpu_reaped_by_cli_s: float
    cpu_rusage_s: float  # getrusage(RUSAGE_CHILDREN) delta of this script: CLI + its children
    timed_out: bool
    left_running: int
    stdout_tail: list[str] = field(default_factory=list)


def run_cli(
    command: list[str], env: dict[str, str], workdir: Path, sampler: StackSampler, timeout: float
) -> CliRun:
    out_path, err_path = workdir / "cli.stdout", workdir / "cli.stderr"
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    rusage_before = usage.ru_utime + usage.ru_stime
    started = time.monotonic()
    with out_path.open("w") as out, err_path.open("w") as err:
        proc = subprocess.Popen(
            command, env=env, stdout=out, stderr=err, cwd=REPO, start_new_session=True,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
    sampler.add_root("cli", proc.pid)
    timed_out = not wait_exited(proc.pid, timeout)
    if timed_out:
        log(f"TIMEOUT after {timeout:.0f} s: stopping the CLI (pid {proc.pid})")
        stop_group(proc.pid)
        wait_exited(proc.pid, 30)
    wall = time.monotonic() - started
    zombie = read_stat(proc.pid)
    sampler.sample()
    exit_code = proc.wait()
    # descendants the CLI left behind were re-parented to us (subreaper): stop and reap them
    left = reap_orphans([r for r in sampler.snapshot() if r.group == "cli"], proc.pid)
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    text = out_path.read_text(errors="replace").splitlines()
    return CliRun(
        pid=proc.pid, exit_code=exit_code, wall_s=wall,
        cpu_own_s=zombie.cpu if zombie else float("nan"),
        cpu_reaped_by_cli_s=zombie.children_cpu if zombie else float("nan"),
        cpu_rusage_s=usage.ru_utime + usage.ru_stime - rusage_before,
        timed_out=timed_out, left_running=left,
        stdout_tail=[line for line in text if line.strip()][-12:],
    )  # fmt: skip


def settle(
    stack: Stack, sampler: StackSampler, since: float, baseline_server: float, timeout: float
) -> tuple[bool, float]:
    """Wait until the run is over on every side: no flow-run process left under a worker,
    every flow run of the run final, task-run counts by state unchanged over two readings 2 s
    apart, and the server's CPU back near its idle baseline (+0.25 core)."""
    started = time.monotonic()
    previous: Any = None
    stable = 0
    last = sampler.read()
    while True:
        time.sleep(2.0)
        now = sampler.read()
        if "server" not in now:
            return False, time.monotonic() - started
        busy = (now["server"].tree - last["server"].tree) / 2.0 > baseline_server + 0.25
        flow_procs = sum(now[g].live_descendants for g in now if g.startswith("worker"))
        last = now
        runs = flow_runs_since(stack, since)
        mine = runs[PARENT_FLOW] + runs[SHARD_FLOW]
        final = all((r.get("state") or {}).get("type") in FINAL for r in mine) and bool(mine)
        states = Counter(
            (t.get("state") or {}).get("type") for t in task_runs_of(stack, [r["id"] for r in mine])
        )
        key = (tuple(sorted(states.items())), count_in_file(stack.logs / "server.log", DROPPED))
        ok = final and not busy and flow_procs == 0 and key == previous
        stable = stable + 1 if ok else 0
        previous = key
        if stable >= 2:
            return True, time.monotonic() - started
        if time.monotonic() - started > timeout:
            return False, time.monotonic() - started


# --------------------------------------------------------------------------- report


def r2(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def ms_row(seconds: float | None, rows: int) -> float | None:
    return None if seconds is None else round(seconds * 1000 / rows, 2)


def table(title: str, header: list[str], rows: list[list[Any]]) -> None:
    cells = [[("-" if c is None else f"{c:g}" if isinstance(c, float) else str(c)) for c in r]
             for r in rows]  # fmt: skip
    widths = [max(len(header[i]), *(len(r[i]) for r in cells)) for i in range(len(header) - 1)]
    line = "+" + "+".join("-" * (w + 2) for w in widths) + "+" + "-" * 40
    print()
    print(title)
    print(line)
    print("| " + " | ".join(h.ljust(w) for h, w in zip(header, widths)) + " | " + header[-1])
    print(line)
    for r in cells:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " | " + r[-1])
    print(line)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20000, help="N: dataset rows (distinct prompts)")
    parser.add_argument("--workers", type=int, default=3, help="K: workers, and shards")
    parser.add_argument("--limit", type=int, default=150,
                        help="C: the global concurrency limit shared by every shard")
    parser.add_argument("--per-shard-concurrency", type=int, default=None, metavar="M",
                        help="each shard's --max-concurrency (default ceil(1.3 x C / K))")
    parser.add_argument("--latency", type=float, default=2.0, help="L: simulator seconds per task")
    parser.add_argument("--baseline", type=float, default=10.0, metavar="S",
                        help="seconds of the idle stack measured before the run (default 10)")
    parser.add_argument("--settle-timeout", type=float, default=120.0, metavar="S",
                        help="longest wait after the CLI for the stack to settle (default 120)")
    parser.add_argument("--timeout", type=float, default=None, help="of the CLI (s)")
    parser.add_argument("--cli-arg", action="append", default=[], metavar="ARG",
                        help="extra argument of `prefect-seedream run` (--cli-arg=--flag)")
    parser.add_argument("--json", type=Path, default=None, help="also write every figure here")
    parser.add_argument("--keep", type=Path, default=None, metavar="DIR",
                        help="working folder to keep (dataset, output, logs); default a temp dir")
    args = parser.parse_args(argv)  # fmt: skip
    if args.rows < 1 or args.workers < 1 or args.limit < 1:
        parser.error("--rows, --workers and --limit must be >= 1")
    if args.per_shard_concurrency is None:
        args.per_shard_concurrency = math.ceil(1.3 * args.limit / args.workers)
    args.ideal = math.ceil(args.rows / args.limit) * args.latency
    if args.timeout is None:
        args.timeout = max(600.0, 20 * args.ideal + 300)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if find_pg_bin() is None:
        raise SystemExit("scale_out: PostgreSQL is not installed: run .ci/install-postgres.sh")
    workdir = (
        args.keep.resolve() if args.keep else Path(tempfile.mkdtemp(prefix="seedream-scale-out-"))
    )
    if args.keep and workdir.exists() and any(workdir.iterdir()):
        raise SystemExit(f"scale_out: --keep {workdir} must be a new or empty folder")
    workdir.mkdir(parents=True, exist_ok=True)
    # the shards' rule imports Prefect: PREFECT_HOME first
    os.environ["PREFECT_HOME"] = str(workdir / "prefect-home-bench")
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    from prefect_seedream.engine.rows import rows_per_task_for
    from prefect_seedream.shards import split_rows

    n, k, c, m, lat = args.rows, args.workers, args.limit, args.per_shard_concurrency, args.latency
    load_before = os.getloadavg()
    print(
        f"scale_out: rows={n} workers=shards={k} limit C={c} per-shard concurrency M={m} "
        f"(K x M = {k * m}) latency={lat:g}s jitter=0 workdir={workdir}",
        flush=True,
    )
    log(f"load average before: {' '.join(f'{x:.2f}' for x in load_before)} ({os.cpu_count()} CPUs)")
    dataset = workdir / "dataset.csv"
    items = write_dataset(dataset, n)
    output = workdir / "out"
    result: dict[str, Any] = {"config": {
        "rows": n, "workers": k, "shards": k, "limit": c, "per_shard_concurrency": m,
        "latency": lat, "jitter": 0, "ideal_s": args.ideal, "cli_args": args.cli_arg,
    }}  # fmt: skip
    try:
        with simulator_process(simulator_cli_command(lat, 0.0, 0, {}), workdir) as sim:
            log(f"simulator at {sim.base_url} (pid {sim.pid})")
            env = {"SEEDREAM_API_KEY": API_KEY, "SEEDREAM_BASE_URL": sim.base_url}
            up_started = time.monotonic()
            with running_stack(
                workdir / "stack", workers=k, limits={LIMIT_NAME: c},
                deploy=["generate-dataset", "generate-shard"], env=env,
            ) as stack:  # fmt: skip
                result["stack_up_s"] = round(time.monotonic() - up_started, 1)
                log(f"stack up in {result['stack_up_s']} s: {stack.api_url}; logs {stack.logs}")
                result.update(measure(args, stack, sim, dataset, items, output, workdir,
                                      rows_per_task_for, split_rows))  # fmt: skip
                log("tearing the stack down ...")
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    load_after = os.getloadavg()
    result["load_avg_before"], result["load_avg_after"] = load_before, load_after
    report(args, result)
    print(
        f"load average before: {' '.join(f'{x:.2f}' for x in load_before)}; "
        f"after: {' '.join(f'{x:.2f}' for x in load_after)} ({os.cpu_count()} CPUs)"
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2, default=str))
    if not result["ok"]:
        print("NOT OK: " + "; ".join(result["failures"]))
    return 0 if result["ok"] else 1


def measure(
    args: argparse.Namespace,
    stack: Stack,
    sim: Any,
    dataset: Path,
    items: list[tuple[str, str]],
    output: Path,
    workdir: Path,
    rows_per_task_for: Any,
    split_rows: Any,
) -> dict[str, Any]:
    n, k, c = args.rows, args.workers, args.limit
    roots = {"server": stack.server.pid, "postgres": postmaster_pid(stack), "simulator": sim.pid}
    for index, worker in sorted(stack.workers.items()):
        roots[f"worker {index}"] = worker.pid
    sampler = StackSampler(roots).start()
    subreaper = become_subreaper()
    # the idle stack: what the server, PostgreSQL and workers burn with nothing to do
    time.sleep(2.0)
    before_baseline = sampler.read()
    time.sleep(args.baseline)
    r0 = sampler.read()
    baseline = {g: (r0[g].tree - before_baseline[g].tree) / args.baseline for g in r0}
    log("idle stack, CPU cores: " + ", ".join(f"{g} {v:.3f}" for g, v in sorted(baseline.items())))
    dropped_before = count_in_file(stack.logs / "server.log", DROPPED)
    since_dt = datetime.now(timezone.utc)
    since = since_dt.timestamp()
    command = [
        executable("prefect-seedream"), "run", str(dataset), "--output", str(output),
        "--shards", str(k), "--max-concurrency", str(args.per_shard_concurrency),
        "--concurrency-limit", LIMIT_NAME, "--retry-delay", "1", *args.cli_arg,
    ]  # fmt: skip
    env = stack.client_env({"SEEDREAM_API_KEY": API_KEY, "SEEDREAM_BASE_URL": sim.base_url})
    log("running: prefect-seedream " + " ".join(command[1:]))
    watcher = FirstSubmitWatcher(sim).start()
    launched = time.monotonic()
    cli = run_cli(command, env, workdir, sampler, args.timeout)
    first_submit = watcher.stop()
    r1 = sampler.read()
    log(f"CLI exit {cli.exit_code} after {cli.wall_s:.1f} s; waiting for the stack to settle ...")
    settled, settle_s = settle(stack, sampler, since, baseline.get("server", 0.0),
                               args.settle_timeout)  # fmt: skip
    r2_ = sampler.read()
    sampler.stop()
    until_dt = datetime.now(timezone.utc) + timedelta(seconds=5)
    window = time.monotonic() - launched  # launch .. settled

    # -- rows exactly once ---------------------------------------------------------------------
    stats = sim.stats()
    by_prompt = stats.get("submissions_by_prompt", {})
    counts = Counter(by_prompt.get(prompt, 0) for _, prompt in items)
    lines = []
    manifest = output / "manifest.jsonl"
    if manifest.exists():
        lines = [json.loads(t) for t in manifest.read_text().splitlines() if t.strip()]
    in_order = [line.get("row_id") for line in lines] == [row_id for row_id, _ in items]
    statuses = Counter(line.get("status") for line in lines)
    durations = [float(x["duration_seconds"]) for x in lines
                 if isinstance(x.get("duration_seconds"), (int, float))]  # fmt: skip
    exactly_once = (
        counts.get(1, 0) == n and stats.get("tasks_created") == n and len(lines) == n
        and in_order and statuses.get("succeeded", 0) == n
    )  # fmt: skip

    # -- the server's records ------------------------------------------------------------------
    runs = flow_runs_since(stack, since)
    parent_runs, shard_runs = runs[PARENT_FLOW], runs[SHARD_FLOW]
    mine = parent_runs + shard_runs
    ids = [r["id"] for r in mine]
    task_runs = task_runs_of(stack, ids)
    task_states = Counter((t.get("state") or {}).get("type") for t in task_runs)
    flow_states = Counter((r.get("state") or {}).get("type") for r in mine)
    task_runs_per_flow = Counter(t.get("flow_run_id") for t in task_runs)
    stuck = sum(v for s, v in flow_states.items() if s in NON_FINAL or s is None) + sum(
        v for s, v in task_states.items() if s in NON_FINAL or s is None
    )
    dropped = count_in_file(stack.logs / "server.log", DROPPED) - dropped_before
    events_run = events_count(stack, since_dt - timedelta(seconds=5), until_dt, ids)
    events_all = events_count(stack, since_dt - timedelta(seconds=5), until_dt, None)
    events_named = events_by_name(stack, since_dt - timedelta(seconds=5), until_dt)
    logs_per_run = {}
    shards = []
    for run in shard_runs:
        entries = logs_of(stack, run["id"])
        logs_per_run[run["id"]] = len(entries)
        shards.append({
            "name": run["name"], "id": run["id"], "state": (run.get("state") or {}).get("type"),
            "rows": run["parameters"]["last_row"] - run["parameters"]["first_row"] + 1,
            "task_runs": task_runs_per_flow.get(run["id"], 0), "logs": len(entries),
            "slot_stats": slot_stats_of(entries),
        })  # fmt: skip
    for run in parent_runs:
        logs_per_run[run["id"]] = len(logs_of(stack, run["id"]))
    logs_total = sum(logs_per_run.values())

    # -- CPU and memory ------------------------------------------------------------------------
    procs = sampler.snapshot()
    by_flow_run = {p.flow_run_id: p for p in procs if p.kind == "flow run" and p.flow_run_id}
    for shard in shards:
        proc = by_flow_run.get(shard["id"])
        if proc is not None:
            cpu, how = proc.final_cpu
            shard.update(worker=proc.group, pid=proc.pid, cpu_s=r2(cpu), cpu_how=how,
                         peak_rss_mb=round(proc.peak_rss_kb / 1024, 1))  # fmt: skip

    def peak_mb(selected: list[Proc]) -> float | None:
        return round(max(p.peak_rss_kb for p in selected) / 1024, 1) if selected else None

    cpu: list[dict[str, Any]] = []
    # the CLI: own CPU exact (zombie); children via our RUSAGE_CHILDREN
    cli_procs = [p for p in procs if p.group == "cli"]
    cli_children = max(0.0, cli.cpu_rusage_s - cli.cpu_own_s)
    cpu.append({"key": "cli", "process": f"CLI parent (pid {cli.pid})", "cpu_s": cli.cpu_own_s,
                "peak_rss_mb": peak_mb([p for p in cli_procs if p.pid == cli.pid]),
                "how": "exact: /proc/<pid>/stat read as a zombie"})  # fmt: skip
    if cli_children > 0.05 or len(cli_procs) > 1:
        cpu.append({"key": "cli children", "process": f"  CLI children ({len(cli_procs) - 1} seen)",
                    "cpu_s": cli_children,
                    "peak_rss_mb": peak_mb([p for p in cli_procs if p.pid != cli.pid]),
                    "how": "exact: RUSAGE_CHILDREN of this script minus the CLI"})  # fmt: skip
    server_delta = r2_["server"].minus(r0["server"])
    server_procs = [p for p in procs if p.group == "server"]
    cpu.append({"key": "server",
                "process": f"Prefect server (pid {stack.server.pid}, {len(server_procs)} proc.)",
                "cpu_s": server_delta["tree"], "cpu_run_only_s": r1["server"].minus(r0["server"])["tree"],
                "peak_rss_mb": peak_mb(server_procs),
                "how": "exact: /proc tree delta, launch..settled"})  # fmt: skip
    pg_delta = r2_["postgres"].minus(r0["postgres"])
    pg_procs = [p for p in procs if p.group == "postgres"]
    pg_kinds = Counter(postgres_kind(p.cmdline) for p in pg_procs if p.kind != "postmaster")
    cpu.append({"key": "postgres",
                "process": f"PostgreSQL (postmaster {roots['postgres']}, {len(pg_procs)} proc. seen)",
                "cpu_s": pg_delta["tree"], "cpu_run_only_s": r1["postgres"].minus(r0["postgres"])["tree"],
                "peak_rss_mb": peak_mb(pg_procs),
                "how": "exact: postmaster tree delta (it reaps its backends)"})  # fmt: skip
    flow_total = 0.0
    flow_sampled_total = 0.0
    for index in sorted(stack.workers):
        group = f"worker {index}"
        if group not in r2_:
            cpu.append({"key": group, "process": f"{group}: gone", "cpu_s": None,
                        "how": "process not found"})
            continue
        delta = r2_[group].minus(r0[group])
        mine_procs = [p for p in procs if p.group == group and p.kind == "flow run"]
        sampled = sum(p.final_cpu[0] for p in mine_procs)
        exact_each = sum(1 for p in mine_procs if p.final_cpu[1].startswith("exact"))
        flow_total += delta["children"]
        flow_sampled_total += sampled
        cpu.append({"key": group, "process": f"{group} (pid {roots[group]})", "cpu_s": delta["own"],
                    "peak_rss_mb": peak_mb([p for p in procs if p.group == group and p.kind == "worker"]),
                    "how": "exact: /proc/<pid>/stat delta"})  # fmt: skip
        cpu.append({"key": f"flow runs of {group}",
                    "process": f"  flow runs of {group} ({len(mine_procs)} proc.)",
                    "cpu_s": delta["children"], "cpu_per_process_s": r2(sampled),
                    "peak_rss_mb": peak_mb(mine_procs),
                    "how": f"exact: worker's cutime delta; per process {exact_each}/{len(mine_procs)} "
                           f"exact, sum {sampled:.2f} s"})  # fmt: skip
    sim_delta = r2_["simulator"].minus(r0["simulator"])
    cpu.append({"key": "simulator", "process": f"simulator (pid {sim.pid})",
                "cpu_s": sim_delta["tree"],
                "peak_rss_mb": peak_mb([p for p in procs if p.group == "simulator"]),
                "how": "exact: /proc/<pid>/stat delta"})  # fmt: skip
    for entry in cpu:
        entry["cpu_s"] = r2(entry["cpu_s"])
        entry["ms_per_row"] = ms_row(entry["cpu_s"], n)
    baseline_window = {g: round(v * window, 2) for g, v in baseline.items()}

    # -- the projection ------------------------------------------------------------------------
    rpt = rows_per_task_for(n)
    expected_batches = sum(math.ceil(r.rows / rpt) for r in split_rows(n, k))
    batch_runs = sum(1 for t in task_runs if t.get("flow_run_id") in {s["id"] for s in shards})
    parent_task_runs = len(task_runs) - batch_runs
    server_cpu, pg_cpu = server_delta["tree"], pg_delta["tree"]
    # events by what drives them: task runs (their state events, the batch table artifacts),
    # time (heartbeats, progress artifact updates), or the run's structure (the rest)
    kinds: Counter[str] = Counter()
    for name, count in events_named.items():
        if isinstance(count, int):
            kinds[event_driver(name)] += count
    per_batch = kinds["task runs"] / batch_runs if batch_runs else 0.0
    per_second = kinds["time"] / cli.wall_s if cli.wall_s else 0.0
    fixed_events = kinds["structure"]
    # the other model of CPU: idle background x wall + the rest in proportion to those events
    idle_rate = baseline.get("server", 0.0) + baseline.get("postgres", 0.0)
    work = server_delta["tree"] + pg_delta["tree"] - idle_rate * window
    events_counted = sum(kinds.values()) or 1
    projection = []
    for rows in (n, *PROJECT_ROWS):
        per = rows_per_task_for(rows)
        batches = sum(math.ceil(r.rows / per) for r in split_rows(rows, k))
        tr = batches + parent_task_runs
        ideal = math.ceil(rows / c) * args.latency
        srv, pg = server_cpu / n * rows, pg_cpu / n * rows
        by_driver = per_batch * batches + per_second * ideal + fixed_events
        projection.append({
            "rows": rows, "rows_per_task": per, "task_runs": tr, "ideal_wall_s": ideal,
            "server_cpu_s": round(srv, 1), "postgres_cpu_s": round(pg, 1),
            "server_plus_db_cpu_s": round(srv + pg, 1),
            "cores_at_ideal_wall": round((srv + pg) / ideal, 3) if ideal else None,
            "task_runs_per_s": round(tr / ideal, 3) if ideal else None,
            "events_per_s": round(events_all / n * rows / ideal, 2) if ideal else None,
            "events_by_driver": round(by_driver),
            "server_plus_db_cpu_s_by_events": round(idle_rate * ideal + work * by_driver / events_counted, 1),
            "events_per_s_by_driver": round(by_driver / ideal, 2) if ideal else None,
            "logs_per_s": round(logs_total / n * rows / ideal, 3) if ideal else None,
            "measured": rows == n,
        })  # fmt: skip

    # -- verdict ------------------------------------------------------------------------------
    peak = stats.get("peak_concurrent_tasks") or 0
    failures = []
    if not exactly_once:
        failures.append(
            f"rows not exactly once: tasks per prompt {dict(sorted(counts.items()))}, "
            f"tasks created {stats.get('tasks_created')}, manifest {len(lines)} lines "
            f"(in order: {in_order}), statuses {dict(statuses)}"
        )
    if peak > c:
        failures.append(f"peak tasks in flight {peak} > limit {c}")
    if dropped:
        failures.append(f"{dropped} event(s) dropped by the server")
    if stuck:
        failures.append(f"{stuck} flow/task run(s) stuck non-final")
    if cli.exit_code != 0:
        failures.append(f"the CLI exited {cli.exit_code}")
    if len(shard_runs) < k:
        failures.append(f"{len(shard_runs)} shard flow runs found, expected {k}")
    slot_sum: Counter[str] = Counter()
    for shard in shards:
        for key, value in (shard.get("slot_stats") or {}).items():
            if isinstance(value, (int, float)) and key != "peak_held":
                slot_sum[key] += value
    return {
        "ok": not failures,
        "failures": failures,
        "subreaper": subreaper,
        "cli": {
            "command": " ".join(["prefect-seedream", *command[1:]]), "exit_code": cli.exit_code,
            "timed_out": cli.timed_out, "left_running": cli.left_running,
            "stdout_tail": cli.stdout_tail,
        },
        "wall_s": round(cli.wall_s, 2),
        "ratio_to_ideal": round(cli.wall_s / args.ideal, 2) if args.ideal else None,
        "first_submit_s": round(first_submit - launched, 2) if first_submit else None,
        "row_duration_p50_s": r2(percentile(durations, 0.5)),
        "row_duration_p95_s": r2(percentile(durations, 0.95)),
        "settled": settled, "settle_s": round(settle_s, 1), "window_s": round(window, 1),
        "rows_exactly_once": exactly_once,
        "tasks_per_prompt": {str(key): v for key, v in sorted(counts.items())},
        "tasks_created": stats.get("tasks_created"), "submit_requests": stats.get("submit_requests"),
        "polls": stats.get("polls"), "downloads": stats.get("downloads"),
        "peak_concurrent_tasks": peak,
        "manifest_lines": len(lines), "manifest_in_input_order": in_order,
        "manifest_statuses": dict(statuses),
        "events_dropped": dropped,
        "flow_runs_by_state": {"parent": dict(Counter((r.get("state") or {}).get("type") for r in parent_runs)),
                               "shards": dict(Counter((r.get("state") or {}).get("type") for r in shard_runs)),
                               "other flows": len(runs["other"])},
        "task_runs": len(task_runs), "task_runs_by_state": dict(task_states),
        "task_runs_of_shards": batch_runs, "task_runs_of_parent": parent_task_runs,
        "rows_per_task": rpt, "expected_batch_task_runs": expected_batches,
        "stuck": stuck,
        "events_of_the_run": events_run, "events_all_in_window": events_all,
        "events_by_name": events_named, "logs": logs_total,
        "events_by_driver": {"per batch task run": round(per_batch, 2),
                             "per second of wall": round(per_second, 3),
                             "fixed per run": fixed_events},
        "shards_per_worker": dict(Counter(s.get("worker", "not seen") for s in shards)),
        "shards": shards, "slot_stats_sum": {key: round(v, 2) for key, v in slot_sum.items()},
        "cpu": cpu,
        "cpu_flow_runs_total_s": r2(flow_total), "cpu_flow_runs_per_process_sum_s": r2(flow_sampled_total),
        "unattributed_reaped_by_workers_s": {g: round(v, 2) for g, v in sampler.unattributed_reaped.items()},
        "idle_baseline_cores": {g: round(v, 4) for g, v in baseline.items()},
        "idle_baseline_over_window_s": baseline_window,
        "postgres_process_kinds": dict(pg_kinds),
        "sampler": {"samples": sampler.samples, "cpu_s": round(sampler.sampling_cpu, 2),
                    "period_s": sampler.period},
        "processes": [
            {"group": p.group, "kind": p.kind, "pid": p.pid, "ppid": p.ppid, "cmd": short_cmd(p.cmdline, 90),
             "cpu_s": r2(p.final_cpu[0]), "cpu_how": p.final_cpu[1],
             "peak_rss_mb": round(p.peak_rss_kb / 1024, 1), "flow_run_id": p.flow_run_id,
             "lifetime_s": round(p.last_seen - p.first_seen, 1)}
            for p in procs
        ],
        "projection": projection,
    }  # fmt: skip


def report(args: argparse.Namespace, res: dict[str, Any]) -> None:
    if "wall_s" not in res:
        return
    n, c = args.rows, args.limit
    ok = {True: "ok", False: "FAIL"}
    cli = res["cli"]
    print()
    print(f"command: {cli['command']}")
    for line in cli["stdout_tail"][-3:]:
        print(f"  | {line}")
    rows = [
        ["stack up (PostgreSQL, server, pool, K workers, deploy)", f"{res.get('stack_up_s')} s", ""],
        ["wall of the parent command", f"{res['wall_s']} s", f"exit {cli['exit_code']}"],
        ["ideal ceil(N/C) x L", f"{args.ideal:g} s", f"ceil({n}/{c}) x {args.latency:g}"],
        ["ratio wall / ideal", res["ratio_to_ideal"], ""],
        ["first submit, s after launch", res["first_submit_s"], "start-up: CLI, parent, shards on workers"],
        ["row duration p50 / p95 (manifest)", f"{res['row_duration_p50_s']} / {res['row_duration_p95_s']} s", ""],
        ["tasks per prompt (count: prompts)", json.dumps(res["tasks_per_prompt"]), ok[res["rows_exactly_once"]]],
        ["tasks created / submits / polls / downloads",
         f"{res['tasks_created']} / {res['submit_requests']} / {res['polls']} / {res['downloads']}", f"N = {n}"],
        ["manifest lines (input order) / statuses",
         f"{res['manifest_lines']} ({res['manifest_in_input_order']}) / {json.dumps(res['manifest_statuses'])}", ""],
        [f"peak tasks in flight at the API (<= {c})", res["peak_concurrent_tasks"],
         ok[res["peak_concurrent_tasks"] <= c]],
        ["events dropped (server.log)", res["events_dropped"], ok[res["events_dropped"] == 0]],
        ["flow runs by state", json.dumps(res["flow_runs_by_state"]), ""],
        ["task runs: shards (expected) + parent",
         (f"{res['task_runs_of_shards']} ({res['expected_batch_task_runs']}, "
          f"{res['rows_per_task']} rows each) + {res['task_runs_of_parent']}"), ""],
        ["task runs by state", json.dumps(res["task_runs_by_state"]), ""],
        ["stuck (non-final flow + task runs)", res["stuck"], ok[res["stuck"] == 0]],
        ["events: of the run / all in the window", f"{res['events_of_the_run']} / {res['events_all_in_window']}",
         f"{res['events_all_in_window'] / n:.3f} per row"],
        ["logs of the run", res["logs"], f"{res['logs'] / n:.4f} per row"],
        ["stack settled after the CLI", f"{res['settled']} after {res['settle_s']} s", ""],
        ["shards per worker (flow-run processes seen)", json.dumps(res["shards_per_worker"]),
         "" if len(res["shards_per_worker"]) == args.workers else
         f"only {len(res['shards_per_worker'])} of {args.workers} workers ran a shard"],
    ]  # fmt: skip
    table("The run", ["figure", "value", "check / note"], rows)
    cpu_rows = []
    for entry in res["cpu"]:
        note = entry["how"]
        if "cpu_run_only_s" in entry:
            note += f"; {entry['cpu_run_only_s']:.2f} s until the CLI exited"
        cpu_rows.append([entry["process"], entry.get("cpu_s"), entry.get("ms_per_row"),
                         entry.get("peak_rss_mb"), note])
    total = sum(e["cpu_s"] or 0.0 for e in res["cpu"] if e["key"] != "simulator")
    cores = os.cpu_count() or 1
    cpu_rows.append(["total, without the simulator", round(total, 2), ms_row(total, n), None,
                     (f"window {res['window_s']} s x {cores} cores = "
                      f"{res['window_s'] * cores:.0f} core-s")])  # fmt: skip
    table("CPU (launch of the CLI .. stack settled) and peak memory",
          ["process", "CPU s", "ms/row", "peak RSS MB", "how exact"], cpu_rows)
    base = res["idle_baseline_cores"]
    print("idle stack before the run (cores): "
          + ", ".join(f"{g} {v:g}" for g, v in sorted(base.items()))
          + f"; over the window that is server {res['idle_baseline_over_window_s'].get('server')} s, "
          f"PostgreSQL {res['idle_baseline_over_window_s'].get('postgres')} s")  # fmt: skip
    print(f"PostgreSQL processes seen: {json.dumps(res['postgres_process_kinds'])} + the postmaster; "
          "their VmHWM counts the shared buffers each touched: do not add them up")  # fmt: skip
    if any(res["unattributed_reaped_by_workers_s"].values()):
        print(f"CPU of short-lived worker children no sample saw: {res['unattributed_reaped_by_workers_s']}")
    shard_rows = []
    for shard in res["shards"]:
        s = shard.get("slot_stats") or {}
        shard_rows.append([shard["name"], shard["state"], shard["rows"], shard.get("worker"),
                           shard["task_runs"], s.get("acquisitions"), s.get("denials"), s.get("releases"),
                           s.get("peak_held"), s.get("idle_slot_seconds"), s.get("starved_seconds"),
                           f"{shard.get('cpu_s')} s, {shard.get('cpu_how', 'process not seen')}"])  # fmt: skip
    total_slots = res["slot_stats_sum"]
    shard_rows.append(["sum", "", sum(s["rows"] for s in res["shards"]), "",
                       sum(s["task_runs"] for s in res["shards"]), total_slots.get("acquisitions"),
                       total_slots.get("denials"), total_slots.get("releases"), "",
                       total_slots.get("idle_slot_seconds"), total_slots.get("starved_seconds"),
                       f"{res['cpu_flow_runs_total_s']} s (exact total)"])  # fmt: skip
    table(f"Shards: slot pool figures ([slot-stats] line of each shard's log), limit {c}, "
          f"each shard up to {args.per_shard_concurrency}",
          ["shard", "state", "rows", "worker", "task runs", "leases", "refused", "given back",
           "peak held", "idle slot-s", "starved s", "flow-run process CPU"], shard_rows)  # fmt: skip
    events = ", ".join(f"{name} {count}" for name, count in res["events_by_name"].items())
    print(f"events by name: {events}")
    drivers = res["events_by_driver"]
    print(f"events by driver: {drivers['per batch task run']} per batch task run (task-run states, "
          f"batch tables), {drivers['per second of wall']}/s of wall (heartbeats, progress "
          f"updates), {drivers['fixed per run']} fixed (flow-run states, workers, ...)")  # fmt: skip
    proj_rows = [[f"{p['rows']:,}" + (" (measured)" if p["measured"] else ""), p["rows_per_task"], p["task_runs"],
                  p["ideal_wall_s"], p["server_cpu_s"], p["postgres_cpu_s"], p["server_plus_db_cpu_s"],
                  p["cores_at_ideal_wall"], p["server_plus_db_cpu_s_by_events"], p["task_runs_per_s"], p["events_per_s"],
                  p["events_per_s_by_driver"], f"{p['logs_per_s']}"]
                 for p in res["projection"]]  # fmt: skip
    table("Projection on paper (same K, C and L)",
          ["rows", "rows/task", "task runs", "ideal wall s", "server CPU s", "PostgreSQL CPU s",
           "server+DB CPU s", "cores at ideal", "server+DB CPU s if ~events", "task runs/s", "events/s linear",
           "events/s by driver", "logs/s linear"], proj_rows)  # fmt: skip
    print(
        "Assumptions: server and PostgreSQL CPU (launch..settled, idle background included) and "
        "events and logs are linear in rows (at fixed C and L the wall time is too, so heartbeats "
        "and the services' idle loops scale the same way; the fixed start-up cost makes this an "
        "upper bound); task runs are not linear: rows_per_task_for(N) over the whole dataset, "
        f"min({MAX_ROWS_PER_TASK}, ceil(N/{TARGET_TASK_RUNS})) rows each, so about "
        f"{TARGET_TASK_RUNS} for the run (not per shard) up to "
        f"{MAX_ROWS_PER_TASK * TARGET_TASK_RUNS:,} rows and N/{MAX_ROWS_PER_TASK} beyond, split over "
        "the K shards, plus the parent's task runs "
        "(one per shard it starts); rates are at the ideal wall ceil(N/C) x L, the fastest the "
        "limit allows, i.e. what the server must sustain not to be the bottleneck: at fixed C "
        "and L the rows/s, and so linear events/s and logs/s, do not depend on N. 'events/s by "
        "driver' counts events by what drives them instead (per batch task run x task runs + "
        "per second x wall + fixed), the better estimate: most events follow task runs and time, "
        "not rows; logs likewise are mostly fixed per run (a progress line at each tenth), so "
        "'logs/s linear' is an upper bound. 'server+DB CPU s if ~events' is the other model of "
        "CPU: the idle stack's rate x the ideal wall, plus the rest of the measured server + "
        "PostgreSQL CPU in proportion to the events by driver (a proxy for the server's work: "
        "it ignores API calls that follow rows or time, such as slot leases)."
    )


if __name__ == "__main__":
    raise SystemExit(main())
