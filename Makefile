# Every target does its own set-up on a fresh clone: a .venv with the pinned packages.
# Python 3.12 is preferred (users are told >= 3.12); 3.11 also works.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

# The first interpreter that really runs: python3.12 (also a pyenv-installed one whose
# shim is not activated), then python3.
PYTHON ?= $(shell for p in python3.12 $$(ls -d $${PYENV_ROOT:-$$HOME/.pyenv}/versions/3.12*/bin/python3.12 2>/dev/null) python3; do \
	  if "$$p" -c 'import sys; sys.exit(sys.version_info < (3, 11))' >/dev/null 2>&1; then echo "$$p"; break; fi; done)

.PHONY: all venv test lint demo bench clean
all: test

venv: $(STAMP)
$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	@test -n "$(PYTHON)" || { echo "error: no Python >= 3.11 found (python3.12 preferred)"; exit 2; }
	@echo "Setting up $(VENV) with $(PYTHON) ($$($(PYTHON) --version))"
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $(STAMP)

lint: $(STAMP)
	$(PY) -m ruff check .

# Most tests wait on a simulator or a CLI subprocess, not on the CPU: 4 workers on 2 cores;
# the real-KML tests share one worker (tests/conftest.py).
test: lint
	$(PY) -m pytest -n 4 --dist loadgroup

demo: $(STAMP)
	$(PY) scripts/demo.py

bench: $(STAMP)
	$(PY) benchmarks/run_all.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .cache
