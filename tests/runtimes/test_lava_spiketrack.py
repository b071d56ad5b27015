"""SpikeTrack S256 search frames in Lava's CPU simulator (issue 5: "the Lava S256-T1 search frame
reproduces reference spike counts exactly").

The whole search branch (S256-T1: 171 neuron layers; the large convolutions as kernels, synapses
fused into their readers: about 210 Lava processes) is exported with ``spikedeploy export`` and run
with ``spikedeploy run`` in a fresh interpreter, so that Lava forks its OS processes from a small
parent. Graded spikes (one event per neuron and macro-step); binary spikes need about 4x the Lava
steps and are measured in ``benchmarks/bench_spiketrack.py``. Measured on two busy cores: one
S256-T1 graded frame about 37 s in the simulator, S256-T3 about 50 s.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.slow


def _spikedeploy(*args, timeout=1500):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.run([sys.executable, "-m", "spikedeploy.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)
    assert proc.returncode == 0, f"spikedeploy {' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


# S256-T3's search frame runs in Lava (about 50 s) but is not exact yet on this input: 1248 of
# 393216 counts of model.encoder.mrm.3.retriever.q_spike_1 differ from the reference (first
# differing layer; the T = 3 processes are exact on the small SpikeTrack in
# tests/core/test_tracker_backends.py). Until that is found it is not part of this test.
@pytest.mark.parametrize("variant,layers", [("spiketrack-s256-t1", 171)])
def test_s256_search_frame_in_lava_matches_reference_spike_counts(tmp_path, variant, layers):
    from spikedeploy import api
    from spikedeploy.reference import execute

    model = f"{variant}:search"
    loaded = api.build_model(model, seed=0)
    x = api.make_inputs(loaded, timesteps=1, num_inputs=1, seed=0)
    np.save(tmp_path / "frame.npy", x.numpy())
    bundle = tmp_path / "s256-search.lava"
    _spikedeploy("export", "--model", model, "--target", "lava", "--spike-encoding", "graded", "-o", str(bundle))
    out = _spikedeploy("run", "--target", "lava", str(bundle), "--input", str(tmp_path / "frame.npy"),
                       "-o", str(tmp_path / "lava.npz"), "--no-progress")
    assert "lava (graded)" in out

    from spikedeploy.exporters import lava as lava_export

    desc = lava_export.load(bundle).description
    assert sum(desc["process_counts"].values()) < 300, desc["process_counts"]  # synapses fused into readers
    graph = api.prepare_graph(loaded, timesteps=1)
    ref = execute(graph, x, "graded")
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
    # head outputs: real-valued sums of the same events in another order (float64, ~1e-12)
    for name, y in ref.outputs.items():
        torch.testing.assert_close(outputs[name], y, rtol=1e-9, atol=1e-9)
