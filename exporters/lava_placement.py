"""Placement of a Lava bundle's processes onto Lava processes (and so onto OS processes).

Lava 0.10's CPU simulator starts one OS process per Lava process and synchronizes all of them in
every Lava step (the runtime service sends each a command and waits for its answer). With one Lava
process per layer that synchronization, not the arithmetic, is what a frame costs (the bundled
tiny tracker's search branch: 150 processes, 126 steps, ~10-16 s per frame, most of it system
time). The placement makes the number of Lava processes a compile-time choice, the way a compiler
places layers onto neurocores: a *partition* is one Lava process (``Partition``, see
:mod:`spikedeploy.runtimes.lava_partition`) whose process model hosts the process models of its
members in-process and steps them in every Lava step; connections between partitions stay real
Lava channels. Arithmetic, per-layer spike records and timing in Lava steps are those of the
per-layer placement, bit for bit (the partition runs the very same process models).

Choices (``--partitions``):

* ``per-layer`` — one Lava process per bundle process (the placement before partitions existed);
* ``N`` (an integer >= 1) — N partitions (fewer if the bundle has fewer processes);
* ``auto`` (the default) — :func:`auto_partitions`: the count measured fastest on this kind of
  machine (``benchmarks/bench_partitions.py``).

How processes are grouped (:func:`plan`): the process graph (every connection, fused taps
included) is ordered topologically (ties by bundle order) and cut into N contiguous runs of
about equal estimated cost (:func:`process_cost`), like pipeline stages. Each partition steps its
members in that global order, which is what makes any grouping deadlock-free: a member waits only
for messages of members earlier in the global order, and every partition advances through them
in that order. Constraints: the process graph must be acyclic (a bundle's always is: every
stream flows from host sources to readouts); an input port may sum at most two streams when it
is hosted (Lava's ``InPort`` adds its connections in an order of its own; two terms add
exactly in either order, three would not — the compiler never makes more than two,
:data:`spikedeploy.exporters.lava.MAX_SUM_TERMS`); host sources (``RingBuffer``, ``HostSource``)
are ordinary members. Connected components need no care: a partition may join processes of
several components into one Lava run (fewer runs), and a component is never split across runs.

The bundle records the placement (``placement``: what was requested, the partitions by process
name, and how ``auto`` decided); ``spikedeploy run``/``track`` may place again (``--partitions``).
A bundle without ``placement`` (written before it existed) runs with ``auto``. Pure data: this
module imports no Lava.
"""

from __future__ import annotations

import heapq
import os
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple, Union

from spikedeploy.errors import ConfigError

__all__ = ["AUTO", "PER_LAYER", "MAX_PARTITIONS", "PlacementError", "Placement", "parse_partitions",
           "auto_partitions", "plan", "process_cost", "topological_order", "placement_of"]

AUTO = "auto"
PER_LAYER = "per-layer"
#: the most partitions one bundle may ask for
MAX_PARTITIONS = 4096

Partitions = Union[str, int]


class PlacementError(ConfigError):
    """A bad ``--partitions`` value, or a process graph that cannot be placed as asked."""


def parse_partitions(value) -> Partitions:
    """``"auto"``, ``"per-layer"`` or an integer N in [1, MAX_PARTITIONS] (int or decimal text)."""
    if isinstance(value, str):
        v = value.strip().lower()
        if v in (AUTO, PER_LAYER):
            return v
        if v.isdigit():
            value = int(v)
    if isinstance(value, bool) or not isinstance(value, int):
        raise PlacementError(f"--partitions must be auto, per-layer or a number of partitions >= 1, got {value!r}")
    if not 1 <= value <= MAX_PARTITIONS:
        raise PlacementError(f"--partitions must be between 1 and {MAX_PARTITIONS}, got {value}")
    return value


def auto_partitions(num_processes: int, cpus: Optional[int] = None) -> Tuple[int, str]:
    """The number of partitions ``auto`` uses for a bundle of ``num_processes`` processes on a
    machine with ``cpus`` CPUs (default ``os.cpu_count()``), and the rule in words.

    Rule (measured with ``benchmarks/bench_partitions.py`` on 2 quiet CPUs, see the README table):
    two partitions when there are two CPUs or more, else one. Within a Lava step a partition waits
    for the messages its members receive from the partition before it (a neuron receives in step
    k what its source sent in step k), but members that receive nothing from the cut in that
    step (most of them: a layer is active in a few of the steps) run meanwhile, and a live
    runtime's per-frame rebuild runs side by side; every extra Lava process adds its share of the
    per-step synchronization (one command and one answer per process and step, one shared-memory
    channel per cut connection). Measured per frame, live runtime: the tiny tracker's search
    branch P = 1 0.192 s, P = 2 0.160 s, P = 4 0.197 s, P = 8 0.238 s; S256-T1 search 1.21 /
    0.96 / 0.95 / 1.12 s; one fresh run per frame: tiny 0.44 / 0.48 / 0.70 / 1.09 s, S256-T1
    1.96 / 1.77 / 2.24 / 3.14 s. More partitions than 2 were not faster on 2 CPUs; machines with
    more CPUs were not measured, so they get 2 as well."""
    cpus = int(cpus or os.cpu_count() or 1)
    n = max(1, min(2 if cpus >= 2 else 1, int(num_processes)))
    return n, (f"auto: {n} partition{'s' if n > 1 else ''} for {num_processes} processes on {cpus} CPUs "
               "(measured fastest on 2 CPUs: partitions overlap the steps their members are idle in, "
               "each extra Lava process adds per-step synchronization)")


#: a process's estimated cost per Lava step, in units of one process model call (see process_cost)
_ELEMENTS_PER_UNIT = 4096


def process_cost(p: dict, arrays_nnz: Optional[Dict[str, int]] = None) -> float:
    """Estimated cost of one Lava step of process record ``p``: one unit for the model call and
    its messages, plus one unit per :data:`_ELEMENTS_PER_UNIT` elements it moves or synapses it
    holds (``arrays_nnz``: synapse count by process name, when known)."""
    size = 0
    for key in ("size", "channels", "rows"):
        v = p.get(key)
        if isinstance(v, int):
            size = max(size, v)
    for key in ("in_shape", "out_shape"):
        v = p.get(key)
        if isinstance(v, list) and all(isinstance(d, int) for d in v):
            n = 1
            for d in v:
                n *= d
            size = max(size, n)
    if p.get("type") in ("attention", "memory_write"):
        size = max(size, int(p.get("channels", 0)) * int(p.get("tokens", 0)))
    taps = sum(len(t) for t in (p.get("inputs") or {}).values())
    syn = (arrays_nnz or {}).get(p.get("name"), 0)
    return 1.0 + 0.25 * taps + (size + syn) / _ELEMENTS_PER_UNIT


def topological_order(desc: dict) -> List[str]:
    """Process names in a topological order of the connections (ties: bundle order). Raises
    :class:`PlacementError` if the process graph has a cycle."""
    names = [p["name"] for p in desc["processes"]]
    index = {n: i for i, n in enumerate(names)}
    succ: Dict[str, List[str]] = {n: [] for n in names}
    indeg = {n: 0 for n in names}
    for c in desc["connections"]:
        succ[c["src"]].append(c["dst"])
        indeg[c["dst"]] += 1
    ready = [(index[n], n) for n in names if indeg[n] == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        _, n = heapq.heappop(ready)
        order.append(n)
        for m in succ[n]:
            indeg[m] -= 1
            if indeg[m] == 0:
                heapq.heappush(ready, (index[m], m))
    if len(order) != len(names):
        stuck = sorted((n for n in names if indeg[n] > 0), key=index.get)[:3]
        raise PlacementError(f"the process graph has a cycle (through {', '.join(stuck)}); it can only run "
                             "--partitions per-layer")
    return order


def _check_sums(desc: dict) -> None:
    """Hosted input ports sum at most two streams (see the module docstring)."""
    count: Dict[Tuple[str, str], int] = {}
    for c in desc["connections"]:
        key = (c["dst"], c["dst_port"])
        count[key] = count.get(key, 0) + 1
        if count[key] > 2:
            raise PlacementError(f"process {c['dst']!r} port {c['dst_port']!r} sums more than two streams, which a "
                                 "partition cannot add in Lava's order; run it with --partitions per-layer")


@dataclass(frozen=True)
class Placement:
    """Where the processes of a bundle run. ``requested``: ``"auto"``, ``"per-layer"`` or N;
    ``groups``: the partitions (process names, each in the global step order), None for
    per-layer; ``rule``: how the count was chosen."""

    requested: Partitions
    groups: Optional[Tuple[Tuple[str, ...], ...]]
    rule: str

    @property
    def partitions(self) -> Optional[int]:
        """The number of partitions (None: per-layer)."""
        return None if self.groups is None else len(self.groups)

    def label(self) -> str:
        return PER_LAYER if self.groups is None else f"{len(self.groups)} partition{'s' * (len(self.groups) != 1)}"

    def to_json(self) -> dict:
        return {"requested": self.requested, "partitions": self.partitions,
                "groups": None if self.groups is None else [list(g) for g in self.groups], "rule": self.rule}

    @classmethod
    def from_json(cls, d: dict) -> "Placement":
        groups = d.get("groups")
        return cls(d["requested"], None if groups is None else tuple(tuple(g) for g in groups), d.get("rule", ""))


def plan(desc: dict, partitions: Partitions = AUTO, *, cpus: Optional[int] = None,
         arrays_nnz: Optional[Dict[str, int]] = None) -> Placement:
    """Place the processes of bundle description ``desc`` as ``partitions`` asks (see the module
    docstring)."""
    requested = parse_partitions(partitions)
    procs = desc["processes"]
    if requested == PER_LAYER:
        return Placement(PER_LAYER, None, "per-layer: one Lava process per bundle process")
    if requested == AUTO:
        n, rule = auto_partitions(len(procs), cpus)
    else:
        n, rule = requested, f"{requested} partition{'s' * (requested != 1)} requested"
    try:
        order = topological_order(desc)
        _check_sums(desc)
    except PlacementError as e:
        if requested != AUTO:
            raise
        return Placement(AUTO, None, f"auto: per-layer, since {e}")
    n = max(1, min(int(n), len(order)))
    by_name = {p["name"]: p for p in procs}
    costs = [process_cost(by_name[name], arrays_nnz) for name in order]
    return Placement(requested, _split(order, costs, n), rule)


def _split(order: Sequence[str], costs: Sequence[float], n: int) -> Tuple[Tuple[str, ...], ...]:
    """``order`` cut into ``n`` non-empty contiguous runs of about equal total cost."""
    total = sum(costs)
    groups: List[Tuple[str, ...]] = []
    start, acc = 0, 0.0
    for i, c in enumerate(costs):
        acc += c
        left_items, left_groups = len(order) - (i + 1), n - len(groups) - 1
        if left_groups == 0:
            break
        # cut after i when this run reached its share, or when the rest is just enough for the rest
        if acc >= total * (len(groups) + 1) / n or left_items == left_groups:
            groups.append(tuple(order[start:i + 1]))
            start = i + 1
    groups.append(tuple(order[start:]))
    return tuple(groups)


def placement_of(desc: dict, partitions: Optional[Partitions] = None, *, cpus: Optional[int] = None) -> Placement:
    """The placement a run uses: ``partitions`` if given (placed again), else the bundle's recorded
    placement (``auto`` is decided again for the machine that runs it), else ``auto``."""
    if partitions is not None:
        return plan(desc, partitions, cpus=cpus)
    rec = desc.get("placement")
    if rec is None or rec.get("requested") == AUTO:
        return plan(desc, AUTO, cpus=cpus)
    return Placement.from_json(rec)
