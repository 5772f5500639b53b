# Every target works on a fresh machine: the venv is built from PyPI when missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv test lint proto lock demo bench clean

venv: $(STAMP)

# Runtime dependencies at the versions the image locks (deploy/requirements.in): the tests run what ships.
$(STAMP): pyproject.toml deploy/requirements.in
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]' --constraint deploy/requirements.in
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check connector tests scripts bench
	$(BIN)/ruff format --check connector tests scripts bench
	$(BIN)/mypy

proto: $(STAMP)
	$(BIN)/python scripts/genproto.py

# The image's dependency locks (deploy/*.txt, with hashes) at the venv's versions; needs PyPI. To upgrade a
# dependency: `.venv/bin/pip install -U NAME`, then `make lock`.
lock: $(STAMP)
	$(BIN)/python scripts/lock.py

demo: $(STAMP)
	$(BIN)/python -m connector demo

bench: $(STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
