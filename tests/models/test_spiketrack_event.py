"""The event SpikeTrack (issue 16, step 2 and the lowering part of step 3): configurations, parameter
counts, MSST state over frames, the template memory against the seed's concatenated attention,
DI-LIF scopes, the host decoding; the search branch captured exactly on 10 synthetic event frames
with a DI-LIF limit D that changes from frame to frame and the membrane carried across frames,
lowered to binary and graded spikes with zero mismatches; the targets on those frames: ONNX (the
integer network, state unrolled over the frames), Lava's CPU simulator (binary and graded spikes,
floating point, per-layer spike counts identical to the reference), NIR (round trip, extension
nodes for what NIR cannot express); what is refused: NIR without extensions; and that fixed point
takes the DI-LIF layers (FixedDynamicIntegerLIF)."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

from spikedeploy.capture import capture
from spikedeploy.equivalence import compare_target, verify_modes
from spikedeploy.errors import ConfigError, UnsupportedOpError
from spikedeploy.ir import ops as O
from spikedeploy.models import BUILTIN_MODELS, get_model
from spikedeploy.models.layers import SpikeLinearAttention
from spikedeploy.models.spiketrack import hann_window
from spikedeploy.models.spiketrack_event import (EVENT_CONFIGS, PAPER_PARAMETERS, EventSearchNet, decode_frames,
                                                 init_event_spiketrack_for_spiking, random_voxels, spiketrack_event,
                                                 voxel_input)
from spikedeploy.models.spiketrack_event_blocks import EventDILIF, FrameMemoryRead
from spikedeploy.models.spiketrack_blocks import MemoryWrite
from spikedeploy.passes import ExpandSpikes, default_pipeline
from spikedeploy.reference import run
from spikedeploy.targets import get_target

FRAMES = 10  #: search frames of the lowering checks (the issue asks for >= 10)


def event_clip(seed: int = 3, frames: int = FRAMES, n_bins: int = 5):
    """Synthetic event frames of the tiny model's crop size: a ``frames + 1``-frame synthetic
    sequence of 128 x 128 recorded by the simulator, its search windows as voxel grids
    ``[frames, 1, 2 n_bins, 128, 128]``, and a template ``[1, 1, 2 n_bins, 64, 64]`` cropped from the
    first window around the first box."""
    from spikedeploy.events import synthetic_event_sequence, window_frames

    seq = synthetic_event_sequence(seed, "train", num_frames=frames + 1, frame_size=(128, 128))
    search = voxel_input(window_frames(seq.events, seq.frame_times, n_bins))
    x, y, w, h = seq.boxes[1]
    cx = int(np.clip(round(x + w / 2) - 32, 0, 128 - 64))
    cy = int(np.clip(round(y + h / 2) - 32, 0, 128 - 64))
    template = search[:1, :, :, cy:cy + 64, cx:cx + 64].contiguous()
    return template, search


@pytest.fixture(scope="module")
def tiny_search():
    """The tiny search branch with seeded weights calibrated on the event clip (so every layer fires
    and the DI-LIF gates see the clip's activity), its captured graph and the float32 reference run."""
    torch.manual_seed(0)
    template, search = event_clip()
    net = get_model("spiketrack-event-tiny:search")
    init_event_spiketrack_for_spiking(net.model, seed=0, template=template, search=search)
    with torch.no_grad():
        net.set_memory(net.model.template_branch(template))
    net.eval()
    g = capture(net, search, name="spiketrack-event-tiny:search")
    return dict(net=net, template=template, search=search, graph=g)


# ------------------------------------------------------------------------------------------------
# configurations
# ------------------------------------------------------------------------------------------------


def test_full_configuration_parameter_count_matches_the_paper():
    with torch.device("meta"):
        full = spiketrack_event("full")
        tiny = spiketrack_event("tiny")
    n, nt = full.parameter_count(), tiny.parameter_count()
    print(f"\nspiketrack-event-full: {n:,} parameters (paper: {PAPER_PARAMETERS / 1e6:.2f} M, "
          f"{100 * (n / PAPER_PARAMETERS - 1):+.2f} %); spiketrack-event-tiny: {nt:,}")
    assert n == 25_251_517
    assert abs(n / PAPER_PARAMETERS - 1) < 0.01
    c = full.config
    assert (c.depth, c.d_init, len(full.encoder.blocks)) == (8, 6, 8)
    assert nt < 400_000  # trains on 2 CPU cores
    assert tiny.config.resolution == 128


def test_registered_names_and_branches():
    for name in ("spiketrack-event-tiny", "spiketrack-event-full"):
        assert name in BUILTIN_MODELS
        assert f"{name}:template" in BUILTIN_MODELS and f"{name}:search" in BUILTIN_MODELS
    m = get_model("spiketrack-event-tiny")
    assert m.config is EVENT_CONFIGS["tiny"]
    s = get_model("spiketrack-event-tiny:search")
    t = get_model("spiketrack-event-tiny:template")
    assert isinstance(s, EventSearchNet)
    assert s.input_shape == (10, 128, 128) and t.input_shape == (10, 64, 64)
    with pytest.raises(ConfigError, match="unknown event SpikeTrack variant"):
        spiketrack_event("huge")
    with pytest.raises(ConfigError, match="unknown config fields"):
        spiketrack_event("tiny", widths=3)
    with pytest.raises(ConfigError, match="multiple of 16"):
        spiketrack_event("tiny", resolution=100)
    with pytest.raises(ValueError, match=r"voxel grids \[T, B, 10, 128, 128\]"):
        m.search_branch(torch.zeros(2, 1, 3, 128, 128), m.template_branch(torch.zeros(1, 1, 10, 64, 64)))


def test_every_neuron_is_leaky_and_the_transformer_is_dilif():
    from spikedeploy.models.neurons import LeakyIntegerLIF

    m = spiketrack_event("tiny")
    enc = m.encoder
    conv_neurons = [mod for blk in (enc.block1, enc.block2, enc.block3, enc.block4) for mod in blk.modules()
                    if isinstance(mod, LeakyIntegerLIF)]
    assert len(conv_neurons) == 12 and all(n.d == 6 and n.leak == 0.25 for n in conv_neurons)
    di = [mod for mod in enc.blocks.modules() if isinstance(mod, EventDILIF)]
    assert len(di) == 7 * m.config.depth and all(n.d_init == 6 and n.leak == 0.25 for n in di)
    assert all(isinstance(mod, LeakyIntegerLIF) for mod in m.decoder.modules()
               if hasattr(mod, "d") and not isinstance(mod, torch.nn.Sequential))


# ------------------------------------------------------------------------------------------------
# MSST: the membrane carries from frame to frame
# ------------------------------------------------------------------------------------------------


def test_msst_state_carries_across_frames_and_is_causal():
    """float64 (float32 convolutions of 4 and 6 frames may round differently, see the stream test)."""
    torch.manual_seed(0)
    m = spiketrack_event("tiny")
    init_event_spiketrack_for_spiking(m, seed=1)
    m = m.double()
    template = random_voxels((1, 1, 10, 64, 64), seed=2).double()
    search = random_voxels((6, 1, 10, 128, 128), seed=3, rate=0.2).double()
    with torch.no_grad():
        mem = m.template_branch(template)
        full = m.search_branch(search, mem)
        prefix = m.search_branch(search[:4], mem)
        alone = m.search_branch(search[4:5], mem)
    for a, b in zip(full, prefix):
        assert torch.equal(a[:4], b)  # causal: frame t depends on frames <= t only
    # frame 4 run alone (a fresh membrane) differs from frame 4 after frames 0..3 (carried membrane)
    assert not torch.equal(full.score_logits[4], alone.score_logits[0])


def test_forward_is_template_then_search_and_batches_are_independent():
    torch.manual_seed(0)
    m = spiketrack_event("tiny")
    init_event_spiketrack_for_spiking(m, seed=4)
    template = random_voxels((1, 2, 10, 64, 64), seed=5)
    search = random_voxels((3, 2, 10, 128, 128), seed=6, rate=0.2)
    with torch.no_grad():
        out = m(template, search)
        one = m(template[:, 1:], search[:, 1:])
    assert out.score_logits.shape == (3, 2, 1, 8, 8) and out.size_logits.shape == (3, 2, 2, 8, 8)
    assert torch.allclose(out.score_logits[:, 1:], one.score_logits, rtol=0, atol=1e-5)


def test_search_attention_equals_attention_over_concatenated_template_and_search_tokens():
    """``Q_s (K_t^T V_t) + Q_s (K_s^T V_s)`` (memory read + search attention) is the seed's attention of
    the search queries over ``[template; search]`` tokens (float64; exact up to summation order)."""
    gen = torch.Generator().manual_seed(0)
    heads, C, Nt, Ns, T = 4, 16, 9, 25, 3

    def spikes(*shape):
        return torch.randint(0, 7, shape, generator=gen).double() / 6

    qs, ks, vs = spikes(T, 1, C, Ns), spikes(T, 1, C, Ns), spikes(T, 1, C, Ns)
    kt, vt = spikes(1, 1, C, Nt), spikes(1, 1, C, Nt)
    scale = (C // heads) ** -0.5
    memory = MemoryWrite(heads)(kt, vt)
    ours = FrameMemoryRead(heads, scale)(qs, memory) + SpikeLinearAttention(heads, scale)(qs, ks, vs)
    k_cat = torch.cat([kt.expand(T, -1, -1, -1), ks], dim=3)
    v_cat = torch.cat([vt.expand(T, -1, -1, -1), vs], dim=3)
    direct = torch.zeros_like(ours)
    d = C // heads
    for h in range(heads):
        sl = slice(h * d, (h + 1) * d)
        q, k, v = qs[:, :, sl].transpose(-1, -2), k_cat[:, :, sl].transpose(-1, -2), v_cat[:, :, sl].transpose(-1, -2)
        direct[:, :, sl] = ((q @ k.transpose(-1, -2)) * scale @ v).transpose(-1, -2)  # (Q K^T / sqrt d) V
    assert torch.allclose(ours, direct, rtol=0, atol=1e-12)


# ------------------------------------------------------------------------------------------------
# DI-LIF scopes
# ------------------------------------------------------------------------------------------------


def test_dilif_batch_scope_shares_one_limit_per_step_in_training_only():
    n = EventDILIF(d_init=6, leak=0.25, gate_w=3.0, gate_b=-0.5, scope="batch")
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(4, 3, 5, 7, generator=gen) + torch.tensor([0.0, 0.5, -0.5]).reshape(1, 3, 1, 1)
    n.train()
    d_batch = n.firing_limit(x)
    mu = x.reshape(4, -1).mean(dim=1)
    expect = torch.clamp(torch.round(2 * torch.sigmoid(3.0 * mu - 0.5) * 6), 1, 12)
    assert torch.equal(d_batch, expect.reshape(4, 1).expand(4, 3))
    tr = n.trace(x)
    assert torch.equal(tr.d.detach(), d_batch) and float(tr.q.detach().max()) <= 12
    n.eval()
    d_sample = n.firing_limit(x)
    assert not torch.equal(d_sample, d_batch)  # the three samples differ in mean
    ref = EventDILIF(d_init=6, leak=0.25, gate_w=3.0, gate_b=-0.5)  # scope "sample"
    assert torch.equal(n.trace(x).q, ref.trace(x).q)
    # at B = 1 both rules give the same limit (training mode too)
    n.train()
    assert torch.equal(n.firing_limit(x[:, :1]), ref.firing_limit(x[:, :1]))
    with pytest.raises(ValueError, match="scope"):
        EventDILIF(scope="token")
    # the gate trains through D in the batch scope
    w = torch.nn.Parameter(torch.tensor(2.0))
    n.gate_w = w
    n.trace(x * 4).value.sum().backward()
    assert w.grad is not None


def test_dilif_scope_config_option():
    m = spiketrack_event("tiny", dilif_scope="batch")
    assert all(mod.scope == "batch" for mod in m.modules() if isinstance(mod, EventDILIF))
    with pytest.raises(ConfigError, match="dilif_scope"):
        spiketrack_event("tiny", dilif_scope="token")


# ------------------------------------------------------------------------------------------------
# host side
# ------------------------------------------------------------------------------------------------


def test_voxel_input_layout_and_per_frame_decoding():
    grids = np.arange(2 * 3 * 2 * 4 * 4, dtype=np.float32).reshape(2, 3, 2, 4, 4)
    x = voxel_input(grids)
    assert x.shape == (2, 1, 6, 4, 4)
    assert torch.equal(x[1, 0, 3], torch.from_numpy(grids[1, 1, 1]))  # bin 1, ON
    assert voxel_input(grids[0]).shape == (1, 1, 6, 4, 4)
    with pytest.raises(ValueError, match="voxel_input"):
        voxel_input(np.zeros((2, 3, 4, 4)))
    m = spiketrack_event("tiny")
    init_event_spiketrack_for_spiking(m, seed=0)
    with torch.no_grad():
        out = m(random_voxels((1, 1, 10, 64, 64), seed=1), random_voxels((3, 1, 10, 128, 128), seed=2))
    boxes, scores = decode_frames(out, window=hann_window(m.config.feat_size))
    assert boxes.shape == (3, 1, 4) and scores.shape == (3, 1, 1)
    assert bool(((boxes[..., :2] >= 0) & (boxes[..., :2] <= 1.0 + 1.0 / 8)).all())


# ------------------------------------------------------------------------------------------------
# capture and exact lowering over >= 10 event frames
# ------------------------------------------------------------------------------------------------


def test_search_branch_captures_bit_exact_with_state_and_changing_d(tiny_search):
    g, net, x = tiny_search["graph"], tiny_search["net"], tiny_search["search"]
    assert x.shape[0] == FRAMES and float(x.sum()) > 0
    kinds = [n.op.kind for n in g.nodes]
    assert kinds.count("MemoryRead") == 2 and kinds.count("SpikeLinearAttention") == 2
    reads = [n.op for n in g.nodes if isinstance(n.op, O.MemoryRead)]
    assert all(r.memory.shape[0] == 1 for r in reads)  # one template memory, read by every frame
    neurons = list(g.neurons())
    assert all(n.op.leak == 0.25 for n in neurons)  # every neuron carries its membrane
    assert sum(isinstance(n.op, O.DynamicIntegerLIF) for n in neurons) == 14
    with torch.no_grad():
        heads = net(x)
    r = run(g, x, dtype=torch.float32)
    for a, name in zip(heads, g.outputs):
        assert torch.equal(a, r.outputs[name])  # same float32 ops, same order
    changed = 0
    for n in neurons:
        rec = r.records[n.name]
        assert float(rec.q.sum()) > 0, f"{n.name} is silent"
        if isinstance(n.op, O.DynamicIntegerLIF):
            d = rec.d.flatten()
            assert d.shape == (FRAMES,) and bool(((d >= 1) & (d <= 12)).all())
            changed += int(len(torch.unique(d)) > 1)
    assert changed == 14, "D changes between frames in every DI-LIF layer"


@pytest.mark.parametrize("mode", ["binary", "graded"])
def test_search_branch_spike_modes_reproduce_integer_mode_over_frames(tiny_search, mode):
    g = default_pipeline().apply(tiny_search["graph"])
    rep = verify_modes(g, tiny_search["search"].double(), "integer", mode)
    assert rep.passed, rep.to_markdown()
    assert all(layer.mismatches == 0 for layer in rep.teacher_forced)
    # Boundary ties: the attention output is a sum of products (q/6)(k/6)(v/6) / sqrt(16), a multiple
    # of 1/864 that can land exactly on k + 1/2, where the integer mode (1/6 rounded in float64) and
    # the spike modes (integer counts, 1/norm folded into the synapse) round to different sides. Such
    # a tie may only occur at an attention-output neuron, be rare, and is then the free run's first
    # divergence (a tie cascade), never a real mismatch.
    tied = [layer for layer in rep.teacher_forced if layer.ties]
    assert all(layer.name.endswith("attn.attn_spike") and layer.ties <= 2 for layer in tied), tied
    if tied:
        assert rep.free_verdict == "tie-cascade" and rep.first_divergence in {layer.name for layer in tied}
    else:
        assert rep.free_verdict == "exact"
    assert all(layer.spikes_a > 0 for layer in rep.teacher_forced), "every neuron layer fires"
    assert len(rep.teacher_forced) == 43  # 16 I-LIF (conv stage), 14 DI-LIF (transformer), 13 I-LIF (head)


def test_template_branch_captures_and_lowers(tiny_search):
    net, template = tiny_search["net"], tiny_search["template"]
    tnet = get_model("spiketrack-event-tiny:template")
    tnet.model.load_state_dict(net.model.state_dict())
    gt = capture(tnet.eval(), template, name="spiketrack-event-tiny:template")
    assert [n.op.kind for n in gt.nodes].count("MemoryWrite") == 2
    with torch.no_grad():
        mem = tnet(template)
    rt = run(gt, template, dtype=torch.float32)
    for a, name in zip(mem, gt.outputs):
        assert torch.equal(a, rt.outputs[name].reshape(a.shape))
    for mode in ("binary", "graded"):
        rep = verify_modes(default_pipeline().apply(gt), template.double(), "integer", mode)
        assert rep.passed and rep.free_verdict == "exact", rep.to_markdown()


# ------------------------------------------------------------------------------------------------
# targets over the same event frames
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def folded(tiny_search):
    return default_pipeline().apply(tiny_search["graph"]).with_meta(timesteps=FRAMES)


def _target_report(target: str, graph, x, encoding: str):
    spec = get_target(target)
    lowered = graph if encoding == "integer" else ExpandSpikes(encoding).apply(graph)
    with tempfile.TemporaryDirectory(prefix="spikedeploy-event-") as tmp:
        path = spec.exporter_module().export(lowered, Path(tmp) / f"model{spec.suffix}", encoding=encoding)
        trun = spec.runtime_module().run(spec.exporter_module().load(path), x)
    reference = run(lowered, x, dtype=torch.float64)
    return reference, trun, compare_target(reference, trun, model="spiketrack-event-tiny:search")


def _assert_identical(reference, trun, rep, graph):
    assert rep.passed, rep.to_markdown()
    assert rep.free_verdict == "exact"
    neurons = [n.name for n in graph.neurons()]
    assert sorted(trun.spike_counts) == sorted(neurons)
    for name in neurons:
        assert torch.equal(torch.as_tensor(trun.spike_counts[name]).to(torch.float64),
                           reference.records[name].q.to(torch.float64)), name
    d = [reference.records[n.name].d.flatten() for n in graph.neurons() if isinstance(n.op, O.DynamicIntegerLIF)]
    assert len(d) == 14 and all(len(torch.unique(v)) > 1 for v in d)  # D changed between frames


def test_onnx_equals_reference_over_event_frames(folded, tiny_search):
    x = tiny_search["search"].double()
    reference, trun, rep = _target_report("onnx", folded, x, "integer")
    _assert_identical(reference, trun, rep, folded)


@pytest.mark.slow
@pytest.mark.parametrize("encoding", ["binary", "graded"])
def test_lava_spike_counts_equal_reference_over_event_frames(folded, tiny_search, encoding):
    x = tiny_search["search"].double()
    reference, trun, rep = _target_report("lava", folded, x, encoding)
    _assert_identical(reference, trun, rep, folded)


def test_nir_round_trip_keeps_what_nir_cannot_express_as_extensions(folded, tiny_search):
    x = tiny_search["search"].double()
    reference, trun, rep = _target_report("nir", folded, x, "binary")
    _assert_identical(reference, trun, rep, folded)
    from spikedeploy.exporters import nir as nir_export

    with pytest.raises(UnsupportedOpError, match="target 'nir' cannot express op"):
        nir_export.to_bytes(ExpandSpikes("binary").apply(folded), encoding="binary", extensions=False)


def test_fixed_point_takes_the_dilif_layers(folded, tiny_search):
    """DI-LIF has a fixed-point form (FixedDynamicIntegerLIF; the Lava fixed_pt checks over 10 frames
    are in tests/runtimes/test_lava_fixed_dilif.py): the search branch quantizes, every DI-LIF layer
    becomes one (calibrated here on one frame, to keep this quick)."""
    from spikedeploy.passes.quantize import check_quantizable, quantize_graph

    lowered = ExpandSpikes("binary").apply(folded)
    check_quantizable(lowered)
    gq = quantize_graph(lowered, tiny_search["search"][:1].double())
    kinds = [n.op.kind for n in gq.neurons()]
    assert kinds.count("FixedDynamicIntegerLIF") == 14 and kinds.count("FixedIntegerLIF") == 29


@pytest.mark.slow
def test_cli_verify_on_event_frames_reference_onnx_lava(tmp_path):
    """The user-facing check: ``spikedeploy verify --model spiketrack-event-tiny:search -T 10
    --targets reference,onnx,lava`` on an ``--input-file`` of synthetic event voxels (random
    weights of the branch's ``init_random_weights``)."""
    _, search = event_clip()
    path = tmp_path / "events.npy"
    np.save(path, search.numpy())
    out = tmp_path / "report"
    proc = subprocess.run(
        [sys.executable, "-m", "spikedeploy.cli", "verify", "--model", "spiketrack-event-tiny:search", "-T", str(FRAMES),
         "--input-file", str(path), "--targets", "reference,onnx,lava", "--target-inputs", "1", "--no-progress",
         "-o", str(out)], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for stage in ("capture", "fold+fuse", "binary", "graded", "onnx", "lava"):
        assert any(line.split()[:2] == [stage, "SUCCESS"] for line in proc.stdout.splitlines()), (stage, proc.stdout)
    assert (out / "report.md").is_file()


def test_frame_by_frame_stream_equals_the_whole_clip_bit_for_bit():
    """MSST at inference: the clip fed in pieces (1, 3, 2, 4 frames) with the membranes kept gives
    the whole clip's outputs exactly; closing the stream returns the neurons to whole-clip runs.
    float64: in float32 the convolutions of a 1-frame and a 10-frame batch use kernels that round
    differently (measured: up to 1e-6 on the head maps), which is not the stream's doing."""
    torch.manual_seed(0)
    m = spiketrack_event("tiny")
    init_event_spiketrack_for_spiking(m, seed=1)
    m = m.double()
    template = random_voxels((1, 1, 10, 64, 64), seed=2).double()
    search = random_voxels((10, 1, 10, 128, 128), seed=3, rate=0.2).double()
    with torch.no_grad():
        memory = m.template_branch(template)
        whole = m.search_branch(search, memory)
        pieces, start = [], 0
        with m.search_stream(memory) as stream:
            with pytest.raises(ValueError, match="already open"):
                m.search_stream(memory)
            for n in (1, 3, 2, 4):
                pieces.append(stream(search[start:start + n]))
                start += n
            assert stream.frames == 10
        with pytest.raises(ValueError, match="closed"):
            stream(search[:1])
        again = m.search_branch(search, memory)
    for k in range(3):
        assert torch.equal(torch.cat([p[k] for p in pieces]), whole[k])
        assert torch.equal(again[k], whole[k])
