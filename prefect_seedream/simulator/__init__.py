"""A local server that speaks the Evolink Seedream image API (see ``evolink-api.md``).

The simulator is a standalone implementation of the server side of the contract: it imports
neither the client API layer nor Prefect, so pipelines can be developed and tested offline
against it. Faults are injected deterministically with ``[[sim:...]]`` markers in prompts (see
:mod:`prefect_seedream.simulator.faults`) or randomly with ``SimulatorConfig.fault_rates``.
Besides sections 1-3 of the contract it implements what section 5 adds: ``Idempotency-Key``
replays and conflicts, the account's credits and per-key quotas (402 with string codes),
denied models (403), ``GET /v1/tasks``, ``Retry-After`` headers, the ``cancelled`` status and
statuses outside the known ones, and (when enabled) the download of reference images. Section 6
(the family as Evolink documents it today: 5.0 lite/pro/flash/layerize, ratio sizes and quality
tiers, JPEG outputs, ``result_data``) is followed too.

Modules:
    config: :class:`SimulatorConfig`.
    rules: validation of submit bodies against the per-model rules.
    model_table: the models served, one entry of data each (:func:`model_catalog`).
    sizes: ``size`` ratios and presets, ``quality`` tier tables.
    output_options: model-specific output fields (``output_format``, ``background``...).
    errors: the contract's HTTP error bodies.
    faults: marker parsing and fault decisions.
    images: deterministic result images.
    billing: credits, reservations, final charges and quotas of the account.
    idempotency: ``Idempotency-Key`` parsing and the remembered keys.
    listing: ``GET /v1/tasks`` query parsing and paging.
    references: downloading and checking reference images (``image_urls``).
    state: tasks, counters, statistics, concurrency and settling of terminal tasks.
    payloads: task objects as JSON.
    responses: deliberately broken responses (dropped connections, huge bodies, pauses).
    holds: responses held open on purpose (hangs, delays) and their release on shutdown.
    app: the routes (:func:`create_app`).
    server: runners (:func:`run_simulator`, :func:`running_simulator`, :func:`main_simulator`).

Examples:
    >>> import httpx
    >>> from prefect_seedream.simulator import SimulatorConfig, running_simulator
    >>> with running_simulator(SimulatorConfig(latency_seconds=0.1)) as sim:
    ...     response = httpx.post(
    ...         f"{sim.base_url}/v1/images/generations",
    ...         headers={"Authorization": "Bearer sk-test"},
    ...         json={"model": "doubao-seedream-4.5", "prompt": "a lighthouse at dusk"},
    ...     )
    ...     response.json()["status"]
    'pending'
"""

from .app import create_app, get_state
from .config import FAULT_RATE_KEYS, SimulatorConfig
from .faults import FaultPlan, MarkerError, parse_fault_plan
from .server import RunningSimulator, main_simulator, run_simulator, running_simulator
from .state import SimulatorState, key_id_for

__all__ = [
    "FAULT_RATE_KEYS",
    "FaultPlan",
    "MarkerError",
    "RunningSimulator",
    "SimulatorConfig",
    "SimulatorState",
    "create_app",
    "get_state",
    "key_id_for",
    "main_simulator",
    "parse_fault_plan",
    "run_simulator",
    "running_simulator",
]
