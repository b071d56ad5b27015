"""SpikeTrack per-frame times on every runtime, as ratios to the PyTorch integer model measured in
the same run, plus the export time per target. Not a test: run it by hand,

    .venv/bin/python benchmarks/bench_spiketrack.py [--variants spiketrack-s256-t1,spiketrack-b256-t1]
        [--lava-variants spiketrack-s256-t1] [--lava-encoding graded|binary] [--repeat 2]

For each variant: the search branch (every frame) on the torch integer model (float32), the
reference executor (integer, binary and graded spikes, float64) and onnxruntime; the template
branch (at initialization and template updates) on torch and the reference. The weights are the
random spiking initialization of ``spiketrack_branch`` (every layer fires), the input a seeded
random frame. Lava runs one search frame of the ``--lava-variants`` (one OS process per Lava process,
several hundred for SpikeTrack: minutes per frame) and its spike counts are compared with the
reference's, layer by layer. Export times: onnx, nir (the parts NIR cannot express are reported
with the reason) and lava.
"""

from __future__ import annotations

import argparse
import gc
import tempfile
import time
from pathlib import Path

import torch

from spikedeploy import api
from spikedeploy.errors import SpikedeployError
from spikedeploy.passes import ExpandSpikes
from spikedeploy.reference import run
from spikedeploy.targets import get_target
from timing import best_of  # benchmarks/timing.py


def time_branch(variant: str, branch: str, repeat: int, rows: list, export_rows: list, targets, lava_enc):
    loaded = api.build_model(f"{variant}:{branch}", seed=0)
    T = 1 if branch == "search" else int(loaded.module.model.config.templates)  # template axis
    x = api.make_inputs(loaded, timesteps=T, num_inputs=1, seed=0)
    graph = api.prepare_graph(loaded, timesteps=T)
    model = loaded.module

    def torch_forward():
        with torch.no_grad():
            model(x)

    t_torch = best_of(torch_forward, repeat)
    label = f"{variant} {branch}"
    rows.append((label, "torch integer model (float32)", t_torch, t_torch, ""))
    rows.append((label, "reference integer (float64)", best_of(lambda: run(graph, x), repeat), t_torch, ""))
    lowered = {}
    for enc in ("binary", "graded"):
        lowered[enc] = ExpandSpikes(enc).apply(graph)
        rows.append((label, f"reference {enc} (float64)", best_of(lambda g=lowered[enc]: run(g, x), repeat), t_torch, ""))
    with tempfile.TemporaryDirectory() as tmp:
        for name in targets:
            spec = get_target(name)
            enc = lava_enc if name == "lava" else api.default_encoding(name, None)
            g = graph if enc == "integer" else lowered[enc]
            try:
                t0 = time.perf_counter()
                path = spec.exporter_module().export(g, Path(tmp) / f"m-{name}{spec.suffix}", encoding=enc)
                export_rows.append((label, name, time.perf_counter() - t0, ""))
            except SpikedeployError as e:  # reported, never hidden
                export_rows.append((label, name, float("nan"), f"unavailable: {str(e)[:150]}"))
                continue
            if name == "nir":
                continue  # NIR is an exchange format; its runtime is the reference
            art = spec.exporter_module().load(path)
            rt = spec.runtime_module()
            if name == "lava":
                gc.collect()
                t0 = time.perf_counter()
                res = rt.run(art, x)
                secs = time.perf_counter() - t0
                ref = run(lowered[enc], x)
                bad = [n for n, q in res.spike_counts.items() if not torch.equal(q.to(ref.neuron_q(n).dtype), ref.neuron_q(n))]
                note = (f"{res.info['processes']} processes, {res.info['time_steps']} steps; "
                        f"{len(res.spike_counts) - len(bad)}/{len(res.spike_counts)} layers' spike counts equal the reference")
                rows.append((label, f"lava floating_pt ({enc})", secs, t_torch, note))
            else:
                secs = best_of(lambda: rt.run(art, x), repeat)
                rows.append((label, f"{name} ({enc})", secs, t_torch, ""))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variants", default="spiketrack-s256-t1,spiketrack-b256-t1",
                   help="comma-separated SpikeTrack variants (default: %(default)s)")
    p.add_argument("--lava-variants", default="spiketrack-s256-t1",
                   help="variants whose search frame also runs in Lava ('' for none; default: %(default)s)")
    p.add_argument("--lava-encoding", default="graded", choices=["graded", "binary"],
                   help="spike encoding of the Lava run (binary: 4 sub-steps per macro-step, ~4x the "
                        "Lava steps; default: %(default)s)")
    p.add_argument("--repeat", type=int, default=2, help="repetitions, best time kept (default: %(default)s)")
    args = p.parse_args(argv)
    torch.set_num_threads(2)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    lava_variants = {v.strip() for v in args.lava_variants.split(",") if v.strip()}

    rows, export_rows = [], []
    for v in variants:
        search_targets = ["onnx", "nir"] + (["lava"] if v in lava_variants else [])
        time_branch(v, "search", args.repeat, rows, export_rows, search_targets, args.lava_encoding)
        time_branch(v, "template", args.repeat, rows, export_rows, ["onnx"], args.lava_encoding)

    print(f"SpikeTrack, one frame, torch threads {torch.get_num_threads()}")
    print(f"{'branch':<32} {'runtime':<34} {'s / frame':>10} {'x torch':>9}  note")
    for label, name, secs, ref, note in rows:
        print(f"{label:<32} {name:<34} {secs:>10.3f} {secs / ref:>9.1f}  {note}")
    print()
    print(f"{'branch':<32} {'export target':<16} {'seconds':>10}  note")
    for label, name, secs, note in export_rows:
        print(f"{label:<32} {name:<16} {secs:>10.2f}  {note}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
