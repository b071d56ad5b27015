"""NIR runtime: re-execute a loaded NIR artifact.

The file's spikedeploy metadata rebuilds the exact IR graph (:func:`spikedeploy.exporters.nir.to_ir`),
which the reference executor runs; so a NIR round trip is checked bit for bit against the
original graph. (Other NIR consumers, e.g. snntorch, run the standard nodes themselves; see
``tests/runtimes/test_nir.py`` for the interop check.)
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Union

import torch

from spikedeploy.reference import run as reference_run
from spikedeploy.targets import TargetRun


def run(artifact, x, *, progress: bool = False, dtype: torch.dtype = torch.float64) -> TargetRun:
    """Run ``artifact`` (a :class:`~spikedeploy.exporters.nir.NirArtifact` or a path to a .nir
    file) on ``x`` ``[T, B, *s]`` (or a dict by input name). Returns the graph outputs and the
    spike counts q of every neuron node."""
    from spikedeploy.exporters.nir import NirArtifact, load

    if isinstance(artifact, (str, Path)):
        artifact = load(artifact)
    if not isinstance(artifact, NirArtifact):
        raise TypeError(f"expected a NirArtifact or a path, got {type(artifact).__name__}")
    t0 = time.perf_counter()
    r = reference_run(artifact.graph, x, dtype=dtype)
    spike_counts = {n.name: r.records[n.name].q for n in artifact.graph.neurons()}
    return TargetRun(
        target="nir",
        encoding=artifact.encoding,
        outputs=dict(r.outputs),
        spike_counts=spike_counts,
        info={"wall_s": time.perf_counter() - t0, "timesteps": int(next(iter(r.outputs.values())).shape[0]),
              "executor": "spikedeploy reference (IR rebuilt from NIR metadata)",
              "path": str(artifact.path) if artifact.path else None},
    )
