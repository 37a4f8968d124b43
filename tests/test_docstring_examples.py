"""Every fenced ```` ```python ```` example in a docstring of the package runs here (issue 21).

The ``>>>`` examples run as doctests (``tests/test_ledger_and_parts.py``); the fenced ones are
those that need what a user has: an API, a Prefect API and a working folder. Each block runs
as written, in a copy of its module's globals (as a doctest does), with:

* ``SEEDREAM_API_KEY`` / ``SEEDREAM_BASE_URL`` pointing at the bundled simulator, without
  latency (and a wait polls a task first after 0.05 s, not after the task's estimate);
* a real Prefect API (the ``prefect_api`` fixture), where a ``SeedreamCredentials`` block
  ``evolink`` (for the simulator) and a global concurrency limit ``evolink`` exist;
* a fresh temporary working folder holding a two-row ``prompts.csv``.

A block with a top-level ``await`` runs in an event loop. A block fails its test when it
raises, or when a flow run it started did not end Completed (a flow called with
``return_state=True`` does not raise). The collector finds every fenced block of every
docstring; a fence it cannot account for (outside a docstring, unlabelled, or of another
language than those below) fails :func:`test_every_fence_of_the_package_is_an_example_run_here`.
"""

from __future__ import annotations

import ast
import asyncio
import importlib
import inspect
import linecache
import re
import textwrap
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import prefect_seedream
from prefect_seedream.simulator import RunningSimulator, SimulatorConfig, running_simulator

PACKAGE = Path(prefect_seedream.__file__).parent
ROOT = PACKAGE.parent
API_KEY = "sk-docstring-examples"
#: Fenced blocks that are not Python, and so not run (none today).
NOT_CODE = frozenset({"text", "console", "json", "yaml", "toml"})
FENCE = re.compile(
    r"^(?P<indent>[ \t]*)```(?P<lang>[^\n`]*)\n(?P<body>.*?)^(?P=indent)```[ \t]*$",
    flags=re.MULTILINE | re.DOTALL,
)
FENCE_LINE = re.compile(r"^[ \t]*```", flags=re.MULTILINE)
PROMPTS_CSV = "id,prompt\nfox,A red fox in the snow\nlighthouse,A lighthouse at dawn\n"


@dataclass(frozen=True)
class Example:
    """One fenced block of a docstring."""

    path: Path
    module: str
    qualname: str
    number: int  # its rank among the blocks of its docstring
    line: int  # the line of the source file where its code starts
    language: str
    code: str

    @property
    def id(self) -> str:
        return f"{self.module}:{self.qualname}:{self.number}"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _docstrings(tree: ast.Module) -> Iterator[tuple[str, ast.Constant]]:
    """(qualified name, docstring node) of the module, its classes and functions, nested too."""

    def visit(node: ast.AST, prefix: str) -> Iterator[tuple[str, ast.Constant]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                name = f"{prefix}{child.name}"
                yield from own(child, name)
                yield from visit(child, f"{name}.")

    def own(node: ast.AST, name: str) -> Iterator[tuple[str, ast.Constant]]:
        body = getattr(node, "body", [])
        first = body[0].value if body and isinstance(body[0], ast.Expr) else None
        if isinstance(first, ast.Constant) and isinstance(first.value, str):
            yield name, first

    yield from own(tree, "<module>")
    yield from visit(tree, "")


def collect(path: Path) -> list[Example]:
    """Every fenced block in the docstrings of one source file."""
    found = []
    for qualname, node in _docstrings(ast.parse(path.read_text(encoding="utf-8"))):
        text: str = node.value
        for number, match in enumerate(FENCE.finditer(text), start=1):
            found.append(Example(
                path=path, module=_module_name(path), qualname=qualname, number=number,
                line=node.lineno + text[:match.start("body")].count("\n"),
                language=match.group("lang").strip(), code=textwrap.dedent(match.group("body")),
            ))
    return found


def sources() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def examples() -> list[Example]:
    return [example for path in sources() for example in collect(path) if example.language in ("python", "py")]


# -- what every example finds ------------------------------------------------------------------


@pytest.fixture(scope="module")
def example_api(prefect_api: None) -> Iterator[RunningSimulator]:
    """The simulator the examples call, and the global concurrency limit they may name."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.exceptions import ObjectAlreadyExists

    with get_client(sync_client=True) as client:
        try:
            client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name="evolink", limit=50))
        except ObjectAlreadyExists:
            pass
    config = SimulatorConfig(latency_seconds=0.0, jitter_seconds=0.0)
    with running_simulator(config) as sim:
        yield sim


@pytest.fixture
def example_folder(
    example_api: RunningSimulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """A fresh working folder with ``prompts.csv``; the environment and the ``evolink`` block
    point at the simulator (saved again for each example: one example saves its own), whose
    tasks are done at once."""
    from prefect_seedream.api.client import PollPolicy
    from prefect_seedream.credentials import SeedreamCredentials

    monkeypatch.setattr(PollPolicy, "first_delay", lambda policy, estimated_time: 0.05)
    monkeypatch.setenv("SEEDREAM_API_KEY", API_KEY)
    monkeypatch.setenv("SEEDREAM_BASE_URL", example_api.base_url)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "prompts.csv").write_text(PROMPTS_CSV, encoding="utf-8")
    SeedreamCredentials(api_key=API_KEY, base_url=example_api.base_url).save("evolink", overwrite=True)
    return tmp_path


def run_example(example: Example) -> None:
    """Run one block in a copy of its module's globals; a top-level ``await`` runs in a loop."""
    from prefect import tags

    source = f"{example.path.relative_to(ROOT)}:{example.line} ({example.qualname}, example {example.number})"
    linecache.cache[source] = (len(example.code), None, example.code.splitlines(True), source)
    code = compile(example.code, source, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    namespace: dict[str, Any] = dict(vars(importlib.import_module(example.module)))
    tag = f"docstring-example-{uuid.uuid4().hex[:12]}"
    with tags(tag):
        if code.co_flags & inspect.CO_COROUTINE:
            asyncio.run(eval(code, namespace))
        else:
            exec(code, namespace)  # noqa: S102 - the example, as a user runs it
    not_completed = [f"{run.name}: {run.state}" for run in _flow_runs_tagged(tag) if not run.state.is_completed()]
    assert not not_completed, f"{source}: flow runs that did not complete: {not_completed}"


def _flow_runs_tagged(tag: str) -> list[Any]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags

    with get_client(sync_client=True) as client:
        return client.read_flow_runs(flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=[tag])))


# -- the tests ---------------------------------------------------------------------------------


@pytest.mark.parametrize("example", examples(), ids=lambda example: example.id)
def test_the_docstring_example_runs(example: Example, example_folder: Path) -> None:
    run_example(example)


def test_every_fence_of_the_package_is_an_example_run_here() -> None:
    """Each ```` ``` ```` line of the package opens or closes a block found in a docstring,
    labelled ``python`` (run above) or one of :data:`NOT_CODE`."""
    problems = []
    for path in sources():
        found = collect(path)
        fence_lines = len(FENCE_LINE.findall(path.read_text(encoding="utf-8")))
        if fence_lines != 2 * len(found):
            problems.append(f"{path.relative_to(ROOT)}: {fence_lines} fence lines, {len(found)} blocks "
                            "found in docstrings (a fence outside a docstring, or unclosed?)")
        problems += [
            f"{example.id}: a block labelled {example.language!r}: label it python (it runs here) "
            f"or one of {sorted(NOT_CODE)}"
            for example in found if example.language not in ("python", "py", *NOT_CODE)
        ]
    assert not problems, "\n".join(problems)
    assert len(examples()) >= 15  # the collector itself still finds them


def test_no_docstring_example_is_skipped() -> None:
    """A ``>>>`` example marked ``+SKIP`` never runs: make it run, or make it prose."""
    skipped = [
        f"{path.relative_to(ROOT)}:{number}"
        for path in sources()
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1)
        if re.search(r"doctest:.*\+SKIP", line)
    ]
    assert not skipped, f"docstring examples that never run: {skipped}"


def test_every_public_task_flow_and_block_has_an_example() -> None:
    from prefect import Flow, Task
    from prefect.blocks.core import Block

    missing = []
    for name in prefect_seedream.__all__:
        value = getattr(prefect_seedream, name)
        is_block = inspect.isclass(value) and issubclass(value, Block)
        if isinstance(value, (Task, Flow)) or is_block:
            doc = inspect.getdoc(value.fn if isinstance(value, (Task, Flow)) else value) or ""
            section = doc.partition("\nExamples:\n")[2]
            if "```python" not in section and ">>>" not in section:
                missing.append(name)
    assert not missing, f"public tasks, flows and blocks without an Examples section: {missing}"
