"""Serve the deployments from one process, with no work pool (one machine).

Usage, with a Prefect server running (``prefect server start``) and ``PREFECT_API_URL``
pointing at it, from the folder the runs should work in (relative paths such as the default
dataset ``prompts.csv`` and ``output/`` are read and written there; ``prefect-seedream init``
writes a folder with that sample dataset)::

    .venv/bin/python deployments/serve.py

It serves the same four deployments as ``prefect.yaml`` beside it: the dataset flow (run it
from the UI's "Custom run"), the shard flow that a dataset run with ``shards`` > 1 starts, the
daily content pipeline on its cron schedule, and the recovery flow with a trigger on
``seedream.dataset.failed``. ``--interval SECONDS`` gives the content pipeline an interval
schedule instead (for a demo).

Every flow comes from the installed package (module paths, as in ``prefect.yaml``): nothing of
this repository is loaded, so this script runs from any folder.

Examples:
    ```bash
    cd my-project && python /path/to/deployments/serve.py --interval 60
    ```
"""

from __future__ import annotations

import argparse

from prefect import serve
from prefect.events import DeploymentEventTrigger

from prefect_seedream.flows import generate_dataset, generate_shard, recover_dataset
from prefect_seedream.pipelines.content import daily_content
from prefect_seedream.project import DAILY_CRON, SAMPLE_DATASET


def build_deployments(interval: float | None = None) -> list:
    """The deployments this project serves (those of ``prefect.yaml``).

    Args:
        interval: An interval schedule for daily-content, seconds; default: its cron.

    Examples:
        ```python
        [d.name for d in build_deployments()]
        # ['generate-dataset', 'generate-shard', 'daily-content', 'recover-after-failures']
        ```
    """
    recover_trigger = DeploymentEventTrigger(
        expect={"seedream.dataset.failed"},
        match={"prefect.resource.id": "seedream.dataset.*"},
        parameters={"output": "{{ event.payload.output }}"},
    )
    schedule = {"interval": interval} if interval else {"cron": DAILY_CRON}
    return [
        generate_dataset.to_deployment(
            name="generate-dataset",
            parameters={"dataset": SAMPLE_DATASET, "output": "output/ui-runs"},
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
    parser.add_argument(
        "--interval", type=float, help="interval schedule for daily-content, seconds"
    )
    args = parser.parse_args(argv)
    serve(*build_deployments(args.interval))


if __name__ == "__main__":
    main()
