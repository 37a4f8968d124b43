"""``manifest.jsonl``: exactly one line per input row, whatever happened to it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any, Literal

from pydantic import BaseModel, Field

from prefect_seedream.engine.storage import ImageFile, ImageStore, StoredImage

MANIFEST_NAME = "manifest.jsonl"

#: ``succeeded``: images stored. ``failed``: invalid row or failed generation (see
#: error). ``outcome_unknown``: a submission may have created a task; not resubmitted.
#: ``in_flight``: a task id is recorded but the run stopped waiting (wait cap,
#: cancellation); collect it with the recover flow. ``skipped``: not submitted
#: (budget reached, or the run was cancelled first).
RowStatus = Literal["succeeded", "failed", "outcome_unknown", "in_flight", "skipped"]
ROW_STATUSES: tuple[RowStatus, ...] = ("succeeded", "failed", "outcome_unknown", "in_flight", "skipped")


class ManifestImage(ImageFile):
    """A stored image as the manifest lists it (:meth:`read_bytes`, :meth:`open` read it)."""


class ManifestError(BaseModel):
    """Why a row did not succeed."""

    code: str
    message: str


class ManifestLine(BaseModel):
    """The outcome of one input row."""

    row_id: str
    row_number: int
    prompt: str | None
    model: str | None
    parameters: dict[str, Any] = Field(default_factory=dict)
    status: RowStatus
    task_id: str | None = None
    images: list[ManifestImage] = Field(default_factory=list)
    credits: float | None = None
    submissions: int = 0
    reused: bool = False
    started_at: str | None = None
    finished_at: str | None = None
    duration_seconds: float | None = None
    error: ManifestError | None = None


class RunLine(BaseModel):
    """A manifest line as one run produced it, with what that run spent on the row.

    Runs write these to their part files (see :mod:`prefect_seedream.engine.run_folder`); the manifest
    keeps only ``line``, the run's summary adds up ``spent`` and ``at_risk``.

    Attributes:
        line: The row's manifest line.
        spent: Credits this run was charged for the row.
        at_risk: Credits this run reserved that may be charged (in flight, outcome unknown).
    """

    line: ManifestLine
    spent: float = 0.0
    at_risk: float = 0.0
    #: The row's stored images with all they are known by (not written to part files).
    stored: list[StoredImage] = Field(default_factory=list, exclude=True)


def iter_manifest(store: ImageStore) -> Iterator[dict[str, Any]]:
    """Stream the manifest's lines as dicts (nothing when there is no manifest yet)."""
    try:
        handle = store.fs.open(store.path_for(MANIFEST_NAME), "rb")
    except FileNotFoundError:
        return
    with handle:
        for raw in handle:
            if raw.strip():
                yield json.loads(raw)


def iter_manifest_lines(
    output: str | ImageStore, storage_options: dict[str, Any] | None = None, *, limit: int | None = None
) -> Iterator[ManifestLine]:
    """The lines of the manifest in ``output`` (a folder, an fsspec URL or a store), streamed.

    Args:
        output: The output a run wrote (``manifest.jsonl`` is in it).
        storage_options: fsspec options of the output.
        limit: Read at most this many lines (a run's own lines come first).

    Examples:
        >>> store = ImageStore("memory://docs/iter-manifest")  # a run's output
        >>> refused = ManifestLine(row_id="fox", row_number=1, prompt="A red fox", model=None,
        ...     status="failed", error=ManifestError(code="content_policy_violation", message="refused"))
        >>> _ = store.write_text(MANIFEST_NAME, refused.model_dump_json() + "\\n")
        >>> for line in iter_manifest_lines("memory://docs/iter-manifest"):
        ...     if line.status != "succeeded":
        ...         print(line.row_id, line.error.code, line.error.message)
        fox content_policy_violation refused
    """
    store = output if isinstance(output, ImageStore) else ImageStore(output, storage_options)
    for count, raw in enumerate(iter_manifest(store)):
        if limit is not None and count >= limit:
            return
        yield ManifestLine.model_validate(raw)


def read_manifest(
    output: str | ImageStore, storage_options: dict[str, Any] | None = None
) -> list[ManifestLine]:
    """Every line of the manifest in ``output``, as :class:`ManifestLine` objects.

    Examples:
        >>> from prefect_seedream import read_manifest
        >>> store = ImageStore("memory://docs/read-manifest")  # a run's output
        >>> image = ManifestImage(uri="memory:///docs/read-manifest/fox-1.png", width=2048,
        ...                       height=2048, bytes=812345)
        >>> line = ManifestLine(row_id="fox", row_number=1, prompt="A red fox", model=None,
        ...                     status="succeeded", images=[image])
        >>> _ = store.write_text(MANIFEST_NAME, line.model_dump_json() + "\\n")
        >>> [image.uri for line in read_manifest("memory://docs/read-manifest") for image in line.images]
        ['memory:///docs/read-manifest/fox-1.png']
    """
    return list(iter_manifest_lines(output, storage_options))
