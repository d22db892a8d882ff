# The two commands of the README:
#   make run    the agent suite on this machine (under supervisord)
#   make test   the whole test suite (installs and starts what it needs); the engine
#               faults (stopping the machine's Docker engine) only with
#               OAT_ENGINE_FAULTS=1, as CI sets it (.ci/run)
# Everything runs from a virtual environment in .venv, built on first use.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint ctl tap bench bench-all venv clean

venv: $(STAMP)

# Every package, transitive ones included, comes from the hashed locks (--require-hashes);
# the project itself goes in editable with --no-deps, so it needs no hash.
$(STAMP): requirements.txt requirements-dev.txt requirements.in pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check --require-hashes \
		-r requirements.txt -r requirements-dev.txt
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $(STAMP)

run: $(STAMP)
	install/run-local.sh

test: $(STAMP)
	install/test-env.sh
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

# `make ctl ARGS="status"` — supervisorctl against the suite started by `make run`.
ctl: $(STAMP)
	install/run-local.sh ctl $(ARGS)

# `make tap ARGS="metrics."` — watch the bus of the suite started by `make run`.
tap: $(STAMP)
	install/run-local.sh tap $(ARGS)

# Benchmarks print JSON figures; the Docker ones need root and the engine (make test
# prepares both).
bench: $(STAMP)
	install/test-env.sh
	$(BIN)/python bench/bus.py
	$(BIN)/python bench/footprint.py
	$(BIN)/python bench/executor.py
	$(BIN)/python bench/cloud_rtt.py --heartbeat-seconds 60
	$(BIN)/python bench/replay_memory.py

# The long ones too: heartbeat rhythm over 5 minutes, re-homing with 1/5/20 runtimes,
# metrics collection cost with 0/10/50 runtimes, every performance target at 0/10/50/100
# runtimes and where a stall of 16 commands in flight goes (about 40 minutes in all; the
# scale bench loads the machine, keep it out of CI).
bench-all: bench
	$(BIN)/python bench/cloud_rtt.py
	$(BIN)/python bench/rehome.py
	$(BIN)/python bench/metrics_cost.py
	$(BIN)/python bench/cloud_status.py
	$(BIN)/python bench/scale.py
	$(BIN)/python bench/stalls.py

clean:
	rm -rf $(VENV) .build
