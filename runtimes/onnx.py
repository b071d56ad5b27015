"""ONNX target runtime: run an exported model with onnxruntime (CPU execution provider).

The session uses 2 intra-op threads and only *basic* graph optimizations (constant folding,
redundant-node elimination): extended optimizations fuse nodes (e.g. MatMul + Add into one Gemm
kernel), which changes the order of floating-point operations relative to the exported graph,
and the exported graph follows the reference's operation order on purpose.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Dict, Mapping, Optional

import numpy as np
import torch

from spikedeploy.errors import ArtifactError, InputError, SpikedeployError
from spikedeploy.targets import TargetRun
from spikedeploy.validate import check_run_input, detail

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
        raise ArtifactError(f"onnxruntime cannot load the ONNX model{f' {art.path}' if art.path else ''} ({detail(e)}); "
                            "export it again with spikedeploy export --target onnx") from None


def _feeds(art, x) -> Dict[str, np.ndarray]:
    """The onnxruntime feeds for ``x``: every model input checked (shape ``[T, B, *s]`` with the
    exported T, a non-empty batch, a real dtype, finite values) and cast to the model's precision."""
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
            raise InputError(f"missing model input {spec['ir']!r}")
        arr = check_run_input(x[spec["ir"]], f"input {spec['ir']!r}", spec["shape"], steps=T,
                              step_hint=f"the ONNX model was exported unrolled over T={T}; re-export with "
                                        f"timesteps={np.shape(x[spec['ir']])[0]}")
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
        try:
            res = sess.run(names, {k: v[:, s:s + chunk] for k, v in feeds.items()})
        except Exception as e:  # onnxruntime's Fail/InvalidArgument/RuntimeException: a damaged model
            raise ArtifactError(f"onnxruntime failed running the ONNX model{f' {art.path}' if art.path else ''} "
                                f"({detail(e)}); export it again with spikedeploy export --target onnx") from None
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
