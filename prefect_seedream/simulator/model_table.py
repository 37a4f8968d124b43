"""The Seedream models the simulator serves: one entry of data per model.

Read from ``evolink-api.md`` section 6 and Evolink's own client (``model-params.generated.ts``
of EvoLinkAI/evolink-mcp). Prompts are bounded in tokens there; the simulator counts
characters instead. Where a source is silent the simulator is lenient: ``n`` is accepted by
5.0 pro/flash although their schema does not list it (clients send it by default); a
layerize model accepts ``n`` only as 1, since the model decides how many layers it returns.
The table in :mod:`prefect_seedream.simulator.rules` sums these entries up.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass

from .billing import credits_per_image
from .config import SimulatorConfig
from .sizes import PRESET_SIZES

#: Body fields every model takes (besides its :attr:`ModelRules.extra_fields`).
COMMON_FIELDS: frozenset[str] = frozenset(
    {"model", "prompt", "n", "size", "quality", "prompt_priority", "image_urls", "callback_url"}
)
#: Every body field some model takes: one of these that a model does not take is refused.
KNOWN_FIELDS: frozenset[str] = COMMON_FIELDS | {
    "model_params",
    "output_format",
    "watermark",
    "background",
}
_PRO_FLASH_FIELDS = frozenset({"output_format", "watermark", "background"})
_LAYERIZE_FIELDS = frozenset(
    {"model", "prompt", "n", "quality", "prompt_priority", "image_urls", "callback_url",
     "output_format"}
)  # fmt: skip


@dataclass(frozen=True)
class ModelRules:
    """The limits of one Seedream model.

    Attributes:
        name: Model name as sent in ``model`` (and shown in answers).
        fields: Body fields the model takes; another field of :data:`KNOWN_FIELDS` is a 400.
        max_prompt_chars: Longest prompt, in characters.
        prompt_required: Whether ``prompt`` is required (layerize: optional).
        max_n: Largest ``n`` (1 for layerize).
        tiers: Name of the quality table (``sizes.TIER_TABLES``) of ratios and qualities.
        qualities: Accepted ``quality`` values.
        default_quality: ``quality`` when none is given.
        min_pixels: Smallest ``W*H`` of a ``WxH`` size (the presets must fit too).
        max_pixels: Largest ``W*H`` of a ``WxH`` size.
        min_side: Smallest width or height of a ``WxH`` size.
        prompt_priorities: Accepted ``prompt_priority`` values.
        min_reference_images: Fewest ``image_urls`` (layerize: exactly one).
        max_reference_images: Most ``image_urls``.
        default_output_format: Encoding when the body names none (``None``: the simulator's
            ``image_format``, PNG by default, as for 4.x).
        max_layers: Layers returned beside the base image (0: not a layerize model).
        credits_per_image: Credits billed per generated image (see ``billing``).

    Examples:
        >>> MODEL_RULES["doubao-seedream-4.5"].credits_per_image
        2.0
        >>> MODEL_RULES["doubao-seedream-5.0-pro"].default_output_format
        'jpeg'
    """

    name: str
    fields: frozenset[str]
    max_prompt_chars: int
    prompt_required: bool
    max_n: int
    tiers: str
    qualities: tuple[str, ...]
    default_quality: str
    min_pixels: int
    max_pixels: int
    min_side: int
    prompt_priorities: frozenset[str]
    min_reference_images: int
    max_reference_images: int
    default_output_format: str | None
    max_layers: int
    credits_per_image: float

    @property
    def presets(self) -> frozenset[str]:
        """The seed-page presets (squares) whose pixels fit the model's ``WxH`` range."""
        if "size" not in self.fields:
            return frozenset()
        return frozenset(
            name
            for name, (width, height) in PRESET_SIZES.items()
            if self.min_pixels <= width * height <= self.max_pixels
        )


_BOTH = frozenset({"standard", "fast"})
_STANDARD = frozenset({"standard"})
_4K_MAX = 4096 * 4096
_5_MAX = 4624220


def _rules(name: str, **limits: object) -> ModelRules:
    defaults: dict[str, object] = {
        "fields": COMMON_FIELDS,
        "max_prompt_chars": 2000,
        "prompt_required": True,
        "max_n": 15,
        "tiers": "seedream-4",
        "min_side": 1,
        "min_reference_images": 0,
        "max_reference_images": 14,
        "default_output_format": None,
        "max_layers": 0,
        "credits_per_image": credits_per_image(name),
    }
    return ModelRules(name=name, **{**defaults, **limits})  # type: ignore[arg-type]


def _pro_flash(name: str, priorities: frozenset[str]) -> ModelRules:
    return _rules(
        name, fields=COMMON_FIELDS | _PRO_FLASH_FIELDS, max_prompt_chars=4000,
        tiers="seedream-5", qualities=("1K", "1.5K", "2K"), default_quality="1K",
        min_pixels=1280 * 720, max_pixels=_5_MAX, min_side=15, prompt_priorities=priorities,
        max_reference_images=10, default_output_format="jpeg",
    )  # fmt: skip


def _layerize(name: str, priorities: frozenset[str]) -> ModelRules:
    return _rules(
        name, fields=_LAYERIZE_FIELDS, max_prompt_chars=4000, prompt_required=False, max_n=1,
        tiers="seedream-5", qualities=("auto", "1K", "1.5K", "2K"), default_quality="auto",
        min_pixels=1280 * 720, max_pixels=_5_MAX, prompt_priorities=priorities,
        min_reference_images=1, max_reference_images=1, default_output_format="jpeg",
        max_layers=3,
    )  # fmt: skip


#: The known models, by name.
MODEL_RULES: Mapping[str, ModelRules] = {
    rules.name: rules
    for rules in (
        _rules(
            "doubao-seedream-4.0", qualities=("1K", "2K", "4K"), default_quality="2K",
            min_pixels=1280 * 720, max_pixels=_4K_MAX, prompt_priorities=_BOTH,
        ),
        _rules(
            "doubao-seedream-4.5", qualities=("2K", "4K"), default_quality="2K",
            min_pixels=2560 * 1440, max_pixels=_4K_MAX, prompt_priorities=_STANDARD,
        ),
        _rules(
            "doubao-seedream-5.0-lite", fields=COMMON_FIELDS | {"model_params"},
            qualities=("2K", "3K", "4K"), default_quality="2K", min_pixels=2560 * 1440,
            max_pixels=_4K_MAX, prompt_priorities=_STANDARD, default_output_format="jpeg",
        ),
        _pro_flash("doubao-seedream-5.0-pro", _BOTH),
        _pro_flash("doubao-seedream-5.0-flash", _STANDARD),
        _layerize("doubao-seedream-5.0-pro-layerize", _BOTH),
        _layerize("doubao-seedream-5.0-flash-layerize", _STANDARD),
    )
}  # fmt: skip


def model_catalog(config: SimulatorConfig) -> dict[str, ModelRules]:
    """The models a simulator with ``config`` serves: priced by ``config.price_list``, plus
    ``config.extra_models`` (each a copy of its known model under the new name).

    Examples:
        >>> config = SimulatorConfig(price_list="published",
        ...                          extra_models={"doubao-seedream-5.1-preview":
        ...                                        "doubao-seedream-4.5"})
        >>> preview = model_catalog(config)["doubao-seedream-5.1-preview"]
        >>> preview.name, preview.credits_per_image, preview.qualities
        ('doubao-seedream-5.1-preview', 2.5, ('2K', '4K'))
    """
    catalog = {
        name: dataclasses.replace(
            rules, credits_per_image=credits_per_image(name, config.price_list)
        )
        for name, rules in MODEL_RULES.items()
    }
    for extra, base in config.extra_models.items():
        catalog[extra] = dataclasses.replace(catalog[base], name=extra)
    return catalog
