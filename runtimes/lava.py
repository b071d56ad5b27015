"""Lava runtime: build the processes of a Lava bundle and run them in Lava's CPU simulator.

``run(bundle, x)`` (x: ``[T, B, *s]``):

1. the host part of the bundle (ops that depend on no neuron, e.g. the stem convolution on pixels)
   runs in the reference executor (float64) for the whole batch; its values are injected by
   standard Lava ``RingBuffer`` sources, one real-valued event per macro-step;
2. the batch is *streamed*: sample b occupies macro-steps ``b*T ... b*T + T - 1`` of one Lava run
   (neuron state resets at each sample boundary), so the whole batch is a single compile + run;
   in graphs whose values have different numbers of macro-steps (time-axis ops) each sample has
   the bundle's ``slots`` macro-step slots and a value of n steps uses the first n of them;
3. ``Loihi2SimCfg(select_tag="floating_pt")`` runs ``end_step + (B*T - 1) * period`` steps; every
   process's model is given explicitly (``exception_proc_model_map``), so Lava does not search
   the file system for process models;
4. spike counts q per macro-step are each ``IntegerNeuron``'s record of the spikes it actually
   emitted, graph outputs the ``Readout`` processes' records. Each of these processes writes its
   record to a per-run temporary directory (``/dev/shm`` when available) in the last step that
   changes it: Lava 0.10's ``Var.get`` sends one element per message through the runtime service
   (measured: 15 s of a 44 s run on a 171-layer graph), so ``get`` is only the fallback (and is
   used for the attention's small pair-event counters);
5. the runtime's lifetime is :class:`~spikedeploy.runtimes.lava_session.LavaSession`'s: every wait
   is bounded, an exception in a Lava process is reported as one
   :class:`~spikedeploy.lava_compat.LavaProcessError` naming it, and on every exit path (an
   error, Ctrl-C, the CLI's SIGTERM exception) the Lava processes are ended and their shared
   memory and the record directory removed.

Precision (``select_tag``): a float bundle runs with ``floating_pt`` (float64 models), a
fixed-point bundle (exported from a graph quantized by
:class:`spikedeploy.passes.quantize.QuantizeFixedPoint`, ``description["precision"] == "fixed"``)
with ``fixed_pt``: the integer models of :mod:`spikedeploy.runtimes.lava_procs`
(``MODELS_BY_TAG["fixed_pt"]``, the exact integer ``Sparse``/``RingBuffer`` models included),
int64 throughout, the host values checked to be exact integers where they enter, and the neuron
state clamps counted per layer (``info["saturated"]``). The default is the bundle's precision; the
other tag is refused (:class:`~spikedeploy.errors.ConfigError`): float models would compute a
fixed graph's integers in float64 and fixed models cannot run real-valued weights.
"""

from __future__ import annotations

import gc
import os
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import scipy.sparse as sp
import torch

from spikedeploy.errors import ConfigError, InputError, SpikedeployError
from spikedeploy.targets import TargetRun

__all__ = ["run", "build", "SELECT_TAGS"]

SELECT_TAGS = ("floating_pt", "fixed_pt")
#: bundle precision -> the select_tag that runs it
TAG_OF_PRECISION = {"float": "floating_pt", "fixed": "fixed_pt"}


def _bundle(b):
    from spikedeploy.exporters.lava import LavaBundle, load

    if isinstance(b, LavaBundle):
        return b
    if isinstance(b, (str, Path)):
        return load(b)
    raise SpikedeployError(f"Lava runtime: expected a LavaBundle or a bundle path, got {type(b).__name__}")


def _inputs(bundle, x) -> Dict[str, torch.Tensor]:
    specs = bundle.description["inputs"]
    if isinstance(x, (torch.Tensor, np.ndarray)):
        if len(specs) != 1:
            raise SpikedeployError(f"bundle has {len(specs)} inputs; pass a dict by input name")
        x = {specs[0]["name"]: x}
    out = {}
    for s in specs:
        if s["name"] not in x:
            raise SpikedeployError(f"missing input {s['name']!r}")
        from spikedeploy.validate import check_run_input  # dtype, shape, empty axes, finite: InputError
        check_run_input(x[s["name"]], f"input {s['name']!r}", s["shape"])
        t = torch.as_tensor(x[s["name"]]).to(torch.float64)
        if t.dim() != len(s["shape"]) + 2 or list(t.shape[2:]) != list(s["shape"]):
            raise SpikedeployError(f"input {s['name']!r} must have shape [T, B, {', '.join(map(str, s['shape']))}], "
                                   f"got {list(t.shape)}")
        out[s["name"]] = t
    shapes = {tuple(t.shape[:2]) for t in out.values()}
    if len(shapes) != 1:
        raise SpikedeployError(f"inputs disagree on [T, B]: {sorted(shapes)}")
    return out


#: host values are injected with Lava's ``RingBuffer`` (a column per Lava step) up to this many
#: entries, with the project's ``HostSource`` (a row per macro-step) above
RING_BUFFER_LIMIT = 4_000_000


#: messages a Lava channel buffers (Lava's default is 64, in shared memory per channel: 64 copies of
#: a 64x64x64 activation map are 134 MB). Processes advance in lock-step under the Loihi protocol and
#: every port sends and receives once per step, so a channel never holds more than one message.
CHANNEL_SIZE = 2


def _csr(bundle, rec: dict, fixed: bool = False) -> sp.csr_matrix:
    """The CSR matrix of a ``sparse`` record; ``fixed``: with int64 entries (each checked exact)."""
    data = bundle.array(rec["data"])
    if fixed:
        data = _exact(data, f"Sparse {rec.get('node', '')!r} weights")
    return sp.csr_matrix((data, bundle.array(rec["indices"]), bundle.array(rec["indptr"])), shape=tuple(rec["shape"]))


def _inputs_spec(bundle, p: dict, fixed: bool = False):
    """The fused inputs of a process record with their synapses' arrays resolved (sparse: the
    csr matrix, as the unfused ``Sparse`` would hold it; conv: the kernel). ``fixed``: the arrays
    as int64 (checked exact once here, in the parent: a live partition rebuilds its members from
    these specs every frame)."""
    inputs = p.get("inputs")
    if not inputs:
        return None
    out = {}
    for lp, taps in inputs.items():
        lst = []
        for t in taps:
            syn = t.get("syn")
            if syn is not None:
                syn = dict(syn)
                if syn["kind"] == "sparse":
                    syn["matrix"] = _csr(bundle, syn, fixed)
                elif syn["kind"] in ("conv", "matmul"):
                    w = bundle.array(syn["weight"])
                    syn["weight_array"] = _exact(w, f"kernel {syn.get('node', '')!r}") if fixed else w
                    if fixed and syn["kind"] == "conv":  # the exactness bound of its float64 products
                        from spikedeploy.runtimes.lava_procs import _conv_bound

                        syn["bound"] = _conv_bound(syn["weight_array"])
                else:
                    raise SpikedeployError(f"Lava bundle: process {p['name']!r} has a fused synapse of unknown "
                                           f"kind {syn['kind']!r}")
            lst.append({"syn": syn, "sources": t["sources"]})
        out[lp] = lst
    return out


#: environment variable naming the directory in which a run's record directory is made
RECORDS_ENV = "SPIKEDEPLOY_LAVA_RECORDS"


def _record_root() -> Optional[str]:
    """Where processes write their records: ``$SPIKEDEPLOY_LAVA_RECORDS`` if set (e.g. where
    ``/dev/shm`` is small), else shared memory (``/dev/shm``) when available, else the temp dir."""
    env = os.environ.get(RECORDS_ENV)
    if env:
        if not os.path.isdir(env):
            raise ConfigError(f"{RECORDS_ENV}={env!r} is not a directory; set it to an existing one or unset it")
        return env
    return "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None


def build(bundle, host_values: Dict[str, np.ndarray], *, T: int, B: int, record_dir: Optional[str] = None):
    """Instantiate the Lava processes of ``bundle`` for ``B`` samples of ``T`` macro-steps, one
    Lava process per bundle process (the per-layer placement), connected as the bundle says.

    ``host_values``: host value name -> array ``[T, B, *s]``. ``record_dir``: neurons and readouts
    write their records there (``<index>.npy``) in the last step that changes them, instead of
    being read with ``Var.get`` (see :func:`run`). Returns ``(procs, model_map, num_steps)`` with
    ``procs`` by process name."""
    procs, models, num_steps = make_processes(bundle, host_values, T=T, B=B, record_dir=record_dir)
    for cn in bundle.description["connections"]:
        getattr(procs[cn["src"]], cn["src_port"]).connect(getattr(procs[cn["dst"]], cn["dst_port"]))
    return procs, models, num_steps


def num_steps_of(bundle, *, T: int, B: int) -> int:
    """The Lava steps of a run of ``B`` samples of ``T`` macro-steps."""
    d = bundle.description
    G = int(d["slots"]) if d.get("slots") is not None else T
    num_steps = int(d["end_step"]) + (G * B - 1) * int(d["period"])
    if num_steps < 1:  # Lava would run forever: its runtime service only stops *at* step num_steps
        raise InputError(f"{bundle.path or 'Lava bundle'}: end_step {d['end_step']} and period {d['period']} give "
                         f"{num_steps} Lava steps for {G * B} macro-steps; expected at least 1 (re-export the bundle)")
    return num_steps


def source_var(bundle, p: dict, host_values: Dict[str, np.ndarray], *, T: int, B: int):
    """What the source process ``p`` injects for ``host_values``: ``("data", [size, steps])`` for
    Lava's ``RingBuffer`` (a column per Lava step, while small: :data:`RING_BUFFER_LIMIT`), else
    ``("values", [B*n, size])`` for the project's ``HostSource`` (a row per macro-step). The
    initial value of that Var: a live runtime sends exactly this for its next input."""
    d = bundle.description
    period = int(d["period"])
    grid = d.get("slots") is not None
    G = int(d["slots"]) if grid else T
    n = int(p["steps"]) if grid and p.get("steps") is not None else T
    num_steps = num_steps_of(bundle, T=T, B=B)
    v = np.asarray(host_values[p["value"]], dtype=np.float64)  # [n, B, *s]
    if v.shape[0] != n:
        raise SpikedeployError(f"host value {p['value']!r} has {v.shape[0]} macro-steps, expected {n}")
    dtype = np.float64
    if is_fixed_bundle(bundle):  # the host boundary (Quantize) made integers: checked, never rounded
        v, dtype = _exact(v, f"host value {p['value']!r}"), np.int64
    flat = v.transpose(1, 0, *range(2, v.ndim)).reshape(B * n, -1)  # row b*n + t
    if p.get("send") is None and int(p["size"]) * num_steps <= RING_BUFFER_LIMIT:
        data = np.zeros((int(p["size"]), num_steps), dtype)
        slot = (np.arange(B)[:, None] * G + np.arange(n)[None, :]).ravel()
        data[:, int(p["start"]) - 1 + period * slot] = flat.T
        return "data", data
    return "values", flat


def is_fixed_bundle(bundle) -> bool:
    """Whether ``bundle`` holds a fixed-point graph (``precision`` "fixed")."""
    from spikedeploy.exporters.lava_validate import precision_of

    return precision_of(bundle.description) == "fixed"


def _exact(a, what: str) -> np.ndarray:
    """``a`` as int64, refusing (InputError) any value that is not an exact integer."""
    from spikedeploy.runtimes.lava_kernels import exact_int64

    try:
        return exact_int64(a, what)
    except ValueError as e:
        raise InputError(f"Lava fixed_pt run: {e}") from None


def resolve_select_tag(bundle, select_tag: Optional[str]) -> str:
    """The tag a run of ``bundle`` uses: ``select_tag``, or (None) the bundle's precision's; a tag
    the runtime does not implement, or one that does not match the bundle's precision, is a
    ConfigError."""
    from spikedeploy.exporters.lava_validate import precision_of

    precision = precision_of(bundle.description)
    own = TAG_OF_PRECISION[precision]
    if select_tag is None:
        return own
    check_select_tag(select_tag)
    if select_tag != own:
        hint = ("export a graph quantized by spikedeploy.passes.quantize.quantize_graph for fixed_pt"
                if select_tag == "fixed_pt" else "export the float graph for floating_pt")
        raise ConfigError(f"Lava runtime: select_tag {select_tag!r} cannot run this {precision} bundle ({own} runs it; "
                          f"{hint})")
    return own


def _fixed_arrays_checked(bundle) -> None:
    """A fixed run: every array a process computes with is an exact integer (a bundle made in
    memory has not passed the loader's validation). The arrays that become a process's Var are
    checked here (Lava's builder would cast them to int64 silently); the synapse matrices and
    fused kernels are checked where they are made int64 (:func:`_csr`, :func:`_inputs_spec`)."""
    from spikedeploy.exporters.lava_validate import fixed_array_fields

    for proc, _, field, key in fixed_array_fields(bundle.description["processes"]):
        if field != "data" and not field.startswith("inputs."):
            _exact(bundle.array(key), f"process {proc!r} {field}")


def neuron_carries_state(neuron: dict) -> bool:
    """Whether a neuron process record's dynamics (``p["neuron"]``) carry a state across calls: a
    binary LIF, or an integer LIF with a (non-per-step) leak."""
    kind = str(neuron.get("kind", ""))
    if kind in ("binary_lif", "fixed_binary_lif"):
        return True
    return neuron.get("leak") is not None and not isinstance(neuron.get("leak"), (list, tuple))


def make_processes(bundle, host_values: Dict[str, np.ndarray], *, T: int, B: int, record_dir: Optional[str] = None,
                   select_tag: Optional[str] = None, carry: bool = False,
                   neuron_state: Optional[Dict[str, np.ndarray]] = None):
    """The Lava processes of ``bundle`` as :func:`build` makes them, not connected (the partitions
    of :mod:`spikedeploy.runtimes.lava_partition` host them), with the process models of
    ``select_tag`` (None: the bundle's precision, :func:`resolve_select_tag`). Returns ``(procs,
    model_map, num_steps)``; every connection names processes that exist. ``carry``: the neurons
    that carry state (:func:`neuron_carries_state`) start every sample from their ``state_in``
    (``neuron_state``: process name -> ``[2, B, size]``, default zeros)."""
    from spikedeploy.lava_compat import import_lava

    import_lava()
    from lava.proc.io.source import PySendModelFloat, RingBuffer
    from lava.proc.sparse.models import PySparseModelFloat
    from lava.proc.sparse.process import Sparse

    from spikedeploy.runtimes import lava_procs as LP

    tag = resolve_select_tag(bundle, select_tag)
    registry = LP.MODELS_BY_TAG[tag]
    if tag == "fixed_pt":
        _fixed_arrays_checked(bundle)
    # Lava's own processes: its float models, or the project's exact integer models (fixed_pt)
    sparse_model, send_model = registry.get(Sparse, PySparseModelFloat), registry.get(RingBuffer, PySendModelFloat)
    d = bundle.description
    period = int(d["period"])
    G = d.get("slots")  # macro-step slots per sample (graphs with time-axis ops), else T
    grid = G is not None
    G = int(G) if grid else T
    num_steps = num_steps_of(bundle, T=T, B=B)
    procs, models = {}, {}
    for index, p in enumerate(d["processes"]):
        kind, name = p["type"], p["name"]
        n = int(p["steps"]) if grid and p.get("steps") is not None else T  # this process's macro-steps
        clock = {"period": period, "num_macro": B * n, "slots": G if grid else None}
        inputs = _inputs_spec(bundle, p, tag == "fixed_pt")
        record = None
        if record_dir is not None and kind in ("neuron", "readout"):
            first, length = ((int(p["in_start"]) + int(p["in_len"]) - 1, int(p["window"])) if kind == "neuron"
                             else (int(p["start"]), int(p["length"])))
            last = (B - 1) * G + n - 1  # the slot of the last macro-step of the last sample
            record = {"path": str(Path(record_dir) / f"{index}.npy"), "step": first + last * period + length - 1}
        send = p.get("send")
        if kind == "sparse":
            proc = Sparse(weights=_csr(bundle, p, tag == "fixed_pt"), num_message_bits=int(p["num_message_bits"]),
                          name=name)
            models[proc] = sparse_model
        elif kind == "conv":
            proc = LP.ConvSynapse(weight=bundle.array(p["weight"]), in_shape=p["in_shape"], out_shape=p["out_shape"],
                                  stride=p["stride"], padding=p["padding"], dilation=p["dilation"],
                                  groups=int(p["groups"]), name=name)
        elif kind == "matmul":
            proc = LP.MatMulSynapse(weight=bundle.array(p["weight"]), rows=int(p["rows"]), name=name)
        elif kind == "source":
            var, value = source_var(bundle, p, host_values, T=T, B=B)
            if var == "data":
                proc = RingBuffer(data=value)
                models[proc] = send_model
            else:
                proc = LP.HostSource(values=value, start=int(p["start"]), period=period, send=send,
                                     slots=clock["slots"], steps=n, name=name)
        elif kind == "neuron":
            neuron = dict(p["neuron"])
            leak = neuron.get("leak")
            if isinstance(leak, list) and len(leak) < n - 1:
                raise SpikedeployError(f"neuron {p['node']!r} has {len(leak)} per-step leaks but runs {n} steps")
            proc = LP.IntegerNeuron(size=int(p["size"]), bias=bundle.array(p["bias"]), neuron=neuron,
                                    encoding=p["encoding"], window=int(p["window"]), in_start=int(p["in_start"]),
                                    in_len=int(p["in_len"]), sample_steps=n, inputs=inputs, send=send,
                                    record=record, name=name, carry=carry and neuron_carries_state(neuron),
                                    state_in=(neuron_state or {}).get(name), **clock)
        elif kind == "delay":
            proc = LP.Delay(size=int(p["size"]), delay=int(p["delay"]), name=name)
        elif kind == "junction":
            proc = LP.Junction(size=int(p["size"]), in_start=int(p["in_start"]), in_len=int(p["in_len"]),
                               inputs=inputs, send=send, steps=n, name=name, **clock)
        elif kind == "attention":
            proc = LP.SpikeAttention(channels=int(p["channels"]), v_channels=int(p["v_channels"]),
                                     tokens=int(p["tokens"]), heads=int(p["heads"]), scale=float(p["scale"]),
                                     kv_start=int(p["kv_start"]), kv_len=int(p["kv_len"]), q_start=int(p["q_start"]),
                                     q_len=int(p["q_len"]), inputs=inputs, send=send, steps=n, name=name, **clock)
        elif kind == "st_attention":
            compiled = p.get("timesteps")
            if compiled is not None and int(compiled) != n:
                raise ConfigError(f"Lava bundle: {p['node']!r} ({p['score']} attention over all frames) was compiled "
                                  f"for T = {compiled} frames, not {n}; run it with T = {compiled} or export again "
                                  f"with -T {n}")
            proc = LP.SpaceTimeAttention(channels=int(p["channels"]), v_channels=int(p["v_channels"]),
                                         tokens=int(p["tokens"]), heads=int(p["heads"]), groupings=p["groupings"],
                                         score=p["score"], scale=float(p["scale"]), sample_steps=n,
                                         kv_start=int(p["kv_start"]), kv_len=int(p["kv_len"]),
                                         q_start=int(p["q_start"]), q_len=int(p["q_len"]), inputs=inputs, send=send,
                                         steps=n, name=name, **clock)
        elif kind == "memory_write":
            proc = LP.MemoryWriter(channels=int(p["channels"]), v_channels=int(p["v_channels"]),
                                   tokens=int(p["tokens"]), heads=int(p["heads"]), scale=float(p["scale"]),
                                   kv_start=int(p["kv_start"]), kv_len=int(p["kv_len"]), inputs=inputs,
                                   send=send, steps=n, name=name, **clock)
        elif kind == "readout":
            proc = LP.Readout(size=int(p["size"]), offset=bundle.array(p["offset"]), start=int(p["start"]),
                              length=int(p["length"]), sample_steps=n, inputs=inputs, record=record, name=name,
                              **clock)
        elif kind == "step_gate":
            proc = LP.StepGate(size=int(p["size"]), start=int(p["start"]), accept=p["accept"], steps=n, name=name,
                               **clock)
        elif kind == "host_softmax":
            proc = LP.HostSoftmax(size=int(p["size"]), offset=bundle.array(p["offset"]), in_start=int(p["in_start"]),
                                  in_len=int(p["in_len"]), fire=int(p["fire"]), steps=n, inputs=inputs, send=send,
                                  name=name, **clock)
        elif kind == "template_gate":
            proc = LP.TemplateGateSynapse(size=int(p["size"]), channels=int(p["channels"]), scale=float(p["scale"]),
                                          encoding=p["encoding"], in_start=int(p["in_start"]),
                                          in_len=int(p["in_len"]), w_start=int(p["w_start"]), fire=int(p["fire"]),
                                          steps=n, inputs=inputs, send=send, name=name, **clock)
        elif kind == "memory_read":
            from spikedeploy.runtimes.lava_procs import MemoryReadSynapse

            proc = MemoryReadSynapse(memory=bundle.array(p["memory"]), channels=int(p["channels"]),
                                     v_channels=int(p["v_channels"]), tokens=int(p["tokens"]), heads=int(p["heads"]),
                                     scale=float(p["scale"]), q_start=int(p["q_start"]), q_len=int(p["q_len"]),
                                     fire=int(p["fire"]), steps=n, inputs=inputs, send=send, name=name, **clock)
        else:
            raise SpikedeployError(f"Lava bundle: unknown process type {kind!r} ({name})")
        if proc not in models:
            base = registry.get(type(proc))
            if base is None:
                raise ConfigError(f"Lava runtime: process {name!r} ({type(proc).__name__}) has no {tag} model"
                                  + (" (its op has no fixed-point form)" if tag == "fixed_pt" else ""))
            models[proc] = proc.fused_model(base) if isinstance(proc, LP._TapProcess) else base
        procs[name] = proc
    for cn in d["connections"]:
        for end in ("src", "dst"):
            if cn[end] not in procs:
                raise SpikedeployError(f"Lava bundle: connection names an unknown process {cn[end]!r}")
    return procs, models, num_steps


def _components(names, connections) -> List[List[str]]:
    """Connected components of a process graph (Lava runs one component per ``run`` call):
    ``names`` of the processes, ``connections`` as ``(src, dst)`` name pairs."""
    parent = {n: n for n in names}

    def find(a):
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for src, dst in connections:
        parent[find(src)] = find(dst)
    groups: Dict[str, List[str]] = {}
    for name in parent:
        groups.setdefault(find(name), []).append(name)
    return list(groups.values())


#: a run of more Lava processes than this collects garbage before the fork (see :func:`run`)
COLLECT_ABOVE = 8

#: Vars read after a run when no record file was written (Lava's ``Var.get``, or in a partition
#: the member's Var written to a file in the last step); in this order of preference
READ_VARS = ("q_rec", "rec", "pair_events")
#: a fixed-point neuron's Var of state clamps per macro-step (read next to its record)
SATURATION_VAR = "saturated"


def run(bundle, x, *, progress: bool = False, select_tag: Optional[str] = None, partitions=None) -> TargetRun:
    """Run a Lava bundle (or its path) on ``x`` ``[T, B, *s]`` in Lava's CPU simulator.

    ``partitions``: where the bundle's processes run (:mod:`spikedeploy.exporters.lava_placement`):
    ``"per-layer"`` (one Lava process each), an integer N (N ``Partition`` processes, see
    :mod:`spikedeploy.runtimes.lava_partition`) or ``"auto"``; None uses the bundle's recorded
    placement (``auto`` decided again for this machine). Every placement gives the same spike
    counts and outputs, bit for bit, in the same number of Lava steps. ``info`` reports the
    placement (``placement``, ``partitions``), the Lava processes compiled
    (``lava_processes``), the OS processes the runtime started (``os_processes``: one per Lava
    process, its runtime service and the shared-memory server) and ``lava_steps_per_frame``.

    ``select_tag``: ``"floating_pt"`` (a float bundle), ``"fixed_pt"`` (a fixed-point bundle: integer
    models, ``info["saturated"]``: neuron node -> state elements clamped to the state width over
    the run, ``info["host_saturated"]``: the host boundary's clamps per ``Quantize`` node); None
    (default): the bundle's precision. A tag that does not match the bundle is a ConfigError
    (module docstring).
    """
    if select_tag is not None:
        check_select_tag(select_tag)
    from spikedeploy.exporters.lava_placement import placement_of
    from spikedeploy.lava_compat import import_lava

    run_configs, _ = import_lava()
    bundle = _bundle(bundle)
    select_tag = resolve_select_tag(bundle, select_tag)
    d = bundle.description
    placement = placement_of(d, partitions)  # a bad value is refused before anything runs
    t0 = time.perf_counter()
    T, B, host, host_values = host_part(bundle, x)
    t_host = time.perf_counter() - t0

    from spikedeploy.runtimes.lava_session import LavaSession, deferred_signals

    # every exit path (an error, a failed Lava child, Ctrl-C, the CLI's SIGTERM exception) ends the
    # runtime's processes and removes its shared memory and this record directory
    record_dir = tempfile.TemporaryDirectory(prefix="spikedeploy-lava-", dir=_record_root())
    os_processes = 0
    try:
        index = {p["name"]: i for i, p in enumerate(d["processes"])}
        rdir = Path(record_dir.name)
        procs, models, num_steps = make_processes(bundle, host_values, T=T, B=B, record_dir=record_dir.name,
                                                  select_tag=select_tag)
        if placement.groups is not None:
            from spikedeploy.exporters.lava_placement import Placement, PlacementError
            from spikedeploy.runtimes import lava_partition

            dumps = {name: [(v, str(rdir / f"{index[name]}.{v}.npy"))] for name, p in procs.items()
                     for v in READ_VARS[2:] if hasattr(p, v)}
            try:
                lava_procs, lava_models, host_of = lava_partition.place(
                    procs, models, d["connections"], placement, num_steps=num_steps, channel_size=CHANNEL_SIZE,
                    dumps=dumps, select_tag=select_tag)
            except PlacementError as e:  # e.g. a model that cannot be hosted: auto runs per-layer
                if placement.requested != "auto":
                    raise
                placement = Placement("auto", None, f"auto: per-layer, since {e}")
            else:
                cut = {(host_of[c["src"]], host_of[c["dst"]]) for c in d["connections"]}
                comps = _components(list(lava_procs), [c for c in cut if c[0] != c[1]])
        if placement.groups is None:
            for cn in d["connections"]:
                getattr(procs[cn["src"]], cn["src_port"]).connect(getattr(procs[cn["dst"]], cn["dst_port"]))
            lava_procs, lava_models = procs, models
            comps = _components(list(procs), [(c["src"], c["dst"]) for c in d["connections"]])
            host_of = {name: name for name in procs}
        t_build = time.perf_counter() - t0 - t_host
        cfg = run_configs.Loihi2SimCfg(select_tag=select_tag, exception_proc_model_map=lava_models)
        members: Dict[str, List[str]] = {}
        for name, h in host_of.items():
            members.setdefault(h, []).append(name)
        rec: Dict[str, np.ndarray] = {}
        pair_events, write_events, saturated = {}, {}, {}
        t_run = time.perf_counter()
        from tqdm.auto import tqdm

        phases = {"start": 0.0, "steps": 0.0, "read": 0.0, "stop": 0.0}
        for comp in tqdm(comps, desc="lava", disable=not progress, unit="component"):
            first = lava_procs[comp[0]]
            # Lava forks one OS process per process model: objects frozen out of the garbage
            # collector are not traversed (and so not copied page by page) in every child; the
            # full collection first (0.1 s here) pays off only for many children
            if len(comp) > COLLECT_ABOVE:
                gc.collect()
            gc.freeze()
            session = LavaSession(first, cfg, {"pypy_channel_size": CHANNEL_SIZE})
            try:
                with session:
                    session.start()
                    # Lava's children: one per Lava process and the runtime service (+ the
                    # shared-memory server, which is not an actor)
                    os_processes = max(os_processes, len(session._actors()) + 1)
                    session.run(num_steps)
                    t = time.perf_counter()
                    read_records(procs, [n for h in comp for n in members[h]], index, rdir, rec, pair_events,
                                 write_events, hosted=placement.groups is not None, saturated=saturated)
                    phases["read"] += time.perf_counter() - t
            finally:
                gc.unfreeze()
                for k, v in session.timings.items():
                    phases[k] += v
    finally:
        with deferred_signals():
            record_dir.cleanup()
    t_run = time.perf_counter() - t_run
    info = {
        "select_tag": select_tag,
        "time_steps": num_steps,
        "lava_steps_per_frame": num_steps / B,
        "processes": len(procs),
        **placement_info(placement),
        "lava_processes": len(lava_procs),
        "os_processes": os_processes,
        "components": len(comps),
        "attention_pair_events": pair_events,
        "memory_write_pair_events": write_events,
        "saturated_by_process": saturated,
        "wall_time_s": time.perf_counter() - t0,
        "host_time_s": t_host,
        "build_time_s": t_build,
        "lava_time_s": t_run,
        "lava_phase_s": {k: round(v, 3) for k, v in phases.items()},
    }
    return target_run(bundle, rec, host, T=T, B=B, info=info)


def check_select_tag(select_tag: str) -> None:
    """Refuse a ``select_tag`` the runtime does not implement (ConfigError)."""
    if select_tag not in SELECT_TAGS:
        raise ConfigError(f"Lava runtime: select_tag {select_tag!r} is not implemented; "
                          f"supported: {', '.join(SELECT_TAGS)}")


def placement_info(placement) -> dict:
    """The ``info`` entries of a run's placement: ``placement`` (its record without the groups),
    ``partitions`` (N, or ``"per-layer"``) and ``partition_sizes``."""
    grouped = placement.groups is not None
    return {"placement": placement.to_json() | {"groups": None},
            "partitions": placement.partitions if grouped else "per-layer",
            "partition_sizes": [len(g) for g in placement.groups] if grouped else None}


def host_part(bundle, x):
    """The inputs checked (``[T, B, *s]``) and the bundle's host part run on them (reference
    executor, float64): ``(T, B, host_run, host_values)``."""
    from spikedeploy.reference import run as ref_run

    d = bundle.description
    xs = _inputs(bundle, x)
    T, B = next(iter(xs.values())).shape[:2]
    host = ref_run(bundle.host_graph(), xs, dtype=torch.float64)
    return int(T), int(B), host, {name: host.outputs[name].numpy() for name in d["host"]["values"]}


def read_records(procs, names, index, rdir: Path, rec: dict, pair_events: dict, write_events: dict, *,
                 hosted: bool, dumped: Optional[Dict[str, np.ndarray]] = None,
                 saturated: Optional[dict] = None) -> None:
    """Collect the records of the processes ``names`` after a run into ``rec`` (neuron and
    readout records: the files the processes wrote in their last step; else a Var of
    :data:`READ_VARS` dumped by a partition, or read with ``Var.get`` when not ``hosted``) and
    the attention / memory-write pair-event counts. ``dumped``: the Vars the partitions wrote into
    one file each, by ``"<index>.<Var>"``, looked up first. ``saturated``: filled with each
    fixed-point neuron's state clamps (process name -> total), read the same ways (the file the
    neuron wrote next to its record, a partition's dump, or ``Var.get``)."""
    from spikedeploy.runtimes import lava_procs as LP

    def take(name: str, p, var: str, value) -> None:
        if var == "pair_events":
            events = float(np.asarray(value).sum())
            (write_events if isinstance(p, LP.MemoryWriter) else pair_events)[name] = events
        else:
            rec[name] = np.asarray(value)

    for name in names:
        p = procs[name]
        if saturated is not None and hasattr(p, SATURATION_VAR):
            saturated[name] = _saturation(p, index[name], rdir, hosted, dumped)
        key = next((f"{index[name]}.{v}" for v in READ_VARS if dumped and f"{index[name]}.{v}" in dumped), None)
        if key is not None:  # a partition wrote it with the others
            take(name, p, key.split(".", 1)[1], dumped[key])
            continue
        written = rdir / f"{index[name]}.npy"
        if written.is_file():  # the process wrote its record in its last step
            rec[name] = np.load(written, allow_pickle=False)
            continue
        var = next((v for v in READ_VARS if hasattr(p, v)), None)
        if var is None:
            continue
        dumped_file = rdir / f"{index[name]}.{var}.npy"
        if dumped_file.is_file():  # a partition wrote its member's Var in the last step
            value = np.load(dumped_file, allow_pickle=False)
        elif not hosted:
            value = np.asarray(getattr(p, var).get())
        else:
            raise SpikedeployError(f"Lava run: the partition of process {name!r} wrote no {var}")
        take(name, p, var, value)


def _saturation(p, i: int, rdir: Path, hosted: bool, dumped: Optional[Dict[str, np.ndarray]]) -> int:
    """The state clamps a fixed-point neuron counted over the run (see :func:`read_records`)."""
    from spikedeploy.runtimes.lava_procs import saturation_path

    key = f"{i}.{SATURATION_VAR}"
    if dumped and key in dumped:
        return int(np.asarray(dumped[key]).sum())
    for path in (Path(saturation_path(str(rdir / f"{i}.npy"))), rdir / f"{key}.npy"):
        if path.is_file():
            return int(np.load(path, allow_pickle=False).sum())
    if hosted:
        raise SpikedeployError(f"Lava run: the partition of process {p.name!r} wrote no saturation counts")
    return int(np.asarray(getattr(p, SATURATION_VAR).get()).sum())


def target_run(bundle, rec: dict, host, *, T: int, B: int, info: dict) -> TargetRun:
    """The :class:`~spikedeploy.targets.TargetRun` of a run from the processes' records ``rec``
    and the host run: spike counts ``[n, B, *s]`` per neuron node, the outputs, and ``info``
    completed with the bundle's facts."""
    d = bundle.description
    grid = d.get("slots") is not None

    def unstream(a: np.ndarray, shape, steps=None) -> torch.Tensor:  # [B*n, size] -> [n, B, *shape]
        n = int(steps) if grid and steps is not None else T
        a = a.reshape((B, n) + tuple(shape))
        return torch.from_numpy(np.ascontiguousarray(np.swapaxes(a, 0, 1)))

    spike_counts = {node: unstream(rec[n["proc"]], n["shape"], n.get("steps")) for node, n in d["neurons"].items()}
    outputs = {}
    for o in d["outputs"]:
        if o["kind"] == "host":
            outputs[o["name"]] = host.outputs[o["value"]].clone()
        else:
            outputs[o["name"]] = unstream(rec[o["proc"]], o["shape"], o.get("steps"))
    fixed = is_fixed_bundle(bundle)
    if fixed:  # integer records as float64 counts/values, as the reference reports them (exact)
        spike_counts = {k: v.to(torch.float64) for k, v in spike_counts.items()}
        outputs = {k: v.to(torch.float64) for k, v in outputs.items()}
    host_nodes = [n["name"] for n in d["host"]["nodes"]]
    info = dict(info)
    by_proc = info.pop("saturated_by_process", {}) or {}
    if fixed:
        info["saturated"] = {node: int(by_proc.get(n["proc"], 0)) for node, n in d["neurons"].items()}
        info["host_saturated"] = {n["name"]: int(host.records[n["name"]].saturated) for n in d["host"]["nodes"]
                                  if n["op"]["kind"] == "Quantize" and n["name"] in host.records}
        info["precision"] = "fixed"
        info["output_exponents"] = dict(d.get("fixed_point", {}).get("outputs", {}))
    info = info | {
        "period": int(d["period"]),
        "macro_steps": T * B,
        "process_counts": dict(d.get("process_counts", {})),
        "fusion": d.get("fusion"),
        "connections": len(d["connections"]),
        "host_nodes": host_nodes,
        "host": f"ran on the host (reference executor, float64): {', '.join(host_nodes) or 'nothing'}; "
                f"injected values: {', '.join(d['host']['values'])}",
        "batch": "streamed: sample b occupies macro-steps b*T .. b*T+T-1 of one Lava run",
    }
    return TargetRun(target="lava", encoding=bundle.encoding, outputs=outputs, spike_counts=spike_counts, info=info)
