"""Equivalence engine: does the spike-expanded network reproduce the integer-trained one?

Two judgements, both in every report (design notes §4):

1. **Teacher-forced, per neuron layer.** The lowered graph is run with every neuron layer fed the
   reference run's spikes from upstream (:func:`spikedeploy.reference.run` ``teacher=``). Each
   layer's integer outputs q must equal the reference's exactly, except *boundary ties*: positions
   where the membranes of *both* runs lie within ``tie_eps`` of a rounding boundary and the counts
   differ by exactly one.
2. **Free-running.** Both graphs run on their own outputs. The report gives, per layer, the
   mismatch count and where the first difference appears. Verdict ``exact`` (no difference),
   ``tie-cascade`` (the first differing layer differs only at ties; the spread downstream is
   reported, not hidden) or ``mismatch`` (a real difference: a bug).

Tie epsilon. For a neuron fed by synapses with fan-in K, a spike window W and weights w, the
membrane is a sum of at most ``n = K * W + R`` floating-point terms (R = 16 covers bias, BatchNorm,
residual adds and the leak recurrence). The classic bound for a recursive sum is
``|error| <= gamma_n * S`` with ``gamma_n = n u / (1 - n u)`` (u = unit round-off of the dtype) and
``S`` the sum of the magnitudes of the terms, which we bound by
``S <= sum over feeding synapses of W * K * max|w| + max|membrane input|``. Two runs may then
differ by twice that; we use ``tie_eps = 4 * gamma_n * S`` (float64 on the test model: ~1e-12).
A real lowering bug moves a membrane by a whole weight, far beyond this epsilon, so ties cannot
hide bugs.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from spikedeploy.ir import ops as O
from spikedeploy.ir.graph import Graph
from spikedeploy.reference import RunResult, execute, graph_mode, is_fixed, run

#: Float outputs of two spike/integer runs of the same graph, float64: the lowering reorders sums of
#: at most ~1e5 terms, so agreement to 1e-9 relative (plus 1e-12 absolute for values near zero) is
#: a loose bound on legitimate round-off, still far below any real error.
OUTPUT_RTOL = {torch.float64: 1e-9, torch.float32: 1e-4}
OUTPUT_ATOL = {torch.float64: 1e-12, torch.float32: 1e-5}

_REST_TERMS = 16
_SYNAPSES = (O.Conv2d, O.Conv1d, O.Linear, O.GateLinear)


@dataclass(frozen=True)
class LayerReport:
    """One neuron layer in one comparison."""

    name: str
    label: str
    elements: int
    mismatches: int  #: positions where q differs and neither run was at a tie
    ties: int  #: positions where q differs at a boundary tie
    max_abs_error: float  #: of the emitted values
    spikes_a: int  #: unit spikes (sum of q) in run a
    spikes_b: int
    firing_rate: float  #: mean q in run a (the papers' firing-rate definition)
    tie_eps: float


@dataclass(frozen=True)
class OutputReport:
    name: str
    max_abs_error: float
    rtol: float
    atol: float
    ok: bool


@dataclass(frozen=True)
class EquivalenceReport:
    model: str
    a: str
    b: str
    dtype: str
    n_inputs: int
    T: int
    teacher_forced: Tuple[LayerReport, ...]
    free_running: Tuple[LayerReport, ...]
    outputs: Tuple[OutputReport, ...]
    free_verdict: str  #: "exact", "tie-cascade" or "mismatch"
    first_divergence: Optional[str]

    @property
    def teacher_forced_ok(self) -> bool:
        return all(l.mismatches == 0 for l in self.teacher_forced)

    @property
    def layers(self) -> Tuple[LayerReport, ...]:
        """The per-layer rows: teacher-forced where available, else free-running."""
        return self.teacher_forced or self.free_running

    @property
    def spikes_occurred(self) -> bool:
        return sum(l.spikes_a for l in self.layers) > 0

    @property
    def passed(self) -> bool:
        outputs_ok = self.free_verdict != "exact" or all(o.ok for o in self.outputs)
        return (
            self.teacher_forced_ok
            and self.free_verdict in ("exact", "tie-cascade")
            and outputs_ok
            and self.spikes_occurred
        )

    def to_dict(self) -> dict:
        d = asdict(self)
        d.update(passed=self.passed, teacher_forced_ok=self.teacher_forced_ok, spikes_occurred=self.spikes_occurred)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def to_markdown(self) -> str:
        tf_mis = sum(l.mismatches for l in self.teacher_forced)
        tf_ties = sum(l.ties for l in self.teacher_forced)
        tf_line = (
            f"- Teacher-forced: {tf_mis} non-tie mismatches, {tf_ties} boundary ties "
            f"over {len(self.teacher_forced)} neuron layers — **{'OK' if self.teacher_forced_ok else 'FAIL'}**"
            if self.teacher_forced else "- Teacher-forced: not available for this runtime (free-running only)"
        )
        fr_mis = sum(l.mismatches + l.ties for l in self.free_running)
        lines = [
            f"### {self.a} vs {self.b} — {'SUCCESS' if self.passed else 'FAIL'}",
            "",
            f"Model `{self.model}`, {self.n_inputs} inputs, T = {self.T}, {self.dtype}.",
            "",
            tf_line,
            f"- Free-running: **{self.free_verdict}**"
            + (f" (first difference in `{self.first_divergence}`, {fr_mis} differing values downstream)"
               if self.first_divergence else ""),
            f"- Spikes occurred: {'yes' if self.spikes_occurred else 'NO (an all-zero comparison proves nothing)'}",
        ]
        for o in self.outputs:
            lines.append(
                f"- Output `{o.name}`: max |error| {o.max_abs_error:.3e} "
                f"(rtol {o.rtol:g}, atol {o.atol:g}) — {'OK' if o.ok else 'FAIL'}"
            )
        lines += [
            "",
            "| layer | neuron | elements | mismatches (TF) | ties (TF) | mismatches (free) | spikes a | spikes b | firing rate | tie ε |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        free = {l.name: l for l in self.free_running}
        for l in self.layers:
            f = free.get(l.name)
            lines.append(
                f"| `{l.name}` | {l.label} | {l.elements} | {l.mismatches} | {l.ties} | "
                f"{(f.mismatches + f.ties) if f else '—'} | {l.spikes_a} | {l.spikes_b} | "
                f"{l.firing_rate:.4f} | {l.tie_eps:.1e} |"
            )
        return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------


def _unit_roundoff(dtype: torch.dtype) -> float:
    return float(torch.finfo(dtype).eps) / 2


def _feeding_synapses(graph: Graph, name: str) -> list:
    """Synaptic ops (and attention) whose sums reach ``name`` without crossing a neuron."""
    nodes = graph.node_map()
    found, stack, seen = [], [name], set()
    while stack:
        v = stack.pop()
        if v in seen or v not in nodes:
            continue
        seen.add(v)
        n = nodes[v]
        if isinstance(n.op, O.NEURON_OPS) and v != name:
            continue
        if isinstance(n.op, _SYNAPSES + (O.SpikeLinearAttention, O.MemoryRead, O.TemplateGate)):
            found.append(n)
            continue
        stack.extend(n.inputs)
    return found


def _fan_in(node, shapes, run_result=None) -> Tuple[int, float]:
    """(fan-in K, max |weight|) of one feeding op."""
    op = node.op
    if isinstance(op, O.TemplateGate):  # a sum over the T steps of x with softmax weights <= 1
        rec = run_result.records.get(node.inputs[0]) if run_result is not None else None
        return (int(rec.value.shape[0]) if rec is not None else 4), abs(op.scale)
    if isinstance(op, (O.Conv2d, O.Conv1d, O.Linear, O.GateLinear)):
        return int(np.prod(op.weight.shape[1:])), float(np.abs(op.weight).max(initial=0.0))
    if isinstance(op, O.MemoryRead):  # each output sums C/H products of q with memory entries
        return int(op.memory.shape[2]), abs(op.scale) * float(np.abs(op.memory).max(initial=0.0))
    # attention: each output sums C/h products of q with kv entries that are sums over N tokens
    c, n = shapes[node.inputs[0]]
    return int(n * (c // op.num_heads)), abs(op.scale)


def tie_epsilons(graph: Graph, run_result: RunResult) -> Dict[str, float]:
    """The tie epsilon of every neuron layer (module docstring)."""
    shapes = graph.shapes()
    u = _unit_roundoff(run_result.dtype)
    window_of = {n.name: n.op.window for n in graph.neurons()}
    out = {}
    for nrn in graph.neurons():
        inp = nrn.inputs[0]
        terms, mag = _REST_TERMS, 0.0
        for syn in _feeding_synapses(graph, inp):
            k, wmax = _fan_in(syn, shapes, run_result)
            src = syn.inputs[0]
            window = window_of.get(src, 1)
            terms += k * window
            mag += window * k * wmax * max(1.0, float(run_result.records[src].value.abs().max()) if src in run_result.records else 1.0)
        rec = run_result.records.get(inp)
        if rec is not None:
            mag += float(rec.value.abs().max())
        nu = terms * u
        gamma = nu / (1 - nu) if nu < 1 else float("inf")
        out[nrn.name] = 4.0 * gamma * max(mag, 1.0)
    return out


def _layer_report(name, label, qa, qb, margin_a, margin_b, eps, va, vb) -> LayerReport:
    """Compare one neuron layer. ``margin_b`` may be None (a backend that does not expose its
    membrane); then a tie needs only the reference at the boundary."""
    qb = qb.to(qa.dtype)
    diff = qa != qb
    # a tie: both membranes within eps of a rounding boundary and the counts one apart (both
    # runs sit on the same boundary); anything else that differs is a real mismatch
    tie = (margin_a < eps) & ((qa - qb).abs() == 1)
    if margin_b is not None:
        tie = tie & (margin_b.to(margin_a.dtype) < eps)
    return LayerReport(
        name=name,
        label=label,
        elements=int(qa.numel()),
        mismatches=int((diff & ~tie).sum()),
        ties=int((diff & tie).sum()),
        max_abs_error=float((va - vb.to(va.dtype)).abs().max()) if va.numel() else 0.0,
        spikes_a=int(qa.sum()),
        spikes_b=int(qb.sum()),
        firing_rate=float(qa.mean()) if qa.numel() else 0.0,
        tie_eps=float(eps),
    )


def _compare_layers(ga: Graph, ra: RunResult, rb: RunResult, eps: Dict[str, float]) -> List[LayerReport]:
    layers = []
    for n in ga.neurons():
        if n.name not in rb.records or rb.records[n.name].q is None:
            continue
        a, b = ra.records[n.name], rb.records[n.name]
        vb = b.value / n.op.norm if b.spikes is not None else b.value
        va = a.value / n.op.norm if a.spikes is not None else a.value
        layers.append(_layer_report(n.name, getattr(n.op, "label", n.op.kind), a.q, b.q, a.margin, b.margin,
                                    eps[n.name], va, vb))
    return layers


def _verdict(free: List[LayerReport]):
    first = next((l for l in free if l.mismatches or l.ties), None)
    if first is None:
        return "exact", None
    return ("tie-cascade" if first.mismatches == 0 else "mismatch"), first.name


def _output_reports(ya_by_name, yb_by_name, dtype, *, exact: bool = False) -> List[OutputReport]:
    """Outputs matched by position; ``exact``: tolerance 0 (integer outputs of fixed-point graphs)."""
    outs = []
    rtol, atol = (0.0, 0.0) if exact else (OUTPUT_RTOL.get(dtype, 1e-4), OUTPUT_ATOL.get(dtype, 1e-5))
    for (na, ya), (nb, yb) in zip(ya_by_name.items(), yb_by_name.items()):
        yb = yb.to(ya.dtype)
        err = float((ya - yb).abs().max()) if ya.numel() else 0.0
        ok = bool(ya.shape == yb.shape and torch.allclose(ya, yb, rtol=rtol, atol=atol))
        outs.append(OutputReport(name=na, max_abs_error=err, rtol=rtol, atol=atol, ok=ok))
    return outs


def compare_runs(ra: RunResult, rb: RunResult, rb_teacher: Optional[RunResult] = None, *, model: str = "") -> EquivalenceReport:
    """Build a report from a reference run ``ra``, a free-running run ``rb`` and, if given, a
    teacher-forced run ``rb_teacher`` of the other graph. Neuron layers are matched by name and
    graph outputs by position."""
    eps = tie_epsilons(rb.graph, rb)
    eps_a = tie_epsilons(ra.graph, ra)
    eps = {k: max(v, eps_a.get(k, 0.0)) for k, v in eps.items()}
    free = _compare_layers(ra.graph, ra, rb, eps)
    tf = _compare_layers(ra.graph, ra, rb_teacher, eps) if rb_teacher is not None else []
    verdict, first = _verdict(free)
    outs = _output_reports(ra.outputs, rb.outputs, ra.dtype)
    x0 = next(iter(ra.records.values())).value
    return EquivalenceReport(
        model=model or str(ra.graph.meta_dict().get("model", "")),
        a=ra.mode,
        b=rb.mode,
        dtype=str(ra.dtype).replace("torch.", ""),
        n_inputs=int(x0.shape[1]),
        T=int(x0.shape[0]),
        teacher_forced=tuple(tf),
        free_running=tuple(free),
        outputs=tuple(outs),
        free_verdict=verdict,
        first_divergence=first,
    )


def verify_modes(graph: Graph, inputs, a: str = "integer", b: str = "binary", *, dtype=torch.float64, model: str = "") -> EquivalenceReport:
    """Run ``graph`` in modes ``a`` and ``b`` on the same inputs and compare them (teacher-forced
    and free-running)."""
    ra = execute(graph, inputs, a, dtype=dtype)
    rb = execute(graph, inputs, b, dtype=dtype)
    rt = execute(graph, inputs, b, dtype=dtype, teacher=ra)
    return compare_runs(ra, rb, rt, model=model)


def compare_target(reference: RunResult, target_run, *, model: str = "") -> EquivalenceReport:
    """Compare a backend's :class:`spikedeploy.targets.TargetRun` with the reference run of the
    same graph (free-running: backends cannot be teacher-forced). Spike counts are matched by
    neuron node name, outputs by position. For a fixed-point graph the comparison is exact: no
    ties (tie ε 0), outputs (integers) equal with tolerance 0."""
    graph = reference.graph
    fixed = is_fixed(graph)
    # a fixed-point graph computes integers: no ties, outputs equal exactly
    eps = {n.name: 0.0 for n in graph.neurons()} if fixed else tie_epsilons(graph, reference)
    layers = []
    for n in graph.neurons():
        if n.name not in target_run.spike_counts:
            continue
        a = reference.records[n.name]
        qb = torch.as_tensor(target_run.spike_counts[n.name]).to(a.q.dtype)
        if qb.shape != a.q.shape:
            raise ValueError(
                f"target {target_run.target!r} returned spike counts of shape {list(qb.shape)} for "
                f"{n.name!r}; the reference has {list(a.q.shape)}"
            )
        layers.append(_layer_report(n.name, getattr(n.op, "label", n.op.kind), a.q, qb, a.margin, None,
                                    eps[n.name], a.q, qb))
    verdict, first = _verdict(layers)
    outs = _output_reports(reference.outputs, {k: torch.as_tensor(v) for k, v in target_run.outputs.items()},
                           reference.dtype, exact=fixed)
    x0 = next(iter(reference.records.values())).value
    return EquivalenceReport(
        model=model or str(graph.meta_dict().get("model", "")),
        a=f"reference ({reference.mode})",
        b=f"{target_run.target} ({target_run.encoding})",
        dtype=str(reference.dtype).replace("torch.", ""),
        n_inputs=int(x0.shape[1]),
        T=int(x0.shape[0]),
        teacher_forced=(),
        free_running=tuple(layers),
        outputs=tuple(outs),
        free_verdict=verdict,
        first_divergence=first,
    )


# ---------------------------------------------------------------------------------------------
# fixed point against float: the measured cost of quantization (issue 14)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PrecisionLayer:
    """One neuron layer: the quantization of what feeds it and what it does to the spikes.

    ``weight_error_max``/``weight_error_rms``: the largest relative weight error of the quantized
    ops feeding the layer (``max|W - W_q| / max|W|`` and ``rms(W - W_q) / rms(W)``, from the plan;
    a constant factor (attention scale, Scale) counts as a one-element weight). ``mantissa_max``:
    the smallest ``max|mantissa|`` among them (127 = all 8 bits in use). ``bias_error_max``: the
    largest absolute bias/constant error, in membrane units. ``neuron_error``: the largest
    quantization error of the neuron's own parameters (12-bit leak, reset, threshold).
    ``saturated``: clamps of the 24-bit state in the fixed reference run (free-running);
    ``target_saturated``: the clamps a target run reported (None: no target run, or the target
    does not count them). Mismatches: positions where q differs from the float run,
    teacher-forced (the fixed layer fed the float run's spikes) and free-running; ``q_abs_diff``:
    ``sum |q_fixed - q_float|`` free-running."""

    name: str
    label: str
    elements: int
    synapses: Tuple[str, ...]
    weight_error_max: float
    weight_error_rms: float
    mantissa_max: Optional[int]
    clipped: int
    bias_error_max: float
    neuron_error: float
    saturated: int
    mismatches_tf: int
    mismatches_free: int
    q_abs_diff: int
    spikes_float: int
    spikes_fixed: int
    target_saturated: Optional[int] = None


@dataclass(frozen=True)
class PrecisionOutput:
    """A graph output: the fixed run's decoded values against the float run's."""

    name: str
    exponent: int  #: the integer output is ``value * 2**exponent``
    max_abs_error: float
    rms_error: float
    max_abs_float: float  #: the scale of the output (max |float value|)

    @property
    def relative_error(self) -> float:
        return self.max_abs_error / self.max_abs_float if self.max_abs_float > 0 else 0.0


@dataclass(frozen=True)
class PrecisionReport:
    """Fixed point (``b``) against the float graph it was quantized from (``a``), per neuron layer
    and per output (:func:`compare_precision`). The numbers are measurements, not a pass/fail
    test: ``passed`` means the fixed graph ran in exact integers (the reference checks every
    device value) and both runs fired; how large a quantization error is acceptable is the user's
    call. Saturation, mismatches and output errors are all reported."""

    model: str
    encoding: str
    weight_bits: int
    state_bits: int
    n_inputs: int
    T: int
    calibration: str
    layers: Tuple[PrecisionLayer, ...]
    outputs: Tuple[PrecisionOutput, ...]
    boundary_saturated: Tuple[Tuple[str, int], ...]  #: Quantize (host -> device) node, clamps
    range_violations: Tuple[Tuple[str, int], ...]  #: (value, bits over) from the plan
    first_divergence: Optional[str]  #: first layer whose free-running q differs
    target: str = ""  #: the target whose saturation counts ``target_saturated`` holds
    target_inputs: int = 0  #: the inputs that target ran (the first ones)

    @property
    def spikes_occurred(self) -> bool:
        return sum(l.spikes_float for l in self.layers) > 0 and sum(l.spikes_fixed for l in self.layers) > 0

    @property
    def passed(self) -> bool:
        return self.spikes_occurred

    @property
    def saturated(self) -> int:
        return sum(l.saturated for l in self.layers) + sum(n for _, n in self.boundary_saturated)

    def totals(self) -> dict:
        el = sum(l.elements for l in self.layers)
        tf = sum(l.mismatches_tf for l in self.layers)
        fr = sum(l.mismatches_free for l in self.layers)
        return {"elements": el, "mismatches_tf": tf, "mismatches_free": fr,
                "mismatch_rate_tf": tf / el if el else 0.0, "mismatch_rate_free": fr / el if el else 0.0,
                "saturated": self.saturated, "spikes_float": sum(l.spikes_float for l in self.layers),
                "spikes_fixed": sum(l.spikes_fixed for l in self.layers),
                "weight_error_max": max((l.weight_error_max for l in self.layers), default=0.0)}

    def with_target_saturation(self, target: str, counts: Dict[str, int], n_inputs: int) -> "PrecisionReport":
        """The report with the saturation counts a ``target`` run on the first ``n_inputs`` inputs
        reported (neuron name -> clamps)."""
        from dataclasses import replace

        return replace(self, target=target, target_inputs=int(n_inputs),
                       layers=tuple(replace(l, target_saturated=counts.get(l.name, l.target_saturated))
                                    for l in self.layers))

    def to_dict(self) -> dict:
        d = asdict(self)
        d["outputs"] = [dict(asdict(o), relative_error=o.relative_error) for o in self.outputs]
        d.update(passed=self.passed, spikes_occurred=self.spikes_occurred, totals=self.totals())
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def to_markdown(self) -> str:
        return self.summary_markdown() + "\n" + self.table_markdown()

    def summary_markdown(self) -> str:
        """The heading and the totals (everything but the per-layer table)."""
        t = self.totals()
        tsat = [l.target_saturated for l in self.layers if l.target_saturated is not None]
        lines = [
            f"### float {self.encoding} vs fixed point ({self.weight_bits}-bit weights, {self.state_bits}-bit state) — "
            f"{'MEASURED' if self.passed else 'FAIL'}",
            "",
            f"Model `{self.model}`, {self.n_inputs} inputs, T = {self.T}; calibration: {self.calibration}.",
            "",
            f"- q mismatches, teacher-forced (each fixed layer fed the float run's spikes): {t['mismatches_tf']:,} of "
            f"{t['elements']:,} ({100 * t['mismatch_rate_tf']:.3f} %)",
            f"- q mismatches, free-running: {t['mismatches_free']:,} ({100 * t['mismatch_rate_free']:.3f} %)"
            + (f", first in `{self.first_divergence}`" if self.first_divergence else " (identical spike counts)"),
            f"- Saturation events (24-bit state and host boundary clamps, fixed reference): {t['saturated']:,}"
            + (f"; {self.target} run on the first {self.target_inputs} inputs: {sum(tsat):,}" if tsat else ""),
            f"- Largest relative weight error: {t['weight_error_max']:.2e}",
            f"- Spikes: float {t['spikes_float']:,}, fixed {t['spikes_fixed']:,}"
            + ("" if self.spikes_occurred else " — NO SPIKES (an all-zero comparison proves nothing)"),
        ]
        for o in self.outputs:
            lines.append(f"- Output `{o.name}` (integers x 2^-{o.exponent}): max |fixed - float| {o.max_abs_error:.3e} "
                         f"({100 * o.relative_error:.2f} % of max |float| {o.max_abs_float:.3e}), rms {o.rms_error:.3e}")
        for name, n in self.boundary_saturated:
            if n:
                lines.append(f"- Host -> device boundary `{name}`: {n:,} values clamped to the {self.state_bits}-bit message")
        if self.range_violations:
            lines.append("- Values beyond the calibrated range (their saturation is counted above): "
                         + ", ".join(f"`{v}` (+{b} bits)" for v, b in self.range_violations))
        return "\n".join(lines) + "\n"

    def table_markdown(self) -> str:
        """The per-layer table (``fed by`` names shortened to what differs from the layer's name)."""
        has_target = any(l.target_saturated is not None for l in self.layers)
        lines = [
            "| layer | neuron | fed by | weight err max | weight err rms | mantissa max | bias err max | neuron err "
            "| saturated" + (f" | saturated ({self.target}, {self.target_inputs} inputs)" if has_target else "")
            + " | q mism. TF | q mism. free | spikes float | spikes fixed |",
            "|---|---|---|---:|---:|---:|---:|---:|---:" + ("|---:" if has_target else "") + "|---:|---:|---:|---:|",
        ]
        for l in self.layers:
            fed = ", ".join(f"`{_relative_name(s, l.name)}`" for s in l.synapses[:3]) + (
                f" +{len(l.synapses) - 3}" if len(l.synapses) > 3 else "")
            lines.append(
                f"| `{l.name}` | {l.label} | {fed or '—'} | {l.weight_error_max:.2e} | {l.weight_error_rms:.2e} | "
                f"{'—' if l.mantissa_max is None else l.mantissa_max} | {l.bias_error_max:.1e} | {l.neuron_error:.1e} | "
                f"{l.saturated:,}" + (f" | {'—' if l.target_saturated is None else format(l.target_saturated, ',')}"
                                      if has_target else "")
                + f" | {l.mismatches_tf:,} | {l.mismatches_free:,} | {l.spikes_float:,} | {l.spikes_fixed:,} |"
            )
        return "\n".join(lines) + "\n"


def _relative_name(name: str, to: str) -> str:
    """``name`` without the dotted path components it shares with ``to`` (``…`` marks the cut)."""
    a, b = name.split("."), to.split(".")
    k = 0
    while k < len(a) - 1 and k < len(b) - 1 and a[k] == b[k]:
        k += 1
    return ("…" + ".".join(a[k:])) if k else name


def _upstream(graph: Graph, name: str) -> List[str]:
    """The nodes whose values reach ``name`` without crossing a neuron (``name`` included), in
    graph order."""
    nodes = graph.node_map()
    seen, stack = set(), [name]
    while stack:
        v = stack.pop()
        if v in seen or v not in nodes:
            continue
        seen.add(v)
        if isinstance(nodes[v].op, O.NEURON_OPS) and v != name:
            continue
        stack.extend(nodes[v].inputs)
    return [n.name for n in graph.nodes if n.name in seen and n.name != name
            and not (isinstance(n.op, O.NEURON_OPS))]


def _feeding_quantization(plan_layers: dict, names: Sequence[str]) -> dict:
    """The quantization errors of the ops ``names`` (plan entries), aggregated for one layer."""
    emax, erms, mant, clipped, berr, syn = 0.0, 0.0, [], 0, 0.0, []
    for v in names:
        info = plan_layers.get(v)
        if info is None or "unit" in info or "threshold" in info:  # not quantized here, or a neuron
            continue
        e = info.get("weight_error_max", info.get("constant_error"))
        if e is None and "bias_error_max" not in info and "constant_error_max" not in info:
            continue  # exact (dyadic pooling/mean/upsampling)
        syn.append(v)
        if e is not None:
            emax = max(emax, float(e))
            erms = max(erms, float(info.get("weight_error_rms", e)))
        if "mantissa_max" in info:
            mant.append(int(info["mantissa_max"]))
        clipped += int(info.get("weight_clipped", 0)) + int(info.get("bias_clipped", 0))
        berr = max(berr, float(info.get("bias_error_max", 0.0)), float(info.get("constant_error_max", 0.0)))
    return {"synapses": tuple(syn), "weight_error_max": emax, "weight_error_rms": erms,
            "mantissa_max": min(mant) if mant else None, "clipped": clipped, "bias_error_max": berr}


def compare_precision(float_graph: Graph, fixed_graph: Graph, inputs, *, float_run: Optional[RunResult] = None,
                      model: str = "", calibration: str = "") -> PrecisionReport:
    """The fixed-point graph ``fixed_graph`` (made from the lowered ``float_graph`` by
    :class:`spikedeploy.passes.QuantizeFixedPoint`) against it on ``inputs``: per neuron layer the
    quantization errors of the ops feeding it (the plan), the saturation of the fixed reference run,
    the q mismatches teacher-forced (``run(fixed, x, teacher=float_run)``) and free-running, and per
    output the error of the decoded fixed outputs against the float ones. ``float_run``: the float
    graph's run on ``inputs`` if already made (float64)."""
    from spikedeploy.passes.quantize import decode_outputs, fixed_plan

    plan = fixed_plan(fixed_graph)
    if float_run is None:
        float_run = run(float_graph, inputs, dtype=torch.float64)
    free = run(fixed_graph, inputs)
    forced = run(fixed_graph, inputs, teacher=float_run)
    nodes = fixed_graph.node_map()
    layers = []
    for n in fixed_graph.neurons():
        if n.name not in float_run.records:
            continue
        qa, qb, qt = float_run.records[n.name].q, free.records[n.name].q, forced.records[n.name].q
        info = plan["layers"].get(n.name, {})
        nerr = max(float(info.get(k, 0.0)) for k in ("leak_error_max", "reset_error", "threshold_error"))
        up = _upstream(fixed_graph, n.name)
        feed = _feeding_quantization(plan["layers"], up)
        feed["synapses"] += tuple(v for v in up if isinstance(nodes[v].op, O.Quantize))  # the host boundary
        layers.append(PrecisionLayer(
            name=n.name, label=getattr(n.op, "label", n.op.kind), elements=int(qa.numel()), **feed,
            neuron_error=nerr, saturated=int(free.records[n.name].saturated),
            mismatches_tf=int((qt != qa).sum()), mismatches_free=int((qb != qa).sum()),
            q_abs_diff=int((qb - qa).abs().sum()), spikes_float=int(qa.sum()), spikes_fixed=int(qb.sum()),
        ))
    decoded = decode_outputs(fixed_graph, free.outputs)
    outs = []
    for (name, yf), qname in zip(float_run.outputs.items(), fixed_graph.outputs):  # by position (execute renames)
        yq = decoded[qname].to(torch.float64)
        ya = yf.to(torch.float64)
        err = (yq - ya).abs()
        outs.append(PrecisionOutput(name=name, exponent=int(plan["outputs"][qname]),
                                    max_abs_error=float(err.max()) if err.numel() else 0.0,
                                    rms_error=float(err.pow(2).mean().sqrt()) if err.numel() else 0.0,
                                    max_abs_float=float(ya.abs().max()) if ya.numel() else 0.0))
    boundary = tuple((n.name, int(free.records[n.name].saturated)) for n in fixed_graph.nodes
                     if isinstance(n.op, O.Quantize))
    first = next((l.name for l in layers if l.mismatches_free), None)
    x0 = next(iter(float_run.records.values())).value
    return PrecisionReport(
        model=model or str(float_graph.meta_dict().get("model", "")),
        encoding=graph_mode(float_graph), weight_bits=int(plan["weight_bits"]), state_bits=int(plan["state_bits"]),
        n_inputs=int(x0.shape[1]), T=int(x0.shape[0]), calibration=calibration or "given inputs",
        layers=tuple(layers), outputs=tuple(outs), boundary_saturated=boundary,
        range_violations=tuple((str(v["value"]), int(v["bits_over"])) for v in plan.get("range_violations", ())),
        first_divergence=first,
    )


@dataclass(frozen=True)
class FixedTargetReport:
    """A target running a fixed-point graph against the fixed reference: the spike counts and
    outputs exactly (:func:`compare_target`, no ties, tolerance 0) and the saturation events per
    neuron layer (the reference's on the same inputs; equal counts required: a target that clamps
    elsewhere, or wraps, computes another network)."""

    equivalence: EquivalenceReport
    saturation_reference: Dict[str, int]
    saturation_target: Optional[Dict[str, int]]  #: None: the target does not count them

    @property
    def saturation_mismatches(self) -> Tuple[str, ...]:
        if self.saturation_target is None:
            return ()
        return tuple(k for k, v in self.saturation_reference.items() if self.saturation_target.get(k, 0) != v)

    @property
    def passed(self) -> bool:
        return self.equivalence.passed and not self.saturation_mismatches

    def to_dict(self) -> dict:
        d = self.equivalence.to_dict()
        d.update(saturation_reference=dict(self.saturation_reference), saturation_target=self.saturation_target,
                 saturation_mismatches=list(self.saturation_mismatches), passed=self.passed)
        return d

    def to_markdown(self) -> str:
        ref = sum(self.saturation_reference.values())
        if self.saturation_target is None:
            line = f"- Saturation events: reference {ref:,}; the target does not count them"
        else:
            bad = self.saturation_mismatches
            line = (f"- Saturation events: reference {ref:,}, target {sum(self.saturation_target.values()):,} — "
                    + ("**equal in every layer**" if not bad else f"**FAIL**: differ in {', '.join(bad)}"))
        md = self.equivalence.to_markdown()
        if not self.passed and self.equivalence.passed:
            md = md.replace("SUCCESS", "FAIL", 1)
        bullets, sep, table = md.partition("\n\n| layer |")
        return bullets + "\n" + line + sep + table
