"""Server-side validation of submit bodies: the per-model rules of the contract, as data.

This is the simulator's own, deliberately small re-implementation of the rules in
``evolink-api.md`` (sections 1 and 6); it does not import the client's API layer, so the two
can catch each other's mistakes. The rules themselves are data in
:mod:`prefect_seedream.simulator.model_table` (one entry per model), the size tables in
:mod:`prefect_seedream.simulator.sizes`, the output fields in
:mod:`prefect_seedream.simulator.output_options`, the prices in
:mod:`prefect_seedream.simulator.billing`.

| rule | 4.0 | 4.5 | 5.0-lite | 5.0-pro | 5.0-flash | 5.0-pro-layerize, -flash-layerize |
|---|---|---|---|---|---|---|
| prompt (characters) | 1..2000 | 1..2000 | 1..2000 | 1..4000 | 1..4000 | optional, <= 4000 |
| ``n`` | 1..15 | 1..15 | 1..15 | 1..15 | 1..15 | 1 only (base + 2-3 layers) |
| ``size`` | auto, ratio, 1K/2K/4K, WxH | auto, ratio, 2K/4K, WxH | auto, ratio, 2K/4K, WxH | auto, ratio, 1K/2K, WxH | as pro | not taken |
| ``quality`` | 1K, 2K (default), 4K | 2K (default), 4K | 2K (default), 3K, 4K | 1K (default), 1.5K, 2K | as pro | auto (default), 1K, 1.5K, 2K |
| ``WxH`` total pixels | [1280*720, 4096*4096] | [2560*1440, 4096*4096] | [2560*1440, 4096*4096] | [1280*720, 4624220], sides > 14 | as pro | - |
| ``prompt_priority`` | standard, fast | standard | standard | standard, fast | standard | pro: standard, fast; flash: standard |
| reference images | <= 14 | <= 14 | <= 14 | <= 10 | <= 10 | exactly 1 |
| other fields | - | - | ``model_params`` (output_format, tools) | ``output_format``, ``watermark``, ``background`` | as pro | ``output_format`` |
| output | PNG | PNG | JPEG (default) | JPEG (default) | JPEG (default) | base JPEG (default), layers PNG+alpha |
| credits per image (``billing``) | 1.5 | 2.0 (seed pages) / 2.5 (published) | 2.2 | 6.2 (assumed) | 1.25 (assumed) | per output image, as pro / flash |

All: a ratio is one of ``auto`` 1:1 2:3 3:2 3:4 4:3 4:5 5:4 9:16 16:9 21:9 9:21 and takes its
pixels from ``quality`` (:mod:`prefect_seedream.simulator.sizes`); a preset is a square
(1K = 1024x1024) accepted when its pixels fit the model's ``WxH`` range (the seed pages'
forms); ``quality`` is checked whatever ``size`` is but only sizes ``auto`` and ratios;
without ``size`` the default is ``auto`` at the default quality (2048x2048 for 4.x and lite,
1024x1024 for pro/flash; layerize ``auto`` renders 1024x1024). Aspect ratio W/H in
[1/16, 16]; ``len(image_urls) + n <= 15``; ``callback_url`` https only, no internal address,
<= 2048 characters. A field of another model (``output_format`` on 4.5, ``size`` on layerize,
``model_params`` on pro...) is a 400 naming it; fields no model takes are ignored.
``image_urls`` items must be http(s) URLs; when ``SimulatorConfig.allow_private_image_urls``
is off they must not name an internal host either (:func:`check_reference_hosts`).
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from .errors import SimulatorHTTPError
from .model_table import KNOWN_FIELDS, MODEL_RULES, ModelRules
from .output_options import OutputOptions, check_output_options
from .sizes import PRESET_SIZES, RATIOS, tier_size

__all__ = [
    "MAX_IMAGES_TOTAL",
    "MODEL_RULES",
    "PRESET_SIZES",
    "GenerationRequest",
    "ModelRules",
    "check_reference_hosts",
    "validate_generation_request",
]

MAX_PROMPT_CHARS = 2000
MAX_IMAGES_TOTAL = 15
MAX_CALLBACK_URL_CHARS = 2048
MAX_ASPECT_RATIO = 16
#: Pixels of a layerize result at ``quality: auto`` (the input's size is not known at submit).
LAYERIZE_AUTO_SIZE = (1024, 1024)

_SIZE_RE = re.compile(r"^([1-9][0-9]{0,5})x([1-9][0-9]{0,5})$")


@dataclass(frozen=True)
class GenerationRequest:
    """A submit body that passed validation.

    Attributes:
        model: The model's rules.
        prompt: The prompt, markers included (``""`` when a layerize body has none).
        n: Images reserved for: ``n`` of the body, or for layerize the base and the most
            layers (``1 + max_layers``); credits are reserved for these.
        width: Requested width in pixels (presets, ratios and qualities resolved).
        height: Requested height in pixels.
        prompt_priority: ``standard`` or ``fast``.
        image_urls: Reference image URLs.
        callback_url: Callback URL or ``None`` (the simulator never calls it).
        quality: The quality tier used (the model's default when none was given).
        output: What the body asks of the output images.
        layers: Layers a layerize model returns beside the base image (0 otherwise).

    Examples:
        >>> req = validate_generation_request({"model": "doubao-seedream-4.0", "prompt": "a cat"})
        >>> (req.width, req.height, req.n, req.image_count)
        (2048, 2048, 1, 1)
    """

    model: ModelRules
    prompt: str
    n: int
    width: int
    height: int
    prompt_priority: str = "standard"
    image_urls: tuple[str, ...] = field(default_factory=tuple)
    callback_url: str | None = None
    quality: str = "2K"
    output: OutputOptions = field(default_factory=OutputOptions)
    layers: int = 0

    @property
    def image_count(self) -> int:
        """Images the task generates: ``n``, or for layerize the base and its layers."""
        return 1 + self.layers if self.model.max_layers else self.n


def _invalid(message: str, param: str | None) -> SimulatorHTTPError:
    return SimulatorHTTPError(400, message, param=param)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_fields_taken(body: Mapping[str, Any], rules: ModelRules) -> None:
    not_taken = sorted(KNOWN_FIELDS & set(body) - rules.fields)
    if not_taken:
        raise _invalid(f"{not_taken[0]} is not a parameter of {rules.name}", not_taken[0])


def _check_prompt(value: Any, rules: ModelRules) -> str:
    if value is None:
        if rules.prompt_required:
            raise _invalid("prompt is required", "prompt")
        return ""
    if not isinstance(value, str):
        raise _invalid("prompt must be a string", "prompt")
    if rules.prompt_required and not value.strip():
        raise _invalid("prompt must not be empty", "prompt")
    if len(value) > rules.max_prompt_chars:
        raise _invalid(
            f"prompt must be at most {rules.max_prompt_chars} characters for {rules.name}, "
            f"got {len(value)}",
            "prompt",
        )
    return value


def _check_quality(value: Any, rules: ModelRules) -> str:
    if value is None:
        return rules.default_quality
    if not isinstance(value, str) or value not in rules.qualities:
        allowed = ", ".join(rules.qualities)
        raise _invalid(
            f"quality must be one of {allowed} for {rules.name}, got {value!r}", "quality"
        )
    return value


def _pixel_size(value: str, rules: ModelRules) -> tuple[int, int]:
    match = _SIZE_RE.match(value)
    if match is None:
        allowed = ", ".join(["auto", *RATIOS, *sorted(rules.presets)])
        raise _invalid(f"size must be one of {allowed} or 'WIDTHxHEIGHT', got {value!r}", "size")
    width, height = int(match.group(1)), int(match.group(2))
    pixels = width * height
    if not rules.min_pixels <= pixels <= rules.max_pixels:
        raise _invalid(
            f"size {value} has {pixels} pixels; {rules.name} accepts "
            f"{rules.min_pixels}..{rules.max_pixels} total pixels",
            "size",
        )
    if min(width, height) < rules.min_side:
        raise _invalid(f"size {value}: each side must be at least {rules.min_side}", "size")
    if width > MAX_ASPECT_RATIO * height or height > MAX_ASPECT_RATIO * width:
        raise _invalid(f"size {value}: aspect ratio must be within [1/16, 16]", "size")
    return width, height


def _resolve_size(value: Any, quality: str, rules: ModelRules) -> tuple[int, int]:
    if quality == "auto":  # layerize (which takes no size): the output follows the input
        return LAYERIZE_AUTO_SIZE
    if value is None or value == "auto" or value in RATIOS:
        return tier_size(rules.tiers, quality, value or "auto")
    if not isinstance(value, str):
        raise _invalid("size must be a string such as '16:9', '2K' or '2048x2048'", "size")
    if value in PRESET_SIZES:
        if value not in rules.presets:
            allowed = ", ".join(sorted(rules.presets))
            raise _invalid(
                f"size preset {value} is not supported by {rules.name}; use one of {allowed}",
                "size",
            )
        return PRESET_SIZES[value]
    return _pixel_size(value, rules)


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
        value = []
    if not isinstance(value, list):
        raise _invalid("image_urls must be an array of URLs", "image_urls")
    if not rules.min_reference_images <= len(value) <= rules.max_reference_images:
        if rules.min_reference_images == rules.max_reference_images:
            wanted = f"exactly {rules.max_reference_images}"
        else:
            wanted = f"at most {rules.max_reference_images}"
        raise _invalid(
            f"image_urls: {rules.name} accepts {wanted} reference images, got {len(value)}",
            "image_urls",
        )
    for url in value:
        if not isinstance(url, str) or urlsplit(url).scheme not in ("http", "https"):
            raise _invalid("each image_urls item must be an http(s) URL", "image_urls")
    return tuple(value)


def _check_n(value: Any, rules: ModelRules) -> int:
    if not _is_int(value) or not 1 <= value <= rules.max_n:
        if rules.max_n == 1:
            raise _invalid(f"{rules.name} returns one base image and its layers: n must be 1", "n")
        raise _invalid(f"n must be an integer within 1..{rules.max_n}", "n")
    return int(value)


def _layer_count(prompt: str, image_urls: tuple[str, ...], rules: ModelRules) -> int:
    """2 or 3 layers, decided by the prompt and the image (the same request, the same count)."""
    if not rules.max_layers:
        return 0
    digest = hashlib.sha256(f"{prompt}|{'|'.join(image_urls)}".encode()).digest()
    return rules.max_layers - 1 + digest[0] % 2


def _model_of(body: Mapping[str, Any], models: Mapping[str, ModelRules]) -> ModelRules:
    model_name = body.get("model")
    if model_name is None:
        raise _invalid("model is required", "model")
    if not isinstance(model_name, str):
        raise _invalid("model must be a string", "model")
    rules = models.get(model_name)
    if rules is None:
        raise SimulatorHTTPError(404, "Specified model not found", param="model")
    return rules


def validate_generation_request(
    body: Any, models: Mapping[str, ModelRules] = MODEL_RULES
) -> GenerationRequest:
    """Validate a decoded submit body against the contract.

    Args:
        body: The decoded JSON body.
        models: The models served (``model_table.model_catalog`` of the configuration).

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
        >>> req = validate_generation_request(
        ...     {"model": "doubao-seedream-5.0-flash", "prompt": "a fox", "size": "16:9",
        ...      "quality": "2K"})
        >>> (req.width, req.height, req.output.output_format)
        (2816, 1584, 'jpeg')
        >>> try:
        ...     validate_generation_request({"model": "doubao-seedream-4.5", "prompt": "x",
        ...                                  "size": "1K"})
        ... except SimulatorHTTPError as err:
        ...     err.param
        'size'
    """
    if not isinstance(body, dict):
        raise _invalid("request body must be a JSON object", None)
    rules = _model_of(body, models)
    _check_fields_taken(body, rules)
    prompt = _check_prompt(body.get("prompt"), rules)
    n = _check_n(body.get("n", 1), rules)
    quality = _check_quality(body.get("quality"), rules)
    width, height = _resolve_size(body.get("size"), quality, rules)

    priority = body.get("prompt_priority", "standard")
    if not isinstance(priority, str) or priority not in rules.prompt_priorities:
        allowed = ", ".join(sorted(rules.prompt_priorities))
        raise _invalid(
            f"prompt_priority must be one of {allowed} for {rules.name}", "prompt_priority"
        )

    image_urls = _check_image_urls(body.get("image_urls"), rules)
    layers = _layer_count(prompt, image_urls, rules)
    if rules.max_layers:
        n = 1 + rules.max_layers
    elif len(image_urls) + n > MAX_IMAGES_TOTAL:
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
        quality=quality,
        output=check_output_options(body, rules, len(image_urls)),
        layers=layers,
    )


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
