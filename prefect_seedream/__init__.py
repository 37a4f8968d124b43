"""prefect-seedream: Prefect 3 tasks and flows for the Evolink Seedream image API.

The API layer (``prefect_seedream.api``) never imports Prefect; the Prefect
layer is loaded lazily on first use, so ``from prefect_seedream import
GenerationRequest`` stays light.

Examples:
    >>> from prefect_seedream import GenerationRequest, SeedreamClient
    >>> GenerationRequest(prompt="A lighthouse at dawn").model
    'doubao-seedream-4.5'
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from prefect_seedream.api import *  # noqa: F403
from prefect_seedream.api import __all__ as _api_all

__version__ = "0.1.0"

_LAZY: dict[str, str] = {
    "SeedreamCredentials": "prefect_seedream.credentials",
    "submit_generation": "prefect_seedream.tasks",
    "wait_for_generation": "prefect_seedream.tasks",
    "store_images": "prefect_seedream.tasks",
    "generate_images": "prefect_seedream.tasks",
    "StoredImage": "prefect_seedream.storage",
    "generate_dataset": "prefect_seedream.flows",
    "generate_shard": "prefect_seedream.flows",
    "recover_dataset": "prefect_seedream.flows",
}

__all__ = [*_api_all, *_LAZY, "__version__"]

if TYPE_CHECKING:
    from prefect_seedream.credentials import SeedreamCredentials
    from prefect_seedream.flows import generate_dataset, generate_shard, recover_dataset
    from prefect_seedream.storage import StoredImage
    from prefect_seedream.tasks import (
        generate_images,
        store_images,
        submit_generation,
        wait_for_generation,
    )


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'prefect_seedream' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    # `prefect block register -m prefect_seedream` finds blocks through dir().
    return sorted(set(globals()) | set(__all__))
