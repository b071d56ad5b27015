"""The event SpikeTrack's search branch frame by frame (issue 16 step 3, MSST at inference): the
tiny search branch (seeded firing weights, synthetic event voxels of tests/models/
test_spiketrack_event.py) over 10 frames, one frame per call with every membrane carried
(:mod:`spikedeploy.streaming`), equals one run of the 10 frames bit for bit on the reference
(integer, binary, graded), on ONNX (state as explicit inputs/outputs) and, in spike counts, on Lava
(binary and graded; the live runtime: ~4 s for the 10 frames); D of the 14 DI-LIF layers changes
between calls."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from spikedeploy.capture import capture
from spikedeploy.ir import ops as O
from spikedeploy.models import get_model
from spikedeploy.models.spiketrack_event import init_event_spiketrack_for_spiking, voxel_input
from spikedeploy.passes import default_pipeline
from spikedeploy.reference import execute, stateful_neurons
from spikedeploy.streaming import open_stream

FRAMES = 10


@pytest.fixture(scope="module")
def search_graph():
    """As tests/models/test_spiketrack_event.py's ``tiny_search``: the search branch calibrated on a
    synthetic event clip, captured and folded; the clip as float64 voxels."""
    from spikedeploy.events import synthetic_event_sequence, window_frames

    torch.manual_seed(0)
    seq = synthetic_event_sequence(3, "train", num_frames=FRAMES + 1, frame_size=(128, 128))
    search = voxel_input(window_frames(seq.events, seq.frame_times, 5))
    x, y, w, h = seq.boxes[1]
    cx = int(np.clip(round(x + w / 2) - 32, 0, 64))
    cy = int(np.clip(round(y + h / 2) - 32, 0, 64))
    template = search[:1, :, :, cy:cy + 64, cx:cx + 64].contiguous()
    net = get_model("spiketrack-event-tiny:search")
    init_event_spiketrack_for_spiking(net.model, seed=0, template=template, search=search)
    with torch.no_grad():
        net.set_memory(net.model.template_branch(template))
    net.eval()
    g = default_pipeline().apply(capture(net, search, name="spiketrack-event-tiny:search"))
    return g, search.double()


def _assert_stream_equals(g, runs, whole, *, outputs: bool = True):
    neurons = [n.name for n in g.neurons()]
    assert len(neurons) == 43
    for n in neurons:
        streamed = torch.cat([r.spike_counts[n].to(torch.float64) for r in runs])
        assert float(streamed.sum()) > 0, f"{n} is silent"
        assert torch.equal(streamed, whole.records[n].q), n
    if outputs:
        for o in g.outputs:
            assert torch.equal(torch.cat([r.outputs[o] for r in runs]), whole.outputs[o]), o


@pytest.mark.parametrize("mode", ["integer", "binary", "graded"])
def test_reference_stream_of_the_search_branch_equals_the_whole_clip(search_graph, mode):
    g, x = search_graph
    assert len(stateful_neurons(g)) == 43  # every neuron is leaky (MSST)
    whole = execute(g, x, mode)
    d = [whole.records[n.name].d.flatten() for n in g.neurons() if isinstance(n.op, O.DynamicIntegerLIF)]
    assert len(d) == 14 and all(len(torch.unique(v)) > 1 for v in d), "D changes between calls"
    with open_stream(g, "reference", mode=mode) as s:
        runs = [s.step(x[t:t + 1]) for t in range(FRAMES)]
    _assert_stream_equals(g, runs, whole)
    for k, v in whole.state.items():
        assert torch.equal(runs[-1].state[k].m, v.m) and torch.equal(runs[-1].state[k].q, v.q), k
    # the state matters: restarting at frame 5 from nothing changes the counts
    fresh = execute(g, x[5:], mode)
    name = next(iter(stateful_neurons(g)))
    assert not torch.equal(fresh.records[name].q, whole.records[name].q[5:])


def test_onnx_stream_of_the_search_branch_equals_the_reference(search_graph):
    g, x = search_graph
    whole = execute(g, x, "integer")
    with open_stream(g, "onnx") as s:
        runs = [s.step(x[t:t + 1]) for t in range(FRAMES)]
    # real-valued head maps: onnxruntime sums in another order than the reference (spikes: exact)
    _assert_stream_equals(g, runs, whole, outputs=False)
    for o in g.outputs:
        assert torch.allclose(torch.cat([r.outputs[o] for r in runs]), whole.outputs[o], rtol=0, atol=1e-9), o


@pytest.mark.parametrize("encoding", ["binary", "graded"])
def test_lava_stream_of_the_search_branch_equals_the_reference(search_graph, encoding):
    g, x = search_graph
    whole = execute(g, x, encoding)
    with open_stream(g, "lava", encoding=encoding) as s:
        runs = [s.step(x[t:t + 1]) for t in range(FRAMES)]
    _assert_stream_equals(g, runs, whole, outputs=False)
