"""Evaluating a SpikeTrack tracker on synthetic held-out sequences, next to the trivial *static*
baseline that keeps the initial box in every frame.

Scored with the ``otb`` protocol of :mod:`spikedeploy.tracking.metrics` (the one ``evaluate`` and
``score`` use): every frame of a sequence counts, the first as the ground-truth box; success AUC,
precision at 20 px and success rate at IoU 0.5 from the per-sequence curves averaged over the
sequences (:func:`~spikedeploy.tracking.metrics.score_sequence`,
:func:`~spikedeploy.tracking.metrics.score_dataset`), so the numbers equal what ``evaluate``
reports on the same sequences and boxes.

::

    from spikedeploy.models.spiketrack import bundled_model
    from spikedeploy.tracking.evaluation import evaluate_model, heldout_sequences
    report = evaluate_model(bundled_model(), heldout_sequences(12))
    report["tracker"].auc, report["tracker"].precision20, report["static"].auc
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

__all__ = [
    "HELDOUT_EVAL_SEEDS",
    "heldout_sequences",
    "pooled_score",
    "static_boxes",
    "track_boxes",
    "evaluate_model",
    "heldout_evaluation",
    "write_heldout_evaluation",
]

#: the held-out evaluation sequences: seeds 0..N-1 of split "heldout" (photographs never used in
#: training; the training pool draws "train" seeds only)
HELDOUT_EVAL_SEEDS = tuple(range(100))


def heldout_sequences(count: int = 12, num_frames: int = 60, *, first_seed: int = 0,
                      frame_size=(240, 320)) -> list:
    """``count`` held-out synthetic sequences (seeds ``first_seed ..``) of ``num_frames`` frames."""
    from spikedeploy.tracking.synth import generate_sequence

    return [generate_sequence(first_seed + i, "heldout", num_frames, frame_size) for i in range(int(count))]


def pooled_score(preds: Sequence, gts: Sequence, *, protocol: str = "otb"):
    """Several sequences (``preds[i]`` against ``gts[i]``, ``[N_i, 4]`` each) scored as
    ``protocol`` aggregates them (``otb``: every frame of each sequence, the first as the
    ground-truth box, per-sequence curves averaged over the sequences; the name stays from when
    frames were pooled). Returns a :class:`~spikedeploy.tracking.metrics.TrackingScore` whose
    ``frames`` counts all scored frames."""
    from spikedeploy.errors import InputError
    from spikedeploy.tracking.metrics import TrackingScore, score_dataset, score_sequence

    if len(preds) != len(gts) or not len(preds):
        raise InputError(f"pooled_score: need the same, non-zero number of predicted and ground-truth sequences, "
                         f"got {len(preds)} and {len(gts)}")
    seqs = [score_sequence(p, g, protocol, name=str(i)) for i, (p, g) in enumerate(zip(preds, gts))]
    return TrackingScore.of(score_dataset(seqs, protocol))


def static_boxes(gt) -> np.ndarray:
    """The static baseline: the initial box repeated for every frame."""
    gt = np.asarray(gt, dtype=np.float64)
    return np.repeat(gt[:1], len(gt), axis=0)


def track_boxes(tracker, frames, init_box) -> np.ndarray:
    """Run ``tracker`` (a :class:`~spikedeploy.tracking.tracker.SpikeTrackTracker`) over ``frames``;
    returns ``[N, 4]`` boxes (the first is ``init_box``)."""
    from spikedeploy.tracking.tracker import track_sequence

    return np.asarray(track_sequence(tracker, frames, list(map(float, init_box))), dtype=np.float64)


def evaluate_model(model, sequences: Sequence, *, progress: bool = False, tracker_kwargs: Optional[dict] = None,
                   network=None) -> Dict[str, object]:
    """Track every sequence with ``SpikeTrackTracker(TorchNetwork(model))`` (the integer model;
    ``network``: another :class:`~spikedeploy.tracking.tracker.TrackerNetwork`, e.g. a fixed-point
    ``ReferenceNetwork``) and score it with the ``otb`` protocol (see the module docstring).
    Returns ``{"tracker": TrackingScore, "static": TrackingScore, "dataset": DatasetScore (the
    tracker's), "per_sequence": [{"seed", "frames", "auc", "precision20", "success_rate",
    "static_auc"}], "boxes": [pred arrays]}``."""
    from tqdm.auto import tqdm

    from spikedeploy.tracking.tracker import SpikeTrackTracker, TorchNetwork

    tracker = SpikeTrackTracker(network if network is not None else TorchNetwork(model), **(tracker_kwargs or {}))
    preds: List[np.ndarray] = []
    per_seq = []
    from spikedeploy.tracking.metrics import TrackingScore, score_dataset, score_sequence

    scores, static = [], []
    for seq in tqdm(sequences, desc="evaluate", unit="seq", disable=not progress):
        boxes = track_boxes(tracker, seq.frames, seq.boxes[0])
        preds.append(boxes)
        s = score_sequence(boxes, seq.boxes, "otb", name=f"seed {seq.seed}")
        b = score_sequence(static_boxes(seq.boxes), seq.boxes, "otb", name=f"seed {seq.seed}")
        scores.append(s)
        static.append(b)
        h = s.headline()
        per_seq.append({"seed": seq.seed, "frames": s.frames, "auc": h["AUC"], "precision20": h["P@20"],
                        "success_rate": h["SR0.5"], "static_auc": b.headline()["AUC"]})
    dataset = score_dataset(scores, "otb")
    return {
        "tracker": TrackingScore.of(dataset),
        "static": TrackingScore.of(score_dataset(static, "otb")),
        "dataset": dataset,
        "per_sequence": per_seq,
        "boxes": preds,
    }


#: the scoring protocol of the held-out numbers (:data:`spikedeploy.tracking.metrics.PROTOCOLS`)
HELDOUT_PROTOCOL = "otb"


def heldout_evaluation(model, count: int = 12, num_frames: int = 60, *, progress: bool = False,
                       **extra) -> Dict[str, object]:
    """Evaluate ``model`` (PyTorch integer network, default tracker preset) on the first ``count``
    held-out sequences of ``num_frames`` frames (at full difficulty). Returns a JSON-ready record:
    ``auc``, ``precision20``, ``success_rate`` (IoU > 0.5) and ``mean_iou`` of the ``otb`` protocol
    (sequence-averaged, every frame scored: ``frames_scored``), its success and precision curves,
    the static baseline, the per-sequence scores, the protocol (``protocol``, ``protocol_title``)
    and ``extra`` (e.g. which weights were evaluated)."""
    import time

    from spikedeploy.tracking.metrics import get_protocol

    t0 = time.perf_counter()
    seqs = heldout_sequences(count, num_frames)
    rep = evaluate_model(model, seqs, progress=progress)
    trk, static = rep["tracker"], rep["static"]
    return {
        "variant": model.config.variant, **extra, "split": "heldout", "sequences": len(seqs),
        "seeds": [s.seed for s in seqs], "frames_per_sequence": int(num_frames), "frames_scored": trk.frames,
        "protocol": HELDOUT_PROTOCOL, "protocol_title": get_protocol(HELDOUT_PROTOCOL).title,
        "difficulty": 1.0,
        "tracker": "spikedeploy.tracking.tracker.SpikeTrackTracker(TorchNetwork(model)), preset default",
        "auc": trk.auc, "precision20": trk.precision20, "success_rate": trk.headline["SR0.5"],
        "mean_iou": trk.mean_iou,
        "static_auc": static.auc, "static_precision20": static.precision20,
        "static_success_rate": static.headline["SR0.5"],
        "success_curve": [float(v) for v in trk.success], "precision_curve": [float(v) for v in trk.precision],
        "static_success_curve": [float(v) for v in static.success],
        "static_precision_curve": [float(v) for v in static.precision],
        "per_sequence": rep["per_sequence"], "eval_seconds": round(time.perf_counter() - t0, 1),
    }


def write_heldout_evaluation(record: Dict[str, object], out_dir, stem: str) -> Dict[str, str]:
    """Write ``<stem>_eval.json`` and the success/precision plot ``<stem>_eval.png`` (tracker
    against the static box) for a :func:`heldout_evaluation` record into ``out_dir``, each file
    atomically. Returns the paths written."""
    from matplotlib.figure import Figure

    from spikedeploy.fsutil import atomic_write_bytes, atomic_write_text
    from spikedeploy.htmlreport import figure_png
    from spikedeploy.tracking.metrics import PRECISION_DISTANCES, SUCCESS_THRESHOLDS

    out = Path(out_dir)
    files = {"json": str(out / f"{stem}_eval.json"), "png": str(out / f"{stem}_eval.png")}
    atomic_write_text(files["json"], json.dumps(record, indent=2) + "\n")
    fig = Figure(figsize=(10, 4))
    a, b = fig.subplots(1, 2)
    for label, key, score in (("tracker", "", record["auc"]), ("static box", "static_", record["static_auc"])):
        p20 = record[f"{key}precision20"]
        a.plot(SUCCESS_THRESHOLDS, record[f"{key}success_curve"], label=f"{label} [AUC {score:.3f}]")
        b.plot(PRECISION_DISTANCES, record[f"{key}precision_curve"], label=f"{label} [P@20 {p20:.3f}]")
    title = f"{record['variant']}, {record['sequences']} held-out sequences ({record['frames_scored']} frames)"
    a.set(xlabel="IoU threshold", ylabel="success rate", title=f"success: {title}", ylim=(0, 1.02))
    b.set(xlabel="center error threshold (px)", ylabel="precision",
          title=f"precision ({record.get('protocol', HELDOUT_PROTOCOL)} protocol)", ylim=(0, 1.02))
    a.legend()
    b.legend()
    fig.tight_layout()
    atomic_write_bytes(files["png"], figure_png(fig, dpi=100))
    return files
