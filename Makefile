# The two set-up commands of the project (see README):
#   make train   -> installs into .venv, then runs the main job (RFT on Countdown, embedded model)
#   make test    -> installs into .venv, then lints (ruff) and runs the whole test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup train test bench
setup: $(VENV)/.installed

# torch is installed first and pinned to the local CPU wheel, so that no dependency's
# "torch" requirement can pull a multi-GB CUDA build from the registry.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "torch==2.13.0"
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

train: setup
	$(BIN)/rft train examples/countdown.yaml

test: setup
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/python -m pytest -q -n 2 --dist loadgroup tests
