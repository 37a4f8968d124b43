"""An async-first httpx client for the Evolink Seedream API, with a sync twin.

Retry rules, in one place:

* ``GET`` calls (task queries, downloads) are retried on transport errors, 429
  and 5xx, with exponential backoff and full jitter that honours the API's
  "retry after N seconds" hint.
* ``POST`` (a submission costs credits) always carries an ``Idempotency-Key``, the same on
  every retry of one submission (Evolink answers a repeated key with the task it already
  created, header ``idempotency-replayed: true``, and charges nothing). It is retried when
  the connection was refused or never opened, on 429, and on 5xx (a gateway may answer 5xx
  after the task was created: the same key makes the retry a replay, not a second charge).
  When the request may have reached the server and no answer came back (a read timeout after
  sending, a connection dropped mid-response, a 2xx body that is not JSON) the client raises
  :class:`SubmissionOutcomeUnknownError` (carrying the key) instead of sending it again: the
  caller looks the task up (:meth:`SeedreamClient.list_tasks`) or decides to resend the key.
* A submission may take ``submit_timeout`` (120 s, as Evolink's own client allows a paid
  write); other calls the client's read timeout.
* ``POST /v1/tasks/batch`` is a read: retried like a ``GET``, without an ``Idempotency-Key``.

Waits read task status through the client's :class:`TaskStatusReader` (one per client, so one
per run that shares its client): many tasks per ``POST /v1/tasks/batch``, see
:mod:`prefect_seedream.api.task_reader`.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import json
import logging
import os
import random
import ssl
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import IO, Any
from urllib.parse import urlsplit

import httpx

from prefect_seedream.api.balance import BalanceUnavailableError, CreditBalance
from prefect_seedream.api.defaults import (
    API_CONNECTIONS,
    API_KEY_ENV,
    BASE_URL_ENV,
    BATCH_READ_MAX_IDS,
    CONNECT_TIMEOUT_SECONDS,
    DEFAULT_BASE_URL,
    FIRST_POLL_FLOOR_SECONDS,
    MAX_IMAGE_BYTES,
    MAX_POLL_INTERVAL_SECONDS,
    MAX_WAIT_SECONDS,
    NOT_FOUND_GRACE_SECONDS,
    POLL_INTERVAL_SECONDS,
    POOL_TIMEOUT_SECONDS,
    READ_TIMEOUT_SECONDS,
    RESULT_CONNECTIONS,
    SUBMIT_TIMEOUT_SECONDS,
    WRITE_TIMEOUT_SECONDS,
)
from prefect_seedream.api.errors import (
    DownloadError,
    ImageTooLargeError,
    NotAnImageError,
    NotFoundError,
    ResponseFormatError,
    ResultExpiredError,
    SeedreamAPIError,
    SeedreamConfigurationError,
    SeedreamConnectionError,
    SeedreamError,
    ServerError,
    SubmissionOutcomeUnknownError,
    WaitTimeoutError,
    api_error_for_status,
    error_body_fields,
    parse_retry_after_header,
)
from prefect_seedream.api.imagetype import sniff_image_type
from prefect_seedream.api.models import GenerationRequest, GenerationTask, TaskPage
from prefect_seedream.api.task_reader import MISSING_ENDPOINT_STATUSES, TaskStatusReader

logger = logging.getLogger("prefect_seedream.api")

DEFAULT_TIMEOUT = httpx.Timeout(
    connect=CONNECT_TIMEOUT_SECONDS,
    read=READ_TIMEOUT_SECONDS,
    write=WRITE_TIMEOUT_SECONDS,
    pool=POOL_TIMEOUT_SECONDS,
)
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.UnsupportedProtocol)

ProgressCallback = Callable[[GenerationTask], None | Awaitable[None]]
#: Header of a paid write that makes its retries replays (see the module docstring).
IDEMPOTENCY_HEADER = "Idempotency-Key"
#: Header of an answer that returns the task an earlier request with the same key created.
REPLAYED_HEADER = "idempotency-replayed"


def new_idempotency_key() -> str:
    """A fresh ``Idempotency-Key`` value.

    Examples:
        >>> key = new_idempotency_key()
        >>> key.startswith("seedream-"), len(key)
        (True, 41)
    """
    return f"seedream-{uuid.uuid4().hex}"


def api_identity(base_url: str) -> str:
    """The address of an API, normalised: which service a task id or a result belongs to.

    Examples:
        >>> api_identity("https://API.evolink.ai/")
        'https://api.evolink.ai'
        >>> api_identity("http://127.0.0.1:8787")
        'http://127.0.0.1:8787'
        >>> api_identity("https://api.evolink.ai:443/v1")
        'https://api.evolink.ai/v1'
    """
    parts = urlsplit(base_url.strip())
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"
    port = parts.port
    default = {"http": 80, "https": 443}.get(scheme)
    netloc = host if port in (None, default) else f"{host}:{port}"
    return f"{scheme}://{netloc}{parts.path.rstrip('/')}"


@dataclass(frozen=True)
class RetryPolicy:
    """How the client retries what is safe to retry.

    Attributes:
        max_attempts: Attempts per call, the first included.
        backoff_base: First backoff in seconds; doubled per attempt, with full jitter.
        backoff_max: Longest backoff in seconds.
        max_retry_after: Longest "retry after" hint the client sleeps through; a
            longer one is raised to the caller (its orchestrator can wait better).
    """

    max_attempts: int = 4
    backoff_base: float = 0.5
    backoff_max: float = 20.0
    max_retry_after: float = 120.0

    def backoff(self, attempt: int) -> float:
        """Seconds to sleep before retry number ``attempt`` (1-based)."""
        ceiling = min(self.backoff_max, self.backoff_base * 2 ** (attempt - 1))
        return random.uniform(ceiling / 2, ceiling)


@dataclass(frozen=True)
class PollPolicy:
    """How :meth:`SeedreamClient.wait` polls.

    The first poll comes at the task's ``estimated_time`` (no sooner than
    ``first_poll_floor``, no later than ``max_interval``): a task estimated at 2 s is
    looked at after 2 s, not after ``min_interval``. Later polls start at
    ``min_interval`` and back off by ``factor`` up to ``max_interval``.

    Attributes:
        min_interval: Shortest pause between polls (also the first one when the
            API gives no estimate).
        first_poll_floor: Earliest first poll when the API gives an estimate.
        max_interval: Longest pause between polls.
        factor: Growth of the pause after each poll.
        max_wait: Wall-clock cap of the whole wait, in seconds.
        not_found_grace: Seconds after the wait starts during which a 404 is
            taken for eventual consistency rather than a gone task.
        max_consecutive_errors: Transient poll errors tolerated in a row.
    """

    min_interval: float = POLL_INTERVAL_SECONDS
    first_poll_floor: float = FIRST_POLL_FLOOR_SECONDS
    max_interval: float = MAX_POLL_INTERVAL_SECONDS
    factor: float = 1.5
    max_wait: float = MAX_WAIT_SECONDS
    not_found_grace: float = NOT_FOUND_GRACE_SECONDS
    max_consecutive_errors: int = 5

    def first_delay(self, estimated_time: float | None) -> float:
        """The pause before the first poll."""
        if not estimated_time:
            return self.min_interval
        return min(self.max_interval, max(self.first_poll_floor, estimated_time))


@dataclass(frozen=True)
class DownloadResult:
    """What a download wrote into its sink.

    Attributes:
        url: The result URL.
        bytes_written: Size of the image in bytes.
        content_type: The response's content type.
        image_type: The sniffed image type (``png``, ``jpeg``, ``webp``, ...).
    """

    url: str
    bytes_written: int
    content_type: str | None
    image_type: str



def _ssl_context() -> ssl.SSLContext:
    """The TLS settings the clients of this process share: httpx's defaults (certifi's CA
    bundle, or ``SSL_CERT_FILE`` / ``SSL_CERT_DIR``), built once per value of those two.
    Each ``httpx.AsyncClient`` would otherwise build its own (about 20 ms of CPU each; a
    client holds two)."""
    return _ssl_context_for(os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR"))


@functools.lru_cache(maxsize=4)
def _ssl_context_for(cert_file: str | None, cert_dir: str | None) -> ssl.SSLContext:
    return httpx.create_ssl_context()


class SeedreamClient:
    """Async client of the Evolink Seedream API.

    One pooled ``httpx.AsyncClient`` with explicit timeouts serves all calls.
    The API key is sent only to the API's own host, never to result URLs.

    Args:
        api_key: The Evolink API key; defaults to ``$SEEDREAM_API_KEY``.
        base_url: The API's base URL; defaults to ``$SEEDREAM_BASE_URL`` or
            ``https://api.evolink.ai``.
        timeout: httpx timeout (seconds or an ``httpx.Timeout``).
        submit_timeout: Seconds to wait for the answer of a submission (a paid write).
        retry: Retry policy for safe retries.
        poll: Default polling policy for :meth:`wait`.
        transport: An httpx transport, for tests.
        batch_status_reads: Whether waits read task status in batches (the client's
            :attr:`status_reader`); ``False`` reads each task with its own ``GET``.

    Examples:
        Against the bundled simulator (the real API: no ``base_url``, your key):

        >>> import asyncio, io
        >>> from prefect_seedream import GenerationRequest, SeedreamClient
        >>> from prefect_seedream.simulator import SimulatorConfig, running_simulator
        >>> async def main(base_url: str) -> tuple[str, bytes]:
        ...     async with SeedreamClient(api_key="sk-...", base_url=base_url) as c:
        ...         task = await c.submit(GenerationRequest(prompt="A red fox", size="2K"))
        ...         done = await c.wait(task.id, estimated_time=task.task_info.estimated_time)
        ...         sink = io.BytesIO()  # or open("fox.png", "wb")
        ...         await c.download(done.results[0], sink)
        ...         return done.status.value, sink.getvalue()[:4]
        >>> with running_simulator(SimulatorConfig(latency_seconds=0.5, jitter_seconds=0)) as sim:
        ...     asyncio.run(main(sim.base_url))
        ('completed', b'\\x89PNG')
    """

    def __init__(
        self,
        api_key: str | None = None,
        base_url: str | None = None,
        *,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        submit_timeout: float = SUBMIT_TIMEOUT_SECONDS,
        retry: RetryPolicy | None = None,
        poll: PollPolicy | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        batch_status_reads: bool = True,
    ) -> None:
        key = api_key if api_key is not None else os.environ.get(API_KEY_ENV, "")
        if not key:
            raise SeedreamConfigurationError(
                f"no API key: pass api_key=... or set {API_KEY_ENV}"
            )
        self._api_key = key
        self.base_url = (base_url or os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL).rstrip("/")
        self.retry = retry or RetryPolicy()
        self.poll = poll or PollPolicy()
        self.batch_status_reads = batch_status_reads
        #: Reads the status of every task this client waits for (see :mod:`.task_reader`).
        self.status_reader = TaskStatusReader(self)
        base_timeout = timeout if isinstance(timeout, httpx.Timeout) else httpx.Timeout(timeout)
        self._submit_timeout = httpx.Timeout(
            connect=base_timeout.connect, read=submit_timeout, write=base_timeout.write,
            pool=base_timeout.pool,
        )
        # Two pools: the API's (with the key) and the result hosts' (never the key), each
        # sized for what it serves (see defaults.API_CONNECTIONS), all kept alive.
        common: dict[str, Any] = {
            "timeout": base_timeout,
            "transport": transport,
            "follow_redirects": False,
        }
        if transport is None:  # else the transport brings its own
            common["verify"] = _ssl_context()
        self._api = httpx.AsyncClient(
            base_url=self.base_url,
            headers={"User-Agent": "prefect-seedream", "Authorization": f"Bearer {key}"},
            limits=httpx.Limits(max_connections=API_CONNECTIONS, max_keepalive_connections=API_CONNECTIONS),
            **common,
        )
        self._results = httpx.AsyncClient(
            headers={"User-Agent": "prefect-seedream"},
            limits=httpx.Limits(max_connections=RESULT_CONNECTIONS, max_keepalive_connections=RESULT_CONNECTIONS),
            **common,
        )

    def __repr__(self) -> str:
        return f"SeedreamClient(base_url={self.base_url!r})"

    @property
    def identity(self) -> str:
        """The API's normalised address (see :func:`api_identity`)."""
        return api_identity(self.base_url)

    async def __aenter__(self) -> SeedreamClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop the status reader and close the connection pools."""
        await self.status_reader.aclose()
        await self._api.aclose()
        await self._results.aclose()

    # -- calls -------------------------------------------------------------

    async def submit(
        self, request: GenerationRequest, *, idempotency_key: str | None = None
    ) -> GenerationTask:
        """Submit a generation; returns the new task (status ``pending``).

        Args:
            request: The validated request.
            idempotency_key: The submission's ``Idempotency-Key``; give the same one again
                to retry a submission whose outcome is unknown (the API then answers the
                task it created, if any). Default: a new key, used by every retry of this call.

        Returns:
            The task; ``task.replayed`` is True when the API answered a task that an earlier
            request with the same key created (nothing new was charged).

        Raises:
            SubmissionOutcomeUnknownError: the request may have created a task (its
                ``idempotency_key`` says which key to send again).
            SeedreamAPIError: the API refused it (after retries for 429/5xx).
        """
        if request.local_references:
            raise SeedreamConfigurationError(
                f"image_urls item {request.local_references[0][:80]!r} is a local file or a storage "
                "URL, which the API cannot fetch: upload it and pass its https URL (the Prefect "
                "tasks and flows do it with reference_store='s3://bucket/prefix')"
            )
        key = idempotency_key or new_idempotency_key()
        payload, response = await self._call(
            "POST", "/v1/images/generations", json_body=request.to_api_body(),
            idempotency_key=key,
        )
        task = self._parse_task(payload, submitting=True, idempotency_key=key)
        task.replayed = response.headers.get(REPLAYED_HEADER, "").strip().lower() == "true"
        logger.debug("submitted task %s%s", task.id, " (replayed)" if task.replayed else "")
        return task

    async def get_task(self, task_id: str) -> GenerationTask:
        """Query a task's status (retried on transport errors, 429 and 5xx)."""
        payload, _ = await self._call("GET", f"/v1/tasks/{task_id}")
        return self._parse_task(payload, submitting=False)

    async def get_tasks(self, task_ids: Sequence[str]) -> list[GenerationTask]:
        """Read up to 50 tasks in one request (``POST /v1/tasks/batch``).

        Retried like a ``GET`` (a read). Ids the API does not know, or that another key
        created, are left out of the answer, as are entries that do not parse.

        Args:
            task_ids: The ids, at most 50 (duplicates are asked once).

        Raises:
            SeedreamConfigurationError: more than 50 ids.
            SeedreamAPIError: the API refused the read (404 or 405: it has no batch endpoint).
        """
        ids = list(dict.fromkeys(task_ids))
        if len(ids) > BATCH_READ_MAX_IDS:
            raise SeedreamConfigurationError(
                f"{len(ids)} task ids: a batch read takes at most {BATCH_READ_MAX_IDS}"
            )
        if not ids:
            return []
        payload, _ = await self._call(
            "POST", "/v1/tasks/batch", json_body={"task_ids": ids}, paid=False
        )
        data = payload.get("data") if isinstance(payload, dict) else None
        if not isinstance(data, list):
            raise ResponseFormatError("unexpected batch read body: no 'data' list")
        tasks = []
        for item in data:
            try:
                tasks.append(GenerationTask.model_validate(item))
            except ValueError:
                logger.debug("a batch read entry did not parse; its task is read alone")
        return tasks

    async def get_credits(self) -> CreditBalance:
        """The account's and this key's credits (``GET /v1/credits``).

        Raises:
            BalanceUnavailableError: the API has no balance endpoint (404 or 405).
            SeedreamError: another failure (after retries for 429/5xx).
        """
        try:
            payload, _ = await self._call("GET", "/v1/credits")
        except SeedreamAPIError as exc:
            if exc.status_code not in MISSING_ENDPOINT_STATUSES:
                raise
            raise BalanceUnavailableError(
                exc.status_code, f"GET /v1/credits answered {exc.status_code}: no balance endpoint"
            ) from None
        if not isinstance(payload, dict):
            raise ResponseFormatError("unexpected credits body: not a JSON object")
        return CreditBalance.from_api(payload)

    async def list_tasks(
        self,
        *,
        status: str | None = None,
        model: str | None = None,
        page: int = 1,
        page_size: int = 100,
    ) -> TaskPage:
        """One page of the account's tasks (``GET /v1/tasks``), as the API orders them.

        Args:
            status: Only tasks in this status.
            model: Only tasks of this model.
            page: The page, from 1.
            page_size: Tasks per page (the API's maximum is 100).
        """
        params: dict[str, Any] = {"type": "image", "page": page, "page_size": page_size}
        if status:
            params["status"] = status
        if model:
            params["model"] = model
        payload, _ = await self._call("GET", "/v1/tasks", params=params)
        try:
            return TaskPage.model_validate(payload)
        except ValueError as exc:
            summary = self._scrub(str(exc).splitlines()[0])
            raise ResponseFormatError(f"unexpected task list body: {summary}") from None

    async def iter_tasks(
        self, *, model: str | None = None, page_size: int = 100, max_pages: int = 100
    ) -> AsyncIterator[GenerationTask]:
        """Every task of the account (of one model), page after page, at most ``max_pages``."""
        for page in range(1, max_pages + 1):
            found = await self.list_tasks(model=model, page=page, page_size=page_size)
            for task in found.data:
                yield task
            if not found.data or page * found.page_size >= found.total:
                return

    async def wait(
        self,
        task_id: str,
        *,
        max_wait: float | None = None,
        estimated_time: float | None = None,
        on_progress: ProgressCallback | None = None,
        poll: PollPolicy | None = None,
    ) -> GenerationTask:
        """Poll a task until it is terminal and return it (completed, failed or cancelled).

        Each read goes through :attr:`status_reader` (batched with the client's other waits)
        unless the client was made with ``batch_status_reads=False``.

        Args:
            task_id: The remote task id.
            max_wait: Wall-clock cap in seconds (default: the poll policy's).
            estimated_time: The submit response's ``task_info.estimated_time``,
                which times the first poll.
            on_progress: Called (sync or async) whenever status or progress changes.
            poll: A polling policy for this wait.

        Raises:
            WaitTimeoutError: the cap ran out; the task may still finish.
            NotFoundError: the task stayed unknown beyond the grace period.
            SeedreamError: a poll error that persisted past the tolerance.
        """
        policy = poll or self.poll
        cap = policy.max_wait if max_wait is None else max_wait
        started = time.monotonic()
        deadline = started + cap
        delay = policy.first_delay(estimated_time)  # then min_interval, backing off
        backoff = policy.min_interval
        last: GenerationTask | None = None
        errors_in_a_row = 0
        reader = self.status_reader if self.batch_status_reads else None
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                if reader is not None:
                    reader.expect(task_id, time.monotonic() + min(delay, remaining))
                await asyncio.sleep(min(delay, remaining))
                delay, backoff = backoff, min(policy.max_interval, backoff * policy.factor)
                try:
                    task = await self._poll_once(
                        task_id, reader, first=last is None, started=started, deadline=deadline,
                        longest_hold=policy.min_interval,
                    )  # fmt: skip
                except asyncio.TimeoutError:
                    break
                except NotFoundError:
                    if time.monotonic() - started > policy.not_found_grace:
                        raise
                    logger.debug("task %s not visible yet; polling again", task_id)
                    continue
                except SeedreamError as exc:
                    errors_in_a_row += 1
                    if not exc.retryable or errors_in_a_row > policy.max_consecutive_errors:
                        raise
                    if isinstance(exc, SeedreamAPIError) and exc.retry_after:
                        delay = max(delay, exc.retry_after)  # the API asked for a pause
                    logger.debug(
                        "transient poll error %d for %s: %s", errors_in_a_row, task_id, exc
                    )
                    continue
                errors_in_a_row = 0
                if reader is not None and last is None:
                    reader.note_first_read(finished=task.status.is_terminal)
                if on_progress is not None and (
                    last is None or (task.status, task.progress) != (last.status, last.progress)
                ):
                    outcome = on_progress(task)
                    if inspect.isawaitable(outcome):
                        await outcome
                last = task
                if task.status.is_terminal:
                    return task
            raise WaitTimeoutError(
                task_id, time.monotonic() - started, last.status.value if last else None
            )
        finally:
            if reader is not None:
                reader.forget(task_id)  # its announced read will not come

    async def _poll_once(
        self,
        task_id: str,
        reader: TaskStatusReader | None,
        *,
        first: bool,
        started: float,
        deadline: float,
        longest_hold: float,
    ) -> GenerationTask:
        """One read of a wait: through the reader (held for its round) or a ``GET``; with its
        own retries, it may not outlive the wait's cap (``asyncio.TimeoutError``) either."""
        if reader is None:
            read = self.get_task(task_id)
        else:
            hold = reader.hold_for(first=first, age=time.monotonic() - started, longest=longest_hold)
            read = reader.read(task_id, max_delay=hold)
        return await asyncio.wait_for(read, timeout=max(0.001, deadline - time.monotonic()))

    async def download(
        self, url: str, sink: IO[bytes], *, max_bytes: int = MAX_IMAGE_BYTES
    ) -> DownloadResult:
        """Stream a result image into a binary sink, checking its type and size.

        The API key is not sent (result URLs are served by a CDN). Transport
        errors and 5xx are retried; a partial write is rewound first, so the sink
        must be seekable for retries to happen.

        Args:
            url: A URL from ``task.results``.
            sink: A binary file-like object opened for writing.
            max_bytes: Size cap; a larger body raises :class:`ImageTooLargeError`.

        Raises:
            ResultExpiredError: 403/404/410, the URL expired or is gone.
            NotAnImageError: the bytes are not an image.
            ImageTooLargeError: the body exceeds ``max_bytes``.
            DownloadError: other failures (``retryable`` says if a later try may work).
        """
        start = sink.tell() if sink.seekable() else None
        attempt = 0
        while True:
            attempt += 1
            try:
                return await self._download_once(url, sink, max_bytes)
            except DownloadError as exc:
                can_retry = exc.retryable and start is not None
                if not can_retry or attempt >= self.retry.max_attempts:
                    raise
                assert start is not None
                sink.seek(start)
                sink.truncate()
                await asyncio.sleep(self.retry.backoff(attempt))

    # -- internals -----------------------------------------------------------

    async def _download_once(self, url: str, sink: IO[bytes], max_bytes: int) -> DownloadResult:
        try:
            async with self._results.stream("GET", url) as response:
                if response.status_code in (403, 404, 410):
                    raise ResultExpiredError(url, f"HTTP {response.status_code}: expired or gone")
                if response.status_code >= 400:
                    raise DownloadError(
                        url,
                        f"HTTP {response.status_code}",
                        retryable=response.status_code >= 500 or response.status_code == 429,
                    )
                declared = response.headers.get("content-length")
                if declared and declared.isdigit() and int(declared) > max_bytes:
                    raise ImageTooLargeError(url, f"{declared} bytes declared, cap is {max_bytes}")
                written = 0
                head = b""
                image_type: str | None = None
                async for chunk in response.aiter_bytes():
                    written += len(chunk)
                    if written > max_bytes:
                        raise ImageTooLargeError(url, f"body exceeds the cap of {max_bytes} bytes")
                    if image_type is None:
                        head += chunk
                        if len(head) < 16:
                            continue
                        image_type = self._require_image(url, head)
                        sink.write(head)
                    else:
                        sink.write(chunk)
                if image_type is None:
                    image_type = self._require_image(url, head)
                    sink.write(head)
                return DownloadResult(
                    url, written, response.headers.get("content-type"), image_type
                )
        except httpx.TransportError as exc:
            raise DownloadError(url, f"{type(exc).__name__}: {exc}", retryable=True) from None

    @staticmethod
    def _require_image(url: str, head: bytes) -> str:
        image_type = sniff_image_type(head)
        if image_type is None:
            raise NotAnImageError(url, f"the body is not an image (starts with {head[:8]!r})")
        return image_type

    def _scrub(self, text: str) -> str:
        return text.replace(self._api_key, "***") if self._api_key else text

    async def _call(
        self,
        method: str,
        path: str,
        *,
        json_body: dict[str, Any] | None = None,
        params: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
        paid: bool | None = None,
    ) -> tuple[Any, httpx.Response]:
        """One API call with the retry rules of this module; returns parsed JSON and the answer.

        ``paid`` says whether the call is a paid write (default: every ``POST``).
        """
        is_submit = method == "POST" if paid is None else paid
        headers = {IDEMPOTENCY_HEADER: idempotency_key} if idempotency_key else None
        timeout = self._submit_timeout if is_submit else httpx.USE_CLIENT_DEFAULT
        attempt = 0
        in_doubt = False  # an earlier attempt of this submission was answered 5xx
        while True:
            attempt += 1
            try:
                response = await self._api.request(
                    method, path, json=json_body, params=params, headers=headers, timeout=timeout
                )
            except _NOT_SENT as exc:
                error: SeedreamError = SeedreamConnectionError(
                    f"cannot reach {self.base_url}: {type(exc).__name__}: {self._scrub(str(exc))}"
                )
            except httpx.TransportError as exc:
                detail = f"{type(exc).__name__}: {self._scrub(str(exc)) or 'no detail'}"
                if is_submit:
                    raise SubmissionOutcomeUnknownError(
                        f"the submission reached {self.base_url} but no answer came back "
                        f"({detail}); a task may have been created and billed, so it was not "
                        "resubmitted",
                        idempotency_key=idempotency_key,
                    ) from None
                error = SeedreamConnectionError(f"{method} {path} failed: {detail}")
            else:
                if response.status_code < 400:
                    return self._json(response, is_submit, idempotency_key), response
                error = self._api_error(response)
            in_doubt = in_doubt or (is_submit and isinstance(error, ServerError))
            delay = self._retry_delay(error, attempt)
            if delay is None:
                error.submission_in_doubt = in_doubt
                raise error
            logger.debug("%s %s: %s; retrying in %.1f s", method, path, error, delay)
            await asyncio.sleep(delay)

    def _retry_delay(self, error: SeedreamError, attempt: int) -> float | None:
        if not error.retryable or attempt >= self.retry.max_attempts:
            return None
        hint = error.retry_after if isinstance(error, SeedreamAPIError) else None
        if hint is None:
            return self.retry.backoff(attempt)
        if hint > self.retry.max_retry_after:
            # Waiting that long is the caller's choice: say so, and stop every retry layer
            # (Prefect's included) from calling the API again before the time it asked for.
            error.retryable = False
            error.note = (
                f"longer than max_retry_after={self.retry.max_retry_after:g} s: not retried; run "
                "again later"
            )
            error.args = (f"{error} ({error.note})",)
            return None
        return hint + random.uniform(0, min(1.0, hint / 10))

    def _json(self, response: httpx.Response, is_submit: bool, idempotency_key: str | None) -> Any:
        try:
            return response.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            snippet = self._scrub(response.text[:120])
            if is_submit:
                raise SubmissionOutcomeUnknownError(
                    f"the submission was answered {response.status_code} with a body that is not "
                    f"JSON ({snippet!r}); a task may exist, so it was not resubmitted",
                    idempotency_key=idempotency_key,
                ) from None
            raise ResponseFormatError(
                f"{response.request.method} {response.request.url.path} answered a body that is "
                f"not JSON: {snippet!r}"
            ) from None

    def _api_error(self, response: httpx.Response) -> SeedreamAPIError:
        try:
            fields = error_body_fields(response.json())
        except (json.JSONDecodeError, UnicodeDecodeError):
            fields = {}
        fields = {name: self._scrub(value) for name, value in fields.items()}
        return api_error_for_status(
            response.status_code,
            fields.get("message") or response.reason_phrase or "error",
            error_type=fields.get("type"),
            param=fields.get("param"),
            fallback_suggestion=fields.get("fallback_suggestion"),
            api_code=fields.get("api_code"),
            retry_after_header=parse_retry_after_header(response.headers.get("retry-after")),
            request_id=fields.get("request_id") or response.headers.get("x-request-id"),
            action_url=fields.get("action_url"),
        )

    def _parse_task(
        self, payload: Any, *, submitting: bool, idempotency_key: str | None = None
    ) -> GenerationTask:
        try:
            return GenerationTask.model_validate(payload)
        except ValueError as exc:
            summary = self._scrub(str(exc).splitlines()[0])
            if submitting:
                raise SubmissionOutcomeUnknownError(
                    f"the submission was answered with an unexpected body ({summary}); "
                    "a task may exist, so it was not resubmitted",
                    idempotency_key=idempotency_key,
                ) from None
            raise ResponseFormatError(f"unexpected task body: {summary}") from None

