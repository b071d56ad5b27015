"""Fuse neuron-free chains of linear layers into one layer."""

from __future__ import annotations

from dataclasses import replace
from typing import Optional

import numpy as np

from spikedeploy.ir import ops as O
from spikedeploy.ir.graph import Graph, Node
from spikedeploy.passes.base import Pass, single_consumer


def _dense(w: np.ndarray, groups: int) -> np.ndarray:
    """Expand a grouped conv weight [O, I/g, *k] to the equivalent dense weight [O, I, *k]."""
    if groups == 1:
        return np.asarray(w)
    o, ig = w.shape[:2]
    out = np.zeros((o, ig * groups) + w.shape[2:])
    per = o // groups
    for g in range(groups):
        out[g * per:(g + 1) * per, g * ig:(g + 1) * ig] = w[g * per:(g + 1) * per]
    return out


def _is_pointwise(op) -> bool:
    """A 1x1 (or k=1) conv with unit stride, no padding, no dilation."""
    if isinstance(op, O.Conv2d):
        return op.weight.shape[2:] == (1, 1) and op.stride == (1, 1) and op.padding == (0, 0)
    if isinstance(op, O.Conv1d):
        return op.weight.shape[2] == 1 and op.stride == 1 and op.padding == 0
    return False


def _has_padding(op) -> bool:
    p = op.padding
    return any(p) if isinstance(p, tuple) else p != 0


def fuse_pair(a, b) -> Optional[O.Op]:
    """The single op equal to ``b(a(x))``, or None when no exact fusion exists.

    * Linear, Linear:              W = W_b W_a,  bias = W_b bias_a + bias_b
    * conv (any), pointwise conv:  W[o,c,...] = sum_m W_b[o,m] W_a[m,c,...],  bias = W_b bias_a + bias_b
    * pointwise conv, conv:        W[o,c,...] = sum_m W_b[o,m,...] W_a[m,c],  bias = bias_b +
      sum_{m,taps} W_b[o,m,taps] bias_a[m] -- only when b has no padding or bias_a is zero
      (with zero padding the border taps would not see bias_a).
    Grouped convs are expanded to dense weights first.
    """
    if isinstance(a, O.Linear) and isinstance(b, O.Linear):
        w = b.weight @ a.weight
        ba = a.bias if a.bias is not None else np.zeros(a.weight.shape[0])
        bias = b.weight @ ba + (b.bias if b.bias is not None else 0.0)
        return O.Linear(weight=O.as_param(w), bias=O.as_param(bias))
    if type(a) is not type(b) or not isinstance(a, (O.Conv2d, O.Conv1d)):
        return None
    wa, wb = _dense(a.weight, a.groups), _dense(b.weight, b.groups)
    ba = a.bias if a.bias is not None else np.zeros(wa.shape[0])
    bb = b.bias if b.bias is not None else np.zeros(wb.shape[0])
    if _is_pointwise(b):
        wb2 = wb.reshape(wb.shape[0], wb.shape[1])
        w = np.tensordot(wb2, wa, axes=([1], [0]))
        return replace(a, weight=O.as_param(w), bias=O.as_param(wb2 @ ba + bb), groups=1)
    if _is_pointwise(a):
        if _has_padding(b) and np.any(ba != 0):
            return None
        wa2 = wa.reshape(wa.shape[0], wa.shape[1])
        w = np.tensordot(wb, wa2, axes=([1], [0]))  # [O, *k, C]
        w = np.moveaxis(w, -1, 1)
        taps = tuple(range(2, wb.ndim))
        bias = bb + np.tensordot(wb.sum(axis=taps), ba, axes=([1], [0]))
        return replace(b, weight=O.as_param(w), bias=O.as_param(bias), groups=1)
    return None


class FuseLinearChains(Pass):
    """Replace ``b(a(x))`` by one layer when a and b are linear layers with no neuron between them,
    a's only reader is b, and an exact fusion exists (:func:`fuse_pair`). By default a fusion that
    would create more synapses than the two layers have together (e.g. expanding a depthwise conv
    into a dense one) is skipped, since synaptic ops are what a neuromorphic chip pays for;
    ``allow_growth=True`` fuses anyway. The fused layer takes b's name."""

    name = "fuse-linear-chains"

    def __init__(self, allow_growth: bool = False):
        self.allow_growth = allow_growth

    def run(self, graph: Graph) -> Graph:
        changed = True
        while changed:
            changed = False
            producers = graph.node_map()
            for n in graph.nodes:
                if len(n.inputs) != 1 or n.inputs[0] not in producers:
                    continue
                a = producers[n.inputs[0]]
                if not single_consumer(graph, a.name):
                    continue
                fused = fuse_pair(a.op, n.op)
                if fused is None:
                    continue
                before = a.op.weight.size + n.op.weight.size
                if not self.allow_growth and fused.weight.size > before:
                    continue
                new = Node(name=n.name, op=fused, inputs=a.inputs, source=f"{a.source} + {n.source}")
                nodes = [new if m.name == n.name else m for m in graph.nodes if m.name != a.name]
                graph = graph.replace_nodes(nodes)
                changed = True
                break
        return graph
