# Every target works on a fresh machine: the venv is built from PyPI when missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv test lint proto lock demo bench clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check connector tests scripts bench
	$(BIN)/ruff format --check connector tests scripts bench
	$(BIN)/mypy

proto: $(STAMP)
	$(BIN)/python scripts/genproto.py

# The image's dependency locks (deploy/*.txt, with hashes) at the venv's versions; needs PyPI.
lock: $(STAMP)
	$(BIN)/python scripts/lock.py

demo: $(STAMP)
	$(BIN)/python -m connector demo

bench: $(STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
