"""Time per input of every runtime on the bundled test model, as ratios to the PyTorch integer model
measured in the same run, plus the export time per target. Not a test: run it by hand,

    .venv/bin/python benchmarks/bench_runtimes.py [--neuron nilif] [-T 3] [--inputs 16] [--lava-inputs 1]
    .venv/bin/python benchmarks/bench_runtimes.py --lava-fusion [--spiketrack-tiny] [--encoding binary]

Each runtime processes the same inputs; times are the best of ``--repeat`` runs divided by the
number of inputs. Lava simulates sub-step by sub-step in one OS process per Lava process, so it gets
fewer inputs (``--lava-inputs``); its per-input time is still comparable.
"""

from __future__ import annotations

import argparse
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


def lava_fusion(graph, x, encoding: str, label: str) -> None:
    """Fused vs unfused Lava process graph of ``graph`` on ``x``: processes, connections, Lava
    steps, wall times per phase, and whether both reproduce the reference spike counts exactly."""
    from spikedeploy.exporters import lava as lava_export
    from spikedeploy.reference import execute
    from spikedeploy.runtimes import lava as lava_run

    ref = execute(graph, x, encoding)
    print(f"{label}, {encoding} spikes")
    print(f"{'':<8} {'processes':>9} {'conns':>6} {'steps':>6} {'lava s':>8}  phases (s)                     "
          "exact")
    for fuse in (False, True):
        desc, arrays = lava_export.compile_graph(graph, encoding, fuse=fuse)
        r = lava_run.run(lava_export.LavaBundle(None, desc, arrays), x)
        exact = all(torch.equal(r.spike_counts[n], ref.neuron_q(n)) for n in r.spike_counts)
        print(f"{'fused' if fuse else 'unfused':<8} {len(desc['processes']):>9} {len(desc['connections']):>6} "
              f"{r.info['time_steps']:>6} {r.info['lava_time_s']:>8.1f}  {r.info['lava_phase_s']}  {exact}")
        print(f"{'':<8} {desc['process_counts']}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--neuron", default="nilif", help="neuron kind of the test model (default: %(default)s)")
    p.add_argument("-T", "--timesteps", type=int, default=3, help="macro-steps T (default: %(default)s)")
    p.add_argument("--inputs", type=int, default=16, help="inputs per runtime (default: %(default)s)")
    p.add_argument("--lava-inputs", type=int, default=1, help="inputs for Lava (default: %(default)s)")
    p.add_argument("--repeat", type=int, default=3, help="repetitions, best time kept (default: %(default)s)")
    p.add_argument("--targets", default="onnx,nir,lava", help="targets to time (default: %(default)s)")
    p.add_argument("--lava-fusion", action="store_true",
                   help="only compare the fused and unfused Lava process graphs (sdt-test, and with "
                        "--spiketrack-tiny a SpikeTrack search branch of widths 8..48 at 64 px)")
    p.add_argument("--spiketrack-tiny", action="store_true", help="with --lava-fusion: add the tiny SpikeTrack")
    p.add_argument("--encoding", default="graded", help="with --lava-fusion: spike encoding (default: %(default)s)")
    args = p.parse_args(argv)
    torch.set_num_threads(2)
    if args.lava_fusion:
        loaded = api.build_model("sdt-test", neuron=args.neuron, timesteps=args.timesteps)
        x = api.make_inputs(loaded, timesteps=args.timesteps, num_inputs=args.lava_inputs, seed=1)
        graph = api.prepare_graph(loaded, timesteps=args.timesteps, encoding="integer")
        lava_fusion(graph, x, args.encoding, f"sdt-test, neuron {args.neuron}, T = {args.timesteps}, "
                                             f"{args.lava_inputs} input(s)")
        if args.spiketrack_tiny:
            from spikedeploy.models.spiketrack import SpikeTrack, SpikeTrackConfig, init_spiketrack_for_spiking
            from spikedeploy.tracking.backends import capture_spiketrack

            cfg = SpikeTrackConfig(family="s", embed_dims=(8, 16, 32, 48), head_channels=16, resolution=64,
                                   templates=1)
            torch.manual_seed(0)
            model = SpikeTrack(cfg)
            init_spiketrack_for_spiking(model, seed=0)
            graphs = capture_spiketrack(model.double().eval())
            xs = torch.randn((1, 1, 3, 64, 64), generator=torch.Generator().manual_seed(1), dtype=torch.float64)
            lava_fusion(graphs.search, xs, args.encoding, "SpikeTrack search branch, widths (8, 16, 32, 48), 64 px")
        return 0

    loaded = api.build_model("sdt-test", neuron=args.neuron, timesteps=args.timesteps)
    x = api.make_inputs(loaded, timesteps=args.timesteps, num_inputs=args.inputs, seed=1)
    graph = api.prepare_graph(loaded, timesteps=args.timesteps, encoding="integer")
    lowered = {e: ExpandSpikes(e).apply(graph) for e in ("binary", "graded")}

    rows = []  # (name, seconds per input, note)
    model = loaded.module

    def torch_forward():
        with torch.no_grad():
            model(x)

    t_torch = best_of(torch_forward, args.repeat) / args.inputs
    rows.append(("torch integer model (float32)", t_torch, ""))
    rows.append(("reference integer (float64)", best_of(lambda: run(graph, x), args.repeat) / args.inputs, ""))
    for enc, g in lowered.items():
        rows.append((f"reference {enc} (float64)", best_of(lambda g=g: run(g, x), args.repeat) / args.inputs, ""))

    export_rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in [t.strip() for t in args.targets.split(",") if t.strip()]:
            spec = get_target(name)
            enc = api.default_encoding(name, None)
            g = graph if enc == "integer" else lowered[enc]
            n = args.lava_inputs if name == "lava" else args.inputs
            try:
                t0 = time.perf_counter()
                path = spec.exporter_module().export(g, Path(tmp) / f"m-{name}{spec.suffix}", encoding=enc)
                export_rows.append((name, time.perf_counter() - t0))
                art = spec.exporter_module().load(path)
                rt = spec.runtime_module()
                reps = 1 if name == "lava" else args.repeat
                secs = best_of(lambda: rt.run(art, x[:, :n]), reps) / n
                rows.append((f"{name} ({enc})", secs, f"{n} input(s)"))
            except SpikedeployError as e:  # reported in the table, never hidden
                rows.append((f"{name} ({enc})", float("nan"), f"unavailable: {e}"))

    print(f"SDT test model, neuron {args.neuron}, T = {args.timesteps}, {args.inputs} inputs, "
          f"torch threads {torch.get_num_threads()}")
    print(f"{'runtime':<34} {'ms / input':>12} {'× torch':>10}  note")
    for name, secs, note in rows:
        print(f"{name:<34} {secs * 1e3:>12.2f} {secs / t_torch:>10.1f}  {note}")
    print()
    print(f"{'export target':<34} {'seconds':>12}")
    for name, secs in export_rows:
        print(f"{name:<34} {secs:>12.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
