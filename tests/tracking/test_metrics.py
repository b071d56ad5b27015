"""OTB metrics on hand-made boxes (spikedeploy.tracking.metrics)."""

import numpy as np
import pytest

from spikedeploy.tracking import metrics as M


def test_iou_and_center_error_by_hand():
    gt = [[0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10]]
    pred = [[0, 0, 10, 10], [5, 0, 10, 10], [20, 20, 5, 5]]
    np.testing.assert_allclose(M.box_iou(pred, gt), [1.0, 50 / 150, 0.0])
    np.testing.assert_allclose(M.center_error(pred, gt), [0.0, 5.0, np.hypot(17.5, 17.5)])


def test_scores_skip_the_initial_frame_and_missing_ground_truth():
    gt = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [np.nan, 0, 10, 10], [0, 0, 10, 10]], dtype=float)
    pred = np.array([[50, 50, 1, 1], [0, 0, 10, 10], [0, 0, 10, 10], [5, 0, 10, 10]], dtype=float)
    s = M.score_tracking(pred, gt)
    assert s.frames == 2  # frame 0 is given, frame 2 has no ground truth
    # IoU 1 and 1/3: success(τ) = 1 for τ < 1/3, 0.5 for 1/3 ≤ τ < 1, 0 at τ = 1
    expected = np.mean([1.0 if t < 1 / 3 else (0.5 if t < 1 else 0.0) for t in M.SUCCESS_THRESHOLDS])
    assert s.auc == pytest.approx(expected)
    assert s.precision20 == 1.0  # center errors 0 and 5 px
    assert s.mean_iou == pytest.approx((1 + 1 / 3) / 2)


def test_perfect_and_static_tracks():
    gt = np.array([[10.0 + 4 * i, 20.0, 16.0, 16.0] for i in range(20)])
    perfect = M.score_tracking(gt, gt)
    assert perfect.auc == pytest.approx(20 / 21) and perfect.precision20 == 1.0  # IoU 1 is not > 1
    static = M.score_tracking(np.repeat(gt[:1], 20, axis=0), gt)
    assert static.auc < perfect.auc and static.precision20 < 1.0


def test_mismatched_lengths_are_refused():
    with pytest.raises(ValueError, match="ground-truth"):
        M.score_tracking(np.zeros((3, 4)), np.zeros((2, 4)))
    with pytest.raises(ValueError, match="x, y, w, h"):
        M.box_iou(np.zeros((3, 3)), np.zeros((3, 3)))
