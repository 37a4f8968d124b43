"""What a run's report shows: its artifacts' keys, the summary table, the rows table.

Keys: see :mod:`prefect_seedream.story` for how a call's prefix is chosen and claimed.

Built from manifest lines and the run's summary, in bounded memory, with no Prefect: the Prefect
layer (:mod:`prefect_seedream.artifacts`) publishes them as the run's artifacts, and the command
line and the contact sheet read the same counts.
"""

from __future__ import annotations

import re
import shlex
import threading
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from prefect_seedream.engine.defaults import FAILED_ROWS_SHOWN, GALLERY_LIMIT, ROWS_TABLE_LIMIT
from prefect_seedream.engine.guidance import (
    outcome_unknown_guidance,
    recover_command,
    recover_hint,
    resubmit_command,
)
from prefect_seedream.engine.manifest import ROW_STATUSES, ManifestLine
from prefect_seedream.engine.summary import DatasetRunSummary, next_step_for

#: The dataset flow's default prefix: its keys are ``seedream-progress``, ``seedream-summary``,
#: ``seedream-rows`` and ``seedream-gallery``.
DEFAULT_PREFIX = "seedream"


#: Longest prefix kept (the keys add ``-summary`` and a call's ``-N``).
PREFIX_LENGTH = 48
#: Flow runs whose claimed prefixes a process remembers (a served flow runs many).
REMEMBERED_RUNS = 256


def key_prefix(text: str) -> str:
    """A valid artifact key prefix (lowercase letters, digits and dashes) from any text.

    Examples:
        >>> key_prefix("Seedream Posters_2026"), key_prefix("!!!")
        ('seedream-posters-2026', 'seedream')
    """
    words = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return words[:PREFIX_LENGTH].rstrip("-") or DEFAULT_PREFIX


def destination_prefix(destination: str) -> str:
    """The default prefix of a call writing into ``destination``: its last part.

    Examples:
        >>> destination_prefix("s3://bucket/renders/posters/"), destination_prefix("/")
        ('seedream-posters', 'seedream')
    """
    name = destination.rstrip("/").rsplit("/", 1)[-1]
    return key_prefix(f"{DEFAULT_PREFIX}-{name}" if name else DEFAULT_PREFIX)


class ClaimedPrefixes:
    """The prefixes each recent flow run has used (thread-safe: ``.map`` runs in threads).

    Examples:
        >>> claimed = ClaimedPrefixes()
        >>> claimed.claim("run-1", "seedream"), claimed.claim("run-1", "seedream")
        ('seedream', 'seedream-2')
        >>> claimed.claim("run-2", "seedream")
        'seedream'
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._runs: OrderedDict[str, set[str]] = OrderedDict()

    def claim(self, scope: str, prefix: str) -> str:
        """``prefix`` the first time in ``scope``, then ``prefix-2``, ``prefix-3``, ..."""
        with self._lock:
            used = self._runs.setdefault(scope, set())
            self._runs.move_to_end(scope)
            while len(self._runs) > REMEMBERED_RUNS:
                self._runs.popitem(last=False)
            candidate, number = prefix, 2
            while candidate in used:
                candidate, number = f"{prefix}-{number}", number + 1
            used.add(candidate)
            return candidate


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


def summary_text(
    summary: DatasetRunSummary, *, output: str, arguments: Sequence[str], state: str
) -> str:
    """The summary as the command line prints it: counts, credits, balance, where the manifest
    and the contact sheet are, and the exact commands that finish what is unfinished.

    Args:
        summary: The run's summary.
        output: The run's output (the recover command names it).
        arguments: The command's arguments (a stopped run is run again with them).
        state: How the run ended, e.g. ``Completed: 2 rows succeeded``.

    Examples:
        >>> summary = DatasetRunSummary(rows=3, succeeded=2, in_flight=1, images=2, credits=5.0,
        ...                             manifest="out/manifest.jsonl")
        >>> print(summary_text(summary, output="out", arguments=["run", "rows.csv"], state="Failed: 1 in flight"))
        Rows:       3 (0 invalid)
        Succeeded:  2 (0 already stored by an earlier run)
        Failed:     0
        In flight:  1
        Images:     2
        Credits:    5
        Manifest:   out/manifest.jsonl
        Run state:  Failed: 1 in flight
        <BLANKLINE>
        1 task(s) are still in flight; collect them with the command below: nothing is paid again.
          prefect-seedream recover out
    """
    lines = [f"Rows:       {summary.rows} ({summary.invalid} invalid)"]
    if summary.dry_run:
        lines.append(f"Estimate:   at most {summary.estimated_credits:g} credits (dry run: nothing submitted)")
        lines.append(f"Balance:    {balance_text(summary.balance)}")
        return "\n".join(lines)
    lines.append(f"Succeeded:  {summary.succeeded} ({summary.reused} already stored by an earlier run)")
    lines.append(f"Failed:     {summary.failed}")
    for label, value in (("Unknown outcome", summary.outcome_unknown), ("In flight", summary.in_flight),
                         ("Skipped", summary.skipped)):
        if value:
            lines.append(f"{label + ':':<12}{value}")
    lines.append(f"Images:     {summary.images}")
    credits = f"{summary.credits:g}"
    if summary.credits_at_risk:
        credits += f" (+{summary.credits_at_risk:g} reserved by submissions that may be charged)"
    lines.append(f"Credits:    {credits}")
    if summary.balance is not None:
        lines.append(f"Balance:    {balance_text(summary.balance)} after the run")
    lines.append(f"Manifest:   {summary.manifest}")
    if summary.contact_sheet:
        lines.append(f"Contact sheet: {summary.contact_sheet} (open it in a browser)")
    lines.append(f"Run state:  {state}")
    if summary.stopped is not None:
        lines += ["", summary.stopped.sentence(), f"  {shlex.join(['prefect-seedream', *arguments])}"]
    if summary.outcome_unknown:
        guidance = outcome_unknown_guidance("the command below")
        lines += ["", f"{summary.outcome_unknown} row(s) have an unknown outcome: {guidance}.",
                  f"  {resubmit_command(arguments)}"]
    if summary.in_flight:
        lines += ["", f"{summary.in_flight} task(s) are still in flight; {recover_hint('the command below')}.",
                  f"  {recover_command(output)}"]
    return "\n".join(lines)


def balance_text(balance: float | None) -> str:
    """The account's balance as the command line says it.

    Examples:
        >>> balance_text(12.5), balance_text(None)[:9]
        ('12.5 credits', 'not known')
    """
    if balance is None:
        return "not known (the account reports no limit, or GET /v1/credits did not answer)"
    return f"{balance:g} credits"
