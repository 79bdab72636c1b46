# kbn — set-up is automatic: every target below creates .venv when it is missing
# and reinstalls when setup.cfg or pyproject.toml changed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# PyTorch gets its own environment: its wheel (CUDA libraries included, ~5.7 GB)
# is installed only by the targets that need it.
TORCH_VENV := .venv-torch
TORCH_BIN := $(TORCH_VENV)/bin
TORCH_STAMP := $(TORCH_VENV)/.installed
# The layer alone on JAX, without TensorFlow: what installing kbn[jax] gives a user.
LEAN_VENV := .venv-lean
LEAN_BIN := $(LEAN_VENV)/bin
LEAN_STAMP := $(LEAN_VENV)/.installed
# The files holding `lean` tests; the others import TensorFlow or the pipeline at the top.
LEAN_TESTS := tests/test_lean_install.py tests/test_keras_compat.py

.PHONY: run paper notebook test test-other-cpu test-torch test-lean tensorboard bench lint clean

$(STAMP): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[tensorflow,jax,train,dev]'
	touch $(STAMP)

$(TORCH_STAMP): setup.cfg pyproject.toml
	test -x $(TORCH_BIN)/python || $(PYTHON) -m venv $(TORCH_VENV)
	$(TORCH_BIN)/python -m pip install --quiet --upgrade pip
	$(TORCH_BIN)/python -m pip install --quiet -e '.[torch,train,dev]'
	touch $(TORCH_STAMP)

$(LEAN_STAMP): setup.cfg pyproject.toml
	test -x $(LEAN_BIN)/python || $(PYTHON) -m venv $(LEAN_VENV)
	$(LEAN_BIN)/python -m pip install --quiet --upgrade pip
	$(LEAN_BIN)/python -m pip install --quiet -e '.[jax]' pytest
	touch $(LEAN_STAMP)

run: $(STAMP)  ## the main job: no BN vs Keras BN vs kbn BN on the offline digits data
	$(BIN)/python -m train.compare

paper: $(STAMP)  ## the paper's and the lecture's claims rerun (10 experiments, 3 seeds): logs/paper/<time>/report.md
	$(BIN)/python -m train.paper

notebook: $(STAMP)  ## docs/learn.ipynb rebuilt: the lecture executed from a clean kernel (~2 min)
	$(BIN)/python -m train.lesson.notebook

# Both parts run even if the first fails; the target fails if either did.
test: $(STAMP)  ## the whole suite on TensorFlow, then the backend-neutral suites on JAX
	$(BIN)/python -m pytest; tf=$$?; \
	KERAS_BACKEND=jax $(BIN)/python -m pytest -m all_backends; jax=$$?; \
	test $$tf -eq 0 && test $$jax -eq 0

# TensorFlow picks oneDNN kernels or not by CPU (TF_ENABLE_ONEDNN_OPTS overrides);
# this runs the TensorFlow suite in the configuration this machine does not default to.
test-other-cpu: $(STAMP)  ## the TensorFlow suite again, with oneDNN switched the other way
	TF_ENABLE_ONEDNN_OPTS=$$($(BIN)/python -m tests.cpu_config other) $(BIN)/python -m pytest

test-torch: $(TORCH_STAMP)  ## the backend-neutral tests on Keras's PyTorch backend
	KERAS_BACKEND=torch $(TORCH_BIN)/python -m pytest -m all_backends

# KBN_LEAN=1: the lean tests then fail, not skip, where TensorFlow is installed.
test-lean: $(LEAN_STAMP)  ## kbn on JAX in .venv-lean (kbn[jax], no TensorFlow): the lean tests
	KBN_LEAN=1 KERAS_BACKEND=jax $(LEAN_BIN)/python -m pytest -m lean $(LEAN_TESTS)

tensorboard: $(STAMP)  ## serve logs/ on 127.0.0.1
	$(BIN)/tensorboard --logdir logs --host 127.0.0.1

bench: $(STAMP)  ## kbn vs Keras speed benchmark, then whole models (folded BN, ResNet-50)
	$(BIN)/python -m benchmarks.suite
	$(BIN)/python -m benchmarks.models

lint: $(STAMP)
	$(BIN)/ruff check kbn tests train benchmarks

clean:
	rm -rf $(VENV) $(TORCH_VENV) $(LEAN_VENV) build dist *.egg-info .pytest_cache .ruff_cache
