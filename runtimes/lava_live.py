"""A Lava runtime kept alive across inputs: compile and start once, then one run per frame.

:func:`spikedeploy.runtimes.lava.run` builds the processes, compiles, starts Lava's OS processes,
runs and stops them for every call. For a tracker that runs the same bundle on a new search
crop every frame, building and starting are the same work each time (measured on the bundled
tiny tracker, one partition: 0.13 s building processes, 0.17 s starting, 0.10 s stopping of a
0.85 s frame on busy cores). :class:`LiveRuntime` does that once:

1. the first :meth:`LiveRuntime.run` builds the processes for its input, places them in
   *live* partitions (:class:`spikedeploy.runtimes.lava_partition.PyPartitionModel`) and starts
   one :class:`~spikedeploy.runtimes.lava_session.LavaSession` per connected component;
2. every later run computes the bundle's host part for the new input, writes what each source
   process injects (:func:`spikedeploy.runtimes.lava.source_var`, the same values a fresh build
   gives it) to each partition's frame file, and runs the bundle's number of steps again. At the
   first step of that frame every partition builds its members again from their specs — fresh
   state, nothing carried over from the previous frame — with the new values;
3. :meth:`LiveRuntime.set_memory` replaces ``memory_read`` memories (a new template) for all
   later runs, without compiling again (as :func:`spikedeploy.exporters.lava.with_memory`), and
   :meth:`LiveRuntime.use_bundle` takes a bundle ``with_memory`` already made;
4. records: each partition writes its members' records (spike counts per macro-step, readouts,
   pair-event counters) into one file in the frame's last step (read and removed).

5. **carried state** (``carry_state=True``; :mod:`spikedeploy.streaming`'s Lava stream): the
   neurons that carry state (leaky integer LIFs and DI-LIFs, binary LIFs; floating and fixed
   point) write their state after each sample's last macro-step (``state_out``, in the
   partition's records file), and the next frame's members start from it (``state_in``, sent in
   the frame file) instead of fresh: no reset between frames. ``run(x, state=...)`` starts a
   frame from a given state instead; :attr:`LiveRuntime.state` is the state after the last run
   (node name -> :class:`~spikedeploy.neurons.NeuronState` ``[B, *s]``), in ``TargetRun.state``
   too; :meth:`LiveRuntime.reset_state` makes the next frame start fresh. A zero state is the
   fresh start exactly, so frame by frame the spike counts equal the reference's stream.

So each run computes exactly what :func:`~spikedeploy.runtimes.lava.run` computes for the same
bundle and input (tested bit for bit, spike counts and outputs), in the same Lava steps per
frame. Only partitioned placements can stay alive (a per-layer placement is one Lava process per
layer, whose models Lava builds once: :func:`~spikedeploy.runtimes.lava.run` serves it).

Lifetime: :meth:`close` (or the ``with`` block; or, for a runtime nobody closed, its garbage
collection or the end of the interpreter) stops the runtime; an exception during a run (a failed Lava process,
Ctrl-C, the CLI's SIGTERM exception) ends it by force, with every child ended and its shared
memory and the record directory removed, as :class:`LavaSession` does for a single run; the
next run then starts a new one.
"""

from __future__ import annotations

import gc
import os
import tempfile
import time
import weakref
from pathlib import Path
from typing import Dict, List, Mapping, Optional

import numpy as np

from spikedeploy.errors import ConfigError, InputError
from spikedeploy.targets import TargetRun

__all__ = ["LiveRuntime"]


class _Running:
    """What a started runtime holds outside Python's memory (Lava's OS processes and shared
    memory, the record directory): closed by :meth:`LiveRuntime.close` or, for a runtime nobody
    closed, by its finalizer (garbage collection or interpreter exit), which must not refer to
    the runtime itself."""

    def __init__(self) -> None:
        self.sessions: List = []
        self.record_dir: Optional[tempfile.TemporaryDirectory] = None

    def close(self, force: bool = False) -> None:
        from spikedeploy.runtimes.lava_session import deferred_signals

        sessions, self.sessions = self.sessions, []
        try:
            for s in sessions:
                s.close(force=force)
        finally:
            if self.record_dir is not None:
                with deferred_signals():
                    self.record_dir.cleanup()
                self.record_dir = None


class LiveRuntime:
    """``bundle`` (a :class:`~spikedeploy.exporters.lava.LavaBundle` or its path) kept running
    in Lava's CPU simulator across :meth:`run` calls on inputs of one shape ``[T, B, *s]``.

    ``partitions``: ``"auto"`` (default: the bundle's placement decided for this machine), or N;
    a per-layer placement is refused (:class:`~spikedeploy.errors.ConfigError`): it cannot stay
    alive, use :func:`spikedeploy.runtimes.lava.run`. ``info`` of each run adds ``live`` (the
    run's index since start-up, ``0`` = the run that started the runtime) to the runtime's
    usual ``info``; ``lava_phase_s`` then holds this run's phases (``frame``: writing the next
    input; ``start`` only in the first)."""

    def __init__(self, bundle, *, partitions="auto", select_tag: Optional[str] = None,
                 carry_state: bool = False) -> None:
        from spikedeploy.exporters.lava_placement import parse_partitions, placement_of
        from spikedeploy.runtimes import lava as L

        if select_tag is not None:
            L.check_select_tag(select_tag)
        self.bundle = L._bundle(bundle)
        #: None: the bundle's precision (fixed_pt for a fixed-point bundle); a mismatch is refused
        self.select_tag = L.resolve_select_tag(self.bundle, select_tag)
        self.partitions = parse_partitions(partitions)
        self.placement = placement_of(self.bundle.description, self.partitions)
        if self.placement.groups is None:
            raise ConfigError(f"Lava live runtime: placement {self.placement.requested!r} is per-layer, which "
                              "cannot stay alive between runs; use partitions 'auto' or N")
        self._running = _Running()
        self._finalizer = weakref.finalize(self, self._running.close)
        self._shape = None
        self._runs = 0
        # memory_read process name -> the memory array its partition holds (sent, or built with)
        self._memory_sent: Dict[str, np.ndarray] = {}
        #: neuron state carried from frame to frame (module docstring, item 5)
        self.carry_state = bool(carry_state)
        procs = {p["name"]: p for p in self.bundle.description["processes"]}
        #: neuron node -> (process name, per-step shape) of the neurons that carry state
        self._carried = {node: (n["proc"], tuple(n["shape"])) for node, n in self.bundle.description["neurons"].items()
                         if procs[n["proc"]]["type"] == "neuron" and L.neuron_carries_state(procs[n["proc"]]["neuron"])}
        self._residual = {node for node, (proc, _) in self._carried.items()
                          if str(procs[proc]["neuron"].get("kind")) in ("binary_lif", "fixed_binary_lif")}
        self._state_arrays: Dict[str, np.ndarray] = {}  # process name -> [2, B, size] the next frame starts from
        self._state = {}

    # -- public ------------------------------------------------------------------------------

    @property
    def alive(self) -> bool:
        return bool(self._running.sessions)

    @property
    def _sessions(self) -> List:
        return self._running.sessions

    def set_memory(self, memory: Mapping[str, np.ndarray]) -> None:
        """New memories (MemoryRead node name -> ``[T_mem, H, C/H, Cv/H]``) for every later run;
        checked as :func:`spikedeploy.exporters.lava.with_memory` checks them (the bundle's
        arrays are replaced too, so ``self.bundle`` stays what the processes compute)."""
        from spikedeploy.exporters.lava import with_memory

        self.use_bundle(with_memory(self.bundle, dict(memory)))

    def use_bundle(self, bundle) -> None:
        """Run ``bundle`` from the next run on: this runtime's bundle with other MemoryRead
        memories, as :func:`~spikedeploy.exporters.lava.with_memory` returns it (the same
        description: nothing is compiled). The memories whose arrays changed are sent to their
        partitions with the next input."""
        if bundle.description is not self.bundle.description:
            raise ConfigError("Lava live runtime: use_bundle takes the runtime's own bundle with other memories "
                              "(exporters.lava.with_memory); a bundle compiled separately needs a new LiveRuntime")
        self.bundle = bundle

    def _memories(self) -> Dict[str, np.ndarray]:
        """memory_read process name -> its memory in the current bundle."""
        return {p["name"]: self.bundle.array(p["memory"]) for p in self.bundle.description["processes"]
                if p["type"] == "memory_read"}

    @property
    def state(self) -> Dict[str, object]:
        """Node name -> :class:`~spikedeploy.neurons.NeuronState` after the last run (carried
        neurons only; empty before the first run or after :meth:`reset_state`)."""
        return dict(self._state)

    def reset_state(self) -> None:
        """The next frame starts fresh (zero state, exactly the fresh start)."""
        self._state = {}
        self._state_arrays = {}

    def _set_state(self, state, B: int) -> None:
        """``state`` (node -> NeuronState ``[B, *s]``) as the next frame's start, checked: each
        problem is an InputError naming the node."""
        from spikedeploy.neurons import NeuronState
        from spikedeploy.runtimes import lava as L

        fixed = L.is_fixed_bundle(self.bundle)
        arrays = {}
        for node, st in state.items():
            if node not in self._carried:
                raise InputError(f"neuron state for {node!r}: not a neuron of the bundle that carries state; stateful "
                                 f"neurons: {', '.join(sorted(self._carried)) or 'none'}")
            if not isinstance(st, NeuronState):
                raise InputError(f"neuron state for {node!r}: expected a NeuronState, got {type(st).__name__}")
            residual = node in self._residual
            if (st.q is None) != residual:
                raise InputError(f"neuron state for {node!r}: " + ("a binary LIF state is NeuronState(m=U) without q"
                                                                    if residual else "an integer LIF state needs q"))
            proc, shape = self._carried[node]
            rows = []
            for part, v in (("m", st.m), ("q", st.q)):
                if v is None:
                    rows.append(np.zeros((B, int(np.prod(shape)))))
                    continue
                a = np.asarray(v.detach().cpu().numpy() if hasattr(v, "detach") else v)
                if list(a.shape) != [B, *shape]:
                    raise InputError(f"neuron state for {node!r}: {part} has shape {list(a.shape)}, expected "
                                     f"{[B, *shape]} (one step of the neuron)")
                if not np.isfinite(a).all():
                    raise InputError(f"neuron state for {node!r}: {part} contains NaN or Inf")
                rows.append(L._exact(a, f"state of {node!r}") if fixed else a.astype(np.float64))
                rows[-1] = rows[-1].reshape(B, -1)
            arrays[proc] = np.stack(rows)
        self._state_arrays = arrays

    def _read_state(self, dumped: Dict[str, np.ndarray], B: int) -> None:
        """The carried neurons' ``state_out`` (dumped by their partitions) as the next frame's start."""
        import torch

        from spikedeploy.neurons import NeuronState

        arrays, state = {}, {}
        for node, (proc, shape) in self._carried.items():
            a = np.asarray(dumped[f"{self._index[proc]}.state_out"])
            arrays[proc] = a
            m = torch.from_numpy(a[0].reshape((B,) + shape).copy())
            q = None if node in self._residual else torch.from_numpy(a[1].reshape((B,) + shape).copy())
            state[node] = NeuronState(m=m, q=q)
        self._state_arrays, self._state = arrays, state

    def run(self, x, *, state=None) -> TargetRun:
        """Run the bundle on ``x`` ``[T, B, *s]`` (the shape of the first run) and return what
        :func:`spikedeploy.runtimes.lava.run` returns for it. With ``carry_state`` the frame starts
        from the state the last run ended with (zeros at first), or from ``state`` (node name ->
        NeuronState; a carried neuron left out starts fresh); ``TargetRun.state`` holds the end state."""
        from spikedeploy.runtimes import lava as L

        if state is not None and not self.carry_state:
            raise ConfigError("Lava live runtime: a neuron state needs LiveRuntime(..., carry_state=True)")
        t0 = time.perf_counter()
        T, B, host, host_values = L.host_part(self.bundle, x)
        t_host = time.perf_counter() - t0
        if self._shape is not None and self._shape != (T, B):
            raise InputError(f"Lava live runtime: input has [T, B] = {[T, B]}, but the runtime runs "
                             f"[T, B] = {list(self._shape)}; make a new LiveRuntime for another shape")
        if state is not None:
            self._set_state(dict(state), B)
        phases = {"start": 0.0, "frame": 0.0, "steps": 0.0, "read": 0.0}
        try:
            if not self._sessions:
                t = time.perf_counter()
                self._start(host_values, T, B)
                phases["start"] = time.perf_counter() - t
                first = True
            else:
                t = time.perf_counter()
                self._write_frame(host_values, T, B)
                phases["frame"] = time.perf_counter() - t
                first = False
            t = time.perf_counter()
            for s in self._sessions:
                s.run(self._num_steps)
            phases["steps"] = time.perf_counter() - t
            t = time.perf_counter()
            rec, pair_events, write_events, dumped, saturated = {}, {}, {}, {}, {}
            for path in self._dump_files:
                with np.load(path, allow_pickle=False) as f:
                    dumped.update({k: f[k] for k in f.files})
                os.unlink(path)  # the next run must write it again
            L.read_records(self._procs, list(self._procs), self._index, self._rdir, rec, pair_events,
                           write_events, hosted=True, dumped=dumped, saturated=saturated)
            if self.carry_state:
                self._read_state(dumped, B)
            phases["read"] = time.perf_counter() - t
        except BaseException:
            self.close(force=True)
            raise
        run_index = self._runs
        self._runs += 1
        d = self.bundle.description
        info = {
            "select_tag": self.select_tag,
            "time_steps": self._num_steps,
            "lava_steps_per_frame": self._num_steps / B,
            "processes": len(self._procs),
            **L.placement_info(self.placement),
            "lava_processes": len(self._lava_procs),
            "os_processes": self._os_processes,
            "components": len(self._sessions),
            "attention_pair_events": pair_events,
            "memory_write_pair_events": write_events,
            "saturated_by_process": saturated,
            "wall_time_s": time.perf_counter() - t0,
            "host_time_s": t_host,
            "build_time_s": self._build_time if first else 0.0,
            "lava_time_s": sum(phases.values()),
            "lava_phase_s": {k: round(v, 3) for k, v in phases.items()},
            "live": run_index,
            "memory_reads": sum(1 for p in d["processes"] if p["type"] == "memory_read"),
            "carry_state": self.carry_state,
        }
        out = L.target_run(self.bundle, rec, host, T=T, B=B, info=info)
        if self.carry_state:
            import dataclasses

            out = dataclasses.replace(out, state=self.state)
        return out

    def close(self, force: bool = False) -> None:
        """Stop the runtime (idempotent); the next :meth:`run` starts a new one."""
        try:
            self._running.close(force=force)
        finally:
            self._shape = None
            self._runs = 0
            self._memory_sent = {}
            self.reset_state()

    def __enter__(self) -> "LiveRuntime":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(force=exc_type is not None)

    # -- internals ---------------------------------------------------------------------------

    def _start(self, host_values, T: int, B: int) -> None:
        from spikedeploy.lava_compat import import_lava
        from spikedeploy.runtimes import lava as L
        from spikedeploy.runtimes import lava_partition
        from spikedeploy.runtimes.lava_session import LavaSession

        run_configs, _ = import_lava()
        t = time.perf_counter()
        d = self.bundle.description
        self._running.record_dir = tempfile.TemporaryDirectory(prefix="spikedeploy-lava-live-", dir=L._record_root())
        rdir = self._rdir = Path(self._running.record_dir.name)
        self._index = {p["name"]: i for i, p in enumerate(d["processes"])}
        # self.bundle holds the memories set so far (set_memory), so the processes are built with them
        # no record files per process: each partition writes its members' records (q_rec, rec) and
        # pair-event counters into one file in the frame's last step
        procs, models, num_steps = L.make_processes(self.bundle, host_values, T=T, B=B, record_dir=None,
                                                    select_tag=self.select_tag, carry=self.carry_state,
                                                    neuron_state=self._state_arrays)
        self._memory_sent = self._memories()
        carried = {proc for proc, _ in self._carried.values()} if self.carry_state else set()
        dumps = {name: [(v, str(rdir / f"{self._index[name]}.{v}.npy"))
                        for v in L.READ_VARS + (L.SATURATION_VAR,) if hasattr(p, v)]
                 + ([("state_out", str(rdir / f"{self._index[name]}.state_out.npy"))] if name in carried else [])
                 for name, p in procs.items()}
        frames = [str(rdir / f"frame.{g}.npz") for g in range(len(self.placement.groups))]
        self._dump_files = [str(rdir / f"records.{g}.npz") for g in range(len(self.placement.groups))]
        lava_procs, lava_models, host_of = lava_partition.place(
            procs, models, d["connections"], self.placement, num_steps=num_steps, channel_size=L.CHANNEL_SIZE,
            dumps=dumps, frame_files=frames, dump_files=self._dump_files, select_tag=self.select_tag)
        self._where = {name: (g, j) for g, names in enumerate(self.placement.groups) for j, name in enumerate(names)}
        self._frames = frames
        self._procs, self._lava_procs, self._num_steps = procs, lava_procs, num_steps
        self._sources = [p for p in d["processes"] if p["type"] == "source"]
        cut = {(host_of[c["src"]], host_of[c["dst"]]) for c in d["connections"]}
        comps = L._components(list(lava_procs), [c for c in cut if c[0] != c[1]])
        self._build_time = time.perf_counter() - t
        cfg = run_configs.Loihi2SimCfg(select_tag=self.select_tag, exception_proc_model_map=lava_models)
        self._os_processes = 0
        gc.freeze()  # forked children do not copy the parent's heap page by page for its collector
        try:
            for comp in comps:
                session = LavaSession(lava_procs[comp[0]], cfg, {"pypy_channel_size": L.CHANNEL_SIZE})
                self._sessions.append(session)
                session.start()
                self._os_processes += len(session._actors()) + 1
        finally:
            gc.unfreeze()
        self._shape = (T, B)

    def _carried_shape(self, proc: str):
        return next(shape for p, shape in self._carried.values() if p == proc)

    def _write_frame(self, host_values, T: int, B: int) -> None:
        """Each partition's frame file: what its sources inject for ``host_values`` and the
        memories changed since the last run (kept by the partition for later frames)."""
        from spikedeploy.runtimes import lava as L

        per: List[Dict[str, np.ndarray]] = [{} for _ in self._frames]
        for p in self._sources:
            var, value = L.source_var(self.bundle, p, host_values, T=T, B=B)
            g, j = self._where[p["name"]]
            per[g][f"{j}.{var}"] = value
        if self.carry_state:
            for proc, _ in self._carried.values():
                g, j = self._where[proc]
                a = self._state_arrays.get(proc)
                if a is None:  # fresh: zeros
                    size = int(np.prod(self._carried_shape(proc)))
                    a = np.zeros((2, B, size), np.int64 if L.is_fixed_bundle(self.bundle) else np.float64)
                per[g][f"{j}.state_in"] = a
        for name, mem in self._memories().items():
            if self._memory_sent.get(name) is mem:
                continue
            g, j = self._where[name]
            if L.is_fixed_bundle(self.bundle):  # integer mantissas (checked: the partition casts to int64)
                per[g][f"keep:{j}.memory"] = L._exact(mem, f"memory of {name!r}")
            else:
                per[g][f"keep:{j}.memory"] = np.asarray(mem, dtype=np.float64)
            self._memory_sent[name] = mem
        for path, values in zip(self._frames, per):
            tmp = path + ".tmp.npz"
            np.savez(tmp, **values)
            os.replace(tmp, path)
