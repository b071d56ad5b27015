"""An event-camera simulator: a frame sequence becomes an event stream, and the project's synthetic
tracking sequences become event sequences with ground truth.

The pixel model (the DVS model of ESIM, Rebecq et al., CoRL 2018, and v2e, Hu et al., CVPRW 2021,
reduced to what is listed here; every step vectorised over pixels in numpy):

1. **Grey level** (:func:`grey_levels`): ``Y = (0.299 R + 0.587 G + 0.114 B) / 255`` (ITU-R
   BT.601 luma, the weights of OpenCV's ``RGB2GRAY`` that v2e uses); grey frames are ``Y = I / 255``.
2. **Log intensity**: ``L = ln(Y + eps)``, ``eps = log_eps`` (0.01 by default: the log stays
   finite at black and the darkest grey levels do not flood the stream with noise events).
3. **Thresholds with mismatch**: per pixel ``C_on(x, y) = max(c_on + sigma z_on(x, y), c_min)``
   and likewise ``C_off`` with its own ``z_off``; ``z ~ N(0, 1)`` drawn once per pixel from the
   seed (``sigma = threshold_sigma``, in log units; ``c_min = min_threshold``).
4. **Crossings with reference reset**: each pixel keeps a reference ``R`` (initially ``L`` of the
   first frame). Between frames ``k`` and ``k + 1`` the pixel's ``L`` moves linearly in time from
   ``L_k`` to ``L_{k+1}``; with ``d = L_{k+1} - R`` it emits ``n = floor(d / C_on)`` ON events
   (``d > 0``) or ``n = floor(-d / C_off)`` OFF events (``d < 0``), the ``j``-th when ``L``
   crosses the level ``R ± j C``, and the reference resets to the last level crossed,
   ``R <- R ± n C``. So a pixel that brightens by ``Δ`` in one step gives ``floor(Δ / C_on)``
   events, and ``|L - R| < C`` always holds after a step.
5. **Interpolated timestamps**: the ``j``-th crossing happens at the fraction
   ``f = (R ± j C - L_k) / (L_{k+1} - L_k)`` (``0 < f <= 1``) of the interval, at
   ``t = t_k + floor(f (t_{k+1} - t_k))`` microseconds, so ``t_k <= t <= t_{k+1}``.
6. **Noise**: background-activity events, a Poisson process of ``noise_rate_hz`` events per pixel
   per second over ``[t_0, t_last)``: their number is Poisson with mean
   ``rate * duration * W * H``, each at a uniform pixel, a uniform integer time and a random
   polarity. They do not move the reference.
7. **Refractory period**: after an event a pixel emits nothing for ``refractory_us``
   microseconds: per pixel, in time order, an event less than ``refractory_us`` after the last
   *emitted* event is dropped (signal and noise events alike). A dropped crossing still moves the
   reference (the pixel's reset follows the signal while it is held), so the period removes events
   without shifting later ones.
8. **Order**: the stream is sorted by ``(t, y, x, p)``; deterministic for a seed. The seed feeds
   ``numpy.random.SeedSequence(seed).spawn(2)``: the first child draws the mismatch, the second
   the noise, so changing the noise rate leaves the thresholds as they were.

The model is per pixel and linear in time between frames: a moving edge that crosses several
pixels within one frame interval gives events at interpolated, not true, times (ESIM adapts its
sampling and v2e interpolates frames for that; here the frame rate is the knob).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field, replace
from typing import Dict, List, Optional, Tuple

import numpy as np

from spikedeploy.errors import ConfigError, InputError
from spikedeploy.events.stream import EVENT_DTYPE, EventStream

__all__ = ["SimulatorConfig", "SYNTHETIC_CONFIG", "grey_levels", "simulate_events", "EventSequence",
           "synthetic_event_sequence", "frame_times"]

_LUMA = np.array([0.299, 0.587, 0.114])


def _real(v, name: str, lo: float, *, open_lo: bool = False) -> float:
    ok = isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(float(v))
    if not ok or float(v) < lo or (open_lo and float(v) == lo):
        raise ConfigError(f"{name} must be a finite number {'>' if open_lo else '>='} {lo}, got {v!r}")
    return float(v)


@dataclass(frozen=True)
class SimulatorConfig:
    """The pixel model's parameters (module docstring): contrast thresholds ``c_on``/``c_off``
    (log units), per-pixel mismatch ``threshold_sigma`` (standard deviation, log units) and the
    floor ``min_threshold``, ``refractory_us`` (microseconds), ``noise_rate_hz`` (background
    events per pixel per second), ``log_eps`` (added to the [0, 1] grey level before the log) and
    the ``seed`` of the mismatch and the noise."""

    c_on: float = 0.2
    c_off: float = 0.2
    threshold_sigma: float = 0.03
    min_threshold: float = 0.01
    refractory_us: int = 0
    noise_rate_hz: float = 0.0
    log_eps: float = 0.01
    seed: int = 0

    def __post_init__(self):
        _real(self.c_on, "c_on", 0.0, open_lo=True)
        _real(self.c_off, "c_off", 0.0, open_lo=True)
        _real(self.threshold_sigma, "threshold_sigma", 0.0)
        _real(self.min_threshold, "min_threshold", 0.0, open_lo=True)
        _real(self.noise_rate_hz, "noise_rate_hz", 0.0)
        _real(self.log_eps, "log_eps", 0.0, open_lo=True)
        for name in ("refractory_us", "seed"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, numbers.Integral) or int(v) < 0:
                raise ConfigError(f"{name} must be an integer >= 0, got {v!r}")


#: the camera of :func:`synthetic_event_sequence`: v2e's default thresholds and mismatch, a 1 ms
#: refractory period and 0.1 Hz background activity per pixel
SYNTHETIC_CONFIG = SimulatorConfig(c_on=0.2, c_off=0.2, threshold_sigma=0.03, refractory_us=1000, noise_rate_hz=0.1)


def grey_levels(frames: np.ndarray, name: str = "frames") -> np.ndarray:
    """``float64 [N, H, W]`` grey levels in [0, 1] of uint8 frames ``[N, H, W]`` (grey) or
    ``[N, H, W, 3]`` (RGB, BT.601 luma)."""
    f = np.asarray(frames)
    if f.dtype != np.uint8:
        raise InputError(f"{name}: frames must be uint8, got dtype {f.dtype}")
    if f.ndim == 4 and f.shape[-1] == 3:
        return (f @ _LUMA) / 255.0
    if f.ndim == 3:
        return f / 255.0
    raise InputError(f"{name}: frames must be [N, H, W] (grey) or [N, H, W, 3] (RGB), got shape {f.shape}")


def _check_times(times, n: int, name: str) -> np.ndarray:
    t = np.asarray(times)
    if t.shape != (n,) or not np.issubdtype(t.dtype, np.integer):
        raise InputError(f"{name}: frame times must be {n} integers (microseconds), one per frame, got "
                         f"shape {t.shape}, dtype {t.dtype}")
    t = t.astype(np.int64)
    if n > 1 and np.any(t[1:] <= t[:-1]):
        i = int(np.flatnonzero(t[1:] <= t[:-1])[0]) + 1
        raise InputError(f"{name}: frame times must increase strictly: frame {i} at {int(t[i])} us is not after "
                         f"frame {i - 1} at {int(t[i - 1])} us")
    return t


def _crossings(idx: np.ndarray, n: np.ndarray, ref: np.ndarray, step: np.ndarray, l0: np.ndarray,
               l1: np.ndarray, t0: int, dt: int) -> Tuple[np.ndarray, np.ndarray]:
    """The pixels ``idx`` emit ``n[idx]`` events at the levels ``ref + j step`` (j = 1..n; step
    signed): their pixel indices and interpolated timestamps."""
    counts = n[idx]
    pix = np.repeat(idx, counts)
    first = np.cumsum(counts) - counts
    j = np.arange(pix.size) - np.repeat(first, counts) + 1
    level = ref[pix] + j * step[pix]
    frac = np.clip((level - l0[pix]) / (l1[pix] - l0[pix]), 0.0, 1.0)
    return pix, t0 + np.floor(frac * dt).astype(np.int64)


def _refractory(pix: np.ndarray, t: np.ndarray, period: int) -> np.ndarray:
    """Indices of the events kept by the refractory period: per pixel, in time order (ties in the
    given order), an event is kept if it comes at least ``period`` after the last kept one. The
    greedy pass runs over the k-th event of every pixel at once, k = 0, 1, ..."""
    order = np.lexsort((t, pix))
    ps, ts = pix[order], t[order]
    m = ps.size
    starts = np.flatnonzero(np.r_[True, ps[1:] != ps[:-1]])
    lengths = np.diff(np.r_[starts, m])
    keep = np.zeros(m, bool)
    last = np.full(starts.size, np.iinfo(np.int64).min // 2)
    active = np.arange(starts.size)
    for k in range(int(lengths.max())):
        active = active[lengths[active] > k]
        pos = starts[active] + k
        ok = ts[pos] - last[active] >= period
        keep[pos[ok]] = True
        last[active[ok]] = ts[pos[ok]]
    return order[keep]


def simulate_events(frames: np.ndarray, times_us, config: SimulatorConfig = SimulatorConfig(), *,
                    name: Optional[str] = None) -> EventStream:
    """Events of the uint8 frames ``[N, H, W(, 3)]`` taken at ``times_us`` (``N`` strictly
    increasing integers, microseconds) under ``config`` (the model in the module docstring): a
    validated :class:`EventStream` with ``sensor_size = (W, H)``, sorted by ``(t, y, x, p)``."""
    name = name or "simulated events"
    if not isinstance(config, SimulatorConfig):
        raise ConfigError(f"config must be a SimulatorConfig, got {type(config).__name__}")
    f = np.asarray(frames)
    if f.ndim not in (3, 4) or f.shape[0] < 1:
        raise InputError(f"{name}: frames must be [N, H, W] or [N, H, W, 3] with N >= 1, got shape {f.shape}")
    n_frames, H, W = f.shape[:3]
    times = _check_times(times_us, n_frames, name)
    mismatch_ss, noise_ss = np.random.SeedSequence(int(config.seed)).spawn(2)
    mrng = np.random.default_rng(mismatch_ss)
    c_on = np.maximum(config.c_on + config.threshold_sigma * mrng.standard_normal(H * W), config.min_threshold)
    c_off = np.maximum(config.c_off + config.threshold_sigma * mrng.standard_normal(H * W), config.min_threshold)

    def log_frame(i: int) -> np.ndarray:
        return np.log(grey_levels(f[i:i + 1], name)[0].reshape(-1) + config.log_eps)

    l0 = log_frame(0)
    ref = l0.copy()
    pix_parts: List[np.ndarray] = []
    t_parts: List[np.ndarray] = []
    p_parts: List[np.ndarray] = []
    for k in range(n_frames - 1):
        l1 = log_frame(k + 1)
        d = l1 - ref
        n_on = np.where(d > 0, np.floor(d / c_on), 0).astype(np.int64)
        n_off = np.where(d < 0, np.floor(-d / c_off), 0).astype(np.int64)
        t0, dt = int(times[k]), int(times[k + 1] - times[k])
        for n, step, pol in ((n_on, c_on, 1), (n_off, -c_off, 0)):
            idx = np.flatnonzero(n)
            if idx.size:
                pix, t = _crossings(idx, n, ref, step, l0, l1, t0, dt)
                pix_parts.append(pix)
                t_parts.append(t)
                p_parts.append(np.full(pix.size, pol, np.int8))
        ref = ref + n_on * c_on - n_off * c_off
        l0 = l1
    if config.noise_rate_hz > 0 and n_frames > 1:
        nrng = np.random.default_rng(noise_ss)
        span = int(times[-1] - times[0])
        m = int(nrng.poisson(config.noise_rate_hz * span * 1e-6 * H * W))
        pix_parts.append(nrng.integers(0, H * W, m))
        t_parts.append(nrng.integers(int(times[0]), int(times[-1]), m))
        p_parts.append(nrng.integers(0, 2, m).astype(np.int8))
    pix = np.concatenate(pix_parts) if pix_parts else np.empty(0, np.int64)
    t = np.concatenate(t_parts) if t_parts else np.empty(0, np.int64)
    p = np.concatenate(p_parts) if p_parts else np.empty(0, np.int8)
    if config.refractory_us > 0 and pix.size:
        kept = _refractory(pix, t, int(config.refractory_us))
        pix, t, p = pix[kept], t[kept], p[kept]
    y, x = np.divmod(pix, W)
    order = np.lexsort((p, x, y, t))
    ev = np.empty(order.size, EVENT_DTYPE)
    ev["x"], ev["y"], ev["t"], ev["p"] = x[order], y[order], t[order], p[order]
    return EventStream(ev, (int(W), int(H)), name).validate(allow_empty=True)


# ---------------------------------------------------------------------------------------------
# synthetic event sequences
# ---------------------------------------------------------------------------------------------


def frame_times(num_frames: int, fps: float) -> np.ndarray:
    """``t_i = round(i * 1e6 / fps)`` microseconds, i = 0 .. num_frames - 1 (int64)."""
    fps = _real(fps, "fps", 0.0, open_lo=True)
    if fps > 1e6:
        raise ConfigError(f"fps must be at most 1e6 (one frame a microsecond), got {fps!r}")
    return np.rint(np.arange(int(num_frames)) * (1e6 / fps)).astype(np.int64)


@dataclass(frozen=True, eq=False)
class EventSequence:
    """A synthetic event sequence with ground truth: ``events`` (sensor ``(W, H)``) recorded
    while the frames of :func:`spikedeploy.tracking.synth.generate_sequence` were shown at
    ``frame_times`` (int64 ``[N]`` microseconds); ``boxes`` (float64 ``[N, 4]``, ``x, y, w, h``)
    is the target's box at ``frame_times[i]``, ``visible`` its unoccluded fraction; ``frames``
    the uint8 RGB frames when kept. Frame ``i``'s search window is ``[frame_times[i - 1],
    frame_times[i])`` (:func:`spikedeploy.events.voxel.window_frames` with ``edges = frame_times``)."""

    events: EventStream
    frame_times: np.ndarray
    boxes: np.ndarray
    visible: np.ndarray
    split: str
    seed: int
    fps: float
    config: SimulatorConfig
    frames: Optional[np.ndarray] = None
    info: Dict[str, object] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.frame_times.shape[0])


def synthetic_event_sequence(seed: int, split: str = "train", num_frames: int = 60,
                             frame_size: Tuple[int, int] = (240, 320), fps: float = 30.0, *,
                             config: SimulatorConfig = SYNTHETIC_CONFIG, difficulty: float = 1.0,
                             keep_frames: bool = False) -> EventSequence:
    """Synthetic tracking sequence ``seed`` of ``split`` (:func:`generate_sequence`, photographs
    disjoint between ``"train"`` and ``"heldout"``) shown at ``fps`` and recorded by the
    simulator under ``config``. Each sequence has its own simulated camera: the simulator's seed
    is drawn from ``SeedSequence([config.seed, split id, seed])``, so mismatch and noise differ
    between sequences and the whole is deterministic in its arguments."""
    from spikedeploy.tracking.synth import SPLITS, generate_sequence

    seq = generate_sequence(seed, split, num_frames, frame_size, difficulty=difficulty)
    times = frame_times(len(seq), fps)
    sim_seed = int(np.random.SeedSequence([int(config.seed), SPLITS.index(split) + 1, int(seed)]).generate_state(1)[0])
    used = replace(config, seed=sim_seed)
    stream = simulate_events(seq.frames, times, used, name=f"synthetic {split}/{seed}")
    return EventSequence(events=stream, frame_times=times, boxes=seq.boxes, visible=seq.visible, split=split,
                         seed=int(seed), fps=float(fps), config=used, frames=seq.frames if keep_frames else None,
                         info=dict(seq.info))
