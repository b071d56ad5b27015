"""``Partition``: one Lava process that runs several processes of a bundle in-process.

The placement (:mod:`spikedeploy.exporters.lava_placement`) groups a bundle's processes into
partitions; :func:`place` turns the per-layer Lava processes that
:func:`spikedeploy.runtimes.lava.build` made into one ``Partition`` process per group. Its process
model (:class:`PyPartitionModel`) hosts the *very same process model classes* the per-layer run
uses (the project's models in :mod:`spikedeploy.runtimes.lava_procs`, Lava's
``PySparseModelFloat`` and ``PySendModelFloat``, the fused-tap subclasses; a model registered in
``lava_procs.MODELS`` is hostable with no code here). So the arithmetic is one function per
process type by construction: the per-layer and the partitioned placement call the same
``run_spk``, and cannot drift.

What Lava does for a per-layer process, and what the host does instead (read off Lava 0.10's
``magma/core/model/py/model.py``, ``ports.py``, ``compiler/builders/py_builder.py``,
``compiler/channels/pypychannel.py``):

* **Build** (``PyProcessBuilder.build``): the model is made from the process's ``proc_params``;
  every Var becomes ``np.ndarray(shape, d_type)`` filled with its initial value (``csr_matrix`` and
  scalars are taken as they are), with the ``LavaPyType`` the model declares; every port becomes a
  ``PyInPort``/``PyOutPort`` of its declared class. The host does the same, with in-memory ports.
* **Channels** (``CspSendPort.send`` / ``CspRecvPort.recv``): a FIFO of ``pypy_channel_size``
  slots in the *sender's* declared dtype and shape; ``send`` checks the shape and copies the data
  in (casting), ``recv`` returns a copy. The n-th ``recv`` of a port gets the n-th ``send`` of
  its source, whatever the step. :class:`_Channel` is that FIFO in memory; a send to a full
  channel or a receive from an empty one, which in Lava would wait forever (lock-step: the
  other side cannot move on), raises instead.
* **InPort** (``PyInPortVectorDense.recv``): ``zeros(shape, receiver's d_type) + c_1 + c_2 ...``
  over its connections; ``peek`` the same (Lava's own ``peek`` consumes too), ``probe`` whether
  every connection holds data. :class:`_InPort` does this over its in-memory channels and, for
  connections from other partitions, the partition's real ``PyInPort``. At most two terms are
  summed (the placement checks it), which add exactly in any order.
* **OutPort** (``PyOutPortVectorDense.send``): sends to every connection. :class:`_OutPort` sends
  to its in-memory channels and, for readers in other partitions, through the partition's real
  ``PyOutPort`` (declared with the member's port dtype, so the channel casts as the member's would).
* **Steps** (``PyLoihiProcessModel._spike``): ``time_step += 1``, then ``run_spk``; the guards
  decide whether the runtime service runs the management/learning phases. The partition
  increments its own ``time_step``, sets every member's to it and calls the members' ``run_spk``
  in the global topological order (a member receives in step k what its sources sent in step k, so
  its in-partition sources have run); its guards are the members' (any), and its phase hooks call
  those of the members whose guard holds, in the same order.
* **Vars read after the run** (``Var.get``): the member models are inside the partition, so the
  Vars the runtime reads (``dumps``: e.g. the attention's ``pair_events``) are written to files in
  the last step; neuron and readout records are files already (``record``).

Only ``VEC_DENSE`` ports and ``ndarray``/``csr_matrix``/scalar Vars are hostable (every model
in use); a model with other ports (RefPorts, VarPorts, sparse messages) is refused by name.

Precision: a ``fixed_pt`` run places the fixed_pt models (``lava_procs.MODELS_BY_TAG["fixed_pt"]``,
the exact integer ``Sparse``/``RingBuffer`` models included) in partitions whose model is
:class:`PyPartitionModelFixed` (the same code, tagged ``fixed_pt``); the partition's own ports take
their members' int64 types, and its in-memory channels and ports add in the members' dtypes, so the
arithmetic is the per-layer run's.
"""

from __future__ import annotations

import os
from collections import deque
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from scipy.sparse import csr_matrix

from spikedeploy.errors import SpikedeployError
from spikedeploy.exporters.lava_placement import Placement, PlacementError
from spikedeploy.lava_compat import import_lava

import_lava()

from lava.magma.core.decorator import implements, requires, tag  # noqa: E402
from lava.magma.core.model.py.model import PyLoihiProcessModel  # noqa: E402
from lava.magma.core.model.py.ports import PyInPort, PyInPortVectorDense, PyOutPort, PyOutPortVectorDense  # noqa: E402
from lava.magma.core.model.py.type import LavaPyType  # noqa: E402
from lava.magma.core.process.ports.ports import InPort, OutPort  # noqa: E402
from lava.magma.core.process.process import AbstractProcess  # noqa: E402
from lava.magma.core.resources import CPU  # noqa: E402
from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol  # noqa: E402

__all__ = ["Partition", "PyPartitionModel", "MemberError", "Member", "place", "hostable_models",
           "register_hostable"]


class MemberError(SpikedeployError):
    """An exception in a member of a partition: names the member and its model (keeps the exit
    code of a SpikedeployError)."""

    def __init__(self, member: str, model: str, exc: BaseException) -> None:
        super().__init__(f"{member} ({model}): {type(exc).__name__}: {exc}")
        self.exit_code = exc.exit_code if isinstance(exc, SpikedeployError) else 1


# ---------------------------------------------------------------------------------------------
# hostable models
# ---------------------------------------------------------------------------------------------

_EXTRA_HOSTABLE: List[type] = []


def register_hostable(model: type) -> type:
    """Declare a process model hostable in a partition (besides the models of
    ``lava_procs.MODELS_BY_TAG`` and Lava's ``PySparseModelFloat``/``PySendModelFloat``); a second
    registration is refused."""
    if model in _EXTRA_HOSTABLE or model in hostable_models():
        raise ValueError(f"process model {model.__name__} is registered as hostable already")
    _EXTRA_HOSTABLE.append(model)
    return model


def hostable_models() -> Tuple[type, ...]:
    """The process models a partition hosts (a subclass of one, e.g. a fused-tap model, too)."""
    from lava.proc.io.source import PySendModelFloat
    from lava.proc.sparse.models import PySparseModelFloat

    from spikedeploy.runtimes import lava_procs as LP

    tagged = tuple(m for registry in LP.MODELS_BY_TAG.values() for m in registry.values())
    return tagged + (PySparseModelFloat, PySendModelFloat) + tuple(_EXTRA_HOSTABLE)


def _lava_types(model: type) -> Dict[str, LavaPyType]:
    return {n: getattr(model, n) for n in dir(model) if isinstance(getattr(model, n, None), LavaPyType)}


# ---------------------------------------------------------------------------------------------
# member description (made in the parent, used in the partition's OS process after the fork)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Member:
    """One hosted process: its Lava process name, model class, proc params, Vars
    (name -> (shape, initial value)) and port shapes."""

    name: str
    model: type
    proc_params: object
    vars: Tuple[Tuple[str, tuple, object], ...]
    in_ports: Tuple[Tuple[str, tuple], ...]
    out_ports: Tuple[Tuple[str, tuple], ...]

    @classmethod
    def of(cls, proc: AbstractProcess, model: type) -> "Member":
        if not issubclass(model, hostable_models()):
            raise PlacementError(f"process {proc.name!r}: its model {model.__name__} cannot be hosted in a partition "
                                 "(not a registered hostable model); run with --partitions per-layer")
        types = _lava_types(model)
        for port in list(proc.in_ports) + list(proc.out_ports):
            lt = types.get(port.name)
            if lt is None or lt.cls not in (PyInPortVectorDense, PyOutPortVectorDense):
                raise PlacementError(f"process {proc.name!r} port {port.name!r}: only dense vector ports can be hosted "
                                     "in a partition; run with --partitions per-layer")
        if list(proc.ref_ports) or list(proc.var_ports):
            raise PlacementError(f"process {proc.name!r} has RefPorts/VarPorts, which a partition cannot host; "
                                 "run with --partitions per-layer")
        return cls(proc.name, model, proc.proc_params,
                   tuple((v.name, tuple(v.shape), v.init) for v in proc.vars),
                   tuple((p.name, tuple(p.shape)) for p in proc.in_ports),
                   tuple((p.name, tuple(p.shape)) for p in proc.out_ports))


def _build_member(m: Member, values: Optional[dict] = None) -> PyLoihiProcessModel:
    """The member's process model with its Vars, as ``PyProcessBuilder.build`` makes it.
    ``values``: Var name -> initial value replacing the spec's (a live runtime's next input)."""
    pm = m.model(m.proc_params)
    types = _lava_types(m.model)
    for name, shape, init in m.vars:
        if values and name in values:
            init = values[name]
            if np.shape(init) != tuple(shape):
                raise PlacementError(f"member {m.name!r}: Var {name!r} given shape {list(np.shape(init))}, "
                                     f"expected {list(shape)}")
        lt = types.get(name)
        if lt is None:
            raise PlacementError(f"member {m.name!r}: model {m.model.__name__} declares no Var {name!r}")
        if issubclass(lt.cls, np.ndarray):
            var = lt.cls(shape, lt.d_type)
            var[:] = init
        elif issubclass(lt.cls, (int, float, str)):
            var = init
        elif issubclass(lt.cls, csr_matrix):
            if isinstance(init, int):
                var = csr_matrix(shape, dtype=lt.d_type)
                var[:] = init
            else:
                var = init
        else:
            raise PlacementError(f"member {m.name!r}: Var {name!r} of type {lt.cls.__name__} cannot be hosted")
        setattr(pm, name, var)
    return pm


# ---------------------------------------------------------------------------------------------
# in-memory ports
# ---------------------------------------------------------------------------------------------


class _Channel:
    """A Lava channel in memory: a FIFO of at most ``size`` messages (shape and dtype of the sender)."""

    __slots__ = ("label", "size", "queue")

    def __init__(self, label: str, size: int):
        self.label, self.size = label, size
        self.queue: deque = deque()

    def push(self, data: np.ndarray) -> None:
        if len(self.queue) >= self.size:
            raise RuntimeError(f"channel {self.label}: {self.size} messages not received (Lava would wait forever)")
        self.queue.append(data)

    def pop(self) -> np.ndarray:
        if not self.queue:
            raise RuntimeError(f"channel {self.label}: receive without a message sent (Lava would wait forever)")
        return self.queue.popleft()


class _InPort:
    """``PyInPortVectorDense`` over in-memory channels and, optionally, the partition's real port
    (connections from other partitions)."""

    __slots__ = ("shape", "d_type", "channels", "outer")

    def __init__(self, shape, d_type, channels: List[_Channel], outer: Optional[PyInPort]):
        self.shape, self.d_type, self.channels, self.outer = tuple(shape), d_type, channels, outer

    def recv(self) -> np.ndarray:
        acc = np.zeros(self.shape, self.d_type)
        for ch in self.channels:
            acc = acc + ch.pop()
        if self.outer is not None:
            acc = acc + self.outer.recv()
        return acc

    def peek(self) -> np.ndarray:  # Lava's VEC_DENSE peek consumes (it calls recv on its CSP ports)
        return self.recv()

    def probe(self) -> bool:
        return all(ch.queue for ch in self.channels) and (self.outer is None or self.outer.probe())


class _OutPort:
    """``PyOutPortVectorDense`` to in-memory channels and, optionally, the partition's real port."""

    __slots__ = ("shape", "d_type", "channels", "outer")

    def __init__(self, shape, d_type, channels: List[_Channel], outer: Optional[PyOutPort]):
        self.shape, self.d_type, self.channels, self.outer = tuple(shape), d_type, channels, outer

    def send(self, data: np.ndarray) -> None:
        if self.channels:
            if data.shape != self.shape:  # as CspSendPort.send
                raise AssertionError(f"{data.shape=} {self.shape=} Mismatch")
            buf = np.empty(self.shape, self.d_type)
            buf[:] = data[:]  # one copy in the sender's dtype; every receiver adds it into a new array
            for ch in self.channels:
                ch.push(buf)
        if self.outer is not None:
            self.outer.send(data)

    def flush(self) -> None:
        pass

    def advance_to_time_step(self, ts: int) -> None:
        pass


# ---------------------------------------------------------------------------------------------
# the Partition process and its model
# ---------------------------------------------------------------------------------------------


class Partition(AbstractProcess):
    """One Lava process running ``members`` (:class:`Member`, in step order) in-process.

    proc params: ``members``; ``internal`` (connections inside: ``(src member, src port, dst
    member, dst port)`` indices/names); ``outer_in``/``outer_out`` (partition port name ->
    (member index, member port)); ``channel_size``; ``num_steps`` and ``dumps`` (``(member index,
    Var name, path)`` written in step ``num_steps``; with ``dump_file`` all of them go into that
    one ``.npz``, keyed by the path's file name without ``.npy``); ``frame_file`` (None, or a live
    partition: see :class:`PyPartitionModel`)."""

    def __init__(self, *, members: Sequence[Member], internal, outer_in: dict, outer_out: dict,
                 port_types: dict, channel_size: int, num_steps: int, dumps=(), frame_file: Optional[str] = None,
                 dump_file: Optional[str] = None, name: str = None):
        super().__init__(members=tuple(members), internal=tuple(internal), outer_in=dict(outer_in),
                         outer_out=dict(outer_out), port_types=dict(port_types), channel_size=int(channel_size),
                         num_steps=int(num_steps), dumps=tuple(dumps), frame_file=frame_file, dump_file=dump_file,
                         name=name)
        shapes = {}
        for i, m in enumerate(members):
            for pname, shape in m.in_ports + m.out_ports:
                shapes[(i, pname)] = shape
        for port, (i, pname) in outer_in.items():
            setattr(self, port, InPort(shape=shapes[(i, pname)]))
        for port, (i, pname) in outer_out.items():
            setattr(self, port, OutPort(shape=shapes[(i, pname)]))


@implements(proc=Partition, protocol=LoihiProtocol)
@requires(CPU)
@tag("floating_pt")
class PyPartitionModel(PyLoihiProcessModel):
    """Steps the member models of a :class:`Partition` (see the module docstring). The members are
    built with the partition's model, in its OS process (a failure is a start-up failure, as for
    a per-layer process); their ports are wired at the first step, when the partition's own ports
    exist.

    **Live partitions** (``frame_file`` set; :class:`spikedeploy.runtimes.lava_live.LiveRuntime`):
    the runtime is not stopped after a run of ``num_steps`` steps but runs again on the next input.
    The members see the *frame's* step ``1 .. num_steps`` (``(time_step - 1) % num_steps + 1``),
    and at the first step of every frame after the first, every member is built again from its
    spec, exactly as at start-up (fresh state, nothing carried over), with the Var values read
    from ``frame_file`` (``.npz``, key ``"<member index>.<Var>"``: the sources' next input; a
    key ``"keep:<member index>.<Var>"`` also replaces the spec's value for all later frames: a new
    template memory), and wired again. So every frame computes what a fresh runtime would."""

    def __init__(self, proc_params):
        super().__init__(proc_params)
        self._specs: List[Member] = list(self.proc_params["members"])
        self._frame_file = self.proc_params.get("frame_file")
        self._kept: Dict[int, dict] = {}
        self._build()
        self._last_step = int(self.proc_params["num_steps"])

    def _build(self, values: Optional[Dict[int, dict]] = None) -> None:
        self._members: List[PyLoihiProcessModel] = []
        for i, m in enumerate(self._specs):
            try:
                self._members.append(_build_member(m, (values or {}).get(i)))
            except Exception as e:
                raise MemberError(m.name, m.model.__name__, e) from e
        self._wired = False

    def _next_frame(self) -> None:
        """Rebuild the members with the values of ``frame_file`` (see the class docstring)."""
        path = self._frame_file
        try:
            with np.load(path, allow_pickle=False) as f:
                given = {k: f[k] for k in f.files}
        except (OSError, ValueError) as e:
            raise SpikedeployError(f"live Lava partition: cannot read the next frame's values {path}: {e}") from e
        values: Dict[int, dict] = {i: dict(v) for i, v in self._kept.items()}
        for key, arr in given.items():
            keep = key.startswith("keep:")
            i, var = key[5:].split(".", 1) if keep else key.split(".", 1)
            i = int(i)
            values.setdefault(i, {})[var] = arr
            if keep:
                self._kept.setdefault(i, {})[var] = arr
        self._build(values)

    def _setup(self) -> None:
        p = self.proc_params
        specs, members = self._specs, self._members
        size = int(p["channel_size"])
        ins: Dict[Tuple[int, str], List[_Channel]] = {}
        outs: Dict[Tuple[int, str], List[_Channel]] = {}
        for si, sp, di, dp in p["internal"]:
            ch = _Channel(f"{specs[si].name}.{sp} -> {specs[di].name}.{dp}", size)
            outs.setdefault((si, sp), []).append(ch)
            ins.setdefault((di, dp), []).append(ch)
        outer_in = {(i, pn): getattr(self, port) for port, (i, pn) in p["outer_in"].items()}
        outer_out = {(i, pn): getattr(self, port) for port, (i, pn) in p["outer_out"].items()}
        for i, (m, pm) in enumerate(zip(specs, members)):
            types = _lava_types(m.model)
            for pname, shape in m.in_ports:
                setattr(pm, pname, _InPort(shape, types[pname].d_type, ins.get((i, pname), []),
                                           outer_in.get((i, pname))))
            for pname, shape in m.out_ports:
                setattr(pm, pname, _OutPort(shape, types[pname].d_type, outs.get((i, pname), []),
                                            outer_out.get((i, pname))))
        self._wired = True

    def _each(self, method: str, guard: Optional[str] = None) -> None:
        """``method`` of every member (whose ``guard`` holds), in step order, at this partition's
        time step and phase. The two attributes go straight into the members' ``__dict__``: what
        Lava's ``AbstractPyProcessModel.__setattr__`` does for values that are not ports."""
        ts, phase = self._local_step(), self.phase
        i = 0
        try:
            for i, pm in enumerate(self._members):
                d = pm.__dict__
                d["time_step"] = ts
                d["phase"] = phase
                if guard is None or getattr(pm, guard)():
                    getattr(pm, method)()
        except MemberError:
            raise
        except Exception as e:
            spec = self._specs[i]
            raise MemberError(spec.name, spec.model.__name__, e) from e

    def _local_step(self) -> int:
        """The members' step: the frame's step for a live partition, else Lava's."""
        if self._frame_file is None:
            return self.time_step
        return (self.time_step - 1) % self._last_step + 1

    def run_spk(self):
        if self._frame_file is not None and self.time_step > 1 and self._local_step() == 1:
            self._next_frame()
        if not self._wired:
            self._setup()
        self._each("run_spk")
        if self._local_step() == self._last_step:
            self._dump()

    def _dump(self) -> None:
        one = self.proc_params.get("dump_file")
        if one is not None:  # one file for the partition: one write instead of one per member
            values = {os.path.basename(path)[:-4]: np.asarray(getattr(self._members[i], var))
                      for i, var, path in self.proc_params["dumps"]}
            tmp = one + ".tmp.npz"
            np.savez(tmp, **values)
            os.replace(tmp, one)
            return
        for i, var, path in self.proc_params["dumps"]:
            tmp = path + ".tmp.npy"
            np.save(tmp, np.asarray(getattr(self._members[i], var)))
            os.replace(tmp, path)

    def pre_guard(self):
        return any(pm.pre_guard() for pm in self._members)

    def lrn_guard(self):
        return any(pm.lrn_guard() for pm in self._members)

    def post_guard(self):
        return any(pm.post_guard() for pm in self._members)

    def run_pre_mgmt(self):
        self._each("run_pre_mgmt", "pre_guard")

    def run_lrn(self):
        self._each("run_lrn", "lrn_guard")

    def run_post_mgmt(self):
        self._each("run_post_mgmt", "post_guard")


class PyPartitionModelFixed(PyPartitionModel):
    """The partition of a ``fixed_pt`` run: :class:`PyPartitionModel` (it hosts whatever models it
    is given: the fixed_pt ones), tagged ``fixed_pt``."""


# Lava's tags add up over inheritance: the fixed partition carries its own tag alone
PyPartitionModelFixed.tags = []
PyPartitionModelFixed = tag("fixed_pt")(PyPartitionModelFixed)

#: select tag -> the partition model
PARTITION_MODELS = {"floating_pt": PyPartitionModel, "fixed_pt": PyPartitionModelFixed}

_PARTITION_MODELS: dict = {}


def _partition_model(port_types: Dict[str, LavaPyType], select_tag: str = "floating_pt") -> type:
    """A subclass of the tag's partition model declaring the partition's ports (Lava's builder
    wants the model to declare exactly the process's ports; made and cached in the parent, which
    Lava forks)."""
    base = PARTITION_MODELS[select_tag]
    key = (select_tag,) + tuple(sorted((k, v.cls, v.d_type, v.precision) for k, v in port_types.items()))
    cls = _PARTITION_MODELS.get(key)
    if cls is None:
        cls = type(f"{base.__name__}_{len(port_types)}ports", (base,), dict(port_types))
        _PARTITION_MODELS[key] = cls
    return cls


# ---------------------------------------------------------------------------------------------
# placing built processes
# ---------------------------------------------------------------------------------------------


def place(procs: Dict[str, AbstractProcess], models: dict, connections: Sequence[dict], placement: Placement, *,
          num_steps: int, channel_size: int, dumps: Optional[Dict[str, Sequence[Tuple[str, str]]]] = None,
          frame_files: Optional[Sequence[str]] = None, dump_files: Optional[Sequence[str]] = None,
          select_tag: str = "floating_pt"):
    """``Partition`` processes (connected to each other) for the unconnected per-layer processes
    ``procs`` (name -> process, models in ``models``) and the bundle's ``connections``, grouped by
    ``placement``. ``dumps``: process name -> [(Var name, path)] written in the last step.
    ``frame_files``: one path per partition, making them live partitions (:class:`PyPartitionModel`);
    ``dump_files``: one path per partition, where it writes all its dumps at once. ``select_tag``: the
    run's select tag (the partition model: :data:`PARTITION_MODELS`; ``models`` are that tag's).
    Returns ``(partitions, partition_models, where)``: partitions by name, their models,
    and for each process name its partition's name."""
    if placement.groups is None:
        raise ValueError("place: a per-layer placement needs no partitions")
    where: Dict[str, Tuple[int, int]] = {}
    members: List[List[Member]] = []
    for g, names in enumerate(placement.groups):
        ms = []
        for j, name in enumerate(names):
            if name not in procs:
                raise PlacementError(f"the placement names a process {name!r} the bundle does not have")
            if name in where:
                raise PlacementError(f"the placement lists process {name!r} twice")
            where[name] = (g, j)
            ms.append(Member.of(procs[name], models[procs[name]]))
        members.append(ms)
    missing = [n for n in procs if n not in where]
    if missing:
        raise PlacementError(f"the placement leaves out process {missing[0]!r} ({len(missing)} in all)")
    internal: List[list] = [[] for _ in members]
    outer_in: List[dict] = [{} for _ in members]
    outer_out: List[dict] = [{} for _ in members]
    port_types: List[dict] = [{} for _ in members]
    in_name: Dict[Tuple[str, str], str] = {}
    out_name: Dict[Tuple[str, str], str] = {}
    cuts = []
    for cn in connections:
        (sg, sj), (dg, dj) = where[cn["src"]], where[cn["dst"]]
        if sg == dg:
            internal[sg].append((sj, cn["src_port"], dj, cn["dst_port"]))
            continue
        okey, ikey = (cn["src"], cn["src_port"]), (cn["dst"], cn["dst_port"])
        if okey not in out_name:
            out_name[okey] = f"o{len(outer_out[sg])}"
            outer_out[sg][out_name[okey]] = (sj, cn["src_port"])
            lt = getattr(models[procs[cn["src"]]], cn["src_port"])
            port_types[sg][out_name[okey]] = LavaPyType(PyOutPort.VEC_DENSE, lt.d_type, lt.precision)
        if ikey not in in_name:
            in_name[ikey] = f"i{len(outer_in[dg])}"
            outer_in[dg][in_name[ikey]] = (dj, cn["dst_port"])
            lt = getattr(models[procs[cn["dst"]]], cn["dst_port"])
            port_types[dg][in_name[ikey]] = LavaPyType(PyInPort.VEC_DENSE, lt.d_type, lt.precision)
        cuts.append((sg, out_name[okey], dg, in_name[ikey]))
    parts: Dict[str, Partition] = {}
    part_models = {}
    names = []
    for g, ms in enumerate(members):
        dump = [(where[n][1], var, path) for n in placement.groups[g] for var, path in (dumps or {}).get(n, ())]
        name = f"partition{g}"
        proc = Partition(members=ms, internal=internal[g], outer_in=outer_in[g], outer_out=outer_out[g],
                         port_types=port_types[g], channel_size=channel_size, num_steps=num_steps, dumps=dump,
                         frame_file=None if frame_files is None else str(frame_files[g]),
                         dump_file=None if dump_files is None else str(dump_files[g]), name=name)
        parts[name] = proc
        part_models[proc] = _partition_model(port_types[g], select_tag)
        names.append(name)
    for sg, op, dg, ip in cuts:
        getattr(parts[names[sg]], op).connect(getattr(parts[names[dg]], ip))
    return parts, part_models, {n: names[g] for n, (g, _) in where.items()}
