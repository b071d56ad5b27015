"""``spikedeploy evaluate`` scale-out: sequences per second with 1 and with N workers on the same
generated benchmark, the torch target, in the same run. Not a test: run it by hand on quiet cores,

    .venv/bin/python benchmarks/bench_evaluate.py [--sequences 12] [--frames 60] [--workers 2]
        [--target torch] [--repeat 2] [--json FILE]

It writes a generated OTB-layout dataset (``make_dataset``, held-out photographs, JPEG frames as
the benchmarks ship them) into a temporary folder and evaluates it into fresh output folders:
``workers=1`` runs the tasks in this process (one PyTorch thread per task, as every evaluate task),
``workers=N`` on an embedded local Ray with N CPUs. The wall time includes everything a user
waits for — Ray's start, the model set-up in every worker, reading the frames, tracking, writing
results and the report — and is the best of ``--repeat`` runs. Also given: the span from the
first task's start to the last task's end (the tasks' own clocks: what scaling does once Ray and
the workers run; the tasks' model set-up is inside it), the ratios N / 1 of both (the goal is >= 1.7
with 2 workers), the per-frame time of the PyTorch model itself in this process (the
in-process run's tracking time / frames) and the scores of every run (they must be identical).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sequences", type=int, default=12, help="generated sequences (default: %(default)s)")
    p.add_argument("--frames", type=int, default=60, help="frames per sequence (default: %(default)s)")
    p.add_argument("--workers", type=int, default=2, help="workers of the scaled run (default: %(default)s)")
    p.add_argument("--target", default="torch", help="the target tracked (default: %(default)s)")
    p.add_argument("--repeat", type=int, default=2, help="runs per setting, the best is kept (default: %(default)s)")
    p.add_argument("--json", default=None, metavar="FILE", help="also write the results as JSON to FILE")
    args = p.parse_args(argv)

    from spikedeploy.tracking.benchmark import evaluate
    from spikedeploy.tracking.datasets import make_dataset

    load_before = os.getloadavg()[0]
    tmp = Path(tempfile.mkdtemp(prefix="bench-evaluate-"))
    try:
        ds = make_dataset(tmp / "data", count=args.sequences, num_frames=args.frames)
        runs = {}
        for workers in (1, args.workers):
            best = None
            for r in range(max(1, args.repeat)):
                out = tmp / f"out-{workers}-{r}"
                t0 = time.perf_counter()
                rep = evaluate(ds, targets=[args.target], output=out, workers=workers)
                wall = time.perf_counter() - t0
                recs = [json.loads(f.read_text()) for f in sorted((out / "records").glob("*/*.json"))]
                track_s = sum(sum(r_["times"]) for r_ in recs)
                span = max(r_["finished"] for r_ in recs) - min(r_["started"] for r_ in recs)
                if best is None or wall < best["wall_s"]:
                    best = {"wall_s": wall, "sequences_per_s": len(ds) / wall, "tracking_s_summed": track_s,
                            "task_span_s": span, "sequences_per_s_tasks": len(ds) / span,
                            "setup_s_summed": sum(r_["setup_seconds"] for r_ in recs),
                            "frames": sum(len(r_["times"]) for r_ in recs), "scores": rep.scores,
                            "workers_seen": len({r_["worker"] for r_ in recs})}
            runs[workers] = best
        one, many = runs[1], runs[args.workers]
        same = json.dumps(one["scores"], sort_keys=True) == json.dumps(many["scores"], sort_keys=True)
        result = {
            "target": args.target, "sequences": len(ds), "frames_per_sequence": args.frames,
            "workers": args.workers, "cpus": os.cpu_count(), "load_before": load_before,
            "load_after": os.getloadavg()[0], "python": sys.version.split()[0],
            "one_worker": {k: v for k, v in one.items() if k != "scores"},
            "n_workers": {k: v for k, v in many.items() if k != "scores"},
            "speedup": one["wall_s"] / many["wall_s"],
            "speedup_tasks": one["task_span_s"] / many["task_span_s"],
            "torch_seconds_per_frame_in_process": one["tracking_s_summed"] / one["frames"],
            "identical_scores": same,
        }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"{result['sequences']} sequences x {args.frames} frames, target {args.target}:")
    print(f"  1 worker : {one['wall_s']:7.1f} s  {one['sequences_per_s']:.3f} sequences/s")
    print(f"  {args.workers} workers: {many['wall_s']:7.1f} s  {many['sequences_per_s']:.3f} sequences/s "
          f"({many['workers_seen']} worker processes)")
    print(f"  from the first task's start to the last task's end (start-up of Ray and of this process left out): "
          f"{one['task_span_s']:.1f} s vs {many['task_span_s']:.1f} s, {result['speedup_tasks']:.2f}x")
    print(f"  speed-up {result['speedup']:.2f}x wall clock (goal >= 1.7x with 2 workers); PyTorch model "
          f"{result['torch_seconds_per_frame_in_process'] * 1e3:.1f} ms per frame in process; scores identical: {same}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
