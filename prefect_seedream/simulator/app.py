"""Routes of the simulator: the Evolink contract plus a few ``/_sim`` helpers.

| route | auth | purpose |
|---|---|---|
| ``POST /v1/images/generations`` | Bearer | submit a generation task (optional ``Idempotency-Key`` header, see :mod:`prefect_seedream.simulator.idempotency`) |
| ``GET /v1/tasks?status=&type=&model=&page=&page_size=`` | Bearer (the calling key's tasks only) | list tasks newest first, see :mod:`prefect_seedream.simulator.listing` |
| ``GET /v1/tasks/{task_id}`` | Bearer (the creating key only) | query a task |
| ``POST /v1/tasks/batch``, ``GET /v1/credits`` | Bearer | see :mod:`prefect_seedream.simulator.read_routes` |
| ``GET /files/{task_id}/{index}.{png,jpg}`` | none (like a CDN) | download a result image |
| ``GET /_sim/stats`` | none | counters, see :meth:`SimulatorState.stats` |
| ``GET /_sim/tasks[?prompt=P]`` | none | read-only list of live tasks (of prompt P), see :meth:`SimulatorState.task_listing` |
| ``GET /_sim/account`` | none | the account's credits and quota usage, see :meth:`Account.snapshot` |
| ``POST /_sim/account`` | none | ``{"add_credits": X}``, ``{"set_credits": X or null}``, ``{"reset_quotas": true}`` (any of them); answers the new account state |
| ``POST /_sim/reset`` | none | forget all tasks, counters, charges and idempotency keys |
| ``GET /healthz`` | none | ``{"ok": true}`` |

Answers of a submit: 200 with the new task; 200 with the original task and the header
``idempotency-replayed: true`` (a replay: nothing created or charged); 400 (validation,
markers, ``Idempotency-Key`` syntax, internal reference hosts when
``allow_private_image_urls`` is off); 401; 402 with a string ``code``
(``insufficient_quota``, ``key_quota_exhausted``, ``key_daily_quota_exhausted`` with
``Retry-After``), ``action_url`` and ``request_id``; 403 ``permission_error`` for a
``denied_models`` model; 404 unknown model; 409 ``idempotency_conflict``; 429 (concurrency
limit) and the simulated statuses of the fault markers. The order of these decisions is in
:mod:`prefect_seedream.simulator.faults`. Every error answer carries an ``x-request-id``
header; every 429 and 503 also a ``Retry-After`` header.
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

from fastapi import FastAPI, Query, Request
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse, Response, StreamingResponse

from .config import SimulatorConfig
from .errors import (
    SimulatorHTTPError,
    error_body,
    new_request_id,
    quota_error,
    retry_after_suggestion,
    simulated_error,
)
from .faults import (
    CreationFaults,
    FaultAction,
    MarkerError,
    decide_creation_faults,
    decide_download_delay,
    decide_download_fault,
    decide_poll_fault,
    decide_submit_fault,
    parse_fault_plan,
)
from .holds import HeldResponses, client_address
from .idempotency import IDEMPOTENCY_HEADER, REPLAYED_HEADER, body_hash, parse_idempotency_key
from .images import CONTENT_TYPES, EXTENSIONS, render_alpha_image, render_image, served_size
from .listing import parse_list_query
from .payloads import submit_payload, task_payload
from .read_routes import add_read_routes
from .responses import (
    PausedBodyResponse,
    TruncatedResponse,
    install_log_filter,
    oversize_body,
)
from .rules import check_reference_hosts, validate_generation_request
from .state import SimTask, SimulatorState, SubmitAnswerFault, key_id_for

#: Shape of task ids; anything else is answered with 400 "Invalid task ID format".
TASK_ID_RE = re.compile(r"^task-unified-[0-9]+-[a-z0-9]+$")

_FILE_RE = re.compile(r"^(0|[1-9][0-9]{0,2})\.([a-z]+)$")

_NOT_AN_IMAGE = (
    b"<!DOCTYPE html><html><head><title>502 Bad Gateway</title></head>"
    b"<body><h1>502 Bad Gateway</h1><p>simulated CDN error page</p></body></html>"
)


def get_state(app: FastAPI) -> SimulatorState:
    """The :class:`SimulatorState` of an app made by :func:`create_app`.

    Examples:
        >>> get_state(create_app()).stats()["polls"]
        0
    """
    state: SimulatorState = app.state.sim
    return state


def _authenticate(request: Request, state: SimulatorState) -> str:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        state.unauthorized_requests += 1
        raise SimulatorHTTPError(401, "Missing or invalid Authorization header")
    if state.config.api_keys is not None and token not in state.config.api_keys:
        state.unauthorized_requests += 1
        raise SimulatorHTTPError(401, "Invalid or expired token")
    return key_id_for(token)


def _json_bytes(body: dict[str, Any]) -> bytes:
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _malformed_poll_body(task: SimTask) -> Response:
    body = f'{{"created":{task.created},"id":"{task.id}","status":"proc'.encode()
    return Response(content=body, status_code=200, media_type="application/json")


def _fault_error(fault: FaultAction, not_found_message: str) -> SimulatorHTTPError:
    assert fault.status is not None
    if fault.code is not None:  # [[sim:quota_error=CODE]]
        retry_after = fault.retry_after if fault.code == "key_daily_quota_exhausted" else None
        return quota_error(fault.code, retry_after=retry_after)
    message = not_found_message if fault.status == 404 else None
    return simulated_error(fault.status, fault.retry_after, message)


async def _image_bytes(state: SimulatorState, task: SimTask, index: int) -> bytes:
    config = state.config
    width, height = served_size(task.width, task.height, config.image_max_side)
    fmt = task.image_format(index, config.image_format)
    alpha = task.is_alpha_image(index)
    key = (task.prompt, index, width, height, fmt, alpha, task.reference_digest)
    data = state.images.get(key)
    if data is None:
        if alpha:
            data = await run_in_threadpool(render_alpha_image, task.prompt, index, width, height)
        else:
            data = await run_in_threadpool(
                render_image, task.prompt, index, width, height, fmt, task.reference
            )
        state.images.put(key, data)
    return data


def _poll_body(
    state: SimulatorState, task: SimTask, request: Request, *, consume: bool
) -> dict[str, Any]:
    """The task as a poll shows it now (``consume``: this is a poll, see
    :meth:`SimulatorState.visible_status`)."""
    now = state.now()
    status = state.visible_status(task, now, consume=consume)
    return task_payload(task, now, str(request.base_url), state.config, status)


async def _client_gone(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _hold_until_gone(request: Request, holds: HeldResponses) -> None:
    """Wait, sending nothing, until the client disconnects or the server shuts down."""
    waiters = [
        asyncio.ensure_future(_client_gone(request)),
        asyncio.ensure_future(holds.until_released()),
    ]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


async def _no_answer(request: Request, payload: dict[str, Any]) -> Response:
    """The end of a held submit: nothing if the client has gone, else a dropped connection.

    When the server shuts down it closes held connections itself, so the client sees the
    connection close without a byte; the cut answer is only a fallback.
    """
    if await request.is_disconnected():
        return Response(status_code=204)  # never sent: the connection is gone
    return TruncatedResponse(_json_bytes(payload), "application/json")


async def _answer_submit(
    request: Request, state: SimulatorState, task: SimTask, faults: CreationFaults
) -> Response:
    """Answer a submit that created ``task``: hung, delayed, dropped or sent.

    See "The submit answer of a created task" in :mod:`prefect_seedream.simulator.faults`.
    """
    payload = submit_payload(task, state.config)
    client = client_address(request.scope.get("client"))
    if faults.submit_hang:
        state.record_answer("hung")
        state.record_answer("undelivered")
        with state.holds.hold(client):
            await _hold_until_gone(request, state.holds)
        return await _no_answer(request, payload)
    delay = faults.submit_delay + (state.config.late_submit_seconds if faults.submit_late else 0)
    if delay > 0:
        state.record_answer("late")
        with state.holds.hold(client):
            waited = await state.holds.sleep(delay)
        if not waited:
            _record_if_current(state, task, "undelivered")
            return await _no_answer(request, payload)
    if faults.create_then_status is not None:
        _record_if_current(state, task, "errored")
        _record_if_current(state, task, "undelivered")
        raise simulated_error(faults.create_then_status, task.plan.retry_after_seconds)
    if faults.drop_after_create:
        state.record_answer("dropped")
        state.record_answer("undelivered")
        return TruncatedResponse(_json_bytes(payload), "application/json")
    if await request.is_disconnected():
        _record_if_current(state, task, "undelivered")
        return Response(status_code=204)  # never sent: the connection is gone
    task.answered = True
    return JSONResponse(payload)


def _record_if_current(state: SimulatorState, task: SimTask, fault: SubmitAnswerFault) -> None:
    """Count an answer's fate after a wait, unless ``POST /_sim/reset`` forgot its task."""
    if state.tasks.get(task.id) is task:
        state.record_answer(fault)


def create_app(config: SimulatorConfig | None = None) -> FastAPI:
    """Build the simulator's ASGI app.

    Args:
        config: Behaviour of the simulator; defaults to ``SimulatorConfig()``.

    Returns:
        A FastAPI app; its state is ``app.state.sim`` (a :class:`SimulatorState`).

    Examples:
        >>> app = create_app(SimulatorConfig(latency_seconds=0.1))
        >>> get_state(app).config.latency_seconds
        0.1
    """
    config = config if config is not None else SimulatorConfig()
    state = SimulatorState(config)
    install_log_filter()
    app = FastAPI(
        title="Evolink Seedream simulator",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.sim = state

    @app.exception_handler(SimulatorHTTPError)
    async def _simulator_error(request: Request, exc: SimulatorHTTPError) -> Response:
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers())

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        headers = dict(getattr(exc, "headers", None) or {})
        headers.setdefault("x-request-id", new_request_id())
        return JSONResponse(
            error_body(exc.status_code, str(exc.detail)),
            status_code=exc.status_code,
            headers=headers,
        )

    async def _refuse_or_create(
        request: Request, key_id: str
    ) -> Response | tuple[SimTask, CreationFaults]:
        """The checks of a submit up to the task's creation (see the order in ``faults``).

        Returns:
            The answer of an idempotent replay, or the created task and its faults.
        """
        raw = await request.body()
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            raise SimulatorHTTPError(400, "Malformed JSON body") from None
        generation = validate_generation_request(body, state.models)
        if not config.allow_private_image_urls:
            check_reference_hosts(generation.image_urls)
        try:
            plan = parse_fault_plan(generation.prompt)
        except MarkerError as err:
            raise SimulatorHTTPError(400, str(err), param="prompt") from None
        idempotency_key = parse_idempotency_key(request.headers.getlist(IDEMPOTENCY_HEADER))
        digest = body_hash(body) if idempotency_key is not None else ""
        if idempotency_key is not None:
            known = state.idempotent_answer(key_id, idempotency_key, digest)
            if known is not None:
                _, original = known
                return JSONResponse(
                    _poll_body(state, original, request, consume=False),
                    headers={REPLAYED_HEADER: "true"},
                )
        if generation.model.name in config.denied_models:
            raise SimulatorHTTPError(403, "Access denied for this model", param="model")

        fault = decide_submit_fault(plan, generation.prompt, state.fault_counters, state.dice)
        if fault is not None:
            raise _fault_error(fault, "Specified model not found")
        reserved = generation.model.credits_per_image * generation.n
        refusal = state.quota_refusal(key_id, reserved)
        if refusal is not None:
            raise refusal
        limit = config.max_concurrent_tasks_per_key
        if limit is not None and state.active_tasks(key_id) >= limit:
            raise SimulatorHTTPError(
                429,
                f"Too many concurrent tasks for this API key (limit {limit})",
                fallback_suggestion=retry_after_suggestion(config.rate_limit_retry_after),
                retry_after=config.rate_limit_retry_after,
            )

        faults = decide_creation_faults(plan, generation.prompt, state.fault_counters, state.dice)
        task = state.create_task(generation, key_id, plan, faults)
        if idempotency_key is not None:
            state.remember_idempotency(idempotency_key, digest, task)
        return task, faults

    @app.post("/v1/images/generations")
    async def submit(request: Request) -> Response:
        key_id = _authenticate(request, state)
        state.record_submit(key_id)
        try:
            outcome = await _refuse_or_create(request, key_id)
        except SimulatorHTTPError as err:
            if err.status == 402:
                state.record_quota_refusal(key_id)
            raise
        if isinstance(outcome, Response):
            return outcome
        task, faults = outcome
        return await _answer_submit(request, state, task, faults)

    @app.get("/v1/tasks")
    async def list_tasks_of_key(request: Request) -> Response:
        key_id = _authenticate(request, state)
        query = parse_list_query(request.query_params)
        page, total, now = state.list_tasks(key_id, query)
        base_url = str(request.base_url)
        data = []
        for task in page:
            status = state.visible_status(task, now, consume=False)
            entry = task_payload(task, now, base_url, config, status)
            if config.task_list_echoes_prompt:
                entry["prompt"] = task.prompt
            data.append(entry)
        return JSONResponse(
            {"data": data, "total": total, "page": query.page, "page_size": query.page_size}
        )

    add_read_routes(app, state, _authenticate)

    @app.get("/v1/tasks/{task_id}")
    async def query_task(task_id: str, request: Request) -> Response:
        key_id = _authenticate(request, state)
        state.record_poll(key_id)
        if not TASK_ID_RE.match(task_id):
            raise SimulatorHTTPError(400, "Invalid task ID format", param="task_id")
        task = state.find_task(task_id, key_id)
        if task is None:
            raise SimulatorHTTPError(404, "Task not found or expired")
        task.polls += 1
        fault = decide_poll_fault(task.plan, task.id, state.fault_counters, state.dice)
        if fault is not None:
            if fault.kind == "malformed":
                return _malformed_poll_body(task)
            raise _fault_error(fault, "Task not found or expired")
        return JSONResponse(_poll_body(state, task, request, consume=True))

    @app.get("/files/{task_id}/{filename}")
    async def download(task_id: str, filename: str) -> Response:
        task = state.tasks.get(task_id)
        state.record_download(task)
        match = _FILE_RE.match(filename)
        not_found = SimulatorHTTPError(404, "Resource not found or expired")
        if task is None or match is None:
            raise not_found
        index = int(match.group(1))
        fmt = task.image_format(index, config.image_format)
        now = state.now()
        if (
            match.group(2) != EXTENSIONS[fmt]
            or index >= task.image_count
            or task.status_at(now)[0] != "completed"
            or task.is_expired(now, config.result_ttl_seconds)
        ):
            raise not_found
        media_type = CONTENT_TYPES[fmt]
        url_scope = f"{task.id}/{index}"
        fault = decide_download_fault(task.plan, url_scope, state.fault_counters, state.dice)
        if fault is not None:
            if fault.kind == "status":
                raise _fault_error(fault, "Resource not found or expired")
            if fault.kind == "expired":
                raise not_found
            if fault.kind == "not_image":
                return Response(content=_NOT_AN_IMAGE, media_type=media_type)
            if fault.kind == "oversize":
                return StreamingResponse(
                    oversize_body(config.download_max_bytes_oversize), media_type=media_type
                )
            return TruncatedResponse(await _image_bytes(state, task, index), media_type)
        pause = decide_download_delay(task.plan, url_scope, state.fault_counters)
        if pause > 0:
            return PausedBodyResponse(
                await _image_bytes(state, task, index),
                media_type,
                lambda: state.holds.sleep(pause),
            )
        return Response(content=await _image_bytes(state, task, index), media_type=media_type)

    @app.get("/_sim/stats")
    async def stats() -> Response:
        return JSONResponse(state.stats())

    @app.get("/_sim/tasks")
    async def list_tasks(prompt: str | None = Query(default=None)) -> Response:
        return JSONResponse({"tasks": state.task_listing(prompt)})

    @app.get("/_sim/account")
    async def account() -> Response:
        return JSONResponse(state.account_snapshot())

    @app.post("/_sim/account")
    async def change_account(request: Request) -> Response:
        raw = await request.body()
        try:
            changes = json.loads(raw) if raw.strip() else {}
        except (ValueError, UnicodeDecodeError):
            raise SimulatorHTTPError(400, "Malformed JSON body") from None
        state.settle()
        state.account.apply(changes)
        return JSONResponse(state.account_snapshot())

    @app.post("/_sim/reset")
    async def reset() -> Response:
        state.reset()
        return JSONResponse({"ok": True})

    @app.get("/healthz")
    async def healthz() -> Response:
        return JSONResponse({"ok": True})

    return app
