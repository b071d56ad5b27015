"""NIR runtime, the standard-node semantics of the exported neurons, and snntorch interop.

Time-step mapping used throughout: one NIR time step (dt = 1e-4 s, snntorch's convention) is one
IR macro-step; a NIR consumer is fed x[t] at step t and its outputs at step t are compared with the
reference's outputs at macro-step t.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

nir = pytest.importorskip("nir")

from spikedeploy.exporters import nir as NX
from spikedeploy.ir import ops as O
from spikedeploy.ir.graph import Graph, Node, TensorSpec
from spikedeploy.reference import run
from spikedeploy.runtimes import nir as NR
from spikedeploy.targets import TargetRun

# ---------------------------------------------------------------------------------------------
# an independent interpreter of the *standard* NIR nodes (NIR's equations, forward Euler with
# step dt; edges into a node are summed; an edge from a node not yet computed in this step -
# a recurrent edge - delivers that node's previous-step output, zero at t = 0). It ignores the
# spikedeploy metadata, so it checks that the standard nodes alone mean what the IR means.
# ---------------------------------------------------------------------------------------------


def _order(g):
    order, seen = [], set()

    def visit(n):
        if n in seen:
            return
        seen.add(n)
        for a, b in g.edges:
            if a == n:
                visit(b)
        order.append(n)

    for name, node in g.nodes.items():
        if isinstance(node, nir.Input):
            visit(name)
    return order[::-1]


class NirSim:
    def __init__(self, g, dt=NX.DT):
        self.g, self.dt, self.order = g, dt, _order(g)
        assert set(self.order) == set(g.nodes), "unreachable nodes"
        self.prev = {}
        self.state = {}
        self.subs = {k: NirSim(v, dt) for k, v in g.nodes.items() if isinstance(v, nir.NIRGraph)}

    def step(self, inputs):
        """inputs: {Input node name: [B, *s]} -> {Output node name: [B, *s]}"""
        cur, outs = {}, {}
        for name in self.order:
            node = self.g.nodes[name]
            srcs = [a for a, b in self.g.edges if b == name]
            x = sum((cur[a] if a in cur else self.prev.get(a, 0.0)) for a in srcs) if srcs else None
            cur[name] = y = self._apply(name, node, x, inputs)
            if isinstance(node, nir.Output):
                outs[name] = y
        self.prev = cur
        return outs

    def _apply(self, name, n, x, inputs):
        t = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.float64)
        dt = self.dt
        if isinstance(n, nir.Input):
            return inputs[name]
        if isinstance(n, nir.Output):
            return x
        if isinstance(n, nir.NIRGraph):
            (i,) = [k for k, v in n.nodes.items() if isinstance(v, nir.Input)]
            (o,) = self.subs[name].step({i: x}).values()
            return o
        if isinstance(n, nir.Conv2d):
            return F.conv2d(x, t(n.weight), t(n.bias), tuple(n.stride), tuple(n.padding), tuple(n.dilation), int(n.groups))
        if isinstance(n, nir.Conv1d):
            return F.conv1d(x, t(n.weight), t(n.bias), int(n.stride), int(n.padding), int(n.dilation), int(n.groups))
        if isinstance(n, nir.Affine):
            return x @ t(n.weight).T + t(n.bias)
        if isinstance(n, nir.Linear):
            return x @ t(n.weight).T
        if isinstance(n, nir.Scale):
            return x * t(n.scale)
        if isinstance(n, nir.AvgPool2d):
            return F.avg_pool2d(x, tuple(n.kernel_size), tuple(n.stride), tuple(n.padding))
        if isinstance(n, nir.Flatten):  # NIR's start/end dims exclude the batch axis (negative: from the end)
            a, b = int(n.start_dim), int(n.end_dim)
            return torch.flatten(x, a + 1 if a >= 0 else a, b + 1 if b >= 0 else b)
        if isinstance(n, nir.Threshold):
            return (x > t(n.threshold)).to(torch.float64)
        v = self.state.get(name, 0.0)
        if isinstance(n, nir.I):
            v = v + dt * t(n.r) * x
        elif isinstance(n, (nir.LI, nir.LIF)):
            v = v + dt / t(n.tau) * (t(n.v_leak) - v + t(n.r) * x)
        else:
            raise NotImplementedError(type(n).__name__)
        if isinstance(n, nir.LIF):
            z = (v > t(n.v_threshold)).to(torch.float64)
            self.state[name] = torch.where(z > 0, t(n.v_reset), v)
            return z
        self.state[name] = v
        return v


def simulate(g, x):
    """Run NIR graph ``g`` on x [T, B, *s] (one input, one output); returns [T, B, *s_out]."""
    sim = NirSim(g)
    (i,) = [k for k, v in g.nodes.items() if isinstance(v, nir.Input)]
    ys = []
    for t in range(x.shape[0]):
        (y,) = sim.step({i: x[t].to(torch.float64)}).values()
        ys.append(y)
    return torch.stack(ys)


def small_net(neuron1: O.Op, neuron2: O.Op, seed=0, dyadic=True) -> Graph:
    """Conv2d -> neuron -> AvgPool2d -> Flatten -> Linear -> neuron, input [2, 8, 8]."""
    rng = np.random.default_rng(seed)
    if dyadic:  # exactly representable in float32, sums of spikes exact: bit-exact across tools
        w1, b1 = rng.integers(-4, 5, (4, 2, 3, 3)) / 8, rng.integers(-2, 3, 4) / 8
        w2, b2 = rng.integers(-4, 5, (5, 64)) / 8, rng.integers(-2, 3, 5) / 8
    else:
        w1, b1 = rng.normal(0, 0.5, (4, 2, 3, 3)), rng.normal(0, 0.2, 4)
        w2, b2 = rng.normal(0, 0.4, (5, 64)), rng.normal(0, 0.2, 5)
    nodes = (
        Node("conv", O.Conv2d(weight=O.as_param(w1), bias=O.as_param(b1), padding=(1, 1)), ("x",)),
        Node("lif1", neuron1, ("conv",)),
        Node("pool", O.AvgPool2d(kernel=(2, 2), stride=(2, 2)), ("lif1",)),
        Node("flat", O.Reshape(shape=(64,)), ("pool",)),
        Node("fc", O.Linear(weight=O.as_param(w2), bias=O.as_param(b2)), ("flat",)),
        Node("lif2", neuron2, ("fc",)),
    )
    return Graph(inputs=(TensorSpec("x", (2, 8, 8)),), nodes=nodes, outputs=("lif2",))


def spike_train(T=6, B=3, p=0.5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(T, B, 2, 8, 8, generator=g) < p).to(torch.float64)


# ---------------------------------------------------------------------------------------------
# runtime
# ---------------------------------------------------------------------------------------------


def test_runtime_run_returns_target_run(tmp_path):
    g = small_net(O.BinaryLIF(beta=0.5, threshold=0.5), O.IntegerLIF(d=4, norm=4.0, leak=1.0))
    path = NX.export(g, tmp_path / "n.nir", encoding="integer")
    x = spike_train()
    r = NR.run(path, x)  # a path works too
    assert isinstance(r, TargetRun) and r.target == "nir" and r.encoding == "integer"
    ref = run(g, x)
    assert set(r.spike_counts) == {"lif1", "lif2"}
    for name in ("lif1", "lif2"):
        assert torch.equal(r.spike_counts[name], ref.records[name].q)
        assert r.spike_counts[name].sum() > 0
    assert torch.equal(r.outputs["lif2"], ref.outputs["lif2"])
    assert r.info["timesteps"] == 6


# ---------------------------------------------------------------------------------------------
# the standard NIR nodes mean what the IR means (composites included)
# ---------------------------------------------------------------------------------------------

NEURONS = {
    "binary_lif_stateless": O.BinaryLIF(beta=0.0, threshold=0.5),
    "binary_lif_soft_reset": O.BinaryLIF(beta=0.75, threshold=0.5),
    "binary_if_soft_reset": O.BinaryLIF(beta=1.0, threshold=1.0),
    "multispike": O.IntegerLIF(d=4, norm=4.0),
    "leaky_ilif": O.IntegerLIF(d=4, norm=1.0, leak=0.25),
    "nilif_normalized_reset": O.IntegerLIF(d=4, norm=4.0, leak=(0.5, 0.5, 0.5, 0.5, 0.5), reset_norm=4.0),
    "integer_if": O.IntegerLIF(d=8, norm=8.0, leak=1.0),
}


@pytest.mark.parametrize("kind", sorted(NEURONS))
@pytest.mark.parametrize("encoding", ["integer", "graded"])
def test_standard_nir_semantics_match_reference(tmp_path, kind, encoding):
    from spikedeploy.passes import ExpandSpikes

    op = NEURONS[kind]
    g = small_net(op, op, seed=1, dyadic=False)
    if encoding != "integer":
        g = ExpandSpikes(encoding).apply(g)
    path = NX.export(g, tmp_path / "n.nir", encoding=encoding)
    ng = nir.read(path)  # standard nodes only: NIR's own type checking passes
    assert not ng.metadata.get("extension_nodes")
    x = torch.randn(6, 3, 2, 8, 8, generator=torch.Generator().manual_seed(3)) * 1.5
    ref = run(g, x)
    got = simulate(ng, x)
    # the composites are exact except for a membrane exactly on a rounding boundary k + 0.5
    # (probability zero on these random inputs); emitted values q/norm must match bit for bit
    assert torch.equal(got, ref.outputs[g.outputs[0]]), kind
    assert ref.records["lif1"].q.sum() > 0 and ref.records["lif2"].q.sum() > 0


# ---------------------------------------------------------------------------------------------
# snntorch interop
# ---------------------------------------------------------------------------------------------


def _snntorch_import():
    pytest.importorskip("nirtorch", reason="snntorch.import_nir needs nirtorch")
    snn_import = pytest.importorskip("snntorch.import_nir")
    return snn_import.import_from_nir


def run_snntorch(net, x):
    """Batched, one call per macro-step. snntorch 1.0.0 maps nir.Flatten(start_dim, end_dim) to
    torch.nn.Flatten(start_dim, end_dim) unchanged although NIR's dims exclude the batch axis; the
    portable profile writes the dims counted from the end (-3, -1), which mean the same axes with
    or without a batch axis, so a batched input is not folded."""
    from snntorch import utils as snn_utils

    snn_utils.reset(net)
    state, ys = None, []
    for t in range(x.shape[0]):
        y, state = net(x[t].to(torch.float32), state)
        ys.append(y)
    return torch.stack(ys).to(torch.float64)


@pytest.mark.parametrize("thresholds", [(0.5, 0.25), (0.25, 1.0)])
def test_snntorch_runs_the_exported_file_exactly(tmp_path, thresholds):
    import_from_nir = _snntorch_import()
    g = small_net(O.BinaryLIF(beta=0.0, threshold=thresholds[0]), O.BinaryLIF(beta=0.0, threshold=thresholds[1]))
    path = NX.export(g, tmp_path / "snn.nir", encoding="integer")
    assert (nir.read(path).nodes["flat"].start_dim, nir.read(path).nodes["flat"].end_dim) == (-3, -1)
    net = import_from_nir(nir.read(path))
    x = spike_train(T=8, B=3)
    ref = run(g, x)
    got = run_snntorch(net, x)
    assert ref.records["lif1"].q.sum() > 0 and ref.outputs["lif2"].sum() > 0
    assert got.shape == ref.outputs["lif2"].shape
    assert torch.equal(got, ref.outputs["lif2"])


def test_snntorch_refuses_soft_reset_composite(tmp_path):
    """NIR's LIF/IF reset to v_reset (snntorch imports nir.LIF with reset_mechanism="zero"), so a
    soft-reset LIF with beta != 0 is exported as a composite that snntorch cannot map: it must
    fail loudly rather than run a different neuron."""
    import_from_nir = _snntorch_import()
    g = small_net(O.BinaryLIF(beta=0.5, threshold=0.5), O.BinaryLIF(beta=0.0, threshold=0.5))
    path = NX.export(g, tmp_path / "soft.nir", encoding="integer")
    with pytest.raises(ValueError, match="Unknown node type"):
        import_from_nir(nir.read(path))
