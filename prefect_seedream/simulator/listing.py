"""``GET /v1/tasks``: the calling key's tasks, newest first, filtered and paged.

Query parameters (all optional): ``status`` (``pending``, ``processing``, ``completed``,
``failed`` or ``cancelled``: the status a poll would show now), ``type`` (only ``image``
tasks exist: any other value matches nothing), ``model`` (exact name; an unknown one matches
nothing), ``page`` (1-based, default 1) and ``page_size`` (1..100, default 20). A bad
``status``, ``page`` or ``page_size`` is answered 400 ``invalid_request_error`` with ``param``
naming it. The answer is ``{"data": [...], "total": <matching tasks>, "page": p,
"page_size": s}``; a page past the end has an empty ``data``.

Each key's tasks are kept in a list in creation order (the state drops expired ones), so an
unfiltered page is a slice from the end; a filtered one scans the key's tasks once.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

from .errors import SimulatorHTTPError

#: Values accepted by the ``status`` filter.
LIST_STATUSES: frozenset[str] = frozenset(
    {"pending", "processing", "completed", "failed", "cancelled"}
)
DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100

T = TypeVar("T")


@dataclass(frozen=True)
class ListQuery:
    """A validated ``GET /v1/tasks`` query.

    Examples:
        >>> ListQuery().page_size
        20
    """

    status: str | None = None
    task_type: str | None = None
    model: str | None = None
    page: int = 1
    page_size: int = DEFAULT_PAGE_SIZE

    @property
    def is_filtered(self) -> bool:
        """Whether any filter is set."""
        return self.status is not None or self.task_type is not None or self.model is not None


def _positive_int(params: Mapping[str, str], name: str, default: int, maximum: int) -> int:
    raw = params.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or not 1 <= int(raw) <= maximum:
        raise SimulatorHTTPError(400, f"{name} must be an integer within 1..{maximum}", param=name)
    return int(raw)


def parse_list_query(params: Mapping[str, str]) -> ListQuery:
    """Validate the query parameters of ``GET /v1/tasks``.

    Raises:
        SimulatorHTTPError: 400 on a bad ``status``, ``page`` or ``page_size``.

    Examples:
        >>> parse_list_query({"status": "completed", "page": "2", "page_size": "5"})
        ListQuery(status='completed', task_type=None, model=None, page=2, page_size=5)
        >>> try:
        ...     parse_list_query({"page_size": "101"})
        ... except SimulatorHTTPError as err:
        ...     err.param
        'page_size'
    """
    status = params.get("status")
    if status is not None and status not in LIST_STATUSES:
        allowed = ", ".join(sorted(LIST_STATUSES))
        raise SimulatorHTTPError(400, f"status must be one of {allowed}", param="status")
    return ListQuery(
        status=status,
        task_type=params.get("type"),
        model=params.get("model"),
        page=_positive_int(params, "page", 1, 10**9),
        page_size=_positive_int(params, "page_size", DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE),
    )


def page_of(
    items: Sequence[T], query: ListQuery, matches: Callable[[T], bool]
) -> tuple[list[T], int]:
    """One page of ``items`` (oldest first) newest first, and the number of matching items.

    Args:
        items: Every item, in creation order.
        query: Paging (``matches`` implements the filters).
        matches: Whether an item passes the filters; not called without filters.

    Examples:
        >>> page_of(list(range(10)), ListQuery(page=2, page_size=4), lambda i: True)
        ([5, 4, 3, 2], 10)
        >>> page_of(list(range(10)), ListQuery(status="completed", page_size=3),
        ...         lambda i: i % 2 == 0)
        ([8, 6, 4], 5)
    """
    skip = (query.page - 1) * query.page_size
    if not query.is_filtered:
        total = len(items)
        end = total - skip
        start = max(0, end - query.page_size)
        return (list(reversed(items[start:end])) if end > 0 else []), total
    page: list[T] = []
    total = 0
    for item in reversed(items):
        if not matches(item):
            continue
        if skip <= total < skip + query.page_size:
            page.append(item)
        total += 1
    return page, total
