#!/usr/bin/env bash
# The fast tests at both ends of the supported Python and Prefect ranges of pyproject.toml.
#
#   bash .ci/check-versions.sh [COMBINATION...]     (make check-versions; default: all four)
#
# Combinations (Python, Prefect):
#   lowest          3.10, the floor of `prefect>=` in pyproject.toml, and every other lower
#                   bound of the dependencies and of the extras s3, parquet, pandas and polars
#                   pinned too (`name==lower bound`, as a constraints file): the bounds that
#                   pyproject.toml declares are installed and tested, not guessed
#   newest          3.13, the newest Prefect the range allows, newest dependencies
#   lowest-prefect  3.13, the Prefect floor, newest dependencies
#   newest-prefect  3.12, the newest Prefect the range allows, newest dependencies
# (Python 3.11 with the newest Prefect is `make test`'s own .venv.)
#
# Each one: a virtual environment outside the repository with that Python (pythonX.Y on PATH,
# else pyenv's), `pip install -e . --group dev` with Prefect pinned, a short run of
# `prefect-seedream run --simulator` on the sample dataset (the command line, its temporary
# Prefect server, the simulator), then the test files below (tasks, flows, blocks, the dataset
# run, the library API, S3 storage and doctests of every module). A Python that is not on the
# machine is a printed SKIP (CI machines may differ), not a failure; a test that fails is.
# Prints each combination's versions, result and time, then a summary. About 4 minutes a
# combination on 2 cores (half of it installing).
set -euo pipefail

REPO="$(cd "$(dirname "$0")/.." && pwd)"
TESTS=(
    tests/unit/test_models.py
    tests/unit/test_client.py
    tests/unit/test_ledger.py
    tests/unit/test_layers.py
    tests/test_dataset_flow.py
    tests/test_observability_and_block.py
    tests/test_ledger_and_parts.py
    tests/test_project.py
    tests/test_s3_storage.py
)
[ -f "$REPO/tests/test_library.py" ] && TESTS+=(tests/test_library.py)
ALL=(lowest newest lowest-prefect newest-prefect)
WORK="$(mktemp -d -t seedream-versions.XXXXXX)"
trap 'rm -rf "$WORK"' EXIT

# find_python X.Y: the path of a working Python X.Y (PATH, then pyenv), or nothing.
find_python() {
    local version="$1" candidate
    for candidate in "python$version" "$(pyenv root 2>/dev/null)"/versions/"$version".*/bin/"python$version"; do
        if command -v "$candidate" >/dev/null 2>&1 \
            && "$candidate" -c "import sys; sys.exit(sys.version_info[:2] != tuple(map(int, '$version'.split('.'))))" 2>/dev/null; then
            command -v "$candidate"
            return 0
        fi
    done
    return 0
}

# The lower bounds of pyproject.toml as `name==version` lines (needs Python >= 3.11: tomllib).
lower_bounds() {
    local host=""
    for version in 3.13 3.12 3.11; do
        host="$(find_python "$version")"
        [ -n "$host" ] && break
    done
    [ -n "$host" ] || { echo "check-versions: no Python >= 3.11 to read pyproject.toml" >&2; return 1; }
    "$host" - "$REPO/pyproject.toml" <<'EOF'
import re, sys, tomllib

project = tomllib.load(open(sys.argv[1], "rb"))["project"]
extras = project["optional-dependencies"]
requirements = project["dependencies"] + [r for name in ("s3", "parquet", "pandas", "polars") for r in extras[name]]
for requirement in requirements:
    name = re.match(r"[A-Za-z0-9_.-]+", requirement).group(0)
    lower = re.search(r">=\s*([^,;\s]+)", requirement)
    if lower:
        print(f"{name}=={lower.group(1)}")
EOF
}

PREFECT_RANGE="$(sed -n 's/^ *"\(prefect[<>=][^"]*\)",*$/\1/p' "$REPO/pyproject.toml" | head -1)"
PREFECT_FLOOR="$(printf '%s' "$PREFECT_RANGE" | sed -n 's/.*>=\([0-9.]*\).*/\1/p')"
[ -n "$PREFECT_FLOOR" ] || { echo "check-versions: no prefect>= bound in pyproject.toml" >&2; exit 1; }

declare -a SUMMARY=()
failed=0

run_combination() {
    local name="$1" python_version prefect_spec constraints=()
    case "$name" in
        lowest) python_version=3.10; prefect_spec="prefect==$PREFECT_FLOOR" ;;
        newest) python_version=3.13; prefect_spec="$PREFECT_RANGE" ;;
        lowest-prefect) python_version=3.13; prefect_spec="prefect==$PREFECT_FLOOR" ;;
        newest-prefect) python_version=3.12; prefect_spec="$PREFECT_RANGE" ;;
        *) echo "check-versions: unknown combination $name (known: ${ALL[*]})" >&2; exit 2 ;;
    esac
    printf '\n== %s: Python %s, %s\n' "$name" "$python_version" "$prefect_spec"
    local python
    python="$(find_python "$python_version")"
    if [ -z "$python" ]; then
        echo "SKIP: $name: no Python $python_version on this machine (neither python$python_version on PATH nor pyenv's)"
        SUMMARY+=("$(printf '%-15s Python %-5s %-22s SKIP (no Python %s)' "$name" "$python_version" "-" "$python_version")")
        return 0
    fi
    if [ "$name" = lowest ]; then
        lower_bounds >"$WORK/lowest-constraints.txt"
        constraints=(--constraint "$WORK/lowest-constraints.txt")
        echo "pinned lower bounds: $(tr '\n' ' ' <"$WORK/lowest-constraints.txt")"
    fi

    local started=$SECONDS venv="$WORK/$name"
    local pip=(--quiet --disable-pip-version-check)
    "$python" -m venv "$venv"
    "$venv/bin/python" -m pip install "${pip[@]}" --upgrade pip
    if ! (cd "$REPO" && "$venv/bin/python" -m pip install "${pip[@]}" -e . --group dev \
            "$prefect_spec" "${constraints[@]}") >"$WORK/$name-install.log" 2>&1; then
        grep -v "^WARNING: Location" "$WORK/$name-install.log" | tail -n 30
        echo "FAIL: $name: pip install"
        SUMMARY+=("$(printf '%-15s Python %-5s %-22s FAIL (install)' "$name" "$python_version" "$prefect_spec")")
        failed=1
        return 0
    fi
    local installed=$((SECONDS - started)) versions
    versions="$("$venv/bin/python" -m pip list --format=freeze 2>/dev/null \
        | grep -iE '^(prefect|fastapi|starlette|uvicorn|httpx|anyio|pydantic|fsspec|pillow|rich|sqlalchemy|s3fs|pyarrow|pandas|polars)==' \
        | tr '\n' ' ')"
    echo "installed in ${installed}s: $("$venv/bin/python" --version) $versions"
    local prefect_version
    prefect_version="$("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("prefect"))')"

    # Tests and the command line run from the repo with a private Prefect home, no user settings.
    local env=(env -u PREFECT_API_URL -u SEEDREAM_API_KEY -u SEEDREAM_BASE_URL
               PREFECT_HOME="$WORK/$name-prefect-home" PREFECT_SERVER_ANALYTICS_ENABLED=false)
    local result="ok" code=0
    if ! (cd "$WORK" && "${env[@]}" "$venv/bin/prefect-seedream" run "$REPO/examples/prompts.csv" \
            --output "$WORK/$name-output" --simulator --simulator-latency 0.5) >"$WORK/$name-cli.log" 2>&1; then
        tail -n 30 "$WORK/$name-cli.log"
        echo "FAIL: $name: prefect-seedream run --simulator"
        result="FAIL (prefect-seedream run)"
        failed=1
    else
        grep -E "^(Succeeded|Run state):" "$WORK/$name-cli.log" || true
    fi
    local code=0 closing
    (cd "$REPO" && "${env[@]}" "$venv/bin/python" -m pytest -q -p no:cacheprovider "${TESTS[@]}") \
        >"$WORK/$name-pytest.log" 2>&1 || code=$?
    tail -n 15 "$WORK/$name-pytest.log"
    closing="$(tail -n 1 "$WORK/$name-pytest.log" | tr -d '=' | xargs)"
    if [ "$code" -ne 0 ]; then
        echo "FAIL: $name: tests (pytest exited $code)"
        result="FAIL (tests: $closing)"
        failed=1
    elif [ "$result" = ok ]; then
        result="ok ($closing)"
    fi
    SUMMARY+=("$(printf '%-15s Python %-5s prefect %-8s %s, %ss (install %ss)' "$name" \
        "$python_version" "$prefect_version" "$result" "$((SECONDS - started))" "$installed")")
    rm -rf "$venv"
}

combinations=("$@")
[ "${#combinations[@]}" -gt 0 ] || combinations=("${ALL[@]}")
echo "check-versions: ${combinations[*]} (prefect range: $PREFECT_RANGE)"
echo "tests: ${TESTS[*]}"
for combination in "${combinations[@]}"; do
    run_combination "$combination"
done

printf '\n== summary\n'
printf '%s\n' "${SUMMARY[@]}"
exit "$failed"
