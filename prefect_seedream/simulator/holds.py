"""Responses held open on purpose (hung or delayed answers, paused downloads) and their release.

A route that holds its answer (``[[sim:submit_hang]]``, a delayed submit, a paused download)
waits through :class:`HeldResponses`, which ends every wait as soon as the server starts to
shut down. uvicorn's graceful shutdown waits for open requests; without the release a hung
request would hold the shutdown until uvicorn's own timeout, then be cancelled with an error in
the log. The server (:mod:`prefect_seedream.simulator.server`) calls
:meth:`HeldResponses.release` and closes the connections of :attr:`HeldResponses.clients`
before uvicorn's shutdown, so a held submit ends without a byte of answer.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

#: ``(host, port)`` of a client connection, as in the ASGI scope's ``"client"``.
ClientAddress = tuple[str, int]


def client_address(client: Sequence[object] | None) -> ClientAddress | None:
    """The ``(host, port)`` of an ASGI scope's ``"client"`` entry, or ``None``.

    Examples:
        >>> client_address(["127.0.0.1", 5000])
        ('127.0.0.1', 5000)
        >>> client_address(None) is None
        True
    """
    if client is None or len(client) != 2:
        return None
    host, port = client
    return (str(host), int(port)) if isinstance(port, int) else None


class HeldResponses:
    """The responses a simulator holds open, and the switch that releases them on shutdown.

    Every wait runs on the server's event loop; :meth:`release` must be called on it too.

    Examples:
        >>> async def demo():
        ...     holds = HeldResponses()
        ...     slept = await holds.sleep(0.01)
        ...     holds.release()
        ...     return slept, await holds.sleep(10), holds.released
        >>> asyncio.run(demo())
        (True, False, True)
    """

    def __init__(self) -> None:
        self.released = False
        self._clients: Counter[ClientAddress] = Counter()
        self._event: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def clients(self) -> frozenset[ClientAddress]:
        """Client addresses whose response is held right now."""
        return frozenset(self._clients)

    def _released_event(self) -> asyncio.Event:
        loop = asyncio.get_running_loop()
        if self._event is None or self._loop is not loop:
            self._event, self._loop = asyncio.Event(), loop
            if self.released:
                self._event.set()
        return self._event

    @contextmanager
    def hold(self, client: ClientAddress | None) -> Iterator[None]:
        """Register ``client`` as having a held response for the duration of the block.

        Examples:
            >>> holds = HeldResponses()
            >>> with holds.hold(("127.0.0.1", 5000)):
            ...     sorted(holds.clients)
            [('127.0.0.1', 5000)]
            >>> holds.clients
            frozenset()
        """
        if client is not None:
            self._clients[client] += 1
        try:
            yield
        finally:
            if client is not None:
                self._clients[client] -= 1
                if self._clients[client] <= 0:
                    del self._clients[client]

    async def sleep(self, seconds: float) -> bool:
        """Wait ``seconds``, or less if the responses are released meanwhile.

        Returns:
            ``True`` if the whole time elapsed, ``False`` if the wait was released.
        """
        if self.released:
            return False
        try:
            await asyncio.wait_for(self._released_event().wait(), timeout=seconds)
        except asyncio.TimeoutError:
            return True
        return False

    async def until_released(self) -> None:
        """Wait until :meth:`release` is called (returns at once if it was)."""
        await self._released_event().wait()

    def release(self) -> None:
        """End every current and future wait (server shutdown)."""
        self.released = True
        if self._event is not None:
            self._event.set()
