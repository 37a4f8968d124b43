"""prefect-seedream: Prefect 3 tasks and flows for the Evolink Seedream image API.

The API layer (``prefect_seedream.api``) never imports Prefect; the Prefect layer is loaded
lazily on first use, so ``from prefect_seedream import GenerationRequest`` stays light and the
command line starts its Prefect server before loading any library. The credentials block type
is defined as soon as Prefect itself is loaded (and Prefect's collection entry point imports
it), so Prefect finds ``seedream-credentials`` by its slug in any process.

Examples:
    >>> from prefect_seedream import GenerationRequest, SeedreamClient
    >>> GenerationRequest(prompt="A lighthouse at dawn").model
    'doubao-seedream-4.5'
"""

from __future__ import annotations

import importlib
import sys
from typing import TYPE_CHECKING, Any

#: Names of the Prefect layer, by module. Everything else public comes from the API layer
#: (``prefect_seedream.api``). Nothing is imported until it is used: ``import
#: prefect_seedream.engine.defaults`` costs nothing, which lets the command line start its
#: Prefect server before loading any library.
_LAZY: dict[str, str] = {
    "SeedreamCredentials": "prefect_seedream.credentials",
    "submit_generation": "prefect_seedream.tasks",
    "wait_for_generation": "prefect_seedream.tasks",
    "store_images": "prefect_seedream.tasks",
    "generate_images": "prefect_seedream.tasks",
    "generate_many": "prefect_seedream.tasks",
    "GeneratedImages": "prefect_seedream.engine.lines",
    "StoredImage": "prefect_seedream.engine.storage",
    "ImageFile": "prefect_seedream.engine.storage",
    "ManifestLine": "prefect_seedream.engine.manifest",
    "ManifestImage": "prefect_seedream.engine.manifest",
    "ManifestError": "prefect_seedream.engine.manifest",
    "read_manifest": "prefect_seedream.engine.manifest",
    "iter_manifest_lines": "prefect_seedream.engine.manifest",
    "DatasetRunSummary": "prefect_seedream.engine.summary",
    "AccountStop": "prefect_seedream.engine.account",
    "RunOptions": "prefect_seedream.engine.options",
    "generate_dataset": "prefect_seedream.flows",
    "generate_shard": "prefect_seedream.flows",
    "recover_dataset": "prefect_seedream.flows",
}

if TYPE_CHECKING:
    from prefect_seedream.api import *
    from prefect_seedream.credentials import SeedreamCredentials
    from prefect_seedream.engine.account import AccountStop
    from prefect_seedream.engine.lines import GeneratedImages
    from prefect_seedream.engine.manifest import (
        ManifestError,
        ManifestImage,
        ManifestLine,
        iter_manifest_lines,
        read_manifest,
    )
    from prefect_seedream.engine.options import RunOptions
    from prefect_seedream.engine.storage import ImageFile, StoredImage
    from prefect_seedream.engine.summary import DatasetRunSummary
    from prefect_seedream.flows import generate_dataset, generate_shard, recover_dataset
    from prefect_seedream.tasks import (
        generate_images,
        generate_many,
        store_images,
        submit_generation,
        wait_for_generation,
    )


def _api_names() -> list[str]:
    return list(importlib.import_module("prefect_seedream.api").__all__)


def _version() -> str:
    # Read when asked (importlib.metadata costs tens of milliseconds at import).
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("prefect-seedream")
    except PackageNotFoundError:  # pragma: no cover - run from a source tree that is not installed
        return "0+unknown"


def __getattr__(name: str) -> Any:
    if name == "__version__":
        value: Any = _version()
    elif name == "__all__":
        value = [*_api_names(), *_LAZY, "__version__"]
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


if "prefect" in sys.modules:
    # Prefect is loaded already (a flow file, a worker, Prefect's own collection loader):
    # define the block type now, so that a lookup by its slug finds it.
    importlib.import_module("prefect_seedream.credentials")
