# Two commands on a fresh machine: `make demo` and `make test`.
# Both create .venv and install the project (pinned, CPU-only) on first use.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed-stamp
CONFIG ?= configs/default.yaml

# Telemetry off: these machines (and many CI runners) have no internet.
export DO_NOT_TRACK = 1
export PREFECT_SERVER_ANALYTICS_ENABLED = false

.PHONY: setup demo test clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[tf,dask,dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/bertbuild run --config $(CONFIG)

test: $(STAMP)
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

clean:
	rm -rf runs .pytest_cache
