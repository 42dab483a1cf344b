# Set-up is part of the targets: on a fresh machine `make test` and `make demo` are all there is.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: test demo bench install clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,plot]'
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -n 2 --dist worksteal tests

demo: $(STAMP)
	$(VENV)/bin/vas demo

bench: $(STAMP)
	$(PY) decode/bench.py

clean:
	rm -rf $(VENV) build *.egg-info
