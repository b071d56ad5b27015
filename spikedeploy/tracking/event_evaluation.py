"""Evaluating the event SpikeTrack on held-out generated event sequences, beside the static box and
the same network with a fixed firing limit.

The sequences are :func:`spikedeploy.events.synthetic_event_sequence` of split ``"heldout"``
(photographs never used in training), seeds ``0 .. count - 1``, ``num_frames`` frames at 30 fps,
difficulty :data:`EVENT_HELDOUT_DIFFICULTY`. Each is tracked frame by frame by
:class:`~spikedeploy.tracking.event_tracker.EventTracker` around
:class:`~spikedeploy.tracking.event_tracker.TorchEventNetwork` (template from the first window
around the first ground-truth box, one search frame per annotated frame's window, the MSST state
carried over the whole sequence) and scored with the ``otb`` protocol of
:mod:`spikedeploy.tracking.metrics` exactly as the RGB held-out evaluation
(:mod:`spikedeploy.tracking.evaluation`): every frame counts, the first as the ground-truth box;
success AUC, precision at 20 px, per-sequence curves averaged over the sequences.

**Why difficulty 0.3.** The difficulty of :func:`~spikedeploy.tracking.synth.generate_sequence`
also scales the camera pan (up to ``0.8 * 24 px * difficulty`` of smooth motion), and a panning
camera makes every textured background pixel fire. Measured on held-out seeds 0..11 (median over
frames of the event density inside the target box divided by the density in the rest of the
search square): difficulty 0: 31..180 x; 0.25: 1.6..106 x; 0.35: 1.0..66 x; 0.5: 1.0..39 x; 1.0:
1.1..20 x, i.e. from 0.35 on some targets are not distinguishable from the background in events
at all (the held-out photographs include gravel, coins and text). 0.3 keeps every target visible
in events and still moves it up to 2.8 px a frame with distractors, rotation, scale change and
occlusion (the static box scores low). Recorded in every evaluation record as ``difficulty``.

**Fixed D** (:func:`fixed_d_model`): the same trained network with every DI-LIF gate set to
``gate_w = gate_b = 0``, so ``alpha = sigmoid(0) = 1/2`` and ``D = clamp(round(2 * 1/2 * D_init),
1, 2 D_init) = D_init`` for every frame (the seed's "DI-LIF -> I-LIF" ablation at the same
``1 / D_init`` output scale). Both run on the same sequences; the record holds both scores and
the mean D per DI-LIF layer.

**Per-frame statistics** (:func:`frame_statistics`): D_t per DI-LIF layer and the event density of
every tracked frame (for the audit's DI-LIF vs fixed-D plots).
"""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np
import torch

#: difficulty of the held-out event sequences (module docstring; defined with the generated datasets,
#: so that ``make-dataset --events`` writes the sequences this evaluation scores)
from spikedeploy.tracking.event_datasets import EVENT_HELDOUT_DIFFICULTY

__all__ = [
    "EVENT_HELDOUT_DIFFICULTY",
    "EVENT_HELDOUT_PROTOCOL",
    "heldout_event_sequences",
    "fixed_d_model",
    "dilif_layers",
    "track_event_boxes",
    "frame_statistics",
    "evaluate_event_model",
    "heldout_event_evaluation",
    "write_event_evaluation",
]

#: scoring protocol (:data:`spikedeploy.tracking.metrics.PROTOCOLS`)
EVENT_HELDOUT_PROTOCOL = "otb"


def heldout_event_sequences(count: int = 12, num_frames: int = 60, *, first_seed: int = 0,
                            difficulty: float = EVENT_HELDOUT_DIFFICULTY, frame_size=(240, 320)) -> list:
    """``count`` held-out event sequences (seeds ``first_seed ..``) of ``num_frames`` frames."""
    from spikedeploy.events import synthetic_event_sequence

    return [synthetic_event_sequence(first_seed + i, "heldout", num_frames, frame_size, difficulty=difficulty)
            for i in range(int(count))]


def dilif_layers(model) -> List[tuple]:
    """``(name, module)`` of every DI-LIF layer of ``model``, in module order."""
    from spikedeploy.models.spiketrack_event import EventDILIF

    return [(n, m) for n, m in model.named_modules() if isinstance(m, EventDILIF)]


def fixed_d_model(model):
    """A copy of ``model`` whose DI-LIF layers all fire with ``D = D_init`` (gates ``w = b = 0``,
    module docstring); ``model`` is not changed."""
    fixed = copy.deepcopy(model).eval()
    with torch.no_grad():
        for _, m in dilif_layers(fixed):
            m.gate_w.zero_()
            m.gate_b.zero_()
    return fixed


def track_event_boxes(tracker, sequence) -> np.ndarray:
    """Track an :class:`~spikedeploy.events.EventSequence` with ``tracker``
    (:class:`~spikedeploy.tracking.event_tracker.EventTracker`): ``[N, 4]`` boxes, the first the
    ground truth."""
    from spikedeploy.tracking.event_tracker import track_event_sequence

    boxes = track_event_sequence(tracker, sequence.events, sequence.frame_times, list(map(float, sequence.boxes[0])))
    return np.asarray(boxes, dtype=np.float64)


def frame_statistics(model, sequence) -> Dict[str, object]:
    """Track ``sequence`` with ``model`` and record per tracked frame (``i = 1 .. N-1``): ``d``
    ``[N-1, L]`` the firing limit D_t of each of the L DI-LIF layers (``layers`` their names; B = 1,
    so one D per layer and frame), ``events`` the number of events in the frame's window,
    ``density`` events per sensor pixel in the window, ``crop_density`` the mean of the search
    crop (events per pixel in the tracker's square) and ``boxes`` ``[N, 4]``."""
    from spikedeploy.tracking.event_tracker import EventTracker, TorchEventNetwork

    layers = dilif_layers(model)
    per_layer: Dict[str, List[float]] = {n: [] for n, _ in layers}
    streaming = {"on": False}

    def hook(name):
        def f(module, inputs, output):
            if streaming["on"]:
                d = module.firing_limit(inputs[0])
                per_layer[name].extend(float(v) for v in d.reshape(-1))
        return f

    handles = [m.register_forward_hook(hook(n)) for n, m in layers]
    tracker = EventTracker(TorchEventNetwork(model))
    times = sequence.frame_times
    events, density, crop_density = [], [], []
    try:
        tracker.initialize(sequence.events, int(times[0]), int(times[1]), list(map(float, sequence.boxes[0])))
        boxes = [list(tracker.state)]
        streaming["on"] = True
        for i in range(1, len(times)):
            r = tracker.track(sequence.events, int(times[i - 1]), int(times[i]))
            boxes.append(r.box)
            events.append(r.events)
            density.append(r.events / float(sequence.events.width * sequence.events.height))
            crop_density.append(float(np.mean(r.search)))
    finally:
        streaming["on"] = False
        tracker.close()
        for h in handles:
            h.remove()
    d = np.array([per_layer[n] for n, _ in layers], dtype=np.float64).T if layers else np.zeros((len(events), 0))
    return {"layers": [n for n, _ in layers], "d": d, "events": np.asarray(events, np.int64),
            "density": np.asarray(density), "crop_density": np.asarray(crop_density),
            "boxes": np.asarray(boxes, np.float64)}


def evaluate_event_model(model, sequences: Sequence, *, progress: bool = False) -> Dict[str, object]:
    """Track every sequence with ``model`` (:func:`frame_statistics`) and score it (``otb``).
    Returns ``{"tracker": TrackingScore, "static": TrackingScore, "per_sequence": [{"seed",
    "frames", "auc", "precision20", "success_rate", "static_auc", "static_precision20", "mean_d"}],
    "mean_d_per_layer": {layer: mean D over all tracked frames}, "boxes": [...], "stats": [...]}``."""
    from tqdm.auto import tqdm

    from spikedeploy.tracking.evaluation import static_boxes
    from spikedeploy.tracking.metrics import TrackingScore, score_dataset, score_sequence

    scores, static, per_seq, stats = [], [], [], []
    for seq in tqdm(sequences, desc="evaluate", unit="seq", disable=not progress):
        st = frame_statistics(model, seq)
        s = score_sequence(st["boxes"], seq.boxes, EVENT_HELDOUT_PROTOCOL, name=f"seed {seq.seed}")
        b = score_sequence(static_boxes(seq.boxes), seq.boxes, EVENT_HELDOUT_PROTOCOL, name=f"seed {seq.seed}")
        scores.append(s)
        static.append(b)
        stats.append(st)
        h, hb = s.headline(), b.headline()
        per_seq.append({"seed": int(seq.seed), "frames": s.frames, "auc": h["AUC"], "precision20": h["P@20"],
                        "success_rate": h["SR0.5"], "static_auc": hb["AUC"], "static_precision20": hb["P@20"],
                        "mean_d": float(st["d"].mean()) if st["d"].size else None,
                        "mean_density": float(st["density"].mean())})
    layers = stats[0]["layers"] if stats else []
    all_d = np.concatenate([st["d"] for st in stats], axis=0) if stats else np.zeros((0, 0))
    return {"tracker": TrackingScore.of(score_dataset(scores, EVENT_HELDOUT_PROTOCOL)),
            "static": TrackingScore.of(score_dataset(static, EVENT_HELDOUT_PROTOCOL)),
            "per_sequence": per_seq,
            "mean_d_per_layer": {n: float(all_d[:, k].mean()) for k, n in enumerate(layers)},
            "boxes": [st["boxes"] for st in stats], "stats": stats}


def _score_record(rep) -> Dict[str, object]:
    trk = rep["tracker"]
    return {"auc": trk.auc, "precision20": trk.precision20, "success_rate": trk.headline["SR0.5"],
            "mean_iou": trk.mean_iou, "frames_scored": trk.frames,
            "success_curve": [float(v) for v in trk.success], "precision_curve": [float(v) for v in trk.precision],
            "mean_d_per_layer": rep["mean_d_per_layer"]}


def heldout_event_evaluation(model, count: int = 12, num_frames: int = 60, *, progress: bool = False,
                             difficulty: float = EVENT_HELDOUT_DIFFICULTY, threads: int = 1, fixed_d: bool = True,
                             **extra) -> Dict[str, object]:
    """Evaluate ``model`` (eval mode, PyTorch) on the first ``count`` held-out event sequences
    (module docstring) with ``threads`` torch threads (restored afterwards; the boxes are then
    reproducible bit for bit), and with ``fixed_d`` the same for :func:`fixed_d_model`. Returns a
    JSON-ready record: ``auc``, ``precision20``, ``success_rate``, ``mean_iou``, ``frames_scored``,
    curves, the static box, ``mean_d_per_layer``, ``per_sequence`` (with ``fixed_d_auc`` /
    ``fixed_d_precision20``), ``fixed_d`` (its scores and mean D), the protocol, difficulty,
    ``extra`` (e.g. which weights)."""
    from spikedeploy.tracking.metrics import get_protocol

    t0 = time.perf_counter()
    saved = torch.get_num_threads()
    torch.set_num_threads(int(threads))
    try:
        seqs = heldout_event_sequences(count, num_frames, difficulty=difficulty)
        model = model.eval()
        rep = evaluate_event_model(model, seqs, progress=progress)
        rep_fixed = evaluate_event_model(fixed_d_model(model), seqs, progress=progress) if fixed_d else None
    finally:
        torch.set_num_threads(saved)
    static = rep["static"]
    per_seq = rep["per_sequence"]
    if rep_fixed is not None:
        for row, fx in zip(per_seq, rep_fixed["per_sequence"]):
            row["fixed_d_auc"], row["fixed_d_precision20"] = fx["auc"], fx["precision20"]
    record = {
        "variant": model.config.variant, **extra, "split": "heldout", "sequences": len(seqs),
        "seeds": [int(s.seed) for s in seqs], "frames_per_sequence": int(num_frames), "fps": float(seqs[0].fps),
        "difficulty": float(difficulty), "threads": int(threads),
        "protocol": EVENT_HELDOUT_PROTOCOL, "protocol_title": get_protocol(EVENT_HELDOUT_PROTOCOL).title,
        "tracker": "spikedeploy.tracking.event_tracker.EventTracker(TorchEventNetwork(model))",
        **_score_record(rep),
        "static_auc": static.auc, "static_precision20": static.precision20,
        "static_success_rate": static.headline["SR0.5"],
        "static_success_curve": [float(v) for v in static.success],
        "static_precision_curve": [float(v) for v in static.precision],
        "d_init": int(model.config.d_init),
        "per_sequence": per_seq,
    }
    if rep_fixed is not None:
        record["fixed_d"] = {"rule": "every DI-LIF gate w = b = 0: D = D_init on every frame", **_score_record(rep_fixed)}
    record["eval_seconds"] = round(time.perf_counter() - t0, 1)
    return record


def write_event_evaluation(record: Dict[str, object], out_dir, stem: str) -> Dict[str, str]:
    """Write ``<stem>_eval.json`` and ``<stem>_eval.png`` (success and precision curves: DI-LIF
    tracker, fixed D, static box; the mean D per DI-LIF layer) for a
    :func:`heldout_event_evaluation` record, atomically. Returns the paths."""
    from matplotlib.figure import Figure

    from spikedeploy.fsutil import atomic_write_bytes, atomic_write_text
    from spikedeploy.htmlreport import figure_png
    from spikedeploy.tracking.metrics import PRECISION_DISTANCES, SUCCESS_THRESHOLDS

    out = Path(out_dir)
    files = {"json": str(out / f"{stem}_eval.json"), "png": str(out / f"{stem}_eval.png")}
    atomic_write_text(files["json"], json.dumps(record, indent=2) + "\n")
    curves = [("DI-LIF tracker", record["success_curve"], record["precision_curve"], record["auc"],
               record["precision20"])]
    fx = record.get("fixed_d")
    if fx:
        curves.append((f"fixed D = {record['d_init']}", fx["success_curve"], fx["precision_curve"], fx["auc"],
                       fx["precision20"]))
    curves.append(("static box", record["static_success_curve"], record["static_precision_curve"],
                   record["static_auc"], record["static_precision20"]))
    fig = Figure(figsize=(15, 4))
    a, b, c = fig.subplots(1, 3)
    for label, succ, prec, auc, p20 in curves:
        a.plot(SUCCESS_THRESHOLDS, succ, label=f"{label} [AUC {auc:.3f}]")
        b.plot(PRECISION_DISTANCES, prec, label=f"{label} [P@20 {p20:.3f}]")
    title = f"{record['variant']}, {record['sequences']} held-out event sequences ({record['frames_scored']} frames)"
    a.set(xlabel="IoU threshold", ylabel="success rate", title=f"success: {title}", ylim=(0, 1.02))
    b.set(xlabel="center error threshold (px)", ylabel="precision",
          title=f"precision ({record['protocol']} protocol, difficulty {record['difficulty']})", ylim=(0, 1.02))
    a.legend()
    b.legend()
    names = list(record["mean_d_per_layer"])
    pos = np.arange(len(names))
    c.bar(pos - 0.2, [record["mean_d_per_layer"][n] for n in names], 0.4, label="DI-LIF (trained gates)")
    if fx:
        c.bar(pos + 0.2, [fx["mean_d_per_layer"][n] for n in names], 0.4, label="fixed D")
    c.set_xticks(pos, [n.replace("encoder.blocks.", "b").replace("attn.", "").replace("mlp.", "") for n in names],
                 rotation=60, fontsize=7)
    c.set(ylabel="mean D per frame", title="firing limit per DI-LIF layer")
    c.legend()
    fig.tight_layout()
    atomic_write_bytes(files["png"], figure_png(fig, dpi=90))
    return files
