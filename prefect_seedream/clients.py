"""One pooled API client per event loop and credentials, shared by the tasks.

Creating an ``httpx.AsyncClient`` builds an SSL context (milliseconds of CPU);
a dataset of thousands of rows would pay that per task. Clients are kept per
running event loop, because an httpx pool belongs to the loop it was used on.
"""

from __future__ import annotations

import asyncio
import hashlib
import weakref

from prefect_seedream.api.client import SeedreamClient
from prefect_seedream.credentials import SeedreamCredentials, resolve_credentials

_ClientKey = tuple[str, str, float, float]
_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[_ClientKey, SeedreamClient]] = (
    weakref.WeakKeyDictionary()
)


def _key(credentials: SeedreamCredentials) -> _ClientKey:
    fingerprint = hashlib.sha256(credentials.api_key.get_secret_value().encode()).hexdigest()
    return (fingerprint, credentials.base_url, credentials.connect_timeout, credentials.read_timeout)


def client_for(credentials: SeedreamCredentials | None) -> SeedreamClient:
    """The shared client of the running loop for these credentials (or the environment's)."""
    resolved = resolve_credentials(credentials)
    loop = asyncio.get_running_loop()
    per_loop = _clients.setdefault(loop, {})
    key = _key(resolved)
    client = per_loop.get(key)
    if client is None:
        client = per_loop[key] = resolved.get_client()
    return client


async def close_clients() -> None:
    """Close the clients of the running loop (flows call this when they end)."""
    per_loop = _clients.pop(asyncio.get_running_loop(), {})
    for client in per_loop.values():
        await client.aclose()
