"""Session-scoped fixtures shared by the test tree (design §2 forbids a conftest.py at the
repository root only).

SpikeTrack S256-T1 with the official fixtures' weights: ``../shared/fixtures/spiketrack`` holds
``make_weights.py`` (a deterministic generator of checkpoints in the official layout) and the
reference data. The weights are generated once per session, their digest checked against
``weights_info.txt``; tests that need them skip with a reason when the fixtures are absent (a user's
clone outside this repository's CI has no ``../shared``). Tests must not modify the shared model.
SpikeTrack S256-T3 (``s256-t3/``: the official tracker's trace) likewise: ``s256_t3_model``.
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
S256_T3 = SPIKETRACK_FIXTURES / "s256-t3"
_S256_T3_PRESENT = all(
    p.is_file()
    for p in (S256_T3 / "manifest.json", S256_T3 / "weights_info.txt", S256_T3 / "tracker_trace.npz",
              SPIKETRACK_FIXTURES / "make_weights.py", SPIKETRACK_FIXTURES / "inputs" / "frames.npy",
              SPIKETRACK_FIXTURES / "inputs" / "sequence.json")
)
_SKIP_REASON_T3 = (f"SpikeTrack S256-T3 tracker fixtures are not present at {S256_T3} (they live in ../shared "
                   "next to the repository in CI)")


def _fixture_state_dict(folder: Path):
    """The weights of ``folder`` (``manifest.json``, seed 0), their digest checked against the
    folder's ``weights_info.txt``."""
    spec = importlib.util.spec_from_file_location("spiketrack_fixture_make_weights", SPIKETRACK_FIXTURES / "make_weights.py")
    mw = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mw)
    arrays = mw.generate(json.loads((folder / "manifest.json").read_text()), 0)
    m = re.search(r"sha256=([0-9a-f]{64})", (folder / "weights_info.txt").read_text())
    assert m and mw.digest(arrays) == m.group(1), f"make_weights.py did not regenerate the weights of {folder.name}"
    return collections.OrderedDict((k, torch.from_numpy(a)) for k, a in arrays.items())


@pytest.fixture(scope="session")
def s256_state_dict():
    """The S256-T1 fixture weights (official key layout, seed 0, digest checked)."""
    if not _FIXTURES_PRESENT:
        pytest.skip(_SKIP_REASON)
    return _fixture_state_dict(S256)


@pytest.fixture(scope="session")
def s256_t3_model():
    """SpikeTrack S256-T3 (eval mode) with the ``s256-t3`` fixture weights (seed 0, digest
    checked; ~13 M parameters, generated in memory in ~2 s). Shared: do not modify it."""
    if not _S256_T3_PRESENT:
        pytest.skip(_SKIP_REASON_T3)
    from spikedeploy.models.spiketrack import spiketrack

    model = spiketrack("s256", 3).eval()
    model.load_state_dict(_fixture_state_dict(S256_T3), strict=True)
    return model


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


def _release_freed_heap() -> None:
    """Give freed heap memory back to the operating system (glibc keeps it otherwise): the heavy
    capture tests leave the runner at 10.7 GB resident after B384-T3 (measured), 0.3 GB after
    ``malloc_trim``; later Lava tests fork children from this process."""
    import ctypes
    import ctypes.util
    import gc

    gc.collect()
    name = ctypes.util.find_library("c")
    if name:
        libc = ctypes.CDLL(name)
        if hasattr(libc, "malloc_trim"):
            libc.malloc_trim(0)


@pytest.fixture(autouse=True)
def _restore_torch_threads():
    """Every test leaves torch's intra-op thread count as it found it. The count is not a
    performance knob only: float32 convolution sums round differently with one thread, and the
    official S256-T1 fixture's search frame 1 has a membrane within that rounding of a threshold
    (one thread: a flipped spike, feature error 5.3; two or more: bit-exact, measured). A test
    that set one thread once made a later module's comparison fail in CI."""
    before = torch.get_num_threads()
    yield
    if torch.get_num_threads() != before:
        torch.set_num_threads(before)


@pytest.fixture(autouse=True, scope="module")
def _trim_heap_after_module():
    yield
    _release_freed_heap()


@pytest.fixture(scope="session")
def lava_test_graphs():
    """The graph builders of ``tests/runtimes/test_lava.py`` (``_sdt``, ``time_axis_graph``) for the
    other Lava runtime tests, loaded once (tests are not importable modules under
    ``--import-mode=importlib``)."""
    path = Path(__file__).with_name("runtimes") / "test_lava.py"
    spec = importlib.util.spec_from_file_location("lava_runtime_test_graphs", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod
