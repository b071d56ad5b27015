"""ONNX target: the integer (un-lowered) network as a standard ONNX model.

What is exported
    An integer IR graph (already folded/fused; neurons with ``encoding=None``) becomes one ONNX
    model (opset :data:`OPSET`) that onnxruntime runs without any custom op:

    * the input ``[T, B, *s]`` has a fixed ``T`` and a symbolic batch dimension ``"batch"``;
    * stateless ops act on the merged ``[T*B, *s]`` tensor (T and B merged by ``Reshape``);
    * stateful neurons are **unrolled over T**: the input current is split into T steps and the
      recurrence of :func:`spikedeploy.neurons.integer_lif` / ``binary_lif`` /
      ``dynamic_integer`` is written out step by step, in the same operation order as the
      reference (``m = (m_prev - q_prev / reset_norm) * leak_t + x_t``, ``q = Q(clamp(m, 0, D))``,
      emitted ``q / norm``). ``T`` is fixed at export: the keyword ``timesteps`` defaults to the
      graph's ``capture_T`` metadata. A stateless network could run any T, but the exported
      model always expects exactly that T (the runtime checks it);
    * every neuron's integer activation q ``[T, B, *s]`` is an extra graph output, named
      ``q_<sanitized node name>``; graph outputs are named ``out_<sanitized name>``. The mapping
      from IR names to ONNX names is stored in the model's ``metadata_props``
      (:data:`META_PREFIX`\\* keys, JSON values) together with the spikedeploy version, the IR graph
      outputs, T, the encoding and the precision.

Neuron state as explicit inputs and outputs (``state_io=True``)
    For frame-by-frame streaming (one call per frame, the membranes kept: MSST) every stateful
    neuron (:func:`spikedeploy.reference.stateful_neurons`: an integer LIF or DI-LIF with a leak, a
    binary LIF) gets graph inputs ``state_in_<kind>_<node>`` and outputs ``state_out_<kind>_<node>``
    of shape ``[batch, *s]`` (one step): ``m`` and ``q`` for the integer LIF family, ``u`` (the
    soft-reset residual) for the binary LIF. The first unrolled step continues the recurrence
    ``m_0 = (m_in - q_in / reset_norm) * leak + x_0`` (binary: ``H_0 = beta * u_in + x_0``) and the
    last step's values are the outputs: a zero state is the fresh start exactly, and T calls of one
    step each, the state fed back, give bit for bit what one call of T steps gives
    (:func:`spikedeploy.neurons.integer_lif`'s state semantics). The metadata key ``state`` maps each
    IR neuron name to ``{"kind": "membrane"|"residual", "inputs": {part: onnx name}, "outputs":
    {...}}``; :func:`spikedeploy.runtimes.onnx.run` feeds and returns them (``state=``). A neuron
    with a per-step leak tuple (NI-LIF) cannot carry state (ConfigError naming it).

SpikeTrack ops (integer network, same operation order as :mod:`spikedeploy.reference`)
    * ``MemoryWrite`` (k, v ``[C, N]``): heads split as ``reference.AttentionRule._heads``
      (``Transpose``/``Reshape``/``Transpose``), one ``MatMul`` ``K_h^T V_h`` per head (batched),
      ``Mul`` by ``scale`` only when it is not 1; output ``[H, C/H, Cv/H]``.
    * ``MemoryRead``: the memory is an initializer; ``MatMul(Q_h, memory)`` (``T_mem = 1``: one
      ``[H, C/H, Cv/H]`` constant broadcast over T*B; ``T_mem = T``: per-step memories), heads
      merged back, then ``Mul`` by ``scale`` (after the product, as the reference). Templates
      change the memory: re-export (the memory is a weight of the exported model).
    * ``Upsample``: nearest is two ``Gather`` nodes with PyTorch's source indices (both
      precisions; bit-identical). Bilinear: ``"float32"`` uses ``Resize`` (``linear``,
      ``half_pixel``, or ``align_corners``); ``"float64"`` uses two ``MatMul`` with precomputed
      float64 interpolation matrices (onnxruntime's CPU provider has no double ``Resize``), along
      W then H as PyTorch: equal to PyTorch's float64 result up to rounding order (~1e-16).

SpikeVideoFormer ops (``SpikeHammingAttention``, ``SpikeDotAttention``: space-time token groups)
    Integer ``MatMul`` on the spike counts per head block and token group, in the reference's
    counting form (``M = 2 K^T V - 1^T V``, ``Y = 2 Q M - 1^T M``; dot: ``Q (K^T V)``); groups by
    ``Reshape``/``Transpose`` of the merged layout (joint: ``[B, H, T*N, d]``). Exact in float64.

Time-axis ops (SpikeTrack T > 1)
    Every value keeps the merged layout ``[T_v*B, *s]`` with its own number of macro-steps T_v
    (:func:`spikedeploy.ir.graph.value_steps`; neurons are unrolled over their own T_v):
    ``RepeatTime`` is a ``Concat`` of copies, ``SelectStep`` a ``Gather`` on the ``[T, B, ...]``
    view, ``StackSteps`` a ``Concat``; ``GateLinear`` is a Linear (``MatMul`` + ``Add``); the host
    ``GateSoftmax`` is exported as ``Softmax`` over the time axis (so the model is complete; it
    is still a host step); ``TemplateGate`` is ``Mul`` + ``ReduceSum`` over the time axis.

Rounding
    ONNX ``Round`` rounds half to even, like ``torch.round``; rounding ``"half_up"`` is written
    ``Floor(clamp(m, 0, D) + 0.5)``, as the reference does.

Precision (``precision=``)
    ``"float64"`` (default). Every tensor is ``DOUBLE``, the reference's own arithmetic, so q
    matches the reference exactly (only a membrane within ~1e-15 of a rounding boundary could
    differ, because sums are accumulated in another order). onnxruntime's CPU provider has **no
    double kernel for Conv and AveragePool** (it has them for MatMul, Gemm, BatchNormalization,
    Round, Clip, Floor, Sigmoid, ReduceMean/Sum, Greater and the element-wise ops), so in this
    precision convolutions are written as standard im2col sub-graphs
    (``Pad`` → one strided ``Slice`` per kernel tap → ``Concat`` → ``MatMul`` with the reshaped
    weight, grouped convolutions as a batched ``MatMul``), average pooling as
    ``Pad``/``Slice``/``ReduceSum``/``Div`` and bilinear upsampling as two ``MatMul`` (there is no
    double ``Resize`` either). Still plain ONNX, still float64: no ``Conv``, ``AveragePool`` or
    ``Resize`` node in this precision.

    ``"float32"``: native ``Conv`` and ``AveragePool`` nodes, every tensor ``FLOAT``. Smaller and
    faster and what most ONNX consumers expect, but float32 round-off (~1e-7 relative) lets a
    membrane near a rounding boundary flip, and such a flip cascades: compare with the reference
    run in float32 and count boundary ties (see the equivalence notes).
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Type, Union

import numpy as np

from spikedeploy.errors import ConfigError, SpikedeployError
from spikedeploy.fsutil import atomic_write_bytes, check_output_file
from spikedeploy.ir import ops as O
from spikedeploy.ir.graph import Graph, Node, validate, value_steps
from spikedeploy.targets import unsupported

TARGET = "onnx"
ENCODINGS = ("integer",)
PRECISIONS = ("float64", "float32")
#: ONNX opset of exported models (ReduceMean/ReduceSum/Split forms below are written for it)
OPSET = 17
#: format tag stored in the metadata; :func:`load` refuses models without it
FORMAT = "spikedeploy-onnx/1"
META_PREFIX = "spikedeploy."
BATCH_DIM = "batch"

PathLike = Union[str, os.PathLike]


def _onnx():
    try:
        import onnx  # noqa: F401
    except ImportError as e:  # pragma: no cover - dependency missing
        raise SpikedeployError(
            f"the ONNX target needs the 'onnx' package ({e}); install it with `pip install onnx onnxruntime`"
        ) from None
    return onnx


def _version() -> str:
    from spikedeploy import __version__

    return __version__


def sanitize(name: str) -> str:
    """An ONNX/C identifier-safe version of an IR name (``attn.q_spike`` -> ``attn_q_spike``)."""
    s = re.sub(r"[^A-Za-z0-9_]", "_", name)
    return s if s and not s[0].isdigit() else "_" + s


# ---------------------------------------------------------------------------------------------
# builder
# ---------------------------------------------------------------------------------------------


class Builder:
    """Collects ONNX nodes and initializers while the graph is translated.

    Every IR value is held as an ONNX tensor in the *merged* layout ``[T*B, *s]`` (``s`` = the
    per-step shape from :func:`spikedeploy.ir.graph.validate`)."""

    def __init__(self, graph: Graph, T: int, precision: str, state_io: bool = False):
        onnx = _onnx()
        self.helper = onnx.helper
        self.numpy_helper = onnx.numpy_helper
        self.graph = graph
        #: macro-steps of every value (time-axis ops give values another T than the input's)
        self.steps = {k: int(v) for k, v in value_steps(graph, int(T)).items()}
        #: T of the value being built (the current node's; the input's before the first node)
        self.T = int(T)
        self.precision = precision
        self.np_dtype = np.float64 if precision == "float64" else np.float32
        self.elem_type = onnx.TensorProto.DOUBLE if precision == "float64" else onnx.TensorProto.FLOAT
        self.shapes = validate(graph)
        self.nodes: list = []
        self.initializers: list = []
        self.outputs: list = []  #: ValueInfoProto of graph outputs
        self.neuron_outputs: Dict[str, str] = {}  #: IR neuron name -> ONNX q output name
        self.state_io = bool(state_io)
        self.state_inputs: list = []  #: ValueInfoProto of the state inputs
        #: IR neuron name -> {"kind", "inputs": {part: name}, "outputs": {part: name}} (state_io)
        self.state_meta: Dict[str, dict] = {}
        self._used: set = set()
        self._const_cache: Dict[tuple, str] = {}
        self.current: Optional[Node] = None

    # -- names -------------------------------------------------------------------------------
    def fresh(self, hint: str) -> str:
        base = sanitize(hint)
        name, k = base, 1
        while name in self._used:
            name = f"{base}_{k}"
            k += 1
        self._used.add(name)
        return name

    def _prefix(self) -> str:
        return sanitize(self.current.name) if self.current is not None else "g"

    # -- constants ---------------------------------------------------------------------------
    def const(self, value, hint: str = "c", dtype=None) -> str:
        """An initializer holding ``value`` (model float dtype unless ``dtype``)."""
        arr = np.asarray(value, dtype=dtype or self.np_dtype)
        key = (arr.dtype.str, arr.shape, arr.tobytes()) if arr.size <= 16 else None
        if key is not None and key in self._const_cache:
            return self._const_cache[key]
        name = self.fresh(f"{self._prefix()}__{hint}" if arr.size > 16 else f"const_{hint}")
        self.initializers.append(self.numpy_helper.from_array(np.ascontiguousarray(arr), name))
        if key is not None:
            self._const_cache[key] = name
        return name

    def ints(self, values: Sequence[int], hint: str = "shape") -> str:
        return self.const(np.asarray(list(values), dtype=np.int64), hint, dtype=np.int64)

    # -- nodes -------------------------------------------------------------------------------
    def op(self, op_type: str, inputs: Sequence[str], n_out: int = 1, **attrs):
        outs = [self.fresh(f"{self._prefix()}__{op_type.lower()}") for _ in range(n_out)]
        self.nodes.append(
            self.helper.make_node(op_type, list(inputs), outs, name=self.fresh(f"{self._prefix()}/{op_type}"), **attrs)
        )
        return outs[0] if n_out == 1 else outs

    # -- layouts -----------------------------------------------------------------------------
    def to_steps(self, x: str, s: Sequence[int]) -> List[str]:
        """Merged ``[T*B, *s]`` -> T tensors ``[1, B, *s]``."""
        tb = self.op("Reshape", [x, self.ints([self.T, -1] + list(s))])
        if self.T == 1:
            return [tb]
        return list(self.op("Split", [tb], n_out=self.T, axis=0))

    def from_steps(self, steps: Sequence[str]) -> str:
        """T tensors ``[1, B, *s]`` -> ``[T, B, *s]``."""
        return steps[0] if len(steps) == 1 else self.op("Concat", list(steps), axis=0)

    def merge(self, x_tb: str, s: Sequence[int]) -> str:
        return self.op("Reshape", [x_tb, self.ints([-1] + list(s))])

    def split_tb(self, x: str, s: Sequence[int]) -> str:
        return self.op("Reshape", [x, self.ints([self.T, -1] + list(s))])

    def add_output(self, tensor: str, name: str, s: Sequence[int], steps: Optional[int] = None) -> str:
        """Expose ``tensor`` (layout ``[T, B, *s]``, T = ``steps`` or the current value's) as graph
        output ``name``."""
        self.nodes.append(self.helper.make_node("Identity", [tensor], [name], name=self.fresh(f"{name}/Identity")))
        self.outputs.append(
            self.helper.make_tensor_value_info(name, self.elem_type, [steps or self.T, BATCH_DIM] + list(s))
        )
        return name

    def state_in(self, node: Node, kind: str, parts: Sequence[str]) -> List[str]:
        """State inputs ``[batch, *s]`` of ``node`` (``parts``: "m", "q" or "u"), returned in the
        one-step layout ``[1, B, *s]``."""
        s = self.shapes[node.name]
        entry = self.state_meta.setdefault(node.name, {"kind": kind, "inputs": {}, "outputs": {}})
        out = []
        for part in parts:
            name = self.fresh(f"state_in_{part}_{node.name}")
            self.state_inputs.append(self.helper.make_tensor_value_info(name, self.elem_type, [BATCH_DIM] + list(s)))
            entry["inputs"][part] = name
            out.append(self.op("Reshape", [name, self.ints([1, -1] + list(s))]))
        return out

    def state_out(self, node: Node, part: str, one_step: str) -> None:
        """Expose the one-step tensor ``[1, B, *s]`` as the state output ``part`` of ``node``."""
        s = self.shapes[node.name]
        name = self.fresh(f"state_out_{part}_{node.name}")
        flat = self.op("Reshape", [one_step, self.ints([-1] + list(s))])
        self.nodes.append(self.helper.make_node("Identity", [flat], [name], name=self.fresh(f"{name}/Identity")))
        self.outputs.append(self.helper.make_tensor_value_info(name, self.elem_type, [BATCH_DIM] + list(s)))
        self.state_meta[node.name]["outputs"][part] = name

    def neuron_q(self, node: Node, q_tb: str) -> None:
        """Register a neuron's integer activation q (layout ``[T, B, *s]``) as a graph output."""
        name = self.fresh(f"q_{node.name}")
        self.add_output(q_tb, name, self.shapes[node.name])
        self.neuron_outputs[node.name] = name


Rule = Callable[[Builder, Node, List[str]], str]
RULES: Dict[Type[O.Op], Rule] = {}


def register_rule(op_type: Type[O.Op]):
    """Decorator: the ONNX rule for one IR op class (duplicates rejected)."""

    def deco(fn: Rule) -> Rule:
        if op_type in RULES:
            raise ValueError(f"an ONNX rule for {op_type.__name__} is already registered")
        RULES[op_type] = fn
        return fn

    return deco


# ---------------------------------------------------------------------------------------------
# synapses
# ---------------------------------------------------------------------------------------------


def _window_slices(b: Builder, x: str, spatial: Sequence[int], kernel, stride, pad, dil) -> Tuple[List[str], List[int]]:
    """Zero-pad ``x`` ``[N, C, *spatial]`` and take one strided slice per kernel tap (row-major
    over the kernel); each slice has shape ``[N, C, *out]``."""
    nd = len(spatial)
    out = [(spatial[i] + 2 * pad[i] - dil[i] * (kernel[i] - 1) - 1) // stride[i] + 1 for i in range(nd)]
    if any(pad):
        pads = [0, 0] + list(pad) + [0, 0] + list(pad)
        x = b.op("Pad", [x, b.ints(pads, "pads"), b.const(0.0, "zero")], mode="constant")
    padded = [spatial[i] + 2 * pad[i] for i in range(nd)]
    slices = []
    for taps in np.ndindex(*kernel):
        starts = [t * dil[i] for i, t in enumerate(taps)]
        ends = [starts[i] + (out[i] - 1) * stride[i] + 1 for i in range(nd)]
        if all(st == 0 for st in starts) and all(s == 1 for s in stride) and ends == padded:
            slices.append(x)
            continue
        slices.append(
            b.op(
                "Slice",
                [x, b.ints(starts, "starts"), b.ints(ends, "ends"), b.ints(range(2, 2 + nd), "axes"),
                 b.ints(stride, "steps")],
            )
        )
    return slices, out


def _conv(b: Builder, node: Node, x: str, nd: int) -> str:
    op = node.op
    s = b.shapes[node.inputs[0]]
    out_s = b.shapes[node.name]
    as_tuple = (lambda v: (int(v),)) if nd == 1 else (lambda v: tuple(int(a) for a in v))
    stride, pad, dil = as_tuple(op.stride), as_tuple(op.padding), as_tuple(op.dilation)
    w = np.asarray(op.weight)
    co, cig = w.shape[:2]
    kernel = tuple(w.shape[2:])
    g = int(op.groups)
    if b.precision == "float32":
        args = [x, b.const(w, "weight")]
        if op.bias is not None:
            args.append(b.const(op.bias, "bias"))
        return b.op("Conv", args, kernel_shape=list(kernel), strides=list(stride), pads=list(pad) * 2,
                    dilations=list(dil), group=g)
    # float64: im2col (onnxruntime's CPU provider has no double Conv kernel)
    slices, out = _window_slices(b, x, s[1:], kernel, stride, pad, dil)
    kk = math.prod(kernel)
    L = math.prod(out)
    if kk == 1:
        cols = slices[0]
    else:
        cols = b.op("Concat", [b.op("Unsqueeze", [t, b.ints([2], "axes")]) for t in slices], axis=2)
    # cols [N, C, kk, *out] -> [N, G, Cg*kk, L]; index (g, c, tap) matches weight.reshape(G, Co/G, Cg*kk)
    cols = b.op("Reshape", [cols, b.ints([-1, g, cig * kk, L])])
    wmat = b.const(w.reshape(g, co // g, cig * kk), "weight")
    y = b.op("MatMul", [wmat, cols])  # [N, G, Co/G, L]
    y = b.op("Reshape", [y, b.ints([-1] + list(out_s))])
    if op.bias is not None:
        y = b.op("Add", [y, b.const(np.asarray(op.bias).reshape((-1,) + (1,) * nd), "bias")])
    return y


@register_rule(O.Conv2d)
def _conv2d(b: Builder, node: Node, inputs: List[str]) -> str:
    return _conv(b, node, inputs[0], 2)


@register_rule(O.Conv1d)
def _conv1d(b: Builder, node: Node, inputs: List[str]) -> str:
    return _conv(b, node, inputs[0], 1)


@register_rule(O.Linear)
def _linear(b: Builder, node: Node, inputs: List[str]) -> str:
    y = b.op("MatMul", [inputs[0], b.const(np.asarray(node.op.weight).T, "weight_t")])
    if node.op.bias is not None:
        y = b.op("Add", [y, b.const(node.op.bias, "bias")])
    return y


# ---------------------------------------------------------------------------------------------
# weight-free linear ops
# ---------------------------------------------------------------------------------------------


@register_rule(O.AvgPool2d)
def _avgpool(b: Builder, node: Node, inputs: List[str]) -> str:
    op = node.op
    kernel, stride, pad = tuple(op.kernel), tuple(op.stride), tuple(op.padding)
    if b.precision == "float32":
        return b.op("AveragePool", inputs, kernel_shape=list(kernel), strides=list(stride), pads=list(pad) * 2,
                    count_include_pad=1)
    s = b.shapes[node.inputs[0]]
    slices, _ = _window_slices(b, inputs[0], s[1:], kernel, stride, pad, (1, 1))
    if len(slices) == 1:
        total = slices[0]
    else:
        stacked = b.op("Concat", [b.op("Unsqueeze", [t, b.ints([0], "axes")]) for t in slices], axis=0)
        total = b.op("ReduceSum", [stacked, b.ints([0], "axes")], keepdims=0)
    # zero padding counted in the mean (count_include_pad=True)
    return b.op("Div", [total, b.const(float(math.prod(kernel)), "area")])


@register_rule(O.MeanReduce)
def _mean(b: Builder, node: Node, inputs: List[str]) -> str:
    return b.op("ReduceMean", inputs, axes=[a + 1 for a in node.op.axes], keepdims=int(bool(node.op.keepdim)))


@register_rule(O.Scale)
def _scale(b: Builder, node: Node, inputs: List[str]) -> str:
    y = inputs[0]
    if node.op.factor != 1.0:
        y = b.op("Mul", [y, b.const(float(node.op.factor), "factor")])
    if node.op.divisor != 1.0:
        y = b.op("Div", [y, b.const(float(node.op.divisor), "divisor")])
    return y if y != inputs[0] else b.op("Identity", [y])


@register_rule(O.BatchNorm)
def _batchnorm(b: Builder, node: Node, inputs: List[str]) -> str:
    op = node.op
    return b.op(
        "BatchNormalization",
        [inputs[0], b.const(op.weight, "gamma"), b.const(op.bias, "beta"), b.const(op.mean, "mean"),
         b.const(op.var, "var")],
        epsilon=float(op.eps),
    )


@register_rule(O.Add)
def _add(b: Builder, node: Node, inputs: List[str]) -> str:
    return b.op("Add", inputs)


@register_rule(O.AddConstant)
def _add_constant(b: Builder, node: Node, inputs: List[str]) -> str:
    return b.op("Add", [inputs[0], b.const(node.op.value, "value")])


# ---------------------------------------------------------------------------------------------
# routing
# ---------------------------------------------------------------------------------------------


@register_rule(O.Reshape)
def _reshape(b: Builder, node: Node, inputs: List[str]) -> str:
    return b.merge(inputs[0], node.op.shape)


@register_rule(O.Permute)
def _permute(b: Builder, node: Node, inputs: List[str]) -> str:
    return b.op("Transpose", inputs, perm=[0] + [p + 1 for p in node.op.perm])


@register_rule(O.Concat)
def _concat(b: Builder, node: Node, inputs: List[str]) -> str:
    return b.op("Concat", inputs, axis=node.op.axis + 1)


# ---------------------------------------------------------------------------------------------
# neurons
# ---------------------------------------------------------------------------------------------


def _quantize(b: Builder, m: str, d: Union[int, str], rounding: str) -> str:
    """``Q(clamp(m, 0, D))`` as in :func:`spikedeploy.neurons.quantize`: ``D`` an int (Clip) or
    a tensor name (Max with 0, then Min with D)."""
    if isinstance(d, str):
        c = b.op("Min", [b.op("Max", [m, b.const(0.0, "zero")]), d])
    else:
        c = b.op("Clip", [m, b.const(0.0, "zero"), b.const(float(d), "d")])
    if rounding == "half_up":
        return b.op("Floor", [b.op("Add", [c, b.const(0.5, "half")])])
    return b.op("Round", [c])


def _leak_at(b: Builder, node: Node, leak, t: int) -> str:
    if isinstance(leak, tuple):
        if len(leak) < t:
            raise SpikedeployError(
                f"node {node.name!r}: neuron has {len(leak)} per-step leaks but the model is exported "
                f"with T={b.T} steps (at most {len(leak) + 1}); pass a smaller timesteps="
            )
        return b.const(float(leak[t - 1]), "leak")
    return b.const(float(leak), "leak")


def _integer_lif(b: Builder, node: Node, x: str, d_steps: Optional[List[str]], d: int, leak, reset_norm: float,
                 norm: float, rounding: str) -> str:
    """The shared integer LIF recurrence (spikedeploy.neurons.integer_lif), unrolled over T.
    ``d_steps``: per-step firing-limit tensors ``[1, B, 1, ...]`` (DI-LIF) or None (static ``d``)."""
    s = b.shapes[node.name]
    if leak is None and d_steps is None:
        q = _quantize(b, x, d, rounding)
        b.neuron_q(node, b.split_tb(q, s))
        return b.op("Div", [q, b.const(float(norm), "norm")])
    xs = b.to_steps(x, s)
    if leak is None:  # stateless with a per-step limit
        qs = [_quantize(b, xs[t], d_steps[t], rounding) for t in range(b.T)]
    else:
        qs = []
        m_prev = q_prev = None
        r = b.const(float(reset_norm), "reset_norm")
        carry = b.state_io
        if carry:
            if isinstance(leak, tuple):
                raise ConfigError(f"node {node.name!r}: a neuron with per-step leaks ({node.op.label}) cannot carry its "
                                  "state across calls (the next call's first leak is undefined); export without "
                                  "state_io")
            m_in, q_in = b.state_in(node, "membrane", ("m", "q"))
        for t in range(b.T):
            if t == 0 and carry:
                reset = b.op("Sub", [m_in, b.op("Div", [q_in, r])])
                m = b.op("Add", [b.op("Mul", [reset, b.const(float(leak), "leak")]), xs[0]])
            elif t == 0:
                m = xs[0]
            else:
                reset = b.op("Sub", [m_prev, b.op("Div", [q_prev, r])])
                m = b.op("Add", [b.op("Mul", [reset, _leak_at(b, node, leak, t)]), xs[t]])
            q_t = _quantize(b, m, d_steps[t] if d_steps is not None else d, rounding)
            qs.append(q_t)
            m_prev, q_prev = m, q_t
        if carry:
            b.state_out(node, "m", m_prev)
            b.state_out(node, "q", q_prev)
    q_tb = b.from_steps(qs)
    b.neuron_q(node, q_tb)
    return b.op("Div", [b.merge(q_tb, s), b.const(float(norm), "norm")])


@register_rule(O.IntegerLIF)
def _integer_lif_rule(b: Builder, node: Node, inputs: List[str]) -> str:
    op = node.op
    return _integer_lif(b, node, inputs[0], None, int(op.d), op.leak, op.reset_norm, op.norm, op.rounding)


@register_rule(O.DynamicIntegerLIF)
def _dynamic_integer_lif(b: Builder, node: Node, inputs: List[str]) -> str:
    """DI-LIF: ``D[t, b] = clamp(round(2 * sigmoid(w * mean(x[t, b]) + b) * d_init), 1, 2 d_init)``
    (spikedeploy.neurons.dynamic_firing_limit, same operation order), then the integer LIF with a
    per-step, per-sample limit."""
    op = node.op
    s = b.shapes[node.name]
    x = inputs[0]
    mu = b.op("ReduceMean", [x], axes=list(range(1, 1 + len(s))), keepdims=1)  # [T*B, 1, ...]
    pre = b.op("Add", [b.op("Mul", [mu, b.const(float(op.gate_w), "gate_w")]), b.const(float(op.gate_b), "gate_b")])
    alpha = b.op("Sigmoid", [pre])
    scaled = b.op("Mul", [b.op("Mul", [alpha, b.const(2.0, "two")]), b.const(float(op.d_init), "d_init")])
    d = b.op("Clip", [b.op("Round", [scaled]), b.const(1.0, "one"), b.const(2.0 * op.d_init, "d_max")])
    d_steps = b.to_steps(d, [1] * len(s))
    return _integer_lif(b, node, x, d_steps, op.d, op.leak, 1.0, float(op.d_init), op.rounding)


@register_rule(O.BinaryLIF)
def _binary_lif(b: Builder, node: Node, inputs: List[str]) -> str:
    """``H_t = beta U_{t-1} + x_t, S_t = [H_t - theta > 0], U_t = H_t - theta S_t``, ``U_{-1} = 0``."""
    op = node.op
    s = b.shapes[node.name]
    xs = b.to_steps(inputs[0], s)
    beta, th, zero = b.const(float(op.beta), "beta"), b.const(float(op.threshold), "threshold"), b.const(0.0, "zero")
    u, qs = None, []
    if b.state_io:
        (u,) = b.state_in(node, "residual", ("u",))
    for t in range(b.T):
        h = xs[t] if u is None else b.op("Add", [b.op("Mul", [beta, u]), xs[t]])
        spike = b.op("Cast", [b.op("Greater", [b.op("Sub", [h, th]), zero])], to=b.elem_type)
        qs.append(spike)
        u = b.op("Sub", [h, b.op("Mul", [th, spike])])
    if b.state_io:
        b.state_out(node, "u", u)
    q_tb = b.from_steps(qs)
    b.neuron_q(node, q_tb)
    return b.merge(q_tb, s)  # norm = 1


# ---------------------------------------------------------------------------------------------
# spike attention
# ---------------------------------------------------------------------------------------------


@register_rule(O.SpikeLinearAttention)
def _attention(b: Builder, node: Node, inputs: List[str]) -> str:
    """Integer branch of reference.AttentionRule: per head, ``kv = k^T v`` first, then
    ``(q @ kv) * scale``."""
    op = node.op
    h = int(op.num_heads)

    def heads(x: str, name: str) -> str:
        c, n = b.shapes[name]
        t = b.op("Transpose", [x], perm=[0, 2, 1])  # [TB, N, C]
        t = b.op("Reshape", [t, b.ints([-1, n, h, c // h])])
        return b.op("Transpose", [t], perm=[0, 2, 1, 3])  # [TB, H, N, c]

    qh, kh, vh = (heads(x, nm) for x, nm in zip(inputs, node.inputs))
    kv = b.op("MatMul", [b.op("Transpose", [kh], perm=[0, 1, 3, 2]), vh])  # [TB, H, c, cv]
    y = b.op("Mul", [b.op("MatMul", [qh, kv]), b.const(float(op.scale), "scale")])  # [TB, H, N, cv]
    cv, n = b.shapes[node.name]
    y = b.op("Transpose", [y], perm=[0, 2, 1, 3])  # [TB, N, H, cv]
    y = b.op("Reshape", [y, b.ints([-1, n, cv])])
    return b.op("Transpose", [y], perm=[0, 2, 1])  # [TB, Cv, N]


# ---------------------------------------------------------------------------------------------
# SpikeVideoFormer's space-time attention (SDHA, seed Eq. 10; dot product, Eq. 3)
# ---------------------------------------------------------------------------------------------


def _st_groups(b: Builder, x: str, c_total: int, lo: int, hi: int, h: int, n: int, grouping: str) -> str:
    """reference.space_time_groups on the merged layout for channels ``[lo, hi)`` (``h`` heads):
    ``[TB, C, N]`` -> spatial ``[T, B, h, N, c]``, temporal ``[B, h, N, T, c]``, joint ``[B, h, T*N, c]``."""
    if (lo, hi) != (0, c_total):
        x = b.op("Slice", [x, b.ints([lo], "starts"), b.ints([hi], "ends"), b.ints([1], "axes")])
    c = (hi - lo) // h
    t = b.op("Reshape", [x, b.ints([b.T, -1, h, c, n])])
    t = b.op("Transpose", [t], perm=[0, 1, 2, 4, 3])  # [T, B, h, N, c]
    if grouping == "spatial":
        return t
    if grouping == "temporal":
        return b.op("Transpose", [t], perm=[1, 2, 3, 0, 4])
    t = b.op("Transpose", [t], perm=[1, 2, 0, 3, 4])  # [B, h, T, N, c]
    return b.op("Reshape", [t, b.ints([0, 0, b.T * n, c])])


def _st_ungroup(b: Builder, y: str, n: int, cv: int, grouping: str) -> str:
    """-> ``[T, B, h, N, cv]`` (reference.space_time_ungroup)."""
    if grouping == "spatial":
        return y
    if grouping == "temporal":
        return b.op("Transpose", [y], perm=[3, 0, 1, 2, 4])
    y = b.op("Reshape", [y, b.ints([0, 0, b.T, n, cv])])
    return b.op("Transpose", [y], perm=[2, 0, 1, 3, 4])


def _space_time_attention(b: Builder, node: Node, inputs: List[str]) -> str:
    """reference.SpaceTimeAttentionRule, integer MatMuls on the spike counts (exact in float64 and,
    below 2**24, in float32): per head block and token group ``KV = K^T V``; Hamming:
    ``M = 2 KV - ReduceSum_L(V)``, ``Y = 2 (Q M) - ReduceSum_d(M)``; dot: ``Y = Q KV``; heads
    concatenated along channels; ``Mul`` by ``scale`` only when it is not 1."""
    from spikedeploy.reference import head_blocks

    op = node.op
    (c_all, n), (cv_all, _) = b.shapes[node.inputs[0]], b.shapes[node.inputs[2]]
    H = int(op.num_heads)
    c, cv = c_all // H, cv_all // H
    two = b.const(2.0, "two")
    outs = []
    for grouping, h0, h1 in head_blocks(op):
        hh = h1 - h0
        qg = _st_groups(b, inputs[0], c_all, h0 * c, h1 * c, hh, n, grouping)
        kg = _st_groups(b, inputs[1], c_all, h0 * c, h1 * c, hh, n, grouping)
        vg = _st_groups(b, inputs[2], cv_all, h0 * cv, h1 * cv, hh, n, grouping)
        rank = 4 if grouping == "joint" else 5
        perm = list(range(rank - 2)) + [rank - 1, rank - 2]
        kv = b.op("MatMul", [b.op("Transpose", [kg], perm=perm), vg])  # [..., c, cv]
        if op.score == "hamming":
            col_v = b.op("ReduceSum", [vg, b.ints([rank - 2], "axes")], keepdims=1)  # 1^T V
            mem = b.op("Sub", [b.op("Mul", [kv, two]), col_v])
            col_m = b.op("ReduceSum", [mem, b.ints([rank - 2], "axes")], keepdims=1)  # 1^T M
            y = b.op("Sub", [b.op("Mul", [b.op("MatMul", [qg, mem]), two]), col_m])
        else:
            y = b.op("MatMul", [qg, kv])
        outs.append(_st_ungroup(b, y, n, cv, grouping))
    y = outs[0] if len(outs) == 1 else b.op("Concat", outs, axis=2)  # [T, B, H, N, cv]
    y = b.op("Transpose", [y], perm=[0, 1, 2, 4, 3])
    y = b.op("Reshape", [y, b.ints([-1, cv_all, n])])
    if float(op.scale) != 1.0:
        y = b.op("Mul", [y, b.const(float(op.scale), "scale")])
    return y


register_rule(O.SpikeHammingAttention)(_space_time_attention)
register_rule(O.SpikeDotAttention)(_space_time_attention)

# ---------------------------------------------------------------------------------------------
# SpikeTrack memory ops and upsampling
# ---------------------------------------------------------------------------------------------


def _split_heads(b: Builder, x: str, c: int, n: int, h: int) -> str:
    """reference.AttentionRule._heads on the merged layout: ``[TB, C, N]`` -> ``[TB, H, N, C/H]``
    (channels split into H contiguous groups)."""
    t = b.op("Transpose", [x], perm=[0, 2, 1])  # [TB, N, C]
    t = b.op("Reshape", [t, b.ints([-1, n, h, c // h])])
    return b.op("Transpose", [t], perm=[0, 2, 1, 3])


def _merge_heads(b: Builder, y: str, cv: int, n: int) -> str:
    """reference.AttentionRule._merge: ``[TB, H, N, cv/H]`` -> ``[TB, Cv, N]``."""
    y = b.op("Transpose", [y], perm=[0, 2, 1, 3])  # [TB, N, H, cv/H]
    y = b.op("Reshape", [y, b.ints([-1, n, cv])])
    return b.op("Transpose", [y], perm=[0, 2, 1])


@register_rule(O.MemoryWrite)
def _memory_write(b: Builder, node: Node, inputs: List[str]) -> str:
    """reference.MemoryWriteRule (integer mode): per head ``kv = K_h^T V_h`` (one ``MatMul``
    summing over tokens), times ``scale`` only when it is not 1; output ``[TB, H, C/H, Cv/H]``."""
    op = node.op
    h = int(op.num_heads)
    (c, n), (cv, _) = b.shapes[node.inputs[0]], b.shapes[node.inputs[1]]
    kh = _split_heads(b, inputs[0], c, n, h)
    vh = _split_heads(b, inputs[1], cv, n, h)
    kv = b.op("MatMul", [b.op("Transpose", [kh], perm=[0, 1, 3, 2]), vh])  # [TB, H, c, cv]
    if float(op.scale) != 1.0:
        kv = b.op("Mul", [kv, b.const(float(op.scale), "scale")])
    return kv


@register_rule(O.MemoryRead)
def _memory_read(b: Builder, node: Node, inputs: List[str]) -> str:
    """reference.MemoryReadRule: ``merge_heads(Q_h @ memory[t]) * scale``, the memory an
    initializer. ``T_mem = 1``: one ``MatMul`` with the ``[H, C/H, Cv/H]`` constant (broadcast
    over T*B). ``T_mem = T``: the q heads are split back into ``[T, B, ...]`` and multiplied by
    the ``[T, 1, H, C/H, Cv/H]`` constant (macro-step t reads ``memory[t]``)."""
    op = node.op
    h = int(op.num_heads)
    mem = np.asarray(op.memory)
    c, n = b.shapes[node.inputs[0]]
    cv, _ = b.shapes[node.name]
    qh = _split_heads(b, inputs[0], c, n, h)  # [TB, H, N, c/H]
    tm = mem.shape[0]
    if tm == 1:
        y = b.op("MatMul", [qh, b.const(mem[0], "memory")])
    elif tm == b.T:
        q5 = b.op("Reshape", [qh, b.ints([b.T, -1, h, n, c // h])])
        y = b.op("MatMul", [q5, b.const(mem[:, None], "memory")])  # [T, B, H, N, cv/H]
        y = b.op("Reshape", [y, b.ints([-1, h, n, cv // h])])
    else:
        raise SpikedeployError(
            f"node {node.name!r}: the memory has {tm} steps but the model is exported with T={b.T} "
            "(a memory has 1 step, read at every step, or exactly T)"
        )
    y = _merge_heads(b, y, cv, n)
    return b.op("Mul", [y, b.const(float(op.scale), "scale")])


# ---------------------------------------------------------------------------------------------
# time-axis ops and the template gate (values in the merged layout [T*B, *s], t major)
# ---------------------------------------------------------------------------------------------


@register_rule(O.RepeatTime)
def _repeat_time(b: Builder, node: Node, inputs: List[str]) -> str:
    """``[1*B, *s]`` -> ``[times*B, *s]``: ``times`` copies concatenated along the merged axis."""
    times = int(node.op.times)
    return b.op("Identity", inputs) if times == 1 else b.op("Concat", list(inputs) * times, axis=0)


@register_rule(O.SelectStep)
def _select_step(b: Builder, node: Node, inputs: List[str]) -> str:
    """``[T*B, *s]`` -> ``[T, B, *s]`` -> ``Gather`` of step t on axis 0 -> ``[1, B, *s]`` -> ``[B, *s]``."""
    s = b.shapes[node.inputs[0]]
    tb = b.op("Reshape", [inputs[0], b.ints([b.steps[node.inputs[0]], -1] + list(s))])
    return b.merge(b.op("Gather", [tb, b.ints([int(node.op.step)], "step")], axis=0), s)


@register_rule(O.StackSteps)
def _stack_steps(b: Builder, node: Node, inputs: List[str]) -> str:
    """One-step values ``[B, *s]`` concatenated along the merged axis: ``[K*B, *s]``."""
    return b.op("Concat", list(inputs), axis=0) if len(inputs) > 1 else b.op("Identity", inputs)


@register_rule(O.GateLinear)
def _gate_linear(b: Builder, node: Node, inputs: List[str]) -> str:
    """A Linear on the last axis (``MatMul`` with ``W^T``, then ``Add`` bias)."""
    return _linear(b, node, inputs)


@register_rule(O.GateSoftmax)
def _gate_softmax(b: Builder, node: Node, inputs: List[str]) -> str:
    """HOST step (exported so that the model is complete): ``Softmax`` over the time axis of
    ``[T, B, *s]``."""
    s = b.shapes[node.name]
    tb = b.op("Reshape", [inputs[0], b.ints([b.steps[node.inputs[0]], -1] + list(s))])
    return b.merge(b.op("Softmax", [tb], axis=0), s)


@register_rule(O.TemplateGate)
def _template_gate(b: Builder, node: Node, inputs: List[str]) -> str:
    """``scale * sum_t w[t] * x[t]``: both split to ``[T, B, ...]``, ``Mul``, ``ReduceSum`` over
    axis 0 -> ``[B, C, *r]`` (one step); ``Mul`` by ``scale`` only when it is not 1."""
    xs, ws = b.shapes[node.inputs[0]], b.shapes[node.inputs[1]]
    T = b.steps[node.inputs[0]]
    x = b.op("Reshape", [inputs[0], b.ints([T, -1] + list(xs))])
    w = b.op("Reshape", [inputs[1], b.ints([T, -1] + list(ws) + [1] * (len(xs) - len(ws)))])
    y = b.op("ReduceSum", [b.op("Mul", [x, w]), b.ints([0], "axes")], keepdims=0)
    if float(node.op.scale) != 1.0:
        y = b.op("Mul", [y, b.const(float(node.op.scale), "scale")])
    return y


def upsample_matrices(op: O.Upsample, in_hw: Sequence[int]) -> Tuple[np.ndarray, np.ndarray]:
    """The float64 interpolation matrices ``(A_h [Ho, H], A_w [Wo, W])`` of an Upsample:
    ``y[c] = A_h @ x[c] @ A_w^T``. They are PyTorch's own weights, obtained by running
    ``F.interpolate`` (float64) on identity bases, so the source indices and lambdas (including
    the clamping at the borders and nearest's index rounding) are exactly PyTorch's."""
    import torch
    import torch.nn.functional as F

    H, W = (int(v) for v in in_hw)
    Ho, Wo = (int(v) for v in op.size)
    ac = bool(op.align_corners) if op.mode == "bilinear" else None
    with torch.no_grad():
        # rows: H separate 1-channel images [H, 1] (a one-hot column each), width 1 -> 1 (identity)
        eh = torch.eye(H, dtype=torch.float64).reshape(H, 1, H, 1)
        ah = F.interpolate(eh, size=(Ho, 1), mode=op.mode, align_corners=ac).reshape(H, Ho).T
        ew = torch.eye(W, dtype=torch.float64).reshape(W, 1, 1, W)
        aw = F.interpolate(ew, size=(1, Wo), mode=op.mode, align_corners=ac).reshape(W, Wo).T
    return np.ascontiguousarray(ah.numpy()), np.ascontiguousarray(aw.numpy())


def upsample_indices(op: O.Upsample, in_hw: Sequence[int]) -> Tuple[np.ndarray, np.ndarray]:
    """Nearest mode: the source row and column of every output pixel, PyTorch's own (the argmax of
    the one-hot rows of :func:`upsample_matrices`)."""
    ah, aw = upsample_matrices(op, in_hw)
    return ah.argmax(axis=1).astype(np.int64), aw.argmax(axis=1).astype(np.int64)


@register_rule(O.Upsample)
def _upsample(b: Builder, node: Node, inputs: List[str]) -> str:
    """PyTorch ``F.interpolate`` on ``[TB, C, H, W]``.

    * nearest (both precisions): two ``Gather`` nodes with PyTorch's source indices (rows, then
      columns): a pure copy, bit-identical to PyTorch. (``Resize`` nearest would recompute the
      indices in float32 with another formula than PyTorch's, which can pick a neighbouring pixel
      for some sizes.)
    * bilinear, float32: ``Resize`` (mode ``linear``, ``coordinate_transformation_mode``
      ``half_pixel``, or ``align_corners`` when the op has ``align_corners=True``);
    * bilinear, float64: onnxruntime has no double ``Resize`` kernel, so the separable
      interpolation is written as two ``MatMul`` with precomputed float64 matrices, first along W
      (``x @ A_w^T``) then along H (``A_h @ .``), PyTorch's own order (an H-weighted sum of
      W-interpolated rows). Every output is a sum of two non-zero products per axis plus exact
      zeros, so it equals PyTorch's float64 result up to rounding order / fused multiply-add
      (~1e-16 relative)."""
    op = node.op
    s = b.shapes[node.inputs[0]]
    Ho, Wo = (int(v) for v in op.size)
    x = inputs[0]
    if op.mode == "nearest":
        rows, cols = upsample_indices(op, s[1:])
        y = b.op("Gather", [x, b.const(rows, "rows", dtype=np.int64)], axis=2)
        return b.op("Gather", [y, b.const(cols, "cols", dtype=np.int64)], axis=3)
    if b.precision == "float32":
        ctm = "align_corners" if op.align_corners else "half_pixel"
        # opset 17 Resize takes the sizes of all four axes: the dynamic T*B axis, then C, Ho, Wo
        tb = b.op("Slice", [b.op("Shape", [x]), b.ints([0], "starts"), b.ints([1], "ends")])
        sizes = b.op("Concat", [tb, b.ints([s[0], Ho, Wo], "sizes")], axis=0)
        return b.op("Resize", [x, "", "", sizes], mode="linear", coordinate_transformation_mode=ctm)
    ah, aw = upsample_matrices(op, s[1:])
    y = b.op("MatMul", [x, b.const(aw.T, "interp_w")])  # [TB, C, H, Wo]
    return b.op("MatMul", [b.const(ah, "interp_h"), y])  # [TB, C, Ho, Wo]


# ---------------------------------------------------------------------------------------------
# export / load
# ---------------------------------------------------------------------------------------------


def _resolve_T(graph: Graph, timesteps: Optional[int]) -> int:
    T = timesteps if timesteps is not None else graph.meta_dict().get("capture_T")
    if T is None:
        raise ConfigError(
            "the ONNX export unrolls neurons over a fixed number of time steps: pass timesteps= "
            "(the graph has no 'capture_T' metadata)"
        )
    if isinstance(T, bool) or not isinstance(T, (int, np.integer)) or int(T) < 1:
        raise ConfigError(f"timesteps must be a positive integer, got {T!r}")
    return int(T)


def build_model(graph: Graph, *, timesteps: Optional[int] = None, precision: str = "float64",
                encoding: str = "integer", state_io: bool = False):
    """Translate ``graph`` into an ``onnx.ModelProto`` (see the module docstring); checked with
    ``onnx.checker.check_model(full_check=True)``. ``state_io``: every stateful neuron's state as
    explicit inputs and outputs (module docstring)."""
    onnx = _onnx()
    from spikedeploy.reference import graph_mode

    if encoding not in ENCODINGS:
        raise ConfigError(
            f"the ONNX target exports only the integer network (encoding {ENCODINGS}), got {encoding!r}; "
            "spike-lowered graphs are exported with the nir or lava targets"
        )
    if precision not in PRECISIONS:
        raise ConfigError(f"unknown ONNX precision {precision!r}; expected one of {PRECISIONS}")
    mode = graph_mode(graph)
    if mode != "integer":
        raise SpikedeployError(
            f"the ONNX target exports the integer (un-lowered) network, but this graph is lowered to "
            f"{mode!r} spikes; export the graph from before ExpandSpikes (default_pipeline() without an encoding)"
        )
    T = _resolve_T(graph, timesteps)
    for node in graph.nodes:  # fail before building anything
        if type(node.op) not in RULES:
            raise unsupported(TARGET, node, "no ONNX rule for this op (exporters/onnx.py RULES)")
    b = Builder(graph, T, precision, state_io=state_io)
    values: Dict[str, str] = {}
    graph_inputs, input_map = [], {}
    for spec in graph.inputs:
        name = b.fresh(spec.name)
        input_map[spec.name] = name
        graph_inputs.append(b.helper.make_tensor_value_info(name, b.elem_type, [T, BATCH_DIM] + list(spec.shape)))
        b.current = None
        values[spec.name] = b.merge(name, spec.shape)
    for node in graph.nodes:
        b.current = node
        b.T = b.steps[node.name]
        values[node.name] = RULES[type(node.op)](b, node, [values[i] for i in node.inputs])
    b.current = None
    output_map = {}
    for o in graph.outputs:
        b.T = b.steps[o]
        name = b.fresh(f"out_{o}")
        b.add_output(b.split_tb(values[o], b.shapes[o]), name, b.shapes[o])
        output_map[o] = name
    # graph outputs first, then the neuron q outputs
    outs = sorted(b.outputs, key=lambda v: (v.name not in output_map.values()))
    g = b.helper.make_graph(b.nodes, sanitize(str(graph.meta_dict().get("model", "spikedeploy"))),
                            graph_inputs + b.state_inputs, outs, initializer=b.initializers)
    model = b.helper.make_model(g, opset_imports=[b.helper.make_opsetid("", OPSET)],
                                producer_name="spikedeploy", producer_version=_version())
    model.ir_version = min(model.ir_version, 9)  # readable by older onnxruntime builds too
    graph_meta = {}
    for k, v in graph.meta_dict().items():
        try:
            json.dumps(v)
            graph_meta[k] = v
        except TypeError:
            graph_meta[k] = repr(v)
    meta = {
        "format": FORMAT,
        "version": _version(),
        "encoding": encoding,
        "timesteps": T,
        "precision": precision,
        "inputs": [{"ir": s.name, "onnx": input_map[s.name], "shape": list(s.shape)} for s in graph.inputs],
        "outputs": output_map,
        "graph_outputs": list(graph.outputs),
        "neurons": b.neuron_outputs,
        "neuron_labels": {n.name: getattr(n.op, "label", n.op.kind) for n in graph.neurons()},
        "graph_meta": graph_meta,
        "state": b.state_meta,
    }
    for k, v in meta.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = META_PREFIX + k, json.dumps(v)
    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as e:  # a bug in a rule, not a user error: say which
        raise SpikedeployError(f"internal error: the exported ONNX model fails onnx.checker: {e}") from e
    return model


def export(graph: Graph, path: PathLike, *, encoding: str = "integer", timesteps: Optional[int] = None,
           precision: str = "float64", overwrite: bool = False, state_io: bool = False) -> Path:
    """Write ``graph`` (an integer, folded graph) to ``path`` as an ONNX model, atomically.

    ``timesteps``: T the neurons are unrolled over (default: the graph's ``capture_T``).
    ``precision``: ``"float64"`` (default; exact q) or ``"float32"`` (native Conv/AveragePool).
    ``state_io``: neuron state as explicit inputs/outputs, for streaming one frame per call
    (module docstring; e.g. ``timesteps=1``).
    ``overwrite``: replace an existing file (else an existing path is an error, checked atomically).
    """
    path = Path(path)
    check_output_file(path, "ONNX model", overwrite=overwrite)
    model = build_model(graph, timesteps=timesteps, precision=precision, encoding=encoding, state_io=state_io)
    try:
        data = model.SerializeToString()
    except ValueError as e:  # > 2 GiB protobuf limit
        raise SpikedeployError(f"cannot serialize the ONNX model for {path}: {e}") from None
    try:
        return atomic_write_bytes(path, data, replace=overwrite)
    except OSError as e:
        raise SpikedeployError(f"cannot write ONNX model to {path}: {e.strerror or e}") from None


@dataclass(frozen=True)
class OnnxArtifact:
    """A loaded ONNX export: the model, its spikedeploy metadata (decoded JSON) and where it came from."""

    model: object  #: onnx.ModelProto
    metadata: Dict[str, object]
    path: Optional[Path] = None

    @property
    def timesteps(self) -> int:
        return int(self.metadata["timesteps"])

    @property
    def encoding(self) -> str:
        return str(self.metadata["encoding"])

    @property
    def precision(self) -> str:
        return str(self.metadata["precision"])

    @property
    def outputs(self) -> Dict[str, str]:
        """IR graph output name -> ONNX output name."""
        return dict(self.metadata["outputs"])

    @property
    def neurons(self) -> Dict[str, str]:
        """IR neuron name -> ONNX output name of its q ``[T, B, *s]``."""
        return dict(self.metadata["neurons"])

    @property
    def state(self) -> Dict[str, dict]:
        """IR neuron name -> its state inputs/outputs (exported with ``state_io``; else empty)."""
        return dict(self.metadata.get("state") or {})

    def serialized(self) -> bytes:
        return self.model.SerializeToString()


def read_metadata(model) -> Dict[str, object]:
    """The spikedeploy metadata of a ModelProto (JSON values decoded)."""
    meta = {}
    for p in model.metadata_props:
        if p.key.startswith(META_PREFIX):
            try:
                meta[p.key[len(META_PREFIX):]] = json.loads(p.value)
            except json.JSONDecodeError:
                raise SpikedeployError(f"ONNX metadata {p.key!r} is not valid JSON") from None
    return meta


#: what to do about a damaged or foreign ONNX file
_REEXPORT = "export it again with spikedeploy export --target onnx"


def _check_metadata(model, meta: dict, path: Path) -> None:
    """The spikedeploy metadata of a loaded model: types and ranges of every field, and every
    name it lists is an input/output of the ONNX graph with the dtype and dims it implies."""
    from spikedeploy.validate import MAX_TIMESTEPS, FieldChecker

    c = FieldChecker(f"ONNX model {path}: metadata", _REEXPORT)
    T = c.int(meta["timesteps"], f"{META_PREFIX}timesteps", 1, MAX_TIMESTEPS)
    c.str(meta["encoding"], f"{META_PREFIX}encoding", ENCODINGS)
    precision = c.str(meta["precision"], f"{META_PREFIX}precision", PRECISIONS)
    onnx = _onnx()
    elem = onnx.TensorProto.DOUBLE if precision == "float64" else onnx.TensorProto.FLOAT
    graph_inputs = {v.name: v for v in model.graph.input}
    graph_outputs = {v.name for v in model.graph.output}
    specs = c.list(meta["inputs"], f"{META_PREFIX}inputs", min_len=1, max_len=64)
    for i, spec in enumerate(specs):
        where = f"{META_PREFIX}inputs[{i}]"
        c.dict(spec, where)
        c.str(c.key(spec, "ir", where), f"{where}.ir")
        name = c.str(c.key(spec, "onnx", where), f"{where}.onnx")
        shape = c.shape(c.key(spec, "shape", where), f"{where}.shape")
        vi = graph_inputs.get(name)
        if vi is None:
            c.fail(f"{where}.onnx", f"{name!r} is not an input of the ONNX graph")
        tt = vi.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else d.dim_param for d in tt.shape.dim]
        if tt.elem_type != elem or dims != [T, BATCH_DIM, *shape]:
            c.fail(f"{where}", f"graph input {name!r} is {onnx.TensorProto.DataType.Name(tt.elem_type)} {dims}, but the "
                               f"metadata says {precision} {[T, BATCH_DIM, *shape]}")
    for ir_name, entry in c.dict(meta.get("state") or {}, f"{META_PREFIX}state").items():
        where = f"{META_PREFIX}state[{ir_name!r}]"
        c.dict(entry, where)
        c.str(c.key(entry, "kind", where), f"{where}.kind", ("membrane", "residual"))
        parts = ("m", "q") if entry["kind"] == "membrane" else ("u",)
        for side, names in (("inputs", graph_inputs), ("outputs", graph_outputs)):
            given = c.dict(c.key(entry, side, where), f"{where}.{side}")
            if sorted(given) != sorted(parts):
                c.fail(f"{where}.{side}", f"names {sorted(given)}, expected {list(parts)}")
            for part, onnx_name in given.items():
                if c.str(onnx_name, f"{where}.{side}.{part}") not in names:
                    c.fail(f"{where}.{side}.{part}", f"{onnx_name!r} is not an {side[:-1]} of the ONNX graph")
    for key in ("outputs", "neurons"):
        entries = c.dict(meta[key], f"{META_PREFIX}{key}")
        if key == "outputs" and not entries:
            c.fail(f"{META_PREFIX}outputs", "lists no graph output")
        for ir_name, onnx_name in entries.items():
            c.str(onnx_name, f"{META_PREFIX}{key}[{ir_name!r}]")
            if onnx_name not in graph_outputs:
                c.fail(f"{META_PREFIX}{key}[{ir_name!r}]", f"{onnx_name!r} is not an output of the ONNX graph")


def load(path: PathLike) -> OnnxArtifact:
    """Re-load a model written by :func:`export` (no PyTorch model code needed). Every problem
    (missing, empty, truncated or foreign file, metadata that does not fit the graph, a model
    that fails the ONNX checker) raises :class:`~spikedeploy.errors.ArtifactError` naming the
    file (exit code 2)."""
    from spikedeploy.errors import ArtifactError
    from spikedeploy.validate import check_artifact_file, detail

    onnx = _onnx()
    path = check_artifact_file(path, "ONNX model")
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ArtifactError(f"cannot read ONNX model {path}: {e.strerror or e}") from None
    try:
        model = onnx.load_model_from_string(data)
    except Exception as e:  # protobuf raises DecodeError, RuntimeWarning-like errors, ...
        raise ArtifactError(f"{path} is not a valid ONNX model (corrupt, truncated or not ONNX: {detail(e)}); "
                            f"{_REEXPORT}") from None
    if not model.graph.node:
        raise ArtifactError(f"{path} is not a valid ONNX model (empty graph; corrupt, truncated or not ONNX); "
                            f"{_REEXPORT}")
    try:
        meta = read_metadata(model)
    except SpikedeployError as e:
        raise ArtifactError(f"{path}: {e}; {_REEXPORT}") from None
    except (UnicodeDecodeError, TypeError, ValueError) as e:  # e.g. a key that is not UTF-8
        raise ArtifactError(f"{path}: unreadable metadata ({detail(e)}); {_REEXPORT}") from None
    if meta.get("format") != FORMAT:
        raise ArtifactError(
            f"{path} is an ONNX model but not one written by spikedeploy's ONNX exporter "
            f"(metadata {META_PREFIX}format is {meta.get('format')!r}, expected {FORMAT!r}); {_REEXPORT}"
        )
    missing = [k for k in ("timesteps", "encoding", "precision", "inputs", "outputs", "neurons") if k not in meta]
    if missing:
        raise ArtifactError(f"{path}: spikedeploy metadata is missing {missing}; {_REEXPORT}")
    try:
        onnx.checker.check_model(model)
    except Exception as e:  # onnx.checker.ValidationError and protobuf errors
        raise ArtifactError(f"{path} fails the ONNX checker (corrupt?): {detail(e)}; {_REEXPORT}") from None
    try:
        _check_metadata(model, meta, path)
    except (UnicodeDecodeError, TypeError, ValueError, AttributeError) as e:  # names that are not text, ...
        raise ArtifactError(f"{path}: malformed model ({detail(e)}); {_REEXPORT}") from None
    return OnnxArtifact(model=model, metadata=meta, path=path)
