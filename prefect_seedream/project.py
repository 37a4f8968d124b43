"""``prefect-seedream init``: a deployable project folder for the installed package.

It writes two files into a folder: ``prefect.yaml``, the package's four deployments (the
dataset flow, its shard flow, the daily content pipeline on a cron schedule and the recovery
flow with a trigger on ``seedream.dataset.failed``, all on the process work pool
``seedream-process``), and ``prompts.csv``, the sample dataset the dataset deployment reads by
default. Every entrypoint is a module path of the installed package
(``prefect_seedream.flows:generate_dataset``): the folder holds no code, and a worker needs
the package installed and nothing else.

The repository's ``deployments/prefect.yaml`` and ``deployments/prompts.csv`` are this
module's output (``prefect-seedream init deployments --force``); a test keeps them equal.

Examples:
    >>> import tempfile
    >>> folder = tempfile.mkdtemp()
    >>> [path.name for path in init_project(folder)]
    ['prefect.yaml', 'prompts.csv']
    >>> try:
    ...     init_project(folder)
    ... except ProjectExistsError as exc:
    ...     print(sorted(path.name for path in exc.paths))
    ['prefect.yaml', 'prompts.csv']
"""

from __future__ import annotations

import os
from importlib.resources import files
from pathlib import Path

#: The deployments file ``init`` writes.
PREFECT_FILE = "prefect.yaml"
#: The sample dataset ``init`` writes beside it (the dataset deployment's default).
SAMPLE_DATASET = "prompts.csv"
#: Where the package keeps the sample dataset (package data).
SAMPLE_DATASET_RESOURCE = "data/prompts.csv"

#: Flow names and entrypoints of the deployments: a module path of the installed package each.
ENTRYPOINTS = {
    "generate-dataset": "prefect_seedream.flows:generate_dataset",
    "generate-shard": "prefect_seedream.flows:generate_shard",
    "daily-content": "prefect_seedream.pipelines.content:daily_content",
    "recover-after-failures": "prefect_seedream.flows:recover_dataset",
}
#: The work pool every deployment is on.
WORK_POOL = "seedream-process"
#: The daily content pipeline's schedule (UTC).
DAILY_CRON = "0 7 * * *"

PREFECT_YAML = f"""\
# Deployments of prefect-seedream, written by `prefect-seedream init`. From this folder:
#
#   prefect work-pool create {WORK_POOL} --type process
#   prefect --no-prompt deploy --all
#   prefect worker start --pool {WORK_POOL}
#
# Every entrypoint is a module of the installed package: a worker needs `pip install
# prefect-seedream` and no code from this folder. There is no `pull` section:
# `prefect deploy` records the folder it runs in as the runs' working directory, so relative
# paths (the sample `{SAMPLE_DATASET}`, `output/...`) are read and written in this folder.
#
# Credentials: save a SeedreamCredentials block and pick it in the run form, or give the
# worker SEEDREAM_API_KEY (and SEEDREAM_BASE_URL for the simulator) in its environment.
name: prefect-seedream

deployments:
  - name: generate-dataset
    description: Generate images for every row of a prompt dataset (CSV, JSONL, Parquet) and write a manifest.
    entrypoint: {ENTRYPOINTS["generate-dataset"]}
    tags: [seedream]
    parameters:
      dataset: {SAMPLE_DATASET}
      output: output/ui-runs
    work_pool:
      name: {WORK_POOL}

  # One row range of a sharded dataset run (`shards` > 1): started by generate-dataset with
  # run_deployment, never by hand. Every worker of the pool must reach the dataset and the
  # output (a shared folder or an s3:// URL).
  - name: generate-shard
    description: One row range of a sharded dataset run (started by seedream-generate-dataset).
    entrypoint: {ENTRYPOINTS["generate-shard"]}
    tags: [seedream, shard]
    work_pool:
      name: {WORK_POOL}

  - name: daily-content
    description: Every morning, build prompts from a template and generate them into output/daily/<date>.
    entrypoint: {ENTRYPOINTS["daily-content"]}
    tags: [seedream, scheduled]
    concurrency_limit: 1  # a day's runs share one output folder
    schedules:
      - cron: "{DAILY_CRON}"
        timezone: UTC
        active: true
    work_pool:
      name: {WORK_POOL}

  # Reacts to our events: when a dataset run ends with failures, collect what it left in
  # flight (it never submits, so it cannot pay twice or loop).
  - name: recover-after-failures
    description: Collect remote tasks left in flight by a dataset run that ended with failures.
    entrypoint: {ENTRYPOINTS["recover-after-failures"]}
    tags: [seedream]
    work_pool:
      name: {WORK_POOL}
    triggers:
      - type: event
        enabled: true
        match:
          prefect.resource.id: "seedream.dataset.*"
        expect:
          - seedream.dataset.failed
        parameters:
          output: "{{{{ event.payload.output }}}}"
"""


class ProjectExistsError(FileExistsError):
    """Files ``init`` would write exist already (and ``force`` was not given).

    Attributes:
        paths: The files that exist.
    """

    def __init__(self, paths: list[Path]) -> None:
        self.paths = paths
        names = ", ".join(str(path) for path in paths)
        super().__init__(
            f"{names} exist already (nothing was written); pass --force to overwrite them"
        )


def sample_dataset() -> bytes:
    """The package's sample dataset (14 prompts), as the bytes ``init`` writes.

    Examples:
        >>> sample_dataset().splitlines()[0]
        b'id,prompt,size,n,model'
    """
    return files("prefect_seedream").joinpath(SAMPLE_DATASET_RESOURCE).read_bytes()


def project_files() -> dict[str, bytes]:
    """What ``init`` writes: file name -> content.

    Examples:
        >>> sorted(project_files())
        ['prefect.yaml', 'prompts.csv']
        >>> yaml_text = project_files()["prefect.yaml"].decode()
        >>> "entrypoint: prefect_seedream.flows:generate_dataset" in yaml_text
        True
    """
    return {PREFECT_FILE: PREFECT_YAML.encode("utf-8"), SAMPLE_DATASET: sample_dataset()}


def init_project(directory: str | os.PathLike[str] = ".", force: bool = False) -> list[Path]:
    """Write ``prefect.yaml`` and ``prompts.csv`` into ``directory`` (created if missing).

    Args:
        directory: The project folder.
        force: Overwrite files that exist; without it, nothing is written when any exists.

    Returns:
        The paths written, in the order of :func:`project_files`.

    Raises:
        ProjectExistsError: a file exists and ``force`` is false (nothing was written).

    Examples:
        >>> import tempfile
        >>> folder = Path(tempfile.mkdtemp()) / "my-project"
        >>> [path.relative_to(folder).as_posix() for path in init_project(folder)]
        ['prefect.yaml', 'prompts.csv']
        >>> len(init_project(folder, force=True))
        2
    """
    folder = Path(directory)
    contents = project_files()
    targets = {folder / name: content for name, content in contents.items()}
    existing = [path for path in targets if path.exists() or path.is_symlink()]
    if existing and not force:
        raise ProjectExistsError(existing)
    folder.mkdir(parents=True, exist_ok=True)
    for path, content in targets.items():
        path.write_bytes(content)
    return list(targets)
