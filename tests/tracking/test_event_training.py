"""Training the event SpikeTrack (spikedeploy.tracking.event_training): MSST clips cut as the tracker
cuts them, labels that map back to the ground truth, a few optimizer steps, the files written, the
command line dispatch and bad options; the fixed-D model and the per-frame statistics of
spikedeploy.tracking.event_evaluation."""

import argparse
import csv
import json
import math

import numpy as np
import pytest
import torch

from spikedeploy.errors import ConfigError
from spikedeploy.models.spiketrack_event import EventDILIF, init_event_spiketrack_for_spiking, spiketrack_event
from spikedeploy.tracking import event_training as et
from spikedeploy.tracking.event_evaluation import (EVENT_HELDOUT_DIFFICULTY, dilif_layers, fixed_d_model,
                                                   frame_statistics, heldout_event_sequences)
from spikedeploy.tracking.event_tracker import EventTracker, grid_input
from spikedeploy.tracking.tracker import map_box_back

#: float64 round trip of the label mapping (a few ulps of coordinates of a few hundred pixels)
MAP_BACK_ATOL = 1e-9


@pytest.fixture(scope="module")
def sampler():
    return et.EventClipSampler(size=128, template_size=64, n_bins=5, clip_frames=4, seed=3, pool_sequences=2,
                               sequence_frames=12, max_gap=3, wide_jitter_p=0.3, difficulty_min=0.2,
                               difficulty_max=0.5)


@pytest.fixture(scope="module")
def batch(sampler):
    return sampler.draw(3)


def test_clip_batch_shapes_and_sources(sampler, batch):
    assert batch.template.shape == (1, 3, 10, 64, 64) and batch.template.dtype == torch.float32
    assert batch.search.shape == (4, 3, 10, 128, 128) and batch.boxes.shape == (4, 3, 4)
    for spec in batch.clips:
        seq = sampler.pool[spec.pool_index]
        assert seq.split == "train" and spec.sequence == seq.seed
        # consecutive frames after the template frame, inside the sequence
        assert spec.frames == tuple(range(spec.frames[0], spec.frames[0] + 4))
        assert spec.template_frame < spec.frames[0] <= spec.template_frame + 3 and spec.frames[-1] <= len(seq) - 1
        assert seq.info["difficulty"] == sampler.difficulty_of(seq.seed)
        assert 0.2 <= seq.info["difficulty"] <= 0.5
    assert float(batch.search.sum()) > 0 and float(batch.template.sum()) > 0


def test_labels_map_back_to_the_ground_truth(sampler, batch):
    """The tracker's map_box_back of each label (scaled to crop pixels by the crop's own resize
    factor) is the ground-truth box of that frame."""
    S = sampler.size
    for b, spec in enumerate(batch.clips):
        seq = sampler.pool[spec.pool_index]
        for t, (k, prev, rf) in enumerate(zip(spec.frames, spec.prev_boxes, spec.resize_factors)):
            label, rf_label = et._crop_targets(seq.boxes[k], prev, S)
            assert rf_label == rf  # the label's crop is the crop that was cut
            np.testing.assert_array_equal(batch.boxes[t, b].numpy(), label.astype(np.float32))
            back = map_box_back(list(prev), list(label * S / rf), rf, S)
            np.testing.assert_allclose(back, seq.boxes[k], rtol=0, atol=MAP_BACK_ATOL)


class _RecordingNetwork:
    """An EventTrackerNetwork that records its inputs and answers a fixed head output."""

    size, template_size, n_bins = 128, 64, 5

    def __init__(self):
        self.templates, self.searches = [], []

    def template(self, grid):
        self.templates.append(grid.clone())
        return None

    def start(self, memory):
        pass

    def search(self, grid):
        self.searches.append(grid.clone())
        return (torch.zeros(1, 1, 1, 8, 8), torch.zeros(1, 1, 2, 8, 8), torch.zeros(1, 1, 2, 8, 8))

    def close(self):
        pass


def test_crops_are_the_trackers(sampler, batch):
    """The template is the crop EventTracker.initialize cuts from the template frame's window
    around its box, and each search frame the crop EventTracker.track cuts around the same
    previous state (bit for bit)."""
    for b, spec in enumerate(batch.clips):
        seq = sampler.pool[spec.pool_index]
        net = _RecordingNetwork()
        tracker = EventTracker(net)
        i = spec.template_frame
        tracker.initialize(seq.events, seq.frame_times[i], seq.frame_times[i + 1], seq.boxes[i])
        assert torch.equal(net.templates[0], batch.template[:, b:b + 1])
        for t, (k, prev) in enumerate(zip(spec.frames, spec.prev_boxes)):
            tracker.state = list(prev)  # the simulated previous state
            r = tracker.track(seq.events, seq.frame_times[k - 1], seq.frame_times[k])
            assert r.crop_box == list(prev) and r.resize_factor == spec.resize_factors[t]
            assert torch.equal(net.searches[-1], batch.search[t:t + 1, b:b + 1])
            assert torch.equal(grid_input(r.search), batch.search[t:t + 1, b:b + 1])


def test_sampler_is_deterministic_and_refreshes():
    kw = dict(size=128, template_size=64, n_bins=5, clip_frames=2, seed=5, pool_sequences=2, sequence_frames=6)
    a, b = et.EventClipSampler(**kw), et.EventClipSampler(**kw)
    ba, bb = a.draw(2), b.draw(2)
    assert torch.equal(ba.search, bb.search) and torch.equal(ba.boxes, bb.boxes) and ba.clips == bb.clips
    seeds = [s.seed for s in a.pool]
    a.refresh(1)
    assert [s.seed for s in a.pool] == [max(seeds) + 1] + seeds[1:]
    # another training seed sees other sequences
    c = et.EventClipSampler(**{**kw, "seed": 6})
    assert not set(seeds) & {s.seed for s in c.pool}


def test_loss_is_finite_and_decreases_on_a_fixed_batch(batch):
    """A few AdamW steps on one batch (training mode: batch statistics, batch-scoped DI-LIF) lower
    its loss; the DI-LIF gates receive gradients and move."""
    torch.manual_seed(0)
    z, x, boxes = batch.template[:, :2], batch.search[:2, :2], batch.boxes[:2, :2]  # 2 clips of 2 frames: fast
    model = spiketrack_event("tiny", dilif_scope="batch")
    model.eval()
    et.calibrate_batchnorm(model, lambda: model(z, x))
    et.init_head_biases(model)
    model.train()
    gates = [(m.gate_w.detach().clone(), m.gate_b.detach().clone()) for _, m in dilif_layers(model)]
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    losses = []
    for _ in range(10):
        out = et.clip_loss(model(z, x), boxes)
        assert all(math.isfinite(float(v.detach())) for v in out.values())
        opt.zero_grad()
        out["loss"].backward()
        if not losses:
            assert any(float(m.gate_w.grad.abs()) > 0 for _, m in dilif_layers(model))
        opt.step()
        losses.append(float(out["loss"].detach()))
    assert losses[-1] < 0.9 * losses[0], losses
    moved = [not (torch.equal(w, m.gate_w) and torch.equal(b_, m.gate_b))
             for (w, b_), (_, m) in zip(gates, dilif_layers(model))]
    assert all(moved)


def test_clip_loss_is_the_rgb_loss_per_frame(batch):
    """clip_loss over T x B rows equals the RGB tracking_loss of each frame's rows, averaged (the
    focal loss is normalized by the number of peaks, one per row, so the mean is exact)."""
    from spikedeploy.models.spiketrack import HeadOutputs

    T, B = batch.boxes.shape[:2]
    g = torch.Generator().manual_seed(0)
    head = HeadOutputs(torch.randn(T, B, 1, 8, 8, generator=g), torch.randn(T, B, 2, 8, 8, generator=g),
                       torch.rand(T, B, 2, 8, 8, generator=g))
    whole = et.clip_loss(head, batch.boxes)
    per = [et.tracking_loss(HeadOutputs(*(h[t:t + 1] for h in head)), batch.boxes[t]) for t in range(T)]
    for key in ("focal", "l1", "giou"):
        assert float(whole[key]) == pytest.approx(float(np.mean([float(p[key]) for p in per])), rel=1e-5)


def _small_config(**kw):
    base = dict(steps=4, batch_size=2, clip_frames=2, pool_sequences=2, sequence_frames=6, max_gap=2,
                calibration_batch=2, bn_recompute_batches=1, log_every=2, save_every=100, warmup_steps=1,
                refresh_every=2, refresh_count=1, bn_freeze_fraction=0.5)
    base.update(kw)
    return et.EventTrainConfig(**base)


def test_train_event_tracker_writes_its_files(tmp_path):
    res = et.train_event_tracker(_small_config(), tmp_path)
    stem = et.EVENT_VARIANT
    assert res.steps == 4 and len(res.history) == 2
    assert set(res.files) == {"weights", "csv", "png", "json"}
    payload = torch.load(tmp_path / f"{stem}.pth", weights_only=True)
    assert payload["meta"]["final"] is True and payload["meta"]["bn_frozen_at_step"] == 2
    assert all(v.dtype == torch.float32 for v in payload["net"].values() if v.is_floating_point())
    loaded = et.load_event_weights(tmp_path / f"{stem}.pth")
    for k, v in loaded.state_dict().items():
        assert torch.equal(v, res.model.state_dict()[k]), k
    assert not res.model.training and res.model.config.dilif_scope == "sample"
    rows = list(csv.DictReader(open(tmp_path / f"{stem}_loss.csv")))
    assert [int(r["step"]) for r in rows] == [2, 4]
    assert all(math.isfinite(float(r["loss"])) and 1 <= float(r["d_mean"]) <= 12 for r in rows)
    record = json.loads((tmp_path / f"{stem}_train.json").read_text())
    assert record["config"]["clip_frames"] == 2 and record["final"] and record["steps"] == 4


def test_training_is_deterministic():
    a = et.train_event_tracker(_small_config(steps=2, bn_freeze_fraction=1.0))
    b = et.train_event_tracker(_small_config(steps=2, bn_freeze_fraction=1.0))
    for k, v in a.model.state_dict().items():
        assert torch.equal(v, b.model.state_dict()[k]), k


@pytest.mark.parametrize("kw, words", [
    (dict(clip_frames=0), "clip_frames"),
    (dict(sequence_frames=4, clip_frames=3), "sequence_frames"),
    (dict(difficulty_max=1.5), "difficulty_max"),
    (dict(difficulty_min=0.5, difficulty_max=0.4), "difficulty_max"),
    (dict(bn_freeze_fraction=-0.1), "bn_freeze_fraction"),
    (dict(variant="spiketrack-tiny128-t1"), "event recipe"),
    (dict(batchnorm="running"), "batchnorm"),
])
def test_bad_config(kw, words):
    with pytest.raises(ConfigError, match=words):
        _small_config(**kw).validate()


def _parse(argv):
    p = argparse.ArgumentParser()
    et.add_train_arguments(p)
    return p.parse_args(argv)


def test_train_command_dispatches_the_event_model(tmp_path, monkeypatch):
    """`train --model spiketrack-event-tiny` runs the event recipe (its defaults where the
    options are not given) and the held-out event evaluation, with the fixed-D comparison."""
    run_train = et.run_train
    seen = {}
    real = et.train_event_tracker

    def small(cfg, out, **kw):
        seen["cfg"] = cfg
        cfg.pool_sequences, cfg.sequence_frames, cfg.calibration_batch, cfg.bn_recompute_batches = 2, 6, 2, 1
        return real(cfg, out, **kw)

    monkeypatch.setattr(et, "train_event_tracker", small)
    args = _parse(["--model", "spiketrack-event-tiny", "-o", str(tmp_path / "run"), "--steps", "2",
                   "--clip-frames", "2", "--eval-sequences", "1", "--eval-frames", "4", "--no-progress"])
    summary = run_train(args, log=lambda s: None)
    cfg = seen["cfg"]
    d = et.EventTrainConfig()
    assert (cfg.steps, cfg.clip_frames) == (2, 2)
    assert (cfg.batch_size, cfg.lr, cfg.difficulty_max, cfg.wide_jitter_p) == (d.batch_size, d.lr, d.difficulty_max,
                                                                                 d.wide_jitter_p)
    ev = json.loads((tmp_path / "run" / f"{et.EVENT_VARIANT}_eval.json").read_text())
    assert ev["sequences"] == 1 and ev["frames_scored"] == 4 and ev["difficulty"] == EVENT_HELDOUT_DIFFICULTY
    assert summary["eval"]["auc"] == ev["auc"] and "fixed_d" in ev
    assert (tmp_path / "run" / f"{et.EVENT_VARIANT}_eval.png").is_file()


def test_rgb_training_rejects_event_options_and_keeps_its_defaults(tmp_path, monkeypatch):
    from spikedeploy.tracking import training

    args = _parse(["-o", str(tmp_path / "x"), "--clip-frames", "4"])
    with pytest.raises(ConfigError, match="--clip-frames applies to spiketrack-event-tiny only"):
        et.run_train(args, log=lambda s: None)
    assert not (tmp_path / "x").exists()
    seen = {}
    monkeypatch.setattr(training, "run_train", lambda a, log: seen.setdefault("args", a))
    et.run_train(_parse(["-o", str(tmp_path / "y"), "--lr", "0.01"]), log=lambda s: None)
    a, d = seen["args"], training.TrainConfig()
    assert (a.model, a.steps, a.batch_size, a.lr, a.difficulty_min, a.wide_jitter) == (
        d.variant, d.steps, d.batch_size, 0.01, d.difficulty_min, d.wide_jitter_p)
    # the same options as training.add_train_arguments, plus the two event ones
    rgb = argparse.ArgumentParser()
    training.add_train_arguments(rgb)
    both = argparse.ArgumentParser()
    et.add_train_arguments(both)
    assert {x.dest for x in both._actions} == {x.dest for x in rgb._actions} | {"clip_frames", "difficulty_max"}


# ---------------------------------------------------------------------------------------------
# event_evaluation: fixed D, per-frame statistics
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def random_model():
    return init_event_spiketrack_for_spiking(spiketrack_event("tiny"), seed=2).eval()


@pytest.fixture(scope="module")
def short_heldout():
    return heldout_event_sequences(1, 6)[0]


def test_fixed_d_model_fires_with_d_init_on_every_frame(random_model, short_heldout):
    """gate w = b = 0 gives D = clamp(round(2 sigmoid(0) D_init), 1, 2 D_init) = D_init exactly; the
    trained gates move D from frame to frame; the original model is untouched."""
    fixed = fixed_d_model(random_model)
    assert all(float(m.gate_w) == 0 and float(m.gate_b) == 0 for _, m in dilif_layers(fixed))
    assert all(float(m.gate_w) != 0 for _, m in dilif_layers(random_model))
    st_fixed = frame_statistics(fixed, short_heldout)
    st = frame_statistics(random_model, short_heldout)
    L = len(dilif_layers(random_model))
    assert st["d"].shape == st_fixed["d"].shape == (5, L) and L == 2 * 7  # 7 DI-LIF layers per block
    assert np.all(st_fixed["d"] == random_model.config.d_init)
    assert np.all(st["d"] == np.round(st["d"])) and st["d"].min() >= 1 and st["d"].max() <= 12
    assert len(np.unique(st["d"])) > 1
    ev = short_heldout.events.events
    t = short_heldout.frame_times
    counts = [int(((ev["t"] >= t[i - 1]) & (ev["t"] < t[i])).sum()) for i in range(1, 6)]
    assert st["events"].tolist() == counts
    np.testing.assert_array_equal(st["density"], np.asarray(counts) / (320 * 240))
    assert st["boxes"].shape == (6, 4) and st["boxes"][0].tolist() == short_heldout.boxes[0].tolist()
    assert all(isinstance(m, EventDILIF) for _, m in dilif_layers(fixed))


def test_heldout_event_sequences_are_heldout_and_visible():
    seqs = heldout_event_sequences(2, 5)
    assert [s.seed for s in seqs] == [0, 1] and all(s.split == "heldout" for s in seqs)
    assert all(s.info["difficulty"] == EVENT_HELDOUT_DIFFICULTY for s in seqs)


def test_calibrated_gates_follow_the_input_activity(batch):
    """calibrate_dilif_gates sets gate_w = spread / max(std(mu), GATE_MIN_STD) and gate_b =
    -gate_w mean(mu) from each DI-LIF layer's per-frame input means of its last call in the
    calibration pass (the search branch), recorded here by hooks of our own during that pass."""
    z, x = batch.template[:, :2], batch.search[:3, :2]
    model = spiketrack_event("tiny", dilif_scope="batch").eval()
    et.calibrate_batchnorm(model, lambda: model(z, x))
    layers = dilif_layers(model)
    seen = {}
    hooks = [m.register_forward_pre_hook(lambda mod, a, name=name: seen.__setitem__(name, a[0].flatten(2).mean(2)))
             for name, m in layers]
    n = et.calibrate_dilif_gates(model, lambda: model(z, x), spread=1.5)
    for h in hooks:
        h.remove()
    assert n == len(layers) == 14
    for name, m in layers:
        mu = seen[name].double().reshape(-1)
        assert mu.numel() == 3 * 2  # the search call: 3 frames x 2 clips
        w = 1.5 / max(float(mu.std()), et.GATE_MIN_STD)
        assert float(m.gate_w) == pytest.approx(w, rel=1e-6)  # stored as float32
        assert float(m.gate_b) == pytest.approx(-w * float(mu.mean()), rel=1e-5, abs=1e-6)
