"""``spikedeploy verify`` and the neuron demo: the captured graph against the PyTorch model, the
lowered spike graphs against the integer network, each target's artifact against the reference,
fixed point measured against float (:func:`verify`, :class:`VerificationReport`,
:func:`neuron_demo`). Re-exported by :mod:`spikedeploy.api`."""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from spikedeploy import resources
from spikedeploy.capture import capture
from spikedeploy.equivalence import compare_runs
from spikedeploy.errors import ConfigError
from spikedeploy.fsutil import atomic_directory, check_output_dir
from spikedeploy.ir.graph import Graph
from spikedeploy.passes import default_pipeline
from spikedeploy.reference import execute, run
from spikedeploy.passes import ExpandSpikes
from spikedeploy.loading import (DTYPES, SPIKE_MODES, build_model,
    calibration_inputs, check_precision, default_encoding, make_inputs, to_fixed)


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
