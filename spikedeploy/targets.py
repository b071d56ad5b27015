"""Deployment targets: the contract between the core and the backends.

Each target is one exporter module (``spikedeploy.exporters.<name>``) and one runtime module
(``spikedeploy.runtimes.<name>``):

exporter module
    ``RULES``: dict mapping IR op classes to the function that translates one node (the per-op
    rule table; an op missing from it is unsupported on that target).
    ``ENCODINGS``: the graph kinds it accepts: a subset of ("integer", "binary", "graded").
    ``export(graph, path, *, encoding) -> pathlib.Path``: write the artifact for ``graph``
    (already folded/fused; ``encoding`` says which kind: "integer" = un-lowered). Writes
    atomically (temporary path, then rename); never leaves a partial artifact. An op the target
    cannot express raises :func:`unsupported` (exit code 2, naming op, node and target).
    ``load(path) -> artifact``: re-load an artifact without the original PyTorch code.

runtime module
    ``run(artifact, x, *, progress=False) -> TargetRun``: execute on inputs ``x`` of shape
    ``[T, B, *s]``; return the graph outputs and the spike counts q ``[T, B, *s]`` of every neuron
    node it can observe (keyed by IR node name).

Targets are looked up lazily by name (importing a target's dependencies, e.g. Lava, happens only
when that target is used).

Precision: every target holds float graphs; a target whose ``TargetSpec.precisions`` lists
``"fixed"`` also holds the fixed-point form of a lowered graph (:mod:`spikedeploy.passes.quantize`):
its exporter takes the fixed graph like any lowered graph, and its runtime returns the integer
outputs (real values: :func:`spikedeploy.passes.quantize.decode_outputs`).
:func:`check_precision` refuses the others with one line naming the target and what to do.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from types import ModuleType
from typing import Dict, Optional, Tuple

import torch

from spikedeploy.errors import ConfigError, UnsupportedOpError

GRAPH_KINDS = ("integer", "binary", "graded")
#: number formats a graph can be exported in: float (the float IR) or fixed (Loihi 2 fixed point)
PRECISIONS = ("float", "fixed")


class TargetUnavailableError(ConfigError):
    """A target whose exporter/runtime (or its third-party dependency) cannot be imported."""


@dataclass(frozen=True)
class TargetRun:
    """Result of running an artifact on a target."""

    target: str
    encoding: str  #: "integer", "binary" or "graded"
    outputs: Dict[str, torch.Tensor]  #: graph output name -> [T, B, *s]
    spike_counts: Dict[str, torch.Tensor]  #: neuron node name -> q, [T, B, *s]
    info: Dict[str, object] = field(default_factory=dict)  #: e.g. simulated time steps, wall time
    #: "fixed" for a fixed-point artifact; then ``outputs`` are the decoded real values (see
    #: :func:`spikedeploy.api.run_artifact`) and ``integer_outputs`` what the target computed
    precision: str = "float"
    integer_outputs: Optional[Dict[str, torch.Tensor]] = None
    #: stateful neuron node -> its final :class:`~spikedeploy.neurons.NeuronState` after the run
    #: (targets that carry state across calls: :mod:`spikedeploy.streaming`); None otherwise
    state: Optional[Dict[str, object]] = None


@dataclass(frozen=True)
class TargetSpec:
    name: str
    exporter: str  #: module path
    runtime: str  #: module path
    description: str
    suffix: str  #: artifact file/folder suffix, e.g. ".onnx", ".nir", ".lava"
    precisions: Tuple[str, ...] = ("float",)  #: subset of PRECISIONS
    #: why the target holds no fixed-point graph (the ConfigError's reason), for float-only targets
    fixed_note: str = ""

    def exporter_module(self) -> ModuleType:
        return self._import(self.exporter)

    def runtime_module(self) -> ModuleType:
        return self._import(self.runtime)

    def _import(self, module: str) -> ModuleType:
        try:
            return importlib.import_module(module)
        except ImportError as e:
            raise TargetUnavailableError(
                f"target {self.name!r} is not available: importing {module} failed ({e}); "
                "run 'make setup' to install the pinned dependencies"
            ) from e


TARGETS: Dict[str, TargetSpec] = {}


def register_target(spec: TargetSpec) -> TargetSpec:
    if spec.name in TARGETS:
        raise ValueError(f"target {spec.name!r} is already registered")
    TARGETS[spec.name] = spec
    return spec


def get_target(name: str) -> TargetSpec:
    if name not in TARGETS:
        raise ConfigError(f"unknown target {name!r}; known targets: {', '.join(sorted(TARGETS))}")
    return TARGETS[name]


def check_precision(target: str, precision: str) -> TargetSpec:
    """The spec of ``target`` if it holds graphs in ``precision`` (``PRECISIONS``); else a one-line
    ConfigError naming the target, the reason and what to do."""
    if precision not in PRECISIONS:
        raise ConfigError(f"unknown --precision {precision!r}; expected one of {', '.join(PRECISIONS)}")
    spec = get_target(target)
    if precision not in spec.precisions:
        able = [t for t, s in sorted(TARGETS.items()) if precision in s.precisions]
        why = f": {spec.fixed_note}" if spec.fixed_note else ""
        raise ConfigError(f"target {spec.name!r} cannot hold a {precision}-point graph{why}; use --target "
                          f"{'|'.join(able)} for --precision {precision}, or --precision float")
    return spec


def unsupported(target: str, node, reason: str = "") -> UnsupportedOpError:
    """The error for an op a target cannot express (raise the returned exception)."""
    src = f" (from {node.source})" if getattr(node, "source", "") else ""
    why = f": {reason}" if reason else ""
    return UnsupportedOpError(
        f"target {target!r} cannot express op {node.op.kind} at node {node.name!r}{src}{why}"
    )


register_target(TargetSpec("onnx", "spikedeploy.exporters.onnx", "spikedeploy.runtimes.onnx",
                           "ONNX model of the integer network, run with onnxruntime", ".onnx",
                           fixed_note="it exports the integer network, and fixed point needs the graph lowered to "
                                      "spikes (FixedIntegerLIF/FixedBinaryLIF neurons)"))
register_target(TargetSpec("nir", "spikedeploy.exporters.nir", "spikedeploy.runtimes.nir",
                           "NIR graph (nir.write/nir.read), re-executed by the reference", ".nir",
                           fixed_note="NIR has no node for the fixed-point neurons FixedIntegerLIF/FixedBinaryLIF/"
                                      "FixedDynamicIntegerLIF (24-bit saturating integer state) or the Quantize host "
                                      "boundary"))
register_target(TargetSpec("lava", "spikedeploy.exporters.lava", "spikedeploy.runtimes.lava",
                           "Lava process-graph bundle, run in the CPU simulator (Loihi2SimCfg)", ".lava",
                           precisions=("float", "fixed")))
