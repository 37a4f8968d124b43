"""The simulator's batch status read and balance routes, and their request counters.

| route | auth | purpose |
|---|---|---|
| ``POST /v1/tasks/batch`` | Bearer (the calling key's tasks only) | ``{"task_ids": [<= 50 ids]}`` -> ``{"data": [task, ...]}``, see :mod:`prefect_seedream.simulator.task_batch` |
| ``GET /v1/credits`` | Bearer | the account's and the key's credits, see :mod:`prefect_seedream.simulator.credits` |

``SimulatorConfig.batch_endpoint`` and ``credits_endpoint`` make either route answer 404 (as if
the API had none), 405 or 500, before authentication, so that clients' fallbacks can be tested.
Every request to either route is counted (:class:`~prefect_seedream.simulator.task_batch.ReadCounters`,
in ``GET /_sim/stats``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from starlette.responses import JSONResponse, Response

from .config import EndpointMode
from .credits import credits_body
from .errors import SimulatorHTTPError, simulated_error
from .payloads import task_payload
from .task_batch import batch_body, parse_batch_ids, poll_fault_pending

if TYPE_CHECKING:
    from .state import SimulatorState

#: Authenticates a request (401 otherwise) and returns the caller's key id.
Authenticate = Callable[[Request, "SimulatorState"], str]

_SWITCHED_OFF: dict[str, tuple[int, str]] = {
    "missing": (404, "Not Found"),
    "not_allowed": (405, "Method Not Allowed"),
    "failing": (500, "Internal server error (simulated: the endpoint is set to fail)"),
}


def _refuse_if_switched_off(mode: EndpointMode) -> None:
    answer = _SWITCHED_OFF.get(mode)
    if answer is None:
        return
    status, message = answer
    raise SimulatorHTTPError(status, message)


def _batch_read(state: SimulatorState, key_id: str, ids: list[str], base_url: str) -> Response:
    fault = state.dice.first(["poll_500", "poll_503", "poll_429"])
    if fault is not None:
        raise simulated_error(int(fault[-3:]), 1)
    now = state.now()
    answered: list[dict[str, Any]] = []
    for task_id in ids:
        task = state.find_task(task_id, key_id)
        if task is None or poll_fault_pending(task.plan, task.id, state.fault_counters):
            continue
        task.polls += 1
        state.record_poll(key_id)
        state.reads.batch_task_reads += 1
        status = state.visible_status(task, now, consume=True)
        answered.append(task_payload(task, now, base_url, state.config, status))
    return JSONResponse(batch_body(answered))


def add_read_routes(app: FastAPI, state: SimulatorState, authenticate: Authenticate) -> None:
    """Add ``POST /v1/tasks/batch`` and ``GET /v1/credits`` to a simulator app.

    Examples:
        >>> from prefect_seedream.simulator.app import create_app
        >>> paths = {route.path for route in create_app().routes}
        >>> {"/v1/tasks/batch", "/v1/credits"} <= paths
        True
    """

    @app.post("/v1/tasks/batch")
    async def read_tasks(request: Request) -> Response:
        state.reads.batch_requests += 1
        _refuse_if_switched_off(state.config.batch_endpoint)
        key_id = authenticate(request, state)
        ids = parse_batch_ids(await request.body())
        return _batch_read(state, key_id, ids, str(request.base_url))

    @app.get("/v1/credits")
    async def read_credits(request: Request) -> Response:
        state.reads.credits_requests += 1
        _refuse_if_switched_off(state.config.credits_endpoint)
        key_id = authenticate(request, state)
        state.settle()
        return JSONResponse(credits_body(state.account, key_id))
