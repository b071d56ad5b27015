# spikedeploy developer entry points. `make test` and `make demo` set everything up first.
# The set-up is idempotent: a stamp file records that .venv matches pyproject.toml and the
# requirements files; a second `make setup` does nothing.

PYTHON ?= python3
VENV   := .venv
VPY    := $(VENV)/bin/python
PIP    := $(VPY) -m pip --disable-pip-version-check
STAMP  := $(VENV)/.setup-stamp
REQS   := requirements/lock.txt requirements/lava.txt

.PHONY: setup test demo wheel-check bundled-tracker clean-venv

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

# Retrain the bundled tracker from scratch and ship it (about an hour on 2 quiet CPU cores): T = 1
# for 3200 steps (about 43 min), then the T = 3 fine-tune from it for 400 steps (about 15 min).
# Step counts, not time limits, so the run is deterministic in its seed. Each result is measured on
# held-out sequences as shipped (float16) and written to spikedeploy/data/.
TRAIN_OUT ?= out
bundled-tracker: setup
	$(VENV)/bin/spikedeploy train -o $(TRAIN_OUT)/train-t1 --steps 3200 --no-progress --eval-sequences 0
	$(VPY) scripts/bundle_tracker.py $(TRAIN_OUT)/train-t1
	$(VENV)/bin/spikedeploy train -o $(TRAIN_OUT)/train-t3 --model spiketrack-tiny128-t3 --no-progress \
		--init-weights $(TRAIN_OUT)/train-t1/spiketrack-tiny128-t1.pth --steps 400 --lr 5e-4 \
		--eval-sequences 0
	$(VPY) scripts/bundle_tracker.py $(TRAIN_OUT)/train-t3

clean-venv:
	rm -rf $(VENV)
