"""Generated video clips for motion classification, and a simple clip-folder layout.

A clip shows one object -- a cut-out of a real photograph with an elliptical, rounded or
rectangular alpha mask -- in front of a static photographic background, moving in one of the
:data:`MOTIONS` over the clip's T frames:

==========  =================================================================================
``left``    translation to the left, a total travel of 25-45 % of the frame side
``right``   translation to the right (same travel)
``up``      translation upwards
``down``    translation downwards
``rotate``  in-plane rotation about the object's centre by 60-120 degrees, either sense
``zoom``    scale change by a factor e^0.45 - e^0.8, growing or shrinking
==========  =================================================================================

The total motion does not depend on T (8 frames move by the same amount as 16, in bigger
steps). A single frame cannot tell the classes apart: the class is in the motion.

The photographs are scikit-image's sample images through :mod:`spikedeploy.tracking.synth`
(its photograph, cut-out, mask and rendering helpers are reused here): split ``"train"`` uses
the tracking ``train`` photographs and ``"test"`` the held-out ones -- the two sets are
disjoint, for objects and backgrounds alike, so the test clips show image content never seen in
training. Clip ``index`` of ``(split, seed)`` is drawn from its own
``numpy.random.SeedSequence([split id, seed, index])``: deterministic, and independent of how many
clips are generated. Its label is ``index % len(MOTIONS)``, so any ``count`` consecutive clips are
balanced (class counts differ by at most one).

Clip folder layout (:func:`write_clips`, :func:`read_clips`)::

    DIR/labels.csv           header "file,label,class"; one row per clip, in order
    DIR/clip_00000.npy       uint8 [T, H, W, 3] RGB (format "npy", the default), or
    DIR/clip_00000/000.png   one PNG per frame (format "png")
    DIR/info.json            how the clips were generated (informative, not read back)

:func:`read_clips` also takes a single clip (a ``.npy`` file, a multi-frame GIF/TIFF/APNG, or a
folder of frame images) and a folder of clips without ``labels.csv`` (then the labels are
unknown). :func:`clip_tensor` turns clips into the network input ``[T, B, 3, H, W]`` in one of the
model's input encodings (:data:`~spikedeploy.models.spikevideoformer.INPUT_ENCODINGS`):

* ``rgb``: ``(pixel / 255 - INPUT_MEAN) / INPUT_STD`` per colour channel;
* ``luma-events``: with ``L_t = (0.299 R + 0.587 G + 0.114 B) / 255`` of frame t, channel 0 is
  ``(L_t - LUMA_MEAN) / LUMA_STD``, channels 1 and 2 the ON and OFF temporal contrast
  ``EVENT_GAIN max(+-(L_t - L_{t-1}), 0) / LUMA_STD`` (zero at the first frame): what an event
  camera's two polarities count, so a frame shows where and which way the image changed.
"""

from __future__ import annotations

import csv
import io
import json
import math
import numbers
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from spikedeploy.errors import ConfigError, InputError
from spikedeploy.tracking.synth import SPLIT_IMAGES, cut_patch, sprite_mask, render_sprite, resample_patch, Sprite, tinted, photo

__all__ = [
    "MOTIONS",
    "SPLITS",
    "SPLIT_PHOTOS",
    "LABELS_FILE",
    "INPUT_MEAN",
    "INPUT_STD",
    "LUMA_WEIGHTS",
    "LUMA_MEAN",
    "LUMA_STD",
    "EVENT_GAIN",
    "VideoClip",
    "ClipRecord",
    "generate_clip",
    "generate_clips",
    "write_clips",
    "read_clips",
    "clip_tensor",
]

PathLike = Union[str, os.PathLike]

#: the motion classes; label k is ``MOTIONS[k]``
MOTIONS: Tuple[str, ...] = ("left", "right", "up", "down", "rotate", "zoom")
#: photographs of each split (``skimage.data`` names, from :data:`spikedeploy.tracking.synth.SPLIT_IMAGES`)
SPLIT_PHOTOS: Dict[str, Tuple[str, ...]] = {"train": SPLIT_IMAGES["train"], "test": SPLIT_IMAGES["heldout"]}
SPLITS: Tuple[str, ...] = tuple(SPLIT_PHOTOS)
#: seed-sequence ids of the splits (distinct from the tracking sequences' ids 1 and 2)
_SPLIT_ID = {"train": 17_1, "test": 17_2}
LABELS_FILE = "labels.csv"
INFO_FILE = "info.json"
#: the network input is ``(pixel / 255 - INPUT_MEAN) / INPUT_STD`` (about -2 .. 2)
INPUT_MEAN = 0.5
INPUT_STD = 0.25
#: ``luma-events``: luminance weights (ITU-R BT.601), its normalization, and the gain of the contrast channels
LUMA_WEIGHTS = (0.299, 0.587, 0.114)
LUMA_MEAN = 0.45
LUMA_STD = 0.25
EVENT_GAIN = 4.0
#: the smallest frame side a clip can be rendered at
MIN_SIZE = 16


@dataclass(frozen=True, eq=False)
class VideoClip:
    """One generated clip: ``frames`` uint8 ``[T, H, W, 3]`` (RGB, read-only), its ``label`` (index
    into :data:`MOTIONS`), and where it came from (``split``, ``seed``, ``index``, ``info``: the
    photographs and motion parameters)."""

    frames: np.ndarray
    label: int
    split: str
    seed: int
    index: int
    info: Dict[str, object] = field(default_factory=dict)

    @property
    def motion(self) -> str:
        return MOTIONS[self.label]

    @property
    def name(self) -> str:
        return f"clip_{self.index:05d}"


@dataclass(frozen=True, eq=False)
class ClipRecord:
    """A clip read back by :func:`read_clips`: ``name`` (file or folder name), ``frames`` uint8
    ``[T, H, W, 3]``, ``label`` (int, or None when the folder has no labels) and ``class_name``
    (from the labels file's ``class`` column, or None)."""

    name: str
    frames: np.ndarray
    label: Optional[int] = None
    class_name: Optional[str] = None


# ---------------------------------------------------------------------------------------------
# generation
# ---------------------------------------------------------------------------------------------


def _check_int(v, name: str, lo: int) -> int:
    if isinstance(v, bool) or not isinstance(v, numbers.Integral) or int(v) < lo:
        raise ConfigError(f"{name} must be an integer >= {lo}, got {v!r}")
    return int(v)


def _check_split(split: str) -> str:
    if split not in SPLIT_PHOTOS:
        raise ConfigError(f"unknown clip split {split!r}; expected one of {', '.join(SPLITS)}")
    return split


def _motion_path(rng: np.random.Generator, motion: str, n: int, size: int, base: float):
    """Centres ``[n, 2]`` (cx, cy), scale factors ``[n]`` and angles ``[n]`` (radians) of ``motion``."""
    t = np.linspace(0.0, 1.0, n) if n > 1 else np.zeros(1)
    centre = size / 2 + rng.uniform(-0.08, 0.08, size=2) * size
    scales = np.ones(n)
    angles = np.full(n, rng.uniform(-0.3, 0.3))  # a random fixed orientation
    centers = np.repeat(centre[None, :], n, axis=0)
    params: Dict[str, object] = {}
    if motion in ("left", "right", "up", "down"):
        travel = rng.uniform(0.25, 0.45) * size
        axis = 0 if motion in ("left", "right") else 1
        sign = -1.0 if motion in ("left", "up") else 1.0  # image y grows downwards
        centers[:, axis] = centre[axis] + sign * travel * (t - 0.5)
        params = dict(travel=float(travel))
    elif motion == "rotate":
        turn = math.radians(rng.uniform(60.0, 120.0)) * (1.0 if rng.random() < 0.5 else -1.0)
        angles = angles + turn * t
        params = dict(turn_degrees=float(math.degrees(turn)))
    elif motion == "zoom":
        log_factor = rng.uniform(0.45, 0.8) * (1.0 if rng.random() < 0.5 else -1.0)
        scales = np.exp(log_factor * (t - 0.5))
        params = dict(zoom_factor=float(math.exp(log_factor)))
    else:  # pragma: no cover - MOTIONS is fixed
        raise ConfigError(f"unknown motion {motion!r}")
    return centers, scales, angles, params


def generate_clip(index: int, split: str = "train", *, seed: int = 0, frames: int = 8, size: int = 64,
                  label: Optional[int] = None) -> VideoClip:
    """Clip ``index`` of ``(split, seed)``: ``frames`` frames of ``size x size`` pixels showing
    motion ``MOTIONS[label]`` (default ``label = index % len(MOTIONS)``). Deterministic in
    ``(split, seed, index, frames, size, label)`` (module docstring)."""
    split = _check_split(split)
    index = _check_int(index, "clip index", 0)
    seed = _check_int(seed, "seed", 0)
    n = _check_int(frames, "frames", 1)
    size = _check_int(size, "size", MIN_SIZE)
    if label is None:
        label = index % len(MOTIONS)
    label = _check_int(label, "label", 0)
    if label >= len(MOTIONS):
        raise ConfigError(f"label must be below {len(MOTIONS)} (classes {', '.join(MOTIONS)}), got {label}")
    motion = MOTIONS[label]
    rng = np.random.default_rng(np.random.SeedSequence([_SPLIT_ID[split], seed, index]))
    names = SPLIT_PHOTOS[split]

    # background: a crop of one photograph (static camera)
    bg_name = str(rng.choice(names))
    bg_img = tinted(photo(bg_name), bg_name, rng)
    BH, BW = bg_img.shape[:2]
    side = rng.uniform(0.35, 0.9) * min(BH, BW)
    by, bx = rng.uniform(0, BH - side), rng.uniform(0, BW - side)
    background = resample_patch(bg_img, by, bx, side, side, size, size)

    # object: a cut-out of another photograph
    ob_name = str(rng.choice([m for m in names if m != bg_name]))
    ob_img = tinted(photo(ob_name), ob_name, rng)
    aspect = float(np.exp(rng.uniform(-0.4, 0.4)))
    rgb, _ = cut_patch(rng, ob_img, rng.uniform(60, 180), aspect)
    shape = str(rng.choice(["ellipse", "rounded", "rect"], p=[0.3, 0.4, 0.3]))
    alpha = sprite_mask(rng, *rgb.shape[:2], shape=shape)
    base = rng.uniform(0.32, 0.45) * size  # sqrt(w h) of the object in the frame
    ph, pw = alpha.shape
    centers, scale_path, angles, params = _motion_path(rng, motion, n, size, base)
    scales = base / math.sqrt(ph * pw) * scale_path
    gain = float(rng.uniform(0.85, 1.15))
    sprite = Sprite(rgb, alpha, centers, scales, angles, np.full(n, gain))

    noise_sigma = float(rng.uniform(0.0, 4.0))
    out = np.empty((n, size, size, 3), np.uint8)
    for i in range(n):
        frame = background.copy()
        render_sprite(frame, sprite, i)
        if noise_sigma > 0:
            frame += np.float32(noise_sigma) * rng.standard_normal(size=frame.shape, dtype=np.float32)
        out[i] = np.clip(np.rint(frame), 0, 255).astype(np.uint8)
    out.setflags(write=False)
    info = dict(background=bg_name, object=ob_name, mask=shape, motion=motion, frames=n, size=size,
                noise_sigma=noise_sigma, **params)
    return VideoClip(frames=out, label=label, split=split, seed=seed, index=index, info=info)


def generate_clips(count: int, split: str = "train", *, seed: int = 0, frames: int = 8, size: int = 64,
                   first: int = 0) -> List[VideoClip]:
    """Clips ``first .. first + count - 1`` of ``(split, seed)`` (:func:`generate_clip`); labels cycle
    through :data:`MOTIONS`, so the class counts differ by at most one."""
    count = _check_int(count, "count", 1)
    first = _check_int(first, "first", 0)
    return [generate_clip(first + i, split, seed=seed, frames=frames, size=size) for i in range(count)]


# ---------------------------------------------------------------------------------------------
# the network input
# ---------------------------------------------------------------------------------------------


def clip_tensor(clips: Sequence[Union[np.ndarray, VideoClip, ClipRecord]], encoding: str = "rgb"):
    """The network input of one batch as a float32 tensor ``[T, B, 3, H, W]`` (time first), from
    clips (``VideoClip``, ``ClipRecord`` or uint8 arrays ``[T, H, W, 3]``) that all have the same
    T, H and W, in the input ``encoding`` (module docstring: ``rgb`` or ``luma-events``)."""
    import torch

    from spikedeploy.models.spikevideoformer import INPUT_ENCODINGS

    if encoding not in INPUT_ENCODINGS:
        raise ConfigError(f"clip_tensor: encoding must be one of {INPUT_ENCODINGS}, got {encoding!r}")

    arrays = [c.frames if isinstance(c, (VideoClip, ClipRecord)) else np.asarray(c) for c in clips]
    if not arrays:
        raise InputError("clip_tensor: no clips given")
    for k, a in enumerate(arrays):
        if a.dtype != np.uint8 or a.ndim != 4 or a.shape[-1] != 3:
            raise InputError(f"clip {k}: expected uint8 frames [T, H, W, 3], got {a.dtype} {list(a.shape)}")
        if a.shape != arrays[0].shape:
            raise InputError(f"clip {k} has shape {list(a.shape)} but clip 0 has {list(arrays[0].shape)}; "
                             "a batch needs clips of one length and frame size")
    x = np.stack(arrays, axis=1).astype(np.float32) / np.float32(255.0)  # [T, B, H, W, 3]
    if encoding == "rgb":
        x = (x - np.float32(INPUT_MEAN)) / np.float32(INPUT_STD)
        return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 1, 4, 2, 3)))
    luma = x @ np.asarray(LUMA_WEIGHTS, np.float32)  # [T, B, H, W]
    change = np.zeros_like(luma)
    change[1:] = luma[1:] - luma[:-1]
    gain = np.float32(EVENT_GAIN / LUMA_STD)
    out = np.stack([(luma - np.float32(LUMA_MEAN)) / np.float32(LUMA_STD), np.maximum(change, 0) * gain,
                    np.maximum(-change, 0) * gain], axis=2)
    return torch.from_numpy(np.ascontiguousarray(out))


# ---------------------------------------------------------------------------------------------
# the clip folder
# ---------------------------------------------------------------------------------------------


FORMATS = ("npy", "png")


def _png_bytes(frame: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(frame, mode="RGB").save(buf, format="PNG")
    return buf.getvalue()


def write_clips(path: PathLike, clips: Sequence[VideoClip], *, format: str = "npy", overwrite: bool = False,
                info: Optional[Dict[str, object]] = None) -> Path:
    """Write ``clips`` into the folder ``path`` (module docstring's layout; ``format`` "npy" or
    "png"). The folder is written atomically (:func:`spikedeploy.fsutil.atomic_directory`): a folder
    holding files spikedeploy did not write is refused unless ``overwrite``, and never emptied.
    ``info``: extra entries for ``info.json``. Returns the folder."""
    from spikedeploy.fsutil import atomic_directory

    if format not in FORMATS:
        raise ConfigError(f"unknown clip format {format!r}; expected one of {', '.join(FORMATS)}")
    clips = list(clips)
    if not clips:
        raise ConfigError("write_clips: no clips to write")
    names = [c.name for c in clips]
    if len(set(names)) != len(names):
        raise ConfigError("write_clips: two clips have the same index; give clips of distinct indices")
    path = Path(path)
    with atomic_directory(path, overwrite=overwrite) as tmp:
        rows = io.StringIO()
        writer = csv.writer(rows, lineterminator="\n")
        writer.writerow(["file", "label", "class"])
        for c in clips:
            if format == "npy":
                rel = f"{c.name}.npy"
                np.save(tmp / rel, np.ascontiguousarray(c.frames), allow_pickle=False)
            else:
                rel = c.name
                (tmp / rel).mkdir()
                for i, frame in enumerate(c.frames):
                    (tmp / rel / f"{i:03d}.png").write_bytes(_png_bytes(frame))
            writer.writerow([rel, c.label, c.motion])
        (tmp / LABELS_FILE).write_text(rows.getvalue(), encoding="utf-8")
        meta = dict(classes=list(MOTIONS), count=len(clips), format=format,
                    splits=sorted({c.split for c in clips}), seeds=sorted({c.seed for c in clips}),
                    frames=sorted({int(c.frames.shape[0]) for c in clips}),
                    size=sorted({int(c.frames.shape[1]) for c in clips}),
                    clips=[dict(file=f"{c.name}{'.npy' if format == 'npy' else ''}", index=c.index, split=c.split,
                                seed=c.seed, **c.info) for c in clips])
        meta.update(info or {})
        (tmp / INFO_FILE).write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    return path


def _load_clip(path: Path) -> np.ndarray:
    from spikedeploy.tracking.run import load_frames

    frames = load_frames(path)
    frames.setflags(write=False)
    return frames


def _read_labels(folder: Path) -> List[ClipRecord]:
    where = folder / LABELS_FILE
    try:
        text = where.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"labels file {where} cannot be read: {getattr(e, 'strerror', None) or e}") from None
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if header is None or [h.strip() for h in header[:2]] != ["file", "label"]:
        raise InputError(f"labels file {where}: the first line must be the header 'file,label' (or "
                         "'file,label,class'), one clip per following line")
    has_class = len(header) >= 3 and header[2].strip() == "class"
    records, seen = [], set()
    root = folder.resolve()
    for lineno, row in enumerate(reader, start=2):
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) < 2:
            raise InputError(f"labels file {where}, line {lineno}: expected 'file,label{',class' if has_class else ''}', "
                             f"got {','.join(row)!r}")
        rel, label_text = row[0].strip(), row[1].strip()
        try:
            label = int(label_text)
        except ValueError:
            label = -1
        if label < 0:
            raise InputError(f"labels file {where}, line {lineno}: the label must be an integer >= 0, got {label_text!r}")
        clip_path = (folder / rel)
        if not rel or os.path.isabs(rel) or root not in (clip_path.resolve(), *clip_path.resolve().parents):
            raise InputError(f"labels file {where}, line {lineno}: {rel!r} is not a clip inside {folder}")
        if rel in seen:
            raise InputError(f"labels file {where}, line {lineno}: clip {rel!r} is listed twice")
        seen.add(rel)
        class_name = row[2].strip() if has_class and len(row) > 2 and row[2].strip() else None
        records.append(ClipRecord(name=rel, frames=_load_clip(clip_path), label=label, class_name=class_name))
    if not records:
        raise InputError(f"labels file {where} lists no clips")
    names: Dict[int, str] = {}
    for r in records:
        if r.class_name is not None and names.setdefault(r.label, r.class_name) != r.class_name:
            raise InputError(f"labels file {where}: label {r.label} is called both {names[r.label]!r} and "
                             f"{r.class_name!r}")
    return records


_FRAME_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")


def read_clips(path: PathLike) -> List[ClipRecord]:
    """The clips at ``path``: a folder with ``labels.csv`` (the clips it lists, in order, with their
    labels); a folder of clips without it (every ``.npy`` file and every sub-folder of frames,
    sorted by name; labels None); a folder of frame images (one clip); or one clip file (``.npy``
    ``[T, H, W, 3]`` uint8 or a multi-frame GIF/TIFF/APNG). Errors are :class:`InputError` naming
    the file."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"clip path {path} does not exist; give a clip file or a clip folder")
    if path.is_file():
        return [ClipRecord(name=path.name, frames=_load_clip(path))]
    if (path / LABELS_FILE).is_file():
        return _read_labels(path)
    try:
        entries = sorted(p for p in path.iterdir() if not p.name.startswith("."))
    except OSError as e:
        raise InputError(f"clip folder {path} cannot be read: {e.strerror or e}") from None
    if any(p.is_file() and p.suffix.lower() in _FRAME_SUFFIXES for p in entries):
        return [ClipRecord(name=path.name, frames=_load_clip(path))]
    clips = [p for p in entries if (p.is_file() and p.suffix.lower() == ".npy") or p.is_dir()]
    if not clips:
        raise InputError(f"clip folder {path} holds no clips (.npy files, folders of frames or a {LABELS_FILE})")
    return [ClipRecord(name=p.name, frames=_load_clip(p)) for p in clips]
