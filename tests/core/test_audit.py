"""Op-count audit: the fast counters against per-spike enumeration, zero weights, the papers'
formula, encodings, reports, the SDT test model, the Lava runtime and bad input.

Every single-layer graph is ``x -> IntegerLIF(D=4, norm=1) -> layer``: the inputs are random
integers in 0..4, so the neuron's spike counts q equal the inputs (known spike inputs), and the
brute-force enumerators below walk every input position with q > 0, every weight tap and every
output position it reaches, independently of the fan-out maps the audit uses.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from spikedeploy.audit import AuditError, audit, audit_graph, fanout_map, layer_flops
from spikedeploy.errors import ConfigError, InputError, SpikedeployError
from spikedeploy.ir import Graph, Node, TensorSpec, ops as O

D = 4


def _p(a):
    return O.as_param(a)


def _counts(rng, T, B, shape, p_zero=0.4):
    q = rng.integers(1, D + 1, size=(T, B) + tuple(shape)).astype(np.float64)
    q[rng.random(q.shape) < p_zero] = 0
    return torch.tensor(q)


def _single(op, in_shape, name="layer"):
    return Graph(
        inputs=(TensorSpec("x", tuple(in_shape)),),
        nodes=(
            Node("n", O.IntegerLIF(d=D, norm=1.0), ("x",)),
            Node(name, op, ("n",)),
        ),
        outputs=(name,),
    )


def _sparse_weight(rng, shape, p_zero=0.3):
    w = rng.normal(size=shape)
    w[rng.random(shape) < p_zero] = 0.0
    return w


def _out(n, k, s, p, d):
    return (n + 2 * p - d * (k - 1) - 1) // s + 1


# ---------------------------------------------------------------------------------------------
# brute-force enumerators: (unit SynOps, graded events) summed over every (t, b)
# ---------------------------------------------------------------------------------------------


def brute_conv2d(q, w, stride, pad, dil, groups):
    q = q.numpy()
    co, cig, kh, kw = w.shape
    _, _, ci, H, W = q.shape
    ho, wo = _out(H, kh, stride[0], pad[0], dil[0]), _out(W, kw, stride[1], pad[1], dil[1])
    cog = co // groups
    syn = ev = 0
    for t, b, c, h, x in zip(*np.nonzero(q)):
        g, cl = divmod(c, cig)
        for o in range(g * cog, (g + 1) * cog):
            for u in range(kh):
                for v in range(kw):
                    if w[o, cl, u, v] == 0:
                        continue
                    ni, nj = h + pad[0] - u * dil[0], x + pad[1] - v * dil[1]
                    if ni % stride[0] or nj % stride[1]:
                        continue
                    i, j = ni // stride[0], nj // stride[1]
                    if 0 <= i < ho and 0 <= j < wo:
                        syn += int(q[t, b, c, h, x])
                        ev += 1
    return syn, ev


def brute_conv1d(q, w, stride, pad, dil, groups):
    q = q.numpy()
    co, cig, k = w.shape
    L = q.shape[-1]
    lo = _out(L, k, stride, pad, dil)
    cog = co // groups
    syn = ev = 0
    for t, b, c, l in zip(*np.nonzero(q)):
        g, cl = divmod(c, cig)
        for o in range(g * cog, (g + 1) * cog):
            for u in range(k):
                n = l + pad - u * dil
                if w[o, cl, u] != 0 and n % stride == 0 and 0 <= n // stride < lo:
                    syn += int(q[t, b, c, l])
                    ev += 1
    return syn, ev


def brute_linear(q, w):
    q = q.numpy()
    syn = ev = 0
    for idx in zip(*np.nonzero(q)):
        i = idx[-1]
        for o in range(w.shape[0]):
            if w[o, i] != 0:
                syn += int(q[idx])
                ev += 1
    return syn, ev


def brute_avgpool(q, kernel, stride, pad):
    q = q.numpy()
    H, W = q.shape[-2:]
    ho, wo = _out(H, kernel[0], stride[0], pad[0], 1), _out(W, kernel[1], stride[1], pad[1], 1)
    syn = ev = 0
    for t, b, c, h, x in zip(*np.nonzero(q)):
        for i in range(ho):
            for j in range(wo):
                if i * stride[0] - pad[0] <= h < i * stride[0] - pad[0] + kernel[0] and \
                        j * stride[1] - pad[1] <= x < j * stride[1] - pad[1] + kernel[1]:
                    syn += int(q[t, b, c, h, x])
                    ev += 1
    return syn, ev


def brute_attention(q, k, v, heads):
    """(kv pair events, graded kv events, q row reads, graded q reads), one event at a time."""
    q, k, v = q.numpy(), k.numpy(), v.numpy()
    T, B, C, N = k.shape
    cv = v.shape[2]
    ch, cvh = C // heads, cv // heads
    pairs = pairs_g = 0
    for t in range(T):
        for b in range(B):
            for n in range(N):
                for h in range(heads):
                    for i in range(h * ch, (h + 1) * ch):
                        for j in range(h * cvh, (h + 1) * cvh):
                            pairs += int(k[t, b, i, n] * v[t, b, j, n])  # one cell per unit-spike pair
                            pairs_g += int(k[t, b, i, n] > 0 and v[t, b, j, n] > 0)
    reads = reads_g = 0
    for t, b, i, n in zip(*np.nonzero(q)):
        reads += int(q[t, b, i, n]) * cvh
        reads_g += cvh
    return pairs, pairs_g, reads, reads_g


def _layer_totals(rep, name="layer"):
    """(sequence SynOps, sequence graded events) of one row (per frame x inputs, exact integers)."""
    row = rep.layer(name)
    return round(row.measured_synops * rep.n_inputs), round(row.graded_events * rep.n_inputs)


def _audit_single(op, in_shape, q, encoding="binary", **kw):
    g = _single(op, in_shape)
    rep = audit_graph(g, q, encoding=encoding, **kw)
    assert rep.spikes_occurred and float(q.sum()) > 0
    return rep


# ---------------------------------------------------------------------------------------------
# fast counters == per-spike enumeration
# ---------------------------------------------------------------------------------------------

CONV2D_CASES = [
    # (C_in, C_out, k, stride, padding, dilation, groups, H, W)
    (3, 4, 3, 1, 1, 1, 1, 7, 6),       # padding
    (3, 5, 3, 2, 1, 1, 1, 8, 7),       # stride + padding (odd width)
    (4, 4, 3, 1, 2, 2, 1, 7, 7),       # dilation
    (4, 6, 3, 2, 1, 1, 2, 6, 9),       # groups
    (5, 5, 3, 1, 1, 1, 5, 6, 6),       # depthwise
    (6, 12, 3, 2, 0, 1, 6, 9, 8),      # depthwise multiplier 2, no padding, stride 2
    (2, 3, (2, 4), (1, 3), (0, 2), (2, 1), 1, 7, 9),  # rectangular everything
    (3, 4, 1, 2, 0, 1, 1, 5, 5),       # strided pointwise: odd positions have no target
]


@pytest.mark.parametrize("case", CONV2D_CASES)
@pytest.mark.parametrize("encoding", ["binary", "graded"])
def test_conv2d_counts_equal_enumeration(case, encoding):
    ci, co, k, s, p, d, g, H, W = case
    pair = lambda v: (v, v) if isinstance(v, int) else tuple(v)
    k, s, p, d = pair(k), pair(s), pair(p), pair(d)
    rng = np.random.default_rng(hash(case) % 2**32)
    w = _sparse_weight(rng, (co, ci // g) + k)
    op = O.Conv2d(_p(w), _p(rng.normal(size=co)), stride=s, padding=p, dilation=d, groups=g)
    q = _counts(rng, 2, 3, (ci, H, W))
    rep = _audit_single(op, (ci, H, W), q, encoding=encoding)
    assert _layer_totals(rep) == brute_conv2d(q, w, s, p, d, g)
    row = rep.layer("layer")
    assert row.unit_equivalent == row.measured_synops and not row.host and row.kind == "synapse"


@pytest.mark.parametrize("case", [(3, 4, 3, 1, 1, 1, 1, 9), (4, 6, 3, 2, 1, 2, 2, 11), (4, 4, 5, 1, 2, 1, 4, 7),
                                  (6, 3, 1, 1, 0, 1, 1, 5)])
def test_conv1d_counts_equal_enumeration(case):
    ci, co, k, s, p, d, g, L = case
    rng = np.random.default_rng(sum(case))
    w = _sparse_weight(rng, (co, ci // g, k))
    op = O.Conv1d(_p(w), None, stride=s, padding=p, dilation=d, groups=g)
    q = _counts(rng, 2, 2, (ci, L))
    rep = _audit_single(op, (ci, L), q)
    assert _layer_totals(rep) == brute_conv1d(q, w, s, p, d, g)


@pytest.mark.parametrize("in_shape", [(7,), (5, 6)])
def test_linear_counts_equal_enumeration(in_shape):
    rng = np.random.default_rng(3)
    w = _sparse_weight(rng, (4, in_shape[-1]), p_zero=0.35)
    w[:, 0] = 0.0  # an input column without any synapse
    q = _counts(rng, 3, 2, in_shape)
    rep = _audit_single(O.Linear(_p(w), None), in_shape, q)
    assert _layer_totals(rep) == brute_linear(q, w)


@pytest.mark.parametrize("kernel,stride,pad", [((2, 2), (2, 2), (0, 0)), ((3, 3), (2, 2), (1, 1)),
                                               ((3, 2), (1, 2), (1, 0)), ((3, 3), (3, 3), (0, 0))])
def test_avgpool_counts_equal_enumeration(kernel, stride, pad):
    rng = np.random.default_rng(4)
    shape = (3, 7, 8)
    q = _counts(rng, 2, 2, shape)
    rep = _audit_single(O.AvgPool2d(kernel, stride, pad), shape, q)
    assert _layer_totals(rep) == brute_avgpool(q, kernel, stride, pad)


def test_mean_reduce_fanout_is_one():
    rng = np.random.default_rng(5)
    q = _counts(rng, 2, 3, (4, 6))
    rep = _audit_single(O.MeanReduce((1,)), (4, 6), q)
    assert _layer_totals(rep) == (int(q.sum()), int((q > 0).sum()))
    assert rep.layer("layer").ratio == pytest.approx(1.0, rel=1e-12)


def _attention_graph(c, cv, n, heads):
    spec = lambda name, ch: TensorSpec(name, (ch, n))
    return Graph(
        inputs=(spec("xq", c), spec("xk", c), spec("xv", cv)),
        nodes=(
            Node("q", O.IntegerLIF(d=D, norm=1.0), ("xq",)),
            Node("k", O.IntegerLIF(d=D, norm=1.0), ("xk",)),
            Node("v", O.IntegerLIF(d=D, norm=1.0), ("xv",)),
            Node("att", O.SpikeLinearAttention(num_heads=heads, scale=0.25), ("q", "k", "v")),
        ),
        outputs=("att",),
    )


@pytest.mark.parametrize("c,cv,n,heads", [(4, 4, 5, 1), (6, 4, 7, 2), (8, 12, 3, 4)])
@pytest.mark.parametrize("encoding", ["binary", "graded"])
def test_attention_counts_equal_enumeration(c, cv, n, heads, encoding):
    rng = np.random.default_rng(c * 100 + cv * 10 + n)
    T, B = 2, 2
    x = {"xq": _counts(rng, T, B, (c, n)), "xk": _counts(rng, T, B, (c, n)), "xv": _counts(rng, T, B, (cv, n))}
    rep = audit_graph(_attention_graph(c, cv, n, heads), x, encoding=encoding)
    assert all(float(t.sum()) > 0 for t in x.values())
    pairs, pairs_g, reads, reads_g = brute_attention(x["xq"], x["xk"], x["xv"], heads)
    assert pairs > 0 and reads > 0
    assert _layer_totals(rep, "att [kv]") == (pairs, pairs_g)
    assert _layer_totals(rep, "att [q·kv]") == (reads, reads_g)
    kv = rep.layer("att [kv]")
    assert kv.kind == "attention" and kv.source == "k × v"
    assert kv.flops == c * cv * n / heads
    # the papers' estimate treats v as dense weights: FLOPs x T x k's rate
    rate_k = float(x["xk"].sum()) / x["xk"].numel()
    assert kv.theoretical_ops == kv.flops * T * rate_k
    # each q spike reads a row: the estimate is exact for the reads
    assert rep.layer("att [q·kv]").ratio == pytest.approx(1.0, rel=1e-12)


def test_routed_spikes_concat_reshape_permute():
    """A conv fed by two neuron layers through Concat, Reshape and Permute counts the routed spikes."""
    rng = np.random.default_rng(6)
    w = _sparse_weight(rng, (3, 4, 3, 3))
    g = Graph(
        inputs=(TensorSpec("a", (2, 5, 4)), TensorSpec("b", (4, 5, 2))),
        nodes=(
            Node("na", O.IntegerLIF(d=D, norm=2.0), ("a",)),
            Node("nb", O.IntegerLIF(d=D, norm=2.0), ("b",)),
            Node("pb", O.Permute((2, 1, 0)), ("nb",)),          # [2, 5, 4]
            Node("cat", O.Concat(axis=0), ("na", "pb")),        # [4, 5, 4]
            Node("flat", O.Reshape((4, 20)), ("cat",)),
            Node("back", O.Reshape((4, 5, 4)), ("flat",)),
            Node("layer", O.Conv2d(_p(w), None, padding=(1, 1)), ("back",)),
        ),
        outputs=("layer",),
    )
    x = {"a": _counts(rng, 1, 2, (2, 5, 4)), "b": _counts(rng, 1, 2, (4, 5, 2))}
    rep = audit_graph(g, x)
    routed = torch.cat([x["a"], x["b"].permute(0, 1, 4, 3, 2)], dim=2)
    assert _layer_totals(rep) == brute_conv2d(routed, w, (1, 1), (1, 1), (1, 1), 1)
    assert rep.layer("layer").source == "na, nb"
    assert rep.layer("layer").firing_rate == float(routed.sum()) / routed.numel()


# ---------------------------------------------------------------------------------------------
# zero weights, the papers' formula, encodings
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", [CONV2D_CASES[1], CONV2D_CASES[3], CONV2D_CASES[4], CONV2D_CASES[6]])
def test_zeroing_one_weight_lowers_synops_by_its_uses(case):
    ci, co, k, s, p, d, g, H, W = case
    pair = lambda v: (v, v) if isinstance(v, int) else tuple(v)
    k, s, p, d = pair(k), pair(s), pair(p), pair(d)
    rng = np.random.default_rng(7)
    w = rng.normal(size=(co, ci // g) + k)  # dense: every weight non-zero
    q = _counts(rng, 2, 3, (ci, H, W))
    conv = lambda w: O.Conv2d(_p(w), None, stride=s, padding=p, dilation=d, groups=g)
    before = _audit_single(conv(w), (ci, H, W), q)
    # the synapse (o, c_local, u, v): the input positions that use it, enumerated from the outputs
    o, cl, u, v = co - 1, ci // g - 1, k[0] // 2, k[1] - 1
    c = (o // (co // g)) * (ci // g) + cl
    ho, wo = _out(H, k[0], s[0], p[0], d[0]), _out(W, k[1], s[1], p[1], d[1])
    uses = 0
    for i in range(ho):
        for j in range(wo):
            h, x = i * s[0] - p[0] + u * d[0], j * s[1] - p[1] + v * d[1]
            if 0 <= h < H and 0 <= x < W:
                uses += int(q[:, :, c, h, x].sum())
    assert uses > 0
    w0 = w.copy()
    w0[o, cl, u, v] = 0.0
    after = _audit_single(conv(w0), (ci, H, W), q)
    (syn_b, _), (syn_a, _) = _layer_totals(before), _layer_totals(after)
    assert syn_b - syn_a == uses
    rb, ra = before.layer("layer"), after.layer("layer")
    assert ra.theoretical_ops == rb.theoretical_ops and ra.flops == rb.flops
    assert rb.zero_weight_factor == 1.0 and ra.zero_weight_factor < 1.0
    assert "zero weights" in ra.explanation


def test_zeroing_one_linear_weight_lowers_synops_by_its_uses():
    rng = np.random.default_rng(8)
    w = rng.normal(size=(5, 6))
    q = _counts(rng, 2, 4, (3, 6))
    before = _audit_single(O.Linear(_p(w), None), (3, 6), q)
    w0 = w.copy()
    w0[2, 4] = 0.0
    after = _audit_single(O.Linear(_p(w0), None), (3, 6), q)
    uses = int(q[..., 4].sum())
    assert uses > 0
    assert _layer_totals(before)[0] - _layer_totals(after)[0] == uses
    assert after.layer("layer").theoretical_ops == before.layer("layer").theoretical_ops
    # dense Linear: the estimate is exact until a weight is zero
    assert before.layer("layer").ratio == pytest.approx(1.0, rel=1e-12)


@pytest.mark.parametrize("case", CONV2D_CASES[:5])
def test_papers_formula_is_reproduced_exactly(case):
    ci, co, k, s, p, d, g, H, W = case
    rng = np.random.default_rng(9)
    w = _sparse_weight(rng, (co, ci // g, k, k))
    q = _counts(rng, 3, 2, (ci, H, W))
    rep = _audit_single(O.Conv2d(_p(w), None, stride=(s, s), padding=(p, p), dilation=(d, d), groups=g),
                        (ci, H, W), q)
    row = rep.layer("layer")
    ho, wo = _out(H, k, s, p, d), _out(W, k, s, p, d)
    flops = ci * co * k * k * ho * wo // g
    rate = float(q.sum()) / q.numel()
    T = q.shape[0]
    assert row.flops == flops
    assert row.firing_rate == rate
    assert row.theoretical_ops == flops * T * rate
    assert row.rates_per_step == tuple(float(q[t].sum()) / q[t].numel() for t in range(T))
    assert row.theoretical_energy_pj == 0.9 * row.theoretical_ops
    # the ratio is exactly the product of the documented factors
    assert row.ratio == pytest.approx(row.border_factor * row.zero_weight_factor, rel=1e-12)


def test_firing_rate_can_exceed_one():
    q = torch.full((1, 2, 3, 4, 4), 3.0)
    rng = np.random.default_rng(10)
    rep = _audit_single(O.Conv2d(_p(rng.normal(size=(2, 3, 1, 1))), None), (3, 4, 4), q)
    assert rep.layer("layer").firing_rate == 3.0
    assert rep.layer("layer").ratio == pytest.approx(1.0, rel=1e-12)  # 1x1 conv, dense: estimate exact


def test_binary_and_graded_unit_equivalents_agree():
    from spikedeploy import api

    loaded = api.build_model("sdt-test", neuron="nilif", timesteps=2)
    x = api.make_inputs(loaded, timesteps=2, num_inputs=2, seed=3)
    graph = api.prepare_graph(loaded, timesteps=2)
    rb = audit_graph(graph, x, encoding="binary")
    rg = audit_graph(graph, x, encoding="graded")
    assert rb.spikes_occurred and rg.runtime == "reference-graded"
    for a, b in zip(rb.spike_layers, rg.spike_layers):
        assert a.name == b.name
        assert a.measured_synops == b.measured_synops and a.unit_equivalent == b.unit_equivalent
        assert a.graded_events == b.graded_events and a.theoretical_ops == b.theoretical_ops
        assert a.graded_events <= a.unit_equivalent
    for a, b in zip(rb.neuron_layers, rg.neuron_layers):  # binary: D sub-steps per macro-step
        assert a.neuron_updates == b.neuron_updates * 4


def test_spike_counts_argument_replaces_the_reference_run():
    rng = np.random.default_rng(11)
    w = _sparse_weight(rng, (4, 3, 3, 3))
    g = _single(O.Conv2d(_p(w), None, padding=(1, 1)), (3, 6, 6))
    q = _counts(rng, 1, 2, (3, 6, 6))
    other = _counts(rng, 1, 2, (3, 6, 6))
    rep = audit_graph(g, q, spike_counts={"n": other.numpy()}, runtime="lava")
    assert rep.runtime == "lava-binary"
    assert _layer_totals(rep) == brute_conv2d(other, w, (1, 1), (1, 1), (1, 1), 1)
    # x may be omitted when the counts are given
    assert _layer_totals(audit_graph(g, None, spike_counts={"n": other})) == _layer_totals(rep)


def test_fanout_map_of_padded_conv_matches_border_geometry():
    op = O.Conv2d(_p(np.ones((1, 1, 3, 3))), None, padding=(1, 1))
    f = fanout_map(op, (1, 4, 4), (1, 4, 4))
    assert f[0].tolist() == [[4, 6, 6, 4], [6, 9, 9, 6], [6, 9, 9, 6], [4, 6, 6, 4]]
    assert layer_flops(op, (1, 4, 4), (1, 4, 4)) == 9 * 16


# ---------------------------------------------------------------------------------------------
# reports and the SDT test model
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sdt_report():
    return audit("sdt-test", neuron="nilif", timesteps=3, num_inputs=3, profile="loihi")


def test_sdt_audit_has_a_row_for_every_synaptic_layer(sdt_report):
    from spikedeploy import api
    from spikedeploy.passes import ExpandSpikes

    rep = sdt_report
    assert rep.spikes_occurred and rep.T == 3 and rep.n_inputs == 3 and rep.uncounted == ()
    graph = ExpandSpikes("binary").apply(api.prepare_graph(api.build_model("sdt-test", neuron="nilif", timesteps=3),
                                                             timesteps=3))
    names = {l.name for l in rep.layers}
    for n in graph.nodes:
        if isinstance(n.op, O.SYNAPTIC_OPS):
            assert n.name in names
        if isinstance(n.op, O.SpikeLinearAttention):
            assert {f"{n.name} [kv]", f"{n.name} [q·kv]"} <= names
        if isinstance(n.op, O.NEURON_OPS):
            assert rep.layer(n.name).neuron_updates == math.prod(graph.shapes()[n.name]) * 3 * n.op.window
    assert [l.name for l in rep.host_layers] == ["stem_conv", "head"]
    for l in rep.spike_layers:
        assert l.measured_synops > 0 and l.theoretical_ops > 0 and len(l.rates_per_step) == 3
        assert 0 < l.ratio <= 1.0 + 1e-12  # borders, zero weights and spike x spike only lower the count
    # host MACs are never part of the spike-op totals
    t = rep.totals["per_sequence"]
    assert t["measured_synops"] == sum(round(l.measured_synops * 3) for l in rep.spike_layers)
    assert t["host_macs"] == sum(l.macs for l in rep.host_layers) * 3
    assert t["energy_pj"] == pytest.approx(23.6 * t["measured_synops"] + 4.6 * t["host_macs"] + 81.0 * t["neuron_updates"])
    assert rep.totals["per_frame"]["measured_synops"] == pytest.approx(t["measured_synops"] / 3)
    assert rep.totals["per_macro_step"]["measured_synops"] == pytest.approx(t["measured_synops"] / 9)


def test_reports_render(sdt_report, tmp_path):
    rep = sdt_report
    md = rep.to_markdown()
    assert "Davies" in md and "| `down_conv` | Conv2d |" in md and "| T1 | T2 | T3 |" in md
    assert "Host / real-valued layers" in md and "loihi" in md
    d = json.loads(rep.to_json())
    assert d["runtime"] == "reference-binary" and d["profile"]["name"] == "loihi"
    assert len(d["firing_rates"]) == len(rep.spike_layers) and len(d["firing_rates"][0]["rates_per_step"]) == 3
    html = rep.to_html()
    # 17 synaptic rows: one per-layer figure (ops and firing rates side by side) and the energy breakdown
    assert html.startswith("<!DOCTYPE html>") and html.count('src="data:image/png;base64,') == 2
    assert html.count('<img class="native"') == 2 and html.count('<div class="table-wrap">') >= 5
    out = rep.write(tmp_path / "audit")
    assert {"report.html", "report.json", "report.md"} <= {p.name for p in out.iterdir()}


def test_many_layer_audit_plots_are_legible(tmp_path):
    """The tiny SpikeTrack search branch (about 130 synaptic rows): one per-layer figure per stage,
    each shown at its native size (fits the column, >= 20 px per layer row), every layer in a
    figure; the report's tables sit in scrolling containers."""
    import base64
    import re

    from spikedeploy.htmlreport import COLUMN_PX, layer_groups, png_size

    rep = audit("spiketrack-tiny128-t1:search", num_inputs=1)
    rows = [l for l in rep.layers if l.kind != "neuron"]
    groups = layer_groups([l.name for l in rows])
    assert len(rows) > 100 and len(groups) >= 3
    html = rep.to_html()
    imgs = re.findall(r'<img class="native" width="(\d+)" height="(\d+)" alt="([^"]*)" '
                      r'src="data:image/png;base64,([^"]+)"', html)
    assert len(imgs) == 1 + len(groups) + 1  # stage overview, one per stage, energy
    for (w, h, alt, data), (_, idx) in zip(imgs[1:-1], groups):
        assert png_size(base64.b64decode(data)) == (int(w), int(h))
        assert int(w) <= COLUMN_PX and int(h) / len(idx) >= 20, (w, h, len(idx), alt)
    assert sum(len(idx) for _, idx in groups) == len(rows)
    assert html.count('<div class="table-wrap">') >= 5 and '<td class="n">model.<wbr>encoder.<wbr>' in html


def test_audit_writes_output_and_default_profile(tmp_path):
    rep = audit("sdt-test", num_inputs=2, output=tmp_path / "a")
    assert rep.profile.name == "45nm" and rep.spikes_occurred
    assert (tmp_path / "a" / "report.html").read_text().count("data:image/png;base64,") == 2
    t = rep.totals["per_frame"]
    assert t["energy_neurons_pj"] == 0.0
    assert t["energy_pj"] == pytest.approx(0.9 * t["measured_synops"] + 4.6 * t["host_macs"])


def test_lava_counts_equal_reference_counts(tmp_path):
    """The audit of a Lava run equals the audit of the reference binary run, row by row, and the
    attention's memory writes equal the pair events the Lava attention process counted."""
    pytest.importorskip("scipy")
    from spikedeploy import api
    from spikedeploy.exporters import lava as lava_export
    from spikedeploy.runtimes import lava as lava_run

    loaded = api.build_model("sdt-test", timesteps=1)
    x = api.make_inputs(loaded, timesteps=1, num_inputs=2, seed=1)
    graph = api.prepare_graph(loaded, timesteps=1, encoding="binary")
    trun = lava_run.run(lava_export.load(lava_export.export(graph, tmp_path / "m.lava", encoding="binary")), x)
    ref = audit_graph(graph, x)
    lav = audit_graph(graph, x, spike_counts=trun.spike_counts, runtime="lava")
    assert ref.runtime == "reference-binary" and lav.runtime == "lava-binary" and ref.spikes_occurred
    assert ref.totals == lav.totals
    for a, b in zip(ref.layers, lav.layers):
        assert (a.name, a.measured_synops, a.graded_events, a.firing_rate, a.neuron_updates) == \
               (b.name, b.measured_synops, b.graded_events, b.firing_rate, b.neuron_updates)
    (att, pairs), = trun.info["attention_pair_events"].items()
    assert pairs > 0 and round(lav.layer("attn.attn [kv]").measured_synops * 2) == pairs


# ---------------------------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------------------------


def _conv_graph():
    rng = np.random.default_rng(12)
    return _single(O.Conv2d(_p(rng.normal(size=(2, 2, 3, 3))), None, padding=(1, 1)), (2, 4, 4))


def test_unknown_profile_is_a_config_error():
    with pytest.raises(ConfigError, match=r"unknown energy profile 'tpu'; known profiles: 45nm, loihi"):
        audit_graph(_conv_graph(), torch.ones(1, 1, 2, 4, 4), profile="tpu")
    with pytest.raises(ConfigError, match="unknown energy profile"):
        audit("sdt-test", profile="tpu")
    with pytest.raises(ConfigError, match="encoding"):
        audit_graph(_conv_graph(), torch.ones(1, 1, 2, 4, 4), encoding="ternary")


def test_empty_input_set():
    with pytest.raises(AuditError, match="empty input set"):
        audit_graph(_conv_graph(), torch.ones(1, 0, 2, 4, 4))
    with pytest.raises(AuditError, match="empty input set"):
        audit("sdt-test", num_inputs=0)
    with pytest.raises(AuditError, match="empty input set"):
        audit_graph(_conv_graph(), None, spike_counts={"n": torch.zeros(1, 0, 2, 4, 4)})


def test_empty_input_file(tmp_path):
    f = tmp_path / "x.npy"
    np.save(f, np.zeros((1, 0, 3, 16, 16), dtype=np.float32))
    with pytest.raises(InputError, match=r"batch axis B \(axis 1\) is empty"):  # refused where it is read
        audit("sdt-test", input_file=f)


def test_no_spiking_layers():
    rng = np.random.default_rng(13)
    no_neurons = Graph((TensorSpec("x", (3,)),), (Node("fc", O.Linear(_p(rng.normal(size=(2, 3))), None), ("x",)),),
                       ("fc",))
    with pytest.raises(AuditError, match="nothing to audit"):
        audit_graph(no_neurons, torch.ones(1, 1, 3))
    neuron_to_output = Graph(
        (TensorSpec("x", (3,)),),
        (Node("fc", O.Linear(_p(rng.normal(size=(2, 3))), None), ("x",)),
         Node("n", O.IntegerLIF(d=4, norm=4.0), ("fc",)),
         Node("res", O.Add(), ("n", "fc"))),
        ("res",),
    )
    with pytest.raises(AuditError, match=r"nothing to audit: no neuron feeds a synaptic layer \(neuron layers: n"):
        audit_graph(neuron_to_output, torch.ones(1, 1, 3))
    assert issubclass(AuditError, SpikedeployError) and AuditError.exit_code == 2


def test_bad_spike_counts():
    g = _conv_graph()
    with pytest.raises(AuditError, match="missing for neuron layer"):
        audit_graph(g, torch.ones(1, 1, 2, 4, 4), spike_counts={})
    with pytest.raises(AuditError, match=r"'n' have shape \[1, 1, 2, 4\]"):
        audit_graph(g, torch.ones(1, 1, 2, 4, 4), spike_counts={"n": torch.ones(1, 1, 2, 4)})
    with pytest.raises(AuditError, match="expected T=2, B=1"):
        audit_graph(g, torch.ones(2, 1, 2, 4, 4), spike_counts={"n": torch.ones(1, 1, 2, 4, 4)})
    with pytest.raises(AuditError, match="non-negative integers"):
        audit_graph(g, None, spike_counts={"n": torch.full((1, 1, 2, 4, 4), 0.5)})


def test_lowered_graph_with_other_encoding_is_rejected():
    from spikedeploy.passes import ExpandSpikes

    g = ExpandSpikes("graded").apply(_conv_graph())
    assert audit_graph(g, torch.ones(1, 1, 2, 4, 4), encoding="graded").encoding == "graded"
    with pytest.raises(ConfigError, match="lowered to 'graded'"):
        audit_graph(g, torch.ones(1, 1, 2, 4, 4), encoding="binary")


def test_spike_consumer_without_a_rule_is_named_not_dropped():
    from dataclasses import dataclass

    @dataclass(frozen=True, eq=False)
    class Mystery(O.Op):
        def infer_shape(self, s):
            return tuple(s)

    rng = np.random.default_rng(14)
    g = Graph(
        (TensorSpec("x", (2, 4, 4)),),
        (Node("n", O.IntegerLIF(d=D, norm=1.0), ("x",)),
         Node("layer", O.Conv2d(_p(rng.normal(size=(2, 2, 3, 3))), None, padding=(1, 1)), ("n",)),
         Node("odd", Mystery(), ("n",))),
        ("layer", "odd"),
    )
    q = _counts(rng, 1, 1, (2, 4, 4))
    rep = audit_graph(g, None, spike_counts={"n": q})
    assert rep.uncounted == ("node 'odd' (Mystery) reads spikes from n",)
    assert "Not counted" in rep.to_markdown() and json.loads(rep.to_json())["uncounted"]


def test_fanout_cache_gives_the_same_audit_and_follows_a_changed_op():
    """audit_graph(fanout_cache=...) — a tracker audits the same graph every frame — reuses the
    fan-out maps of unchanged ops only: the report equals the uncached one, also after one op of
    the graph is replaced (zeroed weights: fewer synapses)."""
    import dataclasses

    import numpy as np

    from spikedeploy import loading
    from spikedeploy.audit import audit_graph
    from spikedeploy.ir import ops as O

    loaded = loading.build_model("sdt-test", neuron="nilif", timesteps=1)
    graph = loading.prepare_graph(loaded, timesteps=1)
    x = loading.make_inputs(loaded, timesteps=1, num_inputs=2, seed=3)
    cache: dict = {}
    plain = audit_graph(graph, x)
    first = audit_graph(graph, x, fanout_cache=cache)
    again = audit_graph(graph, x, fanout_cache=cache)
    assert cache and plain.totals == first.totals == again.totals and plain.totals["per_frame"]["measured_synops"] > 0
    conv = next(n for n in graph.nodes if isinstance(n.op, O.Conv2d) and n.inputs[0] in {m.name for m in graph.neurons()})
    w = np.array(conv.op.weight)
    w[: w.shape[0] // 2] = 0
    changed = graph.replace_nodes([dataclasses.replace(n, op=dataclasses.replace(n.op, weight=w)) if n.name == conv.name
                                   else n for n in graph.nodes])
    cached = audit_graph(changed, x, fanout_cache=cache)
    fresh = audit_graph(changed, x)
    assert cached.totals == fresh.totals
    assert fresh.totals["per_frame"]["measured_synops"] < plain.totals["per_frame"]["measured_synops"]
