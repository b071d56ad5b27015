"""Op-count audit: synaptic operations measured on the spike run, next to the papers' estimate.

The papers behind these models estimate energy as ``FLOPs x firing rate x E_AC``. This module
counts what the spike-expanded network actually does, layer by layer, and prints both columns with
their ratio and the reasons they differ (design notes §6).

Counting rules
--------------
All counts come from the per-neuron spike counts ``q`` (``[T, B, *s]``, integers >= 0) of one run:
the reference executor in spike mode (:func:`spikedeploy.reference.execute`) or a backend's
:class:`spikedeploy.targets.TargetRun` ``spike_counts`` (e.g. the Lava simulator). The counts are the
same in both encodings (the lowering is exact), so binary and graded runs give the same SynOps.

* **Spike-fed synaptic layer** (``Conv2d``, ``Conv1d``, ``Linear``, ``AvgPool2d``, ``MeanReduce``
  whose input is a neuron's output, possibly routed through ``Reshape``/``Permute``/``Concat``):
  every input position ``p`` has a *real fan-out* ``F[p]`` = the number of non-zero weights that
  connect it to output positions that exist (border-aware for padding, stride, dilation and groups).
  ``F`` is computed once per layer as the transposed convolution of an all-ones output map with the
  ``|W| > 0`` indicator kernel (Linear: non-zero weights per input column; AvgPool2d: windows
  covering the position; MeanReduce: 1).

  - **SynOps** = ``sum_p q[p] * F[p]`` — one accumulate per unit spike per real synapse;
  - **graded events** = ``sum_p [q[p] > 0] * F[p]`` — one event carrying the payload q per
    non-zero count; their **unit-spike equivalent** (``q * F``) equals the SynOps.

* **Spike x spike attention** (:class:`~spikedeploy.ir.ops.SpikeLinearAttention`), two rows:

  - ``[kv]`` memory writes: each co-occurring pair of a k unit spike (channel i) and a v unit spike
    (channel j) on the same token, same head, increments one memory cell:
    ``sum_tokens sum_{i,j in head} k[i, n] * v[j, n]`` (graded: pairs of non-zero entries, each
    carrying the payload product);
  - ``[q·kv]`` memory reads: each q unit spike reads one row of its head's memory, ``Cv/H``
    accumulates: ``sum q * Cv/H`` (graded: non-zero q entries x ``Cv/H``).

* **Space-time attention** (SpikeVideoFormer: :class:`~spikedeploy.ir.ops.SpikeHammingAttention`,
  SDHA ``(2Q − 1)[(2K − 1)ᵀV]``, and :class:`~spikedeploy.ir.ops.SpikeDotAttention`, ``Q(KᵀV)``,
  over joint / spatial / temporal / factorized token groups). What the counting form of the op
  does, event by event (:func:`space_time_attention_events`; checked against a brute-force
  enumeration of every spike of every token group in ``tests/core/test_sdha.py``):

  - ``[kᵀv]``: one memory-cell increment per co-occurring pair of a k unit spike and a v unit spike
    of the same head on the same token (the grouping decides which memory, not how many pairs);
  - ``[1ᵀv]`` (SDHA): one counter increment per v unit spike (the column counts that turn
    ``2kᵀv`` into ``(2K − 1)ᵀV``);
  - ``[q·M]`` (SDHA) / ``[q·kv]``: each q unit spike reads one row of its group's memory, ``dv =
    Cv/H`` accumulates;
  - ``[M, 1ᵀM]`` (SDHA): the spike-independent accumulates, ``2·d·dv`` per head and token group
    (forming ``M = 2kᵀv − 1ᵀv`` and its column sums ``1ᵀM``; the doubling is a shift) and one
    subtraction of ``1ᵀM`` per output element and step (``Cv·N``) -- the same in both columns.

  FLOPs per macro-step of each product (``K'ᵀV``, ``Q'M`` in the linear order of Eq. 10) are
  ``C·Cv·N/H`` (summed over the token groups of a joint attention this is still per frame: linear
  in T), and ``Cv·N`` for ``1ᵀv``; theoretical = FLOPs × T × rate (k's rate for kᵀv, v's for 1ᵀv,
  q's for q·M). Graded events: pairs of non-zero entries / non-zero counts (× dv for reads).

* **Template memory write** (:class:`~spikedeploy.ir.ops.MemoryWrite`, SpikeTrack's template
  branch, ``kv[h] = sum_n K_h[n]ᵀ V_h[n]``, a graph output): pair events as attention ``[kv]``:
  ``sum_t sum_tokens sum_heads k_count(h, n) * v_count(h, n)`` — each co-occurring pair of a k unit
  spike and a v unit spike of the same head on the same token increments one memory cell (graded:
  pairs of non-zero entries, each carrying the payload product).

* **Memory read** (:class:`~spikedeploy.ir.ops.MemoryRead`, SpikeTrack's search branch): a synapse
  whose weights are the cached memory (rewritten when the templates change, design notes §6). A q
  unit spike at channel ``c`` (row ``c'`` of head ``h``), token ``n``, at macro-step ``t`` reaches
  the ``Cv/H`` outputs of head ``h`` at token ``n`` through the row ``memory[t, h, c', :]``; its
  real fan-out is the number of **non-zero** entries of that row (``T_mem = 1``: the same memory
  every step). SynOps = ``sum q * F``, graded events = ``sum [q > 0] * F`` as for any synapse; the
  all-weights fan-out is ``Cv/H``, so the ratio to the estimate is the zero-entry factor alone.

* **Upsample** (:class:`~spikedeploy.ir.ops.Upsample`, bilinear or nearest, weight-free): on spikes
  a synapse whose weights are the interpolation matrix ``M`` (``out = M in`` per channel): the
  fan-out of an input position is the number of output positions with a non-zero interpolation
  weight from it (column non-zeros of ``M``, computed by resizing unit impulses with the reference's
  own ``F.interpolate``; the 2-D weight is the product of the row and column weights, so the count
  is the product of the per-axis counts; border clamping and exactly-zero weights are taken into
  account). On real values (SpikeTrack's retriever upsamples a convolution's output) it is host
  MACs.

* **Host / real-valued layers**: a synaptic op (or an attention) whose input is not spikes — the
  first convolution on pixels, a head fed by a mean of spikes — is counted as dense **MACs** =
  its FLOPs per macro-step and flagged ``host=True``. Host MACs are listed separately and never
  added to the spike-op totals.

* **Neuron updates**: a neuron layer of ``n`` neurons is updated once per macro-step in graded
  encoding and once per sub-step of its window (D sub-steps, the hardware time steps in which it
  integrates its input and emits its spikes) in binary encoding: ``n * T * (D if binary else 1)``
  per input. They are charged only by profiles with a neuron energy (e.g. ``loihi``).

* Graded accumulators (residual ``Add``, ``AddConstant``, ``Scale``, ``BatchNorm`` on membranes)
  are not counted.

* **Time-axis routing** (``RepeatTime``, ``SelectStep``, ``StackSteps``; SpikeTrack T = 3) moves
  spikes between macro-steps without arithmetic: it costs nothing, and the layers it feeds are
  counted on the routed spikes (a query repeated over 3 templates is read 3 times). Every row
  uses the number of macro-steps of its own input (:func:`~spikedeploy.ir.graph.value_steps`),
  which may differ from the graph input's T.

* **Template gate** (SpikeTrack T > 1): ``GateLinear`` (the gate MLP, tokens as channels) is a
  synapse like ``Linear``. ``GateSoftmax`` is a **host** step: counted as host MACs, ``4`` per
  element and step (max subtraction, exp, sum, divide; an estimate of the host's work, not
  SynOps), never mixed with spike ops. ``TemplateGate`` (``sum_t w_t x_t``) on spikes is a synapse
  of fan-out 1 whose weights the host writes every frame: SynOps = unit spikes of x, graded
  events = non-zero counts; FLOPs = elements of x per step (one MAC each).

The papers' method (theoretical)
--------------------------------
``FLOPs`` per macro-step = ``C_in * C_out * k_h * k_w * H_out * W_out / groups`` (Conv1d:
``C_in * C_out * k * L_out / groups``; Linear: ``in * out`` per position; AvgPool2d:
``C * k_h * k_w * H_out * W_out``; MeanReduce: input elements; attention: ``C * Cv * N / H`` for each
of kᵀv and q·kv; MemoryWrite (kᵀv) and MemoryRead (q·memory): ``C * Cv * N / H``; Upsample:
``C * H_out * W_out * taps``, 4 taps bilinear, 1 nearest), the **firing rate** = mean integer output q of the neuron feeding the layer over
all inputs, steps and positions (it can exceed 1), and **theoretical ops per frame** =
``FLOPs * T * rate`` (kᵀv and MemoryWrite use k's rate: k is taken as the spike side;
MemoryRead uses q's rate). Host layers are MACs =
``FLOPs * T`` in both columns. The ratio measured / theoretical factors exactly into a
border/position factor (``sum q * F_all / (FLOPs / n_in * sum q)``, ``F_all`` the fan-out with every
weight non-zero) and a zero-weight factor (``sum q * F / sum q * F_all``).

Units: a *frame* is one input (its T macro-steps); per-frame values are averages over the inputs;
per macro-step = per frame / T; per *sequence* = the sum over all inputs of the run.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from spikedeploy.energy import EnergyProfile, get_profile
from spikedeploy.errors import ConfigError, SpikedeployError
from spikedeploy.ir import ops as O
from spikedeploy.ir.graph import Graph, numel, validate, value_steps

__all__ = [
    "AuditError", "LayerAudit", "AuditReport", "audit_graph", "audit", "fanout_map", "layer_flops",
    "upsample_axis_matrices", "ENCODINGS", "space_time_attention_events",
]

ENCODINGS = ("binary", "graded")
_ROUTING = (O.Reshape, O.Permute, O.Concat, O.RepeatTime, O.SelectStep, O.StackSteps)
#: host MACs per element and step of the gate softmax (max subtraction, exp, sum, divide)
SOFTMAX_MACS_PER_ELEMENT = 4
#: graded accumulators on membranes: not counted (documented in the notes)
_ACCUMULATORS = (O.Scale, O.Add, O.AddConstant, O.BatchNorm)


class AuditError(SpikedeployError):
    """Bad input to the audit: no inputs, nothing spiking to audit, spike counts that do not fit."""

    exit_code = 2


# ---------------------------------------------------------------------------------------------
# per-layer geometry: FLOPs and fan-out maps
# ---------------------------------------------------------------------------------------------


def _output_padding(n_in: int, n_out: int, k: int, stride: int, pad: int, dil: int) -> int:
    return n_in - ((n_out - 1) * stride - 2 * pad + dil * (k - 1) + 1)


def layer_flops(op: O.Op, in_shape: Sequence[int], out_shape: Sequence[int]) -> int:
    """The papers' FLOPs of one synaptic op per macro-step per input (see the module docstring)."""
    if isinstance(op, O.Conv2d):
        return int(op.weight.size) * int(out_shape[1]) * int(out_shape[2])
    if isinstance(op, O.Conv1d):
        return int(op.weight.size) * int(out_shape[1])
    if isinstance(op, (O.Linear, O.GateLinear)):
        return int(op.weight.size) * (numel(in_shape) // int(in_shape[-1]))
    if isinstance(op, O.AvgPool2d):
        return int(out_shape[0]) * op.kernel[0] * op.kernel[1] * int(out_shape[1]) * int(out_shape[2])
    if isinstance(op, O.MeanReduce):
        return numel(in_shape)
    if isinstance(op, O.MemoryRead):  # C * Cv * N / H
        return int(in_shape[0]) * int(out_shape[0]) * int(in_shape[1]) // op.num_heads
    if isinstance(op, O.Upsample):
        return int(out_shape[0]) * int(out_shape[1]) * int(out_shape[2]) * _UPSAMPLE_TAPS[op.mode]
    raise TypeError(f"no FLOPs rule for {op.kind}")


#: interpolation taps per output value (the dense FLOPs of an Upsample)
_UPSAMPLE_TAPS = {"bilinear": 4, "nearest": 1}


def upsample_axis_matrices(op: O.Upsample, in_hw: Sequence[int]) -> Tuple[torch.Tensor, torch.Tensor]:
    """The per-axis interpolation matrices ``A_h [H_out, H_in]`` and ``A_w [W_out, W_in]`` of
    ``op`` (float64), obtained by resizing unit impulses with ``F.interpolate`` exactly as the
    reference does; the 2-D weight from input ``(i, j)`` to output ``(y, x)`` is
    ``A_h[y, i] * A_w[x, j]``."""
    hi, wi = int(in_hw[0]), int(in_hw[1])
    ho, wo = (int(d) for d in op.size)
    ac = op.align_corners if op.mode == "bilinear" else None

    def resize(z, size):
        return F.interpolate(z, size=size, mode=op.mode, align_corners=ac)

    eye_h = torch.eye(hi, dtype=torch.float64).reshape(hi, 1, hi, 1)
    eye_w = torch.eye(wi, dtype=torch.float64).reshape(wi, 1, 1, wi)
    a_h = resize(eye_h, (ho, 1))[:, 0, :, 0].T  # [H_out, H_in]
    a_w = resize(eye_w, (1, wo))[:, 0, 0, :].T  # [W_out, W_in]
    return a_h.contiguous(), a_w.contiguous()


def fanout_map(op: O.Op, in_shape: Sequence[int], out_shape: Sequence[int], *, nonzero_only: bool = True) -> torch.Tensor:
    """Real fan-out of every input position (per-step input shape, float64, exact integers): the
    number of (non-zero, if ``nonzero_only``) weights connecting it to output positions that exist.

    MemoryRead: the non-zero entries of the memory row each q position reads (all weights: Cv/H);
    a memory with ``T_mem > 1`` steps gives ``[T_mem, 1, C, N]`` (one map per macro-step, to
    broadcast against ``q [T, B, C, N]``). Upsample: the output positions with a non-zero
    interpolation weight (there are no weights to zero: both maps are the same)."""
    dt = torch.float64
    if isinstance(op, (O.Conv2d, O.Conv1d)):
        w = torch.as_tensor(np.array(op.weight))
        ind = (w != 0).to(dt) if nonzero_only else torch.ones_like(w, dtype=dt)
        if isinstance(op, O.Conv2d):
            ones = torch.ones((1,) + tuple(out_shape), dtype=dt)
            opad = tuple(
                _output_padding(in_shape[1 + a], out_shape[1 + a], w.shape[2 + a], op.stride[a], op.padding[a], op.dilation[a])
                for a in range(2)
            )
            f = F.conv_transpose2d(ones, ind, None, op.stride, op.padding, opad, op.groups, op.dilation)
        else:
            ones = torch.ones((1,) + tuple(out_shape), dtype=dt)
            opad = _output_padding(in_shape[1], out_shape[1], w.shape[2], op.stride, op.padding, op.dilation)
            f = F.conv_transpose1d(ones, ind, None, op.stride, op.padding, opad, op.groups, op.dilation)
        return f[0]
    if isinstance(op, (O.Linear, O.GateLinear)):
        w = np.asarray(op.weight)
        col = (w != 0).sum(axis=0) if nonzero_only else np.full(w.shape[1], w.shape[0])
        return torch.as_tensor(col, dtype=dt).expand(tuple(in_shape)).clone()
    if isinstance(op, O.AvgPool2d):
        ones = torch.ones((1, 1) + tuple(out_shape[1:]), dtype=dt)
        kern = torch.ones((1, 1) + tuple(op.kernel), dtype=dt)
        opad = tuple(
            _output_padding(in_shape[1 + a], out_shape[1 + a], op.kernel[a], op.stride[a], op.padding[a], 1)
            for a in range(2)
        )
        f = F.conv_transpose2d(ones, kern, None, op.stride, op.padding, opad)
        return f[0].expand(tuple(in_shape)).clone()
    if isinstance(op, O.MeanReduce):
        return torch.ones(tuple(in_shape), dtype=dt)
    if isinstance(op, O.MemoryRead):
        mem = torch.from_numpy(np.array(op.memory, copy=True))
        tm, h, c, cv = mem.shape
        if nonzero_only:
            rows = (mem != 0).sum(dim=-1).to(dt).reshape(tm, h * c)  # non-zero entries per memory row
        else:
            rows = torch.full((tm, h * c), float(cv), dtype=dt)
        f = rows[:, :, None].expand(tm, h * c, int(in_shape[1]))
        return f[0].clone() if tm == 1 else f[:, None].clone()
    if isinstance(op, O.Upsample):
        a_h, a_w = upsample_axis_matrices(op, in_shape[1:])
        nz = (a_h != 0).sum(dim=0).to(dt)[:, None] * (a_w != 0).sum(dim=0).to(dt)[None, :]
        return nz.expand(tuple(in_shape)).clone()
    raise TypeError(f"no fan-out rule for {op.kind}")


# ---------------------------------------------------------------------------------------------
# the report
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LayerAudit:
    """One row of the audit. Counts are per frame (one input, all its T macro-steps), averaged over
    the inputs; ``flops`` is per macro-step. ``kind``: "synapse" (spike-fed synaptic op),
    "attention" (a spike x spike part), "host" (real-valued input, MACs) or "neuron"."""

    name: str
    op: str
    kind: str
    host: bool
    source: str  #: neuron(s) feeding the layer (host layers: the real-valued input)
    flops: float  #: the papers' FLOPs per macro-step
    firing_rate: float  #: mean integer output q of the source (neurons: their own), all steps
    rates_per_step: Tuple[float, ...]  #: the firing rate at each macro-step t = 1..T
    theoretical_ops: float  #: the papers' estimate: FLOPs * T * firing rate (host: MACs)
    measured_synops: float  #: unit-spike synaptic ops (q * real fan-out)
    graded_events: float  #: one event per non-zero q (x fan-out)
    unit_equivalent: float  #: unit-spike equivalent of the graded events (= measured_synops)
    macs: float  #: host / real-valued MACs
    neuron_updates: float
    ratio: Optional[float]  #: measured / theoretical (None when the estimate is 0)
    energy_pj: float  #: measured energy with the report's profile
    theoretical_energy_pj: float  #: the papers' energy for this row (E_AC * theoretical, host E_MAC * MACs)
    border_factor: Optional[float] = None  #: part of the ratio due to borders/positions
    zero_weight_factor: Optional[float] = None  #: part of the ratio due to zero weights
    synops_per_step: Tuple[float, ...] = ()  #: measured SynOps per frame at each macro-step
    explanation: str = ""


def _fmt(v) -> str:
    if v is None:
        return "—"
    if isinstance(v, str):
        return v
    v = float(v)
    if not math.isfinite(v):
        return str(v)
    if v == int(v) and abs(v) < 1e15:
        return f"{int(v):,}"
    if abs(v) >= 100:
        return f"{v:,.1f}"
    return f"{v:.4g}"


def _fmt_e(pj: float) -> str:
    """Energy with a readable unit."""
    for unit, scale in (("mJ", 1e9), ("µJ", 1e6), ("nJ", 1e3)):
        if abs(pj) >= scale:
            return f"{pj / scale:.4g} {unit}"
    return f"{pj:.4g} pJ"


@dataclass(frozen=True)
class AuditReport:
    model: str
    runtime: str  #: what produced the spike counts: "reference-binary", "lava-binary", ...
    encoding: str
    profile: EnergyProfile
    n_inputs: int
    T: int
    layers: Tuple[LayerAudit, ...]
    totals: Dict[str, Dict[str, float]]  #: "per_macro_step" / "per_frame" / "per_sequence" -> quantity -> value
    weights: str = ""
    notes: Tuple[str, ...] = ()
    #: ops that read spikes but have no counting rule (named so nothing is dropped silently)
    uncounted: Tuple[str, ...] = ()
    precision: str = "float"  #: "fixed": the audited graph is in Loihi 2 fixed point
    #: fixed point: weight_bits, state_bits, saturated (clamps in the reference run; None if not run here)
    fixed_point: Optional[Dict[str, object]] = None
    #: graphs with DI-LIF: the adaptive spike budget per macro-step (:func:`adaptive_budget`)
    adaptive: Optional[Dict[str, object]] = None

    # -- views --------------------------------------------------------------------------------
    @property
    def spike_layers(self) -> Tuple[LayerAudit, ...]:
        return tuple(l for l in self.layers if l.kind in ("synapse", "attention"))

    @property
    def host_layers(self) -> Tuple[LayerAudit, ...]:
        return tuple(l for l in self.layers if l.kind == "host")

    @property
    def neuron_layers(self) -> Tuple[LayerAudit, ...]:
        return tuple(l for l in self.layers if l.kind == "neuron")

    def layer(self, name: str) -> LayerAudit:
        for l in self.layers:
            if l.name == name:
                return l
        raise KeyError(f"no audited layer named {name!r}")

    @property
    def spikes_occurred(self) -> bool:
        return self.totals["per_sequence"]["measured_synops"] > 0

    def firing_rate_table(self) -> List[Tuple[str, str, str, Tuple[float, ...]]]:
        """Rows (layer, op, source neuron, rate per time step) for every spike-fed layer: the shape
        of the SpikeTrack paper's supplementary firing-rate tables (layer -> rate per template step)."""
        return [(l.name, l.op, l.source, l.rates_per_step) for l in self.spike_layers]

    # -- serialization ------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {
            "model": self.model,
            "weights": self.weights,
            "runtime": self.runtime,
            "encoding": self.encoding,
            "profile": self.profile.to_dict(),
            "n_inputs": self.n_inputs,
            "T": self.T,
            "precision": self.precision,
            "fixed_point": self.fixed_point,
            "spikes_occurred": self.spikes_occurred,
            "totals": self.totals,
            "layers": [asdict(l) for l in self.layers],
            "firing_rates": [
                {"layer": n, "op": op, "source": s, "rates_per_step": list(r)} for n, op, s, r in self.firing_rate_table()
            ],
            "notes": list(self.notes),
            "uncounted": list(self.uncounted),
            "adaptive": self.adaptive,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, allow_nan=False)

    def _header_lines(self) -> List[str]:
        p = self.profile
        e_n = f", E_neuron = {p.e_neuron_pj:g} pJ" if p.e_neuron_pj is not None else " (neuron updates not charged)"
        return [
            f"- Model: `{self.model}`" + (f", weights: {self.weights}" if self.weights else ""),
            f"- Inputs: {self.n_inputs}, T = {self.T} macro-steps per input; spike encoding **{self.encoding}**",
            f"- Counts produced by: **{self.runtime}**",
        ] + self._precision_lines() + [
            f"- Energy profile **{p.name}**: E_AC = {p.e_ac_pj:g} pJ, E_MAC = {p.e_mac_pj:g} pJ{e_n}",
            f"- Source: {p.citation}",
        ]

    def _precision_lines(self) -> List[str]:
        if self.precision != "fixed":
            return []
        fp = self.fixed_point or {}
        sat = fp.get("saturated")
        return [f"- Precision: **fixed point** ({fp.get('weight_bits')}-bit weight mantissas, {fp.get('state_bits')}-bit "
                "state): the counts are the fixed graph's own spikes"
                + ("" if sat is None else f"; saturation events in the run: {sat:,}")]

    def _totals_rows(self) -> List[Tuple[str, str]]:
        return [
            ("measured_synops", "Spike SynOps, measured (unit spikes x real fan-out)"),
            ("graded_events", "Graded events (one per non-zero q)"),
            ("theoretical_ops", "Spike ops, the papers' estimate (FLOPs x T x rate)"),
            ("host_macs", "Host / real-valued MACs (separate, not spike ops)"),
            ("neuron_updates", "Neuron updates"),
            ("energy_synops_pj", "Energy: SynOps [pJ]"),
            ("energy_macs_pj", "Energy: host MACs [pJ]"),
            ("energy_neurons_pj", "Energy: neuron updates [pJ]"),
            ("energy_pj", "**Energy, measured [pJ]**"),
            ("theoretical_energy_pj", "**Energy, the papers' method [pJ]**"),
        ]

    def to_markdown(self) -> str:
        t = self.totals
        ratio = t["per_frame"].get("ratio")
        lines = [f"# Op-count audit — `{self.model}`", ""] + self._header_lines() + [""]
        lines += [
            f"Per frame: **{_fmt(t['per_frame']['measured_synops'])} SynOps measured** vs "
            f"{_fmt(t['per_frame']['theoretical_ops'])} estimated by the papers' method "
            f"(ratio {_fmt(ratio)}); energy {_fmt_e(t['per_frame']['energy_pj'])} measured vs "
            f"{_fmt_e(t['per_frame']['theoretical_energy_pj'])} by the papers' method.",
            "",
            "## Totals",
            "",
            f"| quantity | per macro-step | per frame | per sequence ({self.n_inputs} inputs) |",
            "|---|---:|---:|---:|",
        ]
        for key, label in self._totals_rows():
            lines.append(f"| {label} | {_fmt(t['per_macro_step'][key])} | {_fmt(t['per_frame'][key])} | "
                         f"{_fmt(t['per_sequence'][key])} |")
        lines.append(f"| Ratio measured / estimated (spike ops) | {_fmt(ratio)} | {_fmt(ratio)} | {_fmt(ratio)} |")
        lines += [
            "",
            "## Spike-driven layers (per frame)",
            "",
            "| layer | op | source neuron | FLOPs / step | firing rate | theoretical ops | measured SynOps | "
            "ratio | graded events | energy [pJ] | why they differ |",
            "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
        ]
        for l in self.spike_layers:
            lines.append(
                f"| `{l.name}` | {l.op} | {l.source} | {_fmt(l.flops)} | {l.firing_rate:.4f} | "
                f"{_fmt(l.theoretical_ops)} | {_fmt(l.measured_synops)} | {_fmt(l.ratio)} | "
                f"{_fmt(l.graded_events)} | {_fmt(l.energy_pj)} | {l.explanation} |"
            )
        lines += [
            "",
            "## Host / real-valued layers (MACs, listed separately, never counted as spike ops)",
            "",
            "| layer | op | input | FLOPs / step | MACs / frame | energy [pJ] | note |",
            "|---|---|---|---:|---:|---:|---|",
        ]
        for l in self.host_layers:
            lines.append(f"| `{l.name}` | {l.op} | {l.source} | {_fmt(l.flops)} | {_fmt(l.macs)} | "
                         f"{_fmt(l.energy_pj)} | {l.explanation} |")
        if not self.host_layers:
            lines.append("| — | | | | | | none |")
        lines += [
            "",
            "## Neuron layers",
            "",
            "| layer | neuron | updates / frame | firing rate (mean q) | energy [pJ] | note |",
            "|---|---|---:|---:|---:|---|",
        ]
        for l in self.neuron_layers:
            lines.append(f"| `{l.name}` | {l.op} | {_fmt(l.neuron_updates)} | {l.firing_rate:.4f} | "
                         f"{_fmt(l.energy_pj)} | {l.explanation} |")
        steps = " | ".join(f"T{i + 1}" for i in range(self.T))
        lines += [
            "",
            "## Firing rate per layer and time step",
            "",
            "Mean integer output of the neuron feeding each layer (the papers' definition; it can exceed 1), "
            "in the shape of the SpikeTrack supplementary tables (layer → rate per template step).",
            "",
            f"| layer | op | source neuron | {steps} |",
            "|---|---|---|" + "---:|" * self.T,
        ]
        for name, op, src, rates in self.firing_rate_table():
            lines.append(f"| `{name}` | {op} | {src} | " + " | ".join(f"{r:.4f}" for r in rates) + " |")
        if self.adaptive:
            lines += ["", f"## {ADAPTIVE_TITLE}", "", self._adaptive_text(), ""]
            head, rows = self._adaptive_table()
            lines += ["| " + " | ".join(head) + " |", "|" + "---:|" * len(head)]
            lines += ["| " + " | ".join(r) + " |" for r in rows]
        if self.uncounted:
            lines += ["", "## Not counted (no counting rule for these spike consumers)", ""]
            lines += [f"- {u}" for u in self.uncounted]
        lines += ["", "## How the counts are made", ""] + [f"- {n}" for n in self.notes] + [""]
        return "\n".join(lines)

    def _adaptive_text(self) -> str:
        a = self.adaptive
        ratio = a["fixed_synops_per_frame"] and a["synops_per_frame"] / a["fixed_synops_per_frame"]
        return (f"{len(a['layers'])} DI-LIF layers choose their firing limit D per macro-step (frame) from their "
                f"input, D = clamp(round(2·sigmoid(w·mean(x) + b)·D_init), 1, 2·D_init). The same network with D "
                f"fixed at D_init (every DI-LIF an I-LIF with D = D_init, pass `FixDynamicLimit`) on the same inputs: "
                f"{_fmt(a['fixed_synops_per_frame'])} SynOps per frame against {_fmt(a['synops_per_frame'])} with "
                f"DI-LIF (ratio DI-LIF / fixed D = {_fmt(ratio)}). Input density: mean input value per element "
                f"(for event voxel grids: events per cell and bin); active: share of non-zero input elements. "
                f"D is averaged over the inputs.")

    def _adaptive_table(self) -> Tuple[List[str], List[List[str]]]:
        a = self.adaptive
        head = ["step", "input density", "active input", "mean D", "min D", "max D", "SynOps (DI-LIF)",
                "SynOps (fixed D)", "DI-LIF / fixed"]
        d = np.array([a["d_per_step"][n] for n in a["layers"]])  # [layers, T]
        rows = []
        for t in range(d.shape[1]):
            syn, fix = a["synops_per_step"][t], a["fixed_synops_per_step"][t]
            rows.append([str(t + 1), f"{a['input_density'][t]:.4g}", f"{a['input_active'][t]:.4g}",
                         f"{d[:, t].mean():.2f}", f"{d[:, t].min():.2f}", f"{d[:, t].max():.2f}", _fmt(syn), _fmt(fix),
                         _fmt(syn / fix if fix else None)])
        return head, rows

    def to_html(self) -> str:
        from spikedeploy.htmlreport import HtmlPage, audit_figures

        page = HtmlPage(f"Op-count audit — {self.model}")
        page.heading(f"Op-count audit — {self.model}", 1)
        page.bullets([_md_inline(s[2:]) for s in self._header_lines()], html=True)
        t = self.totals
        page.heading("Totals", 2)
        rows = [[label.replace("**", ""), _fmt(t["per_macro_step"][k]), _fmt(t["per_frame"][k]), _fmt(t["per_sequence"][k])]
                for k, label in self._totals_rows()]
        rows.append(["Ratio measured / estimated (spike ops)"] + [_fmt(t["per_frame"].get("ratio"))] * 3)
        page.table(["quantity", "per macro-step", "per frame", f"per sequence ({self.n_inputs} inputs)"], rows,
                   align="lrrr")
        page.heading("Per-layer plots", 2)
        for fig, caption in audit_figures(self):
            page.figure(fig, caption)
        page.heading("Spike-driven layers (per frame)", 2)
        page.table(
            ["layer", "op", "source neuron", "FLOPs / step", "firing rate", "theoretical ops", "measured SynOps",
             "ratio", "graded events", "energy [pJ]", "why they differ"],
            [[l.name, l.op, l.source, _fmt(l.flops), f"{l.firing_rate:.4f}", _fmt(l.theoretical_ops),
              _fmt(l.measured_synops), _fmt(l.ratio), _fmt(l.graded_events), _fmt(l.energy_pj), l.explanation]
             for l in self.spike_layers],
            align="nlnrrrrrrrt",
        )
        page.heading("Host / real-valued layers (MACs, never counted as spike ops)", 2)
        page.table(["layer", "op", "input", "FLOPs / step", "MACs / frame", "energy [pJ]", "note"],
                   [[l.name, l.op, l.source, _fmt(l.flops), _fmt(l.macs), _fmt(l.energy_pj), l.explanation]
                    for l in self.host_layers] or [["—", "", "", "", "", "", "none"]], align="nlnrrrt")
        page.heading("Neuron layers", 2)
        page.table(["layer", "neuron", "updates / frame", "firing rate", "energy [pJ]", "note"],
                   [[l.name, l.op, _fmt(l.neuron_updates), f"{l.firing_rate:.4f}", _fmt(l.energy_pj), l.explanation]
                    for l in self.neuron_layers], align="nlrrrt")
        page.heading("Firing rate per layer and time step", 2)
        page.paragraph("Mean integer output of the neuron feeding each layer (the papers' definition; it can exceed 1), "
                       "in the shape of the SpikeTrack supplementary tables (layer → rate per template step).")
        page.table(["layer", "op", "source neuron"] + [f"T{i + 1}" for i in range(self.T)],
                   [[n, op, s] + [f"{r:.4f}" for r in rates] for n, op, s, rates in self.firing_rate_table()],
                   align="nln" + "r" * self.T)
        if self.adaptive:
            from spikedeploy.htmlreport import adaptive_budget_figure

            page.heading(ADAPTIVE_TITLE, 2)
            page.paragraph(self._adaptive_text())
            page.figure(adaptive_budget_figure(self.adaptive),
                        "Top: D per DI-LIF layer (rows) and step (columns). Middle: the input's density per step. "
                        "Bottom: measured SynOps per step, DI-LIF against the same network with D fixed at D_init.")
            head, rows = self._adaptive_table()
            page.table(head, rows, align="r" * len(head))
        if self.uncounted:
            page.heading("Not counted (no counting rule for these spike consumers)", 2)
            page.bullets(list(self.uncounted))
        page.heading("How the counts are made", 2)
        page.bullets(list(self.notes))
        return page.render()

    def write(self, output, *, overwrite: bool = False, inputs=()) -> Path:
        """Write ``report.md``, ``report.json`` and ``report.html`` into ``output`` atomically."""
        from spikedeploy.fsutil import atomic_directory

        md, js, html = self.to_markdown(), self.to_json(), self.to_html()
        with atomic_directory(output, overwrite=overwrite, inputs=inputs, command="audit") as tmp:
            (tmp / "report.md").write_text(md, encoding="utf-8")
            (tmp / "report.json").write_text(js, encoding="utf-8")
            (tmp / "report.html").write_text(html, encoding="utf-8")
        return Path(output)


def _md_inline(text: str) -> str:
    """Markdown bold/code -> HTML (for the header lines), escaping everything else."""
    import html
    import re

    s = html.escape(text)
    s = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", s)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", s)


NOTES = (
    "SynOp: one accumulate of one weight into one existing target, caused by one unit spike. A unit spike "
    "costs its real fan-out: the non-zero weights that reach output positions that exist (borders, stride, "
    "dilation and groups taken into account).",
    "Graded events: one event per non-zero spike count q (payload q) per real synapse; their unit-spike "
    "equivalent q x fan-out equals the SynOps.",
    "Attention [kv]: every co-occurring pair of a k unit spike and a v unit spike on the same token and head "
    "increments one memory cell (sum over tokens of k_head_count x v_head_count). Attention [q·kv]: every q unit "
    "spike reads one memory row of Cv/H cells.",
    "MemoryWrite (template memory, kᵀv): co-occurring k x v unit-spike pairs per head and token, as attention [kv]. "
    "MemoryRead (search branch): a synapse whose weights are the cached memory; a q unit spike costs the non-zero "
    "entries of the memory row it reads (at most Cv/H).",
    "Upsample on spikes: a synapse whose weights are the interpolation matrix; a unit spike costs the output "
    "positions with a non-zero interpolation weight from its position. Upsample on real values: host MACs "
    "(C·H_out·W_out·taps, 4 taps bilinear, 1 nearest).",
    "Host / real-valued layers (input not spikes: the first layer on pixels, a head fed by a mean of spikes) are "
    "dense MACs = FLOPs per macro-step; they are listed separately and never added to the spike ops.",
    "Neuron updates: neurons x T x D sub-steps in binary encoding (a neuron integrates and emits over its D "
    "sub-step window), neurons x T in graded encoding.",
    "The papers' method: FLOPs (C_in·C_out·k²·H_out·W_out/groups; Linear in·out) x T x firing rate, the firing "
    "rate being the mean integer output of the neuron feeding the layer; kᵀv takes k as the spike side. The "
    "ratio measured/estimated = border/position factor x zero-weight factor; the papers' first layer is MACs.",
    "Graded accumulators (residual adds, position embeddings, Scale, BatchNorm on membranes) are not counted.",
    "Per frame = one input (all its T macro-steps), averaged over the inputs; per macro-step = per frame / T; "
    "per sequence = the sum over all inputs.",
)


# ---------------------------------------------------------------------------------------------
# counting
# ---------------------------------------------------------------------------------------------


@dataclass
class _Acc:
    """Exact sequence totals of one row (sums over all inputs), per macro-step."""

    synops: np.ndarray  #: [T] int
    graded: np.ndarray  #: [T] int
    macs: int = 0
    neuron_updates: int = 0


def _route(op: O.Op, xs: List[torch.Tensor]) -> torch.Tensor:
    if isinstance(op, O.Reshape):
        x = xs[0]
        return x.reshape(tuple(x.shape[:2]) + tuple(op.shape))
    if isinstance(op, O.Permute):
        return xs[0].permute((0, 1) + tuple(p + 2 for p in op.perm))
    if isinstance(op, O.RepeatTime):
        return xs[0].repeat((int(op.times),) + (1,) * (xs[0].dim() - 1))
    if isinstance(op, O.SelectStep):
        return xs[0][op.step:op.step + 1]
    if isinstance(op, O.StackSteps):
        return torch.cat(xs, dim=0)
    return torch.cat(xs, dim=op.axis + 2)


def _spike_values(graph: Graph, q_of: Mapping[str, torch.Tensor]):
    """For every value carrying spikes (a neuron output, or routing of spikes only): its routed counts
    and the neurons it comes from."""
    spikes: Dict[str, torch.Tensor] = {}
    sources: Dict[str, Tuple[str, ...]] = {}
    for n in graph.nodes:
        if isinstance(n.op, O.NEURON_OPS):
            spikes[n.name] = q_of[n.name]
            sources[n.name] = (n.name,)
        elif isinstance(n.op, _ROUTING) and all(i in spikes for i in n.inputs):
            spikes[n.name] = _route(n.op, [spikes[i] for i in n.inputs])
            srcs: List[str] = []
            for i in n.inputs:
                srcs += [s for s in sources[i] if s not in srcs]
            sources[n.name] = tuple(srcs)
    return spikes, sources


def _per_step_sum(x: torch.Tensor) -> np.ndarray:
    """[T, B, ...] -> exact integer sums per macro-step (over inputs and positions)."""
    s = x.reshape(x.shape[0], -1).sum(dim=1)
    return np.asarray([int(round(float(v))) for v in s], dtype=np.int64)


def _rates(q: torch.Tensor) -> Tuple[float, Tuple[float, ...]]:
    """Mean q over everything, and per macro-step."""
    per_step = _per_step_sum(q)
    per_pos = q[0, 0].numel() * q.shape[1]
    total = int(per_step.sum())
    return total / (per_pos * q.shape[0]), tuple(float(v) / per_pos for v in per_step)


def _fanouts(op, in_shape, out_shape, cache: Optional[dict], name: str):
    """Both fan-out maps of ``op`` (non-zero weights, all weights). ``cache`` (a dict the caller
    keeps between audits of the same graph, e.g. one per tracked frame) holds them per node; an
    entry is used only for the very same op object and shapes, so a changed op (a new template
    memory) is computed again."""
    key = (tuple(in_shape), tuple(out_shape))
    hit = cache.get(name) if cache is not None else None
    if hit is not None and hit[0] is op and hit[1] == key:
        return hit[2], hit[3]
    f = fanout_map(op, in_shape, out_shape)
    f_all = fanout_map(op, in_shape, out_shape, nonzero_only=False)
    if cache is not None:
        cache[name] = (op, key, f, f_all)
    return f, f_all


def _synapse_counts(op, q: torch.Tensor, in_shape, out_shape, cache: Optional[dict] = None, name: str = ""):
    f, f_all = _fanouts(op, in_shape, out_shape, cache, name)
    syn = _per_step_sum((q * f))
    graded = _per_step_sum(((q > 0).to(q.dtype) * f))
    syn_all = float((q * f_all).sum())
    return syn, graded, syn_all


#: what a zero "weight" is for synapses whose weights are not trained parameters
_ZERO_LABEL = {O.MemoryRead: "zero memory entries"}


def _explain_synapse(border: Optional[float], zero_w: Optional[float], graded: int, unit: int, host_note="",
                     zero_label: str = "zero weights") -> str:
    parts = []
    if border is not None and abs(border - 1.0) > 1e-9:
        parts.append(f"borders/positions ×{border:.4f}" if border < 1 else f"spikes at high-fan-out positions ×{border:.4f}")
    if zero_w is not None and zero_w < 1.0 - 1e-12:
        parts.append(f"{zero_label} ×{zero_w:.4f}")
    if unit > 0:
        parts.append(f"integer spikes: {graded / unit:.3f} graded events per unit spike")
    if not parts:
        return "no spikes" if unit == 0 else "matches the estimate"
    return "; ".join(parts)


def _check_counts(graph: Graph, shapes, spike_counts: Mapping[str, object], T: Optional[int], B: Optional[int]):
    q_of: Dict[str, torch.Tensor] = {}
    missing = [n.name for n in graph.neurons() if n.name not in spike_counts]
    if missing:
        raise AuditError(f"spike counts are missing for neuron layer(s): {', '.join(missing)}")
    fixed = next((s.steps for s in graph.inputs if s.steps is not None), None)
    if T is None and fixed is not None:
        T = int(fixed)
    steps = value_steps(graph, T) if T is not None else {}
    for n in graph.neurons():
        q = torch.as_tensor(np.asarray(spike_counts[n.name]) if not isinstance(spike_counts[n.name], torch.Tensor)
                            else spike_counts[n.name]).to(torch.float64)
        if q.dim() != len(shapes[n.name]) + 2 or tuple(q.shape[2:]) != tuple(shapes[n.name]):
            raise AuditError(
                f"spike counts for {n.name!r} have shape {list(q.shape)}; expected [T, B, "
                f"{', '.join(map(str, shapes[n.name]))}]"
            )
        if T is None:
            T = int(q.shape[0])
        if B is None:
            B = int(q.shape[1])
        tn = steps.get(n.name) or T
        if (int(q.shape[0]), int(q.shape[1])) != (tn, B):
            raise AuditError(f"spike counts for {n.name!r} cover T={q.shape[0]}, B={q.shape[1]}; expected T={tn}, B={B}")
        if not torch.isfinite(q).all() or bool((q < 0).any()) or not torch.equal(q, torch.round(q)):
            raise AuditError(f"spike counts for {n.name!r} must be non-negative integers")
        q_of[n.name] = q
    return q_of, T, B


def _input_tb(graph: Graph, x) -> Tuple[int, int]:
    if isinstance(x, Mapping):
        if not x:
            raise AuditError("empty input set: no inputs given")
        x = next(iter(x.values()))
    x = torch.as_tensor(x)
    if x.dim() < 2:
        raise AuditError(f"inputs must have shape [T, B, ...], got {list(x.shape)}")
    return int(x.shape[0]), int(x.shape[1])


def audit_graph(
    graph: Graph,
    x=None,
    *,
    encoding: str = "binary",
    profile="45nm",
    spike_counts: Optional[Mapping[str, object]] = None,
    runtime: str = "reference",
    model: str = "",
    weights: str = "",
    saturated: Optional[int] = None,
    fanout_cache: Optional[dict] = None,
    compare_fixed_d: bool = True,
) -> AuditReport:
    """Audit ``graph`` on inputs ``x`` (``[T, B, *s]`` tensor or dict by input name).

    ``graph`` is an integer graph (lowered here with ``ExpandSpikes(encoding)``) or a graph already
    lowered to ``encoding``. Without ``spike_counts`` the reference executor runs the lowered graph
    in spike mode and its counts are audited (runtime "reference-<encoding>"). With
    ``spike_counts`` — neuron node name -> q ``[T, B, *s]``, e.g. ``TargetRun.spike_counts`` of a Lava
    run — those counts are audited instead (``runtime`` names who produced them); ``x`` may then be
    None. Raises :class:`AuditError` for an empty input set, counts that do not fit the graph, or a
    graph in which no neuron feeds a synapse ("nothing to audit"), and ``ConfigError`` for an
    unknown energy profile or encoding. A fixed-point graph's report gives the saturation events of
    the run (counted here for the reference run; ``saturated``: those the runtime of
    ``spike_counts`` counted). ``fanout_cache``: a dict kept by a caller that audits the same
    graph many times (a tracker, frame after frame): the static fan-out maps are computed once.
    A graph with DI-LIF layers gets the adaptive spike budget (:func:`adaptive_budget`: D per
    step, input density, SynOps against the same network with D fixed at D_init) unless
    ``compare_fixed_d=False`` or ``x`` is not given.
    """
    from spikedeploy.passes import ExpandSpikes
    from spikedeploy.reference import execute, graph_mode

    prof = get_profile(profile)
    if runtime not in AUDIT_RUNTIMES:
        raise ConfigError(f"unknown audit runtime {runtime!r}; expected one of {AUDIT_RUNTIMES}")
    if encoding not in ENCODINGS:
        raise ConfigError(f"unknown spike encoding {encoding!r}; expected one of {ENCODINGS}")
    validate(graph)
    mode = graph_mode(graph)
    if mode == "integer":
        lowered = ExpandSpikes(encoding).apply(graph) if graph.neurons() else graph
    elif mode == encoding:
        lowered = graph
    else:
        raise ConfigError(f"graph is lowered to {mode!r} spikes; audit it with encoding={mode!r}")
    shapes = validate(lowered)
    _check_auditable(lowered, shapes)

    T = B = None
    if x is not None:
        T, B = _input_tb(lowered, x)
        if B == 0 or T == 0:
            raise AuditError(f"empty input set: inputs have shape with T={T}, B={B}; give at least one input")
    if spike_counts is not None:
        q_of, T, B = _check_counts(lowered, shapes, spike_counts, T, B)
        if B == 0 or T == 0:
            raise AuditError("empty input set: the spike counts cover no input")
        run_name = f"{runtime}-{encoding}" if not runtime.endswith(encoding) else runtime
    else:
        if x is None:
            raise AuditError("give the inputs x (or spike_counts from a runtime)")
        result = execute(lowered, x, encoding, dtype=torch.float64)
        q_of = {n.name: result.records[n.name].q for n in lowered.neurons()}
        run_name = f"{runtime}-{encoding}"
        saturated = sum(int(r.saturated) for r in result.records.values())

    rows, accs, uncounted = _count(lowered, shapes, q_of, T, B, encoding, prof, fanout_cache)
    totals = _totals(rows, accs, T, B, prof)
    adaptive = None
    if compare_fixed_d and x is not None and any(isinstance(n.op, _DILIF_OPS) for n in lowered.nodes):
        dilif_run = result if spike_counts is None else execute(lowered, x, encoding, dtype=torch.float64)
        adaptive = adaptive_budget(lowered, x, dilif_run, rows, B, encoding=encoding, profile=prof,
                                   fanout_cache=fanout_cache)
    meta = lowered.meta_dict()
    fixed = None
    if "fixed_point" in meta:
        plan = meta["fixed_point"]
        fixed = {"weight_bits": int(plan["weight_bits"]), "state_bits": int(plan["state_bits"]), "saturated": saturated,
                 "calibration": str(meta.get("calibration", ""))}
    return AuditReport(
        model=model or str(meta.get("model", "")) or "graph",
        runtime=run_name,
        encoding=encoding,
        profile=prof,
        n_inputs=B,
        T=T,
        layers=tuple(rows),
        totals=totals,
        weights=weights or str(meta.get("weights", "")),
        notes=NOTES,
        uncounted=tuple(uncounted),
        precision="fixed" if fixed is not None else "float",
        fixed_point=fixed,
        adaptive=adaptive,
    )


ADAPTIVE_TITLE = "Adaptive spike budget (DI-LIF against a fixed D)"
#: neurons whose firing limit adapts per step (float and fixed point)
_DILIF_OPS = (O.DynamicIntegerLIF, O.FixedDynamicIntegerLIF)


def _step_synops(rows: Sequence[LayerAudit], T: int) -> List[float]:
    """Measured SynOps per macro-step summed over the spike-driven layers (per input)."""
    out = np.zeros(T)
    for l in rows:
        if l.kind in ("synapse", "attention") and l.synops_per_step:
            out += np.asarray(l.synops_per_step, dtype=np.float64)
    return out.tolist()


def adaptive_budget(lowered: Graph, x, run_result, rows: Sequence[LayerAudit], B: int, *, encoding: str,
                    profile, fanout_cache: Optional[dict] = None) -> Dict[str, object]:
    """The adaptive spike budget of a graph with DI-LIF layers, per macro-step ``t``: each DI-LIF
    layer's firing limit D (mean over the inputs), the input's density (mean value per element)
    and active share (non-zero elements), and the measured SynOps per input of this run against
    the same network with D fixed at D_init (:class:`~spikedeploy.passes.FixDynamicLimit`, its own
    reference spike run on the same inputs). ``run_result``: the reference run of ``lowered``."""
    from spikedeploy.passes import FixDynamicLimit
    from spikedeploy.reference import execute

    xt = next(iter(x.values())) if isinstance(x, Mapping) else x
    xt = torch.as_tensor(xt).to(torch.float64)
    T = int(xt.shape[0])
    layers = [n.name for n in lowered.nodes if isinstance(n.op, _DILIF_OPS)]
    d_per_step = {}
    d_init = {}
    for n in lowered.nodes:
        if isinstance(n.op, _DILIF_OPS):
            d = run_result.records[n.name].d
            d_per_step[n.name] = torch.as_tensor(d, dtype=torch.float64).reshape(T, -1).mean(dim=1).tolist()
            d_init[n.name] = int(n.op.d_init)
    fixed = FixDynamicLimit().apply(lowered)
    shapes = validate(fixed)
    fres = execute(fixed, x, encoding, dtype=torch.float64)
    fq = {n.name: fres.records[n.name].q for n in fixed.neurons()}
    frows, faccs, _ = _count(fixed, shapes, fq, T, B, encoding, profile, fanout_cache)
    ftotals = _totals(frows, faccs, T, B, profile)
    syn, fsyn = _step_synops(rows, T), _step_synops(frows, T)
    flat = xt.reshape(T, -1)
    return {
        "layers": layers,
        "d_init": d_init,
        "d_per_step": d_per_step,
        "input_density": flat.mean(dim=1).tolist(),
        "input_active": (flat != 0).to(torch.float64).mean(dim=1).tolist(),
        "synops_per_step": syn,
        "fixed_synops_per_step": fsyn,
        "synops_per_frame": float(sum(syn)),
        "fixed_synops_per_frame": float(sum(fsyn)),
        "fixed_energy_pj_per_frame": float(ftotals["per_frame"]["energy_pj"]),
    }


def _check_auditable(graph: Graph, shapes) -> None:
    neurons = {n.name for n in graph.neurons()}
    if not neurons:
        raise AuditError("nothing to audit: the graph has no neuron layers (no spikes, no synaptic ops to count)")
    spiking = set(neurons)
    for n in graph.nodes:
        if isinstance(n.op, _ROUTING) and all(i in spiking for i in n.inputs):
            spiking.add(n.name)
    fed = [n.name for n in graph.nodes
           if (isinstance(n.op, O.SYNAPTIC_OPS) and n.inputs[0] in spiking)
           or (isinstance(n.op, (O.SpikeLinearAttention, O.MemoryWrite) + O.SPACE_TIME_ATTENTION_OPS)
               and all(i in spiking for i in n.inputs))
           or (isinstance(n.op, O.TemplateGate) and n.inputs[0] in spiking)]
    if not fed:
        raise AuditError(
            f"nothing to audit: no neuron feeds a synaptic layer (neuron layers: {', '.join(sorted(neurons))}; "
            "their spikes only reach graded accumulators or graph outputs)"
        )


def _display_names(graph: Graph) -> Dict[str, str]:
    """Fixed point: a weight-free op with dyadic weights is quantized into the op (``X.dyadic``)
    and a ``Scale(2**s)`` named ``X``; its audit row keeps the float graph's name ``X``."""
    dyadic = graph.meta_dict().get("fixed_point", {}).get("dyadic", {})
    names = {}
    for n in graph.nodes:
        if isinstance(n.op, O.Scale) and len(n.inputs) == 1 and n.inputs[0] in dyadic:
            names[n.inputs[0]] = n.name
    return names


def _count(graph: Graph, shapes, q_of, T: int, B: int, encoding: str, prof: EnergyProfile,
           fanout_cache: Optional[dict] = None):
    spikes, sources = _spike_values(graph, q_of)
    display = _display_names(graph)
    steps = {k: (T if v is None else int(v)) for k, v in value_steps(graph, T).items()}
    rows: List[LayerAudit] = []
    accs: List[_Acc] = []
    uncounted: List[str] = []
    zeros = np.zeros(T, dtype=np.int64)

    def add(row: LayerAudit, acc: _Acc):
        rows.append(row)
        accs.append(acc)

    for n in graph.nodes:
        op = n.op
        if isinstance(op, O.SYNAPTIC_OPS):
            src = n.inputs[0]
            in_shape, out_shape = shapes[src], shapes[n.name]
            flops = layer_flops(op, in_shape, out_shape)
            if src in spikes:
                q = spikes[src]
                syn, graded, syn_all = _synapse_counts(op, q, in_shape, out_shape, fanout_cache, n.name)
                rate, per_step = _rates(q)
                tv = int(q.shape[0])  # the macro-steps of this layer's input
                theo = flops * tv * rate
                measured = syn.sum() / B
                total_q = rate * tv * B * numel(in_shape)
                mean_fan = flops / numel(in_shape)
                border = syn_all / (mean_fan * total_q) if total_q > 0 else None
                zero_w = float(syn.sum()) / syn_all if syn_all > 0 else None
                ratio = measured / theo if theo > 0 else None
                row = LayerAudit(
                    name=display.get(n.name, n.name), op=op.kind, kind="synapse", host=False,
                    source=", ".join(sources[src]),
                    flops=float(flops), firing_rate=rate, rates_per_step=per_step, theoretical_ops=theo,
                    measured_synops=float(measured), graded_events=float(graded.sum() / B),
                    unit_equivalent=float(measured), macs=0.0, neuron_updates=0.0, ratio=ratio,
                    energy_pj=prof.energy_pj(synops=measured), theoretical_energy_pj=prof.e_ac_pj * theo,
                    border_factor=border, zero_weight_factor=zero_w,
                    synops_per_step=tuple(float(v) / B for v in syn),
                    explanation=_explain_synapse(border, zero_w, int(graded.sum()), int(syn.sum()),
                                                 zero_label=_ZERO_LABEL.get(type(op), "zero weights"))
                    + (f" (fixed point: node {n.name!r}, then Scale to integers)" if n.name in display else ""),
                )
                add(row, _Acc(syn, graded))
            else:
                tv = steps[src]
                add(_host_row(n, op.kind, flops, tv, B, prof, src, graph), _Acc(zeros, zeros, macs=flops * tv * B))
        elif isinstance(op, O.GateSoftmax):
            tv = steps[n.inputs[0]]
            flops = SOFTMAX_MACS_PER_ELEMENT * numel(shapes[n.name])
            add(_host_row(n, op.kind, flops, tv, B, prof, n.inputs[0], graph, note="host: the template gate's softmax "
                          f"over the templates ({SOFTMAX_MACS_PER_ELEMENT} MACs per element: max, exp, sum, divide)"),
                _Acc(zeros, zeros, macs=flops * tv * B))
        elif isinstance(op, O.TemplateGate):
            xn = n.inputs[0]
            flops = numel(shapes[xn])
            if xn in spikes:
                add(*_template_gate_row(n, spikes[xn], sources[xn], flops, B, prof))
            else:
                tv = steps[xn]
                add(_host_row(n, op.kind, flops, tv, B, prof, xn, graph), _Acc(zeros, zeros, macs=flops * tv * B))
        elif isinstance(op, O.SpikeLinearAttention):
            qn, kn, vn = n.inputs
            c, ntok = shapes[qn]
            cv = shapes[vn][0]
            h = op.num_heads
            flops = c * cv * ntok // h
            if all(i in spikes for i in n.inputs):
                for row, acc in _attention_rows(n, spikes[qn], spikes[kn], spikes[vn], sources, flops, steps[n.name], B, prof):
                    add(row, acc)
            else:
                add(_host_row(n, op.kind, 2 * flops, steps[n.name], B, prof, ", ".join(n.inputs), graph),
                    _Acc(zeros, zeros, macs=2 * flops * steps[n.name] * B))
        elif isinstance(op, O.SPACE_TIME_ATTENTION_OPS):
            for row, acc in _space_time_attention_rows(n, shapes, spikes, sources, steps, B, prof, graph, zeros):
                add(row, acc)
        elif isinstance(op, O.MemoryWrite):
            kn, vn = n.inputs
            c, ntok = shapes[kn]
            flops = c * shapes[vn][0] * ntok // op.num_heads
            if kn in spikes and vn in spikes:
                add(*_memory_write_row(n, spikes[kn], spikes[vn], sources, flops, steps[n.name], B, prof))
            else:
                add(_host_row(n, op.kind, flops, steps[n.name], B, prof, ", ".join(n.inputs), graph),
                    _Acc(zeros, zeros, macs=flops * steps[n.name] * B))
        elif isinstance(op, O.NEURON_OPS):
            q = q_of[n.name]
            rate, per_step = _rates(q)
            neurons = numel(shapes[n.name])
            per_mstep = int(op.window) if encoding == "binary" else 1
            upd = neurons * int(q.shape[0]) * per_mstep
            label = getattr(op, "label", op.kind)
            add(LayerAudit(
                name=n.name, op=label, kind="neuron", host=False, source=n.name, flops=0.0, firing_rate=rate,
                rates_per_step=per_step, theoretical_ops=0.0, measured_synops=0.0, graded_events=0.0,
                unit_equivalent=0.0, macs=0.0, neuron_updates=float(upd), ratio=None,
                energy_pj=prof.energy_pj(neuron_updates=upd), theoretical_energy_pj=0.0,
                explanation=f"{neurons:,} neurons x T" + (f" x {per_mstep} sub-steps (binary window D)" if encoding == "binary" else " (graded: one update per macro-step)"),
            ), _Acc(zeros, zeros, neuron_updates=upd * B))
        elif not isinstance(op, _ROUTING + _ACCUMULATORS) and any(i in spikes for i in n.inputs):
            uncounted.append(f"node {n.name!r} ({op.kind}) reads spikes from "
                             f"{', '.join(i for i in n.inputs if i in spikes)}")
    return rows, accs, uncounted


def _template_gate_row(n, x, srcs, flops, B, prof):
    """TemplateGate on spikes: each unit spike of x adds its step's host-written weight to one
    target (fan-out 1)."""
    syn = _per_step_sum(x)
    graded = _per_step_sum((x > 0).to(x.dtype))
    rate, per_step = _rates(x)
    tv = int(x.shape[0])
    theo = flops * tv * rate
    measured = float(syn.sum()) / B
    unit = int(syn.sum())
    expl = ("each unit spike of x adds the host-computed gate weight of its template step to one target "
            "(fan-out 1; the softmax is a host row)")
    if unit:
        expl += f"; integer spikes: {int(graded.sum()) / unit:.3f} graded events per unit spike"
    return LayerAudit(
        name=n.name, op="TemplateGate [Σ_t w_t·x_t]", kind="synapse", host=False, source=", ".join(srcs),
        flops=float(flops), firing_rate=rate, rates_per_step=per_step, theoretical_ops=theo,
        measured_synops=measured, graded_events=float(graded.sum()) / B, unit_equivalent=measured, macs=0.0,
        neuron_updates=0.0, ratio=measured / theo if theo > 0 else None, energy_pj=prof.energy_pj(synops=measured),
        theoretical_energy_pj=prof.e_ac_pj * theo, synops_per_step=tuple(float(v) / B for v in syn), explanation=expl,
    ), _Acc(syn, graded)


def _host_row(n, kind, flops, T, B, prof, src, graph, note: str = "") -> LayerAudit:
    nodes = graph.node_map()
    upstream = nodes.get(src)
    if note:
        pass
    elif upstream is None:
        note = "host: real-valued graph input (e.g. pixels): dense MACs"
    else:
        note = f"real-valued input (output of {upstream.op.kind} {src!r}): dense MACs"
    macs = flops * T
    return LayerAudit(
        name=n.name, op=kind, kind="host", host=True, source=src, flops=float(flops), firing_rate=0.0,
        rates_per_step=(), theoretical_ops=float(macs), measured_synops=0.0, graded_events=0.0,
        unit_equivalent=0.0, macs=float(macs), neuron_updates=0.0, ratio=1.0,
        energy_pj=prof.energy_pj(macs=macs), theoretical_energy_pj=prof.e_mac_pj * macs,
        explanation=note + "; the papers count it as MACs too",
    )


def _pair_counts(k: torch.Tensor, v: torch.Tensor, h: int) -> Tuple[np.ndarray, np.ndarray]:
    """Co-occurring k x v unit-spike pairs per macro-step, k ``[T, B, C, N]``, v ``[T, B, Cv, N]``:
    ``sum_tokens sum_heads k_count(h, n) * v_count(h, n)`` (each pair increments one memory cell),
    and the graded events (pairs of non-zero entries)."""
    Tk, Bk, c, ntok = k.shape
    cv = v.shape[2]

    def head_sum(x, channels):  # [T, B, C, N] -> [T, B, H, N]
        return x.reshape(Tk, Bk, h, channels // h, ntok).sum(dim=3)

    ks, vs = head_sum(k, c), head_sum(v, cv)
    kb, vb = head_sum((k > 0).to(k.dtype), c), head_sum((v > 0).to(v.dtype), cv)
    return _per_step_sum(ks * vs), _per_step_sum(kb * vb)


def _memory_write_row(n, k, v, sources, flops, T, B, prof):
    pairs, graded = _pair_counts(k, v, n.op.num_heads)
    kn, vn = n.inputs
    rate, steps = _rates(k)
    theo = flops * T * rate
    measured = float(pairs.sum()) / B
    unit = int(pairs.sum())
    expl = ("spike × spike: only co-occurring k·v unit-spike pairs (same head, same token) write the template "
            "memory, a graph output read as weights by the search branch's MemoryRead; the papers' estimate treats "
            "v as dense (ratio ≈ v's firing rate)")
    if unit:
        expl += f"; integer spikes: {int(graded.sum()) / unit:.3f} graded events per unit spike"
    return LayerAudit(
        name=n.name, op="MemoryWrite [kᵀv]", kind="attention", host=False,
        source=f"{', '.join(sources[kn])} × {', '.join(sources[vn])}", flops=float(flops), firing_rate=rate,
        rates_per_step=steps, theoretical_ops=theo, measured_synops=measured, graded_events=float(graded.sum()) / B,
        unit_equivalent=measured, macs=0.0, neuron_updates=0.0, ratio=measured / theo if theo > 0 else None,
        energy_pj=prof.energy_pj(synops=measured), theoretical_energy_pj=prof.e_ac_pj * theo,
        synops_per_step=tuple(float(x) / B for x in pairs), explanation=expl,
    ), _Acc(pairs, graded)


def _attention_rows(n, q, k, v, sources, flops, T, B, prof):
    op = n.op
    h = op.num_heads
    cv = v.shape[2]
    pairs, pairs_graded = _pair_counts(k, v, h)
    row_len = cv // h
    reads = _per_step_sum(q) * row_len
    reads_graded = _per_step_sum((q > 0).to(q.dtype)) * row_len
    qn, kn, vn = n.inputs
    rate_k, steps_k = _rates(k)
    rate_q, steps_q = _rates(q)
    out = []
    for suffix, src, rate, steps, syn, graded, expl in (
        ("[kv]", f"{', '.join(sources[kn])} × {', '.join(sources[vn])}", rate_k, steps_k, pairs, pairs_graded,
         "spike × spike: only co-occurring k·v unit-spike pairs write the memory; the papers' estimate "
         "treats v as dense weights (ratio ≈ v's firing rate)"),
        ("[q·kv]", ", ".join(sources[qn]), rate_q, steps_q, reads, reads_graded,
         f"each q unit spike reads one memory row of Cv/H = {row_len} cells"),
    ):
        theo = flops * T * rate
        measured = float(syn.sum()) / B
        unit = int(syn.sum())
        if unit:
            expl += f"; integer spikes: {int(graded.sum()) / unit:.3f} graded events per unit spike"
        out.append((LayerAudit(
            name=f"{n.name} {suffix}", op=f"SpikeLinearAttention {suffix}", kind="attention", host=False, source=src,
            flops=float(flops), firing_rate=rate, rates_per_step=steps, theoretical_ops=theo,
            measured_synops=measured, graded_events=float(graded.sum()) / B, unit_equivalent=measured, macs=0.0,
            neuron_updates=0.0, ratio=measured / theo if theo > 0 else None,
            energy_pj=prof.energy_pj(synops=measured), theoretical_energy_pj=prof.e_ac_pj * theo,
            synops_per_step=tuple(float(x) / B for x in syn), explanation=expl,
        ), _Acc(syn, graded)))
    return out


# ---------------------------------------------------------------------------------------------
# space-time spike attention (SpikeVideoFormer: SDHA, Eq. 10; dot product, Eq. 3)
# ---------------------------------------------------------------------------------------------


def space_time_attention_events(op: O.SpaceTimeAttention, q: torch.Tensor, k: torch.Tensor,
                                v: torch.Tensor) -> Dict[str, Tuple[np.ndarray, np.ndarray]]:
    """The spike events of one space-time attention (counts ``[T, B, C, N]``), per macro-step:
    ``{part: (unit events [T], graded events [T])}`` (module docstring, "Space-time attention").

    * ``"kv"``: co-occurring k·v unit-spike pairs (same head, same token): each increments one cell
      of ``K^T V``. A token's pairs are charged to its own step (that is when its spikes arrive).
    * ``"v"`` (Hamming only): v unit spikes, each increments its channel's column count ``1^T V``.
    * ``"qm"``: each q unit spike reads one row of its group's memory (``M``, Hamming; ``K^T V``,
      dot): ``dv`` accumulates.
    * ``"dense"`` (Hamming only): arithmetic that does not depend on spikes -- per head and token
      group ``M = 2 K^T V - 1^T V`` and ``1^T M`` (``2 d dv``, charged to the group's last step:
      all its keys and values are in), and per output element the subtraction of ``1^T M``
      (``Cv`` per token and step). Graded = unit.
    """
    T, B, C, Nt = k.shape
    h = op.num_heads
    d, dv = C // h, v.shape[2] // h
    pairs, pairs_g = _pair_counts(k, v, h)
    reads = _per_step_sum(q) * dv
    reads_g = _per_step_sum((q > 0).to(q.dtype)) * dv
    out = {"kv": (pairs, pairs_g), "qm": (reads, reads_g)}
    if op.score == "hamming":
        out["v"] = (_per_step_sum(v), _per_step_sum((v > 0).to(v.dtype)))
        dense = np.full(T, B * Nt * h * dv, dtype=np.int64)  # the offset subtraction, every output element
        for grouping in op.head_groupings():
            if grouping == "spatial":  # one group per step
                dense += B * 2 * d * dv
            else:  # joint: one group per sample, temporal: one per position; complete at the last step
                dense[-1] += B * (1 if grouping == "joint" else Nt) * 2 * d * dv
        out["dense"] = (dense, dense.copy())
    return out


def _space_time_attention_rows(n, shapes, spikes, sources, steps, B, prof, graph, zeros):
    """Audit rows of a SpikeHammingAttention / SpikeDotAttention node (module docstring)."""
    op = n.op
    qn, kn, vn = n.inputs
    c, ntok = shapes[qn]
    cv = shapes[vn][0]
    h = op.num_heads
    product = c * cv * ntok // h  # FLOPs per macro-step of each product (K'^T V, Q' M), linear order
    label = "SDHA" if op.score == "hamming" else "SDSA"
    tv = steps[n.name]
    if not all(i in spikes for i in (qn, kn, vn)):
        flops = 2 * product + (2 * cv * ntok if op.score == "hamming" else 0)
        return [(_host_row(n, op.kind, flops, tv, B, prof, ", ".join(n.inputs), graph),
                 _Acc(zeros, zeros, macs=flops * tv * B))]
    q, k, v = spikes[qn], spikes[kn], spikes[vn]
    ev = space_time_attention_events(op, q, k, v)
    src_kv = f"{', '.join(sources[kn])} × {', '.join(sources[vn])}"
    parts = [("kv", "[kᵀv]", src_kv, k, product,
              "spike × spike: only co-occurring k·v unit-spike pairs (same head, same token) increment a memory "
              f"cell; {op.tokens} token groups; the papers' estimate treats v as dense (ratio ≈ v's firing rate)")]
    if op.score == "hamming":
        parts.append(("v", "[1ᵀv]", ", ".join(sources[vn]), v, cv * ntok,
                      "the −1 of (2K − 1)ᵀV: each v unit spike increments its channel's column count (no multiply)"))
    parts.append(("qm", "[q·M]" if op.score == "hamming" else "[q·kv]", ", ".join(sources[qn]), q, product,
                  f"each q unit spike reads one memory row of dv = {cv // h} cells"
                  + (" of M = 2kᵀv − 1ᵀv" if op.score == "hamming" else "")))
    rows = []
    for key, suffix, src, drive, flops, expl in parts:
        syn, graded = ev[key]
        rate, per_step = _rates(drive)
        theo = flops * tv * rate
        measured = float(syn.sum()) / B
        unit = int(syn.sum())
        if unit:
            expl += f"; integer spikes: {int(graded.sum()) / unit:.3f} graded events per unit spike"
        rows.append((LayerAudit(
            name=f"{n.name} {suffix}", op=f"{op.kind} {suffix}", kind="attention", host=False, source=src,
            flops=float(flops), firing_rate=rate, rates_per_step=per_step, theoretical_ops=theo,
            measured_synops=measured, graded_events=float(graded.sum()) / B, unit_equivalent=measured, macs=0.0,
            neuron_updates=0.0, ratio=measured / theo if theo > 0 else None,
            energy_pj=prof.energy_pj(synops=measured), theoretical_energy_pj=prof.e_ac_pj * theo,
            synops_per_step=tuple(float(x) / B for x in syn), explanation=expl,
        ), _Acc(syn, graded)))
    if "dense" in ev:
        syn, graded = ev["dense"]
        measured = float(syn.sum()) / B
        rows.append((LayerAudit(
            name=f"{n.name} [M, 1ᵀM]", op=f"{op.kind} [M, 1ᵀM]", kind="attention", host=False,
            source=", ".join(n.inputs), flops=measured / tv, firing_rate=1.0, rates_per_step=(),
            theoretical_ops=measured, measured_synops=measured, graded_events=measured, unit_equivalent=measured,
            macs=0.0, neuron_updates=0.0, ratio=1.0, energy_pj=prof.energy_pj(synops=measured),
            theoretical_energy_pj=prof.e_ac_pj * measured, synops_per_step=tuple(float(x) / B for x in syn),
            explanation=f"{label}'s spike-independent accumulates: M = 2kᵀv − 1ᵀv and 1ᵀM once per head and token "
                        "group (2·d·dv), and the −1ᵀM of (2Q − 1)M once per output element; not spike-driven, "
                        "the same in both columns",
        ), _Acc(syn, graded)))
    return rows


def _totals(rows: List[LayerAudit], accs: List[_Acc], T: int, B: int, prof: EnergyProfile) -> Dict[str, Dict[str, float]]:
    spike = [(r, a) for r, a in zip(rows, accs) if r.kind in ("synapse", "attention")]
    host = [(r, a) for r, a in zip(rows, accs) if r.kind == "host"]
    neur = [(r, a) for r, a in zip(rows, accs) if r.kind == "neuron"]
    seq = {
        "measured_synops": int(sum(int(a.synops.sum()) for _, a in spike)),
        "graded_events": int(sum(int(a.graded.sum()) for _, a in spike)),
        "theoretical_ops": float(sum(r.theoretical_ops for r, _ in spike)) * B,
        "host_macs": int(sum(a.macs for _, a in host)),
        "neuron_updates": int(sum(a.neuron_updates for _, a in neur)),
    }
    br = prof.breakdown_pj(seq["measured_synops"], seq["host_macs"], seq["neuron_updates"])
    seq.update(
        energy_synops_pj=br["synops"], energy_macs_pj=br["macs"], energy_neurons_pj=br["neurons"],
        energy_pj=br["synops"] + br["macs"] + br["neurons"],
        theoretical_energy_pj=prof.e_ac_pj * seq["theoretical_ops"] + prof.e_mac_pj * seq["host_macs"],
    )
    frame = {k: v / B for k, v in seq.items()}
    step = {k: v / (B * T) for k, v in seq.items()}
    ratio = seq["measured_synops"] / seq["theoretical_ops"] if seq["theoretical_ops"] > 0 else None
    for d in (seq, frame, step):
        d["ratio"] = ratio
    return {"per_macro_step": step, "per_frame": frame, "per_sequence": seq}


# ---------------------------------------------------------------------------------------------
# the CLI-level function
# ---------------------------------------------------------------------------------------------


def audit(
    model: str = "sdt-test",
    *,
    neuron: Optional[str] = None,
    timesteps: int = 1,
    checkpoint: Optional[str] = None,
    checkpoint_key: Optional[str] = None,
    num_inputs: int = 8,
    seed: int = 0,
    encoding: str = "binary",
    profile="45nm",
    input_file=None,
    input_shape: Optional[Sequence[int]] = None,
    model_kwargs: Optional[Dict] = None,
    output=None,
    runtime: str = "reference",
    overwrite: bool = False,
    max_memory: Optional[float] = None,
    precision: str = "float",
    weight_bits: Optional[int] = None,
    calibration=None,
) -> AuditReport:
    """Build ``model`` (as :func:`spikedeploy.loading.build_model`), run it on ``num_inputs`` random
    inputs (seed ``seed + 1``, as ``verify``) or the .npy ``input_file``, and audit the spike run of
    the ``encoding``-lowered graph with the energy ``profile``. Writes report.md/.json/.html
    atomically into the directory ``output`` when given. Bad options fail before any work.

    ``runtime="lava"`` takes the spike counts from the network exported to Lava and run in its CPU
    simulator; they are first checked against the reference spike run, layer by layer, and any
    difference is an :class:`AuditError` (the counts of the two runtimes must be identical).
    The estimated memory must stay under ``max_memory`` GB (:mod:`spikedeploy.resources`).

    ``precision="fixed"``: the lowered graph is quantized to Loihi 2 fixed point
    (``weight_bits``-bit weight mantissas, default 8; exponents calibrated on the ``calibration``
    .npy file, else on the audited inputs: :func:`spikedeploy.loading.calibration_inputs`) and the
    fixed graph's own spike run is audited (reference, or Lava checked against the fixed
    reference); the report says so and counts the saturation events of the run."""
    from spikedeploy import loading
    from spikedeploy import resources
    from spikedeploy.fsutil import check_output_dir

    bits = loading.check_precision(precision, weight_bits, calibration, targets=("lava",) if runtime == "lava" else ())
    prof = get_profile(profile)
    if runtime not in AUDIT_RUNTIMES:
        raise ConfigError(f"unknown audit runtime {runtime!r}; expected one of {AUDIT_RUNTIMES}")
    if encoding not in ENCODINGS:
        raise ConfigError(f"unknown spike encoding {encoding!r}; expected one of {ENCODINGS}")
    if input_file is None and (isinstance(num_inputs, bool) or not isinstance(num_inputs, int) or num_inputs < 1):
        raise AuditError(f"empty input set: --inputs must be a positive integer, got {num_inputs!r}")
    inputs = (checkpoint, input_file, calibration)
    if output is not None:
        check_output_dir(output, overwrite=overwrite, inputs=inputs)
    loaded = loading.build_model(model, neuron=neuron, timesteps=timesteps, checkpoint=checkpoint,
                             checkpoint_key=checkpoint_key, seed=seed, input_shape=input_shape,
                             model_kwargs=model_kwargs)
    resources.guard_model(loaded, "audit", timesteps=timesteps, num_inputs=num_inputs, input_file=input_file,
                          run_itemsizes=resources.audit_run_itemsizes(runtime), max_memory=max_memory)
    x = loading.make_inputs(loaded, timesteps=timesteps, num_inputs=num_inputs, seed=seed + 1, input_file=input_file)
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise AuditError(f"empty input set: {input_file or 'inputs'} holds no input (shape {list(x.shape)})")
    graph = loading.prepare_graph(loaded, timesteps=int(x.shape[0]), encoding="integer")
    if bits is not None:
        from spikedeploy.passes import ExpandSpikes

        cal, cal_text = loading.calibration_inputs(loaded, x, timesteps=int(x.shape[0]), calibration=calibration)
        graph = loading.to_fixed(ExpandSpikes(encoding).apply(graph), cal, bits, cal_text)
    counts, sat = _lava_counts(graph, x, encoding) if runtime == "lava" else (None, None)
    report = audit_graph(graph, x, encoding=encoding, profile=prof, model=loaded.name + (f" (neuron={neuron})" if neuron else ""),
                         weights=loaded.weights, spike_counts=counts, runtime=runtime, saturated=sat)
    if output is not None:
        report.write(output, overwrite=overwrite, inputs=inputs)
    return report


#: runtimes whose spike run an audit can count
AUDIT_RUNTIMES = ("reference", "lava")


def _checked_against_reference(lowered: Graph, x: torch.Tensor, counts, runtime: str) -> Dict[str, torch.Tensor]:
    """``counts`` (a backend's spike counts of ``lowered``) after checking that they equal the
    reference spike run's exactly, layer by layer."""
    from spikedeploy.reference import run

    ref = run(lowered, x)
    for n in lowered.neurons():
        q_ref = ref.records[n.name].q
        q_b = counts.get(n.name)
        if q_b is None:
            raise AuditError(f"the {runtime} run reported no spike counts for neuron layer {n.name!r}")
        q_b = torch.as_tensor(q_b).to(q_ref.dtype)
        if q_b.shape != q_ref.shape or not torch.equal(q_b, q_ref):
            bad = int((q_b != q_ref).sum()) if q_b.shape == q_ref.shape else "all"
            raise AuditError(
                f"{runtime} and the reference disagree on the spike counts of {n.name!r} ({bad} values); "
                f"an audit needs identical counts — run 'spikedeploy verify --targets {runtime}' for details"
            )
    return dict(counts)


def _run_saturation(trun) -> Optional[int]:
    """The saturation events a target run counted (state clamps per neuron and host-boundary
    clamps, ``TargetRun.info``), or None when it counts none (a float run)."""
    info = trun.info or {}
    if not isinstance(info.get("saturated"), dict):
        return None
    return sum(int(v) for v in info["saturated"].values()) + sum(int(v) for v in (info.get("host_saturated") or {}).values())


def _lava_counts(graph: Graph, x: torch.Tensor, encoding: str):
    """Spike counts of ``graph`` lowered to ``encoding`` (or already lowered: a fixed-point graph)
    and run in Lava, checked against the reference spike run, and the run's saturation events
    (:func:`_run_saturation`)."""
    import tempfile

    from spikedeploy.passes import ExpandSpikes
    from spikedeploy.reference import graph_mode
    from spikedeploy.targets import get_target

    spec = get_target("lava")
    lowered = graph if graph_mode(graph) == encoding else ExpandSpikes(encoding).apply(graph)
    with tempfile.TemporaryDirectory(prefix="spikedeploy-audit-") as tmp:
        path = spec.exporter_module().export(lowered, Path(tmp) / "model.lava", encoding=encoding)
        trun = spec.runtime_module().run(spec.exporter_module().load(path), x)
    return _checked_against_reference(lowered, x, trun.spike_counts, "lava"), _run_saturation(trun)


def audit_artifact(
    target: str,
    path,
    *,
    num_inputs: int = 8,
    seed: int = 0,
    input_file=None,
    profile="45nm",
    output=None,
    overwrite: bool = False,
    precision: Optional[str] = None,
) -> AuditReport:
    """Audit an exported artifact (a NIR file or a Lava bundle; both carry their IR graph) on
    ``num_inputs`` random inputs (T and the input shape from the artifact) or the .npy
    ``input_file``. A Lava bundle is run in the Lava simulator (counts checked against the
    reference); a NIR file is re-executed by the reference. ONNX artifacts hold the integer network,
    which has no spikes to count: audit their model, or its NIR/Lava export. ``precision``: None
    audits the artifact in its own precision (a fixed-point Lava bundle: its fixed graph); "float"
    or "fixed" must match it."""
    from spikedeploy import loading
    from spikedeploy.fsutil import check_output_dir
    from spikedeploy.reference import graph_mode
    from spikedeploy.targets import get_target

    prof = get_profile(profile)
    spec = get_target(target)
    if spec.name == "onnx":
        raise AuditError(
            "an ONNX artifact holds the integer network, which emits no spikes to count; audit the model "
            "('spikedeploy audit --model ...') or its NIR/Lava export"
        )
    inputs = (path, input_file)
    if output is not None:
        check_output_dir(output, overwrite=overwrite, inputs=inputs)
    if precision is not None:
        loading.check_precision(precision, targets=(spec.name,))
    artifact = spec.exporter_module().load(path)
    own = loading.artifact_precision(artifact)
    if precision is not None and precision != own:
        raise ConfigError(f"artifact {path} holds a {'fixed-point' if own == 'fixed' else 'float'} graph, not "
                          f"{'fixed-point' if precision == 'fixed' else 'float'}; "
                          + ("export the model with --precision fixed" if own == "float" else "leave --precision out"))
    graph = artifact.graph
    if input_file is not None:
        x = loading.load_input_file(input_file).to(torch.float32)
    else:
        if isinstance(num_inputs, bool) or not isinstance(num_inputs, int) or num_inputs < 1:
            raise AuditError(f"empty input set: --inputs must be a positive integer, got {num_inputs!r}")
        meta = graph.meta_dict()
        T = int(meta.get("timesteps", meta.get("capture_T", 1)))
        gen = torch.Generator().manual_seed(seed + 1)
        x = torch.randn((T, num_inputs) + tuple(graph.inputs[0].shape), generator=gen)
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise AuditError(f"empty input set: {input_file} holds no input (shape {list(x.shape)})")
    encoding = graph_mode(graph)
    if encoding == "integer":
        encoding = "binary"
    counts = sat = None
    if spec.name == "lava":
        trun = spec.runtime_module().run(artifact, x)
        counts, sat = _checked_against_reference(graph, x, trun.spike_counts, "lava"), _run_saturation(trun)
    report = audit_graph(graph, x, encoding=encoding, profile=prof, spike_counts=counts, saturated=sat,
                         runtime=spec.name if counts is not None else "reference", model=str(path),
                         weights=str(graph.meta_dict().get("weights", "")))
    if output is not None:
        report.write(output, overwrite=overwrite, inputs=inputs)
    return report
