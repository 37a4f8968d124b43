"""A scheduled content pipeline: build today's prompts from a template, then generate them.

Every run writes `<output_root>/<YYYY-MM-DD>/prompts.jsonl` (the prompts it built, one row
per subject and style) and runs the dataset flow over it into the same dated folder, so each
day's images, manifest and ledger stay together and a re-run of the same day pays nothing twice.

Deployed as ``prefect_seedream.pipelines.content:daily_content`` (the ``daily-content``
deployment that ``prefect-seedream init`` writes: cron ``0 7 * * *`` UTC, one run at a time).
This module has no ``from __future__ import annotations``: Prefect builds the flow's parameter
schema from the live annotations.

Examples:
    >>> build_prompts("A {style} image of {subject}", ["a fox"], ["pencil", "watercolor"])[1]
    {'id': 'a-fox-watercolor', 'prompt': 'A watercolor image of a fox'}
"""

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated

import fsspec
from prefect import flow, get_run_logger
from prefect.states import State
from pydantic import Field

from prefect_seedream.api.models import DEFAULT_MODEL, ModelName, Quality
from prefect_seedream.credentials import SeedreamCredentials
from prefect_seedream.flows import generate_dataset

DEFAULT_TEMPLATE = "A {style} image of {subject}, editorial quality, no text"
DEFAULT_SUBJECTS = ["a lighthouse at dawn", "a city street after rain", "a mountain lake in autumn"]
DEFAULT_STYLES = ["watercolor", "photographic"]


def build_prompts(template: str, subjects: list[str], styles: list[str]) -> list[dict[str, str]]:
    """One dataset row per subject and style, with a stable id.

    Examples:
        >>> build_prompts("A {style} {subject}", ["fox"], ["pencil"])
        [{'id': 'fox-pencil', 'prompt': 'A pencil fox'}]
    """
    rows = []
    for subject in subjects:
        for style in styles:
            slug = "-".join(f"{subject} {style}".lower().split())[:80]
            rows.append({"id": slug, "prompt": template.format(subject=subject, style=style)})
    return rows


@flow(name="seedream-daily-content", validate_parameters=True)
async def daily_content(
    template: str = DEFAULT_TEMPLATE,
    subjects: list[str] = DEFAULT_SUBJECTS,
    styles: list[str] = DEFAULT_STYLES,
    output_root: str = "output/daily",
    model: ModelName = DEFAULT_MODEL,
    size: str = "2K",
    quality: Quality | None = None,
    max_concurrency: Annotated[int, Field(ge=1, le=64)] = 4,
    max_credits: Annotated[float, Field(gt=0)] | None = 50.0,
    credentials: SeedreamCredentials | None = None,
    day: str | None = None,
) -> State:
    """Generate the day's images from a prompt template.

    Args:
        template: Prompt template with `{subject}` and `{style}` placeholders.
        subjects: What to picture, one prompt per subject and style.
        styles: Visual styles to combine with each subject.
        output_root: Folder or fsspec URL; each day goes to `<output_root>/<YYYY-MM-DD>`.
        model: Seedream model (a known one, or any name: sent as is).
        size: `auto`, a ratio (`16:9`, with `quality`), a preset (`2K`) or `WxH`.
        quality: Resolution of a ratio size (`1K`, `1.5K`, `2K`, `3K`, `4K`: per model).
        max_concurrency: Most generations in flight at once.
        max_credits: Budget of one day's run.
        credentials: A SeedreamCredentials block; default: SEEDREAM_API_KEY / SEEDREAM_BASE_URL.
        day: The day to (re)generate, YYYY-MM-DD; default: today (UTC).

    Returns:
        The final state of the day's dataset run.

    Examples:
        ```python
        import asyncio
        from prefect_seedream.pipelines.content import daily_content

        state = asyncio.run(daily_content(subjects=["a red fox"], styles=["pencil sketch"]))
        print(state.message)  # the day's dataset run: "1 of 1 rows succeeded; ..."
        ```
    """
    day = day or datetime.now(timezone.utc).strftime("%Y-%m-%d")
    folder = f"{output_root.rstrip('/')}/{day}"
    rows = build_prompts(template, subjects, styles)
    dataset = f"{folder}/prompts.jsonl"
    if "://" not in folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
    with fsspec.open(dataset, "w", encoding="utf-8") as handle:
        handle.write("".join(json.dumps(row) + "\n" for row in rows))
    get_run_logger().info("%d prompts for %s written to %s", len(rows), day, dataset)
    return await generate_dataset(
        dataset,
        folder,
        model=model,
        size=size,
        quality=quality,
        max_concurrency=max_concurrency,
        max_credits=max_credits,
        credentials=credentials,
        return_state=True,
    )
