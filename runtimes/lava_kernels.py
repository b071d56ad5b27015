"""Kernel processes for ops whose unrolled synapse matrix does not scale (and their models).

``MemoryReadSynapse`` — SpikeTrack's memory retrieval ``y = scale * merge_heads(Q_h @ memory[t, h])``
(:class:`~spikedeploy.ir.ops.MemoryRead`) as a synapse that holds the memory itself instead of the
block-diagonal matrix ``scale * memory[t, h].T (x) I_N`` (B384's two reads of MRM 5 alone would be
7.5e7 synapses). The memory (``[T_mem, H, C/H, Cv/H]``, the template branch's ``k^T v``) is a Var of
the process, so a new template rewrites one array, not a matrix.

Arithmetic (the reference's, :class:`spikedeploy.reference.MemoryReadRule`): in every step of the q
window the events that arrived read their memory rows — only the tokens that carry at least one
unit spike or graded event are read (:func:`read_rows`) — and the rows read are summed over the
window in arrival order (``acc = y_0 + y_1 + ...``, the reference's sum over sub-steps); when the
window is complete the sum is multiplied by ``scale`` once (the reference's ``offset``) and sent,
one step later, as one real-valued event (a synapse's one-step delay: the consumer fires in the same
Lava step as with an unrolled ``Sparse``). Applying the scale after the sum, not inside the weights,
is what makes it the reference's arithmetic: ``sum_j s*y_j`` and ``s*sum_j y_j`` differ in the last
bit when ``s`` is not a power of two (SpikeTrack's ``2 / sqrt(head_dim) / D``).
With a time-varying memory (``T_mem`` = the number of macro-steps of q, SpikeTrack T = 3),
macro-step t of a sample reads ``memory[t]`` — one process instead of one matrix per step.

The per-step arithmetic is the pure function :func:`read_rows`; the process model only keeps the
clock and the window sum, so any host of the model (per-layer or partitioned) computes the same.
"""

from __future__ import annotations

import numpy as np

from spikedeploy.lava_compat import import_lava

import_lava()

from lava.magma.core.decorator import implements, requires, tag  # noqa: E402
from lava.magma.core.model.py.ports import PyInPort, PyOutPort  # noqa: E402
from lava.magma.core.model.py.type import LavaPyType  # noqa: E402
from lava.magma.core.process.ports.ports import OutPort  # noqa: E402
from lava.magma.core.process.variable import Var  # noqa: E402
from lava.magma.core.resources import CPU  # noqa: E402
from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol  # noqa: E402

from spikedeploy.runtimes.lava_procs import _TapModel, _TapProcess, _clock_params, register_model  # noqa: E402

__all__ = ["MemoryReadSynapse", "PyMemoryReadSynapseFloat", "read_rows"]


def read_rows(x: np.ndarray, memory: np.ndarray) -> np.ndarray:
    """The memory rows read by the events ``x`` (q ``[C, N]`` flattened row-major: unit spikes,
    graded counts or real values) of one step: ``merge_heads(Q_h @ memory[h])`` ``[Cv*N]`` for
    ``memory`` ``[H, C/H, Cv/H]``, unscaled, float64. Only the tokens with at least one non-zero
    entry are read (the others read nothing: exactly zero); the product is PyTorch's float64
    ``matmul`` on the reference's head layout (:class:`spikedeploy.reference.AttentionRule`)."""
    import torch  # noqa: PLC0415 - a kernel process runs in a forked child that already has torch

    H, c, cv = memory.shape
    n = x.size // (H * c)
    q = np.asarray(x, dtype=np.float64).reshape(H * c, n)
    active = np.flatnonzero(q.any(axis=0))
    out = np.zeros((H, n, cv))
    if active.size:
        qh = q[:, active].reshape(H, c, active.size).transpose(0, 2, 1)  # [H, n_active, C/H]
        y = torch.from_numpy(np.ascontiguousarray(qh)) @ torch.from_numpy(memory)
        out[:, active, :] = y.numpy()
    return out.transpose(0, 2, 1).reshape(H * cv * n)


class MemoryReadSynapse(_TapProcess):
    """``MemoryRead`` as a kernel (module docstring): q ``[C, N]`` in ``q_in`` (read in the window
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


@implements(proc=MemoryReadSynapse, protocol=LoihiProtocol)
@requires(CPU)
@tag("floating_pt")
class PyMemoryReadSynapseFloat(_TapModel):
    q_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
    a_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, float)
    memory: np.ndarray = LavaPyType(np.ndarray, float)

    def __init__(self, proc_params):
        super().__init__(proc_params)
        p = self.proc_params
        self.scale = float(p["scale"])
        self.size = int(p["v_channels"]) * int(p["tokens"])
        self.q_start, self.q_len, self.fire = int(p["q_start"]), int(p["q_len"]), int(p["fire"])
        self.n = int(p["steps"]) if p.get("slots") else None
        self.acc = None  # the rows read so far in the current window
        self.out = {}  # macro-step -> scaled sum, sent at its fire step
        import torch  # noqa: PLC0415

        # one OS process per Lava process: no thread oversubscription. Set here, in the child that
        # builds the model, not in read_rows: a caller of that pure function keeps its thread count.
        torch.set_num_threads(1)

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
                y = read_rows(x, np.ascontiguousarray(mem))
                self.acc = y if self.acc is None else self.acc + y
            if j == self.q_len - 1:
                self.out[idx] = np.zeros(self.size) if self.acc is None else self.acc * self.scale
        if not self._active("a_out", k):
            return
        fw = self._win(k, self.fire, 1)
        self._send("a_out", self.out.pop(fw[0]) if fw is not None and fw[0] in self.out else np.zeros(self.size))


register_model(MemoryReadSynapse, PyMemoryReadSynapseFloat)
