"""Lava target: compile a lowered IR graph into a Lava process-graph bundle.

The bundle is pure data (``graph.json`` + ``arrays.npz``, no pickle) that
:mod:`spikedeploy.runtimes.lava` turns into Lava processes and runs in the CPU simulator
(``Loihi2SimCfg``). It can be re-loaded with :func:`load` without any PyTorch model code.

This module holds the compile rules (IR graph -> process description: the per-op rule table
:data:`RULES`, delay balancing, :func:`fuse_processes`); the bundle format itself (the format
version, :class:`LavaBundle`, :func:`load`, writing, :func:`with_memory`) is
:mod:`spikedeploy.exporters.lava_bundle`, whose public names are re-exported here.

Time
----
One Lava time step is one spike *sub-step*. Every device value is a *stream*: macro-step ``m``
occupies the Lava steps ``start + m * period ... start + m * period + length - 1``. A binary spike
stream has ``length = D`` (q unit spikes in the first q sub-steps), a graded one ``length = 1``
(one event carrying q). ``period`` is the largest window of the graph (1 in graded mode), so
consecutive macro-steps are pipelined. A batch is streamed: sample ``b`` occupies macro-steps
``b * T ... b * T + T - 1`` and neuron state is reset at every sample boundary.

Process graph (what runs where)
-------------------------------
* **Host**: every op that does not depend on any neuron (the first layer on real-valued pixels,
  e.g. the stem convolution) runs on the host (the reference executor, float64) and is injected
  with a standard Lava ``RingBuffer`` source as a real-valued graded event.
* **Convolution synapses** too large to unroll (more than ``unroll_limit`` synapses in one
  ``Conv2d``/``Conv1d``, default :data:`UNROLL_LIMIT`) run as the project's ``ConvSynapse`` process,
  which keeps the kernel and convolves each step (float64 ``torch.conv2d``, the reference's
  arithmetic). A routed input is first materialized by a 0/1 gather ``Sparse``.
* **Synapses** (``Conv2d``, ``Conv1d``, ``Linear``, ``AvgPool2d``, ``MeanReduce``, ``Upsample``,
  and ``Scale``/``BatchNorm`` when they act on a device value) are unrolled into
  sparse matrices and run as
  standard Lava ``Sparse`` processes (``num_message_bits = 0`` on binary spikes, 24 on graded or
  real-valued input). Unrolling avoids Lava ``Conv``'s flipped kernel and (X, Y, C) layout. Routing
  ops (``Reshape``, ``Permute``, ``Concat``) cost nothing: they only permute the columns of the
  consuming synapse (or, before a non-synaptic consumer, become a gather ``Sparse``). Lava's
  ``Sparse`` has no bias: biases are carried forward as a per-macro-step offset.
* **Graded accumulators** (residual ``Add``, ``AddConstant``, the bias/offset of synapses, BN
  shift): folded into the input stage of the consuming process. A Lava ``InPort`` sums all its
  incoming connections, so ``Add(a, b)`` is two (delay-balanced) connections into the consumer;
  constants are summed into the consuming neuron's ``bias`` (added once per macro-step) or the
  output ``Readout``'s offset.
* **Own processes** (:mod:`spikedeploy.runtimes.lava_procs`): ``IntegerNeuron`` (integer LIF
  family, DI-LIF, binary LIF; integrates its whole input window, fires once per macro-step),
  ``SpikeAttention`` (kv memory from co-occurring k/v unit spikes, q spikes read rows),
  ``SpaceTimeAttention`` (SpikeVideoFormer's SDHA / dot product over spatial, temporal or joint
  token groups: pair and column counts per group, ``M = 2K^T V - 1^T V`` frozen per sample when
  the group is complete, q rows read, ``1^T M`` subtracted; see :func:`space_time_attention_rule`),
  ``MemoryWriter`` (``MemoryWrite``: the same pair counting alone, the memory sent as one real
  event when the k/v window completes), ``Delay`` (path balancing) and ``Readout`` (graph outputs).
* **SpikeTrack's memory ops**: ``Upsample`` is a weight-free ``Sparse`` whose weights are PyTorch's
  exact interpolation weights (unit impulses through ``F.interpolate`` in float64); ``MemoryRead``
  is always a ``memory_read`` kernel process (``MemoryReadSynapse``, whose rows are read by
  :func:`spikedeploy.runtimes.lava_kernels.read_rows`) that holds
  the memory ``[T_mem, H, C/H, Cv/H]`` itself instead of the block-diagonal matrix ``scale *
  memory[t, h].T (x) I_N`` (B384's 12 reads would unroll into 2.4e8 synapses): in each step of the
  q window the events read the memory rows of their tokens, the rows are summed over the window and
  ``scale * sum`` is sent one step after it (the reference's order: the scale after the sum; with
  the scale folded into unrolled weights the sum differs in the last bits); with ``T_mem = T``
  (SpikeTrack T = 3) macro-step t reads ``memory[t]``. ``MemoryWrite`` is a ``MemoryWriter``
  feeding a ``Readout``.

Time axis (T > 1 templates)
---------------------------
Values may have different numbers of macro-steps (``value_steps``: SpikeTrack T = 3's search
query is one step, repeated over the 3 templates; the template gate fuses 3 steps into one). Such
graphs get ``slots`` macro-step slots per sample (the largest number of steps); a stream of n
steps uses the first n slots of each sample and is zero in the others. ``SelectStep``,
``StackSteps`` and ``RepeatTime`` cost no process: a term records which stream step each value
step reads (``Term.slots``); it is realized by a ``step_gate`` (pass only the read steps) and a
delay of whole macro-steps (``d * period``), both fused into the reader's taps. A time-varying
``MemoryRead`` (``T_mem = T``) is one ``memory_read`` process that reads ``memory[t]`` in step t.
``GateLinear`` is a ``Sparse``; ``GateSoftmax`` is a **host** process inside the network
(``host_softmax``, marked ``"host": true``: integrates the gate logits of the T steps and sends
the softmax over them as one event); ``TemplateGate`` is a ``template_gate`` process (a synapse of
fan-out 1 whose weights the softmax writes every frame).

Fusion
------
By default the compiled process graph is then *fused* (:func:`fuse_processes`): synapses,
delay lines and step gates move into the processes that read them (same arithmetic, same
timing), and project processes send only inside their output windows. Measured on a 171-layer
SpikeTrack search branch (widths 8..48): 454 -> 213 Lava processes, 4.6x less simulator time.

Fixed point
-----------
A graph quantized by :class:`spikedeploy.passes.quantize.QuantizeFixedPoint` compiles into a
``"precision": "fixed"`` bundle (``fixed_point``: weight and state bits, the output exponents; the
whole plan is in the IR graph's metadata): its neurons are ``fixed_integer_lif`` /
``fixed_dynamic_integer_lif`` (DI-LIF: integer gate thresholds) / ``fixed_binary_lif`` processes
with the integer constants of the IR ops, the ``Quantize`` boundary runs in the host part, and each dyadic weight-free op (pooling, mean, upsampling, weights
``k * 2**-s``) is composed with the ``Scale(2**s)`` that follows it into one synapse of integer
weights, so every array a process computes with is an integer (checked when compiling and loading).
It runs with ``select_tag="fixed_pt"`` (:mod:`spikedeploy.runtimes.lava`).

Delays
------
Each ``Sparse`` adds one step (it sends at step k what it received at k - 1); a neuron emits its
output window starting in the step its input window completes; ``SpikeAttention`` reads q in a
window that starts right after the k/v window (``SpaceTimeAttention`` with step-mixing groups:
after the k/v window of the sample's last step). The compiler propagates the start step of every
stream through the graph; wherever several streams meet in one port (residual adds, k and v of
an attention) it aligns them to the latest one by inserting ``Delay`` processes (shared as a
chain per stream: a stream needed with delays 3 and 7 gets ``Delay(3) -> Delay(4)``). The neuron
table records at which Lava step each neuron's macro-step result is final.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import scipy.sparse as sp

from spikedeploy.errors import SpikedeployError
from spikedeploy.ir import ops as O
from spikedeploy.ir.serialize import graph_to_json, op_to_json
from spikedeploy.ir.graph import Graph, Node, validate, value_steps
from spikedeploy.targets import unsupported

# the bundle format (re-exported: ``lava.LavaBundle``, ``lava.load``, ... are this target's API)
from spikedeploy.exporters.lava_bundle import (ARRAYS_FILE, ENCODINGS, FORMAT, GRAPH_FILE, READ_VERSIONS,  # noqa: F401
                                                TARGET, VERSION, LavaBundle, check_destination, load, save,
                                                with_memory)

__all__ = ["ENCODINGS", "RULES", "FORMAT", "VERSION", "LavaBundle", "compile_graph", "export", "load", "with_memory"]

#: payload width of graded messages (Loihi 2 graded spikes carry up to 24 bits)
GRADED_BITS = 24


# ---------------------------------------------------------------------------------------------
# compiler data model
# ---------------------------------------------------------------------------------------------


@dataclass
class Stream:
    """An output port of a process and the timing of its data (macro-step 0)."""

    proc: str
    port: str
    size: int
    start: int
    length: int
    msg: str  #: "binary" (unit spikes), "graded" (spike counts), "real" (real-valued partial sums)
    host: Optional[str] = None  #: host value injected on demand (start chosen when connected)


@dataclass
class Term:
    """A stream contributing to a value: ``value.flat[i] += stream[origin.flat[i]]`` (-1: none)."""

    stream: Stream
    origin: np.ndarray
    #: macro-step map: value step t reads stream step slots[t] (None: the identity). Only the
    #: identity can be connected; SelectStep/StackSteps move it (see :func:`stack_steps_rule`)
    slots: Optional[Tuple[int, ...]] = None


@dataclass
class Val:
    """A value during compilation: on the host, or a sum of streams plus a constant offset added
    once per macro-step (``offset``, None = 0). ``spike``: a pure spike value."""

    shape: Tuple[int, ...]
    host: bool
    terms: List[Term] = field(default_factory=list)
    offset: Optional[np.ndarray] = None
    spike: bool = False
    #: an offset that differs per macro-step (``[steps, *shape]``, added to ``offset``), e.g.
    #: SpikeTrack T = 3's per-template position embeddings
    step_offset: Optional[np.ndarray] = None
    #: a host softmax's output event (only a TemplateGate reads it)
    softmax: Optional[Stream] = None

    @property
    def size(self) -> int:
        return int(math.prod(self.shape))

    def offsets(self) -> Optional[np.ndarray]:
        """The offset per macro-step, ``[S, *shape]`` (S = 1: the same in every step), or None."""
        if self.offset is None and self.step_offset is None:
            return None
        base = np.zeros((1,) + self.shape) if self.offset is None else self.offset[None]
        return base if self.step_offset is None else base + self.step_offset


def _arange(shape) -> np.ndarray:
    return np.arange(int(math.prod(shape)), dtype=np.int64).reshape(shape)


def _is_identity(term: Term, size: int) -> bool:
    return term.slots is None and term.stream.size == size and term.origin.size == size and bool(
        np.array_equal(term.origin.ravel(), np.arange(size))
    )


# ---------------------------------------------------------------------------------------------
# linear maps as sparse matrices (row-major flattened per-step tensors)
# ---------------------------------------------------------------------------------------------


def conv_matrix(weight, in_shape, stride, padding, dilation, groups) -> sp.csr_matrix:
    """The 2-D convolution (torch's cross-correlation, zero padding) as a sparse matrix of shape
    ``[C_out*H_out*W_out, C_in*H*W]``; zero weights are dropped (real fan-out only)."""
    weight = np.asarray(weight, dtype=np.float64)
    co, cig, kh, kw = weight.shape
    C, H, W = in_shape
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    Ho = (H + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    Wo = (W + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    cog = co // groups
    o = np.arange(co)[:, None, None, None]
    c = (o // cog) * cig + np.arange(cig)[None, :, None, None]
    i = np.arange(Ho)[None, None, :, None]
    j = np.arange(Wo)[None, None, None, :]
    full = (co, cig, Ho, Wo)
    rows, cols, vals = [], [], []
    for u in range(kh):
        for v in range(kw):
            y = i * sh - ph + u * dh
            x = j * sw - pw + v * dw
            w = np.broadcast_to(weight[:, :, u, v][:, :, None, None], full)
            mask = np.broadcast_to((y >= 0) & (y < H) & (x >= 0) & (x < W), full) & (w != 0)
            rows.append(np.broadcast_to((o * Ho + i) * Wo + j, full)[mask])
            cols.append(np.broadcast_to((c * H + y) * W + x, full)[mask])
            vals.append(w[mask])
    shape = (co * Ho * Wo, C * H * W)
    return sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=shape)


def upsample_matrix(in_shape, size, mode: str, align_corners: bool) -> sp.csr_matrix:
    """``Upsample`` (``F.interpolate`` bilinear/nearest, ``[C, H, W] -> [C, Ho, Wo]``) as a sparse
    matrix ``[C*Ho*Wo, C*H*W]`` (``I_C (x) K``). The per-channel kernel ``K`` is obtained by
    interpolating unit impulses in float64, so every entry is bit for bit the weight PyTorch
    applies (a separable ``Ky (x) Kx`` differs in the last bit where border taps merge); bilinear
    has at most four non-zeros per output pixel, nearest one."""
    import torch
    import torch.nn.functional as F

    C, H, W = (int(d) for d in in_shape)
    Ho, Wo = (int(d) for d in size)
    ac = bool(align_corners) if mode == "bilinear" else None
    n, chunk = H * W, max(1, (1 << 22) // max(1, Ho * Wo))
    rows, cols, vals = [], [], []
    for c0 in range(0, n, chunk):
        idx = torch.arange(c0, min(n, c0 + chunk))
        imp = torch.zeros(idx.numel(), n, dtype=torch.float64)
        imp[torch.arange(idx.numel()), idx] = 1.0
        y = F.interpolate(imp.reshape(-1, 1, H, W), size=(Ho, Wo), mode=mode, align_corners=ac)
        y = y.reshape(idx.numel(), Ho * Wo).numpy()
        k, r = np.nonzero(y)
        rows.append(r)
        cols.append(k + c0)
        vals.append(y[k, r])
    kernel = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(Ho * Wo, n))
    return sp.kron(sp.identity(C, format="csr"), kernel, format="csr")


def memory_read_matrix(memory, num_heads: int, scale: float, tokens: int) -> sp.csr_matrix:
    """``MemoryRead`` (q ``[C, N]`` -> ``[Cv, N]``, ``y_h = scale * Q_h @ memory[0, h]``) as a
    ``[Cv*N, C*N]`` matrix: block-diagonal over heads, head ``h`` is ``scale * memory[0, h].T (x) I_N``
    (row ``(h*Cv/H + j)*N + n``, column ``(h*C/H + i)*N + n``). The memory must be constant over
    time (``T_mem = 1``); the caller checks it."""
    mem = np.asarray(memory, dtype=np.float64)[0] * float(scale)  # [H, C/H, Cv/H]
    eye = sp.identity(int(tokens), format="csr")
    blocks = [sp.kron(sp.csr_matrix(mem[h].T), eye, format="csr") for h in range(int(num_heads))]
    return sp.block_diag(blocks, format="csr")


def _bias_array(bias, shape) -> Optional[np.ndarray]:
    """A channel bias (axis 0) broadcast to the per-step ``shape``."""
    if bias is None:
        return None
    b = np.asarray(bias, dtype=np.float64).reshape((-1,) + (1,) * (len(shape) - 1))
    return np.broadcast_to(b, shape).astype(np.float64)


def linear_map(op, in_shape, out_shape) -> Tuple[sp.csr_matrix, Optional[np.ndarray]]:
    """Matrix ``M`` and per-step bias of a linear/affine IR op: ``y = M @ x.flat + bias``."""
    n_in = int(math.prod(in_shape))
    if isinstance(op, O.Conv2d):
        return conv_matrix(op.weight, in_shape, op.stride, op.padding, op.dilation, op.groups), _bias_array(op.bias, out_shape)
    if isinstance(op, O.Conv1d):
        w = np.asarray(op.weight)[:, :, None, :]
        m = conv_matrix(w, (in_shape[0], 1, in_shape[1]), (1, op.stride), (0, op.padding), (1, op.dilation), op.groups)
        return m, _bias_array(op.bias, out_shape)
    if isinstance(op, O.AvgPool2d):
        kh, kw = op.kernel
        w = np.full((in_shape[0], 1, kh, kw), 1.0 / (kh * kw))
        return conv_matrix(w, in_shape, op.stride, op.padding, (1, 1), in_shape[0]), None
    if isinstance(op, (O.Linear, O.GateLinear)):
        prefix = int(math.prod(in_shape[:-1]))
        m = sp.kron(sp.identity(prefix, format="csr"), sp.csr_matrix(np.asarray(op.weight)), format="csr")
        b = None if op.bias is None else np.broadcast_to(np.asarray(op.bias), out_shape).astype(np.float64)
        return m, b
    if isinstance(op, O.MeanReduce):
        idx = np.indices(in_shape)
        kept = [a for a in range(len(in_shape)) if a not in op.axes]
        count = int(math.prod(in_shape[a] for a in op.axes))
        if kept:
            rows = np.ravel_multi_index(tuple(idx[a] for a in kept), tuple(in_shape[a] for a in kept)).ravel()
        else:
            rows = np.zeros(n_in, dtype=np.int64)
        n_out = int(math.prod(out_shape))
        return sp.csr_matrix((np.full(n_in, 1.0 / count), (rows, np.arange(n_in))), shape=(n_out, n_in)), None
    if isinstance(op, O.Upsample):
        return upsample_matrix(in_shape, op.size, op.mode, op.align_corners), None
    if isinstance(op, O.MemoryRead):
        return memory_read_matrix(op.memory, op.num_heads, op.scale, in_shape[1]), None
    if isinstance(op, O.Scale):
        return sp.identity(n_in, format="csr") * float(op.factor), None
    if isinstance(op, O.BatchNorm):
        a, b = op.scale_shift()
        return sp.diags(_bias_array(a, in_shape).ravel(), format="csr"), _bias_array(b, in_shape)
    raise TypeError(f"no linear map for {op.kind}")  # pragma: no cover


# ---------------------------------------------------------------------------------------------
# the compiler
# ---------------------------------------------------------------------------------------------


class Compiler:
    """Turns a lowered IR graph into a process-graph description (pure data)."""

    def __init__(self, graph: Graph, encoding: str, unroll_limit: Optional[int] = None):
        self.graph, self.encoding = graph, encoding
        self.unroll_limit = UNROLL_LIMIT if unroll_limit is None else int(unroll_limit)
        self.shapes = validate(graph)
        #: macro-steps per value (None: the input's T); values a process handles share one count
        self.vsteps = value_steps(graph)
        fixed = [n for n in self.vsteps.values() if n is not None]
        #: macro-step slots per sample: values with fewer steps leave the later slots empty
        self.slots = max(fixed) if fixed else None
        self.stream_steps: Dict[Tuple[str, str], Optional[int]] = {}
        self.gates: Dict[tuple, Stream] = {}
        windows = [n.op.window for n in graph.neurons()]
        self.period = max(windows) if (encoding == "binary" and windows) else 1
        self.procs: List[dict] = []
        self.proc_index: Dict[str, dict] = {}
        self.connections: List[dict] = []
        self.arrays: Dict[str, np.ndarray] = {}
        self.delays: Dict[Tuple[str, str], Dict[int, Stream]] = {}
        self.host_sources: Dict[Tuple[str, int], Stream] = {}
        self.host_nodes: List[Node] = []
        self.host_values: set = set()
        self.neurons: Dict[str, dict] = {}
        self.outputs: List[dict] = []
        self.node: Optional[Node] = None

    # -- bookkeeping -------------------------------------------------------------------------
    def array(self, data: np.ndarray) -> str:
        key = f"a{len(self.arrays)}"
        self.arrays[key] = np.ascontiguousarray(data)
        return key

    def add_proc(self, kind: str, base: str, **params) -> str:
        name, k = f"{kind}:{base}", 1
        while name in self.proc_index:
            name, k = f"{kind}:{base}#{k}", k + 1
        rec = {"name": name, "type": kind, **params}
        self.procs.append(rec)
        self.proc_index[name] = rec
        return name

    def connect(self, src: Stream, dst: str, port: str) -> None:
        conn = {"src": src.proc, "src_port": src.port, "dst": dst, "dst_port": port}
        if conn in self.connections:
            raise unsupported(TARGET, self.node, f"{src.proc} would connect twice to {dst}.{port} "
                              "(the same value summed with itself)")
        self.connections.append(conn)

    def sparse(self, base: str, weights: sp.csr_matrix, msg_in: Sequence[str], node: str) -> str:
        w = sp.csr_matrix(weights)
        w.eliminate_zeros()
        w.sort_indices()
        return self.add_proc(
            "sparse", base, node=node, shape=[int(w.shape[0]), int(w.shape[1])], nnz=int(w.nnz),
            # Lava's binary Sparse casts its summed input to bool: only a single unit-spike stream
            # may use it (two spike streams summed into one port can carry 2)
            num_message_bits=0 if list(msg_in) == ["binary"] else GRADED_BITS,
            data=self.array(w.data.astype(np.float64)), indices=self.array(w.indices.astype(np.int64)),
            indptr=self.array(w.indptr.astype(np.int64)),
        )

    # -- streams -----------------------------------------------------------------------------
    def host_stream(self, value: str, size: int, start: int) -> Stream:
        key = (value, start)
        if key not in self.host_sources:
            steps = self.vsteps.get(value)
            name = self.add_proc("source", value, value=value, size=size, start=start, steps=steps)
            self.host_sources[key] = self.mark(Stream(name, "s_out", size, start, 1, "real"), steps)
        return self.host_sources[key]

    def delayed(self, s: Stream, d: int) -> Stream:
        """``s`` delayed by ``d`` steps, reusing (chaining) existing delay lines of ``s``."""
        if d == 0:
            return s
        chain = self.delays.setdefault((s.proc, s.port), {0: s})
        if d in chain:
            return chain[d]
        base = max(k for k in chain if k < d)
        src = chain[base]
        name = self.add_proc("delay", f"{s.proc}+{d}", size=s.size, delay=d - base)
        self.connect(src, name, "a_in")
        chain[d] = self.mark(Stream(name, "a_out", s.size, s.start + d, s.length, s.msg),
                             self.stream_steps.get((s.proc, s.port)))
        return chain[d]

    def gather(self, term: Term, base: str) -> Stream:
        """Materialize a routed term (non-identity origin) with a 0/1 gather ``Sparse``."""
        n = term.origin.size
        rows = np.flatnonzero(term.origin.ravel() >= 0)
        cols = term.origin.ravel()[rows]
        g = sp.csr_matrix((np.ones(rows.size), (rows, cols)), shape=(n, term.stream.size))
        name = self.sparse(f"{base}.gather", g, [term.stream.msg], self.node.name)
        self.connect_streams([[term.stream]], [(name, "s_in")])
        msg = "binary" if term.stream.msg == "binary" else "real"
        return self.mark(Stream(name, "a_out", n, term.stream.start + 1, term.stream.length, msg),
                         self.stream_steps.get((term.stream.proc, term.stream.port)))

    def streams_of(self, val: Val, base: str) -> List[Stream]:
        """The streams that, summed element-wise in one port, give ``val`` (minus its offset)."""
        val = self.expand_slots(val)
        out = []
        for t in val.terms:
            out.append(t.stream if _is_identity(t, val.size) else self.gather(t, base))
        return out

    def connect_streams(self, groups: List[List[Stream]], ports: List[Tuple[str, str]],
                        min_start: int = 1) -> Tuple[int, int]:
        """Connect each group of streams to its port, all aligned to a common start step (the
        latest stream's start, at least ``min_start``): earlier streams go through ``Delay``
        lines, host streams are injected at that step. Returns (start, window length)."""
        fixed = [s.start for g in groups for s in g if s.host is None]
        start = max(fixed + [min_start])
        length = 1
        for group, (dst, port) in zip(groups, ports):
            for s in group:
                src = self.host_stream(s.host, s.size, start) if s.host is not None else self.delayed(s, start - s.start)
                self.connect(src, dst, port)
                length = max(length, s.length)
        return start, length

    def mark(self, stream: Stream, steps: Optional[int]) -> Stream:
        """Record the number of macro-steps per sample ``stream`` carries (None: the input's T)."""
        self.stream_steps[(stream.proc, stream.port)] = steps
        return stream

    def step_gate(self, s: Stream, accept: Tuple[int, ...]) -> Stream:
        """``s`` passed only in its macro-steps ``accept`` (per sample), zero otherwise: a
        zero-latency ``step_gate`` process (shared per stream and step set)."""
        key = (s.proc, s.port, accept)
        if key not in self.gates:
            name = self.add_proc("step_gate", f"{s.proc}@{','.join(map(str, accept))}", node=self.node.name,
                                 size=s.size, start=s.start, length=s.length, accept=list(accept),
                                 steps=self.stream_steps.get((s.proc, s.port)))
            self.connect(s, name, "a_in")
            self.gates[key] = self.mark(Stream(name, "a_out", s.size, s.start, s.length, s.msg),
                                        self.stream_steps.get((s.proc, s.port)))
        return self.gates[key]

    def expand_slots(self, val: Val) -> Val:
        """Realize terms whose macro-steps are moved (``Term.slots``: value step t reads stream
        step ``slots[t]``, -1 none). Per shift ``d = t - slots[t]``, the stream's steps read with
        that shift pass a ``step_gate`` (skipped when all its steps are read) and are seen ``d``
        macro-steps later: a stream whose start is ``d * period`` earlier, so the alignment in
        :meth:`connect_streams` delays it by ``d`` macro-steps more (delay lines; fused into the
        consumer's taps later)."""
        if all(t.slots is None for t in val.terms):
            return val
        terms = []
        for t in val.terms:
            if t.slots is None:
                terms.append(t)
                continue
            if t.stream.host is not None:
                raise unsupported(TARGET, self.node, "a host value read in other macro-steps is not mapped")
            groups: Dict[int, List[int]] = {}
            for step, src in enumerate(t.slots):
                if src >= 0:
                    groups.setdefault(step - src, []).append(src)
            n_src = self.stream_steps.get((t.stream.proc, t.stream.port))
            for d, srcs in sorted(groups.items()):
                accept = tuple(sorted(set(srcs)))
                g = t.stream if (n_src is not None and accept == tuple(range(n_src))) else self.step_gate(t.stream, accept)
                view = Stream(g.proc, g.port, g.size, g.start - d * self.period, g.length, g.msg)
                terms.append(Term(view, t.origin, None))
        return Val(val.shape, False, terms, val.offset, val.spike, val.step_offset)

    # -- values ------------------------------------------------------------------------------
    def host_val(self, name: str) -> Val:
        shape = self.shapes[name]
        size = int(math.prod(shape))
        stream = Stream(f"host:{name}", "s_out", size, 0, 1, "real", host=name)
        self.host_values.add(name)
        return Val(shape, False, [Term(stream, _arange(shape))], None, False)

    def device(self, v: Val, name: str) -> Val:
        if v.softmax is not None and not isinstance(self.node.op, O.TemplateGate):
            raise unsupported(TARGET, self.node, f"the host softmax {name!r} can only feed a TemplateGate")
        return self.host_val(name) if v.host else v

    def apply_linear(self, node: Node, x: Val, m: sp.csr_matrix, bias, out_shape) -> Val:
        """A synapse: ``y = M x + bias``, one ``Sparse`` for the aligned identity terms of ``x``
        and one per routed term (its routing folded into the matrix columns)."""
        n_out = int(math.prod(out_shape))
        x = self.expand_slots(x)
        offset = None
        if x.offset is not None:
            offset = (m @ x.offset.ravel()).reshape(out_shape)
        if bias is not None:
            offset = bias.copy() if offset is None else offset + bias
        step_offset = None
        if x.step_offset is not None:
            so = x.step_offset.reshape(x.step_offset.shape[0], -1)
            step_offset = np.asarray((m @ so.T).T).reshape((so.shape[0],) + tuple(out_shape))
        groups: List[Tuple[sp.csr_matrix, List[Stream]]] = []
        ident = [t.stream for t in x.terms if _is_identity(t, x.size)]
        if ident:
            groups.append((m, ident))
        for t in x.terms:
            if _is_identity(t, x.size):
                continue
            rows = np.flatnonzero(t.origin.ravel() >= 0)
            g = sp.csr_matrix((np.ones(rows.size), (rows, t.origin.ravel()[rows])), shape=(x.size, t.stream.size))
            groups.append((sp.csr_matrix(m @ g), [t.stream]))
        terms = []
        for w, streams in groups:
            name = self.sparse(node.name, w, [s.msg for s in streams], node.name)
            start, length = self.connect_streams([streams], [(name, "s_in")])
            out = self.mark(Stream(name, "a_out", n_out, start + 1, length, "real"), self.vsteps.get(node.name))
            terms.append(Term(out, _arange(out_shape)))
        return Val(tuple(out_shape), False, terms, offset, False, step_offset)


    def apply_matmul(self, node: Node, x: Val, out_shape) -> Val:
        """A dense layer on the last axis kept as a kernel (``MatMulSynapse``): ``y[r] = W x[r] +
        bias`` for every row r of ``x`` ``[..., I]`` (``Linear``/``GateLinear`` whose unrolled
        matrix ``I_rows (x) W`` would exceed the unroll limit)."""
        x = self.expand_slots(x)
        weight = np.ascontiguousarray(np.asarray(node.op.weight, dtype=np.float64))
        rows = int(math.prod(x.shape[:-1]))
        offset = None if x.offset is None else _matmul_offset(x.offset, weight)
        if node.op.bias is not None:
            b = np.broadcast_to(np.asarray(node.op.bias, dtype=np.float64), out_shape)
            offset = b.copy() if offset is None else offset + b
        step_offset = None if x.step_offset is None else _matmul_offset(x.step_offset, weight)
        name = self.add_proc("matmul", node.name, node=node.name, rows=rows, in_features=int(weight.shape[1]),
                             out_features=int(weight.shape[0]), weight=self.array(weight))
        start, length = self.connect_streams([self.streams_of(x, node.name)], [(name, "s_in")])
        out = self.mark(Stream(name, "a_out", int(math.prod(out_shape)), start + 1, length, "real"),
                        self.vsteps.get(node.name))
        return Val(tuple(out_shape), False, [Term(out, _arange(out_shape))], offset, False, step_offset)

    def apply_conv(self, node: Node, x: Val, out_shape) -> Val:
        """A convolution synapse kept as a kernel (``ConvSynapse``): ``y = conv(x) + bias``. Routed
        terms of ``x`` are gathered first; a constant offset of ``x`` goes through the convolution
        at compile time."""
        import torch
        import torch.nn.functional as F

        weight, in_shape, args = conv2d_args(node.op, x.shape)
        x = self.expand_slots(x)
        step_offset = None
        if x.step_offset is not None:
            xo = torch.from_numpy(np.asarray(x.step_offset, dtype=np.float64).reshape((-1,) + in_shape))
            so = F.conv2d(xo, torch.from_numpy(weight), None, *args).numpy()
            step_offset = so.reshape((so.shape[0],) + tuple(out_shape))
        offset = None
        if x.offset is not None:
            xo = torch.from_numpy(np.asarray(x.offset, dtype=np.float64).reshape((1,) + in_shape))
            offset = F.conv2d(xo, torch.from_numpy(weight), None, *args).numpy().reshape(out_shape)
        bias = _bias_array(node.op.bias, out_shape)
        if bias is not None:
            offset = bias.copy() if offset is None else offset + bias
        name = self.add_proc("conv", node.name, node=node.name, in_shape=list(in_shape),
                             out_shape=list(conv_out_shape(weight, in_shape, args)),
                             stride=list(args[0]), padding=list(args[1]), dilation=list(args[2]), groups=args[3],
                             weight=self.array(weight))
        start, length = self.connect_streams([self.streams_of(x, node.name)], [(name, "s_in")])
        n_out = int(math.prod(out_shape))
        out = self.mark(Stream(name, "a_out", n_out, start + 1, length, "real"), self.vsteps.get(node.name))
        return Val(tuple(out_shape), False, [Term(out, _arange(out_shape))], offset, False, step_offset)


def _check_integer_arrays(procs: List[dict], arrays: Dict[str, np.ndarray]) -> None:
    """Fixed point: every array a process computes with is an exact integer (the exporter
    composes integer weights only); UnsupportedOpError naming the node otherwise."""
    from spikedeploy.errors import UnsupportedOpError
    from spikedeploy.exporters.lava_validate import fixed_array_fields

    for proc, node, name, key in fixed_array_fields(procs):
        a = np.asarray(arrays[key])
        if a.dtype.kind == "f" and a.size and not bool(np.all(a == np.round(a))):
            raise UnsupportedOpError(f"target {TARGET!r}: node {node!r} (process {proc!r}): {name} is not an integer "
                                     "in a fixed-point graph (an op the fixed-point export cannot compose exactly)")


def _fixed_plan(graph: Graph) -> Optional[dict]:
    """The fixed-point plan of ``graph`` (graph metadata ``fixed_point``), or None for a float graph."""
    plan = graph.meta_dict().get("fixed_point")
    return dict(plan) if plan is not None else None


def _dyadic_pairs(graph: Graph, plan: Optional[dict]) -> Dict[str, str]:
    """Fixed point: each dyadic weight-free op (plan ``dyadic``: pooling, mean, upsampling, whose
    weights are multiples of ``2**-s``) -> the ``Scale(2**s)`` that reads it, which the compiler
    composes with it into one integer synapse. The op must have that Scale as its only reader."""
    if not plan:
        return {}
    readers: Dict[str, List[Node]] = {}
    for n in graph.nodes:
        for i in n.inputs:
            readers.setdefault(i, []).append(n)
    pairs = {}
    for name in plan.get("dyadic", {}):
        r = readers.get(name, [])
        if name in graph.outputs or len(r) != 1 or not isinstance(r[0].op, O.Scale):
            node = next(n for n in graph.nodes if n.name == name)
            raise unsupported(TARGET, node, "a dyadic op of a fixed-point graph must be read by exactly one Scale "
                              "(its 2**s; quantize the graph with QuantizeFixedPoint)")
        pairs[name] = r[0].name
    return pairs


def _matmul_offset(offset: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """A constant input offset ``[..., I]`` through ``W`` (``[O, I]``): ``offset @ W.T``."""
    return np.asarray(offset, dtype=np.float64) @ weight.T


def conv2d_args(op, in_shape) -> Tuple[np.ndarray, Tuple[int, int, int], tuple]:
    """``Conv2d``/``Conv1d`` as a 2-D convolution: (float64 kernel, ``(C, H, W)`` input shape,
    ``(stride, padding, dilation, groups)``); a 1-D convolution is a 2-D one over ``H = 1``."""
    w = np.asarray(op.weight, dtype=np.float64)
    if isinstance(op, O.Conv1d):
        return (np.ascontiguousarray(w[:, :, None, :]), (int(in_shape[0]), 1, int(in_shape[1])),
                ((1, op.stride), (0, op.padding), (1, op.dilation), int(op.groups)))
    return (np.ascontiguousarray(w), tuple(int(v) for v in in_shape),
            (tuple(op.stride), tuple(op.padding), tuple(op.dilation), int(op.groups)))


def conv_out_shape(weight: np.ndarray, in_shape, args) -> Tuple[int, int, int]:
    (sh, sw), (ph, pw), (dh, dw), _ = args
    _, H, W = in_shape
    kh, kw = weight.shape[2:]
    return (int(weight.shape[0]), (H + 2 * ph - dh * (kh - 1) - 1) // sh + 1, (W + 2 * pw - dw * (kw - 1) - 1) // sw + 1)


# ---------------------------------------------------------------------------------------------
# rules: IR op class -> function(compiler, node, input values) -> output value
# ---------------------------------------------------------------------------------------------


def _neuron_params(op) -> dict:
    if isinstance(op, O.FixedIntegerLIF):
        leak = list(op.leak) if isinstance(op.leak, tuple) else op.leak
        return {"kind": "fixed_integer_lif", "d": int(op.d), "unit": int(op.unit), "reset": int(op.reset),
                "leak": leak, "rounding": op.rounding, "state_bits": int(op.state_bits), "label": op.label}
    if isinstance(op, O.FixedDynamicIntegerLIF):
        return {"kind": "fixed_dynamic_integer_lif", "d_init": int(op.d_init), "unit": int(op.unit),
                "reset": int(op.reset), "leak": op.leak, "sign": int(op.sign),
                "thresholds": [int(v) for v in op.thresholds], "rounding": op.rounding,
                "state_bits": int(op.state_bits), "label": op.label}
    if isinstance(op, O.FixedBinaryLIF):
        return {"kind": "fixed_binary_lif", "beta": int(op.beta), "threshold": int(op.threshold),
                "state_bits": int(op.state_bits), "label": op.label}
    if isinstance(op, O.IntegerLIF):
        leak = list(op.leak) if isinstance(op.leak, tuple) else op.leak
        return {"kind": "integer_lif", "d": int(op.d), "leak": leak, "reset_norm": float(op.reset_norm),
                "rounding": op.rounding, "label": op.label}
    if isinstance(op, O.DynamicIntegerLIF):
        return {"kind": "dynamic_integer_lif", "d_init": int(op.d_init), "gate_w": float(op.gate_w),
                "gate_b": float(op.gate_b), "leak": op.leak, "rounding": op.rounding, "label": op.label}
    return {"kind": "binary_lif", "beta": float(op.beta), "threshold": float(op.threshold), "label": op.label}


def neuron_rule(c: Compiler, node: Node, ins: List[Val]) -> Val:
    op = node.op
    if op.encoding != c.encoding:
        raise unsupported(TARGET, node, f"neuron is not lowered to {c.encoding!r} spikes "
                          f"(encoding {op.encoding!r}); run ExpandSpikes first")
    x = c.device(ins[0], node.inputs[0])
    shape = c.shapes[node.name]
    size = int(math.prod(shape))
    offs = x.offsets()
    bias = np.zeros((1, size)) if offs is None else offs.reshape(offs.shape[0], size).astype(np.float64)
    window = int(op.window) if c.encoding == "binary" else 1
    name = c.add_proc("neuron", node.name, node=node.name, size=size, shape=list(shape),
                      neuron=_neuron_params(op), encoding=c.encoding, window=window, bias=c.array(bias),
                      steps=c.vsteps.get(node.name))
    start, length = c.connect_streams([c.streams_of(x, node.name)], [(name, "a_in")])
    fire = start + length - 1
    c.proc_index[name].update(in_start=start, in_len=length, out_start=fire)
    c.neurons[node.name] = {"proc": name, "shape": list(shape), "label": op.label, "window": window,
                            "in_start": start, "in_len": length, "final_step": fire,
                            "steps": c.vsteps.get(node.name)}
    out = c.mark(Stream(name, "s_out", size, fire, window, c.encoding), c.vsteps.get(node.name))
    return Val(shape, False, [Term(out, _arange(shape))], None, True)


def synapse_rule(c: Compiler, node: Node, ins: List[Val]) -> Val:
    x = c.device(ins[0], node.inputs[0])
    if kept_as_kernel(node.op, x.shape, c.shapes[node.name], c.unroll_limit):
        if isinstance(node.op, (O.Linear, O.GateLinear)):
            return c.apply_matmul(node, x, c.shapes[node.name])
        return c.apply_conv(node, x, c.shapes[node.name])
    m, bias = linear_map(node.op, x.shape, c.shapes[node.name])
    return c.apply_linear(node, x, m, bias, c.shapes[node.name])


#: a sum (``Add``) of more streams than this is materialized by a relay (see :func:`add_rule`)
MAX_SUM_TERMS = 2


def add_rule(c: Compiler, node: Node, ins: List[Val]) -> Val:
    """``Add``: the streams of both operands meet in the consumer's port (no process). A sum of
    more than :data:`MAX_SUM_TERMS` streams (a residual trunk ``x0 + f1 + f2 + ...``) is
    materialized by a relay (a ``Delay`` of one step whose port sums the aligned streams):
    otherwise every later consumer would receive every earlier stream of the trunk, each through
    its own delay line."""
    a, b = (c.device(v, i) for v, i in zip(ins, node.inputs))
    offs = [v.offset for v in (a, b) if v.offset is not None]
    offset = None if not offs else sum(offs[1:], offs[0].copy())
    sofs = [v.step_offset for v in (a, b) if v.step_offset is not None]
    step_offset = None if not sofs else sum(sofs[1:], sofs[0].copy())
    terms = a.terms + b.terms
    if len(terms) <= MAX_SUM_TERMS:
        return Val(a.shape, False, terms, offset, False, step_offset)
    streams = c.streams_of(Val(a.shape, False, terms), node.name)
    name = c.add_proc("delay", f"{node.name}.sum", size=a.size, delay=1, relay=True, steps=c.vsteps.get(node.name))
    start, length = c.connect_streams([streams], [(name, "a_in")])
    c.proc_index[name].update(in_start=start, in_len=length)
    relay = c.mark(Stream(name, "a_out", a.size, start + 1, length, "real"), c.vsteps.get(node.name))
    return Val(a.shape, False, [Term(relay, _arange(a.shape))], offset, False, step_offset)


def add_constant_rule(c: Compiler, node: Node, ins: List[Val]) -> Val:
    x = c.device(ins[0], node.inputs[0])
    value = np.broadcast_to(np.asarray(node.op.value, dtype=np.float64), x.shape)
    offset = value.copy() if x.offset is None else x.offset + value
    return Val(x.shape, False, list(x.terms), offset, False, x.step_offset)


def _route(x: Val, fn: Callable[[np.ndarray], np.ndarray], shape) -> Val:
    terms = [Term(t.stream, fn(t.origin), t.slots) for t in x.terms]
    offset = None if x.offset is None else fn(x.offset)
    step_offset = None if x.step_offset is None else np.stack([fn(o) for o in x.step_offset])
    return Val(tuple(shape), False, terms, offset, x.spike, step_offset)


def reshape_rule(c: Compiler, node: Node, ins: List[Val]) -> Val:
    x = c.device(ins[0], node.inputs[0])
    return _route(x, lambda a: a.reshape(node.op.shape), node.op.shape)


def permute_rule(c: Compiler, node: Node, ins: List[Val]) -> Val:
    x = c.device(ins[0], node.inputs[0])
    return _route(x, lambda a: np.ascontiguousarray(np.transpose(a, node.op.perm)), c.shapes[node.name])


def concat_rule(c: Compiler, node: Node, ins: List[Val]) -> Val:
    xs = [c.device(v, i) for v, i in zip(ins, node.inputs)]
    axis = node.op.axis
    if any(x.step_offset is not None for x in xs):
        raise unsupported(TARGET, node, "concatenating values with per-macro-step offsets is not mapped")
    terms, offsets = [], []
    for k, x in enumerate(xs):
        for t in x.terms:
            parts = [t.origin if j == k else np.full(y.shape, -1, dtype=np.int64) for j, y in enumerate(xs)]
            terms.append(Term(t.stream, np.concatenate(parts, axis=axis), t.slots))
        offsets.append(np.zeros(x.shape) if x.offset is None else x.offset)
    offset = None if all(x.offset is None for x in xs) else np.concatenate(offsets, axis=axis)
    return Val(c.shapes[node.name], False, terms, offset, all(x.spike for x in xs))


def attention_rule(c: Compiler, node: Node, ins: List[Val]) -> Val:
    op = node.op
    if not all(v.spike for v in ins):
        raise unsupported(TARGET, node, "spike attention needs spike inputs q, k, v (lower the graph; "
                          "real-valued attention has no spike-driven form)")
    q, k, v = ins
    (C, N), (Cv, _) = q.shape, v.shape
    name = c.add_proc("attention", node.name, node=node.name, channels=C, v_channels=Cv, tokens=N,
                      heads=int(op.num_heads), scale=float(op.scale), steps=c.vsteps.get(node.name))
    kv_start, kv_len = c.connect_streams(
        [c.streams_of(k, node.name + ".k"), c.streams_of(v, node.name + ".v")],
        [(name, "k_in"), (name, "v_in")])
    q_start, q_len = c.connect_streams([c.streams_of(q, node.name + ".q")], [(name, "q_in")],
                                       min_start=kv_start + kv_len)
    c.proc_index[name].update(kv_start=kv_start, kv_len=kv_len, q_start=q_start, q_len=q_len)
    shape = c.shapes[node.name]
    out = c.mark(Stream(name, "a_out", Cv * N, q_start, q_len, "real"), c.vsteps.get(node.name))
    return Val(shape, False, [Term(out, _arange(shape))], None, False)


def upsample_rule(c: Compiler, node: Node, ins: List[Val]) -> Val:
    """``Upsample`` is a weight-free synapse: a ``Sparse`` with the exact interpolation weights."""
    return synapse_rule(c, node, ins)


def memory_read_rule(c: Compiler, node: Node, ins: List[Val]) -> Val:
    """``MemoryRead``: a ``memory_read`` kernel process (:class:`~spikedeploy.runtimes.lava_procs.
    MemoryReadSynapse`) that holds the memory (``[T_mem, H, C/H, Cv/H]``) instead of an unrolled
    matrix: in the q window each step's events read their memory rows, the rows read are summed
    over the window and, one step after it, ``scale * sum`` is sent as one real-valued event (the
    reference's arithmetic: the scale after the sum over sub-steps). A time-varying memory
    (``T_mem`` = q's macro-steps, SpikeTrack T = 3) is read at ``memory[t]`` in macro-step t. A
    constant offset of q goes through the memory at compile time (the output's offset)."""
    op = node.op
    x = c.device(ins[0], node.inputs[0])
    tm = int(op.memory.shape[0])
    if tm > 1:
        n = _steps(c, node.inputs[0])
        if n != tm:
            raise unsupported(TARGET, node, f"q has {n} macro-steps but the memory {tm}")
    (C, N), out_shape = x.shape, c.shapes[node.name]
    Cv = int(out_shape[0])
    memory = np.ascontiguousarray(np.asarray(op.memory, dtype=np.float64))
    offs = x.offsets()
    offset, step_offset = None, None
    if offs is not None:  # through the memory (per memory step), as the reference's rule on a real input
        read = np.stack([_memory_read_offset(o, memory[min(t, tm - 1)], float(op.scale))
                         for t, o in enumerate(offs if offs.shape[0] > 1 or tm == 1 else np.repeat(offs, tm, 0))])
        if read.shape[0] == 1:
            offset = read[0].reshape(out_shape)
        else:
            step_offset = read.reshape((read.shape[0],) + tuple(out_shape))
    name = c.add_proc("memory_read", node.name, node=node.name, channels=int(C), v_channels=Cv, tokens=int(N),
                      heads=int(op.num_heads), scale=float(op.scale), mem_steps=tm, memory=c.array(memory),
                      steps=c.vsteps.get(node.name))
    start, length = c.connect_streams([c.streams_of(x, node.name)], [(name, "q_in")])
    fire = start + length  # one step after the window's last step (a synapse's delay)
    c.proc_index[name].update(q_start=start, q_len=length, fire=fire)
    out = c.mark(Stream(name, "a_out", Cv * int(N), fire, 1, "real"), c.vsteps.get(node.name))
    return Val(tuple(out_shape), False, [Term(out, _arange(out_shape))], offset, False, step_offset)


def _memory_read_offset(q: np.ndarray, memory: np.ndarray, scale: float) -> np.ndarray:
    """A constant input ``q`` ``[C, N]`` through one memory step ``[H, C/H, Cv/H]``, as
    :class:`spikedeploy.reference.MemoryReadRule` computes it (float64): ``[Cv * N]``."""
    H, cdim, cv = memory.shape
    n = q.size // (H * cdim)
    qh = np.asarray(q, dtype=np.float64).reshape(H, cdim, n).transpose(0, 2, 1)
    return ((qh @ memory) * scale).transpose(0, 2, 1).reshape(H * cv * n)


def memory_write_rule(c: Compiler, node: Node, ins: List[Val]) -> Val:
    """``MemoryWrite``: an own ``MemoryWriter`` process counts co-occurring k/v unit-spike pairs
    (graded events: the product of the counts) over the aligned k/v window and, in the step the
    window completes, sends ``scale * counts`` (``[H, C/H, Cv/H]``, row-major) as one real-valued
    graded event."""
    op = node.op
    if not all(v.spike for v in ins):
        raise unsupported(TARGET, node, "memory write needs spike inputs k, v (lower the graph; "
                          "a real-valued product has no spike-driven form)")
    k, v = ins
    (C, N), (Cv, _) = k.shape, v.shape
    name = c.add_proc("memory_write", node.name, node=node.name, channels=C, v_channels=Cv, tokens=N,
                      heads=int(op.num_heads), scale=float(op.scale), steps=c.vsteps.get(node.name))
    kv_start, kv_len = c.connect_streams(
        [c.streams_of(k, node.name + ".k"), c.streams_of(v, node.name + ".v")],
        [(name, "k_in"), (name, "v_in")])
    c.proc_index[name].update(kv_start=kv_start, kv_len=kv_len)
    shape = c.shapes[node.name]
    out = c.mark(Stream(name, "a_out", int(math.prod(shape)), kv_start + kv_len - 1, 1, "real"),
                 c.vsteps.get(node.name))
    return Val(shape, False, [Term(out, _arange(shape))], None, False)


def _steps(c: "Compiler", name: str) -> int:
    n = c.vsteps.get(name)
    if n is None:
        raise unsupported(TARGET, c.node, f"value {name!r} needs a fixed number of macro-steps")
    return int(n)


def select_step_rule(c: Compiler, node: Node, ins: List[Val]) -> Val:
    """``SelectStep(s)``: routing in time. No process: every term records that its value step 0 is
    step ``s`` of its stream (``Term.slots``); per-step offsets keep row ``s``. Such a one-step view
    can be connected only after a :func:`stack_steps_rule` recombines all the steps."""
    x = c.device(ins[0], node.inputs[0])
    n, s = _steps(c, node.inputs[0]), int(node.op.step)
    terms = [Term(t.stream, t.origin, ((t.slots or tuple(range(n)))[s],)) for t in x.terms]
    so = None if x.step_offset is None else x.step_offset[s:s + 1].copy()
    return Val(x.shape, False, terms, x.offset, x.spike, so)


def stack_steps_rule(c: Compiler, node: Node, ins: List[Val]) -> Val:
    """``StackSteps``: one-step values become steps 0..K-1. No process: terms of the same stream
    and routing are merged step by step (``Term.slots``); when they cover the stream's steps in
    order the term is the stream itself again (SpikeTrack T = 3's per-template constants,
    ``x[t] + pos[t]`` stacked back); otherwise each term keeps its step map and is realized with a
    step gate and a shift of whole macro-steps (per-template convolutions ``conv_t(x[t])``). The
    inputs' offsets become a per-step offset."""
    xs = [c.device(v, i) for v, i in zip(ins, node.inputs)]
    K = len(xs)
    merged: Dict[tuple, list] = {}
    for t, x in enumerate(xs):
        for term in x.terms:
            if term.stream.host is not None:
                raise unsupported(TARGET, node, "stacking host values is not mapped (they run on the host)")
            (src_slot,) = term.slots if term.slots is not None else (0,)
            key = (term.stream.proc, term.stream.port, term.origin.tobytes(), term.origin.shape)
            entry = merged.setdefault(key, [term, [None] * K])
            if entry[1][t] is not None:
                raise unsupported(TARGET, node, "a stream enters one stacked step twice")
            entry[1][t] = src_slot
    terms = []
    for term, slots in merged.values():
        slots = tuple(-1 if v is None else v for v in slots)
        n_src = c.stream_steps.get((term.stream.proc, term.stream.port), "?")
        identity = slots == tuple(range(K)) and n_src == K
        terms.append(Term(term.stream, term.origin, None if identity else slots))
    rows = []
    for x in xs:
        o = x.offsets()
        rows.append(np.zeros(x.shape) if o is None else o[0])
    offsets = np.stack(rows)
    offset, step_offset = None, None
    if np.any(offsets != 0):
        if all(np.array_equal(r, rows[0]) for r in rows):
            offset = rows[0].copy()
        else:
            step_offset = offsets
    return Val(xs[0].shape, False, terms, offset, all(x.spike for x in xs), step_offset)


def repeat_time_rule(c: Compiler, node: Node, ins: List[Val]) -> Val:
    """``RepeatTime(T)``: a one-step value read in macro-steps 0..T-1 (SpikeTrack T = 3's search
    query). No process: each term's step map becomes ``(s, s, ..., s)``, realized as the stream
    seen in T shifts of whole macro-steps (delay lines, fused into the consumer's taps)."""
    x = c.device(ins[0], node.inputs[0])
    T = int(node.op.times)
    terms = []
    for t in x.terms:
        if t.stream.host is not None:
            raise unsupported(TARGET, node, "repeating a host value over the template axis is not mapped")
        (src,) = t.slots if t.slots is not None else (0,)
        terms.append(Term(t.stream, t.origin, (src,) * T))
    so = None if x.step_offset is None else np.repeat(x.step_offset[:1], T, axis=0)
    return Val(x.shape, False, terms, x.offset, x.spike, so)


def gate_linear_rule(c: Compiler, node: Node, ins: List[Val]) -> Val:
    """``GateLinear``: the template gate's token mixing, a Linear on the last axis (a ``Sparse``)."""
    return synapse_rule(c, node, ins)


def gate_softmax_rule(c: Compiler, node: Node, ins: List[Val]) -> Val:
    """``GateSoftmax`` (HOST op inside the network): a ``host_softmax`` process, marked host in
    the bundle, integrates the gate logits of each of the T macro-steps (its window plus the
    per-step offset) and, in the step the last one completes, sends ``softmax over t`` of all of
    them (``[T, C]``) as one real-valued event, computed as the reference does (``F.softmax`` on
    the ``[B, C, T]`` layout, float64). Only a ``TemplateGate`` reads it."""
    x = c.device(ins[0], node.inputs[0])
    n = _steps(c, node.inputs[0])
    C = x.size
    offs = x.offsets()
    offset = np.zeros((1, C)) if offs is None else offs.reshape(offs.shape[0], C)
    name = c.add_proc("host_softmax", node.name, node=node.name, size=C, steps=n, host=True,
                      offset=c.array(offset.astype(np.float64)))
    start, length = c.connect_streams([c.streams_of(x, node.name)], [(name, "a_in")])
    fire = start + (n - 1) * c.period + length - 1
    c.proc_index[name].update(in_start=start, in_len=length, fire=fire)
    out = c.mark(Stream(name, "a_out", n * C, fire, 1, "real"), 1)
    return Val(x.shape, False, [], None, False, None, out)


def template_gate_rule(c: Compiler, node: Node, ins: List[Val]) -> Val:
    """``TemplateGate``: ``y = scale * sum_t w[t, c] * x[t, c, ...]`` with ``w`` from the host
    softmax: a ``template_gate`` process (a synapse of fan-out 1 whose weights the host writes
    every frame) keeps x's spikes of the T macro-steps (unit spikes per sub-step, or graded
    counts) and, once the T steps and the weights have arrived, sends the weighted sum as one
    real-valued event (one macro-step), summed as the reference does (per sub-step, over t)."""
    x = c.device(ins[0], node.inputs[0])
    w = ins[1]
    if w.softmax is None:
        raise unsupported(TARGET, node, "the template gate's weights must come from a GateSoftmax")
    if not x.spike:
        raise unsupported(TARGET, node, "the template gate needs spike inputs (lower the graph)")
    n = _steps(c, node.inputs[0])
    size = x.size
    name = c.add_proc("template_gate", node.name, node=node.name, size=size, channels=int(x.shape[0]),
                      steps=n, scale=float(node.op.scale), encoding=c.encoding, w_start=w.softmax.start)
    start, length = c.connect_streams([c.streams_of(x, node.name)], [(name, "x_in")])
    c.connect(w.softmax, name, "w_in")
    fire = max(start + (n - 1) * c.period + length - 1, w.softmax.start)
    c.proc_index[name].update(in_start=start, in_len=length, fire=fire)
    out = c.mark(Stream(name, "a_out", size, fire, 1, "real"), c.vsteps.get(node.name))
    return Val(x.shape, False, [Term(out, _arange(x.shape))], x.offset, False, None)


def host_only_rule(c: Compiler, node: Node, ins: List[Val]) -> Val:
    """``Quantize`` (the host -> device boundary of a fixed-point graph) has no neuron upstream, so it
    runs in the bundle's host part (the reference's rule: round half to even, clamp to 24 bits,
    clamps counted) and its integers are injected; one that reads a device value is refused."""
    raise unsupported(TARGET, node, "Quantize is the host -> device boundary and runs on the host; it cannot read "
                      "a device value (quantize the float graph with QuantizeFixedPoint)")


def _clip_steps(c: "Compiler", node: Node) -> int:
    """The fixed number of frames T a step-mixing attention is compiled for: the graph input's fixed
    steps, else the graph metadata ``timesteps`` (set by capture's callers: ``prepare_graph``,
    verify); refused by name without one."""
    n = c.vsteps.get(node.name)
    if n is None:
        n = c.graph.meta_dict().get("timesteps")
    if n is None:
        raise unsupported(TARGET, node, f"{node.op.kind} over {node.op.tokens} token groups waits for all T frames, "
                          "so the bundle is compiled for one T: give the graph a fixed T (graph metadata "
                          "'timesteps', as spikedeploy export -T sets it)")
    return int(n)


def space_time_attention_rule(c: Compiler, node: Node, ins: List[Val]) -> Val:
    """SpikeVideoFormer's SDHA / dot-product attention over space-time tokens: one
    ``st_attention`` process (:class:`~spikedeploy.runtimes.lava_procs.SpaceTimeAttention`) that
    counts the k·v pairs and v spikes of each token group as they arrive and, once a group is
    complete, freezes its memory ``M = 2K^T V - 1^T V`` (dot: ``K^T V``); q spikes read its rows
    and ``1^T M`` is subtracted once per macro-step; the result is one real-valued event in the q
    window's last step (the reference's integers, then the scale).

    Timing: with spatial groups only, q is read right after its own k/v window (as
    ``SpikeAttention``). A step-mixing grouping (joint, temporal, factorized's temporal heads)
    makes step t's output depend on every step of the sample, so q is delayed until after the
    k/v window of the sample's last step: ``q_start >= kv_start + (T - 1) * period + kv_len``
    (delay lines fused into the process's taps); the downstream streams are balanced as usual.
    The bundle is then compiled for that T (``timesteps`` of the process; the runtime refuses
    another)."""
    op = node.op
    if not all(v.spike for v in ins):
        raise unsupported(TARGET, node, f"{op.kind} needs spike inputs q, k, v (lower the graph; real-valued "
                          "attention has no spike-driven form)")
    if c.slots is not None:
        raise unsupported(TARGET, node, f"{op.kind} in a graph with time-axis ops (macro-step slots) is not mapped")
    q, k, v = ins
    (C, N), (Cv, _) = q.shape, v.shape
    T = _clip_steps(c, node) if op.mixes_steps else None
    name = c.add_proc("st_attention", node.name, node=node.name, channels=int(C), v_channels=int(Cv), tokens=int(N),
                      heads=int(op.num_heads), groupings=list(op.head_groupings()), score=op.score,
                      scale=float(op.scale), timesteps=T, steps=c.vsteps.get(node.name))
    kv_start, kv_len = c.connect_streams(
        [c.streams_of(k, node.name + ".k"), c.streams_of(v, node.name + ".v")],
        [(name, "k_in"), (name, "v_in")])
    wait = (T - 1) * c.period if T is not None else 0
    q_start, q_len = c.connect_streams([c.streams_of(q, node.name + ".q")], [(name, "q_in")],
                                       min_start=kv_start + wait + kv_len)
    fire = q_start + q_len - 1
    c.proc_index[name].update(kv_start=kv_start, kv_len=kv_len, q_start=q_start, q_len=q_len, fire=fire)
    shape = c.shapes[node.name]
    out = c.mark(Stream(name, "a_out", int(Cv) * int(N), fire, 1, "real"), c.vsteps.get(node.name))
    return Val(shape, False, [Term(out, _arange(shape))], None, False)


RULES: Dict[type, Callable[[Compiler, Node, List[Val]], Val]] = {
    O.Quantize: host_only_rule,
    O.RepeatTime: repeat_time_rule,
    O.SelectStep: select_step_rule,
    O.StackSteps: stack_steps_rule,
    O.GateLinear: gate_linear_rule,
    O.GateSoftmax: gate_softmax_rule,
    O.TemplateGate: template_gate_rule,
    O.IntegerLIF: neuron_rule,
    O.DynamicIntegerLIF: neuron_rule,
    O.BinaryLIF: neuron_rule,
    O.FixedIntegerLIF: neuron_rule,
    O.FixedBinaryLIF: neuron_rule,
    O.FixedDynamicIntegerLIF: neuron_rule,
    O.Conv2d: synapse_rule,
    O.Conv1d: synapse_rule,
    O.Linear: synapse_rule,
    O.AvgPool2d: synapse_rule,
    O.MeanReduce: synapse_rule,
    O.Scale: synapse_rule,
    O.BatchNorm: synapse_rule,
    O.Add: add_rule,
    O.AddConstant: add_constant_rule,
    O.Reshape: reshape_rule,
    O.Permute: permute_rule,
    O.Concat: concat_rule,
    O.SpikeLinearAttention: attention_rule,
    O.SpikeHammingAttention: space_time_attention_rule,
    O.SpikeDotAttention: space_time_attention_rule,
    O.Upsample: upsample_rule,
    O.MemoryRead: memory_read_rule,
    O.MemoryWrite: memory_write_rule,
}


# ---------------------------------------------------------------------------------------------
# process fusion (a pass on the process-graph description)
# ---------------------------------------------------------------------------------------------

#: processes whose input ports can absorb synapses and delay lines, and the window (start, length
#: fields of the process record) in which each input port is read
TAP_CONSUMERS: Dict[str, Dict[str, Tuple[str, str]]] = {
    "neuron": {"a_in": ("in_start", "in_len")},
    "readout": {"a_in": ("start", "length")},
    "attention": {"q_in": ("q_start", "q_len"), "k_in": ("kv_start", "kv_len"), "v_in": ("kv_start", "kv_len")},
    "st_attention": {"q_in": ("q_start", "q_len"), "k_in": ("kv_start", "kv_len"), "v_in": ("kv_start", "kv_len")},
    "memory_write": {"k_in": ("kv_start", "kv_len"), "v_in": ("kv_start", "kv_len")},
    "junction": {"a_in": ("in_start", "in_len")},
    "host_softmax": {"a_in": ("in_start", "in_len")},
    "template_gate": {"x_in": ("in_start", "in_len"), "w_in": ("w_start", "w_len")},
    "memory_read": {"q_in": ("q_start", "q_len")},
}
#: synapse processes that can be fused into their consumer
FUSABLE_SYNAPSES = ("sparse", "conv", "matmul")
#: a synapse read by several processes is fused into each of them up to this many readers
MAX_SYNAPSE_COPIES = 3


def _out_size(p: dict) -> int:
    """Size of the (single) output port of a process record."""
    t = p["type"]
    if t == "sparse":
        return int(p["shape"][0])
    if t == "conv":
        return int(math.prod(p["out_shape"]))
    if t == "matmul":
        return int(p["rows"]) * int(p["out_features"])
    if t in ("attention", "st_attention"):
        return int(p["v_channels"]) * int(p["tokens"])
    if t == "memory_write":
        return int(p["channels"]) * int(p["v_channels"]) // int(p["heads"])
    if t == "host_softmax":
        return int(p["steps"]) * int(p["size"])
    if t == "memory_read":
        return int(p["v_channels"]) * int(p["tokens"])
    return int(p["size"])


def _send_window(p: dict) -> Optional[Tuple[str, int, int, Optional[int]]]:
    """(output port, start, length, macro-steps) of the data a project process sends per
    macro-step, for processes that can send only inside that window (None: every step)."""
    t, n = p["type"], p.get("steps")
    if t == "neuron":
        return "s_out", p["out_start"], p["window"], n
    if t == "attention":
        return "a_out", p["q_start"], p["q_len"], n
    if t == "memory_write":
        return "a_out", p["kv_start"] + p["kv_len"] - 1, 1, n
    if t == "junction":
        return "a_out", p["in_start"] + 1, p["in_len"], n
    if t == "source":
        return "s_out", p["start"], 1, n
    if t in ("host_softmax", "template_gate"):
        return "a_out", p["fire"], 1, 1 if n is not None else None
    if t in ("memory_read", "st_attention"):
        return "a_out", p["fire"], 1, n
    return None


def fuse_processes(procs: List[dict], connections: List[dict]) -> Tuple[List[dict], List[dict], dict]:
    """Fuse synapses and delay lines into the processes that consume them (same arithmetic and
    timing, fewer Lava processes and messages). Returns new (processes, connections, stats).

    * A ``Sparse``/``ConvSynapse`` whose output feeds only input ports of consumers (integer
      neuron, attention, memory writer, readout, residual relay; directly or through delay lines
      that have no other reader; at most :data:`MAX_SYNAPSE_COPIES` readers) becomes a *synaptic
      tap* of each of those ports (a synapse with several readers is computed by each): the consumer receives the synapse's input spikes itself and computes
      ``W @ x`` (Lava ``Sparse``'s exact formula, or the kernel convolution) one step later, so
      the input the consumer integrates at step k is still ``W @ x[k - 1]``.
    * ``Delay`` chains in front of a tap are replaced by the tap's own delay: a source delayed by
      ``d`` steps is buffered inside the consumer and used ``d`` steps after it arrived.
    * A residual relay (a one-step ``Delay`` summing several streams) becomes a ``junction``
      process with taps (``out[k] = sum of its taps' inputs at k - 1``).
    * Every input of a consumer keeps its order, so the summed current is added in the same order
      as Lava's ``InPort`` sums its connections (bit-identical to the unfused graph).
    * Windowed messages: a project process whose outputs feed only tap ports sends only in its
      output window (``send``), and each tap receives only in that window (``sched``); Lava's own
      processes (``Sparse``, ``RingBuffer``) and ports feeding them keep sending every step.

    A tap records ``syn`` (None, or the synapse: ``{"kind": "sparse"|"conv", ...}``) and
    ``sources`` (``{"port", "src", "src_port", "delay", "sched"}``: the consumer's own InPort for
    that source, the sending process and port, the delay in steps from sending to use, and the
    sender's window ``[start, length]`` or None when it sends every step)."""
    procs = [dict(p) for p in procs]
    by_name = {p["name"]: p for p in procs}
    for p in procs:  # residual relays become junctions (a consumer with taps)
        if p["type"] == "delay" and p.get("relay"):
            p["type"] = "junction"
    incoming: Dict[Tuple[str, str], List[dict]] = {}
    outgoing: Dict[Tuple[str, str], List[dict]] = {}
    for cn in connections:
        incoming.setdefault((cn["dst"], cn["dst_port"]), []).append(cn)
        outgoing.setdefault((cn["src"], cn["src_port"]), []).append(cn)

    def resolve(src: str, port: str) -> Tuple[str, str, int, Optional[dict]]:
        """Follow plain delay lines and at most one step gate upstream: (origin process, port,
        accumulated delay, step filter on the origin's send step or None)."""
        d, filt = 0, None
        while by_name[src]["type"] in ("delay", "step_gate"):
            g = by_name[src]
            ins = incoming.get((src, "a_in"), [])
            if len(ins) != 1:
                break
            if g["type"] == "step_gate":
                up = by_name[ins[0]["src"]]["type"]
                if filt is not None or up in ("delay", "step_gate"):
                    break  # a second gate, or a delay before the gate: keep the process
                filt = {"start": int(g["start"]), "accept": [int(a) for a in g["accept"]]}
            else:
                d += int(g["delay"])
            src, port = ins[0]["src"], ins[0]["src_port"]
        return src, port, d, filt

    def exclusive_chain(src: str) -> Tuple[dict, int]:
        """Follow delay lines upstream while each has this one reader: (first other process, delay)."""
        d = 0
        while by_name[src]["type"] == "delay" and len(outgoing.get((src, "a_out"), [])) == 1:
            ins = incoming.get((src, "a_in"), [])
            if len(ins) != 1:
                break
            d += int(by_name[src]["delay"])
            src = ins[0]["src"]
        return by_name[src], d

    def reaches_consumer(cn: dict) -> bool:
        """Whether a connection leads, through delay lines with one reader each, to a tap port."""
        dst = cn["dst"]
        while by_name[dst]["type"] == "delay":
            outs = outgoing.get((dst, "a_out"), [])
            if len(outs) != 1:
                return False
            cn = outs[0]
            dst = cn["dst"]
        return cn["dst_port"] in TAP_CONSUMERS.get(by_name[dst]["type"], {})

    # a synapse is fused into every process that reads it (duplicated when it has several
    # readers, at most MAX_SYNAPSE_COPIES: each computes the same W @ x, bit for bit)
    fusable = set()
    for p in procs:
        outs = outgoing.get((p["name"], "a_out"), [])
        if (p["type"] in FUSABLE_SYNAPSES and incoming.get((p["name"], "s_in"))
                and 1 <= len(outs) <= MAX_SYNAPSE_COPIES and all(reaches_consumer(cn) for cn in outs)):
            fusable.add(p["name"])

    removed_syn = set()
    tapped = {}  # consumer -> {logical port: [tap, ...]}
    for p in procs:
        ports = TAP_CONSUMERS.get(p["type"])
        if ports is None:
            continue
        spec = {}
        for lp in ports:
            taps = []
            for cn in incoming.get((p["name"], lp), []):
                src, d_out = exclusive_chain(cn["src"])
                if src["name"] in fusable:
                    sources = [resolve(c2["src"], c2["src_port"]) for c2 in incoming[(src["name"], "s_in")]]
                    taps.append({"syn": src["name"],
                                 "sources": [(s, sp, d + 1 + d_out, f) for s, sp, d, f in sources]})
                    removed_syn.add(src["name"])
                else:
                    taps.append({"syn": None, "sources": [resolve(cn["src"], cn["src_port"])]})
            spec[lp] = taps
        tapped[p["name"]] = spec
    removed_syn = {n for n in removed_syn if n in fusable}

    # what still consumes each process output: tap sources and the remaining plain connections
    keep_conns = []
    for cn in connections:
        if cn["dst"] in tapped or cn["dst"] in removed_syn:
            continue
        keep_conns.append(cn)
    tap_users: Dict[Tuple[str, str], int] = {}
    for spec in tapped.values():
        for taps in spec.values():
            for t in taps:
                for s, port, _, _ in t["sources"]:
                    tap_users[(s, port)] = tap_users.get((s, port), 0) + 1
    # drop delay lines no one reads any more (iterate: chains)
    while True:
        plain_users: Dict[Tuple[str, str], int] = {}
        for cn in keep_conns:
            plain_users[(cn["src"], cn["src_port"])] = plain_users.get((cn["src"], cn["src_port"]), 0) + 1
        dead = {p["name"] for p in procs if p["type"] in ("delay", "step_gate") and p["name"] not in removed_syn
                and not plain_users.get((p["name"], "a_out")) and not tap_users.get((p["name"], "a_out"))}
        if not dead:
            break
        removed_syn |= dead
        keep_conns = [cn for cn in keep_conns if cn["dst"] not in dead and cn["src"] not in dead]
    # windowed senders: every reader of the output is a tap
    send = {}
    for p in procs:
        if p["name"] in removed_syn:
            continue
        w = _send_window(p)
        if w is None:
            continue
        port, start, length, steps = w
        if tap_users.get((p["name"], port)) and not plain_users.get((p["name"], port)):
            send[(p["name"], port)] = [int(start), int(length), None if steps is None else int(steps)]
    out_procs, out_conns = [], list(keep_conns)
    for p in procs:
        if p["name"] in removed_syn:
            continue
        w = _send_window(p)
        if w is not None and (p["name"], w[0]) in send:
            p["send"] = {w[0]: send[(p["name"], w[0])]}
        spec = tapped.get(p["name"])
        if spec is not None:
            ports: Dict[Tuple[str, str], str] = {}  # one port per sender, read by several taps
            inputs = {}
            for lp, taps in spec.items():
                out_taps = []
                for t in taps:
                    sources = []
                    for s, sp, d, f in t["sources"]:
                        port = ports.get((s, sp))
                        if port is None:
                            port = ports[(s, sp)] = f"t{len(ports)}"
                            out_conns.append({"src": s, "src_port": sp, "dst": p["name"], "dst_port": port})
                        sources.append({"port": port, "src": s, "src_port": sp, "delay": int(d),
                                        "size": _out_size(by_name[s]), "sched": send.get((s, sp)), "filter": f})
                    syn = None
                    if t["syn"] is not None:
                        r = by_name[t["syn"]]
                        syn = {k2: v for k2, v in r.items() if k2 not in ("name", "type")}
                        syn["kind"] = r["type"]
                    out_taps.append({"syn": syn, "sources": sources})
                inputs[lp] = out_taps
            p["inputs"] = inputs
        out_procs.append(p)
    stats = {"processes_before": len(procs), "processes_after": len(out_procs),
             "fused_synapses": sum(1 for n in removed_syn if by_name[n]["type"] in FUSABLE_SYNAPSES),
             "removed_delays": sum(1 for n in removed_syn if by_name[n]["type"] == "delay"),
             "removed_step_gates": sum(1 for n in removed_syn if by_name[n]["type"] == "step_gate"),
             "windowed_senders": len(send)}
    return out_procs, out_conns, stats


# ---------------------------------------------------------------------------------------------
# compile / export / load
# ---------------------------------------------------------------------------------------------


def _lowered(graph: Graph, encoding: str) -> Graph:
    from spikedeploy.reference import graph_mode

    if encoding not in ENCODINGS:
        raise SpikedeployError(f"Lava target: unknown encoding {encoding!r}; expected one of {ENCODINGS}")
    mode = graph_mode(graph)
    if mode == "integer":
        from spikedeploy.passes import ExpandSpikes

        return ExpandSpikes(encoding).apply(graph)
    if mode != encoding:
        raise SpikedeployError(f"Lava target: the graph is lowered to {mode!r} spikes, not {encoding!r}")
    return graph


#: Synapses are unrolled into sparse matrices (about 24 bytes per synapse while compiling and far
#: more inside Lava); a graph above this many stops with a clear error instead of exhausting memory.
MAX_SYNAPSES = 100_000_000
#: A convolution with more synapses than this is kept as a kernel (``ConvSynapse`` process) instead
#: of being unrolled into a ``Sparse`` matrix.
UNROLL_LIMIT = 1_000_000
#: ops that can run as a ``ConvSynapse``
KERNEL_OPS = (O.Conv2d, O.Conv1d, O.Linear, O.GateLinear)


def kept_as_kernel(op: O.Op, in_shape, out_shape, unroll_limit: int) -> bool:
    """Whether ``op`` runs as a kernel process instead of an unrolled ``Sparse``: a convolution
    (``ConvSynapse``) or a dense layer on the last axis (``MatMulSynapse``) above ``unroll_limit``
    synapses, and every ``MemoryRead`` (``MemoryReadSynapse``: its weights are the template memory,
    and the reference scales the sum, not the weights)."""
    if isinstance(op, O.MemoryRead):
        return True
    return isinstance(op, KERNEL_OPS) and synapse_upper_bound(op, in_shape, out_shape) > unroll_limit


def synapse_upper_bound(op: O.Op, in_shape, out_shape) -> int:
    """Upper bound of the synapses an op unrolls into (no zero weights dropped, no borders)."""
    n_out = int(math.prod(out_shape))
    if isinstance(op, (O.Conv2d, O.Conv1d)):
        return n_out * int(math.prod(op.weight.shape[1:]))
    if isinstance(op, O.AvgPool2d):
        return n_out * int(op.kernel[0] * op.kernel[1])
    if isinstance(op, (O.Linear, O.GateLinear)):
        return n_out * int(op.weight.shape[1])
    if isinstance(op, O.MemoryRead):
        return n_out * int(op.memory.shape[2])
    if isinstance(op, O.Upsample):
        return n_out * 4
    if isinstance(op, O.MeanReduce):
        return int(math.prod(in_shape))
    return 0


def check_size(graph: Graph, max_synapses: int = MAX_SYNAPSES, unroll_limit: Optional[int] = None) -> int:
    """Raise ``UnsupportedOpError`` (naming the largest layers) when the synapses unrolled into
    ``Sparse`` matrices (convolutions above ``unroll_limit`` are kept as kernels and not counted)
    would exceed ``max_synapses``; return the estimate otherwise."""
    shapes = validate(graph)
    limit = UNROLL_LIMIT if unroll_limit is None else int(unroll_limit)
    sizes = []
    for n in graph.nodes:
        if not n.inputs:
            continue
        a, b = shapes[n.inputs[0]], shapes[n.name]
        if not kept_as_kernel(n.op, a, b, limit):
            sizes.append((synapse_upper_bound(n.op, a, b), n.name))
    sizes.sort(reverse=True)
    total = sum(k for k, _ in sizes)
    if total > max_synapses:
        top = ", ".join(f"{name} ({k:.2e})" for k, name in sizes[:3])
        from spikedeploy.errors import UnsupportedOpError

        raise UnsupportedOpError(
            f"target {TARGET!r}: the graph would unroll into about {total:.2e} synapses (limit {max_synapses:.0e}; "
            f"largest: {top}). The Lava target unrolls these layers into sparse matrices (convolutions "
            f"above {limit:.0e} synapses are kept as kernels); export a smaller network, or use the onnx/nir targets"
        )
    return total


def compile_graph(graph: Graph, encoding: str, *, unroll_limit: Optional[int] = None,
                  fuse: bool = True, partitions="auto") -> Tuple[dict, Dict[str, np.ndarray]]:
    """Compile ``graph`` (integer graphs are lowered to ``encoding`` first) into the bundle's
    description (JSON-serializable) and its arrays; ``partitions`` (``"auto"``, ``"per-layer"`` or
    N) is the placement recorded in it (``placement``, :mod:`spikedeploy.exporters.lava_placement`).
    Convolutions with more than ``unroll_limit``
    synapses (default :data:`UNROLL_LIMIT`; 0 keeps every convolution as a kernel) run as
    ``ConvSynapse`` processes. Graphs that would unroll into more than :data:`MAX_SYNAPSES`
    synapses are refused (:func:`check_size`). ``fuse`` (default): synapses and delay lines are
    fused into the processes that consume them and project processes send only inside their
    output windows (:func:`fuse_processes`; same spikes, fewer processes and messages)."""
    given_outputs = tuple(graph.outputs)
    check_size(graph, unroll_limit=unroll_limit)
    graph = _lowered(graph, encoding)
    #: ExpandSpikes may rename an output (``n.descale``): outputs keep the caller's names
    out_names = dict(zip(graph.outputs, given_outputs))
    c = Compiler(graph, encoding, unroll_limit)
    vals: Dict[str, Val] = {s.name: Val(tuple(s.shape), True) for s in graph.inputs}
    fixed = _fixed_plan(graph)
    dyadic = _dyadic_pairs(graph, fixed)
    pending: Dict[str, Tuple[Val, sp.csr_matrix]] = {}
    for node in graph.nodes:
        c.node = node
        if node.name in dyadic and not all(vals[i].host for i in node.inputs):
            # fixed point: pooling/mean/upsampling (weights k * 2**-s) and the Scale(2**s) after it
            # are one synapse with integer weights (the two matrices composed)
            x = c.device(vals[node.inputs[0]], node.inputs[0])
            pending[dyadic[node.name]] = (x, linear_map(node.op, x.shape, c.shapes[node.name])[0])
            continue
        if node.name in pending:
            x, m = pending.pop(node.name)
            scale = linear_map(node.op, c.shapes[node.inputs[0]], c.shapes[node.name])[0]
            vals[node.name] = c.apply_linear(node, x, sp.csr_matrix(scale @ m), None, c.shapes[node.name])
            continue
        ins = [vals[i] for i in node.inputs]
        if all(v.host for v in ins) and not node.op.is_neuron:
            from spikedeploy.reference import RULES as HOST_RULES

            if type(node.op) not in HOST_RULES:
                raise unsupported(TARGET, node, "a host op needs a reference rule, and this op has none")
            c.host_nodes.append(node)
            vals[node.name] = Val(c.shapes[node.name], True)
            continue
        rule = RULES.get(type(node.op))
        if rule is None:
            raise unsupported(TARGET, node, "no Lava rule for this op")
        vals[node.name] = rule(c, node, ins)
    for o in graph.outputs:
        v = vals[o]
        if v.host:
            c.host_values.add(o)
            c.outputs.append({"name": out_names[o], "kind": "host", "value": o, "shape": list(v.shape)})
            continue
        c.node = Node(o, O.Scale(1.0), (o,))
        offs = v.offsets()
        offset = np.zeros((1, v.size)) if offs is None else offs.reshape(offs.shape[0], v.size)
        name = c.add_proc("readout", o, size=v.size, offset=c.array(offset.astype(np.float64)),
                          steps=c.vsteps.get(o))
        start, length = c.connect_streams([c.streams_of(v, o)], [(name, "a_in")])
        c.proc_index[name].update(start=start, length=length)
        c.outputs.append({"name": out_names[o], "kind": "readout", "value": o, "proc": name, "shape": list(v.shape),
                          "final_step": start + length - 1, "steps": c.vsteps.get(o)})
    # last Lava step of macro-step 0 (every later macro-step ends `period` steps later)
    ends = [1]
    for p in c.procs:
        if p["type"] == "neuron":
            ends.append(p["out_start"] + p["window"] - 1)
        elif p["type"] == "readout":
            ends.append(p["start"] + p["length"] - 1)
        elif p["type"] == "attention":
            ends.append(p["q_start"] + p["q_len"] - 1)
        elif p["type"] == "memory_write":
            ends.append(p["kv_start"] + p["kv_len"] - 1)
        elif p["type"] in ("host_softmax", "template_gate", "memory_read", "st_attention"):
            ends.append(p["fire"])
    procs, connections = c.procs, c.connections
    fusion = None
    if fuse:
        procs, connections, fusion = fuse_processes(procs, connections)
    host_nodes = []
    for n in c.host_nodes:
        host_nodes.append({"name": n.name, "inputs": list(n.inputs), "source": n.source,
                           "op": op_to_json(n.op, c.array)})
    counts: Dict[str, int] = {}
    for p in procs:
        counts[p["type"]] = counts.get(p["type"], 0) + 1
    desc = {
        "format": FORMAT,
        "version": VERSION,
        "target": TARGET,
        "encoding": encoding,
        "period": c.period,
        "slots": c.slots,
        "end_step": max(ends),
        "inputs": [{"name": s.name, "shape": list(s.shape)} | ({} if s.steps is None else {"steps": int(s.steps)})
                   for s in graph.inputs],
        "host": {
            "nodes": host_nodes,
            "values": sorted(c.host_values),
            "note": "ops that depend on no neuron (e.g. the first layer on real-valued pixels) run "
                    "on the host (reference executor, float64) and are injected by RingBuffer sources",
        },
        "processes": procs,
        "connections": connections,
        "fusion": fusion,
        "neurons": c.neurons,
        "outputs": c.outputs,
        "process_counts": counts,
        "unroll_limit": c.unroll_limit,
        "timing": {
            "substep": "one Lava time step is one spike sub-step",
            "stream": "macro-step m of a stream occupies Lava steps start + m*period ... + length - 1",
            "neuron_final": "a neuron's q of macro-step m is final at Lava step final_step + m*period",
            "batch": "sample b occupies macro-steps b*T ... b*T + T - 1; neuron state resets per sample",
        },
        "graph_meta": {k: v for k, v in graph.meta if isinstance(v, (str, int, float, bool, type(None)))},
        # "fixed": a fixed-point graph (QuantizeFixedPoint): every device array is an integer and
        # the bundle runs with select_tag fixed_pt; the plan itself travels in the IR's metadata
        "precision": "fixed" if fixed is not None else "float",
    }
    if fixed is not None:
        desc["fixed_point"] = {"weight_bits": int(fixed["weight_bits"]), "state_bits": int(fixed["state_bits"]),
                               "outputs": {out_names[o]: int(e) for o, e in fixed["outputs"].items()}}
        _check_integer_arrays(procs, {**c.arrays})
    from spikedeploy.exporters.lava_placement import plan

    desc["placement"] = plan(desc, partitions).to_json()
    # the lowered IR graph travels with the bundle (audits and reports need it; the runtime does not)
    ir_desc, ir_arrays = graph_to_json(graph, prefix="ir/")
    desc["ir"] = ir_desc
    return desc, {**c.arrays, **ir_arrays}


def export(graph: Graph, path, *, encoding: str, overwrite: bool = False, unroll_limit: Optional[int] = None,
           partitions="auto") -> Path:
    """Compile ``graph`` for Lava and write the bundle directory ``path`` (``graph.json`` +
    ``arrays.npz``, :func:`spikedeploy.exporters.lava_bundle.save`) atomically. Raises
    ``UnsupportedOpError`` for an op Lava cannot express. ``unroll_limit``, ``partitions``: see
    :func:`compile_graph`."""
    from spikedeploy.exporters.lava_placement import parse_partitions

    partitions = parse_partitions(partitions)  # a bad value is refused before the compilation
    path = check_destination(path, overwrite=overwrite)  # so is an output path that cannot be written
    desc, arrays = compile_graph(graph, encoding, unroll_limit=unroll_limit, partitions=partitions)
    return save(path, desc, arrays, overwrite=overwrite)
