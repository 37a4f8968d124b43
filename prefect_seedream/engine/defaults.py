"""The run's defaults: request parameters, retries, concurrency, batching, the UI, locks, shards.

This module imports nothing, so every layer above the API may use it; the API layer's own
defaults (address, timeouts, polling) are in :mod:`prefect_seedream.api.defaults`. A value that a
user can set is a default here and a parameter (or CLI option) elsewhere, never a literal
written twice.

Examples:
    >>> from prefect_seedream.engine import defaults
    >>> defaults.DEFAULT_SIZE, defaults.MAX_CONCURRENCY
    ('2K', 8)
"""

from typing import Literal

# -- the command line's bundled simulator ---------------------------------------------------------
#: The key the command line gives the bundled simulator (it accepts any key).
SIMULATOR_API_KEY = "sk-simulator-local"
#: Port of the command line's bundled simulator (another one when it is taken). The ledger
#: keeps records per API address, so a stable port lets a second `run --simulator` into the
#: same output find the rows the first one stored.
SIMULATOR_PORT = 18787

# -- request parameters --------------------------------------------------------------------------
SizePreset = Literal["1K", "2K", "4K"]
PromptPriority = Literal["standard", "fast"]
DEFAULT_SIZE: SizePreset = "2K"
DEFAULT_N = 1
DEFAULT_PROMPT_PRIORITY: PromptPriority = "standard"

#: Result URLs expire 24 h after generation; a recorded task is re-attached only well within that.
REATTACH_WINDOW_SECONDS = 23 * 3600

# -- retries ---------------------------------------------------------------------------------------
#: Retries of one row for failures worth retrying (429, 5xx, service-side task failures).
RETRIES = 2
#: First retry delay of a row; doubled at each retry.
RETRY_DELAY_SECONDS = 10.0
#: Each retry delay is multiplied by a random factor in [1 - f, 1 + f].
RETRY_JITTER_FACTOR = 0.5

# -- a dataset run --------------------------------------------------------------------------------
#: Where a dataset run writes its images and manifest when not told (a folder, relative to the
#: working directory; `--output` and the flows' `output` parameter).
DEFAULT_OUTPUT = "output"
#: Most generations in flight at once in one run (or one shard).
MAX_CONCURRENCY = 8
#: Upper bound of `max_concurrency` in the run form.
MAX_CONCURRENCY_BOUND = 256
#: Datasets up to this many rows run one Prefect task run per row (named after the row);
#: bigger ones run batches of rows per task run (see `rows_per_task`).
ONE_TASK_RUN_PER_ROW_UP_TO = 50
#: With batches, aim at about this many task runs per run ...
TARGET_TASK_RUNS = 50
#: ... but never more rows than this in one task run.
MAX_ROWS_PER_TASK = 500
#: Which per-row events a dataset run emits: a failed row always carries meaning on its own,
#: the submitted/completed pair of every row is summed up in the run's end event instead.
RowEvents = Literal["failures", "all", "none"]
ROW_EVENTS: RowEvents = "failures"
#: Rows whose failure is logged at WARNING one by one; later failures are counted, not logged.
FAILURES_LOGGED = 100

# -- what the UI shows -----------------------------------------------------------------------------
#: Images with a thumbnail in the gallery artifact.
GALLERY_LIMIT = 48
#: Failed rows listed in the failures table artifact (the manifest has them all).
FAILED_ROWS_SHOWN = 200
#: Runs up to this many rows get one table listing every row.
ROWS_TABLE_LIMIT = 500
#: Shortest time between two updates of the progress artifact.
PROGRESS_UPDATE_SECONDS = 2.0
#: A progress line is logged each time this fraction of the rows more is done.
PROGRESS_LOG_STEP = 0.1

# -- global concurrency limits ----------------------------------------------------------------------
#: Lease of the slots held by one run (Prefect's minimum is 60 s); renewed at a third of it.
SLOT_LEASE_SECONDS = 60.0
#: A lease whose slots all went unused this long is given back to the server.
SLOT_LINGER_SECONDS = 0.25

# -- the output lock ---------------------------------------------------------------------------------
#: On stores without kernel locks (s3://, ...), a run's lock lapses after this long without a
#: heartbeat, so that a killed run never blocks the next one for long.
LOCK_TTL_SECONDS = 60.0
LOCK_HEARTBEAT_SECONDS = 15.0

# -- sharded runs -------------------------------------------------------------------------------------
#: The deployment that runs one shard (see deployments/prefect.yaml).
SHARD_DEPLOYMENT = "seedream-generate-shard/generate-shard"
#: How often the parent of a sharded run reads its shards' progress.
SHARD_POLL_SECONDS = 5.0
