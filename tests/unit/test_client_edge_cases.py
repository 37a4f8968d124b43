"""Client behaviour that a real server cannot produce reliably, over httpx.MockTransport.

Every test counts the requests the client made, so "retried" and "not retried" are
facts, not assumptions. ``asyncio.sleep`` inside the client is replaced by a recorder,
so backoffs cost no time and their lengths can be checked.
"""

from __future__ import annotations

import asyncio
import io
import json
import time
import types
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

import prefect_seedream.api.client as client_module
from prefect_seedream.api import (
    AuthenticationError,
    BadRequestError,
    DownloadError,
    GenerationRequest,
    ImageTooLargeError,
    NotAnImageError,
    NotFoundError,
    PollPolicy,
    RateLimitError,
    ResponseFormatError,
    ResultExpiredError,
    RetryPolicy,
    SeedreamClient,
    SeedreamConfigurationError,
    SeedreamConnectionError,
    SeedreamError,
    ServerError,
    SubmissionOutcomeUnknownError,
    SyncSeedreamClient,
    TaskStatus,
    WaitTimeoutError,
)

API = "https://api.seedream.test"
CDN = "https://cdn.elsewhere.test"
KEY = "sk-test-SECRET-0123456789abcdef"
REQUEST = GenerationRequest(prompt="A red fox in the snow", size="2K")
TASK_ID = "task-unified-1757165031-edge"

Handler = Callable[[httpx.Request], httpx.Response]


def task_json(status: str = "pending", **extra: Any) -> dict[str, Any]:
    return {
        "created": 1757165031,
        "id": TASK_ID,
        "model": "doubao-seedream-4.5",
        "object": "image.generation.task",
        "progress": 100 if status == "completed" else 0,
        "status": status,
        "task_info": {"can_cancel": status == "pending", "estimated_time": 1},
        "type": "image",
        **extra,
    }


def error_json(status: int, message: str, **fields: str) -> dict[str, Any]:
    return {"error": {"code": status, "message": message, **fields}}


class Recorder:
    """A MockTransport handler that answers from a script and records every request."""

    def __init__(self, *answers: Any) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if callable(answer):
            answer = answer(request)
        if isinstance(answer, BaseException):
            raise answer
        return answer

    @property
    def calls(self) -> int:
        return len(self.requests)


def make_client(handler: Handler, **kwargs: Any) -> SeedreamClient:
    kwargs.setdefault("api_key", KEY)
    kwargs.setdefault("base_url", API)
    kwargs.setdefault(
        "retry",
        RetryPolicy(max_attempts=3, backoff_base=0.01, backoff_max=0.02, max_retry_after=10.0),
    )
    kwargs.setdefault(
        "poll",
        PollPolicy(
            min_interval=0.01,
            max_interval=0.02,
            max_wait=5.0,
            not_found_grace=0.0,
            max_consecutive_errors=2,
        ),
    )
    return SeedreamClient(transport=httpx.MockTransport(handler), **kwargs)


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Record the client's sleeps instead of sleeping."""
    recorded: list[float] = []

    async def fake_sleep(delay: float) -> None:
        recorded.append(delay)

    monkeypatch.setattr(client_module, "asyncio", types.SimpleNamespace(sleep=fake_sleep, wait_for=asyncio.wait_for, TimeoutError=asyncio.TimeoutError))
    return recorded


def assert_no_key(error: BaseException) -> None:
    assert KEY not in str(error)
    assert KEY not in repr(error)
    for value in vars(error).values():
        assert KEY not in str(value)


# -- submission: retried only when no task can exist ------------------------------------


@pytest.mark.parametrize("exc_type", [httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout])
async def test_submit_retried_when_nothing_was_sent(
    exc_type: type[Exception], sleeps: list[float]
) -> None:
    handler = Recorder(exc_type("connection refused"), httpx.Response(200, json=task_json()))
    async with make_client(handler) as client:
        task = await client.submit(REQUEST)
    assert task.id == TASK_ID
    assert handler.calls == 2
    assert all(request.method == "POST" for request in handler.requests)
    assert len(sleeps) == 1 and 0 < sleeps[0] <= 0.02


async def test_submit_connect_error_gives_up_after_max_attempts(sleeps: list[float]) -> None:
    handler = Recorder(httpx.ConnectError("connection refused"))
    async with make_client(handler) as client:
        with pytest.raises(SeedreamConnectionError) as info:
            await client.submit(REQUEST)
    assert handler.calls == 3
    assert info.value.retryable is True
    assert len(sleeps) == 2


@pytest.mark.parametrize(
    "exc",
    [
        httpx.ReadTimeout("timed out"),
        httpx.RemoteProtocolError("Server disconnected without sending a response."),
        httpx.ReadError("connection reset by peer"),
        httpx.WriteTimeout("write timed out"),
    ],
)
async def test_submit_outcome_unknown_after_sending(exc: Exception, sleeps: list[float]) -> None:
    handler = Recorder(exc, httpx.Response(200, json=task_json()))
    async with make_client(handler) as client:
        with pytest.raises(SubmissionOutcomeUnknownError) as info:
            await client.submit(REQUEST)
    assert handler.calls == 1
    assert sleeps == []
    assert info.value.retryable is False
    assert type(exc).__name__ in str(info.value)


@pytest.mark.parametrize(
    "response",
    [
        httpx.Response(200, text="<html>gateway says hi</html>"),
        httpx.Response(200, content=b"\xff\xfe\x00garbage"),
        httpx.Response(200, text=""),
        httpx.Response(200, json={"status": "pending"}),  # JSON but no task id
        httpx.Response(200, json=["not", "a", "task"]),
    ],
)
async def test_submit_outcome_unknown_on_unreadable_success(
    response: httpx.Response, sleeps: list[float]
) -> None:
    handler = Recorder(response, httpx.Response(200, json=task_json()))
    async with make_client(handler) as client:
        with pytest.raises(SubmissionOutcomeUnknownError):
            await client.submit(REQUEST)
    assert handler.calls == 1
    assert sleeps == []


@pytest.mark.parametrize(
    "first",
    [
        httpx.Response(500, json=error_json(500, "Internal error", type="internal_server_error")),
        httpx.Response(502, text="Bad gateway"),
        httpx.Response(503, json=error_json(503, "busy", type="service_unavailable_error")),
        httpx.Response(429, json=error_json(429, "slow down", type="rate_limit_error")),
    ],
)
async def test_submit_retried_after_429_or_5xx(first: httpx.Response, sleeps: list[float]) -> None:
    handler = Recorder(first, httpx.Response(200, json=task_json()))
    async with make_client(handler) as client:
        task = await client.submit(REQUEST)
    assert task.status is TaskStatus.PENDING
    assert handler.calls == 2
    assert len(sleeps) == 1


async def test_every_retry_of_a_submission_sends_the_same_idempotency_key(sleeps: list[float]) -> None:
    """Issue 16: a 5xx may come after the task was created; the same key makes the retry a
    replay. A new submission (a new call) gets a new key; a given key is sent as it is."""
    handler = Recorder(
        httpx.Response(502, json=error_json(502, "Upstream AI service unavailable", type="upstream_error")),
        httpx.Response(500, json=error_json(500, "Internal error", type="internal_server_error")),
        httpx.Response(200, json=task_json(), headers={"idempotency-replayed": "true"}),
    )
    async with make_client(handler) as client:
        task = await client.submit(REQUEST)
        keys = [request.headers["Idempotency-Key"] for request in handler.requests]
        assert len(keys) == 3 and len(set(keys)) == 1 and keys[0].startswith("seedream-")
        assert task.replayed
        handler.answers = [httpx.Response(200, json=task_json())]
        again = await client.submit(REQUEST)
        assert handler.requests[-1].headers["Idempotency-Key"] not in keys and not again.replayed
        await client.submit(REQUEST, idempotency_key="seedream-given")
        assert handler.requests[-1].headers["Idempotency-Key"] == "seedream-given"


async def test_retry_after_header_is_honoured_and_codes_are_the_apis(sleeps: list[float]) -> None:
    """A `Retry-After` header is a hint as good as the text; 402's string code is the code."""
    handler = Recorder(
        httpx.Response(429, json=error_json(429, "slow down", type="rate_limit_error"),
                       headers={"Retry-After": "7"}),
        httpx.Response(402, json={"error": {"code": "key_daily_quota_exhausted", "message": "daily cap",
                                            "type": "insufficient_quota_error", "request_id": "req-1"}},
                       headers={"Retry-After": "3600"}),
    )
    async with make_client(handler) as client:
        with pytest.raises(SeedreamError) as info:
            await client.submit(REQUEST)
    assert sleeps[0] >= 7.0  # the header's delay, not the backoff's
    error = info.value
    assert error.code == "key_daily_quota_exhausted" and error.status_code == 402  # type: ignore[attr-defined]
    assert error.account_scope == "account" and error.renews and error.retry_after == 3600.0  # type: ignore[attr-defined]
    assert error.request_id == "req-1" and not error.retryable  # type: ignore[attr-defined]


async def test_submit_5xx_gives_up_after_max_attempts(sleeps: list[float]) -> None:
    handler = Recorder(httpx.Response(500, json=error_json(500, "Internal error")))
    async with make_client(handler) as client:
        with pytest.raises(ServerError) as info:
            await client.submit(REQUEST)
    assert handler.calls == 3
    assert info.value.status_code == 500


async def test_submit_400_not_retried_and_keeps_the_body(sleeps: list[float]) -> None:
    body = error_json(
        400, "size 1024x1024 is below the minimum", type="invalid_request_error", param="size"
    )
    handler = Recorder(httpx.Response(400, json=body))
    async with make_client(handler) as client:
        with pytest.raises(BadRequestError) as info:
            await client.submit(REQUEST)
    assert handler.calls == 1
    assert sleeps == []
    error = info.value
    assert error.status_code == 400
    assert error.param == "size"
    assert error.message == "size 1024x1024 is below the minimum"
    assert error.error_type == "invalid_request_error"
    assert "param: size" in str(error)


async def test_submit_sends_the_validated_body_with_bearer() -> None:
    handler = Recorder(httpx.Response(200, json=task_json()))
    async with make_client(handler) as client:
        await client.submit(REQUEST)
    request = handler.requests[0]
    assert request.url == httpx.URL(API + "/v1/images/generations")
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert json.loads(request.content) == REQUEST.to_api_body()


async def test_error_status_without_json_body(sleeps: list[float]) -> None:
    handler = Recorder(httpx.Response(401, text="nope"))
    async with make_client(handler) as client:
        with pytest.raises(AuthenticationError) as info:
            await client.get_task(TASK_ID)
    assert handler.calls == 1
    assert info.value.message == "Unauthorized"


# -- task queries: retried on everything transient ------------------------------------------------


@pytest.mark.parametrize(
    "first",
    [
        httpx.ReadTimeout("timed out"),
        httpx.RemoteProtocolError("peer closed connection"),
        httpx.ConnectError("refused"),
        httpx.Response(502, text="bad gateway"),
    ],
)
async def test_get_task_is_retried(first: Any, sleeps: list[float]) -> None:
    handler = Recorder(first, httpx.Response(200, json=task_json("processing")))
    async with make_client(handler) as client:
        task = await client.get_task(TASK_ID)
    assert task.status is TaskStatus.PROCESSING
    assert handler.calls == 2
    assert handler.requests[1].url == httpx.URL(f"{API}/v1/tasks/{TASK_ID}")


async def test_get_task_non_json_is_a_response_format_error() -> None:
    handler = Recorder(httpx.Response(200, text="<html>"))
    async with make_client(handler) as client:
        with pytest.raises(ResponseFormatError) as info:
            await client.get_task(TASK_ID)
    assert info.value.retryable is True


@pytest.mark.parametrize(
    ("status", "where"),
    [(429, "fallback_suggestion"), (503, "fallback_suggestion"), (429, "message")],
)
async def test_retry_after_hint_is_honoured(status: int, where: str, sleeps: list[float]) -> None:
    hint = "retry after 7 seconds"
    fields = {"fallback_suggestion": hint} if where == "fallback_suggestion" else {}
    message = hint if where == "message" else "Too many requests"
    handler = Recorder(
        httpx.Response(status, json=error_json(status, message, **fields)),
        httpx.Response(200, json=task_json("completed", results=[CDN + "/a.png"])),
    )
    async with make_client(handler) as client:
        task = await client.get_task(TASK_ID)
    assert task.status is TaskStatus.COMPLETED
    assert handler.calls == 2
    assert len(sleeps) == 1
    # The hint plus at most min(1, hint/10) of jitter, never the 0.01 s backoff.
    assert 7.0 <= sleeps[0] <= 7.7


async def test_retry_after_above_the_cap_is_raised_not_slept(sleeps: list[float]) -> None:
    body = error_json(
        429,
        "Too many requests",
        type="rate_limit_error",
        fallback_suggestion="retry after 60 seconds",
    )
    handler = Recorder(httpx.Response(429, json=body), httpx.Response(200, json=task_json()))
    async with make_client(handler) as client:
        with pytest.raises(RateLimitError) as info:
            await client.get_task(TASK_ID)
    assert handler.calls == 1
    assert sleeps == []
    assert info.value.retry_after == 60.0
    # No retry layer (Prefect's included) may call again before the time the API asked for.
    assert info.value.retryable is False
    assert "not retried" in str(info.value)


async def test_submit_retry_after_above_the_cap_is_raised_not_slept(sleeps: list[float]) -> None:
    body = error_json(429, "Too many requests", fallback_suggestion="retry after 11 seconds")
    handler = Recorder(httpx.Response(429, json=body), httpx.Response(200, json=task_json()))
    async with make_client(handler) as client:
        with pytest.raises(RateLimitError):
            await client.submit(REQUEST)
    assert handler.calls == 1
    assert sleeps == []


# -- the API key stays secret ----------------------------------------------------------------------


@pytest.mark.parametrize("status", [400, 401, 402, 403, 404, 413, 429, 500, 503])
async def test_api_key_echoed_by_server_never_appears_in_errors(
    status: int, sleeps: list[float]
) -> None:
    body = error_json(
        status,
        f"token Bearer {KEY} rejected ({KEY})",
        type="whatever_error",
        fallback_suggestion=f"check your key {KEY}; retry after 1 seconds",
    )
    handler = Recorder(httpx.Response(status, json=body))
    async with make_client(handler) as client:
        for call in (client.submit(REQUEST), client.get_task(TASK_ID)):
            with pytest.raises(SeedreamError) as info:
                await call
            assert_no_key(info.value)
            assert "***" in str(info.value)  # the message was kept, with the key masked


@pytest.mark.parametrize(
    "answer",
    [
        httpx.ReadTimeout(f"timed out talking with {KEY}"),
        httpx.RemoteProtocolError(f"bad header Authorization: Bearer {KEY}"),
        httpx.ConnectError(f"refused for {KEY}"),
        httpx.Response(200, text=f"<html>your key is {KEY}</html>"),
        httpx.Response(200, json={"echo": KEY}),
    ],
)
async def test_api_key_never_appears_in_transport_or_format_errors(
    answer: Any, sleeps: list[float]
) -> None:
    async with make_client(Recorder(answer)) as client:
        for call in (client.submit(REQUEST), client.get_task(TASK_ID)):
            with pytest.raises(SeedreamError) as info:
                await call
            assert_no_key(info.value)


@pytest.mark.parametrize("field", ["param", "type"])
async def test_api_key_echoed_in_param_or_type_never_appears(
    field: str, sleeps: list[float]
) -> None:
    body = error_json(401, "invalid token", **{field: f"Bearer {KEY}"})
    async with make_client(Recorder(httpx.Response(401, json=body))) as client:
        with pytest.raises(AuthenticationError) as info:
            await client.get_task(TASK_ID)
    assert_no_key(info.value)


# -- wait() with scripted answers --------------------------------------------------------------------


async def test_wait_404_past_grace_raises_not_found(sleeps: list[float]) -> None:
    handler = Recorder(httpx.Response(404, json=error_json(404, "Task not found or expired")))
    async with make_client(handler) as client:
        with pytest.raises(NotFoundError):
            await client.wait(TASK_ID)  # not_found_grace=0
    assert handler.calls == 1


async def test_wait_non_retryable_poll_error_is_raised_at_once(sleeps: list[float]) -> None:
    handler = Recorder(httpx.Response(401, json=error_json(401, "expired token")))
    async with make_client(handler) as client:
        with pytest.raises(AuthenticationError):
            await client.wait(TASK_ID)
    assert handler.calls == 1


async def test_wait_gives_up_after_max_consecutive_errors(sleeps: list[float]) -> None:
    handler = Recorder(httpx.Response(503, text="busy"))
    client = make_client(handler, retry=RetryPolicy(max_attempts=1))
    async with client:
        with pytest.raises(ServerError):
            await client.wait(TASK_ID)  # max_consecutive_errors=2: the third error is raised
    assert handler.calls == 3


async def test_wait_error_streak_resets_after_a_good_poll(sleeps: list[float]) -> None:
    busy = httpx.Response(503, text="busy")
    handler = Recorder(
        busy,
        busy,
        httpx.Response(200, json=task_json("processing")),
        busy,
        busy,
        httpx.Response(200, json=task_json("completed", results=[CDN + "/a.png"])),
    )
    async with make_client(handler, retry=RetryPolicy(max_attempts=1)) as client:
        task = await client.wait(TASK_ID)
    assert task.status is TaskStatus.COMPLETED
    assert handler.calls == 6


async def test_wait_async_progress_callback_is_awaited(sleeps: list[float]) -> None:
    handler = Recorder(
        httpx.Response(200, json=task_json("processing")),
        httpx.Response(200, json=task_json("processing")),
        httpx.Response(200, json={**task_json("processing"), "progress": 50}),
        httpx.Response(200, json=task_json("completed", results=[CDN + "/a.png"])),
    )
    seen: list[tuple[str, int]] = []

    async def on_progress(task: Any) -> None:
        seen.append((task.status.value, task.progress))

    async with make_client(handler) as client:
        await client.wait(TASK_ID, on_progress=on_progress)
    assert seen == [("processing", 0), ("processing", 50), ("completed", 100)]


async def test_wait_cap_bounds_a_hanging_poll() -> None:
    async def slow(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(1.5)  # the real sleep: only the client's module is patched elsewhere
        return httpx.Response(200, json=task_json("processing"))

    async with make_client(slow) as client:
        started = time.monotonic()
        with pytest.raises(WaitTimeoutError):
            await client.wait(TASK_ID, max_wait=0.3)
        elapsed = time.monotonic() - started
    assert elapsed < 1.0


async def test_wait_first_poll_follows_the_estimate(sleeps: list[float]) -> None:
    handler = Recorder(httpx.Response(200, json=task_json("completed", results=[CDN + "/a.png"])))
    poll = PollPolicy(min_interval=0.5, max_interval=4.0, max_wait=60.0)
    async with make_client(handler) as client:
        await client.wait(TASK_ID, estimated_time=3, poll=poll)
        await client.wait(TASK_ID, estimated_time=45, poll=poll)
        await client.wait(TASK_ID, poll=poll)
    # At the estimate, within [min_interval, max_interval]; min_interval without one.
    assert sleeps == [3.0, 4.0, 0.5]


async def test_wait_backs_off_from_min_interval_after_the_estimate(sleeps: list[float]) -> None:
    handler = Recorder(
        httpx.Response(200, json=task_json("processing")),
        httpx.Response(200, json=task_json("processing")),
        httpx.Response(200, json=task_json("processing")),
        httpx.Response(200, json=task_json("completed", results=[CDN + "/a.png"])),
    )
    poll = PollPolicy(min_interval=0.5, max_interval=2.0, factor=1.5, max_wait=60.0)
    async with make_client(handler) as client:
        await client.wait(TASK_ID, estimated_time=2, poll=poll)
    assert sleeps == [2.0, 0.5, 0.75, 1.125]


# -- downloads --------------------------------------------------------------------------------------------


def cdn_url(name: str = "a.png") -> str:
    return f"{CDN}/results/{name}?sig=abc"


async def chunks(data: bytes, size: int) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


async def test_authorization_goes_to_the_api_host_only(png_bytes: bytes) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "cdn.elsewhere.test":
            return httpx.Response(200, content=png_bytes, headers={"content-type": "image/png"})
        if request.method == "POST":
            return httpx.Response(200, json=task_json())
        return httpx.Response(200, json=task_json("completed", results=[cdn_url()]))

    recorder = Recorder(handler)
    sink = io.BytesIO()
    async with make_client(recorder) as client:
        task = await client.submit(REQUEST)
        done = await client.get_task(task.id)
        result = await client.download(done.results[0], sink)
    api_requests = [r for r in recorder.requests if r.url.host == "api.seedream.test"]
    cdn_requests = [r for r in recorder.requests if r.url.host == "cdn.elsewhere.test"]
    assert len(api_requests) == 2 and len(cdn_requests) == 1
    assert all(r.headers.get("authorization") == f"Bearer {KEY}" for r in api_requests)
    assert "authorization" not in cdn_requests[0].headers
    assert all(KEY not in value for _, value in cdn_requests[0].headers.items())
    assert sink.getvalue() == png_bytes
    assert result.bytes_written == len(png_bytes)
    assert result.image_type == "png"
    assert result.content_type == "image/png"


async def test_download_on_the_api_host_sends_no_key_either(png_bytes: bytes) -> None:
    recorder = Recorder(httpx.Response(200, content=png_bytes))
    async with make_client(recorder) as client:
        await client.download(API + "/files/a.png", io.BytesIO())
    assert "authorization" not in recorder.requests[0].headers


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "streamed"])
async def test_download_size_cap(png_bytes: bytes, declared: bool, sleeps: list[float]) -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        content = png_bytes if declared else chunks(png_bytes, 100)
        return httpx.Response(200, content=content)

    recorder = Recorder(answer)
    async with make_client(recorder) as client:
        exact = io.BytesIO()
        result = await client.download(cdn_url(), exact, max_bytes=len(png_bytes))
        assert exact.getvalue() == png_bytes and result.bytes_written == len(png_bytes)
        with pytest.raises(ImageTooLargeError) as info:
            await client.download(cdn_url(), io.BytesIO(), max_bytes=len(png_bytes) - 1)
    assert info.value.retryable is False
    assert str(len(png_bytes) - 1) in str(info.value)
    assert recorder.calls == 2  # the too-large body is not fetched again


async def test_download_refuses_declared_oversize_before_reading() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        async def body() -> AsyncIterator[bytes]:
            raise AssertionError("the body must not be read when Content-Length is over the cap")
            yield b""  # pragma: no cover

        return httpx.Response(200, content=body(), headers={"content-length": str(10**9)})

    sink = io.BytesIO()
    async with make_client(Recorder(answer)) as client:
        with pytest.raises(ImageTooLargeError):
            await client.download(cdn_url(), sink, max_bytes=1000)
    assert sink.getvalue() == b""


@pytest.mark.parametrize(
    "body",
    [b"<html><body>Access denied</body></html>", b'{"error": "x"}', b"", b"GIF", b"\x00" * 4096],
    ids=["html", "json", "empty", "short", "zeros"],
)
async def test_download_not_an_image(body: bytes, sleeps: list[float]) -> None:
    recorder = Recorder(httpx.Response(200, content=body, headers={"content-type": "image/png"}))
    async with make_client(recorder) as client:
        with pytest.raises(NotAnImageError) as info:
            await client.download(cdn_url(), io.BytesIO())
    assert recorder.calls == 1
    assert info.value.retryable is False


async def test_download_in_tiny_chunks_is_exact(png_bytes: bytes) -> None:
    recorder = Recorder(lambda request: httpx.Response(200, content=chunks(png_bytes, 3)))
    sink = io.BytesIO()
    async with make_client(recorder) as client:
        result = await client.download(cdn_url(), sink)
    assert sink.getvalue() == png_bytes
    assert result.bytes_written == len(png_bytes)


async def test_download_rewinds_the_sink_on_retry(png_bytes: bytes, sleeps: list[float]) -> None:
    async def broken() -> AsyncIterator[bytes]:
        yield png_bytes[:100]
        yield png_bytes[100:200]
        raise httpx.ReadError("connection reset mid-body")

    recorder = Recorder(
        lambda request: httpx.Response(200, content=broken()),
        lambda request: httpx.Response(200, content=chunks(png_bytes, 64)),
    )
    sink = io.BytesIO()
    sink.write(b"HEADER")  # the download starts where the sink stands
    async with make_client(recorder) as client:
        result = await client.download(cdn_url(), sink)
    assert recorder.calls == 2
    assert len(sleeps) == 1
    assert sink.getvalue() == b"HEADER" + png_bytes
    assert result.bytes_written == len(png_bytes)


async def test_download_to_a_real_file_after_retry(
    png_bytes: bytes, tmp_path: Any, sleeps: list[float]
) -> None:
    recorder = Recorder(
        httpx.Response(500, text="oops"),
        httpx.Response(503, text="oops"),
        lambda request: httpx.Response(200, content=png_bytes),
    )
    path = tmp_path / "out.png"
    async with make_client(recorder) as client:
        with path.open("wb") as sink:
            await client.download(cdn_url(), sink)
    assert recorder.calls == 3
    assert path.read_bytes() == png_bytes


async def test_download_5xx_gives_up_after_max_attempts(sleeps: list[float]) -> None:
    recorder = Recorder(httpx.Response(500, text="oops"))
    async with make_client(recorder) as client:
        with pytest.raises(DownloadError) as info:
            await client.download(cdn_url(), io.BytesIO())
    assert recorder.calls == 3
    assert info.value.retryable is True
    assert "500" in str(info.value)


@pytest.mark.parametrize("status", [403, 404, 410])
async def test_download_expired(status: int, sleeps: list[float]) -> None:
    recorder = Recorder(httpx.Response(status, text="AccessDenied"))
    async with make_client(recorder) as client:
        with pytest.raises(ResultExpiredError) as info:
            await client.download(cdn_url(), io.BytesIO())
    assert recorder.calls == 1
    assert info.value.retryable is False
    assert info.value.url == cdn_url()


async def test_download_not_retried_into_an_unseekable_sink(
    png_bytes: bytes, sleeps: list[float]
) -> None:
    class Unseekable(io.RawIOBase):
        def __init__(self) -> None:
            self.data = bytearray()

        def writable(self) -> bool:
            return True

        def write(self, b: Any) -> int:
            self.data += bytes(b)
            return len(b)

    recorder = Recorder(httpx.Response(500, text="oops"), httpx.Response(200, content=png_bytes))
    async with make_client(recorder) as client:
        with pytest.raises(DownloadError) as info:
            await client.download(cdn_url(), Unseekable())
    assert recorder.calls == 1
    assert info.value.retryable is True


# -- configuration -----------------------------------------------------------------------------------------


def test_missing_api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SEEDREAM_API_KEY", raising=False)
    with pytest.raises(SeedreamConfigurationError) as info:
        SeedreamClient()
    assert "SEEDREAM_API_KEY" in str(info.value)
    with pytest.raises(SeedreamConfigurationError):
        SeedreamClient(api_key="")
    with pytest.raises(SeedreamConfigurationError):
        SyncSeedreamClient(base_url=API)


def test_empty_env_api_key_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEEDREAM_API_KEY", "")
    with pytest.raises(SeedreamConfigurationError):
        SeedreamClient()


async def test_env_vars_are_used(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEEDREAM_API_KEY", "sk-from-env")
    monkeypatch.setenv("SEEDREAM_BASE_URL", "https://env.seedream.test/")
    recorder = Recorder(httpx.Response(200, json=task_json()))
    async with SeedreamClient(transport=httpx.MockTransport(recorder)) as client:
        assert client.base_url == "https://env.seedream.test"
        await client.get_task(TASK_ID)
    request = recorder.requests[0]
    assert request.url == httpx.URL(f"https://env.seedream.test/v1/tasks/{TASK_ID}")
    assert request.headers["authorization"] == "Bearer sk-from-env"


async def test_explicit_arguments_beat_env_vars(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEEDREAM_API_KEY", "sk-from-env")
    monkeypatch.setenv("SEEDREAM_BASE_URL", "https://env.seedream.test")
    recorder = Recorder(httpx.Response(200, json=task_json()))
    async with make_client(recorder) as client:
        await client.get_task(TASK_ID)
    assert recorder.requests[0].url.host == "api.seedream.test"
    assert recorder.requests[0].headers["authorization"] == f"Bearer {KEY}"


def test_default_base_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SEEDREAM_BASE_URL", raising=False)
    client = SeedreamClient(api_key=KEY)
    assert client.base_url == "https://api.evolink.ai"
    assert KEY not in repr(client)


def test_sync_client_with_mock_transport(png_bytes: bytes) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "cdn.elsewhere.test":
            return httpx.Response(200, content=png_bytes)
        if request.method == "POST":
            return httpx.Response(200, json=task_json())
        return httpx.Response(200, json=task_json("completed", results=[cdn_url()]))

    sink = io.BytesIO()
    with SyncSeedreamClient(
        api_key=KEY,
        base_url=API,
        transport=httpx.MockTransport(handler),
        poll=PollPolicy(min_interval=0.01, max_interval=0.02),
    ) as client:
        task = client.submit(REQUEST)
        done = client.wait(task.id)
        result = client.download(done.results[0], sink)
    assert done.status is TaskStatus.COMPLETED
    assert sink.getvalue() == png_bytes and result.image_type == "png"
