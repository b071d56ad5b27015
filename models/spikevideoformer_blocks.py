"""Building blocks of SpikeVideoFormer (ICML 2025): spike-driven Hamming attention (SDHA), the
dot-product spike attention it replaces, RepConv, and the spike-driven CNN / spatiotemporal
transformer blocks. The whole model is :mod:`spikedeploy.models.spikevideoformer`.

Conventions (SDT style, as :mod:`spikedeploy.models.spiketrack_blocks`): activations are
``[T, B, C, H, W]`` with **T = the video's frames** (one frame per time step), stateless layers
run on ``x.flatten(0, 1)`` and are reshaped back, neurons run multi-step on the time axis and
carry their membrane from frame to frame, shortcuts add membrane potentials. Every neuron of the
backbone is :class:`~spikedeploy.models.neurons.BinaryLIF` (``H_t = beta U_{t-1} + X_t``,
``S_t = [H_t > u_th]``, ``U_t = H_t - u_th S_t``: binary spikes, soft reset, seed §3.1).

Spike x spike products happen only inside the leaf modules :class:`SpikeHammingAttention` (SDHA,
seed Eq. 10) and :class:`SpikeDotAttention` (seed Eq. 3), so an IR capture rule can take each of
them whole.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .neurons import BinaryLIF

__all__ = [
    "TOKEN_MODES",
    "SCORES",
    "SpikeHammingAttention",
    "SpikeDotAttention",
    "FoldedScaleLIF",
    "RepConv",
    "SepConv",
    "ChannelConv",
    "CNNBlock",
    "DownSampling",
    "SpatiotemporalAttention",
    "ChannelMLP",
    "TransformerBlock",
]

#: how the tokens of ``[T, B, C, N]`` (T frames, N = H*W spatial positions) are grouped for one
#: attention: ``joint`` one group of T*N tokens per sample (seed §3.4 (1), the default),
#: ``spatial`` one group of N tokens per frame, ``temporal`` one group of T tokens per spatial
#: position, ``factorized`` the first half of the heads spatial and the second half temporal.
TOKEN_MODES = ("joint", "spatial", "temporal", "factorized")
#: attention score functions: normalized Hamming similarity (SDHA) or the dot product (Eq. 3)
SCORES = ("hamming", "dot")

NeuronFactory = Callable[[], nn.Module]


# ---------------------------------------------------------------------------------------------
# spike attention cores (leaf modules)
# ---------------------------------------------------------------------------------------------


def _check_heads(num_heads, where: str) -> int:
    if isinstance(num_heads, bool) or not isinstance(num_heads, int) or num_heads < 1:
        raise ValueError(f"{where}: num_heads must be an int >= 1, got {num_heads!r}")
    return num_heads


class _SpikeAttentionCore(nn.Module):
    """Shared token grouping of the two attention cores (no parameters).

    ``forward(q, k, v)``: ``q, k`` of shape ``[T, B, C, N]``, ``v`` of shape ``[T, B, Cv, N]``
    (spikes; channels, then the N spatial tokens of frame t). Channels split into ``num_heads``
    contiguous groups of ``d = C / num_heads`` (``dv = Cv / num_heads``). Within every head the
    tokens are grouped by ``tokens`` (:data:`TOKEN_MODES`); each group is one attention. Returns
    ``[T, B, Cv, N]``.

    ``order``: ``"linear"`` (default) evaluates ``Q' (K'^T V)`` -- the ``d x dv`` memory first,
    cost ``O(L d dv)`` for ``L`` tokens per group -- and ``"quadratic"`` ``(Q' K'^T) V`` -- the
    ``L x L`` score matrix first, ``O(L^2 d)``; both are sums of the same integer products, so in
    float32 they are equal exactly while every partial sum stays below 2**24 (SpikeVideoFormer-55M
    at T = 32 frames of 224 x 224: at most ``d * T * N = 80 * 32 * 196 = 501,760``).
    """

    score = "?"

    def __init__(self, num_heads: int, tokens: str = "joint", order: str = "linear"):
        super().__init__()
        where = type(self).__name__
        self.num_heads = _check_heads(num_heads, where)
        if tokens not in TOKEN_MODES:
            raise ValueError(f"{where}: tokens must be one of {TOKEN_MODES}, got {tokens!r}")
        if tokens == "factorized" and num_heads % 2:
            raise ValueError(f"{where}: factorized attention splits the heads in two halves; "
                             f"num_heads={num_heads} is odd")
        if order not in ("linear", "quadratic"):
            raise ValueError(f"{where}: order must be 'linear' or 'quadratic', got {order!r}")
        self.tokens = tokens
        self.order = order

    # the +-1 maps of the score (identity for the dot product)
    def _q_map(self, q):
        return q

    def _k_map(self, k):
        return k

    def _scale(self, d: int) -> float:  # pragma: no cover - abstract
        raise NotImplementedError

    def _attend(self, q, k, v):
        """``q, k [..., L, d]``, ``v [..., L, dv]`` -> ``map(q) map(k)^T v`` in ``self.order``."""
        qm, km = self._q_map(q), self._k_map(k)
        if self.order == "linear":
            return qm @ (km.transpose(-2, -1) @ v)
        return (qm @ km.transpose(-2, -1)) @ v

    def _grouped(self, q, k, v, mode):
        """Attention of heads ``[T, B, h, N, d]`` in token mode ``mode`` (spatial/temporal/joint)."""
        T, B, h, N, _ = q.shape
        dv = v.shape[-1]
        if mode == "spatial":  # groups (t, b, head), tokens n
            return self._attend(q, k, v)
        if mode == "temporal":  # groups (b, head, n), tokens t
            perm = (1, 2, 3, 0, 4)
            out = self._attend(*(x.permute(perm) for x in (q, k, v)))  # [B, h, N, T, dv]
            return out.permute(3, 0, 1, 2, 4)
        # joint: groups (b, head), tokens (t, n)
        def flat(x):
            return x.permute(1, 2, 0, 3, 4).reshape(B, h, T * N, x.shape[-1])
        out = self._attend(flat(q), flat(k), flat(v))  # [B, h, T*N, dv]
        return out.reshape(B, h, T, N, dv).permute(2, 0, 1, 3, 4)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        where = type(self).__name__
        if (q.dim() != 4 or k.shape != q.shape or v.dim() != 4 or v.shape[:2] != q.shape[:2]
                or v.shape[3] != q.shape[3]):
            raise ValueError(f"{where}: expected q, k [T, B, C, N] and v [T, B, Cv, N]; got q "
                             f"{tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}")
        T, B, C, N = q.shape
        Cv = v.shape[2]
        h = self.num_heads
        if C % h or Cv % h:
            raise ValueError(f"{where}: {C} (q, k) and {Cv} (v) channels must be divisible by num_heads={h}")
        d, dv = C // h, Cv // h

        def heads(x, c):  # [T, B, h*c, N] -> [T, B, h, N, c]
            return x.reshape(T, B, h, c, N).transpose(-1, -2)

        qh, kh, vh = heads(q, d), heads(k, d), heads(v, dv)
        if self.tokens == "factorized":
            half = h // 2
            out = torch.cat([self._grouped(qh[:, :, :half], kh[:, :, :half], vh[:, :, :half], "spatial"),
                             self._grouped(qh[:, :, half:], kh[:, :, half:], vh[:, :, half:], "temporal")], dim=2)
        else:
            out = self._grouped(qh, kh, vh, self.tokens)
        out = out.transpose(-1, -2).reshape(T, B, Cv, N)  # heads concatenated along channels
        return out * self._scale(d)

    def extra_repr(self):
        return f"num_heads={self.num_heads}, tokens={self.tokens!r}, order={self.order!r}"


class SpikeHammingAttention(_SpikeAttentionCore):
    """Spike-driven Hamming attention, the product inside seed Eq. 10 (leaf module, no parameters)::

        SDHA = SN( scale * (2 Q_s - 1) [ (2 K_s - 1)^T V_s ] ),   scale = 1 / (2 d)

    per head and token group (:class:`_SpikeAttentionCore`), ``d`` = the head's q/k channels.
    Row i of ``(2Q - 1)(2K - 1)^T`` is ``d - 2 Hamming(q_i, k_j)``, so
    ``scale * (2q_i - 1).(2k_j - 1) = f_H(q_i, k_j) - 1/2`` (seed Eqs. 6, 8: the normalized
    Hamming similarity without its constant 1/2).

    This module returns ``scale * (2Q - 1)[(2K - 1)^T V]`` (``scaled=True``, the default); the
    neuron SN is the block's next module. **Where the 1/(2d) goes**: the bracket is an integer
    (``|.| <= d * L`` for ``L`` tokens); this module multiplies it by ``scale`` once, as the last
    operation (a power of two for d = 2^k, so then exact). The deployed blocks fold the scale into
    the threshold of the binary LIF that follows (seed: ``SN_2D``, threshold ``2d u_th``;
    ``scaled=False`` below, and ``spikedeploy.passes.fold_scale`` for captured graphs that keep
    the scale): that neuron is homogeneous --
    ``H = beta U + X``, ``S = [H > th]``, ``U = H - th S`` give the same spikes for ``(c X, c th)``
    as for ``(X, th)`` -- so it integrates the integer bracket against threshold ``u_th / scale``.
    ``(2Q - 1)`` and ``(2K - 1)`` are +-1 maps: a spike-driven implementation counts the spikes of
    ``K^T V`` and subtracts the column sums of V (``(2K - 1)^T V = 2 K^T V - 1^T V``), no multiply.

    ``scaled=False`` (what :class:`SpatiotemporalAttention` builds): the module returns the
    integer bracket itself and the neuron after it is a :class:`FoldedScaleLIF` with threshold
    ``2d u_th`` -- seed Eq. 10's ``SN_2D`` -- so the deployed network computes exactly (integers and
    dyadic membranes in float64) whatever d is; with the scale applied here, ``scale * X`` rounds
    for d not a power of two (d = 20: 1/40) and a membrane that equals the threshold exactly can
    fire in float and not in exact arithmetic (measured: 342 of 1.6 M binary LIF steps on random
    even brackets, none for d = 16).

    Attributes read by a capture rule: ``num_heads`` (int), ``tokens`` (str), ``score``
    ("hamming"), ``scaled`` (bool); the scale is ``1 / (2 d)`` with ``d = C / num_heads`` of the q
    input, or 1 when not ``scaled``.
    """

    score = "hamming"

    def __init__(self, num_heads: int, tokens: str = "joint", order: str = "linear", scaled: bool = True):
        super().__init__(num_heads, tokens, order)
        #: False: return the integer bracket; the next neuron holds the scale (FoldedScaleLIF)
        self.scaled = bool(scaled)

    def _q_map(self, q):
        return 2.0 * q - 1.0

    def _k_map(self, k):
        return 2.0 * k - 1.0

    def _scale(self, d: int) -> float:
        return 1.0 / (2.0 * d) if self.scaled else 1.0

    def extra_repr(self):
        return super().extra_repr() + ("" if self.scaled else ", scaled=False")


class SpikeDotAttention(_SpikeAttentionCore):
    """Dot-product spike attention of SDSA (seed Eq. 3), the comparison to SDHA (leaf module)::

        SDSA = SN( scale * Q_s (K_s^T V_s) )

    with a fixed ``scale`` (Meta-SpikeFormer: 0.125; the seed's ``SN_s`` with threshold scale s),
    the same heads and token groups as :class:`SpikeHammingAttention`. Attributes read by a
    capture rule: ``num_heads``, ``tokens``, ``score`` ("dot"), ``scale`` (float)."""

    score = "dot"

    def __init__(self, num_heads: int, tokens: str = "joint", order: str = "linear", scale: float = 0.125):
        super().__init__(num_heads, tokens, order)
        self.scale = float(scale)
        if not self.scale > 0:
            raise ValueError(f"SpikeDotAttention: scale must be > 0, got {scale!r}")

    def _scale(self, d: int) -> float:
        return self.scale

    def extra_repr(self):
        return super().extra_repr() + f", scale={self.scale:g}"


class FoldedScaleLIF(BinaryLIF):
    """``SN(scale * X)`` computed as ``SN_2D(X)``: the binary LIF of SDHA's output (seed Eq. 10),
    the scale ``1/factor`` (``factor = 2d``) folded into its threshold ``factor * u_th``.

    Forward: :class:`BinaryLIF` with ``threshold = factor * u_th`` on the unscaled input ``X``
    (the integer Hamming bracket). Its spikes are those of ``BinaryLIF(threshold=u_th)`` on
    ``X / factor`` -- **proof** (s = 1/factor > 0): with ``U_{-1} = U'_{-1} = 0``, suppose
    ``U_{t-1} = s U'_{t-1}``; then ``H_t = beta U_{t-1} + s X_t = s (beta U'_{t-1} + X_t) = s H'_t``
    (the leak multiplies the residual: linear, no rest potential or additive leak),
    ``S_t = [s H'_t > u_th] = [H'_t > u_th / s] = S'_t`` (s > 0) and ``U_t = s H'_t - u_th S_t =
    s (H'_t - (u_th / s) S'_t) = s U'_t`` (subtractive reset by the threshold, which scales with
    it); by induction the spikes agree at every step and the residuals differ by the factor s.
    A carried state must be scaled too (``U' = U / s``); a non-homogeneous leak (Loihi's truncating
    fixed-point decay, a rest potential, a clamp) would break it -- the fixed-point form is
    quantized on the folded neuron itself. In float64 the folded form is exact (integer inputs,
    dyadic ``beta = 1/2`` and an integer threshold keep every membrane a short dyadic rational),
    while ``X / factor`` rounds for factor not a power of two.

    Training: the surrogate gradient is the unfolded neuron's -- the backward pass runs
    ``BinaryLIF(u_th)`` on ``X / factor`` (its value is added and subtracted, so the forward value
    is the folded neuron's exactly) -- so training is that of ``SN(X / (2d))``.

    Attributes: ``factor`` (int), ``u_th`` (the unfolded threshold), ``threshold`` (``factor *
    u_th``, what the IR's binary LIF gets), ``beta``.
    """

    def __init__(self, beta: float = 0.5, threshold: float = 1.0, factor: int = 1):
        if isinstance(factor, bool) or not isinstance(factor, int) or factor < 1:
            raise ValueError(f"FoldedScaleLIF: factor must be an int >= 1, got {factor!r}")
        super().__init__(beta=beta, threshold=float(threshold) * factor)
        self.factor = factor
        self.u_th = float(threshold)

    def trace(self, x):
        tr = super().trace(x)
        if torch.is_grad_enabled() and x.requires_grad:
            soft = BinaryLIF(beta=self.beta, threshold=self.u_th).trace(x / self.factor).q
            q = tr.q.detach() + (soft - soft.detach())
            tr = dataclasses.replace(tr, q=q, value=q)
        return tr

    def extra_repr(self):
        return f"beta={self.beta:g}, threshold={self.threshold:g} (= {self.factor} x {self.u_th:g})"


# ---------------------------------------------------------------------------------------------
# convolution blocks
# ---------------------------------------------------------------------------------------------


def _bn_zero_response(bn: nn.BatchNorm2d) -> torch.Tensor:
    """What an eval-mode BatchNorm outputs for a zero input: ``bias - mean * weight / sqrt(var + eps)``."""
    return bn.bias - bn.running_mean * bn.weight / torch.sqrt(bn.running_var + bn.eps)


class RepConv(nn.Module):
    """Re-parameterizable convolution (RepVGG style, the q/k/v/proj convs of Meta-SpikeFormer)::

        RepConv(x) = BN2( pw1x1( dw3x3( pad_c( BN1( conv1x1(x) ) ) ) ) )

    ``conv1x1``: C_in -> C_in, no bias; ``pad_c``: one pixel of padding with the value BN1 gives a
    zero input (``c = bias - mean * weight / sqrt(var + eps)``, running statistics); ``dw3x3``
    depthwise, no bias; ``pw1x1``: C_in -> C_out, no bias. Because the padding is BN1's response to
    zero, the whole is exactly one 3x3 convolution with bias on the zero-padded input
    (:meth:`fused_parameters`, :meth:`reparameterize`).

    Computed in a form the IR capture takes as it is (standard layers and one constant)::

        dw3x3(pad_c(y)) = dw3x3(pad_0(y)) + border,   border = dw3x3(pad_c(0))   [1, C_in, H, W]

    (``pad_c(y) = pad_0(y) + pad_c(0)``; the ``border`` map is non-zero on the outermost ring only
    and does not depend on the input). The deployed network keeps this unfused form -- same
    parameters as training (15.1 M / 55.4 M); the fused 3x3 conv would hold 9 C_in C_out weights
    instead of about 2 C_in C_out, and which linear chains to fuse is the toolchain's choice
    (``FuseLinearChains`` skips fusions that grow the synapse count).
    """

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.c_in, self.c_out = int(c_in), int(c_out)
        self.conv1x1 = nn.Conv2d(c_in, c_in, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_in)
        self.dwconv = nn.Conv2d(c_in, c_in, 3, padding=1, groups=c_in, bias=False)
        self.pwconv = nn.Conv2d(c_in, c_out, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.fused: Optional[nn.Conv2d] = None

    @property
    def is_fused(self) -> bool:
        return self.fused is not None

    def border(self, height: int, width: int) -> torch.Tensor:
        """The constant ``dw3x3(pad_c(0))`` of shape ``[1, C_in, height, width]``."""
        ring = F.pad(torch.zeros((1, self.c_in, height, width), dtype=self.dwconv.weight.dtype), (1, 1, 1, 1),
                     value=1.0)
        return F.conv2d(ring * _bn_zero_response(self.bn1).reshape(1, -1, 1, 1), self.dwconv.weight,
                        groups=self.c_in)

    def forward(self, x):
        if self.fused is not None:
            return self.fused(x)
        y = self.dwconv(self.bn1(self.conv1x1(x)))
        y = y + self.border(x.shape[-2], x.shape[-1])
        return self.bn2(self.pwconv(y))

    @torch.no_grad()
    def fused_parameters(self) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(weight [C_out, C_in, 3, 3], bias [C_out])`` of the equivalent 3x3 conv with padding 1
        (float64, eval-mode statistics)."""
        if self.fused is not None:
            return self.fused.weight.double().clone(), self.fused.bias.double().clone()

        def affine(bn):
            s = bn.weight.double() / torch.sqrt(bn.running_var.double() + bn.eps)
            return s, bn.bias.double() - bn.running_mean.double() * s

        s1, b1 = affine(self.bn1)
        s2, b2 = affine(self.bn2)
        w1 = self.conv1x1.weight.double()[:, :, 0, 0] * s1[:, None]  # [C, C_in], BN1 folded
        wd = self.dwconv.weight.double()[:, 0]  # [C, 3, 3]
        w2 = self.pwconv.weight.double()[:, :, 0, 0] * s2[:, None]  # [C_out, C], BN2 folded
        # K[o, i, u, v] = sum_c w2[o, c] wd[c, u, v] w1[c, i]
        weight = torch.einsum("oc,cuv,ci->oiuv", w2, wd, w1)
        bias = w2 @ (wd.sum(dim=(1, 2)) * b1) + b2
        return weight, bias

    @torch.no_grad()
    def reparameterize(self) -> None:
        """Replace the branches by the equivalent single 3x3 convolution (in place; optional: the
        registered networks keep the unfused form, see the class docstring)."""
        if self.fused is not None:
            return
        weight, bias = self.fused_parameters()
        dtype = self.conv1x1.weight.dtype
        conv = nn.Conv2d(self.c_in, self.c_out, 3, padding=1, bias=True, dtype=dtype)
        conv.weight.copy_(weight.to(dtype))
        conv.bias.copy_(bias.to(dtype))
        for name in ("conv1x1", "bn1", "dwconv", "pwconv", "bn2"):
            delattr(self, name)
        self.fused = conv

    def extra_repr(self):
        return f"{self.c_in}, {self.c_out}, fused={self.is_fused}"


def _conv_bn(c_in, c_out, kernel_size=1, padding=0, groups=1, bias=False) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, kernel_size, padding=padding, groups=groups, bias=bias),
                         nn.BatchNorm2d(c_out))


class SepConv(nn.Module):
    """Seed Eq. 1: ``SepConv(U) = Conv_pw(Conv_dw(SN(Conv_pw(SN(U)))))`` -- neuron -> 1x1 (C -> 2C)
    + BN -> neuron -> depthwise kxk (no BN) -> 1x1 (2C -> C) + BN (Meta-SpikeFormer's SepConv)."""

    def __init__(self, dim: int, neuron: NeuronFactory, kernel_size: int = 7, expansion: int = 2):
        super().__init__()
        med = int(expansion * dim)
        self.spike1 = neuron()
        self.pwconv1 = _conv_bn(dim, med)
        self.spike2 = neuron()
        self.dwconv = nn.Conv2d(med, med, kernel_size, padding=kernel_size // 2, groups=med, bias=False)
        self.pwconv2 = _conv_bn(med, dim)

    def forward(self, x):
        T, B, C, H, W = x.shape
        x = self.pwconv1(self.spike1(x).flatten(0, 1)).reshape(T, B, -1, H, W)
        x = self.pwconv2(self.dwconv(self.spike2(x).flatten(0, 1)))
        return x.reshape(T, B, C, H, W)


class ChannelConv(nn.Module):
    """Seed Eq. 1: ``ChannelConv(U) = Conv(SN(Conv(SN(U))))`` -- neuron -> 3x3 (C -> ratio C) + BN
    -> neuron -> 3x3 (ratio C -> C) + BN."""

    def __init__(self, dim: int, neuron: NeuronFactory, ratio: int = 4):
        super().__init__()
        self.spike1 = neuron()
        self.conv1 = _conv_bn(dim, dim * ratio, 3, padding=1)
        self.spike2 = neuron()
        self.conv2 = _conv_bn(dim * ratio, dim, 3, padding=1)

    def forward(self, x):
        T, B, C, H, W = x.shape
        x = self.conv1(self.spike1(x).flatten(0, 1)).reshape(T, B, -1, H, W)
        return self.conv2(self.spike2(x).flatten(0, 1)).reshape(T, B, C, H, W)


class CNNBlock(nn.Module):
    """Spike-driven CNN block (seed Eq. 1): ``U' = U + SepConv(U)``, ``U'' = U' + ChannelConv(U')``."""

    def __init__(self, dim: int, neuron: NeuronFactory, kernel_size: int = 7, ratio: int = 4):
        super().__init__()
        self.sepconv = SepConv(dim, neuron, kernel_size)
        self.channel_conv = ChannelConv(dim, neuron, ratio)

    def forward(self, x):
        x = x + self.sepconv(x)
        return x + self.channel_conv(x)


class DownSampling(nn.Module):
    """``[neuron ->] Conv kxk / stride (bias) + BN``; the stem (``neuron=None``) has no neuron: it
    is the host layer on real-valued pixels, frame t's response is the input current of step t."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int = 3, stride: int = 2,
                 neuron: Optional[NeuronFactory] = None):
        super().__init__()
        self.spike = neuron() if neuron is not None else None
        self.conv = nn.Conv2d(c_in, c_out, kernel_size, stride=stride, padding=kernel_size // 2)
        self.bn = nn.BatchNorm2d(c_out)

    def forward(self, x):
        T, B = x.shape[0], x.shape[1]
        if self.spike is not None:
            x = self.spike(x)
        x = self.bn(self.conv(x.flatten(0, 1)))
        return x.reshape(T, B, x.shape[1], x.shape[2], x.shape[3])


# ---------------------------------------------------------------------------------------------
# spatiotemporal transformer
# ---------------------------------------------------------------------------------------------


class SpatiotemporalAttention(nn.Module):
    """Spike-driven space-time attention (seed Eq. 2; App. C, Fig. 5), returns the residual branch::

        X = SN(U);  Q, K, V = SN(BN(RepConv(X)))  (three, C -> C);
        A = SN(core(Q, K, V));  out = BN(RepConv(A))

    ``core`` = :class:`SpikeHammingAttention` (``score="hamming"``) or :class:`SpikeDotAttention`
    (``"dot"``, scale ``dot_scale``), over the token groups ``tokens`` (joint / spatial / temporal /
    factorized). ``neuron`` builds every binary LIF; after SDHA the neuron is
    ``SN_2D`` = :class:`FoldedScaleLIF` with the same beta and u_th and the scale 1/(2d) folded into
    its threshold (the core returns the integer bracket, ``scaled=False``)."""

    def __init__(self, dim: int, num_heads: int, neuron: NeuronFactory, tokens: str = "joint",
                 score: str = "hamming", dot_scale: float = 0.125):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"SpatiotemporalAttention: dim {dim} is not divisible by num_heads {num_heads}")
        if score not in SCORES:
            raise ValueError(f"SpatiotemporalAttention: score must be one of {SCORES}, got {score!r}")
        self.dim = dim
        self.head_spike = neuron()
        self.q_conv = nn.Sequential(RepConv(dim, dim), nn.BatchNorm2d(dim))
        self.k_conv = nn.Sequential(RepConv(dim, dim), nn.BatchNorm2d(dim))
        self.v_conv = nn.Sequential(RepConv(dim, dim), nn.BatchNorm2d(dim))
        self.q_spike = neuron()
        self.k_spike = neuron()
        self.v_spike = neuron()
        if score == "hamming":  # SN_2D: the 1/(2d) scale folded into the neuron's threshold (FoldedScaleLIF)
            self.attn = SpikeHammingAttention(num_heads, tokens, scaled=False)
            probe = neuron()
            self.attn_spike = FoldedScaleLIF(probe.beta, probe.threshold, 2 * (dim // num_heads))
        else:
            self.attn = SpikeDotAttention(num_heads, tokens, scale=dot_scale)
            self.attn_spike = neuron()
        self.proj_conv = nn.Sequential(RepConv(dim, dim), nn.BatchNorm2d(dim))

    def qkv(self, x):
        """The spike query, key and value ``[T, B, C, N]`` of the membrane input ``x [T, B, C, H, W]``."""
        T, B, C, H, W = x.shape
        x = self.head_spike(x).flatten(0, 1)
        q = self.q_spike(self.q_conv(x).reshape(T, B, C, H * W))
        k = self.k_spike(self.k_conv(x).reshape(T, B, C, H * W))
        v = self.v_spike(self.v_conv(x).reshape(T, B, C, H * W))
        return q, k, v

    def forward(self, x):
        T, B, C, H, W = x.shape
        q, k, v = self.qkv(x)
        a = self.attn_spike(self.attn(q, k, v))
        return self.proj_conv(a.reshape(T, B, C, H, W).flatten(0, 1)).reshape(T, B, C, H, W)


class ChannelMLP(nn.Module):
    """Seed Eq. 2: ``ChannelMLP(U) = MLP(SN(MLP(SN(U))))`` -- neuron -> Conv1d(C, ratio C) + BN1d ->
    neuron -> Conv1d(ratio C, C) + BN1d over the H*W tokens (Meta-SpikeFormer's MS_MLP)."""

    def __init__(self, dim: int, neuron: NeuronFactory, ratio: int = 4):
        super().__init__()
        self.hidden = dim * ratio
        self.fc1_spike = neuron()
        self.fc1 = nn.Sequential(nn.Conv1d(dim, self.hidden, 1), nn.BatchNorm1d(self.hidden))
        self.fc2_spike = neuron()
        self.fc2 = nn.Sequential(nn.Conv1d(self.hidden, dim, 1), nn.BatchNorm1d(dim))

    def forward(self, x):
        T, B, C, H, W = x.shape
        x = self.fc1(self.fc1_spike(x.flatten(3)).flatten(0, 1)).reshape(T, B, self.hidden, H * W)
        return self.fc2(self.fc2_spike(x).flatten(0, 1)).reshape(T, B, C, H, W)


class TransformerBlock(nn.Module):
    """Spike-driven spatiotemporal transformer block (seed Eq. 2)::

        joint / factorized:  U' = U + Attn(U)
        hierarchical:        U' = U + Attn_spatial(U);  U' = U' + Attn_temporal(U')
        all:                 U'' = U' + ChannelMLP(U')

    ``attention`` is ``"joint"`` (one SDHA over the T*N tokens of a sample), ``"hierarchical"``
    (spatial SDHA over the N tokens of each frame, then temporal SDHA over the T frames of each
    position, each with its own q/k/v/proj and its own residual; twice the parameters) or
    ``"factorized"`` (one set of q/k/v; half of the heads attend spatially, half temporally, the
    halves concatenated before the projection).
    """

    ATTENTIONS = ("joint", "hierarchical", "factorized")

    def __init__(self, dim: int, num_heads: int, neuron: NeuronFactory, attention: str = "joint",
                 score: str = "hamming", mlp_ratio: int = 4, dot_scale: float = 0.125):
        super().__init__()
        if attention not in self.ATTENTIONS:
            raise ValueError(f"TransformerBlock: attention must be one of {self.ATTENTIONS}, got {attention!r}")
        self.attention = attention
        if attention == "hierarchical":
            self.attn = SpatiotemporalAttention(dim, num_heads, neuron, "spatial", score, dot_scale)
            self.attn_temporal = SpatiotemporalAttention(dim, num_heads, neuron, "temporal", score, dot_scale)
        else:
            self.attn = SpatiotemporalAttention(dim, num_heads, neuron, attention, score, dot_scale)
            self.attn_temporal = None
        self.mlp = ChannelMLP(dim, neuron, mlp_ratio)

    def forward(self, x):
        x = x + self.attn(x)
        if self.attn_temporal is not None:
            x = x + self.attn_temporal(x)
        return x + self.mlp(x)


def binary_lif(beta: float, threshold: float) -> NeuronFactory:
    """A factory of :class:`BinaryLIF` neurons with decay ``beta`` and threshold ``threshold``."""

    def make():
        return BinaryLIF(beta=beta, threshold=threshold)

    return make
