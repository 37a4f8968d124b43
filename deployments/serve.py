"""Serve the deployments from one process, with no work pool (one machine).

Usage, from the repository's root, with a Prefect server running (``prefect server start``)
and ``PREFECT_API_URL`` pointing at it::

    .venv/bin/python deployments/serve.py

It serves the dataset flow (run it from the UI's "Custom run"), the shard flow that a dataset
run with ``shards`` > 1 starts, the daily content pipeline on its cron schedule, and the
recovery flow with a trigger on ``seedream.dataset.failed``. ``--interval SECONDS`` gives the
content pipeline an interval schedule instead (for a demo).

The plugin's flows come from the installed package; the content pipeline, a pipeline of this
repository, is loaded from its file by Prefect's own entrypoint loader (as ``prefect deploy``
does with ``flows/content_pipeline.py:daily_content``), so this script runs from any folder.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from prefect import serve
from prefect.events import DeploymentEventTrigger
from prefect.flows import load_flow_from_entrypoint

from prefect_seedream.flows import generate_dataset, generate_shard, recover_dataset

DAILY_CRON = "0 7 * * *"
CONTENT_PIPELINE = Path(__file__).resolve().parents[1] / "flows" / "content_pipeline.py"


def build_deployments(interval: float | None = None) -> list:
    """The deployments this project serves."""
    daily_content = load_flow_from_entrypoint(f"{CONTENT_PIPELINE}:daily_content")
    recover_trigger = DeploymentEventTrigger(
        expect={"seedream.dataset.failed"},
        match={"prefect.resource.id": "seedream.dataset.*"},
        parameters={"output": "{{ event.payload.output }}"},
    )
    schedule = {"interval": interval} if interval else {"cron": DAILY_CRON}
    return [
        generate_dataset.to_deployment(
            name="generate-dataset",
            parameters={"dataset": "examples/prompts.csv", "output": "output/ui-runs"},
            tags=["seedream"],
        ),
        generate_shard.to_deployment(name="generate-shard", tags=["seedream", "shard"]),
        # One run at a time: a day's runs share one output folder.
        daily_content.to_deployment(
            name="daily-content", tags=["seedream", "scheduled"], concurrency_limit=1, **schedule
        ),
        recover_dataset.to_deployment(
            name="recover-after-failures", tags=["seedream"], triggers=[recover_trigger]
        ),
    ]


def main(argv: list[str] | None = None) -> None:
    """Serve until interrupted."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--interval", type=float, help="interval schedule for daily-content, seconds")
    args = parser.parse_args(argv)
    serve(*build_deployments(args.interval))


if __name__ == "__main__":
    main()
