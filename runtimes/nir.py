"""NIR runtime: re-execute a loaded NIR artifact.

The file's spikedeploy metadata rebuilds the exact IR graph (:func:`spikedeploy.exporters.nir.to_ir`),
which the reference executor runs; so a NIR round trip is checked bit for bit against the
original graph. (Other NIR consumers run the standard nodes themselves:
:mod:`spikedeploy.exporters.nir_peers` runs snntorch, norse, sinabs, rockpool and spyx on a file, and
``tests/interop/`` holds the peer matrix.)

Neuron state across calls: NIR itself has no notion of state carried between executions; since
this runtime re-executes the rebuilt IR with the reference, :func:`run` takes the reference's
``state=`` (:func:`spikedeploy.reference.run`) and returns the final states in ``TargetRun.state``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Dict, Mapping

import numpy as np
import torch

from spikedeploy.errors import InputError
from spikedeploy.reference import run as reference_run
from spikedeploy.targets import TargetRun
from spikedeploy.validate import check_run_input


def _inputs(graph, x) -> Dict[str, torch.Tensor]:
    """Every graph input checked at the boundary (shape ``[T, B, *s]``, non-empty T and B, the
    fixed T of graphs with time-axis ops, a real dtype, finite values)."""
    if not isinstance(x, Mapping):
        if len(graph.inputs) != 1:
            raise InputError(f"the NIR graph has {len(graph.inputs)} inputs ({[s.name for s in graph.inputs]}); "
                             "pass a dict by input name")
        x = {graph.inputs[0].name: x}
    out = {}
    for spec in graph.inputs:
        if spec.name not in x:
            raise InputError(f"missing graph input {spec.name!r}")
        arr = check_run_input(x[spec.name], f"input {spec.name!r}", spec.shape, steps=spec.steps,
                              step_hint=f"the graph needs exactly T={spec.steps} (its time-axis ops have fixed "
                                        "step counts)")
        out[spec.name] = torch.from_numpy(np.ascontiguousarray(arr))
    return out


def run(artifact, x, *, progress: bool = False, dtype: torch.dtype = torch.float64, state=None) -> TargetRun:
    """Run ``artifact`` (a :class:`~spikedeploy.exporters.nir.NirArtifact` or a path to a .nir
    file) on ``x`` ``[T, B, *s]`` (or a dict by input name). Returns the graph outputs and the
    spike counts q of every neuron node. ``state``: carried neuron states, as the reference's
    (module docstring); ``TargetRun.state`` holds the final ones."""
    from spikedeploy.exporters.nir import NirArtifact, load

    if isinstance(artifact, (str, Path)):
        artifact = load(artifact)
    if not isinstance(artifact, NirArtifact):
        raise TypeError(f"expected a NirArtifact or a path, got {type(artifact).__name__}")
    xs = _inputs(artifact.graph, x)
    t0 = time.perf_counter()
    r = reference_run(artifact.graph, xs, dtype=dtype, state=state)
    spike_counts = {n.name: r.records[n.name].q for n in artifact.graph.neurons()}
    return TargetRun(
        target="nir",
        encoding=artifact.encoding,
        outputs=dict(r.outputs),
        spike_counts=spike_counts,
        info={"wall_s": time.perf_counter() - t0, "timesteps": int(next(iter(r.outputs.values())).shape[0]),
              "executor": "spikedeploy reference (IR rebuilt from NIR metadata)",
              "path": str(artifact.path) if artifact.path else None},
        state=r.state,
    )
