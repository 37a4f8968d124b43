"""The engine: what a row goes through, from a validated request to its manifest line.

The ledger, submit / wait / store (:mod:`~prefect_seedream.engine.generation`), a row's retries
and outcome (:mod:`~prefect_seedream.engine.runner`), the run's
:class:`~prefect_seedream.engine.output.Output` (its store, ledger, lock and run folder), the
budget, the account gate, reconciliation, datasets and the manifest. It knows no Prefect: it
reports through :class:`~prefect_seedream.engine.listener.RunListener`, takes its concurrency
slots through :class:`~prefect_seedream.engine.slot_pool.SlotLeases`, and its tests run without
a Prefect server (``make test-unit``). The Prefect layer (tasks, flows, batches as task runs,
artifacts, events) sits on top of it; see ``docs/architecture.md``.
"""
