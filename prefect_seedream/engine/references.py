"""Local reference images: uploaded once to a place the API can fetch, then sent as URLs.

Image-to-image and editing need reference images the API downloads itself, so a row's (or a
request's) ``image_urls`` may name a local file (``./fox.png``, ``/data/fox.png``,
``file://...``) or a storage URL (``s3://bucket/fox.png``) only when the run is given a
:class:`ReferenceStore`: an fsspec prefix (``s3://bucket/refs``) the plugin uploads each file
to **once**, named by the sha256 of its bytes, and a way for the API to read it there: a
presigned URL that stays valid longer than any wait (``fs.sign``), or a public base URL when
the prefix is served publicly. Without a store, such a row is refused before anything is spent,
with a message that says what to configure.

A file is read only if it is an image (it must decode: a dataset cannot make the plugin upload
``/etc/passwd``) of at most 10 MB, the API's limit.

This module knows no Prefect.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
from typing import Any

import fsspec

from prefect_seedream.api.errors import SeedreamError
from prefect_seedream.api.models import GenerationRequest, is_local_reference

#: The API's size limit of a reference image.
MAX_REFERENCE_BYTES = 10 * 1024 * 1024
#: Image formats the API reads.
ACCEPTED_FORMATS = {"jpeg": "jpg", "png": "png", "webp": "webp", "gif": "gif", "bmp": "bmp", "tiff": "tif"}
#: Shortest life of a presigned URL (it must outlive the submission, the wait and retries).
MIN_URL_LIFE_SECONDS = 3600.0
#: Longest life S3 allows a presigned URL (SigV4).
MAX_URL_LIFE_SECONDS = 7 * 24 * 3600.0


class ReferenceImageError(SeedreamError):
    """A local reference image cannot be used (missing, not an image, too large, not uploadable).

    Nothing was submitted: the request's own fault, never retried.
    """

    code = "reference_image_error"


def no_store_message(reference: str) -> str:
    """Why a local reference cannot be used without a store, and what to configure."""
    return (
        f"image_urls item {reference[:80]!r} is a local file or storage URL, which the API cannot "
        "fetch: set reference_store (CLI: --reference-store) to an fsspec prefix such as "
        "s3://bucket/refs, where each file is uploaded once and sent as a presigned URL"
    )


def reference_fingerprint(reference: str) -> str:
    """What identifies a reference's content in the ledger: a local file's path, size and
    modification time (a changed file is a new request); a storage URL as it is.

    Examples:
        >>> reference_fingerprint("s3://bucket/fox.png")
        's3://bucket/fox.png'
    """
    path = _local_path(reference)
    if path is None:
        return reference
    try:
        stat = os.stat(path)
    except OSError:
        return f"{reference}|missing"
    return f"{reference}|{stat.st_size}|{stat.st_mtime_ns}"


def _local_path(reference: str) -> str | None:
    if reference.startswith("file://"):
        return reference[len("file://"):]
    if reference.startswith(("/", "./", "../", "~/")):
        return os.path.expanduser(reference)
    return None


class ReferenceStore:
    """Where local reference images are uploaded so that the API can fetch them.

    Args:
        prefix: An fsspec URL (``s3://bucket/refs``) the files are uploaded below.
        storage_options: fsspec options of the prefix (and of ``s3://`` sources).
        public_url: The base URL under which ``prefix`` is served publicly, if it is; else
            presigned URLs are made.
        url_life_seconds: Life of a presigned URL (at least an hour, at most 7 days).

    Examples:
        With ``s3://my-bucket/refs`` and no ``public_url``, the URLs are presigned
        (``https://my-bucket.s3.amazonaws.com/refs/<sha256>.png?X-Amz-...``); here a prefix
        served at a public URL:

        >>> import asyncio, tempfile
        >>> from PIL import Image
        >>> fox = f"{tempfile.mkdtemp()}/fox.png"
        >>> Image.new("RGB", (64, 64), "orange").save(fox)
        >>> store = ReferenceStore("memory://docs/refs", public_url="https://cdn.example.com/refs")
        >>> request = GenerationRequest(prompt="the fox, in winter", image_urls=(fox,))
        >>> asyncio.run(store.resolve(request)).image_urls
        ('https://cdn.example.com/refs/....png',)
        >>> store.uploads
        1
    """

    def __init__(
        self,
        prefix: str,
        storage_options: dict[str, Any] | None = None,
        *,
        public_url: str | None = None,
        url_life_seconds: float = 2 * MIN_URL_LIFE_SECONDS,
    ) -> None:
        self.prefix = prefix.rstrip("/")
        self.storage_options = storage_options or {}
        self.fs, self.root = fsspec.core.url_to_fs(self.prefix, **self.storage_options)
        self.public_url = public_url.rstrip("/") if public_url else None
        self.url_life_seconds = min(MAX_URL_LIFE_SECONDS, max(MIN_URL_LIFE_SECONDS, url_life_seconds))
        self._urls: dict[str, str] = {}  # reference -> the URL sent for it in this process
        self._lock = asyncio.Lock()
        self.uploads = 0

    async def resolve(self, request: GenerationRequest) -> GenerationRequest:
        """A copy of ``request`` whose local references are URLs the API can fetch.

        Raises:
            ReferenceImageError: a reference is missing, not an image, too large, or cannot be
                uploaded or signed.
        """
        if not request.local_references:
            return request
        urls = []
        for url in request.image_urls:
            urls.append(await self.url_for(url) if is_local_reference(url) else url)
        # Not validated again: a presigned URL may name a host the request's rules refuse for
        # user-given URLs (a test's loopback S3), and it was made here, not given.
        return request.model_copy(update={"image_urls": tuple(urls)})

    async def url_for(self, reference: str) -> str:
        """The URL the API fetches a local reference from (uploaded once, by content)."""
        async with self._lock:  # one upload per file, even when many rows name it at once
            url = self._urls.get(reference)
            if url is None:
                url = self._urls[reference] = await asyncio.to_thread(self._upload, reference)
        return url

    def _upload(self, reference: str) -> str:
        data = self._read(reference)
        fmt = _image_format(reference, data)
        name = f"{hashlib.sha256(data).hexdigest()}.{ACCEPTED_FORMATS[fmt]}"
        path = f"{self.root}/{name}"
        try:
            if not self.fs.exists(path):
                self.fs.pipe_file(path, data)
                self.uploads += 1
            if self.public_url:
                return f"{self.public_url}/{name}"
            return str(self.fs.sign(path, expiration=int(self.url_life_seconds)))
        except NotImplementedError:
            raise ReferenceImageError(
                f"the reference store {self.prefix} cannot make URLs the API can fetch: use an "
                "object store that presigns URLs (s3://...) or give its public_url"
            ) from None
        except OSError as exc:
            raise ReferenceImageError(f"uploading {reference[:80]!r} to {self.prefix} failed: {exc}") from None

    def _read(self, reference: str) -> bytes:
        local = _local_path(reference)
        try:
            if local is not None:
                size = os.path.getsize(local)
                opener: Any = open(local, "rb")  # noqa: SIM115
            else:
                fs, path = fsspec.core.url_to_fs(reference, **self.storage_options)
                size = int(fs.size(path) or 0)
                opener = fs.open(path, "rb")
        except (OSError, ValueError) as exc:
            raise ReferenceImageError(f"reference image {reference[:80]!r} cannot be read: {exc}") from None
        if size > MAX_REFERENCE_BYTES:
            raise ReferenceImageError(
                f"reference image {reference[:80]!r} has {size} bytes, more than the API's "
                f"{MAX_REFERENCE_BYTES}"
            )
        with opener as handle:
            data: bytes = handle.read(MAX_REFERENCE_BYTES + 1)
        return data


def _image_format(reference: str, data: bytes) -> str:
    """The format of a reference's bytes, which must decode as an image the API reads."""
    from PIL import Image, UnidentifiedImageError  # here: importing the plugin stays light

    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            fmt = (image.format or "").lower()
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
        raise ReferenceImageError(f"reference image {reference[:80]!r} is not an image") from None
    if fmt not in ACCEPTED_FORMATS:
        raise ReferenceImageError(f"reference image {reference[:80]!r} is {fmt or 'an unknown format'}, "
                                  f"not one of {', '.join(ACCEPTED_FORMATS)}")
    return fmt
