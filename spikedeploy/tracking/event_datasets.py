"""Event tracking sequences on disk: FE108's and VisEvent's layouts, the layout spikedeploy writes,
and a generated event benchmark (``spikedeploy make-dataset --events``).

**Layouts** (:data:`EVENT_FORMATS`; a dataset folder holds one sequence folder per sequence):

- ``fe108`` (FE108, Zhang et al., ICCV 2021: a DAVIS346, 346 x 260 pixels, events and APS frames
  in one recording)::

      <seq>/events.aedat4          events + the APS frames stream (+ IMU, triggers)
      <seq>/groundtruth_rect.txt   one box x, y, w, h per annotated (APS) frame, commas
      <seq>/img/*.jpg|png          the APS frames (optional here: not read)

  FE108's splits are ``train/`` and ``test/`` folders of sequences: give one split folder. The
  annotated frames are the APS frames, so the time of frame ``i`` is the timestamp of the ``i``-th
  frame of the AEDAT4 file's frames stream (the frame's ``timestamp`` field, microseconds on the
  events' clock; ``aedat``'s ``packet["frame"]["t"]``); their number must equal the number of boxes.

- ``visevent`` (VisEvent, Wang et al., 2021: DAVIS346 recordings)::

      <seq>/<seq>.aedat4           events + the frames stream
      <seq>/groundtruth.txt        one box per frame, commas; rows of 8 numbers (4 corner points)
                                   become their axis-aligned box [min x, min y, max x - min x, max y - min y]
      <seq>/vis_imgs/, event_imgs/ the frames as images (not read)

  The frame times come from the frames stream, as for FE108.

- **the layout spikedeploy writes** (``fe108`` plus explicit frame times; any event file format)::

      <seq>/events.aedat4          (or events.npz / events.h5 / events.hdf5: spikedeploy.events.read_events)
      <seq>/groundtruth_rect.txt   one box x,y,w,h per annotated frame (float64 written exactly, repr)
      <seq>/frame_times.txt        one integer timestamp (microseconds) per annotated frame, strictly
                                   increasing, on the events' clock
      <seq>/attributes.txt         optional: OTB attribute codes, one a line
      README.txt                   (dataset root) how it was generated

  ``frame_times.txt`` wins over a frames stream where both exist (it is how FE108-style folders
  without APS frames, or with other annotation times, say when their frames were).

**Time convention.** Frame ``i``'s search window is ``[t_{i-1}, t_i)``; frame 0 is the initial
box, its template cut from ``[t_0, t_1)`` (:mod:`spikedeploy.tracking.event_tracker`).

**Errors.** Everything wrong with a sequence folder is one :class:`~spikedeploy.errors.InputError`
line naming the file: a missing events or ground-truth file, no frame times, frame times that are
not integers or not strictly increasing, box and frame-time counts that differ, fewer than two
frames, and (when the events are read, :meth:`EventTrackingSequence.load_events`) everything
:func:`spikedeploy.events.read_events` refuses -- unsorted timestamps, events outside the sensor,
an empty stream, a truncated file.

Reading is lazy about events: :func:`read_event_dataset` parses the text files of every sequence;
events (and frame times that live in an AEDAT4 frames stream, which needs the whole file decoded)
are read by :meth:`EventTrackingSequence.load_events` / :meth:`~EventTrackingSequence.load_frame_times`,
in the task that tracks the sequence.

**Generated benchmark** (:func:`make_event_dataset`): held-out synthetic event sequences
(:func:`spikedeploy.events.synthetic_event_sequence`) in the layout above.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from spikedeploy.errors import ConfigError, InputError

__all__ = [
    "EVENT_FORMATS", "EVENT_FILE_NAMES", "FRAME_TIMES_FILE", "EventTrackingSequence", "EventTrackingDataset",
    "read_frame_times", "aedat4_frame_times", "detect_event_format", "is_event_dataset", "read_event_sequence",
    "read_event_dataset", "write_event_sequence", "make_event_dataset",
]

PathLike = Union[str, os.PathLike]

#: the event dataset layouts read here (module docstring)
EVENT_FORMATS = ("fe108", "visevent")
#: the events file of an FE108-style sequence, in the order looked for
EVENT_FILE_NAMES = ("events.aedat4", "events.npz", "events.h5", "events.hdf5")
FRAME_TIMES_FILE = "frame_times.txt"
#: difficulty of the generated held-out event sequences (the camera pan grows with it and floods the
#: background with events; :mod:`spikedeploy.tracking.event_evaluation` explains the choice)
EVENT_HELDOUT_DIFFICULTY = 0.3
_GT_FILES = {"fe108": "groundtruth_rect.txt", "visevent": "groundtruth.txt"}
_WRITE_FORMATS = {"aedat4": "events.aedat4", "npz": "events.npz", "hdf5": "events.h5"}


# ---------------------------------------------------------------------------------------------
# small readers
# ---------------------------------------------------------------------------------------------


def _check_times(t: np.ndarray, where: str) -> np.ndarray:
    if t.ndim != 1:
        raise InputError(f"{where}: frame times must be one timestamp per frame, got shape {list(t.shape)}")
    if len(t) < 2:
        raise InputError(f"{where} holds {len(t)} frame time(s); a track needs at least two annotated frames")
    bad = np.flatnonzero(np.diff(t) <= 0)
    if bad.size:
        i = int(bad[0]) + 1
        raise InputError(f"{where}: frame times must increase strictly: frame {i} has t = {int(t[i])} us, not after "
                         f"frame {i - 1} (t = {int(t[i - 1])} us)")
    return t


def read_frame_times(path: PathLike) -> np.ndarray:
    """Frame times (int64 microseconds, strictly increasing, at least two) from a text file (one
    integer a line; blank lines skipped; a value like ``1.5e6`` that is an integer is accepted) or
    a ``.npy`` array of integers. One-line :class:`InputError` naming the file otherwise."""
    from spikedeploy.validate import detail, read_npy

    path = Path(path)
    where = f"frame-times file {path}"
    if not path.is_file():
        raise InputError(f"{where} does not exist" if not path.exists() else f"{where} is not a file")
    if path.suffix.lower() == ".npy":
        a = np.asarray(read_npy(path, "frame-times file", max_elements=10_000_000))
        if a.dtype.kind not in "iu":
            raise InputError(f"{where}: dtype {a.dtype}; frame times are integer microseconds")
        return _check_times(a.astype(np.int64).reshape(-1) if a.ndim == 1 else a, where)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"{where} cannot be read: {detail(e)}") from None
    vals: List[int] = []
    for lineno, line in enumerate(text.splitlines(), 1):
        s = line.strip()
        if not s:
            continue
        try:
            v = float(s)
        except ValueError:
            raise InputError(f"{where}: line {lineno} ({s[:40]!r}) is not one timestamp (one integer number of "
                             "microseconds per line)") from None
        if not np.isfinite(v) or v != int(v) or abs(v) >= 2.0 ** 63:
            raise InputError(f"{where}: line {lineno} ({s[:40]!r}) is not an integer number of microseconds"
                             + (" (seconds? multiply by 1e6)" if np.isfinite(v) and v != int(v) else ""))
        vals.append(int(s) if s.lstrip("+-").isdigit() else int(v))
    return _check_times(np.asarray(vals, dtype=np.int64), where)


def aedat4_frame_times(path: PathLike) -> np.ndarray:
    """The timestamps (int64 microseconds) of the frames of the AEDAT4 file ``path``'s frames
    stream, in file order (``aedat``'s ``packet["frame"]["t"]``): the APS frames of a DAVIS
    recording, which FE108 and VisEvent annotate. A file without exactly one frames stream, or with
    fewer than two frames, is an InputError."""
    from spikedeploy.events.io import _aedat, _reason

    path = Path(path)
    what = f"AEDAT4 file {path}"
    if not path.is_file():
        raise InputError(f"{what} does not exist")
    aedat = _aedat()
    try:
        decoder = aedat.Decoder(str(path))
        streams = [i for i, s in decoder.id_to_stream().items() if s.get("type") == "frame"]
        if len(streams) != 1:
            raise InputError(f"{what} holds {len(streams) or 'no'} frames streams, so it does not say when the "
                             f"annotated frames were; give the frame times ({FRAME_TIMES_FILE}, one microsecond "
                             "timestamp per annotated frame)")
        sid = streams[0]
        times = [int(p["frame"]["t"]) for p in decoder if p.get("stream_id") == sid and "frame" in p]
    except InputError:
        raise
    except (RuntimeError, OSError, ValueError, KeyError, TypeError) as e:
        raise InputError(f"{what} cannot be read ({_reason(e)}); it is truncated, damaged or not an AEDAT4 "
                         "recording") from None
    return _check_times(np.asarray(times, dtype=np.int64), f"the frames stream of {what}")


def _read_boxes(path: Path, fmt: str) -> np.ndarray:
    """Ground truth: 4 numbers a row (x, y, w, h), or VisEvent's 8 (four corners)."""
    from spikedeploy.tracking.datasets import _read_table
    from spikedeploy.validate import check_ground_truth

    if not path.is_file():
        raise InputError(f"ground truth {path} does not exist" if not path.exists()
                         else f"ground truth {path} is not a file")
    gt = _read_table(path, "ground truth", None)
    if len(gt) == 0:
        raise InputError(f"ground truth {path} holds no boxes; give one x, y, w, h line per frame")
    if gt.shape[1] == 8 and fmt == "visevent":
        xs, ys = gt[:, 0::2], gt[:, 1::2]
        x0, y0 = xs.min(axis=1), ys.min(axis=1)
        gt = np.stack([x0, y0, xs.max(axis=1) - x0, ys.max(axis=1) - y0], axis=1)
    elif gt.shape[1] != 4:
        raise InputError(f"ground truth {path}: rows of {gt.shape[1]} numbers; expected 4 (x, y, w, h)"
                         + (" or 8 (four corners)" if fmt == "visevent" else ""))
    return check_ground_truth(gt, f"ground truth {path}")


# ---------------------------------------------------------------------------------------------
# sequences and datasets
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class EventTrackingSequence:
    """One event sequence (one target), its files listed and its annotations parsed.

    ``events_path``: the event file (read by :meth:`load_events`); ``ground_truth``: float64
    ``[N, 4]`` boxes (read-only); ``frame_times``: int64 ``[N]`` microseconds (read-only) when
    they come from a text file, or None when they live in ``events_path``'s frames stream
    (:meth:`load_frame_times` decodes it); ``frame_times_source``: where they come from;
    ``absent`` (None: the layouts have no such labels), ``attributes``, ``meta`` as for
    :class:`~spikedeploy.tracking.datasets.TrackingSequence`. ``sensor_size``: ``(W, H)`` when
    known (after :meth:`load_events`, or given), else None. ``kind`` is ``"events"`` (the RGB
    sequences' attribute reads ``"frames"``): how the evaluation engine tells them apart."""

    name: str
    events_path: str
    ground_truth: np.ndarray
    frame_times: Optional[np.ndarray]
    frame_times_source: str
    format: str = "fe108"
    absent: Optional[np.ndarray] = None
    attributes: Tuple[str, ...] = ()
    meta: Dict[str, str] = field(default_factory=dict)
    sensor_size: Optional[Tuple[int, int]] = None

    kind = "events"

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name:
            raise InputError(f"a sequence name must be a non-empty string, got {self.name!r}")
        gt = np.array(self.ground_truth, dtype=np.float64)
        if gt.ndim != 2 or gt.shape[1] != 4 or len(gt) < 2:
            raise InputError(f"event sequence {self.name}: ground truth of shape {list(gt.shape)}; expected [N, 4] "
                             "with N >= 2 annotated frames")
        gt.setflags(write=False)
        object.__setattr__(self, "ground_truth", gt)
        if self.frame_times is not None:
            t = np.array(self.frame_times, dtype=np.int64)
            self._check_count(t)
            t.setflags(write=False)
            object.__setattr__(self, "frame_times", t)
        object.__setattr__(self, "attributes", tuple(str(a) for a in self.attributes))
        object.__setattr__(self, "meta", dict(self.meta))

    def _check_count(self, t: np.ndarray) -> None:
        _check_times(t, f"event sequence {self.name}: {self.frame_times_source}")
        if len(t) != len(self.ground_truth):
            raise InputError(f"event sequence {self.name}: {self.frame_times_source} gives {len(t)} frame times but "
                             f"the ground truth has {len(self.ground_truth)} boxes; give one time per annotated frame")

    @property
    def num_frames(self) -> int:
        return len(self.ground_truth)

    @property
    def init_box(self) -> np.ndarray:
        return self.ground_truth[0].copy()

    @property
    def full_ground_truth(self) -> bool:
        return True

    def load_frame_times(self) -> np.ndarray:
        """The frame times (int64 ``[N]``): the parsed text file, or the AEDAT4 frames stream
        decoded now (its count checked against the ground truth)."""
        if self.frame_times is not None:
            return self.frame_times
        t = aedat4_frame_times(self.events_path)
        self._check_count(t)
        return t

    def load_events(self, *, sensor_size: Optional[Tuple[int, int]] = None):
        """The validated :class:`~spikedeploy.events.EventStream` of ``events_path``
        (:func:`spikedeploy.events.read_events`: one-line errors for every bad file)."""
        from spikedeploy.events.io import read_events

        return read_events(self.events_path, sensor_size=sensor_size or self.sensor_size)

    def image_size(self) -> Tuple[int, int]:
        """``(height, width)`` of the sensor (reads the events when the size is not known)."""
        w, h = self.sensor_size if self.sensor_size is not None else self.load_events().sensor_size
        return int(h), int(w)

    def __repr__(self) -> str:
        return (f"EventTrackingSequence(name={self.name!r}, num_frames={self.num_frames}, "
                f"events={self.events_path!r}, frame_times={self.frame_times_source!r})")


@dataclass(frozen=True, eq=False)
class EventTrackingDataset:
    """Event sequences (unique names) read from ``root`` in layout ``format`` (one of
    :data:`EVENT_FORMATS`). ``results_format`` / ``protocol``: results files are written in the
    OTB layout and scored with the OTB protocol (FE108's and VisEvent's toolkits score
    success/precision as OTB does)."""

    root: Path
    format: str
    sequences: Tuple[EventTrackingSequence, ...]

    results_format = "otb"
    protocol = "otb"
    kind = "events"

    def __post_init__(self):
        if self.format not in EVENT_FORMATS:
            raise ConfigError(f"unknown event dataset format {self.format!r}; expected one of {', '.join(EVENT_FORMATS)}")
        seqs = tuple(self.sequences)
        index: Dict[str, int] = {}
        for i, s in enumerate(seqs):
            if s.name in index:
                raise InputError(f"dataset {self.root} holds two sequences named {s.name!r}")
            index[s.name] = i
        object.__setattr__(self, "root", Path(self.root))
        object.__setattr__(self, "sequences", seqs)
        object.__setattr__(self, "_index", index)

    @property
    def names(self) -> Tuple[str, ...]:
        return tuple(s.name for s in self.sequences)

    def __len__(self) -> int:
        return len(self.sequences)

    def __iter__(self) -> Iterator[EventTrackingSequence]:
        return iter(self.sequences)

    def __contains__(self, name) -> bool:
        return name in self._index

    def __getitem__(self, key: Union[int, str]) -> EventTrackingSequence:
        if isinstance(key, str):
            if key not in self._index:
                from spikedeploy.tracking.datasets import _some

                raise ConfigError(f"dataset {self.root} has no sequence {key!r}; it has {_some(self.names)}")
            return self.sequences[self._index[key]]
        return self.sequences[int(key)]

    def subset(self, names) -> "EventTrackingDataset":
        names = [names] if isinstance(names, str) else list(names)
        if len(set(names)) != len(names):
            raise ConfigError(f"a sequence is named twice in {names}")
        return EventTrackingDataset(self.root, self.format, tuple(self[n] for n in names))

    def __repr__(self) -> str:
        return f"EventTrackingDataset(root={str(self.root)!r}, format={self.format!r}, sequences={len(self)})"


# ---------------------------------------------------------------------------------------------
# detection and reading
# ---------------------------------------------------------------------------------------------


def _fe108_events(folder: Path) -> Optional[Path]:
    for n in EVENT_FILE_NAMES:
        if (folder / n).is_file():
            return folder / n
    return None


def _sequence_format(folder: Path) -> Optional[str]:
    """``fe108`` / ``visevent`` when ``folder`` looks like a sequence of that layout, else None."""
    if _fe108_events(folder) is not None:
        return "fe108"
    if (folder / f"{folder.name}.aedat4").is_file():
        return "visevent"
    return None


def detect_event_format(path: PathLike) -> str:
    """The layout of a sequence folder or of a dataset folder of sequences: ``fe108`` if it (or a
    sub-folder) holds ``events.aedat4`` (or ``events.npz``/``.h5``/``.hdf5``), ``visevent`` if it
    (or a sub-folder) holds ``<folder name>.aedat4``. Both or neither: InputError."""
    path = _check_dir(Path(path))
    own = _sequence_format(path)
    if own is not None:
        return own
    found = {f for f in (_sequence_format(Path(d)) for d in _sorted_subdirs(path)) if f}
    if len(found) == 1:
        return found.pop()
    if not found:
        splits = [s for s in ("train", "test") if (path / s).is_dir()
                  and any(_sequence_format(Path(d)) for d in _sorted_subdirs(path / s))]
        hint = f"; it holds the split folders {', '.join(splits)}: give one of them" if splits else ""
        raise InputError(f"no event sequences in {path}: expected <seq>/events.aedat4 + <seq>/groundtruth_rect.txt "
                         f"(FE108, or spikedeploy's layout with frame_times.txt) or <seq>/<seq>.aedat4 + "
                         f"<seq>/groundtruth.txt (VisEvent){hint}")
    raise InputError(f"dataset folder {path} mixes FE108 and VisEvent sequences; give the format explicitly")


def is_event_dataset(path: PathLike) -> bool:
    """True when ``path`` is a folder :func:`detect_event_format` recognizes (no error)."""
    try:
        detect_event_format(path)
    except InputError:
        return False
    return True


def _check_dir(path: Path) -> Path:
    if not path.exists():
        raise InputError(f"event dataset folder {path} does not exist")
    if not path.is_dir():
        raise InputError(f"{path} is not a folder; give the folder of an event sequence or of event sequences")
    return path


def _sorted_subdirs(root: Path) -> List[str]:
    from spikedeploy.tracking.datasets import _subdirs

    return [d.path for d in _subdirs(root)]


def _check_format(format: str) -> str:
    if format not in EVENT_FORMATS and format != "auto":
        raise ConfigError(f"unknown event dataset format {format!r}; expected one of {', '.join(EVENT_FORMATS)} "
                          "or auto")
    return format


def _read_sequence(folder: Path, fmt: str, *, eager: bool) -> EventTrackingSequence:
    from spikedeploy.tracking.datasets import _read_attributes

    name = folder.name
    if fmt == "fe108":
        events = _fe108_events(folder)
        if events is None:
            raise InputError(f"event sequence {folder}: no events file ({' or '.join(EVENT_FILE_NAMES)})")
    else:
        events = folder / f"{name}.aedat4"
        if not events.is_file():
            raise InputError(f"VisEvent sequence {folder}: {events} does not exist")
    gt = _read_boxes(folder / _GT_FILES[fmt], fmt)
    times_file = folder / FRAME_TIMES_FILE
    if times_file.exists():
        times, source = read_frame_times(times_file), str(times_file)
    elif events.suffix == ".aedat4":
        times, source = None, f"the frames stream of {events}"
    else:
        raise InputError(f"event sequence {folder}: no frame times: {times_file} does not exist (one microsecond "
                         f"timestamp per annotated frame; only an AEDAT4 file with APS frames can do without)")
    seq = EventTrackingSequence(name, str(events), gt, times, source, fmt,
                                attributes=_read_attributes(folder / "attributes.txt"))
    if eager and times is None:
        seq.load_frame_times()
    return seq


def read_event_sequence(path: PathLike, format: str = "auto") -> EventTrackingSequence:
    """The event sequence in folder ``path`` (layout ``format`` or ``"auto"``; module
    docstring), its annotations checked now (frame times from an AEDAT4 frames stream decoded and
    counted too). The events are read by :meth:`EventTrackingSequence.load_events`."""
    path = _check_dir(Path(path))
    fmt = _check_format(format)
    if fmt == "auto":
        fmt = _sequence_format(path)
        if fmt is None:
            raise InputError(f"{path} is not an event sequence folder: expected events.aedat4 (or events.npz/.h5) + "
                             "groundtruth_rect.txt (FE108; frame_times.txt for other event files) or "
                             f"{path.name}.aedat4 + groundtruth.txt (VisEvent)")
    return _read_sequence(path, fmt, eager=True)


def read_event_dataset(root: PathLike, format: str = "auto") -> EventTrackingDataset:
    """Every event sequence in the dataset folder ``root`` (sub-folders holding an events file of
    the layout; others are skipped), sorted by name as the RGB readers sort. Annotation files are
    parsed and checked; events and AEDAT4 frame streams are read when a sequence is tracked."""
    root = _check_dir(Path(root))
    fmt = _check_format(format)
    if fmt == "auto":
        fmt = detect_event_format(root)
    if _sequence_format(root) == fmt:
        raise InputError(f"{root} is one event sequence, not a dataset folder of sequences; give its parent folder")
    seqs = [_read_sequence(Path(d), fmt, eager=False) for d in _sorted_subdirs(root)
            if _sequence_format(Path(d)) == fmt]
    if not seqs:
        detect_event_format(root)  # the one-line explanation
        raise InputError(f"no {fmt} event sequences in {root}")
    return EventTrackingDataset(root, fmt, tuple(seqs))


# ---------------------------------------------------------------------------------------------
# writing
# ---------------------------------------------------------------------------------------------


def write_event_sequence(folder: PathLike, events, frame_times, boxes, *, event_format: str = "aedat4",
                         attributes: Sequence[str] = (), overwrite: bool = False) -> Path:
    """Write one sequence in spikedeploy's layout (module docstring) into ``folder`` (created;
    its files are refused if they exist, unless ``overwrite``): the events (``event_format``
    aedat4, npz or hdf5), ``groundtruth_rect.txt``, ``frame_times.txt`` and ``attributes.txt``.
    Returns the folder."""
    from spikedeploy.events.io import write_events
    from spikedeploy.fsutil import atomic_write_bytes
    from spikedeploy.tracking.datasets import _table_bytes

    if event_format not in _WRITE_FORMATS:
        raise ConfigError(f"event file format {event_format!r}: expected one of {', '.join(_WRITE_FORMATS)}")
    folder = Path(folder)
    t = _check_times(np.asarray(frame_times, dtype=np.int64).reshape(-1), f"frame times of {folder}")
    b = np.asarray(boxes, dtype=np.float64)
    if b.shape != (len(t), 4):
        raise InputError(f"{folder}: boxes of shape {list(b.shape)} for {len(t)} frame times; give one box per frame")
    folder.mkdir(parents=True, exist_ok=True)
    write_events(folder / _WRITE_FORMATS[event_format], events, overwrite=overwrite)
    atomic_write_bytes(folder / _GT_FILES["fe108"], _table_bytes(b), replace=overwrite)
    atomic_write_bytes(folder / FRAME_TIMES_FILE, "".join(f"{int(v)}\n" for v in t).encode("ascii"), replace=overwrite)
    atomic_write_bytes(folder / "attributes.txt", "".join(f"{a}\n" for a in attributes).encode("utf-8"),
                       replace=overwrite)
    return folder


_README = """\
A generated event-camera tracking benchmark in spikedeploy's FE108-style layout, written by
spikedeploy {version} (spikedeploy make-dataset --events,
spikedeploy.tracking.event_datasets.make_event_dataset).

Sequences: {count} ({names}), {num_frames} annotated frames each at {fps:g} fps, sensor
{width}x{height} pixels (W x H). Sequence synthetic-<seed> is
spikedeploy.events.synthetic_event_sequence(seed, split={split!r}, num_frames={num_frames},
frame_size=({height}, {width}), fps={fps:g}, difficulty={difficulty:g}), seed = {first_seed}..{last_seed}: the synthetic tracking
sequence of spikedeploy.tracking.synth (split "heldout": photographs never used in training)
recorded by spikedeploy's event-camera simulator (log-intensity crossings with reference reset,
threshold mismatch, refractory period, noise; each sequence its own simulated camera).

Layout:
  <seq>/{events_name}         the events (x, y, t in microseconds, p)
  <seq>/groundtruth_rect.txt  one box x,y,w,h per annotated frame (exact: the target's mask box)
  <seq>/frame_times.txt       one timestamp (microseconds) per annotated frame; frame i's events
                              are those of [t_(i-1), t_i)
  <seq>/attributes.txt        OTB attribute codes derived from the ground truth (SV, OCC, FM, OV, LR)

Read it with spikedeploy.tracking.event_datasets.read_event_dataset(folder); evaluate it with
spikedeploy evaluate --dataset FOLDER --format fe108.
"""


def make_event_dataset(output: PathLike, *, count: int = 12, num_frames: int = 60, first_seed: int = 0,
                       frame_size: Tuple[int, int] = (240, 320), fps: float = 30.0, split: str = "heldout",
                       event_format: str = "aedat4", overwrite: bool = False,
                       progress: bool = False, difficulty: float = EVENT_HELDOUT_DIFFICULTY) -> EventTrackingDataset:
    """Write ``count`` synthetic event sequences (seeds ``first_seed..first_seed+count-1`` of
    ``split``, :func:`spikedeploy.events.synthetic_event_sequence`) into the folder ``output`` in
    spikedeploy's layout (module docstring), named ``synthetic-<seed>``, with a ``README.txt``, and
    return it read back. The folder is written atomically under the output rules of
    :mod:`spikedeploy.fsutil` (an existing folder is replaced only with ``overwrite``)."""
    from tqdm import tqdm

    from spikedeploy import __version__
    from spikedeploy.events.simulator import synthetic_event_sequence
    from spikedeploy.fsutil import atomic_directory
    from spikedeploy.tracking.datasets import _check_count, _some, synthetic_attributes
    from spikedeploy.tracking.synth import SPLITS

    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    if event_format not in _WRITE_FORMATS:
        raise ConfigError(f"event file format {event_format!r}: expected one of {', '.join(_WRITE_FORMATS)}")
    count = _check_count(count, "count", 1)
    first_seed = _check_count(first_seed, "first_seed", 0)
    num_frames = _check_count(num_frames, "num_frames", 2)
    seeds = list(range(first_seed, first_seed + count))
    names = [f"synthetic-{s}" for s in seeds]
    H, W = int(frame_size[0]), int(frame_size[1])
    if isinstance(difficulty, bool) or not isinstance(difficulty, (int, float)) or not 0.0 <= float(difficulty) <= 1.0:
        raise ConfigError(f"make-dataset --events: difficulty must be a number in [0, 1], got {difficulty!r}")
    synthetic_event_sequence(seeds[0], split, 2, (H, W), fps)  # bad size / fps: fail before the folder is touched
    with atomic_directory(output, overwrite=overwrite, command="make-dataset --events") as tmp:
        for seed, name in tqdm(list(zip(seeds, names)), desc="make-dataset --events", unit="sequence",
                               disable=not progress):
            es = synthetic_event_sequence(seed, split, num_frames, (H, W), fps, difficulty=float(difficulty))
            write_event_sequence(tmp / name, es.events, es.frame_times, es.boxes, event_format=event_format,
                                 attributes=synthetic_attributes(es.boxes, es.visible, (H, W)))
        (tmp / "README.txt").write_text(_README.format(
            version=__version__, count=count, names=_some(names, 3), num_frames=num_frames, fps=float(fps), width=W,
            height=H, split=split, first_seed=first_seed, last_seed=seeds[-1], difficulty=float(difficulty),
            events_name=_WRITE_FORMATS[event_format]), encoding="utf-8")
    return read_event_dataset(output, "fe108")
