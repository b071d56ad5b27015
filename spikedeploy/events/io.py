"""Event files: read and write the layouts users keep event streams in.

=========  =====================================================================================
format     layout
=========  =====================================================================================
aedat4     iniVation's AEDAT 4.0 (the format of FE108 and VisEvent recordings). Written with
           dv-processing (``dv.io.MonoCameraWriter``, LZ4-compressed packets), read with the
           ``aedat`` decoder (Rust): dv-processing's reader does not return on a file whose packets
           are damaged (measured: 5 of 5 files with 20 flipped bytes, none returned within 5 s,
           one ran 10 minutes), while ``aedat`` checks each packet's LZ4 frame and fails at once. The file's one event stream is read
           (frames, IMU and trigger streams of DAVIS recordings are skipped); the sensor size is
           the stream's width and height. AEDAT4 stores x, y as int16 and t >= 0, so a stream
           written to it needs a sensor of at most 32767 x 32767 pixels and non-negative
           timestamps, and a name ending in ``.aedat4`` (dv-processing's writer aborts the process
           on any other suffix; reading has no such limit). The tests read every written file
           back with dv-processing's own reader as well.
npz        a numpy archive with arrays ``x``, ``y``, ``t``, ``p`` (one value per event) and
           ``sensor_size`` = ``[width, height]`` (``[width, height, 2]``, tonic's form, is read
           too). Written compressed.
npy        one array, either structured with fields ``x``, ``y``, ``t``, ``p`` (the aliases
           ``timestamp``, ``polarity``/``on`` of dv-processing and aedat are accepted), or a plain
           ``N x 4`` numeric array with the columns in the order **t, x, y, p** (one event a row).
           An ``N x 4`` array whose column 0 is not sorted, or whose column 2 is sorted and not
           constant as well (so that it could be x, y, t, p), is refused as ambiguous; save a
           structured array instead. A ``4 x N`` array is refused (transpose it). An ``.npy``
           file has no room for the sensor size: give ``sensor_size``. Written structured
           (:data:`~spikedeploy.events.stream.EVENT_DTYPE`).
hdf5       datasets ``events/x``, ``events/y``, ``events/t``, ``events/p`` (DSEC's layout; its
           ``t_offset``, a root dataset or attribute, is added to ``t``) or flat root datasets
           ``x``, ``y``, ``t``, ``p``. The sensor size comes from the attribute ``sensor_size``
           (``[width, height]``) or ``width`` and ``height``, on the events group or the root;
           otherwise give ``sensor_size``. Written in the DSEC layout with ``sensor_size``.
=========  =====================================================================================

``format="auto"`` recognises a file by its first bytes (AEDAT4's version line, zip, npy and HDF5
signatures) and, when those say nothing, by its suffix (``.aedat4``, ``.npz``, ``.npy``, ``.h5``,
``.hdf5``). A sensor size given by the caller must agree with the one the file states.

Every problem with a file -- missing, truncated, garbled, a missing array or field, bad values --
is one :class:`~spikedeploy.errors.InputError` line naming the file; the libraries' own exceptions
never reach the user. Writes are atomic: in-memory formats through
:func:`spikedeploy.fsutil.atomic_write_bytes`; AEDAT4 (which dv-processing writes to a path
itself) to a temporary file in the same folder, then renamed into place. Without ``overwrite`` an
existing file is never replaced.
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
import zipfile
import zlib
from pathlib import Path
from typing import Dict, Optional, Tuple, Union

import numpy as np

from spikedeploy.errors import InputError, OutputPathError, SpikedeployError
from spikedeploy.events.stream import EVENT_DTYPE, EventStream, check_sensor_size, from_arrays
from spikedeploy.fsutil import atomic_write_bytes, check_output_file

__all__ = ["FORMATS", "detect_format", "read_events", "write_events"]

PathLike = Union[str, os.PathLike]

FORMATS = ("aedat4", "npz", "npy", "hdf5")
_SUFFIXES = {".aedat4": "aedat4", ".npz": "npz", ".npy": "npy",
             ".h5": "hdf5", ".hdf5": "hdf5", ".hdf": "hdf5"}
_MAGIC = ((b"#!AER-DAT4", "aedat4"), (b"PK\x03\x04", "npz"), (b"PK\x05\x06", "npz"),
          (b"\x93NUMPY", "npy"), (b"\x89HDF\r\n\x1a\n", "hdf5"))
#: AEDAT4 keeps coordinates in int16
_AEDAT_MAX = 32767
#: field aliases accepted in structured .npy arrays: dv-processing (timestamp, polarity), aedat (on)
_ALIASES = {"x": ("x",), "y": ("y",), "t": ("t", "timestamp", "ts"), "p": ("p", "polarity", "on", "pol")}

Arrays = Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def _dv():
    try:
        import dv_processing
    except ImportError as e:
        raise SpikedeployError(f"writing AEDAT4 files needs the 'dv-processing' package ({e}); install it with "
                               "`pip install dv-processing`") from None
    return dv_processing


def _aedat():
    try:
        import aedat
    except ImportError as e:
        raise SpikedeployError(f"reading AEDAT4 files needs the 'aedat' package ({e}); install it with "
                               "`pip install aedat`") from None
    return aedat


def _h5py():
    try:
        import h5py
    except ImportError as e:
        raise SpikedeployError(f"HDF5 event files need the 'h5py' package ({e}); install it with "
                               "`pip install h5py`") from None
    return h5py


def _check_format(format: str) -> str:
    if format != "auto" and format not in FORMATS:
        raise InputError(f"unknown event file format {format!r}; expected auto or one of {', '.join(FORMATS)}")
    return format


def detect_format(path: PathLike, format: str = "auto", *, sniff: bool = True) -> str:
    """The format of ``path``: ``format`` itself unless it is ``"auto"``; then the file's first
    bytes (``sniff``, for an existing file), then its suffix."""
    if _check_format(format) != "auto":
        return format
    path = Path(path)
    if sniff and path.is_file():
        try:
            with open(path, "rb") as f:
                head = f.read(16)
        except OSError as e:
            raise InputError(f"event file {path} cannot be read: {e.strerror or e}") from None
        for magic, fmt in _MAGIC:
            if head.startswith(magic):
                return fmt
    fmt = _SUFFIXES.get(path.suffix.lower())
    if fmt is None:
        raise InputError(f"event file {path}: cannot tell its format from the suffix {path.suffix or '(none)'!r} "
                         f"or its content; use one of {', '.join(sorted(_SUFFIXES))} or give the format "
                         f"({', '.join(FORMATS)})")
    return fmt


def _reason(e: BaseException) -> str:
    """A library exception as one short clause: the first line that is not a source location or a
    stack trace (dv-processing's messages start with the C++ function and end with a trace)."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    for ln in lines:
        if ln.startswith(("/", "Stacktrace")) or ln[:1].isdigit() and "#" in ln[:5]:
            continue
        return ln.split("Error info: ")[-1]
    return type(e).__name__


# ---------------------------------------------------------------------------------------------
# readers (each returns the four arrays and the sensor size the file states, or None)
# ---------------------------------------------------------------------------------------------


def _check_aedat4_name(path: Path) -> None:
    if path.suffix != ".aedat4":
        raise InputError(f"cannot write {path} as AEDAT4: dv-processing needs the suffix .aedat4 (lower case); "
                         "choose a name ending in .aedat4")


def _read_aedat4(path: Path) -> Tuple[Arrays, Optional[Tuple[int, int]]]:
    aedat = _aedat()
    what = f"AEDAT4 file {path}"
    try:
        decoder = aedat.Decoder(str(path))
        streams = {i: s for i, s in decoder.id_to_stream().items() if s.get("type") == "events"}
        if len(streams) != 1:
            kinds = ", ".join(sorted({str(s.get("type")) for s in decoder.id_to_stream().values()})) or "none"
            raise InputError(f"{what} holds {len(streams) or 'no'} event streams (stream types: {kinds}); "
                             "exactly one is needed")
        (sid, info), = streams.items()
        parts = [packet["events"] for packet in decoder if packet.get("stream_id") == sid and "events" in packet]
    except InputError:
        raise
    except (RuntimeError, OSError, ValueError, KeyError, TypeError) as e:
        raise InputError(f"{what} cannot be read ({_reason(e)}); it is truncated, damaged or not an AEDAT4 "
                         "recording") from None
    ev = np.concatenate(parts) if parts else np.empty(0, [("t", "<u8"), ("x", "<u2"), ("y", "<u2"), ("on", "?")])
    size = (int(info["width"]), int(info["height"])) if "width" in info and "height" in info else None
    return (ev["x"], ev["y"], ev["t"], ev["on"]), size


def _npz_sensor_size(value, what: str) -> Tuple[int, int]:
    a = np.asarray(value)
    if a.ndim == 1 and a.size in (2, 3) and np.issubdtype(a.dtype, np.integer) and (a.size == 2 or a[2] in (1, 2)):
        return check_sensor_size(tuple(int(v) for v in a[:2]), what)
    raise InputError(f"{what}: sensor_size must be [width, height] integers, got {a.tolist()!r}")


def _read_npz(path: Path) -> Tuple[Arrays, Optional[Tuple[int, int]]]:
    what = f"npz file {path}"
    try:
        with np.load(path, allow_pickle=False) as z:
            if not isinstance(z, np.lib.npyio.NpzFile):
                raise InputError(f"{what} is not an npz archive")
            missing = [k for k in ("x", "y", "t", "p") if k not in z.files]
            if missing:
                raise InputError(f"{what} lacks the array(s) {', '.join(missing)} (has {', '.join(z.files) or 'none'}); "
                                 "expected x, y, t, p and sensor_size")
            arrays = tuple(z[k] for k in ("x", "y", "t", "p"))
            size = _npz_sensor_size(z["sensor_size"], what) if "sensor_size" in z.files else None
    except InputError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error, KeyError) as e:
        raise InputError(f"{what} cannot be read ({_reason(e)}); it is truncated, damaged or not an npz archive") from None
    return arrays, size


def _sorted(a: np.ndarray) -> bool:
    return bool(np.all(a[1:] >= a[:-1]))


def _read_npy(path: Path) -> Tuple[Arrays, Optional[Tuple[int, int]]]:
    what = f"npy file {path}"
    try:
        a = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise InputError(f"{what} cannot be read ({_reason(e)}); it is truncated, damaged or not an .npy array") from None
    if not isinstance(a, np.ndarray):
        raise InputError(f"{what} is not a single .npy array")
    if a.dtype.names is not None:
        cols = {}
        for field, aliases in _ALIASES.items():
            found = [n for n in aliases if n in a.dtype.names]
            if not found:
                raise InputError(f"{what}: the structured array has no field {field} (fields: "
                                 f"{', '.join(a.dtype.names)}); expected x, y, t, p")
            cols[field] = a[found[0]].reshape(-1)
        return (cols["x"], cols["y"], cols["t"], cols["p"]), None
    if a.ndim != 2 or 4 not in a.shape:
        raise InputError(f"{what}: expected a structured array (fields x, y, t, p) or an N x 4 array with columns "
                         f"t, x, y, p; got shape {a.shape}, dtype {a.dtype}")
    if a.shape[1] != 4:
        raise InputError(f"{what}: shape {a.shape} has the events along columns; an N x 4 array (one event a row, "
                         "columns t, x, y, p) is expected: save its transpose")
    if not (np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating)):
        raise InputError(f"{what}: an N x 4 event array must be numeric, got dtype {a.dtype}")
    t, x, y, p = a[:, 0], a[:, 1], a[:, 2], a[:, 3]
    if len(a) >= 2:
        if not _sorted(t):
            hint = (" (column 2 is sorted: x, y, t, p order?)" if _sorted(y) else "")
            raise InputError(f"{what}: column 0 of the N x 4 array is not sorted, so it is not the time column{hint}; "
                             "the accepted column order is t, x, y, p; reorder the columns or save a structured "
                             "array with fields x, y, t, p")
        if _sorted(y) and y[-1] != y[0] and not np.array_equal(t, y):
            raise InputError(f"{what}: ambiguous N x 4 array: columns 0 and 2 are both sorted, so it could be "
                             "t, x, y, p or x, y, t, p; save a structured array with fields x, y, t, p")
    return (x, y, t, p), None


def _hdf5_sensor_size(nodes, what: str) -> Optional[Tuple[int, int]]:
    for node in nodes:
        attrs = node.attrs
        if "sensor_size" in attrs:
            return _npz_sensor_size(attrs["sensor_size"], what)
        if "width" in attrs and "height" in attrs:
            return _npz_sensor_size(np.array([attrs["width"], attrs["height"]]).reshape(-1), what)
    return None


def _read_hdf5(path: Path) -> Tuple[Arrays, Optional[Tuple[int, int]]]:
    h5py = _h5py()
    what = f"HDF5 file {path}"
    try:
        with h5py.File(path, "r") as f:
            group = f["events"] if isinstance(f.get("events"), h5py.Group) else f
            where = "events/" if group is not f else ""
            missing = [k for k in ("x", "y", "t", "p") if not isinstance(group.get(k), h5py.Dataset)]
            if missing:
                raise InputError(f"{what} lacks the dataset(s) {', '.join(where + k for k in missing)} (has "
                                 f"{', '.join(where + k for k in group.keys()) or 'none'}); expected events/x, "
                                 "events/y, events/t, events/p or x, y, t, p")
            arrays = tuple(np.asarray(group[k][()]) for k in ("x", "y", "t", "p"))
            offset = None
            if isinstance(f.get("t_offset"), h5py.Dataset):
                offset = f["t_offset"][()]
            elif "t_offset" in f.attrs:
                offset = f.attrs["t_offset"]
            size = _hdf5_sensor_size([group, f] if group is not f else [f], what)
    except InputError:
        raise
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as e:
        reason = _reason(e)
        hint = (" (a compression filter h5py lacks: DSEC files need `pip install hdf5plugin` and "
                "`import hdf5plugin`)" if "filter" in reason.lower() else "")
        raise InputError(f"{what} cannot be read ({reason}){hint}; it is truncated, damaged or not HDF5") from None
    if offset is not None:
        off = np.asarray(offset)
        if off.size != 1 or not np.issubdtype(off.dtype, np.integer):
            raise InputError(f"{what}: t_offset must be one integer (microseconds), got {off.tolist()!r}")
        x, y, t, p = arrays
        arrays = (x, y, np.asarray(t).astype(np.int64) + int(off.reshape(-1)[0]), p)
    return arrays, size


_READERS = {"aedat4": _read_aedat4, "npz": _read_npz, "npy": _read_npy, "hdf5": _read_hdf5}


def read_events(path: PathLike, *, sensor_size: Optional[Tuple[int, int]] = None, format: str = "auto",
                allow_empty: bool = False) -> EventStream:
    """Read the event file ``path`` (see the module docstring for the formats) into a validated
    :class:`EventStream` named by the path. ``sensor_size`` = ``(width, height)``: needed where
    the file does not state one (``.npy``, HDF5 without attributes); where it does, the two must
    agree. An empty stream is refused unless ``allow_empty``."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"event file {path} does not exist")
    if not path.is_file():
        raise InputError(f"event file {path} is not a file")
    fmt = detect_format(path, format)
    (x, y, t, p), stated = _READERS[fmt](path)
    name = str(path)
    given = None if sensor_size is None else check_sensor_size(sensor_size, name)
    if given is not None and stated is not None and given != stated:
        raise InputError(f"event file {path} states a sensor of {stated[0]} x {stated[1]} pixels, but "
                         f"{given[0]} x {given[1]} was given; drop the sensor size or give the file's")
    size = given or stated
    if size is None:
        raise InputError(f"event file {path} ({fmt}) does not state the sensor size; give it "
                         "(sensor_size=(width, height))")
    return from_arrays(x, y, t, p, size, name, allow_empty=allow_empty)


# ---------------------------------------------------------------------------------------------
# writers
# ---------------------------------------------------------------------------------------------


def _npz_bytes(stream: EventStream) -> bytes:
    buf = io.BytesIO()
    ev = stream.events
    np.savez_compressed(buf, x=ev["x"], y=ev["y"], t=ev["t"], p=ev["p"],
                        sensor_size=np.array(stream.sensor_size, np.int64))
    return buf.getvalue()


def _npy_bytes(stream: EventStream) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(stream.events, EVENT_DTYPE), allow_pickle=False)
    return buf.getvalue()


def _hdf5_bytes(stream: EventStream) -> bytes:
    h5py = _h5py()
    buf = io.BytesIO()
    ev = stream.events
    with h5py.File(buf, "w") as f:
        f.attrs["sensor_size"] = np.array(stream.sensor_size, np.int64)
        g = f.create_group("events")
        for k in ("x", "y", "t", "p"):
            g.create_dataset(k, data=np.ascontiguousarray(ev[k]), compression="gzip", compression_opts=1)
    return buf.getvalue()


def _dv_store(dv, stream: EventStream):
    store = dv.EventStore()
    ev = stream.events
    push = store.push_back
    for t, x, y, p in zip(ev["t"].tolist(), ev["x"].tolist(), ev["y"].tolist(), (ev["p"] == 1).tolist()):
        push(t, x, y, p)
    return store


def _dv_write(dv, tmp: str, stream: EventStream) -> None:
    """dv-processing writes on its own thread; the writer flushes and closes the file when it is
    destroyed, which happens on return from this function (its only reference)."""
    config = dv.io.MonoCameraWriter.EventOnlyConfig("spikedeploy", (stream.width, stream.height))
    writer = dv.io.MonoCameraWriter(tmp, config)
    if len(stream):
        writer.writeEvents(_dv_store(dv, stream))
    del writer


def _write_aedat4(path: Path, stream: EventStream, overwrite: bool) -> None:
    _check_aedat4_name(path)
    dv = _dv()
    if stream.width > _AEDAT_MAX or stream.height > _AEDAT_MAX:
        raise InputError(f"cannot write {path}: AEDAT4 stores coordinates as int16, the sensor "
                         f"{stream.width} x {stream.height} is too large; write npz or HDF5 instead")
    if len(stream) and int(stream.events["t"][0]) < 0:
        raise InputError(f"cannot write {path}: AEDAT4 needs timestamps >= 0 microseconds, the first event has "
                         f"t = {int(stream.events['t'][0])}; shift the timestamps first")
    if not overwrite and os.path.lexists(path):
        raise OutputPathError(f"output {path} already exists; choose another path or pass --overwrite")
    parent = path.parent if str(path.parent) else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
        # the temporary name ends in .aedat4 too: dv-processing's writer aborts on any other suffix
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp.aedat4", dir=parent)
    except OSError as e:
        raise OutputPathError(f"cannot write {path}: {e.strerror or e}") from None
    os.close(fd)
    try:
        try:
            _dv_write(dv, tmp, stream)
        except (RuntimeError, OSError, ValueError, IndexError, TypeError) as e:
            raise OutputPathError(f"cannot write {path}: dv-processing failed ({_reason(e)})") from None
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)
        if overwrite:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)  # fails if the name appeared meanwhile: never replaces a file
            except FileExistsError:
                raise OutputPathError(f"output {path} was created by another process while this one wrote it; "
                                      "choose another path or pass --overwrite") from None
            os.unlink(tmp)
    except OSError as e:
        raise OutputPathError(f"cannot write {path}: {e.strerror or e}") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


_WRITERS: Dict[str, object] = {"npz": _npz_bytes, "npy": _npy_bytes, "hdf5": _hdf5_bytes}


def write_events(path: PathLike, stream: EventStream, *, format: str = "auto", overwrite: bool = False) -> Path:
    """Write ``stream`` (validated first; an empty stream is allowed) to ``path`` atomically in
    ``format`` (``"auto"``: from the suffix). An existing ``path`` is replaced only with
    ``overwrite``. Returns the path."""
    path = Path(path)
    fmt = detect_format(path, format, sniff=False)
    stream.validate(allow_empty=True)
    check_output_file(path, "event file", overwrite=overwrite)
    if fmt == "aedat4":
        _write_aedat4(path, stream, overwrite)
    else:
        atomic_write_bytes(path, _WRITERS[fmt](stream), replace=overwrite)
    return path
