"""The Python API. Every CLI subcommand is a thin wrapper around one function here.

    from spikedeploy import api
    report = api.verify(model="sdt-test", neuron="nilif", timesteps=3, num_inputs=256)
    report.write("out/verify")          # report.md + report.json, written atomically
    assert report.passed
"""

from __future__ import annotations

import copy
import importlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from spikedeploy import resources
from spikedeploy.capture import capture
from spikedeploy.equivalence import EquivalenceReport, compare_runs
from spikedeploy.errors import ConfigError, InputError, OutputPathError, SpikedeployError
from spikedeploy.fsutil import atomic_directory, check_output_dir, check_output_file
from spikedeploy.ir.graph import Graph
from spikedeploy.passes import default_pipeline
from spikedeploy.reference import execute, run
from spikedeploy.passes import ExpandSpikes
from spikedeploy.passes.quantize import WEIGHT_BITS, check_weight_bits
from spikedeploy.targets import PRECISIONS  # float or fixed

DTYPES = {"float64": torch.float64, "float32": torch.float32}
SPIKE_MODES = ("binary", "graded")


# ---------------------------------------------------------------------------------------------
# models
# ---------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------
# precision: float or Loihi 2 fixed point (spikedeploy.passes.quantize)
# ---------------------------------------------------------------------------------------------

#: the default weight mantissa width of --precision fixed (Loihi 2's synapses hold 8 bits)
DEFAULT_WEIGHT_BITS = WEIGHT_BITS


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


# ---------------------------------------------------------------------------------------------
# verification
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CaptureCheck:
    """The captured graph run by the reference vs the PyTorch model itself (same float64 inputs)."""

    neuron_layers: int
    mismatched_layers: Tuple[str, ...]
    mismatched_values: int
    max_output_error: float
    spikes: int

    @property
    def passed(self) -> bool:
        return not self.mismatched_layers and self.max_output_error == 0.0 and self.spikes > 0


@dataclass(frozen=True)
class Stage:
    name: str
    description: str
    passed: bool
    report: object  #: CaptureCheck or EquivalenceReport


@dataclass(frozen=True)
class VerificationReport:
    model: str
    weights: str
    timesteps: int
    num_inputs: int
    dtype: str
    graph_nodes: int
    lowered_nodes: int
    neuron_layers: int
    stages: Tuple[Stage, ...]
    precision: str = "float"
    weight_bits: Optional[int] = None  #: fixed point: the weight mantissa width
    calibration: str = ""  #: fixed point: the inputs the exponents were calibrated on

    @property
    def passed(self) -> bool:
        return all(s.passed for s in self.stages)

    def to_dict(self) -> dict:
        from dataclasses import asdict

        d = {k: v for k, v in self.__dict__.items() if k != "stages"}
        d["passed"] = self.passed
        d["stages"] = []
        for s in self.stages:
            rep = s.report.to_dict() if hasattr(s.report, "to_dict") else dict(asdict(s.report), passed=s.report.passed)
            d["stages"].append({"name": s.name, "description": s.description, "passed": s.passed, "report": rep})
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def to_markdown(self) -> str:
        return "\n".join(text for _, text in self._markdown_parts())

    def _markdown_parts(self) -> List[Tuple[Optional[Stage], str]]:
        """The Markdown report in parts: (None, header), (stage, its section) per stage, (None, notes)."""
        parts: List[Tuple[Optional[Stage], str]] = []
        lines = [
            f"# spikedeploy verification — {'SUCCESS' if self.passed else 'FAIL'}",
            "",
            f"- Model: `{self.model}`, weights: {self.weights}",
            f"- Inputs: {self.num_inputs} random inputs, T = {self.timesteps}, arithmetic {self.dtype}",
            f"- IR: {self.graph_nodes} nodes captured, {self.lowered_nodes} after folding/fusion, "
            f"{self.neuron_layers} neuron layers",
        ]
        if self.precision == "fixed":
            lines.append(f"- Precision: **fixed point**, {self.weight_bits}-bit weight mantissas, 24-bit state; "
                         f"exponents calibrated on {self.calibration}")
        lines += [
            "",
            "| stage | what is compared | result |",
            "|---|---|---|",
        ]
        for s in self.stages:
            lines.append(f"| {s.name} | {s.description} | {stage_result(s)} |")
        lines.append("")
        parts.append((None, "\n".join(lines)))
        for s in self.stages:
            lines = [f"## Stage: {s.name}", ""]
            r = s.report
            if isinstance(r, CaptureCheck):
                lines += [
                    f"- Neuron layers compared: {r.neuron_layers}; layers with differences: "
                    f"{', '.join(r.mismatched_layers) or 'none'} ({r.mismatched_values} values)",
                    f"- Max |output error| vs the PyTorch model: {r.max_output_error:.3e} (must be 0: same float64 ops)",
                    f"- Unit spikes in the run: {r.spikes}",
                    "",
                ]
            else:
                lines.append(r.to_markdown())
            parts.append((s, "\n".join(lines)))
        lines = [
            "## How to read this",
            "",
            "*Teacher-forced*: every neuron layer of the second run is fed the first run's spikes from "
            "upstream; its integer outputs must match exactly, except boundary ties (membrane within "
            "tie ε of a rounding boundary; ε from the floating-point accumulation bound, see "
            "docs/architecture.md). *Free-running*: both networks run on their own outputs; `exact` "
            "means every spike count matched, `tie-cascade` that the first difference was a boundary "
            "tie (its downstream spread is listed), `mismatch` a real difference.",
            "",
        ]
        if self.precision == "fixed":
            lines += [
                "*Fixed point* (stages `fixed-*`): the lowered float64 graph against its Loihi 2 fixed-point form "
                "(spikedeploy.passes.quantize). These stages **measure** the cost of quantization and do not "
                "pass or fail on it (`MEASURED`; `FAIL` only if a run emitted no spike): weight err max = "
                "max|W - W_q| / max|W|, weight err rms = rms(W - W_q) / rms(W), over the quantized ops feeding "
                "the layer (a constant scale counts as a one-element weight); mantissa max = the smallest "
                "max|mantissa| among them (127: all 8 bits used); bias err max and neuron err (12-bit leak, "
                "reset, threshold) in membrane units; saturated = clamps of the 24-bit state in the fixed "
                "reference run (never wrapped); q mism. TF = positions whose count differs when each fixed "
                "layer is fed the float run's spikes, q mism. free = both networks on their own spikes; the "
                "output error is the decoded fixed output against the float one. Targets (`--targets lava`) "
                "run the fixed graph and must equal the fixed reference **exactly** (integer arithmetic has "
                "no ties): those stages pass or fail.",
                "",
            ]
        parts.append((None, "\n".join(lines)))
        return parts

    def to_html(self) -> str:
        """The report as a self-contained HTML page (the Markdown report in the style of the other
        reports, :mod:`spikedeploy.htmlreport`); a fixed-point stage gets its per-layer plots
        (:func:`spikedeploy.htmlreport.precision_figures`) between its summary and its table."""
        from spikedeploy.equivalence import PrecisionReport
        from spikedeploy.htmlreport import HtmlPage, precision_figures

        page = HtmlPage(f"spikedeploy verification — {self.model}")
        for stage, text in self._markdown_parts():
            if stage is not None and isinstance(stage.report, PrecisionReport):
                page.markdown(f"## Stage: {stage.name}\n\n" + stage.report.summary_markdown())
                for fig, caption in precision_figures(stage.report):
                    page.figure(fig, caption)
                page.markdown(stage.report.table_markdown())
            else:
                page.markdown(text)
        page.bullets(['<a href="report.md">report.md</a>', '<a href="report.json">report.json</a>'], html=True)
        return page.render()

    def write(self, output, *, overwrite: bool = False, inputs=()) -> Path:
        """Write ``report.md``, ``report.json`` and ``report.html`` into the directory ``output``
        atomically (see :func:`spikedeploy.fsutil.atomic_directory` for when an existing folder may
        be written)."""
        with atomic_directory(output, overwrite=overwrite, inputs=inputs, command="verify") as tmp:
            (tmp / "report.md").write_text(self.to_markdown(), encoding="utf-8")
            (tmp / "report.json").write_text(self.to_json(), encoding="utf-8")
            (tmp / "report.html").write_text(self.to_html(), encoding="utf-8")
        return Path(output)


def stage_result(stage: Stage) -> str:
    """The result column of a stage: SUCCESS / **FAIL**, MEASURED for a fixed-point measurement."""
    from spikedeploy.equivalence import PrecisionReport

    if not stage.passed:
        return "**FAIL**"
    return "MEASURED" if isinstance(stage.report, PrecisionReport) else "SUCCESS"


def check_capture(model: nn.Module, graph: Graph, x: torch.Tensor) -> CaptureCheck:
    """Run the PyTorch model and the captured graph on the same float64 input; compare every
    neuron layer's emitted values (matched by module path) and the outputs exactly."""
    from spikedeploy.models.neurons import SpikingNeuron

    m64 = copy.deepcopy(model).double().eval()
    x64 = x.to(torch.float64)
    # every call of every neuron module, in order (a module may be called more than once; its IR
    # nodes then share the module path as their source, in the same order)
    seen: Dict[str, List[torch.Tensor]] = {}
    hooks = [
        mod.register_forward_hook(lambda mod, i, o, name=name: seen.setdefault(name, []).append(o.detach()))
        for name, mod in m64.named_modules()
        if isinstance(mod, SpikingNeuron)
    ]
    try:
        with torch.no_grad():
            y = m64(x64)
    finally:
        for h in hooks:
            h.remove()
    r = run(graph, x64, dtype=torch.float64)
    bad, nbad, spikes = [], 0, 0
    calls: Dict[str, int] = {}
    for n in graph.neurons():
        rec = r.records[n.name]
        spikes += int(rec.q.sum())
        k = calls.get(n.source, 0)
        calls[n.source] = k + 1
        outs = seen.get(n.source, [])
        ref = outs[k] if k < len(outs) else None
        if (ref is not None and ref.shape != rec.value.shape and ref.numel() == rec.value.numel()
                and ref.shape[:1] == rec.value.shape[:1] and ref.is_contiguous()):
            # a neuron the capture saw in another (row-major equal) layout, e.g. SpikeTrack's gate
            # MLP neuron on [T, B*C, N/2] vs the IR's [T, B, C, N/2]
            ref = ref.reshape(rec.value.shape)
        if ref is None or ref.shape != rec.value.shape:
            bad.append(n.name)
            continue
        k = int((ref != rec.value).sum())
        if k:
            bad.append(n.name)
            nbad += k
    ys = list(y) if isinstance(y, (tuple, list)) else [y]
    err = max(float((a - r.outputs[o]).abs().max()) for a, o in zip(ys, graph.outputs))
    return CaptureCheck(len(graph.neurons()), tuple(bad), nbad, err, spikes)


def verify(
    model: str = "sdt-test",
    *,
    neuron: Optional[str] = None,
    timesteps: int = 1,
    checkpoint: Optional[str] = None,
    checkpoint_key: Optional[str] = None,
    num_inputs: int = 64,
    input_file=None,
    seed: int = 0,
    modes: Sequence[str] = SPIKE_MODES,
    dtype: str = "float64",
    input_shape: Optional[Sequence[int]] = None,
    model_kwargs: Optional[Dict] = None,
    output=None,
    progress: bool = False,
    targets: Sequence[str] = (),
    target_inputs: int = 4,
    overwrite: bool = False,
    max_memory: Optional[float] = None,
    precision: str = "float",
    weight_bits: Optional[int] = None,
    calibration=None,
) -> VerificationReport:
    """Capture the model, fold/fuse, lower to each spike encoding in ``modes`` and prove each stage
    equivalent to the previous one (see :class:`VerificationReport`). For each name in ``targets``
    (onnx, nir, lava; "reference" is always included) the network is exported, re-loaded and run
    on the first ``target_inputs`` inputs, and compared with the reference run of the same graph.
    Writes the report to ``output`` (a directory) when given: a new or empty folder, an earlier
    spikedeploy output, or with ``overwrite=True`` any folder (files of the same names replaced,
    others kept; :mod:`spikedeploy.fsutil`). The estimated memory (capture, and the reference runs
    kept at once) must stay under ``max_memory`` GB (:mod:`spikedeploy.resources`), checked before
    the inputs are made.

    ``precision="fixed"``: after each spike mode's stage, a ``fixed-<mode>`` stage quantizes the
    lowered graph to Loihi 2 fixed point (``weight_bits``-bit weight mantissas, default 8) with
    exponents calibrated on the ``calibration`` .npy file or else on the verified inputs
    (:func:`calibration_inputs`), and measures it against the float graph
    (:func:`spikedeploy.equivalence.compare_precision`: per layer weight errors, saturation, q
    mismatches teacher-forced and free-running, output error; MEASURED, not pass/fail); the
    ``targets`` (lava) then run the fixed graph of the first mode and must equal the fixed reference
    exactly."""
    from tqdm.auto import tqdm

    bits = check_precision(precision, weight_bits, calibration, targets=[t for t in targets if t != "reference"])
    if dtype not in DTYPES:
        raise ConfigError(f"unknown --dtype {dtype!r}; expected one of {sorted(DTYPES)}")
    modes = list(modes)
    if not modes:
        raise ConfigError(f"no spike mode to verify: give at least one of {', '.join(SPIKE_MODES)}")
    for m in modes:
        if m not in SPIKE_MODES:
            raise ConfigError(f"unknown spike mode {m!r}; expected one of {SPIKE_MODES}")
    dt = DTYPES[dtype]
    if bits is not None and dt != torch.float64:
        raise ConfigError("--precision fixed compares against the float64 reference: use --dtype float64")
    inputs = (checkpoint, input_file, calibration)
    if output is not None:
        check_output_dir(output, overwrite=overwrite, inputs=inputs)
    loaded = build_model(
        model, neuron=neuron, timesteps=timesteps, checkpoint=checkpoint, checkpoint_key=checkpoint_key,
        seed=seed, input_shape=input_shape, model_kwargs=model_kwargs,
    )
    itemsizes = resources.verify_run_itemsizes(dt.itemsize, modes)
    if bits is not None:  # per mode: the calibration run, the fixed runs free and teacher-forced
        itemsizes += (8,) * (3 * len(modes))
    resources.guard_model(loaded, "verify", timesteps=timesteps, num_inputs=num_inputs, input_file=input_file,
                          run_itemsizes=itemsizes, max_memory=max_memory)
    x = make_inputs(loaded, timesteps=timesteps, num_inputs=num_inputs, seed=seed + 1, input_file=input_file)
    from spikedeploy.targets import get_target

    targets = [t for t in targets if t != "reference"]
    specs = [get_target(t) for t in targets]
    cal, cal_text = (calibration_inputs(loaded, x, timesteps=int(x.shape[0]), calibration=calibration)
                     if bits is not None else (None, ""))
    fixed_graphs: Dict[str, Graph] = {}
    steps = ["capture", "fold+fuse"] + list(modes) + [f"fixed-{m}" for m in modes if bits is not None] + list(targets)
    bar = tqdm(total=len(steps), desc="verify", disable=not progress, unit="stage")
    stages: List[Stage] = []

    bar.set_postfix_str("capture")
    graph = capture(loaded.module, x[:, :1], name=loaded.name)
    cap = check_capture(loaded.module, graph, x)
    stages.append(Stage("capture", "PyTorch model vs captured IR (integer mode, float64)", cap.passed, cap))
    bar.update()

    bar.set_postfix_str("fold+fuse")
    folded = default_pipeline().apply(graph)
    if bits is not None:  # an op without a fixed-point form: refused before the float stages run
        from spikedeploy.passes.quantize import check_quantizable

        check_quantizable(folded)
    r_raw = execute(graph, x, "integer", dtype=dt)
    r_fold = execute(folded, x, "integer", dtype=dt)
    r_fold_tf = run(folded, x, dtype=dt, teacher=r_raw)
    rep = compare_runs(r_raw, r_fold, r_fold_tf, model=loaded.name)
    stages.append(Stage("fold+fuse", "captured IR vs BatchNorm-folded, chain-fused IR (integer mode)", rep.passed, rep))
    bar.update()

    lowered_nodes = len(folded.nodes)
    for mode in modes:
        bar.set_postfix_str(mode)
        rb = execute(folded, x, mode, dtype=dt)
        rt = execute(folded, x, mode, dtype=dt, teacher=r_fold)
        rep = compare_runs(r_fold, rb, rt, model=loaded.name)
        lowered_nodes = len(rb.graph.nodes)
        stages.append(Stage(mode, f"integer IR vs {mode}-spike IR (teacher-forced and free-running)", rep.passed, rep))
        bar.update()
        if bits is not None:
            from spikedeploy.equivalence import compare_precision

            bar.set_postfix_str(f"fixed-{mode}")
            fixed = to_fixed(rb.graph, cal, bits, cal_text)
            fixed_graphs[mode] = fixed
            prep = compare_precision(rb.graph, fixed, x, float_run=rb, model=loaded.name, calibration=cal_text)
            del rb, rt
            stages.append(Stage(f"fixed-{mode}", f"{mode}-spike IR (float64) vs its fixed-point form ({bits}-bit "
                                                 "weights, 24-bit state): quantization error measured", prep.passed,
                                prep))
            bar.update()
    for spec in specs:
        bar.set_postfix_str(spec.name)
        encoding = default_encoding(spec.name, None if spec.name == "onnx" else (modes[0] if modes else None))
        if bits is None:
            rep = _verify_target(spec.name, folded, x[:, :target_inputs], encoding, dt, loaded.name)
            what = f"reference ({encoding}) vs {spec.description} (exported, re-loaded, free-running)"
        else:
            rep, target_sat = _verify_fixed_target(spec.name, fixed_graphs[encoding], x[:, :target_inputs], loaded.name)
            what = (f"reference fixed point ({encoding}) vs {spec.description}, fixed point (exported, re-loaded, "
                    "free-running, exact)")
            if target_sat is not None:
                k = next(i for i, st in enumerate(stages) if st.name == f"fixed-{encoding}")
                st = stages[k]
                stages[k] = Stage(st.name, st.description, st.passed,
                                  st.report.with_target_saturation(spec.name, target_sat, int(x[:, :target_inputs].shape[1])))
        stages.append(Stage(spec.name, what, rep.passed, rep))
        bar.update()
    bar.close()
    report = VerificationReport(
        model=loaded.name + (f" (neuron={neuron})" if neuron else ""),
        weights=loaded.weights,
        timesteps=int(x.shape[0]),
        num_inputs=int(x.shape[1]),
        dtype=dtype,
        graph_nodes=len(graph.nodes),
        lowered_nodes=lowered_nodes,
        neuron_layers=len(graph.neurons()),
        stages=tuple(stages),
        precision=precision,
        weight_bits=bits,
        calibration=cal_text,
    )
    if output is not None:
        report.write(output, overwrite=overwrite, inputs=inputs)
    return report


def inspect(model: str = "sdt-test", *, neuron=None, timesteps: int = 1, checkpoint=None, checkpoint_key=None,
            seed: int = 0, input_shape=None, model_kwargs=None, encoding: Optional[str] = None,
            max_memory: Optional[float] = None) -> str:
    """The IR graph of ``model`` as text: captured, then after folding/fusion (and lowering to
    ``encoding`` if given). The capture's estimated memory must stay under ``max_memory`` GB."""
    loaded = build_model(model, neuron=neuron, timesteps=timesteps, checkpoint=checkpoint,
                         checkpoint_key=checkpoint_key, seed=seed, input_shape=input_shape, model_kwargs=model_kwargs)
    resources.guard_model(loaded, "inspect", timesteps=timesteps, max_memory=max_memory)
    x = torch.zeros((timesteps, 1) + loaded.input_shape)
    g = capture(loaded.module, x, name=loaded.name)
    out = ["# captured", g.summary(), "", "# after " + ", ".join(p.name for p in default_pipeline(encoding).passes)]
    out.append(default_pipeline(encoding).apply(g).summary())
    return "\n".join(out)


#: the bundled default: the SDT-v3-style test model with each neuron type and its usual T
DEMO_CASES = (
    ("nilif", 3), ("ilif", 1), ("ilif_half_up", 1), ("leaky_ilif", 3),
    ("integer_if", 3), ("binary_lif", 3), ("dilif", 2),
)


def demo(output="out/demo", *, lava_frames: Optional[int] = None, num_frames: Optional[int] = None, neuron_inputs: int = 32,
         progress: bool = True, lava: bool = True, overwrite: bool = False) -> int:
    """The main job: the bundled trained SpikeTrack tracker exported to every target, verified,
    audited and tracking the bundled clip in Lava and onnxruntime (:func:`spikedeploy.demo.run_demo`).
    Returns the exit code (0 when every check passed)."""
    from spikedeploy.demo import run_demo

    res = run_demo(output, lava_frames=lava_frames, num_frames=num_frames, neuron_inputs=neuron_inputs,
                   progress=progress, lava=lava, overwrite=overwrite)
    return 0 if res.passed else 1


def _neuron_demo_html(summary_md: str) -> str:
    """The neuron demo's summary page: its Markdown as HTML, linking each type's report.html."""
    from spikedeploy.htmlreport import HtmlPage

    page = HtmlPage("spikedeploy demo — exact spike lowering of the bundled test model")
    page.markdown(summary_md, link_map=lambda href: href[:-3] + ".html" if href.endswith("report.md") else href)
    return page.render()


def neuron_demo(output="out/neurons", *, num_inputs: int = 128, progress: bool = True, cases=DEMO_CASES,
                quiet: bool = False, overwrite: bool = False) -> int:
    """Verify the lowering of the bundled SDT-v3-style test model for every neuron type and write
    ``report.md``/``report.json``/``report.html`` (plus one folder per neuron type) into ``output``. Prints a
    summary (unless ``quiet``) and the report's path; returns the exit code."""
    import time

    from tqdm.auto import tqdm

    check_output_dir(output, overwrite=overwrite)
    rows, reports = [], {}
    t0 = time.perf_counter()
    for kind, T in tqdm(cases, desc="demo", unit="neuron type", disable=not progress):
        t = time.perf_counter()
        rep = verify("sdt-test", neuron=kind, timesteps=T, num_inputs=num_inputs, seed=0)
        reports[kind] = rep
        spikes = {s.name: sum(l.spikes_a for l in s.report.teacher_forced) for s in rep.stages if s.name in SPIKE_MODES}
        rows.append((kind, T, rep, spikes, time.perf_counter() - t))
    passed = all(r.passed for _, _, r, _, _ in rows)
    lines = [
        f"# spikedeploy demo — exact spike lowering of the bundled test model — {'SUCCESS' if passed else 'FAIL'}",
        "",
        f"SDT-v3-style test model (stem conv+BN on pixels, spiking downsampling, separable-conv block, conv block "
        f"with membrane shortcuts, linear spike attention + MLP, spiking head), random weights that fire, "
        f"{num_inputs} random inputs per neuron type, float64 reference arithmetic.",
        "",
        "| neuron | T | capture | fold+fuse | binary | graded | unit spikes (binary) | non-tie mismatches | time |",
        "|---|---:|---|---|---|---|---:|---:|---:|",
    ]
    for kind, T, rep, spikes, secs in rows:
        st = {s.name: s for s in rep.stages}
        mism = sum(l.mismatches for s in rep.stages if hasattr(s.report, "teacher_forced") for l in s.report.teacher_forced)
        lines.append(
            f"| [{kind}]({kind}/report.md) | {T} | "
            + " | ".join("SUCCESS" if st[n].passed else "**FAIL**" for n in ("capture", "fold+fuse", "binary", "graded"))
            + f" | {spikes.get('binary', 0)} | {mism} | {secs:.1f} s |"
        )
    lines += ["", f"Total time {time.perf_counter() - t0:.1f} s. Each neuron type's full report is in its folder.", ""]
    summary = "\n".join(lines)
    with atomic_directory(output, overwrite=overwrite, command="demo") as tmp:
        (tmp / "report.md").write_text(summary, encoding="utf-8")
        (tmp / "report.html").write_text(_neuron_demo_html(summary), encoding="utf-8")
        (tmp / "report.json").write_text(
            json.dumps({"passed": passed, "cases": {k: r.to_dict() for k, r in reports.items()}}, indent=2),
            encoding="utf-8",
        )
        for kind, rep in reports.items():
            (tmp / kind).mkdir()
            (tmp / kind / "report.md").write_text(rep.to_markdown(), encoding="utf-8")
            (tmp / kind / "report.html").write_text(rep.to_html(), encoding="utf-8")
            (tmp / kind / "report.json").write_text(rep.to_json(), encoding="utf-8")
    if not quiet:
        print(summary)
        print(f"report: {Path(output) / 'report.md'}")
    return 0 if passed else 1



# ---------------------------------------------------------------------------------------------
# export and run
# ---------------------------------------------------------------------------------------------

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


def _verify_target(target: str, folded: Graph, x: torch.Tensor, encoding: str, dtype, model: str):
    import tempfile

    from spikedeploy.equivalence import compare_target
    from spikedeploy.targets import get_target

    spec = get_target(target)
    graph = folded if encoding == "integer" else ExpandSpikes(encoding).apply(folded)
    graph = graph.with_meta(timesteps=int(x.shape[0]))
    with tempfile.TemporaryDirectory(prefix="spikedeploy-verify-") as tmp:
        path = spec.exporter_module().export(graph, Path(tmp) / f"model{spec.suffix}", encoding=encoding)
        artifact = spec.exporter_module().load(path)
        trun = spec.runtime_module().run(artifact, x)
    reference = run(graph, x, dtype=dtype)
    return compare_target(reference, trun, model=model)


def _verify_fixed_target(target: str, fixed: Graph, x: torch.Tensor, model: str):
    """Export the fixed-point graph to ``target``, re-load it, run it and compare it with the fixed
    reference (exact, saturation counts equal: :class:`~spikedeploy.equivalence.FixedTargetReport`).
    Returns the report and the target's saturation counts (neuron name -> clamps; None when the
    target does not report them: ``TargetRun.info["saturated"]``)."""
    import tempfile

    from spikedeploy.equivalence import FixedTargetReport, compare_target
    from spikedeploy.reference import graph_mode
    from spikedeploy.targets import check_precision as target_precision

    spec = target_precision(target, "fixed")
    with tempfile.TemporaryDirectory(prefix="spikedeploy-verify-") as tmp:
        path = spec.exporter_module().export(fixed, Path(tmp) / f"model{spec.suffix}", encoding=graph_mode(fixed))
        artifact = spec.exporter_module().load(path)
        trun = spec.runtime_module().run(artifact, x)
    reference = run(fixed, x)
    sat = (trun.info or {}).get("saturated")
    sat = {str(k): int(v) for k, v in sat.items()} if isinstance(sat, dict) else None
    ref_sat = {n.name: int(reference.records[n.name].saturated) for n in fixed.neurons()}
    return FixedTargetReport(compare_target(reference, trun, model=model), ref_sat, sat), sat


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


# ---------------------------------------------------------------------------------------------
# tracking
# ---------------------------------------------------------------------------------------------

from spikedeploy.trackrun import TRACK_TARGETS, load_boxes, load_frames  # noqa: E402,F401 (public names)

#: kept for callers of earlier versions: the canonical tracking target names
TRACK_BACKENDS = TRACK_TARGETS


def track(
    model: str = "spiketrack-tiny128-t1",
    *,
    clip,
    init_box: Optional[Sequence[float]] = None,
    targets: Sequence[str] = ("torch",),
    checkpoint: Optional[str] = None,
    ground_truth=None,
    preset: str = "default",
    seed: int = 0,
    frame_limits: Optional[Dict[str, int]] = None,
    output=None,
    gif: bool = True,
    progress: bool = False,
    backend: Optional[str] = None,
    clip_label: Optional[str] = None,
    overwrite: bool = False,
    partitions=None,
    weight_bits: int = 8,
):
    """Track the object in ``init_box`` ([x, y, w, h] in the first frame) through ``clip`` (see
    :func:`spikedeploy.trackrun.load_frames`) with SpikeTrack ``model``, once per target in
    ``targets`` (see :data:`spikedeploy.trackrun.TRACK_TARGETS`; ``backend=`` is the single-target
    spelling of earlier versions). ``checkpoint``: an official-layout checkpoint file,
    ``"bundled"`` (the trained weights shipped for ``spiketrack-tiny128-t1``/``-t3``),
    ``"random"`` (deterministic random weights, seed ``seed``: they fire, but do not track), or
    None: bundled for the tiny128 variants, random for the others. ``ground_truth``: boxes ``[N, 4]`` or a file
    (:func:`~spikedeploy.trackrun.load_boxes`) for success/precision scores; without ``init_box``
    its first box is used. ``frame_limits``: at most that many frames for a target (e.g.
    ``{"lava": 5}``). Writes boxes, reports, plots and an annotated GIF into the directory
    ``output`` (atomically) when given. ``clip`` may also be an ``N x H x W x 3`` uint8 array;
    ``clip_label`` names it in the report. ``partitions``: the placement of the Lava targets' bundles
    (``"auto"``, ``"per-layer"`` or N; see :mod:`spikedeploy.exporters.lava_placement`).
    ``weight_bits``: the weight mantissa width of the fixed-point targets (``reference-fixed``,
    ``lava-fixed``). Returns a :class:`spikedeploy.trackrun.TrackReport`."""
    from spikedeploy.models.spiketrack import (
        BUNDLED_FAMILY,
        default_tracker_checkpoint,
        init_spiketrack_for_spiking,
        load_spiketrack_checkpoint,
        spiketrack,
    )
    from spikedeploy.trackrun import canonical_target, track_clip, write_track_outputs

    if backend is not None:
        targets = (backend,)
    targets = [canonical_target(t) for t in targets]
    lava_options = _lava_partitions("lava", partitions)
    from spikedeploy.trackrun import FIXED_TARGETS

    check_weight_bits(weight_bits)
    if weight_bits != 8 and not any(t in FIXED_TARGETS for t in targets):
        raise ConfigError("--weight-bits applies to the fixed-point targets only (reference-fixed, lava-fixed)")
    if lava_options and not any(t.startswith("lava") for t in targets):
        raise ConfigError("--partitions applies to the Lava targets only (lava, lava-binary)")
    file_inputs = [v for v in (clip, ground_truth, checkpoint) if isinstance(v, (str, Path))
                   and v not in ("bundled", "random")]
    if output is not None:
        check_output_dir(output, overwrite=overwrite, inputs=file_inputs)
    if isinstance(clip, np.ndarray):
        frames = clip
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or not len(frames):
            raise InputError(f"clip array must be N x H x W x 3 uint8 with N >= 1, got {frames.dtype} {list(frames.shape)}")
        clip = clip_label or f"array of {len(frames)} frames"
    else:
        frames = load_frames(clip)
        clip = clip_label or str(clip)
    gt = None
    if ground_truth is not None:
        gt = (load_boxes(ground_truth, len(frames)) if isinstance(ground_truth, (str, Path))
              else np.asarray(ground_truth, dtype=np.float64))
        if gt.shape != (len(frames), 4):
            raise InputError(f"ground truth must hold one box per frame ({len(frames)} x 4), got {list(gt.shape)}")
    if init_box is None:
        if gt is None:
            raise ConfigError("track: give the initial box (--init-box X,Y,W,H) or ground truth (--ground-truth)")
        init_box = gt[0].tolist()
    if len(init_box) != 4:
        raise ConfigError(f"the initial box needs X,Y,W,H, got {len(init_box)} numbers")
    from spikedeploy.tracker import SpikeTrackTracker

    init_box = SpikeTrackTracker._check_box(init_box, *frames.shape[1:3])  # before any capture
    try:
        net = spiketrack(model)
    except ValueError as e:
        raise ConfigError(f"--model {model!r} is not a SpikeTrack variant: {e}") from None
    has_bundled = f"{net.config.family.lower()}{net.config.resolution}" == BUNDLED_FAMILY
    if checkpoint is None:
        checkpoint = "bundled" if has_bundled else "random"
    if checkpoint == "bundled":
        if not has_bundled:
            raise ConfigError(f"track: trained weights ship only for spiketrack-{BUNDLED_FAMILY}-t1/-t3, not {model!r}; "
                              "give --checkpoint FILE or --checkpoint random")
        path = default_tracker_checkpoint(net.config.templates)
        load_spiketrack_checkpoint(net, str(path))
        weights = f"bundled trained weights ({path.name})"
    elif checkpoint == "random":
        init_spiketrack_for_spiking(net, seed=seed)
        weights = f"random (seed {seed})"
    else:
        load_spiketrack_checkpoint(net, checkpoint)
        weights = f"checkpoint {checkpoint}"
    report = track_clip(model, net, frames, init_box, targets, weights=weights, clip=clip, ground_truth=gt,
                        preset=preset, frame_limits=frame_limits, progress=progress, lava_options=lava_options,
                        fixed_options={"weight_bits": weight_bits})
    if output is not None:
        write_track_outputs(report, frames, output, gif=gif, overwrite=overwrite, inputs=file_inputs)
    return report


# ---------------------------------------------------------------------------------------------
# hardware budget
# ---------------------------------------------------------------------------------------------


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
