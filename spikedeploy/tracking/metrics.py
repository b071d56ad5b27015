"""Tracking metrics, OTB style (Wu et al., "Online Object Tracking: A Benchmark", CVPR 2013).

Boxes are ``[x, y, w, h]`` in pixels (top-left corner, width, height), one row per frame.

- **overlap** of a predicted box ``p`` and a ground-truth box ``g``: ``IoU = |p ∩ g| / |p ∪ g|``
  (0 when the union is empty);
- **center error**: the Euclidean distance between the box centers ``(x + w/2, y + h/2)``;
- **success curve** ``S(τ)`` = fraction of frames with IoU > τ, for τ in 21 thresholds
  0, 0.05, …, 1; its mean over the thresholds is the **AUC** (the success score);
- **precision curve** ``P(d)`` = fraction of frames with center error ≤ d pixels, d = 0…50;
  ``P(20)`` is the **precision at 20 px**.

The first frame (the initial box) is excluded by default, as it is given, not tracked
(``skip_first``). Frames whose ground truth is missing (NaN or a non-positive size) are skipped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

__all__ = [
    "SUCCESS_THRESHOLDS", "PRECISION_DISTANCES", "box_iou", "center_error",
    "success_curve", "precision_curve", "TrackingScore", "score_tracking",
]

SUCCESS_THRESHOLDS = np.linspace(0.0, 1.0, 21)  #: IoU thresholds of the success curve
PRECISION_DISTANCES = np.arange(0, 51, dtype=np.float64)  #: pixel thresholds of the precision curve


def _boxes(b, what: str) -> np.ndarray:
    a = np.asarray(b, dtype=np.float64)
    if a.ndim == 1:
        a = a[None]
    if a.ndim != 2 or a.shape[1] != 4:
        raise ValueError(f"{what}: expected boxes [N, 4] as x, y, w, h, got shape {list(a.shape)}")
    return a


def box_iou(pred, gt) -> np.ndarray:
    """Per-row IoU of two ``[N, 4]`` box arrays (``x, y, w, h``)."""
    p, g = _boxes(pred, "pred"), _boxes(gt, "gt")
    if p.shape != g.shape:
        raise ValueError(f"box_iou: {len(p)} predicted boxes but {len(g)} ground-truth boxes")
    x1 = np.maximum(p[:, 0], g[:, 0])
    y1 = np.maximum(p[:, 1], g[:, 1])
    x2 = np.minimum(p[:, 0] + p[:, 2], g[:, 0] + g[:, 2])
    y2 = np.minimum(p[:, 1] + p[:, 3], g[:, 1] + g[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    union = p[:, 2] * p[:, 3] + g[:, 2] * g[:, 3] - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)
    return iou


def center_error(pred, gt) -> np.ndarray:
    """Per-row distance in pixels between the centers of two ``[N, 4]`` box arrays."""
    p, g = _boxes(pred, "pred"), _boxes(gt, "gt")
    if p.shape != g.shape:
        raise ValueError(f"center_error: {len(p)} predicted boxes but {len(g)} ground-truth boxes")
    cp = p[:, :2] + p[:, 2:] / 2
    cg = g[:, :2] + g[:, 2:] / 2
    return np.sqrt(((cp - cg) ** 2).sum(axis=1))


def _valid(gt: np.ndarray) -> np.ndarray:
    return np.isfinite(gt).all(axis=1) & (gt[:, 2] > 0) & (gt[:, 3] > 0)


def success_curve(pred, gt, *, skip_first: bool = True) -> np.ndarray:
    """Fraction of frames with IoU > τ for each τ in :data:`SUCCESS_THRESHOLDS`."""
    iou = _per_frame(box_iou, pred, gt, skip_first)
    return np.array([(iou > t).mean() if len(iou) else 0.0 for t in SUCCESS_THRESHOLDS])


def precision_curve(pred, gt, *, skip_first: bool = True) -> np.ndarray:
    """Fraction of frames with center error ≤ d for each d in :data:`PRECISION_DISTANCES`."""
    err = _per_frame(center_error, pred, gt, skip_first)
    return np.array([(err <= d).mean() if len(err) else 0.0 for d in PRECISION_DISTANCES])


def _per_frame(fn, pred, gt, skip_first: bool) -> np.ndarray:
    p, g = _boxes(pred, "pred"), _boxes(gt, "gt")
    if p.shape != g.shape:
        raise ValueError(f"{len(p)} predicted boxes but {len(g)} ground-truth boxes: one per frame each")
    keep = _valid(g)
    if skip_first and len(keep):
        keep[0] = False
    return fn(p[keep], g[keep]) if keep.any() else np.zeros(0)


@dataclass(frozen=True)
class TrackingScore:
    """OTB scores of one run: ``auc`` (mean of the success curve), ``precision20`` (P(20 px)),
    ``mean_iou``, ``frames`` (frames scored) and both curves."""

    auc: float
    precision20: float
    mean_iou: float
    frames: int
    success: Sequence[float]
    precision: Sequence[float]


def score_tracking(pred, gt, *, skip_first: bool = True) -> TrackingScore:
    """Success AUC, precision at 20 px and mean IoU of ``pred`` against ``gt`` (both ``[N, 4]``)."""
    s = success_curve(pred, gt, skip_first=skip_first)
    pc = precision_curve(pred, gt, skip_first=skip_first)
    iou = _per_frame(box_iou, pred, gt, skip_first)
    return TrackingScore(
        auc=float(s.mean()), precision20=float(pc[20]), mean_iou=float(iou.mean()) if len(iou) else 0.0,
        frames=int(len(iou)), success=s.tolist(), precision=pc.tolist(),
    )
