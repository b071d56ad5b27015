"""Seconds per frame in Lava against the number of partitions (Lava processes) P. Not a test: run it
by hand on quiet cores,

    .venv/bin/python benchmarks/bench_partitions.py [--partitions 1,2,4,8,per-layer] [--frames 3]
        [--encoding graded] [--s256] [--out benchmarks/results/partitions]

The networks: the bundled tiny tracker's search branch (``spiketrack-tiny128-t1``, trained
weights) on search crops of the demo clip and, with ``--s256``, SpikeTrack-S256-T1's search
branch (seeded random spiking weights, a seeded random frame). Each is compiled once; then each
placement runs ``--frames`` single-frame Lava runs (one run per frame, as the tracker does: Lava
start-up, the steps, reading the records and the stop are all in the time) and the *median* is
reported, with the minimum and maximum beside it, next to the PyTorch integer model's time for
the same frame (best of 5) as a ratio. For partitioned placements also the *live* runtime
(``runtimes.lava_live.LiveRuntime``, what the tracker uses): started once on the first frame
(its start-up reported apart), then one run per frame, the median over ``--frames`` runs after
the first. Every placement's spike counts (fresh and live) are checked equal to the first's,
layer by layer. Writes ``partitions.md`` (a Markdown table for the README),
``partitions.json`` and ``partitions.png`` into ``--out``; the machine's CPU count and load
average before and after are recorded (figures taken with a load above ~1.5 per core are noisy).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from spikedeploy import api
from spikedeploy.exporters import lava as lava_export
from spikedeploy.runtimes import lava as lava_run
from spikedeploy.runtimes.lava_live import LiveRuntime
from timing import best_of  # benchmarks/timing.py


def _tiny_search(frames: int):
    from spikedeploy.demo import _search_crops
    from spikedeploy.models.spiketrack import default_tracker_checkpoint
    from spikedeploy.tracking.synth import demo_clip

    loaded = api.build_model("spiketrack-tiny128-t1:search", checkpoint=str(default_tracker_checkpoint()))
    clip, gt = demo_clip()
    idx = np.linspace(1, len(clip) - 1, frames).astype(int)
    xs = [torch.from_numpy(_search_crops(clip[i:i + 1], gt[i:i + 1], 128, 1)) for i in idx]
    return "tiny tracker search (spiketrack-tiny128-t1, bundled weights, demo-clip crops)", loaded, xs


def _s256_search(frames: int):
    loaded = api.build_model("spiketrack-s256-t1:search", seed=0)
    xs = [api.make_inputs(loaded, timesteps=1, num_inputs=1, seed=s) for s in range(frames)]
    return "SpikeTrack-S256-T1 search (random spiking weights, random frames)", loaded, xs


def measure(label, loaded, xs, encoding: str, placements, repeat_torch: int = 5) -> dict:
    graph = api.prepare_graph(loaded, timesteps=1, encoding=encoding)
    t0 = time.perf_counter()
    bundle = lava_export.LavaBundle(None, *lava_export.compile_graph(graph, encoding))
    compile_s = time.perf_counter() - t0
    model = loaded.module

    def torch_frame():
        with torch.no_grad():
            model(xs[0].float())

    torch_s = best_of(torch_frame, repeat_torch)
    rows, first = [], {}
    for p in placements:
        times, info = [], None
        for i, x in enumerate(xs):
            t = time.perf_counter()
            r = lava_run.run(bundle, x.to(torch.float64), partitions=p)
            times.append(time.perf_counter() - t)
            info = r.info
            if i not in first:
                first[i] = r.spike_counts
            else:
                for name, q in first[i].items():
                    if not torch.equal(r.spike_counts[name], q):
                        raise AssertionError(f"{label}: placement {p} differs in {name}")
        med = statistics.median(times)
        live = None
        if p != "per-layer":
            live_times, start_s = [], None
            with LiveRuntime(bundle, partitions=p) as rt:
                for i, x in enumerate([xs[0]] + list(xs)):  # run 0 starts the runtime
                    t = time.perf_counter()
                    r = rt.run(x.to(torch.float64))
                    (live_times.append if i else lambda v: None)(time.perf_counter() - t)
                    if not i:
                        start_s = time.perf_counter() - t
                    for name, q in first[max(0, i - 1)].items():
                        if not torch.equal(r.spike_counts[name], q):
                            raise AssertionError(f"{label}: live placement {p} differs in {name}")
                live_phases = r.info["lava_phase_s"]
            lmed = statistics.median(live_times)
            live = {"median_s": lmed, "min_s": min(live_times), "max_s": max(live_times),
                    "ratio_to_torch": lmed / torch_s, "first_run_s": start_s, "phases_s_last_frame": live_phases}
        rows.append({"placement": str(p), "lava_processes": info["lava_processes"],
                     "os_processes": info["os_processes"], "lava_steps_per_frame": info["lava_steps_per_frame"],
                     "median_s": med, "min_s": min(times), "max_s": max(times), "ratio_to_torch": med / torch_s,
                     "phases_s_last_frame": info["lava_phase_s"], "live": live})
        print(f"  {label[:40]:<40} P={str(p):<9} {info['os_processes']:>4} OS processes  "
              f"{med:7.2f} s/frame (min {min(times):.2f}, max {max(times):.2f})  {med / torch_s:7.1f}x torch"
              + ("" if live is None else f"; live {live['median_s']:.3f} s/frame, {live['ratio_to_torch']:.1f}x torch"),
              flush=True)
    return {"network": label, "encoding": encoding, "bundle_processes": len(bundle.description["processes"]),
            "compile_s": compile_s, "torch_s": torch_s, "frames": len(xs), "rows": rows}


def write_outputs(results: list, out: Path, machine: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "partitions.json").write_text(json.dumps({"machine": machine, "results": results}, indent=1))
    lines = [f"Seconds per frame in Lava ({machine['cpus']} CPUs, load {machine['load_before']:.2f} before, "
             f"{machine['load_after']:.2f} after; median of the frames; fresh: one Lava run per frame, built, "
             "started and stopped; live: one runtime started once, one run per frame)", ""]
    lines += ["| network | placement | Lava processes | OS processes | Lava steps / frame | fresh s / frame (min-max) "
              "| x torch | live s / frame (min-max) | x torch |",
              "|---|---|---:|---:|---:|---|---:|---|---:|"]
    for res in results:
        for r in res["rows"]:
            lv = r.get("live")
            live = "- | -" if lv is None else (f"{lv['median_s']:.3f} ({lv['min_s']:.3f}-{lv['max_s']:.3f}) | "
                                              f"{lv['ratio_to_torch']:.1f}")
            lines.append(f"| {res['network']} ({res['encoding']}) | {r['placement']} | {r['lava_processes']} | "
                         f"{r['os_processes']} | {r['lava_steps_per_frame']:g} | {r['median_s']:.2f} "
                         f"({r['min_s']:.2f}-{r['max_s']:.2f}) | {r['ratio_to_torch']:.0f} | {live} |")
    (out / "partitions.md").write_text("\n".join(lines) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for res in results:
        rows = res["rows"]
        xs = [r["lava_processes"] for r in rows]
        ax.errorbar(xs, [r["median_s"] for r in rows],
                    yerr=[[r["median_s"] - r["min_s"] for r in rows], [r["max_s"] - r["median_s"] for r in rows]],
                    marker="o", capsize=3, label=f"{res['network'].split(' (')[0]} ({res['encoding']}), fresh run")
        color = ax.lines[-1].get_color()
        lv = [r for r in rows if r.get("live")]
        if lv:
            ax.plot([r["lava_processes"] for r in lv], [r["live"]["median_s"] for r in lv], marker="s",
                    linestyle="-", linewidth=2, color=color,
                    label=f"{res['network'].split(' (')[0]} ({res['encoding']}), live runtime")
        line = ax.axhline(20 * res["torch_s"], linestyle="--", linewidth=0.8)
        line.set_color(color)
        for r in rows:
            ax.annotate(r["placement"], (r["lava_processes"], r["median_s"]), textcoords="offset points",
                        xytext=(4, 4), fontsize=8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("Lava processes (partitions; per-layer: one per bundle process)")
    ax.set_ylabel("seconds per frame (median)")
    ax.set_title(f"Lava CPU simulator, {machine['cpus']} CPUs (dashed: 20x the torch time)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "partitions.png", dpi=120)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--partitions", default="1,2,4,8,per-layer", help="placements to measure (default: %(default)s)")
    p.add_argument("--frames", type=int, default=3, help="frames (Lava runs) per placement (default: %(default)s)")
    p.add_argument("--encoding", default="graded", choices=["graded", "binary"])
    p.add_argument("--s256", action="store_true", help="also SpikeTrack-S256-T1's search branch (minutes per-layer)")
    p.add_argument("--out", default="benchmarks/results/partitions", help="output folder (default: %(default)s)")
    args = p.parse_args(argv)
    placements = [int(v) if v.strip().isdigit() else v.strip() for v in args.partitions.split(",") if v.strip()]
    machine = {"cpus": os.cpu_count(), "load_before": os.getloadavg()[0], "torch_threads": torch.get_num_threads()}
    print(f"{machine['cpus']} CPUs, load average {machine['load_before']:.2f}", flush=True)
    nets = [_tiny_search] + ([_s256_search] if args.s256 else [])
    results = [measure(*make(args.frames), args.encoding, placements) for make in nets]
    machine["load_after"] = os.getloadavg()[0]
    write_outputs(results, Path(args.out), machine)
    print(f"wrote {args.out}/partitions.md, .json, .png (load average after: {machine['load_after']:.2f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
