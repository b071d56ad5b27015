"""Tracking a clip on one or several targets, and the tracking report (``spikedeploy track``).

:func:`track_clip` runs the SpikeTrack tracker (:mod:`spikedeploy.tracking.tracker`) over a clip once per
target — the network part on the PyTorch model, the reference executor, onnxruntime or Lava, the
host part (crops, window, decoding) the same Python code every time — and compares:

- with ground truth (when given): the scores of a benchmark protocol (:mod:`spikedeploy.tracking.metrics`;
  default ``otb``: success AUC, precision at 20 px and success rate at IoU 0.5, every tracked frame
  scored, the first as the ground-truth box), each beside the number of frames it is over;
- between targets, frame by frame: IoU of the boxes against the first target and whether they are
  identical; and, for targets that expose per-layer spike counts (reference and Lava backends),
  whether every layer's counts are identical to those of the first such target (compared by a
  SHA-256 digest of the exact integer counts of every layer, so nothing is held across frames).

A slow target (Lava's CPU simulator) can track fewer frames (``frame_limits``); its agreement is
computed on the frames it tracked, and the scores of every target are also given over the frames
that all targets tracked (:func:`common_scores`), the only ones on which they compare.
:func:`write_track_outputs` writes ``boxes.json``, ``report.json``, ``report.md``, ``report.html``
(plots embedded), ``success.png``/``precision.png`` and an annotated ``track.gif``, all into one
directory replaced atomically.

Targets (:data:`TRACK_TARGETS`): ``torch`` (the integer model, float32), ``torch64`` (float64),
``reference`` (= ``reference-binary``), ``reference-integer|binary|graded``, ``onnx``, ``lava``
(= ``lava-graded``), ``lava-binary``, ``lava-graded``, and in Loihi 2 fixed point
(:mod:`spikedeploy.passes.quantize`, 8-bit weights unless ``fixed_options={"weight_bits": N}``,
calibrated on crops of the bundled demo clip) ``reference-fixed`` (graded spikes, integer
arithmetic) and ``lava-fixed`` (graded, Lava ``fixed_pt``): both run the same quantized graphs,
so their spikes and boxes agree exactly.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional, Sequence

import numpy as np

from spikedeploy.errors import ConfigError, InputError

__all__ = [
    "TRACK_TARGETS", "TARGET_ALIASES", "load_frames", "load_boxes", "make_network", "NetworkFactory", "TargetTrack",
    "TrackReport", "track_clip", "write_track_outputs", "load_tracker_model", "track",
]

#: canonical target names accepted by :func:`make_network`
TRACK_TARGETS = ("torch", "torch64", "reference-integer", "reference-binary", "reference-graded", "onnx",
                 "lava-binary", "lava-graded", "reference-fixed", "lava-fixed")
#: the fixed-point targets (both run graded spikes)
FIXED_TARGETS = ("reference-fixed", "lava-fixed")
#: short names
TARGET_ALIASES = {"reference": "reference-binary", "lava": "lava-graded"}
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
_VIDEO_SUFFIXES = (".gif", ".tif", ".tiff", ".apng")


def canonical_target(name: str) -> str:
    t = TARGET_ALIASES.get(name, name)
    if t not in TRACK_TARGETS:
        known = ", ".join(list(TRACK_TARGETS) + list(TARGET_ALIASES))
        raise ConfigError(f"unknown tracking target {name!r}; expected one of {known}")
    return t


# ---------------------------------------------------------------------------------------------
# inputs
# ---------------------------------------------------------------------------------------------

def _rgb(im) -> np.ndarray:
    return np.asarray(im.convert("RGB"), dtype=np.uint8)


def load_frames(path) -> np.ndarray:
    """A clip as ``N x H x W x 3`` uint8 RGB: a ``.npy`` array, a multi-frame video file PIL reads
    (GIF, TIFF, APNG) or a folder of image files (PNG/JPEG/BMP, sorted by name). Validated before
    the frames are decoded (:mod:`spikedeploy.validate`: at most ``MAX_CLIP_FRAMES`` frames of at
    most ``MAX_FRAME_SIDE`` pixels a side, ``MAX_CLIP_BYTES`` in all; a ``.npy`` clip must be
    uint8 with N >= 1). Errors (:class:`InputError`) name the file: no frames, an unreadable frame,
    frames of different sizes, a wrong dtype or shape."""
    from PIL import Image, ImageSequence, UnidentifiedImageError

    from spikedeploy.validate import (MAX_CLIP_BYTES, check_clip, check_frame_count, check_frame_size, detail,
                                      read_npy)

    path = Path(path)
    if not path.exists():
        raise InputError(f"clip {path} does not exist")
    if path.is_file() and path.suffix.lower() == ".npy":
        return check_clip(read_npy(path, "clip", max_elements=MAX_CLIP_BYTES, max_bytes=MAX_CLIP_BYTES),
                          f"clip {path}")
    # PIL's decompression-bomb guard raises DecompressionBombError, which is not an OSError
    unreadable = (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError, EOFError)
    if path.is_file():
        if path.suffix.lower() not in _VIDEO_SUFFIXES:
            raise InputError(f"clip {path}: unsupported file type {path.suffix!r}; give an N x H x W x 3 uint8 "
                             f".npy, a {'/'.join(s[1:].upper() for s in _VIDEO_SUFFIXES)} video or a folder of "
                             f"frames (convert other videos to frames first, e.g. ffmpeg -i clip.mp4 frames/%05d.png)")
        try:
            with Image.open(path) as im:
                n = int(getattr(im, "n_frames", 1))
                check_frame_count(n, f"clip {path}")
                check_frame_size(im.size[1], im.size[0], f"clip {path}", n)
                frames = []
                for f in ImageSequence.Iterator(im):
                    arr = _rgb(f)
                    if frames and arr.shape != frames[0].shape:
                        raise InputError(f"clip {path}: frame {len(frames) + 1} is {arr.shape[1]}x{arr.shape[0]}, "
                                         f"but the first is {frames[0].shape[1]}x{frames[0].shape[0]}")
                    frames.append(arr)
        except unreadable as e:
            raise InputError(f"clip {path} cannot be read: {detail(e)}") from None
        if not frames:
            raise InputError(f"clip {path} holds no frames")
        return check_clip(np.stack(frames), f"clip {path}")
    if not path.is_dir():
        raise InputError(f"clip {path} is neither a file nor a folder")
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES)
    if not files:
        raise InputError(f"clip folder {path} holds no frames ({', '.join(_IMAGE_SUFFIXES)})")
    check_frame_count(len(files), f"clip folder {path}")
    frames = []
    for f in files:
        try:
            with Image.open(f) as im:
                if not frames:
                    check_frame_size(im.size[1], im.size[0], f"clip folder {path}", len(files))
                arr = _rgb(im)
        except unreadable as e:
            raise InputError(f"frame {f} cannot be read: {detail(e)}") from None
        if frames and arr.shape != frames[0].shape:
            raise InputError(f"frame {f} is {arr.shape[1]}x{arr.shape[0]}, but {files[0].name} is "
                             f"{frames[0].shape[1]}x{frames[0].shape[0]}: all frames must have one size")
        frames.append(arr)
    return check_clip(np.stack(frames), f"clip folder {path}")


def load_boxes(path, num_frames: Optional[int] = None) -> np.ndarray:
    """Ground-truth boxes ``[N, 4]`` (x, y, w, h in pixels) from a ``.npy`` array, a ``.json`` list
    (or ``{"boxes": [...]}``) or a text file with one box per line (comma, tab or space separated,
    the OTB ``groundtruth_rect.txt`` format). ``num_frames``: the clip's length, which must match.
    A row of NaN or with a size <= 0 (an absent target) is kept; a malformed file (text, a wrong
    number of columns, complex or boolean values, +-Inf, absurd coordinates) is an
    :class:`InputError` naming the file and the row (:func:`spikedeploy.validate.check_ground_truth`)."""
    from spikedeploy.validate import MAX_CLIP_FRAMES, check_ground_truth, detail, read_npy

    path = Path(path)
    if not path.is_file():
        raise InputError(f"ground-truth file {path} does not exist")
    where = f"ground-truth file {path}"
    if path.suffix.lower() == ".npy":
        boxes = read_npy(path, "ground-truth file", max_elements=4 * MAX_CLIP_FRAMES)
    else:
        if path.stat().st_size > 64 * MAX_CLIP_FRAMES:
            raise InputError(f"{where} has {path.stat().st_size} bytes, too many for {MAX_CLIP_FRAMES} boxes")
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise InputError(f"cannot read ground-truth boxes from {path}: {detail(e)}") from None
        try:
            if path.suffix.lower() == ".json":
                data = json.loads(text)
                boxes = data["boxes"] if isinstance(data, dict) else data
                if not isinstance(boxes, list) or not all(
                        isinstance(r, list) and all(isinstance(v, (int, float)) and not isinstance(v, bool) or v is None
                                                    for v in r) for r in boxes):
                    raise ValueError("expected a list of [x, y, w, h] rows of numbers (null for an absent target)")
                boxes = [[np.nan if v is None else v for v in r] for r in boxes]
            else:
                boxes = []
                for i, line in enumerate(text.splitlines()):
                    r = line.replace(",", " ").split()
                    if not r:
                        continue
                    try:
                        boxes.append([float(v) for v in r])
                    except ValueError:
                        raise ValueError(f"line {i + 1} ({line.strip()[:40]!r}) is not numbers") from None
                    if len(r) != 4:
                        raise ValueError(f"line {i + 1} has {len(r)} values, expected 4 (x, y, w, h)")
            rows = {len(r) for r in boxes}
            if len(rows) > 1 or rows and rows != {4}:
                raise ValueError(f"rows of {sorted(rows)} values, expected 4 (x, y, w, h)")
            boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        except (ValueError, KeyError, TypeError) as e:
            raise InputError(f"cannot read ground-truth boxes from {path}: {detail(e)}") from None
    boxes = check_ground_truth(boxes, where)
    if num_frames is not None and len(boxes) != num_frames:
        raise InputError(f"ground-truth file {path} has {len(boxes)} boxes but the clip has {num_frames} frames")
    return boxes


# ---------------------------------------------------------------------------------------------
# networks
# ---------------------------------------------------------------------------------------------

def make_network(model, target: str, *, lava_options: Optional[Mapping] = None, graphs=None,
                 fixed_options: Optional[Mapping] = None, fixed=None):
    """The :class:`~spikedeploy.tracking.tracker.TrackerNetwork` of ``target`` for the SpikeTrack ``model``.
    ``graphs``: the model's captured branches (:func:`spikedeploy.tracking.backends.capture_spiketrack`)
    to share between graph-based targets (reference, onnx, lava) instead of capturing again.
    ``fixed_options``: ``weight_bits`` / ``calibration`` of the fixed-point targets; ``fixed``: their
    quantized branches (:func:`~spikedeploy.tracking.backends.quantize_branches`) to share."""
    from spikedeploy.tracking import backends as TB
    from spikedeploy.tracking.tracker import TorchNetwork

    target = canonical_target(target)
    if target in FIXED_TARGETS:
        opts = dict(fixed_options or {})
        kw = dict(precision="fixed", weight_bits=int(opts.get("weight_bits", 8)),
                  calibration=opts.get("calibration"), fixed=fixed, graphs=graphs)
        if target == "reference-fixed":
            return TB.ReferenceNetwork(None if graphs else model, mode="graded", **kw)
        return TB.LavaNetwork(None if graphs else model, encoding="graded", **kw, **dict(lava_options or {}))
    if target == "torch":
        return TorchNetwork(model)
    if target == "torch64":
        import copy

        return TorchNetwork(copy.deepcopy(model).double())
    if target.startswith("reference-"):
        return TB.ReferenceNetwork(None if graphs else model, mode=target.split("-", 1)[1], graphs=graphs)
    if target == "onnx":
        return TB.OnnxNetwork(None if graphs else model, graphs=graphs)
    if target.startswith("lava-"):
        lava_cls = getattr(TB, "LavaNetwork", None)
        if lava_cls is None:
            raise ConfigError("the Lava tracking backend is not available in this version of spikedeploy")
        return lava_cls(None if graphs else model, encoding=target.split("-", 1)[1], graphs=graphs,
                        **dict(lava_options or {}))
    raise ConfigError(f"unknown tracking target {target!r}")  # pragma: no cover - canonical_target checked


class NetworkFactory:
    """``factory(model, target)``: :func:`make_network` for one SpikeTrack model and several targets,
    sharing the work between them: one capture of both branches for every graph-based target
    (reference, ONNX, Lava) and one quantization for both fixed-point targets. A new model object
    starts again. ``lava_options``/``fixed_options`` as in :func:`make_network`."""

    def __init__(self, *, lava_options: Optional[Mapping] = None, fixed_options: Optional[Mapping] = None):
        self.lava_options = dict(lava_options or {})
        self.fixed_options = dict(fixed_options or {})
        self._model = None
        self._shared: Dict[str, object] = {}

    def __call__(self, model, target: str):
        target = canonical_target(target)
        if target.startswith("torch"):
            return make_network(model, target)
        if model is not self._model:
            self._model, self._shared = model, {}
        if "graphs" not in self._shared:
            from spikedeploy.tracking.backends import capture_spiketrack

            self._shared["graphs"] = capture_spiketrack(model)
        graphs = self._shared["graphs"]
        fixed = None
        if target in FIXED_TARGETS:
            if "fixed" not in self._shared:
                from spikedeploy.passes import ExpandSpikes
                from spikedeploy.tracking.backends import quantize_branches

                lower = ExpandSpikes("graded")
                self._shared["fixed"] = quantize_branches(
                    lower.apply(graphs.template), lower.apply(graphs.search),
                    weight_bits=int(self.fixed_options.get("weight_bits", 8)),
                    calibration=self.fixed_options.get("calibration"))
            fixed = self._shared["fixed"]
        lava = self.lava_options if target.startswith("lava") else None
        return make_network(model, target, lava_options=lava, graphs=graphs, fixed_options=self.fixed_options,
                            fixed=fixed)


def _last_spikes(network) -> Optional[Dict[str, "object"]]:
    """The per-layer spike counts of ``network``'s last search call, or None if it does not expose them."""
    spikes = getattr(network, "last_spikes", None)
    if spikes is not None:
        return dict(spikes)
    run = getattr(network, "last_run", None)
    if run is not None and hasattr(run, "graph"):
        return {n.name: run.neuron_q(n.name) for n in run.graph.neurons()}
    return None


def _digest(spikes: Mapping[str, "object"]) -> tuple:
    """(SHA-256 of every layer's exact integer counts in name order, total unit spikes)."""
    import torch

    h = hashlib.sha256()
    total = 0
    for name in sorted(spikes):
        q = torch.as_tensor(spikes[name]).detach().cpu().to(torch.int64).contiguous()
        h.update(name.encode())
        h.update(str(list(q.shape)).encode())
        h.update(q.numpy().tobytes())
        total += int(q.sum())
    return h.hexdigest(), total


# ---------------------------------------------------------------------------------------------
# running
# ---------------------------------------------------------------------------------------------

@dataclass
class TargetTrack:
    """One target's run: ``boxes`` (one ``[x, y, w, h]`` per tracked frame, the first is the initial
    box), ``scores`` (the tracker's confidence per frame, None for the first), per-frame
    ``spike_digest``/``spike_total`` (None when the backend does not expose spike counts) and
    timings."""

    target: str
    boxes: List[List[float]]
    scores: List[Optional[float]]
    seconds_per_frame: float
    init_seconds: float
    spike_digest: List[Optional[str]] = field(default_factory=list)
    spike_total: List[Optional[int]] = field(default_factory=list)
    template_updates: List[int] = field(default_factory=list)

    @property
    def frames(self) -> int:
        return len(self.boxes)


@dataclass
class TrackReport:
    """Everything ``spikedeploy track`` reports: the runs per target, the scores against ground
    truth (``scores[target]``: a :class:`~spikedeploy.tracking.metrics.TrackingScore` as a dict,
    when ground truth was given) under ``protocol`` (a name in
    :data:`~spikedeploy.tracking.metrics.PROTOCOLS`) and the per-frame agreement of every
    target with the first (``agreement[target]``: ``iou``, ``identical_box`` and
    ``identical_spikes`` lists, the last None where a side does not expose spike counts)."""

    model: str
    weights: str
    clip: str
    num_frames: int
    runs: Dict[str, TargetTrack]
    ground_truth: Optional[List[List[float]]] = None
    scores: Dict[str, dict] = field(default_factory=dict)
    agreement: Dict[str, dict] = field(default_factory=dict)
    notes: List[str] = field(default_factory=list)
    protocol: str = "otb"
    image_size: Optional[List[int]] = None  #: (width, height) of the frames, for protocols that clip to the image

    @property
    def primary(self) -> str:
        return next(iter(self.runs))

    def to_json(self) -> dict:
        """Everything as JSON-ready data; ``protocol``/``protocol_title`` name how the scores were
        computed, ``scores[target]["frames"]`` is the number of frames a score is over, also given
        per run (``runs[target]["scored_frames"]``), and ``scores_common`` the scores over the
        frames every target tracked when those differ."""
        from spikedeploy.tracking.metrics import get_protocol

        d = asdict(self)
        d["primary"] = self.primary
        d["protocol_title"] = get_protocol(self.protocol).title
        for t, r in d["runs"].items():
            r["frames_tracked"] = len(r["boxes"])
            r["scored_frames"] = self.scores[t]["frames"] if t in self.scores else None
        d["scores_common"] = common_scores(self)
        return d


def _track_one(tracker, frames: np.ndarray, init_box, target: str, limit: int, progress: bool) -> TargetTrack:
    try:
        return _track_frames(tracker, frames, init_box, target, limit, progress)
    finally:
        close = getattr(tracker.network, "close", None)  # e.g. a live Lava runtime
        if close is not None:
            close()


def _track_frames(tracker, frames: np.ndarray, init_box, target: str, limit: int, progress: bool) -> TargetTrack:
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    tracker.initialize(frames[0], list(init_box))
    t_init = time.perf_counter() - t0
    boxes = [[float(v) for v in tracker.state]]
    scores: List[Optional[float]] = [None]
    digests: List[Optional[str]] = [None]
    totals: List[Optional[int]] = [None]
    t0 = time.perf_counter()
    with tqdm(range(1, limit), desc=f"track [{target}]", unit="frame", disable=not progress) as bar:
        for i in bar:
            result = tracker.track(frames[i])
            boxes.append([float(v) for v in result.box])
            scores.append(float(result.score))
            spikes = _last_spikes(tracker.network)
            if spikes is None:
                digests.append(None)
                totals.append(None)
            else:
                d, n = _digest(spikes)
                digests.append(d)
                totals.append(n)
            bar.set_postfix(score=f"{result.score:.3f}", refresh=False)
    per_frame = (time.perf_counter() - t0) / max(1, limit - 1)
    return TargetTrack(target, boxes, scores, per_frame, t_init, digests, totals, list(tracker.updates))


def _agreement(a: TargetTrack, b: TargetTrack, spikes_from: Optional[TargetTrack]) -> dict:
    """``b`` against the primary ``a`` (boxes) and against ``spikes_from`` (the first target that
    exposes per-layer spike counts; None: no comparison)."""
    from spikedeploy.tracking.metrics import box_iou

    n = min(a.frames, b.frames)
    iou = box_iou(np.asarray(b.boxes[:n]), np.asarray(a.boxes[:n])).tolist()
    same_box = [a.boxes[i] == b.boxes[i] for i in range(n)]
    ref = spikes_from if spikes_from is not None and spikes_from is not b else None
    m = min(b.frames, ref.frames) if ref is not None else 0
    same_spikes = [None if (ref.spike_digest[i] is None or b.spike_digest[i] is None)
                   else ref.spike_digest[i] == b.spike_digest[i] for i in range(m)] if ref is not None else []
    compared = [s for s in same_spikes if s is not None]
    return {
        "against": a.target, "frames": n, "iou": iou, "identical_box": same_box,
        "spikes_against": ref.target if ref is not None else None,
        "identical_spikes": same_spikes,
        "min_iou": float(min(iou[1:])) if n > 1 else 1.0,
        "all_boxes_identical": all(same_box),
        "spike_frames_compared": len(compared),
        "all_spikes_identical": (all(compared) if compared else None),
    }


def _score_run(report: TrackReport, boxes: Sequence, n: int) -> dict:
    """The first ``n`` of ``boxes`` scored against the first ``n`` ground-truth boxes under the
    report's protocol: a :class:`~spikedeploy.tracking.metrics.TrackingScore` as a dict."""
    from spikedeploy.tracking.metrics import score_tracking

    gt = np.asarray(report.ground_truth, dtype=np.float64)[:n]
    return asdict(score_tracking(np.asarray(boxes[:n], dtype=np.float64), gt, report.protocol,
                                 image_size=report.image_size))


def track_clip(model_name: str, net, frames: np.ndarray, init_box: Sequence[float], targets: Sequence[str], *,
               weights: str = "", clip: str = "", ground_truth: Optional[np.ndarray] = None, preset: str = "default",
               frame_limits: Optional[Mapping[str, int]] = None, progress: bool = False,
               lava_options: Optional[Mapping] = None, fixed_options: Optional[Mapping] = None,
               network_factory: Optional[Callable] = None, protocol: str = "otb") -> TrackReport:
    """Track ``frames`` (``N x H x W x 3`` uint8) from ``init_box`` with the SpikeTrack model
    ``net`` once per target in ``targets`` (the first is the reference point of the agreement).
    ``frame_limits``: at most that many frames (including the first) for a target, e.g.
    ``{"lava-graded": 5}``; the others track all frames. ``fixed_options``: see :func:`make_network`
    (the fixed-point targets share one quantization of the branches). ``protocol``: how the boxes
    are scored against ``ground_truth`` (:func:`spikedeploy.tracking.metrics.get_protocol`; each
    target over the frames it tracked)."""
    from spikedeploy.tracking.metrics import get_protocol
    from spikedeploy.tracking.tracker import SpikeTrackTracker

    proto = get_protocol(protocol)  # an unknown name fails before anything is tracked
    targets = [canonical_target(t) for t in targets]
    if not targets:
        raise ConfigError("track: give at least one target")
    if len(set(targets)) != len(targets):
        raise ConfigError(f"track: a target is named twice in {targets}")
    limits = {canonical_target(k): int(v) for k, v in dict(frame_limits or {}).items()}
    for t, v in limits.items():
        if v < 1:
            raise ConfigError(f"track: the frame limit of {t} must be at least 1, got {v}")
    default_factory = NetworkFactory(lava_options=lava_options, fixed_options=fixed_options)
    factory = network_factory or default_factory
    n = len(frames)
    report = TrackReport(model_name, weights, clip, n, {},
                         ground_truth=None if ground_truth is None else np.asarray(ground_truth).tolist(),
                         protocol=proto.name, image_size=[int(frames.shape[2]), int(frames.shape[1])])
    for target in targets:
        tracker = SpikeTrackTracker(factory(net, target), preset=preset)
        limit = min(n, limits.get(target, n))
        if limit < n:
            report.notes.append(f"{target} tracked the first {limit} of {n} frames (frame limit)")
        report.runs[target] = _track_one(tracker, frames, init_box, target, limit, progress)
    if ground_truth is not None:
        for t, r in report.runs.items():
            report.scores[t] = _score_run(report, r.boxes, r.frames)
    first = report.runs[targets[0]]
    with_spikes = [r for r in report.runs.values() if any(d is not None for d in r.spike_digest)]
    spikes_from = with_spikes[0] if with_spikes else None
    for t in targets[1:]:
        report.agreement[t] = _agreement(first, report.runs[t], spikes_from)
    return report


# ---------------------------------------------------------------------------------------------
# outputs
# ---------------------------------------------------------------------------------------------

#: one color per target (in the order of the targets), exact on every GIF frame (reserved palette entries)
_COLORS = [(230, 60, 40), (40, 120, 230), (240, 180, 0), (170, 60, 200), (0, 170, 170), (120, 120, 120),
           (230, 120, 180), (100, 60, 20)]
_GT_COLOR = (20, 200, 60)
_LEGEND_BG = (24, 24, 24)
_LEGEND_TEXT = (240, 240, 240)
#: boxes within this many pixels (at the GIF's scale) in every coordinate are drawn as one, striped
COINCIDE_PX = 1.0
_DASH_PX = 6


def _color(k: int) -> tuple:
    return _COLORS[k % len(_COLORS)]


def _coincident_groups(boxes: Sequence[Optional[Sequence[float]]], tol: float) -> List[List[int]]:
    """Indices of ``boxes`` grouped by coincidence (every coordinate within ``tol`` of the group's
    first box); None boxes are left out. Groups keep the order of their first member."""
    groups: List[List[int]] = []
    for i, b in enumerate(boxes):
        if b is None:
            continue
        for g in groups:
            if max(abs(float(u) - float(v)) for u, v in zip(boxes[g[0]], b)) <= tol:
                g.append(i)
                break
        else:
            groups.append([i])
    return groups


def _striped_rect(draw, rect, colors: Sequence[tuple], width: int = 2, dash: int = _DASH_PX) -> None:
    """A rectangle outline whose dashes cycle through ``colors`` (one color: a solid outline), so
    coinciding boxes all stay visible at their exact position."""
    x0, y0, x1, y1 = (int(round(v)) for v in rect)
    if len(colors) == 1:
        draw.rectangle([x0, y0, x1, y1], outline=colors[0], width=width)
        return
    for w in range(width):  # inset outlines, one pixel each
        a0, b0, a1, b1 = x0 + w, y0 + w, x1 - w, y1 - w
        if a1 < a0 or b1 < b0:
            break
        path = ([(x, b0) for x in range(a0, a1 + 1)] + [(a1, y) for y in range(b0 + 1, b1 + 1)]
                + [(x, b1) for x in range(a1 - 1, a0 - 1, -1)] + [(a0, y) for y in range(b1 - 1, b0, -1)])
        for j, p in enumerate(path):
            draw.point(p, fill=colors[(j // dash) % len(colors)])


def _swatch(draw, x: int, y: int, colors: Sequence[tuple], w: int = 16, h: int = 9, stripe: int = 4) -> None:
    """A filled legend swatch: one color, or vertical stripes cycling through ``colors``."""
    for j, x0 in enumerate(range(x, x + w, stripe)):
        draw.rectangle([x0, y, min(x0 + stripe, x + w) - 1, y + h - 1], fill=colors[j % len(colors)])


def _legend_font():
    from PIL import ImageFont, features

    return ImageFont.load_default(size=12) if features.check("freetype2") else ImageFont.load_default()


def _legend_layout(draw, font, entries, width: int, line_h: int, pad: int = 4):
    """Positions of legend ``entries`` ((text, colors) pairs: a swatch of the colors, then the text)
    flowing left to right and wrapping at ``width``: a list of (x, y, text, colors). An entry
    wider than a line (several coinciding targets) is broken at its ``" = "`` separators, its
    continuation lines indented under its text."""
    out, x, y = [], pad, pad

    def length(t: str) -> int:
        return int(draw.textlength(t, font=font))

    for text, colors in entries:
        sw = 22 if colors else 0
        w = sw + length(text) + 12
        if x > pad and x + w > width - pad:
            x, y = pad, y + line_h
        if x + w <= width - pad or " = " not in text:
            out.append((x, y, text, colors))
            x += w
            continue
        parts = text.split(" = ")
        line, first = parts[0], True
        for part in parts[1:]:
            if x + sw + length(f"{line} = {part}") > width - pad:
                out.append((x, y, line + " =", colors if first else None))
                x, y, line, first = pad + sw, y + line_h, part, False
            else:
                line = f"{line} = {part}"
        out.append((x, y, line, colors if first else None))
        x += (sw if first else 0) + length(line) + 12
    return out, y + line_h + pad


def _to_palette(rgb: np.ndarray, reserved: Sequence[tuple]):
    """``rgb`` (H x W x 3 uint8) as a "P" image whose palette holds every color of ``reserved``
    exactly (pixels of those colors keep them) and an adaptive palette for everything else."""
    from PIL import Image

    reserved = list(dict.fromkeys(tuple(int(v) for v in c) for c in reserved))
    k = 255 - len(reserved)  # one entry left free for the GIF writer (unchanged-pixel transparency)
    adaptive = Image.fromarray(rgb).quantize(colors=k, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE)
    idx = np.asarray(adaptive, dtype=np.uint8).copy()
    pal = adaptive.getpalette()[: 3 * k]
    pal += [0] * (3 * k - len(pal))
    for j, c in enumerate(reserved):
        idx[np.all(rgb == np.asarray(c, np.uint8), axis=-1)] = k + j
        pal += list(c)
    out = Image.fromarray(idx, mode="P")
    out.putpalette(pal + [0] * (768 - len(pal)))
    return out


def annotated_gif(frames: np.ndarray, report: TrackReport, *, max_side: int = 360, duration_ms: int = 120) -> bytes:
    """An animated GIF of the clip with every target's box (one color each) and the ground truth
    (green). The legend sits in a strip below the frame, never over it; boxes that coincide (within
    :data:`COINCIDE_PX` pixels) are drawn once with dashes cycling through their colors, and the
    legend names them together (``reference-binary = torch``). The box colors are reserved palette
    entries, so they are exact on every frame."""
    from PIL import Image, ImageDraw

    H, W = frames.shape[1:3]
    scale = min(1.0, max_side / max(H, W))
    size = (max(1, round(W * scale)), max(1, round(H * scale)))
    gt = report.ground_truth
    runs = list(report.runs.items())
    labels = (["ground truth"] if gt is not None else []) + [t for t, _ in runs]
    colors = ([_GT_COLOR] if gt is not None else []) + [_color(k) for k in range(len(runs))]
    font = _legend_font()
    line_h = 16

    def frame_boxes(i):
        out = []
        if gt is not None:
            out.append([float(v) * scale for v in gt[i]] if np.isfinite(gt[i]).all() else None)
        for _, r in runs:
            out.append([float(v) * scale for v in r.boxes[i]] if i < r.frames else None)
        return out

    def entries(i, groups, boxes):
        e = [(f"frame {i}/{len(frames) - 1}", None)]
        for g in groups:
            e.append((" = ".join(labels[j] for j in g), [colors[j] for j in g]))
        for j, b in enumerate(boxes):
            if b is None and labels[j] != "ground truth":
                e.append((f"{labels[j]}: no box (tracked {runs[j - (gt is not None)][1].frames} frames)", [colors[j]]))
        return e

    probe = ImageDraw.Draw(Image.new("RGB", (8, 8)))
    plans = []
    strip_h = 0
    for i in range(len(frames)):
        boxes = frame_boxes(i)
        groups = _coincident_groups(boxes, COINCIDE_PX)
        layout, h = _legend_layout(probe, font, entries(i, groups, boxes), size[0], line_h)
        plans.append((boxes, groups, layout))
        strip_h = max(strip_h, h)
    reserved = colors + [_LEGEND_BG, _LEGEND_TEXT]
    images = []
    for i, frame in enumerate(frames):
        boxes, groups, layout = plans[i]
        pic = Image.fromarray(frame).resize(size, Image.BILINEAR) if scale != 1.0 else Image.fromarray(frame)
        canvas = Image.new("RGB", (size[0], size[1] + strip_h), _LEGEND_BG)
        canvas.paste(pic, (0, 0))
        draw = ImageDraw.Draw(canvas)
        for g in groups:
            x, y, w, h = boxes[g[0]]
            _striped_rect(draw, (x, y, x + w, y + h), [colors[j] for j in g])
        for x, y, text, cols in layout:
            y += size[1]
            if cols:
                _swatch(draw, x, y + 3, cols)
                x += 22
            draw.text((x, y), text, fill=_LEGEND_TEXT, font=font)
        images.append(_to_palette(np.asarray(canvas), reserved))
    import io

    buf = io.BytesIO()
    images[0].save(buf, format="GIF", save_all=True, append_images=images[1:], duration=duration_ms, loop=0,
                   optimize=False)
    return buf.getvalue()


#: line styles of the curves of coinciding targets, by position in the group (earlier: wider, below)
_CURVE_STYLES = [dict(ls="-", lw=4.0, alpha=0.55), dict(ls="--", lw=2.2, marker="o", ms=4),
                 dict(ls=":", lw=2.0, marker="s", ms=3.5), dict(ls="-.", lw=1.6, marker="^", ms=4),
                 dict(ls=(0, (1, 1)), lw=1.4, marker="x", ms=4), dict(ls=(0, (5, 1)), lw=1.2, marker="D", ms=3)]


def _curve_groups(report: TrackReport, key: str) -> Dict[str, tuple]:
    """For each scored target: (index in its group of identical ``key`` curves, the group's first
    target, the group's size)."""
    pos: Dict[str, tuple] = {}
    firsts: List[str] = []
    for t, s in report.scores.items():
        for f in firsts:
            if report.scores[f][key] == s[key]:
                pos[t] = (sum(1 for _, g in pos.values() if g == f), f)
                break
        else:
            firsts.append(t)
            pos[t] = (0, t)
    sizes = {f: sum(1 for _, g in pos.values() if g == f) for f in firsts}
    return {t: (p, f, sizes[f]) for t, (p, f) in pos.items()}


def _curve_figures(report: TrackReport):
    """The success and precision plots of the report's protocol (``fp`` is None for a protocol
    without precision, GOT-10k): one curve per target, its headline number and the number of
    scored frames in its label; identical curves get distinct line styles and markers (and say
    whom they equal)."""
    from matplotlib.figure import Figure

    from spikedeploy.tracking.metrics import get_protocol

    proto = get_protocol(report.protocol)
    fs = Figure(figsize=(5.6, 4.3))
    ax = fs.add_subplot()
    fp = ap = None
    panels = [(ax, "success", proto.success_thresholds, "AO" if "AO" in proto.headline else "AUC")]
    if proto.precision_distances:
        fp = Figure(figsize=(5.6, 4.3))
        ap = fp.add_subplot()
        panels.append((ap, "precision", proto.precision_distances, "P@20"))
    colors = {t: tuple(v / 255 for v in _color(k)) for k, t in enumerate(report.runs)}
    for axis, key, xs, name in panels:
        groups = _curve_groups(report, key)
        for t, s in report.scores.items():
            pos, first, size = groups[t]
            style = dict(_CURVE_STYLES[pos % len(_CURVE_STYLES)]) if size > 1 else dict(ls="-", lw=1.8)
            if "marker" in style:
                style["markevery"] = (pos % 3, 3)
            same = f" = {first}" if pos else ""
            axis.plot(xs, s[key], color=colors.get(t, "k"), zorder=3 + pos,
                      label=f"{t}{same} [{name} {_fmt(s['headline'].get(name))}, {s['frames']} frames]", **style)
    ax.set(xlabel="overlap threshold (IoU)", ylabel="success rate", title=f"Success plot ({proto.name})",
           xlim=(0, 1), ylim=(0, 1.02))
    ax.legend(loc="lower left", fontsize=7.5)
    if ap is not None:
        ap.set(xlabel="location error threshold (px)", ylabel="precision", title=f"Precision plot ({proto.name})",
               xlim=(0, 50), ylim=(0, 1.02))
        ap.axvline(20, color="0.6", lw=0.8, ls="--")
        ap.legend(loc="lower right", fontsize=7.5)
    return fs, fp


def spike_summary(a: dict) -> Optional[str]:
    """``"identical to X's on n frames"`` / ``"DIFFER from X's on n frames"`` for one agreement entry,
    None when no spike counts were compared."""
    if a["all_spikes_identical"] is None:
        return None
    return (f"{'identical to' if a['all_spikes_identical'] else 'DIFFER from'} {a['spikes_against']}'s on "
            f"{a['spike_frames_compared']} frames")


def common_scores(report: TrackReport) -> Optional[dict]:
    """When the targets' scores are over different numbers of frames (a frame limit), the scores
    that compare them: every target's boxes on frames ``0 .. frames_tracked - 1``, the frames all
    of them tracked, scored against the same ground truth under the report's protocol
    (``{"frames_tracked": n, "protocol": name, "scores": {target: {"frames", "auc", "precision20",
    "headline"}}}``: identical boxes give identical scores here); None when every score is over the
    same frames already."""
    if report.ground_truth is None or not report.scores:
        return None
    if len({s["frames"] for s in report.scores.values()}) <= 1:
        return None
    n = min(r.frames for r in report.runs.values())
    out = {}
    for t, r in report.runs.items():
        s = _score_run(report, r.boxes, n)
        out[t] = {"frames": s["frames"], "auc": s["auc"], "precision20": s["precision20"], "headline": s["headline"]}
    return {"frames_tracked": n, "protocol": report.protocol, "scores": out}


def _fmt(v) -> str:
    return "-" if v is None or not np.isfinite(v) else f"{v:.3f}"


def _score_names(report: TrackReport) -> List[str]:
    from spikedeploy.tracking.metrics import get_protocol

    return list(get_protocol(report.protocol).headline)


def _run_headers(report: TrackReport) -> List[str]:
    """The run table's columns: the protocol's headline metrics right after "scored frames"."""
    return ["target", "frames tracked", "ms / frame", "init s", "template updates", "scored frames"] + \
        _score_names(report)


_COMMON_FIXED = ["target", "scored frames"]
_AGREEMENT_HEADERS = ["target", "frames", "min IoU", "boxes identical", "spike counts identical"]


def _run_rows(report: TrackReport) -> List[list]:
    names = _score_names(report)
    rows = []
    for t, r in report.runs.items():
        s = report.scores.get(t)
        rows.append([t, r.frames, f"{r.seconds_per_frame * 1e3:.1f}", f"{r.init_seconds:.2f}",
                     ", ".join(map(str, r.template_updates)) or "-", s["frames"] if s else "-"]
                    + [_fmt(s["headline"].get(k)) if s else "-" for k in names])
    return rows


def _protocol_line(report: TrackReport, markdown: bool = True) -> str:
    from spikedeploy.tracking.metrics import get_protocol

    name = f"`{report.protocol}`" if markdown else report.protocol
    return f"Scores: protocol {name}, {get_protocol(report.protocol).title}."


def _scores_note(report: TrackReport) -> Optional[str]:
    from spikedeploy.tracking.metrics import get_protocol

    frames = {t: s["frames"] for t, s in report.scores.items()}
    if not frames:
        return None
    names = ", ".join(_score_names(report))
    if len(set(frames.values())) <= 1:
        return (f"Scores ({names}) are over {next(iter(frames.values()))} frames each "
                f"({get_protocol(report.protocol).frames_rule}).")
    return (f"Scores ({names}) are over different numbers of frames ("
            + ", ".join(f"{t} {n}" for t, n in frames.items())
            + "), so they do not compare; compare targets on the frames every target tracked (table below).")


def _common_headers(report: TrackReport) -> List[str]:
    return _COMMON_FIXED + _score_names(report)


def _common_rows(common: dict, report: TrackReport) -> List[list]:
    names = _score_names(report)
    return [[t, s["frames"]] + [_fmt(s["headline"].get(k)) for k in names] for t, s in common["scores"].items()]


def _agreement_rows(report: TrackReport) -> List[list]:
    return [[t, a["frames"], f"{a['min_iou']:.6f}", "yes" if a["all_boxes_identical"] else "NO",
             spike_summary(a) or "n/a (no spike counts to compare)"] for t, a in report.agreement.items()]


def _md_table(headers: Sequence[str], rows: List[list], align: str) -> List[str]:
    rule = "|" + "|".join("---:" if c == "r" else "---" for c in align) + "|"
    return ["| " + " | ".join(headers) + " |", rule] + ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]


def _common_heading(common: dict) -> str:
    return f"Scores over the first {common['frames_tracked']} frames (tracked by every target)"


def _common_note(common: dict) -> str:
    n = common["frames_tracked"]
    return (f"Every target's boxes on frames 0-{n - 1}, the frames all targets tracked, scored against the same "
            "ground truth: only these scores compare targets (identical boxes give identical scores).")


def _align(headers: Sequence[str], fixed: str) -> str:
    return fixed + "r" * (len(headers) - len(fixed))


def to_markdown(report: TrackReport) -> str:
    lines = [f"# Tracking report: {report.model}", "",
             f"- weights: {report.weights}", f"- clip: {report.clip} ({report.num_frames} frames)", ""]
    headers = _run_headers(report)
    lines += _md_table(headers, _run_rows(report), _align(headers, "lrrrlr"))
    note = _scores_note(report)
    if note:
        lines += ["", note, "", _protocol_line(report)]
    common = common_scores(report)
    if common:
        lines += ["", f"## {_common_heading(common)}", "", _common_note(common), ""]
        ch = _common_headers(report)
        lines += _md_table(ch, _common_rows(common, report), _align(ch, "lr"))
    if report.agreement:
        lines += ["", f"## Agreement (boxes against {report.primary}; spike counts against the first target "
                      f"that exposes them)", ""]
        lines += _md_table(_AGREEMENT_HEADERS, _agreement_rows(report), "lrrll")
    if report.notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in report.notes]
    return "\n".join(lines) + "\n"


def write_track_outputs(report: TrackReport, frames: np.ndarray, output, *, gif: bool = True,
                        overwrite: bool = False, inputs=(), extra_files: Optional[Mapping[str, bytes]] = None) -> Path:
    """Write the report into the directory ``output`` (replaced atomically): ``boxes.json`` (all
    runs), ``report.json``, ``report.md``, ``report.html``, ``track.gif`` and, with ground truth,
    ``success.png`` and ``precision.png``. ``extra_files``: more files (name -> bytes) written into
    the same folder and linked from the HTML page (the event tracker's per-frame ``frames.json``)."""
    from spikedeploy.fsutil import atomic_directory
    from spikedeploy.htmlreport import COLUMN_PX, HtmlPage, figure_png, png_size

    output = Path(output)
    with atomic_directory(output, overwrite=overwrite, inputs=inputs, command="track") as tmp:
        boxes = {"model": report.model, "weights": report.weights, "primary": report.primary,
                 "boxes": report.runs[report.primary].boxes,
                 "runs": {t: {"boxes": r.boxes, "scores": r.scores, "seconds_per_frame": r.seconds_per_frame,
                              "frames_tracked": r.frames,
                              "scored_frames": report.scores[t]["frames"] if t in report.scores else None}
                          for t, r in report.runs.items()}}
        (tmp / "boxes.json").write_text(json.dumps(boxes, indent=1), encoding="utf-8")
        (tmp / "report.json").write_text(json.dumps(report.to_json(), indent=1), encoding="utf-8")
        md = to_markdown(report)
        (tmp / "report.md").write_text(md, encoding="utf-8")
        page = HtmlPage(f"Tracking report: {report.model}")
        page.heading(f"Tracking report: {report.model}", 1)
        page.paragraph(f"weights: {report.weights}; clip: {report.clip} ({report.num_frames} frames)")
        headers = _run_headers(report)
        page.table(headers, _run_rows(report), align=_align(headers, "lrrrlr"))
        note = _scores_note(report)
        if note:
            page.paragraph(note)
            page.paragraph(_protocol_line(report, markdown=False))
        common = common_scores(report)
        if common:
            page.heading(_common_heading(common), 2)
            page.paragraph(_common_note(common))
            ch = _common_headers(report)
            page.table(ch, _common_rows(common, report), align=_align(ch, "lr"))
        if gif:
            data = annotated_gif(frames, report)
            (tmp / "track.gif").write_bytes(data)
            gw, gh = int.from_bytes(data[6:8], "little"), int.from_bytes(data[8:10], "little")  # GIF screen size
            zoom = 2 if 2 * gw <= COLUMN_PX else 1
            page.raw(f'<figure><div class="fig-wrap"><img class="native pixel" width="{zoom * gw}" height="{zoom * gh}" '
                     f'alt="annotated clip" src="track.gif"/></div><figcaption>boxes per target '
                     f'{"(shown at 2x) " if zoom == 2 else ""}— ground truth in green, the legend below the frame; '
                     'boxes that coincide are drawn once, dashed in each of their colors, and named together '
                     '(e.g. "torch = reference-binary")</figcaption></figure>')
        if report.scores:
            fs, fp = _curve_figures(report)
            plots = [(alt, src, fig) for alt, src, fig in (("success plot", "success.png", fs),
                                                           ("precision plot", "precision.png", fp)) if fig is not None]
            imgs = ""
            for alt, src, fig in plots:
                png = figure_png(fig)
                (tmp / src).write_bytes(png)
                w, h = png_size(png)
                imgs += f'<img class="native" width="{w}" height="{h}" alt="{alt}" src="{src}"/> '
            page.raw(f'<figure><div class="fig-wrap">{imgs}</div><figcaption>{" and ".join(a for a, _, _ in plots)} '
                     f'({report.protocol} protocol); each label gives the headline number and the number of scored '
                     'frames; identical curves are drawn in different line styles and say which target they equal'
                     '</figcaption></figure>')
        if report.agreement:
            page.heading(f"Agreement with {report.primary}", 2)
            page.table(_AGREEMENT_HEADERS, _agreement_rows(report), align="lrrll")
        if report.notes:
            page.heading("Notes", 2)
            page.bullets(report.notes)
        for name, data in dict(extra_files or {}).items():
            (tmp / name).write_bytes(data)
        page.bullets(['<a href="boxes.json">boxes.json</a>', '<a href="report.json">report.json</a>',
                      '<a href="report.md">report.md</a>']
                     + [f'<a href="{name}">{name}</a>' for name in dict(extra_files or {})], html=True)
        (tmp / "report.html").write_text(page.render(), encoding="utf-8")
    return output


# ---------------------------------------------------------------------------------------------
# the track command (api.track)
# ---------------------------------------------------------------------------------------------


def load_tracker_model(model: str, checkpoint: Optional[str] = None, *, seed: int = 0):
    """The SpikeTrack variant ``model`` with its weights, and a line saying which: ``checkpoint``
    ``"bundled"`` (the trained weights shipped for the tiny128 variants), ``"random"``
    (deterministic random weights that fire, seed ``seed``), a checkpoint file in the official
    layout, or None (bundled where they ship, else random). Bad names are a ConfigError."""
    from spikedeploy.models.spiketrack import (
        BUNDLED_FAMILY,
        default_tracker_checkpoint,
        init_spiketrack_for_spiking,
        load_spiketrack_checkpoint,
        spiketrack,
    )

    try:
        net = spiketrack(model)
    except ValueError as e:
        raise ConfigError(f"--model {model!r} is not a SpikeTrack variant: {e}") from None
    has_bundled = f"{net.config.family.lower()}{net.config.resolution}" == BUNDLED_FAMILY
    if checkpoint is None:
        checkpoint = "bundled" if has_bundled else "random"
    if checkpoint == "bundled":
        if not has_bundled:
            raise ConfigError(f"track: trained weights ship only for spiketrack-{BUNDLED_FAMILY}-t1/-t3, not {model!r}; "
                              "give --checkpoint FILE or --checkpoint random")
        path = default_tracker_checkpoint(net.config.templates)
        load_spiketrack_checkpoint(net, str(path))
        weights = f"bundled trained weights ({path.name})"
    elif checkpoint == "random":
        init_spiketrack_for_spiking(net, seed=seed)
        weights = f"random (seed {seed})"
    else:
        load_spiketrack_checkpoint(net, checkpoint)
        weights = f"checkpoint {checkpoint}"
    return net, weights


def track(
    model: str = "spiketrack-tiny128-t1",
    *,
    clip,
    init_box: Optional[Sequence[float]] = None,
    targets: Sequence[str] = ("torch",),
    checkpoint: Optional[str] = None,
    ground_truth=None,
    preset: str = "default",
    seed: int = 0,
    frame_limits: Optional[Dict[str, int]] = None,
    output=None,
    gif: bool = True,
    progress: bool = False,
    backend: Optional[str] = None,
    clip_label: Optional[str] = None,
    overwrite: bool = False,
    partitions=None,
    weight_bits: int = 8,
    protocol: str = "otb",
):
    """Track the object in ``init_box`` ([x, y, w, h] in the first frame) through ``clip`` (see
    :func:`spikedeploy.tracking.run.load_frames`) with SpikeTrack ``model``, once per target in
    ``targets`` (see :data:`spikedeploy.tracking.run.TRACK_TARGETS`; ``backend=`` is the single-target
    spelling of earlier versions). ``checkpoint``: an official-layout checkpoint file,
    ``"bundled"`` (the trained weights shipped for ``spiketrack-tiny128-t1``/``-t3``),
    ``"random"`` (deterministic random weights, seed ``seed``: they fire, but do not track), or
    None: bundled for the tiny128 variants, random for the others. ``ground_truth``: boxes ``[N, 4]`` or a file
    (:func:`~spikedeploy.tracking.run.load_boxes`) for success/precision scores; without ``init_box``
    its first box is used. ``frame_limits``: at most that many frames for a target (e.g.
    ``{"lava": 5}``). Writes boxes, reports, plots and an annotated GIF into the directory
    ``output`` (atomically) when given. ``clip`` may also be an ``N x H x W x 3`` uint8 array;
    ``clip_label`` names it in the report. ``partitions``: the placement of the Lava targets' bundles
    (``"auto"``, ``"per-layer"`` or N; see :mod:`spikedeploy.exporters.lava_placement`).
    ``weight_bits``: the weight mantissa width of the fixed-point targets (``reference-fixed``,
    ``lava-fixed``). ``protocol``: how the boxes are scored against the ground truth
    (:data:`spikedeploy.tracking.metrics.PROTOCOLS`: ``otb``, ``lasot``, ``got10k``). Returns a
    :class:`spikedeploy.tracking.run.TrackReport`."""
    from spikedeploy.exporting import _lava_partitions
    from spikedeploy.tracking.metrics import get_protocol
    from spikedeploy.fsutil import check_output_dir
    from spikedeploy.passes.quantize import check_weight_bits

    if backend is not None:
        targets = (backend,)
    targets = [canonical_target(t) for t in targets]
    protocol = get_protocol(protocol).name
    lava_options = _lava_partitions("lava", partitions)
    check_weight_bits(weight_bits)
    if weight_bits != 8 and not any(t in FIXED_TARGETS for t in targets):
        raise ConfigError("--weight-bits applies to the fixed-point targets only (reference-fixed, lava-fixed)")
    if lava_options and not any(t.startswith("lava") for t in targets):
        raise ConfigError("--partitions applies to the Lava targets only (lava, lava-binary)")
    file_inputs = [v for v in (clip, ground_truth, checkpoint) if isinstance(v, (str, Path))
                   and v not in ("bundled", "random")]
    if output is not None:
        check_output_dir(output, overwrite=overwrite, inputs=file_inputs)
    if isinstance(clip, np.ndarray):
        frames = clip
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or not len(frames):
            raise InputError(f"clip array must be N x H x W x 3 uint8 with N >= 1, got {frames.dtype} {list(frames.shape)}")
        clip = clip_label or f"array of {len(frames)} frames"
    else:
        frames = load_frames(clip)
        clip = clip_label or str(clip)
    gt = None
    if ground_truth is not None:
        gt = (load_boxes(ground_truth, len(frames)) if isinstance(ground_truth, (str, Path))
              else np.asarray(ground_truth, dtype=np.float64))
        if gt.shape != (len(frames), 4):
            raise InputError(f"ground truth must hold one box per frame ({len(frames)} x 4), got {list(gt.shape)}")
    if init_box is None:
        if gt is None:
            raise ConfigError("track: give the initial box (--init-box X,Y,W,H) or ground truth (--ground-truth)")
        init_box = gt[0].tolist()
    if len(init_box) != 4:
        raise ConfigError(f"the initial box needs X,Y,W,H, got {len(init_box)} numbers")
    from spikedeploy.tracking.tracker import SpikeTrackTracker

    init_box = SpikeTrackTracker._check_box(init_box, *frames.shape[1:3])  # before any capture
    net, weights = load_tracker_model(model, checkpoint, seed=seed)
    report = track_clip(model, net, frames, init_box, targets, weights=weights, clip=clip, ground_truth=gt,
                        preset=preset, frame_limits=frame_limits, progress=progress, lava_options=lava_options,
                        fixed_options={"weight_bits": weight_bits}, protocol=protocol)
    if output is not None:
        write_track_outputs(report, frames, output, gif=gif, overwrite=overwrite, inputs=file_inputs)
    return report
