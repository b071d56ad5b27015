"""The Lava runtime (floating_pt CPU simulator) against the reference spike modes.

Every comparison demands the SAME spike counts q for every neuron layer and every macro-step as
``spikedeploy.reference.execute(graph, x, mode)``, and that spikes occurred in every layer (an
all-zero comparison proves nothing). Lava's Python runtime starts one OS process per process
model, so the graphs and batches are small; each run is a single Lava run for the whole batch.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from spikedeploy.errors import ConfigError, SpikedeployError
from spikedeploy.exporters import lava as lava_export
from spikedeploy.ir import Graph, Node, TensorSpec, ops as O
from spikedeploy.reference import execute
from spikedeploy.runtimes import lava as lava_run

ENCODINGS = ("binary", "graded")


def _p(a):
    return O.as_param(a)


def _w(rng, o, i, gain=1.0):
    return _p(rng.normal(size=(o, i)) * gain / np.sqrt(i))


def chain_graph() -> Graph:
    """Host Linear -> three neuron layers (stateless, leaky, per-step leaks) -> Linear; the last
    neuron is also a graph output (ExpandSpikes descales it with a Scale node)."""
    rng = np.random.default_rng(0)
    return Graph(
        inputs=(TensorSpec("x", (6,)),),
        nodes=(
            Node("fc0", O.Linear(_w(rng, 8, 6, 3), _p(rng.normal(size=8))), ("x",)),
            Node("n0", O.IntegerLIF(d=4, norm=4.0), ("fc0",)),
            Node("fc1", O.Linear(_w(rng, 7, 8, 6), _p(rng.normal(size=7))), ("n0",)),
            Node("n1", O.IntegerLIF(d=4, norm=1.0, leak=0.25, label="leaky I-LIF"), ("fc1",)),
            Node("fc2", O.Linear(_w(rng, 5, 7, 2), None), ("n1",)),
            Node("n2", O.IntegerLIF(d=3, norm=3.0, leak=(0.5, 0.7), reset_norm=3.0, label="NI-LIF"), ("fc2",)),
            Node("out", O.Linear(_w(rng, 2, 5), _p([0.1, -0.2])), ("n2",)),
        ),
        outputs=("out", "n2"),
    )


def residual_graph() -> Graph:
    """A residual Add whose two inputs arrive at different times: a skip synapse straight from n0
    and a branch through one more neuron layer (n1); plus a position-embedding AddConstant."""
    rng = np.random.default_rng(1)
    return Graph(
        inputs=(TensorSpec("x", (5,)),),
        nodes=(
            Node("fc0", O.Linear(_w(rng, 6, 5, 3), _p(rng.normal(size=6))), ("x",)),
            Node("n0", O.IntegerLIF(d=4, norm=4.0), ("fc0",)),
            Node("skip", O.Linear(_w(rng, 6, 6, 4), _p(rng.normal(size=6))), ("n0",)),
            Node("fc_a", O.Linear(_w(rng, 6, 6, 5), None), ("n0",)),
            Node("n1", O.IntegerLIF(d=4, norm=4.0), ("fc_a",)),
            Node("fc_b", O.Linear(_w(rng, 6, 6, 4), _p(rng.normal(size=6))), ("n1",)),
            Node("add", O.Add(), ("skip", "fc_b")),
            Node("pos", O.AddConstant(_p(rng.normal(size=6) * 0.3 + 1.5)), ("add",)),
            Node("n2", O.IntegerLIF(d=4, norm=4.0, leak=1.0, label="integer IF"), ("pos",)),
            Node("out", O.Linear(_w(rng, 3, 6), None), ("n2",)),
        ),
        outputs=("out",),
    )


def conv_graph() -> Graph:
    """Host conv -> neuron -> grouped strided conv -> neuron -> permute/concat routing into a
    1x1 conv -> neuron -> average pooling -> reshape -> Linear."""
    rng = np.random.default_rng(2)

    def cw(o, i, k, gain):
        return _p(rng.normal(size=(o, i, k, k)) * gain / np.sqrt(i * k * k))

    return Graph(
        inputs=(TensorSpec("x", (3, 8, 8)),),
        nodes=(
            Node("conv0", O.Conv2d(cw(4, 3, 3, 3), _p(rng.normal(size=4)), padding=(1, 1)), ("x",)),
            Node("n0", O.IntegerLIF(d=4, norm=4.0), ("conv0",)),
            Node("conv1", O.Conv2d(cw(6, 2, 3, 6), _p(rng.normal(size=6)), stride=(2, 2), padding=(1, 1),
                                   groups=2), ("n0",)),
            Node("n1", O.IntegerLIF(d=4, norm=4.0), ("conv1",)),
            Node("tr", O.Permute((0, 2, 1)), ("n1",)),
            Node("cat", O.Concat(axis=0), ("n1", "tr")),
            Node("conv2", O.Conv2d(cw(5, 12, 1, 4), _p(rng.normal(size=5))), ("cat",)),
            Node("n2", O.IntegerLIF(d=4, norm=4.0), ("conv2",)),
            Node("pool", O.AvgPool2d(kernel=(2, 2), stride=(2, 2)), ("n2",)),
            Node("flat", O.Reshape((20,)), ("pool",)),
            Node("out", O.Linear(_w(rng, 3, 20, 2), _p(rng.normal(size=3))), ("flat",)),
        ),
        outputs=("out",),
    )


def other_neurons_graph() -> Graph:
    """DI-LIF (per-frame firing limit) and a binary LIF."""
    rng = np.random.default_rng(3)
    return Graph(
        inputs=(TensorSpec("x", (2, 6)),),
        nodes=(
            Node("fc0", O.Linear(_w(rng, 6, 6, 3), _p(rng.normal(size=6) + 1.0)), ("x",)),
            Node("di", O.DynamicIntegerLIF(d_init=2, gate_w=0.7, gate_b=0.1), ("fc0",)),
            Node("fc1", O.Conv1d(_p(rng.normal(size=(4, 2, 3)) * 1.5), _p(rng.normal(size=4)), padding=1), ("di",)),
            Node("bl", O.BinaryLIF(beta=0.5, threshold=0.8), ("fc1",)),
            Node("mean", O.MeanReduce(axes=(1,)), ("bl",)),
            Node("bn", O.BatchNorm(_p(rng.normal(size=4) * 0.1), _p(rng.uniform(0.5, 1.5, 4)),
                                   _p(rng.uniform(0.5, 2, 4)), _p(rng.normal(size=4))), ("mean",)),
            Node("n2", O.IntegerLIF(d=2, norm=2.0, leak=0.5), ("bn",)),
        ),
        outputs=("n2",),
    )


def assert_matches_reference(graph: Graph, x: torch.Tensor, encoding: str, bundle=None):
    bundle = bundle if bundle is not None else lava_export.LavaBundle(None, *lava_export.compile_graph(graph, encoding))
    result = lava_run.run(bundle, x)
    ref = execute(graph, x, encoding)
    neurons = [n.name for n in ref.graph.neurons()]
    assert sorted(result.spike_counts) == sorted(neurons)
    for name in neurons:
        q_ref = ref.neuron_q(name)
        q = result.spike_counts[name]
        assert q.shape == q_ref.shape, name
        assert int(q_ref.sum()) > 0, f"no spikes in {name}: the comparison would prove nothing"
        assert torch.equal(q, q_ref), f"{encoding}: {name} differs in {int((q != q_ref).sum())} of {q.numel()}"
    # outputs keep the given graph's names (lowering may rename one, e.g. ``n2`` -> ``n2.descale``)
    assert sorted(result.outputs) == sorted(graph.outputs) == sorted(ref.outputs)
    for o in graph.outputs:
        torch.testing.assert_close(result.outputs[o], ref.outputs[o], rtol=1e-9, atol=1e-12)
    assert result.target == "lava" and result.encoding == encoding
    return result


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_chain_matches_reference(encoding):
    x = torch.randn(3, 2, 6, generator=torch.Generator().manual_seed(0))
    desc, arrays = lava_export.compile_graph(chain_graph(), encoding)
    r = assert_matches_reference(chain_graph(), x, encoding, lava_export.LavaBundle(None, desc, arrays))
    assert r.info["select_tag"] == "floating_pt"
    assert r.info["host_nodes"] == ["fc0"] and "fc0" in r.info["host"]
    period = 4 if encoding == "binary" else 1
    assert r.info["period"] == period and r.info["macro_steps"] == 6  # B*T macro-steps, streamed
    # the run lasts until the last macro-step of the last stream is complete
    assert r.info["time_steps"] == desc["end_step"] + 5 * period
    assert r.info["wall_time_s"] > 0 and r.info["processes"] == len(desc["processes"])


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_residual_with_path_mismatch_matches_reference(encoding):
    graph = residual_graph()
    desc, arrays = lava_export.compile_graph(graph, encoding, fuse=False)  # the unfused process graph
    delays = [p for p in desc["processes"] if p["type"] == "delay"]
    assert delays, "the skip path must be delay-balanced"
    x = torch.randn(2, 2, 5, generator=torch.Generator().manual_seed(1))
    assert_matches_reference(graph, x, encoding, lava_export.LavaBundle(None, desc, arrays))


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_conv_and_routing_match_reference(encoding):
    x = torch.randn(2, 2, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    assert_matches_reference(conv_graph(), x, encoding)


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_dilif_binary_lif_mean_bn_match_reference(encoding):
    x = torch.randn(3, 2, 2, 6, generator=torch.Generator().manual_seed(3))
    r = assert_matches_reference(other_neurons_graph(), x, encoding)
    ref = execute(other_neurons_graph(), x, encoding)
    d = ref.records["di"].d
    assert len(set(d.flatten().tolist())) > 1, "DI-LIF's firing limit should change between frames"
    assert r.info["fusion"]["fused_synapses"] >= 3


# ---------------------------------------------------------------------------------------------
# the SDT-v3-style test model
# ---------------------------------------------------------------------------------------------


def _sdt(neuron: str, timesteps: int, num_inputs: int):
    from spikedeploy import api
    from spikedeploy.capture import capture
    from spikedeploy.passes import default_pipeline

    loaded = api.build_model("sdt-test", neuron=neuron, timesteps=timesteps)
    x = api.make_inputs(loaded, timesteps=timesteps, num_inputs=num_inputs, seed=1)
    graph = default_pipeline().apply(capture(loaded.module, x[:, :1], name="sdt-test"))
    return graph, x


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_sdt_model_matches_reference(encoding, tmp_path):
    graph, x = _sdt("ilif", 1, 2)
    path = lava_export.export(graph, tmp_path / "sdt.lava", encoding=encoding)
    r = assert_matches_reference(graph, x, encoding, lava_export.load(path))
    counts = r.info["process_counts"]
    assert counts["neuron"] == 14 and counts["attention"] == 1
    assert r.info["fusion"]["removed_delays"] >= 4 and r.info["fusion"]["fused_synapses"] >= 10
    assert r.info["host_nodes"] == ["stem_conv"]
    assert r.info["attention_pair_events"] and all(v > 0 for v in r.info["attention_pair_events"].values())


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_sdt_model_nilif_three_steps(encoding):
    graph, x = _sdt("nilif", 3, 1)
    r = assert_matches_reference(graph, x, encoding)
    assert r.info["macro_steps"] == 3


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_convolutions_kept_as_kernels_match_reference(encoding):
    """``unroll_limit=0``: every Conv2d/Conv1d runs as a ``ConvSynapse`` (kernel, not matrix),
    including convolutions fed by routed values (gathered first) and by residual sums."""
    graph, x = _sdt("nilif", 3, 1)
    bundle = lava_export.LavaBundle(None, *lava_export.compile_graph(graph, encoding, unroll_limit=0))
    procs = bundle.description["processes"]
    convs = [p for p in procs if p["type"] == "conv"]
    conv_taps = [t for p in procs for taps in p.get("inputs", {}).values() for t in taps
                 if t["syn"] is not None and t["syn"]["kind"] == "conv"]
    n_conv = sum(isinstance(n.op, (O.Conv2d, O.Conv1d)) for n in graph.nodes) - 1  # the stem runs on the host
    fused_convs = {t["syn"]["node"] for t in conv_taps}  # a convolution with several readers is in each
    assert len(convs) + len(fused_convs) == n_conv > 3 and len(fused_convs) > 3
    unfused = lava_export.compile_graph(graph, encoding, unroll_limit=0, fuse=False)[0]
    assert unfused["process_counts"]["conv"] == n_conv
    assert bundle.description["unroll_limit"] == 0
    r = assert_matches_reference(graph, x, encoding, bundle)
    assert r.info["process_counts"].get("conv", 0) == len(convs)
    default = lava_export.compile_graph(graph, encoding)[0]
    assert not any(p["type"] == "conv" for p in default["processes"]), "small layers stay unrolled by default"


# ---------------------------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------------------------


def test_fixed_pt_refuses_a_float_bundle():
    bundle = lava_export.LavaBundle(None, *lava_export.compile_graph(chain_graph(), "binary"))
    with pytest.raises(ConfigError, match="select_tag 'fixed_pt' cannot run this float bundle"):
        lava_run.run(bundle, torch.zeros(1, 1, 6), select_tag="fixed_pt")
    with pytest.raises(ConfigError, match="not implemented"):
        lava_run.run(bundle, torch.zeros(1, 1, 6), select_tag="bit_accurate_loihi")


def test_bad_input_shape_and_leak_length():
    bundle = lava_export.LavaBundle(None, *lava_export.compile_graph(chain_graph(), "graded"))
    with pytest.raises(SpikedeployError, match=r"\[T, B, 6\]"):
        lava_run.run(bundle, torch.zeros(1, 1, 5))
    with pytest.raises(SpikedeployError, match="per-step leaks"):  # n2 has leaks for T <= 3
        lava_run.run(bundle, torch.zeros(4, 1, 6))


# ---------------------------------------------------------------------------------------------
# time-axis ops (SpikeTrack T = 3)
# ---------------------------------------------------------------------------------------------


def per_step_constant_graph() -> Graph:
    """Three macro-steps with a per-step constant, captured as SpikeTrack T = 3's per-template
    position embeddings are: ``StackSteps(SelectStep(h, t) + pos[t] for t)``, then through a
    routing op and a synapse into neurons, and a per-step offset at a graph output."""
    rng = np.random.default_rng(7)
    nodes = [
        Node("fc0", O.Linear(_w(rng, 6, 5, 3), _p(rng.normal(size=6))), ("x",)),
        Node("n0", O.IntegerLIF(d=4, norm=4.0, leak=(0.5, 0.8), reset_norm=4.0, label="NI-LIF"), ("fc0",)),
        Node("fc1", O.Linear(_w(rng, 6, 6, 5), _p(rng.normal(size=6))), ("n0",)),
    ]
    for t in range(3):
        nodes += [Node(f"sel{t}", O.SelectStep(t), ("fc1",)),
                  Node(f"pos{t}", O.AddConstant(_p(rng.normal(size=6) + 1.0)), (f"sel{t}",))]
    nodes += [
        Node("stack", O.StackSteps(), ("pos0", "pos1", "pos2")),
        Node("n1", O.IntegerLIF(d=4, norm=4.0, leak=(0.5, 0.8), reset_norm=4.0, label="NI-LIF"), ("stack",)),
        Node("fc2", O.Linear(_w(rng, 4, 6, 3), None), ("n1",)),
    ]
    for t in range(3):
        nodes += [Node(f"osel{t}", O.SelectStep(t), ("fc2",)),
                  Node(f"opos{t}", O.AddConstant(_p(rng.normal(size=4))), (f"osel{t}",))]
    nodes += [Node("ostack", O.StackSteps(), ("opos0", "opos1", "opos2"))]
    return Graph(inputs=(TensorSpec("x", (5,), steps=3),), nodes=tuple(nodes), outputs=("ostack",))


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_per_step_constants_match_reference(encoding):
    graph = per_step_constant_graph()
    desc, arrays = lava_export.compile_graph(graph, encoding)
    (n1,) = [p for p in desc["processes"] if p["type"] == "neuron" and p["node"] == "n1"]
    assert arrays[n1["bias"]].shape == (3, 6), "the per-step constant is a per-step bias"
    x = torch.randn(3, 2, 5, generator=torch.Generator().manual_seed(7)) * 2
    assert_matches_reference(graph, x, encoding, lava_export.LavaBundle(None, desc, arrays))


def time_axis_graph() -> Graph:
    """Every time-axis and template-gate op, as SpikeTrack T = 3 uses them: a template step used
    alone (SelectStep -> one-step neuron), a one-step value repeated over the 3 steps into a
    residual add (RepeatTime), a time-varying memory read (T_mem = 3), per-step synapses stacked
    back (SelectStep -> Linear_t -> StackSteps), the gate MLP (GateLinear), the host GateSoftmax
    and TemplateGate fusing the 3 steps into one."""
    rng = np.random.default_rng(9)

    def lin(o, i, gain=3.0, bias=True):
        return O.Linear(_w(rng, o, i, gain), _p(rng.normal(size=o) * 0.5 + 0.5) if bias else None)

    nodes = [
        Node("fc0", lin(5, 5), ("x",)),
        Node("n0", O.IntegerLIF(d=4, norm=4.0, leak=(0.5, 0.8), reset_norm=4.0), ("fc0",)),
        Node("sel", O.SelectStep(1), ("n0",)),
        Node("fc1", lin(5, 5, 5), ("sel",)),
        Node("n1", O.IntegerLIF(d=4, norm=4.0), ("fc1",)),
        Node("fc2", lin(5, 5, 4), ("n1",)),
        Node("rep", O.RepeatTime(3), ("fc2",)),
        Node("fc3", lin(5, 5, 4), ("n0",)),
        Node("add", O.Add(), ("rep", "fc3")),
        Node("n2", O.IntegerLIF(d=4, norm=4.0, leak=(0.5, 0.8), reset_norm=4.0), ("add",)),
        Node("mread", O.MemoryRead(memory=_p(rng.normal(size=(3, 2, 2, 3)) * 2.0), num_heads=2, scale=1.0), ("n2",)),
        Node("n3", O.IntegerLIF(d=4, norm=4.0), ("mread",)),
    ]
    for t in range(3):
        nodes += [Node(f"s{t}", O.SelectStep(t), ("n3",)), Node(f"l{t}", lin(5, 5, 5), (f"s{t}",))]
    nodes += [
        Node("stack", O.StackSteps(), ("l0", "l1", "l2")),
        Node("n4", O.IntegerLIF(d=4, norm=4.0, leak=(0.5, 0.8), reset_norm=4.0), ("stack",)),
        Node("g0", O.GateLinear(_w(rng, 2, 5, 4), _p(rng.normal(size=2))), ("n4",)),
        Node("g1", O.IntegerLIF(d=4, norm=4.0), ("g0",)),
        Node("g2", O.GateLinear(_w(rng, 1, 2, 3), _p(rng.normal(size=1))), ("g1",)),
        Node("logits", O.Reshape((6,)), ("g2",)),
        Node("soft", O.GateSoftmax(), ("logits",)),
        Node("gate", O.TemplateGate(scale=1.0), ("n4", "soft")),
        Node("n5", O.IntegerLIF(d=4, norm=4.0), ("gate",)),
        Node("out", lin(3, 5, 1), ("n5",)),
    ]
    return Graph(inputs=(TensorSpec("x", (4, 5), steps=3),), nodes=tuple(nodes), outputs=("out",))


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_time_axis_and_template_gate_ops_match_reference(encoding):
    graph = time_axis_graph()
    desc, arrays = lava_export.compile_graph(graph, encoding)
    assert desc["slots"] == 3
    kinds = desc["process_counts"]
    assert kinds["host_softmax"] == 1 and kinds["template_gate"] == 1
    (soft,) = [p for p in desc["processes"] if p["type"] == "host_softmax"]
    assert soft["host"] is True, "the softmax is a host op and marked as such"
    # fused: the step gates of SelectStep / the time-varying memory read became tap filters
    assert desc["fusion"]["removed_step_gates"] >= 3 and "step_gate" not in kinds
    x = torch.randn(3, 2, 4, 5, generator=torch.Generator().manual_seed(9)) * 2 + 1
    r = assert_matches_reference(graph, x, encoding, lava_export.LavaBundle(None, desc, arrays))
    assert r.spike_counts["n1"].shape[0] == 1 and r.spike_counts["n2"].shape[0] == 3
    # the same without fusion: step gates and delay lines as processes
    unfused = lava_export.compile_graph(graph, encoding, fuse=False)
    assert unfused[0]["process_counts"]["step_gate"] >= 3
    assert_matches_reference(graph, x, encoding, lava_export.LavaBundle(None, *unfused))


def test_dense_layers_kept_as_kernels_match_reference():
    """``unroll_limit=0``: Linear/GateLinear run as ``MatMulSynapse`` kernels (SpikeTrack T = 3's
    gate MLP would unroll into 2.5e7 synapses per layer), fused into their readers or standalone."""
    graph = time_axis_graph()
    x = torch.randn(3, 1, 4, 5, generator=torch.Generator().manual_seed(10)) * 2 + 1
    for fuse in (True, False):
        desc, arrays = lava_export.compile_graph(graph, "graded", unroll_limit=0, fuse=fuse)
        kinds = {t["syn"]["kind"] for p in desc["processes"] for taps in p.get("inputs", {}).values()
                 for t in taps if t["syn"] is not None}
        assert ("matmul" in kinds) if fuse else desc["process_counts"]["matmul"] >= 8
        assert_matches_reference(graph, x, "graded", lava_export.LavaBundle(None, desc, arrays))


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_a_time_op_on_the_graph_input_runs_on_the_host_with_the_inputs_fixed_steps(encoding, tmp_path):
    """RepeatTime directly on a one-step input runs in the bundle's host part, which needs the
    input's fixed T: the bundle records it (``inputs[].steps``), its loader and validator keep it
    (before, the host part lost it and every run failed), and a wrong T is refused by name."""
    rng = np.random.default_rng(1)

    def lin(o, i, gain=3.0):
        return O.Linear(O.as_param(rng.normal(size=(o, i)) * gain / np.sqrt(i)), O.as_param(rng.normal(size=o) + 0.5))

    nodes = (Node("rep", O.RepeatTime(3), ("x",)), Node("fc0", lin(6, 5), ("rep",)),
             Node("n0", O.IntegerLIF(d=4, norm=4.0), ("fc0",)), Node("out", lin(3, 6, 1), ("n0",)))
    graph = Graph(inputs=(TensorSpec("x", (5,), steps=1),), nodes=nodes, outputs=("out",))
    x = torch.randn(1, 2, 5, generator=torch.Generator().manual_seed(3)) * 2 + 1
    path = lava_export.export(graph, tmp_path / "rep.lava", encoding=encoding)
    bundle = lava_export.load(path)
    assert bundle.description["inputs"] == [{"name": "x", "shape": [5], "steps": 1}]
    assert [n["op"]["kind"] for n in bundle.description["host"]["nodes"]][0] == "RepeatTime"
    r = lava_run.run(bundle, x)
    ref = execute(graph, x, encoding)
    q = ref.neuron_q("n0")
    assert int(q.sum()) > 0 and torch.equal(r.spike_counts["n0"], q)
    with pytest.raises(SpikedeployError, match=r"input 'x' must have exactly T=1"):
        lava_run.run(bundle, torch.randn(2, 2, 5))
