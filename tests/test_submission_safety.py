"""What keeps a paid submission from being paid twice (issue 16), in the Prefect layer: the
``submit_generation`` task called outside a task run.

The engine's rules (a key in doubt stays in doubt, a submission withdrawn when the account
stopped, the task list never matching another submission's task, a stop shared between shards)
are unit tests: ``tests/unit/test_submission_keys.py``.
"""

from __future__ import annotations

from prefect import flow

from prefect_seedream.api import GenerationRequest
from prefect_seedream.api.models import GenerationTask
from prefect_seedream.simulator import RunningSimulator
from prefect_seedream.tasks import submit_generation


async def test_submit_generation_outside_a_task_run_makes_a_key_per_call(seedream_env: RunningSimulator) -> None:
    """``submit_generation.fn`` in a flow (no task run): each call its own key (one shared key
    would make the second request a 409 conflict, or a replay of the first)."""

    @flow
    async def two() -> list[GenerationTask]:
        return [
            await submit_generation.fn(GenerationRequest(prompt="a fox")),
            await submit_generation.fn(GenerationRequest(prompt="a hare")),
        ]

    first, second = await two()
    assert first.id != second.id and not first.replayed and not second.replayed
    assert seedream_env.stats()["tasks_created"] == 2
