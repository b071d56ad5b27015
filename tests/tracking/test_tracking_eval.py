"""Held-out scoring (spikedeploy.tracking.evaluation) on hand-made boxes: the otb protocol of
spikedeploy.tracking.metrics, the numbers evaluate reports on the same sequences."""

import numpy as np
import pytest

from spikedeploy.errors import InputError
from spikedeploy.tracking.metrics import score_dataset, score_sequence
from spikedeploy.tracking.evaluation import pooled_score, static_boxes


def test_pooled_score_averages_sequences_and_counts_each_first_frame():
    g1 = np.array([[0, 0, 10, 10]] * 3, dtype=float)
    g2 = np.array([[0, 0, 10, 10]] * 5, dtype=float)
    p1 = g1.copy()
    p1[0] = [90, 90, 5, 5]  # the first frame counts as the ground-truth box, whatever was predicted
    p2 = g2.copy()
    p2[1:] = [50, 50, 10, 10]  # lost: IoU 0 on 4 frames
    s = pooled_score([p1, p2], [g1, g2])
    assert s.frames == 8 and s.protocol == "otb"
    # sequence 1: every frame IoU 1; sequence 2: 1 of 5; the sequences' curves are averaged
    assert s.mean_iou == (1.0 + 1 / 5) / 2 and s.precision20 == (1.0 + 1 / 5) / 2
    assert s.success[:20] == [(1.0 + 1 / 5) / 2] * 20 and s.success[20] == 0.0
    d = score_dataset([score_sequence(p1, g1), score_sequence(p2, g2)], "otb")
    assert s.auc == d.headline()["AUC"] and s.headline == d.headline()


def test_static_boxes_and_bad_input():
    g = np.array([[1, 2, 3, 4], [5, 6, 7, 8]], dtype=float)
    assert static_boxes(g).tolist() == [[1, 2, 3, 4], [1, 2, 3, 4]]
    with pytest.raises(InputError, match="non-zero number"):
        pooled_score([], [])
    with pytest.raises(InputError, match="got 1 and 2"):
        pooled_score([g], [g, g])


def test_heldout_evaluation_record_and_files(tmp_path):
    """The record that ships next to the bundled weights: otb scores equal to scoring the tracked
    boxes directly (every frame counted), curves, the static baseline, and a JSON + PNG written."""
    import json

    import torch

    from spikedeploy.models.spiketrack import spiketrack
    from spikedeploy.tracking.evaluation import heldout_evaluation, heldout_sequences, write_heldout_evaluation

    torch.manual_seed(0)
    model = spiketrack("spiketrack-tiny128-t1").eval()
    rec = heldout_evaluation(model, 2, 4, weights="random init")
    assert rec["weights"] == "random init" and rec["variant"] == "spiketrack-tiny128-t1"
    assert rec["seeds"] == [0, 1] and rec["frames_scored"] == 2 * 4 and rec["protocol"] == "otb"
    assert "ExperimentOTB" in rec["protocol_title"] and [p["frames"] for p in rec["per_sequence"]] == [4, 4]
    gts = [s.boxes for s in heldout_sequences(2, 4)]
    static = pooled_score([static_boxes(g) for g in gts], gts)
    assert rec["static_auc"] == static.auc and rec["static_success_rate"] == static.headline["SR0.5"]
    assert len(rec["success_curve"]) == 21 and len(rec["precision_curve"]) == len(rec["static_precision_curve"])
    files = write_heldout_evaluation(rec, tmp_path, "x")
    assert json.loads((tmp_path / "x_eval.json").read_text())["auc"] == rec["auc"]
    assert (tmp_path / "x_eval.png").stat().st_size > 1000 and set(files) == {"json", "png"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x_eval.json", "x_eval.png"]  # no temporaries left
