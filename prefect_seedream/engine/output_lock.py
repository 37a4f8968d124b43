"""One live run per output: a second run on a held output fails fast, before any submission.

Two runs writing the same output at once could race on a row's ledger file and pay twice.
The run that owns an output holds its lock from before its first submission to after its
manifest is written; the shards of a sharded run work under their parent's lock.

* **Local folders** use a kernel lock (``flock``) on ``.seedream/lock``: it is released the
  instant the holding process dies, even by SIGKILL, so a killed run never blocks the next.
  The file also names the holder (run id, host, pid) for the error message. (On network
  file systems ``flock`` is only as good as the NFS/SMB server's lock support.)
* **Object stores and other fsspec file systems** (``s3://``, ...) have no kernel lock: the
  run creates a lease file ``.seedream/lock.d/<generation>.json`` with a conditional write
  (S3: ``If-None-Match: *``, which only one writer can win) and renews it every
  ``LOCK_HEARTBEAT_SECONDS``. A lease not renewed for ``LOCK_TTL_SECONDS`` (its run was
  killed) may be taken over by the next run, which creates the next generation, again
  conditionally. A holder that finds a newer generation has lost the lock and stops.
  A store whose fsspec implementation cannot create a file exclusively gets a clear error
  (``NotImplementedError``) rather than a lock that only looks like one; there is no way
  to run without the lock.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import time
from dataclasses import dataclass
from typing import IO

from prefect_seedream.engine.defaults import LOCK_HEARTBEAT_SECONDS, LOCK_TTL_SECONDS
from prefect_seedream.engine.storage import PRIVATE_DIR, ImageStore

LOCK_FILE = f"{PRIVATE_DIR}/lock"
LEASE_DIR = f"{PRIVATE_DIR}/lock.d"


class OutputLockedError(RuntimeError):
    """Another live run holds the output."""


@dataclass(frozen=True)
class LockHolder:
    """Who holds an output.

    Attributes:
        run_id: The holding run's id (a flow run id).
        host: The holder's host name.
        pid: The holder's process id.
        since: When it took the lock (epoch seconds).
        heartbeat: When it last said it is alive (epoch seconds; leases only).
    """

    run_id: str
    host: str
    pid: int
    since: float
    heartbeat: float

    @classmethod
    def me(cls, run_id: str) -> LockHolder:
        """This process, holding for ``run_id``."""
        now = time.time()
        return cls(run_id=run_id, host=socket.gethostname(), pid=os.getpid(), since=now, heartbeat=now)

    def to_json(self) -> str:
        return json.dumps(self.__dict__)

    @classmethod
    def from_json(cls, text: str) -> LockHolder | None:
        try:
            return cls(**json.loads(text))
        except (ValueError, TypeError):
            return None

    def describe(self) -> str:
        return (
            f"run {self.run_id} on {self.host} (pid {self.pid}), since "
            f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(self.since))}"
        )


class OutputLock:
    """The lock of one output, held by one run.

    Args:
        store: The output.
        run_id: The run taking it.
        ttl: Lease life without a heartbeat (object stores).
        heartbeat: Seconds between heartbeats (object stores).

    Examples:
        >>> import asyncio, tempfile
        >>> store = ImageStore(tempfile.mkdtemp())
        >>> async def two_runs() -> str:
        ...     async with OutputLock(store, run_id="run-1"):  # the only live run on the output
        ...         try:
        ...             async with OutputLock(store, run_id="run-2"):
        ...                 return "both ran"
        ...         except OutputLockedError as refused:
        ...             return str(refused)
        >>> print(asyncio.run(two_runs()))
        output ... is in use by run run-1 on ... (pid ...), since ...: two runs on one output could pay twice for a row. Wait for it to end, or use another --output.
    """

    def __init__(
        self, store: ImageStore, run_id: str, *, ttl: float = LOCK_TTL_SECONDS,
        heartbeat: float = LOCK_HEARTBEAT_SECONDS,
    ) -> None:
        self.store = store
        self.holder = LockHolder.me(run_id)
        self.ttl = ttl
        self.heartbeat_every = heartbeat
        self._handle: IO[str] | None = None
        self._generation: int | None = None
        self._heartbeat: asyncio.Task[None] | None = None
        self.lost = False

    async def __aenter__(self) -> OutputLock:
        await asyncio.to_thread(self.acquire)
        if not self.store.is_local:
            self._heartbeat = asyncio.create_task(self._beat())
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            # A renewal already running in its thread finishes first: it must not write the
            # lease again after the release.
            await asyncio.gather(self._heartbeat, return_exceptions=True)
        await asyncio.to_thread(self.release)

    def acquire(self) -> None:
        """Take the lock, or raise :class:`OutputLockedError` naming its live holder."""
        if self.store.is_local:
            self._acquire_flock()
        else:
            self._acquire_lease()

    def release(self) -> None:
        """Give the lock back (a no-op when not held)."""
        if self._handle is not None:
            import fcntl

            self._handle.seek(0)
            self._handle.truncate()
            fcntl.flock(self._handle, fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None
        if self._generation is not None:
            generation, self._generation = self._generation, None
            if self.lost:
                return  # another run may hold it now: its lease is not ours to delete
            text = self.store.read_text(self._lease_name(generation))
            holder = LockHolder.from_json(text) if text else None
            if holder is not None and holder.run_id == self.holder.run_id:
                self.store.remove(self._lease_name(generation))

    # -- local folders: flock -------------------------------------------------------------------

    def _acquire_flock(self) -> None:
        import fcntl

        path = self.store.path_for(LOCK_FILE)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        handle = open(path, "a+", encoding="utf-8")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = LockHolder.from_json(handle.read())
            handle.close()
            raise OutputLockedError(self._message(holder)) from None
        handle.seek(0)
        handle.truncate()
        handle.write(self.holder.to_json())
        handle.flush()
        self._handle = handle

    # -- object stores: leases by generation ---------------------------------------------------------

    def _lease_name(self, generation: int) -> str:
        return f"{LEASE_DIR}/{generation:012d}.json"

    def _newest(self) -> tuple[int, LockHolder | None]:
        names = [path.rsplit("/", 1)[-1] for path in self.store.list(LEASE_DIR)]
        generations = sorted(int(name[:-5]) for name in names if name.endswith(".json") and name[:-5].isdigit())
        if not generations:
            return 0, None
        newest = generations[-1]
        text = self.store.read_text(self._lease_name(newest))
        return newest, LockHolder.from_json(text) if text else None

    def _acquire_lease(self) -> None:
        for _ in range(5):  # another run may win a generation between our read and write
            newest, holder = self._newest()
            if holder is not None and time.time() - holder.heartbeat < self.ttl:
                raise OutputLockedError(self._message(holder))
            candidate = newest + 1
            if self.store.create_exclusive(self._lease_name(candidate), self.holder.to_json()):
                self._generation = candidate
                if newest:
                    self.store.remove(self._lease_name(newest))  # the stale lease it replaces
                return
        raise OutputLockedError(f"{self.store.destination} is being taken by other runs; try again")

    async def _beat(self) -> None:
        renewed_at = time.time()
        while not self.lost:
            await asyncio.sleep(self.heartbeat_every)
            try:
                await asyncio.to_thread(self._renew)
                renewed_at = time.time()
            except OutputLockedError:
                self.lost = True  # the run stops before its next batch (see `check`)
            except Exception as exc:  # a store error: the lease lives on until its TTL...
                logging.getLogger("prefect_seedream").warning(
                    "could not renew the lock of %s: %s", self.store.destination, exc
                )
                # ...but another run may take it once the TTL is near: stop before that.
                if time.time() - renewed_at > self.ttl - 2 * self.heartbeat_every:
                    self.lost = True

    def check(self) -> None:
        """Raise :class:`OutputLockedError` if another run took the lock over meanwhile."""
        if self.lost:
            raise OutputLockedError(f"the lock of {self.store.destination} was taken over by another run")

    def _renew(self) -> None:
        assert self._generation is not None
        newest, holder = self._newest()
        if newest != self._generation or holder is None or holder.run_id != self.holder.run_id:
            self.lost = True
            raise OutputLockedError(f"the lock of {self.store.destination} was taken over by another run")
        renewed = LockHolder(**{**self.holder.__dict__, "heartbeat": time.time()})
        self.store.write_text(self._lease_name(self._generation), renewed.to_json())

    def _message(self, holder: LockHolder | None) -> str:
        who = holder.describe() if holder else "another run"
        text = f"output {self.store.destination} is in use by {who}: two runs on one output could pay twice for a row"
        if not self.store.is_local and holder is not None:
            left = max(0.0, self.ttl - (time.time() - holder.heartbeat))
            text += f"; if that run is gone, its lock lapses in {left:.0f} s"
        return text + ". Wait for it to end, or use another --output."


def current_holder(store: ImageStore) -> LockHolder | None:
    """The live holder of an output, or None (for shards checking their parent)."""
    if not store.is_local:
        holder = OutputLock(store, run_id="")._newest()[1]
        return holder if holder and time.time() - holder.heartbeat < LOCK_TTL_SECONDS else None
    import fcntl

    try:
        handle = open(store.path_for(LOCK_FILE), encoding="utf-8")
    except FileNotFoundError:
        return None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:  # held: by a live process
            return LockHolder.from_json(handle.read())
        fcntl.flock(handle, fcntl.LOCK_UN)  # nobody alive holds it
        return None


def check_held_by(store: ImageStore, run_id: str) -> None:
    """Raise unless ``run_id`` holds the output (a shard works under its parent's lock)."""
    holder = current_holder(store)
    if holder is None or holder.run_id != run_id:
        who = holder.describe() if holder else "nobody"
        raise OutputLockedError(
            f"this shard belongs to run {run_id}, but output {store.destination} is held by {who}; "
            "run the parent flow again instead of this shard alone"
        )

