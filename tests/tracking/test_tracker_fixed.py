"""The SpikeTrack tracker in Loihi 2 fixed point: quantized branches, integer memories, the
``reference-fixed`` target."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from spikedeploy.errors import ConfigError
from spikedeploy.ir import ops as O
from spikedeploy.passes import ExpandSpikes
from spikedeploy.reference import is_fixed, run


@pytest.fixture(scope="module")
def tiny():
    from spikedeploy.models.spiketrack import bundled_model
    from spikedeploy.tracking.backends import capture_spiketrack

    model = bundled_model(1)
    return model, capture_spiketrack(model)


@pytest.fixture(scope="module")
def fixed(tiny):
    from spikedeploy.tracking.backends import quantize_branches

    lower = ExpandSpikes("graded")
    _, graphs = tiny
    return quantize_branches(lower.apply(graphs.template), lower.apply(graphs.search), weight_bits=8)


def test_calibration_crops_are_demo_clip_crops():
    from spikedeploy.tracking.backends import calibration_crops

    t, s = calibration_crops(128, 3, count=4)
    assert t.shape == (3, 4, 3, 128, 128) and s.shape == (1, 4, 3, 128, 128)
    assert torch.equal(t[0], s[0]) and torch.equal(t[2], s[0])
    assert float(s.std()) > 0.1  # real image content, normalized


def test_branches_are_fixed_point_and_memory_reads_hold_8_bit_mantissas(fixed):
    from spikedeploy.tracking.backends import memory_read_map

    assert is_fixed(fixed.template) and is_fixed(fixed.search) and fixed.weight_bits == 8
    plan = fixed.search.meta_dict()["fixed_point"]
    reads = memory_read_map(fixed.search)
    assert len(reads) == 12 and set(reads) == set(plan["memory"])
    for name in reads:
        m = np.asarray(fixed.search.node(name).op.memory)
        assert np.array_equal(m, np.round(m)) and np.abs(m).max() <= 127


def test_fixed_memory_rebinds_with_the_static_exponent(tiny, fixed):
    from spikedeploy.passes.quantize import decode_outputs
    from spikedeploy.tracking.backends import _memory_dict, calibration_crops, set_fixed_memory

    t, _ = calibration_crops(128, 1, count=3)
    res = run(fixed.template, t[:, 2:3])
    memory = _memory_dict([decode_outputs(fixed.template, res.outputs)[o] for o in fixed.template.outputs])
    graph, clipped = set_fixed_memory(fixed.search, memory)
    assert clipped == 0
    changed = [n for n in graph.nodes if isinstance(n.op, O.MemoryRead)
               and not np.array_equal(n.op.memory, fixed.search.node(n.name).op.memory)]
    assert len(changed) == 12  # another template, other mantissas
    big = {k: v * 8 for k, v in memory.items()}
    _, clipped = set_fixed_memory(fixed.search, big)
    assert clipped > 0  # beyond the static exponent's headroom: clipped and counted


def test_reference_fixed_tracks_the_demo_clip(tiny, fixed):
    """The fixed-point tracker follows the object (its AUC on these frames stays near the float
    tracker's); its spikes are integers of a fixed graph and every layer fires."""
    from spikedeploy.tracking.metrics import box_iou, score_tracking
    from spikedeploy.tracking.synth import demo_clip
    from spikedeploy.tracking.tracker import SpikeTrackTracker
    from spikedeploy.tracking.backends import ReferenceNetwork
    from spikedeploy.tracking.evaluation import track_boxes

    model, graphs = tiny
    frames, gt = demo_clip()
    n = 6
    net = ReferenceNetwork(mode="graded", graphs=graphs, precision="fixed", fixed=fixed)
    boxes = track_boxes(SpikeTrackTracker(net), frames[:n], gt[0])
    flo = track_boxes(SpikeTrackTracker(ReferenceNetwork(mode="graded", graphs=graphs)), frames[:n], gt[0])
    assert is_fixed(net.last_run.graph)
    spikes = {k: float(net.last_run.neuron_q(k).sum()) for k in (x.name for x in net.last_run.graph.neurons())}
    assert sum(spikes.values()) > 1e4 and sum(v > 0 for v in spikes.values()) > 0.9 * len(spikes)
    assert score_tracking(boxes, gt[:n]).auc > score_tracking(flo, gt[:n]).auc - 0.1
    assert float(box_iou(boxes[1:], flo[1:]).mean()) > 0.5


def test_fixed_options_are_checked(tiny):
    from spikedeploy.tracking.run import FIXED_TARGETS, TRACK_TARGETS, canonical_target
    from spikedeploy.tracking.backends import ReferenceNetwork

    _, graphs = tiny
    assert set(FIXED_TARGETS) <= set(TRACK_TARGETS) and canonical_target("lava-fixed") == "lava-fixed"
    with pytest.raises(ConfigError, match="lowered graph"):
        ReferenceNetwork(mode="integer", graphs=graphs, precision="fixed")
    with pytest.raises(ConfigError, match="precision"):
        ReferenceNetwork(graphs=graphs, precision="fixed16")
    with pytest.raises(ConfigError, match="weight_bits"):
        ReferenceNetwork(graphs=graphs, precision="fixed", weight_bits=1)


def test_track_cli_runs_the_fixed_reference_and_checks_weight_bits(tmp_path, capsys):
    from spikedeploy.cli import main
    from spikedeploy.tracking.synth import demo_clip

    frames, gt = demo_clip()
    clip, truth = tmp_path / "clip.npy", tmp_path / "gt.txt"
    np.save(clip, frames[:3])
    np.savetxt(truth, gt[:3], delimiter=",")
    out = tmp_path / "out"
    rc = main(["track", "--clip", str(clip), "--ground-truth", str(truth), "--target", "reference-graded,reference-fixed",
               "--weight-bits", "6", "-o", str(out), "--no-progress", "--no-gif"])
    printed = capsys.readouterr().out
    assert rc == 0, printed
    assert "reference-fixed" in printed and (out / "report.json").exists()
    rc = main(["track", "--clip", str(clip), "--ground-truth", str(truth), "--target", "torch", "--weight-bits", "6",
               "-o", str(tmp_path / "o2"), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and "--weight-bits applies to the fixed-point targets only" in err and err.count("\n") == 1
