"""Training the tiny SpikeVideoFormer on generated motion clips (issue 17 step 5).

The network is trained *as it is deployed*: binary LIF neurons with soft reset everywhere (their
surrogate gradient, :mod:`spikedeploy.neurons`), the SDHA neurons with the 1/(2d) scale folded
into the threshold (``FoldedScaleLIF``, the unfolded neuron's surrogate), frames as time steps.
Nothing in the forward pass differs between training and deployment except BatchNorm in its
batch-statistics phase (below); the bundled weights are the trained ones, and the toolchain folds
the eval-mode BatchNorms when it lowers the graph.

Data (:mod:`spikedeploy.video.clips`): a pool of ``pool_clips`` generated ``train`` clips (objects
cut from the 10 training photographs over backgrounds from them), ``refresh_count`` of the oldest
replaced by new clips every step (clip indices keep counting up, so no clip repeats). Each drawn
clip is augmented by label-consistent symmetries, each with probability 1/2:

* horizontal mirror (left <-> right), vertical mirror (up <-> down);
* time reversal (left <-> right, up <-> down; rotate and zoom stay rotate and zoom: both directions
  of turn and zoom are in the class).

Loss: cross-entropy of :func:`~spikedeploy.models.spikevideoformer.clip_logits` (the mean of the
per-frame logits over the clip, the quantity ``classify`` takes the argmax of) against the label.

Optimizer: AdamW (no weight decay on biases, BatchNorm and other 1-D parameters), linear warm-up
then cosine decay to 2 % of ``lr`` over exactly ``steps`` steps, gradient clipping. The run is a
fixed number of steps (not a wall-clock limit), so it is reproducible for a given config and
thread count.

BatchNorm (as the RGB/event recipes): statistics initialized from data
(:func:`~spikedeploy.models.spikevideoformer.init_spikevideoformer_for_spiking` on a calibration
batch, BatchNorm weights ``init_gain`` U(0.6, 1.4): every neuron fires; with the tests' gain 2
the gradient at the stem was ~6000x the head's and the firing rates 0.3-0.4, with gain 1 they are
within 5x and the rates 0.15-0.2), batch statistics while training, and at ``bn_freeze_fraction`` of the
run the running statistics are recomputed over ``bn_recompute_batches`` pool batches ("precise
BatchNorm") and frozen: the rest of the run trains the network exactly as deployed (eval-mode
BatchNorm).

Held-out evaluation (:func:`heldout_evaluation`): clips ``0 .. n-1`` of the ``test`` split (seed
``eval_seed``; photographs never used in training; labels ``i % 6``, so 20 per class for
n = 120), top-1 accuracy with chance (1/6) beside it, the confusion matrix, per-clip predictions.

Entry points: :func:`train_video_model`, :func:`run_train` (``spikedeploy train --model
spikevideoformer-tiny``), :func:`bundle_video_weights` (``scripts/bundle_video_model.py``).
"""

from __future__ import annotations

import json
import math
import numbers
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
import torch
from torch import nn

from spikedeploy.errors import ConfigError
from spikedeploy.fsutil import atomic_write_bytes, atomic_write_text
from spikedeploy.tracking.training import batchnorm_modules, write_run_records
from spikedeploy.video.clips import MOTIONS, clip_tensor, generate_clip

__all__ = [
    "VIDEO_VARIANT",
    "VideoTrainConfig",
    "VideoTrainResult",
    "ClipPool",
    "augment_clip",
    "clip_loss",
    "video_state_dict",
    "save_video_weights",
    "load_video_model",
    "default_video_checkpoint",
    "bundled_video_model",
    "train_video_model",
    "heldout_evaluation",
    "write_evaluation",
    "config_from_json",
    "add_train_arguments",
    "run_train",
    "bundle_video_weights",
]

VIDEO_VARIANT = "spikevideoformer-tiny"

#: label permutations of the augmentations (MOTIONS = left, right, up, down, rotate, zoom)
_HFLIP = {"left": "right", "right": "left"}
_VFLIP = {"up": "down", "down": "up"}
_REVERSE = {"left": "right", "right": "left", "up": "down", "down": "up"}


def _perm(swap: Dict[str, str]) -> Tuple[int, ...]:
    return tuple(MOTIONS.index(swap.get(m, m)) for m in MOTIONS)


HFLIP_LABELS, VFLIP_LABELS, REVERSE_LABELS = _perm(_HFLIP), _perm(_VFLIP), _perm(_REVERSE)


@dataclass
class VideoTrainConfig:
    """Hyper-parameters of :func:`train_video_model` (all recorded in ``_train.json``).

    ``steps`` optimizer steps of ``batch_size`` clips of ``frames`` frames; ``lr`` the peak AdamW
    rate after ``warmup_steps``; ``pool_clips`` generated clips in the pool, ``refresh_count`` of
    them replaced each step; ``augment``: the mirror/time-reversal symmetries (module docstring);
    ``bn_freeze_fraction``: share of the steps after which the BatchNorm statistics are recomputed
    and frozen (1: only at the end); ``eval_clips`` held-out test clips (seed ``eval_seed``).
    """

    variant: str = VIDEO_VARIANT
    steps: int = 2000
    batch_size: int = 16
    frames: int = 8
    lr: float = 2e-3
    weight_decay: float = 0.01
    warmup_steps: int = 100
    grad_clip: float = 2.0
    label_smoothing: float = 0.0
    seed: int = 0
    threads: int = 1
    pool_clips: int = 384
    refresh_count: int = 2
    augment: bool = True
    calibration_batch: int = 32
    bn_freeze_fraction: float = 0.9
    bn_recompute_batches: int = 8
    log_every: int = 10
    save_every: int = 250
    eval_clips: int = 120
    eval_seed: int = 0
    init_gain: float = 1.0

    def validate(self) -> "VideoTrainConfig":
        if self.variant != VIDEO_VARIANT:
            raise ConfigError(f"train: the video recipe trains {VIDEO_VARIANT} only, got {self.variant!r}")
        ints = dict(steps=1, batch_size=1, frames=1, warmup_steps=0, seed=0, threads=1, pool_clips=1,
                    refresh_count=0, calibration_batch=1, bn_recompute_batches=1, log_every=1, save_every=1,
                    eval_clips=0, eval_seed=0)
        for name, lo in ints.items():
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < lo:
                raise ConfigError(f"train: {name} must be an integer >= {lo}, got {v!r}")
        for name in ("lr", "weight_decay", "grad_clip", "label_smoothing", "bn_freeze_fraction", "init_gain"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v) or v < 0:
                raise ConfigError(f"train: {name} must be a finite number >= 0, got {v!r}")
        if self.lr <= 0 or self.init_gain <= 0:
            raise ConfigError(f"train: lr and init_gain must be > 0, got {self.lr!r} and {self.init_gain!r}")
        if self.label_smoothing >= 1 or self.bn_freeze_fraction > 1:
            raise ConfigError("train: label_smoothing must be below 1 and bn_freeze_fraction at most 1, got "
                              f"{self.label_smoothing!r} and {self.bn_freeze_fraction!r}")
        if not isinstance(self.augment, bool):
            raise ConfigError(f"train: augment must be true or false, got {self.augment!r}")
        if self.refresh_count > self.pool_clips:
            raise ConfigError(f"train: refresh_count ({self.refresh_count}) cannot exceed pool_clips ({self.pool_clips})")
        return self


def config_from_json(record: Dict[str, object]) -> VideoTrainConfig:
    """The :class:`VideoTrainConfig` recorded in a ``_train.json`` (its ``config`` entry, or the
    dict itself); unknown keys raise :class:`ConfigError`."""
    cfg = dict(record.get("config", record))
    known = {f for f in VideoTrainConfig.__dataclass_fields__}
    unknown = set(cfg) - known
    if unknown:
        raise ConfigError(f"train record: unknown config key(s) {', '.join(sorted(unknown))}")
    return VideoTrainConfig(**cfg).validate()


@dataclass
class VideoTrainResult:
    """What :func:`train_video_model` produced: the trained network (eval mode, a fresh
    :class:`~spikedeploy.models.spikevideoformer.SpikeVideoFormerNet` loaded strictly), the log
    rows, the files written, steps and seconds."""

    model: nn.Module
    history: List[Dict[str, float]]
    files: Dict[str, str] = field(default_factory=dict)
    steps: int = 0
    seconds: float = 0.0
    bn_frozen_at_step: Optional[int] = None


# ---------------------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------------------


def augment_clip(frames: np.ndarray, label: int, *, hflip: bool = False, vflip: bool = False,
                 reverse: bool = False) -> Tuple[np.ndarray, int]:
    """``frames [T, H, W, 3]`` mirrored left-right (``hflip``), top-bottom (``vflip``) and/or
    played backwards (``reverse``), with the label those symmetries map ``label`` to."""
    if hflip:
        frames, label = frames[:, :, ::-1], HFLIP_LABELS[label]
    if vflip:
        frames, label = frames[:, ::-1], VFLIP_LABELS[label]
    if reverse:
        frames, label = frames[::-1], REVERSE_LABELS[label]
    return np.ascontiguousarray(frames), int(label)


class ClipPool:
    """A pool of ``size`` generated ``split`` clips (clip indices ``0 .. size-1`` of seed
    ``seed``); :meth:`refresh` replaces the ``count`` oldest by the next indices. :meth:`sample`
    draws ``batch`` clips (without replacement) with its own generator (seed ``seed``), augmented
    when ``augment``: returns ``(x [T, B, 3, H, W], labels [B])``, ``x`` in the input ``encoding``
    (:func:`~spikedeploy.video.clips.clip_tensor`). Deterministic in its arguments
    and the call sequence."""

    def __init__(self, size: int, *, split: str = "train", seed: int = 0, frames: int = 8, resolution: int = 64,
                 augment: bool = True, encoding: str = "rgb"):
        self.split, self.seed, self.frames, self.resolution, self.augment = split, seed, frames, resolution, augment
        self.encoding = encoding
        self.rng = np.random.default_rng(np.random.SeedSequence([7331, seed]))
        self.next_index = 0
        self.clips = [self._new() for _ in range(size)]

    def _new(self):
        c = generate_clip(self.next_index, self.split, seed=self.seed, frames=self.frames, size=self.resolution)
        self.next_index += 1
        return c

    def refresh(self, count: int) -> None:
        for _ in range(count):
            self.clips.pop(0)
            self.clips.append(self._new())

    def sample(self, batch: int):
        idx = self.rng.choice(len(self.clips), size=min(batch, len(self.clips)), replace=False)
        arrays, labels = [], []
        for i in idx:
            c = self.clips[int(i)]
            frames, label = c.frames, c.label
            if self.augment:
                h, v, r = (bool(b) for b in self.rng.integers(0, 2, size=3))
                frames, label = augment_clip(frames, label, hflip=h, vflip=v, reverse=r)
            arrays.append(frames)
            labels.append(label)
        return clip_tensor(arrays, self.encoding), torch.tensor(labels, dtype=torch.long)


def clip_loss(logits: torch.Tensor, labels: torch.Tensor, label_smoothing: float = 0.0) -> Dict[str, torch.Tensor]:
    """Cross-entropy of the clip logits (mean of ``logits [T, B, K]`` over T) against ``labels
    [B]``, and the batch's top-1 accuracy."""
    from spikedeploy.models.spikevideoformer import clip_logits

    scores = clip_logits(logits)
    loss = nn.functional.cross_entropy(scores, labels, label_smoothing=label_smoothing)
    acc = (scores.argmax(dim=1) == labels).float().mean()
    return {"loss": loss, "accuracy": acc.detach()}


# ---------------------------------------------------------------------------------------------
# weights
# ---------------------------------------------------------------------------------------------


def video_state_dict(net: nn.Module) -> Dict[str, torch.Tensor]:
    """The trained weights as a :class:`~spikedeploy.models.spikevideoformer.SpikeVideoFormer`
    state dict (no wrapper prefix; floating tensors float32, integer buffers as they are; the key
    order of a freshly built model)."""
    from spikedeploy.models.spikevideoformer import SpikeVideoFormer

    inner = getattr(net, "model", net)
    fresh = SpikeVideoFormer(inner.config).state_dict()
    sd = inner.state_dict()
    missing = [k for k in fresh if k not in sd]
    if missing:
        raise RuntimeError(f"video_state_dict: layout differs from {inner.config.variant}: missing {missing[:5]}")
    return {k: (sd[k].detach().to(torch.float32) if sd[k].is_floating_point() else sd[k].detach()).clone().contiguous()
            for k in fresh}


def save_video_weights(net: nn.Module, path, *, meta: Optional[dict] = None) -> Path:
    """Save ``{"net": video_state_dict(net)}`` (+ ``"meta"``) atomically to ``path`` (loadable with
    ``torch.load(path, weights_only=True)`` and ``build_model(..., checkpoint=path)``)."""
    from spikedeploy.checkpoint import save_checkpoint

    payload = {"net": video_state_dict(net)}
    if meta is not None:
        payload["meta"] = meta
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(payload, path)
    return path


def load_video_model(path, variant: str = VIDEO_VARIANT) -> nn.Module:
    """The :class:`~spikedeploy.models.spikevideoformer.SpikeVideoFormerNet` ``variant`` with the
    weights of checkpoint ``path`` (``{"net": ...}`` or a bare state dict; loaded strictly, a
    mismatch is an :class:`~spikedeploy.errors.InputError` naming the file), in eval mode."""
    from spikedeploy.checkpoint import load_checkpoint
    from spikedeploy.models.spikevideoformer import spikevideoformer_net

    sd = load_checkpoint(path, key="net")
    net = spikevideoformer_net(variant)
    net.load_weights(sd, source=str(path))
    return net.eval()


def default_video_checkpoint() -> Path:
    """The bundled trained weights, ``spikedeploy/data/spikevideoformer-tiny.pth`` (package data)."""
    from importlib import resources

    from spikedeploy.errors import CheckpointError

    name = f"{VIDEO_VARIANT}.pth"
    path = resources.files("spikedeploy.data") / name
    if not path.is_file():
        raise CheckpointError(f"spikedeploy ships no trained video weights {name} (package data spikedeploy/data/)")
    return Path(str(path))


def bundled_video_model() -> nn.Module:
    """The bundled trained tiny SpikeVideoFormer (eval mode)."""
    return load_video_model(default_video_checkpoint())


# ---------------------------------------------------------------------------------------------
# held-out evaluation
# ---------------------------------------------------------------------------------------------


@torch.no_grad()
def heldout_evaluation(net: nn.Module, clips: int = 120, *, seed: int = 0, frames: int = 8, batch: int = 20,
                       first: int = 0, weights: str = "") -> Dict[str, object]:
    """Top-1 accuracy of ``net`` (eval mode) on the ``test`` clips ``first .. first + clips - 1``
    of seed ``seed`` (photographs never used in training; labels ``i % 6``, balanced). Returns a
    JSON-ready dict: ``top1``, ``chance`` (1/6), ``correct``, ``clips``, ``per_class`` accuracy,
    ``confusion`` (rows: true class, columns: predicted), ``predictions`` (per clip: index, label,
    predicted, clip logits rounded to 1e-4)."""
    from spikedeploy.models.spikevideoformer import clip_logits

    net.eval()
    res = net.config.resolution if hasattr(net, "config") else 64
    encoding = net.config.input_encoding if hasattr(net, "config") else "rgb"
    k = len(MOTIONS)
    confusion = np.zeros((k, k), dtype=np.int64)
    rows = []
    for start in range(first, first + clips, batch):
        chunk = [generate_clip(i, "test", seed=seed, frames=frames, size=res)
                 for i in range(start, min(first + clips, start + batch))]
        scores = clip_logits(net(clip_tensor(chunk, encoding)))
        pred = scores.argmax(dim=1)
        for c, p, s in zip(chunk, pred.tolist(), scores.tolist()):
            confusion[c.label, p] += 1
            rows.append(dict(index=c.index, label=c.label, predicted=int(p), logits=[round(v, 4) for v in s]))
    correct = int(np.trace(confusion))
    per_class = {m: (float(confusion[i, i] / confusion[i].sum()) if confusion[i].sum() else None)
                 for i, m in enumerate(MOTIONS)}
    return dict(split="test", seed=seed, frames=frames, clips=len(rows), first=first, classes=list(MOTIONS),
                top1=correct / max(1, len(rows)), chance=1.0 / k, correct=correct, per_class=per_class,
                confusion=confusion.tolist(), predictions=rows, weights=weights)


def _confusion_png(confusion, classes, title: str) -> bytes:
    from matplotlib.figure import Figure

    from spikedeploy.htmlreport import figure_png

    m = np.asarray(confusion)
    fig = Figure(figsize=(5.2, 4.6))
    ax = fig.subplots()
    im = ax.imshow(m, cmap="Blues")
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(m.shape[0]):
        for j in range(m.shape[1]):
            ax.text(j, i, str(m[i, j]), ha="center", va="center",
                    color="white" if m[i, j] > m.max() / 2 else "black", fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return figure_png(fig, dpi=100)


def write_evaluation(ev: Dict[str, object], out, stem: str = VIDEO_VARIANT) -> Dict[str, str]:
    """Write ``<stem>_eval.json`` and ``<stem>_eval.png`` (the confusion matrix) into ``out``
    atomically. Returns ``{"json": ..., "png": ...}``."""
    out = Path(out)
    j = atomic_write_text(out / f"{stem}_eval.json", json.dumps(ev, indent=1) + "\n")
    title = (f"{stem}: held-out top-1 {100 * ev['top1']:.1f} % on {ev['clips']} clips "
             f"(chance {100 * ev['chance']:.1f} %)")
    p = atomic_write_bytes(out / f"{stem}_eval.png", _confusion_png(ev["confusion"], ev["classes"], title))
    return {"json": str(j), "png": str(p)}


# ---------------------------------------------------------------------------------------------
# the training loop
# ---------------------------------------------------------------------------------------------


def _lr_at(step: int, cfg: VideoTrainConfig) -> float:
    """Linear warm-up over ``warmup_steps``, then cosine decay to 2 % of ``lr`` at ``steps``."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    p = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.lr * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * min(p, 1.0))))


def _plot(history: List[Dict[str, float]], path: Path, title: str) -> Path:
    from matplotlib.figure import Figure

    from spikedeploy.htmlreport import figure_png

    steps = [r["step"] for r in history]
    fig = Figure(figsize=(11, 4))
    a, b = fig.subplots(1, 2)
    a.plot(steps, [r["loss"] for r in history], label="cross-entropy (clip logits)")
    a.set_xlabel("step")
    a.set_title("training loss (mean over the steps since the previous row)")
    a.legend()
    b.plot(steps, [r["accuracy"] for r in history], label="training batch top-1")
    b.axhline(1.0 / len(MOTIONS), color="gray", ls="--", label="chance 1/6")
    b.set_ylim(0, 1)
    b.set_xlabel("step")
    b.legend()
    fig.suptitle(title)
    fig.tight_layout()
    atomic_write_bytes(path, figure_png(fig, dpi=100))
    return path


def train_video_model(config: Optional[VideoTrainConfig] = None, output_dir=None, *, progress: bool = False,
                      log: Optional[Callable[[str], None]] = None) -> VideoTrainResult:
    """Train the tiny SpikeVideoFormer (module docstring). With ``output_dir``: ``<variant>.pth``
    (``{"net": state_dict}``, also every ``save_every`` steps), ``<variant>_loss.csv`` (per logged
    row: step, seconds, lr, loss, accuracy, each the mean over the steps since the previous row),
    ``<variant>_loss.png`` and ``<variant>_train.json`` (config, steps, seconds, the step the
    BatchNorms froze). Returns a :class:`VideoTrainResult`."""
    from spikedeploy.models.spikevideoformer import init_spikevideoformer_for_spiking, spikevideoformer_net

    cfg = (config or VideoTrainConfig()).validate()
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    say = log or (lambda s: None)
    net = spikevideoformer_net(cfg.variant)
    model = net.model
    pool = ClipPool(cfg.pool_clips, seed=cfg.seed, frames=cfg.frames, resolution=model.config.resolution,
                    augment=cfg.augment, encoding=model.config.input_encoding)
    x_cal, _ = pool.sample(cfg.calibration_batch)
    init_spikevideoformer_for_spiking(model, seed=cfg.seed, example=x_cal, gain=cfg.init_gain)
    say(f"initialized {len(batchnorm_modules(model))} BatchNorms from a calibration batch of {x_cal.shape[1]} clips")
    decay, no_decay = [], []
    for _, p in model.named_parameters():
        (no_decay if p.dim() <= 1 else decay).append(p)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr)
    out = Path(output_dir) if output_dir is not None else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    stem = cfg.variant
    frozen = cfg.bn_freeze_fraction <= 0
    freeze_step: Optional[int] = 0 if frozen else None
    freeze_at = math.ceil(cfg.bn_freeze_fraction * cfg.steps)

    def set_modes():
        model.train()
        if frozen:
            for m in batchnorm_modules(model):
                m.eval()

    @torch.no_grad()
    def precise_bn():
        bns = batchnorm_modules(model)
        saved = [m.momentum for m in bns]
        for m in bns:
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the batches
        model.train()
        gen_state = pool.rng.bit_generator.state
        try:
            for _ in range(cfg.bn_recompute_batches):
                model(pool.sample(cfg.batch_size)[0])
        finally:
            pool.rng.bit_generator.state = gen_state  # the data stream does not depend on checkpoints
            for m, mom in zip(bns, saved):
                m.momentum = mom
        set_modes()

    history: List[Dict[str, float]] = []
    acc: Dict[str, float] = {}
    acc_n = 0
    files: Dict[str, str] = {}
    t0 = time.perf_counter()
    step = 0

    def write_outputs(final: bool):
        if out is None:
            return
        if not frozen:  # a checkpoint in the batch-statistics phase: a copy with precise statistics
            saved = {k: v.clone() for k, v in model.state_dict().items()}
            precise_bn()
        meta = {"variant": stem, "steps": step, "seconds": round(time.perf_counter() - t0, 1), "final": final,
                "bn_frozen_at_step": freeze_step}
        files["weights"] = str(save_video_weights(net, out / f"{stem}.pth", meta=meta))
        if not frozen:
            model.load_state_dict(saved)
            set_modes()
        files.update(write_run_records(out, stem, history, meta, cfg, _plot,
                                       f"{stem}: {step} steps, batch {cfg.batch_size} x {cfg.frames} frames",
                                       lineterminator="\n"))

    from tqdm.auto import tqdm

    bar = tqdm(total=cfg.steps, desc="train", unit="step", disable=not progress)
    set_modes()
    try:
        while step < cfg.steps:
            if not frozen and step >= freeze_at:
                precise_bn()
                frozen, freeze_step = True, step
                set_modes()
                say(f"step {step}: BatchNorm statistics recomputed over {cfg.bn_recompute_batches} batches and frozen")
            lr = _lr_at(step, cfg)
            for g in opt.param_groups:
                g["lr"] = lr
            x, labels = pool.sample(cfg.batch_size)
            losses = clip_loss(model(x), labels, cfg.label_smoothing)
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
                bar.set_postfix(loss=f"{row['loss']:.3f}", acc=f"{row['accuracy']:.2f}", refresh=False)
                say(f"step {step} {row['seconds']:.0f}s lr {lr:.2e} loss {row['loss']:.4f} "
                    f"batch top-1 {row['accuracy']:.3f}")
            if cfg.refresh_count:
                pool.refresh(cfg.refresh_count)
            if step % cfg.save_every == 0 and step < cfg.steps:
                write_outputs(final=False)
    finally:
        bar.close()
    if not frozen:
        precise_bn()
        frozen, freeze_step = True, step
    write_outputs(final=True)
    seconds = time.perf_counter() - t0
    final = spikevideoformer_net(cfg.variant)
    final.load_weights(video_state_dict(net), source="trained weights")
    return VideoTrainResult(model=final.eval(), history=history, files=files, steps=step, seconds=seconds,
                            bn_frozen_at_step=freeze_step)


# ---------------------------------------------------------------------------------------------
# command line: spikedeploy train --model spikevideoformer-tiny
# ---------------------------------------------------------------------------------------------

#: ``train`` options the video recipe reads: (dest, config field); None in ``args`` = the recipe's default
_VIDEO_OPTIONS = (("steps", "steps"), ("batch_size", "batch_size"), ("lr", "lr"))
#: ``train`` options of the tracker recipes the video recipe refuses when given
_TRACKER_ONLY = ("difficulty_min", "difficulty_max", "wide_jitter", "clip_frames", "init_weights", "time_limit")


def add_train_arguments(parser) -> None:
    """The options of ``spikedeploy train`` for every recipe: the tracker recipes'
    (:func:`spikedeploy.tracking.event_training.add_train_arguments`: ``--steps``, ``--batch-size``
    and ``--lr`` default to None, filled in by the chosen recipe) plus ``--eval-clips`` for
    ``spikevideoformer-tiny``."""
    from spikedeploy.tracking.event_training import add_train_arguments as add_tracker

    add_tracker(parser)
    d = VideoTrainConfig()
    for action in parser._actions:  # argparse has no public API to amend an option's help
        if action.dest == "model":
            action.help = (f"{action.help}; {VIDEO_VARIANT}: the video classifier, trained on generated motion "
                           f"clips ({d.steps} steps of {d.batch_size} clips, lr {d.lr:g}; the tracker-only options are "
                           "refused for it)")
    parser.add_argument("--eval-clips", type=int, default=None,
                        help=f"{VIDEO_VARIANT} only: held-out test clips to evaluate on after training (default: "
                             f"{d.eval_clips}, 20 per class)")


def run_train(args, log: Callable[[str], None] = print) -> Dict[str, object]:
    """``spikedeploy train --model spikevideoformer-tiny`` with parsed ``args`` (the ``train``
    parser; ``--steps``/``--batch-size``/``--lr`` left None take :class:`VideoTrainConfig`'s
    defaults; ``--eval-sequences`` is the number of held-out test clips, default 120): train, then
    the held-out evaluation, ``_eval.json``/``_eval.png`` next to the weights. Options of the
    tracker recipes (``--time-limit`` included: the video recipe is a fixed number of steps) are
    refused. Returns a summary dict."""
    from spikedeploy.fsutil import check_output_dir, read_marker, write_marker

    for dest in _TRACKER_ONLY:
        if getattr(args, dest, None) is not None:
            raise ConfigError(f"train: --{dest.replace('_', '-')} does not apply to {VIDEO_VARIANT} (a fixed number of "
                              "--steps on generated clips)")
    d = VideoTrainConfig()
    kw = {f: (getattr(d, f) if getattr(args, dest, None) is None else getattr(args, dest)) for dest, f in _VIDEO_OPTIONS}
    clips = getattr(args, "eval_clips", None)
    if clips is None:
        clips = d.eval_clips
    cfg = VideoTrainConfig(seed=args.seed, threads=args.threads, eval_clips=clips, **kw).validate()
    out = Path(args.output)
    check_output_dir(out, overwrite=getattr(args, "overwrite", False))
    progress = not getattr(args, "no_progress", False)
    result = train_video_model(cfg, out, progress=progress, log=log)
    summary: Dict[str, object] = {"steps": result.steps, "seconds": round(result.seconds, 1),
                                  "files": dict(result.files)}
    log(f"trained {result.steps} steps in {result.seconds:.0f} s")
    if cfg.eval_clips:
        t = time.perf_counter()
        ev = heldout_evaluation(result.model, cfg.eval_clips, seed=cfg.eval_seed, frames=cfg.frames,
                                weights=f"{VIDEO_VARIANT}.pth (float32, as trained)")
        ev["seconds"] = round(time.perf_counter() - t, 1)
        summary["files"].update({f"eval_{k}": v for k, v in write_evaluation(ev, out).items()})
        summary["eval"] = {k: ev[k] for k in ("clips", "top1", "chance", "correct", "per_class")}
        log(f"held-out: top-1 {100 * ev['top1']:.1f} % ({ev['correct']}/{ev['clips']} test clips from photographs "
            f"never seen in training; chance {100 * ev['chance']:.1f} %)")
    written = {os.path.relpath(str(f), str(out)) for f in summary["files"].values()
               if isinstance(f, str) and Path(f).is_file()}
    write_marker(out, written | (read_marker(out) or set()), command="train")
    return summary


def bundle_video_weights(src, dst, *, meta: Optional[dict] = None) -> Path:
    """Copy the trained weights ``src`` (``{"net": ...}``) to ``dst`` for shipping: float32, the
    key order of a fresh model, loaded strictly on the way (a mismatching file raises
    :class:`~spikedeploy.errors.InputError`). Returns ``dst``."""
    from spikedeploy.checkpoint import save_checkpoint

    net = load_video_model(src)
    payload = {"net": video_state_dict(net)}
    if meta is not None:
        payload["meta"] = meta
    save_checkpoint(payload, dst)
    return Path(dst)
