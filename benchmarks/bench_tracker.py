"""The bundled trained tracker on the bundled clip, frame by frame, on every target: seconds per
frame as ratios to the PyTorch integer model measured in the same run. Not a test: run it by hand,

    .venv/bin/python benchmarks/bench_tracker.py [--templates 1|3] [--frames 60] [--lava-frames 10]
        [--targets torch,torch64,reference-graded,reference-binary,onnx,lava]

It is ``spikedeploy track`` (``api.track``) with the bundled weights and the demo clip
(``demo_clip``, held-out sequence 0): each target tracks the clip from the same first box, so the
times include the host steps (crops, window, decoding) and, for Lava, the per-frame simulator
start. Also printed: each target's agreement with torch (identical boxes, identical per-layer
spike counts where both expose them) and its success AUC on the frames it tracked. The network
set-up (capture, export, compilation) is reported apart from the per-frame time.
"""

from __future__ import annotations

import argparse

import torch

from spikedeploy import api
from spikedeploy.models.spiketrack import demo_clip
from spikedeploy.trackrun import canonical_target, spike_summary


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--templates", type=int, default=1, choices=[1, 3], help="bundled T (default: %(default)s)")
    p.add_argument("--frames", type=int, default=60, help="clip frames on the fast targets (default: %(default)s)")
    p.add_argument("--lava-frames", type=int, default=10, help="frames on the Lava targets (default: %(default)s)")
    p.add_argument("--targets", default="torch,torch64,reference-graded,reference-binary,onnx,lava",
                   help="comma-separated targets, the first is the baseline (default: %(default)s)")
    args = p.parse_args(argv)
    targets = [canonical_target(t.strip()) for t in args.targets.split(",") if t.strip()]
    frames, boxes = demo_clip(num_frames=args.frames)
    limits = {t: args.lava_frames for t in targets if t.startswith("lava")}
    rep = api.track(f"spiketrack-tiny128-t{args.templates}", clip=frames, ground_truth=boxes, targets=targets,
                    frame_limits=limits, clip_label=f"demo clip ({args.frames} frames)")
    base = rep.runs[targets[0]].seconds_per_frame
    print(f"{rep.model} ({rep.weights}) on {rep.clip}, torch threads {torch.get_num_threads()}")
    print(f"{'target':<18} {'frames':>6} {'s / frame':>10} {'x ' + targets[0]:>10} {'set-up s':>9} {'AUC':>6}  agreement")
    for t, r in rep.runs.items():
        s = rep.scores.get(t)
        a = rep.agreement.get(t)
        agree = "-" if a is None else (("boxes identical" if a["all_boxes_identical"] else "boxes differ")
                                       + (f", spikes {spike_summary(a)}" if spike_summary(a) else ""))
        print(f"{t:<18} {r.frames:>6} {r.seconds_per_frame:>10.3f} {r.seconds_per_frame / base:>10.1f} "
              f"{r.init_seconds:>9.2f} {s['auc'] if s else float('nan'):>6.3f}  {agree}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
