"""Training the event SpikeTrack (``spiketrack-event-tiny``) with MSST on generated event sequences.

The RGB recipe (:mod:`spikedeploy.tracking.training`) with event inputs and clips instead of
pairs; its pieces are reused, not copied: the label mapping (``_crop_targets``), the jitter of the
simulated previous state (``PairSampler._prev_box``), the losses (:func:`tracking_loss`: focal +
L1 + GIoU, weights 1, 5, 2 as the seed's lambda_L1 = 5, lambda_iou = 2), BatchNorm handling
(:func:`calibrate_batchnorm`, :func:`use_batch_statistics`, :func:`recompute_batchnorm_statistics`),
:func:`init_head_biases`, the learning-rate schedule (``_lr_at``) and the loss plot (``_plot``).

**Data.** A pool of ``"train"`` event sequences (:func:`spikedeploy.events.synthetic_event_sequence`:
the synthetic RGB sequences of :mod:`spikedeploy.tracking.synth` through the event simulator;
photographs disjoint from ``"heldout"``), each of difficulty ``difficulty_min + (difficulty_max -
difficulty_min) u`` with ``u`` a function of the sequence seed, refreshed as training goes
(``refresh_count`` new sequences every ``refresh_every`` steps), as the RGB pool. The camera pan
of :func:`~spikedeploy.tracking.synth.generate_sequence` grows with the difficulty (``0.8 * 24 px *
difficulty``) and floods the background with events, so the default range stops at 0.6 (module
:mod:`spikedeploy.tracking.event_evaluation` documents the measured target/background contrast).

**MSST clips** (:class:`EventClipSampler`), cut exactly as :class:`~spikedeploy.tracking.event_tracker.EventTracker`
cuts its crops (:func:`~spikedeploy.tracking.event_crops.event_crop`, then
:func:`~spikedeploy.tracking.event_tracker.grid_input`)::

    template frame i, first search frame j (i < j <= i + max_gap), T = clip_frames:
    template    = event_crop([t_i, t_{i+1}), box_i, EVENT_TEMPLATE_FACTOR, St)      (as initialize())
    search k    = event_crop([t_{k-1}, t_k), prev_k, EVENT_SEARCH_FACTOR, S),  k = j .. j+T-1
    prev_k      = box_{k-1} jittered (PairSampler._prev_box: N(0, 0.15) sqrt(wh) shift and
                  exp(N(0, 0.08)) scale, or with probability wide_jitter_p a wide U(-1.2, 1.2)
                  sqrt(wh) shift and exp(U(-0.35, 0.35)) scale per side)
    label k     = _crop_targets(box_k, prev_k, S)    (map_box_back of it gives box_k)

The wide share matters more than for RGB: with wide_jitter_p = 0.15 (a first run, 1000 steps)
the size head learned the prior (a target about 1/4 of the crop) instead of measuring the target,
and the tracked box grew by a few per cent a frame (crop and box scale together) until it lost
the target: held-out AUC 0.20, below the static box's 0.26. 0.5 (the RGB default) shows the
network targets of every scale in the crop.

The T search crops are consecutive time steps of one run (``model(template, search [T, B, ...])``):
the membranes carry from frame to frame as at inference, where the tracker keeps the state over
the whole sequence (a fresh state at the first search frame in both).

**Training** (:func:`train_event_tracker`): ``dilif_scope="batch"`` (the seed: D per batch while
training, per sample at inference), the DI-LIF gates ``gate_w``/``gate_b`` trained with the rest,
loss per frame (every frame of every clip is one row of :func:`tracking_loss`), AdamW with
warm-up and cosine decay, gradient clipping. BatchNorm: the statistics are first set from a
calibration clip (data-dependent initialization), then training normalizes with batch statistics
(``batchnorm="batch"``, as RGB). The template and the search crops pass through the same
BatchNorms but differ in event density (the template is the target's close-up), so batch
statistics per call are not what the deployed network sees: at ``bn_freeze_fraction`` of the run
the running statistics are recomputed over ``bn_recompute_batches`` clips ("precise BatchNorm",
template and search calls averaged) and frozen; the rest of the run trains the network as it will
be deployed (BatchNorms in eval mode, DI-LIF still batch-scoped). ``batchnorm="frozen"`` freezes
them from the start (calibrated statistics).

Outputs (``train_event_tracker(cfg, DIR)`` or ``spikedeploy train --model spiketrack-event-tiny
-o DIR``): ``spiketrack-event-tiny.pth`` (``{"net": state_dict, "meta": ...}``, float32),
``_loss.csv``, ``_loss.png``, ``_train.json``; ``run_train`` adds the held-out evaluation
(``_eval.json``, ``_eval.png``; :mod:`spikedeploy.tracking.event_evaluation`).

The bundled model: :func:`bundled_event_model` / :func:`bundled_event_tracker` (``track --events``
loads the same file through :func:`spikedeploy.tracking.event_run.load_event_tracker_model`).
"""

from __future__ import annotations

import math
import numbers
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
import torch
from torch import nn

from spikedeploy.errors import CheckpointError, ConfigError
from spikedeploy.tracking.event_crops import EVENT_SEARCH_FACTOR, EVENT_TEMPLATE_FACTOR, event_crop
from spikedeploy.tracking.training import (PairSampler, TrainConfig, TrainResult, _crop_targets, _lr_at, _plot,
                                           batchnorm_modules, calibrate_batchnorm, init_head_biases,
                                           recompute_batchnorm_statistics, tracking_loss, use_batch_statistics,
                                           write_run_records)

__all__ = [
    "EVENT_VARIANT",
    "EventTrainConfig",
    "ClipSpec",
    "ClipBatch",
    "EventClipSampler",
    "clip_loss",
    "calibrate_dilif_gates",
    "event_state_dict",
    "save_event_weights",
    "load_event_weights",
    "train_event_tracker",
    "run_event_train",
    "add_train_arguments",
    "run_train",
    "default_event_checkpoint",
    "bundled_event_model",
    "bundled_event_tracker",
]

#: the trainable (and bundled) event variant
EVENT_VARIANT = "spiketrack-event-tiny"

# the labels come from the RGB tracker's box mapping (_crop_targets), which crops at factor 4
if EVENT_SEARCH_FACTOR != 4.0:  # pragma: no cover - a guard for whoever changes the factor
    raise ImportError("event_training: _crop_targets assumes the search factor 4 of the RGB tracker")


@dataclass
class EventTrainConfig(TrainConfig):
    """Hyper-parameters of :func:`train_event_tracker` (the RGB :class:`TrainConfig` fields, with
    event defaults, plus the MSST clip). ``clip_frames``: search frames per clip (T, consecutive
    time steps, >= 1; the seed trains with 10); ``max_gap``: the first search frame is at most this
    many frames after the template frame; difficulties drawn from ``[difficulty_min,
    difficulty_max]``; ``bn_freeze_fraction``: with ``batchnorm="batch"``, the share of the run
    (steps or time, whichever is further) after which the BatchNorm statistics are recomputed and
    frozen (1: never; then they are recomputed once at the end, as RGB); ``gate_spread``: the
    DI-LIF gates' data-dependent initialization (:func:`calibrate_dilif_gates`)."""

    variant: str = EVENT_VARIANT
    steps: int = 2000
    batch_size: int = 8
    clip_frames: int = 6
    lr: float = 2e-3
    warmup_steps: int = 100
    pool_sequences: int = 48
    sequence_frames: int = 48
    max_gap: int = 30
    wide_jitter_p: float = 0.5
    difficulty_min: float = 0.0
    difficulty_max: float = 0.6
    calibration_batch: int = 16
    save_every: int = 500
    bn_freeze_fraction: float = 0.85
    gate_spread: float = 1.0

    def validate(self) -> "EventTrainConfig":
        super().validate()
        v = self.clip_frames
        if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 1:
            raise ConfigError(f"train: clip_frames must be an integer >= 1, got {v!r}")
        if self.sequence_frames < self.clip_frames + 2:
            raise ConfigError(f"train: sequence_frames ({self.sequence_frames}) must be >= clip_frames + 2 "
                              f"({self.clip_frames + 2}: a template frame, then the clip)")
        g = self.gate_spread
        if isinstance(g, bool) or not isinstance(g, numbers.Real) or not math.isfinite(g) or g < 0:
            raise ConfigError(f"train: gate_spread must be a finite number >= 0, got {g!r}")
        for name in ("difficulty_max", "bn_freeze_fraction"):
            x = getattr(self, name)
            if isinstance(x, bool) or not isinstance(x, numbers.Real) or not 0.0 <= float(x) <= 1.0:
                raise ConfigError(f"train: {name} must be a number in [0, 1], got {x!r}")
        if self.difficulty_max < self.difficulty_min:
            raise ConfigError(f"train: difficulty_max ({self.difficulty_max}) must be >= difficulty_min "
                              f"({self.difficulty_min})")
        if self.variant != EVENT_VARIANT:
            raise ConfigError(f"train: the event recipe trains {EVENT_VARIANT}, not {self.variant!r}")
        return self


# ---------------------------------------------------------------------------------------------
# MSST clips cut exactly as the event tracker cuts its crops
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClipSpec:
    """Where one clip of a batch came from: ``pool_index`` (the sequence in the sampler's pool at
    sampling time), ``sequence`` (its seed), ``template_frame`` i, ``frames`` (the T search frame
    indices k; window ``[t_{k-1}, t_k)``), ``prev_boxes`` (the simulated previous states, one per
    frame) and ``resize_factors`` (S / crop side of each search crop)."""

    pool_index: int
    sequence: int
    template_frame: int
    frames: Tuple[int, ...]
    prev_boxes: Tuple[Tuple[float, float, float, float], ...]
    resize_factors: Tuple[float, ...]


@dataclass(frozen=True)
class ClipBatch:
    """One MSST batch: ``template [1, B, 2n, St, St]``, ``search [T, B, 2n, S, S]`` (float32 voxel
    crops, bin-major channels as :func:`~spikedeploy.tracking.event_tracker.grid_input`),
    ``boxes [T, B, 4]`` (normalized ``(cx, cy, w, h)`` in each search crop) and ``clips`` (B
    :class:`ClipSpec`)."""

    template: torch.Tensor
    search: torch.Tensor
    boxes: torch.Tensor
    clips: Tuple[ClipSpec, ...]


class EventClipSampler(PairSampler):
    """MSST clips (module docstring) from a pool of ``split`` event sequences, refreshed by
    ``refresh(count)`` (the oldest replaced by new seeds), deterministic in ``seed``. ``size`` /
    ``template_size`` / ``n_bins``: the model's crop sizes and voxel bins. ``draw(batch)`` returns a
    :class:`ClipBatch`; ``sample(batch)`` its ``(template, search, boxes)``."""

    def __init__(self, *, size: int, template_size: int, n_bins: int, clip_frames: int, split: str = "train",
                 seed: int = 0, pool_sequences: int = 48, sequence_frames: int = 48, frame_size=(240, 320),
                 max_gap: int = 30, wide_jitter_p: float = 0.5, difficulty_min: float = 0.0,
                 difficulty_max: float = 0.6, seed_offset: int = 0):
        self.template_size, self.n_bins, self.clip_frames = int(template_size), int(n_bins), int(clip_frames)
        self.difficulty_max = float(difficulty_max)
        if int(sequence_frames) < self.clip_frames + 2:
            raise ConfigError(f"EventClipSampler: sequence_frames {sequence_frames} < clip_frames + 2")
        super().__init__(size=size, templates=1, split=split, seed=seed, pool_sequences=pool_sequences,
                         sequence_frames=sequence_frames, frame_size=frame_size, max_gap=max_gap,
                         wide_jitter_p=wide_jitter_p, difficulty_min=difficulty_min, seed_offset=seed_offset)

    def difficulty_of(self, seed: int) -> float:
        """The difficulty of pool sequence ``seed`` (a function of the seed alone, as RGB)."""
        u = float(np.random.default_rng(np.random.SeedSequence([11, int(seed)])).random())
        return self.difficulty_min + (self.difficulty_max - self.difficulty_min) * u

    def _new(self):
        from spikedeploy.events import synthetic_event_sequence

        s = self._next_seed
        self._next_seed += 1
        return synthetic_event_sequence(s, self.split, self.sequence_frames, self.frame_size,
                                        difficulty=self.difficulty_of(s))

    def draw(self, batch: int) -> ClipBatch:
        from spikedeploy.tracking.event_tracker import grid_input

        rng, S, St, T, nb = self.rng, self.size, self.template_size, self.clip_frames, self.n_bins
        z, x, targets, clips = [], [], [], []
        for _ in range(int(batch)):
            p = int(rng.integers(len(self.pool)))
            seq = self.pool[p]
            n, times = len(seq), seq.frame_times
            i = int(rng.integers(0, n - T))  # i + 1 + (T - 1) <= n - 1
            j = int(rng.integers(i + 1, min(n - T, i + self.max_gap) + 1))
            grid, _ = event_crop(seq.events, int(times[i]), int(times[i + 1]), seq.boxes[i], EVENT_TEMPLATE_FACTOR,
                                 St, nb)
            z.append(grid_input(grid))
            frames, prevs, rfs, xs, ts = [], [], [], [], []
            for k in range(j, j + T):
                prev = [float(v) for v in self._prev_box(seq.boxes, k)]
                grid, rf = event_crop(seq.events, int(times[k - 1]), int(times[k]), prev, EVENT_SEARCH_FACTOR, S, nb)
                xs.append(grid_input(grid))
                ts.append(_crop_targets(seq.boxes[k], prev, S)[0])
                frames.append(k)
                prevs.append(tuple(prev))
                rfs.append(float(rf))
            x.append(torch.cat(xs, dim=0))  # [T, 1, 2n, S, S]
            targets.append(np.stack(ts))
            clips.append(ClipSpec(pool_index=p, sequence=int(seq.seed), template_frame=i, frames=tuple(frames),
                                  prev_boxes=tuple(prevs), resize_factors=tuple(rfs)))
        return ClipBatch(template=torch.cat(z, dim=1).contiguous(), search=torch.cat(x, dim=1).contiguous(),
                         boxes=torch.tensor(np.stack(targets, axis=1), dtype=torch.float32), clips=tuple(clips))

    def sample(self, batch: int):
        b = self.draw(batch)
        return b.template, b.search, b.boxes


# ---------------------------------------------------------------------------------------------
# loss, weights
# ---------------------------------------------------------------------------------------------


def clip_loss(head, boxes: torch.Tensor, weights=(1.0, 5.0, 2.0)) -> Dict[str, torch.Tensor]:
    """:func:`tracking_loss` per frame: raw head maps ``[T, B, c, F, F]`` and boxes ``[T, B, 4]``
    as ``T * B`` rows (each frame its own score map; RGB's ``head_maps`` mean over its time axis
    is then a mean over one step)."""
    from spikedeploy.models.spiketrack import HeadOutputs

    T, B = boxes.shape[0], boxes.shape[1]
    rows = HeadOutputs(*(t.reshape((1, T * B) + tuple(t.shape[2:])) for t in head))
    return tracking_loss(rows, boxes.reshape(T * B, 4), weights)


def event_state_dict(model: nn.Module) -> Dict[str, torch.Tensor]:
    """The weights in the layout of a freshly built model of the same configuration (floating
    tensors float32, integer buffers as they are; ``num_batches_tracked`` of the trained
    BatchNorms included, as the model builds them)."""
    from spikedeploy.models.spiketrack_event import EventSpikeTrack

    fresh = EventSpikeTrack(model.config).state_dict()
    sd = model.state_dict()
    missing = [k for k in fresh if k not in sd]
    if missing:
        raise RuntimeError(f"event_state_dict: layout differs from {model.config.name}: missing {missing[:5]}")
    return {k: (sd[k].detach().to(torch.float32) if sd[k].is_floating_point() else sd[k].detach()).clone().contiguous()
            for k in fresh}


def save_event_weights(model: nn.Module, path, *, meta: Optional[dict] = None) -> Path:
    """Save ``{"net": event_state_dict(model)}`` (+ ``"meta"``) atomically; loadable with
    ``torch.load(path, weights_only=True)`` and :func:`load_event_weights`."""
    from spikedeploy.checkpoint import save_checkpoint

    payload = {"net": event_state_dict(model)}
    if meta is not None:
        payload["meta"] = meta
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(payload, path)
    return path


def load_event_weights(path, variant: str = EVENT_VARIANT):
    """A fresh ``variant`` (eval mode, float32) with the weights of ``path`` (``{"net": ...}``),
    loaded strictly (a mismatch raises CheckpointError naming the file)."""
    from spikedeploy.checkpoint import apply_state_dict, load_checkpoint
    from spikedeploy.models.spiketrack_event import spiketrack_event

    model = spiketrack_event(variant)
    apply_state_dict(model, load_checkpoint(path, key="net"), source=str(path))
    return model.float().eval()


def default_event_checkpoint() -> Path:
    """The bundled trained weights ``spikedeploy/data/spiketrack-event-tiny.pth`` (package data)."""
    from importlib import resources

    name = f"{EVENT_VARIANT}.pth"
    path = resources.files("spikedeploy.data") / name
    if not path.is_file():
        raise CheckpointError(f"spikedeploy ships no trained event weights {name} (package data spikedeploy/data/)")
    return Path(str(path))


def bundled_event_model():
    """``spiketrack-event-tiny`` with the bundled trained weights (float32, eval mode)."""
    return load_event_weights(default_event_checkpoint())


def bundled_event_tracker(**tracker_kwargs):
    """A ready :class:`~spikedeploy.tracking.event_tracker.EventTracker` around the bundled model
    (:class:`~spikedeploy.tracking.event_tracker.TorchEventNetwork`)."""
    from spikedeploy.tracking.event_tracker import EventTracker, TorchEventNetwork

    return EventTracker(TorchEventNetwork(bundled_event_model()), **tracker_kwargs)


# ---------------------------------------------------------------------------------------------
# the training loop
# ---------------------------------------------------------------------------------------------


#: smallest spread of the per-frame input means a calibrated gate divides by (bounds gate_w)
GATE_MIN_STD = 0.05


@torch.no_grad()
def calibrate_dilif_gates(model: nn.Module, run: Callable[[], object], *, spread: float = 1.0) -> int:
    """Data-dependent initialization of the DI-LIF gates (our choice; the seed gives neither the
    formula nor an initialization). During one call of ``run()`` (a forward pass in eval mode on a
    calibration batch, every gate still at its initial value) each DI-LIF layer sees its input's
    per-(frame, sample) means ``mu``; its last call (the search branch, which runs after the
    template) sets, after the pass::

        gate_w = spread / max(std(mu), GATE_MIN_STD),   gate_b = -gate_w * mean(mu)

    so ``gate_w * mu + gate_b`` is ``(mu - mean) / std * spread``: a frame of average activity
    gets ``alpha = 1/2``, ``D = D_init``, one ``spread`` standard deviation above ``D =
    round(2 sigmoid(spread) D_init)`` (spread 1: 9), below 3 -- D follows the input's activity from
    the first step instead of sitting at D_init (the default gate w = 1, b = 0 on normalized inputs
    of mean ~0 gives D = D_init for every frame, and the straight-through gradient alone moves it
    little). Returns the number of layers set."""
    from spikedeploy.models.spiketrack_event import EventDILIF

    seen: Dict[int, torch.Tensor] = {}
    layers = [m for m in model.modules() if isinstance(m, EventDILIF)]

    def pre_hook(module, args):
        seen[id(module)] = args[0].detach().flatten(2).mean(dim=2).double().reshape(-1)

    hooks = [m.register_forward_pre_hook(pre_hook) for m in layers]
    try:
        run()
    finally:
        for h in hooks:
            h.remove()
    for m in layers:
        mu = seen.get(id(m))
        if mu is None or mu.numel() < 2:
            continue
        w = float(spread) / max(float(mu.std()), GATE_MIN_STD)
        m.gate_w.fill_(w)
        m.gate_b.fill_(-w * float(mu.mean()))
    return sum(1 for m in layers if id(m) in seen)


def _progress(step: int, cfg: EventTrainConfig, elapsed: float) -> float:
    p = step / max(1, cfg.steps)
    if cfg.time_limit_s:
        p = max(p, elapsed / cfg.time_limit_s)
    return p


def train_event_tracker(config: Optional[EventTrainConfig] = None, output_dir=None, *, progress: bool = False,
                        log: Optional[Callable[[str], None]] = None) -> TrainResult:
    """Train ``spiketrack-event-tiny`` with MSST (module docstring). Writes, when ``output_dir``
    is given: ``<variant>.pth`` (also every ``save_every`` steps, ``meta.final`` false),
    ``<variant>_loss.csv`` (per logged step: step, seconds, lr, loss, focal, l1, giou, iou, and
    the mean DI-LIF firing limit ``d_mean`` of the logged steps), ``<variant>_loss.png`` and
    ``<variant>_train.json``. Deterministic for a given config and thread count. Returns a
    :class:`~spikedeploy.tracking.training.TrainResult` (the model: a fresh eval-mode
    ``spiketrack-event-tiny`` with the trained weights)."""
    from spikedeploy.models.spiketrack_event import EventDILIF, spiketrack_event

    cfg = (config or EventTrainConfig()).validate()
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    say = log or (lambda s: None)
    model = spiketrack_event(cfg.variant, dilif_scope="batch")
    c = model.config
    sampler = EventClipSampler(size=c.resolution, template_size=c.template_size, n_bins=c.n_bins,
                               clip_frames=cfg.clip_frames, seed=cfg.seed, pool_sequences=cfg.pool_sequences,
                               sequence_frames=cfg.sequence_frames, frame_size=cfg.frame_size, max_gap=cfg.max_gap,
                               wide_jitter_p=cfg.wide_jitter_p, difficulty_min=cfg.difficulty_min,
                               difficulty_max=cfg.difficulty_max)
    if cfg.init_weights:
        from spikedeploy.checkpoint import apply_state_dict, load_checkpoint

        apply_state_dict(model, load_checkpoint(cfg.init_weights, key="net"), source=cfg.init_weights)
        say(f"initialized from {cfg.init_weights}")
    else:
        z, x, _ = sampler.sample(cfg.calibration_batch)
        model.eval()
        n = calibrate_batchnorm(model, lambda: model(z, x))
        init_head_biases(model)
        g = calibrate_dilif_gates(model, lambda: model(z, x), spread=cfg.gate_spread)
        say(f"calibrated {n} BatchNorms and {g} DI-LIF gates on {z.shape[1]} clips of {x.shape[0]} frames")
    use_batch_statistics(model)  # no frozen BatchNorms in the event model; kept for the RGB symmetry
    bns = batchnorm_modules(model)
    dilifs = [m for m in model.modules() if isinstance(m, EventDILIF)]
    frozen = cfg.batchnorm == "frozen"

    def set_modes():
        model.train()  # DI-LIF batch scope
        if frozen:
            for m in bns:
                m.eval()

    set_modes()
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.dim() <= 1 or name.endswith("_pos") else decay).append(p)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr)
    out = Path(output_dir) if output_dir is not None else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    stem = c.variant
    history: List[Dict[str, float]] = []
    acc: Dict[str, float] = {}
    acc_n = 0
    files: Dict[str, str] = {}
    d_seen: List[float] = []

    def d_hook(module, inputs, output):
        if module.training:
            with torch.no_grad():
                d_seen.append(float(module.firing_limit(inputs[0]).mean()))

    hooks = [m.register_forward_hook(d_hook) for m in dilifs]

    def precise_bn():
        recompute_batchnorm_statistics(model, ((lambda z=z, x=x: model(z, x)) for z, x, _ in
                                               (sampler.sample(cfg.batch_size) for _ in range(cfg.bn_recompute_batches))))

    t0 = time.perf_counter()
    step = 0
    freeze_step = None

    def write_outputs(final: bool):
        if out is None:
            return
        if not frozen:  # a checkpoint of a batch-statistics phase: its running statistics set now
            precise_bn()
            set_modes()
        meta = {"variant": stem, "steps": step, "seconds": round(time.perf_counter() - t0, 1), "final": final,
                "bn_frozen_at_step": freeze_step}
        files["weights"] = str(save_event_weights(model, out / f"{stem}.pth", meta=meta))
        files.update(write_run_records(out, stem, history, meta, cfg, _plot, f"{c.name}: {step} steps, batch "
                                       f"{cfg.batch_size} x {cfg.clip_frames} frames (MSST)"))

    from tqdm.auto import tqdm

    bar = tqdm(total=cfg.steps, desc="train", unit="step", disable=not progress)
    try:
        while step < cfg.steps:
            elapsed = time.perf_counter() - t0
            if cfg.time_limit_s is not None and elapsed > cfg.time_limit_s:
                say(f"time limit reached after {step} steps")
                break
            if (not frozen and cfg.batchnorm == "batch" and cfg.bn_freeze_fraction < 1
                    and _progress(step, cfg, elapsed) >= cfg.bn_freeze_fraction):
                precise_bn()
                frozen, freeze_step = True, step
                set_modes()
                say(f"step {step}: BatchNorm statistics recomputed and frozen")
            lr = _lr_at(step, cfg, elapsed)
            for g in opt.param_groups:
                g["lr"] = lr
            z, x, boxes = sampler.sample(cfg.batch_size)
            d_seen.clear()
            losses = clip_loss(model(z, x), boxes, cfg.loss_weights)
            opt.zero_grad(set_to_none=True)
            losses["loss"].backward()
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            step += 1
            for k, v in losses.items():
                acc[k] = acc.get(k, 0.0) + float(v.detach())
            acc["d_mean"] = acc.get("d_mean", 0.0) + (float(np.mean(d_seen)) if d_seen else float("nan"))
            acc_n += 1
            bar.update(1)
            if step % cfg.log_every == 0 or step == cfg.steps:
                row = {"step": step, "seconds": round(time.perf_counter() - t0, 2), "lr": lr}
                row.update({k: v / acc_n for k, v in acc.items()})
                history.append(row)
                acc, acc_n = {}, 0
                bar.set_postfix(loss=f"{row['loss']:.3f}", iou=f"{row['iou']:.3f}", refresh=False)
                say(f"step {step} {row['seconds']:.0f}s lr {lr:.2e} loss {row['loss']:.4f} focal {row['focal']:.4f} "
                    f"l1 {row['l1']:.4f} giou {row['giou']:.4f} iou {row['iou']:.3f} D {row['d_mean']:.2f}")
            if step % cfg.refresh_every == 0 and cfg.refresh_count:
                sampler.refresh(cfg.refresh_count)
            if step % cfg.save_every == 0 and step < cfg.steps:
                write_outputs(final=False)
    finally:
        bar.close()
        for h in hooks:
            h.remove()
    if acc_n:
        row = {"step": step, "seconds": round(time.perf_counter() - t0, 2), "lr": _lr_at(max(step - 1, 0), cfg)}
        row.update({k: v / acc_n for k, v in acc.items()})
        history.append(row)
    if not frozen:
        precise_bn()
    frozen = True  # statistics final: write_outputs keeps them
    write_outputs(final=True)
    seconds = time.perf_counter() - t0
    from spikedeploy.checkpoint import apply_state_dict

    final = spiketrack_event(cfg.variant)
    apply_state_dict(final, event_state_dict(model), source="trained weights")
    return TrainResult(model=final.eval(), history=history, files=files, steps=step, seconds=seconds)


# ---------------------------------------------------------------------------------------------
# command line: `spikedeploy train --model spiketrack-event-tiny` (training.run_train for the rest)
# ---------------------------------------------------------------------------------------------

#: options whose default differs between the RGB and the event recipes: (dest, config field)
_RECIPE_OPTIONS = (("steps", "steps"), ("batch_size", "batch_size"), ("lr", "lr"),
                   ("difficulty_min", "difficulty_min"), ("wide_jitter", "wide_jitter_p"))
#: options only the event recipe has: (dest, config field)
_EVENT_OPTIONS = (("clip_frames", "clip_frames"), ("difficulty_max", "difficulty_max"))


def add_train_arguments(parser) -> None:
    """The options of ``train`` for both recipes: :func:`spikedeploy.tracking.training.add_train_arguments`
    (RGB) plus ``--clip-frames`` and ``--difficulty-max`` (event only). The options whose defaults
    differ between the recipes (``--steps``, ``--batch-size``, ``--lr``, ``--difficulty-min``,
    ``--wide-jitter``) default to None here and :func:`run_train` fills in the recipe's
    (:class:`~spikedeploy.tracking.training.TrainConfig` or :class:`EventTrainConfig`)."""
    from spikedeploy.tracking.training import add_train_arguments as add_rgb

    add_rgb(parser)
    rgb, ev = TrainConfig(), EventTrainConfig()
    dests = {dest: name for dest, name in _RECIPE_OPTIONS}
    for action in parser._actions:  # argparse has no public API to amend an option's help
        if action.dest in dests:
            f = dests[action.dest]
            action.default = None
            action.help = (action.help or "").replace("%(default)s", f"{getattr(rgb, f)}; {EVENT_VARIANT}: "
                                                                    f"{getattr(ev, f)}")
        elif action.dest == "model":
            action.help = (f"{action.help}; {EVENT_VARIANT}: the event tracker, trained with MSST clips on generated "
                           "event sequences")
    parser.add_argument("--clip-frames", type=int, default=None,
                        help=f"{EVENT_VARIANT} only: consecutive search frames per MSST clip, the membranes carried "
                             f"across them (default: {ev.clip_frames})")
    parser.add_argument("--difficulty-max", type=float, default=None,
                        help=f"{EVENT_VARIANT} only: training sequences get a difficulty drawn from "
                             f"[--difficulty-min, this] (default: {ev.difficulty_max}; held-out evaluation: 0.3)")


def run_train(args, log: Callable[[str], None] = print) -> Dict[str, object]:
    """``train`` with parsed ``args`` (:func:`add_train_arguments`): ``--model
    spiketrack-event-tiny`` runs :func:`run_event_train`, any other model
    :func:`spikedeploy.tracking.training.run_train` with the RGB defaults (the event-only options
    are refused for it). Returns the summary dict."""
    from spikedeploy.tracking import training

    if str(args.model).strip().lower() == EVENT_VARIANT:
        return run_event_train(args, log=log)
    for dest, _ in _EVENT_OPTIONS:
        if getattr(args, dest, None) is not None:
            raise ConfigError(f"train: --{dest.replace('_', '-')} applies to {EVENT_VARIANT} only, not {args.model!r}")
    d = TrainConfig()
    for dest, f in _RECIPE_OPTIONS:
        if getattr(args, dest, None) is None:
            setattr(args, dest, getattr(d, f))
    return training.run_train(args, log=log)


def run_event_train(args, log: Callable[[str], None] = print) -> Dict[str, object]:
    """``train`` for ``--model spiketrack-event-tiny`` with parsed ``args``
    (:func:`~spikedeploy.tracking.training.add_train_arguments`; an option left None takes the
    :class:`EventTrainConfig` default: ``--steps``, ``--batch-size``, ``--lr``, ``--difficulty-min``,
    ``--difficulty-max``, ``--wide-jitter``, ``--clip-frames``): train, then the held-out event evaluation
    (:func:`~spikedeploy.tracking.event_evaluation.heldout_event_evaluation`) with ``_eval.json``
    and ``_eval.png`` next to the weights. Returns a summary dict."""
    import os

    from spikedeploy.fsutil import check_output_dir, read_marker, write_marker

    for name in ("eval_sequences", "eval_frames"):
        v = getattr(args, name)
        if v < (0 if name == "eval_sequences" else 2):
            raise ConfigError(f"train: --{name.replace('_', '-')} must be >= {0 if name == 'eval_sequences' else 2}, got {v}")
    if args.init_weights is not None and not Path(args.init_weights).is_file():
        raise ConfigError(f"train: --init-weights {args.init_weights!r} is not a file")
    out = Path(args.output)
    check_output_dir(out, overwrite=getattr(args, "overwrite", False), inputs=(args.init_weights,))
    ev_d = EventTrainConfig()

    def pick(arg: str, field_name: str):
        v = getattr(args, arg, None)
        return getattr(ev_d, field_name) if v is None else v  # None: the parser leaves the default to the recipe

    cfg = EventTrainConfig(steps=pick("steps", "steps"), batch_size=pick("batch_size", "batch_size"),
                           lr=pick("lr", "lr"), seed=args.seed, threads=args.threads, time_limit_s=args.time_limit,
                           init_weights=args.init_weights, difficulty_min=pick("difficulty_min", "difficulty_min"),
                           difficulty_max=pick("difficulty_max", "difficulty_max"),
                           wide_jitter_p=pick("wide_jitter", "wide_jitter_p"),
                           clip_frames=pick("clip_frames", "clip_frames"))
    cfg.validate()
    result = train_event_tracker(cfg, out, progress=not args.no_progress, log=log)
    summary: Dict[str, object] = {"steps": result.steps, "seconds": round(result.seconds, 1), "files": dict(result.files)}
    if args.eval_sequences:
        from spikedeploy.tracking.event_evaluation import heldout_event_evaluation, write_event_evaluation

        ev = heldout_event_evaluation(result.model, args.eval_sequences, args.eval_frames,
                                      progress=not args.no_progress, weights=f"{EVENT_VARIANT}.pth (float32, as trained)")
        summary["files"].update({f"eval_{k}": v for k, v in write_event_evaluation(ev, out, EVENT_VARIANT).items()})
        summary["eval"] = {k: ev[k] for k in ("sequences", "frames_per_sequence", "frames_scored", "auc",
                                              "precision20", "mean_iou", "static_auc", "static_precision20")}
        log(f"held-out: AUC {ev['auc']:.3f}, precision@20 {ev['precision20']:.3f} over {ev['frames_scored']} frames "
            f"(static box: AUC {ev['static_auc']:.3f}, precision@20 {ev['static_precision20']:.3f}; fixed D: AUC "
            f"{ev['fixed_d']['auc']:.3f}, precision@20 {ev['fixed_d']['precision20']:.3f})")
    written = {os.path.relpath(str(f), str(out)) for f in summary["files"].values()
               if isinstance(f, str) and Path(f).is_file()}
    write_marker(out, written | (read_marker(out) or set()), command="train")
    return summary
