"""`spikedeploy track`: backends agree, bad clips and boxes give clear errors, nothing half-written."""

import json

import numpy as np
import pytest

from spikedeploy.cli import main


def _clip(n=3, h=120, w=160):
    f = np.full((n, h, w, 3), 90, np.uint8)
    for i in range(n):
        f[i, 40:70, 30 + 8 * i:60 + 8 * i] = 230
    return f


@pytest.mark.slow
def test_torch64_and_reference_binary_track_identically(tmp_path, capsys):
    """Both run the same integer network in float64 (the reference as binary spikes), so the boxes
    are identical; float32 would let differently ordered sums flip spikes (see the fixtures' README)."""
    clip = tmp_path / "clip.npy"
    np.save(clip, _clip())
    boxes = {}
    for backend in ("torch64", "reference-binary"):
        out = tmp_path / backend
        assert main(["track", "--clip", str(clip), "--init-box", "30,40,30,30", "--backend", backend,
                     "-o", str(out), "--no-progress"]) == 0
        boxes[backend] = json.loads((out / "boxes.json").read_text())["runs"][backend]["boxes"]
    assert len(boxes["torch64"]) == 3 and boxes["torch64"][0] == [30.0, 40.0, 30.0, 30.0]
    assert boxes["torch64"] == boxes["reference-binary"]


def test_bad_clips_and_boxes(tmp_path, capsys):
    from PIL import Image

    empty = tmp_path / "empty"
    empty.mkdir()
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    Image.fromarray(_clip(1)[0]).save(mixed / "0000.png")
    Image.fromarray(_clip(1, 100, 100)[0]).save(mixed / "0001.png")
    broken = tmp_path / "broken"
    broken.mkdir()
    Image.fromarray(_clip(1)[0]).save(broken / "0000.png")
    (broken / "0001.png").write_bytes(b"not a png")
    good = tmp_path / "clip.npy"
    np.save(good, _clip(2))
    cases = [
        (["--clip", str(empty), "--init-box", "1,1,5,5"], "holds no frames"),
        (["--clip", str(mixed), "--init-box", "1,1,5,5"], "all frames must have one size"),
        (["--clip", str(broken), "--init-box", "1,1,5,5"], "0001.png cannot be read"),
        (["--clip", str(good), "--init-box", "500,500,10,10"], "box"),
        (["--clip", str(good), "--init-box", "10,10,0,5"], "box"),
        (["--clip", str(good), "--init-box", "10,10,5"], "X,Y,W,H"),
        (["--clip", str(tmp_path / "nope.npy"), "--init-box", "1,1,5,5"], "does not exist"),
    ]
    for args, needle in cases:
        out = tmp_path / "out"
        rc = main(["track", *args, "-o", str(out), "--no-progress"])
        err = capsys.readouterr().err
        assert rc == 2, (args, err)
        assert needle in err and "Traceback" not in err, (args, err)
        assert not out.exists()


def test_several_targets_agree_and_report(tmp_path, capsys):
    """The small variant on a generated clip with ground truth: torch64 (float64 integer model),
    reference binary and graded spikes and onnxruntime give identical boxes on every frame; the two
    spike modes give identical per-layer spike counts (non-zero); the report holds OTB scores,
    plots, the annotated GIF and the HTML page; a frame limit is honoured and reported."""
    frames = _clip(4, 120, 160)
    clip = tmp_path / "clip.npy"
    np.save(clip, frames)
    gt = np.array([[30.0 + 8 * i, 40.0, 30.0, 30.0] for i in range(4)])
    np.savetxt(tmp_path / "gt.txt", gt, delimiter=",")
    out = tmp_path / "out"
    rc = main(["track", "--model", "spiketrack-tiny128-t1", "--clip", str(clip), "--ground-truth", str(tmp_path / "gt.txt"),
               "--target", "torch64,reference,reference-graded,onnx", "--max-frames", "4", "-o", str(out),
               "--no-progress"])
    text = capsys.readouterr().out
    assert rc == 0, text
    report = json.loads((out / "report.json").read_text())
    runs = report["runs"]
    assert list(runs) == ["torch64", "reference-binary", "reference-graded", "onnx"]
    assert runs["torch64"]["boxes"][0] == [30.0, 40.0, 30.0, 30.0]  # the first ground-truth box
    for t in ("reference-binary", "reference-graded", "onnx"):
        assert runs[t]["boxes"] == runs["torch64"]["boxes"], t
        assert report["agreement"][t]["all_boxes_identical"] is True
    graded = report["agreement"]["reference-graded"]
    assert graded["spikes_against"] == "reference-binary"
    assert graded["all_spikes_identical"] is True and graded["spike_frames_compared"] == 3
    assert all(n > 0 for n in runs["reference-binary"]["spike_total"][1:]), "no spikes: the comparison proves nothing"
    assert report["agreement"]["onnx"]["all_spikes_identical"] is None  # onnx exposes no spike counts
    for t in runs:
        s = report["scores"][t]
        assert 0.0 <= s["auc"] <= 1.0 and s["frames"] == 4 and len(s["success"]) == 21  # otb: every frame
    for f in ("boxes.json", "report.md", "report.html", "track.gif", "success.png", "precision.png"):
        assert (out / f).stat().st_size > 0, f
    from PIL import Image

    with Image.open(out / "track.gif") as im:
        assert im.n_frames == 4
    assert "identical to reference-binary's on 3 frames" in text
    assert text.count(", P@20 ") == 4  # the protocol's headline beside each target (AUC, P@20, SR0.5)
    assert text.count("over 4 frames (otb)") == 4 and text.count("over 4 frames") == 4 + 3  # + 3 agreement lines
    assert report["protocol"] == "otb"
    assert "| scored frames | AUC | P@20 |" in (out / "report.md").read_text()

    # a GIF clip reads back as frames; a frame limit per run is reported
    gif_out = tmp_path / "gif"
    rc = main(["track", "--model", "spiketrack-tiny128-t1", "--clip", str(out / "track.gif"), "--init-box", "30,40,30,30",
               "--target", "torch", "--max-frames", "2", "--no-gif", "-o", str(gif_out), "--no-progress"])
    assert rc == 0
    rep = json.loads((gif_out / "report.json").read_text())
    assert len(rep["runs"]["torch"]["boxes"]) == 2 and rep["num_frames"] == 4
    assert "first 2 of 4 frames" in rep["notes"][0]
    assert not (gif_out / "track.gif").exists()


def test_bad_ground_truth_and_targets(tmp_path, capsys):
    clip = tmp_path / "clip.npy"
    np.save(clip, _clip(3))
    (tmp_path / "short.txt").write_text("1,1,5,5\n2,2,5,5\n")
    (tmp_path / "bad.txt").write_text("1,1,five,5\n")
    cases = [
        (["--ground-truth", str(tmp_path / "short.txt")], "has 2 boxes but the clip has 3 frames"),
        (["--ground-truth", str(tmp_path / "bad.txt")], "cannot read ground-truth boxes"),
        (["--ground-truth", str(tmp_path / "none.txt")], "does not exist"),
        (["--init-box", "1,1,5,5", "--target", "tpu"], "unknown tracking target 'tpu'"),
        (["--init-box", "1,1,5,5", "--target", "torch,torch"], "named twice"),
        (["--init-box", "1,1,5,5", "--max-frames", "0"], "at least 1"),
        ([], "initial box"),
        ([str(tmp_path / "clip.txt")], None),
    ]
    (tmp_path / "clip.txt").write_text("x")
    for args, needle in cases:
        out = tmp_path / "out"
        if needle is None:
            args, needle = ["--clip", args[0], "--init-box", "1,1,5,5"], "unsupported file type"
        else:
            args = ["--clip", str(clip), *args]
        rc = main(["track", "--model", "spiketrack-tiny128-t1", *args, "-o", str(out), "--no-progress"])
        err = capsys.readouterr().err
        assert rc == 2, (args, err)
        assert needle in err and "Traceback" not in err, (args, err)
        assert not out.exists()


def test_default_weights_are_the_bundled_ones_for_the_small_tracker(tmp_path, capsys):
    """Without --checkpoint the small tracker tracks with its shipped trained weights (and says
    so); 'random' still gives random weights; 'bundled' on a variant without shipped weights is a
    clear error."""
    from spikedeploy.tracking.synth import demo_clip

    frames, boxes = demo_clip(num_frames=3)
    clip = tmp_path / "clip.npy"
    np.save(clip, frames)
    box = ",".join(str(v) for v in boxes[0])
    reports = {}
    for weights in (None, "random"):
        out = tmp_path / f"out-{weights}"
        extra = [] if weights is None else ["--checkpoint", weights]
        assert main(["track", "--clip", str(clip), "--init-box", box, *extra, "--no-gif", "-o", str(out),
                     "--no-progress"]) == 0
        reports[weights] = json.loads((out / "report.json").read_text())
    assert reports[None]["model"] == "spiketrack-tiny128-t1"
    assert "bundled trained weights" in reports[None]["weights"] and "random" in reports["random"]["weights"]
    assert reports[None]["runs"]["torch"]["boxes"] != reports["random"]["runs"]["torch"]["boxes"]
    capsys.readouterr()
    rc = main(["track", "--model", "spiketrack-s256-t1", "--checkpoint", "bundled", "--clip", str(clip),
               "--init-box", box, "-o", str(tmp_path / "bad"), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and "ship only for spiketrack-tiny128" in err and not (tmp_path / "bad").exists()
