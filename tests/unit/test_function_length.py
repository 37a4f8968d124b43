"""No function body of the plugin runs over 60 lines (the simulator aside): a longer one is
split into named steps."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

PACKAGE = Path(__file__).resolve().parents[2] / "prefect_seedream"
MOST_LINES = 60


def body_lines(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """Lines of a function's body, its docstring left out."""
    body = node.body
    first = body[0]
    if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
        if len(body) == 1:
            return 0
        first = body[1]
    assert node.end_lineno is not None
    return node.end_lineno - first.lineno + 1


def long_functions(root: Path) -> list[str]:
    found = []
    for path in sorted(root.rglob("*.py")):
        if "simulator" in path.relative_to(root).parts:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and body_lines(node) > MOST_LINES:
                found.append(f"{path.relative_to(root.parent)}:{node.lineno} {node.name} ({body_lines(node)} lines)")
    return found


def test_no_function_body_runs_over_60_lines() -> None:
    assert long_functions(PACKAGE) == []


def test_the_check_sees_a_long_function(tmp_path: Path) -> None:
    (tmp_path / "long.py").write_text(
        'def f():\n    """Doc."""\n' + "".join(f"    x{i} = {i}\n" for i in range(61)), encoding="utf-8"
    )
    (tmp_path / "short.py").write_text("def g():\n" + "    pass\n" * 60, encoding="utf-8")
    assert long_functions(tmp_path) == [f"{tmp_path.name}/long.py:1 f (61 lines)"]
