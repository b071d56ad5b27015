"""IR graphs as JSON plus named float64 arrays (no pickle), for artifacts that must carry their
graph: an op is ``{"kind": <class name>, "fields": {...}}`` where an array field is
``{"array": <key>}`` and a tuple field ``{"tuple": [...]}``; :func:`graph_to_json` returns the JSON
description and the arrays (to be stored e.g. with ``numpy.savez``), :func:`graph_from_json`
rebuilds the identical graph (same ops, parameters, names, order and metadata)."""

from __future__ import annotations

from dataclasses import fields
from typing import Callable, Dict, Tuple

import numpy as np

from spikedeploy.errors import SpikedeployError
from spikedeploy.ir import ops as O
from spikedeploy.ir.graph import Graph, Node, TensorSpec, validate


def op_to_json(op: O.Op, array: Callable[[np.ndarray], str]) -> dict:
    """JSON form of ``op``; ``array(a)`` stores an array and returns its key."""
    out = {}
    for f in fields(op):
        v = getattr(op, f.name)
        if isinstance(v, np.ndarray):
            out[f.name] = {"array": array(v)}
        elif isinstance(v, tuple):
            out[f.name] = {"tuple": list(v)}
        elif isinstance(v, np.integer):
            out[f.name] = int(v)
        elif isinstance(v, np.floating):
            out[f.name] = float(v)
        else:
            out[f.name] = v
    return {"kind": op.kind, "fields": out}


def op_from_json(d: dict, arrays: Dict[str, np.ndarray], where: str = "graph") -> O.Op:
    cls = getattr(O, d.get("kind", ""), None)
    if not (isinstance(cls, type) and issubclass(cls, O.Op)):
        raise SpikedeployError(f"{where}: unknown IR op {d.get('kind')!r}")
    kw = {}
    for k, v in d["fields"].items():
        if isinstance(v, dict) and "array" in v:
            if v["array"] not in arrays:
                raise SpikedeployError(f"{where}: array {v['array']!r} of a {d['kind']} op is missing")
            kw[k] = O.as_param(arrays[v["array"]])
        elif isinstance(v, dict) and "tuple" in v:
            kw[k] = tuple(v["tuple"])
        else:
            kw[k] = v
    try:
        return cls(**kw)
    except (TypeError, ValueError) as e:
        raise SpikedeployError(f"{where}: cannot rebuild a {d['kind']} op: {e}") from None


def meta_from_json(pairs) -> tuple:
    """Graph metadata pairs read back from JSON (JSON lists become tuples, as ``Graph.with_meta``
    stores them)."""
    return tuple((k, tuple(v) if isinstance(v, list) else v) for k, v in pairs)


def graph_to_json(graph: Graph, prefix: str = "ir/") -> Tuple[dict, Dict[str, np.ndarray]]:
    """``(description, arrays)`` for ``graph``; array keys start with ``prefix``."""
    arrays: Dict[str, np.ndarray] = {}

    def store(a: np.ndarray) -> str:
        key = f"{prefix}{len(arrays)}"
        arrays[key] = np.ascontiguousarray(a, dtype=np.float64)
        return key

    desc = {
        "inputs": [dict({"name": s.name, "shape": list(s.shape)}, **({"steps": int(s.steps)} if s.steps is not None else {}))
                   for s in graph.inputs],
        "nodes": [
            {"name": n.name, "inputs": list(n.inputs), "source": n.source, "op": op_to_json(n.op, store)}
            for n in graph.nodes
        ],
        "outputs": list(graph.outputs),
        "meta": [[k, v] for k, v in graph.meta],
    }
    return desc, arrays


def graph_from_json(desc: dict, arrays: Dict[str, np.ndarray], where: str = "graph") -> Graph:
    """The graph described by :func:`graph_to_json`'s output (validated)."""
    try:
        graph = Graph(
            inputs=tuple(TensorSpec(i["name"], tuple(int(d) for d in i["shape"]),
                                    int(i["steps"]) if i.get("steps") is not None else None)
                         for i in desc["inputs"]),
            nodes=tuple(
                Node(n["name"], op_from_json(n["op"], arrays, where), tuple(n["inputs"]), n.get("source", ""))
                for n in desc["nodes"]
            ),
            outputs=tuple(desc["outputs"]),
            meta=meta_from_json(desc.get("meta", [])),
        )
    except (KeyError, TypeError) as e:
        raise SpikedeployError(f"{where}: malformed graph description ({type(e).__name__}: {e})") from None
    validate(graph)
    return graph
