"""Stopping a run at the first answer that concerns the account, not the row.

401 (the key is refused), 402 (out of credits, or the key's quota is used up) and 403 (the key
may not use the API, or this model) say nothing about the row that got them: every later
submission of the run would get the same answer, and a run of 10,000 rows would send 10,000
doomed requests. A :class:`SubmissionGate` is shared by every row of a run: the first such
answer closes it (for the account, or for one model), so no row sends a submission after it
(rows whose submissions were already on the wire still get their answers, at most the run's
concurrency of them), rows in flight are still waited for and stored, and the rows not
submitted are recorded ``skipped`` with the API's code and message. The run then ends with one
sentence that names the cause and the fix (:meth:`AccountStop.sentence`), and the same command
finishes the job once the cause is fixed.

A daily quota that renews (402 ``key_daily_quota_exhausted`` with a ``Retry-After``) may
instead pause the gate until it renews, when the run was asked to (``wait_for_quota``).

This module knows no Prefect.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Literal

from pydantic import BaseModel

from prefect_seedream.api.errors import InsufficientQuotaError, SeedreamAPIError

logger = logging.getLogger("prefect_seedream.engine.account")

#: Longest pause for a renewing quota (a longer ``Retry-After`` stops the run instead).
MAX_QUOTA_PAUSE_SECONDS = 24 * 3600.0


class AccountStop(BaseModel):
    """Why a run stopped submitting: the API's answer, and what to do about it.

    Attributes:
        status_code: The HTTP status (401, 402, 403).
        code: The API's code (``insufficient_quota``, ``authentication_error``, ...).
        message: The API's message.
        scope: ``account`` (every model) or ``model`` (only ``model``).
        model: The model refused, for a ``model`` scope.
        action_url: Where the API says to act, if it says.
        renews_in: Seconds until a daily quota renews, when the API says.
        balance: The account's credits, for a run stopped before any submission because its
            estimate is more than that (code ``insufficient_balance``).
        estimate: The credits that run may need.

    Examples:
        >>> stop = AccountStop(status_code=402, code="insufficient_quota", message="No credits")
        >>> print(stop.sentence())
        Stopped: the Evolink account is out of credits (HTTP 402 insufficient_quota: No credits). Top up the account, then run the same command again: stored rows are skipped and nothing is paid twice.
    """

    status_code: int
    code: str
    message: str
    scope: Literal["account", "model"] = "account"
    model: str | None = None
    action_url: str | None = None
    renews_in: float | None = None
    balance: float | None = None
    estimate: float | None = None

    @property
    def before_any_submission(self) -> bool:
        """True for the balance check's stop: nothing was sent, no API answer is quoted."""
        return self.balance is not None and self.estimate is not None

    @classmethod
    def of(cls, error: SeedreamAPIError, model: str | None) -> AccountStop:
        """The stop an account-wide error stands for."""
        scope = error.account_scope or "account"
        renews = isinstance(error, InsufficientQuotaError) and error.renews
        return cls(
            status_code=error.status_code,
            code=error.code,
            message=error.message,
            scope=scope,
            model=model if scope == "model" else None,
            action_url=error.action_url,
            renews_in=error.retry_after if renews else None,
        )

    def cause(self) -> str:
        """What is wrong, in words."""
        if self.before_any_submission:
            return (
                f"the Evolink account holds {self.balance:g} credits, less than the "
                f"{self.estimate:g} this run may need"
            )
        if self.status_code == 401:
            return "the API key was refused"
        if self.status_code == 403:
            if self.scope == "model":
                return f"the API key may not use {self.model}"
            return "the API key is not allowed to use the API"
        if self.code == "key_quota_exhausted":
            return "the API key's credit quota is used up"
        if self.renews_in is not None or self.code.startswith("key_daily"):
            return "the API key's daily quota is used up"
        return "the Evolink account is out of credits"

    def fix(self) -> str:
        """What to do before running the same command again."""
        again = "then run the same command again: stored rows are skipped and nothing is paid twice"
        if self.before_any_submission:
            return (
                f"Top up the account, or run what {self.balance:g} credits pay for with "
                f"--max-credits {self.balance:g} (max_credits={self.balance:g}); {again}."
            )
        if self.status_code == 401:
            return f"Check SEEDREAM_API_KEY (or the credentials block), {again}."
        if self.status_code == 403:
            target = f"{self.model}" if self.scope == "model" else "the API"
            return f"Ask for access to {target} for this key (or use another key), {again}."
        if self.code == "key_quota_exhausted":
            return f"Raise the key's quota or use another key, {again}."
        if self.renews_in is not None:
            return (
                f"It renews in {self.renews_in:.0f} s: run the same command again then, or with "
                "--wait-for-quota (wait_for_quota=True) to wait for it."
            )
        where = f" ({self.action_url})" if self.action_url else ""
        return f"Top up the account{where}, {again}."

    def sentence(self) -> str:
        """One sentence naming the cause and the fix."""
        if self.before_any_submission:
            return f"Stopped before any submission: {self.cause()}. {self.fix()}"
        return (
            f"Stopped: {self.cause()} (HTTP {self.status_code} {self.code}: {self.message}). "
            f"{self.fix()}"
        )

    def skip_message(self) -> str:
        """The manifest message of a row that was not submitted because of this stop."""
        return f"not submitted: {self.cause()} ({self.message}). {self.fix()}"


class SubmissionsStopped(Exception):
    """The gate is closed: no submission may be sent (see :attr:`stop`)."""

    def __init__(self, stop: AccountStop) -> None:
        self.stop = stop
        super().__init__(stop.sentence())


class SubmissionGate:
    """Whether a run may send submissions; closed by the first account-wide answer.

    Args:
        wait_for_quota: Pause (instead of stopping) on a daily quota that renews, for at most
            ``max_pause`` seconds.
        max_pause: Longest pause for a renewing quota.
        on_stop: Called once with the stop when the gate closes (a sharded run records it
            for its other shards).
        peek: Reads a stop that another process of the run recorded (called at most every
            ``peek_every`` seconds).
        peek_every: Seconds between two calls of ``peek``.
        clock: Monotonic seconds (tests move it).

    Examples:
        >>> from prefect_seedream.api.errors import api_error_for_status
        >>> gate = SubmissionGate()
        >>> gate.trip(api_error_for_status(401, "Invalid token"), model="doubao-seedream-4.5")
        True
        >>> try:
        ...     gate.check("doubao-seedream-4.0")
        ... except SubmissionsStopped as stopped:
        ...     print(stopped.stop.code)
        authentication_error
    """

    def __init__(
        self,
        *,
        wait_for_quota: bool = False,
        max_pause: float = MAX_QUOTA_PAUSE_SECONDS,
        on_stop: Callable[[AccountStop], None] | None = None,
        peek: Callable[[], AccountStop | None] | None = None,
        peek_every: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.wait_for_quota = wait_for_quota
        self.max_pause = max_pause
        self.on_stop = on_stop
        self.peek = peek
        self.peek_every = peek_every
        self._peeked_at = float("-inf")
        self.clock = clock
        self.stopped: AccountStop | None = None
        self.stopped_models: dict[str, AccountStop] = {}
        self.paused_until: float | None = None
        self.pauses = 0

    def close(self, stop: AccountStop) -> None:
        """Close the gate before any submission (the balance is below the run's estimate)."""
        if self.stopped is None:
            self.stopped = stop

    def trip(self, error: SeedreamAPIError, model: str | None) -> bool:
        """Close (or pause) the gate for an account-wide answer; False for any other answer.

        The first stop is kept: it is the one the run reports.
        """
        if error.account_scope is None:
            return False
        stop = AccountStop.of(error, model)
        if stop.renews_in is not None and self.wait_for_quota and stop.renews_in <= self.max_pause:
            until = self.clock() + stop.renews_in + 1.0
            if self.paused_until is None or until > self.paused_until:
                self.paused_until = until
                self.pauses += 1
            return True
        if stop.scope == "model" and model is not None:
            self.stopped_models.setdefault(model, stop)
        elif self.stopped is None:
            self.stopped = stop
            if self.on_stop is not None:
                try:
                    self.on_stop(stop)
                except Exception:  # sharing the stop is an aid: this run stops regardless
                    logger.warning("the account stop could not be shared with the other shards", exc_info=True)
        return True

    def stop_for(self, model: str | None) -> AccountStop | None:
        """The stop that keeps a submission of ``model`` from being sent, if any."""
        if self.stopped is None and self.peek is not None:
            now = self.clock()
            if now - self._peeked_at >= self.peek_every:
                self._peeked_at = now
                try:
                    self.stopped = self.peek()
                except Exception:  # the store failed to answer: no stop seen, look again later
                    logger.warning("another shard's account stop could not be read", exc_info=True)
        if self.stopped is not None:
            return self.stopped
        return self.stopped_models.get(model) if model is not None else None

    def pause_left(self) -> float:
        """Seconds left of a quota pause (0 when not paused)."""
        if self.paused_until is None:
            return 0.0
        left = self.paused_until - self.clock()
        if left <= 0:
            self.paused_until = None
            return 0.0
        return left

    def check(self, model: str | None) -> None:
        """Right before a submission is sent: raise if it may not be.

        Raises:
            SubmissionsStopped: the gate is closed for this model.
            SubmissionsPaused: the gate is paused until a quota renews.
        """
        stop = self.stop_for(model)
        if stop is not None:
            raise SubmissionsStopped(stop)
        left = self.pause_left()
        if left > 0:
            raise SubmissionsPaused(left)

    async def wait_open(self, model: str | None) -> None:
        """Wait out a quota pause; raise :class:`SubmissionsStopped` if the gate is closed."""
        while True:
            stop = self.stop_for(model)
            if stop is not None:
                raise SubmissionsStopped(stop)
            left = self.pause_left()
            if left <= 0:
                return
            await asyncio.sleep(min(left, 60.0))

    def report(self) -> AccountStop | None:
        """The stop the run reports: the account's, else the first model's."""
        if self.stopped is not None:
            return self.stopped
        return next(iter(self.stopped_models.values()), None)


class SubmissionsPaused(Exception):
    """The gate is paused until a quota renews; ``seconds`` left."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        super().__init__(f"submissions paused for {seconds:.0f} s until the quota renews")
