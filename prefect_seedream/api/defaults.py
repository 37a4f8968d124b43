"""The API layer's defaults: where the API is, HTTP timeouts and pools, how a task is waited for.

This module imports nothing, so the API layer stays usable alone; the run's own defaults
(concurrency, retries, batching, the UI) are in :mod:`prefect_seedream.engine.defaults`. A value
a user can set is a default here and a parameter (or CLI option) elsewhere, never a literal
written twice.

Examples:
    >>> from prefect_seedream.api import defaults
    >>> defaults.POLL_INTERVAL_SECONDS, defaults.MAX_WAIT_SECONDS
    (3.0, 900.0)
"""

# -- where the API is, and how to authenticate ------------------------------------------------
API_KEY_ENV = "SEEDREAM_API_KEY"
BASE_URL_ENV = "SEEDREAM_BASE_URL"
DEFAULT_BASE_URL = "https://api.evolink.ai"

# -- HTTP ---------------------------------------------------------------------------------------
CONNECT_TIMEOUT_SECONDS = 10.0
READ_TIMEOUT_SECONDS = 60.0
WRITE_TIMEOUT_SECONDS = 60.0
#: Seconds to wait for the answer of a submission (a paid write): Evolink's own client allows
#: 120 s; a shorter wait turns slow answers into submissions of unknown outcome.
SUBMIT_TIMEOUT_SECONDS = 120.0
POOL_TIMEOUT_SECONDS = 30.0
#: Connections of a client to the API. Its requests are short and a row mostly waits between
#: two of them, so few connections serve many rows; each request scans the pool's connections
#: (measured: 16 costs 3 ms less CPU per row than one connection per row in flight).
API_CONNECTIONS = 16
#: Connections to the hosts that serve result images (downloads can be long and many).
RESULT_CONNECTIONS = 64
#: Size cap of one downloaded image.
MAX_IMAGE_BYTES = 50 * 1024 * 1024

# -- waiting for a task ---------------------------------------------------------------------------
#: Shortest pause between two polls of one task (the first poll comes at the task's estimate).
POLL_INTERVAL_SECONDS = 3.0
#: Earliest first poll of a task that gives an estimate (the first poll comes at the estimate).
FIRST_POLL_FLOOR_SECONDS = 0.5
#: Longest pause between two polls (polls back off up to it).
MAX_POLL_INTERVAL_SECONDS = 15.0
#: A task the API does not know for this long after its submission is gone (before that, a 404
#: is taken for a task not visible yet: the API documents no read-after-write guarantee).
NOT_FOUND_GRACE_SECONDS = 30.0
#: Most task ids one status read of many tasks may ask for (`POST /v1/tasks/batch`).
BATCH_READ_MAX_IDS = 50
#: Shortest time between two batch status reads of one client: reads that fall due meanwhile
#: wait for the next one, so that one request answers many tasks.
BATCH_READ_INTERVAL_SECONDS = 1.0
#: How long a batch read waits, after the first read falls due, for others due about then.
BATCH_READ_GATHER_SECONDS = 0.05
#: A task's first read, at its estimate, waits for its batch read at most this share of the
#: task's age while estimates prove right (most such reads find the task done: a longer wait
#: would only delay the row; measured: 1 s of hold cost a 2 s-task run 1.5x the peer's wall).
FIRST_READ_HOLD_FRACTION = 0.1
#: Wall-clock cap of one wait; a task still running after it is left in flight for `recover`.
MAX_WAIT_SECONDS = 900.0
