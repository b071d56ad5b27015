"""SpikeVideoFormer lowered (issue 17 steps 2-4): the tiny network (random weights that fire)
captures bit-exactly against PyTorch in float64 over T = 8 frames, every binary LIF layer of the
binary- and graded-spike lowerings emits the integer graph's spikes, and the ONNX model is
spike-for-spike identical to the reference on every layer; the attention variants (factorized,
hierarchical, dot product) and the Integer-LIF head lower too. All comparisons are exact: binary
spikes make every SDHA sum an integer, the folded 1/(2d) keeps the membranes dyadic."""

from __future__ import annotations

import pytest
import torch

from spikedeploy.capture import capture
from spikedeploy.ir import ops as O
from spikedeploy.loading import build_model
from spikedeploy.models.neurons import BinaryLIF, MultiSpike
from spikedeploy.reference import execute

T = 8


def _net(**kw):
    loaded = build_model("spikevideoformer-tiny", timesteps=T, model_kwargs=kw or None)
    return loaded.module.double().eval(), loaded.input_shape


def _torch_spikes(net, x):
    """Every neuron module's output (its spikes; MultiSpike: q / 4) and the logits."""
    out = {}
    hooks = [m.register_forward_hook(lambda m, i, o, name=name: out.__setitem__(name, o.detach().clone()))
             for name, m in net.named_modules() if isinstance(m, (BinaryLIF, MultiSpike))]
    try:
        with torch.no_grad():
            logits = net(x)
    finally:
        for h in hooks:
            h.remove()
    return out, logits


def _onnx(graph, x):
    import onnx

    from spikedeploy.exporters.onnx import OnnxArtifact, build_model as onnx_model, read_metadata
    from spikedeploy.runtimes.onnx import run

    model = onnx_model(graph, timesteps=int(x.shape[0]))
    onnx.checker.check_model(model)
    return run(OnnxArtifact(model=model, metadata=read_metadata(model)), x)


def _check(net, shape, x, head_d=1, may_be_silent=()):
    graph = capture(net, torch.zeros((x.shape[0], 1) + shape, dtype=torch.float64))
    torch_q, logits = _torch_spikes(net, x)
    ref = execute(graph, x)
    neurons = [n for n in graph.nodes if n.op.is_neuron]
    assert len(neurons) == len(torch_q)
    for n in neurons:
        q = ref.records[n.name].q
        # torch emits q / norm (binary LIF: norm 1; the Integer-LIF head: q / 4)
        assert torch.equal(q / n.op.norm, torch_q[n.source]), n.name
        # every layer fires (but the named ones), none saturates
        assert (0 < float(q.mean()) or n.name in may_be_silent) and float(q.mean()) < head_d, n.name
    out = graph.outputs[0]
    assert torch.equal(ref.outputs[out], logits)
    for mode in ("binary", "graded"):
        low = execute(graph, x, mode)
        for n in neurons:
            assert torch.equal(low.records[n.name].q, ref.records[n.name].q), (mode, n.name)
    onnx_run = _onnx(graph, x)
    assert set(onnx_run.spike_counts) == {n.name for n in neurons}
    for n in neurons:
        assert torch.equal(onnx_run.spike_counts[n.name], ref.records[n.name].q), n.name
    assert torch.equal(onnx_run.outputs[out], ref.outputs[out])
    return graph


def test_tiny_lowers_exactly_over_8_frames():
    """capture = PyTorch (float64, bit for bit), binary = graded = integer spikes, ONNX = reference
    on all 31 neuron layers over T = 8 frames, logits included."""
    net, shape = _net()
    x = torch.randn((T, 2) + shape, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    graph = _check(net, shape, x)
    attn = [n for n in graph.nodes if isinstance(n.op, O.SpikeHammingAttention)]
    assert len(attn) == 2 and all(n.op.mixes_steps for n in attn)


@pytest.mark.parametrize("kw", [dict(attention="factorized"), dict(attention="hierarchical"),
                                dict(score="dot"), dict(head_neuron="ilif")],
                         ids=["factorized", "hierarchical", "dot", "ilif-head"])
def test_variants_lower_exactly(kw):
    """The seed's attention variants, the dot-product comparison and the Integer-LIF (D = 4) head:
    the same checks at 32 x 32 over 8 frames."""
    net, shape = _net(resolution=32, **kw)
    x = torch.randn((T, 2) + shape, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    # hierarchical at 32 x 32: the spatial SDHA of stage 4 groups 2 x 2 = 4 tokens, whose bracket
    # (|.| <= d * 4 per value spike, random q/k: Hamming ~ d/2) stays below 2d u_th = 40: silent
    silent = ("model.stage4.0.attn.attn_spike",) if kw.get("attention") == "hierarchical" else ()
    graph = _check(net, shape, x, head_d=4 if kw.get("head_neuron") == "ilif" else 1, may_be_silent=silent)
    kinds = {type(n.op) for n in graph.nodes}
    assert (O.SpikeDotAttention if kw.get("score") == "dot" else O.SpikeHammingAttention) in kinds


@pytest.mark.slow
def test_verify_command_passes():
    """``spikedeploy verify --model spikevideoformer-tiny -T 8 --targets reference,onnx`` (few inputs:
    the default 64 inputs x 8 frames exceed the memory estimate's limit on a small machine):
    capture, fold+fuse, binary, graded and the re-loaded ONNX model all pass (~30 s)."""
    from spikedeploy.verification import verify

    rep = verify("spikevideoformer-tiny", timesteps=8, num_inputs=3, targets=("reference", "onnx"), target_inputs=2)
    assert rep.passed
    assert [s.name for s in rep.stages] == ["capture", "fold+fuse", "binary", "graded", "onnx"]
