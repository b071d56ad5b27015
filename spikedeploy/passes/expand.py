"""Lower integer activations to spikes."""

from __future__ import annotations

from dataclasses import replace
from typing import Dict, List

from spikedeploy.errors import SpikedeployError
from spikedeploy.ir import ops as O
from spikedeploy.ir.graph import Graph, Node
from spikedeploy.passes.base import Pass

#: ops through which a pending constant factor passes unchanged (linear and weight-free)
_PASS_THROUGH = (O.Reshape, O.Permute, O.MeanReduce, O.AvgPool2d, O.Upsample, O.RepeatTime, O.SelectStep)


class ExpandSpikes(Pass):
    """Expand every integer activation into spikes (design notes §4).

    Each neuron gets ``encoding`` ("binary": q unit spikes in D sub-steps; "graded": one event
    carrying q) and emits the count q instead of q/norm. The factor c = 1/norm is pushed forward:

    * through routing and weight-free linear ops (reshape, permute, mean, average pooling, the
      time-axis routing RepeatTime / SelectStep, and StackSteps / Concat of equal factors);
    * into the weights of the first synapse it reaches (conv/linear: W' = c * W) or into the scale
      of a spike × spike product (attention: scale' = scale * c_q * c_k * c_v; memory write:
      scale * c_k * c_v; memory read: scale * c_q; template gate: scale * c_x, its host-computed
      weights stay real);
    * anywhere else (residual add, BatchNorm, a neuron, a concat of unequal factors, a graph output)
      a ``Scale(c)`` node is inserted on that edge: a graded accumulator, not a synapse.

    In exact arithmetic the lowered graph computes the integer graph's q values exactly.
    """

    name = "expand-spikes"

    def __init__(self, encoding: str):
        if encoding not in O.ENCODINGS:
            raise SpikedeployError(f"unknown spike encoding {encoding!r}; expected one of {O.ENCODINGS}")
        self.encoding = encoding
        self.name = f"expand-spikes[{encoding}]"

    def run(self, graph: Graph) -> Graph:
        for n in graph.neurons():
            if n.op.encoding is not None:
                raise SpikedeployError(f"neuron {n.name!r} is already lowered ({n.op.encoding})")
        factor: Dict[str, float] = {s.name: 1.0 for s in graph.inputs}
        nodes: List[Node] = []
        taken = {s.name for s in graph.inputs} | {n.name for n in graph.nodes}

        def descale(value: str) -> str:
            """Insert Scale(c) after ``value`` (once per value) and return the name to read."""
            c = factor[value]
            if c == 1.0:
                return value
            name = f"{value}.descale"
            k = 1
            while name in taken:
                name, k = f"{value}.descale{k}", k + 1
            taken.add(name)
            nodes.append(Node(name, O.Scale(factor=c), (value,), source="ExpandSpikes"))
            factor[name] = 1.0
            memo[value] = name
            return name

        memo: Dict[str, str] = {}

        def plain(value: str) -> str:
            return memo[value] if value in memo else descale(value)

        for n in graph.nodes:
            op, ins = n.op, n.inputs
            fs = [factor[i] for i in ins]
            if isinstance(op, O.NEURON_OPS):
                ins = tuple(plain(i) for i in ins)
                nodes.append(replace(n, op=replace(op, encoding=self.encoding), inputs=ins))
                factor[n.name] = 1.0 / op.norm
                continue
            if isinstance(op, _PASS_THROUGH):
                nodes.append(n)
                factor[n.name] = fs[0]
                continue
            if isinstance(op, (O.Concat, O.StackSteps)):
                if len(set(fs)) == 1:
                    nodes.append(n)
                    factor[n.name] = fs[0]
                else:
                    nodes.append(replace(n, inputs=tuple(plain(i) for i in ins)))
                    factor[n.name] = 1.0
                continue
            if isinstance(op, (O.Conv2d, O.Conv1d, O.Linear, O.GateLinear)):
                if fs[0] != 1.0:
                    op = replace(op, weight=O.as_param(op.weight * fs[0]))
                nodes.append(replace(n, op=op))
                factor[n.name] = 1.0
                continue
            if isinstance(op, (O.SpikeLinearAttention, O.MemoryWrite, O.MemoryRead)):
                scale = op.scale
                for f in fs:
                    scale *= f
                nodes.append(replace(n, op=replace(op, scale=scale)))
                factor[n.name] = 1.0
                continue
            if isinstance(op, O.TemplateGate):  # spikes x (factor absorbed), real host weights w
                nodes.append(replace(n, op=replace(op, scale=op.scale * fs[0]), inputs=(ins[0], plain(ins[1]))))
                factor[n.name] = 1.0
                continue
            nodes.append(replace(n, inputs=tuple(plain(i) for i in ins)))
            factor[n.name] = 1.0
        outputs = tuple(plain(o) for o in graph.outputs)
        return graph.replace_nodes(nodes, outputs).with_meta(encoding=self.encoding)
