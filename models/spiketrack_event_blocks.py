"""Building blocks of the event SpikeTrack (:mod:`spikedeploy.models.spiketrack_event`).

Written from the seed paper's description ("SpikeTrack: High-performance and Energy-efficient
Event-Based Object Tracking with Spiking Neural Network", CVPR 2026; no official code). Conventions
as in the RGB SpikeTrack blocks (:mod:`spikedeploy.models.spiketrack_blocks`):

* activations are ``[T, B, C, H, W]`` (or ``[T, B, C, N]`` for tokens). Here the time axis is the
  **search-frame index** (MSST: consecutive search frames are consecutive time steps) in the search
  branch and T = 1 (the single template frame) in the template branch;
* stateless layers run on ``x.flatten(0, 1)`` and are reshaped back to ``[T, B, ...]``;
* every neuron is leaky, so its membrane carries from frame to frame (no reset between frames):
  the I-LIF layers of the conv stage and head are :class:`~spikedeploy.models.neurons.LeakyIntegerLIF`
  (SpikeYOLO's I-LIF: emits the integer q, the 1/D factor lives in the next layer's weights), the
  transformer's are :class:`EventDILIF` (DI-LIF, emits q / D_init);
* spike x spike products happen only inside the leaf modules
  :class:`~spikedeploy.models.layers.SpikeLinearAttention` (search-search attention),
  :class:`~spikedeploy.models.spiketrack_blocks.MemoryWrite` (template ``K_t^T V_t``) and
  :class:`FrameMemoryRead` (search queries reading it).
"""

from __future__ import annotations

from typing import Callable, Tuple

import torch
from torch import nn

from spikedeploy import neurons as sem

from .layers import SpikeLinearAttention
from .neurons import DILIF, LeakyIntegerLIF, SpikingNeuron
from .spiketrack_blocks import CenterHead, MemoryRead, MemoryWrite, SepConv

__all__ = [
    "DILIF_SCOPES",
    "StreamingNeuron",
    "EventILIF",
    "EventDILIF",
    "FrameMemoryRead",
    "EventConvBlock",
    "EventDownSampling",
    "EventSelfAttention",
    "EventMLP",
    "EventBlock",
    "EventCenterHead",
]

NeuronFactory = Callable[[], SpikingNeuron]

#: DI-LIF scopes of the firing-limit statistic: per sample (the toolchain's DI-LIF rule, always at
#: inference) or per batch (the seed's training rule)
DILIF_SCOPES = ("sample", "batch")


class StreamingNeuron:
    """Mixin: a leaky integer neuron that can keep its membrane between calls (frame-by-frame
    inference with MSST state: ``start_stream()``, then each ``trace(x)`` continues from the last
    step of the previous call; ``stop_stream()`` returns to the stateless-per-call behaviour).

    While streaming, each call is :func:`spikedeploy.neurons.integer_lif` (subtract-q reset,
    ``reset_norm = 1``) given the ``NeuronState`` the previous call ended with::

        m_t = x_t                                  (first step of the stream)
        m_t = (m_{t-1} - q_{t-1} / 1.0) * leak + x_t
        q_t = quantize(m_t, D_t, rounding)

    so a neuron fed its input in pieces gives bit for bit its outputs on the whole input in one call
    (the whole model: bit for bit in float64, tested).
    The state is detached (inference)."""

    _stream = None

    def start_stream(self) -> None:
        self._stream = {}

    def stop_stream(self) -> None:
        self._stream = None

    @property
    def streaming(self) -> bool:
        return self._stream is not None

    def _stream_trace(self, x: torch.Tensor, d) -> sem.NeuronTrace:
        prev = self._stream.get("state")  # None at the first call: the fresh start m_0 = x_0
        trace = sem.integer_lif(x, d=d, leaks=float(self.leak), reset_norm=1.0, norm=self.norm,
                                rounding=self.rounding, state=prev)
        self._stream["state"] = trace.state
        return trace


class EventILIF(StreamingNeuron, LeakyIntegerLIF):
    """The event model's I-LIF: :class:`~spikedeploy.models.neurons.LeakyIntegerLIF` (``m_t =
    (m_{t-1} - q_{t-1}) * leak + x_t``, ``q = round(clamp(m, 0, D))``, emits q; captured by its rule)
    that can stream (:class:`StreamingNeuron`)."""

    def trace(self, x):
        if self.streaming:
            return self._stream_trace(x, self.d)
        return super().trace(x)


class EventDILIF(StreamingNeuron, DILIF):
    """DI-LIF with the seed's optional **batch** scope for training.

    ``scope="sample"`` (default; always in eval mode) is :class:`~spikedeploy.models.neurons.DILIF`
    exactly: ``D[t, b] = clamp(round(2 * sigmoid(gate_w * mean(x[t, b]) + gate_b) * d_init), 1,
    2 * d_init)``. ``scope="batch"`` in training mode takes the mean over the batch too, as the seed
    does ("adaptive to input statistics per batch")::

        mu[t]   = mean(x[t, :, ...])             (over samples and features)
        D[t, b] = clamp(round(2 * sigmoid(gate_w * mu[t] + gate_b) * d_init), 1, 2 * d_init)

    so every sample of a step shares one D. In eval mode the per-sample rule applies whatever the
    scope: at inference B = 1, where both rules are the same number (the mean over one sample), and
    the captured IR op (:class:`~spikedeploy.ir.ops.DynamicIntegerLIF`) is per sample. The
    dynamics are those of :func:`spikedeploy.neurons.integer_lif` with that D (no re-implementation).
    """

    def __init__(self, d_init: int = 6, leak=None, gate_w: float = 1.0, gate_b: float = 0.0,
                 scope: str = "sample"):
        super().__init__(d_init=d_init, leak=leak, gate_w=gate_w, gate_b=gate_b)
        if scope not in DILIF_SCOPES:
            raise ValueError(f"EventDILIF: scope must be one of {DILIF_SCOPES}, got {scope!r}")
        self.scope = scope

    def firing_limit(self, x: torch.Tensor) -> torch.Tensor:
        """``D[t, b]`` for ``x [T, B, ...]`` under the active rule (batch scope only in training)."""
        if self.scope == "batch" and self.training:
            T, B = x.shape[0], x.shape[1]
            d = sem.dynamic_firing_limit(x.reshape(T, 1, -1), d_init=self.d_init, gate_w=self.gate_w,
                                         gate_b=self.gate_b)
            return d.expand(T, B)
        return super().firing_limit(x)

    def trace(self, x):
        if self.streaming:
            if self.leak is None:
                raise ValueError("EventDILIF: a stateless DI-LIF (leak=None) has no state to stream")
            return self._stream_trace(x, self.firing_limit(x))
        if self.scope == "batch" and self.training:
            return sem.integer_lif(x, d=self.firing_limit(x), leaks=self.leak, reset_norm=1.0,
                                   norm=float(self.d_init), rounding=self.rounding)
        return super().trace(x)

    def extra_repr(self):
        return f"{super().extra_repr()}, scope={self.scope!r}"


class FrameMemoryRead(MemoryRead):
    """:class:`~spikedeploy.models.spiketrack_blocks.MemoryRead` whose memory may have **one** step
    for all T search frames: ``kv [1, B or 1, heads, C/heads, Cv/heads]`` is read by every frame
    (the template memory is per sequence). Captured by MemoryRead's rule (``T_mem = 1``: every
    macro-step reads the same memory); numerically the same matmul (broadcast over T)."""

    def forward(self, q: torch.Tensor, kv: torch.Tensor) -> torch.Tensor:
        if isinstance(q, torch.Tensor) and isinstance(kv, torch.Tensor) and kv.dim() == 5 and kv.shape[0] == 1:
            if q.shape[0] != 1:
                kv = kv.expand((q.shape[0],) + tuple(kv.shape[1:]))
        return super().forward(q, kv)


def _linear_bn(c_in: int, c_out: int) -> nn.Sequential:
    """A per-token linear layer (``Conv1d`` k = 1 with bias) + ``BatchNorm1d`` on ``[T*B, C, N]``."""
    return nn.Sequential(nn.Conv1d(c_in, c_out, 1), nn.BatchNorm1d(c_out))


class EventConvBlock(nn.Module):
    """The seed's conv block: ``U' = U + SNNSepConv(U)`` (a membrane shortcut). SNNSepConv: I-LIF ->
    pointwise 1x1 (C -> 2C) + BN -> I-LIF -> depthwise kxk + BN -> I-LIF -> pointwise 1x1 (2C -> C) + BN
    ("Pointwise -> Depthwise -> Pointwise, each preceded by an I-LIF layer"), no biases."""

    def __init__(self, dim: int, neuron: NeuronFactory, kernel_size: int = 7):
        super().__init__()
        # the RGB SpikeTrack's separable conv (PW -> DW -> PW, each after a neuron) with the
        # event model's I-LIF and trainable BatchNorm
        self.sepconv = SepConv(dim, kernel_size, kernel_size // 2, neuron=neuron, norm=nn.BatchNorm2d)

    def forward(self, x):
        return x + self.sepconv(x)


class EventDownSampling(nn.Module):
    """(I-LIF ->) Conv2d with bias -> BatchNorm2d. The first one (``neuron=None``) sees the voxel
    grid's event counts: a host layer on real-valued input (counted as MACs)."""

    def __init__(self, c_in: int, c_out: int, neuron, kernel_size: int = 3, stride: int = 2, padding: int = 1):
        super().__init__()
        self.first_layer = neuron is None
        if not self.first_layer:
            self.encode_spike = neuron()
        self.encode_conv = nn.Conv2d(c_in, c_out, kernel_size, stride, padding=padding)
        self.encode_bn = nn.BatchNorm2d(c_out)

    def forward(self, x):
        T, B = x.shape[0], x.shape[1]
        if not self.first_layer:
            x = self.encode_spike(x)
        x = self.encode_bn(self.encode_conv(x.flatten(0, 1)))
        return x.reshape(T, B, x.shape[1], x.shape[2], x.shape[3])


class EventSelfAttention(nn.Module):
    """The seed's spike self-attention ``SSA = (Q_s K_s^T / sqrt(d_h)) V_s`` in the spike-driven order
    ``Q_s (K_s^T V_s) / sqrt(d_h)`` (per head, d_h = C / heads), with the template contribution kept
    as a per-sequence memory. Tokens ``[T, B, C, N]``::

        x -> DI-LIF -> q, k, v = DI-LIF(BN(W_{q,k,v} x))      (per-token linear layers)
        template (write):  out = Q_t (K_t^T V_t) / sqrt(d_h),   memory M = K_t^T V_t
        search (forward):  out = Q_s M / sqrt(d_h) + Q_s (K_s^T V_s) / sqrt(d_h)
                               = Q_s (K_t^T V_t + K_s^T V_s) / sqrt(d_h)
        -> DI-LIF -> BN(W_proj .)

    The search line is exactly the seed's attention of the search queries over the concatenated
    template and search tokens (``[K_t; K_s]^T [V_t; V_s] = K_t^T V_t + K_s^T V_s``); the template
    tokens attend to template tokens only (asymmetric, so the template runs once per sequence).
    """

    def __init__(self, dim: int, num_heads: int, neuron: NeuronFactory):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"EventSelfAttention: dim {dim} is not divisible by num_heads {num_heads}")
        self.dim = dim
        self.num_heads = num_heads
        scale = (dim // num_heads) ** -0.5
        self.head_spike = neuron()
        self.q_conv = _linear_bn(dim, dim)
        self.k_conv = _linear_bn(dim, dim)
        self.v_conv = _linear_bn(dim, dim)
        self.q_spike = neuron()
        self.k_spike = neuron()
        self.v_spike = neuron()
        self.attn = SpikeLinearAttention(num_heads, scale=scale)
        self.memory_write = MemoryWrite(num_heads)
        self.memory_read = FrameMemoryRead(num_heads, scale=scale)
        self.attn_spike = neuron()
        self.proj_conv = _linear_bn(dim, dim)

    def _qkv(self, x):
        T, B, C, N = x.shape
        x = self.head_spike(x).flatten(0, 1)
        q = self.q_spike(self.q_conv(x).reshape(T, B, C, N))
        k = self.k_spike(self.k_conv(x).reshape(T, B, C, N))
        v = self.v_spike(self.v_conv(x).reshape(T, B, C, N))
        return q, k, v

    def _project(self, x):
        T, B, C, N = x.shape
        x = self.attn_spike(x)
        return self.proj_conv(x.flatten(0, 1)).reshape(T, B, C, N)

    def write(self, x) -> Tuple[torch.Tensor, torch.Tensor]:
        """Template branch: tokens ``[1, B, C, N]`` -> (residual branch ``[1, B, C, N]``, memory
        ``K_t^T V_t`` ``[1, B, heads, C/heads, C/heads]``)."""
        q, k, v = self._qkv(x)
        return self._project(self.attn(q, k, v)), self.memory_write(k, v)

    def forward(self, x, memory):
        """Search branch: tokens ``[T, B, C, N]`` and the template memory ``[1, B or 1, heads, C/heads,
        C/heads]`` (read by every frame) -> residual branch ``[T, B, C, N]``."""
        q, k, v = self._qkv(x)
        return self._project(self.memory_read(q, memory) + self.attn(q, k, v))


class EventMLP(nn.Module):
    """Token MLP: DI-LIF -> linear (C -> rC) + BN1d -> DI-LIF -> linear (rC -> C) + BN1d."""

    def __init__(self, dim: int, hidden: int, neuron: NeuronFactory):
        super().__init__()
        self.hidden = hidden
        self.fc1_spike = neuron()
        self.fc1 = _linear_bn(dim, hidden)
        self.fc2_spike = neuron()
        self.fc2 = _linear_bn(hidden, dim)

    def forward(self, x):
        T, B, C, N = x.shape
        x = self.fc1(self.fc1_spike(x).flatten(0, 1)).reshape(T, B, self.hidden, N)
        return self.fc2(self.fc2_spike(x).flatten(0, 1)).reshape(T, B, C, N)


class EventBlock(nn.Module):
    """DI-LIF transformer block: ``x += SSA(x); x += MLP(x)`` (membrane shortcuts)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: int, neuron: NeuronFactory):
        super().__init__()
        self.attn = EventSelfAttention(dim, num_heads, neuron)
        self.mlp = EventMLP(dim, dim * mlp_ratio, neuron)

    def write(self, x):
        """Template branch: ``(x', memory)``."""
        a, memory = self.attn.write(x)
        x = x + a
        return x + self.mlp(x), memory

    def forward(self, x, memory):
        x = x + self.attn(x, memory)
        return x + self.mlp(x)


class EventCenterHead(CenterHead):
    """The I-LIF tracking head: the RGB SpikeTrack center head
    (:class:`~spikedeploy.models.spiketrack_blocks.CenterHead`, same layout and key names) with the
    event model's I-LIF neurons. ``x [T, B, C, H, W]`` -> neuron -> three branches (center score,
    offset, size) of four 3x3 conv + BN + neuron layers (``c, c/2, c/4, c/8``) and a 1x1 conv.
    Returns raw maps ``(score_logits [T,B,1,H,W], size_logits [T,B,2,H,W], offset [T,B,2,H,W])``,
    one per search frame; sigmoid and box decoding are host steps."""

    def __init__(self, inplanes: int, channel: int, neuron: NeuronFactory):
        super().__init__(inplanes, channel, neuron=neuron)


def leaky_ilif(d: int, leak: float) -> EventILIF:
    """The event model's I-LIF (:class:`EventILIF`)."""
    return EventILIF(d=d, leak=leak)
