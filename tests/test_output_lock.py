"""One live run per output: the lock of an object store (moto's S3), and two dataset runs on one
output. The lock of a local folder is a unit test: ``tests/unit/test_output_lock_local.py``."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from prefect_seedream.engine.output_lock import (
    OutputLock,
    OutputLockedError,
    current_holder,
)
from prefect_seedream.engine.storage import ImageStore
from prefect_seedream.simulator import RunningSimulator
from tests.helpers import manifest, run_dataset, summary_of, write_csv


async def test_two_dataset_runs_on_one_output_at_once(
    prefect_api: None, seedream_env: RunningSimulator, tmp_path: Path
) -> None:
    """A second `prefect-seedream run` on a held output fails before any submission, with a
    clear message and exit code 2; the first run is untouched."""
    from prefect.settings import PREFECT_API_URL

    rows = [{"id": f"r{i}", "prompt": f"A lantern number {i} [[sim:latency=4]]"} for i in range(4)]
    dataset = write_csv(tmp_path / "d.csv", rows)
    output = tmp_path / "out"
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), "SEEDREAM_API_KEY": "sk-test",
           "SEEDREAM_BASE_URL": seedream_env.base_url}
    cli = Path(sys.executable).with_name("prefect-seedream")

    async def second_while_the_first_runs() -> subprocess.CompletedProcess[str]:
        while len(seedream_env.stats().get("submissions_by_prompt", {})) < 4:
            await asyncio.sleep(0.05)
        return await asyncio.to_thread(
            subprocess.run, [str(cli), "run", str(dataset), "--output", str(output)],
            env=env, capture_output=True, text=True, timeout=300,
        )

    first, second = await asyncio.gather(run_dataset(dataset, output), second_while_the_first_runs())

    assert first.is_completed(), first.message
    assert second.returncode == 2, second.stdout + second.stderr
    assert f"output {output} is in use by run {first.state_details.flow_run_id}" in second.stderr
    assert seedream_env.stats()["tasks_created"] == 4  # the second run submitted nothing
    assert [line["status"] for line in manifest(output)] == ["succeeded"] * 4
    assert (await summary_of(first)).succeeded == 4


@pytest.fixture
def s3_store(s3_endpoint: str) -> dict:
    """fsspec options of a bucket `locks` on moto's S3 server."""
    import s3fs

    options = {"client_kwargs": {"endpoint_url": s3_endpoint}, "key": "testing", "secret": "testing"}
    s3fs.S3FileSystem(**options).makedirs("locks", exist_ok=True)
    return options


def test_an_s3_output_lease_is_exclusive_and_lapses_when_its_run_is_gone(s3_store: dict) -> None:
    """Conditional creates (If-None-Match) make one winner; a lease not renewed lapses."""
    store = ImageStore("s3://locks/out", s3_store)
    first = OutputLock(store, run_id="run-a", ttl=2.0)
    first.acquire()
    with pytest.raises(OutputLockedError) as info:
        OutputLock(ImageStore("s3://locks/out", s3_store), run_id="run-b", ttl=2.0).acquire()
    assert "run run-a" in str(info.value) and "lapses in" in str(info.value)
    first._renew()  # a live holder renews without trouble

    time.sleep(2.5)  # run-a "was killed": no heartbeat for longer than the TTL
    second = OutputLock(ImageStore("s3://locks/out", s3_store), run_id="run-b", ttl=2.0)
    second.acquire()
    assert current_holder(store) is not None and current_holder(store).run_id == "run-b"
    with pytest.raises(OutputLockedError, match="taken over"):
        first._renew()  # the old holder finds out, and its run stops before its next batch
    first.release()  # ...and, ending, leaves the lease of the run that took over alone
    assert current_holder(store) is not None and current_holder(store).run_id == "run-b"
    second.release()
    third = OutputLock(ImageStore("s3://locks/out", s3_store), run_id="run-c", ttl=2.0)
    third.acquire()
    third.release()


def test_a_conditional_create_has_exactly_one_winner(s3_store: dict) -> None:
    store = ImageStore("s3://locks/race", s3_store)
    results = [store.create_exclusive("lease.json", f"writer {i}") for i in range(5)]
    assert results == [True, False, False, False, False]
    assert store.read_text("lease.json") == "writer 0"
