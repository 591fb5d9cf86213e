# Two commands on a fresh machine:  `make run`  and  `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run test test-fast gate perf clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e ".[test]"
	touch $@

run: $(BIN)/.installed  ## set up, then run the default suite on the embedded default
	$(BIN)/audiochat-bench run

test: $(BIN)/.installed  ## set up, then run every test (slow end-to-end ones included)
	$(BIN)/python -m pytest -q

test-fast: $(BIN)/.installed  ## the tests without the slow end-to-end ones
	$(BIN)/python -m pytest -q -m "not slow"

gate: $(BIN)/.installed  ## the smoke suite, compared with the committed baseline (exit 1 on a regression)
	rm -rf results/runs/gate && mkdir -p results/runs
	$(BIN)/audiochat-bench run --suite smoke --output-dir results/runs/gate --no-progress > results/runs/gate.log
	$(BIN)/audiochat-bench compare results/baselines/smoke "$$(tail -n 1 results/runs/gate.log)"

perf: $(BIN)/.installed  ## harness decoding against a bare model.generate loop and a one-at-a-time loop
	$(BIN)/audiochat-bench perf

clean:
	rm -rf $(VENV) results/runs
