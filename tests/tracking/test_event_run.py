"""`spikedeploy track --events` and `evaluate` on event datasets (spikedeploy.tracking.event_run):
the CLI end to end on a short generated sequence with random firing weights, the boxes equal to the
host loop's own run, the reports (boxes.json, report.md/json/html, frames.json, the event GIF), and
the evaluation engine's records and OTB-layout results."""

import json

import numpy as np
import pytest
import torch

from spikedeploy.tracking.event_datasets import EVENT_HELDOUT_DIFFICULTY
from spikedeploy.cli import main
from spikedeploy.errors import CheckpointError, ConfigError
from spikedeploy.events import synthetic_event_sequence, write_events
from spikedeploy.tracking.datasets import read_sequence_results
from spikedeploy.tracking.event_run import (EVENT_BACKGROUND, EVENT_OFF_COLOR, EVENT_ON_COLOR,
                                            canonical_event_target, load_event_tracker_model,
                                            render_event_frames, track_events)
from spikedeploy.tracking.event_tracker import EventTracker, TorchEventNetwork, track_event_sequence

SIZE = (96, 128)
FRAMES = 6


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("evrun") / "ds"
    assert main(["make-dataset", "--events", "-o", str(out), "--sequences", "2", "--frames", str(FRAMES),
                 "--first-seed", "5"]) == 0
    return out


def test_cli_make_dataset_events_writes_the_default_sensor(dataset):
    from spikedeploy.tracking.event_datasets import read_event_dataset

    ds = read_event_dataset(dataset)
    assert ds.names == ("synthetic-5", "synthetic-6")
    es = synthetic_event_sequence(5, "heldout", FRAMES, difficulty=EVENT_HELDOUT_DIFFICULTY)  # the CLI's defaults: 240 x 320 at 30 fps
    assert np.array_equal(ds[0].load_events().events, es.events.events)
    assert np.array_equal(ds[0].load_frame_times(), es.frame_times)


def test_track_events_cli_end_to_end(dataset, tmp_path, capsys):
    seq = dataset / "synthetic-5"
    out = tmp_path / "track"
    assert main(["track", "--events", str(seq), "--target", "torch,torch64", "--checkpoint", "random",
                 "-o", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "spiketrack-event-tiny (random (seed 0)) on 6 event frames" in printed and "torch64 vs torch" in printed
    names = {p.name for p in out.iterdir()}
    assert {"boxes.json", "report.json", "report.md", "report.html", "frames.json", "track.gif", "success.png",
            "precision.png"} <= names
    boxes = json.loads((out / "boxes.json").read_text())
    gt = np.loadtxt(seq / "groundtruth_rect.txt", delimiter=",")
    # the CLI's boxes are the host loop's own (float64 model: exactly)
    net, _ = load_event_tracker_model(None, "random", seed=0)
    es = synthetic_event_sequence(5, "heldout", FRAMES, difficulty=EVENT_HELDOUT_DIFFICULTY)
    direct = track_event_sequence(EventTracker(TorchEventNetwork(net.double())), es.events, es.frame_times, gt[0])
    assert boxes["runs"]["torch64"]["boxes"] == direct
    assert boxes["runs"]["torch"]["boxes"][0] == gt[0].tolist() and len(boxes["runs"]["torch"]["boxes"]) == FRAMES
    rep = json.loads((out / "report.json").read_text())
    t = es.events.events["t"]
    windows = [(es.frame_times[0], es.frame_times[1])] + list(zip(es.frame_times[:-1], es.frame_times[1:]))
    counts = [int(np.searchsorted(t, b) - np.searchsorted(t, a)) for a, b in windows]
    assert rep["events_per_frame"] == counts and min(counts) > 100
    assert rep["frame_times"] == es.frame_times.tolist() and rep["sensor_size"] == [320, 240]
    assert set(rep["scores"]) == {"torch", "torch64"} and rep["scores"]["torch"]["frames"] == FRAMES
    assert rep["agreement"]["torch64"]["frames"] == FRAMES
    frames = json.loads((out / "frames.json").read_text())["frames"]
    assert [f["events"] for f in frames] == counts and frames[3]["torch64"]["box"] == direct[3]
    assert frames[0]["role"] == "template window" and frames[0]["torch"]["score"] is None
    md = (out / "report.md").read_text()
    assert "## Agreement" in md and "events per frame window" in md
    assert 'href="frames.json"' in (out / "report.html").read_text()
    from PIL import Image

    with Image.open(out / "track.gif") as im:
        assert im.n_frames == FRAMES and im.size[0] == 320
        im.seek(2)
        rgb = np.asarray(im.convert("RGB"))
    rendered = render_event_frames(es.events, es.frame_times)[2]
    # event pixels are on the GIF (palette-quantized, so compared loosely): the frame is not empty
    lit = (rendered != np.asarray(EVENT_BACKGROUND, np.uint8)).any(axis=-1)
    assert lit.sum() > 100 and (np.abs(rgb[:240].astype(int) - rendered.astype(int)).max(axis=-1)[lit] < 40).mean() > 0.9


def test_track_events_from_a_file_with_frame_times_and_no_ground_truth(tmp_path):
    es = synthetic_event_sequence(2, "heldout", 4, SIZE)
    ev = write_events(tmp_path / "rec.npz", es.events)
    ft = tmp_path / "times.txt"
    ft.write_text("".join(f"{int(v)}\n" for v in es.frame_times))
    box = es.boxes[0].tolist()
    rep = track_events(events=ev, frame_times=ft, init_box=box, checkpoint="random", output=tmp_path / "o",
                       gif=False)
    assert rep.scores == {} and rep.runs["torch"].boxes[0] == box and len(rep.runs["torch"].boxes) == 4
    assert not (tmp_path / "o" / "track.gif").exists() and (tmp_path / "o" / "frames.json").is_file()
    # the frame limit: torch64 tracks 2 frames and the report says so
    rep = track_events(events=ev, frame_times=ft, init_box=box, checkpoint="random", targets=["torch", "torch64"],
                       frame_limits={"torch64": 2})
    assert rep.runs["torch64"].frames == 2 and any("first 2 of 4" in n for n in rep.notes)
    # frame times on another clock (seconds): no event between them
    ft.write_text("0\n1\n2\n3\n")
    with pytest.raises(Exception) as e:
        track_events(events=ev, frame_times=ft, init_box=box, checkpoint="random")
    assert "no event lies between" in str(e.value) and getattr(e.value, "exit_code", 0) == 2


def test_render_event_frames_colours(tmp_path):
    from spikedeploy.events import from_arrays

    s = from_arrays([1, 1, 2, 3, 3], [0, 0, 0, 0, 0], [0, 1, 2, 3, 15], [1, 1, 0, 1, 0], (4, 2))
    f = render_event_frames(s, [0, 10, 20])
    bg, on, off = (np.asarray(c, np.float64) for c in (EVENT_BACKGROUND, EVENT_ON_COLOR, EVENT_OFF_COLOR))

    def colour(n_on, n_off):
        return np.clip(np.rint(bg + (1 - np.exp(-n_on)) * (on - bg) + (1 - np.exp(-n_off)) * (off - bg)), 0, 255)

    assert f.shape == (3, 2, 4, 3) and f.dtype == np.uint8
    assert np.array_equal(f[0], f[1])  # frame 0 shows the template window [t_0, t_1), as frame 1
    assert f[1, 0, 1].tolist() == colour(2, 0).tolist() and f[1, 0, 2].tolist() == colour(0, 1).tolist()
    assert f[1, 0, 3].tolist() == colour(1, 0).tolist() and f[1, 1, 0].tolist() == list(EVENT_BACKGROUND)
    assert f[2, 0, 3].tolist() == colour(0, 1).tolist() and f[2, 0, 1].tolist() == list(EVENT_BACKGROUND)


def test_weights_and_targets(tmp_path):
    net, line = load_event_tracker_model(None, "random", seed=3)
    path = tmp_path / "w.pth"
    torch.save({"net": net.state_dict()}, path)
    again, line2 = load_event_tracker_model("spiketrack-event-tiny", str(path))
    assert line == "random (seed 3)" and line2 == f"checkpoint {path}"
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), again.state_dict().values()))
    torch.save({"net": {"x": torch.zeros(1)}}, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError, match="does not fit"):
        load_event_tracker_model(None, str(tmp_path / "bad.pth"))
    with pytest.raises(ConfigError, match="not an event SpikeTrack"):
        load_event_tracker_model("spiketrack-tiny128-t1", "random")
    assert canonical_event_target("reference") == "reference-binary" and canonical_event_target("lava") == "lava-graded"
    with pytest.raises(ConfigError, match="unknown event tracking target"):
        canonical_event_target("gpu")


def test_evaluate_on_generated_event_sequences(dataset, tmp_path, capsys):
    out = tmp_path / "ev"
    args = ["evaluate", "--dataset", str(dataset), "--target", "torch,torch64", "--checkpoint", "random",
            "--workers", "1", "-o", str(out), "--no-progress"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "2 sequences" in printed and "(fe108)" in printed and "protocol otb" in printed
    rep = json.loads((out / "report.json").read_text())
    assert rep["format"] == "fe108" and rep["protocol"] == "otb" and rep["config"]["model"] == "spiketrack-event-tiny"
    assert set(rep["scores"]) == {"spiketrack-event-tiny_torch", "spiketrack-event-tiny_torch64"}
    assert rep["scores"]["spiketrack-event-tiny_torch"]["frames"] == 2 * FRAMES
    # results in the OTB layout, equal to `track --events` on the same sequence
    boxes, times = read_sequence_results(out / "results", "spiketrack-event-tiny_torch64", "synthetic-6", "otb",
                                         num_frames=FRAMES)
    single = track_events(events=dataset / "synthetic-6", targets=["torch64"], checkpoint="random")
    assert boxes.tolist() == single.runs["torch64"].boxes and len(times) == FRAMES
    rec = json.loads((out / "records" / "torch" / "synthetic-5.json").read_text())
    assert rec["status"] == "ok" and len(rec["boxes"]) == FRAMES and rec["spike_digest"] == [None] * FRAMES
    # the same command resumes: nothing runs again
    assert main(args) == 0
    assert "0 tasks run now" in capsys.readouterr().out
