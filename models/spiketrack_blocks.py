"""Building blocks of SpikeTrack (RGB): the Spike-Driven Transformer v3 backbone with NI-LIF
neurons, the Memory Retrieval Module (MRM) and the center head.

Written from the official code's architecture (faicaiwawa/SpikeTrack, files
``lib/models/spiketrack/sdtv3_search_inference.py``, ``sdtv3_temp_inference.py``, ``decoder.py``,
``fuc.py``, ``ni_lif.py``). Attribute names and the registration order of parameters reproduce the
official ``state_dict`` layout exactly, so an official checkpoint loads strictly; see
:mod:`spikedeploy.models.spiketrack` for the whole model.

Conventions (SDT v3 style, as in :mod:`spikedeploy.models.sdt_test`):

* activations are ``[T, B, C, H, W]`` (or ``[T, B, C, N]`` for tokens); the time axis is the
  **template index** (T = 1 or 3) in the template branch and T = 1 in the search branch;
* stateless layers run on ``x.flatten(0, 1)`` and are reshaped back to ``[T, B, ...]``;
* every neuron is :class:`~spikedeploy.models.neurons.NILIF` with D = 4 and ``time_steps=4``
  (the official ``mem_update(time_step=4)``: ``decay`` of shape (3,));
* spike x spike products only happen inside the leaf modules
  :class:`~spikedeploy.models.layers.SpikeLinearAttention` (self-attention),
  :class:`MemoryWrite` (template ``k^T v``) and :class:`MemoryRead` (search ``q`` reading it);
* no Python control flow depends on tensor values; the few Python branches depend on the
  configuration (number of templates, stage resolution) only.

Numerics: the float32 operations are those of the official code, in the same order (convolutions
on the same shapes, ``FrozenBatchNorm`` as ``x * scale + shift``, ``nn.BatchNorm`` where the
official code has a non-frozen BatchNorm, the attention scale ``head_dim ** -0.5 * 2``). The spike
products themselves are exact in float32 (multiples of 1/4 summed over at most 576 tokens), so
their evaluation order does not matter.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .layers import FrozenBatchNorm1d, FrozenBatchNorm2d, SpikeLinearAttention
from .neurons import NILIF

__all__ = [
    "FIRING_LIMIT",
    "NEURON_TIME_STEPS",
    "POSITION_EMBEDDINGS",
    "nilif",
    "SepConv",
    "ConvBlock",
    "TokenMLP",
    "SelfAttention",
    "Block",
    "DownSampling",
    "MemoryWrite",
    "MemoryRead",
    "GateMLP",
    "TemplateGate",
    "host_gate_softmax",
    "Retriever",
    "MemoryRetrieval",
    "CenterHead",
]

FIRING_LIMIT = 4  #: D of every NI-LIF layer
NEURON_TIME_STEPS = 4  #: official ``mem_update(time_step=4)``: 3 leaks, so at most 3 templates
POSITION_EMBEDDINGS = 4  #: ``t_pos_embeds`` holds 4 template embeddings; template t uses ``min(t, 3)``


def nilif() -> NILIF:
    """The SpikeTrack neuron: NI-LIF, D = 4, normalized output ``q / 4``, ``decay`` of shape (3,)."""
    return NILIF(d=FIRING_LIMIT, time_steps=NEURON_TIME_STEPS)


def _conv_bn(c_in: int, c_out: int, norm: Callable[[int], nn.Module], kernel_size: int = 1,
             padding: int = 0, groups: int = 1, bias: bool = False) -> nn.Sequential:
    """``Conv2d`` + BatchNorm as ``nn.Sequential`` (keys ``.0.weight``, ``.1.*``): the official
    ``make_conv_layer``."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel_size, 1, padding=padding, groups=groups, bias=bias),
        norm(c_out),
    )


def _check_templates(templates: int) -> int:
    if isinstance(templates, bool) or not isinstance(templates, int) or not 1 <= templates < NEURON_TIME_STEPS:
        raise ValueError(
            f"SpikeTrack: templates must be an int in 1..{NEURON_TIME_STEPS - 1} (the NI-LIF neurons "
            f"hold {NEURON_TIME_STEPS - 1} per-step leaks), got {templates!r}"
        )
    return templates


def _add_positions(x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """``x [T, B, C, H, W] + pos`` with ``pos`` of shape ``[1, C, H*W]`` (search) or
    ``[T, 1, C, H*W]`` (one embedding per template)."""
    T, B, C, H, W = x.shape
    return (x.reshape(T, B, C, H * W) + pos).reshape(T, B, C, H, W)


def _template_positions(embeds: nn.ParameterList, templates: int) -> torch.Tensor:
    """The per-template embeddings ``[T, 1, C, N]``: template t uses ``t_pos_embeds[min(t, 3)]``."""
    return torch.stack([embeds[min(t, len(embeds) - 1)] for t in range(templates)], dim=0)


# ---------------------------------------------------------------------------------------------
# backbone
# ---------------------------------------------------------------------------------------------


class SepConv(nn.Module):
    """Inverted separable convolution (official ``SepConv_Spike``): neuron -> 1x1 conv + FBN ->
    neuron -> depthwise kxk conv + FBN -> neuron -> 1x1 conv + FBN; expansion 2, no biases."""

    def __init__(self, dim: int, kernel_size: int = 7, padding: int = 3, expansion: int = 2, *,
                 neuron: Callable[[], nn.Module] = None, norm: Callable[[int], nn.Module] = FrozenBatchNorm2d):
        super().__init__()
        neuron = neuron or nilif  # another model's neurons (the event SpikeTrack's I-LIF) and BatchNorm
        med = int(expansion * dim)
        self.spike1 = neuron()
        self.pwconv1 = _conv_bn(dim, med, norm)
        self.spike2 = neuron()
        self.dwconv = _conv_bn(med, med, norm, kernel_size, padding, groups=med)
        self.spike3 = neuron()
        self.pwconv2 = _conv_bn(med, dim, norm)

    def forward(self, x):
        T, B, C, H, W = x.shape
        x = self.spike1(x)
        x = self.pwconv1(x.flatten(0, 1)).reshape(T, B, -1, H, W)
        x = self.spike2(x)
        x = self.dwconv(x.flatten(0, 1)).reshape(T, B, -1, H, W)
        x = self.spike3(x)
        x = self.pwconv2(x.flatten(0, 1)).reshape(T, B, -1, H, W)
        return x


class ConvBlock(nn.Module):
    """Official ``MS_ConvBlock_spike_SepConv``: ``x = x + SepConv7(x)``, then
    ``x + bn2(conv2(neuron(bn1(conv1(neuron(x))))))`` with 3x3 convs (ratio ``mlp_ratio``)."""

    def __init__(self, dim: int, mlp_ratio: int = 4):
        super().__init__()
        self.Conv = SepConv(dim)
        self.mlp_ratio = mlp_ratio
        self.spike1 = nilif()
        self.conv1 = nn.Conv2d(dim, dim * mlp_ratio, kernel_size=3, padding=1, bias=False)
        self.bn1 = FrozenBatchNorm2d(dim * mlp_ratio)
        self.spike2 = nilif()
        self.conv2 = nn.Conv2d(dim * mlp_ratio, dim, kernel_size=3, padding=1, bias=False)
        self.bn2 = FrozenBatchNorm2d(dim)

    def forward(self, x):
        T, B, C, H, W = x.shape
        x = self.Conv(x) + x
        x_feat = x
        x = self.spike1(x)
        x = self.bn1(self.conv1(x.flatten(0, 1))).reshape(T, B, self.mlp_ratio * C, H, W)
        x = self.spike2(x)
        x = self.bn2(self.conv2(x.flatten(0, 1))).reshape(T, B, C, H, W)
        return x_feat + x


class TokenMLP(nn.Module):
    """Official ``MS_MLP``: neuron -> Conv1d(C, hidden) + BN1d -> neuron -> Conv1d(hidden, C) +
    BN1d over the ``H*W`` tokens. ``frozen`` picks FrozenBatchNorm1d (backbone) or
    ``nn.BatchNorm1d`` (the MRM's MLP, as in the official code)."""

    def __init__(self, in_features: int, hidden_features: int, frozen: bool = True):
        super().__init__()
        self.fc1_conv = nn.Conv1d(in_features, hidden_features, kernel_size=1, stride=1)
        self.fc1_spike = nilif()
        self.fc2_conv = nn.Conv1d(hidden_features, in_features, kernel_size=1, stride=1)
        self.fc2_spike = nilif()
        norm = FrozenBatchNorm1d if frozen else nn.BatchNorm1d
        self.fc1_bn = norm(hidden_features)
        self.fc2_bn = norm(in_features)
        self.c_hidden = hidden_features

    def forward(self, x):
        T, B, C, H, W = x.shape
        N = H * W
        x = x.flatten(3)
        x = self.fc1_spike(x)
        x = self.fc1_bn(self.fc1_conv(x.flatten(0, 1))).reshape(T, B, self.c_hidden, N)
        x = self.fc2_spike(x)
        x = self.fc2_bn(self.fc2_conv(x.flatten(0, 1))).reshape(T, B, C, H, W)
        return x


class SelfAttention(nn.Module):
    """Official ``MS_Attention_linear_3d`` (lamda_ratio 4): position embedding -> neuron ->
    q, k (C channels) and v (4C) by 1x1 conv + FBN -> neurons ->
    ``SpikeLinearAttention(q, k, v)`` with scale ``2 * head_dim ** -0.5`` (official
    ``(q @ (k^T @ v)) * scale * 2``) -> neuron -> 1x1 conv + FBN back to C.

    The search branch adds ``s_pos_embed``; the template branch adds ``t_pos_embeds[min(t, 3)]`` to
    template t (``forward(x, template=True)``, with ``T == templates``)."""

    def __init__(self, dim: int, num_heads: int, num_tokens: int, templates: int = 1, lamda_ratio: int = 4):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"SelfAttention: dim {dim} is not divisible by num_heads {num_heads}")
        self.dim = dim
        self.num_heads = num_heads
        self.templates = _check_templates(templates)
        self.lamda_ratio = lamda_ratio
        # registration order = official state_dict order
        self.head_spike = nilif()
        self.q_spike = nilif()
        self.k_spike = nilif()
        self.v_spike = nilif()
        self.attn_spike = nilif()
        self.q_conv = _conv_bn(dim, dim, FrozenBatchNorm2d)
        self.k_conv = _conv_bn(dim, dim, FrozenBatchNorm2d)
        self.v_conv = _conv_bn(dim, dim * lamda_ratio, FrozenBatchNorm2d)
        self.proj_conv = _conv_bn(dim * lamda_ratio, dim, FrozenBatchNorm2d)
        self.s_pos_embed = nn.Parameter(torch.zeros(1, dim, num_tokens))
        self.t_pos_embeds = nn.ParameterList(
            [nn.Parameter(torch.zeros(1, dim, num_tokens)) for _ in range(POSITION_EMBEDDINGS)]
        )
        self.attn = SpikeLinearAttention(num_heads, scale=(dim // num_heads) ** -0.5 * 2)

    def forward(self, x, template: bool = False):
        T, B, C, H, W = x.shape
        N = H * W
        pos = _template_positions(self.t_pos_embeds, self.templates) if template else self.s_pos_embed
        x = _add_positions(x, pos)
        x = self.head_spike(x)
        x = x.flatten(0, 1)
        q = self.q_spike(self.q_conv(x).reshape(T, B, C, N))
        k = self.k_spike(self.k_conv(x).reshape(T, B, C, N))
        v = self.v_spike(self.v_conv(x).reshape(T, B, C * self.lamda_ratio, N))
        x = self.attn(q, k, v).reshape(T, B, C * self.lamda_ratio, H, W)
        x = self.attn_spike(x)
        return self.proj_conv(x.flatten(0, 1)).reshape(T, B, C, H, W)


class Block(nn.Module):
    """Official ``MS_Block_Spike_SepConv``: ``x += SepConv3(x); x += attn(x); x += mlp(x)``."""

    def __init__(self, dim: int, num_heads: int, num_tokens: int, templates: int = 1, mlp_ratio: int = 4):
        super().__init__()
        self.conv = SepConv(dim, kernel_size=3, padding=1)
        self.attn = SelfAttention(dim, num_heads, num_tokens, templates)
        self.mlp = TokenMLP(dim, dim * mlp_ratio, frozen=True)

    def forward(self, x, template: bool = False):
        x = x + self.conv(x)
        x = x + self.attn(x, template)
        x = x + self.mlp(x)
        return x


class DownSampling(nn.Module):
    """Official ``MS_DownSampling``: (neuron ->) Conv2d with bias -> FrozenBatchNorm2d. The first
    one sees the normalized image and has no neuron (a host layer on real-valued pixels)."""

    def __init__(self, in_channels: int, embed_dims: int, kernel_size: int = 3, stride: int = 2,
                 padding: int = 1, first_layer: bool = False):
        super().__init__()
        self.encode_conv = nn.Conv2d(in_channels, embed_dims, kernel_size=kernel_size, stride=stride,
                                     padding=padding)
        self.encode_bn = FrozenBatchNorm2d(embed_dims)
        self.first_layer = first_layer
        if not first_layer:
            self.encode_spike = nilif()

    def forward(self, x):
        T, B = x.shape[0], x.shape[1]
        if not self.first_layer:
            x = self.encode_spike(x)
        x = self.encode_conv(x.flatten(0, 1))
        x = self.encode_bn(x)
        return x.reshape(T, B, x.shape[1], x.shape[2], x.shape[3]).contiguous()  # as official (layout)


# ---------------------------------------------------------------------------------------------
# memory retrieval
# ---------------------------------------------------------------------------------------------


def _split_heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """``[T, B, C, N]`` -> ``[T, B, heads, N, C / heads]`` (channels split into contiguous groups)."""
    T, B, C, N = x.shape
    return x.transpose(-1, -2).reshape(T, B, N, num_heads, C // num_heads).permute(0, 1, 3, 2, 4).contiguous()


class MemoryWrite(nn.Module):
    """Template memory of one MRM (leaf module, no parameters): ``kv_h = K_h^T V_h``.

    ``forward(k, v)``: ``k`` of shape ``[T, B, C, N]``, ``v`` of shape ``[T, B, Cv, N]`` (spikes,
    channels then tokens); channels split into ``num_heads`` contiguous groups. Returns the memory
    ``[T, B, heads, C / heads, Cv / heads]`` (the official ``cross_block_k`` cache entry), one per
    template t. A spike x spike product: exact in float32 for SpikeTrack's sizes.

    Attribute read by a capture rule: ``num_heads``.
    """

    def __init__(self, num_heads: int):
        super().__init__()
        self.num_heads = int(num_heads)

    def forward(self, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        if isinstance(k, torch.Tensor) and (k.dim() != 4 or v.dim() != 4 or k.shape[:2] != v.shape[:2]
                                            or k.shape[3] != v.shape[3]):
            raise ValueError(
                f"MemoryWrite: expected k [T, B, C, N] and v [T, B, Cv, N], got {tuple(k.shape)} and {tuple(v.shape)}"
            )
        kh = _split_heads(k, self.num_heads)
        vh = _split_heads(v, self.num_heads)
        return kh.transpose(-2, -1) @ vh

    def extra_repr(self):
        return f"num_heads={self.num_heads}"


class MemoryRead(nn.Module):
    """Memory retrieval (leaf module, no parameters): the search ``q`` reads the cached template
    memory, ``out_h = scale * Q_h @ kv_h``.

    ``forward(q, kv)``: ``q`` of shape ``[T, B, C, N]`` (spikes, channels then tokens; T = number
    of templates), ``kv`` of shape ``[T, B, heads, C / heads, Cv / heads]`` from
    :class:`MemoryWrite` (or batch 1, shared by every search sample). Returns ``[T, B, Cv, N]`` (heads concatenated along channels).
    ``scale`` is ``2 * head_dim ** -0.5`` (official ``(q @ kv) * self.scale * 2``; the factor 2
    commutes exactly with float rounding). In a spike lowering ``kv`` is a synapse whose weights are
    rewritten whenever the templates change.

    Attributes read by a capture rule: ``num_heads`` (int), ``scale`` (float).
    """

    def __init__(self, num_heads: int, scale: float):
        super().__init__()
        self.num_heads = int(num_heads)
        self.scale = float(scale)

    def forward(self, q: torch.Tensor, kv: torch.Tensor) -> torch.Tensor:
        if isinstance(q, torch.Tensor) and (
            q.dim() != 4 or kv.dim() != 5 or kv.shape[0] != q.shape[0] or kv.shape[1] not in (1, q.shape[1])
            or kv.shape[2] != self.num_heads
            or kv.shape[2] * kv.shape[3] != q.shape[2]
        ):
            raise ValueError(
                f"MemoryRead: expected q [T, B, C, N] and kv [T, B or 1, {self.num_heads}, C/{self.num_heads}, Cv/"
                f"{self.num_heads}] with the same T, got q {tuple(q.shape)} and kv {tuple(kv.shape)}"
            )
        T, B, C, N = q.shape
        x = (_split_heads(q, self.num_heads) @ kv) * self.scale  # [T, B, heads, N, Cv/heads]
        return x.permute(0, 1, 3, 2, 4).reshape(T, B, N, -1).permute(0, 1, 3, 2).contiguous()

    def extra_repr(self):
        return f"num_heads={self.num_heads}, scale={self.scale:g}"


class GateMLP(nn.Sequential):
    """The gate's ``Conv1d(N, N/2) -> NI-LIF -> Conv1d(N/2, 1)`` over inputs ``[B*Cv, N, T]``
    (channels = tokens, length = templates). Keys ``0.*``, ``1.decay``, ``2.*`` as the official
    ``nn.Sequential``; the neuron runs over the template axis (the official ``mem_update`` permutes
    ``[B*Cv, N/2, T]`` to ``[T, B*Cv, N/2]`` and back)."""

    def forward(self, x):
        x = self[0](x)
        x = self[1](x.permute(2, 0, 1)).permute(1, 2, 0)
        return self[2](x)


def host_gate_softmax(logits: torch.Tensor) -> torch.Tensor:
    """HOST: the gate's softmax over the template axis (last axis of ``[B, Cv, T]``)."""
    return F.softmax(logits, dim=-1)


class TemplateGate(nn.Module):
    """Official channel-wise ``GateModule``: fuses the T per-template retrieval results.

    ``forward(x)``: ``x`` of shape ``[T, B, Cv, H, W]`` (spikes); per channel, the spikes of the
    ``H*W`` tokens feed :class:`GateMLP` -> logits ``[B, Cv, T]`` -> **host** softmax over T
    (:func:`host_gate_softmax`) -> weighted sum over T. Returns ``[B, Cv, H, W]``. Only used with
    T > 1 (unused weights at T = 1)."""

    def __init__(self, dim: int, num_tokens: int):
        super().__init__()
        self.mlp = GateMLP(
            nn.Conv1d(num_tokens, num_tokens // 2, kernel_size=1),
            nilif(),
            nn.Conv1d(num_tokens // 2, 1, kernel_size=1),
        )

    def forward(self, x):
        T, B, C, H, W = x.shape
        x_flat = x.reshape(T, B, C, H * W).permute(1, 2, 3, 0).reshape(-1, H * W, T)  # [B*C, N, T]
        logits = self.mlp(x_flat).squeeze(1).reshape(B, C, T)
        weights = host_gate_softmax(logits)
        return (x.permute(1, 2, 0, 3, 4) * weights.unsqueeze(-1).unsqueeze(-1)).sum(dim=2)


class Retriever(nn.Module):
    """The retriever of one Memory Retrieval Module (official search ``Retriever`` and template
    ``Retriever`` merged into one module with the official search-network key layout).

    Both branches first average-pool their input to ``patches x patches`` tokens (when the stage is
    larger) and add a position embedding.

    * :meth:`write` (template branch): ``t_pos_embeds`` -> neuron -> k (C) and v (4C) by 1x1 conv
      + BN -> neurons -> :class:`MemoryWrite` -> memory ``[T, B, heads, C/heads, 4C/heads]``.
    * :meth:`forward` (search branch, ``x`` of shape ``[1, B, C, H, W]``): ``s_pos_embed`` ->
      neuron -> q by 1x1 conv + BN (``short_cut``) -> repeated over the T templates -> neuron (over
      the template axis) -> :class:`MemoryRead`; then one refinement pass: neuron -> per-template
      depthwise 3x3 and 1x1 convs (``seg_responder_dw/pw[t]``) -> ``+ short_cut`` -> neuron -> 1x1
      ``fuser`` -> neuron -> :class:`MemoryRead` again -> neuron -> (T > 1: :class:`TemplateGate`
      -> neuron) -> 1x1 ``proj_conv`` -> bilinear upsampling back to ``H x W``. Returns
      ``[1, B, C, H, W]``.
    """

    def __init__(self, dim: int, num_heads: int, patches: int, in_size: int, templates: int = 1,
                 lamda_ratio: int = 4):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"Retriever: dim {dim} is not divisible by num_heads {num_heads}")
        if in_size % patches:
            raise ValueError(f"Retriever: stage size {in_size} is not a multiple of {patches} tokens per side")
        self.dim = dim
        self.num_heads = num_heads
        self.templates = _check_templates(templates)
        self.patches = patches
        self.in_size = in_size
        exp = dim * lamda_ratio
        self.exp_dim = exp
        bn = nn.BatchNorm2d
        num_tokens = patches * patches
        # registration order = official state_dict order
        self.s_pos_embed = nn.Parameter(torch.zeros(1, dim, num_tokens))
        self.head_spike = nilif()
        self.q_conv = _conv_bn(dim, dim, bn)
        self.k_conv = _conv_bn(dim, dim, bn)
        self.v_conv = _conv_bn(dim, exp, bn)
        self.q_spike = nilif()
        self.k_spike = nilif()
        self.v_spike = nilif()
        self.attn_spike = nilif()
        self.proj_conv = _conv_bn(exp, dim, bn)
        self.gate = TemplateGate(exp, num_tokens)
        self.gate_spike = nilif()
        self.seg_responder_dw = nn.ModuleList(
            [_conv_bn(exp, exp, bn, kernel_size=3, padding=1, groups=exp) for _ in range(templates)]
        )
        self.seg_responder_pw = nn.ModuleList([_conv_bn(exp, dim, bn) for _ in range(templates)])
        self.fuser = _conv_bn(dim, dim, bn)
        self.seg_pw_spike = nilif()
        self.seg_dw_spike = nilif()
        self.fuser_spike = nilif()
        self.t_pos_embeds = nn.ParameterList(
            [nn.Parameter(torch.zeros(1, dim, num_tokens)) for _ in range(POSITION_EMBEDDINGS)]
        )
        scale = (dim // num_heads) ** -0.5 * 2
        self.memory_write = MemoryWrite(num_heads)
        self.memory_read = MemoryRead(num_heads, scale)
        if in_size != patches:
            self.pool = nn.AvgPool2d(in_size // patches)  # = official adaptive_avg_pool2d, bitwise
            self.upsample = nn.Upsample(size=(in_size, in_size), mode="bilinear", align_corners=False)
        else:
            self.pool = nn.Identity()
            self.upsample = nn.Identity()

    def _pooled(self, x):
        T, B, C = x.shape[0], x.shape[1], x.shape[2]
        return self.pool(x.flatten(0, 1)).reshape(T, B, C, self.patches, self.patches)

    def write(self, x):
        """Template branch: ``x [T, B, C, H, W]`` -> memory ``[T, B, heads, C/heads, 4C/heads]``."""
        T, B, C = x.shape[0], x.shape[1], x.shape[2]
        N = self.patches * self.patches
        x = self._pooled(x)
        x = _add_positions(x, _template_positions(self.t_pos_embeds, self.templates))
        x = self.head_spike(x).flatten(0, 1)
        k = self.k_conv(x).reshape(T, B, C, N)
        v = self.v_conv(x).reshape(T, B, self.exp_dim, N)
        v = self.v_spike(v)
        k = self.k_spike(k)
        return self.memory_write(k, v)

    def forward(self, x, kv):
        """Search branch: ``x [1, B, C, H, W]``, memory ``kv`` -> ``[1, B, C, H, W]``."""
        T, P = self.templates, self.patches
        B, C = x.shape[1], x.shape[2]
        Cv = self.exp_dim
        x = self._pooled(x)
        x = _add_positions(x, self.s_pos_embed)
        x = self.head_spike(x)
        short_cut = self.q_conv(x.flatten(0, 1)).reshape(1, B, C, P, P)
        q = self.q_spike(short_cut.flatten(3).repeat(T, 1, 1, 1))  # [T, B, C, N]
        x = self.memory_read(q, kv)  # [T, B, Cv, N]
        # refinement (the official "recurrent processing", one pass)
        q = self.q_spike(x.reshape(T, B, Cv, P, P))
        q = torch.stack([self.seg_responder_dw[t](q[t]) for t in range(T)], dim=0)
        q = self.seg_dw_spike(q)
        q = torch.stack([self.seg_responder_pw[t](q[t]) for t in range(T)], dim=0)
        q = self.seg_pw_spike(short_cut + q)
        q = self.fuser(q.flatten(0, 1)).reshape(T, B, C, P * P)
        q = self.fuser_spike(q)
        x = self.memory_read(q, kv)
        x = self.attn_spike(x.reshape(T, B, Cv, P, P))
        if T > 1:
            x = self.gate_spike(self.gate(x).unsqueeze(0))
        x = self.proj_conv(x.flatten(0, 1))
        x = self.upsample(x)
        return x.reshape(1, B, C, x.shape[2], x.shape[3])


class MemoryRetrieval(nn.Module):
    """Memory Retrieval Module (official ``MemoryRetrieval``): ``x += retriever(x, kv);
    x += mlp(x)`` in the search branch; :meth:`write` builds the memory in the template branch."""

    def __init__(self, dim: int, num_heads: int, patches: int, in_size: int, templates: int = 1,
                 mlp_ratio: int = 4):
        super().__init__()
        self.retriever = Retriever(dim, num_heads, patches, in_size, templates)
        self.mlp = TokenMLP(dim, dim * mlp_ratio, frozen=False)

    def write(self, x):
        return self.retriever.write(x)

    def forward(self, x, kv):
        x = x + self.retriever(x, kv)
        x = x + self.mlp(x)
        return x


# ---------------------------------------------------------------------------------------------
# center head
# ---------------------------------------------------------------------------------------------


def _head_conv(c_in: int, c_out: int) -> nn.Sequential:
    """Official decoder ``conv``: Conv2d 3x3 with bias + ``nn.BatchNorm2d``."""
    return nn.Sequential(nn.Conv2d(c_in, c_out, kernel_size=3, padding=1, bias=True), nn.BatchNorm2d(c_out))


class CenterHead(nn.Module):
    """Official ``CenterPredictor`` (conv type "normal"), without its host parts.

    ``forward(x)``: ``x`` of shape ``[T, B, C, H, W]`` -> neuron -> three branches (center score,
    offset, size) of four 3x3 conv + BN + neuron layers (channels ``c, c/2, c/4, c/8``) and a 1x1
    conv. Returns the raw maps ``(score_logits [T,B,1,H,W], size_logits [T,B,2,H,W],
    offset [T,B,2,H,W])``; sigmoid, mean over T and decoding are host steps
    (:func:`spikedeploy.models.spiketrack.head_maps`, :func:`~spikedeploy.models.spiketrack.decode_boxes`).
    """

    def __init__(self, inplanes: int, channel: int, *, neuron: Callable[[], nn.Module] = None):
        super().__init__()
        neuron = neuron or nilif  # another model's neurons (the event SpikeTrack's I-LIF)
        chans = [inplanes, channel, channel // 2, channel // 4, channel // 8]
        for branch, out in (("ctr", 1), ("offset", 2), ("size", 2)):
            for i in range(4):
                setattr(self, f"conv{i + 1}_{branch}", _head_conv(chans[i], chans[i + 1]))
            setattr(self, f"conv5_{branch}", nn.Conv2d(chans[4], out, kernel_size=1))
        for branch in ("ctr", "size", "offset"):
            for i in range(4):
                setattr(self, f"{branch}{i + 1}_spike", neuron())
        self.spike = neuron()

    def _branch(self, x, name):
        T, B, C, H, W = x.shape
        for i in range(1, 5):
            x = getattr(self, f"conv{i}_{name}")(x.flatten(0, 1)).reshape(T, B, -1, H, W)
            x = getattr(self, f"{name}{i}_spike")(x)
        return getattr(self, f"conv5_{name}")(x.flatten(0, 1)).reshape(T, B, -1, H, W)

    def forward(self, x):
        x = self.spike(x)
        score = self._branch(x, "ctr")
        offset = self._branch(x, "offset")
        size = self._branch(x, "size")
        return score, size, offset
