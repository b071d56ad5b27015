"""Tracker network backends (:mod:`spikedeploy.tracking.backends`): the reference interpreter
(integer / binary / graded spikes) and onnxruntime behind the tracker's ``TrackerNetwork``
protocol, and :func:`set_memory` (the search graph's MemoryRead weights = the template memory).

No fixtures: SpikeTrack S256-T1 with deterministic random spiking weights
(``init_spiketrack_for_spiking(seed=0)``) on a short generated sequence (a smooth random texture
with a bright square moving across it). The weights are random, so the tracker does not follow
the square; what is tested is that every backend computes the same boxes.

Why float64 on both sides: the network is discontinuous (integer activations). In float32 the
torch model and the captured graph (BatchNorm folded into the convs, spike sub-steps summed one
by one, other reduction orders) round differently; a value at a rounding boundary flips a spike
and inside the linear-attention MRMs one flipped spike changes every token, so free-running
float32 comparisons of different operation orders diverge (the fixtures' README,
``../shared/fixtures/spiketrack/README.md``, "Numeric sensitivity"; even the official tracker's
float32 result depends on torch's thread count). In float64 those differences are ~1e-16
relative: no activation lies that close to a boundary, the integer activations are identical, the
head logits agree to ~1e-15 and the tracker (host code in float32 on the logits cast to float32)
produces bit-identical boxes. Observed on 12 frames of this sequence: torch float64, reference
integer / binary / graded and ONNX float64 give identical boxes and scores, while the float32 torch
model and ONNX float32 end up 49 and 66 px away (scores off by up to 0.08).
"""

import copy
import dataclasses

import numpy as np
import pytest
import torch

from spikedeploy.ir import ops as O
from spikedeploy.models.spiketrack import MEMORY_KEYS, init_spiketrack_for_spiking, normalize_images, spiketrack
from spikedeploy.reference import run
from spikedeploy.tracking.tracker import SpikeTrackTracker, TorchNetwork, TrackerError
from spikedeploy.tracking.backends import (
    MemoryMismatchError,
    OnnxNetwork,
    ReferenceNetwork,
    capture_spiketrack,
    memory_read_map,
    set_memory,
)

TOL_HEAD = 1e-12  # float64 torch vs float64 reference: same integer network, rounding order ~1e-16
#: ONNX float64 vs reference integer float64: the same integer network with another float64
#: operation order; the boxes come from the head outputs cast to float32 (observed: identical)
TOL_ONNX_BOX_PX = 1e-4

N_FRAMES = 5
FRAME_HW = (240, 320)
INIT_BOX = [70.0, 60.0, 36.0, 30.0]


# ---------------------------------------------------------------------------------------------
# fixtures
# ---------------------------------------------------------------------------------------------


def make_sequence(n=N_FRAMES, hw=FRAME_HW, seed=0):
    """``n`` RGB uint8 frames: a smooth random texture (coarse noise, bilinearly upsampled) with a
    bright 36 x 30 square moving right and down by (7, 5) px per frame; deterministic (numpy)."""
    H, W = hw
    rng = np.random.default_rng(seed)
    coarse = rng.random((H // 16 + 2, W // 16 + 2, 3))
    ys = np.linspace(0, coarse.shape[0] - 1.001, H)
    xs = np.linspace(0, coarse.shape[1] - 1.001, W)
    y0, x0 = ys.astype(int), xs.astype(int)
    fy, fx = (ys - y0)[:, None, None], (xs - x0)[None, :, None]
    tex = (coarse[y0][:, x0] * (1 - fy) * (1 - fx) + coarse[y0 + 1][:, x0] * fy * (1 - fx)
           + coarse[y0][:, x0 + 1] * (1 - fy) * fx + coarse[y0 + 1][:, x0 + 1] * fy * fx)
    frames = []
    for i in range(n):
        f = 30.0 + 140.0 * tex
        x, y = int(INIT_BOX[0]) + 7 * i, int(INIT_BOX[1]) + 5 * i
        f[y:y + 30, x:x + 36] = (250.0, 235.0, 60.0)
        frames.append(np.clip(np.rint(f), 0, 255).astype(np.uint8))
    return np.stack(frames)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = spiketrack("s256", 1)
    init_spiketrack_for_spiking(m, seed=0)
    return m.eval()


@pytest.fixture(scope="module")
def model64(model):
    return copy.deepcopy(model).double().eval()


@pytest.fixture(scope="module")
def graphs(model):
    return capture_spiketrack(model)


@pytest.fixture(scope="module")
def frames():
    return make_sequence()


def track(network, frames):
    """Boxes ``[N, 4]`` (the first = the initial box), scores and normalized boxes per tracked frame."""
    tracker = SpikeTrackTracker(network)
    tracker.initialize(frames[0], INIT_BOX)
    boxes, scores, norms = [list(tracker.state)], [], []
    for f in frames[1:]:
        r = tracker.track(f)
        boxes.append(r.box)
        scores.append(r.score)
        norms.append(r.box_norm)
    return np.array(boxes), np.array(scores), np.array(norms)


@pytest.fixture(scope="module")
def torch64_track(model64, frames):
    return track(TorchNetwork(model64), frames)  # TorchNetwork casts the float32 crops to float64


@pytest.fixture(scope="module")
def memory64(model64, frames):
    """A float64 torch memory of a template crop that is not the capture's placeholder."""
    from spikedeploy.tracking.tracker import TEMPLATE_FACTOR, crop_with_context

    crop, _ = crop_with_context(frames[0], INIT_BOX, TEMPLATE_FACTOR, 256)
    with torch.no_grad():
        return model64.template_branch(normalize_images(crop).unsqueeze(0).double())


def _search_input(frames, box=INIT_BOX):
    from spikedeploy.tracking.tracker import SEARCH_FACTOR, crop_with_context

    crop, _ = crop_with_context(frames[1], box, SEARCH_FACTOR, 256)
    return normalize_images(crop).unsqueeze(0)  # [1, 1, 3, S, S] float32


# ---------------------------------------------------------------------------------------------
# set_memory
# ---------------------------------------------------------------------------------------------


def test_set_memory_rewrites_the_12_memory_reads_and_matches_torch(graphs, model64, memory64, frames):
    base = graphs.search
    mapping = memory_read_map(base)
    assert len(mapping) == 12 and sorted(mapping.values()) == sorted(list(range(6)) * 2)
    new = set_memory(base, memory64)
    changed = [b.name for b, n in zip(base.nodes, new.nodes) if b is not n]
    assert sorted(changed) == sorted(mapping)  # exactly the 12 MemoryRead nodes, nothing else
    assert [n.name for n in new.nodes] == [n.name for n in base.nodes] and new.outputs == base.outputs
    for b, n in zip(base.nodes, new.nodes):
        if n.name in mapping:
            k = mapping[n.name]
            assert isinstance(n.op, O.MemoryRead) and n.op.scale == b.op.scale and n.op.num_heads == b.op.num_heads
            np.testing.assert_array_equal(n.op.memory, memory64[MEMORY_KEYS[k]][:, 0].numpy())
    # a sequence in MRM order works as the dict does
    seq = set_memory(base, [memory64[k] for k in MEMORY_KEYS])
    assert all(np.array_equal(a.op.memory, b.op.memory) for a, b in zip(seq.nodes, new.nodes) if a.name in mapping)

    x = _search_input(frames)
    with torch.no_grad():
        want = model64.search_branch(x.double(), memory64)
    res = run(new, x.double(), dtype=torch.float64)
    got = [res.outputs[o] for o in new.outputs]
    for name, w, g in zip(("score", "size", "offset"), want, got):
        assert g.shape == w.shape
        diff = float((g - w).abs().max())
        assert diff <= TOL_HEAD, f"{name}: reference integer vs torch float64 differ by {diff}"
    # the placeholder memory gives another head: the rewrite matters
    old = run(base, x.double(), dtype=torch.float64).outputs[base.outputs[0]]
    assert float((old - got[0]).abs().max()) > 1e-3


def test_set_memory_on_the_lowered_graph_keeps_the_absorbed_scale(graphs, memory64):
    lowered = ReferenceNetwork(graphs=graphs, mode="binary")._search_base
    new = set_memory(lowered, memory64)
    ints = {n.name: n.op for n in graphs.search.nodes if isinstance(n.op, O.MemoryRead)}
    for n in new.nodes:
        if isinstance(n.op, O.MemoryRead):
            assert n.op.scale < ints[n.name].scale  # 1/norm absorbed by the lowering, kept
            assert n.op.memory.shape == ints[n.name].memory.shape


def test_set_memory_rejects_a_wrong_memory(graphs, memory64):
    mem = dict(memory64)
    with pytest.raises(MemoryMismatchError, match="shape"):
        set_memory(graphs.search, {**mem, "cross_block_2": mem["cross_block_3"][..., :8]})
    with pytest.raises(MemoryMismatchError, match="lacks"):
        set_memory(graphs.search, {k: v for k, v in mem.items() if k != "cross_block_5"})
    with pytest.raises(MemoryMismatchError, match="expected 6"):
        set_memory(graphs.search, [mem[k] for k in MEMORY_KEYS[:5]])
    with pytest.raises(MemoryMismatchError, match="batch"):
        set_memory(graphs.search, {**mem, "cross_block_0": mem["cross_block_0"].repeat(1, 2, 1, 1, 1)})
    with pytest.raises(MemoryMismatchError, match="MRMs"):
        set_memory(graphs.template, mem)  # no MemoryRead nodes
    # a MemoryRead that is not an MRM's
    bad = graphs.search.replace_nodes(
        [dataclasses.replace(n, source="somewhere.else") if isinstance(n.op, O.MemoryRead) else n
         for n in graphs.search.nodes])
    with pytest.raises(MemoryMismatchError, match="not an MRM"):
        set_memory(bad, mem)
    assert issubclass(MemoryMismatchError, TrackerError)


# ---------------------------------------------------------------------------------------------
# ReferenceNetwork
# ---------------------------------------------------------------------------------------------


def test_reference_template_memory_equals_torch(graphs, memory64, frames):
    from spikedeploy.tracking.tracker import TEMPLATE_FACTOR, crop_with_context

    crop, _ = crop_with_context(frames[0], INIT_BOX, TEMPLATE_FACTOR, 256)
    templates = normalize_images(crop).unsqueeze(0)
    for mode in ("integer", "binary"):
        net = ReferenceNetwork(graphs=graphs, mode=mode)
        mem = net.template(templates)
        assert list(mem) == list(MEMORY_KEYS)
        for k in MEMORY_KEYS:
            assert mem[k].dtype == torch.float64 and mem[k].shape == memory64[k].shape
            assert float((mem[k] - memory64[k]).abs().max()) <= TOL_HEAD, (mode, k)


def test_reference_search_rebuilds_only_for_a_new_memory(graphs, memory64, frames):
    net = ReferenceNetwork(graphs=graphs, mode="integer")
    x = _search_input(frames)
    a = net.search(x, memory64)
    b = net.search(x, memory64)
    assert len(net.timings["rebuild"]) == 1 and len(net.timings["search"]) == 2
    assert all(torch.equal(u, v) for u, v in zip(a, b))
    net.search(x, dict(memory64))  # another memory object -> rebuilt
    assert len(net.timings["rebuild"]) == 2
    assert net.last_run is not None and net.last_run.mode == "integer"


def test_tracker_torch_float64_and_reference_binary_boxes_identical(torch64_track, graphs, frames):
    """The tracker's boxes are IDENTICAL (exact equality) with the float64 torch model and the
    float64 reference interpreter running the binary unit-spike network (see the module
    docstring for why float64 on both sides)."""
    boxes_t, scores_t, norms_t = torch64_track
    boxes_b, scores_b, norms_b = track(ReferenceNetwork(graphs=graphs, mode="binary"), frames)
    assert boxes_t.shape == (N_FRAMES, 4)
    np.testing.assert_array_equal(boxes_b, boxes_t)
    np.testing.assert_array_equal(norms_b, norms_t)
    np.testing.assert_array_equal(scores_b, scores_t)
    # the sequence moves the box (not a trivially constant result)
    assert np.abs(np.diff(boxes_t, axis=0)).max() > 1.0


@pytest.mark.parametrize("mode", ["graded", "integer"])
def test_tracker_torch_float64_and_reference_boxes_identical(torch64_track, graphs, frames, mode):
    boxes_t, scores_t, norms_t = torch64_track
    boxes, scores, norms = track(ReferenceNetwork(graphs=graphs, mode=mode), frames)
    np.testing.assert_array_equal(boxes, boxes_t)
    np.testing.assert_array_equal(norms, norms_t)
    np.testing.assert_array_equal(scores, scores_t)


@pytest.mark.slow  # a second capture of both branches (~2.5 s)
def test_reference_network_captures_the_model_itself(model):
    net = ReferenceNetwork(model, mode="graded")
    assert (net.size, net.templates, net.mode, net.dtype) == (256, 1, "graded", torch.float64)
    other = net.with_mode("integer")
    assert other.graphs is net.graphs and other.mode == "integer"


def test_reference_network_bad_options(graphs):
    from spikedeploy.errors import ConfigError

    with pytest.raises(ConfigError, match="mode"):
        ReferenceNetwork(graphs=graphs, mode="ternary")
    with pytest.raises(ConfigError, match="dtype"):
        ReferenceNetwork(graphs=graphs, dtype=torch.int32)
    with pytest.raises(ConfigError, match="SpikeTrack"):
        ReferenceNetwork(torch.nn.Linear(2, 2))


# ---------------------------------------------------------------------------------------------
# OnnxNetwork
# ---------------------------------------------------------------------------------------------


def test_onnx_network_boxes_equal_reference_integer(graphs, frames):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    onnx_net = OnnxNetwork(graphs=graphs)
    boxes_o, scores_o, norms_o = track(onnx_net, frames)
    boxes_r, scores_r, norms_r = track(ReferenceNetwork(graphs=graphs, mode="integer"), frames)
    diff = float(np.abs(boxes_o - boxes_r).max())
    assert diff <= TOL_ONNX_BOX_PX, f"ONNX vs reference integer boxes differ by {diff} px"
    assert float(np.abs(scores_o - scores_r).max()) <= 1e-6
    # T = 1: one search export for the sequence (the memory never changes)
    assert len(onnx_net.timings["rebuild"]) == 1 and len(onnx_net.timings["search"]) == N_FRAMES - 1


def test_onnx_network_reexports_for_a_new_memory(graphs, memory64, frames):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    net = OnnxNetwork(graphs=graphs)
    x = _search_input(frames)
    head = net.search(x, memory64)
    first = net.search_artifact
    net.search(x, memory64)
    assert net.search_artifact is first  # same memory: no re-export
    new_mem = {k: v * 0.5 for k, v in memory64.items()}
    net.search(x, new_mem)
    assert net.search_artifact is not first and len(net.timings["rebuild"]) == 2
    # the memory really is the exported search model's weight: the head equals the reference's
    ref = ReferenceNetwork(graphs=graphs, mode="integer").search(x, memory64)
    for a, b in zip(head, ref):
        assert float((a - b).abs().max()) <= 1e-9


# ---------------------------------------------------------------------------------------------
# T = 3
# ---------------------------------------------------------------------------------------------


def test_t3_model_captures_for_the_backends():
    """T = 3 variants are captured now (time-axis ops): memories are [3, 1, ...] and set_memory
    rewrites the 12 MemoryReads with them."""
    model = spiketrack("s256", 3).eval()
    graphs = capture_spiketrack(model)
    assert graphs.templates == 3 and graphs.search.inputs[0].steps == 1
    assert graphs.template.inputs[0].steps in (None, 3)  # default weights: equal position embeddings
    mapping = memory_read_map(graphs.search)
    assert len(mapping) == 12
    with torch.no_grad():
        mem = model.template_branch(torch.randn(3, 1, 3, 256, 256))
    g = set_memory(graphs.search, mem)
    reads = {n.name: n.op for n in g.nodes if n.name in mapping}
    for name, k in mapping.items():
        assert reads[name].memory.shape[0] == 3
        assert np.array_equal(reads[name].memory, mem[f"cross_block_{k}"][:, 0].double().numpy())


# ---------------------------------------------------------------------------------------------
# Lava (the CPU simulator, one Lava run per call)
# ---------------------------------------------------------------------------------------------


def tiny_spiketrack(templates: int = 1):
    """The smallest SpikeTrack that keeps the architecture (171 search neuron layers): widths
    (8, 16, 32, 48), crops of 64 px (4 x 4 tokens), float64, spiking random weights."""
    from spikedeploy.models.spiketrack import SpikeTrack, SpikeTrackConfig

    cfg = SpikeTrackConfig(family="s", embed_dims=(8, 16, 32, 48), head_channels=16, resolution=64,
                           templates=templates)
    torch.manual_seed(0)
    m = SpikeTrack(cfg)
    init_spiketrack_for_spiking(m, seed=0)
    return m.double().eval()


def test_lava_network_bad_options():
    from spikedeploy.errors import ConfigError
    from spikedeploy.tracking.backends import LavaNetwork

    with pytest.raises(ConfigError, match="encoding"):
        LavaNetwork(tiny_spiketrack(), encoding="integer")
    with pytest.raises(ConfigError, match="SpikeTrack model"):
        LavaNetwork()


@pytest.mark.slow  # one Lava run per call: template + 2 search frames (~1-2 min on 2 cores)
def test_lava_network_tracks_like_the_reference_with_equal_spike_counts():
    """The tracker with LavaNetwork (graded spikes, Lava CPU simulator) and with ReferenceNetwork
    in the same mode give identical boxes and scores on a short sequence; every neuron layer of
    the last search frame has the same spike counts, and of the template branch too."""
    from spikedeploy.tracking.backends import LavaNetwork

    model = tiny_spiketrack()
    graphs = capture_spiketrack(model)
    frames = make_sequence(n=3)
    ref = ReferenceNetwork(mode="graded", graphs=graphs)
    lava = LavaNetwork(encoding="graded", graphs=graphs)
    assert lava.size == 64 and lava.templates == 1
    boxes_ref, scores_ref, _ = track(ref, frames)
    seen = {}
    lava_template = lava.template

    def template_spy(templates):  # keep the template input to compare the template branch's spikes
        seen["x"] = templates
        return lava_template(templates)

    lava.template = template_spy
    boxes, scores, _ = track(lava, frames)
    ref_template = run(ref.template_graph, seen["x"], dtype=torch.float64, mode="graded")
    assert np.array_equal(boxes, boxes_ref), (boxes, boxes_ref)
    assert np.array_equal(scores, scores_ref)
    # spike counts, search branch (last frame): every layer identical, spikes present
    names = [n.name for n in ref.search_graph.neurons()]
    assert sorted(lava.last_spikes) == sorted(names) and len(names) == 171
    total = 0
    for name in names:
        q_ref = ref.last_run.neuron_q(name)
        assert torch.equal(lava.last_spikes[name].to(q_ref.dtype), q_ref), name
        total += int(q_ref.sum())
    assert total > 0 and sum(int(ref.last_run.neuron_q(n).sum()) > 0 for n in names) > 150
    # template branch (the initialization): the same spikes and the same memory
    for n in ref.template_graph.neurons():
        assert torch.equal(lava.last_template_spikes[n.name].to(torch.float64),
                           ref_template.neuron_q(n.name).to(torch.float64)), n.name
    # one compiled search bundle (T = 1: the memory never changes), windows/fusion in effect
    assert len(lava.timings["rebuild"]) == 1 and len(lava.timings["search"]) == 2
    info = lava.last_run.info
    assert info["fusion"]["processes_after"] < info["fusion"]["processes_before"]
    assert info["process_counts"]["neuron"] == 171



@pytest.mark.slow  # T = 3: a larger search graph (template gate, time-varying memory reads), ~2 min
def test_lava_network_t3_tracks_like_the_reference():
    """T = 3 (three templates): the Lava search bundle has the time axis (repeated query, per-
    template layers, time-varying memory reads, host softmax, template gate); boxes and the spike
    counts of every search layer equal the reference's (graded)."""
    from spikedeploy.tracking.backends import LavaNetwork

    graphs = capture_spiketrack(tiny_spiketrack(templates=3))
    frames = make_sequence(n=2)
    ref = ReferenceNetwork(mode="graded", graphs=graphs)
    lava = LavaNetwork(encoding="graded", graphs=graphs)
    assert lava.templates == 3
    boxes_ref, scores_ref, _ = track(ref, frames)
    boxes, scores, _ = track(lava, frames)
    assert np.array_equal(boxes, boxes_ref) and np.array_equal(scores, scores_ref)
    names = [n.name for n in ref.search_graph.neurons()]
    assert sorted(lava.last_spikes) == sorted(names)
    for name in names:
        q_ref = ref.last_run.neuron_q(name)
        assert torch.equal(lava.last_spikes[name].to(q_ref.dtype), q_ref), name
    assert sum(int(ref.last_run.neuron_q(n).sum()) for n in names) > 0
    counts = lava.last_run.info["process_counts"]
    assert counts["host_softmax"] == 6 and counts["template_gate"] == 6
