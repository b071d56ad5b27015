"""Event sequences on disk (spikedeploy.tracking.event_datasets): the generated benchmark read back
exactly, FE108's and VisEvent's layouts (frame times from the AEDAT4 frames stream), and one-line
errors for every bad sequence folder, also through the CLI (exit code 2)."""

import numpy as np
import pytest

from spikedeploy.tracking.event_datasets import EVENT_HELDOUT_DIFFICULTY
from spikedeploy.cli import main
from spikedeploy.errors import InputError, OutputPathError
from spikedeploy.events import from_arrays, synthetic_event_sequence, write_events
from spikedeploy.tracking.datasets import synthetic_attributes
from spikedeploy.tracking.event_datasets import (EventTrackingDataset, aedat4_frame_times, detect_event_format,
                                                 make_event_dataset, read_event_dataset, read_event_sequence,
                                                 read_frame_times, write_event_sequence)

SIZE = (96, 128)  # H, W: small sequences keep the tests fast
FRAMES = 6


def _one_line(e, *needles):
    msg = str(e.value)
    assert "\n" not in msg, msg
    for n in needles:
        assert n in msg, (n, msg)


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    out = tmp_path_factory.mktemp("evds") / "ds"
    ds = make_event_dataset(out, count=2, num_frames=FRAMES, first_seed=3, frame_size=SIZE)
    return out, ds


def test_make_then_read_gives_the_generated_events_boxes_and_times_exactly(generated):
    out, ds = generated
    assert isinstance(ds, EventTrackingDataset) and ds.format == "fe108" and ds.names == ("synthetic-3", "synthetic-4")
    again = read_event_dataset(out)  # format detected
    assert again.names == ds.names and detect_event_format(out) == "fe108"
    for seed, seq in zip((3, 4), again):
        es = synthetic_event_sequence(seed, "heldout", FRAMES, SIZE, difficulty=EVENT_HELDOUT_DIFFICULTY)
        ev = seq.load_events()
        assert np.array_equal(ev.events, es.events.events) and ev.sensor_size == (SIZE[1], SIZE[0])
        assert np.array_equal(seq.ground_truth, es.boxes) and seq.ground_truth.dtype == np.float64
        assert np.array_equal(seq.load_frame_times(), es.frame_times) and seq.frame_times.dtype == np.int64
        assert seq.attributes == synthetic_attributes(es.boxes, es.visible, SIZE)
        assert seq.num_frames == FRAMES and seq.kind == "events" and seq.image_size() == SIZE
        assert (out / seq.name / "events.aedat4").is_file() and (out / seq.name / "frame_times.txt").is_file()
    one = read_event_sequence(out / "synthetic-3")
    assert np.array_equal(one.ground_truth, again[0].ground_truth)
    assert "synthetic_event_sequence" in (out / "README.txt").read_text()


def test_make_keeps_files_it_did_not_write_and_writes_npz(tmp_path):
    """The output rules of spikedeploy.fsutil: a folder with a file spikedeploy did not write is
    refused without overwrite (and left as it was); with overwrite that file stays."""
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(OutputPathError, match="did not write"):
        make_event_dataset(foreign, count=1, num_frames=3, frame_size=SIZE)
    assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]
    make_event_dataset(foreign, count=1, num_frames=3, frame_size=SIZE, overwrite=True)
    assert (foreign / "notes.txt").read_text() == "mine" and (foreign / "synthetic-0" / "events.aedat4").is_file()
    ds = make_event_dataset(tmp_path / "npz", count=1, num_frames=3, frame_size=SIZE, event_format="npz")
    es = synthetic_event_sequence(0, "heldout", 3, SIZE, difficulty=EVENT_HELDOUT_DIFFICULTY)
    assert ds[0].events_path.endswith("events.npz")
    assert np.array_equal(ds[0].load_events().events, es.events.events)


def _davis_file(path, stream, frame_times):
    """A DAVIS-style AEDAT4 recording (FE108's and VisEvent's kind): APS frames at ``frame_times``
    and the events, written by dv-processing."""
    import dv_processing as dv

    store = dv.EventStore()
    ev = stream.events
    for t, x, y, p in zip(ev["t"].tolist(), ev["x"].tolist(), ev["y"].tolist(), (ev["p"] == 1).tolist()):
        store.push_back(t, x, y, p)
    writer = dv.io.MonoCameraWriter(str(path), dv.io.MonoCameraWriter.DAVISConfig("DAVIS346_test", stream.sensor_size))
    for k, t in enumerate(frame_times):
        writer.writeFrame(dv.Frame(int(t), np.full((stream.height, stream.width), 10 * k, np.uint8)))
    writer.writeEvents(store)
    del writer
    return path


@pytest.fixture(scope="module")
def recording():
    es = synthetic_event_sequence(1, "heldout", FRAMES, SIZE)
    shift = 1_600_000_000_000_000  # AEDAT4 recordings keep Unix-time microseconds
    ev = es.events.events.copy()
    ev["t"] += shift
    stream = from_arrays(ev["x"], ev["y"], ev["t"], ev["p"], es.events.sensor_size, "shifted")
    return stream, es.frame_times + shift, es.boxes


def test_fe108_layout_takes_the_frame_times_from_the_aps_frames(tmp_path, recording):
    stream, times, boxes = recording
    seq_dir = tmp_path / "fe108" / "airplane"
    (seq_dir / "img").mkdir(parents=True)
    _davis_file(seq_dir / "events.aedat4", stream, times)
    (seq_dir / "groundtruth_rect.txt").write_text("".join(",".join(repr(float(v)) for v in b) + "\n" for b in boxes))
    assert np.array_equal(aedat4_frame_times(seq_dir / "events.aedat4"), times)
    seq = read_event_sequence(seq_dir)
    assert seq.frame_times is None and "frames stream" in seq.frame_times_source
    assert np.array_equal(seq.load_frame_times(), times) and np.array_equal(seq.load_events().events, stream.events)
    ds = read_event_dataset(tmp_path / "fe108", "fe108")
    assert ds.names == ("airplane",) and ds[0].frame_times is None  # decoded when the sequence is tracked
    # one box too many: the count error names both
    (seq_dir / "groundtruth_rect.txt").write_text("".join("1,2,30,30\n" for _ in range(FRAMES + 1)))
    with pytest.raises(InputError) as e:
        read_event_sequence(seq_dir)
    _one_line(e, f"gives {FRAMES} frame times", f"{FRAMES + 1} boxes")
    # an FE108 root holding the split folders: give one of them
    (tmp_path / "root").mkdir()
    (tmp_path / "fe108").rename(tmp_path / "root" / "test")
    with pytest.raises(InputError) as e:
        read_event_dataset(tmp_path / "root")
    _one_line(e, "split folders test", "give one of them")


def test_visevent_layout_and_its_corner_boxes(tmp_path, recording):
    stream, times, boxes = recording
    seq_dir = tmp_path / "visevent" / "00141_tank_outdoor2"
    seq_dir.mkdir(parents=True)
    _davis_file(seq_dir / "00141_tank_outdoor2.aedat4", stream, times)
    corners = [[x, y, x + w, y, x + w, y + h, x, y + h] for x, y, w, h in boxes.tolist()]
    (seq_dir / "groundtruth.txt").write_text("".join(",".join(repr(float(v)) for v in c) + "\n" for c in corners))
    assert detect_event_format(tmp_path / "visevent") == "visevent"
    ds = read_event_dataset(tmp_path / "visevent")
    assert ds.format == "visevent" and ds.names == ("00141_tank_outdoor2",)
    np.testing.assert_allclose(ds[0].ground_truth, boxes, rtol=0, atol=1e-12)  # x + w - x: float rounding
    assert np.array_equal(ds[0].load_frame_times(), times)


def _seq(tmp_path, name="s", n=4, sensor=(40, 30)):
    d = tmp_path / name
    rng = np.random.default_rng(0)
    t = np.sort(rng.integers(0, 3000, 200))
    s = from_arrays(rng.integers(0, sensor[0], 200), rng.integers(0, sensor[1], 200), t, rng.integers(0, 2, 200),
                    sensor)
    write_event_sequence(d, s, np.arange(n) * 1000, np.tile([5.0, 5.0, 10.0, 10.0], (n, 1)), event_format="npz")
    return d


def test_bad_sequence_folders_are_one_line_errors(tmp_path):
    cases = []
    d = _seq(tmp_path, "no_events")
    (d / "events.npz").unlink()
    cases.append((d, "no_events", "is not an event sequence folder"))
    d = _seq(tmp_path, "no_gt")
    (d / "groundtruth_rect.txt").unlink()
    cases.append((d, "groundtruth_rect.txt", "does not exist"))
    d = _seq(tmp_path, "no_times")
    (d / "frame_times.txt").unlink()
    cases.append((d, "frame_times.txt", "no frame times"))
    d = _seq(tmp_path, "counts")
    (d / "frame_times.txt").write_text("0\n1000\n2000\n")
    cases.append((d, "3 frame times", "4 boxes"))
    d = _seq(tmp_path, "unsorted")
    (d / "frame_times.txt").write_text("0\n2000\n1000\n3000\n")
    cases.append((d, "increase strictly", "frame 2"))
    d = _seq(tmp_path, "seconds")
    (d / "frame_times.txt").write_text("0\n0.5\n1\n1.5\n")
    cases.append((d, "line 2", "microseconds"))
    d = _seq(tmp_path, "one_frame", n=2)
    (d / "frame_times.txt").write_text("0\n")
    (d / "groundtruth_rect.txt").write_text("1,1,5,5\n")
    cases.append((d, "1 frame time", "at least two"))
    d = _seq(tmp_path, "gt_cols")
    (d / "groundtruth_rect.txt").write_text("1,1,5\n" * 4)
    cases.append((d, "groundtruth_rect.txt", "3 numbers"))
    for folder, *needles in cases:
        with pytest.raises(InputError) as e:
            read_event_sequence(folder)
        _one_line(e, *needles)
    # the events themselves are checked when read: outside the sensor, unsorted, a truncated file
    d = _seq(tmp_path, "outside")
    np.savez(d / "events.npz", x=np.array([1, 50]), y=np.array([1, 2]), t=np.array([0, 5]), p=np.array([1, 0]),
             sensor_size=np.array([40, 30]))
    with pytest.raises(InputError) as e:
        read_event_sequence(d).load_events()
    _one_line(e, "events.npz", "outside the sensor")
    d = _seq(tmp_path, "trunc")
    (d / "events.npz").write_bytes((d / "events.npz").read_bytes()[:60])
    with pytest.raises(InputError) as e:
        read_event_sequence(d).load_events()
    _one_line(e, "events.npz")
    with pytest.raises(InputError) as e:
        read_event_dataset(tmp_path / "nope")
    _one_line(e, "does not exist")
    with pytest.raises(InputError) as e:
        read_event_dataset(tmp_path / "counts")
    _one_line(e, "is one event sequence", "parent folder")


def test_frame_times_files(tmp_path):
    p = tmp_path / "t.txt"
    p.write_text("1600000000000000\n\n1600000000033333\n1.6000000000666660e15\n")
    assert read_frame_times(p).tolist() == [1600000000000000, 1600000000033333, 1600000000066666]
    np.save(tmp_path / "t.npy", np.array([0, 10, 20], np.int32))
    assert read_frame_times(tmp_path / "t.npy").dtype == np.int64
    np.save(tmp_path / "f.npy", np.array([0.0, 1.0]))
    with pytest.raises(InputError) as e:
        read_frame_times(tmp_path / "f.npy")
    _one_line(e, "integer microseconds")
    p.write_text("0\nten\n")
    with pytest.raises(InputError) as e:
        read_frame_times(p)
    _one_line(e, "line 2", "'ten'")


def test_cli_bad_event_input_exits_2_with_one_line(tmp_path, capsys):
    d = _seq(tmp_path, "counts")
    (d / "frame_times.txt").write_text("0\n1000\n")
    evfile = tmp_path / "ev.npz"
    write_events(evfile, from_arrays([1], [1], [5], [1], (40, 30)))
    cases = [
        (["track", "--events", str(d)], "2 frame times"),
        (["track", "--events", str(tmp_path / "nope")], "does not exist"),
        (["track", "--events", str(evfile), "--init-box", "1,1,5,5"], "--frame-times"),
        (["track", "--events", str(_seq(tmp_path, "ok")), "--target", "lava-fixed"], "not available for event"),
        (["track", "--events", str(_seq(tmp_path, "ok2")), "--clip", str(evfile)], "one of them"),
        (["evaluate", "--dataset", str(tmp_path / "nope"), "--format", "fe108"], "does not exist"),
        (["make-dataset", "--events", "-o", str(tmp_path / "m"), "--image-format", "png"], "hold no images"),
    ]
    for args, needle in cases:
        rc = main([*args, "-o", str(tmp_path / "out"), "--no-progress"] if args[0] != "make-dataset" else args)
        err = capsys.readouterr().err.strip()
        assert rc == 2, (args, err)
        assert len(err.splitlines()) == 1 and needle in err, (args, err)
        assert not (tmp_path / "out").exists()
