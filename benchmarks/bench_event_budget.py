"""The adaptive spike budget of the event tracker measured (issue 16, "Measured"): DI-LIF against the
same network with a fixed firing limit, SynOps and accuracy on the same held-out event sequences.
Not a test: run it by hand (one torch thread; about 5 minutes for the default on one free core),

    .venv/bin/python benchmarks/bench_event_budget.py                          # 12 x 60 frames
    .venv/bin/python benchmarks/bench_event_budget.py --sequences 2 --frames 10  # a quick look
    .venv/bin/python benchmarks/bench_event_budget.py --checkpoint FILE.pth      # other weights

Sequences: :func:`spikedeploy.tracking.event_evaluation.heldout_event_sequences` (split
``heldout``: photographs never used in training, seeds ``0 .. N-1``, 30 fps, 240 x 320 sensor,
difficulty :data:`~spikedeploy.tracking.event_datasets.EVENT_HELDOUT_DIFFICULTY`): the sequences
``spikedeploy make-dataset --events`` writes and the held-out evaluation scores.

Variants (the same weights, ``--checkpoint``, default the bundled ``spiketrack-event-tiny.pth``):

* ``dilif``: the trained network, every DI-LIF layer choosing its firing limit per frame,
  ``D = clamp(round(2 sigmoid(w mean(X) + b) D_init), 1, 2 D_init)``;
* ``fixed_d``: :func:`~spikedeploy.tracking.event_evaluation.fixed_d_model` (every gate ``w = b =
  0``: ``D = D_init`` on every frame, the seed's "DI-LIF -> I-LIF" ablation).

Each variant tracks every sequence on the graph target ``--target`` (default ``reference-integer``:
the integer network of the IR in float64, exact integer spike counts; its boxes equal torch64's)
with :class:`~spikedeploy.tracking.event_tracker.EventTracker` (template from ``[t_0, t_1)``, one
search step per frame with every membrane carried: MSST), and every search frame is audited as
``spikedeploy evaluate`` does (:func:`spikedeploy.tracking.event_run.event_frame_audit`: measured
SynOps = unit spikes x real fan-out on the search graph with the sequence's template memory;
energy at 45 nm = 0.9 pJ x SynOps + 4.6 pJ x host MACs, the host MACs being the first convolution
on the real-valued voxel grid, the same for both variants). The firing limits D_t come from the
same network in float64 PyTorch (:func:`~spikedeploy.tracking.event_evaluation.frame_statistics`
on ``model.double()``, the torch64 target); its boxes are compared with the graph target's frame
by frame (``torch64_identical_frames``: with reference-integer they are all identical, so its D_t
are the graph run's).

Scores: the ``otb`` protocol as the held-out evaluation (every frame counts, the first as the
ground-truth box; success AUC, precision at 20 px over the sequences' curves), the static box
beside them. Per variant: AUC, P@20, mean SynOps per tracked frame (frames 1 .. N-1 of every
sequence), energy per frame (total and its SynOps part), mean D over the DI-LIF layers and frames,
unit spikes per frame; and the ratios DI-LIF / fixed D.

Writes ``event_budget.json`` and ``event_budget.md`` into ``--out`` (default
``benchmarks/results``), each atomically (:mod:`spikedeploy.fsutil`; a rerun replaces them).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import re
import sys
import time
from pathlib import Path
from typing import Dict, List

import numpy as np
import torch

from spikedeploy.errors import ConfigError
from spikedeploy.fsutil import atomic_write_text
from spikedeploy.ir import ops as O
from spikedeploy.tracking.event_datasets import EVENT_HELDOUT_DIFFICULTY
from spikedeploy.tracking.event_evaluation import (EVENT_HELDOUT_PROTOCOL, dilif_layers, fixed_d_model,
                                                   frame_statistics, heldout_event_sequences)
from spikedeploy.tracking.event_run import (EVENT_TORCH_TARGETS, bundled_event_checkpoint, canonical_event_target,
                                            event_frame_audit, load_event_tracker_model, make_event_network)
from spikedeploy.tracking.event_tracker import EventTracker
from spikedeploy.tracking.evaluation import static_boxes
from spikedeploy.tracking.benchmark import _file_digest
from spikedeploy.tracking.metrics import TrackingScore, score_dataset, score_sequence
from spikedeploy.tracking.run import _digest, _last_spikes

STEM = "event_budget"
VARIANTS = ("dilif", "fixed_d")
TITLES = {"dilif": "DI-LIF (trained gates)", "fixed_d": "fixed D = D_init"}


def dilif_fed_synops(aud, dilif: set) -> float:
    """The measured SynOps of the audit's spike-driven rows fed by a DI-LIF layer (a row's
    ``source``: its neurons, ``", "``-joined; attention ``"k × v"``): the part of the budget a
    firing limit can change directly."""
    return float(sum(l.measured_synops for l in aud.layers if l.kind in ("synapse", "attention")
                     and dilif & set(re.split(r", | × ", l.source))))


def track_graph(model, target: str, sequences, bar) -> List[Dict[str, object]]:
    """Track every sequence with ``model`` on ``target`` (one network, a fan-out cache shared by the
    sequences, as evaluate's worker keeps them); per sequence: boxes ``[N, 4]``, per tracked frame
    SynOps (all, and those fed by DI-LIF layers), energy (total and SynOps part, pJ), host MACs,
    unit spikes, and the seconds spent tracking and auditing."""
    network = make_event_network(model, target)
    fan: dict = {}
    out = []
    try:
        for seq in sequences:
            tracker = EventTracker(network)
            times = seq.frame_times
            rec = {"synops": [], "dilif_fed_synops": [], "energy_pj": [], "energy_synops_pj": [], "host_macs": [],
                   "unit_spikes": [],
                   "track_s": 0.0, "audit_s": 0.0}
            t0 = time.perf_counter()
            tracker.initialize(seq.events, int(times[0]), int(times[1]), [float(v) for v in seq.boxes[0]])
            boxes = [[float(v) for v in tracker.state]]
            rec["track_s"] += time.perf_counter() - t0
            for i in range(1, len(times)):
                t0 = time.perf_counter()
                r = tracker.track(seq.events, int(times[i - 1]), int(times[i]))
                t1 = time.perf_counter()
                boxes.append([float(v) for v in r.box])
                aud = event_frame_audit(network, fan)
                if aud is None:
                    raise ConfigError(f"target {target!r} exposes no spike counts: give a graph target "
                                      "(reference-integer, reference-binary, reference-graded, onnx, lava-*)")
                f = aud.totals["per_frame"]
                rec["synops"].append(float(f["measured_synops"]))
                dilif = {n.name for n in network.search_graph.nodes if isinstance(n.op, O.DynamicIntegerLIF)}
                rec["dilif_fed_synops"].append(dilif_fed_synops(aud, dilif))
                rec["energy_pj"].append(float(f["energy_pj"]))
                rec["energy_synops_pj"].append(float(f["energy_synops_pj"]))
                rec["host_macs"].append(float(f["host_macs"]))
                rec["unit_spikes"].append(int(_digest(_last_spikes(network))[1]))
                rec["track_s"] += t1 - t0
                rec["audit_s"] += time.perf_counter() - t1
                bar.update(1)
            rec["boxes"] = np.asarray(boxes, dtype=np.float64)
            out.append(rec)
    finally:
        network.close()
    return out


def run_variant(name: str, model, target: str, sequences, bar) -> Dict[str, object]:
    """One variant on every sequence: the graph target's track and audit, the torch64 statistics
    (D_t per DI-LIF layer; boxes compared), the scores; and, for comparison with the held-out
    evaluation record (PyTorch float32), the float32 model's scores on the same sequences."""
    t_start = time.perf_counter()
    graph = track_graph(model, target, sequences, bar)
    t_graph = time.perf_counter() - t_start
    t0 = time.perf_counter()
    model64 = copy.deepcopy(model).double().eval()
    stats = []
    for seq in sequences:
        stats.append(frame_statistics(model64, seq))
        bar.update(len(seq) - 1)
    t_torch = time.perf_counter() - t0
    t0 = time.perf_counter()
    f32 = []
    for seq in sequences:
        f32.append(score_sequence(frame_statistics(model, seq)["boxes"], seq.boxes, EVENT_HELDOUT_PROTOCOL,
                                  name=f"seed {seq.seed}"))
        bar.update(len(seq) - 1)
    f32_total = TrackingScore.of(score_dataset(f32, EVENT_HELDOUT_PROTOCOL))
    t_f32 = time.perf_counter() - t0
    layers = stats[0]["layers"]
    scores, per_seq = [], []
    identical = compared = 0
    for seq, g, st in zip(sequences, graph, stats):
        s = score_sequence(g["boxes"], seq.boxes, EVENT_HELDOUT_PROTOCOL, name=f"seed {seq.seed}")
        scores.append(s)
        same = [bool(np.array_equal(a, b)) for a, b in zip(g["boxes"][1:], st["boxes"][1:])]
        identical += sum(same)
        compared += len(same)
        h = s.headline()
        per_seq.append({"seed": int(seq.seed), "auc": h["AUC"], "precision20": h["P@20"],
                        "synops_per_frame": float(np.mean(g["synops"])),
                        "energy_uj_per_frame": float(np.mean(g["energy_pj"])) * 1e-6,
                        "mean_d": float(st["d"].mean()), "mean_events_per_frame": float(st["events"].mean()),
                        "torch64_identical_frames": int(sum(same))})
    total = TrackingScore.of(score_dataset(scores, EVENT_HELDOUT_PROTOCOL))
    cat = {k: np.concatenate([np.asarray(g[k], dtype=np.float64) for g in graph])
           for k in ("synops", "dilif_fed_synops", "energy_pj", "energy_synops_pj", "host_macs", "unit_spikes")}
    d = np.concatenate([st["d"] for st in stats], axis=0)  # [frames, layers]
    frames = int(cat["synops"].shape[0])
    return {
        "title": TITLES[name],
        "auc": total.auc, "precision20": total.precision20, "success_rate": total.headline["SR0.5"],
        "frames_scored": total.frames,
        "tracked_frames": frames,
        "synops_per_frame": float(cat["synops"].mean()),
        "synops_per_frame_min": float(cat["synops"].min()), "synops_per_frame_max": float(cat["synops"].max()),
        "dilif_fed_synops_per_frame": float(cat["dilif_fed_synops"].mean()),
        "energy_uj_per_frame": float(cat["energy_pj"].mean()) * 1e-6,
        "energy_synops_uj_per_frame": float(cat["energy_synops_pj"].mean()) * 1e-6,
        "host_macs_per_frame": float(cat["host_macs"].mean()),
        "unit_spikes_per_frame": float(cat["unit_spikes"].mean()),
        "mean_d": float(d.mean()),
        "mean_d_per_layer": {n: float(d[:, k].mean()) for k, n in enumerate(layers)},
        "d_range": [float(d.min()), float(d.max())],
        "frames_where_d_changed": int(sum(bool((st["d"][i] != st["d"][i - 1]).any())
                                          for st in stats for i in range(1, len(st["d"])))),
        "frame_pairs": int(sum(max(0, len(st["d"]) - 1) for st in stats)),
        "torch64_identical_frames": int(identical), "torch64_compared_frames": int(compared),
        "torch_float32": {"auc": f32_total.auc, "precision20": f32_total.precision20},
        "per_sequence": per_seq,
        "per_frame_synops": [[float(v) for v in g["synops"]] for g in graph],
        "seconds": {"graph_track": round(sum(g["track_s"] for g in graph), 2),
                    "audit": round(sum(g["audit_s"] for g in graph), 2),
                    "graph_total": round(t_graph, 2), "torch64_statistics": round(t_torch, 2),
                    "torch_float32": round(t_f32, 2)},
    }


def _ratio(a, b):
    return None if a is None or b in (None, 0) else float(a) / float(b)


def _f(v, nd=3):
    return "—" if v is None else f"{v:.{nd}f}"


def markdown(rec: Dict[str, object]) -> str:
    c = rec["config"]
    v = rec["variants"]
    lines = [
        "# Event tracker: adaptive spike budget (DI-LIF) against a fixed D",
        "",
        f"`{c['model']}` with {c['weights']} (sha256 `{c['checkpoint_sha256'][:16]}…`) on {c['sequences']} held-out "
        f"generated event sequences x {c['frames']} frames (seeds {c['seeds'][0]}..{c['seeds'][-1]}, difficulty "
        f"{c['difficulty']:g}, {c['protocol']} protocol), tracked on `{c['target']}`; SynOps measured per search frame "
        "(`spikedeploy evaluate`'s audit: unit spikes x real fan-out), energy at 45 nm (0.9 pJ per SynOp, 4.6 pJ per "
        f"host MAC). Written by `benchmarks/bench_event_budget.py` ({rec['seconds_total']:.0f} s, one torch thread).",
        "",
        "| variant | AUC | P@20 | SynOps / frame | of it fed by DI-LIF | energy µJ / frame | of it SynOps µJ | "
        "unit spikes / frame | mean D |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for k in VARIANTS:
        r = v[k]
        lines.append(f"| {r['title']} | {_f(r['auc'])} | {_f(r['precision20'])} | {r['synops_per_frame']:,.0f} | "
                     f"{r['dilif_fed_synops_per_frame']:,.0f} | {r['energy_uj_per_frame']:.2f} | "
                     f"{r['energy_synops_uj_per_frame']:.2f} | {r['unit_spikes_per_frame']:,.0f} | {r['mean_d']:.3f} |")
    s = rec["static"]
    lines.append(f"| static box | {_f(s['auc'])} | {_f(s['precision20'])} | — | — | — | — | — | — |")
    q = rec["ratio_dilif_over_fixed"]
    lines.append(f"| **ratio DI-LIF / fixed** | {_f(q['auc'])} | {_f(q['precision20'])} | "
                 f"{_f(q['synops_per_frame'])} | "
                 f"{_f(q['dilif_fed_synops_per_frame'])} | {_f(q['energy_uj_per_frame'])} | "
                 f"{_f(q['energy_synops_uj_per_frame'])} | {_f(q['unit_spikes_per_frame'])} | {_f(q['mean_d'])} |")
    lines += [
        "",
        "\"Fed by DI-LIF\": the SynOps of the synapses and attention reads whose source neurons are DI-LIF layers "
        "(the transformer stage), the part a firing limit changes directly; the rest are fed by I-LIF layers: the conv "
        "stage (changed only through the tracked crops) and the head (changed through its input, the transformer's "
        "output).",
        "",
        f"Host MACs per frame (the first convolution on the voxel grid, the same for both): "
        f"{v['dilif']['host_macs_per_frame']:,.0f} ({v['dilif']['host_macs_per_frame'] * 4.6e-6:.2f} µJ): most of "
        "the energy per frame, which is why the energy ratio is closer to 1 than the SynOps ratio.",
        "",
        "| variant | D range | frames whose D differs from the previous frame's (some layer) | boxes identical to "
        "torch64 | PyTorch float32 AUC / P@20 | seconds (track / audit / torch64 D / float32) |",
        "|---|---|---:|---:|---|---|",
    ]
    for k in VARIANTS:
        r = v[k]
        sec = r["seconds"]
        lines.append(f"| {r['title']} | {r['d_range'][0]:g} .. {r['d_range'][1]:g} | {r['frames_where_d_changed']}"
                     f"/{r['frame_pairs']} | {r['torch64_identical_frames']}/"
                     f"{r['torch64_compared_frames']} | {_f(r['torch_float32']['auc'])} / "
                     f"{_f(r['torch_float32']['precision20'])} | {sec['graph_track']:.1f} / {sec['audit']:.1f} / "
                     f"{sec['torch64_statistics']:.1f} / {sec['torch_float32']:.1f} |")
    lines += ["", "The held-out evaluation record (`spikedeploy/data/spiketrack-event-tiny_eval.json`) tracks in "
              "PyTorch "
              "float32: a tracker's boxes feed its next crops, so one spike count flipped by float32 rounding changes "
              "the rest of the track, and the float32 scores differ from the exact integer network's above."]
    lines += ["", "## Per sequence", "",
              "| seed | AUC DI-LIF | AUC fixed | P@20 DI-LIF | P@20 fixed | SynOps DI-LIF | SynOps fixed | ratio | "
              "mean D DI-LIF | events / frame |",
              "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for a, b in zip(v["dilif"]["per_sequence"], v["fixed_d"]["per_sequence"]):
        lines.append(f"| {a['seed']} | {_f(a['auc'])} | {_f(b['auc'])} | {_f(a['precision20'])} | "
                     f"{_f(b['precision20'])} | {a['synops_per_frame']:,.0f} | {b['synops_per_frame']:,.0f} | "
                     f"{_ratio(a['synops_per_frame'], b['synops_per_frame']):.3f} | {a['mean_d']:.3f} | "
                     f"{a['mean_events_per_frame']:,.0f} |")
    lines += ["", "## Mean D per DI-LIF layer", "", "| layer | DI-LIF | fixed |", "|---|---:|---:|"]
    for n, dv in v["dilif"]["mean_d_per_layer"].items():
        lines.append(f"| `{n}` | {dv:.3f} | {v['fixed_d']['mean_d_per_layer'][n]:.3f} |")
    lines += ["", f"Rerun: `{rec['command']}`", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default="bundled",
                   help="event tracker weights: 'bundled' (default) or a {'net': state_dict} file")
    p.add_argument("--model", default="spiketrack-event-tiny", help="event SpikeTrack model (default: %(default)s)")
    p.add_argument("--sequences", type=int, default=12, help="held-out sequences (default: %(default)s)")
    p.add_argument("--frames", type=int, default=60, help="frames per sequence (default: %(default)s)")
    p.add_argument("--difficulty", type=float, default=EVENT_HELDOUT_DIFFICULTY,
                   help="difficulty of the sequences (default: %(default)s, the held-out evaluation's)")
    p.add_argument("--target", default="reference-integer", help="graph target to track on (default: %(default)s)")
    p.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"),
                   help="folder of event_budget.json/.md (default: benchmarks/results)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    from tqdm.auto import tqdm

    target = canonical_event_target(args.target)
    if target in EVENT_TORCH_TARGETS:
        raise SystemExit(f"--target {target}: a PyTorch target exposes no spike counts; give a graph target")
    if args.sequences < 1 or args.frames < 2:
        raise SystemExit("--sequences must be >= 1 and --frames >= 2")
    torch.set_num_threads(1)
    t_start = time.perf_counter()
    model, weights = load_event_tracker_model(args.model, args.checkpoint)
    ckpt = bundled_event_checkpoint() if args.checkpoint == "bundled" else Path(args.checkpoint)
    if not dilif_layers(model):
        raise SystemExit(f"{args.model} has no DI-LIF layers: nothing to compare")
    t0 = time.perf_counter()
    seqs = heldout_event_sequences(args.sequences, args.frames, difficulty=args.difficulty)
    t_seqs = time.perf_counter() - t0
    variants = {"dilif": model, "fixed_d": fixed_d_model(model)}
    per_variant = 3 * sum(len(s) - 1 for s in seqs)  # graph track, torch64 statistics, float32 scores
    results = {}
    with tqdm(total=per_variant * len(variants), desc="event budget", unit="frame", disable=args.no_progress) as bar:
        for name, m in variants.items():
            bar.set_postfix(variant=name, refresh=False)
            results[name] = run_variant(name, m, target, seqs, bar)
    static = TrackingScore.of(score_dataset(
        [score_sequence(static_boxes(s.boxes), s.boxes, EVENT_HELDOUT_PROTOCOL, name=f"seed {s.seed}") for s in seqs],
        EVENT_HELDOUT_PROTOCOL))
    a, b = results["dilif"], results["fixed_d"]
    keys = ("auc", "precision20", "synops_per_frame", "dilif_fed_synops_per_frame", "energy_uj_per_frame",
            "energy_synops_uj_per_frame", "unit_spikes_per_frame", "mean_d")
    command = " ".join([".venv/bin/python", "benchmarks/bench_event_budget.py"] + list(sys.argv[1:] if argv is None
                                                                                    else argv))
    rec = {
        "config": {"model": args.model, "weights": weights, "checkpoint": str(ckpt),
                   "checkpoint_sha256": _file_digest(ckpt), "target": target, "sequences": len(seqs),
                   "frames": int(args.frames), "seeds": [int(s.seed) for s in seqs], "split": "heldout",
                   "difficulty": float(args.difficulty), "protocol": EVENT_HELDOUT_PROTOCOL,
                   "d_init": int(model.config.d_init), "energy_profile": "45nm", "torch_threads": 1},
        "variants": results,
        "static": {"auc": static.auc, "precision20": static.precision20},
        "ratio_dilif_over_fixed": {k: _ratio(a[k], b[k]) for k in keys},
        "machine": {"python": platform.python_version(), "torch": torch.__version__, "cpus": os.cpu_count(),
                    "load_average": list(os.getloadavg())},
        "seconds_sequences": round(t_seqs, 2),
        "seconds_total": round(time.perf_counter() - t_start, 1),
        "command": command,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / f"{STEM}.json", json.dumps(rec, indent=1) + "\n")
    atomic_write_text(out / f"{STEM}.md", markdown(rec))
    print(markdown(rec).split("\n\n## Per sequence")[0])
    print(f"\nwrote {out / (STEM + '.json')} and {out / (STEM + '.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
