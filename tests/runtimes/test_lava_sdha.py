"""SpikeVideoFormer's space-time attention on Lava (issue 17 step 3): SDHA (``M = 2K^T V - 1^T V``,
``Y = 2QM - 1^T M``) and the dot product over joint / spatial / temporal / factorized token groups.

* the ``st_*`` kernels of :mod:`spikedeploy.runtimes.lava_kernels`, driven through a sample's
  schedule (sub-step by sub-step, groups frozen when complete), equal the reference rule on
  random spikes for every grouping, binary (D = 1 and D = 3 windows) and graded;
* the ``SpaceTimeAttention`` process in small graphs (neurons -> q, k, v -> attention -> neuron,
  a residual around it) equals the reference spike for spike on every layer, for every grouping,
  both scores, binary and graded, with a batch of two samples pipelined;
* the compiler's timing (q delayed until the sample's last k/v window) and the bundle validation;
* fixed point: a quantized graph's attention on Lava ``fixed_pt`` (int64) = the fixed reference;
* the tiny SpikeVideoFormer (random weights that fire) over T = 8 frames on Lava = the reference,
  every layer and the logits (slow), and ``verify --targets reference,onnx,lava`` (slow).

Every comparison is exact: binary spikes make every SDHA sum an integer below 2**53."""

from __future__ import annotations

import zlib

import numpy as np
import pytest
import torch

from spikedeploy.errors import ArtifactError, ConfigError, UnsupportedOpError
from spikedeploy.exporters import lava as lava_export
from spikedeploy.exporters.lava_validate import validate_bundle
from spikedeploy.ir import Graph, Node, TensorSpec, ops as O
from spikedeploy.reference import SpaceTimeAttentionRule, SpikeValue, execute
from spikedeploy.runtimes import lava as lava_run
from spikedeploy.runtimes.lava_kernels import heads, merge_heads, st_blocks, st_memory, st_output, st_pairs, st_read

GROUPINGS = ("joint", "spatial", "temporal", "factorized")


# ---------------------------------------------------------------------------------------------
# kernels = the reference rule
# ---------------------------------------------------------------------------------------------


def kernel_attention(op, q, k, v, window: int, graded: bool) -> np.ndarray:
    """The process's arithmetic on counts ``[T, B, C, N]``: per sample, the k/v of every
    macro-step sub-step by sub-step (thermometer code; graded: one event of the counts) into the
    groups' counts, each group frozen when its last step is in, then the q sub-steps read rows."""
    T, B, C, N = q.shape
    Cv, h = v.shape[2], op.num_heads
    d, dv = C // h, Cv // h
    blocks = st_blocks(op.head_groupings())
    subs = 1 if graded else window

    def sub(x, j):
        return x if graded else (x > j).astype(np.float64)

    out = np.zeros((T, B, Cv, N))
    for b in range(B):
        counts = {}
        memories = {}
        for t in range(T):
            ck, cv = np.zeros((h, N, d)), np.zeros((h, N, dv))
            for bi, (g, h0, h1) in enumerate(blocks):
                if g == "spatial" or t == 0:
                    ng = N if g == "temporal" else 1
                    counts[bi] = [np.zeros((h1 - h0, ng, d, dv)), np.zeros((h1 - h0, ng, dv))]
            for j in range(subs):
                kh = heads(sub(k[t, b], j).ravel(), h, C, N)
                vh = heads(sub(v[t, b], j).ravel(), h, Cv, N)
                for bi, (g, h0, h1) in enumerate(blocks):
                    kv, vs = st_pairs(kh[h0:h1], vh[h0:h1], ck[h0:h1], cv[h0:h1], g)
                    counts[bi][0] += kv
                    counts[bi][1] += vs
                ck, cv = ck + kh, cv + vh
            for bi, (g, _, _) in enumerate(blocks):
                if g == "spatial":
                    memories[(bi, t)] = st_memory(*counts[bi], op.score)
                elif t == T - 1:
                    memories[bi] = st_memory(*counts[bi], op.score)
        for t in range(T):
            ys = []
            for bi, (g, h0, h1) in enumerate(blocks):
                mem, offset = memories[(bi, t) if g == "spatial" else bi]
                acc = np.zeros((h1 - h0, N, dv))
                for j in range(subs):
                    acc = acc + st_read(heads(sub(q[t, b], j).ravel(), h, C, N)[h0:h1], mem, g)
                ys.append(st_output(acc, offset, op.scale))
            out[t, b] = merge_heads(np.concatenate(ys)).reshape(Cv, N)
    return out


def _spikes(rng, shape, d, p=0.4):
    """Random counts in {0..d} (d = 1: binary spikes), about ``p`` of them non-zero."""
    c = rng.integers(1, d + 1, size=shape) * (rng.random(shape) < p)
    return c.astype(np.float64)


@pytest.mark.parametrize("score", ["hamming", "dot"])
@pytest.mark.parametrize("tokens", GROUPINGS)
@pytest.mark.parametrize("mode", ["binary1", "binary3", "graded3"])
def test_kernels_equal_the_reference_rule(tokens, score, mode):
    rng = np.random.default_rng(zlib.crc32(f"{tokens}{score}{mode}".encode()))
    d = int(mode[-1])
    T, B, C, Cv, N = 4, 2, 8, 6, 5
    q, k, v = _spikes(rng, (T, B, C, N), d), _spikes(rng, (T, B, C, N), d), _spikes(rng, (T, B, Cv, N), d)
    cls = O.SpikeHammingAttention if score == "hamming" else O.SpikeDotAttention
    op = cls(num_heads=2, tokens=tokens, scale=1.0 if score == "hamming" else 0.125)
    enc = "graded" if mode.startswith("graded") else "binary"
    vals = [SpikeValue(q=torch.from_numpy(a), encoding=enc, window=d) for a in (q, k, v)]
    ref = SpaceTimeAttentionRule()(op, vals, None).numpy()
    got = kernel_attention(op, q, k, v, d, enc == "graded")
    assert np.array_equal(got, ref)
    assert np.abs(ref).max() > 0  # not all zero: the comparison says something
    if score == "hamming":  # integers (the scale is folded into the next neuron)
        assert np.array_equal(ref, np.round(ref))


def test_kernel_memory_counts_pairs_and_columns():
    """st_pairs over one sub-step: joint sums the tokens' outer products, temporal keeps them per
    token; st_memory doubles the pairs and subtracts the column counts; 1^T M its column sums."""
    rng = np.random.default_rng(3)
    k, v = _spikes(rng, (2, 3, 4), 1, 0.6), _spikes(rng, (2, 3, 2), 1, 0.6)
    z_k, z_v = np.zeros_like(k), np.zeros_like(v)
    kv, vs = st_pairs(k, v, z_k, z_v, "joint")
    assert np.array_equal(kv[:, 0], np.einsum("hnc,hne->hce", k, v)) and np.array_equal(vs[:, 0], v.sum(1))
    kvt, vst = st_pairs(k, v, z_k, z_v, "temporal")
    assert kvt.shape == (2, 3, 4, 2) and np.array_equal(kvt.sum(1), kv[:, 0]) and np.array_equal(vst, v)
    m, off = st_memory(kv, vs, "hamming")
    assert np.array_equal(m, 2 * kv - vs[:, :, None, :]) and np.array_equal(off, m.sum(axis=2))
    m_dot, none = st_memory(kv, vs, "dot")
    assert none is None and np.array_equal(m_dot, kv)
    assert st_blocks(("spatial", "spatial", "temporal", "temporal")) == (("spatial", 0, 2), ("temporal", 2, 4))


# ---------------------------------------------------------------------------------------------
# the process in small graphs
# ---------------------------------------------------------------------------------------------


def _p(a):
    return O.as_param(a)


def sdha_graph(tokens="joint", score="hamming", heads_=2, C=4, Cv=4, N=3) -> Graph:
    """x [6, N] -> conv -> binary LIF n0 -> three convs -> q, k, v (binary LIFs) -> attention ->
    binary LIF (threshold in the attention's integer units) -> conv, plus a residual conv from n0
    around the attention (delay-balanced by the compiler) -> binary LIF out."""
    rng = np.random.default_rng(7)

    def conv(o, i, gain):
        return O.Conv1d(_p(rng.normal(size=(o, i, 1)) * gain), _p(rng.normal(size=o) * 0.3))

    cls = O.SpikeHammingAttention if score == "hamming" else O.SpikeDotAttention
    d = C // heads_
    return Graph(
        inputs=(TensorSpec("x", (6, N)),),
        nodes=(
            Node("fc0", conv(8, 6, 2.0), ("x",)),
            Node("n0", O.BinaryLIF(beta=0.5, threshold=0.5), ("fc0",)),
            Node("cq", conv(C, 8, 1.5), ("n0",)),
            Node("q", O.BinaryLIF(beta=0.5, threshold=0.3), ("cq",)),
            Node("ck", conv(C, 8, 1.5), ("n0",)),
            Node("k", O.BinaryLIF(beta=0.5, threshold=0.3), ("ck",)),
            Node("cv", conv(Cv, 8, 1.5), ("n0",)),
            Node("v", O.BinaryLIF(beta=0.5, threshold=0.3), ("cv",)),
            Node("attn", cls(num_heads=heads_, tokens=tokens), ("q", "k", "v")),
            # SN_2D: the 1/(2d) folded into the threshold (hamming); dot: a small threshold
            Node("sn", O.BinaryLIF(beta=0.5, threshold=(2 * d * 0.75) if score == "hamming" else 1.5), ("attn",)),
            Node("proj", conv(6, Cv, 1.5), ("sn",)),
            Node("skip", conv(6, 8, 1.5), ("n0",)),
            Node("sum", O.Add(), ("proj", "skip")),
            Node("out", O.BinaryLIF(beta=0.5, threshold=0.5), ("sum",)),
        ),
        outputs=("out",),
    )


def _check_lava(graph, x, encoding, **compile_kw):
    desc, arrays = lava_export.compile_graph(graph.with_meta(timesteps=int(x.shape[0])), encoding, **compile_kw)
    bundle = lava_export.LavaBundle(None, desc, arrays)
    r = lava_run.run(bundle, x)
    ref = execute(graph, x, encoding)
    for n in ref.graph.neurons():
        q_ref, q = ref.neuron_q(n.name), r.spike_counts[n.name]
        assert q.shape == q_ref.shape, n.name
        assert 0 < int(q_ref.sum()) < q_ref.numel(), f"{n.name}: all silent or all firing proves little"
        assert torch.equal(q, q_ref), f"{encoding}: {n.name} differs in {int((q != q_ref).sum())} of {q.numel()}"
    torch.testing.assert_close(r.outputs["out"], ref.outputs["out"], rtol=0, atol=0)
    return desc, r


@pytest.mark.parametrize("score", ["hamming", "dot"])
@pytest.mark.parametrize("tokens", GROUPINGS)
def test_process_matches_reference(tokens, score):
    """Every grouping and score, binary spikes (the tiny SpikeVideoFormer's case), two samples of
    T = 4 steps streamed through one run: every layer = the reference, the pair events counted."""
    graph = sdha_graph(tokens, score)
    x = torch.randn(4, 2, 6, 3, generator=torch.Generator().manual_seed(11)) * 1.5
    desc, r = _check_lava(graph, x, "binary")
    (p,) = [p for p in desc["processes"] if p["type"] == "st_attention"]
    mixes = tokens != "spatial"
    assert p["timesteps"] == (4 if mixes else None)
    # q waits for the k/v of the sample's last step (period 1): exactly, the compiler adds no slack
    assert p["q_start"] == p["kv_start"] + (3 if mixes else 0) + p["kv_len"]
    events = r.info["attention_pair_events"]
    assert len(events) == 1 and next(iter(events.values())) > 0


@pytest.mark.parametrize("tokens", ["joint", "factorized"])
def test_process_graded_and_unfused(tokens):
    """Graded spikes (one event per count), and the unfused process graph (Delay lines and Sparse
    processes, no taps) give the same spikes."""
    graph = sdha_graph(tokens)
    x = torch.randn(3, 2, 6, 3, generator=torch.Generator().manual_seed(12)) * 1.5
    _check_lava(graph, x, "graded")
    desc, _ = _check_lava(graph, x, "binary", fuse=False)
    assert any(p["type"] == "delay" for p in desc["processes"])


def test_per_layer_placement_equals_one_partition():
    """Each process its own Lava (OS) process: the same spikes and outputs as the hosted run."""
    graph = sdha_graph("factorized").with_meta(timesteps=3)
    x = torch.randn(3, 2, 6, 3, generator=torch.Generator().manual_seed(13)) * 1.5
    bundle = lava_export.LavaBundle(None, *lava_export.compile_graph(graph, "binary"))
    hosted, per_layer = lava_run.run(bundle, x), lava_run.run(bundle, x, partitions="per-layer")
    assert per_layer.info["placement"]["requested"] == "per-layer"
    assert per_layer.info["os_processes"] > hosted.info["os_processes"]
    assert per_layer.spike_counts.keys() == hosted.spike_counts.keys()
    for name, q in hosted.spike_counts.items():
        assert torch.equal(per_layer.spike_counts[name], q), name
    assert torch.equal(per_layer.outputs["out"], hosted.outputs["out"])
    assert per_layer.info["attention_pair_events"] == hosted.info["attention_pair_events"]


def test_compile_needs_a_fixed_T_and_the_runtime_refuses_another():
    graph = sdha_graph("joint")
    with pytest.raises(UnsupportedOpError, match="attn.*timesteps"):
        lava_export.compile_graph(graph, "binary")
    spatial = lava_export.compile_graph(sdha_graph("spatial"), "binary")  # no T needed
    assert [p["timesteps"] for p in spatial[0]["processes"] if p["type"] == "st_attention"] == [None]
    desc, arrays = lava_export.compile_graph(graph.with_meta(timesteps=4), "binary")
    with pytest.raises(ConfigError, match="compiled for T = 4 frames, not 3"):
        lava_run.run(lava_export.LavaBundle(None, desc, arrays), torch.zeros(3, 1, 6, 3))


def test_bundle_validation_of_the_attention_process():
    desc, arrays = lava_export.compile_graph(sdha_graph("factorized").with_meta(timesteps=4), "binary")
    validate_bundle(desc, arrays, "b")
    i = next(i for i, p in enumerate(desc["processes"]) if p["type"] == "st_attention")

    def broken(**kw):
        import copy

        d = copy.deepcopy(desc)
        d["processes"][i].update(kw)
        return d

    p = desc["processes"][i]
    assert p["groupings"] == ["spatial", "temporal"]
    for kw, msg in [(dict(q_start=p["q_start"] - 1), "before the k/v"), (dict(fire=p["fire"] + 1), "fire"),
                    (dict(groupings=["spatial", "factorized"]), "groupings"), (dict(score="cosine"), "score"),
                    (dict(timesteps=None), "timesteps"), (dict(groupings=["joint"]), "groupings")]:
        with pytest.raises(ArtifactError, match=msg):
            validate_bundle(broken(**kw), arrays, "b")


# ---------------------------------------------------------------------------------------------
# fixed point (Lava fixed_pt: int64 counts, M and Y; the graph's integer scale)
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("tokens, score, encoding", [(g, "hamming", "binary") for g in GROUPINGS]
                         + [("joint", "dot", "graded"), ("factorized", "hamming", "graded")])
def test_fixed_point_equals_the_fixed_reference(tokens, score, encoding):
    """QuantizeFixedPoint keeps the attention (its scale becomes the integer 2**f of the output's
    exponent); the fixed bundle's SpaceTimeAttention runs in int64 and equals the fixed
    reference exactly: every layer's q, the integer output, the saturation counts."""
    from spikedeploy.passes import ExpandSpikes
    from spikedeploy.passes.quantize import quantize_graph
    from spikedeploy.reference import run as ref_run

    x = torch.randn(4, 2, 6, 3, generator=torch.Generator().manual_seed(11)).double() * 1.5
    gq = quantize_graph(ExpandSpikes(encoding).apply(sdha_graph(tokens, score)).with_meta(timesteps=4), x)
    (attn,) = [n for n in gq.nodes if isinstance(n.op, O.SpaceTimeAttention)]
    assert attn.op.scale == round(attn.op.scale) and attn.op.scale >= 1
    bundle = lava_export.LavaBundle(None, *lava_export.compile_graph(gq, encoding))
    assert bundle.description["precision"] == "fixed"
    r = lava_run.run(bundle, x)
    ref = ref_run(gq, x)
    assert r.info["select_tag"] == "fixed_pt"
    for n in gq.neurons():
        q = ref.records[n.name].q
        assert float(q.sum()) > 0, n.name
        assert torch.equal(r.spike_counts[n.name], q), n.name
        assert r.info["saturated"][n.name] == ref.records[n.name].saturated, n.name
    for name, y in ref.outputs.items():
        assert torch.equal(r.outputs[name], y), name


# ---------------------------------------------------------------------------------------------
# the tiny SpikeVideoFormer over T = 8 frames
# ---------------------------------------------------------------------------------------------


def test_tiny_spikevideoformer_on_lava_equals_reference_over_8_frames():
    """The tiny SpikeVideoFormer (random weights that fire; two joint SDHA blocks), binary and
    graded spikes, two clips of T = 8 frames in one Lava run: every one of the 31 binary LIF
    layers = the reference spike for spike, and the logits = the reference's = PyTorch's (float64,
    bit for bit: tests/models/test_spikevideoformer_lowering.py shows torch = reference)."""
    from spikedeploy.capture import capture
    from spikedeploy.loading import build_model
    from spikedeploy.passes import ExpandSpikes

    T = 8
    loaded = build_model("spikevideoformer-tiny", timesteps=T)
    net, shape = loaded.module.double().eval(), loaded.input_shape
    graph = capture(net, torch.zeros((T, 1) + shape, dtype=torch.float64)).with_meta(timesteps=T)
    x = torch.randn((T, 2) + shape, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    with torch.no_grad():
        logits = net(x)
    for encoding in ("binary", "graded"):
        low = ExpandSpikes(encoding).apply(graph)
        desc, arrays = lava_export.compile_graph(low, encoding)
        attn = [p for p in desc["processes"] if p["type"] == "st_attention"]
        assert len(attn) == 2 and all(p["groupings"] == ["joint"] * p["heads"] and p["timesteps"] == T for p in attn)
        r = lava_run.run(lava_export.LavaBundle(None, desc, arrays), x)
        ref = execute(low, x, encoding)
        neurons = [n.name for n in ref.graph.neurons()]
        assert len(neurons) == 31 and sorted(r.spike_counts) == sorted(neurons)
        for name in neurons:
            q_ref = ref.neuron_q(name)
            assert int(q_ref.sum()) > 0, name
            assert torch.equal(r.spike_counts[name], q_ref), f"{encoding}: {name}"
        (out,) = graph.outputs
        assert torch.equal(r.outputs[out], ref.outputs[out]) and torch.equal(r.outputs[out], logits)
        assert all(v > 0 for v in r.info["attention_pair_events"].values())


@pytest.mark.slow
def test_verify_with_lava_passes(tmp_path):
    """``spikedeploy verify --model spikevideoformer-tiny -T 8 --inputs 2 --targets
    reference,onnx,lava``: every stage passes, Lava's included (~25 s)."""
    from spikedeploy.verification import verify

    rep = verify("spikevideoformer-tiny", timesteps=8, num_inputs=2, targets=("reference", "onnx", "lava"),
                 target_inputs=2)
    assert rep.passed
    assert [s.name for s in rep.stages] == ["capture", "fold+fuse", "binary", "graded", "onnx", "lava"]
