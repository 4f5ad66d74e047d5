# Two commands for a fresh machine:  make run   (the main job, embedded)   make test   (everything)
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: setup run lint test test-unit test-integration test-chaos services bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[all,test]"
	touch $@

run: setup
	$(BIN)/routebatch run examples/prompts.jsonl

services:
	bash scripts/services.sh

lint: setup
	$(BIN)/ruff check jobs routing worker
	$(BIN)/ruff format --check jobs routing worker
	$(BIN)/mypy

test: setup services lint
	$(BIN)/python -m pytest -q

test-unit: setup
	$(BIN)/python -m pytest -q tests/unit

test-integration: setup services
	$(BIN)/python -m pytest -q -m integration

test-chaos: setup services
	$(BIN)/python -m pytest -q -m chaos

clean:
	rm -rf $(VENV) routebatch.db routebatch.db-wal routebatch.db-shm .pytest_cache
