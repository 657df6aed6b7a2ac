# Two commands on a fresh machine: `make demo` and `make test`.
# Both create .venv and install exactly the locked dependency set
# (requirements.lock, written by `make lock`) on first use.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed-stamp
LOCK    = requirements.lock
CONFIG ?= configs/default.yaml

# Telemetry off: these machines (and many CI runners) have no internet.
export DO_NOT_TRACK = 1
export PREFECT_SERVER_ANALYTICS_ENABLED = false

.PHONY: setup demo test lock clean

setup: $(STAMP)

# Every package comes from the lock, checked against its hashes; the project
# itself is added on top without resolving anything again (--no-deps).
$(STAMP): pyproject.toml $(LOCK)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=24"
	$(BIN)/python -m pip install --quiet --require-hashes -r $(LOCK)
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/bertbuild run --config $(CONFIG)

test: $(STAMP)
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

# Re-resolve pyproject.toml (with the tf, dask, s3 and dev extras) into the lock,
# for every platform and supported Python. Keeps current versions unless told
# otherwise: `make lock LOCK_ARGS="--upgrade-package sqlalchemy"` or LOCK_ARGS=--upgrade.
lock: $(STAMP)
	$(BIN)/uv pip compile pyproject.toml --extra tf --extra dask --extra s3 --extra dev --universal \
		--generate-hashes --custom-compile-command "make lock" --quiet $(LOCK_ARGS) -o $(LOCK)

clean:
	rm -rf runs .pytest_cache
