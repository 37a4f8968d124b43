"""The model-specific output fields of a submit body and what they ask for.

| model | fields | default format |
|---|---|---|
| 4.0, 4.5 | none | the simulator's ``image_format`` (PNG) |
| 5.0-lite | ``model_params: {output_format: png/jpeg, tools: [{"type": "web_search"}]}`` | JPEG |
| 5.0-pro, 5.0-flash | ``output_format`` png/jpeg, ``watermark`` bool, ``background`` opaque/transparent | JPEG (PNG when transparent) |
| layerize | ``output_format`` png/jpeg (the base image; layers are PNG with alpha) | JPEG |

``background: transparent`` needs exactly one reference image (which must have alpha: not
checked, the simulator does not look at it at submit) and answers PNG with alpha; with
``output_format: jpeg`` it is a 400.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .errors import SimulatorHTTPError
from .model_table import ModelRules

OUTPUT_FORMATS: tuple[str, ...] = ("png", "jpeg")
BACKGROUNDS: tuple[str, ...] = ("opaque", "transparent")
MODEL_PARAMS_KEYS: frozenset[str] = frozenset({"output_format", "tools"})
TOOL_TYPES: frozenset[str] = frozenset({"web_search"})


@dataclass(frozen=True)
class OutputOptions:
    """What a body asks of its output images.

    Attributes:
        output_format: ``png`` or ``jpeg``; ``None`` for the simulator's ``image_format``.
        transparent: Whether the images are PNG with alpha (``background: transparent``).
        watermark: Whether a watermark was asked for (recorded, not drawn).
        web_search: Whether ``model_params.tools`` enabled web search (recorded only).

    Examples:
        >>> OutputOptions().output_format is None
        True
    """

    output_format: str | None = None
    transparent: bool = False
    watermark: bool = False
    web_search: bool = False


def _invalid(message: str, param: str) -> SimulatorHTTPError:
    return SimulatorHTTPError(400, message, param=param)


def _output_format(value: Any, param: str) -> str:
    if value not in OUTPUT_FORMATS:
        raise _invalid(f"{param} must be one of png, jpeg, got {value!r}", param)
    return str(value)


def _model_params(value: Any, rules: ModelRules) -> OutputOptions:
    if not isinstance(value, Mapping):
        raise _invalid("model_params must be an object", "model_params")
    for key in value:
        if key not in MODEL_PARAMS_KEYS:
            raise _invalid(
                f"model_params.{key} is not supported by {rules.name}; use output_format or tools",
                f"model_params.{key}",
            )
    fmt = rules.default_output_format
    if "output_format" in value:
        fmt = _output_format(value["output_format"], "model_params.output_format")
    tools = value.get("tools", [])
    if not isinstance(tools, list) or not all(
        isinstance(tool, Mapping) and set(tool) == {"type"} and tool["type"] in TOOL_TYPES
        for tool in tools
    ):
        raise _invalid(
            'model_params.tools must be a list of {"type": "web_search"}', "model_params.tools"
        )
    return OutputOptions(output_format=fmt, web_search=bool(tools))


def check_output_options(
    body: Mapping[str, Any], rules: ModelRules, reference_count: int
) -> OutputOptions:
    """Validate the output fields of ``body`` (already known to be taken by the model).

    Args:
        body: The decoded submit body.
        rules: The model's rules.
        reference_count: ``len(image_urls)``.

    Raises:
        SimulatorHTTPError: 400 ``invalid_request_error`` whose ``param`` names the field.

    Examples:
        >>> from prefect_seedream.simulator.model_table import MODEL_RULES
        >>> pro = MODEL_RULES["doubao-seedream-5.0-pro"]
        >>> check_output_options({}, pro, 0).output_format
        'jpeg'
        >>> check_output_options({"background": "transparent"}, pro, 1)
        OutputOptions(output_format='png', transparent=True, watermark=False, web_search=False)
        >>> try:
        ...     check_output_options({"background": "transparent", "output_format": "jpeg"},
        ...                          pro, 1)
        ... except SimulatorHTTPError as err:
        ...     err.param
        'output_format'
    """
    if "model_params" in body:
        return _model_params(body["model_params"], rules)
    fmt = rules.default_output_format
    if "output_format" in body:
        fmt = _output_format(body["output_format"], "output_format")
    watermark = body.get("watermark", False)
    if not isinstance(watermark, bool):
        raise _invalid("watermark must be a boolean", "watermark")
    background = body.get("background", "opaque")
    if background not in BACKGROUNDS:
        raise _invalid(
            f"background must be opaque or transparent, got {background!r}", "background"
        )
    transparent = background == "transparent"
    if transparent:
        if body.get("output_format") == "jpeg":
            raise _invalid(
                "background=transparent answers PNG: output_format jpeg is not allowed with it",
                "output_format",
            )
        if reference_count != 1:
            raise _invalid(
                "background=transparent needs exactly one image_urls item (a PNG with alpha), "
                f"got {reference_count}",
                "image_urls",
            )
        fmt = "png"
    return OutputOptions(output_format=fmt, transparent=transparent, watermark=watermark)
