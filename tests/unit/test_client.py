"""The client over real loopback HTTP against the project's simulator.

One simulator serves the whole module (tasks finish after 0.3 s); a test that needs
another configuration starts its own. Every prompt is unique, because the simulator
counts ``*N`` markers per prompt text and reports tasks created per prompt.
"""

from __future__ import annotations

import asyncio
import io
import itertools
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from PIL import Image

from prefect_seedream.api import (
    AuthenticationError,
    BadRequestError,
    DownloadError,
    GenerationRequest,
    GenerationTask,
    ImageTooLargeError,
    InsufficientQuotaError,
    NotAnImageError,
    NotFoundError,
    PermissionDeniedError,
    PollPolicy,
    RateLimitError,
    RequestTooLargeError,
    ResultExpiredError,
    RetryPolicy,
    SeedreamAPIError,
    SeedreamClient,
    ServerError,
    SubmissionOutcomeUnknownError,
    SyncSeedreamClient,
    TaskFailedError,
    TaskStatus,
    WaitTimeoutError,
)
from prefect_seedream.simulator import RunningSimulator, SimulatorConfig, running_simulator

KEY = "sk-sim-loopback-0123456789"
OTHER_KEY = "sk-sim-loopback-other"
FAST_POLL = PollPolicy(
    min_interval=0.05, max_interval=0.2, factor=1.5, max_wait=20.0, not_found_grace=5.0
)
FAST_RETRY = RetryPolicy(max_attempts=3, backoff_base=0.02, backoff_max=0.05, max_retry_after=5.0)
_counter = itertools.count()


def prompt(text: str) -> str:
    """A prompt no other test uses (markers are counted per prompt text)."""
    return f"{text} #{next(_counter)}-{time.monotonic_ns()}"


@pytest.fixture(scope="module")
def sim() -> Iterator[RunningSimulator]:
    config = SimulatorConfig(
        latency_seconds=0.3,
        jitter_seconds=0.0,
        api_keys={KEY, OTHER_KEY},
        download_max_bytes_oversize=3 * 1024 * 1024,
    )
    with running_simulator(config) as running:
        yield running


def client_for(sim: RunningSimulator, **kwargs: Any) -> SeedreamClient:
    kwargs.setdefault("api_key", KEY)
    kwargs.setdefault("retry", FAST_RETRY)
    kwargs.setdefault("poll", FAST_POLL)
    return SeedreamClient(base_url=sim.base_url, **kwargs)


def counters(sim: RunningSimulator) -> dict[str, int]:
    stats = sim.stats()
    return {
        name: stats[name] for name in ("submit_requests", "tasks_created", "polls", "downloads")
    }


def delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {name: after[name] - before[name] for name in before}


async def finish(client: SeedreamClient, request: GenerationRequest, **wait: Any) -> GenerationTask:
    task = await client.submit(request)
    return await client.wait(task.id, estimated_time=task.task_info.estimated_time, **wait)


# -- happy paths -----------------------------------------------------------------------------------


async def test_submit_wait_download_real_image(sim: RunningSimulator) -> None:
    text = prompt("A lighthouse at dawn")
    request = GenerationRequest(prompt=text, size="2560x1440")
    async with client_for(sim) as client:
        task = await client.submit(request)
        assert task.status is TaskStatus.PENDING
        assert task.id.startswith("task-unified-")
        assert task.usage is not None and task.usage.credits_reserved == pytest.approx(2.0)
        done = await client.wait(task.id, estimated_time=task.task_info.estimated_time)
        assert done.id == task.id
        assert done.status is TaskStatus.COMPLETED and done.progress == 100
        assert len(done.results) == 1
        sink = io.BytesIO()
        result = await client.download(done.results[0], sink)
    data = sink.getvalue()
    assert result.bytes_written == len(data) > 0
    assert result.image_type == "png" and result.content_type == "image/png"
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        assert image.format == "PNG"
        width, height = image.size
    assert width / height == pytest.approx(2560 / 1440, rel=0.02)  # downscaled, same shape
    assert sim.stats()["submissions_by_prompt"][text] == 1


async def test_several_images(sim: RunningSimulator) -> None:
    request = GenerationRequest(
        prompt=prompt("Generate 3 different images of a fox"), n=3, size="2K"
    )
    async with client_for(sim) as client:
        done = await finish(client, request)
        assert len(done.results) == 3
        blobs = []
        for url in done.results:
            sink = io.BytesIO()
            await client.download(url, sink)
            blobs.append(sink.getvalue())
    assert len(set(blobs)) == 3
    assert done.credits == pytest.approx(6.0)


async def test_model_40_with_fast_priority(sim: RunningSimulator) -> None:
    request = GenerationRequest(
        model="doubao-seedream-4.0",
        prompt=prompt("A small boat"),
        size="1K",
        prompt_priority="fast",
    )
    async with client_for(sim) as client:
        done = await finish(client, request)
    assert done.status is TaskStatus.COMPLETED
    assert done.model == "doubao-seedream-4.0"


def test_sync_client_happy_path(sim: RunningSimulator, tmp_path: Any) -> None:
    path = tmp_path / "fox.png"
    with SyncSeedreamClient(
        api_key=KEY, base_url=sim.base_url, retry=FAST_RETRY, poll=FAST_POLL
    ) as client:
        task = client.submit(GenerationRequest(prompt=prompt("A red fox"), size="2K"))
        done = client.wait(task.id, estimated_time=task.task_info.estimated_time)
        assert client.get_task(task.id).status is TaskStatus.COMPLETED
        with path.open("wb") as sink:
            result = client.download(done.results[0], sink)
    assert result.bytes_written == path.stat().st_size
    with Image.open(path) as image:
        image.load()
        assert image.size == (256, 256)  # 2K, downscaled by the simulator's image_max_side


# -- HTTP errors ---------------------------------------------------------------------------------------

ERROR_CLASSES = [
    (400, BadRequestError, False),
    (401, AuthenticationError, False),
    (402, InsufficientQuotaError, False),
    (403, PermissionDeniedError, False),
    (404, NotFoundError, False),
    (413, RequestTooLargeError, False),
    (429, RateLimitError, True),
    (500, ServerError, True),
    (502, ServerError, True),
    (503, ServerError, True),
]


@pytest.mark.parametrize(("status", "cls", "retryable"), ERROR_CLASSES)
async def test_submit_error_statuses(
    sim: RunningSimulator, status: int, cls: type, retryable: bool
) -> None:
    text = prompt(f"status [[sim:submit_status={status}]] [[sim:retry_after=0]]")
    before = counters(sim)
    async with client_for(sim) as client:
        with pytest.raises(cls) as info:
            await client.submit(GenerationRequest(prompt=text))
    error = info.value
    assert isinstance(error, SeedreamAPIError)
    assert error.status_code == status
    assert error.retryable is retryable
    assert error.message  # the simulator's own words came through
    change = delta(before, counters(sim))
    # Refusals are not retried; 429/5xx are, up to max_attempts. No task either way.
    assert change["submit_requests"] == (FAST_RETRY.max_attempts if retryable else 1)
    assert change["tasks_created"] == 0


@pytest.mark.parametrize(("status", "cls", "retryable"), ERROR_CLASSES)
async def test_poll_error_statuses(
    sim: RunningSimulator, status: int, cls: type, retryable: bool
) -> None:
    async with client_for(sim) as client:
        task = await client.submit(
            GenerationRequest(
                prompt=prompt(f"poll [[sim:poll_status={status}]] [[sim:retry_after=0]]")
            )
        )
        before = counters(sim)["polls"]
        with pytest.raises(cls) as info:
            await client.get_task(task.id)
    assert info.value.status_code == status
    assert counters(sim)["polls"] - before == (FAST_RETRY.max_attempts if retryable else 1)


async def test_server_side_validation_error_keeps_param(sim: RunningSimulator) -> None:
    # A body our own model would refuse, sent raw: the server's 400 must come back intact.
    request = GenerationRequest.model_construct(
        model="doubao-seedream-4.5",
        prompt=prompt("raw"),
        n=1,
        size="1K",
        prompt_priority=None,
        image_urls=(),
        callback_url=None,
    )
    async with client_for(sim) as client:
        with pytest.raises(BadRequestError) as info:
            await client.submit(request)
    assert info.value.param == "size"
    assert info.value.error_type == "invalid_request_error"


async def test_wrong_api_key_is_an_authentication_error(sim: RunningSimulator) -> None:
    async with client_for(sim, api_key="sk-not-a-valid-key") as client:
        with pytest.raises(AuthenticationError) as info:
            await client.submit(GenerationRequest(prompt=prompt("nope")))
    assert "sk-not-a-valid-key" not in str(info.value)


async def test_unknown_task_id_format(sim: RunningSimulator) -> None:
    async with client_for(sim) as client:
        with pytest.raises(BadRequestError) as bad:
            await client.get_task("not-a-task")
        with pytest.raises(NotFoundError):
            await client.get_task("task-unified-1-doesnotexist")
    assert bad.value.param == "task_id"


async def test_429_backoff_then_success(sim: RunningSimulator) -> None:
    text = prompt("busy [[sim:submit_status=429*2]] [[sim:retry_after=1]]")
    before = counters(sim)
    started = time.monotonic()
    async with client_for(sim) as client:
        task = await client.submit(GenerationRequest(prompt=text))
    elapsed = time.monotonic() - started
    change = delta(before, counters(sim))
    assert task.status is TaskStatus.PENDING
    assert change["submit_requests"] == 3
    assert change["tasks_created"] == 1
    assert sim.stats()["submissions_by_prompt"][text] == 1
    assert elapsed >= 2.0  # "retry after 1 seconds", honoured twice


async def test_concurrency_limit_429_waits_for_a_free_slot() -> None:
    config = SimulatorConfig(
        # The second submit comes within 0.8 s (429), its retry after >= 1 s (a free slot).
        latency_seconds=0.8,
        jitter_seconds=0.0,
        max_concurrent_tasks_per_key=1,
        rate_limit_retry_after=1,
    )
    with running_simulator(config) as limited:
        async with client_for(limited) as client:
            first = await client.submit(GenerationRequest(prompt=prompt("first")))
            second = await client.submit(GenerationRequest(prompt=prompt("second")))
        stats = limited.stats()
    assert first.id != second.id
    assert stats["submit_requests"] == 3
    assert stats["tasks_created"] == 2
    assert stats["peak_concurrent_tasks"] == 1


# -- waiting -----------------------------------------------------------------------------------------------


async def test_poll_tolerance(sim: RunningSimulator) -> None:
    text = prompt(
        "flaky [[sim:poll_404*1]] [[sim:poll_status=503*2]] [[sim:poll_malformed*1]] [[sim:retry_after=0]]"
    )
    before = counters(sim)
    async with client_for(sim) as client:
        done = await finish(client, GenerationRequest(prompt=text))
    assert done.status is TaskStatus.COMPLETED and done.results
    assert delta(before, counters(sim))["polls"] >= 5  # 404, 503, 503, malformed, then a task


@pytest.mark.parametrize("status", [429, 500, 502, 503])
async def test_transient_poll_statuses_are_tolerated(sim: RunningSimulator, status: int) -> None:
    text = prompt(f"flaky [[sim:poll_status={status}*4]] [[sim:retry_after=0]]")
    async with client_for(
        sim, retry=RetryPolicy(max_attempts=2, backoff_base=0.01, backoff_max=0.02)
    ) as client:
        done = await finish(client, GenerationRequest(prompt=text))
    assert done.status is TaskStatus.COMPLETED


async def test_persistent_poll_errors_are_raised(sim: RunningSimulator) -> None:
    text = prompt("broken [[sim:poll_status=500]]")
    poll = PollPolicy(min_interval=0.02, max_interval=0.05, max_consecutive_errors=2)
    async with client_for(sim, retry=RetryPolicy(max_attempts=1)) as client:
        task = await client.submit(GenerationRequest(prompt=text))
        with pytest.raises(ServerError):
            await client.wait(task.id, poll=poll)


async def test_wait_cap_raises_with_task_id(sim: RunningSimulator) -> None:
    text = prompt("slow [[sim:latency=60]]")
    async with client_for(sim) as client:
        task = await client.submit(GenerationRequest(prompt=text))
        started = time.monotonic()
        with pytest.raises(WaitTimeoutError) as info:
            await client.wait(task.id, max_wait=0.6)
        elapsed = time.monotonic() - started
        # The task is still there and can be collected later.
        assert (await client.get_task(task.id)).status in (
            TaskStatus.PENDING,
            TaskStatus.PROCESSING,
        )
    assert info.value.task_id == task.id
    assert info.value.last_status in ("pending", "processing")
    assert task.id in str(info.value)
    assert 0.5 <= elapsed < 3.0


async def test_task_of_another_key_is_not_found(sim: RunningSimulator) -> None:
    async with client_for(sim) as owner, client_for(sim, api_key=OTHER_KEY) as other:
        task = await owner.submit(GenerationRequest(prompt=prompt("private")))
        with pytest.raises(NotFoundError):
            await other.wait(
                task.id,
                poll=PollPolicy(min_interval=0.05, max_interval=0.1, not_found_grace=0.0),
            )
        assert (await owner.wait(task.id)).status is TaskStatus.COMPLETED


async def test_results_expire() -> None:
    config = SimulatorConfig(latency_seconds=0.2, jitter_seconds=0.0, result_ttl_seconds=0.5)
    with running_simulator(config) as short:
        async with client_for(short) as client:
            done = await finish(client, GenerationRequest(prompt=prompt("ephemeral")))
            assert done.status is TaskStatus.COMPLETED
            await asyncio.sleep(0.7)
            before = short.stats()["downloads"]
            with pytest.raises(ResultExpiredError) as info:
                await client.download(done.results[0], io.BytesIO())
            assert short.stats()["downloads"] - before == 1  # not retried
            with pytest.raises(NotFoundError):
                await client.get_task(done.id)
    assert info.value.retryable is False
    assert info.value.url == done.results[0]


async def test_on_progress_receives_state_changes(sim: RunningSimulator) -> None:
    text = prompt("progress [[sim:latency=1.2]]")
    seen: list[tuple[str, int]] = []
    async with client_for(sim) as client:
        task = await client.submit(GenerationRequest(prompt=text))
        done = await client.wait(
            task.id,
            on_progress=lambda t: seen.append((t.status.value, t.progress)),
            poll=PollPolicy(min_interval=0.05, max_interval=0.1),
        )
    assert done.status is TaskStatus.COMPLETED
    assert seen[-1] == ("completed", 100)
    assert len(seen) >= 3
    assert any(status == "processing" for status, _ in seen)
    assert all(a != b for a, b in itertools.pairwise(seen))  # only changes are reported
    assert [p for _, p in seen] == sorted(p for _, p in seen)


async def test_extra_fields_are_tolerated(sim: RunningSimulator) -> None:
    text = prompt("extras [[sim:extra_fields]]")
    async with client_for(sim) as client:
        task = await client.submit(GenerationRequest(prompt=text))
        done = await client.wait(task.id)
        sink = io.BytesIO()
        await client.download(done.results[0], sink)
    assert task.model_extra and "x_sim_extra" in task.model_extra
    assert done.status is TaskStatus.COMPLETED
    assert done.model_extra and "request_id" in done.model_extra
    assert sink.getvalue()[:8] == b"\x89PNG\r\n\x1a\n"


# -- submissions that may have created a task ---------------------------------------------------------------


async def test_dropped_connection_after_create_is_outcome_unknown(sim: RunningSimulator) -> None:
    text = prompt("dropped [[sim:drop_after_create]]")
    before = counters(sim)
    async with client_for(sim) as client:
        with pytest.raises(SubmissionOutcomeUnknownError) as info:
            await client.submit(GenerationRequest(prompt=text))
    assert info.value.retryable is False
    stats = sim.stats()
    assert stats["submissions_by_prompt"][text] == 1
    assert delta(before, counters(sim))["submit_requests"] == 1


async def test_slow_submit_with_short_read_timeout_is_outcome_unknown(
    sim: RunningSimulator,
) -> None:
    text = prompt("slow answer [[sim:submit_delay=1.5]]")
    before = counters(sim)
    # A submission has its own read timeout (120 s by default), not the client's read timeout.
    async with client_for(sim, timeout=httpx.Timeout(5.0, read=0.3), submit_timeout=0.3) as client:
        with pytest.raises(SubmissionOutcomeUnknownError) as info:
            await client.submit(GenerationRequest(prompt=text), idempotency_key="seedream-slow-1")
    assert "ReadTimeout" in str(info.value)
    assert info.value.idempotency_key == "seedream-slow-1" and info.value.code == "outcome_unknown"
    assert sim.stats()["submissions_by_prompt"][text] == 1
    assert delta(before, counters(sim))["submit_requests"] == 1


# -- failed tasks ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "kind", "retryable"),
    [
        ("content_policy_violation", "request", False),
        ("image_dimension_mismatch", "request", False),
        ("service_error", "service", True),
        ("generation_timeout", "service", True),
        ("resource_not_found", "gone", False),
        ("brand_new_code", "request", False),
    ],
)
async def test_task_failure_codes(
    sim: RunningSimulator, code: str, kind: str, retryable: bool
) -> None:
    text = prompt(f"fails [[sim:task_error={code}]]")
    async with client_for(sim) as client:
        done = await finish(client, GenerationRequest(prompt=text))
    assert done.status is TaskStatus.FAILED
    assert done.results == []
    assert done.error is not None and done.error.code == code
    with pytest.raises(TaskFailedError) as info:
        done.raise_for_failure()
    assert info.value.task_id == done.id
    assert info.value.code == code
    assert info.value.kind == kind
    assert info.value.retryable is retryable


# -- downloads ---------------------------------------------------------------------------------------------------


async def completed_url(client: SeedreamClient, marker: str) -> str:
    done = await finish(client, GenerationRequest(prompt=prompt(f"download {marker}")))
    assert done.status is TaskStatus.COMPLETED
    return done.results[0]


async def test_download_status_500_once_is_retried(sim: RunningSimulator) -> None:
    async with client_for(sim) as client:
        url = await completed_url(client, "[[sim:download_status=500*1]]")
        before = counters(sim)["downloads"]
        sink = io.BytesIO()
        await client.download(url, sink)
        again = io.BytesIO()
        await client.download(url, again)
    assert counters(sim)["downloads"] - before == 3  # 500, retry, then the clean second download
    assert sink.getvalue() == again.getvalue()
    Image.open(io.BytesIO(sink.getvalue())).verify()


async def test_truncated_once_is_retried_and_exact(sim: RunningSimulator) -> None:
    async with client_for(sim) as client:
        url = await completed_url(client, "[[sim:download=truncated*1]]")
        sink = io.BytesIO()
        await client.download(url, sink)
        clean = io.BytesIO()
        await client.download(url, clean)
    assert sink.getvalue() == clean.getvalue()
    Image.open(io.BytesIO(sink.getvalue())).verify()


async def test_always_truncated_fails_after_retries(sim: RunningSimulator) -> None:
    async with client_for(sim) as client:
        url = await completed_url(client, "[[sim:download=truncated]]")
        before = counters(sim)["downloads"]
        with pytest.raises(DownloadError) as info:
            await client.download(url, io.BytesIO())
    assert counters(sim)["downloads"] - before == FAST_RETRY.max_attempts
    assert info.value.retryable is True


async def test_not_an_image(sim: RunningSimulator) -> None:
    async with client_for(sim) as client:
        url = await completed_url(client, "[[sim:download=not_image]]")
        with pytest.raises(NotAnImageError):
            await client.download(url, io.BytesIO())


async def test_oversize(sim: RunningSimulator) -> None:
    async with client_for(sim) as client:
        url = await completed_url(client, "[[sim:download=oversize]]")
        before = counters(sim)["downloads"]
        with pytest.raises(ImageTooLargeError):
            await client.download(url, io.BytesIO(), max_bytes=1024 * 1024)
    assert counters(sim)["downloads"] - before == 1


async def test_expired_marker(sim: RunningSimulator) -> None:
    async with client_for(sim) as client:
        url = await completed_url(client, "[[sim:download=expired]]")
        with pytest.raises(ResultExpiredError):
            await client.download(url, io.BytesIO())
