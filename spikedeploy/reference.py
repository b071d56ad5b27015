"""Reference execution of the IR: the oracle every backend is checked against.

One executor, one rule per op class (``RULES``). What a graph computes depends only on the graph:

* an **integer** graph (neurons with ``encoding=None``) computes what the trained model computes:
  every neuron emits ``q / norm``;
* a **lowered** graph (after :class:`spikedeploy.passes.ExpandSpikes`) has neurons that emit unit
  spikes (``encoding="binary"``: q spikes inside a window of D sub-steps, thermometer code) or one
  graded event carrying q (``encoding="graded"``), with 1/norm folded into the consumers.

Spike-carrying values are :class:`SpikeValue` objects. Synaptic ops (conv, linear, pooling, mean)
consume them sub-step by sub-step and add their bias once per macro-step::

    binary:  y = sum_{k < window} op_nobias(s_k) + bias,   s_k = [q > k]
    graded:  y = op_nobias(q) + bias

so a receiving neuron integrates all D sub-steps before it fires. Routing ops (reshape, permute,
concat) move spikes unchanged; any other op receives the decoded count ``q`` (a graded
accumulator). :func:`execute` runs a graph in ``"integer"``, ``"binary"`` or ``"graded"`` mode,
lowering it first when needed. Float64 is the default dtype: the spike-mode sums are then exact up
to ~1e-16 relative error, so only values within a tiny epsilon of a rounding boundary can differ.

Neuron state across calls (frame-by-frame streaming, :mod:`spikedeploy.streaming`): ``run`` and
``execute`` take ``state`` (stateful neuron node name -> :class:`~spikedeploy.neurons.NeuronState`
``[B, *s]``, in every mode and for fixed-point graphs; a node left out starts fresh, a zero state is
the fresh start exactly) and return each stateful neuron's final state in ``RunResult.state``
(:func:`stateful_neurons` says which nodes carry one). T calls of one step each, the state carried,
give bit for bit the q and outputs of one call on the T steps.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, Optional, Type, Union

import numpy as np
import torch
import torch.nn.functional as F

from spikedeploy import neurons as N
from spikedeploy.errors import InputError, SpikedeployError, UnsupportedOpError
from spikedeploy.ir import ops as O
from spikedeploy.ir.graph import Graph, validate

MODES = ("integer", "binary", "graded")


@dataclass(frozen=True)
class SpikeValue:
    """Spikes on an edge: integer counts ``q`` ``[T, B, *s]`` (float dtype), emitted with
    ``encoding`` inside a window of ``window`` sub-steps per macro-step."""

    q: torch.Tensor
    encoding: str
    window: int

    def substeps(self):
        """Yield the binary sub-step tensors s_k = [q > k] (thermometer code), always at least one.

        Sub-steps after the last one in which any neuron fires are all-zero; they are skipped
        (their synaptic contribution is exactly zero)."""
        for k in range(self.window):
            s_k = self.q > k
            if k > 0 and not bool(s_k.any()):
                return
            yield s_k.to(self.q.dtype)

    def with_q(self, q: torch.Tensor) -> "SpikeValue":
        return SpikeValue(q=q, encoding=self.encoding, window=self.window)


Value = Union[torch.Tensor, SpikeValue]


@dataclass
class NodeRecord:
    """What a run recorded for one node. ``value`` is the real output (for spike outputs the
    decoded count q); neurons also record ``q``, ``margin`` and the firing limit ``d``."""

    value: torch.Tensor
    q: Optional[torch.Tensor] = None
    margin: Optional[torch.Tensor] = None
    d: Union[None, int, torch.Tensor] = None
    spikes: Optional[SpikeValue] = None
    #: fixed point: elements clamped to the state/message width in this node (neurons, Quantize)
    saturated: int = 0


@dataclass
class RunResult:
    graph: Graph
    mode: str
    dtype: torch.dtype
    records: Dict[str, NodeRecord]
    outputs: Dict[str, torch.Tensor]
    #: stateful neuron node name -> its final NeuronState (the state to carry into the next call)
    state: Dict[str, N.NeuronState] = field(default_factory=dict)

    def neuron_q(self, name: str) -> torch.Tensor:
        rec = self.records[name]
        if rec.q is None:
            raise KeyError(f"{name!r} is not a neuron")
        return rec.q


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------


def _param(a: Optional[np.ndarray], dtype) -> Optional[torch.Tensor]:
    return None if a is None else torch.tensor(np.asarray(a), dtype=dtype)


def _per_sample(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """Apply a stateless op written for ``[N, *s]`` to ``[T, B, *s]``."""
    T, B = x.shape[:2]
    y = fn(x.reshape((T * B,) + tuple(x.shape[2:])))
    return y.reshape((T, B) + tuple(y.shape[1:]))


def decode(v: Value) -> torch.Tensor:
    """The real value of an edge: a tensor as is, spikes as their count q."""
    return v.q if isinstance(v, SpikeValue) else v


# ---------------------------------------------------------------------------------------------
# rules
# ---------------------------------------------------------------------------------------------


class Rule:
    """Reference semantics of one op class. ``linear`` computes the op without its bias/offset
    (so it can be applied to each spike sub-step), ``offset`` adds what is added once per
    macro-step. Ops that are not synaptic override ``__call__`` directly."""

    synaptic = False

    def linear(self, op, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def offset(self, op, y: torch.Tensor) -> torch.Tensor:
        return y

    def full(self, op, x: torch.Tensor) -> torch.Tensor:
        """The op on a real-valued input; rules override it where PyTorch fuses the bias into the
        op, so that the integer network is reproduced bit for bit."""
        return self.offset(op, self.linear(op, x))

    def __call__(self, op, inputs, ctx: "_Ctx") -> Value:
        (x,) = inputs
        if isinstance(x, SpikeValue):
            if x.encoding == "graded":
                acc = self.linear(op, x.q)
            else:
                acc = None
                for s_k in x.substeps():
                    term = self.linear(op, s_k)
                    acc = term if acc is None else acc + term
            return self.offset(op, acc)
        return self.full(op, x)


class ConvRule(Rule):
    synaptic = True

    def __init__(self, fn, dims: int):
        self.fn, self.dims = fn, dims

    def linear(self, op, x):
        w = _param(op.weight, x.dtype)
        return _per_sample(
            lambda z: self.fn(z, w, None, op.stride, op.padding, op.dilation, op.groups), x
        )

    def offset(self, op, y):
        if op.bias is None:
            return y
        b = _param(op.bias, y.dtype)
        return y + b.reshape((-1,) + (1,) * self.dims)

    def full(self, op, x):
        w, b = _param(op.weight, x.dtype), _param(op.bias, x.dtype)
        return _per_sample(lambda z: self.fn(z, w, b, op.stride, op.padding, op.dilation, op.groups), x)


class LinearRule(Rule):
    synaptic = True

    def linear(self, op, x):
        return F.linear(x, _param(op.weight, x.dtype))

    def offset(self, op, y):
        return y if op.bias is None else y + _param(op.bias, y.dtype)

    def full(self, op, x):
        return F.linear(x, _param(op.weight, x.dtype), _param(op.bias, x.dtype))


class AvgPoolRule(Rule):
    synaptic = True

    def linear(self, op, x):
        return _per_sample(lambda z: F.avg_pool2d(z, op.kernel, op.stride, op.padding), x)


class MeanRule(Rule):
    synaptic = True

    def linear(self, op, x):
        return x.mean(dim=tuple(a + 2 for a in op.axes), keepdim=op.keepdim)


def _real_inputs(inputs):
    return [decode(v) for v in inputs]


class ScaleRule(Rule):
    def __call__(self, op, inputs, ctx):
        y = decode(inputs[0])
        if op.factor != 1.0:
            y = y * op.factor
        return y / op.divisor if op.divisor != 1.0 else y


class BatchNormRule(Rule):
    def __call__(self, op, inputs, ctx):
        x = decode(inputs[0])
        mean, var, weight, bias = (_param(a, x.dtype) for a in (op.mean, op.var, op.weight, op.bias))
        if getattr(op, "frozen", False):  # x * scale + shift, the frozen BN's own rounding
            scale = weight * torch.rsqrt(var + op.eps)
            shift = bias - mean * scale
            view = (-1,) + (1,) * (x.dim() - 3)
            return x * scale.reshape(view) + shift.reshape(view)
        return _per_sample(lambda z: F.batch_norm(z, mean, var, weight, bias, training=False, eps=op.eps), x)


class AddRule(Rule):
    def __call__(self, op, inputs, ctx):
        a, b = _real_inputs(inputs)
        return a + b


class AddConstantRule(Rule):
    def __call__(self, op, inputs, ctx):
        x = decode(inputs[0])
        return x + _param(op.value, x.dtype)


class ReshapeRule(Rule):
    def _apply(self, op, x):
        return x.reshape(tuple(x.shape[:2]) + tuple(op.shape))

    def __call__(self, op, inputs, ctx):
        (x,) = inputs
        if isinstance(x, SpikeValue):
            return x.with_q(self._apply(op, x.q))
        return self._apply(op, x)


class PermuteRule(ReshapeRule):
    def _apply(self, op, x):
        return x.permute((0, 1) + tuple(p + 2 for p in op.perm))


class ConcatRule(Rule):
    def __call__(self, op, inputs, ctx):
        if all(isinstance(v, SpikeValue) for v in inputs):
            first = inputs[0]
            if all(v.encoding == first.encoding and v.window == first.window for v in inputs):
                return first.with_q(torch.cat([v.q for v in inputs], dim=op.axis + 2))
        return torch.cat(_real_inputs(inputs), dim=op.axis + 2)


class NeuronRule(Rule):
    """Run the neuron dynamics on the real input current (from the carried state ``ctx.state``,
    if any); emit q/norm or spikes."""

    def dynamics(self, op, x: torch.Tensor, state=None) -> N.NeuronTrace:  # pragma: no cover - abstract
        raise NotImplementedError

    def __call__(self, op, inputs, ctx):
        x = decode(inputs[0])
        trace = self.dynamics(op, x, ctx.state)
        ctx.neuron = trace
        if op.encoding is None:
            return trace.value
        return SpikeValue(q=trace.q, encoding=op.encoding, window=op.window)


class IntegerLIFRule(NeuronRule):
    def dynamics(self, op, x, state=None):
        leak = op.leak
        if isinstance(leak, tuple):
            leak = torch.tensor(leak, dtype=x.dtype)
        return N.integer_lif(
            x, d=op.d, leaks=leak, reset_norm=op.reset_norm, norm=op.norm, rounding=op.rounding, state=state
        )


class DynamicIntegerLIFRule(NeuronRule):
    def dynamics(self, op, x, state=None):
        return N.dynamic_integer(
            x, d_init=op.d_init, gate_w=op.gate_w, gate_b=op.gate_b, leak=op.leak, rounding=op.rounding, state=state
        )


class BinaryLIFRule(NeuronRule):
    def dynamics(self, op, x, state=None):
        return N.binary_lif(x, beta=op.beta, threshold=op.threshold, state=state)


class FixedIntegerLIFRule(NeuronRule):
    def dynamics(self, op, x, state=None):
        return N.fixed_integer_lif(x, d=op.d, unit=op.unit, reset=op.reset, leak=op.leak,
                                   rounding=op.rounding, state_bits=op.state_bits, state=state)


class FixedDynamicIntegerLIFRule(NeuronRule):
    def dynamics(self, op, x, state=None):
        return N.fixed_dynamic_integer_lif(x, d_init=op.d_init, unit=op.unit, reset=op.reset, sign=op.sign,
                                           thresholds=op.thresholds, leak=op.leak, rounding=op.rounding,
                                           state_bits=op.state_bits, state=state)


class FixedBinaryLIFRule(NeuronRule):
    def dynamics(self, op, x, state=None):
        return N.fixed_binary_lif(x, beta=op.beta, threshold=op.threshold, state_bits=op.state_bits, state=state)


class QuantizeRule(Rule):
    """Host -> device: ``clamp(round_half_even(x * 2**e))`` (the scaling by a power of two is exact)."""

    def __call__(self, op, inputs, ctx):
        x = decode(inputs[0])
        y = torch.round(x * (2.0 ** op.exponent))
        hi = float((1 << (op.bits - 1)) - 1)
        ctx.saturated = int(((y > hi) | (y < -hi)).sum())
        return y.clamp(-hi, hi)


class AttentionRule(Rule):
    """Integer mode: the trained model's float product ``(q @ (k^T v)) * scale``.

    Spike modes (q, k, v are spike counts): ``kv = k^T v`` counts co-occurring unit-spike pairs
    (an exact integer), then the q spikes of each sub-step read rows of that memory:
    ``y = scale * sum_k s_k(q) @ kv``. Integer operands keep this exact in float64.
    """

    @staticmethod
    def _heads(x: torch.Tensor, h: int) -> torch.Tensor:
        T, B, C, Nt = x.shape
        return x.transpose(-1, -2).reshape(T, B, Nt, h, C // h).permute(0, 1, 3, 2, 4)

    @staticmethod
    def _merge(x: torch.Tensor) -> torch.Tensor:
        T, B, H, Nt, c = x.shape
        return x.permute(0, 1, 3, 2, 4).reshape(T, B, Nt, H * c).transpose(-1, -2)

    def __call__(self, op, inputs, ctx):
        q, k, v = inputs
        spiking = [isinstance(t, SpikeValue) for t in inputs]
        if any(spiking) and not all(spiking):
            raise UnsupportedOpError(
                f"attention node {ctx.node_name!r}: q, k, v must all be spikes or all be real"
            )
        h = op.num_heads
        if not all(spiking):
            qh, kh, vh = (self._heads(t, h) for t in (q, k, v))
            return self._merge((qh @ (kh.transpose(-2, -1) @ vh)) * op.scale)
        kv = self._heads(k.q, h).transpose(-2, -1) @ self._heads(v.q, h)
        if q.encoding == "graded":
            acc = self._heads(q.q, h) @ kv
        else:
            acc = None
            for s_k in q.substeps():
                term = self._heads(s_k, h) @ kv
                acc = term if acc is None else acc + term
        return self._merge(acc * op.scale)


class MemoryWriteRule(Rule):
    """Integer mode: ``K^T V`` per head in float (times ``scale`` unless it is 1, so the trained
    model's product is reproduced bit for bit). Spike modes: the same product of spike counts, an
    exact integer count of co-occurring unit-spike pairs, times ``scale``."""

    def __call__(self, op, inputs, ctx):
        k, v = inputs
        spiking = [isinstance(t, SpikeValue) for t in inputs]
        if any(spiking) and not all(spiking):
            raise UnsupportedOpError(f"memory write {ctx.node_name!r}: k and v must both be spikes or both real")
        h = op.num_heads
        kv = AttentionRule._heads(decode(k), h).transpose(-2, -1) @ AttentionRule._heads(decode(v), h)
        return kv if op.scale == 1.0 else kv * op.scale


class MemoryReadRule(Rule):
    """``merge_heads(Q_h @ memory[t]) * scale``; q spikes read memory rows sub-step by sub-step."""

    synaptic = True

    def linear(self, op, x):
        mem = _param(op.memory, x.dtype).unsqueeze(1)  # [T_mem, 1, H, C/H, Cv/H]
        return AttentionRule._merge(AttentionRule._heads(x, op.num_heads) @ mem)

    def offset(self, op, y):
        return y * op.scale


class UpsampleRule(Rule):
    synaptic = True

    def linear(self, op, x):
        ac = op.align_corners if op.mode == "bilinear" else None
        return _per_sample(lambda z: F.interpolate(z, size=tuple(op.size), mode=op.mode, align_corners=ac), x)


class RepeatTimeRule(Rule):
    """``[1, B, *s] -> [times, B, *s]``; spikes are repeated unchanged."""

    def __call__(self, op, inputs, ctx):
        (x,) = inputs
        t = decode(x)
        if t.shape[0] != 1:
            raise SpikedeployError(f"node {ctx.node_name!r}: RepeatTime needs a one-step input, got T={t.shape[0]}")
        y = t.repeat((int(op.times),) + (1,) * (t.dim() - 1))
        return x.with_q(y) if isinstance(x, SpikeValue) else y


class SelectStepRule(Rule):
    """``y = x[step:step + 1]``; spikes are moved unchanged."""

    def __call__(self, op, inputs, ctx):
        (x,) = inputs
        t = decode(x)
        if not op.step < t.shape[0]:
            raise SpikedeployError(f"node {ctx.node_name!r}: SelectStep({op.step}) of a value with T={t.shape[0]}")
        y = t[op.step:op.step + 1]
        return x.with_q(y) if isinstance(x, SpikeValue) else y


class StackStepsRule(Rule):
    """One-step values concatenated along the time axis; spikes stay spikes when all inputs are
    spikes of one encoding and window (else the decoded counts)."""

    def __call__(self, op, inputs, ctx):
        if all(isinstance(v, SpikeValue) for v in inputs):
            first = inputs[0]
            if all(v.encoding == first.encoding and v.window == first.window for v in inputs):
                return first.with_q(torch.cat([v.q for v in inputs], dim=0))
        return torch.cat(_real_inputs(inputs), dim=0)


class GateLinearRule(Rule):
    """A Linear on the last per-step axis, evaluated as the trained model does: ``Conv1d(I, O, 1)``
    on ``[B*C, I, T]`` (time last), then back to ``[T, B, C, O]``."""

    synaptic = True

    @staticmethod
    def _conv(op, x, with_bias):
        T, B, C, I = x.shape
        xf = x.permute(1, 2, 3, 0).reshape(B * C, I, T)
        w = _param(op.weight, x.dtype).unsqueeze(-1)
        b = _param(op.bias, x.dtype) if with_bias else None
        y = F.conv1d(xf, w, b)  # [B*C, O, T]
        return y.reshape(B, C, -1, T).permute(3, 0, 1, 2)

    def linear(self, op, x):
        return self._conv(op, x, False)

    def offset(self, op, y):
        return y if op.bias is None else y + _param(op.bias, y.dtype)

    def full(self, op, x):
        return self._conv(op, x, True)


class GateSoftmaxRule(Rule):
    """HOST: softmax over the time axis, computed on ``[B, *s, T]`` (the trained model's layout)."""

    def __call__(self, op, inputs, ctx):
        x = decode(inputs[0])
        perm = tuple(range(1, x.dim())) + (0,)
        y = F.softmax(x.permute(perm).contiguous(), dim=-1)
        return y.permute((x.dim() - 1,) + tuple(range(x.dim() - 1)))


class TemplateGateRule(Rule):
    """``y[0] = scale * sum_t w[t] * x[t]``, summed as the trained model does (``(x * w).sum`` over
    the template axis of ``[B, C, T, *r]``). Spike modes: the sum over x's unit spikes (binary,
    sub-step by sub-step) or over its graded counts, times ``scale``."""

    @staticmethod
    def _weighted_sum(x, w):
        T, B, C = x.shape[:3]
        r = x.dim() - 3
        xp = x.permute((1, 2, 0) + tuple(range(3, 3 + r)))
        wp = w.permute(1, 2, 0).contiguous().reshape((B, C, T) + (1,) * r)
        return (xp * wp).sum(dim=2).unsqueeze(0)

    def __call__(self, op, inputs, ctx):
        x, w = inputs
        if isinstance(w, SpikeValue):
            raise UnsupportedOpError(f"template gate {ctx.node_name!r}: the gate weights must be real (host softmax)")
        if isinstance(x, SpikeValue) and x.encoding == "binary":
            acc = None
            for s_k in x.substeps():
                term = self._weighted_sum(s_k, w)
                acc = term if acc is None else acc + term
        else:
            acc = self._weighted_sum(decode(x), w)
        return acc if op.scale == 1.0 else acc * op.scale


RULES: Dict[Type[O.Op], Rule] = {}


def register_rule(op_type: Type[O.Op], rule: Rule) -> None:
    """Register the reference rule for an op class; duplicates are rejected."""
    if op_type in RULES:
        raise ValueError(f"a reference rule for {op_type.__name__} is already registered")
    RULES[op_type] = rule


for _t, _r in [
    (O.Conv2d, ConvRule(F.conv2d, 2)),
    (O.Conv1d, ConvRule(F.conv1d, 1)),
    (O.Linear, LinearRule()),
    (O.AvgPool2d, AvgPoolRule()),
    (O.MeanReduce, MeanRule()),
    (O.Scale, ScaleRule()),
    (O.BatchNorm, BatchNormRule()),
    (O.Add, AddRule()),
    (O.AddConstant, AddConstantRule()),
    (O.Reshape, ReshapeRule()),
    (O.Permute, PermuteRule()),
    (O.Concat, ConcatRule()),
    (O.IntegerLIF, IntegerLIFRule()),
    (O.DynamicIntegerLIF, DynamicIntegerLIFRule()),
    (O.BinaryLIF, BinaryLIFRule()),
    (O.SpikeLinearAttention, AttentionRule()),
    (O.MemoryWrite, MemoryWriteRule()),
    (O.MemoryRead, MemoryReadRule()),
    (O.Upsample, UpsampleRule()),
    (O.RepeatTime, RepeatTimeRule()),
    (O.SelectStep, SelectStepRule()),
    (O.StackSteps, StackStepsRule()),
    (O.GateLinear, GateLinearRule()),
    (O.GateSoftmax, GateSoftmaxRule()),
    (O.TemplateGate, TemplateGateRule()),
    (O.Quantize, QuantizeRule()),
    (O.FixedIntegerLIF, FixedIntegerLIFRule()),
    (O.FixedBinaryLIF, FixedBinaryLIFRule()),
    (O.FixedDynamicIntegerLIF, FixedDynamicIntegerLIFRule()),
]:
    register_rule(_t, _r)


# ---------------------------------------------------------------------------------------------
# space-time spike attention (SpikeVideoFormer: SDHA and the dot product over token groups)
# ---------------------------------------------------------------------------------------------


def space_time_groups(x: torch.Tensor, num_heads: int, grouping: str) -> torch.Tensor:
    """``[T, B, C, N]`` -> token groups ``[..., L, C/H]`` of one head grouping (the model's layout,
    :class:`~spikedeploy.models.spikevideoformer_blocks.SpikeHammingAttention`): heads are
    contiguous channel groups; ``spatial`` -> ``[T, B, H, N, c]``, ``temporal`` ->
    ``[B, H, N, T, c]``, ``joint`` -> ``[B, H, T*N, c]`` (tokens in order t, n)."""
    T, B, C, Nt = x.shape
    h = num_heads
    xh = x.reshape(T, B, h, C // h, Nt).transpose(-1, -2)  # [T, B, H, N, c]
    if grouping == "spatial":
        return xh
    if grouping == "temporal":
        return xh.permute(1, 2, 3, 0, 4)
    return xh.permute(1, 2, 0, 3, 4).reshape(B, h, T * Nt, C // h)


def space_time_ungroup(y: torch.Tensor, T: int, grouping: str) -> torch.Tensor:
    """Inverse of :func:`space_time_groups` for one head grouping: -> ``[T, B, H, N, c]``."""
    if grouping == "spatial":
        return y
    if grouping == "temporal":
        return y.permute(3, 0, 1, 2, 4)
    B, h, L, c = y.shape
    return y.reshape(B, h, T, L // T, c).permute(2, 0, 1, 3, 4)


def head_blocks(op: O.SpaceTimeAttention):
    """``[(grouping, first head, last head + 1), ...]``: one block of consecutive heads per grouping
    (factorized: the spatial half, then the temporal half)."""
    out, start = [], 0
    kinds = op.head_groupings()
    for i in range(1, len(kinds) + 1):
        if i == len(kinds) or kinds[i] != kinds[start]:
            out.append((kinds[start], start, i))
            start = i
    return out


class SpaceTimeAttentionRule(Rule):
    """:class:`~spikedeploy.ir.ops.SpikeHammingAttention` / ``SpikeDotAttention`` per head block
    and token group, in the counting form of the op docstrings::

        hamming:  M = 2 (K^T V) - 1^T V;   Y = 2 (Q M) - 1^T M          dot:  Y = Q (K^T V)
        y = Y (scale 1) or Y * scale (once, after the integer Y)

    On real inputs (integer mode) the formulas run on the values; for spikes (binary LIF outputs)
    every term is an integer, so the result equals PyTorch's ``(2Q-1)((2K-1)^T V)`` bit for bit
    (any summation order of integers below 2**53 is exact). Spike modes: ``K^T V`` from the k and
    v counts (co-occurring unit-spike pairs), the q unit spikes read rows of ``M`` sub-step by
    sub-step (binary) or with their counts (graded); the ``-1`` terms once per macro-step."""

    def __call__(self, op, inputs, ctx):
        q, k, v = inputs
        spiking = all(isinstance(t, SpikeValue) for t in inputs)
        kc, vc = decode(k), decode(v)
        T = int(kc.shape[0])
        outs = []
        for grouping, h0, h1 in head_blocks(op):
            c, cv = kc.shape[2] // op.num_heads, vc.shape[2] // op.num_heads
            sl = slice(h0 * c, h1 * c)
            kg = space_time_groups(kc[:, :, sl], h1 - h0, grouping)
            vg = space_time_groups(vc[:, :, h0 * cv:h1 * cv], h1 - h0, grouping)
            kv = kg.transpose(-2, -1) @ vg  # [..., c, cv]: k.v pair counts
            if op.score == "hamming":
                mem = 2.0 * kv - vg.sum(dim=-2, keepdim=True)  # (2K - 1)^T V
                offset = mem.sum(dim=-2, keepdim=True)  # 1^T M: what the -1 of (2Q - 1) subtracts
            else:
                mem, offset = kv, None
            if spiking and q.encoding == "binary":
                acc = None
                for s_k in q.substeps():
                    term = space_time_groups(s_k[:, :, sl], h1 - h0, grouping) @ mem
                    acc = term if acc is None else acc + term
            else:
                acc = space_time_groups(decode(q)[:, :, sl], h1 - h0, grouping) @ mem
            y = acc if offset is None else 2.0 * acc - offset
            outs.append(space_time_ungroup(y, T, grouping))
        out = torch.cat(outs, dim=2) if len(outs) > 1 else outs[0]  # [T, B, H, N, cv]
        Tn, B, h, Nt, cv = out.shape
        out = out.transpose(-1, -2).reshape(Tn, B, h * cv, Nt)
        return out if op.scale == 1.0 else out * op.scale


register_rule(O.SpikeHammingAttention, SpaceTimeAttentionRule())
register_rule(O.SpikeDotAttention, SpaceTimeAttentionRule())


# ---------------------------------------------------------------------------------------------
# executor
# ---------------------------------------------------------------------------------------------


@dataclass
class _Ctx:
    node_name: str = ""
    neuron: Optional[N.NeuronTrace] = None
    saturated: int = 0
    #: the neuron's carried state (None: the fresh start)
    state: Optional[N.NeuronState] = None


#: what a stateful neuron carries: "membrane" (NeuronState(m, q)) or "residual" (NeuronState(U))
STATE_KINDS = ("membrane", "residual")


def stateful_neurons(graph: Graph) -> Dict[str, str]:
    """The neuron nodes of ``graph`` that carry a state from one call to the next, name -> what
    they carry (:data:`STATE_KINDS`): integer LIFs with a leak (``NeuronState(m, q)``) and binary
    LIFs (``NeuronState(U)``). Stateless neurons (leak None) are left out. A neuron whose leak is a
    per-step tuple (NI-LIF) is refused by :func:`check_state` when given a state (its next call's
    first leak is undefined)."""
    out = {}
    for n in graph.neurons():
        if isinstance(n.op, (O.BinaryLIF, O.FixedBinaryLIF)):
            out[n.name] = "residual"
        elif getattr(n.op, "leak", None) is not None:
            out[n.name] = "membrane"
    return out


def check_state(graph: Graph, state, batch: Optional[int] = None) -> Dict[str, N.NeuronState]:
    """``state`` (node name -> NeuronState) checked against ``graph``: every key a stateful neuron
    (:func:`stateful_neurons`) whose leak is not a per-step tuple, every tensor of shape ``[B, *s]``
    (``B`` = ``batch`` when given) and finite, ``q`` present exactly for a membrane state. Each
    problem is an :class:`~spikedeploy.errors.InputError` naming the node."""
    if state is None:
        return {}
    if not isinstance(state, dict):
        raise InputError(f"neuron state must be a dict of neuron node name -> NeuronState, got {type(state).__name__}")
    kinds = stateful_neurons(graph)
    shapes = validate(graph)
    ops = {n.name: n.op for n in graph.nodes}
    out = {}
    for name, st in state.items():
        if name not in kinds:
            what = ("a stateless neuron (leak None): it carries no state" if name in ops and ops[name].is_neuron
                    else "not a neuron of the graph" if name in ops else "not a node of the graph")
            raise InputError(f"neuron state for {name!r}: {what}; stateful neurons: {', '.join(sorted(kinds)) or 'none'}")
        if isinstance(getattr(ops[name], "leak", None), tuple):
            raise InputError(f"neuron state for {name!r}: its leak is per step ({ops[name].label}), so the leak of the "
                             "next call's first step is undefined; this neuron cannot carry state across calls")
        if not isinstance(st, N.NeuronState):
            raise InputError(f"neuron state for {name!r}: expected a NeuronState, got {type(st).__name__}")
        membrane = kinds[name] == "membrane"
        if membrane and st.q is None:
            raise InputError(f"neuron state for {name!r}: an integer LIF state needs q (NeuronState(m, q))")
        if not membrane and st.q is not None:
            raise InputError(f"neuron state for {name!r}: a binary LIF state is NeuronState(m=U) without q")
        parts = [("m", st.m)] + ([("q", st.q)] if membrane else [])
        for part, v in parts:
            v = torch.as_tensor(v)
            expect = list(shapes[name])
            if v.dim() != len(expect) + 1 or list(v.shape[1:]) != expect or (batch is not None and v.shape[0] != batch):
                b = batch if batch is not None else "B"
                raise InputError(f"neuron state for {name!r}: {part} has shape {list(v.shape)}, expected "
                                 f"[{b}, {', '.join(map(str, expect))}] (one step of the neuron)")
            if v.is_floating_point() and not bool(torch.isfinite(v).all()):
                raise InputError(f"neuron state for {name!r}: {part} contains NaN or Inf")
        out[name] = st
    return out


def _as_inputs(graph: Graph, inputs) -> Dict[str, torch.Tensor]:
    if isinstance(inputs, (torch.Tensor, np.ndarray)):
        if len(graph.inputs) != 1:
            raise SpikedeployError(
                f"graph has {len(graph.inputs)} inputs ({[s.name for s in graph.inputs]}); pass a dict"
            )
        inputs = {graph.inputs[0].name: inputs}
    out = {}
    for spec in graph.inputs:
        if spec.name not in inputs:
            raise SpikedeployError(f"missing graph input {spec.name!r}")
        x = torch.as_tensor(inputs[spec.name])
        if x.dim() != len(spec.shape) + 2 or tuple(x.shape[2:]) != tuple(spec.shape):
            raise SpikedeployError(
                f"input {spec.name!r} must have shape [T, B, {', '.join(map(str, spec.shape))}], "
                f"got {list(x.shape)}"
            )
        if spec.steps is not None and x.shape[0] != spec.steps:
            raise SpikedeployError(
                f"input {spec.name!r} must have exactly T={spec.steps} macro-steps (the graph changes the "
                f"time axis with fixed step counts), got T={x.shape[0]}"
            )
        if not torch.isfinite(x).all():
            raise SpikedeployError(f"input {spec.name!r} contains NaN or Inf")
        out[spec.name] = x.contiguous()  # layout-independent: strided inputs would run other conv kernels
    return out


def run(
    graph: Graph,
    inputs,
    *,
    dtype: torch.dtype = torch.float64,
    teacher: Optional[RunResult] = None,
    mode: str = "",
    state: Optional[Dict[str, N.NeuronState]] = None,
) -> RunResult:
    """Execute ``graph`` as it is (integer or lowered) on ``inputs`` (``[T, B, *s]`` tensor, or a
    dict by input name).

    ``state``: the carried neuron states (module docstring; checked by :func:`check_state`); the
    result's ``state`` holds every stateful neuron's final state.

    ``teacher``: teacher forcing. Wherever a node reads the output of a neuron that the teacher
    run also has (same node name), it reads the teacher's output instead (spikes rebuilt from the
    teacher's q), so every neuron layer is checked on the reference's own upstream spikes.
    """
    validate(graph)
    fixed = is_fixed(graph)
    device = device_nodes(graph) if fixed else set()
    dyadic = graph.meta_dict()["fixed_point"].get("dyadic", {}) if fixed else {}
    if fixed and dtype != torch.float64:
        raise SpikedeployError("a fixed-point graph runs in integer arithmetic: use dtype=torch.float64 "
                               "(integers up to 2**53 exactly) for its linear ops")
    values: Dict[str, Value] = {k: v.to(dtype) for k, v in _as_inputs(graph, inputs).items()}
    B = int(next(iter(values.values())).shape[1]) if values else None
    carried = check_state(graph, state, B)
    records: Dict[str, NodeRecord] = {}
    final: Dict[str, N.NeuronState] = {}
    with torch.no_grad():
        for node in graph.nodes:
            rule = RULES.get(type(node.op))
            if rule is None:
                raise UnsupportedOpError(
                    f"node {node.name!r}: no reference rule for op {node.op.kind}; "
                    "register one with spikedeploy.reference.register_rule"
                )
            args = [_teacher_value(teacher, i, values[i], dtype) for i in node.inputs]
            ctx = _Ctx(node_name=node.name, state=carried.get(node.name))
            try:
                out = rule(node.op, args, ctx)
            except ValueError as e:
                if ctx.state is None:
                    raise
                raise InputError(f"neuron state for {node.name!r}: {e}") from None
            values[node.name] = out
            rec = NodeRecord(value=decode(out), spikes=out if isinstance(out, SpikeValue) else None,
                             saturated=ctx.saturated)
            if ctx.neuron is not None:
                rec.q, rec.margin, rec.d = ctx.neuron.q, ctx.neuron.margin, ctx.neuron.d
                rec.saturated = ctx.neuron.saturated
                if ctx.neuron.state is not None:
                    final[node.name] = ctx.neuron.state
            if node.name in device:
                _check_exact_integers(node, rec.value, dyadic.get(node.name, 0))
            records[node.name] = rec
    outputs = {o: decode(values[o]) for o in graph.outputs}
    return RunResult(graph=graph, mode=mode or graph_mode(graph), dtype=dtype, records=records, outputs=outputs,
                     state=final)


#: integers a float64 linear op computes exactly (the fixed-point reference checks every device value)
EXACT_INTEGER_LIMIT = 2.0 ** 53


def is_fixed(graph: Graph) -> bool:
    """True for a fixed-point graph (made by :class:`spikedeploy.passes.QuantizeFixedPoint`)."""
    return "fixed_point" in graph.meta_dict()


def device_nodes(graph: Graph) -> set:
    """The nodes of a fixed-point graph that run on the device: the ``Quantize`` boundaries, the
    neurons and everything downstream of them (the rest is host arithmetic on real values)."""
    device: set = set()
    for n in graph.nodes:
        if isinstance(n.op, (O.Quantize,) + O.NEURON_OPS) or any(i in device for i in n.inputs):
            device.add(n.name)
    return device


def _check_exact_integers(node, value: torch.Tensor, s: int = 0) -> None:
    """In a fixed-point graph every device value is an integer: linear ops run as float64 kernels
    on integer data (exact below 2**53; checked here), neurons in int64. A weight-free op with
    dyadic weights (pooling, mean, upsampling) is a multiple of ``2**-s``, made an integer by the
    ``Scale(2**s)`` after it."""
    if not value.is_floating_point() or value.numel() == 0:
        return
    if s:
        value = value * (2.0 ** s)
    if not bool(torch.all(value == torch.round(value))) or float(value.abs().max()) >= EXACT_INTEGER_LIMIT:
        raise SpikedeployError(f"fixed-point node {node.name!r} ({node.op.kind}) computed a value that is not an exact "
                               "integer: the graph was not quantized by spikedeploy.passes.QuantizeFixedPoint")


def _teacher_value(teacher: Optional[RunResult], name: str, own: Value, dtype) -> Value:
    """Teacher forcing acts on neuron outputs only: between two neuron layers the lowered graph
    computes its own values (after lowering they carry other scale factors than the integer
    graph's), from the teacher's spikes."""
    if teacher is None or name not in teacher.records or teacher.records[name].q is None:
        return own
    rec = teacher.records[name]
    if isinstance(own, SpikeValue):
        return own.with_q(rec.q.to(dtype))
    return rec.value.to(dtype)


def graph_mode(graph: Graph) -> str:
    encodings = {getattr(n.op, "encoding", None) for n in graph.neurons()}
    if encodings <= {None}:
        return "integer"
    if len(encodings) == 1:
        return encodings.pop()
    return "mixed"


def execute(graph: Graph, inputs, mode: str = "integer", *, dtype=torch.float64, teacher=None,
            state: Optional[Dict[str, N.NeuronState]] = None) -> RunResult:
    """Run ``graph`` in ``mode`` ("integer", "binary" or "graded"), lowering it first if the graph
    is an integer graph and a spike mode is asked for. ``state``: as :func:`run` (lowering keeps
    the neuron node names)."""
    if mode not in MODES:
        raise SpikedeployError(f"unknown execution mode {mode!r}; expected one of {MODES}")
    current = graph_mode(graph)
    if current != mode:
        if current != "integer":
            raise SpikedeployError(f"graph is already lowered to {current!r}; cannot run it as {mode!r}")
        from spikedeploy.passes.expand import ExpandSpikes

        lowered = ExpandSpikes(mode).apply(graph)
        result = run(lowered, inputs, dtype=dtype, teacher=teacher, mode=mode, state=state)
        # the pass may insert a Scale after an output neuron; report outputs under the original names
        result.outputs = dict(zip(graph.outputs, result.outputs.values()))
        return result
    return run(graph, inputs, dtype=dtype, teacher=teacher, mode=mode, state=state)
