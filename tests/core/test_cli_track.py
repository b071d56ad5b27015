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
