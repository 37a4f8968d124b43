"""What a person sees in the Prefect UI: progress, a summary, the rows and a gallery.

Four artifacts tell a run's story, whatever the entry point (see :mod:`prefect_seedream.story`
for their keys), and each stays bounded whatever the dataset's size:

* ``<prefix>-progress``: rows finished, updated in place (at most every few seconds);
* ``<prefix>-summary``: a table of counts by outcome (they are the manifest's), credits,
  images, and where the manifest is;
* ``<prefix>-rows``: the rows, those that did not succeed first (row id, status, the API's
  code and message, what to run next, remote task id), at most ``ROWS_TABLE_LIMIT`` of them
  (failures first, up to ``FAILED_ROWS_SHOWN``); its description names the manifest for
  the rest;
* ``<prefix>-gallery``: thumbnails of the first ``GALLERY_LIMIT`` images.

The prefix is ``seedream`` for the dataset flow unless its ``artifact_key`` says otherwise.

An image in an artifact is loaded by the *browser*, so a local path or an ``s3://`` URI would
show as a broken image. The gallery therefore embeds small ``data:`` thumbnails, whatever the
storage, and names each image's real location under it.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any
from uuid import UUID

from prefect.artifacts import (
    acreate_markdown_artifact,
    acreate_progress_artifact,
    acreate_table_artifact,
    aupdate_progress_artifact,
)

from prefect_seedream.engine.defaults import (
    PROGRESS_UPDATE_SECONDS,
)
from prefect_seedream.engine.gallery import Gallery
from prefect_seedream.engine.run_report import RunTables, StoryKeys, summary_table
from prefect_seedream.engine.summary import DatasetRunSummary


class ProgressArtifact:
    """A progress artifact updated in place as rows finish (at most every few seconds).

    A run creates it (:meth:`create`), calls :meth:`advance` as each row finishes and
    :meth:`finish` at its end.
    """

    def __init__(self, artifact_id: UUID, total: int, every: float = PROGRESS_UPDATE_SECONDS) -> None:
        self.artifact_id = artifact_id
        self.total = max(total, 1)
        self.done = 0
        self.every = every
        self._last_update = time.monotonic()
        self._pending: asyncio.Task[Any] | None = None

    @classmethod
    async def create(
        cls, total: int, description: str = "Rows finished", key: str | None = None
    ) -> ProgressArtifact:
        """Create the artifact at 0 % (``key=None``: an unkeyed one)."""
        artifact_id = await acreate_progress_artifact(0.0, key=key, description=description)
        return cls(artifact_id, total)

    @property
    def percent(self) -> float:
        """Rows finished, in percent."""
        return round(100.0 * min(self.done, self.total) / self.total, 1)

    def advance(self, rows: int = 1) -> None:
        """Count finished rows; update the artifact in the background, at most every few seconds.

        Rows never wait for the API: an update still in flight is not doubled.
        """
        self.set_done(self.done + rows)

    def set_done(self, done: int) -> None:
        """Set how many rows are finished (a sharded run's parent reads it from its shards)."""
        self.done = done
        now = time.monotonic()
        if now - self._last_update >= self.every and (self._pending is None or self._pending.done()):
            self._last_update = now
            self._pending = asyncio.create_task(
                aupdate_progress_artifact(self.artifact_id, self.percent)
            )

    async def finish(self) -> None:
        """Write the final figure (after any update still in flight)."""
        if self._pending is not None:
            await asyncio.gather(self._pending, return_exceptions=True)
        await aupdate_progress_artifact(self.artifact_id, self.percent)


async def publish_summary(
    summary: DatasetRunSummary, key: str, where: tuple[str, str] | None = None
) -> UUID:
    """A table of the run's counts by outcome (the manifest's), images, credits, manifest."""
    return await acreate_table_artifact(
        summary_table(summary, where), key=key, description=summary.message()
    )


async def publish_gallery(gallery: Gallery, key: str, where: str | None = None) -> UUID:
    """A markdown artifact of the gallery's thumbnails (it says so when no image was stored).

    Args:
        gallery: The images a run stored.
        key: The artifact's key (``<prefix>-gallery``).
        where: The manifest that lists every image.
    """
    return await acreate_markdown_artifact(
        gallery.markdown(where), key=key, description=f"Generated images: {gallery.total}"
    )


async def publish_tables(tables: RunTables, summary: DatasetRunSummary, keys: StoryKeys) -> None:
    """Create a run's summary and rows artifacts.

    Examples:
        ```python
        await publish_tables(RunTables(), DatasetRunSummary(), StoryKeys("seedream"))
        ```
    """
    await publish_summary(summary, keys.summary)
    await acreate_table_artifact(
        tables.table(), key=keys.rows, description=tables.description(summary.manifest)
    )
