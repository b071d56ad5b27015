# spikedeploy developer entry points. `make test` and `make demo` set everything up first.
# The set-up is idempotent: a stamp file records that .venv matches pyproject.toml and the
# requirements files; a second `make setup` does nothing.

PYTHON ?= python3
VENV   := .venv
VPY    := $(VENV)/bin/python
PIP    := $(VPY) -m pip --disable-pip-version-check
STAMP  := $(VENV)/.setup-stamp
REQS   := requirements/lock.txt requirements/lava.txt

# The NIR peers (norse, sinabs, rockpool, spyx) live in .venv-peers, which sees .venv's packages
# (torch, nir, nirtorch, snntorch, numpy: one copy, the pinned ones) through a .pth file and adds
# the peers on top (requirements/peers*.txt, constraints pin torch/nir/nirtorch/numpy to .venv's).
PEERS_VENV  := .venv-peers
PEERS_PY    := $(PEERS_VENV)/bin/python
PEERS_STAMP := $(PEERS_VENV)/.setup-stamp
PEERS_REQS  := requirements/peers.txt requirements/peers-nodeps.txt requirements/peers-constraints.txt

.PHONY: setup test demo wheel-check bundled-tracker clean-venv peers

setup: $(STAMP)

$(STAMP): pyproject.toml $(REQS)
	@test -x $(VPY) || { echo "creating $(VENV) with $$($(PYTHON) --version)"; $(PYTHON) -m venv $(VENV); }
	$(PIP) install --only-binary=:all: -r requirements/lock.txt
	$(PIP) install --no-deps --ignore-requires-python -r requirements/lava.txt
	$(PIP) install --no-build-isolation -e .
	@touch $@

peers: $(PEERS_STAMP)

$(PEERS_STAMP): $(STAMP) $(PEERS_REQS)
	@test -x $(PEERS_PY) || $(PYTHON) -m venv $(PEERS_VENV)
	$(VPY) -c "import site, sys; print('import site; site.addsitedir(%r)' % site.getsitepackages()[0])" \
		> "$$($(PEERS_PY) -c 'import site; print(site.getsitepackages()[0])')/_spikedeploy_venv.pth"
	$(PEERS_PY) -m pip --disable-pip-version-check install --prefer-binary --no-deps \
		-c requirements/peers-constraints.txt -r requirements/peers-nodeps.txt
	$(PEERS_PY) -m pip --disable-pip-version-check install --prefer-binary \
		-c requirements/peers-constraints.txt -r requirements/peers.txt
	@touch $@

test: setup peers
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
	rm -rf $(VENV) $(PEERS_VENV)
