"""Validation of a Lava bundle's description and arrays, before any Lava process starts.

:func:`spikedeploy.exporters.lava.load` calls :func:`validate_bundle` on every bundle it reads:
an error inside a Lava child process is not reported to the parent (the run hangs), so everything
the runtime (:mod:`spikedeploy.runtimes.lava`) and the project's processes
(:mod:`spikedeploy.runtimes.lava_procs`) read from the description is checked here first:

* the top level: encoding, ``period``, ``slots``, ``end_step`` (within :data:`MAX_LAVA_STEPS`
  and equal to the last step of macro-step 0 that the processes' own timing gives), inputs, host
  part (rebuilt and validated as an IR graph), neuron table and outputs;
* every process: a known ``type`` and, per type, the fields it uses with their types and ranges
  (sizes, shapes, timing windows, neuron kind and parameters — ``rounding`` included —, encoding,
  heads dividing channels, ...), and at most :data:`MAX_LAVA_PROCESSES` processes (Lava starts an
  OS process per process);
* every array it names: present, of a real dtype, the right shape and finite; sparse matrices as
  consistent CSR (``indptr`` non-decreasing from 0 to ``nnz``, column indices in range);
  convolution kernels that fit their input and output shapes;
* fused inputs (taps) and connections: tap ports named ``t<k>``, sources that exist and send on
  the port named with the size the tap expects, synapses whose sizes chain; every connection
  between existing ports of equal size, every tap port connected exactly once;
* the IR graph the bundle carries (``ir``), as :func:`spikedeploy.validate.check_graph`;
* the precision (``precision``: ``"float"``, the default of bundles without the field, or
  ``"fixed"``): a fixed bundle has fixed-point neurons only (float neuron kinds only in a float
  one), its IR graph carries the quantization plan, and every array a process computes with
  (:func:`fixed_array_fields`) holds exact integers.

Every failure is one :class:`~spikedeploy.errors.ArtifactError` line naming the bundle, the
process and the field.
"""

from __future__ import annotations

import math
import re
from typing import Dict, Optional, Tuple

import numpy as np

from spikedeploy.errors import ArtifactError, SpikedeployError
from spikedeploy.ir import ops as O
from spikedeploy.validate import (MAX_ARRAY_ELEMENTS, MAX_DIM_SIZE, MAX_TIMESTEPS, MAX_VALUE_ELEMENTS, FieldChecker,
                                  check_array, check_graph, describe, detail)

__all__ = ["validate_bundle", "read_arrays", "MAX_LAVA_PROCESSES", "MAX_LAVA_STEPS", "MAX_LAVA_PERIOD", "MAX_FIRING_LIMIT",
           "PROCESS_TYPES", "NEURON_KINDS", "FIXED_NEURON_KINDS", "PRECISIONS", "fixed_array_fields", "precision_of"]

#: processes of one bundle (Lava's CPU simulator forks one OS process per process)
MAX_LAVA_PROCESSES = 4096
#: Lava steps of macro-step 0 (``end_step``); the run takes ``end_step + (B*T - 1) * period``
MAX_LAVA_STEPS = 1_000_000
#: sub-steps per macro-step
MAX_LAVA_PERIOD = 65_536
#: firing limit D of an integer neuron (a binary window has D sub-steps)
MAX_FIRING_LIMIT = 65_536
#: bits of a graded message (Lava's Sparse); Loihi 2 carries up to 24
MAX_MESSAGE_BITS = 32
#: connections of one bundle
MAX_LAVA_CONNECTIONS = 1_000_000

#: process type -> (input ports, output ports); a port's size is given by :func:`_port_sizes`
PROCESS_TYPES: Dict[str, Tuple[Tuple[str, ...], Tuple[str, ...]]] = {
    "sparse": (("s_in",), ("a_out",)),
    "conv": (("s_in",), ("a_out",)),
    "matmul": (("s_in",), ("a_out",)),
    "source": ((), ("s_out",)),
    "neuron": (("a_in",), ("s_out",)),
    "delay": (("a_in",), ("a_out",)),
    "junction": (("a_in",), ("a_out",)),
    "attention": (("q_in", "k_in", "v_in"), ("a_out",)),
    "st_attention": (("q_in", "k_in", "v_in"), ("a_out",)),
    "memory_write": (("k_in", "v_in"), ("a_out",)),
    "readout": (("a_in",), ()),
    "step_gate": (("a_in",), ("a_out",)),
    "host_softmax": (("a_in",), ("a_out",)),
    "template_gate": (("x_in", "w_in"), ("a_out",)),
    "memory_read": (("q_in",), ("a_out",)),
}
#: process types whose input ports can hold fused taps (``inputs``)
TAP_TYPES = ("neuron", "readout", "attention", "st_attention", "memory_write", "junction", "host_softmax", "template_gate",
             "memory_read")
#: process types that may send only inside a window (``send``)
SEND_TYPES = ("neuron", "attention", "st_attention", "memory_write", "junction", "source", "host_softmax", "template_gate",
              "memory_read")
#: neuron kinds of :func:`spikedeploy.runtimes.lava_kernels.neuron_step` and (``fixed_*``, a fixed
#: bundle's) :func:`~spikedeploy.runtimes.lava_kernels.fixed_neuron_step`
FIXED_NEURON_KINDS = ("fixed_integer_lif", "fixed_binary_lif", "fixed_dynamic_integer_lif")
NEURON_KINDS = ("integer_lif", "dynamic_integer_lif", "binary_lif") + FIXED_NEURON_KINDS
#: ``precision`` of a bundle (absent: "float", every bundle before issue 14)
PRECISIONS = ("float", "fixed")
#: process record fields naming an array a process computes with (integers in a fixed bundle)
_COMPUTE_ARRAYS = ("data", "weight", "bias", "offset", "memory")
#: the largest state width of a fixed neuron (int64 arithmetic with 12-bit leak products)
MAX_STATE_BITS = 48


def precision_of(desc: dict) -> str:
    """A bundle's precision: its ``precision`` field, "float" without one (older bundles)."""
    return desc.get("precision", "float")


def fixed_array_fields(procs):
    """``(process, node, field, array key)`` of every array a process (and every synapse fused
    into its inputs) computes with: Sparse data, kernels, biases, offsets, memories."""
    for p in procs:
        node = p.get("node", p.get("name"))
        for f in _COMPUTE_ARRAYS:
            if isinstance(p.get(f), str):
                yield p["name"], node, f, p[f]
        for lp, taps in (p.get("inputs") or {}).items():
            for j, t in enumerate(taps):
                syn = t.get("syn") if isinstance(t, dict) else None
                if isinstance(syn, dict):
                    for f in _COMPUTE_ARRAYS:
                        if isinstance(syn.get(f), str):
                            yield p["name"], syn.get("node", node), f"inputs.{lp}[{j}].syn.{f}", syn[f]
ROUNDINGS = ("half_even", "half_up")
SYNAPSE_KINDS = ("sparse", "conv", "matmul")
_TAP_PORT = re.compile(r"^t[0-9]{1,7}$")

_REEXPORT = "export the bundle again with spikedeploy export --target lava"


class _Bundle:
    """The checks of one bundle (``where``: "Lava bundle <path>")."""

    def __init__(self, desc: dict, arrays: Dict[str, np.ndarray], where: str):
        self.d, self.arrays, self.where = desc, arrays, where
        self.top = FieldChecker(f"{where}: graph.json", _REEXPORT)
        self.checked_arrays: set = set()
        self.sizes: Dict[str, Dict[str, int]] = {}  #: process name -> port -> size

    # -- helpers -------------------------------------------------------------------------------
    def proc_checker(self, i: int, p) -> FieldChecker:
        name = p.get("name") if isinstance(p, dict) else None
        label = f"processes[{i}]" + (f" ({name!r})" if isinstance(name, str) else "")
        return FieldChecker(f"{self.where}: {label}", _REEXPORT)

    def array(self, c: FieldChecker, key, field: str, *, kinds: str = "f", ndim: Optional[int] = None,
              shape=None) -> np.ndarray:
        c.str(key, field)
        if key not in self.arrays:
            c.fail(field, f"array {key!r} is missing from arrays.npz")
        a = check_array(self.arrays[key], c.where, f"{field} (array {key!r})", kinds=kinds, ndim=ndim, shape=shape,
                        todo=_REEXPORT)
        self.checked_arrays.add(key)
        return a

    def rows_of(self, c: FieldChecker, key, field: str, size: int) -> None:
        """An array read as ``reshape(-1, size)``: a multiple of ``size`` elements, at least one row."""
        a = self.array(c, key, field)
        if a.size == 0 or a.size % size:
            c.fail(field, f"array {key!r} has {a.size} elements; expected a multiple of the size {size} "
                          f"(one or more rows of {size})")

    # -- top level -----------------------------------------------------------------------------
    def check(self) -> None:
        t, d = self.top, self.d
        self.encoding = t.str(d["encoding"], "encoding", O.ENCODINGS)
        self.period = t.int(d["period"], "period", 1, MAX_LAVA_PERIOD)
        self.slots = t.opt_int(d.get("slots"), "slots", 1, MAX_TIMESTEPS)
        self.end_step = t.int(d["end_step"], "end_step", 1, MAX_LAVA_STEPS)
        inputs = t.list(d["inputs"], "inputs", min_len=1, max_len=64)
        self.input_shapes = {}
        self.input_steps = {}
        for i, s in enumerate(inputs):
            t.dict(s, f"inputs[{i}]")
            name = t.str(t.key(s, "name", f"inputs[{i}]"), f"inputs[{i}].name")
            if name in self.input_shapes:
                t.fail(f"inputs[{i}].name", f"duplicate input {name!r}")
            self.input_shapes[name] = t.shape(t.key(s, "shape", f"inputs[{i}]"), f"inputs[{i}].shape")
            self.input_steps[name] = t.opt_int(s.get("steps"), f"inputs[{i}].steps", 1, MAX_TIMESTEPS)
        self.check_host()
        procs = t.list(d["processes"], "processes", min_len=1, max_len=MAX_LAVA_PROCESSES)
        self.procs: Dict[str, dict] = {}
        for i, p in enumerate(procs):
            c = self.proc_checker(i, p)
            c.dict(p, None)
            name = c.str(c.key(p, "name", ""), "name")
            if name in self.procs:
                c.fail("name", f"duplicate process name {name!r}")
            kind = c.str(c.key(p, "type", ""), "type", tuple(PROCESS_TYPES))
            self.procs[name] = p
            self.sizes[name] = self.check_process(c, kind, p)
        self.check_taps(procs)
        self.check_connections()
        if d.get("placement") is not None:
            self.check_placement()
        self.check_tables()
        self.check_end_step(procs)
        if "ir" in d:
            self.check_ir()
        self.check_precision(procs)
        for key, a in self.arrays.items():  # arrays no field names (e.g. of an older writer)
            if key not in self.checked_arrays and not key.startswith("ir/"):
                check_array(a, f"{self.where}: arrays.npz", f"array {key!r}", kinds="fiu", todo=_REEXPORT)

    def check_host(self) -> None:
        from spikedeploy.ir.graph import Graph, Node, TensorSpec
        from spikedeploy.ir.serialize import op_from_json

        t = self.top
        host = t.dict(self.d["host"], "host")
        t.list(t.key(host, "nodes", "host"), "host.nodes", max_len=100_000)
        values = t.list(t.key(host, "values", "host"), "host.values", max_len=100_000)
        for i, v in enumerate(values):
            t.str(v, f"host.values[{i}]")
        for i, n in enumerate(host["nodes"]):
            w = f"host.nodes[{i}]"
            t.dict(n, w)
            t.str(t.key(n, "name", w), f"{w}.name")
            for j, v in enumerate(t.list(t.key(n, "inputs", w), f"{w}.inputs")):
                t.str(v, f"{w}.inputs[{j}]")
            op = t.dict(t.key(n, "op", w), f"{w}.op")
            t.str(t.key(op, "kind", f"{w}.op"), f"{w}.op.kind")
            t.dict(t.key(op, "fields", f"{w}.op"), f"{w}.op.fields")
            for k, v in op["fields"].items():
                if isinstance(v, dict) and "array" in v:
                    self.array(t, v["array"], f"{w}.op.fields.{k}", kinds="fiu")
        try:  # as LavaBundle.host_graph builds it
            nodes = tuple(Node(n["name"], op_from_json(n["op"], self.arrays, "host part"), tuple(n["inputs"]),
                               n.get("source", "") if isinstance(n.get("source", ""), str) else "")
                          for n in host["nodes"])
            specs = tuple(TensorSpec(k, v, steps=self.input_steps[k]) for k, v in self.input_shapes.items())
            graph = Graph(inputs=specs, nodes=nodes, outputs=tuple(values) or (specs[0].name,))
        except SpikedeployError as e:
            t.fail("host", str(e))
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            t.fail("host", f"malformed host part ({detail(e)})")
        self.host_shapes = check_graph(graph, f"{self.where}: graph.json host part", _REEXPORT)
        self.host_values = set(values)

    def check_precision(self, procs) -> None:
        """A fixed bundle: fixed neurons only, the plan in the IR (and a summary), integer arrays."""
        t = self.top
        precision = t.str(precision_of(self.d), "precision", PRECISIONS)
        for p in procs:
            if p["type"] != "neuron":
                continue
            fixed_kind = p["neuron"]["kind"] in FIXED_NEURON_KINDS
            if fixed_kind != (precision == "fixed"):
                self.proc_checker(procs.index(p), p).fail(
                    "neuron.kind", f"{p['neuron']['kind']!r} in a {precision!r} bundle (fixed-point neurons "
                                   "belong to fixed bundles, float ones to float bundles)")
        if precision != "fixed":
            if "fixed_point" in self.d:
                t.fail("fixed_point", "a float bundle carries no fixed-point plan")
            return
        fp = t.dict(t.key(self.d, "fixed_point", ""), "fixed_point")
        t.int(t.key(fp, "weight_bits", "fixed_point"), "fixed_point.weight_bits", 2, 16)
        t.int(t.key(fp, "state_bits", "fixed_point"), "fixed_point.state_bits", 2, MAX_STATE_BITS)
        outs = t.dict(t.key(fp, "outputs", "fixed_point"), "fixed_point.outputs")
        for k, v in outs.items():
            t.int(v, f"fixed_point.outputs[{k!r}]", -1024, 1024)
        if "ir" in self.d and not any(k == "fixed_point" for k, _ in self.d["ir"].get("meta", [])):
            t.fail("ir", "a fixed bundle's IR graph lacks its quantization plan (graph metadata fixed_point)")
        for proc, _, field, key in fixed_array_fields(procs):
            a = self.arrays.get(key)
            if a is None:
                continue  # named but missing: reported by the process checks
            if a.dtype.kind == "f" and a.size and not bool(np.all(a == np.round(a))):
                FieldChecker(f"{self.where}: process {proc!r}", _REEXPORT).fail(
                    field, f"array {key!r} holds values that are not integers in a fixed bundle")

    def check_ir(self) -> None:
        from spikedeploy.ir.serialize import graph_from_json

        t = self.top
        ir = t.dict(self.d["ir"], "ir")
        for k in ("inputs", "nodes", "outputs"):
            t.list(t.key(ir, k, "ir"), f"ir.{k}")
        for i, n in enumerate(ir["nodes"]):
            t.dict(n, f"ir.nodes[{i}]")
            op = n.get("op")
            if isinstance(op, dict) and isinstance(op.get("fields"), dict):
                for k, v in op["fields"].items():
                    if isinstance(v, dict) and "array" in v:
                        self.array(t, v["array"], f"ir.nodes[{i}].op.fields.{k}", kinds="fiu")
        try:
            graph = graph_from_json(ir, self.arrays, f"{self.where}: graph.json ir")
        except SpikedeployError as e:  # GraphValidationError included: a user's file
            t.fail("ir", str(e))
        except Exception as e:  # malformed fields the rebuild does not foresee
            t.fail("ir", f"malformed IR graph ({detail(e)})")
        check_graph(graph, f"{self.where}: graph.json ir", _REEXPORT)

    # -- processes -----------------------------------------------------------------------------
    def timing(self, c: FieldChecker, p: dict, start: str, length: Optional[str] = None) -> None:
        c.int(c.key(p, start, ""), start, 1, self.end_step)
        if length is not None:
            c.int(c.key(p, length, ""), length, 1, self.period)

    def size(self, c: FieldChecker, p: dict, field: str = "size") -> int:
        return c.int(c.key(p, field, ""), field, 1, MAX_VALUE_ELEMENTS)

    def check_process(self, c: FieldChecker, kind: str, p: dict) -> Dict[str, int]:
        """Type-specific fields; returns the size of every port."""
        steps = c.opt_int(p.get("steps"), "steps", 1, self.slots or MAX_TIMESTEPS)
        if kind == "sparse":
            ins, outs = self.check_sparse(c, p)
            sizes = {"s_in": ins, "a_out": outs}
        elif kind == "conv":
            ins, outs = self.check_conv(c, p)
            sizes = {"s_in": ins, "a_out": outs}
        elif kind == "matmul":
            ins, outs = self.check_matmul(c, p)
            sizes = {"s_in": ins, "a_out": outs}
        elif kind == "source":
            n = self.size(c, p)
            self.timing(c, p, "start")
            value = c.str(c.key(p, "value", ""), "value")
            if value not in self.host_values:
                c.fail("value", f"{value!r} is not a host value (host.values)")
            shape = self.host_shapes.get(value)
            if shape is not None and math.prod(shape) != n:
                c.fail("size", f"{n} does not match host value {value!r} of shape {list(shape)}")
            sizes = {"s_out": n}
        elif kind == "neuron":
            n = self.size(c, p)
            shape = c.shape(c.key(p, "shape", ""), "shape")
            if math.prod(shape) != n:
                c.fail("shape", f"{list(shape)} does not hold size {n} neurons")
            c.str(c.key(p, "node", ""), "node")
            enc = c.str(c.key(p, "encoding", ""), "encoding", (self.encoding,))
            self.check_neuron(c, c.dict(c.key(p, "neuron", ""), "neuron"))
            window = c.int(c.key(p, "window", ""), "window", 1, self.period)
            if enc == "graded" and window != 1:
                c.fail("window", f"a graded neuron sends one event per macro-step (window 1), got {window}")
            self.timing(c, p, "in_start", "in_len")
            self.timing(c, p, "out_start")
            self.rows_of(c, c.key(p, "bias", ""), "bias", n)
            sizes = {"a_in": n, "s_out": n}
        elif kind == "delay":
            n = self.size(c, p)
            c.int(c.key(p, "delay", ""), "delay", 1, self.end_step)
            sizes = {"a_in": n, "a_out": n}
        elif kind == "junction":
            n = self.size(c, p)
            self.timing(c, p, "in_start", "in_len")
            sizes = {"a_in": n, "a_out": n}
        elif kind in ("attention", "st_attention", "memory_write", "memory_read"):
            C = c.int(c.key(p, "channels", ""), "channels", 1, MAX_DIM_SIZE)
            Cv = c.int(c.key(p, "v_channels", ""), "v_channels", 1, MAX_DIM_SIZE)
            N = c.int(c.key(p, "tokens", ""), "tokens", 1, MAX_DIM_SIZE)
            H = c.int(c.key(p, "heads", ""), "heads", 1, MAX_DIM_SIZE)
            if C % H or Cv % H:
                c.fail("heads", f"{H} heads do not divide channels {C} and v_channels {Cv}")
            if max(C, Cv) * N > MAX_VALUE_ELEMENTS or (C // H) * (Cv // H) * H > MAX_VALUE_ELEMENTS:
                c.fail("channels", f"{C} x {Cv} channels of {N} tokens exceed the limit {MAX_VALUE_ELEMENTS}")
            c.number(c.key(p, "scale", ""), "scale")
            if kind == "memory_read":
                sizes = self.check_memory_read(c, p, C, Cv, N, H, steps)
            elif kind == "st_attention":
                sizes = self.check_st_attention(c, p, C, Cv, N, H)
            elif kind == "attention":
                self.timing(c, p, "kv_start", "kv_len")
                self.timing(c, p, "q_start", "q_len")
                sizes = {"q_in": C * N, "k_in": C * N, "v_in": Cv * N, "a_out": Cv * N}
            else:
                self.timing(c, p, "kv_start", "kv_len")
                sizes = {"k_in": C * N, "v_in": Cv * N, "a_out": C * Cv // H}
        elif kind == "readout":
            n = self.size(c, p)
            self.timing(c, p, "start", "length")
            self.rows_of(c, c.key(p, "offset", ""), "offset", n)
            sizes = {"a_in": n}
        elif kind == "step_gate":
            n = self.size(c, p)
            self.timing(c, p, "start")
            for j, a in enumerate(c.list(c.key(p, "accept", ""), "accept", max_len=MAX_TIMESTEPS)):
                c.int(a, f"accept[{j}]", 0, MAX_TIMESTEPS)
            sizes = {"a_in": n, "a_out": n}
        elif kind == "host_softmax":
            n = self.size(c, p)
            if steps is None:
                c.fail("steps", "a host softmax needs its number of macro-steps")
            self.timing(c, p, "in_start", "in_len")
            self.timing(c, p, "fire")
            a = self.array(c, c.key(p, "offset", ""), "offset", ndim=2)
            if a.shape[1] != n or a.shape[0] < 1:
                c.fail("offset", f"expected [rows, {n}], got {list(a.shape)}")
            sizes = {"a_in": n, "a_out": steps * n}
        else:  # template_gate
            n = self.size(c, p)
            C = c.int(c.key(p, "channels", ""), "channels", 1, MAX_DIM_SIZE)
            if n % C:
                c.fail("channels", f"{C} channels do not divide size {n}")
            if steps is None:
                c.fail("steps", "a template gate needs its number of macro-steps")
            c.number(c.key(p, "scale", ""), "scale")
            c.str(c.key(p, "encoding", ""), "encoding", (self.encoding,))
            self.timing(c, p, "in_start", "in_len")
            self.timing(c, p, "w_start")
            self.timing(c, p, "fire")
            sizes = {"x_in": n, "w_in": steps * C, "a_out": n}
        send = p.get("send")
        if send is not None:
            if kind not in SEND_TYPES:
                c.fail("send", f"a {kind} process cannot send in windows")
            c.dict(send, "send")
            for port, w in send.items():
                if port not in PROCESS_TYPES[kind][1]:
                    c.fail("send", f"{port!r} is not an output port of a {kind} process")
                self.window(c, w, f"send[{port!r}]")
        return sizes

    def check_memory_read(self, c: FieldChecker, p: dict, C: int, Cv: int, N: int, H: int,
                          steps: Optional[int]) -> Dict[str, int]:
        """A ``MemoryReadSynapse``: its memory ``[T_mem, H, C/H, Cv/H]`` (``T_mem`` 1, or the
        process's macro-steps in a graph with slots) and its timing (it sends one step after its
        q window)."""
        tm = c.int(c.key(p, "mem_steps", ""), "mem_steps", 1, MAX_TIMESTEPS)
        self.array(c, c.key(p, "memory", ""), "memory", ndim=4, shape=(tm, H, C // H, Cv // H))
        if tm > 1 and (self.slots is None or steps != tm):
            c.fail("mem_steps", f"a memory of {tm} steps needs a process of as many macro-steps per sample "
                                f"(steps {steps}, slots {self.slots})")
        self.timing(c, p, "q_start", "q_len")
        self.timing(c, p, "fire")
        if p["fire"] != p["q_start"] + p["q_len"]:
            c.fail("fire", f"is {p['fire']}, but a memory read sends one step after its q window "
                           f"(q_start + q_len = {p['q_start'] + p['q_len']})")
        return {"q_in": C * N, "a_out": Cv * N}

    def check_st_attention(self, c: FieldChecker, p: dict, C: int, Cv: int, N: int, H: int) -> Dict[str, int]:
        """A ``SpaceTimeAttention``: a grouping per head (``factorized``: spatial heads, then temporal
        ones), the score, and its timing: q read after the k/v window of the group's last step
        (``q_start >= kv_start + (T - 1) * period + kv_len`` with step-mixing groups, ``T`` the
        ``timesteps`` it was compiled for; spatial only: ``T = 1``), the result sent in the q
        window's last step (``fire``)."""
        groupings = c.list(c.key(p, "groupings", ""), "groupings", min_len=H, max_len=H)
        for j, g in enumerate(groupings):
            c.str(g, f"groupings[{j}]", tuple(t for t in O.TOKEN_GROUPINGS if t != "factorized"))
        c.str(c.key(p, "score", ""), "score", ("hamming", "dot"))
        mixes = any(g != "spatial" for g in groupings)
        T = c.opt_int(p.get("timesteps"), "timesteps", 1, MAX_TIMESTEPS)
        if mixes and T is None:
            c.fail("timesteps", "a step-mixing grouping needs the number of frames it was compiled for")
        self.timing(c, p, "kv_start", "kv_len")
        self.timing(c, p, "q_start", "q_len")
        self.timing(c, p, "fire")
        first = p["kv_start"] + ((T - 1) * self.period if mixes else 0) + p["kv_len"]
        if p["q_start"] < first:
            c.fail("q_start", f"is {p['q_start']}, before the k/v of its groups are complete (step {first})")
        if p["fire"] != p["q_start"] + p["q_len"] - 1:
            c.fail("fire", f"is {p['fire']}, but the attention sends in the last step of its q window "
                           f"({p['q_start'] + p['q_len'] - 1})")
        return {"q_in": C * N, "k_in": C * N, "v_in": Cv * N, "a_out": Cv * N}

    def window(self, c: FieldChecker, w, field: str) -> None:
        """A sender's window ``[start, length]`` or ``[start, length, steps]``."""
        w = c.list(w, field, min_len=2, max_len=3)
        c.int(w[0], f"{field}[0]", 1, self.end_step)
        c.int(w[1], f"{field}[1]", 1, self.period)
        if len(w) > 2:
            c.opt_int(w[2], f"{field}[2]", 1, self.slots or MAX_TIMESTEPS)

    def check_neuron(self, c: FieldChecker, nr: dict) -> None:
        kind = c.str(c.key(nr, "kind", "neuron"), "neuron.kind", NEURON_KINDS)
        if kind in FIXED_NEURON_KINDS:
            self.check_fixed_neuron(c, nr, kind)
            return
        if kind == "binary_lif":
            c.number(c.key(nr, "beta", "neuron"), "neuron.beta")
            c.number(c.key(nr, "threshold", "neuron"), "neuron.threshold", positive=True)
            return
        c.str(c.key(nr, "rounding", "neuron"), "neuron.rounding", ROUNDINGS)
        leak = c.key(nr, "leak", "neuron")
        if isinstance(leak, list) and kind == "integer_lif":
            c.list(leak, "neuron.leak", min_len=1, max_len=MAX_TIMESTEPS)
            for j, v in enumerate(leak):
                c.number(v, f"neuron.leak[{j}]")
        elif leak is not None:
            c.number(leak, "neuron.leak")
        if kind == "integer_lif":
            c.int(c.key(nr, "d", "neuron"), "neuron.d", 1, MAX_FIRING_LIMIT)
            c.number(c.key(nr, "reset_norm", "neuron"), "neuron.reset_norm", positive=True)
        else:
            c.int(c.key(nr, "d_init", "neuron"), "neuron.d_init", 1, MAX_FIRING_LIMIT // 2)
            c.number(c.key(nr, "gate_w", "neuron"), "neuron.gate_w")
            c.number(c.key(nr, "gate_b", "neuron"), "neuron.gate_b")

    def check_fixed_neuron(self, c: FieldChecker, nr: dict, kind: str) -> None:
        """The integer constants of a fixed-point neuron (:class:`spikedeploy.ir.ops.FixedIntegerLIF`,
        :class:`~spikedeploy.ir.ops.FixedDynamicIntegerLIF`, :class:`~spikedeploy.ir.ops.FixedBinaryLIF`)."""
        bits = c.int(c.key(nr, "state_bits", "neuron"), "neuron.state_bits", 2, MAX_STATE_BITS)
        leak_max = 1 << O.LEAK_BITS
        if kind == "fixed_binary_lif":
            c.int(c.key(nr, "beta", "neuron"), "neuron.beta", 0, leak_max)
            c.int(c.key(nr, "threshold", "neuron"), "neuron.threshold", 1, (1 << (bits - 1)) - 1)
            return
        c.str(c.key(nr, "rounding", "neuron"), "neuron.rounding", ROUNDINGS)
        if kind == "fixed_dynamic_integer_lif":  # D_max = 2 d_init; the gate as integer thresholds
            d = 2 * c.int(c.key(nr, "d_init", "neuron"), "neuron.d_init", 1, MAX_FIRING_LIMIT // 2)
            c.int(c.key(nr, "sign", "neuron"), "neuron.sign", -1, 1)
            th = c.list(c.key(nr, "thresholds", "neuron"), "neuron.thresholds", min_len=d - 1, max_len=d - 1)
            for j, v in enumerate(th):
                c.int(v, f"neuron.thresholds[{j}]", -O.THRESHOLD_LIMIT, O.THRESHOLD_LIMIT)
            if any(a > b for a, b in zip(th, th[1:])):
                c.fail("neuron.thresholds", "must be non-decreasing")
        else:
            d = c.int(c.key(nr, "d", "neuron"), "neuron.d", 1, MAX_FIRING_LIMIT)
        unit = c.int(c.key(nr, "unit", "neuron"), "neuron.unit", 2, 1 << (bits - 1))
        if unit & (unit - 1):
            c.fail("neuron.unit", f"must be a power of two, got {unit}")
        if (d + 1) * unit >= 1 << (bits - 1):
            c.fail("neuron.d", f"D={d} in units of {unit} does not fit a {bits}-bit state")
        c.int(c.key(nr, "reset", "neuron"), "neuron.reset", 0, (1 << (bits - 1)) - 1)
        leak = c.key(nr, "leak", "neuron")
        if isinstance(leak, list):
            c.list(leak, "neuron.leak", min_len=1, max_len=MAX_TIMESTEPS)
            for j, v in enumerate(leak):
                c.int(v, f"neuron.leak[{j}]", 0, leak_max)
        elif leak is not None:
            c.int(leak, "neuron.leak", 0, leak_max)

    def check_sparse(self, c: FieldChecker, p: dict, field: str = "") -> Tuple[int, int]:
        """A CSR matrix ``data``/``indices``/``indptr`` of ``shape`` [rows, cols]; returns (cols, rows)."""
        f = (lambda k: f"{field}.{k}") if field else (lambda k: k)
        rows, cols = (c.int(v, f(f"shape[{j}]"), 1, MAX_VALUE_ELEMENTS) for j, v in
                      enumerate(c.list(c.key(p, "shape", field), f("shape"), min_len=2, max_len=2)))
        c.int(c.key(p, "num_message_bits", field), f("num_message_bits"), 0, MAX_MESSAGE_BITS)
        data = self.array(c, c.key(p, "data", field), f("data"), ndim=1)
        indices = self.array(c, c.key(p, "indices", field), f("indices"), kinds="iu", ndim=1)
        indptr = self.array(c, c.key(p, "indptr", field), f("indptr"), kinds="iu", ndim=1)
        if indices.size != data.size:
            c.fail(f("indices"), f"{indices.size} column indices for {data.size} values (a broken CSR matrix)")
        if indptr.size != rows + 1:
            c.fail(f("indptr"), f"{indptr.size} entries for {rows} rows, expected {rows + 1} (a broken CSR matrix)")
        ip = indptr.astype(np.int64)
        if ip[0] != 0 or ip[-1] != data.size or np.any(np.diff(ip) < 0):
            c.fail(f("indptr"), f"must rise from 0 to nnz {data.size} without decreasing (a broken CSR matrix)")
        if indices.size and (int(indices.min()) < 0 or int(indices.max()) >= cols):
            c.fail(f("indices"), f"column indices must lie in [0, {cols}) (a broken CSR matrix)")
        if "nnz" in p and c.int(p["nnz"], f("nnz"), 0) != data.size:
            c.fail(f("nnz"), f"says {p['nnz']} but the matrix has {data.size} values")
        return cols, rows

    def check_conv(self, c: FieldChecker, p: dict, field: str = "") -> Tuple[int, int]:
        f = (lambda k: f"{field}.{k}") if field else (lambda k: k)
        w = self.array(c, c.key(p, "weight", field), f("weight"), ndim=4)
        in_shape = c.shape(c.key(p, "in_shape", field), f("in_shape"), min_dims=3, max_dims=3)
        out_shape = c.shape(c.key(p, "out_shape", field), f("out_shape"), min_dims=3, max_dims=3)
        args = []
        for k, lo in (("stride", 1), ("padding", 0), ("dilation", 1)):
            v = c.list(c.key(p, k, field), f(k), min_len=2, max_len=2)
            args.append(tuple(c.int(x, f(f"{k}[{j}]"), lo, MAX_DIM_SIZE) for j, x in enumerate(v)))
        groups = c.int(c.key(p, "groups", field), f("groups"), 1, MAX_DIM_SIZE)
        if w.shape[0] % groups or w.shape[1] * groups != in_shape[0]:
            c.fail(f("weight"), f"kernel {list(w.shape)} with {groups} groups does not fit the input {list(in_shape)}")
        (sh, sw), (ph, pw), (dh, dw) = args
        got = (w.shape[0], (in_shape[1] + 2 * ph - dh * (w.shape[2] - 1) - 1) // sh + 1,
               (in_shape[2] + 2 * pw - dw * (w.shape[3] - 1) - 1) // sw + 1)
        if tuple(got) != tuple(out_shape):
            c.fail(f("out_shape"), f"{list(out_shape)}, but kernel {list(w.shape)} on {list(in_shape)} gives {list(got)}")
        return math.prod(in_shape), math.prod(out_shape)

    def check_matmul(self, c: FieldChecker, p: dict, field: str = "") -> Tuple[int, int]:
        f = (lambda k: f"{field}.{k}") if field else (lambda k: k)
        w = self.array(c, c.key(p, "weight", field), f("weight"), ndim=2)
        rows = c.int(c.key(p, "rows", field), f("rows"), 1, MAX_VALUE_ELEMENTS)
        for k, n in (("out_features", w.shape[0]), ("in_features", w.shape[1])):
            if k in p and c.int(p[k], f(k), 1) != n:
                c.fail(f(k), f"says {p[k]} but the weight is {list(w.shape)}")
        if rows * max(w.shape) > MAX_VALUE_ELEMENTS:
            c.fail(f("rows"), f"{rows} rows of {list(w.shape)} exceed the limit {MAX_VALUE_ELEMENTS}")
        return rows * w.shape[1], rows * w.shape[0]

    # -- taps and connections ------------------------------------------------------------------
    def check_taps(self, procs) -> None:
        self.tap_ports: Dict[str, Dict[str, Tuple[str, str, int]]] = {}
        for i, p in enumerate(procs):
            inputs = p.get("inputs")
            kind = p["type"]
            if inputs is None:
                continue
            c = self.proc_checker(i, p)
            if kind not in TAP_TYPES:
                c.fail("inputs", f"a {kind} process cannot have fused inputs")
            c.dict(inputs, "inputs")
            sizes = self.sizes[p["name"]]
            ports: Dict[str, Tuple[str, str, int]] = {}
            for lp, taps in inputs.items():
                if lp not in PROCESS_TYPES[kind][0]:
                    c.fail("inputs", f"{lp!r} is not an input port of a {kind} process "
                                     f"({', '.join(PROCESS_TYPES[kind][0])})")
                for j, tap in enumerate(c.list(taps, f"inputs[{lp!r}]", max_len=MAX_LAVA_PROCESSES)):
                    w = f"inputs[{lp!r}][{j}]"
                    c.dict(tap, w)
                    syn = c.key(tap, "syn", w)
                    if syn is None:
                        n_in = n_out = sizes[lp]
                    else:
                        c.dict(syn, f"{w}.syn")
                        sk = c.str(c.key(syn, "kind", f"{w}.syn"), f"{w}.syn.kind", SYNAPSE_KINDS)
                        check = {"sparse": self.check_sparse, "conv": self.check_conv, "matmul": self.check_matmul}[sk]
                        n_in, n_out = check(c, syn, f"{w}.syn")
                        if n_out != sizes[lp]:
                            c.fail(f"{w}.syn", f"sends {n_out} values into port {lp!r} of size {sizes[lp]}")
                    for k, s in enumerate(c.list(c.key(tap, "sources", w), f"{w}.sources", min_len=1,
                                                 max_len=MAX_LAVA_PROCESSES)):
                        sw = f"{w}.sources[{k}]"
                        c.dict(s, sw)
                        port = c.str(c.key(s, "port", sw), f"{sw}.port")
                        if not _TAP_PORT.match(port):
                            c.fail(f"{sw}.port", f"bad port name {describe(port)} (expected t<number>)")
                        src = c.str(c.key(s, "src", sw), f"{sw}.src")
                        if src not in self.procs:
                            c.fail(f"{sw}.src", f"no process named {src!r}")
                        sp = c.str(c.key(s, "src_port", sw), f"{sw}.src_port",
                                   PROCESS_TYPES[self.procs[src]["type"]][1])
                        n = c.int(c.key(s, "size", sw), f"{sw}.size", 1, MAX_VALUE_ELEMENTS)
                        if n != self.sizes[src][sp] or n != n_in:
                            c.fail(f"{sw}.size", f"{n}, but {src!r}.{sp} sends {self.sizes[src][sp]} and "
                                                 f"the tap takes {n_in}")
                        c.int(c.key(s, "delay", sw), f"{sw}.delay", 0, self.end_step)
                        if s.get("sched") is not None:
                            self.window(c, s["sched"], f"{sw}.sched")
                        filt = s.get("filter")
                        if filt is not None:
                            c.dict(filt, f"{sw}.filter")
                            c.int(c.key(filt, "start", f"{sw}.filter"), f"{sw}.filter.start", 1, self.end_step)
                            for a, v in enumerate(c.list(c.key(filt, "accept", f"{sw}.filter"), f"{sw}.filter.accept",
                                                         max_len=MAX_TIMESTEPS)):
                                c.int(v, f"{sw}.filter.accept[{a}]", 0, MAX_TIMESTEPS)
                        if port in ports and ports[port][:2] != (src, sp):
                            c.fail(f"{sw}.port", f"port {port!r} is used for two senders")
                        ports[port] = (src, sp, n)
            self.tap_ports[p["name"]] = ports

    def in_ports(self, name: str) -> Dict[str, int]:
        p = self.procs[name]
        fused = set(p.get("inputs") or {})
        out = {k: v for k, v in self.sizes[name].items() if k in PROCESS_TYPES[p["type"]][0] and k not in fused}
        out.update({port: n for port, (_, _, n) in self.tap_ports.get(name, {}).items()})
        return out

    def check_connections(self) -> None:
        t = self.top
        conns = t.list(self.d["connections"], "connections", max_len=MAX_LAVA_CONNECTIONS)
        seen, tap_in = set(), {}
        for i, cn in enumerate(conns):
            w = f"connections[{i}]"
            t.dict(cn, w)
            src, dst = (t.str(t.key(cn, k, w), f"{w}.{k}") for k in ("src", "dst"))
            for k, v in (("src", src), ("dst", dst)):
                if v not in self.procs:
                    t.fail(f"{w}.{k}", f"no process named {v!r}")
            sp = t.str(t.key(cn, "src_port", w), f"{w}.src_port", PROCESS_TYPES[self.procs[src]["type"]][1])
            ins = self.in_ports(dst)
            dp = t.str(t.key(cn, "dst_port", w), f"{w}.dst_port", tuple(ins))
            n_src, n_dst = self.sizes[src][sp], ins[dp]
            if n_src != n_dst:
                t.fail(w, f"{src!r}.{sp} sends {n_src} values into {dst!r}.{dp} of size {n_dst}")
            key = (src, sp, dst, dp)
            if key in seen:
                t.fail(w, f"{src!r}.{sp} is connected twice to {dst!r}.{dp}")
            seen.add(key)
            if dp in self.tap_ports.get(dst, {}):
                if (dst, dp) in tap_in:
                    t.fail(w, f"tap port {dst!r}.{dp} has two incoming connections")
                want = self.tap_ports[dst][dp][:2]
                if (src, sp) != want:
                    t.fail(w, f"tap port {dst!r}.{dp} is fed by {src!r}.{sp}, but its taps read {want[0]!r}.{want[1]}")
                tap_in[(dst, dp)] = True
        for name, ports in self.tap_ports.items():
            for port in ports:
                if (name, port) not in tap_in:
                    t.fail("connections", f"tap port {name!r}.{port} is not connected")

    def check_placement(self) -> None:
        """``placement`` (:mod:`spikedeploy.exporters.lava_placement`): what was requested, and the
        partitions: every process exactly once, each partition's order one that a single global
        step order agrees with (the connections and every partition's order together acyclic:
        otherwise two partitions could wait for each other forever)."""
        from spikedeploy.exporters.lava_placement import AUTO, MAX_PARTITIONS, PER_LAYER

        t = self.top
        pl = t.dict(self.d["placement"], "placement")
        req = t.key(pl, "requested", "placement")
        if isinstance(req, str):
            t.str(req, "placement.requested", (AUTO, PER_LAYER))
        else:
            t.int(req, "placement.requested", 1, MAX_PARTITIONS)
        if "rule" in pl:
            t.str(pl["rule"], "placement.rule")
        groups = t.key(pl, "groups", "placement")
        if groups is None:
            if pl.get("partitions") is not None:
                t.fail("placement.partitions", f"a per-layer placement has no partitions, got {describe(pl['partitions'])}")
            return
        t.list(groups, "placement.groups", min_len=1, max_len=MAX_PARTITIONS)
        t.int(t.key(pl, "partitions", "placement"), "placement.partitions", len(groups), len(groups))
        where: Dict[str, int] = {}
        succ: Dict[str, list] = {n: [] for n in self.procs}
        for i, g in enumerate(groups):
            t.list(g, f"placement.groups[{i}]", min_len=1)
            for j, n in enumerate(g):
                t.str(n, f"placement.groups[{i}][{j}]")
                if n not in self.procs:
                    t.fail(f"placement.groups[{i}][{j}]", f"no process named {n!r}")
                if n in where:
                    t.fail(f"placement.groups[{i}][{j}]", f"process {n!r} is placed twice")
                where[n] = i
                if j:
                    succ[g[j - 1]].append(n)
        missing = [n for n in self.procs if n not in where]
        if missing:
            t.fail("placement.groups", f"process {missing[0]!r} is not placed ({len(missing)} in all)")
        for cn in self.d["connections"]:
            succ[cn["src"]].append(cn["dst"])
        indeg = {n: 0 for n in succ}
        for outs in succ.values():
            for m in outs:
                indeg[m] += 1
        ready = [n for n, k in indeg.items() if k == 0]
        seen = 0
        while ready:
            n = ready.pop()
            seen += 1
            for m in succ[n]:
                indeg[m] -= 1
                if indeg[m] == 0:
                    ready.append(m)
        if seen != len(succ):
            t.fail("placement.groups", "the partitions' step orders contradict the connections (a process steps "
                                       "before one that feeds it)")

    def check_tables(self) -> None:
        t = self.top
        neurons = t.dict(self.d["neurons"], "neurons")
        for node, info in neurons.items():
            w = f"neurons[{node!r}]"
            t.dict(info, w)
            proc = t.str(t.key(info, "proc", w), f"{w}.proc")
            if proc not in self.procs or self.procs[proc]["type"] != "neuron":
                t.fail(f"{w}.proc", f"{proc!r} is not a neuron process")
            shape = t.shape(t.key(info, "shape", w), f"{w}.shape")
            if math.prod(shape) != self.procs[proc]["size"]:
                t.fail(f"{w}.shape", f"{list(shape)} does not fit process {proc!r} of size {self.procs[proc]['size']}")
            t.opt_int(info.get("steps"), f"{w}.steps", 1, self.slots or MAX_TIMESTEPS)
        outputs = t.list(self.d["outputs"], "outputs", min_len=1, max_len=10_000)
        host_outputs = self.host_values or set(self.input_shapes)
        for i, o in enumerate(outputs):
            w = f"outputs[{i}]"
            t.dict(o, w)
            t.str(t.key(o, "name", w), f"{w}.name")
            kind = t.str(t.key(o, "kind", w), f"{w}.kind", ("host", "readout"))
            shape = t.shape(t.key(o, "shape", w), f"{w}.shape")
            if kind == "host":
                value = t.str(t.key(o, "value", w), f"{w}.value")
                if value not in host_outputs:
                    t.fail(f"{w}.value", f"{value!r} is not a host value")
                continue
            proc = t.str(t.key(o, "proc", w), f"{w}.proc")
            if proc not in self.procs or self.procs[proc]["type"] != "readout":
                t.fail(f"{w}.proc", f"{proc!r} is not a readout process")
            if math.prod(shape) != self.procs[proc]["size"]:
                t.fail(f"{w}.shape", f"{list(shape)} does not fit process {proc!r} of size {self.procs[proc]['size']}")
            t.opt_int(o.get("steps"), f"{w}.steps", 1, self.slots or MAX_TIMESTEPS)

    def check_end_step(self, procs) -> None:
        """``end_step`` must be the last Lava step of macro-step 0 that the processes give (as the
        compiler computes it): a smaller one ends the run before the outputs are final, a larger
        one only wastes time."""
        ends = [1]
        for p in procs:
            k = p["type"]
            if k == "neuron":
                ends.append(p["out_start"] + p["window"] - 1)
            elif k == "readout":
                ends.append(p["start"] + p["length"] - 1)
            elif k == "attention":
                ends.append(p["q_start"] + p["q_len"] - 1)
            elif k == "memory_write":
                ends.append(p["kv_start"] + p["kv_len"] - 1)
            elif k in ("host_softmax", "template_gate", "memory_read", "st_attention"):
                ends.append(p["fire"])
        if max(ends) != self.end_step:
            self.top.fail("end_step", f"is {self.end_step}, but its processes' last step of macro-step 0 is {max(ends)}")


def read_arrays(path, where: str) -> Dict[str, np.ndarray]:
    """The arrays of a bundle's ``arrays.npz`` (no pickles). Every member's ``.npy`` header is
    checked before its data is read (a plain dtype, at most :data:`MAX_ARRAY_ELEMENTS` elements:
    a compressed member announcing a huge array is refused without inflating it)."""
    import zipfile

    todo = _REEXPORT
    try:
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                with zf.open(info) as f:
                    version = np.lib.format.read_magic(f)
                    read = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
                    if version not in read:
                        raise ValueError(f"member {info.filename!r}: .npy format version {version}")
                    shape, _, dtype = read[version](f)
                n = math.prod(shape)
                if dtype.hasobject or dtype.fields is not None or n > MAX_ARRAY_ELEMENTS or len(shape) > 8:
                    raise ArtifactError(f"{where}: arrays.npz: member {info.filename!r} ({dtype} {list(shape)}) is not "
                                        f"a plain array within the limit of {MAX_ARRAY_ELEMENTS} elements; {todo}")
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except ArtifactError:
        raise
    except (ValueError, OSError, zipfile.BadZipFile, EOFError, KeyError, SyntaxError, TypeError) as e:
        raise ArtifactError(f"{where}: arrays.npz is corrupt ({detail(e)}); {todo}") from None


def validate_bundle(desc: dict, arrays: Dict[str, np.ndarray], where: str) -> None:
    """Check a bundle's description and arrays (see the module docstring); raises
    :class:`~spikedeploy.errors.ArtifactError` naming ``where`` (e.g. "Lava bundle m.lava"),
    the process and the field. Nothing is started; ``desc`` and ``arrays`` are not changed."""
    for key, a in arrays.items():
        if not isinstance(a, np.ndarray) or a.size > MAX_ARRAY_ELEMENTS:
            raise ArtifactError(f"{where}: arrays.npz: array {key!r} is not an array within the limit of "
                                f"{MAX_ARRAY_ELEMENTS} elements; {_REEXPORT}")
    _Bundle(desc, arrays, where).check()
