# The two commands a newcomer needs: `make demo` and `make test`.
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
TORCH_PIN := torch==2.13.0
STAMP := $(VENV)/.tunegate-installed

.PHONY: install demo test test-fast serve bench lint clean

install: $(STAMP)

# torch first, pinned to the CPU build on this machine's disk: a plain `torch`
# requirement would pull a multi-GB CUDA build.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet $(TORCH_PIN)
	$(PIP) install --quiet -e '.[dev]'
	touch $@

demo: install
	$(PY) -m gateway.demo

test: install
	$(PY) -m pytest

test-fast: install
	$(PY) -m pytest -m "not slow"

serve: install
	$(VENV)/bin/tunegate db upgrade
	$(VENV)/bin/tunegate serve

bench: install
	$(PY) bench/authz.py
	$(PY) bench/audit.py

lint: install
	$(VENV)/bin/ruff check .

clean:
	rm -rf var .pytest_cache
