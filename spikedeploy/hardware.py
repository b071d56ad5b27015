"""Hardware budget: what a lowered network needs on a neuromorphic chip (issue 14, item 6).

For a Lava bundle (its embedded IR graph) or a lowered / fixed-point IR graph, per layer: the
neurons, the synapses that feed them, the synaptic memory in bits, the neuron state in bits, and
the neurocores the layer needs under a chip's published per-core limits; for the network the
number of chips. Every constant is a :class:`Constant` carrying its sources (title, date, URL)
and whether it could be confirmed; a chip is a :class:`HardwareProfile` in :data:`PROFILES`
(:func:`register_profile` refuses duplicates).

Counting rules (the model, documented; no chip compiler is run)
--------------------------------------------------------------
* **Layers** are groups of compartments on the chip: every **neuron** layer of the graph; a
  **relay** where a real-valued value must be held in compartments before it can be sent on (a
  synapse cannot feed another synapse: a chip's synapses go from a compartment to a compartment,
  so a weighted op whose input is another weighted op's output - e.g. a convolution's output
  average-pooled, or upsampled - reads a relay of that value; and a residual sum of more than
  :data:`~spikedeploy.exporters.lava.MAX_SUM_TERMS` streams is one relay, exactly where the Lava
  compiler puts its ``junction`` relays); a **readout** for a graph output that a synapse computes
  (compartments that accumulate it for the host). A neuron's spikes routed straight to an output
  need no readout. The host part (every op upstream of all neurons: the first layer on pixels)
  is not on the chip; its values arrive over one-to-one input synapses.
* **Synapses** of a layer: for each incoming synapse group (a source layer or host value, and the
  weighted op between them), the unrolled non-zero weights that connect an existing source
  compartment to a target compartment: a convolution's real fan-in per target (border-aware,
  zero weights dropped, groups and strides), a linear layer's non-zero weights, pooling windows,
  a mean's inputs, an upsampling's non-zero interpolation taps, a ``MemoryRead``'s non-zero memory
  cells per token (summed over its memory steps), a spike attention's kv memory read by q (every
  cell of a head, per token: its weights are written by k/v spike pairs at run time), and a
  one-to-one synapse for a value routed, scaled or added without a weighted op. Routing
  (``Reshape``, ``Permute``, ``Concat``), constants (``AddConstant``) and diagonal scales
  (``Scale``, ``BatchNorm``) change no count: they fold into the group's weights or the neuron's
  bias. A synapse group that feeds several layers is stored in each of them (a chip keeps the
  synapses with their target compartments). ``weights`` is the number of distinct stored
  parameters (a kernel's non-zero entries, memory cells): what a weight-sharing format would need.
* **Synaptic memory** = synapses x (weight bits + index bits): the weight mantissa (8 bits on
  Loihi 2; a fixed-point graph's plan ``fixed_point.weight_bits``; a spike attention's kv cells
  hold pair counts in the state width) plus, per synapse, the index of its target compartment
  within the core (``ceil(log2(neurons per core))`` bits: a sparse synapse list, our assumption,
  not a published format). Shared or compressed formats would need less.
* **Neuron state** = compartments x state variables x state bits: an integer neuron keeps its
  membrane and the input it integrates over its spike window (two 24-bit variables, like
  lava-nc's fixed-point LIF ``u`` and ``v``); a relay or readout keeps one accumulator.
* **Neurocores**: a layer's compartments are split over cores in order, each core holding a
  contiguous run of them with all their incoming synapses and their state, as long as the core's
  neuron limit and memory (synaptic + state bits) are not exceeded. Cores are not shared between
  layers. A layer is refused (:class:`PlacementError`, one line naming the layer and the limit)
  when one compartment's own synapses and state do not fit one core's memory.
* **Chips** = the largest of ceil(cores / cores per chip), ceil(neurons / neurons per chip) and
  ceil(synapses / synapses per chip).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from spikedeploy.errors import ConfigError, SpikedeployError
from spikedeploy.ir import ops as O
from spikedeploy.ir.graph import Graph, numel, validate

__all__ = ["Source", "Constant", "HardwareProfile", "PROFILES", "register_profile", "get_profile", "BudgetError",
           "PlacementError", "SynapseGroup", "LayerBudget", "BudgetReport", "budget_graph", "budget_bundle",
           "FORMATS", "LOIHI2"]

#: report formats :meth:`BudgetReport.render` writes
FORMATS = ("md", "json", "html")


class BudgetError(SpikedeployError):
    """A graph the budget has no rule for (the message names the node and the op)."""

    exit_code = 2


class PlacementError(BudgetError):
    """A layer that cannot be placed under the profile's per-core limits."""


# ---------------------------------------------------------------------------------------------
# hardware profiles: constants with their sources
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Source:
    """Where a figure was read: document title, its date, address."""

    title: str
    date: str
    url: str

    def cite(self) -> str:
        return f"{self.title} ({self.date}), {self.url}"


#: statuses of a constant: read in a source / only in secondary or conflicting sources / our choice
STATUSES = ("confirmed", "unconfirmed", "assumption")


@dataclass(frozen=True)
class Constant:
    """One hardware figure and its provenance."""

    value: int
    unit: str
    description: str
    sources: Tuple[Source, ...]
    status: str = "confirmed"
    note: str = ""

    def __post_init__(self):
        if self.status not in STATUSES:
            raise ValueError(f"constant status must be one of {STATUSES}, got {self.status!r}")
        if isinstance(self.value, bool) or not isinstance(self.value, int) or self.value < 1:
            raise ValueError(f"a hardware constant is a positive integer, got {self.value!r}")

    def to_dict(self) -> dict:
        return {"value": self.value, "unit": self.unit, "description": self.description, "status": self.status,
                "note": self.note, "sources": [vars(s) for s in self.sources]}


#: the fields of a profile that are constants, in report order
CONSTANT_FIELDS = ("cores_per_chip", "neurons_per_chip", "synapses_per_chip", "neurons_per_core",
                   "memory_bytes_per_core", "weight_bits", "state_bits", "neuron_state_vars", "index_bits")


@dataclass(frozen=True)
class HardwareProfile:
    """A chip's limits and number formats (each a sourced :class:`Constant`)."""

    name: str
    title: str
    cores_per_chip: Constant
    neurons_per_chip: Constant
    synapses_per_chip: Constant
    neurons_per_core: Constant
    memory_bytes_per_core: Constant
    weight_bits: Constant
    state_bits: Constant
    neuron_state_vars: Constant
    index_bits: Constant

    def constants(self) -> Dict[str, Constant]:
        return {f: getattr(self, f) for f in CONSTANT_FIELDS}

    @property
    def memory_bits_per_core(self) -> int:
        return 8 * self.memory_bytes_per_core.value


PROFILES: Dict[str, HardwareProfile] = {}


def register_profile(profile: HardwareProfile) -> HardwareProfile:
    """Add a profile to :data:`PROFILES`; a second profile of the same name is refused."""
    if profile.name in PROFILES:
        raise ValueError(f"hardware profile {profile.name!r} is already registered")
    PROFILES[profile.name] = profile
    return profile


def get_profile(profile) -> HardwareProfile:
    if isinstance(profile, HardwareProfile):
        return profile
    if profile not in PROFILES:
        raise ConfigError(f"unknown hardware profile {profile!r}; known: {', '.join(sorted(PROFILES))}")
    return PROFILES[profile]


_INTEL_BRIEF = Source("Intel Labs, Taking Neuromorphic Computing to the Next Level with Loihi 2, Technology Brief",
                      "2021-09-30", "https://www.scribd.com/document/714638451/ (a copy; the figures below were "
                      "read in the secondary sources, not in this copy)")
_OPEN_NEURO = Source("Open Neuromorphic, Loihi 2 - Intel (hardware guide)", "undated, read 2025",
                     "https://open-neuromorphic.org/neuromorphic-computing/hardware/loihi-2-intel/")
_WIKICHIP = Source("WikiChip, Loihi 2 - Intel", "page revision 102417 (chip announced 2021-09-30)",
                   "https://en.wikichip.org/w/index.php?title=intel/loihi_2&oldid=102417")
_GIZBOT = Source("Gizbot, Intel Announces Loihi 2 Neuromorphic Research Chip Based On Intel 4 Fabrication",
                 "2021-10", "https://www.gizbot.com/computer/news/intel-announces-loihi-2-neuromorphic-research-chip-"
                            "based-on-intel-4-fabrication-077110.html")
_TOMS = Source("Tom's Hardware, Intel Reveals 4nm Loihi 2 Neuromorphic Research Chip (quoted in a forum post)",
               "2021-09-30", "https://geeks.fyi/showthread.php?action=newpost&tid=16221")
_FBH = Source("FBH Tech Info, Intel's new Loihi-2 chip uses 1 million neurons", "2021-10",
              "https://fbhtechinfo.com/intels-new-loihi-2-chip-uses-1-million-neurons/")
_LAVA_LIF = Source("lava-nc 0.10.0, lava/proc/lif/models.py, PyLifModelBitAcc (u, v: precision=24)", "2023",
                   "https://github.com/lava-nc/lava/blob/v0.10.0/src/lava/proc/lif/models.py")
_LAVA_DENSE = Source("lava-nc 0.10.0, lava/proc/dense/models.py and sparse/models.py (weights: precision=8, "
                     "num_weight_bits default 8)", "2023",
                     "https://github.com/lava-nc/lava/blob/v0.10.0/src/lava/proc/dense/models.py")
_HERE = Source("spikedeploy, spikedeploy/hardware.py module docstring (counting rules)", "2025", "this repository")

LOIHI2 = register_profile(HardwareProfile(
    name="loihi2",
    title="Intel Loihi 2",
    cores_per_chip=Constant(128, "neurocores / chip", "neuromorphic cores per chip",
                            (_OPEN_NEURO, _WIKICHIP, _GIZBOT, _INTEL_BRIEF),
                            note="the secondary sources agree (Gizbot quotes Intel's table); Intel's brief itself "
                                 "was not read"),
    neurons_per_chip=Constant(1_000_000, "neurons / chip", "neurons per chip ('up to 1 million')",
                              (_OPEN_NEURO, _WIKICHIP, _INTEL_BRIEF),
                              note="secondary sources agree; WikiChip's later revision gives 1,048,576 = 128 x "
                                   "8192; the smaller figure is used"),
    synapses_per_chip=Constant(120_000_000, "synapses / chip", "synapses per chip ('up to 120 million')",
                               (_OPEN_NEURO, _WIKICHIP, _INTEL_BRIEF),
                               note="secondary sources agree; a maximum that needs compressed synapse formats; "
                                    "this budget counts unrolled "
                                    "synapses against the per-core memory"),
    neurons_per_core=Constant(8192, "neurons / core", "neurons per neurocore (up to)",
                              (_WIKICHIP,), status="unconfirmed",
                              note="only WikiChip's key-changes list was found (and 1,048,576 / 128 = 8192); no "
                                   "Intel document was read"),
    memory_bytes_per_core=Constant(192 * 1024, "bytes / core", "SRAM per neurocore, flexibly partitioned between "
                                   "synapses, neuron state and routing", (_TOMS, _FBH), status="unconfirmed",
                                   note="secondary sources disagree: 192 KB (Tom's Hardware) and 128 KB (FBH Tech "
                                        "Info); 192 KB is used, core counts scale with it"),
    weight_bits=Constant(8, "bits", "synaptic weight mantissa (signed)", (_LAVA_DENSE,)),
    state_bits=Constant(24, "bits", "neuron state variable and graded payload width", (_LAVA_LIF,)),
    neuron_state_vars=Constant(2, "variables / neuron", "state variables of an integer neuron: membrane and the "
                               "input integrated over its spike window (as LIF's v and u)", (_LAVA_LIF, _HERE),
                               status="assumption"),
    index_bits=Constant(13, "bits / synapse", "target index per synapse in a sparse synapse list: "
                        "ceil(log2(neurons per core))", (_HERE,), status="assumption"),
))


# ---------------------------------------------------------------------------------------------
# the report
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SynapseGroup:
    """The synapses from one source (a layer or a host value) through one weighted op (None:
    one-to-one) into a layer."""

    source: str
    op: Optional[str]
    kind: str  #: the op kind ("Conv2d", ...), "one-to-one" for a routed/added value
    synapses: int
    weights: Optional[int]  #: distinct stored parameters (None: no parameter tensor)
    weight_bits: int


@dataclass(frozen=True)
class LayerBudget:
    name: str
    kind: str  #: "neuron", "relay", "readout"
    label: str  #: the neuron type, or why the layer exists
    shape: Tuple[int, ...]
    neurons: int
    synapses: int
    max_fan_in: int
    synaptic_bits: int
    state_bits: int
    cores: int
    bound: str  #: what set the core count: "neurons" or "memory"
    groups: Tuple[SynapseGroup, ...]

    @property
    def memory_bits(self) -> int:
        return self.synaptic_bits + self.state_bits


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:,.1f}"
    return f"{v:,}" if isinstance(v, int) else str(v)


def _kib(bits: int) -> str:
    return f"{bits / 8192:,.1f}"


@dataclass(frozen=True)
class BudgetReport:
    profile: HardwareProfile
    source: str  #: what was budgeted (bundle path or graph name)
    weight_bits: int
    fixed_point: bool
    layers: Tuple[LayerBudget, ...]
    host_nodes: Tuple[str, ...]
    notes: Tuple[str, ...] = field(default=())

    def layer(self, name: str) -> LayerBudget:
        for la in self.layers:
            if la.name == name:
                return la
        raise KeyError(name)

    @property
    def totals(self) -> Dict[str, int]:
        p = self.profile
        t = {k: sum(getattr(la, k) for la in self.layers)
             for k in ("neurons", "synapses", "synaptic_bits", "state_bits", "cores")}
        shared = {g.op: g.weights for la in self.layers for g in la.groups if g.op is not None and g.weights}
        t["distinct_weights"] = sum(shared.values())  #: what a weight-sharing format would store
        t["layers"] = len(self.layers)
        t["neuron_layers"] = sum(la.kind == "neuron" for la in self.layers)
        by = {"cores": math.ceil(t["cores"] / p.cores_per_chip.value),
              "neurons": math.ceil(t["neurons"] / p.neurons_per_chip.value),
              "synapses": math.ceil(t["synapses"] / p.synapses_per_chip.value)}
        t["chips"] = max(1, *by.values())
        t["chips_by"] = max(by, key=lambda k: by[k])
        return t

    def to_dict(self) -> dict:
        return {
            "profile": {"name": self.profile.name, "title": self.profile.title,
                        "constants": {k: c.to_dict() for k, c in self.profile.constants().items()}},
            "source": self.source, "weight_bits": self.weight_bits, "fixed_point": self.fixed_point,
            "totals": self.totals, "host_nodes": list(self.host_nodes), "notes": list(self.notes),
            "layers": [{"name": la.name, "kind": la.kind, "label": la.label, "shape": list(la.shape),
                        "neurons": la.neurons, "synapses": la.synapses, "max_fan_in": la.max_fan_in,
                        "synaptic_bits": la.synaptic_bits, "state_bits": la.state_bits, "cores": la.cores,
                        "bound": la.bound, "groups": [vars(g) for g in la.groups]} for la in self.layers],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)

    def _constant_rows(self) -> List[List[str]]:
        rows = []
        for k, c in self.profile.constants().items():
            status = c.status.upper() if c.status != "confirmed" else "confirmed"
            rows.append([k, f"{c.value:,} {c.unit}", c.description, status + (f": {c.note}" if c.note else ""),
                         "; ".join(s.cite() for s in c.sources)])
        return rows

    def summary_lines(self) -> List[str]:
        t = self.totals
        return [
            f"Budget of {self.source} on {self.profile.title} (profile {self.profile.name}); weights "
            f"{self.weight_bits} bits{' (the fixed-point plan)' if self.fixed_point else ''}.",
            f"{t['layers']} layers ({t['neuron_layers']} neuron layers), {t['neurons']:,} neurons (compartments, relays "
            f"and readouts included), "
            f"{t['synapses']:,} synapses unrolled ({t['distinct_weights']:,} distinct weights), synaptic memory {_kib(t['synaptic_bits'])} KiB, neuron state "
            f"{_kib(t['state_bits'])} KiB; {t['cores']:,} neurocores, {t['chips']} chip(s) (set by {t['chips_by']}).",
        ]

    def constant_lines(self) -> List[str]:
        """One line per constant: value, status and the first source."""
        return [f"  {k} = {c.value:,} {c.unit} [{c.status}] {c.sources[0].cite()}"
                for k, c in self.profile.constants().items()]

    _HEAD = ["layer", "kind", "neurons", "synapses", "max fan-in", "synaptic KiB", "state KiB", "cores", "bound"]

    def _rows(self) -> List[List[str]]:
        return [[la.name, la.kind if la.kind != "neuron" else la.label, _fmt(la.neurons), _fmt(la.synapses),
                 _fmt(la.max_fan_in), _kib(la.synaptic_bits), _kib(la.state_bits), _fmt(la.cores), la.bound]
                for la in self.layers]

    def to_markdown(self) -> str:
        out = ["# Hardware budget", ""] + self.summary_lines() + ["", "## Constants", "",
                                                                    "| constant | value | meaning | status | sources |",
                                                                    "|---|---|---|---|---|"]
        out += ["| " + " | ".join(r) + " |" for r in self._constant_rows()]
        out += ["", "## Layers", "", "| " + " | ".join(self._HEAD) + " |", "|---|---|" + "---:|" * 6 + "---|"]
        out += ["| `" + r[0] + "` | " + " | ".join(r[1:]) + " |" for r in self._rows()]
        if self.host_nodes:
            out += ["", f"Host (not on the chip): {', '.join(f'`{n}`' for n in self.host_nodes)}."]
        out += ["", "## Notes", ""] + [f"- {n}" for n in self.notes]
        return "\n".join(out) + "\n"

    def to_html(self) -> str:
        from spikedeploy.htmlreport import HtmlPage

        page = HtmlPage(f"Hardware budget: {self.source}")
        page.heading("Hardware budget", 1)
        for line in self.summary_lines():
            page.paragraph(line)
        page.heading("Constants")
        page.table(["constant", "value", "meaning", "status", "sources"], self._constant_rows(), align="nrttt")
        page.heading("Layers")
        page.table(self._HEAD, self._rows(), align="nl" + "r" * 6 + "l")
        if self.host_nodes:
            page.paragraph("Host (not on the chip): " + ", ".join(self.host_nodes))
        page.heading("Notes")
        page.bullets(list(self.notes))
        return page.render()

    def render(self, fmt: str) -> str:
        if fmt not in FORMATS:
            raise ConfigError(f"unknown budget format {fmt!r}; choose one of {', '.join(FORMATS)}")
        return {"md": self.to_markdown, "json": self.to_json, "html": self.to_html}[fmt]()

    def write(self, path, fmt: Optional[str] = None, *, overwrite: bool = False, inputs=()) -> Path:
        """Write the report to ``path`` (atomically; an existing file only with ``overwrite``) in
        ``fmt`` (default: from the suffix, ``.md`` otherwise)."""
        from spikedeploy.fsutil import atomic_write_text, check_output_file

        path = Path(path)
        fmt = fmt or format_of(path)
        text = self.render(fmt)
        check_output_file(path, "budget report", overwrite=overwrite, inputs=inputs)
        return atomic_write_text(path, text, replace=overwrite)


def format_of(path) -> str:
    """The report format a file name asks for (``.json``, ``.html``/``.htm``; anything else Markdown)."""
    suffix = Path(path).suffix.lower()
    return {".json": "json", ".html": "html", ".htm": "html"}.get(suffix, "md")


# ---------------------------------------------------------------------------------------------
# counting
# ---------------------------------------------------------------------------------------------

_DT = torch.float64
_ROUTING = (O.Reshape, O.Permute, O.Concat)
_DIAGONAL = (O.Scale, O.BatchNorm, O.AddConstant)
_WEIGHTED = (O.Conv2d, O.Conv1d, O.Linear, O.GateLinear, O.AvgPool2d, O.MeanReduce, O.Upsample, O.MemoryRead,
             O.SpikeLinearAttention)


@dataclass
class _Term:
    """Synapses into the current value from ``source`` through ``op`` (None: one-to-one):
    ``fanin`` holds, per element of the value (per-step shape), the synapses that reach it."""

    source: str
    op: Optional[str]
    kind: str
    fanin: torch.Tensor
    weights: Optional[int]
    bits: int


def _ind(a) -> torch.Tensor:
    return torch.as_tensor(np.asarray(a) != 0).to(_DT)


def _fan_in(op: O.Op, m: torch.Tensor, in_shape, out_shape) -> Tuple[torch.Tensor, Optional[int]]:
    """Per output element, the synapses from the input elements marked in ``m`` (0/1, per-step
    input shape) through ``op``'s non-zero weights; and the op's distinct non-zero parameters."""
    if isinstance(op, O.Conv2d):
        w = _ind(op.weight)
        f = F.conv2d(m[None], w, None, tuple(op.stride), tuple(op.padding), tuple(op.dilation), op.groups)[0]
        return f, int(w.sum())
    if isinstance(op, O.Conv1d):
        w = _ind(op.weight)
        return F.conv1d(m[None], w, None, op.stride, op.padding, op.dilation, op.groups)[0], int(w.sum())
    if isinstance(op, (O.Linear, O.GateLinear)):
        w = _ind(op.weight)
        return m @ w.T, int(w.sum())
    if isinstance(op, O.AvgPool2d):
        k = torch.ones((1, 1) + tuple(op.kernel), dtype=_DT)
        return F.conv2d(m[:, None], k, None, tuple(op.stride), tuple(op.padding))[:, 0], None
    if isinstance(op, O.MeanReduce):
        return m.sum(dim=tuple(op.axes), keepdim=op.keepdim), None
    if isinstance(op, O.Upsample):
        from spikedeploy.audit import upsample_axis_matrices

        a_h, a_w = upsample_axis_matrices(op, in_shape[1:])
        return torch.einsum("yi,cij,xj->cyx", (a_h != 0).to(_DT), m, (a_w != 0).to(_DT)), None
    if isinstance(op, (O.MemoryRead, O.SpikeLinearAttention)):
        c, n = (int(d) for d in in_shape)
        h = int(op.num_heads)
        cv = int(out_shape[0]) // h
        if isinstance(op, O.MemoryRead):
            ind = _ind(op.memory).sum(dim=0)  # [H, C/H, Cv/H]: every memory step is stored
            weights = int(np.count_nonzero(op.memory))
        else:
            ind = torch.ones((h, c // h, cv), dtype=_DT)  # kv cells, written by k/v spike pairs
            weights = h * (c // h) * cv
        f = torch.einsum("hcj,hcn->hjn", ind, m.reshape(h, c // h, n)).reshape(h * cv, n)
        return f, weights
    raise TypeError(op.kind)  # pragma: no cover - callers dispatch on _WEIGHTED


def _route(op: O.Op, term_parts: List[Optional[torch.Tensor]], in_shapes, out_shape) -> torch.Tensor:
    if isinstance(op, O.Reshape):
        return term_parts[0].reshape(tuple(out_shape))
    if isinstance(op, O.Permute):
        return term_parts[0].permute(tuple(op.perm)).contiguous()
    parts = [p if p is not None else torch.zeros(tuple(s), dtype=_DT) for p, s in zip(term_parts, in_shapes)]
    return torch.cat(parts, dim=op.axis)


@dataclass
class _Sink:
    name: str
    kind: str
    label: str
    shape: Tuple[int, ...]
    terms: List[_Term]
    state_vars: int


def _collect(graph: Graph, weight_bits: int, state_bits: int, neuron_vars: int):
    """Walk the graph: the layers (sinks) with their incoming terms, and the host nodes."""
    from spikedeploy.exporters.lava import MAX_SUM_TERMS

    shapes = validate(graph)
    host = {s.name for s in graph.inputs}
    host_nodes = []
    for n in graph.nodes:
        if not isinstance(n.op, O.NEURON_OPS) and all(i in host for i in n.inputs):
            host.add(n.name)
            host_nodes.append(n.name)
    exprs: Dict[str, List[_Term]] = {}
    sinks: List[_Sink] = []

    def one_to_one(value: str, source: str) -> List[_Term]:
        return [_Term(source, None, "one-to-one", torch.ones(tuple(shapes[value]), dtype=_DT), None, weight_bits)]

    def terms_of(value: str) -> List[_Term]:
        return one_to_one(value, f"host:{value}") if value in host else exprs[value]

    def relay(value: str, terms: List[_Term], why: str) -> List[_Term]:
        sinks.append(_Sink(value, "relay", why, tuple(shapes[value]), terms, 1))
        exprs[value] = one_to_one(value, value)
        return exprs[value]

    for node in graph.nodes:
        if node.name in host:
            continue
        op, out_shape = node.op, tuple(shapes[node.name])
        if isinstance(op, O.NEURON_OPS):
            sinks.append(_Sink(node.name, "neuron", getattr(op, "label", op.kind), out_shape,
                               terms_of(node.inputs[0]), neuron_vars))
            exprs[node.name] = one_to_one(node.name, node.name)
        elif isinstance(op, _ROUTING):
            ins = [terms_of(i) for i in node.inputs]
            in_shapes = [shapes[i] for i in node.inputs]
            out = []
            for k, terms in enumerate(ins):
                for t in terms:
                    parts = [t.fanin if j == k else None for j in range(len(ins))]
                    out.append(_Term(t.source, t.op, t.kind, _route(op, parts, in_shapes, out_shape), t.weights, t.bits))
            exprs[node.name] = out
        elif isinstance(op, _DIAGONAL):
            exprs[node.name] = list(terms_of(node.inputs[0]))
        elif isinstance(op, O.Add):
            terms = terms_of(node.inputs[0]) + terms_of(node.inputs[1])
            exprs[node.name] = terms
            if len(terms) > MAX_SUM_TERMS:
                relay(node.name, terms, f"residual sum of {len(terms)} streams")
        elif isinstance(op, _WEIGHTED):
            src = node.inputs[0]  # the q input of an attention
            terms = terms_of(src)
            if any(t.op is not None for t in terms):
                terms = relay(src, terms, f"held for {op.kind} {node.name}")
            if isinstance(op, O.SpikeLinearAttention):
                for kv in node.inputs[1:]:
                    if any(t.op is not None for t in terms_of(kv)):
                        raise BudgetError(f"budget: attention {node.name!r} needs spike inputs k and v; "
                                          f"{kv!r} is a synapse output")
            bits = state_bits if isinstance(op, O.SpikeLinearAttention) else weight_bits
            out = []
            for t in terms:
                f, w = _fan_in(op, t.fanin, shapes[src], out_shape)
                out.append(_Term(t.source, node.name, op.kind, f, w, bits))
            exprs[node.name] = out
        elif isinstance(op, O.MemoryWrite):
            exprs[node.name] = []  # a template memory for the host: k/v pair counts, no synapses
        else:
            raise BudgetError(f"budget: no rule for op {op.kind} (node {node.name!r}); the hardware budget "
                              "covers one-step graphs of neurons, synapses, attention and memory reads")
    for o in graph.outputs:
        if o in host or isinstance(graph.node(o).op, O.NEURON_OPS):
            continue
        terms = exprs.get(o, [])
        if any(t.op is not None for t in terms) and not any(s.name == o for s in sinks):
            sinks.append(_Sink(o, "readout", "graph output computed by synapses", tuple(shapes[o]), terms, 1))
    return sinks, tuple(host_nodes)


def _cores(cost: np.ndarray, per_core: int, mem_bits: int) -> Tuple[int, str]:
    """Greedy contiguous packing of compartments (cost in bits each) into cores of ``per_core``
    compartments and ``mem_bits`` bits. Returns (cores, what bound them)."""
    n = int(cost.size)
    if n == 0:
        return 0, "-"
    cum = np.concatenate([[0], np.cumsum(cost, dtype=np.float64)])
    start, cores, by_memory = 0, 0, False
    while start < n:
        by_neurons = min(n, start + per_core)
        by_mem = int(np.searchsorted(cum, cum[start] + mem_bits, side="right")) - 1
        end = min(by_neurons, by_mem)
        by_memory |= by_mem < by_neurons
        start, cores = end, cores + 1
    return cores, "memory" if by_memory else "neurons"


def budget_graph(graph: Graph, profile="loihi2", *, source: str = "graph") -> BudgetReport:
    """The hardware budget of a lowered (or fixed-point) IR graph under ``profile`` (see the
    module docstring for the rules). Raises :class:`PlacementError` for a layer that cannot be
    placed and :class:`BudgetError` for an op without a rule."""
    prof = get_profile(profile)
    plan = graph.meta_dict().get("fixed_point")
    fixed = plan is not None
    wbits = int(plan["weight_bits"]) if fixed else prof.weight_bits.value
    sbits = int(plan.get("state_bits", prof.state_bits.value)) if fixed else prof.state_bits.value
    if graph.neurons() and any(getattr(n.op, "encoding", "x") is None for n in graph.neurons()):
        raise BudgetError("budget: the graph is not lowered to spikes (run ExpandSpikes, or budget a Lava bundle)")
    sinks, host_nodes = _collect(graph, wbits, sbits, prof.neuron_state_vars.value)
    per_core, mem_bits, ibits = prof.neurons_per_core.value, prof.memory_bits_per_core, prof.index_bits.value
    layers = []
    for s in sinks:
        merged: Dict[Tuple[str, Optional[str]], _Term] = {}
        for t in s.terms:
            key = (t.source, t.op)
            if key in merged:
                merged[key].fanin = merged[key].fanin + t.fanin
            else:
                merged[key] = _Term(t.source, t.op, t.kind, t.fanin.clone(), t.weights, t.bits)
        size = numel(s.shape)
        fan = torch.zeros(size, dtype=_DT)
        cost = torch.full((size,), float(s.state_vars * sbits), dtype=_DT)
        groups = []
        for t in merged.values():
            f = t.fanin.reshape(-1)
            fan += f
            cost += f * (t.bits + ibits)
            groups.append(SynapseGroup(t.source, t.op, t.kind, int(f.sum()), t.weights, t.bits))
        cost_np = cost.numpy()
        worst = int(np.argmax(cost_np)) if size else 0
        if size and cost_np[worst] > mem_bits:
            raise PlacementError(
                f"budget: layer {s.name!r} cannot be placed on {prof.title}: one of its neurons has a fan-in of "
                f"{int(fan[worst]):,} synapses, {int(cost_np[worst]):,} bits with its state, more than the "
                f"{prof.memory_bytes_per_core.value:,} bytes ({mem_bits:,} bits) of memory per neurocore")
        cores, bound = _cores(cost_np, per_core, mem_bits)
        syn_bits = sum(g.synapses * (g.weight_bits + ibits) for g in groups)
        layers.append(LayerBudget(s.name, s.kind, s.label, s.shape, size, int(fan.sum()),
                                  int(fan.max()) if size else 0, int(syn_bits), size * s.state_vars * sbits,
                                  cores, bound, tuple(groups)))
    notes = [
        "Counting rules: spikedeploy/hardware.py module docstring. Synapses are unrolled non-zero weights stored with "
        "their target compartments; synaptic memory = synapses x (weight bits + target index bits); cores are not "
        "shared between layers.",
        "Constants marked UNCONFIRMED or ASSUMPTION could not be read in a primary source or are this model's "
        "choices; the core and chip counts depend on them (memory per core above all).",
    ]
    if any(la.kind == "relay" for la in layers):
        notes.append("Relay layers hold a real-valued sum or a synapse output that feeds another synapse (the Lava "
                     "simulator chains such synapses directly; a chip needs compartments in between).")
    return BudgetReport(prof, source, wbits, fixed, tuple(layers), host_nodes, tuple(notes))


def budget_bundle(path, profile="loihi2") -> BudgetReport:
    """The budget of a Lava bundle written by ``spikedeploy export --target lava`` (its IR graph);
    the neuron layers are checked against the bundle's neuron table."""
    from spikedeploy.exporters import lava as lava_export

    bundle = lava_export.load(path)
    report = budget_graph(bundle.graph, profile, source=str(path))
    table = bundle.description["neurons"]
    for la in report.layers:
        if la.kind == "neuron" and (la.name not in table or numel(table[la.name]["shape"]) != la.neurons):
            raise BudgetError(f"budget: Lava bundle {path}: neuron layer {la.name!r} does not match the bundle's "
                              "neuron table; export the bundle again")
    counts = bundle.description.get("process_counts", {})
    note = (f"Lava bundle: {sum(counts.values())} Lava processes ({', '.join(f'{k} {v}' for k, v in counts.items())}), "
            f"{bundle.encoding} spikes.")
    return BudgetReport(report.profile, report.source, report.weight_bits, report.fixed_point, report.layers,
                        report.host_nodes, report.notes + (note,))
