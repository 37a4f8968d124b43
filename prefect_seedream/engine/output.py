"""The output of a run, opened once: its store, and what lives in it.

A run names its output as a string (a folder or an fsspec URL) and its fsspec options;
:meth:`Output.open` turns them into an :class:`Output` once, at the start of the run, and that
one value goes down to everything the run does there: the images and the ledger of an API
(:meth:`Output.ledger`), the output's lock (:meth:`Output.lock`), the run's folder
(:meth:`Output.run_folder`: its ``run.json``, part files and stop), the rows written from
memory (:meth:`Output.spill`). The hooks of a stopped run open it again from the flow run's
parameters and read the rest from its ``run.json``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from prefect_seedream.engine.ledger import TaskLedger
from prefect_seedream.engine.output_lock import OutputLock, check_held_by
from prefect_seedream.engine.run_folder import RunParts, clear_runs
from prefect_seedream.engine.sources import spill_rows
from prefect_seedream.engine.storage import ImageStore


@dataclass(frozen=True)
class Output:
    """A run's output: where its images, ledger, manifest and run folders are.

    Attributes:
        uri: The output as the run was given it (a path or fsspec URL; what shards are given).
        store: The output's storage (fsspec options included).

    Examples:
        >>> import tempfile
        >>> output = Output.open(tempfile.mkdtemp())
        >>> output.run_folder("run-1").folder, output.ledger("http://127.0.0.1:8787").api
        ('.seedream/runs/run-1', 'http://127.0.0.1:8787')
        >>> output.run_folder("run-1").store is output.store
        True
    """

    uri: str
    store: ImageStore

    @classmethod
    def open(cls, uri: str, storage_options: dict[str, Any] | None = None) -> Output:
        """The output at ``uri`` (created if missing), with the fsspec options to reach it."""
        return cls(uri=str(uri), store=ImageStore(uri, storage_options))

    def ledger(self, api: str) -> TaskLedger:
        """The ledger of one API's records (``SeedreamClient.identity``) in this output."""
        return TaskLedger(self.store, api)

    def run_folder(self, run_id: str) -> RunParts:
        """The folder of the run ``run_id``: its ``run.json``, part files and stop."""
        return RunParts(self.store, run_id)

    def lock(self, run_id: str) -> OutputLock:
        """The output's lock, to be held by the run ``run_id`` (``async with``)."""
        return OutputLock(self.store, run_id)

    def check_held_by(self, run_id: str) -> None:
        """Raise :class:`~prefect_seedream.engine.output_lock.OutputLockedError` unless the run
        ``run_id`` holds the output (a shard works under its parent's lock)."""
        check_held_by(self.store, run_id)

    def spill(self, rows: Any) -> str:
        """Write rows held in memory into the output once (see
        :func:`~prefect_seedream.engine.sources.spill_rows`); returns the file's URI."""
        return spill_rows(rows, self.store)

    def clear_leftovers(self) -> None:
        """Remove what killed runs left: temporary files and unmerged parts (the ledger keeps
        the facts)."""
        self.store.clear_temporary()
        clear_runs(self.store)
