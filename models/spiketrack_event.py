"""The event SpikeTrack: a pure spike-driven event-camera tracker with DI-LIF neurons and MSST.

Written from the seed paper ("SpikeTrack: High-performance and Energy-efficient Event-Based Object
Tracking with Spiking Neural Network", CVPR 2026; no official code, so every detail the paper leaves
open is a documented choice here). Blocks in :mod:`spikedeploy.models.spiketrack_event_blocks`.

Architecture (widths ``c0, c1, c2``; S the search crop, stride 16, F = S / 16)::

    input   voxel grids [T, B, 2 * n_bins, S, S]    (spikedeploy.events.window_frames, one search
                                                     frame per time step; voxel_input() reshapes)
    stem    Conv 7x7 s2 (2n -> c0/2) + BN            host layer on event counts (MACs)
    conv stage (I-LIF, 4 blocks U' = U + SNNSepConv(U), separable conv pw -> dw 7x7 -> pw, each
            preceded by an I-LIF):
            block1 (c0/2, S/2) -> down s2 -> block2 (c0, S/4) -> down s2 -> block3 (c1, S/8)
            -> down s2 -> block4 (c1, S/16)          (down = I-LIF -> Conv 3x3 + BN)
    embed   I-LIF -> Conv 1x1 (c1 -> c2) + BN, tokens [T, B, c2, F*F] + position embedding
            (one for template tokens, one for search tokens)
    transformer stage (DI-LIF, ``depth`` = 8 blocks): x += SSA(x); x += MLP(x)
            SSA = Q_s (K_t^T V_t + K_s^T V_s) / sqrt(d_h)  (see below)
    head    the RGB SpikeTrack center head with I-LIF neurons: score, size, offset maps per frame

**Template/search interaction as a per-sequence memory.** The seed concatenates template and search
tokens in its self-attention. Here the template branch runs once per sequence on the template
frame (T = 1) and stores per transformer block the memory ``M = K_t^T V_t``; the search branch reads
it: ``SSA_s = Q_s (M + K_s^T V_s) / sqrt(d_h)``, which is *exactly* the seed's attention of the search
queries over the concatenated ``[template; search]`` tokens (``[K_t; K_s]^T [V_t; V_s] = K_t^T V_t +
K_s^T V_s``) in the spike-driven order Q (K^T V). What differs from the seed's wording: the template
tokens attend only to template tokens (not to the search tokens of each frame), so the template
features do not change from frame to frame and the memory is a synapse whose weights are written
once per sequence -- the RGB SpikeTrack's MemoryWrite/MemoryRead design, deployable frame by frame.

**MSST.** Consecutive search frames are consecutive time steps of one run; every neuron is leaky
(leak ``config.leak``, subtract-q reset) and its membrane carries from frame to frame with no reset
between frames, in training (``forward(template, search)`` on a T-frame clip) and at inference (the
same network on T frames). The template memory is read by every frame.

**Neurons.** I-LIF = :class:`~spikedeploy.models.neurons.LeakyIntegerLIF` with D = ``config.d_ilif``
(it emits the integer q; the seed's 1/D normalization is a constant factor absorbed by the next
layer's weights). DI-LIF = :class:`~spikedeploy.models.spiketrack_event_blocks.EventDILIF` with
D_init = 6: ``D[t, b] = clamp(round(2 sigmoid(w mean(X[t, b]) + b) D_init), 1, 2 D_init)`` (the
project's documented formula; the seed omits it), emitting ``q / D_init``; one learnable gate (w, b)
per neuron layer. The statistic is per sample (inference: B = 1, so per sample = per batch);
``dilif_scope="batch"`` makes it per batch in training, as the seed does (eval mode is always per
sample).

Model API::

    model = spiketrack_event("tiny")                      # or "full"
    memory = model.template_branch(template)              # [1, B, 2n, St, St] -> tuple of `depth` memories
    out = model.search_branch(search, memory)             # [T, B, 2n, S, S] -> HeadOutputs, [T, B, c, F, F]
    out = model(template, search)                         # both (training: MSST clips)
    boxes, scores = decode_frames(out, window=hann_window(model.config.feat_size))   # HOST, [T, B, 4]

Configurations (:data:`EVENT_CONFIGS`): ``full`` (the seed's size: 25,251,517 parameters, paper 25.26 M;
widths chosen for that, see :class:`EventSpikeTrackConfig`) and ``tiny`` (a bundled CPU tracker).
Registered as ``spiketrack-event-full`` / ``spiketrack-event-tiny`` and their ``:template`` /
``:search`` branches (single-input networks for capture, verify, export, audit).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from spikedeploy.errors import ConfigError

from .spiketrack import HeadOutputs, decode_boxes, hann_window
from .spiketrack_event_blocks import (DILIF_SCOPES, EventBlock, EventCenterHead, EventConvBlock, EventDILIF,
                                      EventDownSampling, StreamingNeuron, leaky_ilif)

__all__ = [
    "EventSpikeTrackConfig",
    "EVENT_CONFIGS",
    "EVENT_VARIANTS",
    "PAPER_PARAMETERS",
    "EventSpikeTrackEncoder",
    "EventSpikeTrack",
    "SearchStream",
    "EventTemplateNet",
    "EventSearchNet",
    "spiketrack_event",
    "spiketrack_event_branch",
    "init_event_spiketrack_for_spiking",
    "voxel_input",
    "event_head_maps",
    "decode_frames",
    "HOST_FUNCTIONS",
]

#: the seed's parameter count (Table 1, "Ours")
PAPER_PARAMETERS = 25.26e6


@dataclass(frozen=True)
class EventSpikeTrackConfig:
    """One event SpikeTrack configuration.

    ``conv_dims = (c0, c1)``: widths of the conv stage (blocks 1..4 at ``c0/2, c0, c1, c1``);
    ``embed_dim`` (c2): transformer width; ``depth`` transformer blocks (seed: 8) with ``num_heads``
    heads and MLP ratio ``mlp_ratio``; ``head_channels``: the center head's width; ``resolution``:
    search crop S, ``template_size``: template crop (both multiples of 16; the memory K^T V does
    not depend on the number of tokens, so they may differ); ``n_bins``: voxel bins per frame (input
    channels 2 * n_bins); ``d_init`` (seed: 6) of the DI-LIF layers, ``d_ilif`` the I-LIF's fixed D
    (6: the seed's "DI-LIF -> I-LIF" ablation fixes D at D_init); ``leak`` of every neuron (the
    membrane carried from frame to frame); ``dilif_scope`` "sample" or "batch" (training only);
    ``sepconv_kernel`` the depthwise kernel of the conv stage.

    ``full``: c0, c1 = 64, 128, c2 = 472 (8 heads, d_h = 59), head 192, S = 256, template 128:
    25,251,517 parameters against the paper's 25.26 M (-0.03 %); the widths c2 and head were
    chosen for that count (the paper gives only the count, the depths and D_init). ``tiny``: c0, c1 = 16, 32, c2 = 64, 4 heads,
    2 transformer blocks, head 32, S = 128, template 64 (trains on 2 CPU cores).
    """

    family: str
    conv_dims: Tuple[int, int]
    embed_dim: int
    depth: int
    num_heads: int
    head_channels: int
    resolution: int
    template_size: int
    mlp_ratio: int = 4
    n_bins: int = 5
    d_init: int = 6
    d_ilif: int = 6
    leak: float = 0.25
    dilif_scope: str = "sample"
    sepconv_kernel: int = 7
    stride: int = 16

    def __post_init__(self):
        for name in ("resolution", "template_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < self.stride or v % self.stride:
                raise ConfigError(f"event SpikeTrack: {name} must be a positive multiple of {self.stride}, got {v!r}")
        if self.embed_dim % self.num_heads:
            raise ConfigError(f"event SpikeTrack: embed_dim {self.embed_dim} is not divisible by "
                              f"num_heads {self.num_heads}")
        if self.dilif_scope not in DILIF_SCOPES:
            raise ConfigError(f"event SpikeTrack: dilif_scope must be one of {DILIF_SCOPES}, got {self.dilif_scope!r}")
        if isinstance(self.depth, bool) or not isinstance(self.depth, int) or self.depth < 1:
            raise ConfigError(f"event SpikeTrack: depth must be an int >= 1, got {self.depth!r}")

    @property
    def variant(self) -> str:
        return f"spiketrack-event-{self.family}"

    @property
    def name(self) -> str:
        return f"SpikeTrack-Event-{self.family.upper()}"

    @property
    def in_channels(self) -> int:
        return 2 * self.n_bins

    @property
    def feat_size(self) -> int:
        return self.resolution // self.stride

    @property
    def template_feat_size(self) -> int:
        return self.template_size // self.stride

    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.num_heads

    def memory_shape(self, batch: int = 1) -> Tuple[int, ...]:
        """Shape of one block's template memory ``K_t^T V_t``: ``[1, B, heads, d_h, d_h]``."""
        return (1, batch, self.num_heads, self.head_dim, self.head_dim)


EVENT_CONFIGS: Dict[str, EventSpikeTrackConfig] = {
    "full": EventSpikeTrackConfig(family="full", conv_dims=(64, 128), embed_dim=472, depth=8, num_heads=8,
                                  head_channels=192, resolution=256, template_size=128),
    "tiny": EventSpikeTrackConfig(family="tiny", conv_dims=(16, 32), embed_dim=64, depth=2, num_heads=4,
                                  head_channels=32, resolution=128, template_size=64),
}
#: registry names, e.g. ``spiketrack-event-tiny``
EVENT_VARIANTS: Tuple[str, ...] = tuple(c.variant for c in EVENT_CONFIGS.values())


class EventSpikeTrackEncoder(nn.Module):
    """Stem, I-LIF conv stage, embedding and the DI-LIF transformer stage (module docstring)."""

    def __init__(self, config: EventSpikeTrackConfig):
        super().__init__()
        c = config
        c0, c1 = c.conv_dims

        def ilif():
            return leaky_ilif(c.d_ilif, c.leak)

        def dilif():
            return EventDILIF(d_init=c.d_init, leak=c.leak, scope=c.dilif_scope)

        k = c.sepconv_kernel
        self.stem = EventDownSampling(c.in_channels, c0 // 2, None, kernel_size=7, stride=2, padding=3)
        self.block1 = EventConvBlock(c0 // 2, ilif, k)
        self.down2 = EventDownSampling(c0 // 2, c0, ilif)
        self.block2 = EventConvBlock(c0, ilif, k)
        self.down3 = EventDownSampling(c0, c1, ilif)
        self.block3 = EventConvBlock(c1, ilif, k)
        self.down4 = EventDownSampling(c1, c1, ilif)
        self.block4 = EventConvBlock(c1, ilif, k)
        self.embed = EventDownSampling(c1, c.embed_dim, ilif, kernel_size=1, stride=1, padding=0)
        self.search_pos = nn.Parameter(torch.zeros(1, c.embed_dim, c.feat_size ** 2))
        self.template_pos = nn.Parameter(torch.zeros(1, c.embed_dim, c.template_feat_size ** 2))
        self.blocks = nn.ModuleList([EventBlock(c.embed_dim, c.num_heads, c.mlp_ratio, dilif) for _ in range(c.depth)])

    def tokens(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """Voxel grids ``[T, B, 2n, H, W]`` -> tokens ``[T, B, c2, H/16 * W/16]`` (+ position embedding)."""
        for layer in (self.stem, self.block1, self.down2, self.block2, self.down3, self.block3, self.down4,
                      self.block4, self.embed):
            x = layer(x)
        return x.flatten(3) + pos

    def forward_template(self, template: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        """``[1, B, 2n, St, St]`` -> the ``depth`` memories ``[1, B, heads, d_h, d_h]``."""
        x = self.tokens(template, self.template_pos)
        memory = []
        for blk in self.blocks:
            x, m = blk.write(x)
            memory.append(m)
        return tuple(memory)

    def forward_search(self, search: torch.Tensor, memory: Sequence[torch.Tensor]) -> torch.Tensor:
        """``[T, B, 2n, S, S]`` + memories -> search feature ``[T, B, c2, F, F]``."""
        T, B = search.shape[0], search.shape[1]
        x = self.tokens(search, self.search_pos)
        for blk, m in zip(self.blocks, memory):
            x = blk(x, m)
        F_ = search.shape[-1] // 16
        return x.reshape(T, B, x.shape[2], F_, F_)


def _check_input(x, name: str, channels: int, size: int, steps: Optional[int]) -> None:
    if not isinstance(x, torch.Tensor):  # torch.fx proxies: no checks while tracing
        return
    ok = x.dim() == 5 and x.shape[2] == channels and x.shape[3] == size and x.shape[4] == size
    if ok and steps is not None and x.shape[0] != steps:
        ok = False
    if not ok:
        t = "T" if steps is None else str(steps)
        raise ValueError(f"{name}: expected voxel grids [{t}, B, {channels}, {size}, {size}] "
                         f"(spiketrack_event.voxel_input), got shape {list(x.shape)}")


class EventSpikeTrack(nn.Module):
    """An event SpikeTrack configuration (:class:`EventSpikeTrackConfig`): ``encoder``
    (:class:`EventSpikeTrackEncoder`) and ``decoder`` (:class:`EventCenterHead`). Built in eval mode.

    Entry points: :meth:`template_branch`, :meth:`search_branch` and ``forward(template, search)``
    (both; the MSST training step: template ``[1, B, 2n, St, St]``, search clip ``[T, B, 2n, S, S]``
    -> :class:`~spikedeploy.models.spiketrack.HeadOutputs` with one map per frame)."""

    def __init__(self, config: EventSpikeTrackConfig):
        super().__init__()
        if not isinstance(config, EventSpikeTrackConfig):
            raise TypeError(f"EventSpikeTrack: expected an EventSpikeTrackConfig, got {type(config).__name__}")
        self.config = config
        self.encoder = EventSpikeTrackEncoder(config)
        self.decoder = EventCenterHead(config.embed_dim, config.head_channels,
                                       lambda: leaky_ilif(config.d_ilif, config.leak))
        self.eval()

    def template_branch(self, template: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        c = self.config
        _check_input(template, f"{c.name} template_branch", c.in_channels, c.template_size, 1)
        return self.encoder.forward_template(template)

    def _check_memory(self, memory, batch: int) -> Tuple[torch.Tensor, ...]:
        mem = tuple(memory)
        c = self.config
        if len(mem) != c.depth:
            raise ValueError(f"{c.name}: expected {c.depth} memories (one per transformer block), got {len(mem)}")
        for k, m in enumerate(mem):
            if isinstance(m, torch.Tensor) and tuple(m.shape) not in (c.memory_shape(batch), c.memory_shape(1)):
                raise ValueError(f"{c.name}: memory {k} has shape {list(m.shape)}, expected "
                                 f"{list(c.memory_shape(batch))} (template_branch of the same model)")
        return mem

    def search_feature(self, search: torch.Tensor, memory) -> torch.Tensor:
        c = self.config
        _check_input(search, f"{c.name} search_branch", c.in_channels, c.resolution, None)
        B = search.shape[1] if isinstance(search, torch.Tensor) else 1
        return self.encoder.forward_search(search, self._check_memory(memory, B))

    def search_branch(self, search: torch.Tensor, memory) -> HeadOutputs:
        """``search [T, B, 2n, S, S]`` (T consecutive frames, the membrane carried across them) and
        the template memories -> :class:`HeadOutputs` (raw maps ``[T, B, c, F, F]``)."""
        return HeadOutputs(*self.decoder(self.search_feature(search, memory)))

    def forward(self, template: torch.Tensor, search: torch.Tensor) -> HeadOutputs:
        return self.search_branch(search, self.template_branch(template))

    def search_stream(self, memory) -> "SearchStream":
        """Frame-by-frame search with the membranes kept between calls (:class:`SearchStream`)."""
        return SearchStream(self, memory)

    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def extra_repr(self):
        return self.config.name


class SearchStream:
    """MSST at inference, frame by frame: ``stream(frames [t, B, 2n, S, S])`` runs the search branch
    on the next ``t`` frames (t >= 1) with every neuron continuing from its membrane after the
    previous call (:class:`~spikedeploy.models.spiketrack_event_blocks.StreamingNeuron`), so feeding a
    clip in pieces gives the outputs of ``search_branch`` on the whole clip: bit for bit in float64;
    in float32 up to the rounding of convolution kernels that differ with the number of frames per
    call (measured 1e-6 on the head maps, which can flip a spike at a rounding boundary). The template
    memory is fixed for the stream. One stream per model at a time (the state lives in the neuron
    modules); use as a context manager or call :meth:`close`, which returns the neurons to the
    normal (whole-clip) behaviour."""

    def __init__(self, model: EventSpikeTrack, memory):
        self.model = model
        self._neurons = [m for m in model.modules() if isinstance(m, StreamingNeuron)]
        if any(n.streaming for n in self._neurons):
            raise ValueError(f"{model.config.name}: a search stream is already open on this model; close it first")
        self.memory = tuple(memory)
        self.frames = 0
        for n in self._neurons:
            n.start_stream()

    def __call__(self, frames: torch.Tensor) -> HeadOutputs:
        if not self._neurons or not self._neurons[0].streaming:
            raise ValueError("SearchStream: the stream is closed")
        out = self.model.search_branch(frames, self.memory)
        self.frames += int(frames.shape[0])
        return out

    def close(self) -> None:
        for n in self._neurons:
            n.stop_stream()

    def __enter__(self) -> "SearchStream":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _EventBranchNet(nn.Module):
    """The model loader's interface (as the RGB branches): ``input_shape``, ``default_checkpoint_key``
    (``{"net": EventSpikeTrack.state_dict()}``), ``load_weights``, ``init_random_weights``."""

    default_checkpoint_key = "net"

    def __init__(self, model: EventSpikeTrack):
        super().__init__()
        self.model = model

    @property
    def input_shape(self) -> Tuple[int, int, int]:
        c = self.model.config
        size = c.template_size if isinstance(self, EventTemplateNet) else c.resolution
        return (c.in_channels, size, size)

    def load_weights(self, state_dict, *, source: str = "<state dict>") -> None:
        from spikedeploy.checkpoint import apply_state_dict

        apply_state_dict(self.model, state_dict, source=source)
        self.refresh()

    def init_random_weights(self, seed: int = 0) -> None:
        init_event_spiketrack_for_spiking(self.model, seed=seed)
        self.refresh()

    def refresh(self) -> None:
        """Recompute what depends on the weights (the search branch's memory)."""


class EventTemplateNet(_EventBranchNet):
    """Single-input template branch: ``forward(x [1, B, 2n, St, St])`` -> tuple of memories."""

    def forward(self, x):
        return self.model.encoder.forward_template(x)


class EventSearchNet(_EventBranchNet):
    """Single-input search branch with the template memories held as buffers ``memory_0..``
    (``[1, 1, heads, d_h, d_h]``, rewritten by :meth:`set_memory` once per sequence):
    ``forward(x [T, B, 2n, S, S])`` -> :class:`HeadOutputs`. ``template`` (optional): the template
    input the memory is computed from (:meth:`refresh` after the weights change)."""

    def __init__(self, model: EventSpikeTrack, memory, template: Optional[torch.Tensor] = None):
        super().__init__(model)
        self._template = template
        for k, m in enumerate(model._check_memory(memory, 1)):
            self.register_buffer(f"memory_{k}", m.detach().clone())

    def memories(self) -> Tuple[torch.Tensor, ...]:
        return tuple(getattr(self, f"memory_{k}") for k in range(self.model.config.depth))

    def refresh(self) -> None:
        if self._template is not None:
            with torch.no_grad():
                self.set_memory(self.model.template_branch(self._template))

    def set_memory(self, memory) -> None:
        for k, m in enumerate(self.model._check_memory(memory, 1)):
            getattr(self, f"memory_{k}").copy_(m)

    def forward(self, x):
        return HeadOutputs(*self.model.decoder(self.model.encoder.forward_search(x, self.memories())))


def random_voxels(shape, *, seed: int = 0, rate: float = 0.3) -> torch.Tensor:
    """Seeded Poisson event counts (``rate`` events per pixel and bin): a stand-in event input."""
    gen = torch.Generator().manual_seed(int(seed))
    return torch.poisson(torch.full(tuple(shape), float(rate)), generator=gen)


def spiketrack_event_branch(variant: str, branch: str, *, seed: int = 0) -> _EventBranchNet:
    """A single-input branch of event SpikeTrack ``variant`` for the toolchain: ``"template"``
    (input ``[1, B, 2n, St, St]``, output the memories) or ``"search"`` (input ``[T, B, 2n, S, S]``,
    output :class:`HeadOutputs`; its memory comes from a seeded random event template, recomputed
    when the weights change). Weights: PyTorch's defaults until ``load_weights`` or
    ``init_random_weights``."""
    model = spiketrack_event(variant)
    if branch == "template":
        return EventTemplateNet(model)
    if branch == "search":
        c = model.config
        template = random_voxels((1, 1, c.in_channels, c.template_size, c.template_size), seed=seed)
        with torch.no_grad():
            memory = model.template_branch(template)
        return EventSearchNet(model, memory, template)
    raise ValueError(f"unknown event SpikeTrack branch {branch!r}; expected 'template' or 'search'")


_NAME_RE = re.compile(r"^(?:spiketrack[-_]event[-_])?([a-z0-9]+)$")


def spiketrack_event(variant: str = "tiny", **overrides) -> EventSpikeTrack:
    """Build an event SpikeTrack: ``variant`` ``"tiny"`` / ``"full"`` or ``"spiketrack-event-tiny"``;
    ``overrides`` replace config fields (e.g. ``dilif_scope="batch"`` for training, ``n_bins=3``)."""
    m = _NAME_RE.match(str(variant).strip().lower()) if isinstance(variant, str) else None
    if m is None or m.group(1) not in EVENT_CONFIGS:
        raise ConfigError(f"unknown event SpikeTrack variant {variant!r}; known: {', '.join(EVENT_VARIANTS)}")
    cfg = EVENT_CONFIGS[m.group(1)]
    if overrides:
        from dataclasses import fields, replace

        known = {f.name for f in fields(EventSpikeTrackConfig)} - {"family"}
        bad = sorted(set(overrides) - known)
        if bad:
            raise ConfigError(f"event SpikeTrack: unknown config fields {bad}; known: {sorted(known)}")
        cfg = replace(cfg, **overrides)
    return EventSpikeTrack(cfg)


# ---------------------------------------------------------------------------------------------
# random weights that fire (tests, demos)
# ---------------------------------------------------------------------------------------------


@torch.no_grad()
def init_event_spiketrack_for_spiking(model: EventSpikeTrack, *, seed: int = 0, gain: float = 2.0,
                                      qkv_gain: float = 2.0, gate_spread: float = 1.5,
                                      template: Optional[torch.Tensor] = None,
                                      search: Optional[torch.Tensor] = None, frames: int = 4) -> EventSpikeTrack:
    """Deterministic random weights (seed ``seed``) with which every neuron layer fires and the
    DI-LIF firing limits change from frame to frame (for tests and demos without a checkpoint):

    1. conv/linear weights ~ N(0, 1/sqrt(fan_in)), biases ~ N(0, 0.05); position embeddings
       ~ N(0, 0.02); BatchNorm weight ~ g U(0.6, 1.4), bias ~ g N(0, 0.2) with g = ``qkv_gain`` for
       the attention's q/k/v projections and ``gain`` elsewhere;
    2. calibration on an example (``template`` ``[1, 2, 2n, St, St]`` and a ``frames``-frame
       ``search`` clip, default seeded Poisson counts): the template branch, then the search branch,
       each BatchNorm just before it runs sets ``running_mean = mu + 0.1 N(0,1) sigma``,
       ``running_var = sigma^2 U(0.5, 1.5)`` from its input's per-channel statistics; each DI-LIF
       gate is set from its input's per-(step, sample) means ``mu``: ``gate_w = gate_spread /
       std(mu)``, ``gate_b = -gate_w * mean(mu) + N(0, 0.3)``, so ``w mu + b`` spreads over about
       ``+-gate_spread`` and D moves with the input's activity. The BatchNorms are calibrated on the
       template first and then overwritten on the search clip (the statistics the search sees).

    Training flags are restored afterwards. Returns the model."""
    gen = torch.Generator().manual_seed(int(seed))
    c = model.config

    def normal(t, std, mean=0.0):
        t.copy_((mean + torch.randn(t.shape, generator=gen, dtype=torch.float64) * std).to(t.dtype))

    def uniform(t, lo, hi):
        t.copy_((lo + (hi - lo) * torch.rand(t.shape, generator=gen, dtype=torch.float64)).to(t.dtype))

    qkv = set()
    for blk in model.encoder.blocks:
        qkv.update(id(getattr(blk.attn, n)[1]) for n in ("q_conv", "k_conv", "v_conv"))
    for module in model.modules():
        if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Linear)):
            normal(module.weight, 1.0 / module.weight[0].numel() ** 0.5)
            if module.bias is not None:
                normal(module.bias, 0.05)
        elif isinstance(module, nn.modules.batchnorm._BatchNorm):
            g = qkv_gain if id(module) in qkv else gain
            uniform(module.weight, 0.6 * g, 1.4 * g)
            normal(module.bias, 0.2 * g)
    for p in (model.encoder.search_pos, model.encoder.template_pos):
        normal(p, 0.02)

    if template is None:
        template = random_voxels((1, 2, c.in_channels, c.template_size, c.template_size), seed=seed + 1)
    if search is None:
        rates = torch.linspace(0.05, 0.6, frames).reshape(frames, 1, 1, 1, 1)
        g2 = torch.Generator().manual_seed(int(seed) + 2)
        search = torch.poisson(rates.expand(frames, 2, c.in_channels, c.resolution, c.resolution).contiguous(),
                               generator=g2)

    def bn_hook(module, inputs):
        inp = inputs[0].detach()
        dims = [i for i in range(inp.dim()) if i != 1]
        mu = inp.mean(dim=dims)
        sigma = inp.std(dim=dims).clamp_min(1e-3)
        module.running_mean.copy_(mu + 0.1 * torch.randn(mu.shape, generator=gen) * sigma)
        module.running_var.copy_(sigma ** 2 * (0.5 + torch.rand(mu.shape, generator=gen)))

    def gate_hook(module, inputs):
        mu = inputs[0].detach().flatten(2).mean(dim=2).double()
        w = gate_spread / float(mu.std().clamp_min(1e-3)) if mu.numel() > 1 else 1.0
        module.gate_w.copy_(torch.tensor(w))
        module.gate_b.copy_(torch.tensor(-w * float(mu.mean()) + 0.3 * float(torch.randn((), generator=gen))))

    modes = {m: m.training for m in model.modules()}
    handles = [m.register_forward_pre_hook(bn_hook) for m in model.modules()
               if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    handles += [m.register_forward_pre_hook(gate_hook) for m in model.modules() if isinstance(m, EventDILIF)]
    try:
        model.eval()
        memory = model.template_branch(template)
        model.search_branch(search, memory)
    finally:
        for h in handles:
            h.remove()
        for m, training in modes.items():
            m.training = training
    return model


# ---------------------------------------------------------------------------------------------
# host side
# ---------------------------------------------------------------------------------------------


def voxel_input(grids) -> torch.Tensor:
    """HOST: voxel grids from :func:`spikedeploy.events.window_frames` (``[T, n_bins, 2, H, W]``, one
    grid per search frame) or :func:`~spikedeploy.events.event_frames` (``[n_bins, 2, H, W]``, one
    frame) -> float32 ``[T, 1, 2 * n_bins, H, W]`` (B = 1; channels bin-major: bin 0 OFF, bin 0 ON,
    bin 1 OFF, ...). The event counts are used as they are (the stem is a host layer)."""
    a = torch.as_tensor(np.ascontiguousarray(grids))
    if a.dim() == 4:
        a = a.unsqueeze(0)
    if a.dim() != 5 or a.shape[2] != 2:
        raise ValueError(f"voxel_input: expected grids [T, n_bins, 2, H, W] or [n_bins, 2, H, W], got {list(a.shape)}")
    T, n, _, H, W = a.shape
    return a.float().reshape(T, 1, 2 * n, H, W).contiguous()


def event_head_maps(out: HeadOutputs) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """HOST: raw head outputs ``[T, B, c, F, F]`` -> per-frame ``(score_map, size_map, offset_map)``
    ``[T, B, c, F, F]``: ``clamp(sigmoid(.), 1e-4, 1 - 1e-4)`` on score and size (as the RGB
    ``head_maps``, without its mean over T: here each step is its own frame)."""
    score_logits, size_logits, offset = out

    def _sigmoid(x):
        return torch.clamp(x.sigmoid(), min=1e-4, max=1 - 1e-4)

    return _sigmoid(score_logits), _sigmoid(size_logits), offset


def decode_frames(out: HeadOutputs, window: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """HOST: one box per frame: ``(boxes [T, B, 4] (cx, cy, w, h normalized to the crop), scores
    [T, B, 1])`` by the RGB SpikeTrack's :func:`~spikedeploy.models.spiketrack.decode_boxes` on each
    frame's maps (``window``, e.g. :func:`~spikedeploy.models.spiketrack.hann_window`)."""
    score, size, offset = event_head_maps(out)
    T, B = score.shape[0], score.shape[1]
    boxes, scores = decode_boxes(score.flatten(0, 1), size.flatten(0, 1), offset.flatten(0, 1), window=window)
    return boxes.reshape(T, B, 4), scores.reshape(T, B, 1)


#: the host-side steps, by name (documentation and audit reports)
HOST_FUNCTIONS = {
    "voxel_input": voxel_input,
    "event_head_maps": event_head_maps,
    "hann_window": hann_window,
    "decode_frames": decode_frames,
}
