"""SpikeTrack frames in Lava's CPU simulator: every variant (S256, B256, B384 x T = 1, 3 and the
tiny128 ones), template and search branch, with per-layer spike counts identical to the reference
(issue 13; issue 5 for S256-T1).

Each case exports one branch of a variant with seeded random official-layout weights (``spikedeploy
export``, a fresh interpreter), runs one frame with ``spikedeploy run`` (Lava forks its OS
processes from a small parent) and compares every neuron layer's spike counts exactly with the
reference executor run on the IR graph the bundle carries, the very graph Lava was compiled from.

Why the bundle's graph: the search branch's memory (its MemoryRead weights) is computed from a
seeded random template by the PyTorch model in float32 when the model is built, and float32
convolutions round differently with different numbers of torch threads. A test process running
with 1 thread (a test earlier in the session set it) and the export subprocess with 2 built two
different search graphs: MRM 3's memory of S256-T3 differed (a template spike flipped), so from
``mrm.3.retriever.q_spike_1`` on 1248 of 393,216 counts "differed in Lava" although Lava ran its own
graph exactly. With the bundle's graph as the oracle the comparison is between one graph's two
executions.

The MemoryReads run as ``memory_read`` kernel processes (B256/B384 were refused before: 1.1e8 /
2.4e8 synapses once unrolled). Measured per case on two busy cores: export 10-130 s (model build,
memory guard probe and capture: float32 forward passes), ``spikedeploy run`` 9-45 s graded and
11-110 s binary (4x the Lava steps), reference 5-150 s. The suite runs a selection
(``DEFAULT_CASES``); ``SPIKEDEPLOY_LAVA_ALL_SPIKETRACK=1`` runs all 24 official cases.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.slow

#: head outputs: real-valued sums of the same events in another order (float64, ~1e-12)
OUT_RTOL, OUT_ATOL = 1e-9, 1e-9
#: the export's memory guard counts a capture probe of 6 samples (9.2 GB estimated for B384; the
#: measured peak is far lower): the full-size exports get this limit explicitly
MAX_MEMORY_GB = "16"


def _spikedeploy(*args, timeout=1500):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.run([sys.executable, "-m", "spikedeploy.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)
    assert proc.returncode == 0, f"spikedeploy {' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


#: neuron layers of a branch
LAYERS = {("t1", "search"): 171, ("t3", "search"): 183, ("t1", "template"): 122, ("t3", "template"): 122}
OFFICIAL = ("s256", "b256", "b384")
#: every variant x branch x encoding (``SPIKEDEPLOY_LAVA_ALL_SPIKETRACK=1`` runs them all: about
#: 40 min on two cores)
ALL_CASES = [(f"spiketrack-{v}-t{t}", branch, enc) for v in OFFICIAL for t in (1, 3)
             for branch in ("template", "search") for enc in ("graded", "binary")]
#: the suite's selection (about 4 min more than issue 5's S256-T1 case on two busy cores): S256-T3's
#: search branch with binary spikes (time-varying memory reads, 4x the Lava steps), its template
#: branch with SPIKEDEPLOY_FULL_TESTS=1 (20-27 s; the T = 3 template runs in Lava when
#: tests/tracking/test_tracker_backends.py tracks with the T = 3 Lava network), the largest variant's search branch (B384-T1: its MemoryReads would be 2.4e8 synapses
#: unrolled). All 24 official cases ran exact when this was written. The tiny128 variants' branches run
#: with their trained weights on demo-clip crops (random weights leave some of their layers silent):
#: T = 3 below, T = 1 in tests/runtimes/test_lava_partition.py
DEFAULT_CASES = [
    ("spiketrack-s256-t1", "search", "graded"),
    ("spiketrack-s256-t3", "search", "binary"),
    ("spiketrack-b384-t1", "search", "graded"),
] + ([("spiketrack-s256-t3", "template", "graded")] if os.environ.get("SPIKEDEPLOY_FULL_TESTS") == "1" else [])
ALL_ENV = "SPIKEDEPLOY_LAVA_ALL_SPIKETRACK"
CASES = ALL_CASES if os.environ.get(ALL_ENV) == "1" else DEFAULT_CASES
#: B384-T3's template export captures 2 example runs (2 and 4 samples x 3 steps x 384 x 384 crops):
#: 14.5 GB measured (the guard estimates 21 GB); it runs only where that much memory is available
BIG_EXPORT = {("spiketrack-b384-t3", "template"): 16e9}


def _available_memory() -> float:
    with open("/proc/meminfo") as f:
        info = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in f}
    return float(info.get("MemAvailable", 0))


@pytest.mark.parametrize("variant,branch,encoding", CASES, ids=[f"{v[len('spiketrack-'):]}-{b}-{e}" for v, b, e in CASES])
def test_spiketrack_frame_in_lava_matches_reference_spike_counts(tmp_path, variant, branch, encoding):
    need = BIG_EXPORT.get((variant, branch))
    if need is not None and _available_memory() < need:
        pytest.skip(f"{variant} {branch}: the export's capture needs about {need / 1e9:.0f} GB of free memory "
                    f"({_available_memory() / 1e9:.1f} GB available)")
    T = int(variant[-1]) if branch == "template" else 1
    x = None  # seeded random crops of the bundle's input shape
    _check_frame(tmp_path, f"{variant}:{branch}", encoding, T, x, LAYERS[(variant[-2:], branch)],
                 ("--max-memory", "40" if need else MAX_MEMORY_GB))


#: the T = 3 tiny tracker's branches: the search branch by default (tests/tracking/test_tracker_backends.py
#: tracks with the T = 3 Lava network too); both templates with SPIKEDEPLOY_FULL_TESTS=1
TINY_T3_CASES = ([("template", "graded"), ("template", "binary"), ("search", "graded")]
                 if os.environ.get("SPIKEDEPLOY_FULL_TESTS") == "1" else [("search", "graded")])


@pytest.mark.parametrize("branch,encoding", TINY_T3_CASES)
def test_tiny128_t3_tracker_branches_in_lava_on_demo_crops(tmp_path, branch, encoding):
    """The bundled trained SpikeTrack-TINY128-T3 (its shipped weights) on crops of the demo clip:
    the template branch on three template crops, the search branch (memory from the model's own
    template input) on one search crop. (T = 1: tests/runtimes/test_lava_partition.py.)"""
    from spikedeploy.demo import _search_crops
    from spikedeploy.models.spiketrack import default_tracker_checkpoint
    from spikedeploy.tracking.synth import demo_clip

    frames, boxes = demo_clip()
    if branch == "template":
        x = torch.from_numpy(_search_crops(frames[:21], boxes[:21], 128, 3)).transpose(0, 1).contiguous()  # [3, 1, ...]
    else:
        x = torch.from_numpy(_search_crops(frames[5:6], boxes[5:6], 128, 1))
    _check_frame(tmp_path, f"spiketrack-tiny128-t3:{branch}", encoding, 3 if branch == "template" else 1,
                 x.to(torch.float64), None, ("--checkpoint", str(default_tracker_checkpoint(3))))


def _check_frame(tmp_path, model: str, encoding: str, T: int, x, layers, export_args) -> None:
    """Export ``model`` (``variant:branch``) to Lava, run one frame ``x`` (None: seeded random
    N(0, 1) of the bundle's input shape) and compare every layer with the reference on the
    bundle's IR graph."""
    from spikedeploy.exporters import lava as lava_export
    from spikedeploy.reference import execute

    branch = model.rsplit(":", 1)[1]
    bundle_path = tmp_path / f"{branch}.lava"
    _spikedeploy("export", "--model", model, "--target", "lava", "--spike-encoding", encoding,
                 "-T", str(T), *export_args, "-o", str(bundle_path))
    bundle = lava_export.load(bundle_path)
    desc = bundle.description
    (spec,) = desc["inputs"]
    if x is None:
        x = torch.randn((T, 1) + tuple(spec["shape"]), generator=torch.Generator().manual_seed(0))
    assert tuple(x.shape) == (T, 1) + tuple(spec["shape"])
    np.save(tmp_path / "frame.npy", x.numpy())
    out = _spikedeploy("run", "--target", "lava", str(bundle_path), "--input", str(tmp_path / "frame.npy"),
                       "-o", str(tmp_path / "lava.npz"), "--no-progress")
    assert f"lava ({encoding})" in out

    counts = desc["process_counts"]
    assert sum(counts.values()) < 300, counts  # synapses fused into their readers
    if branch == "search":  # the 6 MRMs read their memory twice each, as kernels: nothing unrolled
        assert counts["memory_read"] == 12, counts
    else:
        assert counts["memory_write"] == 6 and "memory_read" not in counts, counts
    ref = execute(bundle.graph, x, encoding)
    neurons = [n.name for n in ref.graph.neurons()]
    if layers is not None:
        assert len(neurons) == layers
    with np.load(tmp_path / "lava.npz") as z:
        lava = {k[len("spikes/"):]: torch.from_numpy(z[k]) for k in z.files if k.startswith("spikes/")}
        outputs = {k[len("output/"):]: torch.from_numpy(z[k]) for k in z.files if k.startswith("output/")}
    assert sorted(lava) == sorted(neurons)
    for name in neurons:
        q_ref = ref.neuron_q(name)
        assert int(q_ref.sum()) > 0, f"no spikes in {name}: the comparison would prove nothing"
        assert torch.equal(lava[name].to(q_ref.dtype), q_ref), (
            f"{name}: {int((lava[name] != q_ref).sum())} of {q_ref.numel()} counts differ")
    assert sorted(outputs) == sorted(ref.outputs)
    for name, y in ref.outputs.items():
        if branch == "template":  # the memory: exact pair counts times the write scale
            assert torch.equal(outputs[name], y), name
            assert float(y.abs().sum()) > 0, name
        else:
            torch.testing.assert_close(outputs[name], y, rtol=OUT_RTOL, atol=OUT_ATOL)
