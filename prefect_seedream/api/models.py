"""Request and response models of the Evolink Seedream API, with per-model rules.

Every documented rule of a known model is enforced by :class:`GenerationRequest` before any
HTTP call, from one table of data (:data:`MODEL_LIMITS`): a new Seedream version is one entry
there. A model the table does not know is sent as is (one warning says its rules are not
checked locally; the API's own 400 is free), so a model Evolink serves tomorrow can be tried
today.

Where Evolink's sources disagree (its docs pages, its own client's generated table, the seed
pages of 2025), only what all of them agree on is checked here: see
``shared/evolink-api.md`` section 6 and :data:`MODEL_LIMITS`.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from dataclasses import dataclass
from enum import Enum
from typing import Any, Literal, get_args
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from prefect_seedream.api.addresses import internal_host_reason
from prefect_seedream.api.errors import TaskFailedError

logger = logging.getLogger("prefect_seedream.api")

MAX_PROMPT_CHARS = 2000
MAX_IMAGES_PER_REQUEST = 15
MIN_ASPECT_RATIO = 1 / 16
MAX_ASPECT_RATIO = 16.0
MAX_CALLBACK_URL_CHARS = 2048
#: The longest prompt sent for a model the table does not know (the API decides below it).
MAX_UNKNOWN_MODEL_PROMPT_CHARS = 32_000
_PIXEL_SIZE = re.compile(r"([0-9]{1,5})x([0-9]{1,5})")
_QUALITY = re.compile(r"auto|[0-9]{1,2}(\.[0-9])?K")
_MODEL_NAME = re.compile(r"[A-Za-z][A-Za-z0-9._:/-]{1,127}")

#: Aspect-ratio sizes every current model takes (``auto``: the model chooses from the prompt).
RATIO_SIZES = ("auto", "1:1", "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "9:16", "16:9", "21:9", "9:21")
#: Every ``quality`` value some model takes (with a ratio size; also the seed pages' presets).
Quality = Literal["auto", "1K", "1.5K", "2K", "3K", "4K"]
OutputFormat = Literal["png", "jpeg"]
Background = Literal["opaque", "transparent"]
#: Where a model's own fields go in the body: at its top level, or inside ``model_params``.
FieldPlace = Literal["top", "model_params"]


@dataclass(frozen=True)
class ModelLimits:
    """The documented limits of one Seedream model (one row of :data:`MODEL_LIMITS`).

    Attributes:
        name: The API's model name.
        qualities: Accepted ``quality`` values; the non-``auto`` ones are also accepted as a
            ``size`` (the seed pages' presets, still served).
        min_pixels: Smallest total pixel count of a ``WxH`` size.
        max_pixels: Largest total pixel count of a ``WxH`` size.
        prompt_priorities: Accepted ``prompt_priority`` values (empty: the field is not taken).
        max_reference_images: Most ``image_urls`` in one request.
        credits_per_image: Credits per generated image the estimate starts from (a run
            corrects it from the API's ``credits_reserved`` and final charges).
        price_published: False when Evolink publishes no price for the model: the figure is
            then another gateway's list price, converted (an estimate, on the high side).
        default_size: The size the API uses when none is given, if documented.
        min_reference_images: Fewest ``image_urls`` (layerize: exactly one).
        max_prompt_chars: Longest prompt (the docs say tokens; the schemas say characters).
        prompt_required: False when the prompt may be left out (layerize).
        takes_size: False when ``size`` is not taken (layerize).
        takes_n: False when ``n`` is not taken (one image per request, or layers).
        output_formats: Accepted ``output_format`` values (empty: the field is not taken).
        default_output_format: What the API answers when no ``output_format`` is sent.
        fields_at: Where ``output_format`` and web search go: top level or ``model_params``.
        takes_watermark: Whether ``watermark`` is taken.
        backgrounds: Accepted ``background`` values (empty: the field is not taken).
        takes_web_search: Whether the web-search tool can be asked for (charged extra).
        layers: The answer holds a base image and its layers (layerize models).

    Examples:
        >>> MODEL_LIMITS["doubao-seedream-5.0-pro"].takes_n
        False
        >>> MODEL_LIMITS["doubao-seedream-4.5"].size_presets
        ('2K', '4K')
    """

    name: str
    qualities: tuple[str, ...]
    min_pixels: int
    max_pixels: int
    prompt_priorities: tuple[str, ...]
    max_reference_images: int
    credits_per_image: float
    default_size: str | None = None
    min_reference_images: int = 0
    max_prompt_chars: int = MAX_PROMPT_CHARS
    prompt_required: bool = True
    takes_size: bool = True
    takes_n: bool = True
    output_formats: tuple[str, ...] = ()
    default_output_format: str = "png"
    fields_at: FieldPlace = "top"
    takes_watermark: bool = False
    backgrounds: tuple[str, ...] = ()
    takes_web_search: bool = False
    layers: bool = False
    price_published: bool = True

    def takes(self, field: str) -> bool:
        """Whether the model takes a request field (the fields only some models take).

        Examples:
            >>> MODEL_LIMITS["doubao-seedream-4.5"].takes("output_format")
            False
        """
        return {
            "size": self.takes_size,
            "n": self.takes_n,
            "quality": bool(self.qualities),
            "prompt_priority": bool(self.prompt_priorities),
            "output_format": bool(self.output_formats),
            "watermark": self.takes_watermark,
            "background": bool(self.backgrounds),
            "web_search": self.takes_web_search,
        }.get(field, True)

    @property
    def size_presets(self) -> tuple[str, ...]:
        """Shorthand sizes (the seed pages' ``1K``/``2K``/``4K`` forms) this model takes."""
        return tuple(q for q in self.qualities if q != "auto") if self.takes_size else ()


_PRO_FLASH: dict[str, Any] = {
    "qualities": ("1K", "1.5K", "2K"),
    "min_pixels": 921_600,
    "max_pixels": 4_624_220,
    "max_reference_images": 10,
    "max_prompt_chars": 4000,
    "takes_n": False,
    "price_published": False,
    "output_formats": ("png", "jpeg"),
    "default_output_format": "jpeg",
    "takes_watermark": True,
    "backgrounds": ("opaque", "transparent"),
}
_LAYERIZE: dict[str, Any] = {
    "qualities": ("auto", "1K", "1.5K", "2K"),
    "min_pixels": 0,
    "max_pixels": 0,
    "prompt_priorities": (),
    "max_reference_images": 1,
    "min_reference_images": 1,
    "price_published": False,
    "max_prompt_chars": 4000,
    "prompt_required": False,
    "takes_size": False,
    "takes_n": False,
    "output_formats": ("png", "jpeg"),
    "default_output_format": "jpeg",
    "layers": True,
}

#: One entry per model, as Evolink documents it in December 2026 (``evolink-api.md`` section 6;
#: Evolink's own client's generated table). Prices: the published per-image prices (4.0 1.5 in
#: its published 1.3-1.6, 4.5 the top of its 2.2-2.5; 5.0 lite is flat at every size). Evolink
#: publishes none for 5.0 pro and flash: their figures are other gateways' list prices converted
#: at the 4.x ratio (flash $0.018 -> 1.25, pro $0.09 at 2K -> 6.2); layerize bills its base image
#: and each layer at its parent's price (the estimate reserves one image; a final charge above
#: it raises the estimate for the rest of the run). Every submission's ``credits_reserved``
#: corrects the estimate the budget uses for the rest of the run.
MODEL_LIMITS: dict[str, ModelLimits] = {
    limits.name: limits
    for limits in (
        ModelLimits(
            name="doubao-seedream-4.0", qualities=("1K", "2K", "4K"), min_pixels=1280 * 720,
            max_pixels=4096 * 4096, prompt_priorities=("standard", "fast"),
            max_reference_images=14, credits_per_image=1.5,
        ),
        ModelLimits(
            name="doubao-seedream-4.5", qualities=("2K", "4K"), min_pixels=2560 * 1440,
            max_pixels=4096 * 4096, prompt_priorities=("standard",), max_reference_images=14,
            credits_per_image=2.5, default_size="2048x2048",
        ),
        ModelLimits(
            name="doubao-seedream-5.0-lite", qualities=("2K", "3K", "4K"), min_pixels=2560 * 1440,
            max_pixels=4096 * 4096, prompt_priorities=(), max_reference_images=14,
            credits_per_image=2.2, output_formats=("png", "jpeg"), default_output_format="jpeg",
            fields_at="model_params", takes_web_search=True,
        ),
        ModelLimits(name="doubao-seedream-5.0-pro", prompt_priorities=("standard", "fast"),
                    credits_per_image=6.2, **_PRO_FLASH),
        ModelLimits(name="doubao-seedream-5.0-flash", prompt_priorities=("standard",),
                    credits_per_image=1.25, **_PRO_FLASH),
        ModelLimits(name="doubao-seedream-5.0-pro-layerize", credits_per_image=6.2, **_LAYERIZE),
        ModelLimits(name="doubao-seedream-5.0-flash-layerize", credits_per_image=1.25, **_LAYERIZE),
    )
}

#: The highest price per image of the table: the estimate of a model the table does not know.
MAX_KNOWN_CREDITS_PER_IMAGE: float = max(limits.credits_per_image for limits in MODEL_LIMITS.values())

#: The known model names as a type, for typed parameters (kept equal to MODEL_LIMITS).
SeedreamModel = Literal[
    "doubao-seedream-4.0",
    "doubao-seedream-4.5",
    "doubao-seedream-5.0-lite",
    "doubao-seedream-5.0-pro",
    "doubao-seedream-5.0-flash",
    "doubao-seedream-5.0-pro-layerize",
    "doubao-seedream-5.0-flash-layerize",
]
assert set(get_args(SeedreamModel)) == set(MODEL_LIMITS), "SeedreamModel must list MODEL_LIMITS"
DEFAULT_MODEL: SeedreamModel = "doubao-seedream-4.5"
#: A model parameter: a known model (the run form's choices) or any other name, sent as is.
ModelName = SeedreamModel | str

_warned_unknown: set[str] = set()


def get_model_limits(model: str) -> ModelLimits:
    """Return the limits of a known model, or raise ValueError naming the known models.

    Examples:
        >>> get_model_limits("doubao-seedream-4.5").size_presets
        ('2K', '4K')
    """
    try:
        return MODEL_LIMITS[model]
    except KeyError:
        known = ", ".join(MODEL_LIMITS)
        raise ValueError(f"model {model!r} is not in the table: the known models are {known}") from None


def find_model_limits(model: str) -> ModelLimits | None:
    """The limits of a known model, or None for a model the table does not know.

    Examples:
        >>> find_model_limits("doubao-seedream-9.9") is None
        True
    """
    return MODEL_LIMITS.get(model)


def warn_unknown_model(model: str) -> None:
    """Log once per process that a model's rules are not checked locally."""
    if model in _warned_unknown:
        return
    _warned_unknown.add(model)
    logger.warning(
        "Model %r is not in prefect-seedream's model table: it is sent as is and its rules are "
        "not checked locally (the API answers a bad request with a free 400); the credit "
        "estimate uses the API's credits_reserved once the first submission answers", model,
    )


def _retired(model: str) -> bool:
    """Seedream versions before the table's oldest (3.x and earlier) are not served."""
    match = re.match(r"doubao-seedream-([0-9]+)", model)
    return match is not None and int(match.group(1)) < 4


def models_markdown() -> str:
    """The model table as Markdown (the README's "Models" section is this, kept equal by a test).

    Examples:
        >>> models_markdown().splitlines()[0].startswith("| model |")
        True
    """
    head = (
        "| model | `size` | `quality` | WxH pixels | refs | prompt | `n` | `prompt_priority` "
        "| format (default) | other fields | credits/image |"
    )
    rows = [head, "|" + "---|" * head.count(" | ") + "---|"]
    for limits in MODEL_LIMITS.values():
        rows.append("| " + " | ".join(_markdown_cells(limits)) + " |")
    return "\n".join(rows) + "\n"


def _markdown_cells(limits: ModelLimits) -> list[str]:
    size = f"auto, ratios, {'/'.join(limits.size_presets)}, WxH" if limits.takes_size else "-"
    pixels = f"{limits.min_pixels:,}..{limits.max_pixels:,}" if limits.takes_size else "-"
    refs = (
        f"exactly {limits.max_reference_images}" if limits.min_reference_images == limits.max_reference_images
        else f"<= {limits.max_reference_images}"
    )
    prompt = f"<= {limits.max_prompt_chars}" + ("" if limits.prompt_required else ", optional")
    formats = "png/jpeg" if limits.output_formats else "-"
    formats += f" ({limits.default_output_format})"
    where = " in `model_params`" if limits.fields_at == "model_params" and limits.output_formats else ""
    other = [f"`output_format`{where}"] if limits.output_formats else []
    other += ["`watermark`"] if limits.takes_watermark else []
    other += [f"`background` {'/'.join(limits.backgrounds)}"] if limits.backgrounds else []
    other += [f"`web_search`{where}"] if limits.takes_web_search else []
    other += ["base image + layers"] if limits.layers else []
    price = f"{limits.credits_per_image:g}" + ("" if limits.price_published else " (not published: estimate)")
    return [
        f"`{limits.name}`", size, "/".join(limits.qualities), pixels, refs, prompt,
        "1..15" if limits.takes_n else "1", "/".join(limits.prompt_priorities) or "-",
        formats, ", ".join(other) or "-", price,
    ]


def _check_size(size: str, limits: ModelLimits) -> None:
    if not limits.takes_size:
        raise ValueError(f"size is not taken by {limits.name}: leave it out (quality sets the resolution)")
    if size in RATIO_SIZES or size in limits.size_presets:
        return
    pixel_rule = (
        f"WxH with total pixels in [{limits.min_pixels}, {limits.max_pixels}] "
        f"and aspect ratio in [1/16, 16]"
    )
    match = _PIXEL_SIZE.fullmatch(size)
    if match is None:
        presets = ", ".join(limits.size_presets)
        raise ValueError(
            f"size {size!r} is not valid for {limits.name}: use auto, a ratio such as 16:9 "
            f"(with quality), one of {presets}, or {pixel_rule}"
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


def _not_taken(field: str, model: str, hint: str = "") -> ValueError:
    return ValueError(f"{field} is not taken by {model}{hint}")


def _check_model_fields(request: GenerationRequest, limits: ModelLimits) -> None:
    """The fields only some models take, and the values they accept."""
    name = limits.name
    if request.quality is not None and request.quality not in limits.qualities:
        raise ValueError(
            f"quality {request.quality!r} is not available for {name}: use {', '.join(limits.qualities)}"
        )
    if request.prompt_priority is not None and request.prompt_priority not in limits.prompt_priorities:
        if not limits.prompt_priorities:
            raise _not_taken("prompt_priority", name)
        raise ValueError(
            f"prompt_priority {request.prompt_priority!r} is not available for {name}: "
            f"use {', '.join(limits.prompt_priorities)}"
        )
    if request.output_format is not None and request.output_format not in limits.output_formats:
        raise _not_taken("output_format", name, " (its images are PNG)")
    if request.watermark is not None and not limits.takes("watermark"):
        raise _not_taken("watermark", name)
    if request.web_search and not limits.takes("web_search"):
        raise _not_taken("web_search", name)
    if request.background is not None:
        if request.background not in limits.backgrounds:
            raise _not_taken("background", name)
        if request.background == "transparent":
            if request.output_format == "jpeg":
                raise ValueError("background 'transparent' needs output_format png (JPEG has no alpha)")
            if len(request.image_urls) != 1:
                raise ValueError(
                    "background 'transparent' needs exactly one reference image (a PNG with "
                    f"alpha) in image_urls, got {len(request.image_urls)}"
                )
    if not limits.takes_n and request.n != 1:
        raise ValueError(f"n={request.n} is not available for {name}: it answers one image per request")


def _check_references(request: GenerationRequest, limits: ModelLimits) -> None:
    count = len(request.image_urls)
    if limits.min_reference_images == limits.max_reference_images and count != limits.max_reference_images:
        raise ValueError(
            f"image_urls has {count} images: {limits.name} takes exactly "
            f"{limits.max_reference_images} (the image to split into layers)"
        )
    if count > limits.max_reference_images:
        raise ValueError(
            f"image_urls has {count} images, more than the {limits.max_reference_images} "
            f"{limits.name} accepts"
        )
    if limits.takes_n and count + request.n > MAX_IMAGES_PER_REQUEST:
        raise ValueError(
            f"image_urls ({count}) + n ({request.n}) = {count + request.n}, more than "
            f"{MAX_IMAGES_PER_REQUEST}"
        )


def _check_prompt(request: GenerationRequest, limits: ModelLimits | None) -> None:
    longest = limits.max_prompt_chars if limits is not None else MAX_UNKNOWN_MODEL_PROMPT_CHARS
    if not request.prompt.strip() and (limits is None or limits.prompt_required):
        raise ValueError("prompt is empty")
    if len(request.prompt) > longest:
        raise ValueError(f"prompt has {len(request.prompt)} characters, more than the {longest} allowed")


#: URL schemes of files the plugin can read and upload for the API (fsspec protocols).
LOCAL_REFERENCE_SCHEMES = frozenset({"file", "s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "memory"})


def is_local_reference(url: str) -> bool:
    """True for a reference image the API cannot fetch itself: a local path (``/...``, ``./...``,
    ``../...``, ``~/...``) or a storage URL (``file://``, ``s3://``, ``gs://``, ...).

    Such a reference must be uploaded to a place the API can reach before it is sent (the
    Prefect layer does it, see ``prefect_seedream.engine.references``).

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

    Every rule of a known model is checked on construction, so an invalid request fails
    before any credit is spent; the error names the field, the value and the allowed range.
    A model the table does not know gets only the checks that hold for every model (URLs,
    ``n``) and is sent as is, with one warning.

    Examples:
        >>> request = GenerationRequest(prompt="A lighthouse at dawn", size="16:9", quality="4K")
        >>> request.model, request.to_api_body()["quality"]
        ('doubao-seedream-4.5', '4K')
        >>> lite = GenerationRequest(model="doubao-seedream-5.0-lite", prompt="x", output_format="png")
        >>> lite.to_api_body()["model_params"]
        {'output_format': 'png'}
        >>> GenerationRequest(model="doubao-seedream-4.5", prompt="x", quality="1K")
        Traceback (most recent call last):
        ...
        pydantic_core._pydantic_core.ValidationError: 1 validation error for GenerationRequest
        ...
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = Field(DEFAULT_MODEL, description="Model name, e.g. doubao-seedream-4.5; any other name is sent as is.")
    prompt: str = Field("", description="What to generate (layerize: which elements to split, optional).")
    n: int = Field(1, description="Most images to generate, 1..15 (4.x and 5.0 lite).")
    size: str | None = Field(None, description="auto, a ratio (16:9), a preset (1K/2K/4K) or WxH.")
    quality: str | None = Field(None, description="Resolution with a ratio size: 1K, 1.5K, 2K, 3K, 4K (per model).")
    prompt_priority: str | None = Field(None, description="standard, or fast on 4.0 and 5.0 pro.")
    image_urls: tuple[str, ...] = Field((), description="Reference image URLs (or local files).")
    callback_url: str | None = Field(None, description="HTTPS URL called when the task ends.")
    output_format: OutputFormat | None = Field(None, description="png or jpeg (5.0 models; default jpeg).")
    watermark: bool | None = Field(None, description="Add a watermark (5.0 pro and flash).")
    background: Background | None = Field(None, description="opaque or transparent (5.0 pro and flash).")
    web_search: bool = Field(False, description="Let the model search the web (5.0 lite; charged extra).")

    @field_validator("model")
    @classmethod
    def _model_name(cls, value: str) -> str:
        if value in MODEL_LIMITS:
            return value
        known = ", ".join(MODEL_LIMITS)
        near = [name for name in MODEL_LIMITS if name.lower() == value.strip().lower()]
        if near:
            raise ValueError(f"model {value!r} is not a model name: did you mean {near[0]!r}? (known: {known})")
        if not _MODEL_NAME.fullmatch(value):
            raise ValueError(
                f"model {value[:80]!r} is not a model name (a letter, then letters, digits, . _ : / -); known: {known}"
            )
        if value.startswith("doubao-seedream-") and _retired(value):
            raise ValueError(f"model {value!r} is not served any more; known: {known}")
        return value

    @field_validator("quality")
    @classmethod
    def _quality_form(cls, value: str | None) -> str | None:
        if value is not None and not _QUALITY.fullmatch(value):
            raise ValueError(f"quality {value[:40]!r} is not a quality: use auto or a resolution such as 2K or 1.5K")
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
        limits = find_model_limits(self.model)
        _check_prompt(self, limits)
        if limits is None:
            warn_unknown_model(self.model)
            return self
        if self.size is not None:
            _check_size(self.size, limits)
        _check_model_fields(self, limits)
        _check_references(self, limits)
        return self

    @property
    def limits(self) -> ModelLimits | None:
        """The limits of this request's model (None: a model the table does not know)."""
        return MODEL_LIMITS.get(self.model)

    @property
    def is_known_model(self) -> bool:
        """True when the model is in the table (its rules were checked here)."""
        return self.model in MODEL_LIMITS

    @property
    def local_references(self) -> tuple[str, ...]:
        """The reference images that are local files or storage URLs (to upload first)."""
        return tuple(url for url in self.image_urls if is_local_reference(url))

    @property
    def reserved_credits(self) -> float:
        """Credits the API is expected to pre-charge (``n`` images at the model's price).

        A model the table does not know is estimated at the highest price of the table; a run
        corrects it from the API's ``credits_reserved``.
        """
        limits = self.limits
        price = limits.credits_per_image if limits is not None else MAX_KNOWN_CREDITS_PER_IMAGE
        return price * self.n

    def to_api_body(self) -> dict[str, Any]:
        """The JSON body to send, each field where the model's docs put it, without fields
        left to the API's defaults."""
        limits = self.limits
        body: dict[str, Any] = {"model": self.model}
        if self.prompt or (limits is not None and limits.prompt_required):
            body["prompt"] = self.prompt
        if limits is None or limits.takes_n or self.n != 1:
            body["n"] = self.n
        for name in ("size", "quality", "prompt_priority", "callback_url"):
            value = getattr(self, name)
            if value is not None:
                body[name] = value
        if self.image_urls:
            body["image_urls"] = list(self.image_urls)
        own: dict[str, Any] = {
            name: getattr(self, name)
            for name in ("output_format", "watermark", "background")
            if getattr(self, name) is not None
        }
        if self.web_search:
            own["tools"] = [{"type": "web_search"}]
        if own and limits is not None and limits.fields_at == "model_params":
            body["model_params"] = own
        else:
            body.update(own)
        return body

    def to_row(self) -> dict[str, Any]:
        """The request as a flat dataset row (the fields that are set, none nested).

        Examples:
            >>> GenerationRequest(model="doubao-seedream-5.0-lite", prompt="x", web_search=True).to_row()
            {'model': 'doubao-seedream-5.0-lite', 'prompt': 'x', 'n': 1, 'web_search': True}
        """
        row = self.model_dump(exclude_none=True)
        if not row.get("image_urls"):
            row.pop("image_urls", None)
        else:
            row["image_urls"] = list(row["image_urls"])
        if not row.get("web_search"):
            row.pop("web_search", None)
        return row

    @property
    def answer_format(self) -> str:
        """The image format the API answers (``png`` or ``jpeg``), as far as the docs say."""
        if self.output_format is not None:
            return self.output_format
        if self.background == "transparent":
            return "png"
        limits = self.limits
        return limits.default_output_format if limits is not None else "png"


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


class ResultItem(BaseModel):
    """One item of ``result_data`` (5.0 answers carry it beside ``results``)."""

    model_config = ConfigDict(extra="allow")

    result_id: str | None = None
    image_url: str | None = None

    @field_validator("result_id", "image_url", mode="before")
    @classmethod
    def _as_text(cls, value: Any) -> Any:
        return None if value is None else str(value)


class GenerationTask(BaseModel):
    """A generation task as returned by submit and by ``GET /v1/tasks/{id}``.

    Unknown fields are kept, so new API fields never break parsing. Result URLs may come in
    ``results`` and in ``result_data[].image_url``: :attr:`image_urls` holds them all, once.

    Examples:
        >>> task = GenerationTask.model_validate(
        ...     {"id": "task-unified-1-abc", "status": "completed", "progress": 100,
        ...      "results": ["https://cdn.example/a.png"], "new_field": 1})
        >>> task.status.is_terminal, task.results
        (True, ['https://cdn.example/a.png'])
        >>> layered = GenerationTask.model_validate({"id": "t", "status": "completed",
        ...     "result_data": [{"result_id": "base", "image_url": "https://cdn.example/b.jpg"},
        ...                     {"result_id": "layer-1", "image_url": "https://cdn.example/l1.png"}]})
        >>> layered.image_urls
        ['https://cdn.example/b.jpg', 'https://cdn.example/l1.png']
    """

    model_config = ConfigDict(extra="allow")

    id: str
    status: TaskStatus
    created: int | None = None
    model: str | None = None
    object: str | None = None
    progress: int = 0
    results: list[str] = Field(default_factory=list)
    result_data: list[ResultItem] = Field(default_factory=list)
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

    @field_validator("result_data", mode="before")
    @classmethod
    def _result_data_list(cls, value: Any) -> Any:
        if not isinstance(value, list):
            return []
        return [item for item in value if isinstance(item, dict)]

    @property
    def image_urls(self) -> list[str]:
        """Every result URL, from ``results`` and ``result_data``, in order, each once."""
        urls = [url for url in self.results if isinstance(url, str) and url]
        urls += [item.image_url for item in self.result_data if item.image_url]
        return list(dict.fromkeys(urls))

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
