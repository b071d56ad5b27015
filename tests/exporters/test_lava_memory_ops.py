"""SpikeTrack's memory ops on the Lava target: ``Upsample`` unrolled into a ``Sparse`` matrix,
``MemoryRead`` as the ``MemoryReadSynapse`` kernel process (the memory held as is, the reference's
arithmetic: the rows read summed over the window, then scaled once), ``MemoryWrite`` as the own
``MemoryWriter`` process feeding a ``Readout``.

Every Lava run must give the SAME spike counts q in every neuron layer and macro-step as
``spikedeploy.reference.execute(graph, x, mode)``, with spikes in every layer, and graph outputs
within ``OUT_RTOL``/``OUT_ATOL`` (a memory read's own output: bit for bit). Graphs are small and
B = 1 or 2 (Lava starts one OS process per process).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import torch

from spikedeploy.errors import UnsupportedOpError
from spikedeploy.exporters import lava as L
from spikedeploy.ir import Graph, Node, TensorSpec, ops as O
from spikedeploy.ir.graph import validate
from spikedeploy.reference import RULES as REF_RULES, execute

ENCODINGS = ("binary", "graded")
#: graph outputs (real values: memory, readouts) against the float64 reference
OUT_RTOL, OUT_ATOL = 1e-9, 1e-12


def _p(a):
    return O.as_param(np.asarray(a, dtype=np.float64))


def memory_read_graph(scale: float = 0.5) -> Graph:
    """x -> IntegerLIF -> MemoryRead (random memory, 2 heads) -> IntegerLIF (and an output Linear)."""
    rng = np.random.default_rng(10)
    mem = rng.normal(size=(1, 2, 2, 3)) * 1.5  # [T_mem, H, C/H, Cv/H]: C = 4, Cv = 6
    return Graph(
        inputs=(TensorSpec("x", (4, 5)),),
        nodes=(
            Node("n0", O.IntegerLIF(d=4, norm=2.0), ("x",)),
            Node("read", O.MemoryRead(memory=_p(mem), num_heads=2, scale=scale), ("n0",)),
            Node("n1", O.IntegerLIF(d=3, norm=3.0, leak=0.5), ("read",)),
            Node("out", O.Linear(_p(rng.normal(size=(2, 5))), None), ("n1",)),
        ),
        outputs=("out",),
    )


def time_varying_read_graph(scale: float = 0.3) -> Graph:
    """SpikeTrack T = 3's read: a one-step query (a neuron) repeated over 3 macro-steps -> NI-LIF over
    them -> MemoryRead with one memory per macro-step (T_mem = 3) -> NI-LIF; the read is also an
    output."""
    rng = np.random.default_rng(13)
    mem = rng.normal(size=(3, 2, 2, 3)) * 8.0 + 2.0
    return Graph(
        inputs=(TensorSpec("x", (4, 5), steps=1),),
        nodes=(
            Node("nq", O.IntegerLIF(d=4, norm=4.0), ("x",)),
            Node("rep", O.RepeatTime(3), ("nq",)),
            Node("n0", O.IntegerLIF(d=4, norm=4.0, leak=(0.5, 0.75), reset_norm=4.0), ("rep",)),
            Node("read", O.MemoryRead(memory=_p(mem), num_heads=2, scale=scale), ("n0",)),
            Node("n1", O.IntegerLIF(d=4, norm=4.0, leak=(0.6, 0.3), reset_norm=4.0), ("read",)),
        ),
        outputs=("n1", "read"),
    )


def upsample_graph(mode: str = "bilinear", align_corners: bool = False) -> Graph:
    """x -> IntegerLIF -> Conv2d (bias) -> Upsample -> IntegerLIF."""
    rng = np.random.default_rng(11)
    return Graph(
        inputs=(TensorSpec("x", (2, 4, 4)),),
        nodes=(
            Node("n0", O.IntegerLIF(d=4, norm=2.0), ("x",)),
            Node("conv", O.Conv2d(_p(rng.normal(size=(3, 2, 3, 3)) * 0.6), _p(rng.normal(size=3) * 0.5 + 0.5),
                                  padding=(1, 1)), ("n0",)),
            Node("up", O.Upsample(size=(7, 6), mode=mode, align_corners=align_corners), ("conv",)),
            Node("n1", O.IntegerLIF(d=4, norm=4.0), ("up",)),
        ),
        outputs=("n1",),
    )


def memory_write_graph() -> Graph:
    """x -> IntegerLIF -> k (Conv1d) / v (permute -> Linear -> permute) -> IntegerLIFs of different
    firing limits -> MemoryWrite as a graph output (plus a neuron output)."""
    rng = np.random.default_rng(12)
    return Graph(
        inputs=(TensorSpec("x", (3, 5)),),
        nodes=(
            Node("n0", O.IntegerLIF(d=4, norm=2.0), ("x",)),
            Node("kc", O.Conv1d(_p(rng.normal(size=(4, 3, 1)) * 1.5), _p(rng.normal(size=4) * 0.3 + 0.5)), ("n0",)),
            Node("nk", O.IntegerLIF(d=3, norm=3.0), ("kc",)),
            Node("tr", O.Permute((1, 0)), ("n0",)),
            Node("vl", O.Linear(_p(rng.normal(size=(6, 3)) * 1.5), _p(rng.normal(size=6) * 0.3 + 0.5)), ("tr",)),
            Node("nv", O.IntegerLIF(d=5, norm=5.0), ("vl",)),
            Node("vt", O.Permute((1, 0)), ("nv",)),
            Node("mem", O.MemoryWrite(num_heads=2, scale=0.75), ("nk", "vt")),
        ),
        outputs=("mem", "nk"),
    )


def _run_and_compare(graph: Graph, x: torch.Tensor, encoding: str, bundle=None):
    from spikedeploy.runtimes import lava as lava_run

    bundle = bundle or L.LavaBundle(None, *L.compile_graph(graph, encoding))
    result = lava_run.run(bundle, x)
    ref = execute(graph, x, encoding)
    neurons = [n.name for n in ref.graph.neurons()]
    assert sorted(result.spike_counts) == sorted(neurons)
    for name in neurons:
        q_ref, q = ref.neuron_q(name), result.spike_counts[name]
        assert q.shape == q_ref.shape, name
        assert int(q_ref.sum()) > 0, f"no spikes in {name}: the comparison would prove nothing"
        assert torch.equal(q, q_ref), f"{encoding}: {name} differs in {int((q != q_ref).sum())} of {q.numel()}"
    assert sorted(result.outputs) == sorted(graph.outputs)
    for o in graph.outputs:
        torch.testing.assert_close(result.outputs[o], ref.outputs[o], rtol=OUT_RTOL, atol=OUT_ATOL)
    return bundle, result, ref


# ---------------------------------------------------------------------------------------------
# compiler: matrices and rules (no Lava run)
# ---------------------------------------------------------------------------------------------


def _ref_linear(op, x):
    t = torch.as_tensor(x)[None, None]
    return REF_RULES[type(op)].offset(op, REF_RULES[type(op)].linear(op, t))[0, 0].numpy()


@pytest.mark.parametrize(
    "op, shape",
    [
        (O.Upsample(size=(7, 6), mode="bilinear", align_corners=False), (2, 4, 4)),
        (O.Upsample(size=(8, 9), mode="bilinear", align_corners=True), (3, 3, 5)),
        (O.Upsample(size=(3, 2), mode="bilinear", align_corners=False), (1, 5, 4)),  # downsampling
        (O.Upsample(size=(6, 7), mode="nearest"), (2, 3, 4)),
        (O.MemoryRead(memory=_p(np.random.default_rng(0).normal(size=(1, 2, 3, 2))), num_heads=2, scale=0.3), (6, 5)),
        (O.MemoryRead(memory=_p(np.random.default_rng(1).normal(size=(1, 1, 4, 3))), num_heads=1), (4, 2)),
    ],
)
def test_unrolled_matrices_equal_the_reference(op, shape):
    out_shape = op.infer_shape(shape)
    m, bias = L.linear_map(op, shape, out_shape)
    assert bias is None and m.shape == (int(np.prod(out_shape)), int(np.prod(shape)))
    rng = np.random.default_rng(5)
    for x in (rng.integers(0, 2, size=shape).astype(np.float64), rng.normal(size=shape)):
        np.testing.assert_allclose(m @ x.ravel(), _ref_linear(op, x).ravel(), rtol=1e-13, atol=1e-13)
    if isinstance(op, O.Upsample):
        assert m.nnz <= (4 if op.mode == "bilinear" else 1) * m.shape[0]  # real fan-in only


def test_upsample_weights_are_torchs_exact_weights():
    """An impulse through F.interpolate gives the weight bit for bit."""
    op = O.Upsample(size=(7, 6), mode="bilinear")
    m = L.linear_map(op, (1, 4, 4), (1, 7, 6))[0].toarray()
    for col in range(16):
        e = np.zeros(16)
        e[col] = 1.0
        assert np.array_equal(m[:, col], _ref_linear(op, e.reshape(1, 4, 4)).ravel())


def test_rules_and_processes():
    assert {O.Upsample, O.MemoryRead, O.MemoryWrite} <= set(L.RULES)
    desc, _ = L.compile_graph(memory_write_graph(), "binary")
    writes = [p for p in desc["processes"] if p["type"] == "memory_write"]
    assert len(writes) == 1 and writes[0]["heads"] == 2
    # the aligned k/v window is the longer of the two windows (v: D = 5)
    assert writes[0]["kv_len"] == 5
    readouts = {p["name"]: p for p in desc["processes"] if p["type"] == "readout"}
    out = next(o for o in desc["outputs"] if o["name"] == "mem")
    assert out["shape"] == [2, 2, 3] and readouts[out["proc"]]["length"] == 1
    assert out["final_step"] == writes[0]["kv_start"] + writes[0]["kv_len"] - 1
    desc, arrays = L.compile_graph(memory_read_graph(), "graded", fuse=False)
    # the output Linear is a Sparse; the MemoryRead is a kernel holding the memory as is
    assert [p["num_message_bits"] for p in desc["processes"] if p["type"] == "sparse"] == [24]
    (read,) = [p for p in desc["processes"] if p["type"] == "memory_read"]
    assert (read["channels"], read["v_channels"], read["tokens"], read["heads"], read["mem_steps"]) == (4, 6, 5, 2, 1)
    assert read["scale"] == 0.5 / 2.0, "the lowering folds q's 1/norm into the scale"
    assert np.array_equal(arrays[read["memory"]], np.asarray(memory_read_graph().nodes[1].op.memory))
    # it sends one step after its q window (a synapse's delay), and n1 integrates that one event
    (n1,) = [p for p in desc["processes"] if p["type"] == "neuron" and p["node"] == "n1"]
    assert read["fire"] == read["q_start"] + read["q_len"] == n1["in_start"] and n1["in_len"] == 1


@pytest.mark.parametrize("shape, memory, heads", [((1024, 2048), (1, 1, 1024, 1024), 1),  # 2.1e9 synapses unrolled
                                                   ((360, 576), (1, 8, 45, 180), 8)])  # B384's MRM 5 read
def test_memory_reads_of_any_size_are_kernels(shape, memory, heads):
    """A MemoryRead is never unrolled (B256/B384's reads were 1.1e8 / 2.4e8 synapses): the size
    check does not count it and the bundle holds the memory itself, ``[T_mem, H, C/H, Cv/H]``."""
    g = Graph(
        inputs=(TensorSpec("x", shape),),
        nodes=(Node("n0", O.IntegerLIF(d=4, norm=4.0), ("x",)),
               Node("read", O.MemoryRead(memory=_p(np.ones(memory)), num_heads=heads), ("n0",)),
               Node("n1", O.IntegerLIF(d=4, norm=4.0), ("read",))),
        outputs=("n1",),
    )
    shapes = validate(g)
    assert L.synapse_upper_bound(g.nodes[1].op, shape, shapes["read"]) > 1e7
    assert L.check_size(g) == 0
    desc, arrays = L.compile_graph(g, "binary")
    assert "sparse" not in desc["process_counts"] and desc["process_counts"]["memory_read"] == 1
    (read,) = [p for p in desc["processes"] if p["type"] == "memory_read"]
    assert arrays[read["memory"]].shape == memory
    assert sum(a.size for a in arrays.values()) < L.synapse_upper_bound(g.nodes[1].op, shape, shapes["read"]) / 5


def test_time_varying_memory_needs_fixed_macro_steps():
    g = Graph(
        inputs=(TensorSpec("x", (4, 5)),),
        nodes=(
            Node("n0", O.IntegerLIF(d=2, norm=2.0), ("x",)),
            Node("read", O.MemoryRead(memory=_p(np.ones((2, 2, 2, 3))), num_heads=2), ("n0",)),
            Node("n1", O.IntegerLIF(d=2, norm=2.0), ("read",)),
        ),
        outputs=("n1",),
    )
    # a per-macro-step memory needs values with a fixed number of macro-steps (T_mem = q's steps)
    with pytest.raises(UnsupportedOpError, match="fixed number of macro-steps"):
        L.compile_graph(g, "binary")


def test_memory_write_needs_spikes():
    g = Graph(
        inputs=(TensorSpec("x", (4, 5)),),
        nodes=(
            Node("n0", O.IntegerLIF(d=2, norm=2.0), ("x",)),
            Node("k", O.Conv1d(_p(np.ones((4, 4, 1)))), ("n0",)),
            Node("mem", O.MemoryWrite(num_heads=2), ("k", "n0")),
        ),
        outputs=("mem",),
    )
    with pytest.raises(UnsupportedOpError, match="spike inputs"):
        L.compile_graph(g, "graded")


def test_bundle_round_trip(tmp_path):
    path = L.export(memory_write_graph(), tmp_path / "mem.lava", encoding="graded")
    b = L.load(path)
    assert b.description["process_counts"]["memory_write"] == 1
    assert {n.op.kind for n in b.graph.nodes} >= {"MemoryWrite"}


# ---------------------------------------------------------------------------------------------
# Lava runs against the reference
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_memory_read_matches_reference(encoding):
    x = torch.randn(2, 1, 4, 5, generator=torch.Generator().manual_seed(20)) * 2 + 1.5
    bundle, r, ref = _run_and_compare(memory_read_graph(), x, encoding)
    assert r.info["fusion"]["fused_synapses"] == 1  # the output Linear, fused into its readout
    assert bundle.description["process_counts"]["memory_read"] == 1
    # the audit counts the same memory-row reads from the Lava run's spikes as from the reference's
    from spikedeploy.audit import audit_graph

    lowered = bundle.graph
    a_lava = audit_graph(lowered, x, encoding=encoding, spike_counts=r.spike_counts, runtime="lava").layer("read")
    a_ref = audit_graph(lowered, x, encoding=encoding).layer("read")
    assert a_lava.measured_synops == a_ref.measured_synops > 0
    assert a_lava.graded_events == a_ref.graded_events


def _sparse_arithmetic(graph: Graph, ref, encoding: str) -> np.ndarray:
    """What an unrolled ``Sparse`` with the scale folded into its weights (``scale * memory``)
    sends into its reader, summed over the sub-steps of q: ``sum_j (s M) @ s_j``."""
    (node,) = [n for n in ref.graph.nodes if isinstance(n.op, O.MemoryRead)]
    q = ref.neuron_q(node.inputs[0]).numpy()  # [T, B, C, N]
    T, B, C, N = q.shape
    out = []
    for t in range(T):
        mem = node.op.memory[t:t + 1] if node.op.memory.shape[0] > 1 else node.op.memory
        m = L.memory_read_matrix(mem, node.op.num_heads, node.op.scale, N)
        rows = []
        for b in range(B):
            subs = [q[t, b]] if encoding == "graded" else [(q[t, b] > j).astype(np.float64) for j in range(4)]
            acc = None
            for s_j in subs:
                y = m.dot(s_j.ravel())
                acc = y if acc is None else acc + y
            rows.append(acc)
        out.append(np.stack(rows))
    return np.stack(out)


@pytest.mark.parametrize("encoding", ENCODINGS)
@pytest.mark.parametrize("graph_fn", [memory_read_graph, time_varying_read_graph], ids=["T_mem=1", "T_mem=3"])
def test_memory_read_output_is_the_references_bit_for_bit(graph_fn, encoding):
    """The read itself as a graph output: Lava's value equals the reference's bit for bit (the
    rows read summed over the window, then ``* scale`` once, as ``MemoryReadRule``). The unrolled
    form (``scale`` inside the weights) differs in the last bits for this scale (0.3 / norm is not a
    power of two), so the comparison is one that the old form fails."""
    graph = graph_fn(scale=0.3)
    if graph_fn is memory_read_graph:
        graph = Graph(graph.inputs, graph.nodes[:3], ("n1", "read"))
    x = torch.randn((1, 2) + graph.inputs[0].shape, generator=torch.Generator().manual_seed(23)) * 2 + 1.5
    if graph_fn is memory_read_graph:
        x = x.repeat(2, 1, 1, 1)
    bundle, r, ref = _run_and_compare(graph, x, encoding)
    assert torch.equal(r.outputs["read"], ref.outputs["read"])
    sparse = _sparse_arithmetic(bundle.graph, execute(bundle.graph, x, encoding), encoding)
    want = ref.outputs["read"].numpy().reshape(sparse.shape)
    np.testing.assert_allclose(sparse, want, rtol=1e-13, atol=1e-13)  # the same value ...
    assert not np.array_equal(sparse, want), "... but not the same bits: this data would not tell the forms apart"
    if graph_fn is time_varying_read_graph:
        assert bundle.description["slots"] == 3 and "step_gate" not in bundle.description["process_counts"]


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_memory_read_of_a_value_with_a_constant_offset(encoding):
    """q = spikes + a constant (an AddConstant before the read): the constant goes through the
    memory at compile time and becomes the output's offset, added once per macro-step."""
    base = memory_read_graph()
    rng = np.random.default_rng(14)
    nodes = (base.nodes[0], Node("shift", O.AddConstant(_p(rng.normal(size=(4, 5)) * 0.5)), ("n0",)),
             Node("read", base.nodes[1].op, ("shift",)), *base.nodes[2:])
    graph = Graph(base.inputs, nodes, base.outputs)
    desc, _ = L.compile_graph(graph, encoding)
    assert desc["process_counts"]["memory_read"] == 1
    x = torch.randn(2, 1, 4, 5, generator=torch.Generator().manual_seed(24)) * 2 + 1.5
    _run_and_compare(graph, x, encoding)


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_a_new_memory_replaces_one_array_without_compiling(encoding):
    """``with_memory`` (a new template): the bundle equals the one compiled from the graph with the
    new memory, description and every array, and it runs exactly like the reference on that graph."""
    from dataclasses import replace

    from spikedeploy.errors import InputError

    graph = time_varying_read_graph()
    bundle = L.LavaBundle(None, *L.compile_graph(graph, encoding))
    before = {k: a.copy() for k, a in bundle.arrays.items()}
    new = np.random.default_rng(16).normal(size=(3, 2, 2, 3)) * 8.0 + 2.0
    swapped = L.with_memory(bundle, {"read": new})
    nodes = tuple(Node(n.name, replace(n.op, memory=_p(new)), n.inputs) if n.name == "read" else n
                  for n in graph.nodes)
    graph2 = Graph(graph.inputs, nodes, graph.outputs)
    fresh = L.compile_graph(graph2, encoding)
    assert swapped.description == fresh[0]
    assert sorted(swapped.arrays) == sorted(fresh[1])
    assert all(np.array_equal(swapped.arrays[k], a) for k, a in fresh[1].items())
    assert all(np.array_equal(bundle.arrays[k], a) for k, a in before.items()), "the input bundle changed"
    changed = [k for k in before if not np.array_equal(before[k], swapped.arrays[k])]
    assert len(changed) == 2  # the process's memory and the IR graph's copy
    x = torch.randn(1, 1, 4, 5, generator=torch.Generator().manual_seed(25)) * 2 + 1.5
    (read,) = [n for n in swapped.graph.nodes if n.name == "read"]
    assert np.array_equal(read.op.memory, new)  # the IR graph it carries is the new graph
    _, r, ref = _run_and_compare(graph2, x, encoding, swapped)
    assert torch.equal(r.outputs["read"], ref.outputs["read"])
    for bad, match in (({"n1": new}, "'n1' is not a memory read.*memory reads: read"),
                       ({"read": new[:1]}, r"shape \[1, 2, 2, 3\], expected \[3, 2, 2, 3\]"),
                       ({"read": np.full((3, 2, 2, 3), np.nan)}, "NaN")):
        with pytest.raises(InputError, match=match):
            L.with_memory(bundle, bad)


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_memory_read_kernel_per_layer_and_partitioned_bit_for_bit(encoding):
    """The kernel process's model runs the same per layer (its own OS process) and hosted in a
    partition: spike counts and outputs bit for bit, in the same Lava steps."""
    from spikedeploy.runtimes import lava as lava_run

    graph = time_varying_read_graph()
    bundle = L.LavaBundle(None, *L.compile_graph(graph, encoding))
    x = torch.randn(1, 2, 4, 5, generator=torch.Generator().manual_seed(26)) * 2 + 1.5
    runs = {p: lava_run.run(bundle, x, partitions=p) for p in ("per-layer", 1, 2)}
    base = runs["per-layer"]
    assert base.info["lava_processes"] == sum(bundle.description["process_counts"].values())  # one each
    for p, r in runs.items():
        assert r.info["lava_steps_per_frame"] == base.info["lava_steps_per_frame"], p
        assert all(torch.equal(r.spike_counts[k], v) for k, v in base.spike_counts.items()), p
        assert all(torch.equal(r.outputs[k], v) for k, v in base.outputs.items()), p
    assert runs[1].info["lava_processes"] < base.info["lava_processes"]
    assert int(base.spike_counts["n1"].sum()) > 0


def test_read_rows_is_the_reference_rule_and_reads_only_tokens_with_events():
    from spikedeploy.reference import MemoryReadRule
    from spikedeploy.runtimes.lava_kernels import read_rows

    torch.set_num_threads(2)  # read_rows is pure: the caller's thread count stays (asserted below)
    rng = np.random.default_rng(15)
    mem = rng.normal(size=(1, 4, 3, 5))  # H = 4, C = 12, Cv = 20
    op = O.MemoryRead(memory=_p(mem), num_heads=4, scale=1.0)
    for q in (rng.integers(0, 2, size=(12, 7)), rng.integers(0, 5, size=(12, 7)), rng.normal(size=(12, 7))):
        q = q.astype(np.float64)
        q[:, [1, 4]] = 0.0  # two tokens without any event
        y = read_rows(q.ravel(), mem[0]).reshape(20, 7)
        want = MemoryReadRule().linear(op, torch.from_numpy(q)[None, None])[0, 0].numpy()
        assert np.array_equal(y, want)
        assert not y[:, [1, 4]].any() and y[:, [0, 2, 3, 5, 6]].any()
    assert not read_rows(np.zeros(12 * 7), mem[0]).any()
    assert torch.get_num_threads() == 2


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_upsample_matches_reference(encoding):
    x = torch.randn(2, 1, 2, 4, 4, generator=torch.Generator().manual_seed(21)) * 2 + 1.5
    _run_and_compare(upsample_graph(), x, encoding)


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_memory_write_matches_reference(encoding):
    x = torch.randn(2, 1, 3, 5, generator=torch.Generator().manual_seed(22)) * 2 + 1.5
    _, r, ref = _run_and_compare(memory_write_graph(), x, encoding)
    # the memory is an exact count of co-occurring pairs times scale: equal bit for bit
    assert torch.equal(r.outputs["mem"], ref.outputs["mem"])
    assert float(ref.outputs["mem"].abs().sum()) > 0
    events = r.info["memory_write_pair_events"]
    assert len(events) == 1
    # pair events = sum of the pair counts; lowering folded 1/norm_k * 1/norm_v = 1/15 into scale
    expected = float(ref.outputs["mem"].sum()) / (0.75 / 15)
    assert next(iter(events.values())) == pytest.approx(expected, rel=1e-12)


# ---------------------------------------------------------------------------------------------
# SpikeTrack S256-T1 (fixture weights)
# ---------------------------------------------------------------------------------------------
#
# The whole search graph does not fit this target's unrolled form on a CI machine: compiled for
# Lava binary it has 708 processes (171 neurons, 169 Sparse, 354 Delay, 8 SpikeAttention, 3
# sources, 3 readouts), 1069 connections, period 4, 617 Lava steps per macro-step, and its unrolled
# convolutions hold ~3.4e9 synapses (eight encoder convs of 1.5e8 each at 128x128 / 64x64 / 32x32);
# the 12 MemoryRead Sparse hold 1.4e7 and the two Upsample 7.4e5. Building only the convolution
# matrices exhausts 16 GB. So the slow test below runs one whole MRM retriever of the real search
# graph (pool -> head spike -> q conv -> MemoryRead -> responders -> fuser -> MemoryRead -> proj
# conv -> Upsample 16x16 -> 32x32 -> residual -> MLP spike; 8 neuron layers, 2 MemoryReads with the
# fixture memory) with its input taken from the reference run of the graph before it.

FIXTURES = Path(__file__).resolve().parents[2].parent / "shared" / "fixtures" / "spiketrack"
S256 = FIXTURES / "s256-t1"


@pytest.fixture(scope="module")
def spiketrack_retriever(s256_model, s256_inputs):
    if not (S256 / "reference.npz").is_file() or not (FIXTURES / "make_weights.py").is_file():
        pytest.skip("SpikeTrack fixtures (../shared/fixtures/spiketrack) are not present in this checkout")

    from spikedeploy.capture import capture
    from spikedeploy.passes import default_pipeline
    from spikedeploy.reference import run as ref_run

    model = s256_model
    xt, xs, ref = s256_inputs
    with torch.no_grad():
        memory = model.template_branch(xt)
    g = default_pipeline().apply(capture(model.search_net(memory), xs, name="spiketrack-s256-t1/search"))
    names = [n.name for n in g.nodes]
    i0 = names.index("model.encoder.mrm.1.retriever.pool")
    i1 = names.index("model.encoder.mrm.1.mlp.fc1_spike") + 1
    nodes = g.nodes[i0:i1]
    made = {n.name for n in nodes}
    ext = list(dict.fromkeys(i for n in nodes for i in n.inputs if i not in made))
    assert ext == ["model.encoder.downsample2.encode_conv"]
    shapes = validate(g)
    before = Graph(inputs=g.inputs, nodes=g.nodes[:names.index(ext[0]) + 1], outputs=(ext[0],))
    xin = {ext[0]: ref_run(before, xs.double()).outputs[ext[0]]}
    sub = Graph(inputs=(TensorSpec(ext[0], tuple(shapes[ext[0]])),), nodes=tuple(nodes), outputs=(nodes[-1].name,))
    return sub, xin


@pytest.mark.slow
@pytest.mark.parametrize("encoding", ENCODINGS)
def test_spiketrack_memory_retriever_matches_reference(spiketrack_retriever, encoding):
    sub, xin = spiketrack_retriever
    kinds = [n.op.kind for n in sub.nodes]
    assert kinds.count("MemoryRead") == 2 and kinds.count("Upsample") == 1 and kinds.count("IntegerLIF") == 8
    t0 = time.perf_counter()
    _, r, _ = _run_and_compare(sub, xin, encoding)
    assert r.info["processes"] <= 25 and time.perf_counter() - t0 < 120
