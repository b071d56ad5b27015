"""IR ops: small frozen dataclasses, one per op, with the math in the docstring.

Conventions shared by every op:

* Every IR value has the layout ``[T, B, *s]``: ``T`` macro-steps (the model's time axis), batch
  ``B``, and a *per-step shape* ``s``. Shapes in this module always mean per-step shapes.
* Stateless ops act on each (t, b) slice independently; neuron ops carry state along ``T``.
* Channel-wise ops (BatchNorm, bias) use axis 0 of the per-step shape as the channel axis.
* Array parameters are read-only float64 numpy arrays; scalars are Python numbers; sequences are
  tuples, so every op is immutable and can be serialized without pickle.
* ``infer_shape`` checks input shapes and returns the output's per-step shape; it raises
  ``ValueError`` with a readable reason (the validator adds the node name).

The reference semantics of each op live in :mod:`spikedeploy.reference` (one rule per op class).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import ClassVar, Optional, Tuple, Union

import numpy as np

Shape = Tuple[int, ...]

ENCODINGS = ("binary", "graded")


def as_param(a) -> np.ndarray:
    """Convert to a read-only float64 array (the storage format of every IR parameter)."""
    arr = np.array(a, dtype=np.float64, copy=True)
    arr.setflags(write=False)
    return arr


def _pair(v) -> Tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, (int, np.integer)) else tuple(int(x) for x in v)


def _conv_out(n: int, k: int, stride: int, pad: int, dil: int) -> int:
    return (n + 2 * pad - dil * (k - 1) - 1) // stride + 1


@dataclass(frozen=True, eq=False)
class Op:
    """Base class. ``arity`` is the number of inputs (None = one or more)."""

    arity: ClassVar[Optional[int]] = 1
    #: ops whose output is emitted as spikes after lowering
    is_neuron: ClassVar[bool] = False

    def __post_init__(self):
        # every array parameter becomes a private read-only float64 copy, whoever built the op
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, np.ndarray) and (v.dtype != np.float64 or v.flags.writeable):
                object.__setattr__(self, f.name, as_param(v))

    @property
    def kind(self) -> str:
        return type(self).__name__

    def arrays(self) -> dict:
        """The op's array parameters by field name (None entries skipped)."""
        return {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if isinstance(getattr(self, f.name), np.ndarray)
        }

    def infer_shape(self, *shapes: Shape) -> Shape:  # pragma: no cover - abstract
        raise NotImplementedError

    def infer_steps(self, *steps: Optional[int]) -> Optional[int]:
        """Number of macro-steps of the output from those of the inputs (``None`` = the graph
        input's T, not fixed). Default: every input has the same number, and so has the output;
        the time-axis ops below override it. Raises ``ValueError`` with a readable reason."""
        if len(set(steps)) > 1:
            raise ValueError(
                f"inputs have different numbers of macro-steps {list(steps)} (None = the graph input's T); "
                "use RepeatTime/SelectStep/StackSteps to change the time axis"
            )
        return steps[0] if steps else None


# ---------------------------------------------------------------------------------------------
# Synaptic (linear, weighted) ops
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Conv2d(Op):
    """2-D convolution on a per-step input ``[C_in, H, W]``::

        y[o, i, j] = bias[o] + sum_{c, u, v} weight[o, c, u, v] * x[g(o)*C_in/groups + c,
                                                                     i*stride - pad + u*dil,
                                                                     j*stride - pad + v*dil]

    with zero padding; ``weight`` has shape ``[C_out, C_in/groups, kh, kw]``.
    """

    weight: np.ndarray
    bias: Optional[np.ndarray] = None
    stride: Tuple[int, int] = (1, 1)
    padding: Tuple[int, int] = (0, 0)
    dilation: Tuple[int, int] = (1, 1)
    groups: int = 1

    def infer_shape(self, s):
        if len(s) != 3:
            raise ValueError(f"Conv2d expects per-step shape [C, H, W], got {list(s)}")
        co, cig, kh, kw = self.weight.shape
        if s[0] != cig * self.groups:
            raise ValueError(f"Conv2d expects {cig * self.groups} input channels, got {s[0]}")
        if self.bias is not None and self.bias.shape != (co,):
            raise ValueError(f"Conv2d bias shape {self.bias.shape} != ({co},)")
        h = _conv_out(s[1], kh, self.stride[0], self.padding[0], self.dilation[0])
        w = _conv_out(s[2], kw, self.stride[1], self.padding[1], self.dilation[1])
        if h < 1 or w < 1:
            raise ValueError(f"Conv2d output would be empty for input {list(s)}")
        return (co, h, w)


@dataclass(frozen=True, eq=False)
class Conv1d(Op):
    """1-D convolution on a per-step input ``[C_in, L]``::

        y[o, i] = bias[o] + sum_{c, u} weight[o, c, u] * x[g(o)*C_in/groups + c, i*stride - pad + u*dil]

    ``weight`` has shape ``[C_out, C_in/groups, k]`` (a 1x1 Conv1d is a per-token linear layer).
    """

    weight: np.ndarray
    bias: Optional[np.ndarray] = None
    stride: int = 1
    padding: int = 0
    dilation: int = 1
    groups: int = 1

    def infer_shape(self, s):
        if len(s) != 2:
            raise ValueError(f"Conv1d expects per-step shape [C, L], got {list(s)}")
        co, cig, k = self.weight.shape
        if s[0] != cig * self.groups:
            raise ValueError(f"Conv1d expects {cig * self.groups} input channels, got {s[0]}")
        if self.bias is not None and self.bias.shape != (co,):
            raise ValueError(f"Conv1d bias shape {self.bias.shape} != ({co},)")
        n = _conv_out(s[1], k, self.stride, self.padding, self.dilation)
        if n < 1:
            raise ValueError(f"Conv1d output would be empty for input {list(s)}")
        return (co, n)


@dataclass(frozen=True, eq=False)
class Linear(Op):
    """Dense layer on the last axis: ``y[..., o] = bias[o] + sum_i weight[o, i] * x[..., i]``."""

    weight: np.ndarray
    bias: Optional[np.ndarray] = None

    def infer_shape(self, s):
        if not s or s[-1] != self.weight.shape[1]:
            raise ValueError(f"Linear expects last axis {self.weight.shape[1]}, got shape {list(s)}")
        if self.bias is not None and self.bias.shape != (self.weight.shape[0],):
            raise ValueError(f"Linear bias shape {self.bias.shape} != ({self.weight.shape[0]},)")
        return tuple(s[:-1]) + (self.weight.shape[0],)


# ---------------------------------------------------------------------------------------------
# Weightless linear ops
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class AvgPool2d(Op):
    """Average pooling on ``[C, H, W]``: ``y[c, i, j] = mean_{u, v < k} x[c, i*s - p + u, j*s - p + v]``
    (zero padding counted in the mean, PyTorch's ``count_include_pad=True``)."""

    kernel: Tuple[int, int]
    stride: Tuple[int, int]
    padding: Tuple[int, int] = (0, 0)

    def infer_shape(self, s):
        if len(s) != 3:
            raise ValueError(f"AvgPool2d expects [C, H, W], got {list(s)}")
        h = _conv_out(s[1], self.kernel[0], self.stride[0], self.padding[0], 1)
        w = _conv_out(s[2], self.kernel[1], self.stride[1], self.padding[1], 1)
        if h < 1 or w < 1:
            raise ValueError(f"AvgPool2d output would be empty for input {list(s)}")
        return (s[0], h, w)


@dataclass(frozen=True, eq=False)
class MeanReduce(Op):
    """Mean over per-step axes: ``y = mean_{axes} x`` (axes removed unless ``keepdim``)."""

    axes: Tuple[int, ...]
    keepdim: bool = False

    def infer_shape(self, s):
        if len(set(self.axes)) != len(self.axes) or not self.axes:
            raise ValueError(f"MeanReduce axes {self.axes} must be distinct and non-empty")
        for a in self.axes:
            if not 0 <= a < len(s):
                raise ValueError(f"MeanReduce axis {a} out of range for shape {list(s)}")
        if self.keepdim:
            return tuple(1 if i in self.axes else n for i, n in enumerate(s))
        return tuple(n for i, n in enumerate(s) if i not in self.axes)


@dataclass(frozen=True, eq=False)
class Scale(Op):
    """Multiply and divide by constants: ``y = (x * factor) / divisor``. Division is kept apart so
    that a captured ``x / n`` stays bit-identical to PyTorch (``x * (1/n)`` is not)."""

    factor: float = 1.0
    divisor: float = 1.0

    def __post_init__(self):
        super().__post_init__()
        _check_finite("factor", self.factor)
        if not (math.isfinite(self.divisor) and self.divisor != 0):
            raise ValueError(f"Scale divisor must be finite and non-zero, got {self.divisor!r}")

    def infer_shape(self, s):
        return tuple(s)


@dataclass(frozen=True, eq=False)
class BatchNorm(Op):
    """Inference batch norm over channel axis 0 (BatchNorm1d/2d, frozen or not)::

        y[c, ...] = (x[c, ...] - mean[c]) / sqrt(var[c] + eps) * weight[c] + bias[c]

    ``frozen``: the same math, evaluated as a *frozen* BatchNorm (detection/tracking code, e.g.
    SpikeTrack's backbone): ``y = x * scale + shift`` with ``scale = weight * rsqrt(var + eps)``,
    ``shift = bias - mean * scale`` in the value's dtype, rather than PyTorch's ``batch_norm``
    kernel (which rounds differently in float32). Only the reference's rounding depends on it.
    """

    mean: np.ndarray
    var: np.ndarray
    weight: np.ndarray
    bias: np.ndarray
    eps: float = 1e-5
    frozen: bool = False

    def infer_shape(self, s):
        if not s or s[0] != self.mean.shape[0]:
            raise ValueError(f"BatchNorm over {self.mean.shape[0]} channels, got shape {list(s)}")
        return tuple(s)

    def scale_shift(self) -> Tuple[np.ndarray, np.ndarray]:
        """The affine form ``y = a * x + b``: a = weight / sqrt(var + eps), b = bias - mean * a."""
        a = self.weight / np.sqrt(self.var + self.eps)
        return a, self.bias - self.mean * a


@dataclass(frozen=True, eq=False)
class Add(Op):
    """Element-wise sum of two values of the same per-step shape: ``y = a + b`` (membrane shortcut)."""

    arity: ClassVar[Optional[int]] = 2

    def infer_shape(self, a, b):
        if tuple(a) != tuple(b):
            raise ValueError(f"Add needs equal shapes, got {list(a)} and {list(b)}")
        return tuple(a)


@dataclass(frozen=True, eq=False)
class AddConstant(Op):
    """Add a constant tensor (e.g. a position embedding) broadcast over T and B: ``y = x + value``.
    ``value`` has the per-step shape of ``x`` or broadcasts to it."""

    value: np.ndarray

    def infer_shape(self, s):
        try:
            out = np.broadcast_shapes(tuple(s), self.value.shape)
        except ValueError:
            raise ValueError(f"AddConstant value {list(self.value.shape)} does not broadcast to {list(s)}")
        if tuple(out) != tuple(s):
            raise ValueError(f"AddConstant value {list(self.value.shape)} would grow shape {list(s)}")
        return tuple(s)


# ---------------------------------------------------------------------------------------------
# Routing ops (no arithmetic; spikes pass through unchanged)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Reshape(Op):
    """Row-major reshape of the per-step tensor to ``shape``."""

    shape: Shape

    def infer_shape(self, s):
        if any(int(d) < 1 for d in self.shape):
            raise ValueError(f"reshape target {list(self.shape)} must have positive dimensions")
        if math.prod(s) != math.prod(self.shape):
            raise ValueError(f"cannot reshape {list(s)} to {list(self.shape)}")
        return tuple(self.shape)


@dataclass(frozen=True, eq=False)
class Permute(Op):
    """Axis permutation of the per-step tensor: ``y.shape[i] = x.shape[perm[i]]``."""

    perm: Tuple[int, ...]

    def infer_shape(self, s):
        if sorted(self.perm) != list(range(len(s))):
            raise ValueError(f"permutation {self.perm} does not fit shape {list(s)}")
        return tuple(s[p] for p in self.perm)


@dataclass(frozen=True, eq=False)
class Concat(Op):
    """Concatenation along per-step ``axis``."""

    arity: ClassVar[Optional[int]] = None
    axis: int = 0

    def infer_shape(self, *shapes):
        first = shapes[0]
        for s in shapes[1:]:
            if len(s) != len(first) or any(
                a != b for i, (a, b) in enumerate(zip(s, first)) if i != self.axis
            ):
                raise ValueError(f"Concat shapes differ off axis {self.axis}: {[list(x) for x in shapes]}")
        return tuple(
            sum(s[self.axis] for s in shapes) if i == self.axis else n for i, n in enumerate(first)
        )


# ---------------------------------------------------------------------------------------------
# Neurons
# ---------------------------------------------------------------------------------------------


def _check_encoding(encoding):
    if encoding is not None and encoding not in ENCODINGS:
        raise ValueError(f"unknown spike encoding {encoding!r}; expected one of {ENCODINGS}")


def _check_rounding(rounding):
    if rounding not in ("half_even", "half_up"):
        raise ValueError(f"unknown rounding {rounding!r}; expected 'half_even' or 'half_up'")


def _check_positive(name, v):
    if not (isinstance(v, (int, float, np.floating, np.integer)) and math.isfinite(v) and v > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {v!r}")


def _check_finite(name, v):
    vals = v if isinstance(v, tuple) else (v,)
    if not all(isinstance(x, (int, float, np.floating, np.integer)) and math.isfinite(x) for x in vals):
        raise ValueError(f"{name} must be finite, got {v!r}")


@dataclass(frozen=True, eq=False)
class IntegerLIF(Op):
    """The integer LIF family (MultiSpike/I-LIF, SpikeYOLO I-LIF, NI-LIF, integer IF)::

        m_0 = x_0
        m_t = (m_{t-1} - q_{t-1} / reset_norm) * leak_t + x_t        (t >= 1)
        q_t = Q(clamp(m_t, 0, D))       Q = round half to even | round half up
        emitted = q_t / norm            (encoding None: the integer-activation network)
        emitted = q_t unit spikes       (encoding "binary": the first q of D sub-steps;
                                         "graded": one event with payload q; 1/norm is folded
                                         into the consumers by the ExpandSpikes pass)

    ``leak`` is None (stateless: m_t = x_t), a float, or a tuple whose entry t-1 is leak_t.
    ``label`` names the source neuron type for reports ("MultiSpike", "NI-LIF", ...).
    """

    is_neuron: ClassVar[bool] = True
    d: int
    norm: float
    leak: Union[None, float, Tuple[float, ...]] = None
    reset_norm: float = 1.0
    rounding: str = "half_even"
    label: str = "I-LIF"
    encoding: Optional[str] = None

    def __post_init__(self):
        super().__post_init__()
        if isinstance(self.d, bool) or not isinstance(self.d, (int, np.integer)) or self.d < 1:
            raise ValueError(f"firing limit D must be a positive integer, got {self.d!r}")
        _check_rounding(self.rounding)
        _check_positive("norm", self.norm)
        _check_positive("reset_norm", self.reset_norm)
        if self.leak is not None:
            _check_finite("leak", self.leak)
        _check_encoding(self.encoding)

    @property
    def window(self) -> int:
        """Sub-steps per macro-step in binary encoding (= D)."""
        return int(self.d)

    def infer_shape(self, s):
        return tuple(s)


@dataclass(frozen=True, eq=False)
class DynamicIntegerLIF(Op):
    """DI-LIF: an integer LIF whose limit changes per step and sample::

        D[t, b] = clamp(round(2 * sigmoid(gate_w * mean(x[t, b]) + gate_b) * d_init), 1, 2 * d_init)
        m_t as IntegerLIF (leak None = stateless, reset subtracts q), q_t = Q(clamp(m_t, 0, D[t, b]))
        emitted = q_t / d_init

    Binary encoding uses a static window of ``2 * d_init`` sub-steps; a frame whose D is smaller
    leaves the trailing sub-steps silent.
    """

    is_neuron: ClassVar[bool] = True
    d_init: int
    gate_w: float
    gate_b: float
    leak: Optional[float] = None
    rounding: str = "half_even"
    label: str = "DI-LIF"
    encoding: Optional[str] = None

    def __post_init__(self):
        super().__post_init__()
        if isinstance(self.d_init, bool) or not isinstance(self.d_init, (int, np.integer)) or self.d_init < 1:
            raise ValueError(f"DI-LIF d_init must be a positive integer, got {self.d_init!r}")
        _check_rounding(self.rounding)
        _check_finite("gate_w", self.gate_w)
        _check_finite("gate_b", self.gate_b)
        if self.leak is not None:
            _check_finite("leak", self.leak)
        _check_encoding(self.encoding)

    @property
    def norm(self) -> float:
        return float(self.d_init)

    @property
    def d(self) -> int:
        """Static upper bound of the dynamic limit."""
        return 2 * int(self.d_init)

    @property
    def window(self) -> int:
        return self.d

    def infer_shape(self, s):
        if not s:
            raise ValueError("DI-LIF needs at least one feature axis")
        return tuple(s)


@dataclass(frozen=True, eq=False)
class BinaryLIF(Op):
    """Binary LIF with soft reset (SpikeVideoFormer)::

        H_t = beta * U_{t-1} + x_t,   S_t = [H_t > threshold],   U_t = H_t - threshold * S_t

    D = 1 and norm = 1: the emitted value is already a unit spike.
    """

    is_neuron: ClassVar[bool] = True
    beta: float
    threshold: float = 1.0
    label: str = "LIF"
    encoding: Optional[str] = None

    d: ClassVar[int] = 1
    norm: ClassVar[float] = 1.0
    window: ClassVar[int] = 1

    def __post_init__(self):
        super().__post_init__()
        if not self.threshold > 0:
            raise ValueError(f"binary LIF threshold must be > 0, got {self.threshold}")
        _check_finite("beta", self.beta)
        _check_encoding(self.encoding)

    def infer_shape(self, s):
        return tuple(s)


# ---------------------------------------------------------------------------------------------
# Fixed point (Loihi 2 number formats; made by spikedeploy.passes.quantize, never captured)
# ---------------------------------------------------------------------------------------------

#: width of the neuron state and of graded payloads in fixed point (Loihi 2: 24-bit signed state,
#: lava-nc ``PyLifModelBitAcc``: ``u``/``v`` ``precision=24``, ``s_out`` ``precision=24``)
STATE_BITS = 24
#: the leak (decay) is a 12-bit fraction: ``leak / 4096`` (lava-nc LIF ``du``/``dv``, ``decay_shift = 12``)
LEAK_BITS = 12


def _check_int(name, v, minimum=None):
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or (minimum is not None and v < minimum):
        raise ValueError(f"{name} must be an integer{f' >= {minimum}' if minimum is not None else ''}, got {v!r}")


def _check_leak_fraction(leak):
    vals = leak if isinstance(leak, tuple) else (leak,)
    for v in vals:
        _check_int("fixed-point leak", v, 0)
        if v > 1 << LEAK_BITS:
            raise ValueError(f"fixed-point leak {v} exceeds 2**{LEAK_BITS} (a 12-bit fraction of 4096)")


@dataclass(frozen=True, eq=False)
class Quantize(Op):
    """HOST -> device boundary of a fixed-point graph: a real value becomes an integer message in
    units of ``2**-exponent``::

        y = clamp(round_half_even(x * 2**exponent), -(2**(bits-1) - 1), 2**(bits-1) - 1)

    Every clamped element is counted (saturation), never wrapped."""

    exponent: int
    bits: int = STATE_BITS

    def __post_init__(self):
        super().__post_init__()
        _check_int("Quantize exponent", self.exponent)
        _check_int("Quantize bits", self.bits, 2)

    def infer_shape(self, s):
        return tuple(s)


@dataclass(frozen=True, eq=False)
class FixedIntegerLIF(Op):
    """The integer LIF family in Loihi-style fixed point. The input ``x`` and the state ``v`` are
    integers in state units (``unit`` state units = 1.0 of the float membrane; ``unit`` is a power
    of two >= 2, so every rounding boundary ``(k + 1/2) * unit`` is an integer)::

        v_0 = sat(x_0)
        v_t = sat(decay_t(v_{t-1} - reset * q_{t-1}) + x_t)        (t >= 1; leak None: v_t = sat(x_t))
        decay_t(p) = sign(p) * ((|p| * leak_t) >> 12)              leak_t: 12-bit fraction of 4096
        q_t = clamp(R(v_t / unit), 0, D)        R: round half to even | half up, exact in integers
        sat(v) = clamp(v, -(2**(state_bits-1) - 1), 2**(state_bits-1) - 1)   every clamp counted

    ``reset`` = ``unit / reset_norm`` (NI-LIF's normalized-spike reset: unit / D). ``leak`` is None,
    an int, or a tuple whose entry t-1 is leak_t (NI-LIF's per-step sigmoid leaks). The output is the
    count q, emitted as spikes (``encoding`` "binary" | "graded"), like a lowered
    :class:`IntegerLIF`; ``norm`` is kept for reports (the 1/norm factor is already in the
    consumers' integer weights)."""

    is_neuron: ClassVar[bool] = True
    d: int
    unit: int
    reset: int
    leak: Union[None, int, Tuple[int, ...]] = None
    rounding: str = "half_even"
    label: str = "I-LIF"
    encoding: Optional[str] = "binary"
    norm: float = 1.0
    state_bits: int = STATE_BITS

    def __post_init__(self):
        super().__post_init__()
        _check_int("firing limit D", self.d, 1)
        _check_int("state unit", self.unit, 2)
        if self.unit & (self.unit - 1):
            raise ValueError(f"state unit must be a power of two, got {self.unit}")
        _check_int("reset", self.reset, 0)
        if self.leak is not None:
            _check_leak_fraction(self.leak)
        _check_rounding(self.rounding)
        _check_encoding(self.encoding)
        _check_positive("norm", self.norm)
        _check_int("state_bits", self.state_bits, 2)
        if (self.d + 1) * self.unit >= 1 << (self.state_bits - 1):
            raise ValueError(f"D={self.d} in units of {self.unit} does not fit a {self.state_bits}-bit state")

    @property
    def window(self) -> int:
        return int(self.d)

    def infer_shape(self, s):
        return tuple(s)


#: bound of a DI-LIF threshold and of the integer input sum it is compared with (2**53: exact in
#: a float64 parameter array; a threshold beyond any possible sum, clipped to it, decides the same)
THRESHOLD_LIMIT = 1 << 53


def dilif_thresholds(d_init: int, gate_w: float, gate_b: float, n_features: int, unit: int
                     ) -> Tuple[int, Tuple[int, ...]]:
    """``(sign, thresholds)`` of :class:`FixedDynamicIntegerLIF` for the float DI-LIF gate
    ``(gate_w, gate_b)`` on ``n_features`` inputs in state units ``unit`` (float64, computed once)::

        z_k     = logit((k - 1/2) / (2 d_init))                           k = 2 .. 2 d_init
        w != 0: sign = sgn(w),  theta_k = ceil((z_k - b) * n_features * unit / |w|)
        w == 0: sign = 0,       theta_k = 0 if b >= z_k else 1
        theta_k clipped to [-THRESHOLD_LIMIT, THRESHOLD_LIMIT]

    so that ``D >= k`` iff ``sign * S >= theta_k`` with ``S`` the integer input sum (``|S| <
    THRESHOLD_LIMIT``, checked where S is computed, so a clipped threshold decides the same)."""
    _check_count("DI-LIF d_init", d_init, 1)
    _check_count("DI-LIF n_features", n_features, 1)
    w, b = float(gate_w), float(gate_b)
    sign = (w > 0) - (w < 0)
    out = []
    for k in range(2, 2 * int(d_init) + 1):
        p = (k - 0.5) / (2.0 * d_init)
        z = math.log(p / (1.0 - p))
        if sign == 0:
            out.append(0 if b >= z else 1)
            continue
        v = (z - b) * float(n_features) * float(unit) / abs(w)
        v = min(max(v, -float(THRESHOLD_LIMIT)), float(THRESHOLD_LIMIT))
        out.append(int(max(-THRESHOLD_LIMIT, min(THRESHOLD_LIMIT, math.ceil(v)))))
    return sign, tuple(out)


@dataclass(frozen=True, eq=False)
class FixedDynamicIntegerLIF(Op):
    """DI-LIF (:class:`DynamicIntegerLIF`) in Loihi-style fixed point: a :class:`FixedIntegerLIF`
    whose limit D[t, b] is a step function of the integer sum of the layer's input, compared with
    integer thresholds made once at quantization (no sigmoid on the device).

    The float DI-LIF: ``D[t, b] = clamp(round(2 sigmoid(w mu + b) D_init), 1, 2 D_init)`` with
    ``mu = mean_i x[t, b, i]`` over the layer's N = ``n_features`` features. In fixed point x is an
    integer in state units (``unit`` state units = 1.0), so with ``S[t, b] = sum_i x[t, b, i]`` (exact,
    int64) ``mu = S / (N unit)``. For k = 2 .. 2 D_init, ``D >= k`` iff ``2 sigmoid(w mu + b) D_init >=
    k - 1/2`` (round's boundary; an exact tie there has measure zero in the float model and is
    decided by the integer rule here), i.e. iff ``w mu + b >= z_k = logit((k - 1/2) / (2 D_init))``:
    for w > 0 iff ``S >= ceil((z_k - b) N unit / w)``, for w < 0 iff ``S <= floor((z_k - b) N unit /
    w)``, for w = 0 never or always. In one form (:func:`dilif_thresholds`)::

        D[t, b] = 1 + #{k : sign * S[t, b] >= thresholds[k - 2]}       (thresholds non-decreasing)
        v_t, q_t as FixedIntegerLIF with d = D[t, b] (reset = unit: DI-LIF subtracts q)

    The one approximation: S is exact, the thresholds are rounded to integers, so D differs from
    the float model's only when mu lies within one state unit / N of a gate boundary (counted per
    layer on the calibration inputs in the quantization plan). ``gate_w``/``gate_b`` are kept for
    reports; ``norm`` (= D_init) likewise (the 1/D_init is in the consumers' weights). Binary
    encoding uses the static window of ``2 d_init`` sub-steps, like :class:`DynamicIntegerLIF`."""

    is_neuron: ClassVar[bool] = True
    d_init: int
    unit: int
    reset: int
    n_features: int
    sign: int
    thresholds: np.ndarray
    leak: Optional[int] = None
    rounding: str = "half_even"
    gate_w: float = 0.0
    gate_b: float = 0.0
    label: str = "DI-LIF"
    encoding: Optional[str] = "binary"
    state_bits: int = STATE_BITS

    def __post_init__(self):
        super().__post_init__()
        _check_int("DI-LIF d_init", self.d_init, 1)
        _check_int("state unit", self.unit, 2)
        if self.unit & (self.unit - 1):
            raise ValueError(f"state unit must be a power of two, got {self.unit}")
        _check_int("reset", self.reset, 0)
        _check_int("n_features", self.n_features, 1)
        if isinstance(self.sign, bool) or self.sign not in (-1, 0, 1):
            raise ValueError(f"DI-LIF threshold sign must be -1, 0 or 1, got {self.sign!r}")
        th = self.thresholds
        if not isinstance(th, np.ndarray) or th.shape != (2 * int(self.d_init) - 1,):
            raise ValueError(f"DI-LIF needs 2 * d_init - 1 = {2 * int(self.d_init) - 1} thresholds, got "
                             f"{np.shape(th)}")
        if not (np.all(th == np.round(th)) and np.all(np.abs(th) <= THRESHOLD_LIMIT)):
            raise ValueError(f"DI-LIF thresholds must be integers of magnitude <= 2**53, got {th.tolist()}")
        if np.any(np.diff(th) < 0):
            raise ValueError(f"DI-LIF thresholds must be non-decreasing, got {th.tolist()}")
        if self.leak is not None:
            _check_leak_fraction(self.leak)
            if isinstance(self.leak, tuple):
                raise ValueError("DI-LIF has one leak (not a per-step tuple)")
        _check_rounding(self.rounding)
        _check_finite("gate_w", self.gate_w)
        _check_finite("gate_b", self.gate_b)
        _check_encoding(self.encoding)
        _check_int("state_bits", self.state_bits, 2)
        if (self.d + 1) * self.unit >= 1 << (self.state_bits - 1):
            raise ValueError(f"D_max={self.d} in units of {self.unit} does not fit a {self.state_bits}-bit state")

    @property
    def norm(self) -> float:
        return float(self.d_init)

    @property
    def d(self) -> int:
        """Static upper bound of the dynamic limit (2 d_init)."""
        return 2 * int(self.d_init)

    @property
    def window(self) -> int:
        return self.d

    def infer_shape(self, s):
        if not s or math.prod(s) != self.n_features:
            raise ValueError(f"fixed DI-LIF sums {self.n_features} features per step, got shape {list(s)}")
        return tuple(s)


@dataclass(frozen=True, eq=False)
class FixedBinaryLIF(Op):
    """The binary LIF with soft reset in Loihi-style fixed point (integers in state units)::

        h_t = sat(decay(u_{t-1}) + x_t),  s_t = [h_t > threshold],  u_t = h_t - threshold * s_t
        decay(p) = sign(p) * ((|p| * beta) >> 12)      beta: 12-bit fraction of 4096;  u_{-1} = 0
        sat as in :class:`FixedIntegerLIF` (counted)"""

    is_neuron: ClassVar[bool] = True
    beta: int
    threshold: int
    label: str = "LIF"
    encoding: Optional[str] = "binary"
    state_bits: int = STATE_BITS

    d: ClassVar[int] = 1
    norm: ClassVar[float] = 1.0
    window: ClassVar[int] = 1

    def __post_init__(self):
        super().__post_init__()
        _check_leak_fraction(self.beta)
        _check_int("threshold", self.threshold, 1)
        _check_encoding(self.encoding)
        _check_int("state_bits", self.state_bits, 2)

    def infer_shape(self, s):
        return tuple(s)


# ---------------------------------------------------------------------------------------------
# Spike x spike products
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class SpikeLinearAttention(Op):
    """Linear spike attention on q, k ``[C, N]`` and v ``[Cv, N]`` (channels, tokens)::

        per head h (channels split into num_heads contiguous groups):
            kv_h  = K_h^T V_h                 [C/H, Cv/H]   (sum over tokens)
            out_h = scale * Q_h kv_h          [N, Cv/H]
        y = concat_h(out_h) transposed back to [Cv, N]

    After spike lowering q, k and v are unit-spike counts and ``scale`` absorbs their three 1/norm
    factors; kv is then an integer count of co-occurring unit spikes (spike-driven form: each pair
    of a k spike and a v spike on the same token increments one memory cell; q spikes read rows).
    """

    arity: ClassVar[Optional[int]] = 3
    num_heads: int
    scale: float

    def infer_shape(self, q, k, v):
        if len(q) != 2 or tuple(q) != tuple(k) or len(v) != 2 or v[1] != q[1]:
            raise ValueError(f"attention needs q, k [C, N] and v [Cv, N]; got {list(q)}, {list(k)}, {list(v)}")
        if q[0] % self.num_heads or v[0] % self.num_heads:
            raise ValueError(f"channels {q[0]}/{v[0]} not divisible by {self.num_heads} heads")
        return tuple(v)


@dataclass(frozen=True, eq=False)
class MemoryWrite(Op):
    """Template memory of a linear spike attention (SpikeTrack's MRM, template branch), k ``[C, N]``
    and v ``[Cv, N]``::

        kv[h, i, j] = scale * sum_n K_h[n, i] * V_h[n, j]        output [H, C/H, Cv/H]

    (channels split into ``num_heads`` contiguous groups). After spike lowering k and v are unit
    spike counts and ``scale`` absorbs both 1/norm factors: each co-occurring pair of a k spike and
    a v spike on the same token increments one memory cell.
    """

    arity: ClassVar[Optional[int]] = 2
    num_heads: int
    scale: float = 1.0

    def infer_shape(self, k, v):
        if len(k) != 2 or len(v) != 2 or k[1] != v[1]:
            raise ValueError(f"MemoryWrite needs k [C, N] and v [Cv, N]; got {list(k)}, {list(v)}")
        h = self.num_heads
        if k[0] % h or v[0] % h:
            raise ValueError(f"channels {k[0]}/{v[0]} not divisible by {h} heads")
        return (h, k[0] // h, v[0] // h)


@dataclass(frozen=True, eq=False)
class MemoryRead(Op):
    """q ``[C, N]`` reads a cached memory (SpikeTrack's MRM, search branch)::

        out_h = scale * Q_h @ memory[t, h]      Q_h [N, C/H], memory [T_mem, H, C/H, Cv/H]
        y = heads concatenated along channels   [Cv, N]

    Macro-step t reads ``memory[t]`` (``T_mem = 1``: every step reads the same memory). A synapse
    whose weights are the memory: they are rewritten (the graph re-exported or patched) whenever the
    templates change. After lowering, q is a unit-spike count and ``scale`` absorbs its 1/norm.
    """

    memory: np.ndarray
    num_heads: int
    scale: float = 1.0

    def infer_steps(self, n):
        tm = int(self.memory.shape[0]) if self.memory.ndim == 4 else 1
        if tm != 1 and n is not None and n != tm:
            raise ValueError(f"MemoryRead memory has {tm} steps but q has {n} (T_mem must be 1 or q's steps)")
        return n

    def infer_shape(self, q):
        tm, h, c, cv = self.memory.shape if self.memory.ndim == 4 else (0, 0, 0, 0)
        if self.memory.ndim != 4 or h != self.num_heads:
            raise ValueError(f"MemoryRead memory must be [T, {self.num_heads}, C/H, Cv/H], got {list(self.memory.shape)}")
        if len(q) != 2 or q[0] != h * c:
            raise ValueError(f"MemoryRead expects q [{h * c}, N], got {list(q)}")
        return (h * cv, q[1])


@dataclass(frozen=True, eq=False)
class Upsample(Op):
    """Resize ``[C, H, W]`` to ``[C, *size]`` (PyTorch ``F.interpolate`` semantics: ``"bilinear"``
    with ``align_corners``, or ``"nearest"``). A weight-free linear op."""

    size: Tuple[int, int]
    mode: str = "bilinear"
    align_corners: bool = False

    def __post_init__(self):
        super().__post_init__()
        if self.mode not in ("bilinear", "nearest"):
            raise ValueError(f"Upsample mode must be 'bilinear' or 'nearest', got {self.mode!r}")

    def infer_shape(self, s):
        if len(s) != 3:
            raise ValueError(f"Upsample expects [C, H, W], got {list(s)}")
        if any(int(d) < 1 for d in self.size):
            raise ValueError(f"Upsample size {self.size} must be positive")
        return (s[0],) + tuple(int(d) for d in self.size)


# ---------------------------------------------------------------------------------------------
# Space-time spike attention (SpikeVideoFormer: SDHA, seed Eq. 10, and dot-product attention, Eq. 3)
# ---------------------------------------------------------------------------------------------

#: token groupings of a space-time attention on ``[T, B, C, N]`` (T frames of N tokens each):
#: ``joint`` one group of the T*N tokens of a sample, ``spatial`` one group of N tokens per frame,
#: ``temporal`` one group of T tokens per position, ``factorized`` the first half of the heads
#: spatial and the second half temporal
TOKEN_GROUPINGS = ("joint", "spatial", "temporal", "factorized")


@dataclass(frozen=True, eq=False)
class SpaceTimeAttention:
    """Fields and shape rules shared by the two space-time spike attentions (a mixin, not an op:
    :class:`SpikeHammingAttention` and :class:`SpikeDotAttention` are the ops): q, k ``[C, N]`` and
    v ``[Cv, N]`` per step.

    Channels split into ``num_heads`` contiguous groups (``d = C/H``, ``dv = Cv/H``); within each
    head the tokens of all T macro-steps are grouped by ``tokens`` (:data:`TOKEN_GROUPINGS`); each
    group ``G`` of ``L`` tokens is one attention (``Q_G, K_G [L, d]``, ``V_G [L, dv]``); the result
    of token ``(t, n)`` is written back to step t, position n. Output ``[Cv, N]``, as many
    macro-steps as the inputs.

    **Time axis.** The number of macro-steps does not change (so this is not one of
    :data:`TIME_OPS`), but with ``tokens`` joint, temporal or factorized step t's output depends on
    the k and v of *every* step of the group (:attr:`mixes_steps`): the op needs all T frames before
    it can emit the first, so a graph holding one cannot run one frame per call
    (:func:`spikedeploy.streaming.check_streamable` refuses it, naming the node) and a stepwise
    backend must buffer the whole clip. ``spatial`` groups lie inside one step: it streams.
    """

    arity: ClassVar[Optional[int]] = 3
    score: ClassVar[str] = "?"
    num_heads: int
    tokens: str = "joint"
    scale: float = 1.0

    def __post_init__(self):
        super().__post_init__()
        _check_count(f"{self.kind} num_heads", self.num_heads, 1)
        if self.tokens not in TOKEN_GROUPINGS:
            raise ValueError(f"{self.kind} tokens must be one of {TOKEN_GROUPINGS}, got {self.tokens!r}")
        if self.tokens == "factorized" and self.num_heads % 2:
            raise ValueError(f"{self.kind}: factorized attention needs an even num_heads, got {self.num_heads}")
        _check_finite("scale", self.scale)
        if self.scale == 0:
            raise ValueError(f"{self.kind} scale must not be 0")

    @property
    def mixes_steps(self) -> bool:
        """True when an output step depends on other steps' inputs (every grouping but spatial)."""
        return self.tokens != "spatial"

    def head_groupings(self) -> Tuple[str, ...]:
        """The grouping (spatial / temporal / joint) of every head."""
        h = self.num_heads
        if self.tokens == "factorized":
            return ("spatial",) * (h // 2) + ("temporal",) * (h - h // 2)
        return (self.tokens,) * h

    def infer_shape(self, q, k, v):
        if len(q) != 2 or tuple(q) != tuple(k) or len(v) != 2 or v[1] != q[1]:
            raise ValueError(f"{self.kind} needs q, k [C, N] and v [Cv, N]; got {list(q)}, {list(k)}, {list(v)}")
        if q[0] % self.num_heads or v[0] % self.num_heads:
            raise ValueError(f"channels {q[0]}/{v[0]} not divisible by {self.num_heads} heads")
        return tuple(v)


@dataclass(frozen=True, eq=False)
class SpikeHammingAttention(SpaceTimeAttention, Op):
    """Spike-driven Hamming attention (SDHA, SpikeVideoFormer Eq. 10) without its neuron::

        per head and token group (SpaceTimeAttention):
            M = (2K - 1)^T V  = 2 K^T V - 1_d (1_L^T V)        [d, dv]
            Y = (2Q - 1) M    = 2 Q M   - 1_L (1_d^T M)        [L, dv]
        y = scale * Y

    For binary spikes ``q, k, v in {0, 1}`` (binary LIF outputs, D = 1) row i of ``Y`` is
    ``sum_j (d - 2 Hamming(q_i, k_j)) v_j``: an **integer** (``|Y| <= d L``). The ±1 maps are
    realized by counting, never by multiplying spikes: ``K^T V`` counts co-occurring k·v unit-spike
    pairs (same head, same token), ``1^T V`` counts each v channel's spikes, ``M`` is a doubling
    and a subtraction of those counts; each q unit spike reads one row of ``M`` (dv accumulates),
    the row sum doubles and ``1^T M`` (the column sums of ``M``, once per group) is subtracted.

    Integer counts (``q in {0..D}``, D > 1): the same formula on the counts -- the map ``2x - 1``
    of a count, linear in Q and in K separately, so spike lowering reads Q and K as the sums of
    their unit spikes (sub-step by sub-step) and adds the ``-1`` terms once per macro-step. It is a
    Hamming similarity only for binary spikes; the SpikeVideoFormer feeds it binary LIFs.

    ``scale``: SpikeVideoFormer's ``1/(2d)`` is *not* kept here: the model folds it into the
    threshold of the binary LIF that follows (threshold ``2d u_th``, exactly the same spikes, see
    :class:`~spikedeploy.models.spikevideoformer_blocks.FoldedScaleLIF`), so the op emits the integer
    ``Y`` (``scale = 1``). A captured stand-alone SDHA that multiplies by its scale keeps it here,
    applied once after ``Y`` (the module's own rounding).
    """

    score: ClassVar[str] = "hamming"


@dataclass(frozen=True, eq=False)
class SpikeDotAttention(SpaceTimeAttention, Op):
    """Dot-product spike attention over space-time tokens (SDSA, SpikeVideoFormer Eq. 3), the
    comparison op of :class:`SpikeHammingAttention`::

        per head and token group:  Y = Q (K^T V);   y = scale * Y

    ``K^T V`` counts co-occurring k·v unit-spike pairs; each q unit spike reads one row of it.
    For binary spikes ``Y`` is an integer; ``scale`` (Meta-SpikeFormer: 0.125) is applied once
    after it. ``tokens = "spatial"`` is :class:`SpikeLinearAttention` (one attention per step)."""

    score: ClassVar[str] = "dot"


# ---------------------------------------------------------------------------------------------
# Time-axis ops: the output has another number of macro-steps than the input (SpikeTrack T > 1:
# the search query repeated over the T templates, per-template layers, the template gate)
# ---------------------------------------------------------------------------------------------


def _fixed_steps(op: str, n: Optional[int]) -> int:
    if n is None:
        raise ValueError(
            f"{op} needs a fixed number of macro-steps on its input; give the graph input a fixed T "
            "(TensorSpec.steps, set by capture)"
        )
    return int(n)


def _check_count(name: str, v, minimum: int) -> None:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {v!r}")


@dataclass(frozen=True, eq=False)
class RepeatTime(Op):
    """Repeat a one-step value over ``times`` macro-steps (routing; spikes pass unchanged)::

        y[t, b] = x[0, b]        for t < times        ([1, B, *s] -> [times, B, *s])

    SpikeTrack's search branch repeats the search query over the T templates
    (``x.repeat(T, 1, 1, 1)``); a residual add of a one-step value to a T-step value is captured
    as ``Add(RepeatTime(a), b)`` (PyTorch's broadcasting over the time axis)."""

    times: int

    def __post_init__(self):
        super().__post_init__()
        _check_count("RepeatTime times", self.times, 1)

    def infer_steps(self, n):
        if _fixed_steps("RepeatTime", n) != 1:
            raise ValueError(f"RepeatTime repeats a one-step value, got {n} macro-steps")
        return int(self.times)

    def infer_shape(self, s):
        return tuple(s)


@dataclass(frozen=True, eq=False)
class SelectStep(Op):
    """Macro-step ``step`` of a value (routing; spikes pass unchanged)::

        y[0, b] = x[step, b]     ([T, B, *s] -> [1, B, *s])

    Captured from ``x[t]`` on a ``[T, B, ...]`` activation with T > 1 (per-template layers)."""

    step: int

    def __post_init__(self):
        super().__post_init__()
        _check_count("SelectStep step", self.step, 0)

    def infer_steps(self, n):
        if not self.step < _fixed_steps("SelectStep", n):
            raise ValueError(f"SelectStep({self.step}) of a value with {n} macro-steps")
        return 1

    def infer_shape(self, s):
        return tuple(s)


@dataclass(frozen=True, eq=False)
class StackSteps(Op):
    """One-step values stacked along the time axis (routing; spikes pass unchanged)::

        y[t, b] = x_t[0, b]      (K inputs [1, B, *s] -> [K, B, *s])

    Captured from ``torch.stack([...], dim=0)`` of per-step results (e.g. SpikeTrack's per-template
    convolutions ``seg_responder_dw[t](q[t])``, each a normal Conv2d on one step)."""

    arity: ClassVar[Optional[int]] = None

    def infer_steps(self, *steps):
        for n in steps:
            if _fixed_steps("StackSteps", n) != 1:
                raise ValueError(f"StackSteps stacks one-step values, got macro-steps {list(steps)}")
        return len(steps)

    def infer_shape(self, *shapes):
        if len({tuple(s) for s in shapes}) != 1:
            raise ValueError(f"StackSteps needs equal per-step shapes, got {[list(s) for s in shapes]}")
        return tuple(shapes[0])


@dataclass(frozen=True, eq=False)
class GateLinear(Op):
    """The template gate's token mixing (official ``GateModule`` Conv1d with tokens as channels):
    a dense layer on the last per-step axis, exactly :class:`Linear`'s math::

        y[t, b, c, o] = bias[o] + sum_i weight[o, i] * x[t, b, c, i]      (per step [C, I] -> [C, O])

    It is an op of its own only because of *where* the trained model evaluates it: a
    ``Conv1d(I, O, 1)`` on ``[B*C, I, T]`` (time last). The reference evaluates it the same way so
    that the captured graph stays bit-identical to PyTorch in float32 (a Linear on ``[T, B, C, I]``
    sums in another order). Every backend may treat it as a Linear."""

    weight: np.ndarray
    bias: Optional[np.ndarray] = None

    def infer_shape(self, s):
        if len(s) != 2 or s[-1] != self.weight.shape[1] or self.weight.ndim != 2:
            raise ValueError(f"GateLinear expects per-step [C, {self.weight.shape[1]}], got {list(s)}")
        if self.bias is not None and self.bias.shape != (self.weight.shape[0],):
            raise ValueError(f"GateLinear bias shape {self.bias.shape} != ({self.weight.shape[0]},)")
        return (s[0], self.weight.shape[0])


@dataclass(frozen=True, eq=False)
class GateSoftmax(Op):
    """HOST step: softmax over the time (template) axis, per sample and position::

        y[t, b, p] = exp(x[t, b, p]) / sum_u exp(x[u, b, p])

    SpikeTrack's template gate turns its logits ``[T, B, Cv]`` into fusion weights with it
    (``host_gate_softmax``). Exponentials and a division are not synaptic operations: this op runs
    on the host, on real values (never on spikes), and is audited as host MACs (about 4 per
    element: exp, sum, divide, max subtraction)."""

    host: ClassVar[bool] = True

    def infer_shape(self, s):
        return tuple(s)


@dataclass(frozen=True, eq=False)
class TemplateGate(Op):
    """Fuse the T per-template results into one macro-step (official channel-wise ``GateModule``)::

        y[0, b, c, ...] = scale * sum_t w[t, b, c] * x[t, b, c, ...]     x [T, B, C, *r], w [T, B, C]

    ``w`` comes from :class:`GateSoftmax` (the host softmax of the gate MLP's logits). ``x`` carries
    spikes after lowering: each unit spike of x at step t adds the weight ``scale * w[t, b, c]``
    to its one target (a synapse with fan-out 1 whose weights are written by the host every
    frame); ``scale`` absorbs x's 1/norm. Output: one macro-step."""

    arity: ClassVar[Optional[int]] = 2
    scale: float = 1.0

    def __post_init__(self):
        super().__post_init__()
        _check_finite("scale", self.scale)

    def infer_steps(self, n, m):
        if n != m:
            raise ValueError(f"TemplateGate: x has {n} macro-steps but the weights have {m}")
        return 1

    def infer_shape(self, x, w):
        if len(x) < 1 or tuple(w) != (x[0],):
            raise ValueError(f"TemplateGate needs x [C, ...] and weights [C]; got {list(x)} and {list(w)}")
        return tuple(x)


#: ops whose spike inputs are accumulated sub-step by sub-step (synapses, including weightless ones)
SYNAPTIC_OPS = (Conv2d, Conv1d, Linear, AvgPool2d, MeanReduce, Upsample, MemoryRead, GateLinear)
#: ops that move spikes without arithmetic
ROUTING_OPS = (Reshape, Permute, Concat, RepeatTime, SelectStep, StackSteps)
#: ops that change the number of macro-steps
TIME_OPS = (RepeatTime, SelectStep, StackSteps, TemplateGate)
#: ops that run on the host (real values, audited as MACs)
HOST_OPS = (GateSoftmax,)
NEURON_OPS = (IntegerLIF, DynamicIntegerLIF, BinaryLIF, FixedIntegerLIF, FixedBinaryLIF, FixedDynamicIntegerLIF)
#: neurons of fixed-point graphs (spikedeploy.passes.quantize)
FIXED_NEURON_OPS = (FixedIntegerLIF, FixedBinaryLIF, FixedDynamicIntegerLIF)
#: space-time spike attentions (SpikeVideoFormer); an instance's ``mixes_steps`` says whether its
#: output steps depend on other steps
SPACE_TIME_ATTENTION_OPS = (SpikeHammingAttention, SpikeDotAttention)
