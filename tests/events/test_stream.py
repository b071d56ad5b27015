"""EventStream (spikedeploy.events.stream): the dtype, validation errors (one line, naming the
source and the first offending event), from_arrays conversions and the helpers."""

import numpy as np
import pytest

from spikedeploy.errors import InputError
from spikedeploy.events import EVENT_DTYPE, EventStream, from_arrays


def _stream(n=10, W=8, H=6, seed=0, name="clip.npz"):
    rng = np.random.default_rng(seed)
    return from_arrays(rng.integers(0, W, n), rng.integers(0, H, n), np.sort(rng.integers(0, 1000, n)),
                       rng.integers(0, 2, n), (W, H), name)


def _one_line(excinfo, *needles):
    msg = str(excinfo.value)
    assert "\n" not in msg
    for n in needles:
        assert n in msg, (n, msg)
    return msg


def test_dtype_is_documented_and_packed():
    assert EVENT_DTYPE.names == ("x", "y", "t", "p")
    assert [EVENT_DTYPE[n] for n in EVENT_DTYPE.names] == [np.dtype("<u2"), np.dtype("<u2"), np.dtype("<i8"),
                                                           np.dtype("i1")]
    assert EVENT_DTYPE.itemsize == 13


def test_from_arrays_keeps_values_and_order():
    x, y, t, p = [3, 0, 7], [5, 1, 0], [10, 10, 25], [True, False, True]
    s = from_arrays(x, y, t, p, (8, 6), "a")
    assert s.events.dtype == EVENT_DTYPE and s.sensor_size == (8, 6) and s.name == "a"
    assert s.events["x"].tolist() == x and s.events["y"].tolist() == y
    assert s.events["t"].tolist() == t and s.events["p"].tolist() == [1, 0, 1]
    assert len(s) == 3 and s.duration == 15 and s.width == 8 and s.height == 6
    # floats holding integers are accepted (files often store coordinates as float)
    f = from_arrays(np.array(x, float), np.array(y, float), np.array(t, float), np.array([1.0, 0.0, 1.0]), (8, 6))
    assert np.array_equal(f.events, s.events)


def test_unsorted_timestamps_say_where():
    s = _stream()
    ev = s.events.copy()
    ev["t"][4], ev["t"][5] = ev["t"][5] + 1, ev["t"][4]
    with pytest.raises(InputError) as e:
        EventStream(ev, s.sensor_size, "clip.npz").validate()
    _one_line(e, "clip.npz", "not sorted", "event 5")
    with pytest.raises(InputError) as e:
        from_arrays([0, 0], [0, 0], [5, 3], [0, 1], (2, 2), "f.h5")
    _one_line(e, "f.h5", "event 1", "t = 3")


@pytest.mark.parametrize("field,value,size", [("x", 8, "8 x 6"), ("y", 6, "8 x 6"), ("x", 400, "8 x 6")])
def test_coordinates_outside_the_sensor(field, value, size):
    ev = _stream().events.copy()
    ev[field][3] = value
    with pytest.raises(InputError) as e:
        EventStream(ev, (8, 6), "rec.aedat4").validate()
    _one_line(e, "rec.aedat4", "event 3", f"{field} = {value}", size)


def test_negative_coordinates_and_overflow_refused_by_from_arrays():
    with pytest.raises(InputError) as e:
        from_arrays([1, -1], [0, 0], [0, 1], [0, 1], (4, 4), "neg.npy")
    _one_line(e, "neg.npy", "x = -1")
    with pytest.raises(InputError) as e:
        from_arrays([70000], [0], [0], [1], (4, 4), "big.npy")
    _one_line(e, "big.npy", "x = 70000")


def test_empty_stream_refused_unless_allowed():
    empty = EventStream(np.empty(0, EVENT_DTYPE), (4, 4), "none.npz")
    with pytest.raises(InputError) as e:
        empty.validate()
    _one_line(e, "none.npz", "no events")
    assert empty.validate(allow_empty=True) is empty and empty.duration == 0 and len(empty) == 0


def test_wrong_dtype_and_missing_field():
    ev = _stream().events
    wrong = ev.astype([("x", "<i4"), ("y", "<u2"), ("t", "<i8"), ("p", "i1")])
    with pytest.raises(InputError) as e:
        EventStream(wrong, (8, 6), "w.npy").validate()
    _one_line(e, "w.npy", "x int32", "expected (x uint16")
    missing = np.zeros(3, [("x", "<u2"), ("y", "<u2"), ("t", "<i8")])
    with pytest.raises(InputError) as e:
        EventStream(missing, (8, 6), "m.npy").validate()
    _one_line(e, "m.npy", "lack the field(s) p")
    with pytest.raises(InputError) as e:
        EventStream(np.zeros((3, 4)), (8, 6), "plain.npy").validate()
    _one_line(e, "plain.npy", "structured array")
    with pytest.raises(InputError) as e:
        EventStream(ev, (8, 0), "s").validate()
    _one_line(e, "sensor size")


def test_polarity_values_other_than_0_and_1():
    ev = _stream().events.copy()
    ev["p"][2] = -1
    with pytest.raises(InputError) as e:
        EventStream(ev, (8, 6), "pol.npz").validate()
    _one_line(e, "pol.npz", "event 2", "polarity -1")
    with pytest.raises(InputError) as e:
        from_arrays([0, 1], [0, 0], [0, 1], [-1, 1], (2, 2), "pm.npz")
    _one_line(e, "pm.npz", "-1, 1", "p = (p > 0)")
    with pytest.raises(InputError) as e:
        from_arrays([0, 1], [0, 0], [0, 1], [0, 2], (2, 2), "two.npz")
    _one_line(e, "two.npz", "polarity values [0, 2]")


def test_fractional_timestamps_and_unequal_lengths():
    with pytest.raises(InputError) as e:
        from_arrays([0, 1], [0, 0], [0.25, 0.5], [0, 1], (2, 2), "sec.npz")
    _one_line(e, "sec.npz", "field t", "multiply by 1e6")
    with pytest.raises(InputError) as e:
        from_arrays([0, 1], [0, 0], [0, 1, 2], [0, 1], (2, 2), "len.npz")
    _one_line(e, "len.npz", "different lengths", "t 3")
    with pytest.raises(InputError) as e:
        from_arrays([0, 1], [0, 0], [0, np.nan], [0, 1], (2, 2), "nan.npz")
    _one_line(e, "nan.npz", "NaN")


def test_slice_time_is_half_open():
    s = from_arrays([0, 1, 2, 3, 0], [0] * 5, [0, 10, 10, 20, 30], [1, 0, 1, 0, 1], (4, 1), "s")
    part = s.slice_time(10, 30)
    assert part.events["t"].tolist() == [10, 10, 20] and part.sensor_size == (4, 1) and part.name == "s"
    assert len(s.slice_time(31, 40)) == 0 and len(s.slice_time(20, 10)) == 0
    assert s.slice_time(-5, 100).events.tolist() == s.events.tolist()
    assert "5 events" in repr(s) and "4 x 1" in repr(s)
