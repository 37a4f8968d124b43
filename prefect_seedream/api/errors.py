"""The error hierarchy of the Seedream API layer.

Every error derives from :class:`SeedreamError` and says whether trying the same
operation again may succeed (``retryable``). Messages carry the API's own words
but never the API key: the client scrubs it before an error is built.
"""

from __future__ import annotations

import re
from typing import Any

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


class SeedreamError(Exception):
    """Base class of every error raised by prefect-seedream.

    Attributes:
        retryable: True when the same operation may succeed if tried again later.
    """

    retryable: bool = False


class SeedreamConfigurationError(SeedreamError, ValueError):
    """The client is missing something it needs, such as an API key."""


class SeedreamAPIError(SeedreamError):
    """An HTTP error answered by the Evolink API, with the fields of its error body.

    Attributes:
        status_code: The HTTP status.
        error_type: The body's ``type`` (for example ``rate_limit_error``).
        message: The API's own message.
        param: The offending request field, when the API names one.
        fallback_suggestion: The API's advice, such as ``"retry after 60 seconds"``.
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
    ) -> None:
        self.status_code = status_code
        self.message = message
        self.error_type = error_type or self.default_type
        self.param = param
        self.fallback_suggestion = fallback_suggestion
        text = f"HTTP {status_code} {self.error_type}: {message}"
        if param:
            text += f" (param: {param})"
        if fallback_suggestion:
            text += f" - {fallback_suggestion}"
        super().__init__(text)

    @property
    def retry_after(self) -> float | None:
        """The delay the API asked for, parsed from its suggestion or message."""
        hint = parse_retry_after(self.fallback_suggestion)
        return hint if hint is not None else parse_retry_after(self.message)


class BadRequestError(SeedreamAPIError):
    """400 ``invalid_request_error``: the request's parameters are wrong."""

    default_type = "invalid_request_error"


class AuthenticationError(SeedreamAPIError):
    """401 ``authentication_error``: the API key is invalid or expired."""

    default_type = "authentication_error"


class InsufficientQuotaError(SeedreamAPIError):
    """402 ``insufficient_quota_error``: the account is out of credits."""

    default_type = "insufficient_quota_error"


class PermissionDeniedError(SeedreamAPIError):
    """403 ``permission_error``: the key may not use this model or resource."""

    default_type = "permission_error"


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
    413: RequestTooLargeError,
    429: RateLimitError,
}


def api_error_for_status(
    status_code: int,
    message: str,
    *,
    error_type: str | None = None,
    param: str | None = None,
    fallback_suggestion: str | None = None,
) -> SeedreamAPIError:
    """Build the error class documented for an HTTP status.

    Examples:
        >>> err = api_error_for_status(429, "Too many requests",
        ...                            fallback_suggestion="retry after 60 seconds")
        >>> type(err).__name__, err.retryable, err.retry_after
        ('RateLimitError', True, 60.0)
    """
    if status_code >= 500:
        cls: type[SeedreamAPIError] = ServerError
    else:
        cls = _STATUS_CLASSES.get(status_code, SeedreamAPIError)
    return cls(
        status_code,
        message,
        error_type=error_type,
        param=param,
        fallback_suggestion=fallback_suggestion,
    )


class SeedreamConnectionError(SeedreamError):
    """The API could not be reached (connection refused, DNS, connect timeout).

    Nothing reached the server, so trying again is safe.
    """

    retryable = True


class ResponseFormatError(SeedreamError):
    """The API answered 2xx with a body that is not the documented JSON."""

    retryable = True


class SubmissionOutcomeUnknownError(SeedreamError):
    """A submission may have reached the server, but no answer came back.

    The request was sent (a read timeout, or the connection dropped mid-response),
    so a task may exist and may be billed. Resubmitting could pay twice, so this
    error is not retryable: look for the task before submitting again.
    """

    retryable = False


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

    def __init__(self, url: str, reason: str, *, retryable: bool = False) -> None:
        self.url = url
        self.reason = reason
        self.retryable = retryable
        super().__init__(f"download of {url} failed: {reason}")


class ResultExpiredError(DownloadError):
    """The result URL answered 404/403/410: it expired (24 h after generation) or is gone."""


class NotAnImageError(DownloadError):
    """The downloaded bytes are not an image of a known type."""


class ImageTooLargeError(DownloadError):
    """The downloaded body exceeded the size cap."""


def error_body_fields(payload: Any) -> dict[str, Any]:
    """Pick ``message``, ``type``, ``param`` and ``fallback_suggestion`` out of an error body."""
    error = payload.get("error") if isinstance(payload, dict) else None
    if not isinstance(error, dict):
        return {}
    fields: dict[str, Any] = {}
    for key in ("message", "type", "param", "fallback_suggestion"):
        value = error.get(key)
        if value is not None:
            fields[key] = str(value)
    return fields
