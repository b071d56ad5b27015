"""FixDynamicLimit: the same network with every DI-LIF's firing limit fixed at D_init.

DI-LIF (:class:`~spikedeploy.ir.ops.DynamicIntegerLIF`) adapts its limit per step and sample,
``D[t, b] = clamp(round(2 sigmoid(w mean(x[t, b]) + b) D_init), 1, 2 D_init)``. The comparison the
event SpikeTrack's ablation makes ("DI-LIF -> I-LIF") is the same network with ``D = D_init``
everywhere. This pass makes it: each DynamicIntegerLIF node becomes::

    IntegerLIF(d = D_init, norm = D_init, leak = the DI-LIF's leak, reset_norm = 1,
               rounding = the same, label = "I-LIF (D = D_init)", encoding = the same)

which is exactly the DI-LIF with its gate at ``w = 0, b = 0`` (``2 sigmoid(0) D_init = D_init``):
the membrane recurrence, the subtract-q reset and the 1/D_init output normalization are the
same, only the clamp differs. It applies to integer graphs and to lowered ones (a binary window
then shrinks from 2 D_init to D_init sub-steps; the consumers' 1/norm factors are unchanged since
norm stays D_init). In fixed point a :class:`~spikedeploy.ir.ops.FixedDynamicIntegerLIF` becomes the
:class:`~spikedeploy.ir.ops.FixedIntegerLIF` with ``d = D_init`` and the same unit, reset, leak and
state width (the fixed DI-LIF is that neuron with d = D[t, b]). Other nodes are kept as they are.
"""

from __future__ import annotations

from dataclasses import replace

from spikedeploy.ir import ops as O
from spikedeploy.ir.graph import Graph
from spikedeploy.passes.base import Pass

__all__ = ["FixDynamicLimit"]


class FixDynamicLimit(Pass):
    """Replace every DI-LIF by the I-LIF with D fixed at its D_init (module docstring)."""

    name = "fix-dynamic-limit"

    def run(self, graph: Graph) -> Graph:
        nodes = []
        for n in graph.nodes:
            op = n.op
            if isinstance(op, O.DynamicIntegerLIF):
                op = O.IntegerLIF(d=int(op.d_init), norm=float(op.d_init), leak=op.leak, reset_norm=1.0,
                                  rounding=op.rounding, label="I-LIF (D = D_init)", encoding=op.encoding)
                n = replace(n, op=op)
            elif isinstance(op, O.FixedDynamicIntegerLIF):
                op = O.FixedIntegerLIF(d=int(op.d_init), unit=op.unit, reset=op.reset, leak=op.leak,
                                       rounding=op.rounding, label="I-LIF (D = D_init)", encoding=op.encoding,
                                       norm=float(op.d_init), state_bits=op.state_bits)
                n = replace(n, op=op)
            nodes.append(n)
        return replace(graph, nodes=tuple(nodes))
