"""Trainable PyTorch neuron modules (multi-step, time axis first).

Every module here is a thin wrapper around one function of :mod:`spikedeploy.neurons`, the single
definition of neuron semantics; no module re-implements the dynamics. All of them derive from
:class:`SpikingNeuron`:

* ``forward(x)`` takes ``x`` of shape ``[T, B, ...]`` and returns what the neuron emits downstream
  (``NeuronTrace.value``, i.e. ``q / norm``);
* ``trace(x)`` returns the full :class:`spikedeploy.neurons.NeuronTrace` (``q``, ``value``,
  ``margin``, ``d``).

Attributes read by the IR capture (plain Python values unless noted):

==================  ========================================================================
``kind``            registry name of the neuron (class attribute, see :data:`NEURON_KINDS`)
``d``               firing limit D (int); DI-LIF has ``d_init`` and ``d_max = 2 * d_init``
``norm``            the emitted value is ``q / norm`` (float)
``rounding``        ``"half_even"`` or ``"half_up"``
``leak``            fixed leak (LeakyIntegerLIF; DILIF: float or None for stateless)
``reset_scale``     1 subtracts q, ``1 / norm`` subtracts the normalized spike (NI-LIF)
``decay``           NI-LIF: ``nn.Parameter`` of shape ``[time_steps - 1]``, leak logits
``time_steps``      NI-LIF: largest T the module accepts
``beta``            BinaryLIF membrane decay; ``threshold`` its firing threshold
``gate_w, gate_b``  DILIF: learnable scalar ``nn.Parameter``s of the firing-limit gate
==================  ========================================================================

:func:`make_neuron` builds a neuron from its registry name; :func:`register_neuron` adds a kind.
"""

from __future__ import annotations

import math
from functools import partial
from typing import Callable, Dict, Optional

import torch
from torch import nn

from spikedeploy import neurons as sem
from spikedeploy.errors import ConfigError

__all__ = [
    "SpikingNeuron",
    "MultiSpike",
    "LeakyIntegerLIF",
    "NILIF",
    "IntegerIF",
    "BinaryLIF",
    "DILIF",
    "NEURON_KINDS",
    "register_neuron",
    "make_neuron",
]

NEURON_KINDS: Dict[str, Callable[..., "SpikingNeuron"]] = {}


def register_neuron(name: str, factory: Optional[Callable[..., "SpikingNeuron"]] = None):
    """Register ``factory`` (a SpikingNeuron class or a callable returning one) as kind ``name``.

    Use as ``register_neuron("x", Cls)`` or as a class decorator ``@register_neuron("x")``.
    Raises ValueError when ``name`` is already registered.
    """

    def _register(f):
        if name in NEURON_KINDS:
            raise ValueError(
                f"neuron kind {name!r} is already registered (by {NEURON_KINDS[name]!r})"
            )
        NEURON_KINDS[name] = f
        return f

    return _register(factory) if factory is not None else _register


def make_neuron(kind: str, **kwargs) -> "SpikingNeuron":
    """Build a neuron of registry kind ``kind`` with constructor keyword arguments ``kwargs``.

    An unknown kind, an unknown keyword or an invalid value (e.g. D = 2.5) raises
    :class:`~spikedeploy.errors.ConfigError` naming the kind.
    """
    if kind not in NEURON_KINDS:
        raise ConfigError(
            f"unknown neuron kind {kind!r}; known kinds: {', '.join(sorted(NEURON_KINDS))}"
        )
    try:
        return NEURON_KINDS[kind](**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"neuron kind {kind!r}: {exc}") from exc


class SpikingNeuron(nn.Module):
    """Base class: a multi-step neuron over inputs ``[T, B, ...]`` (time first)."""

    kind: str = "?"

    def trace(self, x: torch.Tensor) -> sem.NeuronTrace:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.trace(x).value


@register_neuron("ilif")
class MultiSpike(SpikingNeuron):
    """Stateless MultiSpike / I-LIF of SDT v3: ``q = Q(clamp(x, 0, D))``, emits ``q / norm``.

    ``norm`` defaults to D (spiking heads use ``norm=1``); ``rounding="half_up"`` is the SDT v3
    large variant ``floor(clamp(x, 0, D) + 0.5)``. See :func:`spikedeploy.neurons.multispike`.
    """

    kind = "ilif"
    reset_scale = 1.0
    leak = None

    def __init__(self, d: int = 4, norm: Optional[float] = None, rounding: str = "half_even"):
        super().__init__()
        self.d = sem.check_firing_limit(d, type(self).__name__)
        if rounding not in sem.ROUNDING_MODES:
            raise ValueError(
                f"{type(self).__name__}: unknown rounding {rounding!r}; expected {sem.ROUNDING_MODES}"
            )
        self.norm = _check_norm(norm, self.d, type(self).__name__)
        self.rounding = rounding
        if rounding == "half_up":
            self.kind = "ilif_half_up"

    def trace(self, x):
        return sem.multispike(x, d=self.d, norm=self.norm, rounding=self.rounding)

    def extra_repr(self):
        return f"d={self.d}, norm={self.norm:g}, rounding={self.rounding!r}"


register_neuron("ilif_half_up", partial(MultiSpike, rounding="half_up"))


@register_neuron("leaky_ilif")
class LeakyIntegerLIF(SpikingNeuron):
    """I-LIF with a fixed leak (SpikeYOLO): ``m_t = (m_{t-1} - q_{t-1}) * leak + x_t``,
    ``q = round(clamp(m, 0, D))``, emits ``q`` (``norm = 1``). See
    :func:`spikedeploy.neurons.leaky_integer`."""

    kind = "leaky_ilif"
    norm = 1.0
    reset_scale = 1.0
    rounding = "half_even"

    def __init__(self, d: int = 4, leak: float = 0.25):
        super().__init__()
        self.d = sem.check_firing_limit(d, type(self).__name__)
        self.leak = _check_real(leak, "leak", type(self).__name__)

    def trace(self, x):
        return sem.leaky_integer(x, d=self.d, leak=self.leak)

    def extra_repr(self):
        return f"d={self.d}, leak={self.leak:g}"


def _logit(p: float) -> float:
    return math.log(p / (1.0 - p))


@register_neuron("nilif")
class NILIF(SpikingNeuron):
    """NI-LIF of SpikeTrack (official ``mem_update``): ``m_t = (m_{t-1} - s_{t-1}) *
    sigmoid(decay[t-1]) + x_t``, ``s = round(clamp(m, 0, D)) / norm``; the reset subtracts the
    normalized spike. ``decay`` is the learnable logit parameter of shape ``[time_steps - 1]``
    (initialized to logit(0.25)), the official name and layout. Inputs may have
    ``T <= time_steps``. See :func:`spikedeploy.neurons.nilif`."""

    kind = "nilif"
    rounding = "half_even"

    def __init__(self, d: int = 4, time_steps: int = 4, norm: Optional[float] = None):
        super().__init__()
        self.d = sem.check_firing_limit(d, type(self).__name__)
        if isinstance(time_steps, bool) or not isinstance(time_steps, int) or time_steps < 1:
            raise ValueError(f"NILIF: time_steps must be an int >= 1, got {time_steps!r}")
        self.time_steps = time_steps
        self.norm = _check_norm(norm, self.d, type(self).__name__)
        self.reset_scale = 1.0 / self.norm
        self.decay = nn.Parameter(torch.full((time_steps - 1,), _logit(0.25)))

    @property
    def leaks(self) -> torch.Tensor:
        """The per-step leaks ``sigmoid(decay)``; entry ``t - 1`` acts at step t."""
        return torch.sigmoid(self.decay)

    def trace(self, x):
        if x.shape[0] > self.time_steps:
            raise ValueError(
                f"NILIF: input has T={x.shape[0]} time steps but the neuron was built with "
                f"time_steps={self.time_steps} (it holds {self.time_steps - 1} per-step leaks); "
                "build it with a larger time_steps or feed fewer steps"
            )
        return sem.nilif(x, d=self.d, decay=self.decay, norm=self.norm)

    def extra_repr(self):
        return f"d={self.d}, time_steps={self.time_steps}, norm={self.norm:g}"


@register_neuron("integer_if")
class IntegerIF(SpikingNeuron):
    """Integer IF (Spike2Former decoder): ``v += x; q = round(clamp(v, 0, D)); v -= q``, emits
    ``q / D``. See :func:`spikedeploy.neurons.integer_if`."""

    kind = "integer_if"
    leak = 1.0
    reset_scale = 1.0
    rounding = "half_even"

    def __init__(self, d: int = 8):
        super().__init__()
        self.d = sem.check_firing_limit(d, type(self).__name__)
        self.norm = float(self.d)

    def trace(self, x):
        return sem.integer_if(x, d=self.d)

    def extra_repr(self):
        return f"d={self.d}"


@register_neuron("binary_lif")
class BinaryLIF(SpikingNeuron):
    """Binary LIF with soft reset (SpikeVideoFormer): ``H_t = beta * U_{t-1} + X_t``,
    ``S_t = [H_t > threshold]``, ``U_t = H_t - threshold * S_t``. D = 1, emits S. See
    :func:`spikedeploy.neurons.binary_lif`."""

    kind = "binary_lif"
    d = 1
    norm = 1.0

    def __init__(self, beta: float = 0.5, threshold: float = 1.0):
        super().__init__()
        self.beta = _check_real(beta, "beta", type(self).__name__)
        self.threshold = _check_real(threshold, "threshold", type(self).__name__)
        if self.threshold <= 0:
            raise ValueError(f"BinaryLIF: threshold must be > 0, got {threshold!r}")

    def trace(self, x):
        return sem.binary_lif(x, beta=self.beta, threshold=self.threshold)

    def extra_repr(self):
        return f"beta={self.beta:g}, threshold={self.threshold:g}"


@register_neuron("dilif")
class DILIF(SpikingNeuron):
    """DI-LIF (event SpikeTrack): an I-LIF whose firing limit is chosen per step and sample,
    ``D[t, b] = clamp(round(2 * sigmoid(gate_w * mean(x[t, b]) + gate_b) * d_init), 1, 2 * d_init)``
    (:func:`spikedeploy.neurons.dynamic_firing_limit`); emits ``q / d_init``. ``gate_w`` and
    ``gate_b`` are learnable scalar parameters; ``leak=None`` is stateless, a float makes it leaky
    with subtract-q reset. See :func:`spikedeploy.neurons.dynamic_integer`."""

    kind = "dilif"
    reset_scale = 1.0
    rounding = "half_even"

    def __init__(
        self, d_init: int = 6, leak: Optional[float] = None, gate_w: float = 1.0, gate_b: float = 0.0
    ):
        super().__init__()
        self.d_init = sem.check_firing_limit(d_init, type(self).__name__)
        self.d_max = 2 * self.d_init
        self.norm = float(self.d_init)
        self.leak = None if leak is None else _check_real(leak, "leak", type(self).__name__)
        self.gate_w = nn.Parameter(torch.tensor(_check_real(gate_w, "gate_w", "DILIF")))
        self.gate_b = nn.Parameter(torch.tensor(_check_real(gate_b, "gate_b", "DILIF")))

    def firing_limit(self, x: torch.Tensor) -> torch.Tensor:
        """``D[t, b]`` for input ``x`` of shape ``[T, B, ...]`` (float tensor of integers)."""
        return sem.dynamic_firing_limit(x, d_init=self.d_init, gate_w=self.gate_w, gate_b=self.gate_b)

    def trace(self, x):
        return sem.dynamic_integer(
            x, d_init=self.d_init, gate_w=self.gate_w, gate_b=self.gate_b, leak=self.leak
        )

    def extra_repr(self):
        return f"d_init={self.d_init}, leak={self.leak}"


def _check_real(v, name: str, where: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise ValueError(f"{where}: {name} must be a finite real number, got {v!r}")
    return float(v)


def _check_norm(norm, d: int, where: str) -> float:
    if norm is None:
        return float(d)
    norm = _check_real(norm, "norm", where)
    if norm <= 0:
        raise ValueError(f"{where}: norm must be > 0, got {norm!r}")
    return norm
