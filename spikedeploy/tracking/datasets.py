"""Tracking benchmarks in their official layouts, results files in each toolkit's own layout, and
a generated benchmark (``make-dataset``).

**Datasets** (:func:`read_dataset`; ``format`` one of :data:`FORMATS` or ``"auto"``). Boxes are
``[x, y, w, h]`` in pixels, one row per frame, the first row the initial box. Reading is lazy about
pixels: the frame files are listed and the annotation files parsed; pixels are decoded only by
:meth:`TrackingSequence.load_frames` (a LaSOT of 1,400 sequences has 3.5 million frames).

- ``otb`` (OTB-50/100, the layout of got10k's ``datasets.OTB``): ``root/Seq/img/*.jpg`` (or
  ``.png``) and ``root/Seq/groundtruth*.txt``, one box per line, fields separated by commas, tabs
  or spaces (all three occur in OTB100). A folder with several ground-truth files (``Jogging``,
  ``Skating2``: ``groundtruth_rect.1.txt``, ``.2.txt``) holds one sequence per target, named
  ``Jogging.1``, ``Jogging.2`` as got10k names them; empty ground-truth files are skipped
  (``Human4``'s ``groundtruth_rect.1.txt``). The frame-range exceptions of OTB100 are applied as
  got10k 0.1.2 applies them, to the sorted frame files (:data:`OTB_FRAME_RANGES`: ``David``
  300..770, ``Football1`` 1..74, ``Freeman3`` 1..460, ``Freeman4`` 1..283, ``Diving`` 1..215,
  1-based, inclusive). Every sub-folder holding ground truth or an ``img`` folder is a sequence
  (not only OTB's official names, unlike got10k, so generated and custom sets read too).
  *Not* applied: pytracking's ``initOmit`` of ``Tiger1`` (its first 5 frames dropped); got10k
  scores all 354 frames, and so do we.
- ``lasot``: ``root/class/class-N/img/*.jpg`` + ``groundtruth.txt`` (comma-separated) and the
  one-line comma-separated 0/1 files ``full_occlusion.txt`` and ``out_of_view.txt``; ``absent`` is
  their logical or (either file alone is used if only one exists; neither: ``absent`` is None).
  ``root/testing_set.txt`` (one ``class-N`` per line), when present, lists the sequences read;
  otherwise every ``class/class-N`` folder is read, sorted by class and then by N.
- ``got10k``: ``root/list.txt`` (sequence folder names, one a line) and ``root/seq/*.jpg`` +
  ``groundtruth.txt`` (one box per frame, or in the test split one line: the initial box only, so
  ``ground_truth`` is ``[1, 4]``). ``root`` may be the split folder or a folder holding exactly one
  of ``train``/``val``/``test`` with a ``list.txt``. Optional per sequence: ``cover.label`` (0..8,
  the visible eighths) and ``absence.label`` (0/1): ``absent`` is ``cover == 0`` when
  ``cover.label`` exists (got10k's report scores only frames with ``cover > 0``), else
  ``absence == 1``; ``meta_info.ini`` (``key: value`` lines under ``[METAINFO]``) fills ``meta``.

**Counts.** The ground truth must have exactly one row per frame (after OTB's frame ranges), as
got10k asserts for OTB and GOT-10k; the only exception is GOT-10k's one-line test ground truth.
More rows than frames is an error too (frames are missing). Rows may be NaN or have a size <= 0
(an absent or invalid target: the metrics decide what such a frame scores), never +-Inf.

**Attributes** (per-attribute scores): :attr:`TrackingSequence.attributes`, a tuple of labels.
Our convention for every format: an optional ``attributes.txt`` in the sequence folder (the
``Seq`` folder for OTB, shared by its targets; ``class-N`` for LaSOT; the sequence folder for
GOT-10k), one code per line, e.g. OTB's codes (:data:`OTB_ATTRIBUTES`: IV SV OCC DEF MB FM IPR OPR
OV BC LR) or LaSOT's (:data:`LASOT_ATTRIBUTES`); a code is letters, digits, ``_`` or ``-``.
GOT-10k adds its ``meta_info.ini`` classes as ``key=value`` labels (:data:`GOT10K_META_ATTRIBUTES`,
e.g. ``object_class=ant``, ``motion_class=running``).

**Results files** (:func:`write_sequence_results`, :func:`read_sequence_results`), the paths the
toolkits read (got10k's ``ExperimentOTB``/``ExperimentLaSOT``/``ExperimentGOT10k.report``):

- ``otb``, ``lasot``: ``results_dir/<tracker>/<Seq>.txt`` (``x,y,w,h`` per frame, comma-separated,
  the first row the initial box) and ``results_dir/<tracker>/times/<Seq>_time.txt`` (seconds per
  frame, one value a line);
- ``got10k``: ``results_dir/<tracker>/<seq>/<seq>_001.txt`` (repetition 1; got10k's report reads
  every ``<seq>_[0-9]*.txt``) and ``results_dir/<tracker>/<seq>/<seq>_time.txt``.

got10k's experiments join their own sub-folder (``OTB2015``, ``LaSOT``, ``GOT-10k``) to their
``result_dir``: give the toolkit ``result_dir=X`` with ``results_dir = X/OTB2015``, or set the
experiment's ``result_dir`` attribute to ``results_dir``. Values are written in Python's shortest
round-trip form (``repr``), so reading a file back gives the written float64 values exactly (got10k
writes ``%.3f``). Each file is written atomically (a temporary file in the same folder, fsync,
``os.replace``: :func:`spikedeploy.fsutil.atomic_write_bytes`), the times first and the boxes
last, so a killed process leaves either the previous file or the new one, never a partial file,
and a boxes file means the sequence finished (the toolkits' own resume test).

**Generated benchmark** (:func:`make_dataset`): the synthetic sequences of
:mod:`spikedeploy.tracking.synth` (held-out photographs by default) in any of the three layouts,
with ``attributes.txt`` derived from the ground truth (:func:`synthetic_attributes`).
"""

from __future__ import annotations

import io
import math
import numbers
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from spikedeploy.errors import ConfigError, InputError
from spikedeploy.fsutil import atomic_write_bytes

__all__ = [
    "FORMATS",
    "IMAGE_SUFFIXES",
    "OTB_FRAME_RANGES",
    "OTB_ATTRIBUTES",
    "LASOT_ATTRIBUTES",
    "GOT10K_META_ATTRIBUTES",
    "TrackingSequence",
    "TrackingDataset",
    "detect_format",
    "read_dataset",
    "result_paths",
    "write_sequence_results",
    "read_sequence_results",
    "results_complete",
    "result_trackers",
    "synthetic_attributes",
    "make_dataset",
]

PathLike = Union[str, os.PathLike]

#: the dataset layouts read and written here
FORMATS = ("otb", "lasot", "got10k")
#: frame file types (a sequence's frames are all of one type)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
#: OTB100 sequences whose ``img`` folder holds more frames than the ground truth: the frames used,
#: 1-based and inclusive, applied to the sorted frame files (got10k 0.1.2's ``datasets.OTB``)
OTB_FRAME_RANGES: Mapping[str, Tuple[int, int]] = MappingProxyType({
    "david": (300, 770), "football1": (1, 74), "freeman3": (1, 460), "freeman4": (1, 283), "diving": (1, 215),
})
#: OTB's attribute codes (Wu, Lim, Yang, TPAMI 2015)
OTB_ATTRIBUTES: Mapping[str, str] = MappingProxyType({
    "IV": "illumination variation", "SV": "scale variation", "OCC": "occlusion", "DEF": "deformation",
    "MB": "motion blur", "FM": "fast motion", "IPR": "in-plane rotation", "OPR": "out-of-plane rotation",
    "OV": "out of view", "BC": "background clutter", "LR": "low resolution",
})
#: LaSOT's attribute codes (Fan et al., CVPR 2019)
LASOT_ATTRIBUTES: Mapping[str, str] = MappingProxyType({
    "IV": "illumination variation", "POC": "partial occlusion", "DEF": "deformation", "MB": "motion blur",
    "CM": "camera motion", "ROT": "rotation", "BC": "background clutter", "VC": "viewpoint change",
    "SV": "scale variation", "FOC": "full occlusion", "FM": "fast motion", "OV": "out of view",
    "LR": "low resolution", "ARC": "aspect ratio change",
})
#: ``meta_info.ini`` fields of GOT-10k that become ``key=value`` attribute labels
GOT10K_META_ATTRIBUTES = ("object_class", "motion_class", "major_class", "root_class", "motion_adverb")
GOT10K_SPLITS = ("train", "val", "test")

_ATTRIBUTE_RE = re.compile(r"^[A-Za-z0-9_-]+$")
_LASOT_SEQ_RE = re.compile(r"^(?P<cls>.+)-(?P<n>\d+)$")


# ---------------------------------------------------------------------------------------------
# small readers
# ---------------------------------------------------------------------------------------------


def _describe(s: str, limit: int = 60) -> str:
    r = repr(s)
    return r if len(r) <= limit else r[: limit - 3] + "..."


def _read_text(path: Path, what: str) -> str:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{what} {path} does not exist") from None
    except IsADirectoryError:
        raise InputError(f"{what} {path} is a folder, not a file") from None
    except OSError as e:
        raise InputError(f"{what} {path} cannot be read: {e.strerror or e}") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InputError(f"{what} {path} is not a text file") from None


def _split_fields(line: str) -> List[str]:
    """The fields of one line: comma-separated (spaces around commas allowed), else separated by
    tabs or spaces."""
    if "," in line:
        return [p.strip() for p in line.split(",")]
    return line.split()


def _read_table(path: Path, what: str, ncols: Optional[int]) -> np.ndarray:
    """A text table of numbers (blank lines skipped) as float64 ``[rows, cols]``; every row with
    ``ncols`` fields (or, ``ncols=None``, as many as the first row)."""
    text = _read_text(path, what)
    rows: List[List[float]] = []
    width = ncols
    for lineno, line in enumerate(text.splitlines(), 1):
        s = line.strip()
        if not s:
            continue
        parts = _split_fields(s)
        if width is None:
            width = len(parts)
        if len(parts) != width:
            need = f"{width} numbers per line" + (" (x, y, w, h)" if width == 4 else "")
            raise InputError(f"{what} {path}: line {lineno} has {len(parts)} fields ({_describe(s)}); {need} expected")
        try:
            rows.append([float(p) for p in parts])
        except ValueError:
            raise InputError(f"{what} {path}: line {lineno} ({_describe(s)}) is not {width} numbers") from None
    if not rows:
        return np.zeros((0, width or 0), np.float64)
    return np.asarray(rows, dtype=np.float64)


def _read_flags(path: Path, what: str, n: int, allowed: Sequence[int]) -> np.ndarray:
    """Integer labels separated by commas, spaces or line breaks (LaSOT writes one line, GOT-10k one
    value a line): exactly ``n`` of them, each in ``allowed``."""
    text = _read_text(path, what).strip()
    tokens = [t for t in re.split(r"[,\s]+", text) if t] if text else []
    try:
        values = np.array([int(t) for t in tokens], dtype=np.int64)
    except ValueError:
        bad = next(t for t in tokens if not re.fullmatch(r"[+-]?\d+", t))
        raise InputError(f"{what} {path}: {_describe(bad)} is not an integer label") from None
    if len(values) != n:
        raise InputError(f"{what} {path} has {len(values)} labels for {n} frames; give one label per frame")
    bad = ~np.isin(values, np.asarray(allowed))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise InputError(f"{what} {path}: label {i + 1} is {int(values[i])}; expected one of "
                         f"{', '.join(str(a) for a in allowed)}")
    return values


def _read_ground_truth(path: Path, num_frames: Optional[int], *, one_line_ok: bool = False) -> np.ndarray:
    from spikedeploy.validate import check_ground_truth

    gt = _read_table(path, "ground truth", 4)
    if len(gt) == 0:
        raise InputError(f"ground truth {path} holds no boxes; give one x, y, w, h line per frame")
    gt = check_ground_truth(gt, f"ground truth {path}")
    if num_frames is not None and len(gt) != num_frames and not (one_line_ok and len(gt) == 1):
        extra = " (or one line, the initial box, as in GOT-10k's test split)" if one_line_ok else ""
        raise InputError(f"ground truth {path} has {len(gt)} boxes for {num_frames} frames; give one box per "
                         f"frame{extra}")
    return gt


def _read_attributes(path: Path) -> Tuple[str, ...]:
    """``attributes.txt``: one attribute code per line (blank lines skipped, duplicates kept once)."""
    if not path.is_file():
        return ()
    out: List[str] = []
    for lineno, line in enumerate(_read_text(path, "attributes file").splitlines(), 1):
        s = line.strip()
        if not s:
            continue
        if not _ATTRIBUTE_RE.match(s):
            raise InputError(f"attributes file {path}: line {lineno} ({_describe(s)}) is not one attribute code "
                             "(letters, digits, _ or -; one code per line, e.g. SV)")
        if s not in out:
            out.append(s)
    return tuple(out)


def _list_frames(folder: Path, where: str) -> Tuple[str, ...]:
    """The frame files of ``folder`` (one of :data:`IMAGE_SUFFIXES`), sorted by name, as strings."""
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        raise InputError(f"{where}: frame folder {folder} does not exist") from None
    except NotADirectoryError:
        raise InputError(f"{where}: {folder} is not a folder of frames") from None
    except OSError as e:
        raise InputError(f"{where}: frame folder {folder} cannot be read: {e.strerror or e}") from None
    by_suffix: Dict[str, List[str]] = {}
    for e in entries:
        suffix = os.path.splitext(e.name)[1].lower()
        if suffix in IMAGE_SUFFIXES and not e.name.startswith("."):
            by_suffix.setdefault(".jpg" if suffix == ".jpeg" else suffix, []).append(e.name)
    if not by_suffix:
        raise InputError(f"{where}: frame folder {folder} holds no {'/'.join(IMAGE_SUFFIXES)} frames")
    if len(by_suffix) > 1:
        raise InputError(f"{where}: frame folder {folder} mixes {' and '.join(sorted(by_suffix))} frames; keep one "
                         "type per sequence")
    names = sorted(next(iter(by_suffix.values())))
    base = str(folder)
    return tuple(os.path.join(base, n) for n in names)


def _readonly(a: Optional[np.ndarray]) -> Optional[np.ndarray]:
    if a is not None:
        a.setflags(write=False)
    return a


# ---------------------------------------------------------------------------------------------
# sequences and datasets
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class TrackingSequence:
    """One benchmark sequence (one target).

    ``frame_paths``: the frame files in order (strings; pixels are read by :meth:`load_frames`).
    ``ground_truth``: float64 ``[N, 4]`` boxes ``x, y, w, h`` (read-only), ``N = num_frames``, or
    ``[1, 4]`` (the initial box only: GOT-10k's test split; :attr:`full_ground_truth` is False).
    ``absent``: bool ``[N]`` (True where the target is fully occluded or out of view, from the
    dataset's own labels), or None when the dataset has no such labels. ``attributes``: labels for
    per-attribute scores (see the module docstring). ``meta``: the dataset's per-sequence fields
    (GOT-10k's ``meta_info.ini``; e.g. ``resolution``), else empty."""

    name: str
    frame_paths: Tuple[str, ...]
    ground_truth: np.ndarray
    absent: Optional[np.ndarray] = None
    attributes: Tuple[str, ...] = ()
    meta: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name:
            raise InputError(f"a sequence name must be a non-empty string, got {self.name!r}")
        paths = tuple(str(p) for p in self.frame_paths)
        if not paths:
            raise InputError(f"sequence {self.name} has no frames")
        gt = np.array(self.ground_truth, dtype=np.float64)
        if gt.ndim != 2 or gt.shape[1] != 4 or len(gt) not in (1, len(paths)):
            raise InputError(f"sequence {self.name}: ground truth of shape {list(gt.shape)} for {len(paths)} frames; "
                             f"expected [{len(paths)}, 4] (or [1, 4], the initial box only)")
        absent = None
        if self.absent is not None:
            absent = np.array(self.absent, dtype=bool)
            if absent.shape != (len(paths),):
                raise InputError(f"sequence {self.name}: absent mask of shape {list(absent.shape)} for {len(paths)} "
                                 "frames")
        object.__setattr__(self, "frame_paths", paths)
        object.__setattr__(self, "ground_truth", _readonly(gt))
        object.__setattr__(self, "absent", _readonly(absent))
        object.__setattr__(self, "attributes", tuple(str(a) for a in self.attributes))
        object.__setattr__(self, "meta", MappingProxyType(dict(self.meta)))

    @property
    def num_frames(self) -> int:
        return len(self.frame_paths)

    @property
    def init_box(self) -> np.ndarray:
        """The initial box ``[x, y, w, h]`` (float64, a copy)."""
        return self.ground_truth[0].copy()

    @property
    def full_ground_truth(self) -> bool:
        """True when every frame has a ground-truth box (False: GOT-10k test, initial box only)."""
        return len(self.ground_truth) == self.num_frames

    def __repr__(self) -> str:
        return (f"TrackingSequence(name={self.name!r}, num_frames={self.num_frames}, "
                f"ground_truth=[{len(self.ground_truth)}, 4], absent={'None' if self.absent is None else 'mask'}, "
                f"attributes={self.attributes!r})")

    def image_size(self) -> Tuple[int, int]:
        """``(height, width)`` of the first frame, read from its header (no decoding)."""
        from PIL import Image

        path = self.frame_paths[0]
        try:
            with Image.open(path) as im:
                w, h = im.size
        except FileNotFoundError:
            raise InputError(f"frame {path} of sequence {self.name} does not exist") from None
        except _unreadable() as e:
            raise InputError(f"frame {path} of sequence {self.name} cannot be read: {_detail(e)}") from None
        return int(h), int(w)

    def load_frame(self, index: int) -> np.ndarray:
        """Frame ``index`` as uint8 ``[H, W, 3]`` RGB."""
        return _load_rgb(self.frame_paths[index], self.name)

    def iter_frames(self, start: int = 0, stop: Optional[int] = None) -> Iterator[np.ndarray]:
        """The frames ``start..stop-1`` one at a time (uint8 ``[H, W, 3]`` RGB): constant memory."""
        for p in self.frame_paths[start:stop]:
            yield _load_rgb(p, self.name)

    def load_frames(self, start: int = 0, stop: Optional[int] = None) -> np.ndarray:
        """The frames ``start..stop-1`` (all by default) as uint8 ``[N, H, W, 3]`` RGB (PIL;
        palette, gray and alpha images converted to RGB). All frames must have one size."""
        from spikedeploy.validate import check_frame_size

        paths = self.frame_paths[start:stop]
        if not paths:
            raise InputError(f"sequence {self.name}: no frames in {start}..{stop}")
        first = _load_rgb(paths[0], self.name)
        H, W = first.shape[:2]
        check_frame_size(H, W, f"sequence {self.name}", len(paths))
        out = np.empty((len(paths), H, W, 3), np.uint8)
        out[0] = first
        for i, p in enumerate(paths[1:], 1):
            f = _load_rgb(p, self.name)
            if f.shape != first.shape:
                raise InputError(f"frame {p} of sequence {self.name} is {f.shape[1]}x{f.shape[0]} (W x H), but its "
                                 f"first frame is {W}x{H}")
            out[i] = f
        return out


def _unreadable() -> tuple:
    """The exceptions PIL raises for a file that is not a readable image (its decompression-bomb
    guard raises DecompressionBombError, which is not an OSError)."""
    from PIL import Image

    return (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError)


def _detail(e: BaseException) -> str:
    from spikedeploy.validate import detail

    return detail(e)


def _load_rgb(path: str, seq: str) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"), dtype=np.uint8)
    except FileNotFoundError:
        raise InputError(f"frame {path} of sequence {seq} does not exist") from None
    except _unreadable() as e:
        raise InputError(f"frame {path} of sequence {seq} cannot be read: {_detail(e)}") from None


@dataclass(frozen=True, eq=False)
class TrackingDataset:
    """A benchmark: ``sequences`` (unique names) read from ``root`` in layout ``format``."""

    root: Path
    format: str
    sequences: Tuple[TrackingSequence, ...]

    def __post_init__(self):
        if self.format not in FORMATS:
            raise ConfigError(f"unknown dataset format {self.format!r}; expected one of {', '.join(FORMATS)}")
        seqs = tuple(self.sequences)
        index: Dict[str, int] = {}
        for i, s in enumerate(seqs):
            if s.name in index:
                raise InputError(f"dataset {self.root} holds two sequences named {s.name!r}")
            index[s.name] = i
        object.__setattr__(self, "root", Path(self.root))
        object.__setattr__(self, "sequences", seqs)
        object.__setattr__(self, "_index", MappingProxyType(index))

    @property
    def names(self) -> Tuple[str, ...]:
        return tuple(s.name for s in self.sequences)

    def __repr__(self) -> str:
        return f"TrackingDataset(root={str(self.root)!r}, format={self.format!r}, sequences={len(self)})"

    def __len__(self) -> int:
        return len(self.sequences)

    def __iter__(self) -> Iterator[TrackingSequence]:
        return iter(self.sequences)

    def __contains__(self, name) -> bool:
        return name in self._index

    def __getitem__(self, key: Union[int, str]) -> TrackingSequence:
        if isinstance(key, str):
            if key not in self._index:
                raise ConfigError(f"dataset {self.root} has no sequence {key!r}; it has {_some(self.names)}")
            return self.sequences[self._index[key]]
        if isinstance(key, bool) or not isinstance(key, numbers.Integral):
            raise TypeError(f"a sequence is chosen by name or index, got {key!r}")
        return self.sequences[int(key)]

    def subset(self, names: Iterable[str]) -> "TrackingDataset":
        """The sequences ``names`` in that order (each once; unknown names are an error)."""
        names = [names] if isinstance(names, str) else list(names)
        seen = set()
        for n in names:
            if n in seen:
                raise ConfigError(f"sequence {n!r} is named twice")
            seen.add(n)
        return TrackingDataset(self.root, self.format, tuple(self[n] for n in names))


def _some(names: Sequence[str], k: int = 5) -> str:
    if not names:
        return "no sequences"
    shown = ", ".join(names[:k])
    return shown + (f", ... ({len(names)} in all)" if len(names) > k else "")


# ---------------------------------------------------------------------------------------------
# format detection
# ---------------------------------------------------------------------------------------------


def _natural(name: str):
    """Sort key: digit runs compare as numbers (``seq-2`` before ``seq-10``)."""
    return [(0, int(t), t) if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", name)]


def _subdirs(root: Path) -> List[os.DirEntry]:
    """The sub-folders of ``root`` (hidden ones skipped), in natural order."""
    try:
        return sorted((e for e in os.scandir(root) if e.is_dir() and not e.name.startswith(".")),
                      key=lambda e: _natural(e.name))
    except OSError as e:
        raise InputError(f"dataset folder {root} cannot be read: {e.strerror or e}") from None


def _got10k_split_dir(root: Path) -> Optional[Path]:
    """The GOT-10k split folder for ``root``: ``root`` itself when it holds ``list.txt``, or its one
    ``train``/``val``/``test`` sub-folder with a ``list.txt``; None if neither."""
    if (root / "list.txt").is_file():
        return root
    found = [root / s for s in GOT10K_SPLITS if (root / s / "list.txt").is_file()]
    if len(found) > 1:
        raise InputError(f"dataset folder {root} holds several GOT-10k splits ({', '.join(p.name for p in found)}); "
                         f"give one split folder, e.g. {found[0]}")
    return found[0] if found else None


def _looks_lasot(root: Path) -> bool:
    if (root / "testing_set.txt").is_file():
        return True
    for cls in _subdirs(root):
        for sub in _subdirs(Path(cls.path)):
            m = _LASOT_SEQ_RE.match(sub.name)
            if m and m.group("cls") == cls.name and (Path(sub.path) / "groundtruth.txt").is_file():
                return True
    return False


def _looks_otb(root: Path) -> bool:
    for d in _subdirs(root):
        p = Path(d.path)
        if (p / "img").is_dir() and any(p.glob("groundtruth*.txt")):
            return True
    return False


def detect_format(root: PathLike) -> str:
    """The layout of the dataset folder ``root`` (rule, in this order of evidence, exactly one must
    match): ``got10k`` if ``root/list.txt`` exists (or ``root/<split>/list.txt`` for one split);
    ``lasot`` if ``root/testing_set.txt`` exists or some ``root/class/class-N/groundtruth.txt``
    does; ``otb`` if some ``root/Seq`` holds an ``img`` folder and a ``groundtruth*.txt``. None or several: :class:`InputError`."""
    root = _check_root(Path(root))
    found = []
    if _got10k_split_dir(root) is not None:
        found.append("got10k")
    if _looks_lasot(root):
        found.append("lasot")
    if _looks_otb(root):
        found.append("otb")
    if not found:
        raise InputError(f"no tracking dataset found in {root}: expected OTB (Seq/img/*.jpg + "
                         "Seq/groundtruth_rect.txt), LaSOT (class/class-N/img/*.jpg + groundtruth.txt) or GOT-10k "
                         "(list.txt + seq/*.jpg + seq/groundtruth.txt)")
    if len(found) > 1:
        raise InputError(f"dataset folder {root} looks like {' and '.join(found)} at once; give the format "
                         f"explicitly (one of {', '.join(FORMATS)})")
    return found[0]


def _check_root(root: Path) -> Path:
    if not root.exists():
        raise InputError(f"dataset folder {root} does not exist")
    if not root.is_dir():
        raise InputError(f"dataset {root} is not a folder; give the folder that holds the sequences")
    return root


# ---------------------------------------------------------------------------------------------
# readers
# ---------------------------------------------------------------------------------------------


def read_dataset(root: PathLike, format: str = "auto") -> TrackingDataset:
    """The dataset in folder ``root``, layout ``format`` (one of :data:`FORMATS`, or ``"auto"``:
    :func:`detect_format`). Lists the frames and parses every annotation file; bad data (a missing
    file, a ground-truth line with the wrong number of fields, box and frame counts that differ, a
    malformed label file) raises :class:`InputError` naming the file. No pixels are read."""
    root = _check_root(Path(root))
    if format == "auto":
        format = detect_format(root)
    if format not in FORMATS:
        raise ConfigError(f"unknown dataset format {format!r}; expected one of {', '.join(FORMATS)} or auto")
    reader = {"otb": _read_otb, "lasot": _read_lasot, "got10k": _read_got10k}[format]
    return reader(root)


def _read_otb(root: Path) -> TrackingDataset:
    entries = []  # (folder name, gt file, folder)
    for d in _subdirs(root):
        folder = Path(d.path)
        gts = sorted(p for p in folder.glob("groundtruth*.txt") if p.is_file())
        has_img = (folder / "img").is_dir()
        if not gts:
            if has_img:
                raise InputError(f"OTB sequence {folder} has frames but no ground truth: "
                                 f"{folder / 'groundtruth_rect.txt'} does not exist")
            continue  # not a sequence (e.g. a folder of notes)
        nonempty = [g for g in gts if _read_text(g, "ground truth").strip()]
        if not nonempty:
            raise InputError(f"ground truth {gts[0]} is empty; give one x, y, w, h line per frame")
        entries.extend((folder.name, g, folder) for g in nonempty)
    if not entries:
        raise InputError(f"no OTB sequences in {root}: expected folders Seq/img/*.jpg + Seq/groundtruth_rect.txt")
    base_names = [e[0] for e in entries]
    seqs = []
    for i, (base, gt_file, folder) in enumerate(entries):
        # several targets in one folder: Seq.1, Seq.2 (got10k's naming)
        name = base if base_names.count(base) == 1 else f"{base}.{base_names[: i + 1].count(base)}"
        frames = _list_frames(folder / "img", f"OTB sequence {name}")
        rng = OTB_FRAME_RANGES.get(name.lower())
        if rng is not None:
            lo, hi = rng
            if len(frames) < hi:
                raise InputError(f"OTB sequence {name}: {folder / 'img'} holds {len(frames)} frames; OTB uses its "
                                 f"frames {lo}..{hi}")
            frames = frames[lo - 1:hi]
        gt = _read_ground_truth(gt_file, len(frames))
        seqs.append(TrackingSequence(name, frames, gt, None, _read_attributes(folder / "attributes.txt")))
    return TrackingDataset(root, "otb", tuple(seqs))


def _lasot_folders(root: Path) -> List[Tuple[str, Path]]:
    listing = root / "testing_set.txt"
    if listing.is_file():
        names = [s.strip() for s in _read_text(listing, "LaSOT sequence list").splitlines() if s.strip()]
        if not names:
            raise InputError(f"LaSOT sequence list {listing} is empty; list one class-N sequence per line")
        out = []
        for n in names:
            m = _LASOT_SEQ_RE.match(n)
            if not m or "/" in n or "\\" in n:
                raise InputError(f"LaSOT sequence list {listing}: {_describe(n)} is not a class-N sequence name")
            folder = root / m.group("cls") / n
            if not folder.is_dir():
                raise InputError(f"LaSOT sequence list {listing} names {n}, but {folder} does not exist")
            out.append((n, folder))
        return out
    found = []
    for cls in _subdirs(root):
        for sub in _subdirs(Path(cls.path)):
            m = _LASOT_SEQ_RE.match(sub.name)
            if m and m.group("cls") == cls.name:
                found.append(((cls.name, int(m.group("n"))), sub.name, Path(sub.path)))
    found.sort(key=lambda t: t[0])
    return [(n, p) for _, n, p in found]


def _read_lasot(root: Path) -> TrackingDataset:
    folders = _lasot_folders(root)
    if not folders:
        raise InputError(f"no LaSOT sequences in {root}: expected class/class-N/img/*.jpg + "
                         "class/class-N/groundtruth.txt")
    seqs = []
    for name, folder in folders:
        frames = _list_frames(folder / "img", f"LaSOT sequence {name}")
        gt = _read_ground_truth(folder / "groundtruth.txt", len(frames))
        absent = None
        for label in ("full_occlusion", "out_of_view"):
            p = folder / f"{label}.txt"
            if p.is_file():
                flags = _read_flags(p, f"LaSOT {label.replace('_', ' ')} file", len(frames), (0, 1)) == 1
                absent = flags if absent is None else (absent | flags)
        seqs.append(TrackingSequence(name, frames, gt, absent, _read_attributes(folder / "attributes.txt")))
    return TrackingDataset(root, "lasot", tuple(seqs))


def _read_meta_info(path: Path) -> Dict[str, str]:
    """GOT-10k's ``meta_info.ini``: a ``[METAINFO]`` header, then ``key: value`` lines."""
    meta: Dict[str, str] = {}
    for lineno, line in enumerate(_read_text(path, "GOT-10k meta info").splitlines(), 1):
        s = line.strip()
        if not s or (s.startswith("[") and s.endswith("]")):
            continue
        key, sep, value = s.partition(":")
        if not sep or not key.strip():
            raise InputError(f"GOT-10k meta info {path}: line {lineno} ({_describe(s)}) is not 'key: value'")
        meta[key.strip()] = value.strip()
    return meta


def _read_got10k(root: Path) -> TrackingDataset:
    split = _got10k_split_dir(root)
    if split is None:
        raise InputError(f"no GOT-10k sequence list in {root}: {root / 'list.txt'} does not exist (give the split "
                         "folder, e.g. GOT-10k/val, that holds list.txt)")
    listing = split / "list.txt"
    names = [s.strip() for s in _read_text(listing, "GOT-10k sequence list").splitlines() if s.strip()]
    if not names:
        raise InputError(f"GOT-10k sequence list {listing} is empty; list one sequence folder per line")
    seqs = []
    for name in names:
        folder = split / name
        if "/" in name or "\\" in name or name in (".", "..") or not folder.is_dir():
            raise InputError(f"GOT-10k sequence list {listing} names {_describe(name)}, but {folder} is not a folder")
        frames = _list_frames(folder, f"GOT-10k sequence {name}")
        gt = _read_ground_truth(folder / "groundtruth.txt", len(frames), one_line_ok=True)
        absent = None
        cover, absence = folder / "cover.label", folder / "absence.label"
        if cover.is_file():
            absent = _read_flags(cover, "GOT-10k cover label file", len(frames), range(9)) == 0
        elif absence.is_file():
            absent = _read_flags(absence, "GOT-10k absence label file", len(frames), (0, 1)) == 1
        meta = _read_meta_info(folder / "meta_info.ini") if (folder / "meta_info.ini").is_file() else {}
        attributes = list(_read_attributes(folder / "attributes.txt"))
        for key in GOT10K_META_ATTRIBUTES:
            if meta.get(key):
                label = f"{key}={meta[key]}"
                if label not in attributes:
                    attributes.append(label)
        seqs.append(TrackingSequence(name, frames, gt, absent, tuple(attributes), meta))
    return TrackingDataset(split, "got10k", tuple(seqs))


# ---------------------------------------------------------------------------------------------
# results files
# ---------------------------------------------------------------------------------------------


def _component(value, what: str) -> str:
    """A name that becomes one path component (no separators, not hidden, not . or ..)."""
    if not isinstance(value, str) or not value or value in (".", "..") or value.startswith(".") \
            or any(c in value for c in "/\\\0") or value != value.strip():
        raise ConfigError(f"{what} {value!r} cannot be a file name; use letters, digits, '-', '_' or '.' (not "
                          "leading), without path separators")
    return value


def _check_format(format: str) -> str:
    if format not in FORMATS:
        raise ConfigError(f"unknown results format {format!r}; expected one of {', '.join(FORMATS)}")
    return format


def result_paths(results_dir: PathLike, tracker: str, sequence_name: str, format: str,
                 repetition: int = 1) -> Tuple[Path, Path]:
    """``(boxes file, times file)`` of ``tracker`` on ``sequence_name`` in the layout of
    ``format`` (see the module docstring); ``repetition`` numbers GOT-10k's ``_NNN`` files."""
    _check_format(format)
    tracker = _component(tracker, "tracker name")
    seq = _component(sequence_name, "sequence name")
    if isinstance(repetition, bool) or not isinstance(repetition, numbers.Integral) or not 1 <= repetition <= 999:
        raise ConfigError(f"repetition must be an integer 1..999, got {repetition!r}")
    base = Path(results_dir) / tracker
    if format == "got10k":
        return base / seq / f"{seq}_{int(repetition):03d}.txt", base / seq / f"{seq}_time.txt"
    return base / f"{seq}.txt", base / "times" / f"{seq}_time.txt"


def _fmt(v: float) -> str:
    """The shortest text that reads back as exactly ``v`` (integers without a fraction)."""
    if v.is_integer() and abs(v) < 2 ** 53:
        return "-0" if (v == 0 and math.copysign(1.0, v) < 0) else str(int(v))
    return repr(v)


def _table_bytes(rows: np.ndarray) -> bytes:
    buf = io.StringIO()
    for r in rows.tolist():
        buf.write(",".join(_fmt(float(v)) for v in r))
        buf.write("\n")
    return buf.getvalue().encode("ascii")


def write_sequence_results(results_dir: PathLike, tracker: str, sequence_name: str, boxes, times,
                           format: str = "otb") -> Tuple[Path, Path]:
    """Write ``boxes`` (``[N, 4]`` x, y, w, h, finite; row 0 the initial box) and ``times``
    (``[N]`` seconds per frame, finite, >= 0) of ``tracker`` on ``sequence_name`` in the layout of
    ``format``; the times file first, then the boxes file, each atomically (module docstring).
    Returns ``(boxes file, times file)``."""
    box_path, time_path = result_paths(results_dir, tracker, sequence_name, format)
    b = np.asarray(boxes, dtype=np.float64)
    if b.ndim != 2 or b.shape[1] != 4 or len(b) == 0:
        raise InputError(f"results of {tracker} on {sequence_name}: boxes must be [N, 4] (x, y, w, h per frame), got "
                         f"shape {list(b.shape)}")
    if not np.isfinite(b).all():
        row = int(np.flatnonzero(~np.isfinite(b).all(axis=1))[0])
        raise InputError(f"results of {tracker} on {sequence_name}: box {row + 1} ({b[row].tolist()}) is not finite")
    t = np.asarray(times, dtype=np.float64).reshape(-1)
    if len(t) != len(b):
        raise InputError(f"results of {tracker} on {sequence_name}: {len(t)} times for {len(b)} boxes; give one time "
                         "per frame")
    if not (np.isfinite(t).all() and (t >= 0).all()):
        raise InputError(f"results of {tracker} on {sequence_name}: times must be finite seconds >= 0")
    atomic_write_bytes(time_path, _table_bytes(t[:, None]))
    atomic_write_bytes(box_path, _table_bytes(b))
    return box_path, time_path


def read_sequence_results(results_dir: PathLike, tracker: str, sequence_name: str, format: str = "otb", *,
                          num_frames: Optional[int] = None, repetition: int = 1
                          ) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    """``(boxes float64 [N, 4], times float64 [N] or None)`` of ``tracker`` on ``sequence_name``.
    Fields may be separated by commas, tabs or spaces (anyone's results). ``times`` is None when
    there is no times file; a GOT-10k times file with several columns (one per repetition) gives
    the column of ``repetition``. A missing or garbled boxes file, a times file of another length,
    or (``num_frames`` given) a box count other than ``num_frames``: :class:`InputError`."""
    box_path, time_path = result_paths(results_dir, tracker, sequence_name, format, repetition)
    boxes = _read_table(box_path, "results file", 4)
    if len(boxes) == 0:
        raise InputError(f"results file {box_path} holds no boxes")
    if num_frames is not None and len(boxes) != num_frames:
        raise InputError(f"results file {box_path} has {len(boxes)} boxes for {num_frames} frames; run the "
                         "sequence again")
    times = None
    if time_path.is_file():
        table = _read_table(time_path, "times file", None)
        col = repetition - 1 if format == "got10k" else 0
        if table.shape[1] <= col:
            raise InputError(f"times file {time_path} has {table.shape[1]} column(s); repetition {repetition} has none")
        if format != "got10k" and table.shape[1] != 1:
            raise InputError(f"times file {time_path} has {table.shape[1]} values per line; expected one")
        times = table[:, col]
        if len(times) != len(boxes):
            raise InputError(f"times file {time_path} has {len(times)} times for the {len(boxes)} boxes of {box_path}")
    return boxes, times


def results_complete(results_dir: PathLike, tracker: str, sequence: Union[str, TrackingSequence],
                     format: str = "otb", num_frames: Optional[int] = None) -> bool:
    """True when ``tracker``'s results on ``sequence`` (a name, or a :class:`TrackingSequence`,
    whose frame count is then required) are there and well formed: a boxes file with one box per
    frame and a times file of the same length. Anything else (missing, partial, garbled) is False:
    the sequence has to run (again)."""
    if isinstance(sequence, TrackingSequence):
        name, num_frames = sequence.name, sequence.num_frames if num_frames is None else num_frames
    else:
        name = sequence
    try:
        boxes, times = read_sequence_results(results_dir, tracker, name, format, num_frames=num_frames)
    except InputError:
        return False
    return times is not None


def result_trackers(results_dir: PathLike, format: str = "otb") -> Tuple[str, ...]:
    """The tracker folders of ``results_dir`` that hold at least one results file of ``format``'s
    layout (``<tracker>/*.txt``; GOT-10k ``<tracker>/<seq>/<seq>_NNN.txt``), sorted."""
    _check_format(format)
    root = Path(results_dir)
    if not root.is_dir():
        raise InputError(f"results folder {root} does not exist or is not a folder")
    out = []
    for d in _subdirs(root):
        p = Path(d.path)
        if format == "got10k":
            ok = any(re.fullmatch(re.escape(f.parent.name) + r"_\d{3}\.txt", f.name)
                     for f in p.glob("*/*_[0-9][0-9][0-9].txt") if f.is_file())
        else:
            ok = any(f.is_file() and not f.name.startswith(".") for f in p.glob("*.txt"))
        if ok:
            out.append(d.name)
    return tuple(out)


# ---------------------------------------------------------------------------------------------
# the generated benchmark
# ---------------------------------------------------------------------------------------------

#: thresholds of :func:`synthetic_attributes` (OTB's own where OTB defines one)
SV_SCALE_RATIO = 2.0  #: SV: some frame's box scale sqrt(w h) differs from the first frame's by more than 2x (OTB: ts = 2)
FM_PIXELS = 20.0  #: FM: the box center moves more than 20 px between two consecutive frames (OTB: tm = 20)
LR_PIXELS = 400.0  #: LR: some frame's box holds fewer than 400 pixels (OTB: tr = 400)
OCC_COVERED = 0.1  #: OCC: in some frame more than 10 % of the target's mask is covered


def synthetic_attributes(boxes: np.ndarray, visible: np.ndarray, frame_size: Tuple[int, int]) -> Tuple[str, ...]:
    """The OTB attribute codes of a generated sequence, from its exact ground truth (in OTB's
    order; boxes ``[N, 4]`` x, y, w, h; ``visible [N]`` the fraction of the target's mask not
    covered by the occluder; ``frame_size = (H, W)``):

    - ``SV``: ``max_t max(s_t / s_0, s_0 / s_t) > 2`` with the box scale ``s_t = sqrt(w_t h_t)``
      (OTB: the ratio of the boxes of the first and the current frame is outside [1/2, 2]);
    - ``OCC``: ``min_t visible_t < 0.9`` (more than 10 % of the target covered in some frame);
    - ``FM``: ``max_t |c_t - c_{t-1}| > 20`` px, ``c = (x + w/2, y + h/2)``;
    - ``OV``: the box touches the frame border in some frame (``x <= 0``, ``y <= 0``,
      ``x + w >= W`` or ``y + h >= H``): the boxes are clipped to the frame, so touching it means
      part of the target may lie outside;
    - ``LR``: ``min_t w_t h_t < 400`` px.

    The generator's other effects (illumination, rotation, blur, distractors) are not labeled."""
    b = np.asarray(boxes, dtype=np.float64)
    H, W = frame_size
    area = b[:, 2] * b[:, 3]
    codes = []
    scale = np.sqrt(area)
    if np.maximum(scale / scale[0], scale[0] / scale).max() > SV_SCALE_RATIO:
        codes.append("SV")
    if np.min(visible) < 1.0 - OCC_COVERED:
        codes.append("OCC")
    centers = b[:, :2] + b[:, 2:] / 2
    if len(b) > 1 and np.hypot(*np.diff(centers, axis=0).T).max() > FM_PIXELS:
        codes.append("FM")
    if ((b[:, 0] <= 0) | (b[:, 1] <= 0) | (b[:, 0] + b[:, 2] >= W) | (b[:, 1] + b[:, 3] >= H)).any():
        codes.append("OV")
    if area.min() < LR_PIXELS:
        codes.append("LR")
    return tuple(codes)


def _check_count(v, name: str, lo: int) -> int:
    if isinstance(v, bool) or not isinstance(v, numbers.Integral) or int(v) < lo:
        raise ConfigError(f"{name} must be an integer >= {lo}, got {v!r}")
    return int(v)


def _save_frame(frame: np.ndarray, path: Path, image_format: str) -> None:
    from PIL import Image

    im = Image.fromarray(np.ascontiguousarray(frame))
    if image_format == "jpg":
        im.save(path, format="JPEG", quality=95, subsampling=0)  # 4:4:4: no chroma halving at colour edges
    else:
        im.save(path, format="PNG", compress_level=1)  # 2.3x faster than the default 6, 10 % larger


def _write_sequence(root: Path, fmt: str, name: str, seq, image_format: str) -> None:
    H, W = seq.frames.shape[1:3]
    n = len(seq)
    boxes, visible = seq.boxes, seq.visible
    ext = "jpg" if image_format == "jpg" else "png"
    if fmt == "otb":
        folder = root / name
        frame_dir, digits = folder / "img", max(4, len(str(n)))
    elif fmt == "lasot":
        folder = root / "synthetic" / name
        frame_dir, digits = folder / "img", max(8, len(str(n)))
    else:
        folder = root / name
        frame_dir, digits = folder, max(8, len(str(n)))
    frame_dir.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        _save_frame(seq.frames[i], frame_dir / f"{i + 1:0{digits}d}.{ext}", image_format)
    gt_name = "groundtruth_rect.txt" if fmt == "otb" else "groundtruth.txt"
    (folder / gt_name).write_bytes(_table_bytes(boxes))
    attrs = synthetic_attributes(boxes, visible, (H, W))
    (folder / "attributes.txt").write_text("".join(a + "\n" for a in attrs), encoding="utf-8")
    if fmt == "lasot":
        full = (visible <= 0.0).astype(int)
        (folder / "full_occlusion.txt").write_text(",".join(str(v) for v in full) + "\n", encoding="utf-8")
        # the generator keeps part of the target in the frame always (its margins): never out of view
        (folder / "out_of_view.txt").write_text(",".join("0" for _ in range(n)) + "\n", encoding="utf-8")
        (folder / "nlp.txt").write_text(f"the patch cut from the {seq.info['target']} photograph\n", encoding="utf-8")
    elif fmt == "got10k":
        cover = np.ceil(np.clip(visible, 0.0, 1.0) * 8).astype(int)
        (folder / "cover.label").write_text("".join(f"{c}\n" for c in cover), encoding="utf-8")
        (folder / "absence.label").write_text("".join(f"{int(c == 0)}\n" for c in cover), encoding="utf-8")
        x, y, w, h = boxes.T
        cut = (x <= 0) | (y <= 0) | (x + w >= W) | (y + h >= H)
        (folder / "cut_by_image.label").write_text("".join(f"{int(c)}\n" for c in cut), encoding="utf-8")
        # the object class is the target's photograph; GOT-10k's motion classes have no counterpart
        meta = ["[METAINFO]", "url: synthetic", f"object_class: {seq.info['target']}", f"resolution: ({W}, {H})"]
        (folder / "meta_info.ini").write_text("\n".join(meta) + "\n", encoding="utf-8")


_README = """\
A generated tracking benchmark in the {layout} layout, written by spikedeploy {version}
(spikedeploy make-dataset, spikedeploy.tracking.datasets.make_dataset).

Sequences: {count} ({names}),
{num_frames} frames of {width}x{height} pixels (W x H) each, as {image_desc}.
Sequence synthetic-<seed> is spikedeploy.tracking.synth.generate_sequence(seed, split={split!r},
num_frames={num_frames}, frame_size=({height}, {width})), seed = {first_seed}..{last_seed}: a target
cut from one of scikit-image's sample photographs moving over another photograph, with scale
change, rotation, illumination change, motion blur, distractors, occlusion and noise (split
"heldout" uses photographs the bundled tracker never saw in training). The ground truth is
exact by construction: the bounding box [x, y, w, h] of the target's rendered mask, clipped to the
frame (an occluded target keeps its full box).

attributes.txt (one OTB code per line) follows these rules on the ground truth:
  SV   some frame's box scale sqrt(w h) differs from the first frame's by more than 2x
  OCC  in some frame more than 10 % of the target's mask is covered by the occluder
  FM   the box center moves more than 20 px between two consecutive frames
  OV   the box touches the frame border in some frame (part of the target may lie outside)
  LR   some frame's box holds fewer than 400 pixels
{extra}
Read it with spikedeploy.tracking.datasets.read_dataset(folder) or the got10k toolkit.
"""


def make_dataset(output: PathLike, *, format: str = "otb", count: int = 12, num_frames: int = 60,
                 first_seed: int = 0, frame_size: Tuple[int, int] = (240, 320), image_format: str = "jpg",
                 split: str = "heldout", overwrite: bool = False, progress: bool = False) -> TrackingDataset:
    """Write ``count`` synthetic sequences (seeds ``first_seed..first_seed+count-1`` of ``split``,
    :func:`spikedeploy.tracking.synth.generate_sequence`) to the folder ``output`` in the layout
    ``format`` and return it read back (:func:`read_dataset`). Sequence ``seed`` is named
    ``synthetic-<seed>`` (LaSOT: class ``synthetic``); frames are ``img/0001.jpg`` (OTB; LaSOT
    ``img/00000001.jpg``, GOT-10k ``00000001.jpg``), JPEG quality 95 without chroma subsampling
    (4:4:4; mean error 1.4-3 grey levels, at most ~21, on these noisy frames), or PNG with
    ``image_format="png"`` (lossless: the frames read back equal the generated ones bit for bit).
    Also written: ``attributes.txt`` per sequence (:func:`synthetic_attributes`), LaSOT's
    ``full_occlusion.txt`` (visible fraction 0), ``out_of_view.txt`` (all 0) and
    ``testing_set.txt``, GOT-10k's ``list.txt``, ``cover.label`` (``ceil(8 visible)``),
    ``absence.label`` (cover 0), ``cut_by_image.label`` and ``meta_info.ini``, and a
    ``README.txt``. The folder is written atomically under the output rules of
    :mod:`spikedeploy.fsutil` (``overwrite``)."""
    from tqdm import tqdm

    from spikedeploy import __version__
    from spikedeploy.fsutil import atomic_directory
    from spikedeploy.tracking.synth import SPLITS, generate_sequence

    if format not in FORMATS:
        raise ConfigError(f"unknown dataset format {format!r}; expected one of {', '.join(FORMATS)}")
    if image_format not in ("jpg", "png"):
        raise ConfigError(f"image_format must be 'jpg' or 'png', got {image_format!r}")
    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    count = _check_count(count, "count", 1)
    first_seed = _check_count(first_seed, "first_seed", 0)
    num_frames = _check_count(num_frames, "num_frames", 1)
    seeds = list(range(first_seed, first_seed + count))
    names = [f"synthetic-{s}" for s in seeds]
    generate_sequence(seeds[0], split, 1, frame_size)  # bad frame_size: fail before the folder is touched
    H, W = int(frame_size[0]), int(frame_size[1])
    with atomic_directory(output, overwrite=overwrite, command="make-dataset") as tmp:
        for seed, name in tqdm(list(zip(seeds, names)), desc="make-dataset", unit="sequence", disable=not progress):
            _write_sequence(tmp, format, name, generate_sequence(seed, split, num_frames, (H, W)), image_format)
        if format == "lasot":
            (tmp / "testing_set.txt").write_text("".join(n + "\n" for n in names), encoding="utf-8")
        elif format == "got10k":
            (tmp / "list.txt").write_text("".join(n + "\n" for n in names), encoding="utf-8")
        extra = {
            "otb": "Layout: <Seq>/img/0001.jpg ..., <Seq>/groundtruth_rect.txt (x,y,w,h per line).\n",
            "lasot": ("Layout: synthetic/<seq>/img/00000001.jpg ..., groundtruth.txt, full_occlusion.txt (1 where "
                      "the target is fully\ncovered), out_of_view.txt (all 0: part of the target always stays in "
                      "the frame), nlp.txt; testing_set.txt\nlists the sequences.\n"),
            "got10k": ("Layout: list.txt, <seq>/00000001.jpg ..., groundtruth.txt (every frame, as in the val "
                       "split), cover.label\n(ceil(8 x visible fraction)), absence.label (cover 0), "
                       "cut_by_image.label (box touches the border), meta_info.ini.\n"),
        }[format]
        image_desc = ("JPEG (quality 95, 4:4:4)" if image_format == "jpg" else "PNG (lossless)")
        (tmp / "README.txt").write_text(_README.format(
            layout={"otb": "OTB", "lasot": "LaSOT", "got10k": "GOT-10k"}[format], version=__version__, count=count,
            names=_some(names, 3), num_frames=num_frames, width=W, height=H, image_desc=image_desc, split=split,
            first_seed=first_seed, last_seed=seeds[-1], extra=extra), encoding="utf-8")
    return read_dataset(output, format)
