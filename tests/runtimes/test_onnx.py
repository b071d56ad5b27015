"""ONNX runtime (spikedeploy.runtimes.onnx): the exported SDT test model run by onnxruntime
reproduces the reference integer execution exactly, for every neuron kind."""

from __future__ import annotations

import pytest
import torch

from spikedeploy import api
from spikedeploy.capture import capture
from spikedeploy.errors import SpikedeployError
from spikedeploy.exporters import onnx as E
from spikedeploy.passes import default_pipeline
from spikedeploy.reference import execute
from spikedeploy.runtimes import onnx as R
from spikedeploy.targets import TargetRun

#: Outputs, float64 export vs float64 reference. Every q is equal (asserted), so the outputs are
#: the same double-precision ops on the same spikes, summed in another order by onnxruntime
#: (im2col MatMul vs torch's conv, its own ReduceMean): round-off of sums of <= ~1e3 terms,
#: ~1e-13 relative at most. 1e-9 relative + 1e-12 absolute (spikedeploy.equivalence's float64
#: output bounds) is loose for that, yet ~7 orders below the effect of one flipped spike.
OUTPUT_RTOL_F64, OUTPUT_ATOL_F64 = 1e-9, 1e-12
#: float32 export vs float32 reference: equivalence.py's float32 output bounds.
OUTPUT_RTOL_F32, OUTPUT_ATOL_F32 = 1e-4, 1e-5
#: float32: a q difference is a boundary tie when the reference membrane is within this of a
#: rounding boundary (float32 round-off of membranes of magnitude <~10 summed from <~300 terms).
F32_TIE_EPS = 1e-4

KINDS = [
    ("ilif", 2),
    ("ilif_half_up", 2),
    ("leaky_ilif", 2),
    ("nilif", 3),
    ("integer_if", 2),
    ("binary_lif", 2),
    ("dilif", 2),
]


def _sdt(kind, T, B=3, seed=7):
    lm = api.build_model("sdt-test", neuron=kind, timesteps=T)
    x = api.make_inputs(lm, timesteps=T, num_inputs=B, seed=seed)
    g = default_pipeline().apply(capture(lm.module, x[:, :1], name=lm.name))
    return g, x


@pytest.mark.parametrize("kind,T", KINDS, ids=[k for k, _ in KINDS])
def test_sdt_float64_exact(kind, T, tmp_path):
    g, x = _sdt(kind, T)
    art = E.load(E.export(g, tmp_path / f"{kind}.onnx"))
    assert art.timesteps == T
    got = R.run(art, x)
    ref = execute(g, x, "integer", dtype=torch.float64)
    assert isinstance(got, TargetRun) and got.target == "onnx" and got.encoding == "integer"
    assert set(got.spike_counts) == {n.name for n in g.neurons()} and len(got.spike_counts) == 14
    for name, q in got.spike_counts.items():
        q_ref = ref.neuron_q(name)
        assert q.dtype == torch.float64 and q.shape == q_ref.shape
        assert q_ref.sum() > 0, f"{kind}: layer {name} never fires; the comparison would prove nothing"
        diff = int((q != q_ref).sum())
        assert diff == 0, f"{kind}: {diff} of {q.numel()} q values differ in layer {name}"
    assert set(got.outputs) == set(g.outputs)
    for o in g.outputs:
        assert got.outputs[o].shape == ref.outputs[o].shape
        torch.testing.assert_close(got.outputs[o], ref.outputs[o], rtol=OUTPUT_RTOL_F64, atol=OUTPUT_ATOL_F64)


@pytest.mark.parametrize("kind,T", [("ilif", 2), ("nilif", 3)])
def test_sdt_float32(kind, T, tmp_path):
    """float32 export vs the float32 reference. Other summation orders in float32 can flip a q
    whose membrane is within round-off of a rounding boundary, and a flip cascades downstream.
    So: the first layer that differs may differ only at boundary ties, and every layer stays
    within 0.1% mismatches. (On these seeded inputs no tie occurs and q is exact.)"""
    g, x = _sdt(kind, T)
    got = R.run(E.load(E.export(g, tmp_path / "m32.onnx", precision="float32")), x)
    ref = execute(g, x, "integer", dtype=torch.float32)
    first = True
    total = 0
    for n in g.neurons():
        q, q_ref = got.spike_counts[n.name], ref.neuron_q(n.name)
        assert q.dtype == torch.float32 and q_ref.sum() > 0
        bad = q != q_ref
        total += int(bad.sum())
        if bad.any() and first:
            first = False
            margin = ref.records[n.name].margin
            assert bool((margin[bad] < F32_TIE_EPS).all()), f"non-tie mismatch in {n.name}"
            assert bool(((q - q_ref).abs()[bad] == 1).all())
        assert bad.float().mean() <= 1e-3, n.name
    if total == 0:
        for o in g.outputs:
            torch.testing.assert_close(got.outputs[o], ref.outputs[o], rtol=OUTPUT_RTOL_F32, atol=OUTPUT_ATOL_F32)


@pytest.fixture(scope="module")
def ilif_artifact(tmp_path_factory):
    g, x = _sdt("ilif", 2, B=4)
    return g, x, E.load(E.export(g, tmp_path_factory.mktemp("onnx") / "m.onnx"))


def test_chunked_run_path_and_info(ilif_artifact):
    g, x, art = ilif_artifact
    whole = R.run(art, x)
    chunked = R.run(art.path, x.numpy(), batch_size=3, progress=False)  # a path and an ndarray work too
    assert any(q.sum() > 0 for q in whole.spike_counts.values())
    for n in whole.spike_counts:
        assert torch.equal(whole.spike_counts[n], chunked.spike_counts[n])
    for o in whole.outputs:
        assert torch.equal(whole.outputs[o], chunked.outputs[o])
    assert whole.info["timesteps"] == 2 and whole.info["batch"] == 4 and whole.info["intra_op_threads"] == 2
    assert whole.info["precision"] == "float64" and whole.info["wall_s"] > 0
    # dict input by IR input name
    d = R.run(art, {"x": x[:, :1]})
    assert torch.equal(d.outputs["head"], whole.outputs["head"][:, :1])


def test_input_errors(ilif_artifact):
    g, x, art = ilif_artifact
    with pytest.raises(SpikedeployError, match=r"T=3 time steps.*exported unrolled over T=2"):
        R.run(art, torch.cat([x, x[:1]]))
    with pytest.raises(SpikedeployError, match=r"shape \[T, B, 3, 16, 16\]"):
        R.run(art, x[..., :8])
    with pytest.raises(SpikedeployError, match="missing model input 'x'"):
        R.run(art, {"y": x})
    bad = x.clone()
    bad[0, 0, 0, 0, 0] = float("nan")
    with pytest.raises(SpikedeployError, match="NaN"):
        R.run(art, bad)
    with pytest.raises(SpikedeployError, match="OnnxArtifact or a path"):
        R.run(42, x)
    with pytest.raises(SpikedeployError, match="does not exist"):
        R.run("/nonexistent/m.onnx", x)
