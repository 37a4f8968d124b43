"""API clients for the tasks: one pooled client per run, or one per call, always closed.

Creating an ``httpx.AsyncClient`` builds an SSL context (milliseconds of CPU) and opens
connections; a run of thousands of rows must share one. A run (the dataset flow, a shard,
:func:`~prefect_seedream.tasks.generate_many`) opens a :func:`shared_clients` scope: inside it,
:func:`api_client` hands out one pooled client per credentials, closed when the scope ends. A
task called on its own (no scope on its event loop: a sync flow, ``.submit``, ``.map``, plain
code) gets a client of its own, closed when the call ends, so nothing is left open whatever
loop the call ran on.

Each client carries one :class:`~prefect_seedream.api.task_reader.TaskStatusReader`, so the
waits of a run that shares its client are read together (``POST /v1/tasks/batch``), with no
change to the callers.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field

from prefect_seedream.api.client import SeedreamClient
from prefect_seedream.credentials import SeedreamCredentials, resolve_credentials

_ClientKey = tuple[str, str, float, float, float]


def _key(credentials: SeedreamCredentials) -> _ClientKey:
    fingerprint = hashlib.sha256(credentials.api_key.get_secret_value().encode()).hexdigest()
    return (
        fingerprint, credentials.base_url, credentials.connect_timeout, credentials.read_timeout,
        credentials.submit_timeout,
    )


@dataclass
class _Scope:
    loop: asyncio.AbstractEventLoop
    clients: dict[_ClientKey, SeedreamClient] = field(default_factory=dict)

    def client_for(self, credentials: SeedreamCredentials) -> SeedreamClient:
        key = _key(credentials)
        client = self.clients.get(key)
        if client is None:
            client = self.clients[key] = credentials.get_client()
        return client


_scope: ContextVar[_Scope | None] = ContextVar("seedream_clients", default=None)


@asynccontextmanager
async def shared_clients() -> AsyncIterator[None]:
    """Within this block, :func:`api_client` shares one pooled client per credentials.

    Examples:
        ```python
        async with shared_clients():
            async with api_client(None) as client:  # the environment's credentials
                balance = await client.get_credits()
            async with api_client(None) as again:  # the same one, closed when the scope ends
                assert again is client
        ```
    """
    scope = _Scope(asyncio.get_running_loop())
    token = _scope.set(scope)
    try:
        yield
    finally:
        _scope.reset(token)
        for client in scope.clients.values():
            await client.aclose()


@asynccontextmanager
async def api_client(credentials: SeedreamCredentials | None) -> AsyncIterator[SeedreamClient]:
    """A client for these credentials (default: the environment's): the scope's pooled one
    when a :func:`shared_clients` scope runs on this event loop, else a new one, closed at
    the end of the block."""
    resolved = resolve_credentials(credentials)
    scope = _scope.get()
    if scope is not None and scope.loop is asyncio.get_running_loop():
        yield scope.client_for(resolved)
        return
    client = resolved.get_client()
    try:
        yield client
    finally:
        await client.aclose()
