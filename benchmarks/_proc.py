"""Helpers shared by the benchmark scripts: the simulator subprocess, the dataset, /proc readers.

Nothing here imports Prefect or the plugin's internals: the simulator is started through its
command (``python -m prefect_seedream.cli simulator``, i.e. ``prefect-seedream simulator``),
so the scripts that use these helpers keep working while the plugin's core changes.

The /proc readers are Linux-only. CPU figures come from ``/proc/<pid>/stat`` (clock ticks,
usually 10 ms); peak memory from ``VmHWM`` in ``/proc/<pid>/status``.
"""

from __future__ import annotations

import csv
import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
CLK_TCK = os.sysconf("SC_CLK_TCK")


# --------------------------------------------------------------------------- dataset


def write_dataset(path: Path, rows: int, prefix: str = "bench") -> list[tuple[str, str]]:
    """A CSV of ``rows`` distinct prompts; returns ``[(row id, prompt), ...]``."""
    subjects = [
        "lighthouse",
        "red fox",
        "tea house",
        "glacier",
        "city tram",
        "orchard",
        "robot",
        "harbour",
    ]
    styles = ["oil painting", "watercolour", "ink sketch", "photograph", "pixel art", "woodcut"]
    items = []
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "prompt"])
        for i in range(1, rows + 1):
            row_id = f"{prefix}-{i:06d}"
            prompt = (
                f"A {subjects[i % len(subjects)]} at dawn, {styles[i % len(styles)]}, study #{i}"
            )
            writer.writerow([row_id, prompt])
            items.append((row_id, prompt))
    return items


# --------------------------------------------------------------------------- /proc


def proc_cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a live process (from /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK
    except (OSError, IndexError, ValueError):
        return None


def proc_peak_rss_mb(pid: int) -> float | None:
    """Peak resident set (VmHWM) of a live process, in MB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


@dataclass(frozen=True)
class ProcStat:
    """The fields of ``/proc/<pid>/stat`` the benchmarks use (CPU in seconds).

    ``cpu`` is the process's own user + system time; ``children_cpu`` the time of its
    children that it has *reaped* (waited for), recursively: a process counted there is gone.
    ``starttime`` (clock ticks after boot) tells a reused pid from the original.
    """

    pid: int
    ppid: int
    state: str
    cpu: float
    children_cpu: float
    starttime: int


def read_stat(pid: int) -> ProcStat | None:
    """``/proc/<pid>/stat`` of a process (also of a zombie), or None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    try:
        fields = text.rsplit(")", 1)[1].split()
        return ProcStat(
            pid=pid,
            ppid=int(fields[1]),
            state=fields[0],
            cpu=(int(fields[11]) + int(fields[12])) / CLK_TCK,
            children_cpu=(int(fields[13]) + int(fields[14])) / CLK_TCK,
            starttime=int(fields[19]),
        )
    except (IndexError, ValueError):
        return None


def read_status_kb(pid: int, *names: str) -> dict[str, int]:
    """Fields of ``/proc/<pid>/status`` given in kB (``VmHWM``, ``VmRSS``...); {} when gone."""
    found: dict[str, int] = {}
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return found
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name in names:
            try:
                found[name] = int(value.split()[0])
            except (IndexError, ValueError):
                pass
    return found


def read_cmdline(pid: int) -> list[str]:
    """The argument vector of a live process ([] for a zombie, a kernel thread or a gone pid)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def process_table() -> dict[int, ProcStat]:
    """Every process of the machine visible in /proc."""
    table = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            stat = read_stat(int(name))
            if stat is not None:
                table[stat.pid] = stat
    return table


def descendants(root: int, table: dict[int, ProcStat] | None = None) -> list[int]:
    """Pids of ``root``'s live descendants (children, grandchildren, ...), not ``root``."""
    table = process_table() if table is None else table
    children: dict[int, list[int]] = {}
    for stat in table.values():
        children.setdefault(stat.ppid, []).append(stat.pid)
    found, todo = [], list(children.get(root, []))
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def tree_cpu_seconds(root: int) -> float:
    """CPU seconds of a live process tree: every live member's own time + what it reaped.

    Each process that ended is counted once, in the ``children_cpu`` of whoever reaped it
    (when that reaper is in the tree), so two readings give an exact delta for the tree.
    """
    table = process_table()
    total = 0.0
    for pid in [root, *descendants(root, table)]:
        stat = table.get(pid)
        if stat is not None:
            total += stat.cpu + stat.children_cpu
    return total


def become_subreaper() -> bool:
    """Make this process the reaper of its orphaned descendants (Linux ``PR_SET_CHILD_SUBREAPER``).

    A grandchild whose parent exits without waiting for it is then re-parented to this
    process instead of init: it stays visible as a descendant, and once this process reaps
    it, its CPU time appears in ``getrusage(RUSAGE_CHILDREN)``. Returns False if unsupported.
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(36, 1, 0, 0, 0) == 0  # PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):
        return False


@dataclass
class ProcRecord:
    """What a :class:`TreeSampler` saw of one process (a pid with its start time)."""

    pid: int
    starttime: int
    ppid: int
    cmdline: list[str]
    first_seen: float
    last_seen: float
    cpu: float = 0.0
    children_cpu: float = 0.0
    peak_rss_kb: int = 0
    alive: bool = True


@dataclass
class TreeSampler:
    """Samples a process tree every ``period`` seconds in a thread, until :meth:`stop`.

    For each process ever seen in the tree (the root and its descendants; a process that was
    seen once stays tracked after its parent dies): its command line, the last CPU reading,
    and the largest ``VmHWM`` (peak resident set) read. The CPU of a process that ended is
    the last reading before its end, so it can miss up to one period of work: exact figures
    come from the reaper's ``children_cpu`` (see :func:`read_stat`).
    """

    root: int
    period: float = 0.5
    records: dict[tuple[int, int], ProcRecord] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> TreeSampler:
        self._thread = threading.Thread(target=self._run, name="tree-sampler", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.period)

    def sample(self) -> None:
        now = time.monotonic()
        table = process_table()
        with self._lock:
            in_tree = {self.root, *descendants(self.root, table)}
            tracked = {key[0] for key, rec in self.records.items() if rec.alive}
            for pid in in_tree | tracked:
                stat = table.get(pid)
                if stat is None:
                    continue
                key = (pid, stat.starttime)
                record = self.records.get(key)
                if record is None:
                    if pid not in in_tree:
                        continue  # a tracked pid reused by an unrelated process
                    record = self.records[key] = ProcRecord(
                        pid=pid,
                        starttime=stat.starttime,
                        ppid=stat.ppid,
                        cmdline=read_cmdline(pid),
                        first_seen=now,
                        last_seen=now,
                    )
                if stat.state == "Z":
                    continue  # a zombie's stat is final but it has no memory figures left
                if now - record.first_seen < 5:
                    # seen between fork and exec, a child shows its parent's command line
                    record.cmdline = read_cmdline(pid) or record.cmdline
                record.last_seen = now
                record.cpu = stat.cpu
                record.children_cpu = stat.children_cpu
                hwm = read_status_kb(pid, "VmHWM").get("VmHWM")
                if hwm:
                    record.peak_rss_kb = max(record.peak_rss_kb, hwm)
            for key, record in self.records.items():
                stat = table.get(key[0])
                record.alive = stat is not None and stat.starttime == key[1] and stat.state != "Z"

    def stop(self) -> list[ProcRecord]:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        return self.snapshot()

    def snapshot(self) -> list[ProcRecord]:
        with self._lock:
            return sorted(self.records.values(), key=lambda r: r.first_seen)


# --------------------------------------------------------------------------- the simulator


@dataclass
class Simulator:
    """A running simulator: its URL, how to read its stats, and its process (if any)."""

    base_url: str
    mode: str
    pid: int | None = None
    log: Path | None = None

    def stats(self) -> dict[str, Any]:
        import httpx

        response = httpx.get(f"{self.base_url}/_sim/stats", timeout=30)
        response.raise_for_status()
        return response.json()

    def get(self, path: str) -> Any:
        import httpx

        response = httpx.get(f"{self.base_url}{path}", timeout=60)
        response.raise_for_status()
        return response.json()

    def reset(self) -> None:
        """``POST /_sim/reset``: forget every task and zero every counter."""
        import httpx

        httpx.post(f"{self.base_url}/_sim/reset", timeout=30).raise_for_status()


def _wait_for_url(proc: subprocess.Popen[Any], stdout_log: Path, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = stdout_log.read_text() if stdout_log.exists() else ""
        for line in text.splitlines():
            if "listening on " in line:
                return line.rsplit("listening on ", 1)[1].strip()
        if proc.poll() is not None:
            raise RuntimeError(f"simulator exited with {proc.returncode}; see {stdout_log}")
        time.sleep(0.05)
    raise RuntimeError(f"simulator did not start within {timeout} s; see {stdout_log}")


@contextmanager
def simulator_process(command: list[str], workdir: Path) -> Iterator[Simulator]:
    """Run a simulator command that prints ``... listening on URL``; stop it (SIGINT) after."""
    stdout_log = workdir / "simulator.out"
    stderr_log = workdir / "simulator.err"
    with stdout_log.open("w") as out, stderr_log.open("w") as err:
        proc = subprocess.Popen(command, stdout=out, stderr=err, cwd=REPO)
    try:
        url = _wait_for_url(proc, stdout_log)
        yield Simulator(base_url=url, mode="subprocess", pid=proc.pid, log=stderr_log)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def simulator_cli_command(
    latency: float, jitter: float, seed: int, fault_rates: dict[str, float]
) -> list[str]:
    command = [
        sys.executable,
        "-m",
        "prefect_seedream.cli",
        "simulator",
        "--port",
        "0",
        "--latency",
        str(latency),
        "--jitter",
        str(jitter),
        "--seed",
        str(seed),
    ]
    for key, rate in fault_rates.items():
        command += ["--fault-rate", f"{key}={rate}"]
    return command
