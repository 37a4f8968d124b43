"""A package people can install (issue 17): `prefect-seedream init`, the repository's copies of
what it writes, and the package's metadata (one version, valid classifiers, declared imports).
"""

from __future__ import annotations

import ast
import re
import sys
from importlib.metadata import packages_distributions, version
from pathlib import Path

import pytest
import yaml
from prefect.flows import load_flow_from_entrypoint

import prefect_seedream
from prefect_seedream.cli import main
from prefect_seedream.project import (
    ENTRYPOINTS,
    PREFECT_FILE,
    SAMPLE_DATASET,
    ProjectExistsError,
    init_project,
    project_files,
)

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10 (.ci/check-versions.sh): pytest brings tomli there
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())


def test_init_writes_the_deployments_and_the_sample_dataset(tmp_path: Path) -> None:
    folder = tmp_path / "new" / "project"

    assert main(["init", str(folder)]) == 0

    assert sorted(path.name for path in folder.iterdir()) == [PREFECT_FILE, SAMPLE_DATASET]
    config = yaml.safe_load((folder / PREFECT_FILE).read_text())
    assert "pull" not in config  # the runs work in the folder `prefect deploy` ran in
    by_name = {d["name"]: d for d in config["deployments"]}
    assert {name: d["entrypoint"] for name, d in by_name.items()} == ENTRYPOINTS
    assert by_name["generate-dataset"]["parameters"]["dataset"] == SAMPLE_DATASET
    sample = (REPO / "examples" / "prompts.csv").read_bytes()
    assert (folder / SAMPLE_DATASET).read_bytes() == sample


FLOW_NAMES = {
    "generate-dataset": "seedream-generate-dataset",
    "generate-shard": "seedream-generate-shard",
    "daily-content": "seedream-daily-content",
    "recover-after-failures": "seedream-recover-dataset",
}


@pytest.mark.parametrize("deployment", sorted(FLOW_NAMES))
def test_every_entrypoint_is_a_module_of_the_package(deployment: str) -> None:
    entrypoint = ENTRYPOINTS[deployment]
    assert re.fullmatch(r"prefect_seedream(\.\w+)+:\w+", entrypoint), entrypoint
    assert load_flow_from_entrypoint(entrypoint).name == FLOW_NAMES[deployment]


def test_init_refuses_to_overwrite_and_writes_nothing_then(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / SAMPLE_DATASET).write_text("id,prompt\nmine,My own prompt\n")

    assert main(["init", str(tmp_path)]) == 2

    assert "pass --force" in capsys.readouterr().err
    assert not (tmp_path / PREFECT_FILE).exists()  # nothing written, not even the other file
    assert (tmp_path / SAMPLE_DATASET).read_text().startswith("id,prompt\nmine")
    with pytest.raises(ProjectExistsError) as raised:
        init_project(tmp_path)
    assert raised.value.paths == [tmp_path / SAMPLE_DATASET]

    assert main(["init", str(tmp_path), "--force"]) == 0
    assert (tmp_path / SAMPLE_DATASET).read_bytes() == project_files()[SAMPLE_DATASET]


def test_init_into_a_path_that_is_a_file_fails_cleanly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "taken").write_text("a file")

    assert main(["init", str(tmp_path / "taken")]) == 2
    assert "cannot write into" in capsys.readouterr().err


@pytest.mark.parametrize("name", sorted(project_files()))
def test_the_repository_keeps_what_init_writes(name: str) -> None:
    """deployments/ is `prefect-seedream init deployments --force`: run it after changing
    prefect_seedream/project.py or prefect_seedream/data/prompts.csv."""
    assert (REPO / "deployments" / name).read_bytes() == project_files()[name], (
        f"deployments/{name} differs from what init writes: run "
        "`.venv/bin/prefect-seedream init deployments --force`"
    )


def test_the_sample_dataset_is_the_examples_one() -> None:
    packaged = Path(prefect_seedream.__file__).parent / "data" / "prompts.csv"
    assert packaged.read_bytes() == (REPO / "examples" / "prompts.csv").read_bytes()
    assert len(packaged.read_text().splitlines()) == 15  # a header and 14 prompts


def test_serve_py_serves_the_deployments_of_prefect_yaml() -> None:
    from deployments.serve import build_deployments

    config = yaml.safe_load(project_files()[PREFECT_FILE])
    served = {d.name: d for d in build_deployments()}
    assert list(served) == [d["name"] for d in config["deployments"]]
    for spec in config["deployments"]:
        deployment = served[spec["name"]]
        assert deployment.tags == spec["tags"]
        assert (deployment.parameters or {}) == spec.get("parameters", {})
        assert deployment.concurrency_limit == spec.get("concurrency_limit")
        assert [s.schedule.cron for s in deployment.schedules or []] == [
            s["cron"] for s in spec.get("schedules", [])
        ]
        assert [sorted(t.expect) for t in deployment.triggers] == [
            t["expect"] for t in spec.get("triggers", [])
        ]


# -- the package's metadata ---------------------------------------------------------------------


def test_one_version_everywhere() -> None:
    declared = PYPROJECT["project"]["version"]
    assert prefect_seedream.__version__ == version("prefect-seedream") == declared, (
        "the installed metadata is older than pyproject.toml: reinstall (make test does)"
    )
    assert f"## {declared} " in (REPO / "CHANGELOG.md").read_text()


def test_classifiers_are_real_and_match_the_tested_pythons() -> None:
    from trove_classifiers import classifiers as known

    project = PYPROJECT["project"]
    unknown = [c for c in project["classifiers"] if c not in known]
    assert not unknown, f"not trove classifiers: {unknown}"
    minors = sorted(
        int(c.rsplit(".", 1)[1]) for c in project["classifiers"]
        if re.fullmatch(r"Programming Language :: Python :: 3\.\d+", c)
    )
    low, high = re.fullmatch(r">=3\.(\d+),<3\.(\d+)", project["requires-python"]).groups()
    assert minors == list(range(int(low), int(high))), (minors, project["requires-python"])
    assert (REPO / "LICENSE").read_text().count("Apache License") >= 1
    assert project["license"] == "Apache-2.0"


def test_test_tools_are_a_dependency_group_not_an_extra() -> None:
    extras = PYPROJECT["project"]["optional-dependencies"]
    assert not {"dev", "browser"} & set(extras)
    group = " ".join(PYPROJECT["dependency-groups"]["dev"])
    for tool in ("pytest", "respx", "moto", "playwright", "ruff", "build", "twine"):
        assert tool in group
    requirements = [*PYPROJECT["project"]["dependencies"], *(r for rs in extras.values() for r in rs)]
    published = " ".join(requirements)
    assert not re.search(r"\b(pytest|respx|moto|playwright|ruff|twine)\b", published)


def _third_party_imports() -> dict[str, set[str]]:
    """Modules imported anywhere in the package, also inside functions: top-level name ->
    where (``file`` for an import at module level, ``file:function`` for one inside a def)."""
    found: dict[str, set[str]] = {}
    package = Path(prefect_seedream.__file__).parent

    def visit(node: ast.AST, where: str) -> None:
        for child in ast.iter_child_nodes(node):
            inner = where
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                inner = f"{where.split(':')[0]}:{child.name}"
            names: list[str] = []
            if isinstance(child, ast.Import):
                names = [alias.name for alias in child.names]
            elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
                names = [child.module]
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top != "prefect_seedream":
                    found.setdefault(top, set()).add(inner)
            visit(child, inner)

    for path in package.rglob("*.py"):
        visit(ast.parse(path.read_text(), str(path)), path.relative_to(package).as_posix())
    return found


def test_every_import_is_a_declared_dependency() -> None:
    """A third-party module the package imports is a core dependency, or an extra's (and then
    imported only where its feature is used, with a clear error)."""

    def name_of(requirement: str) -> str:
        return re.match(r"[A-Za-z0-9_.-]+", requirement).group(0).lower().replace("_", "-")

    project = PYPROJECT["project"]
    core = {name_of(r) for r in project["dependencies"]}
    extras = project["optional-dependencies"]
    by_extra = {extra: {name_of(r) for r in rs} for extra, rs in extras.items()}
    distributions = packages_distributions()
    undeclared = {}
    for module, where in _third_party_imports().items():
        names = {d.lower().replace("_", "-") for d in distributions.get(module, [module])}
        if names & core:
            continue
        providing = [extra for extra, members in by_extra.items() if names & members]
        if providing:  # only where its feature is used (inside a function), never at load time
            at_load = sorted(w for w in where if ":" not in w)
            assert not at_load, f"{module} (extra {providing}) is imported when {at_load} load"
            continue
        undeclared[module] = sorted(where)
    assert not undeclared, f"imported but not declared in pyproject.toml: {undeclared}"
