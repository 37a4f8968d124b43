"""The Prefect layer's docstring examples, and the row ranges of shards.

The ledger record's rules, the manifest's parts, a stop shared by shards, the batches of rows
and the docstring examples of the API layer, the engine and the simulator are unit tests:
``tests/unit/test_ledger.py``.
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import prefect_seedream
from prefect_seedream.shards import split_rows
from tests.unit.test_ledger import prefect_free


def _modules() -> list[str]:
    return sorted(
        info.name for info in pkgutil.walk_packages(prefect_seedream.__path__, "prefect_seedream.")
        if not prefect_free(info.name)
    )


@pytest.mark.parametrize("module_name", _modules())
def test_docstring_examples_run(module_name: str) -> None:
    module = importlib.import_module(module_name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{result.failed} docstring example(s) of {module_name} failed"


# -- row ranges ------------------------------------------------------------------------------


@pytest.mark.parametrize(("rows", "shards"), [(1, 1), (10, 3), (20_000, 3), (7, 7), (3, 5), (1001, 4)])
def test_shards_cover_every_row_once_in_order(rows: int, shards: int) -> None:
    ranges = split_rows(rows, shards)
    covered = [n for r in ranges for n in range(r.first, r.last + 1)]
    assert covered == list(range(1, rows + 1))
    sizes = [r.last - r.first + 1 for r in ranges]
    assert len(ranges) == min(rows, shards) and max(sizes) - min(sizes) <= 1
