"""The event tracker's crops (spikedeploy.tracking.event_crops): area averaging checked against a
dense brute force, against window_frames where no resampling happens, and the event mass."""

import numpy as np
import pytest

from spikedeploy.errors import ConfigError
from spikedeploy.events import from_arrays, window_frames
from spikedeploy.tracking.event_crops import axis_weights, crop_square, event_crop


def _stream(seed, n=4000, W=90, H=70, T=10_000):
    rng = np.random.default_rng(seed)
    t = np.sort(rng.integers(0, T, n))
    return from_arrays(rng.integers(0, W, n), rng.integers(0, H, n), t, rng.integers(0, 2, n), (W, H))


def _brute(stream, t0, t1, box, factor, S, n):
    """Dense: the count image of the square (zero outside the sensor) times overlap matrices."""
    x1, y1, side = crop_square(box, factor)
    ev = stream.events
    ev = ev[(ev["t"] >= t0) & (ev["t"] < t1)]
    C = np.zeros((n, 2, side, side))
    for e in ev:
        px, py = int(e["x"]) - x1, int(e["y"]) - y1
        if 0 <= px < side and 0 <= py < side:
            C[(n * (int(e["t"]) - t0)) // (t1 - t0), int(e["p"]), py, px] += 1
    s = side / S
    R = np.zeros((S, side))  # R[j, p] = overlap of pixel [p, p+1) with cell [j s, (j+1) s)
    for j in range(S):
        for p in range(side):
            R[j, p] = max(0.0, min(p + 1, (j + 1) * s) - max(p, j * s))
    return np.einsum("ip,kcpq,jq->kcij", R, C, R) / (s * s)


@pytest.mark.parametrize("box, factor, S", [
    ([30, 20, 12, 9], 4.0, 16),     # side 42 > S: cells span several pixels
    ([40, 30, 3, 2], 4.0, 32),      # side 10 < S: pixels span several cells
    ([-5, 50, 20, 30], 2.0, 12),    # crosses the sensor's left and bottom edges: padding
    ([10, 10, 7, 7], 4.0, 28),      # side 28 = S
])
def test_event_crop_equals_the_dense_area_average(box, factor, S):
    st = _stream(1)
    grid, rf = event_crop(st, 1000, 7000, box, factor, S, 3, dtype=np.float64)
    ref = _brute(st, 1000, 7000, box, factor, S, 3)
    assert grid.shape == (3, 2, S, S) and grid.sum() > 0
    # float64: the same sum of a few products per cell in another order
    np.testing.assert_allclose(grid, ref, rtol=1e-12, atol=1e-12)
    assert rf == S / crop_square(box, factor)[2]


def test_event_mass_is_kept():
    st = _stream(2)
    box, factor, S = [20, 15, 10, 14], 4.0, 20
    x1, y1, side = crop_square(box, factor)
    grid, _ = event_crop(st, 0, 10_000, box, factor, S, 2, dtype=np.float64)
    ev = st.events
    inside = ((ev["x"] >= x1) & (ev["x"] < x1 + side) & (ev["y"] >= y1) & (ev["y"] < y1 + side)).sum()
    s = side / S
    assert inside > 100
    assert abs(grid.sum() * s * s - inside) < 1e-9 * inside


def test_a_crop_without_resampling_is_window_frames_of_the_square():
    st = _stream(3)
    x1, y1, side = crop_square([30, 25, 5, 5], 4.0)  # side 20 on the sensor
    assert x1 >= 0 and y1 >= 0 and x1 + side <= 90 and y1 + side <= 70
    grid, rf = event_crop(st, 2000, 5000, [30, 25, 5, 5], 4.0, side, 5)
    frames = window_frames(st, [2000, 5000], 5)[0]
    assert rf == 1.0 and grid.sum() > 0
    np.testing.assert_array_equal(grid, frames[:, :, y1:y1 + side, x1:x1 + side])


def test_axis_weights_partition_each_pixel():
    for side, S in [(7, 3), (3, 7), (128, 128), (500, 128), (5, 128)]:
        pix, cell, w = axis_weights(side, S)
        assert np.allclose(np.bincount(pix, weights=w, minlength=side), 1.0)  # a pixel is covered once
        assert np.allclose(np.bincount(cell, weights=w, minlength=S), side / S)  # a cell spans s pixels
        assert cell.min() == 0 and cell.max() == S - 1


@pytest.mark.parametrize("kwargs, msg", [
    (dict(t0=5, t1=5), "window"), (dict(n_bins=0), "n_bins"), (dict(size=0), "size"),
    (dict(box=[0, 0, 0, 4]), "w, h > 0"), (dict(box=[0, 0, float("nan"), 4]), "finite"),
])
def test_bad_crop_arguments_are_named(kwargs, msg):
    args = dict(t0=0, t1=100, box=[10, 10, 5, 5], factor=4.0, size=16, n_bins=2)
    args.update(kwargs)
    with pytest.raises(ConfigError, match=msg):
        event_crop(_stream(0, n=50), **args)
