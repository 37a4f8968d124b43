"""Part files of a run's manifest, and merging them into ``manifest.jsonl``.

A run (or each shard of a sharded run) handles rows in batches of consecutive rows. When a
batch is done, its lines are written to one part file, named by the batch's row range:
``.seedream/runs/<run id>/part-<first>-<last>.jsonl``. Memory stays flat in the number of
rows: only the batches in progress are held. At the end, the parts are concatenated in row
order into ``manifest.jsonl``; a range without a part (a shard that crashed, a run stopped
early) is filled from the ledger, so the manifest always has exactly one line per input row.
Parts also tell progress: listing the folder says which rows are done, on any store.

Beside the parts, the run's folder holds ``run.json`` (what the run is: its dataset, API and
options, written when it starts, read by the hooks that write a stopped run's manifest) and,
when an answer of the API stopped the run's submissions, ``stop.json`` (which every shard of
the run reads, so that one shard's "out of credits" stops them all).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from pydantic import BaseModel

from prefect_seedream.engine.account import AccountStop
from prefect_seedream.engine.manifest import MANIFEST_NAME, RunLine, iter_manifest
from prefect_seedream.engine.options import RunOptions
from prefect_seedream.engine.storage import PRIVATE_DIR, ImageStore

RUNS_DIR = f"{PRIVATE_DIR}/runs"
_PART = re.compile(r"part-(\d+)-(\d+)\.jsonl$")

#: Fills the lines of the rows ``first..last`` (both included; ``last`` None: to the end of
#: the dataset) that no part has.
GapFiller = Callable[[int, "int | None"], Iterable[RunLine]]


class RunDescription(BaseModel):
    """What a run is, written when it starts (``run.json``).

    Attributes:
        dataset: The dataset's path or URL (in-memory rows: the file they were written to).
        api: The API's normalised address (the ledger's records are kept per API).
        options: The run's options (``run.json`` holds them without fsspec options: they may
            hold credentials).
        total_rows: Rows in the dataset.
    """

    dataset: str
    api: str
    options: RunOptions
    total_rows: int


@dataclass(frozen=True, order=True)
class PartName:
    """The row range one part file covers (row numbers, both ends included)."""

    first: int
    last: int

    @property
    def file_name(self) -> str:
        """The part's file name.

        Examples:
            >>> PartName(1, 20).file_name
            'part-0000000001-0000000020.jsonl'
        """
        return f"part-{self.first:010d}-{self.last:010d}.jsonl"

    @property
    def rows(self) -> int:
        """How many rows the part covers."""
        return self.last - self.first + 1


class RunParts:
    """The part files of one run in one output.

    Args:
        store: The run's output.
        run_id: The run's id (the flow run id of the run that owns the output).

    Examples:
        >>> from prefect_seedream.engine.manifest import ManifestLine, iter_manifest_lines
        >>> def line(number: int, status: str = "succeeded") -> RunLine:
        ...     return RunLine(line=ManifestLine(row_id=f"r{number}", row_number=number,
        ...                                      prompt="p", model=None, status=status))
        >>> parts = RunParts(ImageStore("memory://docs/run-parts"), run_id="run-1")
        >>> parts.write(3, 4, [line(4), line(3)])  # a batch of rows 3-4 is done (rows 1-2 not)
        >>> parts.rows_done()
        2
        >>> uri = parts.merge(total_rows=4, fill_gap=lambda first, last: [line(n, "skipped")
        ...                   for n in range(first, last + 1)], on_line=lambda item: None)
        >>> [(item.row_id, item.status) for item in iter_manifest_lines(parts.store)]
        [('r1', 'skipped'), ('r2', 'skipped'), ('r3', 'succeeded'), ('r4', 'succeeded')]
    """

    def __init__(self, store: ImageStore, run_id: str) -> None:
        self.store = store
        self.run_id = run_id
        self.folder = f"{RUNS_DIR}/{run_id}"

    def write(self, first: int, last: int, lines: list[RunLine]) -> None:
        """Write the lines of rows ``first..last`` (any order; they are sorted by row)."""
        ordered = sorted(lines, key=lambda item: item.line.row_number)
        text = "".join(item.model_dump_json() + "\n" for item in ordered)
        self.store.write_text(f"{self.folder}/{PartName(first, last).file_name}", text)

    def names(self) -> list[PartName]:
        """The parts written so far, in row order."""
        found = []
        for path in self.store.list(self.folder):
            match = _PART.search(path)
            if match:
                found.append(PartName(int(match.group(1)), int(match.group(2))))
        return sorted(found)

    def rows_done(self) -> int:
        """How many rows the written parts cover (progress of a run, read from any process)."""
        return sum(part.rows for part in self.names())

    def lines(self, part: PartName) -> Iterator[RunLine]:
        """The lines of one part."""
        text = self.store.read_text(f"{self.folder}/{part.file_name}") or ""
        for raw in text.splitlines():
            if raw.strip():
                yield RunLine.model_validate_json(raw)

    def merge(
        self, total_rows: int | None, fill_gap: GapFiller, on_line: Callable[[RunLine], None]
    ) -> str:
        """Write ``manifest.jsonl``: every row 1..``total_rows`` once, in row order.

        Lines of an earlier manifest whose row id is not in this dataset (a run over
        another dataset into the same output) are kept after this run's lines. The
        manifest appears at once, complete (see :meth:`ImageStore.open_atomic`).

        Args:
            total_rows: Rows in the dataset (None: unknown, the gap filler reads to its end).
            fill_gap: Lines for a row range no part covers.
            on_line: Called with each of this run's lines as it is written (the summary).

        Returns:
            The manifest's URI.
        """
        ids: set[str] = set()
        with self.store.open_atomic(MANIFEST_NAME) as out:
            for item in self._all_lines(total_rows, fill_gap):
                ids.add(item.line.row_id)
                on_line(item)
                out.write(item.line.model_dump_json().encode("utf-8") + b"\n")
            for kept in iter_manifest(self.store):
                if kept.get("row_id") not in ids:
                    out.write(_json_line(kept))
        return self.store.uri_for(self.store.path_for(MANIFEST_NAME))

    def remove(self) -> None:
        """Delete the run's parts (once merged)."""
        self.store.remove_tree(self.folder)

    def describe(self, description: RunDescription) -> None:
        """Write ``run.json`` (its options without fsspec options: they may hold credentials)."""
        public = description.model_copy(update={"options": description.options.without_secrets()})
        self.store.write_text(f"{self.folder}/run.json", public.model_dump_json())

    def description(self) -> RunDescription | None:
        """The run's ``run.json``, or None when the run stopped before writing it."""
        text = self.store.read_text(f"{self.folder}/run.json")
        return RunDescription.model_validate_json(text) if text else None

    def write_stop(self, stop: AccountStop) -> bool:
        """Record why the run's submissions stopped; the first stop is kept.

        Shards may stop at once: the file is created exclusively
        (:meth:`~prefect_seedream.engine.storage.ImageStore.create_exclusive`), so exactly
        one stop is recorded and a later one never replaces it.

        Returns:
            True when this stop was recorded, False when an earlier one is kept.
        """
        return self.store.create_exclusive(f"{self.folder}/stop.json", stop.model_dump_json())

    def read_stop(self) -> AccountStop | None:
        """Why the run's submissions stopped, if they did."""
        text = self.store.read_text(f"{self.folder}/stop.json")
        return AccountStop.model_validate_json(text) if text else None

    def _all_lines(self, total_rows: int | None, fill_gap: GapFiller) -> Iterator[RunLine]:
        expected = 1
        for part in self.names():
            if part.first < expected:  # overlaps what was written: a bug, never hide it
                raise RuntimeError(f"part {part.file_name} overlaps rows already merged")
            if part.first > expected:
                yield from fill_gap(expected, part.first - 1)
            yield from self.lines(part)
            expected = part.last + 1
        if total_rows is None or expected <= total_rows:
            yield from fill_gap(expected, total_rows)


def clear_runs(store: ImageStore) -> None:
    """Remove the parts that earlier (killed) runs left behind."""
    store.remove_tree(RUNS_DIR)


def _json_line(value: dict[str, object]) -> bytes:
    return (json.dumps(value, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8")
