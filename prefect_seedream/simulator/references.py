"""Reference images (``image_urls``) downloaded by the simulator, as the real service does.

When ``SimulatorConfig.fetch_reference_images`` is on, every created task with ``image_urls``
gets one background asyncio task on the server's event loop (:meth:`ReferenceFetcher.start`)
that downloads all its URLs concurrently with one shared ``httpx.AsyncClient``: at most
:data:`FETCH_TIMEOUT_SECONDS` per URL (the whole download), redirects followed, at most
:data:`MAX_REFERENCE_BYTES` bytes, and the bytes must decode with Pillow as one of
:data:`REFERENCE_FORMATS`. The outcome is handed to a callback: the first reference's bytes
(pasted into the task's result images, see :func:`prefect_seedream.simulator.images.render_image`),
or the error message of the first URL (in ``image_urls`` order) that failed.

The client does not read proxy settings from the environment (``trust_env=False``): the
simulator runs offline and fetches from the host named in the URL. On shutdown (and on
``POST /_sim/reset``) fetches in progress are cancelled, so that they never hold the server.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import httpx
from PIL import Image

#: Largest reference image accepted, in bytes (the contract says <= 10 MB).
MAX_REFERENCE_BYTES = 10 * 1024 * 1024
#: Time allowed for the whole download of one reference image.
FETCH_TIMEOUT_SECONDS = 10.0
#: Pillow format names accepted (the 4.5 spec lists jpeg/png/webp and bmp/tiff/gif).
REFERENCE_FORMATS: frozenset[str] = frozenset({"JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF"})
#: Longest part of a URL quoted in an error message.
URL_CHARS_IN_MESSAGES = 100


class ReferenceImageError(Exception):
    """Why one reference image could not be used (the text is the reason).

    Examples:
        >>> str(ReferenceImageError("HTTP 404"))
        'HTTP 404'
    """


def check_reference_image(data: bytes) -> str:
    """Decode ``data`` fully with Pillow and return its format name.

    Raises:
        ReferenceImageError: When the bytes are not an image of :data:`REFERENCE_FORMATS`.

    Examples:
        >>> buffer = io.BytesIO()
        >>> Image.new("RGB", (4, 4), (255, 0, 0)).save(buffer, format="PNG")
        >>> check_reference_image(buffer.getvalue())
        'PNG'
        >>> try:
        ...     check_reference_image(b"<html>not an image</html>")
        ... except ReferenceImageError as err:
        ...     print(err)
        not a JPEG, PNG, WEBP, GIF, BMP or TIFF image
    """
    try:
        with Image.open(io.BytesIO(data)) as image:
            fmt = image.format or ""
            if fmt not in REFERENCE_FORMATS:
                raise ReferenceImageError(f"unsupported image format {fmt or 'unknown'}")
            image.load()
    except ReferenceImageError:
        raise
    except Exception:  # noqa: BLE001 - Pillow raises many kinds of errors on bad input
        raise ReferenceImageError("not a JPEG, PNG, WEBP, GIF, BMP or TIFF image") from None
    return fmt


def failure_message(url: str, reason: str) -> str:
    """The ``error.message`` of a task whose reference ``url`` failed.

    Examples:
        >>> failure_message("https://cdn.example.com/a.png", "HTTP 404")
        'cannot fetch reference image https://cdn.example.com/a.png: HTTP 404'
    """
    return f"cannot fetch reference image {url[:URL_CHARS_IN_MESSAGES]}: {reason}"


@dataclass(frozen=True)
class FetchOutcome:
    """The result of fetching every reference image of one task.

    Attributes:
        reference: The bytes of the first reference image, when every fetch succeeded.
        error: The task's error message (naming the URL and the reason) when one failed.

    Examples:
        >>> FetchOutcome(error="cannot fetch reference image x: HTTP 404").ok
        False
    """

    reference: bytes | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        """Whether every reference image was fetched and decoded."""
        return self.error is None


class ReferenceFetcher:
    """Downloads the reference images of tasks in background asyncio tasks.

    Args:
        timeout: Seconds allowed per URL.
        max_bytes: Largest accepted image.

    Attributes:
        fetches: Number of URL fetches attempted (``reference_fetches`` stat).
        failures: Number of those that failed (``reference_fetch_failures`` stat).

    Examples:
        >>> fetcher = ReferenceFetcher()
        >>> async def fetch_nothing():
        ...     outcomes = []
        ...     fetcher.start(["http://127.0.0.1:9/a.png"], outcomes.append)
        ...     await fetcher.aclose()  # cancels it
        ...     return outcomes
        >>> asyncio.run(fetch_nothing()), fetcher.in_flight
        ([], 0)
    """

    def __init__(
        self, timeout: float = FETCH_TIMEOUT_SECONDS, max_bytes: int = MAX_REFERENCE_BYTES
    ) -> None:
        self.timeout = timeout
        self.max_bytes = max_bytes
        self.fetches = 0
        self.failures = 0
        self._client: httpx.AsyncClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def in_flight(self) -> int:
        """Number of tasks whose references are being fetched."""
        return len(self._tasks)

    def start(self, urls: Sequence[str], done: Callable[[FetchOutcome], None]) -> None:
        """Fetch ``urls`` in a background task, then call ``done`` with the outcome.

        Must be called on the server's running event loop. ``done`` is not called when the
        fetch is cancelled (:meth:`cancel_all`, :meth:`aclose`).
        """
        task = asyncio.get_running_loop().create_task(self._run(tuple(urls), done))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, urls: tuple[str, ...], done: Callable[[FetchOutcome], None]) -> None:
        results = await asyncio.gather(*(self._fetch(url) for url in urls))
        for data, error in results:
            if error is not None:
                done(FetchOutcome(error=error))
                return
        done(FetchOutcome(reference=results[0][0] if results else None))

    async def _fetch(self, url: str) -> tuple[bytes | None, str | None]:
        self.fetches += 1
        try:
            data = await asyncio.wait_for(self._download(url), self.timeout)
            await asyncio.to_thread(check_reference_image, data)
        except ReferenceImageError as err:
            reason = str(err)
        except (asyncio.TimeoutError, TimeoutError, httpx.TimeoutException):
            reason = f"timed out after {self.timeout:g} s"
        except (httpx.HTTPError, httpx.InvalidURL, OSError, ValueError) as err:
            reason = f"connection failed ({type(err).__name__})"
        else:
            return data, None
        self.failures += 1
        return None, failure_message(url, reason)

    def _http(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            self._client = httpx.AsyncClient(
                timeout=self.timeout, follow_redirects=True, trust_env=False
            )
            self._loop = loop
        return self._client

    async def _download(self, url: str) -> bytes:
        async with self._http().stream("GET", url) as response:
            if response.status_code >= 400:
                raise ReferenceImageError(f"HTTP {response.status_code}")
            declared = response.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > self.max_bytes:
                raise ReferenceImageError(f"larger than {self.max_bytes} bytes")
            data = bytearray()
            async for chunk in response.aiter_bytes():
                data += chunk
                if len(data) > self.max_bytes:
                    raise ReferenceImageError(f"larger than {self.max_bytes} bytes")
        return bytes(data)

    def cancel_all(self) -> None:
        """Cancel every fetch in progress (their callbacks are not called)."""
        for task in list(self._tasks):
            task.cancel()

    async def aclose(self) -> None:
        """Cancel every fetch in progress, wait for them to end and close the HTTP client."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if self._client is not None:
            client, self._client, self._loop = self._client, None, None
            await client.aclose()

    def reset_counters(self) -> None:
        """Set :attr:`fetches` and :attr:`failures` back to zero."""
        self.fetches = 0
        self.failures = 0
