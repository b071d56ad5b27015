"""Training a SpikeTrack tracker (the small ``tiny128`` variants) on synthetic sequences.

The network is trained *as it is deployed*: the NI-LIF neurons quantize in the forward pass
(``round(clamp(m, 0, D))``, D = 4) and pass gradients straight through inside ``[0, D]``
(:class:`spikedeploy.neurons` ``_QuantizeSTE``), so the trained weights run unchanged as an integer
network and lower exactly to spikes. Inference is not touched.

Training pairs are cut exactly as :class:`spikedeploy.tracking.tracker.SpikeTrackTracker` cuts them:
the template is :func:`~spikedeploy.tracking.tracker.crop_with_context` of a frame around its ground-truth
box (factor :data:`~spikedeploy.tracking.tracker.TEMPLATE_FACTOR` = 4, size S), the search region the same
crop (factor :data:`~spikedeploy.tracking.tracker.SEARCH_FACTOR` = 4) of a later frame around a
*simulated previous state* (the previous frame's box, jittered), both normalized with
:func:`~spikedeploy.models.spiketrack.normalize_images`. Labels follow the tracker's own box mapping
(:func:`~spikedeploy.tracking.tracker.map_box_back` inverted), so a perfect head output maps back to the
ground truth.

Losses (OSTrack/SpikeTrack center head): a focal loss on the score map against a Gaussian centred
on the ground-truth cell, and L1 + GIoU on the box decoded at that cell; weights 1, 5, 2.

BatchNorm: the backbone's BatchNorms are frozen (buffers) in the official layout. For training,
their affine ``weight``/``bias`` become parameters (:func:`prepare_for_training`) and all
BatchNorm statistics are set once from a calibration batch (:func:`calibrate_batchnorm`, a
data-dependent initialization); the model stays in eval mode throughout, so training and
inference compute the same function. :func:`export_state_dict` returns the official layout
(``{"net": ...}`` when saved with :func:`save_tracker_weights`).

Entry point: :func:`train_tracker` (``examples/train_tracker.py`` is its command line).
"""

from __future__ import annotations

import csv
import io
import json
import math
import numbers
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from spikedeploy.errors import ConfigError
from spikedeploy.fsutil import atomic_write_text

__all__ = [
    "TrainConfig",
    "TrainResult",
    "PairSampler",
    "prepare_for_training",
    "use_batch_statistics",
    "recompute_batchnorm_statistics",
    "calibrate_batchnorm",
    "init_head_biases",
    "gaussian_score_target",
    "focal_loss",
    "giou",
    "tracking_loss",
    "export_state_dict",
    "save_tracker_weights",
    "batchnorm_modules",
    "write_run_records",
    "train_tracker",
    "bundle_weights",
    "add_train_arguments",
    "run_train",
]


@dataclass
class TrainConfig:
    """Hyper-parameters of :func:`train_tracker` (all recorded next to the weights).

    ``variant``: the SpikeTrack variant to train; ``init_weights``: optional checkpoint to start
    from (e.g. the T = 1 weights for a T = 3 fine-tune; keys missing in it, such as the gate, keep
    their initialization, and BatchNorm calibration is skipped). ``steps`` and/or ``time_limit_s``
    bound the run (whichever comes first; the learning-rate schedule follows ``steps``).
    ``difficulty_min``: each training sequence gets a difficulty drawn uniformly from
    ``[difficulty_min, 1]`` (:func:`~spikedeploy.tracking.synth.generate_sequence`), an easier
    mix than the held-out evaluation (always difficulty 1); ``wide_jitter_p``: share of search crops
    placed far from the target (re-detection practice).
    """

    variant: str = "spiketrack-tiny128-t1"
    steps: int = 3200
    batch_size: int = 16
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 50
    grad_clip: float = 5.0
    seed: int = 0
    threads: int = 2
    time_limit_s: Optional[float] = None
    pool_sequences: int = 48
    sequence_frames: int = 48
    refresh_every: int = 10
    refresh_count: int = 2
    frame_size: Tuple[int, int] = (240, 320)
    max_gap: int = 40
    wide_jitter_p: float = 0.5
    difficulty_min: float = 0.3
    loss_weights: Tuple[float, float, float] = (1.0, 5.0, 2.0)  # focal, L1, GIoU
    log_every: int = 10
    save_every: int = 200
    calibration_batch: int = 32
    batchnorm: str = "batch"  # "batch": train with batch statistics, "frozen": calibrated fixed statistics
    bn_recompute_batches: int = 8
    init_weights: Optional[str] = None

    def validate(self) -> "TrainConfig":
        ints = ("steps", "batch_size", "warmup_steps", "seed", "threads", "pool_sequences", "sequence_frames",
                "refresh_every", "refresh_count", "max_gap", "log_every", "save_every", "calibration_batch",
                "bn_recompute_batches")
        for name in ints:
            v = getattr(self, name)
            lo = 0 if name in ("warmup_steps", "seed", "refresh_count") else 1
            if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < lo:
                raise ConfigError(f"train: {name} must be an integer >= {lo}, got {v!r}")
        if self.sequence_frames < 2:
            raise ConfigError(f"train: sequence_frames must be >= 2 (pairs need two frames), got {self.sequence_frames}")
        for name in ("lr", "weight_decay", "grad_clip", "wide_jitter_p", "difficulty_min"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v) or v < 0:
                raise ConfigError(f"train: {name} must be a finite number >= 0, got {v!r}")
        if self.batchnorm not in ("batch", "frozen"):
            raise ConfigError(f"train: batchnorm must be 'batch' or 'frozen', got {self.batchnorm!r}")
        if self.lr <= 0:
            raise ConfigError(f"train: lr must be > 0, got {self.lr!r}")
        for name in ("wide_jitter_p", "difficulty_min"):
            if getattr(self, name) > 1:
                raise ConfigError(f"train: {name} must be in [0, 1], got {getattr(self, name)!r}")
        if self.time_limit_s is not None and (not isinstance(self.time_limit_s, numbers.Real)
                                              or isinstance(self.time_limit_s, bool) or self.time_limit_s <= 0):
            raise ConfigError(f"train: time_limit_s must be a positive number, got {self.time_limit_s!r}")
        if len(self.loss_weights) != 3 or any(not isinstance(w, numbers.Real) or w < 0 for w in self.loss_weights):
            raise ConfigError(f"train: loss_weights must be three numbers >= 0, got {self.loss_weights!r}")
        return self


@dataclass
class TrainResult:
    """What :func:`train_tracker` produced: the trained model (eval mode, official layout), the
    per-step log rows, and the files written (weights, CSV, PNG, JSON; empty without output)."""

    model: nn.Module
    history: List[Dict[str, float]]
    files: Dict[str, str] = field(default_factory=dict)
    steps: int = 0
    seconds: float = 0.0


# ---------------------------------------------------------------------------------------------
# training-time model preparation
# ---------------------------------------------------------------------------------------------


def batchnorm_modules(model: nn.Module) -> List[nn.Module]:
    """Every BatchNorm of ``model`` (torch's and the frozen official-layout one), in module order:
    what the recipes calibrate, switch between batch and running statistics, and recompute."""
    from spikedeploy.models.layers import _FrozenBatchNorm

    return [m for m in model.modules() if isinstance(m, (_FrozenBatchNorm, nn.modules.batchnorm._BatchNorm))]


def write_run_records(out: Path, stem: str, history: Sequence[Dict[str, float]], meta: Dict[str, object], config,
                      plot: Callable[[Sequence[Dict[str, float]], Path, str], Path], plot_title: str,
                      *, lineterminator: str = "\r\n") -> Dict[str, str]:
    """The records every training recipe keeps next to its weights, each written atomically:
    ``<stem>_loss.csv`` (one row per logged step, columns of ``history``), ``<stem>_loss.png``
    (``plot(history, path, plot_title)``, when there is a row) and ``<stem>_train.json``
    (``{"config": asdict(config), **meta}``). Returns ``{"csv", "png", "json"}`` -> path."""
    table = io.StringIO(newline="")
    w = csv.DictWriter(table, fieldnames=list(history[0].keys()) if history else ["step"],
                       lineterminator=lineterminator)
    w.writeheader()
    w.writerows(history)
    files = {"csv": str(atomic_write_text(out / f"{stem}_loss.csv", table.getvalue()))}
    if history:
        files["png"] = str(plot(history, out / f"{stem}_loss.png", plot_title))
    files["json"] = str(atomic_write_text(out / f"{stem}_train.json",
                                          json.dumps({"config": asdict(config), **meta}, indent=2) + "\n"))
    return files


def prepare_for_training(model: nn.Module) -> nn.Module:
    """Turn the frozen BatchNorms' ``weight`` and ``bias`` buffers into parameters (in place) so
    they train; the state_dict keys and order stay the official ones. Returns ``model``."""
    from spikedeploy.models.layers import _FrozenBatchNorm

    for m in model.modules():
        if isinstance(m, _FrozenBatchNorm):
            for name in ("weight", "bias"):
                if name in m._buffers:
                    value = m._buffers.pop(name)
                    setattr(m, name, nn.Parameter(value.detach().clone()))
    return model


def use_batch_statistics(model: nn.Module, momentum: float = 0.1) -> nn.Module:
    """Replace every frozen BatchNorm (:class:`~spikedeploy.models.layers.FrozenBatchNorm2d`/``1d``)
    by a trainable ``nn.BatchNorm2d``/``1d`` holding the same weight, bias and statistics (in place;
    keys unchanged except an extra ``num_batches_tracked``). In train mode every BatchNorm then
    normalizes with the batch statistics, as the official networks were trained; after training
    :func:`recompute_batchnorm_statistics` sets the running statistics the deployed (frozen)
    network uses. Returns ``model``."""
    from spikedeploy.models.layers import _FrozenBatchNorm

    for parent in list(model.modules()):
        for name, child in list(parent._modules.items()):
            if isinstance(child, _FrozenBatchNorm):
                cls = nn.BatchNorm2d if child._input_dims == 4 else nn.BatchNorm1d
                bn = cls(child.num_features, eps=child.eps, momentum=momentum)
                with torch.no_grad():
                    for key in ("weight", "bias", "running_mean", "running_var"):
                        getattr(bn, key).copy_(getattr(child, key))
                parent._modules[name] = bn
    return model


@torch.no_grad()
def recompute_batchnorm_statistics(model: nn.Module, batches) -> int:
    """"Precise BatchNorm": reset every BatchNorm's running statistics and set them to the
    average over ``batches`` (an iterable of zero-argument callables, each running one forward
    pass in train mode) of the batch statistics, with the weights fixed. Leaves the model in eval
    mode. Returns the number of batches used."""
    bns = [m for m in model.modules() if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d))]
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average
    model.train()
    n = 0
    try:
        for run in batches:
            run()
            n += 1
    finally:
        for m, mom in zip(bns, saved):
            m.momentum = mom
        model.eval()
    return n


@torch.no_grad()
def calibrate_batchnorm(model: nn.Module, run: Callable[[], object]) -> int:
    """Data-dependent BatchNorm initialization: during one call of ``run()`` (a forward pass on a
    calibration batch), each BatchNorm, when it is first reached, sets ``running_mean`` /
    ``running_var`` to its input's per-channel mean and variance, so every layer downstream sees
    normalized inputs (the neurons then fire in their 0..D range). Returns how many were set."""
    done = set()
    hooks = []

    def pre_hook(module, args):
        if id(module) in done:
            return
        x = args[0]
        dims = [d for d in range(x.dim()) if d != 1]
        module.running_mean.copy_(x.mean(dim=dims))
        module.running_var.copy_(x.var(dim=dims, unbiased=False).clamp_min(1e-4))
        done.add(id(module))

    for m in batchnorm_modules(model):
        hooks.append(m.register_forward_pre_hook(pre_hook))
    try:
        run()
    finally:
        for h in hooks:
            h.remove()
    return len(done)


@torch.no_grad()
def init_head_biases(model: nn.Module, *, score_prior: float = 0.05, size_prior: float = 0.25) -> None:
    """Start the center head near the data: score sigmoid ``score_prior`` everywhere (focal-loss
    prior), size sigmoid ``size_prior`` (a target is about 1/4 of the crop at factor 4), offset 0.5."""
    dec = model.decoder
    dec.conv5_ctr.bias.fill_(math.log(score_prior / (1 - score_prior)))
    dec.conv5_size.bias.fill_(math.log(size_prior / (1 - size_prior)))
    dec.conv5_offset.bias.fill_(0.5)
    for conv in (dec.conv5_ctr, dec.conv5_size, dec.conv5_offset):
        conv.weight.mul_(0.1)


def export_state_dict(model: nn.Module) -> Dict[str, torch.Tensor]:
    """The trained weights in the official layout (``encoder.*``, ``decoder.*``; floating tensors as
    float32, integer buffers (``num_batches_tracked``) as they are, detached,
    keys in the order of a freshly built model of the same variant)."""
    from spikedeploy.models.spiketrack import SpikeTrack

    fresh = SpikeTrack(model.config).state_dict()
    sd = model.state_dict()
    missing = [k for k in fresh if k not in sd]
    if missing:
        raise RuntimeError(f"export_state_dict: layout differs from {model.config.name}: missing {missing[:5]}")
    return {k: (sd[k].detach().to(torch.float32) if sd[k].is_floating_point() else sd[k].detach()).clone().contiguous()
            for k in fresh}


def save_tracker_weights(model: nn.Module, path, *, meta: Optional[dict] = None) -> Path:
    """Save ``{"net": export_state_dict(model)}`` to ``path`` atomically (loadable with
    ``torch.load(path, weights_only=True)`` and ``spiketrack_from_checkpoint``). ``meta`` (JSON
    types only) is stored under ``"meta"``."""
    from spikedeploy.checkpoint import save_checkpoint

    payload = {"net": export_state_dict(model)}
    if meta is not None:
        payload["meta"] = meta
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(payload, path)
    return path


# ---------------------------------------------------------------------------------------------
# data: template / search pairs cut exactly as the tracker cuts them
# ---------------------------------------------------------------------------------------------


def _crop_targets(gt: np.ndarray, prev: Sequence[float], size: int) -> Tuple[np.ndarray, float]:
    """Ground truth ``gt = [x, y, w, h]`` as the normalized ``(cx, cy, w, h)`` that the tracker's
    ``map_box_back`` would map back to it, for a search crop around ``prev``."""
    side = math.ceil(math.sqrt(prev[2] * prev[3]) * 4.0)
    rf = size / side
    cx_prev, cy_prev = prev[0] + 0.5 * prev[2], prev[1] + 0.5 * prev[3]
    half = 0.5 * size / rf
    cx = (gt[0] + 0.5 * gt[2] - (cx_prev - half)) * rf / size
    cy = (gt[1] + 0.5 * gt[3] - (cy_prev - half)) * rf / size
    return np.array([cx, cy, gt[2] * rf / size, gt[3] * rf / size], dtype=np.float64), rf


class PairSampler:
    """Template/search pairs from a pool of synthetic ``split`` sequences, refreshed as training
    goes (``refresh()`` replaces the oldest sequences with new seeds). Deterministic in ``seed``.
    Each sequence's difficulty is drawn from ``[difficulty_min, 1]`` (1: every sequence at full
    difficulty).

    ``sample(batch)`` returns ``(templates [T, B, 3, S, S], search [1, B, 3, S, S], boxes [B, 4])``
    (normalized crops; boxes ``(cx, cy, w, h)`` normalized to the search crop). With ``templates``
    T > 1 the extra templates are later frames of the same sequence, as the tracker's queue holds."""

    def __init__(self, *, size: int, templates: int = 1, split: str = "train", seed: int = 0,
                 pool_sequences: int = 48, sequence_frames: int = 48, frame_size=(240, 320),
                 max_gap: int = 40, wide_jitter_p: float = 0.3, difficulty_min: float = 1.0, seed_offset: int = 0):
        from spikedeploy.tracking.synth import generate_sequence

        self._gen = generate_sequence
        self.size, self.templates, self.split = int(size), int(templates), split
        self.sequence_frames, self.frame_size = int(sequence_frames), tuple(frame_size)
        self.max_gap, self.wide_jitter_p = int(max_gap), float(wide_jitter_p)
        self.difficulty_min = float(difficulty_min)
        self.rng = np.random.default_rng(np.random.SeedSequence([7, int(seed)]))
        # sequence seeds: disjoint per training seed, so reruns with another seed see other data
        self._next_seed = 1_000_000 * int(seed) + int(seed_offset)
        self.pool = [self._new() for _ in range(int(pool_sequences))]
        self._oldest = 0

    def _new(self):
        s = self._next_seed
        self._next_seed += 1
        # the sequence's difficulty is a function of its seed alone (independent of sampling order)
        u = float(np.random.default_rng(np.random.SeedSequence([11, s])).random())
        difficulty = self.difficulty_min + (1.0 - self.difficulty_min) * u
        return self._gen(s, self.split, self.sequence_frames, self.frame_size, difficulty=difficulty)

    def refresh(self, count: int) -> None:
        for _ in range(count):
            self.pool[self._oldest] = self._new()
            self._oldest = (self._oldest + 1) % len(self.pool)

    def _prev_box(self, boxes: np.ndarray, j: int) -> List[float]:
        rng = self.rng
        prev = boxes[max(j - 1, 0)].copy()
        sz = math.sqrt(prev[2] * prev[3])
        if rng.random() < self.wide_jitter_p:
            shift = rng.uniform(-1.2, 1.2, size=2) * sz
            scale = np.exp(rng.uniform(-0.35, 0.35, size=2))
        else:
            shift = rng.normal(0.0, 0.15, size=2) * sz
            scale = np.exp(rng.normal(0.0, 0.08, size=2))
        cx, cy = prev[0] + prev[2] / 2 + shift[0], prev[1] + prev[3] / 2 + shift[1]
        w, h = max(prev[2] * scale[0], 4.0), max(prev[3] * scale[1], 4.0)
        return [cx - w / 2, cy - h / 2, w, h]

    def sample(self, batch: int):
        from spikedeploy.models.spiketrack import normalize_images
        from spikedeploy.tracking.tracker import SEARCH_FACTOR, TEMPLATE_FACTOR, crop_with_context

        rng, S, T = self.rng, self.size, self.templates
        z_crops, x_crops, targets = [], [], []
        for _ in range(batch):
            seq = self.pool[int(rng.integers(len(self.pool)))]
            n = len(seq)
            i = int(rng.integers(0, n - 1))
            j = int(rng.integers(i + 1, min(n, i + 1 + self.max_gap)))
            idx = [i] + sorted(int(v) for v in rng.integers(i, j + 1, size=T - 1))
            for t in idx:
                crop, _ = crop_with_context(seq.frames[t], seq.boxes[t], TEMPLATE_FACTOR, S)
                z_crops.append(crop)
            prev = self._prev_box(seq.boxes, j)
            crop, _ = crop_with_context(seq.frames[j], prev, SEARCH_FACTOR, S)
            x_crops.append(crop)
            targets.append(_crop_targets(seq.boxes[j], prev, S)[0])
        z = normalize_images(np.stack(z_crops)).reshape(batch, T, 3, S, S).transpose(0, 1)
        x = normalize_images(np.stack(x_crops)).unsqueeze(0)
        return z.contiguous(), x, torch.tensor(np.stack(targets), dtype=torch.float32)


# ---------------------------------------------------------------------------------------------
# losses
# ---------------------------------------------------------------------------------------------


def gaussian_score_target(boxes: torch.Tensor, feat: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Score-map targets ``[B, 1, F, F]`` for normalized boxes ``(cx, cy, w, h)`` ``[B, 4]``: a
    Gaussian (sigma = max(0.5, sqrt(w h) F / 4) cells) centred on the ground-truth cell
    ``floor(c F)`` (clamped into the map), peak exactly 1 there. Also returns the cell indices
    ``[B, 2]`` (x, y)."""
    cell = torch.clamp(torch.floor(boxes[:, :2] * feat), 0, feat - 1).long()
    sigma = torch.clamp(torch.sqrt(torch.clamp(boxes[:, 2] * boxes[:, 3], min=0)) * feat / 4, min=0.5)
    g = torch.arange(feat, dtype=torch.float32)
    dx = (g[None, :] - cell[:, :1].float()) ** 2  # [B, F]
    dy = (g[None, :] - cell[:, 1:].float()) ** 2
    s2 = (2 * sigma ** 2)[:, None, None]
    heat = torch.exp(-(dy[:, :, None] + dx[:, None, :]) / s2)
    return heat.unsqueeze(1), cell


def focal_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """CenterNet/OSTrack focal loss on probabilities ``pred`` (clamped to [1e-4, 1 - 1e-4]) against
    a Gaussian ``target`` with peaks of exactly 1: ``-(sum over peaks (1-p)^2 log p + sum
    elsewhere (1-t)^4 p^2 log(1-p)) / number of peaks``."""
    pos = target.eq(1).float()
    neg = 1.0 - pos
    pos_loss = torch.log(pred) * (1 - pred) ** 2 * pos
    neg_loss = torch.log(1 - pred) * pred ** 2 * (1 - target) ** 4 * neg
    num_pos = pos.sum().clamp_min(1.0)
    return -(pos_loss.sum() + neg_loss.sum()) / num_pos


def _xyxy(b: torch.Tensor) -> torch.Tensor:
    return torch.stack([b[:, 0] - b[:, 2] / 2, b[:, 1] - b[:, 3] / 2, b[:, 0] + b[:, 2] / 2, b[:, 1] + b[:, 3] / 2], 1)


def giou(a: torch.Tensor, b: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(giou, iou)`` per row of two ``[B, 4]`` box tensors ``(cx, cy, w, h)``."""
    a, b = _xyxy(a), _xyxy(b)
    area_a = (a[:, 2] - a[:, 0]).clamp_min(0) * (a[:, 3] - a[:, 1]).clamp_min(0)
    area_b = (b[:, 2] - b[:, 0]).clamp_min(0) * (b[:, 3] - b[:, 1]).clamp_min(0)
    lt = torch.maximum(a[:, :2], b[:, :2])
    rb = torch.minimum(a[:, 2:], b[:, 2:])
    inter = (rb - lt).clamp_min(0).prod(1)
    union = area_a + area_b - inter
    iou = inter / union.clamp_min(1e-7)
    lt_c = torch.minimum(a[:, :2], b[:, :2])
    rb_c = torch.maximum(a[:, 2:], b[:, 2:])
    hull = (rb_c - lt_c).clamp_min(0).prod(1)
    return iou - (hull - union) / hull.clamp_min(1e-7), iou


def tracking_loss(head, boxes: torch.Tensor, weights=(1.0, 5.0, 2.0)) -> Dict[str, torch.Tensor]:
    """Center-head loss for raw head outputs ``head`` (:class:`HeadOutputs`, batch B) and the
    normalized ground-truth boxes ``[B, 4]``: focal on the score map, L1 and GIoU on the box
    decoded at the ground-truth cell (offset and size maps there). Returns a dict with ``loss``
    (weighted sum), ``focal``, ``l1``, ``giou`` and ``iou`` (mean, no gradient use)."""
    from spikedeploy.models.spiketrack import head_maps

    score, size, offset = head_maps(head)  # [B, 1, F, F], [B, 2, F, F], [B, 2, F, F]
    feat = score.shape[-1]
    heat, cell = gaussian_score_target(boxes, feat)
    l_focal = focal_loss(score, heat)
    idx = (cell[:, 1] * feat + cell[:, 0]).view(-1, 1, 1).expand(-1, 2, 1)
    sz = size.flatten(2).gather(2, idx).squeeze(-1)
    off = offset.flatten(2).gather(2, idx).squeeze(-1)
    pred = torch.cat([(cell.float() + off) / feat, sz], dim=1)
    l1 = (pred - boxes).abs().mean()
    g, iou = giou(pred, boxes)
    l_giou = (1 - g).mean()
    wf, wl, wg = weights
    return {"loss": wf * l_focal + wl * l1 + wg * l_giou, "focal": l_focal, "l1": l1, "giou": l_giou,
            "iou": iou.mean().detach()}


# ---------------------------------------------------------------------------------------------
# the training loop
# ---------------------------------------------------------------------------------------------


def _lr_at(step: int, cfg: TrainConfig, elapsed: float = 0.0) -> float:
    """Linear warm-up, then cosine decay to 2 % of ``lr``; the decay follows the larger of the step
    progress and, with a time limit, the time progress (so a run cut by its time limit still ends
    annealed)."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    p = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    if cfg.time_limit_s:
        p = max(p, elapsed / cfg.time_limit_s)
    return cfg.lr * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * min(p, 1.0))))


def _plot(history: List[Dict[str, float]], path: Path, title: str) -> Path:
    from matplotlib.figure import Figure

    from spikedeploy.fsutil import atomic_write_bytes
    from spikedeploy.htmlreport import figure_png

    steps = [r["step"] for r in history]
    fig = Figure(figsize=(11, 4))
    axes = fig.subplots(1, 2)
    for key in ("loss", "focal", "l1", "giou"):
        axes[0].plot(steps, [r[key] for r in history], label=key)
    axes[0].set_yscale("log")
    axes[0].set_xlabel("step")
    axes[0].set_title("training loss (per logged step)")
    axes[0].legend()
    axes[1].plot(steps, [r["iou"] for r in history], label="IoU at the ground-truth cell")
    axes[1].set_xlabel("step")
    axes[1].set_ylim(0, 1)
    axes[1].legend()
    fig.suptitle(title)
    fig.tight_layout()
    atomic_write_bytes(path, figure_png(fig, dpi=100))
    return path


def train_tracker(config: Optional[TrainConfig] = None, output_dir=None, *, progress: bool = False,
                  log: Optional[Callable[[str], None]] = None) -> TrainResult:
    """Train ``config.variant`` on synthetic ``"train"`` sequences (see the module docstring).

    Writes, when ``output_dir`` is given: ``<variant>.pth`` (``{"net": state_dict}``, official
    layout; also every ``save_every`` steps), ``<variant>_loss.csv`` (per logged step: step,
    seconds, lr, loss, focal, l1, giou, iou; each value the mean over the steps since the previous
    row), ``<variant>_loss.png`` and ``<variant>_train.json`` (config, steps, time). Deterministic
    for a given config and thread count. Returns a :class:`TrainResult`."""
    from spikedeploy.models.spiketrack import spiketrack

    cfg = (config or TrainConfig()).validate()
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    say = log or (lambda s: None)
    model = spiketrack(cfg.variant)
    prepare_for_training(model)
    model.eval()
    sampler = PairSampler(size=model.config.resolution, templates=model.config.templates, seed=cfg.seed,
                          pool_sequences=cfg.pool_sequences, sequence_frames=cfg.sequence_frames,
                          frame_size=cfg.frame_size, max_gap=cfg.max_gap, wide_jitter_p=cfg.wide_jitter_p,
                          difficulty_min=cfg.difficulty_min)
    if cfg.init_weights:
        from spikedeploy.checkpoint import load_checkpoint

        sd = load_checkpoint(cfg.init_weights, key="net")
        own = model.state_dict()
        shared = {k: v for k, v in sd.items() if k in own and tuple(own[k].shape) == tuple(v.shape)}
        if not shared:
            raise ConfigError(f"train: {cfg.init_weights}: no weights fit {model.config.name}")
        model.load_state_dict(shared, strict=False)
        # extra per-template convolutions start as copies of template 0's
        for k in own:
            if k not in shared and ".seg_responder_" in k:
                parts = k.split(".")
                i = parts.index("seg_responder_dw" if "seg_responder_dw" in parts else "seg_responder_pw")
                src = ".".join(parts[:i + 1] + ["0"] + parts[i + 2:])
                if src in shared:
                    own[k].copy_(shared[src])
        # template embeddings never used at T = 1 (all zero) start as copies of template 0's
        with torch.no_grad():
            for name, m in model.named_modules():
                embeds = getattr(m, "t_pos_embeds", None)
                if isinstance(embeds, nn.ParameterList):
                    for e in list(embeds)[1:]:
                        if not e.any():
                            e.copy_(embeds[0])
        say(f"initialized {len(shared)} of {len(own)} tensors from {cfg.init_weights}")
    else:
        z, x, _ = sampler.sample(cfg.calibration_batch)
        n = calibrate_batchnorm(model, lambda: model.search_branch(x, model.template_branch(z)))
        init_head_biases(model)
        say(f"calibrated {n} BatchNorms on a batch of {z.shape[1]}")
    if cfg.batchnorm == "batch":
        use_batch_statistics(model)
        model.train()  # BatchNorms normalize with batch statistics while training
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.dim() <= 1 or "pos_embed" in name else decay).append(p)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr)
    out = Path(output_dir) if output_dir is not None else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    stem = model.config.variant
    history: List[Dict[str, float]] = []
    acc: Dict[str, float] = {}
    acc_n = 0
    t0 = time.perf_counter()
    step = 0
    from tqdm.auto import tqdm

    bar = tqdm(total=cfg.steps, desc="train", unit="step", disable=not progress)
    files: Dict[str, str] = {}

    def finalize_batchnorm():
        if cfg.batchnorm == "batch":
            recompute_batchnorm_statistics(model, (
                (lambda z=z, x=x: model.search_branch(x, model.template_branch(z)))
                for z, x, _ in (sampler.sample(cfg.batch_size) for _ in range(cfg.bn_recompute_batches))))
            model.train()

    def write_outputs(final: bool):
        if out is None:
            return
        finalize_batchnorm()
        meta = {"variant": stem, "steps": step, "seconds": round(time.perf_counter() - t0, 1), "final": final}
        files["weights"] = str(save_tracker_weights(model, out / f"{stem}.pth", meta=meta))
        files.update(write_run_records(out, stem, history, meta, cfg, _plot,
                                       f"{model.config.name}: {step} steps, batch {cfg.batch_size}"))

    try:
        while step < cfg.steps:
            if cfg.time_limit_s is not None and time.perf_counter() - t0 > cfg.time_limit_s:
                say(f"time limit reached after {step} steps")
                break
            lr = _lr_at(step, cfg, time.perf_counter() - t0)
            for g in opt.param_groups:
                g["lr"] = lr
            z, x, boxes = sampler.sample(cfg.batch_size)
            head = model.search_branch(x, model.template_branch(z))
            losses = tracking_loss(head, boxes, cfg.loss_weights)
            opt.zero_grad(set_to_none=True)
            losses["loss"].backward()
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            step += 1
            for k, v in losses.items():
                acc[k] = acc.get(k, 0.0) + float(v.detach())
            acc_n += 1
            bar.update(1)
            if step % cfg.log_every == 0 or step == cfg.steps:
                row = {"step": step, "seconds": round(time.perf_counter() - t0, 2), "lr": lr}
                row.update({k: v / acc_n for k, v in acc.items()})
                history.append(row)
                acc, acc_n = {}, 0
                bar.set_postfix(loss=f"{row['loss']:.3f}", iou=f"{row['iou']:.3f}", refresh=False)
                say(f"step {step} {row['seconds']:.0f}s lr {lr:.2e} loss {row['loss']:.4f} focal {row['focal']:.4f} "
                    f"l1 {row['l1']:.4f} giou {row['giou']:.4f} iou {row['iou']:.3f}")
            if step % cfg.refresh_every == 0 and cfg.refresh_count:
                sampler.refresh(cfg.refresh_count)
            if step % cfg.save_every == 0:
                write_outputs(final=False)
    finally:
        bar.close()
    if acc_n:
        row = {"step": step, "seconds": round(time.perf_counter() - t0, 2), "lr": _lr_at(step - 1, cfg)}
        row.update({k: v / acc_n for k, v in acc.items()})
        history.append(row)
    if out is None:
        finalize_batchnorm()
    write_outputs(final=True)
    model.eval()
    seconds = time.perf_counter() - t0
    # hand back a clean model: fresh module (buffers as in the official layout), strictly loaded
    final = spiketrack(cfg.variant)
    from spikedeploy.models.spiketrack import load_spiketrack_state_dict

    load_spiketrack_state_dict(final, export_state_dict(model), source="trained weights")
    return TrainResult(model=final.eval(), history=history, files=files, steps=step, seconds=seconds)


# ---------------------------------------------------------------------------------------------
# command line (examples/train_tracker.py; ready to be wired as ``spikedeploy train``)
# ---------------------------------------------------------------------------------------------


def add_train_arguments(parser) -> None:
    """Add the options of ``train`` (see :func:`run_train`) to an ``argparse`` parser."""
    d = TrainConfig()
    parser.add_argument("--model", default=d.variant,
                        help="SpikeTrack variant to train (default: %(default)s; the tiny128 variants fit a CPU)")
    parser.add_argument("-o", "--output", required=True, help="output folder (weights, loss CSV/PNG, JSON)")
    parser.add_argument("--steps", type=int, default=d.steps, help="optimizer steps (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=d.batch_size, help="pairs per step (default: %(default)s)")
    parser.add_argument("--lr", type=float, default=d.lr, help="peak AdamW learning rate (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=d.seed, help="seed of weights and data (default: %(default)s)")
    parser.add_argument("--difficulty-min", type=float, default=d.difficulty_min,
                        help="training sequences get a difficulty drawn from [this, 1] (held-out evaluation: always 1; "
                             "default: %(default)s)")
    parser.add_argument("--wide-jitter", type=float, default=d.wide_jitter_p,
                        help="share of search crops placed far from the target, 0..1 (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=d.threads, help="torch threads (default: %(default)s)")
    parser.add_argument("--time-limit", type=float, default=None, metavar="SECONDS",
                        help="stop after this many seconds even if --steps are not done")
    parser.add_argument("--init-weights", default=None, metavar="CHECKPOINT",
                        help="start from these weights ({'net': ...}), e.g. the T=1 weights for a T=3 fine-tune")
    parser.add_argument("--eval-sequences", type=int, default=12,
                        help="held-out synthetic sequences to evaluate on after training (0: none; default: %(default)s)")
    parser.add_argument("--eval-frames", type=int, default=60, help="frames per evaluation sequence (default: %(default)s)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--overwrite", action="store_true",
                        help="write into an existing output folder that holds files spikedeploy did not write (files "
                             "of the same names are replaced, others kept)")


def run_train(args, log: Callable[[str], None] = print) -> Dict[str, object]:
    """Run ``train`` with parsed ``args`` (:func:`add_train_arguments`): train, then evaluate
    the integer tracker on held-out sequences (OTB success AUC, precision at 20 px, the static
    baseline), write ``<variant>_eval.json`` and ``<variant>_eval.png`` next to the weights.
    Raises :class:`~spikedeploy.errors.ConfigError` for bad options. Returns a summary dict."""
    from spikedeploy.models.spiketrack import spiketrack

    with torch.device("meta"):
        spiketrack(args.model)  # an unknown variant name raises ConfigError before any work
    for name in ("eval_sequences", "eval_frames"):
        v = getattr(args, name)
        if v < (0 if name == "eval_sequences" else 2):
            raise ConfigError(f"train: --{name.replace('_', '-')} must be >= {0 if name == 'eval_sequences' else 2}, got {v}")
    if args.init_weights is not None and not Path(args.init_weights).is_file():
        raise ConfigError(f"train: --init-weights {args.init_weights!r} is not a file")
    from spikedeploy.fsutil import check_output_dir, write_marker

    out = Path(args.output)
    check_output_dir(out, overwrite=getattr(args, "overwrite", False), inputs=(args.init_weights,))
    cfg = TrainConfig(variant=args.model, steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                      threads=args.threads, time_limit_s=args.time_limit, init_weights=args.init_weights,
                      difficulty_min=args.difficulty_min, wide_jitter_p=args.wide_jitter)
    cfg.validate()
    result = train_tracker(cfg, out, progress=not args.no_progress, log=log)
    summary: Dict[str, object] = {"steps": result.steps, "seconds": round(result.seconds, 1), "files": dict(result.files)}
    if args.eval_sequences:
        from spikedeploy.tracking.evaluation import heldout_evaluation, write_heldout_evaluation

        ev = heldout_evaluation(result.model, args.eval_sequences, args.eval_frames, progress=not args.no_progress,
                                weights=f"{result.model.config.variant}.pth (float32, as trained)")
        summary["files"].update({f"eval_{k}": v for k, v in
                                 write_heldout_evaluation(ev, out, result.model.config.variant).items()})
        summary["eval"] = {k: ev[k] for k in ("sequences", "frames_per_sequence", "frames_scored", "auc",
                                              "precision20", "mean_iou", "static_auc", "static_precision20")}
        log(f"held-out: AUC {ev['auc']:.3f}, precision@20 {ev['precision20']:.3f} over {ev['frames_scored']} frames "
            f"(static box: AUC {ev['static_auc']:.3f}, precision@20 {ev['static_precision20']:.3f})")
    written = {os.path.relpath(str(f), str(out)) for f in summary["files"].values()
               if isinstance(f, str) and Path(f).is_file()}
    from spikedeploy.fsutil import read_marker

    write_marker(out, written | (read_marker(out) or set()), command="train")
    return summary


def bundle_weights(src, dst, *, dtype: torch.dtype = torch.float32, meta: Optional[dict] = None) -> Path:
    """Copy the trained weights ``src`` (``{"net": ...}``) to ``dst`` for shipping: floating
    tensors stored as ``dtype`` (float16 halves the size; :func:`spikedeploy.models.spiketrack.
    bundled_model` loads them back as float32, and every reported number is measured with the
    weights as stored), integer buffers as int64, official key order, loaded strictly on the way
    (a mismatching file raises). Returns ``dst``."""
    from spikedeploy.checkpoint import load_checkpoint, save_checkpoint
    from spikedeploy.models.spiketrack import identify_variant, load_spiketrack_state_dict, spiketrack

    sd = load_checkpoint(src, key="net")
    variant = identify_variant(sd)
    if variant is None:
        raise ConfigError(f"bundle_weights: {src} matches no SpikeTrack variant")
    model = spiketrack(variant)
    out = {k: (v.to(dtype) if v.is_floating_point() else v.to(torch.int64)).contiguous()
           for k, v in ((k, sd[k]) for k in model.state_dict())}
    load_spiketrack_state_dict(model, out, source=str(dst))
    payload = {"net": out}
    if meta is not None:
        payload["meta"] = meta
    save_checkpoint(payload, dst)
    return Path(dst)
