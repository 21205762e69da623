# Two entry points: `make demo` (CPU quickstart) and `make test` (CPU test suite).
# Both create or reuse .venv; torch is pinned to the CPU build so no CUDA wheel is pulled.
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# AceRAG's inference code pins transformers 4.57.x; tests/test_export_transformers_compat.py loads
# our exports with it. Only the packages 4.57 pins differently live here (--no-deps): torch, numpy,
# safetensors and the rest come from $(VENV), with this folder first on PYTHONPATH.
TF457 := $(VENV)/tf457
TF457_STAMP := $(TF457)/.installed
TF457_PACKAGES := transformers==4.57.6 huggingface_hub==0.36.2 tokenizers==0.22.2 \
	requests==2.34.2 urllib3==2.8.0 idna==3.20 charset_normalizer==3.5.3 certifi==2026.10.19.post1

.PHONY: test demo install clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	@touch $(STAMP)

$(TF457_STAMP): $(STAMP)
	rm -rf $(TF457)
	$(PY) -m pip install -q --no-deps --target $(TF457) $(TF457_PACKAGES)
	@touch $(TF457_STAMP)

install: $(STAMP) $(TF457_STAMP)

test: $(STAMP) $(TF457_STAMP)
	$(PY) -m pytest tests

demo: $(STAMP)
	PYTHON=$(abspath $(PY)) bash examples/quickstart_cpu.sh

clean:
	rm -rf $(VENV) build *.egg-info
