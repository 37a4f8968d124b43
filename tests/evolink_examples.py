"""The example request of each Seedream model as Evolink documents it today.

Copied from the ``example`` of each model in ``model-params.generated.ts`` of Evolink's own
client (EvoLinkAI/evolink-mcp, generated from docs.evolink.ai's OpenAPI files), with ``model``
added; the expected pixels come from the quality tables of the same file (``auto`` quality of
layerize: the simulator's 1024x1024). Shared by the simulator's tests and the npm client check.
"""

from __future__ import annotations

from typing import Any

LAKE = "A serene lake reflecting the beautiful sunset"

#: ``model`` -> the documented example body (``model`` included).
DOCUMENTED_EXAMPLES: dict[str, dict[str, Any]] = {
    "doubao-seedream-4.0": {
        "prompt": "A serene lake reflecting the beautiful sunset scenery",
        "size": "16:9",
        "quality": "2K",
    },
    "doubao-seedream-4.5": {"prompt": LAKE, "size": "16:9", "quality": "2K"},
    "doubao-seedream-5.0-lite": {
        "prompt": "Generate an illustration of the latest fashion trends from Paris Fashion "
        "Week 2025",
        "size": "3:4",
        "quality": "2K",
        "model_params": {"tools": [{"type": "web_search"}]},
    },
    "doubao-seedream-5.0-pro": {"prompt": LAKE, "size": "16:9", "quality": "2K"},
    "doubao-seedream-5.0-flash": {"prompt": LAKE, "size": "16:9", "quality": "2K"},
    "doubao-seedream-5.0-pro-layerize": {
        "image_urls": ["https://example.com/poster.png"],
        "quality": "auto",
        "output_format": "jpeg",
    },
    "doubao-seedream-5.0-flash-layerize": {
        "image_urls": ["https://example.com/poster.png"],
        "quality": "auto",
        "output_format": "jpeg",
    },
}
DOCUMENTED_EXAMPLES = {
    model: {"model": model, **body} for model, body in DOCUMENTED_EXAMPLES.items()
}

#: ``model`` -> pixels its documented example asks for.
EXAMPLE_PIXELS: dict[str, tuple[int, int]] = {
    "doubao-seedream-4.0": (2848, 1600),
    "doubao-seedream-4.5": (2848, 1600),
    "doubao-seedream-5.0-lite": (1728, 2304),
    "doubao-seedream-5.0-pro": (2816, 1584),
    "doubao-seedream-5.0-flash": (2816, 1584),
    "doubao-seedream-5.0-pro-layerize": (1024, 1024),
    "doubao-seedream-5.0-flash-layerize": (1024, 1024),
}

#: Models whose results are JPEG unless asked otherwise.
JPEG_BY_DEFAULT: frozenset[str] = frozenset(
    model for model in DOCUMENTED_EXAMPLES if "seedream-5.0" in model
)
LAYERIZE_MODELS: frozenset[str] = frozenset(m for m in DOCUMENTED_EXAMPLES if "layerize" in m)
