"""``spikedeploy export`` and ``run``: a model exported to a target's artifact, written
atomically (:func:`export`), and an artifact run on inputs (:func:`run_artifact`). Re-exported by
:mod:`spikedeploy.api`."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional, Sequence

import torch

from spikedeploy import resources
from spikedeploy.errors import ConfigError, InputError, OutputPathError
from spikedeploy.fsutil import check_output_dir, check_output_file
from spikedeploy.loading import (artifact_precision, build_model,
    calibration_inputs, check_precision, default_encoding, prepare_graph, to_fixed)


@dataclass(frozen=True)
class ExportResult:
    path: Path
    target: str
    encoding: str
    nodes: int
    neuron_layers: int
    seconds: float
    #: NIR with check_peers: one spikedeploy.exporters.nir_peers.PeerResult per peer
    peers: Optional[list] = None
    precision: str = "float"
    weight_bits: Optional[int] = None  #: fixed point: the weight mantissa width
    calibration: str = ""  #: fixed point: the inputs the exponents were calibrated on


def export(
    model: str = "sdt-test",
    *,
    target: str,
    output,
    neuron: Optional[str] = None,
    timesteps: int = 1,
    checkpoint: Optional[str] = None,
    checkpoint_key: Optional[str] = None,
    encoding: Optional[str] = None,
    seed: int = 0,
    input_shape: Optional[Sequence[int]] = None,
    model_kwargs: Optional[Dict] = None,
    overwrite: bool = False,
    max_memory: Optional[float] = None,
    partitions=None,
    nir_profile: Optional[str] = None,
    check_peers: bool = False,
    precision: str = "float",
    weight_bits: Optional[int] = None,
    calibration=None,
    num_inputs: int = 64,
) -> ExportResult:
    """Export ``model`` to ``target`` (onnx, nir, lava) at ``output``. The path must not exist
    unless ``overwrite`` (an ONNX/NIR file is then replaced atomically; a Lava bundle folder follows
    :func:`spikedeploy.fsutil.atomic_directory`); the artifact is written atomically, so a failure
    leaves nothing behind, and of two exports to one new path only one succeeds. The estimated
    memory must stay under ``max_memory`` GB (default: :mod:`spikedeploy.resources`), checked
    before the capture allocates. ``partitions`` (Lava only): the placement recorded in the bundle,
    ``"auto"`` (default), ``"per-layer"`` or a number N (:mod:`spikedeploy.exporters.lava_placement`).
    ``nir_profile`` (NIR only): the layout, :data:`spikedeploy.exporters.nir.PROFILES` (default
    ``portable``). ``check_peers`` (NIR only): run the NIR peers available here or in
    ``.venv-peers`` on the file (a seeded spike train) and return their results in ``peers``.
    ``precision="fixed"`` (Lava only): the lowered graph in Loihi 2 fixed point
    (``weight_bits``-bit weight mantissas, default 8), its exponents calibrated on the
    ``calibration`` .npy file or else on ``num_inputs`` seeded N(0, 1) inputs, the inputs
    ``verify --inputs num_inputs --seed seed`` checks (:func:`calibration_inputs`)."""
    import time

    from spikedeploy.targets import get_target

    spec = get_target(target)
    bits = check_precision(precision, weight_bits, calibration, targets=(spec.name,))
    if bits is not None and (isinstance(num_inputs, bool) or not isinstance(num_inputs, int) or num_inputs < 1):
        raise ConfigError(f"--inputs (calibration inputs) must be a positive integer, got {num_inputs!r}")
    enc = default_encoding(target, encoding)
    lava_kwargs = _lava_partitions(spec.name, partitions)
    lava_kwargs.update(_nir_options(spec.name, nir_profile, check_peers))
    out = Path(output)
    if spec.name == "lava":
        check_output_dir(out, overwrite=overwrite, inputs=(checkpoint, calibration))
    else:
        check_output_file(out, "artifact", overwrite=overwrite, inputs=(checkpoint, calibration))
    if os.path.lexists(out) and not overwrite:
        raise OutputPathError(f"output {out} already exists; choose another path or pass --overwrite")
    t0 = time.perf_counter()
    loaded = build_model(model, neuron=neuron, timesteps=timesteps, checkpoint=checkpoint,
                         checkpoint_key=checkpoint_key, seed=seed, input_shape=input_shape,
                         model_kwargs=model_kwargs)
    if bits is None:
        resources.guard_model(loaded, "export", timesteps=timesteps, max_memory=max_memory)
    else:  # the calibration run of the float graph
        resources.guard_model(loaded, "export", timesteps=timesteps, num_inputs=num_inputs, input_file=calibration,
                              run_itemsizes=(8,), max_memory=max_memory)
    graph = prepare_graph(loaded, timesteps=timesteps, encoding=enc)
    cal_text = ""
    if bits is not None:
        cal, cal_text = calibration_inputs(loaded, None, timesteps=timesteps, num_inputs=num_inputs, seed=seed,
                                           calibration=calibration)
        graph = to_fixed(graph, cal, bits, cal_text)
    path = spec.exporter_module().export(graph, out, encoding=enc, overwrite=overwrite, **lava_kwargs)
    peers = _check_nir_peers(graph, path, timesteps, seed) if check_peers else None
    return ExportResult(Path(path), spec.name, enc, len(graph.nodes), len(graph.neurons()),
                        time.perf_counter() - t0, peers, precision, bits, cal_text)


def _nir_options(target: str, profile: Optional[str], check_peers: bool) -> dict:
    """``{"profile": name}`` for the NIR target (checked now); NIR options for another target are refused."""
    if target != "nir":
        if profile is not None:
            raise ConfigError(f"--nir-profile applies to the NIR target only, not {target}")
        if check_peers:
            raise ConfigError(f"--check-peers applies to the NIR target only, not {target}")
        return {}
    if profile is None:
        return {}
    from spikedeploy.exporters.nir import get_profile

    return {"profile": get_profile(profile).name}


def _check_nir_peers(graph, path, timesteps: int, seed: int) -> list:
    """The NIR peers on the exported file, fed a seeded spike train [T, 2, *s] (p = 0.5) and
    compared with the reference run of the same graph (its first output)."""
    from spikedeploy.exporters import nir_peers
    from spikedeploy.reference import run as reference_run

    if len(graph.inputs) != 1:
        raise ConfigError(f"--check-peers needs a single-input graph; this one has {len(graph.inputs)}")
    gen = torch.Generator().manual_seed(seed)
    x = (torch.rand((max(int(timesteps), 1), 2) + tuple(graph.inputs[0].shape), generator=gen) < 0.5).double()
    ref = reference_run(graph, {graph.inputs[0].name: x}).outputs[graph.outputs[0]]
    return nir_peers.check_peers(path, x.numpy(), ref.numpy())


def _lava_partitions(target: str, partitions) -> dict:
    """``{"partitions": value}`` for the Lava target (checked now), ``{}`` when not given; a value
    for another target is refused."""
    if partitions is None:
        return {}
    if target != "lava":
        raise ConfigError(f"--partitions applies to the Lava target only, not {target}")
    from spikedeploy.exporters.lava_placement import parse_partitions

    return {"partitions": parse_partitions(partitions)}


def run_artifact(target: str, artifact_path, x: torch.Tensor, *, progress: bool = False,
                 max_memory: Optional[float] = None, partitions=None, precision: Optional[str] = None):
    """Load the artifact at ``artifact_path`` with ``target``'s loader and run it on ``x``
    (``[T, B, *s]``); returns a :class:`spikedeploy.targets.TargetRun`. A NIR file's reference run
    must stay under ``max_memory`` GB (:func:`spikedeploy.resources.guard_artifact_run`).
    ``partitions`` (Lava only): place the bundle again (default: its recorded placement).

    ``precision``: None runs the artifact in its own precision; "float" or "fixed" must match it
    (ConfigError otherwise). A fixed-point artifact computes integers: the returned run's
    ``outputs`` are the real values (:func:`spikedeploy.passes.quantize.decode_outputs`, exact:
    ``integer * 2**-exponent``), ``integer_outputs`` what the target computed, ``precision``
    "fixed"; spike counts are counts in both precisions."""
    from dataclasses import replace

    from spikedeploy.targets import get_target

    spec = get_target(target)
    if precision is not None:
        check_precision(precision, targets=(spec.name,))
    lava_kwargs = _lava_partitions(spec.name, partitions)
    p = Path(artifact_path)
    if not p.exists():
        raise InputError(f"artifact {p} does not exist")
    artifact = spec.exporter_module().load(p)
    own = artifact_precision(artifact)
    if precision is not None and precision != own:
        hint = ("export the model again with --precision fixed" if own == "float"
                else "run it with --precision fixed, or leave --precision out")
        names = {"float": "float", "fixed": "fixed-point"}
        raise ConfigError(f"artifact {p} holds a {names[own]} graph, not {names[precision]}; {hint}")
    resources.guard_artifact_run(spec.name, artifact, tuple(x.shape), f"run of {p}", max_memory=max_memory)
    result = spec.runtime_module().run(artifact, x, progress=progress, **lava_kwargs)
    if own == "fixed":
        from spikedeploy.passes.quantize import decode_outputs

        ints = {k: torch.as_tensor(v) for k, v in result.outputs.items()}
        result = replace(result, outputs=decode_outputs(artifact.graph, ints), integer_outputs=ints, precision="fixed")
    return result
