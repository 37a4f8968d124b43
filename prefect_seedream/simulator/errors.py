"""HTTP error bodies exactly as the Evolink contract documents them.

Every error answer of the simulator has the body
``{"error": {"code": <int HTTP status>, "message": "...", "type": "...", "param": "...",
"fallback_suggestion": "..."}}`` where ``param`` and ``fallback_suggestion`` are optional.
"""

from __future__ import annotations

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
    413: "Image file too large",
    429: "Rate limit exceeded",
    500: "Internal server error, please try again later",
    502: "Upstream AI service unavailable",
    503: "Service temporarily unavailable",
}

#: HTTP statuses that markers such as ``[[sim:submit_status=...]]`` may ask for.
SIMULATED_STATUSES: frozenset[int] = frozenset(ERROR_TYPES)


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
) -> dict[str, Any]:
    """Build the documented error body for an HTTP status.

    Args:
        status: HTTP status code; its ``type`` comes from :data:`ERROR_TYPES`.
        message: Human-readable message; defaults to :data:`DEFAULT_MESSAGES`.
        param: Name of the offending request field, if any.
        fallback_suggestion: Hint such as ``"retry after 30 seconds"``.

    Returns:
        The JSON-ready body.

    Examples:
        >>> error_body(400, "n must be within 1..15", param="n")["error"]["type"]
        'invalid_request_error'
        >>> error_body(503, fallback_suggestion="retry after 30 seconds")["error"]["code"]
        503
    """
    error: dict[str, Any] = {
        "code": status,
        "message": message if message is not None else DEFAULT_MESSAGES.get(status, "Error"),
        "type": ERROR_TYPES.get(
            status, "invalid_request_error" if status < 500 else "internal_server_error"
        ),
    }
    if param is not None:
        error["param"] = param
    if fallback_suggestion is not None:
        error["fallback_suggestion"] = fallback_suggestion
    return {"error": error}


class SimulatorHTTPError(Exception):
    """An error answer, raised inside a route and rendered by the app's exception handler.

    Attributes:
        status: HTTP status code.
        message: ``error.message``.
        param: ``error.param`` or ``None``.
        fallback_suggestion: ``error.fallback_suggestion`` or ``None``.

    Examples:
        >>> err = SimulatorHTTPError(404, "Task not found or expired")
        >>> err.body()["error"]["type"]
        'not_found_error'
    """

    def __init__(
        self,
        status: int,
        message: str | None = None,
        *,
        param: str | None = None,
        fallback_suggestion: str | None = None,
    ) -> None:
        super().__init__(message or DEFAULT_MESSAGES.get(status, "Error"))
        self.status = status
        self.message = message
        self.param = param
        self.fallback_suggestion = fallback_suggestion

    def body(self) -> dict[str, Any]:
        """The JSON body of this error."""
        return error_body(
            self.status,
            self.message,
            param=self.param,
            fallback_suggestion=self.fallback_suggestion,
        )


def simulated_error(
    status: int, retry_after: int, message: str | None = None
) -> SimulatorHTTPError:
    """An error for a fault marker or a random fault, with a retry hint for 429 and 503.

    Examples:
        >>> simulated_error(429, 2).fallback_suggestion
        'retry after 2 seconds'
        >>> simulated_error(500, 2).fallback_suggestion is None
        True
    """
    suggestion = retry_after_suggestion(retry_after) if status in (429, 503) else None
    return SimulatorHTTPError(status, message, fallback_suggestion=suggestion)
