# The two README commands: `make repro` (set up + run the whole loop) and `make test` (set up + run the tests).
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
export SHOP_DATA_DIR ?= $(abspath ../shared/data)
export HF_HUB_OFFLINE ?= 1
# DVC stage commands call `python`: make it the project's interpreter.
export PATH := $(abspath $(VENV))/bin:$(PATH)

.PHONY: setup repro test lint

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -r requirements.lock
	$(BIN)/pip install --quiet --no-deps -e .
	touch $@

repro: setup
	$(BIN)/dvc repro

test: setup
	$(BIN)/pytest

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
