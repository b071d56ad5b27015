"""ONNX target runtime: run an exported model with onnxruntime (CPU execution provider).

The session uses 2 intra-op threads and only *basic* graph optimizations (constant folding,
redundant-node elimination): extended optimizations fuse nodes (e.g. MatMul + Add into one Gemm
kernel), which changes the order of floating-point operations relative to the exported graph,
and the exported graph follows the reference's operation order on purpose.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Dict, Mapping, Optional, Union

import numpy as np
import torch

from spikedeploy.errors import SpikedeployError
from spikedeploy.targets import TargetRun

INTRA_OP_THREADS = 2


def _artifact(artifact):
    from spikedeploy.exporters.onnx import OnnxArtifact, load

    if isinstance(artifact, OnnxArtifact):
        return artifact
    if isinstance(artifact, (str, Path)):
        return load(artifact)
    raise SpikedeployError(f"expected an OnnxArtifact or a path to an .onnx file, got {type(artifact).__name__}")


def session(artifact):
    """An ``onnxruntime.InferenceSession`` for the artifact (CPU provider, 2 intra-op threads)."""
    try:
        import onnxruntime as ort
    except ImportError as e:  # pragma: no cover - dependency missing
        raise SpikedeployError(f"the ONNX runtime needs 'onnxruntime' ({e}); pip install onnxruntime") from None
    art = _artifact(artifact)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = INTRA_OP_THREADS
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    opts.log_severity_level = 3
    try:
        return ort.InferenceSession(art.serialized(), sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as e:
        raise SpikedeployError(f"onnxruntime cannot load the model{f' {art.path}' if art.path else ''}: {e}") from None


def _feeds(art, x) -> Dict[str, np.ndarray]:
    specs = art.metadata["inputs"]
    if not isinstance(x, Mapping):
        if len(specs) != 1:
            raise SpikedeployError(f"the model has {len(specs)} inputs ({[s['ir'] for s in specs]}); pass a dict")
        x = {specs[0]["ir"]: x}
    dtype = np.float64 if art.precision == "float64" else np.float32
    T = art.timesteps
    feeds = {}
    for spec in specs:
        if spec["ir"] not in x:
            raise SpikedeployError(f"missing model input {spec['ir']!r}")
        v = x[spec["ir"]]
        arr = v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else np.asarray(v)
        want = tuple(spec["shape"])
        if arr.ndim != len(want) + 2 or tuple(arr.shape[2:]) != want:
            raise SpikedeployError(
                f"input {spec['ir']!r} must have shape [T, B, {', '.join(map(str, want))}], got {list(arr.shape)}"
            )
        if arr.shape[0] != T:
            raise SpikedeployError(
                f"input {spec['ir']!r} has T={arr.shape[0]} time steps, but the ONNX model was exported "
                f"unrolled over T={T}; re-export with timesteps={arr.shape[0]}"
            )
        if arr.shape[1] < 1:
            raise SpikedeployError(f"input {spec['ir']!r} has an empty batch")
        if not np.isfinite(arr).all():
            raise SpikedeployError(f"input {spec['ir']!r} contains NaN or Inf")
        feeds[spec["onnx"]] = np.ascontiguousarray(arr, dtype=dtype)
    return feeds


def run(artifact, x, *, progress: bool = False, batch_size: Optional[int] = None) -> TargetRun:
    """Run ``x`` ``[T, B, *s]`` (a tensor, array, or a dict by IR input name) through the model.

    Returns the graph outputs by IR output name and every neuron's q by IR node name, as torch
    tensors in the model's precision. ``batch_size`` runs the batch in chunks (``progress`` shows
    a bar over the chunks)."""
    art = _artifact(artifact)
    if art.encoding != "integer":
        raise SpikedeployError(f"unsupported ONNX artifact encoding {art.encoding!r}")
    feeds = _feeds(art, x)
    B = next(iter(feeds.values())).shape[1]
    chunk = B if not batch_size else max(1, int(batch_size))
    sess = session(art)
    outputs, neurons = art.outputs, art.neurons
    names = list(outputs.values()) + list(neurons.values())
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    parts = {n: [] for n in names}
    starts = list(range(0, B, chunk))
    for s in tqdm(starts, desc="onnxruntime", unit="chunk", disable=not progress):
        res = sess.run(names, {k: v[:, s:s + chunk] for k, v in feeds.items()})
        for n, r in zip(names, res):
            parts[n].append(r)
    wall = time.perf_counter() - t0
    full = {n: torch.from_numpy(np.concatenate(p, axis=1)) for n, p in parts.items()}
    return TargetRun(
        target="onnx",
        encoding="integer",
        outputs={ir: full[o] for ir, o in outputs.items()},
        spike_counts={ir: full[o] for ir, o in neurons.items()},
        info={
            "wall_s": wall,
            "timesteps": art.timesteps,
            "precision": art.precision,
            "provider": "CPUExecutionProvider",
            "intra_op_threads": INTRA_OP_THREADS,
            "batch": int(B),
        },
    )
