"""The in-memory form of an event stream: a structured numpy array plus the sensor size.

One event is ``(x, y, t, p)`` in the dtype :data:`EVENT_DTYPE` (packed, 13 bytes an event)::

    x  uint16   column, 0 <= x < width   (pixel i spans [i, i + 1), as for frames)
    y  uint16   row,    0 <= y < height
    t  int64    timestamp in microseconds (any origin; AEDAT4 files use Unix time)
    p  int8     polarity: 1 = ON (brightness increased), 0 = OFF (decreased); no other value

The stream is sorted by ``t`` (non-decreasing; events of equal ``t`` keep the order they came in).
``sensor_size`` is ``(width, height)``, the order of tonic's ``sensor_size[:2]`` and of AEDAT4's
resolution. :class:`EventStream` itself is a plain frozen holder: :meth:`EventStream.validate`
checks every invariant above and raises a one-line :class:`~spikedeploy.errors.InputError` that
names the source (``name``: usually the file it was read from) and the first offending event.
Everything in :mod:`spikedeploy.events` that produces a stream (readers, :func:`from_arrays`, the
simulator) validates it, and everything that consumes one validates it first.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np

from spikedeploy.errors import InputError

__all__ = ["EVENT_DTYPE", "EventStream", "from_arrays", "check_sensor_size"]

#: the event record: x, y (uint16 pixel), t (int64 microseconds), p (int8: 1 = ON, 0 = OFF)
EVENT_DTYPE = np.dtype([("x", "<u2"), ("y", "<u2"), ("t", "<i8"), ("p", "i1")])
_FIELDS = EVENT_DTYPE.names
_LIMITS = {"x": (0, np.iinfo(np.uint16).max), "y": (0, np.iinfo(np.uint16).max),
           "t": (np.iinfo(np.int64).min, np.iinfo(np.int64).max), "p": (0, 1)}


def _where(name: Optional[str]) -> str:
    return f"event stream {name}" if name else "event stream"


def check_sensor_size(sensor_size, source: Optional[str] = None) -> Tuple[int, int]:
    """``(width, height)`` as two integers in 1..65536, or an InputError naming ``source``."""
    ok = (isinstance(sensor_size, (tuple, list, np.ndarray)) and len(sensor_size) == 2
          and all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in sensor_size))
    if ok:
        w, h = int(sensor_size[0]), int(sensor_size[1])
        if 1 <= w <= 65536 and 1 <= h <= 65536:
            return w, h
    raise InputError(f"{_where(source)}: sensor size must be (width, height), two integers in 1..65536, "
                     f"got {sensor_size!r}")


@dataclass(frozen=True, eq=False)
class EventStream:
    """``events``: a 1-D array of :data:`EVENT_DTYPE`, sorted by ``t``; ``sensor_size``:
    ``(width, height)``; ``name``: where it came from (a file path, a sequence name), used in
    every error message. Construction does not copy or check: call :meth:`validate`. Streams
    compare by identity (compare ``events`` arrays with ``np.array_equal``)."""

    events: np.ndarray
    sensor_size: Tuple[int, int]
    name: Optional[str] = None

    # -- invariants -----------------------------------------------------------------------------

    def validate(self, *, allow_empty: bool = False) -> "EventStream":
        """Check the dtype (exactly :data:`EVENT_DTYPE`, 1-D), the sensor size, that every
        coordinate lies on the sensor, that every polarity is 0 or 1, that ``t`` is non-decreasing
        and (unless ``allow_empty``) that there is at least one event. Returns ``self``; raises a
        one-line InputError naming the stream and the first offending event otherwise."""
        where = _where(self.name)
        ev = self.events
        if not isinstance(ev, np.ndarray):
            raise InputError(f"{where}: events must be a numpy structured array, got {type(ev).__name__}")
        if ev.dtype.names is None:
            raise InputError(f"{where}: events must be a structured array with fields x, y, t, p "
                             f"(dtype {EVENT_DTYPE.descr}), got a plain {ev.dtype} array")
        missing = [f for f in _FIELDS if f not in ev.dtype.names]
        if missing:
            raise InputError(f"{where}: events lack the field(s) {', '.join(missing)} "
                             f"(have {', '.join(ev.dtype.names)}); expected x, y, t, p")
        if ev.dtype != EVENT_DTYPE:
            got = ", ".join(f"{n} {ev.dtype[n]}" for n in ev.dtype.names)
            raise InputError(f"{where}: events have dtype ({got}), expected (x uint16, y uint16, t int64, p int8); "
                             "convert with spikedeploy.events.from_arrays")
        if ev.ndim != 1:
            raise InputError(f"{where}: events must be a 1-D array, got shape {ev.shape}")
        w, h = check_sensor_size(self.sensor_size, self.name)
        if len(ev) == 0:
            if allow_empty:
                return self
            raise InputError(f"{where} holds no events; an event stream with at least one event is needed here")
        for field, size in (("x", w), ("y", h)):
            bad = np.flatnonzero(ev[field] >= size)
            if bad.size:
                i = int(bad[0])
                raise InputError(f"{where}: event {i} has {field} = {int(ev[field][i])} outside the sensor "
                                 f"({w} x {h}: 0 <= x < {w}, 0 <= y < {h}); {bad.size} event(s) are outside; "
                                 "give the right sensor size")
        bad = np.flatnonzero((ev["p"] != 0) & (ev["p"] != 1))
        if bad.size:
            i = int(bad[0])
            raise InputError(f"{where}: event {i} has polarity {int(ev['p'][i])}; polarity must be 1 (ON) or 0 (OFF)")
        t = ev["t"]
        bad = np.flatnonzero(t[1:] < t[:-1])
        if bad.size:
            i = int(bad[0]) + 1
            raise InputError(f"{where}: timestamps are not sorted: event {i} has t = {int(t[i])} us, before "
                             f"event {i - 1} (t = {int(t[i - 1])} us); {bad.size} place(s) out of order; sort the "
                             "events by t (a stable sort keeps the order of equal timestamps)")
        return self

    # -- helpers --------------------------------------------------------------------------------

    def __len__(self) -> int:
        return int(len(self.events))

    @property
    def width(self) -> int:
        return int(self.sensor_size[0])

    @property
    def height(self) -> int:
        return int(self.sensor_size[1])

    @property
    def duration(self) -> int:
        """``t[-1] - t[0]`` in microseconds (0 for fewer than two events)."""
        if len(self.events) < 2:
            return 0
        return int(self.events["t"][-1]) - int(self.events["t"][0])

    def slice_time(self, t0: int, t1: int) -> "EventStream":
        """The events with ``t0 <= t < t1`` (half-open, like dv-processing's ``sliceTime``), a
        view of this stream's array (no copy); same sensor size and name."""
        t = self.events["t"]
        i0, i1 = np.searchsorted(t, [int(t0), int(t1)], side="left")
        return EventStream(self.events[i0:max(i0, i1)], self.sensor_size, self.name)

    def __repr__(self) -> str:
        span = f", {self.duration} us" if len(self) else ""
        return (f"EventStream({len(self)} events, {self.sensor_size[0]} x {self.sensor_size[1]}{span}"
                f"{', ' + repr(self.name) if self.name else ''})")


def _as_integer(a, field: str, where: str) -> np.ndarray:
    """``a`` as an int64 array, refusing non-integer values (floats with a fraction, NaN) and
    values outside the field's range, with one line naming the field."""
    a = np.asarray(a)
    if a.ndim != 1:
        raise InputError(f"{where}: field {field} must be 1-D, got shape {a.shape}")
    if a.dtype == np.bool_:
        a = a.astype(np.int64)
    elif np.issubdtype(a.dtype, np.floating):
        if a.size and not np.all(np.isfinite(a)):
            raise InputError(f"{where}: field {field} holds NaN or infinite values")
        if a.size and not np.array_equal(a, np.floor(a)):
            hint = (" (timestamps must be integer microseconds; seconds? multiply by 1e6 and round)"
                    if field == "t" else "")
            raise InputError(f"{where}: field {field} holds non-integer values{hint}")
        if a.size and (a.min() < -2.0**63 or a.max() >= 2.0**63):
            raise InputError(f"{where}: field {field} holds values beyond the int64 range")
        a = a.astype(np.int64)
    elif np.issubdtype(a.dtype, np.integer):
        if a.dtype == np.uint64 and a.size and a.max() > np.iinfo(np.int64).max:
            raise InputError(f"{where}: field {field} holds values beyond the int64 range")
        a = a.astype(np.int64)
    else:
        raise InputError(f"{where}: field {field} must be numeric, got dtype {a.dtype}")
    lo, hi = _LIMITS[field]
    if a.size and field != "t":
        bad = np.flatnonzero((a < lo) | (a > hi))
        if bad.size:
            i = int(bad[0])
            if field == "p":
                vals = np.unique(a)
                hint = ("; polarities -1/1 (OFF/ON)? map them with p = (p > 0)" if set(vals.tolist()) <= {-1, 0, 1}
                        else "")
                raise InputError(f"{where}: polarity values {vals[:6].tolist()} found; polarity must be 1 (ON) or "
                                 f"0 (OFF){hint}")
            raise InputError(f"{where}: event {i} has {field} = {int(a[i])}, outside {lo}..{hi}")
    return a


def from_arrays(x, y, t, p, sensor_size, name: Optional[str] = None, *, allow_empty: bool = False) -> EventStream:
    """A validated :class:`EventStream` from four 1-D arrays of equal length (any integer dtype,
    bool polarity, or floats holding integer values). Refuses fractions, out-of-range values,
    polarities other than 0/1 (with the fix for -1/1), unequal lengths, events outside the sensor
    and unsorted timestamps, each with one line naming ``name`` and the field."""
    where = _where(name)
    cols = {f: _as_integer(a, f, where) for f, a in zip(_FIELDS, (x, y, t, p))}
    lengths = {f: len(a) for f, a in cols.items()}
    if len(set(lengths.values())) != 1:
        raise InputError(f"{where}: fields x, y, t, p have different lengths "
                         f"({', '.join(f'{k} {v}' for k, v in lengths.items())})")
    ev = np.empty(lengths["t"], EVENT_DTYPE)
    for f, a in cols.items():
        ev[f] = a
    return EventStream(ev, check_sensor_size(sensor_size, name), name).validate(allow_empty=allow_empty)
