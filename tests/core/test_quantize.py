"""QuantizeFixedPoint and the fixed-point reference: Loihi 2 formats, exact integers, saturation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from spikedeploy import neurons as N
from spikedeploy.errors import SpikedeployError, UnsupportedOpError
from spikedeploy.ir import Graph, Node, TensorSpec, ops as O
from spikedeploy.ir.serialize import graph_from_json, graph_to_json
from spikedeploy.models.sdt_test import SDTTestNet, init_for_spiking
from spikedeploy.passes import ExpandSpikes, default_pipeline
from spikedeploy.passes.quantize import (FixedPointError, QuantizeFixedPoint, decode_outputs, quantize_graph,
                                         quantize_memory)
from spikedeploy.capture import capture
from spikedeploy.reference import device_nodes, is_fixed, run

KINDS = ["ilif", "ilif_half_up", "leaky_ilif", "nilif", "integer_if", "binary_lif"]


def _sdt(kind: str, T: int = 4, encoding: str = "binary"):
    torch.manual_seed(0)
    model = SDTTestNet(neuron=kind, time_steps=T)
    init_for_spiking(model, seed=0)
    model.eval()
    x = torch.randn((T, 4, model.in_channels, model.image_size, model.image_size))
    g = ExpandSpikes(encoding).apply(default_pipeline().apply(capture(model, x[:, :1])))
    return g, x


@pytest.fixture(scope="module")
def nilif_graphs():
    g, x = _sdt("nilif")
    return g, x, {b: quantize_graph(g, x, weight_bits=b) for b in (4, 8, 16)}


def _weighted(graph):
    """The device synapses with weights (the stem convolution on pixels stays a float host op)."""
    dev = device_nodes(graph)
    return [n for n in graph.nodes if isinstance(n.op, (O.Conv2d, O.Conv1d, O.Linear)) and n.name in dev]


@pytest.mark.parametrize("kind", KINDS)
def test_every_device_value_is_an_integer_and_spikes_occur(kind):
    g, x = _sdt(kind)
    gq = quantize_graph(g, x)
    assert is_fixed(gq) and not is_fixed(g)
    res = run(gq, x)  # the executor checks every device value is an exact integer
    dev = device_nodes(gq)
    assert dev and all(isinstance(n.op, O.FIXED_NEURON_OPS) for n in gq.neurons())
    spikes = sum(float(res.records[n.name].q.sum()) for n in gq.neurons())
    assert spikes > 1000
    for n in gq.neurons():  # every layer fires
        assert float(res.records[n.name].q.sum()) > 0, n.name
    for name in dev:
        v = res.records[name].value
        s = gq.meta_dict()["fixed_point"]["dyadic"].get(name, 0)
        assert torch.equal(v * 2.0 ** s, torch.round(v * 2.0 ** s)), name


def test_weights_are_8_bit_mantissas_with_a_layer_exponent(nilif_graphs):
    g, x, gq = nilif_graphs
    plan = gq[8].meta_dict()["fixed_point"]
    for n in _weighted(gq[8]):
        info = plan["layers"][n.name]
        e = info["weight_exponent"] + info["out_exponent"] - info["in_exponent"]
        assert e >= 0  # the layer's weights are integers in its output units
        m = np.asarray(n.op.weight) / 2.0 ** e
        assert np.array_equal(m, np.round(m)), n.name
        assert m.min() >= -128 and m.max() <= 127, n.name
        assert info["mantissa_max"] == int(np.abs(m).max())
        if info["full_mantissa"]:
            assert info["mantissa_max"] >= 64  # all 8 bits in use
    # fewer bits -> narrower mantissas, larger weight errors
    for n in _weighted(gq[4]):
        i4, i8 = gq[4].meta_dict()["fixed_point"]["layers"][n.name], plan["layers"][n.name]
        assert i4["mantissa_max"] <= 7
        assert i4["weight_error_max"] > i8["weight_error_max"]


def test_error_shrinks_with_weight_bits(nilif_graphs):
    g, x, gq = nilif_graphs
    ref = run(g, x)
    rates, errors = [], []
    for b in (4, 8, 16):
        forced = run(gq[b], x, teacher=ref)
        mism = sum(int((forced.records[n.name].q != ref.records[n.name].q).sum()) for n in g.neurons())
        total = sum(ref.records[n.name].q.numel() for n in g.neurons())
        rates.append(mism / total)
        out = decode_outputs(gq[b], run(gq[b], x).outputs)
        errors.append(max(float((out[k] - ref.outputs[k]).abs().max()) for k in out))
    assert rates[0] > rates[1] > rates[2]
    assert rates[2] < 1e-3 and rates[1] < 0.05  # teacher-forced: measured 1.3e-4 and 1.6e-2
    assert errors[0] > errors[2]


def test_neuron_thresholds_and_leaks_in_state_units(nilif_graphs):
    g, x, gq = nilif_graphs
    fl = {n.name: n.op for n in g.neurons()}
    for n in gq[8].neurons():
        op, f = n.op, fl[n.name]
        assert op.unit & (op.unit - 1) == 0 and op.unit >= 4
        assert op.reset * f.reset_norm == op.unit  # NI-LIF: the normalized spike q/D, exact
        assert op.d == f.d and op.rounding == f.rounding
        if f.leak is not None:
            assert all(abs(a / 4096 - b) <= 0.5 / 4096 for a, b in zip(op.leak, f.leak))


@pytest.mark.parametrize("rounding", ["half_even", "half_up"])
def test_fixed_neuron_matches_the_float_neuron_on_exact_inputs(rounding):
    """With inputs on the state grid and leaks that are exact 12-bit fractions, the integer neuron
    is the float neuron (the only differences come from the decay's truncation, absent here with
    leak 1), ties included."""
    g = torch.Generator().manual_seed(1)
    unit = 256
    x = torch.randint(-3 * unit, 6 * unit, (3, 2, 400), generator=g).to(torch.float64)
    x[0, 0, :8] = torch.tensor([0.5, 1.5, 2.5, 3.5, 4.5, -0.5, 0.4999, 0.25]) * unit // 1
    a = N.fixed_integer_lif(x, d=4, unit=unit, reset=unit // 4, leak=4096, rounding=rounding)
    b = N.integer_lif(x / unit, d=4, leaks=1.0, reset_norm=4.0, norm=4.0, rounding=rounding)
    assert torch.equal(a.q, b.q) and a.q.sum() > 100 and a.saturated == 0
    stateless = N.fixed_integer_lif(x, d=4, unit=unit, reset=0, leak=None, rounding=rounding)
    assert torch.equal(stateless.q, N.integer_lif(x / unit, d=4, norm=4.0, rounding=rounding).q)
    expect = [0, 2, 2, 4, 4] if rounding == "half_even" else [1, 2, 3, 4, 4]
    assert stateless.q[0, 0, :5].tolist() == expect


def test_decay_truncates_toward_zero_like_loihi():
    p = torch.tensor([7, -7, 4095, -4095, 1, -1])
    assert N.fixed_decay(p, 2048).tolist() == [3, -3, 2047, -2047, 0, 0]
    assert N.fixed_decay(p, 4096).tolist() == p.tolist()


def _one_layer(weight, bias=None, d=4):
    w = O.as_param(weight)
    nodes = (Node("fc", O.Linear(weight=w, bias=None if bias is None else O.as_param(bias)), ("x",)),
             Node("n", O.IntegerLIF(d=d, norm=float(d), encoding="binary"), ("fc",)),
             Node("out", O.Linear(weight=O.as_param(np.eye(w.shape[0]) / d)), ("n",)))
    pre = Node("in_spk", O.IntegerLIF(d=d, norm=1.0, encoding="binary"), ("x",))
    nodes = (pre,) + (Node("fc", nodes[0].op, ("in_spk",)),) + nodes[1:]
    return Graph(inputs=(TensorSpec("x", (w.shape[1],)),), nodes=nodes, outputs=("out",))


def test_saturation_is_counted_never_wrapped():
    """A layer calibrated on small inputs and driven far beyond: its state clamps at 2**23 - 1 and
    every clamp is counted (Loihi's own simulator would wrap around)."""
    rng = np.random.default_rng(0)
    w = rng.normal(size=(16, 32)) * 0.05
    g = _one_layer(w)
    small = torch.full((1, 8, 32), 1.0)
    gq = quantize_graph(g, small)
    assert run(gq, small).records["n"].saturated == 0
    unit = gq.node("n").op.unit
    # a weight set 2000x larger for the same exponents: the state passes 2**23
    big_w = np.full(gq.node("fc").op.weight.shape, 127.0 * 2 ** 10)
    big = gq.replace_nodes([Node(n.name, O.Linear(weight=O.as_param(big_w)), n.inputs) if n.name == "fc" else n
                            for n in gq.nodes])
    res = run(big, torch.full((1, 8, 32), 4.0))
    sat = res.records["n"].saturated
    assert sat > 0
    rec = res.records["n"]
    assert rec.q.max() == 4  # clamped states still fire D, no wrap to negative
    lim = 2 ** 23 - 1
    assert lim // unit > 4
    # host boundary: an input beyond the 24-bit message is clamped and counted
    g2 = Graph(inputs=(TensorSpec("x", (4,)),),
               nodes=(Node("n", O.IntegerLIF(d=4, norm=4.0, encoding="binary"), ("x",)),
                      Node("out", O.Linear(weight=O.as_param(np.eye(4))), ("n",))), outputs=("out",))
    gq2 = quantize_graph(g2, torch.ones(1, 2, 4))
    r2 = run(gq2, torch.full((1, 2, 4), 1e9))
    q_node = next(n.name for n in gq2.nodes if isinstance(n.op, O.Quantize))
    assert r2.records[q_node].saturated == 8 and r2.records["n"].q.max() == 4


def test_plan_round_trips_through_json(nilif_graphs):
    g, x, gq = nilif_graphs
    desc, arrays = graph_to_json(gq[8])
    back = graph_from_json(desc, arrays)
    assert back.meta_dict()["fixed_point"] == gq[8].meta_dict()["fixed_point"]
    a, b = run(gq[8], x), run(back, x)
    for n in gq[8].neurons():
        assert torch.equal(a.records[n.name].q, b.records[n.name].q)


def _device_batchnorm():
    """A BatchNorm after a neuron (on the device: fixed point has no form for it; fold it first)."""
    one = O.as_param(np.ones(2))
    return Graph(inputs=(TensorSpec("x", (2, 3)),),
                 nodes=(Node("n", O.IntegerLIF(d=4, norm=4.0, encoding="binary"), ("x",)),
                        Node("bn", O.BatchNorm(mean=one * 0, var=one, weight=one, bias=one * 0), ("n",))),
                 outputs=("bn",))


def test_refuses_what_it_cannot_represent():
    with pytest.raises(UnsupportedOpError, match="node 'bn': op BatchNorm"):
        quantize_graph(_device_batchnorm(), torch.ones(1, 1, 2, 3))
    gi, x = _sdt("nilif", encoding="binary")
    integer = default_pipeline().apply(capture(SDTTestNet(neuron="ilif", time_steps=4).eval(), x[:, :1]))
    with pytest.raises(FixedPointError, match="lower the graph"):
        quantize_graph(integer, x)
    with pytest.raises(FixedPointError, match="already in fixed point"):
        QuantizeFixedPoint(x).apply(quantize_graph(gi, x))
    with pytest.raises(FixedPointError, match="weight-bits"):
        QuantizeFixedPoint(x, weight_bits=1)
    pool = Graph(inputs=(TensorSpec("x", (2, 6, 6)),),
                 nodes=(Node("n", O.IntegerLIF(d=4, norm=4.0, encoding="binary"), ("x",)),
                        Node("p", O.AvgPool2d(kernel=(3, 3), stride=(3, 3)), ("n",))), outputs=("p",))
    with pytest.raises(FixedPointError, match="node 'p'.*divides by 9"):
        quantize_graph(pool, torch.ones(1, 1, 2, 6, 6))


def test_memory_is_quantized_with_its_static_exponent():
    rng = np.random.default_rng(3)
    mem = rng.normal(size=(1, 2, 4, 4))
    g = Graph(inputs=(TensorSpec("x", (8, 5)),),
              nodes=(Node("q", O.IntegerLIF(d=4, norm=4.0, encoding="binary"), ("x",)),
                     Node("r", O.MemoryRead(memory=O.as_param(mem), num_heads=2, scale=0.25), ("q",))),
              outputs=("r",))
    x = torch.rand(1, 3, 8, 5) * 4
    gq = quantize_graph(g, x)
    k = gq.meta_dict()["fixed_point"]["memory"]["r"]
    m = np.asarray(gq.node("r").op.memory)
    assert np.array_equal(m, np.round(m)) and np.abs(m).max() <= 127 and np.abs(m).max() >= 32
    again, clipped = quantize_memory(gq, "r", mem)
    assert np.array_equal(again, m) and clipped == 0
    _, clipped = quantize_memory(gq, "r", mem * 10)
    assert clipped > 0
    out = decode_outputs(gq, run(gq, x).outputs)["r"]
    ref = run(g, x).outputs["r"]
    assert float((out - ref).abs().max()) <= 4 * 2.0 ** -k * 0.25 * 8 + 1e-12  # <= half an LSB per memory cell read
    with pytest.raises(SpikedeployError):
        quantize_memory(g, "r", mem)
    assert math.isfinite(float(out.abs().max()))


def test_a_large_bias_lowers_the_layer_exponent_instead_of_clipping():
    """Loihi's bias is a 13-bit mantissa with an exponent <= 7 (at most 4095 * 128 state units):
    a bias that would not fit at the exponent the range allows lowers the layer's exponent."""
    rng = np.random.default_rng(5)
    w = rng.normal(size=(8, 16)) * 0.01
    g = _one_layer(w, bias=np.full(8, 3.0))
    x = torch.rand(1, 4, 16) * 4
    gq = quantize_graph(g, x)
    info = gq.meta_dict()["fixed_point"]["layers"]["fc"]
    assert info["bias_clipped"] == 0 and info["bias_error_max"] == 0.0
    assert 3.0 * 2 ** info["out_exponent"] <= 4095 * 128
    ref, fx = run(g, x), run(gq, x)
    assert torch.equal(ref.records["n"].q, fx.records["n"].q) and float(fx.records["n"].q.sum()) > 0


def test_check_quantizable_refuses_before_any_run():
    from spikedeploy.passes.quantize import check_quantizable

    with pytest.raises(UnsupportedOpError, match="op BatchNorm has no fixed-point form"):
        check_quantizable(_device_batchnorm())
    ok, _ = _sdt("nilif")
    check_quantizable(_sdt("dilif")[0])  # DI-LIF has one (FixedDynamicIntegerLIF)
    check_quantizable(ok)  # a host BatchNorm/stem before the first neuron is fine


def test_fixed_point_errors_are_bad_input_exit_2():
    """A graph or option fixed point cannot take is the user's input: exit code 2, one check of the
    weight width for every command and backend."""
    from spikedeploy.errors import ConfigError
    from spikedeploy.passes.quantize import check_weight_bits

    assert issubclass(FixedPointError, ConfigError) and FixedPointError("x").exit_code == 2
    assert check_weight_bits(8) == 8 and check_weight_bits(np.int64(4)) == 4
    for bad in (1, 17, True, 8.0, None):
        with pytest.raises(FixedPointError, match="must be an integer in 2..16"):
            check_weight_bits(bad)
