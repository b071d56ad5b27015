"""The video training recipe (spikedeploy.video.training): a few steps lower the loss on a fixed
batch, the augmentations map labels as the symmetries do, the recipe's config round-trips through
``_train.json``, a short run writes its record, and ``train --model spikevideoformer-tiny`` refuses
the tracker recipes' options with one line."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from spikedeploy.errors import ConfigError
from spikedeploy.models.spikevideoformer import init_spikevideoformer_for_spiking, spikevideoformer_net
from spikedeploy.video.clips import MOTIONS, generate_clip
from spikedeploy.video.training import (ClipPool, VideoTrainConfig, augment_clip, clip_loss, config_from_json,
                                        heldout_evaluation, load_video_model, train_video_model)


def test_augmentations_map_labels_like_the_motion():
    """Mirroring left-right swaps left/right, top-bottom up/down, time reversal both; rotate and
    zoom stay. Checked on the frames too: a mirrored clip is the pixel-reversed array."""
    swap = {"left": "right", "right": "left", "up": "down", "down": "up"}
    for label, motion in enumerate(MOTIONS):
        frames = generate_clip(label, "train", frames=4, size=32).frames
        f, lb = augment_clip(frames, label, hflip=True)
        assert MOTIONS[lb] == {"left": "right", "right": "left"}.get(motion, motion)
        assert np.array_equal(f, frames[:, :, ::-1])
        f, lb = augment_clip(frames, label, vflip=True)
        assert MOTIONS[lb] == {"up": "down", "down": "up"}.get(motion, motion)
        assert np.array_equal(f, frames[:, ::-1])
        f, lb = augment_clip(frames, label, reverse=True)
        assert MOTIONS[lb] == swap.get(motion, motion)
        assert np.array_equal(f, frames[::-1])
        f, lb = augment_clip(frames, label, hflip=True, vflip=True, reverse=True)
        assert lb == label  # each swap applied twice


def test_a_few_steps_lower_the_loss_on_a_fixed_batch():
    """AdamW on the clip cross-entropy through the binary LIFs' surrogate gradients: 10 steps on
    one fixed batch of 8 clips lower the loss (batch statistics in BatchNorm, as in training)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one thread: deterministic, and fast on a shared machine
    try:
        _fixed_batch_steps()
    finally:
        torch.set_num_threads(threads)


def _fixed_batch_steps():
    torch.manual_seed(0)
    net = spikevideoformer_net("tiny")
    pool = ClipPool(8, seed=0, augment=False, frames=8)
    x, y = pool.sample(8)
    init_spikevideoformer_for_spiking(net.model, seed=0, example=x)
    net.train()
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3)
    losses = []
    for _ in range(10):
        loss = clip_loss(net(x), y)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    # the mean of the last four steps below the first four's by a clear margin (seeded: deterministic)
    assert sum(losses[-4:]) / 4 < sum(losses[:4]) / 4 - 0.1, losses


def test_config_validation_and_json_round_trip(tmp_path):
    cfg = VideoTrainConfig(steps=5, lr=1e-3)
    assert config_from_json(json.loads(json.dumps({"config": cfg.__dict__}))) == cfg
    for bad in (dict(steps=0), dict(lr=0.0), dict(lr=float("nan")), dict(label_smoothing=1.0),
                dict(refresh_count=500, pool_clips=10), dict(variant="spikevideoformer-15m"), dict(augment=1)):
        with pytest.raises(ConfigError):
            VideoTrainConfig(**bad).validate()
    with pytest.raises(ConfigError, match="unknown config key"):
        config_from_json({"config": {"steps": 3, "bogus": 1}})


def test_short_run_writes_its_record(tmp_path):
    """Two steps (BatchNorm frozen after the first) with a small pool: weights loadable with
    ``weights_only=True`` into a fresh model, loss CSV/PNG, ``_train.json`` whose config is the run's;
    the returned model equals the saved weights; the held-out evaluation counts a balanced
    confusion matrix."""
    cfg = VideoTrainConfig(steps=2, batch_size=4, frames=4, pool_clips=8, refresh_count=2, calibration_batch=4,
                           bn_recompute_batches=1, bn_freeze_fraction=0.5, log_every=1, warmup_steps=1)
    res = train_video_model(cfg, tmp_path)
    stem = "spikevideoformer-tiny"
    for suffix in (".pth", "_loss.csv", "_loss.png", "_train.json"):
        assert (tmp_path / f"{stem}{suffix}").is_file(), suffix
    record = json.loads((tmp_path / f"{stem}_train.json").read_text())
    assert config_from_json(record) == cfg and record["steps"] == 2 and record["bn_frozen_at_step"] == 1
    payload = torch.load(tmp_path / f"{stem}.pth", weights_only=True)
    assert set(payload) == {"net", "meta"}
    assert all(v.dtype == torch.float32 for v in payload["net"].values() if v.is_floating_point())
    rows = (tmp_path / f"{stem}_loss.csv").read_text().splitlines()
    assert rows[0] == "step,seconds,lr,loss,accuracy" and len(rows) == 3
    loaded = load_video_model(tmp_path / f"{stem}.pth")
    x = torch.randn(4, 1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(loaded(x), res.model(x))
    ev = heldout_evaluation(loaded, 6, frames=4)
    assert ev["clips"] == 6 and np.asarray(ev["confusion"]).sum(axis=1).tolist() == [1] * 6
    assert ev["chance"] == pytest.approx(1 / 6) and ev["correct"] == sum(
        p["label"] == p["predicted"] for p in ev["predictions"])


def test_train_cli_refuses_tracker_options(tmp_path, capsys):
    from spikedeploy.cli import main

    rc = main(["train", "--model", "spikevideoformer-tiny", "--time-limit", "10", "-o", str(tmp_path / "t")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "--time-limit" in err[0]
    rc = main(["train", "--model", "spikevideoformer-tiny", "--steps", "0", "-o", str(tmp_path / "t")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "steps" in err[0]
    rc = main(["train", "--eval-clips", "6", "-o", str(tmp_path / "t")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "--eval-clips" in err[0]
    assert not (tmp_path / "t").exists()
