"""A credit budget for one run: no submission may take the run past it.

It also keeps the run's price per image of each model: the published price of the model table
to begin with, then what the API's ``credits_reserved`` says once a submission of that model is
answered (a model the table does not know is estimated at the highest price of the table until
then), and a final charge above the estimate raises it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from prefect_seedream.api.models import GenerationRequest, GenerationTask


@dataclass
class CreditBudget:
    """Credits reserved by submissions in flight, and spent by finished ones.

    A submission reserves its pre-charge (price per image * ``n``) before it is sent; when it
    ends, the reservation is replaced by what was really charged.

    Examples:
        >>> budget = CreditBudget(limit=5.0)
        >>> budget.try_reserve(4.0), budget.try_reserve(2.0)
        (True, False)
        >>> budget.settle(reserved=4.0, spent=2.0); budget.try_reserve(2.0)
        True
        >>> request = GenerationRequest(model="doubao-seedream-5.0-pro", prompt="a fox")
        >>> budget.estimate(request)  # not published by Evolink: another gateway's list price
        6.2
        >>> budget.learn(request, GenerationTask.model_validate(
        ...     {"id": "t", "status": "pending", "usage": {"credits_reserved": 1.8}}))
        >>> budget.estimate(request)
        1.8
    """

    limit: float | None = None
    reserved: float = 0.0
    spent: float = 0.0
    prices: dict[str, float] = field(default_factory=dict)

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

    def estimate(self, request: GenerationRequest) -> float:
        """What a submission of ``request`` is expected to pre-charge."""
        price = self.prices.get(request.model)
        return price * request.n if price is not None else request.reserved_credits

    def learn(self, request: GenerationRequest, task: GenerationTask) -> None:
        """Take the API's ``credits_reserved`` of a fresh submission as the model's price."""
        usage = task.usage
        if task.replayed or usage is None or usage.credits_reserved is None or usage.credits_reserved < 0:
            return
        self.prices[request.model] = usage.credits_reserved / request.n

    def learn_charge(self, request: GenerationRequest, charged: float) -> None:
        """A final charge above the estimate (a layerize task bills its base image and each
        layer) raises the model's estimate for the rest of the run; a lower one does not.

        Examples:
            >>> budget = CreditBudget()
            >>> request = GenerationRequest(model="doubao-seedream-5.0-pro-layerize",
            ...                             image_urls=["https://cdn.example/a.png"])
            >>> budget.learn_charge(request, 7.5); budget.estimate(request)
            7.5
        """
        if charged > self.estimate(request) + 1e-9:
            self.prices[request.model] = charged / request.n
