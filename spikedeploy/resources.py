"""The resource guard: estimate a command's peak memory before it allocates, and refuse with one
line beyond a limit (:class:`~spikedeploy.errors.ResourceError`, exit code 2) instead of growing
until the kernel's out-of-memory killer ends the process (exit 137), or another job on the machine.

Where memory grows (peak RSS, ``/usr/bin/time -v``, the sdt-test model, per-step input 3x16x16,
``spikedeploy export`` with each target; verify/audit with their default modes, 2 CPU threads)::

    export       T = 1        10       100      1000
      onnx         267 MB   268 MB   439 MB   1887 MB
      nir          276 MB   278 MB   436 MB   2143 MB
      lava         284 MB   284 MB   435 MB   2127 MB
    verify -T 1/4/16 --inputs 64: 559 / 1455 / 4954 MB; -T 16 --inputs 16: 1468 MB
    audit  -T 4 --inputs 8: 308 MB, -T 16 --inputs 16: 440 MB, -T 64 --inputs 8: 610 MB
    run (NIR) -T 10 / 100, 8 inputs: 318 / 796 MB

The artifacts do not grow with T (ONNX 156 KB, NIR 1.1 MB, Lava 13 MB at any T); the memory that
does is the intermediate results kept while running the network over T steps:

* **capture** runs the model on two example batches (B = 2 and 4; 3 and 6 when T = 2) and keeps
  every fx node's result: ``samples * T * P`` bytes, where ``P`` is the size of all intermediate
  results of one forward pass for one sample and one macro-step. Measured: 1.2x that (temporaries
  inside the neurons), ~1.9 MB per step for sdt-test (P = 257 KB): ``export -T 100000`` would need
  ~190 GB, ``-T 10000`` ~19 GB (15 GB was observed before the process was killed).
* **reference runs** keep every node's value (float64 by default: 2 P per sample-step) for each
  run that is alive at once: verify keeps 2 (the capture check: the float64 model and its IR run)
  + 3 (fold/fuse: raw, folded, teacher-forced) + 2 per spike mode; measured 18.3 P per sample-step
  with both modes (4.7 MB for sdt-test). Audit keeps about 1-2 float64 runs, a NIR ``run`` one.

The estimate (documented, conservative: measured peaks were 0.65-0.85 of it):

    P        = a probe: the model traced with the capture's own tracer and run once on a zeros
               input [T0 = 1, B = 1, *input_shape] (T0 = T for a model that needs its own T, when
               T <= 64), every distinct tensor storage counted once (float32)
    capture  = 1.6 * samples * T * P
    runs     = 1.25 * N * T * P * sum(itemsize / 4 of each run kept at once)
    growth   = 64 MiB (imports that follow) + max(capture, runs)   (what the command adds)
    estimate = RSS of this process now + growth                  (its peak)

(capture's results are freed before the reference runs start). For an artifact (``run`` on a NIR
file) ``P`` is the sum of the IR graph's per-step value sizes. The probe costs one forward pass of
one sample at one step; the input alone is checked first (``samples * T * prod(input_shape)``), so
a huge T or input shape is refused before any allocation that grows with them.

The limit bounds the **growth**, the memory the command adds to this process (for the CLI, a fresh
process of ~0.3 GB, that is its peak less 0.3 GB; in a long-lived Python session or a test runner
that already holds gigabytes, a small job is not refused for what the session holds): ``max_memory``
(GB, the CLI's ``--max-memory GB``), else the environment variable ``SPIKEDEPLOY_MAX_MEMORY_GB``,
else :func:`default_memory_limit`: the smallest of half the machine's physical memory, 90 % of a
cgroup memory limit (containers) less what this process holds, and the memory available now.
1 GB = 1e9 bytes.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Tuple

from spikedeploy.errors import ConfigError, ResourceError

GB = 1e9
MIB = 1 << 20
ENV_VAR = "SPIKEDEPLOY_MAX_MEMORY_GB"
#: the default limit's share of the physical memory
PHYSICAL_FRACTION = 0.5
#: the default limit's share of a cgroup (container) memory limit
CGROUP_FRACTION = 0.9
#: measured capture peak / (samples * T * P) was 1.2 (sdt-test, T = 300 .. 1000), up to 1.6 with DI-LIF
CAPTURE_FACTOR = 1.6
#: measured reference-run peak / (N * T * P * runs) was ~1.0 (verify, audit, NIR run)
RUN_FACTOR = 1.25
#: imports and buffers that come after the check (onnx, nir, lava modules)
PROCESS_MARGIN = 64 * MIB
#: a model that fails the T0 = 1 probe is probed at its own T up to this many steps
PROBE_MAX_STEPS = 64
_OPTION = "--max-memory GB (or SPIKEDEPLOY_MAX_MEMORY_GB)"


def capture_samples(timesteps: int) -> int:
    """Samples capture runs the model on: two example batches B1 + B2, B1 = 2 (3 when T = 2),
    B2 = 2 * B1 (:func:`spikedeploy.capture.capture`)."""
    b1 = 2 if timesteps != 2 else 3
    return 3 * b1


def capture_held_samples(timesteps: int) -> float:
    """Samples whose intermediate results capture holds at its peak: every result of the first
    batch B1 is kept, the second run (B2 = 2 * B1) keeps only shapes, so of B2 only the results
    still live in the interpreter exist at once; counted as half of B2 (measured on sdt-test at
    T = 200: the growth is 3.0 - 3.4 samples' worth, B1 + B2 / 2 = 4)."""
    b1 = 2 if timesteps != 2 else 3
    return b1 + b1  # B1 + B2 / 2


def _gb(n: float) -> str:
    if n >= 10 * GB:
        return f"{n / GB:.0f} GB"
    return f"{n / GB:.1f} GB" if n >= GB else f"{n / 1e6:.0f} MB"


# ---------------------------------------------------------------------------------------------
# the machine
# ---------------------------------------------------------------------------------------------


def _meminfo() -> dict:
    out = {}
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                key, _, rest = line.partition(":")
                parts = rest.split()
                if parts and parts[0].isdigit():
                    out[key] = int(parts[0]) * 1024
    except OSError:
        pass
    return out


def physical_memory() -> Optional[int]:
    """Bytes of physical memory (``/proc/meminfo``, else ``sysconf``), or None if unknown."""
    total = _meminfo().get("MemTotal")
    if total:
        return total
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def _cgroup_limit() -> Optional[int]:
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(path).read_text().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < (1 << 60):  # "max" or a huge number: no limit
            return int(text)
    return None


def process_rss() -> int:
    """Resident memory of this process now (``/proc/self/status`` VmRSS; else its peak)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def default_memory_limit() -> Tuple[int, str]:
    """The default limit of a command's growth in bytes and how it was chosen: the smallest of half
    the physical memory, 90 % of a cgroup limit less this process's own, and the memory available
    now (so that other jobs on a shared machine keep theirs)."""
    candidates = []
    total = physical_memory()
    if total:
        candidates.append((int(total * PHYSICAL_FRACTION), f"half of this machine's {_gb(total)} of memory"))
    cg = _cgroup_limit()
    if cg:
        candidates.append((max(int(cg * CGROUP_FRACTION) - process_rss(), 0),
                           f"90% of the container's {_gb(cg)} limit, less this process's own"))
    avail = _meminfo().get("MemAvailable")
    if avail:
        candidates.append((avail, f"the {_gb(avail)} available now"))
    if not candidates:
        return 8 * 1024 ** 3, "a fixed 8.6 GB (the machine's memory is unknown)"
    return min(candidates)


def memory_limit(max_memory: Optional[float] = None) -> Tuple[int, str]:
    """The limit in bytes and its origin: ``max_memory`` (GB) if given, else ``$SPIKEDEPLOY_MAX_MEMORY_GB``,
    else :func:`default_memory_limit`. A value that is not a positive finite number of GB is a
    :class:`~spikedeploy.errors.ConfigError`."""
    source = "--max-memory"
    if max_memory is None:
        env = os.environ.get(ENV_VAR, "").strip()
        if not env:
            return default_memory_limit()
        source = ENV_VAR
        try:
            max_memory = float(env)
        except ValueError:
            raise ConfigError(f"{ENV_VAR}={env!r} is not a number of GB; set it to e.g. 16") from None
    if isinstance(max_memory, bool) or not isinstance(max_memory, (int, float)):
        raise ConfigError(f"{source} must be a number of GB, got {max_memory!r}")
    if not math.isfinite(max_memory) or max_memory <= 0:
        raise ConfigError(f"{source} must be a positive number of GB, got {max_memory!r}")
    return int(max_memory * GB), f"{source} {max_memory:g}"


# ---------------------------------------------------------------------------------------------
# estimates
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MemoryEstimate:
    """A command's estimated peak memory: ``total`` bytes = ``base`` (this process now + margin)
    + the largest of the ``parts`` (they are not alive at the same time); ``growth`` = what the
    command adds (margin + the largest part), the figure the limit bounds."""

    what: str
    base: int
    parts: Tuple[Tuple[str, int], ...]
    fix: str = "use fewer time steps or inputs"

    @property
    def total(self) -> int:
        return self.base + max((b for _, b in self.parts), default=0)

    @property
    def growth(self) -> int:
        return PROCESS_MARGIN + max((b for _, b in self.parts), default=0)

    def describe(self) -> str:
        parts = ", ".join(f"{name} {_gb(b)}" for name, b in self.parts)
        return f"{parts}{', ' if parts else ''}process {_gb(self.base)}"


def _storage_bytes(values, seen: dict) -> None:
    import torch

    for v in values:
        if isinstance(v, torch.Tensor):
            st = v.untyped_storage()
            seen.setdefault((st.data_ptr(), st.nbytes()), st.nbytes())
        elif isinstance(v, (tuple, list)):
            _storage_bytes(v, seen)
        elif isinstance(v, dict):
            _storage_bytes(list(v.values()), seen)


def step_bytes(module, input_shape: Sequence[int], timesteps: int = 1) -> Optional[int]:
    """``P``: bytes of all intermediate results of one forward pass of ``module`` for one sample and
    one macro-step (see the module docstring), or None when the model cannot be probed (it then
    fails in capture with its own message). Runs the model once on zeros ``[T0, 1, *input_shape]``
    with the capture's tracer (``T0`` = 1, or ``timesteps`` for a model that needs it, up to
    :data:`PROBE_MAX_STEPS`)."""
    import torch
    import torch.fx as fx

    from spikedeploy.capture import _Tracer  # the capture's own leaf rules: the probe sees its nodes

    try:
        gm = fx.GraphModule(module, _Tracer().trace(module))
    except Exception:  # noqa: BLE001 - capture reports an untraceable model with its own message
        return None

    class _Probe(fx.Interpreter):
        def __init__(self):
            super().__init__(gm)
            self.kept = []  # storages stay alive, so none is counted twice or reused

        def run_node(self, n):
            out = super().run_node(n)
            self.kept.append(out)
            return out

    for t0 in dict.fromkeys((1, int(timesteps))):
        if t0 > PROBE_MAX_STEPS:
            break
        probe = _Probe()
        try:
            with torch.no_grad():
                probe.run(torch.zeros((t0, 1) + tuple(int(s) for s in input_shape)))
        except Exception:  # noqa: BLE001 - e.g. a model that needs exactly its T: try that T
            continue
        seen: dict = {}
        _storage_bytes(probe.kept, seen)
        return int(math.ceil(sum(seen.values()) / t0))
    return None


def _base() -> int:
    return process_rss() + PROCESS_MARGIN


def estimate_model_memory(
    loaded,
    command: str,
    *,
    timesteps: int,
    num_inputs: int = 0,
    run_itemsizes: Sequence[int] = (),
) -> MemoryEstimate:
    """The estimate for ``command`` on a built model (``api.LoadedModel``): capture at
    ``timesteps`` plus, for ``num_inputs`` inputs, the reference runs kept at once, one item size
    per run (8 for float64). The input alone is checked before the probe: if it already exceeds
    the limit the probe is not run (``check`` does that through :func:`guard_model`)."""
    T = int(timesteps)
    shape = tuple(int(s) for s in loaded.input_shape)
    what = f"{command} of {loaded.name} at T = {T}" + (f" with {num_inputs} inputs" if num_inputs else "")
    samples = capture_samples(T)
    p = step_bytes(loaded.module, shape, T)
    if p is None:  # not probed: count the inputs only (a lower bound)
        p = 4 * math.prod(shape)
    held = capture_held_samples(T)
    parts = [(f"capture ({samples} samples x {T} steps, {held:g} held at once)",
              int(CAPTURE_FACTOR * held * T * p))]
    if num_inputs and run_itemsizes:
        per = sum(run_itemsizes) / 4
        parts.append((f"{len(run_itemsizes)} reference runs ({num_inputs} inputs x {T} steps)",
                      int(RUN_FACTOR * num_inputs * T * p * per)))
    fix = "use fewer time steps (-T) or inputs (--inputs)" if num_inputs else "use fewer time steps (-T)"
    return MemoryEstimate(what, _base(), tuple(parts), fix)


def check(estimate: MemoryEstimate, max_memory: Optional[float] = None) -> MemoryEstimate:
    """Raise :class:`~spikedeploy.errors.ResourceError` (one line: the estimate, the limit and the
    option that raises it) if ``estimate.growth`` exceeds the limit; else return ``estimate``."""
    limit, origin = memory_limit(max_memory)
    if estimate.growth > limit:
        raise ResourceError(
            f"{estimate.what} needs an estimated {_gb(estimate.growth)} of memory ({estimate.describe()}), more "
            f"than the limit of {_gb(limit)} ({origin}); {estimate.fix}, or raise the limit with {_OPTION} if the "
            f"machine has the memory"
        )
    return estimate


def _input_lower_bound(loaded, command: str, T: int, num_inputs: int) -> MemoryEstimate:
    n = capture_samples(T) + max(int(num_inputs), 0)
    what = f"{command} of {loaded.name} at T = {T}" + (f" with {num_inputs} inputs" if num_inputs else "")
    fix = "use fewer time steps (-T) or inputs (--inputs)" if num_inputs else "use fewer time steps (-T)"
    return MemoryEstimate(what, _base(), ((f"the inputs alone ({n} samples x {T} steps)",
                                           4 * n * T * math.prod(loaded.input_shape)),), fix)


def npy_shape(path) -> Optional[Tuple[int, ...]]:
    """The array shape in a .npy file's header, or None unless the header is readable, within the
    input limit (:data:`spikedeploy.validate.MAX_INPUT_ELEMENTS`) and the file holds the data it
    announces: a file the input loader refuses is left to it, with its own message."""
    import numpy as np

    from spikedeploy.validate import MAX_INPUT_ELEMENTS

    fmt = np.lib.format
    try:
        with open(path, "rb") as f:
            version = fmt.read_magic(f)
            if version not in ((1, 0), (2, 0)):
                return None
            read = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
            shape, _, dtype = read(f)  # the header only, no data
            start = f.tell()
        n = math.prod(shape)
        if n > MAX_INPUT_ELEMENTS or os.path.getsize(path) < start + n * dtype.itemsize:
            return None
        return tuple(int(s) for s in shape)
    except (OSError, ValueError, TypeError, EOFError, SyntaxError):
        return None


def guard_model(
    loaded,
    command: str,
    *,
    timesteps: int,
    num_inputs: int = 0,
    input_file=None,
    run_itemsizes: Sequence[int] = (),
    max_memory: Optional[float] = None,
) -> MemoryEstimate:
    """The check at the start of ``command`` (export, verify, audit, inspect) on the built model
    ``loaded``: T and the input count come from ``input_file``'s header when one is given. Checks
    the inputs alone first (no probe if they already exceed the limit), then the full estimate.
    Returns the estimate; raises :class:`~spikedeploy.errors.ResourceError` beyond the limit."""
    T, N = int(timesteps), int(num_inputs)
    if input_file is not None:
        shape = npy_shape(input_file)
        if shape is not None and len(shape) >= 2:
            T, N = shape[0], shape[1]
    check(_input_lower_bound(loaded, command, T, N if run_itemsizes else 0), max_memory)
    return check(estimate_model_memory(loaded, command, timesteps=T, num_inputs=N, run_itemsizes=run_itemsizes),
                 max_memory)


def verify_run_itemsizes(dtype_itemsize: int, modes: Sequence[str], targets: Sequence[str] = ()) -> Tuple[int, ...]:
    """Item sizes of the reference runs ``verify`` keeps at once: the capture check (the float64
    model and its float64 IR run), fold/fuse (raw, folded, teacher-forced) and two per spike mode
    at the verification dtype."""
    return (8, 8) + (dtype_itemsize,) * (3 + 2 * len(modes))


#: runs an audit keeps at once (float64): the spike run (+ the reference check of a Lava run)
def audit_run_itemsizes(runtime: str = "reference") -> Tuple[int, ...]:
    return (8, 8, 8) if runtime == "lava" else (8, 8)


def guard_graph_run(graph, x_shape: Sequence[int], command: str, *, max_memory: Optional[float] = None,
                    runs: int = 2, itemsize: int = 8) -> MemoryEstimate:
    """The check before the reference executes an IR ``graph`` (e.g. ``run`` on a NIR artifact) on
    inputs of shape ``x_shape`` ``[T, N, ...]``: ``P`` = the sum of the graph's per-step value sizes
    (float32), ``runs`` runs at ``itemsize`` kept at once."""
    T, N = int(x_shape[0]), int(x_shape[1])
    p = 4 * sum(math.prod(s) for s in graph.shapes().values())
    est = MemoryEstimate(f"{command} at T = {T} with {N} inputs", _base(),
                         ((f"{runs} reference runs ({N} inputs x {T} steps)",
                           int(RUN_FACTOR * N * T * p * runs * itemsize / 4)),),
                         "give fewer time steps or inputs in the input file")
    return check(est, max_memory)


def guard_artifact_run(target: str, artifact, x_shape: Sequence[int], what: str, *,
                       max_memory: Optional[float] = None) -> Optional[MemoryEstimate]:
    """The check before ``run`` executes a loaded artifact on inputs ``x_shape``: a NIR file is
    re-executed by the reference (two float64 runs' worth: values and decoded outputs, measured
    0.8x of that). ONNX Runtime and the Lava simulator (whose memory is in its child processes) are
    not estimated: their inputs are bounded by the input file limits
    (:data:`spikedeploy.validate.MAX_INPUT_ELEMENTS`). Returns the estimate, or None when not
    estimated."""
    if target != "nir" or getattr(artifact, "graph", None) is None:
        return None
    return guard_graph_run(artifact.graph, x_shape, what, max_memory=max_memory)
