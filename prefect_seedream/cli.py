"""The ``prefect-seedream`` command: run a dataset, recover in-flight tasks, run the simulator.

With no ``SEEDREAM_API_KEY`` (and no credentials block), ``run`` and ``recover``
start the bundled simulator on a free loopback port and use it: nothing is
spent and no key is needed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

SIMULATOR_KEY = "sk-simulator-local"


#: Settings of the embedded (temporary) Prefect server, measured in benchmarks/: with
#: Prefect's defaults a 1000-row run at concurrency 64 dropped 2501 events and the
#: server recorded task runs long after the flow ended; with these, none was dropped.
EMBEDDED_SERVER_SETTINGS = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
    "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_BATCH_SIZE": "100",
    "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_READ_BATCH_SIZE": "100",
    "PREFECT_SERVER_SERVICES_EVENT_PERSISTER_BATCH_SIZE": "200",
    "PREFECT_SERVER_SERVICES_EVENT_PERSISTER_READ_BATCH_SIZE": "100",
}


def _configure_prefect(verbose: bool) -> None:
    """Tune the embedded server and keep Prefect's console quiet (the UI gets every line)."""
    for name, value in EMBEDDED_SERVER_SETTINGS.items():
        os.environ.setdefault(name, value)
    if not verbose:
        os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "WARNING")


@contextmanager
def _api_or_simulator(args: argparse.Namespace) -> Iterator[None]:
    """Use the real API when a key or block is given, else the bundled simulator."""
    if os.environ.get("SEEDREAM_API_KEY") or args.credentials_block:
        yield
        return
    from prefect_seedream.simulator import SimulatorConfig, running_simulator

    config = SimulatorConfig(latency_seconds=args.simulator_latency, jitter_seconds=args.simulator_latency / 4)
    with running_simulator(config) as simulator:
        print(
            f"No SEEDREAM_API_KEY set: using the bundled simulator at {simulator.base_url} "
            "(no credits are spent)."
        )
        os.environ["SEEDREAM_API_KEY"] = SIMULATOR_KEY
        os.environ["SEEDREAM_BASE_URL"] = simulator.base_url
        try:
            yield
        finally:
            os.environ.pop("SEEDREAM_API_KEY", None)
            os.environ.pop("SEEDREAM_BASE_URL", None)


def _credentials(args: argparse.Namespace) -> Any:
    if not args.credentials_block:
        return None
    from prefect_seedream.credentials import SeedreamCredentials

    return SeedreamCredentials.load(args.credentials_block)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--credentials-block", metavar="NAME", help="a saved SeedreamCredentials block")
    parser.add_argument("--simulator-latency", type=float, default=2.0, metavar="SECONDS",
                        help="latency of the bundled simulator when no API key is set (default 2)")
    parser.add_argument("--verbose", action="store_true", help="show Prefect's log lines")


def build_parser() -> argparse.ArgumentParser:
    """The command line's parser."""
    parser = argparse.ArgumentParser(prog="prefect-seedream", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="generate images for every row of a dataset")
    run.add_argument("dataset", help="a .csv, .tsv, .jsonl or .parquet file (path or fsspec URL)")
    run.add_argument("--output", default="output", help="folder or fsspec URL (default ./output)")
    run.add_argument("--model", default="doubao-seedream-4.5",
                     choices=["doubao-seedream-4.0", "doubao-seedream-4.5"])
    run.add_argument("--size", default="2K", choices=["1K", "2K", "4K"])
    run.add_argument("--n", type=int, default=1, help="default most images per prompt (1-15)")
    run.add_argument("--prompt-priority", default="standard", choices=["standard", "fast"])
    run.add_argument("--max-concurrency", type=int, default=8)
    run.add_argument("--concurrency-limit", metavar="NAME", help="a Prefect global concurrency limit")
    run.add_argument("--max-credits", type=float, help="budget for this run")
    run.add_argument("--dry-run", action="store_true", help="validate and estimate credits only")
    run.add_argument("--max-wait", type=float, default=900.0, help="wait cap per task, seconds")
    run.add_argument("--retries", type=int, default=2)
    run.add_argument("--retry-delay", type=float, default=10.0, help="first retry delay, seconds")
    run.add_argument("--resubmit-unknown", action="store_true",
                     help="resubmit rows whose earlier submission outcome is unknown (may pay twice)")
    _common(run)

    recover = commands.add_parser("recover", help="collect tasks a stopped run left in flight")
    recover.add_argument("output", help="the output folder (or URL) of the earlier run")
    recover.add_argument("--max-wait", type=float, default=900.0)
    _common(recover)

    commands.add_parser("simulator", help="run the local Evolink simulator (see its --help)")
    return parser


def _print_summary(summary: Any, state: Any) -> None:
    print()
    print(f"Rows:       {summary.rows} ({summary.invalid} invalid)")
    if summary.dry_run:
        print(f"Estimate:   at most {summary.estimated_credits:g} credits (dry run: nothing submitted)")
        return
    print(f"Succeeded:  {summary.succeeded} ({summary.reused} already stored by an earlier run)")
    print(f"Failed:     {summary.failed}")
    for label, value in (("Unknown outcome", summary.outcome_unknown), ("In flight", summary.in_flight),
                         ("Skipped", summary.skipped)):
        if value:
            print(f"{label + ':':<12}{value}")
    print(f"Images:     {summary.images}")
    print(f"Credits:    {summary.credits:g}")
    print(f"Manifest:   {summary.manifest}")
    print(f"Run state:  {state.type.value.title()}: {state.message}")


def _run(args: argparse.Namespace) -> int:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from prefect_seedream.dataset import DatasetError
    from prefect_seedream.flows import generate_dataset
    from prefect_seedream.progress import listening

    with _api_or_simulator(args), Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[failed]} not succeeded"), TimeElapsedColumn(),
        transient=False,
    ) as bar:
        job = bar.add_task("Generating", total=None, failed=0)

        def on_row(line: Any) -> None:
            bar.update(job, advance=1, failed=bar.tasks[job].fields["failed"] + (line.status != "succeeded"))

        with listening(on_row, on_total=lambda rows: bar.update(job, total=rows)):
            try:
                state = asyncio.run(generate_dataset(
                    args.dataset, args.output, model=args.model, size=args.size, n=args.n,
                    prompt_priority=args.prompt_priority, max_concurrency=args.max_concurrency,
                    concurrency_limit_name=args.concurrency_limit, credentials=_credentials(args),
                    max_credits=args.max_credits, dry_run=args.dry_run, max_wait_seconds=args.max_wait,
                    retries=args.retries, retry_delay_seconds=args.retry_delay,
                    resubmit_unknown=args.resubmit_unknown, return_state=True,
                ))
            except (DatasetError, ValueError) as exc:
                bar.stop()
                print(f"error: {exc}", file=sys.stderr)
                return 2
    summary = state.result(raise_on_failure=False)
    if not hasattr(summary, "rows"):
        print(f"error: the run ended {state.type.value.lower()}: {summary or state.message}", file=sys.stderr)
        return 1
    _print_summary(summary, state)
    return 0 if state.is_completed() else 1


def _recover(args: argparse.Namespace) -> int:
    from prefect_seedream.flows import recover_dataset

    with _api_or_simulator(args):
        state = asyncio.run(recover_dataset(
            args.output, credentials=_credentials(args), max_wait_seconds=args.max_wait,
            return_state=True,
        ))
    print(f"{state.type.value.title()}: {state.message}")
    return 0 if state.is_completed() else 1


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``prefect-seedream``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["simulator"]:  # its own parser: prefect-seedream simulator --help
        from prefect_seedream.simulator import main_simulator

        return main_simulator(argv[1:])
    args = build_parser().parse_args(argv)
    _configure_prefect(args.verbose)
    if args.command == "run":
        return _run(args)
    return _recover(args)


if __name__ == "__main__":
    raise SystemExit(main())
