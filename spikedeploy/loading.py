"""Building a model and its inputs, for every command: the registered models and checkpoints
(:func:`build_model`), random or file inputs (:func:`make_inputs`, :func:`load_input_file`), the
captured, folded and lowered export graph (:func:`prepare_graph`), the precision options and
the fixed-point conversion (:func:`check_precision`, :func:`calibration_inputs`,
:func:`to_fixed`). Re-exported by :mod:`spikedeploy.api`."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from spikedeploy.capture import capture
from spikedeploy.errors import ConfigError, InputError
from spikedeploy.ir.graph import Graph
from spikedeploy.passes import default_pipeline
from spikedeploy.passes import ExpandSpikes
from spikedeploy.passes.quantize import WEIGHT_BITS, check_weight_bits
from spikedeploy.targets import PRECISIONS  # float or fixed

#: the default weight mantissa width of --precision fixed (Loihi 2's synapses hold 8 bits)
DEFAULT_WEIGHT_BITS = WEIGHT_BITS


DTYPES = {"float64": torch.float64, "float32": torch.float32}


SPIKE_MODES = ("binary", "graded")


@dataclass(frozen=True)
class LoadedModel:
    module: nn.Module
    name: str
    input_shape: Tuple[int, ...]
    weights: str  #: "checkpoint <path>" or "random (seed N)"


def build_model(
    model: str = "sdt-test",
    *,
    neuron: Optional[str] = None,
    timesteps: int = 1,
    checkpoint: Optional[str] = None,
    checkpoint_key: Optional[str] = None,
    seed: int = 0,
    input_shape: Optional[Sequence[int]] = None,
    model_kwargs: Optional[Dict] = None,
) -> LoadedModel:
    """Build ``model`` — a built-in name (see ``spikedeploy.models.BUILTIN_MODELS``) or
    ``package.module:factory`` — load ``checkpoint`` strictly if given, else give built-in models
    deterministic random weights that fire (seed ``seed``)."""
    from spikedeploy.models import BUILTIN_MODELS, get_model

    if isinstance(timesteps, bool) or not isinstance(timesteps, int) or timesteps < 1:
        raise ConfigError(f"--timesteps must be a positive integer, got {timesteps!r}")
    kwargs = dict(model_kwargs or {})
    if neuron is not None:
        kwargs["neuron"] = neuron
    if model in BUILTIN_MODELS:
        if model == "sdt-test":
            kwargs.setdefault("time_steps", max(4, timesteps))
        try:
            module = get_model(model, **kwargs)
        except (TypeError, ValueError) as e:
            raise ConfigError(f"cannot build model {model!r} with {kwargs}: {e}") from None
    elif ":" in model:
        mod_name, _, fn_name = model.partition(":")
        try:
            mod = importlib.import_module(mod_name)
        except ImportError as e:
            raise ConfigError(f"cannot import {mod_name!r} for --model {model!r}: {e}") from None
        factory = getattr(mod, fn_name, None)
        if not callable(factory):
            raise ConfigError(f"{mod_name!r} has no callable {fn_name!r} (from --model {model!r})")
        module = factory(**kwargs)
        if not isinstance(module, nn.Module):
            raise ConfigError(f"--model {model!r} returned {type(module).__name__}, not a torch.nn.Module")
    else:
        raise ConfigError(
            f"unknown model {model!r}; use a built-in name ({', '.join(sorted(BUILTIN_MODELS))}) "
            "or 'package.module:factory'"
        )
    # a model may declare how its weights load (load_weights), which key of a checkpoint file holds
    # them (default_checkpoint_key) and how to get random weights that fire (init_random_weights)
    if checkpoint is not None:
        from spikedeploy.checkpoint import apply_state_dict, load_checkpoint

        key = checkpoint_key if checkpoint_key is not None else getattr(module, "default_checkpoint_key", None)
        state = load_checkpoint(checkpoint, key=key)
        if hasattr(module, "load_weights"):
            module.load_weights(state, source=str(checkpoint))
        else:
            apply_state_dict(module, state, source=str(checkpoint))
        weights = f"checkpoint {checkpoint}"
    elif model == "sdt-test":
        from spikedeploy.models.sdt_test import init_for_spiking

        init_for_spiking(module, seed=seed)
        weights = f"random (seed {seed})"
    elif hasattr(module, "init_random_weights"):
        module.init_random_weights(seed)
        weights = f"random (seed {seed})"
    else:
        weights = "as constructed (no checkpoint)"
    shape = tuple(input_shape) if input_shape else _model_input_shape(module, model)
    module.eval()
    return LoadedModel(module=module, name=model, input_shape=shape, weights=weights)


def _model_input_shape(module: nn.Module, name: str) -> Tuple[int, ...]:
    shape = getattr(module, "input_shape", None)
    if shape is None and hasattr(module, "image_size") and hasattr(module, "in_channels"):
        shape = (module.in_channels, module.image_size, module.image_size)
    if shape is None:
        raise ConfigError(
            f"model {name!r} does not declare its per-step input shape; give it an 'input_shape' "
            "attribute or pass --input-shape C,H,W"
        )
    return tuple(int(s) for s in shape)


def make_inputs(loaded: LoadedModel, *, timesteps: int, num_inputs: int, seed: int = 0, input_file=None) -> torch.Tensor:
    """Random N(0, 1) inputs ``[T, num_inputs, *input_shape]`` (seeded), or the array in
    ``input_file`` (.npy, shape ``[T, N, *input_shape]``)."""
    if input_file is not None:
        x = load_input_file(input_file).to(torch.float32)
        if tuple(x.shape[2:]) != loaded.input_shape:
            raise InputError(
                f"input file {input_file} has shape {list(x.shape)}; expected [T, N, "
                f"{', '.join(map(str, loaded.input_shape))}]"
            )
        return x
    if num_inputs < 1:
        raise ConfigError(f"--inputs must be >= 1, got {num_inputs}")
    gen = torch.Generator().manual_seed(seed)
    return torch.randn((timesteps, num_inputs) + loaded.input_shape, generator=gen)


def check_precision(precision: str, weight_bits: Optional[int] = None, calibration=None, *,
                    targets: Sequence[str] = ()) -> Optional[int]:
    """Check the precision options before any work starts and return the weight bits (None for
    float). ``weight_bits`` (default 8, 2..16) and ``calibration`` apply to ``precision="fixed"``
    only; every name in ``targets`` must hold graphs of that precision
    (:func:`spikedeploy.targets.check_precision`). ConfigError (exit code 2) otherwise."""
    from spikedeploy.targets import check_precision as target_precision

    if precision not in PRECISIONS:
        raise ConfigError(f"unknown --precision {precision!r}; expected one of {', '.join(PRECISIONS)}")
    if precision == "float":
        if weight_bits is not None:
            raise ConfigError("--weight-bits applies to --precision fixed only")
        if calibration is not None:
            raise ConfigError("--calibration applies to --precision fixed only")
        return None
    bits = check_weight_bits(DEFAULT_WEIGHT_BITS if weight_bits is None else weight_bits)
    for t in targets:
        target_precision(t, precision)
    if calibration is not None and not Path(calibration).is_file():
        raise InputError(f"calibration file {calibration} does not exist (give a .npy array [T, N, *input_shape])")
    return bits


def calibration_inputs(loaded: LoadedModel, x: Optional[torch.Tensor], *, timesteps: int, num_inputs: int = 64,
                       seed: int = 0, calibration=None) -> Tuple[torch.Tensor, str]:
    """The sample inputs the quantization pass calibrates its exponents on, and their description.

    The rule: the ``calibration`` .npy file (``[T, N, *input_shape]``, T = the model's) when given;
    else the command's own inputs ``x`` (verify, audit: the inputs it checks); else (export) the
    seeded N(0, 1) inputs :func:`make_inputs` makes with ``num_inputs`` and ``seed`` (the inputs
    ``verify --inputs num_inputs`` checks with the same seed)."""
    if calibration is not None:
        cal = load_input_file(calibration).to(torch.float32)
        if tuple(cal.shape[2:]) != loaded.input_shape:
            raise InputError(f"calibration file {calibration} has shape {list(cal.shape)}; expected [T, N, "
                             f"{', '.join(map(str, loaded.input_shape))}]")
        if int(cal.shape[0]) != int(timesteps):
            raise InputError(f"calibration file {calibration} has T = {cal.shape[0]} macro-steps; the model runs "
                             f"T = {timesteps} (the calibrated state ranges depend on T)")
        return cal, f"{calibration} ({cal.shape[1]} inputs)"
    if x is not None:
        return x, f"the {x.shape[1]} inputs of this run"
    cal = make_inputs(loaded, timesteps=timesteps, num_inputs=num_inputs, seed=seed + 1)
    return cal, f"{num_inputs} seeded N(0, 1) inputs (seed {seed + 1})"


def to_fixed(lowered: Graph, calibration: torch.Tensor, weight_bits: int, description: str = "") -> Graph:
    """The lowered graph in fixed point (:func:`spikedeploy.passes.quantize.quantize_graph`), the
    calibration recorded in its metadata."""
    from spikedeploy.passes.quantize import quantize_graph

    fixed = quantize_graph(lowered, calibration, weight_bits=weight_bits)
    return fixed.with_meta(precision="fixed", calibration=description) if description else fixed


_DEFAULT_ENCODING = {"onnx": "integer", "nir": "binary", "lava": "binary"}


def default_encoding(target: str, encoding: Optional[str]) -> str:
    """The graph kind exported for ``target``: ``encoding`` if the target accepts it, else the
    target's default (ONNX exports the integer network; NIR and Lava the binary-spike one)."""
    from spikedeploy.targets import get_target

    spec = get_target(target)
    if encoding is None:
        return _DEFAULT_ENCODING.get(spec.name, "binary")
    accepted = spec.exporter_module().ENCODINGS
    if encoding not in accepted:
        raise ConfigError(
            f"target {target!r} does not take --spike-encoding {encoding!r}; it accepts: {', '.join(accepted)}"
        )
    return encoding


def prepare_graph(loaded: LoadedModel, *, timesteps: int, encoding: str = "integer") -> Graph:
    """Capture, fold/fuse and (for a spike encoding) lower ``loaded`` for export."""
    x = torch.zeros((timesteps, 1) + loaded.input_shape)
    graph = default_pipeline().apply(capture(loaded.module, x, name=loaded.name))
    if encoding != "integer":
        graph = ExpandSpikes(encoding).apply(graph)
    return graph.with_meta(timesteps=timesteps, weights=loaded.weights)


def load_input_file(path) -> torch.Tensor:
    """Read inputs ``[T, B, *s]`` from a .npy file (no pickles), validated before use
    (:mod:`spikedeploy.validate`): the header first (a plain dtype, at most ``MAX_INPUT_ELEMENTS``
    elements, the file as long as it announces), then a real integer or float dtype (no bool,
    complex, uint64), at least 3 axes, none empty, finite values; big-endian data is converted to
    the native byte order. Errors are :class:`InputError` (exit code 2) naming the file."""
    from spikedeploy.validate import MAX_INPUT_ELEMENTS, check_input_array, read_npy

    path = Path(path)
    if path.is_file() and path.suffix.lower() == ".npz":
        raise InputError(f"input file {path} is an .npz archive; give one .npy array [T, B, *input_shape] "
                         "(numpy.save)")
    arr = read_npy(path, "input file", max_elements=MAX_INPUT_ELEMENTS)
    return torch.from_numpy(np.ascontiguousarray(check_input_array(arr, f"input file {path}")))


def artifact_precision(artifact) -> str:
    """"fixed" for an artifact that carries a fixed-point graph (a Lava bundle exported with
    ``precision="fixed"``), else "float"."""
    from spikedeploy.reference import is_fixed

    graph = getattr(artifact, "graph", None)
    return "fixed" if isinstance(graph, Graph) and is_fixed(graph) else "float"
