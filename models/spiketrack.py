"""SpikeTrack (RGB): the six official variants with the official checkpoint layout.

SpikeTrack (S256, B256, B384; T = 1 or 3 templates) tracks with a Spike-Driven Transformer v3
backbone of NI-LIF neurons (D = 4), six Memory Retrieval Modules (MRM) and a center head. Written
from the official code's architecture (faicaiwawa/SpikeTrack, configs
``experiments/spiketrack/spiketrack_{s,b}{256,384}_t{1,3}.yaml``); blocks in
:mod:`spikedeploy.models.spiketrack_blocks`.

Model API (:class:`SpikeTrack`, always built in eval mode)::

    model = spiketrack("s256", templates=1)            # or spiketrack("spiketrack-s256-t1")
    load_spiketrack_checkpoint(model, "X.pth.tar")      # official {"net": ...}, strict
    memory = model.template_branch(templates)           # [T, B, 3, S, S] -> {"cross_block_k": kv}
    out = model.search_branch(search, memory)           # [B, 3, S, S] or [1, B, 3, S, S]
    maps = head_maps(out)                               # HOST: sigmoid, mean over T
    boxes, scores = decode_boxes(*maps, window=hann_window(model.config.feat_size))  # HOST

* Template branch (at initialization and on template updates): the backbone runs with the T
  templates on the time axis (NI-LIF over the template index); each MRM k stores the memory
  ``cross_block_k = K^T V`` of shape ``[T, B, 8, C_k / 8, 4 C_k / 8]`` (C_k = 32, 64, 128, 128,
  192, 192 for S; 64, 128, 256, 256, 360, 360 for B).
* Search branch (every frame): the backbone runs with T = 1; each MRM reads its memory with the
  search queries (:class:`~spikedeploy.models.spiketrack_blocks.MemoryRead`), the T results are
  gated into one; the center head returns :class:`HeadOutputs` — ``score_logits [1, B, 1, F, F]``,
  ``size_logits [1, B, 2, F, F]``, ``offset [1, B, 2, F, F]`` with F = S / 16.

Host-side parts (not part of the spiking network, listed in :data:`HOST_FUNCTIONS`): input
normalization (:func:`normalize_images`), the gate softmax (``spiketrack_blocks.host_gate_softmax``,
called inside the gate), the sigmoid of the score and size maps (:func:`head_maps`), the Hanning
window (:func:`hann_window`) and the box decoding (:func:`decode_boxes`). The first convolution
(``encoder.downsample1_1``) sees real-valued pixels.

Checkpoints: :func:`load_spiketrack_checkpoint` reads ``torch.load(path)["net"]`` (keys
``encoder.*``, ``decoder.*``) and loads it strictly; weights of another variant are reported as a
variant mismatch ("this looks like SpikeTrack-B256-T1 weights, not SpikeTrack-S256-T1"), any other
misfit lists the missing and unexpected keys and the shape conflicts.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Dict, Mapping, NamedTuple, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from spikedeploy.errors import CheckpointError, ConfigError

from .spiketrack_blocks import Block, CenterHead, ConvBlock, DownSampling, MemoryRetrieval, host_gate_softmax

__all__ = [
    "SpikeTrackConfig",
    "VARIANT_CONFIGS",
    "SPIKETRACK_VARIANTS",
    "SMALL_VARIANTS",
    "ALL_VARIANTS",
    "MEMORY_KEYS",
    "HeadOutputs",
    "SpikeTrackEncoder",
    "SpikeTrack",
    "SpikeTrackTemplateNet",
    "SpikeTrackSearchNet",
    "spiketrack",
    "spiketrack_s256_t1",
    "spiketrack_s256_t3",
    "spiketrack_b256_t1",
    "spiketrack_b256_t3",
    "spiketrack_b384_t1",
    "spiketrack_b384_t3",
    "spiketrack_tiny128_t1",
    "spiketrack_tiny128_t3",
    "identify_variant",
    "BUNDLED_FAMILY",
    "default_tracker_checkpoint",
    "bundled_model",
    "load_spiketrack_state_dict",
    "load_spiketrack_checkpoint",
    "spiketrack_from_checkpoint",
    "IMAGE_MEAN",
    "IMAGE_STD",
    "HOST_FUNCTIONS",
    "normalize_images",
    "head_maps",
    "hann_window",
    "decode_boxes",
]

MEMORY_KEYS = tuple(f"cross_block_{k}" for k in range(6))  #: official cache_dict keys, one per MRM
_MRM_DIM_INDEX = (0, 1, 2, 2, 3, 3)  # MRM k works on embed_dims[_MRM_DIM_INDEX[k]]
_MRM_STRIDE = (4, 8, 16, 16, 16, 16)  # ... at stride _MRM_STRIDE[k] of the input


@dataclass(frozen=True)
class SpikeTrackConfig:
    """One SpikeTrack variant (official yaml ``spiketrack_{family}{resolution}_t{templates}``).

    ``embed_dims``: backbone widths of the four stages (encoder type ``Efficient_Spiking_
    Transformer_s`` = (32, 64, 128, 192), ``_l`` = (64, 128, 256, 360)); ``head_channels``: the
    center head's ``NUM_CHANNELS``; ``resolution``: template and search crop size S (the backbone
    reaches F = S / 16 tokens per side, the MRMs pool to F x F); ``depths``: number of transformer
    blocks in stages 3 and 4 (official: 6 and 2; the reduced-width ``tiny`` family uses fewer, with
    MRM 3 after block ``depths[0] // 2 - 1``, i.e. block 2 of 6 as officially)."""

    family: str
    embed_dims: Tuple[int, int, int, int]
    head_channels: int
    resolution: int
    templates: int
    num_heads: int = 8
    mlp_ratio: int = 4
    stride: int = 16
    depths: Tuple[int, int] = (6, 2)

    @property
    def mrm3_after(self) -> int:
        """Index of the stage-3 block after which MRM 3 runs (official: 2, the middle of 6)."""
        return max(self.depths[0] // 2 - 1, 0)

    @property
    def name(self) -> str:
        """Display name, e.g. ``SpikeTrack-S256-T1``."""
        return f"SpikeTrack-{self.family.upper()}{self.resolution}-T{self.templates}"

    @property
    def variant(self) -> str:
        """Registry name, e.g. ``spiketrack-s256-t1``."""
        return f"spiketrack-{self.family.lower()}{self.resolution}-t{self.templates}"

    @property
    def feat_size(self) -> int:
        return self.resolution // self.stride

    @property
    def hidden_dim(self) -> int:
        return self.embed_dims[3]

    def memory_shapes(self, batch: int = 1) -> Dict[str, Tuple[int, ...]]:
        """Shapes of the template memory entries for batch size ``batch``."""
        h = self.num_heads
        return {
            key: (self.templates, batch, h, self.embed_dims[i] // h, 4 * self.embed_dims[i] // h)
            for key, i in zip(MEMORY_KEYS, _MRM_DIM_INDEX)
        }


_FAMILIES = {
    "s": dict(embed_dims=(32, 64, 128, 192), head_channels=192),
    "b": dict(embed_dims=(64, 128, 256, 360), head_channels=256),
    # not official: a reduced-width, reduced-depth member of the family (same blocks, MRMs, gate and
    # center head) that trains on a CPU and runs in simulators (spikedeploy's bundled tracker)
    "tiny": dict(embed_dims=(16, 32, 64, 96), head_channels=64, num_heads=4, depths=(2, 1)),
}
_RESOLUTIONS = {"s": (256,), "b": (256, 384), "tiny": (128,)}
_OFFICIAL_FAMILIES = ("s", "b")

VARIANT_CONFIGS: Dict[str, SpikeTrackConfig] = {}
for _fam, _res_list in _RESOLUTIONS.items():
    for _res in _res_list:
        for _t in (1, 3):
            _cfg = SpikeTrackConfig(family=_fam, resolution=_res, templates=_t, **_FAMILIES[_fam])
            VARIANT_CONFIGS[_cfg.variant] = _cfg

#: the six official variants, in the order S256-T1, S256-T3, B256-T1, B256-T3, B384-T1, B384-T3
SPIKETRACK_VARIANTS: Tuple[str, ...] = tuple(
    name for name, cfg in VARIANT_CONFIGS.items() if cfg.family in _OFFICIAL_FAMILIES
)
#: the small, non-official variants (``tiny128``: widths 16/32/64/96, head 64, 4 heads, stage depths
#: 2 and 1 instead of 6 and 2, 128 x 128 crops, 8 x 8 feature map); spikedeploy ships trained weights
SMALL_VARIANTS: Tuple[str, ...] = tuple(
    name for name, cfg in VARIANT_CONFIGS.items() if cfg.family not in _OFFICIAL_FAMILIES
)
#: every built-in variant (official first)
ALL_VARIANTS: Tuple[str, ...] = SPIKETRACK_VARIANTS + SMALL_VARIANTS


class HeadOutputs(NamedTuple):
    """Raw center-head outputs of the search branch, each ``[1, B, c, F, F]`` (time axis first).

    ``score_logits`` (c = 1) and ``size_logits`` (c = 2) before the host sigmoid; ``offset``
    (c = 2: x, y in cells) is used as is (the fixtures' ``offset_raw`` = ``offset_map``)."""

    score_logits: torch.Tensor
    size_logits: torch.Tensor
    offset: torch.Tensor


def _check_image_input(x, name: str, shape_hint: str, channels: int, size: int, t: Optional[int]):
    if not isinstance(x, torch.Tensor):  # torch.fx proxies: no checks while tracing
        return
    ok = x.dim() == 5 and x.shape[2] == channels and x.shape[3] == size and x.shape[4] == size
    if ok and t is not None and x.shape[0] != t:
        ok = False
    if not ok:
        raise ValueError(f"{name}: expected {shape_hint}, got shape {list(x.shape)}")


def _contiguous(x):
    """A branch input in the row-major (contiguous) memory layout, as the official tracker feeds it.

    The values do not depend on the layout, but the convolution kernels do: the same template
    tensor in the channels-last layout (what ``torch.stack`` of channels-last crops gives) runs 85 of
    the template branch's convolutions through other kernels, which round differently by ~1e-6; at
    T = 3 that flips a spike and changes the cached memory (fixtures: ``s256-t3``). The official
    template input is contiguous, and its ``MS_DownSampling`` ends in ``.contiguous()`` (as
    :class:`~spikedeploy.models.spiketrack_blocks.DownSampling` does). The official search input is a
    channels-last view for the first (3-channel) convolution only, which gives bitwise the same
    output in either layout (checked on the s256-t3 fixtures' 11 search inputs). torch.fx proxies
    pass through unchanged (capture)."""
    if isinstance(x, torch.Tensor) and not x.is_contiguous():
        return x.contiguous()
    return x


class SpikeTrackEncoder(nn.Module):
    """The SDT v3 backbone with the six MRMs (official ``Spiking_vit_MetaFormer_Spike_SepConv``,
    key prefix ``encoder.``). Layout (widths e0..e3, S the crop size)::

        downsample1_1  Conv 7x7 s2 (3 -> e0/2) + FBN          (host layer: real pixels)
        ConvBlock1_1   e0/2 at S/2
        downsample1_2  neuron, Conv 3x3 s2 -> e0             mrm.0 at S/4
        ConvBlock1_2   e0
        downsample2    -> e1                                 mrm.1 at S/8
        ConvBlock2_1, ConvBlock2_2
        downsample3    -> e2                                 mrm.2 at S/16
        block3.0..5    e2 (mrm.3 after block3.2)               (depths[0] blocks; official 6)
        downsample4    Conv 3x3 s1 -> e3                     mrm.4
        block4.0..1    e3                                    mrm.5 (depths[1] blocks; official 2)
    """

    def __init__(self, config: SpikeTrackConfig):
        super().__init__()
        e, S, T = config.embed_dims, config.resolution, config.templates
        F_ = config.feat_size
        heads, ratio = config.num_heads, config.mlp_ratio
        self.templates = T
        self.downsample1_1 = DownSampling(3, e[0] // 2, kernel_size=7, stride=2, padding=3, first_layer=True)
        self.ConvBlock1_1 = nn.ModuleList([ConvBlock(e[0] // 2, ratio)])
        self.downsample1_2 = DownSampling(e[0] // 2, e[0])
        self.ConvBlock1_2 = nn.ModuleList([ConvBlock(e[0], ratio)])
        self.downsample2 = DownSampling(e[0], e[1])
        self.ConvBlock2_1 = nn.ModuleList([ConvBlock(e[1], ratio)])
        self.ConvBlock2_2 = nn.ModuleList([ConvBlock(e[1], ratio)])
        self.downsample3 = DownSampling(e[1], e[2])
        self.mrm3_after = config.mrm3_after
        self.block3 = nn.ModuleList([Block(e[2], heads, F_ * F_, T, ratio) for _ in range(config.depths[0])])
        self.downsample4 = DownSampling(e[2], e[3], stride=1)
        self.block4 = nn.ModuleList([Block(e[3], heads, F_ * F_, T, ratio) for _ in range(config.depths[1])])
        self.mrm = nn.ModuleList(
            [
                MemoryRetrieval(e[i], heads, F_, S // stride, T, ratio)
                for i, stride in zip(_MRM_DIM_INDEX, _MRM_STRIDE)
            ]
        )

    def _stages(self, x, mrm_hook, template: bool):
        """The backbone; ``mrm_hook(k, x)`` is called at MRM k and returns the new ``x``."""
        x = self.downsample1_1(x)
        x = self.ConvBlock1_1[0](x)
        x = self.downsample1_2(x)
        x = mrm_hook(0, x)
        x = self.ConvBlock1_2[0](x)
        x = self.downsample2(x)
        x = mrm_hook(1, x)
        x = self.ConvBlock2_1[0](x)
        x = self.ConvBlock2_2[0](x)
        x = self.downsample3(x)
        x = mrm_hook(2, x)
        for i, blk in enumerate(self.block3):
            x = blk(x, template)
            if i == self.mrm3_after:
                x = mrm_hook(3, x)
        x = self.downsample4(x)
        x = mrm_hook(4, x)
        for blk in self.block4:
            x = blk(x, template)
        return mrm_hook(5, x)

    def forward_template(self, templates: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        """``[T, B, 3, S, S]`` normalized templates -> the six memories (MRM order). The input is
        made contiguous first (:func:`_contiguous`)."""
        templates = _contiguous(templates)
        memory = []

        def write(k, x):
            memory.append(self.mrm[k].write(x))
            return x

        self._stages(templates, write, template=True)
        return tuple(memory)

    def forward_search(self, search: torch.Tensor, memory: Sequence[torch.Tensor]) -> torch.Tensor:
        """``[1, B, 3, S, S]`` normalized search crop + memories -> feature ``[1, B, e3, F, F]``
        (the input made contiguous first, :func:`_contiguous`)."""
        return self._stages(_contiguous(search), lambda k, x: self.mrm[k](x, memory[k]), template=False)


class SpikeTrack(nn.Module):
    """A SpikeTrack variant (:class:`SpikeTrackConfig`) with the official state_dict layout:
    ``encoder`` (:class:`SpikeTrackEncoder`) and ``decoder`` (center head). Built in eval mode
    (the MRM and head BatchNorms use their running statistics).

    Entry points: :meth:`template_branch` and :meth:`search_branch`; ``forward(templates, search)``
    runs both. Single-input wrappers for capture/export: :meth:`template_net`, :meth:`search_net`.
    """

    def __init__(self, config: SpikeTrackConfig):
        super().__init__()
        if not isinstance(config, SpikeTrackConfig):
            raise TypeError(f"SpikeTrack: expected a SpikeTrackConfig, got {type(config).__name__}")
        self.config = config
        self.encoder = SpikeTrackEncoder(config)
        self.decoder = CenterHead(config.hidden_dim, config.head_channels)
        self.eval()

    @property
    def templates(self) -> int:
        return self.config.templates

    def template_branch(self, templates: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Template branch: ``templates`` of shape ``[T, B, 3, S, S]`` (normalized, T = the
        variant's number of templates; the first is the initial template) -> the memory cache
        ``{"cross_block_k": [T, B, 8, C_k/8, 4C_k/8]}`` (k = 0..5, official names)."""
        c = self.config
        _check_image_input(templates, f"{c.name} template_branch", f"[T={c.templates}, B, 3, {c.resolution}, "
                           f"{c.resolution}]", 3, c.resolution, c.templates)
        return dict(zip(MEMORY_KEYS, self.encoder.forward_template(templates)))

    def _memory_list(self, memory) -> Tuple[torch.Tensor, ...]:
        if isinstance(memory, Mapping):
            missing = [k for k in MEMORY_KEYS if k not in memory]
            if missing:
                raise ValueError(f"{self.config.name}: memory lacks {missing}; expected keys {list(MEMORY_KEYS)}")
            mem = tuple(memory[k] for k in MEMORY_KEYS)
        else:
            mem = tuple(memory)
            if len(mem) != len(MEMORY_KEYS):
                raise ValueError(f"{self.config.name}: expected {len(MEMORY_KEYS)} memory tensors, got {len(mem)}")
        return mem

    def search_branch(self, search: torch.Tensor, memory) -> HeadOutputs:
        """Search branch: ``search`` of shape ``[B, 3, S, S]`` or ``[1, B, 3, S, S]``
        (normalized) and the memory from :meth:`template_branch` (dict or sequence of 6) ->
        :class:`HeadOutputs` (raw maps ``[1, B, c, F, F]``)."""
        return HeadOutputs(*self.decoder(self.search_feature(search, memory)))

    def search_feature(self, search: torch.Tensor, memory) -> torch.Tensor:
        """The search feature ``[1, B, e3, F, F]`` fed to the head (fixtures: ``search_feature``)."""
        c = self.config
        if isinstance(search, torch.Tensor) and search.dim() == 4:
            search = search.unsqueeze(0)
        _check_image_input(search, f"{c.name} search_branch", f"[B, 3, {c.resolution}, {c.resolution}] or "
                           f"[1, B, 3, {c.resolution}, {c.resolution}]", 3, c.resolution, 1)
        mem = self._memory_list(memory)
        if isinstance(search, torch.Tensor):
            shapes = c.memory_shapes(search.shape[1])
            for key, m in zip(MEMORY_KEYS, mem):
                if not isinstance(m, torch.Tensor) or tuple(m.shape) != shapes[key]:
                    got = list(m.shape) if isinstance(m, torch.Tensor) else type(m).__name__
                    raise ValueError(
                        f"{c.name}: memory {key} has shape {got}, expected {list(shapes[key])} (memory from "
                        f"template_branch of the same variant, same batch size)"
                    )
        return self.encoder.forward_search(search, mem)

    def forward(self, templates: torch.Tensor, search: torch.Tensor) -> HeadOutputs:
        return self.search_branch(search, self.template_branch(templates))

    def template_net(self) -> "SpikeTrackTemplateNet":
        return SpikeTrackTemplateNet(self)

    def search_net(self, memory) -> "SpikeTrackSearchNet":
        return SpikeTrackSearchNet(self, memory)

    def extra_repr(self):
        return self.config.name


class _BranchNet(nn.Module):
    """What the toolchain's model loader (``spikedeploy.api.build_model``) asks of a branch:
    ``input_shape`` (per step), ``default_checkpoint_key`` (official files hold ``["net"]``),
    ``load_weights(state_dict, source=)`` (official layout, variant-mismatch errors) and
    ``init_random_weights(seed)`` (deterministic weights that fire, for tests and demos)."""

    default_checkpoint_key = "net"

    def __init__(self, model: SpikeTrack):
        super().__init__()
        self.model = model

    @property
    def input_shape(self) -> Tuple[int, int, int]:
        return (3, self.model.config.resolution, self.model.config.resolution)

    def load_weights(self, state_dict, *, source: str = "<state dict>") -> None:
        load_spiketrack_state_dict(self.model, state_dict, source=source)
        self.refresh()

    def init_random_weights(self, seed: int = 0) -> None:
        init_spiketrack_for_spiking(self.model, seed=seed)
        self.refresh()

    def refresh(self) -> None:
        """Recompute what depends on the weights (the search branch's memory)."""


class SpikeTrackTemplateNet(_BranchNet):
    """Single-input template branch: ``forward(x [T, B, 3, S, S])`` -> tuple of the six memories."""

    def forward(self, x):
        return self.model.encoder.forward_template(x)


class SpikeTrackSearchNet(_BranchNet):
    """Single-input search branch with the template memory held as buffers ``memory_0..5``
    (rewritten by :meth:`set_memory` when the templates change): ``forward(x [1, B, 3, S, S])``
    -> :class:`HeadOutputs`. The memory's batch size must be 1 or match the search batch.

    ``templates`` (optional, ``[T, 1, 3, S, S]``): the template input the memory is computed from;
    :meth:`refresh` recomputes the memory from it after the weights change."""

    def __init__(self, model: SpikeTrack, memory, templates: Optional[torch.Tensor] = None):
        super().__init__(model)
        self._templates = templates
        for k, m in enumerate(model._memory_list(memory)):
            self.register_buffer(f"memory_{k}", m.detach().clone())

    def refresh(self) -> None:
        if self._templates is not None:
            with torch.no_grad():
                self.set_memory(self.model.template_branch(self._templates))

    def set_memory(self, memory) -> None:
        for k, m in enumerate(self.model._memory_list(memory)):
            getattr(self, f"memory_{k}").copy_(m)

    def forward(self, x):
        mem = [getattr(self, f"memory_{k}") for k in range(len(MEMORY_KEYS))]
        return HeadOutputs(*self.model.decoder(self.model.encoder.forward_search(x, mem)))


def init_spiketrack_for_spiking(model: SpikeTrack, *, seed: int = 0, gain: float = 3.5, stem_gain: float = 1.0) -> None:
    """Deterministic random weights with which every NI-LIF layer fires (for tests and demos
    without a checkpoint): conv/linear weights ~ N(0, g / sqrt(fan_in)) (g = ``stem_gain`` for the
    conv on the RGB image, ``gain`` elsewhere: those convs see spikes q/4 in [0, 1]), their biases
    ~ N(0, 0.05); BatchNorm weight ~ U(0.6, 1.4), bias ~ N(0, 0.2), running mean ~ N(0, 0.1),
    running var ~ U(0.5, 1.5); NI-LIF decay logits ~ N(0, 0.5); position embeddings ~ N(0, 0.02)."""
    gen = torch.Generator().manual_seed(seed)

    def normal(t, std):
        t.copy_(torch.randn(t.shape, generator=gen, dtype=torch.float64).to(t.dtype) * std)

    def uniform(t, lo, hi):
        t.copy_((lo + (hi - lo) * torch.rand(t.shape, generator=gen, dtype=torch.float64)).to(t.dtype))

    with torch.no_grad():
        for name, module in model.named_modules():
            if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)) or hasattr(module, "running_var"):
                uniform(module.weight, 0.6, 1.4)
                normal(module.bias, 0.2)
                normal(module.running_mean, 0.1)
                uniform(module.running_var, 0.5, 1.5)
            elif isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Linear)):
                fan_in = module.weight[0].numel()
                g = stem_gain if isinstance(module, nn.Conv2d) and module.weight.shape[1] == 3 else gain
                normal(module.weight, g / fan_in ** 0.5)
                if module.bias is not None:
                    normal(module.bias, 0.05)
        for name, p in model.named_parameters():
            if name.endswith(".decay"):
                normal(p, 0.5)
            elif "pos_embed" in name:
                normal(p, 0.02)


def spiketrack_branch(variant: str, branch: str, *, seed: int = 0) -> _BranchNet:
    """A single-input branch of SpikeTrack ``variant`` for the toolchain (capture, verify, export,
    audit): ``branch="template"`` (input ``[T, B, 3, S, S]``, output the six memories) or
    ``"search"`` (input ``[1, B, 3, S, S]``, output :class:`HeadOutputs`; its memory comes from a
    seeded random template input and is recomputed whenever the weights are loaded). The weights
    start as PyTorch's defaults: load a checkpoint (``load_weights``) or call
    ``init_random_weights``."""
    model = spiketrack(variant)
    if branch == "template":
        return SpikeTrackTemplateNet(model)
    if branch == "search":
        S, T = model.config.resolution, model.config.templates
        templates = torch.randn((T, 1, 3, S, S), generator=torch.Generator().manual_seed(seed))
        with torch.no_grad():
            memory = model.template_branch(templates)
        return SpikeTrackSearchNet(model, memory, templates)
    raise ValueError(f"unknown SpikeTrack branch {branch!r}; expected 'template' or 'search'")


# ---------------------------------------------------------------------------------------------
# factories
# ---------------------------------------------------------------------------------------------

_NAME_RE = re.compile(r"^(?:spiketrack[-_])?(s|b|tiny)(128|256|384)(?:[-_]t(\d+))?$")


def _resolve(variant: str, templates: Optional[int]) -> SpikeTrackConfig:
    if not isinstance(variant, str):
        raise ConfigError(f"SpikeTrack variant must be a string like 's256' or 'spiketrack-s256-t1', got {variant!r}")
    m = _NAME_RE.match(variant.strip().lower())
    if m is None:
        raise ConfigError(f"unknown SpikeTrack variant {variant!r}; known: {', '.join(ALL_VARIANTS)}")
    fam, res, t_name = m.group(1), int(m.group(2)), m.group(3)
    if t_name is not None and templates is not None and int(t_name) != templates:
        raise ConfigError(f"SpikeTrack variant {variant!r} names T={t_name} but templates={templates} was given")
    t = templates if templates is not None else (int(t_name) if t_name is not None else 1)
    if res not in _RESOLUTIONS[fam]:
        raise ConfigError(f"SpikeTrack-{fam.upper()} exists at {_RESOLUTIONS[fam]} only, not {res}; "
                          f"known: {', '.join(ALL_VARIANTS)}")
    if isinstance(t, bool) or not isinstance(t, int) or t not in (1, 2, 3):
        raise ConfigError(f"SpikeTrack: templates must be 1, 2 or 3 (official configs: 1 and 3), got {t!r}")
    return SpikeTrackConfig(family=fam, resolution=res, templates=t, **_FAMILIES[fam])


def spiketrack(variant: str = "s256", templates: Optional[int] = None, checkpoint=None) -> SpikeTrack:
    """Build a SpikeTrack variant: ``variant`` is ``"s256"``, ``"b256"``, ``"b384"``, ``"tiny128"`` (then
    ``templates`` = 1 or 3, default 1) or a full name such as ``"spiketrack-b256-t3"``. With
    ``checkpoint`` (a path) the official weights are loaded strictly."""
    model = SpikeTrack(_resolve(variant, templates))
    if checkpoint is not None:
        load_spiketrack_checkpoint(model, checkpoint)
    return model


def spiketrack_s256_t1(**kw) -> SpikeTrack:
    return spiketrack("s256", 1, **kw)


def spiketrack_s256_t3(**kw) -> SpikeTrack:
    return spiketrack("s256", 3, **kw)


def spiketrack_b256_t1(**kw) -> SpikeTrack:
    return spiketrack("b256", 1, **kw)


def spiketrack_b256_t3(**kw) -> SpikeTrack:
    return spiketrack("b256", 3, **kw)


def spiketrack_b384_t1(**kw) -> SpikeTrack:
    return spiketrack("b384", 1, **kw)


def spiketrack_b384_t3(**kw) -> SpikeTrack:
    return spiketrack("b384", 3, **kw)


def spiketrack_tiny128_t1(**kw) -> SpikeTrack:
    """The small, non-official SpikeTrack-TINY128-T1 (see :data:`SMALL_VARIANTS`)."""
    return spiketrack("tiny128", 1, **kw)


def spiketrack_tiny128_t3(**kw) -> SpikeTrack:
    """The small, non-official SpikeTrack-TINY128-T3 (see :data:`SMALL_VARIANTS`)."""
    return spiketrack("tiny128", 3, **kw)


# ---------------------------------------------------------------------------------------------
# checkpoints
# ---------------------------------------------------------------------------------------------


@lru_cache(maxsize=None)
def _signature(config: SpikeTrackConfig) -> Tuple[Tuple[str, Tuple[int, ...]], ...]:
    """``(key, shape)`` of every state_dict entry of ``config``, in order (built on the meta
    device, no memory)."""
    with torch.device("meta"):
        model = SpikeTrack(config)
    return tuple((k, tuple(v.shape)) for k, v in model.state_dict().items())


def _describe(sd: Mapping) -> Optional[str]:
    """Width / resolution / templates read from characteristic keys, e.g. ``B256-T1``."""
    try:
        width = int(sd["encoder.downsample4.encode_conv.weight"].shape[0])
        tokens = int(sd["encoder.block3.0.attn.s_pos_embed"].shape[-1])
    except (KeyError, AttributeError, IndexError, TypeError):
        return None
    fam = {192: "S", 360: "B", 96: "TINY"}.get(width)
    side = int(round(math.sqrt(tokens)))
    t = sum(1 for k in sd if re.fullmatch(r"encoder\.mrm\.0\.retriever\.seg_responder_dw\.\d+\.0\.weight", k))
    if fam is None or side * side != tokens or t == 0:
        return None
    return f"SpikeTrack-{fam}{side * 16}-T{t}"


def identify_variant(state_dict: Mapping) -> Optional[str]:
    """The variant (registry name, e.g. ``spiketrack-b256-t1``) whose keys and shapes equal those
    of ``state_dict`` exactly, else None."""
    sig = {k: tuple(v.shape) for k, v in state_dict.items() if isinstance(v, torch.Tensor)}
    for name, cfg in VARIANT_CONFIGS.items():
        if dict(_signature(cfg)) == sig:
            return name
    return None


def load_spiketrack_state_dict(model: SpikeTrack, state_dict: Mapping, *, source: str = "<state dict>") -> None:
    """Load ``state_dict`` (official layout, ``encoder.*``/``decoder.*``) strictly into ``model``.

    Raises :class:`~spikedeploy.errors.CheckpointError`: when the weights belong to another variant
    the message names both ("this looks like SpikeTrack-B256-T1 weights, not SpikeTrack-S256-T1")
    and then lists the missing/unexpected keys and shape conflicts."""
    from spikedeploy.checkpoint import apply_state_dict

    try:
        apply_state_dict(model, state_dict, source=source)
    except CheckpointError as exc:
        found = identify_variant(state_dict)
        found_name = VARIANT_CONFIGS[found].name if found else _describe(state_dict)
        if found_name and found_name != model.config.name:
            raise CheckpointError(
                f"{source}: variant mismatch: this looks like {found_name} weights, not {model.config.name} "
                f"(build the model with spiketrack({(found or found_name.lower())!r}) "
                f"or pick the {model.config.name} checkpoint). Details: {exc}"
            ) from None
        raise


def load_spiketrack_checkpoint(model: SpikeTrack, path) -> None:
    """Load an official checkpoint file (``torch.load(path)["net"]``) strictly into ``model``."""
    from spikedeploy.checkpoint import load_checkpoint

    sd = load_checkpoint(path, key="net")
    load_spiketrack_state_dict(model, sd, source=f"checkpoint {str(path)!r}")


def spiketrack_from_checkpoint(path, variant: Optional[str] = None, templates: Optional[int] = None) -> SpikeTrack:
    """Build the model for an official checkpoint: the variant is taken from ``variant`` /
    ``templates`` when given (a mismatch is an error naming both), else identified from the
    checkpoint's keys and shapes."""
    from spikedeploy.checkpoint import load_checkpoint

    sd = load_checkpoint(path, key="net")
    if variant is None:
        found = identify_variant(sd)
        if found is None:
            raise CheckpointError(
                f"checkpoint {str(path)!r}: its keys and shapes match none of the SpikeTrack variants "
                f"({', '.join(ALL_VARIANTS)})" + (f"; closest reading: {_describe(sd)}" if _describe(sd) else "")
            )
        variant = found
    model = spiketrack(variant, templates)
    load_spiketrack_state_dict(model, sd, source=f"checkpoint {str(path)!r}")
    return model


# ---------------------------------------------------------------------------------------------
# the bundled, trained tracker (SpikeTrack-TINY128, trained on synthetic sequences)
# ---------------------------------------------------------------------------------------------

BUNDLED_FAMILY = "tiny128"  #: the variant family whose trained weights ship in ``spikedeploy.data``


def default_tracker_checkpoint(templates: int = 1):
    """Path of the bundled trained weights of SpikeTrack-TINY128-T``templates`` (a file
    ``{"net": state_dict}`` in the official layout inside the installed package, trained by
    :func:`spikedeploy.tracking.training.train_tracker` on synthetic sequences; see
    ``spikedeploy/data/*_train.json`` for how). Raises CheckpointError when the package ships no
    weights for that number of templates."""
    from importlib import resources
    from pathlib import Path

    if isinstance(templates, bool) or templates not in (1, 3):
        raise ConfigError(f"bundled SpikeTrack weights exist for templates 1 and 3, not {templates!r}")
    name = f"spiketrack-{BUNDLED_FAMILY}-t{templates}.pth"
    path = resources.files("spikedeploy.data") / name
    if not path.is_file():
        raise CheckpointError(f"spikedeploy ships no trained weights {name} (package data spikedeploy/data/)")
    return Path(str(path))


def bundled_model(templates: int = 1) -> SpikeTrack:
    """SpikeTrack-TINY128-T``templates`` with the bundled trained weights (float32, eval mode)."""
    return spiketrack_from_checkpoint(default_tracker_checkpoint(templates), variant=BUNDLED_FAMILY,
                                      templates=templates).float()


# ---------------------------------------------------------------------------------------------
# host side (not part of the spiking network)
# ---------------------------------------------------------------------------------------------

IMAGE_MEAN = (0.485, 0.456, 0.406)  #: RGB mean of the official Preprocessor
IMAGE_STD = (0.229, 0.224, 0.225)  #: RGB std of the official Preprocessor


def normalize_images(images) -> torch.Tensor:
    """HOST: RGB uint8 crops ``[H, W, 3]`` or ``[N, H, W, 3]`` (numpy or tensor) -> float32
    ``[N, 3, H, W]``, ``(x / 255 - mean) / std`` in the official Preprocessor's op order.
    Templates for :meth:`SpikeTrack.template_branch` are ``normalize_images(z)[:, None]``
    (``[T, 1, 3, S, S]``), a search crop is ``normalize_images(x)`` (``[1, 3, S, S]``, B = 1).

    The result is contiguous (row-major NCHW), so that stacking and reshaping it gives the
    contiguous template tensor of the official tracker: a permuted HWC tensor is channels-last, and
    ``torch.stack`` of such crops stays channels-last, which changes the template branch's float32
    rounding (see :func:`_contiguous`)."""
    t = torch.as_tensor(np.ascontiguousarray(images))  # also numpy views with negative strides
    if t.dim() == 3:
        t = t.unsqueeze(0)
    if t.dim() != 4 or t.shape[-1] != 3:
        raise ValueError(f"normalize_images: expected RGB images [H, W, 3] or [N, H, W, 3], got {list(t.shape)}")
    t = t.float().permute(0, 3, 1, 2)
    mean = torch.tensor(IMAGE_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGE_STD).view(1, 3, 1, 1)
    return (((t / 255.0) - mean) / std).contiguous()


def head_maps(out: HeadOutputs) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """HOST: raw head outputs -> ``(score_map [B,1,F,F], size_map [B,2,F,F], offset_map [B,2,F,F])``:
    ``clamp(sigmoid(.), 1e-4, 1 - 1e-4)`` on score and size, then the mean over the time axis
    (T = 1), as the official ``CenterPredictor``."""
    score_logits, size_logits, offset = out

    def _sigmoid(x):
        return torch.clamp(x.sigmoid(), min=1e-4, max=1 - 1e-4)

    return _sigmoid(score_logits).mean(0), _sigmoid(size_logits).mean(0), offset.mean(0)


def hann_window(size: int) -> torch.Tensor:
    """HOST: the tracker's centered 2-D Hanning window ``[1, 1, size, size]`` (official ``hann2d``)."""
    h = 0.5 * (1 - torch.cos((2 * math.pi / (size + 1)) * torch.arange(1, size + 1).float()))
    return h.reshape(1, 1, -1, 1) * h.reshape(1, 1, 1, -1)


def decode_boxes(score_map: torch.Tensor, size_map: torch.Tensor, offset_map: torch.Tensor,
                 window: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """HOST: box decoding of the official ``CenterPredictor.cal_bbox``.

    ``score_map [B, 1, F, F]`` (times ``window`` when given, e.g. :func:`hann_window`), argmax
    cell (x, y) -> box ``(cx, cy, w, h)`` normalized to the crop: ``cx = (x + offset_x) / F``,
    ``cy = (y + offset_y) / F``, ``(w, h)`` = the size map at that cell. Returns ``(boxes [B, 4],
    scores [B, 1])`` (the score is the maximum of the, possibly windowed, score map)."""
    if window is not None:
        score_map = window * score_map
    feat = score_map.shape[-1]
    max_score, idx = torch.max(score_map.flatten(1), dim=1, keepdim=True)
    idx_y = torch.div(idx, feat, rounding_mode="floor")
    idx_x = idx % feat
    gather_idx = idx.unsqueeze(1).expand(idx.shape[0], 2, 1)
    size = size_map.flatten(2).gather(dim=2, index=gather_idx)
    off = offset_map.flatten(2).gather(dim=2, index=gather_idx).squeeze(-1)
    boxes = torch.cat(
        [(idx_x.to(torch.float) + off[:, :1]) / feat, (idx_y.to(torch.float) + off[:, 1:]) / feat, size.squeeze(-1)],
        dim=1,
    )
    return boxes, max_score


#: the host-side steps, by name (documentation and audit reports)
HOST_FUNCTIONS = {
    "normalize_images": normalize_images,
    "gate_softmax": host_gate_softmax,
    "head_maps": head_maps,
    "hann_window": hann_window,
    "decode_boxes": decode_boxes,
}
