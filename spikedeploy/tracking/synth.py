"""Synthetic single-object tracking sequences built from real photographs.

The photographs are scikit-image's sample images (``skimage.data``: astronaut, coffee, chelsea,
rocket, the stereo motorcycle, ...), shipped inside the scikit-image wheel (no download). A
sequence pastes a *target* (a crop of one photograph with an elliptical, rounded or rectangular
alpha mask) onto a *background* (a crop of another photograph, with a slowly panning camera) and
moves it along a smooth random trajectory with scale change, in-plane rotation, illumination change
and motion blur. Distractors (other crops, one of them often from the same photograph as the target,
so it looks alike) move behind the target, an occluder may cross in front of it, and sensor noise
is added. Ground truth is exact by construction: the box ``[x, y, w, h]`` (pixels, top-left
corner, width and height; pixel ``i`` spans ``[i, i + 1)``) is the bounding box of the target's
rendered alpha mask (alpha >= 0.5) at that frame, before occlusion, clipped to the frame, as in
OTB-style annotations (an occluded target keeps its full box).

Everything is deterministic in ``(split, seed)``: a :class:`numpy.random.Generator` seeded with
``SeedSequence([split id, seed])`` drives every choice, and the rendering is plain numpy.

Splits (:data:`SPLIT_IMAGES`): ``"train"`` and ``"heldout"`` use *disjoint* sets of photographs
for targets, distractors, occluders and backgrounds, so a tracker trained on ``"train"`` is
evaluated on image content it has never seen::

    from spikedeploy.tracking.synth import generate_sequence
    seq = generate_sequence(seed=3, split="heldout", num_frames=60)
    seq.frames  # uint8 [60, 240, 320, 3] RGB
    seq.boxes   # float64 [60, 4]  x, y, w, h
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from spikedeploy.errors import ConfigError

__all__ = [
    "demo_clip",
    "SPLIT_IMAGES",
    "SPLITS",
    "SyntheticSequence",
    "photo",
    "generate_sequence",
    "generate_sequences",
    # the pieces a sequence is made of (also used by spikedeploy.video's clips)
    "Sprite", "cut_patch", "render_sprite", "resample_patch", "sprite_mask", "tinted",
]

#: photographs per split (``skimage.data`` names; ``motorcycle`` is the left stereo image). The two
#: sets are disjoint.
SPLIT_IMAGES: Dict[str, Tuple[str, ...]] = {
    "train": ("astronaut", "coffee", "rocket", "immunohistochemistry", "retina",
              "camera", "grass", "brick", "moon", "page"),
    "heldout": ("chelsea", "motorcycle", "gravel", "coins", "text"),
}
SPLITS = tuple(SPLIT_IMAGES)
_SPLIT_ID = {"train": 1, "heldout": 2}
_GRAY = {"camera", "grass", "brick", "moon", "page", "gravel", "coins", "text"}


@dataclass
class SyntheticSequence:
    """One generated sequence: ``frames`` uint8 ``[N, H, W, 3]`` (RGB), ``boxes`` float64
    ``[N, 4]`` (x, y, w, h in pixels), ``visible`` float64 ``[N]`` (fraction of the target's mask
    not covered by the occluder), and ``info`` (the images and parameters used)."""

    frames: np.ndarray
    boxes: np.ndarray
    visible: np.ndarray
    split: str
    seed: int
    info: Dict[str, object] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.frames.shape[0])


# ---------------------------------------------------------------------------------------------
# photographs
# ---------------------------------------------------------------------------------------------


@lru_cache(maxsize=None)
def photo(name: str) -> np.ndarray:
    """The ``skimage.data`` photograph ``name`` as a read-only float32 RGB array ``[H, W, 3]`` in
    0..255 (grayscale images are replicated to three channels)."""
    known = {n for names in SPLIT_IMAGES.values() for n in names}
    if name not in known:
        raise ConfigError(f"unknown photograph {name!r}; known: {', '.join(sorted(known))}")
    try:
        import skimage.data as skdata
    except ImportError as exc:  # pragma: no cover - scikit-image is a dependency
        raise ConfigError("the synthetic tracking data needs scikit-image (pip install scikit-image)") from exc
    img = skdata.stereo_motorcycle()[0] if name == "motorcycle" else getattr(skdata, name)()
    img = np.asarray(img)
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    img = img[:, :, :3].astype(np.float32)
    img.setflags(write=False)
    return img


# ---------------------------------------------------------------------------------------------
# sampling helpers
# ---------------------------------------------------------------------------------------------


def _bilinear(img: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """Bilinear samples of ``img [H, W, C]`` at float coordinates (pixel centres at integers),
    coordinates clamped to the image. Returns ``[*ys.shape, C]`` float32."""
    H, W = img.shape[:2]
    ys = np.clip(ys, 0.0, H - 1.0)
    xs = np.clip(xs, 0.0, W - 1.0)
    y0 = np.minimum(np.floor(ys).astype(np.int64), H - 2 if H > 1 else 0)
    x0 = np.minimum(np.floor(xs).astype(np.int64), W - 2 if W > 1 else 0)
    y1 = np.minimum(y0 + 1, H - 1)
    x1 = np.minimum(x0 + 1, W - 1)
    fy = (ys - y0)[..., None].astype(np.float32)
    fx = (xs - x0)[..., None].astype(np.float32)
    top = img[y0, x0] * (1 - fx) + img[y0, x1] * fx
    bot = img[y1, x0] * (1 - fx) + img[y1, x1] * fx
    return top * (1 - fy) + bot * fy


def resample_patch(img: np.ndarray, y0: float, x0: float, h: float, w: float, out_h: int, out_w: int) -> np.ndarray:
    """The region ``[y0, y0 + h) x [x0, x0 + w)`` of ``img`` resampled to ``out_h x out_w``
    (box-filtered first when shrinking by more than 2x, to limit aliasing)."""
    factor = min(h / out_h, w / out_w)
    if factor > 2.0:
        k = int(factor // 1.5)
        H, W = img.shape[:2]
        Hc, Wc = (H // k) * k, (W // k) * k
        img = img[:Hc, :Wc].reshape(Hc // k, k, Wc // k, k, -1).mean(axis=(1, 3))
        y0, x0, h, w = y0 / k, x0 / k, h / k, w / k
    ys = y0 + (np.arange(out_h) + 0.5) * (h / out_h) - 0.5
    xs = x0 + (np.arange(out_w) + 0.5) * (w / out_w) - 0.5
    return _bilinear(img, ys[:, None], xs[None, :])


def tinted(img: np.ndarray, name: str, rng: np.random.Generator) -> np.ndarray:
    """Grayscale photographs get a random colour tint (colour photographs are returned as is)."""
    if name not in _GRAY:
        return img
    tint = rng.uniform(0.55, 1.0, size=3).astype(np.float32)
    return img * tint


@dataclass
class Sprite:
    """An RGBA patch (float32 colour [h, w, 3] 0..255, alpha [h, w] 0..1) and its trajectory."""

    rgb: np.ndarray
    alpha: np.ndarray
    centers: np.ndarray  # [N, 2] (cx, cy) in frame pixels (continuous coordinates)
    scales: np.ndarray  # [N] frame pixels per patch pixel
    angles: np.ndarray  # [N] radians
    gains: np.ndarray  # [N] brightness factors


def sprite_mask(rng: np.random.Generator, h: int, w: int, shape: Optional[str] = None) -> np.ndarray:
    shape = shape or str(rng.choice(["ellipse", "rounded", "rect"], p=[0.4, 0.4, 0.2]))
    yy = (np.arange(h) + 0.5) / h * 2 - 1
    xx = (np.arange(w) + 0.5) / w * 2 - 1
    Y, X = np.meshgrid(yy, xx, indexing="ij")
    soft = 2.0 / min(h, w)  # about one patch pixel of soft edge
    if shape == "ellipse":
        d = np.sqrt(X ** 2 + Y ** 2)
    elif shape == "rounded":
        p = 4.0
        d = (np.abs(X) ** p + np.abs(Y) ** p) ** (1 / p)
    else:
        d = np.maximum(np.abs(X), np.abs(Y))
    return np.clip((1.0 - d) / soft + 0.5, 0.0, 1.0).astype(np.float32)


def cut_patch(rng: np.random.Generator, img: np.ndarray, side: float, aspect: float,
               near: Optional[Tuple[float, float]] = None) -> Tuple[np.ndarray, Tuple[float, float]]:
    """A patch of ``img`` of about ``side`` x ``side`` source pixels with the given aspect (w / h),
    resampled to at most 96 pixels per side. ``near``: take it close to this (cy, cx) source point."""
    H, W = img.shape[:2]
    h = min(side / math.sqrt(aspect), H * 0.9)
    w = min(side * math.sqrt(aspect), W * 0.9)
    if near is None:
        cy = rng.uniform(h / 2, H - h / 2)
        cx = rng.uniform(w / 2, W - w / 2)
    else:
        cy = float(np.clip(near[0] + rng.uniform(-1.5, 1.5) * h, h / 2, H - h / 2))
        cx = float(np.clip(near[1] + rng.uniform(-1.5, 1.5) * w, w / 2, W - w / 2))
    k = min(1.0, 96.0 / max(h, w))
    out_h, out_w = max(8, int(round(h * k))), max(8, int(round(w * k)))
    return resample_patch(img, cy - h / 2, cx - w / 2, h, w, out_h, out_w), (cy, cx)


def _smooth_noise(rng: np.random.Generator, n: int, terms: int = 3) -> np.ndarray:
    """A smooth random curve in about [-1, 1] over ``n`` frames (sum of random sinusoids)."""
    t = np.arange(n, dtype=np.float64)
    out = np.zeros(n)
    for _ in range(terms):
        period = rng.uniform(20, 90)
        out += math.sqrt(2.0 / terms) * np.sin(2 * math.pi * t / period + rng.uniform(0, 2 * math.pi))
    return out


def _trajectory(rng: np.random.Generator, n: int, H: int, W: int, margin: float, speed: float,
                start: Optional[Tuple[float, float]] = None) -> np.ndarray:
    """Centres ``[n, 2]`` (cx, cy): a velocity random walk with speed about ``speed`` px/frame,
    reflected at the borders (kept ``margin`` pixels inside the frame)."""
    lo = np.array([margin, margin])
    hi = np.array([W - margin, H - margin])
    hi = np.maximum(hi, lo + 1)
    pos = np.array(start, dtype=np.float64) if start is not None else rng.uniform(lo, hi)
    ang = rng.uniform(0, 2 * math.pi)
    vel = speed * np.array([math.cos(ang), math.sin(ang)])
    out = np.empty((n, 2))
    for i in range(n):
        out[i] = pos
        vel = vel + rng.normal(0, 0.25 * speed + 0.1, size=2)
        norm = np.linalg.norm(vel)
        if norm > 1.5 * speed:
            vel *= 1.5 * speed / norm
        pos = pos + vel
        for d in range(2):
            if pos[d] < lo[d]:
                pos[d] = 2 * lo[d] - pos[d]
                vel[d] = abs(vel[d])
            elif pos[d] > hi[d]:
                pos[d] = 2 * hi[d] - pos[d]
                vel[d] = -abs(vel[d])
            pos[d] = min(max(pos[d], lo[d]), hi[d])
    return out


def render_sprite(frame: np.ndarray, sp: Sprite, i: int, *, blur: Optional[Sequence[np.ndarray]] = None
            ) -> Tuple[int, int, np.ndarray]:
    """Alpha-composite sprite ``sp`` at frame ``i`` into ``frame`` (float32, in place). ``blur``:
    extra centre offsets (motion blur: the average of the renders at those offsets). Returns
    ``(y_lo, x_lo, alpha)``: the alpha of the unblurred render on the frame region starting at
    ``(y_lo, x_lo)`` (empty when the sprite is outside the frame)."""
    H, W = frame.shape[:2]
    ph, pw = sp.alpha.shape
    s, a = float(sp.scales[i]), float(sp.angles[i])
    cx, cy = (float(v) for v in sp.centers[i])
    offsets = [np.zeros(2)] if blur is None else list(blur)
    half = 0.5 * math.hypot(ph, pw) * s + 2
    ext = max((float(np.abs(o).max()) for o in offsets), default=0.0)
    x_lo, x_hi = max(int(math.floor(cx - half - ext)), 0), min(int(math.ceil(cx + half + ext)) + 1, W)
    y_lo, y_hi = max(int(math.floor(cy - half - ext)), 0), min(int(math.ceil(cy + half + ext)) + 1, H)
    if x_lo >= x_hi or y_lo >= y_hi:
        return 0, 0, np.zeros((0, 0), np.float32)
    Y, X = np.meshgrid(np.arange(y_lo, y_hi) + 0.5, np.arange(x_lo, x_hi) + 0.5, indexing="ij")
    ca, sa = math.cos(a), math.sin(a)
    acc_rgb = np.zeros((y_hi - y_lo, x_hi - x_lo, 3), np.float32)
    acc_a = np.zeros((y_hi - y_lo, x_hi - x_lo), np.float32)
    first_alpha = None
    for off in offsets:
        dx, dy = X - (cx + off[0]), Y - (cy + off[1])
        u = (ca * dx + sa * dy) / s + pw / 2 - 0.5  # patch column (pixel centres at integers)
        v = (-sa * dx + ca * dy) / s + ph / 2 - 0.5
        inside = (u > -1) & (u < pw) & (v > -1) & (v < ph)
        alpha = _bilinear(sp.alpha[:, :, None], v, u)[..., 0] * inside
        rgb = _bilinear(sp.rgb, v, u) * float(sp.gains[i])
        acc_rgb += rgb * alpha[..., None]
        acc_a += alpha
        if first_alpha is None:
            first_alpha = alpha
    n = float(len(offsets))
    alpha = acc_a / n
    region = frame[y_lo:y_hi, x_lo:x_hi]
    region *= 1 - alpha[..., None]
    region += acc_rgb / n
    return y_lo, x_lo, first_alpha


def _box_from_mask(y_lo: int, x_lo: int, mask: np.ndarray) -> Tuple[List[float], int]:
    on = mask >= 0.5
    rows = np.flatnonzero(on.any(axis=1))
    cols = np.flatnonzero(on.any(axis=0))
    if rows.size == 0:
        return [math.nan] * 4, 0
    y0, y1, x0, x1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    return [float(x0 + x_lo), float(y0 + y_lo), float(x1 - x0), float(y1 - y0)], int(on.sum())


def _covered(target: Tuple[int, int, np.ndarray], cover: Tuple[int, int, np.ndarray]) -> float:
    """Fraction of the target's mask pixels (alpha >= 0.5) under the cover's mask (alpha >= 0.5)."""
    ty, tx, tm = target
    cy, cx, cm = cover
    on = tm >= 0.5
    total = int(on.sum())
    if total == 0 or cm.size == 0:
        return 0.0
    y0, y1 = max(ty, cy), min(ty + tm.shape[0], cy + cm.shape[0])
    x0, x1 = max(tx, cx), min(tx + tm.shape[1], cx + cm.shape[1])
    if y0 >= y1 or x0 >= x1:
        return 0.0
    a = on[y0 - ty:y1 - ty, x0 - tx:x1 - tx]
    b = cm[y0 - cy:y1 - cy, x0 - cx:x1 - cx] >= 0.5
    return float((a & b).sum()) / total


# ---------------------------------------------------------------------------------------------
# sequences
# ---------------------------------------------------------------------------------------------


def _check_int(v, name: str, lo: int) -> int:
    if isinstance(v, bool) or not isinstance(v, numbers.Integral) or int(v) < lo:
        raise ConfigError(f"{name} must be an integer >= {lo}, got {v!r}")
    return int(v)


def generate_sequence(seed: int, split: str = "train", num_frames: int = 60,
                      frame_size: Tuple[int, int] = (240, 320), *, difficulty: float = 1.0) -> SyntheticSequence:
    """Generate sequence ``seed`` of ``split`` (``"train"`` or ``"heldout"``): ``num_frames``
    frames of ``frame_size = (height, width)`` (at least 96 x 96). ``difficulty`` (0..1) scales
    speed, rotation, scale change, distractors, occlusion and noise (1 = the full mix). Deterministic
    in ``(split, seed, num_frames, frame_size, difficulty)``."""
    if split not in SPLIT_IMAGES:
        raise ConfigError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    seed = _check_int(seed, "seed", 0)
    n = _check_int(num_frames, "num_frames", 1)
    if (not isinstance(frame_size, (tuple, list)) or len(frame_size) != 2
            or any(isinstance(v, bool) or not isinstance(v, numbers.Integral) for v in frame_size)):
        raise ConfigError(f"frame_size must be (height, width) integers, got {frame_size!r}")
    H, W = int(frame_size[0]), int(frame_size[1])
    if H < 96 or W < 96:
        raise ConfigError(f"frame_size must be at least 96 x 96, got {H} x {W}")
    if isinstance(difficulty, bool) or not isinstance(difficulty, numbers.Real) or not 0.0 <= float(difficulty) <= 1.0:
        raise ConfigError(f"difficulty must be a number in [0, 1], got {difficulty!r}")
    diff = float(difficulty)
    rng = np.random.default_rng(np.random.SeedSequence([_SPLIT_ID[split], seed]))
    names = SPLIT_IMAGES[split]

    # background: a crop of one photograph, larger than the frame, panned by the camera
    bg_name = str(rng.choice(names))
    bg_img = tinted(photo(bg_name), bg_name, rng)
    M = 24
    pan = np.stack([_smooth_noise(rng, n), _smooth_noise(rng, n)], axis=1) * M * 0.8 * diff
    BH, BW = bg_img.shape[:2]
    zoom = rng.uniform(0.5, 1.3)
    region_h = min(BH, (H + 2 * M) * zoom)
    region_w = min(BW, region_h * (W + 2 * M) / (H + 2 * M))
    region_h = region_w * (H + 2 * M) / (W + 2 * M)
    by, bx = rng.uniform(0, BH - region_h), rng.uniform(0, BW - region_w)
    canvas = resample_patch(bg_img, by, bx, region_h, region_w, H + 2 * M, W + 2 * M)
    if rng.random() < 0.3:  # a smoother (defocused) background now and then
        from scipy.ndimage import gaussian_filter
        canvas = gaussian_filter(canvas, sigma=(1.5, 1.5, 0))

    # target
    tg_name = str(rng.choice([m for m in names if m != bg_name] if rng.random() < 0.85 else names))
    tg_img = tinted(photo(tg_name), tg_name, rng)
    aspect = float(np.exp(rng.uniform(-0.45, 0.45)))
    src_side = rng.uniform(50, 170)
    rgb, tg_src_center = cut_patch(rng, tg_img, src_side, aspect)
    alpha = sprite_mask(rng, *rgb.shape[:2])
    base = rng.uniform(24, 50) * math.sqrt(H * W / (240 * 320))  # sqrt(w h) of the target in the frame
    ph, pw = alpha.shape
    s0 = base / math.sqrt(ph * pw)
    scales = s0 * np.exp(0.28 * diff * _smooth_noise(rng, n) + rng.uniform(-0.1, 0.1) * diff)
    angles = math.radians(22) * diff * _smooth_noise(rng, n) * (rng.random() < 0.7)
    gains = 1.0 + 0.18 * diff * _smooth_noise(rng, n)
    speed = rng.uniform(0.5, 1.0 + 6.0 * diff)
    margin = 0.5 * base * 1.3
    centers = _trajectory(rng, n, H, W, margin, speed)
    target = Sprite(rgb, alpha, centers, scales, angles, gains)

    # distractors (behind the target); the first is often cut from the target's own photograph
    sprites: List[Sprite] = []
    n_distractors = int(rng.integers(0, 1 + round(3 * diff))) if diff > 0 else 0
    for k in range(n_distractors):
        same = k == 0 and rng.random() < 0.6
        d_name = tg_name if same else str(rng.choice(names))
        d_img = tg_img if same else tinted(photo(d_name), d_name, rng)
        d_rgb, _ = cut_patch(rng, d_img, src_side * rng.uniform(0.8, 1.25), aspect * float(np.exp(rng.uniform(-0.2, 0.2))),
                              near=tg_src_center if same else None)
        d_alpha = sprite_mask(rng, *d_rgb.shape[:2])
        d_s = s0 * math.sqrt(ph * pw / (d_alpha.shape[0] * d_alpha.shape[1])) * rng.uniform(0.8, 1.2)
        d_scales = d_s * np.exp(0.2 * diff * _smooth_noise(rng, n))
        sprites.append(Sprite(d_rgb, d_alpha, _trajectory(rng, n, H, W, margin, rng.uniform(0.5, 1.0 + 5 * diff)),
                               d_scales, math.radians(20) * diff * _smooth_noise(rng, n),
                               1.0 + 0.15 * diff * _smooth_noise(rng, n)))

    # occluder (in front): crosses the target's path around frame t_mid
    occluder: Optional[Sprite] = None
    if n >= 8 and rng.random() < 0.6 * diff:
        o_name = str(rng.choice(names))
        o_img = tinted(photo(o_name), o_name, rng)
        o_rgb, _ = cut_patch(rng, o_img, rng.uniform(40, 120), float(np.exp(rng.uniform(-0.8, 0.8))))
        o_alpha = sprite_mask(rng, *o_rgb.shape[:2], shape=str(rng.choice(["rect", "ellipse"])))
        o_s = base * rng.uniform(0.45, 0.9) / math.sqrt(o_alpha.size)
        t_mid = int(rng.integers(n // 4, max(n // 4 + 1, 3 * n // 4)))
        ang = rng.uniform(0, 2 * math.pi)
        o_speed = rng.uniform(1.5, 4.0)
        u = o_speed * np.array([math.cos(ang), math.sin(ang)])
        side_shift = rng.uniform(-0.4, 0.4) * base * np.array([-math.sin(ang), math.cos(ang)])
        t = np.arange(n) - t_mid
        o_centers = centers[t_mid] + side_shift + t[:, None] * u[None, :]
        occluder = Sprite(o_rgb, o_alpha, o_centers, np.full(n, o_s), np.zeros(n), np.ones(n))

    blur_p = 0.35 * diff
    noise_sigma = rng.uniform(0.0, 5.0 * diff)
    frames = np.empty((n, H, W, 3), np.uint8)
    boxes = np.empty((n, 4), np.float64)
    visible = np.ones(n, np.float64)
    blur_frames = rng.random(n) < blur_p
    for i in range(n):
        ox = min(max(int(round(M + pan[i, 0])), 0), 2 * M)
        oy = min(max(int(round(M + pan[i, 1])), 0), 2 * M)
        frame = canvas[oy:oy + H, ox:ox + W].copy()
        for sp in sprites:
            render_sprite(frame, sp, i)
        blur = None
        if blur_frames[i] and i > 0:
            vel = centers[i] - centers[i - 1]
            blur = [vel * f for f in np.linspace(-0.75, 0.0, 4)]
        t_mask = render_sprite(frame, target, i, blur=blur)
        box, area = _box_from_mask(*t_mask)
        if area == 0:  # cannot happen with the margins above; kept as a guard
            raise RuntimeError(f"synthetic sequence {split}/{seed}: target left the frame at {i}")
        if occluder is not None:
            visible[i] = 1.0 - _covered(t_mask, render_sprite(frame, occluder, i))
        if noise_sigma > 0:
            frame += np.float32(noise_sigma) * rng.standard_normal(size=frame.shape, dtype=np.float32)
        frames[i] = np.clip(np.rint(frame), 0, 255).astype(np.uint8)
        boxes[i] = box
    info = dict(background=bg_name, target=tg_name, distractors=n_distractors, occluder=occluder is not None,
                speed=float(speed), difficulty=diff, frame_size=(H, W))
    return SyntheticSequence(frames=frames, boxes=boxes, visible=visible, split=split, seed=seed, info=info)


def generate_sequences(seeds: Sequence[int], split: str = "train", **kwargs) -> List[SyntheticSequence]:
    """:func:`generate_sequence` for each seed in ``seeds``."""
    return [generate_sequence(int(s), split, **kwargs) for s in seeds]


def demo_clip(num_frames: int = 60, seed: int = 0, frame_size: Tuple[int, int] = (240, 320)):
    """A deterministic test clip for the bundled tracker: held-out synthetic sequence ``seed``
    (photographs never used in training; :mod:`spikedeploy.tracking.synth`). Returns
    ``(frames uint8 [N, H, W, 3] RGB, boxes float64 [N, 4] x, y, w, h)``; ``boxes[0]`` is the
    initial box."""
    seq = generate_sequence(seed, "heldout", num_frames, frame_size)
    return seq.frames, seq.boxes
