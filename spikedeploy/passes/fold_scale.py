"""Fold the scale of a space-time attention into the threshold of the binary LIF that reads it."""

from __future__ import annotations

from dataclasses import replace
from typing import Dict

from spikedeploy.ir import ops as O
from spikedeploy.ir.graph import Graph
from spikedeploy.passes.base import Pass

#: a scale 1/k within this relative distance of an integer k folds into the exact threshold k * u_th
_INTEGER_RTOL = 1e-12


class FoldAttentionScale(Pass):
    """``SN(scale * Y)`` -> ``SN_2D(Y)``: an attention (:data:`~spikedeploy.ir.ops.SPACE_TIME_ATTENTION_OPS`)
    with ``scale != 1`` whose every reader is a :class:`~spikedeploy.ir.ops.BinaryLIF` (and which
    is not a graph output) gets ``scale = 1``, and each reader's threshold becomes
    ``threshold / scale``. The binary LIF is homogeneous (proof:
    :class:`~spikedeploy.models.spikevideoformer_blocks.FoldedScaleLIF`), so in exact arithmetic
    the spikes are the same; the folded graph then computes exactly (integer attention output,
    dyadic membranes), while ``scale * Y`` rounds when the scale is not a power of two.

    For ``scale = 1/k`` with k an integer (SDHA's ``1/(2d)``) the new threshold is ``k * u_th``
    exactly (k recovered from the stored float); any other scale divides the threshold once.
    Compared with a float model that multiplies by the scale, spikes can differ where a membrane
    equals the threshold exactly (the float model's rounding decides there, the folded graph is
    exact). A neuron state carried across calls scales too (``U' = U / scale``); a graph whose
    attention feeds anything else is left unchanged. The SpikeVideoFormer models are built folded
    already (``SpikeHammingAttention(scaled=False)`` + ``FoldedScaleLIF``): this pass is for other
    captured models."""

    name = "fold-attention-scale"

    def run(self, graph: Graph) -> Graph:
        consumers = graph.consumers()
        factor: Dict[str, float] = {}
        for n in graph.nodes:
            op = n.op
            if not isinstance(op, O.SPACE_TIME_ATTENTION_OPS) or op.scale == 1.0 or n.name in graph.outputs:
                continue
            readers = consumers.get(n.name, [])
            if not readers or not all(isinstance(r.op, O.BinaryLIF) for r in readers):
                continue
            k = 1.0 / op.scale
            if op.scale > 0 and abs(k - round(k)) <= _INTEGER_RTOL * abs(k):
                k = float(round(k))
            if not k > 0:
                continue  # a negative scale flips the comparison: not a threshold change
            factor[n.name] = k
        if not factor:
            return graph
        nodes = []
        for n in graph.nodes:
            if n.name in factor:
                nodes.append(replace(n, op=replace(n.op, scale=1.0)))
            elif isinstance(n.op, O.BinaryLIF) and n.inputs[0] in factor:
                nodes.append(replace(n, op=replace(n.op, threshold=n.op.threshold * factor[n.inputs[0]])))
            else:
                nodes.append(n)
        return graph.replace_nodes(nodes, graph.outputs)
