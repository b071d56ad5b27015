"""Spike-driven Hamming attention in the IR (issue 17 step 2): the ops ``SpikeHammingAttention`` /
``SpikeDotAttention`` (space-time token groups), their reference rule against a brute-force
enumeration (integer, binary and graded modes; binary spikes and integer counts), capture, the
1/(2d) scale folded into the next binary LIF's threshold (exact, proved in ``FoldedScaleLIF``),
the audit's event counts against brute force, the ONNX rule, NIR extension nodes, the Lava
refusal and the streaming refusal. Every comparison is exact (integers below 2**53 in float64)."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import torch
from torch import nn

from spikedeploy.audit import audit_graph, space_time_attention_events
from spikedeploy.capture import capture
from spikedeploy.errors import ConfigError, UnsupportedOpError
from spikedeploy.ir import ops as O
from spikedeploy.ir.graph import Graph, Node, TensorSpec, validate
from spikedeploy.ir.serialize import graph_from_json, graph_to_json
from spikedeploy.models.neurons import BinaryLIF
from spikedeploy.models.spikevideoformer_blocks import FoldedScaleLIF
from spikedeploy.models.spikevideoformer_blocks import SpikeDotAttention as DotModule
from spikedeploy.models.spikevideoformer_blocks import SpikeHammingAttention as SDHAModule
from spikedeploy.reference import execute

GROUPINGS = ("joint", "spatial", "temporal", "factorized")


# ---------------------------------------------------------------------------------------------
# brute force
# ---------------------------------------------------------------------------------------------


def _groups(T, N, heads, mode):
    """For each head, its token groups ``[[(t, n), ...], ...]`` of one sample."""
    out = []
    for h in range(heads):
        m = mode if mode != "factorized" else ("spatial" if h < heads // 2 else "temporal")
        if m == "joint":
            out.append([[(t, n) for t in range(T) for n in range(N)]])
        elif m == "spatial":
            out.append([[(t, n) for n in range(N)] for t in range(T)])
        else:
            out.append([[(t, n) for t in range(T)] for n in range(N)])
    return out


def brute_attention(q, k, v, heads, mode, score):
    """``y_i = sum_j s(q_i, k_j) v_j`` over the group of token i, with ``s = (2q - 1).(2k - 1)``
    (hamming; for binary vectors ``d - 2 Hamming``) or ``q.k`` (dot), int64 ``[T, B, Cv, N]``."""
    q, k, v = (np.asarray(x, dtype=np.int64) for x in (q, k, v))
    T, B, C, N = q.shape
    d, dv = C // heads, v.shape[2] // heads
    out = np.zeros((T, B, v.shape[2], N), np.int64)
    for b in range(B):
        for h, groups in enumerate(_groups(T, N, heads, mode)):
            cs, vs = slice(h * d, (h + 1) * d), slice(h * dv, (h + 1) * dv)
            for group in groups:
                for ti, ni in group:
                    acc = np.zeros(dv, np.int64)
                    for tj, nj in group:
                        qi, kj = q[ti, b, cs, ni], k[tj, b, cs, nj]
                        s = int((2 * qi - 1) @ (2 * kj - 1)) if score == "hamming" else int(qi @ kj)
                        acc += s * v[tj, b, vs, nj]
                    out[ti, b, vs, ni] = acc
    return out


def brute_events(q, k, v, heads, mode, score):
    """Every spike event of the counting form, enumerated one by one per token group (unit counts,
    per macro-step): k·v pairs, v spikes (column counts), q row reads (dv each), and the
    spike-independent accumulates (M and 1^T M per group at its last step, 1^T M subtracted from
    every output element)."""
    q, k, v = (np.asarray(x, dtype=np.int64) for x in (q, k, v))
    T, B, C, N = q.shape
    d, dv = C // heads, v.shape[2] // heads
    ev = {key: np.zeros(T, np.int64) for key in ("kv", "v", "qm", "dense")}
    for b in range(B):
        for h, groups in enumerate(_groups(T, N, heads, mode)):
            for group in groups:
                for t, n in group:
                    for ci in range(h * d, (h + 1) * d):
                        for cj in range(h * dv, (h + 1) * dv):
                            for _ in range(k[t, b, ci, n] * v[t, b, cj, n]):  # each pair of unit spikes
                                ev["kv"][t] += 1
                    for cj in range(h * dv, (h + 1) * dv):
                        ev["v"][t] += v[t, b, cj, n]
                    for ci in range(h * d, (h + 1) * d):
                        for _ in range(q[t, b, ci, n]):
                            ev["qm"][t] += dv  # one row of dv cells per q unit spike
                    ev["dense"][t] += dv  # - 1^T M for this token's dv outputs
                last = max(t for t, _ in group)
                ev["dense"][last] += 2 * d * dv  # M = 2 kv - 1^T v, and 1^T M
    if score != "hamming":
        del ev["v"], ev["dense"]
    return ev


def _spikes(shape, rate, seed, high=1):
    g = torch.Generator().manual_seed(seed)
    if high == 1:
        return (torch.rand(shape, generator=g) < rate).to(torch.float64)
    return torch.randint(0, high + 1, shape, generator=g).to(torch.float64) * (torch.rand(shape, generator=g) < rate)


def _graph(op, C, Cv, N, neuron=None):
    """Inputs q, k, v -> one neuron each (identity on {0, 1} or on counts) -> the attention -> out."""
    neuron = neuron or O.BinaryLIF(beta=0.0, threshold=0.5)
    inputs = (TensorSpec("q", (C, N)), TensorSpec("k", (C, N)), TensorSpec("v", (Cv, N)))
    nodes = [Node(f"{s}_spike", neuron, (s,)) for s in "qkv"]
    nodes.append(Node("attn", op, ("q_spike", "k_spike", "v_spike")))
    g = Graph(inputs=inputs, nodes=tuple(nodes), outputs=("attn",))
    validate(g)
    return g


def _counts_neuron(D):
    """Stateless integer neuron emitting q = round(clamp(x, 0, D)) as is (norm 1): counts in, counts out."""
    return O.IntegerLIF(d=D, norm=1.0)


# ---------------------------------------------------------------------------------------------
# the op
# ---------------------------------------------------------------------------------------------


def test_op_fields_checks_and_round_trip():
    op = O.SpikeHammingAttention(num_heads=4, tokens="factorized", scale=0.25)
    assert op.score == "hamming" and O.SpikeDotAttention(2).score == "dot"
    assert op.head_groupings() == ("spatial", "spatial", "temporal", "temporal")
    assert {t: O.SpikeHammingAttention(2, t).mixes_steps for t in GROUPINGS} == {
        "joint": True, "spatial": False, "temporal": True, "factorized": True}
    assert op.infer_shape((8, 5), (8, 5), (12, 5)) == (12, 5)
    with pytest.raises(ValueError, match="even num_heads"):
        O.SpikeHammingAttention(3, "factorized")
    with pytest.raises(ValueError, match="tokens must be one of"):
        O.SpikeHammingAttention(2, "diagonal")
    with pytest.raises(ValueError, match="num_heads"):
        O.SpikeDotAttention(0)
    with pytest.raises(ValueError, match="divisible"):
        op.infer_shape((6, 5), (6, 5), (8, 5))
    with pytest.raises(ValueError, match="needs q, k"):
        op.infer_shape((8, 5), (8, 4), (8, 5))
    g = _graph(op, 8, 12, 5)
    desc, arrays = graph_to_json(g)
    back = graph_from_json(desc, arrays)
    a = back.node("attn").op
    assert type(a) is O.SpikeHammingAttention and (a.num_heads, a.tokens, a.scale) == (4, "factorized", 0.25)


# ---------------------------------------------------------------------------------------------
# reference = brute force
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("score", ["hamming", "dot"])
@pytest.mark.parametrize("mode", GROUPINGS)
def test_reference_equals_brute_force_on_binary_spikes(mode, score):
    """Integer, binary and graded modes give the brute-force integer exactly (scale 1), and scale
    is applied once afterwards."""
    T, B, C, Cv, N, heads = 3, 2, 8, 12, 5, 4
    q, k, v = _spikes((T, B, C, N), 0.4, 1), _spikes((T, B, C, N), 0.5, 2), _spikes((T, B, Cv, N), 0.3, 3)
    expect = torch.from_numpy(brute_attention(q, k, v, heads, mode, score)).double()
    assert expect.abs().max() > 0
    cls = O.SpikeHammingAttention if score == "hamming" else O.SpikeDotAttention
    g = _graph(cls(num_heads=heads, tokens=mode), C, Cv, N)
    for run_mode in ("integer", "binary", "graded"):
        r = execute(g, {"q": q, "k": k, "v": v}, run_mode)
        assert torch.equal(r.outputs["attn"], expect), run_mode
    scaled = execute(_graph(cls(num_heads=heads, tokens=mode, scale=1 / 24), C, Cv, N), {"q": q, "k": k, "v": v})
    assert torch.equal(scaled.outputs["attn"], expect * (1 / 24))


@pytest.mark.parametrize("mode", ["joint", "factorized"])
def test_reference_on_integer_counts(mode):
    """Counts q, k, v in {0..3} (an integer LIF with D = 3): the op is the formula on the counts,
    (2Q - 1)[(2K - 1)^T V]; spike lowering (q unit spikes in 3 sub-steps, or graded) equals it."""
    T, B, C, Cv, N, heads = 3, 2, 8, 8, 4, 2
    q, k, v = (_spikes((T, B, c, N), 0.6, s, high=3) for c, s in ((C, 4), (C, 5), (Cv, 6)))
    assert q.max() == 3
    expect = torch.from_numpy(brute_attention(q, k, v, heads, mode, "hamming")).double()
    g = _graph(O.SpikeHammingAttention(num_heads=heads, tokens=mode), C, Cv, N, neuron=_counts_neuron(3))
    for run_mode in ("integer", "binary", "graded"):
        assert torch.equal(execute(g, {"q": q, "k": k, "v": v}, run_mode).outputs["attn"], expect), run_mode


# ---------------------------------------------------------------------------------------------
# capture and the scale
# ---------------------------------------------------------------------------------------------


class _Block(nn.Module):
    def __init__(self, core, neuron):
        super().__init__()
        self.q, self.k, self.v = BinaryLIF(0.5, 0.7), BinaryLIF(0.5, 0.6), BinaryLIF(0.5, 0.8)
        self.core, self.neuron = core, neuron

    def forward(self, x):
        return self.neuron(self.core(self.q(x), self.k(x * 1.3), self.v(x * 0.9)))


@pytest.mark.parametrize("mode", GROUPINGS)
def test_capture_is_bit_exact(mode):
    """SDHA (unscaled, with the folded neuron; and scaled with the plain neuron) and the dot product
    capture to one op each; the reference reproduces PyTorch's float64 output bit for bit."""
    T, B, C, N, heads = 6, 2, 20, 7, 2  # d = 10: the scale 1/20 is not a power of two
    x = torch.randn(T, B, C, N, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    for core, neuron, kind, scale in (
        (SDHAModule(heads, mode, scaled=False), FoldedScaleLIF(0.5, 1.0, 2 * C // heads), O.SpikeHammingAttention, 1.0),
        (SDHAModule(heads, mode), BinaryLIF(0.5, 1.0), O.SpikeHammingAttention, 1 / 20),
        (DotModule(heads, mode, scale=0.125), BinaryLIF(0.5, 1.0), O.SpikeDotAttention, 0.125),
    ):
        m = _Block(core, neuron).eval()
        g = capture(m, torch.zeros(T, 1, C, N, dtype=torch.float64))
        attn = [n for n in g.nodes if isinstance(n.op, O.SPACE_TIME_ATTENTION_OPS)]
        assert len(attn) == 1 and type(attn[0].op) is kind
        assert (attn[0].op.tokens, attn[0].op.num_heads, attn[0].op.scale) == (mode, heads, scale)
        with torch.no_grad():
            expect = m(x)
        r = execute(g, x)
        assert torch.equal(r.outputs[g.outputs[0]], expect)
        assert 0 < float(expect.mean()) < 1
        if isinstance(neuron, FoldedScaleLIF):
            lif = [n for n in g.nodes if n.op.is_neuron][-1].op
            assert lif.threshold == 2 * (C // heads) * 1.0  # the 1/(2d) folded into the threshold


def _exact_binary_lif(xs, beta, threshold):
    """The binary LIF in exact rational arithmetic (Fractions), one neuron."""
    u, out = Fraction(0), []
    for x in xs:
        h = beta * u + x
        s = 1 if h > threshold else 0
        out.append(s)
        u = h - threshold * s
    return out


def test_scale_folding_is_exact():
    """SN(X / 2d) with threshold u_th (unfolded) and SN_2D(X) with threshold 2d u_th (folded) are
    the same neuron (FoldedScaleLIF's proof): checked in exact rational arithmetic for d = 20
    (scale 1/40, not a power of two) on integer brackets over 8 frames. The float64 folded neuron
    equals the exact spikes everywhere; the float64 unfolded neuron (X * (1/40)) does not -- the
    reason the model computes the folded form."""
    g = torch.Generator().manual_seed(0)
    factor, beta, u_th = 40, Fraction(1, 2), Fraction(1)
    X = (torch.randint(-60, 60, (8, 3000), generator=g) * 2).double()
    folded = FoldedScaleLIF(0.5, 1.0, factor)(X)
    unfolded_float = BinaryLIF(0.5, 1.0)(X * (1.0 / factor))
    cols = [[int(v) for v in X[:, j]] for j in range(X.shape[1])]
    exact_unfolded = torch.tensor([_exact_binary_lif([Fraction(x, factor) for x in c], beta, u_th) for c in cols]).T
    exact_folded = torch.tensor([_exact_binary_lif([Fraction(x) for x in c], beta, factor * u_th) for c in cols]).T
    assert torch.equal(exact_unfolded, exact_folded)  # the homogeneity proof, in exact arithmetic
    assert torch.equal(folded, exact_folded.double())  # the float64 folded neuron is exact
    assert int((unfolded_float != folded).sum()) > 0  # the rounded scale fires at exact ties
    assert 0.1 < float(folded.mean()) < 0.9
    # a leak that does not multiply the residual breaks it: a constant leak current -c per step
    # (H = beta U + X - c) folds only with c scaled too -- here c is not, and the spikes differ
    differ = 0
    for c in cols[:300]:
        xs = [Fraction(x) for x in c]
        leaky_unfolded = _exact_binary_lif([x / factor - Fraction(1, 10) for x in xs], beta, u_th)
        leaky_folded_wrong = _exact_binary_lif([x - Fraction(1, 10) for x in xs], beta, factor * u_th)
        leaky_folded_right = _exact_binary_lif([x - Fraction(factor, 10) for x in xs], beta, factor * u_th)
        assert leaky_unfolded == leaky_folded_right
        differ += leaky_unfolded != leaky_folded_wrong
    assert differ > 0


def test_folded_neuron_trains_as_the_unfolded_one():
    """The surrogate gradient of FoldedScaleLIF on X is the unfolded BinaryLIF's on X / 2d."""
    X = (torch.randint(-30, 30, (6, 400), generator=torch.Generator().manual_seed(1)) * 2).double()
    x1, x2 = X.clone().requires_grad_(), X.clone().requires_grad_()
    w = torch.randn(6, 400, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    s1 = FoldedScaleLIF(0.5, 1.0, 32)(x1)
    s2 = BinaryLIF(0.5, 1.0)(x2 / 32)
    (s1 * w).sum().backward()
    (s2 * w).sum().backward()
    assert torch.equal(s1.detach(), s2.detach())  # 1/32 is a power of two: both exact
    assert torch.equal(x1.grad, x2.grad) and x1.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="factor"):
        FoldedScaleLIF(0.5, 1.0, 0)


# ---------------------------------------------------------------------------------------------
# audit = brute force
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("score", ["hamming", "dot"])
@pytest.mark.parametrize("mode", GROUPINGS)
def test_audit_counts_equal_brute_force(mode, score):
    T, B, C, Cv, N, heads = 3, 2, 8, 12, 5, 4
    q, k, v = _spikes((T, B, C, N), 0.4, 11), _spikes((T, B, C, N), 0.5, 12), _spikes((T, B, Cv, N), 0.3, 13)
    cls = O.SpikeHammingAttention if score == "hamming" else O.SpikeDotAttention
    op = cls(num_heads=heads, tokens=mode)
    brute = brute_events(q, k, v, heads, mode, score)
    ev = space_time_attention_events(op, q, k, v)
    assert set(ev) == set(brute)
    for key in brute:
        assert np.array_equal(ev[key][0], brute[key]), key
        assert brute[key].sum() > 0
    # the same counts in the audit report of the graph, per frame (averaged over the B inputs)
    rep = audit_graph(_graph(op, C, Cv, N), {"q": q, "k": k, "v": v})
    rows = {r.name.split(" ", 1)[1]: r for r in rep.layers if r.kind == "attention"}
    names = {"kv": "[kᵀv]", "v": "[1ᵀv]", "qm": "[q·M]" if score == "hamming" else "[q·kv]", "dense": "[M, 1ᵀM]"}
    assert set(rows) == {names[key] for key in brute}
    for key, b in brute.items():
        assert rows[names[key]].measured_synops == b.sum() / B
    # the papers' estimate: FLOPs = C Cv N / H per product, x T x rate
    kv = rows["[kᵀv]"]
    assert kv.flops == C * Cv * N // heads and kv.theoretical_ops == pytest.approx(kv.flops * T * float(k.mean()))


def test_audit_counts_integer_counts():
    """Counts in {0..3}: pairs multiply (each pair of unit spikes is one increment), graded events
    count non-zero entries."""
    T, B, C, N, heads = 2, 1, 4, 3, 2
    q, k, v = (_spikes((T, B, C, N), 0.7, s, high=3) for s in (21, 22, 23))
    op = O.SpikeHammingAttention(num_heads=heads, tokens="joint")
    brute = brute_events(q, k, v, heads, "joint", "hamming")
    ev = space_time_attention_events(op, q, k, v)
    for key in brute:
        assert np.array_equal(ev[key][0], brute[key]), key
    assert ev["qm"][1].sum() == int((q > 0).sum()) * (C // heads)


# ---------------------------------------------------------------------------------------------
# backends and streaming
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", GROUPINGS)
def test_onnx_equals_reference(mode):
    from spikedeploy.exporters.onnx import OnnxArtifact, build_model, read_metadata
    from spikedeploy.runtimes.onnx import run as onnx_run

    T, B, C, Cv, N, heads = 3, 2, 8, 12, 5, 4
    x = {"q": _spikes((T, B, C, N), 0.4, 31), "k": _spikes((T, B, C, N), 0.5, 32), "v": _spikes((T, B, Cv, N), 0.3, 33)}
    for op in (O.SpikeHammingAttention(heads, mode), O.SpikeHammingAttention(heads, mode, scale=1 / 24),
               O.SpikeDotAttention(heads, mode, scale=0.125)):
        g = _graph(op, C, Cv, N)
        ref = execute(g, x)
        model = build_model(g, timesteps=T)
        import onnx

        onnx.checker.check_model(model)
        out = onnx_run(OnnxArtifact(model=model, metadata=read_metadata(model)), x)
        assert torch.equal(out.outputs["attn"], ref.outputs["attn"]), op


def test_nir_extension_node_and_refusal(tmp_path):
    from spikedeploy.exporters import nir as nir_export
    from spikedeploy.passes.expand import ExpandSpikes
    from spikedeploy.runtimes import nir as nir_runtime

    T, B, C, Cv, N, heads = 3, 2, 8, 12, 5, 4
    x = {"q": _spikes((T, B, C, N), 0.4, 41), "k": _spikes((T, B, C, N), 0.5, 42), "v": _spikes((T, B, Cv, N), 0.3, 43)}
    g = ExpandSpikes("binary").apply(_graph(O.SpikeHammingAttention(heads, "joint"), C, Cv, N))
    path = tmp_path / "sdha.nir"
    nir_export.export(g, path, encoding="binary")
    art = nir_export.load(path)
    assert type(art.graph.node("attn").op) is O.SpikeHammingAttention
    out = nir_runtime.run(art, x)
    assert torch.equal(out.outputs["attn"], execute(g, x, "binary").outputs["attn"])
    with pytest.raises(UnsupportedOpError, match=r"SpikeHammingAttention at node 'attn'.*joint token groups"):
        nir_export.export(g, tmp_path / "strict.nir", encoding="binary", extensions=False)


def test_lava_refuses_sdha_by_name():
    from spikedeploy.exporters.lava import compile_graph

    g = _graph(O.SpikeHammingAttention(2, "joint"), 4, 4, 3)
    # Lava has a process for it now (tests/runtimes/test_lava_sdha.py); without a fixed T it refuses by name
    with pytest.raises(UnsupportedOpError, match=r"'lava' cannot express op SpikeHammingAttention at node 'attn'.*T frames"):
        compile_graph(g, "binary")


def test_streaming_refuses_step_mixing_attention():
    """Joint / temporal / factorized attention reads every frame's keys and values: refused by
    name; spatial attention streams (T calls of one step = one call of T steps)."""
    from spikedeploy.streaming import StepMixingError, open_stream

    T, B, C, N = 4, 2, 8, 5
    for mode in ("joint", "temporal", "factorized"):
        g = _graph(O.SpikeHammingAttention(2, mode), C, C, N, neuron=O.BinaryLIF(beta=0.5, threshold=0.7))
        with pytest.raises(StepMixingError, match=f"node 'attn' \\(SpikeHammingAttention, tokens='{mode}'\\)"):
            open_stream(g, "reference")
        assert issubclass(StepMixingError, ConfigError)
    g = _graph(O.SpikeHammingAttention(2, "spatial"), C, C, N, neuron=O.BinaryLIF(beta=0.5, threshold=0.7))
    x = {s: torch.rand(T, B, C, N, generator=torch.Generator().manual_seed(i), dtype=torch.float64)
         for i, s in enumerate("qkv")}
    whole = execute(g, x, "binary")
    with open_stream(g, "reference", mode="binary") as stream:
        steps = [stream.step({s: x[s][t:t + 1] for s in "qkv"}).outputs["attn"] for t in range(T)]
    assert torch.equal(torch.cat(steps), whole.outputs["attn"]) and whole.outputs["attn"].abs().sum() > 0


def test_fold_attention_scale_pass():
    """A captured stand-alone SDHA that multiplies by 1/(2d) (here 1/20) followed by a binary LIF:
    the pass makes the op emit the integer and the neuron's threshold 20 u_th exactly; the folded
    graph equals the folded PyTorch form (FoldedScaleLIF) bit for bit. An attention read by
    anything but binary LIFs keeps its scale."""
    from spikedeploy.passes.fold_scale import FoldAttentionScale

    T, B, C, N, heads = 6, 2, 20, 7, 2
    x = torch.randn(T, B, C, N, generator=torch.Generator().manual_seed(17), dtype=torch.float64)
    scaled = _Block(SDHAModule(heads, "joint"), BinaryLIF(0.5, 1.0)).eval()
    folded_torch = _Block(SDHAModule(heads, "joint", scaled=False), FoldedScaleLIF(0.5, 1.0, 20)).eval()
    g = capture(scaled, torch.zeros(T, 1, C, N, dtype=torch.float64))
    f = FoldAttentionScale().apply(g)
    attn = [n for n in f.nodes if isinstance(n.op, O.SpikeHammingAttention)][0]
    lif = f.consumers()[attn.name][0].op
    assert attn.op.scale == 1.0 and lif.threshold == 20.0
    with torch.no_grad():
        expect = folded_torch(x)
    for mode in ("integer", "binary"):
        assert torch.equal(execute(f, x, mode).outputs[f.outputs[0]], expect)
    assert 0 < float(expect.mean()) < 1
    # read by something else (a graph output): unchanged
    g2 = _graph(O.SpikeHammingAttention(2, "joint", scale=0.05), 4, 4, 3)
    assert FoldAttentionScale().apply(g2).node("attn").op.scale == 0.05
