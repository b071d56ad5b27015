"""Tracking metrics on hand-made boxes (spikedeploy.tracking.metrics): the protocols' rules one at
a time, with numbers worked out by hand. The toolkit oracle (got10k) is test_metrics_oracle.py."""

import json

import numpy as np
import pytest

from spikedeploy.errors import ConfigError, InputError
from spikedeploy.tracking import metrics as M

BOX = [0.0, 0.0, 10.0, 10.0]


def test_iou_and_center_error_by_hand():
    gt = [BOX, BOX, BOX]
    pred = [[0, 0, 10, 10], [5, 0, 10, 10], [20, 20, 5, 5]]
    iou = M.box_iou(pred, gt)
    assert iou[1] == 50 / (150 + M.EPS) and iou[2] == 0.0
    assert iou[0] == 1.0  # 100 / (100 + eps) rounds to 1
    # centers x + (w - 1) / 2: (4.5, 4.5), (9.5, 4.5), (22, 22)
    assert M.center_error(pred, gt).tolist() == [0.0, 5.0, float(np.hypot(17.5, 17.5))]
    # normalized by the ground-truth size (10 x 10); the toolkit divides each center before
    # subtracting (0.95 - 0.45 = 0.49999999999999994), so the hand values hold to rounding only
    ROUNDING = 1e-15
    assert M.normalized_center_error(pred, gt).tolist() == pytest.approx([0.0, 0.5, np.hypot(1.75, 1.75)],
                                                                         abs=ROUNDING)


def test_iou_is_clipped_to_one_so_an_exact_box_never_counts_at_threshold_one():
    # exact predictions whose IoU, before the clip, is 1 + 1e-16 (the intersection's float rounding)
    rng = np.random.default_rng(3)
    g = rng.uniform(0, 300, size=(2000, 4))
    inter = ((g[:, 0] + g[:, 2]) - g[:, 0]) * ((g[:, 1] + g[:, 3]) - g[:, 1])
    unclipped = inter / (g[:, 2] * g[:, 3] + g[:, 2] * g[:, 3] - inter + M.EPS)
    assert (unclipped > 1).sum() > 100  # the old metrics counted these at the threshold 1
    assert np.array_equal(M.box_iou(g, g), np.clip(unclipped, 0, 1))
    s = M.score_sequence(g, g)
    assert s.success[-1] == 0.0 and s.headline()["AUC"] == 20 / 21


def test_otb_counts_the_first_frame_as_the_ground_truth_box():
    gt = np.array([BOX] * 4)
    pred = np.array([[50, 50, 1, 1], BOX, [5, 0, 10, 10], [50, 50, 10, 10]], dtype=float)
    s = M.score_sequence(pred, gt, "otb")
    assert s.frames == 4 and s.index == (0, 1, 2, 3)
    assert s.iou[0] == 1.0  # the prediction of frame 0 was replaced by the ground truth
    # IoUs 1, 1, 1/3, 0: S(τ) = 3/4 for τ < 1/3, 1/2 for 1/3 <= τ < 1, 0 at τ = 1
    want = [0.75 if t < 1 / 3 else (0.5 if t < 1 else 0.0) for t in M.SUCCESS_THRESHOLDS]
    assert list(s.success) == want
    assert s.headline() == {"AUC": float(np.mean(want)), "P@20": 0.75, "SR0.5": 0.5}
    assert list(s.headline()) == ["AUC", "P@20", "SR0.5"]
    assert s.mean_iou == pytest.approx((1 + 1 + 1 / 3) / 4, abs=1e-15)


def test_otb_invalid_ground_truth_counts_as_failure():
    gt = np.array([BOX, [np.nan, 0, 10, 10], [0, 0, 0, 10], [0, 0, -10, -10], BOX], dtype=float)
    pred = np.array([BOX] * 5)
    s = M.score_sequence(pred, gt, "otb")
    assert s.frames == 5 and s.invalid == 3  # nothing is dropped
    assert np.isnan(s.iou[1]) and np.isnan(s.center_error[1])  # NaN: fails every threshold
    assert s.iou[2] == 0.0 and s.iou[3] == 0.0  # no area: no overlap
    assert s.success[0] == 2 / 5
    # a size <= 0 row keeps its center error (got10k's arithmetic): (4.5, 4.5) vs (-0.5, 4.5) and (-5.5, -5.5)
    assert s.center_error[2] == 5.0 and s.center_error[3] == float(np.hypot(10, 10))
    assert s.precision[5] == 3 / 5 and s.precision[14] == 3 / 5 and s.precision[15] == 4 / 5


def test_perfect_and_static_tracks():
    gt = np.array([[10.0 + 4 * i, 20.0, 16.0, 16.0] for i in range(20)])
    perfect = M.score_tracking(gt, gt)
    assert perfect.auc == 20 / 21 and perfect.precision20 == 1.0 and perfect.frames == 20  # IoU 1 is not > 1
    assert perfect.protocol == "otb" and perfect.headline == {"AUC": 20 / 21, "P@20": 1.0, "SR0.5": 1.0}
    static = M.score_tracking(np.repeat(gt[:1], 20, axis=0), gt)
    assert static.auc < perfect.auc and static.precision20 < 1.0


def test_otb_averages_sequences_not_frames():
    g1, g2 = np.array([BOX] * 2), np.array([BOX] * 8)
    p2 = g2.copy()
    p2[1:] = [50, 50, 10, 10]  # lost after the first frame
    a, b = M.score_sequence(g1, g1), M.score_sequence(p2, g2)
    d = M.score_dataset([a, b], "otb")
    assert d.sequences == 2 and d.frames == 10 and d.names == (None, None)
    assert d.success[0] == (1.0 + 1 / 8) / 2  # pooled frames would give 3 / 10
    assert d.headline()["P@20"] == (1.0 + 1 / 8) / 2 and d.mean_iou == (1.0 + 1 / 8) / 2


def test_lasot_absent_frames_fail_and_stay_in_the_denominator():
    box = [1.0, 1.0, 10.0, 10.0]  # LaSOT's validity check wants x, y > 0 too (see the next test)
    gt = np.array([box, box, [0, 0, 0, 0], box], dtype=float)  # frame 2: target out of view
    pred = np.array([box] * 4)
    absent = np.array([0, 0, 1, 0])
    s = M.score_sequence(pred, gt, "lasot", absent=absent)
    assert s.frames == 4 and s.absent == 1
    assert s.success[0] == 3 / 4 and s.precision[0] == 3 / 4 and s.normalized_precision[0] == 3 / 4
    assert list(s.headline()) == ["AUC", "P@20", "NP", "SR0.5"]
    assert s.headline()["NP"] == 3 / 4 and s.headline()["AUC"] == 3 / 4 * 20 / 21


def test_lasot_invalid_prediction_takes_the_previous_one_and_invalid_ground_truth_is_marked():
    gt = np.array([[1, 1, 10, 10], [2, 1, 10, 10], [4, 1, 10, 10], [0, 1, 10, 10], [8, 1, 10, 10]], dtype=float)
    pred = np.array([[99, 99, 5, 5], [2, 1, 10, 10], [np.nan] * 4, [3, 1, 10, 10], [8, 1, 0, 10]])
    s = M.score_sequence(pred, gt, "lasot")
    # frame 2 reuses frame 1's [2, 1, 10, 10]: IoU 80/120; frame 4 reuses frame 3's [3, 1, 10, 10]
    assert s.iou[0] == 1.0 and s.iou[1] == 1.0 and s.iou[2] == pytest.approx(80 / 120, abs=1e-15)
    # frame 3: ground truth at x = 0 is not all > 0, the toolkit's -1 marker: fails success, passes precision
    assert s.iou[3] == -1.0 and s.center_error[3] == -1.0 and s.normalized_center_error[3] == -1.0
    assert s.iou[4] == 50 / (150 + M.EPS) and s.center_error[4] == 5.0  # [3, 1, 10, 10] against [8, 1, 10, 10]
    assert s.precision[0] == 3 / 5 and s.normalized_precision[0] == 3 / 5
    # normalized: frame 2's error 2 px over a 10 px box
    assert s.normalized_center_error[2] == pytest.approx(0.2, abs=1e-15)


def test_got10k_excludes_the_first_frame_and_absent_frames_and_pools_frames():
    gt = np.array([BOX] * 5)
    pred = np.array([[50, 50, 5, 5], BOX, [5, 0, 10, 10], [50, 50, 5, 5], BOX])
    s = M.score_sequence(pred, gt, "got10k", absent=[0, 0, 0, 0, 1], image_size=(100, 100))
    assert s.index == (1, 2, 3) and s.frames == 3 and len(s.success) == 101
    assert s.headline() == {"AO": float(np.mean([1.0, 50 / (150 + M.EPS), 0.0])), "SR0.5": 1 / 3, "SR0.75": 1 / 3}
    other = M.score_sequence(np.array([BOX] * 3), np.array([BOX] * 3), "got10k", image_size=(100, 100))
    d = M.score_dataset([s, other], "got10k")
    assert d.frames == 5 and d.headline()["SR0.5"] == 3 / 5  # frames pooled, not sequences averaged
    assert d.precision == () and M.TrackingScore.of(d).precision20 is None


def test_got10k_clips_boxes_to_the_image():
    gt = np.array([[0, 0, 10, 10], [90, 0, 10, 10]], dtype=float)
    pred = np.array([[0, 0, 10, 10], [95, 0, 10, 10]], dtype=float)  # half outside a 100 px wide image
    s = M.score_sequence(pred, gt, "got10k", image_size=(100, 50))
    assert s.iou == (5 * 10 / (100 + 50 - 50 + M.EPS),)  # [95, 0, 5, 10] against [90, 0, 10, 10]
    assert M.box_iou(pred, gt, image_size=(100, 50))[1] == s.iou[0]
    with pytest.raises(InputError, match="image_size"):
        M.score_sequence(pred, gt, "got10k")


def test_results_are_json_safe_and_protocols_are_registered_once():
    gt = np.array([BOX, [np.nan] * 4])
    d = M.score_sequence(np.array([BOX, BOX]), gt).to_dict()
    assert json.loads(json.dumps(d, allow_nan=False))["iou"] == [1.0, None]
    assert set(M.PROTOCOLS) == {"otb", "lasot", "got10k"}
    assert M.get_protocol("OTB") is M.PROTOCOLS["otb"] and "ExperimentOTB" in M.PROTOCOLS["otb"].title
    with pytest.raises(ConfigError, match="expected one of otb, lasot, got10k"):
        M.get_protocol("vot")
    with pytest.raises(ValueError, match="twice"):
        M._register(M.PROTOCOLS["otb"])


def test_bad_input_is_refused_naming_the_sequence():
    with pytest.raises(InputError, match="sequence Car4: 3 predicted boxes but 2 ground-truth boxes"):
        M.score_sequence(np.zeros((3, 4)), np.zeros((2, 4)), name="Car4")
    with pytest.raises(InputError, match="x, y, w, h"):
        M.box_iou(np.zeros((3, 3)), np.zeros((3, 3)))
    with pytest.raises(InputError, match="sequence a: 2 absence labels for 3 frames"):
        M.score_sequence(np.ones((3, 4)), np.ones((3, 4)), "lasot", absent=[0, 1], name="a")
    with pytest.raises(InputError, match="0 or 1"):
        M.score_sequence(np.ones((3, 4)), np.ones((3, 4)), "lasot", absent=[0, 2, 0])
    with pytest.raises(InputError, match="otb protocol has no target-absence labels"):
        M.score_sequence(np.ones((3, 4)), np.ones((3, 4)), "otb", absent=[0, 0, 0])
    with pytest.raises(InputError, match="cannot be aggregated as otb"):
        M.score_dataset([M.score_sequence(np.ones((2, 4)), np.ones((2, 4)), "lasot")], "otb")
    with pytest.raises(InputError, match="no sequences"):
        M.score_dataset([], "otb")
