# kbn — set-up is automatic: every target below creates .venv when it is missing
# and reinstalls when setup.cfg or pyproject.toml changed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test tensorboard bench lint clean

$(STAMP): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)  ## the main job: no BN vs Keras BN vs kbn BN on the offline digits data
	$(BIN)/python -m train.compare

test: $(STAMP)  ## the whole test suite
	$(BIN)/python -m pytest

tensorboard: $(STAMP)  ## serve logs/ on 127.0.0.1
	$(BIN)/tensorboard --logdir logs --host 127.0.0.1

bench: $(STAMP)  ## kbn vs Keras speed benchmark
	$(BIN)/python -m benchmarks.layer

lint: $(STAMP)
	$(BIN)/ruff check kbn tests train benchmarks

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .ruff_cache
