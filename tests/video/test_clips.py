"""Generated motion clips (spikedeploy.video.clips): determinism in (seed, split, index), disjoint
photographs between train and test, balanced labels, the motion of every class, the clip folder
round trip (npy and PNG), its refusals, and the network input."""

from __future__ import annotations

import csv
import json
from collections import Counter

import numpy as np
import pytest
import torch

from spikedeploy.errors import ConfigError, InputError, SpikedeployError
from spikedeploy.video import (INPUT_MEAN, INPUT_STD, LABELS_FILE, MOTIONS, SPLIT_PHOTOS, clip_tensor, generate_clip,
                               generate_clips, read_clips, write_clips)
from spikedeploy.video.clips import _motion_path


def test_deterministic_in_seed_split_and_index():
    a = generate_clip(7, "train", seed=3, frames=8, size=48)
    b = generate_clip(7, "train", seed=3, frames=8, size=48)
    assert np.array_equal(a.frames, b.frames) and a.info == b.info and a.label == b.label == 7 % len(MOTIONS)
    assert a.frames.dtype == np.uint8 and a.frames.shape == (8, 48, 48, 3) and not a.frames.flags.writeable
    # the same clip whatever the number generated before it
    assert np.array_equal(generate_clips(10, "train", seed=3, frames=8, size=48)[7].frames, a.frames)
    assert np.array_equal(generate_clips(3, "train", seed=3, frames=8, size=48, first=6)[1].frames, a.frames)
    for other in (generate_clip(7, "train", seed=4, frames=8, size=48), generate_clip(7, "test", seed=3, frames=8, size=48),
                  generate_clip(13, "train", seed=3, frames=8, size=48)):
        assert not np.array_equal(other.frames, a.frames)
    # the motion's parameters do not depend on T: 16 frames move by the same amount as 8
    c = generate_clip(6, "train", frames=8)
    d = generate_clip(6, "train", frames=16)
    assert c.motion == d.motion == "left" and c.info["travel"] == d.info["travel"]
    assert {k: v for k, v in c.info.items() if k != "frames"} == {k: v for k, v in d.info.items() if k != "frames"}
    assert np.array_equal(c.frames[0], d.frames[0])  # same start (and same draws) at both lengths


def test_train_and_test_photographs_are_disjoint():
    assert set(SPLIT_PHOTOS["train"]).isdisjoint(SPLIT_PHOTOS["test"])
    used = {}
    for split in ("train", "test"):
        clips = generate_clips(24, split, frames=2, size=32)
        used[split] = {c.info["background"] for c in clips} | {c.info["object"] for c in clips}
        assert used[split] <= set(SPLIT_PHOTOS[split])
        assert all(c.info["background"] != c.info["object"] for c in clips)
        assert all(c.split == split for c in clips)
    assert used["train"].isdisjoint(used["test"])
    assert len(used["train"]) >= 6 and len(used["test"]) >= 4  # many photographs drawn, not one


def test_labels_are_balanced():
    from spikedeploy.models.spikevideoformer import CONFIGS

    assert CONFIGS["tiny"].num_classes == len(MOTIONS) and CONFIGS["tiny"].resolution == 64  # the bundled task
    clips = generate_clips(20, "train", frames=2, size=32)
    counts = Counter(c.label for c in clips)
    assert sorted(counts) == list(range(len(MOTIONS)))
    assert max(counts.values()) - min(counts.values()) <= 1
    assert Counter(c.motion for c in generate_clips(18, "test", frames=2, size=32, first=5)) == {m: 3 for m in MOTIONS}
    with pytest.raises(ConfigError, match="label must be below"):
        generate_clip(0, label=len(MOTIONS))
    with pytest.raises(ConfigError, match="unknown clip split"):
        generate_clip(0, "heldout")


def test_each_motion_moves_as_named():
    rng = np.random.default_rng(0)
    n, size = 9, 64
    for motion in MOTIONS:
        centers, scales, angles, _ = _motion_path(rng, motion, n, size, 20.0)
        dx, dy = np.diff(centers[:, 0]), np.diff(centers[:, 1])
        moving = {"left": dx < 0, "right": dx > 0, "up": dy < 0, "down": dy > 0}
        if motion in moving:
            assert moving[motion].all() and np.all(np.diff(scales) == 0) and np.all(np.diff(angles) == 0)
            travel = abs(centers[-1] - centers[0]).max()
            assert 0.25 * size - 1e-9 <= travel <= 0.45 * size + 1e-9
        elif motion == "rotate":
            turn = np.degrees(angles[-1] - angles[0])
            assert 60 - 1e-9 <= abs(turn) <= 120 + 1e-9 and (np.all(np.diff(angles) > 0) or np.all(np.diff(angles) < 0))
            assert np.all(dx == 0) and np.all(dy == 0)
        else:
            factor = scales[-1] / scales[0]
            assert np.exp(0.45) - 1e-9 <= max(factor, 1 / factor) <= np.exp(0.8) + 1e-9
            assert np.all(dx == 0) and np.all(dy == 0)
    # and the rendered object moves: the first and last frames differ well beyond the sensor noise
    for clip in generate_clips(6, "test", frames=8, size=64):
        diff = np.abs(clip.frames[-1].astype(np.int32) - clip.frames[0].astype(np.int32))
        assert (diff > 40).mean() > 0.02, clip.motion


@pytest.mark.parametrize("fmt", ["npy", "png"])
def test_clip_folder_round_trip(tmp_path, fmt):
    clips = generate_clips(7, "test", frames=5, size=32)
    out = write_clips(tmp_path / "clips", clips, format=fmt)
    rows = list(csv.reader((out / LABELS_FILE).open(encoding="utf-8")))
    assert rows[0] == ["file", "label", "class"] and len(rows) == 8
    assert rows[1] == [f"clip_00000{'.npy' if fmt == 'npy' else ''}", "0", "left"]
    info = json.loads((out / "info.json").read_text(encoding="utf-8"))
    assert info["classes"] == list(MOTIONS) and info["count"] == 7 and info["splits"] == ["test"]
    back = read_clips(out)
    assert [r.label for r in back] == [c.label for c in clips]
    assert [r.class_name for r in back] == [c.motion for c in clips]
    for r, c in zip(back, clips):
        assert np.array_equal(r.frames, c.frames)  # PNG is lossless
    # one clip on its own: a .npy file or a folder of frames
    one = read_clips(out / ("clip_00003.npy" if fmt == "npy" else "clip_00003"))
    assert len(one) == 1 and one[0].label is None and np.array_equal(one[0].frames, clips[3].frames)
    # a folder of clips without labels
    (out / LABELS_FILE).unlink()
    unlabeled = read_clips(out)
    assert len(unlabeled) == 7 and all(r.label is None for r in unlabeled)
    assert np.array_equal(unlabeled[6].frames, clips[6].frames)


def test_clip_folder_refusals(tmp_path):
    clips = generate_clips(2, "train", frames=2, size=16)
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(SpikedeployError, match="did not write"):
        write_clips(foreign, clips)
    assert (foreign / "notes.txt").read_text() == "keep me"
    out = write_clips(tmp_path / "ok", clips)
    write_clips(out, clips[:1])  # an earlier spikedeploy output is replaced
    assert len(read_clips(out)) == 1 and not (out / "clip_00001.npy").exists()
    with pytest.raises(ConfigError, match="unknown clip format"):
        write_clips(tmp_path / "x", clips, format="mp4")
    with pytest.raises(InputError, match="does not exist"):
        read_clips(tmp_path / "missing")
    (out / LABELS_FILE).write_text("file,label,class\nclip_00000.npy,left,left\n")
    with pytest.raises(InputError, match=r"labels.csv, line 2: the label must be an integer"):
        read_clips(out)
    (out / LABELS_FILE).write_text("file,label\n../escape.npy,0\n")
    with pytest.raises(InputError, match="is not a clip inside"):
        read_clips(out)
    (out / LABELS_FILE).write_text("name,class\n")
    with pytest.raises(InputError, match="header"):
        read_clips(out)
    bad = tmp_path / "bad.npy"
    np.save(bad, np.zeros((2, 8, 8, 3), np.float32))
    with pytest.raises(InputError, match="uint8"):
        read_clips(bad)


def test_clip_tensor():
    clips = generate_clips(3, "train", frames=4, size=32)
    x = clip_tensor(clips)
    assert x.shape == (4, 3, 3, 32, 32) and x.dtype == torch.float32
    expect = (clips[1].frames[2, 5, 7, 0] / 255.0 - INPUT_MEAN) / INPUT_STD
    assert abs(float(x[2, 1, 0, 5, 7]) - expect) < 1e-6  # float32 rounding of the normalization
    assert float(x.min()) >= -2.0 and float(x.max()) <= 2.0
    with pytest.raises(InputError, match="one length and frame size"):
        clip_tensor([clips[0].frames, clips[1].frames[:2]])


def test_clip_tensor_luma_events():
    """``luma-events``: channel 0 the normalized luminance, 1 and 2 the ON / OFF change from the
    previous frame (zero at the first), computed here in float64 from the formula; a static clip
    has no events, time reversal swaps ON and OFF."""
    from spikedeploy.video.clips import EVENT_GAIN, LUMA_MEAN, LUMA_STD, LUMA_WEIGHTS

    clips = generate_clips(2, "train", frames=5, size=32)
    x = clip_tensor(clips, "luma-events").double().numpy()
    assert x.shape == (5, 2, 3, 32, 32)
    f = np.stack([c.frames for c in clips], axis=1).astype(np.float64) / 255.0
    luma = f @ np.asarray(LUMA_WEIGHTS)
    change = np.concatenate([np.zeros_like(luma[:1]), np.diff(luma, axis=0)])
    want = np.stack([(luma - LUMA_MEAN) / LUMA_STD, EVENT_GAIN * np.maximum(change, 0) / LUMA_STD,
                     EVENT_GAIN * np.maximum(-change, 0) / LUMA_STD], axis=2)
    assert np.abs(x - want).max() < 1e-5  # float32 arithmetic of values up to ~16
    assert (x[0, :, 1:] == 0).all() and (x[1:, :, 1:] > 0).mean() > 0.02  # the object moves: events
    assert ((x[:, :, 1] > 0) & (x[:, :, 2] > 0)).sum() == 0  # a pixel is ON or OFF, not both
    still = np.repeat(clips[0].frames[:1], 4, axis=0)
    assert (clip_tensor([still], "luma-events")[:, :, 1:] == 0).all()
    back = clip_tensor([clips[0].frames[::-1].copy()], "luma-events").numpy()
    fwd = x[:, :1].astype(np.float32)
    assert np.array_equal(back[1:, 0, 1], fwd[::-1][:-1, 0, 2]) and np.array_equal(back[1:, 0, 2], fwd[::-1][:-1, 0, 1])
    with pytest.raises(ConfigError, match="encoding must be one of"):
        clip_tensor(clips, "events")
