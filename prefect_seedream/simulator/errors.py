"""HTTP error bodies exactly as the Evolink contract documents them.

Every error answer of the simulator has the body
``{"error": {"code": <int HTTP status>, "message": "...", "type": "...", "param": "...",
"fallback_suggestion": "..."}}`` where ``param`` and ``fallback_suggestion`` are optional.

Newer answers (section 5 of ``evolink-api.md``) add to this:

- a string ``code`` instead of the integer status on the quota refusals (402
  ``insufficient_quota``, ``key_quota_exhausted``, ``key_daily_quota_exhausted``: the
  account's own refusals and ``[[sim:quota_error=CODE]]``) and on 409 ``idempotency_conflict``;
  ``[[sim:submit_status=402]]`` keeps the integer code of section 3, so both readings can be
  exercised;
- ``action_url`` and ``request_id`` in the body of 402 answers;
- a ``Retry-After`` header (whole seconds, the same number as the ``"retry after N seconds"``
  hint) on every simulated 429 and 503, and on ``key_daily_quota_exhausted``;
- an ``x-request-id`` header on every error answer (the app adds it, see
  :meth:`SimulatorHTTPError.headers`).
"""

from __future__ import annotations

import secrets
from typing import Any

#: ``error.type`` for each documented HTTP status.
ERROR_TYPES: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "insufficient_quota_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large_error",
    429: "rate_limit_error",
    500: "internal_server_error",
    502: "upstream_error",
    503: "service_unavailable_error",
}

#: Message used when a caller does not give one.
DEFAULT_MESSAGES: dict[int, str] = {
    400: "Invalid request parameters",
    401: "Invalid or expired token",
    402: "Insufficient credits",
    403: "Access denied for this model",
    404: "Resource not found",
    409: "Conflict",
    413: "Image file too large",
    429: "Rate limit exceeded",
    500: "Internal server error, please try again later",
    502: "Upstream AI service unavailable",
    503: "Service temporarily unavailable",
}

#: HTTP statuses that markers such as ``[[sim:submit_status=...]]`` may ask for.
SIMULATED_STATUSES: frozenset[int] = frozenset(ERROR_TYPES)

#: Statuses whose simulated answers carry a retry hint and a ``Retry-After`` header.
RETRY_HINT_STATUSES: frozenset[int] = frozenset({429, 503})

#: ``error.code`` strings of the 402 quota refusals.
QUOTA_CODES: frozenset[str] = frozenset(
    {"insufficient_quota", "key_quota_exhausted", "key_daily_quota_exhausted"}
)

#: ``error.action_url`` of 402 answers.
BILLING_URL = "https://evolink.ai/dashboard/billing"


def new_request_id() -> str:
    """A fresh request id, ``req-`` and 16 hex digits.

    Examples:
        >>> rid = new_request_id()
        >>> rid.startswith("req-"), len(rid)
        (True, 20)
    """
    return f"req-{secrets.token_hex(8)}"


def retry_after_suggestion(seconds: int) -> str:
    """The ``fallback_suggestion`` text of 429 and 503 answers.

    Examples:
        >>> retry_after_suggestion(60)
        'retry after 60 seconds'
    """
    return f"retry after {seconds} seconds"


def error_body(
    status: int,
    message: str | None = None,
    *,
    param: str | None = None,
    fallback_suggestion: str | None = None,
    code: int | str | None = None,
    action_url: str | None = None,
    request_id: str | None = None,
) -> dict[str, Any]:
    """Build the documented error body for an HTTP status.

    Args:
        status: HTTP status code; its ``type`` comes from :data:`ERROR_TYPES`.
        message: Human-readable message; defaults to :data:`DEFAULT_MESSAGES`.
        param: Name of the offending request field, if any.
        fallback_suggestion: Hint such as ``"retry after 30 seconds"``.
        code: ``error.code``; defaults to the integer ``status``.
        action_url: ``error.action_url`` (402 answers), if any.
        request_id: ``error.request_id``, if any.

    Returns:
        The JSON-ready body.

    Examples:
        >>> error_body(400, "n must be within 1..15", param="n")["error"]["type"]
        'invalid_request_error'
        >>> error_body(503, fallback_suggestion="retry after 30 seconds")["error"]["code"]
        503
        >>> error_body(402, code="insufficient_quota")["error"]["code"]
        'insufficient_quota'
    """
    error: dict[str, Any] = {
        "code": code if code is not None else status,
        "message": message if message is not None else DEFAULT_MESSAGES.get(status, "Error"),
        "type": ERROR_TYPES.get(
            status, "invalid_request_error" if status < 500 else "internal_server_error"
        ),
    }
    if param is not None:
        error["param"] = param
    if fallback_suggestion is not None:
        error["fallback_suggestion"] = fallback_suggestion
    if action_url is not None:
        error["action_url"] = action_url
    if request_id is not None:
        error["request_id"] = request_id
    return {"error": error}


class SimulatorHTTPError(Exception):
    """An error answer, raised inside a route and rendered by the app's exception handler.

    Attributes:
        status: HTTP status code.
        message: ``error.message``.
        param: ``error.param`` or ``None``.
        fallback_suggestion: ``error.fallback_suggestion`` or ``None``.
        code: ``error.code`` when it is not the integer status (a string code), else ``None``.
        retry_after: Seconds of the ``Retry-After`` header, or ``None`` for no header.
        action_url: ``error.action_url`` or ``None``.
        request_id: ``error.request_id`` (and the ``x-request-id`` header) or ``None``, in
            which case the header carries a fresh id and the body none.

    Examples:
        >>> err = SimulatorHTTPError(404, "Task not found or expired")
        >>> err.body()["error"]["type"]
        'not_found_error'
        >>> SimulatorHTTPError(429, retry_after=3).headers()["Retry-After"]
        '3'
    """

    def __init__(
        self,
        status: int,
        message: str | None = None,
        *,
        param: str | None = None,
        fallback_suggestion: str | None = None,
        code: int | str | None = None,
        retry_after: int | None = None,
        action_url: str | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(message or DEFAULT_MESSAGES.get(status, "Error"))
        self.status = status
        self.message = message
        self.param = param
        self.fallback_suggestion = fallback_suggestion
        self.code = code
        self.retry_after = retry_after
        self.action_url = action_url
        self.request_id = request_id

    def body(self) -> dict[str, Any]:
        """The JSON body of this error."""
        return error_body(
            self.status,
            self.message,
            param=self.param,
            fallback_suggestion=self.fallback_suggestion,
            code=self.code,
            action_url=self.action_url,
            request_id=self.request_id,
        )

    def headers(self) -> dict[str, str]:
        """Response headers: ``x-request-id`` always, ``Retry-After`` when set."""
        headers = {"x-request-id": self.request_id or new_request_id()}
        if self.retry_after is not None:
            headers["Retry-After"] = str(self.retry_after)
        return headers


def simulated_error(
    status: int, retry_after: int, message: str | None = None
) -> SimulatorHTTPError:
    """An error for a fault marker or a random fault, with a retry hint for 429 and 503.

    The hint is both the ``fallback_suggestion`` text and a ``Retry-After`` header.

    Examples:
        >>> simulated_error(429, 2).fallback_suggestion
        'retry after 2 seconds'
        >>> simulated_error(503, 2).headers()["Retry-After"]
        '2'
        >>> simulated_error(500, 2).fallback_suggestion is None
        True
    """
    if status in RETRY_HINT_STATUSES:
        return SimulatorHTTPError(
            status,
            message,
            fallback_suggestion=retry_after_suggestion(retry_after),
            retry_after=retry_after,
        )
    return SimulatorHTTPError(status, message)


def quota_error(
    code: str, message: str | None = None, *, retry_after: int | None = None
) -> SimulatorHTTPError:
    """A 402 quota refusal with a string ``code``, ``action_url`` and ``request_id``.

    Args:
        code: One of :data:`QUOTA_CODES`.
        message: ``error.message``; defaults to a sentence naming the code.
        retry_after: Seconds until the refusal may go away (daily windows): sets the
            ``Retry-After`` header and the ``"retry after N seconds"`` suggestion.

    Examples:
        >>> err = quota_error("key_daily_quota_exhausted", retry_after=60)
        >>> body = err.body()["error"]
        >>> body["code"], body["type"], body["fallback_suggestion"]
        ('key_daily_quota_exhausted', 'insufficient_quota_error', 'retry after 60 seconds')
        >>> body["action_url"], body["request_id"].startswith("req-")
        ('https://evolink.ai/dashboard/billing', True)
    """
    default = {
        "insufficient_quota": "Insufficient credits",
        "key_quota_exhausted": "The quota of this API key is used up",
        "key_daily_quota_exhausted": "The daily quota of this API key is used up",
    }
    return SimulatorHTTPError(
        402,
        message if message is not None else default.get(code, "Insufficient credits"),
        code=code,
        retry_after=retry_after,
        fallback_suggestion=(
            retry_after_suggestion(retry_after) if retry_after is not None else None
        ),
        action_url=BILLING_URL,
        request_id=new_request_id(),
    )
