"""Event frames: n time bins, two polarity channels, event counts per pixel.

:func:`event_frames` -- tonic's rule, exactly
    ``frames[k, c, y, x]`` = the number of events of polarity ``c`` (channel 0 = OFF, ``p = 0``;
    channel 1 = ON, ``p = 1``: tonic indexes the channel by ``p`` itself) at pixel ``(x, y)`` with
    ``t`` in bin ``k``. The bins follow ``tonic.slicers.SliceByTimeBins`` (what
    ``tonic.transforms.ToFrame(sensor_size=(W, H, 2), n_time_bins=n)`` uses), read from tonic
    1.7.0's source::

        w     = (t_end - t_start) // n          (integer microseconds, floor division)
        bin k = [t_start + k w, t_start + (k + 1) w)      k = 0 .. n - 1   (half-open)

    with ``t_start`` = the first event's ``t`` and ``t_end`` = the last event's ``t`` by default.
    Consequences, kept on purpose so that the grids equal tonic's: the bins cover
    ``[t_start, t_start + n w)``, so the last event (``t = t_end``) and every event in the
    remainder ``[t_start + n w, t_end]`` (less than ``n`` microseconds) are in no bin; a stream
    shorter than ``n`` microseconds (``w = 0``) gives all-zero frames; empty bins are zero.
    ``t_start`` / ``t_end`` given: the same rule on that span (events outside it are in no bin).
    The one place tonic differs is an *empty* stream: ``ToFrame`` then returns zeros shaped
    ``(n, 2, W, H)`` (width and height swapped); here an empty stream needs an explicit span and
    gives zeros shaped ``(n, 2, H, W)``.

:func:`window_frames` -- the tracker's input (SpikeTrack-event, the seed paper)
    The seed: "an event stream is first sliced into n-bin voxel grids, where each bin accumulates
    positive and negative events into two-channel event frames", and MSST feeds consecutive
    search frames as consecutive time steps. So each search frame gets the events of *its* window
    (between the previous annotated frame's time and its own), cut into ``n`` bins of two count
    channels. The paper names no normalisation: none is applied (raw counts; the model's first
    layer sees them as real-valued pixels, a host MAC layer). Unlike tonic's rule, the window is
    split exactly, with no remainder dropped::

        window i = [edges[i], edges[i + 1]),   bin k of event t = floor(n (t - edges[i]) / (edges[i + 1] - edges[i]))

    in integer arithmetic, so consecutive windows cover every event in ``[edges[0], edges[-1])``
    exactly once. Where ``n`` divides a window's length the two rules give the same grid.

Counts are accumulated in int64 (``np.bincount``, or ``np.unique`` where the grid is much larger than
the number of events) and returned as ``dtype`` (float32 by default:
exact up to 2**24 events per pixel and bin).
"""

from __future__ import annotations

import numbers
from typing import Optional, Sequence, Tuple

import numpy as np

from spikedeploy.errors import ConfigError, InputError
from spikedeploy.events.stream import EventStream, check_sensor_size

__all__ = ["event_frames", "window_frames"]


def _check_bins(n_bins) -> int:
    if isinstance(n_bins, bool) or not isinstance(n_bins, numbers.Integral) or int(n_bins) < 1:
        raise ConfigError(f"n_bins must be an integer >= 1, got {n_bins!r}")
    return int(n_bins)


def _frame_size(stream: EventStream, sensor_size) -> Tuple[int, int]:
    if sensor_size is None:
        return stream.width, stream.height
    w, h = check_sensor_size(sensor_size, stream.name)
    if w < stream.width or h < stream.height:
        raise InputError(f"sensor size {w} x {h} is smaller than the sensor of "
                         f"{stream.name or 'the event stream'} ({stream.width} x {stream.height})")
    return w, h


def _accumulate(ev: np.ndarray, bins: np.ndarray, n: int, w: int, h: int, dtype) -> np.ndarray:
    """Counts of the events ``ev`` into ``[n, 2, h, w]`` at the bins ``bins`` (one per event)."""
    flat = ((bins * 2 + ev["p"].astype(np.int64)) * h + ev["y"].astype(np.int64)) * w + ev["x"].astype(np.int64)
    cells = n * 2 * h * w
    if cells <= 4 * flat.size:
        return np.bincount(flat, minlength=cells).reshape(n, 2, h, w).astype(dtype)
    # sparse: count the occupied cells only, so no int64 array of the output's size is made
    out = np.zeros(cells, dtype)
    occupied, counts = np.unique(flat, return_counts=True)
    out[occupied] = counts
    return out.reshape(n, 2, h, w)


def event_frames(stream: EventStream, n_bins: int, *, t_start: Optional[int] = None, t_end: Optional[int] = None,
                 sensor_size: Optional[Tuple[int, int]] = None, dtype=np.float32) -> np.ndarray:
    """``[n_bins, 2, H, W]`` event-count frames (channel 0 OFF, 1 ON) in ``n_bins`` equal time
    bins, equal to ``tonic.transforms.ToFrame(sensor_size=(W, H, 2), n_time_bins=n_bins)`` on the
    same events (the rule in the module docstring). ``sensor_size`` (``(W, H)``, at least the
    stream's) pads the frames; ``t_start``/``t_end`` (microseconds) set the span."""
    n = _check_bins(n_bins)
    stream.validate(allow_empty=True)
    w, h = _frame_size(stream, sensor_size)
    ev = stream.events
    if len(ev) == 0 and (t_start is None or t_end is None):
        raise InputError(f"{stream.name or 'event stream'} holds no events, so it has no time span to bin; "
                         "give t_start and t_end")
    t0 = int(ev["t"][0]) if t_start is None else int(t_start)
    t1 = int(ev["t"][-1]) if t_end is None else int(t_end)
    if t1 < t0:
        raise ConfigError(f"t_end ({t1}) is before t_start ({t0})")
    width = (t1 - t0) // n
    if width == 0:
        return np.zeros((n, 2, h, w), dtype)
    i0, i1 = np.searchsorted(ev["t"], [t0, t0 + n * width], side="left")
    sel = ev[i0:i1]
    bins = (sel["t"] - t0) // width
    return _accumulate(sel, bins, n, w, h, dtype)


def window_frames(stream: EventStream, edges: Sequence[int], n_bins: int, *,
                  sensor_size: Optional[Tuple[int, int]] = None, dtype=np.float32) -> np.ndarray:
    """``[len(edges) - 1, n_bins, 2, H, W]``: for each window ``[edges[i], edges[i + 1])``
    (microseconds, strictly increasing; e.g. the annotated frames' times) its ``n_bins``-bin,
    two-channel count grid, the window split exactly (module docstring). Windows without events
    are zero."""
    n = _check_bins(n_bins)
    stream.validate(allow_empty=True)
    w, h = _frame_size(stream, sensor_size)
    e = np.asarray(edges)
    if e.ndim != 1 or e.size < 2 or not np.issubdtype(e.dtype, np.integer):
        raise ConfigError(f"edges must be at least two integer timestamps (microseconds), got {edges!r}"[:200])
    e = e.astype(np.int64)
    if np.any(e[1:] <= e[:-1]):
        i = int(np.flatnonzero(e[1:] <= e[:-1])[0])
        raise ConfigError(f"window edges must increase strictly: edges[{i + 1}] = {int(e[i + 1])} <= "
                          f"edges[{i}] = {int(e[i])}")
    if int(np.max(e[1:] - e[:-1])) > np.iinfo(np.int64).max // n:
        raise ConfigError(f"a window of {int(np.max(e[1:] - e[:-1]))} us in {n} bins overflows int64 arithmetic")
    ev = stream.events
    i0, i1 = np.searchsorted(ev["t"], [e[0], e[-1]], side="left")
    sel = ev[i0:i1]
    t = sel["t"]
    win = np.searchsorted(e, t, side="right") - 1  # edges[win] <= t < edges[win + 1]
    start, length = e[win], e[win + 1] - e[win]
    k = (n * (t - start)) // length
    return _accumulate(sel, win * n + k, (len(e) - 1) * n, w, h, dtype).reshape(len(e) - 1, n, 2, h, w)
