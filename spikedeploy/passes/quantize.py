"""QuantizeFixedPoint: a lowered graph in Loihi 2 number formats (design notes §5, issue 14).

The pass takes a lowered graph (after :class:`~spikedeploy.passes.ExpandSpikes`) and returns the
same network in integers, the formats of lava-nc's own ``fixed_pt`` process models:

* **weights**: a signed ``weight_bits``-bit mantissa (default 8, lava-nc ``Dense``/``Sparse``
  ``num_weight_bits``) with one exponent per synapse group (per IR op: a layer);
* **neuron state**: 24-bit signed (lava-nc ``PyLifModelBitAcc`` ``u``/``v`` ``precision=24``),
  saturating and every clamp counted (Loihi's simulator wraps; wrapping silently is not an option
  here);
* **bias**: a 13-bit signed mantissa and a 3-bit exponent (0..7) per neuron (``bias_mant``
  ``precision=13``, ``bias_exp`` ``precision=3``), added once per macro-step;
* **leak**: a 12-bit fraction of 4096 (``du``/``dv`` ``precision=12``, ``decay_shift = 12``):
  NI-LIF's per-step sigmoid leaks, I-LIF's 0.25 (= 1024, exact), the IF's 1 (= 4096, exact);
* **thresholds**: the rounding boundaries ``k + 1/2`` of the integer neurons and the clamp at D in
  state units (``unit = 2**f`` per neuron layer, so every boundary is an integer and the tie rule
  of each neuron is applied exactly), the normalized-spike reset ``unit / reset_norm``.

Units
-----
Every device value ``v`` is an integer in units of ``2**-f_v`` (``f_v`` its *exponent*: the float
value is ``v * 2**-f_v``); spike counts have exponent 0. Conversions are exact: exponents only grow
along an edge (a left shift, a ``Scale`` by a power of two) and every weight is an integer
``mantissa * 2**e`` with ``e >= 0`` in the units of its output, so every linear op (and every
composition of them that a backend performs) computes exact integers. Rounding happens in exactly
three places: the quantization of the parameters (here, reported per layer), the host -> device
boundary (:class:`~spikedeploy.ir.ops.Quantize`, round half to even), and the neuron's decay
(Loihi's truncation). A backend that follows the IR is therefore exact against the fixed-point
reference: there are no ties.

Calibration (the documented rule)
---------------------------------
Each device value gets the largest exponent its calibrated range allows, with ``headroom``
(default 4: two bits of the state left free)::

    A_v = floor(log2((2**(state_bits - 1) - 1) / (headroom * max|v|)))

where ``max|v|`` is measured by running the float graph on the calibration inputs (a neuron's
state: the sum over steps of ``|x_t|`` plus D, a bound of its membrane). Exponents only grow along
exact edges, so a value that is aligned into a residual add, routed, pooled (``+s``) or fed to a
neuron may not exceed what its consumers allow: ``A'_v = min(A_v, A'_c - s_c)`` over those
consumers, computed backwards. A layer that re-quantizes (a weighted synapse, a constant scale, an
attention or memory scale, the host boundary) outputs at ``f_out = max(A'_out, f_in)``; its
weights are ``mantissa * 2**e`` (``e >= 0``) with a ``weight_bits``-bit mantissa, so a layer has
its full mantissa whenever the range allows ``f_out >= f_in - e_w``, ``e_w = ceil(log2(max|W| /
(2**(bits-1) - 1)))`` (the exponent a float weight of that layer needs); otherwise its mantissa
is narrower (``mantissa_max`` in the plan). Residual adds align to the larger input exponent.
Values that still do not fit (e.g. a spike path's large count) are listed as ``range_violations``
and their saturation is counted when the graph runs.

The plan (graph metadata ``fixed_point``)
-----------------------------------------
``weight_bits``, ``state_bits``, ``headroom``; ``exponents`` (every device value); ``outputs`` (name -> exponent, to
decode results: :func:`decode_outputs`); ``memory`` (MemoryRead node -> its static memory
exponent, for :func:`quantize_memory` when templates change); ``layers`` (per quantized node:
exponents, mantissa range, weight/bias errors, clipped parameters); ``range_violations``; ``dyadic`` (the weight-free ops whose value is a multiple of ``2**-s``, made
an integer by the ``Scale(2**s)`` that follows them).

DI-LIF becomes :class:`~spikedeploy.ir.ops.FixedDynamicIntegerLIF`: the I-LIF's formats plus the
gate as integer thresholds on the layer's integer input sum (:func:`spikedeploy.ir.ops.dilif_thresholds`,
float64 once here; no sigmoid on the device); its plan entry counts the calibration steps whose D
from the thresholds differs from the float DI-LIF's (``d_differs`` of ``d_steps``: the thresholds'
rounding to integers, mu within one state unit / N of a gate boundary).

Not yet in fixed point (refused with the node named): the time-axis ops of SpikeTrack
T = 3 (RepeatTime, SelectStep, StackSteps, GateLinear, GateSoftmax, TemplateGate), BatchNorm on
the device (fold it first), pooling/mean/upsampling whose weights are not dyadic fractions.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Dict, List, Mapping, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from spikedeploy.errors import ConfigError, UnsupportedOpError
from spikedeploy.ir import ops as O
from spikedeploy.ir.graph import Graph, Node
from spikedeploy.passes.base import Pass

__all__ = ["QuantizeFixedPoint", "FixedPointError", "check_quantizable", "dilif_calibration", "WEIGHT_BITS", "BIAS_MANTISSA_BITS", "BIAS_EXPONENT_MAX",
           "decode_outputs", "quantize_memory", "fixed_plan", "quantize_graph"]

#: Loihi 2 synaptic weights: 8-bit signed mantissa (lava-nc ``Dense``/``Sparse`` ``num_weight_bits``)
WEIGHT_BITS = 8
#: neuron bias: 13-bit signed mantissa, exponent 0..7 (lava-nc LIF ``bias_mant``/``bias_exp``)
BIAS_MANTISSA_BITS = 13
BIAS_EXPONENT_MAX = 7
#: default headroom of the calibration rule: two bits of the state left free
HEADROOM = 4.0
#: a static memory exponent leaves one bit for templates larger than the calibration template
MEMORY_HEADROOM = 2.0
#: the largest base exponent tried (2**24 state units per membrane unit is more than 24 bits hold)
MAX_EXPONENT = 24

_UNSUPPORTED = (O.RepeatTime, O.SelectStep, O.StackSteps, O.GateLinear, O.GateSoftmax,
                O.TemplateGate, O.BatchNorm)


class FixedPointError(ConfigError):
    """A graph or option that cannot be put in fixed point (the message names the node and the
    reason; bad input: exit code 2)."""


def check_weight_bits(bits, name: str = "--weight-bits") -> int:
    """``bits`` if it is a valid weight mantissa width (an integer in 2..16), else a one-line
    FixedPointError naming the option ``name``."""
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or not 2 <= bits <= 16:
        raise FixedPointError(f"{name} must be an integer in 2..16 (Loihi 2 holds 8), got {bits!r}")
    return int(bits)


def _device_nodes(graph: Graph) -> set:
    """The nodes of a float graph that fixed point puts on the device: the neurons and everything
    downstream of them (the ops before the first neuron, e.g. the stem on pixels, stay host float)."""
    device: set = set()
    for n in graph.nodes:
        if n.op.is_neuron or any(i in device for i in n.inputs):
            device.add(n.name)
    return device


def check_quantizable(graph: Graph) -> None:
    """Refuse, before any work, a graph with a device op that has no fixed-point form yet
    (UnsupportedOpError naming the node); :class:`QuantizeFixedPoint` makes this check first."""
    device = _device_nodes(graph)
    for n in graph.nodes:
        if n.name in device and isinstance(n.op, _UNSUPPORTED):
            raise UnsupportedOpError(f"node {n.name!r}: op {n.op.kind} has no fixed-point form yet; export it "
                                     "with --precision float")


def fixed_plan(graph: Graph) -> dict:
    """The quantization plan of a fixed-point graph (FixedPointError for a float graph)."""
    plan = graph.meta_dict().get("fixed_point")
    if plan is None:
        raise FixedPointError(f"graph {graph.meta_dict().get('name', '')!r} is not a fixed-point graph "
                              "(quantize it with spikedeploy.passes.QuantizeFixedPoint)")
    return plan


def decode_outputs(graph: Graph, outputs: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Integer outputs of a fixed-point graph as real values (``v * 2**-exponent``, exact)."""
    exps = fixed_plan(graph)["outputs"]
    return {k: v.to(torch.float64) * (2.0 ** -int(exps[k])) for k, v in outputs.items()}


def _mantissa_exponent(max_abs: float, bits: int) -> int:
    """The smallest e with ``max_abs / 2**e <= 2**(bits-1) - 1``."""
    if max_abs <= 0:
        return 0
    top = (1 << (bits - 1)) - 1
    e = math.ceil(math.log2(max_abs / top))
    while max_abs / 2.0 ** e > top:  # float log2 at exact powers
        e += 1
    while e > -1074 and max_abs / 2.0 ** (e - 1) <= top:
        e -= 1
    return e


def _quantize_array(a: np.ndarray, exponent: int, bits: int) -> Tuple[np.ndarray, int]:
    """``clip(round_half_even(a / 2**exponent))`` to a signed ``bits``-bit mantissa, and the number
    of clipped entries."""
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    m = np.round(np.asarray(a, dtype=np.float64) / 2.0 ** exponent)
    clipped = int(((m < lo) | (m > hi)).sum())
    return np.clip(m, lo, hi), clipped


def quantize_memory(graph: Graph, node: str, memory: np.ndarray) -> Tuple[np.ndarray, int]:
    """The integer mantissas a MemoryRead ``node`` of the fixed-point ``graph`` holds for a new
    (real-valued) ``memory``: ``clip(round(memory * 2**k))`` with the node's static exponent ``k``
    from the plan; returns ``(mantissas, clipped)`` (entries clamped to the weight width)."""
    plan = fixed_plan(graph)
    if node not in plan["memory"]:
        raise FixedPointError(f"node {node!r} is not a MemoryRead of this fixed-point graph")
    k = int(plan["memory"][node])
    return _quantize_array(memory, -k, int(plan["weight_bits"]))


def _dyadic_exponent(values: np.ndarray, limit: int = 30) -> Optional[int]:
    """The smallest s >= 0 with every ``values * 2**s`` an integer (None if none up to ``limit``)."""
    v = np.asarray(values, dtype=np.float64)
    for s in range(limit + 1):
        w = v * 2.0 ** s
        if np.array_equal(w, np.round(w)):
            return s
    return None


def _interp_weights(n_in: int, n_out: int, op: O.Upsample) -> np.ndarray:
    """Weights of PyTorch's 1-D interpolation of ``op``'s mode (bilinear is separable)."""
    eye = torch.eye(n_in, dtype=torch.float64).reshape(n_in, 1, n_in, 1)
    if op.mode == "nearest":
        y = F.interpolate(eye, size=(n_out, 1), mode="nearest")
    else:
        y = F.interpolate(eye, size=(n_out, 1), mode="bilinear", align_corners=op.align_corners)
    return y.numpy()


def _dyadic_shift(n: Node, shapes) -> Tuple[int, str]:
    """``(s, description)`` of a weight-free op whose weights are multiples of ``2**-s`` (pooling,
    mean, upsampling); FixedPointError naming the node when they are not dyadic fractions."""
    op = n.op
    if isinstance(op, (O.AvgPool2d, O.MeanReduce)):
        if isinstance(op, O.AvgPool2d):
            k, what = op.kernel[0] * op.kernel[1], "average pooling"
        else:
            k, what = int(np.prod([shapes[n.inputs[0]][a] for a in op.axes])), "the mean"
        s = _dyadic_exponent(np.array([1.0 / k]))
        if s is None:
            raise FixedPointError(f"node {n.name!r}: {what} over {k} values divides by {k}, not a power of two; "
                                  "fixed point needs dyadic weights (export with --precision float)")
        return s, f"1/{k}"
    c, h, w = shapes[n.inputs[0]]
    sh = _dyadic_exponent(_interp_weights(h, op.size[0], op))
    sw = _dyadic_exponent(_interp_weights(w, op.size[1], op))
    if sh is None or sw is None:
        raise FixedPointError(f"node {n.name!r}: {op.mode} upsampling {h}x{w} -> {op.size[0]}x{op.size[1]} has "
                              "interpolation weights that are not dyadic fractions (export with --precision float)")
    return sh + sw, f"{op.mode}, multiples of 2**-{sh + sw}"


class _Builder:
    """Builds the fixed-point graph node by node; ``allowed[v]`` is the calibrated exponent bound
    ``A'_v`` of each float value (module docstring)."""

    def __init__(self, graph: Graph, allowed: Dict[str, int], bits: int, state_bits: int, spikes: set, host: set,
                 shifts: Dict[str, Tuple[int, str]], shapes: Optional[dict] = None):
        self.graph, self.allowed, self.bits, self.state_bits = graph, allowed, bits, state_bits
        self.shapes = shapes if shapes is not None else graph.shapes()
        self.spikes, self.host, self.shifts = spikes, host, shifts
        self.nodes: List[Node] = []
        self.exp: Dict[str, int] = {}
        self.origin: Dict[str, str] = {}  # new value -> the float graph's value it carries (scaled)
        self.layers: Dict[str, dict] = {}
        self.memory: Dict[str, int] = {}
        self.dyadics: Dict[str, int] = {}  # weight-free op -> s: its value is a multiple of 2**-s
        self.checks: List[Tuple[str, str, int]] = []  # (new value, float value for its range, exponent)
        self.taken = {s.name for s in graph.inputs} | {n.name for n in graph.nodes}
        self.memo: Dict[Tuple[str, int], str] = {}

    def fresh(self, base: str) -> str:
        name, k = base, 1
        while name in self.taken:
            name, k = f"{base}{k}", k + 1
        self.taken.add(name)
        return name

    def emit(self, name: str, op: O.Op, inputs, source: str, exp: Optional[int], origin: str) -> str:
        self.nodes.append(Node(name, op, tuple(inputs), source))
        if exp is not None:
            self.exp[name] = exp
            self.origin[name] = origin
            self.checks.append((name, origin, exp))
        return name

    def read(self, v: str) -> Tuple[str, int]:
        """The name a device op reads for value ``v`` and its exponent (host values cross the
        boundary through one ``Quantize`` at the exponent its range allows)."""
        if v in self.spikes:
            return v, 0
        if v in self.host:
            key = (v, -1)
            f = self.allowed[v]
            if key not in self.memo:
                self.memo[key] = self.emit(self.fresh(f"{v}.fixed"), O.Quantize(exponent=f, bits=self.state_bits),
                                           (v,), "QuantizeFixedPoint", f, v)
            return self.memo[key], f
        return v, self.exp[v]

    def align(self, v: str, f: int) -> str:
        """``v`` (a device value) at exponent ``f >= exp(v)``: a left shift (Scale by 2**k)."""
        name, fv = self.read(v)
        if fv == f:
            return name
        if fv > f:
            raise AssertionError(f"cannot lower the exponent of {v} from {fv} to {f} exactly")
        key = (name, f)
        if key not in self.memo:
            self.memo[key] = self.emit(self.fresh(f"{name}.align{f}"), O.Scale(factor=float(2 ** (f - fv))), (name,),
                                       "QuantizeFixedPoint", f, self.origin.get(name, v))
        return self.memo[key]

    # -- rules ------------------------------------------------------------------------------

    def weighted(self, n: Node) -> None:
        op = n.op
        src, f_in = self.read(n.inputs[0])
        w = np.asarray(op.weight, dtype=np.float64)
        wmax = float(np.abs(w).max()) if w.size else 0.0
        e_w = _mantissa_exponent(wmax, self.bits)
        f_out = max(self.allowed[n.name], f_in)
        ws = w * 2.0 ** (f_out - f_in)
        e = max(0, _mantissa_exponent(float(np.abs(ws).max()) if ws.size else 0.0, self.bits))
        m, clipped = _quantize_array(ws, e, self.bits)
        w_int = m * 2.0 ** e
        info = {"kind": op.kind, "in_exponent": f_in, "out_exponent": f_out, "weight_exponent": e - (f_out - f_in),
                "full_mantissa": bool(f_out >= f_in - e_w),
                "mantissa_max": int(np.abs(m).max()) if m.size else 0, "weight_clipped": clipped,
                "weight_error_max": float(np.abs(w - w_int * 2.0 ** (f_in - f_out)).max() / wmax) if wmax else 0.0,
                "weight_error_rms": float(np.sqrt(np.mean((w - w_int * 2.0 ** (f_in - f_out)) ** 2))
                                          / max(np.sqrt(np.mean(w ** 2)), 1e-300)) if wmax else 0.0}
        kw = {"weight": w_int}
        if getattr(op, "bias", None) is not None:
            b_int, b_info = self.bias(op.bias, f_out)
            kw["bias"] = b_int
            info.update(b_info)
        self.layers[n.name] = info
        self.emit(n.name, replace(op, **kw), (src,), n.source, f_out, n.name)

    def bias(self, b: np.ndarray, f: int) -> Tuple[np.ndarray, dict]:
        """Per-channel bias as ``mantissa * 2**exp`` (13-bit mantissa, exponent 0..7) in units f."""
        bs = np.asarray(b, dtype=np.float64) * 2.0 ** f
        top = (1 << (BIAS_MANTISSA_BITS - 1)) - 1
        with np.errstate(divide="ignore"):
            e = np.ceil(np.log2(np.maximum(np.abs(bs), 1e-300) / top))
        e = np.clip(e, 0, BIAS_EXPONENT_MAX)
        m = np.round(bs / 2.0 ** e)
        clipped = int(((m < -top - 1) | (m > top)).sum())
        b_int = np.clip(m, -top - 1, top) * 2.0 ** e
        err = np.abs(b_int - bs) * 2.0 ** -f
        return b_int, {"bias_clipped": clipped, "bias_error_max": float(err.max()) if err.size else 0.0}

    def dyadic(self, n: Node, denominators: int, what: str) -> None:
        """A weight-free op whose weights are multiples of ``2**-s`` (pooling, mean, upsampling): the
        op itself, then ``Scale(2**s)``, which makes the result an integer at exponent f_in + s."""
        src, f_in = self.read(n.inputs[0])
        s = denominators
        inner = self.emit(self.fresh(f"{n.name}.dyadic"), n.op, (src,), n.source, None, n.name)
        self.dyadics[inner] = s
        self.layers[n.name] = {"kind": n.op.kind, "in_exponent": f_in, "out_exponent": f_in + s, "weights": what}
        self.emit(n.name, O.Scale(factor=float(2 ** s)), (inner,), "QuantizeFixedPoint", f_in + s, n.name)

    def constant(self, name: str, c: float, f_in: int) -> Tuple[float, int, dict]:
        """A constant factor (a one-element weight) from exponent ``f_in`` to the output's: the
        integer factor, the output exponent and the plan entry."""
        f_out = max(self.allowed[name], f_in)
        cs = c * 2.0 ** (f_out - f_in)
        e = max(0, _mantissa_exponent(abs(cs), self.bits))
        m = float(np.round(cs / 2.0 ** e)) * 2.0 ** e
        err = abs(m * 2.0 ** (f_in - f_out) - c) / abs(c) if c else 0.0
        return m, f_out, {"in_exponent": f_in, "out_exponent": f_out, "constant": c, "constant_error": err}

    def scale_const(self, n: Node, c: float, src: str, f_in: int, make) -> None:
        m, f_out, info = self.constant(n.name, c, f_in)
        self.layers[n.name] = {"kind": n.op.kind, **info}
        self.emit(n.name, make(m), (src,), n.source, f_out, n.name)

    def neuron(self, n: Node) -> None:
        op = n.op
        src, f = self.read(n.inputs[0])
        if isinstance(op, O.DynamicIntegerLIF):
            new, src, f = self.dynamic_neuron(n, src, f)
        elif isinstance(op, O.IntegerLIF):
            stateful = op.leak is not None
            r = float(op.reset_norm)
            f_min = max(1, math.ceil(math.log2(r))) if stateful and r > 1 else 1
            if f < f_min:
                src, f = self.align(n.inputs[0], f_min), f_min
            unit = 1 << f
            lk = op.leak if isinstance(op.leak, tuple) else ((op.leak,) if stateful else ())
            for x in lk:
                if not 0.0 <= x <= 1.0:
                    raise FixedPointError(f"node {n.name!r} ({op.label}): leak {x} is outside [0, 1]; a 12-bit "
                                          "decay fraction cannot represent it")
            lq = tuple(int(round(x * 4096)) for x in lk)
            leak = lq if isinstance(op.leak, tuple) else (lq[0] if stateful else None)
            reset = int(round(unit / r))
            try:
                new = O.FixedIntegerLIF(d=op.d, unit=unit, reset=reset, leak=leak, rounding=op.rounding, label=op.label,
                                        encoding=op.encoding, norm=op.norm, state_bits=self.state_bits)
            except ValueError as e:
                raise FixedPointError(f"node {n.name!r} ({op.label}): {e}") from None
            self.layers[n.name] = {"kind": op.kind, "label": op.label, "in_exponent": f, "unit": unit, "reset": reset,
                                   "reset_error": abs(reset / unit - 1.0 / r), "leak": list(lq),
                                   "leak_error_max": max((abs(a / 4096 - b) for a, b in zip(lq, lk)), default=0.0)}
        else:  # BinaryLIF
            if not 0.0 <= op.beta <= 1.0:
                raise FixedPointError(f"node {n.name!r} (binary LIF): beta {op.beta} is outside [0, 1]")
            f = max(f, 1)
            src = self.align(n.inputs[0], f)
            th = max(1, int(round(op.threshold * 2.0 ** f)))
            beta = int(round(op.beta * 4096))
            new = O.FixedBinaryLIF(beta=beta, threshold=th, label=op.label, encoding=op.encoding,
                                   state_bits=self.state_bits)
            self.layers[n.name] = {"kind": op.kind, "label": op.label, "in_exponent": f, "threshold": th,
                                   "threshold_error": abs(th * 2.0 ** -f - op.threshold), "beta": beta,
                                   "leak_error_max": abs(beta / 4096 - op.beta)}
        self.checks.append((src, f"{n.name}#state", f))
        self.emit(n.name, new, (src,), n.source, None, n.name)

    def dynamic_neuron(self, n: Node, src: str, f: int) -> Tuple[O.FixedDynamicIntegerLIF, str, int]:
        """DI-LIF -> FixedDynamicIntegerLIF: the I-LIF's formats (unit 2**f, f >= 1; reset = unit:
        DI-LIF subtracts q; the leak as a 12-bit fraction) and the gate's integer thresholds."""
        op = n.op
        if f < 1:
            src, f = self.align(n.inputs[0], 1), 1
        unit = 1 << f
        leak = None
        if op.leak is not None:
            if not 0.0 <= op.leak <= 1.0:
                raise FixedPointError(f"node {n.name!r} ({op.label}): leak {op.leak} is outside [0, 1]; a 12-bit "
                                      "decay fraction cannot represent it")
            leak = int(round(op.leak * 4096))
        nf = int(math.prod(self.shapes[n.name]))
        sign, th = O.dilif_thresholds(op.d_init, op.gate_w, op.gate_b, nf, unit)
        try:
            new = O.FixedDynamicIntegerLIF(d_init=op.d_init, unit=unit, reset=unit, n_features=nf, sign=sign,
                                           thresholds=np.array(th, dtype=np.float64), leak=leak, rounding=op.rounding, gate_w=float(op.gate_w),
                                           gate_b=float(op.gate_b), label=op.label, encoding=op.encoding,
                                           state_bits=self.state_bits)
        except ValueError as e:
            raise FixedPointError(f"node {n.name!r} ({op.label}): {e}") from None
        self.layers[n.name] = {"kind": op.kind, "label": op.label, "in_exponent": f, "unit": unit, "reset": unit,
                               "reset_error": 0.0, "leak": [] if leak is None else [leak],
                               "leak_error_max": 0.0 if leak is None else abs(leak / 4096 - op.leak),
                               "n_features": nf, "gate_sign": sign, "thresholds": [int(v) for v in th]}
        return new, src, f

    def node(self, n: Node) -> None:
        op = n.op
        if n.name in self.host:
            self.nodes.append(n)
            return
        if isinstance(op, (O.Conv2d, O.Conv1d, O.Linear)):
            self.weighted(n)
        elif isinstance(op, (O.AvgPool2d, O.MeanReduce, O.Upsample)):
            self.dyadic(n, *self.shifts[n.name])
        elif isinstance(op, O.Scale):
            src, f = self.read(n.inputs[0])
            self.scale_const(n, op.factor / op.divisor, src, f, lambda m: O.Scale(factor=m))
        elif isinstance(op, (O.Add, O.Concat)):
            reads = [self.read(i) for i in n.inputs]
            if isinstance(op, O.Concat) and all(i in self.spikes for i in n.inputs):
                self.emit(n.name, op, [r[0] for r in reads], n.source, None, n.name)
                return
            f = max(r[1] for r in reads)
            self.emit(n.name, op, [self.align(i, f) for i in n.inputs], n.source, f, n.name)
        elif isinstance(op, O.AddConstant):
            src, f = self.read(n.inputs[0])
            v = np.round(np.asarray(op.value) * 2.0 ** f)
            self.layers[n.name] = {"kind": op.kind, "in_exponent": f, "out_exponent": f,
                                   "constant_error_max": float(np.abs(v * 2.0 ** -f - op.value).max()) if v.size else 0.0}
            self.emit(n.name, replace(op, value=v), (src,), n.source, f, n.name)
        elif isinstance(op, (O.Reshape, O.Permute)):
            src, f = self.read(n.inputs[0])
            self.emit(n.name, op, (src,), n.source, None if n.inputs[0] in self.spikes else f, n.name)
        elif isinstance(op, (O.IntegerLIF, O.BinaryLIF, O.DynamicIntegerLIF)):
            if op.encoding is None:
                raise FixedPointError(f"node {n.name!r}: lower the graph to spikes (ExpandSpikes) before QuantizeFixedPoint")
            self.neuron(n)
        elif isinstance(op, (O.SpikeLinearAttention, O.MemoryWrite, O.SpikeHammingAttention, O.SpikeDotAttention)):
            for i in n.inputs:
                if i not in self.spikes:
                    raise FixedPointError(f"node {n.name!r} ({op.kind}): input {i!r} is not a spike train")
            m, f_out, info = self.constant(n.name, op.scale, 0)
            self.layers[n.name] = {"kind": op.kind, **info}
            self.emit(n.name, replace(op, scale=m), n.inputs, n.source, f_out, n.name)
        elif isinstance(op, O.MemoryRead):
            if n.inputs[0] not in self.spikes:
                raise FixedPointError(f"node {n.name!r} (MemoryRead): its query is not a spike train")
            mem = np.asarray(op.memory, dtype=np.float64)
            mmax = float(np.abs(mem).max()) * MEMORY_HEADROOM
            k_mem = -_mantissa_exponent(mmax, self.bits) if mmax > 0 else 0
            q, clipped = _quantize_array(mem, -k_mem, self.bits)
            m, f_out, info = self.constant(n.name, op.scale, k_mem)
            self.memory[n.name] = k_mem
            self.layers[n.name] = {"kind": op.kind, **info, "memory_exponent": k_mem, "weight_clipped": clipped,
                                   "weight_error_max": float(np.abs(q * 2.0 ** -k_mem - mem).max() / (mmax / MEMORY_HEADROOM))
                                   if mmax else 0.0}
            self.emit(n.name, replace(op, memory=q, scale=m), n.inputs, n.source, f_out, n.name)
        else:
            raise UnsupportedOpError(f"node {n.name!r}: op {op.kind} has no fixed-point rule")


class QuantizeFixedPoint(Pass):
    """Lowered graph -> the same network in Loihi 2 fixed-point formats (module docstring).

    ``calibration``: sample inputs (a ``[T, B, *s]`` tensor or a dict by input name) on which the
    float graph is run to measure value ranges. ``weight_bits``: the weight mantissa width (2..8;
    Loihi 2 holds 8)."""

    name = "quantize-fixed"

    def __init__(self, calibration, *, weight_bits: int = WEIGHT_BITS, state_bits: int = O.STATE_BITS,
                 headroom: float = HEADROOM):
        weight_bits = check_weight_bits(weight_bits)
        if not headroom >= 1:
            raise FixedPointError(f"headroom must be >= 1, got {headroom}")
        self.calibration, self.bits, self.state_bits = calibration, weight_bits, state_bits
        self.headroom = float(headroom)
        self.name = f"quantize-fixed[w{weight_bits}]"

    def run(self, graph: Graph) -> Graph:
        from spikedeploy.reference import is_fixed, run as run_reference

        if is_fixed(graph):
            raise FixedPointError("graph is already in fixed point")
        for n in graph.neurons():
            if n.op.encoding is None:
                raise FixedPointError(f"node {n.name!r}: lower the graph to spikes (ExpandSpikes) before "
                                      "QuantizeFixedPoint")
        check_quantizable(graph)
        device = _device_nodes(graph)
        shapes = graph.shapes()
        shifts = {n.name: _dyadic_shift(n, shapes) for n in graph.nodes
                  if n.name in device and isinstance(n.op, (O.AvgPool2d, O.MeanReduce, O.Upsample))}
        cal = run_reference(graph, self.calibration, dtype=torch.float64)
        ranges: Dict[str, float] = {}
        for name, rec in cal.records.items():
            if rec.spikes is None:
                ranges[name] = float(rec.value.abs().max()) if rec.value.numel() else 0.0
        cal_inputs = self.calibration if isinstance(self.calibration, Mapping) else {graph.inputs[0].name: self.calibration}
        for s in graph.inputs:
            ranges[s.name] = float(torch.as_tensor(cal_inputs[s.name]).abs().max())
        for n in graph.neurons():
            i = n.inputs[0]
            x = cal.records[i].value if i in cal.records else torch.as_tensor(cal_inputs[i], dtype=torch.float64)
            ranges[f"{n.name}#state"] = float(x.abs().sum(0).max()) + float(n.op.d) if x.numel() else float(n.op.d)
        spikes = {name for name, rec in cal.records.items() if rec.spikes is not None}
        host = {n.name for n in graph.nodes if n.name not in device} | {s.name for s in graph.inputs}

        limit = ((1 << (self.state_bits - 1)) - 1) / self.headroom

        def fits(mx: float) -> int:
            return min(MAX_EXPONENT, math.floor(math.log2(limit / mx))) if mx > 0 else MAX_EXPONENT

        allowed = {v: fits(mx) for v, mx in ranges.items()}
        # a bias (or a constant added once per macro-step) must fit mantissa * 2**exp at the
        # output's exponent: 13-bit mantissa, exponent <= 7
        bias_top = ((1 << (BIAS_MANTISSA_BITS - 1)) - 1) * 2 ** BIAS_EXPONENT_MAX
        for n in graph.nodes:
            if n.name not in device:
                continue
            b = getattr(n.op, "bias", None) if not isinstance(n.op, O.AddConstant) else n.op.value
            if isinstance(b, np.ndarray) and b.size and float(np.abs(b).max()) > 0:
                fit = math.floor(math.log2(bias_top / float(np.abs(b).max())))
                allowed[n.name] = min(allowed.get(n.name, MAX_EXPONENT), fit)
        # backwards: a value may not exceed what the consumers it flows into exactly allow
        for n in reversed(graph.nodes):
            op = n.op
            if n.name not in device:
                continue
            if isinstance(op, (O.Add, O.Concat, O.Reshape, O.Permute)):
                bound = allowed.get(n.name, MAX_EXPONENT)
            elif isinstance(op, (O.AvgPool2d, O.MeanReduce, O.Upsample)):
                bound = allowed.get(n.name, MAX_EXPONENT) - shifts[n.name][0]
            elif op.is_neuron:
                unit_cap = (self.state_bits - 1) - math.ceil(math.log2(op.d + 2))
                bound = min(allowed[f"{n.name}#state"], unit_cap)
            else:
                continue
            for i in n.inputs:
                if i not in spikes and i in allowed:
                    allowed[i] = min(allowed[i], bound)
        b = _Builder(graph, allowed, self.bits, self.state_bits, spikes, host, shifts, shapes)
        for n in graph.nodes:
            b.node(n)
        built = {m.name: m.op for m in b.nodes}
        for n in graph.neurons():
            if isinstance(n.op, O.DynamicIntegerLIF):
                i = n.inputs[0]
                x = cal.records[i].value if i in cal.records else torch.as_tensor(cal_inputs[i], dtype=torch.float64)
                b.layers[n.name].update(dilif_calibration(built[n.name], x, cal.records[n.name].d))
        violations = []
        for name, origin, f in b.checks:
            mx = ranges.get(origin, 0.0)
            if mx > 0 and fits(mx) < f:
                violations.append({"value": name, "bits_over": f - fits(mx)})
        plan = {
            "weight_bits": self.bits, "state_bits": self.state_bits, "headroom": self.headroom,
            "exponents": dict(b.exp),
            "outputs": {o: int(b.exp.get(o, 0)) for o in graph.outputs},
            "memory": dict(b.memory), "dyadic": dict(b.dyadics), "layers": b.layers,
            "range_violations": violations,
        }
        out = Graph(inputs=graph.inputs, nodes=tuple(b.nodes), outputs=graph.outputs, meta=graph.meta)
        return out.with_meta(fixed_point=plan)


def dilif_calibration(op: O.FixedDynamicIntegerLIF, x: torch.Tensor, d_float: torch.Tensor) -> dict:
    """How often the fixed DI-LIF's thresholds give another D than the float DI-LIF on the float
    input current ``x`` ``[T, B, ...]`` (the calibration run): the thresholds applied to the real sum
    ``S = unit * sum_i x[t, b, i]`` (the integer rule at the float model's own mu) against the float
    model's ``d_float`` ``[T, B]``. A difference means mu lies within one state unit / N of a gate
    boundary (the thresholds' rounding to integers). Returns ``d_steps`` and ``d_differs``."""
    s = x.to(torch.float64).flatten(2).sum(dim=2) * float(op.unit) * float(op.sign)
    th = torch.tensor([float(v) for v in op.thresholds], dtype=torch.float64)
    d_table = 1 + (s.unsqueeze(-1) >= th).sum(dim=-1)
    d_float = torch.as_tensor(d_float).to(torch.float64).reshape(d_table.shape)
    return {"d_steps": int(d_table.numel()), "d_differs": int((d_table.to(torch.float64) != d_float).sum())}


def quantize_graph(graph: Graph, calibration, *, weight_bits: int = WEIGHT_BITS, **kw) -> Graph:
    """:class:`QuantizeFixedPoint` applied (validated), with the pass recorded in the metadata."""
    out = QuantizeFixedPoint(calibration, weight_bits=weight_bits, **kw).apply(graph)
    done = list(out.meta_dict().get("passes", []))
    return out.with_meta(passes=done + [f"quantize-fixed[w{weight_bits}]"])
