"""Exact semantics of the integer-activation neurons (design notes §3).

This module is the single definition of neuron dynamics. The trainable PyTorch modules in
``spikedeploy.models.neurons`` call these functions (gradients pass straight through the rounding),
and the IR reference executor calls the very same functions under ``torch.no_grad`` in float64.

Every function takes the input current ``x`` with the time axis first, shape ``[T, B, ...]``, and
returns a :class:`NeuronTrace`:

* ``q``      — integer spike counts 0..D (stored in ``x``'s float dtype), shape ``[T, B, ...]``;
* ``value``  — what the neuron emits downstream, ``q / norm``;
* ``margin`` — distance of the pre-quantization membrane to the nearest decision boundary
  (``k + 0.5`` for rounding quantizers, the threshold for the binary LIF); the equivalence engine uses
  it to tell boundary ties from real mismatches;
* ``d``      — the firing limit: an ``int``, or for DI-LIF a tensor of shape ``[T, B]``.

The family of integer LIF neurons shares one membrane recurrence::

    m_0 = x_0
    m_t = (m_{t-1} - q_{t-1} / r) * lambda_t + x_t          (t >= 1)
    q_t = Q(clamp(m_t, 0, D_t))

with ``Q`` = round half to even (``torch.round``) or round half up (``floor(v + 0.5)``), leak
``lambda_t`` (0 for the stateless MultiSpike, 0.25 for SpikeYOLO's I-LIF, 1 for the integer IF,
``sigmoid(a_{t-1})`` for NI-LIF) and reset divisor ``r`` (1 subtracts the integer spike, ``norm``
subtracts the normalized spike as NI-LIF does).

State carried across calls (MSST streaming: one call per frame, the membranes kept)
    Every stateful neuron takes an optional ``state`` (a :class:`NeuronState`, tensors of shape
    ``[B, ...]``: one step's shape) and returns its final state on ``NeuronTrace.state``:

    * integer LIF family with a leak (I-LIF, integer IF, leaky DI-LIF): ``NeuronState(m, q)``, the
      last membrane and count. The first step of a call then continues the recurrence,
      ``m_0 = (m_prev - q_prev / r) * lambda + x_0`` with the neuron's (float) leak; a per-step leak
      tuple (NI-LIF: the leak of step t is indexed by the step within the call) has no leak for "the
      step after the carried one" and refuses a state (ValueError naming it);
    * binary LIF: ``NeuronState(m=U, q=None)``, the soft-reset residual (``H_0 = beta * U + x_0``);
    * fixed point: the same in integers (``v``, ``q`` int64; ``v_0 = sat(decay(v_prev - reset *
      q_prev) + x_0)``; binary ``u``);
    * stateless neurons (leak None) carry nothing (``state`` must be None; ``trace.state`` is None).

    DI-LIF's firing limit D of each step comes from that step's input (no state in D). A zero state
    (m = 0, q = 0 or U = 0) gives exactly the fresh start m_0 = x_0 (0 * lambda + x = x), so "no
    state" and "zero state" are the same; and running T steps as T calls of one step each, the state
    carried, gives bit for bit the q and membranes of one call on all T steps (the same expressions
    in the same order). States are detached (inference).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional, Union

import torch

__all__ = [
    "ROUNDING_MODES",
    "NeuronState",
    "NeuronTrace",
    "check_firing_limit",
    "quantize",
    "integer_lif",
    "multispike",
    "leaky_integer",
    "nilif",
    "integer_if",
    "binary_lif",
    "dynamic_firing_limit",
    "dynamic_integer",
    "fixed_integer_lif",
    "fixed_binary_lif",
    "fixed_dynamic_limit",
    "fixed_dynamic_integer_lif",
]

ROUNDING_MODES = ("half_even", "half_up")


@dataclass(frozen=True)
class NeuronState:
    """The state a stateful neuron carries from one call to the next (module docstring), per
    element, shape ``[B, ...]`` (one step of the neuron's ``[T, B, ...]``):

    * integer LIF (float or fixed point): ``m`` the last membrane (fixed: ``v``, int64), ``q`` the
      last count; the next call starts ``m_0 = (m - q / r) * leak + x_0``;
    * binary LIF: ``m`` = U, the residual after the soft reset; ``q`` is None.

    :meth:`NeuronState.zeros` is the fresh start (exactly: see the module docstring)."""

    m: torch.Tensor
    q: Optional[torch.Tensor] = None

    @staticmethod
    def zeros(shape, *, dtype=torch.float64, with_q: bool = True) -> "NeuronState":
        """The fresh start (all zeros) for one step of shape ``[B, ...]``."""
        z = torch.zeros(tuple(shape), dtype=dtype)
        return NeuronState(m=z, q=z.clone() if with_q else None)


def _check_state(state: Optional["NeuronState"], like: torch.Tensor, where: str, with_q: bool):
    """``state`` as tensors of ``like``'s shape and dtype (``like`` is one step ``[B, ...]``)."""
    if not isinstance(state, NeuronState):
        raise ValueError(f"{where}: state must be a NeuronState, got {type(state).__name__}")
    parts = {"m": state.m, "q": state.q} if with_q else {"m": state.m}
    if not with_q and state.q is not None:
        raise ValueError(f"{where}: a binary LIF state has no q (NeuronState(m=U, q=None))")
    out = {}
    for k, v in parts.items():
        if v is None:
            raise ValueError(f"{where}: state has no {k!r} (an integer LIF state is NeuronState(m, q))")
        v = torch.as_tensor(v)
        if tuple(v.shape) != tuple(like.shape):
            raise ValueError(f"{where}: state {k} has shape {list(v.shape)}, expected {list(like.shape)} "
                             "(one step [B, ...] of the neuron)")
        out[k] = v.detach().to(like.dtype)
    return out["m"], out.get("q")


@dataclass(frozen=True)
class NeuronTrace:
    """Result of running a neuron over ``T`` steps (see module docstring).

    ``margin`` is computed on first access (from the detached membranes the neuron kept), so a
    forward pass that never asks for it (training, tracking) does not pay for it; pass either a
    tensor or a zero-argument callable returning one."""

    q: torch.Tensor
    value: torch.Tensor
    margin_source: Union[torch.Tensor, Callable[[], torch.Tensor]] = field(repr=False)
    d: Union[int, torch.Tensor]
    #: fixed point: how many state updates were clamped to the state width (0 in floating point)
    saturated: int = 0
    #: the final state (:class:`NeuronState`, detached) to carry into the next call; None for a
    #: stateless neuron
    state: Optional[NeuronState] = None

    @property
    def margin(self) -> torch.Tensor:
        src = self.margin_source
        if callable(src):
            src = src()
            object.__setattr__(self, "margin_source", src)  # computed once
        return src


def check_firing_limit(d, where: str = "neuron") -> int:
    """Return ``d`` as a Python int after checking it is an integer >= 1.

    Raises ValueError naming ``where`` otherwise (D = 0, 2.5, -1, True are all rejected).
    """
    if isinstance(d, bool) or not isinstance(d, (int,)) and not (
        isinstance(d, float) and d.is_integer()
    ):
        raise ValueError(
            f"{where}: firing limit D must be a positive integer, got {d!r}; "
            "pass an int such as D=4"
        )
    if int(d) < 1:
        raise ValueError(f"{where}: firing limit D must be >= 1, got {d!r}")
    return int(d)


class _QuantizeSTE(torch.autograd.Function):
    """Q(clamp(m, 0, D)) forward. Backward: straight through inside [0, D], zero below 0; above D
    the gradient goes to D itself when D is a tensor (DI-LIF's gate learns through it)."""

    @staticmethod
    def forward(ctx, m, d, half_up: bool):
        ctx.d_is_tensor = isinstance(d, torch.Tensor)
        d_t = torch.as_tensor(d, dtype=m.dtype, device=m.device)
        c = torch.minimum(torch.clamp(m, min=0.0), d_t)
        ctx.save_for_backward(m, d_t)
        return torch.floor(c + 0.5) if half_up else torch.round(c)

    @staticmethod
    def backward(ctx, grad):
        m, d_t = ctx.saved_tensors
        inside = (m >= 0) & (m <= d_t)
        grad_d = None
        if ctx.d_is_tensor and ctx.needs_input_grad[1]:
            above = grad * (m > d_t).to(grad.dtype)
            extra = above.dim() - d_t.dim()
            if extra:
                above = above.sum(dim=tuple(range(extra)))
            dims = tuple(i for i, n in enumerate(d_t.shape) if n == 1 and above.shape[i] != 1)
            grad_d = above.sum(dim=dims, keepdim=True) if dims else above
        return grad * inside.to(grad.dtype), grad_d, None


def quantize(m: torch.Tensor, d, rounding: str = "half_even") -> torch.Tensor:
    """``Q(clamp(m, 0, D))`` with a straight-through gradient; ``d`` may be an int or a tensor
    broadcastable to ``m``."""
    if rounding not in ROUNDING_MODES:
        raise ValueError(f"unknown rounding mode {rounding!r}; expected one of {ROUNDING_MODES}")
    return _QuantizeSTE.apply(m, d, rounding == "half_up")


def _rounding_margin(m: torch.Tensor, d) -> torch.Tensor:
    """Distance from ``m`` to the nearest rounding boundary in {0.5, 1.5, ..., D - 0.5}."""
    d_t = torch.as_tensor(d, dtype=m.dtype, device=m.device)
    nearest = torch.minimum(torch.clamp(torch.floor(m) + 0.5, min=0.5), d_t - 0.5)
    return (m - nearest).abs()


def _expand_d(d, x: torch.Tensor):
    """Broadcast a per-(t, b) firing limit of shape [T, B] against x of shape [T, B, ...]."""
    if isinstance(d, torch.Tensor):
        return d.reshape(d.shape + (1,) * (x.dim() - d.dim())).to(x.dtype)
    return d


def integer_lif(
    x: torch.Tensor,
    *,
    d,
    leaks: Optional[Union[float, torch.Tensor]] = None,
    reset_norm: float = 1.0,
    norm: float,
    rounding: str = "half_even",
    state: Optional[NeuronState] = None,
) -> NeuronTrace:
    """The shared integer LIF recurrence (module docstring).

    ``leaks``: None for a stateless neuron (every step quantizes its own input), a float used at
    every step, or a tensor whose entry ``t - 1`` is the leak applied at step ``t`` (length >= T - 1).
    ``d``: int, or a tensor ``[T, B]`` of per-step, per-sample limits (DI-LIF).
    ``state``: the :class:`NeuronState` carried from the previous call (None: the fresh start
    ``m_0 = x_0``); then ``m_0 = (state.m - state.q / reset_norm) * leak + x_0``. Only a float leak
    can carry a state. The trace's ``state`` is the final ``NeuronState(m_{T-1}, q_{T-1})``.
    """
    if x.dim() < 1:
        raise ValueError("neuron input needs a leading time axis [T, ...]")
    T = x.shape[0]
    d_b = _expand_d(d, x)
    if state is not None:
        if leaks is None:
            raise ValueError("integer LIF: a stateless neuron (leak None) carries no state; pass state=None")
        if isinstance(leaks, torch.Tensor):
            raise ValueError("integer LIF: a neuron with per-step leaks (a leak per step of the call, e.g. NI-LIF) "
                             "cannot carry its state into another call: the leak of the next call's first step "
                             "is undefined")
        m_in, q_in = _check_state(state, x[0], "integer LIF", with_q=True)
    if leaks is None:
        q = quantize(x, d_b, rounding)
        x_det = x.detach().clone()  # a copy: the caller may change x in place before the margin is asked for
        return NeuronTrace(q=q, value=q / norm, margin_source=lambda: _rounding_margin(x_det, d_b), d=d)
    if isinstance(leaks, torch.Tensor) and leaks.numel() < T - 1:
        raise ValueError(f"neuron has {leaks.numel()} per-step leaks but the input has T={T} steps")
    qs, membranes = [], []
    m_prev = q_prev = None
    for t in range(T):
        d_t = d_b[t] if isinstance(d_b, torch.Tensor) else d_b
        if t == 0 and state is None:
            m = x[0]
        elif t == 0:
            m = (m_in - q_in / reset_norm) * leaks + x[0]
        else:
            lam = leaks[t - 1] if isinstance(leaks, torch.Tensor) else leaks
            m = (m_prev - q_prev.detach() / reset_norm) * lam + x[t]
        q_t = quantize(m, d_t, rounding)
        qs.append(q_t)
        membranes.append((m.detach().clone() if t == 0 else m.detach(), d_t))  # m_0 is a view of x
        m_prev, q_prev = m, q_t
    q = torch.stack(qs)
    final = NeuronState(m=membranes[-1][0], q=q_prev.detach())
    return NeuronTrace(q=q, value=q / norm, d=d, state=final,
                       margin_source=lambda: torch.stack([_rounding_margin(mt, dt) for mt, dt in membranes]))


def multispike(x, *, d: int, norm: Optional[float] = None, rounding: str = "half_even") -> NeuronTrace:
    """Stateless MultiSpike / I-LIF (SDT v3, SDTrack): ``q = Q(clamp(x, 0, D))``, ``out = q / Norm``.

    ``norm`` defaults to D (heads use Norm = 1); ``rounding="half_up"`` is the SDT v3 large variant
    ``floor(clamp(x, 0, D) + 0.5)``.
    """
    d = check_firing_limit(d, "MultiSpike")
    return integer_lif(x, d=d, leaks=None, norm=float(norm if norm is not None else d), rounding=rounding)


def leaky_integer(x, *, d: int, leak: float = 0.25) -> NeuronTrace:
    """I-LIF with a fixed leak (SpikeYOLO): ``m_t = (m_{t-1} - q_{t-1}) * leak + x_t``,
    ``q = round(clamp(m, 0, D))``, ``out = q`` (not normalized)."""
    d = check_firing_limit(d, "leaky I-LIF")
    return integer_lif(x, d=d, leaks=float(leak), reset_norm=1.0, norm=1.0)


def nilif(x, *, d: int, decay: torch.Tensor, norm: Optional[float] = None) -> NeuronTrace:
    """NI-LIF (SpikeTrack RGB): ``m_t = (m_{t-1} - s_{t-1}) * sigmoid(a_{t-1}) + x_t`` with the
    normalized spike ``s = round(clamp(m, 0, D)) / Norm`` (Norm defaults to D) — the reset subtracts
    the normalized spike. ``decay`` holds the learnable logits ``a``; entry ``t - 1`` acts at step t."""
    d = check_firing_limit(d, "NI-LIF")
    n = float(norm if norm is not None else d)
    return integer_lif(x, d=d, leaks=torch.sigmoid(decay), reset_norm=n, norm=n)


def integer_if(x, *, d: int = 8) -> NeuronTrace:
    """Integer IF (Spike2Former decoder): ``v += x; q = round(clamp(v, 0, D)); v -= q;
    out = q / D`` (leak 1, subtract-q reset)."""
    d = check_firing_limit(d, "integer IF")
    return integer_lif(x, d=d, leaks=1.0, reset_norm=1.0, norm=float(d))


class _HeavisideSTE(torch.autograd.Function):
    """``[h > 0]`` forward; sigmoid surrogate gradient (slope 4) backward."""

    @staticmethod
    def forward(ctx, h):
        ctx.save_for_backward(h)
        return (h > 0).to(h.dtype)

    @staticmethod
    def backward(ctx, grad):
        (h,) = ctx.saved_tensors
        s = torch.sigmoid(4.0 * h)
        return grad * 4.0 * s * (1 - s)


def binary_lif(x, *, beta: float, threshold: float = 1.0, state: Optional[NeuronState] = None) -> NeuronTrace:
    """Binary LIF with soft reset (SpikeVideoFormer): ``H_t = beta * U_{t-1} + X_t``,
    ``S_t = [H_t > u_th]``, ``U_t = H_t - u_th * S_t``, ``U_{-1} = 0`` (or ``state.m``, the
    residual carried from the previous call). D = 1, out = S; ``trace.state`` = ``NeuronState(U)``."""
    if threshold <= 0:
        raise ValueError(f"binary LIF: threshold must be > 0, got {threshold}")
    qs, membranes = [], []
    u = torch.zeros_like(x[0]) if state is None else _check_state(state, x[0], "binary LIF", with_q=False)[0]
    for t in range(x.shape[0]):
        h = beta * u + x[t]
        s = _HeavisideSTE.apply(h - threshold)
        qs.append(s)
        membranes.append(h.detach())
        u = h - threshold * s
    q = torch.stack(qs)
    return NeuronTrace(q=q, value=q, d=1, state=NeuronState(m=u.detach()),
                       margin_source=lambda: torch.stack([(h - threshold).abs() for h in membranes]))


class _RoundSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, v):
        return torch.round(v)

    @staticmethod
    def backward(ctx, grad):
        return grad


def dynamic_firing_limit(x: torch.Tensor, *, d_init: int, gate_w, gate_b) -> torch.Tensor:
    """DI-LIF firing limit per step and sample (our documented choice; the paper omits it)::

        mu[t, b]    = mean(x[t, b, ...])
        alpha[t, b] = sigmoid(w * mu + b)
        D[t, b]     = clamp(round(2 * alpha * D_init), 1, 2 * D_init)

    so alpha = 0.5 gives D_init and D never exceeds ``D_max = 2 * D_init`` (the static spike window
    used by the lowering). Returns a float tensor of integers, shape [T, B] (straight-through round
    so ``w`` and ``b`` train).
    """
    mu = x.flatten(2).mean(dim=2)
    alpha = torch.sigmoid(gate_w * mu + gate_b)
    return torch.clamp(_RoundSTE.apply(2.0 * alpha * d_init), 1.0, 2.0 * d_init)


def dynamic_integer(
    x, *, d_init: int, gate_w, gate_b, leak: Optional[float] = None, rounding: str = "half_even",
    state: Optional[NeuronState] = None,
) -> NeuronTrace:
    """DI-LIF (event SpikeTrack): an I-LIF whose limit D[t, b] comes from
    :func:`dynamic_firing_limit`; ``q = Q(clamp(m, 0, D[t, b]))``, ``out = q / D_init`` (a fixed
    Norm, so the 1/Norm factor stays foldable into downstream weights while D varies per frame).
    ``leak=None`` is stateless; a float makes it leaky with subtract-q reset. ``state``: the
    ``NeuronState(m, q)`` carried from the previous call (:func:`integer_lif`); D of every step
    comes from that step's input alone (D holds no state)."""
    d_init = check_firing_limit(d_init, "DI-LIF")
    if x.dim() < 3:
        raise ValueError("DI-LIF input needs shape [T, B, ...] with at least one feature axis")
    d = dynamic_firing_limit(x, d_init=d_init, gate_w=gate_w, gate_b=gate_b)
    return integer_lif(x, d=d, leaks=leak, reset_norm=1.0, norm=float(d_init), rounding=rounding, state=state)


# ---------------------------------------------------------------------------------------------
# fixed point (Loihi-style integers; IR ops FixedIntegerLIF / FixedBinaryLIF / FixedDynamicIntegerLIF)
# ---------------------------------------------------------------------------------------------


def _as_int64(x: torch.Tensor, where: str) -> torch.Tensor:
    xi = x.to(torch.int64)
    if x.is_floating_point() and not torch.equal(xi.to(x.dtype), x):
        raise ValueError(f"{where}: fixed-point input is not integer-valued (max fraction "
                         f"{(x - xi.to(x.dtype)).abs().max().item():.3g}); quantize the graph first")
    return xi


def _saturate(v: torch.Tensor, bits: int):
    """``clamp(v, -(2**(bits-1) - 1), 2**(bits-1) - 1)`` and the number of clamped elements."""
    hi = (1 << (bits - 1)) - 1
    n = int(((v > hi) | (v < -hi)).sum())
    return v.clamp(-hi, hi), n


def fixed_decay(p: torch.Tensor, leak: int) -> torch.Tensor:
    """Loihi's decay of a state by a 12-bit fraction: ``sign(p) * ((|p| * leak) >> 12)``
    (truncation toward zero, lava-nc ``AbstractPyLifModelFixed.subthr_dynamics``)."""
    return torch.sign(p) * ((p.abs() * int(leak)) >> 12)


def _round_units(v: torch.Tensor, unit: int, rounding: str) -> torch.Tensor:
    """``R(v / unit)`` exactly in integers: round half up, or half to even (a tie is
    ``v + unit/2`` divisible by ``unit``)."""
    shifted = v + unit // 2
    n = torch.div(shifted, unit, rounding_mode="floor")
    if rounding == "half_even":
        tie = torch.remainder(shifted, unit) == 0
        n = torch.where(tie & (torch.remainder(n, 2) == 1), n - 1, n)
    return n


def fixed_integer_lif(x: torch.Tensor, *, d: int, unit: int, reset: int, leak=None,
                      rounding: str = "half_even", state_bits: int = 24,
                      state: Optional[NeuronState] = None) -> NeuronTrace:
    """The fixed-point integer LIF (:class:`spikedeploy.ir.ops.FixedIntegerLIF`) on integer input
    ``x`` ``[T, B, ...]`` (int64 arithmetic); ``d`` an int, or (DI-LIF,
    :func:`fixed_dynamic_integer_lif`) an integer tensor ``[T, B]`` of per-step limits. ``q`` is
    returned as float64 counts, ``margin`` is the distance of the state to the nearest rounding
    boundary in membrane units (never 0 except on an exact tie, which the tie rule decides),
    ``saturated`` the number of clamped state updates.
    ``state``: ``NeuronState(v, q)`` (integers) carried from the previous call, then ``v_0 =
    sat(decay(v - reset * q) + x_0)`` (an int leak only); ``trace.state`` is the final one (int64)."""
    xi = _as_int64(x, "fixed-point integer LIF")
    T = xi.shape[0]
    d_steps = None  # DI-LIF (fixed_dynamic_integer_lif): an int64 limit per step and sample [T, B]
    if isinstance(d, torch.Tensor):
        d_steps = d.to(torch.int64).reshape(tuple(d.shape) + (1,) * (xi.dim() - d.dim()))
    if isinstance(leak, (tuple, list)) and len(leak) < T - 1:
        raise ValueError(f"neuron has {len(leak)} per-step leaks but the input has T={T} steps")
    if state is not None:
        if leak is None:
            raise ValueError("fixed-point integer LIF: a stateless neuron (leak None) carries no state; pass state=None")
        if isinstance(leak, (tuple, list)):
            raise ValueError("fixed-point integer LIF: a neuron with per-step leaks cannot carry its state into "
                             "another call (the leak of the next call's first step is undefined)")
        v_in, q_in = (_as_int64(a, "fixed-point integer LIF state")
                      for a in _check_state(state, xi[0].to(torch.float64), "fixed-point integer LIF", True))
    qs, states, sat = [], [], 0
    v_prev = q_prev = None
    for t in range(T):
        if leak is not None and t == 0 and state is not None:
            v = fixed_decay(v_in - reset * q_in, leak) + xi[0]
        elif leak is None or t == 0:
            v = xi[t]
        else:
            lam = leak[t - 1] if isinstance(leak, (tuple, list)) else leak
            v = fixed_decay(v_prev - reset * q_prev, lam) + xi[t]
        v, n = _saturate(v, state_bits)
        sat += n
        q = _round_units(v, unit, rounding).clamp(min=0)
        q = q.clamp(max=d) if d_steps is None else torch.minimum(q, d_steps[t])
        qs.append(q)
        states.append(v)
        v_prev, q_prev = v, q
    q = torch.stack(qs)

    def margin():  # as _rounding_margin, in membrane units
        vs = torch.stack(states).to(torch.float64) / unit
        return _rounding_margin(vs, d if d_steps is None else _expand_d(d_steps[:T], vs))

    qf = q.to(torch.float64)
    final = None if leak is None else NeuronState(m=states[-1].clone(), q=q_prev.clone())
    return NeuronTrace(q=qf, value=qf, margin_source=margin, saturated=sat, state=final,
                       d=int(d) if d_steps is None else d.to(torch.float64))


def fixed_binary_lif(x: torch.Tensor, *, beta: int, threshold: int, state_bits: int = 24,
                     state: Optional[NeuronState] = None) -> NeuronTrace:
    """The fixed-point binary LIF (:class:`spikedeploy.ir.ops.FixedBinaryLIF`): int64, strict
    threshold, soft reset, Loihi decay; ``saturated`` counts clamped updates. ``state``:
    ``NeuronState(u)`` (integers) carried from the previous call; ``trace.state`` the final one."""
    xi = _as_int64(x, "fixed-point binary LIF")
    qs, hs, sat = [], [], 0
    if state is None:
        u = torch.zeros_like(xi[0])
    else:
        u = _as_int64(_check_state(state, xi[0].to(torch.float64), "fixed-point binary LIF", False)[0],
                      "fixed-point binary LIF state")
    for t in range(xi.shape[0]):
        h, n = _saturate(fixed_decay(u, beta) + xi[t], state_bits)
        sat += n
        s = (h > threshold).to(torch.int64)
        qs.append(s)
        hs.append(h)
        u = h - threshold * s
    q = torch.stack(qs).to(torch.float64)
    return NeuronTrace(q=q, value=q, d=1, saturated=sat, state=NeuronState(m=u.clone()),
                       margin_source=lambda: torch.stack([(h - threshold).abs().to(torch.float64) for h in hs]))


#: the integer input sum of a fixed DI-LIF stays below this bound (the thresholds' range,
#: :data:`spikedeploy.ir.ops.THRESHOLD_LIMIT`)
_SUM_LIMIT = 1 << 53


def fixed_dynamic_limit(x: torch.Tensor, *, sign: int, thresholds) -> torch.Tensor:
    """The fixed DI-LIF's limit per step and sample (:class:`spikedeploy.ir.ops.FixedDynamicIntegerLIF`)::

        S[t, b] = sum_i x[t, b, i]          (the layer's integer input, exact in int64)
        D[t, b] = 1 + #{k : sign * S[t, b] >= thresholds[k - 2]}

    Returns D as int64 ``[T, B]``. The thresholds stand for the float gate
    ``clamp(round(2 sigmoid(w S / (N unit) + b) D_init), 1, 2 D_init)``
    (:func:`spikedeploy.ir.ops.dilif_thresholds`; integer comparisons only, no sigmoid)."""
    xi = _as_int64(x, "fixed-point DI-LIF")
    if xi.dim() < 3:
        raise ValueError("fixed-point DI-LIF input needs shape [T, B, ...] with at least one feature axis")
    flat = xi.flatten(2)
    if flat.numel() and int(flat.abs().max()) * flat.shape[2] >= _SUM_LIMIT:
        raise ValueError("fixed-point DI-LIF: the input sum may exceed 2**53 (the thresholds' range); quantize "
                         "the graph first")
    s = flat.sum(dim=2) * int(sign)
    th = torch.as_tensor([int(v) for v in thresholds], dtype=torch.int64)
    return 1 + (s.unsqueeze(-1) >= th).sum(dim=-1)


def fixed_dynamic_integer_lif(x: torch.Tensor, *, d_init: int, unit: int, reset: int, sign: int, thresholds,
                              leak=None, rounding: str = "half_even", state_bits: int = 24,
                              state: Optional[NeuronState] = None) -> NeuronTrace:
    """The fixed-point DI-LIF (:class:`spikedeploy.ir.ops.FixedDynamicIntegerLIF`): the limit of
    every step from :func:`fixed_dynamic_limit` (that step's input alone: D holds no state), then
    :func:`fixed_integer_lif` with that limit. ``state``: ``NeuronState(v, q)`` (integers) carried
    from the previous call, exactly as :func:`fixed_integer_lif`; ``trace.d`` is D ``[T, B]``
    (float64 integers, as the float DI-LIF's)."""
    d_init = check_firing_limit(d_init, "fixed-point DI-LIF")
    if len(thresholds) != 2 * d_init - 1:
        raise ValueError(f"fixed-point DI-LIF needs 2 * d_init - 1 = {2 * d_init - 1} thresholds, got {len(thresholds)}")
    d = fixed_dynamic_limit(x, sign=sign, thresholds=thresholds)
    return fixed_integer_lif(x, d=d, unit=unit, reset=reset, leak=leak, rounding=rounding, state_bits=state_bits,
                             state=state)
