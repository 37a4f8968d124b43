"""The Evolink Seedream API layer: models, errors and clients. It never imports Prefect.

Its names load on first use (module ``__getattr__``): ``import prefect_seedream.api.defaults``
(what the command line reads before it starts its Prefect server) does not load httpx, pydantic
and the models.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from prefect_seedream.api.balance import BalanceUnavailableError, CreditBalance
    from prefect_seedream.api.client import (
        DEFAULT_BASE_URL,
        DownloadResult,
        PollPolicy,
        RetryPolicy,
        SeedreamClient,
    )
    from prefect_seedream.api.errors import (
        AuthenticationError,
        BadRequestError,
        DownloadError,
        IdempotencyConflictError,
        ImageTooLargeError,
        InsufficientQuotaError,
        NotAnImageError,
        NotFoundError,
        PermissionDeniedError,
        RateLimitError,
        RequestTooLargeError,
        ResponseFormatError,
        ResultExpiredError,
        SeedreamAPIError,
        SeedreamConfigurationError,
        SeedreamConnectionError,
        SeedreamError,
        ServerError,
        SubmissionOutcomeUnknownError,
        TaskFailedError,
        WaitTimeoutError,
    )
    from prefect_seedream.api.models import (
        MODEL_LIMITS,
        RATIO_SIZES,
        GenerationRequest,
        GenerationTask,
        ModelLimits,
        ModelName,
        OutputFormat,
        Quality,
        ResultItem,
        SeedreamModel,
        TaskError,
        TaskErrorKind,
        TaskPage,
        TaskStatus,
    )
    from prefect_seedream.api.sync_client import SyncSeedreamClient
    from prefect_seedream.api.task_reader import TaskStatusReader

#: Where each public name is defined.
_MODULES: dict[str, str] = {
    "DEFAULT_BASE_URL": "prefect_seedream.api.client",
    "MODEL_LIMITS": "prefect_seedream.api.models",
    "RATIO_SIZES": "prefect_seedream.api.models",
    "AuthenticationError": "prefect_seedream.api.errors",
    "BadRequestError": "prefect_seedream.api.errors",
    "BalanceUnavailableError": "prefect_seedream.api.balance",
    "CreditBalance": "prefect_seedream.api.balance",
    "DownloadError": "prefect_seedream.api.errors",
    "DownloadResult": "prefect_seedream.api.client",
    "GenerationRequest": "prefect_seedream.api.models",
    "GenerationTask": "prefect_seedream.api.models",
    "IdempotencyConflictError": "prefect_seedream.api.errors",
    "ImageTooLargeError": "prefect_seedream.api.errors",
    "InsufficientQuotaError": "prefect_seedream.api.errors",
    "ModelLimits": "prefect_seedream.api.models",
    "ModelName": "prefect_seedream.api.models",
    "NotAnImageError": "prefect_seedream.api.errors",
    "NotFoundError": "prefect_seedream.api.errors",
    "OutputFormat": "prefect_seedream.api.models",
    "PermissionDeniedError": "prefect_seedream.api.errors",
    "PollPolicy": "prefect_seedream.api.client",
    "Quality": "prefect_seedream.api.models",
    "RateLimitError": "prefect_seedream.api.errors",
    "RequestTooLargeError": "prefect_seedream.api.errors",
    "ResponseFormatError": "prefect_seedream.api.errors",
    "ResultExpiredError": "prefect_seedream.api.errors",
    "ResultItem": "prefect_seedream.api.models",
    "RetryPolicy": "prefect_seedream.api.client",
    "SeedreamAPIError": "prefect_seedream.api.errors",
    "SeedreamClient": "prefect_seedream.api.client",
    "SeedreamConfigurationError": "prefect_seedream.api.errors",
    "SeedreamConnectionError": "prefect_seedream.api.errors",
    "SeedreamError": "prefect_seedream.api.errors",
    "SeedreamModel": "prefect_seedream.api.models",
    "ServerError": "prefect_seedream.api.errors",
    "SubmissionOutcomeUnknownError": "prefect_seedream.api.errors",
    "SyncSeedreamClient": "prefect_seedream.api.sync_client",
    "TaskError": "prefect_seedream.api.models",
    "TaskErrorKind": "prefect_seedream.api.models",
    "TaskFailedError": "prefect_seedream.api.errors",
    "TaskPage": "prefect_seedream.api.models",
    "TaskStatus": "prefect_seedream.api.models",
    "TaskStatusReader": "prefect_seedream.api.task_reader",
    "WaitTimeoutError": "prefect_seedream.api.errors",
}

__all__ = [
    "DEFAULT_BASE_URL",
    "MODEL_LIMITS",
    "RATIO_SIZES",
    "AuthenticationError",
    "BadRequestError",
    "BalanceUnavailableError",
    "CreditBalance",
    "DownloadError",
    "DownloadResult",
    "GenerationRequest",
    "GenerationTask",
    "IdempotencyConflictError",
    "ImageTooLargeError",
    "InsufficientQuotaError",
    "ModelLimits",
    "ModelName",
    "NotAnImageError",
    "NotFoundError",
    "OutputFormat",
    "PermissionDeniedError",
    "PollPolicy",
    "Quality",
    "RateLimitError",
    "RequestTooLargeError",
    "ResponseFormatError",
    "ResultExpiredError",
    "ResultItem",
    "RetryPolicy",
    "SeedreamAPIError",
    "SeedreamClient",
    "SeedreamConfigurationError",
    "SeedreamConnectionError",
    "SeedreamError",
    "SeedreamModel",
    "ServerError",
    "SubmissionOutcomeUnknownError",
    "SyncSeedreamClient",
    "TaskError",
    "TaskErrorKind",
    "TaskFailedError",
    "TaskPage",
    "TaskStatus",
    "TaskStatusReader",
    "WaitTimeoutError",
]


def __getattr__(name: str) -> Any:
    module = _MODULES.get(name)
    if module is None:
        raise AttributeError(f"module 'prefect_seedream.api' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
