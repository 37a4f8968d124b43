"""One story per run in the Prefect UI, whatever the entry point.

The dataset flow, :func:`~prefect_seedream.tasks.generate_many`, the calls of
:func:`~prefect_seedream.tasks.generate_images` (and its ``.map``) in a flow run, and a
sharded run's parent all show the same four artifacts (see :mod:`prefect_seedream.artifacts`):
progress, a summary, the rows with the failures first, and a gallery. Nothing is written per
batch: a batch's task run says its counts in its state's message.

Keys. An artifact key names one artifact whose versions Prefect keeps: the same key written
again is a new version of the same artifact, and the artifact's page shows its history. So
the four keys come from one prefix, derived from the call:

* the dataset flow: ``seedream`` (``seedream-summary``, ...), or its ``artifact_key``;
* ``generate_many`` and ``generate_images``: ``seedream-<last part of the destination>``
  (``generate_many(requests, "out/posters")`` writes ``seedream-posters-summary``, ...), or
  their ``artifact_key``.

Within one flow run a prefix is used once: a second call with the same prefix gets ``-2``
(``seedream-posters-2-summary``), a third ``-3``, in the order of the calls, so that a flow
calling ``generate_many`` twice shows two sets, and a deployment running that flow daily
keeps each set's history under the same keys. The ``generate_images`` calls of one flow run
that share a prefix share one set, updated as each call ends.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import OrderedDict
from typing import Any
from uuid import UUID

from prefect.artifacts import (
    acreate_markdown_artifact,
    acreate_progress_artifact,
    acreate_table_artifact,
    aupdate_progress_artifact,
)
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import ArtifactUpdate
from prefect.runtime import flow_run, task_run

from prefect_seedream.artifacts import publish_gallery, publish_tables
from prefect_seedream.engine.gallery import Gallery
from prefect_seedream.engine.manifest import RunLine
from prefect_seedream.engine.run_report import (
    REMEMBERED_RUNS,
    ClaimedPrefixes,
    RunTables,
    StoryKeys,
    key_prefix,
    summary_table,
)
from prefect_seedream.engine.storage import ImageStore
from prefect_seedream.engine.summary import DatasetRunSummary
from prefect_seedream.events import emit_dataset_event

logger = logging.getLogger("prefect_seedream")


_claimed = ClaimedPrefixes()


def _run_scope() -> str:
    """The flow run a call belongs to (or its task run, run outside any flow)."""
    return str(flow_run.id or task_run.id or "")


def claim_story_keys(prefix: str) -> StoryKeys:
    """The keys of a call's artifacts: ``prefix``'s, or ``prefix-N``'s when this flow run
    already used it (see the module docstring).

    Examples:
        >>> claim_story_keys("seedream-doc").prefix, claim_story_keys("seedream-doc").prefix
        ('seedream-doc', 'seedream-doc-2')
    """
    return StoryKeys(_claimed.claim(_run_scope(), key_prefix(prefix)))


async def publish_run_story(
    summary: DatasetRunSummary, tables: RunTables, gallery: Gallery, store: ImageStore, keys: StoryKeys
) -> None:
    """The end of a run's story: the summary, the rows table and the gallery (the progress
    artifact was written while it ran). The dataset flow and ``generate_many`` both end here.
    """
    await publish_tables(tables, summary, keys)
    await fill_gallery(gallery, tables, store)
    gallery.total = max(gallery.total, summary.images)  # rows stored earlier count too
    await publish_gallery(gallery, keys.gallery, summary.manifest)


async def fill_gallery(gallery: Gallery, tables: RunTables, store: ImageStore) -> None:
    """When this process stored no image (a sharded run, rows stored by an earlier run), the
    gallery shows the manifest's first images, with thumbnails made now."""
    if gallery.shown:
        return
    for line in tables.gallery_lines:
        for image in line.images:
            if gallery.wants_more():
                thumbnail = await store.call(store.thumbnail_of, image.uri)
                if thumbnail:
                    gallery.add_thumbnail(line.row_id, image, thumbnail)


def emit_run_end_event(summary: DatasetRunSummary, *, dataset: str, output: str) -> None:
    """``seedream.dataset.completed`` (every row succeeded) or ``seedream.dataset.failed``
    when a run of rows ends (the dataset flow, a ``generate_many`` call), with its counts:
    what an automation reacts to (see ``docs/run-page.md``)."""
    emit_dataset_event(
        not summary.not_succeeded,
        dataset=dataset,
        output=output,
        payload={
            **summary.model_dump(include={
                "rows", "succeeded", "failed", "in_flight", "outcome_unknown", "skipped", "credits",
                "images", "manifest",
            }),
            "stopped": summary.stopped.code if summary.stopped else None,
        },
    )


class CallStory:
    """The story of the ``generate_images`` calls of one flow run that share a prefix.

    Each call counts itself when it starts and adds its outcome when it ends; the four
    artifacts are created by the first call to end and updated in place by the later ones
    (one update at a time; a call ending meanwhile leaves its outcome to that update's next
    round, so the last outcome is always published).

    Args:
        keys: The artifacts' keys.
        where: What the summary names as the place of every outcome (the ledger).
    """

    def __init__(self, keys: StoryKeys, where: str) -> None:
        self.keys = keys
        self.where = where
        self.summary = DatasetRunSummary()
        self.tables = RunTables()
        self.gallery = Gallery()
        self.started = 0
        self._lock = threading.Lock()
        self._ids: dict[str, UUID] = {}
        self._publishing = False
        self._dirty = False

    def start(self) -> int:
        """Count a call that started; returns its number (1-based) in the story."""
        with self._lock:
            self.started += 1
            return self.started

    def wants_thumbnails(self) -> bool:
        """Whether the gallery still shows the next images."""
        with self._lock:
            return self.gallery.wants_more()

    async def finish(self, item: RunLine) -> None:
        """Add a call's outcome and publish the story (never raises: the call's own outcome
        matters more than what the UI shows of it)."""
        with self._lock:
            self.summary.add(item)
            self.tables.add(item.line)
            for image in item.stored:
                self.gallery.add(item.line.row_id, image)
            if self._publishing:
                self._dirty = True
                return
            self._publishing = True
        try:
            while True:
                await self._publish()
                with self._lock:
                    if not self._dirty:
                        break
                    self._dirty = False
        except Exception as exc:
            logger.warning("The artifacts %s-* could not be written: %r", self.keys.prefix, exc)
        finally:
            with self._lock:
                self._publishing = False

    def _snapshot(self) -> dict[str, Any]:
        with self._lock:
            done, started = self.summary.rows, max(self.started, self.summary.rows)
            return {
                "progress": round(100.0 * done / started, 1),
                "summary": summary_table(self.summary, ("ledger (every call's record)", self.where)),
                "summary_text": self.summary.message(),
                "rows": self.tables.table(),
                "rows_text": self.tables.description(self.where),
                "gallery": self.gallery.markdown(self.where),
                "gallery_text": f"Generated images: {self.gallery.total}",
            }

    async def _publish(self) -> None:
        view = self._snapshot()
        keys = self.keys
        if not self._ids:
            self._ids = {
                "progress": await acreate_progress_artifact(
                    view["progress"], key=keys.progress, description="Calls finished"),
                "summary": await acreate_table_artifact(
                    view["summary"], key=keys.summary, description=view["summary_text"]),
                "rows": await acreate_table_artifact(
                    view["rows"], key=keys.rows, description=view["rows_text"]),
                "gallery": await acreate_markdown_artifact(
                    view["gallery"], key=keys.gallery, description=view["gallery_text"]),
            }
            return
        await aupdate_progress_artifact(self._ids["progress"], view["progress"])
        async with get_client() as client:
            for name, data in (
                ("summary", json.dumps(view["summary"])), ("rows", json.dumps(view["rows"])),
                ("gallery", view["gallery"]),
            ):
                await client.update_artifact(
                    self._ids[name], ArtifactUpdate(data=data, description=view[f"{name}_text"])
                )


class _CallStories:
    """The call stories of recent flow runs, by (flow run, prefix)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._stories: OrderedDict[tuple[str, str], CallStory] = OrderedDict()

    def story_for(self, prefix: str, where: str) -> CallStory:
        scope = (_run_scope(), key_prefix(prefix))
        with self._lock:
            story = self._stories.get(scope)
            if story is None:
                story = self._stories[scope] = CallStory(claim_story_keys(prefix), where)
                while len(self._stories) > REMEMBERED_RUNS:
                    self._stories.popitem(last=False)
            return story


_stories = _CallStories()


def call_story(prefix: str, where: str) -> CallStory:
    """The story the ``generate_images`` calls of this flow run with this prefix share.

    Examples:
        >>> call_story("seedream-doc-calls", "out/.seedream/tasks") is call_story(
        ...     "seedream-doc-calls", "out/.seedream/tasks")
        True
    """
    return _stories.story_for(prefix, where)

