"""A toy Prefect flow whose parameters mirror the real Seedream flow's, for UI-driver tests.

The flow takes the same kinds of parameters the real end-to-end flow exposes in the
"Custom run" form (a free-text string, two ``Literal`` choices, a bounded integer) and
creates the three kinds of artifacts the real flow creates: a markdown gallery with
embedded ``data:`` PNG thumbnails, a table, and a progress artifact.

Run as a script to serve it as a deployment against the server named by ``PREFECT_API_URL``::

    PREFECT_API_URL=http://127.0.0.1:PORT/api python tests/browser/toy_flow.py --name toy

The deployment is then ``toy-flow/toy``.
"""

# No `from __future__ import annotations` here: with string annotations, Prefect 3.8 fails
# to validate the parameters of a *deployed* run ("`Toy_FlowModel` is not fully defined;
# you should define `Annotated`"), and every run of the deployment ends Failed.
import argparse
import base64
import struct
import zlib
from typing import Annotated, Literal

from prefect import flow, task
from prefect.artifacts import (
    create_image_artifact,
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from pydantic import Field

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
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)

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

    images = "\n\n".join(
        f"![image {r['index']}]({r['uri']})" for r in rows
    )
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


def main() -> None:
    """Serve :func:`toy_flow` as deployment ``toy-flow/<name>`` until killed."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--name", default="toy", help="deployment name")
    args = parser.parse_args()
    toy_flow.serve(name=args.name, print_starting_message=True)


if __name__ == "__main__":
    main()
