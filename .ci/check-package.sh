#!/usr/bin/env bash
# The package as a pip user gets it: build, check, install the wheel alone, run the quick start.
#
#   bash .ci/check-package.sh            (make check-package)
#
# 1. `python -m build` (the sdist, then the wheel built from that sdist) into a temporary
#    folder, with TOOLS_PYTHON (default .venv/bin/python: build and twine come with the dev
#    group); `twine check --strict` on both; the wheel holds the sample dataset, py.typed and
#    the LICENSE.
# 2. A clean virtual environment outside the repository, made with PYTHON (default: python3.11,
#    else python3), in which ONLY the built wheel is installed (with its dependencies from the
#    index); every later command runs from an empty temporary folder, and the script checks
#    that `prefect_seedream` is imported from that venv's site-packages.
# 3. The quick start of .ci/quickstart.md, each command verbatim (the script fails when one is
#    not written there), with no key, no PREFECT_API_URL and a private PREFECT_HOME:
#    `init`, `run ... --simulator` (exit 0, 14 succeeded rows, 15 images on disk), the same run
#    again (every row already stored: the printed count and the manifest's `reused` flags),
#    `simulator --help`, and the Python block of quickstart.md as written there (sync and async
#    `generate_dataset`, `generate_many`, `read_manifest`), whose manifests are then checked.
#
# Prints each check; exits non-zero at the first mismatch. Takes about 3 minutes (most of it
# installing the wheel's dependencies).
set -euo pipefail

REPO="$(cd "$(dirname "$0")/.." && pwd)"
QUICKSTART="$REPO/.ci/quickstart.md"
TOOLS_PYTHON="${TOOLS_PYTHON:-$REPO/.venv/bin/python}"
if [ -z "${PYTHON:-}" ]; then
    PYTHON="$(command -v python3.11 || command -v python3)"
fi
WORK="$(mktemp -d -t seedream-package.XXXXXX)"
trap 'rm -rf "$WORK"' EXIT

step() { printf '\n== %s\n' "$*"; }
ok() { printf 'ok: %s\n' "$*"; }
fail() { printf 'FAIL: %s\n' "$*" >&2; exit 1; }

# Runs a quick-start command as written in quickstart.md (and fails when it is not written
# there), from the work folder, with its output in $WORK/last.log; returns its exit code.
quickstart() {
    local command="$1"
    grep -qxF -- "$command" "$QUICKSTART" || fail "not in .ci/quickstart.md: $command"
    printf '$ %s\n' "$command"
    local code=0
    (cd "$WORK/user" && bash -c "$command") >"$WORK/last.log" 2>&1 || code=$?
    sed 's/^/    /' "$WORK/last.log" | tail -n 25
    return "$code"
}

step "build the sdist and the wheel"
"$TOOLS_PYTHON" -m build --outdir "$WORK/dist" "$REPO" >"$WORK/build.log" 2>&1 \
    || { cat "$WORK/build.log"; fail "python -m build"; }
shopt -s nullglob
wheels=("$WORK"/dist/*.whl)
sdists=("$WORK"/dist/*.tar.gz)
[ "${#wheels[@]}" -eq 1 ] && [ "${#sdists[@]}" -eq 1 ] || fail "expected one wheel and one sdist: $(ls "$WORK/dist")"
WHEEL="${wheels[0]}"
ok "built $(basename "${sdists[0]}") and $(basename "$WHEEL")"

step "twine check --strict"
"$TOOLS_PYTHON" -m twine check --strict "$WHEEL" "${sdists[0]}" || fail "twine check --strict"

step "what the wheel holds"
"$TOOLS_PYTHON" - "$WHEEL" "$REPO" <<'EOF' || fail "wheel contents"
import sys, tomllib, zipfile
from email.parser import Parser
from pathlib import Path

wheel, repo = zipfile.ZipFile(sys.argv[1]), Path(sys.argv[2])
names = set(wheel.namelist())
project = tomllib.loads((repo / "pyproject.toml").read_text())["project"]
info = f"prefect_seedream-{project['version']}.dist-info"
for name in ("prefect_seedream/data/prompts.csv", "prefect_seedream/py.typed",
             "prefect_seedream/pipelines/content.py", "prefect_seedream/project.py",
             f"{info}/licenses/LICENSE"):
    assert name in names, f"{name} is not in the wheel"
    print(f"ok: the wheel holds {name}")
assert wheel.read("prefect_seedream/data/prompts.csv") == (repo / "examples/prompts.csv").read_bytes()
print("ok: its prompts.csv is examples/prompts.csv")
meta = Parser().parsestr(wheel.read(f"{info}/METADATA").decode())
assert meta["License-Expression"] == "Apache-2.0", meta["License-Expression"]
assert len(meta.get_all("Project-URL")) == 4, meta.get_all("Project-URL")
assert not any(r.startswith(("pytest", "ruff")) for r in meta.get_all("Requires-Dist")), "test tools in Requires-Dist"
print(f"ok: METADATA: License-Expression {meta['License-Expression']}, Requires-Python "
      f"{meta['Requires-Python']}, {len(meta.get_all('Classifier'))} classifiers, "
      f"extras {meta.get_all('Provides-Extra')}")
EOF

step "a clean virtual environment with the wheel alone ($("$PYTHON" --version 2>&1))"
"$PYTHON" -m venv "$WORK/venv"
VENV_BIN="$WORK/venv/bin"
"$VENV_BIN/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
"$VENV_BIN/python" -m pip install --quiet --disable-pip-version-check "$WHEEL" \
    || fail "pip install $(basename "$WHEEL")"
ok "installed $(basename "$WHEEL") ($("$VENV_BIN/python" -m pip --version | cut -d' ' -f1-2))"

# The user's shell: the venv first on PATH, nothing of the repo, no key, no Prefect server.
mkdir -p "$WORK/user"
export PATH="$VENV_BIN:$PATH" PREFECT_HOME="$WORK/prefect-home" PREFECT_SERVER_ANALYTICS_ENABLED=false
unset PYTHONPATH PREFECT_API_URL SEEDREAM_API_KEY SEEDREAM_BASE_URL VIRTUAL_ENV || true

(cd "$WORK/user" && python - "$WORK/venv" "$REPO") <<'EOF' || fail "prefect_seedream is not the wheel's"
import sys, sysconfig
from pathlib import Path

venv, repo = Path(sys.argv[1]).resolve(), Path(sys.argv[2]).resolve()
import prefect_seedream

where = Path(prefect_seedream.__file__).resolve()
site = Path(sysconfig.get_paths()["purelib"]).resolve()
assert where.is_relative_to(site) and site.is_relative_to(venv), f"{where} is not in {site}"
assert not where.is_relative_to(repo), f"{where} is in the repository"
print(f"ok: prefect_seedream {prefect_seedream.__version__} from {where.parent}")
EOF
version="$(cd "$WORK/user" && python -c 'import prefect_seedream; print(prefect_seedream.__version__)')"
expected="$(sed -n 's/^version = "\(.*\)"$/\1/p' "$REPO/pyproject.toml")"
[ "$version" = "$expected" ] || fail "__version__ is $version, pyproject.toml says $expected"
ok "__version__ $version is pyproject.toml's"

step "the quick start (.ci/quickstart.md)"
grep -qxF "pip install prefect-seedream" "$QUICKSTART" || fail "quickstart.md does not install the package"
ok "pip install prefect-seedream: done above with the built wheel"

quickstart "prefect-seedream init seedream-demo" || fail "init exited $?"
for name in prefect.yaml prompts.csv; do
    cmp -s "$WORK/user/seedream-demo/$name" "$REPO/deployments/$name" \
        || fail "seedream-demo/$name differs from deployments/$name"
done
ok "init wrote prefect.yaml and prompts.csv, identical to deployments/"
if quickstart "prefect-seedream init seedream-demo"; then
    fail "a second init overwrote the files without --force"
fi
grep -q "pass --force" "$WORK/last.log" || fail "a second init did not say why it refused"
ok "a second init refuses to overwrite them (exit 2)"

check_manifest() {  # check_manifest REUSED: 14 succeeded lines, every image on disk
    python - "$WORK/user/seedream-demo/output" "$1" <<'EOF'
import json, sys
from pathlib import Path

output, reused = Path(sys.argv[1]), sys.argv[2] == "reused"
lines = [json.loads(line) for line in (output / "manifest.jsonl").read_text().splitlines()]
assert len(lines) == 14, f"{len(lines)} manifest lines, expected 14"
assert all(line["status"] == "succeeded" for line in lines), [l["status"] for l in lines]
assert all(line["reused"] is reused for line in lines), [l["reused"] for l in lines]
images = [Path(image["uri"]) for line in lines for image in line["images"]]
assert len(images) == 15 and all(p.is_file() and p.stat().st_size > 0 for p in images), images
assert all(p.parent == output.resolve() for p in images), images
print(f"ok: manifest: 14 succeeded lines, reused={reused} on each, 15 images on disk")
EOF
}

run="prefect-seedream run seedream-demo/prompts.csv --output seedream-demo/output --simulator"
quickstart "$run" || fail "the first run exited $?"
grep -q "Succeeded:  14 (0 already stored by an earlier run)" "$WORK/last.log" \
    || fail "the first run did not report 14 new rows"
check_manifest new || fail "the first run's manifest"

quickstart "$run" || fail "the second run exited $?"
grep -q "Succeeded:  14 (14 already stored by an earlier run)" "$WORK/last.log" \
    || fail "the second run did not find every row already stored"
ok "the second run found the 14 rows already stored"
check_manifest reused || fail "the second run's manifest"

quickstart "prefect-seedream simulator --help" || fail "simulator --help exited $?"
grep -q -- "--port" "$WORK/last.log" || fail "simulator --help shows no --port"
ok "prefect-seedream simulator --help"

step "the Python block of quickstart.md (sync and async), with the wheel's Python"
awk '/^```python$/{inside=1; next} /^```$/{inside=0} inside' "$QUICKSTART" >"$WORK/user/quickstart.py"
[ -s "$WORK/user/quickstart.py" ] || fail "no Python block in .ci/quickstart.md"
(cd "$WORK/user" && python quickstart.py) >"$WORK/python.log" 2>&1 \
    || { tail -n 40 "$WORK/python.log"; fail "the Python block exited non-zero"; }
grep -E '^(sync|async|generate_many|manifest):' "$WORK/python.log" | sed 's/^/    /'
(cd "$WORK/user" && python - "$WORK/python.log") <<'EOF' || fail "the Python block's results"
import sys
from pathlib import Path

from prefect_seedream import read_manifest

printed = Path(sys.argv[1]).read_text()
for kind in ("sync", "async"):
    assert f"{kind}: COMPLETED - 1 of 1 rows succeeded" in printed, f"{kind} run not completed"
    [line] = read_manifest(f"seedream-demo/from-{kind}")
    assert (line.row_id, line.status, line.reused) == ("fox", "succeeded", False), line
    assert len(line.images) == 1 and Path(line.images[0].uri).is_file(), line.images
    print(f"ok: {kind}: generate_dataset completed; fox succeeded, its image on disk")
[many] = read_manifest("seedream-demo/many")
assert many.status == "succeeded" and Path(many.images[0].uri).is_file(), many
assert f"generate_many: {many.row_id} succeeded" in printed, "generate_many's result not printed"
print("ok: generate_many: one result object, succeeded, its image on disk")
EOF

printf '\ncheck-package: every check passed\n'
