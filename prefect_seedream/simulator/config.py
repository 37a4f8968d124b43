"""Configuration of the local Evolink Seedream simulator.

The simulator is configured by one :class:`SimulatorConfig` object. Every field has a default
that suits interactive use (tasks finish after about two seconds, served images are small
thumbnails); tests usually lower ``latency_seconds`` and ``jitter_seconds``. Accounts are
unlimited unless ``account_credits``, ``key_quota_credits`` or ``daily_quota_credits`` is set.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

#: Price lists of :attr:`SimulatorConfig.price_list` (see ``billing.credits_per_image``).
PriceList = Literal["seed_pages", "published"]

#: Names accepted as keys of :attr:`SimulatorConfig.fault_rates`.
FAULT_RATE_KEYS: frozenset[str] = frozenset(
    {
        "submit_500",
        "submit_429",
        "submit_503",
        "poll_500",
        "poll_503",
        "poll_429",
        "drop_after_create",
        "submit_hang",
        "submit_late",
        "create_then_500",
        "task_service_error",
        "task_content_policy",
        "download_500",
        "download_truncated",
    }
)

#: How an optional endpoint answers (``POST /v1/tasks/batch``, ``GET /v1/credits``): normally,
#: 404 as if the API had no such route, 405 (method not allowed), or 500 every time.
EndpointMode = Literal["available", "missing", "not_allowed", "failing"]


class SimulatorConfig(BaseModel):
    """Behaviour of a simulator instance.

    Attributes:
        api_keys: Accepted Bearer tokens. ``None`` accepts any non-empty token; otherwise a
            missing or unknown token is answered with 401 ``authentication_error``.
        latency_seconds: Time from a task's creation until it is terminal.
        jitter_seconds: Each task's latency is ``latency_seconds`` plus a uniform value in
            ``[-jitter_seconds, +jitter_seconds]`` (never below zero), drawn from a
            ``random.Random`` seeded with ``seed``.
        seed: Seed of the simulator's random number generators (jitter and fault rates), so
            that a run with the same requests in the same order behaves the same.
        estimated_time: ``task_info.estimated_time`` of submit responses; ``None`` means
            ``ceil(latency_seconds)``.
        image_max_side: Served images are downscaled so that their largest side is at most
            this many pixels, keeping the aspect ratio; ``None`` serves the requested size.
        image_format: Encoding of the served images of the 4.x models (which take no
            ``output_format``); the 5.0 models answer JPEG unless the body asks for PNG, and
            layers and transparent results are always PNG with alpha.
        result_ttl_seconds: Result URLs (and the task itself) answer 404 this many seconds
            after the task completed. Evolink keeps results for 24 hours.
        max_concurrent_tasks_per_key: When an API key already has this many non-terminal tasks,
            a submit is answered with 429 ``rate_limit_error``. ``None`` means unlimited.
        rate_limit_retry_after: Seconds advertised in the ``fallback_suggestion`` ("retry after
            N seconds") of concurrency-limit 429 answers.
        fault_rates: Probabilities (0..1) of random faults for soak runs, keyed by one of
            :data:`FAULT_RATE_KEYS`.
        late_submit_seconds: How long the random ``submit_late`` fault delays the answer of a
            submit whose task was created (finite, >= 0).
        download_max_bytes_oversize: Size in bytes of the body served for the
            ``[[sim:download=oversize]]`` marker.
        idempotency_ttl_seconds: How long an ``Idempotency-Key`` is remembered, counted from
            the creation of its task (it is also forgotten when the task itself expires).
        account_credits: The account's balance, shared by every API key; ``None`` is
            unlimited. A submit reserves ``credits_per_image * n``; once the task is terminal
            the reservation becomes the final charge (``credits_per_image`` per generated image
            when completed, 0 when failed or cancelled: refunded). A submit whose reservation
            exceeds the balance left is answered 402 ``insufficient_quota``. ``POST
            /_sim/account`` adds to or sets the balance at run time.
        key_quota_credits: Lifetime cap of the credits charged to each API key (same
            accounting per key); ``None`` is unlimited. Exceeding it: 402
            ``key_quota_exhausted``.
        daily_quota_credits: Cap per API key per window of ``quota_window_seconds``; ``None``
            is unlimited. A key's window starts at its first accepted submission and restarts
            every ``quota_window_seconds`` (on :meth:`SimulatorState.now`, so tests may use
            ``advance_time``); only tasks created in the current window count. Exceeding it:
            402 ``key_daily_quota_exhausted`` with a ``Retry-After`` header.
        quota_window_seconds: Length of the ``daily_quota_credits`` window (> 0).
        denied_models: Models this account may not use: a submit for one is answered 403
            ``permission_error`` ("Access denied for this model", ``param: "model"``).
        task_list_echoes_prompt: Whether the entries of ``GET /v1/tasks`` carry ``"prompt"``.
            The real list's fields are not documented, so clients must also work without it
            (set ``False`` to check that they do).
        fetch_reference_images: Whether the ``image_urls`` of a created task are downloaded
            (10 s timeout, redirects followed, at most 10 MB each, JPEG/PNG/WEBP/GIF/BMP/TIFF).
            A task then completes only once every fetch succeeded, and its result images show
            the first reference in their left half; a failed fetch makes the task fail with
            ``image_processing_error`` (refunded). Off by default, so that offline runs may
            use placeholder reference URLs (``https://example.com/a.png``) as before.
        allow_private_image_urls: Whether ``image_urls`` may name an internal host (loopback,
            private, link-local, ``localhost``...: literal addresses and such names only, no
            DNS lookup). The simulator runs offline, so by default it accepts any host; when
            ``False`` such a URL is refused at submit with 400 ``param: "image_urls"``, as a
            public API would.
        price_list: Credits per image: ``"seed_pages"`` (default; the seed pages' 2 credits
            for 4.5, which the existing tests and the client's table use) or ``"published"``
            (Evolink's prices today: 4.5 at 2.5). Other models cost the same in both, see
            ``billing.CREDITS_PER_IMAGE``.
        extra_models: Model names to serve beyond the known ones, each with the rules (and
            price) of a known model, e.g. ``{"doubao-seedream-5.1-preview":
            "doubao-seedream-5.0-pro"}``: answers name the extra model. For testing a
            client's handling of a model its own table does not know.
        batch_endpoint: How ``POST /v1/tasks/batch`` answers (see :data:`EndpointMode`), so
            that clients' fallbacks to one ``GET`` per task can be tested.
        credits_endpoint: How ``GET /v1/credits`` answers (see :data:`EndpointMode`).

    Examples:
        >>> config = SimulatorConfig(latency_seconds=0.2, jitter_seconds=0.0)
        >>> config.effective_estimated_time
        1
        >>> SimulatorConfig(fault_rates={"poll_503": 0.1}).fault_rates["poll_503"]
        0.1
        >>> sorted(SimulatorConfig(denied_models={"doubao-seedream-4.0"}).denied_models)
        ['doubao-seedream-4.0']
        >>> SimulatorConfig(extra_models={"x-preview": "doubao-seedream-5.0-pro"}).extra_models
        {'x-preview': 'doubao-seedream-5.0-pro'}
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    api_keys: set[str] | None = None
    latency_seconds: float = Field(default=2.0, ge=0.0)
    jitter_seconds: float = Field(default=0.5, ge=0.0)
    seed: int = 0
    estimated_time: int | None = Field(default=None, ge=0)
    image_max_side: int | None = Field(default=256, ge=1)
    image_format: Literal["png", "jpeg"] = "png"
    result_ttl_seconds: float = Field(default=86400.0, ge=0.0)
    max_concurrent_tasks_per_key: int | None = Field(default=None, ge=1)
    rate_limit_retry_after: int = Field(default=1, ge=0)
    fault_rates: dict[str, float] = Field(default_factory=dict)
    late_submit_seconds: float = Field(default=5.0, ge=0.0, allow_inf_nan=False)
    download_max_bytes_oversize: int = Field(default=64 * 1024 * 1024, ge=8)
    idempotency_ttl_seconds: float = Field(default=86400.0, ge=0.0, allow_inf_nan=False)
    account_credits: float | None = Field(default=None, ge=0.0, allow_inf_nan=False)
    key_quota_credits: float | None = Field(default=None, ge=0.0, allow_inf_nan=False)
    daily_quota_credits: float | None = Field(default=None, ge=0.0, allow_inf_nan=False)
    quota_window_seconds: float = Field(default=86400.0, gt=0.0, allow_inf_nan=False)
    denied_models: frozenset[str] = frozenset()
    task_list_echoes_prompt: bool = True
    fetch_reference_images: bool = False
    allow_private_image_urls: bool = True
    price_list: PriceList = "seed_pages"
    extra_models: dict[str, str] = Field(default_factory=dict)
    batch_endpoint: EndpointMode = "available"
    credits_endpoint: EndpointMode = "available"

    @field_validator("api_keys")
    @classmethod
    def _keys_not_empty(cls, value: set[str] | None) -> set[str] | None:
        if value is not None and any(not key.strip() for key in value):
            raise ValueError("api_keys must not contain empty keys")
        return value

    @field_validator("fault_rates")
    @classmethod
    def _known_fault_rates(cls, value: dict[str, float]) -> dict[str, float]:
        for key, rate in value.items():
            if key not in FAULT_RATE_KEYS:
                known = ", ".join(sorted(FAULT_RATE_KEYS))
                raise ValueError(f"unknown fault rate {key!r}; known keys: {known}")
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"fault rate {key!r} must be within [0, 1], got {rate}")
        return value

    @field_validator("extra_models")
    @classmethod
    def _extra_models_alias_known_ones(cls, value: dict[str, str]) -> dict[str, str]:
        from .model_table import MODEL_RULES  # imported here: model_table imports billing

        for name, base in value.items():
            if not name.strip() or name in MODEL_RULES:
                raise ValueError(f"extra model {name!r} must be a new, non-empty model name")
            if base not in MODEL_RULES:
                known = ", ".join(MODEL_RULES)
                raise ValueError(f"extra model {name!r}: {base!r} is not one of {known}")
        return value

    @property
    def effective_estimated_time(self) -> int:
        """The ``task_info.estimated_time`` announced in submit responses, in seconds.

        Examples:
            >>> SimulatorConfig(latency_seconds=2.5).effective_estimated_time
            3
            >>> SimulatorConfig(estimated_time=45).effective_estimated_time
            45
        """
        if self.estimated_time is not None:
            return self.estimated_time
        return math.ceil(self.latency_seconds)
