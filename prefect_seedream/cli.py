"""The ``prefect-seedream`` command: run a dataset, recover in-flight tasks, write a
deployable project (``init``), run the simulator.

``run`` and ``recover`` talk to the real API with ``SEEDREAM_API_KEY`` (or a credentials
block); with ``--simulator`` they start the bundled simulator on a loopback port and use it
instead: nothing is spent and no key is needed. Without either they refuse to start, so a
missing key is never mistaken for a run against the real API.

Exit codes: 0 every row succeeded; 1 some rows did not; 2 an invalid dataset, parameter or
setup (nothing was submitted); 3 the API refused the account (key refused, out of credits,
quota used up): the run stopped submitting, and the same command finishes it once fixed.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import os
import shlex
import sys
import types
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from prefect_seedream.api import defaults as api_defaults
from prefect_seedream.engine import defaults as d


def _configure_prefect(verbose: bool, embedded: bool) -> None:
    """Keep Prefect's console quiet (the UI gets every line); heartbeats for started servers.

    A started server may crash runs whose heartbeats stop (the zombie automation of
    ``deployments/stack.py``): Prefect's default heartbeat, every 180 s, is slower than such
    an automation's window, so a run started from here says it is alive every 30 s.
    """
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    if not embedded:
        os.environ.setdefault("PREFECT_FLOWS_HEARTBEAT_FREQUENCY", "30")
    if not verbose:
        os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "WARNING")


@dataclass
class _PrefectAPI:
    """The Prefect API a command talks to."""

    embedded: bool
    ready: Callable[[], None] = lambda: None


@contextmanager
def _prefect_api(start: bool = True) -> Iterator[_PrefectAPI]:
    """``PREFECT_API_URL``, or a temporary server started now (see
    :mod:`prefect_seedream.embedded_server`)."""
    if os.environ.get("PREFECT_API_URL") or not start:
        yield _PrefectAPI(embedded=False)
        return
    from prefect_seedream.embedded_server import EmbeddedServer

    with EmbeddedServer() as server:
        try:
            yield _PrefectAPI(embedded=True, ready=server.wait_ready)
        finally:
            _drain_prefect_workers()


def _drain_prefect_workers() -> None:
    """Send the log lines and events Prefect still holds, before their server goes away."""
    if "prefect" not in sys.modules:
        return
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    for worker in (APILogWorker, EventsWorker):
        try:
            worker.drain_all(timeout=10)
        except Exception:  # nothing started, or already stopped
            pass


#: Exit code of a run the API stopped for the whole account (see the module docstring).
EXIT_ACCOUNT_STOPPED = 3


def _missing_credentials(args: argparse.Namespace) -> str | None:
    """Why the command cannot talk to any API: neither a key, nor a block, nor ``--simulator``."""
    if args.simulator or os.environ.get(api_defaults.API_KEY_ENV) or args.credentials_block:
        return None
    return (
        f"no {api_defaults.API_KEY_ENV} set and no --credentials-block: set your Evolink key, or pass "
        "--simulator to run against the bundled simulator (no key, nothing is spent)"
    )


@contextmanager
def _api_or_simulator(args: argparse.Namespace) -> Iterator[None]:
    """The real API (a key or a block), or the bundled simulator when asked (``--simulator``)."""
    if not args.simulator:
        yield
        return
    from prefect_seedream.simulator import SimulatorConfig, running_simulator

    config = SimulatorConfig(
        latency_seconds=args.simulator_latency, jitter_seconds=args.simulator_latency / 4,
        fetch_reference_images=True,
        # its longest latency: each task is seen done at its first poll (not 3 s later)
        estimated_time=math.ceil(args.simulator_latency * 1.25),
    )
    with running_simulator(config, port=d.SIMULATOR_PORT, fallback_to_free_port=True) as simulator:
        print(
            f"SIMULATOR: using the bundled Evolink simulator at {simulator.base_url} "
            f"(--simulator): images are simulated and no credits are spent."
        )
        saved = {name: os.environ.get(name) for name in (api_defaults.API_KEY_ENV, api_defaults.BASE_URL_ENV)}
        os.environ[api_defaults.API_KEY_ENV] = d.SIMULATOR_API_KEY
        os.environ[api_defaults.BASE_URL_ENV] = simulator.base_url
        try:
            yield
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value


def _credentials(args: argparse.Namespace) -> Any:
    if not args.credentials_block or args.simulator:
        return None
    from prefect_seedream.credentials import SeedreamCredentials

    return SeedreamCredentials.load(args.credentials_block)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--credentials-block", metavar="NAME", help="a saved SeedreamCredentials block")
    parser.add_argument("--simulator", action="store_true",
                        help="use the bundled simulator instead of the real API (no key, nothing spent)")
    parser.add_argument("--simulator-latency", type=float, default=2.0, metavar="SECONDS",
                        help="latency of the bundled simulator (default 2)")
    parser.add_argument("--verbose", action="store_true", help="show Prefect's log lines")


#: The names flags had before they were made from :class:`RunOptions` fields: each still works,
#: beside the field's own (``--retry-delay`` and ``--retry-delay-seconds``).
FORMER_FLAGS = {
    "concurrency_limit_name": "--concurrency-limit",
    "max_wait_seconds": "--max-wait",
    "retry_delay_seconds": "--retry-delay",
}
#: The options ``recover`` takes (the recovery flow's).
RECOVER_OPTIONS = ("max_concurrency", "max_wait_seconds", "poll_interval")


def add_option_flags(parser: argparse.ArgumentParser, names: tuple[str, ...] | None = None) -> None:
    """A flag for each field of :class:`~prefect_seedream.engine.options.RunOptions` (or of
    those ``names``), made from the field: ``--kebab-name``, its type, default and description;
    a ``Literal`` gives the choices, a bool a switch. The fsspec options are left out: they
    may hold credentials, which do not belong on a command line (fsspec reads its own
    environment variables and configuration).
    """
    from prefect_seedream.engine.options import STORAGE_OPTION_FIELDS, RunOptions

    for name, field in RunOptions.model_fields.items():
        if name in STORAGE_OPTION_FIELDS or (names is not None and name not in names):
            continue
        flags = [f"--{name.replace('_', '-')}", *([FORMER_FLAGS[name]] if name in FORMER_FLAGS else [])]
        parser.add_argument(*flags, **_flag_spec(name, field.annotation, field.default, field.description or ""))


def _flag_spec(name: str, annotation: Any, default: Any, description: str) -> dict[str, Any]:
    """The ``add_argument`` keywords of one option."""
    kind, choices, known = _value_type(annotation)
    text = description.rstrip(".").replace("%", "%%")
    if known:
        text += f". Known: {', '.join(known)}"
    if kind is bool:
        action = argparse.BooleanOptionalAction if default else "store_true"
        return {"dest": name, "action": action, "default": default, "help": text}
    if default is not None:
        text += f". Default: {default:g}" if isinstance(default, float) else f". Default: {default}"
    spec: dict[str, Any] = {"dest": name, "type": kind, "default": default, "help": text}
    if choices:
        spec["choices"] = choices
    else:
        spec["metavar"] = _metavar(name, kind)
    return spec


def _value_type(annotation: Any) -> tuple[type, tuple[Any, ...], tuple[Any, ...]]:
    """The type of an option's value, its choices (a ``Literal``), and the known values of an
    open one (a ``Literal`` or any ``str``, as a model's name).

    Examples:
        >>> from typing import Annotated, Literal
        >>> _value_type(Annotated[float, "gt 0"] | None)
        (<class 'float'>, (), ())
        >>> _value_type(Literal["png", "jpeg"] | None)
        (<class 'str'>, ('png', 'jpeg'), ())
        >>> _value_type(Literal["a", "b"] | str)
        (<class 'str'>, (), ('a', 'b'))
    """
    leaves = [leaf for leaf in _leaves(annotation) if leaf is not type(None)]
    values = tuple(value for leaf in leaves if get_origin(leaf) is Literal for value in get_args(leaf))
    others = [leaf for leaf in leaves if get_origin(leaf) is not Literal]
    if not others:
        return type(values[0]), values, ()
    if len(others) != 1 or not isinstance(others[0], type):
        raise TypeError(f"no command-line flag for an option of type {annotation!r}")
    return others[0], (), values


def _leaves(annotation: Any) -> list[Any]:
    """The types a union of (annotated) types is made of."""
    if get_origin(annotation) is Annotated:
        return _leaves(get_args(annotation)[0])
    if get_origin(annotation) in (Union, types.UnionType):
        return [leaf for arg in get_args(annotation) for leaf in _leaves(arg)]
    return [annotation]


def _metavar(name: str, kind: type) -> str:
    """What ``--help`` calls an option's value.

    Examples:
        >>> [_metavar(n, k) for n, k in (("poll_interval", float), ("n", int), ("reference_store", str))]
        ['SECONDS', 'N', 'URL']
    """
    if kind is float:
        return "SECONDS" if name.endswith(("_seconds", "_interval")) else name.rsplit("_", 1)[-1].upper()
    if kind is int:
        return "N"
    if name.endswith(("_url", "_store")):
        return "URL"
    return "NAME" if name.endswith("_name") else name.upper()


def run_options(args: argparse.Namespace) -> dict[str, Any]:
    """The :class:`RunOptions` fields among parsed arguments (their flags'), by field name."""
    from prefect_seedream.engine.options import RunOptions

    return {name: value for name, value in vars(args).items() if name in RunOptions.model_fields}


def build_parser() -> argparse.ArgumentParser:
    """The command line's parser (the run options' flags: see :func:`add_option_flags`)."""
    parser = argparse.ArgumentParser(prog="prefect-seedream", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="generate images for every row of a dataset")
    run.add_argument("dataset", help="a .csv, .tsv, .jsonl or .parquet file (path or fsspec URL)")
    run.add_argument(
        "--output", default=d.DEFAULT_OUTPUT, help=f"folder or fsspec URL (default ./{d.DEFAULT_OUTPUT})"
    )
    add_option_flags(run)
    run.add_argument("--dry-run", action="store_true", help="validate and estimate credits only")
    run.add_argument("--shards", type=int, default=1, metavar="K",
                     help="run the rows as K shard flow runs on a work pool (needs PREFECT_API_URL)")
    run.add_argument("--work-pool", metavar="POOL", help="with --shards: the work pool of the shard deployment")
    run.add_argument("--shard-deployment", default=d.SHARD_DEPLOYMENT, metavar="FLOW/DEPLOYMENT")
    _common(run)

    recover = commands.add_parser("recover", help="collect tasks a stopped run left in flight")
    recover.add_argument("output", help="the output folder (or URL) of the earlier run")
    add_option_flags(recover, RECOVER_OPTIONS)
    _common(recover)

    init = commands.add_parser(
        "init", help="write a deployable prefect.yaml and the sample prompts.csv into a folder"
    )
    init.add_argument("directory", nargs="?", default=".", metavar="DIR",
                      help="the project folder (default: the current folder; created if missing)")
    init.add_argument("--force", action="store_true", help="overwrite prefect.yaml and prompts.csv")

    commands.add_parser("simulator", help="run the local Evolink simulator (see its --help)")
    return parser


def _print_summary(args: argparse.Namespace, summary: Any, state: Any) -> None:
    from prefect_seedream.engine.run_report import summary_text

    state_text = f"{state.type.value.title()}: {state.message}"
    print()
    print(summary_text(summary, output=args.output, arguments=sys.argv[1:], state=state_text))


def _run(args: argparse.Namespace, api: _PrefectAPI) -> int:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from prefect_seedream.engine.dataset import DatasetError
    from prefect_seedream.engine.output_lock import OutputLockedError
    from prefect_seedream.engine.progress import listening
    from prefect_seedream.flows import generate_dataset

    if args.shards > 1 and api.embedded:
        print(
            "error: --shards needs a Prefect server with workers on a work pool: set "
            "PREFECT_API_URL (see the README's \"Scaling out\": make stack-up)",
            file=sys.stderr,
        )
        return 2
    problem = _missing_credentials(args)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    with _api_or_simulator(args), Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[failed]} not succeeded"), TimeElapsedColumn(),
        transient=False,
    ) as bar:
        api.ready()  # here: the simulator (--simulator) starts while the server boots
        job = bar.add_task("Generating", total=None, failed=0)

        def on_row(line: Any) -> None:
            bar.update(job, advance=1, failed=bar.tasks[job].fields["failed"] + (line.status != "succeeded"))

        with listening(on_row, on_total=lambda rows: bar.update(job, total=rows)):
            try:
                state = asyncio.run(generate_dataset.aio(
                    args.dataset, args.output, **run_options(args), credentials=_credentials(args),
                    dry_run=args.dry_run, shards=args.shards, work_pool=args.work_pool,
                    shard_deployment=args.shard_deployment, return_state=True,
                ))
            except (DatasetError, ValueError, OutputLockedError) as exc:
                bar.stop()
                print(f"error: {exc}", file=sys.stderr)
                return 2
    summary = state.result(raise_on_failure=False)
    if not hasattr(summary, "rows"):
        print(f"error: the run ended {state.type.value.lower()}: {summary or state.message}", file=sys.stderr)
        return 2 if isinstance(summary, (OutputLockedError, ValueError)) else 1
    _print_summary(args, summary, state)
    if summary.stopped is not None:
        return EXIT_ACCOUNT_STOPPED
    return 0 if state.is_completed() else 1


def _recover(args: argparse.Namespace, api: _PrefectAPI) -> int:
    from prefect_seedream.flows import recover_dataset

    problem = _missing_credentials(args)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    api.ready()
    with _api_or_simulator(args):
        state = asyncio.run(recover_dataset.aio(
            args.output, **run_options(args), credentials=_credentials(args), return_state=True,
        ))
    print(f"{state.type.value.title()}: {state.message}")
    return 0 if state.is_completed() else 1


def _init(args: argparse.Namespace) -> int:
    """Write the project files (see :mod:`prefect_seedream.project`) and say what to run next."""
    from prefect_seedream.project import SAMPLE_DATASET, WORK_POOL, ProjectExistsError, init_project

    try:
        written = init_project(args.directory, force=args.force)
    except ProjectExistsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: cannot write into {args.directory!r}: {exc}", file=sys.stderr)
        return 2
    for path in written:
        print(f"wrote {path}")
    folder = shlex.quote(args.directory)
    print(
        f"\nTry it on the bundled simulator (nothing is spent):\n"
        f"  prefect-seedream run {shlex.quote(os.path.join(args.directory, SAMPLE_DATASET))} "
        f"--output {shlex.quote(os.path.join(args.directory, 'output'))} --simulator\n"
        f"Deploy it (with PREFECT_API_URL pointing at your Prefect server):\n"
        f"  cd {folder}\n"
        f"  prefect work-pool create {WORK_POOL} --type process\n"
        f"  prefect --no-prompt deploy --all\n"
        f"  prefect worker start --pool {WORK_POOL}"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``prefect-seedream``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["simulator"]:  # its own parser: prefect-seedream simulator --help
        from prefect_seedream.simulator import main_simulator

        return main_simulator(argv[1:])
    # The Prefect server (when one is needed) starts first: it boots while the rest loads.
    needs_api = argv[:1] in (["run"], ["recover"]) and not {"-h", "--help"} & set(argv)
    with _prefect_api(start=needs_api) as api:
        args = build_parser().parse_args(argv)
        if args.command == "init":
            return _init(args)
        _configure_prefect(args.verbose, api.embedded)
        if args.command == "run":
            return _run(args, api)
        return _recover(args, api)


def console_main() -> None:
    """The ``prefect-seedream`` console script: :func:`main`, then a quick exit.

    Once the command is done (the server stopped, Prefect's logs and events sent, the summary
    printed), tearing down the interpreter's modules and objects takes more than half a second
    of a Prefect process's life; nothing is left to save, so the process ends at once.
    """
    code = main()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    logging.shutdown()
    os._exit(code)


if __name__ == "__main__":
    console_main()
