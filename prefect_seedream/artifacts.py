"""What a person sees in the Prefect UI: progress, a summary, the rows and a gallery.

Four artifacts tell a run's story, whatever the entry point (see :mod:`prefect_seedream.story`
for their keys), and each stays bounded whatever the dataset's size:

* ``<prefix>-progress``: rows finished, updated in place (at most every few seconds);
* ``<prefix>-summary``: a table of counts by outcome (they are the manifest's), credits,
  images, and where the manifest is;
* ``<prefix>-rows``: the rows, those that did not succeed first (row id, status, the API's
  code and message, what to run next, remote task id), at most ``ROWS_TABLE_LIMIT`` of them
  (failures first, up to ``FAILED_ROWS_SHOWN``); its description names the manifest for
  the rest;
* ``<prefix>-gallery``: thumbnails of the first ``GALLERY_LIMIT`` images.

The prefix is ``seedream`` for the dataset flow unless its ``artifact_key`` says otherwise.

An image in an artifact is loaded by the *browser*, so a local path or an ``s3://`` URI would
show as a broken image. The gallery therefore embeds small ``data:`` thumbnails, whatever the
storage, and names each image's real location under it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from prefect.artifacts import (
    acreate_markdown_artifact,
    acreate_progress_artifact,
    acreate_table_artifact,
    aupdate_progress_artifact,
)

from prefect_seedream.engine.defaults import (
    FAILED_ROWS_SHOWN,
    GALLERY_LIMIT,
    PROGRESS_UPDATE_SECONDS,
    ROWS_TABLE_LIMIT,
)
from prefect_seedream.engine.gallery import Gallery
from prefect_seedream.engine.manifest import ROW_STATUSES, ManifestLine
from prefect_seedream.engine.summary import DatasetRunSummary, next_step_for

#: The dataset flow's default prefix: its keys are ``seedream-progress``, ``seedream-summary``,
#: ``seedream-rows`` and ``seedream-gallery``.
DEFAULT_PREFIX = "seedream"


@dataclass(frozen=True)
class StoryKeys:
    """The keys of a run's four artifacts, all derived from one prefix.

    A key names one artifact whose versions are kept: a deployment that runs daily with the
    same prefix keeps the history of each artifact under one key.

    Examples:
        >>> keys = StoryKeys("seedream-posters")
        >>> keys.progress, keys.summary, keys.rows, keys.gallery
        ('seedream-posters-progress', 'seedream-posters-summary', 'seedream-posters-rows', 'seedream-posters-gallery')
    """

    prefix: str = DEFAULT_PREFIX

    @property
    def progress(self) -> str:
        """Key of the progress artifact."""
        return f"{self.prefix}-progress"

    @property
    def summary(self) -> str:
        """Key of the summary table."""
        return f"{self.prefix}-summary"

    @property
    def rows(self) -> str:
        """Key of the rows table."""
        return f"{self.prefix}-rows"

    @property
    def gallery(self) -> str:
        """Key of the gallery."""
        return f"{self.prefix}-gallery"


class ProgressArtifact:
    """A progress artifact updated in place as rows finish (at most every few seconds).

    A run creates it (:meth:`create`), calls :meth:`advance` as each row finishes and
    :meth:`finish` at its end.
    """

    def __init__(self, artifact_id: UUID, total: int, every: float = PROGRESS_UPDATE_SECONDS) -> None:
        self.artifact_id = artifact_id
        self.total = max(total, 1)
        self.done = 0
        self.every = every
        self._last_update = time.monotonic()
        self._pending: asyncio.Task[Any] | None = None

    @classmethod
    async def create(
        cls, total: int, description: str = "Rows finished", key: str | None = None
    ) -> ProgressArtifact:
        """Create the artifact at 0 % (``key=None``: an unkeyed one)."""
        artifact_id = await acreate_progress_artifact(0.0, key=key, description=description)
        return cls(artifact_id, total)

    @property
    def percent(self) -> float:
        """Rows finished, in percent."""
        return round(100.0 * min(self.done, self.total) / self.total, 1)

    def advance(self, rows: int = 1) -> None:
        """Count finished rows; update the artifact in the background, at most every few seconds.

        Rows never wait for the API: an update still in flight is not doubled.
        """
        self.set_done(self.done + rows)

    def set_done(self, done: int) -> None:
        """Set how many rows are finished (a sharded run's parent reads it from its shards)."""
        self.done = done
        now = time.monotonic()
        if now - self._last_update >= self.every and (self._pending is None or self._pending.done()):
            self._last_update = now
            self._pending = asyncio.create_task(
                aupdate_progress_artifact(self.artifact_id, self.percent)
            )

    async def finish(self) -> None:
        """Write the final figure (after any update still in flight)."""
        if self._pending is not None:
            await asyncio.gather(self._pending, return_exceptions=True)
        await aupdate_progress_artifact(self.artifact_id, self.percent)


def row_table(lines: Iterable[ManifestLine]) -> list[dict[str, Any]]:
    """Table rows for lines: row, status, the API's code and message, next step, task id, ...

    Examples:
        >>> from prefect_seedream.engine.manifest import ManifestError
        >>> line = ManifestLine(row_id="a", row_number=1, prompt="x", model=None, status="failed",
        ...     task_id="task-1", error=ManifestError(code="content_policy_violation", message="no"))
        >>> row = row_table([line])[0]
        >>> row["row"], row["code"], row["message"], row["task id"]
        ('a', 'content_policy_violation', 'no', 'task-1')
    """
    return [
        {
            "row": line.row_id,
            "status": line.status,
            "code": line.error.code if line.error else "",
            "message": line.error.message if line.error else "",
            "task id": line.task_id or "",
            "next step": next_step_for(line),
            "line": line.row_number,
            "images": len(line.images),
            "credits": line.credits if line.credits is not None else "",
        }
        for line in lines
    ]


class RunTables:
    """Collects what the rows table and the gallery show while the manifest is written, in
    bounded memory: the first rows that did not succeed, the first others, the first images.

    Examples:
        >>> tables = RunTables()
        >>> for number, status in enumerate(["succeeded", "failed", "succeeded"], 1):
        ...     tables.add(ManifestLine(row_id=f"r{number}", row_number=number, prompt="x",
        ...                             model=None, status=status))
        >>> [row["row"] for row in tables.table()]
        ['r2', 'r1', 'r3']
    """

    def __init__(self, limit: int = ROWS_TABLE_LIMIT, failures_limit: int = FAILED_ROWS_SHOWN) -> None:
        self.limit = limit
        self.failures_limit = min(failures_limit, limit)
        self.rows_total = 0
        self.failures_total = 0
        self.failures: list[ManifestLine] = []
        self.others: list[ManifestLine] = []
        #: The first lines with images (enough for a gallery made from the manifest).
        self.gallery_lines: list[ManifestLine] = []

    def add(self, line: ManifestLine) -> None:
        """See one line of the manifest."""
        self.rows_total += 1
        if line.images and len(self.gallery_lines) < GALLERY_LIMIT:
            self.gallery_lines.append(line)
        if line.status != "succeeded":
            self.failures_total += 1
            if len(self.failures) < self.failures_limit:
                self.failures.append(line)
        elif len(self.others) < self.limit:
            self.others.append(line)

    def shown(self) -> list[ManifestLine]:
        """The lines the table lists: failures first, then the others, at most ``limit``."""
        return (self.failures + self.others)[: self.limit]

    def table(self) -> list[dict[str, Any]]:
        """The table's rows."""
        return row_table(self.shown())

    def description(self, where: str | None) -> str:
        """What the table holds, and where the rest is."""
        shown = len(self.shown())
        text = f"{self.rows_total} row(s), {self.failures_total} did not succeed (listed first)"
        if shown < self.rows_total:
            text += f"; {shown} shown, every row is in {where or 'the manifest'}"
        return text

    async def publish(self, summary: DatasetRunSummary, keys: StoryKeys) -> None:
        """Create the summary and rows artifacts."""
        await publish_summary(summary, keys.summary)
        await acreate_table_artifact(
            self.table(), key=keys.rows, description=self.description(summary.manifest)
        )


def summary_table(summary: DatasetRunSummary, where: tuple[str, str] | None = None) -> list[dict[str, Any]]:
    """The summary's rows: counts by outcome (the manifest's), images, credits, the manifest.

    Examples:
        >>> table = summary_table(DatasetRunSummary(rows=2, succeeded=1, failed=1, manifest="o/m.jsonl"))
        >>> table[1], table[9]
        ({'what': 'rows succeeded', 'count': 1}, {'what': 'manifest (one line per row)', 'count': 'o/m.jsonl'})
    """
    table: list[dict[str, Any]] = [{"what": "rows in all", "count": summary.rows}]
    table += [
        {"what": f"rows {status.replace('_', ' ')}", "count": getattr(summary, status)}
        for status in ROW_STATUSES
    ]
    table += [
        {"what": "images stored", "count": summary.images},
        {"what": "credits charged by this run", "count": summary.credits},
        {"what": "credits reserved that may be charged", "count": summary.credits_at_risk},
    ]
    if where is None and summary.manifest:
        where = ("manifest (one line per row)", summary.manifest)
    if where is not None:
        table.append({"what": where[0], "count": where[1]})
    # (The UI shows tables 10 rows a page: the details come after what everyone needs.)
    table += [
        {"what": "rows invalid (of the failed)", "count": summary.invalid},
        {"what": "rows stored by an earlier run (of the succeeded)", "count": summary.reused},
    ]
    if summary.contact_sheet:
        table.append({"what": "contact sheet (open it in a browser)", "count": summary.contact_sheet})
    if summary.balance is not None:
        table.append({"what": "account credits left after the run", "count": summary.balance})
    if summary.stopped is not None:
        table.append({"what": "stopped", "count": summary.stopped.sentence()})
    return table


async def publish_summary(
    summary: DatasetRunSummary, key: str, where: tuple[str, str] | None = None
) -> UUID:
    """A table of the run's counts by outcome (the manifest's), images, credits, manifest."""
    return await acreate_table_artifact(
        summary_table(summary, where), key=key, description=summary.message()
    )


async def publish_gallery(gallery: Gallery, key: str, where: str | None = None) -> UUID:
    """A markdown artifact of the gallery's thumbnails (it says so when no image was stored).

    Args:
        gallery: The images a run stored.
        key: The artifact's key (``<prefix>-gallery``).
        where: The manifest that lists every image.
    """
    return await acreate_markdown_artifact(
        gallery.markdown(where), key=key, description=f"Generated images: {gallery.total}"
    )
