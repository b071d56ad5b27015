"""Audit time per frame as a ratio to the PyTorch integer model's forward pass on the same inputs,
measured in the same run. Not a test: run it by hand,

    .venv/bin/python benchmarks/bench_audit.py [--neuron nilif] [-T 3] [--inputs 16] [--repeat 3]

Rows: the torch integer forward (the unit), the reference spike run alone, the full audit (spike
run + counting) in binary and graded encoding, the counting alone (``audit_graph`` given the spike
counts, as for a Lava run), and the report rendering (Markdown/JSON/HTML with three plots, once per
audit, shown per frame too). Times are the best of ``--repeat`` runs divided by the number of inputs.
"""

from __future__ import annotations

import argparse

import torch

from spikedeploy import api
from spikedeploy.audit import audit_graph
from spikedeploy.passes import ExpandSpikes
from spikedeploy.reference import run
from timing import best_of  # benchmarks/timing.py


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="sdt-test", help="built-in model (default: %(default)s)")
    p.add_argument("--neuron", default="nilif", help="neuron kind of the test model (default: %(default)s)")
    p.add_argument("-T", "--timesteps", type=int, default=3, help="macro-steps T (default: %(default)s)")
    p.add_argument("--inputs", type=int, default=16, help="frames (inputs) per measurement (default: %(default)s)")
    p.add_argument("--repeat", type=int, default=3, help="repetitions, best time kept (default: %(default)s)")
    p.add_argument("--profile", default="45nm", help="energy profile (default: %(default)s)")
    args = p.parse_args(argv)
    torch.set_num_threads(2)

    loaded = api.build_model(args.model, neuron=args.neuron, timesteps=args.timesteps)
    x = api.make_inputs(loaded, timesteps=args.timesteps, num_inputs=args.inputs, seed=1)
    graph = api.prepare_graph(loaded, timesteps=args.timesteps, encoding="integer")
    lowered = {e: ExpandSpikes(e).apply(graph) for e in ("binary", "graded")}
    n = args.inputs
    model = loaded.module

    def torch_forward():
        with torch.no_grad():
            model(x)

    t_torch = best_of(torch_forward, args.repeat) / n
    rows = [("torch integer model (float32)", t_torch, "the unit")]
    rows.append(("reference binary run (float64)", best_of(lambda: run(lowered["binary"], x), args.repeat) / n,
                 "spike run only"))
    report = None
    for enc in ("binary", "graded"):
        def full(enc=enc):
            nonlocal report
            report = audit_graph(lowered[enc], x, encoding=enc, profile=args.profile)
        rows.append((f"audit {enc} (run + counting)", best_of(full, args.repeat) / n, ""))
    counts = {nd.name: r.q for nd, r in ((nd, run(lowered["binary"], x).records[nd.name])
                                         for nd in lowered["binary"].neurons())}
    rows.append(("audit counting only (given counts)",
                 best_of(lambda: audit_graph(lowered["binary"], x, spike_counts=counts, profile=args.profile),
                         args.repeat) / n, "as for a Lava run's spike counts"))
    t_render = best_of(lambda: (report.to_markdown(), report.to_json(), report.to_html()), 1)
    rows.append(("render md + json + html (per audit)", t_render / n, f"{t_render:.2f} s per audit, shown per frame"))

    t = report.totals["per_frame"]
    print(f"{args.model}, neuron {args.neuron}, T = {args.timesteps}, {n} frames, torch threads "
          f"{torch.get_num_threads()}; per frame: {t['measured_synops']:,.0f} SynOps measured vs "
          f"{t['theoretical_ops']:,.0f} estimated (ratio {t['ratio']:.4f})")
    print(f"{'step':<40} {'ms / frame':>12} {'× torch':>10}  note")
    for name, secs, note in rows:
        print(f"{name:<40} {secs * 1e3:>12.2f} {secs / t_torch:>10.1f}  {note}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
