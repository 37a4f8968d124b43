"""A blocking twin of :class:`SeedreamClient` for scripts and sync code.

It runs one :class:`SeedreamClient` on a private event loop in a background
thread (an anyio blocking portal), so both APIs share every rule and the same
connection pool; nothing is implemented twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import IO, Any

from anyio.from_thread import start_blocking_portal

from prefect_seedream.api.balance import CreditBalance
from prefect_seedream.api.client import DownloadResult, SeedreamClient
from prefect_seedream.api.models import GenerationRequest, GenerationTask


class SyncSeedreamClient:
    """Blocking client of the Evolink Seedream API.

    Takes the same arguments as :class:`SeedreamClient`.

    Examples:
        >>> import io
        >>> from prefect_seedream import GenerationRequest, SyncSeedreamClient
        >>> from prefect_seedream.simulator import SimulatorConfig, running_simulator
        >>> with running_simulator(SimulatorConfig(latency_seconds=0.5, jitter_seconds=0)) as sim:
        ...     with SyncSeedreamClient(api_key="sk-...", base_url=sim.base_url) as c:
        ...         task = c.submit(GenerationRequest(prompt="A red fox", size="2K"))
        ...         done = c.wait(task.id, estimated_time=task.task_info.estimated_time)
        ...         sink = io.BytesIO()  # or open("fox.png", "wb")
        ...         c.download(done.results[0], sink).image_type
        'png'
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._portal_cm = start_blocking_portal()
        self._portal = self._portal_cm.__enter__()
        try:
            self._client: SeedreamClient = self._portal.call(_make_client, args, kwargs)
        except BaseException:
            self._portal_cm.__exit__(None, None, None)
            raise

    @property
    def async_client(self) -> SeedreamClient:
        """The async client underneath (for its settings)."""
        return self._client

    def __enter__(self) -> SyncSeedreamClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool and stop the background loop."""
        if self._portal_cm is None:
            return
        try:
            self._portal.call(self._client.aclose)
        finally:
            self._portal_cm.__exit__(None, None, None)
            self._portal_cm = None  # type: ignore[assignment]

    def submit(self, request: GenerationRequest) -> GenerationTask:
        """Submit a generation; see :meth:`SeedreamClient.submit`."""
        return self._portal.call(self._client.submit, request)

    def get_task(self, task_id: str) -> GenerationTask:
        """Query a task; see :meth:`SeedreamClient.get_task`."""
        return self._portal.call(self._client.get_task, task_id)

    def get_tasks(self, task_ids: Sequence[str]) -> list[GenerationTask]:
        """Read up to 50 tasks in one request; see :meth:`SeedreamClient.get_tasks`."""
        return self._portal.call(self._client.get_tasks, task_ids)

    def get_credits(self) -> CreditBalance:
        """The account's balance; see :meth:`SeedreamClient.get_credits`."""
        return self._portal.call(self._client.get_credits)

    def wait(self, task_id: str, **kwargs: Any) -> GenerationTask:
        """Wait for a terminal task; see :meth:`SeedreamClient.wait`. Waits of several
        threads on one client share its status reader (their reads are batched)."""
        return self._portal.call(lambda: self._client.wait(task_id, **kwargs))

    def download(self, url: str, sink: IO[bytes], **kwargs: Any) -> DownloadResult:
        """Stream an image into a sink; see :meth:`SeedreamClient.download`."""
        return self._portal.call(lambda: self._client.download(url, sink, **kwargs))


async def _make_client(args: tuple[Any, ...], kwargs: dict[str, Any]) -> SeedreamClient:
    return SeedreamClient(*args, **kwargs)
