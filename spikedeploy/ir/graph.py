"""The IR graph: named nodes in topological order, one output value per node.

A value is referred to by the name of the node that produces it, or by the name of a graph input.
Graphs are immutable; passes build new ones with :meth:`Graph.replace_nodes` or
:func:`dataclasses.replace`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Tuple

import numpy as np

from spikedeploy.errors import GraphValidationError
from spikedeploy.ir.ops import NEURON_OPS, Op, Shape


@dataclass(frozen=True)
class TensorSpec:
    """A graph input: its name and per-step shape (the value itself is ``[T, B, *shape]``).

    ``steps``: the number of macro-steps T the input must have, or None (any T). Capture fixes it
    when the graph holds time-axis ops (:data:`~spikedeploy.ir.ops.TIME_OPS`), whose outputs have
    a fixed number of steps."""

    name: str
    shape: Shape
    steps: Optional[int] = None


@dataclass(frozen=True)
class Node:
    """One op application: ``name = op(*inputs)``. ``source`` records where it came from (a module
    path or a torch function) for error messages and reports."""

    name: str
    op: Op
    inputs: Tuple[str, ...]
    source: str = ""


@dataclass(frozen=True)
class Graph:
    inputs: Tuple[TensorSpec, ...]
    nodes: Tuple[Node, ...]
    outputs: Tuple[str, ...]
    #: free-form, JSON-serializable facts (model name, T used at capture, lowering encoding, ...)
    meta: Tuple[Tuple[str, object], ...] = ()

    # -- lookup -----------------------------------------------------------------------------
    def node(self, name: str) -> Node:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(f"no node named {name!r} in the graph")

    def node_map(self) -> Dict[str, Node]:
        return {n.name: n for n in self.nodes}

    def consumers(self) -> Dict[str, List[Node]]:
        """Map value name -> nodes that read it (graph outputs are not listed)."""
        out: Dict[str, List[Node]] = {s.name: [] for s in self.inputs}
        for n in self.nodes:
            out.setdefault(n.name, [])
        for n in self.nodes:
            for i in n.inputs:
                out.setdefault(i, []).append(n)
        return out

    def neurons(self) -> List[Node]:
        return [n for n in self.nodes if isinstance(n.op, NEURON_OPS)]

    def meta_dict(self) -> Dict[str, object]:
        return dict(self.meta)

    def with_meta(self, **kv) -> "Graph":
        """A copy with metadata entries set (lists are stored as tuples: graphs are immutable)."""
        d = self.meta_dict()
        d.update({k: tuple(v) if isinstance(v, list) else v for k, v in kv.items()})
        return dataclasses.replace(self, meta=tuple(sorted(d.items())))

    def replace_nodes(self, nodes: Iterable[Node], outputs: Optional[Tuple[str, ...]] = None) -> "Graph":
        return dataclasses.replace(
            self, nodes=tuple(nodes), outputs=tuple(outputs) if outputs is not None else self.outputs
        )

    # -- shapes and checks ------------------------------------------------------------------
    def shapes(self) -> Dict[str, Shape]:
        """Per-step shape of every value (runs shape inference; raises on the first bad node)."""
        return validate(self)

    def summary(self) -> str:
        shapes = self.shapes()
        lines = ["inputs: " + ", ".join(f"{s.name}{list(s.shape)}" for s in self.inputs)]
        for n in self.nodes:
            lines.append(f"  {n.name:<40} {n.op.kind:<20} {list(shapes[n.name])} <- {', '.join(n.inputs)}")
        lines.append("outputs: " + ", ".join(self.outputs))
        return "\n".join(lines)


def value_steps(graph: Graph, T: Optional[int] = None) -> Dict[str, Optional[int]]:
    """The number of macro-steps of every value (per-op ``infer_steps``). Inputs have their fixed
    ``steps``, else ``T`` (None: symbolic, "the graph input's T"). Most values have the input's
    T; time-axis ops (RepeatTime, SelectStep, StackSteps, TemplateGate) give fixed counts.
    Raises :class:`GraphValidationError` naming the node."""
    steps: Dict[str, Optional[int]] = {}
    for spec in graph.inputs:
        n = spec.steps if spec.steps is not None else T
        if spec.steps is not None and T is not None and int(T) != int(spec.steps):
            raise GraphValidationError(
                f"graph input {spec.name!r} has a fixed number of macro-steps {spec.steps}, not T={T}"
            )
        steps[spec.name] = None if n is None else int(n)
    for n in graph.nodes:
        try:
            steps[n.name] = n.op.infer_steps(*(steps[i] for i in n.inputs))
        except ValueError as e:
            where = f"node {n.name!r} ({n.op.kind}{', from ' + n.source if n.source else ''})"
            raise GraphValidationError(f"{where}: {e}") from None
        except KeyError:
            raise GraphValidationError(f"node {n.name!r} reads an unknown value") from None
    return steps


def validate(graph: Graph) -> Dict[str, Shape]:
    """Check every invariant of ``graph`` and return the per-step shape of each value.

    Invariants: unique names; each node reads only graph inputs or earlier nodes (so the node order
    is topological and there are no cycles); the op's arity; shape inference succeeds; every array
    parameter is finite; outputs exist. Errors name the node and its source.
    """
    shapes: Dict[str, Shape] = {}
    for spec in graph.inputs:
        if spec.name in shapes:
            raise GraphValidationError(f"duplicate graph input name {spec.name!r}")
        if not all(isinstance(d, int) and d > 0 for d in spec.shape):
            raise GraphValidationError(f"graph input {spec.name!r} has a bad shape {spec.shape}")
        if spec.steps is not None and (isinstance(spec.steps, bool) or not isinstance(spec.steps, int)
                                       or spec.steps < 1):
            raise GraphValidationError(f"graph input {spec.name!r} has a bad number of macro-steps {spec.steps!r}")
        shapes[spec.name] = tuple(spec.shape)
    for n in graph.nodes:
        if not isinstance(n.op, Op):
            raise GraphValidationError(f"node {n.name!r}: op is not an IR op: {n.op!r}")
        where = f"node {n.name!r} ({n.op.kind}{', from ' + n.source if n.source else ''})"
        if n.name in shapes:
            raise GraphValidationError(f"{where}: name already used by an earlier value")
        arity = type(n.op).arity
        if (arity is None and not n.inputs) or (arity is not None and len(n.inputs) != arity):
            raise GraphValidationError(f"{where}: expects {arity or '>= 1'} inputs, has {len(n.inputs)}")
        for i in n.inputs:
            if i not in shapes:
                raise GraphValidationError(
                    f"{where}: reads {i!r}, which is not a graph input or an earlier node"
                )
        for pname, arr in n.op.arrays().items():
            bad = int(np.size(arr) - np.isfinite(arr).sum())
            if bad:
                raise GraphValidationError(
                    f"{where}: parameter {pname!r} has {bad} non-finite value(s) (NaN/Inf); "
                    "check the checkpoint or training run that produced it"
                )
        try:
            shapes[n.name] = tuple(int(d) for d in n.op.infer_shape(*(shapes[i] for i in n.inputs)))
        except ValueError as e:
            raise GraphValidationError(f"{where}: {e}") from None
    value_steps(graph)
    if not graph.outputs:
        raise GraphValidationError("graph has no outputs")
    for o in graph.outputs:
        if o not in shapes:
            raise GraphValidationError(f"graph output {o!r} is not produced by any node")
    return shapes


def numel(shape: Shape) -> int:
    return int(math.prod(shape))
