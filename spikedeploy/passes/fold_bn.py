"""Fold inference BatchNorm into the conv/linear layer that feeds it."""

from __future__ import annotations

from dataclasses import replace


from spikedeploy.ir import ops as O
from spikedeploy.ir.graph import Graph
from spikedeploy.passes.base import Pass, rename_inputs, single_consumer


class FoldBatchNorm(Pass):
    """``BN(conv(x))`` -> ``conv'(x)`` with, per output channel o (a = weight/sqrt(var+eps),
    b = bias - mean*a)::

        W'[o] = a[o] * W[o],     bias'[o] = a[o] * bias[o] + b[o]

    Applies to Conv2d, Conv1d (BatchNorm1d after Conv1d) and Linear on 1-D per-step values, when the
    layer's only consumer is the BatchNorm. The folded layer keeps the layer's name; readers of the
    BatchNorm are rewired to it. A BatchNorm with no foldable producer stays (the reference runs it
    as a channel affine)."""

    name = "fold-batchnorm"

    def run(self, graph: Graph) -> Graph:
        producers = graph.node_map()
        shapes = graph.shapes()
        folded = {}  # conv name -> new conv node
        drop = {}  # bn name -> conv name
        for n in graph.nodes:
            if not isinstance(n.op, O.BatchNorm):
                continue
            src = producers.get(n.inputs[0])
            if src is None or not isinstance(src.op, (O.Conv2d, O.Conv1d, O.Linear)):
                continue
            if isinstance(src.op, O.Linear) and len(shapes[src.name]) != 1:
                continue  # BN channel axis is not the Linear's output axis
            if not single_consumer(graph, src.name) or src.name in folded:
                continue
            a, b = n.op.scale_shift()
            w = src.op.weight * a.reshape((-1,) + (1,) * (src.op.weight.ndim - 1))
            bias = b if src.op.bias is None else a * src.op.bias + b
            folded[src.name] = replace(src, op=replace(src.op, weight=O.as_param(w), bias=O.as_param(bias)))
            drop[n.name] = src.name
        nodes = [folded.get(n.name, n) for n in graph.nodes if n.name not in drop]
        nodes = rename_inputs(nodes, drop)
        outputs = tuple(drop.get(o, o) for o in graph.outputs)
        return graph.replace_nodes(nodes, outputs)
