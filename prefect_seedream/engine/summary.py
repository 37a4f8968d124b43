"""What a dataset run did: counts by outcome, images, credits (the flow's result)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pydantic import BaseModel

from prefect_seedream.api.models import TASK_ERROR_KINDS, TaskErrorKind
from prefect_seedream.engine.account import AccountStop
from prefect_seedream.engine.guidance import next_steps, recover_hint, resubmit_unknown_hint
from prefect_seedream.engine.manifest import ManifestLine, RowStatus, RunLine, iter_manifest_lines

#: What to do next about a row, by its error code (when the code alone says it).
NEXT_STEP_BY_CODE = {
    "invalid_row": "fix the row in the dataset, then run again",
    "budget_exceeded": "raise max_credits, then run again (stored rows are not paid again)",
    "output_lock_lost": "run again once the other run on this output has ended",
    "ledger_unreadable": "look at the row's record in .seedream/tasks, then run again",
    "internal_error": "run again (the row resumes); report the message if it repeats",
}


def next_step_for(line: ManifestLine) -> str:
    """What to run next about a row that did not succeed (empty for one that did).

    Examples:
        >>> from prefect_seedream.engine.manifest import ManifestError
        >>> def line(status, code=""):
        ...     error = ManifestError(code=code, message="m") if code else None
        ...     return ManifestLine(row_id="r", row_number=1, prompt="p", model=None,
        ...                         status=status, error=error)
        >>> next_step_for(line("succeeded"))
        ''
        >>> next_step_for(line("failed", "content_policy_violation"))
        'change the prompt or its images (the API refused the request; it is not sent again as it is)'
        >>> next_step_for(line("failed", "service_error"))
        'run again: the row is submitted anew (the service failed, not the request)'
        >>> next_step_for(line("in_flight"))
        'collect it with `prefect-seedream recover OUTPUT` (flow seedream-recover-dataset): nothing is paid again'
        >>> next_step_for(line("outcome_unknown")).startswith("re-run with --resubmit-unknown")
        True
    """
    if line.status == "succeeded":
        return ""
    if line.status == "in_flight":
        return recover_hint(what="it")
    if line.status == "outcome_unknown":
        return resubmit_unknown_hint()
    code = line.error.code if line.error else ""
    if code in NEXT_STEP_BY_CODE:
        return NEXT_STEP_BY_CODE[code]
    if line.status == "skipped":
        return "fix what the summary says stopped the run (the account), then run again"
    kind = TASK_ERROR_KINDS.get(code)
    if kind is TaskErrorKind.REQUEST:
        return "change the prompt or its images (the API refused the request; it is not sent again as it is)"
    if kind is not None:
        return "run again: the row is submitted anew (the service failed, not the request)"
    return "see the message, then run again (stored rows are not paid again)"


class DatasetRunSummary(BaseModel):
    """What a dataset run did (the flow's result). Its counts are the manifest's.

    Attributes:
        rows: Input rows (each has one manifest line).
        succeeded: Rows with stored images (``reused`` of them stored by an earlier run).
        failed: Rows that failed (``invalid`` of them invalid rows).
        outcome_unknown: Rows whose submission may have been billed with no answer recorded.
        in_flight: Rows whose remote task was still running when the run stopped waiting.
        skipped: Rows not submitted (budget reached, or the run stopped first).
        images: Images stored for this run's rows.
        credits: Credits this run was charged.
        credits_at_risk: Credits this run reserved that may still be charged (tasks in
            flight, submissions whose outcome is unknown).
        estimated_credits: The most the dataset can cost (every valid row's pre-charge).
        dry_run: True when nothing was submitted on purpose.
        manifest: The manifest's URI.
        contact_sheet: The URI of the output's ``index.html`` (every row with its thumbnails,
            the failures first), or None when it could not be written.
        stopped: Why the run stopped submitting, when an answer of the API concerned the
            whole account (out of credits, key refused, ...) or the balance read before the
            run was below its estimate: the rows not submitted are ``skipped``, and the same
            command finishes them once the cause is fixed.
        balance_before: The account's credits before the run (None: not read, or unknown).
        balance: The account's credits after the run (a dry run: now).

    Examples:
        ```python
        from prefect_seedream import generate_dataset

        rows = [{"id": "fox", "prompt": "A red fox"}, {"id": "owl", "prompt": "An owl"}]
        state = generate_dataset(rows, output="out", return_state=True)
        summary = state.result(raise_on_failure=False)
        print(summary.succeeded, summary.images, summary.credits)
        for line in summary.lines():  # read lazily from the manifest
            print(line.row_id, line.status, [image.uri for image in line.images])
        ```
    """

    rows: int = 0
    succeeded: int = 0
    failed: int = 0
    invalid: int = 0
    outcome_unknown: int = 0
    in_flight: int = 0
    skipped: int = 0
    reused: int = 0
    images: int = 0
    credits: float = 0.0
    credits_at_risk: float = 0.0
    estimated_credits: float = 0.0
    dry_run: bool = False
    manifest: str | None = None
    contact_sheet: str | None = None
    stopped: AccountStop | None = None
    balance_before: float | None = None
    balance: float | None = None

    def add(self, item: RunLine) -> None:
        """Count one row's outcome (as written to the manifest).

        Examples:
            >>> from prefect_seedream.engine.manifest import ManifestLine
            >>> summary = DatasetRunSummary()
            >>> summary.add(RunLine(line=ManifestLine(row_id="a", row_number=1, prompt="x",
            ...     model=None, status="succeeded"), spent=2.0))
            >>> summary.rows, summary.succeeded, summary.credits
            (1, 1, 2.0)
        """
        line = item.line
        self.rows += 1
        self._count(line.status)
        if line.error is not None and line.error.code == "invalid_row":
            self.invalid += 1
        self.images += len(line.images)
        self.reused += line.reused
        self.credits = round(self.credits + item.spent, 6)
        self.credits_at_risk = round(self.credits_at_risk + item.at_risk, 6)

    def _count(self, status: RowStatus) -> None:
        setattr(self, status, getattr(self, status) + 1)

    @property
    def not_succeeded(self) -> int:
        """Rows that did not end with stored images."""
        return self.rows - self.succeeded

    def next_steps(self) -> list[str]:
        """What the user should run next, one hint per kind of unfinished row."""
        return next_steps(self.outcome_unknown, self.in_flight)

    def lines(
        self, storage_options: dict[str, Any] | None = None, *, status: RowStatus | None = None
    ) -> Iterator[ManifestLine]:
        """The run's rows, one :class:`~prefect_seedream.engine.manifest.ManifestLine` each, read
        lazily from its manifest (a run of 100,000 rows is never loaded at once).

        Args:
            storage_options: fsspec options of the output (not kept in the summary).
            status: Only the rows of this status.
        """
        if self.manifest is None:
            return
        for line in iter_manifest_lines(self.manifest.rsplit("/", 1)[0], storage_options, limit=self.rows):
            if status is None or line.status == status:
                yield line

    def message(self) -> str:
        """One line for the flow run's state."""
        prefix = f"{self.stopped.sentence()} " if self.stopped is not None else ""
        parts = [f"{prefix}{self.succeeded} of {self.rows} rows succeeded"]
        for status in ("failed", "outcome_unknown", "in_flight", "skipped"):
            if getattr(self, status):
                parts.append(f"{getattr(self, status)} {status.replace('_', ' ')}")
        text = ", ".join(parts) + f"; {self.images} images, {self.credits:g} credits"
        if self.credits_at_risk:
            text += f" (+{self.credits_at_risk:g} reserved, may be charged)"
        if self.balance is not None:
            text += f"; {self.balance:g} credits left"
        if self.manifest:
            text += f"; see {self.manifest}"
        for hint in self.next_steps():
            text += f". {hint}"
        return text
