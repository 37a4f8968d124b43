"""Rules of the API models at their boundaries (evolink-api.md, sections 1-3).

Everything here is pure: no HTTP, no simulator.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from pydantic import ValidationError

from prefect_seedream.api import (
    MODEL_LIMITS,
    AuthenticationError,
    BadRequestError,
    GenerationRequest,
    GenerationTask,
    InsufficientQuotaError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    RequestTooLargeError,
    SeedreamAPIError,
    ServerError,
    TaskError,
    TaskErrorKind,
    TaskFailedError,
    TaskStatus,
)
from prefect_seedream.api.errors import api_error_for_status, error_body_fields, parse_retry_after

V40 = "doubao-seedream-4.0"
V45 = "doubao-seedream-4.5"
BOTH = (V40, V45)


def refusal(**fields: object) -> str:
    """Build a request that must be refused; return the text of the validation error."""
    fields.setdefault("prompt", "A lighthouse at dawn")
    with pytest.raises(ValidationError) as info:
        GenerationRequest(**fields)
    return str(info.value)


def ok(**fields: object) -> GenerationRequest:
    fields.setdefault("prompt", "A lighthouse at dawn")
    return GenerationRequest(**fields)


def image_list(count: int) -> list[str]:
    return [f"https://cdn.example.com/ref-{i}.png" for i in range(count)]


# -- model ----------------------------------------------------------------------


def test_default_model_is_45() -> None:
    assert ok().model == V45


def test_limits_table_matches_the_contract() -> None:
    assert set(BOTH) <= set(MODEL_LIMITS)
    assert MODEL_LIMITS[V40].size_presets == ("1K", "2K", "4K")
    assert MODEL_LIMITS[V45].size_presets == ("2K", "4K")
    assert (MODEL_LIMITS[V40].min_pixels, MODEL_LIMITS[V40].max_pixels) == (921600, 16777216)
    assert (MODEL_LIMITS[V45].min_pixels, MODEL_LIMITS[V45].max_pixels) == (3686400, 16777216)


@pytest.mark.parametrize(
    "model", ["doubao-seedream-3.0", "", "DOUBAO-SEEDREAM-4.5", "doubao-seedream-4.5 "]
)
def test_misspelt_or_retired_model_is_refused_naming_the_known_ones(model: str) -> None:
    text = refusal(model=model)
    assert "model" in text
    assert repr(model) in text
    assert V40 in text and V45 in text


def test_extra_field_is_refused() -> None:
    text = refusal(seed=42)
    assert "seed" in text
    assert "extra" in text.lower()


def test_request_is_frozen() -> None:
    request = ok()
    with pytest.raises(ValidationError):
        request.n = 3  # type: ignore[misc]


# -- size -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "size", "accepted"),
    [
        (V40, "1K", True),
        (V40, "2K", True),
        (V40, "4K", True),
        (V45, "1K", False),
        (V45, "2K", True),
        (V45, "4K", True),
        (V40, "8K", False),
        (V45, "8K", False),
        (V40, "2k", False),
        (V45, "4k", False),
    ],
)
def test_size_presets_per_model(model: str, size: str, accepted: bool) -> None:
    if accepted:
        assert ok(model=model, size=size).size == size
    else:
        text = refusal(model=model, size=size)
        assert "size" in text and repr(size) in text
        # The error lists what the model does accept.
        for preset in MODEL_LIMITS[model].size_presets:
            assert preset in text


def test_1k_refused_by_45_names_the_allowed_presets() -> None:
    text = refusal(model=V45, size="1K")
    assert "size '1K'" in text
    assert V45 in text
    assert "2K, 4K" in text


# (model, size, accepted): total pixels exactly at and one pixel past each bound.
PIXEL_BOUNDARIES = [
    # 4.0 minimum 1280x720 = 921600 pixels.
    (V40, "1280x720", True),
    (V40, "720x1280", True),
    (V40, "1280x719", False),  # one pixel short in height
    (V40, "1279x720", False),  # one pixel short in width
    (V40, "959x961", False),  # 921599 pixels: exactly one pixel below the minimum
    (V40, "3840x240", True),  # 921600 pixels in another shape, ratio 16
    # 4.5 minimum 2560x1440 = 3686400 pixels.
    (V45, "2560x1440", True),
    (V45, "1440x2560", True),
    (V45, "2560x1439", False),
    (V45, "2559x1440", False),
    (V45, "1919x1921", False),  # 3686399 pixels
    (V45, "1280x720", False),  # fine for 4.0, too small for 4.5
    (V45, "2048x2048", True),  # the documented default
    # Maximum 4096x4096 = 16777216 pixels for both.
    (V40, "4096x4096", True),
    (V45, "4096x4096", True),
    (V40, "4097x4096", False),
    (V45, "4096x4097", False),
    (V40, "673x24929", False),  # 16777217 pixels: exactly one past the maximum
    (V45, "673x24929", False),
    (V40, "8192x2048", True),
    (V45, "2048x8192", True),
]


@pytest.mark.parametrize(("model", "size", "accepted"), PIXEL_BOUNDARIES)
def test_pixel_size_boundaries(model: str, size: str, accepted: bool) -> None:
    if accepted:
        assert ok(model=model, size=size).size == size
        return
    text = refusal(model=model, size=size)
    width, height = (int(side) for side in size.split("x"))
    limits = MODEL_LIMITS[model]
    # Field, value and allowed range are all named.
    assert f"size {size!r}" in text
    assert f"{width * height} pixels" in text
    assert f"[{limits.min_pixels}, {limits.max_pixels}]" in text


@pytest.mark.parametrize("model", BOTH)
@pytest.mark.parametrize(
    ("size", "accepted"),
    [
        ("16368x1023", True),  # ratio exactly 16
        ("16369x1023", False),  # just past 16
        ("1023x16368", True),  # ratio exactly 1/16
        ("1023x16369", False),  # just past 1/16
        ("16384x1024", True),  # ratio 16 at the maximum pixel count
        ("1024x16384", True),
        ("7680x480", True),  # ratio 16 at 4.5's minimum pixel count
    ],
)
def test_aspect_ratio_boundaries(model: str, size: str, accepted: bool) -> None:
    if accepted:
        assert ok(model=model, size=size).size == size
    else:
        text = refusal(model=model, size=size)
        assert f"size {size!r}" in text
        assert "aspect ratio" in text
        assert "[1/16, 16]" in text


@pytest.mark.parametrize("model", BOTH)
@pytest.mark.parametrize("size", ["0x2048", "2048x0", "0x0", "00000x4096"])
def test_zero_side_is_refused(model: str, size: str) -> None:
    text = refusal(model=model, size=size)
    assert f"size {size!r}" in text
    assert "zero side" in text


@pytest.mark.parametrize(
    "size",
    [
        "",
        "2048",
        "2048x",
        "x2048",
        "2048*2048",
        "2048 x 2048",
        " 2048x2048",
        "2048x2048 ",
        "-2048x2048",
        "2048x-2048",
        "2048.0x2048",
        "2048x2048px",
        "2048X2048",
        "123456x2",
        "2Kx2K",
        "2K ",
    ],
)
def test_malformed_size_strings_are_refused(size: str) -> None:
    text = refusal(size=size)
    assert f"size {size!r}" in text
    assert "not valid" in text
    assert "2K, 4K" in text


def test_size_with_trailing_newline_is_refused() -> None:
    refusal(size="2048x2048\n")


def test_size_with_non_ascii_digits_is_refused() -> None:
    refusal(size="２０４８x２０４８")


def test_size_left_out_is_not_sent() -> None:
    assert "size" not in ok().to_api_body()


# -- n and reference images ----------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "accepted"), [(0, False), (1, True), (15, True), (16, False), (-1, False)]
)
def test_n_range(n: int, accepted: bool) -> None:
    if accepted:
        assert ok(n=n).n == n
    else:
        text = refusal(n=n)
        assert f"n={n}" in text
        assert "[1, 15]" in text


@pytest.mark.parametrize(
    ("model", "count", "accepted"),
    [(V40, 0, True), (V40, 8, True), (V40, 14, True), (V40, 15, False), (V45, 14, True), (V45, 15, False)],
)
def test_reference_image_count_per_model(model: str, count: int, accepted: bool) -> None:
    if accepted:
        assert len(ok(model=model, image_urls=image_list(count)).image_urls) == count
    else:
        text = refusal(model=model, image_urls=image_list(count))
        assert f"image_urls has {count} images" in text
        assert str(MODEL_LIMITS[model].max_reference_images) in text
        assert model in text


@pytest.mark.parametrize(
    ("model", "refs", "n", "accepted"),
    [
        (V45, 14, 1, True),
        (V45, 14, 2, False),
        (V45, 10, 5, True),
        (V45, 10, 6, False),
        (V40, 5, 10, True),
        (V40, 5, 11, False),
        (V45, 0, 15, True),
        (V45, 1, 15, False),
    ],
)
def test_references_plus_n_at_most_15(model: str, refs: int, n: int, accepted: bool) -> None:
    if accepted:
        assert ok(model=model, n=n, image_urls=image_list(refs)).n == n
    else:
        text = refusal(model=model, n=n, image_urls=image_list(refs))
        assert f"image_urls ({refs}) + n ({n}) = {refs + n}" in text
        assert "15" in text


@pytest.mark.parametrize(
    "url",
    [
        "https://127.0.0.1/ref.png",
        "http://10.0.0.7/ref.png",
        "https://192.168.1.20/ref.png",
        "http://169.254.169.254/latest/meta-data/",
        "https://localhost/ref.png",
        "https://[::1]/ref.png",
        "http://2130706433/ref.png",
    ],
)
def test_reference_images_on_internal_hosts_are_refused(url: str) -> None:
    text = refusal(image_urls=["https://cdn.example.com/ok.png", url])
    assert "image_urls" in text
    assert url[:40] in text
    assert "internal" in text


@pytest.mark.parametrize(
    "url", ["ftp://cdn.example.com/a.png", "gopher://example.com/", "cdn.example.com/a.png"]
)
def test_reference_images_need_http_or_https(url: str) -> None:
    text = refusal(image_urls=[url])
    assert "image_urls" in text and repr(url) in text
    assert "https or http" in text and "local file" in text


@pytest.mark.parametrize("url", ["./fox.png", "/data/fox.png", "file:///data/fox.png", "s3://bucket/fox.png"])
def test_local_reference_images_are_recognised_and_never_sent_as_they_are(url: str) -> None:
    """A local file or storage URL is a valid reference for the Prefect layer to upload
    (issue 15); the API client refuses to send one before anything is spent."""
    import asyncio

    from prefect_seedream import SeedreamClient, SeedreamConfigurationError

    request = ok(image_urls=[url, "https://cdn.example.com/b.png"])
    assert request.local_references == (url,)

    async def submit() -> None:
        async with SeedreamClient(api_key="sk-x", base_url="http://127.0.0.1:9") as client:
            await client.submit(request)

    with pytest.raises(SeedreamConfigurationError, match="local file"):
        asyncio.run(submit())


def test_reference_images_may_use_http_and_https() -> None:
    request = ok(image_urls=["http://cdn.example.com/a.png", "https://8.8.8.8/b.webp"])
    assert request.image_urls == ("http://cdn.example.com/a.png", "https://8.8.8.8/b.webp")


# -- prompt and prompt_priority ------------------------------------------------------------


@pytest.mark.parametrize(
    ("prompt", "accepted"),
    [
        ("", False),
        (" ", False),
        ("\t\n  ", False),
        ("x", True),
        ("x" * 2000, True),
        ("x" * 2001, False),
        ("é" * 2000, True),  # characters, not bytes
    ],
)
def test_prompt_rules(prompt: str, accepted: bool) -> None:
    if accepted:
        assert ok(prompt=prompt).prompt == prompt
        return
    text = refusal(prompt=prompt)
    assert "prompt" in text
    if prompt.strip():
        assert "2001 characters" in text and "2000" in text
    else:
        assert "empty" in text


def test_prompt_is_required() -> None:
    with pytest.raises(ValidationError) as info:
        GenerationRequest()  # type: ignore[call-arg]
    assert "prompt" in str(info.value)


@pytest.mark.parametrize(
    ("model", "priority", "accepted"),
    [
        (V40, "standard", True),
        (V40, "fast", True),
        (V45, "standard", True),
        (V45, "fast", False),
        (V40, "turbo", False),
        (V45, "Standard", False),
    ],
)
def test_prompt_priority_per_model(model: str, priority: str, accepted: bool) -> None:
    if accepted:
        assert ok(model=model, prompt_priority=priority).prompt_priority == priority
        return
    text = refusal(model=model, prompt_priority=priority)
    assert f"prompt_priority {priority!r}" in text
    assert model in text
    assert ", ".join(MODEL_LIMITS[model].prompt_priorities) in text


# -- callback_url ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "https://example.com/cb",
        "https://8.8.8.8/",
        "https://hooks.example.org:8443/seedream?token=abc",
        "https://[2001:4860:4860::8888]/cb",
        "https://172.32.0.1/cb",  # just outside 172.16.0.0/12
        "https://172.15.255.255/cb",
        "https://192.169.0.1/cb",
        "https://11.0.0.1/cb",
    ],
)
def test_public_callback_urls_pass(url: str) -> None:
    assert ok(callback_url=url).callback_url == url


INTERNAL_CALLBACKS = [
    "https://127.0.0.1/cb",
    "https://127.1/cb",
    "https://2130706433/cb",
    "https://0x7f000001/cb",
    "https://0177.0.0.1/cb",
    "https://0/cb",
    "https://0.0.0.0/cb",
    "https://[::1]/cb",
    "https://[::ffff:127.0.0.1]/cb",
    "https://[::ffff:7f00:1]/cb",
    "https://localhost/cb",
    "https://localhost./cb",
    "https://LOCALHOST/cb",
    "https://foo.localhost/cb",
    "https://10.0.0.1/cb",
    "https://10.255.255.255/cb",
    "https://172.16.0.1/cb",
    "https://172.31.255.254/cb",
    "https://192.168.0.1/cb",
    "https://169.254.169.254/latest/meta-data/",
    "https://[fe80::1]/cb",
    "https://[fc00::1]/cb",
    "https://evil.com@127.0.0.1/cb",
    "https://user:pass@10.1.2.3:8443/cb",
    "https://127.0.0.1:443/cb",
]


@pytest.mark.parametrize("url", INTERNAL_CALLBACKS)
def test_internal_callback_urls_are_refused(url: str) -> None:
    text = refusal(callback_url=url)
    assert "callback_url" in text
    assert repr(url) in text
    assert "not allowed" in text and "internal" in text


@pytest.mark.parametrize(
    "host", ["127。0。0。1", "127。1", "１２７.０.０.１", "ｌｏｃａｌｈｏｓｔ"]
)
def test_unicode_spellings_of_loopback_are_refused(host: str) -> None:
    refusal(callback_url=f"https://{host}/cb")


@pytest.mark.parametrize(
    "url",
    [
        "http://example.com/cb",
        "HTTP://example.com/cb",
        "ftp://example.com/cb",
        "example.com/cb",
        "//example.com/cb",
    ],
)
def test_callback_url_must_be_https(url: str) -> None:
    text = refusal(callback_url=url)
    assert "callback_url" in text and repr(url) in text
    assert "must use https" in text


def test_callback_url_scheme_is_case_insensitive() -> None:
    assert ok(callback_url="HTTPS://example.com/cb").callback_url == "HTTPS://example.com/cb"


def test_callback_url_length_boundary() -> None:
    prefix = "https://example.com/"
    at_limit = prefix + "a" * (2048 - len(prefix))
    assert len(at_limit) == 2048
    assert ok(callback_url=at_limit).callback_url == at_limit
    text = refusal(callback_url=at_limit + "a")
    assert "callback_url has 2049 characters" in text
    assert "2048" in text


# -- outputs of the request -------------------------------------------------------------------


def test_to_api_body_minimal() -> None:
    assert ok(prompt="A red fox").to_api_body() == {"model": V45, "prompt": "A red fox", "n": 1}


def test_to_api_body_full() -> None:
    request = ok(
        model=V40,
        prompt="Generate 2 different images of a red fox",
        n=2,
        size="1280x720",
        prompt_priority="fast",
        image_urls=("https://cdn.example.com/a.png",),
        callback_url="https://example.com/cb",
    )
    body = request.to_api_body()
    assert body == {
        "model": V40,
        "prompt": "Generate 2 different images of a red fox",
        "n": 2,
        "size": "1280x720",
        "prompt_priority": "fast",
        "image_urls": ["https://cdn.example.com/a.png"],
        "callback_url": "https://example.com/cb",
    }
    assert type(body["image_urls"]) is list  # JSON wants a list, not a tuple


@pytest.mark.parametrize(
    ("model", "n", "credits"), [(V45, 1, 2.5), (V45, 3, 7.5), (V40, 2, 3.0), (V40, 15, 22.5)]
)
def test_reserved_credits(model: str, n: int, credits: float) -> None:
    assert ok(model=model, n=n).reserved_credits == pytest.approx(credits)


# -- the task object --------------------------------------------------------------------------------

SUBMIT_EXAMPLE = {
    "created": 1757165031,
    "id": "task-unified-1757165031-seedream4d",
    "model": "doubao-seedream-4.5",
    "object": "image.generation.task",
    "progress": 0,
    "status": "pending",
    "task_info": {"can_cancel": True, "estimated_time": 45},
    "type": "image",
    "usage": {"billing_rule": "per_call", "credits_reserved": 1.8, "user_group": "default"},
}

COMPLETED_EXAMPLE = {
    "created": 1756817821,
    "id": "task-unified-1756817821-4x3rx6ny",
    "model": "doubao-seedream-4.5",
    "object": "image.generation.task",
    "progress": 100,
    "status": "completed",
    "results": ["https://.../image.jpg"],
    "task_info": {"can_cancel": False},
    "type": "image",
}


def test_parse_contract_submit_example() -> None:
    task = GenerationTask.model_validate(SUBMIT_EXAMPLE)
    assert task.id == "task-unified-1757165031-seedream4d"
    assert task.status is TaskStatus.PENDING
    assert not task.status.is_terminal
    assert task.progress == 0
    assert task.created == 1757165031
    assert task.task_info.can_cancel is True
    assert task.task_info.estimated_time == 45
    assert task.usage is not None and task.usage.billing_rule == "per_call"
    assert task.usage.credits_reserved == pytest.approx(1.8)
    assert task.credits == pytest.approx(1.8)
    assert task.results == []
    assert task.raise_for_failure() is task


def test_parse_contract_completed_example() -> None:
    task = GenerationTask.model_validate(COMPLETED_EXAMPLE)
    assert task.status is TaskStatus.COMPLETED and task.status.is_terminal
    assert task.progress == 100
    assert task.results == ["https://.../image.jpg"]
    assert task.task_info.can_cancel is False
    assert task.usage is None and task.credits is None
    assert task.raise_for_failure() is task


def test_credits_prefer_credits_used() -> None:
    task = GenerationTask.model_validate(
        {**COMPLETED_EXAMPLE, "usage": {"credits_reserved": 4.0, "credits_used": 2.0}}
    )
    assert task.credits == 2.0


def test_unknown_fields_are_kept_at_every_level() -> None:
    payload = {
        **COMPLETED_EXAMPLE,
        "brand_new": {"a": 1},
        "task_info": {"can_cancel": False, "queue_position": 3},
        "usage": {"billing_rule": "per_call", "credits_used": 2, "discount": 0.1},
    }
    task = GenerationTask.model_validate(payload)
    assert task.model_extra == {"brand_new": {"a": 1}}
    assert task.task_info.model_extra == {"queue_position": 3}
    assert task.usage is not None and task.usage.model_extra == {"discount": 0.1}


def test_tolerant_nulls_and_numbers() -> None:
    task = GenerationTask.model_validate(
        {"id": "t1", "status": "processing", "progress": "42.7", "results": None}
    )
    assert task.progress == 42
    assert task.results == []
    assert (
        GenerationTask.model_validate({"id": "t1", "status": "pending", "progress": None}).progress
        == 0
    )


@pytest.mark.parametrize(
    "payload",
    [
        {
            "id": "t1",
            "status": "failed",
            "error": {"code": "content_policy_violation", "message": None},
        },
        {
            "id": "t1",
            "status": "completed",
            "results": ["https://cdn.example.com/a.png"],
            "task_info": None,
        },
    ],
    ids=["error-message-null", "task-info-null"],
)
def test_null_optional_fields_are_tolerated(payload: dict[str, object]) -> None:
    task = GenerationTask.model_validate(payload)
    assert task.status.is_terminal


@pytest.mark.parametrize(
    "payload", [{"status": "pending"}, {"id": "t1"}, {"id": "t1", "status": ""}, [], None]
)
def test_task_without_id_or_status_is_refused(payload: object) -> None:
    with pytest.raises(ValidationError):
        GenerationTask.model_validate(payload)


@pytest.mark.parametrize(
    ("status", "terminal"),
    [
        ("pending", False),
        ("processing", False),
        ("completed", True),
        ("failed", True),
        ("cancelled", True),
    ],
)
def test_status_enum_and_terminal(status: str, terminal: bool) -> None:
    task = GenerationTask.model_validate({"id": "t1", "status": status})
    assert task.status.value == status
    assert task.status.is_terminal is terminal


REQUEST_CODES = [
    "content_policy_violation",
    "invalid_parameters",
    "image_processing_error",
    "image_dimension_mismatch",
    "request_cancelled",
]
SERVICE_CODES = [
    "generation_failed_no_content",
    "service_error",
    "generation_timeout",
    "resource_exhausted",
    "quota_exceeded",
    "service_unavailable",
    "unknown_error",
]
CODE_KINDS = (
    [(code, TaskErrorKind.REQUEST) for code in REQUEST_CODES]
    + [(code, TaskErrorKind.SERVICE) for code in SERVICE_CODES]
    + [("resource_not_found", TaskErrorKind.GONE)]
    + [
        ("something_new", TaskErrorKind.REQUEST),
        ("", TaskErrorKind.REQUEST),
        (429, TaskErrorKind.REQUEST),
    ]
)


@pytest.mark.parametrize(("code", "kind"), CODE_KINDS)
def test_task_error_kinds(code: object, kind: TaskErrorKind) -> None:
    error = TaskError.model_validate({"code": code, "message": "m"})
    assert error.kind is kind
    assert error.retryable is (kind is TaskErrorKind.SERVICE)


@pytest.mark.parametrize(("code", "kind"), CODE_KINDS)
def test_failed_task_raises_with_kind(code: object, kind: TaskErrorKind) -> None:
    task = GenerationTask.model_validate(
        {
            "id": "task-9",
            "status": "failed",
            "error": {"code": code, "message": "it broke", "extra": 1},
        }
    )
    assert task.error is not None and task.error.model_extra == {"extra": 1}
    with pytest.raises(TaskFailedError) as info:
        task.raise_for_failure()
    error = info.value
    assert error.task_id == "task-9"
    assert error.code == str(code)
    assert error.message == "it broke"
    assert error.kind == kind.value
    assert error.retryable is (kind is TaskErrorKind.SERVICE)
    assert "task-9" in str(error) and str(code) in str(error)


def test_failed_task_without_error_body() -> None:
    task = GenerationTask.model_validate({"id": "t", "status": "failed", "error": {"code": None}})
    assert task.error is not None and task.error.code == "unknown_error"
    with pytest.raises(TaskFailedError) as info:
        task.raise_for_failure()
    assert info.value.kind == "service"


def test_cancelled_task_raises_as_request_fault() -> None:
    task = GenerationTask.model_validate({"id": "t-c", "status": "cancelled"})
    with pytest.raises(TaskFailedError) as info:
        task.raise_for_failure()
    assert info.value.code == "request_cancelled"
    assert info.value.kind == "request"
    assert info.value.retryable is False


# -- HTTP errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("retry after 60 seconds", 60.0),
        ("Retry After 30 seconds", 30.0),
        ("please retry after 1 second.", 1.0),
        ("retry after 2.5s", 2.5),
        ("retry after 7 sec", 7.0),
        ("Rate limited; retry  after\t45 seconds or upgrade", 45.0),
        ("retry after 5 minutes", None),
        ("retry later", None),
        ("try a smaller image", None),
        ("", None),
        (None, None),
    ],
)
def test_parse_retry_after(text: str | None, seconds: float | None) -> None:
    assert parse_retry_after(text) == seconds


@pytest.mark.parametrize(
    ("status", "cls", "retryable", "default_type"),
    [
        (400, BadRequestError, False, "invalid_request_error"),
        (401, AuthenticationError, False, "authentication_error"),
        (402, InsufficientQuotaError, False, "insufficient_quota_error"),
        (403, PermissionDeniedError, False, "permission_error"),
        (404, NotFoundError, False, "not_found_error"),
        (413, RequestTooLargeError, False, "request_too_large_error"),
        (429, RateLimitError, True, "rate_limit_error"),
        (500, ServerError, True, "internal_server_error"),
        (502, ServerError, True, "internal_server_error"),
        (503, ServerError, True, "internal_server_error"),
        (418, SeedreamAPIError, False, "api_error"),
    ],
)
def test_api_error_for_status(status: int, cls: type, retryable: bool, default_type: str) -> None:
    error = api_error_for_status(status, "boom")
    assert type(error) is cls
    assert error.retryable is retryable
    assert error.status_code == status
    assert error.error_type == default_type
    assert error.message == "boom"
    assert str(error) == f"HTTP {status} {default_type}: boom"


def test_api_error_keeps_the_body_fields() -> None:
    error = api_error_for_status(
        503,
        "Service temporarily unavailable",
        error_type="service_unavailable_error",
        param="model",
        fallback_suggestion="retry after 30 seconds",
    )
    assert error.error_type == "service_unavailable_error"
    assert error.param == "model"
    assert error.retry_after == 30.0
    assert str(error) == (
        "HTTP 503 service_unavailable_error: Service temporarily unavailable (param: model)"
        " - retry after 30 seconds"
    )


def test_retry_after_falls_back_to_the_message() -> None:
    assert (
        api_error_for_status(429, "Too many requests, retry after 12 seconds").retry_after == 12.0
    )
    assert api_error_for_status(429, "Too many requests").retry_after is None


def test_retry_after_zero_is_a_hint() -> None:
    error = api_error_for_status(503, "busy", fallback_suggestion="retry after 0 seconds")
    assert error.retry_after == 0.0


def test_error_body_fields() -> None:
    body = {
        "error": {
            "code": 400,
            "message": "Invalid task ID format",
            "type": "invalid_request_error",
            "param": "task_id",
            "unknown": "x",
        }
    }
    assert error_body_fields(body) == {
        "message": "Invalid task ID format",
        "type": "invalid_request_error",
        "param": "task_id",
    }
    assert error_body_fields({"error": "plain text"}) == {}
    assert error_body_fields(["not", "a", "dict"]) == {}


# -- packaging --------------------------------------------------------------------------------------


def test_api_layer_does_not_import_prefect() -> None:
    code = (
        "import prefect_seedream.api, prefect_seedream, sys; "
        "assert 'prefect' not in sys.modules, sorted(m for m in sys.modules if m.startswith('prefect'))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("status", ["queued", "Waiting", "in_review"])
def test_undocumented_status_is_kept_and_not_terminal(status: str) -> None:
    """A status outside the documented ones is not an error: waiting goes on (issue 16)."""
    task = GenerationTask.model_validate({"id": "t1", "status": status})
    assert task.status.value == status.lower()
    assert not task.status.is_known and not task.status.is_terminal
    assert task.model_dump(mode="json")["status"] == status.lower()


def test_cancelled_is_terminal_and_usage_cost_is_read() -> None:
    task = GenerationTask.model_validate(
        {"id": "t1", "status": "completed", "usage": {"credits_reserved": 4, "cost": {"credits": 2.5}}}
    )
    assert task.credits == 2.5
    assert TaskStatus("cancelled").is_terminal and TaskStatus("cancelled").is_known
