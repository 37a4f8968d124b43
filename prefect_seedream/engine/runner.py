"""Runs the rows of a dataset run, one coroutine per row: budget, concurrency, retries, outcome.

A row costs no Prefect task run, event or INFO line of its own: its steps are plain calls
(:func:`prefect_seedream.engine.generation.generate_recorded`), its retries an ``asyncio.sleep``
that gives its concurrency slot back meanwhile, its failure one WARNING line (for the first
``FAILURES_LOGGED`` of a run) and, when ``row_events`` asks for it, one event. Every outcome,
a bug included, becomes the row's manifest line: nothing is silently lost.

An answer that concerns the whole account (401, 402, 403) closes the run's
:class:`~prefect_seedream.engine.account.SubmissionGate`: no row submits after it, and the rows that
did not are ``skipped`` with the API's code and message.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import partial
from typing import Any, Protocol

from prefect_seedream.api.client import SeedreamClient
from prefect_seedream.api.errors import (
    SeedreamAPIError,
    SeedreamError,
    SubmissionOutcomeUnknownError,
    TaskFailedError,
)
from prefect_seedream.engine.account import SubmissionGate, SubmissionsPaused, SubmissionsStopped
from prefect_seedream.engine.budget import CreditBudget
from prefect_seedream.engine.dataset import DatasetRow, InvalidRow, ValidRow
from prefect_seedream.engine.defaults import FAILURES_LOGGED, RETRY_JITTER_FACTOR, RowEvents
from prefect_seedream.engine.gallery import Gallery
from prefect_seedream.engine.generation import (
    GenerationOptions,
    StepReporter,
    SubmissionPolicy,
    generate_recorded,
    next_step_of,
)
from prefect_seedream.engine.ledger import Charge, LedgerRecord, LedgerState, NextStep, TaskLedger
from prefect_seedream.engine.lines import invalid_line, line_for, line_from_record
from prefect_seedream.engine.listener import NO_LISTENER, RunListener
from prefect_seedream.engine.manifest import ManifestError, RunLine
from prefect_seedream.engine.output_lock import OutputLockedError
from prefect_seedream.engine.reconcile import TaskListIndex


@dataclass(frozen=True)
class RetryOptions:
    """How a row is retried after a failure worth retrying (429, 5xx, service-side failure).

    Attributes:
        retries: Retries after the first attempt.
        delay_seconds: First delay; doubled at each retry.
        jitter_factor: Each delay is multiplied by a random factor in [1 - f, 1 + f].
    """

    retries: int = 0
    delay_seconds: float = 0.0
    jitter_factor: float = RETRY_JITTER_FACTOR

    def delay(self, retry: int, error: SeedreamError) -> float:
        """Seconds before retry number ``retry`` (1-based); never less than the API asked."""
        base = self.delay_seconds * 2 ** (retry - 1)
        jittered = base * random.uniform(1 - self.jitter_factor, 1 + self.jitter_factor)
        hint = error.retry_after if isinstance(error, SeedreamAPIError) else None
        return max(jittered, hint or 0.0)


def is_worth_retrying(error: SeedreamError) -> bool:
    """Whether another attempt at the row may succeed and cannot pay twice."""
    return error.retryable and not isinstance(error, SubmissionOutcomeUnknownError)


#: Seconds after a lost answer before the row's task is looked for in the API's task list.
LOOKUP_DELAY_SECONDS = 1.0


class Slots(Protocol):
    """Slots of a concurrency limit shared beyond this process (the Prefect layer's
    :class:`~prefect_seedream.engine.slot_pool.SlotPool` leases them, from a Prefect global
    concurrency limit in the Prefect layer)."""

    def slot(self) -> AbstractAsyncContextManager[None]:
        """Hold one slot until the block ends."""
        ...


class RowLimiter:
    """At most ``max_concurrency`` generations in flight at the API from this process (from
    the submission to the task seen terminal; downloading needs none), and, optionally, one
    slot of a global concurrency limit per generation (shared by every run and worker).

    Examples:
        >>> import asyncio
        >>> async def five_rows(limiter: RowLimiter) -> int:
        ...     running, most = set(), 0
        ...     async def row(number: int) -> None:
        ...         nonlocal most
        ...         async with limiter.hold():  # from the submission to the task seen terminal
        ...             running.add(number)
        ...             most = max(most, len(running))
        ...             await asyncio.sleep(0.01)
        ...             running.discard(number)
        ...     await asyncio.gather(*(row(number) for number in range(5)))
        ...     return most
        >>> asyncio.run(five_rows(RowLimiter(2)))
        2
    """

    def __init__(self, max_concurrency: int, slots: Slots | None = None) -> None:
        self._semaphore = asyncio.Semaphore(max_concurrency)
        self.slots = slots

    @asynccontextmanager
    async def hold(self) -> AsyncIterator[AsyncExitStack]:
        """Hold the right to have one generation in flight, until the block ends or the
        yielded stack's ``aclose()`` gives it back earlier (the task is terminal)."""
        async with AsyncExitStack() as stack:
            await stack.enter_async_context(self._semaphore)
            if self.slots is not None:
                await stack.enter_async_context(self.slots.slot())
            yield stack


class FailureLog:
    """Logs failed rows one by one up to a cap, then only counts them.

    Examples:
        >>> import logging
        >>> log = FailureLog(limit=1)
        >>> log.limit, log.unlogged
        (1, 0)
    """

    def __init__(self, limit: int = FAILURES_LOGGED) -> None:
        self.limit = limit
        self.logged = 0
        self.unlogged = 0

    def record(self, logger: logging.Logger | logging.LoggerAdapter[Any], item: RunLine) -> None:
        """Log a row that did not succeed (or count it, past the cap)."""
        line = item.line
        if line.status == "succeeded":
            return
        if self.logged >= self.limit:
            self.unlogged += 1
            return
        self.logged += 1
        error = line.error or ManifestError(code=line.status, message="")
        task = f" (task {line.task_id})" if line.task_id else ""
        logger.warning(
            "Row %s (line %d) %s%s: %s: %s",
            line.row_id, line.row_number, line.status.replace("_", " "), task, error.code, error.message,
        )


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class RowClock:
    """When a row started (it first held a concurrency slot) and how long it took since."""

    def __init__(self) -> None:
        self.started: float | None = None
        self.started_at: str | None = None

    def start(self) -> None:
        """Mark the start, the first time only (a retry does not restart the clock)."""
        if self.started is None:
            self.started, self.started_at = time.monotonic(), _now()

    def fields(self) -> dict[str, Any]:
        """The manifest line's ``started_at``, ``finished_at`` and ``duration_seconds``."""
        if self.started is None:
            return {}
        return {
            "started_at": self.started_at,
            "finished_at": _now(),
            "duration_seconds": round(time.monotonic() - self.started, 3),
        }


@dataclass
class _Reservation:
    """A row's credits: what its submission pre-charges, and what it has reserved of the budget."""

    budget: CreditBudget
    wanted: float
    amount: float = 0.0

    def ensure(self) -> None:
        """Before a submission: reserve, unless done already (a re-attached row reserved
        nothing, and must now submit after all); raises :class:`_OverBudget`."""
        if self.amount == 0.0:
            if not self.budget.try_reserve(self.wanted):
                raise _OverBudget()
            self.amount = self.wanted


class _OverBudget(Exception):
    """The budget cannot take the reservation of a submission about to be sent."""


def _message_of(error: SeedreamError) -> str:
    """The API's own message (and suggestion) for an API answer, else the error's text."""
    return error.detail if isinstance(error, SeedreamAPIError) else str(error)


class RowRunner:
    """Runs rows: the ledger decides what a row needs, the budget and the limiter whether
    it may go, retries are local, and the outcome is a :class:`RunLine`.

    Args:
        ledger: The output's ledger (its store receives the images).
        client: The API client shared by every row.
        budget: The run's credit budget.
        limiter: Concurrency of this run (and a global limit's slots).
        generation: Wait and resubmission options.
        retry: Row retries.
        row_events: Which ``seedream.generation.*`` events rows emit.
        gallery: Thumbnails for the gallery artifact (made for its first images only).
        listener: Receives the rows' ``seedream.generation.*`` events.
        run_id: The run (a sharded run's parent): its submissions' charges are its own.
        gate: Closed by the first account-wide answer (see :mod:`prefect_seedream.engine.account`).
        finder: Looks up the tasks of submissions whose outcome is unknown.
        on_row: Called with each finished row (progress).
        guard: Called before a row's first submission; raises
            :class:`~prefect_seedream.engine.output_lock.OutputLockedError` when the run lost its
            output's lock (the row is then skipped, never submitted).
    """

    def __init__(
        self,
        *,
        ledger: TaskLedger,
        client: SeedreamClient,
        budget: CreditBudget,
        limiter: RowLimiter,
        generation: GenerationOptions,
        retry: RetryOptions,
        row_events: RowEvents,
        gallery: Gallery,
        run_id: str,
        gate: SubmissionGate | None = None,
        finder: TaskListIndex | None = None,
        on_row: Callable[[RunLine], None] = lambda item: None,
        guard: Callable[[], None] = lambda: None,
        listener: RunListener = NO_LISTENER,
    ) -> None:
        self.listener = listener
        self.guard = guard
        self.ledger = ledger
        self.client = client
        self.budget = budget
        self.run_id = run_id
        self.gate = gate or SubmissionGate()
        self.finder = finder
        self.limiter = limiter
        self.generation = generation
        self.retry = retry
        self.row_events = row_events
        self.gallery = gallery
        self.on_row = on_row
        self.failures = FailureLog()

    def reporter_for(
        self, logger: logging.Logger | logging.LoggerAdapter[Any], *, verbose: bool
    ) -> StepReporter:
        """How rows report to a task run's logger: each step at INFO when ``verbose`` (a task
        run of one row), at DEBUG otherwise; failures are logged by the runner, capped."""
        return StepReporter(
            logger, level=logging.INFO if verbose else logging.DEBUG,
            failure_level=logging.DEBUG, events=self.row_events, on_submitted=self.budget.learn,
            listener=self.listener,
        )

    async def run(self, row: DatasetRow, reporter: StepReporter) -> RunLine:
        """Run one row to its outcome; never raises for a row's own failure."""
        item = await self._outcome(row, reporter)
        self.failures.record(reporter.logger, item)
        self.on_row(item)
        return item

    async def _outcome(self, row: DatasetRow, reporter: StepReporter) -> RunLine:
        if isinstance(row, InvalidRow):
            return RunLine(line=invalid_line(row))
        try:
            record = await self.ledger.arecord_for(row.row_id, row.request)
            step = await self.ledger.store.call(partial(
                next_step_of, record, self.ledger.store, resubmit_unknown=self.generation.resubmit_unknown
            ))
        except Exception as exc:  # a corrupt record, a store that failed: never guess, never pay
            logging.getLogger("prefect_seedream").exception("row %s: its ledger record cannot be read", row.row_id)
            error = ManifestError(code="ledger_unreadable", message=f"{type(exc).__name__}: {exc}")
            return RunLine(line=line_for(row, "failed", error=error))
        settled = self._settled_outcome(row, record, step)
        if settled is not None:
            return settled
        # Reserved when the row gets its slot, not while it is queued: rows queued in later
        # batches must not take the budget from rows that will run first. A row that
        # re-attaches reserves nothing, unless it must submit after all (its task is gone).
        reservation = _Reservation(self.budget, wanted=self.budget.estimate(row.request))
        if step is NextStep.SUBMIT:
            reservation.amount = reservation.wanted
        return await self._attempted_outcome(row, record, reporter, reservation, will_submit=step is NextStep.SUBMIT)

    def _settled_outcome(self, row: ValidRow, record: LedgerRecord, step: NextStep) -> RunLine | None:
        """The outcome of a row that needs no attempt (stored, or refused without one)."""
        if step is NextStep.REUSE:  # stored already: no API call, nothing paid now
            # Stored by an earlier attempt of this run (a shard restarted after its worker
            # died), the row's charge is still this run's; stored by an earlier run, it is not.
            charge = record.charge_for(self.run_id)
            line = line_from_record(row, record, reused=record.run_id != self.run_id)
            return RunLine(line=line, spent=charge.spent, at_risk=charge.at_risk, stored=record.images)
        if step is NextStep.REFUSE_UNKNOWN and self.finder is not None:
            return None  # unless its task is found, generate_recorded refuses it
        if step in (NextStep.REFUSE_UNKNOWN, NextStep.REPEAT_FAILURE):
            # An unknown outcome may have been billed: its reservation counts against the budget.
            at_risk = record.charge().at_risk
            self.budget.settle(reserved=0.0, spent=at_risk)
            return RunLine(line=line_from_record(row, record), at_risk=at_risk)
        return None

    async def _attempted_outcome(
        self, row: ValidRow, record: LedgerRecord, reporter: StepReporter,
        reservation: _Reservation, *, will_submit: bool,
    ) -> RunLine:
        """Attempt the row and settle its charge with the budget, whatever the outcome."""
        clock = RowClock()
        try:
            await self._attempts(row, record, reporter, clock, reservation, will_submit=will_submit)
        except OutputLockedError as exc:  # another run holds the output now: submit nothing
            error = ManifestError(code="output_lock_lost", message=str(exc))
            return RunLine(line=line_for(row, "skipped", error=error))
        except _OverBudget:
            if record.outcome_unknown:  # an earlier submission may still have been billed
                return RunLine(line=line_from_record(row, record), at_risk=record.charge().at_risk)
            message = (
                f"reserving {reservation.wanted:g} credits would pass max_credits={self.budget.limit:g} "
                f"({self.budget.spent:g} spent, {self.budget.reserved:g} reserved)"
            )
            return RunLine(line=line_for(row, "skipped", error=ManifestError(code="budget_exceeded", message=message)))
        except SubmissionsStopped as stopped:  # the account refuses every submission: not sent
            if record.outcome_unknown:  # an earlier submission may still have been billed
                return RunLine(line=line_from_record(row, record), at_risk=record.charge().at_risk)
            error = ManifestError(code=stopped.stop.code, message=stopped.stop.skip_message())
            return RunLine(line=line_for(row, "skipped", error=error))
        finally:
            charge = self._settle(row, record, clock, reservation)
        line = line_from_record(row, record, **clock.fields())
        if line.status == "succeeded":
            for image in record.images:
                self.gallery.add(row.row_id, image)
        return RunLine(line=line, spent=charge.spent, at_risk=charge.at_risk, stored=record.images)

    def _settle(self, row: ValidRow, record: LedgerRecord, clock: RowClock, reservation: _Reservation) -> Charge:
        """The row's charge to this run, settled with the budget (its reservation given back)."""
        charge = record.charge_for(self.run_id)
        if record.outcome_unknown and charge.total == 0.0:
            # An earlier run's submission of unknown outcome may have been billed: its
            # reservation counts against this run's budget.
            charge = Charge(at_risk=record.charge().at_risk)
        if clock.started is not None:
            self.budget.settle(reserved=reservation.amount, spent=charge.total)
            self.budget.learn_charge(row.request, charge.spent)
        return charge

    async def _attempts(
        self, row: ValidRow, record: LedgerRecord, reporter: StepReporter, clock: RowClock,
        reservation: _Reservation, *, will_submit: bool,
    ) -> None:
        """Attempt the row, retrying what is worth it; the outcome is left in the record.

        Raises:
            _OverBudget: the budget could not take the row's reservation (nothing was sent).
            SubmissionsStopped: the account refuses submissions (nothing was sent).
        """
        model = row.request.model
        retry = 0
        while True:
            if will_submit:
                await self.gate.wait_open(model)  # a renewing quota's pause holds no slot
            delay: float | None = 0.0
            async with self.limiter.hold() as slot:
                if clock.started is None:
                    self.guard()
                    # A row that re-attaches reserves nothing: the budget never stops it
                    # (its task is paid for already, and only collecting it is left).
                    if reservation.amount > 0 and not self.budget.try_reserve(reservation.amount):
                        raise _OverBudget()
                    clock.start()
                while True:
                    try:
                        policy = _RowPolicy(self, model, reservation, slot)
                        delay = await self._attempt(row, record, reporter, policy, retry)
                    except SubmissionsPaused:
                        will_submit, delay = True, 0.0
                        break  # give the slot back and wait for the quota (not a retry)
                    if delay is None:
                        return
                    retry += 1
                    if record.state is not LedgerState.SUBMITTED and not record.outcome_unknown:
                        break  # nothing of the row is in flight at the API: give the slot back
                    # Its task is still running (the polls failed), or may be (its answer was
                    # lost, the task list is looked at in a moment): it keeps its slot, or the
                    # API would see more than the limit.
                    await asyncio.sleep(delay)
            will_submit = self._will_submit(record)
            await asyncio.sleep(delay)

    def _will_submit(self, record: LedgerRecord) -> bool:
        """Whether the row's next attempt sends a submission (the gate matters to it)."""
        step = record.next_step(images_present=False, resubmit_unknown=self.generation.resubmit_unknown)
        return step is NextStep.SUBMIT

    async def _attempt(
        self, row: ValidRow, record: LedgerRecord, reporter: StepReporter, policy: _RowPolicy,
        retry: int,
    ) -> float | None:
        """One attempt; returns the delay before the next one, or None when the row is done
        (its outcome, success or not, is in the record)."""
        try:
            await generate_recorded(
                record, row.request, client=self.client, ledger=self.ledger,
                options=self.generation, reporter=reporter,
                thumbnails=self.gallery.wants_more(), policy=policy,
            )
            return None
        except (_OverBudget, SubmissionsStopped, SubmissionsPaused):
            raise
        except SeedreamError as exc:
            if isinstance(exc, SeedreamAPIError) and self.gate.trip(exc, row.request.model):
                if record.stopped and self.gate.pause_left() > 0:
                    raise SubmissionsPaused(self.gate.pause_left()) from None  # submit again then
                record.note_error(exc.code, exc.detail)
                return None  # the account refuses it: the row is skipped (or in flight)
            if not isinstance(exc, (TaskFailedError, SubmissionOutcomeUnknownError)):
                record.note_error(exc.code, _message_of(exc))  # else the transition said why
            if (
                isinstance(exc, SubmissionOutcomeUnknownError) and self.finder and not exc.looked_up
                and (not self.generation.resubmit_unknown or retry < self.retry.retries)
            ):
                # The answer was lost: look for the task in the API's task list, in a moment
                # (found, the row re-attaches; else it stays unknown, or with resubmit_unknown
                # is sent again with its key: that counts as one of the row's retries).
                return LOOKUP_DELAY_SECONDS
            if not is_worth_retrying(exc) or retry >= self.retry.retries:
                return None
            return self.retry.delay(retry + 1, exc)
        except Exception as exc:  # a bug must not lose the row: record it and go on
            logging.getLogger("prefect_seedream").exception("row %s: unexpected error", row.row_id)
            record.note_error("internal_error", f"{type(exc).__name__}: {exc}")
            return None


class _RowPolicy(SubmissionPolicy):
    """A dataset row's submission policy: the account gate and the budget before submitting,
    the gate again right before sending, its slot given back once the task is terminal."""

    def __init__(self, runner: RowRunner, model: str, reservation: _Reservation, slot: AsyncExitStack) -> None:
        super().__init__(run_id=runner.run_id, finder=runner.finder)
        self.gate = runner.gate
        self.model = model
        self.reservation = reservation
        self.slot = slot

    async def before_submit(self) -> None:
        self.gate.check(self.model)  # within one round trip of an account-wide answer
        self.reservation.ensure()

    def before_send(self) -> None:
        self.gate.check(self.model)

    async def on_terminal(self) -> None:
        await self.slot.aclose()  # downloading holds no slot: the next row goes
