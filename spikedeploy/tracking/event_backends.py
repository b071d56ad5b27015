"""Graph backends of the event tracker: the event SpikeTrack's captured branches run frame by frame
on the reference, onnxruntime or Lava, behind the
:class:`~spikedeploy.tracking.event_tracker.EventTrackerNetwork` protocol.

How the branches become graphs (as :mod:`spikedeploy.tracking.backends` does for the RGB model)
    :func:`capture_event_branches` captures the template branch
    (:class:`~spikedeploy.models.spiketrack_event.EventTemplateNet`: ``[1, 1, 2n, St, St]`` -> one
    memory ``K_t^T V_t`` ``[1, 1, heads, d_h, d_h]`` per transformer block) and the search branch
    (:class:`~spikedeploy.models.spiketrack_event.EventSearchNet`: ``[T, 1, 2n, S, S]`` -> score,
    size, offset maps) once each and folds them (``default_pipeline()``). In the search graph block
    ``k``'s memory is the weight tensor of its ``MemoryRead`` node (the model's ``FrameMemoryRead``,
    ``memory [1, heads, d_h, d_h]``: every frame reads the same memory); :func:`event_memory_read_map`
    finds the node of each block from its source path (``...blocks.<k>.attn.memory_read``) and
    :func:`set_event_memory` returns the graph with those weights rewritten (``dataclasses.replace``
    on the ``depth`` ops; every other node shared, nothing re-captured), once per sequence.

Per sequence (:class:`EventGraphNetwork`)
    ``template(grid)`` runs the template graph once on the target (a one-step stream from a fresh
    state: :func:`spikedeploy.streaming.open_stream`) and returns its outputs, the memories, each
    snapped to the exact grid of spike-count products it lies on (:func:`snap_memory`: every
    target then reads bit-identical memories);
    ``start(memory)`` binds them into the search graph and opens a
    :class:`~spikedeploy.streaming.Stream` on the target; ``search(grid)`` is one step of that
    stream (one frame, every membrane carried from the previous frame: MSST); ``close()`` ends it
    (Lava: the live runtime stops). ``last_spikes`` (neuron node -> spike counts q of the last
    frame) is what the track reports digest and compare between targets.

Targets: ``reference-integer|binary|graded`` (float64), ``onnx`` (the integer graph, float64,
state as explicit inputs and outputs), ``lava-binary|graded`` (Lava's CPU simulator,
``floating_pt``, no reset between frames).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from spikedeploy.errors import ConfigError
from spikedeploy.ir import ops as O
from spikedeploy.ir.graph import Graph
from spikedeploy.tracking.event_tracker import EventTrackerNetwork
from spikedeploy.tracking.tracker import TrackerError, TrackerStateError

__all__ = ["EventGraphs", "capture_event_branches", "event_memory_read_map", "set_event_memory", "memory_grids",
           "snap_memory",
           "EventGraphNetwork", "EventNetworkFactory", "make_event_network", "GRAPH_TARGETS"]

#: ``source`` of a search-graph MemoryRead node: ``...blocks.<k>.attn.memory_read``
_MEMORY_READ_SOURCE = re.compile(r"(?:^|\.)blocks\.(\d+)\.attn\.memory_read$")
#: event target -> (stream target, mode / encoding)
GRAPH_TARGETS = {
    "reference-integer": ("reference", "integer"), "reference-binary": ("reference", "binary"),
    "reference-graded": ("reference", "graded"), "onnx": ("onnx", None),
    "lava-binary": ("lava", "binary"), "lava-graded": ("lava", "graded"),
}
#: frames in the search branch's capture example (any T >= 1 captures the same graph)
_CAPTURE_FRAMES = 2


class EventMemoryError(TrackerError):
    """A memory that does not fit the search graph's MemoryRead nodes."""


@dataclass(frozen=True)
class EventGraphs:
    """The folded integer graphs of an event SpikeTrack's branches and the crop sizes."""

    template: Graph
    search: Graph
    size: int
    template_size: int
    n_bins: int
    depth: int
    name: str


def capture_event_branches(model) -> EventGraphs:
    """Capture and fold both branches of the event SpikeTrack ``model`` (in eval mode; its weights
    as they are). The search graph's memories are those of an all-zero template: placeholders for
    :func:`set_event_memory`."""
    from spikedeploy.capture import capture
    from spikedeploy.models.spiketrack_event import EventSearchNet, EventSpikeTrack, EventTemplateNet
    from spikedeploy.passes import default_pipeline

    if not isinstance(model, EventSpikeTrack):
        raise ConfigError(f"expected an event SpikeTrack model, got {type(model).__name__}")
    c = model.config
    dtype = next(model.parameters()).dtype
    was_training = model.training
    model.eval()
    try:
        template = torch.zeros((1, 1, c.in_channels, c.template_size, c.template_size), dtype=dtype)
        with torch.no_grad():
            memory = model.template_branch(template)
        search = torch.zeros((_CAPTURE_FRAMES, 1, c.in_channels, c.resolution, c.resolution), dtype=dtype)
        gs = capture(EventSearchNet(model, memory).eval(), search, name=f"{c.name}:search")
        gt = capture(EventTemplateNet(model).eval(), template, name=f"{c.name}:template")
    finally:
        model.train(was_training)
    pipe = default_pipeline()
    graphs = EventGraphs(pipe.apply(gt), pipe.apply(gs), int(c.resolution), int(c.template_size), int(c.n_bins),
                         int(c.depth), c.name)
    event_memory_read_map(graphs.search, graphs.depth)  # the search graph reads one memory per block
    return graphs


def event_memory_read_map(graph: Graph, depth: int) -> Dict[str, int]:
    """MemoryRead node name -> the transformer block ``k`` whose memory it reads (from its source
    path); every block ``0 .. depth - 1`` exactly once."""
    mapping: Dict[str, int] = {}
    for n in graph.nodes:
        if isinstance(n.op, O.MemoryRead):
            m = _MEMORY_READ_SOURCE.search(n.source or "")
            if m is None:
                raise EventMemoryError(f"MemoryRead node {n.name!r} (source {n.source!r}) is not a transformer "
                                       "block's memory read ('...blocks.<k>.attn.memory_read')")
            mapping[n.name] = int(m.group(1))
    if sorted(mapping.values()) != list(range(depth)):
        raise EventMemoryError(f"expected one MemoryRead per transformer block 0..{depth - 1}, found blocks "
                               f"{sorted(mapping.values())}")
    return mapping


def _as_memory(m, k: int) -> np.ndarray:
    """``[1, 1, heads, d_h, d_h]`` (the model's / the template graph's) -> ``[1, heads, d_h, d_h]``."""
    a = m.detach().cpu().double().numpy() if isinstance(m, torch.Tensor) else np.asarray(m, dtype=np.float64)
    if a.ndim == 5:
        if a.shape[1] != 1:
            raise EventMemoryError(f"memory {k}: batch {a.shape[1]}; the tracker takes one memory (batch 1)")
        a = a[:, 0]
    if a.ndim != 4 or a.shape[0] != 1:
        raise EventMemoryError(f"memory {k} must be [1, 1, heads, d_h, d_h], got {list(a.shape)}")
    if not np.isfinite(a).all():
        raise EventMemoryError(f"memory {k} contains NaN or Inf")
    return O.as_param(a)


def set_event_memory(graph: Graph, memories: Sequence, depth: int) -> Graph:
    """A copy of the event search ``graph`` whose MemoryRead weights are ``memories`` (one per
    block, in block order, each ``[1, 1, heads, d_h, d_h]``), checked against the node's memory
    shape and heads; every other node is the same object."""
    mapping = event_memory_read_map(graph, depth)
    mems = list(memories)
    if len(mems) != depth:
        raise EventMemoryError(f"expected {depth} memories (one per transformer block), got {len(mems)}")
    mems = [_as_memory(m, k) for k, m in enumerate(mems)]
    nodes = []
    for n in graph.nodes:
        k = mapping.get(n.name)
        if k is None:
            nodes.append(n)
            continue
        if tuple(mems[k].shape) != tuple(n.op.memory.shape) or mems[k].shape[1] != int(n.op.num_heads):
            raise EventMemoryError(f"memory {k} has shape {list(mems[k].shape)} but node {n.name!r} reads "
                                   f"{list(n.op.memory.shape)} ({n.op.num_heads} heads)")
        nodes.append(dataclasses.replace(n, op=dataclasses.replace(n.op, memory=mems[k])))
    return graph.replace_nodes(nodes)


def _spike_unit(op) -> Optional[float]:
    """The value of one unit of a neuron's output count: 1/D_init (DI-LIF), 1/norm (I-LIF)."""
    if isinstance(op, O.DynamicIntegerLIF):
        return 1.0 / float(op.d_init)
    norm = getattr(op, "norm", None)
    return None if norm is None else 1.0 / float(norm)


def memory_grids(template: Graph) -> List[Optional[float]]:
    """Per output of the (integer) template graph, a MemoryWrite ``scale * sum_n K[n, i] V[n, j]``
    of two neuron outputs: the grid ``g = scale u_k u_v`` its values lie on exactly (``u``: the
    value of one spike unit of k's and v's neuron, :func:`_spike_unit`), or None where the output
    is not such a memory."""
    by_name = {n.name: n for n in template.nodes}
    grids: List[Optional[float]] = []
    for o in template.outputs:
        n = by_name.get(o)
        g = None
        if n is not None and isinstance(n.op, O.MemoryWrite):
            units = [_spike_unit(by_name[i].op) if i in by_name else None for i in n.inputs]
            if len(units) == 2 and None not in units:
                g = float(n.op.scale) * units[0] * units[1]
        grids.append(g)
    return grids


def snap_memory(m: torch.Tensor, grid: Optional[float]) -> torch.Tensor:
    """``round(m / grid) * grid``: the template memory K^T V is an exact sum of spike-count products,
    an integer multiple of ``grid`` (:func:`memory_grids`); each target's float64 sums land within
    ~1e-15 of it in their own order. Snapped, every target reads the bit-identical memory, so the
    search branch (whose attention sums can sit exactly on a rounding boundary with such rational
    memories) sees the same weights on every target. ``grid`` None: ``m`` unchanged. A value off its
    grid by more than 1e-6 grid units means the grid is wrong: TrackerError."""
    if grid is None:
        return m
    k = torch.round(m / grid)
    off = float((m / grid - k).abs().max()) if m.numel() else 0.0
    if off > 1e-6:
        raise TrackerError(f"template memory is {off:.3g} grid units off its exact grid {grid!r}; the template "
                           "graph's memory is not a spike-count product")
    return k * grid


class EventGraphNetwork(EventTrackerNetwork):
    """The event tracker's network on a graph target (module docstring): ``target`` one of
    :data:`GRAPH_TARGETS`; ``graphs`` from :func:`capture_event_branches` (shared between
    targets); ``partitions``: Lava's placement."""

    def __init__(self, graphs: EventGraphs, target: str, *, partitions="auto"):
        if target not in GRAPH_TARGETS:
            raise ConfigError(f"EventGraphNetwork: unknown target {target!r}; expected one of {', '.join(GRAPH_TARGETS)}")
        self.graphs, self.target = graphs, target
        self.size, self.template_size, self.n_bins = graphs.size, graphs.template_size, graphs.n_bins
        self.partitions = partitions
        self._stream = None
        self.search_graph: Optional[Graph] = None
        self.last_spikes: Dict[str, torch.Tensor] = {}
        self.last_template_spikes: Dict[str, torch.Tensor] = {}
        self.last_run = None

    def _open(self, graph: Graph):
        from spikedeploy.streaming import open_stream

        kind, mode = GRAPH_TARGETS[self.target]
        if kind == "reference":
            return open_stream(graph, "reference", mode=mode, dtype=torch.float64)
        if kind == "onnx":
            return open_stream(graph, "onnx", precision="float64")
        return open_stream(graph, "lava", encoding=mode, partitions=self.partitions)

    def template(self, grid: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        with self._open(self.graphs.template) as s:
            run = s.step(grid.detach().to(torch.float64))
        self.last_template_spikes = dict(run.spike_counts)
        return tuple(snap_memory(torch.as_tensor(run.outputs[o]).to(torch.float64), grid_)
                     for o, grid_ in zip(self.graphs.template.outputs, memory_grids(self.graphs.template)))

    def start(self, memory) -> None:
        self.close()
        self.search_graph = set_event_memory(self.graphs.search, memory, self.graphs.depth)
        self._stream = self._open(self.search_graph)

    def search(self, grid: torch.Tensor):
        if self._stream is None:
            raise TrackerStateError(f"{type(self).__name__}.search() before start(memory)")
        run = self._stream.step(grid.detach().to(torch.float64))
        self.last_run = run
        self.last_spikes = dict(run.spike_counts)
        return tuple(torch.as_tensor(run.outputs[o]) for o in self.graphs.search.outputs)

    def close(self) -> None:
        if self._stream is not None:
            stream, self._stream = self._stream, None
            stream.close()


class EventNetworkFactory:
    """``factory(model, target)``: one capture per model object, shared by its graph targets."""

    def __init__(self, *, partitions="auto"):
        self.partitions = partitions
        self._model = None
        self._graphs: Optional[EventGraphs] = None

    def __call__(self, model, target: str) -> EventGraphNetwork:
        if model is not self._model or self._graphs is None:
            self._model, self._graphs = model, capture_event_branches(model)
        return EventGraphNetwork(self._graphs, target, partitions=self.partitions)


def make_event_network(model, target: str, *, partitions="auto") -> EventGraphNetwork:
    """:class:`EventGraphNetwork` of ``target`` for ``model`` (captured now)."""
    return EventGraphNetwork(capture_event_branches(model), target, partitions=partitions)
