"""The account's balance, read before a run spends anything.

``GET /v1/credits`` is free. A run whose estimate (its valid rows' pre-charges, capped by
``max_credits``) is more than the account holds submits nothing: every row is recorded
``skipped`` with one sentence naming the balance, the estimate and the ways on (top up, or
``--max-credits N`` to run what N credits pay for). A balance endpoint that is missing or
fails never blocks a run: one warning, and the run goes on as it would have.

This module knows no Prefect.
"""

from __future__ import annotations

import logging

from prefect_seedream.api.client import SeedreamClient
from prefect_seedream.api.errors import SeedreamError
from prefect_seedream.engine.account import AccountStop

logger = logging.getLogger("prefect_seedream.engine.balance")

#: The code of a run stopped before any submission because the balance is below its estimate.
INSUFFICIENT_BALANCE = "insufficient_balance"


async def read_balance(client: SeedreamClient) -> float | None:
    """The credits the account (and its key) can still spend, or None when unknown.

    Never raises for the API's answer: a missing endpoint (404), a refused key or a failing
    server is one warning and None.
    """
    try:
        balance = await client.get_credits()
    except SeedreamError as exc:
        logger.warning(
            "The account's balance could not be read (%s): the run goes on without checking "
            "its estimate against it", exc,
        )
        return None
    return balance.spendable


def needed_credits(estimate: float, max_credits: float | None) -> float:
    """What a run may spend: its estimate, capped by its budget.

    Examples:
        >>> needed_credits(200.0, None), needed_credits(200.0, 77.0)
        (200.0, 77.0)
    """
    return estimate if max_credits is None else min(estimate, max_credits)


def balance_stop(remaining: float | None, estimate: float, max_credits: float | None) -> AccountStop | None:
    """The stop of a run that needs more than the account holds, or None when it may go.

    Examples:
        >>> balance_stop(77.0, 200.0, None).sentence().split(".")[0]
        'Stopped before any submission: the Evolink account holds 77 credits, less than the 200 this run may need'
        >>> balance_stop(77.0, 200.0, 77.0) is None, balance_stop(None, 200.0, None) is None
        (True, True)
    """
    if remaining is None:
        return None
    needed = needed_credits(estimate, max_credits)
    if needed <= remaining + 1e-9:
        return None
    return AccountStop(
        status_code=402, code=INSUFFICIENT_BALANCE,
        message="read with GET /v1/credits before the run",
        balance=remaining, estimate=needed,
    )
