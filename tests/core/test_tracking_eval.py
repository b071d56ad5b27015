"""Pooled held-out scoring (spikedeploy.tracking_eval) on hand-made boxes."""

import numpy as np
import pytest

from spikedeploy.metrics import score_tracking
from spikedeploy.tracking_eval import pooled_score, static_boxes


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
