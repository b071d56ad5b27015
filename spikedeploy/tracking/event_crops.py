"""HOST: the event tracker's crops -- the voxel grid of one time window around a box.

The RGB tracker crops a square of side ``ceil(sqrt(w h) * factor)`` centred on the box and
resizes it to ``S`` pixels (:func:`spikedeploy.tracking.tracker.crop_with_context`). The event
tracker crops the same square (same side, same top-left corner ``round(c - side / 2)``) out of the
window's per-pixel event counts and resamples it to ``S x S`` cells by **area averaging**::

    C[k, c, y, x]  = number of events of bin k, polarity c at sensor pixel (x, y)
                     (bin k of an event at t: floor(n (t - t0) / (t1 - t0)), as window_frames)
    cell (i, j) covers [x1 + j s, x1 + (j + 1) s) x [y1 + i s, y1 + (i + 1) s),  s = side / S
    grid[k, c, i, j] = sum over pixels (x, y) of  ox(j, x) oy(i, y) C[k, c, y, x]  /  s^2

where ``ox(j, x)`` is the length of the overlap of pixel ``[x, x + 1)`` with cell ``j``'s span
(``oy`` likewise). So a cell holds the mean event count per sensor pixel over its footprint: the
values do not depend on the box size (a crop twice as large holds four times the events in the
same cells, divided by four), every event inside the square counts with total weight
``1 / s^2 x (cell area in pixels)`` -- ``sum(grid) * s^2`` = the number of events inside the
square, exactly up to float rounding --, and outside the sensor is zero (padding). When ``side =
S`` and the square lies on the sensor, the grid equals
:func:`spikedeploy.events.window_frames`' counts of that square exactly.

The seed paper does not say how its search regions are cut from the event frames; area averaging
is the resampling that keeps event counts counts (bilinear resizing of count images, as
image-based event trackers do, skips pixels when shrinking). The first layer of the model is a
host layer, so real-valued cells are fine.
"""

from __future__ import annotations

import math
from typing import Sequence, Tuple

import numpy as np

from spikedeploy.errors import ConfigError
from spikedeploy.events.stream import EventStream

__all__ = ["EVENT_SEARCH_FACTOR", "EVENT_TEMPLATE_FACTOR", "crop_square", "axis_weights", "event_crop"]

#: search crop side = 4 sqrt(w h), as the RGB tracker
EVENT_SEARCH_FACTOR = 4.0
#: template crop side = 2 sqrt(w h): with the tiny/full templates of half the search size the
#: template and search cells have the same scale
EVENT_TEMPLATE_FACTOR = 2.0


def crop_square(box: Sequence[float], factor: float) -> Tuple[int, int, int]:
    """``(x1, y1, side)`` of the crop around ``box = [x, y, w, h]``: side ``ceil(sqrt(w h) *
    factor)``, top-left ``round(c - side / 2)`` (Python ``round``), as ``crop_with_context``."""
    x, y, w, h = (float(v) for v in box)
    if not all(math.isfinite(v) for v in (x, y, w, h)) or w <= 0 or h <= 0:
        raise ConfigError(f"event crop: box {list(box)} must be finite with w, h > 0")
    side = math.ceil(math.sqrt(w * h) * factor)
    if side < 1:
        raise ConfigError(f"event crop: box {list(box)} is too small for a crop (side {side} < 1)")
    return round(x + 0.5 * w - side * 0.5), round(y + 0.5 * h - side * 0.5), side


def axis_weights(side: int, size: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The overlaps along one axis: for pixel offset ``p`` in ``0 .. side - 1`` (pixel ``[p, p +
    1)``) and cell ``j`` (span ``[j s, (j + 1) s)``, ``s = side / size``) -> arrays ``(pixel,
    cell, overlap)`` of every non-zero overlap, in pixel units. Computed in exact integer
    arithmetic on the scaled axis (everything times ``size``) and divided once."""
    p = np.arange(side, dtype=np.int64)
    # cells touched by pixel p: j from floor(p size / side) to ceil((p + 1) size / side) - 1
    j0 = (p * size) // side
    j1 = -((-(p + 1) * size) // side)  # exclusive
    k = int(np.max(j1 - j0))
    js = j0[:, None] + np.arange(k)[None, :]
    valid = js < j1[:, None]
    pix = np.broadcast_to(p[:, None], js.shape)[valid]
    cell = js[valid]
    # overlap of [p size, (p + 1) size) with [j side, (j + 1) side) on the scaled axis, / size
    lo = np.maximum(pix * size, cell * side)
    hi = np.minimum((pix + 1) * size, (cell + 1) * side)
    return pix, cell, (hi - lo).astype(np.float64) / size


def event_crop(stream: EventStream, t0: int, t1: int, box: Sequence[float], factor: float, size: int,
               n_bins: int, *, dtype=np.float32) -> Tuple[np.ndarray, float]:
    """The crop of the events in ``[t0, t1)`` (microseconds) around ``box`` (module docstring):
    ``(grid [n_bins, 2, size, size], resize_factor = size / side)`` -- the same resize factor as
    the RGB crop, for :func:`~spikedeploy.tracking.tracker.map_box_back`."""
    if isinstance(n_bins, bool) or not isinstance(n_bins, (int, np.integer)) or n_bins < 1:
        raise ConfigError(f"event crop: n_bins must be an integer >= 1, got {n_bins!r}")
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        raise ConfigError(f"event crop: size must be an integer >= 1, got {size!r}")
    t0, t1 = int(t0), int(t1)
    if t1 <= t0:
        raise ConfigError(f"event crop: the window [{t0}, {t1}) is empty")
    x1, y1, side = crop_square(box, factor)
    n, S = int(n_bins), int(size)
    out = np.zeros((n * 2, S, S), np.float64)
    ev = stream.events
    i0, i1 = np.searchsorted(ev["t"], [t0, t1], side="left")
    sel = ev[i0:i1]
    px = sel["x"].astype(np.int64) - x1
    py = sel["y"].astype(np.int64) - y1
    inside = (px >= 0) & (px < side) & (py >= 0) & (py < side)
    if inside.any():
        sel, px, py = sel[inside], px[inside], py[inside]
        chan = ((n * (sel["t"] - t0)) // (t1 - t0)) * 2 + sel["p"].astype(np.int64)
        # per-pixel counts of the occupied (channel, y, x) only
        key, counts = np.unique((chan * side + py) * side + px, return_counts=True)
        kc, rest = np.divmod(key, side * side)
        ky, kx = np.divmod(rest, side)
        pix, cell, w = axis_weights(side, S)
        start = np.searchsorted(pix, np.arange(side + 1))  # pixel p's overlaps: start[p]:start[p + 1]
        nx = start[kx + 1] - start[kx]
        ny = start[ky + 1] - start[ky]
        for a in range(int(nx.max())):
            for b in range(int(ny.max())):
                m = (a < nx) & (b < ny)
                if not m.any():
                    continue
                ix, iy = start[kx[m]] + a, start[ky[m]] + b
                np.add.at(out, (kc[m], cell[iy], cell[ix]), counts[m] * w[ix] * w[iy])
    s = side / S
    out /= s * s
    return out.reshape(n, 2, S, S).astype(dtype), S / side
