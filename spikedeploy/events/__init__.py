"""Event-camera input: event streams, their files, voxel grids and an event-camera simulator.

- :mod:`.stream` -- :class:`EventStream`, the in-memory form (a structured array x, y, t, p and
  the sensor size) and its validation;
- :mod:`.io` -- :func:`read_events` / :func:`write_events`: AEDAT4 (dv-processing), npz, npy, HDF5;
- :mod:`.voxel` -- :func:`event_frames` (n-bin two-channel count frames, equal to tonic's
  ``ToFrame``) and :func:`window_frames` (the tracker's per-search-frame grids);
- :mod:`.simulator` -- :func:`simulate_events` (frames to events) and
  :func:`synthetic_event_sequence` (the synthetic tracking sequences as event sequences).

An application package: the core never imports it (``tests/test_layering.py``); it uses the core
and :mod:`spikedeploy.tracking.synth`.
"""

from spikedeploy.events.io import FORMATS, detect_format, read_events, write_events
from spikedeploy.events.simulator import (EventSequence, SimulatorConfig, grey_levels, simulate_events,
                                          synthetic_event_sequence)
from spikedeploy.events.stream import EVENT_DTYPE, EventStream, from_arrays
from spikedeploy.events.voxel import event_frames, window_frames

__all__ = [
    "EVENT_DTYPE", "EventStream", "from_arrays",
    "FORMATS", "detect_format", "read_events", "write_events",
    "event_frames", "window_frames",
    "EventSequence", "SimulatorConfig", "grey_levels", "simulate_events", "synthetic_event_sequence",
]
