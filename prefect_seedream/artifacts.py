"""What a person sees in the Prefect UI: progress, a summary, failures, rows and a gallery.

Every artifact stays bounded whatever the dataset's size:

* ``seedream-progress``: rows finished, updated in place (at most every few seconds);
* ``seedream-summary``: a table of counts by outcome (they are the manifest's), credits,
  images, and where the manifest is;
* ``seedream-failures``: the rows that did not succeed with their reasons, the first
  ``FAILED_ROWS_SHOWN`` of them, and the manifest's path for the rest;
* ``seedream-rows``: every row (id, status, remote task id, error), for runs of up to
  ``ROWS_TABLE_LIMIT`` rows; bigger runs have one table per batch of rows instead, on the
  batch's task run (see :mod:`prefect_seedream.batches`);
* ``seedream-gallery``: thumbnails of the first ``GALLERY_LIMIT`` images.

An image in an artifact is loaded by the *browser*, so a local path or an ``s3://`` URI would
show as a broken image. The gallery therefore embeds small ``data:`` thumbnails, whatever the
storage, and names each image's real location under it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from prefect.artifacts import (
    acreate_markdown_artifact,
    acreate_progress_artifact,
    acreate_table_artifact,
    aupdate_progress_artifact,
)

from prefect_seedream.defaults import (
    FAILED_ROWS_SHOWN,
    GALLERY_LIMIT,
    PROGRESS_UPDATE_SECONDS,
    ROWS_TABLE_LIMIT,
)
from prefect_seedream.manifest import ROW_STATUSES, ManifestImage, ManifestLine
from prefect_seedream.storage import StoredImage
from prefect_seedream.summary import DatasetRunSummary

PROGRESS_KEY = "seedream-progress"
SUMMARY_KEY = "seedream-summary"
FAILURES_KEY = "seedream-failures"
ROWS_KEY = "seedream-rows"
GALLERY_KEY = "seedream-gallery"


class ProgressArtifact:
    """A progress artifact updated in place as rows finish (at most every few seconds).

    Examples:
        ```python
        progress = await ProgressArtifact.create(total=200)
        progress.advance()
        await progress.finish()
        ```
    """

    def __init__(self, artifact_id: UUID, total: int, every: float = PROGRESS_UPDATE_SECONDS) -> None:
        self.artifact_id = artifact_id
        self.total = max(total, 1)
        self.done = 0
        self.every = every
        self._last_update = time.monotonic()
        self._pending: asyncio.Task[Any] | None = None

    @classmethod
    async def create(cls, total: int, description: str = "Rows finished") -> ProgressArtifact:
        """Create the artifact at 0 %."""
        artifact_id = await acreate_progress_artifact(0.0, key=PROGRESS_KEY, description=description)
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


def row_table(lines: Iterable[ManifestLine]) -> list[dict[str, Any]]:
    """Table rows for a list of lines: row, status, remote task id, images, credits, error."""
    return [
        {
            "row": line.row_id,
            "line": line.row_number,
            "status": line.status,
            "task id": line.task_id or "",
            "images": len(line.images),
            "credits": line.credits if line.credits is not None else "",
            "error": f"{line.error.code}: {line.error.message}" if line.error else "",
        }
        for line in lines
    ]


class RunTables:
    """Collects what the end-of-run tables show while the manifest is written, in bounded memory.

    Examples:
        >>> tables = RunTables(total_rows=3)
        >>> tables.keeps_every_row
        True
    """

    def __init__(self, total_rows: int) -> None:
        self.keeps_every_row = total_rows <= ROWS_TABLE_LIMIT
        self.rows: list[ManifestLine] = []
        self.failures: list[ManifestLine] = []
        self.failures_total = 0
        #: The first lines with images (enough for a gallery made from the manifest).
        self.gallery_lines: list[ManifestLine] = []

    def add(self, line: ManifestLine) -> None:
        """See one line of the manifest."""
        if self.keeps_every_row:
            self.rows.append(line)
        if line.images and len(self.gallery_lines) < GALLERY_LIMIT:
            self.gallery_lines.append(line)
        if line.status != "succeeded":
            self.failures_total += 1
            if len(self.failures) < FAILED_ROWS_SHOWN:
                self.failures.append(line)

    async def publish(self, summary: DatasetRunSummary) -> None:
        """Create the summary, failures and rows artifacts."""
        await publish_summary(summary)
        if self.failures_total:
            shown = len(self.failures)
            description = f"{self.failures_total} row(s) did not succeed"
            if shown < self.failures_total:
                description += f"; the first {shown} are listed, every row is in {summary.manifest}"
            await acreate_table_artifact(row_table(self.failures), key=FAILURES_KEY, description=description)
        if self.keeps_every_row:
            await acreate_table_artifact(
                row_table(self.rows), key=ROWS_KEY, description=f"Every row of the run ({len(self.rows)})"
            )


async def publish_summary(summary: DatasetRunSummary) -> UUID:
    """A table of the run's counts by outcome (the manifest's), images, credits, manifest."""
    table: list[dict[str, Any]] = [
        {"what": f"rows {status.replace('_', ' ')}", "count": getattr(summary, status)}
        for status in ROW_STATUSES
    ]
    table += [
        {"what": "rows in all", "count": summary.rows},
        {"what": "rows invalid (of the failed)", "count": summary.invalid},
        {"what": "rows stored by an earlier run (of the succeeded)", "count": summary.reused},
        {"what": "images stored", "count": summary.images},
        {"what": "credits charged by this run", "count": summary.credits},
        {"what": "credits reserved that may be charged", "count": summary.credits_at_risk},
    ]
    return await acreate_table_artifact(
        table, key=SUMMARY_KEY, description=f"{summary.message()}"
    )


class Gallery:
    """The images a run stored: a count of all, thumbnails of the first ``limit`` only.

    Examples:
        >>> gallery = Gallery()
        >>> gallery.add("a", StoredImage(uri="/out/a-1.png", width=64, height=64, bytes=10,
        ...     format="png", source_url="http://x", thumbnail="data:image/jpeg;base64,AA=="))
        >>> "![a](data:image/jpeg;base64,AA==)" in gallery.markdown()
        True
    """

    def __init__(self, limit: int = GALLERY_LIMIT) -> None:
        self.limit = limit
        self.total = 0
        self.shown: list[tuple[str, GalleryImage]] = []

    def wants_more(self) -> bool:
        """True while thumbnails are still needed (so that the rest skip making one)."""
        return len(self.shown) < self.limit

    def add(self, row_id: str, image: StoredImage) -> None:
        """Count an image; keep it (with its thumbnail) only while under the limit."""
        self.total += 1
        if len(self.shown) < self.limit and image.thumbnail:
            self.shown.append((row_id, GalleryImage(image.uri, image.width, image.height, image.thumbnail)))

    def add_thumbnail(self, row_id: str, image: ManifestImage, thumbnail: str) -> None:
        """Show a stored image listed by the manifest, with a thumbnail made afterwards."""
        self.total += 1
        if len(self.shown) < self.limit:
            self.shown.append((row_id, GalleryImage(image.uri, image.width, image.height, thumbnail)))

    def markdown(self) -> str:
        """Markdown with an embedded thumbnail per kept image and its storage location."""
        return gallery_markdown(self.shown, self.total)

    async def publish(self) -> UUID | None:
        """A markdown artifact of thumbnails, or None when nothing was stored."""
        if not self.shown:
            return None
        return await acreate_markdown_artifact(
            self.markdown(), key=GALLERY_KEY, description="Generated images"
        )


@dataclass(frozen=True)
class GalleryImage:
    """What the gallery shows of an image: where it is, its size and a ``data:`` thumbnail."""

    uri: str
    width: int
    height: int
    thumbnail: str


def gallery_markdown(images: Iterable[tuple[str, GalleryImage]], total: int) -> str:
    """Markdown with an embedded thumbnail per image and its storage location."""
    cells: list[str] = []
    for row_id, image in images:
        cells.append(
            f"**{row_id}** ({image.width}x{image.height})\n\n"
            f"![{row_id}]({image.thumbnail})\n\n`{image.uri}`\n"
        )
    header = f"# Generated images\n\n{total} image(s) stored"
    if total > len(cells):
        header += f"; the first {len(cells)} are shown"
    header += ". Thumbnails are embedded; the full images are at the locations below.\n\n"
    return header + "\n---\n\n".join(cells)
