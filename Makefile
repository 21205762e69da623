# Two entry points: `make demo` (CPU quickstart) and `make test` (CPU test suite).
# Both create or reuse .venv; torch is pinned to the CPU build so no CUDA wheel is pulled.
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: test demo install clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest tests

demo: $(STAMP)
	PYTHON=$(abspath $(PY)) bash examples/quickstart_cpu.sh

clean:
	rm -rf $(VENV) build *.egg-info
