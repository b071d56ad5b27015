"""The Lava bundle format: what :mod:`spikedeploy.exporters.lava` writes and the runtime reads.

A bundle is a directory of pure data, no pickle: ``graph.json`` (the process-graph description:
``format``, ``version``, ``target``, ``encoding``, ``period``, ``slots``, ``end_step``, ``inputs``,
``host``, ``processes``, ``connections``, ``fusion``, ``neurons``, ``outputs``, ``placement``, the
lowered IR graph ``ir``, ...) and ``arrays.npz`` (every array a field names by key). It re-loads
and runs without any PyTorch model code. The compile rules that make the description are in
:mod:`spikedeploy.exporters.lava`, its schema checks in :mod:`spikedeploy.exporters.lava_validate`,
the placement field in :mod:`spikedeploy.exporters.lava_placement`.

This module holds the format alone: its constants (:data:`FORMAT`, :data:`VERSION`, the versions
:func:`load` reads), :class:`LavaBundle`, :func:`save`/:func:`load` and :func:`with_memory` (a
bundle with new template memories, without compiling again). It imports no compiler and no Lava.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional

import numpy as np

from spikedeploy.errors import OutputPathError, SpikedeployError
from spikedeploy.fsutil import atomic_directory, check_output_dir
from spikedeploy.ir.graph import Graph, Node, TensorSpec
from spikedeploy.ir.serialize import graph_from_json, op_from_json

__all__ = ["TARGET", "ENCODINGS", "FORMAT", "VERSION", "READ_VERSIONS", "GRAPH_FILE", "ARRAYS_FILE", "LavaBundle",
           "check_destination", "save", "load", "with_memory"]

TARGET = "lava"
#: the spike encodings a bundle is compiled for (``description["encoding"]``)
ENCODINGS = ("binary", "graded")
FORMAT = "spikedeploy-lava-bundle"
VERSION = 2
#: bundle versions :func:`load` reads (1: no fusion fields)
READ_VERSIONS = (1, 2)
GRAPH_FILE = "graph.json"
ARRAYS_FILE = "arrays.npz"
#: the description fields :func:`load` requires before the schema validation
REQUIRED_FIELDS = ("encoding", "period", "end_step", "inputs", "host", "processes", "connections", "neurons",
                   "outputs")


@dataclass(frozen=True)
class LavaBundle:
    """A loaded Lava bundle: the process-graph description and its arrays."""

    path: Optional[Path]
    description: dict
    arrays: Dict[str, np.ndarray]

    @property
    def encoding(self) -> str:
        return self.description["encoding"]

    def array(self, key: str) -> np.ndarray:
        if key not in self.arrays:
            raise SpikedeployError(f"Lava bundle {self.path}: array {key!r} is missing from {ARRAYS_FILE}")
        return self.arrays[key]

    @property
    def graph(self) -> Graph:
        """The lowered IR graph the bundle was compiled from."""
        if "ir" not in self.description:
            raise SpikedeployError(f"Lava bundle {self.path} carries no IR graph (written by an older spikedeploy)")
        return graph_from_json(self.description["ir"], self.arrays, f"Lava bundle {self.path}")

    def host_graph(self) -> Graph:
        """The host part as an IR graph (graph inputs -> every host value a device process needs)."""
        d = self.description
        nodes = tuple(
            Node(n["name"], op_from_json(n["op"], self.arrays, "Lava bundle host part"), tuple(n["inputs"]),
                 n.get("source", ""))
            for n in d["host"]["nodes"]
        )
        inputs = tuple(TensorSpec(i["name"], tuple(i["shape"]), steps=i.get("steps")) for i in d["inputs"])
        outputs = tuple(d["host"]["values"]) or (inputs[0].name,)
        return Graph(inputs=inputs, nodes=nodes, outputs=outputs)


def with_memory(bundle: LavaBundle, memory: Dict[str, np.ndarray]) -> LavaBundle:
    """``bundle`` with new memories for its ``MemoryRead`` nodes (node name -> ``[T_mem, H, C/H,
    Cv/H]``, the shape the node has; in a fixed-point bundle integer mantissas, as
    :func:`spikedeploy.passes.quantize.quantize_memory` makes them), without compiling again: a memory read is a ``memory_read``
    process that holds its memory as an array, so a new template changes that array and the IR
    graph's copy (so ``bundle.graph`` stays the graph the processes compute), nothing else: the
    result equals the bundle compiled from the graph with the new memories, array for array.
    Raises :class:`~spikedeploy.errors.InputError` for a name that is no memory read of the
    bundle, a wrong shape or values that are not finite. The input bundle is not changed."""
    from spikedeploy.errors import InputError

    desc = bundle.description
    reads = {p["node"]: p for p in desc["processes"] if p["type"] == "memory_read"}
    ir_fields = {n["name"]: n["op"]["fields"] for n in desc.get("ir", {}).get("nodes", [])
                 if n["op"]["kind"] == "MemoryRead"}
    arrays = dict(bundle.arrays)
    for node, mem in memory.items():
        if node not in reads:
            raise InputError(f"Lava bundle {bundle.path}: {node!r} is not a memory read of this bundle "
                             f"(memory reads: {', '.join(sorted(reads)) or 'none'})")
        key = reads[node]["memory"]
        new = np.ascontiguousarray(np.asarray(mem, dtype=np.float64))
        if new.shape != arrays[key].shape:
            raise InputError(f"Lava bundle {bundle.path}: memory for {node!r} has shape {list(new.shape)}, "
                             f"expected {list(arrays[key].shape)}")
        if not np.isfinite(new).all():
            raise InputError(f"Lava bundle {bundle.path}: memory for {node!r} has NaN/Inf values")
        if desc.get("precision") == "fixed" and not np.array_equal(new, np.round(new)):
            raise InputError(f"Lava bundle {bundle.path}: memory for {node!r} is not integer in a fixed-point bundle; "
                             "quantize it first (spikedeploy.passes.quantize.quantize_memory)")
        arrays[key] = new
        if node in ir_fields:
            arrays[ir_fields[node]["memory"]["array"]] = new
    return LavaBundle(path=bundle.path, description=desc, arrays=arrays)


def check_destination(path, *, overwrite: bool = False) -> Path:
    """Refuse an output ``path`` :func:`save` could not write (an existing path without
    ``overwrite``; the output-folder rules of :func:`spikedeploy.fsutil.check_output_dir`), before
    anything is compiled."""
    path = Path(path)
    if os.path.lexists(path) and not overwrite:
        raise OutputPathError(f"output {path} already exists; choose another path or pass --overwrite")
    check_output_dir(path, overwrite=overwrite)
    return path


def save(path, description: dict, arrays: Dict[str, np.ndarray], *, overwrite: bool = False) -> Path:
    """Write the bundle directory ``path`` (``graph.json`` + ``arrays.npz``) atomically and
    exclusively (of two concurrent writers of one path, one is refused)."""
    path = check_destination(path, overwrite=overwrite)
    with atomic_directory(path, overwrite=overwrite, command="export", exclusive=True) as tmp:
        (tmp / GRAPH_FILE).write_text(json.dumps(description, indent=1), encoding="utf-8")
        np.savez(tmp / ARRAYS_FILE, **arrays)
    return path


def load(path) -> LavaBundle:
    """Re-load a bundle written by :func:`spikedeploy.exporters.lava.export` (no PyTorch model
    code needed), validated before anything runs
    (:func:`spikedeploy.exporters.lava_validate.validate_bundle`: types, ranges, known process
    types, neuron kinds and ports, array shapes and dtypes, finite arrays, CSR consistency,
    connections). Every problem raises :class:`~spikedeploy.errors.ArtifactError` naming the
    bundle and the field (exit code 2)."""
    from spikedeploy.errors import ArtifactError
    from spikedeploy.exporters.lava_validate import read_arrays, validate_bundle
    from spikedeploy.validate import check_artifact_file, detail

    todo = "export the bundle again with spikedeploy export --target lava"
    path = Path(path)
    if not path.exists():
        raise ArtifactError(f"no Lava bundle at {path}")
    if not path.is_dir():
        raise ArtifactError(f"{path} is not a Lava bundle (expected a directory with {GRAPH_FILE})")
    gfile, afile = path / GRAPH_FILE, path / ARRAYS_FILE
    for f in (gfile, afile):
        if not f.is_file():
            raise ArtifactError(f"Lava bundle {path} is incomplete: {f.name} is missing; {todo}")
        check_artifact_file(f, "Lava bundle file")
    try:
        desc = json.loads(gfile.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise ArtifactError(f"Lava bundle {path}: {GRAPH_FILE} is corrupt ({detail(e)}); {todo}") from None
    if not isinstance(desc, dict) or desc.get("format") != FORMAT:
        raise ArtifactError(f"Lava bundle {path}: {GRAPH_FILE} is not a spikedeploy Lava bundle")
    if desc.get("version") not in READ_VERSIONS:
        raise ArtifactError(f"Lava bundle {path}: format version {desc.get('version')!r} is not "
                            f"supported (this spikedeploy reads version {VERSION}); {todo}")
    missing = [k for k in REQUIRED_FIELDS if k not in desc]
    if missing:
        raise ArtifactError(f"Lava bundle {path}: {GRAPH_FILE} lacks {', '.join(missing)}; {todo}")
    arrays = read_arrays(afile, f"Lava bundle {path}")  # every member's header checked first
    validate_bundle(desc, arrays, f"Lava bundle {path}")
    return LavaBundle(path=path, description=desc, arrays=arrays)
