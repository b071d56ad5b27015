"""NIR exporter: the SpikeTrack ops (MemoryWrite, MemoryRead, Upsample) as extension nodes.

The round trip (export -> nir.read -> IR rebuilt from the metadata -> reference run) must re-execute
identically: torch.equal on every neuron's q and on every output, for integer graphs and for
binary-lowered graphs; and the SpikeTrack S256-T1 search graph (fixture weights), binary-lowered."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

nir = pytest.importorskip("nir")

from spikedeploy.errors import UnsupportedOpError
from spikedeploy.exporters import nir as NX
from spikedeploy.ir import Graph, Node, TensorSpec, ops as O
from spikedeploy.passes import ExpandSpikes
from spikedeploy.reference import run
from spikedeploy.runtimes import nir as NR


def _p(a):
    return O.as_param(a)


def _x(shape, T=2, B=3, seed=0, scale=2.0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn((T, B) + tuple(shape), generator=g, dtype=torch.float64) * scale


# the same hand-built graphs as test_onnx_memory_ops.py


def write_graph(scale: float = 1.0) -> Graph:
    r = np.random.default_rng(11)
    C, N = 4, 6
    nodes = (
        Node("n0", O.IntegerLIF(d=3, norm=3.0, leak=0.5), ("x",)),
        Node("kc", O.Conv1d(weight=_p(r.normal(size=(4, C, 1))), bias=_p(r.normal(size=4) + 0.5)), ("n0",)),
        Node("vc", O.Conv1d(weight=_p(r.normal(size=(6, C, 1))), bias=_p(r.normal(size=6) + 0.5)), ("n0",)),
        Node("k", O.IntegerLIF(d=2, norm=2.0), ("kc",)),
        Node("v", O.IntegerLIF(d=4, norm=4.0, leak=0.25), ("vc",)),
        Node("mw", O.MemoryWrite(num_heads=2, scale=scale), ("k", "v")),
    )
    return Graph(inputs=(TensorSpec("x", (C, N)),), nodes=nodes, outputs=("mw",), meta=(("capture_T", 2),))


def read_graph(t_mem: int = 1, scale: float = 0.35) -> Graph:
    r = np.random.default_rng(12)
    C, N = 4, 5
    nodes = (
        Node("n0", O.IntegerLIF(d=4, norm=4.0), ("x",)),
        Node("mr", O.MemoryRead(memory=_p(r.normal(size=(t_mem, 2, 2, 3)) * 2), num_heads=2, scale=scale), ("n0",)),
        Node("out", O.IntegerLIF(d=3, norm=3.0, leak=0.8), ("mr",)),
    )
    return Graph(inputs=(TensorSpec("x", (C, N)),), nodes=nodes, outputs=("out", "mr"), meta=(("capture_T", 2),))


def upsample_graph(mode: str, align_corners: bool = False) -> Graph:
    r = np.random.default_rng(13)
    ac = align_corners if mode == "bilinear" else False
    nodes = (
        Node("conv", O.Conv2d(weight=_p(r.normal(size=(4, 3, 3, 3)) * 0.5), bias=_p(r.normal(size=4)),
                              padding=(1, 1)), ("x",)),
        Node("up", O.Upsample(size=(9, 16), mode=mode, align_corners=ac), ("conv",)),
        Node("n", O.IntegerLIF(d=4, norm=2.0), ("up",)),
        Node("s0", O.IntegerLIF(d=2, norm=2.0), ("x",)),
        Node("up2", O.Upsample(size=(10, 14), mode=mode, align_corners=ac), ("s0",)),
        Node("n2", O.IntegerLIF(d=3, norm=1.0, leak=0.5), ("up2",)),
    )
    return Graph(inputs=(TensorSpec("x", (3, 5, 7)),), nodes=nodes, outputs=("n", "n2", "up"),
                 meta=(("capture_T", 2),))


def assert_same_graph(a: Graph, b: Graph):
    assert a.inputs == b.inputs and a.outputs == b.outputs and a.meta == b.meta
    assert [n.name for n in a.nodes] == [n.name for n in b.nodes]
    for na, nb in zip(a.nodes, b.nodes):
        assert na.inputs == nb.inputs and na.source == nb.source, na.name
        assert type(na.op) is type(nb.op), na.name
        for f in dataclasses.fields(na.op):
            va, vb = getattr(na.op, f.name), getattr(nb.op, f.name)
            if isinstance(va, np.ndarray):
                assert isinstance(vb, np.ndarray) and vb.dtype == np.float64, (na.name, f.name)
                assert va.shape == vb.shape and np.array_equal(va, vb), (na.name, f.name)
            else:
                assert type(va) is type(vb) and va == vb, (na.name, f.name, va, vb)


def _round_trip(g: Graph, x, path: Path, encoding: str):
    art = NX.load(NX.export(g, path, encoding=encoding))
    assert art.encoding == encoding
    assert_same_graph(g, art.graph)
    ref, got = run(g, x), NR.run(art, x)
    assert set(got.spike_counts) == {n.name for n in g.neurons()}
    for n in g.neurons():
        q = ref.records[n.name].q
        assert q.sum() > 0, f"no spikes in {n.name}: the comparison would prove nothing"
        assert torch.equal(q, got.spike_counts[n.name]), n.name
    for o in g.outputs:
        assert torch.equal(ref.outputs[o], got.outputs[o]), o
    return art, ref


CASES = [
    ("write", lambda: write_graph(1.0), (4, 6)),
    ("write_scaled", lambda: write_graph(0.375), (4, 6)),
    ("read", lambda: read_graph(1), (4, 5)),
    ("read_per_step", lambda: read_graph(2), (4, 5)),
    ("bilinear", lambda: upsample_graph("bilinear"), (3, 5, 7)),
    ("bilinear_ac", lambda: upsample_graph("bilinear", True), (3, 5, 7)),
    ("nearest", lambda: upsample_graph("nearest"), (3, 5, 7)),
]


def test_rules_registered():
    assert {O.MemoryWrite, O.MemoryRead, O.Upsample} <= set(NX.RULES)


@pytest.mark.parametrize("encoding", ["integer", "binary", "graded"])
@pytest.mark.parametrize("case,make,shape", CASES, ids=[c[0] for c in CASES])
def test_round_trip_is_identical(tmp_path, case, make, shape, encoding):
    g = make()
    if encoding != "integer":
        g = ExpandSpikes(encoding).apply(g)
    x = _x(shape, seed=5)
    art, ref = _round_trip(g, x, tmp_path / f"{case}.nir", encoding)
    ng = art.nir_graph
    ext = set(ng.metadata["extension_nodes"].split(", "))
    for n in g.nodes:
        if isinstance(n.op, (O.MemoryWrite, O.MemoryRead, O.Upsample)):
            assert n.name in ext
            node = ng.nodes[NX.nir_name(n.name)]
            # the op's result enters the standard graph as a NIR Input (no NIR consumer computes
            # it); its inputs leave through Output ports
            assert isinstance(node, nir.Input) and node.metadata["extension"] == n.op.kind
            ports = json.loads(node.metadata[NX.META])["ports"]
            assert len(ports) == len(dict.fromkeys(n.inputs))
            for src, port in zip(dict.fromkeys(n.inputs), ports):
                assert isinstance(ng.nodes[port], nir.Output) and (NX.nir_name(src), port) in ng.edges
            assert not [e for e in ng.edges if e[1] == NX.nir_name(n.name)]
            if isinstance(n.op, O.MemoryRead):
                stored = np.asarray(node.metadata[NX.META_ARRAYS]["memory"])
                assert stored.dtype == np.float64 and np.array_equal(stored, n.op.memory)
    if case.startswith("write"):
        assert ref.outputs["mw"].abs().sum() > 0
    if encoding != "integer" and case.startswith(("write", "read")):
        # the lowered graph's scale absorbed the 1/norm factors, and survived the round trip
        integer_scale = {n.name: n.op.scale for n in make().nodes if hasattr(n.op, "scale")}
        lowered = {n.name: n.op.scale for n in art.graph.nodes if isinstance(n.op, (O.MemoryWrite, O.MemoryRead))}
        assert lowered and all(lowered[k] != integer_scale[k] for k in lowered)


def test_lowered_round_trip_equals_integer_run(tmp_path):
    """The round-tripped binary graph still reproduces the integer graph's spikes."""
    g = read_graph(1)
    x = _x((4, 5), seed=5)
    art = NX.load(NX.export(ExpandSpikes("binary").apply(g), tmp_path / "b.nir", encoding="binary"))
    integer, binary = run(g, x), NR.run(art, x)
    for n in g.neurons():
        assert torch.equal(integer.records[n.name].q, binary.spike_counts[n.name]), n.name


@pytest.mark.parametrize("make", [lambda: write_graph(), lambda: read_graph(), lambda: upsample_graph("bilinear")])
def test_without_extensions_is_refused(tmp_path, make):
    with pytest.raises(UnsupportedOpError, match="extension"):
        NX.export(make(), tmp_path / "x.nir", encoding="integer", extensions=False)
    assert not (tmp_path / "x.nir").exists()


# ---------------------------------------------------------------------------------------------
# SpikeTrack S256-T1 with the fixture weights
# ---------------------------------------------------------------------------------------------

FIXTURES = Path(__file__).resolve().parents[2].parent / "shared" / "fixtures" / "spiketrack"
S256 = FIXTURES / "s256-t1"


@pytest.mark.slow
@pytest.mark.skipif(
    not (S256 / "reference.npz").is_file() or not (FIXTURES / "make_weights.py").is_file(),
    reason="SpikeTrack fixtures (../shared/fixtures/spiketrack) are not present in this checkout",
)
def test_spiketrack_s256_t1_search_binary_round_trip(tmp_path, s256_model, s256_inputs):
    from spikedeploy.capture import capture
    from spikedeploy.passes import default_pipeline

    model = s256_model
    xt, xs, ref = s256_inputs
    with torch.no_grad():
        memory = model.template_branch(xt)
    gs = default_pipeline().apply(capture(model.search_net(memory), xs, name="spiketrack-s256-t1/search"))
    g = ExpandSpikes("binary").apply(gs)
    assert sum(isinstance(n.op, O.MemoryRead) for n in g.nodes) == 12
    assert any(isinstance(n.op, O.Upsample) for n in g.nodes)
    art, _ = _round_trip(g, xs.double(), tmp_path / "search.nir", "binary")
    assert len(art.graph.neurons()) == 171
