# spikedeploy developer entry points. `make test` and `make demo` set everything up first.
# The set-up is idempotent: a stamp file records that .venv matches pyproject.toml and the
# requirements files; a second `make setup` does nothing.

PYTHON ?= python3
VENV   := .venv
VPY    := $(VENV)/bin/python
PIP    := $(VPY) -m pip --disable-pip-version-check
STAMP  := $(VENV)/.setup-stamp
REQS   := requirements/lock.txt requirements/lava.txt

.PHONY: setup test demo wheel-check clean-venv

setup: $(STAMP)

$(STAMP): pyproject.toml $(REQS)
	@test -x $(VPY) || { echo "creating $(VENV) with $$($(PYTHON) --version)"; $(PYTHON) -m venv $(VENV); }
	$(PIP) install --only-binary=:all: -r requirements/lock.txt
	$(PIP) install --no-deps --ignore-requires-python -r requirements/lava.txt
	$(PIP) install --no-build-isolation -e .
	@touch $@

test: setup
	$(VPY) -m pytest
	$(MAKE) --no-print-directory wheel-check

# Build the wheel from a clean copy, install it into a throwaway venv and import every module.
wheel-check: setup
	VPY=$(abspath $(VPY)) bash scripts/check_wheel.sh

demo: setup
	$(VENV)/bin/spikedeploy demo

clean-venv:
	rm -rf $(VENV)
