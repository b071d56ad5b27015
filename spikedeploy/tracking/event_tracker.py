"""The event SpikeTrack's host loop: template memory, one search frame per event window, MSST state.

A sequence is an event stream with the times of its annotated frames ``t_0 < t_1 < ... <
t_{N-1}`` (microseconds) and the box of frame 0. The loop (HOST unless a network call)::

    initialize(events, t_0, t_1, box_0):
        template = event_crop([t_0, t_1), box_0, EVENT_TEMPLATE_FACTOR, template_size)
        memory   = network.template(template)          # K_t^T V_t per transformer block
        network.start(memory)                          # a fresh MSST state
    track(events, t_{i-1}, t_i)  for i = 1 .. N-1:
        search   = event_crop([t_{i-1}, t_i), state, EVENT_SEARCH_FACTOR, S)
        head     = network.search(search)              # ONE time step; every membrane carried
        boxes    = decode_boxes(hann * sigmoid(score), sigmoid(size), offset)
        state    = clip_box(map_box_back(state, boxes * S / resize_factor))

The template is cut from the first window around the given box (an event camera sees nothing of
a frame at one instant: the events of ``[t_0, t_1)`` are the first picture of the target). The
search crop of frame ``i`` re-centres on the previous state every frame, and the network's state
carries over regardless (MSST: consecutive search frames are consecutive time steps, as in
training). The box arithmetic is the RGB tracker's (:mod:`spikedeploy.tracking.tracker`), the crop
:func:`~spikedeploy.tracking.event_crops.event_crop`.

Network protocol (:class:`EventTrackerNetwork`): ``size``, ``template_size``, ``n_bins``;
``template(grid [1, 1, 2n, St, St]) -> memory``; ``start(memory)`` opens a stream (state zero);
``search(grid [1, 1, 2n, S, S]) -> (score_logits, size_logits, offset)`` each ``[1, 1, c, F, F]``
for one frame with the state kept; ``close()``. :class:`TorchEventNetwork` runs the PyTorch
model (:class:`~spikedeploy.models.spiketrack_event.SearchStream`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, List, Optional, Sequence

import numpy as np
import torch

from spikedeploy.errors import ConfigError
from spikedeploy.events.stream import EventStream
from spikedeploy.tracking.event_crops import EVENT_SEARCH_FACTOR, EVENT_TEMPLATE_FACTOR, event_crop
from spikedeploy.tracking.tracker import (CLIP_MARGIN, InvalidBoxError, TrackerError, TrackerStateError, clip_box,
                                          map_box_back)

__all__ = ["EventTrackerNetwork", "TorchEventNetwork", "EventTrackResult", "EventTracker", "track_event_sequence",
           "grid_input"]


def grid_input(grid: np.ndarray) -> torch.Tensor:
    """HOST: one crop ``[n_bins, 2, S, S]`` -> float32 ``[1, 1, 2 n, S, S]`` (the model's
    :func:`~spikedeploy.models.spiketrack_event.voxel_input` channel order: bin-major)."""
    from spikedeploy.models.spiketrack_event import voxel_input

    return voxel_input(grid[None])


class EventTrackerNetwork:
    """The protocol an event network backend implements (duck typing works; module docstring)."""

    size: int
    template_size: int
    n_bins: int

    def template(self, grid: torch.Tensor) -> Any:  # pragma: no cover - protocol
        raise NotImplementedError

    def start(self, memory: Any) -> None:  # pragma: no cover - protocol
        raise NotImplementedError

    def search(self, grid: torch.Tensor):  # pragma: no cover - protocol
        raise NotImplementedError

    def close(self) -> None:  # pragma: no cover - protocol
        pass


class TorchEventNetwork(EventTrackerNetwork):
    """:class:`EventTrackerNetwork` backed by the PyTorch model in eval mode, under no_grad: the
    template branch, then a :class:`~spikedeploy.models.spiketrack_event.SearchStream` (one frame
    per call, membranes kept). Inputs are cast to the model's dtype (``model.double()`` runs in
    float64, where frame-by-frame equals the whole clip bit for bit)."""

    def __init__(self, model):
        from spikedeploy.models.spiketrack_event import EventSpikeTrack

        if not isinstance(model, EventSpikeTrack):
            raise ConfigError(f"TorchEventNetwork: expected an event SpikeTrack model, got {type(model).__name__}")
        self.model = model.eval()
        c = model.config
        self.size, self.template_size, self.n_bins = c.resolution, c.template_size, c.n_bins
        self._stream = None

    def _dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def template(self, grid: torch.Tensor):
        with torch.no_grad():
            return self.model.template_branch(grid.to(self._dtype()))

    def start(self, memory) -> None:
        self.close()
        self._stream = self.model.search_stream(memory)

    def search(self, grid: torch.Tensor):
        if self._stream is None:
            raise TrackerStateError("TorchEventNetwork.search() before start(memory)")
        with torch.no_grad():
            return self._stream(grid.to(self._dtype()))

    def close(self) -> None:
        if self._stream is not None:
            self._stream.close()
            self._stream = None


@dataclass
class EventTrackResult:
    """One tracked frame: ``box`` ``[x, y, w, h]`` (the new state), ``score`` (maximum of the
    windowed score map), ``frame_index`` (1 for the first search frame), ``window`` ``(t0, t1)``,
    ``crop_box`` (the previous state), ``resize_factor`` (S / crop side), ``box_norm`` ``(cx, cy,
    w, h)`` in the crop, ``events`` (events in the window), ``search`` the ``[n_bins, 2, S, S]``
    crop and ``score_map`` ``[1, 1, F, F]`` before the window."""

    box: List[float]
    score: float
    frame_index: int
    window: tuple
    crop_box: List[float]
    resize_factor: float
    box_norm: List[float]
    events: int
    search: np.ndarray = field(repr=False)
    score_map: torch.Tensor = field(repr=False)


class EventTracker:
    """The event SpikeTrack loop (module docstring) around ``network``; ``window``: multiply the
    score map by the Hann window (as the RGB tracker)."""

    def __init__(self, network: EventTrackerNetwork, *, window: bool = True):
        from spikedeploy.models.spiketrack import hann_window

        for attr in ("size", "template_size", "n_bins", "template", "start", "search"):
            if not hasattr(network, attr):
                raise ConfigError(f"EventTracker: the network lacks {attr!r} (see EventTrackerNetwork)")
        self.network = network
        self.size, self.template_size, self.n_bins = int(network.size), int(network.template_size), int(network.n_bins)
        if self.size % 16 or self.size < 16:
            raise ConfigError(f"EventTracker: network.size must be a multiple of 16, got {self.size}")
        self.feat_size = self.size // 16
        self.use_window = bool(window)
        self.window = hann_window(self.feat_size)
        self.state: Optional[List[float]] = None
        self.frame_index = 0
        self.sensor: Optional[tuple] = None
        self.last_time: Optional[int] = None

    @property
    def initialized(self) -> bool:
        return self.state is not None

    def initialize(self, events: EventStream, t0: int, t1: int, box: Sequence[float]) -> np.ndarray:
        """Start a sequence: the template from the events of ``[t0, t1)`` around ``box``; returns
        the template crop ``[n_bins, 2, St, St]``."""
        from spikedeploy.validate import check_init_box

        if not isinstance(events, EventStream):
            raise ConfigError(f"EventTracker.initialize: expected an EventStream, got {type(events).__name__}")
        vals = list(np.asarray(box, dtype=np.float64).reshape(-1)) if not isinstance(box, str) else []
        if len(vals) != 4:
            raise InvalidBoxError(f"init box must be [x, y, w, h] (4 numbers), got {box!r}")
        check_init_box(*vals, events.height, events.width, InvalidBoxError)
        self.network.close()
        grid, _ = event_crop(events, t0, t1, vals, EVENT_TEMPLATE_FACTOR, self.template_size, self.n_bins)
        memory = self.network.template(grid_input(grid))
        self.network.start(memory)
        self.state = [float(v) for v in vals]
        self.frame_index = 0
        self.sensor = (events.width, events.height)
        self.last_time = int(t0)
        return grid

    def _head(self, head):
        from spikedeploy.models.spiketrack import HeadOutputs
        from spikedeploy.models.spiketrack_event import event_head_maps

        if not isinstance(head, (tuple, list)) or len(head) != 3:
            raise TrackerError(f"network.search returned {type(head).__name__}; expected (score, size, offset)")
        F_ = self.feat_size
        parts = []
        for name, t, c in zip(HeadOutputs._fields, head, (1, 2, 2)):
            t = torch.as_tensor(np.asarray(t) if not isinstance(t, torch.Tensor) else t).detach().float().cpu()
            if tuple(t.shape) != (1, 1, c, F_, F_):
                raise TrackerError(f"network.search: {name} has shape {list(t.shape)}, expected [1, 1, {c}, {F_}, {F_}]")
            parts.append(t)
        return event_head_maps(HeadOutputs(*parts))

    def track(self, events: EventStream, t0: int, t1: int) -> EventTrackResult:
        """Track the window ``[t0, t1)`` (the next frame) -> :class:`EventTrackResult`."""
        from spikedeploy.models.spiketrack import decode_boxes

        if not self.initialized:
            raise TrackerStateError("track() before initialize(events, t0, t1, box)")
        if (events.width, events.height) != self.sensor:
            raise TrackerError(f"track: sensor {events.width}x{events.height} differs from the first window's "
                               f"{self.sensor[0]}x{self.sensor[1]}")
        self.frame_index += 1
        prev = list(self.state)
        grid, resize_factor = event_crop(events, t0, t1, prev, EVENT_SEARCH_FACTOR, self.size, self.n_bins)
        score_map, size_map, offset_map = self._head(self.network.search(grid_input(grid)))
        score_map, size_map, offset_map = score_map[0], size_map[0], offset_map[0]  # [1, c, F, F]
        response = self.window * score_map if self.use_window else score_map
        boxes, conf = decode_boxes(response, size_map, offset_map)
        pred = (boxes.view(-1, 4).mean(dim=0) * self.size / resize_factor).tolist()
        self.state = clip_box(map_box_back(prev, pred, resize_factor, self.size), events.height, events.width,
                              margin=CLIP_MARGIN)
        i0, i1 = np.searchsorted(events.events["t"], [int(t0), int(t1)], side="left")
        self.last_time = int(t1)
        return EventTrackResult(box=list(self.state), score=float(conf.reshape(-1)[0]), frame_index=self.frame_index,
                                window=(int(t0), int(t1)), crop_box=prev, resize_factor=resize_factor,
                                box_norm=boxes.view(-1).tolist(), events=int(i1 - i0), search=grid,
                                score_map=score_map)

    def close(self) -> None:
        self.network.close()


def track_event_sequence(tracker: EventTracker, events: EventStream, frame_times: Sequence[int],
                         init_box: Sequence[float], *, progress: bool = False) -> List[List[float]]:
    """Boxes for every annotated frame: frame 0 is ``init_box`` (the template from ``[t_0,
    t_1)``), frame ``i >= 1`` is tracked on ``[t_{i-1}, t_i)``."""
    times = np.asarray(frame_times)
    if times.ndim != 1 or times.size < 2 or np.any(np.diff(times) <= 0):
        raise ConfigError("track_event_sequence: frame_times must be >= 2 strictly increasing timestamps")
    tracker.initialize(events, int(times[0]), int(times[1]), init_box)
    out = [list(tracker.state)]
    rng = range(1, len(times))
    if progress:
        from tqdm import tqdm

        rng = tqdm(rng, desc="event frames", unit="frame")
    try:
        for i in rng:
            out.append(tracker.track(events, int(times[i - 1]), int(times[i])).box)
    finally:
        tracker.close()
    return out
