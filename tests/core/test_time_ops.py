"""Time-axis ops (RepeatTime, SelectStep, StackSteps) and the template gate ops (GateLinear,
GateSoftmax [host], TemplateGate): shape/step inference, reference rules against a direct torch
computation, capture rules, lowering, serialization, ONNX, NIR refusal."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from spikedeploy.capture import capture
from spikedeploy.errors import CaptureError, GraphValidationError, SpikedeployError, UnsupportedOpError
from spikedeploy.ir import ops as O
from spikedeploy.ir.graph import Graph, Node, TensorSpec, validate, value_steps
from spikedeploy.ir.serialize import graph_from_json, graph_to_json
from spikedeploy.passes import ExpandSpikes
from spikedeploy.reference import execute, run


def _p(a):
    return O.as_param(a)


def _gate_graph(T=3, C=4, H=3, W=2, seed=0):
    """x [T, B, C, H, W] -> neuron -> gate MLP (GateLinear, neuron, GateLinear) -> host softmax ->
    TemplateGate -> neuron; plus a repeated one-step branch and a per-step conv stack."""
    r = np.random.default_rng(seed)
    n = H * W
    nodes = (
        Node("s", O.IntegerLIF(d=4, norm=4.0, leak=(0.5, 0.25), reset_norm=4.0, label="NI-LIF"), ("x",)),
        Node("tok", O.Reshape(shape=(C, n)), ("s",)),
        Node("g0", O.GateLinear(weight=_p(r.normal(size=(n // 2, n)) * 2), bias=_p(r.normal(size=n // 2) * 0.3)), ("tok",)),
        Node("gs", O.IntegerLIF(d=4, norm=4.0, leak=(0.7, 0.4), reset_norm=4.0, label="NI-LIF"), ("g0",)),
        Node("g1", O.GateLinear(weight=_p(r.normal(size=(1, n // 2)) * 2), bias=_p(r.normal(size=1) * 0.1)), ("gs",)),
        Node("logits", O.Reshape(shape=(C,)), ("g1",)),
        Node("w", O.GateSoftmax(), ("logits",)),
        Node("gate", O.TemplateGate(), ("s", "w")),
        Node("out", O.IntegerLIF(d=4, norm=4.0), ("gate",)),
        # per-template convs on SelectStep, stacked back, plus a repeated one-step value
        *[Node(f"sel{t}", O.SelectStep(step=t), ("s",)) for t in range(T)],
        *[Node(f"conv{t}", O.Conv2d(weight=_p(r.normal(size=(C, C, 3, 3)) * 0.8), bias=_p(r.normal(size=C) * 0.2),
                                    padding=(1, 1)), (f"sel{t}",)) for t in range(T)],
        Node("stack", O.StackSteps(), tuple(f"conv{t}" for t in range(T))),
        Node("rep", O.RepeatTime(times=T), ("out",)),
        Node("sum", O.Add(), ("stack", "rep")),
        Node("n2", O.IntegerLIF(d=4, norm=4.0, leak=(0.5, 0.5), reset_norm=4.0), ("sum",)),
    )
    return Graph(inputs=(TensorSpec("x", (C, H, W), T),), nodes=nodes, outputs=("n2", "out"),
                 meta=(("capture_T", T),))


def _x(T=3, B=2, C=4, H=3, W=2, seed=1):
    return torch.randn((T, B, C, H, W), generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 2 + 1


# ---------------------------------------------------------------------------------------------
# steps and shapes
# ---------------------------------------------------------------------------------------------


def test_value_steps_follow_the_time_ops():
    g = _gate_graph()
    steps = value_steps(g)
    assert steps["x"] == steps["s"] == steps["w"] == steps["stack"] == steps["rep"] == steps["n2"] == 3
    assert steps["gate"] == steps["out"] == steps["sel0"] == steps["conv2"] == 1
    shapes = validate(g)
    assert shapes["gate"] == (4, 3, 2) and shapes["g0"] == (4, 3) and shapes["w"] == (4,)


def test_step_mismatches_are_validation_errors():
    base = (Node("sel", O.SelectStep(step=0), ("x",)),)
    with pytest.raises(GraphValidationError, match="SelectStep.*fixed number of macro-steps"):
        validate(Graph((TensorSpec("x", (2,)),), base, ("sel",)))  # free T: not allowed
    with pytest.raises(GraphValidationError, match=r"SelectStep\(3\) of a value with 3"):
        validate(Graph((TensorSpec("x", (2,), 3),), (Node("sel", O.SelectStep(step=3), ("x",)),), ("sel",)))
    with pytest.raises(GraphValidationError, match="different numbers of macro-steps"):
        validate(Graph((TensorSpec("x", (2,), 3),), base + (Node("a", O.Add(), ("x", "sel")),), ("a",)))
    with pytest.raises(GraphValidationError, match="RepeatTime repeats a one-step value"):
        validate(Graph((TensorSpec("x", (2,), 3),), (Node("r", O.RepeatTime(times=2), ("x",)),), ("r",)))
    with pytest.raises(GraphValidationError, match="memory has 3 steps but q has 2"):
        mem = np.ones((3, 1, 2, 2))
        validate(Graph((TensorSpec("x", (2, 5), 2),), (Node("m", O.MemoryRead(memory=mem, num_heads=1), ("x",)),), ("m",)))
    with pytest.raises(ValueError, match="integer >= 1"):
        O.RepeatTime(times=0)
    with pytest.raises(ValueError, match="integer >= 0"):
        O.SelectStep(step=-1)
    with pytest.raises(GraphValidationError, match="TemplateGate needs x"):
        validate(Graph((TensorSpec("x", (4, 2), 3),), (Node("g", O.TemplateGate(), ("x", "x")),), ("g",)))


def test_fixed_input_steps_are_checked_at_run_time():
    g = _gate_graph()
    with pytest.raises(SpikedeployError, match="exactly T=3"):
        execute(g, _x(T=2))


# ---------------------------------------------------------------------------------------------
# reference rules against direct torch computations
# ---------------------------------------------------------------------------------------------


def _run_one(op, inputs, shapes, steps):
    names = [f"i{k}" for k in range(len(inputs))]
    g = Graph(tuple(TensorSpec(n, tuple(s), st) for n, s, st in zip(names, shapes, steps)),
              (Node("y", op, tuple(names)),), ("y",))
    return run(g, dict(zip(names, inputs))).outputs["y"]


def test_repeat_select_stack_rules():
    x1 = torch.randn(1, 2, 3, 4, dtype=torch.float64)
    assert torch.equal(_run_one(O.RepeatTime(times=3), [x1], [(3, 4)], [1]), x1.repeat(3, 1, 1, 1))
    x3 = torch.randn(3, 2, 3, 4, dtype=torch.float64)
    assert torch.equal(_run_one(O.SelectStep(step=2), [x3], [(3, 4)], [3]), x3[2:3])
    a, b = torch.randn(1, 2, 5, dtype=torch.float64), torch.randn(1, 2, 5, dtype=torch.float64)
    assert torch.equal(_run_one(O.StackSteps(), [a, b], [(5,), (5,)], [1, 1]), torch.stack([a[0], b[0]]))


def test_gate_linear_is_the_official_conv1d_and_a_linear():
    r = np.random.default_rng(3)
    w, b = r.normal(size=(6, 12)), r.normal(size=6)
    x = torch.randn(3, 2, 5, 12)
    y = _run_one(O.GateLinear(weight=_p(w), bias=_p(b)), [x], [(5, 12)], [3])
    # the official gate: Conv1d(N, N/2, 1) on [B*C, N, T], evaluated in float64 here
    conv = F.conv1d(x.double().permute(1, 2, 3, 0).reshape(10, 12, 3), torch.from_numpy(w)[:, :, None], torch.from_numpy(b))
    assert torch.equal(y, conv.reshape(2, 5, 6, 3).permute(3, 0, 1, 2))
    torch.testing.assert_close(y, F.linear(x.double(), torch.from_numpy(w), torch.from_numpy(b)), rtol=1e-12, atol=1e-12)
    # float32: bit-identical to the module the model uses
    m = nn.Conv1d(12, 6, 1)
    g = Graph((TensorSpec("x", (5, 12), 3),),
              (Node("y", O.GateLinear(weight=_p(m.weight.detach()[:, :, 0].double().numpy()), bias=_p(m.bias.detach().double().numpy())), ("x",)),),
              ("y",))
    y32 = run(g, x, dtype=torch.float32).outputs["y"]
    with torch.no_grad():
        ref = m(x.permute(1, 2, 3, 0).reshape(10, 12, 3)).reshape(2, 5, 6, 3).permute(3, 0, 1, 2)
    assert torch.equal(y32, ref)


def test_gate_softmax_and_template_gate_rules():
    logits = torch.randn(3, 2, 5, dtype=torch.float64)
    w = _run_one(O.GateSoftmax(), [logits], [(5,)], [3])
    assert torch.equal(w, torch.softmax(logits.permute(1, 2, 0), dim=-1).permute(2, 0, 1))
    torch.testing.assert_close(w.sum(0), torch.ones(2, 5, dtype=torch.float64))
    x = torch.randint(0, 5, (3, 2, 5, 3, 2)).double() / 4
    y = _run_one(O.TemplateGate(scale=0.5), [x, w], [(5, 3, 2), (5,)], [3, 3])
    direct = 0.5 * sum(w[t][..., None, None] * x[t] for t in range(3))
    assert y.shape == (1, 2, 5, 3, 2)
    torch.testing.assert_close(y[0], direct, rtol=1e-14, atol=1e-15)


# ---------------------------------------------------------------------------------------------
# lowering, serialization, backends
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["binary", "graded"])
def test_spike_modes_reproduce_integer_through_time_ops(mode):
    g, x = _gate_graph(), _x()
    ri = execute(g, x, "integer")
    rs = execute(g, x, mode)
    for n in g.neurons():
        q = ri.neuron_q(n.name)
        assert q.sum() > 0, f"{n.name} does not fire"
        assert torch.equal(rs.neuron_q(n.name), q), n.name
    lowered = ExpandSpikes(mode).apply(g)
    ops = {n.name: n.op for n in lowered.nodes}
    assert ops["gate"].scale == 0.25  # x's 1/norm absorbed; the host weights stay real
    nodes = {n.name: n for n in lowered.nodes}
    # spikes (and their pending 1/norm) pass through the routing: no Scale before them
    assert nodes["rep"].inputs == ("out",) and nodes["sel0"].inputs == ("s",) and nodes["tok"].inputs == ("s",)
    assert nodes["gate"].inputs[0] == "s"
    # routing ops carry spikes
    rec = run(lowered, x).records
    assert rec["rep"].spikes is not None and rec["sel1"].spikes is not None
    assert rec["w"].spikes is None  # host softmax: real


def test_serialization_round_trip_keeps_steps():
    g = _gate_graph()
    desc, arrays = graph_to_json(g)
    g2 = graph_from_json(desc, arrays)
    assert g2.inputs[0].steps == 3
    assert [n.op.kind for n in g2.nodes] == [n.op.kind for n in g.nodes]
    x = _x()
    for o in g.outputs:
        assert torch.equal(execute(g2, x).outputs[o], execute(g, x).outputs[o])


def test_onnx_exports_time_ops(tmp_path):
    from spikedeploy.equivalence import OUTPUT_ATOL, OUTPUT_RTOL
    from spikedeploy.exporters import onnx as E
    from spikedeploy.runtimes import onnx as R

    g, x = _gate_graph(), _x()
    E.export(g, tmp_path / "g.onnx")
    got = R.run(E.load(tmp_path / "g.onnx"), x)
    ref = execute(g, x)
    for n in g.neurons():
        assert torch.equal(got.spike_counts[n.name], ref.neuron_q(n.name)), n.name
    for o in g.outputs:
        torch.testing.assert_close(got.outputs[o], ref.outputs[o], rtol=OUTPUT_RTOL[torch.float64],
                                   atol=OUTPUT_ATOL[torch.float64])
    assert got.outputs["out"].shape[0] == 1 and got.outputs["n2"].shape[0] == 3


def test_nir_refuses_time_ops_with_the_reason(tmp_path):
    from spikedeploy.exporters import nir as N

    with pytest.raises(UnsupportedOpError, match="GateLinear at node .g0.*cannot be expressed") as info:
        N.export(_gate_graph(), tmp_path / "g.nir", encoding="integer")
    assert info.value.exit_code == 2


def test_audit_counts_time_ops():
    from spikedeploy.audit import SOFTMAX_MACS_PER_ELEMENT, audit_graph

    g, x = _gate_graph(), _x()
    rep = audit_graph(g, x, encoding="binary")
    assert not rep.uncounted
    soft = rep.layer("w")
    assert soft.host and soft.macs == SOFTMAX_MACS_PER_ELEMENT * 4 * 3  # elements x 3 steps, per frame
    gate = rep.layer("gate")
    q = execute(g, x, "binary").neuron_q("s")
    assert not gate.host and gate.measured_synops == float(q.sum()) / 2  # fan-out 1 per unit spike
    assert {l.name for l in rep.layers}.isdisjoint({"rep", "sel0", "stack"})  # routing is free
    conv = rep.layer("conv1")  # fed by SelectStep(1) of s: one step
    assert len(conv.rates_per_step) == 1


# ---------------------------------------------------------------------------------------------
# capture rules
# ---------------------------------------------------------------------------------------------


class _PerStep(nn.Module):
    """A small stand-in for SpikeTrack's retriever: repeat a one-step query over T steps, per-step
    convs, a broadcast residual add, a time-varying constant."""

    def __init__(self, T=3):
        super().__init__()
        from spikedeploy.models.neurons import NILIF

        self.T = T
        self.n1 = NILIF(d=4, time_steps=4)
        self.convs = nn.ModuleList([nn.Conv2d(2, 2, 3, padding=1) for _ in range(T)])
        self.n2 = NILIF(d=4, time_steps=4)
        self.register_buffer("pos", torch.randn(T, 1, 2, 4, 4))

    def forward(self, x):  # x [1, B, 2, 4, 4]
        q = self.n1(x.repeat(self.T, 1, 1, 1, 1))
        q = q + self.pos
        y = torch.stack([self.convs[t](q[t]) for t in range(self.T)], dim=0)
        return self.n2(x + y)


def test_capture_rules_for_time_ops_are_bit_exact():
    torch.manual_seed(0)
    m = _PerStep().eval()
    x = torch.randn(1, 2, 2, 4, 4) * 3
    g = capture(m, x)
    kinds = [n.op.kind for n in g.nodes]
    assert kinds.count("RepeatTime") == 2 and kinds.count("SelectStep") == 6 and kinds.count("StackSteps") == 2
    assert g.inputs[0].steps == 1
    with torch.no_grad():
        assert torch.equal(run(g, x, dtype=torch.float32).outputs[g.outputs[0]], m(x))


def test_unsupported_time_axis_use_is_refused():
    class Tile(nn.Module):
        def forward(self, x):
            return x.repeat(2, 1, 1)  # tiling a multi-step value

    with pytest.raises(CaptureError, match="acts on the time axis"):
        capture(Tile(), torch.randn(3, 2, 4))
