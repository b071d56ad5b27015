"""The event tracker's host loop (spikedeploy.tracking.event_tracker) with the PyTorch network."""

import pytest
import torch

from spikedeploy.errors import ConfigError
from spikedeploy.events import synthetic_event_sequence
from spikedeploy.models.spiketrack import decode_boxes, hann_window
from spikedeploy.models.spiketrack_event import (event_head_maps, init_event_spiketrack_for_spiking,
                                                 spiketrack_event)
from spikedeploy.tracking.event_crops import EVENT_SEARCH_FACTOR, EVENT_TEMPLATE_FACTOR, event_crop
from spikedeploy.tracking.event_tracker import (EventTracker, TorchEventNetwork, grid_input,
                                                track_event_sequence)
from spikedeploy.tracking.tracker import InvalidBoxError, TrackerStateError, clip_box, map_box_back


@pytest.fixture(scope="module")
def seq():
    return synthetic_event_sequence(3, "heldout", num_frames=12, difficulty=0.5)


@pytest.fixture(scope="module")
def model(seq):
    m = spiketrack_event("tiny").double()
    c = m.config
    t0, t1 = seq.frame_times[:2]
    tpl = grid_input(event_crop(seq.events, t0, t1, seq.boxes[0], EVENT_TEMPLATE_FACTOR, c.template_size,
                                c.n_bins)[0]).double()
    search = torch.cat([grid_input(event_crop(seq.events, seq.frame_times[i - 1], seq.frame_times[i], seq.boxes[i - 1],
                                              EVENT_SEARCH_FACTOR, c.resolution, c.n_bins)[0])
                        for i in range(1, 5)]).double()
    init_event_spiketrack_for_spiking(m, seed=1, template=tpl.expand(1, 2, -1, -1, -1).contiguous(),
                                      search=search.expand(-1, 2, -1, -1, -1).contiguous(), frames=4)
    return m.eval()


def test_frame_by_frame_tracking_equals_the_whole_clip_run_of_its_own_crops(seq, model):
    """The loop's state carries: re-running the search branch on all the crops the tracker cut, as one
    clip of T = 11 steps, gives the same boxes (float64: bit for bit)."""
    tracker = EventTracker(TorchEventNetwork(model))
    tracker.initialize(seq.events, seq.frame_times[0], seq.frame_times[1], seq.boxes[0])
    results = [tracker.track(seq.events, seq.frame_times[i - 1], seq.frame_times[i]) for i in range(1, len(seq))]
    tracker.close()
    assert sum(r.events for r in results) > 1000 and all(r.search.sum() > 0 for r in results)
    c = model.config
    with torch.no_grad():
        tpl = grid_input(event_crop(seq.events, seq.frame_times[0], seq.frame_times[1], seq.boxes[0],
                                    EVENT_TEMPLATE_FACTOR, c.template_size, c.n_bins)[0]).double()
        clip = torch.cat([grid_input(r.search) for r in results]).double()
        out = model.search_branch(clip, model.template_branch(tpl))
    score, size, offset = event_head_maps(type(out)(*(t.float() for t in out)))  # the host works in float32
    win = hann_window(c.feat_size)
    assert score.shape[0] == len(results) == len(seq) - 1
    for t, r in enumerate(results):
        boxes, conf = decode_boxes(win * score[t], size[t], offset[t])
        pred = (boxes.view(-1, 4).mean(dim=0) * c.resolution / r.resize_factor).tolist()
        expect = clip_box(map_box_back(r.crop_box, pred, r.resize_factor, c.resolution), 240, 320)
        assert r.box == expect and r.score == float(conf.reshape(-1)[0])
    # the boxes move (the network's output decides the next crop)
    assert len({tuple(r.box) for r in results}) > 1


def test_track_event_sequence_gives_one_box_per_frame(seq, model):
    boxes = track_event_sequence(EventTracker(TorchEventNetwork(model)), seq.events, seq.frame_times, seq.boxes[0])
    assert len(boxes) == len(seq) and boxes[0] == [float(v) for v in seq.boxes[0]]
    assert all(len(b) == 4 and b[2] >= 10 and b[3] >= 10 for b in boxes)


def test_bad_use_is_named(seq, model):
    tr = EventTracker(TorchEventNetwork(model))
    with pytest.raises(TrackerStateError):
        tr.track(seq.events, 0, 10)
    with pytest.raises(InvalidBoxError):
        tr.initialize(seq.events, seq.frame_times[0], seq.frame_times[1], [1, 2, 3])
    with pytest.raises(InvalidBoxError):
        tr.initialize(seq.events, seq.frame_times[0], seq.frame_times[1], [1000, 1000, 5, 5])
    with pytest.raises(ConfigError, match="strictly increasing"):
        track_event_sequence(tr, seq.events, [5, 5, 6], seq.boxes[0])
    with pytest.raises(ConfigError, match="event SpikeTrack"):
        TorchEventNetwork(torch.nn.Linear(2, 2))
