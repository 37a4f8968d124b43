"""Durable image storage in a local folder or any fsspec URL (``s3://...``).

Each image is streamed into a local temporary file, verified with Pillow
(it must decode; its width and height are read), then put at its final name
in the destination. Names come from :func:`safe_stem`, so a row id such as
``../../etc/x`` can never escape the destination.

No file is ever seen half-written under its final name, whatever instant the process dies:
on a local disk every file is written in ``.seedream/tmp/`` (same file system), flushed to
disk, then renamed into place; on an object store (``s3://``) an object appears only when its
upload completes. A run clears ``.seedream/tmp/`` when it starts (:meth:`ImageStore.clear_temporary`).

Each stored image also gets its contact-sheet thumbnail, ``thumbs/<file name>.jpg`` (see
:mod:`prefect_seedream.engine.thumbnails`), made from the pixels decoded to verify it. On an object
store (S3) every file is written with the ``Content-Type`` its name implies, so that a
browser shows the images and ``index.html`` of an output served from a bucket.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import logging
import mimetypes
import os
import re
import shutil
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, NamedTuple, TypeVar

import fsspec
from fsspec.implementations.local import LocalFileSystem
from pydantic import BaseModel, Field

from prefect_seedream.api.client import SeedreamClient
from prefect_seedream.api.defaults import MAX_IMAGE_BYTES
from prefect_seedream.api.errors import NotAnImageError
from prefect_seedream.engine.thumbnails import needs_thumbnail, thumbnail_jpeg, thumbnail_name

if TYPE_CHECKING:  # Pillow is imported where an image is decoded: importing the plugin stays light
    from PIL import Image

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
MAX_STEM_CHARS = 80
THUMBNAIL_SIDE = 160
logger = logging.getLogger("prefect_seedream.engine.storage")
#: Private folder of a destination: the ledger, the lock, temporary files.
PRIVATE_DIR = ".seedream"
TEMPORARY_DIR = f"{PRIVATE_DIR}/tmp"
T = TypeVar("T")
#: Conditional writes to object stores, one at a time (see :meth:`ImageStore.create_exclusive`).
_EXCLUSIVE_CREATES = threading.Lock()


class ImageFile(BaseModel):
    """A stored image: where it is, its size, and how to read it back from any storage.

    The images of a run's manifest lines (``summary.lines()``, ``read_manifest(output)``) are
    image files: ``image.open()`` reads one as a PIL image, from a folder or ``s3://``.

    Attributes:
        uri: Where it is: an absolute local path or an fsspec URL (``s3://...``).
        width: Width in pixels.
        height: Height in pixels.
        bytes: Size in bytes.

    Examples:
        >>> import fsspec
        >>> from PIL import Image
        >>> buffer = io.BytesIO()
        >>> Image.new("RGB", (64, 48), "orange").save(buffer, format="PNG")
        >>> fsspec.filesystem("memory").pipe("/docs/image-file/fox-1.png", buffer.getvalue())
        >>> image = ImageFile(uri="memory:///docs/image-file/fox-1.png", width=64, height=48,
        ...                   bytes=len(buffer.getvalue()))
        >>> image.open().size, image.read_bytes()[:4]
        ((64, 48), b'\\x89PNG')
    """

    uri: str
    width: int
    height: int
    bytes: int

    def read_bytes(self, storage_options: dict[str, Any] | None = None) -> bytes:
        """The image's bytes (``storage_options``: fsspec options of its storage)."""
        with fsspec.open(self.uri, "rb", **(storage_options or {})) as handle:
            data: bytes = handle.read()
        return data

    def open(self, storage_options: dict[str, Any] | None = None) -> Image.Image:
        """The image as a PIL image, decoded (``storage_options``: as :meth:`read_bytes`)."""
        from PIL import Image

        image = Image.open(io.BytesIO(self.read_bytes(storage_options)))
        image.load()
        return image


class StoredImage(ImageFile):
    """An image that was downloaded and verified into durable storage.

    Attributes:
        format: Image format (``png``, ``jpeg``, ...).
        source_url: The result URL it was downloaded from (expires after 24 h).
        thumbnail: A small ``data:`` URI preview for galleries (not written to manifests).
    """

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
        A completed task's images, downloaded from the bundled simulator into a store (an
        ``s3://`` one takes its fsspec options: ``ImageStore("s3://bucket/images", {"anon": False})``):

        >>> import asyncio
        >>> from prefect_seedream import GenerationRequest
        >>> from prefect_seedream.simulator import SimulatorConfig, running_simulator
        >>> store = ImageStore("memory://docs/images")
        >>> async def generate(base_url: str) -> list[StoredImage]:
        ...     async with SeedreamClient(api_key="sk-...", base_url=base_url) as client:
        ...         task = await client.submit(GenerationRequest(prompt="A red fox"))
        ...         done = await client.wait(task.id, estimated_time=task.task_info.estimated_time)
        ...         return await store.save_results(client, done.results, safe_stem("row 1"))
        >>> with running_simulator(SimulatorConfig(latency_seconds=0.5, jitter_seconds=0)) as sim:
        ...     images = asyncio.run(generate(sim.base_url))
        >>> [(image.uri, image.width, image.height, image.format) for image in images]
        [('memory:///docs/images/row_1~....png', 256, 256, 'png')]
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

    def relative_of(self, uri: str) -> str | None:
        """The path of a stored file relative to the destination, or None when it is elsewhere.

        Examples:
            >>> store = ImageStore("memory://shop/out")
            >>> store.relative_of(store.uri_for(store.path_for("fox-1.png")))
            'fox-1.png'
            >>> store.relative_of("memory://shop/other/fox-1.png") is None
            True
        """
        path = self.fs._strip_protocol(uri) if not self.is_local else str(Path(uri).resolve())
        prefix = self.root.rstrip("/") + "/"
        return path[len(prefix):] if path.startswith(prefix) and len(path) > len(prefix) else None

    def exists(self, uri_or_path: str) -> bool:
        """True when a stored file is there."""
        path = self.fs._strip_protocol(uri_or_path)
        return bool(self.fs.exists(path))

    def write_text(self, relative: str, text: str, *, sync_folder: bool = False) -> str:
        """Write a text file below the destination, atomically; returns its URI.

        ``sync_folder``: on a local disk, also fsync the folder after the rename, so that
        the file's name survives a power cut too (not only its bytes).
        """
        with self.open_atomic(relative, sync_folder=sync_folder) as handle:
            handle.write(text.encode("utf-8"))
        return self.uri_for(self.path_for(relative))

    @contextmanager
    def open_atomic(self, relative: str, *, sync_folder: bool = False) -> Iterator[IO[bytes]]:
        """A binary handle whose bytes appear at ``relative`` only once complete.

        Local disks: a file in ``.seedream/tmp/``, flushed and fsynced, then renamed into
        place (nothing is renamed if the block raises); with ``sync_folder`` the folder is
        fsynced after the rename. Object stores: one upload, which the store shows only when
        it completes.
        """
        path = self.path_for(relative)
        if not self.is_local:
            with self.fs.open(path, "wb", **_content_type_options(self.fs, relative)) as handle:
                yield handle
            return
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = self._temporary_path(os.path.basename(path))
        try:
            with open(tmp, "wb") as handle:
                yield handle
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
            if sync_folder:
                folder = os.open(os.path.dirname(path), os.O_RDONLY)
                try:
                    os.fsync(folder)
                finally:
                    os.close(folder)
        except BaseException:
            with _ignoring(OSError):
                os.unlink(tmp)
            raise

    def create_exclusive(self, relative: str, text: str) -> bool:
        """Create a file only if it does not exist yet; False when it already did.

        Of writers racing to create the same file, exactly one gets True, and a reader never
        sees the file incomplete. Local disks: the complete file is written in
        ``.seedream/tmp/`` and hard-linked to its name (``link`` fails when the name exists);
        object stores: a conditional write (S3: ``If-None-Match``, which s3fs sends for
        ``mode="create"``), made one at a time in this process, which also makes an
        in-process store (``memory://``) exclusive across threads. A filesystem that cannot
        create exclusively raises ``NotImplementedError`` (see "One live run per output" in
        docs/reliability-and-cost.md).

        Examples:
            >>> store = ImageStore("memory://docs/create-exclusive")
            >>> store.create_exclusive("stop.json", "first"), store.create_exclusive("stop.json", "second")
            (True, False)
            >>> store.read_text("stop.json")
            'first'
        """
        if self.is_local:
            return self._create_exclusive_local(relative, text)
        path = self.path_for(relative)
        self.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        try:
            with _EXCLUSIVE_CREATES:
                self.fs.pipe_file(path, text.encode("utf-8"), mode="create")
        except FileExistsError:
            return False
        except TypeError as exc:  # an implementation without the `mode` argument
            raise NotImplementedError(f"{type(self.fs).__name__} cannot create files exclusively") from exc
        return True

    def _create_exclusive_local(self, relative: str, text: str) -> bool:
        path = self.path_for(relative)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = self._temporary_path(os.path.basename(path))
        try:
            with open(tmp, "wb") as handle:
                handle.write(text.encode("utf-8"))
                handle.flush()
                os.fsync(handle.fileno())
            try:
                os.link(tmp, path)
            except FileExistsError:
                return False
            except OSError:  # a file system without hard links: create it with O_EXCL
                return self._create_exclusive_open(path, text)
            return True
        finally:
            with _ignoring(OSError):
                os.unlink(tmp)

    @staticmethod
    def _create_exclusive_open(path: str, text: str) -> bool:
        try:
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(text.encode("utf-8"))
            handle.flush()
            os.fsync(handle.fileno())
        return True

    def remove(self, relative: str) -> None:
        """Remove a file below the destination, if it is there."""
        with _ignoring(FileNotFoundError):
            self.fs.rm_file(self.path_for(relative))

    def remove_tree(self, relative: str) -> None:
        """Remove a folder below the destination with everything in it, if it is there."""
        path = self.path_for(relative)
        if self.is_local:
            shutil.rmtree(path, ignore_errors=True)
        elif self.fs.exists(path):
            self.fs.rm(path, recursive=True)

    def read_text(self, relative: str) -> str | None:
        """Read a text file below the destination, or None when it is missing."""
        try:
            return self.fs.cat_file(self.path_for(relative)).decode("utf-8")
        except FileNotFoundError:
            return None

    def list(self, relative: str) -> list[str]:
        """Full paths of the files in a folder below the destination (empty if missing).

        Listings are read afresh: other processes (shards, other runs) write here too, and
        object-store filesystems cache listings.
        """
        path = self.path_for(relative)
        if not self.is_local:
            self.fs.invalidate_cache(path)
        try:
            return sorted(self.fs.ls(path, detail=False))
        except FileNotFoundError:
            return []

    def clear_temporary(self) -> int:
        """Remove what killed runs left in ``.seedream/tmp/``; returns how many files."""
        if not self.is_local:
            return 0
        removed = 0
        for path in self.list(TEMPORARY_DIR):
            with _ignoring(OSError):
                os.unlink(path)
                removed += 1
        return removed

    async def call(self, function: Callable[..., T], *args: Any) -> T:
        """Run a blocking store call: inline on a local disk, in a thread elsewhere.

        A local read or stat takes microseconds; a call to an object store takes a round
        trip, which must not stall the event loop that polls every other row.
        """
        if self.is_local:
            return function(*args)
        return await asyncio.to_thread(function, *args)

    def _temporary_path(self, name: str) -> str:
        folder = self.path_for(TEMPORARY_DIR)
        os.makedirs(folder, exist_ok=True)
        return os.path.join(folder, f"{name}.{os.getpid()}.{uuid.uuid4().hex[:8]}")

    async def save_results(
        self,
        client: SeedreamClient,
        result_urls: list[str],
        stem: str,
        *,
        max_bytes: int = MAX_IMAGE_BYTES,
        thumbnails: bool = True,
    ) -> list[StoredImage]:
        """Download, verify and store every result URL as ``<stem>-<i>.<ext>``.

        Args:
            client: The API client (its download enforces the cap and type check).
            result_urls: The completed task's ``results``.
            stem: A safe file-name stem (see :func:`safe_stem`).
            max_bytes: Size cap per image.
            thumbnails: Also make a small ``data:`` thumbnail of each image (for galleries).

        Returns:
            One :class:`StoredImage` per URL, in order.
        """
        stored: list[StoredImage] = []
        for index, url in enumerate(result_urls, start=1):
            with tempfile.TemporaryFile() as buffer:
                await client.download(url, buffer, max_bytes=max_bytes)
                # Decoding a 4K image and writing it out take tens of milliseconds or
                # more: off the event loop, so other rows keep polling meanwhile.
                image = await asyncio.to_thread(
                    self._keep, url, buffer, f"{stem}-{index}", thumbnails
                )
            stored.append(image)
        return stored

    def _keep(self, url: str, buffer: IO[bytes], name: str, thumbnail: bool) -> StoredImage:
        """Verify a downloaded image and copy it to ``<name>.<ext>`` in the destination."""
        buffer.seek(0)
        seen = _inspect_image(url, buffer, thumbnail, sheet=True)
        size = buffer.seek(0, io.SEEK_END)
        buffer.seek(0)
        relative = f"{name}.{_extension(seen.format)}"
        with self.open_atomic(relative) as target:
            while chunk := buffer.read(1 << 20):
                target.write(chunk)
        if seen.sheet_thumbnail is not None:  # after the image: a thumbnail never shows alone
            try:
                with self.open_atomic(thumbnail_name(relative)) as target:
                    target.write(seen.sheet_thumbnail)
            except OSError as exc:  # the image is stored; the contact sheet makes it later
                logger.warning("thumbnail of %s not written: %s", relative, exc)
        return StoredImage(
            uri=self.uri_for(self.path_for(relative)),
            width=seen.width,
            height=seen.height,
            bytes=size,
            format=seen.format,
            source_url=url,
            thumbnail=seen.preview,
        )

    def thumbnail_of(self, uri: str) -> str | None:
        """A ``data:`` thumbnail of a stored image, or None when it cannot be read."""
        try:
            with self.fs.open(self.fs._strip_protocol(uri), "rb") as handle:
                return _inspect_image(uri, handle, True).preview
        except (OSError, NotAnImageError):
            return None

    def make_thumbnail(self, image_relative: str) -> bool:
        """Make the contact-sheet thumbnail of a stored image (``thumbs/<name>.jpg``).

        For images stored without one (by an earlier version, or a run killed in between).

        Returns:
            False when the image cannot be read or decoded (it was removed, say), or is no
            larger than a thumbnail (it is shown as it is).
        """
        try:
            with self.fs.open(self.path_for(image_relative), "rb") as handle:
                seen = _inspect_image(image_relative, handle, False, sheet=True)
        except (OSError, NotAnImageError):
            return False
        if seen.sheet_thumbnail is None:
            return False
        with self.open_atomic(thumbnail_name(image_relative)) as target:
            target.write(seen.sheet_thumbnail)
        return True


def _extension(fmt: str) -> str:
    return {"jpeg": "jpg", "tiff": "tif"}.get(fmt, fmt)


@contextmanager
def _ignoring(*errors: type[BaseException]) -> Iterator[None]:
    try:
        yield
    except errors:
        pass


def _content_type_options(fs: Any, relative: str) -> dict[str, str]:
    """The fsspec ``open`` options that set a file's Content-Type on S3 (s3fs sends none of
    its own for a file written through ``open``); none elsewhere.

    Examples:
        >>> import fsspec
        >>> _content_type_options(fsspec.filesystem("memory"), "index.html")
        {}
    """
    content_type = mimetypes.guess_type(relative)[0]
    protocols = {fs.protocol} if isinstance(fs.protocol, str) else set(fs.protocol)
    if content_type is None or not protocols & {"s3", "s3a"}:
        return {}
    return {"ContentType": content_type}


def _sheet_thumbnail(image: Image.Image) -> bytes | None:
    """The contact-sheet thumbnail of a decoded image; None if it cannot be made (the image
    itself is sound: it decoded)."""
    try:
        return thumbnail_jpeg(image)
    except (OSError, ValueError) as exc:
        logger.warning("no thumbnail for an image of mode %s: %s", image.mode, exc)
        return None


class _Inspected(NamedTuple):
    """What decoding an image told: its size and format, and the thumbnails asked for."""

    width: int
    height: int
    format: str
    preview: str | None
    sheet_thumbnail: bytes | None


def _inspect_image(url: str, buffer: Any, thumbnail: bool, *, sheet: bool = False) -> _Inspected:
    """Decode an image fully; return width, height, format, (if asked) a data-URI thumbnail
    and (with ``sheet``) the JPEG bytes of its contact-sheet thumbnail."""
    from PIL import Image, UnidentifiedImageError

    preview = sheet_thumbnail = None
    try:
        with Image.open(buffer) as image:
            image.load()
            width, height = image.size
            fmt = (image.format or "png").lower()
            if sheet and needs_thumbnail(width, height):
                sheet_thumbnail = _sheet_thumbnail(image)
            if thumbnail:
                preview = image.convert("RGB")
                preview.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE))
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise NotAnImageError(url, f"the bytes do not decode as an image ({exc})") from None
    data_uri = None
    if preview is not None:
        out = io.BytesIO()
        preview.save(out, format="JPEG", quality=70)
        data_uri = "data:image/jpeg;base64," + base64.b64encode(out.getvalue()).decode("ascii")
    return _Inspected(width, height, fmt, data_uri, sheet_thumbnail)
