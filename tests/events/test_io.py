"""Event files (spikedeploy.events.io): exact round trips (AEDAT4 written by dv-processing, read by
aedat and cross-checked with dv-processing's reader; npz; npy; HDF5 in DSEC's and a flat layout),
atomic writes, and bad files: each a one-line InputError naming the file."""

import h5py
import numpy as np
import pytest

from spikedeploy.errors import InputError, OutputPathError
from spikedeploy.events import EVENT_DTYPE, EventStream, detect_format, from_arrays, read_events, write_events


def _stream(n=5000, W=346, H=260, seed=0, t0=1_700_000_000_000_000):
    rng = np.random.default_rng(seed)
    t = np.sort(rng.integers(0, 2_000_000, n)) + t0
    t[10:20] = t[10]  # equal timestamps keep their order
    return from_arrays(rng.integers(0, W, n), rng.integers(0, H, n), np.sort(t), rng.integers(0, 2, n), (W, H), "s")


def _same(a: EventStream, b: EventStream):
    assert b.events.dtype == EVENT_DTYPE and a.sensor_size == b.sensor_size
    assert np.array_equal(a.events, b.events)


def _one_line(excinfo, *needles):
    msg = str(excinfo.value)
    assert "\n" not in msg and "Traceback" not in msg and "Stacktrace" not in msg, msg
    for n in needles:
        assert n in msg, (n, msg)


@pytest.mark.parametrize("suffix", [".aedat4", ".npz", ".npy", ".h5"])
def test_round_trip_is_exact(tmp_path, suffix):
    s = _stream()
    path = write_events(tmp_path / f"rec{suffix}", s)
    kwargs = {"sensor_size": s.sensor_size} if suffix == ".npy" else {}
    back = read_events(path, **kwargs)
    _same(s, back)
    assert back.name == str(path)
    assert [p.name for p in tmp_path.iterdir()] == [f"rec{suffix}"]  # no temporary file left behind


def test_aedat4_cross_checked_with_both_readers(tmp_path):
    """read_events reads AEDAT4 with aedat; dv-processing's own reader and aedat's raw packets
    agree with the stream written."""
    import aedat
    import dv_processing as dv

    s = _stream(n=20000, seed=1)
    path = write_events(tmp_path / "rec.aedat4", s)
    rec = dv.io.MonoCameraRecording(str(path))
    assert tuple(rec.getEventResolution()) == (346, 260)
    batches = []
    while (batch := rec.getNextEventBatch()) is not None:
        batches.append(batch.numpy())
    dv_ev = np.concatenate(batches)
    assert dv_ev["timestamp"].tolist() == s.events["t"].tolist()
    assert np.array_equal(dv_ev["x"], s.events["x"]) and np.array_equal(dv_ev["y"], s.events["y"])
    assert np.array_equal(dv_ev["polarity"], s.events["p"])
    dec = aedat.Decoder(str(path))
    streams = dec.id_to_stream()
    assert [(v["type"], v["width"], v["height"]) for v in streams.values()] == [("events", 346, 260)]
    ev = np.concatenate([pk["events"] for pk in dec if "events" in pk])
    assert ev["t"].astype(np.int64).tolist() == s.events["t"].tolist()
    assert np.array_equal(ev["x"], s.events["x"]) and np.array_equal(ev["y"], s.events["y"])
    assert np.array_equal(ev["on"], s.events["p"] == 1)


def test_aedat4_davis_recording_reads_the_event_stream(tmp_path):
    """A DAVIS-style recording (FE108's kind: frames and events in one file, written here with
    dv-processing's DAVIS configuration): the event stream is read, the frames skipped."""
    import dv_processing as dv

    s = _stream(n=3000, seed=4, t0=1_000_000)
    store = dv.EventStore()
    for t, x, y, p in zip(s.events["t"].tolist(), s.events["x"].tolist(), s.events["y"].tolist(),
                          (s.events["p"] == 1).tolist()):
        store.push_back(t, x, y, p)
    path = tmp_path / "davis.aedat4"
    writer = dv.io.MonoCameraWriter(str(path), dv.io.MonoCameraWriter.DAVISConfig("DAVIS346_test", (346, 260)))
    for k in range(3):
        writer.writeFrame(dv.Frame(1_000_000 + k * 50_000, np.full((260, 346), 40 * k, np.uint8)))
    writer.writeEvents(store)
    del writer
    import aedat

    assert sorted(v["type"] for v in aedat.Decoder(str(path)).id_to_stream().values()) == [
        "events", "frame", "imus", "triggers"]
    _same(s, read_events(path))


def test_formats_are_sniffed_from_content(tmp_path):
    s = _stream(n=50)
    for fmt, name in (("npz", "b.dat"), ("hdf5", "c.raw"), ("npy", "d.bin")):
        p = write_events(tmp_path / name, s, format=fmt)
        assert detect_format(p) == fmt
        _same(s, read_events(p, sensor_size=s.sensor_size))
    aedat = write_events(tmp_path / "rec.aedat4", s)
    (tmp_path / "rec.bin").write_bytes(aedat.read_bytes())
    assert detect_format(tmp_path / "rec.bin") == "aedat4"
    _same(s, read_events(tmp_path / "rec.bin"))
    # dv-processing's writer aborts the process on a name not ending in .aedat4: refused, one line
    with pytest.raises(InputError) as e:
        write_events(tmp_path / "out.AEDAT4", s, format="aedat4")
    _one_line(e, "cannot write", "suffix .aedat4")
    assert not (tmp_path / "out.AEDAT4").exists()
    with pytest.raises(InputError) as e:
        write_events(tmp_path / "x.txt", s)
    _one_line(e, "x.txt", "cannot tell its format")
    with pytest.raises(InputError, match="unknown event file format"):
        read_events(tmp_path / "b.dat", format="csv")


def test_empty_stream_round_trip_and_refusal(tmp_path):
    empty = EventStream(np.empty(0, EVENT_DTYPE), (32, 24), "e")
    for suffix in (".aedat4", ".npz", ".h5"):
        p = write_events(tmp_path / f"e{suffix}", empty)
        with pytest.raises(InputError) as e:
            read_events(p)
        _one_line(e, str(p), "no events")
        back = read_events(p, allow_empty=True)
        assert len(back) == 0 and back.sensor_size == (32, 24)


def test_writes_never_replace_without_overwrite(tmp_path):
    s = _stream(n=100)
    for suffix in (".aedat4", ".npz"):
        p = tmp_path / f"keep{suffix}"
        p.write_bytes(b"user data")
        with pytest.raises(OutputPathError, match="already exists"):
            write_events(p, s)
        assert p.read_bytes() == b"user data"
        write_events(p, s, overwrite=True)
        _same(s, read_events(p))
    assert sorted(x.name for x in tmp_path.iterdir()) == ["keep.aedat4", "keep.npz"]


def test_aedat4_limits(tmp_path):
    neg = from_arrays([0], [0], [-5], [1], (4, 4), "n")
    with pytest.raises(InputError, match="timestamps >= 0"):
        write_events(tmp_path / "n.aedat4", neg)
    big = from_arrays([40000], [0], [0], [1], (40001, 4), "b")
    with pytest.raises(InputError, match="int16"):
        write_events(tmp_path / "b.aedat4", big)
    assert list(tmp_path.iterdir()) == []


def test_truncated_aedat4(tmp_path):
    s = _stream(n=30000, seed=2)
    path = write_events(tmp_path / "full.aedat4", s)
    data = path.read_bytes()
    for cut in (10, 200, len(data) // 3, 2 * len(data) // 3):
        bad = tmp_path / f"cut{cut}.aedat4"
        bad.write_bytes(data[:cut])
        with pytest.raises(InputError) as e:
            read_events(bad)
        _one_line(e, str(bad), "cannot be read", "truncated")
    # cut inside the trailing index table only: every packet is intact, so every event is read
    tail = tmp_path / "tail.aedat4"
    tail.write_bytes(data[:-40])
    _same(s, read_events(tail))
    junk = tmp_path / "junk.aedat4"
    junk.write_bytes(b"\x00" * 500)
    with pytest.raises(InputError) as e:
        read_events(junk)
    _one_line(e, str(junk), "AEDAT4")


@pytest.mark.parametrize("seed", range(4))
def test_damaged_aedat4_packets(tmp_path, seed):
    """Bytes flipped inside the packets (dv-processing's reader hangs on such files; aedat checks
    the LZ4 frames): a one-line error, at once."""
    path = write_events(tmp_path / "full.aedat4", _stream(n=30000, seed=seed))
    data = bytearray(path.read_bytes())
    rng = np.random.default_rng(seed)
    for q in rng.integers(1000, len(data) - 1000, 20):
        data[q] ^= 0x5A
    bad = tmp_path / "flipped.aedat4"
    bad.write_bytes(bytes(data))
    with pytest.raises(InputError) as e:
        read_events(bad)
    _one_line(e, str(bad), "cannot be read")


def test_garbled_and_truncated_npz(tmp_path):
    path = write_events(tmp_path / "ok.npz", _stream(n=3000))
    data = path.read_bytes()
    cases = {"trunc.npz": data[: len(data) // 2], "garbled.npz": data[:100] + b"\xff" * 200 + data[300:],
             "text.npz": b"not an archive at all"}
    for name, blob in cases.items():
        bad = tmp_path / name
        bad.write_bytes(blob)
        with pytest.raises(InputError) as e:
            read_events(bad)
        _one_line(e, str(bad))


def test_npz_missing_arrays_and_sensor_size(tmp_path):
    p = tmp_path / "m.npz"
    np.savez(p, x=np.zeros(3, np.uint16), y=np.zeros(3, np.uint16), t=np.arange(3))
    with pytest.raises(InputError) as e:
        read_events(p)
    _one_line(e, str(p), "lacks the array(s) p")
    q = tmp_path / "nosize.npz"
    np.savez(q, x=np.zeros(3), y=np.zeros(3), t=np.arange(3), p=np.ones(3))
    with pytest.raises(InputError) as e:
        read_events(q)
    _one_line(e, str(q), "does not state the sensor size")
    assert read_events(q, sensor_size=(2, 2)).sensor_size == (2, 2)
    r = tmp_path / "tonic_size.npz"
    np.savez(r, x=[1], y=[0], t=[0], p=[1], sensor_size=[5, 3, 2])
    assert read_events(r).sensor_size == (5, 3)
    with pytest.raises(InputError) as e:
        read_events(r, sensor_size=(6, 3))
    _one_line(e, str(r), "5 x 3", "6 x 3")


def test_npy_layouts(tmp_path):
    s = _stream(n=400, W=64, H=48, t0=0)
    ev = s.events
    table = np.stack([ev["t"], ev["x"], ev["y"], ev["p"]], axis=1)  # t, x, y, p
    p = tmp_path / "txyp.npy"
    np.save(p, table)
    _same(s, read_events(p, sensor_size=(64, 48)))
    np.save(p, table.astype(np.float64))
    _same(s, read_events(p, sensor_size=(64, 48)))
    dvlike = np.zeros(len(ev), [("timestamp", "<i8"), ("x", "<i2"), ("y", "<i2"), ("polarity", "i1")])
    for a, b in (("timestamp", "t"), ("x", "x"), ("y", "y"), ("polarity", "p")):
        dvlike[a] = ev[b]
    np.save(p, dvlike)
    _same(s, read_events(p, sensor_size=(64, 48)))
    with pytest.raises(InputError) as e:
        read_events(p)
    _one_line(e, str(p), "does not state the sensor size")


def test_npy_refuses_other_column_orders(tmp_path):
    ev = _stream(n=400, W=64, H=48, t0=0).events
    p = tmp_path / "xytp.npy"
    np.save(p, np.stack([ev["x"], ev["y"], ev["t"], ev["p"]], axis=1).astype(np.int64))
    with pytest.raises(InputError) as e:
        read_events(p, sensor_size=(64, 48))
    _one_line(e, str(p), "column 0", "t, x, y, p", "x, y, t, p order?")
    amb = np.array([[0, 0, 0, 1], [1, 1, 5, 0], [2, 3, 9, 1]])  # columns 0 and 2 both sorted
    np.save(p, amb)
    with pytest.raises(InputError) as e:
        read_events(p, sensor_size=(64, 48))
    _one_line(e, str(p), "ambiguous")
    np.save(p, np.stack([ev["t"], ev["x"], ev["y"], ev["p"]], axis=0))
    with pytest.raises(InputError) as e:
        read_events(p, sensor_size=(64, 48))
    _one_line(e, str(p), "transpose")
    np.save(p, np.zeros((5, 3)))
    with pytest.raises(InputError) as e:
        read_events(p, sensor_size=(64, 48))
    _one_line(e, str(p), "N x 4")
    np.save(p, np.zeros(3, [("x", "<u2"), ("t", "<i8"), ("p", "i1")]))
    with pytest.raises(InputError) as e:
        read_events(p, sensor_size=(64, 48))
    _one_line(e, str(p), "no field y")
    row = tmp_path / "one_row_sensor.npy"  # y constant (a 1-pixel-high sensor): t, x, y, p, not ambiguous
    np.save(row, np.array([[0, 3, 0, 1], [5, 1, 0, 0], [9, 2, 0, 1]]))
    assert read_events(row, sensor_size=(4, 1)).events["x"].tolist() == [3, 1, 2]
    good = tmp_path / "ok.npy"
    np.save(good, np.stack([ev["t"], ev["x"], ev["y"], ev["p"]], axis=1))
    (tmp_path / "trunc.npy").write_bytes(good.read_bytes()[:-100])
    with pytest.raises(InputError) as e:
        read_events(tmp_path / "trunc.npy", sensor_size=(64, 48))
    _one_line(e, "trunc.npy", "cannot be read")


def test_hdf5_dsec_and_flat_layouts(tmp_path):
    s = _stream(n=1000, W=640, H=480, t0=5_000_000)
    ev = s.events
    dsec = tmp_path / "events.h5"
    with h5py.File(dsec, "w") as f:  # DSEC: uint32 t relative to t_offset, no sensor size
        g = f.create_group("events")
        g["x"], g["y"], g["p"] = ev["x"], ev["y"], ev["p"].astype(np.uint8)
        g["t"] = (ev["t"] - 5_000_000).astype(np.uint32)
        f["t_offset"] = np.int64(5_000_000)
        f["ms_to_idx"] = np.zeros(3, np.uint64)
    with pytest.raises(InputError) as e:
        read_events(dsec)
    _one_line(e, str(dsec), "does not state the sensor size")
    _same(s, read_events(dsec, sensor_size=(640, 480)))
    flat = tmp_path / "flat.hdf5"
    with h5py.File(flat, "w") as f:
        for k in "xytp":
            f[k] = ev[k]
        f.attrs["width"], f.attrs["height"] = 640, 480
    _same(s, read_events(flat))
    broken = tmp_path / "nop.h5"
    with h5py.File(broken, "w") as f:
        g = f.create_group("events")
        for k in "xyt":
            g[k] = ev[k]
    with pytest.raises(InputError) as e:
        read_events(broken, sensor_size=(640, 480))
    _one_line(e, str(broken), "lacks the dataset(s) events/p")
    trunc = tmp_path / "trunc.h5"
    trunc.write_bytes(flat.read_bytes()[:2000])
    with pytest.raises(InputError) as e:
        read_events(trunc)
    _one_line(e, str(trunc), "cannot be read")


def test_missing_files_and_folders(tmp_path):
    with pytest.raises(InputError) as e:
        read_events(tmp_path / "nope.aedat4")
    _one_line(e, "nope.aedat4", "does not exist")
    with pytest.raises(InputError) as e:
        read_events(tmp_path)
    _one_line(e, "is not a file")
    bad_values = tmp_path / "outside.npz"
    np.savez(bad_values, x=[0, 9], y=[0, 0], t=[0, 1], p=[1, 0], sensor_size=[4, 4])
    with pytest.raises(InputError) as e:
        read_events(bad_values)
    _one_line(e, str(bad_values), "event 1", "x = 9", "outside the sensor")
    unsorted = tmp_path / "unsorted.npz"
    np.savez(unsorted, x=[0, 1], y=[0, 0], t=[9, 1], p=[1, 0], sensor_size=[4, 4])
    with pytest.raises(InputError) as e:
        read_events(unsorted)
    _one_line(e, str(unsorted), "not sorted")
