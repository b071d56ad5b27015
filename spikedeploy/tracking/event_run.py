"""Tracking event sequences on one or several targets, and their reports (``spikedeploy track
--events``), and the event task of ``spikedeploy evaluate``.

The event counterpart of :mod:`spikedeploy.tracking.run`, reusing its report: the event tracker
(:class:`~spikedeploy.tracking.event_tracker.EventTracker`: template from the events of ``[t_0,
t_1)`` around the initial box, then frame ``i`` from the events of ``[t_{i-1}, t_i)``, one search
step per frame with every membrane carried -- MSST) runs once per target, and
:class:`EventTrackReport` (a :class:`~spikedeploy.tracking.run.TrackReport`) holds the runs, the
scores against ground truth under a benchmark protocol, and the per-frame agreement of every
target with the first (boxes; per-layer spike counts where both targets expose them). Written
(:func:`write_event_track_outputs`): ``boxes.json``, ``report.json``, ``report.md``,
``report.html`` (plots embedded), ``success.png``/``precision.png`` with ground truth,
``frames.json`` (per annotated frame: its window, the events in it, every target's box and
confidence) and ``track.gif``: the event frames (:func:`render_event_frames`) with the boxes drawn
as the RGB GIF draws them.

**Inputs** (:func:`load_event_input`): a sequence folder (:mod:`spikedeploy.tracking.event_datasets`:
FE108, VisEvent or spikedeploy's layout: events, ground truth and frame times), or an event file
(:func:`spikedeploy.events.read_events`: AEDAT4, npz, npy, HDF5) with its frame times from
``frame_times`` (a text file of one microsecond timestamp per annotated frame, or ``.npy``) or,
for an AEDAT4 recording with APS frames, from its frames stream.

**Targets** (:data:`EVENT_TARGETS`): ``torch`` (the model in float32) and ``torch64`` (float64)
run :class:`~spikedeploy.tracking.event_tracker.TorchEventNetwork`. The graph targets
(``reference-*``, ``onnx``, ``lava-*``) need the frame-by-frame streaming backends
(``spikedeploy.tracking.event_backends`` on ``spikedeploy.streaming``); where this version lacks
them they are refused with one line naming them. The fixed-point targets are not event targets.

**Measured SynOps** (:func:`event_frame_audit`): in ``evaluate``'s task (:func:`event_task`) every
search frame of a graph target that exposes its spike counts (reference, ONNX, Lava) is audited as
``spikedeploy audit`` does -- the frame's counts on the search graph with the sequence's template
memory bound -- so the evaluation report's "measured SynOps" section covers event datasets.

**Weights** (:func:`load_event_tracker_model`): ``bundled`` (``spikedeploy/data/
spiketrack-event-tiny.pth``, a ``{"net": state_dict}`` file, when the package ships it),
``random`` (:func:`~spikedeploy.models.spiketrack_event.init_event_spiketrack_for_spiking`: every
layer fires, nothing is tracked) or a checkpoint file in that layout.
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from spikedeploy.errors import ConfigError, InputError
from spikedeploy.tracking.run import TrackReport

__all__ = [
    "EVENT_TARGETS", "EVENT_TORCH_TARGETS", "DEFAULT_EVENT_MODEL", "BUNDLED_EVENT_CHECKPOINT",
    "canonical_event_target", "available_event_targets", "bundled_event_checkpoint", "load_event_tracker_model",
    "make_event_network", "EventNetworkFactory", "EventInput", "load_event_input", "EventTrackReport",
    "track_event_clip", "render_event_frames", "event_frames_json", "write_event_track_outputs", "track_events",
    "event_task", "event_frame_audit", "EVENT_ON_COLOR", "EVENT_OFF_COLOR", "EVENT_BACKGROUND",
]

DEFAULT_EVENT_MODEL = "spiketrack-event-tiny"
#: the bundled trained weights of the tiny event tracker (package data, when shipped)
BUNDLED_EVENT_CHECKPOINT = "spiketrack-event-tiny.pth"
#: targets the event tracker names (aliases: reference = reference-binary, lava = lava-graded)
EVENT_TARGETS = ("torch", "torch64", "reference-integer", "reference-binary", "reference-graded", "onnx",
                 "lava-binary", "lava-graded")
EVENT_TORCH_TARGETS = ("torch", "torch64")


def _backends():
    """The event graph backends module, or None where this version does not have it."""
    import importlib.util

    if importlib.util.find_spec("spikedeploy.tracking.event_backends") is None:
        return None
    from spikedeploy.tracking import event_backends

    return event_backends


def available_event_targets() -> Tuple[str, ...]:
    """The event targets this installation runs: the PyTorch ones, plus the graph targets when the
    streaming backends are there."""
    return EVENT_TARGETS if _backends() is not None else EVENT_TORCH_TARGETS


def canonical_event_target(name: str) -> str:
    """``name`` as an event target (aliases resolved); unknown names, the fixed-point targets and
    targets this version cannot run are refused with one line."""
    from spikedeploy.tracking.run import FIXED_TARGETS, TARGET_ALIASES

    t = TARGET_ALIASES.get(name, name)
    if t in FIXED_TARGETS:
        raise ConfigError(f"target {name!r} (Loihi 2 fixed point) is not available for event tracking; event "
                          f"targets: {', '.join(EVENT_TARGETS)}")
    if t not in EVENT_TARGETS:
        raise ConfigError(f"unknown event tracking target {name!r}; expected one of "
                          f"{', '.join(list(EVENT_TARGETS) + list(TARGET_ALIASES))}")
    return t


def _check_available(targets: Sequence[str]) -> None:
    missing = [t for t in targets if t not in available_event_targets()]
    if missing:
        raise ConfigError(f"event tracking on {', '.join(missing)} needs the frame-by-frame streaming backends "
                          "(spikedeploy.tracking.event_backends), which this version does not have yet; "
                          f"use {' or '.join(EVENT_TORCH_TARGETS)}")


# ---------------------------------------------------------------------------------------------
# the model and the networks
# ---------------------------------------------------------------------------------------------


def bundled_event_checkpoint() -> Optional[Path]:
    """The path of the bundled event tracker weights, or None when the package does not ship them."""
    from importlib import resources

    p = Path(str(resources.files("spikedeploy.data") / BUNDLED_EVENT_CHECKPOINT))
    return p if p.is_file() else None


def load_event_tracker_model(model: Optional[str] = None, checkpoint: Optional[str] = None, *, seed: int = 0):
    """The event SpikeTrack ``model`` (default :data:`DEFAULT_EVENT_MODEL`) in eval mode with its
    weights, and a line saying which: ``checkpoint`` ``"bundled"`` (tiny only, when shipped),
    ``"random"`` (seeded, firing), a ``{"net": state_dict}`` file, or None (bundled where
    shipped, else random)."""
    from spikedeploy.models.spiketrack_event import init_event_spiketrack_for_spiking, spiketrack_event

    name = DEFAULT_EVENT_MODEL if model is None else str(model)
    if not name.lower().startswith("spiketrack-event"):
        raise ConfigError(f"--model {name!r} is not an event SpikeTrack; event tracking runs spiketrack-event-tiny "
                          "or spiketrack-event-full")
    net = spiketrack_event(name)
    bundled = bundled_event_checkpoint() if net.config.family.lower() == "tiny" else None
    if checkpoint is None:
        checkpoint = "bundled" if bundled is not None else "random"
    if checkpoint == "bundled":
        if bundled is None:
            raise ConfigError(f"no trained weights are bundled for {name!r} in this version"
                              + (f" (spikedeploy/data/{BUNDLED_EVENT_CHECKPOINT} is missing)"
                                 if net.config.family.lower() == "tiny" else " (only spiketrack-event-tiny ships them)")
                              + "; give --checkpoint FILE or --checkpoint random")
        _load_weights(net, bundled)
        weights = f"bundled trained weights ({bundled.name})"
    elif checkpoint == "random":
        init_event_spiketrack_for_spiking(net, seed=int(seed))
        weights = f"random (seed {int(seed)})"
    else:
        _load_weights(net, checkpoint)
        weights = f"checkpoint {checkpoint}"
    return net.eval(), weights


def _load_weights(net, path) -> None:
    from spikedeploy.checkpoint import apply_state_dict, load_checkpoint

    apply_state_dict(net, load_checkpoint(path, key="net"), source=f"checkpoint {str(path)!r}")


def make_event_network(model, target: str):
    """The :class:`~spikedeploy.tracking.event_tracker.EventTrackerNetwork` of ``target`` for the
    event SpikeTrack ``model``."""
    from spikedeploy.tracking.event_tracker import TorchEventNetwork

    target = canonical_event_target(target)
    _check_available([target])
    if target == "torch":
        return TorchEventNetwork(model)
    if target == "torch64":
        return TorchEventNetwork(copy.deepcopy(model).double())
    return _backends().make_event_network(model, target)


class EventNetworkFactory:
    """``factory(model, target)``: :func:`make_event_network`, sharing work between the graph
    targets of one model (the backends' own factory where they provide one)."""

    def __init__(self):
        self._inner = None
        b = _backends()
        if b is not None and hasattr(b, "EventNetworkFactory"):
            self._inner = b.EventNetworkFactory()

    def __call__(self, model, target: str):
        target = canonical_event_target(target)
        if target in EVENT_TORCH_TARGETS or self._inner is None:
            return make_event_network(model, target)
        return self._inner(model, target)


# ---------------------------------------------------------------------------------------------
# inputs
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class EventInput:
    """What ``track --events`` tracks: ``events`` (an EventStream), ``frame_times`` (int64 ``[N]``
    microseconds), ``ground_truth`` (``[N, 4]`` or None) and ``label`` (the source, for reports)."""

    events: object
    frame_times: np.ndarray
    ground_truth: Optional[np.ndarray]
    label: str


def _check_events_cover(events, times: np.ndarray, where: str) -> None:
    t = events.events["t"]
    i0, i1 = np.searchsorted(t, [int(times[0]), int(times[-1])], side="left")
    if i1 <= i0:
        raise InputError(f"{where}: no event lies between the first and the last frame time ({int(times[0])} .. "
                         f"{int(times[-1])} us; the events span {int(t[0])} .. {int(t[-1])} us); the frame times must be "
                         "microseconds on the events' clock")


def load_event_input(events, *, frame_times=None, ground_truth=None, sensor_size=None,
                     format: str = "auto") -> EventInput:
    """Read what to track (module docstring): ``events`` a sequence folder, an event file or an
    :class:`~spikedeploy.events.EventStream` (then ``frame_times`` is needed); ``frame_times`` a
    file or an array (it replaces a folder's own); ``ground_truth`` a file
    (:func:`~spikedeploy.tracking.run.load_boxes`) or an array, replacing a folder's own."""
    from spikedeploy.events.io import read_events
    from spikedeploy.events.stream import EventStream
    from spikedeploy.tracking import event_datasets as EDS
    from spikedeploy.tracking.run import load_boxes

    gt = None
    if isinstance(events, EventStream):
        stream, label, times = events.validate(), events.name or f"event stream of {len(events)} events", None
    else:
        path = Path(events)
        if path.is_dir():
            seq = EDS.read_event_sequence(path, format)
            stream = seq.load_events(sensor_size=sensor_size)
            times = None if frame_times is not None else seq.load_frame_times()
            gt, label = np.asarray(seq.ground_truth), str(path)
        else:
            if format not in ("auto",) + EDS.EVENT_FORMATS:
                raise ConfigError(f"unknown event dataset format {format!r}")
            stream, label = read_events(path, sensor_size=sensor_size), str(path)
            times = None
            if frame_times is None:
                if path.suffix.lower() != ".aedat4":
                    raise InputError(f"event file {path} says nothing about the annotated frames: give their times "
                                     "(--frame-times FILE, one microsecond timestamp per frame)")
                times = EDS.aedat4_frame_times(path)
    if frame_times is not None:
        if isinstance(frame_times, (str, Path)):
            times = EDS.read_frame_times(frame_times)
        else:
            times = EDS._check_times(np.asarray(frame_times).astype(np.int64, copy=False), "frame times")
    if times is None:
        raise ConfigError("track --events: give the frame times of the event stream (frame_times)")
    where = label
    _check_events_cover(stream, times, where)
    if ground_truth is not None:
        gt = (load_boxes(ground_truth, len(times)) if isinstance(ground_truth, (str, Path))
              else np.asarray(ground_truth, dtype=np.float64))
    if gt is not None and gt.shape != (len(times), 4):
        raise InputError(f"{where}: the ground truth holds {len(gt)} boxes for {len(times)} frame times; give one "
                         "box per annotated frame")
    return EventInput(stream, times, gt, label)


# ---------------------------------------------------------------------------------------------
# running
# ---------------------------------------------------------------------------------------------


@dataclass
class EventTrackReport(TrackReport):
    """:class:`~spikedeploy.tracking.run.TrackReport` of an event sequence, plus ``frame_times``
    (microseconds per annotated frame), ``events_per_frame`` (events in frame ``i``'s window
    ``[t_{i-1}, t_i)``; frame 0: the template window ``[t_0, t_1)``), ``sensor_size`` ``(W, H)``
    and ``n_bins`` (voxel bins per window). ``to_json`` includes them."""

    frame_times: List[int] = field(default_factory=list)
    events_per_frame: List[int] = field(default_factory=list)
    sensor_size: List[int] = field(default_factory=list)
    n_bins: int = 0


def _windows(times: np.ndarray) -> List[Tuple[int, int]]:
    """Frame ``i``'s window: ``[t_{i-1}, t_i)``; frame 0 shows the template's ``[t_0, t_1)``."""
    t = [int(v) for v in times]
    return [(t[0], t[1])] + [(t[i - 1], t[i]) for i in range(1, len(t))]


def _events_per_window(events, times: np.ndarray) -> List[int]:
    t = events.events["t"]
    return [int(b - a) for a, b in (np.searchsorted(t, w, side="left") for w in _windows(times))]


def _track_events_one(tracker, events, times: np.ndarray, init_box, target: str, limit: int, progress: bool):
    from tqdm.auto import tqdm

    from spikedeploy.tracking.run import TargetTrack, _digest, _last_spikes

    try:
        t0 = time.perf_counter()
        tracker.initialize(events, int(times[0]), int(times[1]), list(init_box))
        t_init = time.perf_counter() - t0
        boxes = [[float(v) for v in tracker.state]]
        scores: List[Optional[float]] = [None]
        digests: List[Optional[str]] = [None]
        totals: List[Optional[int]] = [None]
        t0 = time.perf_counter()
        with tqdm(range(1, limit), desc=f"track --events [{target}]", unit="frame", disable=not progress) as bar:
            for i in bar:
                result = tracker.track(events, int(times[i - 1]), int(times[i]))
                boxes.append([float(v) for v in result.box])
                scores.append(float(result.score))
                spikes = _last_spikes(tracker.network)
                d, n = _digest(spikes) if spikes is not None else (None, None)
                digests.append(d)
                totals.append(n)
                bar.set_postfix(score=f"{result.score:.3f}", refresh=False)
        per_frame = (time.perf_counter() - t0) / max(1, limit - 1)
    finally:
        tracker.close()
    return TargetTrack(target, boxes, scores, per_frame, t_init, digests, totals, [])


def track_event_clip(model_name: str, net, events, frame_times, init_box: Sequence[float], targets: Sequence[str], *,
                     weights: str = "", clip: str = "", ground_truth: Optional[np.ndarray] = None,
                     frame_limits: Optional[Mapping[str, int]] = None, progress: bool = False,
                     network_factory: Optional[Callable] = None, protocol: str = "otb"):
    """Track ``events`` (an EventStream) at ``frame_times`` from ``init_box`` with the event
    SpikeTrack ``net`` once per target (the first is the agreement's reference point), as
    :func:`spikedeploy.tracking.run.track_clip` does for RGB clips: ``frame_limits`` at most that
    many frames for a target, ``protocol`` scores against ``ground_truth``. Returns an
    :class:`EventTrackReport`."""
    from spikedeploy.tracking.event_tracker import EventTracker
    from spikedeploy.tracking.metrics import get_protocol
    from spikedeploy.tracking.run import _agreement, _score_run

    proto = get_protocol(protocol)
    targets = [canonical_event_target(t) for t in targets]
    if not targets:
        raise ConfigError("track --events: give at least one target")
    if len(set(targets)) != len(targets):
        raise ConfigError(f"track --events: a target is named twice in {targets}")
    _check_available(targets)
    limits = {canonical_event_target(k): int(v) for k, v in dict(frame_limits or {}).items()}
    for t, v in limits.items():
        if v < 2:
            raise ConfigError(f"track --events: the frame limit of {t} must be at least 2, got {v}")
    times = np.asarray(frame_times, dtype=np.int64)
    factory = network_factory or EventNetworkFactory()
    n = len(times)
    report = EventTrackReport(model_name, weights, clip, n, {},
                 ground_truth=None if ground_truth is None else np.asarray(ground_truth).tolist(),
                 protocol=proto.name, image_size=[events.width, events.height],
                 frame_times=[int(v) for v in times], events_per_frame=_events_per_window(events, times),
                 sensor_size=[events.width, events.height], n_bins=int(net.config.n_bins))
    for target in targets:
        tracker = EventTracker(factory(net, target))
        limit = min(n, limits.get(target, n))
        if limit < n:
            report.notes.append(f"{target} tracked the first {limit} of {n} frames (frame limit)")
        report.runs[target] = _track_events_one(tracker, events, times, init_box, target, limit, progress)
    if ground_truth is not None:
        for t, r in report.runs.items():
            report.scores[t] = _score_run(report, r.boxes, r.frames)
    first = report.runs[targets[0]]
    with_spikes = [r for r in report.runs.values() if any(d is not None for d in r.spike_digest)]
    spikes_from = with_spikes[0] if with_spikes else None
    for t in targets[1:]:
        report.agreement[t] = _agreement(first, report.runs[t], spikes_from)
    ev = np.asarray(report.events_per_frame[1:])
    report.notes.append(f"events per frame window [t_(i-1), t_i): min {int(ev.min())}, median {float(np.median(ev)):g}, "
                        f"max {int(ev.max())} ({int(ev.sum())} in all, sensor {events.width} x {events.height}, "
                        f"{report.n_bins} voxel bins per window); frames.json lists every window")
    return report


# ---------------------------------------------------------------------------------------------
# outputs
# ---------------------------------------------------------------------------------------------

#: the GIF's event colours: ON (brightness up) pale yellow, OFF pale blue, on a dark background --
#: none of them a box colour of the RGB GIF (:data:`spikedeploy.tracking.run._COLORS`)
EVENT_ON_COLOR = (255, 235, 140)
EVENT_OFF_COLOR = (110, 190, 255)
EVENT_BACKGROUND = (18, 18, 26)


def render_event_frames(events, frame_times) -> np.ndarray:
    """``[N, H, W, 3]`` uint8: frame ``i`` shows the events of its window (:func:`_windows`: ``[t_{i-1},
    t_i)``, frame 0 the template's ``[t_0, t_1)``) on the whole sensor. Per pixel with ``n_on`` ON
    and ``n_off`` OFF events: ``a = 1 - exp(-n)`` for each polarity and
    ``colour = bg + a_on (ON - bg) + a_off (OFF - bg)``, clipped to 0..255 (one event: 63 % of the
    way, three: 95 %)."""
    from spikedeploy.events.voxel import window_frames

    times = np.asarray(frame_times, dtype=np.int64)
    bg = np.asarray(EVENT_BACKGROUND, np.float64)
    on, off = np.asarray(EVENT_ON_COLOR, np.float64) - bg, np.asarray(EVENT_OFF_COLOR, np.float64) - bg
    out = np.empty((len(times), events.height, events.width, 3), np.uint8)
    for i, (a, b) in enumerate(_windows(times)):
        counts = window_frames(events, [a, b], 1, dtype=np.float64)[0, 0]  # [2, H, W]: OFF, ON
        a_off, a_on = 1.0 - np.exp(-counts[0]), 1.0 - np.exp(-counts[1])
        rgb = bg + a_on[..., None] * on + a_off[..., None] * off
        out[i] = np.clip(np.rint(rgb), 0, 255).astype(np.uint8)
    return out


def event_frames_json(report) -> dict:
    """Per annotated frame: its index, window ``[t0, t1)`` in microseconds, the events in it and
    every target's box and confidence (None where a target did not track that frame)."""
    rows = []
    for i, (a, b) in enumerate(_windows(np.asarray(report.frame_times))):
        row = {"frame": i, "t0_us": a, "t1_us": b, "events": report.events_per_frame[i],
               "role": "template window" if i == 0 else "search window"}
        for t, r in report.runs.items():
            row[t] = {"box": r.boxes[i] if i < r.frames else None, "score": r.scores[i] if i < r.frames else None,
                      "unit_spikes": r.spike_total[i] if i < len(r.spike_total) else None}
        rows.append(row)
    return {"sensor_size": report.sensor_size, "n_bins": report.n_bins, "frames": rows}


def write_event_track_outputs(report, events, output, *, gif: bool = True, overwrite: bool = False, inputs=()) -> Path:
    """Write the report into the directory ``output`` (atomically): the RGB track's files
    (:func:`spikedeploy.tracking.run.write_track_outputs`) with ``track.gif`` drawn on the event
    frames (:func:`render_event_frames`), plus ``frames.json`` (:func:`event_frames_json`)."""
    from spikedeploy.tracking.run import write_track_outputs

    frames = render_event_frames(events, report.frame_times) if gif else None
    extra = {"frames.json": (json.dumps(event_frames_json(report), indent=1) + "\n").encode("utf-8")}
    return write_track_outputs(report, frames, output, gif=gif, overwrite=overwrite, inputs=inputs, extra_files=extra)


# ---------------------------------------------------------------------------------------------
# the command (track --events)
# ---------------------------------------------------------------------------------------------


def track_events(model: Optional[str] = None, *, events, frame_times=None, init_box: Optional[Sequence[float]] = None,
                 ground_truth=None, targets: Sequence[str] = ("torch",), checkpoint: Optional[str] = None,
                 seed: int = 0, frame_limits: Optional[Dict[str, int]] = None, output=None, gif: bool = True,
                 progress: bool = False, overwrite: bool = False, sensor_size=None, format: str = "auto",
                 protocol: str = "otb", clip_label: Optional[str] = None):
    """Track the object in ``init_box`` ([x, y, w, h] at the first frame time) through the event
    input ``events`` (:func:`load_event_input`: a sequence folder, an event file with
    ``frame_times``, or an EventStream) with the event SpikeTrack ``model`` (default
    ``spiketrack-event-tiny``), once per target (:data:`EVENT_TARGETS`). ``ground_truth`` (a
    folder's own by default) gives the scores under ``protocol``; without ``init_box`` its first
    box is used. ``frame_limits``: at most that many frames for a target. Writes the reports, the
    event GIF and ``frames.json`` into ``output`` (atomically) when given. Returns an
    :class:`EventTrackReport`."""
    from spikedeploy.fsutil import check_output_dir
    from spikedeploy.tracking.metrics import get_protocol
    from spikedeploy.tracking.tracker import InvalidBoxError
    from spikedeploy.validate import check_init_box

    targets = [canonical_event_target(t) for t in targets]
    _check_available(targets)
    protocol = get_protocol(protocol).name
    file_inputs = [v for v in (events, frame_times, ground_truth, checkpoint) if isinstance(v, (str, Path))
                   and v not in ("bundled", "random")]
    if output is not None:
        check_output_dir(output, overwrite=overwrite, inputs=file_inputs)
    inp = load_event_input(events, frame_times=frame_times, ground_truth=ground_truth, sensor_size=sensor_size,
                           format=format)
    if init_box is None:
        if inp.ground_truth is None:
            raise ConfigError("track --events: give the initial box (--init-box X,Y,W,H), a sequence folder with "
                              "ground truth, or --ground-truth")
        init_box = inp.ground_truth[0].tolist()
    vals = [float(v) for v in init_box]
    if len(vals) != 4:
        raise ConfigError(f"the initial box needs X,Y,W,H, got {len(vals)} numbers")
    check_init_box(*vals, inp.events.height, inp.events.width, InvalidBoxError)
    net, weights = load_event_tracker_model(model, checkpoint, seed=seed)
    report = track_event_clip(model or DEFAULT_EVENT_MODEL, net, inp.events, inp.frame_times, vals, targets,
                              weights=weights, clip=clip_label or inp.label, ground_truth=inp.ground_truth,
                              frame_limits=frame_limits, progress=progress, protocol=protocol)
    if output is not None:
        write_event_track_outputs(report, inp.events, output, gif=gif, overwrite=overwrite, inputs=file_inputs)
    return report


# ---------------------------------------------------------------------------------------------
# the evaluation task (spikedeploy evaluate on event datasets)
# ---------------------------------------------------------------------------------------------

#: per-process caches: fingerprint -> (model, factory); (fingerprint, target) -> network; (fingerprint,
#: target) -> the audit's fan-out cache (:func:`event_frame_audit`), shared by that target's sequences
_EVENT_MODELS: Dict[str, tuple] = {}
_EVENT_NETWORKS: Dict[Tuple[str, str], object] = {}
_EVENT_FANOUTS: Dict[Tuple[str, str], dict] = {}

#: the spike encoding a graph target's counts are audited in: graded targets send one event per non-zero
#: count; the others (binary, and the integer-semantics reference-integer and ONNX, whose counts q are
#: exactly what the binary lowering fires) are audited as unit spikes
_AUDIT_ENCODING = {"reference-graded": "graded", "lava-graded": "graded"}


def event_frame_audit(network, fanout_cache: Optional[dict] = None):
    """The measured op-count audit (:func:`spikedeploy.audit.audit_graph`) of ``network``'s last
    search frame, or None where the network exposes no spike counts (the PyTorch targets):
    ``network.search_graph`` (the search graph with this sequence's template memory bound) with
    the frame's per-layer spike counts (``last_spikes``), in the target's encoding
    (:data:`_AUDIT_ENCODING`; the measured SynOps -- unit spikes x real fan-out -- are the same in
    both encodings, the graded events differ), energies at the 45 nm profile.
    ``totals["per_frame"]``: ``measured_synops``, ``energy_pj`` = E_AC * SynOps + E_MAC * host
    MACs (the first convolution on the real-valued voxel grid). ``fanout_cache``: a dict kept
    between frames and sequences of one target (the static fan-out maps computed once; a new
    template memory's are computed again)."""
    from spikedeploy.audit import audit_graph
    from spikedeploy.tracking.run import _last_spikes

    spikes = _last_spikes(network)
    graph = getattr(network, "search_graph", None)
    if not spikes or graph is None:
        return None
    encoding = _AUDIT_ENCODING.get(getattr(network, "target", ""), "binary")
    return audit_graph(graph, spike_counts=spikes, encoding=encoding, runtime="reference", fanout_cache=fanout_cache)


def _event_network(config, target: str):
    key = (config.fingerprint(), target)
    if key in _EVENT_NETWORKS:
        return _EVENT_NETWORKS[key]
    if config.fingerprint() not in _EVENT_MODELS:
        net, _ = load_event_tracker_model(config.model, config.checkpoint, seed=config.seed)
        _EVENT_MODELS.clear()  # one model per process at a time
        _EVENT_NETWORKS.clear()
        _EVENT_FANOUTS.clear()
        _EVENT_MODELS[config.fingerprint()] = (net, EventNetworkFactory())
    net, factory = _EVENT_MODELS[config.fingerprint()]
    _EVENT_NETWORKS[key] = factory(net, target)
    _EVENT_FANOUTS[key] = {}
    return _EVENT_NETWORKS[key]


def event_task(config, sequence, target: str) -> dict:
    """Track the event ``sequence`` (:class:`~spikedeploy.tracking.event_datasets.EventTrackingSequence`)
    with ``target`` for ``config`` (an :class:`~spikedeploy.tracking.benchmark.EvaluationConfig`):
    the fields of a :class:`~spikedeploy.tracking.benchmark.SequenceRecord` -- ``boxes`` (row 0
    the initial box), ``times`` (seconds per frame, the first the initialization), per-frame
    ``spike_digest``/``unit_spikes`` and measured ``synops``/``energy_pj`` per frame
    (:func:`event_frame_audit` of the search frame, a fan-out cache shared per config and target;
    None for frame 0 -- the initialization -- and where the target exposes no spike counts:
    torch, torch64), ``setup_seconds``, ``load_seconds``. Raises on failure (the engine records
    it)."""
    from spikedeploy.tracking.event_tracker import EventTracker
    from spikedeploy.tracking.run import _digest, _last_spikes

    t0 = time.perf_counter()
    events = sequence.load_events()
    times_us = sequence.load_frame_times()
    _check_events_cover(events, times_us, f"event sequence {sequence.name}")
    t_load = time.perf_counter() - t0
    t0 = time.perf_counter()
    target = canonical_event_target(target)
    network = _event_network(config, target)
    fan = _EVENT_FANOUTS.setdefault((config.fingerprint(), target), {})
    t_setup = time.perf_counter() - t0
    tracker = EventTracker(network)
    try:
        t0 = time.perf_counter()
        tracker.initialize(events, int(times_us[0]), int(times_us[1]), [float(v) for v in sequence.init_box])
        times = [time.perf_counter() - t0]
        boxes = [[float(v) for v in tracker.state]]
        digests: List[Optional[str]] = [None]
        units: List[Optional[int]] = [None]
        synops: List[Optional[float]] = [None]
        energy: List[Optional[float]] = [None]
        for i in range(1, len(times_us)):
            t0 = time.perf_counter()
            result = tracker.track(events, int(times_us[i - 1]), int(times_us[i]))
            times.append(time.perf_counter() - t0)
            boxes.append([float(v) for v in result.box])
            spikes = _last_spikes(network)
            d, n = _digest(spikes) if spikes is not None else (None, None)
            digests.append(d)
            units.append(None if n is None else int(n))
            aud = event_frame_audit(network, fan) if spikes is not None else None
            synops.append(None if aud is None else float(aud.totals["per_frame"]["measured_synops"]))
            energy.append(None if aud is None else float(aud.totals["per_frame"]["energy_pj"]))
    finally:
        tracker.close()
    return dict(boxes=boxes, times=times, spike_digest=digests, unit_spikes=units, synops=synops,
                energy_pj=energy, setup_seconds=t_setup, load_seconds=t_load)
