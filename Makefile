# The README's commands. `make run` and `make test` work on a fresh clone with only Python 3.11.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CONFIG ?= configs/gearbox.yaml
PIP := $(BIN)/python -m pip install --quiet --disable-pip-version-check

.PHONY: install install-dev run test lint ui clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Stamp files: reinstall only when pyproject.toml changes. `install` brings the serve extra too: the
# README runs `pipeline serve` right after `make run`.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(PIP) -e ".[serve]"
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(PIP) -e ".[dev,serve,tune]"
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

run: install
	$(BIN)/pipeline run $(CONFIG)

test: install-dev
	$(BIN)/python -m pytest -q

# Style and types: ruff (lint + format, line length 110) on the whole tree; mypy on the lower
# packages and the serving side (signal2image, models, deploy; see [tool.mypy] in pyproject.toml).
lint: install-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

ui: install
	$(BIN)/pipeline ui

clean:
	rm -rf mlruns mlartifacts mlflow.db artifacts .cache .pytest_cache
