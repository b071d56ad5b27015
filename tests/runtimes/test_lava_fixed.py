"""Lava ``fixed_pt`` (issue 14): a fixed-point graph (``spikedeploy.passes.quantize.quantize_graph``)
exported to Lava and run in Lava's CPU simulator with the integer process models equals the
fixed-point reference exactly, free-running: every neuron layer's spike counts q, the integer
outputs and the per-layer saturation counts (integer arithmetic has no ties, so nothing is
tolerated). Binary and graded encodings, every placement (per-layer, 1, 2, auto) and the live
runtime; a hypothesis property test on random single layers; a layer driven into 24-bit
saturation; the S256-T1 search frame (official-fixture weights) and the bundled tiny tracker on
demo-clip crops. Every comparison asserts that spikes occurred.

Run time on two busy cores: a Lava run of sdt-test 0.3-1 s, the property test ~1.5 s an example;
the tracker and S256 cases are marked slow.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings, strategies as st

from spikedeploy.errors import ArtifactError, ConfigError, InputError
from spikedeploy.exporters import lava as lava_export
from spikedeploy.ir import Graph, Node, TensorSpec, ops as O
from spikedeploy.passes.quantize import quantize_graph
from spikedeploy.reference import is_fixed, run as ref_run
from spikedeploy.runtimes import lava as lava_run


def _sdt(kind: str, encoding: str, T: int = 4, B: int = 2):
    from spikedeploy.capture import capture
    from spikedeploy.models.sdt_test import SDTTestNet, init_for_spiking
    from spikedeploy.passes import ExpandSpikes, default_pipeline

    torch.manual_seed(0)
    model = SDTTestNet(neuron=kind, time_steps=T)
    init_for_spiking(model, seed=0)
    model.eval()
    x = torch.randn((T, B, model.in_channels, model.image_size, model.image_size))
    g = ExpandSpikes(encoding).apply(default_pipeline().apply(capture(model, x[:, :1])))
    return quantize_graph(g, x), x.to(torch.float64)


def assert_fixed_exact(gq: Graph, x, r, *, min_spikes: float = 1.0, every_layer_fires: bool = True):
    """Lava fixed_pt == the fixed-point reference: every neuron's q, the outputs, the saturation
    counts (neurons and the host boundary). Returns the reference run."""
    ref = ref_run(gq, x)
    assert r.info["select_tag"] == "fixed_pt" and r.info["precision"] == "fixed"
    total = 0.0
    for n in gq.neurons():
        q = ref.records[n.name].q
        got = r.spike_counts[n.name]
        assert got.dtype == q.dtype and torch.equal(got, q), (
            f"{n.name}: {int((got != q).sum())} of {q.numel()} counts differ")
        if every_layer_fires:
            assert float(q.sum()) > 0, f"{n.name} is silent: the comparison would prove nothing"
        total += float(q.sum())
        assert r.info["saturated"][n.name] == ref.records[n.name].saturated, n.name
    assert total >= min_spikes
    for name, y in ref.outputs.items():
        assert torch.equal(r.outputs[name], y), name  # integers: exact
    for name, sat in r.info["host_saturated"].items():
        assert sat == ref.records[name].saturated, name
    assert set(r.info["host_saturated"]) == {n.name for n in gq.nodes if isinstance(n.op, O.Quantize)
                                             and n.name in r.info["host_nodes"]}
    return ref


# ---------------------------------------------------------------------------------------------
# sdt-test with every neuron kind: a covering set of (kind, encoding, placement)
# ---------------------------------------------------------------------------------------------

CASES = [
    ("ilif", "binary", "per-layer"),
    ("ilif_half_up", "graded", 2),
    ("leaky_ilif", "binary", 1),
    ("nilif", "graded", "per-layer"),
    ("integer_if", "binary", 2),
    ("binary_lif", "graded", "auto"),
]


@pytest.mark.parametrize("kind, encoding, partitions", CASES)
def test_sdt_every_neuron_kind_fixed_lava_equals_the_fixed_reference(kind, encoding, partitions):
    gq, x = _sdt(kind, encoding)
    bundle = lava_export.LavaBundle(None, *lava_export.compile_graph(gq, encoding, partitions=partitions))
    d = bundle.description
    assert d["precision"] == "fixed" and d["fixed_point"]["state_bits"] == 24
    kinds = {p["neuron"]["kind"] for p in d["processes"] if p["type"] == "neuron"}
    assert kinds <= {"fixed_integer_lif", "fixed_binary_lif"} and kinds
    r = lava_run.run(bundle, x)  # the default tag of a fixed bundle: fixed_pt
    if partitions != "auto":
        assert r.info["partitions"] == partitions
    assert_fixed_exact(gq, x, r, min_spikes=1000)


def test_bundle_on_disk_loads_validated_and_refuses_the_other_tag(tmp_path):
    gq, x = _sdt("nilif", "binary", B=1)
    path = lava_export.export(gq, tmp_path / "q.lava", encoding="binary")
    bundle = lava_export.load(path)
    assert bundle.description["precision"] == "fixed" and is_fixed(bundle.graph)
    quantize = [n for n in bundle.description["host"]["nodes"] if n["op"]["kind"] == "Quantize"]
    assert quantize and {n["name"] for n in quantize} <= set(bundle.description["host"]["values"])  # host op
    assert bundle.description["fixed_point"]["outputs"] == {o: int(e) for o, e in
                                                            gq.meta_dict()["fixed_point"]["outputs"].items()}
    with pytest.raises(ConfigError, match="select_tag 'floating_pt' cannot run this fixed bundle"):
        lava_run.run(bundle, x, select_tag="floating_pt")
    r = lava_run.run(path, x, select_tag="fixed_pt", partitions=1)
    assert_fixed_exact(gq, x, r)


def test_validator_refuses_a_fixed_bundle_with_fractions_or_float_neurons():
    gq, _ = _sdt("ilif", "graded", B=1)
    desc, arrays = lava_export.compile_graph(gq, "graded")
    from spikedeploy.exporters.lava_validate import validate_bundle

    validate_bundle(desc, arrays, "b")
    neuron = next(p for p in desc["processes"] if p["type"] == "neuron")
    bad = dict(arrays)
    bad[neuron["bias"]] = arrays[neuron["bias"]] + 0.5
    with pytest.raises(ArtifactError, match="not integers in a fixed bundle"):
        validate_bundle(desc, bad, "b")
    with pytest.raises(InputError, match="not exact integers"):  # a bundle made in memory: the runtime checks
        lava_run.make_processes(lava_export.LavaBundle(None, desc, bad), {}, T=1, B=1)
    float_desc = {**desc, "processes": [dict(p, neuron={"kind": "integer_lif", "d": 4, "leak": None, "reset_norm": 1.0,
                                                        "rounding": "half_even"})
                                        if p is neuron else p for p in desc["processes"]]}
    with pytest.raises(ArtifactError, match="'integer_lif' in a 'fixed' bundle"):
        validate_bundle(float_desc, arrays, "b")


def test_live_runtime_fixed_equals_fresh_reference_runs():
    from spikedeploy.runtimes.lava_live import LiveRuntime

    gq, x = _sdt("leaky_ilif", "graded", B=1)
    bundle = lava_export.LavaBundle(None, *lava_export.compile_graph(gq, "graded", partitions=2))
    x2 = torch.flip(x, dims=[-1]) * 1.5
    with LiveRuntime(bundle, partitions=2) as live:
        assert live.select_tag == "fixed_pt"
        for xi in (x, x2, x):
            assert_fixed_exact(gq, xi, live.run(xi))
    with pytest.raises(ConfigError, match="cannot run this fixed bundle"):
        LiveRuntime(bundle, select_tag="floating_pt")


# ---------------------------------------------------------------------------------------------
# property: random single layers (parallel branches of one graph: one Lava start per example)
# ---------------------------------------------------------------------------------------------


@st.composite
def _layers(draw):
    """A graph x -> encoder neuron -> K independent layers (Linear of random signs and scale ->
    a random neuron), its input and calibration input, and the encoding."""
    seed = draw(st.integers(0, 2 ** 31 - 1))
    rng = np.random.default_rng(seed)
    T = draw(st.integers(1, 4))
    encoding = draw(st.sampled_from(["binary", "graded"]))
    weight_bits = draw(st.integers(2, 8))
    n_in = int(rng.integers(3, 12))
    d0 = int(rng.integers(1, 9))
    nodes = [Node("enc", O.IntegerLIF(d=d0, norm=1.0, encoding=encoding), ("x",))]
    outs = []
    for k in range(draw(st.integers(1, 5))):
        n_out = int(rng.integers(1, 10))
        d = draw(st.integers(1, 8))
        # both signs; sized so that the current is of the order of D (times 2**-2 .. 2**3)
        w = rng.normal(loc=0.3, size=(n_out, n_in)) * (2.0 * d / (n_in * d0)) * 2.0 ** draw(st.integers(-2, 3))
        b = rng.normal(size=n_out) * 2.0 ** int(rng.integers(-3, 3)) if rng.random() < 0.5 else np.zeros(n_out)
        integer = draw(st.booleans())
        threshold = float(rng.uniform(0.2, 2.0))
        # its first neuron is driven (non-negative weights, a bias above the threshold / 2 D):
        # every layer has a neuron that fires
        w[0], b[0] = np.abs(w[0]), abs(b[0]) + 2.0 * (d if integer else threshold)
        nodes.append(Node(f"fc{k}", O.Linear(weight=O.as_param(w), bias=O.as_param(b)), ("enc",)))
        if integer:
            leak = draw(st.sampled_from(["none", "int", "steps"]))
            leak = (None if leak == "none" else float(rng.random()) if leak == "int"
                    else tuple(float(v) for v in rng.random(max(T - 1, 1))))
            neuron = O.IntegerLIF(d=d, norm=float(d), leak=leak, reset_norm=float(draw(st.sampled_from([1, d]))),
                                  rounding=draw(st.sampled_from(["half_even", "half_up"])), encoding=encoding)
        else:
            neuron = O.BinaryLIF(beta=float(rng.random()), threshold=threshold, encoding=encoding)
        nodes.append(Node(f"n{k}", neuron, (f"fc{k}",)))
        outs.append(f"n{k}")
    graph = Graph(inputs=(TensorSpec("x", (n_in,)),), nodes=tuple(nodes), outputs=tuple(outs))
    unit = 2.0 ** draw(st.integers(-3, 4))  # the input's scale moves every calibrated exponent
    x = torch.from_numpy(rng.normal(size=(T, 3, n_in)) * unit * d0)
    x[0, 0, 0] = float(d0)  # the encoder fires at least once, whatever the scale
    cal = x * float(rng.choice([0.25, 1.0, 2.0]))  # calibrated on other data: clamps may happen
    return graph, x, cal, encoding, weight_bits


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(_layers())
def test_property_random_layers_fixed_lava_equals_the_fixed_reference(case):
    graph, x, cal, encoding, weight_bits = case
    gq = quantize_graph(graph, cal, weight_bits=weight_bits)
    bundle = lava_export.LavaBundle(None, *lava_export.compile_graph(gq, encoding, partitions=1))
    r = lava_run.run(bundle, x)
    ref = assert_fixed_exact(gq, x, r, min_spikes=0, every_layer_fires=False)
    assert float(ref.records["enc"].q.sum()) > 0  # the encoder fires
    for o in graph.outputs:  # and every random layer
        assert float(ref.records[o].q.sum()) > 0, o


# ---------------------------------------------------------------------------------------------
# saturation
# ---------------------------------------------------------------------------------------------


def test_saturation_counts_equal_the_reference():
    """A layer calibrated on small inputs and driven far beyond (weights 2000x larger for the same
    exponents, as tests/core/test_quantize.py does): its 24-bit state clamps, and Lava counts the
    same clamps per layer; an input beyond the 24-bit message is clamped at the host boundary."""
    rng = np.random.default_rng(0)
    w = O.as_param(rng.normal(size=(16, 32)) * 0.05)
    nodes = (Node("in_spk", O.IntegerLIF(d=4, norm=1.0, encoding="graded"), ("x",)),
             Node("fc", O.Linear(weight=w), ("in_spk",)),
             Node("n", O.IntegerLIF(d=4, norm=4.0, leak=0.5, encoding="graded"), ("fc",)))
    g = Graph(inputs=(TensorSpec("x", (32,)),), nodes=nodes, outputs=("n",))
    gq = quantize_graph(g, torch.full((2, 8, 32), 1.0))
    big_w = np.where(rng.random(gq.node("fc").op.weight.shape) < 0.8, 127.0, -127.0) * 2 ** 10
    big = gq.replace_nodes([Node(n.name, O.Linear(weight=O.as_param(big_w)), n.inputs) if n.name == "fc" else n
                            for n in gq.nodes])
    x = torch.full((2, 3, 32), 4.0, dtype=torch.float64)
    x[:, 0] = 1e9  # beyond the host boundary's 24 bits
    bundle = lava_export.LavaBundle(None, *lava_export.compile_graph(big, "graded", partitions="per-layer"))
    r = lava_run.run(bundle, x)
    ref = assert_fixed_exact(big, x, r)
    sat = ref.records["n"].saturated
    assert sat > ref.records["n"].q.numel() // 2 and r.info["saturated"]["n"] == sat  # most updates clamp
    assert sum(r.info["host_saturated"].values()) == 2 * 32  # two macro-steps of sample 0
    assert float(ref.records["n"].q.max()) == 4  # clamped states still fire D: nothing wrapped


# ---------------------------------------------------------------------------------------------
# SpikeTrack: the S256-T1 search frame and the bundled tiny tracker
# ---------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_s256_t1_search_frame_fixed_lava_equals_the_fixed_reference(s256_model, s256_inputs):
    """The official-fixture weights' S256-T1 search frame (memory from the fixture's template),
    quantized with 8-bit weights on that frame, graded spikes, two partitions."""
    from spikedeploy.capture import capture
    from spikedeploy.passes import ExpandSpikes, default_pipeline

    xt, xs, _ = s256_inputs
    with torch.no_grad():
        memory = s256_model.template_branch(xt)
    g = ExpandSpikes("graded").apply(default_pipeline().apply(
        capture(s256_model.search_net(memory), xs, name="spiketrack-s256-t1/search")))
    x = xs.to(torch.float64)
    gq = quantize_graph(g, x)
    bundle = lava_export.LavaBundle(None, *lava_export.compile_graph(gq, "graded", partitions=2))
    r = lava_run.run(bundle, x)
    assert len(list(gq.neurons())) == 171
    assert_fixed_exact(gq, x, r, min_spikes=1e5)


@pytest.fixture(scope="module")
def tiny_tracker_fixed():
    from spikedeploy import api
    from spikedeploy.demo import _search_crops
    from spikedeploy.models.spiketrack import default_tracker_checkpoint
    from spikedeploy.tracking.synth import demo_clip

    ckpt = str(default_tracker_checkpoint())
    frames, gt = demo_clip(num_frames=12)
    crops = {"template": _search_crops(frames[:1], gt[:1], 128, 1),
             "search": _search_crops(frames[5:6], gt[5:6], 128, 1),
             "search2": _search_crops(frames[11:12], gt[11:12], 128, 1)}
    loaded = {b: api.build_model(f"spiketrack-tiny128-t1:{b}", checkpoint=ckpt) for b in ("template", "search")}
    return loaded, {k: torch.from_numpy(v).to(torch.float64) for k, v in crops.items()}


@pytest.mark.slow  # quantization calibrates on float runs (~10 s a branch), Lava 2-3 s a frame
@pytest.mark.parametrize("branch, encoding, partitions", [("template", "binary", 1), ("search", "graded", 2)])
def test_tiny_tracker_fixed_lava_equals_the_fixed_reference_on_demo_crops(tiny_tracker_fixed, branch, encoding,
                                                                          partitions):
    """The bundled trained tiny tracker (T = 1): template branch on the first frame's crop, search
    branch on two frames' crops (live runtime: one start, two frames), each layer firing."""
    from spikedeploy import api
    from spikedeploy.runtimes.lava_live import LiveRuntime

    loaded, crops = tiny_tracker_fixed
    graph = api.prepare_graph(loaded[branch], timesteps=1, encoding=encoding)
    x = crops[branch]
    gq = quantize_graph(graph, x)
    bundle = lava_export.LavaBundle(None, *lava_export.compile_graph(gq, encoding, partitions=partitions))
    counts = bundle.description["process_counts"]
    if branch == "search":
        assert counts["memory_read"] == 12 and counts.get("conv", 0) > 0, counts  # kernels in integers too
        with LiveRuntime(bundle, partitions=partitions) as live:
            for xi in (x, crops["search2"]):
                assert_fixed_exact(gq, xi, live.run(xi))
    else:
        assert counts["memory_write"] == 6, counts
        assert_fixed_exact(gq, x, lava_run.run(bundle, x))


# ---------------------------------------------------------------------------------------------
# template memories and models per tag
# ---------------------------------------------------------------------------------------------


def test_a_new_memory_is_quantized_and_runs_live_in_integers():
    """A fixed bundle's MemoryRead (a ``memory_read`` kernel in integers): a new template memory is
    given as the plan's integer mantissas (``quantize_memory``); ``with_memory`` refuses fractions;
    the live runtime runs the new memory exactly like the reference on the graph that holds it."""
    from dataclasses import replace

    from spikedeploy.passes import ExpandSpikes
    from spikedeploy.passes.quantize import quantize_memory
    from spikedeploy.runtimes.lava_live import LiveRuntime

    rng = np.random.default_rng(10)
    mem = O.as_param(rng.normal(size=(1, 2, 2, 3)) * 1.5)  # [T_mem, H, C/H, Cv/H]: C = 4, Cv = 6
    g = Graph(inputs=(TensorSpec("x", (4, 5)),),
              nodes=(Node("n0", O.IntegerLIF(d=4, norm=2.0), ("x",)),
                     Node("read", O.MemoryRead(memory=mem, num_heads=2, scale=0.5), ("n0",)),
                     Node("n1", O.IntegerLIF(d=3, norm=3.0, leak=0.5), ("read",))),
              outputs=("n1", "read"))
    x = torch.from_numpy(rng.normal(size=(2, 1, 4, 5)) * 2 + 1.5)
    gq = quantize_graph(ExpandSpikes("graded").apply(g), x)
    bundle = lava_export.LavaBundle(None, *lava_export.compile_graph(gq, "graded", partitions=1))
    assert bundle.description["process_counts"]["memory_read"] == 1
    new, clipped = quantize_memory(gq, "read", rng.normal(size=(1, 2, 2, 3)) * 1.5)
    assert clipped == 0 and not np.array_equal(new, gq.node("read").op.memory)
    with pytest.raises(InputError, match="quantize_memory"):
        lava_export.with_memory(bundle, {"read": new + 0.25})
    gq2 = gq.replace_nodes([Node(n.name, replace(n.op, memory=O.as_param(new)), n.inputs) if n.name == "read" else n
                            for n in gq.nodes])
    with LiveRuntime(bundle, partitions=1) as live:
        assert_fixed_exact(gq, x, live.run(x))
        live.set_memory({"read": new})
        assert_fixed_exact(gq2, x, live.run(x))
    assert_fixed_exact(gq2, x, lava_run.run(lava_export.with_memory(bundle, {"read": new}), x, partitions="per-layer"))


def test_a_process_without_a_model_of_the_tag_is_named(monkeypatch):
    from spikedeploy.runtimes import lava_procs as LP

    gq, x = _sdt("ilif", "graded", B=1)
    bundle = lava_export.LavaBundle(None, *lava_export.compile_graph(gq, "graded"))
    assert any(p["type"] == "junction" for p in bundle.description["processes"])
    monkeypatch.delitem(LP.MODELS_BY_TAG["fixed_pt"], LP.Junction)
    with pytest.raises(ConfigError, match=r"process '.*' \(Junction\) has no fixed_pt model"):
        lava_run.run(bundle, x)


def test_a_quantize_after_a_neuron_is_refused():
    from spikedeploy.errors import UnsupportedOpError

    g = Graph(inputs=(TensorSpec("x", (4,)),),
              nodes=(Node("n0", O.IntegerLIF(d=4, norm=1.0, encoding="graded"), ("x",)),
                     Node("q", O.Quantize(exponent=3), ("n0",)),
                     Node("n1", O.FixedIntegerLIF(d=4, unit=8, reset=8, encoding="graded"), ("q",))),
              outputs=("n1",))
    with pytest.raises(UnsupportedOpError, match="'q'.*host -> device boundary and runs on the host"):
        lava_export.compile_graph(g, "graded")
