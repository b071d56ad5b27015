"""Graph passes: FoldBatchNorm, FuseLinearChains, ExpandSpikes, PassManager."""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
import pytest
import torch

from spikedeploy.capture import capture
from spikedeploy.errors import SpikedeployError
from spikedeploy.ir import Graph, Node, TensorSpec, ops as O, validate
from spikedeploy.models.sdt_test import SDTTestNet, init_for_spiking
from spikedeploy.passes import ExpandSpikes, FoldBatchNorm, FuseLinearChains, PassManager, default_pipeline
from spikedeploy.passes.fuse import fuse_pair
from spikedeploy.reference import execute

DT = torch.float64

#: Folding BN computes (a*W)·x + (a*bias + b) instead of a*(W·x + bias) + b (and the reference BN
#: computes (y - mean)/sqrt(var + eps)*w + bias). In float64 each of the K accumulated products
#: W[o,c,u,v]*x[...] then carries a relative error of a few ulps (~1e-16) from the reassociation,
#: so the difference is bounded by ~K * few ulps * max|term|; with K <= 100 here, 1e-12 relative to
#: the largest output magnitude leaves a wide margin (measured: <= 1e-15).
FOLD_RTOL = 1e-12
#: Fusing b(a(x)) into one layer reassociates a double sum sum_m Wb[o,m] sum_c Wa[m,c] x[c] into
#: sum_c (sum_m Wb[o,m] Wa[m,c]) x[c]: again a few ulps per accumulated term (K_a * K_b <= ~300
#: terms here), so 1e-12 relative to the largest output magnitude is a safe float64 bound.
FUSE_RTOL = 1e-12


def _rng(seed):
    return np.random.default_rng(seed)


def _p(a):
    return O.as_param(a)


def _bn(c, seed):
    r = _rng(seed)
    return O.BatchNorm(
        mean=_p(r.normal(size=c)), var=_p(r.uniform(0.2, 2.0, size=c)),
        weight=_p(r.uniform(0.5, 1.5, size=c) * r.choice([-1, 1], size=c)), bias=_p(r.normal(size=c)),
        eps=1e-5,
    )


def _conv2d(ci, co, k, seed, bias=True, **kw):
    r = _rng(seed)
    groups = kw.get("groups", 1)
    return O.Conv2d(
        weight=_p(r.normal(size=(co, ci // groups, k, k))),
        bias=_p(r.normal(size=co)) if bias else None,
        stride=kw.get("stride", (1, 1)), padding=kw.get("padding", (0, 0)), groups=groups,
    )


def _conv1d(ci, co, k, seed, bias=True, **kw):
    r = _rng(seed)
    return O.Conv1d(
        weight=_p(r.normal(size=(co, ci, k))), bias=_p(r.normal(size=co)) if bias else None,
        stride=kw.get("stride", 1), padding=kw.get("padding", 0),
    )


def _linear(i, o, seed, bias=True):
    r = _rng(seed)
    return O.Linear(weight=_p(r.normal(size=(o, i))), bias=_p(r.normal(size=o)) if bias else None)


def _chain(in_shape, *ops, neuron=True) -> Graph:
    """x -> ops[0] -> ops[1] ... (-> IntegerLIF 'spike'), nodes named l0, l1, ..."""
    nodes, prev = [], "x"
    for i, op in enumerate(ops):
        nodes.append(Node(f"l{i}", op, (prev,), source=f"layer{i}"))
        prev = f"l{i}"
    if neuron:
        nodes.append(Node("spike", O.IntegerLIF(d=4, norm=4.0), (prev,)))
        prev = "spike"
    return Graph(inputs=(TensorSpec("x", in_shape),), nodes=tuple(nodes), outputs=(prev,))


def _x(graph, T=2, B=3, seed=0, scale=2.0):
    g = torch.Generator().manual_seed(seed)
    return scale * torch.randn((T, B) + tuple(graph.inputs[0].shape), dtype=DT, generator=g)


def _assert_close(actual, expected, rtol):
    actual, expected = actual.numpy(), expected.numpy()
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * np.abs(expected).max())


def _fingerprint(graph: Graph):
    """A deep, comparable snapshot of a graph (ops compare by identity, so unpack their fields)."""

    def val(v):
        return ("array", v.shape, v.tobytes(), v.flags.writeable) if isinstance(v, np.ndarray) else v

    return (
        graph.inputs,
        graph.outputs,
        graph.meta,
        tuple(
            (n.name, n.inputs, n.source, type(n.op).__name__,
             tuple((f.name, val(getattr(n.op, f.name))) for f in dataclasses.fields(n.op)))
            for n in graph.nodes
        ),
    )


def _kinds(graph):
    return [n.op.kind for n in graph.nodes]


# ---------------------------------------------------------------------------------------------
# FoldBatchNorm
# ---------------------------------------------------------------------------------------------

FOLD_CASES = {
    "conv2d": lambda: _chain((3, 6, 6), _conv2d(3, 4, 3, 1, padding=(1, 1)), _bn(4, 2)),
    "conv2d-nobias-strided": lambda: _chain((3, 7, 7), _conv2d(3, 4, 3, 1, bias=False, stride=(2, 2)), _bn(4, 2)),
    "conv2d-depthwise": lambda: _chain((4, 5, 5), _conv2d(4, 4, 3, 1, groups=4, padding=(1, 1)), _bn(4, 2)),
    "conv1d": lambda: _chain((3, 7), _conv1d(3, 5, 3, 1, padding=1), _bn(5, 2)),
    "conv1d-pointwise": lambda: _chain((3, 7), _conv1d(3, 5, 1, 1, bias=False), _bn(5, 2)),
    "linear": lambda: _chain((6,), _linear(6, 5, 1), _bn(5, 2)),
}


@pytest.mark.parametrize("case", sorted(FOLD_CASES))
def test_fold_batchnorm_hand_built(case):
    g = FOLD_CASES[case]()
    folded = FoldBatchNorm().apply(g)
    assert "BatchNorm" not in _kinds(folded)
    assert len(folded.nodes) == len(g.nodes) - 1
    assert folded.node("spike").inputs == ("l0",)
    assert folded.node("l0").source == "layer0"
    x = _x(g)
    ref, got = execute(g, x), execute(folded, x)
    # the value entering the neuron
    _assert_close(got.records["l0"].value, ref.records["l1"].value, FOLD_RTOL)
    assert torch.equal(got.records["spike"].q, ref.records["spike"].q)


def test_fold_batchnorm_formula():
    conv, bn = _conv2d(2, 3, 3, 5), _bn(3, 6)
    folded = FoldBatchNorm().apply(_chain((2, 4, 4), conv, bn)).node("l0").op
    a = bn.weight / np.sqrt(bn.var + bn.eps)
    np.testing.assert_array_equal(folded.weight, conv.weight * a[:, None, None, None])
    np.testing.assert_array_equal(folded.bias, a * conv.bias + (bn.bias - bn.mean * a))
    assert not folded.weight.flags.writeable and not folded.bias.flags.writeable


def test_fold_batchnorm_as_graph_output():
    g = _chain((3, 5, 5), _conv2d(3, 2, 3, 1), _bn(2, 2), neuron=False)
    folded = FoldBatchNorm().apply(g)
    assert folded.outputs == ("l0",) and _kinds(folded) == ["Conv2d"]
    x = _x(g)
    _assert_close(execute(folded, x).outputs["l0"], execute(g, x).outputs["l1"], FOLD_RTOL)


@functools.lru_cache(maxsize=None)
def _sdt_graph(kind="ilif", T=2):
    model = SDTTestNet(neuron=kind, time_steps=3, dims=(8, 16), image_size=16)
    init_for_spiking(model, seed=0)
    model.double().eval()
    return capture(model, torch.zeros(T, 1, 3, 16, 16, dtype=DT))


def test_fold_batchnorm_sdt_model_with_frozen_bn():
    g = _sdt_graph()
    folded = FoldBatchNorm().apply(g)
    # every BatchNorm of the SDT model (torch BN2d/BN1d and FrozenBatchNorm2d) sits after a conv
    assert _kinds(g).count("BatchNorm") == 13
    assert "BatchNorm" not in _kinds(folded)
    assert len(folded.nodes) == len(g.nodes) - 13
    # the FrozenBatchNorm2d layers of the conv block are folded like torch's BatchNorm
    assert g.node("conv_block.bn1").op.kind == "BatchNorm"
    names = {n.name for n in folded.nodes}
    assert not names & {"conv_block.bn1", "conv_block.bn2", "stem_bn", "attn.q_conv.1"}
    assert folded.node("conv_block.spike2").inputs == ("conv_block.conv1",)
    assert {n.name for n in folded.neurons()} == {n.name for n in g.neurons()}
    x = _x(g, T=2, B=4, seed=3, scale=1.0)
    ref, got = execute(g, x), execute(folded, x)
    for n in g.neurons():
        assert torch.equal(got.records[n.name].q, ref.records[n.name].q), n.name
        # the value entering the neuron: the BN's output before, the folded conv's after
        _assert_close(got.records[folded.node(n.name).inputs[0]].value, ref.records[n.inputs[0]].value, FOLD_RTOL)
    (o,) = g.outputs
    _assert_close(got.outputs[o], ref.outputs[o], FOLD_RTOL)


def test_batchnorm_not_after_foldable_layer_stays():
    bn = _bn(3, 1)
    cases = [
        # BN straight on the input
        Graph(inputs=(TensorSpec("x", (3, 4)),), nodes=(Node("bn", bn, ("x",)),), outputs=("bn",)),
        # BN after a neuron
        Graph(inputs=(TensorSpec("x", (3, 4)),),
              nodes=(Node("n", O.IntegerLIF(d=2, norm=2.0), ("x",)), Node("bn", bn, ("n",))),
              outputs=("bn",)),
        # BN after a Linear on [N, F]: the BN channel axis (N) is not the Linear's output axis
        Graph(inputs=(TensorSpec("x", (3, 4)),),
              nodes=(Node("fc", _linear(4, 6, 2), ("x",)), Node("bn", bn, ("fc",))), outputs=("bn",)),
        # the conv has a second reader, so folding would change that reader's input
        Graph(inputs=(TensorSpec("x", (2, 4)),),
              nodes=(Node("c", _conv1d(2, 3, 1, 3), ("x",)), Node("bn", bn, ("c",)),
                     Node("add", O.Add(), ("bn", "c"))), outputs=("add",)),
        # the conv is itself a graph output
        Graph(inputs=(TensorSpec("x", (2, 4)),),
              nodes=(Node("c", _conv1d(2, 3, 1, 3), ("x",)), Node("bn", bn, ("c",))), outputs=("bn", "c")),
    ]
    for g in cases:
        folded = FoldBatchNorm().apply(g)
        assert _fingerprint(folded) == _fingerprint(g)


# ---------------------------------------------------------------------------------------------
# FuseLinearChains
# ---------------------------------------------------------------------------------------------

FUSE_CASES = {
    "linear-linear": lambda: _chain((5, 6), _linear(6, 4, 1), _linear(4, 3, 2)),
    "linear-linear-nobias": lambda: _chain((6,), _linear(6, 4, 1, bias=False), _linear(4, 3, 2, bias=False)),
    "kxk-1x1": lambda: _chain((2, 7, 7), _conv2d(2, 4, 3, 1, stride=(2, 2), padding=(1, 1)), _conv2d(4, 3, 1, 2)),
    "1x1-kxk-padded-nobias": lambda: _chain((2, 6, 6), _conv2d(2, 4, 1, 1, bias=False),
                                            _conv2d(4, 3, 3, 2, padding=(1, 1))),
    "1x1bias-kxk-unpadded": lambda: _chain((2, 6, 6), _conv2d(2, 4, 1, 1), _conv2d(4, 3, 3, 2, stride=(2, 2))),
    "conv1d-k-1": lambda: _chain((3, 8), _conv1d(3, 4, 3, 1, padding=1), _conv1d(4, 2, 1, 2)),
    "conv1d-1-k": lambda: _chain((3, 8), _conv1d(3, 4, 1, 1, bias=False), _conv1d(4, 2, 3, 2, padding=1)),
    "three-linears": lambda: _chain((6,), _linear(6, 5, 1), _linear(5, 4, 2), _linear(4, 3, 3)),
}


@pytest.mark.parametrize("case", sorted(FUSE_CASES))
def test_fuse_linear_chains(case):
    g = FUSE_CASES[case]()
    n_layers = len(g.nodes) - 1
    fused = FuseLinearChains().apply(g)
    assert len(fused.nodes) == 2, _kinds(fused)  # one layer + the neuron
    last = f"l{n_layers - 1}"
    assert fused.nodes[0].name == last and fused.nodes[0].inputs == ("x",)
    assert fused.node("spike").inputs == (last,)
    x = _x(g)
    ref, got = execute(g, x), execute(fused, x)
    _assert_close(got.records[last].value, ref.records[last].value, FUSE_RTOL)
    assert torch.equal(got.records["spike"].q, ref.records["spike"].q)


def test_fuse_depthwise_pointwise_needs_allow_growth():
    g = _chain((4, 6, 6), _conv2d(4, 4, 3, 1, groups=4, padding=(1, 1)), _conv2d(4, 5, 1, 2))
    # dense 5x4x3x3 = 180 weights > 36 + 20: refused by default
    assert _fingerprint(FuseLinearChains().apply(g)) == _fingerprint(g)
    fused = FuseLinearChains(allow_growth=True).apply(g)
    assert _kinds(fused) == ["Conv2d", "IntegerLIF"]
    op = fused.node("l1").op
    assert op.groups == 1 and op.weight.shape == (5, 4, 3, 3) and op.padding == (1, 1)
    x = _x(g)
    _assert_close(execute(fused, x).records["l1"].value, execute(g, x).records["l1"].value, FUSE_RTOL)


def test_fuse_pointwise_with_bias_then_padded_conv_is_not_fused():
    """Zero padding of the k x k conv would not see the 1x1 conv's bias at the border: not exact."""
    g = _chain((2, 5, 5), _conv2d(2, 4, 1, 1, bias=True), _conv2d(4, 3, 3, 2, padding=(1, 1)))
    out = FuseLinearChains(allow_growth=True).apply(g)
    assert len(out.nodes) == len(g.nodes) == 3
    assert _fingerprint(out) == _fingerprint(g)
    assert fuse_pair(g.nodes[0].op, g.nodes[1].op) is None
    # with a zero bias the border is exact again
    a0 = dataclasses.replace(g.nodes[0].op, bias=O.as_param(np.zeros(4)))
    assert fuse_pair(a0, g.nodes[1].op) is not None


def test_fuse_never_crosses_a_neuron():
    lin1, lin2 = _linear(6, 4, 1), _linear(4, 3, 2)
    g = Graph(
        inputs=(TensorSpec("x", (6,)),),
        nodes=(Node("a", lin1, ("x",)), Node("n", O.IntegerLIF(d=4, norm=4.0), ("a",)), Node("b", lin2, ("n",))),
        outputs=("b",),
    )
    for allow in (False, True):
        assert _fingerprint(FuseLinearChains(allow_growth=allow).apply(g)) == _fingerprint(g)
    for neuron in (O.BinaryLIF(beta=0.5), O.DynamicIntegerLIF(d_init=2, gate_w=1.0, gate_b=0.0)):
        g2 = g.replace_nodes([g.nodes[0], dataclasses.replace(g.nodes[1], op=neuron), g.nodes[2]])
        assert _fingerprint(FuseLinearChains(allow_growth=True).apply(g2)) == _fingerprint(g2)


def test_fuse_skips_layer_with_two_readers_or_output():
    lin1, lin2 = _linear(6, 4, 1), _linear(4, 4, 2)
    g = Graph(
        inputs=(TensorSpec("x", (6,)),),
        nodes=(Node("a", lin1, ("x",)), Node("b", lin2, ("a",)), Node("s", O.Add(), ("a", "b"))),
        outputs=("s",),
    )
    assert _fingerprint(FuseLinearChains(allow_growth=True).apply(g)) == _fingerprint(g)
    g = Graph(inputs=(TensorSpec("x", (6,)),), nodes=(Node("a", lin1, ("x",)), Node("b", lin2, ("a",))),
              outputs=("a", "b"))
    assert _fingerprint(FuseLinearChains(allow_growth=True).apply(g)) == _fingerprint(g)


def test_fuse_does_not_mix_conv_kinds_or_pool():
    assert fuse_pair(_conv1d(2, 2, 1, 1), _conv2d(2, 2, 1, 2)) is None
    assert fuse_pair(_conv2d(2, 2, 3, 1), _conv2d(2, 2, 3, 2)) is None  # k x k then k x k
    assert fuse_pair(O.AvgPool2d(kernel=(2, 2), stride=(2, 2)), _conv2d(2, 2, 1, 2)) is None


def test_sdt_pipeline_keeps_neuron_boundaries():
    g = _sdt_graph()
    out = default_pipeline().apply(g)
    assert out.meta_dict()["passes"] == ("fold-batchnorm", "fuse-linear-chains")
    assert len(out.neurons()) == len(g.neurons())
    # in the SDT model every linear layer is followed by a neuron or a residual add: nothing to fuse
    assert len(out.nodes) == len(FoldBatchNorm().apply(g).nodes)


# ---------------------------------------------------------------------------------------------
# ExpandSpikes
# ---------------------------------------------------------------------------------------------


def _expand_graph() -> Graph:
    """x -> conv0 -> n1(norm 3) -> conv1 -> n2(norm 4) -> reshape -> fc -> out
    plus a residual Add(conv1, n2) read by n3, and a neuron -> neuron edge."""
    return Graph(
        inputs=(TensorSpec("x", (2, 4, 4)),),
        nodes=(
            Node("conv0", _conv2d(2, 3, 3, 1, padding=(1, 1)), ("x",)),
            Node("n1", O.IntegerLIF(d=3, norm=3.0), ("conv0",)),
            Node("conv1", _conv2d(3, 3, 1, 2), ("n1",)),
            Node("n2", O.IntegerLIF(d=4, norm=4.0, leak=0.5), ("conv1",)),
            Node("res", O.Add(), ("conv1", "n2")),
            Node("n3", O.IntegerLIF(d=2, norm=2.0), ("res",)),
            Node("n4", O.BinaryLIF(beta=0.5), ("n3",)),
            Node("flat", O.Reshape(shape=(48,)), ("n2",)),
            Node("fc", _linear(48, 5, 3), ("flat",)),
            Node("n4flat", O.Reshape(shape=(48,)), ("n4",)),
            Node("fc2", _linear(48, 2, 4), ("n4flat",)),
            Node("cat", O.Concat(axis=0), ("fc", "fc2")),
        ),
        outputs=("cat",),
    )


@pytest.mark.parametrize("encoding", ["binary", "graded"])
def test_expand_spikes_sets_encoding_and_folds_norm(encoding):
    g = _expand_graph()
    low = ExpandSpikes(encoding).apply(g)
    assert low.meta_dict()["encoding"] == encoding
    assert [n.name for n in low.neurons()] == [n.name for n in g.neurons()]
    for n in low.neurons():
        assert n.op.encoding == encoding
        old = g.node(n.name).op
        assert dataclasses.replace(n.op, encoding=None).__dict__ == old.__dict__  # nothing else changes
    # first synapse after n1 (norm 3): W' = W / 3, bias unchanged
    np.testing.assert_array_equal(low.node("conv1").op.weight, g.node("conv1").op.weight * (1.0 / 3.0))
    np.testing.assert_array_equal(low.node("conv1").op.bias, g.node("conv1").op.bias)
    # the factor of n2 passes through the reshape into fc
    np.testing.assert_array_equal(low.node("fc").op.weight, g.node("fc").op.weight * 0.25)
    np.testing.assert_array_equal(low.node("fc").op.bias, g.node("fc").op.bias)
    # BinaryLIF has norm 1: fc2 unchanged; the input layer is untouched
    np.testing.assert_array_equal(low.node("fc2").op.weight, g.node("fc2").op.weight)
    np.testing.assert_array_equal(low.node("conv0").op.weight, g.node("conv0").op.weight)
    # residual Add fed by a neuron: a Scale(1/norm) on that edge only
    res = low.node("res")
    assert res.inputs[0] == "conv1"
    scale = low.node(res.inputs[1])
    assert isinstance(scale.op, O.Scale) and scale.op.factor == 0.25 and scale.inputs == ("n2",)
    # neuron -> neuron edge: the receiving neuron sees the real value q / norm
    n4_in = low.node(low.node("n4").inputs[0])
    assert isinstance(n4_in.op, O.Scale) and n4_in.op.factor == 0.5 and n4_in.inputs == ("n3",)
    assert low.outputs == ("cat",)
    # and the lowered graph reproduces the integer graph
    x = _x(g, T=3, B=2, seed=1, scale=3.0)
    ref, got = execute(g, x, "integer"), execute(low, x, encoding)
    for n in g.neurons():
        assert ref.records[n.name].q.sum() > 0, n.name
        assert torch.equal(got.records[n.name].q, ref.records[n.name].q), n.name
    _assert_close(got.outputs["cat"], ref.outputs["cat"], 1e-12)


def test_expand_spikes_one_scale_per_value():
    """A neuron read by two non-synaptic consumers gets a single Scale node."""
    g = Graph(
        inputs=(TensorSpec("x", (3,)),),
        nodes=(
            Node("n", O.IntegerLIF(d=4, norm=4.0), ("x",)),
            Node("a", O.Add(), ("n", "x")),
            Node("b", O.Add(), ("x", "n")),
        ),
        outputs=("a", "b"),
    )
    low = ExpandSpikes("binary").apply(g)
    scales = [n for n in low.nodes if isinstance(n.op, O.Scale)]
    assert len(scales) == 1 and scales[0].inputs == ("n",)
    assert low.node("a").inputs == (scales[0].name, "x") and low.node("b").inputs == ("x", scales[0].name)


def test_expand_spikes_attention_scale():
    g = Graph(
        inputs=(TensorSpec("x", (4, 5)),),
        nodes=(
            Node("q", O.IntegerLIF(d=4, norm=4.0), ("x",)),
            Node("k", O.IntegerLIF(d=2, norm=2.0), ("x",)),
            Node("v", O.IntegerLIF(d=8, norm=8.0), ("x",)),
            Node("attn", O.SpikeLinearAttention(num_heads=2, scale=0.5), ("q", "k", "v")),
        ),
        outputs=("attn",),
    )
    low = ExpandSpikes("graded").apply(g)
    assert low.node("attn").op.scale == 0.5 / 64
    assert low.node("attn").inputs == ("q", "k", "v")
    x = _x(g, T=2, B=2, scale=4.0)
    _assert_close(execute(low, x, "graded").outputs["attn"], execute(g, x).outputs["attn"], 1e-12)


def test_expand_spikes_rejects_bad_encoding_and_double_lowering():
    with pytest.raises(SpikedeployError, match="unknown spike encoding"):
        ExpandSpikes("unary")
    low = ExpandSpikes("binary").apply(_expand_graph())
    with pytest.raises(SpikedeployError, match="already lowered"):
        ExpandSpikes("graded").apply(low)
    with pytest.raises(SpikedeployError, match="already lowered"):
        execute(low, _x(low), "graded")


def test_lowered_run_keeps_output_names():
    g = Graph(inputs=(TensorSpec("x", (3,)),), nodes=(Node("n", O.IntegerLIF(d=4, norm=4.0), ("x",)),),
              outputs=("n",))
    x = _x(g, scale=3.0)
    ref, got = execute(g, x, "integer"), execute(g, x, "binary")
    assert set(got.outputs) == set(ref.outputs) == {"n"}


# ---------------------------------------------------------------------------------------------
# passes never mutate their input; the pass manager validates
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make_pass",
    [FoldBatchNorm, FuseLinearChains, lambda: FuseLinearChains(allow_growth=True),
     lambda: ExpandSpikes("binary"), lambda: ExpandSpikes("graded"), default_pipeline,
     lambda: default_pipeline("binary")],
)
@pytest.mark.parametrize("which", ["sdt", "hand"])
def test_passes_do_not_mutate_input(make_pass, which):
    if which == "sdt":
        g = _sdt_graph()
    else:
        g = Graph(
            inputs=(TensorSpec("x", (4, 6, 6)),),
            nodes=(
                Node("k3", _conv2d(4, 4, 3, 1, padding=(1, 1)), ("x",)),
                Node("pw", _conv2d(4, 4, 1, 2), ("k3",)),
                Node("bn", _bn(4, 3), ("pw",)),
                Node("n", O.IntegerLIF(d=4, norm=4.0), ("bn",)),
                Node("c", _conv2d(4, 4, 1, 4), ("n",)),
                Node("add", O.Add(), ("c", "n")),
            ),
            outputs=("add",),
        )
    before = _fingerprint(g)
    out = make_pass().apply(g)
    assert _fingerprint(g) == before
    if not (which == "sdt" and isinstance(make_pass(), FuseLinearChains)):
        assert _fingerprint(out) != before  # the pass had work to do (SDT has no neuron-free chain)
    validate(out)


def test_pass_manager_validates_between_passes():
    class Broken(FoldBatchNorm):
        name = "broken"

        def run(self, graph):
            return graph.replace_nodes(graph.nodes, outputs=("ghost",))

    from spikedeploy.errors import GraphValidationError

    g = FUSE_CASES["linear-linear"]()
    with pytest.raises(GraphValidationError, match="ghost"):
        PassManager([Broken(), FuseLinearChains()]).apply(g)
    with pytest.raises(GraphValidationError, match="ghost"):
        Broken().apply(g)
    out = PassManager([FoldBatchNorm(), ExpandSpikes("graded")]).apply(g)
    assert out.meta_dict()["passes"] == ("fold-batchnorm", "expand-spikes[graded]")
