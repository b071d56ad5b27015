"""NIR exporter: an IR graph as a NIR file (``nir.write``), and back (``nir.read`` + :func:`to_ir`).

Layout of the file
==================

* Every file passes ``nir.read`` with its default type checking (:func:`to_bytes` reads it back
  before anything is written) and survives a ``nir.write``/``nir.read`` round trip unchanged.
* One NIR node per IR node, **named like the IR node** (a ``/``, which HDF5 cannot store in a
  name, is written as ``%2F``; ``%`` as ``%25``). One ``nir.Input`` per graph input, named
  ``input`` (``input_1``, ...) in the ``portable`` profile, like the IR input in ``literal``; one
  ``nir.Output`` per graph output (named ``output``, ``output_1``, ...; its metadata
  ``spikedeploy.value`` names the IR value it exposes). An IR node whose name a graph input took
  gets ``_`` appended; the graph record's ``keys`` maps every IR name to its NIR node.
* **Profiles** (:data:`PROFILES`, ``spikedeploy export --nir-profile``) change only the standard
  part other consumers read; the spikedeploy records are the same, so every profile loads back
  to the identical IR graph. ``portable`` (default, the most widely readable form): canonical
  input name, AvgPool2d as a depthwise Conv2d with weights 1/(k_h k_w), Flatten dims counted from
  the end. ``literal``: IR input names, ``nir.AvgPool2d``, Flatten dims from the first axis.
* Grouped convolutions (and BatchNorm's per-channel scale) are written with a dense block-diagonal
  weight and ``groups = 1``: NIR 1.0.8 types a Conv input as ``[weight.shape[1], ...]``, ignoring
  ``groups``, so ``nir.read`` refuses a grouped one; the IR weight is kept in the metadata. A
  dense weight over :data:`MAX_DENSE_GROUPED` values makes the op an extension node instead.
* Edges follow the IR data flow. NIR sums all edges that enter a node; the IR ``Add`` uses exactly
  that (see below). The ordered IR inputs of every node are also kept in its metadata.
* Every NIR node carries ``metadata["spikedeploy"]``: a JSON record of the IR op (kind, ordered
  inputs, source, every scalar/tuple field; float64 values are written with ``repr`` precision, so
  they round-trip bit for bit) and, where an array is not one of the NIR node's own fields,
  ``metadata["spikedeploy_arrays"]`` (float64 arrays). The graph's metadata holds the node order,
  inputs, outputs, the IR graph's own metadata, the encoding and the time-step convention.
  :func:`to_ir` rebuilds the exact IR graph from these records: same ops, same float64
  parameters, same node names, same order. The standard NIR fields (weights, strides, ...) are
  what other NIR consumers read; for standard nodes they hold the same float64 arrays.

Time-step convention
====================

One NIR time step is one IR **macro-step** t (the model's time axis). The NIR continuous-time
neuron parameters are written for a step of ``DT = 1e-4`` s, the convention snntorch uses when it
imports and exports NIR (forward Euler: ``v_t = v_{t-1} + DT/tau * (v_leak - v_{t-1} + r * I_t)``),
so ``tau = DT / (1 - beta)`` and ``r = 1 / (1 - beta)`` give ``v_t = beta * v_{t-1} + I_t``.
Recurrent edges (the reset feedback in the neuron composites) deliver the previous step's value, as
every NIR simulator that supports recurrence does.

In integer graphs (``encoding="integer"``) a neuron's NIR output at step t is ``q_t / norm``. In
lowered graphs it is the spike count ``q_t`` of that macro-step: with ``encoding="graded"`` one
event carrying q, with ``"binary"`` q unit spikes in the first q of D sub-steps (metadata
``window``). The sub-steps are *not* separate NIR time steps: the IR's synapses integrate all D
sub-steps of a macro-step before the next neuron fires (design notes §4), which a plain NIR time
step cannot express; a consumer that wants unit spikes expands each count into its thermometer code
inside the macro-step (``sum_k [q > k] = q``, so every synapse sees the same total).

Op mapping
==========

======================  ==========================================================================
IR op                   NIR
======================  ==========================================================================
Conv2d / Conv1d         ``nir.Conv2d`` / ``nir.Conv1d`` (a missing bias is written as zeros)
Linear                  ``nir.Affine`` (``nir.Linear`` without bias) on 1-D per-step values
AvgPool2d               ``portable``: ``nir.Conv2d`` with weights 1/(k_h k_w) per channel (dense,
                        zero padding counted, as PyTorch's default); ``literal``: ``nir.AvgPool2d``
Scale                   ``nir.Scale`` (factor broadcast to the value's shape)
Add                     ``nir.Scale(1)`` with two incoming edges: NIR sums the edges into a node
Reshape (axis merge)    ``nir.Flatten(start_dim, end_dim)`` in NIR's *unbatched* per-step axes
                        (``portable``: negative, counted from the end)
BatchNorm               ``nir.Conv2d``/``nir.Conv1d`` 1x1 depthwise (``a·x + b`` per channel);
                        1-D values: ``nir.Affine`` with a diagonal weight
BinaryLIF, beta = 0     ``nir.LIF`` (tau = DT, r = 1, v_leak = 0, v_reset = 0): stateless, so
                        NIR's hard reset equals the IR's subtractive reset
BinaryLIF, beta != 0    composite sub-graph (NIR has no subtractive reset): ``membrane``
                        (``nir.LI``, or ``nir.I`` for beta = 1) -> ``spike``
                        (``nir.Threshold(θ)``) -> output, and the recurrent edge
                        ``spike -> reset`` (``nir.Scale(-beta·θ)``) ``-> membrane``:
                        ``v_t = beta·v_{t-1} - beta·θ·S_{t-1} + x_t = H_t``
IntegerLIF (constant    composite sub-graph: ``membrane`` (LI/I with leak λ; stateless: LI with
leak or stateless)      tau = DT, r = 1), D thresholds ``level_k`` (``nir.Threshold(k - 0.5)``)
                        whose edges sum in ``count`` (``nir.Scale(1)``, = q), ``emit``
                        (``nir.Scale(1/norm)``, integer graphs only), and the recurrent reset
                        ``count -> reset`` (``nir.Scale(-λ/reset_norm)``) ``-> membrane``.
                        Exact except when the membrane lies exactly on a rounding boundary
                        k + 0.5 (NIR thresholds are strict ``v > θ``; the IR rounds half to
                        even / half up): metadata ``rounding`` is authoritative.
MemoryWrite             extension node (SpikeTrack template memory: per-head ``kᵀ·v`` of two
                        activations, a spike x spike product; summary metadata ``num_heads``,
                        ``scale``, ``memory_shape``); incoming edges k, v in metadata order
MemoryRead              extension node (per-head ``q @ memory`` on a ``[C, N]`` value, then
                        ``· scale``: NIR's Linear/Affine act on 1-D values and NIR has no head
                        split); the memory ``[T_mem, H, C/H, Cv/H]`` is a float64 array in
                        ``spikedeploy_arrays``, so it round-trips bit for bit
Upsample                extension node (NIR 1.0 has no interpolation node; summary metadata
                        ``mode``, ``align_corners``, ``size``); weight-free, the IR rule is
                        PyTorch's ``F.interpolate``
======================  ==========================================================================

**Extension nodes** (no NIR equivalent): ``SpikeLinearAttention`` (spike x spike product),
``MemoryWrite``, ``MemoryRead``, ``Upsample`` (SpikeTrack), ``SpikeHammingAttention`` /
``SpikeDotAttention`` (SpikeVideoFormer; summary ``score``, ``tokens``, ``num_heads``, ``scale``,
``mixes_steps``: joint/temporal tokens make step t depend on every step), ``DynamicIntegerLIF`` (D chosen per input), ``IntegerLIF`` with a per-step leak (NI-LIF),
``MeanReduce``, ``AddConstant``, ``Permute``, ``Concat``, non-flattening ``Reshape`` and
``Linear`` on multi-dimensional values. Each **cuts** the standard graph: its result is a
``nir.Input`` named like the IR node (declaring the op's output shape) whose metadata carries the
whole op (``spikedeploy.extension = <kind>``), and each distinct input ends in its own
``nir.Output`` port (``<name>.in0``, ``<name>.in1``, ...; the record's ``ports``; the metadata
keeps the ordered inputs). NIR's types stay consistent, so the file passes ``nir.read``, but no
NIR consumer can compute the op: it would have to be handed the op's value as a graph input
(nirtorch refuses graphs with several inputs) instead of silently computing something else. Pass ``extensions=False`` to
:func:`export` to get :class:`~spikedeploy.errors.UnsupportedOpError` instead (a file that every
NIR consumer can load, or nothing). **Time-axis ops** (SpikeTrack T > 1: ``RepeatTime``,
``SelectStep``, ``StackSteps`` and the template gate ``GateLinear``/``GateSoftmax``/
``TemplateGate``) always raise :class:`~spikedeploy.errors.UnsupportedOpError`: one NIR time step is
one IR macro-step of the whole graph, so a value with another number of macro-steps has no NIR
meaning. :func:`load` reads with
``nir.read(path, type_check=False)`` so that a file of an older layout (format ``/1``, whose
extension nodes were empty graphs) still loads.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from spikedeploy.errors import ConfigError, SpikedeployError
from spikedeploy.fsutil import atomic_write_bytes, check_output_file
from spikedeploy.ir.serialize import meta_from_json
from spikedeploy.ir import ops as O
from spikedeploy.ir.graph import Graph, Node, TensorSpec, validate
from spikedeploy.targets import unsupported

ENCODINGS = ("integer", "binary", "graded")
FORMAT = "spikedeploy-nir/2"
#: formats :func:`load` reads (/1: before profiles, canonical names and typed extension nodes)
FORMATS = ("spikedeploy-nir/1", FORMAT)
#: seconds per NIR time step (= one IR macro-step); snntorch's NIR convention
DT = 1e-4
META = "spikedeploy"
META_ARRAYS = "spikedeploy_arrays"
TIME_STEP = (
    "one NIR time step (dt = 1e-4 s, forward Euler) = one IR macro-step; neuron outputs are q/norm "
    "(integer graphs) or the macro-step spike count q (lowered graphs; binary: q unit spikes in the "
    "first q of `window` sub-steps, all integrated by the next synapse before any neuron fires)"
)


def _nir():
    try:
        import nir
    except ImportError as e:  # pragma: no cover - environment problem
        raise SpikedeployError(f"the NIR target needs the 'nir' package: pip install nir ({e})") from None
    return nir


# ---------------------------------------------------------------------------------------------
# names and JSON
# ---------------------------------------------------------------------------------------------


def nir_name(name: str) -> str:
    """The NIR node name of an IR value (HDF5 group names cannot contain '/')."""
    return name.replace("%", "%25").replace("/", "%2F")


def _json_default(v):
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, np.floating):
        return float(v)
    if isinstance(v, np.bool_):
        return bool(v)
    raise TypeError(f"not JSON-serializable: {v!r}")


def _dumps(obj) -> str:
    return json.dumps(obj, default=_json_default, sort_keys=True)


def _tuplify(v):
    if isinstance(v, list):
        return tuple(_tuplify(x) for x in v)
    return v


# ---------------------------------------------------------------------------------------------
# rules: one IR node -> one NIR node (primitive, composite sub-graph or extension)
# ---------------------------------------------------------------------------------------------


@dataclass
class _Ctx:
    graph: Graph
    shapes: Dict[str, Tuple[int, ...]]
    encoding: str
    extensions: bool
    profile: "Profile" = None

    def in_shape(self, node: Node, i: int = 0) -> Tuple[int, ...]:
        return self.shapes[node.inputs[i]]

    def out_shape(self, node: Node) -> Tuple[int, ...]:
        return self.shapes[node.name]


@dataclass
class _Lowered:
    """A rule's result: the NIR node and which op arrays it stores as its own fields
    (op field -> NIR attribute); every other array goes into the metadata."""

    node: object
    claimed: Dict[str, str] = dataclasses.field(default_factory=dict)
    extension: bool = False
    summary: Dict[str, object] = dataclasses.field(default_factory=dict)


def _full(shape, value) -> np.ndarray:
    return np.full(tuple(int(s) for s in shape), float(value), dtype=np.float64)


#: the largest dense weight (elements) a grouped convolution is expanded to (see _dense)
MAX_DENSE_GROUPED = 4_000_000


def _dense(weight: np.ndarray, groups: int) -> np.ndarray:
    """The groups=1 weight ``[C_out, C_in, *k]`` of a grouped convolution (block diagonal).

    NIR 1.0.8 types a Conv1d/Conv2d input as ``[weight.shape[1], *input_shape]``, ignoring
    ``groups``, so a grouped convolution read back by ``nir.read`` fails its own type check; the
    dense form is the same convolution (the added weights are zeros) and every consumer maps it."""
    w = np.asarray(weight, dtype=np.float64)
    c_out, c_in_g = w.shape[:2]
    out_g = c_out // groups
    dense = np.zeros((c_out, c_in_g * groups) + w.shape[2:], dtype=np.float64)
    for g in range(groups):
        dense[g * out_g:(g + 1) * out_g, g * c_in_g:(g + 1) * c_in_g] = w[g * out_g:(g + 1) * out_g]
    return dense


def _conv_weight(node: Node, ctx: _Ctx, weight, groups: int):
    """(NIR weight, claimed arrays, extension or None) for a convolution's weight."""
    if groups == 1:
        return np.asarray(weight), {"weight": "weight", "bias": "bias"}, None
    size = int(np.prod(weight.shape)) * groups
    if size > MAX_DENSE_GROUPED:
        return None, None, _extension(
            node, ctx, f"a grouped convolution (groups={groups}) has no NIR form that nir.read accepts "
                       f"(NIR types its input by weight.shape[1]) short of a dense weight of {size} values, "
                       f"more than {MAX_DENSE_GROUPED}")
    return _dense(weight, groups), {"bias": "bias"}, None


def _conv2d(node: Node, ctx: _Ctx) -> _Lowered:
    nir, op = _nir(), node.op
    s = ctx.in_shape(node)
    bias = op.bias if op.bias is not None else np.zeros(op.weight.shape[0])
    w, claimed, ext = _conv_weight(node, ctx, op.weight, int(op.groups))
    if ext is not None:
        return ext
    n = nir.Conv2d(
        input_shape=(int(s[1]), int(s[2])), weight=w, stride=tuple(op.stride),
        padding=tuple(op.padding), dilation=tuple(op.dilation), groups=1,
        bias=np.asarray(bias, dtype=np.float64),
    )
    return _Lowered(n, claimed, summary={"groups": int(op.groups)} if op.groups != 1 else {})


def _conv1d(node: Node, ctx: _Ctx) -> _Lowered:
    nir, op = _nir(), node.op
    s = ctx.in_shape(node)
    bias = op.bias if op.bias is not None else np.zeros(op.weight.shape[0])
    w, claimed, ext = _conv_weight(node, ctx, op.weight, int(op.groups))
    if ext is not None:
        return ext
    n = nir.Conv1d(
        input_shape=int(s[1]), weight=w, stride=int(op.stride),
        padding=int(op.padding), dilation=int(op.dilation), groups=1,
        bias=np.asarray(bias, dtype=np.float64),
    )
    return _Lowered(n, claimed, summary={"groups": int(op.groups)} if op.groups != 1 else {})


def _linear(node: Node, ctx: _Ctx) -> _Lowered:
    nir, op = _nir(), node.op
    if len(ctx.in_shape(node)) != 1:
        return _extension(node, ctx, "NIR's Affine/Linear act on 1-D values; this Linear acts on the "
                                     f"last axis of a {list(ctx.in_shape(node))} value")
    if op.bias is None:
        return _Lowered(nir.Linear(weight=np.asarray(op.weight)), {"weight": "weight"})
    return _Lowered(nir.Affine(weight=np.asarray(op.weight), bias=np.asarray(op.bias)),
                    {"weight": "weight", "bias": "bias"})


def _avgpool(node: Node, ctx: _Ctx) -> _Lowered:
    nir, op = _nir(), node.op
    if not ctx.profile.avgpool_as_conv:
        return _Lowered(nir.AvgPool2d(kernel_size=np.array(op.kernel), stride=np.array(op.stride),
                                      padding=np.array(op.padding)))
    # the mean over a k_h x k_w window with zero padding counted is a depthwise convolution with
    # every weight 1/(k_h k_w) and no bias: a node every peer maps (several skip or lack AvgPool2d)
    s = ctx.in_shape(node)
    c, (kh, kw) = int(s[0]), (int(op.kernel[0]), int(op.kernel[1]))
    if c * c * kh * kw > MAX_DENSE_GROUPED:  # dense (NIR's types ignore groups, see _dense): too big
        return _Lowered(nir.AvgPool2d(kernel_size=np.array(op.kernel), stride=np.array(op.stride),
                                      padding=np.array(op.padding)))
    n = nir.Conv2d(input_shape=(int(s[1]), int(s[2])), weight=_dense(_full((c, 1, kh, kw), 1.0 / (kh * kw)), c),
                   stride=tuple(int(v) for v in op.stride), padding=tuple(int(v) for v in op.padding),
                   dilation=(1, 1), groups=1, bias=np.zeros(c, dtype=np.float64))
    return _Lowered(n, summary={"pooling": "AvgPool2d as a depthwise Conv2d (weights 1/(kh*kw))"})


def _scale(node: Node, ctx: _Ctx) -> _Lowered:
    return _Lowered(_nir().Scale(scale=_full(ctx.out_shape(node), node.op.factor / node.op.divisor)))


def _add(node: Node, ctx: _Ctx) -> _Lowered:
    # NIR sums every edge that enters a node: Scale(1) with two incoming edges is a + b. The same
    # value added to itself is one edge (NIR has no duplicate edges) into Scale(2).
    k = 2.0 if node.inputs[0] == node.inputs[1] else 1.0
    return _Lowered(_nir().Scale(scale=_full(ctx.out_shape(node), k)))


def _flatten_axes(s: Sequence[int], t: Sequence[int]) -> Optional[Tuple[int, int]]:
    """(start, end) if reshaping s to t merges the contiguous axes start..end, else None."""
    s, t = tuple(s), tuple(t)
    for a in range(len(s)):
        for b in range(a + 1, len(s)):
            if s[:a] + (math.prod(s[a:b + 1]),) + s[b + 1:] == t:
                return a, b
    return None


def _reshape(node: Node, ctx: _Ctx) -> _Lowered:
    s, t = ctx.in_shape(node), ctx.out_shape(node)
    axes = _flatten_axes(s, t)
    if axes is None:
        return _extension(node, ctx, f"NIR has no reshape/unflatten node ({list(s)} -> {list(t)})")
    start, end = axes
    if ctx.profile.negative_flatten:  # counted from the end: the same axes with or without a batch axis
        start, end = start - len(s), end - len(s)
    return _Lowered(_nir().Flatten(input_type={"input": np.array(s)}, start_dim=start, end_dim=end))


def _batchnorm(node: Node, ctx: _Ctx) -> _Lowered:
    nir, op = _nir(), node.op
    a, b = op.scale_shift()
    s = ctx.in_shape(node)
    c = int(s[0])
    # a 1x1 convolution with a diagonal weight (dense: NIR's types ignore groups, see _dense)
    if len(s) == 3:
        n = nir.Conv2d(input_shape=(int(s[1]), int(s[2])), weight=np.diag(a).reshape(c, c, 1, 1), stride=1,
                       padding=0, dilation=1, groups=1, bias=b)
    elif len(s) == 2:
        n = nir.Conv1d(input_shape=int(s[1]), weight=np.diag(a).reshape(c, c, 1), stride=1, padding=0,
                       dilation=1, groups=1, bias=b)
    elif len(s) == 1:
        n = nir.Affine(weight=np.diag(a), bias=b)
    else:
        return _extension(node, ctx, f"BatchNorm on a {len(s)}-D value")
    return _Lowered(n)


def _membrane(shape, leak: float):
    """``v_t = leak * v_{t-1} + I_t`` as a NIR node (forward Euler with step DT)."""
    nir = _nir()
    if leak == 1.0:
        return nir.I(r=_full(shape, 1.0 / DT))
    return nir.LI(tau=_full(shape, DT / (1.0 - leak)), r=_full(shape, 1.0 / (1.0 - leak)),
                  v_leak=_full(shape, 0.0))


def _binary_lif(node: Node, ctx: _Ctx) -> _Lowered:
    nir, op = _nir(), node.op
    shape = ctx.out_shape(node)
    beta, theta = float(op.beta), float(op.threshold)
    summary = {"beta": beta, "threshold": theta, "reset": "subtract", "label": op.label}
    if beta == 0.0:
        # stateless: NIR's hard reset (v_reset = 0) and the IR's subtractive reset coincide
        n = nir.LIF(tau=_full(shape, DT), r=_full(shape, 1.0), v_leak=_full(shape, 0.0),
                    v_threshold=_full(shape, theta), v_reset=_full(shape, 0.0))
        return _Lowered(n, summary=summary)
    if not 0.0 < beta <= 1.0:
        return _extension(node, ctx, f"leak beta = {beta} outside (0, 1] has no NIR time constant")
    nodes = {
        "input": nir.Input(input_type=np.array(shape)),
        "membrane": _membrane(shape, beta),
        "spike": nir.Threshold(threshold=_full(shape, theta)),
        "reset": nir.Scale(scale=_full(shape, -beta * theta)),
        "output": nir.Output(output_type=np.array(shape)),
    }
    edges = [("input", "membrane"), ("membrane", "spike"), ("spike", "output"),
             ("spike", "reset"), ("reset", "membrane")]
    return _Lowered(nir.NIRGraph(nodes=nodes, edges=edges, metadata={"composite": "soft-reset LIF"}),
                    summary=summary)


def _constant_leak(leak) -> Tuple[bool, Optional[float]]:
    if leak is None:
        return True, None
    if isinstance(leak, tuple):
        if len(set(float(x) for x in leak)) <= 1:
            return True, (float(leak[0]) if leak else None)
        return False, None
    return True, float(leak)


def _integer_lif(node: Node, ctx: _Ctx) -> _Lowered:
    nir, op = _nir(), node.op
    shape = ctx.out_shape(node)
    ok, leak = _constant_leak(op.leak)
    if not ok:
        return _extension(node, ctx, "a per-step leak (one value per time step) has no NIR equivalent")
    if leak is not None and not 0.0 <= leak <= 1.0:
        return _extension(node, ctx, f"leak {leak} outside [0, 1] has no NIR time constant")
    d = int(op.d)
    nodes = {"input": nir.Input(input_type=np.array(shape)),
             "membrane": _membrane(shape, 0.0 if leak is None else leak)}
    edges = [("input", "membrane")]
    for k in range(1, d + 1):
        nodes[f"level_{k}"] = nir.Threshold(threshold=_full(shape, k - 0.5))
        edges += [("membrane", f"level_{k}"), (f"level_{k}", "count")]
    nodes["count"] = nir.Scale(scale=_full(shape, 1.0))
    last = "count"
    if op.encoding is None:
        nodes["emit"] = nir.Scale(scale=_full(shape, 1.0 / float(op.norm)))
        edges.append(("count", "emit"))
        last = "emit"
    if leak:  # None or 0.0: stateless, no reset feedback
        nodes["reset"] = nir.Scale(scale=_full(shape, -leak / float(op.reset_norm)))
        edges += [("count", "reset"), ("reset", "membrane")]
    nodes["output"] = nir.Output(output_type=np.array(shape))
    edges.append((last, "output"))
    summary = {"d": d, "norm": float(op.norm), "leak": "none" if op.leak is None else leak,
               "reset_norm": float(op.reset_norm), "rounding": op.rounding, "label": op.label,
               "reset": "subtract q/reset_norm"}
    g = nir.NIRGraph(nodes=nodes, edges=edges,
                     metadata={"composite": "integer LIF (multi-threshold, subtractive reset)"})
    return _Lowered(g, summary=summary)


def _extension(node: Node, ctx: _Ctx, reason: str) -> _Lowered:
    if not ctx.extensions:
        raise unsupported("nir", node, reason + " (export with extensions=True to keep it as a "
                                                "spikedeploy extension node)")
    # the op's result enters the standard part of the graph as a NIR Input (its inputs leave it
    # through Output "ports", added by build_nir_graph): NIR's types stay consistent, and no NIR
    # consumer can compute the op (it would have to be given the value)
    n = _nir().Input(input_type=np.array(ctx.out_shape(node)))
    return _Lowered(n, extension=True, summary={"reason": reason})


def _extension_rule(reason: str) -> Callable[[Node, _Ctx], _Lowered]:
    def rule(node: Node, ctx: _Ctx) -> _Lowered:
        return _extension(node, ctx, reason)

    return rule


def _dynamic_lif(node: Node, ctx: _Ctx) -> _Lowered:
    lowered = _extension(node, ctx, "the firing limit D is chosen per input (DI-LIF); NIR neurons "
                                    "have fixed parameters")
    op = node.op
    lowered.summary.update(d_init=int(op.d_init), d_max=int(op.d), norm=float(op.norm),
                           leak="none" if op.leak is None else float(op.leak), rounding=op.rounding,
                           label=op.label)
    return lowered


def _memory_write(node: Node, ctx: _Ctx) -> _Lowered:
    lowered = _extension(node, ctx, "a memory write (per-head k^T v, a spike x spike product of two "
                                    "activations) is not a synapse with fixed weights; NIR has no such node")
    op = node.op
    lowered.summary.update(num_heads=int(op.num_heads), scale=float(op.scale),
                           memory_shape=list(ctx.out_shape(node)))
    return lowered


def _memory_read(node: Node, ctx: _Ctx) -> _Lowered:
    # a per-head block-diagonal matrix acting on the token axis of a [C, N] value: NIR's
    # Linear/Affine act on 1-D values only, and NIR has no transpose/head-split node
    lowered = _extension(node, ctx, "a memory read (per-head q @ memory on a [C, N] value, the memory "
                                    "replaced whenever the templates change) has no NIR node")
    op = node.op
    lowered.summary.update(num_heads=int(op.num_heads), scale=float(op.scale),
                           memory_shape=list(np.shape(op.memory)))
    return lowered


def _upsample(node: Node, ctx: _Ctx) -> _Lowered:
    lowered = _extension(node, ctx, "NIR has no upsampling/interpolation node")
    op = node.op
    lowered.summary.update(mode=op.mode, align_corners=bool(op.align_corners),
                           size=[int(v) for v in op.size])
    return lowered


def _space_time_attention(node: Node, ctx: _Ctx) -> _Lowered:
    """SpikeVideoFormer's SDHA / dot-product attention over space-time token groups: an extension
    node (a spike x spike product, and with joint/temporal tokens NIR step t would need the keys
    and values of later steps: no NIR node, no causal NIR graph)."""
    op = node.op
    lowered = _extension(node, ctx, (
        f"{op.kind} is a spike x spike product over {op.tokens} token groups (NIR has no attention node"
        + ("; its output at step t depends on the keys/values of every step, which a NIR graph run step by step "
           "cannot see" if op.mixes_steps else "") + ")"))
    lowered.summary.update(score=op.score, tokens=op.tokens, num_heads=int(op.num_heads), scale=float(op.scale),
                           mixes_steps=bool(op.mixes_steps))
    return lowered


def _time_axis_rule(reason: str) -> Callable[[Node, _Ctx], _Lowered]:
    """Ops that change the number of macro-steps (SpikeTrack T > 1): never exported, not even as
    extension nodes. One NIR time step is one IR macro-step of the whole graph, so a value with
    another number of steps than the graph input has no NIR meaning."""

    def rule(node: Node, ctx: _Ctx) -> _Lowered:
        raise unsupported("nir", node, reason + "; NIR has one time axis for the whole graph (one NIR time "
                          "step = one IR macro-step), so ops that change the number of macro-steps cannot be "
                          "expressed, not even as extension nodes (export the T = 1 variant, or use the onnx target)")

    return rule


RULES: Dict[type, Callable[[Node, _Ctx], _Lowered]] = {
    O.Conv2d: _conv2d,
    O.Conv1d: _conv1d,
    O.Linear: _linear,
    O.AvgPool2d: _avgpool,
    O.Scale: _scale,
    O.Add: _add,
    O.Reshape: _reshape,
    O.BatchNorm: _batchnorm,
    O.BinaryLIF: _binary_lif,
    O.IntegerLIF: _integer_lif,
    O.DynamicIntegerLIF: _dynamic_lif,
    O.SpikeLinearAttention: _extension_rule(
        "spike x spike products (q·kᵀ·v) are not synaptic ops with fixed weights; NIR has no "
        "attention node"),
    O.MeanReduce: _extension_rule("NIR has no mean/reduce node"),
    O.AddConstant: _extension_rule("NIR has no constant/bias-only node"),
    O.Permute: _extension_rule("NIR has no axis-permutation node"),
    O.Concat: _extension_rule("NIR has no concatenation node"),
    O.MemoryWrite: _memory_write,
    O.MemoryRead: _memory_read,
    O.Upsample: _upsample,
    O.SpikeHammingAttention: _space_time_attention,
    O.SpikeDotAttention: _space_time_attention,
    O.RepeatTime: _time_axis_rule("RepeatTime repeats a one-step value over several macro-steps"),
    O.SelectStep: _time_axis_rule("SelectStep takes one macro-step of a multi-step value"),
    O.StackSteps: _time_axis_rule("StackSteps stacks one-step values into several macro-steps"),
    O.TemplateGate: _time_axis_rule("TemplateGate fuses the T template steps into one macro-step"),
    O.GateSoftmax: _time_axis_rule("GateSoftmax is a host softmax across macro-steps (the template axis)"),
    O.GateLinear: _time_axis_rule("GateLinear belongs to the template gate, which mixes macro-steps"),
}


# ---------------------------------------------------------------------------------------------
# profiles: how the same IR graph is shaped as NIR (the spikedeploy records are the same in all)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Profile:
    """A NIR layout choice. Every profile writes the same spikedeploy records, so :func:`load`
    rebuilds the identical IR graph from a file of any profile; what changes is only the standard
    NIR part that other consumers read."""

    name: str
    doc: str
    #: graph inputs named ``input`` (``input_1``, ...) instead of their IR names
    canonical_names: bool
    #: AvgPool2d written as a depthwise nir.Conv2d with weights 1/(k_h k_w) instead of nir.AvgPool2d
    avgpool_as_conv: bool
    #: nir.Flatten dims counted from the end (-3..-1) instead of from the first per-step axis
    negative_flatten: bool


PROFILES: Dict[str, Profile] = {
    "portable": Profile(
        "portable",
        "the most widely readable form (default): the graph input is the NIR node `input` (spyx "
        "builds an empty model for any other name), average pooling is a depthwise Conv2d with "
        "weights 1/(k_h*k_w) (every peer maps Conv2d; norse and sinabs have no AvgPool2d and skip "
        "or drop it), Flatten dims are negative (-3..-1: snntorch and norse pass NIR's unbatched "
        "dims to torch.nn.Flatten unchanged, which with positive dims folds the batch axis)",
        canonical_names=True, avgpool_as_conv=True, negative_flatten=True),
    "literal": Profile(
        "literal",
        "one NIR node of the matching kind per IR op, named like the IR (graph inputs keep their IR "
        "names, average pooling is nir.AvgPool2d, Flatten dims count from the first per-step axis "
        "as NIR defines them): for tools that map nodes by kind and name (per-layer comparisons)",
        canonical_names=False, avgpool_as_conv=False, negative_flatten=False),
}
DEFAULT_PROFILE = "portable"


def get_profile(name: str) -> Profile:
    if name not in PROFILES:
        raise ConfigError(f"unknown NIR profile {name!r}; expected one of {', '.join(PROFILES)}")
    return PROFILES[name]


def _node_keys(graph: Graph, profile: Profile) -> Dict[str, str]:
    """The NIR node key of every graph input and IR node. IR names are kept (escaped for HDF5)
    except the graph inputs under a profile with canonical names; an IR node whose name a graph
    input or another node already took gets ``_`` appended until it is unique."""
    natural = {nir_name(n.name) for n in graph.nodes}
    keys: Dict[str, str] = {}
    used = set()
    for i, spec in enumerate(graph.inputs):
        k = ("input" if i == 0 else f"input_{i}") if profile.canonical_names else nir_name(spec.name)
        keys[spec.name] = k
        used.add(k)
    for n in graph.nodes:
        k = nir_name(n.name)
        if k in used:
            while k in used or k in natural:
                k += "_"
        keys[n.name] = k
        used.add(k)
    return keys


def _fresh(base: str, used) -> str:
    name, k = base, 0
    while name in used:
        k += 1
        name = f"{base}_{k}"
    return name


# ---------------------------------------------------------------------------------------------
# export
# ---------------------------------------------------------------------------------------------


def _graph_encoding(graph: Graph) -> str:
    from spikedeploy.reference import graph_mode

    return graph_mode(graph)


def _op_record(node: Node, lowered: _Lowered) -> Tuple[dict, Dict[str, np.ndarray]]:
    params, arrays, where = {}, {}, {}
    for f in dataclasses.fields(node.op):
        v = getattr(node.op, f.name)
        if isinstance(v, np.ndarray):
            attr = lowered.claimed.get(f.name)
            where[f.name] = f"node:{attr}" if attr else "meta"
            if not attr:
                arrays[f.name] = np.asarray(v, dtype=np.float64)
        else:
            params[f.name] = v
    rec = {"op": node.op.kind, "inputs": list(node.inputs), "source": node.source,
           "params": params, "arrays": where}
    if lowered.extension:
        rec["extension"] = True
    return rec, arrays


def build_nir_graph(graph: Graph, *, encoding: Optional[str] = None, extensions: bool = True,
                    profile: str = DEFAULT_PROFILE):
    """The ``nir.NIRGraph`` for ``graph`` (see the module docstring for the mapping and
    :data:`PROFILES` for ``profile``). The graph passes NIR's own type checking."""
    nir = _nir()
    prof = get_profile(profile)
    shapes = validate(graph)
    mode = _graph_encoding(graph)
    if encoding is None:
        encoding = mode
    if encoding not in ENCODINGS:
        raise ConfigError(f"unknown NIR encoding {encoding!r}; expected one of {ENCODINGS}")
    if mode != encoding:
        raise ConfigError(
            f"graph is a {mode!r} graph but encoding={encoding!r} was asked for; lower it first with "
            f"spikedeploy.passes.ExpandSpikes({encoding!r})" if mode == "integer" else
            f"graph is a {mode!r} graph but encoding={encoding!r} was asked for"
        )
    ctx = _Ctx(graph=graph, shapes=shapes, encoding=encoding, extensions=extensions, profile=prof)
    keys = _node_keys(graph, prof)
    used = set(keys.values())
    nodes: Dict[str, object] = {}
    edges: List[Tuple[str, str]] = []
    extension_nodes: List[str] = []
    for spec in graph.inputs:
        nodes[keys[spec.name]] = nir.Input(
            input_type=np.array(spec.shape),
            metadata={META: _dumps({"input": spec.name, "shape": list(spec.shape)})},
        )
    ports: List[Tuple[str, str, object]] = []  # (source key, port key, port node), added last
    for node in graph.nodes:
        rule = RULES.get(type(node.op))
        if rule is None:
            raise unsupported("nir", node, "no NIR rule for this op (spikedeploy.exporters.nir.RULES)")
        lowered = rule(node, ctx)
        rec, arrays = _op_record(node, lowered)
        key = keys[node.name]
        srcs = list(dict.fromkeys(node.inputs))  # NIR has no duplicate edges
        if lowered.extension:
            rec["ports"] = []
            for j, src in enumerate(srcs):
                pk = _fresh(f"{key}.in{j}", used)
                used.add(pk)
                rec["ports"].append(pk)
                ports.append((keys[src], pk, nir.Output(
                    output_type=np.array(shapes[src]),
                    metadata={META: _dumps({"port": node.name, "index": j, "value": src}),
                              "extension_input": f"input {j} of extension node {node.name}"})))
        meta = {META: _dumps(rec), "op": node.op.kind}
        if arrays:
            meta[META_ARRAYS] = arrays
        for k, v in lowered.summary.items():
            meta[k] = v
        if node.op.is_neuron:
            meta.update(encoding=node.op.encoding or "integer", window=int(node.op.window),
                        time_step=TIME_STEP)
        if lowered.extension:
            meta["extension"] = node.op.kind
            extension_nodes.append(node.name)
        lowered.node.metadata = {**(lowered.node.metadata or {}), **meta}
        nodes[key] = lowered.node
        if not lowered.extension:
            edges += [(keys[src], key) for src in srcs]
    for src, pk, port in ports:
        nodes[pk] = port
        edges.append((src, pk))
    out_names = []
    for i, o in enumerate(graph.outputs):
        name = _fresh("output" if i == 0 else f"output_{i}", used)
        used.add(name)
        out_names.append(name)
        nodes[name] = nir.Output(output_type=np.array(shapes[o]), metadata={META: _dumps({"value": o})})
        edges.append((keys[o], name))
    record = {
        "format": FORMAT, "encoding": encoding, "dt": DT, "time_step": TIME_STEP, "profile": prof.name,
        "inputs": [[s.name, list(s.shape)] for s in graph.inputs],
        "nodes": [n.name for n in graph.nodes], "outputs": list(graph.outputs),
        "output_nodes": out_names, "graph_meta": [[k, v] for k, v in graph.meta],
        "extension_nodes": extension_nodes, "keys": keys,
    }
    metadata = {META: _dumps(record), "format": FORMAT, "encoding": encoding, "dt": DT,
                "time_step": TIME_STEP, "producer": "spikedeploy", "profile": prof.name}
    if extension_nodes:
        metadata["extension_nodes"] = ", ".join(extension_nodes)
    try:
        return nir.NIRGraph(nodes=nodes, edges=edges, metadata=metadata, type_check=True)
    except (ValueError, AssertionError, TypeError, NotImplementedError) as e:  # NIR's type checker disagrees
        raise SpikedeployError(f"NIR rejected the exported graph: {e}") from None


def to_bytes(graph: Graph, *, encoding: str, extensions: bool = True, profile: str = DEFAULT_PROFILE) -> bytes:
    """The NIR file of ``graph`` as bytes, after checking that ``nir.read`` with its default type
    checking accepts them (a file another tool cannot open is never written)."""
    nir = _nir()
    g = build_nir_graph(graph, encoding=encoding, extensions=extensions, profile=profile)
    buf = io.BytesIO()
    nir.write(buf, g)
    data = buf.getvalue()
    try:
        nir.read(io.BytesIO(data))
    except Exception as e:  # pragma: no cover - build_nir_graph type-checked the same graph
        raise SpikedeployError(f"nir.read rejects the exported graph ({type(e).__name__}: {e})") from None
    return data


def export(graph: Graph, path, *, encoding: str, extensions: bool = True, overwrite: bool = False,
           profile: str = DEFAULT_PROFILE) -> Path:
    """Write ``graph`` as a NIR file at ``path`` (atomically: temporary file, fsync, rename).

    ``encoding``: "integer" (un-lowered graph), "binary" or "graded" (lowered by ExpandSpikes);
    it must match the graph. ``extensions=False`` raises UnsupportedOpError for every op that has
    no standard NIR expression instead of writing it as an extension node. ``profile``: the NIR
    layout (:data:`PROFILES`; every profile loads back to the same IR graph). ``overwrite``:
    replace an existing file (else an existing path is an error, checked atomically). The file
    passes ``nir.read`` with its default checks (verified before writing).
    """
    path = Path(path)
    get_profile(profile)
    check_output_file(path, "NIR file", overwrite=overwrite)
    data = to_bytes(graph, encoding=encoding, extensions=extensions, profile=profile)
    return atomic_write_bytes(path, data, replace=overwrite)


# ---------------------------------------------------------------------------------------------
# load
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NirArtifact:
    """A loaded NIR file: the NIR graph as read, and the exact IR graph rebuilt from it."""

    path: Optional[Path]
    nir_graph: object
    graph: Graph
    encoding: str


#: what to do about a damaged or foreign NIR file
_REEXPORT = "export it again with spikedeploy export --target nir"
#: NIR node attributes a record may name as the storage of an IR array ("node:<attr>")
_NODE_ARRAY = re.compile(r"^[a-z][a-z0-9_]{0,31}$")


def _record(meta, what: str) -> dict:
    from spikedeploy.errors import ArtifactError

    raw = meta.get(META) if isinstance(meta, dict) else None
    if raw is None:
        raise ArtifactError(f"{what} has no '{META}' metadata (not written by spikedeploy: it runs the NIR files "
                            "it exports; export the model with spikedeploy export --target nir)")
    if isinstance(raw, np.ndarray) and raw.ndim == 0:
        raw = raw.item()
    try:
        if isinstance(raw, bytes):
            raw = raw.decode("utf-8")
        rec = json.loads(raw)
    except (TypeError, ValueError) as e:  # UnicodeDecodeError is a ValueError
        raise ArtifactError(f"{what}: unreadable '{META}' metadata ({type(e).__name__}: {e})") from None
    if not isinstance(rec, dict):
        raise ArtifactError(f"{what}: '{META}' metadata is a {type(rec).__name__}, expected an object")
    return rec


def to_ir(nir_graph) -> Graph:
    """Rebuild the exact IR graph from a NIR graph written by :func:`export` (same ops, float64
    parameters, node names and order). Every record is validated (types, known ops, arrays that
    are finite real numbers within :mod:`spikedeploy.validate`'s limits, NIR edges that agree with
    the records) and so is the rebuilt graph (:func:`spikedeploy.validate.check_graph`: field
    ranges, sizes, order, cycles, shapes). Raises :class:`~spikedeploy.errors.ArtifactError`
    (also for graphs without spikedeploy metadata)."""
    from spikedeploy.errors import ArtifactError
    from spikedeploy.reference import graph_mode
    from spikedeploy.validate import MAX_GRAPH_NODES, FieldChecker, check_array, check_graph, describe

    g = _record(nir_graph.metadata, "NIR graph")
    if g.get("format") not in FORMATS:
        raise ArtifactError(f"unsupported spikedeploy NIR format {describe(g.get('format'))} (expected {FORMAT})")
    c = FieldChecker("NIR graph metadata", _REEXPORT)
    encoding = c.str(c.key(g, "encoding", ""), "encoding", ENCODINGS)
    op_types = {t.__name__: t for t in RULES}
    inputs = []
    for i, item in enumerate(c.list(c.key(g, "inputs", ""), "inputs", min_len=1, max_len=64)):
        pair = c.list(item, f"inputs[{i}]", min_len=2, max_len=2)
        inputs.append(TensorSpec(c.str(pair[0], f"inputs[{i}] name"), c.shape(pair[1], f"inputs[{i}] shape")))
    names = c.list(c.key(g, "nodes", ""), "nodes", max_len=MAX_GRAPH_NODES)
    outputs = c.list(c.key(g, "outputs", ""), "outputs", min_len=1, max_len=MAX_GRAPH_NODES)
    for i, o in enumerate(outputs):
        c.str(o, f"outputs[{i}]")
    nir_nodes = nir_graph.nodes if isinstance(nir_graph.nodes, dict) else {}
    keys = c.dict(g.get("keys", {}), "keys")
    for k, v in keys.items():
        c.str(v, f"keys[{k!r}]")
    if len(set(keys.values())) != len(keys):
        c.fail("keys", "two IR names share one NIR node")
    key_of = lambda name: keys.get(name, nir_name(name))  # noqa: E731
    nodes, port_keys = [], {}
    for i, name in enumerate(names):
        key = key_of(c.str(name, f"nodes[{i}]"))
        if key not in nir_nodes:
            c.fail(f"nodes[{i}]", f"NIR graph lacks node {key!r} listed in its metadata")
        nn_ = nir_nodes[key]
        rec = _record(getattr(nn_, "metadata", None), f"NIR node {key!r}")
        n = FieldChecker(f"NIR node {key!r}", _REEXPORT)
        cls = op_types.get(n.str(rec.get("op"), "op"))
        if cls is None:
            n.fail("op", f"unknown IR op {describe(rec.get('op'))}; expected one of {', '.join(sorted(op_types))}")
        params = n.dict(n.key(rec, "params", ""), "params")
        node_inputs = tuple(n.str(v, f"inputs[{j}]") for j, v in
                            enumerate(n.list(n.key(rec, "inputs", ""), "inputs", max_len=MAX_GRAPH_NODES)))
        if "ports" in rec:
            port_keys[name] = tuple(n.str(v, f"ports[{j}]") for j, v in
                                    enumerate(n.list(rec["ports"], "ports", max_len=MAX_GRAPH_NODES)))
            if len(port_keys[name]) != len(dict.fromkeys(node_inputs)):
                n.fail("ports", f"{len(port_keys[name])} ports for {len(dict.fromkeys(node_inputs))} distinct inputs")
        kwargs = {k: _tuplify(v) for k, v in params.items()}
        stored = (nn_.metadata or {}).get(META_ARRAYS, {})
        if not isinstance(stored, dict):
            n.fail(META_ARRAYS, f"expected a group of arrays, got {type(stored).__name__}")
        for field_name, where in n.dict(n.key(rec, "arrays", ""), "arrays").items():
            n.str(where, f"arrays[{field_name!r}]")
            if where == "meta":
                if field_name not in stored:
                    n.fail(f"array {field_name!r}", "missing from its metadata")
                arr = stored[field_name]
            elif where.startswith("node:") and _NODE_ARRAY.match(where[5:]) and hasattr(nn_, where[5:]):
                arr = getattr(nn_, where[5:])
            else:
                n.fail(f"array {field_name!r}", f"bad array location {describe(where)}")
            try:
                arr = np.asarray(arr)
            except (TypeError, ValueError) as e:
                n.fail(f"array {field_name!r}", f"not an array ({type(e).__name__})")
            check_array(arr, f"NIR node {key!r}", f"array {field_name!r}", kinds="fiu", todo=_REEXPORT)
            kwargs[field_name] = O.as_param(np.asarray(arr, dtype=np.float64))
        try:
            op = cls(**kwargs)
        except (TypeError, ValueError) as e:
            n.fail(None, f"cannot rebuild {cls.__name__}: {e}")
        except Exception as e:  # e.g. a comparison of a field of the wrong type
            n.fail(None, f"cannot rebuild {cls.__name__}: {type(e).__name__}: {e}")
        source = rec.get("source", "")
        nodes.append(Node(name, op, node_inputs, source=source if isinstance(source, str) else ""))
    pairs = c.list(g.get("graph_meta", []), "graph_meta", max_len=10_000)
    for j, kv in enumerate(pairs):
        c.str(c.list(kv, f"graph_meta[{j}]", min_len=2, max_len=2)[0], f"graph_meta[{j}] key")
    meta = tuple(sorted(meta_from_json(pairs), key=lambda kv: kv[0]))
    graph = Graph(inputs=tuple(inputs), nodes=tuple(nodes), outputs=tuple(outputs), meta=meta)
    check_graph(graph, "NIR graph", _REEXPORT)
    mode = graph_mode(graph)
    if mode != encoding:
        c.fail("encoding", f"says {encoding!r} but the graph's neurons are {mode!r}")
    # the NIR edges other consumers follow must be the graph spikedeploy rebuilt
    out_nodes = g.get("output_nodes")
    if isinstance(out_nodes, list) and len(out_nodes) == len(outputs) and all(isinstance(v, str) for v in out_nodes):
        want = set()
        for nd in nodes:
            if nd.name in port_keys:  # extension node: its inputs end in its Output ports
                want |= set(zip((key_of(i) for i in dict.fromkeys(nd.inputs)), port_keys[nd.name]))
            else:
                want |= {(key_of(i), key_of(nd.name)) for i in nd.inputs}
        want |= {(key_of(o), on) for o, on in zip(outputs, out_nodes)}
        try:
            have = {tuple(e) for e in nir_graph.edges}
        except TypeError:
            have = set()
        if have != want:
            extra, lost = sorted(have - want, key=str), sorted(want - have, key=str)
            c.fail("edges", f"the NIR edges disagree with the node records (extra {describe(extra[:3])}, missing "
                            f"{describe(lost[:3])})")
    return graph


def load(path) -> NirArtifact:
    """Read a NIR file written by :func:`export` and rebuild its IR graph. Every problem (missing,
    empty, truncated or foreign file, a malformed record or graph) raises
    :class:`~spikedeploy.errors.ArtifactError` naming the file (exit code 2)."""
    from spikedeploy.errors import ArtifactError
    from spikedeploy.validate import check_artifact_file, detail

    nir = _nir()
    path = check_artifact_file(path, "NIR file")
    try:
        ng = nir.read(path, type_check=False)
    except Exception as e:  # h5py raises OSError/KeyError/ValueError... for damaged files
        raise ArtifactError(f"cannot read NIR file {path} (corrupt, truncated or not NIR: {detail(e)}); "
                            f"{_REEXPORT}") from None
    try:
        graph = to_ir(ng)
        encoding = _record(ng.metadata, "NIR graph")["encoding"]
    except SpikedeployError as e:
        raise ArtifactError(f"NIR file {path}: {e}") from None
    except Exception as e:  # anything the record checks did not foresee is still a bad file
        raise ArtifactError(f"NIR file {path}: cannot rebuild the IR graph ({detail(e)}); {_REEXPORT}") from None
    return NirArtifact(path=path, nir_graph=ng, graph=graph, encoding=encoding)
