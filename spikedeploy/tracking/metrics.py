"""Tracking metrics, computed exactly as the benchmark toolkits compute them.

Boxes are ``[x, y, w, h]`` in pixels (left, top, width, height), one row per frame. One
implementation serves ``track``, the held-out evaluation and ``evaluate``/``score``; a
:class:`Protocol` fixes everything a toolkit decides (:data:`PROTOCOLS`, :func:`get_protocol`).

Per frame (the arithmetic of got10k's ``utils/metrics.py``, operation for operation, so results
are bit-identical to it):

- **IoU** ``= clip(|p ∩ g| / (|p| + |g| − |p ∩ g| + eps), 0, 1)`` with ``eps`` the float64
  machine epsilon; the intersection is ``max(min(x_p + w_p, x_g + w_g) − max(x_p, x_g), 0)`` times
  the same in y. Clipping to 1 matters: an exact prediction can give ``1 + 1e-16``, which would
  count at the threshold 1. A NaN coordinate gives NaN (it fails every threshold); a ground-truth
  box with a size ≤ 0 has an empty intersection, so its IoU is 0.
- **center error**: the distance between the centers ``(x + (w − 1)/2, y + (h − 1)/2)`` (the
  toolkits' pixel convention; ``−1`` cancels in exact arithmetic, not always in floating point).
- **normalized center error** (LaSOT): both centers divided by the ground-truth size,
  ``(c_x / w_g, c_y / h_g)``, then their distance.

Curves and headline numbers (``τ`` an IoU threshold, ``d`` a distance):

- success ``S(τ)`` = fraction of frames with IoU **>** τ; **AUC** = mean of ``S`` over its
  thresholds (21: 0, 0.05, …, 1, so a perfect track scores 20/21, as IoU 1 is not > 1);
  **SR0.5** = ``S(0.5)``;
- precision ``P(d)`` = fraction of frames with center error **≤** d, d = 0, 1, …, 50 px;
  **P@20** = ``P(20)``;
- normalized precision ``N(d)``, d = 0, 0.01, …, 0.5 (``i / 100``); **NP** = mean of ``N``;
- GOT-10k: **AO** = mean IoU, **SR0.5** / **SR0.75** = fraction of frames with IoU > 0.5 / 0.75,
  success curve over 101 thresholds.

The protocols
-------------

``otb`` — OTB (Wu et al., CVPR 2013; TPAMI 2015) as got10k's ``ExperimentOTB.report`` (which is
the OTB toolkit's definition): every frame of a sequence is scored, the first with the prediction
replaced by the ground-truth box (``boxes[0] = anno[0]``); per-sequence success and precision
curves, averaged over the sequences; the headline numbers are taken from the averaged curves.
Invalid ground truth is scored with the same arithmetic, in the denominator: a NaN row fails
every threshold; a row with a size ≤ 0 has IoU 0 (fails every success threshold) and a center
error computed from the row as given. (The MATLAB OTB toolkit differs only on such rows, and on
invalid *predictions*, which it replaces by the previous frame's box; got10k does not.) There are
no absence labels: ``absent`` is refused.

``lasot`` — LaSOT (Fan et al., CVPR 2019; IJCV 2021) as the official LaSOT evaluation toolkit
(``HengLan/LaSOT_Evaluation_Toolkit``: ``utils/calc_seq_err_robust.m``, ``utils/eval_tracker.m``;
pytracking's ``analysis/extract_results.py`` agrees on everything below except invalid rows):

- a predicted row with a NaN or a size ≤ 0 is replaced by the previous frame's prediction
  (where the ground-truth row has no NaN), then the first frame's by the ground-truth box;
- frames where the target is **absent** (``full_occlusion.txt`` or ``out_of_view.txt`` = 1) are
  removed from the counts but stay in the denominator (the toolkit divides by all frames): they
  fail every threshold (stored as NaN here); pytracking does the same (IoU −1, errors Inf);
- a present frame whose ground truth is not all > 0 (``x, y, w, h``; NaN included) is marked −1
  as the toolkit does: it fails every success threshold and **passes** every precision and
  normalized-precision threshold (``−1 ≤ d``). In LaSOT's annotations such rows occur only on
  absent frames;
- normalized precision: center error over the ground-truth size, thresholds ``(0:50) / 100``, NP
  = mean of the curve (the toolkit with ``norm_dst = true``; the paper's "AUC between 0 and 0.5");
- per-sequence curves averaged over the sequences. (The toolkit's plot script also drops a
  sequence whose whole curve is 0; with the first frame counted that cannot happen unless the
  first frame is absent or invalid, which LaSOT's first frames never are: not replicated.)

IoU here is the clipped got10k arithmetic above; the toolkit's ``calc_rect_int`` uses the
``+1 − 1`` pixel convention, mathematically the same intersection, unclipped.

``got10k`` — GOT-10k (Huang et al., TPAMI 2019) as got10k's ``ExperimentGOT10k.report`` (the
official toolkit): the first frame is excluded; frames whose target is absent (the sequence's
``cover`` label 0, the toolkit keeps ``cover > 0``) are excluded; both boxes are clipped to the
image as the toolkit does (``x ← clip(x, 0, W)``, ``y ← clip(y, 0, H)``, then ``w ← clip(w, 0, W −
x)``, ``h ← clip(h, 0, H − y)`` with the clipped x, y — so ``image_size`` is required); the IoUs of
all sequences are **pooled** (every frame weighs the same) for AO, SR0.5, SR0.75 and the curve.
A NaN ground-truth row (no box) is excluded like an absent frame and a non-finite predicted row
has IoU 0: the toolkit's AO would be NaN in both cases. GOT-10k has no precision metric.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from spikedeploy.errors import ConfigError, InputError

__all__ = [
    "EPS", "SUCCESS_THRESHOLDS", "PRECISION_DISTANCES", "NORMALIZED_DISTANCES", "GOT10K_THRESHOLDS",
    "Protocol", "PROTOCOLS", "get_protocol", "box_iou", "center_error", "normalized_center_error",
    "SequenceScore", "DatasetScore", "score_sequence", "score_dataset", "TrackingScore", "score_tracking",
    "success_curve", "precision_curve",
]

EPS = float(np.finfo(float).eps)  #: the toolkits' epsilon in the IoU denominator
SUCCESS_THRESHOLDS = np.linspace(0.0, 1.0, 21)  #: IoU thresholds of the OTB/LaSOT success curve
PRECISION_DISTANCES = np.arange(0, 51, dtype=np.float64)  #: pixel thresholds of the precision curve
NORMALIZED_DISTANCES = np.arange(0, 51, dtype=np.float64) / 100.0  #: LaSOT normalized-precision thresholds
GOT10K_THRESHOLDS = np.linspace(0.0, 1.0, 101)  #: IoU thresholds of the GOT-10k success curve


# ---------------------------------------------------------------------------------------------
# protocols
# ---------------------------------------------------------------------------------------------

_FIRST = ("ground_truth", "excluded")
_INVALID_GT = ("arithmetic", "marked", "excluded")
_INVALID_PRED = ("arithmetic", "previous", "failure")
_ABSENT = ("refused", "failure", "excluded")
_AGGREGATE = ("sequence_mean", "frame_pool")


@dataclass(frozen=True)
class Protocol:
    """How one benchmark toolkit scores a tracker (see the module docstring for each).

    ``first_frame``: ``"ground_truth"`` (scored, the prediction replaced by the ground-truth box)
    or ``"excluded"``. ``invalid_ground_truth``: ``"arithmetic"`` (scored with the per-frame
    arithmetic: NaN fails everything, size ≤ 0 has IoU 0), ``"marked"`` (LaSOT's −1: fails
    success, passes precision) or ``"excluded"`` (a NaN row is left out; size ≤ 0 by the
    arithmetic). ``invalid_prediction``: ``"arithmetic"``, ``"previous"`` (replaced by the previous
    frame's box) or ``"failure"`` (IoU 0). ``absent`` (frames labelled target-absent):
    ``"refused"`` (no such labels), ``"failure"`` (in the denominator, failing every threshold)
    or ``"excluded"``. ``aggregate``: ``"sequence_mean"`` (per-sequence curves averaged) or
    ``"frame_pool"`` (all sequences' frames pooled). ``headline``: the names
    :meth:`SequenceScore.headline` gives, in order. ``title``: the sentence reports print."""

    name: str
    title: str
    first_frame: str
    invalid_ground_truth: str
    invalid_prediction: str
    absent: str
    aggregate: str
    headline: Tuple[str, ...]
    success_thresholds: Tuple[float, ...]
    precision_distances: Tuple[float, ...] = ()
    normalized_distances: Tuple[float, ...] = ()
    clip_to_image: bool = False

    def __post_init__(self):
        for attr, allowed in (("first_frame", _FIRST), ("invalid_ground_truth", _INVALID_GT),
                              ("invalid_prediction", _INVALID_PRED), ("absent", _ABSENT),
                              ("aggregate", _AGGREGATE)):
            if getattr(self, attr) not in allowed:
                raise ValueError(f"Protocol {self.name}: {attr} must be one of {allowed}, got {getattr(self, attr)!r}")
        known = {"AUC", "P@20", "NP", "SR0.5", "SR0.75", "AO"}
        if not self.headline or set(self.headline) - known:
            raise ValueError(f"Protocol {self.name}: headline metrics {self.headline} not all in {sorted(known)}")
        if ("P@20" in self.headline) != bool(self.precision_distances) or (
                "NP" in self.headline) != bool(self.normalized_distances):
            raise ValueError(f"Protocol {self.name}: P@20/NP need their distance thresholds, and only they do")

    @property
    def frames_rule(self) -> str:
        """Which frames a score is over, in words (for reports)."""
        if self.first_frame == "ground_truth":
            rule = "every frame, the first counted as the ground-truth box"
        else:
            rule = "every frame after the first"
        if self.absent == "failure":
            rule += "; target-absent frames count as failures"
        elif self.absent == "excluded":
            rule += ", target-absent frames and frames without a ground-truth box left out"
        return rule


PROTOCOLS: Dict[str, Protocol] = {}


def _register(p: Protocol) -> Protocol:
    if p.name in PROTOCOLS:
        raise ValueError(f"scoring protocol {p.name!r} registered twice")
    PROTOCOLS[p.name] = p
    return p


_register(Protocol(
    name="otb",
    title=("OTB (Wu et al. 2013) as the OTB toolkit and got10k's ExperimentOTB: first frame counted as the "
           "ground-truth box, IoU clipped to [0, 1], invalid ground truth counted as failures (NaN: every "
           "threshold, size <= 0: every success threshold), success AUC over 21 IoU thresholds, precision at "
           "20 px, success rate at IoU 0.5, per-sequence curves averaged over sequences"),
    first_frame="ground_truth", invalid_ground_truth="arithmetic", invalid_prediction="arithmetic",
    absent="refused", aggregate="sequence_mean", headline=("AUC", "P@20", "SR0.5"),
    success_thresholds=tuple(SUCCESS_THRESHOLDS.tolist()), precision_distances=tuple(PRECISION_DISTANCES.tolist())))

_register(Protocol(
    name="lasot",
    title=("LaSOT (Fan et al. 2019) as the LaSOT evaluation toolkit: first frame counted as the ground-truth "
           "box, frames with the target absent (full occlusion or out of view) counted as failures, an invalid "
           "prediction replaced by the previous one, IoU clipped to [0, 1], success AUC over 21 IoU thresholds, "
           "precision at 20 px, normalized precision (center error / ground-truth size, AUC over 0..0.5), "
           "per-sequence curves averaged over sequences"),
    first_frame="ground_truth", invalid_ground_truth="marked", invalid_prediction="previous",
    absent="failure", aggregate="sequence_mean", headline=("AUC", "P@20", "NP", "SR0.5"),
    success_thresholds=tuple(SUCCESS_THRESHOLDS.tolist()), precision_distances=tuple(PRECISION_DISTANCES.tolist()),
    normalized_distances=tuple(NORMALIZED_DISTANCES.tolist())))

_register(Protocol(
    name="got10k",
    title=("GOT-10k (Huang et al. 2019) as got10k's ExperimentGOT10k: first frame excluded, frames with the "
           "target absent (cover 0) or no ground-truth box excluded, boxes clipped to the image, IoU clipped to "
           "[0, 1], AO = mean IoU, SR0.5, SR0.75, frames pooled over sequences"),
    first_frame="excluded", invalid_ground_truth="excluded", invalid_prediction="failure",
    absent="excluded", aggregate="frame_pool", headline=("AO", "SR0.5", "SR0.75"),
    success_thresholds=tuple(GOT10K_THRESHOLDS.tolist()), clip_to_image=True))


def get_protocol(protocol: Union[str, Protocol]) -> Protocol:
    """The registered :class:`Protocol` named ``protocol`` (a Protocol is returned as is);
    an unknown name is a :class:`~spikedeploy.errors.ConfigError` listing the known ones."""
    if isinstance(protocol, Protocol):
        return protocol
    p = PROTOCOLS.get(str(protocol).lower()) if isinstance(protocol, str) else None
    if p is None:
        raise ConfigError(f"unknown scoring protocol {protocol!r}; expected one of {', '.join(PROTOCOLS)}")
    return p


# ---------------------------------------------------------------------------------------------
# per-frame arithmetic
# ---------------------------------------------------------------------------------------------

def _boxes(b, what: str) -> np.ndarray:
    try:
        a = np.array(b, dtype=np.float64)  # a copy: callers' arrays are never modified
    except (TypeError, ValueError):
        raise InputError(f"{what}: expected boxes [N, 4] as x, y, w, h, got values that are not numbers") from None
    if a.ndim == 1 and a.shape[0] == 4:
        a = a[None]
    if a.ndim != 2 or a.shape[1] != 4:
        raise InputError(f"{what}: expected boxes [N, 4] as x, y, w, h, got shape {list(a.shape)}")
    return a


def _pair(pred, gt, what: str) -> Tuple[np.ndarray, np.ndarray]:
    p, g = _boxes(pred, f"{what}: predicted boxes"), _boxes(gt, f"{what}: ground-truth boxes")
    if p.shape != g.shape:
        raise InputError(f"{what}: {len(p)} predicted boxes but {len(g)} ground-truth boxes; give one box per frame")
    return p, g


def _image_size(image_size, what: str) -> Tuple[float, float]:
    try:
        w, h = (float(v) for v in image_size)
    except (TypeError, ValueError):
        raise InputError(f"{what}: image_size must be (width, height), got {image_size!r}") from None
    if not (w > 0 and h > 0 and math.isfinite(w) and math.isfinite(h)):
        raise InputError(f"{what}: image_size must be two positive numbers (width, height), got {image_size!r}")
    return w, h


def _clip_to_image(r: np.ndarray, size: Tuple[float, float]) -> np.ndarray:
    """GOT-10k's bound: x, y into the image, then w, h to what is left right/below the clipped x, y."""
    r = r.copy()
    r[:, 0] = np.clip(r[:, 0], 0, size[0])
    r[:, 1] = np.clip(r[:, 1], 0, size[1])
    r[:, 2] = np.clip(r[:, 2], 0, size[0] - r[:, 0])
    r[:, 3] = np.clip(r[:, 3], 0, size[1] - r[:, 1])
    return r


def _iou(p: np.ndarray, g: np.ndarray) -> np.ndarray:
    x1 = np.maximum(p[:, 0], g[:, 0])
    y1 = np.maximum(p[:, 1], g[:, 1])
    x2 = np.minimum(p[:, 0] + p[:, 2], g[:, 0] + g[:, 2])
    y2 = np.minimum(p[:, 1] + p[:, 3], g[:, 1] + g[:, 3])
    inter = np.maximum(x2 - x1, 0) * np.maximum(y2 - y1, 0)
    union = p[:, 2] * p[:, 3] + g[:, 2] * g[:, 3] - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.clip(inter / (union + EPS), 0.0, 1.0)


def _centers(r: np.ndarray) -> np.ndarray:
    return r[:, :2] + (r[:, 2:] - 1) / 2


def _distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sqrt(np.sum(np.power(a - b, 2), axis=-1))


def box_iou(pred, gt, *, image_size: Optional[Sequence[float]] = None) -> np.ndarray:
    """Per-row IoU of two ``[N, 4]`` box arrays, clipped to [0, 1] (got10k's ``rect_iou``);
    ``image_size`` = (width, height): both clipped to the image first, as GOT-10k does."""
    p, g = _pair(pred, gt, "box_iou")
    if image_size is not None:
        size = _image_size(image_size, "box_iou")
        p, g = _clip_to_image(p, size), _clip_to_image(g, size)
    return _iou(p, g)


def center_error(pred, gt) -> np.ndarray:
    """Per-row distance in pixels between the centers ``(x + (w − 1)/2, y + (h − 1)/2)``."""
    p, g = _pair(pred, gt, "center_error")
    return _distance(_centers(p), _centers(g))


def normalized_center_error(pred, gt) -> np.ndarray:
    """Per-row LaSOT normalized center error: both centers divided by the ground-truth ``w, h``."""
    p, g = _pair(pred, gt, "normalized_center_error")
    return _normalized(p, g)


def _normalized(p: np.ndarray, g: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return _distance(_centers(p) / g[:, 2:], _centers(g) / g[:, 2:])


# ---------------------------------------------------------------------------------------------
# scores
# ---------------------------------------------------------------------------------------------

def _json_float(v: float):
    v = float(v)
    return v if math.isfinite(v) else None


def _json_list(vs) -> list:
    return [_json_float(v) for v in vs]


def _curve(values: np.ndarray, thresholds: Sequence[float], below: bool) -> np.ndarray:
    """Fraction of ``values`` ``<= t`` (``below``) or ``> t`` per threshold; NaN with no values."""
    thr = np.asarray(thresholds, dtype=np.float64)
    if not len(values):
        return np.full(len(thr), np.nan)
    v = np.asarray(values, dtype=np.float64)[:, np.newaxis]
    hits = np.less_equal(v, thr[np.newaxis, :]) if below else np.greater(v, thr[np.newaxis, :])
    return np.mean(hits, axis=0)


def _mean_or_nan(v: np.ndarray) -> float:
    return float(np.mean(v)) if len(v) else float("nan")


def _headline(proto: Protocol, iou: np.ndarray, success, precision, normalized) -> Tuple[Tuple[str, float], ...]:
    out = []
    for name in proto.headline:
        if name == "AUC":
            v = np.mean(success)
        elif name == "P@20":
            v = precision[proto.precision_distances.index(20.0)]
        elif name == "NP":
            v = np.mean(normalized)
        elif name == "AO":
            v = _mean_or_nan(iou)
        elif proto.aggregate == "frame_pool":  # SR from the frames themselves, as GOT-10k
            v = _mean_or_nan(iou > float(name[2:]))
        else:  # SR0.5 of a success curve
            v = success[proto.success_thresholds.index(float(name[2:]))]
        out.append((name, float(v)))
    return tuple(out)


def _mean_iou(iou: np.ndarray) -> float:
    """Mean IoU with failures (NaN, the −1 marker) as 0."""
    return _mean_or_nan(np.where(iou > 0, iou, 0.0))


@dataclass(frozen=True)
class SequenceScore:
    """One sequence scored by ``protocol``.

    ``index``: the frame numbers (0-based) in the denominator, one per entry of ``iou``,
    ``center_error`` and ``normalized_center_error`` (the values as used: NaN = a failure at every
    threshold, −1 = LaSOT's invalid-ground-truth marker); ``frames`` = ``len(index)``;
    ``length``: frames in the sequence; ``absent``/``invalid``: frames labelled target-absent /
    with invalid ground truth (NaN or a size ≤ 0). The curves (fractions per threshold of the
    protocol) and the headline numbers follow the module docstring; ``mean_iou`` counts failures
    as 0."""

    protocol: str
    name: Optional[str]
    length: int
    index: Tuple[int, ...]
    iou: Tuple[float, ...]
    center_error: Tuple[float, ...]
    normalized_center_error: Tuple[float, ...]
    success: Tuple[float, ...]
    precision: Tuple[float, ...]
    normalized_precision: Tuple[float, ...]
    values: Tuple[Tuple[str, float], ...]
    mean_iou: float
    absent: int = 0
    invalid: int = 0

    @property
    def frames(self) -> int:
        return len(self.index)

    def headline(self) -> Dict[str, float]:
        """The protocol's headline numbers in order, e.g. ``{"AUC": .., "P@20": .., "SR0.5": ..}``."""
        return dict(self.values)

    def to_dict(self) -> dict:
        """JSON-ready (non-finite values as None)."""
        return {"protocol": self.protocol, "name": self.name, "length": self.length, "frames": self.frames,
                "absent": self.absent, "invalid": self.invalid,
                "headline": {k: _json_float(v) for k, v in self.values}, "mean_iou": _json_float(self.mean_iou),
                "success": _json_list(self.success), "precision": _json_list(self.precision),
                "normalized_precision": _json_list(self.normalized_precision), "index": list(self.index),
                "iou": _json_list(self.iou), "center_error": _json_list(self.center_error),
                "normalized_center_error": _json_list(self.normalized_center_error)}


@dataclass(frozen=True)
class DatasetScore:
    """Sequences aggregated by ``protocol``: ``sequences``, ``frames`` (all sequences' scored
    frames), ``names``, the curves (sequence-averaged or over the pooled frames) and the headline
    numbers taken from them; ``mean_iou``: the mean of the sequences' (``sequence_mean``) or of
    all frames' (``frame_pool``) IoU, failures as 0."""

    protocol: str
    sequences: int
    frames: int
    names: Tuple[Optional[str], ...]
    success: Tuple[float, ...]
    precision: Tuple[float, ...]
    normalized_precision: Tuple[float, ...]
    values: Tuple[Tuple[str, float], ...]
    mean_iou: float

    def headline(self) -> Dict[str, float]:
        """The protocol's headline numbers in order."""
        return dict(self.values)

    def to_dict(self) -> dict:
        """JSON-ready (non-finite values as None)."""
        return {"protocol": self.protocol, "sequences": self.sequences, "frames": self.frames,
                "names": list(self.names), "headline": {k: _json_float(v) for k, v in self.values},
                "mean_iou": _json_float(self.mean_iou), "success": _json_list(self.success),
                "precision": _json_list(self.precision),
                "normalized_precision": _json_list(self.normalized_precision)}


def _absent_mask(absent, n: int, what: str) -> Optional[np.ndarray]:
    if absent is None:
        return None
    a = np.asarray(absent)
    if a.shape != (n,):
        raise InputError(f"{what}: {a.size} absence labels for {n} frames; give one 0/1 label per frame")
    if a.dtype != bool:
        if not np.issubdtype(a.dtype, np.number) or not np.isin(a, (0, 1)).all():
            raise InputError(f"{what}: absence labels must be 0 or 1 (1: target absent)")
        a = a.astype(bool)
    return a


def score_sequence(pred, gt, protocol: Union[str, Protocol] = "otb", *, absent=None,
                   image_size: Optional[Sequence[float]] = None, name: Optional[str] = None) -> SequenceScore:
    """Score one sequence: ``pred`` and ``gt`` ``[N, 4]`` boxes (one per frame, the first is the
    initial box), ``absent``: N target-absent labels (LaSOT: full occlusion or out of view;
    GOT-10k: cover 0), ``image_size``: (width, height) of the frames (needed by protocols that clip
    boxes to the image: got10k; unused by the others), ``name``: the sequence, named in errors.
    Bad shapes or labels raise :class:`~spikedeploy.errors.InputError`."""
    proto = get_protocol(protocol)
    what = f"sequence {name}" if name is not None else "tracking score"
    p, g = _pair(pred, gt, what)
    n = len(p)
    if n < 1:
        raise InputError(f"{what}: no frames to score")
    ab = _absent_mask(absent, n, what)
    if ab is not None and proto.absent == "refused":
        raise InputError(f"{what}: the {proto.name} protocol has no target-absence labels; score with lasot or "
                         "got10k, or leave the labels out")
    with np.errstate(invalid="ignore"):
        invalid_gt = ~(np.isfinite(g).all(axis=1) & (g[:, 2] > 0) & (g[:, 3] > 0))
    if proto.invalid_prediction == "previous":  # the LaSOT toolkit, before the first frame is replaced
        for i in range(1, n):
            r = p[i]
            if (np.isnan(r).any() or not r[2] > 0 or not r[3] > 0) and not np.isnan(g[i]).any():
                p[i] = p[i - 1]
    if proto.first_frame == "ground_truth":
        p[0] = g[0]
        keep = np.ones(n, dtype=bool)
    else:
        keep = np.arange(n) >= 1
    if proto.absent == "excluded" and ab is not None:
        keep &= ~ab
    if proto.invalid_ground_truth == "excluded":
        keep &= ~np.isnan(g).any(axis=1)
    idx = np.flatnonzero(keep)
    ps, gs = p[idx], g[idx]
    if proto.clip_to_image:
        if image_size is None:
            raise InputError(f"{what}: the {proto.name} protocol clips boxes to the image; give "
                             "image_size=(width, height)")
        size = _image_size(image_size, what)
        iou = _iou(_clip_to_image(ps, size), _clip_to_image(gs, size))
    else:
        iou = _iou(ps, gs)
    if proto.invalid_prediction == "failure":
        iou = np.where(np.isfinite(ps).all(axis=1), iou, 0.0)
    ce = _distance(_centers(ps), _centers(gs)) if proto.precision_distances else np.zeros(0)
    nce = _normalized(ps, gs) if proto.normalized_distances else np.zeros(0)
    if proto.invalid_ground_truth == "marked":  # LaSOT: every coordinate > 0 or the frame is marked -1
        with np.errstate(invalid="ignore"):
            bad = ~(gs > 0).all(axis=1)
        iou, ce = np.where(bad, -1.0, iou), np.where(bad, -1.0, ce)
        nce = np.where(bad, -1.0, nce) if len(nce) else nce
    if proto.absent == "failure" and ab is not None:
        gone = ab[idx]
        iou, ce = np.where(gone, np.nan, iou), np.where(gone, np.nan, ce)
        nce = np.where(gone, np.nan, nce) if len(nce) else nce
    success = _curve(iou, proto.success_thresholds, below=False)
    precision = _curve(ce, proto.precision_distances, below=True) if proto.precision_distances else np.zeros(0)
    normalized = _curve(nce, proto.normalized_distances, below=True) if proto.normalized_distances else np.zeros(0)
    return SequenceScore(
        protocol=proto.name, name=name, length=n, index=tuple(int(i) for i in idx), iou=tuple(iou.tolist()),
        center_error=tuple(ce.tolist()), normalized_center_error=tuple(nce.tolist()),
        success=tuple(success.tolist()), precision=tuple(precision.tolist()),
        normalized_precision=tuple(normalized.tolist()),
        values=_headline(proto, iou, success, precision, normalized), mean_iou=_mean_iou(iou),
        absent=int(ab.sum()) if ab is not None else 0, invalid=int(invalid_gt.sum()))


def score_dataset(scores: Sequence[SequenceScore], protocol: Union[str, Protocol] = "otb") -> DatasetScore:
    """Aggregate :func:`score_sequence` results as ``protocol`` does: ``sequence_mean`` averages
    the per-sequence curves (``np.mean`` over sequences, in the order given, then the headline
    numbers from the averaged curves); ``frame_pool`` concatenates every sequence's IoUs and
    scores them as one. Every score must come from the same protocol."""
    proto = get_protocol(protocol)
    scores = list(scores)
    if not scores:
        raise InputError("score_dataset: no sequences to aggregate")
    other = sorted({s.protocol for s in scores} - {proto.name})
    if other:
        raise InputError(f"score_dataset: sequences scored with {', '.join(other)} cannot be aggregated as "
                         f"{proto.name}; score them with one protocol")
    frames = sum(s.frames for s in scores)
    names = tuple(s.name for s in scores)
    if proto.aggregate == "frame_pool":
        iou = np.concatenate([np.asarray(s.iou, dtype=np.float64) for s in scores])
        success = _curve(iou, proto.success_thresholds, below=False)
        precision = normalized = np.zeros(0)
        mean_iou = _mean_iou(iou)
    else:
        iou = np.zeros(0)
        success = np.mean(np.stack([np.asarray(s.success) for s in scores]), axis=0)
        precision = (np.mean(np.stack([np.asarray(s.precision) for s in scores]), axis=0)
                     if proto.precision_distances else np.zeros(0))
        normalized = (np.mean(np.stack([np.asarray(s.normalized_precision) for s in scores]), axis=0)
                      if proto.normalized_distances else np.zeros(0))
        mean_iou = float(np.mean([s.mean_iou for s in scores]))
    return DatasetScore(protocol=proto.name, sequences=len(scores), frames=frames, names=names,
                        success=tuple(success.tolist()), precision=tuple(precision.tolist()),
                        normalized_precision=tuple(normalized.tolist()),
                        values=_headline(proto, iou, success, precision, normalized), mean_iou=mean_iou)


# ---------------------------------------------------------------------------------------------
# the compact score of track and the held-out evaluation
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class TrackingScore:
    """A score in brief: ``auc`` (mean of the success curve), ``precision20`` (P(20 px); None
    where the protocol has no precision), ``mean_iou`` (failures as 0), ``frames`` (frames scored),
    both curves, the ``protocol`` and its ``headline`` numbers."""

    auc: float
    precision20: Optional[float]
    mean_iou: float
    frames: int
    success: Sequence[float]
    precision: Sequence[float]
    protocol: str = "otb"
    headline: Mapping[str, float] = field(default_factory=dict)

    @classmethod
    def of(cls, score: Union[SequenceScore, DatasetScore]) -> "TrackingScore":
        """The brief form of a :class:`SequenceScore` or :class:`DatasetScore`."""
        proto = get_protocol(score.protocol)
        p20 = (float(score.precision[proto.precision_distances.index(20.0)])
               if proto.precision_distances else None)
        return cls(auc=float(np.mean(score.success)), precision20=p20, mean_iou=float(score.mean_iou),
                   frames=int(score.frames), success=list(score.success), precision=list(score.precision),
                   protocol=proto.name, headline=score.headline())


def score_tracking(pred, gt, protocol: Union[str, Protocol] = "otb", *, absent=None,
                   image_size: Optional[Sequence[float]] = None, name: Optional[str] = None) -> TrackingScore:
    """:func:`score_sequence` in brief (:class:`TrackingScore`)."""
    return TrackingScore.of(score_sequence(pred, gt, protocol, absent=absent, image_size=image_size, name=name))


def success_curve(pred, gt, protocol: Union[str, Protocol] = "otb", **kw) -> np.ndarray:
    """The success curve of one sequence (over the protocol's IoU thresholds)."""
    return np.asarray(score_sequence(pred, gt, protocol, **kw).success)


def precision_curve(pred, gt, protocol: Union[str, Protocol] = "otb", **kw) -> np.ndarray:
    """The precision curve of one sequence (empty where the protocol has none)."""
    return np.asarray(score_sequence(pred, gt, protocol, **kw).precision)
