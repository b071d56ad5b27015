"""Training the small SpikeTrack tracker (spikedeploy.tracking.training): losses, label mapping, a few
optimizer steps, the files written, bad options."""

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from spikedeploy.tracking import training as tr
from spikedeploy.errors import ConfigError
from spikedeploy.models.spiketrack import (
    HeadOutputs, identify_variant, load_spiketrack_state_dict, spiketrack,
)
from spikedeploy.tracking.tracker import map_box_back

REPO = Path(__file__).resolve().parents[2]


def test_crop_targets_invert_the_trackers_box_mapping():
    gt = np.array([100.0, 50.0, 30.0, 40.0])
    for prev in ([90.0, 60.0, 35.0, 33.0], [120.0, 40.0, 20.0, 60.0]):
        t, rf = tr._crop_targets(gt, prev, 128)
        back = map_box_back(prev, list(t * 128 / rf), rf, 128)
        np.testing.assert_allclose(back, gt, atol=1e-9)


def test_gaussian_target_peaks_at_the_ground_truth_cell():
    boxes = torch.tensor([[0.5, 0.5, 0.25, 0.25], [0.99, 0.0, 0.1, 0.1], [1.3, -0.2, 0.2, 0.2]])
    heat, cell = tr.gaussian_score_target(boxes, 8)
    assert heat.shape == (3, 1, 8, 8)
    assert cell.tolist() == [[4, 4], [7, 0], [7, 0]]  # outside the crop: clamped into the map
    for b in range(3):
        assert heat[b, 0, cell[b, 1], cell[b, 0]] == 1.0 and (heat[b] == 1).sum() == 1


def test_focal_loss_and_giou_by_hand():
    target = torch.zeros(1, 1, 2, 2)
    target[0, 0, 0, 0] = 1.0
    pred = torch.full((1, 1, 2, 2), 0.5)
    # one peak: -(0.25 log 0.5) ; three negatives, (1-0)^4 * 0.25 * log(0.5) each
    expected = -(0.25 * math.log(0.5) + 3 * 0.25 * math.log(0.5))
    assert float(tr.focal_loss(pred, target)) == pytest.approx(expected)
    a = torch.tensor([[0.5, 0.5, 0.2, 0.2]])
    g, iou = tr.giou(a, a)
    assert float(g) == pytest.approx(1.0) and float(iou) == pytest.approx(1.0)
    b = torch.tensor([[0.8, 0.5, 0.2, 0.2]])  # disjoint, 0.1 apart: hull 0.5 x 0.2, union 0.08
    g, iou = tr.giou(a, b)
    assert float(iou) == 0.0 and float(g) == pytest.approx(-(0.1 - 0.08) / 0.1)


def test_tracking_loss_is_small_for_a_perfect_head():
    F = 8
    box = torch.tensor([[0.55, 0.45, 0.25, 0.3]])
    cell = (4, 3)
    score = torch.full((1, 1, 1, F, F), -9.0)
    score[0, 0, 0, cell[1], cell[0]] = 9.0
    size = torch.logit(torch.tensor([0.25, 0.3])).view(1, 1, 2, 1, 1).expand(1, 1, 2, F, F).clone()
    offset = torch.zeros(1, 1, 2, F, F)
    offset[0, 0, 0, cell[1], cell[0]] = 0.55 * F - 4
    offset[0, 0, 1, cell[1], cell[0]] = 0.45 * F - 3
    out = tr.tracking_loss(HeadOutputs(score, size, offset), box)
    assert float(out["l1"]) < 1e-6 and float(out["giou"]) < 1e-5 and float(out["iou"]) > 0.9999
    assert float(out["focal"]) < 0.05


def test_prepare_for_training_keeps_the_official_layout():
    model = spiketrack("tiny128", 1)
    keys = list(model.state_dict())
    tr.prepare_for_training(model)
    assert list(model.state_dict()) == keys
    names = dict(model.named_parameters())
    assert "encoder.downsample1_1.encode_bn.weight" in names  # frozen BN affine now trains
    sd = tr.export_state_dict(model)
    assert list(sd) == keys and identify_variant(sd) == "spiketrack-tiny128-t1"
    load_spiketrack_state_dict(spiketrack("tiny128", 1), sd)  # strict


def test_a_few_steps_on_one_batch_lower_the_loss():
    """The integer network trains through the straight-through quantizer: 8 AdamW steps on one
    fixed batch lower the loss."""
    torch.manual_seed(0)
    model = tr.prepare_for_training(spiketrack("tiny128", 1)).eval()
    sampler = tr.PairSampler(size=128, seed=3, pool_sequences=2, sequence_frames=8, frame_size=(120, 160))
    z, x, boxes = sampler.sample(4)
    tr.calibrate_batchnorm(model, lambda: model.search_branch(x, model.template_branch(z)))
    tr.init_head_biases(model)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(8):
        out = tr.tracking_loss(model.search_branch(x, model.template_branch(z)), boxes)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        losses.append(float(out["loss"].detach()))
    assert losses[-1] < 0.97 * losses[0] and min(losses[1:]) < losses[0], losses
    # inference is untouched: the neurons still emit integers q / 4
    with torch.no_grad():
        q = model.encoder.ConvBlock1_1[0].Conv.spike1(torch.randn(1, 1, 8, 4, 4) * 3) * 4
    assert torch.equal(q, q.round()) and q.min() >= 0 and q.max() <= 4


def test_train_tracker_writes_weights_and_curves(tmp_path):
    cfg = tr.TrainConfig(steps=3, batch_size=4, pool_sequences=2, sequence_frames=6, frame_size=(120, 160),
                         log_every=1, save_every=100, warmup_steps=1, calibration_batch=4,
                         bn_recompute_batches=2)
    res = tr.train_tracker(cfg, tmp_path)
    assert res.steps == 3 and len(res.history) == 3
    ck = torch.load(res.files["weights"], weights_only=True)
    assert set(ck) == {"net", "meta"} and identify_variant(ck["net"]) == "spiketrack-tiny128-t1"
    assert all(v.dtype == (torch.float32 if v.is_floating_point() else torch.int64) for v in ck["net"].values())
    rows = list(csv.DictReader(open(res.files["csv"])))
    assert [int(r["step"]) for r in rows] == [1, 2, 3] and all(math.isfinite(float(r["loss"])) for r in rows)
    assert Path(res.files["png"]).stat().st_size > 1000
    assert json.loads(Path(res.files["json"]).read_text())["config"]["batch_size"] == 4
    torch.testing.assert_close(res.model.state_dict(), ck["net"])


def test_sampler_difficulty_mix_is_per_seed_and_in_range():
    kw = dict(size=128, pool_sequences=6, sequence_frames=3, frame_size=(96, 96))
    a = tr.PairSampler(difficulty_min=0.3, **kw)
    b = tr.PairSampler(difficulty_min=0.3, **kw)
    diffs = [s.info["difficulty"] for s in a.pool]
    assert diffs == [s.info["difficulty"] for s in b.pool]  # deterministic
    assert all(0.3 <= d <= 1.0 for d in diffs) and len(set(diffs)) == len(diffs)  # a mix, not one value
    full = tr.PairSampler(difficulty_min=1.0, **kw)
    assert all(s.info["difficulty"] == 1.0 for s in full.pool)
    # same seeds, same photographs: only the difficulty differs
    assert [s.info["target"] for s in full.pool] == [s.info["target"] for s in a.pool]


@pytest.mark.parametrize("kwargs,match", [
    (dict(steps=0), "steps"), (dict(batch_size=-2), "batch_size"), (dict(lr=0.0), "lr"),
    (dict(lr=float("nan")), "lr"), (dict(sequence_frames=1), "sequence_frames"),
    (dict(time_limit_s=-1), "time_limit_s"), (dict(wide_jitter_p=2.0), "wide_jitter_p"),
    (dict(difficulty_min=1.5), "difficulty_min"), (dict(difficulty_min=-0.1), "difficulty_min"),
])
def test_bad_training_config(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        tr.TrainConfig(**kwargs).validate()


def test_train_script_rejects_bad_input(tmp_path):
    script = REPO / "examples" / "train_tracker.py"
    for args, match in (
        (["--model", "spiketrack-x999", "-o", str(tmp_path / "a")], "unknown SpikeTrack variant"),
        (["--steps", "0", "-o", str(tmp_path / "b")], "steps"),
        (["--init-weights", str(tmp_path / "missing.pth"), "-o", str(tmp_path / "c")], "not a file"),
    ):
        r = subprocess.run([sys.executable, str(script), *args, "--no-progress"], capture_output=True, text=True,
                           timeout=120)
        assert r.returncode == 2, r.stderr
        assert match in r.stderr and "Traceback" not in r.stderr


def test_bundle_script_ships_float16_weights_and_measures_them(tmp_path):
    run = tmp_path / "run"
    cfg = tr.TrainConfig(steps=2, batch_size=2, pool_sequences=2, sequence_frames=4, frame_size=(120, 160),
                         log_every=1, warmup_steps=1, calibration_batch=2, bn_recompute_batches=1)
    tr.train_tracker(cfg, run)
    script = REPO / "scripts" / "bundle_tracker.py"
    dest = tmp_path / "dest"
    r = subprocess.run([sys.executable, str(script), str(run), "--dest", str(dest), "--eval-sequences", "1",
                        "--eval-frames", "3"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    stem = "spiketrack-tiny128-t1"
    assert sorted(p.name for p in dest.iterdir()) == sorted(
        f"{stem}{s}" for s in (".pth", "_loss.csv", "_loss.png", "_train.json", "_eval.json", "_eval.png"))
    ck = torch.load(dest / f"{stem}.pth", weights_only=True)
    assert ck["meta"]["steps"] == 2
    assert all(v.dtype == (torch.float16 if v.is_floating_point() else torch.int64) for v in ck["net"].values())
    rec = json.loads((dest / f"{stem}_eval.json").read_text())
    assert "as stored, float16" in rec["weights"] and rec["frames_scored"] == 3  # otb: every frame, the first too
    # a folder that is not a finished training run
    bad = subprocess.run([sys.executable, str(script), str(tmp_path / "nothing"), "--dest", str(tmp_path / "d2")],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "_train.json" in bad.stderr and not (tmp_path / "d2").exists()
