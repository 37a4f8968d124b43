"""``manifest.jsonl``: exactly one line per input row, whatever happened to it."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from prefect_seedream.storage import ImageStore

MANIFEST_NAME = "manifest.jsonl"

#: ``succeeded``: images stored. ``failed``: invalid row or failed generation (see
#: error). ``outcome_unknown``: a submission may have created a task; not resubmitted.
#: ``in_flight``: a task id is recorded but the run stopped waiting (wait cap,
#: cancellation); collect it with the recover flow. ``skipped``: not submitted
#: (budget reached, or the run was cancelled first).
RowStatus = Literal["succeeded", "failed", "outcome_unknown", "in_flight", "skipped"]


class ManifestImage(BaseModel):
    """A stored image as the manifest lists it."""

    uri: str
    width: int
    height: int
    bytes: int


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


def read_manifest(store: ImageStore) -> list[ManifestLine]:
    """The manifest's lines, or an empty list when there is none yet."""
    text = store.read_text(MANIFEST_NAME)
    if not text:
        return []
    return [ManifestLine.model_validate_json(line) for line in text.splitlines() if line.strip()]


def write_manifest(store: ImageStore, lines: list[ManifestLine]) -> str:
    """Write the manifest, in input order, keeping earlier rows this run did not read.

    Lines of an earlier run whose row id is not among ``lines`` (a run over
    another dataset into the same output) are kept after this run's lines, so a
    rewrite never loses them.

    Returns:
        The manifest's URI.
    """
    current = sorted(lines, key=lambda line: line.row_number)
    ids = {line.row_id for line in current}
    kept = [line for line in read_manifest(store) if line.row_id not in ids]
    text = "".join(line.model_dump_json() + "\n" for line in [*current, *kept])
    return store.write_text(MANIFEST_NAME, text)
