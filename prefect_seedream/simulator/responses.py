"""ASGI responses that misbehave on purpose: cut bodies, dropped connections, huge streams,
bodies that pause halfway.

A :class:`TruncatedResponse` declares a ``Content-Length`` larger than the bytes it sends,
then raises :class:`SimulatedConnectionDrop`; the ASGI server (uvicorn) reacts to an exception
raised after the response started by closing the connection, so an HTTP client sees a
transport error (``httpx.RemoteProtocolError``), never a status code.
:func:`install_log_filter` keeps uvicorn from logging a traceback for these deliberate drops.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

#: First bytes of every PNG file.
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

_CHUNK = 64 * 1024


class SimulatedConnectionDrop(Exception):
    """Raised after a partial response, so that the server closes the connection.

    Examples:
        >>> isinstance(SimulatedConnectionDrop("cut"), Exception)
        True
    """


class TruncatedResponse(Response):
    """Send headers with the full ``Content-Length``, half of the body, then drop.

    Args:
        content: The complete body that the headers announce.
        media_type: ``Content-Type`` of the response.
        status_code: HTTP status of the response.

    Examples:
        >>> TruncatedResponse(b"0123456789", "application/json").content_length
        10
    """

    def __init__(self, content: bytes, media_type: str, status_code: int = 200) -> None:
        super().__init__(content=content, status_code=status_code, media_type=media_type)
        self.content_length = len(content)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": self.status_code,
                "headers": self.raw_headers,
            }
        )
        await send(
            {
                "type": "http.response.body",
                "body": self.body[: max(1, len(self.body) // 2)],
                "more_body": True,
            }
        )
        raise SimulatedConnectionDrop("simulated connection drop")


def pause_split(size: int) -> int:
    """Bytes a :class:`PausedBodyResponse` sends before its pause: half, at least 8, never all.

    Examples:
        >>> pause_split(1000), pause_split(10), pause_split(1)
        (500, 8, 0)
    """
    return min(max(len(PNG_SIGNATURE), size // 2), max(0, size - 1))


class PausedBodyResponse(Response):
    """Send the headers (full ``Content-Length``) and the first part of the body, pause, then
    send the rest.

    Args:
        content: The complete body.
        media_type: ``Content-Type`` of the response.
        pause: Called between the two parts; returns ``True`` once the pause is over, or
            ``False`` if it was cut short (server shutdown): then the connection is dropped
            (:class:`SimulatedConnectionDrop`) instead of sending the rest.

    Examples:
        >>> async def no_pause() -> bool:
        ...     return True
        >>> PausedBodyResponse(b"0123456789abcdef", "image/png", no_pause).split
        8
    """

    def __init__(
        self, content: bytes, media_type: str, pause: Callable[[], Awaitable[bool]]
    ) -> None:
        super().__init__(content=content, media_type=media_type)
        self.pause = pause
        self.split = pause_split(len(content))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": self.status_code,
                "headers": self.raw_headers,
            }
        )
        await send(
            {"type": "http.response.body", "body": self.body[: self.split], "more_body": True}
        )
        if not await self.pause():
            raise SimulatedConnectionDrop("simulated connection drop (server shutting down)")
        await send({"type": "http.response.body", "body": self.body[self.split :]})


async def oversize_body(total_bytes: int) -> AsyncIterator[bytes]:
    """Yield ``total_bytes`` bytes: a PNG signature, then zero padding, in 64 KiB chunks.

    Examples:
        >>> import asyncio
        >>> async def collect():
        ...     return b"".join([chunk async for chunk in oversize_body(100_000)])
        >>> data = asyncio.run(collect())
        >>> len(data), data[:8] == PNG_SIGNATURE
        (100000, True)
    """
    first = PNG_SIGNATURE + bytes(max(0, min(_CHUNK, total_bytes) - len(PNG_SIGNATURE)))
    first = first[:total_bytes]
    yield first
    sent = len(first)
    padding = bytes(_CHUNK)
    while sent < total_bytes:
        chunk = padding[: min(_CHUNK, total_bytes - sent)]
        sent += len(chunk)
        yield chunk


def _is_simulated_drop(exc: BaseException | None) -> bool:
    if exc is None:
        return False
    if isinstance(exc, SimulatedConnectionDrop):
        return True
    nested = getattr(exc, "exceptions", None)  # exception groups
    if isinstance(nested, (list, tuple)) and nested:
        return all(_is_simulated_drop(inner) for inner in nested)
    return _is_simulated_drop(exc.__cause__) if exc.__cause__ is not exc else False


class _SimulatedDropFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not _is_simulated_drop(exc)


def install_log_filter(logger_name: str = "uvicorn.error") -> None:
    """Silence the server's "Exception in ASGI application" log for simulated drops only.

    Idempotent; other errors are still logged.

    Examples:
        >>> install_log_filter()
        >>> install_log_filter()  # a second call adds nothing
        >>> sum(isinstance(f, _SimulatedDropFilter)
        ...     for f in logging.getLogger("uvicorn.error").filters)
        1
    """
    logger = logging.getLogger(logger_name)
    if not any(isinstance(f, _SimulatedDropFilter) for f in logger.filters):
        logger.addFilter(_SimulatedDropFilter())
