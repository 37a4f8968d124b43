"""Credits of the simulated account: reservations, final charges, the balance and key quotas.

Every task is charged its reservation (``credits_per_image * n``) from its creation until it is
terminal, then its final charge (``credits_per_image`` per generated image when completed, 0
when failed or cancelled: refunded). The :class:`Account` keeps running sums of these charges:
:meth:`Account.open` adds a reservation when a task is created, and the state calls
:meth:`Account.settle` once, when the task becomes terminal (it keeps a heap of finish times),
to replace the reservation by the final charge. Each event costs O(1), so a check before a
submit never scans the tasks.

Three limits, all optional (``None`` is unlimited), refuse a submit with 402 and a string code
(see :meth:`Account.refusal`):

| limit | config | code |
|---|---|---|
| the account's balance, shared by every key | ``account_credits`` | ``insufficient_quota`` |
| the lifetime charges of one key | ``key_quota_credits`` | ``key_quota_exhausted`` |
| the charges of one key's tasks created in its current window | ``daily_quota_credits``, ``quota_window_seconds`` | ``key_daily_quota_exhausted`` (with ``Retry-After``) |

A key's window starts at its first accepted submission and restarts every
``quota_window_seconds``. ``reset_quotas`` (``POST /_sim/account``) forgets the usage of both
key limits: tasks reserved before it no longer count toward them, even when they settle later.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from .config import PriceList, SimulatorConfig
from .errors import SimulatorHTTPError, quota_error

#: Credits per generated image as Evolink publishes them today (``evolink-api.md`` section 6,
#: read December 2026): the same at every size and quality. 4.0, 4.5 and 5.0-lite are the
#: published figures. No Evolink price was found for the 5.0 pro/flash models, so these are
#: assumptions: Evolink's lite price (2.2 credits for $0.032, about 68.75 credits per dollar)
#: applied to the list prices other gateways show (flash $0.018 -> 1.25; pro $0.09 at 2K ->
#: 6.2). Layerize is billed per output image (the base and each layer), at its parent's price.
#: Web search (``model_params.tools``) is charged by Evolink per search; not simulated.
CREDITS_PER_IMAGE: dict[str, float] = {
    "doubao-seedream-4.0": 1.5,
    "doubao-seedream-4.5": 2.5,
    "doubao-seedream-5.0-lite": 2.2,
    "doubao-seedream-5.0-pro": 6.2,
    "doubao-seedream-5.0-flash": 1.25,
    "doubao-seedream-5.0-pro-layerize": 6.2,
    "doubao-seedream-5.0-flash-layerize": 1.25,
}

#: Prices of the seed pages and section 1 of the contract, where they differ from
#: :data:`CREDITS_PER_IMAGE` (4.5 was 2 credits). ``SimulatorConfig.price_list`` picks one.
SEED_PAGE_CREDITS: dict[str, float] = {"doubao-seedream-4.5": 2.0}


def credits_per_image(model: str, price_list: PriceList = "seed_pages") -> float:
    """Credits billed per generated image of ``model`` under a price list.

    Args:
        model: A model of :data:`CREDITS_PER_IMAGE`.
        price_list: ``"seed_pages"`` (the default of :class:`SimulatorConfig`: 4.5 at 2.0)
            or ``"published"`` (today's prices: 4.5 at 2.5).

    Examples:
        >>> credits_per_image("doubao-seedream-4.5"), credits_per_image(
        ...     "doubao-seedream-4.5", "published")
        (2.0, 2.5)
        >>> credits_per_image("doubao-seedream-5.0-lite")
        2.2
    """
    if price_list == "seed_pages" and model in SEED_PAGE_CREDITS:
        return SEED_PAGE_CREDITS[model]
    return CREDITS_PER_IMAGE[model]


#: Keys accepted in a ``POST /_sim/account`` body.
ACCOUNT_CHANGES: frozenset[str] = frozenset({"add_credits", "set_credits", "reset_quotas"})

_EPSILON = 1e-9


def format_credits(amount: float) -> str:
    """Credits as shown in messages: at most 6 decimals, no trailing zeros.

    Examples:
        >>> format_credits(10.0), format_credits(1.5), format_credits(0.1 + 0.2)
        ('10', '1.5', '0.3')
    """
    return f"{round(amount, 6):g}"


def credits_value(amount: float) -> float:
    """Credits as reported in JSON: rounded to 6 decimals.

    Examples:
        >>> credits_value(0.1 + 0.2)
        0.3
    """
    return round(amount, 6)


@dataclass
class Reservation:
    """What one task counts in the account, from its creation on.

    Attributes:
        key_id: The creating key.
        amount: Credits reserved at creation.
        epoch: The account's quota epoch at creation (``reset_quotas`` starts a new one).
        window: Index of the key's quota window at creation.

    Examples:
        >>> Reservation("k", 2.0, 0, 0).amount
        2.0
    """

    key_id: str
    amount: float
    epoch: int
    window: int


@dataclass
class QuotaWindow:
    """One key's current ``daily_quota_credits`` window.

    Attributes:
        start: State-clock time of the key's first accepted submission (window 0 starts).
        index: Index of the window whose usage ``used`` holds.
        used: Credits charged to tasks created in window ``index``.
    """

    start: float
    index: int = 0
    used: float = 0.0


class Account:
    """The account's credits and the per-key quota usage.

    Args:
        config: The simulator's configuration (limits are read at each check, so a test may
            change them at run time; ``account_credits`` is read at creation and on
            :meth:`reset`).

    Examples:
        >>> account = Account(SimulatorConfig(account_credits=3.0))
        >>> first = account.open("k", 2.0, now=0.0)
        >>> account.balance()
        1.0
        >>> account.refusal("k", 2.0, now=0.0).body()["error"]["code"]
        'insufficient_quota'
        >>> account.settle(first, 0.0, now=1.0)  # failed: refunded
        >>> account.balance(), account.refusal("k", 2.0, now=1.0) is None
        (3.0, True)
    """

    def __init__(self, config: SimulatorConfig) -> None:
        self.config = config
        self.reset()

    def reset(self) -> None:
        """Forget every charge; the balance is ``config.account_credits`` again."""
        self.funded: float | None = self.config.account_credits
        self.charged = 0.0
        self.charged_by_key: dict[str, float] = {}
        self.epoch = 0
        self.key_used: dict[str, float] = {}
        self.windows: dict[str, QuotaWindow] = {}

    # -- reading ----------------------------------------------------------------------------

    def balance(self) -> float | None:
        """Credits left (``None`` when unlimited): everything funded minus the charges now."""
        if self.funded is None:
            return None
        return self.funded - self.charged

    def key_charged(self, key_id: str) -> float:
        """Credits charged to one key now (reservations of running tasks included)."""
        return self.charged_by_key.get(key_id, 0.0)

    def window(self, key_id: str, now: float) -> QuotaWindow | None:
        """The key's window at ``now`` (rolled over if a new one began), or ``None``."""
        window = self.windows.get(key_id)
        if window is None:
            return None
        index = int((now - window.start) // self.config.quota_window_seconds)
        if index != window.index:
            window.index, window.used = index, 0.0
        return window

    def window_resets_in(self, window: QuotaWindow, now: float) -> float:
        """Seconds until the key's current window ends."""
        length = self.config.quota_window_seconds
        return window.start + (window.index + 1) * length - now

    # -- events -----------------------------------------------------------------------------

    def open(self, key_id: str, amount: float, now: float) -> Reservation:
        """Count a new task's reservation (its key's window starts if it had none)."""
        window = self.window(key_id, now)
        if window is None:
            window = self.windows[key_id] = QuotaWindow(start=now)
        reservation = Reservation(key_id, amount, self.epoch, window.index)
        self._charge(reservation, amount, now)
        return reservation

    def settle(self, reservation: Reservation, final: float, now: float) -> None:
        """Replace a terminal task's reservation by its final charge."""
        self._charge(reservation, final - reservation.amount, now)

    def _charge(self, reservation: Reservation, amount: float, now: float) -> None:
        key_id = reservation.key_id
        self.charged += amount
        self.charged_by_key[key_id] = self.charged_by_key.get(key_id, 0.0) + amount
        if reservation.epoch != self.epoch:
            return
        self.key_used[key_id] = self.key_used.get(key_id, 0.0) + amount
        window = self.window(key_id, now)
        if window is not None and window.index == reservation.window:
            window.used += amount

    # -- checks -----------------------------------------------------------------------------

    def refusal(self, key_id: str, amount: float, now: float) -> SimulatorHTTPError | None:
        """The 402 answer for a submit reserving ``amount``, or ``None`` if it may go on.

        Checked in this order: the account's balance, the key's lifetime quota, the key's
        window quota.

        Examples:
            >>> config = SimulatorConfig(daily_quota_credits=2.0, quota_window_seconds=60)
            >>> account = Account(config)
            >>> _ = account.open("k", 2.0, now=10.0)
            >>> err = account.refusal("k", 2.0, now=25.5)
            >>> err.body()["error"]["code"], err.headers()["Retry-After"]
            ('key_daily_quota_exhausted', '45')
            >>> account.refusal("k", 2.0, now=70.0) is None  # a new window began
            True
        """
        balance = self.balance()
        if balance is not None and amount > balance + _EPSILON:
            return quota_error(
                "insufficient_quota",
                f"Insufficient credits: {format_credits(max(0.0, balance))} left, "
                f"this request reserves {format_credits(amount)}",
            )
        quota = self.config.key_quota_credits
        used = self.key_used.get(key_id, 0.0)
        if quota is not None and used + amount > quota + _EPSILON:
            return quota_error(
                "key_quota_exhausted",
                f"The quota of this API key is used up: {format_credits(used)} of "
                f"{format_credits(quota)} credits used, this request reserves "
                f"{format_credits(amount)}",
            )
        daily = self.config.daily_quota_credits
        if daily is None:
            return None
        window = self.window(key_id, now)
        used = window.used if window is not None else 0.0
        if used + amount <= daily + _EPSILON:
            return None
        if window is not None:
            wait = self.window_resets_in(window, now)
        else:  # the request alone exceeds a whole window's quota
            wait = self.config.quota_window_seconds
        seconds = max(1, math.ceil(wait))
        return quota_error(
            "key_daily_quota_exhausted",
            f"The daily quota of this API key is used up: {format_credits(used)} of "
            f"{format_credits(daily)} credits used in the current window, this request "
            f"reserves {format_credits(amount)}; the window restarts in {seconds} seconds",
            retry_after=seconds,
        )

    # -- admin ------------------------------------------------------------------------------

    def apply(self, changes: Any) -> None:
        """Apply a ``POST /_sim/account`` body: ``set_credits``, then ``add_credits``, then
        ``reset_quotas``.

        Raises:
            SimulatorHTTPError: 400 on an unknown key or an invalid value.

        Examples:
            >>> account = Account(SimulatorConfig(account_credits=1.0))
            >>> account.apply({"add_credits": 4})
            >>> account.balance()
            5.0
            >>> account.apply({"set_credits": None})
            >>> account.balance() is None
            True
        """
        if not isinstance(changes, dict):
            raise SimulatorHTTPError(400, "body must be a JSON object")
        unknown = sorted(set(changes) - ACCOUNT_CHANGES)
        if unknown:
            allowed = ", ".join(sorted(ACCOUNT_CHANGES))
            raise SimulatorHTTPError(
                400, f"unknown account change {unknown[0]!r}; use {allowed}", param=unknown[0]
            )
        if "set_credits" in changes:
            value = changes["set_credits"]
            if value is None:
                self.funded = None
            else:
                self.funded = _credits_amount("set_credits", value) + self.charged
        if "add_credits" in changes:
            value = _credits_amount("add_credits", changes["add_credits"])
            if self.funded is not None:
                self.funded += value
        if "reset_quotas" in changes:
            reset = changes["reset_quotas"]
            if not isinstance(reset, bool):
                raise SimulatorHTTPError(
                    400, "reset_quotas must be a boolean", param="reset_quotas"
                )
            if reset:
                self.epoch += 1
                self.key_used.clear()
                self.windows.clear()

    def snapshot(self, now: float) -> dict[str, Any]:
        """The ``/_sim/account`` answer.

        Returns:
            ``credits_balance`` (``None`` when unlimited), ``credits_charged``, the configured
            ``key_quota_credits``, ``daily_quota_credits`` and ``quota_window_seconds``, and
            ``per_key``: for each key that was charged, ``credits_charged``,
            ``key_quota_used``, ``daily_quota_used`` and ``daily_window_resets_in`` (seconds,
            ``None`` without a window).

        Examples:
            >>> Account(SimulatorConfig()).snapshot(0.0)["credits_balance"] is None
            True
        """
        balance = self.balance()
        per_key: dict[str, dict[str, Any]] = {}
        for key_id in sorted(self.charged_by_key):
            window = self.window(key_id, now)
            per_key[key_id] = {
                "credits_charged": credits_value(self.key_charged(key_id)),
                "key_quota_used": credits_value(self.key_used.get(key_id, 0.0)),
                "daily_quota_used": credits_value(window.used if window is not None else 0.0),
                "daily_window_resets_in": (
                    round(self.window_resets_in(window, now), 3) if window is not None else None
                ),
            }
        return {
            "credits_balance": credits_value(balance) if balance is not None else None,
            "credits_charged": credits_value(self.charged),
            "key_quota_credits": self.config.key_quota_credits,
            "daily_quota_credits": self.config.daily_quota_credits,
            "quota_window_seconds": self.config.quota_window_seconds,
            "per_key": per_key,
        }


def _credits_amount(name: str, value: Any) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value < 0
    ):
        raise SimulatorHTTPError(400, f"{name} must be a finite number >= 0", param=name)
    return float(value)
