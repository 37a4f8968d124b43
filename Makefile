# Two commands do everything on a fresh machine with Python 3.11:
#   make run    generate images for the sample dataset (bundled simulator when no API key is set)
#   make test   the whole test suite (installs Debian's chromium for the browser test if missing)
# `make test-unit` is the unit tier alone (tests/unit: the engine and the API layer, with Prefect
# not importable and no Prefect server; under a minute); `make test-fast` and `make test` run it too.
# CI (.ci/run) also runs:
#   make check-package   build the sdist and wheel, twine check, the quick start from the wheel alone
#   make check-versions  the fast tests at both ends of the supported Python and Prefect ranges
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip install --quiet --disable-pip-version-check

.PHONY: run test test-fast test-unit check-package check-versions bench compare startup soak simulator stack-up stack-down clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# pip >= 25.1 installs PEP 735 dependency groups (`--group dev`); a new venv's pip may be older.
$(VENV)/.pip: | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	@touch $@

$(VENV)/.core: pyproject.toml | $(VENV)/.pip
	$(PIP) -e .
	@touch $@

# The package and the test suite's packages (the `dev` group of pyproject.toml).
$(VENV)/.dev: pyproject.toml | $(VENV)/.pip
	$(PIP) -e . --group dev
	@touch $@ $(VENV)/.core

# No SEEDREAM_API_KEY: the bundled simulator (the command refuses to run without a key otherwise).
run: $(VENV)/.core
	$(BIN)/prefect-seedream run examples/prompts.csv --output output $(if $(SEEDREAM_API_KEY),,--simulator)

test: $(VENV)/.dev
	@bash .ci/install-browser.sh || { [ -z "$$CI" ] && echo "warning: chromium could not be installed (needs root and apt); the browser tests will be skipped"; }
	@bash .ci/install-postgres.sh || { [ -z "$$CI" ] && echo "warning: PostgreSQL could not be installed (needs root and apt); the scale-out tests will be skipped"; }
	@bash .ci/install-node.sh || { [ -z "$$CI" ] && echo "warning: Node.js could not be installed (needs root and apt); the check of Evolink's npm client will be skipped"; }
	$(BIN)/pytest -q -m "slow or not slow"

test-fast: $(VENV)/.dev
	$(BIN)/pytest -q

# tests/unit alone: its conftest.py blocks `import prefect` and points PREFECT_API_URL at a closed
# port. Two workers: the tests mostly wait on loopback HTTP (~35 s; ~55 s on one).
test-unit: $(VENV)/.dev
	$(BIN)/pytest -q -p no:cacheprovider -n 2 tests/unit -m unit

check-package: $(VENV)/.dev
	TOOLS_PYTHON=$(BIN)/python PYTHON=$(PYTHON) bash .ci/check-package.sh

check-versions:
	bash .ci/check-versions.sh

bench: $(VENV)/.core
	$(BIN)/python benchmarks/dataset_benchmark.py --rows 200 --latency 2 --concurrency 16

compare: $(VENV)/.core
	$(BIN)/python benchmarks/compare.py --rows 1000 --concurrency 50 --latency 2

# What the plugin adds to `import prefect`, and a 14-row run end to end next to the peer script.
startup: $(VENV)/.core
	$(BIN)/python benchmarks/startup.py --repeat 5 --import-runs 11

soak: $(VENV)/.core
	$(BIN)/python benchmarks/soak.py --rows 3000

simulator: $(VENV)/.core
	$(BIN)/prefect-seedream simulator --port 8787

# The scale-out stack: PostgreSQL, a Prefect server on it, a process work pool, 2 workers.
stack-up: $(VENV)/.core
	@bash .ci/install-postgres.sh
	$(BIN)/python -m deployments.stack up --workers $(or $(WORKERS),2) --deploy all

stack-down:
	$(BIN)/python -m deployments.stack down

clean:
	rm -rf $(VENV) output test-artifacts .pytest_cache
