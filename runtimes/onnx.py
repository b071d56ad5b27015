"""ONNX target runtime: run an exported model with onnxruntime (CPU execution provider).

The session uses 2 intra-op threads and only *basic* graph optimizations (constant folding,
redundant-node elimination): extended optimizations fuse nodes (e.g. MatMul + Add into one Gemm
kernel), which changes the order of floating-point operations relative to the exported graph,
and the exported graph follows the reference's operation order on purpose.

Neuron state: a model exported with ``state_io=True`` (:mod:`spikedeploy.exporters.onnx`) takes
every stateful neuron's state as inputs; :func:`run` feeds ``state`` (IR neuron name ->
:class:`~spikedeploy.neurons.NeuronState` ``[B, *s]``; a neuron left out starts fresh: zeros) and
returns the final states in ``TargetRun.state``. :mod:`spikedeploy.streaming` carries them from
call to call.
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


def _state_feeds(art, state, B: int, dtype) -> Dict[str, np.ndarray]:
    """The state inputs of a ``state_io`` model: ``state``'s tensors (checked: a known stateful
    neuron, shape ``[B, *s]``, finite) or zeros for a neuron left out (the fresh start)."""
    from spikedeploy.neurons import NeuronState

    entries = art.state
    state = dict(state or {})
    if state and not entries:
        raise InputError(f"the ONNX model{f' {art.path}' if art.path else ''} has no state inputs; export it with "
                         "state_io=True to carry neuron state across calls")
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim][1:] for v in art.model.graph.input}
    for name in state:
        if name not in entries:
            raise InputError(f"neuron state for {name!r}: not a stateful neuron of the ONNX model; stateful neurons: "
                             f"{', '.join(sorted(entries)) or 'none'}")
    feeds = {}
    for node, entry in entries.items():
        st = state.get(node)
        if st is not None and not isinstance(st, NeuronState):
            raise InputError(f"neuron state for {node!r}: expected a NeuronState, got {type(st).__name__}")
        if st is not None and (st.q is None) != (entry["kind"] == "residual"):
            raise InputError(f"neuron state for {node!r}: a {entry['kind']} state is "
                             + ("NeuronState(m=U) without q" if entry["kind"] == "residual" else "NeuronState(m, q)"))
        for part, onnx_name in entry["inputs"].items():
            expect = [B] + shapes[onnx_name]
            if st is None:
                feeds[onnx_name] = np.zeros(expect, dtype)
                continue
            v = st.q if part == "q" else st.m
            arr = np.asarray(v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else v)
            if list(arr.shape) != expect:
                raise InputError(f"neuron state for {node!r}: {'q' if part == 'q' else 'm'} has shape "
                                 f"{list(arr.shape)}, expected {expect} (one step of the neuron)")
            if not np.isfinite(arr).all():
                raise InputError(f"neuron state for {node!r}: contains NaN or Inf")
            feeds[onnx_name] = np.ascontiguousarray(arr, dtype=dtype)
    return feeds


def run(artifact, x, *, progress: bool = False, batch_size: Optional[int] = None, state=None,
        sess=None) -> TargetRun:
    """Run ``x`` ``[T, B, *s]`` (a tensor, array, or a dict by IR input name) through the model.

    Returns the graph outputs by IR output name and every neuron's q by IR node name, as torch
    tensors in the model's precision. ``batch_size`` runs the batch in chunks (``progress`` shows
    a bar over the chunks). ``state``: the carried neuron states of a ``state_io`` model (module
    docstring); ``TargetRun.state`` then holds the final ones. ``sess``: a :func:`session` of
    this artifact to reuse (a stream makes one, then runs a call per frame)."""
    from spikedeploy.neurons import NeuronState

    art = _artifact(artifact)
    if art.encoding != "integer":
        raise SpikedeployError(f"unsupported ONNX artifact encoding {art.encoding!r}")
    feeds = _feeds(art, x)
    B = next(iter(feeds.values())).shape[1]
    state_feeds = _state_feeds(art, state, B, np.float64 if art.precision == "float64" else np.float32)
    chunk = B if not batch_size else max(1, int(batch_size))
    sess = sess if sess is not None else session(art)
    outputs, neurons = art.outputs, art.neurons
    state_out = {(node, part): name for node, e in art.state.items() for part, name in e["outputs"].items()}
    names = list(outputs.values()) + list(neurons.values()) + list(state_out.values())
    batch_first = set(state_out.values())
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    parts = {n: [] for n in names}
    starts = list(range(0, B, chunk))
    for s in tqdm(starts, desc="onnxruntime", unit="chunk", disable=not progress):
        try:
            res = sess.run(names, {**{k: v[:, s:s + chunk] for k, v in feeds.items()},
                                   **{k: v[s:s + chunk] for k, v in state_feeds.items()}})
        except Exception as e:  # onnxruntime's Fail/InvalidArgument/RuntimeException: a damaged model
            raise ArtifactError(f"onnxruntime failed running the ONNX model{f' {art.path}' if art.path else ''} "
                                f"({detail(e)}); export it again with spikedeploy export --target onnx") from None
        for n, r in zip(names, res):
            parts[n].append(r)
    wall = time.perf_counter() - t0
    full = {n: torch.from_numpy(np.concatenate(p, axis=0 if n in batch_first else 1)) for n, p in parts.items()}
    final = None
    if state_out:
        final = {}
        for node, e in art.state.items():
            o = e["outputs"]
            final[node] = (NeuronState(m=full[o["m"]], q=full[o["q"]]) if e["kind"] == "membrane"
                           else NeuronState(m=full[o["u"]]))
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
        state=final,
    )
