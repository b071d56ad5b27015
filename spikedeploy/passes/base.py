"""Pass base class and pass manager."""

from __future__ import annotations

from typing import Dict, Iterable, List, Sequence

from spikedeploy.ir.graph import Graph, Node, validate


class Pass:
    """A graph-to-graph transformation. Subclasses implement :meth:`run`."""

    name = "pass"

    def run(self, graph: Graph) -> Graph:  # pragma: no cover - abstract
        raise NotImplementedError

    def apply(self, graph: Graph) -> Graph:
        validate(graph)
        out = self.run(graph)
        validate(out)
        return out

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class PassManager:
    """Apply passes in order, validating after every one; ``history`` lists the pass names."""

    def __init__(self, passes: Sequence[Pass]):
        self.passes = list(passes)

    def apply(self, graph: Graph) -> Graph:
        validate(graph)
        for p in self.passes:
            graph = p.run(graph)
            validate(graph)
            done = list(graph.meta_dict().get("passes", []))
            graph = graph.with_meta(passes=done + [p.name])
        return graph


def rename_inputs(nodes: Iterable[Node], mapping: Dict[str, str]) -> List[Node]:
    """Rewire node inputs through ``mapping`` (old value name -> new value name)."""
    from dataclasses import replace

    out = []
    for n in nodes:
        if any(i in mapping for i in n.inputs):
            n = replace(n, inputs=tuple(mapping.get(i, i) for i in n.inputs))
        out.append(n)
    return out


def single_consumer(graph: Graph, name: str) -> bool:
    """True if the value ``name`` is read by exactly one node and is not a graph output."""
    return len(graph.consumers().get(name, [])) == 1 and name not in graph.outputs
