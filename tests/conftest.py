"""Session-scoped fixtures shared by the test tree (design §2 forbids a conftest.py at the
repository root only).

SpikeTrack S256-T1 with the official fixtures' weights: ``../shared/fixtures/spiketrack`` holds
``make_weights.py`` (a deterministic generator of checkpoints in the official layout) and the
reference data. The weights are generated once per session, their digest checked against
``weights_info.txt``; tests that need them skip with a reason when the fixtures are absent (a user's
clone outside this repository's CI has no ``../shared``). Tests must not modify the shared model.
"""

import collections
import importlib.util
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

SPIKETRACK_FIXTURES = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "spiketrack"
S256 = SPIKETRACK_FIXTURES / "s256-t1"
_FIXTURES_PRESENT = (S256 / "reference.npz").is_file() and (SPIKETRACK_FIXTURES / "make_weights.py").is_file()
_SKIP_REASON = f"SpikeTrack fixtures are not present at {SPIKETRACK_FIXTURES} (they live in ../shared next to the repository in CI)"


@pytest.fixture(scope="session")
def s256_state_dict():
    """The S256-T1 fixture weights (official key layout, seed 0, digest checked)."""
    if not _FIXTURES_PRESENT:
        pytest.skip(_SKIP_REASON)
    spec = importlib.util.spec_from_file_location("spiketrack_fixture_make_weights", SPIKETRACK_FIXTURES / "make_weights.py")
    mw = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mw)
    arrays = mw.generate(json.loads((S256 / "manifest.json").read_text()), 0)
    m = re.search(r"sha256=([0-9a-f]{64})", (S256 / "weights_info.txt").read_text())
    assert m and mw.digest(arrays) == m.group(1), "make_weights.py did not regenerate the fixture weights"
    return collections.OrderedDict((k, torch.from_numpy(a)) for k, a in arrays.items())


@pytest.fixture(scope="session")
def s256_model(s256_state_dict):
    """SpikeTrack S256-T1 (eval mode) with the fixture weights. Shared: do not modify it."""
    from spikedeploy.models.spiketrack import spiketrack

    model = spiketrack("s256", 1).eval()
    model.load_state_dict(s256_state_dict, strict=True)
    return model


@pytest.fixture(scope="session")
def s256_inputs():
    """The fixtures' normalized template input ``[1, 1, 3, 256, 256]`` and first search input."""
    if not _FIXTURES_PRESENT:
        pytest.skip(_SKIP_REASON)
    ref = dict(np.load(S256 / "reference.npz"))
    xt = torch.from_numpy(ref["template_input"]).float()
    xs = torch.from_numpy(ref["search_input"][:1]).float()
    return xt, xs, ref
