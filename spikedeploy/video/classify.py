"""``spikedeploy classify``: the trained tiny SpikeVideoFormer classifies video clips by motion on
every target, and the targets are compared.

Input (:func:`spikedeploy.video.clips.read_clips`): a clip folder (``labels.csv`` + clips), a
folder of clips without labels, a folder of frames (one clip) or one clip file (``.npy``
``[T, H, W, 3]`` uint8, GIF/TIFF/APNG). ``labels``: a separate ``file,label[,class]`` CSV whose
``file`` column names the clips (as :func:`read_clips` names them: the file or folder name);
it replaces the labels of a clip folder.

Preprocessing (:func:`prepare_clip`), per clip: ``T`` frames evenly spaced over the clip (frame
indices ``round(linspace(0, n - 1, T))``; a clip of exactly T frames is used as it is; fewer
frames than T is an error), each frame centre-cropped to a square of its shorter side and resized
to the model's S x S (64 x 64) with PIL's bilinear filter (a frame already S x S is untouched),
then :func:`~spikedeploy.video.clips.clip_tensor` in the model's input encoding (the bundled
model's: ``luma-events``, luminance and ON/OFF temporal contrast).

Targets (each gives per-frame logits ``[T, B, 6]``; the clip's class is the argmax of their mean
over T, :func:`~spikedeploy.models.spikevideoformer.clip_logits`, on the host):

* ``torch``: the PyTorch model as trained (float32);
* ``reference``: the captured graph (float64), BatchNorm folded and chains fused
  (:func:`spikedeploy.passes.default_pipeline`), lowered to binary spikes and executed by the
  reference (:func:`spikedeploy.reference.execute`, mode ``binary``): the semantics every other
  target is checked against;
* ``onnx``: the folded integer network exported to ONNX (float64, unrolled over T), re-loaded and
  run with onnxruntime;
* ``lava``: the binary-spike graph exported as a Lava bundle, re-loaded and run in the CPU
  simulator (``floating_pt``). A graph the Lava exporter cannot express is listed as refused
  with the exporter's one-line error (the other targets still run).

Agreement (against ``reference``): per target, clips with the same class, clips whose logits are
bit-identical (``torch.equal``), the largest absolute logit difference, and the spikes of every
neuron layer the target exposes (mismatching spikes counted). ONNX and Lava compute the same
integer spike network in float64 and are expected to be identical; torch runs float32 with
unfolded BatchNorms, so rounding may flip a spike near a threshold (counted, not hidden).

Output (``output`` folder, replaced atomically, :func:`spikedeploy.fsutil.atomic_directory`):
``report.json``, ``report.md``, ``report.html`` and ``confusion.png`` (one confusion matrix per
target, with labels).
"""

from __future__ import annotations

import csv
import io
import json
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from spikedeploy.errors import ConfigError, InputError, UnsupportedOpError
from spikedeploy.video.clips import MOTIONS, ClipRecord, clip_tensor, read_clips

__all__ = [
    "CLASSIFY_TARGETS",
    "DEFAULT_FRAMES",
    "ClipResult",
    "TargetSummary",
    "ClassifyReport",
    "prepare_clip",
    "read_label_file",
    "load_classifier",
    "classify",
    "write_classify_outputs",
]

CLASSIFY_TARGETS = ("torch", "reference", "onnx", "lava")
#: the frames per clip the bundled model was trained on
DEFAULT_FRAMES = 8
PathLike = Union[str, Path]


@dataclass(frozen=True)
class ClipResult:
    """One clip: ``name``, ``label`` (None without labels), per target the predicted class index
    and the clip logits (mean over frames, rounded to 1e-6 for the report)."""

    name: str
    label: Optional[int]
    predicted: Dict[str, int]
    logits: Dict[str, List[float]]
    frames_in_clip: int


@dataclass(frozen=True)
class TargetSummary:
    """One target: ``status`` "ran" or "refused" (``error``: the one-line reason); with labels
    ``top1`` and ``correct``; against the reference: ``same_class`` clips, ``identical_logits``
    clips, ``max_logit_diff``, ``spike_layers`` compared, ``spike_mismatches`` (spikes that differ,
    over all compared layers) of ``spikes_compared``; ``seconds`` of the run; ``confusion``
    (rows: true class, columns: predicted) with labels."""

    target: str
    status: str
    error: str = ""
    top1: Optional[float] = None
    correct: Optional[int] = None
    same_class: Optional[int] = None
    identical_logits: Optional[int] = None
    max_logit_diff: Optional[float] = None
    spike_layers: Optional[int] = None
    spike_mismatches: Optional[int] = None
    spikes_compared: Optional[int] = None
    seconds: float = 0.0
    confusion: Optional[List[List[int]]] = None


@dataclass(frozen=True)
class ClassifyReport:
    """What :func:`classify` measured (module docstring)."""

    model: str
    weights: str
    frames: int
    resolution: int
    classes: Tuple[str, ...]
    clips: Tuple[ClipResult, ...]
    targets: Tuple[TargetSummary, ...]
    source: str
    labelled: bool
    chance: float
    preprocessing: str

    def summary(self, target: str) -> TargetSummary:
        for t in self.targets:
            if t.target == target:
                return t
        raise KeyError(target)

    def to_json(self) -> Dict[str, object]:
        d = asdict(self)
        d["classes"] = list(self.classes)
        return d


# ---------------------------------------------------------------------------------------------
# input
# ---------------------------------------------------------------------------------------------


def _check_frames(frames) -> int:
    if isinstance(frames, bool) or not isinstance(frames, int) or frames < 1:
        raise ConfigError(f"classify: -T/--frames must be a positive integer, got {frames!r}")
    return frames


def prepare_clip(frames: np.ndarray, T: int, size: int, *, name: str = "clip") -> np.ndarray:
    """``frames [n, H, W, 3]`` uint8 -> ``[T, size, size, 3]`` uint8 (module docstring: T frames
    evenly spaced, centre square crop, PIL bilinear resize). Fewer than T frames is an
    :class:`InputError` naming the clip."""
    from PIL import Image

    n = int(frames.shape[0])
    if n < T:
        raise InputError(f"clip {name} has {n} frame{'s' if n != 1 else ''} but -T {T} are needed; give a longer clip "
                         f"or a smaller -T")
    idx = np.rint(np.linspace(0, n - 1, T)).astype(int) if n != T else np.arange(T)
    out = np.empty((T, size, size, 3), np.uint8)
    for j, i in enumerate(idx):
        f = frames[i]
        h, w = f.shape[:2]
        s = min(h, w)
        y0, x0 = (h - s) // 2, (w - s) // 2
        f = f[y0:y0 + s, x0:x0 + s]
        if s != size:
            f = np.asarray(Image.fromarray(np.ascontiguousarray(f), mode="RGB").resize((size, size),
                                                                                        Image.Resampling.BILINEAR))
        out[j] = f
    return out


def read_label_file(path: PathLike) -> Dict[str, int]:
    """A labels CSV (header ``file,label`` or ``file,label,class``) as ``{file: label}``; labels
    must be class indices below 6 (:data:`~spikedeploy.video.clips.MOTIONS`) or class names."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"labels file {path} cannot be read: {getattr(e, 'strerror', None) or e}") from None
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if header is None or [h.strip() for h in header[:2]] != ["file", "label"]:
        raise InputError(f"labels file {path}: the first line must be the header 'file,label' (or 'file,label,class')")
    out: Dict[str, int] = {}
    for lineno, row in enumerate(reader, start=2):
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) < 2:
            raise InputError(f"labels file {path}, line {lineno}: expected 'file,label', got {','.join(row)!r}")
        name, text_label = row[0].strip(), row[1].strip()
        if text_label in MOTIONS:
            label = MOTIONS.index(text_label)
        else:
            try:
                label = int(text_label)
            except ValueError:
                label = -1
        if not 0 <= label < len(MOTIONS):
            raise InputError(f"labels file {path}, line {lineno}: label {text_label!r} is not a class index 0..5 or a "
                             f"class name ({', '.join(MOTIONS)})")
        if name in out:
            raise InputError(f"labels file {path}, line {lineno}: clip {name!r} is listed twice")
        out[name] = label
    if not out:
        raise InputError(f"labels file {path} lists no clips")
    return out


def _labels_for(records: Sequence[ClipRecord], labels: Optional[PathLike]) -> List[Optional[int]]:
    if labels is None:
        found = [r.label for r in records]
        for r in records:
            if r.label is not None and r.label >= len(MOTIONS):
                raise InputError(f"clip {r.name}: label {r.label} is not a class of the model (0..{len(MOTIONS) - 1}: "
                                 f"{', '.join(MOTIONS)})")
        return found
    table = read_label_file(labels)
    missing = [r.name for r in records if r.name not in table and Path(r.name).stem not in table]
    if missing:
        raise InputError(f"labels file {labels} has no label for clip {missing[0]!r} ({len(missing)} clip(s) "
                         "unlabelled); list every clip")
    return [table.get(r.name, table.get(Path(r.name).stem)) for r in records]


# ---------------------------------------------------------------------------------------------
# model
# ---------------------------------------------------------------------------------------------


def load_classifier(checkpoint: str = "bundled", *, seed: int = 0):
    """``(net, weights)``: the tiny SpikeVideoFormer (eval mode, float32) with the bundled trained
    weights (``"bundled"``), deterministic random weights that fire (``"random"``, seed
    ``seed``) or the checkpoint file ``checkpoint`` (``{"net": state_dict}``); ``weights`` says
    which, for the report."""
    from spikedeploy.models.spikevideoformer import spikevideoformer_net
    from spikedeploy.video.training import VIDEO_VARIANT, default_video_checkpoint, load_video_model

    if checkpoint == "random":
        net = spikevideoformer_net(VIDEO_VARIANT)
        net.init_random_weights(seed)
        return net.eval(), f"random (seed {seed})"
    if checkpoint == "bundled":
        path = default_video_checkpoint()
        return load_video_model(path), f"bundled ({path.name}, trained)"
    if not Path(checkpoint).is_file():
        raise InputError(f"--checkpoint {checkpoint}: no such file; give a checkpoint file ({{'net': state_dict}}), "
                         "'bundled' or 'random'")
    return load_video_model(checkpoint), str(checkpoint)


# ---------------------------------------------------------------------------------------------
# targets
# ---------------------------------------------------------------------------------------------


def _torch_run(net, x: torch.Tensor):
    """Per-frame logits and every neuron module's spikes (module name -> [T, B, ...])."""
    from spikedeploy.models.neurons import SpikingNeuron

    spikes: Dict[str, torch.Tensor] = {}
    hooks = [m.register_forward_hook(lambda m, i, o, name=name: spikes.__setitem__(name, o.detach().clone()))
             for name, m in net.named_modules() if isinstance(m, SpikingNeuron)]
    try:
        with torch.no_grad():
            logits = net(x)
    finally:
        for h in hooks:
            h.remove()
    return logits.double(), spikes


def _compile(net, T: int):
    """The captured (float64) graph, folded/fused, and its binary-spike lowering."""
    import copy

    from spikedeploy.capture import capture
    from spikedeploy.passes import ExpandSpikes, default_pipeline

    net64 = copy.deepcopy(net).double().eval()
    graph = capture(net64, torch.zeros((T, 1) + tuple(net.input_shape), dtype=torch.float64),
                    name="spikevideoformer-tiny")
    folded = default_pipeline().apply(graph).with_meta(timesteps=T)
    binary = ExpandSpikes("binary").apply(folded).with_meta(timesteps=T)
    return folded, binary


def _artifact(target: str, graph, encoding: str, tmp: Path):
    from spikedeploy.targets import get_target

    spec = get_target(target)
    path = spec.exporter_module().export(graph, tmp / f"model{spec.suffix}", encoding=encoding)
    return spec, spec.exporter_module().load(path)


# ---------------------------------------------------------------------------------------------
# classify
# ---------------------------------------------------------------------------------------------


def _parse_targets(targets) -> List[str]:
    if isinstance(targets, str):
        targets = [t.strip() for t in targets.split(",")]
    names = [str(t).strip().lower() for t in targets if str(t).strip()]
    if not names:
        raise ConfigError(f"classify: give at least one target ({', '.join(CLASSIFY_TARGETS)})")
    for t in names:
        if t not in CLASSIFY_TARGETS:
            raise ConfigError(f"classify: unknown target {t!r}; choose from {', '.join(CLASSIFY_TARGETS)}")
    if len(set(names)) != len(names):
        raise ConfigError(f"classify: target listed twice in {','.join(names)}")
    return names


def classify(video: PathLike, *, labels: Optional[PathLike] = None, targets=("torch", "reference", "onnx"),
             frames: int = DEFAULT_FRAMES, checkpoint: str = "bundled", seed: int = 0, batch: int = 8,
             output: Optional[PathLike] = None, overwrite: bool = False, progress: bool = False) -> ClassifyReport:
    """Classify the clips at ``video`` (a clip file or folder, module docstring) on ``targets``
    (``torch``, ``reference``, ``onnx``, ``lava``; a list or a comma-separated string) with
    ``frames`` frames per clip (-T), the weights ``checkpoint`` (``bundled``, ``random`` or a
    file), ``batch`` clips per run. With ``output``: the report folder (written atomically; an
    existing folder spikedeploy did not write is refused unless ``overwrite``). Bad input raises
    :class:`InputError`/:class:`ConfigError` with one line. Returns a :class:`ClassifyReport`."""
    from tqdm.auto import tqdm

    names = _parse_targets(targets)
    T = _check_frames(frames)
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ConfigError(f"classify: batch must be a positive integer, got {batch!r}")
    if output is not None:
        from spikedeploy.fsutil import check_output_dir

        check_output_dir(Path(output), overwrite=overwrite, inputs=(video, labels))
    records = read_clips(video)
    clip_labels = _labels_for(records, labels)
    net, weights = load_classifier(checkpoint, seed=seed)
    S = net.config.resolution
    prepared = [prepare_clip(np.asarray(r.frames), T, S, name=r.name) for r in records]

    # the reference always runs: every agreement is measured against it
    run_order = ["reference"] + [t for t in names if t != "reference"]
    folded, binary = _compile(net, T)
    logits: Dict[str, List[torch.Tensor]] = {t: [] for t in run_order}
    spike_cmp: Dict[str, List[int]] = {t: [0, 0, 0] for t in run_order}  # layers, mismatches, compared
    seconds: Dict[str, float] = {t: 0.0 for t in run_order}
    refused: Dict[str, str] = {}
    neuron_nodes = [n for n in folded.nodes if n.op.is_neuron]
    chunks = [list(range(i, min(len(prepared), i + batch))) for i in range(0, len(prepared), batch)]
    bar = tqdm(total=len(chunks) * len(run_order), desc="classify", unit="run", disable=not progress)
    tmp_ctx = tempfile.TemporaryDirectory(prefix="spikedeploy-classify-")
    tmp = Path(tmp_ctx.name)
    artifacts: Dict[str, object] = {}
    try:
        for target in run_order[1:]:
            if target in ("onnx", "lava"):
                t0 = time.perf_counter()
                try:
                    artifacts[target] = (_artifact("onnx", folded, "integer", tmp / "onnx") if target == "onnx"
                                         else _artifact("lava", binary, "binary", tmp / "lava"))
                except UnsupportedOpError as e:
                    refused[target] = str(e).splitlines()[0]
                seconds[target] += time.perf_counter() - t0
        from spikedeploy.reference import execute

        for idx in chunks:
            x = clip_tensor([prepared[i] for i in idx], net.config.input_encoding)
            x64 = x.double()
            t0 = time.perf_counter()
            ref = execute(binary, x64, "binary")
            out_name = binary.outputs[0]
            ref_logits = ref.outputs[out_name]
            ref_q = {n.name: ref.records[n.name].q for n in neuron_nodes if n.name in ref.records}
            seconds["reference"] += time.perf_counter() - t0
            logits["reference"].append(ref_logits)
            bar.update(1)
            for target in run_order[1:]:
                if target in refused:
                    bar.update(1)
                    continue
                t0 = time.perf_counter()
                if target == "torch":
                    lg, spikes = _torch_run(net, x)
                    pairs = [(ref_q[n.name], spikes[n.source] * n.op.norm) for n in neuron_nodes
                             if n.name in ref_q and getattr(n, "source", None) in spikes]
                else:
                    spec, art = artifacts[target]
                    trun = spec.runtime_module().run(art, x64)
                    lg = trun.outputs[out_name].double()
                    pairs = [(ref_q[k], v) for k, v in trun.spike_counts.items() if k in ref_q]
                seconds[target] += time.perf_counter() - t0
                logits[target].append(lg)
                c = spike_cmp[target]
                c[0] = max(c[0], len(pairs))
                for a, b in pairs:
                    c[1] += int((a.double() != b.double()).sum())
                    c[2] += a.numel()
                bar.update(1)
    finally:
        bar.close()
        tmp_ctx.cleanup()

    from spikedeploy.models.spikevideoformer import clip_logits

    per_frame = {t: torch.cat(v, dim=1) for t, v in logits.items() if v}
    clip_scores = {t: clip_logits(v) for t, v in per_frame.items()}
    preds = {t: v.argmax(dim=1).tolist() for t, v in clip_scores.items()}
    labelled = all(lb is not None for lb in clip_labels)
    k = len(MOTIONS)
    summaries = []
    for t in names:
        if t in refused:
            summaries.append(TargetSummary(target=t, status="refused", error=refused[t]))
            continue
        p = preds[t]
        kw = dict(seconds=round(seconds[t], 3))
        if labelled:
            conf = np.zeros((k, k), dtype=int)
            for lb, pr in zip(clip_labels, p):
                conf[lb, pr] += 1
            kw.update(top1=float(np.trace(conf)) / len(p), correct=int(np.trace(conf)), confusion=conf.tolist())
        if t != "reference":
            a, b = per_frame[t], per_frame["reference"]
            same = [bool(torch.equal(a[:, i], b[:, i])) for i in range(a.shape[1])]
            layers, mism, compared = spike_cmp[t]
            kw.update(same_class=sum(int(x == y) for x, y in zip(p, preds["reference"])), identical_logits=sum(same),
                      max_logit_diff=float((a - b).abs().max()), spike_layers=layers, spike_mismatches=mism,
                      spikes_compared=compared)
        summaries.append(TargetSummary(target=t, status="ran", **kw))
    shown = [t for t in names if t not in refused]
    clips = tuple(ClipResult(name=r.name, label=clip_labels[i], frames_in_clip=int(r.frames.shape[0]),
                             predicted={t: int(preds[t][i]) for t in shown},
                             logits={t: [round(float(v), 6) for v in clip_scores[t][i]] for t in shown})
                  for i, r in enumerate(records))
    report = ClassifyReport(
        model="spikevideoformer-tiny", weights=weights, frames=T, resolution=S, classes=tuple(MOTIONS), clips=clips,
        targets=tuple(summaries), source=str(video), labelled=labelled, chance=1.0 / k,
        preprocessing=(f"{T} frames evenly spaced over each clip, centre square crop, PIL bilinear resize to {S}x{S}, "
                       "(pixel/255 - mean)/std"))
    if output is not None:
        write_classify_outputs(report, output, overwrite=overwrite, inputs=(video, labels))
    return report


# ---------------------------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------------------------


def _pct(v: Optional[float]) -> str:
    return "" if v is None else f"{100 * v:.1f} %"


def _target_rows(report: ClassifyReport) -> List[List[str]]:
    n = len(report.clips)
    rows = []
    for s in report.targets:
        if s.status == "refused":
            rows.append([s.target, "refused", "", "", "", "", "", s.error])
            continue
        ref = s.target == "reference"
        rows.append([
            s.target, "ran",
            f"{_pct(s.top1)} ({s.correct}/{n})" if s.top1 is not None else "no labels",
            "(the reference)" if ref else f"{s.same_class}/{n}",
            "" if ref else f"{s.identical_logits}/{n}",
            "" if ref else f"{s.max_logit_diff:.3g}",
            "" if ref else f"{s.spike_mismatches:,} of {s.spikes_compared:,} ({s.spike_layers} layers)",
            f"{s.seconds:.2f} s",
        ])
    return rows


_TARGET_HEADERS = ["target", "status", "top-1", "same class as reference", "identical logits", "max |logit diff|",
                   "spike mismatches vs reference", "time / error"]


def _markdown(report: ClassifyReport) -> str:
    n = len(report.clips)
    lines = [f"# classify: {report.model} on {n} clip{'s' if n != 1 else ''}", "",
             f"- clips: `{report.source}`", f"- weights: {report.weights}",
             f"- input: {report.preprocessing}",
             f"- classes: {', '.join(report.classes)}; chance {_pct(report.chance)}"
             + ("" if report.labelled else " (no labels: no top-1)"), "",
             "## Targets", "",
             "| " + " | ".join(_TARGET_HEADERS) + " |", "|" + "---|" * len(_TARGET_HEADERS)]
    lines += ["| " + " | ".join(r) + " |" for r in _target_rows(report)]
    shown = [s.target for s in report.targets if s.status == "ran"]
    lines += ["", "## Clips", "", "| clip | label | " + " | ".join(shown) + " |", "|" + "---|" * (len(shown) + 2)]
    for c in report.clips:
        label = "" if c.label is None else report.classes[c.label]
        cells = []
        for t in shown:
            p = report.classes[c.predicted[t]]
            cells.append(p if c.label is None else (p if c.predicted[t] == c.label else f"**{p}** (wrong)"))
        lines.append(f"| {c.name} | {label} | " + " | ".join(cells) + " |")
    lines += ["", "Agreement is measured against the reference (the folded graph in binary spikes, float64). "
              "Identical logits: bit-identical per-frame logits; spike mismatches: spikes of the neuron layers the "
              "target exposes that differ from the reference's.", ""]
    return "\n".join(lines)


def _confusion_figure(report: ClassifyReport):
    from matplotlib.figure import Figure

    groups: List[Tuple[List[str], TargetSummary]] = []  # targets with identical matrices drawn once
    for s in report.targets:
        if s.confusion is None:
            continue
        for names, first in groups:
            if first.confusion == s.confusion:
                names.append(s.target)
                break
        else:
            groups.append(([s.target], s))
    fig = Figure(figsize=(4.2 * max(1, len(groups)), 4.2))
    axes = fig.subplots(1, max(1, len(groups)), squeeze=False)[0]
    for ax, (names, s) in zip(axes, groups):
        m = np.asarray(s.confusion)
        ax.imshow(m, cmap="Blues", vmin=0)
        ax.set_xticks(range(len(report.classes)), report.classes, rotation=45, ha="right", fontsize=8)
        ax.set_yticks(range(len(report.classes)), report.classes, fontsize=8)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        for i in range(m.shape[0]):
            for j in range(m.shape[1]):
                if m[i, j]:
                    ax.text(j, i, str(m[i, j]), ha="center", va="center", fontsize=8,
                            color="white" if m[i, j] > m.max() / 2 else "black")
        ax.set_title(f"{' = '.join(names)}: top-1 {_pct(s.top1)} (chance {_pct(report.chance)})", fontsize=9)
    fig.tight_layout()
    return fig


def write_classify_outputs(report: ClassifyReport, output: PathLike, *, overwrite: bool = False,
                           inputs=()) -> Path:
    """Write ``report.json``, ``report.md``, ``report.html`` (+ ``confusion.png`` with labels) into
    the folder ``output``, replaced atomically (:func:`spikedeploy.fsutil.atomic_directory`)."""
    from spikedeploy.fsutil import atomic_directory
    from spikedeploy.htmlreport import HtmlPage, figure_png, png_size

    output = Path(output)
    with atomic_directory(output, overwrite=overwrite, inputs=tuple(i for i in inputs if i is not None),
                          command="classify") as tmp:
        (tmp / "report.json").write_text(json.dumps(report.to_json(), indent=1) + "\n", encoding="utf-8")
        md = _markdown(report)
        (tmp / "report.md").write_text(md, encoding="utf-8")
        n = len(report.clips)
        page = HtmlPage(f"classify: {report.model} on {n} clips")
        page.heading(f"classify: {report.model} on {n} clip{'s' if n != 1 else ''}", 1)
        page.bullets([f"clips: {report.source}", f"weights: {report.weights}", f"input: {report.preprocessing}",
                      f"classes: {', '.join(report.classes)}; chance {_pct(report.chance)}"
                      + ("" if report.labelled else " (no labels: no top-1)")])
        page.heading("Targets", 2)
        page.table(_TARGET_HEADERS, _target_rows(report), align="llrrrrrl")
        if report.labelled and any(s.confusion is not None for s in report.targets):
            png = figure_png(_confusion_figure(report))
            (tmp / "confusion.png").write_bytes(png)
            w, h = png_size(png)
            page.raw(f'<figure><div class="fig-wrap"><img class="native" width="{w}" height="{h}" '
                     f'alt="confusion matrices" src="confusion.png"/></div><figcaption>confusion matrix per target '
                     '(rows: true class, columns: predicted); targets with identical matrices share one, named '
                     'together (e.g. "reference = onnx")</figcaption></figure>')
        shown = [s.target for s in report.targets if s.status == "ran"]
        page.heading("Clips", 2)
        rows = []
        for c in report.clips:
            rows.append([c.name, "" if c.label is None else report.classes[c.label]]
                        + [report.classes[c.predicted[t]] + ("" if c.label is None or c.predicted[t] == c.label
                                                             else " (wrong)") for t in shown])
        page.table(["clip", "label"] + shown, rows, align="l" * (2 + len(shown)))
        page.paragraph("Agreement is measured against the reference (the folded graph in binary spikes, float64). "
                       "Identical logits: bit-identical per-frame logits; spike mismatches: spikes of the neuron layers "
                       "the target exposes that differ from the reference's.")
        page.bullets(['<a href="report.json">report.json</a>', '<a href="report.md">report.md</a>'], html=True)
        (tmp / "report.html").write_text(page.render(), encoding="utf-8")
    return output
