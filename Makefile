# The two set-up commands of the project (see README):
#   make train   -> installs into .venv, then runs the main job (RFT on Countdown, embedded model)
#   make test    -> installs into .venv (and .venv-verifiers04), then lints (ruff) and runs the whole test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# verifiers 0.4 removed the 0.3 API that .venv tests, so its adapter's tests run in a venv of their own
VF04_VENV ?= .venv-verifiers04
VF04_BIN := $(VF04_VENV)/bin

.PHONY: setup setup-verifiers04 train test bench
setup: $(VENV)/.installed
setup-verifiers04: $(VF04_VENV)/.installed

# torch is installed first and pinned to the local CPU wheel, so that no dependency's
# "torch" requirement can pull a multi-GB CUDA build from the registry.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "torch==2.13.0"
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

$(VF04_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VF04_VENV)
	$(VF04_BIN)/pip install --quiet --upgrade pip
	$(VF04_BIN)/pip install --quiet "torch==2.13.0"
	$(VF04_BIN)/pip install --quiet -e ".[verifiers04-test]"
	touch $@

train: setup
	$(BIN)/rft train examples/countdown.yaml

test: setup setup-verifiers04
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/python -m pytest -q -n 2 --dist loadgroup tests
	PATH="$(abspath $(VF04_BIN)):$$PATH" $(VF04_BIN)/python -m pytest -q -p no:cacheprovider tests/envs/test_verifiers_v1.py
