"""Request and response models of the Evolink Seedream API, with per-model rules.

Every documented rule is enforced by :class:`GenerationRequest` before any HTTP
call, from one table of data (:data:`MODEL_LIMITS`): a new Seedream version is
one entry there.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from enum import Enum
from typing import Any, Literal, get_args
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from prefect_seedream.api.addresses import internal_host_reason
from prefect_seedream.api.errors import TaskFailedError

MAX_PROMPT_CHARS = 2000
MAX_IMAGES_PER_REQUEST = 15
MIN_ASPECT_RATIO = 1 / 16
MAX_ASPECT_RATIO = 16.0
MAX_CALLBACK_URL_CHARS = 2048
_PIXEL_SIZE = re.compile(r"([0-9]{1,5})x([0-9]{1,5})")


@dataclass(frozen=True)
class ModelLimits:
    """The documented limits of one Seedream model.

    Attributes:
        name: The API's model name.
        size_presets: Accepted shorthand sizes.
        min_pixels: Smallest total pixel count of a ``WxH`` size.
        max_pixels: Largest total pixel count of a ``WxH`` size.
        prompt_priorities: Accepted ``prompt_priority`` values.
        max_reference_images: Most ``image_urls`` in one request.
        credits_per_image: Credits charged per generated image (pricing table).
        default_size: The size the API uses when none is given, if documented.
    """

    name: str
    size_presets: tuple[str, ...]
    min_pixels: int
    max_pixels: int
    prompt_priorities: tuple[str, ...]
    max_reference_images: int
    credits_per_image: float
    default_size: str | None = None


#: One entry per model. 4.0's page says "5 input images" in its note but
#: ``maxItems: 14`` in its schema: we keep the stricter 5 so that no request is
#: refused after a round trip. 4.0's price is not on the seed page; 1.5 mirrors
#: the 4.5 page's reserved credits for one image (an estimate, used for budgets).
MODEL_LIMITS: dict[str, ModelLimits] = {
    "doubao-seedream-4.0": ModelLimits(
        name="doubao-seedream-4.0",
        size_presets=("1K", "2K", "4K"),
        min_pixels=1280 * 720,
        max_pixels=4096 * 4096,
        prompt_priorities=("standard", "fast"),
        max_reference_images=5,
        credits_per_image=1.5,
    ),
    "doubao-seedream-4.5": ModelLimits(
        name="doubao-seedream-4.5",
        size_presets=("2K", "4K"),
        min_pixels=2560 * 1440,
        max_pixels=4096 * 4096,
        prompt_priorities=("standard",),
        max_reference_images=14,
        credits_per_image=2.0,
        default_size="2048x2048",
    ),
}

#: The model names as a type, for typed parameters (kept equal to MODEL_LIMITS).
SeedreamModel = Literal["doubao-seedream-4.0", "doubao-seedream-4.5"]
assert set(get_args(SeedreamModel)) == set(MODEL_LIMITS), "SeedreamModel must list MODEL_LIMITS"
DEFAULT_MODEL: SeedreamModel = "doubao-seedream-4.5"


def get_model_limits(model: str) -> ModelLimits:
    """Return the limits of a model, or raise ValueError naming the known models.

    Examples:
        >>> get_model_limits("doubao-seedream-4.5").size_presets
        ('2K', '4K')
    """
    try:
        return MODEL_LIMITS[model]
    except KeyError:
        known = ", ".join(MODEL_LIMITS)
        raise ValueError(f"model {model!r} is not supported: use one of {known}") from None


def _check_size(size: str, limits: ModelLimits) -> None:
    if size in limits.size_presets:
        return
    pixel_rule = (
        f"WxH with total pixels in [{limits.min_pixels}, {limits.max_pixels}] "
        f"and aspect ratio in [1/16, 16]"
    )
    match = _PIXEL_SIZE.fullmatch(size)
    if match is None:
        presets = ", ".join(limits.size_presets)
        raise ValueError(
            f"size {size!r} is not valid for {limits.name}: use one of {presets} or {pixel_rule}"
        )
    width, height = int(match.group(1)), int(match.group(2))
    if width == 0 or height == 0:
        raise ValueError(f"size {size!r} has a zero side: use {pixel_rule}")
    pixels = width * height
    if not limits.min_pixels <= pixels <= limits.max_pixels:
        raise ValueError(
            f"size {size!r} has {pixels} pixels, outside [{limits.min_pixels}, "
            f"{limits.max_pixels}] for {limits.name}"
        )
    ratio = width / height
    if not MIN_ASPECT_RATIO <= ratio <= MAX_ASPECT_RATIO:
        raise ValueError(f"size {size!r} has aspect ratio {ratio:.4g}, outside [1/16, 16]")


#: URL schemes of files the plugin can read and upload for the API (fsspec protocols).
LOCAL_REFERENCE_SCHEMES = frozenset({"file", "s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "memory"})


def is_local_reference(url: str) -> bool:
    """True for a reference image the API cannot fetch itself: a local path (``/...``, ``./...``,
    ``../...``, ``~/...``) or a storage URL (``file://``, ``s3://``, ``gs://``, ...).

    Such a reference must be uploaded to a place the API can reach before it is sent (the
    Prefect layer does it, see ``prefect_seedream.references``).

    Examples:
        >>> [is_local_reference(u) for u in ("./fox.png", "s3://b/fox.png", "https://cdn/fox.png")]
        [True, True, False]
        >>> is_local_reference("cdn.example.com/fox.png")  # a URL without its scheme: no
        False
    """
    if url.startswith(("/", "./", "../", "~/")):
        return True
    scheme, sep, _ = url.partition("://")
    return bool(sep) and scheme.lower() in LOCAL_REFERENCE_SCHEMES


def _check_public_url(field: str, url: str, schemes: tuple[str, ...]) -> None:
    try:
        scheme = urlsplit(url).scheme.lower()
    except ValueError:
        raise ValueError(f"{field} {url[:80]!r} is not a valid URL") from None
    if scheme not in schemes:
        allowed = " or ".join(schemes)
        hint = (
            " (or name a local file: /path, ./path, file://... or a storage URL such as s3://...)"
            if field == "image_urls item" else ""
        )
        raise ValueError(f"{field} {url[:80]!r} must use {allowed}{hint}")
    reason = internal_host_reason(url)
    if reason is not None:
        raise ValueError(f"{field} {url[:80]!r} is not allowed: {reason}")


class GenerationRequest(BaseModel):
    """A validated body for ``POST /v1/images/generations``.

    Every rule of the chosen model is checked on construction, so an invalid
    request fails before any credit is spent; the error names the field, the
    value and the allowed range.

    Examples:
        >>> request = GenerationRequest(prompt="A lighthouse at dawn", size="2K")
        >>> request.model, request.n
        ('doubao-seedream-4.5', 1)
        >>> GenerationRequest(model="doubao-seedream-4.5", prompt="x", size="1K")
        Traceback (most recent call last):
        ...
        pydantic_core._pydantic_core.ValidationError: 1 validation error for GenerationRequest
        ...
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = Field(DEFAULT_MODEL, description="Model name, e.g. doubao-seedream-4.5.")
    prompt: str = Field(description="What to generate; at most 2000 characters.")
    n: int = Field(1, description="Most images to generate, 1..15.")
    size: str | None = Field(None, description="A preset (1K/2K/4K) or WxH.")
    prompt_priority: str | None = Field(None, description="standard, or fast on 4.0.")
    image_urls: tuple[str, ...] = Field((), description="Reference image URLs.")
    callback_url: str | None = Field(None, description="HTTPS URL called when the task ends.")

    @field_validator("model")
    @classmethod
    def _known_model(cls, value: str) -> str:
        get_model_limits(value)
        return value

    @field_validator("prompt")
    @classmethod
    def _prompt_length(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("prompt is empty")
        if len(value) > MAX_PROMPT_CHARS:
            raise ValueError(
                f"prompt has {len(value)} characters, more than the {MAX_PROMPT_CHARS} allowed"
            )
        return value

    @field_validator("n")
    @classmethod
    def _n_range(cls, value: int) -> int:
        if not 1 <= value <= MAX_IMAGES_PER_REQUEST:
            raise ValueError(f"n={value} is outside [1, {MAX_IMAGES_PER_REQUEST}]")
        return value

    @field_validator("callback_url")
    @classmethod
    def _callback_rules(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if len(value) > MAX_CALLBACK_URL_CHARS:
            raise ValueError(
                f"callback_url has {len(value)} characters, more than {MAX_CALLBACK_URL_CHARS}"
            )
        _check_public_url("callback_url", value, ("https",))
        return value

    @field_validator("image_urls")
    @classmethod
    def _image_url_rules(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for url in value:
            if is_local_reference(url):
                if any(unicodedata.category(ch) == "Cc" for ch in url):
                    raise ValueError(f"image_urls item {url[:80]!r} contains control characters")
                continue
            _check_public_url("image_urls item", url, ("https", "http"))
        return value

    @model_validator(mode="after")
    def _per_model_rules(self) -> GenerationRequest:
        limits = get_model_limits(self.model)
        if self.size is not None:
            _check_size(self.size, limits)
        if self.prompt_priority is not None and self.prompt_priority not in limits.prompt_priorities:
            allowed = ", ".join(limits.prompt_priorities)
            raise ValueError(
                f"prompt_priority {self.prompt_priority!r} is not available for {self.model}: "
                f"use {allowed}"
            )
        count = len(self.image_urls)
        if count > limits.max_reference_images:
            raise ValueError(
                f"image_urls has {count} images, more than the {limits.max_reference_images} "
                f"{self.model} accepts"
            )
        if count + self.n > MAX_IMAGES_PER_REQUEST:
            raise ValueError(
                f"image_urls ({count}) + n ({self.n}) = {count + self.n}, more than "
                f"{MAX_IMAGES_PER_REQUEST}"
            )
        return self

    @property
    def limits(self) -> ModelLimits:
        """The limits of this request's model."""
        return MODEL_LIMITS[self.model]

    @property
    def local_references(self) -> tuple[str, ...]:
        """The reference images that are local files or storage URLs (to upload first)."""
        return tuple(url for url in self.image_urls if is_local_reference(url))

    @property
    def reserved_credits(self) -> float:
        """Credits the API pre-charges for this request (``n`` images)."""
        return self.limits.credits_per_image * self.n

    def to_api_body(self) -> dict[str, Any]:
        """The JSON body to send, without fields left to the API's defaults."""
        body = self.model_dump(exclude_none=True)
        if not body.get("image_urls"):
            body.pop("image_urls", None)
        else:
            body["image_urls"] = list(body["image_urls"])
        return body


class TaskStatus(str, Enum):
    """The status of a generation task; ``cancelled`` is seen by some clients.

    A status the API does not document (``queued``, ...) is not an error: it becomes a member
    of its own that is neither known nor terminal, so a wait goes on until a known terminal
    status (or its cap).

    Examples:
        >>> TaskStatus("completed").is_terminal
        True
        >>> queued = TaskStatus("queued")
        >>> queued.value, queued.is_known, queued.is_terminal, queued is TaskStatus("queued")
        ('queued', False, False, True)
    """

    PENDING = "pending"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @classmethod
    def _missing_(cls, value: object) -> TaskStatus | None:
        if not isinstance(value, str) or not value.strip() or len(value) > 64:
            return None
        text = value.strip().lower()
        if text in cls._value2member_map_:
            return cls._value2member_map_[text]  # type: ignore[return-value]
        member = str.__new__(cls, text)
        member._name_ = text.upper()
        member._value_ = text
        cls._value2member_map_[text] = member  # one member per unknown status
        return member

    @property
    def is_known(self) -> bool:
        """True for the statuses the API documents."""
        return self.name in type(self).__members__

    @property
    def is_terminal(self) -> bool:
        """True when the task will not change any more."""
        return self in (TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED)


class TaskErrorKind(str, Enum):
    """Whose fault a task failure is, and so what a client should do."""

    REQUEST = "request"  # fix the input; never retry
    SERVICE = "service"  # retry later with a new submission
    GONE = "gone"  # the task id is invalid or expired; do not poll again


#: Task error codes by kind (evolink-api.md, section 2). A code not listed here
#: is treated as the request's fault: retrying an unknown failure could pay twice.
TASK_ERROR_KINDS: dict[str, TaskErrorKind] = {
    **dict.fromkeys(
        (
            "content_policy_violation",
            "invalid_parameters",
            "image_processing_error",
            "image_dimension_mismatch",
            "request_cancelled",
        ),
        TaskErrorKind.REQUEST,
    ),
    **dict.fromkeys(
        (
            "generation_failed_no_content",
            "service_error",
            "generation_timeout",
            "resource_exhausted",
            "quota_exceeded",
            "service_unavailable",
            "unknown_error",
        ),
        TaskErrorKind.SERVICE,
    ),
    "resource_not_found": TaskErrorKind.GONE,
}


def classify_task_error(code: str) -> TaskErrorKind:
    """Classify a task error code.

    Examples:
        >>> classify_task_error("service_error").value
        'service'
        >>> classify_task_error("content_policy_violation").value
        'request'
    """
    return TASK_ERROR_KINDS.get(code, TaskErrorKind.REQUEST)


class TaskError(BaseModel):
    """The ``error`` object of a failed task."""

    model_config = ConfigDict(extra="allow")

    code: str = "unknown_error"
    message: str = ""

    @field_validator("code", mode="before")
    @classmethod
    def _code_as_text(cls, value: Any) -> str:
        return "unknown_error" if value is None else str(value)

    @field_validator("message", mode="before")
    @classmethod
    def _message_as_text(cls, value: Any) -> str:
        return "" if value is None else str(value)

    @property
    def kind(self) -> TaskErrorKind:
        """Whose fault the failure is."""
        return classify_task_error(self.code)

    @property
    def retryable(self) -> bool:
        """True when a new submission may succeed."""
        return self.kind is TaskErrorKind.SERVICE


class TaskInfo(BaseModel):
    """``task_info``: whether the task can be cancelled and its estimated time."""

    model_config = ConfigDict(extra="allow")

    can_cancel: bool | None = None
    estimated_time: float | None = None


class UsageCost(BaseModel):
    """``usage.cost``: what a task cost (some answers report it here)."""

    model_config = ConfigDict(extra="allow")

    credits: float | None = None


class Usage(BaseModel):
    """``usage``: billing rule and credits."""

    model_config = ConfigDict(extra="allow")

    billing_rule: str | None = None
    credits_reserved: float | None = None
    credits_used: float | None = None
    cost: UsageCost | None = None
    user_group: str | None = None

    @field_validator("cost", mode="before")
    @classmethod
    def _cost_object(cls, value: Any) -> Any:
        return value if isinstance(value, dict) else None

    @property
    def charged(self) -> float | None:
        """The final charge the API reports (``credits_used`` or ``cost.credits``), if any."""
        if self.credits_used is not None:
            return self.credits_used
        return self.cost.credits if self.cost is not None else None


class GenerationTask(BaseModel):
    """A generation task as returned by submit and by ``GET /v1/tasks/{id}``.

    Unknown fields are kept, so new API fields never break parsing.

    Examples:
        >>> task = GenerationTask.model_validate(
        ...     {"id": "task-unified-1-abc", "status": "completed", "progress": 100,
        ...      "results": ["https://cdn.example/a.png"], "new_field": 1})
        >>> task.status.is_terminal, task.results
        (True, ['https://cdn.example/a.png'])
    """

    model_config = ConfigDict(extra="allow")

    id: str
    status: TaskStatus
    created: int | None = None
    model: str | None = None
    object: str | None = None
    progress: int = 0
    results: list[str] = Field(default_factory=list)
    error: TaskError | None = None
    task_info: TaskInfo = Field(default_factory=TaskInfo)
    usage: Usage | None = None
    type: str | None = None
    #: Set by the client: the API answered a submission with the task an earlier request
    #: with the same ``Idempotency-Key`` created (header ``idempotency-replayed: true``).
    replayed: bool = Field(default=False, exclude=True)

    @field_validator("task_info", mode="before")
    @classmethod
    def _task_info_object(cls, value: Any) -> Any:
        return {} if value is None else value

    @field_validator("results", mode="before")
    @classmethod
    def _results_list(cls, value: Any) -> Any:
        return [] if value is None else value

    @field_validator("progress", mode="before")
    @classmethod
    def _progress_int(cls, value: Any) -> Any:
        return 0 if value is None else int(float(value))

    @property
    def credits(self) -> float | None:
        """Credits charged, or reserved while the final charge is unknown."""
        if self.usage is None:
            return None
        charged = self.usage.charged
        return charged if charged is not None else self.usage.credits_reserved

    def raise_for_failure(self) -> GenerationTask:
        """Raise :class:`TaskFailedError` when the task failed or was cancelled.

        Returns:
            The task itself, so calls can be chained.
        """
        if self.status in (TaskStatus.FAILED, TaskStatus.CANCELLED):
            error = self.error or TaskError(code="request_cancelled", message="task cancelled")
            raise TaskFailedError(self.id, error.code, error.message, error.kind.value)
        return self


class TaskPage(BaseModel):
    """One page of ``GET /v1/tasks``: the account's tasks.

    Examples:
        >>> page = TaskPage.model_validate({"data": [{"id": "task-unified-1-a", "status": "queued",
        ...                                           "prompt": "a fox"}], "total": 1})
        >>> page.data[0].status.is_known, page.total, page.page
        (False, 1, 1)
    """

    model_config = ConfigDict(extra="allow")

    data: list[GenerationTask] = Field(default_factory=list)
    total: int = 0
    page: int = 1
    page_size: int = 20

    @field_validator("data", mode="before")
    @classmethod
    def _data_list(cls, value: Any) -> Any:
        return [] if value is None else value
