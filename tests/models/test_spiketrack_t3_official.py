"""SpikeTrack-S256-T3: the tracker equals the official one bit for bit, and the memory layout of
the template input cannot change that.

Fixture: ``../shared/fixtures/spiketrack/s256-t3/tracker_trace.npz`` (the official inference
tracker, float32, 2 threads, on ``inputs/frames.npy``; see the fixtures' README, section "S256-T3
tracker fixture"). The weights are regenerated in memory by the session fixture ``s256_t3_model``
(tests/conftest.py, digest checked).

Why layout matters: the T = 3 template tensor is ``torch.stack`` of three normalized crops. When a
crop is a permuted HWC tensor (channels-last strides), the stack stays channels-last and 85 of the
template branch's convolutions run through other kernels that round differently (~4e-6); one spike
of ``ConvBlock1_2.0.spike2`` flips (membrane 0.50000018 vs 0.49999958) and the cached memory, and
so every box after frame 0, changes. The official template tensor is contiguous. Hence the
guards, each tested here: ``normalize_images`` returns a contiguous tensor; the tracker stacks into
a contiguous tensor; the model's branches make their input contiguous (and ``DownSampling`` ends
in ``.contiguous()`` as the official ``MS_DownSampling``); the reference executor makes its inputs
contiguous.

All comparisons are exact (``np.array_equal``) with torch pinned to 2 threads (the fixture's
thread count; the float32 reduction order depends on it). Runs in ~5 s (12 frames at 256 x 256).
"""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from spikedeploy.models.spiketrack import IMAGE_MEAN, IMAGE_STD, MEMORY_KEYS, decode_boxes, head_maps, normalize_images
from spikedeploy.tracking.tracker import SpikeTrackTracker, TorchNetwork

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO.parent / "shared" / "fixtures" / "spiketrack"
S256_T3 = FIXTURES / "s256-t3"


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def trace(s256_t3_model):  # the model fixture skips (with its reason) when the fixtures are absent
    return dict(np.load(S256_T3 / "tracker_trace.npz"))


@pytest.fixture(scope="module")
def sequence(s256_t3_model):
    frames = np.load(FIXTURES / "inputs" / "frames.npy")
    init = json.loads((FIXTURES / "inputs" / "sequence.json").read_text())["init_bbox_xywh"]
    boxes = json.loads((S256_T3 / "boxes.json").read_text())
    return frames, init, boxes


class RecordingNetwork(TorchNetwork):
    """The torch backend, recording the template inputs, the memories and the head outputs."""

    def __init__(self, model):
        super().__init__(model)
        self.template_inputs, self.memories, self.heads = [], [], []

    def template(self, templates):
        self.template_inputs.append(templates)
        memory = super().template(templates)
        self.memories.append(memory)
        return memory

    def search(self, search, memory):
        out = super().search(search, memory)
        self.heads.append(out)
        return out


# ---------------------------------------------------------------------------------------------
# the layout guards (no fixtures needed)
# ---------------------------------------------------------------------------------------------


def test_normalize_images_is_contiguous_and_stacks_contiguous():
    rng = np.random.default_rng(0)
    crops = rng.integers(0, 256, (3, 16, 16, 3), dtype=np.uint8)
    mean = torch.tensor(IMAGE_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGE_STD).view(1, 3, 1, 1)
    want = ((torch.from_numpy(crops).float().permute(0, 3, 1, 2) / 255.0) - mean) / std
    for images in (crops, torch.from_numpy(crops), crops[0], crops[:, ::-1]):  # a negative-stride view too
        out = normalize_images(images)
        assert out.is_contiguous() and out.dtype == torch.float32 and out.dim() == 4
    out = normalize_images(crops)
    assert torch.equal(out, want)  # same values as the official Preprocessor's op order
    one = [normalize_images(c) for c in crops]
    stacked = torch.stack(one, dim=0)
    assert stacked.shape == (3, 1, 3, 16, 16) and stacked.is_contiguous()
    assert torch.equal(stacked[:, 0], want)
    # the layout the fix removes: permuted HWC crops stack channels-last (strides (768, 3, 1, 48, 3))
    permuted = torch.stack([torch.from_numpy(c).float().unsqueeze(0).permute(0, 3, 1, 2) for c in crops], 0)
    assert not permuted.is_contiguous()


def test_tracker_hands_the_network_a_contiguous_template_stack():
    class Probe(TorchNetwork):
        def __init__(self, model):
            super().__init__(model)
            self.seen = []

        def template(self, templates):
            self.seen.append((templates.is_contiguous(), tuple(templates.shape)))
            return super().template(templates)

    from spikedeploy.models.spiketrack import spiketrack

    net = Probe(spiketrack("tiny128", 3))
    tracker = SpikeTrackTracker(net, update_interval=1, update_threshold=0.0)
    frame = np.random.default_rng(1).integers(0, 256, (96, 128, 3), dtype=np.uint8)
    tracker.initialize(frame, [40, 30, 20, 20])
    tracker.track(frame)  # update_interval 1, threshold 0: the template branch runs again
    assert net.seen == [(True, (3, 1, 3, 128, 128))] * 2


# ---------------------------------------------------------------------------------------------
# agreement with the official S256-T3 tracker
# ---------------------------------------------------------------------------------------------


def test_t3_tracker_equals_the_official_trace_bitwise(s256_t3_model, trace, sequence, two_threads):
    frames, init, boxes = sequence
    model = s256_t3_model
    features = []
    hook = model.decoder.register_forward_hook(lambda mod, inp, out: features.append(inp[0].detach().clone()))
    try:
        net = RecordingNetwork(model)
        tracker = SpikeTrackTracker(net)  # default preset: no update within 12 frames, as in the trace
        tracker.initialize(frames[0], init)
        assert np.array_equal(tracker.template_crops[0], trace["template_crop"])
        (z,) = net.template_inputs
        assert z.is_contiguous() and np.array_equal(z.numpy(), trace["template_input"])
        for k, key in enumerate(MEMORY_KEYS):
            assert np.array_equal(net.memories[0][key].numpy(), trace[f"cache_cross_block_{k}"]), f"cache {key}"
        results = [tracker.track(f) for f in frames[1:]]
    finally:
        hook.remove()
    assert len(net.template_inputs) == 1 and int(trace["n_template_updates"]) == 0 and tracker.updates == []
    assert len(results) == len(trace["search_crops"]) == 11 and len(features) == 11
    for i, r in enumerate(results):
        frame = i + 1
        assert np.array_equal(r.search_crop, trace["search_crops"][i]), f"search crop, frame {frame}"
        assert r.resize_factor == trace["search_resize_factors"][i]
        assert r.crop_box == trace["search_crop_center_boxes"][i].tolist(), frame
        assert np.array_equal(features[i].numpy(), trace["search_feature"][i]), f"search feature, frame {frame}"
        score_map, size_map, offset_map = head_maps(net.heads[i])
        assert np.array_equal(r.score_map.numpy(), trace["score_map"][i]), f"score map, frame {frame}"
        assert np.array_equal(score_map.numpy(), trace["score_map"][i])
        assert np.array_equal(size_map.numpy(), trace["size_map"][i]), f"size map, frame {frame}"
        assert np.array_equal(offset_map.numpy(), trace["offset_map"][i]), f"offset map, frame {frame}"
        assert np.array_equal(r.response.numpy(), trace["windowed_response"][i]), f"response, frame {frame}"
        # the confidence = max of the windowed response; boxes.json's copy of it differs by 1 ulp
        # (float32) in frames 5, 9 and 10, the trace's is the maximum of its own windowed response
        assert r.score == trace["conf"][frame] == float(trace["windowed_response"][i].max()), frame
        assert abs(r.score - boxes["conf_score_per_frame"][2 * frame]) <= 1e-7, frame
        # the head's own decoding of the un-windowed map (the official decoder's internal call)
        box_raw, score_raw = decode_boxes(score_map, size_map, offset_map)
        assert float(score_raw) == trace["score_nowindow_decoder_internal"][frame] == boxes["conf_score_per_frame"][2 * frame - 1]
        assert np.array_equal(box_raw.numpy(), trace["pred_box_norm_nowindow_decoder_internal"][i]), frame
        assert np.array_equal(np.array(r.box_norm, dtype=np.float32), trace["pred_box_norm_cxcywh"][i, 0]), frame
        assert r.box == trace["pred_boxes_xywh"][frame].tolist() == boxes["pred_boxes_xywh"][frame], f"box, frame {frame}"
        assert not r.updated


def test_t3_template_branch_ignores_the_input_layout(s256_t3_model, trace, two_threads):
    """The official template tensor given channels-last (the layout the old ``normalize_images``
    produced after stacking) or as a strided view still gives the official caches bitwise."""
    z = torch.from_numpy(trace["template_input"])  # [3, 1, 3, 256, 256], contiguous
    channels_last = z.permute(0, 1, 3, 4, 2).contiguous().permute(0, 1, 4, 2, 3)  # strides (196608, 196608, 1, 768, 3)
    padded = torch.zeros(3, 1, 3, 256, 300)
    padded[..., :256] = z
    strided = padded[..., :256]  # a view with row stride 300
    for layout in (channels_last, strided):
        assert not layout.is_contiguous() and torch.equal(layout, z)
        with torch.no_grad():
            memory = s256_t3_model.template_branch(layout)
        for k, key in enumerate(MEMORY_KEYS):
            assert np.array_equal(memory[key].numpy(), trace[f"cache_cross_block_{k}"]), (tuple(layout.stride()), key)
    # the search branch too: a channels-last copy of a search input gives the official feature
    memory = {key: torch.from_numpy(trace[f"cache_cross_block_{k}"]) for k, key in enumerate(MEMORY_KEYS)}
    x = torch.from_numpy(trace["search_inputs"][0]).unsqueeze(0)  # [1, 1, 3, S, S]
    x_cl = x.permute(0, 1, 3, 4, 2).contiguous().permute(0, 1, 4, 2, 3)
    with torch.no_grad():
        feature = s256_t3_model.search_feature(x_cl, memory)
    assert np.array_equal(feature.numpy(), trace["search_feature"][0])
    # the official search input reaches the first (3-channel) convolution as a channels-last view;
    # that convolution gives bitwise the same output in either layout (so the branch input can be
    # made contiguous without leaving the official arithmetic)
    stem = s256_t3_model.encoder.downsample1_1.encode_conv
    with torch.no_grad():
        for x in torch.from_numpy(trace["search_inputs"]):  # [1, 3, S, S] each
            assert torch.equal(stem(x.contiguous()), stem(x.contiguous(memory_format=torch.channels_last)))


def test_reference_executor_ignores_the_input_layout():
    """The reference executor (the oracle of every backend) makes its inputs contiguous: a
    channels-last template stack gives every node's value bitwise as the contiguous one (without
    it, 96 of the 339 nodes of this graph differ in float32 rounding)."""
    from spikedeploy.capture import capture
    from spikedeploy.models.spiketrack import init_spiketrack_for_spiking, spiketrack
    from spikedeploy.reference import run

    model = spiketrack("tiny128", 3)
    init_spiketrack_for_spiking(model, seed=0)
    x = torch.randn(3, 1, 3, 128, 128, generator=torch.Generator().manual_seed(0))
    graph = capture(model.template_net(), x, name="tiny128-t3 template")
    channels_last = x.permute(0, 1, 3, 4, 2).contiguous().permute(0, 1, 4, 2, 3)
    assert not channels_last.is_contiguous() and torch.equal(channels_last, x)
    a, b = run(graph, x, dtype=torch.float32), run(graph, channels_last, dtype=torch.float32)
    differ = [n.name for n in graph.nodes if not torch.equal(a.records[n.name].value, b.records[n.name].value)]
    assert differ == [] and len(graph.nodes) > 100
