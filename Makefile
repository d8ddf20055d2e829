# The two commands: `make demo` runs the agent on examples/, `make test` runs every check.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed

.PHONY: demo test test-loaded install up down status worker lint typecheck clean

demo: $(INSTALLED)
	$(BIN)/python -m longtask.tooling.demo

test: $(INSTALLED)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/pytest

# The suite on a busy machine: two CPU-bound processes run beside it (each stops after an hour
# at the latest, and with the suite when it ends). No test may need an idle machine.
test-loaded: $(INSTALLED)
	@timeout --foreground 3600 $(BIN)/python -c 'while True: pass' & one=$$!; \
	timeout --foreground 3600 $(BIN)/python -c 'while True: pass' & two=$$!; \
	$(MAKE) test; status=$$?; kill $$one $$two 2>/dev/null; exit $$status

install: $(INSTALLED)

$(INSTALLED): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev,local,bench,tracing]'
	touch $(INSTALLED)

up: $(INSTALLED)
	$(BIN)/python -m longtask.tooling.stack up

down: $(INSTALLED)
	$(BIN)/python -m longtask.tooling.stack down

status: $(INSTALLED)
	$(BIN)/python -m longtask.tooling.stack status

worker: $(INSTALLED)
	$(BIN)/python worker.py

clean: down
	rm -rf .state
