"""A credit budget for one run: no submission may take the run past it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class CreditBudget:
    """Credits reserved by submissions in flight, and spent by finished ones.

    A submission reserves its pre-charge (``credits_per_image * n``) before it is
    sent; when it ends, the reservation is replaced by what was really charged.

    Examples:
        >>> budget = CreditBudget(limit=5.0)
        >>> budget.try_reserve(4.0), budget.try_reserve(2.0)
        (True, False)
        >>> budget.settle(reserved=4.0, spent=2.0); budget.try_reserve(2.0)
        True
    """

    limit: float | None = None
    reserved: float = 0.0
    spent: float = 0.0

    def try_reserve(self, credits: float) -> bool:
        """Reserve credits if the budget allows it."""
        if self.limit is not None and self.spent + self.reserved + credits > self.limit + 1e-9:
            return False
        self.reserved += credits
        return True

    def settle(self, reserved: float, spent: float) -> None:
        """Release a reservation and record what was really spent."""
        self.reserved = max(0.0, self.reserved - reserved)
        self.spent += spent
