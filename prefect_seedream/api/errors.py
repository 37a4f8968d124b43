"""The error hierarchy of the Seedream API layer.

Every error derives from :class:`SeedreamError`, says whether trying the same operation again
may succeed (``retryable``) and carries a ``code``: the API's own code when the API answered
(a string code such as ``insufficient_quota``, else the error ``type`` such as
``rate_limit_error``, or a failed task's ``error.code``), else a fixed snake_case name of what
happened on our side (``connection_error``, ``outcome_unknown``, ``wait_timeout``, ...). Never
a Python class name: the code is what manifests and events record. Messages carry the API's
own words but never the API key: the client scrubs it before an error is built.

Answers that concern the account rather than the request (401, 403, 402: every later
submission would get the same) say so with :attr:`SeedreamAPIError.account_scope`.
"""

from __future__ import annotations

import email.utils
import re
import time
from typing import Any, Literal

_RETRY_AFTER = re.compile(r"retry\s+after\s+(\d+(?:\.\d+)?)\s*(?:s\b|sec|second)", re.IGNORECASE)


def parse_retry_after(text: str | None) -> float | None:
    """Read the delay out of a hint such as ``"retry after 60 seconds"``.

    Args:
        text: The ``fallback_suggestion`` (or message) of an error body.

    Returns:
        The delay in seconds, or None when the text holds no such hint.

    Examples:
        >>> parse_retry_after("retry after 60 seconds")
        60.0
        >>> parse_retry_after("try a smaller image") is None
        True
    """
    if not text:
        return None
    match = _RETRY_AFTER.search(text)
    return float(match.group(1)) if match else None


def parse_retry_after_header(value: str | None, now: float | None = None) -> float | None:
    """Read a ``Retry-After`` header: a number of seconds or an HTTP date.

    Examples:
        >>> parse_retry_after_header("30")
        30.0
        >>> parse_retry_after_header("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0)
        10.0
        >>> parse_retry_after_header("soon") is None
        True
    """
    if not value or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError):
            return None
        if when is None:
            return None
        return max(0.0, when.timestamp() - (time.time() if now is None else now))
    return seconds if seconds >= 0 else None


class SeedreamError(Exception):
    """Base class of every error raised by prefect-seedream.

    Attributes:
        retryable: True when the same operation may succeed if tried again later.
        code: What happened, as manifests and events record it (see the module docstring).
        submission_in_doubt: Set on the error that ends a submission's retries when an
            earlier attempt of it may have created a task (a 5xx answer): the key that
            submission carried must be sent again, never replaced by a new one.
    """

    retryable: bool = False
    code: str = "error"
    submission_in_doubt: bool = False


class SeedreamConfigurationError(SeedreamError, ValueError):
    """The client is missing something it needs, such as an API key."""

    code = "configuration_error"


#: Who an API answer concerns: ``account`` (the key or the account: every later submission
#: would get the same answer), ``model`` (this model only, for this key), or None (the request).
AccountScope = Literal["account", "model"]


class SeedreamAPIError(SeedreamError):
    """An HTTP error answered by the Evolink API, with the fields of its error body.

    Attributes:
        status_code: The HTTP status.
        code: The API's code: the body's string ``code`` (newer answers, e.g.
            ``insufficient_quota``), else its ``type`` (``rate_limit_error``, ...).
        error_type: The body's ``type`` (for example ``rate_limit_error``).
        message: The API's own message.
        param: The offending request field, when the API names one.
        fallback_suggestion: The API's advice, such as ``"retry after 60 seconds"``.
        retry_after_header: Seconds of the answer's ``Retry-After`` header, if any.
        request_id: The API's id of the request (its body or ``x-request-id``), for support.
        action_url: Where the API says to act (e.g. a billing page), if it says.

    Examples:
        >>> err = api_error_for_status(402, "Insufficient credits", api_code="insufficient_quota")
        >>> err.code, err.account_scope, err.retryable
        ('insufficient_quota', 'account', False)
    """

    default_type = "api_error"

    def __init__(
        self,
        status_code: int,
        message: str,
        *,
        error_type: str | None = None,
        param: str | None = None,
        fallback_suggestion: str | None = None,
        api_code: str | None = None,
        retry_after_header: float | None = None,
        request_id: str | None = None,
        action_url: str | None = None,
    ) -> None:
        self.status_code = status_code
        self.message = message
        self.error_type = error_type or self.default_type
        self.code = api_code or self.error_type
        self.param = param
        self.fallback_suggestion = fallback_suggestion
        self.retry_after_header = retry_after_header
        self.request_id = request_id
        self.action_url = action_url
        label = self.error_type if self.code == self.error_type else f"{self.code} ({self.error_type})"
        text = f"HTTP {status_code} {label}: {message}"
        if param:
            text += f" (param: {param})"
        if fallback_suggestion:
            text += f" - {fallback_suggestion}"
        super().__init__(text)

    #: Our remark on the answer (why it was not retried), appended to :attr:`detail`.
    note: str | None = None

    @property
    def detail(self) -> str:
        """The API's message with its suggestion (what manifests record).

        Examples:
            >>> api_error_for_status(503, "Busy", fallback_suggestion="retry after 30 seconds").detail
            'Busy - retry after 30 seconds'
        """
        text = self.message
        if self.fallback_suggestion:
            text += f" - {self.fallback_suggestion}"
        if self.note:
            text += f" ({self.note})"
        return text

    @property
    def retry_after(self) -> float | None:
        """The delay the API asked for: its ``Retry-After`` header, else the text hint."""
        if self.retry_after_header is not None:
            return self.retry_after_header
        hint = parse_retry_after(self.fallback_suggestion)
        return hint if hint is not None else parse_retry_after(self.message)

    @property
    def account_scope(self) -> AccountScope | None:
        """Whether every later submission would get this answer too (see :data:`AccountScope`)."""
        return None


class BadRequestError(SeedreamAPIError):
    """400 ``invalid_request_error``: the request's parameters are wrong."""

    default_type = "invalid_request_error"


class AuthenticationError(SeedreamAPIError):
    """401 ``authentication_error``: the API key is invalid or expired (account-wide)."""

    default_type = "authentication_error"

    @property
    def account_scope(self) -> AccountScope | None:
        """The key is refused: every request of it would be."""
        return "account"


#: 402 codes that renew by themselves after a while (the answer's ``Retry-After`` says when).
DAILY_QUOTA_CODES = frozenset({"key_daily_quota_exhausted", "daily_quota_exhausted"})


class InsufficientQuotaError(SeedreamAPIError):
    """402 ``insufficient_quota_error``: out of credits, or the key's quota is used up.

    ``code`` tells which: ``insufficient_quota`` (the account's credits),
    ``key_quota_exhausted`` (the key's own cap), ``key_daily_quota_exhausted`` (the key's cap
    for the day: it renews, see :attr:`renews`).
    """

    default_type = "insufficient_quota_error"

    @property
    def account_scope(self) -> AccountScope | None:
        """Every later submission would be refused too."""
        return "account"

    @property
    def renews(self) -> bool:
        """True for a quota that renews by itself (a daily quota), when the API says when."""
        return self.code in DAILY_QUOTA_CODES and self.retry_after is not None


class PermissionDeniedError(SeedreamAPIError):
    """403 ``permission_error``: the key may not use this model, or anything at all."""

    default_type = "permission_error"

    @property
    def account_scope(self) -> AccountScope | None:
        """``model`` when the answer names the model (``param: "model"``), else ``account``.

        Only the field decides: a message that mentions models ("may not access any model")
        is no proof the key may use the others, and stopping the whole run costs nothing.
        """
        return "model" if self.param == "model" else "account"


class IdempotencyConflictError(SeedreamAPIError):
    """409 ``idempotency_conflict``: the ``Idempotency-Key`` was used with another body.

    A bug on the caller's side (a key must be sent again only with the same body); never
    retried.
    """

    default_type = "idempotency_conflict"


class NotFoundError(SeedreamAPIError):
    """404 ``not_found_error``: unknown task (or expired), or unknown model."""

    default_type = "not_found_error"


class RequestTooLargeError(SeedreamAPIError):
    """413 ``request_too_large_error``: a reference image is too large."""

    default_type = "request_too_large_error"


class RateLimitError(SeedreamAPIError):
    """429 ``rate_limit_error``: slow down; ``retry_after`` holds the API's hint."""

    default_type = "rate_limit_error"
    retryable = True


class ServerError(SeedreamAPIError):
    """5xx: the service (or its upstream) failed; try again later."""

    default_type = "internal_server_error"
    retryable = True


_STATUS_CLASSES: dict[int, type[SeedreamAPIError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    402: InsufficientQuotaError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: IdempotencyConflictError,
    413: RequestTooLargeError,
    429: RateLimitError,
}


def api_error_for_status(status_code: int, message: str, **fields: Any) -> SeedreamAPIError:
    """Build the error class documented for an HTTP status.

    Args:
        status_code: The HTTP status.
        message: The API's message.
        **fields: The other keyword arguments of :class:`SeedreamAPIError`.

    Examples:
        >>> err = api_error_for_status(429, "Too many requests",
        ...                            fallback_suggestion="retry after 60 seconds")
        >>> type(err).__name__, err.retryable, err.retry_after, err.code
        ('RateLimitError', True, 60.0, 'rate_limit_error')
        >>> api_error_for_status(503, "busy", retry_after_header=7.0).retry_after
        7.0
    """
    if status_code >= 500:
        cls: type[SeedreamAPIError] = ServerError
    else:
        cls = _STATUS_CLASSES.get(status_code, SeedreamAPIError)
    return cls(status_code, message, **fields)


class SeedreamConnectionError(SeedreamError):
    """The API could not be reached (connection refused, DNS, connect timeout).

    Nothing reached the server, so trying again is safe.
    """

    retryable = True
    code = "connection_error"


class ResponseFormatError(SeedreamError):
    """The API answered 2xx with a body that is not the documented JSON."""

    retryable = True
    code = "response_format_error"


class SubmissionOutcomeUnknownError(SeedreamError):
    """A submission may have reached the server, but no answer came back.

    The request was sent (a read timeout, or the connection dropped mid-response),
    so a task may exist and may be billed. Resubmitting could pay twice, so this
    error is not retryable: look for the task before submitting again (or send the same
    ``Idempotency-Key`` again, which the API answers with the task it created, if any).

    Attributes:
        idempotency_key: The key the lost submission was sent with.
        looked_up: True when the task was looked for (in the API's task list) and not found.
    """

    retryable = False
    code = "outcome_unknown"

    def __init__(
        self, message: str, *, idempotency_key: str | None = None, looked_up: bool = False
    ) -> None:
        self.idempotency_key = idempotency_key
        self.looked_up = looked_up
        super().__init__(message)


class TaskFailedError(SeedreamError):
    """A generation task ended ``failed`` (or ``cancelled``).

    Attributes:
        task_id: The remote task id.
        code: The task's error code (for example ``content_policy_violation``).
        message: The API's own message.
        kind: ``"request"`` (fix the input), ``"service"`` (retry with a new
            submission) or ``"gone"`` (the task no longer exists).
    """

    def __init__(self, task_id: str, code: str, message: str, kind: str) -> None:
        self.task_id = task_id
        self.code = code
        self.message = message
        self.kind = kind
        self.retryable = kind == "service"
        super().__init__(f"task {task_id} failed with {code}: {message}")


class WaitTimeoutError(SeedreamError):
    """A task did not finish within the wait's wall-clock cap.

    The task may still finish: its id is kept so that it can be collected later.
    """

    code = "wait_timeout"

    def __init__(self, task_id: str, waited_seconds: float, last_status: str | None) -> None:
        self.task_id = task_id
        self.waited_seconds = waited_seconds
        self.last_status = last_status
        super().__init__(
            f"task {task_id} still {last_status or 'unknown'} after waiting "
            f"{waited_seconds:.0f} s; collect it later with its task id"
        )


class DownloadError(SeedreamError):
    """A result image could not be downloaded; ``retryable`` says if it may work later."""

    code = "download_failed"

    def __init__(self, url: str, reason: str, *, retryable: bool = False) -> None:
        self.url = url
        self.reason = reason
        self.retryable = retryable
        super().__init__(f"download of {url} failed: {reason}")


class ResultExpiredError(DownloadError):
    """The result URL answered 404/403/410: it expired (24 h after generation) or is gone."""

    code = "result_expired"


class NotAnImageError(DownloadError):
    """The downloaded bytes are not an image of a known type."""

    code = "not_an_image"


class ImageTooLargeError(DownloadError):
    """The downloaded body exceeded the size cap."""

    code = "image_too_large"


def error_body_fields(payload: Any) -> dict[str, str]:
    """Pick the fields of an error body, as text: ``message``, ``type``, ``param``,
    ``fallback_suggestion``, ``request_id``, ``action_url`` and ``api_code`` (the body's
    ``code`` when it is a string; the documented integer ``code`` repeats the HTTP status).

    Examples:
        >>> error_body_fields({"error": {"code": "insufficient_quota", "message": "No credits",
        ...                              "type": "insufficient_quota_error"}})["api_code"]
        'insufficient_quota'
        >>> "api_code" in error_body_fields({"error": {"code": 429, "message": "slow down"}})
        False
    """
    error = payload.get("error") if isinstance(payload, dict) else None
    if not isinstance(error, dict):
        return {}
    fields: dict[str, str] = {}
    for key in ("message", "type", "param", "fallback_suggestion", "request_id", "action_url"):
        value = error.get(key)
        if value is not None:
            fields[key] = str(value)
    code = error.get("code")
    if isinstance(code, str) and code.strip() and not code.strip().isdigit():
        fields["api_code"] = code.strip()
    return fields
