"""Network backends for the SpikeTrack tracker (:mod:`spikedeploy.tracking.tracker`): the same captured
network run by the reference interpreter, onnxruntime or Lava's CPU simulator, plugged into the tracker's
:class:`~spikedeploy.tracking.tracker.TrackerNetwork` protocol::

    from spikedeploy.models.spiketrack import spiketrack
    from spikedeploy.tracking.tracker import SpikeTrackTracker, track_sequence
    from spikedeploy.tracking.backends import LavaNetwork, OnnxNetwork, ReferenceNetwork

    model = spiketrack("s256", 1, checkpoint="X.pth.tar")
    tracker = SpikeTrackTracker(ReferenceNetwork(model, mode="binary"))   # unit spikes
    tracker = SpikeTrackTracker(OnnxNetwork(model))                       # onnxruntime
    tracker = SpikeTrackTracker(LavaNetwork(model, encoding="graded"))    # Lava CPU simulator

How the two branches become graphs
    The template branch (:class:`~spikedeploy.models.spiketrack.SpikeTrackTemplateNet`, outputs
    the six memories ``[T, B, H, C/H, Cv/H]``, one per MRM) and the search branch
    (:class:`~spikedeploy.models.spiketrack.SpikeTrackSearchNet`) are captured *once* with
    :func:`spikedeploy.capture.capture` and folded with ``default_pipeline()``. In the search graph
    each MRM's memory is the weight tensor of two ``MemoryRead`` nodes (``memory [T_mem, H, C/H,
    Cv/H]``): a synapse whose weights change when the templates change. :func:`set_memory` builds a
    new graph with those weights rewritten (``dataclasses.replace`` on the 12 ops; every other node
    is shared, nothing is re-captured). Lowering (``ExpandSpikes``) folds 1/norm into the
    ``MemoryRead`` ``scale`` and leaves the memory itself unchanged, so the same rewrite applies to
    the lowered graph.

Memory handles
    ``template()`` returns the memory as the torch model does: a dict ``{"cross_block_k": tensor
    [T, 1, H, C/H, Cv/H]}`` (:data:`~spikedeploy.models.spiketrack.MEMORY_KEYS`); ``search()``
    accepts that dict or a sequence of six tensors, from any backend (e.g. a
    :class:`~spikedeploy.tracking.tracker.TorchNetwork`'s memory). The search graph (or ONNX session) is
    rebuilt when ``search`` sees a memory object other than the one it was last built for (the
    memory is treated as immutable: do not modify its tensors in place).

T = 1 and T = 3 variants: the T = 3 branches capture with the IR's time-axis ops (RepeatTime,
SelectStep, StackSteps, the template gate); their memories are ``[3, 1, H, C/H, Cv/H]`` and
:func:`set_memory` writes them into the 12 MemoryReads (``T_mem = 3``). A model that cannot be
captured raises :class:`BackendCaptureError` with the capture error's message.
"""

from __future__ import annotations

import dataclasses
import re
import time
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch

from spikedeploy.errors import CaptureError, ConfigError
from spikedeploy.ir import ops as O
from spikedeploy.ir.graph import Graph
from spikedeploy.targets import PRECISIONS  # float or fixed
from spikedeploy.tracking.tracker import TrackerError, TrackerNetwork

__all__ = [
    "BackendCaptureError",
    "MemoryMismatchError",
    "SpikeTrackGraphs",
    "capture_spiketrack",
    "memory_read_map",
    "set_memory",
    "FixedPointBranches",
    "quantize_branches",
    "set_fixed_memory",
    "calibration_crops",
    "PRECISIONS",
    "ReferenceNetwork",
    "OnnxNetwork",
    "LavaNetwork",
]

#: ``source`` of a search-graph MemoryRead node: ``...mrm.<k>.retriever.memory_read``
_MEMORY_READ_SOURCE = re.compile(r"(?:^|\.)mrm\.(\d+)\.retriever\.memory_read$")
NUM_MEMORIES = 6  #: one memory per MRM
READS_PER_MEMORY = 2  #: each MRM's retriever reads its memory twice (two MemoryRead nodes)


class BackendCaptureError(TrackerError, CaptureError):
    """A SpikeTrack model whose branches cannot be captured into IR graphs. Both a :class:`~spikedeploy.tracking.tracker.TrackerError` and a
    :class:`~spikedeploy.errors.CaptureError` (exit code 2)."""


class MemoryMismatchError(TrackerError):
    """A memory that does not fit the search graph's MemoryRead nodes (count, shape, heads), or a
    graph whose MemoryRead nodes are not SpikeTrack's six MRMs read twice each."""


# ---------------------------------------------------------------------------------------------
# capture
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SpikeTrackGraphs:
    """The folded integer graphs of a SpikeTrack model's two branches: ``template`` (input
    ``[T, 1, 3, S, S]`` -> the six memories) and ``search`` (input ``[1, 1, 3, S, S]`` -> score
    logits, size logits, offset), and the variant's ``size`` S and ``templates`` T."""

    template: Graph
    search: Graph
    size: int
    templates: int
    name: str


def _model_dtype(model) -> torch.dtype:
    for p in model.parameters():
        if p.is_floating_point():
            return p.dtype
    return torch.float32


def capture_spiketrack(model) -> SpikeTrackGraphs:
    """Capture and fold (``default_pipeline()``) the template and search branches of a SpikeTrack
    ``model`` (its own ``template_net()`` / ``search_net(memory)``, T = 1 input, batch 1). The
    search graph's memory is a placeholder (the memory of an all-zero template), meant to be
    replaced with :func:`set_memory`. Raises :class:`BackendCaptureError` for a model that cannot
    be captured."""
    from spikedeploy.capture import capture
    from spikedeploy.models.spiketrack import SpikeTrack
    from spikedeploy.passes import default_pipeline

    if not isinstance(model, SpikeTrack):
        raise ConfigError(f"expected a SpikeTrack model, got {type(model).__name__}")
    cfg = model.config
    S, T = int(cfg.resolution), int(cfg.templates)
    dtype = _model_dtype(model)
    was_training = model.training
    model.eval()
    try:
        templates = torch.zeros((T, 1, 3, S, S), dtype=dtype)
        with torch.no_grad():
            memory = model.template_branch(templates)
        graphs = {}
        # the search branch first: for T = 3 its error (time-axis repeat) is the informative one
        for branch, net, example in (
            ("search", model.search_net(memory), torch.zeros((1, 1, 3, S, S), dtype=dtype)),
            ("template", model.template_net(), templates),
        ):
            try:
                graphs[branch] = capture(net, example, name=f"{cfg.name}/{branch}")
            except CaptureError as e:
                raise BackendCaptureError(
                    f"{cfg.name}: cannot capture the {branch} branch for the reference/ONNX tracker "
                    f"backends (this variant has T = {T}): {e}. "
                    "Use spikedeploy.tracking.tracker.TorchNetwork for this variant."
                ) from None
    finally:
        model.train(was_training)
    pipe = default_pipeline()
    return SpikeTrackGraphs(template=pipe.apply(graphs["template"]), search=pipe.apply(graphs["search"]),
                            size=S, templates=T, name=cfg.name)


# ---------------------------------------------------------------------------------------------
# memory rewrite
# ---------------------------------------------------------------------------------------------


def memory_read_map(graph: Graph) -> Dict[str, int]:
    """Map each ``MemoryRead`` node of a SpikeTrack search graph (integer or lowered) to the index
    k of the memory it reads (``MEMORY_KEYS[k]``, MRM order), from its source path
    ``...mrm.<k>.retriever.memory_read``. Checks that every k in 0..5 is read by exactly
    :data:`READS_PER_MEMORY` nodes with the same memory shape and number of heads."""
    mapping: Dict[str, int] = {}
    by_k: Dict[int, List[O.MemoryRead]] = {}
    for n in graph.nodes:
        if not isinstance(n.op, O.MemoryRead):
            continue
        m = _MEMORY_READ_SOURCE.search(n.source or "")
        if m is None:
            raise MemoryMismatchError(
                f"MemoryRead node {n.name!r} (source {n.source!r}) is not an MRM retriever's memory read "
                "('...mrm.<k>.retriever.memory_read')"
            )
        k = int(m.group(1))
        mapping[n.name] = k
        by_k.setdefault(k, []).append(n.op)
    if sorted(by_k) != list(range(NUM_MEMORIES)):
        raise MemoryMismatchError(
            f"expected MemoryRead nodes for the {NUM_MEMORIES} MRMs 0..{NUM_MEMORIES - 1}, found MRMs {sorted(by_k)}"
        )
    for k, reads in sorted(by_k.items()):
        if len(reads) != READS_PER_MEMORY:
            raise MemoryMismatchError(f"MRM {k}: expected {READS_PER_MEMORY} MemoryRead nodes, found {len(reads)}")
        shapes = {tuple(r.memory.shape) for r in reads}
        heads = {int(r.num_heads) for r in reads}
        if len(shapes) != 1 or len(heads) != 1:
            raise MemoryMismatchError(f"MRM {k}: its MemoryRead nodes disagree on the memory shape {shapes} or heads {heads}")
    return mapping


def _memory_list(memories) -> List[Any]:
    from spikedeploy.models.spiketrack import MEMORY_KEYS

    if isinstance(memories, Mapping):
        missing = [k for k in MEMORY_KEYS if k not in memories]
        if missing:
            raise MemoryMismatchError(f"memory lacks {missing}; expected keys {list(MEMORY_KEYS)}")
        return [memories[k] for k in MEMORY_KEYS]
    if isinstance(memories, (str, bytes)) or not isinstance(memories, Sequence):
        raise MemoryMismatchError(
            f"memory must be a dict {{'cross_block_k': tensor}} or a sequence of {NUM_MEMORIES} tensors, "
            f"got {type(memories).__name__}"
        )
    if len(memories) != NUM_MEMORIES:
        raise MemoryMismatchError(f"expected {NUM_MEMORIES} memories (one per MRM), got {len(memories)}")
    return list(memories)


def _as_read_memory(mem, k: int) -> np.ndarray:
    """A memory ``[T, 1, H, C/H, Cv/H]`` (a template graph output / the torch model's cache) or
    ``[T, H, C/H, Cv/H]`` -> the MemoryRead weight ``[T, H, C/H, Cv/H]`` (float64, read-only)."""
    a = mem.detach().cpu().double().numpy() if isinstance(mem, torch.Tensor) else np.asarray(mem, dtype=np.float64)
    if a.ndim == 5:
        if a.shape[1] != 1:
            raise MemoryMismatchError(f"memory {k}: batch {a.shape[1]}; the tracker backends take one memory (batch 1)")
        a = a[:, 0]
    if a.ndim != 4:
        raise MemoryMismatchError(f"memory {k} must be [T, 1, H, C/H, Cv/H] or [T, H, C/H, Cv/H], got {list(a.shape)}")
    if not np.isfinite(a).all():
        raise MemoryMismatchError(f"memory {k} contains NaN or Inf")
    return O.as_param(a)


def set_memory(graph: Graph, memories) -> Graph:
    """A copy of the SpikeTrack search ``graph`` (integer or lowered) whose ``MemoryRead`` weights
    are ``memories``: the six memories in MRM order (a dict keyed by ``MEMORY_KEYS`` or a
    sequence; each ``[T, 1, H, C/H, Cv/H]`` as the template graph / torch model return them, or
    ``[T, H, C/H, Cv/H]``). Each MRM reads its memory twice: both nodes get the same weights.
    The match is verified by the node's source path (:func:`memory_read_map`), the memory shape
    (T_mem, H, C/H, Cv/H) and the op's number of heads. Only those 12 ops are replaced
    (``dataclasses.replace``: ``scale`` and ``num_heads`` kept, so a lowered graph keeps its
    absorbed 1/norm); every other node is the same object."""
    mapping = memory_read_map(graph)
    mems = [_as_read_memory(m, k) for k, m in enumerate(_memory_list(memories))]
    nodes = []
    for n in graph.nodes:
        k = mapping.get(n.name)
        if k is None:
            nodes.append(n)
            continue
        new = mems[k]
        if tuple(new.shape) != tuple(n.op.memory.shape):
            raise MemoryMismatchError(
                f"memory {k} has shape {list(new.shape)} but node {n.name!r} ({n.source}) reads "
                f"[T_mem, H, C/H, Cv/H] = {list(n.op.memory.shape)}"
            )
        if new.shape[1] != int(n.op.num_heads):
            raise MemoryMismatchError(f"memory {k} has {new.shape[1]} heads, node {n.name!r} has {n.op.num_heads}")
        nodes.append(dataclasses.replace(n, op=dataclasses.replace(n.op, memory=new)))
    return graph.replace_nodes(nodes)


# ---------------------------------------------------------------------------------------------
# fixed point (Loihi 2 formats: spikedeploy.passes.quantize)
# ---------------------------------------------------------------------------------------------

#: calibration crops taken from the bundled demo clip by default (frames spread over the clip)
CALIBRATION_CROPS = 8


def calibration_crops(size: int, templates: int, count: int = CALIBRATION_CROPS) -> Tuple[torch.Tensor, torch.Tensor]:
    """Default calibration inputs of a fixed-point tracker: ``count`` crops of the bundled demo
    clip (the tracker's 4x-context crops around the ground-truth boxes of frames spread over the
    clip, normalized as the tracker does), as template input ``[templates, count, 3, S, S]``
    (the template branch takes T crops; the same crops serve every template slot) and search input
    ``[1, count, 3, S, S]``. The demo clip is the project's own synthetic sample data."""
    from spikedeploy.tracking.synth import demo_clip
    from spikedeploy.tracking.tracker import context_crops

    x = torch.from_numpy(context_crops(*demo_clip(), size, count)).to(torch.float64)[None]
    return x.expand(int(templates), *x.shape[1:]).contiguous(), x


@dataclasses.dataclass(frozen=True)
class FixedPointBranches:
    """Both SpikeTrack branches quantized (:func:`quantize_branches`): the template graph, whose
    integer outputs decode to the six memories, and the search graph, whose 12 MemoryRead synapses
    hold 8-bit memory mantissas with a static exponent each (calibrated on the calibration
    template's memory, rewritten per template by :func:`set_fixed_memory`)."""

    template: Graph
    search: Graph
    weight_bits: int


def quantize_branches(template: Graph, search: Graph, *, weight_bits: int = 8, calibration=None) -> FixedPointBranches:
    """Quantize the lowered branches ``template`` and ``search`` (SpikeTrack's, T = 1) with
    :class:`~spikedeploy.passes.quantize.QuantizeFixedPoint`. ``calibration``: ``(templates,
    searches)`` inputs, default :func:`calibration_crops` of the graphs' crop size. The template
    graph is calibrated on the templates; the search graph on the searches with the memory of the
    first calibration template (float)."""
    from spikedeploy.passes.quantize import quantize_graph
    from spikedeploy.reference import run

    if calibration is None:
        spec = template.inputs[0]
        calibration = calibration_crops(int(spec.shape[-1]), int(spec.steps or 1))
    templates, searches = calibration
    tq = quantize_graph(template, templates, weight_bits=weight_bits)
    first = run(template, templates[:, :1], dtype=torch.float64)
    memory = _memory_dict([first.outputs[o] for o in template.outputs])
    sq = quantize_graph(set_memory(search, memory), searches, weight_bits=weight_bits)
    return FixedPointBranches(template=tq, search=sq, weight_bits=int(weight_bits))


def set_fixed_memory(graph: Graph, memories) -> Tuple[Graph, int]:
    """:func:`set_memory` for a fixed-point search ``graph``: each MemoryRead gets the integer
    mantissas of its new (real-valued) memory at the node's static exponent
    (:func:`~spikedeploy.passes.quantize.quantize_memory`). Returns the graph and the number of
    memory cells clipped to the weight width (saturation, counted, never wrapped)."""
    from spikedeploy.passes.quantize import quantize_memory

    mapping = memory_read_map(graph)
    mems = [_as_read_memory(m, k) for k, m in enumerate(_memory_list(memories))]
    fixed = {}
    clipped = 0
    for name, k in mapping.items():
        if tuple(mems[k].shape) != tuple(graph.node(name).op.memory.shape):
            raise MemoryMismatchError(f"memory {k} has shape {list(mems[k].shape)} but node {name!r} reads "
                                      f"{list(graph.node(name).op.memory.shape)}")
        q, c = quantize_memory(graph, name, mems[k])
        fixed[name] = O.as_param(q)
        clipped += c
    nodes = [dataclasses.replace(n, op=dataclasses.replace(n.op, memory=fixed[n.name])) if n.name in fixed else n
             for n in graph.nodes]
    return graph.replace_nodes(nodes), clipped


def _check_precision(who: str, precision: str, weight_bits: int) -> None:
    if precision not in PRECISIONS:
        raise ConfigError(f"{who}: unknown precision {precision!r}; expected one of {PRECISIONS}")
    from spikedeploy.passes.quantize import check_weight_bits

    check_weight_bits(weight_bits, f"{who}: weight_bits")


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------


def _decoded(precision: str, graph: Graph, outputs) -> List[torch.Tensor]:
    """A branch's outputs in graph order; fixed point: decoded from integers (exact)."""
    if precision == "fixed":
        from spikedeploy.passes.quantize import decode_outputs

        outputs = decode_outputs(graph, outputs)
    return [outputs[o] for o in graph.outputs]


def _head(values: Sequence[torch.Tensor]):
    from spikedeploy.models.spiketrack import HeadOutputs

    if len(values) != 3:
        raise TrackerError(f"the search graph has {len(values)} outputs; expected 3 (score, size, offset)")
    return HeadOutputs(*values)


def _memory_dict(values: Sequence[torch.Tensor]) -> Dict[str, torch.Tensor]:
    from spikedeploy.models.spiketrack import MEMORY_KEYS

    if len(values) != len(MEMORY_KEYS):
        raise TrackerError(f"the template graph has {len(values)} outputs; expected {len(MEMORY_KEYS)} memories")
    return dict(zip(MEMORY_KEYS, values))


class _CapturedNetwork(TrackerNetwork):
    """What the graph-based backends share: the captured branches (``graphs``, captured from
    ``model`` unless given), crop size and template count, the memory the search graph is bound to
    (``_bound``), and per-call wall times (``timings["template"]`` / ``["search"]`` /
    ``["rebuild"]``)."""

    def _init_capture(self, model, graphs: Optional[SpikeTrackGraphs], who: str) -> SpikeTrackGraphs:
        if graphs is None:
            if model is None:
                raise ConfigError(f"{who}: pass a SpikeTrack model (or graphs=)")
            graphs = capture_spiketrack(model)
        self.graphs = graphs
        self.size = graphs.size
        self.templates = graphs.templates
        self._bound = None  # the memory object the search graph / session / bundle was built for
        self.timings: Dict[str, List[float]] = {"template": [], "search": [], "rebuild": []}
        return graphs

    def _record(self, what: str, t0: float) -> None:
        self.timings[what].append(time.perf_counter() - t0)

    def _init_precision(self, precision: str, weight_bits: int, calibration, fixed) -> None:
        """``precision="fixed"``: replace the lowered branches (``template_graph``, the search
        base) by their quantization (``fixed``, or :func:`quantize_branches` of them);
        ``self.fixed`` holds it (None in float), ``memory_clipped`` counts clipped memory cells
        over every bind."""
        self.precision, self.weight_bits = precision, int(weight_bits)
        self.memory_clipped = 0
        if precision == "fixed":
            if fixed is None:
                fixed = quantize_branches(self.template_graph, self._search_base, weight_bits=weight_bits,
                                          calibration=calibration)
            self.template_graph, self._search_base = fixed.template, fixed.search
            self.weight_bits = fixed.weight_bits
        self.fixed = fixed

    def _bind_memory(self, memory) -> Graph:
        """The search base with ``memory`` written into its MemoryReads (fixed point: as integer
        mantissas, clipped cells counted)."""
        if self.precision == "fixed":
            graph, clipped = set_fixed_memory(self._search_base, memory)
            self.memory_clipped += clipped
            return graph
        return set_memory(self._search_base, memory)


# ---------------------------------------------------------------------------------------------
# reference interpreter backend
# ---------------------------------------------------------------------------------------------


class ReferenceNetwork(_CapturedNetwork):
    """:class:`~spikedeploy.tracking.tracker.TrackerNetwork` run by the reference interpreter
    (:func:`spikedeploy.reference.run`).

    ``mode``: ``"integer"`` (the trained integer network), ``"binary"`` (unit spikes, the graphs
    lowered once with ``ExpandSpikes("binary")``) or ``"graded"`` (one graded event per neuron).
    ``dtype``: the interpreter's float type (float64 default: spike-mode sums are then exact up
    to ~1e-16, see :mod:`spikedeploy.reference`).

    The branches are captured once (:func:`capture_spiketrack`; pass ``graphs=`` to reuse a
    capture, e.g. for several modes: :meth:`with_mode`). ``template()`` runs the template graph
    and returns the memory dict; ``search()`` runs the search graph whose MemoryRead weights were
    rewritten with that memory (:func:`set_memory`, redone only when the memory object changes).
    ``last_run`` keeps the latest search :class:`~spikedeploy.reference.RunResult` (per-neuron
    spike counts).

    ``precision="fixed"``: the lowered branches quantized to Loihi 2 formats
    (:func:`quantize_branches` with ``weight_bits`` and ``calibration``, or the given ``fixed``
    branches) and run in integer arithmetic; outputs are decoded to real values, each new memory
    is written as integer mantissas (:func:`set_fixed_memory`, clipped cells in
    ``memory_clipped``)."""

    def __init__(self, model=None, *, mode: str = "binary", dtype: torch.dtype = torch.float64,
                 graphs: Optional[SpikeTrackGraphs] = None, precision: str = "float", weight_bits: int = 8,
                 calibration=None, fixed: Optional[FixedPointBranches] = None):
        from spikedeploy.passes import ExpandSpikes
        from spikedeploy.reference import MODES

        if mode not in MODES:
            raise ConfigError(f"ReferenceNetwork: unknown mode {mode!r}; expected one of {MODES}")
        _check_precision("ReferenceNetwork", precision, weight_bits)
        if precision == "fixed" and (mode == "integer" or dtype != torch.float64):
            raise ConfigError("ReferenceNetwork: fixed point runs a lowered graph (mode 'binary' or 'graded') "
                              "in integer arithmetic (dtype float64)")
        if dtype not in (torch.float32, torch.float64):
            raise ConfigError(f"ReferenceNetwork: dtype must be torch.float32 or torch.float64, got {dtype!r}")
        graphs = self._init_capture(model, graphs, "ReferenceNetwork")
        self.mode = mode
        self.dtype = dtype
        if mode == "integer":
            self.template_graph, self._search_base = graphs.template, graphs.search
        else:
            lower = ExpandSpikes(mode)
            self.template_graph, self._search_base = lower.apply(graphs.template), lower.apply(graphs.search)
        memory_read_map(self._search_base)  # fail now if the search graph is not SpikeTrack's
        self._init_precision(precision, weight_bits, calibration, fixed)
        self.search_graph: Optional[Graph] = None  #: the search graph with the current memory
        self.last_run = None

    def with_mode(self, mode: str, dtype: Optional[torch.dtype] = None) -> "ReferenceNetwork":
        """The same captured graphs run in another ``mode`` (no re-capture; float precision)."""
        return ReferenceNetwork(mode=mode, dtype=self.dtype if dtype is None else dtype, graphs=self.graphs)

    def _outputs(self, graph: Graph, outputs) -> List[torch.Tensor]:
        return _decoded(self.precision, graph, outputs)

    def template(self, templates: torch.Tensor) -> Dict[str, torch.Tensor]:
        from spikedeploy.reference import run

        t0 = time.perf_counter()
        res = run(self.template_graph, templates, dtype=self.dtype, mode=self.mode)
        memory = _memory_dict(self._outputs(self.template_graph, res.outputs))
        self._record("template", t0)
        return memory

    def bind(self, memory) -> Graph:
        """The search graph for ``memory`` (built with :func:`set_memory`, in fixed point
        :func:`set_fixed_memory`, unless it is the memory of the previous call)."""
        if self.search_graph is None or memory is not self._bound:
            t0 = time.perf_counter()
            self.search_graph = self._bind_memory(memory)
            self._bound = memory
            self._record("rebuild", t0)
        return self.search_graph

    def search(self, search: torch.Tensor, memory):
        from spikedeploy.reference import run

        graph = self.bind(memory)
        t0 = time.perf_counter()
        res = run(graph, search, dtype=self.dtype, mode=self.mode)
        self.last_run = res
        out = _head(self._outputs(graph, res.outputs))
        self._record("search", t0)
        return out


# ---------------------------------------------------------------------------------------------
# ONNX backend
# ---------------------------------------------------------------------------------------------


class OnnxNetwork(_CapturedNetwork):
    """:class:`~spikedeploy.tracking.tracker.TrackerNetwork` run by onnxruntime (the ONNX target:
    ``spikedeploy.exporters.onnx`` / ``spikedeploy.runtimes.onnx``).

    The integer template and search graphs (:func:`capture_spiketrack`) are exported once with
    ``precision`` (``"float64"`` default: the same integer network as the reference in integer
    mode, up to the float64 rounding of a different operation order). The models are built in
    memory (``exporters.onnx.build_model``, the same translation and checks as ``export`` without
    the file); one onnxruntime session per model is kept (``runtimes.onnx.session``: CPU, 2
    intra-op threads, basic optimizations), and only the graph outputs are fetched.

    Template updates: the memory is a weight (initializer) of the exported search model, so when
    ``search`` receives a new memory the search graph is rewritten (:func:`set_memory`),
    re-exported and a new session is created. For S256-T1 that takes well under a second
    (``timings["rebuild"]``) and happens only after a template update (T > 1 variants, every 25th
    confident frame) — never per frame at T = 1."""

    def __init__(self, model=None, *, precision: str = "float64", graphs: Optional[SpikeTrackGraphs] = None):
        from spikedeploy.exporters.onnx import PRECISIONS

        if precision not in PRECISIONS:
            raise ConfigError(f"OnnxNetwork: unknown precision {precision!r}; expected one of {PRECISIONS}")
        graphs = self._init_capture(model, graphs, "OnnxNetwork")
        self.precision = precision
        memory_read_map(graphs.search)
        self.template_artifact = self._export(graphs.template)
        self._template_session = self._session(self.template_artifact)
        self.search_artifact = None
        self._search_session = None

    def _export(self, graph: Graph):
        from spikedeploy.exporters.onnx import OnnxArtifact, build_model, read_metadata

        model = build_model(graph, timesteps=1, precision=self.precision, encoding="integer")
        return OnnxArtifact(model=model, metadata=read_metadata(model))

    @staticmethod
    def _session(artifact):
        from spikedeploy.runtimes.onnx import session

        return session(artifact)

    def _run(self, sess, artifact, x: torch.Tensor) -> List[torch.Tensor]:
        spec = artifact.metadata["inputs"][0]
        dtype = np.float64 if artifact.precision == "float64" else np.float32
        feeds = {spec["onnx"]: np.ascontiguousarray(x.detach().cpu().numpy(), dtype=dtype)}
        outs = artifact.outputs
        names = [outs[o] for o in artifact.metadata["graph_outputs"]]
        return [torch.from_numpy(r) for r in sess.run(names, feeds)]

    def template(self, templates: torch.Tensor) -> Dict[str, torch.Tensor]:
        t0 = time.perf_counter()
        memory = _memory_dict(self._run(self._template_session, self.template_artifact, templates))
        self._record("template", t0)
        return memory

    def bind(self, memory) -> None:
        """Export the search graph with ``memory`` and open its session (unless it is the memory
        of the previous call)."""
        if self._search_session is None or memory is not self._bound:
            t0 = time.perf_counter()
            self.search_artifact = self._export(set_memory(self.graphs.search, memory))
            self._search_session = self._session(self.search_artifact)
            self._bound = memory
            self._record("rebuild", t0)

    def search(self, search: torch.Tensor, memory):
        self.bind(memory)
        t0 = time.perf_counter()
        out = _head(self._run(self._search_session, self.search_artifact, search))
        self._record("search", t0)
        return out


# ---------------------------------------------------------------------------------------------
# Lava backend
# ---------------------------------------------------------------------------------------------


class LavaNetwork(_CapturedNetwork):
    """:class:`~spikedeploy.tracking.tracker.TrackerNetwork` run in Lava's CPU simulator (the Lava target:
    ``spikedeploy.exporters.lava`` compiles, ``spikedeploy.runtimes.lava`` runs, ``floating_pt``).

    Both branches are captured once (:func:`capture_spiketrack`, or ``graphs=``) and lowered once
    to ``encoding`` spikes (``"graded"``: one event per neuron and macro-step, the default and the
    fast one; ``"binary"``: q unit spikes in D sub-steps). The template graph is compiled into a
    Lava bundle at construction; the search graph is compiled when ``search`` first sees a memory.
    When the memory object changes (a new template), nothing is compiled again: :func:`set_memory`
    rewrites the 12 MemoryRead weights of the graph and
    :func:`spikedeploy.exporters.lava.with_memory` swaps the same arrays of the bundle
    (``timings["rebuild"]``; with ``bundle_dir`` the new bundle is compiled and written, as it
    was). With a partitioned placement (``"auto"`` or N) each branch runs in a
    :class:`~spikedeploy.runtimes.lava_live.LiveRuntime`: compiled and started at its first call,
    then one run of the bundle's steps per call with the new input (and the new memory), every
    frame computed from fresh neuron state, exactly as a fresh runtime would; :meth:`close` (the
    tracker's driver calls it after the last frame) stops them. A per-layer placement runs each
    call as one Lava run (processes built, run, stopped).

    T = 1 and T = 3 variants: the T = 3 search bundle maps the time axis (the query repeated over
    the templates, per-template layers, time-varying memory reads, the gate MLP, a host softmax
    process and the template gate; see :mod:`spikedeploy.exporters.lava`).

    Because the network is the same lowered graph and Lava's processes reproduce the reference's
    arithmetic, a :class:`ReferenceNetwork` with ``mode=encoding`` (float64) gives the same spike
    counts in every layer and the same head outputs up to float64 summation order (~1e-15), so the
    tracker's boxes are identical.

    Arguments: ``model`` (a :class:`~spikedeploy.models.spiketrack.SpikeTrack`) or ``graphs``;
    ``encoding`` (``"graded"`` or ``"binary"``); ``unroll_limit`` (convolutions above this many
    synapses run as kernels) and ``fuse`` (synapses and delay lines fused into their consumers, the
    default), both passed to :func:`~spikedeploy.exporters.lava.compile_graph`;
    ``bundle_dir`` (optional: the template bundle and every search bundle are also written there
    with :func:`~spikedeploy.exporters.lava.export`, as ``template.lava`` and ``search-<n>.lava``);
    ``partitions`` (``"auto"``, the default, ``"per-layer"`` or N: the Lava processes each branch
    runs in, :mod:`spikedeploy.exporters.lava_placement`; recorded in the bundles, same spikes);
    ``precision`` (``"float"``, or ``"fixed"``: both branches in Loihi 2 formats, run with
    ``fixed_pt``; ``weight_bits``, ``calibration`` and ``fixed`` as in :class:`ReferenceNetwork`,
    whose fixed-point run it equals exactly).

    Attributes after a call: ``last_spikes`` (``Dict[str, torch.Tensor]``: neuron node name of the
    lowered search graph -> spike counts q ``[1, 1, *s]`` of the last ``search``; compare with
    ``ReferenceNetwork(mode=encoding).last_run.neuron_q(name)``), ``last_template_spikes`` (the
    same for the last ``template``), ``last_run`` / ``last_template_run`` (the runtime's
    :class:`~spikedeploy.targets.TargetRun`, ``info`` holds process counts, Lava steps and phase
    times), ``search_bundle`` / ``template_bundle`` (:class:`~spikedeploy.exporters.lava.LavaBundle`),
    ``timings`` (wall seconds per call: ``"template"``, ``"search"``, ``"rebuild"``)."""

    def __init__(self, model=None, *, encoding: str = "graded", graphs: Optional[SpikeTrackGraphs] = None,
                 unroll_limit: Optional[int] = None, fuse: bool = True, bundle_dir=None, partitions="auto",
                 precision: str = "float", weight_bits: int = 8, calibration=None,
                 fixed: Optional[FixedPointBranches] = None):
        from spikedeploy.exporters import lava as lava_export
        from spikedeploy.exporters.lava_placement import parse_partitions
        from spikedeploy.passes import ExpandSpikes

        if encoding not in lava_export.ENCODINGS:
            raise ConfigError(f"LavaNetwork: unknown encoding {encoding!r}; expected one of {lava_export.ENCODINGS}")
        self.partitions = parse_partitions(partitions)
        graphs = self._init_capture(model, graphs, "LavaNetwork")
        self.encoding = encoding
        self.unroll_limit = unroll_limit
        self.fuse = bool(fuse)
        self.bundle_dir = None if bundle_dir is None else Path(bundle_dir)
        _check_precision("LavaNetwork", precision, weight_bits)
        lower = ExpandSpikes(encoding)
        self.template_graph, self._search_base = lower.apply(graphs.template), lower.apply(graphs.search)
        memory_read_map(self._search_base)  # fail now if the search graph is not SpikeTrack's
        self._init_precision(precision, weight_bits, calibration, fixed)
        self.template_bundle = self._compile(self.template_graph, "template")
        self.search_graph: Optional[Graph] = None  #: the lowered search graph with the current memory
        self.search_bundle = None
        self._rebuilds = 0
        self._live: Dict[str, Any] = {}  # branch -> LiveRuntime (partitioned placements)
        self.last_run = None
        self.last_template_run = None
        self.last_spikes: Dict[str, torch.Tensor] = {}
        self.last_template_spikes: Dict[str, torch.Tensor] = {}

    def _compile(self, graph: Graph, label: str):
        from spikedeploy.exporters import lava as lava_export

        kwargs = {"unroll_limit": self.unroll_limit, "fuse": self.fuse, "partitions": self.partitions}
        if self.bundle_dir is not None:
            path = lava_export.export(graph, self.bundle_dir / f"{label}.lava", encoding=self.encoding,
                                      overwrite=True, **kwargs)
            return lava_export.load(path)
        desc, arrays = lava_export.compile_graph(graph, self.encoding, **kwargs)
        return lava_export.LavaBundle(path=None, description=desc, arrays=arrays)

    def _run(self, bundle, x: torch.Tensor, branch: str):
        from spikedeploy.exporters.lava_placement import placement_of
        from spikedeploy.runtimes import lava as lava_run
        from spikedeploy.runtimes.lava_live import LiveRuntime

        x = x.detach().cpu().to(torch.float64)
        live = self._live.get(branch)
        if live is not None and live.bundle.description is not bundle.description:
            live.close()  # a bundle compiled again (bundle_dir): start a runtime for it
            live = None
        if live is None:
            if placement_of(bundle.description, self.partitions).groups is None:
                return lava_run.run(bundle, x, partitions=self.partitions)
            live = self._live[branch] = LiveRuntime(bundle, partitions=self.partitions)
        if live.bundle is not bundle:  # the same compiled bundle with other memories (with_memory)
            live.use_bundle(bundle)
        return live.run(x)

    def close(self) -> None:
        """Stop the branches' live Lava runtimes (idempotent; a later call starts them again)."""
        live, self._live = self._live, {}
        for rt in live.values():
            rt.close()

    def template(self, templates: torch.Tensor) -> Dict[str, torch.Tensor]:
        t0 = time.perf_counter()
        res = self._run(self.template_bundle, templates, "template")
        self.last_template_run = res
        self.last_template_spikes = dict(res.spike_counts)
        memory = _memory_dict(_decoded(self.precision, self.template_graph, res.outputs))
        self._record("template", t0)
        return memory

    def bind(self, memory) -> Graph:
        """Compile the search bundle for ``memory`` (unless it is the memory of the previous
        call) and return the lowered search graph it was compiled from."""
        if self.search_bundle is None or memory is not self._bound:
            from spikedeploy.exporters.lava import with_memory

            t0 = time.perf_counter()
            self.search_graph = self._bind_memory(memory)
            if self.search_bundle is None or self.bundle_dir is not None:
                self.search_bundle = self._compile(self.search_graph, f"search-{self._rebuilds}")
            else:
                reads = memory_read_map(self.search_graph)
                self.search_bundle = with_memory(self.search_bundle, {
                    n.name: np.asarray(n.op.memory, dtype=np.float64) for n in self.search_graph.nodes
                    if n.name in reads})
            self._rebuilds += 1
            self._bound = memory
            self._record("rebuild", t0)
        return self.search_graph

    def search(self, search: torch.Tensor, memory):
        graph = self.bind(memory)
        t0 = time.perf_counter()
        res = self._run(self.search_bundle, search, "search")
        self.last_run = res
        self.last_spikes = dict(res.spike_counts)
        out = _head(_decoded(self.precision, graph, res.outputs))
        self._record("search", t0)
        return out
