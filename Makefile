# `make demo` and `make test` set everything up on a fresh machine with Python 3.11+: they create .venv and
# install the project with its test tools on first use (and again whenever pyproject.toml changes).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck pytest preview clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11 or newer is needed: make PYTHON=python3.11 ...")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $@

## demo: run the bundled course for sample subscribers across nine simulated weeks into demo/outbox
demo: $(STAMP)
	$(BIN)/newsletter demo

## test: lint, type-check and run the whole test suite
test: lint typecheck pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	$(BIN)/pytest

## preview: the preview studio on http://127.0.0.1:8025
preview: $(STAMP)
	$(BIN)/newsletter preview

clean:
	rm -rf $(VENV) demo .pytest_cache .mypy_cache .ruff_cache
