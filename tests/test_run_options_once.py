"""The run options written once, and the output opened once (issue 21, "the house").

:class:`RunOptions` is the one definition of a run's options: the command line's flags are
made from its fields, the flows and ``generate_many`` build it from their parameters (whose
names, types and defaults must stay those of its fields: they are the Prefect UI's form), and
the hooks of a stopped run read it back. :class:`Output` is a run's output, opened once and
passed down. Pure and fast: no Prefect server, no simulator.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import subprocess
import sys
import typing
from pathlib import Path
from typing import Any

import pytest
from pydantic import TypeAdapter

from prefect_seedream import cli
from prefect_seedream.engine.options import STORAGE_OPTION_FIELDS, RunOptions
from prefect_seedream.engine.output import Output
from prefect_seedream.engine.output_lock import OutputLockedError
from prefect_seedream.engine.run_folder import RUNS_DIR, RunDescription
from prefect_seedream.flows import generate_dataset, generate_shard, recover_dataset
from prefect_seedream.hooks import call_parameters
from prefect_seedream.tasks import generate_many

ROOT = Path(__file__).resolve().parent.parent
FIELDS = RunOptions.model_fields
#: The options on the command line: all but the fsspec options (they may hold credentials).
FLAG_FIELDS = [name for name in FIELDS if name not in STORAGE_OPTION_FIELDS]


# -- the flows' signatures ----------------------------------------------------------------------


def option_parameters(fn: Any) -> dict[str, tuple[Any, Any]]:
    """The parameters of ``fn`` that are RunOptions fields: name -> (type hint, default)."""
    hints = typing.get_type_hints(fn, include_extras=True)
    return {
        name: (hints[name], parameter.default)
        for name, parameter in inspect.signature(fn).parameters.items()
        if name in FIELDS
    }


def field_schema(name: str) -> dict[str, Any]:
    """The JSON schema of a field's type (its title, description and default left out)."""
    schema = dict(RunOptions.model_json_schema()["properties"][name])
    for key in ("title", "description", "default"):
        schema.pop(key, None)
    return schema


@pytest.mark.parametrize(
    "fn", [generate_dataset.fn, generate_many.fn, recover_dataset.fn], ids=["generate_dataset", "generate_many", "recover_dataset"]
)
def test_option_parameters_are_the_fields(fn: Any) -> None:
    """A parameter named as an option has the option's type (constraints included) and default."""
    parameters = option_parameters(fn)
    assert parameters, f"{fn.__name__} takes no run option"
    for name, (hint, default) in parameters.items():
        assert default == FIELDS[name].default, f"{fn.__name__}({name}=...) default"
        schema = TypeAdapter(hint).json_schema()
        schema.pop("title", None)
        assert schema == field_schema(name), f"{fn.__name__}({name}: ...) type"


def test_every_option_is_a_parameter_of_the_dataset_flow() -> None:
    assert set(FIELDS) <= set(option_parameters(generate_dataset.fn))


def test_the_shard_flow_takes_the_options_whole() -> None:
    parameters = inspect.signature(generate_shard.fn).parameters
    assert "options" in parameters and not set(parameters) & set(FIELDS)


def test_the_flows_build_the_options_from_their_parameters() -> None:
    """No flow (nor generate_many) lists the options a second time to build RunOptions."""
    for path in ("prefect_seedream/flows.py", "prefect_seedream/tasks.py"):
        calls = [
            ast.unparse(node.func) for node in ast.walk(ast.parse((ROOT / path).read_text(encoding="utf-8")))
            if isinstance(node, ast.Call) and "RunOptions" in ast.unparse(node.func)
        ]
        assert calls and set(calls) == {"RunOptions.from_parameters"}, path


# -- the command line's flags ----------------------------------------------------------------


def parse(*argv: str) -> RunOptions:
    args = cli.build_parser().parse_args(["run", "rows.csv", *argv])
    return RunOptions.from_parameters(cli.run_options(args))


def test_no_flags_are_the_defaults() -> None:
    assert parse() == RunOptions()


def test_every_flag_sets_its_option() -> None:
    argv = [
        "--model", "doubao-seedream-4.0", "--size", "16:9", "--quality", "2K", "--n", "3",
        "--prompt-priority", "fast", "--max-concurrency", "12", "--concurrency-limit-name", "shared",
        "--max-credits", "7.5", "--max-wait-seconds", "60", "--poll-interval", "0.5",
        "--retries", "4", "--retry-delay-seconds", "0.25", "--resubmit-unknown", "--wait-for-quota",
        "--rows-per-task", "20", "--row-events", "all", "--reference-store", "memory://refs",
        "--reference-public-url", "https://cdn.example.com/refs",
    ]
    expected = RunOptions(
        model="doubao-seedream-4.0", size="16:9", quality="2K", n=3, prompt_priority="fast",
        max_concurrency=12, concurrency_limit_name="shared", max_credits=7.5, max_wait_seconds=60,
        poll_interval=0.5, retries=4, retry_delay_seconds=0.25, resubmit_unknown=True,
        wait_for_quota=True, rows_per_task=20, row_events="all", reference_store="memory://refs",
        reference_public_url="https://cdn.example.com/refs",
    )
    assert parse(*argv) == expected
    assert {name for name in FLAG_FIELDS if getattr(expected, name) != FIELDS[name].default} == set(FLAG_FIELDS) - {
        "output_format"  # a 5.0 model's: set below
    }
    assert parse("--model", "doubao-seedream-5.0-lite", "--output-format", "png").output_format == "png"


def test_the_former_flag_names_still_work() -> None:
    former = parse("--concurrency-limit", "shared", "--max-wait", "60", "--retry-delay", "0.5")
    assert former == parse(
        "--concurrency-limit-name", "shared", "--max-wait-seconds", "60", "--retry-delay-seconds", "0.5"
    )
    assert (former.concurrency_limit_name, former.max_wait_seconds, former.retry_delay_seconds) == ("shared", 60, 0.5)


def test_every_option_but_fsspec_options_has_a_flag_with_its_description() -> None:
    run = cli.build_parser()._subparsers._group_actions[0].choices["run"]  # type: ignore[union-attr]
    by_dest = {action.dest: action for action in run._actions}
    for name in FLAG_FIELDS:
        action = by_dest[name]
        assert f"--{name.replace('_', '-')}" in action.option_strings
        assert action.help.startswith((FIELDS[name].description or "").rstrip("."))
    assert not set(STORAGE_OPTION_FIELDS) & set(by_dest)
    assert by_dest["quality"].choices == typing.get_args(typing.get_args(FIELDS["quality"].annotation)[0])


@pytest.mark.parametrize("argv", [["--quality", "8K"], ["--n", "many"], ["--row-events", "some"]])
def test_a_bad_flag_value_is_refused_by_the_parser(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        parse(*argv)
    assert exit_info.value.code == 2


def test_recover_takes_the_options_of_the_recovery_flow() -> None:
    takes = set(option_parameters(recover_dataset.fn)) - set(STORAGE_OPTION_FIELDS)
    assert set(cli.RECOVER_OPTIONS) == takes
    args = cli.build_parser().parse_args(["recover", "out", "--max-wait", "30", "--poll-interval", "1"])
    assert cli.run_options(args) == {"max_concurrency": FIELDS["max_concurrency"].default,
                                     "max_wait_seconds": 30.0, "poll_interval": 1.0}


def test_the_docstring_lists_every_option() -> None:
    doc = RunOptions.__doc__ or ""
    for name, field in FIELDS.items():
        assert f"    {name}: {(field.description or '')[:30]}" in doc


# -- the output ----------------------------------------------------------------------------------


def test_an_output_is_opened_once_and_shares_its_store(tmp_path: Path) -> None:
    output = Output.open(str(tmp_path / "out"), {"auto_mkdir": True})
    assert output.uri == str(tmp_path / "out") and (tmp_path / "out").is_dir()
    parts = output.run_folder("run-1")
    assert parts.store is output.store and parts.run_id == "run-1"
    assert output.ledger("http://127.0.0.1:8787").store is output.store
    with pytest.raises(dataclasses.FrozenInstanceError):
        output.uri = "elsewhere"  # type: ignore[misc]


def test_an_output_in_memory() -> None:
    output = Output.open("memory://house/out")
    uri = output.spill([{"id": "fox", "prompt": "A red fox"}])
    assert (output.store.relative_of(uri) or "").startswith(".seedream/inputs/") and output.store.exists(uri)
    assert output.spill([{"id": "fox", "prompt": "A red fox"}]) == uri  # the same rows, the same file


async def test_the_lock_of_an_output(tmp_path: Path) -> None:
    output = Output.open(str(tmp_path))
    async with output.lock("run-1"):
        output.check_held_by("run-1")
        with pytest.raises(OutputLockedError):
            output.check_held_by("run-2")
        with pytest.raises(OutputLockedError):
            async with Output.open(str(tmp_path)).lock("run-2"):
                pass
    with pytest.raises(OutputLockedError):
        output.check_held_by("run-1")


def test_run_json_never_holds_fsspec_options(tmp_path: Path) -> None:
    output = Output.open(str(tmp_path))
    secret = {"key": "AKIA...", "secret": "s"}
    options = RunOptions(storage_options=secret, dataset_storage_options=secret, max_credits=3)
    parts = output.run_folder("run-1")
    parts.describe(RunDescription(dataset="rows.csv", api="http://api", options=options, total_rows=2))
    assert "AKIA" not in (tmp_path / RUNS_DIR / "run-1" / "run.json").read_text()
    read = parts.description()
    assert read is not None and read.options == options.without_secrets()
    given = RunOptions.from_parameters({"storage_options": secret, "output": "s3://b/out"})
    restored = read.options.with_storage_options_of(given).for_dataset("s3://b/rows.csv", "s3://b/out")
    assert restored.storage_options == restored.dataset_storage_options == secret
    assert restored.max_credits == 3
    output.clear_leftovers()
    assert not (tmp_path / RUNS_DIR).exists()


def test_the_hooks_read_the_flows_defaults() -> None:
    parameters = call_parameters(generate_dataset, {"dataset": "rows.csv"})
    assert parameters["output"] == inspect.signature(generate_dataset.fn).parameters["output"].default
    assert RunOptions.from_parameters(parameters) == RunOptions()


# -- the house's rules -----------------------------------------------------------------------


def test_the_engine_imports_no_prefect() -> None:
    modules = sorted(
        f"prefect_seedream.engine.{path.stem}" for path in (ROOT / "prefect_seedream" / "engine").glob("*.py")
    )
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'prefect' or name.startswith('prefect.'):\n"
        "            raise ImportError('the engine imported ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        f"for name in {modules!r}:\n"
        "    __import__(name)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr


def test_no_step_of_a_run_is_over_60_lines() -> None:
    """``run_in_output`` and its steps: each body at most 60 lines (its docstring aside)."""
    tree = ast.parse((ROOT / "prefect_seedream" / "runs.py").read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body[1:] if ast.get_docstring(node) else node.body
            lines = body[-1].end_lineno - body[0].lineno + 1  # type: ignore[operator]
            assert lines <= 60, f"{node.name}: {lines} lines"
