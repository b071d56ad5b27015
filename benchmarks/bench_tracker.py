"""The bundled trained tracker on the bundled clip, frame by frame, on every target: seconds per
frame as ratios to the PyTorch integer model measured in the same run. Not a test: run it by hand,

    .venv/bin/python benchmarks/bench_tracker.py [--templates 1|3] [--frames 60] [--lava-frames 10]
        [--targets torch,torch64,reference-graded,reference-binary,onnx,lava] [--partitions auto]
        [--json FILE]

It is ``spikedeploy track`` (:func:`spikedeploy.tracking.run.track_clip`, as ``api.track`` calls it)
with the bundled weights and the demo clip (``demo_clip``, held-out sequence 0): each target tracks
the clip from the same first box, so the times include the host steps (crops, window, decoding)
and, for Lava, the per-frame simulator start. Also printed: each target's agreement with the
first target (identical boxes, identical per-layer spike counts where both expose them) and its
success AUC on the frames it tracked. The network set-up (capture, export, compilation) is
reported apart from the per-frame time. For Lava targets: the placement (``--partitions``, see
``spikedeploy.exporters.lava_placement``), the OS processes of a search-frame run and its Lava
steps. ``--json FILE`` writes all of it per target (seconds per frame, ratio to the first target,
frames, OS processes, Lava steps per frame, ...) with the machine's CPU count and load average.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch

from spikedeploy.models.spiketrack import default_tracker_checkpoint, load_spiketrack_checkpoint, spiketrack
from spikedeploy.tracking.synth import demo_clip
from spikedeploy.tracking.run import canonical_target, make_network, spike_summary, track_clip


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--templates", type=int, default=1, choices=[1, 3], help="bundled T (default: %(default)s)")
    p.add_argument("--frames", type=int, default=60, help="clip frames on the fast targets (default: %(default)s)")
    p.add_argument("--lava-frames", type=int, default=10, help="frames on the Lava targets (default: %(default)s)")
    p.add_argument("--targets", default="torch,torch64,reference-graded,reference-binary,onnx,lava",
                   help="comma-separated targets, the first is the baseline (default: %(default)s)")
    p.add_argument("--partitions", default="auto", help="placement of the Lava targets (default: %(default)s)")
    p.add_argument("--json", default=None, metavar="FILE", help="also write the results as JSON to FILE")
    args = p.parse_args(argv)
    targets = [canonical_target(t.strip()) for t in args.targets.split(",") if t.strip()]
    frames, boxes = demo_clip(num_frames=args.frames)
    limits = {t: args.lava_frames for t in targets if t.startswith("lava")}
    load_before = os.getloadavg()[0]
    name = f"spiketrack-tiny128-t{args.templates}"
    model = spiketrack(name)
    ckpt = default_tracker_checkpoint(args.templates)
    load_spiketrack_checkpoint(model, str(ckpt))
    nets, captured = {}, {}

    def factory(net, target):  # tracking.run's default factory, keeping the networks
        if target.startswith("torch"):
            nets[target] = make_network(net, target)
        else:
            if "graphs" not in captured:
                from spikedeploy.tracking.backends import capture_spiketrack

                captured["graphs"] = capture_spiketrack(net)
            opts = {"partitions": args.partitions} if target.startswith("lava") else None
            nets[target] = make_network(net, target, lava_options=opts, graphs=captured["graphs"])
        return nets[target]

    rep = track_clip(name, model, frames, boxes[0].tolist(), targets, weights=f"bundled trained weights ({ckpt.name})",
                     clip=f"demo clip ({args.frames} frames)", ground_truth=boxes, frame_limits=limits,
                     network_factory=factory)
    base = rep.runs[targets[0]].seconds_per_frame
    print(f"{rep.model} ({rep.weights}) on {rep.clip}, torch threads {torch.get_num_threads()}, "
          f"{os.cpu_count()} CPUs, load average {load_before:.2f}")
    print(f"{'target':<18} {'frames':>6} {'s / frame':>10} {'x ' + targets[0]:>10} {'set-up s':>9} {'AUC':>6} "
          f"{'OS procs':>8} {'steps':>6}  agreement")
    out = {}
    for t, r in rep.runs.items():
        s = rep.scores.get(t)
        a = rep.agreement.get(t)
        agree = "-" if a is None else (("boxes identical" if a["all_boxes_identical"] else "boxes differ")
                                       + (f", spikes {spike_summary(a)}" if spike_summary(a) else ""))
        info = getattr(nets.get(t), "last_run", None)
        info = info.info if info is not None and hasattr(info, "info") else {}
        row = {"seconds_per_frame": r.seconds_per_frame, "ratio": r.seconds_per_frame / base, "frames": r.frames,
               "setup_s": r.init_seconds, "auc": s["auc"] if s else None,
               "os_processes": info.get("os_processes"), "lava_steps_per_frame": info.get("lava_steps_per_frame"),
               "partitions": info.get("partitions"), "lava_processes": info.get("lava_processes"),
               "bundle_processes": info.get("processes"), "lava_phase_s_last_frame": info.get("lava_phase_s"),
               "boxes_identical": None if a is None else a["all_boxes_identical"],
               "spikes": spike_summary(a) if a else None}
        out[t] = row
        procs = "-" if row["os_processes"] is None else str(row["os_processes"])
        steps = "-" if row["lava_steps_per_frame"] is None else f"{row['lava_steps_per_frame']:g}"
        print(f"{t:<18} {r.frames:>6} {r.seconds_per_frame:>10.3f} {row['ratio']:>10.1f} "
              f"{r.init_seconds:>9.2f} {s['auc'] if s else float('nan'):>6.3f} {procs:>8} {steps:>6}  {agree}")
    load_after = os.getloadavg()[0]
    print(f"load average after: {load_after:.2f}")
    if args.json:
        doc = {"model": rep.model, "weights": rep.weights, "clip": rep.clip, "baseline": targets[0],
               "partitions": args.partitions,
               "machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                           "load_before": load_before, "load_after": load_after},
               "targets": out}
        Path(args.json).write_text(json.dumps(doc, indent=1))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
