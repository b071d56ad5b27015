"""Op-count audit of SpikeTrack's memory ops and upsampling: MemoryRead (a synapse whose weights
are the cached template memory), MemoryWrite (k x v pair events) and Upsample (a synapse whose
weights are the interpolation matrix on spikes, host MACs on real values).

Single-op graphs put ``IntegerLIF(D=4, norm=1)`` neurons in front of the op, fed random integers in
0..4, so the spike counts q equal the inputs. The brute-force enumerators walk every unit spike
(every non-zero q), every memory cell / output position it reaches, one at a time, independently of
the fan-out maps the audit uses. The SpikeTrack S256-T1 branches (fixture weights) must audit with
nothing left uncounted.
"""

from __future__ import annotations

import collections
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from spikedeploy.audit import audit_graph, fanout_map, layer_flops
from spikedeploy.ir import Graph, Node, TensorSpec, ops as O

D = 4


def _counts(rng, T, B, shape, p_zero=0.4):
    q = rng.integers(1, D + 1, size=(T, B) + tuple(shape)).astype(np.float64)
    q[rng.random(q.shape) < p_zero] = 0
    return torch.tensor(q)


def _lif(name, src):
    return Node(name, O.IntegerLIF(d=D, norm=1.0), (src,))


def _single(op, in_shape, name="layer"):
    return Graph(inputs=(TensorSpec("x", tuple(in_shape)),), nodes=(_lif("n", "x"), Node(name, op, ("n",))),
                 outputs=(name,))


def _totals(rep, name="layer"):
    """(sequence SynOps, sequence graded events) of one row: exact integers."""
    row = rep.layer(name)
    return round(row.measured_synops * rep.n_inputs), round(row.graded_events * rep.n_inputs)


# ---------------------------------------------------------------------------------------------
# MemoryRead: a synapse with the memory as weights
# ---------------------------------------------------------------------------------------------


def _memory(rng, tm, heads, c, cv, p_zero=0.35):
    m = rng.normal(size=(tm, heads, c, cv))
    m[rng.random(m.shape) < p_zero] = 0.0
    m[0, 0, 0, :] = 0.0  # one all-zero row: its q spikes reach nothing
    return m


def brute_memory_read(q, memory, heads):
    """(unit SynOps, graded events): every unit spike of q at (t, b, channel, token) accumulates one
    entry into every output of its head's row that the memory connects with a non-zero entry."""
    q = q.numpy()
    tm, _, ch, cvh = memory.shape
    syn = ev = 0
    for t, b, c, n in zip(*np.nonzero(q)):
        h, row = divmod(int(c), ch)
        mt = t if tm > 1 else 0
        for j in range(cvh):
            if memory[mt, h, row, j] != 0:
                syn += int(q[t, b, c, n])  # one accumulate per unit spike
                ev += 1
    return syn, ev


MEMREAD_CASES = [
    # (heads, C/H, Cv/H, N, T, T_mem)
    (1, 4, 5, 6, 1, 1),
    (2, 3, 4, 5, 2, 1),
    (4, 2, 3, 7, 2, 2),   # one memory per macro-step
]


@pytest.mark.parametrize("heads,ch,cvh,n,T,tm", MEMREAD_CASES)
@pytest.mark.parametrize("encoding", ["binary", "graded"])
def test_memory_read_counts_equal_enumeration(heads, ch, cvh, n, T, tm, encoding):
    rng = np.random.default_rng(heads * 1000 + ch * 100 + cvh * 10 + n + tm)
    mem = _memory(rng, tm, heads, ch, cvh)
    assert (mem == 0).any() and (mem != 0).any()
    op = O.MemoryRead(memory=mem, num_heads=heads, scale=0.5)
    c = heads * ch
    q = _counts(rng, T, 2, (c, n))
    q[0, 0, 0, :] = 3  # spikes on the all-zero row
    rep = audit_graph(_single(op, (c, n)), q, encoding=encoding)
    assert rep.uncounted == ()
    syn, ev = brute_memory_read(q, mem, heads)
    assert syn > 0
    assert _totals(rep) == (syn, ev)
    row = rep.layer("layer")
    assert row.kind == "synapse" and not row.host and row.op == "MemoryRead"
    # the papers' estimate: FLOPs C * Cv * N / H x T x q's rate; the ratio is the zero-entry factor
    assert row.flops == layer_flops(op, (c, n), (heads * cvh, n)) == c * heads * cvh * n / heads
    rate = float(q.sum()) / q.numel()
    assert row.theoretical_ops == pytest.approx(row.flops * T * rate, rel=1e-12)
    assert row.border_factor == pytest.approx(1.0, rel=1e-12)
    assert row.zero_weight_factor == pytest.approx(syn / (float(q.sum()) * cvh), rel=1e-12)
    assert row.ratio == pytest.approx(row.zero_weight_factor, rel=1e-12)
    assert "zero memory entries" in row.explanation


def test_memory_read_fanout_is_nonzero_entries_per_row():
    rng = np.random.default_rng(7)
    mem = _memory(rng, 1, 2, 3, 4)
    op = O.MemoryRead(memory=mem, num_heads=2)
    f = fanout_map(op, (6, 5), (8, 5))
    assert f.shape == (6, 5)
    for c in range(6):
        h, r = divmod(c, 3)
        assert (f[c] == np.count_nonzero(mem[0, h, r])).all()
    assert (fanout_map(op, (6, 5), (8, 5), nonzero_only=False) == 4).all()
    f2 = fanout_map(O.MemoryRead(memory=_memory(rng, 2, 2, 3, 4), num_heads=2), (6, 5), (8, 5))
    assert f2.shape == (2, 1, 6, 5)  # one map per macro-step


@pytest.mark.parametrize("tm", [1, 2])
def test_zeroing_one_memory_entry_lowers_synops_by_its_uses(tm):
    """A memory entry memory[t, h, r, j] is used once per unit spike of q channel h*C/H + r (at every
    token, every input; at step t only when the memory has one entry per step)."""
    rng = np.random.default_rng(11 + tm)
    heads, ch, cvh, n, T = 2, 3, 4, 6, 2
    mem = rng.normal(size=(tm, heads, ch, cvh))  # all entries non-zero
    q = _counts(rng, T, 3, (heads * ch, n), p_zero=0.3)
    base = audit_graph(_single(O.MemoryRead(memory=mem, num_heads=heads), (heads * ch, n)), q, encoding="binary")
    assert _totals(base)[0] == float(q.sum()) * cvh
    t_e, h_e, r_e, j_e = tm - 1, 1, 2, 3
    c_e = h_e * ch + r_e
    uses = int(q[t_e, :, c_e, :].sum()) if tm > 1 else int(q[:, :, c_e, :].sum())
    assert uses > 0
    mem0 = mem.copy()
    mem0[t_e, h_e, r_e, j_e] = 0.0
    rep = audit_graph(_single(O.MemoryRead(memory=mem0, num_heads=heads), (heads * ch, n)), q, encoding="binary")
    syn0, ev0 = _totals(base)
    syn1, ev1 = _totals(rep)
    assert syn0 - syn1 == uses
    events = int((q[t_e, :, c_e, :] > 0).sum()) if tm > 1 else int((q[:, :, c_e, :] > 0).sum())
    assert ev0 - ev1 == events
    # the estimate does not see the zero: the ratio drops by exactly uses / estimate
    assert rep.layer("layer").theoretical_ops == base.layer("layer").theoretical_ops
    assert base.layer("layer").ratio == pytest.approx(1.0, rel=1e-12)


# ---------------------------------------------------------------------------------------------
# MemoryWrite: k x v pair events
# ---------------------------------------------------------------------------------------------


def brute_memory_write(k, v, heads):
    """(pair events, graded pair events): every unit spike of k and every unit spike of v of the
    same head on the same token increment one memory cell, one pair at a time."""
    k, v = k.numpy(), v.numpy()
    T, B, C, N = k.shape
    ch, cvh = C // heads, v.shape[2] // heads
    pairs = pairs_g = 0
    for t, b, i, n in zip(*np.nonzero(k)):
        h = i // ch
        for j in range(h * cvh, (h + 1) * cvh):
            for _ in range(int(k[t, b, i, n])):
                for _ in range(int(v[t, b, j, n])):
                    pairs += 1
            pairs_g += int(v[t, b, j, n] > 0)
    return pairs, pairs_g


def _write_graph(c, cv, n, heads):
    return Graph(
        inputs=(TensorSpec("xk", (c, n)), TensorSpec("xv", (cv, n))),
        nodes=(_lif("k", "xk"), _lif("v", "xv"), Node("mw", O.MemoryWrite(num_heads=heads, scale=0.125), ("k", "v"))),
        outputs=("mw",),  # the template memory is a graph output: nothing else reads the spikes
    )


@pytest.mark.parametrize("c,cv,n,heads", [(4, 4, 5, 1), (6, 4, 7, 2), (8, 12, 3, 4)])
@pytest.mark.parametrize("encoding", ["binary", "graded"])
def test_memory_write_counts_equal_enumeration(c, cv, n, heads, encoding):
    rng = np.random.default_rng(c * 100 + cv * 10 + n + 5)
    T, B = 2, 2
    x = {"xk": _counts(rng, T, B, (c, n)), "xv": _counts(rng, T, B, (cv, n))}
    rep = audit_graph(_write_graph(c, cv, n, heads), x, encoding=encoding)
    assert rep.uncounted == ()
    pairs, pairs_g = brute_memory_write(x["xk"], x["xv"], heads)
    assert pairs > 0
    assert _totals(rep, "mw") == (pairs, pairs_g)
    row = rep.layer("mw")
    assert row.kind == "attention" and row.source == "k × v" and row.op == "MemoryWrite [kᵀv]"
    assert row.flops == c * cv * n / heads
    rate_k = float(x["xk"].sum()) / x["xk"].numel()
    assert row.theoretical_ops == pytest.approx(row.flops * T * rate_k, rel=1e-12)
    assert rep.totals["per_sequence"]["measured_synops"] == pairs


# ---------------------------------------------------------------------------------------------
# Upsample: the interpolation matrix as weights
# ---------------------------------------------------------------------------------------------


def brute_upsample(q, op):
    """(unit SynOps, graded events): every unit spike at (t, b, c, y, x) reaches the output
    positions where the interpolation of a unit impulse at (y, x) is non-zero."""
    qn = q.numpy()
    _, _, _, hi, wi = qn.shape
    ac = op.align_corners if op.mode == "bilinear" else None
    cache = {}
    syn = ev = 0
    for t, b, c, y, x in zip(*np.nonzero(qn)):
        if (y, x) not in cache:
            imp = torch.zeros((1, 1, hi, wi), dtype=torch.float64)
            imp[0, 0, y, x] = 1.0
            out = F.interpolate(imp, size=tuple(op.size), mode=op.mode, align_corners=ac)
            cache[(y, x)] = int((out != 0).sum())
        syn += int(qn[t, b, c, y, x]) * cache[(y, x)]
        ev += cache[(y, x)]
    return syn, ev


UPSAMPLE_CASES = [
    # (mode, align_corners, (H, W), size)
    ("bilinear", False, (4, 5), (8, 10)),     # x2
    ("bilinear", False, (4, 4), (16, 16)),    # x4 (SpikeTrack's retriever)
    ("bilinear", False, (5, 7), (12, 9)),     # non-integer scales
    ("bilinear", False, (8, 9), (3, 5)),      # downsampling: some inputs reach nothing
    ("bilinear", True, (4, 5), (7, 13)),      # align_corners: exact zero weights on the grid
    ("nearest", False, (4, 5), (8, 10)),
    ("nearest", False, (5, 7), (12, 9)),
    ("nearest", False, (8, 9), (3, 5)),
]


@pytest.mark.parametrize("mode,ac,hw,size", UPSAMPLE_CASES)
@pytest.mark.parametrize("encoding", ["binary", "graded"])
def test_upsample_counts_equal_enumeration(mode, ac, hw, size, encoding):
    rng = np.random.default_rng(hw[0] * 100 + size[0] * 10 + size[1] + int(ac))
    C, T, B = 3, 2, 2
    op = O.Upsample(size=size, mode=mode, align_corners=ac)
    q = _counts(rng, T, B, (C,) + hw)
    rep = audit_graph(_single(op, (C,) + hw), q, encoding=encoding)
    assert rep.uncounted == ()
    syn, ev = brute_upsample(q, op)
    assert syn > 0
    assert _totals(rep) == (syn, ev)
    row = rep.layer("layer")
    assert row.kind == "synapse" and not row.host
    taps = 4 if mode == "bilinear" else 1
    assert row.flops == C * size[0] * size[1] * taps
    rate = float(q.sum()) / q.numel()
    assert row.theoretical_ops == pytest.approx(row.flops * T * rate, rel=1e-12)
    # no weights to zero: the whole ratio is the position (border / merged-tap) factor
    assert row.zero_weight_factor == pytest.approx(1.0, rel=1e-12)
    # every output has taps non-zero weights in all: the fan-out map sums to C * H_out * W_out * taps
    # (bilinear taps that fall on the same clamped border pixel merge, so <= for bilinear)
    f = fanout_map(op, (C,) + hw, (C,) + size)
    if mode == "nearest":
        assert float(f.sum()) == C * size[0] * size[1]
    else:
        assert float(f.sum()) <= row.flops


def test_upsample_on_real_values_is_host_macs():
    C, hw, size = 2, (3, 4), (6, 8)
    w = np.ones((C, C, 1, 1))
    g = Graph(
        inputs=(TensorSpec("x", (C,) + hw),),
        nodes=(_lif("n", "x"), Node("conv", O.Conv2d(weight=O.as_param(w)), ("n",)),
               Node("up", O.Upsample(size=size), ("conv",))),
        outputs=("up",),
    )
    q = _counts(np.random.default_rng(3), 2, 2, (C,) + hw)
    rep = audit_graph(g, q, encoding="binary")
    assert rep.uncounted == ()
    up = rep.layer("up")
    assert up.kind == "host" and up.host
    assert up.macs == C * size[0] * size[1] * 4 * 2  # FLOPs x T
    assert rep.totals["per_frame"]["host_macs"] == up.macs


# ---------------------------------------------------------------------------------------------
# SpikeTrack S256-T1: both branches audit with nothing uncounted
# ---------------------------------------------------------------------------------------------

FIXTURES = Path(__file__).resolve().parents[2].parent / "shared" / "fixtures" / "spiketrack"
S256 = FIXTURES / "s256-t1"
_HAVE_FIXTURES = (S256 / "reference.npz").is_file() and (FIXTURES / "make_weights.py").is_file()


@pytest.fixture(scope="module")
def spiketrack_reports(s256_model, s256_inputs):
    from spikedeploy.capture import capture

    model = s256_model
    xt, xs, ref = s256_inputs
    with torch.no_grad():
        memory = model.template_branch(xt)
    gt = capture(model.template_net(), xt, name="spiketrack-s256-t1/template")
    gs = capture(model.search_net(memory), xs, name="spiketrack-s256-t1/search")
    # graded encoding: the same counts as binary (the lowering is exact), one event per neuron
    return {
        "template": (gt, audit_graph(gt, xt.double(), encoding="graded", profile="45nm")),
        "search": (gs, audit_graph(gs, xs.double(), encoding="graded", profile="45nm")),
    }


@pytest.mark.slow
@pytest.mark.skipif(not _HAVE_FIXTURES, reason="SpikeTrack fixtures (../shared/fixtures/spiketrack) are not present")
@pytest.mark.parametrize("branch", ["search", "template"])
def test_spiketrack_branches_audit_with_nothing_uncounted(spiketrack_reports, branch):
    graph, rep = spiketrack_reports[branch]
    assert rep.uncounted == ()
    # spikes in every layer: every neuron fires and every spike-fed row counts ops
    assert rep.neuron_layers and all(l.firing_rate > 0 for l in rep.neuron_layers)
    assert rep.spike_layers and all(l.measured_synops > 0 for l in rep.spike_layers)
    by_op = collections.Counter(l.op for l in rep.layers)
    if branch == "search":
        assert by_op["MemoryRead"] == 12
        reads = [l for l in rep.layers if l.op == "MemoryRead"]
        assert all(l.kind == "synapse" and 0 < l.zero_weight_factor <= 1 for l in reads)
        ups = [l for l in rep.layers if l.op == "Upsample"]
        assert ups and all(l.host for l in ups)  # the retriever upsamples a convolution's output
        assert by_op["SpikeLinearAttention [kv]"] > 0
    else:
        assert by_op["MemoryWrite [kᵀv]"] == 6
        assert {l.name for l in rep.layers if l.op == "MemoryWrite [kᵀv]"} == set(graph.outputs)
    f = rep.totals["per_frame"]
    assert f["measured_synops"] > 0 and f["theoretical_ops"] > 0
    print(f"\nSpikeTrack S256-T1 {branch} branch, per frame (45 nm): measured SynOps {f['measured_synops']:,.0f}, "
          f"theoretical {f['theoretical_ops']:,.1f}, ratio {f['ratio']:.4f}, host MACs {f['host_macs']:,.0f}, "
          f"energy measured {f['energy_pj'] / 1e9:.4f} mJ (SynOps {f['energy_synops_pj'] / 1e9:.4f} mJ + "
          f"MACs {f['energy_macs_pj'] / 1e9:.4f} mJ), papers' method {f['theoretical_energy_pj'] / 1e9:.4f} mJ")
    for l in rep.layers:
        if l.op.startswith(("Memory", "Upsample")):
            print(f"  {l.name}: {l.op} measured {l.measured_synops:,.0f} theoretical {l.theoretical_ops:,.1f} "
                  f"ratio {l.ratio:.4f}")
