# Two commands do everything on a fresh machine with Python 3.11:
#   make run    generate images for the sample dataset (bundled simulator when no API key is set)
#   make test   the whole test suite (installs Debian's chromium for the browser test if missing)
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip install --quiet --disable-pip-version-check

.PHONY: run test test-fast bench soak simulator clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.core: pyproject.toml | $(BIN)/python
	$(PIP) -e .
	@touch $@

$(VENV)/.dev: pyproject.toml | $(BIN)/python
	$(PIP) -e '.[dev]'
	@touch $@ $(VENV)/.core

run: $(VENV)/.core
	$(BIN)/prefect-seedream run examples/prompts.csv --output output

test: $(VENV)/.dev
	@bash .ci/install-browser.sh || { [ -z "$$CI" ] && echo "warning: chromium could not be installed (needs root and apt); the browser tests will be skipped"; }
	$(BIN)/pytest -q -m "slow or not slow"

test-fast: $(VENV)/.dev
	$(BIN)/pytest -q

bench: $(VENV)/.core
	$(BIN)/python benchmarks/dataset_benchmark.py --rows 200 --latency 2 --concurrency 16

soak: $(VENV)/.core
	$(BIN)/python benchmarks/soak.py --rows 3000

simulator: $(VENV)/.core
	$(BIN)/prefect-seedream simulator --port 8787

clean:
	rm -rf $(VENV) output test-artifacts .pytest_cache
