"""``GET /v1/credits``: the balance, as Evolink's client reads it.

The answer is ``{"user": {"remaining_credits", "used_credits"}, "token": {"remaining_credits",
"used_credits", "unlimited_credits"}}``, built from the simulator's account (see
:mod:`prefect_seedream.simulator.billing`):

- ``user``: the account, shared by every key. ``remaining_credits`` is the balance a submit is
  checked against (reservations of running tasks already taken off), ``null`` when the account
  is unlimited (``account_credits`` unset); ``used_credits`` is every key's charges.
- ``token``: the calling key. ``unlimited_credits`` is true when no ``key_quota_credits`` is
  set, and ``remaining_credits`` is then ``null``; else it is the quota minus what the key used.
  ``used_credits`` is the key's charges.
"""

from __future__ import annotations

from typing import Any

from .billing import Account, credits_value


def credits_body(account: Account, key_id: str) -> dict[str, Any]:
    """The 200 body of ``GET /v1/credits`` for the key ``key_id`` (the caller settles first).

    Examples:
        >>> from prefect_seedream.simulator.config import SimulatorConfig
        >>> account = Account(SimulatorConfig(account_credits=10, key_quota_credits=4))
        >>> _ = account.open("k", 1.5, now=0.0)
        >>> credits_body(account, "k")
        {'user': {'remaining_credits': 8.5, 'used_credits': 1.5}, 'token': {'remaining_credits': 2.5, 'used_credits': 1.5, 'unlimited_credits': False}}
        >>> credits_body(Account(SimulatorConfig()), "k")["user"]["remaining_credits"] is None
        True
    """
    balance = account.balance()
    quota = account.config.key_quota_credits
    key_used = account.key_used.get(key_id, 0.0)
    return {
        "user": {
            "remaining_credits": credits_value(balance) if balance is not None else None,
            "used_credits": credits_value(account.charged),
        },
        "token": {
            "remaining_credits": (
                credits_value(max(0.0, quota - key_used)) if quota is not None else None
            ),
            "used_credits": credits_value(account.key_charged(key_id)),
            "unlimited_credits": quota is None,
        },
    }
