"""What a person sees in the Prefect UI: progress, a summary table and a gallery.

An image in an artifact is loaded by the *browser*, so a local path or an
``s3://`` URI would show as a broken image. The gallery therefore embeds small
``data:`` thumbnails made while storing each image, whatever the storage, and
names each image's real location under it.
"""

from __future__ import annotations

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
        await progress.advance()
        await progress.finish()
        ```
    """

    def __init__(self, artifact_id: UUID, total: int) -> None:
        self.artifact_id = artifact_id
        self.total = max(total, 1)
        self.done = 0
        self._last_update = 0.0

    @classmethod
    async def create(cls, total: int, description: str = "Rows finished") -> ProgressArtifact:
        """Create the artifact at 0 %."""
        artifact_id = await acreate_progress_artifact(0.0, key=PROGRESS_KEY, description=description)
        return cls(artifact_id, total)

    @property
    def percent(self) -> float:
        """Rows finished, in percent."""
        return round(100.0 * self.done / self.total, 1)

    async def advance(self, rows: int = 1) -> None:
        """Count finished rows; update the artifact when a second has passed."""
        self.done += rows
        now = time.monotonic()
        if now - self._last_update >= 1.0:
            self._last_update = now
            await aupdate_progress_artifact(self.artifact_id, self.percent)

    async def finish(self) -> None:
        """Write the final figure."""
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


def gallery_markdown(images: Iterable[tuple[str, StoredImage]], limit: int = GALLERY_LIMIT) -> str:
    """Markdown with an embedded thumbnail per image and its storage location.

    Examples:
        >>> image = StoredImage(uri="/out/a-1.png", width=64, height=64, bytes=10,
        ...                     format="png", source_url="http://x", thumbnail="data:image/jpeg;base64,AA==")
        >>> "![a](data:image/jpeg;base64,AA==)" in gallery_markdown([("a", image)])
        True
    """
    shown = 0
    total = 0
    cells: list[str] = []
    for row_id, image in images:
        total += 1
        if shown >= limit or not image.thumbnail:
            continue
        shown += 1
        cells.append(
            f"**{row_id}** ({image.width}x{image.height})\n\n"
            f"![{row_id}]({image.thumbnail})\n\n`{image.uri}`\n"
        )
    header = f"# Generated images\n\n{total} image(s) stored"
    if total > shown:
        header += f"; the first {shown} are shown"
    header += ". Thumbnails are embedded; the full images are at the locations below.\n\n"
    return header + "\n---\n\n".join(cells)


async def publish_gallery(images: list[tuple[str, StoredImage]]) -> UUID | None:
    """A markdown artifact of thumbnails, or None when nothing was stored."""
    if not images:
        return None
    return await acreate_markdown_artifact(
        gallery_markdown(images), key=GALLERY_KEY, description="Generated images"
    )
