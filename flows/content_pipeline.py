"""The scheduled content pipeline, kept here for imports and file entrypoints that name it.

The pipeline is part of the package: :mod:`prefect_seedream.pipelines.content`, deployed as
``prefect_seedream.pipelines.content:daily_content``. This module re-exports it, so that
``from flows.content_pipeline import daily_content`` and the entrypoint
``flows/content_pipeline.py:daily_content`` still load the same flow (``seedream-daily-content``).

Examples:
    >>> from prefect_seedream.pipelines import content
    >>> daily_content is content.daily_content and daily_content.name
    'seedream-daily-content'
"""

from prefect_seedream.pipelines.content import (
    DEFAULT_STYLES,
    DEFAULT_SUBJECTS,
    DEFAULT_TEMPLATE,
    build_prompts,
    daily_content,
)

__all__ = [
    "DEFAULT_STYLES",
    "DEFAULT_SUBJECTS",
    "DEFAULT_TEMPLATE",
    "build_prompts",
    "daily_content",
]
