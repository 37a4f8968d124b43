"""The package's layers, as imports (issue 21): what may import what.

* The API layer (``prefect_seedream/api/``) imports nothing of the package outside itself.
* The engine (``prefect_seedream/engine/``) imports the API layer and itself, never the Prefect
  layer (the top-level modules: tasks, flows, runs, execution, ...) nor the simulator.
* The simulator (``prefect_seedream/simulator/``) imports nothing of the package outside itself
  and the API layer (today it imports nothing outside itself at all).
* None of the three imports Prefect, and each of their modules imports in a process where
  Prefect cannot be imported.
* The unit tier's own test modules import neither Prefect nor the Prefect layer.

Imports are read from the syntax tree of each module: every ``import`` statement, including
those inside functions and under ``if TYPE_CHECKING``, relative ones resolved.

The share of the package's lines (the simulator aside) that the engine and the API layer hold
is printed (``pytest -s``) and kept at 70 % at least.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import prefect_seedream

PACKAGE_DIR = Path(prefect_seedream.__file__).resolve().parent
UNIT_DIR = Path(__file__).resolve().parent
PREFECT_FREE_LAYERS = ("api", "engine", "simulator")
#: The target of issue 21 for the share of the package's lines (the simulator aside) in
#: engine/ + api/. It was 64.9 % when the engine was split off (8126 of 12517 lines) and 70.6 %
#: once rows, the run report and the slot pool moved there too (9228 of 13076).
MIN_ENGINE_AND_API_SHARE = 0.70


ROOT = PACKAGE_DIR.parent


def module_name(path: Path, root: Path = ROOT) -> str:
    relative = path.relative_to(root).with_suffix("")
    parts = list(relative.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules_of(layer: str, package_dir: Path = PACKAGE_DIR) -> list[Path]:
    return sorted((package_dir / layer).rglob("*.py"))


def imported_names(path: Path, root: Path = ROOT) -> list[tuple[int, str]]:
    """Every module name ``path`` imports (``from a import b`` gives ``a`` and ``a.b``), with
    its line; relative imports are resolved against the module's package (``root`` holds the
    package's folder)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")
                base_parts = base_parts[: len(base_parts) - (node.level - 1)]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            found.append((node.lineno, base))
            found.extend((node.lineno, f"{base}.{alias.name}") for alias in node.names if alias.name != "*")
    return found


def within(name: str, *prefixes: str) -> bool:
    return any(name == prefix or name.startswith(prefix + ".") for prefix in prefixes)


def package_imports_outside(
    layer: str, allowed: tuple[str, ...], package_dir: Path = PACKAGE_DIR
) -> list[str]:
    """``file:line name`` of each import of the package that is not under ``allowed``.

    ``from prefect_seedream.engine import ledger`` names ``prefect_seedream.engine`` and
    ``prefect_seedream.engine.ledger``: both are inside ``prefect_seedream.engine``. The bare
    ``prefect_seedream`` (its ``__init__``) counts as outside: it hands out the Prefect layer.
    """
    root = package_dir.parent
    return sorted({
        f"{path.relative_to(root)}:{line} {name}"
        for path in modules_of(layer, package_dir)
        for line, name in imported_names(path, root)
        if within(name, "prefect_seedream") and not within(name, *allowed)
    })


def prefect_imports(paths: list[Path], root: Path = ROOT) -> list[str]:
    """``file:line name`` of each import of ``prefect`` or ``prefect.*``."""
    return sorted(
        f"{path.relative_to(root)}:{line} {name}"
        for path in paths
        for line, name in imported_names(path, root)
        if within(name, "prefect")
    )


# -- (a) no Prefect -------------------------------------------------------------------------------


def test_the_engine_the_api_layer_and_the_simulator_import_with_prefect_blocked() -> None:
    """One fresh process, ``prefect`` and ``prefect.*`` refused by a finder on
    ``sys.meta_path``: every module of the three layers imports, and no Prefect module is
    loaded at the end."""
    names = [module_name(path) for layer in PREFECT_FREE_LAYERS for path in modules_of(layer)]
    assert len(names) > 40 and "prefect_seedream.engine.runner" in names
    script = textwrap.dedent(
        """
        import importlib, importlib.abc, json, sys, traceback

        class Blocked(importlib.abc.MetaPathFinder):
            def find_spec(self, fullname, path, target=None):
                if fullname == "prefect" or fullname.startswith("prefect."):
                    raise ImportError(f"blocked: {fullname}")

        sys.meta_path.insert(0, Blocked())
        failed = {}
        for name in json.loads(sys.argv[1]):
            try:
                importlib.import_module(name)
            except BaseException:
                failed[name] = traceback.format_exc(limit=-3)
        loaded = sorted(m for m in sys.modules if m == "prefect" or m.startswith("prefect."))
        print(json.dumps({"failed": failed, "prefect_loaded": loaded}))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script, json.dumps(names)],
        capture_output=True, text=True, timeout=120, cwd=ROOT, check=False,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["failed"] == {}, "\n".join(f"{k}:\n{v}" for k, v in report["failed"].items())
    assert report["prefect_loaded"] == []


@pytest.mark.parametrize("layer", PREFECT_FREE_LAYERS)
def test_no_module_of_the_layer_imports_prefect_even_lazily(layer: str) -> None:
    """The blocked import above sees module-level imports only; this reads every statement."""
    assert prefect_imports(modules_of(layer)) == []


# -- (b), (c), (d): what each layer may import of the package ----------------------------------


def test_the_api_layer_imports_nothing_of_the_package_outside_itself() -> None:
    assert package_imports_outside("api", ("prefect_seedream.api",)) == []


def test_the_simulator_imports_nothing_of_the_package_but_itself_and_the_api_layer() -> None:
    assert package_imports_outside("simulator", ("prefect_seedream.simulator", "prefect_seedream.api")) == []


def test_the_engine_imports_only_the_api_layer_and_itself() -> None:
    """Never the Prefect layer (tasks, flows, runs, execution, shards, batches, slots, events,
    artifacts, story, cli, credentials, clients, dispatch, hooks, ...), nor the simulator."""
    assert package_imports_outside("engine", ("prefect_seedream.engine", "prefect_seedream.api")) == []


def test_the_rules_see_a_violation(tmp_path: Path) -> None:
    """The reader of imports finds top-level, lazy, relative and TYPE_CHECKING imports (a copy
    of the package's layout with one offending engine module)."""
    engine = tmp_path / "prefect_seedream" / "engine"
    engine.mkdir(parents=True)
    (engine / "__init__.py").write_text("")
    (engine / "ledger.py").write_text("from prefect_seedream.api.models import GenerationRequest\n")
    probe = engine / "probe.py"
    probe.write_text(textwrap.dedent(
        """
        from typing import TYPE_CHECKING
        from . import ledger
        from .. import flows
        if TYPE_CHECKING:
            from prefect_seedream.slots import SlotPool
        def later():
            import prefect.events
            from ..simulator import running_simulator
        """
    ))
    allowed = ("prefect_seedream.engine", "prefect_seedream.api")
    wrong = package_imports_outside("engine", allowed, tmp_path / "prefect_seedream")
    assert {entry.split()[-1] for entry in wrong} == {
        "prefect_seedream", "prefect_seedream.flows", "prefect_seedream.simulator",
        "prefect_seedream.simulator.running_simulator", "prefect_seedream.slots",
        "prefect_seedream.slots.SlotPool",
    }
    assert wrong[0].startswith("prefect_seedream/engine/probe.py:4 ")
    assert [entry.split()[-1] for entry in prefect_imports([probe], tmp_path)] == ["prefect.events"]


# -- the unit tier itself -----------------------------------------------------------------------


def test_the_unit_tests_import_neither_prefect_nor_the_prefect_layer() -> None:
    """So that they pass alone (``make test-unit``, Prefect blocked) as in the whole suite."""
    tests = sorted(UNIT_DIR.glob("*.py"))
    assert prefect_imports(tests) == []
    allowed = tuple(f"prefect_seedream.{layer}" for layer in PREFECT_FREE_LAYERS)
    wrong = [
        f"{path.name}:{line} {name}"
        for path in tests
        for line, name in imported_names(path)
        # `import prefect_seedream` alone (its __init__ is light) and its lazy API names
        if within(name, "prefect_seedream") and not within(name, *allowed)
        and name not in ("prefect_seedream", *(f"prefect_seedream.{n}" for n in _api_names()))
    ]
    assert wrong == []


def _api_names() -> list[str]:
    import prefect_seedream.api

    return list(prefect_seedream.api.__all__)


# -- (e) the share of the engine and the API layer ------------------------------------------------


def _lines(paths: list[Path]) -> tuple[int, int]:
    """Physical lines, and lines of code (neither blank nor a comment)."""
    physical = code = 0
    for path in paths:
        for line in path.read_text(encoding="utf-8").splitlines():
            physical += 1
            stripped = line.strip()
            code += bool(stripped) and not stripped.startswith("#")
    return physical, code


def test_the_engine_and_the_api_layer_hold_most_of_the_package() -> None:
    every = sorted(PACKAGE_DIR.rglob("*.py"))
    without_simulator = [p for p in every if not p.is_relative_to(PACKAGE_DIR / "simulator")]
    engine, api = modules_of("engine"), modules_of("api")
    (engine_lines, engine_code), (api_lines, api_code) = _lines(engine), _lines(api)
    total_lines, total_code = _lines(without_simulator)
    share = (engine_lines + api_lines) / total_lines
    code_share = (engine_code + api_code) / total_code
    print(
        f"\nengine/ {engine_lines} + api/ {api_lines} = {engine_lines + api_lines} of {total_lines} "
        f"lines of the package without the simulator: {share:.1%} "
        f"(lines of code only: {engine_code + api_code} of {total_code}, {code_share:.1%}); "
        f"the Prefect layer and the rest: {total_lines - engine_lines - api_lines} lines"
    )
    assert share >= MIN_ENGINE_AND_API_SHARE, (
        f"engine/ + api/ hold {share:.1%} of the package's lines, below {MIN_ENGINE_AND_API_SHARE:.1%}"
    )
