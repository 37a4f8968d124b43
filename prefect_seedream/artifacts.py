"""What a person sees in the Prefect UI: progress, a summary table and a gallery.

An image in an artifact is loaded by the *browser*, so a local path or an
``s3://`` URI would show as a broken image. The gallery therefore embeds small
``data:`` thumbnails made while storing each image, whatever the storage, and
names each image's real location under it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from uuid import UUID

from prefect.artifacts import (
    acreate_markdown_artifact,
    acreate_progress_artifact,
    acreate_table_artifact,
    aupdate_progress_artifact,
)

from prefect_seedream.manifest import ManifestLine
from prefect_seedream.storage import StoredImage

PROGRESS_KEY = "seedream-progress"
SUMMARY_KEY = "seedream-summary"
GALLERY_KEY = "seedream-gallery"
GALLERY_LIMIT = 48


class ProgressArtifact:
    """A progress artifact updated in place as rows finish (at most once a second).

    Examples:
        ```python
        progress = await ProgressArtifact.create(total=200)
        progress.advance()
        await progress.finish()
        ```
    """

    def __init__(self, artifact_id: UUID, total: int) -> None:
        self.artifact_id = artifact_id
        self.total = max(total, 1)
        self.done = 0
        self._last_update = 0.0
        self._pending: asyncio.Task[UUID] | None = None

    @classmethod
    async def create(cls, total: int, description: str = "Rows finished") -> ProgressArtifact:
        """Create the artifact at 0 %."""
        artifact_id = await acreate_progress_artifact(0.0, key=PROGRESS_KEY, description=description)
        return cls(artifact_id, total)

    @property
    def percent(self) -> float:
        """Rows finished, in percent."""
        return round(100.0 * self.done / self.total, 1)

    def advance(self, rows: int = 1) -> None:
        """Count finished rows; update the artifact in the background, at most once a second.

        Rows never wait for the API: an update still in flight is not doubled.
        """
        self.done += rows
        now = time.monotonic()
        if now - self._last_update >= 1.0 and (self._pending is None or self._pending.done()):
            self._last_update = now
            self._pending = asyncio.create_task(
                aupdate_progress_artifact(self.artifact_id, self.percent)
            )

    async def finish(self) -> None:
        """Write the final figure (after any update still in flight)."""
        if self._pending is not None:
            await asyncio.gather(self._pending, return_exceptions=True)
        await aupdate_progress_artifact(self.artifact_id, self.percent)


async def publish_summary_table(lines: list[ManifestLine]) -> UUID:
    """A table artifact: one row per input row (status, task id, images, error)."""
    table = [
        {
            "row": line.row_id,
            "status": line.status,
            "task id": line.task_id or "",
            "images": len(line.images),
            "credits": line.credits if line.credits is not None else "",
            "error": f"{line.error.code}: {line.error.message}" if line.error else "",
        }
        for line in sorted(lines, key=lambda item: item.row_number)
    ]
    counts: dict[str, int] = {}
    for line in lines:
        counts[line.status] = counts.get(line.status, 0) + 1
    description = ", ".join(f"{count} {status}" for status, count in sorted(counts.items()))
    return await acreate_table_artifact(table, key=SUMMARY_KEY, description=description)


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
        self.shown: list[tuple[str, StoredImage]] = []

    def add(self, row_id: str, image: StoredImage) -> None:
        """Count an image; keep it (with its thumbnail) only while under the limit."""
        self.total += 1
        if len(self.shown) < self.limit and image.thumbnail:
            self.shown.append((row_id, image))

    def markdown(self) -> str:
        """Markdown with an embedded thumbnail per kept image and its storage location."""
        return gallery_markdown(self.shown, self.total)


def gallery_markdown(images: Iterable[tuple[str, StoredImage]], total: int) -> str:
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


async def publish_gallery(gallery: Gallery) -> UUID | None:
    """A markdown artifact of thumbnails, or None when nothing was stored."""
    if not gallery.shown:
        return None
    return await acreate_markdown_artifact(
        gallery.markdown(), key=GALLERY_KEY, description="Generated images"
    )
