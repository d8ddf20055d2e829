# The two commands: `make demo` runs the agent on examples/, `make test` runs every check.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed

.PHONY: demo test install up down status worker lint typecheck clean

demo: $(INSTALLED)
	$(BIN)/python -m longtask.demo

test: $(INSTALLED)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/pytest

install: $(INSTALLED)

$(INSTALLED): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev,local,bench,tracing]'
	touch $(INSTALLED)

up: $(INSTALLED)
	$(BIN)/python -m longtask.stack up

down: $(INSTALLED)
	$(BIN)/python -m longtask.stack down

status: $(INSTALLED)
	$(BIN)/python -m longtask.stack status

worker: $(INSTALLED)
	$(BIN)/python worker.py

clean: down
	rm -rf .state
