"""NIR exporter: exact round trip of the SDT test model, file layout, errors."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

nir = pytest.importorskip("nir")

from spikedeploy import api
from spikedeploy.capture import capture
from spikedeploy.errors import ConfigError, SpikedeployError, UnsupportedOpError
from spikedeploy.exporters import nir as NX
from spikedeploy.ir import ops as O
from spikedeploy.ir.graph import Graph, Node, TensorSpec
from spikedeploy.passes import ExpandSpikes, default_pipeline
from spikedeploy.reference import run
from spikedeploy.runtimes import nir as NR

CASES = [("ilif", 1), ("nilif", 3), ("integer_if", 3), ("binary_lif", 3), ("dilif", 2)]

_graphs = {}


def sdt_graph(kind: str, T: int):
    """Folded/fused integer graph of the SDT test model and a seeded input [T, 2, ...]."""
    if (kind, T) not in _graphs:
        loaded = api.build_model("sdt-test", neuron=kind, timesteps=T)
        x = torch.randn((T, 2) + loaded.input_shape, generator=torch.Generator().manual_seed(7))
        g = default_pipeline().apply(capture(loaded.module, x[:, :1]))
        _graphs[(kind, T)] = (g, x)
    return _graphs[(kind, T)]


def assert_same_graph(a: Graph, b: Graph):
    assert a.inputs == b.inputs
    assert a.outputs == b.outputs
    assert a.meta == b.meta
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


@pytest.mark.parametrize("kind,T", CASES)
@pytest.mark.parametrize("encoding", ["integer", "binary"])
def test_sdt_round_trip_is_exact(tmp_path, kind, T, encoding):
    g, x = sdt_graph(kind, T)
    if encoding != "integer":
        g = ExpandSpikes(encoding).apply(g)
    path = NX.export(g, tmp_path / "model.nir", encoding=encoding)
    assert path.is_file() and [p.name for p in tmp_path.iterdir()] == ["model.nir"]

    art = NX.load(path)
    assert art.encoding == encoding
    assert_same_graph(g, art.graph)
    # IR node names are the NIR node names (per-layer comparisons across tools)
    assert {n.name for n in g.nodes} <= set(art.nir_graph.nodes)

    ref = run(g, x)
    got = NR.run(art, x)
    assert got.target == "nir" and got.encoding == encoding
    assert set(got.spike_counts) == {n.name for n in g.neurons()}
    spikes = 0
    for n in g.neurons():
        q = ref.records[n.name].q
        assert torch.equal(q, got.spike_counts[n.name]), n.name
        spikes += int(q.sum())
    assert spikes > 0
    for o in g.outputs:
        assert torch.equal(ref.outputs[o], got.outputs[o])


def test_graded_round_trip(tmp_path):
    g, x = sdt_graph("ilif", 1)
    g = ExpandSpikes("graded").apply(g)
    art = NX.load(NX.export(g, tmp_path / "g.nir", encoding="graded"))
    assert_same_graph(g, art.graph)
    r = NR.run(art, x)
    assert torch.equal(r.outputs["head"], run(g, x).outputs["head"])


def test_file_layout_and_metadata(tmp_path):
    g, _ = sdt_graph("integer_if", 3)
    art = NX.load(NX.export(g, tmp_path / "m.nir", encoding="integer"))
    ng = art.nir_graph
    assert ng.metadata["format"] == NX.FORMAT and ng.metadata["encoding"] == "integer"
    assert float(ng.metadata["dt"]) == NX.DT and "macro-step" in ng.metadata["time_step"]
    # standard nodes
    assert isinstance(ng.nodes["stem_conv"], nir.Conv2d)
    assert isinstance(ng.nodes["attn.q_conv.0"], nir.Conv1d)
    assert isinstance(ng.nodes["head"], nir.Affine)
    assert isinstance(ng.nodes["flatten_7"], nir.Flatten)
    # portable profile: dims counted from the end (the same axes with or without a batch axis)
    assert (ng.nodes["flatten_7"].start_dim, ng.nodes["flatten_7"].end_dim) == (-2, -1)
    assert isinstance(ng.nodes["input"], nir.Input) and ("input", "stem_conv") in ng.edges
    add = ng.nodes["add"]  # Add = Scale(1) with two incoming edges (NIR sums edges)
    assert isinstance(add, nir.Scale) and np.all(add.scale == 1.0)
    assert {e for e in ng.edges if e[1] == "add"} == {("down_conv", "add"), ("sepconv.pwconv2.0", "add")}
    assert ("head", "output") in ng.edges and isinstance(ng.nodes["output"], nir.Output)
    # integer IF: composite of standard nodes, parameters in metadata
    spk = ng.nodes["down_spike"]
    assert isinstance(spk, nir.NIRGraph)
    assert isinstance(spk.nodes["membrane"], nir.I)  # leak 1 -> integrator
    levels = sorted(float(spk.nodes[f"level_{k}"].threshold.flat[0]) for k in range(1, 9))
    assert levels == [k - 0.5 for k in range(1, 9)]
    assert ("reset", "membrane") in spk.edges and np.all(spk.nodes["reset"].scale == -1.0)
    assert np.all(spk.nodes["emit"].scale == 1 / 8)
    md = spk.metadata
    assert int(md["d"]) == 8 and float(md["norm"]) == 8.0 and float(md["leak"]) == 1.0
    assert md["rounding"] == "half_even" and md["encoding"] == "integer" and int(md["window"]) == 8
    # attention: extension node with its parameters
    att = ng.nodes["attn.attn"]
    assert isinstance(att, nir.Input) and att.metadata["extension"] == "SpikeLinearAttention"
    assert "attn.attn" in ng.metadata["extension_nodes"]


def test_binary_lif_mappings(tmp_path):
    """beta = 0 -> nir.LIF (snntorch's parameter convention); beta != 0 -> soft-reset composite."""
    nodes = (
        Node("a", O.BinaryLIF(beta=0.0, threshold=0.75), ("x",)),
        Node("fc", O.Linear(weight=O.as_param(np.eye(3)), bias=None), ("a",)),
        Node("b", O.BinaryLIF(beta=0.5, threshold=1.0), ("fc",)),
    )
    g = Graph(inputs=(TensorSpec("x", (3,)),), nodes=nodes, outputs=("b",))
    path = NX.export(g, tmp_path / "l.nir", encoding="integer")
    ng = nir.read(path)  # standard nodes only: passes NIR's own type checking
    a = ng.nodes["a"]
    assert isinstance(a, nir.LIF)
    np.testing.assert_array_equal(a.tau, NX.DT)
    np.testing.assert_array_equal(a.r, 1.0)
    np.testing.assert_array_equal(a.v_threshold, 0.75)
    np.testing.assert_array_equal(a.v_reset, 0.0)
    assert isinstance(ng.nodes["fc"], nir.Linear)
    b = ng.nodes["b"]
    assert isinstance(b, nir.NIRGraph) and isinstance(b.nodes["membrane"], nir.LI)
    np.testing.assert_allclose(1 - NX.DT / b.nodes["membrane"].tau, 0.5)
    np.testing.assert_array_equal(b.nodes["spike"].threshold, 1.0)
    np.testing.assert_array_equal(b.nodes["reset"].scale, -0.5)
    assert ("reset", "membrane") in b.edges


# ---------------------------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------------------------


def attention_graph() -> Graph:
    nodes = (
        Node("spk", O.IntegerLIF(d=2, norm=2.0), ("x",)),
        Node("attn", O.SpikeLinearAttention(num_heads=2, scale=0.5), ("spk", "spk", "spk"), source="blk.attn"),
    )
    return Graph(inputs=(TensorSpec("x", (4, 6)),), nodes=nodes, outputs=("attn",))


def test_unsupported_op_without_extensions(tmp_path):
    out = tmp_path / "a.nir"
    with pytest.raises(UnsupportedOpError) as ei:
        NX.export(attention_graph(), out, encoding="integer", extensions=False)
    msg = str(ei.value)
    assert "SpikeLinearAttention" in msg and "'attn'" in msg and "'nir'" in msg and "blk.attn" in msg
    assert ei.value.exit_code == 2
    assert list(tmp_path.iterdir()) == []


def test_extension_node_round_trips_and_passes_nir_read(tmp_path):
    g = attention_graph()
    path = NX.export(g, tmp_path / "a.nir", encoding="integer")
    art = NX.load(path)
    assert_same_graph(g, art.graph)
    x = torch.randn(2, 3, 4, 6, generator=torch.Generator().manual_seed(0)) * 2
    ref = run(g, x)
    assert ref.records["spk"].q.sum() > 0
    assert torch.equal(NR.run(art, x).outputs["attn"], ref.outputs["attn"])
    # the repeated input is one NIR edge into the op's one Output port; the order lives in the
    # metadata; the op's result is a NIR Input, so the file passes NIR's own checks but no
    # standard consumer can compute the op
    ng = art.nir_graph
    assert [e for e in ng.edges if e[1].startswith("attn")] == [("spk", "attn.in0")]
    assert isinstance(ng.nodes["attn.in0"], nir.Output) and isinstance(ng.nodes["attn"], nir.Input)
    assert ("attn", "output") in ng.edges
    default = nir.read(path)
    assert set(default.nodes) == set(ng.nodes) and sorted(default.edges) == sorted(ng.edges)
    assert set(default.inputs) == {"input", "attn"}


def test_corrupt_and_truncated_files(tmp_path):
    g, _ = sdt_graph("ilif", 1)
    good = NX.export(g, tmp_path / "good.nir", encoding="integer")
    data = good.read_bytes()
    trunc = tmp_path / "trunc.nir"
    trunc.write_bytes(data[: len(data) // 2])
    garbage = tmp_path / "garbage.nir"
    garbage.write_bytes(b"not an hdf5 file at all" * 10)
    empty = tmp_path / "empty.nir"
    empty.write_bytes(b"")
    for p in (trunc, garbage, empty):
        with pytest.raises(SpikedeployError, match=str(p.name)):
            NX.load(p)
    with pytest.raises(SpikedeployError, match="does not exist"):
        NX.load(tmp_path / "missing.nir")
    with pytest.raises(SpikedeployError, match="not a file"):
        NX.load(tmp_path)


def test_foreign_nir_file_is_rejected_clearly(tmp_path):
    foreign = nir.NIRGraph.from_list(nir.Affine(weight=np.ones((2, 3)), bias=np.zeros(2)))
    p = tmp_path / "foreign.nir"
    nir.write(p, foreign)
    with pytest.raises(SpikedeployError, match="foreign.nir.*not written by spikedeploy"):
        NX.load(p)


def test_directory_as_output_path(tmp_path):
    d = tmp_path / "out.nir"
    d.mkdir()
    g, _ = sdt_graph("ilif", 1)
    with pytest.raises(SpikedeployError, match="directory"):
        NX.export(g, d, encoding="integer")
    assert list(d.iterdir()) == [] and sorted(p.name for p in tmp_path.iterdir()) == ["out.nir"]


def test_encoding_must_match_graph(tmp_path):
    g, _ = sdt_graph("ilif", 1)
    with pytest.raises(ConfigError, match="ExpandSpikes"):
        NX.export(g, tmp_path / "x.nir", encoding="binary")
    with pytest.raises(ConfigError):
        NX.export(ExpandSpikes("binary").apply(g), tmp_path / "x.nir", encoding="integer")
    with pytest.raises(ConfigError, match="unknown"):
        NX.export(g, tmp_path / "x.nir", encoding="float")
    assert list(tmp_path.iterdir()) == []


def test_failed_write_leaves_old_file_intact(tmp_path, monkeypatch):
    g, _ = sdt_graph("ilif", 1)
    path = NX.export(g, tmp_path / "m.nir", encoding="integer")
    before = path.read_bytes()

    def boom(*a, **k):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(nir, "write", boom)
    with pytest.raises(RuntimeError):
        NX.export(g, path, encoding="integer", overwrite=True)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.nir"]


def test_names_with_slashes_survive(tmp_path):
    nodes = (Node("blk/spk", O.IntegerLIF(d=3, norm=3.0, leak=0.25), ("in/x",)),)
    g = Graph(inputs=(TensorSpec("in/x", (5,)),), nodes=nodes, outputs=("blk/spk",))
    art = NX.load(NX.export(g, tmp_path / "s.nir", encoding="integer"))
    assert_same_graph(g, art.graph)
    assert "blk%2Fspk" in art.nir_graph.nodes


def test_target_registry_finds_the_modules():
    from spikedeploy.targets import get_target

    spec = get_target("nir")
    exp = spec.exporter_module()
    assert exp.ENCODINGS == ("integer", "binary", "graded")
    assert all(op in exp.RULES for op in (O.Conv2d, O.Linear, O.IntegerLIF, O.BinaryLIF, O.SpikeLinearAttention))
    assert callable(spec.runtime_module().run)


def test_every_other_op_round_trips(tmp_path):
    rng = np.random.default_rng(0)
    p = lambda *s: O.as_param(rng.normal(size=s))
    nodes = (
        Node("bn", O.BatchNorm(mean=p(4), var=O.as_param(rng.uniform(0.5, 2, 4)), weight=p(4), bias=p(4)), ("x",)),
        Node("perm", O.Permute(perm=(1, 0)), ("bn",)),
        Node("cat", O.Concat(axis=0), ("perm", "perm")),
        Node("lin", O.Linear(weight=p(3, 4), bias=None), ("cat",)),
        Node("mean", O.MeanReduce(axes=(1,)), ("lin",)),
        Node("sc", O.Scale(factor=0.1 + 0.2), ("mean",)),
        Node("addc", O.AddConstant(value=p(12)), ("sc",)),
        Node("unflat", O.Reshape(shape=(3, 4)), ("addc",)),
        Node("spk", O.IntegerLIF(d=3, norm=3.0, rounding="half_up", label="SDT-large"), ("unflat",)),
        Node("conv", O.Conv1d(weight=p(2, 3, 2), bias=None, stride=2), ("spk",)),
    )
    g = Graph(inputs=(TensorSpec("x", (4, 6)),), nodes=nodes, outputs=("conv", "spk"), meta=(("model", "t"),))
    art = NX.load(NX.export(g, tmp_path / "o.nir", encoding="integer"))
    assert_same_graph(g, art.graph)
    ng = art.nir_graph
    bn = ng.nodes["bn"]  # 1x1 conv with a diagonal weight (dense: NIR's types ignore groups)
    assert isinstance(bn, nir.Conv1d) and bn.groups == 1 and bn.weight.shape == (4, 4, 1)
    assert np.count_nonzero(bn.weight) == 4
    assert set(ng.metadata["extension_nodes"].split(", ")) == {"perm", "cat", "lin", "mean", "addc", "unflat"}
    assert {"output", "output_1"} <= set(ng.nodes)
    x = torch.randn(2, 3, 4, 6, generator=torch.Generator().manual_seed(0)) * 3
    ref, got = run(g, x), NR.run(art, x)
    assert ref.records["spk"].q.sum() > 0
    assert torch.equal(ref.records["spk"].q, got.spike_counts["spk"])
    assert all(torch.equal(ref.outputs[o], got.outputs[o]) for o in g.outputs)
