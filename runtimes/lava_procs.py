"""The project's own Lava processes (and their ``floating_pt`` process models).

Lava has synapses (``Sparse``, ``Dense``, ``Conv``), I/O (``RingBuffer``) and binary LIF neurons, but
no integer/burst neuron, no graded accumulator with a per-macro-step schedule and no spike-driven
attention. These processes fill the gap; everything else in a spikedeploy Lava network is a
standard Lava process.

Placement: each process runs as its own Lava process (``--partitions per-layer``) or hosted inside
a ``Partition`` (:mod:`spikedeploy.runtimes.lava_partition`), which instantiates these very model
classes in-process and calls their ``run_spk``. There is one arithmetic per process type, the
model's, whatever the placement: the two cannot drift. A model registered in :data:`MODELS` is
hostable without partition-specific code. A model keeps only the clock (windows, the macro-step
schedule), its ports and its state; every number it computes comes from a pure function of
:mod:`spikedeploy.runtimes.lava_kernels` (tested against the reference rules there).

Precision: every process has a ``floating_pt`` model (float64, :data:`MODELS`) and, except
``HostSoftmax`` and ``TemplateGateSynapse`` (whose ops QuantizeFixedPoint refuses), a ``fixed_pt``
model (``Py<Process>Fixed``, :data:`MODELS_BY_TAG` ``["fixed_pt"]``): the float model subclassed,
the same clock, int64 ports and Vars (:data:`TAG_TYPES`) and the int64 kernels (``fixed_*`` in
:mod:`~spikedeploy.runtimes.lava_kernels`); the fixed neuron also counts its state clamps
(``saturated``). Lava's ``Sparse`` and ``RingBuffer`` get exact integer models in the same
registry (end of the module: why not Lava's own ``PySparseModelBitAcc``).

Time convention (shared with :mod:`spikedeploy.exporters.lava`): one Lava time step is one
*sub-step*. Macro-step ``t`` (the model's time axis; with a batch streamed sample after sample,
``t`` runs over ``B * T`` macro-steps) of a stream that starts at Lava step ``start`` with a window
of ``length`` sub-steps occupies the Lava steps ``start + t * period ... start + t * period +
length - 1`` (Lava counts steps from 1). All windows are at most ``period`` long, so the macro-steps
of a stream never overlap.

Processes
---------
``IntegerNeuron``
    Integrates every sub-step of its input window (all incoming connections are summed by the
    ``a_in`` port), adds its ``bias`` once per macro-step, runs the neuron dynamics of
    :mod:`spikedeploy.neurons` on the accumulated current (leak and reset once per macro-step, state
    reset at every sample boundary) and, starting in the same Lava step, emits q unit spikes in the
    first q sub-steps of its output window (``binary``) or one graded event carrying q (``graded``).
    It records the spikes it emitted per macro-step in the Var ``q_rec`` (``[macro, n]``).
    State across calls (``carry``; :class:`spikedeploy.runtimes.lava_live.LiveRuntime` with
    ``carry_state``): the first macro-step of sample b continues from the state in the Var
    ``state_in[:, b]`` (rows: m and q, the binary LIF's u and 0; zeros = the fresh start) instead
    of the reset state, and the state after the sample's last macro-step is kept in ``state_out[:,
    b]`` (always, so a run can be continued).
``Delay``
    A delay line of ``delay`` steps (a ring buffer); used by the compiler to balance paths.
``SpikeAttention``
    Spike-driven linear attention: within the k/v window every pair of a k unit spike and a v unit
    spike on the same token increments one memory cell ``kv[h, c, c']`` (graded events carry
    counts, and the pair count is their product); at the end of the window the memory is frozen for
    the q window, in which each q spike reads its row: ``out = scale * q_j @ kv`` (sent in the same
    step, as a real-valued graded event).
``SpaceTimeAttention``
    SpikeVideoFormer's SDHA (``M = 2K^T V - 1^T V``, ``Y = 2QM - 1^T M``) or dot-product attention
    over token groups of space and time: the k/v pairs and v spikes of a group are counted as they
    arrive (per step for spatial heads, over the sample's T steps for joint / temporal ones), the
    group's memory is frozen when its last k/v window completes (kept per sample, so the next
    sample's k/v may arrive meanwhile); the compiler delays q until then, and each q spike reads
    its memory row; the result is sent once per macro-step in the q window's last step.
``MemoryWriter``
    The write half of ``SpikeAttention`` alone (``MemoryWrite``, SpikeTrack's template memory):
    counts co-occurring k/v unit-spike pairs over the k/v window and, in the step the window
    completes, sends ``scale * kv`` ``[H, C/H, Cv/H]`` as one real-valued graded event (usually to
    a ``Readout``: the memory is a graph output).
``ConvSynapse``
    A 2-D convolution synapse (PyTorch's cross-correlation with zero padding, stride, dilation and
    groups) that keeps the kernel instead of an unrolled matrix. Like Lava's ``Sparse``/``Conv`` it
    sends at step k what it received at step k - 1. Lava's own ``Conv`` process model convolves one
    channel pair at a time with SciPy (``C_in * C_out`` calls per step) and takes kernels in its
    (X, Y, C) layout; this one runs the whole layer as one float64 ``torch.conv2d`` call per step
    (skipped when no input arrives), the same arithmetic as the reference executor.
``HostSource``
    Injects a host value once per macro-step (instead of a ``RingBuffer`` when a buffer with a
    column for every Lava step would be large).
``Readout``
    A graded accumulator at a graph output: integrates its window, adds its constant ``offset``
    once per macro-step and records the value per macro-step in ``rec``.
``MemoryReadSynapse``
    SpikeTrack's memory retrieval ``y = scale * merge_heads(Q_h @ memory[t, h])``
    (:class:`~spikedeploy.ir.ops.MemoryRead`) as a synapse that holds the memory itself
    (``[T_mem, H, C/H, Cv/H]``, the template branch's ``k^T v``, a Var: a new template rewrites one
    array) instead of the block-diagonal matrix ``scale * memory[t, h].T (x) I_N`` (B384's two reads
    of MRM 5 alone would be 7.5e7 synapses). In every step of the q window the tokens that carry
    events read their memory rows (:func:`~spikedeploy.runtimes.lava_kernels.read_rows`); the rows
    read are summed over the window in arrival order and multiplied by ``scale`` once when the
    window is complete (the reference's order, :class:`spikedeploy.reference.MemoryReadRule`:
    ``sum_j s*y_j`` and ``s*sum_j y_j`` differ in the last bit when ``s`` is not a power of two),
    then sent one step later as one real-valued event (a synapse's one-step delay). With a
    time-varying memory (``T_mem`` = the macro-steps of q, SpikeTrack T = 3) macro-step t of a
    sample reads ``memory[t]``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Dict, Tuple

import numpy as np

from spikedeploy.lava_compat import import_lava
from spikedeploy.runtimes.lava_kernels import (attention_read, conv_product, exact_int64, fixed_attention_read,
                                               fixed_conv_product, fixed_matmul_product, fixed_neuron_step,
                                               fixed_read_rows, heads, fixed_sparse_product, kv_pairs, matmul_product,
                                               merge_heads, neuron_output, neuron_step, read_rows, scaled_memory,
                                               softmax_over_steps, sparse_product, st_blocks, st_memory, st_output,
                                               st_pairs, st_read, template_gate_sum)

import_lava()

from lava.magma.core.decorator import implements, requires, tag as lava_tag  # noqa: E402
from lava.magma.core.model.py.model import PyLoihiProcessModel  # noqa: E402
from lava.magma.core.model.py.ports import PyInPort, PyOutPort  # noqa: E402
from lava.magma.core.model.py.type import LavaPyType  # noqa: E402
from lava.magma.core.process.ports.ports import InPort, OutPort  # noqa: E402
from lava.magma.core.process.process import AbstractProcess  # noqa: E402
from lava.magma.core.process.variable import Var  # noqa: E402
from lava.magma.core.resources import CPU  # noqa: E402
from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol  # noqa: E402

__all__ = ["IntegerNeuron", "ConvSynapse", "MatMulSynapse", "HostSource", "Delay", "Junction", "StepGate", "HostSoftmax",
           "TemplateGateSynapse", "SpikeAttention", "SpaceTimeAttention", "MemoryWriter", "MemoryReadSynapse", "Readout", "MODELS",
           "MODELS_BY_TAG", "TAG_TYPES", "ModelSpec", "declare_model", "process_model", "neuron_step",
           "register_model", "saturation_path", "state_keys", "PySparseModelExact", "PyRingBufferExact", "GRADED_BITS"]


def _window(step: int, start: int, length: int, period: int, num_macro: int, slots: int = None,
            steps: int = None):
    """(macro-step, sub-step) of Lava step ``step`` in a stream, or None outside its windows.

    Without ``slots`` macro-step m occupies Lava steps ``start + m*period ...`` (``num_macro``
    of them). With ``slots`` (graphs whose values have different numbers of macro-steps, e.g.
    SpikeTrack T = 3): each sample has ``slots`` macro-step slots, a stream of ``steps`` macro-steps
    uses the first ``steps`` of them, and the index returned is ``sample * steps + step``
    (``num_macro`` = samples * steps)."""
    rel = step - start
    if rel < 0:
        return None
    m, j = divmod(rel, period)
    if j >= length:
        return None
    if slots:
        b, t = divmod(m, slots)
        if t >= steps:
            return None
        m = b * steps + t
    if m >= num_macro:
        return None
    return m, j


def _one_torch_thread() -> None:
    """One OS process per Lava process (or partition): no thread oversubscription. Called in the
    ``__init__`` of the models whose kernels use PyTorch, which runs in the OS process that hosts the
    model; the kernels themselves never touch the thread count (a caller keeps its own)."""
    import torch  # noqa: PLC0415 - only the models that use torch kernels need it

    torch.set_num_threads(1)


# ---------------------------------------------------------------------------------------------
# process models: one declarative factory and the registry
# ---------------------------------------------------------------------------------------------


#: payload width of a graded message on Loihi 2 (the ``precision`` of the fixed_pt ports)
GRADED_BITS = 24

#: the Lava types a model of each tag declares: ``in`` ports, ``out`` ports and Vars (every port is
#: ``VEC_DENSE``, every Var an ndarray). ``floating_pt``: float64 throughout. ``fixed_pt``: int64
#: ports with ``precision=24`` (a Loihi 2 graded payload) and int64 Vars. int64, not Lava's int32/
#: int16 widths: a port between two project processes carries partial sums (a synapse's output
#: before the neuron adds it up) whose width is not the message width, and Lava's Python simulator
#: enforces no ``precision``; what the chip bounds is modelled where it bounds it: the neuron state
#: saturates at ``state_bits`` (counted), the host boundary (``Quantize``) clamps to 24 bits, the
#: weights are 8-bit mantissas by construction (QuantizeFixedPoint). int64 holds every value
#: exactly, so nothing wraps silently.
TAG_TYPES: Dict[str, Dict[str, Callable[[], LavaPyType]]] = {
    "floating_pt": {
        "in": lambda: LavaPyType(PyInPort.VEC_DENSE, float),
        "out": lambda: LavaPyType(PyOutPort.VEC_DENSE, float),
        "var": lambda: LavaPyType(np.ndarray, float),
    },
    "fixed_pt": {
        "in": lambda: LavaPyType(PyInPort.VEC_DENSE, np.int64, precision=GRADED_BITS),
        "out": lambda: LavaPyType(PyOutPort.VEC_DENSE, np.int64, precision=GRADED_BITS),
        "var": lambda: LavaPyType(np.ndarray, np.int64),
    },
}

#: process class -> its floating_pt process model (passed to Lava as exception_proc_model_map,
#: so Lava does not search sibling modules for models; processes with fused inputs use a subclass
#: declaring their tap ports: ``process.fused_model(MODELS[type(process)])``). Filled by
#: :func:`process_model` as the models below are defined.
MODELS: Dict[type, type] = {}

#: tag -> that tag's registry (process class -> model); ``floating_pt`` is :data:`MODELS`;
#: ``fixed_pt`` holds the project's fixed-point models and the exact integer models of Lava's
#: ``Sparse`` and ``RingBuffer`` (end of this module)
MODELS_BY_TAG: Dict[str, Dict[type, type]] = {"floating_pt": MODELS, "fixed_pt": {}}


@dataclass(frozen=True)
class ModelSpec:
    """What a process model declares to Lava: the process it implements, the names of its InPorts,
    OutPorts and Vars (Lava's builder checks that they are exactly the process's), and its tag
    (which fixes their Lava types, :data:`TAG_TYPES`). The model's ``__init__``/``run_spk`` are
    the class body; its arithmetic is in :mod:`spikedeploy.runtimes.lava_kernels`."""

    process: type
    ins: Tuple[str, ...] = ()
    outs: Tuple[str, ...] = ()
    vars: Tuple[str, ...] = ()
    tag: str = "floating_pt"

    def with_tag(self, tag: str) -> "ModelSpec":
        """The same ports and Vars for another tag (a second model of the same process)."""
        return replace(self, tag=tag)

    def lava_types(self) -> Dict[str, LavaPyType]:
        """Port/Var name -> the ``LavaPyType`` the model declares for it."""
        types = TAG_TYPES[self.tag]
        return {**{p: types["in"]() for p in self.ins}, **{p: types["out"]() for p in self.outs},
                **{v: types["var"]() for v in self.vars}}


def register_model(process: type, model: type, tag: str = "floating_pt") -> None:
    """Add ``model`` as the ``tag`` model of ``process`` (``floating_pt``: :data:`MODELS`);
    registering a process twice for one tag is an error."""
    registry = MODELS_BY_TAG.setdefault(tag, {})
    if process in registry:
        raise ValueError(f"process {process.__name__} already has the model {registry[process].__name__}")
    registry[process] = model


def declare_model(spec: ModelSpec) -> Callable[[type], type]:
    """Class decorator: the class (a ``PyLoihiProcessModel`` with the model's ``__init__`` and
    ``run_spk``) becomes the Lava process model ``spec`` describes: it declares the ``LavaPyType``
    of every port and Var of the spec's tag, is decorated with Lava's ``implements`` (Loihi
    protocol), ``requires(CPU)`` and ``tag``, carries ``model_spec`` and is registered
    (:func:`register_model`; a second model for a process and tag is refused before the class is
    touched).

    A second tag of a process is one small step: a ``TAG_TYPES`` row for the tag, and a subclass
    of the floating-point model that overrides the kernel calls, declared with the same ports::

        @declare_model(PyIntegerNeuronFloat.model_spec.with_tag("fixed_pt"))
        class PyIntegerNeuronFixed(PyIntegerNeuronFloat): ...

    (registered in ``MODELS_BY_TAG["fixed_pt"]``; a run selects the registry of its tag)."""
    if spec.tag not in TAG_TYPES:
        raise ValueError(f"no Lava types for the tag {spec.tag!r} (known: {', '.join(TAG_TYPES)})")

    def make(cls: type) -> type:
        registered = MODELS_BY_TAG.get(spec.tag, {}).get(spec.process)
        if registered is not None:
            raise ValueError(f"process {spec.process.__name__} already has the model {registered.__name__}")
        for name, lava_type in spec.lava_types().items():
            setattr(cls, name, lava_type)
        cls.model_spec = spec
        # Lava's tags and resources add up over inheritance: a model of another tag made by
        # subclassing one of these (fixed_pt from floating_pt) carries its own tag alone
        cls.tags, cls.required_resources = [], []
        cls = implements(proc=spec.process, protocol=LoihiProtocol)(requires(CPU)(lava_tag(spec.tag)(cls)))
        register_model(spec.process, cls, spec.tag)
        return cls

    return make


def process_model(process: type, *, ins: Tuple[str, ...] = (), outs: Tuple[str, ...] = (),
                  vars: Tuple[str, ...] = (), tag: str = "floating_pt") -> Callable[[type], type]:
    """``@process_model(Proc, ins=(...), outs=(...), vars=(...))``: :func:`declare_model` of that
    :class:`ModelSpec`."""
    return declare_model(ModelSpec(process, tuple(ins), tuple(outs), tuple(vars), tag))


# ---------------------------------------------------------------------------------------------
# fused inputs and windowed outputs (see spikedeploy.exporters.lava.fuse_processes)
# ---------------------------------------------------------------------------------------------


def _model_class(base: type, add_ports, drop_ports) -> type:
    """A subclass of the process model ``base`` that declares the InPorts ``add_ports`` (one per
    fused tap source) and not the plain ports ``drop_ports`` (fused away). Lava's builder checks
    that the model declares exactly the process's ports; the class is made (and cached) in the
    parent, and Lava forks its OS processes, so the children have it."""
    key = (base, tuple(add_ports), tuple(drop_ports))
    cls = _MODEL_CLASSES.get(key)
    if cls is None:
        spec = getattr(base, "model_spec", None)
        in_type = TAG_TYPES[spec.tag if spec is not None else "floating_pt"]["in"]
        attrs = {p: in_type() for p in add_ports}
        attrs.update({p: None for p in drop_ports})
        cls = type(f"{base.__name__}_{len(add_ports)}taps", (base,), attrs)
        _MODEL_CLASSES[key] = cls
    return cls


_MODEL_CLASSES: dict = {}


class _TapProcess(AbstractProcess):
    """Base of the project processes that accept fused inputs (``inputs``: logical port -> taps,
    see :func:`spikedeploy.exporters.lava.fuse_processes`) and windowed outputs (``send``)."""

    def _make_in_ports(self, plain: dict, inputs: dict) -> None:
        for name, size in plain.items():
            if name not in inputs:
                setattr(self, name, InPort(shape=(int(size),)))
        for taps in inputs.values():
            for t in taps:
                for s in t["sources"]:
                    setattr(self, s["port"], InPort(shape=(int(s["size"]),)))

    def fused_model(self, base: type) -> type:
        inputs = self.proc_params.get("inputs") or {}
        if not inputs:
            return base
        ports = [s["port"] for taps in inputs.values() for t in taps for s in t["sources"]]
        return _model_class(base, ports, sorted(inputs))


class _Source:
    """One tap port (one sender): the non-zero data that arrived, by arrival step."""

    __slots__ = ("port", "sched", "buf", "keep")

    def __init__(self, port, sched):
        self.port, self.sched = port, sched
        self.buf = {}  # arrival step -> data (only non-zero arrivals)
        self.keep = 0  # the longest delay any read of this port uses


class _Tap:
    """One fused input: ``syn(sum of its reads)``, a read being a port's data delayed by ``delay``
    steps and, with a step filter (a fused ``StepGate``), only data that arrived in the accepted
    macro-steps (see the exporter's ``fuse_processes``). ``syn`` reproduces the fused process:
    Lava ``Sparse`` floating point (``W[:, s.astype(bool)].sum(axis=1)`` for 0-bit messages,
    ``W.dot(s)`` otherwise) or the ``ConvSynapse`` kernel (float64 ``torch.conv2d``)."""

    def __init__(self, syn, reads, accept, fixed: bool = False):
        self.reads = reads  # [(source, delay, filter)]
        self.accept = accept  # filter -> arrival step -> bool
        self.kind = None if syn is None else syn["kind"]
        #: fixed_pt: the synapse computes in integers (lava_kernels' fixed_* products)
        self.fixed = fixed
        if self.kind == "sparse":
            self.w = _int_csr(syn["matrix"], "fused Sparse weights") if fixed else syn["matrix"]
            self.binary = int(syn["num_message_bits"]) == 0
        elif self.kind == "matmul":
            w = syn["weight_array"]
            self.w = _as_int64(w, "fused matmul weights") if fixed else np.ascontiguousarray(w)
            self.rows = int(syn["rows"])
        elif self.kind == "conv":
            import torch  # noqa: PLC0415 - only convolving taps need torch

            _one_torch_thread()  # taps are made in the model's first step, in its OS process
            w = syn["weight_array"]
            if fixed:
                w = _as_int64(w, "fused convolution kernel")
                self.bound = syn["bound"] if "bound" in syn else _conv_bound(w)
            self.kernel = torch.from_numpy(np.array(w, dtype=np.float64))  # a writable copy
            self.in_shape = tuple(syn["in_shape"])
            self.conv_args = (tuple(syn["stride"]), tuple(syn["padding"]), tuple(syn["dilation"]), int(syn["groups"]))

    def at(self, k: int):
        x = None
        for src, delay, filt in self.reads:
            a = k - delay
            v = src.buf.get(a)
            if v is not None and (filt is None or self.accept(filt, a)):
                x = v.copy() if x is None else x + v  # Lava InPort: zeros + c1 + c2 ...
        if x is None or self.kind is None:
            return x
        if self.fixed:
            if self.kind == "sparse":
                return fixed_sparse_product(self.w, x)
            if self.kind == "matmul":
                return fixed_matmul_product(self.w, x, self.rows)
            return fixed_conv_product(x, self.kernel, self.in_shape, *self.conv_args, self.bound)
        if self.kind == "sparse":
            return sparse_product(self.w, x, self.binary)
        if self.kind == "matmul":
            return matmul_product(self.w, x, self.rows)
        return conv_product(x, self.kernel, self.in_shape, *self.conv_args)


def _int_csr(matrix, what: str):
    """``matrix`` as a CSR matrix with int64 entries: itself when it is one (the runtime makes them,
    checked, in the parent), else a new one whose entries are checked to be exact integers."""
    if matrix.format == "csr" and matrix.dtype == np.int64:
        return matrix
    m = matrix.tocsr(copy=True)
    m.data = exact_int64(m.data, what)
    return m


def _as_int64(a, what: str) -> np.ndarray:
    """``a`` itself when it is an int64 array, else :func:`exact_int64` of it (checked)."""
    return a if isinstance(a, np.ndarray) and a.dtype == np.int64 else exact_int64(a, what)


def _conv_bound(kernel: np.ndarray) -> float:
    """The largest ``sum |w|`` over one output's taps of a kernel ``[C_out, C/g, kh, kw]``: every
    partial sum of the convolution is at most ``max|x|`` times this."""
    k = np.abs(np.asarray(kernel, dtype=np.float64))
    return float(k.reshape(k.shape[0], -1).sum(axis=1).max()) if k.size else 0.0


class _TapModel(PyLoihiProcessModel):
    """Process-model base: fused inputs, windowed sends and the macro-step clock.

    Per step k: :meth:`_receive` reads every tap port whose sender is active at k (all ports of
    senders that send every step); :meth:`_input` returns the current of a logical port at k —
    the plain port's ``recv()``, or for fused ports the sum over taps (in the unfused connection
    order) of ``syn(x[k - delay])``, None when nothing arrived; :meth:`_send` sends only inside
    the port's window when the port is windowed (its readers receive on the same schedule).

    ``dtype``/``fixed``: the number type the model computes in (float64; a fixed_pt subclass sets
    int64 and ``fixed``, which makes its fused synapses integer products)."""

    dtype = np.float64
    fixed = False

    def __init__(self, proc_params):
        super().__init__(proc_params)
        p = self.proc_params
        self._period, self._num_macro = int(p["period"]), int(p["num_macro"])
        self._slots, self._steps = p.get("slots"), p.get("steps")
        self._samples = self._num_macro // self._steps if self._slots else None
        self._inputs_spec = p.get("inputs") or {}
        self._send_spec = p.get("send") or {}
        self._record = p.get("record")
        self._taps = None

    def _write_record(self, k: int, data: np.ndarray) -> None:
        """Recording without Lava's ``Var.get`` (which moves one element per message through the
        runtime service): at step ``record["step"]`` (the last step that changes the record) the
        record is written to ``record["path"]`` (``.npy``, atomically)."""
        if self._record is None or k != self._record["step"]:
            return
        import os  # noqa: PLC0415

        path = self._record["path"]
        tmp = path + ".tmp.npy"
        np.save(tmp, np.asarray(data))
        os.replace(tmp, path)

    def _win(self, k: int, start: int, length: int, steps: int = None):
        """The window of this process's clock (``steps``: of another stream, e.g. a sender)."""
        if not self._slots or steps is None or steps == self._steps:
            return _window(k, start, length, self._period, self._num_macro, self._slots, self._steps)
        return _window(k, start, length, self._period, self._samples * steps, self._slots, steps)

    def _accept(self, filt: dict, a: int) -> bool:
        """Whether data that arrived at step ``a`` passes a fused step gate."""
        rel = a - filt["start"]
        if rel < 0:
            return False
        m = rel // self._period
        return (m % self._slots if self._slots else m) in filt["accept"]

    def _setup_taps(self):
        self._taps, sources = {}, {}
        for lp, taps in self._inputs_spec.items():
            lst = []
            for t in taps:
                reads = []
                for e in t["sources"]:
                    src = sources.get(e["port"])
                    if src is None:
                        src = sources[e["port"]] = _Source(getattr(self, e["port"]), e.get("sched"))
                    src.keep = max(src.keep, int(e["delay"]))
                    reads.append((src, int(e["delay"]), e.get("filter")))
                lst.append(_Tap(t["syn"], reads, self._accept, self.fixed))
            self._taps[lp] = lst
        self._sources = list(sources.values())

    def _receive(self, k: int) -> None:
        if self._taps is None:
            self._setup_taps()
        for s in self._sources:
            sc = s.sched
            if sc is None or self._win(k, sc[0], sc[1], sc[2] if len(sc) > 2 else None) is not None:
                x = s.port.recv()
                if x.any():
                    s.buf[k] = x
            if s.buf:
                for key in [key for key in s.buf if key + s.keep < k]:
                    del s.buf[key]  # no read of this port can use it any more

    def _input(self, lp: str, k: int, needed: bool):
        """Current of logical port ``lp`` at step ``k`` (None: nothing arrived / not needed)."""
        taps = self._taps.get(lp)
        if taps is None:
            return getattr(self, lp).recv()  # plain port: receive every step
        if not needed:
            return None
        acc = None
        for t in taps:
            c = t.at(k)
            if c is not None:
                acc = c.astype(self.dtype) if acc is None else acc + c
        return acc

    def _active(self, port: str, k: int) -> bool:
        w = self._send_spec.get(port)
        return w is None or self._win(k, w[0], w[1], w[2] if len(w) > 2 else None) is not None

    def _send(self, port: str, data: np.ndarray) -> None:
        getattr(self, port).send(data)


def _zeros_if_none(x, size, dtype=np.float64):
    return np.zeros(size, dtype) if x is None else x


def _clock_params(period: int, num_macro: int, inputs=None, send=None, record=None, slots=None,
                  steps=None) -> dict:
    d = {"period": int(period), "num_macro": int(num_macro)}
    if slots:
        d["slots"], d["steps"] = int(slots), int(steps)
    if record:
        d["record"] = record
    if inputs:
        d["inputs"] = inputs
    if send:
        d["send"] = send
    return d


# ---------------------------------------------------------------------------------------------
# processes
# ---------------------------------------------------------------------------------------------


class IntegerNeuron(_TapProcess):
    """Integer / binary LIF layer of ``size`` neurons (see module docstring).

    proc params: ``neuron`` (dynamics, see :func:`neuron_step`), ``encoding`` ("binary"/"graded"),
    ``window`` (output sub-steps), ``in_start``, ``in_len``, ``period``, ``num_macro``,
    ``sample_steps`` (macro-steps per sample: the state resets every ``sample_steps``), optional
    ``inputs`` (fused taps of ``a_in``) and ``send`` (windowed ``s_out``); ``carry`` (start each
    sample from ``state_in``, see the module docstring) and ``state_in`` (``[2, samples, size]``,
    default zeros)."""

    def __init__(self, *, size: int, bias: np.ndarray, neuron: dict, encoding: str, window: int,
                 in_start: int, in_len: int, period: int, num_macro: int, sample_steps: int,
                 inputs: dict = None, send: dict = None, record: dict = None, slots: int = None,
                 name: str = None, carry: bool = False, state_in: np.ndarray = None):
        super().__init__(size=size, neuron=neuron, encoding=encoding, window=window,
                         in_start=in_start, in_len=in_len, sample_steps=sample_steps, name=name, carry=bool(carry),
                         **_clock_params(period, num_macro, inputs, send, record, slots, sample_steps))
        samples = int(num_macro) // int(sample_steps)
        if state_in is None:
            state_in = np.zeros((2, samples, size))
        elif np.shape(state_in) != (2, samples, size):
            raise ValueError(f"IntegerNeuron {name!r}: state_in has shape {list(np.shape(state_in))}, expected "
                             f"{[2, samples, size]}")
        self.state_in = Var(shape=(2, samples, size), init=np.asarray(state_in))
        self.state_out = Var(shape=(2, samples, size), init=np.zeros((2, samples, size)))
        self._make_in_ports({"a_in": size}, inputs or {})
        self.s_out = OutPort(shape=(size,))
        bias = np.asarray(bias, dtype=np.float64).reshape(-1, size)  # [1 or steps, size]
        self.bias = Var(shape=bias.shape, init=bias)
        self.q_rec = Var(shape=(num_macro, size), init=np.zeros((num_macro, size)))
        if str(neuron.get("kind", "")).startswith("fixed_"):
            #: fixed point: state elements clamped to the state width, per macro-step
            self.saturated = Var(shape=(num_macro,), init=np.zeros(num_macro))


def state_keys(kind: str) -> Tuple[str, ...]:
    """The state a neuron ``kind`` carries, in the rows of ``state_in``/``state_out``."""
    if kind in ("binary_lif", "fixed_binary_lif"):
        return ("u",)
    return ("v", "q") if kind in ("fixed_integer_lif", "fixed_dynamic_integer_lif") else ("m", "q")


@process_model(IntegerNeuron, ins=("a_in",), outs=("s_out",), vars=("bias", "q_rec", "state_in", "state_out"))
class PyIntegerNeuronFloat(_TapModel):
    def __init__(self, proc_params):
        super().__init__(proc_params)
        p = self.proc_params
        self.neuron = p["neuron"]
        self.graded = p["encoding"] == "graded"
        self.window = int(p["window"])
        self.in_start, self.in_len = int(p["in_start"]), int(p["in_len"])
        self.sample_steps = int(p["sample_steps"])
        self.out_start = self.in_start + self.in_len - 1
        self.size = int(p["size"])
        self.acc = np.zeros(self.size, self.dtype)
        self.q = np.zeros(self.size, self.dtype)
        self.state = {}
        self.carry = bool(p.get("carry", False))
        self._keys = state_keys(str(self.neuron.get("kind", "")))

    def _start(self, t: int, step: int):
        """The carried state sample ``t // sample_steps`` starts from (None: the reset state)."""
        if not self.carry or step != 0:
            return None
        b = t // self.sample_steps
        return {k: np.array(self.state_in[i, b], dtype=self.dtype) for i, k in enumerate(self._keys)}

    def _end(self, t: int, step: int) -> None:
        """After a sample's last macro-step: its state into ``state_out``."""
        if step == self.sample_steps - 1:
            b = t // self.sample_steps
            for i, k in enumerate(self._keys):
                self.state_out[i, b] = self.state[k]

    def _step(self, t: int, current: np.ndarray, step: int) -> None:
        """The neuron dynamics of macro-step ``t`` (``step`` within the sample)."""
        self.q, self.state = neuron_step(self.neuron, current, step, self.state, self._start(t, step))
        self._end(t, step)

    def _output(self, j: int) -> np.ndarray:
        return neuron_output(self.q, j, self.graded)

    def run_spk(self):
        k = self.time_step
        self._receive(k)
        win = self._win(k, self.in_start, self.in_len)
        x = self._input("a_in", k, win is not None)
        if win is not None:
            t, j = win
            x = _zeros_if_none(x, self.size, self.dtype)
            self.acc = x.astype(self.dtype) if j == 0 else self.acc + x
            if j == self.in_len - 1:  # the window is complete: fire once for this macro-step
                step = t % self.sample_steps
                current = self.acc + self.bias[step % self.bias.shape[0]]  # per-step bias rows, if any
                self._step(t, current, step)
        if not self._active("s_out", k):
            self._write_record(k, self.q_rec)
            return
        out = np.zeros_like(self.q)
        win = self._win(k, self.out_start, self.window)
        if win is not None:
            t, j = win
            out = self._output(j)
            self.q_rec[t] += out
            self._write_record(k, self.q_rec)
        self._send("s_out", out)


class Delay(AbstractProcess):
    """Delays its input by ``delay`` >= 1 Lava steps."""

    def __init__(self, *, size: int, delay: int, name: str = None):
        if delay < 1:
            raise ValueError(f"Delay needs delay >= 1, got {delay}")
        super().__init__(size=size, delay=delay, name=name)
        self.a_in = InPort(shape=(size,))
        self.a_out = OutPort(shape=(size,))
        self.buf = Var(shape=(delay, size), init=np.zeros((delay, size)))


@process_model(Delay, ins=("a_in",), outs=("a_out",), vars=("buf",))
class PyDelayFloat(PyLoihiProcessModel):
    def run_spk(self):
        slot = self.time_step % self.buf.shape[0]
        self.a_out.send(self.buf[slot].copy())  # received `delay` steps ago
        self.buf[slot] = self.a_in.recv()


class Junction(_TapProcess):
    """A residual relay with fused inputs: ``a_out[k] = sum of its taps' inputs at k - 1`` (the
    fused form of a one-step ``Delay`` whose port sums several streams). Its taps are read in the
    window ``in_start``, ``in_len`` of every macro-step; it sends in the window one step later."""

    def __init__(self, *, size: int, in_start: int, in_len: int, period: int, num_macro: int,
                 inputs: dict = None, send: dict = None, slots: int = None, steps: int = None, name: str = None):
        super().__init__(size=size, in_start=in_start, in_len=in_len, name=name,
                         **_clock_params(period, num_macro, inputs, send, None, slots, steps))
        self._make_in_ports({"a_in": size}, inputs or {})
        self.a_out = OutPort(shape=(size,))


@process_model(Junction, ins=("a_in",), outs=("a_out",))
class PyJunctionFloat(_TapModel):
    def __init__(self, proc_params):
        super().__init__(proc_params)
        p = self.proc_params
        self.size, self.in_start, self.in_len = int(p["size"]), int(p["in_start"]), int(p["in_len"])
        self.buf = np.zeros(self.size, self.dtype)

    def run_spk(self):
        k = self.time_step
        self._receive(k)
        if self._active("a_out", k):
            self._send("a_out", self.buf)
        x = self._input("a_in", k, self._win(k, self.in_start, self.in_len) is not None)
        self.buf = _zeros_if_none(x, self.size, self.dtype)


class ConvSynapse(AbstractProcess):
    """A convolution synapse ``a_out = conv2d(s_in)`` (no bias: the compiler carries biases forward),
    input ``[C, H, W]`` and output ``[C_out, H_out, W_out]`` flattened row-major, one-step delay.

    proc params: ``in_shape`` (C, H, W), ``stride``, ``padding``, ``dilation``, ``groups``."""

    def __init__(self, *, weight: np.ndarray, in_shape, out_shape, stride, padding, dilation, groups: int,
                 name: str = None):
        weight = np.asarray(weight, dtype=np.float64)
        n_in, n_out = int(np.prod(in_shape)), int(np.prod(out_shape))
        super().__init__(in_shape=tuple(int(v) for v in in_shape), out_shape=tuple(int(v) for v in out_shape),
                         stride=tuple(stride), padding=tuple(padding), dilation=tuple(dilation),
                         groups=int(groups), name=name)
        self.s_in = InPort(shape=(n_in,))
        self.a_out = OutPort(shape=(n_out,))
        self.weight = Var(shape=weight.shape, init=weight)


@process_model(ConvSynapse, ins=("s_in",), outs=("a_out",), vars=("weight",))
class PyConvSynapseFloat(PyLoihiProcessModel):
    def __init__(self, proc_params):
        super().__init__(proc_params)
        p = self.proc_params
        self.in_shape, self.out_shape = tuple(p["in_shape"]), tuple(p["out_shape"])
        self.conv_args = (tuple(p["stride"]), tuple(p["padding"]), tuple(p["dilation"]), int(p["groups"]))
        self.a_buf = np.zeros(int(np.prod(self.out_shape)))
        self.kernel = None
        _one_torch_thread()

    def run_spk(self):
        self.a_out.send(self.a_buf)
        x = self.s_in.recv()
        if not x.any():  # no spike arrived: the contribution is exactly zero
            self.a_buf = np.zeros_like(self.a_buf)
            return
        if self.kernel is None:  # the Var holds its value once the model is built
            import torch  # noqa: PLC0415

            self.kernel = torch.from_numpy(np.asarray(self.weight, dtype=np.float64))
        self.a_buf = conv_product(x, self.kernel, self.in_shape, *self.conv_args)


class MatMulSynapse(AbstractProcess):
    """A dense layer on the last axis kept as a kernel: ``a_out[r] = W @ s_in[r]`` for each of the
    ``rows`` rows of the input ``[rows, I]`` (flattened row-major; no bias, the compiler carries
    biases forward), one-step delay like ``Sparse``. Used for ``Linear``/``GateLinear`` whose
    unrolled block-diagonal matrix would be too large (SpikeTrack T = 3's template-gate MLP)."""

    def __init__(self, *, weight: np.ndarray, rows: int, name: str = None):
        weight = np.asarray(weight, dtype=np.float64)
        super().__init__(rows=int(rows), name=name)
        self.s_in = InPort(shape=(int(rows) * weight.shape[1],))
        self.a_out = OutPort(shape=(int(rows) * weight.shape[0],))
        self.weight = Var(shape=weight.shape, init=weight)


@process_model(MatMulSynapse, ins=("s_in",), outs=("a_out",), vars=("weight",))
class PyMatMulSynapseFloat(PyLoihiProcessModel):
    def __init__(self, proc_params):
        super().__init__(proc_params)
        self.rows = int(self.proc_params["rows"])
        self.a_buf = None

    def run_spk(self):
        if self.a_buf is None:
            self.a_buf = np.zeros(self.rows * self.weight.shape[0])
        self.a_out.send(self.a_buf)
        x = self.s_in.recv()
        self.a_buf = matmul_product(self.weight, x, self.rows) if x.any() else np.zeros_like(self.a_buf)


class SpikeAttention(_TapProcess):
    """Spike-driven linear attention on q, k ``[C, N]`` and v ``[Cv, N]`` (row-major flat ports).

    proc params: ``heads``, ``scale``, ``channels`` (C), ``v_channels`` (Cv), ``tokens`` (N),
    ``kv_start``, ``kv_len`` (the aligned k/v windows), ``q_start``, ``q_len`` (q window; it starts
    after the k/v window ends), ``period``, ``num_macro``, optional ``inputs``/``send``."""

    def __init__(self, *, channels: int, v_channels: int, tokens: int, heads: int, scale: float,
                 kv_start: int, kv_len: int, q_start: int, q_len: int, period: int, num_macro: int,
                 inputs: dict = None, send: dict = None, slots: int = None, steps: int = None,
                 name: str = None):
        super().__init__(channels=channels, v_channels=v_channels, tokens=tokens, heads=heads,
                         scale=scale, kv_start=kv_start, kv_len=kv_len, q_start=q_start,
                         q_len=q_len, name=name, **_clock_params(period, num_macro, inputs, send, None, slots, steps))
        self._make_in_ports({"q_in": channels * tokens, "k_in": channels * tokens, "v_in": v_channels * tokens},
                            inputs or {})
        self.a_out = OutPort(shape=(v_channels * tokens,))
        #: unit-spike pair events written into the kv memory, per macro-step
        self.pair_events = Var(shape=(num_macro,), init=np.zeros(num_macro))


@process_model(SpikeAttention, ins=("q_in", "k_in", "v_in"), outs=("a_out",), vars=("pair_events",))
class PySpikeAttentionFloat(_TapModel):
    def __init__(self, proc_params):
        super().__init__(proc_params)
        p = self.proc_params
        self.h, self.scale = int(p["heads"]), float(p["scale"])
        self.c, self.cv, self.n = int(p["channels"]), int(p["v_channels"]), int(p["tokens"])
        self.sched = {k: int(p[k]) for k in ("kv_start", "kv_len", "q_start", "q_len")}
        h = self.h
        self.kv_acc = np.zeros((h, self.c // h, self.cv // h), self.dtype)
        self.kv = np.zeros_like(self.kv_acc)
        self.ck = np.zeros((h, self.n, self.c // h), self.dtype)
        self.cv_ = np.zeros((h, self.n, self.cv // h), self.dtype)

    def _read(self, q: np.ndarray) -> np.ndarray:
        return attention_read(q, self.kv, self.scale)

    def run_spk(self):
        s = self.sched
        step = self.time_step
        self._receive(step)
        qwin = self._win(step, s["q_start"], s["q_len"])
        kvwin = self._win(step, s["kv_start"], s["kv_len"])
        q = self._input("q_in", step, qwin is not None)
        k = self._input("k_in", step, kvwin is not None)
        v = self._input("v_in", step, kvwin is not None)
        send = self._active("a_out", step)
        out = np.zeros(self.cv * self.n, self.dtype) if send else None
        # 1. q spikes read rows of the frozen memory of this macro-step
        if qwin is not None and send:
            out = self._read(_zeros_if_none(q, self.c * self.n, self.dtype))
        # 2. k/v spikes write the memory: every co-occurring (same token) k/v spike pair
        if kvwin is not None:
            t, j = kvwin
            if j == 0:
                self.kv_acc[:] = 0
                self.ck[:] = 0
                self.cv_[:] = 0
            inc, self.ck, self.cv_ = kv_pairs(_zeros_if_none(k, self.c * self.n, self.dtype),
                                              _zeros_if_none(v, self.cv * self.n, self.dtype), self.ck, self.cv_, self.h)
            self.kv_acc += inc
            self.pair_events[t] += inc.sum()
            if j == s["kv_len"] - 1:
                self.kv = self.kv_acc.copy()
        if send:
            self._send("a_out", out)


class SpaceTimeAttention(_TapProcess):
    """SpikeVideoFormer's space-time spike attention (SDHA, ``score="hamming"``, or the dot product)
    on q, k ``[C, N]`` and v ``[Cv, N]`` per macro-step (row-major flat ports).

    proc params: ``heads``, ``groupings`` (the token grouping of every head: spatial / temporal /
    joint), ``score``, ``scale``, ``channels`` (C), ``v_channels`` (Cv), ``tokens`` (N),
    ``sample_steps`` (T: the macro-steps of one sample), ``kv_start``, ``kv_len`` (the aligned k/v
    windows), ``q_start``, ``q_len`` (the q window: the compiler delays q until the k/v of every
    step its group needs are in), ``period``, ``num_macro``, optional ``inputs``/``send``."""

    def __init__(self, *, channels: int, v_channels: int, tokens: int, heads: int, groupings, score: str,
                 scale: float, sample_steps: int, kv_start: int, kv_len: int, q_start: int, q_len: int,
                 period: int, num_macro: int, inputs: dict = None, send: dict = None, slots: int = None,
                 steps: int = None, name: str = None):
        super().__init__(channels=channels, v_channels=v_channels, tokens=tokens, heads=heads,
                         groupings=list(groupings), score=score, scale=scale, sample_steps=sample_steps,
                         kv_start=kv_start, kv_len=kv_len, q_start=q_start, q_len=q_len, name=name,
                         **_clock_params(period, num_macro, inputs, send, None, slots, steps))
        self._make_in_ports({"q_in": channels * tokens, "k_in": channels * tokens, "v_in": v_channels * tokens},
                            inputs or {})
        self.a_out = OutPort(shape=(v_channels * tokens,))
        #: co-occurring k·v unit-spike pairs counted into the memories, per macro-step
        self.pair_events = Var(shape=(num_macro,), init=np.zeros(num_macro))


@process_model(SpaceTimeAttention, ins=("q_in", "k_in", "v_in"), outs=("a_out",), vars=("pair_events",))
class PySpaceTimeAttentionFloat(_TapModel):
    """The clock of :class:`SpaceTimeAttention`; every number from the ``st_*`` kernels.

    Per head block (:func:`~spikedeploy.runtimes.lava_kernels.st_blocks`) the pair and column
    counts of a token group accumulate under the group's key: the macro-step (spatial) or the
    sample (joint, temporal: all T steps of it). When the k/v window of a group's last step
    completes, the group is frozen into ``(M, 1^T M)`` (``st_memory``), kept by key -- the k/v of
    the next sample may arrive while the q of this one are still read (the batch pipelines). In
    the q window of macro-step m every sub-step's q spikes read rows of their group's memory
    (``st_read``, summed over the window); in its last step the block's result ``2 acc - 1^T M``
    (``st_output``, the scale once) is sent as one real-valued event, and a memory whose last q
    read is done is dropped."""

    def __init__(self, proc_params):
        super().__init__(proc_params)
        p = self.proc_params
        self.h, self.scale, self.score = int(p["heads"]), float(p["scale"]), str(p["score"])
        self.c, self.cv, self.n = int(p["channels"]), int(p["v_channels"]), int(p["tokens"])
        self.T = int(p["sample_steps"])
        self.sched = {k: int(p[k]) for k in ("kv_start", "kv_len", "q_start", "q_len")}
        self.blocks = st_blocks(p["groupings"])
        self.d, self.dv = self.c // self.h, self.cv // self.h
        self.ck = np.zeros((self.h, self.n, self.d), self.dtype)
        self.cvs = np.zeros((self.h, self.n, self.dv), self.dtype)
        self.counts = [dict() for _ in self.blocks]  # block -> key -> [kv, vs] (being counted)
        self.frozen = [dict() for _ in self.blocks]  # block -> key -> (M, 1^T M)
        self.qacc = None

    def _key(self, grouping: str, m: int) -> int:
        return m if grouping == "spatial" else m // self.T

    def _last(self, grouping: str, m: int) -> bool:
        """Whether macro-step m is the last step of its group."""
        return grouping == "spatial" or m % self.T == self.T - 1

    def _write(self, m: int, j: int, k, v) -> None:
        if j == 0:
            self.ck[:] = 0
            self.cvs[:] = 0
            for b, (g, h0, h1) in enumerate(self.blocks):
                if g == "spatial" or m % self.T == 0:
                    ng = self.n if g == "temporal" else 1
                    self.counts[b][self._key(g, m)] = [np.zeros((h1 - h0, ng, self.d, self.dv), self.dtype),
                                                       np.zeros((h1 - h0, ng, self.dv), self.dtype)]
        if k is not None or v is not None:
            kh = heads(_zeros_if_none(k, self.c * self.n, self.dtype), self.h, self.c, self.n)
            vh = heads(_zeros_if_none(v, self.cv * self.n, self.dtype), self.h, self.cv, self.n)
            for b, (g, h0, h1) in enumerate(self.blocks):
                kv, vs = st_pairs(kh[h0:h1], vh[h0:h1], self.ck[h0:h1], self.cvs[h0:h1], g)
                acc = self.counts[b][self._key(g, m)]
                acc[0] += kv
                acc[1] += vs
                self.pair_events[m] += kv.sum()
            self.ck += kh
            self.cvs += vh
        if j == self.sched["kv_len"] - 1:  # the window of macro-step m is complete
            for b, (g, _, _) in enumerate(self.blocks):
                if self._last(g, m):
                    key = self._key(g, m)
                    self.frozen[b][key] = self._memory(*self.counts[b].pop(key))

    def _memory(self, kv, vs):
        return st_memory(kv, vs, self.score)

    def _read(self, q, memory, grouping):
        return st_read(q, memory, grouping)

    def _result(self, acc, offset):
        return st_output(acc, offset, self.scale)

    def _query(self, m: int, j: int, q) -> np.ndarray:
        """Sub-step j of macro-step m's q window; the result ``[Cv*N]`` in the window's last step."""
        if j == 0:
            self.qacc = [np.zeros((h1 - h0, self.n, self.dv), self.dtype) for _, h0, h1 in self.blocks]
        if q is not None and q.any():
            qh = heads(q, self.h, self.c, self.n)
            for b, (g, h0, h1) in enumerate(self.blocks):
                self.qacc[b] = self.qacc[b] + self._read(qh[h0:h1], self.frozen[b][self._key(g, m)][0], g)
        if j != self.sched["q_len"] - 1:
            return None
        ys = []
        for b, (g, _, _) in enumerate(self.blocks):
            key = self._key(g, m)
            ys.append(self._result(self.qacc[b], self.frozen[b][key][1]))
            if self._last(g, m):  # its last read: the group's memory is no longer needed
                del self.frozen[b][key]
        return merge_heads(np.concatenate(ys, axis=0) if len(ys) > 1 else ys[0])

    def run_spk(self):
        s = self.sched
        step = self.time_step
        self._receive(step)
        qwin = self._win(step, s["q_start"], s["q_len"])
        kvwin = self._win(step, s["kv_start"], s["kv_len"])
        q = self._input("q_in", step, qwin is not None)
        k = self._input("k_in", step, kvwin is not None)
        v = self._input("v_in", step, kvwin is not None)
        if kvwin is not None:
            self._write(*kvwin, k, v)
        out = None
        if qwin is not None:
            out = self._query(*qwin, q)
        if self._active("a_out", step):
            self._send("a_out", out if out is not None else np.zeros(self.cv * self.n, self.dtype))


class MemoryWriter(_TapProcess):
    """Template-memory write (``MemoryWrite``) on k ``[C, N]`` and v ``[Cv, N]`` (row-major flat
    ports): within the aligned k/v window every pair of a k unit spike and a v unit spike on the
    same token increments one cell ``kv[h, c, c']`` (graded events carry counts, and the pair
    count is their product). In the step the window completes it sends ``scale * kv``
    (``[H, C/H, Cv/H]`` row-major) as one real-valued graded event; zeros in every other step.

    proc params: ``heads``, ``scale``, ``channels`` (C), ``v_channels`` (Cv), ``tokens`` (N),
    ``kv_start``, ``kv_len``, ``period``, ``num_macro``, optional ``inputs``/``send``."""

    def __init__(self, *, channels: int, v_channels: int, tokens: int, heads: int, scale: float,
                 kv_start: int, kv_len: int, period: int, num_macro: int, inputs: dict = None,
                 send: dict = None, slots: int = None, steps: int = None, name: str = None):
        super().__init__(channels=channels, v_channels=v_channels, tokens=tokens, heads=heads,
                         scale=scale, kv_start=kv_start, kv_len=kv_len, name=name,
                         **_clock_params(period, num_macro, inputs, send, None, slots, steps))
        self._make_in_ports({"k_in": channels * tokens, "v_in": v_channels * tokens}, inputs or {})
        self.a_out = OutPort(shape=(channels * v_channels // heads,))
        #: unit-spike pair events written into the memory, per macro-step
        self.pair_events = Var(shape=(num_macro,), init=np.zeros(num_macro))


@process_model(MemoryWriter, ins=("k_in", "v_in"), outs=("a_out",), vars=("pair_events",))
class PyMemoryWriterFloat(_TapModel):
    def __init__(self, proc_params):
        super().__init__(proc_params)
        p = self.proc_params
        self.h, self.scale = int(p["heads"]), float(p["scale"])
        self.c, self.cv, self.n = int(p["channels"]), int(p["v_channels"]), int(p["tokens"])
        self.sched = {k: int(p[k]) for k in ("kv_start", "kv_len")}
        h = self.h
        self.kv = np.zeros((h, self.c // h, self.cv // h), self.dtype)
        self.ck = np.zeros((h, self.n, self.c // h), self.dtype)
        self.cv_ = np.zeros((h, self.n, self.cv // h), self.dtype)

    def _memory(self) -> np.ndarray:
        return scaled_memory(self.kv, self.scale)

    def run_spk(self):
        s = self.sched
        step = self.time_step
        self._receive(step)
        win = self._win(step, s["kv_start"], s["kv_len"])
        k = self._input("k_in", step, win is not None)
        v = self._input("v_in", step, win is not None)
        out = np.zeros(self.kv.size, self.dtype)
        if win is not None:
            t, j = win
            if j == 0:
                self.kv[:] = 0
                self.ck[:] = 0
                self.cv_[:] = 0
            inc, self.ck, self.cv_ = kv_pairs(_zeros_if_none(k, self.c * self.n, self.dtype),
                                              _zeros_if_none(v, self.cv * self.n, self.dtype), self.ck, self.cv_, self.h)
            self.kv += inc
            self.pair_events[t] += inc.sum()
            if j == s["kv_len"] - 1:  # the window is complete: deliver the memory
                out = self._memory()
        if self._active("a_out", step):
            self._send("a_out", out)


class HostSource(_TapProcess):
    """Injects host values: sends ``values[m]`` (one real-valued event) at Lava step
    ``start + m * period`` for macro-step ``m`` and zeros in between (nothing in between when its
    port is windowed, ``send``). Used instead of Lava's ``RingBuffer`` when a ring buffer over
    every Lava step would be large (it stores a column per step, mostly zeros: for SpikeTrack's
    stem output that is gigabytes) and when the graph is fused."""

    def __init__(self, *, values: np.ndarray, start: int, period: int, send: dict = None, slots: int = None,
                 steps: int = None, name: str = None):
        values = np.asarray(values, dtype=np.float64)
        num_macro, size = values.shape
        super().__init__(size=size, start=start, name=name,
                         **_clock_params(period, num_macro, None, send, None, slots, steps))
        self.s_out = OutPort(shape=(size,))
        self.values = Var(shape=values.shape, init=values)


@process_model(HostSource, outs=("s_out",), vars=("values",))
class PyHostSourceFloat(_TapModel):
    def __init__(self, proc_params):
        super().__init__(proc_params)
        self.start_step = int(self.proc_params["start"])

    def run_spk(self):
        k = self.time_step
        if not self._active("s_out", k):
            return
        win = self._win(k, self.start_step, 1)
        self._send("s_out", self.values[win[0]].copy() if win is not None
                   else np.zeros(self.values.shape[1], self.values.dtype))


class Readout(_TapProcess):
    """Graded accumulator at a graph output: ``rec[t] = sum(window of t) + offset[step]`` (``offset``
    ``[1 or sample_steps, size]``: one row, or one per macro-step of a sample)."""

    def __init__(self, *, size: int, offset: np.ndarray, start: int, length: int, period: int,
                 num_macro: int, sample_steps: int = 1, inputs: dict = None, record: dict = None,
                 slots: int = None, name: str = None):
        super().__init__(size=size, start=start, length=length, sample_steps=sample_steps, name=name,
                         **_clock_params(period, num_macro, inputs, None, record, slots, sample_steps))
        self._make_in_ports({"a_in": size}, inputs or {})
        offset = np.asarray(offset, dtype=np.float64).reshape(-1, size)  # [1 or steps, size]
        self.offset = Var(shape=offset.shape, init=offset)
        self.rec = Var(shape=(num_macro, size), init=np.zeros((num_macro, size)))


@process_model(Readout, ins=("a_in",), vars=("offset", "rec"))
class PyReadoutFloat(_TapModel):
    def __init__(self, proc_params):
        super().__init__(proc_params)
        p = self.proc_params
        self.start_step, self.length = int(p["start"]), int(p["length"])
        self.sample_steps = int(p["sample_steps"])
        self.size = int(p["size"])
        self.acc = np.zeros(self.size, self.dtype)

    def run_spk(self):
        k = self.time_step
        self._receive(k)
        win = self._win(k, self.start_step, self.length)
        x = self._input("a_in", k, win is not None)
        if win is not None:
            t, j = win
            x = _zeros_if_none(x, self.size, self.dtype)
            self.acc = x.astype(self.dtype) if j == 0 else self.acc + x
            if j == self.length - 1:
                self.rec[t] = self.acc + self.offset[(t % self.sample_steps) % self.offset.shape[0]]
                self._write_record(k, self.rec)


class StepGate(_TapProcess):
    """Passes its input only in the macro-steps ``accept`` of its stream (per sample; the stream
    starts at ``start``), zeros in every other step; no delay. Realizes ``SelectStep`` (a template
    step used alone) and the per-step inputs of ``StackSteps`` / a time-varying ``MemoryRead``;
    fused into the readers' taps as a step filter when they can take it."""

    def __init__(self, *, size: int, start: int, accept, period: int, num_macro: int, slots: int = None,
                 steps: int = None, name: str = None):
        super().__init__(size=size, start=start, accept=[int(a) for a in accept], name=name,
                         **_clock_params(period, num_macro, None, None, None, slots, steps))
        self.a_in = InPort(shape=(size,))
        self.a_out = OutPort(shape=(size,))


@process_model(StepGate, ins=("a_in",), outs=("a_out",))
class PyStepGateFloat(_TapModel):
    def __init__(self, proc_params):
        super().__init__(proc_params)
        self.filt = {"start": int(self.proc_params["start"]), "accept": list(self.proc_params["accept"])}

    def run_spk(self):
        x = self.a_in.recv()
        k = self.time_step
        self.a_out.send(x if self._accept(self.filt, k) else np.zeros_like(x))


class HostSoftmax(_TapProcess):
    """HOST op in the network (``GateSoftmax``): integrates its input window in each of its
    ``steps`` macro-steps, adds ``offset[step]``, and in the step the last one completes sends
    ``w[t, c] = exp(x[t, c]) / sum_u exp(x[u, c])`` (``[steps, C]`` row-major) as one real-valued
    event (computed as the reference does: ``F.softmax`` on the ``[B, C, T]`` layout, float64)."""

    def __init__(self, *, size: int, offset: np.ndarray, in_start: int, in_len: int, fire: int, period: int,
                 num_macro: int, slots: int = None, steps: int = None, inputs: dict = None, send: dict = None,
                 name: str = None):
        super().__init__(size=size, in_start=in_start, in_len=in_len, fire=fire, name=name,
                         **_clock_params(period, num_macro, inputs, send, None, slots, steps))
        self._make_in_ports({"a_in": size}, inputs or {})
        self.a_out = OutPort(shape=(int(steps) * size,))
        self.offset = Var(shape=np.shape(offset), init=np.asarray(offset, dtype=np.float64))


@process_model(HostSoftmax, ins=("a_in",), outs=("a_out",), vars=("offset",))
class PyHostSoftmaxFloat(_TapModel):
    def __init__(self, proc_params):
        super().__init__(proc_params)
        p = self.proc_params
        self.size, self.in_start, self.in_len = int(p["size"]), int(p["in_start"]), int(p["in_len"])
        self.n = int(p["steps"]) if p.get("steps") else 1
        self.fire = int(p["fire"])
        self.acc = np.zeros(self.size)
        self.logits = {}  # sample -> [n, C]
        self.out = {}  # sample -> w
        _one_torch_thread()

    def run_spk(self):
        k = self.time_step
        self._receive(k)
        win = self._win(k, self.in_start, self.in_len)
        x = self._input("a_in", k, win is not None)
        if win is not None:
            idx, j = win
            b, t = divmod(idx, self.n)
            x = _zeros_if_none(x, self.size)
            self.acc = x.astype(np.float64) if j == 0 else self.acc + x
            if j == self.in_len - 1:
                rows = self.logits.setdefault(b, np.zeros((self.n, self.size)))
                rows[t] = self.acc + self.offset[t % self.offset.shape[0]]
                if t == self.n - 1:
                    self.out[b] = softmax_over_steps(self.logits.pop(b))
        if not self._active("a_out", k):
            return
        fw = self._win(k, self.fire, 1, 1)
        self.a_out.send(self.out.pop(fw[0]) if fw is not None and fw[0] in self.out
                        else np.zeros(self.n * self.size))


class TemplateGateSynapse(_TapProcess):
    """``TemplateGate``: ``y[c, ...] = scale * sum_t w[t, c] * x[t, c, ...]`` over the ``steps``
    macro-steps of x (spikes), ``w`` ``[steps, C]`` from a ``HostSoftmax`` (one event at
    ``w_start``). Each unit spike of x at step t adds ``scale * w[t, c]`` to its one target (a
    synapse of fan-out 1 whose weights the host writes every frame). The spikes of the T steps are
    kept (per sub-step for unit spikes) and the sum is formed when the last step and the weights
    have arrived, in the reference's order (per sub-step: the sum over t; then over sub-steps);
    it is sent at ``fire`` as one real-valued event (one macro-step)."""

    def __init__(self, *, size: int, channels: int, scale: float, encoding: str, in_start: int, in_len: int,
                 w_start: int, fire: int, period: int, num_macro: int, slots: int = None, steps: int = None,
                 inputs: dict = None, send: dict = None, name: str = None):
        super().__init__(size=size, channels=channels, scale=scale, encoding=encoding, in_start=in_start,
                         in_len=in_len, w_start=w_start, w_len=1, fire=fire, name=name,
                         **_clock_params(period, num_macro, inputs, send, None, slots, steps))
        self._make_in_ports({"x_in": size, "w_in": int(steps) * channels}, inputs or {})
        self.a_out = OutPort(shape=(size,))


@process_model(TemplateGateSynapse, ins=("x_in", "w_in"), outs=("a_out",))
class PyTemplateGateSynapseFloat(_TapModel):
    def __init__(self, proc_params):
        super().__init__(proc_params)
        p = self.proc_params
        self.size, self.C = int(p["size"]), int(p["channels"])
        self.in_start, self.in_len = int(p["in_start"]), int(p["in_len"])
        self.w_start, self.fire = int(p["w_start"]), int(p["fire"])
        self.n = int(p["steps"]) if p.get("steps") else 1
        self.scale, self.graded = float(p["scale"]), p["encoding"] == "graded"
        self.x = {}  # sample -> [n, in_len, size] (spikes per step and sub-step)
        self.w = {}  # sample -> [n, C]
        _one_torch_thread()

    def _sum(self, b: int) -> np.ndarray:
        xs = self.x.pop(b, np.zeros((self.n, self.in_len, self.size)))
        return template_gate_sum(xs, self.w.pop(b), self.C, self.scale, self.graded)

    def run_spk(self):
        k = self.time_step
        self._receive(k)
        win = self._win(k, self.in_start, self.in_len)
        wwin = self._win(k, self.w_start, 1, 1)
        x = self._input("x_in", k, win is not None)
        w = self._input("w_in", k, wwin is not None)
        if win is not None and x is not None:
            idx, j = win
            b, t = divmod(idx, self.n)
            self.x.setdefault(b, np.zeros((self.n, self.in_len, self.size)))[t, j] = x
        if wwin is not None:
            self.w[wwin[0]] = _zeros_if_none(w, self.n * self.C)
        fw = self._win(k, self.fire, 1, 1)
        out = self._sum(fw[0]) if fw is not None else None
        if self._active("a_out", k):
            self._send("a_out", out if out is not None else np.zeros(self.size))


class MemoryReadSynapse(_TapProcess):
    """``MemoryRead`` as a kernel process (module docstring): q ``[C, N]`` in ``q_in`` (read in the window
    ``q_start``, ``q_len`` of every macro-step), ``scale * sum of the rows read`` ``[Cv, N]`` sent
    from ``a_out`` at ``fire = q_start + q_len`` (one real-valued event per macro-step; zeros in
    other steps unless the port is windowed, ``send``).

    proc params: ``heads``, ``scale``, ``channels`` (C), ``v_channels`` (Cv), ``tokens`` (N),
    ``q_start``, ``q_len``, ``fire``, ``period``, ``num_macro``, optional ``slots``/``steps``
    (macro-step t of a sample reads ``memory[t]`` when ``T_mem > 1``), ``inputs``/``send``."""

    def __init__(self, *, memory: np.ndarray, channels: int, v_channels: int, tokens: int, heads: int,
                 scale: float, q_start: int, q_len: int, fire: int, period: int, num_macro: int,
                 inputs: dict = None, send: dict = None, slots: int = None, steps: int = None, name: str = None):
        memory = np.asarray(memory, dtype=np.float64)
        if memory.ndim != 4 or memory.shape[1:] != (heads, channels // heads, v_channels // heads):
            raise ValueError(f"MemoryReadSynapse: memory {list(memory.shape)} is not "
                             f"[T_mem, {heads}, {channels // heads}, {v_channels // heads}]")
        if memory.shape[0] > 1 and (not slots or memory.shape[0] != steps):
            raise ValueError(f"MemoryReadSynapse: a memory of {memory.shape[0]} steps needs q of as many "
                             f"macro-steps per sample (steps {steps})")
        super().__init__(channels=channels, v_channels=v_channels, tokens=tokens, heads=heads, scale=scale,
                         q_start=q_start, q_len=q_len, fire=fire, name=name,
                         **_clock_params(period, num_macro, inputs, send, None, slots, steps))
        self._make_in_ports({"q_in": channels * tokens}, inputs or {})
        self.a_out = OutPort(shape=(v_channels * tokens,))
        self.memory = Var(shape=memory.shape, init=memory)


@process_model(MemoryReadSynapse, ins=("q_in",), outs=("a_out",), vars=("memory",))
class PyMemoryReadSynapseFloat(_TapModel):
    def __init__(self, proc_params):
        super().__init__(proc_params)
        p = self.proc_params
        self.scale = float(p["scale"])
        self.size = int(p["v_channels"]) * int(p["tokens"])
        self.q_start, self.q_len, self.fire = int(p["q_start"]), int(p["q_len"]), int(p["fire"])
        self.n = int(p["steps"]) if p.get("slots") else None
        self.acc = None  # the rows read so far in the current window
        self.out = {}  # macro-step -> scaled sum, sent at its fire step
        _one_torch_thread()  # here, not in read_rows: a caller of that pure function keeps its thread count

    def _rows(self, x: np.ndarray, mem: np.ndarray) -> np.ndarray:
        return read_rows(x, np.ascontiguousarray(mem))

    def run_spk(self):
        k = self.time_step
        self._receive(k)
        win = self._win(k, self.q_start, self.q_len)
        x = self._input("q_in", k, win is not None)
        if win is not None:
            idx, j = win
            if j == 0:
                self.acc = None
            if x is not None and x.any():  # a step without events reads nothing (exactly zero)
                mem = self.memory[idx % self.n if self.memory.shape[0] > 1 else 0]
                y = self._rows(x, mem)
                self.acc = y if self.acc is None else self.acc + y
            if j == self.q_len - 1:
                self.out[idx] = np.zeros(self.size, self.dtype) if self.acc is None else self.acc * self.scale
        if not self._active("a_out", k):
            return
        fw = self._win(k, self.fire, 1)
        self._send("a_out", self.out.pop(fw[0]) if fw is not None and fw[0] in self.out
                   else np.zeros(self.size, self.dtype))


# ---------------------------------------------------------------------------------------------
# fixed_pt models (issue 14): the same processes in integers
# ---------------------------------------------------------------------------------------------
#
# Each is the floating-point model subclassed and declared with ``spec.with_tag("fixed_pt")``
# (int64 ports and Vars, TAG_TYPES): the clock, windows and schedules are inherited unchanged,
# only the arithmetic differs (lava_kernels' fixed_* functions: int64; a convolution in float64
# with a proof that every partial sum is an exact integer). Every value entering a fixed run is
# checked to be an exact integer where it enters (the bundle's arrays and the host values, by
# the runtime; constants here), so nothing is rounded silently. HostSoftmax and
# TemplateGateSynapse (SpikeTrack T = 3's template gate) have no fixed_pt model: QuantizeFixedPoint
# refuses their ops, so no fixed bundle holds them (the runtime names such a process).


def _exact_int(value, what: str) -> int:
    return int(exact_int64(np.asarray(value), what))


class _FixedModel:
    """Mixin of the fixed_pt models: int64 arithmetic (``_TapModel.dtype``) and integer fused
    synapses (``fixed``)."""

    dtype = np.int64
    fixed = True


@declare_model(ModelSpec(IntegerNeuron, ("a_in",), ("s_out",), ("bias", "q_rec", "state_in", "state_out", "saturated"),
                         "fixed_pt"))
class PyIntegerNeuronFixed(_FixedModel, PyIntegerNeuronFloat):
    """The fixed-point neuron (``kind`` ``fixed_integer_lif`` / ``fixed_dynamic_integer_lif`` /
    ``fixed_binary_lif``:
    :func:`~spikedeploy.runtimes.lava_kernels.fixed_neuron_step`); the state elements clamped to
    the state width are counted per macro-step in ``saturated`` (written next to the record:
    ``<record>.saturated.npy``)."""

    def __init__(self, proc_params):
        super().__init__(proc_params)
        if not str(self.neuron.get("kind", "")).startswith("fixed_"):
            raise ValueError(f"neuron kind {self.neuron.get('kind')!r} has no fixed-point form (a fixed_pt run takes "
                             "a bundle of a fixed-point graph)")

    def _step(self, t: int, current: np.ndarray, step: int) -> None:
        self.q, self.state, sat = fixed_neuron_step(self.neuron, current, step, self.state, self._start(t, step))
        self.saturated[t] += sat
        self._end(t, step)

    def _output(self, j: int) -> np.ndarray:
        if self.graded:
            return self.q.copy() if j == 0 else np.zeros_like(self.q)
        return (self.q > j).astype(np.int64)

    def _write_record(self, k: int, data: np.ndarray) -> None:
        super()._write_record(k, data)
        if self._record is not None and k == self._record["step"]:
            import os  # noqa: PLC0415

            path = saturation_path(self._record["path"])
            np.save(path + ".tmp.npy", np.asarray(self.saturated))
            os.replace(path + ".tmp.npy", path)


def saturation_path(record_path: str) -> str:
    """Where a fixed-point neuron writes its saturation counts next to its record file."""
    return record_path[:-4] + ".saturated.npy" if record_path.endswith(".npy") else record_path + ".saturated.npy"


@declare_model(PyDelayFloat.model_spec.with_tag("fixed_pt"))
class PyDelayFixed(PyDelayFloat):
    """A delay line of int64 messages (the float model's code: it only moves data)."""


@declare_model(PyJunctionFloat.model_spec.with_tag("fixed_pt"))
class PyJunctionFixed(_FixedModel, PyJunctionFloat):
    pass


@declare_model(PyConvSynapseFloat.model_spec.with_tag("fixed_pt"))
class PyConvSynapseFixed(PyConvSynapseFloat):
    """:func:`~spikedeploy.runtimes.lava_kernels.fixed_conv_product` on int64 spikes/messages."""

    def run_spk(self):
        if self.kernel is None:  # the Var holds its (int64) value once the model is built
            import torch  # noqa: PLC0415

            w = _as_int64(self.weight, "convolution kernel")
            self.bound = _conv_bound(w)
            self.kernel = torch.from_numpy(w.astype(np.float64))
            self.a_buf = self.a_buf.astype(np.int64)
        self.a_out.send(self.a_buf)
        x = self.s_in.recv()
        if not x.any():
            self.a_buf = np.zeros_like(self.a_buf)
            return
        self.a_buf = fixed_conv_product(x, self.kernel, self.in_shape, *self.conv_args, self.bound)


@declare_model(PyMatMulSynapseFloat.model_spec.with_tag("fixed_pt"))
class PyMatMulSynapseFixed(PyMatMulSynapseFloat):
    def run_spk(self):
        if self.a_buf is None:
            self.a_buf = np.zeros(self.rows * self.weight.shape[0], np.int64)
        self.a_out.send(self.a_buf)
        x = self.s_in.recv()
        self.a_buf = fixed_matmul_product(self.weight, x, self.rows) if x.any() else np.zeros_like(self.a_buf)


@declare_model(PySpaceTimeAttentionFloat.model_spec.with_tag("fixed_pt"))
class PySpaceTimeAttentionFixed(_FixedModel, PySpaceTimeAttentionFloat):
    """The float model's clock and ``st_*`` kernels in int64 (the counts, ``M`` and ``Y`` are
    integers; ``scale`` is the fixed-point graph's integer factor)."""

    def __init__(self, proc_params):
        super().__init__(proc_params)
        self.scale = _exact_int(self.proc_params["scale"], "attention scale")


@declare_model(PySpikeAttentionFloat.model_spec.with_tag("fixed_pt"))
class PySpikeAttentionFixed(_FixedModel, PySpikeAttentionFloat):
    def __init__(self, proc_params):
        super().__init__(proc_params)
        self.scale = _exact_int(self.proc_params["scale"], "attention scale")

    def _read(self, q: np.ndarray) -> np.ndarray:
        return fixed_attention_read(q, self.kv, self.scale)


@declare_model(PyMemoryWriterFloat.model_spec.with_tag("fixed_pt"))
class PyMemoryWriterFixed(_FixedModel, PyMemoryWriterFloat):
    def __init__(self, proc_params):
        super().__init__(proc_params)
        self.scale = _exact_int(self.proc_params["scale"], "memory-write scale")

    def _memory(self) -> np.ndarray:
        return (self.kv * self.scale).reshape(-1)


@declare_model(PyHostSourceFloat.model_spec.with_tag("fixed_pt"))
class PyHostSourceFixed(_FixedModel, PyHostSourceFloat):
    """Sends the int64 host values (checked to be integers by the runtime before they are set)."""


@declare_model(PyReadoutFloat.model_spec.with_tag("fixed_pt"))
class PyReadoutFixed(_FixedModel, PyReadoutFloat):
    pass


@declare_model(PyStepGateFloat.model_spec.with_tag("fixed_pt"))
class PyStepGateFixed(_FixedModel, PyStepGateFloat):
    pass


@declare_model(PyMemoryReadSynapseFloat.model_spec.with_tag("fixed_pt"))
class PyMemoryReadSynapseFixed(_FixedModel, PyMemoryReadSynapseFloat):
    """Integer memory rows (the fixed graph's mantissas) times the integer scale."""

    def __init__(self, proc_params):
        super().__init__(proc_params)
        self.scale = _exact_int(self.proc_params["scale"], "memory-read scale")

    def _rows(self, x: np.ndarray, mem: np.ndarray) -> np.ndarray:
        return fixed_read_rows(x, mem)


# Lava's own processes the exporter emits. ``Sparse``: Lava's fixed_pt model
# (``PySparseModelBitAcc``) clips weights to 8 bits and drops low bits by ``num_weight_bits``,
# while the exporter composes a layer's 8-bit mantissas with its exponent, routing, pooling and
# alignment shifts into one integer matrix per connection (entries of more than 8 bits): so the
# fixed_pt model of ``Sparse`` here is an exact integer product (int64 CSR, ``W @ x``), passed to
# Lava like every other model (exception_proc_model_map). ``RingBuffer``: Lava's
# ``PySendModelFixed`` sends int32; this model sends the same column per step as int64 (the
# project's ports are int64 throughout).

from lava.proc.io.source import AbstractPyRingBuffer, RingBuffer  # noqa: E402
from lava.proc.sparse.process import Sparse  # noqa: E402
from scipy.sparse import csr_matrix  # noqa: E402


@implements(proc=Sparse, protocol=LoihiProtocol)
@requires(CPU)
@lava_tag("fixed_pt")
class PySparseModelExact(PyLoihiProcessModel):
    """Lava ``Sparse`` in exact integers: ``a_out[k] = W @ s_in[k - 1]`` (int64)."""

    s_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int64, precision=GRADED_BITS)
    a_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int64, precision=GRADED_BITS)
    a_buff: np.ndarray = LavaPyType(np.ndarray, np.int64)
    weights: csr_matrix = LavaPyType(csr_matrix, np.int64)
    num_message_bits: np.ndarray = LavaPyType(np.ndarray, int, precision=5)

    def __init__(self, proc_params):
        super().__init__(proc_params)
        self._w = None

    def run_spk(self):
        if self._w is None:  # the Var holds the bundle's float64 CSR: made int64, each entry checked
            self._w = _int_csr(self.weights, "Sparse weights")
        self.a_out.send(self.a_buff)
        self.a_buff = fixed_sparse_product(self._w, self.s_in.recv())


@implements(proc=RingBuffer, protocol=LoihiProtocol)
@requires(CPU)
@lava_tag("fixed_pt")
class PyRingBufferExact(AbstractPyRingBuffer):
    """Lava ``RingBuffer`` sending int64 columns (one per Lava step)."""

    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int64, precision=GRADED_BITS)
    data: np.ndarray = LavaPyType(np.ndarray, np.int64)


register_model(Sparse, PySparseModelExact, "fixed_pt")
register_model(RingBuffer, PyRingBufferExact, "fixed_pt")
