"""A dataset run's rows: ranges of them, the pass that checks them all, their batches.

A run reads its dataset twice, streamed: pass 1 (:func:`scan_dataset`) validates every row and
adds up the most they can cost, spending nothing; pass 2 runs a :class:`RowRange` of them (all,
or a shard's) in :class:`RowBatch` es of consecutive rows, each batch one unit of observation
(a Prefect task run, in the Prefect layer).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from prefect_seedream.engine.account import AccountStop
from prefect_seedream.engine.dataset import DatasetRow, InvalidRow, RowDefaults, ValidRow, iter_rows
from prefect_seedream.engine.defaults import (
    FAILURES_LOGGED,
    MAX_ROWS_PER_TASK,
    ONE_TASK_RUN_PER_ROW_UP_TO,
    TARGET_TASK_RUNS,
)
from prefect_seedream.engine.gallery import Gallery
from prefect_seedream.engine.ledger import prompt_sha256
from prefect_seedream.engine.manifest import ROW_STATUSES, RunLine
from prefect_seedream.engine.options import RunOptions
from prefect_seedream.engine.reconcile import PromptKey, shared_prompt_keys

logger = logging.getLogger("prefect_seedream")


@dataclass(frozen=True)
class RowRange:
    """Rows ``first..last`` of a dataset (1-based, both included), as a shard gets them."""

    first: int
    last: int

    @property
    def rows(self) -> int:
        """How many rows the range holds."""
        return self.last - self.first + 1


@dataclass
class RowsReport:
    """What running rows left besides their lines (which went to the parts).

    Attributes:
        gallery: The images this process stored, for the gallery artifact.
        stop: Why submissions stopped, if an answer concerned the whole account.
        reconciled: Rows of unknown outcome whose task the API's task list showed.
    """

    gallery: Gallery = field(default_factory=Gallery)
    stop: AccountStop | None = None
    reconciled: int = 0


def scan_dataset(
    dataset: str,
    defaults: RowDefaults,
    storage_options: dict[str, Any] | None = None,
    *,
    logger: logging.Logger | logging.LoggerAdapter[Any] = logger,
) -> DatasetScan:
    """Pass 1: validate every row (streamed) and estimate the credits; spends nothing.

    Args:
        dataset: The dataset's path or URL.
        defaults: The run's defaults for what rows leave out.
        storage_options: fsspec options of the dataset's storage.
        logger: Where invalid rows and the totals are logged (a run's logger).

    Examples:
        >>> import tempfile, pathlib
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "rows.csv"
        >>> _ = path.write_text(chr(10).join(["id,prompt", "a,a red fox", "b,"]))
        >>> scan = scan_dataset(str(path), RunOptions().row_defaults())
        >>> scan.rows, scan.invalid, scan.estimated_credits
        (2, 1, 2.5)
    """
    scan = DatasetScan()
    for row in iter_rows(dataset, defaults, storage_options=storage_options):
        scan.rows += 1
        if isinstance(row, InvalidRow):
            scan.invalid += 1
            if scan.invalid <= FAILURES_LOGGED:
                logger.warning("Row %s (line %d) is invalid: %s", row.row_id, row.number, row.reason)
        else:
            scan.estimated_credits += row.request.reserved_credits
    logger.info(
        "Dataset %s: %d rows, %d invalid; at most %g credits",
        dataset, scan.rows, scan.invalid, scan.estimated_credits,
    )
    return scan


@dataclass
class DatasetScan:
    """What pass 1 found: rows, invalid rows, the most the valid ones can cost."""

    rows: int = 0
    invalid: int = 0
    estimated_credits: float = 0.0


def dataset_shared_prompts(dataset: str, options: RunOptions) -> set[PromptKey]:
    """The (prompt sha256, model) pairs of the whole dataset (every shard's rows) that several
    rows have: a lost answer of such a row is never matched by its prompt alone."""
    rows = iter_rows(dataset, options.row_defaults(), storage_options=options.dataset_storage_options)
    return shared_prompt_keys(
        (prompt_sha256(row.request.prompt), row.request.model) for row in rows if isinstance(row, ValidRow)
    )


def rows_per_task_for(total_rows: int, requested: int | None = None) -> int:
    """How many rows one task run handles.

    Examples:
        >>> rows_per_task_for(14), rows_per_task_for(1000), rows_per_task_for(10_000)
        (1, 20, 200)
        >>> rows_per_task_for(10_000, requested=1)
        1
    """
    if requested is not None:
        return max(1, requested)
    if total_rows <= ONE_TASK_RUN_PER_ROW_UP_TO:
        return 1
    return min(MAX_ROWS_PER_TASK, math.ceil(total_rows / TARGET_TASK_RUNS))


@dataclass
class RowBatch:
    """Consecutive rows handled by one task run.

    Attributes:
        rows: The rows, in input order.
    """

    rows: list[DatasetRow] = field(default_factory=list)

    @property
    def first(self) -> int:
        """Number of the first row."""
        return self.rows[0].number

    @property
    def last(self) -> int:
        """Number of the last row."""
        return self.rows[-1].number

    @property
    def label(self) -> str:
        """The task run's name: the row's id for one row, the row range for a batch."""
        if len(self.rows) == 1:
            return f"row-{self.rows[0].row_id}"[:100]
        return f"rows-{self.first}-{self.last}"


def batches_of(rows: Iterable[DatasetRow], size: int) -> Iterator[RowBatch]:
    """Group a stream of rows into batches of ``size`` consecutive rows."""
    batch = RowBatch()
    for row in rows:
        batch.rows.append(row)
        if len(batch.rows) == size:
            yield batch
            batch = RowBatch()
    if batch.rows:
        yield batch


def row_counts(items: list[RunLine]) -> dict[str, int]:
    """How many of the rows ended in each status (every status, zero included)."""
    counts = dict.fromkeys(ROW_STATUSES, 0)
    for item in items:
        counts[item.line.status] += 1
    return counts


def row_message(item: RunLine) -> str:
    """A one-row task run's state message: its outcome, and the API's code and message.

    Examples:
        >>> from prefect_seedream.engine.manifest import ManifestError, ManifestLine
        >>> line = ManifestLine(row_id="r", row_number=1, prompt="p", model=None, status="failed",
        ...                     error=ManifestError(code="content_policy_violation", message="refused"))
        >>> row_message(RunLine(line=line))
        'failed: content_policy_violation: refused'
    """
    line = item.line
    if line.error is None or line.status == "succeeded":
        return f"1 {line.status.replace('_', ' ')}"
    return f"{line.status.replace('_', ' ')}: {line.error.code}: {line.error.message}"[:500]
