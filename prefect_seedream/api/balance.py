"""The account's balance, as ``GET /v1/credits`` tells it.

Evolink answers ``{"user": {"remaining_credits", "used_credits"}, "token": {"remaining_credits",
"used_credits", "unlimited_credits"}}``: ``user`` is the account, ``token`` the API key's own
allowance. The endpoint is not in the seed pages: every field may be missing (then ``None``), and
an API without it answers 404 or 405, raised as :class:`BalanceUnavailableError`.
"""

from __future__ import annotations

import math
from typing import Any

from pydantic import BaseModel, ConfigDict

from prefect_seedream.api.errors import SeedreamAPIError


class BalanceUnavailableError(SeedreamAPIError):
    """The API has no balance endpoint (it answered 404 or 405): the balance is unknown.

    Examples:
        >>> err = BalanceUnavailableError(404, "GET /v1/credits answered 404")
        >>> err.status_code, err.retryable
        (404, False)
    """

    default_type = "balance_unavailable"


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            return None
    else:
        return None
    return number if math.isfinite(number) else None


def _section(payload: Any, name: str) -> dict[str, Any]:
    section = payload.get(name) if isinstance(payload, dict) else None
    return section if isinstance(section, dict) else {}


class CreditBalance(BaseModel):
    """Credits of the account and of the API key, each ``None`` when the API did not say.

    Attributes:
        remaining: Credits left on the account (``user.remaining_credits``).
        used: Credits the account used (``user.used_credits``).
        token_remaining: Credits left to this API key (``token.remaining_credits``).
        token_used: Credits this API key used (``token.used_credits``).
        token_unlimited: Whether this API key has no allowance of its own
            (``token.unlimited_credits``).

    Examples:
        >>> balance = CreditBalance.from_api({
        ...     "user": {"remaining_credits": 77, "used_credits": "23.5"},
        ...     "token": {"remaining_credits": 10, "used_credits": 3, "unlimited_credits": False}})
        >>> balance.remaining, balance.used, balance.spendable
        (77.0, 23.5, 10.0)
        >>> CreditBalance.from_api({"user": {"remaining_credits": 5}}).spendable
        5.0
        >>> CreditBalance.from_api({}).spendable is None
        True
    """

    model_config = ConfigDict(frozen=True)

    remaining: float | None = None
    used: float | None = None
    token_remaining: float | None = None
    token_used: float | None = None
    token_unlimited: bool | None = None

    @classmethod
    def from_api(cls, payload: Any) -> CreditBalance:
        """Read an answer of ``GET /v1/credits``; what is missing or not a number is ``None``."""
        user, token = _section(payload, "user"), _section(payload, "token")
        unlimited = token.get("unlimited_credits")
        return cls(
            remaining=_number(user.get("remaining_credits")),
            used=_number(user.get("used_credits")),
            token_remaining=_number(token.get("remaining_credits")),
            token_used=_number(token.get("used_credits")),
            token_unlimited=unlimited if isinstance(unlimited, bool) else None,
        )

    @property
    def spendable(self) -> float | None:
        """What a run may spend: the account's credits, or the key's allowance when it is
        smaller (and limited); ``None`` when neither is known.

        Examples:
            >>> CreditBalance(remaining=50, token_remaining=8, token_unlimited=False).spendable
            8.0
            >>> CreditBalance(remaining=50, token_remaining=0, token_unlimited=True).spendable
            50.0
        """
        limits = [self.remaining]
        if not self.token_unlimited:
            limits.append(self.token_remaining)
        known = [limit for limit in limits if limit is not None]
        return min(known) if known else None
