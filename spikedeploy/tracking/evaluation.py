"""Evaluating a SpikeTrack tracker on synthetic held-out sequences (OTB success AUC and precision
at 20 px, :mod:`spikedeploy.tracking.metrics`), next to the trivial *static* baseline that keeps the
initial box in every frame.

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


def pooled_score(preds: Sequence, gts: Sequence, *, skip_first: bool = True):
    """:func:`spikedeploy.tracking.metrics.score_tracking` over several sequences, every frame weighted
    equally (the first frame of *each* sequence left out with ``skip_first``)."""
    from spikedeploy.tracking.metrics import score_tracking

    if len(preds) != len(gts) or not preds:
        raise ValueError(f"pooled_score: need the same, non-zero number of sequences, got {len(preds)} and {len(gts)}")
    p = [np.asarray(x, dtype=np.float64)[1 if skip_first else 0:] for x in preds]
    g = [np.asarray(x, dtype=np.float64)[1 if skip_first else 0:] for x in gts]
    return score_tracking(np.concatenate(p), np.concatenate(g), skip_first=False)


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
    ``ReferenceNetwork``) and score it. Returns ``{"tracker": TrackingScore, "static":
    TrackingScore, "per_sequence": [{"seed", "auc", "precision20", "static_auc"}], "boxes": [pred
    arrays]}``."""
    from tqdm.auto import tqdm

    from spikedeploy.tracking.tracker import SpikeTrackTracker, TorchNetwork

    tracker = SpikeTrackTracker(network if network is not None else TorchNetwork(model), **(tracker_kwargs or {}))
    preds: List[np.ndarray] = []
    per_seq = []
    from spikedeploy.tracking.metrics import score_tracking

    for seq in tqdm(sequences, desc="evaluate", unit="seq", disable=not progress):
        boxes = track_boxes(tracker, seq.frames, seq.boxes[0])
        preds.append(boxes)
        s, b = score_tracking(boxes, seq.boxes), score_tracking(static_boxes(seq.boxes), seq.boxes)
        per_seq.append({"seed": seq.seed, "auc": s.auc, "precision20": s.precision20, "static_auc": b.auc})
    gts = [s.boxes for s in sequences]
    return {
        "tracker": pooled_score(preds, gts),
        "static": pooled_score([static_boxes(g) for g in gts], gts),
        "per_sequence": per_seq,
        "boxes": preds,
    }


#: how the held-out numbers are scored (recorded next to them)
HELDOUT_PROTOCOL = ("OTB: success AUC over 21 IoU thresholds, precision at 20 px; first frame of each sequence "
                    "excluded; sequences at full difficulty (1.0)")


def heldout_evaluation(model, count: int = 12, num_frames: int = 60, *, progress: bool = False,
                       **extra) -> Dict[str, object]:
    """Evaluate ``model`` (PyTorch integer network, default tracker preset) on the first ``count``
    held-out sequences of ``num_frames`` frames. Returns a JSON-ready record: pooled ``auc``,
    ``precision20``, ``mean_iou``, the success and precision curves, the static baseline, the
    per-sequence scores, the protocol and ``extra`` (e.g. which weights were evaluated)."""
    import time

    t0 = time.perf_counter()
    seqs = heldout_sequences(count, num_frames)
    rep = evaluate_model(model, seqs, progress=progress)
    trk, static = rep["tracker"], rep["static"]
    return {
        "variant": model.config.variant, **extra, "split": "heldout", "sequences": len(seqs),
        "seeds": [s.seed for s in seqs], "frames_per_sequence": int(num_frames), "frames_scored": trk.frames,
        "protocol": HELDOUT_PROTOCOL,
        "tracker": "spikedeploy.tracking.tracker.SpikeTrackTracker(TorchNetwork(model)), preset default",
        "auc": trk.auc, "precision20": trk.precision20, "mean_iou": trk.mean_iou,
        "static_auc": static.auc, "static_precision20": static.precision20,
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
    title = f"{record['variant']}, {record['sequences']} held-out sequences"
    a.set(xlabel="IoU threshold", ylabel="success rate", title=f"success: {title}", ylim=(0, 1.02))
    b.set(xlabel="center error threshold (px)", ylabel="precision", title="precision", ylim=(0, 1.02))
    a.legend()
    b.legend()
    fig.tight_layout()
    atomic_write_bytes(files["png"], figure_png(fig, dpi=100))
    return files
