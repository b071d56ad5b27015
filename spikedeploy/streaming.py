"""Frame-by-frame execution with the neuron state carried across calls (MSST at inference).

The event tracker feeds consecutive search frames as consecutive time steps with every membrane
carried from frame to frame, and the next frame's search crop depends on the previous frame's
box: the network runs **one frame per call** with its neuron state kept between calls. A stream
is that loop on one target::

    with open_stream(graph, target="reference", mode="binary") as stream:
        for frame in frames:                    # frame: [1, B, *s] (or [t, B, *s]: t steps at once)
            run = stream.step(frame)            # a TargetRun: outputs, spike counts, run.state
        stream.state                            # node -> NeuronState after the last step

Semantics (:mod:`spikedeploy.neurons`, "State carried across calls"): the state of an integer LIF
neuron after a call is its last membrane and count ``NeuronState(m, q)`` ``[B, *s]``; the next
call's first step is ``m_0 = (m - q / r) * leak + x_0``. A binary LIF carries its soft-reset
residual ``NeuronState(U)``; fixed point the same in integers; stateless neurons (leak None) carry
nothing; a DI-LIF's D comes from each step's input. A zero state is the fresh start exactly, so
:meth:`Stream.reset` (or no state) starts fresh. Invariant (tested on every target): T calls of one
step each give bit for bit the spike counts and outputs of one call on all T steps, and of the
reference.

Targets:

* ``"reference"``: :func:`spikedeploy.reference.run` with ``state=`` (``mode`` "integer",
  "binary", "graded"; a fixed-point graph runs as it is); the graph is lowered once.
* ``"onnx"``: the integer graph exported in memory with the state as explicit inputs and outputs
  (:func:`spikedeploy.exporters.onnx.build_model` ``state_io=True``, one model per number of steps
  per call, unrolled over it), run with onnxruntime; one session per model.
* ``"lava"``: a :class:`~spikedeploy.runtimes.lava_live.LiveRuntime` with ``carry_state=True``
  (``encoding`` "binary" or "graded"; a fixed-point graph runs with ``fixed_pt``): the Lava
  processes start once and each frame's neurons start from the last frame's state, no reset.
  The runtime runs one input shape ``[t, B]``: every step of a Lava stream has the first step's t.
* NIR: a NIR graph has no notion of state carried between calls (its neurons' state lives inside
  one execution); the NIR runtime re-executes the IR it rebuilds with the reference, so a stream
  over a NIR file is the reference stream of ``spikedeploy.exporters.nir.load(path).graph``
  (``open_stream(artifact.graph, "reference", ...)``). Other targets are refused by name.

Graphs that cannot stream are refused when the stream opens (:class:`~spikedeploy.errors.ConfigError`
naming the node): a neuron whose leak is a per-step tuple (NI-LIF: the leak of the next call's
first step is undefined), inputs with a fixed number of steps (time-axis ops) and ops whose output
steps depend on other steps (:class:`StepMixingError`: SpikeVideoFormer's joint / temporal /
factorized space-time attention -- frame t's output reads the keys and values of every frame). A wrong state
(an unknown node, a stateless node, a wrong shape) is an :class:`~spikedeploy.errors.InputError`
naming the node.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Dict, Optional

import torch

from spikedeploy.errors import ConfigError, SpikedeployError
from spikedeploy.ir.graph import Graph
from spikedeploy.neurons import NeuronState
from spikedeploy.targets import TargetRun

__all__ = ["STREAM_TARGETS", "Stream", "open_stream", "check_streamable", "StepMixingError"]


class StepMixingError(ConfigError):
    """A graph holds an op whose output steps depend on other steps' inputs (space-time attention
    over the frames, :attr:`spikedeploy.ir.ops.SpaceTimeAttention.mixes_steps`): it cannot stream."""

#: targets a stream runs on (NIR: see the module docstring)
STREAM_TARGETS = ("reference", "onnx", "lava")


def check_streamable(graph: Graph) -> None:
    """Refuse (ConfigError naming the node or input) a graph that cannot run one call per frame
    with its state carried (module docstring)."""
    for spec in graph.inputs:
        if spec.steps is not None:
            raise ConfigError(f"stream: graph input {spec.name!r} must have exactly T={spec.steps} steps (its time-axis "
                              "ops fix the step count), so it cannot run frame by frame")
    for n in graph.neurons():
        if isinstance(getattr(n.op, "leak", None), tuple):
            raise ConfigError(f"stream: neuron {n.name!r} ({n.op.label}) has a per-step leak, so the leak of the next "
                              "call's first step is undefined; it cannot carry state across calls")
    for n in graph.nodes:
        if getattr(n.op, "mixes_steps", False):
            raise StepMixingError(
                f"stream: node {n.name!r} ({n.op.kind}, tokens={n.op.tokens!r}) attends over the tokens of every "
                "frame, so step t's output needs the keys and values of later frames; it cannot run one frame per "
                "call (run the whole clip in one call, or use tokens='spatial' attention)")


class _ReferenceBackend:
    def __init__(self, graph: Graph, mode: Optional[str], dtype: torch.dtype):
        from spikedeploy.reference import MODES, graph_mode, is_fixed

        current = graph_mode(graph)
        self.fixed = is_fixed(graph)
        if mode is None:
            mode = current
        if mode not in MODES:
            raise ConfigError(f"stream: unknown mode {mode!r}; expected one of {MODES}")
        if current != mode:
            if current != "integer":
                raise ConfigError(f"stream: the graph is lowered to {current!r}; it cannot run as {mode!r}")
            from spikedeploy.passes.expand import ExpandSpikes

            self.graph = ExpandSpikes(mode).apply(graph)
        else:
            self.graph = graph
        self.original = graph
        self.mode, self.dtype = mode, dtype

    def step(self, x, state) -> TargetRun:
        from spikedeploy.reference import run

        t0 = time.perf_counter()
        r = run(self.graph, x, dtype=self.dtype, mode=self.mode, state=state)
        outputs = dict(zip(self.original.outputs, r.outputs.values()))  # lowering may rename outputs
        spikes = {n.name: r.records[n.name].q for n in self.graph.neurons()}
        info = {"wall_s": time.perf_counter() - t0, "executor": "spikedeploy reference", "mode": self.mode}
        if self.fixed:
            from spikedeploy.passes.quantize import decode_outputs

            return TargetRun("reference", self.mode, decode_outputs(self.original, outputs), spikes, info,
                             precision="fixed", integer_outputs=outputs, state=r.state)
        return TargetRun("reference", self.mode, outputs, spikes, info, state=r.state)

    def close(self) -> None:
        pass


class _OnnxBackend:
    def __init__(self, graph: Graph, precision: str):
        from spikedeploy.reference import graph_mode

        if graph_mode(graph) != "integer":
            raise ConfigError("stream: the ONNX target runs the integer (un-lowered) graph; open the stream on the "
                              "graph from before ExpandSpikes")
        self.graph, self.precision = graph, precision
        self._models: Dict[int, tuple] = {}  # steps per call -> (artifact, session)

    def _model(self, T: int):
        if T not in self._models:
            from spikedeploy.exporters.onnx import OnnxArtifact, build_model, read_metadata
            from spikedeploy.runtimes.onnx import session

            model = build_model(self.graph, timesteps=T, precision=self.precision, state_io=True)
            art = OnnxArtifact(model=model, metadata=read_metadata(model))
            self._models[T] = (art, session(art))
        return self._models[T]

    def step(self, x, state) -> TargetRun:
        from spikedeploy.runtimes.onnx import run

        art, sess = self._model(_steps_of(x))
        return run(art, x, state=state, sess=sess)

    def close(self) -> None:
        self._models = {}


class _LavaBackend:
    def __init__(self, graph: Graph, encoding: Optional[str], partitions, select_tag: Optional[str]):
        from spikedeploy.exporters.lava import compile_graph
        from spikedeploy.exporters.lava_bundle import LavaBundle
        from spikedeploy.reference import graph_mode
        from spikedeploy.runtimes.lava_live import LiveRuntime

        current = graph_mode(graph)
        if encoding is None:
            encoding = current if current != "integer" else "binary"
        if encoding not in ("binary", "graded"):
            raise ConfigError(f"stream: the Lava target runs spikes (encoding 'binary' or 'graded'), got {encoding!r}")
        if current not in ("integer", encoding):
            raise ConfigError(f"stream: the graph is lowered to {current!r}; it cannot run as {encoding!r}")
        desc, arrays = compile_graph(graph, encoding, partitions=partitions)
        self.bundle = LavaBundle(path=None, description=desc, arrays=arrays)
        self.runtime = LiveRuntime(self.bundle, partitions=partitions, select_tag=select_tag, carry_state=True)

    def step(self, x, state) -> TargetRun:
        return self.runtime.run(x, state=state)

    def close(self) -> None:
        self.runtime.close()


def _steps_of(x) -> int:
    v = next(iter(x.values())) if isinstance(x, dict) else x
    shape = tuple(getattr(v, "shape", ()))
    if len(shape) < 2:
        raise SpikedeployError(f"stream: a step's input must be [t, B, *s], got shape {list(shape)}")
    return int(shape[0])


class Stream:
    """A graph running frame by frame on one target with its neuron state carried (module
    docstring). Made by :func:`open_stream`; a context manager (:meth:`close` on exit)."""

    def __init__(self, graph: Graph, target: str, backend, state: Optional[Dict[str, NeuronState]] = None):
        self.graph, self.target = graph, target
        self._backend = backend
        self._state: Dict[str, NeuronState] = {}
        self._closed = False
        #: macro-steps run since the stream opened or was last reset
        self.steps = 0
        #: calls of :meth:`step` since the stream opened or was last reset
        self.calls = 0
        if state:
            self.set_state(state)

    @property
    def state(self) -> Dict[str, NeuronState]:
        """Stateful neuron node -> its :class:`~spikedeploy.neurons.NeuronState` after the last
        step (empty: the fresh start)."""
        return dict(self._state)

    def set_state(self, state: Dict[str, NeuronState]) -> None:
        """Start the next step from ``state`` (checked against the graph: an unknown or stateless
        node or a wrong shape is an InputError naming the node; a node left out starts fresh)."""
        from spikedeploy.reference import check_state

        self._check_open()
        self._state = dict(check_state(self._backend_graph(), dict(state)))

    def reset(self) -> None:
        """The next step starts fresh (zero state, exactly the fresh start)."""
        self._check_open()
        self._state, self.steps, self.calls = {}, 0, 0
        if isinstance(self._backend, _LavaBackend):
            self._backend.runtime.reset_state()

    def step(self, x) -> TargetRun:
        """Run ``x`` ``[t, B, *s]`` (a tensor, array, or dict by input name; usually t = 1: one
        frame) from the carried state; the state after it is kept for the next step and returned
        in ``TargetRun.state``."""
        self._check_open()
        run = self._backend.step(x, self._state or None)
        self._state = dict(run.state or {})
        self.steps += _steps_of(x)
        self.calls += 1
        return dataclasses.replace(run, info={**run.info, "stream_steps": self.steps, "stream_calls": self.calls})

    def close(self) -> None:
        """Release the target (idempotent); a closed stream refuses steps."""
        if not self._closed:
            self._closed = True
            self._backend.close()

    def __enter__(self) -> "Stream":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise SpikedeployError(f"stream on {self.target!r} is closed; open a new one with open_stream")

    def _backend_graph(self) -> Graph:
        return getattr(self._backend, "graph", self.graph)


def open_stream(graph: Graph, target: str = "reference", *, mode: Optional[str] = None,
                encoding: Optional[str] = None, dtype: torch.dtype = torch.float64, precision: str = "float64",
                partitions="auto", select_tag: Optional[str] = None,
                state: Optional[Dict[str, NeuronState]] = None) -> Stream:
    """A :class:`Stream` of ``graph`` (a folded IR graph, integer or lowered, or a fixed-point
    graph) on ``target`` (:data:`STREAM_TARGETS`).

    ``mode``: the reference's execution mode ("integer", "binary", "graded"; default the graph's
    own). ``encoding``: Lava's spike encoding ("binary" default, or "graded"). ``dtype``: the
    reference's dtype (float64: exact). ``precision``: the ONNX model's ("float64" exact, or
    "float32"). ``partitions``/``select_tag``: Lava's placement and tag. ``state``: the state the
    first step starts from (default: fresh)."""
    if not isinstance(graph, Graph):
        raise ConfigError(f"stream: expected an IR graph, got {type(graph).__name__} (a NIR file's graph: "
                          "spikedeploy.exporters.nir.load(path).graph)")
    check_streamable(graph)
    if target == "reference":
        backend = _ReferenceBackend(graph, mode, dtype)
    elif target == "onnx":
        backend = _OnnxBackend(graph, precision)
    elif target == "lava":
        backend = _LavaBackend(graph, encoding or mode, partitions, select_tag)
    elif target == "nir":
        raise ConfigError("stream: NIR has no state carried between calls; its runtime re-executes the IR with the "
                          "reference: open_stream(spikedeploy.exporters.nir.load(path).graph, 'reference')")
    else:
        raise ConfigError(f"stream: unknown target {target!r}; expected one of {', '.join(STREAM_TARGETS)}")
    return Stream(graph, target, backend, state)
