"""Non-neuron building blocks of the reference models: frozen BatchNorm and spike linear attention."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["FrozenBatchNorm2d", "FrozenBatchNorm1d", "SpikeLinearAttention"]


class _FrozenBatchNorm(nn.Module):
    """BatchNorm with fixed statistics and affine parameters, all stored as buffers
    ``weight, bias, running_mean, running_var`` (the official SpikeTrack layout)::

        y = (x - running_mean) / sqrt(running_var + eps) * weight + bias

    computed as ``x * scale + shift`` with ``scale = weight * rsqrt(running_var + eps)`` and
    ``shift = bias - running_mean * scale``, the order of the official code (and of a BN fold).
    A ``num_batches_tracked`` entry in a loaded state dict is ignored.
    """

    _input_dims = 0  # set by subclasses

    def __init__(self, num_features: int, eps: float = 1e-5):
        super().__init__()
        self.num_features = int(num_features)
        self.eps = float(eps)
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        state_dict.pop(prefix + "num_batches_tracked", None)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def scale_shift(self):
        """``(scale, shift)`` per channel, so that ``y = x * scale + shift``."""
        scale = self.weight * torch.rsqrt(self.running_var + self.eps)
        return scale, self.bias - self.running_mean * scale

    def forward(self, x):
        # The check is skipped for torch.fx proxies so the module stays symbolically traceable.
        if isinstance(x, torch.Tensor) and x.dim() != self._input_dims:
            raise ValueError(
                f"{type(self).__name__} expects a {self._input_dims}-D input, got shape {tuple(x.shape)}"
            )
        scale, shift = self.scale_shift()
        view = (1, -1) + (1,) * (self._input_dims - 2)
        return x * scale.reshape(view) + shift.reshape(view)

    def extra_repr(self):
        return f"{self.num_features}, eps={self.eps:g}"


class FrozenBatchNorm2d(_FrozenBatchNorm):
    """Frozen BatchNorm over ``[N, C, H, W]`` (see :class:`_FrozenBatchNorm`)."""

    _input_dims = 4


class FrozenBatchNorm1d(_FrozenBatchNorm):
    """Frozen BatchNorm over ``[N, C, L]`` (see :class:`_FrozenBatchNorm`)."""

    _input_dims = 3


class SpikeLinearAttention(nn.Module):
    """Spike x spike linear attention core of SDT v3 / SpikeTrack (no parameters).

    ``forward(q, k, v)``: ``q, k`` of shape ``[T, B, C, N]`` and ``v`` of shape ``[T, B, Cv, N]``
    (channels, then tokens). Channels are split into ``num_heads`` contiguous groups; with
    ``Q_h, K_h`` of shape ``[N, C / num_heads]`` and ``V_h`` of shape ``[N, Cv / num_heads]``::

        out_h = scale * Q_h (K_h^T V_h)          # [N, Cv / num_heads]

    evaluated in the official order: ``kv = K_h^T @ V_h`` first, then ``(Q_h @ kv) * scale``.
    The heads are concatenated back along channels; returns ``[T, B, Cv, N]``.

    Attributes read by the IR capture: ``num_heads`` (int), ``scale`` (float).
    """

    def __init__(self, num_heads: int, scale: float):
        super().__init__()
        if isinstance(num_heads, bool) or not isinstance(num_heads, int) or num_heads < 1:
            raise ValueError(f"SpikeLinearAttention: num_heads must be an int >= 1, got {num_heads!r}")
        self.num_heads = num_heads
        self.scale = float(scale)

    def _split_heads(self, x: torch.Tensor, name: str) -> torch.Tensor:
        T, B, C, N = x.shape
        if C % self.num_heads:
            raise ValueError(
                f"SpikeLinearAttention: {name} has {C} channels, not divisible by "
                f"num_heads={self.num_heads}"
            )
        # [T, B, C, N] -> [T, B, N, heads, C/heads] -> [T, B, heads, N, C/heads]
        return x.transpose(-1, -2).reshape(T, B, N, self.num_heads, C // self.num_heads).permute(
            0, 1, 3, 2, 4
        )

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        if q.dim() != 4 or k.shape != q.shape or v.dim() != 4 or v.shape[:2] != q.shape[:2] or (
            v.shape[3] != q.shape[3]
        ):
            raise ValueError(
                "SpikeLinearAttention: expected q, k of shape [T, B, C, N] and v of shape "
                f"[T, B, Cv, N]; got q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}"
            )
        T, B, Cv, N = v.shape
        qh, kh, vh = self._split_heads(q, "q"), self._split_heads(k, "k"), self._split_heads(v, "v")
        kv = kh.transpose(-2, -1) @ vh  # [T, B, heads, C/heads, Cv/heads]
        out = (qh @ kv) * self.scale  # [T, B, heads, N, Cv/heads]
        return out.permute(0, 1, 3, 2, 4).reshape(T, B, N, Cv).transpose(-1, -2).contiguous()

    def extra_repr(self):
        return f"num_heads={self.num_heads}, scale={self.scale:g}"
