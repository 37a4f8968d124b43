"""The scale-out stack on one machine: PostgreSQL, a Prefect server, a process work pool, K workers.

From the repository's root::

    .venv/bin/python -m deployments.stack up --workers 2 --deploy generate-dataset \\
        --env SEEDREAM_API_KEY=sk-... --limit seedream-api=16
    export PREFECT_API_URL=http://127.0.0.1:PORT/api     # printed by `up` (on stdout)
    .venv/bin/python -m deployments.stack status
    .venv/bin/python -m deployments.stack down            # --purge also deletes .stack/

Everything lives in ``--dir`` (default ``.stack/``); ``state.json`` records ports, URLs, pids
and process groups; ``logs/`` holds ``postgres.log``, ``server.log`` and ``worker-<i>.log``;
``tmp/`` is the workers' ``TMPDIR`` (a flow run's temporary working directory).

The parts:

* **PostgreSQL** (``pg/``): a private cluster made with Debian's ``initdb`` (newest
  ``/usr/lib/postgresql/<version>/bin``; ``.ci/install-postgres.sh`` installs it), listening on
  127.0.0.1 only, on a free port, its unix socket in ``pg/run``. Role ``prefect`` with a random
  password (``pg/password``, mode 0600) and scram-sha-256 on TCP; peer auth on the socket for the
  cluster's superuser. Durable settings (fsync stays on); ``max_connections = 200``. As root the
  cluster belongs to the ``postgres`` system user (PostgreSQL refuses to run as root) and
  ``initdb`` / ``pg_ctl`` / ``psql`` run through ``runuser -u postgres``; when that user cannot
  reach ``<dir>`` (e.g. under a 0700 pytest folder) the cluster lives in
  ``/var/tmp/seedream-stack-pg-<hash>`` and ``<dir>/pg`` is a symlink to it.
* **Prefect server**: ``prefect server start`` (API, UI and the background services in one
  process: scheduler, triggers of automations, foreman, ...) on
  ``PREFECT_SERVER_DATABASE_CONNECTION_URL=postgresql+asyncpg://...``, private ``PREFECT_HOME``
  (``prefect-home/``), analytics off, ``PREFECT_UI_API_URL`` for a non-default port.
* **Work pool** ``seedream-process`` (type ``process``), our block types
  (``prefect block register -m prefect_seedream``), the ``--limit NAME=N`` global concurrency
  limits, and the ``--deploy`` deployments of ``deployments/prefect.yaml`` (module entrypoints
  of the installed package; deployed from ``deployments/``, the runs' working directory, where
  the default dataset ``prompts.csv`` is).
* **Workers**: K ``prefect worker start --pool POOL`` processes, each the leader of its own
  session. A process worker runs each flow run as a subprocess
  (``python -m prefect.runner._workspace_supervisor``, which execs ``python -m prefect.engine``)
  in **a new session of its own**, not in the worker's process group, with the worker's
  environment (``--env`` values, ``PREFECT_API_URL``, the heartbeat setting). SIGKILL of a
  worker's group alone leaves its flow runs alive as orphans (seen with 3.9.1: the orphan
  reported itself Crashed about 10 s later, "Execution was cancelled by the runtime
  environment"). :func:`kill_worker` (a machine dying) kills the worker's group *and* the
  sessions of its descendants at once; ``down`` stops both too.
* **Zombie detection**: flow runs emit ``prefect.flow-run.heartbeat`` events every
  ``PREFECT_FLOWS_HEARTBEAT_FREQUENCY`` seconds (set on the workers; Prefect's minimum is 30,
  its default 180), and the automation ``seedream-stack: crash zombie flow runs`` (a proactive
  trigger: after a heartbeat, expect another heartbeat or a final state within
  ``--zombie-after`` seconds, per flow run) changes a silent run's state to Crashed. Clients
  that run flows against this server outside the workers must set the same heartbeat
  frequency, or their runs longer than ``--zombie-after`` are crashed. A run whose process
  dies before its first heartbeat (while Pending / starting) is never detected this way.

A Docker or Kubernetes work pool instead of a process pool changes this:

* **Where flow runs execute**: each run is a container / pod that the worker creates (worker
  ``--type docker`` from ``prefect-docker`` with access to the Docker daemon, or
  ``kubernetes`` from ``prefect-kubernetes`` with RBAC to create Jobs). Workers become thin
  schedulers (one or two per pool for availability); compute scales with pods, and the pool's
  concurrency limit, not the number of workers, bounds parallel shards.
* **Code**: an image with ``prefect-seedream[s3]`` installed (every entrypoint is a module of
  the package: nothing else to copy), built and pushed by a ``build``/``push`` step or CI; a
  ``set_working_directory`` pull step points at a folder inside the image instead of the
  folder ``prefect deploy`` ran in.
* **Environment**: pods do not inherit the worker's environment. ``SEEDREAM_API_KEY`` comes
  from a Kubernetes Secret / Docker env in the pool's base job template or job variables, as
  do ``PREFECT_FLOWS_HEARTBEAT_FREQUENCY`` and ``PREFECT_API_URL``; set CPU and memory requests.
* **Storage**: a pod's filesystem is private and disposable: datasets and outputs (images,
  manifest, ledger) go to shared storage, ``output=s3://bucket/prefix`` instead of a local
  folder, with credentials from the pod's identity (IRSA / workload identity); Prefect result
  storage likewise goes to an object-storage block instead of ``PREFECT_HOME``.
* **Server**: reachable from the pods (a Service / DNS name, ``PREFECT_API_URL`` pointing at it,
  ``PREFECT_UI_API_URL`` at the external address), bound to ``0.0.0.0`` and protected
  (``PREFECT_SERVER_API_AUTH_STRING`` with ``PREFECT_API_AUTH_STRING`` on clients, or a proxy);
  PostgreSQL a managed instance or StatefulSet (size ``max_connections`` for replicas x pool).
* **Several server replicas**: Redis (``prefect-redis``: ``PREFECT_MESSAGING_BROKER`` and
  ``PREFECT_MESSAGING_CACHE=prefect_redis.messaging``, ...) so that events reach the triggers
  service whichever replica received them; API replicas with ``--no-services`` behind a load
  balancer, and the background services run separately (``prefect server services start``).
* **Zombies**: the same automation; a lost node or evicted pod stops heartbeats, and the
  Kubernetes worker also reports Jobs that fail. Pods should forward SIGTERM to the engine.

Python API (tests): :class:`Stack`, :func:`up`, :func:`down`, :func:`status`,
:func:`running_stack`, :func:`kill_worker`, :func:`start_worker`, :func:`find_pg_bin`.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import glob
import hashlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
PREFECT_FILE = REPO / "deployments" / "prefect.yaml"
#: The venv's bin directory (``sys.executable`` is deliberately not resolved: the venv's
#: ``python`` is a symlink and resolving it would leave the venv).
VENV_BIN = Path(sys.executable).parent

DEFAULT_DIR = ".stack"
DEFAULT_POOL = "seedream-process"
DEFAULT_NAME = "seedream"
DEFAULT_WORKERS = 2
DEFAULT_ZOMBIE_AFTER = 90
#: ``PREFECT_FLOWS_HEARTBEAT_FREQUENCY`` on the workers. Prefect 3.9 enforces >= 30 s.
DEFAULT_HEARTBEAT = 30
MIN_HEARTBEAT = 30
#: ``PREFECT_WORKER_QUERY_SECONDS`` (Prefect's default, 10 s, delays every run by up to 10 s).
DEFAULT_WORKER_POLL = 5
#: A process worker takes every scheduled run it finds when it polls: without a limit, the
#: first worker to poll takes all the shards of a run. One flow run per worker spreads them,
#: as one worker per machine would; keep more workers than runs started on them that wait
#: for shards (a dataset run from the UI does, while its shards run on other workers).
DEFAULT_WORKER_LIMIT = 1

DB_NAME = "prefect"
DB_ROLE = "prefect"
PG_MAX_CONNECTIONS = 200
ZOMBIE_AUTOMATION_NAME = "seedream-stack: crash zombie flow runs"
ZOMBIE_MESSAGE = "Flow run marked as crashed: no heartbeat for {seconds} s (seedream stack)."
STATE_FILE = "state.json"
WORKER_ENV_FILE = "worker-env.json"
FALLBACK_PG_PREFIX = "/var/tmp/seedream-stack-pg-"
LOCALHOST = "127.0.0.1"

#: urllib opener that ignores ``*_proxy`` variables: everything here is on 127.0.0.1.
_LOCAL = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class StackError(RuntimeError):
    """A part of the stack could not be brought up (the message says which, with log tails)."""


def _log(message: str) -> None:
    """Progress line on stderr (stdout carries only the ``export`` lines of ``up``)."""
    print(f"stack: {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# Processes
# --------------------------------------------------------------------------------------------


@dataclass
class ProcessInfo:
    """A process started by the stack, identified robustly against pid reuse.

    Attributes:
        pid: Process id (the leader of its own session and process group: ``pgid == pid``).
        pgid: Process group id.
        start_ticks: Start time in clock ticks since boot (``/proc/<pid>/stat`` field 22), so
            that a recycled pid is never mistaken for this process.
        log: Path of its log file.
        argv: Command line.
    """

    pid: int
    pgid: int
    start_ticks: int
    log: str
    argv: list[str]


def _proc_stat(pid: int) -> tuple[str, int, int, int] | None:
    """``(state, ppid, pgid, start_ticks)`` of a process from ``/proc``, None if it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name is in parentheses and may contain spaces: split after the last ')'.
    fields = raw[raw.rindex(")") + 2 :].split()
    return fields[0], int(fields[1]), int(fields[2]), int(fields[19])


def is_alive(info: ProcessInfo | None) -> bool:
    """Whether the process recorded in ``info`` still runs (a zombie counts as dead)."""
    if info is None:
        return False
    stat = _proc_stat(info.pid)
    return stat is not None and stat[0] != "Z" and stat[3] == info.start_ticks


def _descendants(pid: int) -> list[int]:
    """Pids of all live descendants of ``pid`` (children, grandchildren, ...), from ``/proc``."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _proc_stat(int(entry))
            if stat is not None and stat[0] != "Z":
                children.setdefault(stat[1], []).append(int(entry))
    found: list[int] = []
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _groups_of(info: ProcessInfo) -> set[int]:
    """Process groups of ``info`` and of all its descendants (flow runs have their own)."""
    groups = {info.pgid} if is_alive(info) else set()
    for pid in _descendants(info.pid) if is_alive(info) else []:
        stat = _proc_stat(pid)
        if stat is not None:
            groups.add(stat[2])
    return groups


def _signal_groups(groups: Iterable[int], sig: signal.Signals) -> None:
    for group in groups:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(group, sig)


def _group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # killpg(0) also succeeds while only zombies are left: look for a live member.
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _proc_stat(int(entry))
            if stat is not None and stat[2] == group and stat[0] != "Z":
                return True
    return False


def _wait_groups_gone(groups: set[int], timeout: float) -> set[int]:
    """Wait until no live process is left in ``groups``; return the groups still alive."""
    deadline = time.monotonic() + timeout
    left = set(groups)
    while left:
        _reap_children()
        left = {g for g in left if _group_alive(g)}
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    return left


#: Processes started by this Python process (the Python API starts workers as children):
#: reaped once they exit, so that they do not linger as zombies.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


def _reap_children() -> None:
    """Reap the exited processes that this Python process started (only those)."""
    for pid, proc in list(_CHILDREN.items()):
        if proc.poll() is not None:
            del _CHILDREN[pid]


def _stop_tree(info: ProcessInfo | None, timeout: float) -> None:
    """SIGTERM ``info``'s group and its descendants' groups; SIGKILL what is left after
    ``timeout`` seconds."""
    if not is_alive(info):
        return
    assert info is not None
    groups = _groups_of(info)
    _signal_groups(groups, signal.SIGTERM)
    left = _wait_groups_gone(groups, timeout)
    if left:
        _signal_groups(left, signal.SIGKILL)
        _wait_groups_gone(left, 10)


def _spawn(argv: Sequence[str], env: Mapping[str, str], log: Path, cwd: Path) -> ProcessInfo:
    """Start ``argv`` as the leader of a new session, output appended to ``log``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        out.write(
            f"--- {dt.datetime.now().isoformat(timespec='seconds')} {' '.join(argv)}\n".encode()
        )
        out.flush()
        proc = subprocess.Popen(
            list(argv), env=dict(env), cwd=cwd, stdin=subprocess.DEVNULL, stdout=out,
            stderr=subprocess.STDOUT, start_new_session=True, close_fds=True,
        )  # fmt: skip
    _CHILDREN[proc.pid] = proc
    stat = _proc_stat(proc.pid)
    ticks = stat[3] if stat else 0
    return ProcessInfo(proc.pid, proc.pid, ticks, str(log), list(argv))


def tail_of(path: Path | str, lines: int = 40) -> str:
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"<{path} unreadable>"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOCALHOST, 0))
        return int(s.getsockname()[1])


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((LOCALHOST, port))
        except OSError:
            return False
    return True


# --------------------------------------------------------------------------------------------
# State
# --------------------------------------------------------------------------------------------


@dataclass
class PostgresInfo:
    """The stack's PostgreSQL cluster.

    Attributes:
        bin_dir: Directory of ``initdb``, ``pg_ctl``, ``psql`` (``/usr/lib/postgresql/N/bin``).
        root: Directory holding ``data/``, ``run/`` (unix socket), ``postgres.log`` and
            ``password``: ``<dir>/pg`` or, as root when the ``postgres`` user cannot reach
            ``<dir>``, a folder in /var/tmp that ``<dir>/pg`` links to.
        port: TCP port on 127.0.0.1.
        os_user: System user the server runs as (``postgres`` when the stack runs as root), or
            None for the current user.
    """

    bin_dir: str
    root: str
    port: int
    os_user: str | None

    @property
    def data_dir(self) -> Path:
        """The cluster's data directory."""
        return Path(self.root) / "data"

    @property
    def socket_dir(self) -> Path:
        """Directory of the unix socket."""
        return Path(self.root) / "run"

    @property
    def log(self) -> Path:
        """The server's log (``<dir>/logs/postgres.log`` links to it)."""
        return Path(self.root) / "postgres.log"

    @property
    def password_file(self) -> Path:
        """File holding the ``prefect`` role's password (mode 0600)."""
        return Path(self.root) / "password"

    @property
    def public_url(self) -> str:
        """The SQLAlchemy URL without the password."""
        return f"postgresql+asyncpg://{DB_ROLE}@{LOCALHOST}:{self.port}/{DB_NAME}"

    def url(self) -> str:
        """The SQLAlchemy URL with the password (for the Prefect server's environment)."""
        password = self.password_file.read_text().strip()
        return f"postgresql+asyncpg://{DB_ROLE}:{password}@{LOCALHOST}:{self.port}/{DB_NAME}"


@dataclass
class Stack:
    """A running (or recorded) stack; saved as ``<dir>/state.json`` without secrets.

    Attributes:
        dir: The stack's directory (absolute).
        name: Prefix of the workers' names (``<name>-worker-<i>``).
        pool: Name of the process work pool.
        api_port: Port of the Prefect server.
        postgres: The PostgreSQL cluster.
        heartbeat_seconds: ``PREFECT_FLOWS_HEARTBEAT_FREQUENCY`` of the workers.
        zombie_after: ``within`` of the zombie automation, seconds.
        worker_limit: Most flow runs one worker runs at once (``prefect worker start
            --limit``); 0: no limit.
        server: The ``prefect server start`` process.
        workers: Worker processes by index (1..K).
        deployments: Deployments created from prefect.yaml (``flow/deployment``).
        limits: Global concurrency limits created (name -> limit).
        automation_id: Id of the zombie automation.
        worker_env: The ``--env`` values given to workers. They may hold an API key:
            ``state.json`` records only the keys, the values are in ``worker-env.json`` (0600).
    """

    dir: Path
    name: str
    pool: str
    api_port: int
    postgres: PostgresInfo
    heartbeat_seconds: int = DEFAULT_HEARTBEAT
    zombie_after: int = DEFAULT_ZOMBIE_AFTER
    worker_poll_seconds: int = DEFAULT_WORKER_POLL
    worker_limit: int = DEFAULT_WORKER_LIMIT
    server: ProcessInfo | None = None
    workers: dict[int, ProcessInfo] = field(default_factory=dict)
    deployments: list[str] = field(default_factory=list)
    limits: dict[str, int] = field(default_factory=dict)
    automation_id: str | None = None
    started_at: str = ""
    worker_env: dict[str, str] = field(default_factory=dict, repr=False)

    @property
    def api_url(self) -> str:
        """``http://127.0.0.1:PORT/api``: the ``PREFECT_API_URL`` of clients."""
        return f"http://{LOCALHOST}:{self.api_port}/api"

    @property
    def ui_url(self) -> str:
        """The UI's root URL."""
        return f"http://{LOCALHOST}:{self.api_port}"

    @property
    def home(self) -> Path:
        """The private ``PREFECT_HOME`` of the server, the workers and CLI calls."""
        return self.dir / "prefect-home"

    @property
    def logs(self) -> Path:
        """Folder of the log files."""
        return self.dir / "logs"

    def worker_name(self, index: int) -> str:
        """Name of worker ``index`` as the API lists it."""
        return f"{self.name}-worker-{index}"

    def client_env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """Environment for a Prefect client process (CLI, flow, script) of this stack.

        The caller's ``PREFECT_*`` variables are dropped (a user's profile or ``PREFECT_API_URL``
        must not leak in); ``PWD`` is the repo's root.
        """
        env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
        env.update(
            PREFECT_API_URL=self.api_url,
            PREFECT_HOME=str(self.home),
            PREFECT_PROFILES_PATH=str(self.home / "profiles.toml"),
            PREFECT_SERVER_ANALYTICS_ENABLED="false",
            PREFECT_FLOWS_HEARTBEAT_FREQUENCY=str(self.heartbeat_seconds),
            PYTHONUNBUFFERED="1",
            PWD=str(REPO),
        )
        env.update(extra or {})
        return env

    def api(self, method: str, path: str, body: Any = None, timeout: float = 15.0) -> Any:
        """Call the server's REST API (``path`` below ``/api``) and return the decoded JSON."""
        return api_request(self.api_url, method, path, body, timeout)

    def cli(
        self, *args: str, timeout: float = 300.0, check: bool = True, cwd: Path = REPO
    ) -> str:
        """Run ``prefect ARGS`` against this stack from ``cwd``; return its output.

        Raises:
            StackError: it exited non-zero (with ``check``); the output is in the message.
        """
        result = subprocess.run(
            [str(VENV_BIN / "prefect"), *args], cwd=cwd, env=self.client_env({"PWD": str(cwd)}),
            check=False, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip
        output = result.stdout + result.stderr
        if check and result.returncode != 0:
            raise StackError(f"prefect {' '.join(args)} failed ({result.returncode}):\n{output}")
        return output

    def to_json(self) -> dict[str, Any]:
        """What ``state.json`` holds: no password, no ``--env`` values."""
        data = asdict(self)
        data.pop("worker_env")
        data["dir"] = str(self.dir)
        data["workers"] = {str(i): asdict(w) for i, w in self.workers.items()}
        data["worker_env_keys"] = sorted(self.worker_env)
        data["api_url"] = self.api_url
        data["ui_url"] = self.ui_url
        data["postgres"]["database_url"] = self.postgres.public_url
        data["postgres"]["password_file"] = str(self.postgres.password_file)
        data["postgres"]["socket_dir"] = str(self.postgres.socket_dir)
        data["export"] = f"export PREFECT_API_URL={self.api_url}"
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Stack:
        """Inverse of :meth:`to_json` (``worker_env`` comes back empty)."""
        pg = data["postgres"]
        return cls(
            dir=Path(data["dir"]),
            name=data["name"],
            pool=data["pool"],
            api_port=int(data["api_port"]),
            postgres=PostgresInfo(pg["bin_dir"], pg["root"], int(pg["port"]), pg["os_user"]),
            heartbeat_seconds=int(data["heartbeat_seconds"]),
            zombie_after=int(data["zombie_after"]),
            worker_poll_seconds=int(data.get("worker_poll_seconds", DEFAULT_WORKER_POLL)),
            worker_limit=int(data.get("worker_limit", DEFAULT_WORKER_LIMIT)),
            server=ProcessInfo(**data["server"]) if data.get("server") else None,
            workers={int(i): ProcessInfo(**w) for i, w in data.get("workers", {}).items()},
            deployments=list(data.get("deployments", [])),
            limits=dict(data.get("limits", {})),
            automation_id=data.get("automation_id"),
            started_at=data.get("started_at", ""),
        )

    def save(self) -> None:
        """Write ``state.json`` (atomically), and the workers' ``--env`` to ``worker-env.json``
        (mode 0600: it may hold an API key), which :func:`start_worker` needs after a restart."""
        path = self.dir / STATE_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.to_json(), indent=2) + "\n")
        tmp.replace(path)
        env_path = self.dir / WORKER_ENV_FILE
        env_tmp = env_path.with_suffix(".tmp")
        env_tmp.unlink(missing_ok=True)
        fd = os.open(env_tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump(self.worker_env, out)
        env_tmp.replace(env_path)


def load_stack(directory: Path | str) -> Stack | None:
    """The stack recorded in ``<directory>/state.json``, or None."""
    root = Path(directory).resolve()
    try:
        stack = Stack.from_json(json.loads((root / STATE_FILE).read_text()))
    except FileNotFoundError:
        return None
    with contextlib.suppress(FileNotFoundError):
        stack.worker_env = json.loads((root / WORKER_ENV_FILE).read_text())
    return stack


def api_request(
    api_url: str, method: str, path: str, body: Any = None, timeout: float = 15.0
) -> Any:
    """Minimal JSON client for the Prefect REST API (stdlib only).

    Args:
        api_url: ``http://host:port/api``.
        method: HTTP method.
        path: Path below ``/api``, e.g. ``"/flow_runs/filter"``.
        body: JSON-serialisable request body, or None.
        timeout: Seconds.

    Returns:
        The decoded JSON response (None for an empty body).

    Raises:
        urllib.error.HTTPError: on a 4xx/5xx answer (its ``read()`` holds the detail).
    """
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        api_url.rstrip("/") + path, data=data, method=method,
        headers={"Content-Type": "application/json"} if data is not None else {},
    )  # fmt: skip
    for attempt in range(4):
        try:
            with _LOCAL.open(request, timeout=timeout) as response:
                raw = response.read()
            return json.loads(raw) if raw else None
        except urllib.error.HTTPError as exc:
            if exc.code != 503 or attempt == 3:
                raise
        time.sleep(1 + attempt)
    raise AssertionError("unreachable")


# --------------------------------------------------------------------------------------------
# PostgreSQL
# --------------------------------------------------------------------------------------------


def find_pg_bin() -> Path | None:
    """The newest PostgreSQL server bin directory: Debian's ``/usr/lib/postgresql/<N>/bin``,
    else the directory of an ``initdb`` on ``PATH``; None when there is none."""
    candidates = glob.glob("/usr/lib/postgresql/*/bin/initdb")

    def version(path: str) -> tuple[int, ...]:
        return tuple(int(p) for p in re.findall(r"\d+", Path(path).parent.parent.name))

    if candidates:
        return Path(max(candidates, key=version)).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _pg_os_user() -> str | None:
    """``postgres`` when running as root (PostgreSQL refuses root), else None (current user)."""
    if os.geteuid() != 0:
        return None
    try:
        import pwd

        pwd.getpwnam("postgres")
    except KeyError:
        raise StackError(
            "running as root needs the `postgres` system user (PostgreSQL refuses to run as "
            "root): run .ci/install-postgres.sh, or run the stack as an ordinary user"
        ) from None
    return "postgres"


def _as_pg_user(argv: Sequence[str], os_user: str | None) -> list[str]:
    return ["runuser", "-u", os_user, "--", *argv] if os_user else list(argv)


def _pg_run(
    pg: PostgresInfo, argv: Sequence[str], *, stdin: str | None = None, check: bool = True,
    timeout: float = 120.0,
) -> subprocess.CompletedProcess[str]:  # fmt: skip
    """Run a PostgreSQL tool (``argv[0]`` in ``pg.bin_dir``) as the cluster's OS user."""
    command = _as_pg_user([str(Path(pg.bin_dir) / argv[0]), *argv[1:]], pg.os_user)
    result = subprocess.run(
        command, input=stdin, capture_output=True, text=True, timeout=timeout, cwd="/", check=False,
        # pg_ctl start: the postmaster must not join our session (a Ctrl-C of `up` would
        # reach it) nor keep our pipes open.
        start_new_session=True, stdin=None if stdin is not None else subprocess.DEVNULL,
    )  # fmt: skip
    if check and result.returncode != 0:
        raise StackError(
            f"{' '.join(argv[:2])} failed ({result.returncode}):\n{result.stdout}{result.stderr}"
        )
    return result


def _chown(path: Path, os_user: str | None) -> None:
    if os_user:
        shutil.chown(path, os_user, os_user)


def _reachable_by(path: Path, os_user: str | None) -> bool:
    """Whether ``os_user`` can traverse to and write into ``path``."""
    if os_user is None:
        return os.access(path, os.W_OK | os.X_OK)
    result = subprocess.run(
        ["runuser", "-u", os_user, "--", "test", "-w", str(path), "-a", "-x", str(path)],
        cwd="/", capture_output=True, check=False,
    )  # fmt: skip
    return result.returncode == 0


def _pg_root(directory: Path, os_user: str | None) -> Path:
    """Where the cluster lives: ``<dir>/pg``, or a /var/tmp folder that ``<dir>/pg`` links to.

    The fallback (``/var/tmp/seedream-stack-pg-<hash of dir>``, kept across reboots like
    ``<dir>``) is used when the cluster's OS user cannot reach ``<dir>`` (root running the
    stack under a 0700 folder) or the unix socket's path would be too long (107 bytes).
    """
    link = directory / "pg"
    if link.is_dir() and not link.is_symlink():
        return link
    if not link.is_symlink():
        link.mkdir()
        _chown(link, os_user)
        socket_path = link / "run" / ".s.PGSQL.65535"
        if _reachable_by(link, os_user) and len(str(socket_path)) <= 100:
            return link
        link.rmdir()
        digest = hashlib.sha1(str(directory).encode()).hexdigest()[:10]
        link.symlink_to(f"{FALLBACK_PG_PREFIX}{digest}")
    root = link.resolve()
    if not root.exists():  # a fresh link, or its target was cleaned away
        root.mkdir(mode=0o700)
        _chown(root, os_user)
    return root


def init_postgres(directory: Path, port: int) -> PostgresInfo:
    """Create (once) the cluster of the stack in ``directory``, and write its settings.

    Runs ``initdb`` when the cluster does not exist yet (peer auth on the socket,
    scram-sha-256 on TCP, UTF-8, C locale), generates the ``prefect`` role's password, and
    (every time) writes ``stack.conf``: listen on 127.0.0.1:``port`` only, socket in ``run/``,
    ``max_connections``. fsync and synchronous commit keep their durable defaults.

    Args:
        directory: The stack's directory (absolute).
        port: TCP port for this start.

    Returns:
        The cluster's description.

    Raises:
        StackError: no binaries, no ``postgres`` user as root, or initdb failed.
    """
    os_user = _pg_os_user()
    root = _pg_root(directory, os_user)
    data = root / "data"
    version_file = data / "PG_VERSION"
    bin_dir = find_pg_bin()
    if version_file.exists():
        # An existing cluster needs the binaries of its own major version.
        own = Path(f"/usr/lib/postgresql/{version_file.read_text().strip()}/bin")
        if (own / "postgres").exists():
            bin_dir = own
    if bin_dir is None:
        raise StackError("PostgreSQL is not installed: run .ci/install-postgres.sh")
    pg = PostgresInfo(str(bin_dir), str(root), port, os_user)
    pg.socket_dir.mkdir(exist_ok=True)
    _chown(pg.socket_dir, os_user)

    if not version_file.exists():
        _log(f"initdb {data} ({bin_dir})")
        _pg_run(pg, [
            "initdb", "-D", str(data), "--auth-local=peer", "--auth-host=scram-sha-256",
            "--encoding=UTF8", "--locale=C", "--no-instructions",
        ])  # fmt: skip
        with open(data / "postgresql.conf", "a") as conf:
            conf.write("\n# Written by deployments/stack.py at every `up`.\ninclude 'stack.conf'\n")
    if not pg.password_file.exists():
        fd = os.open(pg.password_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_hex(16) + "\n")

    stack_conf = data / "stack.conf"
    stack_conf.write_text(
        f"listen_addresses = '{LOCALHOST}'\n"
        f"port = {port}\n"
        f"unix_socket_directories = '{pg.socket_dir}'\n"
        # A Prefect server holds up to pool_size + max_overflow (5 + 10) connections per
        # engine, and services use their own: room for a few servers plus psql sessions.
        f"max_connections = {PG_MAX_CONNECTIONS}\n"
        "log_line_prefix = '%m [%p] %q%u@%d '\n"
    )
    _chown(stack_conf, os_user)
    return pg


def start_postgres(pg: PostgresInfo) -> None:
    """``pg_ctl start`` (waits until it accepts connections) unless it already runs."""
    if _pg_run(pg, ["pg_ctl", "status", "-D", str(pg.data_dir)], check=False).returncode == 0:
        return
    result = _pg_run(pg, [
        "pg_ctl", "start", "-w", "-t", "90", "-s", "-D", str(pg.data_dir), "-l", str(pg.log),
    ], check=False)  # fmt: skip
    if result.returncode != 0:
        raise StackError(
            f"pg_ctl start failed ({result.returncode}): {result.stdout}{result.stderr}\n"
            f"{tail_of(pg.log)}"
        )


def ensure_database(pg: PostgresInfo) -> None:
    """Create (idempotently) the ``prefect`` role with its password and database it owns."""
    password = pg.password_file.read_text().strip()
    if not re.fullmatch(r"[0-9a-f]+", password):  # it goes into SQL as a literal
        raise StackError(f"{pg.password_file}: expected the hex password the stack generated")
    sql = f"""
DO $$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{DB_ROLE}') THEN
    CREATE ROLE {DB_ROLE} LOGIN;
  END IF;
END $$;
ALTER ROLE {DB_ROLE} WITH LOGIN PASSWORD '{password}';
SELECT 'CREATE DATABASE {DB_NAME} OWNER {DB_ROLE}'
  WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '{DB_NAME}')\\gexec
"""
    # The password goes through stdin, never a command line.
    _pg_run(pg, [
        "psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", str(pg.socket_dir),
        "-p", str(pg.port), "-d", "postgres", "-f", "-",
    ], stdin=sql)  # fmt: skip


def stop_postgres(pg: PostgresInfo) -> None:
    """``pg_ctl stop -m fast``; nothing when it does not run or its data is gone."""
    if not (pg.data_dir / "postmaster.pid").exists():
        return
    result = _pg_run(pg, ["pg_ctl", "stop", "-m", "fast", "-w", "-t", "60", "-s",
                          "-D", str(pg.data_dir)], check=False)  # fmt: skip
    if result.returncode != 0 and (pg.data_dir / "postmaster.pid").exists():
        status_ = _pg_run(pg, ["pg_ctl", "status", "-D", str(pg.data_dir)], check=False)
        if status_.returncode == 0:
            raise StackError(f"pg_ctl stop failed: {result.stdout}{result.stderr}")


def postgres_ready(pg: PostgresInfo) -> bool:
    """Whether the cluster accepts TCP connections on its port (``pg_isready``)."""
    tool = Path(pg.bin_dir) / "pg_isready"
    result = subprocess.run(
        [str(tool), "-q", "-h", LOCALHOST, "-p", str(pg.port), "-d", DB_NAME],
        capture_output=True, timeout=15, check=False,
    )  # fmt: skip
    return result.returncode == 0


# --------------------------------------------------------------------------------------------
# Prefect server
# --------------------------------------------------------------------------------------------


def _server_env(stack: Stack, extra: Mapping[str, str] | None) -> dict[str, str]:
    env = stack.client_env()
    del env["PREFECT_API_URL"]  # the server needs none; its UI gets PREFECT_UI_API_URL
    env.update(
        PREFECT_SERVER_DATABASE_CONNECTION_URL=stack.postgres.url(),
        PREFECT_SERVER_API_HOST=LOCALHOST,
        PREFECT_SERVER_API_PORT=str(stack.api_port),
        PREFECT_UI_API_URL=stack.api_url,
        PREFECT_SERVER_UI_SHOW_PROMOTIONAL_CONTENT="false",
    )
    env.update(extra or {})
    return env


def start_server(
    stack: Stack, timeout: float = 180.0, extra_env: Mapping[str, str] | None = None
) -> None:
    """Start ``prefect server start`` and wait for ``/api/health``.

    A fresh database runs its migrations first (about 20-40 s on 2 busy cores).

    Raises:
        StackError: the server exited, or was not healthy within ``timeout`` seconds.
    """
    argv = [str(VENV_BIN / "prefect"), "server", "start", "--host", LOCALHOST,
            "--port", str(stack.api_port)]  # fmt: skip
    stack.server = _spawn(argv, _server_env(stack, extra_env), stack.logs / "server.log", REPO)
    stack.save()
    deadline = time.monotonic() + timeout
    while True:
        if not is_alive(stack.server):
            raise StackError(f"prefect server exited:\n{tail_of(stack.server.log)}")
        try:
            _LOCAL.open(f"{stack.api_url}/health", timeout=3).close()
            return
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            raise StackError(f"prefect server not healthy after {timeout:.0f} s:\n"
                             f"{tail_of(stack.server.log)}")  # fmt: skip
        time.sleep(0.5)


# --------------------------------------------------------------------------------------------
# Pool, blocks, limits, automation, deployments
# --------------------------------------------------------------------------------------------


def ensure_work_pool(stack: Stack) -> None:
    """Create the process work pool unless it exists (an existing pool is left as it is)."""
    try:
        pool = stack.api("GET", f"/work_pools/{urllib.parse.quote(stack.pool)}")
    except urllib.error.HTTPError as exc:
        if exc.code != 404:
            raise
        stack.cli("work-pool", "create", stack.pool, "--type", "process")
        return
    if pool["type"] != "process":
        raise StackError(f"work pool {stack.pool!r} exists with type {pool['type']!r}")


def register_blocks(stack: Stack) -> None:
    """``prefect block register -m prefect_seedream`` (idempotent)."""
    stack.cli("block", "register", "-m", "prefect_seedream")


def ensure_concurrency_limit(stack: Stack, name: str, limit: int) -> None:
    """Create the global concurrency limit ``name``, or set its limit if it exists.

    Looked up first: a POST of an existing name answers 409 but logs an IntegrityError
    traceback in the server's log.
    """
    path = f"/v2/concurrency_limits/{urllib.parse.quote(name)}"
    try:
        stack.api("GET", path)
    except urllib.error.HTTPError as exc:
        if exc.code != 404:
            raise
        stack.api("POST", "/v2/concurrency_limits/", {"name": name, "limit": limit, "active": True})
    else:
        stack.api("PATCH", path, {"limit": limit, "active": True})
    stack.limits[name] = limit


def zombie_automation(zombie_after: int) -> dict[str, Any]:
    """Body of the automation that crashes flow runs whose heartbeats stopped.

    Prefect's "Detect zombie flows" recipe: after a ``prefect.flow-run.heartbeat`` event of a
    flow run, expect another heartbeat or a final state event of *that* run (``for_each``)
    within ``zombie_after`` seconds; otherwise (proactive posture, checked every 5 s by the
    server's triggers service) change its state to Crashed. ``Suspended`` is expected too:
    a suspended run's process exits on purpose.
    """
    return {
        "name": ZOMBIE_AUTOMATION_NAME,
        "description": "Marks flow runs Crashed when their heartbeats stop (deployments/stack.py).",
        "enabled": True,
        "trigger": {
            "type": "event",
            "posture": "Proactive",
            "match": {"prefect.resource.id": ["prefect.flow-run.*"]},
            "match_related": {},
            "after": ["prefect.flow-run.heartbeat"],
            "expect": [
                "prefect.flow-run.heartbeat",
                "prefect.flow-run.Completed",
                "prefect.flow-run.Failed",
                "prefect.flow-run.Cancelled",
                "prefect.flow-run.Crashed",
                "prefect.flow-run.TimedOut",
                "prefect.flow-run.Suspended",
            ],
            "for_each": ["prefect.resource.id"],
            "threshold": 1,
            "within": zombie_after,
        },
        "actions": [
            {
                "type": "change-flow-run-state",
                "state": "CRASHED",
                "message": ZOMBIE_MESSAGE.format(seconds=zombie_after),
            }
        ],
    }


def ensure_zombie_automation(stack: Stack) -> str:
    """Create the zombie automation, or replace the body of the one with its name; return its id."""
    body = zombie_automation(stack.zombie_after)
    found = stack.api("POST", "/automations/filter",
                      {"automations": {"name": {"any_": [ZOMBIE_AUTOMATION_NAME]}}})  # fmt: skip
    for extra in found[1:]:  # duplicates from an older run: keep one
        stack.api("DELETE", f"/automations/{extra['id']}")
    if found:
        stack.api("PUT", f"/automations/{found[0]['id']}", body)
        stack.automation_id = str(found[0]["id"])
    else:
        stack.automation_id = str(stack.api("POST", "/automations/", body)["id"])
    return stack.automation_id


def _prefect_yaml_deployments() -> dict[str, dict[str, Any]]:
    import yaml  # a dependency of prefect

    config = yaml.safe_load(PREFECT_FILE.read_text())
    return {d["name"]: d for d in config.get("deployments", [])}


def deploy(stack: Stack, names: Sequence[str]) -> list[str]:
    """Deploy ``names`` (or ``["all"]``) from ``deployments/prefect.yaml`` to the stack's pool.

    Runs ``prefect --no-prompt deploy --name NAME`` in ``deployments/``: ``prefect deploy``
    records that folder as the runs' working directory (prefect.yaml has no pull step), so the
    default dataset ``prompts.csv`` beside it is found. When a deployment's ``work_pool.name``
    differs from the stack's pool, it is deployed alone with ``--pool`` (``prefect deploy``
    ignores ``--pool`` when deploying several at once).

    Returns:
        The deployments' full names (``flow-name/deployment-name``).

    Raises:
        StackError: an unknown name, or ``prefect deploy`` failed.
    """
    if not names:
        return []
    known = _prefect_yaml_deployments()
    selected = list(known) if "all" in names else list(dict.fromkeys(names))
    unknown = [n for n in selected if n not in known]
    if unknown:
        raise StackError(f"not in {PREFECT_FILE.name}: {unknown}; known: {sorted(known)}")
    base = ["--no-prompt", "deploy", "--prefect-file", PREFECT_FILE.name]
    here = PREFECT_FILE.parent
    same_pool = [n for n in selected if known[n].get("work_pool", {}).get("name") == stack.pool]
    other_pool = [n for n in selected if n not in same_pool]
    if same_pool:
        if len(same_pool) == len(known):
            stack.cli(*base, "--all", cwd=here)
        else:
            stack.cli(*base, *[arg for n in same_pool for arg in ("--name", n)], cwd=here)
    for name in other_pool:
        stack.cli(*base, "--name", name, "--pool", stack.pool, cwd=here)
    deployments = stack.api("POST", "/deployments/filter",
                            {"deployments": {"name": {"any_": selected}}})  # fmt: skip
    flows = {f["id"]: f["name"] for f in stack.api("POST", "/flows/filter", {})}
    full = sorted(f"{flows.get(d['flow_id'], '?')}/{d['name']}" for d in deployments)
    stack.deployments = sorted(set(stack.deployments) | set(full))
    return full


# --------------------------------------------------------------------------------------------
# Workers
# --------------------------------------------------------------------------------------------


def _worker_env(stack: Stack) -> dict[str, str]:
    env = stack.client_env()
    env["PREFECT_WORKER_QUERY_SECONDS"] = str(stack.worker_poll_seconds)
    # The worker's per-run temporary folders (the working directory, and
    # prefect-workspace-attempt-*/workspace.json, which holds the run's whole environment,
    # API key included) stay behind when a worker is killed: keep them in the stack's folder.
    tmp = stack.dir / "tmp"
    tmp.mkdir(mode=0o700, exist_ok=True)
    env["TMPDIR"] = str(tmp)
    env.update(stack.worker_env)
    return env


def _spawn_worker(stack: Stack, index: int) -> float:
    """Start worker ``index`` (not waiting); return its start time (epoch seconds)."""
    previous = stack.workers.get(index)
    if is_alive(previous):
        raise StackError(f"worker {index} runs already (pid {previous.pid})")  # type: ignore[union-attr]
    argv = [str(VENV_BIN / "prefect"), "worker", "start", "--pool", stack.pool,
            "--name", stack.worker_name(index)]  # fmt: skip
    if stack.worker_limit:
        argv += ["--limit", str(stack.worker_limit)]
    started = time.time()
    stack.workers[index] = _spawn(
        argv, _worker_env(stack), stack.logs / f"worker-{index}.log", REPO
    )
    stack.save()
    return started


def _parse_time(value: str | None) -> float:
    if not value:
        return 0.0
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def online_workers(stack: Stack, since: float = 0.0) -> dict[str, dict[str, Any]]:
    """Workers of the pool that the API lists ONLINE with a heartbeat after ``since`` (epoch s)."""
    pool = urllib.parse.quote(stack.pool)
    workers = stack.api("POST", f"/work_pools/{pool}/workers/filter", {})
    return {
        w["name"]: w
        for w in workers
        if w.get("status") == "ONLINE" and _parse_time(w.get("last_heartbeat_time")) >= since
    }


def wait_for_workers(stack: Stack, started: Mapping[int, float], timeout: float = 120.0) -> None:
    """Wait until each worker in ``started`` (index -> start time) heartbeats after its start.

    Raises:
        StackError: a worker exited, or not all were online in time (with their log tails).
    """
    deadline = time.monotonic() + timeout
    while True:
        online = online_workers(stack)
        waiting = []
        for index, since in started.items():
            info = stack.workers[index]
            if not is_alive(info):
                raise StackError(f"worker {index} exited:\n{tail_of(info.log)}")
            worker = online.get(stack.worker_name(index))
            # A restarted worker keeps its record: wait for a heartbeat of the new process
            # (same clock as the server's; 2 s for rounding).
            if worker is None or _parse_time(worker.get("last_heartbeat_time")) < since - 2:
                waiting.append(index)
        if not waiting:
            return
        if time.monotonic() > deadline:
            tails = "\n".join(f"--- worker {i}\n{tail_of(stack.workers[i].log, 20)}" for i in waiting)
            raise StackError(f"workers {waiting} not online after {timeout:.0f} s:\n{tails}")
        time.sleep(0.5)


def start_worker(stack: Stack, index: int, timeout: float = 120.0) -> ProcessInfo:
    """Start worker ``index`` (again, e.g. after :func:`kill_worker`) and wait until it is online.

    Returns:
        Its process.
    """
    started = _spawn_worker(stack, index)
    wait_for_workers(stack, {index: started}, timeout)
    return stack.workers[index]


def flow_run_processes(stack: Stack, index: int) -> dict[str, int]:
    """The flow runs that worker ``index`` is running: flow run id -> pid (from ``/proc``)."""
    info = stack.workers.get(index)
    found: dict[str, int] = {}
    if not is_alive(info):
        return found
    assert info is not None
    for pid in _descendants(info.pid):
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        for item in environ:
            if item.startswith(b"PREFECT__FLOW_RUN_ID="):
                found.setdefault(item.split(b"=", 1)[1].decode(), pid)
    return found


def worker_of_flow_run(stack: Stack, flow_run_id: str) -> int | None:
    """Index of the worker whose subprocess runs ``flow_run_id``, or None."""
    for index in sorted(stack.workers):
        if flow_run_id in flow_run_processes(stack, index):
            return index
    return None


def kill_worker(stack: Stack, index: int, *, flow_runs: bool = True) -> list[int]:
    """SIGKILL worker ``index`` and its flow runs at once, as if its machine died.

    The flow runs are in sessions of their own, so the worker's process group alone would
    miss them: every group of the worker's descendants is stopped (SIGSTOP, so that neither
    the worker nor a flow run can report anything meanwhile), then SIGKILLed.

    Args:
        stack: The stack.
        index: The worker (1..K).
        flow_runs: False: SIGKILL the worker's own process group only. Its flow runs live on
            as orphans (seen with Prefect 3.9.1: one noticed within ~10 s and reported itself
            Crashed, "Execution was cancelled by the runtime environment").

    Returns:
        The pids that were killed (the worker's first).
    """
    info = stack.workers.get(index)
    if not is_alive(info):
        return []
    assert info is not None
    if not flow_runs:
        pids = [info.pid]
        _signal_groups([info.pgid], signal.SIGKILL)
        _wait_groups_gone({info.pgid}, 10)
        return pids
    groups = _groups_of(info)
    _signal_groups(groups, signal.SIGSTOP)
    new_groups = _groups_of(info) - groups  # anything forked in the meantime
    _signal_groups(new_groups, signal.SIGSTOP)
    groups |= new_groups
    pids = [info.pid, *_descendants(info.pid)]
    _signal_groups(groups, signal.SIGKILL)
    _wait_groups_gone(groups, 10)
    return pids


def stop_worker(stack: Stack, index: int, timeout: float = 20.0) -> None:
    """Stop worker ``index`` and its flow runs (SIGTERM, SIGKILL after ``timeout`` s)."""
    _stop_tree(stack.workers.get(index), timeout)


# --------------------------------------------------------------------------------------------
# up / down / status
# --------------------------------------------------------------------------------------------


def up(
    directory: Path | str = DEFAULT_DIR,
    *,
    workers: int = DEFAULT_WORKERS,
    pool: str = DEFAULT_POOL,
    name: str = DEFAULT_NAME,
    api_port: int | None = None,
    pg_port: int | None = None,
    limits: Mapping[str, int] | None = None,
    deploy_names: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    server_env: Mapping[str, str] | None = None,
    zombie_after: int = DEFAULT_ZOMBIE_AFTER,
    heartbeat: int = DEFAULT_HEARTBEAT,
    worker_poll: int = DEFAULT_WORKER_POLL,
    worker_limit: int = DEFAULT_WORKER_LIMIT,
) -> Stack:
    """Bring the whole stack up; on any failure, tear down what was started and raise.

    Args:
        directory: The stack's directory (created; a previous cluster in it is reused).
        workers: Number of workers K.
        pool: Name of the process work pool.
        name: Prefix of the workers' names.
        api_port: Port of the Prefect server (default: a free one).
        pg_port: Port of PostgreSQL (default: a free one).
        limits: Global concurrency limits to create or update (name -> limit).
        deploy_names: Deployments of prefect.yaml to deploy (``"all"`` for all).
        env: Extra environment of the workers and so of their flow runs (e.g.
            ``SEEDREAM_API_KEY``, ``SEEDREAM_BASE_URL``).
        server_env: Extra environment of the Prefect server (e.g. its batch-size settings).
        zombie_after: Seconds without a heartbeat after which a flow run is marked Crashed.
        heartbeat: ``PREFECT_FLOWS_HEARTBEAT_FREQUENCY`` of the workers' flow runs (>= 30).
        worker_poll: ``PREFECT_WORKER_QUERY_SECONDS`` of the workers.
        worker_limit: Most flow runs one worker runs at once (0: no limit).

    Returns:
        The running :class:`Stack` (also saved in ``state.json``).

    Raises:
        StackError: a part failed (the message has the relevant log tail), or the stack in
            ``directory`` runs already.
        ValueError: inconsistent arguments.
    """
    t0 = time.monotonic()
    if workers < 0:
        raise ValueError("workers must be >= 0")
    if heartbeat < MIN_HEARTBEAT:
        raise ValueError(f"heartbeat must be >= {MIN_HEARTBEAT} s (Prefect's minimum)")
    if zombie_after <= heartbeat:
        raise ValueError(f"zombie_after ({zombie_after}) must exceed the heartbeat ({heartbeat})")
    if zombie_after < 2 * heartbeat:
        _log(f"warning: zombie_after {zombie_after} s < 2 x heartbeat: one late heartbeat "
             "crashes a healthy run")  # fmt: skip
    root = Path(directory).resolve()
    previous = load_stack(root)
    if previous is not None:
        if is_alive(previous.server) or any(is_alive(w) for w in previous.workers.values()):
            raise StackError(f"a stack runs in {root} already: run `down` first")
        down(root)  # leftovers of a crashed `up` or machine restart
    root.mkdir(parents=True, exist_ok=True)
    (root / "logs").mkdir(exist_ok=True)

    pg = init_postgres(root, pg_port or free_port())
    stack = Stack(
        dir=root, name=name, pool=pool, api_port=api_port or free_port(), postgres=pg,
        heartbeat_seconds=heartbeat, zombie_after=zombie_after, worker_poll_seconds=worker_poll,
        worker_limit=worker_limit,
        started_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        worker_env=dict(env or {}),
    )  # fmt: skip
    stack.home.mkdir(exist_ok=True)
    with contextlib.suppress(FileExistsError):
        (stack.logs / "postgres.log").symlink_to(pg.log)
    stack.save()
    try:
        if not _port_free(stack.api_port):
            raise StackError(f"port {stack.api_port} is in use")
        start_postgres(pg)
        ensure_database(pg)
        _log(f"PostgreSQL on {LOCALHOST}:{pg.port} ({time.monotonic() - t0:.1f} s)")
        start_server(stack, extra_env=server_env)
        _log(f"server at {stack.ui_url} ({time.monotonic() - t0:.1f} s)")
        ensure_work_pool(stack)
        # Workers boot (5-10 s each) while the remaining set-up runs.
        started = {i: _spawn_worker(stack, i) for i in range(1, workers + 1)}
        register_blocks(stack)
        for limit_name, limit in (limits or {}).items():
            ensure_concurrency_limit(stack, limit_name, limit)
        ensure_zombie_automation(stack)
        deployed = deploy(stack, deploy_names)
        if deployed:
            _log(f"deployed {', '.join(deployed)} ({time.monotonic() - t0:.1f} s)")
        wait_for_workers(stack, started)
        stack.save()
    except BaseException:
        _log("up failed: tearing down what was started (logs are kept in "
             f"{stack.logs})")  # fmt: skip
        down(root)
        raise
    _log(f"up in {time.monotonic() - t0:.1f} s: {workers} workers on pool {pool!r}, "
         f"zombie window {zombie_after} s, UI {stack.ui_url}")  # fmt: skip
    return stack


def down(directory: Path | str = DEFAULT_DIR, *, purge: bool = False, drop_database: bool = False,
         timeout: float = 20.0) -> None:  # fmt: skip
    """Stop workers (with their flow runs), then the server, then PostgreSQL. Idempotent.

    Each process group gets SIGTERM, then SIGKILL after ``timeout`` seconds; PIDs are checked
    against their recorded start time, so a recycled pid is never signalled.

    Args:
        directory: The stack's directory.
        purge: Also delete the directory (and the cluster, wherever it lives).
        drop_database: Delete the PostgreSQL cluster but keep the logs (a throw-away stack).
        timeout: Seconds between SIGTERM and SIGKILL.
    """
    root = Path(directory).resolve()
    stack = load_stack(root)
    if stack is not None:
        for index in sorted(stack.workers):
            stop_worker(stack, index, timeout)
        _stop_tree(stack.server, timeout)
        pg: PostgresInfo | None = stack.postgres
    else:
        pg = _recorded_cluster(root)
    if pg is not None:
        stop_postgres(pg)
    if stack is not None:
        (root / STATE_FILE).unlink(missing_ok=True)
        (root / WORKER_ENV_FILE).unlink(missing_ok=True)
    if (purge or drop_database) and pg is not None:
        log_link = root / "logs" / "postgres.log"
        if drop_database and not purge and log_link.is_symlink() and pg.log.exists():
            log_link.unlink()  # keep PostgreSQL's log with the others
            shutil.copyfile(pg.log, log_link)
        shutil.rmtree(pg.root, ignore_errors=True)
        link = root / "pg"
        if link.is_symlink():
            link.unlink()
    if purge:
        shutil.rmtree(root, ignore_errors=True)


def _recorded_cluster(root: Path) -> PostgresInfo | None:
    """The cluster in ``root`` when no ``state.json`` says where (a crashed `up`)."""
    link = root / "pg"
    data = link.resolve() / "data"
    if not (data / "PG_VERSION").exists():
        return None
    version = (data / "PG_VERSION").read_text().strip()
    bin_dir = Path(f"/usr/lib/postgresql/{version}/bin")
    if not bin_dir.exists():
        found = find_pg_bin()
        if found is None:
            return None
        bin_dir = found
    os_user = "postgres" if os.geteuid() == 0 else None
    return PostgresInfo(str(bin_dir), str(link.resolve()), 0, os_user)


def status(directory: Path | str = DEFAULT_DIR) -> dict[str, Any]:
    """What runs, from ``state.json`` plus live checks.

    Returns:
        ``{"dir", "running", "postgres", "server", "workers", "api_url", ...}``; ``running``
        is True when every part is up (PostgreSQL ready, server healthy, workers online).
    """
    root = Path(directory).resolve()
    stack = load_stack(root)
    if stack is None:
        return {"dir": str(root), "running": False, "message": "no stack (no state.json)"}
    healthy = False
    with contextlib.suppress(Exception):
        healthy = api_request(stack.api_url, "GET", "/health", timeout=3) is not None
    online: dict[str, dict[str, Any]] = {}
    if healthy:
        with contextlib.suppress(Exception):
            online = online_workers(stack)
    pg_ready = postgres_ready(stack.postgres)
    workers = {
        stack.worker_name(i): {
            "pid": w.pid,
            "process": is_alive(w),
            "online": stack.worker_name(i) in online,
            "flow_runs": sorted(flow_run_processes(stack, i)),
            "log": w.log,
        }
        for i, w in sorted(stack.workers.items())
    }
    server_alive = is_alive(stack.server)
    return {
        "dir": str(root),
        "running": pg_ready
        and healthy
        and all(w["online"] and w["process"] for w in workers.values()),
        "api_url": stack.api_url,
        "ui_url": stack.ui_url,
        "pool": stack.pool,
        "postgres": {"ready": pg_ready, "url": stack.postgres.public_url},
        "server": {
            "pid": stack.server.pid if stack.server else None,
            "process": server_alive,
            "healthy": healthy,
        },
        "workers": workers,
        "deployments": stack.deployments,
        "limits": stack.limits,
        "zombie_after": stack.zombie_after,
        "heartbeat_seconds": stack.heartbeat_seconds,
    }


@contextlib.contextmanager
def running_stack(
    directory: Path | str,
    workers: int = DEFAULT_WORKERS,
    *,
    limits: Mapping[str, int] | None = None,
    deploy: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    keep_database: bool = False,
    **kwargs: Any,
) -> Iterator[Stack]:
    """A stack for the duration of a ``with`` block, always torn down at exit.

    Args:
        directory: The stack's directory (e.g. a pytest ``tmp_path`` subfolder).
        workers: Number of workers.
        limits: Global concurrency limits (name -> limit).
        deploy: Deployments of prefect.yaml to deploy (``"all"`` for all).
        env: Extra environment of the workers (and their flow runs).
        keep_database: Keep the PostgreSQL cluster at exit (the logs are always kept).
        **kwargs: More arguments of :func:`up` (``zombie_after``, ``pool``, ...).

    Yields:
        The running :class:`Stack`.
    """
    stack = up(directory, workers=workers, limits=limits, deploy_names=deploy, env=env, **kwargs)
    try:
        yield stack
    finally:
        down(directory, drop_database=not keep_database)


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def _key_values(items: Sequence[str], what: str) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"{what}: expected KEY=VALUE, got {item!r}")
        pairs[key] = value
    return pairs


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m deployments.stack",
        description="PostgreSQL + Prefect server + process work pool + K workers on this machine.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p_up = sub.add_parser("up", help="bring the stack up (prints `export PREFECT_API_URL=...`)")
    p_up.add_argument("--dir", default=DEFAULT_DIR)
    p_up.add_argument("--workers", type=int, default=DEFAULT_WORKERS)
    p_up.add_argument("--pool", default=DEFAULT_POOL)
    p_up.add_argument("--name", default=DEFAULT_NAME, help="workers are NAME-worker-<i>")
    p_up.add_argument("--api-port", type=int)
    p_up.add_argument("--pg-port", type=int)
    p_up.add_argument("--limit", action="append", default=[], metavar="NAME=N",
                      help="global concurrency limit (created or updated)")  # fmt: skip
    p_up.add_argument("--deploy", action="append", default=[], metavar="NAME",
                      help="deployment of deployments/prefect.yaml, or `all`")  # fmt: skip
    p_up.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                      help="environment of the workers and their flow runs")  # fmt: skip
    p_up.add_argument("--server-env", action="append", default=[], metavar="KEY=VALUE",
                      help="environment of the Prefect server")  # fmt: skip
    p_up.add_argument("--zombie-after", type=int, default=DEFAULT_ZOMBIE_AFTER, metavar="SECONDS",
                      help="mark a flow run Crashed after this long without a heartbeat")  # fmt: skip
    p_up.add_argument("--heartbeat", type=int, default=DEFAULT_HEARTBEAT, metavar="SECONDS",
                      help="PREFECT_FLOWS_HEARTBEAT_FREQUENCY of the workers (>= 30)")  # fmt: skip
    p_up.add_argument("--worker-poll", type=int, default=DEFAULT_WORKER_POLL, metavar="SECONDS",
                      help="PREFECT_WORKER_QUERY_SECONDS of the workers")  # fmt: skip
    p_up.add_argument("--worker-limit", type=int, default=DEFAULT_WORKER_LIMIT, metavar="N",
                      help="most flow runs per worker at once (0: no limit; default 1, so that "
                      "a run's shards spread over the workers)")  # fmt: skip
    p_down = sub.add_parser("down", help="stop everything (idempotent)")
    p_down.add_argument("--dir", default=DEFAULT_DIR)
    p_down.add_argument("--purge", action="store_true", help="also delete the directory")
    p_status = sub.add_parser("status", help="what runs (exit 0 when everything is up)")
    p_status.add_argument("--dir", default=DEFAULT_DIR)
    p_status.add_argument("--json", action="store_true")
    return parser


def _print_status(info: Mapping[str, Any]) -> None:
    if "server" not in info:
        print(f"{info['dir']}: {info['message']}")
        return
    yes = {True: "up", False: "DOWN"}
    print(f"stack in {info['dir']}: {'running' if info['running'] else 'NOT fully running'}")
    print(f"  postgres  {yes[info['postgres']['ready']]:4}  {info['postgres']['url']}")
    server = info["server"]
    print(f"  server    {yes[server['healthy']]:4}  {info['ui_url']} (pid {server['pid']})")
    for worker_name, w in info["workers"].items():
        state = "up" if w["online"] and w["process"] else "DOWN"
        runs = f", running {len(w['flow_runs'])} flow runs" if w["flow_runs"] else ""
        print(f"  {worker_name}  {state:4}  pid {w['pid']} on pool {info['pool']}{runs}")
    print(f"  deployments: {', '.join(info['deployments']) or '-'}; limits: {info['limits'] or '-'}; "
          f"zombie window {info['zombie_after']} s (heartbeat {info['heartbeat_seconds']} s)")  # fmt: skip
    print(f"export PREFECT_API_URL={info['api_url']}")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m deployments.stack``; returns the exit code."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "up":
            limits = {k: int(v) for k, v in _key_values(args.limit, "--limit").items()}
            stack = up(
                args.dir, workers=args.workers, pool=args.pool, name=args.name,
                api_port=args.api_port, pg_port=args.pg_port, limits=limits,
                deploy_names=args.deploy, env=_key_values(args.env, "--env"),
                server_env=_key_values(args.server_env, "--server-env"),
                zombie_after=args.zombie_after, heartbeat=args.heartbeat,
                worker_poll=args.worker_poll, worker_limit=args.worker_limit,
            )  # fmt: skip
            print(f"export PREFECT_API_URL={stack.api_url}")
            # Flows run outside the workers must heartbeat as often, or get crashed.
            print(f"export PREFECT_FLOWS_HEARTBEAT_FREQUENCY={stack.heartbeat_seconds}")
            return 0
        if args.command == "down":
            down(args.dir, purge=args.purge)
            _log(f"down ({'purged' if args.purge else 'data kept'}): {Path(args.dir).resolve()}")
            return 0
        info = status(args.dir)
        if args.json:
            print(json.dumps(info, indent=2))
        else:
            _print_status(info)
        return 0 if info["running"] else 1
    except (StackError, ValueError) as exc:
        print(f"stack: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
