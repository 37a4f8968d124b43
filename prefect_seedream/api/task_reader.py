"""One status reader per client: every task in flight read with ``POST /v1/tasks/batch``.

Each wait (:meth:`SeedreamClient.wait`) keeps its own schedule, as before: its first read comes
at the task's ``estimated_time`` (:meth:`PollPolicy.first_delay`), later ones back off from
``min_interval`` to ``max_interval``. What changes is how a read that falls due is made: it is
handed to the client's :class:`TaskStatusReader`, whose single background loop collects every
read due, waits until :data:`~prefect_seedream.api.defaults.BATCH_READ_INTERVAL_SECONDS` after its
previous read, and answers them all with one ``POST /v1/tasks/batch`` per 50 ids.

- How long a read may wait for its round: see :meth:`TaskStatusReader.hold_for` (a task's
  first read, while estimates prove right, only a tenth of the task's age).
- Each wait tells the reader when its next read falls due (:meth:`TaskStatusReader.expect`):
  a round waits (for ``gather``, for ``interval`` since the previous one) only while an
  announced read will fall due in that time, and comes at once when none will: holding it
  would only delay its rows, nobody would join it (a direct call of
  :meth:`TaskStatusReader.read`, never announced, keeps both waits).
- A round with a single read due makes it with ``GET /v1/tasks/{id}``: one request either
  way, on the endpoint every API has (so a lone wait reads exactly as it always did).
- A task missing from a batch answer (not visible yet, expired, a body that does not parse) is
  read alone with ``GET /v1/tasks/{id}``, so a 404 keeps its meaning (the wait's not-found
  grace, then :class:`NotFoundError`).
- A batch endpoint that is missing (404 or 405) switches the reader to one ``GET`` per task
  for the rest of its life, with one log line.
- Any other error of a batch read (after the client's own retries) is given to every wait of
  that batch as the error of its read: it counts against ``max_consecutive_errors`` and its
  Retry-After stretches the next pause, as a failed ``GET`` did.

Status requests per task: the arithmetic
-----------------------------------------
A read costs one request whether it answers 1 task or 50, and the loop makes at most one round
of reads per ``interval`` ``s`` (1 s). A run of ``N`` tasks at concurrency ``C`` that lasts
``W`` seconds therefore makes at most ``ceil(C / 50)`` requests per round and ``W / s`` rounds:

    requests per task <= (W / s) * ceil(C / 50) / N,  with  W ~= N * (D + d) / C

where ``D`` is a task's duration and ``d`` how late its last read comes (up to the pause of its
schedule). For ``N = 200``, ``C = 100``, ``D = 6 s``, ``s = 1 s``:

- a right estimate (6 s): one read per task, at 6 s; ``d ~= s``, ``W ~= 2 * 7 = 14 s``, bound
  ``14 * 2 / 200 = 0.14``; in practice the 100 reads of a wave fall due within a second or two
  and share 2-4 requests: about 0.03.
- a wrong estimate (1 s): reads at 1, 4 and 8.5 s (``min_interval`` 3 s, factor 1.5), three per
  task as before, ``W ~= 2 * 8.5 = 17 s``, bound ``17 * 2 / 200 = 0.17``; each of the three
  reads of a wave is shared by the tasks due in the same second: about 0.1.

Both stay under 0.2 requests per task, against 1.0 and 3.0 with a ``GET`` per read. The bound
grows with ``D / C``: long tasks at low concurrency make more rounds per task, never more
requests than a ``GET`` per read would. Measured (``benchmarks/status_reads.py``, 7 December
2026): 0.03 and 0.09 requests per task, against 1.0 and 3.0. The price could be latency: a
read may wait for its round, up to ``s``, but only while an announced read will join it; there
the mean wait was the same as with a ``GET`` per read (6.07 s and 8.58 s against 6.08 s and
8.57 s). A wait whose own pause is shorter than ``s`` (``PollPolicy.min_interval``) is never
held longer than it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Protocol

from prefect_seedream.api.defaults import (
    BATCH_READ_GATHER_SECONDS,
    BATCH_READ_INTERVAL_SECONDS,
    BATCH_READ_MAX_IDS,
    FIRST_READ_HOLD_FRACTION,
)
from prefect_seedream.api.errors import SeedreamAPIError, SeedreamConnectionError
from prefect_seedream.api.models import GenerationTask

#: Weight of the newest first read in the share of first reads that found the task running.
_UNFINISHED_WEIGHT = 0.1

logger = logging.getLogger("prefect_seedream.api")

#: Statuses of a batch read that mean "this API has no such endpoint".
MISSING_ENDPOINT_STATUSES = frozenset({404, 405})

_Pending = dict[str, list["asyncio.Future[GenerationTask | None]"]]


class TaskSource(Protocol):
    """What a reader reads with: a client's batch read and its single read."""

    async def get_tasks(self, task_ids: Sequence[str]) -> list[GenerationTask]:
        """Read up to 50 tasks in one request (ids it does not know are left out)."""
        ...

    async def get_task(self, task_id: str) -> GenerationTask:
        """Read one task."""
        ...


class TaskStatusReader:
    """Reads the status of every task its client waits for, many tasks per request.

    Create one per client (the client does, see :attr:`SeedreamClient.status_reader`); its
    background loop runs only while reads are pending, on the event loop of the waits, and
    :meth:`aclose` stops it.

    Args:
        source: The client that makes the requests.
        interval: Shortest time in seconds between two rounds of batch reads.
        gather: Seconds a round waits, once a read is due, for others due about then.
        max_ids: Most ids per batch request.

    Examples:
        >>> import asyncio
        >>> from prefect_seedream import GenerationRequest, SeedreamClient
        >>> from prefect_seedream.simulator import SimulatorConfig, running_simulator
        >>> async def main(base_url: str) -> bool:
        ...     async with SeedreamClient(api_key="sk-...", base_url=base_url) as c:
        ...         fox = await c.submit(GenerationRequest(prompt="A red fox"))
        ...         owl = await c.submit(GenerationRequest(prompt="An owl"))
        ...         read = await asyncio.gather(c.status_reader.read(fox.id), c.status_reader.read(owl.id))
        ...         return [task.id for task in read] == [fox.id, owl.id]
        >>> with running_simulator(SimulatorConfig(latency_seconds=5)) as sim:
        ...     asyncio.run(main(sim.base_url)), sim.stats()["batch_requests"]  # read together
        (True, 1)
    """

    def __init__(
        self,
        source: TaskSource,
        *,
        interval: float = BATCH_READ_INTERVAL_SECONDS,
        gather: float = BATCH_READ_GATHER_SECONDS,
        max_ids: int = BATCH_READ_MAX_IDS,
    ) -> None:
        self._source = source
        self.interval = interval
        self.gather = gather
        self.max_ids = max_ids
        self._batch_available = True
        self._pending: _Pending = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None
        self._last_round = -float("inf")
        self._first_due = 0.0
        self._delay_limit = float("inf")
        self._first_reads_unfinished = 0.0
        self._expected: dict[str, float] = {}  # task id -> when its wait's next read falls due
        self._unexpected_pending = 0  # pending reads no wait announced (direct calls of read)

    def hold_for(self, *, first: bool, age: float, longest: float) -> float:
        """How long a read may wait for its round (the ``max_delay`` of :meth:`read`).

        A task's first read comes at its estimate. While estimates prove right (most first
        reads find the task done) it waits at most :data:`FIRST_READ_HOLD_FRACTION` of the
        task's age: holding it longer would only delay the row. Once they prove wrong (most
        first reads find the task still running), and for every later read, it waits up to
        ``longest``: those reads mostly find a task still running, and batch well.

        Examples:
            >>> reader = TaskStatusReader(source=None)  # type: ignore[arg-type]
            >>> reader.hold_for(first=True, age=2.0, longest=3.0)
            0.2
            >>> for _ in range(20):
            ...     reader.note_first_read(finished=False)
            >>> reader.hold_for(first=True, age=2.0, longest=3.0)
            3.0
        """
        if first and self._first_reads_unfinished < 0.5:
            return min(longest, max(self.gather, FIRST_READ_HOLD_FRACTION * age))
        return longest

    def expect(self, task_id: str, at: float) -> None:
        """Announce that a read of ``task_id`` falls due at ``at`` (``time.monotonic()``).

        :meth:`SeedreamClient.wait` calls it before each pause. A round waits only while an
        announced read will fall due before it comes (see :meth:`_pause`). An announced read
        that never comes costs no more than the interval did: :meth:`forget` drops it, and a
        round never waits past its reads' ``max_delay``.
        """
        self._expected[task_id] = at
        if self._pending and self._wake is not None and self._loop is _running_loop():
            self._wake.set()  # the round that is gathering may now fire sooner, or later

    def forget(self, task_id: str) -> None:
        """Drop the announcement of ``task_id`` (its wait ended, or was cancelled)."""
        self._expected.pop(task_id, None)

    def note_first_read(self, *, finished: bool) -> None:
        """Record whether a task's first read found it terminal (estimates right or wrong)."""
        seen = 0.0 if finished else 1.0
        self._first_reads_unfinished += _UNFINISHED_WEIGHT * (seen - self._first_reads_unfinished)

    @property
    def batch_available(self) -> bool:
        """False once the API answered a batch read 404 or 405: one ``GET`` per read since."""
        return self._batch_available

    @property
    def running(self) -> bool:
        """Whether the background loop runs (only while reads are pending)."""
        return self._runner is not None and not self._runner.done()

    async def read(self, task_id: str, *, max_delay: float | None = None) -> GenerationTask:
        """The task's status, read with the next round of batch reads (or alone, see above).

        Args:
            task_id: The task.
            max_delay: Longest time the round may wait (for ``interval`` since the previous
                round, and to gather reads): a wait passes its own shortest pause between
                polls, so that a round never holds a read longer than the wait itself would.

        Raises:
            SeedreamError: the read failed (the batch request's error, or the single ``GET``'s).
        """
        if self._batch_available:
            found = await self._enqueue(task_id, max_delay)
            if found is not None:
                return found
        return await self._source.get_task(task_id)

    async def aclose(self) -> None:
        """Stop the background loop; reads still pending fail with a connection error."""
        runner, self._runner = self._runner, None
        if runner is not None and not runner.done():
            runner.cancel()
            if self._loop is asyncio.get_running_loop():
                await asyncio.gather(runner, return_exceptions=True)
        pending, self._pending = self._pending, {}
        self._unexpected_pending = 0
        closed = SeedreamConnectionError("the client was closed while a task status read was pending")
        for futures in pending.values():
            _settle(futures, error=closed)

    # -- the loop ---------------------------------------------------------------------------

    def _enqueue(
        self, task_id: str, max_delay: float | None
    ) -> asyncio.Future[GenerationTask | None]:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # a new event loop: what the old one waited for is gone
            self._loop, self._pending, self._runner = loop, {}, None
            self._unexpected_pending = 0
            self._wake = asyncio.Event()
        assert self._wake is not None
        if not self._pending:
            self._first_due = time.monotonic()
        if max_delay is not None and max_delay < self._delay_limit:
            self._delay_limit = max_delay
        if self._expected.pop(task_id, None) is None:
            self._unexpected_pending += 1
        self._wake.set()  # the round may have to come sooner (a shorter hold, nobody else coming)
        future: asyncio.Future[GenerationTask | None] = loop.create_future()
        self._pending.setdefault(task_id, []).append(future)
        if self._runner is None or self._runner.done():
            self._runner = loop.create_task(self._run(), name="seedream-task-status-reader")
        return future

    def _pause(self) -> float:
        """Seconds until the next round.

        The round comes ``gather`` after the first pending read fell due, and not before the
        hold (``interval``, capped by the pending reads' ``max_delay``) since the previous
        round. When every pending read was announced (:meth:`expect`), it waits only while an
        announced read will fall due by then, and comes at once when none will: nobody would
        join it. A read never announced (a direct call of :meth:`read`) keeps both waits.
        """
        now = time.monotonic()
        gathered = self._first_due + min(self.gather, self._delay_limit)
        spaced = self._last_round + min(self.interval, self._delay_limit)
        horizon = max(gathered, spaced)
        if self._unexpected_pending:
            return horizon - now
        coming = [at for at in self._expected.values() if now - self.gather < at <= horizon]
        return (min(horizon, max(coming) + self.gather) if coming else now) - now

    async def _run(self) -> None:
        assert self._wake is not None
        while self._pending:
            pause = self._pause()
            if pause > 0:
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), timeout=pause)
                except asyncio.TimeoutError:
                    pass
                continue
            due = self._take_due()
            if not due:
                continue
            self._last_round = time.monotonic()
            if len(due) == 1:  # one request either way: the GET every API has
                _settle(next(iter(due.values())), result=None)
                continue
            ids = list(due)
            chunks = [ids[i : i + self.max_ids] for i in range(0, len(ids), self.max_ids)]
            await asyncio.gather(*(self._read_chunk(chunk, due) for chunk in chunks))

    def _take_due(self) -> _Pending:
        due, self._pending = self._pending, {}
        self._delay_limit = float("inf")
        self._unexpected_pending = 0
        live = {task_id: [f for f in futures if not f.done()] for task_id, futures in due.items()}
        return {task_id: futures for task_id, futures in live.items() if futures}

    async def _read_chunk(self, chunk: list[str], due: _Pending) -> None:
        if not self._batch_available:  # another chunk of this round found no endpoint
            for task_id in chunk:
                _settle(due[task_id], result=None)
            return
        try:
            tasks = await self._source.get_tasks(chunk)
        except SeedreamAPIError as exc:
            if exc.status_code not in MISSING_ENDPOINT_STATUSES:
                for task_id in chunk:
                    _settle(due[task_id], error=exc)
                return
            self._switch_to_single_reads(exc.status_code)
            tasks = []
        except Exception as exc:  # noqa: BLE001 - any failure is each waiter's read error
            for task_id in chunk:
                _settle(due[task_id], error=exc)
            return
        found = {task.id: task for task in tasks}
        for task_id in chunk:
            _settle(due[task_id], result=found.get(task_id))  # None: read it alone

    def _switch_to_single_reads(self, status: int) -> None:
        if self._batch_available:
            self._batch_available = False
            logger.warning(
                "POST /v1/tasks/batch answered %d: this API reads no tasks in batches; "
                "reading each task with GET /v1/tasks/{id} from now on",
                status,
            )


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _settle(
    futures: list[asyncio.Future[GenerationTask | None]],
    *,
    result: GenerationTask | None = None,
    error: BaseException | None = None,
) -> None:
    """Answer the waits of one task (those cancelled meanwhile are skipped)."""
    for future in futures:
        if future.done():
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)
