"""ONNX exporter: the SpikeTrack ops (MemoryWrite, MemoryRead, Upsample) on hand-built graphs and on
SpikeTrack S256-T1 with the fixture weights.

onnxruntime's q must equal the reference integer run's q exactly in every neuron layer, and the
outputs must agree within the float64 bounds named below (the same bounds as tests/exporters/
test_onnx.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F

from spikedeploy.errors import SpikedeployError
from spikedeploy.exporters import onnx as E
from spikedeploy.ir import Graph, Node, TensorSpec, ops as O
from spikedeploy.reference import execute
from spikedeploy.runtimes import onnx as R

#: float64 export vs float64 reference: the same ops in double, sums (over tokens, channels,
#: interpolation taps) accumulated in another order by onnxruntime: round-off ~1e-13 relative at
#: most. A flipped spike would move an output by >= 1/norm, far above these bounds.
OUTPUT_RTOL_F64, OUTPUT_ATOL_F64 = 1e-9, 1e-12
#: float32 export vs float32 reference (Resize recomputes the bilinear weights in float32)
OUTPUT_RTOL_F32, OUTPUT_ATOL_F32 = 1e-4, 1e-5
#: op types onnxruntime's CPU provider has no double kernel for: never in a float64 export
FLOAT_ONLY_OPS = {"Conv", "AveragePool", "Resize"}


def _p(a):
    return O.as_param(a)


def _x(shape, T=2, B=3, seed=0, scale=2.0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn((T, B) + tuple(shape), generator=g, dtype=torch.float64) * scale


# ---------------------------------------------------------------------------------------------
# hand-built graphs (shared with test_nir_memory_ops.py by copy: test modules are not a package)
# ---------------------------------------------------------------------------------------------


def write_graph(scale: float = 1.0) -> Graph:
    """x -> I-LIF -> (k conv, v conv) -> I-LIFs -> MemoryWrite (the output, [2, 2, 3])."""
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
    """x -> I-LIF -> MemoryRead(random memory, 2 heads, scale) -> I-LIF."""
    r = np.random.default_rng(12)
    C, N = 4, 5
    nodes = (
        Node("n0", O.IntegerLIF(d=4, norm=4.0), ("x",)),
        Node("mr", O.MemoryRead(memory=_p(r.normal(size=(t_mem, 2, 2, 3)) * 2), num_heads=2, scale=scale), ("n0",)),
        Node("out", O.IntegerLIF(d=3, norm=3.0, leak=0.8), ("mr",)),
    )
    return Graph(inputs=(TensorSpec("x", (C, N)),), nodes=nodes, outputs=("out", "mr"), meta=(("capture_T", 2),))


def upsample_graph(mode: str, align_corners: bool = False) -> Graph:
    """x -> Conv2d -> Upsample (to a non-integer ratio) -> I-LIF, and x -> I-LIF -> Upsample (x2,
    spikes in) -> I-LIF."""
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


def _check(graph, x, path, *, precision="float64", dtype=torch.float64, rtol=OUTPUT_RTOL_F64, atol=OUTPUT_ATOL_F64):
    E.export(graph, path, precision=precision)
    art = E.load(path)
    got = R.run(art, x)
    ref = execute(graph, x, "integer", dtype=dtype)
    for n in graph.neurons():
        q = ref.neuron_q(n.name)
        assert q.sum() > 0, f"no spikes in {n.name}: the comparison would prove nothing"
        assert torch.equal(got.spike_counts[n.name].to(q.dtype), q), n.name
    for o in graph.outputs:
        assert got.outputs[o].dtype == dtype
        torch.testing.assert_close(got.outputs[o], ref.outputs[o], rtol=rtol, atol=atol)
    return art, got, ref


def _op_types(art):
    return {n.op_type for n in art.model.graph.node}


# ---------------------------------------------------------------------------------------------
# tests
# ---------------------------------------------------------------------------------------------


def test_rules_registered():
    assert {O.MemoryWrite, O.MemoryRead, O.Upsample} <= set(E.RULES)


@pytest.mark.parametrize("scale", [1.0, 0.125 * 3])
def test_memory_write(tmp_path, scale):
    g = write_graph(scale)
    x = _x((4, 6), seed=1)
    art, got, ref = _check(g, x, tmp_path / "w.onnx")
    assert got.outputs["mw"].shape == (2, 3, 2, 2, 3)
    assert ref.outputs["mw"].abs().sum() > 0  # co-occurring k and v spikes wrote the memory
    ops = _op_types(art)
    assert "MatMul" in ops and not ops & FLOAT_ONLY_OPS
    # Mul by scale only when scale != 1 (the reference's bit-for-bit rule)
    mw_ops = {n.op_type for n in art.model.graph.node if n.name.startswith("mw_")}
    assert "MatMul" in mw_ops and ("Mul" in mw_ops) == (scale != 1.0)


@pytest.mark.parametrize("t_mem", [1, 2])
def test_memory_read(tmp_path, t_mem):
    g = read_graph(t_mem)
    x = _x((4, 5), seed=2)
    art, got, ref = _check(g, x, tmp_path / "r.onnx")
    ops = _op_types(art)
    assert "MatMul" in ops and not ops & FLOAT_ONLY_OPS
    # the memory is a float64 initializer of the model
    mem = np.asarray(g.nodes[1].op.memory)
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in art.model.graph.initializer}
    want = mem[0] if t_mem == 1 else mem[:, None]
    assert any(a.dtype == np.float64 and a.shape == want.shape and np.array_equal(a, want) for a in inits.values())


def test_memory_read_wrong_memory_steps_is_refused(tmp_path):
    g = read_graph(3)  # 3 memories, T = 2
    with pytest.raises(SpikedeployError, match="memory has 3 steps"):
        E.export(g, tmp_path / "bad.onnx")


@pytest.mark.parametrize("mode,ac", [("bilinear", False), ("bilinear", True), ("nearest", False)])
def test_upsample_float64(tmp_path, mode, ac):
    g = upsample_graph(mode, ac)
    x = _x((3, 5, 7), seed=3)
    art, got, ref = _check(g, x, tmp_path / "u.onnx")
    ops = _op_types(art)
    assert not ops & FLOAT_ONLY_OPS
    assert ("Gather" if mode == "nearest" else "MatMul") in ops


@pytest.mark.parametrize("mode,ac", [("bilinear", False), ("bilinear", True), ("nearest", False)])
def test_upsample_float32(tmp_path, mode, ac):
    """float32 export: bilinear is a native Resize (half_pixel / align_corners)."""
    g = upsample_graph(mode, ac)
    x = _x((3, 5, 7), seed=3).float()
    art, got, ref = _check(g, x, tmp_path / "u32.onnx", precision="float32", dtype=torch.float32,
                           rtol=OUTPUT_RTOL_F32, atol=OUTPUT_ATOL_F32)
    ops = _op_types(art)
    if mode == "bilinear":
        node = next(n for n in art.model.graph.node if n.op_type == "Resize")
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        assert attrs["mode"] == b"linear"
        assert attrs["coordinate_transformation_mode"] == (b"align_corners" if ac else b"half_pixel")
    else:
        assert "Gather" in ops and "Resize" not in ops


@pytest.mark.parametrize("size_in,size_out", [((5, 7), (9, 16)), ((8, 8), (16, 16)), ((6, 9), (4, 5)),
                                              ((1, 3), (3, 1)), ((16, 16), (64, 64))])
@pytest.mark.parametrize("mode,ac", [("bilinear", False), ("bilinear", True), ("nearest", False)])
def test_interpolation_matrices_are_pytorchs(size_in, size_out, mode, ac):
    op = O.Upsample(size=size_out, mode=mode, align_corners=ac)
    ah, aw = E.upsample_matrices(op, size_in)
    assert ah.shape == (size_out[0], size_in[0]) and aw.shape == (size_out[1], size_in[1])
    x = _x((2,) + size_in, T=1, B=1, seed=4)[0]
    ref = F.interpolate(x, size=size_out, mode=mode, align_corners=ac if mode == "bilinear" else None)
    got = torch.from_numpy(ah) @ (x @ torch.from_numpy(aw).T)
    if mode == "nearest":
        assert torch.equal(got, ref)
        rows, cols = E.upsample_indices(op, size_in)
        assert torch.equal(x[..., rows, :][..., cols], ref)
    else:
        torch.testing.assert_close(got, ref, rtol=1e-14, atol=1e-15)


# ---------------------------------------------------------------------------------------------
# SpikeTrack S256-T1 with the fixture weights
# ---------------------------------------------------------------------------------------------

FIXTURES = Path(__file__).resolve().parents[2].parent / "shared" / "fixtures" / "spiketrack"
S256 = FIXTURES / "s256-t1"
_needs_fixtures = pytest.mark.skipif(
    not (S256 / "reference.npz").is_file() or not (FIXTURES / "make_weights.py").is_file(),
    reason="SpikeTrack fixtures (../shared/fixtures/spiketrack) are not present in this checkout",
)


@pytest.fixture(scope="module")
def s256(s256_model, s256_inputs):
    """The template and search graphs of SpikeTrack S256-T1 (fixture weights) after
    default_pipeline(), with their inputs (the loading pattern of test_spiketrack_lowering.py)."""
    from spikedeploy.capture import capture
    from spikedeploy.passes import default_pipeline

    model = s256_model
    xt, xs, ref = s256_inputs
    with torch.no_grad():
        memory = model.template_branch(xt)
    gt = default_pipeline().apply(capture(model.template_net(), xt, name="spiketrack-s256-t1/template"))
    gs = default_pipeline().apply(capture(model.search_net(memory), xs, name="spiketrack-s256-t1/search"))
    return dict(gt=gt, gs=gs, xt=xt.double(), xs=xs.double())


@_needs_fixtures
@pytest.mark.slow
@pytest.mark.parametrize("branch", ["template", "search"])
def test_spiketrack_s256_t1(tmp_path, s256, branch):
    g, x = (s256["gt"], s256["xt"]) if branch == "template" else (s256["gs"], s256["xs"])
    kinds = {n.op.kind for n in g.nodes}
    if branch == "template":
        assert "MemoryWrite" in kinds and sum(n.op.kind == "MemoryWrite" for n in g.nodes if n.name in g.outputs) == 6
    else:
        assert {"MemoryRead", "Upsample", "SpikeLinearAttention"} <= kinds
        assert sum(n.op.kind == "MemoryRead" for n in g.nodes) == 12
    art, got, ref = _check(g, x, tmp_path / f"{branch}.onnx")
    assert not _op_types(art) & FLOAT_ONLY_OPS
    assert len(got.spike_counts) == len(g.neurons()) == (122 if branch == "template" else 171)
