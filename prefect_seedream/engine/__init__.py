"""The engine: what a row goes through, from a validated request to its manifest line.

The ledger, submit / wait / store (:mod:`~prefect_seedream.engine.generation`), a row's retries
and outcome (:mod:`~prefect_seedream.engine.runner`), the run folder
(:mod:`~prefect_seedream.engine.run_folder`) and the output's lock, the budget, the account
gate, reconciliation, datasets and the manifest. It knows no Prefect: it reports through
:class:`~prefect_seedream.engine.listener.RunListener` and takes its concurrency slots through a
protocol, and its tests run without a Prefect server. The Prefect layer (tasks,
flows, batches as task runs, artifacts, events) sits on top of it; see ``docs/architecture.md``.
"""
