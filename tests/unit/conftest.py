"""The unit tier: the engine and the API layer, with no Prefect at all (``make test-unit``).

Every test under ``tests/unit/`` is marked ``unit``. The fixtures of ``tests/conftest.py`` stay
available (the simulator's among them), except ``prefect_api``: asking for it here fails.

When pytest runs nothing but this folder (``make test-unit``, ``pytest tests/unit``), Prefect
cannot even be imported: a finder on ``sys.meta_path`` refuses ``prefect`` and ``prefect.*``,
and ``PREFECT_API_URL`` points at a closed port (``http://127.0.0.1:9/api``), so a test that
reached for a Prefect server would fail, never find one. In a run of the whole suite the same
tests run beside the Prefect ones (Prefect is imported by then); ``test_layers.py`` checks in
fresh processes that the engine and the API layer import without Prefect either way.
"""

from __future__ import annotations

import importlib.abc
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

UNIT_DIR = Path(__file__).resolve().parent
#: A port nothing listens on (discard): a Prefect client sent there fails at once.
CLOSED_PREFECT_API_URL = "http://127.0.0.1:9/api"


class PrefectBlocked(importlib.abc.MetaPathFinder):
    """Refuses to import ``prefect`` and its submodules (the unit tier runs without them)."""

    def find_spec(self, fullname: str, path: object, target: object = None) -> None:
        if fullname == "prefect" or fullname.startswith("prefect."):
            raise ImportError(f"{fullname} imported by the unit tier, which runs without Prefect")


def _only_unit_tests(config: pytest.Config) -> bool:
    """Whether every path pytest was given lies in this folder."""
    args = [arg.split("::")[0] for arg in config.args if not arg.startswith("-")]
    if not args:
        return False
    root = Path(config.invocation_params.dir)
    return all((root / arg).resolve().is_relative_to(UNIT_DIR) for arg in args)


def pytest_configure(config: pytest.Config) -> None:
    if not _only_unit_tests(config):
        return
    already = sorted(name for name in sys.modules if name == "prefect" or name.startswith("prefect."))
    if already:
        raise pytest.UsageError(f"the unit tier found Prefect imported before its tests: {already[:5]}")
    os.environ["PREFECT_API_URL"] = CLOSED_PREFECT_API_URL
    sys.meta_path.insert(0, PrefectBlocked())
    config.stash[_BLOCKED] = True


_BLOCKED = pytest.StashKey[bool]()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.resolve().is_relative_to(UNIT_DIR):
            item.add_marker(pytest.mark.unit)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """In a unit-only run, Prefect must still be absent at the end (nothing got past the finder)."""
    if session.config.stash.get(_BLOCKED, False):
        leaked = sorted(name for name in sys.modules if name == "prefect" or name.startswith("prefect."))
        if leaked:  # pragma: no cover - the finder raises first
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
            print(f"\nunit tier: Prefect was imported: {leaked[:5]}", file=sys.stderr)


@pytest.fixture(scope="session")
def prefect_api() -> Iterator[None]:
    """Overrides the suite's Prefect API: a unit test that asks for one is in the wrong folder."""
    pytest.fail("a unit test asked for a Prefect API (prefect_api): move it out of tests/unit/")
    yield  # pragma: no cover
