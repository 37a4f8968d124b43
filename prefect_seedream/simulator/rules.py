"""Server-side validation of submit bodies: the per-model rules of the contract, as data.

This is the simulator's own, deliberately small re-implementation of the rules in
``evolink-api.md``; it does not import the client's API layer, so the two can catch each
other's mistakes.

| rule | ``doubao-seedream-4.0`` | ``doubao-seedream-4.5`` |
|---|---|---|
| size presets | 1K, 2K, 4K | 2K, 4K |
| ``WxH`` total pixels | [1280*720, 4096*4096] | [2560*1440, 4096*4096] |
| default size | 2048x2048 | 2048x2048 |
| ``prompt_priority`` | standard, fast | standard |
| reference images | <= 5 | <= 14 |
| credits per image | 1.5 | 2.0 |

Both: aspect ratio W/H in [1/16, 16]; ``n`` in 1..15; ``len(image_urls) + n <= 15``; prompt
1..2000 characters; ``callback_url`` https only, no internal address, <= 2048 characters.
``image_urls`` items must be http(s) URLs; when ``SimulatorConfig.allow_private_image_urls``
is off they must not name an internal host either (:func:`check_reference_hosts`).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from .errors import SimulatorHTTPError

MAX_PROMPT_CHARS = 2000
MAX_IMAGES_TOTAL = 15
MAX_CALLBACK_URL_CHARS = 2048
MAX_ASPECT_RATIO = 16

PRESET_SIZES: Mapping[str, tuple[int, int]] = {
    "1K": (1024, 1024),
    "2K": (2048, 2048),
    "4K": (4096, 4096),
}

_SIZE_RE = re.compile(r"^([1-9][0-9]{0,5})x([1-9][0-9]{0,5})$")


@dataclass(frozen=True)
class ModelRules:
    """The limits of one Seedream model.

    Attributes:
        name: Model name as sent in ``model``.
        presets: Accepted size presets.
        min_pixels: Smallest accepted ``W*H`` of a ``WxH`` size.
        max_pixels: Largest accepted ``W*H`` of a ``WxH`` size.
        default_size: Size used when the body has no ``size``.
        prompt_priorities: Accepted ``prompt_priority`` values.
        max_reference_images: Largest accepted ``len(image_urls)``.
        credits_per_image: Credits billed per generated image.

    Examples:
        >>> MODEL_RULES["doubao-seedream-4.5"].credits_per_image
        2.0
    """

    name: str
    presets: frozenset[str]
    min_pixels: int
    max_pixels: int
    default_size: tuple[int, int]
    prompt_priorities: frozenset[str]
    max_reference_images: int
    credits_per_image: float


MODEL_RULES: Mapping[str, ModelRules] = {
    rules.name: rules
    for rules in (
        ModelRules(
            name="doubao-seedream-4.0",
            presets=frozenset({"1K", "2K", "4K"}),
            min_pixels=1280 * 720,
            max_pixels=4096 * 4096,
            default_size=(2048, 2048),
            prompt_priorities=frozenset({"standard", "fast"}),
            max_reference_images=5,
            credits_per_image=1.5,
        ),
        ModelRules(
            name="doubao-seedream-4.5",
            presets=frozenset({"2K", "4K"}),
            min_pixels=2560 * 1440,
            max_pixels=4096 * 4096,
            default_size=(2048, 2048),
            prompt_priorities=frozenset({"standard"}),
            max_reference_images=14,
            credits_per_image=2.0,
        ),
    )
}


@dataclass(frozen=True)
class GenerationRequest:
    """A submit body that passed validation.

    Attributes:
        model: The model's rules.
        prompt: The prompt, markers included.
        n: Requested number of images.
        width: Requested width in pixels (presets resolved).
        height: Requested height in pixels.
        prompt_priority: ``standard`` or ``fast``.
        image_urls: Reference image URLs.
        callback_url: Callback URL or ``None`` (the simulator never calls it).

    Examples:
        >>> req = validate_generation_request({"model": "doubao-seedream-4.0", "prompt": "a cat"})
        >>> (req.width, req.height, req.n)
        (2048, 2048, 1)
    """

    model: ModelRules
    prompt: str
    n: int
    width: int
    height: int
    prompt_priority: str = "standard"
    image_urls: tuple[str, ...] = field(default_factory=tuple)
    callback_url: str | None = None


def _invalid(message: str, param: str | None) -> SimulatorHTTPError:
    return SimulatorHTTPError(400, message, param=param)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _parse_size(value: Any, rules: ModelRules) -> tuple[int, int]:
    if value is None:
        return rules.default_size
    if not isinstance(value, str):
        raise _invalid("size must be a string such as '2K' or '2048x2048'", "size")
    if value in PRESET_SIZES:
        if value not in rules.presets:
            allowed = ", ".join(sorted(rules.presets))
            raise _invalid(
                f"size preset {value} is not supported by {rules.name}; use one of {allowed}",
                "size",
            )
        return PRESET_SIZES[value]
    match = _SIZE_RE.match(value)
    if match is None:
        allowed = ", ".join(sorted(rules.presets))
        raise _invalid(f"size must be one of {allowed} or 'WIDTHxHEIGHT', got {value!r}", "size")
    width, height = int(match.group(1)), int(match.group(2))
    pixels = width * height
    if not rules.min_pixels <= pixels <= rules.max_pixels:
        raise _invalid(
            f"size {value} has {pixels} pixels; {rules.name} accepts "
            f"{rules.min_pixels}..{rules.max_pixels} total pixels",
            "size",
        )
    if width > MAX_ASPECT_RATIO * height or height > MAX_ASPECT_RATIO * width:
        raise _invalid(f"size {value}: aspect ratio must be within [1/16, 16]", "size")
    return width, height


def _is_internal_host(host: str) -> bool:
    host = host.strip("[]").lower()
    if host in {"localhost", ""} or host.endswith((".localhost", ".local")):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return (
        address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_reserved
        or address.is_unspecified
        or address.is_multicast
    )


def _check_callback_url(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise _invalid("callback_url must be a non-empty string", "callback_url")
    if len(value) > MAX_CALLBACK_URL_CHARS:
        raise _invalid(
            f"callback_url must be at most {MAX_CALLBACK_URL_CHARS} characters", "callback_url"
        )
    parts = urlsplit(value)
    if parts.scheme != "https" or not parts.hostname:
        raise _invalid("callback_url must be an https URL", "callback_url")
    if _is_internal_host(parts.hostname):
        raise _invalid("callback_url must not point to an internal address", "callback_url")
    return value


def _check_image_urls(value: Any, rules: ModelRules) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise _invalid("image_urls must be an array of URLs", "image_urls")
    if len(value) > rules.max_reference_images:
        raise _invalid(
            f"{rules.name} accepts at most {rules.max_reference_images} reference images, "
            f"got {len(value)}",
            "image_urls",
        )
    for url in value:
        if not isinstance(url, str) or urlsplit(url).scheme not in ("http", "https"):
            raise _invalid("each image_urls item must be an http(s) URL", "image_urls")
    return tuple(value)


def check_reference_hosts(image_urls: tuple[str, ...]) -> None:
    """Refuse reference URLs on internal hosts, as a public API does.

    Only the host as written is checked (an IP literal, ``localhost``, ``*.localhost``,
    ``*.local``); names are not resolved.

    Raises:
        SimulatorHTTPError: 400 ``invalid_request_error`` with ``param: "image_urls"``.

    Examples:
        >>> check_reference_hosts(("https://cdn.example.com/a.png",))
        >>> try:
        ...     check_reference_hosts(("http://127.0.0.1:8000/a.png",))
        ... except SimulatorHTTPError as err:
        ...     err.status, err.param
        (400, 'image_urls')
    """
    for url in image_urls:
        if _is_internal_host(urlsplit(url).hostname or ""):
            raise _invalid(
                f"image_urls must not point to an internal address: {url[:100]}", "image_urls"
            )


def validate_generation_request(body: Any) -> GenerationRequest:
    """Validate a decoded submit body against the contract.

    Args:
        body: The decoded JSON body.

    Returns:
        The validated request.

    Raises:
        SimulatorHTTPError: 400 ``invalid_request_error`` with ``param`` naming the field,
            or 404 ``not_found_error`` for an unknown model.

    Examples:
        >>> validate_generation_request(
        ...     {"model": "doubao-seedream-4.5", "prompt": "a fox", "size": "4K", "n": 2}
        ... ).width
        4096
        >>> try:
        ...     validate_generation_request({"model": "doubao-seedream-4.5", "prompt": "x",
        ...                                  "size": "1K"})
        ... except SimulatorHTTPError as err:
        ...     err.param
        'size'
    """
    if not isinstance(body, dict):
        raise _invalid("request body must be a JSON object", None)
    model_name = body.get("model")
    if model_name is None:
        raise _invalid("model is required", "model")
    if not isinstance(model_name, str):
        raise _invalid("model must be a string", "model")
    rules = MODEL_RULES.get(model_name)
    if rules is None:
        raise SimulatorHTTPError(404, "Specified model not found", param="model")

    prompt = body.get("prompt")
    if prompt is None:
        raise _invalid("prompt is required", "prompt")
    if not isinstance(prompt, str):
        raise _invalid("prompt must be a string", "prompt")
    if not prompt.strip():
        raise _invalid("prompt must not be empty", "prompt")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise _invalid(
            f"prompt must be at most {MAX_PROMPT_CHARS} characters, got {len(prompt)}", "prompt"
        )

    n = body.get("n", 1)
    if not _is_int(n) or not 1 <= n <= MAX_IMAGES_TOTAL:
        raise _invalid(f"n must be an integer within 1..{MAX_IMAGES_TOTAL}", "n")

    width, height = _parse_size(body.get("size"), rules)

    priority = body.get("prompt_priority", "standard")
    if not isinstance(priority, str) or priority not in rules.prompt_priorities:
        allowed = ", ".join(sorted(rules.prompt_priorities))
        raise _invalid(
            f"prompt_priority must be one of {allowed} for {rules.name}", "prompt_priority"
        )

    image_urls = _check_image_urls(body.get("image_urls"), rules)
    if len(image_urls) + n > MAX_IMAGES_TOTAL:
        raise _invalid(
            f"reference images ({len(image_urls)}) + n ({n}) must be at most {MAX_IMAGES_TOTAL}",
            "n",
        )
    callback_url = _check_callback_url(body.get("callback_url"))
    return GenerationRequest(
        model=rules,
        prompt=prompt,
        n=n,
        width=width,
        height=height,
        prompt_priority=priority,
        image_urls=image_urls,
        callback_url=callback_url,
    )
