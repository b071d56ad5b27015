"""Command-line interface: ``spikedeploy <command> [options]``; ``spikedeploy <command> --help``
explains every option. Each command calls one function of :mod:`spikedeploy.api`.

Exit codes: 0 success; 1 a verification that ran but failed, or an internal error; 2 bad input
(unknown model or option value, unreadable checkpoint, unsupported op). Errors print one line
``spikedeploy: error: ...`` without a traceback (``SPIKEDEPLOY_DEBUG=1`` shows it).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path
from typing import List, Optional

from spikedeploy.errors import SpikedeployError

DEMO_KINDS = ("ilif", "ilif_half_up", "leaky_ilif", "nilif", "integer_if", "binary_lif", "dilif")


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (``spikedeploy <command>: error: ...`` with a
    pointer to ``--help``) and exit code 2, as every other bad input."""

    def error(self, message: str):  # noqa: D401 - argparse's hook
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


_OVERWRITE_HELP = ("write into an existing output folder that holds files spikedeploy did not write: files of the "
                   "same names are replaced, all others are kept (without it such a folder is refused; a new or "
                   "empty folder, or spikedeploy's own earlier output, is always fine)")


def _overwrite_option(p: argparse.ArgumentParser, help: str = _OVERWRITE_HELP) -> None:
    p.add_argument("--overwrite", action="store_true", help=help)


def _shape(text: str):
    try:
        dims = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers like 3,16,16, got {text!r}")
    if not dims or any(d < 1 for d in dims):
        raise argparse.ArgumentTypeError(f"shape dimensions must be positive, got {text!r}")
    return dims


def _box(text: str):
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers X,Y,W,H, got {text!r}") from None


def _kv(text: str):
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    k, v = text.split("=", 1)
    for cast in (int, float):
        try:
            return k, cast(v)
        except ValueError:
            pass
    return k, {"true": True, "false": False, "none": None}.get(v.lower(), v)


_MAX_MEMORY_HELP = ("refuse to start when the estimated peak memory exceeds GB gigabytes (default: "
                    "$SPIKEDEPLOY_MAX_MEMORY_GB, else half the physical memory or the memory available now, "
                    "whichever is smaller; spikedeploy.resources)")


def _model_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--model", default="sdt-test",
                   help="built-in model name (sdt-test) or 'package.module:factory' returning a torch.nn.Module "
                        "(default: %(default)s)")
    g.add_argument("--neuron", default=None,
                   help="neuron kind for built-in models: ilif, ilif_half_up, leaky_ilif, nilif, integer_if, "
                        "binary_lif, dilif (default: the model's own, ilif for sdt-test)")
    g.add_argument("--timesteps", "-T", type=int, default=1,
                   help="macro-steps T of the model's time axis (default: %(default)s)")
    g.add_argument("--checkpoint", default=None,
                   help="state-dict checkpoint to load strictly (torch.load weights_only=True); without it "
                        "built-in models get deterministic random weights")
    g.add_argument("--checkpoint-key", default=None,
                   help="key of the state dict inside the checkpoint file, e.g. 'net' for SpikeTrack")
    g.add_argument("--model-arg", type=_kv, action="append", default=[], metavar="KEY=VALUE",
                   help="extra keyword argument for the model constructor (repeatable), e.g. --model-arg image_size=32")
    g.add_argument("--input-shape", type=_shape, default=None, metavar="C,H,W",
                   help="per-step input shape, for models that do not declare 'input_shape'")
    g.add_argument("--seed", type=int, default=0, help="seed for random weights and inputs (default: %(default)s)")
    g.add_argument("--max-memory", type=float, default=None, metavar="GB", help=_MAX_MEMORY_HELP)


_PRECISION_HELP = ("number format: float (the float IR) or fixed (Loihi 2 fixed point: the spike-lowered graph with "
                   "signed weight mantissas and a per-layer exponent, 13-bit bias mantissas, 12-bit leaks, 24-bit "
                   "saturating state; spikedeploy.passes.quantize); fixed needs a spike-lowered target (lava), "
                   "not onnx or nir")
_CALIBRATION_RULE = ("the quantization calibrates each layer's exponent on sample inputs: the --calibration file when "
                     "given, else {default}")


def _precision_options(p: argparse.ArgumentParser, *, default: Optional[str] = "float", calibration: str = "",
                       artifact: bool = False, what: str = ""):
    """--precision (``what``: what fixed does in this command), and (``calibration``: the rule's
    default) --weight-bits and --calibration; returns the argument group."""
    g = p.add_argument_group("precision")
    if artifact:
        extra = " (default: float; with --artifact: the artifact's own, and float or fixed must match it)"
    elif default is None:
        extra = " (default: the artifact's own; float or fixed must match it)"
    else:
        extra = " (default: %(default)s)"
    g.add_argument("--precision", choices=["float", "fixed"], default=default,
                   help=_PRECISION_HELP + (f". {what}" if what else "") + extra)
    if calibration:
        g.add_argument("--weight-bits", type=int, default=None, metavar="N",
                       help="--precision fixed: bits of the signed weight mantissas, 2..16 (default: 8, Loihi 2's "
                            "synaptic weight width); fewer bits show how the error grows")
        g.add_argument("--calibration", default=None, metavar="FILE.npy",
                       help="--precision fixed: .npy inputs [T, N, *input_shape] (T = the model's) to calibrate the "
                            "exponents on; " + _CALIBRATION_RULE.format(default=calibration))
    return g


_PARTITIONS_HELP = ("Lava processes the network runs in: auto (default; chosen for speed on this machine), per-layer "
                    "(one per bundle process) or a number N of partitions; same spikes and timing in every case")


def _build_parser() -> argparse.ArgumentParser:
    from spikedeploy import __version__

    p = _Parser(
        prog="spikedeploy",
        description="Deploy integer-activation spiking networks exactly: capture a PyTorch model into an IR, "
                    "lower integer activations to binary or graded spikes, and prove the lowering exact.",
    )
    p.add_argument("--version", action="version", version=f"spikedeploy {__version__}",
                   help="print the version and exit")
    sub = p.add_subparsers(dest="command", metavar="command")
    sub.required = True

    v = sub.add_parser("verify", help="prove capture, folding and spike lowering equivalent; write a report",
                       description="Capture the model, fold BatchNorm and fuse linear chains, lower to binary and "
                                   "graded spikes, and compare every stage with the previous one: per neuron layer "
                                   "teacher-forced (exact except boundary ties) and free-running. Writes report.html, "
                                   "report.md and report.json. Exit code 0 if every stage succeeds, 1 otherwise.")
    _model_options(v)
    g = v.add_argument_group("verification")
    g.add_argument("--inputs", type=int, default=64, dest="num_inputs",
                   help="number of random N(0,1) inputs (default: %(default)s)")
    g.add_argument("--input-file", default=None,
                   help=".npy file of inputs with shape [T, N, *input_shape] instead of random inputs")
    g.add_argument("--modes", default="binary,graded",
                   help="spike encodings to verify, comma-separated: binary (q unit spikes in D sub-steps), "
                        "graded (one event with payload q) (default: %(default)s)")
    g.add_argument("--dtype", default="float64", choices=["float64", "float32"],
                   help="arithmetic of the reference runs (default: %(default)s; float64 makes ties vanishingly rare)")
    g.add_argument("-o", "--output", default="out/verify",
                   help="report directory, written atomically (default: %(default)s)")
    _overwrite_option(g)
    g.add_argument("--targets", default="reference",
                   help="comma-separated targets to check as well: reference (always), onnx, nir, lava; each is "
                        "exported, re-loaded and run, and its spike counts compared with the reference "
                        "(default: %(default)s)")
    g.add_argument("--target-inputs", type=int, default=4,
                   help="how many of the inputs to run on each target (Lava simulates slowly) (default: %(default)s)")
    g.add_argument("--no-progress", action="store_true", help="do not show a progress bar")
    _precision_options(v, calibration="the verified inputs (--inputs or --input-file)",
                       what="With fixed, a stage fixed-<mode> after each spike mode measures the fixed graph against "
                            "the float one (per layer: weight errors, saturation events, q mismatches teacher-forced "
                            "and free-running; the output error): MEASURED, reported and not judged; --targets lava "
                            "runs the fixed graph (of the first mode), which must equal the fixed reference exactly "
                            "(pass/fail)")

    e = sub.add_parser("export", help="export a model to NIR, a Lava process-graph bundle or ONNX",
                       description="Capture the model, fold BatchNorm, fuse linear chains, lower to spikes (NIR, Lava) "
                                   "or keep the integer network (ONNX), and write the artifact atomically. An op the "
                                   "target cannot express stops the export with exit code 2, naming the op.")
    _model_options(e)
    e.add_argument("--target", required=True, choices=["lava", "nir", "onnx"],
                   help="lava: process-graph bundle for the Lava CPU simulator; nir: NIR file; onnx: ONNX model "
                        "of the integer network")
    e.add_argument("--spike-encoding", choices=["binary", "graded"], default=None,
                   help="binary: q unit spikes in D sub-steps; graded: one event with payload q (default: binary "
                        "for lava and nir; onnx always exports the integer network)")
    e.add_argument("-o", "--output", required=True,
                   help="artifact path (must not exist unless --overwrite): a .onnx/.nir file or a .lava bundle "
                        "directory")
    _overwrite_option(e, "replace an existing artifact at --output (a file is replaced atomically; a bundle folder "
                         "keeps files spikedeploy did not write)")
    e.add_argument("--partitions", default=None, metavar="auto|per-layer|N", help=_PARTITIONS_HELP)
    e.add_argument("--nir-profile", default=None, choices=["portable", "literal"],
                   help="NIR layout (nir only): portable (default; the most widely readable form: input/output "
                        "node names, average pooling as Conv2d, Flatten dims from the end) or literal (one NIR "
                        "node of the matching kind per IR op, IR names); both load back to the same graph")
    e.add_argument("--check-peers", action="store_true",
                   help="nir only: run the NIR peers available here or in .venv-peers (make peers) on the "
                        "exported file and print what each did")
    pg = _precision_options(e, calibration="--inputs seeded N(0,1) inputs (seed --seed + 1: the inputs 'verify --inputs N' "
                                      "checks)",
                       what="With fixed (lava only) the bundle holds the fixed graph and 'run' returns its integer "
                            "outputs decoded to real values")
    pg.add_argument("--inputs", type=int, default=64, dest="num_inputs", metavar="N",
                   help="--precision fixed: number of seeded N(0,1) calibration inputs (default: %(default)s)")

    r = sub.add_parser("run", help="run an exported artifact on an input file",
                       description="Load an artifact written by 'spikedeploy export' (no PyTorch model code needed), "
                                   "run it on the inputs and write the outputs and per-layer spike counts.")
    r.add_argument("--target", required=True, choices=["lava", "nir", "onnx"], help="the artifact's target")
    r.add_argument("artifact", help="path of the exported artifact")
    r.add_argument("--input", required=True, dest="input_file",
                   help=".npy file with inputs of shape [T, B, *input_shape]")
    r.add_argument("-o", "--output", default=None,
                   help="write outputs and spike counts to this .npz file (atomically; it must not exist unless "
                        "--overwrite)")
    _overwrite_option(r, "replace an existing --output file")
    r.add_argument("--max-memory", type=float, default=None, metavar="GB", help=_MAX_MEMORY_HELP)
    r.add_argument("--partitions", default=None, metavar="auto|per-layer|N",
                   help="Lava: place the bundle's processes again (default: the placement the bundle records); "
                        + _PARTITIONS_HELP)
    r.add_argument("--no-progress", action="store_true", help="do not show a progress bar")
    _precision_options(r, default=None, what="A fixed-point bundle computes integers: the printed and saved "
                                              "output/<name> are the decoded real values, integer_output/<name> the "
                                              "integers")

    a = sub.add_parser("audit", help="measured synaptic ops and energy per layer, next to the papers' estimate",
                       description="Run the spike-expanded network, count what it actually does per layer "
                                   "(SynOps = unit spikes x real fan-out: border-aware, zero weights excluded; graded "
                                   "events; host MACs; neuron updates; attention spike-pair events) and put it next "
                                   "to the papers' estimate (FLOPs x firing rate). Writes report.md, report.json "
                                   "and report.html (with plots).")
    _model_options(a)
    a.add_argument("--inputs", type=int, default=8, dest="num_inputs",
                   help="number of random N(0,1) inputs (frames) to audit (default: %(default)s)")
    a.add_argument("--input-file", default=None,
                   help=".npy inputs [T, N, *input_shape] instead of random inputs")
    a.add_argument("--encoding", choices=["binary", "graded"], default="binary",
                   help="spike encoding of the run: binary = q unit spikes in D sub-steps, graded = one event with "
                        "payload q; graded events and their unit-spike equivalent are reported either way "
                        "(default: %(default)s)")
    a.add_argument("--energy", default="45nm",
                   help="energy profile: 45nm (E_AC 0.9 pJ, E_MAC 4.6 pJ; Horowitz ISSCC 2014, as in the papers) or "
                        "loihi (23.6 pJ per synaptic op, 81 pJ per neuron update; Davies et al., IEEE Micro 2018) "
                        "(default: %(default)s)")
    a.add_argument("--runtime", choices=["reference", "lava"], default="reference",
                   help="where the spike run happens: the reference executor, or the Lava CPU simulator (its "
                        "counts are checked against the reference first) (default: %(default)s)")
    a.add_argument("--artifact", default=None,
                   help="audit an exported artifact instead of a model: a NIR file or a Lava bundle (they carry "
                        "their IR graph); needs --target")
    a.add_argument("--target", choices=["lava", "nir"], default=None,
                   help="the artifact's target (with --artifact): lava runs it in the Lava simulator, nir re-executes "
                        "it with the reference")
    a.add_argument("-o", "--output", default="out/audit",
                   help="report directory (report.md, report.json, report.html), written atomically "
                        "(default: %(default)s)")
    _overwrite_option(a)
    _precision_options(a, default=None, artifact=True, calibration="the audited inputs (--inputs or --input-file)",
                       what="With fixed the fixed graph's own spike run is counted (reference, or Lava checked "
                            "against the fixed reference) and its saturation events reported")

    t = sub.add_parser("track", help="track an object through a clip with SpikeTrack on one or several targets",
                       description="Run the SpikeTrack tracker frame by frame (host: crops, window, decoding; network: "
                                   "each chosen target) and write boxes.json, report.md/.json/.html, an annotated "
                                   "track.gif and, with ground truth, success and precision plots. With several "
                                   "targets the report gives their per-frame agreement with the first one (IoU of "
                                   "the boxes, identical boxes, identical per-layer spike counts where both expose "
                                   "them). A progress bar per target shows the frames.")
    t.add_argument("--model", default=None,
                   help="SpikeTrack variant: spiketrack-{tiny128,s256,b256,b384}-t{1,3} (default: "
                        "spiketrack-tiny128-t1, the small tracker trained by this project); with --events "
                        "spiketrack-event-{tiny,full} (default: spiketrack-event-tiny)")
    t.add_argument("--checkpoint", default=None,
                   help="the weights: an official-layout checkpoint file (its ['net']), 'bundled' (the trained "
                        "weights shipped for spiketrack-tiny128-t1/-t3) or 'random' (seeded random weights: they "
                        "fire but do not track). Default: bundled for the tiny128 variants, random otherwise")
    t.add_argument("--clip", default=None,
                   help="the frames: a folder of PNG/JPEG/BMP images (sorted by name), a GIF/TIFF video, or an "
                        "N x H x W x 3 uint8 .npy file (give --clip or --events)")
    t.add_argument("--events", default=None, metavar="FILE|DIR",
                   help="track with the event SpikeTrack instead: an event sequence folder (FE108: events.aedat4 + "
                        "groundtruth_rect.txt, spikedeploy's layout adds frame_times.txt; VisEvent: <seq>.aedat4 + "
                        "groundtruth.txt) or an event file (AEDAT4, npz, npy, HDF5) with --frame-times (an AEDAT4 "
                        "recording with APS frames gives its own). Frame i is tracked on the events between the "
                        "frame times t_(i-1) and t_i, the network state carried from frame to frame; track.gif shows "
                        "the event frames (ON yellow, OFF blue) with the boxes")
    t.add_argument("--frame-times", default=None, metavar="FILE",
                   help="--events: the annotated frames' timestamps, one integer microsecond value per line (or an "
                        ".npy of integers), on the events' clock")
    t.add_argument("--sensor-size", default=None, type=_shape, metavar="W,H",
                   help="--events: the sensor's width and height, for event files that do not state it (.npy)")
    t.add_argument("--format", default="auto", choices=["auto", "fe108", "visevent"],
                   help="--events with a folder: its layout (default: %(default)s: detected)")
    t.add_argument("--init-box", default=None, type=_box,
                   metavar="X,Y,W,H", help="the target's box in the first frame, in pixels (default: the first "
                                           "ground-truth box)")
    t.add_argument("--ground-truth", default=None, metavar="FILE",
                   help="ground-truth boxes, one x,y,w,h per frame (.txt/.csv as OTB's groundtruth_rect.txt, .json "
                        "or .npy): adds OTB success (AUC) and precision (at 20 px) scores and plots")
    t.add_argument("--target", "--backend", dest="targets", default="torch",
                   help="comma-separated targets running the network: torch (integer model, float32), torch64, "
                        "reference (= reference-binary), reference-integer|binary|graded (the reference executor; "
                        "unit or graded spikes), onnx (onnxruntime), lava (= lava-graded), lava-binary (Lava CPU "
                        "simulator, floating_pt), reference-fixed and lava-fixed (Loihi 2 fixed point: the graphs "
                        "quantized, --weight-bits, calibrated on crops of the bundled demo clip; the reference in "
                        "integers and Lava fixed_pt, identical). The first is the one the others are compared with "
                        "(default: %(default)s)")
    t.add_argument("--weight-bits", type=int, default=8, metavar="N",
                   help="reference-fixed / lava-fixed: bits of the signed weight mantissas, 2..16 (default: "
                        "%(default)s, Loihi 2's synaptic weight width)")
    t.add_argument("--protocol", default="otb", choices=["otb", "lasot", "got10k"],
                   help="how the ground truth scores the track, as that benchmark's toolkit does: otb (AUC, P@20; "
                        "first frame counted as the ground-truth box), lasot (+ normalized precision), got10k (AO, "
                        "SR0.5, SR0.75; first frame left out) (default: %(default)s)")
    t.add_argument("--lava-frames", type=int, default=None, metavar="N",
                   help="track only the first N frames on Lava targets (the simulator takes seconds to minutes "
                        "per frame); the report says so")
    t.add_argument("--partitions", default=None, metavar="auto|per-layer|N",
                   help="Lava targets: " + _PARTITIONS_HELP)
    t.add_argument("--max-frames", type=int, default=None, metavar="N",
                   help="track only the first N frames of the clip on every target")
    t.add_argument("--preset", default="default", choices=["default", "lasot"],
                   help="template update rule (T = 3 variants): every 25 frames at confidence > 0.7, or "
                        "LaSOT's 40 / 0.8 (default: %(default)s)")
    t.add_argument("--seed", type=int, default=0, help="seed of the random weights (without --checkpoint)")
    t.add_argument("--no-gif", action="store_true", help="do not write the annotated track.gif")
    t.add_argument("-o", "--output", default="out/track",
                   help="output directory, written atomically; it must not hold the clip or the ground truth "
                        "(default: %(default)s)")
    _overwrite_option(t)
    t.add_argument("--no-progress", action="store_true", help="do not show progress bars")

    ev = sub.add_parser("evaluate", help="track every sequence of a benchmark (OTB, LaSOT, GOT-10k layout) on one or "
                                         "several targets and score it as the toolkits do",
                        description="Track every sequence of a dataset in its official layout once per target (each "
                                    "sequence and target one task; with --workers > 1 or --address the tasks run on "
                                    "Ray), write the boxes in the toolkit's own results layout (results/<model>_"
                                    "<target>/...) so the official toolkits score them, a record per sequence "
                                    "(records/<target>/<sequence>.json: boxes, times, spike digests, measured SynOps "
                                    "and energy per frame), and report.md/.json/.html with success and precision "
                                    "plots, per-sequence and per-attribute tables, the spike agreement between "
                                    "targets and fps per target. Every file is written atomically when its task "
                                    "ends; running the same command again resumes (finished sequences are "
                                    "skipped). A failing sequence is reported and the others go on (exit code 1).")
    ev.add_argument("--dataset", required=True, metavar="DIR",
                    help="the dataset folder: OTB (Seq/img/*.jpg + groundtruth_rect.txt), LaSOT (class/class-N/img/ "
                         "+ groundtruth.txt, full_occlusion.txt, out_of_view.txt) or GOT-10k (seq/*.jpg + "
                         "groundtruth.txt, list.txt); 'spikedeploy make-dataset' writes one")
    ev.add_argument("--format", default="auto", choices=["auto", "otb", "lasot", "got10k", "fe108", "visevent"],
                    help="the dataset layout, which is also the scoring protocol (default: %(default)s: detected); "
                         "fe108/visevent: event sequences (events.aedat4 + groundtruth_rect.txt [+ frame_times.txt], "
                         "or <seq>/<seq>.aedat4 + groundtruth.txt) tracked by the event SpikeTrack, results in the "
                         "OTB layout, scored with the OTB protocol")
    ev.add_argument("--model", default=None,
                    help="SpikeTrack variant (default: spiketrack-tiny128-t1, the small tracker trained by this "
                         "project; on event datasets spiketrack-event-tiny)")
    ev.add_argument("--checkpoint", default=None,
                    help="'bundled', 'random' or an official-layout checkpoint file (default: bundled for the "
                         "tiny128 variants, random otherwise)")
    ev.add_argument("--target", dest="targets", default="torch",
                    help="comma-separated targets, as for 'spikedeploy track' (torch, torch64, reference-*, onnx, "
                         "lava, lava-binary, reference-fixed, lava-fixed; default: %(default)s)")
    ev.add_argument("--max-sequences", action="append", type=_kv, default=[], metavar="TARGET=N",
                    help="evaluate TARGET on the first N sequences only (e.g. lava=3: the simulator is slow); "
                         "repeatable. The report scores every target on its own sequences and all of them on "
                         "the sequences they share")
    ev.add_argument("--sequences", default=None, metavar="A,B,...", help="evaluate only these sequences")
    ev.add_argument("--workers", type=int, default=None, metavar="N",
                    help="tasks at once: N > 1 starts an embedded local Ray with N CPUs (nothing to set up); 1 runs "
                         "them in this process. Every task uses one PyTorch thread (default: every core)")
    ev.add_argument("--address", default=None, metavar="HOST:PORT",
                    help="run the tasks on the Ray cluster at this address (its nodes must see the dataset at the "
                         "same path); implies Ray")
    ev.add_argument("--weight-bits", type=int, default=8, metavar="N",
                    help="reference-fixed / lava-fixed: bits of the weight mantissas (default: %(default)s)")
    ev.add_argument("--partitions", default=None, metavar="auto|per-layer|N", help="Lava targets: " + _PARTITIONS_HELP)
    ev.add_argument("--preset", default="default", choices=["default", "lasot"],
                    help="template update rule of the T = 3 variants (default: %(default)s)")
    ev.add_argument("--seed", type=int, default=0, help="seed of the random weights (--checkpoint random)")
    ev.add_argument("-o", "--output", default="out/evaluate",
                    help="output folder; the same command with the same folder resumes (default: %(default)s)")
    _overwrite_option(ev, help="replace an output folder that holds another evaluation (or files spikedeploy did "
                               "not write): its records and results are removed first")
    ev.add_argument("--no-progress", action="store_true", help="do not show the progress bar over sequences")

    sc = sub.add_parser("score", help="score existing results files (anyone's, in a toolkit layout) against a dataset",
                        description="Read results/<tracker>/... in the dataset's toolkit layout (OTB/LaSOT: "
                                    "<tracker>/<Seq>.txt; GOT-10k: <tracker>/<seq>/<seq>_001.txt) for every tracker "
                                    "folder and score them with the dataset's protocol, exactly as 'evaluate' does; "
                                    "prints the scores and writes report.md/.json/.html with plots when -o is given.")
    sc.add_argument("--results", required=True, metavar="DIR", help="the folder holding one subfolder per tracker")
    sc.add_argument("--dataset", required=True, metavar="DIR", help="the dataset folder (as for evaluate)")
    sc.add_argument("--format", default="auto", choices=["auto", "otb", "lasot", "got10k"],
                    help="the dataset layout and protocol (default: %(default)s: detected)")
    sc.add_argument("--tracker", dest="trackers", default=None, metavar="A,B,...",
                    help="score only these tracker folders (default: all)")
    sc.add_argument("-o", "--output", default=None, metavar="DIR", help="write the report into this folder")
    _overwrite_option(sc)

    md = sub.add_parser("make-dataset", help="write a generated tracking benchmark in an official layout (no download)",
                        description="Render synthetic tracking sequences (objects cut from scikit-image's photographs "
                                    "moving over photographic backgrounds, with exact ground truth; the held-out "
                                    "split uses photographs never seen in training) and write them as a dataset in "
                                    "the OTB (default), LaSOT or GOT-10k layout, with per-sequence attributes, for "
                                    "'spikedeploy evaluate'. Written atomically.")
    md.add_argument("-o", "--output", required=True, metavar="DIR", help="the dataset folder to write")
    md.add_argument("--format", default=None, choices=["otb", "lasot", "got10k", "fe108"],
                    help="layout (default: otb; with --events fe108, spikedeploy's FE108-style event layout)")
    md.add_argument("--events", action="store_true",
                    help="write event sequences instead: the generated sequences recorded by the event-camera "
                         "simulator, as <seq>/events.aedat4 + groundtruth_rect.txt + frame_times.txt (for 'spikedeploy "
                         "track --events' and 'spikedeploy evaluate --format fe108')")
    md.add_argument("--event-format", default="aedat4", choices=["aedat4", "npz", "hdf5"],
                    help="--events: the events file (default: %(default)s)")
    md.add_argument("--fps", type=float, default=30.0,
                    help="--events: annotated frames per second of the simulated recording (default: %(default)s)")
    md.add_argument("--difficulty", type=float, default=None, metavar="X",
                    help="--events: difficulty in [0, 1] of the generated sequences (scale change, distractors, "
                         "occlusion, camera pan; the pan floods the background with events) (default: 0.3, the "
                         "bundled event tracker's held-out evaluation)")
    md.add_argument("--sequences", type=int, default=12, metavar="N", help="number of sequences (default: %(default)s)")
    md.add_argument("--frames", type=int, default=60, metavar="N", help="frames per sequence (default: %(default)s)")
    md.add_argument("--first-seed", type=int, default=0, metavar="S",
                    help="seed of the first sequence; sequence i is seed S+i (default: %(default)s)")
    md.add_argument("--split", default="heldout", choices=["heldout", "train"],
                    help="photographs: heldout (never used in training) or train (default: %(default)s)")
    md.add_argument("--image-format", default=None, choices=["jpg", "png"],
                    help="frame files: jpg (quality 95, as the benchmarks) or png (lossless: the frames exactly as "
                         "generated) (default: %(default)s)")
    _overwrite_option(md)

    tr = sub.add_parser("train", help="train the small SpikeTrack tracker on generated sequences, then evaluate it",
                        description="Train a SpikeTrack variant (the tiny128 ones fit a CPU) with integer activations "
                                    "on synthetic tracking sequences made from scikit-image's photographs "
                                    "(deterministic with --seed), then evaluate the integer tracker on held-out "
                                    "sequences (OTB success AUC, precision at 20 px, the static-box baseline). "
                                    "Writes the weights ({'net': state_dict}, official layout), loss curves (CSV, "
                                    "PNG), the training config and the evaluation (JSON, PNG).")
    from spikedeploy.video.training import add_train_arguments

    add_train_arguments(tr)

    cl = sub.add_parser("classify", help="classify video clips by motion with the trained tiny SpikeVideoFormer on "
                                         "several targets",
                        description="Classify clips (a clip folder with labels.csv, a folder of clips, a folder of "
                                    "frames or one .npy/GIF clip) with spikevideoformer-tiny on each target (torch, "
                                    "reference = the folded graph in binary spikes, onnx, lava) and write "
                                    "report.md/.json/.html with the class per clip and target, each target's agreement "
                                    "with the reference and, with labels, top-1 accuracy (chance beside it) and "
                                    "confusion matrices. Frames: -T evenly spaced frames per clip, centre square crop, "
                                    "bilinear resize to 64 x 64.")
    cl.add_argument("--video", required=True, metavar="FILE|DIR", help="a clip file or a clip folder")
    cl.add_argument("--labels", default=None, metavar="CSV",
                    help="labels file 'file,label[,class]' naming the clips (replaces a clip folder's labels.csv)")
    cl.add_argument("--target", "--targets", dest="targets", default="torch,reference,onnx",
                    help="comma-separated targets from torch, reference, onnx, lava (default: %(default)s)")
    cl.add_argument("-T", "--frames", type=int, default=8, help="frames per clip (default: %(default)s, as trained)")
    cl.add_argument("--checkpoint", default="bundled",
                    help="the weights: 'bundled' (trained by this project), 'random' (random weights that fire) or a "
                         "checkpoint file {'net': state_dict} (default: %(default)s)")
    cl.add_argument("--seed", type=int, default=0, help="seed of --checkpoint random (default: %(default)s)")
    cl.add_argument("-o", "--output", required=True, help="report folder")
    cl.add_argument("--no-progress", action="store_true", help="no progress bar")
    _overwrite_option(cl)

    i = sub.add_parser("inspect", help="print the IR graph of a model before and after the passes",
                       description="Capture the model and print its IR graph, then the graph after BatchNorm "
                                   "folding and chain fusion (and spike expansion with --encoding).")
    _model_options(i)
    i.add_argument("--encoding", choices=["binary", "graded"], default=None,
                   help="also lower the graph to this spike encoding")

    bu = sub.add_parser("budget", help="hardware budget of a Lava bundle: neurons, synapses, memory, Loihi 2 "
                                       "neurocores and chips",
                        description="Count per layer of a Lava bundle (its IR graph) the neurons, the unrolled synapses "
                                    "that feed them, the synaptic memory and neuron state in bits, and the neurocores "
                                    "the layer needs under the chip's per-core limits; then the chips for the network. "
                                    "Every constant is printed with its source and whether it could be confirmed "
                                    "(rules: spikedeploy/hardware.py). A layer that cannot be placed is an error "
                                    "naming it (exit code 2).")
    bu.add_argument("bundle", help="a Lava bundle directory written by 'spikedeploy export --target lava'")
    bu.add_argument("--profile", default="loihi2",
                    help="hardware profile: loihi2 (Intel Loihi 2: 128 neurocores per chip, 8192 neurons and 192 KB "
                         "per core, 8-bit weights, 24-bit state) (default: %(default)s)")
    bu.add_argument("-o", "--output", default=None, metavar="FILE",
                    help="write the report to FILE (atomically; it must not exist unless --overwrite) and print a "
                         "summary; without it the report is printed")
    bu.add_argument("--format", choices=["md", "json", "html"], default=None, dest="fmt",
                    help="report format: md (Markdown), json or html (default: from the --output suffix, .json or "
                         ".html, else md)")
    _overwrite_option(bu, "replace an existing --output file")

    d = sub.add_parser("demo", help="the main job: the bundled trained tracker exported, verified, audited and "
                                    "tracking the bundled clip in Lava and onnxruntime",
                       description="On the bundled trained SpikeTrack tracker (spiketrack-tiny128-t1) and the bundled "
                                   "clip: export both branches to ONNX, NIR and Lava; verify the search branch's "
                                   "lowering (binary and graded spikes, ONNX and NIR targets) on crops of the clip; "
                                   "audit its measured SynOps; track the clip with the PyTorch integer model, the "
                                   "reference (graded spikes), onnxruntime and Lava's CPU simulator (graded spikes) "
                                   "and compare boxes and spike counts frame by frame; verify every neuron type on "
                                   "the test model. Writes index.html linking every report; exit code 1 if a check "
                                   "fails.")
    d.add_argument("-o", "--output", default="out/demo", help="output directory, written atomically "
                                                               "(default: %(default)s)")
    _overwrite_option(d)
    d.add_argument("--lava-frames", type=int, default=None, metavar="N",
                   help="track only the first N frames in Lava's simulator, counting the first (default: the "
                        "whole clip)")
    d.add_argument("--frames", type=int, default=None, dest="num_frames", metavar="N",
                   help="track only the first N frames of the bundled clip (default: all)")
    d.add_argument("--no-lava", action="store_true", help="leave Lava out of the tracking (it is still exported)")
    d.add_argument("--neuron-inputs", type=int, default=32,
                   help="random inputs per neuron type in the neuron-type verification (default: %(default)s)")
    d.add_argument("--no-progress", action="store_true", help="do not show progress bars")
    return p


def _model_kwargs(args) -> dict:
    return dict(
        model=args.model, neuron=args.neuron, timesteps=args.timesteps, checkpoint=args.checkpoint,
        checkpoint_key=args.checkpoint_key, seed=args.seed, input_shape=args.input_shape,
        model_kwargs=dict(args.model_arg), max_memory=args.max_memory,
    )


def _cmd_verify(args) -> int:
    from spikedeploy import api

    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    report = api.verify(
        **_model_kwargs(args), num_inputs=args.num_inputs, input_file=args.input_file, modes=modes,
        dtype=args.dtype, output=args.output, progress=not args.no_progress, targets=targets,
        target_inputs=args.target_inputs, overwrite=args.overwrite,
        precision=args.precision, weight_bits=args.weight_bits, calibration=args.calibration,
    )
    for s in report.stages:
        print(f"{s.name:<10} {api.stage_result(s).strip('*')}  {s.description}")
        if s.name.startswith("fixed-"):
            t = s.report.totals()
            print(f"{'':<10} q mismatches teacher-forced {100 * t['mismatch_rate_tf']:.3f} %, free-running "
                  f"{100 * t['mismatch_rate_free']:.3f} %; saturation events {t['saturated']:,}; "
                  + "; ".join(f"output {o.name} max |error| {o.max_abs_error:.3e} ({100 * o.relative_error:.2f} %)"
                              for o in s.report.outputs))
    print(f"report: {Path(args.output) / 'report.html'}")
    return 0 if report.passed else 1


def _cmd_export(args) -> int:
    from spikedeploy import api

    res = api.export(**_model_kwargs(args), target=args.target, output=args.output, encoding=args.spike_encoding,
                     overwrite=args.overwrite, partitions=args.partitions, nir_profile=args.nir_profile,
                     check_peers=args.check_peers, precision=args.precision, weight_bits=args.weight_bits,
                     calibration=args.calibration, num_inputs=args.num_inputs)
    fixed = f", fixed point: {res.weight_bits}-bit weights, calibrated on {res.calibration}" if res.weight_bits else ""
    print(f"exported {res.neuron_layers} neuron layers ({res.nodes} IR nodes, {res.encoding}{fixed}) to {res.target}: "
          f"{res.path} in {res.seconds:.1f} s")
    if res.peers is not None:
        from spikedeploy.exporters.nir_peers import table

        print(table(res.peers))
    return 0


def _cmd_run(args) -> int:
    import io

    import numpy as np

    from spikedeploy import api
    from spikedeploy.fsutil import atomic_write_bytes, check_output_file

    if args.output:
        check_output_file(args.output, "outputs", overwrite=args.overwrite, inputs=(args.artifact, args.input_file))
    if args.precision is not None:  # before any file is read
        api.check_precision(args.precision, targets=(args.target,))
    x = api.load_input_file(args.input_file)
    result = api.run_artifact(args.target, args.artifact, x, progress=not args.no_progress, max_memory=args.max_memory,
                              partitions=args.partitions, precision=args.precision)
    print(f"{result.target} ({result.encoding}{', fixed point' if result.precision == 'fixed' else ''}): "
          f"{x.shape[1]} input(s), T = {x.shape[0]}")
    info = result.info or {}
    if "processes" in info and "time_steps" in info:
        print(f"  {info['processes']} processes, {info['time_steps']} time steps, "
              f"{info.get('lava_time_s', float('nan')):.1f} s in the simulator "
              f"({info.get('wall_time_s', float('nan')):.1f} s in all)")
        if "partitions" in info:
            print(f"  placement {info['partitions']}: {info['lava_processes']} Lava processes, "
                  f"{info['os_processes']} OS processes, {info['lava_steps_per_frame']:g} Lava steps per frame")
        phases = info.get("lava_phase_s")
        if phases:
            print("  simulator phases (s): " + ", ".join(f"{k} {v:.1f}" for k, v in phases.items()))
    for name, q in result.spike_counts.items():
        print(f"  {name:<40} {int(q.sum()):>10} unit spikes   mean q {float(q.double().mean()):.4f}")
    for name, y in result.outputs.items():
        print(f"  output {name}: shape {list(y.shape)}")
    if result.integer_outputs is not None:
        print("  fixed point: output/<name> holds the real values decoded from the integers the target computed "
              "(spikedeploy.passes.quantize.decode_outputs: integer x 2^-exponent, exact); integer_output/<name> "
              "holds the integers")
    if args.output:
        buf = io.BytesIO()
        arrays = {f"output/{k}": v.detach().cpu().numpy() for k, v in result.outputs.items()}
        arrays.update({f"integer_output/{k}": v.detach().cpu().numpy() for k, v in (result.integer_outputs or {}).items()})
        arrays.update({f"spikes/{k}": v.detach().cpu().numpy() for k, v in result.spike_counts.items()})
        np.savez(buf, **arrays)
        atomic_write_bytes(args.output, buf.getvalue(), replace=args.overwrite)
        print(f"wrote {args.output}")
    return 0


def _cmd_audit(args) -> int:
    from spikedeploy.audit import audit, audit_artifact
    from spikedeploy.errors import ConfigError

    if args.artifact is not None:
        if args.target is None:
            raise ConfigError("--artifact needs --target lava|nir")
        if args.weight_bits is not None or args.calibration is not None:
            raise ConfigError("--weight-bits and --calibration do not apply to --artifact: the artifact is "
                              "quantized already (export it again to change them)")
        report = audit_artifact(args.target, args.artifact, num_inputs=args.num_inputs, seed=args.seed,
                                input_file=args.input_file, profile=args.energy, output=args.output,
                                overwrite=args.overwrite, precision=args.precision)
    else:
        report = audit(**_model_kwargs(args), num_inputs=args.num_inputs, input_file=args.input_file,
                       encoding=args.encoding, profile=args.energy, output=args.output, runtime=args.runtime,
                       overwrite=args.overwrite, precision=args.precision or "float", weight_bits=args.weight_bits,
                       calibration=args.calibration)
    t = report.totals["per_frame"]
    fixed = f", fixed point ({report.fixed_point['weight_bits']}-bit weights)" if report.precision == "fixed" else ""
    print(f"{report.model}: {report.runtime} run, {report.encoding} spikes{fixed}, energy profile {report.profile.name}")
    print(f"per frame: measured SynOps {t['measured_synops']:,.0f}, papers' estimate {t['theoretical_ops']:,.0f} "
          f"(ratio {t['ratio']:.3f}), host MACs {t['host_macs']:,.0f}")
    a = getattr(report, "adaptive", None)
    if a:
        print(f"DI-LIF ({len(a['layers'])} layers): {a['synops_per_frame']:,.0f} SynOps against "
              f"{a['fixed_synops_per_frame']:,.0f} with D fixed at D_init (ratio "
              f"{a['synops_per_frame'] / max(a['fixed_synops_per_frame'], 1):.3f}); D per layer and step in the report")
    print(f"report: {Path(args.output) / 'report.html'}")
    return 0


def _print_track_runs(report, output) -> None:
    """The per-target lines of a track report (RGB or event): frames, time, scores, agreement, notes."""
    from spikedeploy.tracking.run import spike_summary

    for t, r in report.runs.items():
        s = report.scores.get(t)
        score = ("; " + ", ".join(f"{k} {v:.3f}" for k, v in s["headline"].items())
                 + f" over {s['frames']} frames ({report.protocol})") if s else ""
        print(f"  {t:<18} {r.frames:>4} frames, {r.seconds_per_frame * 1e3:8.1f} ms per frame{score}")
    for t, a in report.agreement.items():
        spikes = f", spike counts {spike_summary(a)}" if spike_summary(a) else ""
        print(f"  {t} vs {report.primary}: min IoU {a['min_iou']:.6f} over {a['frames']} frames, boxes "
              f"{'identical' if a['all_boxes_identical'] else 'differ'}{spikes}")
    for note in report.notes:
        print(f"  note: {note}")
    print(f"report: {Path(output) / 'report.html'}")


def _cmd_track(args) -> int:
    from spikedeploy import api
    from spikedeploy.errors import ConfigError
    from spikedeploy.tracking.run import canonical_target

    if args.init_box is not None and len(args.init_box) != 4:
        raise ConfigError(f"--init-box needs X,Y,W,H, got {len(args.init_box)} numbers")
    if (args.clip is None) == (args.events is None):
        raise ConfigError("track: give the frames (--clip) or an event recording (--events), one of them")
    if args.events is not None:
        return _track_events(args)
    for given, what in ((args.frame_times, "--frame-times"), (args.sensor_size, "--sensor-size"),
                        (args.format != "auto" or None, "--format")):
        if given is not None:
            raise ConfigError(f"{what} applies to event tracking only (--events)")
    args.model = args.model or "spiketrack-tiny128-t1"
    targets = [canonical_target(t.strip()) for t in args.targets.split(",") if t.strip()]
    limits = {}
    for n, what in ((args.max_frames, "--max-frames"), (args.lava_frames, "--lava-frames")):
        if n is not None and n < 1:
            raise ConfigError(f"{what} must be at least 1, got {n}")
    for t in targets:
        n = [v for v in (args.max_frames, args.lava_frames if t.startswith("lava") else None) if v is not None]
        if n:
            limits[t] = min(n)
    report = api.track(args.model, clip=args.clip, init_box=args.init_box, targets=targets,
                       checkpoint=args.checkpoint, ground_truth=args.ground_truth, preset=args.preset,
                       seed=args.seed, frame_limits=limits, output=args.output, gif=not args.no_gif,
                       progress=not args.no_progress, overwrite=args.overwrite, partitions=args.partitions,
                       weight_bits=args.weight_bits, protocol=args.protocol)
    print(f"{report.model} ({report.weights}) on {report.num_frames} frames of {report.clip}")
    _print_track_runs(report, args.output)
    return 0


def _track_events(args) -> int:
    from spikedeploy.errors import ConfigError
    from spikedeploy.tracking.event_run import canonical_event_target, track_events

    if args.preset != "default":
        raise ConfigError("--preset applies to the RGB tracker's template updates; the event tracker keeps its "
                          "first template")
    if args.weight_bits != 8:
        raise ConfigError("--weight-bits applies to the fixed-point targets, which are not event targets")
    if args.partitions is not None:
        raise ConfigError("--partitions is not available for event tracking")
    if args.sensor_size is not None and len(args.sensor_size) != 2:
        raise ConfigError(f"--sensor-size needs W,H, got {len(args.sensor_size)} numbers")
    targets = [canonical_event_target(t.strip()) for t in args.targets.split(",") if t.strip()]
    limits = {}
    for n, what in ((args.max_frames, "--max-frames"), (args.lava_frames, "--lava-frames")):
        if n is not None and n < 2:
            raise ConfigError(f"{what} must be at least 2 with --events (the first frame is the initial box), got {n}")
    for t in targets:
        n = [v for v in (args.max_frames, args.lava_frames if t.startswith("lava") else None) if v is not None]
        if n:
            limits[t] = min(n)
    report = track_events(args.model, events=args.events, frame_times=args.frame_times, init_box=args.init_box,
                          ground_truth=args.ground_truth, targets=targets, checkpoint=args.checkpoint, seed=args.seed,
                          frame_limits=limits, output=args.output, gif=not args.no_gif, progress=not args.no_progress,
                          overwrite=args.overwrite, protocol=args.protocol, format=args.format,
                          sensor_size=tuple(args.sensor_size) if args.sensor_size else None)
    print(f"{report.model} ({report.weights}) on {report.num_frames} event frames of {report.clip} "
          f"(sensor {report.sensor_size[0]} x {report.sensor_size[1]}, {sum(report.events_per_frame[1:])} events)")
    _print_track_runs(report, args.output)
    return 0


def _targets(text: str) -> List[str]:
    from spikedeploy.tracking.run import canonical_target

    return [canonical_target(t.strip()) for t in text.split(",") if t.strip()]


def _cmd_evaluate(args) -> int:
    from spikedeploy import api
    from spikedeploy.errors import ConfigError

    limits = {}
    for k, v in args.max_sequences:
        try:
            limits[k] = int(v)
        except ValueError:
            raise ConfigError(f"--max-sequences {k}={v}: N must be an integer") from None
    seqs = [s.strip() for s in args.sequences.split(",") if s.strip()] if args.sequences else None
    rep = api.evaluate(args.dataset, format=args.format, model=args.model, checkpoint=args.checkpoint,
                       targets=_targets(args.targets), max_sequences=limits, sequences=seqs, workers=args.workers,
                       address=args.address, weight_bits=args.weight_bits, partitions=args.partitions,
                       preset=args.preset, seed=args.seed, output=args.output, overwrite=args.overwrite,
                       progress=not args.no_progress)
    _print_scores(rep)
    print(f"report: {Path(args.output) / 'report.html'}")
    return 0 if rep.passed else 1


def _print_scores(rep) -> None:
    print(f"{len(rep.sequences)} sequences of {rep.dataset} ({rep.format}); protocol {rep.protocol}")
    for tr in rep.trackers:
        s = rep.scores.get(tr)
        head = ", ".join(f"{k} {v:.3f}" for k, v in s["headline"].items()) + f" over {s['frames']} frames" if s else "no scores"
        fps = rep.fps.get(tr)
        fails = len(rep.failed.get(tr, {}))
        print(f"  {tr:<36} {len(rep.tracked.get(tr, [])):>4} sequences, {head}"
              + (f", {fps:.2f} fps" if fps else "") + (f", {fails} FAILED" if fails else ""))
    for tr, err in ((tr, e) for tr, v in rep.failed.items() for e in list(v.items())[:3]):
        print(f"  failed: {tr} {err[0]}: {err[1]}")
    for note in rep.notes:
        print(f"  note: {note}")


def _cmd_score(args) -> int:
    from spikedeploy import api

    trackers = [t.strip() for t in args.trackers.split(",") if t.strip()] if args.trackers else None
    rep = api.score(args.results, args.dataset, format=args.format, trackers=trackers, output=args.output,
                    overwrite=args.overwrite)
    _print_scores(rep)
    if args.output:
        print(f"report: {Path(args.output) / 'report.html'}")
    return 0


def _cmd_make_dataset(args) -> int:
    from spikedeploy import api
    from spikedeploy.errors import ConfigError

    for v, what in ((args.sequences, "--sequences"), (args.frames, "--frames")):
        if v < 1 if what == "--sequences" else v < 2:
            raise ConfigError(f"{what} must be at least {1 if what == '--sequences' else 2}, got {v}")
    if args.events:
        from spikedeploy.tracking.event_datasets import make_event_dataset

        if args.format not in (None, "fe108"):
            raise ConfigError(f"--events writes spikedeploy's FE108-style event layout, not {args.format}")
        if args.image_format is not None:
            raise ConfigError("--image-format applies to frame datasets; event datasets hold no images")
    elif args.difficulty is not None:
        raise ConfigError("--difficulty applies to event datasets (--events); frame datasets are generated at "
                          "full difficulty, as the held-out evaluation")
    if args.events:
        ds = make_event_dataset(args.output, count=args.sequences, num_frames=args.frames, first_seed=args.first_seed,
                                fps=args.fps, split=args.split, event_format=args.event_format,
                                overwrite=args.overwrite, progress=True,
                                **({} if args.difficulty is None else {"difficulty": args.difficulty}))
        print(f"{len(ds)} event sequences of {args.frames} annotated frames in the fe108 layout: {args.output}")
        return 0
    if args.format == "fe108":
        raise ConfigError("--format fe108 is an event layout; add --events")
    if args.event_format != "aedat4" or args.fps != 30.0:
        raise ConfigError("--event-format and --fps apply to event datasets only (--events)")
    args.format = args.format or "otb"
    args.image_format = args.image_format or "jpg"
    ds = api.make_dataset(args.output, format=args.format, count=args.sequences, num_frames=args.frames,
                          first_seed=args.first_seed, split=args.split, image_format=args.image_format,
                          overwrite=args.overwrite, progress=True)
    print(f"{len(ds)} sequences of {args.frames} frames in the {ds.format} layout: {args.output}")
    return 0


def _cmd_train(args) -> int:
    if str(args.model).strip().lower() == "spikevideoformer-tiny":
        from spikedeploy.video.training import run_train as run_video_train

        run_video_train(args)
        return 0
    if args.eval_clips is not None:
        from spikedeploy.errors import ConfigError

        raise ConfigError("train: --eval-clips applies to spikevideoformer-tiny only; trackers use --eval-sequences")
    from spikedeploy.tracking.event_training import run_train

    run_train(args)
    return 0


def _cmd_classify(args) -> int:
    from spikedeploy.video.classify import classify

    report = classify(args.video, labels=args.labels, targets=args.targets, frames=args.frames,
                      checkpoint=args.checkpoint, seed=args.seed, output=args.output, overwrite=args.overwrite,
                      progress=not args.no_progress)
    n = len(report.clips)
    print(f"{report.model} ({report.weights}) on {n} clip{'s' if n != 1 else ''} of {report.frames} frames")
    for s in report.targets:
        if s.status == "refused":
            print(f"  {s.target}: refused: {s.error}")
            continue
        acc = (f"top-1 {100 * s.top1:.1f} % ({s.correct}/{n}; chance {100 * report.chance:.1f} %)"
               if s.top1 is not None else "no labels")
        agree = ("" if s.target == "reference" else
                 f"; vs reference: same class {s.same_class}/{n}, identical logits {s.identical_logits}/{n}, "
                 f"spike mismatches {s.spike_mismatches}")
        print(f"  {s.target}: {acc}{agree}")
    print(f"report: {args.output}")
    return 0


def _cmd_inspect(args) -> int:
    from spikedeploy import api

    print(api.inspect(**_model_kwargs(args), encoding=args.encoding))
    return 0


def _cmd_demo(args) -> int:
    from spikedeploy import api

    from spikedeploy.errors import ConfigError

    for v, what in ((args.lava_frames, "--lava-frames"), (args.num_frames, "--frames")):
        if v is not None and v < 1:
            raise ConfigError(f"{what} must be at least 1, got {v}")
    return api.demo(output=args.output, lava_frames=args.lava_frames, num_frames=args.num_frames,
                    neuron_inputs=args.neuron_inputs, progress=not args.no_progress, lava=not args.no_lava,
                    overwrite=args.overwrite)


COMMANDS = {
    "verify": _cmd_verify, "export": _cmd_export, "run": _cmd_run, "audit": _cmd_audit, "track": _cmd_track,
    "inspect": _cmd_inspect, "demo": _cmd_demo, "train": _cmd_train, "evaluate": _cmd_evaluate,
    "score": _cmd_score, "make-dataset": _cmd_make_dataset, "classify": _cmd_classify,
}


def _cmd_budget(args) -> int:
    from spikedeploy import api

    report = api.budget(args.bundle, profile=args.profile, output=args.output, fmt=args.fmt,
                        overwrite=args.overwrite)
    if args.output is None:
        print(report.render(args.fmt or "md"), end="")
        return 0
    for line in report.summary_lines() + report.constant_lines():
        print(line)
    print(f"report: {args.output}")
    return 0


COMMANDS["budget"] = _cmd_budget


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread so that every ``finally`` and cleanup runs (temporary
    outputs removed, Lava runtimes stopped) exactly as for Ctrl-C."""


def _on_sigterm(signum, frame):
    raise Terminated()


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def main(argv: Optional[List[str]] = None) -> int:
    previous = None
    if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
        try:
            previous = signal.signal(signal.SIGTERM, _on_sigterm)
        except ValueError:  # not the main thread (the API used from a thread): leave signals alone
            previous = None
    try:
        parser = _build_parser()  # imports torch (the train options): a signal here is handled too
        args = parser.parse_args(argv)
        return COMMANDS[args.command](args)
    except SpikedeployError as e:
        if os.environ.get("SPIKEDEPLOY_DEBUG"):
            raise
        print(f"spikedeploy: error: {_one_line(e)}", file=sys.stderr)
        return e.exit_code
    except Terminated:
        print("spikedeploy: terminated", file=sys.stderr)
        return 128 + signal.SIGTERM
    except KeyboardInterrupt:
        print("spikedeploy: interrupted", file=sys.stderr)
        return 130
    except MemoryError:
        if os.environ.get("SPIKEDEPLOY_DEBUG"):
            raise
        print("spikedeploy: error: out of memory; use a smaller input (fewer inputs, time steps or frames)",
              file=sys.stderr)
        return 2
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
