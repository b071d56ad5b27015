"""Event frames (spikedeploy.events.voxel): equal to tonic's ToFrame(n_time_bins=n) on random
streams (tonic 1.7.0 as the oracle: channel order, bin edges, the last event, empty bins), and the
tracker's per-window grids."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from tonic.transforms import ToFrame

from spikedeploy.errors import ConfigError, InputError
from spikedeploy.events import EVENT_DTYPE, EventStream, event_frames, from_arrays, window_frames


def _random_stream(rng, n, W, H, span, t0=0):
    t = np.sort(rng.integers(0, span + 1, n)) + t0
    return from_arrays(rng.integers(0, W, n), rng.integers(0, H, n), t, rng.integers(0, 2, n), (W, H), "r")


def _tonic(s, n_bins):
    return ToFrame(sensor_size=(s.width, s.height, 2), n_time_bins=n_bins)(s.events.copy())


@pytest.mark.parametrize("n_bins", [1, 2, 3, 5, 7, 16])
def test_equal_to_tonic_on_random_streams(n_bins):
    rng = np.random.default_rng(n_bins)
    for trial in range(25):
        W, H = int(rng.integers(1, 24)), int(rng.integers(1, 18))
        span = int(rng.choice([n_bins - 1, n_bins, 3 * n_bins + 1, 997, 10 ** 6]))
        s = _random_stream(rng, int(rng.integers(1, 600)), W, H, max(span, 0), t0=int(rng.integers(0, 2 ** 40)))
        ref = _tonic(s, n_bins)
        ours = event_frames(s, n_bins)
        assert ours.shape == ref.shape == (n_bins, 2, H, W) and ours.dtype == np.float32
        assert np.array_equal(ours, ref), (trial, n_bins)
        assert np.array_equal(event_frames(s, n_bins, dtype=np.int64), ref)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 4), st.integers(0, 3), st.integers(0, 50), st.integers(0, 1)),
                min_size=1, max_size=40), st.integers(1, 9))
def test_equal_to_tonic_hypothesis(rows, n_bins):
    rows = sorted(rows, key=lambda r: r[2])
    x, y, t, p = (np.array(c) for c in zip(*rows))
    s = from_arrays(x, y, t, p, (5, 4), "h")
    assert np.array_equal(event_frames(s, n_bins), _tonic(s, n_bins))


def test_channel_order_last_event_and_remainder():
    # ON event at (1, 0), OFF at (2, 1); t spans 0..10 in 3 bins: width 3, bins [0,3) [3,6) [6,9)
    s = from_arrays([1, 2, 0, 3, 3], [0, 1, 0, 1, 0], [0, 4, 8, 9, 10], [1, 0, 1, 1, 0], (4, 2), "c")
    f = event_frames(s, 3)
    assert f[0, 1, 0, 1] == 1 and f[0, 0].sum() == 0  # p = 1 -> channel 1 (ON)
    assert f[1, 0, 1, 2] == 1                          # p = 0 -> channel 0 (OFF)
    assert f[2, 1, 0, 0] == 1
    assert f.sum() == 3  # t = 9 (remainder) and t = 10 (the last event) are in no bin, as in tonic
    assert np.array_equal(f, _tonic(s, 3))


def test_empty_bins_short_streams_and_single_events():
    s = from_arrays([0, 1], [0, 0], [0, 100], [1, 1], (2, 1), "gap")
    f = event_frames(s, 4)
    assert f[:, :, 0, 0].sum() == 1 and f[1:].sum() == 0 and np.array_equal(f, _tonic(s, 4))
    short = from_arrays([0, 1, 1], [0, 0, 0], [5, 6, 7], [1, 0, 1], (2, 1), "short")  # 2 us < 3 bins: w = 0
    assert event_frames(short, 3).sum() == 0 and np.array_equal(event_frames(short, 3), _tonic(short, 3))
    one = from_arrays([1], [0], [42], [0], (2, 1), "one")
    assert event_frames(one, 2).sum() == 0 and np.array_equal(event_frames(one, 2), _tonic(one, 2))


def test_explicit_span_padding_and_errors():
    rng = np.random.default_rng(3)
    s = _random_stream(rng, 300, 6, 5, 1000, t0=500)
    # the same rule on an explicit span: tonic on the events of [t_start, t_end] with the span's ends added
    f = event_frames(s, 4, t_start=400, t_end=1600)
    w = (1600 - 400) // 4
    t = s.events["t"]
    for k in range(4):
        m = (t >= 400 + k * w) & (t < 400 + (k + 1) * w)
        assert f[k].sum() == m.sum()
    padded = event_frames(s, 4, sensor_size=(9, 7))
    assert padded.shape == (4, 2, 7, 9) and np.array_equal(padded[:, :, :5, :6], event_frames(s, 4))
    assert padded[:, :, 5:].sum() == 0 and padded[:, :, :, 6:].sum() == 0
    with pytest.raises(InputError, match="smaller than the sensor"):
        event_frames(s, 4, sensor_size=(3, 5))
    empty = EventStream(np.empty(0, EVENT_DTYPE), (6, 5), "empty.npz")
    with pytest.raises(InputError, match="empty.npz holds no events"):
        event_frames(empty, 2)
    assert event_frames(empty, 2, t_start=0, t_end=10).shape == (2, 2, 5, 6)
    for bad in (0, -1, 2.0, True):
        with pytest.raises(ConfigError, match="n_bins"):
            event_frames(s, bad)
    with pytest.raises(ConfigError, match="before t_start"):
        event_frames(s, 2, t_start=10, t_end=5)
    unsorted = s.events.copy()
    unsorted["t"][[0, -1]] = unsorted["t"][[-1, 0]]
    with pytest.raises(InputError, match="not sorted"):
        event_frames(EventStream(unsorted, (6, 5), "u"), 2)


def test_window_frames_cover_every_event_once():
    rng = np.random.default_rng(7)
    s = _random_stream(rng, 2000, 10, 8, 99_999)
    edges = np.array([0, 33_333, 66_667, 100_000])
    g = window_frames(s, edges, 5)
    assert g.shape == (3, 5, 2, 8, 10) and g.dtype == np.float32
    assert g.sum() == len(s)  # all t in [0, 100000): every event in exactly one window and bin
    t, p = s.events["t"], s.events["p"]
    for i in range(3):
        a, b = edges[i], edges[i + 1]
        for k in range(5):
            m = (t >= a) & (t < b) & ((5 * (t - a)) // (b - a) == k)
            assert g[i, k, 1].sum() == (m & (p == 1)).sum() and g[i, k, 0].sum() == (m & (p == 0)).sum()
        # per window, the per-pixel counts are the window's events
        win = s.slice_time(a, b)
        assert np.array_equal(g[i].sum(axis=0), event_frames(win, 1, t_start=a, t_end=b)[0])


def test_window_frames_equal_event_frames_where_the_bins_divide():
    rng = np.random.default_rng(8)
    s = _random_stream(rng, 800, 7, 6, 12_000)
    g = window_frames(s, [0, 6_000, 12_000], 4)
    assert np.array_equal(g[0], event_frames(s, 4, t_start=0, t_end=6_000))
    assert np.array_equal(g[1], event_frames(s, 4, t_start=6_000, t_end=12_000))
    quiet = window_frames(s, [20_000, 30_000], 3)
    assert quiet.shape == (1, 3, 2, 6, 7) and quiet.sum() == 0
    with pytest.raises(ConfigError, match="increase strictly"):
        window_frames(s, [0, 10, 10], 2)
    with pytest.raises(ConfigError, match="at least two integer"):
        window_frames(s, [0.0, 1.5], 2)
