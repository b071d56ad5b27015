"""Every NIR file spikedeploy writes is a NIR file other tools can open: ``nir.read`` with its default
type checking accepts it, a ``nir.write``/``nir.read`` round trip loses nothing, and spikedeploy
reads every profile back to the identical IR graph. Run over every model the suite exports (the
SDT test model with every neuron kind and encoding, the SpikeTrack branch, the memory-op graphs,
the peer-matrix networks), in every profile."""

from __future__ import annotations

import dataclasses
import io

import numpy as np
import pytest
import torch

nir = pytest.importorskip("nir")

from spikedeploy import api
from spikedeploy.capture import capture
from spikedeploy.errors import ConfigError
from spikedeploy.exporters import nir as NX
from spikedeploy.ir import ops as O
from spikedeploy.ir.graph import Graph, Node, TensorSpec
from spikedeploy.models.neurons import NEURON_KINDS
from spikedeploy.passes import ExpandSpikes, default_pipeline
from spikedeploy.reference import run
from spikedeploy.runtimes import nir as NR

PROFILES = sorted(NX.PROFILES)
_cache = {}


def sdt(kind: str, T: int = 2):
    if kind not in _cache:
        loaded = api.build_model("sdt-test", neuron=kind, timesteps=T)
        x = torch.randn((T, 2) + loaded.input_shape, generator=torch.Generator().manual_seed(11))
        _cache[kind] = (default_pipeline().apply(capture(loaded.module, x[:, :1])), x)
    return _cache[kind]


def same_value(a, b, where):
    if isinstance(a, NX._nir().NIRNode) or isinstance(b, NX._nir().NIRNode):
        same_node(a, b, where)
    elif isinstance(a, dict) or isinstance(b, dict):
        assert isinstance(a, dict) and isinstance(b, dict) and set(a) == set(b), (where, a, b)
        for k in a:
            same_value(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (str, bytes)) or isinstance(b, (str, bytes)):
        da = a.decode() if isinstance(a, bytes) else a
        db = b.decode() if isinstance(b, bytes) else b
        assert da == db, where
    elif a is None or b is None:
        assert a is b, where
    else:
        aa, bb = np.asarray(a), np.asarray(b)
        assert aa.shape == bb.shape and np.array_equal(aa, bb), (where, a, b)
        if aa.dtype.kind == "f" or bb.dtype.kind == "f":
            assert aa.dtype == bb.dtype or aa.ndim == 0, (where, aa.dtype, bb.dtype)


def same_node(a, b, where="graph"):
    assert type(a) is type(b), (where, type(a), type(b))
    if isinstance(a, nir.NIRGraph):
        assert set(a.nodes) == set(b.nodes), where  # HDF5 keeps groups sorted by name
        assert [tuple(e) for e in a.edges] == [tuple(e) for e in b.edges], where
        for k in a.nodes:
            same_node(a.nodes[k], b.nodes[k], f"{where}/{k}")
        same_value(a.metadata, b.metadata, f"{where}.metadata")
        return
    for f in dataclasses.fields(a):
        same_value(getattr(a, f.name), getattr(b, f.name), f"{where}.{f.name}")


def assert_readable_and_lossless(g: Graph, tmp_path, encoding: str, profile: str, x=None):
    path = NX.export(g, tmp_path / f"{profile}.nir", encoding=encoding, profile=profile)
    built = NX.build_nir_graph(g, encoding=encoding, profile=profile)
    read = nir.read(path)  # NIR's default checks (type checking) accept the file
    assert read.metadata["profile"] == profile
    same_node(built, read)  # what was built is what the file holds
    buf = io.BytesIO()
    nir.write(buf, read)
    again = nir.read(io.BytesIO(buf.getvalue()))
    same_node(read, again)  # nir.write / nir.read lose nothing
    # spikedeploy reads every profile back to the identical IR graph
    art = NX.load(path)
    assert art.graph.inputs == g.inputs and art.graph.outputs == g.outputs and art.graph.meta == g.meta
    assert [n.name for n in art.graph.nodes] == [n.name for n in g.nodes]
    for na, nb in zip(g.nodes, art.graph.nodes):
        assert type(na.op) is type(nb.op) and na.inputs == nb.inputs, na.name
        for f in dataclasses.fields(na.op):
            va, vb = getattr(na.op, f.name), getattr(nb.op, f.name)
            if isinstance(va, np.ndarray):
                assert vb.dtype == np.float64 and np.array_equal(va, vb), (na.name, f.name)
            else:
                assert type(va) is type(vb) and va == vb, (na.name, f.name)
    if x is not None:
        ref, got = run(g, x), NR.run(art, x)
        for o in g.outputs:
            assert torch.equal(ref.outputs[o], got.outputs[o]), o
    return read


@pytest.mark.parametrize("encoding,profile", [("integer", "portable"), ("binary", "portable"),
                                              ("graded", "portable"), ("integer", "literal")])
@pytest.mark.parametrize("kind", sorted(NEURON_KINDS))
def test_sdt_files_pass_nir_read(tmp_path, kind, encoding, profile):
    g, x = sdt(kind)
    if encoding != "integer":
        g = ExpandSpikes(encoding).apply(g)
    read = assert_readable_and_lossless(g, tmp_path, encoding, profile, x if profile == "portable" else None)
    names = set(read.nodes)
    if profile == "portable":
        assert "input" in names and "x" not in names
    else:
        assert "x" in names and "input" not in names
    assert "output" in names


def tiny_graphs():
    """Small graphs with every op the exporter has a rule for (standard nodes, composites and
    extension nodes: grouped convolutions, pooling, attention, memory ops, upsampling)."""
    rng = np.random.default_rng(0)
    p = lambda *s: O.as_param(rng.normal(size=s))  # noqa: E731
    conv = (
        Node("dw", O.Conv2d(weight=p(4, 1, 3, 3), bias=p(4), padding=(1, 1), groups=4), ("x",)),
        Node("bn", O.BatchNorm(mean=p(4), var=O.as_param(rng.uniform(0.5, 2, 4)), weight=p(4), bias=p(4)), ("dw",)),
        Node("spk", O.IntegerLIF(d=3, norm=3.0, leak=0.5), ("bn",)),
        Node("pool", O.AvgPool2d(kernel=(2, 2), stride=(2, 2)), ("spk",)),
        Node("lif", O.BinaryLIF(beta=0.5, threshold=0.5), ("pool",)),
        Node("up", O.Upsample(mode="nearest", size=(6, 6)), ("lif",)),
        Node("add", O.Add(), ("up", "spk")),
        Node("flat", O.Reshape(shape=(4, 36)), ("add",)),
        Node("attn", O.SpikeLinearAttention(num_heads=2, scale=0.5), ("flat", "flat", "flat")),
        Node("cat", O.Concat(axis=1), ("attn", "flat")),
        Node("mean", O.MeanReduce(axes=(1,)), ("cat",)),
        Node("fc", O.Linear(weight=p(3, 4), bias=p(3)), ("mean",)),
        Node("out", O.BinaryLIF(beta=0.0, threshold=0.25), ("fc",)),
    )
    yield "mixed", Graph(inputs=(TensorSpec("x", (4, 6, 6)),), nodes=conv, outputs=("out", "attn"))
    names = (  # IR names that NIR's canonical names would take
        Node("input", O.Scale(factor=2.0), ("x",)),
        Node("output", O.BinaryLIF(beta=0.0, threshold=0.5), ("input",)),
        Node("input_", O.Scale(factor=0.5), ("output",)),
    )
    yield "names", Graph(inputs=(TensorSpec("x", (5,)),), nodes=names, outputs=("input_", "output"))


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("case", ["mixed", "names"])
def test_every_op_kind_passes_nir_read(tmp_path, case, profile):
    g = dict(tiny_graphs())[case]
    x = torch.randn((3, 2) + g.inputs[0].shape, generator=torch.Generator().manual_seed(1)) * 2
    read = assert_readable_and_lossless(g, tmp_path, "integer", profile, x)
    if case == "names":
        assert len(set(read.nodes)) == len(read.nodes)
    else:
        # the grouped conv is written dense (NIR types a Conv2d input by weight.shape[1])
        dw = read.nodes["dw"]
        assert int(dw.groups) == 1 and dw.weight.shape == (4, 4, 3, 3)
        assert np.count_nonzero(dw.weight) == np.count_nonzero(g.nodes[0].op.weight)
        pool = read.nodes["pool"]
        assert isinstance(pool, nir.Conv2d if profile == "portable" else nir.AvgPool2d)


def test_spiketrack_search_branch_passes_nir_read(tmp_path):
    loaded = api.build_model("spiketrack-tiny128-t1:search")
    x = torch.rand((1, 1) + loaded.input_shape, generator=torch.Generator().manual_seed(0))
    g = ExpandSpikes("binary").apply(default_pipeline().apply(capture(loaded.module, x)))
    read = assert_readable_and_lossless(g, tmp_path, "binary", "portable")
    assert read.metadata["extension_nodes"]


def test_unknown_profile_is_refused(tmp_path):
    g, _ = sdt("ilif")
    with pytest.raises(ConfigError, match="unknown NIR profile 'sinabs'.*portable"):
        NX.export(g, tmp_path / "m.nir", encoding="integer", profile="sinabs")
    assert list(tmp_path.iterdir()) == []
