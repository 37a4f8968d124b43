"""Durable image storage in a local folder or any fsspec URL (``s3://...``).

Each image is streamed into a local temporary file, verified with Pillow
(it must decode; its width and height are read), then put at its final name
in the destination. Names come from :func:`safe_stem`, so a row id such as
``../../etc/x`` can never escape the destination.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import os
import re
import tempfile
from pathlib import Path
from typing import IO, Any

import fsspec
from fsspec.implementations.local import LocalFileSystem
from PIL import Image, UnidentifiedImageError
from pydantic import BaseModel, Field

from prefect_seedream.api.client import DEFAULT_MAX_IMAGE_BYTES, SeedreamClient
from prefect_seedream.api.errors import NotAnImageError

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
MAX_STEM_CHARS = 80
THUMBNAIL_SIDE = 160


class StoredImage(BaseModel):
    """An image that was downloaded and verified into durable storage.

    Attributes:
        uri: Where it is: an absolute local path or an fsspec URL.
        width: Width in pixels.
        height: Height in pixels.
        bytes: Size in bytes.
        format: Image format (``png``, ``jpeg``, ...).
        source_url: The result URL it was downloaded from (expires after 24 h).
        thumbnail: A small ``data:`` URI preview for galleries (not written to manifests).
    """

    uri: str
    width: int
    height: int
    bytes: int
    format: str
    source_url: str
    thumbnail: str | None = Field(default=None, exclude=True, repr=False)


def safe_stem(name: str) -> str:
    """Turn any row id into a file-name stem that stays inside its folder.

    Characters other than letters, digits, ``.``, ``_`` and ``-`` become ``_``;
    leading dots are dropped; when anything changed, ``~`` and a short hash of
    the original are appended. ``~`` never stands in a name left as it was, so
    two distinct ids never share a stem.

    Examples:
        >>> safe_stem("row-7")
        'row-7'
        >>> safe_stem("../../etc/x").startswith("etc_x~")
        True
    """
    cleaned = _UNSAFE.sub("_", name).strip("._-")[:MAX_STEM_CHARS] or "row"
    if cleaned == name:
        return cleaned
    digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return f"{cleaned}~{digest}"


class ImageStore:
    """A destination for images: a local folder or an fsspec URL.

    Args:
        destination: A path or URL such as ``./output`` or ``s3://bucket/prefix``.
        storage_options: Extra options for the fsspec filesystem (credentials,
            ``endpoint_url``, ...).

    Examples:
        ```python
        store = ImageStore("s3://my-bucket/images", {"anon": False})
        images = await store.save_results(client, task, "row-1")
        ```
    """

    def __init__(self, destination: str | os.PathLike[str], storage_options: dict[str, Any] | None = None):
        self.destination = str(destination)
        self.fs, root = fsspec.core.url_to_fs(self.destination, **(storage_options or {}))
        self.is_local = isinstance(self.fs, LocalFileSystem)
        self.root = str(Path(root).resolve()) if self.is_local else root.rstrip("/")
        self.fs.makedirs(self.root, exist_ok=True)

    def path_for(self, *parts: str) -> str:
        """The full path of a file below the destination's root."""
        return "/".join([self.root, *parts])

    def uri_for(self, path: str) -> str:
        """The URI a person or program uses to find a stored file."""
        return path if self.is_local else self.fs.unstrip_protocol(path)

    def exists(self, uri_or_path: str) -> bool:
        """True when a stored file is there."""
        path = self.fs._strip_protocol(uri_or_path)
        return bool(self.fs.exists(path))

    def write_text(self, relative: str, text: str) -> str:
        """Write a text file below the destination (atomically on local disks); returns its URI."""
        path = self.path_for(relative)
        parent = path.rsplit("/", 1)[0]
        self.fs.makedirs(parent, exist_ok=True)
        if self.is_local:
            tmp = f"{path}.tmp-{os.getpid()}"
            with open(tmp, "w", encoding="utf-8") as handle:
                handle.write(text)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        else:
            self.fs.pipe_file(path, text.encode("utf-8"))
        return self.uri_for(path)

    def read_text(self, relative: str) -> str | None:
        """Read a text file below the destination, or None when it is missing."""
        path = self.path_for(relative)
        if not self.fs.exists(path):
            return None
        return self.fs.cat_file(path).decode("utf-8")

    def list(self, relative: str) -> list[str]:
        """Full paths of the files in a folder below the destination (empty if missing)."""
        path = self.path_for(relative)
        if not self.fs.exists(path):
            return []
        return sorted(self.fs.ls(path, detail=False))

    async def save_results(
        self,
        client: SeedreamClient,
        result_urls: list[str],
        stem: str,
        *,
        max_bytes: int = DEFAULT_MAX_IMAGE_BYTES,
    ) -> list[StoredImage]:
        """Download, verify and store every result URL as ``<stem>-<i>.<ext>``.

        Args:
            client: The API client (its download enforces the cap and type check).
            result_urls: The completed task's ``results``.
            stem: A safe file-name stem (see :func:`safe_stem`).
            max_bytes: Size cap per image.

        Returns:
            One :class:`StoredImage` per URL, in order.
        """
        stored: list[StoredImage] = []
        for index, url in enumerate(result_urls, start=1):
            with tempfile.TemporaryFile() as buffer:
                await client.download(url, buffer, max_bytes=max_bytes)
                # Decoding a 4K image and writing it out take tens of milliseconds or
                # more: off the event loop, so other rows keep polling meanwhile.
                image = await asyncio.to_thread(self._keep, url, buffer, f"{stem}-{index}")
            stored.append(image)
        return stored

    def _keep(self, url: str, buffer: IO[bytes], name: str) -> StoredImage:
        """Verify a downloaded image and copy it to ``<name>.<ext>`` in the destination."""
        buffer.seek(0)
        width, height, fmt, thumbnail = _inspect_image(url, buffer)
        size = buffer.seek(0, io.SEEK_END)
        buffer.seek(0)
        path = self.path_for(f"{name}.{_extension(fmt)}")
        with self.fs.open(path, "wb") as target:
            while chunk := buffer.read(1 << 20):
                target.write(chunk)
        return StoredImage(
            uri=self.uri_for(path),
            width=width,
            height=height,
            bytes=size,
            format=fmt,
            source_url=url,
            thumbnail=thumbnail,
        )


def _extension(fmt: str) -> str:
    return {"jpeg": "jpg", "tiff": "tif"}.get(fmt, fmt)


def _inspect_image(url: str, buffer: Any) -> tuple[int, int, str, str]:
    """Decode an image fully; return width, height, format and a data-URI thumbnail."""
    try:
        with Image.open(buffer) as image:
            image.load()
            width, height = image.size
            fmt = (image.format or "png").lower()
            preview = image.convert("RGB")
            preview.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE))
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise NotAnImageError(url, f"the bytes do not decode as an image ({exc})") from None
    out = io.BytesIO()
    preview.save(out, format="JPEG", quality=70)
    thumbnail = "data:image/jpeg;base64," + base64.b64encode(out.getvalue()).decode("ascii")
    return width, height, fmt, thumbnail
