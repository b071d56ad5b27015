"""A small Spike-Driven-Transformer-v3-style network for tests and examples.

Written in the official SDT v3 / SpikeTrack code style: tensors are ``[T, B, C, H, W]``, stateless
layers run on ``x.flatten(0, 1)`` and are reshaped back to ``[T, B, ...]``, neurons run multi-step
on the time axis, and shortcuts add membrane potentials (real values), not spikes.

Layout (``dims = (c1, c2)``)::

    stem        Conv2d(in, c1, 3, p=1) + BatchNorm2d                 (host layer, real pixels)
    downsample  neuron -> Conv2d(c1, c2, 3, s=2, p=1) + BatchNorm2d
    sepconv     x = x + SepConv(x)            (neuron, 1x1, neuron, dw 3x3, neuron, 1x1; ratio 2)
    conv_block  x = x + bn2(conv2(neuron(bn1(conv1(neuron(x))))))   (3x3, ratio 2, FrozenBN2d)
    attn        x = x + Attention(x)          (pos_embed, q/k/v Conv1d + BN1d, spike linear attn)
    mlp         x = x + MLP(x)                (Conv1d(C, 2C) + BN1d, Conv1d(2C, C) + BN1d)
    head        neuron -> mean over tokens -> Linear(c2, num_classes)

:func:`init_for_spiking` re-initializes a model deterministically so that, with random weights,
every neuron layer fires on random inputs (for tests of capture, lowering and export).
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import torch
from torch import nn

from .layers import FrozenBatchNorm2d, SpikeLinearAttention, _FrozenBatchNorm
from .neurons import DILIF, NILIF, SpikingNeuron, make_neuron

__all__ = ["SDTTestNet", "init_for_spiking", "DEFAULT_INIT_GAINS"]

NeuronFactory = Callable[[], SpikingNeuron]


class SepConv(nn.Module):
    """Inverted separable convolution (MobileNetV2 style), spiking: neuron -> 1x1 conv + BN ->
    neuron -> depthwise 3x3 conv + BN -> neuron -> 1x1 conv + BN."""

    def __init__(self, dim: int, neuron: NeuronFactory, expansion: int = 2):
        super().__init__()
        med = dim * expansion
        self.spike1 = neuron()
        self.pwconv1 = nn.Sequential(nn.Conv2d(dim, med, 1, bias=False), nn.BatchNorm2d(med))
        self.spike2 = neuron()
        self.dwconv = nn.Sequential(
            nn.Conv2d(med, med, 3, padding=1, groups=med, bias=False), nn.BatchNorm2d(med)
        )
        self.spike3 = neuron()
        self.pwconv2 = nn.Sequential(nn.Conv2d(med, dim, 1, bias=False), nn.BatchNorm2d(dim))

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
    """``x + bn2(conv2(neuron(bn1(conv1(neuron(x))))))`` with 3x3 convs and frozen BatchNorm."""

    def __init__(self, dim: int, neuron: NeuronFactory, expansion: int = 2):
        super().__init__()
        self.expansion = expansion
        self.spike1 = neuron()
        self.conv1 = nn.Conv2d(dim, dim * expansion, 3, padding=1, bias=False)
        self.bn1 = FrozenBatchNorm2d(dim * expansion)
        self.spike2 = neuron()
        self.conv2 = nn.Conv2d(dim * expansion, dim, 3, padding=1, bias=False)
        self.bn2 = FrozenBatchNorm2d(dim)

    def forward(self, x):
        T, B, C, H, W = x.shape
        x_feat = x
        x = self.spike1(x)
        x = self.bn1(self.conv1(x.flatten(0, 1))).reshape(T, B, self.expansion * C, H, W)
        x = self.spike2(x)
        x = self.bn2(self.conv2(x.flatten(0, 1))).reshape(T, B, C, H, W)
        return x_feat + x


def _conv1d_bn(c_in: int, c_out: int, bias: bool = False) -> nn.Sequential:
    return nn.Sequential(nn.Conv1d(c_in, c_out, 1, bias=bias), nn.BatchNorm1d(c_out))


class Attention(nn.Module):
    """Spike-driven linear self-attention (SDT v3 ``MS_Attention_linear``), returns the residual
    branch ``proj(neuron(SpikeLinearAttention(q, k, v)))`` of shape ``[T, B, C, H, W]``."""

    def __init__(self, dim: int, num_heads: int, num_tokens: int, neuron: NeuronFactory):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"attention: dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.pos_embed = nn.Parameter(torch.zeros(1, dim, num_tokens))
        self.head_spike = neuron()
        self.q_conv = _conv1d_bn(dim, dim)
        self.k_conv = _conv1d_bn(dim, dim)
        self.v_conv = _conv1d_bn(dim, dim)
        self.q_spike = neuron()
        self.k_spike = neuron()
        self.v_spike = neuron()
        self.attn = SpikeLinearAttention(num_heads, scale=(dim // num_heads) ** -0.5 * 2)
        self.attn_spike = neuron()
        self.proj_conv = _conv1d_bn(dim, dim)

    def forward(self, x):
        T, B, C, H, W = x.shape
        N = H * W
        x = x.flatten(3) + self.pos_embed
        x = self.head_spike(x)
        x = x.flatten(0, 1)
        q = self.q_spike(self.q_conv(x).reshape(T, B, C, N))
        k = self.k_spike(self.k_conv(x).reshape(T, B, C, N))
        v = self.v_spike(self.v_conv(x).reshape(T, B, C, N))
        x = self.attn(q, k, v)
        x = self.attn_spike(x)
        x = self.proj_conv(x.flatten(0, 1)).reshape(T, B, C, H, W)
        return x


class MLP(nn.Module):
    """Token MLP: neuron -> Conv1d(C, 2C) + BN1d -> neuron -> Conv1d(2C, C) + BN1d."""

    def __init__(self, dim: int, neuron: NeuronFactory, expansion: int = 2):
        super().__init__()
        hidden = dim * expansion
        self.fc1_spike = neuron()
        self.fc1_conv = nn.Conv1d(dim, hidden, 1)
        self.fc1_bn = nn.BatchNorm1d(hidden)
        self.fc2_spike = neuron()
        self.fc2_conv = nn.Conv1d(hidden, dim, 1)
        self.fc2_bn = nn.BatchNorm1d(dim)
        self.hidden = hidden

    def forward(self, x):
        T, B, C, H, W = x.shape
        N = H * W
        x = x.flatten(3)
        x = self.fc1_spike(x)
        x = self.fc1_bn(self.fc1_conv(x.flatten(0, 1))).reshape(T, B, self.hidden, N)
        x = self.fc2_spike(x)
        x = self.fc2_bn(self.fc2_conv(x.flatten(0, 1))).reshape(T, B, C, H, W)
        return x


class SDTTestNet(nn.Module):
    """Small SDT-v3-style classifier: input ``[T, B, in_channels, H, W]`` (H = W = image_size),
    output real-valued logits ``[T, B, num_classes]``.

    ``neuron`` is a kind of :data:`spikedeploy.models.neurons.NEURON_KINDS`; every neuron is built
    with ``make_neuron(neuron, **neuron_kwargs)`` (NI-LIF also gets ``time_steps``, the largest T
    it accepts). Any T works (T <= time_steps for NI-LIF).
    """

    def __init__(
        self,
        neuron: str = "ilif",
        time_steps: int = 4,
        in_channels: int = 3,
        dims: Sequence[int] = (8, 16),
        num_heads: int = 2,
        num_classes: int = 10,
        image_size: int = 16,
        neuron_kwargs: Optional[dict] = None,
    ):
        super().__init__()
        if len(dims) != 2:
            raise ValueError(f"SDTTestNet: dims must be (c1, c2), got {dims!r}")
        c1, c2 = (int(c) for c in dims)
        kw = dict(neuron_kwargs or {})
        if neuron == "nilif":
            kw.setdefault("time_steps", time_steps)
        make_neuron(neuron, **kw)  # validate the kind and options once, with a clear error

        def new_neuron() -> SpikingNeuron:
            return make_neuron(neuron, **kw)

        self.neuron_kind = neuron
        self.time_steps = time_steps
        self.in_channels = in_channels
        self.image_size = image_size
        tokens = ((image_size + 1) // 2) ** 2  # after the stride-2 downsampling

        self.stem_conv = nn.Conv2d(in_channels, c1, 3, padding=1)
        self.stem_bn = nn.BatchNorm2d(c1)
        self.down_spike = new_neuron()
        self.down_conv = nn.Conv2d(c1, c2, 3, stride=2, padding=1, bias=False)
        self.down_bn = nn.BatchNorm2d(c2)
        self.sepconv = SepConv(c2, new_neuron)
        self.conv_block = ConvBlock(c2, new_neuron)
        self.attn = Attention(c2, num_heads, tokens, new_neuron)
        self.mlp = MLP(c2, new_neuron)
        self.head_spike = new_neuron()
        self.head = nn.Linear(c2, num_classes)

    def forward(self, x):
        T, B, C, H, W = x.shape
        x = self.stem_bn(self.stem_conv(x.flatten(0, 1))).reshape(T, B, -1, H, W)
        x = self.down_spike(x)
        x = self.down_bn(self.down_conv(x.flatten(0, 1)))
        x = x.reshape(T, B, -1, x.shape[-2], x.shape[-1])
        x = x + self.sepconv(x)
        x = self.conv_block(x)
        x = x + self.attn(x)
        x = x + self.mlp(x)
        x = self.head_spike(x)
        x = x.flatten(3).mean(-1)
        x = self.head(x.flatten(0, 1)).reshape(T, B, -1)
        return x


# (gain, attn_gain) per neuron kind: the scale of every BatchNorm-fed neuron input, and the scale of
# the q/k/v neuron inputs of attention blocks (the attention output is a product of three spike
# tensors, so its neuron is very sensitive to q/k/v activity: unnormalized leaky I-LIF spikes need a
# small scale, integer IF spikes (q / 8) a large one). Chosen so that on torch.randn inputs
# every neuron layer fires and none saturates (tests/models/test_sdt_test.py checks every kind).
DEFAULT_INIT_GAINS = {
    "ilif": (2.0, 1.5),
    "ilif_half_up": (2.0, 1.5),
    "leaky_ilif": (2.0, 0.5),
    "nilif": (2.0, 1.5),
    "integer_if": (2.0, 2.5),
    "binary_lif": (2.0, 1.0),
    "dilif": (2.0, 2.0),
}


def _is_batchnorm(module: nn.Module) -> bool:
    return isinstance(module, (nn.modules.batchnorm._BatchNorm, _FrozenBatchNorm))


@torch.no_grad()
def init_for_spiking(
    model: nn.Module,
    seed: int = 0,
    gain: Optional[float] = None,
    attn_gain: Optional[float] = None,
    example_input: Optional[torch.Tensor] = None,
) -> nn.Module:
    """Re-initialize ``model`` in place, deterministically from ``seed``, so that a random-weight
    model fires in every neuron layer (and saturates in none) on random inputs. Returns the model.

    1. Conv/Linear weights ~ N(0, 1/sqrt(fan_in)), biases ~ N(0, 0.05); parameters named
       ``pos_embed`` ~ N(0, 0.02); NI-LIF ``decay`` ~ N(0, 0.5); DI-LIF ``gate_w`` ~ N(0, 0.5),
       ``gate_b`` ~ N(0, 0.3).
    2. BatchNorm (torch and frozen): weight ~ g * U(0.6, 1.4), bias ~ g * N(0, 0.2) with
       ``g = attn_gain`` for the q/k/v projections of attention blocks, ``g = gain`` elsewhere.
    3. Running statistics are calibrated on ``example_input`` (default: seeded ``randn`` of shape
       ``[min(3, time_steps), 2, in_channels, image_size, image_size]``): one eval-mode forward pass
       in which each BatchNorm, just before it runs, sets ``running_mean = mu + N(0, 0.1) * sigma``
       and ``running_var = sigma^2 * U(0.5, 1.5)`` from the per-channel statistics of its actual
       input. So every BatchNorm output is roughly ``g * (U(0.6, 1.4) * z + N(0, 0.2))`` with z
       standardized, whatever the neuron kind and the spike rates upstream.

    ``gain``/``attn_gain`` default to :data:`DEFAULT_INIT_GAINS` for the model's ``neuron_kind``
    ((1.0, 1.0) if unknown). The training/eval flags of all modules are restored afterwards.
    """
    default_gain, default_attn_gain = DEFAULT_INIT_GAINS.get(
        getattr(model, "neuron_kind", None), (1.0, 1.0)
    )
    gain = default_gain if gain is None else float(gain)
    attn_gain = default_attn_gain if attn_gain is None else float(attn_gain)
    gen = torch.Generator().manual_seed(int(seed))

    def normal(t: torch.Tensor, std: float, mean=0.0) -> None:
        t.copy_(mean + torch.randn(t.shape, generator=gen) * std)

    def uniform(t: torch.Tensor, lo: float, hi: float) -> None:
        t.copy_(lo + (hi - lo) * torch.rand(t.shape, generator=gen))

    qkv_norms = set()
    for module in model.modules():
        if isinstance(module, Attention):
            qkv_norms.update(id(m[1]) for m in (module.q_conv, module.k_conv, module.v_conv))

    for module in model.modules():
        if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Linear)):
            normal(module.weight, 1.0 / module.weight[0].numel() ** 0.5)
            if module.bias is not None:
                normal(module.bias, 0.05)
        elif _is_batchnorm(module):
            g = attn_gain if id(module) in qkv_norms else gain
            uniform(module.weight, 0.6 * g, 1.4 * g)
            normal(module.bias, 0.2 * g)
        elif isinstance(module, NILIF):
            normal(module.decay, 0.5)
        elif isinstance(module, DILIF):
            normal(module.gate_w, 0.5)
            normal(module.gate_b, 0.3)
        for name, p in module.named_parameters(recurse=False):
            if name == "pos_embed":
                normal(p, 0.02)

    if example_input is None:
        steps = min(3, int(getattr(model, "time_steps", 3)))
        size = int(getattr(model, "image_size", 16))
        channels = int(getattr(model, "in_channels", 3))
        example_input = torch.randn(steps, 2, channels, size, size, generator=gen)
    _calibrate_batchnorm(model, example_input, gen)
    return model


def _calibrate_batchnorm(model: nn.Module, x: torch.Tensor, gen: torch.Generator) -> None:
    """Set every BatchNorm's running statistics from its input in one eval-mode forward pass."""

    def pre_hook(module, inputs):
        inp = inputs[0].detach()
        dims = [i for i in range(inp.dim()) if i != 1]
        mu = inp.mean(dim=dims)
        sigma = inp.std(dim=dims).clamp_min(1e-3)
        jitter = torch.randn(mu.shape, generator=gen)
        module.running_mean.copy_(mu + 0.1 * jitter * sigma)
        module.running_var.copy_(sigma**2 * (0.5 + torch.rand(mu.shape, generator=gen)))

    modes = {m: m.training for m in model.modules()}
    handles = [m.register_forward_pre_hook(pre_hook) for m in model.modules() if _is_batchnorm(m)]
    try:
        model.eval()
        model(x)
    finally:
        for h in handles:
            h.remove()
        for m, training in modes.items():
            m.training = training
