"""The images a run stored, for its gallery: a count of all, thumbnails of the first few.

The engine fills a :class:`Gallery` as rows store images; the Prefect layer publishes it as the
run's ``<prefix>-gallery`` artifact (:func:`prefect_seedream.artifacts.publish_gallery`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from prefect_seedream.engine.defaults import GALLERY_LIMIT
from prefect_seedream.engine.manifest import ManifestImage
from prefect_seedream.engine.storage import StoredImage


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

    def markdown(self, where: str | None = None) -> str:
        """Markdown with an embedded thumbnail per kept image and its storage location."""
        return gallery_markdown(self.shown, self.total, where)


@dataclass(frozen=True)
class GalleryImage:
    """What the gallery shows of an image: where it is, its size and a ``data:`` thumbnail."""

    uri: str
    width: int
    height: int
    thumbnail: str


def gallery_markdown(
    images: Iterable[tuple[str, GalleryImage]], total: int, where: str | None = None
) -> str:
    """Markdown with an embedded thumbnail per image and its storage location.

    Examples:
        >>> print(gallery_markdown([], 0, "out/manifest.jsonl"))
        # Generated images
        <BLANKLINE>
        No image was stored: see the rows table (and out/manifest.jsonl) for why.
    """
    cells: list[str] = []
    for row_id, image in images:
        cells.append(
            f"**{row_id}** ({image.width}x{image.height})\n\n"
            f"![{row_id}]({image.thumbnail})\n\n`{image.uri}`\n"
        )
    if not total:
        return f"# Generated images\n\nNo image was stored: see the rows table (and {where or 'the manifest'}) for why."
    header = f"# Generated images\n\n{total} image(s) stored"
    if total > len(cells):
        header += f"; the first {len(cells)} are shown, every one is listed in {where or 'the manifest'}"
    header += ". Thumbnails are embedded; the full images are at the locations below.\n\n"
    return header + "\n---\n\n".join(cells)
