"""SpikeVideoFormer: a spike-driven video transformer with spike-driven Hamming attention (SDHA).

Written from the seed paper ("SpikeVideoFormer: An Efficient Spike-Driven Video Transformer with
Hamming Attention and O(T) Complexity", ICML 2025: §3, Table 7, App. C) and the architecture of
Meta-SpikeFormer (Spike-Driven Transformer v2), on which the seed builds ("we adopt the same
model architecture settings"). Blocks in :mod:`spikedeploy.models.spikevideoformer_blocks`.

Architecture (Table 7; C = 32 for 15M, 64 for 55M; input ``[T, B, 3, H, W]``, T = frames)::

    stem      Conv 7x7 / 2 (3 -> C) + BN                      host layer on pixels (MACs)
    stage 1   CNN block (C)             H/2                  U' = U + SepConv(U); U'' = U' + ChannelConv(U')
              down: SN -> Conv 3x3 / 2 + BN (C -> 2C)
              CNN block (2C)            H/4
    stage 2   down (2C -> 4C); 2 CNN blocks (4C)       H/8
    stage 3   down (4C -> 8C); 6 transformer blocks (8C)  H/16   U' = U + Attn(U); U'' = U' + ChannelMLP(U')
    stage 4   down: SN -> Conv 3x3 / 1 + BN (8C -> 10C); 2 transformer blocks (10C)  H/16
              (15M: 360 channels instead of 10C = 320, see SpikeVideoFormerConfig)
    head      SN -> mean over the H/16 x W/16 positions -> Linear(10C, classes): logits per frame
              [T, B, classes]; the clip's class is argmax of the mean over T (HOST, clip_logits)

SepConv: pw 1x1 (C -> 2C) + BN, SN, dw 7x7, pw 1x1 + BN (after an SN); ChannelConv: two 3x3
convs (ratio 4) with BN, each after an SN; Attn: SN, q/k/v = SN(BN(RepConv)), SDHA, SN,
BN(RepConv); ChannelMLP: two 1x1 (ratio 4) with BN, each after an SN. SN is the binary LIF with
soft reset (:class:`~spikedeploy.models.neurons.BinaryLIF`, ``beta`` and ``threshold`` of the
config) everywhere in the backbone.

**Temporal spiking of the input** (seed §3.1, "omitted" in Table 7): the T frames are the T time
steps -- frame t enters at step t, there is no repetition of a frame and no rate coding. The stem
is a stateless convolution on pixels; its output at step t is the input current ``X_t`` of the
first binary LIF, whose membrane carries from frame to frame (``H_t = beta U_{t-1} + X_t``). So
every neuron integrates over the video, and the joint SDHA additionally mixes all T frames.

**Choices the seed leaves open** (documented here, tested where testable):

* the last downsampling has stride 1 (Table 7 lists stride 2 but keeps H/16; Meta-SpikeFormer's
  ``downsample4`` has stride 1); downsampling convs have a bias, the others do not;
* 8 heads in every transformer block (Meta-SpikeFormer), d = C_stage / 8 (so the SDHA scale
  1/(2d) is 1/64 and 1/80 for the 15M model, 1/128 and 1/160 for 55M: "D varies across layers");
* RepConv as Meta-SpikeFormer's (1x1, BN padded with its zero response, dw 3x3, 1x1, BN),
  computed with zero padding plus a constant border map so capture takes it as it is; the
  deployed network keeps it unfused (:meth:`SpikeVideoFormer.reparameterize` fuses each into one
  3x3 convolution, equal up to rounding, but with 9 instead of about 2 C^2 weights);
* hierarchical attention: spatial then temporal SDHA with separate q/k/v/proj and one residual
  each; factorized: shared q/k/v, half the heads spatial, half temporal
  (:class:`~spikedeploy.models.spikevideoformer_blocks.TransformerBlock`);
* neuron constants: ``beta = 0.5`` (spikingjelly's tau = 2 LIF as Meta-SpikeFormer, its 1/tau
  input factor absorbed by the BatchNorms), ``threshold = 1.0`` (u_th); the neuron after each SDHA is
  seed Eq. 10's ``SN_2D``: the integer bracket against threshold ``2d u_th``
  (:class:`~spikedeploy.models.spikevideoformer_blocks.FoldedScaleLIF`, the same spikes as
  u_th on the bracket times 1/(2d), but exact in float64 for every d);
* the head: spikes averaged over positions then a linear layer (the average is linear on spikes,
  a synapse), per-frame logits, the mean over frames on the host. ``head_neuron="ilif"``: the
  head's neuron is an Integer-LIF with D = 4 (:class:`~spikedeploy.models.neurons.MultiSpike`,
  emits q / 4) instead of the binary LIF.

Parameter counts (1000 classes, the seed's ImageNet models): see :data:`PAPER_PARAMETERS` and
``tests/models/test_spikevideoformer.py`` (15M: 15,112,208 vs 15.1 M, +0.08 %; 55M: 55,350,248 vs
55.4 M, -0.09 %).

Registered (``spikedeploy.models.BUILTIN_MODELS``): ``spikevideoformer-tiny``,
``spikevideoformer-15m``, ``spikevideoformer-55m`` -- :class:`SpikeVideoFormerNet`, the deployed
single-input network: ``forward(x [T, B, 3, S, S]) -> logits [T, B, classes]``;
keyword options as :class:`SpikeVideoFormerConfig` fields (``attention``, ``score``,
``head_neuron``, ``num_classes``, ``resolution``, ...)::

    from spikedeploy.loading import build_model
    loaded = build_model("spikevideoformer-tiny", timesteps=8)   # random weights that fire
    logits = loaded.module(torch.randn(8, 1, *loaded.input_shape))
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Dict, Mapping, Optional, Tuple

import torch
from torch import nn

from spikedeploy.errors import ConfigError, InputError

from .neurons import MultiSpike
from .spikevideoformer_blocks import (SCORES, CNNBlock, DownSampling, RepConv, TransformerBlock, binary_lif)

__all__ = [
    "SpikeVideoFormerConfig",
    "CONFIGS",
    "VARIANTS",
    "PAPER_PARAMETERS",
    "HEAD_NEURONS",
    "SpikeVideoFormer",
    "SpikeVideoFormerNet",
    "spikevideoformer",
    "spikevideoformer_net",
    "init_spikevideoformer_for_spiking",
    "clip_logits",
]

#: the seed's parameter counts (§4 "Model Variants", Table 8)
PAPER_PARAMETERS = {"15m": 15.1e6, "55m": 55.4e6}
HEAD_NEURONS = ("binary_lif", "ilif")
#: what the three input channels hold (computed on the host, :func:`spikedeploy.video.clips.clip_tensor`):
#: ``rgb`` the normalized colour frame (the seed); ``luma-events`` the normalized luminance and the
#: ON / OFF temporal contrast against the previous frame (an event camera's two polarities)
INPUT_ENCODINGS = ("rgb", "luma-events")
#: D of the Integer-LIF head variant
HEAD_ILIF_D = 4


@dataclass(frozen=True)
class SpikeVideoFormerConfig:
    """One SpikeVideoFormer configuration.

    ``channels`` C: stage widths ``C, 2C, 4C, 8C, 10C`` (Table 7); ``cnn_blocks``: CNN blocks at
    C, 2C, 4C (seed: 1, 1, 2); ``depths``: transformer blocks at 8C and 10C (seed: 6, 2);
    ``num_heads`` of every attention; ``mlp_ratio`` (ChannelMLP) and ``conv_ratio`` (ChannelConv):
    4; ``sepconv_kernel``: 7; ``resolution`` S of the square input frames (a multiple of 16);
    ``num_classes`` of the head; ``attention``: joint | hierarchical | factorized; ``score``:
    hamming (SDHA) | dot (Eq. 3, ``dot_scale``); ``head_neuron``: binary_lif | ilif (D = 4);
    ``beta``, ``threshold``: the binary LIF's decay and u_th.

    ``last_width``: the width of stage 4 when it is not 10C. ``input_encoding``: what the three
    input channels hold (:data:`INPUT_ENCODINGS`; the network is the same either way, the encoding
    is done on the host by :func:`spikedeploy.video.clips.clip_tensor`).

    ``15m``: C = 32, stage 4 at 360 (not Table 7's 10C = 320: the seed's 15.1 M parameters are
    reached only with 360, the width of Meta-SpikeFormer's 15.1 M model; 320 gives 14.1 M), 1000
    classes, S = 224; ``55m``: C = 64 (10C = 640, 55.35 M); ``tiny``: C = 8, CNN blocks (1, 1, 1),
    transformer depths (1, 1), 4 heads, S = 64, 6 classes (the generated motion clips of
    :mod:`spikedeploy.video.clips`; trains on 2 CPU cores), input ``luma-events``: with colour frames
    the tiny network stayed at chance for the first ~650 training steps and reached 59 % held-out
    top-1 in 2400; with the temporal-contrast channels (motion visible within one frame, as on an
    event camera, which the seed also evaluates on) it leaves chance within ~200 steps.
    """

    family: str
    channels: int
    cnn_blocks: Tuple[int, int, int] = (1, 1, 2)
    depths: Tuple[int, int] = (6, 2)
    num_heads: int = 8
    mlp_ratio: int = 4
    conv_ratio: int = 4
    sepconv_kernel: int = 7
    resolution: int = 224
    num_classes: int = 1000
    attention: str = "joint"
    score: str = "hamming"
    head_neuron: str = "binary_lif"
    dot_scale: float = 0.125
    beta: float = 0.5
    threshold: float = 1.0
    last_width: Optional[int] = None
    stride: int = 16
    input_encoding: str = "rgb"

    def __post_init__(self):
        def posint(name, v, lo=1):
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise ConfigError(f"SpikeVideoFormer: {name} must be an int >= {lo}, got {v!r}")

        posint("channels", self.channels)
        if self.last_width is not None:
            posint("last_width", self.last_width)
        posint("num_heads", self.num_heads)
        posint("num_classes", self.num_classes)
        posint("mlp_ratio", self.mlp_ratio)
        posint("conv_ratio", self.conv_ratio)
        if len(self.cnn_blocks) != 3 or len(self.depths) != 2:
            raise ConfigError(f"SpikeVideoFormer: cnn_blocks needs 3 and depths 2 entries, got "
                              f"{self.cnn_blocks!r} and {self.depths!r}")
        for n in tuple(self.cnn_blocks) + tuple(self.depths):
            posint("every entry of cnn_blocks and depths", n, 0)
        if (isinstance(self.resolution, bool) or not isinstance(self.resolution, int)
                or self.resolution < self.stride or self.resolution % self.stride):
            raise ConfigError(f"SpikeVideoFormer: resolution must be a positive multiple of {self.stride}, "
                              f"got {self.resolution!r}")
        for dim in self.dims[3:]:
            if dim % self.num_heads:
                raise ConfigError(f"SpikeVideoFormer: width {dim} is not divisible by num_heads {self.num_heads}")
        if self.attention not in TransformerBlock.ATTENTIONS:
            raise ConfigError(f"SpikeVideoFormer: attention must be one of {TransformerBlock.ATTENTIONS}, "
                              f"got {self.attention!r}")
        if self.attention == "factorized" and self.num_heads % 2:
            raise ConfigError(f"SpikeVideoFormer: factorized attention needs an even num_heads, got {self.num_heads}")
        if self.score not in SCORES:
            raise ConfigError(f"SpikeVideoFormer: score must be one of {SCORES}, got {self.score!r}")
        if self.head_neuron not in HEAD_NEURONS:
            raise ConfigError(f"SpikeVideoFormer: head_neuron must be one of {HEAD_NEURONS}, got {self.head_neuron!r}")
        if self.input_encoding not in INPUT_ENCODINGS:
            raise ConfigError(f"SpikeVideoFormer: input_encoding must be one of {INPUT_ENCODINGS}, "
                              f"got {self.input_encoding!r}")
        if not (self.threshold > 0 and 0 <= self.beta <= 1):
            raise ConfigError(f"SpikeVideoFormer: need threshold > 0 and 0 <= beta <= 1, got "
                              f"threshold={self.threshold!r}, beta={self.beta!r}")

    @property
    def dims(self) -> Tuple[int, int, int, int, int]:
        """Stage widths ``C, 2C, 4C, 8C, 10C`` (the last one ``last_width`` when given)."""
        c = self.channels
        return (c, 2 * c, 4 * c, 8 * c, 10 * c if self.last_width is None else self.last_width)

    @property
    def variant(self) -> str:
        return f"spikevideoformer-{self.family}"

    @property
    def feat_size(self) -> int:
        """Side of the transformer stages' token grid (S / 16)."""
        return self.resolution // self.stride

    @property
    def input_shape(self) -> Tuple[int, int, int]:
        return (3, self.resolution, self.resolution)

    def head_dims(self) -> Tuple[int, int]:
        """``d`` of the attention heads in stages 3 and 4 (the SDHA scale is ``1 / (2d)``)."""
        return (self.dims[3] // self.num_heads, self.dims[4] // self.num_heads)


CONFIGS: Dict[str, SpikeVideoFormerConfig] = {
    "tiny": SpikeVideoFormerConfig(family="tiny", channels=8, cnn_blocks=(1, 1, 1), depths=(1, 1), num_heads=4,
                                   resolution=64, num_classes=6, input_encoding="luma-events"),
    "15m": SpikeVideoFormerConfig(family="15m", channels=32, last_width=360),
    "55m": SpikeVideoFormerConfig(family="55m", channels=64),
}
#: registry names
VARIANTS: Tuple[str, ...] = tuple(c.variant for c in CONFIGS.values())


class SpikeVideoFormer(nn.Module):
    """The whole model (module docstring): ``forward(x [T, B, 3, S, S]) -> logits [T, B, classes]``
    (per frame; :func:`clip_logits` averages them over the clip). ``features(x)`` returns the last
    stage's membrane ``[T, B, 10C, S/16, S/16]``. Trains as is (surrogate gradients of the binary
    LIF) and deploys as is; :meth:`reparameterize` optionally fuses every RepConv."""

    def __init__(self, config: SpikeVideoFormerConfig):
        super().__init__()
        self.config = c = config
        neuron = binary_lif(c.beta, c.threshold)
        d0, d1, d2, d3, d4 = c.dims
        k = c.sepconv_kernel
        self.stem = DownSampling(3, d0, kernel_size=7, stride=2)
        self.stage1 = nn.ModuleList([CNNBlock(d0, neuron, k, c.conv_ratio) for _ in range(c.cnn_blocks[0])])
        self.down1 = DownSampling(d0, d1, 3, 2, neuron)
        self.stage1b = nn.ModuleList([CNNBlock(d1, neuron, k, c.conv_ratio) for _ in range(c.cnn_blocks[1])])
        self.down2 = DownSampling(d1, d2, 3, 2, neuron)
        self.stage2 = nn.ModuleList([CNNBlock(d2, neuron, k, c.conv_ratio) for _ in range(c.cnn_blocks[2])])
        self.down3 = DownSampling(d2, d3, 3, 2, neuron)

        def block(dim):
            return TransformerBlock(dim, c.num_heads, neuron, c.attention, c.score, c.mlp_ratio, c.dot_scale)

        self.stage3 = nn.ModuleList([block(d3) for _ in range(c.depths[0])])
        self.down4 = DownSampling(d3, d4, 3, 1, neuron)
        self.stage4 = nn.ModuleList([block(d4) for _ in range(c.depths[1])])
        self.head_spike = MultiSpike(d=HEAD_ILIF_D) if c.head_neuron == "ilif" else neuron()
        self.head = nn.Linear(d4, c.num_classes)

    @property
    def input_shape(self) -> Tuple[int, int, int]:
        return self.config.input_shape

    def features(self, x):
        if isinstance(x, torch.Tensor) and (x.dim() != 5 or tuple(x.shape[2:]) != self.config.input_shape):
            raise ValueError(f"SpikeVideoFormer: expected frames [T, B, {', '.join(map(str, self.config.input_shape))}], "
                             f"got {tuple(x.shape)}")
        x = self.stem(x)
        for blk in self.stage1:
            x = blk(x)
        x = self.down1(x)
        for blk in self.stage1b:
            x = blk(x)
        x = self.down2(x)
        for blk in self.stage2:
            x = blk(x)
        x = self.down3(x)
        for blk in self.stage3:
            x = blk(x)
        x = self.down4(x)
        for blk in self.stage4:
            x = blk(x)
        return x

    def forward(self, x):
        T, B = x.shape[0], x.shape[1]
        x = self.head_spike(self.features(x))
        x = x.flatten(3).mean(-1)  # [T, B, 10C]: average of spikes over positions
        return self.head(x.flatten(0, 1)).reshape(T, B, -1)

    def repconvs(self):
        return [m for m in self.modules() if isinstance(m, RepConv)]

    def reparameterize(self) -> "SpikeVideoFormer":
        """Fuse every RepConv into one 3x3 convolution (in place; eval-mode statistics). Returns self."""
        for m in self.repconvs():
            m.reparameterize()
        return self

    @property
    def is_fused(self) -> bool:
        return all(m.is_fused for m in self.repconvs())


def clip_logits(logits: torch.Tensor) -> torch.Tensor:
    """HOST: the clip's class scores, the mean of the per-frame logits ``[T, B, K]`` over T -> ``[B, K]``."""
    if logits.dim() != 3:
        raise ValueError(f"clip_logits: expected per-frame logits [T, B, K], got {tuple(logits.shape)}")
    return logits.mean(dim=0)


# ---------------------------------------------------------------------------------------------
# deterministic weights that fire
# ---------------------------------------------------------------------------------------------


@torch.no_grad()
def init_spikevideoformer_for_spiking(model: SpikeVideoFormer, *, seed: int = 0, gain: float = 2.0,
                                      frames: int = 4, example: Optional[torch.Tensor] = None) -> SpikeVideoFormer:
    """Deterministic random weights (seed ``seed``) with which every neuron layer fires and none
    saturates on random frames (for tests and demos without a checkpoint), on an unfused model:

    1. conv/linear weights ~ N(0, 1/sqrt(fan_in)), biases ~ N(0, 0.05); BatchNorm weight
       ~ gain U(0.6, 1.4), bias ~ gain N(0, 0.2);
    2. one eval-mode pass over ``example`` (default seeded N(0, 1) frames ``[frames, 2, 3, S, S]``)
       in which every BatchNorm, just before it runs, sets ``running_mean = mu + 0.1 N(0, 1) sigma``
       and ``running_var = sigma^2 U(0.5, 1.5)`` from its input's per-channel statistics, so its
       output is about ``gain (U(0.6, 1.4) z + N(0, 0.2))`` with z standardized whatever the
       spike rates upstream.

    Training flags are restored afterwards. Returns the model."""
    if any(m.is_fused for m in model.repconvs()):
        raise ValueError("init_spikevideoformer_for_spiking needs an unfused model (call it before reparameterize)")
    gen = torch.Generator().manual_seed(int(seed))

    def normal(t, std, mean=0.0):
        t.copy_((mean + torch.randn(t.shape, generator=gen, dtype=torch.float64) * std).to(t.dtype))

    def uniform(t, lo, hi):
        t.copy_((lo + (hi - lo) * torch.rand(t.shape, generator=gen, dtype=torch.float64)).to(t.dtype))

    for m in model.modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear)):
            normal(m.weight, 1.0 / m.weight[0].numel() ** 0.5)
            if m.bias is not None:
                normal(m.bias, 0.05)
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            uniform(m.weight, 0.6 * gain, 1.4 * gain)
            normal(m.bias, 0.2 * gain)
    if example is None:
        example = torch.randn((frames, 2) + model.config.input_shape, generator=gen)

    def pre_hook(module, inputs):
        inp = inputs[0].detach().double()
        dims = [i for i in range(inp.dim()) if i != 1]
        mu = inp.mean(dim=dims)
        sigma = inp.std(dim=dims).clamp_min(1e-3)
        jitter = torch.randn(mu.shape, generator=gen, dtype=torch.float64)
        module.running_mean.copy_((mu + 0.1 * jitter * sigma).to(module.running_mean.dtype))
        module.running_var.copy_((sigma ** 2 * (0.5 + torch.rand(mu.shape, generator=gen, dtype=torch.float64)))
                                 .to(module.running_var.dtype))

    modes = {m: m.training for m in model.modules()}
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    handles = [m.register_forward_pre_hook(pre_hook) for m in bns]
    try:
        model.eval()
        model(example)
    finally:
        for h in handles:
            h.remove()
        for m, flag in modes.items():
            m.training = flag
    return model


# ---------------------------------------------------------------------------------------------
# the deployed single-input network
# ---------------------------------------------------------------------------------------------


class SpikeVideoFormerNet(nn.Module):
    """The SpikeVideoFormer the toolchain deploys (capture, verify, export, audit, classify):
    ``forward(x [T, B, 3, S, S]) -> logits [T, B, classes]``, the model in its training layout
    (RepConvs unfused: see :class:`~spikedeploy.models.spikevideoformer_blocks.RepConv`).

    What the model loader (:func:`spikedeploy.loading.build_model`) asks of it: ``input_shape``
    (per step), ``load_weights(state_dict, source=)`` (a :class:`SpikeVideoFormer` state dict,
    loaded strictly; keys may carry this wrapper's ``model.`` prefix) and
    ``init_random_weights(seed)`` (:func:`init_spikevideoformer_for_spiking`)."""

    def __init__(self, config: SpikeVideoFormerConfig):
        super().__init__()
        self.config = config
        self.model = SpikeVideoFormer(config)

    @property
    def input_shape(self) -> Tuple[int, int, int]:
        return self.config.input_shape

    def forward(self, x):
        return self.model(x)

    def init_random_weights(self, seed: int = 0) -> None:
        init_spikevideoformer_for_spiking(self.model, seed=seed)

    def load_weights(self, state_dict: Mapping[str, torch.Tensor], *, source: str = "<state dict>") -> None:
        state = {k[len("model."):] if k.startswith("model.") else k: v for k, v in state_dict.items()}
        try:
            self.model.load_state_dict(state, strict=True)
        except RuntimeError as e:
            lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
            detail = lines[1] if len(lines) > 1 else lines[0]
            raise InputError(f"checkpoint {source} does not fit {self.config.variant} "
                             f"(C = {self.config.channels}, {self.config.num_classes} classes): {detail}; "
                             "give weights saved from this configuration") from None


def _resolve(variant: str, overrides: Mapping) -> SpikeVideoFormerConfig:
    if not isinstance(variant, str):
        raise ConfigError(f"SpikeVideoFormer variant must be a string such as 'tiny', got {variant!r}")
    family = variant.strip().lower()
    if family.startswith("spikevideoformer-"):
        family = family[len("spikevideoformer-"):]
    if family not in CONFIGS:
        raise ConfigError(f"unknown SpikeVideoFormer variant {variant!r}; known: {', '.join(VARIANTS)}")
    fields = {f.name for f in dataclasses.fields(SpikeVideoFormerConfig)} - {"family"}
    unknown = set(overrides) - fields
    if unknown:
        raise ConfigError(f"SpikeVideoFormer: unknown option(s) {', '.join(sorted(unknown))}; "
                          f"known: {', '.join(sorted(fields))}")
    kw = dict(overrides)
    for name in ("cnn_blocks", "depths"):
        if name in kw and isinstance(kw[name], list):
            kw[name] = tuple(kw[name])
    return dataclasses.replace(CONFIGS[family], **kw)


def spikevideoformer(variant: str = "tiny", **overrides) -> SpikeVideoFormer:
    """The (unfused, trainable) model ``variant`` (``tiny``, ``15m``, ``55m`` or the registry name),
    with :class:`SpikeVideoFormerConfig` fields overridden by keyword."""
    return SpikeVideoFormer(_resolve(variant, overrides))


def spikevideoformer_net(variant: str = "tiny", **overrides) -> SpikeVideoFormerNet:
    """The deployed single-input network of ``variant`` (registered as ``spikevideoformer-*``)."""
    return SpikeVideoFormerNet(_resolve(variant, overrides))
