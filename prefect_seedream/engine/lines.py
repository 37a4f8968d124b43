"""A row's outcome: its manifest line, from the dataset row and what the ledger says of it, and
the :class:`GeneratedImages` a task returns for it."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from pydantic import BaseModel, Field

from prefect_seedream.engine.dataset import DatasetRow, InvalidRow, RowDefaults, ValidRow, iter_rows
from prefect_seedream.engine.ledger import LedgerRecord, LedgerState, TaskLedger, prompt_sha256
from prefect_seedream.engine.manifest import (
    MANIFEST_NAME,
    ManifestError,
    ManifestImage,
    ManifestLine,
    RowStatus,
    RunLine,
    iter_manifest,
)
from prefect_seedream.engine.storage import ImageStore, StoredImage


def manifest_images(images: list[StoredImage]) -> list[ManifestImage]:
    """Stored images as the manifest lists them."""
    return [ManifestImage(uri=i.uri, width=i.width, height=i.height, bytes=i.bytes) for i in images]


def line_for(row: DatasetRow, status: RowStatus, **fields: Any) -> ManifestLine:
    """A manifest line for a row, with its request's parameters.

    Examples:
        >>> from prefect_seedream.engine.dataset import InvalidRow
        >>> line = line_for(InvalidRow(3, "row-3", "x", "prompt is missing", {}), "failed")
        >>> line.row_id, line.row_number, line.status
        ('row-3', 3, 'failed')
    """
    if isinstance(row, ValidRow):
        request = row.request
        parameters = request.model_dump(include={"size", "n", "prompt_priority", "image_urls"})
        parameters["image_urls"] = list(request.image_urls)
        parameters.update(request.model_dump(
            include={"quality", "output_format", "watermark", "background"}, exclude_none=True
        ))
        if request.web_search:
            parameters["web_search"] = True
        return ManifestLine(
            row_id=row.row_id,
            row_number=row.number,
            prompt=request.prompt,
            model=request.model,
            parameters=parameters,
            status=status,
            **fields,
        )
    return ManifestLine(
        row_id=row.row_id,
        row_number=row.number,
        prompt=row.prompt,
        model=row.parameters.get("model"),
        parameters={k: v for k, v in row.parameters.items() if k != "model"},
        status=status,
        **fields,
    )


def invalid_line(row: InvalidRow) -> ManifestLine:
    """The line of a row that cannot be submitted."""
    return line_for(row, "failed", error=ManifestError(code="invalid_row", message=row.reason))


def line_from_record(
    row: ValidRow, record: LedgerRecord | None, *, reused: bool = False, **fields: Any
) -> ManifestLine:
    """The manifest line that a row's ledger record stands for."""
    if record is None:
        return line_for(
            row,
            "skipped",
            error=ManifestError(code="not_started", message="the run stopped before this row was submitted"),
            **fields,
        )
    status, error = record.status()
    return line_for(
        row,
        status,
        task_id=record.task_id,
        images=manifest_images(record.images),
        credits=record.credits if status != "failed" else None,
        submissions=record.submissions,
        reused=reused,
        error=error,
        **fields,
    )


def lines_from_ledger(
    dataset: str,
    ledger: TaskLedger,
    defaults: RowDefaults,
    first: int = 1,
    last: int | None = None,
    *,
    run_id: str | None = None,
    storage_options: dict[str, Any] | None = None,
) -> Iterator[RunLine]:
    """The lines of rows ``first..last`` as the ledger tells them (a stopped run's rows).

    Rows with stored images are ``succeeded``, rows with a recorded task still running are
    ``in_flight``, rows whose submission had no recorded answer ``outcome_unknown``, rows
    never submitted ``skipped``, invalid rows ``failed``. A row's charge counts for the run
    ``run_id`` when that run made its submission (a shard's attempt that was lost).
    """
    for row in iter_rows(dataset, defaults, first, last, storage_options):
        if isinstance(row, InvalidRow):
            yield RunLine(line=invalid_line(row))
        else:
            record = ledger.load(ledger.key_for(row.row_id, row.request))
            charge = record.charge_for(run_id) if record is not None else None
            yield RunLine(
                line=line_from_record(row, record, reused=record is not None and record.run_id != run_id
                                      and record.state is LedgerState.STORED),
                spent=charge.spent if charge else 0.0,
                at_risk=charge.at_risk if charge else 0.0,
            )


def update_manifest_lines(store: ImageStore, records: Mapping[str, LedgerRecord]) -> int:
    """Rewrite the manifest lines of rows whose records changed (keyed by row id), streamed.

    A line is updated when it stands for the record's task (the same task id), or for its
    submission of unknown outcome whose task was found since (the same prompt).

    Returns:
        How many of the records are stored.
    """
    if store.exists(store.path_for(MANIFEST_NAME)):
        with store.open_atomic(MANIFEST_NAME) as out:
            for raw in iter_manifest(store):
                line = ManifestLine.model_validate(raw)
                record = records.get(line.row_id)
                if record is not None and _same_task(line, record):
                    line.status, line.error = record.status()
                    line.task_id = record.task_id
                    if line.status == "succeeded":
                        line.images, line.credits = manifest_images(record.images), record.credits
                out.write(line.model_dump_json().encode("utf-8") + b"\n")
    return sum(record.state is LedgerState.STORED for record in records.values())


def _same_task(line: ManifestLine, record: LedgerRecord) -> bool:
    if line.task_id is not None:
        return line.task_id == record.task_id
    return (
        line.status == "outcome_unknown" and line.prompt is not None
        and record.prompt_sha256 == prompt_sha256(line.prompt)
    )


class GeneratedImages(BaseModel):
    """The outcome of one request: of :func:`~prefect_seedream.tasks.generate_images`, or one of :func:`~prefect_seedream.tasks.generate_many`.

    Attributes:
        row_id: The request's id (it names the files and keys the ledger).
        status: ``succeeded``, or why not (``failed``, ``skipped``, ``outcome_unknown``,
            ``in_flight``: as in the manifest).
        task_id: The remote task that produced the images.
        images: The stored images (``image.open()`` reads one as a PIL image, from any storage).
        credits: Credits charged (or reserved, when the final charge is unknown).
        submissions: Submissions made for this row so far (across retries and runs).
        reused: True when the images were stored by an earlier run (nothing was paid now).
        error: Why the request did not succeed: the API's code and message.

    Examples:
        >>> GeneratedImages(row_id="r1", task_id=None, status="skipped").ok
        False
    """

    row_id: str
    status: RowStatus = "succeeded"
    task_id: str | None
    images: list[StoredImage] = Field(default_factory=list)
    credits: float | None = None
    submissions: int = 0
    reused: bool = False
    error: ManifestError | None = None

    @property
    def ok(self) -> bool:
        """True when the images are stored."""
        return self.status == "succeeded"

    @classmethod
    def of(cls, record: LedgerRecord, *, reused: bool) -> GeneratedImages:
        """The outcome a stored record stands for."""
        return cls(
            row_id=record.row_id, task_id=record.task_id, images=record.images,
            credits=record.credits, submissions=record.submissions, reused=reused,
        )

    @classmethod
    def of_line(cls, item: RunLine) -> GeneratedImages:
        """The outcome a run's manifest line stands for."""
        line = item.line
        return cls(
            row_id=line.row_id, status=line.status, task_id=line.task_id, images=item.stored,
            credits=line.credits, submissions=line.submissions, reused=line.reused, error=line.error,
        )
