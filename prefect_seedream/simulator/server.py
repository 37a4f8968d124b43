"""Running the simulator: blocking, in a background thread, or from the command line."""

from __future__ import annotations

import argparse
import asyncio
import socket
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any, get_args

import httpx
import uvicorn
from fastapi import FastAPI

from .app import create_app, get_state
from .config import FAULT_RATE_KEYS, EndpointMode, SimulatorConfig
from .holds import ClientAddress, HeldResponses
from .references import ReferenceFetcher
from .state import SimulatorState

DEFAULT_PORT = 8787


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto=IPPROTO_TCP matters: asyncio only sets TCP_NODELAY on accepted sockets whose proto
    # says TCP, and without it every response waits ~40 ms for a delayed ACK (Nagle).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    return sock


def _close_held_connections(connections: Iterable[object], held: frozenset[ClientAddress]) -> int:
    """Close the transports of uvicorn connections whose client has a held response.

    Reads uvicorn's protocol objects (``client``, ``transport``) defensively: with another
    server or version nothing is closed, and held submits end with a cut answer instead.

    Returns:
        The number of connections closed.
    """
    closed = 0
    for connection in list(connections):
        client = getattr(connection, "client", None)
        transport = getattr(connection, "transport", None)
        if (
            client is not None
            and tuple(client) in held
            and isinstance(transport, asyncio.BaseTransport)
        ):
            transport.close()
            closed += 1
    return closed


class SimulatorServer(uvicorn.Server):
    """A uvicorn server that releases the simulator's held responses when it shuts down.

    uvicorn's graceful shutdown waits (up to ``timeout_graceful_shutdown``, 2 s here) for open
    requests. Before it starts, this server closes the connections of held submits (hung or
    delayed: the client sees the connection close without an answer) and ends every held
    wait (:meth:`HeldResponses.release`: paused downloads drop their connection), so the
    shutdown waits for none of them. Reference image fetches in progress are cancelled.

    Args:
        config: uvicorn's configuration.
        holds: The held responses of the app being served.
        references: The app's reference image fetcher, if any.
    """

    def __init__(
        self,
        config: uvicorn.Config,
        holds: HeldResponses,
        references: ReferenceFetcher | None = None,
    ) -> None:
        super().__init__(config)
        self.holds = holds
        self.references = references

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        """Release held responses, cancel reference fetches, then shut down like uvicorn."""
        _close_held_connections(self.server_state.connections, self.holds.clients)
        self.holds.release()
        if self.references is not None:
            await self.references.aclose()
        await super().shutdown(sockets=sockets)


def _uvicorn_server(app: FastAPI, log_level: str) -> SimulatorServer:
    config = uvicorn.Config(
        app,
        log_level=log_level,
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=2,
    )
    state = get_state(app)
    return SimulatorServer(config, state.holds, state.references)


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def run_simulator(
    config: SimulatorConfig | None = None,
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    log_level: str = "warning",
) -> None:
    """Serve the simulator in the foreground until interrupted (Ctrl-C).

    ``run_simulator(SimulatorConfig(latency_seconds=5), port=8787)`` serves until Ctrl-C
    (``prefect-seedream simulator`` does the same); :func:`running_simulator` serves one in
    a background thread for the duration of a block (tests, notebooks).

    Args:
        config: Behaviour of the simulator; defaults to ``SimulatorConfig()``.
        host: Interface to listen on.
        port: TCP port to listen on.
        log_level: uvicorn log level; the access log is always off.
    """
    _serve(create_app(config), _bind(host, port), log_level)


def _serve(app: FastAPI, sock: socket.socket, log_level: str) -> None:
    server = _uvicorn_server(app, log_level)
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()


class RunningSimulator:
    """Handle on a simulator served in a background thread by :func:`running_simulator`.

    Attributes:
        base_url: Root URL of the simulator, e.g. ``"http://127.0.0.1:54321"``.
        host: Interface it listens on.
        port: TCP port it listens on.
        app: The ASGI app.
        config: Its configuration.

    Examples:
        >>> with running_simulator(SimulatorConfig(latency_seconds=0.1)) as sim:
        ...     sim.stats()["tasks_created"]
        0
    """

    def __init__(self, app: FastAPI, host: str, port: int) -> None:
        self.app = app
        self.host = host
        self.port = port
        self.base_url = f"http://{_url_host(host)}:{port}"
        self.config: SimulatorConfig = get_state(app).config
        self._client = httpx.Client(base_url=self.base_url, timeout=10)

    @property
    def app_state(self) -> SimulatorState:
        """Direct access to the in-memory state (tasks, counters, clock) for tests."""
        return get_state(self.app)

    def stats(self) -> dict[str, Any]:
        """``GET /_sim/stats``."""
        response = self._client.get("/_sim/stats")
        response.raise_for_status()
        body: dict[str, Any] = response.json()
        return body

    def reset(self) -> None:
        """``POST /_sim/reset``: forget every task and counter."""
        self._client.post("/_sim/reset").raise_for_status()

    def account(self, **changes: Any) -> dict[str, Any]:
        """``POST /_sim/account`` with ``changes`` (``add_credits``, ``set_credits``,
        ``reset_quotas``); without changes it only reads. Returns the account state.

        Examples:
            >>> config = SimulatorConfig(latency_seconds=0.1, account_credits=5)
            >>> with running_simulator(config) as sim:
            ...     sim.account(add_credits=2.5)["credits_balance"]
            7.5
        """
        response = self._client.post("/_sim/account", json=changes)
        response.raise_for_status()
        body: dict[str, Any] = response.json()
        return body

    def tasks(self, prompt: str | None = None) -> list[dict[str, Any]]:
        """``GET /_sim/tasks``: the live tasks, of one exact prompt text if given."""
        params = {"prompt": prompt} if prompt is not None else None
        response = self._client.get("/_sim/tasks", params=params)
        response.raise_for_status()
        tasks: list[dict[str, Any]] = response.json()["tasks"]
        return tasks

    def close(self) -> None:
        """Release the HTTP client used by :meth:`stats`, :meth:`reset` and the others."""
        self._client.close()


def _wait_until_up(server: uvicorn.Server, thread: threading.Thread, sim: RunningSimulator) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if not thread.is_alive():
            raise RuntimeError("the simulator thread exited during start-up")
        if server.started:
            try:
                if sim._client.get("/healthz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
        time.sleep(0.01)
    raise RuntimeError("the simulator did not start within 15 seconds")


@contextmanager
def running_simulator(
    config: SimulatorConfig | None = None,
    host: str = "127.0.0.1",
    log_level: str = "warning",
    port: int = 0,
    fallback_to_free_port: bool = False,
) -> Iterator[RunningSimulator]:
    """Serve a simulator on a loopback port (a free one by default) in a background thread.

    Args:
        config: Behaviour of the simulator; defaults to ``SimulatorConfig()``.
        host: Interface to listen on.
        log_level: uvicorn log level; the access log is always off.
        port: Port to listen on (0: a free one).
        fallback_to_free_port: When ``port`` is taken, listen on a free one instead of failing.

    Yields:
        A :class:`RunningSimulator`; the server shuts down when the block exits.

    Examples:
        >>> import httpx
        >>> with running_simulator(SimulatorConfig(latency_seconds=0.1)) as sim:
        ...     httpx.get(f"{sim.base_url}/healthz").json()
        {'ok': True}
    """
    app = create_app(config)
    try:
        sock = _bind(host, port)
    except OSError:
        if not fallback_to_free_port or port == 0:
            raise
        sock = _bind(host, 0)
    port = sock.getsockname()[1]
    server = _uvicorn_server(app, log_level)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="seedream-simulator", daemon=True
    )
    thread.start()
    running = RunningSimulator(app, host, port)
    try:
        _wait_until_up(server, thread, running)
        yield running
    finally:
        running.close()
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def _fault_rate(text: str) -> tuple[str, float]:
    key, sep, value = text.partition("=")
    if not sep or key not in FAULT_RATE_KEYS:
        known = ", ".join(sorted(FAULT_RATE_KEYS))
        raise argparse.ArgumentTypeError(f"expected KEY=P with KEY one of {known}")
    try:
        rate = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a probability") from None
    return key, rate


def _extra_model(text: str) -> tuple[str, str]:
    name, sep, base = text.partition("=")
    if not sep or not name.strip() or not base.strip():
        raise argparse.ArgumentTypeError("expected NAME=KNOWN_MODEL")
    return name.strip(), base.strip()


def _add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of the models served: extra model names and the price list."""
    parser.add_argument(
        "--extra-model",
        action="append",
        type=_extra_model,
        default=[],
        metavar="NAME=KNOWN_MODEL",
        help="also serve model NAME with the rules of KNOWN_MODEL (repeatable), e.g. "
        "doubao-seedream-5.1-preview=doubao-seedream-5.0-pro",
    )
    parser.add_argument(
        "--price-list",
        choices=["seed_pages", "published"],
        default="seed_pages",
        help="credits per image: the seed pages' (4.5 at 2.0, default) or today's published "
        "ones (4.5 at 2.5)",
    )


def _add_read_options(parser: argparse.ArgumentParser) -> None:
    """The options of the announced estimate and of the batch read and balance endpoints."""
    parser.add_argument(
        "--estimated-time",
        type=int,
        default=None,
        metavar="SECONDS",
        help="task_info.estimated_time of submit answers (default: the latency, rounded up)",
    )
    endpoint_modes = list(get_args(EndpointMode))
    parser.add_argument(
        "--batch-endpoint",
        choices=endpoint_modes,
        default="available",
        help="POST /v1/tasks/batch answers normally, 404, 405 or 500 (default: available)",
    )
    parser.add_argument(
        "--credits-endpoint",
        choices=endpoint_modes,
        default="available",
        help="GET /v1/credits answers normally, 404, 405 or 500 (default: available)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of :func:`main_simulator`.

    Examples:
        >>> build_parser().parse_args(["--latency", "0.5"]).latency
        0.5
    """
    parser = argparse.ArgumentParser(
        prog="prefect-seedream simulator",
        description="Serve a local Evolink Seedream-compatible API (see evolink-api.md).",
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="port (default 8787)")
    parser.add_argument("--latency", type=float, default=2.0, help="seconds per task")
    parser.add_argument("--jitter", type=float, default=0.5, help="+/- seconds of latency")
    parser.add_argument("--ttl", type=float, default=86400.0, help="result URL lifetime (s)")
    parser.add_argument(
        "--max-concurrency", type=int, default=None, help="non-terminal tasks per API key"
    )
    parser.add_argument(
        "--image-max-side", type=int, default=256, help="largest served side; 0 = full size"
    )
    parser.add_argument("--format", choices=["png", "jpeg"], default="png")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--api-key",
        action="append",
        default=None,
        help="accepted API key (repeatable); default: any non-empty key",
    )
    parser.add_argument(
        "--fault-rate",
        action="append",
        type=_fault_rate,
        default=[],
        metavar="KEY=P",
        help="random fault probability (repeatable), e.g. poll_503=0.05",
    )
    parser.add_argument(
        "--late-submit-seconds",
        type=float,
        default=5.0,
        help="delay of answers hit by the random submit_late fault (default 5)",
    )
    parser.add_argument(
        "--account-credits",
        type=float,
        default=None,
        metavar="X",
        help="the account's balance, shared by every key (default: unlimited)",
    )
    parser.add_argument(
        "--key-quota",
        type=float,
        default=None,
        metavar="X",
        help="lifetime credits per API key (default: unlimited)",
    )
    parser.add_argument(
        "--daily-quota",
        type=float,
        default=None,
        metavar="X",
        help="credits per API key per quota window (default: unlimited)",
    )
    parser.add_argument(
        "--quota-window",
        type=float,
        default=86400.0,
        metavar="SECONDS",
        help="length of the --daily-quota window (default 86400)",
    )
    parser.add_argument(
        "--deny-model",
        action="append",
        default=[],
        metavar="NAME",
        help="answer 403 to submits for this model (repeatable)",
    )
    parser.add_argument(
        "--fetch-reference-images",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="download the image_urls of tasks, as the real API does (a failure fails the task; "
        "default: on; SimulatorConfig's default is off)",
    )
    _add_model_arguments(parser)
    _add_read_options(parser)
    parser.add_argument("--log-level", default="warning", help="uvicorn log level")
    return parser


def config_from_args(args: argparse.Namespace) -> SimulatorConfig:
    """Build a :class:`SimulatorConfig` from parsed command-line arguments.

    Examples:
        >>> args = build_parser().parse_args(["--image-max-side", "0", "--api-key", "k"])
        >>> config = config_from_args(args)
        >>> config.image_max_side is None, config.api_keys
        (True, {'k'})
        >>> args = build_parser().parse_args(
        ...     ["--account-credits", "10", "--daily-quota", "4", "--quota-window", "60",
        ...      "--deny-model", "doubao-seedream-4.0"])
        >>> config = config_from_args(args)
        >>> config.account_credits, config.daily_quota_credits, config.quota_window_seconds
        (10.0, 4.0, 60.0)
        >>> sorted(config.denied_models)
        ['doubao-seedream-4.0']
        >>> args = build_parser().parse_args(
        ...     ["--extra-model", "doubao-seedream-5.1-preview=doubao-seedream-5.0-pro",
        ...      "--price-list", "published"])
        >>> config = config_from_args(args)
        >>> config.extra_models, config.price_list
        ({'doubao-seedream-5.1-preview': 'doubao-seedream-5.0-pro'}, 'published')
        >>> args = build_parser().parse_args(
        ...     ["--estimated-time", "1", "--batch-endpoint", "missing", "--credits-endpoint", "failing"])
        >>> config = config_from_args(args)
        >>> config.estimated_time, config.batch_endpoint, config.credits_endpoint
        (1, 'missing', 'failing')
    """
    return SimulatorConfig(
        api_keys=set(args.api_key) if args.api_key else None,
        latency_seconds=args.latency,
        jitter_seconds=args.jitter,
        seed=args.seed,
        image_max_side=args.image_max_side or None,
        image_format=args.format,
        result_ttl_seconds=args.ttl,
        max_concurrent_tasks_per_key=args.max_concurrency,
        fault_rates=dict(args.fault_rate),
        late_submit_seconds=args.late_submit_seconds,
        account_credits=args.account_credits,
        key_quota_credits=args.key_quota,
        daily_quota_credits=args.daily_quota,
        quota_window_seconds=args.quota_window,
        denied_models=frozenset(args.deny_model),
        fetch_reference_images=args.fetch_reference_images,
        extra_models=dict(args.extra_model),
        price_list=args.price_list,
        estimated_time=args.estimated_time,
        batch_endpoint=args.batch_endpoint,
        credits_endpoint=args.credits_endpoint,
    )


def main_simulator(argv: list[str] | None = None) -> int:
    """Command-line entry point: ``prefect-seedream simulator [options]``.

    Args:
        argv: Arguments without the program name; defaults to ``sys.argv[1:]``.

    Returns:
        The process exit code (0 after Ctrl-C, 2 on a bad option value).

    ``main_simulator(["--port", "8787", "--latency", "1"])`` prints ``Seedream simulator
    listening on http://127.0.0.1:8787`` and serves until Ctrl-C.

    Examples:
        >>> main_simulator(["--latency", "-1"])  # a bad value: said on stderr, nothing served
        2
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        config = config_from_args(args)
    except ValueError as err:
        print(f"invalid option: {err}", file=sys.stderr)
        return 2
    try:
        sock = _bind(args.host, args.port)
    except OSError as err:
        print(f"cannot listen on {args.host}:{args.port}: {err}", file=sys.stderr)
        return 1
    port = sock.getsockname()[1]
    print(f"Seedream simulator listening on http://{_url_host(args.host)}:{port}", flush=True)
    try:
        _serve(create_app(config), sock, args.log_level)
    except KeyboardInterrupt:
        pass
    return 0
