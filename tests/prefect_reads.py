"""Reading back what a run left in the Prefect API: task runs, artifacts, events."""

from __future__ import annotations

import asyncio
from typing import Any
from uuid import UUID

import httpx
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    FlowRunFilter,
    FlowRunFilterId,
)
from prefect.settings import PREFECT_API_URL
from prefect.states import State


async def task_runs_by_name(flow_run_id: UUID) -> dict[str, Any]:
    """The flow run's task runs keyed by name."""
    async with get_client() as client:
        runs = await client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
        )
    return {run.name: run for run in runs}


async def artifacts_of(flow_run_id: UUID) -> list[Any]:
    """Every artifact the flow run created."""
    async with get_client() as client:
        return await client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )


async def events_of_run(
    flow_run_id: UUID, prefix: str, expected: int, timeout: float = 30.0
) -> list[dict[str, Any]]:
    """A flow run's events named ``prefix...``, waiting until ``expected`` are persisted."""
    url = f"{PREFECT_API_URL.value()}/events/filter"
    body = {
        "filter": {
            "event": {"prefix": [prefix]},
            "related": {"id": [f"prefect.flow-run.{flow_run_id}"]},
        },
        "limit": 50,
    }
    events: list[dict[str, Any]] = []
    deadline = asyncio.get_running_loop().time() + timeout
    async with httpx.AsyncClient() as http:
        while asyncio.get_running_loop().time() < deadline:
            response = await http.post(url, json=body)
            response.raise_for_status()
            events = response.json()["events"]
            if len(events) >= expected:
                break
            await asyncio.sleep(0.5)
    return events


def flow_run_id_of(state: State) -> UUID:
    """The flow run id a final state belongs to."""
    assert state.state_details.flow_run_id is not None
    return state.state_details.flow_run_id
