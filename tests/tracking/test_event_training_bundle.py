"""The bundled trained event tracker (spikedeploy/data/spiketrack-event-tiny*): what ships, that its
evaluation record reproduces exactly, and that it beats the static box on held-out sequences."""

import json
from importlib import resources

import pytest
import torch

from spikedeploy.tracking import event_training as et
from spikedeploy.tracking.event_evaluation import heldout_event_evaluation

STEM = et.EVENT_VARIANT


def _data(suffix):
    return resources.files("spikedeploy.data") / f"{STEM}{suffix}"


@pytest.fixture(scope="module")
def record():
    return json.loads(_data("_eval.json").read_text())


def test_the_bundle_ships_weights_and_records_within_10_mb():
    files = [_data(s) for s in (".pth", "_loss.csv", "_loss.png", "_train.json", "_eval.json", "_eval.png")]
    assert all(f.is_file() for f in files)
    assert sum(f.stat().st_size for f in files) <= 10 * 2 ** 20
    payload = torch.load(str(_data(".pth")), weights_only=True)
    assert set(payload) == {"net", "meta"} and payload["meta"]["variant"] == STEM
    assert all(v.dtype == torch.float32 for v in payload["net"].values() if v.is_floating_point())
    train = json.loads(_data("_train.json").read_text())
    assert train["final"] and train["steps"] == payload["meta"]["steps"] and train["config"]["variant"] == STEM
    assert train["config"]["clip_frames"] >= 4  # MSST clips


def test_loaders_give_the_bundled_weights():
    model = et.bundled_event_model()
    assert not model.training and model.config.variant == STEM and model.config.dilif_scope == "sample"
    from spikedeploy.tracking.event_run import load_event_tracker_model  # what track --events loads

    net, line = load_event_tracker_model(STEM)
    assert "bundled" in line
    for k, v in model.state_dict().items():
        assert torch.equal(v, net.state_dict()[k]), k
    assert et.bundled_event_tracker().network.model.config.variant == STEM


def test_bundled_evaluation_record_reproduces(record):
    """The first 3 held-out sequences, tracked again with the bundled weights (the record's thread
    count, difficulty and frames): every per-sequence number equals the record's exactly, the
    DI-LIF tracker's and the fixed-D network's."""
    assert record["variant"] == STEM and "as stored" in record["weights"]
    assert record["sequences"] == len(record["per_sequence"]) >= 12 and record["frames_per_sequence"] == 60
    ev = heldout_event_evaluation(et.bundled_event_model(), 3, record["frames_per_sequence"],
                                  difficulty=record["difficulty"], threads=record["threads"])
    keys = ("seed", "frames", "auc", "precision20", "success_rate", "static_auc", "static_precision20", "mean_d",
            "mean_density", "fixed_d_auc", "fixed_d_precision20")
    for got, want in zip(ev["per_sequence"], record["per_sequence"][:3]):
        assert {k: got[k] for k in keys} == {k: want[k] for k in keys}
    # the tracked frames' firing limits move (DI-LIF) and the fixed-D network's do not
    assert set(ev["fixed_d"]["mean_d_per_layer"].values()) == {float(record["d_init"])}
    assert len(set(ev["mean_d_per_layer"].values())) > 1


def test_bundled_tracker_beats_the_static_box(record):
    """On all the record's held-out sequences (pooled, OTB) it reaches the issue's goal (AUC >= 0.5,
    P@20 >= 0.6; measured 0.650 / 0.918, the static box 0.261 / 0.376) and beats the static box on
    the majority of them one by one."""
    assert record["auc"] >= 0.5 and record["precision20"] >= 0.6, (record["auc"], record["precision20"])
    assert record["auc"] > record["static_auc"] + 0.1 and record["precision20"] > record["static_precision20"] + 0.1
    wins = sum(r["auc"] > r["static_auc"] for r in record["per_sequence"])
    assert wins > len(record["per_sequence"]) / 2
