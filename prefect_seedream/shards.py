"""Sharded runs: one dataset as K shard flow runs on a work pool, followed by their parent.

The parent (:func:`prefect_seedream.flows.generate_dataset` with ``shards`` > 1) splits the
dataset into K row ranges (the dataset is streamed: a range is two row numbers), starts each
as a flow run of the shard deployment with ``run_deployment`` (a child of the parent in the
UI), and follows them: progress is read from the part files the shards write into the shared
output, which works on any store and costs the Prefect server nothing. A shard that crashes
(its worker died) is started once more on its range: it re-attaches to its tasks in flight
and skips its stored rows, so no row is submitted twice. When every shard is final, the
parent merges the parts into the manifest, filling any row no shard finished from the ledger.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any
from uuid import UUID

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.deployments import run_deployment
from prefect.flows import Flow
from prefect.logging import get_run_logger  # not `from prefect`: prefect.main costs 0.1 s

from prefect_seedream.artifacts import ProgressArtifact
from prefect_seedream.credentials import SeedreamCredentials
from prefect_seedream.engine.defaults import SHARD_POLL_SECONDS
from prefect_seedream.engine.rows import RowRange
from prefect_seedream.engine.run_folder import RunParts
from prefect_seedream.execution import RowsJob

#: States after which a shard will not change any more.
FINAL = {StateType.COMPLETED, StateType.FAILED, StateType.CRASHED, StateType.CANCELLED}
#: A crashed shard is started again this many times.
SHARD_RETRIES = 1
#: When no shard has left Scheduled after this long, the parent says why it may be waiting.
SHARD_START_WARNING_SECONDS = 60.0


def split_rows(total_rows: int, shards: int) -> list[RowRange]:
    """K row ranges of (nearly) equal size covering rows 1..total_rows.

    Examples:
        >>> [(r.first, r.last) for r in split_rows(10, 3)]
        [(1, 4), (5, 7), (8, 10)]
    """
    shards = max(1, min(shards, total_rows))
    size, extra = divmod(total_rows, shards)
    ranges, first = [], 1
    for index in range(shards):
        last = first + size - 1 + (1 if index < extra else 0)
        ranges.append(RowRange(first, last))
        first = last + 1
    return ranges


def unfair_share_warning(max_concurrency: int, shards: int, limit: int | None) -> str | None:
    """A warning when the shards together ask for more slots than the global limit has.

    Slots go to whoever leases first and stay there while its own rows wait, so one shard
    can starve until the others end (measured, 20,000 rows over 3 shards, limit 150: 1.36 x
    the ideal wall with 65 per shard, 1.06 x with 50).

    Examples:
        >>> unfair_share_warning(50, 3, 150) is None
        True
        >>> print(unfair_share_warning(65, 3, 150))
        3 shards x max_concurrency 65 = 195 slots asked of the limit of 150: the shards that lease first keep their slots and the others wait. Set max_concurrency to about 50 (the limit / the shards) to share it evenly.
    """
    if limit is None or shards <= 1 or max_concurrency * shards <= limit:
        return None
    share = max(1, limit // shards)
    return (
        f"{shards} shards x max_concurrency {max_concurrency} = {max_concurrency * shards} slots "
        f"asked of the limit of {limit}: the shards that lease first keep their slots and the "
        f"others wait. Set max_concurrency to about {share} (the limit / the shards) to share it "
        "evenly."
    )


def credentials_parameter(credentials: SeedreamCredentials | None) -> Any:
    """A saved block is passed by reference (its secret never travels in parameters);
    an unsaved one, or none, leaves each worker to its own environment."""
    block_id = getattr(credentials, "_block_document_id", None)
    return {"$ref": {"block_document_id": str(block_id)}} if block_id else None


async def check_shard_deployment(deployment: str, work_pool: str | None) -> None:
    """Fail before anything is read or spent when shards could not be started.

    Raises:
        ValueError: the deployment does not exist and no work pool was given to create it on.
    """
    if work_pool:
        return  # it is (re)created on that pool when the run starts
    from prefect.exceptions import ObjectNotFound

    async with get_client() as client:
        try:
            await client.read_deployment_by_name(deployment)
        except ObjectNotFound:
            raise ValueError(
                f"the shard deployment {deployment!r} does not exist: deploy it "
                "(`prefect deploy --prefect-file deployments/prefect.yaml --name generate-shard`) "
                "or pass the work pool to create it on (--work-pool POOL, work_pool=...)"
            ) from None


async def ensure_shard_deployment(deployment: str, work_pool: str, shard_flow: Flow[..., Any]) -> None:
    """Create (or update) the shard deployment on a work pool, from the installed package."""
    from prefect.deployments.runner import EntrypointType

    name = deployment.split("/", 1)[-1]
    runner_deployment = await shard_flow.ato_deployment(
        name=name, work_pool_name=work_pool, entrypoint_type=EntrypointType.MODULE_PATH,
        tags=["seedream", "shard"],
    )
    await runner_deployment.apply(work_pool_name=work_pool)


async def run_shards(
    job: RowsJob,
    *,
    shard_flow: Flow[..., Any],
    shards: int,
    deployment: str,
    work_pool: str | None,
    parts: RunParts,
    progress: ProgressArtifact,
    output: str,
) -> None:
    """Start a shard flow run per row range and follow them until every one is final.

    Each shard gets the run's options as they are, but for its rows' share of the budget.
    """
    if work_pool:
        await ensure_shard_deployment(deployment, work_pool, shard_flow)
    shard_runs = _ShardRuns(job, split_rows(job.total_rows, shards), deployment, output)
    await shard_runs.start_all()
    waiting_since = time.monotonic()
    async with get_client() as client:
        while True:
            await asyncio.sleep(SHARD_POLL_SECONDS)
            progress.set_done(await asyncio.to_thread(parts.rows_done))
            current = await _read_runs(client, shard_runs.ids())
            await shard_runs.restart_crashed(current)
            if shard_runs.all_final(current):
                break
            if waiting_since and any(r.state_type is not StateType.SCHEDULED for r in current.values()):
                waiting_since = 0.0  # a worker took one
            elif waiting_since and time.monotonic() - waiting_since > SHARD_START_WARNING_SECONDS:
                waiting_since = 0.0
                get_run_logger().warning(
                    "No worker has started a shard after %.0f s: is a worker running on the work "
                    "pool of %s (`prefect worker start --pool POOL`)?", SHARD_START_WARNING_SECONDS,
                    deployment,
                )
    shard_runs.log_ends(current)


class _ShardRuns:
    """The flow runs of a run's shards: started, restarted when they crash, followed."""

    def __init__(self, job: RowsJob, ranges: list[RowRange], deployment: str, output: str) -> None:
        self.job = job
        self.ranges = ranges
        self.deployment = deployment
        self.output = output
        self.runs: dict[int, FlowRun] = {}
        self.attempts = dict.fromkeys(range(len(ranges)), 0)
        self.logger = get_run_logger()

    async def start_all(self) -> None:
        """Start a flow run per row range."""
        for index in range(len(self.ranges)):
            self.runs[index] = await self.start(index)

    async def start(self, index: int) -> FlowRun:
        """Start (or start again) the flow run of shard ``index``, with its budget's share."""
        job, rows_range, attempt = self.job, self.ranges[index], self.attempts[index]
        options = job.options.share(rows=rows_range.rows, total_rows=job.total_rows)
        run = await run_deployment(
            name=self.deployment,
            parameters={
                "dataset": job.dataset, "output": self.output,
                "first_row": rows_range.first, "last_row": rows_range.last,
                "run_id": job.run_id, "total_rows": job.total_rows,
                "options": options.model_dump(mode="json"),
                "credentials": credentials_parameter(job.credentials),
                "concurrency_limit": job.concurrency_limit,
            },
            flow_run_name=f"shard-{index + 1}-of-{len(self.ranges)}-rows-{rows_range.first}-{rows_range.last}"
            + (f"-retry-{attempt}" if attempt else ""),
            timeout=0,
            as_subflow=True,
        )
        self.logger.info(
            "Shard %d of %d (rows %d-%d) is flow run %s", index + 1, len(self.ranges),
            rows_range.first, rows_range.last, run.name,
        )
        return run

    def ids(self) -> list[UUID]:
        """The current flow run of every shard."""
        return [run.id for run in self.runs.values()]

    async def restart_crashed(self, current: dict[UUID, FlowRun]) -> None:
        """Start again each shard that crashed, while it has restarts left."""
        for index, run in list(self.runs.items()):
            state = current.get(run.id)
            if state is None or state.state_type is not StateType.CRASHED:
                continue
            if self.attempts[index] < SHARD_RETRIES:
                self.attempts[index] += 1
                self.logger.warning(
                    "Shard %d (rows %d-%d) crashed (%s); starting it again: it re-attaches to its "
                    "tasks in flight and skips its stored rows", index + 1, self.ranges[index].first,
                    self.ranges[index].last, state.state.message if state.state else "",
                )
                self.runs[index] = await self.start(index)

    def all_final(self, current: dict[UUID, FlowRun]) -> bool:
        """Whether every shard's current flow run is final."""
        return all(
            (found := current.get(run.id)) is not None and found.state_type in FINAL
            for run in self.runs.values()
        )

    def log_ends(self, current: dict[UUID, FlowRun]) -> None:
        """One line per shard: how it ended."""
        for index, run in self.runs.items():
            final = current[run.id]
            self.logger.info("Shard %d ended %s: %s", index + 1, final.state_type.value,
                             final.state.message if final.state else "")


async def _read_runs(client: Any, ids: list[UUID]) -> dict[UUID, FlowRun]:
    found = await client.read_flow_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=ids)))
    return {run.id: run for run in found}

