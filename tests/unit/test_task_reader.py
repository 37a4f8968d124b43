"""The status reader (``TaskStatusReader``), ``get_tasks`` and ``get_credits``, over HTTP to the
simulator (its counters say how many requests of each kind the client made); a MockTransport
only for a batch answer the simulator does not give on demand (a 429 with Retry-After)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from prefect_seedream.api import (
    BalanceUnavailableError,
    CreditBalance,
    GenerationRequest,
    PollPolicy,
    RetryPolicy,
    SeedreamClient,
    SeedreamConfigurationError,
    ServerError,
    SyncSeedreamClient,
    TaskStatus,
)
from prefect_seedream.simulator import RunningSimulator, SimulatorConfig, running_simulator

KEY = "sk-test-reader"
FAST_RETRY = RetryPolicy(max_attempts=2, backoff_base=0.01, backoff_max=0.02)
READER_LOG = "prefect_seedream.api"


@pytest.fixture(scope="module")
def shared() -> Iterator[RunningSimulator]:
    with running_simulator(SimulatorConfig(latency_seconds=0.2, jitter_seconds=0.0)) as running:
        yield running


@pytest.fixture
def sim(shared: RunningSimulator) -> RunningSimulator:
    shared.reset()
    return shared


def client_for(sim: RunningSimulator, **kwargs: Any) -> SeedreamClient:
    kwargs.setdefault("retry", FAST_RETRY)
    kwargs.setdefault("api_key", KEY)
    return SeedreamClient(base_url=sim.base_url, **kwargs)


async def submit_many(client: SeedreamClient, count: int, prompt: str = "a fox") -> list[str]:
    tasks = [await client.submit(GenerationRequest(prompt=f"{prompt} #{i}")) for i in range(count)]
    return [task.id for task in tasks]


def requests_of(sim: RunningSimulator) -> dict[str, int]:
    stats = sim.stats()
    return {name: stats[name] for name in ("batch_requests", "batch_task_reads", "get_task_requests")}


# -- one request for many reads ------------------------------------------------------------------


async def test_many_reads_due_together_share_one_post(sim: RunningSimulator) -> None:
    async with client_for(sim) as client:
        ids = await submit_many(client, 12)
        found = await asyncio.gather(*(client.status_reader.read(task_id) for task_id in ids))
        assert not client.status_reader.running  # the loop ends with the last pending read
    assert [task.id for task in found] == ids
    assert requests_of(sim) == {"batch_requests": 1, "batch_task_reads": 12, "get_task_requests": 0}


async def test_reads_are_chunked_by_50(sim: RunningSimulator) -> None:
    async with client_for(sim) as client:
        ids = await submit_many(client, 120)
        found = await asyncio.gather(*(client.status_reader.read(task_id) for task_id in ids))
    assert {task.id for task in found} == set(ids)
    assert requests_of(sim) == {"batch_requests": 3, "batch_task_reads": 120, "get_task_requests": 0}


async def test_get_tasks_refuses_more_than_50_ids(sim: RunningSimulator) -> None:
    async with client_for(sim) as client:
        with pytest.raises(SeedreamConfigurationError):
            await client.get_tasks([f"task-unified-1-{i:08d}" for i in range(51)])
        assert await client.get_tasks([]) == []
    assert sim.stats()["batch_requests"] == 0


async def test_a_lone_read_is_a_get(sim: RunningSimulator) -> None:
    async with client_for(sim) as client:
        (task_id,) = await submit_many(client, 1)
        task = await client.status_reader.read(task_id)
    assert task.id == task_id
    assert requests_of(sim) == {"batch_requests": 0, "batch_task_reads": 0, "get_task_requests": 1}


async def test_a_task_missing_from_the_answer_is_read_alone(sim: RunningSimulator) -> None:
    async with client_for(sim) as client, client_for(sim, api_key="sk-someone-else") as other:
        ids = await submit_many(client, 2)
        (theirs,) = await submit_many(other, 1, prompt="theirs")
        flaky = (await client.submit(GenerationRequest(prompt="flaky [[sim:poll_status=503*1]]"))).id
        results = await asyncio.gather(
            *(client.status_reader.read(task_id) for task_id in [*ids, theirs, flaky]),
            return_exceptions=True,
        )
    assert [task.id for task in results[:2]] == ids  # type: ignore[union-attr]
    assert type(results[2]).__name__ == "NotFoundError"  # another key's task: its GET says 404
    assert results[3].id == flaky  # type: ignore[union-attr]  # its GET met the 503, retried
    # one POST for four ids; the two left out read alone: 404, and 503 then 200
    assert requests_of(sim) == {"batch_requests": 1, "batch_task_reads": 2, "get_task_requests": 3}


# -- waits -------------------------------------------------------------------------------------------


async def test_concurrent_waits_read_in_batches(sim: RunningSimulator) -> None:
    poll = PollPolicy(min_interval=0.3, max_interval=0.3)
    async with client_for(sim, poll=poll) as client:
        ids = await submit_many(client, 30)
        done = await asyncio.gather(*(client.wait(task_id, estimated_time=0.5) for task_id in ids))
        assert not client.status_reader.running
    assert all(task.status is TaskStatus.COMPLETED for task in done)
    reads = requests_of(sim)
    assert reads["batch_task_reads"] >= 30
    assert reads["batch_requests"] + reads["get_task_requests"] <= 6  # not 30 GETs


async def test_the_first_read_waits_for_the_estimate() -> None:
    config = SimulatorConfig(latency_seconds=0.2, jitter_seconds=0.0, estimated_time=2)
    with running_simulator(config) as sim:
        async with client_for(sim) as client:
            tasks = [await client.submit(GenerationRequest(prompt=f"p{i}")) for i in range(3)]
            started = time.monotonic()
            waits = [
                asyncio.ensure_future(client.wait(t.id, estimated_time=t.task_info.estimated_time))
                for t in tasks
            ]
            await asyncio.sleep(1.2)
            assert sim.stats()["status_requests"] == 0  # nothing read before the estimate
            done = await asyncio.gather(*waits)
            assert time.monotonic() - started >= 1.9
        assert sim.stats()["status_requests"] == 1  # all three read at 2 s in one POST
    assert all(task.status is TaskStatus.COMPLETED for task in done)


async def test_a_read_announced_before_the_interval_ends_joins_the_next_round(
    sim: RunningSimulator,
) -> None:
    async with client_for(sim) as client:
        reader = client.status_reader
        first, second, third = await submit_many(client, 3)
        await reader.read(first)  # a round: the next one comes `interval` (1 s) later at most
        reader.expect(third, time.monotonic() + 0.3)  # read a little before it falls due
        reader.expect(second, time.monotonic())
        await asyncio.gather(
            reader.read(second, max_delay=3.0), _read_later(reader, third, 0.25, max_delay=3.0)
        )
    assert requests_of(sim) == {"batch_requests": 1, "batch_task_reads": 2, "get_task_requests": 1}


async def _read_later(reader: Any, task_id: str, delay: float, max_delay: float) -> Any:
    await asyncio.sleep(delay)
    return await reader.read(task_id, max_delay=max_delay)


async def test_a_round_nobody_can_join_is_not_held_for_the_interval(
    sim: RunningSimulator,
) -> None:
    async with client_for(sim) as client:
        reader = client.status_reader
        first, second = await submit_many(client, 2)
        await reader.read(first)  # a round: the next one may come `interval` (1 s) later
        reader.expect(second, time.monotonic())
        started = time.monotonic()
        await reader.read(second, max_delay=3.0)  # announced, and nothing else is coming
        announced = time.monotonic() - started
        started = time.monotonic()
        await reader.read(first, max_delay=3.0)  # a direct read keeps the interval
        direct = time.monotonic() - started
        assert reader._expected == {}
    assert announced < 0.5 <= direct, (announced, direct)


async def test_a_wait_that_ends_or_is_cancelled_leaves_no_announcement(
    sim: RunningSimulator,
) -> None:
    async with client_for(sim) as client:
        done, pending = await submit_many(client, 2)
        await client.wait(done, estimated_time=0.3)
        waiting = asyncio.ensure_future(client.wait(pending, estimated_time=5))
        await asyncio.sleep(0.05)
        assert set(client.status_reader._expected) == {pending}
        waiting.cancel()
        await asyncio.gather(waiting, return_exceptions=True)
        assert client.status_reader._expected == {}


async def test_status_requests_per_task_at_concurrency_100() -> None:
    # A wrong estimate (1 s for tasks of 2 s): three reads per task, shared by the tasks due
    # together. One GET per read costs 2 or more requests per task.
    config = SimulatorConfig(latency_seconds=2.0, jitter_seconds=0.0, estimated_time=1)
    with running_simulator(config) as sim:
        async with client_for(sim, poll=PollPolicy(min_interval=0.75)) as client:

            async def one(i: int) -> TaskStatus:
                task = await client.submit(GenerationRequest(prompt=f"row {i}"))
                done = await client.wait(task.id, estimated_time=task.task_info.estimated_time)
                return done.status

            statuses = await asyncio.gather(*(one(i) for i in range(100)))
        stats = sim.stats()
    assert statuses == [TaskStatus.COMPLETED] * 100
    print("status requests per task:", stats["status_requests"] / 100)
    assert stats["status_requests"] / 100 <= 0.2, stats


async def test_a_cancelled_wait_leaves_the_others_alone(sim: RunningSimulator) -> None:
    async with client_for(sim) as client:
        ids = await submit_many(client, 3)
        reads = [asyncio.ensure_future(client.status_reader.read(task_id)) for task_id in ids]
        await asyncio.sleep(0)  # all three pending
        reads[1].cancel()
        results = await asyncio.gather(*reads, return_exceptions=True)
        assert not client.status_reader.running
    assert isinstance(results[1], asyncio.CancelledError)
    assert [results[0].id, results[2].id] == [ids[0], ids[2]]  # type: ignore[union-attr]
    assert requests_of(sim)["batch_task_reads"] == 2  # the cancelled read was not asked


async def test_closing_ends_pending_reads_and_the_loop(sim: RunningSimulator) -> None:
    client = client_for(sim)
    ids = await submit_many(client, 2)
    reads = [asyncio.ensure_future(client.status_reader.read(task_id)) for task_id in ids]
    await asyncio.sleep(0)
    assert client.status_reader.running
    await client.aclose()
    assert not client.status_reader.running
    results = await asyncio.gather(*reads, return_exceptions=True)
    assert all(type(result).__name__ == "SeedreamConnectionError" for result in results)
    assert [t for t in asyncio.all_tasks() if t.get_name() == "seedream-task-status-reader"] == []


# -- a missing or failing batch endpoint -------------------------------------------------------------


@pytest.mark.parametrize("mode", ["missing", "not_allowed"])
async def test_a_missing_batch_endpoint_falls_back_to_gets_once(
    mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    config = SimulatorConfig(latency_seconds=0.2, jitter_seconds=0.0, batch_endpoint=mode)
    caplog.set_level(logging.WARNING, logger=READER_LOG)
    with running_simulator(config) as sim:
        async with client_for(sim) as client:
            ids = await submit_many(client, 4)
            for _ in range(3):  # three rounds of reads
                found = await asyncio.gather(*(client.status_reader.read(i) for i in ids))
                assert [task.id for task in found] == ids
            assert not client.status_reader.batch_available
        stats = sim.stats()
    assert stats["batch_requests"] == 1  # asked once, never again
    assert stats["get_task_requests"] == 12
    warnings = [r for r in caplog.records if "/v1/tasks/batch" in r.getMessage()]
    assert len(warnings) == 1 and str(404 if mode == "missing" else 405) in warnings[0].getMessage()


async def test_a_failing_batch_endpoint_counts_as_poll_errors() -> None:
    config = SimulatorConfig(latency_seconds=0.2, jitter_seconds=0.0, batch_endpoint="failing")
    poll = PollPolicy(min_interval=0.05, max_interval=0.05, max_consecutive_errors=2)
    with running_simulator(config) as sim:
        async with client_for(sim, poll=poll) as client:
            ids = await submit_many(client, 3)
            results = await asyncio.gather(
                *(client.wait(i, estimated_time=0.1) for i in ids), return_exceptions=True
            )
            assert client.status_reader.batch_available  # a 500 is no reason to stop batching
        stats = sim.stats()
    assert all(isinstance(result, ServerError) for result in results), results
    # 3 rounds (2 errors tolerated, the third raised), each one POST retried once
    assert stats["batch_requests"] == 3 * FAST_RETRY.max_attempts
    assert stats["get_task_requests"] == 0


async def test_a_batch_retry_after_stretches_the_next_pause(monkeypatch: pytest.MonkeyPatch) -> None:
    api = "https://api.seedream.test"
    batch_answers = [
        httpx.Response(429, headers={"Retry-After": "1"}, json={"error": {"code": 429, "message": "slow down", "type": "rate_limit_error"}}),
    ]

    def task_json(task_id: str) -> dict[str, Any]:
        return {"id": task_id, "model": "doubao-seedream-4.5", "status": "completed", "progress": 100,
                "results": ["https://cdn.test/a.png"]}

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/tasks/batch":
            assert "idempotency-key" not in request.headers  # a read, not a paid write
            if batch_answers:
                return batch_answers.pop(0)
            ids = httpx.Response(200, content=request.content).json()["task_ids"]
            return httpx.Response(200, json={"data": [task_json(i) for i in ids]})
        raise AssertionError(f"unexpected {request.method} {request.url}")

    poll = PollPolicy(min_interval=0.05, max_interval=0.05)
    client = SeedreamClient(
        api_key=KEY, base_url=api, retry=RetryPolicy(max_attempts=1), poll=poll,
        transport=httpx.MockTransport(handler),
    )
    async with client:
        started = time.monotonic()
        done = await asyncio.gather(client.wait("task-unified-1-a"), client.wait("task-unified-1-b"))
        elapsed = time.monotonic() - started
    assert [task.status for task in done] == [TaskStatus.COMPLETED] * 2
    assert elapsed >= 1.0  # the 429's Retry-After, not the 0.05 s poll interval


# -- the balance ---------------------------------------------------------------------------------------


async def test_get_credits_reads_the_balance() -> None:
    config = SimulatorConfig(latency_seconds=0.1, jitter_seconds=0.0, account_credits=77.0)
    with running_simulator(config) as sim:
        async with client_for(sim) as client:
            before = await client.get_credits()
            task = await client.submit(GenerationRequest(prompt="a fox"))
            await client.wait(task.id, estimated_time=0.1)
            after = await client.get_credits()
        charged = sim.stats()["credits_charged"]
    assert before == CreditBalance(
        remaining=77.0, used=0.0, token_remaining=None, token_used=0.0, token_unlimited=True
    )
    assert before.spendable == 77.0
    assert after.remaining == pytest.approx(77.0 - charged) and after.used == charged > 0


@pytest.mark.parametrize(("mode", "status"), [("missing", 404), ("not_allowed", 405)])
async def test_a_missing_balance_endpoint_is_balance_unavailable(mode: str, status: int) -> None:
    config = SimulatorConfig(latency_seconds=0.1, credits_endpoint=mode)
    with running_simulator(config) as sim:
        async with client_for(sim) as client:
            with pytest.raises(BalanceUnavailableError) as info:
                await client.get_credits()
    assert info.value.status_code == status and not info.value.retryable
    assert KEY not in str(info.value)


async def test_a_failing_balance_endpoint_is_a_server_error() -> None:
    config = SimulatorConfig(latency_seconds=0.1, credits_endpoint="failing")
    with running_simulator(config) as sim:
        async with client_for(sim) as client:
            with pytest.raises(ServerError) as info:
                await client.get_credits()
        assert sim.stats()["credits_requests"] == FAST_RETRY.max_attempts  # retried like a GET
    assert not isinstance(info.value, BalanceUnavailableError)


def test_the_sync_client_reads_in_batches_and_the_balance(sim: RunningSimulator) -> None:
    with SyncSeedreamClient(api_key=KEY, base_url=sim.base_url, retry=FAST_RETRY) as client:
        ids = [client.submit(GenerationRequest(prompt=f"sync {i}")).id for i in range(3)]
        assert [task.id for task in client.get_tasks(ids)] == ids
        assert client.get_credits().remaining is None  # an unlimited account
        assert client.wait(ids[0], estimated_time=0.2).status is TaskStatus.COMPLETED
    assert sim.stats()["batch_requests"] == 1
