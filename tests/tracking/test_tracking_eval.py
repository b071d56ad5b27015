"""Pooled held-out scoring (spikedeploy.tracking.evaluation) on hand-made boxes."""

import numpy as np
import pytest

from spikedeploy.tracking.metrics import score_tracking
from spikedeploy.tracking.evaluation import pooled_score, static_boxes


def test_pooled_score_weights_frames_equally_and_skips_each_first_frame():
    g1 = np.array([[0, 0, 10, 10]] * 3, dtype=float)
    g2 = np.array([[0, 0, 10, 10]] * 5, dtype=float)
    p1 = g1.copy()
    p1[0] = [90, 90, 5, 5]  # the first frame never counts
    p2 = g2.copy()
    p2[1:] = [50, 50, 10, 10]  # lost: IoU 0 on 4 frames
    s = pooled_score([p1, p2], [g1, g2])
    assert s.frames == 6 and s.mean_iou == pytest.approx(2 / 6)
    assert s.precision20 == pytest.approx(2 / 6)
    assert s.auc == pytest.approx(score_tracking(np.concatenate([p1[1:], p2[1:]]), np.concatenate([g1[1:], g2[1:]]),
                                                 skip_first=False).auc)


def test_static_boxes_and_bad_input():
    g = np.array([[1, 2, 3, 4], [5, 6, 7, 8]], dtype=float)
    assert static_boxes(g).tolist() == [[1, 2, 3, 4], [1, 2, 3, 4]]
    with pytest.raises(ValueError):
        pooled_score([], [])
    with pytest.raises(ValueError):
        pooled_score([g], [g, g])


def test_heldout_evaluation_record_and_files(tmp_path):
    """The record that ships next to the bundled weights: pooled scores equal to scoring the
    tracked boxes directly, curves, the static baseline, and a JSON + PNG written."""
    import json

    import torch

    from spikedeploy.models.spiketrack import spiketrack
    from spikedeploy.tracking.evaluation import heldout_evaluation, heldout_sequences, write_heldout_evaluation

    torch.manual_seed(0)
    model = spiketrack("spiketrack-tiny128-t1").eval()
    rec = heldout_evaluation(model, 2, 4, weights="random init")
    assert rec["weights"] == "random init" and rec["variant"] == "spiketrack-tiny128-t1"
    assert rec["seeds"] == [0, 1] and rec["frames_scored"] == 2 * 3
    gts = [s.boxes for s in heldout_sequences(2, 4)]
    static = pooled_score([static_boxes(g) for g in gts], gts)
    assert rec["static_auc"] == pytest.approx(static.auc, abs=1e-12)
    assert len(rec["success_curve"]) == 21 and len(rec["precision_curve"]) == len(rec["static_precision_curve"])
    files = write_heldout_evaluation(rec, tmp_path, "x")
    assert json.loads((tmp_path / "x_eval.json").read_text())["auc"] == rec["auc"]
    assert (tmp_path / "x_eval.png").stat().st_size > 1000 and set(files) == {"json", "png"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x_eval.json", "x_eval.png"]  # no temporaries left
