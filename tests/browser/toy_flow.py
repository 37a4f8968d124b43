"""Toy Prefect flows whose parameters mirror the real Seedream flow's, for UI-driver tests.

``toy_flow`` takes the kinds of parameters the real flow exposes in the "Custom run" form
(a free-text string, two ``Literal`` choices, a bounded integer) and creates the artifacts
the real flow creates: a markdown gallery with embedded ``data:`` PNG thumbnails (plus one
raw-HTML ``<img>``), an image artifact, a table and a progress artifact.

``toy_options_flow`` covers the other parameter kinds: a pydantic model, an ``Enum``, a
``bool`` and a ``float``.

Run as a script to serve both against the server named by ``PREFECT_API_URL``::

    PREFECT_API_URL=http://127.0.0.1:PORT/api python tests/browser/toy_flow.py --name toy

The deployments are then ``toy-flow/toy`` and ``toy-options-flow/toy``.
"""

# No `from __future__ import annotations` here. `flow.serve()` runs each flow run from a
# cloudpickled copy of the flow in a spawned subprocess (prefect.flow_engine.
# run_flow_in_subprocess); names used only inside string annotations (Annotated, Literal,
# type aliases) are missing from the copy's globals, so Prefect 3.8.7 fails *every* run
# started from the UI: "Validation of flow parameters failed ... `Toy_FlowModel` is not
# fully defined; you should define `Annotated`". Calling the flow directly works.
import argparse
import base64
import struct
import zlib
from enum import Enum
from typing import Annotated, Literal

from prefect import flow, serve, task
from prefect.artifacts import (
    create_image_artifact,
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from pydantic import BaseModel, Field

Model = Literal["doubao-seedream-4.0", "doubao-seedream-4.5"]
Size = Literal["1K", "2K", "4K"]

#: Keys of the artifacts the flow creates (lowercase letters, digits and dashes only).
GALLERY_KEY = "toy-gallery"
TABLE_KEY = "toy-table"
IMAGE_KEY = "toy-image"

#: Colours of the generated thumbnails, cycled through per image.
_COLOURS: list[tuple[int, int, int]] = [
    (220, 60, 60),
    (60, 160, 60),
    (60, 90, 220),
    (230, 180, 40),
]


def make_png(width: int, height: int, rgb: tuple[int, int, int]) -> bytes:
    """Return the bytes of a solid-colour RGB PNG, built with zlib only (no Pillow needed)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return (
            struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)
        )

    row = b"\x00" + bytes(rgb) * width  # filter byte 0 + pixels
    raw = row * height
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw, 9))
        + chunk(b"IEND", b"")
    )


def png_data_uri(width: int, height: int, rgb: tuple[int, int, int]) -> str:
    """Return a ``data:image/png;base64,...`` URI of a solid-colour PNG."""
    return "data:image/png;base64," + base64.b64encode(make_png(width, height, rgb)).decode("ascii")


@task
def fake_generate(index: int, model: str, size: str) -> dict[str, str | int]:
    """Pretend to generate one image; return a row describing it, with a data-URI thumbnail."""
    side = {"1K": 32, "2K": 48, "4K": 64}[size]
    return {
        "index": index,
        "model": model,
        "size": size,
        "width": side,
        "height": side,
        "uri": png_data_uri(side, side, _COLOURS[index % len(_COLOURS)]),
    }


@flow(name="toy-flow", log_prints=True)
def toy_flow(
    dataset: Annotated[
        str, Field(description="Path or URL of the prompts dataset (CSV or JSONL).")
    ] = "prompts.csv",
    model: Annotated[Model, Field(description="Seedream model to call.")] = "doubao-seedream-4.5",
    size: Annotated[Size, Field(description="Output resolution class.")] = "2K",
    n: Annotated[int, Field(ge=1, le=15, description="Images per prompt (1-15).")] = 1,
) -> list[str]:
    """Toy stand-in for the Seedream batch flow.

    Args:
        dataset: Path or URL of the prompts dataset.
        model: Seedream model to call.
        size: Output resolution class.
        n: Images per prompt.
    """
    progress_id = create_progress_artifact(progress=0.0, description="Toy generation progress")
    rows = []
    for i in range(n):
        rows.append(fake_generate(i, model, size))
        update_progress_artifact(progress_id, progress=100.0 * (i + 1) / n)

    images = "\n\n".join(f"![image {r['index']}]({r['uri']})" for r in rows)
    create_markdown_artifact(
        key=GALLERY_KEY,
        markdown=(
            f"# Toy gallery\n\nDataset `{dataset}`, model `{model}`, size `{size}`, n={n}.\n\n"
            f"{images}\n\n"
            # A raw HTML <img> as well, to see whether the UI's markdown renderer keeps it.
            f'<img alt="html image" src="{rows[0]["uri"]}" width="24">\n'
        ),
        description="Gallery of generated images (data: URIs)",
    )
    create_table_artifact(
        key=TABLE_KEY,
        table=[{k: v for k, v in r.items() if k != "uri"} for r in rows],
        description="One row per generated image",
    )
    create_image_artifact(
        image_url=str(rows[-1]["uri"]),
        key=IMAGE_KEY,
        description="Last generated image (data: URI)",
    )
    print(f"generated {n} image(s) for {dataset} with {model} at {size}")
    return [str(r["uri"])[:40] for r in rows]


class Quality(str, Enum):
    """An ``Enum`` parameter (rendered like a ``Literal``: a custom select)."""

    standard = "standard"
    hd = "hd"


class Options(BaseModel):
    """A pydantic-model parameter: the form nests its fields, labelled by their titles."""

    prompt_prefix: str = Field("", description="Prefix added to every prompt")
    watermark: bool = Field(False, description="Add a watermark")
    quality: Quality = Quality.standard


@flow(name="toy-options-flow", log_prints=True)
def toy_options_flow(
    dataset: str,
    options: Options = Options(),  # noqa: B008 - a pydantic default, copied by Prefect
    quality: Quality = Quality.hd,
    dry_run: bool = False,
    ratio: Annotated[float, Field(gt=0, le=4)] = 1.0,
) -> dict[str, object]:
    """Echo the parameters (nested model, Enum, bool, float, required str).

    Args:
        dataset: A required parameter (no default).
        options: Nested generation options.
    """
    print(dataset, options, quality, dry_run, ratio)
    return {"dataset": dataset, "options": options.model_dump(mode="json")}


def main() -> None:
    """Serve both flows as deployments ``toy-flow/<name>`` and ``toy-options-flow/<name>``."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--name", default="toy", help="deployment name")
    args = parser.parse_args()
    serve(
        toy_flow.to_deployment(name=args.name),
        toy_options_flow.to_deployment(name=args.name),
        print_starting_message=True,
    )


if __name__ == "__main__":
    main()
