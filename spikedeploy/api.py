"""The Python API. Every CLI subcommand is a thin wrapper around one function here.

    from spikedeploy import api
    report = api.verify(model="sdt-test", neuron="nilif", timesteps=3, num_inputs=256)
    report.write("out/verify")          # report.md + report.json, written atomically
    assert report.passed

This module only gathers the functions: they live in :mod:`spikedeploy.loading` (models, inputs,
precision), :mod:`spikedeploy.verification` (``verify``, the neuron demo), :mod:`spikedeploy.exporting`
(``export``, ``run``), :mod:`spikedeploy.audit`, :mod:`spikedeploy.hardware` (``budget``) and the
tracking application :mod:`spikedeploy.tracking` (``track``). Nothing in spikedeploy imports this
module, so it closes no import cycle.
"""

from __future__ import annotations

from typing import Optional

from spikedeploy.errors import ConfigError
from spikedeploy.exporting import ExportResult, export, run_artifact
from spikedeploy.fsutil import check_output_file
from spikedeploy.loading import (
    DEFAULT_WEIGHT_BITS,
    DTYPES,
    PRECISIONS,
    SPIKE_MODES,
    LoadedModel,
    artifact_precision,
    build_model,
    calibration_inputs,
    check_precision,
    default_encoding,
    load_input_file,
    make_inputs,
    prepare_graph,
    to_fixed,
)
from spikedeploy.tracking.benchmark import evaluate
from spikedeploy.tracking.benchmark import score_results as score
from spikedeploy.tracking.datasets import make_dataset, read_dataset
from spikedeploy.tracking.event_backends import EventGraphNetwork, capture_event_branches
from spikedeploy.tracking.event_datasets import (EventTrackingDataset, EventTrackingSequence, make_event_dataset,
                                                read_event_dataset, read_event_sequence)
from spikedeploy.tracking.event_run import EVENT_TARGETS, EventTrackReport, load_event_input, track_events
from spikedeploy.tracking.run import TRACK_TARGETS, load_boxes, load_frames, track
from spikedeploy.video.classify import CLASSIFY_TARGETS, ClassifyReport, classify
from spikedeploy.video.training import bundled_video_model, load_video_model, train_video_model
from spikedeploy.video.training import heldout_evaluation as video_heldout_evaluation
from spikedeploy.verification import (
    DEMO_CASES,
    CaptureCheck,
    Stage,
    VerificationReport,
    check_capture,
    inspect,
    neuron_demo,
    stage_result,
    verify,
)

__all__ = [
    "DEFAULT_WEIGHT_BITS", "DTYPES", "PRECISIONS", "SPIKE_MODES", "LoadedModel", "artifact_precision",
    "build_model", "calibration_inputs", "check_precision", "load_input_file", "make_inputs", "prepare_graph",
    "to_fixed", "DEMO_CASES", "CaptureCheck", "Stage", "VerificationReport", "check_capture", "inspect",
    "neuron_demo", "stage_result", "verify", "ExportResult", "default_encoding", "export", "run_artifact",
    "TRACK_TARGETS", "TRACK_BACKENDS", "load_boxes", "load_frames", "track", "demo", "budget",
    "evaluate", "score", "make_dataset", "read_dataset",
    "EVENT_TARGETS", "EventTrackReport", "load_event_input", "track_events", "EventTrackingDataset",
    "EventTrackingSequence", "make_event_dataset", "read_event_dataset", "read_event_sequence", "EventGraphNetwork",
    "capture_event_branches", "CLASSIFY_TARGETS", "ClassifyReport", "classify", "bundled_video_model",
    "load_video_model", "train_video_model", "video_heldout_evaluation",
]

#: kept for callers of earlier versions: the canonical tracking target names
TRACK_BACKENDS = TRACK_TARGETS


def demo(output="out/demo", *, lava_frames: Optional[int] = None, num_frames: Optional[int] = None, neuron_inputs: int = 32,
         progress: bool = True, lava: bool = True, overwrite: bool = False) -> int:
    """The main job: the bundled trained SpikeTrack tracker exported to every target, verified,
    audited and tracking the bundled clip in Lava and onnxruntime (:func:`spikedeploy.demo.run_demo`).
    Returns the exit code (0 when every check passed)."""
    from spikedeploy.demo import run_demo

    res = run_demo(output, lava_frames=lava_frames, num_frames=num_frames, neuron_inputs=neuron_inputs,
                   progress=progress, lava=lava, overwrite=overwrite)
    return 0 if res.passed else 1


def budget(artifact, *, profile: str = "loihi2", output=None, fmt: Optional[str] = None, overwrite: bool = False):
    """The hardware budget of a Lava bundle (:func:`spikedeploy.hardware.budget_bundle`: per layer
    neurons, synapses, synaptic memory and state bits, neurocores; chips for the network, every
    constant with its source). With ``output`` the report is written there (atomically; an
    existing file only with ``overwrite``) in ``fmt`` (md, json, html; default from the suffix).
    Returns the :class:`~spikedeploy.hardware.BudgetReport`."""
    from spikedeploy.hardware import FORMATS, budget_bundle

    if fmt is not None and fmt not in FORMATS:
        raise ConfigError(f"unknown budget format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if output is not None:
        check_output_file(output, "budget report", overwrite=overwrite, inputs=(artifact,))
    report = budget_bundle(artifact, profile)
    if output is not None:
        report.write(output, fmt, overwrite=overwrite, inputs=(artifact,))
    return report
