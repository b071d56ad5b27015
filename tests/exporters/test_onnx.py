"""ONNX exporter (spikedeploy.exporters.onnx): model structure, checker, metadata, errors, and
exactness of every op rule on small hand-built graphs."""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
import onnx
import pytest
import torch

from spikedeploy import api
from spikedeploy.capture import capture
from spikedeploy.errors import ConfigError, OutputPathError, SpikedeployError, UnsupportedOpError
from spikedeploy.exporters import onnx as E
from spikedeploy.ir import Graph, Node, TensorSpec, ops as O
from spikedeploy.passes import ExpandSpikes, default_pipeline
from spikedeploy.reference import execute
from spikedeploy.runtimes import onnx as R
from spikedeploy.targets import get_target

#: float64 export vs float64 reference, outputs: both compute the same ops in double but
#: onnxruntime accumulates sums in another order, so outputs agree to round-off of sums of up to
#: ~1e3 terms (~1e-13 relative); 1e-9 / 1e-12 (the equivalence engine's float64 bounds) is loose
#: for that and still far below any real error (a flipped spike moves an output by ~1e-2).
OUTPUT_RTOL_F64, OUTPUT_ATOL_F64 = 1e-9, 1e-12


@pytest.fixture(scope="module")
def sdt():
    """Folded SDT test graph (I-LIF, T=2) and inputs."""
    T = 2
    lm = api.build_model("sdt-test", neuron="ilif", timesteps=T)
    x = api.make_inputs(lm, timesteps=T, num_inputs=2, seed=3)
    g = default_pipeline().apply(capture(lm.module, x[:, :1], name=lm.name))
    return g, x


def _rng(seed=0):
    return np.random.default_rng(seed)


def _p(a):
    return O.as_param(a)


def _op_graph() -> Graph:
    """Every op rule that the SDT test model does not exercise: AvgPool2d with padding, BatchNorm,
    Scale, Permute, Concat, MeanReduce(keepdim), strided/dilated/grouped Conv2d, Conv1d with
    stride and padding, Linear without bias, half-up stateful I-LIF with per-step leaks,
    leaky DI-LIF, binary LIF."""
    r = _rng(1)
    C = 4
    nodes = [
        Node("n0", O.IntegerLIF(d=3, norm=3.0, leak=(0.5, 0.8, 0.3), rounding="half_up", reset_norm=3.0), ("x",)),
        Node("conv_a", O.Conv2d(weight=_p(r.normal(size=(6, 2, 3, 3))), bias=_p(r.normal(size=6)),
                                stride=(2, 1), padding=(2, 1), dilation=(2, 1), groups=2), ("n0",)),
        Node("bn", O.BatchNorm(mean=_p(r.normal(size=6)), var=_p(r.uniform(0.5, 2, 6)),
                               weight=_p(r.uniform(1, 2, 6)), bias=_p(r.normal(size=6)), eps=1e-3), ("conv_a",)),
        Node("pool", O.AvgPool2d(kernel=(3, 2), stride=(1, 2), padding=(1, 1)), ("bn",)),
        Node("n1", O.DynamicIntegerLIF(d_init=2, gate_w=8.0, gate_b=1.0, leak=0.5), ("pool",)),
        Node("sc", O.Scale(2.5), ("n1",)),
        Node("flat", O.Reshape((6, 12)), ("sc",)),
        Node("perm", O.Permute((1, 0)), ("flat",)),
        Node("perm2", O.Permute((1, 0)), ("perm",)),
        Node("cat", O.Concat(axis=0), ("flat", "perm2")),
        Node("c1", O.Conv1d(weight=_p(r.normal(size=(5, 12, 3)) * 0.3), bias=_p(np.full(5, 2.0)), stride=2, padding=1), ("cat",)),
        Node("n2", O.BinaryLIF(beta=0.6, threshold=0.4), ("c1",)),
        Node("mean", O.MeanReduce(axes=(1,), keepdim=True), ("n2",)),
        Node("mean2", O.MeanReduce(axes=(1,)), ("mean",)),
        Node("lin", O.Linear(weight=_p(r.normal(size=(3, 5)))), ("mean2",)),
    ]
    return Graph(inputs=(TensorSpec("x", (C, 7, 5)),), nodes=tuple(nodes), outputs=("lin", "n1"),
                 meta=(("capture_T", 3),))


def _x(shape, T=3, B=3, seed=0):
    return torch.randn((T, B) + tuple(shape), generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 2


def _check_exact(graph, x, path, *, precision="float64", dtype=torch.float64):
    E.export(graph, path, precision=precision, timesteps=x.shape[0])
    got = R.run(E.load(path), x)
    ref = execute(graph, x, "integer", dtype=dtype)
    for n in graph.neurons():
        q = ref.neuron_q(n.name)
        assert q.sum() > 0, f"no spikes in {n.name}: the comparison would prove nothing"
        assert torch.equal(got.spike_counts[n.name].to(q.dtype), q), n.name
    return got, ref


# ---------------------------------------------------------------------------------------------
# model structure, checker, metadata
# ---------------------------------------------------------------------------------------------


def test_registered_target_and_contract():
    spec = get_target("onnx")
    assert spec.exporter_module() is E and spec.runtime_module() is R
    assert E.ENCODINGS == ("integer",)
    for op in (O.Conv2d, O.Conv1d, O.Linear, O.AvgPool2d, O.MeanReduce, O.Scale, O.BatchNorm, O.Add,
               O.AddConstant, O.Reshape, O.Permute, O.Concat, O.IntegerLIF, O.DynamicIntegerLIF,
               O.BinaryLIF, O.SpikeLinearAttention):
        assert op in E.RULES


def test_checker_and_metadata_round_trip(sdt, tmp_path):
    g, x = sdt
    path = E.export(g, tmp_path / "m.onnx")
    assert path == tmp_path / "m.onnx" and path.is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["m.onnx"]  # no temporary file left
    art = E.load(path)
    onnx.checker.check_model(art.model, full_check=True)
    m = art.metadata
    assert m["format"] == E.FORMAT and m["encoding"] == "integer" and m["precision"] == "float64"
    assert m["timesteps"] == 2 == g.meta_dict()["capture_T"]
    assert m["version"] and m["version"] == art.model.producer_version
    assert m["graph_outputs"] == list(g.outputs) and set(m["outputs"]) == set(g.outputs)
    assert set(m["neurons"]) == {n.name for n in g.neurons()} and len(m["neurons"]) == 14
    assert m["graph_meta"]["model"] == "sdt-test"
    assert m["inputs"] == [{"ir": "x", "onnx": "x", "shape": [3, 16, 16]}]
    # ONNX names are sanitized (no dots), every mapped name is a real graph output
    outs = {o.name: o for o in art.model.graph.output}
    for onnx_name in list(m["neurons"].values()) + list(m["outputs"].values()):
        assert onnx_name in outs and "." not in onnx_name
    assert m["neurons"]["attn.q_spike"] == "q_attn_q_spike"
    # [T, batch, *s] with a symbolic batch dimension
    dims = outs[m["neurons"]["attn.q_spike"]].type.tensor_type.shape.dim
    assert dims[0].dim_value == 2 and dims[1].dim_param == E.BATCH_DIM and [d.dim_value for d in dims[2:]] == [16, 64]
    inp = art.model.graph.input[0].type.tensor_type
    assert inp.elem_type == onnx.TensorProto.DOUBLE and inp.shape.dim[1].dim_param == E.BATCH_DIM
    assert art.model.opset_import[0].version == E.OPSET


def test_float64_has_no_float_only_kernels_float32_uses_native(sdt, tmp_path):
    """onnxruntime's CPU provider has no double Conv/AveragePool: the float64 export writes them as
    im2col sub-graphs; the float32 export uses the native nodes."""
    g, x = sdt
    m64 = E.load(E.export(g, tmp_path / "a.onnx")).model
    m32 = E.load(E.export(g, tmp_path / "b.onnx", precision="float32")).model
    ops64 = {n.op_type for n in m64.graph.node}
    ops32 = {n.op_type for n in m32.graph.node}
    assert not ops64 & {"Conv", "AveragePool"} and {"MatMul", "Round", "Clip"} <= ops64
    assert "Conv" in ops32
    assert all(t.data_type == onnx.TensorProto.DOUBLE for t in m64.graph.initializer if t.data_type != onnx.TensorProto.INT64)
    assert all(t.data_type == onnx.TensorProto.FLOAT for t in m32.graph.initializer if t.data_type != onnx.TensorProto.INT64)


def test_every_op_rule_exact_float64(tmp_path):
    g = _op_graph()
    x = _x((4, 7, 5))
    got, ref = _check_exact(g, x, tmp_path / "ops.onnx")
    for o in g.outputs:
        torch.testing.assert_close(got.outputs[o], ref.outputs[o], rtol=OUTPUT_RTOL_F64, atol=OUTPUT_ATOL_F64)
    # DI-LIF's limit really varied per frame, so the per-sample D path is exercised
    assert len(torch.unique(ref.records["n1"].d)) > 1


def test_every_op_rule_float32(tmp_path):
    """float32 export vs the float32 reference: the same ops, other summation orders; on this
    seeded input no membrane lands within float32 round-off of a boundary, so q is exact."""
    g = _op_graph()
    x = _x((4, 7, 5), seed=4)
    got, ref = _check_exact(g, x, tmp_path / "ops32.onnx", precision="float32", dtype=torch.float32)
    assert got.outputs["lin"].dtype == torch.float32
    torch.testing.assert_close(got.outputs["lin"], ref.outputs["lin"], rtol=1e-4, atol=1e-5)


def test_attention_heads_and_stateless_dilif(tmp_path):
    r = _rng(2)
    C, N = 6, 5
    nodes = (
        Node("q", O.IntegerLIF(d=2, norm=2.0), ("x",)),
        Node("kc", O.Conv1d(weight=_p(r.normal(size=(C, C, 1))), bias=_p(r.normal(size=C))), ("x",)),
        Node("k", O.DynamicIntegerLIF(d_init=3, gate_w=-0.4, gate_b=0.1), ("kc",)),
        Node("v", O.IntegerLIF(d=4, norm=4.0, leak=1.0), ("x",)),
        Node("att", O.SpikeLinearAttention(num_heads=3, scale=0.7), ("q", "k", "v")),
        Node("pe", O.AddConstant(_p(r.normal(size=(1, N)))), ("att",)),
        Node("out", O.IntegerLIF(d=4, norm=1.0), ("pe",)),
        Node("res", O.Add(), ("pe", "out")),
    )
    g = Graph(inputs=(TensorSpec("x", (C, N)),), nodes=nodes, outputs=("res",))
    x = _x((C, N), T=2, B=4, seed=5)
    got, ref = _check_exact(g, x, tmp_path / "att.onnx")  # no capture_T: timesteps passed explicitly
    torch.testing.assert_close(got.outputs["res"], ref.outputs["res"], rtol=OUTPUT_RTOL_F64, atol=OUTPUT_ATOL_F64)


# ---------------------------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, eq=False)
class Mystery(O.Op):
    """An op no target knows."""

    def infer_shape(self, s):
        return tuple(s)


def _mystery_graph():
    return Graph(
        inputs=(TensorSpec("x", (3,)),),
        nodes=(Node("pre", O.IntegerLIF(d=2, norm=2.0), ("x",)), Node("odd.one", Mystery(), ("pre",), source="model.odd")),
        outputs=("odd.one",),
        meta=(("capture_T", 1),),
    )


def test_unsupported_op_named_and_nothing_written(tmp_path):
    target = tmp_path / "m.onnx"
    target.write_bytes(b"previous")
    with pytest.raises(OutputPathError, match="already exists"):  # never replaced unasked
        E.export(_mystery_graph(), target)
    with pytest.raises(UnsupportedOpError) as ei:  # asked to replace: refused before writing
        E.export(_mystery_graph(), target, overwrite=True)
    msg = str(ei.value)
    assert "'onnx'" in msg and "Mystery" in msg and "'odd.one'" in msg and "model.odd" in msg
    assert ei.value.exit_code == 2
    assert target.read_bytes() == b"previous"  # untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


def test_lowered_graph_rejected(sdt, tmp_path):
    g, _ = sdt
    lowered = ExpandSpikes("binary").apply(g)
    with pytest.raises(SpikedeployError, match=r"integer \(un-lowered\).*'binary'"):
        E.export(lowered, tmp_path / "m.onnx")
    with pytest.raises(ConfigError, match="integer"):
        E.export(g, tmp_path / "m.onnx", encoding="binary")
    with pytest.raises(ConfigError, match="precision"):
        E.export(g, tmp_path / "m.onnx", precision="float16")
    assert not list(tmp_path.iterdir())


def test_timesteps_required_and_checked(tmp_path):
    g = _op_graph()
    with pytest.raises(ConfigError, match="timesteps"):
        E.export(dataclasses.replace(g, meta=()), tmp_path / "a.onnx")
    with pytest.raises(ConfigError, match="positive integer"):
        E.export(g, tmp_path / "a.onnx", timesteps=0)
    # n0 has 3 per-step leaks: T = 4 is the most it supports
    with pytest.raises(SpikedeployError, match=r"'n0'.*3 per-step leaks.*T=5"):
        E.export(g, tmp_path / "a.onnx", timesteps=5)
    assert not list(tmp_path.iterdir())
    assert E.load(E.export(g, tmp_path / "a.onnx", timesteps=4)).timesteps == 4


def test_bad_output_paths(sdt, tmp_path):
    g, _ = sdt
    d = tmp_path / "dir.onnx"
    d.mkdir()
    with pytest.raises(SpikedeployError, match="existing directory"):
        E.export(g, d)
    assert list(d.iterdir()) == []
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(SpikedeployError, match="not a writable directory"):
        E.export(g, f / "m.onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir.onnx", "file"]


def test_unwritable_directory(sdt, tmp_path, monkeypatch):
    g, _ = sdt
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        if os.access(ro, os.W_OK):  # running as root: permission bits do not apply
            monkeypatch.setattr(os, "access", lambda p, mode, **kw: False)
        with pytest.raises(SpikedeployError, match="not a writable directory"):
            E.export(g, ro / "m.onnx")
    finally:
        monkeypatch.undo()
        ro.chmod(0o755)
    assert list(ro.iterdir()) == []


def test_write_failure_leaves_nothing(sdt, tmp_path, monkeypatch):
    g, _ = sdt

    def boom(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", boom)
    with pytest.raises(SpikedeployError, match="No space left"):
        E.export(g, tmp_path / "m.onnx")
    assert list(tmp_path.iterdir()) == []


def test_load_errors(sdt, tmp_path):
    with pytest.raises(SpikedeployError, match="does not exist"):
        E.load(tmp_path / "missing.onnx")
    with pytest.raises(SpikedeployError, match="not a file"):
        E.load(tmp_path)
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07garbage\xff\xff\xff")
    with pytest.raises(SpikedeployError, match="not a valid ONNX model"):
        E.load(bad)
    g, _ = sdt
    good = E.export(g, tmp_path / "good.onnx")
    trunc = tmp_path / "trunc.onnx"
    trunc.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(SpikedeployError, match="corrupt|not a valid"):
        E.load(trunc)
    foreign = onnx.load(good)
    del foreign.metadata_props[:]
    onnx.save(foreign, tmp_path / "foreign.onnx")
    with pytest.raises(SpikedeployError, match="not one written by spikedeploy"):
        E.load(tmp_path / "foreign.onnx")


def test_sanitize_unique_names():
    assert E.sanitize("attn.q_spike") == "attn_q_spike"
    assert E.sanitize("0x") == "_0x"
    # two IR names that sanitize alike still get distinct ONNX outputs
    g = Graph(
        inputs=(TensorSpec("x", (4,)),),
        nodes=(Node("a.b", O.IntegerLIF(d=2, norm=2.0), ("x",)), Node("a_b", O.IntegerLIF(d=2, norm=2.0), ("a.b",))),
        outputs=("a_b",),
    )
    model = E.build_model(g, timesteps=1)
    meta = E.read_metadata(model)
    assert len(set(meta["neurons"].values())) == 2
    assert json.loads(json.dumps(meta)) == meta


@pytest.mark.parametrize("rounding", ["half_even", "half_up"])
def test_rounding_at_exact_half_boundaries(rounding, tmp_path):
    """Membranes exactly at k + 0.5: ONNX Round (half to even) vs Floor(c + 0.5) (half up) must
    follow the reference; random inputs never hit a boundary exactly, so this is checked here."""
    vals = torch.tensor([-0.5, 0.0, 0.5, 1.5, 2.5, 3.5, 4.5, 7.5], dtype=torch.float64)
    x = vals.repeat(2, 2, 1)  # [T=2, B=2, 8]
    g = Graph(
        inputs=(TensorSpec("x", (8,)),),
        nodes=(
            Node("stateless", O.IntegerLIF(d=4, norm=4.0, rounding=rounding), ("x",)),
            Node("leaky", O.IntegerLIF(d=4, norm=1.0, leak=0.0, rounding=rounding), ("x",)),
            Node("sum", O.Add(), ("stateless", "leaky")),
        ),
        outputs=("sum",),
    )
    got, ref = _check_exact(g, x, tmp_path / "r.onnx")
    expected = [0, 0, 0, 2, 2, 4, 4, 4] if rounding == "half_even" else [0, 0, 1, 2, 3, 4, 4, 4]
    assert got.spike_counts["stateless"][0, 0].tolist() == expected
    assert got.spike_counts["leaky"][1, 0].tolist() == expected  # (m - q) * 0 + x = x at t = 1
