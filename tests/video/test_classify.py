"""``spikedeploy classify`` (spikedeploy.video.classify): end to end on generated clips with
torch, reference and ONNX (ONNX = reference exactly: the same integer spike network in float64;
torch float32 the same classes), the Lava target (identical to the reference where Lava has the
SDHA process, else refused with one line), the report files, preprocessing, and bad input (exit
code 2, one line)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from spikedeploy.cli import main
from spikedeploy.errors import ConfigError, InputError
from spikedeploy.video.classify import classify, prepare_clip, read_label_file
from spikedeploy.video.clips import generate_clips, write_clips

#: torch runs float32 with unfolded BatchNorm, the reference float64 folded: a membrane within
#: float32 rounding (~1e-6 relative) of a threshold may flip a spike; at most this share may differ
TORCH_SPIKE_TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("clips") / "test3"
    write_clips(path, generate_clips(3, "test"))
    return path


def test_cli_end_to_end_torch_reference_onnx(clip_dir, tmp_path, capsys):
    out = tmp_path / "report"
    rc = main(["classify", "--video", str(clip_dir), "--target", "torch,reference,onnx", "--checkpoint", "random",
               "-o", str(out), "--no-progress"])
    text = capsys.readouterr().out
    assert rc == 0, text
    for name in ("report.json", "report.md", "report.html", "confusion.png"):
        assert (out / name).is_file(), name
    rep = json.loads((out / "report.json").read_text())
    assert rep["labelled"] and rep["chance"] == pytest.approx(1 / 6) and len(rep["clips"]) == 3
    t = {s["target"]: s for s in rep["targets"]}
    assert set(t) == {"torch", "reference", "onnx"} and all(s["status"] == "ran" for s in t.values())
    # ONNX: bit-identical per-frame logits and spikes on all 31 neuron layers
    assert t["onnx"]["identical_logits"] == 3 and t["onnx"]["max_logit_diff"] == 0.0
    assert t["onnx"]["spike_layers"] == 31 and t["onnx"]["spike_mismatches"] == 0
    # torch (float32): the same classes, spikes equal up to float32 rounding at thresholds
    assert t["torch"]["same_class"] == 3 and t["torch"]["spike_layers"] == 31
    assert t["torch"]["spike_mismatches"] <= TORCH_SPIKE_TOLERANCE * t["torch"]["spikes_compared"]
    assert t["torch"]["max_logit_diff"] < 1e-3
    for c in rep["clips"]:
        assert c["predicted"]["onnx"] == c["predicted"]["reference"] == c["predicted"]["torch"]
        assert c["label"] == int(c["name"].split("_")[1].split(".")[0]) % 6
    correct = sum(c["predicted"]["reference"] == c["label"] for c in rep["clips"])
    assert t["reference"]["correct"] == correct and t["reference"]["top1"] == pytest.approx(correct / 3)
    assert "top-1" in text and "chance 16.7 %" in text
    md = (out / "report.md").read_text()
    assert "| onnx | ran |" in md and "3/3" in md


def test_lava_target_identical_or_refused(clip_dir, tmp_path):
    """Lava: where its exporter has the SDHA process the binary-spike bundle equals the reference
    (logits and every layer's spikes); otherwise the target is listed as refused with the
    exporter's one-line error and the other targets still run."""
    from spikedeploy.exporters import lava as lava_exporter
    from spikedeploy.ir import ops as O

    rep = classify(clip_dir, targets="reference,lava", checkpoint="random", frames=8)
    s = rep.summary("lava")
    if O.SpikeHammingAttention in getattr(lava_exporter, "RULES", {}):
        assert s.status == "ran", s.error
        assert s.identical_logits == 3 and s.spike_mismatches == 0 and s.spike_layers > 0
    else:
        assert s.status == "refused" and "\n" not in s.error and "SpikeHammingAttention" in s.error
    assert rep.summary("reference").status == "ran"


def test_single_clip_file_labels_file_and_preprocessing(tmp_path):
    """A single .npy clip of 12 frames at 80 x 96: 8 frames evenly spaced, centre crop, resize;
    labels from a separate CSV by class name."""
    clip = generate_clips(1, "test", frames=12, size=96)[0]
    frames = np.ascontiguousarray(clip.frames[:, 8:88])  # 96 x 80 (H x W): a non-square frame
    prepared = prepare_clip(frames, 8, 64, name="c")
    assert prepared.shape == (8, 64, 64, 3) and prepared.dtype == np.uint8
    same = prepare_clip(clip.frames[:8, :64, :64], 8, 64)
    assert np.array_equal(same, clip.frames[:8, :64, :64])  # already T x S x S: untouched
    np.save(tmp_path / "one.npy", frames)
    (tmp_path / "labels.csv").write_text("file,label\none.npy,left\n")
    rep = classify(tmp_path / "one.npy", labels=tmp_path / "labels.csv", targets="torch", checkpoint="random")
    assert rep.labelled and rep.clips[0].label == 0 and rep.clips[0].frames_in_clip == 12
    assert read_label_file(tmp_path / "labels.csv") == {"one.npy": 0}


def test_bad_input_is_one_line_exit_2(clip_dir, tmp_path, capsys):
    cases = [
        (["--video", str(tmp_path / "missing")], "does not exist"),
        (["--video", str(clip_dir), "--target", "torch,gpu"], "unknown target"),
        (["--video", str(clip_dir), "-T", "9"], "-T 9"),
        (["--video", str(clip_dir), "--checkpoint", str(tmp_path / "nope.pth")], "no such file"),
    ]
    bad_labels = tmp_path / "bad.csv"
    bad_labels.write_text("file,label\nclip_00000.npy,7\n")
    cases.append((["--video", str(clip_dir), "--labels", str(bad_labels)], "not a class index"))
    for extra, needle in cases:
        rc = main(["classify", *extra, "--checkpoint", "random", "-o", str(tmp_path / "o"), "--no-progress"]
                  if "--checkpoint" not in extra else ["classify", *extra, "-o", str(tmp_path / "o"), "--no-progress"])
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and len(err) == 1 and needle in err[0], (extra, err)
    assert not (tmp_path / "o").exists()
    with pytest.raises(InputError, match="unlabelled"):
        partial = tmp_path / "partial.csv"
        partial.write_text("file,label\nclip_00000.npy,0\n")
        classify(clip_dir, labels=partial, targets="torch", checkpoint="random")
    with pytest.raises(ConfigError):
        classify(clip_dir, targets="", checkpoint="random")
