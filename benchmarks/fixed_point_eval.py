"""What Loihi 2 fixed point costs the bundled tracker: held-out AUC / P@20 in fixed point next to
float, and the error against the weight width. Not a test: run it by hand,

    .venv/bin/python benchmarks/fixed_point_eval.py [--sequences 12] [--bits 4,6,8] [--out DIR]

For SpikeTrack-TINY128-T1 with the bundled weights it tracks the ``--sequences`` held-out
synthetic sequences of :func:`spikedeploy.tracking.evaluation.heldout_sequences` (the split
``tracking_eval`` scores the bundled weights on) with

* ``float``: the float64 reference of the lowered graphs (graded spikes; it tracks exactly as the
  torch model does, see the demo), and
* ``fixed-wN``: the fixed-point reference (``reference-fixed``: the graphs quantized by
  ``QuantizeFixedPoint`` with N-bit weight mantissas, calibrated on 8 demo-clip crops; Lava
  ``fixed_pt`` computes the same spikes exactly, tests/runtimes/test_lava_fixed.py),

* ``float-noise-E`` (controls, ``--noise``): the float tracker with every weight multiplied by
  ``1 + E * N(0, 1)`` (seeded): how far a perturbation far below any quantization step moves the
  boxes of this network (its spikes are a discontinuous function of the weights; a flip spreads
  through the linear attention to every token),

* ``float-on-grid-w8`` (control): the float tracker whose device weights, biases and memories are
  the 8-bit fixed-point values themselves (what a perfect quantization-aware training could
  give the float model), compared with ``fixed-w8``: what is left is the state's rounding, the
  host boundary and the decay's truncation,

and writes ``fixed_point.json`` (pooled AUC / P@20 per configuration, per-sequence AUC, the box
IoU of each fixed run against the float run per frame: mean, share of frames >= 0.9), a Markdown
table and a plot of AUC and agreement against the weight width into ``--out``
(default ``benchmarks/results/fixed_point``). Also the demo clip: IoU fixed vs float per frame.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np


def _run(network, sequences):
    from spikedeploy.tracking.evaluation import evaluate_model

    return evaluate_model(None, sequences, network=network)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sequences", type=int, default=12, help="held-out sequences (default: %(default)s)")
    p.add_argument("--frames", type=int, default=60, help="frames per sequence (default: %(default)s)")
    p.add_argument("--bits", default="4,6,8", help="weight widths, comma-separated (default: %(default)s)")
    p.add_argument("--noise", default="1e-7,1e-5", help="relative weight noise of the float controls, comma-separated, "
                   "empty for none (default: %(default)s)")
    p.add_argument("--out", default="benchmarks/results/fixed_point", help="output folder (default: %(default)s)")
    p.add_argument("--replot", action="store_true", help="only redraw the plot from --out's fixed_point.json")
    args = p.parse_args(argv)
    bits = [int(b) for b in args.bits.split(",")]
    if args.replot:
        record = json.loads((Path(args.out) / "fixed_point.json").read_text())
        _plot(record["results"], bits, Path(args.out) / "weight_bits.png")
        return 0
    noises = [float(e) for e in args.noise.split(",") if e.strip()]

    from spikedeploy.tracking.metrics import box_iou
    from spikedeploy.models.spiketrack import bundled_model
    from spikedeploy.tracking.synth import demo_clip
    from spikedeploy.passes import ExpandSpikes
    from spikedeploy.tracking.tracker import SpikeTrackTracker
    from spikedeploy.tracking.backends import ReferenceNetwork, capture_spiketrack, quantize_branches
    from spikedeploy.tracking.evaluation import heldout_sequences, track_boxes

    model = bundled_model(1)
    graphs = capture_spiketrack(model)
    lower = ExpandSpikes("graded")
    template, search = lower.apply(graphs.template), lower.apply(graphs.search)
    seqs = heldout_sequences(args.sequences, args.frames)
    frames, gt = demo_clip()
    configs = {"float": ReferenceNetwork(mode="graded", graphs=graphs)}
    for e in noises:
        configs[f"float-noise-{e:g}"] = ReferenceNetwork(mode="graded", graphs=_perturbed(graphs, e))
    plans = {}
    for b in bits:
        fixed = quantize_branches(template, search, weight_bits=b)
        plans[f"fixed-w{b}"] = fixed
        configs[f"fixed-w{b}"] = ReferenceNetwork(mode="graded", graphs=graphs, precision="fixed", fixed=fixed)
    if 8 in bits:
        configs["float-on-grid-w8"] = _on_grid(graphs, template, search, plans["fixed-w8"])
    results, boxes, demo = {}, {}, {}
    for name, net in configs.items():
        t0 = time.perf_counter()
        rep = _run(net, seqs)
        clip = track_boxes(SpikeTrackTracker(net), frames, gt[0])
        results[name] = {"auc": rep["tracker"].auc, "precision20": rep["tracker"].precision20,
                         "per_sequence_auc": [s["auc"] for s in rep["per_sequence"]],
                         "seconds": round(time.perf_counter() - t0, 1)}
        boxes[name], demo[name] = rep["boxes"], clip
        print(f"{name:10s} AUC {rep['tracker'].auc:.4f}  P@20 {rep['tracker'].precision20:.4f}  "
              f"({results[name]['seconds']} s)", flush=True)
    for name in configs:
        if name == "float":
            continue
        against = "fixed-w8" if name == "float-on-grid-w8" else "float"
        ious = np.concatenate([box_iou(a[1:], f[1:]) for a, f in zip(boxes[name], boxes[against])])
        clip_iou = box_iou(demo[name], demo[against])[1:]
        layers = plans[name].search.meta_dict()["fixed_point"]["layers"] if name in plans else {}
        werr = [v["weight_error_rms"] for v in layers.values() if "weight_error_rms" in v] or [float("nan")]
        results[name].update({
            "compared_with": against,
            "auc_drop": results["float"]["auc"] - results[name]["auc"],
            "iou_vs_float_mean": float(ious.mean()), "iou_vs_float_share_ge_0.9": float((ious >= 0.9).mean()),
            "demo_clip_iou_vs_float_mean": float(clip_iou.mean()),
            "demo_clip_iou_vs_float_share_ge_0.9": float((clip_iou >= 0.9).mean()),
            "search_weight_error_rms_mean": float(np.mean(werr)),
        })
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    record = {"model": "spiketrack-tiny128-t1 (bundled weights)", "sequences": args.sequences, "frames": args.frames,
              "calibration": "8 crops of the bundled demo clip", "encoding": "graded", "results": results,
              "cpus": os.cpu_count(), "load_average": os.getloadavg()}
    (out / "fixed_point.json").write_text(json.dumps(record, indent=1) + "\n")
    lines = [f"# Fixed point on the bundled tracker ({args.sequences} held-out sequences x {args.frames} frames)", "",
             "| configuration | AUC | P@20 | AUC drop | IoU vs float (mean) | frames IoU >= 0.9 | demo clip: frames IoU >= 0.9 |",
             "|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        if name == "float":
            lines.append(f"| float (float64 reference) | {r['auc']:.4f} | {r['precision20']:.4f} | | | | |")
        elif name == "float-on-grid-w8":
            lines.append(f"| control: float with the 8-bit grid's weights, biases, memories, **vs fixed-w8** | {r['auc']:.4f} | "
                         f"{r['precision20']:.4f} | {r['auc_drop']:+.4f} | {r['iou_vs_float_mean']:.3f} | "
                         f"{r['iou_vs_float_share_ge_0.9']:.1%} | {r['demo_clip_iou_vs_float_share_ge_0.9']:.1%} |")
        elif name.startswith("float-noise"):
            lines.append(f"| control: float, weights x (1 + {name[12:]} N(0,1)) | {r['auc']:.4f} | {r['precision20']:.4f} | "
                         f"{r['auc_drop']:+.4f} | {r['iou_vs_float_mean']:.3f} | {r['iou_vs_float_share_ge_0.9']:.1%} | "
                         f"{r['demo_clip_iou_vs_float_share_ge_0.9']:.1%} |")
        else:
            lines.append(f"| {name} | {r['auc']:.4f} | {r['precision20']:.4f} | {r['auc_drop']:+.4f} | "
                         f"{r['iou_vs_float_mean']:.3f} | {r['iou_vs_float_share_ge_0.9']:.1%} | "
                         f"{r['demo_clip_iou_vs_float_share_ge_0.9']:.1%} |")
    (out / "fixed_point.md").write_text("\n".join(lines) + "\n")
    _plot(results, bits, out / "weight_bits.png")
    print("\n".join(lines))
    return 0


def _on_grid(graphs, template, search, fixed):
    """A float ReferenceNetwork whose lowered branches carry the fixed-point graphs' device weights
    and biases decoded to real values (exact), and whose memories are snapped to the MemoryReads'
    8-bit grid at every bind."""
    import dataclasses

    from spikedeploy.ir import ops as O
    from spikedeploy.passes.quantize import quantize_memory
    from spikedeploy.tracking.backends import ReferenceNetwork, memory_read_map, set_memory

    def decoded(float_graph, fixed_graph):
        plan = fixed_graph.meta_dict()["fixed_point"]["layers"]
        nodes = []
        for n in float_graph.nodes:
            op, info = n.op, plan.get(n.name)
            if info and isinstance(op, (O.Conv2d, O.Conv1d, O.Linear)):
                q = fixed_graph.node(n.name).op
                kw = {"weight": O.as_param(np.asarray(q.weight) * 2.0 ** (info["in_exponent"] - info["out_exponent"]))}
                if op.bias is not None:
                    kw["bias"] = O.as_param(np.asarray(q.bias) * 2.0 ** -info["out_exponent"])
                op = dataclasses.replace(op, **kw)
            nodes.append(dataclasses.replace(n, op=op))
        return float_graph.replace_nodes(nodes)

    reads = set(memory_read_map(search))
    exps = fixed.search.meta_dict()["fixed_point"]["memory"]

    class OnGrid(ReferenceNetwork):
        def _bind_memory(self, memory):
            g = set_memory(self._search_base, memory)
            nodes = []
            for n in g.nodes:
                if n.name in reads:
                    m, _ = quantize_memory(fixed.search, n.name, np.asarray(n.op.memory))
                    n = dataclasses.replace(n, op=dataclasses.replace(n.op, memory=O.as_param(m * 2.0 ** -exps[n.name])))
                nodes.append(n)
            return g.replace_nodes(nodes)

    net = OnGrid(mode="graded", graphs=graphs)
    net.template_graph, net._search_base = decoded(template, fixed.template), decoded(search, fixed.search)
    return net


def _perturbed(graphs, rel: float, seed: int = 0):
    """``graphs`` with every synapse weight multiplied by ``1 + rel * N(0, 1)`` (seeded)."""
    import dataclasses

    from spikedeploy.ir import ops as O

    rng = np.random.default_rng(seed)

    def perturb(graph):
        nodes = []
        for n in graph.nodes:
            op = n.op
            if isinstance(op, (O.Conv2d, O.Conv1d, O.Linear)):
                w = np.asarray(op.weight)
                op = dataclasses.replace(op, weight=O.as_param(w * (1 + rel * rng.standard_normal(w.shape))))
            nodes.append(dataclasses.replace(n, op=op))
        return graph.replace_nodes(nodes)

    return dataclasses.replace(graphs, template=perturb(graphs.template), search=perturb(graphs.search))


def _plot(results, bits, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a1, a2, a3) = plt.subplots(1, 3, figsize=(13, 4.6))
    a1.plot(bits, [results[f"fixed-w{b}"]["auc"] for b in bits], "o-", label="fixed point")
    a1.axhline(results["float"]["auc"], color="gray", ls="--", label="float")
    a1.set(xlabel="weight mantissa bits", ylabel="success AUC (held-out)", xticks=bits, title="Tracking accuracy")
    a1.legend(loc="lower right")
    a2.plot(bits, [results[f"fixed-w{b}"]["iou_vs_float_mean"] for b in bits], "o-", label="fixed: mean IoU vs float")
    a2.plot(bits, [results[f"fixed-w{b}"]["iou_vs_float_share_ge_0.9"] for b in bits], "s-",
            label="fixed: frames with IoU >= 0.9")
    for k, style in zip([k for k in results if k.startswith("float-noise")], (":", "-.")):
        a2.axhline(results[k]["iou_vs_float_share_ge_0.9"], color="gray", ls=style,
                   label=f"float, weights x (1 + {k[12:]} N(0,1)): frames >= 0.9")
    if "float-on-grid-w8" in results:
        a2.plot([8], [results["float-on-grid-w8"]["iou_vs_float_share_ge_0.9"]], "kx", ms=9,
                label="float on the 8-bit grid vs fixed-w8: frames >= 0.9")
    a2.set(xlabel="weight mantissa bits", xticks=bits, ylim=(0, 1.0), title="Agreement with the float tracker")
    a2.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), fontsize=8, frameon=False)
    a3.semilogy(bits, [results[f"fixed-w{b}"]["search_weight_error_rms_mean"] for b in bits], "^-", color="C2")
    a3.set(xlabel="weight mantissa bits", xticks=bits, ylabel="rms error / rms weight, mean of layers",
           title="Weight error (search branch)")
    fig.suptitle("SpikeTrack-TINY128-T1 in Loihi 2 fixed point (12 held-out sequences)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
