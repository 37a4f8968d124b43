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

__version__ = "0.1.0"

#: Names of the Prefect layer, by module. Everything else public comes from the API layer
#: (``prefect_seedream.api``). Nothing is imported until it is used: ``import
#: prefect_seedream.defaults`` costs nothing, which lets the command line start its
#: Prefect server before loading any library.
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

if TYPE_CHECKING:
    from prefect_seedream.api import *
    from prefect_seedream.credentials import SeedreamCredentials
    from prefect_seedream.flows import generate_dataset, generate_shard, recover_dataset
    from prefect_seedream.storage import StoredImage
    from prefect_seedream.tasks import (
        generate_images,
        store_images,
        submit_generation,
        wait_for_generation,
    )


def _api_names() -> list[str]:
    return list(importlib.import_module("prefect_seedream.api").__all__)


def __getattr__(name: str) -> Any:
    if name == "__all__":
        value: Any = [*_api_names(), *_LAZY, "__version__"]
    elif name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
    elif name[:1].isupper() and name in _api_names():  # the API layer's names are capitalised;
        # a lower-case name is a submodule being imported (`from prefect_seedream import tasks`)
        value = getattr(importlib.import_module("prefect_seedream.api"), name)
    else:
        raise AttributeError(f"module 'prefect_seedream' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    # `prefect block register -m prefect_seedream` finds blocks through dir().
    return sorted(set(globals()) | set(__getattr__("__all__")))
