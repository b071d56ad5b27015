"""SpikeVideoFormer's O(T) claim measured (issue 17 step 4): cost per frame of joint SDHA in linear
order against quadratic joint attention, for T = 8, 16, 32 frames. Not a test: run it by hand,

    .venv/bin/python benchmarks/bench_sdha_scaling.py                 # SynOps (deterministic)
    .venv/bin/python benchmarks/bench_sdha_scaling.py --timing        # + wall times (quiet cores!)

Model: ``spikevideoformer-tiny`` (random weights that fire, 64 x 64 frames: joint SDHA in stage 3
over N = 16 positions x T frames, 4 heads of d = 16, and stage 4, 4 heads of d = 20), ``--inputs``
clips of T frames with the same random pixels per frame index (seeded), lowered to binary spikes.

SynOps (measured on the reference's binary spikes; per *video frame* = per clip / T):

* ``sdha_linear``: the audit's SDHA rows (:func:`spikedeploy.audit.space_time_attention_events`:
  k·v pairs, v column counts, q row reads of dv cells, the dense ``M`` / ``1^T M`` terms) -- the
  linear order ``(2Q-1)[(2K-1)^T V]`` as the Lava process runs it;
* ``sdha_quadratic``: the same attention in quadratic order ``[(2Q-1)(2K-1)^T] V`` over the
  ``L = T N`` tokens of a joint group: the Hamming score matrix is dense (``L^2 d`` accumulates per
  head: every token pair, every channel), and each v unit spike adds its dense score column (``L``
  accumulates);
* ``dot_quadratic_spikes``: a spike-driven lower bound of quadratic *dot-product* attention on the
  same spikes: co-occurring q·k unit-spike pairs (each increments one score cell) plus, per v unit
  spike, only the non-zero scores of its column;
* ``network_linear``: every spike-driven row of the audit (synapses and attention), and
  ``network_quadratic`` the same with the SDHA rows replaced by ``sdha_quadratic``;
* FLOPs per frame of the two orders (the papers' count, spike-independent): linear ``2 N d dv`` +
  ``2 N dv`` per head and step; quadratic ``L N (d + dv)`` per head and step (``L = T N``).

Flat per frame = linear in T. ``--timing`` adds wall time per frame (best of ``--repeat``): the
PyTorch model (float32) with its SDHA modules in ``order="linear"`` vs ``"quadratic"``, the
reference binary run of the whole network (linear order; the IR has one rule), and the attention
alone on the reference's spikes (the reference rule vs the quadratic formula in float64 torch).
Wall times need quiet cores (the machine's load is recorded).

Writes ``sdha_scaling.json`` / ``.md`` / ``.png`` into ``--out`` (``--timing``:
``sdha_scaling_timing.*``), atomically (:mod:`spikedeploy.fsutil`).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
from pathlib import Path

import torch

from spikedeploy.audit import audit_graph
from spikedeploy.capture import capture
from spikedeploy.fsutil import atomic_write_bytes, atomic_write_text
from spikedeploy.ir import ops as O
from spikedeploy.ir.graph import validate
from spikedeploy.loading import build_model
from spikedeploy.passes import ExpandSpikes
from spikedeploy.reference import SpaceTimeAttentionRule, SpikeValue, execute, space_time_groups
from timing import best_of  # benchmarks/timing.py

MODEL = "spikevideoformer-tiny"


def clip(T: int, B: int, shape, seed: int) -> torch.Tensor:
    """``[T, B, *shape]`` pixels; frame t of clip b is the same for every T (one seeded draw per
    frame index), so the clips of a longer T extend the shorter ones."""
    frames = [torch.randn((B,) + tuple(shape), generator=torch.Generator().manual_seed(seed * 1000 + t))
              for t in range(T)]
    return torch.stack(frames).double()


def quadratic_counts(op, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> dict:
    """Per clip (summed over the batch), the quadratic-order counts of a joint attention on the
    spike counts ``[T, B, C, N]`` (module docstring)."""
    T, B, C, N = q.shape
    h = op.num_heads
    d, dv = C // h, v.shape[2] // h
    L = T * N
    qg, kg, vg = (space_time_groups(x, h, "joint") for x in (q, k, v))  # [B, H, L, c]
    dense = B * h * L * L * d + L * float(vg.sum())
    pairs = float((qg.sum(-2) * kg.sum(-2)).sum())
    nonzero = ((qg @ kg.transpose(-1, -2)) != 0).to(torch.float64)  # [B, H, L_i, L_j]
    reads = float((nonzero.sum(-2) * vg.sum(-1)).sum())
    return {"sdha_quadratic": dense, "dot_quadratic_spikes": pairs + reads,
            "flops_linear": float(T * h * (2 * N * d * dv + 2 * N * dv)) * B,
            "flops_quadratic": float(T * h * L * N * (d + dv)) * B}


def quadratic_attention(op, q, k, v) -> torch.Tensor:
    """``[(2Q-1)(2K-1)^T] V`` per joint group (float64 torch), the quadratic order (timing only)."""
    T, B, C, N = q.shape
    qg, kg, vg = (space_time_groups(x, op.num_heads, "joint") for x in (q, k, v))
    return ((2 * qg - 1) @ (2 * kg - 1).transpose(-1, -2)) @ vg


def measure(T: int, B: int, seed: int, timing: bool, repeat: int) -> dict:
    loaded = build_model(MODEL, timesteps=T)
    net, shape = loaded.module.double().eval(), loaded.input_shape
    graph = capture(net, torch.zeros((T, 1) + shape, dtype=torch.float64)).with_meta(timesteps=T)
    low = ExpandSpikes("binary").apply(graph)
    x = clip(T, B, shape, seed)
    ref = execute(low, x, "binary")
    counts = {n.name: ref.records[n.name].q for n in low.neurons()}
    report = audit_graph(low, x, encoding="binary", spike_counts=counts, model=MODEL)
    attn = [n for n in low.nodes if isinstance(n.op, O.SpikeHammingAttention)]
    shapes = validate(low)
    quad = {key: 0.0 for key in ("sdha_quadratic", "dot_quadratic_spikes", "flops_linear", "flops_quadratic")}
    for n in attn:
        assert n.op.tokens == "joint", n.name
        q, k, v = (counts[i] for i in n.inputs)
        for key, val in quadratic_counts(n.op, q, k, v).items():
            quad[key] += val / B  # per clip
    sdha_rows = [r for r in report.layers if r.kind == "attention" and r.op.startswith("SpikeHammingAttention")]
    spike_rows = report.spike_layers
    lin = sum(r.measured_synops for r in sdha_rows)  # per clip (the audit's "frame" = one input)
    net_lin = sum(r.measured_synops for r in spike_rows)
    res = {
        "T": T, "clips": B,
        "attention": [{"node": n.name, "heads": n.op.num_heads, "q": list(shapes[n.inputs[0]]),
                       "v": list(shapes[n.inputs[2]])} for n in attn],
        "per_frame": {
            "sdha_linear": lin / T,
            "sdha_quadratic": quad["sdha_quadratic"] / T,
            "dot_quadratic_spikes": quad["dot_quadratic_spikes"] / T,
            "network_linear": net_lin / T,
            "network_quadratic": (net_lin - lin + quad["sdha_quadratic"]) / T,
            "flops_sdha_linear": quad["flops_linear"] / T,
            "flops_sdha_quadratic": quad["flops_quadratic"] / T,
        },
        "sdha_rows": {r.name: r.measured_synops / T for r in sdha_rows},
    }
    if timing:
        res["ms_per_frame"] = time_per_frame(net, low, x, attn, counts, repeat)
    return res


def time_per_frame(net, low, x, attn, counts, repeat: int) -> dict:
    from spikedeploy.models.spikevideoformer_blocks import SpikeHammingAttention as SDHAModule

    frames = x.shape[0] * x.shape[1]
    net32, x32 = net.float(), x.float()
    mods = [m for m in net32.modules() if isinstance(m, SDHAModule)]
    out = {}
    for order in ("linear", "quadratic"):
        for m in mods:
            m.order = order

        def fwd():
            with torch.no_grad():
                net32(x32)
        out[f"torch_{order}"] = 1e3 * best_of(fwd, repeat) / frames
    for m in mods:
        m.order = "linear"
    net.double()
    out["reference_network_linear"] = 1e3 * best_of(lambda: execute(low, x, "binary"), repeat) / frames
    rule = SpaceTimeAttentionRule()
    vals = {n.name: [SpikeValue(q=counts[i], encoding="binary", window=1) for i in n.inputs] for n in attn}
    out["reference_sdha_linear"] = 1e3 * best_of(lambda: [rule(n.op, vals[n.name], None) for n in attn], repeat) / frames
    out["reference_sdha_quadratic"] = 1e3 * best_of(
        lambda: [quadratic_attention(n.op, *(counts[i] for i in n.inputs)) for n in attn], repeat) / frames
    return out


ROWS = [("sdha_linear", "SDHA linear (measured SynOps)"), ("sdha_quadratic", "SDHA quadratic (SynOps)"),
        ("dot_quadratic_spikes", "dot attention quadratic, spike-driven (SynOps)"),
        ("network_linear", "network, SDHA linear (SynOps)"), ("network_quadratic", "network, SDHA quadratic (SynOps)"),
        ("flops_sdha_linear", "SDHA FLOPs linear"), ("flops_sdha_quadratic", "SDHA FLOPs quadratic")]


def markdown(results, machine) -> str:
    Ts = [r["T"] for r in results]
    lines = [f"# SDHA cost per frame vs T ({MODEL}, {results[0]['clips']} clips)", "",
             "| per frame | " + " | ".join(f"T = {T}" for T in Ts) + f" | T = {Ts[-1]} / T = {Ts[0]} |",
             "|---|" + "---:|" * (len(Ts) + 1)]
    for key, label in ROWS:
        vals = [r["per_frame"][key] for r in results]
        lines.append(f"| {label} | " + " | ".join(f"{v:,.0f}" for v in vals) + f" | {vals[-1] / vals[0]:.2f} |")
    if "ms_per_frame" in results[0]:
        for key in results[0]["ms_per_frame"]:
            vals = [r["ms_per_frame"][key] for r in results]
            lines.append(f"| {key} (ms) | " + " | ".join(f"{v:.3f}" for v in vals) + f" | {vals[-1] / vals[0]:.2f} |")
        lines += ["", f"machine: {machine}"]
    return "\n".join(lines) + "\n"


def plot(results) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullLocator

    timing = "ms_per_frame" in results[0]
    fig, axes = plt.subplots(1, 2 if timing else 1, figsize=(11 if timing else 6, 4.2), squeeze=False)
    Ts = [r["T"] for r in results]
    ax = axes[0][0]
    for key, label in ROWS[:5]:
        ax.plot(Ts, [r["per_frame"][key] for r in results], marker="o", label=label)
    ax.set(xscale="log", yscale="log", xlabel="frames T", ylabel="SynOps per frame",
           title="cost per frame (flat = linear in T)")
    ax.set_xticks(Ts, [str(T) for T in Ts])
    ax.xaxis.set_minor_locator(NullLocator())
    ax.legend(fontsize=7)
    if timing:
        ax = axes[0][1]
        for key in results[0]["ms_per_frame"]:
            ax.plot(Ts, [r["ms_per_frame"][key] for r in results], marker="o", label=key)
        ax.set(xscale="log", yscale="log", xlabel="frames T", ylabel="ms per frame", title="wall time per frame")
        ax.set_xticks(Ts, [str(T) for T in Ts])
        ax.xaxis.set_minor_locator(NullLocator())
        ax.legend(fontsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    return buf.getvalue()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-T", "--timesteps", type=int, nargs="+", default=[8, 16, 32], help="frames T (default: %(default)s)")
    p.add_argument("--inputs", type=int, default=2, help="clips per measurement (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--timing", action="store_true", help="also measure wall time per frame (needs quiet cores)")
    p.add_argument("--repeat", type=int, default=3, help="timing repetitions, best kept (default: %(default)s)")
    p.add_argument("--threads", type=int, default=2, help="PyTorch threads (default: %(default)s)")
    p.add_argument("--out", default="benchmarks/results", help="output folder (default: %(default)s)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    machine = {"cpus": os.cpu_count(), "threads": args.threads, "load_before": os.getloadavg()[0]}
    results = []
    for T in args.timesteps:
        results.append(measure(T, args.inputs, args.seed, args.timing, args.repeat))
        print(f"T = {T}: " + ", ".join(f"{k} {v:,.0f}" for k, v in results[-1]["per_frame"].items()), file=sys.stderr)
    machine["load_after"] = os.getloadavg()[0]
    out = Path(args.out)
    stem = "sdha_scaling_timing" if args.timing else "sdha_scaling"
    md = markdown(results, machine)
    atomic_write_text(out / f"{stem}.json", json.dumps({"model": MODEL, "machine": machine, "results": results},
                                                        indent=1))
    atomic_write_text(out / f"{stem}.md", md)
    atomic_write_bytes(out / f"{stem}.png", plot(results))
    print(md)
    print(f"wrote {out}/{stem}.json, .md, .png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
