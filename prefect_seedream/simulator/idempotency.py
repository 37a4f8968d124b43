"""``Idempotency-Key`` on ``POST /v1/images/generations`` (section 5 of ``evolink-api.md``).

A submit may carry the header ``Idempotency-Key`` (name case-insensitive; value 1..255
printable ASCII characters, else 400 ``invalid_request_error`` with
``param: "Idempotency-Key"``). Keys are scoped per API key (its :func:`key_id_for`) and
remembered only when a task was created, with the canonical hash of the decoded JSON body
(:func:`body_hash`) and the task, for ``SimulatorConfig.idempotency_ttl_seconds`` from the
task's creation (and never longer than the task itself lives). A refused submission (4xx, 429,
a 5xx decided before creation) stores nothing.

With a remembered key, a submit with the same body is a *replay*: HTTP 200 with the original
task as a poll would show it now and the header ``idempotency-replayed: true``; nothing is
created or charged. A different body is a *conflict*: 409 with the string code
``idempotency_conflict``.
"""

from __future__ import annotations

import hashlib
import heapq
import itertools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from .errors import SimulatorHTTPError

#: Request header (lower case, as ASGI gives it).
IDEMPOTENCY_HEADER = "idempotency-key"
#: Response header of a replay.
REPLAYED_HEADER = "idempotency-replayed"
#: Longest accepted key.
MAX_KEY_CHARS = 255

T = TypeVar("T")


def parse_idempotency_key(values: Sequence[str]) -> str | None:
    """The key sent in the request (``values`` are every ``Idempotency-Key`` header value).

    Raises:
        SimulatorHTTPError: 400 when the header is repeated, empty, longer than 255
            characters or not printable ASCII.

    Examples:
        >>> parse_idempotency_key([]) is None
        True
        >>> parse_idempotency_key(["row-17-attempt-1"])
        'row-17-attempt-1'
        >>> try:
        ...     parse_idempotency_key(["caf\\u00e9"])
        ... except SimulatorHTTPError as err:
        ...     err.status, err.param
        (400, 'Idempotency-Key')
    """
    if not values:
        return None
    if len(values) > 1:
        raise _invalid("Idempotency-Key must be sent at most once")
    value = values[0]
    if not 1 <= len(value) <= MAX_KEY_CHARS:
        raise _invalid(f"Idempotency-Key must be 1..{MAX_KEY_CHARS} characters long")
    if any(not 0x20 <= ord(char) <= 0x7E for char in value):
        raise _invalid("Idempotency-Key must contain printable ASCII characters only")
    return value


def _invalid(message: str) -> SimulatorHTTPError:
    return SimulatorHTTPError(400, message, param="Idempotency-Key")


def body_hash(body: Any) -> str:
    """SHA-256 of the canonical JSON of a decoded body (sorted keys, compact separators).

    Examples:
        >>> body_hash({"b": 1, "a": [1, 2]}) == body_hash({"a": [1, 2], "b": 1})
        True
        >>> len(body_hash({}))
        64
    """
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def conflict_error(key: str) -> SimulatorHTTPError:
    """The 409 answer to a key reused with another body.

    Examples:
        >>> conflict_error("k1").body()["error"]["code"]
        'idempotency_conflict'
    """
    return SimulatorHTTPError(
        409,
        f"Idempotency-Key {key} was already used with a different request body",
        code="idempotency_conflict",
        param="Idempotency-Key",
    )


@dataclass
class IdempotencyRecord(Generic[T]):
    """A remembered key.

    Attributes:
        body_hash: :func:`body_hash` of the body that created the task.
        task: The task it created.
        expires_at: State-clock time at which the key is forgotten.
    """

    body_hash: str
    task: T
    expires_at: float


class IdempotencyStore(Generic[T]):
    """Remembered keys, per API key, forgotten after their time to live.

    Examples:
        >>> store: IdempotencyStore[str] = IdempotencyStore()
        >>> store.remember("key-a", "k1", "h", "task-1", expires_at=10.0)
        >>> store.lookup("key-a", "k1", now=5.0).task
        'task-1'
        >>> store.lookup("key-b", "k1", now=5.0) is None  # scoped per API key
        True
        >>> store.prune(now=10.0)
        >>> store.lookup("key-a", "k1", now=5.0) is None, len(store)
        (True, 0)
    """

    def __init__(self) -> None:
        self._records: dict[tuple[str, str], IdempotencyRecord[T]] = {}
        self._expiring: list[tuple[float, int, tuple[str, str]]] = []
        self._seq = itertools.count()

    def __len__(self) -> int:
        return len(self._records)

    def lookup(self, key_id: str, key: str, now: float) -> IdempotencyRecord[T] | None:
        """The live record of ``key`` for API key ``key_id``, or ``None``."""
        record = self._records.get((key_id, key))
        if record is None:
            return None
        if record.expires_at <= now:
            del self._records[(key_id, key)]
            return None
        return record

    def remember(self, key_id: str, key: str, digest: str, task: T, expires_at: float) -> None:
        """Remember that ``key`` created ``task`` from a body hashing to ``digest``."""
        self._records[(key_id, key)] = IdempotencyRecord(digest, task, expires_at)
        heapq.heappush(self._expiring, (expires_at, next(self._seq), (key_id, key)))

    def forget(self, key_id: str, key: str) -> None:
        """Forget ``key`` (its task is gone)."""
        self._records.pop((key_id, key), None)

    def prune(self, now: float) -> None:
        """Forget every key whose time to live is over (O(log n) each)."""
        while self._expiring and self._expiring[0][0] <= now:
            _, _, scoped = heapq.heappop(self._expiring)
            record = self._records.get(scoped)
            if record is not None and record.expires_at <= now:
                del self._records[scoped]

    def clear(self) -> None:
        """Forget every key."""
        self._records.clear()
        self._expiring.clear()
