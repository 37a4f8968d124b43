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
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, get_args

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
    parser.add_argument("--max-wait", type=float, default=api_defaults.MAX_WAIT_SECONDS, metavar="SECONDS",
                        help=f"wait cap per task (default {api_defaults.MAX_WAIT_SECONDS:g})")
    parser.add_argument("--verbose", action="store_true", help="show Prefect's log lines")


def build_parser() -> argparse.ArgumentParser:
    """The command line's parser."""
    from prefect_seedream.api.models import DEFAULT_MODEL, MODEL_LIMITS, OutputFormat, Quality

    parser = argparse.ArgumentParser(prog="prefect-seedream", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="generate images for every row of a dataset")
    run.add_argument("dataset", help="a .csv, .tsv, .jsonl or .parquet file (path or fsspec URL)")
    run.add_argument("--output", default="output", help="folder or fsspec URL (default ./output)")
    run.add_argument("--model", default=DEFAULT_MODEL, metavar="MODEL",
                     help=f"default model (default {DEFAULT_MODEL}); known: {', '.join(MODEL_LIMITS)}; "
                          "any other name is sent as is, its rules not checked locally")
    run.add_argument("--size", default=d.DEFAULT_SIZE,
                     help=f"default size: auto, a ratio such as 16:9 (with --quality), a preset or WxH "
                          f"(default {d.DEFAULT_SIZE})")
    run.add_argument("--quality", choices=get_args(Quality),
                     help="default resolution of a ratio size (which values a model takes: see the README's Models)")
    run.add_argument("--output-format", choices=get_args(OutputFormat),
                     help="default image format of the 5.0 models (their default: jpeg)")
    run.add_argument("--n", type=int, default=d.DEFAULT_N, help="default most images per prompt (1-15)")
    run.add_argument("--prompt-priority", default=d.DEFAULT_PROMPT_PRIORITY, choices=get_args(d.PromptPriority))
    run.add_argument("--max-concurrency", type=int, default=d.MAX_CONCURRENCY,
                     help=f"generations in flight at once, per process (default {d.MAX_CONCURRENCY})")
    run.add_argument("--concurrency-limit", metavar="NAME", help="a Prefect global concurrency limit")
    run.add_argument("--max-credits", type=float, help="budget for this run")
    run.add_argument("--dry-run", action="store_true", help="validate and estimate credits only")
    run.add_argument("--retries", type=int, default=d.RETRIES)
    run.add_argument("--retry-delay", type=float, default=d.RETRY_DELAY_SECONDS, help="first retry delay, seconds")
    run.add_argument("--resubmit-unknown", action="store_true",
                     help="submit again rows whose earlier submission's outcome is unknown, with the "
                          "same Idempotency-Key (the API returns the task it created, if any)")
    run.add_argument("--wait-for-quota", action="store_true",
                     help="when the key's daily quota is used up, wait until it renews instead of stopping")
    run.add_argument("--rows-per-task", type=int, metavar="N",
                     help="rows per Prefect task run (default: 1 up to 50 rows, else about 50 task runs)")
    run.add_argument("--row-events", default=d.ROW_EVENTS, choices=get_args(d.RowEvents),
                     help="per-row Prefect events (default: failures only)")
    run.add_argument("--reference-store", metavar="URL",
                     help="fsspec prefix (s3://bucket/refs) to upload local reference images to")
    run.add_argument("--reference-public-url", metavar="URL",
                     help="public base URL of --reference-store (default: presigned URLs)")
    run.add_argument("--shards", type=int, default=1, metavar="K",
                     help="run the rows as K shard flow runs on a work pool (needs PREFECT_API_URL)")
    run.add_argument("--work-pool", metavar="POOL", help="with --shards: the work pool of the shard deployment")
    run.add_argument("--shard-deployment", default=d.SHARD_DEPLOYMENT, metavar="FLOW/DEPLOYMENT")
    _common(run)

    recover = commands.add_parser("recover", help="collect tasks a stopped run left in flight")
    recover.add_argument("output", help="the output folder (or URL) of the earlier run")
    _common(recover)

    init = commands.add_parser(
        "init", help="write a deployable prefect.yaml and the sample prompts.csv into a folder"
    )
    init.add_argument("directory", nargs="?", default=".", metavar="DIR",
                      help="the project folder (default: the current folder; created if missing)")
    init.add_argument("--force", action="store_true", help="overwrite prefect.yaml and prompts.csv")

    commands.add_parser("simulator", help="run the local Evolink simulator (see its --help)")
    return parser


def _next_steps(args: argparse.Namespace, summary: Any) -> list[str]:
    """The exact commands that finish a run's unfinished rows."""
    steps = []
    if summary.in_flight:
        steps.append(f"prefect-seedream recover {shlex.quote(args.output)}")
    if summary.outcome_unknown:
        command = [a for a in sys.argv[1:] if a != "--resubmit-unknown"]
        steps.append(shlex.join(["prefect-seedream", *command, "--resubmit-unknown"]))
    return steps


def _same_command() -> str:
    return shlex.join(["prefect-seedream", *sys.argv[1:]])


def _balance_text(balance: float | None) -> str:
    if balance is None:
        return "not known (the account reports no limit, or GET /v1/credits did not answer)"
    return f"{balance:g} credits"


def _print_summary(args: argparse.Namespace, summary: Any, state: Any) -> None:
    print()
    print(f"Rows:       {summary.rows} ({summary.invalid} invalid)")
    if summary.dry_run:
        print(f"Estimate:   at most {summary.estimated_credits:g} credits (dry run: nothing submitted)")
        print(f"Balance:    {_balance_text(summary.balance)}")
        return
    print(f"Succeeded:  {summary.succeeded} ({summary.reused} already stored by an earlier run)")
    print(f"Failed:     {summary.failed}")
    for label, value in (("Unknown outcome", summary.outcome_unknown), ("In flight", summary.in_flight),
                         ("Skipped", summary.skipped)):
        if value:
            print(f"{label + ':':<12}{value}")
    print(f"Images:     {summary.images}")
    credits = f"{summary.credits:g}"
    if summary.credits_at_risk:
        credits += f" (+{summary.credits_at_risk:g} reserved by submissions that may be charged)"
    print(f"Credits:    {credits}")
    if summary.balance is not None:
        print(f"Balance:    {_balance_text(summary.balance)} after the run")
    print(f"Manifest:   {summary.manifest}")
    if getattr(summary, "contact_sheet", None):
        print(f"Contact sheet: {summary.contact_sheet} (open it in a browser)")
    print(f"Run state:  {state.type.value.title()}: {state.message}")
    if summary.stopped is not None:
        print(f"\n{summary.stopped.sentence()}")
        print(f"  {_same_command()}")
    if summary.outcome_unknown:
        print(
            f"\n{summary.outcome_unknown} row(s) have an unknown outcome: their submission may have "
            "created (and billed) a task, but no answer was recorded and the API's task list did "
            "not show it. To submit them again with the same Idempotency-Key (the API returns the "
            "task a lost submission created, if any), run:"
        )
        print(f"  {_next_steps(args, summary)[-1]}")
    if summary.in_flight:
        print(f"\n{summary.in_flight} task(s) are still in flight; collect them (nothing is paid) with:")
        print(f"  {_next_steps(args, summary)[0]}")


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
                    args.dataset, args.output, model=args.model, size=args.size, quality=args.quality,
                    output_format=args.output_format, n=args.n,
                    prompt_priority=args.prompt_priority, max_concurrency=args.max_concurrency,
                    concurrency_limit_name=args.concurrency_limit, credentials=_credentials(args),
                    max_credits=args.max_credits, dry_run=args.dry_run, max_wait_seconds=args.max_wait,
                    retries=args.retries, retry_delay_seconds=args.retry_delay,
                    resubmit_unknown=args.resubmit_unknown, wait_for_quota=args.wait_for_quota,
                    rows_per_task=args.rows_per_task, reference_store=args.reference_store,
                    reference_public_url=args.reference_public_url,
                    row_events=args.row_events, shards=args.shards, work_pool=args.work_pool,
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
            args.output, credentials=_credentials(args), max_wait_seconds=args.max_wait,
            return_state=True,
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
