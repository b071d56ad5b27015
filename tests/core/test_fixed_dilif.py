"""DI-LIF in Loihi 2 fixed point (issue 16 step 3): the op ``FixedDynamicIntegerLIF``, its semantics
(``neurons.fixed_dynamic_integer_lif``: D a step function of the integer input sum, compared with
integer thresholds made once at quantization), the reference rule, the QuantizeFixedPoint rule,
state across calls, serialization, and the threshold table against a float64 brute force of the
float DI-LIF's gate."""

from __future__ import annotations

import decimal
import math

import numpy as np
import pytest
import torch

from spikedeploy import neurons as N
from spikedeploy.ir import Graph, Node, TensorSpec, ops as O
from spikedeploy.ir.serialize import graph_from_json, graph_to_json
from spikedeploy.passes.quantize import dilif_calibration, quantize_graph
from spikedeploy.reference import run, stateful_neurons

#: a float gate value closer than this to a rounding boundary k - 1/2 is left out of the brute
#: force (float64 sigmoid error is ~1e-16; the integer rule decides an exact tie, the float model
#: rounds half to even: measure zero)
BOUNDARY_EPS = 1e-9


def _float_gate(s: np.ndarray, w: float, b: float, d_init: int, n: int, unit: int) -> np.ndarray:
    """The float DI-LIF's D at the integer sums ``s`` (float64): clamp(round(2 sigmoid(w mu + b) D_init))
    with mu = S / (N unit), and the distance of 2 sigmoid(...) D_init to the nearest boundary."""
    mu = s.astype(np.float64) / (n * unit)
    v = 2.0 / (1.0 + np.exp(-(w * mu + b))) * d_init
    d = np.clip(np.round(v), 1, 2 * d_init)
    k = np.clip(np.floor(v) + 0.5, 1.5, 2 * d_init - 0.5)
    return d, np.abs(v - k)


def _decimal_gate(s: int, w: float, b: float, d_init: int, n: int, unit: int) -> int:
    """The float DI-LIF's D at the integer sum ``s`` evaluated in 60 significant digits."""
    with decimal.localcontext() as ctx:
        ctx.prec = 60
        z = decimal.Decimal(w) * decimal.Decimal(s) / (decimal.Decimal(n) * decimal.Decimal(unit)) + decimal.Decimal(b)
        v = 2 * d_init / (1 + (-z).exp())
        return int(min(max(int((v + decimal.Decimal("0.5")).to_integral_value(decimal.ROUND_FLOOR)), 1), 2 * d_init))


def test_threshold_table_equals_the_float_gate_brute_force():
    rng = np.random.default_rng(16)
    checked = skipped = 0
    spans = []
    for case in range(60):
        d_init = int(rng.integers(1, 9))
        n = int(rng.choice([1, 7, 64, 4096]))
        unit = 1 << int(rng.integers(1, 16))
        w = float(rng.choice([-1, 1]) * 10 ** rng.uniform(-2, 2))
        if case % 10 == 0:
            w = 0.0
        b = float(rng.normal(0, 2))
        sign, th = O.dilif_thresholds(d_init, w, b, n, unit)
        assert sign == (w > 0) - (w < 0) and len(th) == 2 * d_init - 1
        # sums around every threshold (+-3) and spread over the range where the gate moves
        scale = (n * unit) / max(abs(w), 1e-3) * 8
        s = np.concatenate([np.rint(rng.uniform(-scale, scale, 400)),
                            *[np.arange(t - 3, t + 4) * (sign or 1) for t in th if abs(t) < 2 ** 50]])
        s = s[np.abs(s) < 2 ** 50].astype(np.int64)
        x = torch.zeros(len(s), 1, n, dtype=torch.int64)
        x[:, 0, 0] = torch.as_tensor(s)  # the sum of the layer's input is s
        d_fixed = N.fixed_dynamic_limit(x, sign=sign, thresholds=th).reshape(-1).numpy()
        d_float, dist = _float_gate(s, w, b, d_init, n, unit)
        ok = dist > BOUNDARY_EPS
        checked += int(ok.sum())
        bad = np.flatnonzero(ok & (d_fixed != d_float))
        assert bad.size == 0, (d_init, w, b, n, unit, s[bad[:5]], d_fixed[bad[:5]], d_float[bad[:5]])
        for i in np.flatnonzero(~ok):  # within 1e-9 of a boundary in float64: decide it in 60 digits
            skipped += 1
            assert d_fixed[i] == _decimal_gate(int(s[i]), w, b, d_init, n, unit), (d_init, w, b, n, unit, s[i])
        spans.append(len(np.unique(d_fixed)))
    # sums next to a threshold of a gate that moves less than 1e-9 per state unit (tiny w, large N
    # unit) land within 1e-9 of a boundary without being ties: they are checked in 60 digits
    assert checked > 25_000 and skipped < checked // 1000
    assert max(spans) == 16 and sum(v > 1 for v in spans) >= 40  # the table is exercised, not constant


def test_thresholds_of_a_constant_gate_and_of_extreme_weights():
    # w = 0: D = clamp(round(2 sigmoid(b) D_init)) whatever the input
    for b in (-3.0, -0.1, 0.0, 0.4, 5.0):
        sign, th = O.dilif_thresholds(6, 0.0, b, 10, 8)
        d = N.fixed_dynamic_limit(torch.tensor([[[-10 ** 6] * 10], [[0] * 10], [[10 ** 6] * 10]]), sign=sign,
                                  thresholds=th)
        want = min(max(round(2 * 6 / (1 + math.exp(-b))), 1), 12)
        assert sign == 0 and d.flatten().tolist() == [want] * 3
    # a tiny weight: every threshold beyond any sum (clipped to 2**53) -> D = the gate at mu = 0 side
    sign, th = O.dilif_thresholds(3, 1e-300, 0.0, 4, 4)
    assert all(abs(t) == O.THRESHOLD_LIMIT for t in th)
    op = O.FixedDynamicIntegerLIF(d_init=3, unit=4, reset=4, n_features=4, sign=sign, thresholds=np.array(th))
    assert op.d == 6 and op.window == 6 and op.norm == 3.0


def _op(**kw):
    base = dict(d_init=2, unit=8, reset=8, n_features=6, sign=1, thresholds=np.array([-5.0, 0.0, 7.0]),
                leak=1024, encoding="binary")
    base.update(kw)
    return O.FixedDynamicIntegerLIF(**base)


@pytest.mark.parametrize("kw, needle", [
    (dict(thresholds=np.array([1.0, 2.0])), "2 \\* d_init - 1 = 3 thresholds"),
    (dict(thresholds=np.array([3.0, 2.0, 4.0])), "non-decreasing"),
    (dict(thresholds=np.array([0.5, 1.0, 2.0])), "integers"),
    (dict(thresholds=np.array([0.0, 1.0, 2.0 ** 60])), "integers of magnitude"),
    (dict(sign=2), "sign must be -1, 0 or 1"),
    (dict(unit=12), "power of two"),
    (dict(leak=(1024, 1024)), "one leak"),
    (dict(d_init=0, thresholds=np.array([])), "d_init must be an integer >= 1"),
])
def test_the_op_refuses_bad_constants(kw, needle):
    with pytest.raises(ValueError, match=needle):
        _op(**kw)


def test_the_op_checks_its_feature_count():
    assert _op().infer_shape((2, 3)) == (2, 3)
    with pytest.raises(ValueError, match="sums 6 features"):
        _op().infer_shape((7,))


def _brute(x: np.ndarray, d_init, unit, reset, sign, th, leak, half_up=False):
    """The fixed DI-LIF in plain Python integers (an independent statement of the op's docstring)."""
    T, B, F = x.shape
    q = np.zeros((T, B, F), dtype=np.int64)
    ds = np.zeros((T, B), dtype=np.int64)
    hi = (1 << 23) - 1
    for b in range(B):
        v_prev = q_prev = [0] * F
        for t in range(T):
            s = int(sum(int(v) for v in x[t, b])) * sign
            d = 1 + sum(1 for k in th if s >= k)
            ds[t, b] = d
            vs, qs = [], []
            for i in range(F):
                if leak is None or t == 0:
                    v = int(x[t, b, i])
                else:
                    p = v_prev[i] - reset * q_prev[i]
                    v = (1 if p >= 0 else -1) * ((abs(p) * leak) >> 12) + int(x[t, b, i])
                v = max(-hi, min(hi, v))
                n, r = divmod(v + unit // 2, unit)
                if r == 0 and not half_up and n % 2 == 1:
                    n -= 1
                vs.append(v)
                qs.append(max(0, min(d, n)))
            q[t, b] = qs
            v_prev, q_prev = vs, qs
    return q, ds


@pytest.mark.parametrize("leak, rounding", [(None, "half_even"), (3000, "half_even"), (4096, "half_up")])
def test_semantics_equal_a_plain_integer_brute_force(leak, rounding):
    rng = np.random.default_rng(7)
    unit, d_init = 16, 3
    x = rng.integers(-40, 90, size=(8, 3, 5)).astype(np.int64)
    sign, th = O.dilif_thresholds(d_init, 0.8, -0.2, 5, unit)
    tr = N.fixed_dynamic_integer_lif(torch.as_tensor(x, dtype=torch.float64), d_init=d_init, unit=unit, reset=unit,
                                     sign=sign, thresholds=th, leak=leak, rounding=rounding)
    q, d = _brute(x, d_init, unit, unit, sign, th, leak, rounding == "half_up")
    assert np.array_equal(tr.q.numpy().astype(np.int64), q) and np.array_equal(tr.d.numpy().astype(np.int64), d)
    assert len(np.unique(d)) >= 3 and q.max() >= 3  # D moves and the clamp acts


def test_state_carried_across_calls_equals_one_call():
    rng = np.random.default_rng(9)
    x = torch.as_tensor(rng.integers(-30, 80, size=(9, 2, 4, 3)), dtype=torch.float64)
    sign, th = O.dilif_thresholds(2, -0.6, 1.0, 12, 8)
    kw = dict(d_init=2, unit=8, reset=8, sign=sign, thresholds=th, leak=2048)
    whole = N.fixed_dynamic_integer_lif(x, **kw)
    parts, state = [], None
    for a, b in ((0, 1), (1, 4), (4, 9)):
        tr = N.fixed_dynamic_integer_lif(x[a:b], state=state, **kw)
        parts.append(tr)
        state = tr.state
    assert torch.equal(torch.cat([p.q for p in parts]), whole.q)
    assert torch.equal(torch.cat([p.d for p in parts]), whole.d) and len(torch.unique(whole.d)) > 1
    assert torch.equal(state.m, whole.state.m) and state.m.dtype == torch.int64
    zero = N.NeuronState(m=torch.zeros(2, 4, 3, dtype=torch.int64), q=torch.zeros(2, 4, 3, dtype=torch.int64))
    assert torch.equal(N.fixed_dynamic_integer_lif(x, state=zero, **kw).q, whole.q)  # zero state = fresh
    with pytest.raises(ValueError, match="stateless"):
        N.fixed_dynamic_integer_lif(x, **{**kw, "leak": None}, state=zero)
    with pytest.raises(ValueError, match="not integer-valued"):
        N.fixed_dynamic_integer_lif(x + 0.5, **kw)


def _dilif_graph(leak=0.5, gate_w=3.0, gate_b=-0.5):
    """x [4, 6] -> Linear -> leaky DI-LIF (binary) -> Linear -> I-LIF (a float lowered graph)."""
    rng = np.random.default_rng(2)
    w1 = O.as_param(rng.normal(size=(6, 6)) * 0.6)
    w2 = O.as_param(rng.normal(size=(5, 6)) / 3 / 3)  # 1/D_init folded into the consumer, as ExpandSpikes does
    return Graph(inputs=(TensorSpec("x", (4, 6)),),
                 nodes=(Node("l0", O.Linear(weight=w1, bias=O.as_param(np.full(6, 0.7))), ("x",)),
                        Node("n0", O.DynamicIntegerLIF(d_init=3, gate_w=gate_w, gate_b=gate_b, leak=leak,
                                                       encoding="binary"), ("l0",)),
                        Node("l1", O.Linear(weight=w2), ("n0",)),
                        Node("n1", O.IntegerLIF(d=4, norm=4.0, leak=0.25, encoding="binary"), ("l1",))),
                 outputs=("n1",))


def test_quantize_makes_the_fixed_dilif_with_its_thresholds_and_counts_d_on_the_calibration():
    g = _dilif_graph()
    x = torch.randn(12, 3, 4, 6, generator=torch.Generator().manual_seed(1)) * 1.5
    gq = quantize_graph(g, x)
    op = gq.node("n0").op
    assert isinstance(op, O.FixedDynamicIntegerLIF) and op.d_init == 3 and op.leak == 2048 and op.reset == op.unit
    assert op.n_features == 24 and op.encoding == "binary"
    sign, th = O.dilif_thresholds(3, 3.0, -0.5, 24, op.unit)
    assert op.sign == sign == 1 and op.thresholds.tolist() == list(th)
    info = gq.meta_dict()["fixed_point"]["layers"]["n0"]
    assert info["unit"] == op.unit and info["thresholds"] == list(th) and info["d_steps"] == 36
    assert info["d_differs"] == 0  # measured: no calibration step within a state unit / N of a gate boundary
    assert set(stateful_neurons(gq)) == {"n0", "n1"}
    fl, fx = run(g, x.double()), run(gq, x.double())
    forced = run(gq, x.double(), teacher=fl)
    d_float, d_fixed = fl.records["n0"].d, fx.records["n0"].d
    assert d_fixed.shape == (12, 3) and len(torch.unique(d_fixed)) >= 3  # D changes from step to step
    assert torch.equal(d_fixed, d_float)  # the first device layer: its input is the float one, quantized
    qf, qx = fl.records["n0"].q, forced.records["n0"].q
    assert float(qx.sum()) > 50 and int((qf != qx).sum()) <= qf.numel() // 50
    back = graph_from_json(*graph_to_json(gq))
    assert np.array_equal(back.node("n0").op.thresholds, op.thresholds)
    assert torch.equal(run(back, x.double()).records["n0"].q, fx.records["n0"].q)


def test_calibration_count_finds_a_sum_between_a_threshold_and_its_real_value():
    """``d_differs``: the table at the float model's real sum against the float gate. A real sum in
    [y_k, ceil(y_k)) (y_k the unrounded threshold) passes the float gate but not the integer table."""
    unit, n, w, b = 4, 3, 0.7, 0.1
    sign, th = O.dilif_thresholds(2, w, b, n, unit)
    op = O.FixedDynamicIntegerLIF(d_init=2, unit=unit, reset=unit, n_features=n, sign=sign,
                                  thresholds=np.array(th, dtype=np.float64))
    p = 1.5 / 4
    y = (math.log(p / (1 - p)) - b) * n * unit / w  # threshold of k = 2 before rounding
    assert th[0] == math.ceil(y) and th[0] - y > 0.05
    s = np.array([y + (th[0] - y) / 2, th[0] + 0.0, y - 1.0])  # between, on the integer, below
    x = torch.zeros(3, 1, n, dtype=torch.float64)
    x[:, 0, 0] = torch.as_tensor(s) / unit
    d_float = torch.as_tensor(_float_gate(s, w, b, 2, n, unit)[0]).reshape(3, 1)
    assert d_float.flatten().tolist() == [2, 2, 1]
    assert dilif_calibration(op, x, d_float) == {"d_steps": 3, "d_differs": 1}


def test_sdt_dilif_quantizes_and_every_layer_fires():
    from spikedeploy.capture import capture
    from spikedeploy.models.sdt_test import SDTTestNet, init_for_spiking
    from spikedeploy.passes import ExpandSpikes, default_pipeline

    torch.manual_seed(0)
    model = SDTTestNet(neuron="dilif", time_steps=4)
    init_for_spiking(model, seed=0)
    x = torch.randn((4, 2, model.in_channels, model.image_size, model.image_size))
    g = ExpandSpikes("graded").apply(default_pipeline().apply(capture(model.eval(), x[:, :1])))
    gq = quantize_graph(g, x)
    r = run(gq, x.double())
    layers = [n for n in gq.neurons() if isinstance(n.op, O.FixedDynamicIntegerLIF)]
    assert len(layers) == sum(isinstance(n.op, O.DynamicIntegerLIF) for n in g.neurons()) >= 10
    for n in layers:
        rec = r.records[n.name]
        assert float(rec.q.sum()) > 0 and bool(((rec.d >= 1) & (rec.d <= 2 * n.op.d_init)).all()), n.name
        assert bool((rec.q <= rec.d.reshape(rec.d.shape + (1,) * (rec.q.dim() - 2))).all())
    plan = gq.meta_dict()["fixed_point"]["layers"]
    assert all(plan[n.name]["d_steps"] == 8 for n in layers)
