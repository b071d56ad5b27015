"""The arithmetic of the Lava process models, as pure functions.

One arithmetic, two placements: each process model of :mod:`spikedeploy.runtimes.lava_procs`
keeps only the clock (its windows, the macro-step schedule), its ports and its state, and calls
one of these functions for every number it computes. A per-layer run (one Lava process per model)
and a partitioned run (:mod:`spikedeploy.runtimes.lava_partition`, the same model classes hosted
in one Lava process) therefore compute with the same functions and cannot drift; tests compare
each function with the reference rule it implements (``tests/runtimes/test_lava_kernels.py``).

Every function here is pure: arrays (numpy; a kernel may take a float64 torch tensor it was given)
in, a new numpy array out, the inputs unchanged, no global state. In particular no kernel sets
PyTorch's thread count: a process model that calls a torch kernel sets it once in its
``__init__``, which runs in the OS process that hosts the model (Lava's forked child), so a
caller of a kernel in the main process keeps its own thread pool. This module imports no Lava.

Layouts: flat ports are row-major; attention values are ``[C, N]`` (channels, tokens), split into
heads as :class:`spikedeploy.reference.AttentionRule` does (contiguous channel groups:
``[H, N, C/H]``).
"""

from __future__ import annotations

from typing import Dict, Optional, Tuple

import numpy as np

__all__ = ["quantize", "neuron_step", "neuron_output", "sparse_product", "matmul_product", "conv_product",
           "heads", "merge_heads", "kv_pairs", "attention_read", "read_rows", "scaled_memory", "softmax_over_steps",
           "template_gate_sum", "exact_int64", "fixed_saturate", "fixed_decay", "fixed_round", "fixed_neuron_step",
           "fixed_sparse_product", "fixed_matmul_product", "fixed_conv_product", "fixed_attention_read",
           "fixed_read_rows", "st_pairs", "st_memory", "st_read", "st_output"]


# ---------------------------------------------------------------------------------------------
# neurons (numpy float64 mirror of spikedeploy.neurons, one macro-step at a time)
# ---------------------------------------------------------------------------------------------


def quantize(m: np.ndarray, d, rounding: str) -> np.ndarray:
    """``round(clamp(m, 0, d))``: half to even (``np.round``, like ``torch.round``) or, with
    ``rounding="half_up"``, ``floor(c + 0.5)``."""
    c = np.minimum(np.maximum(m, 0.0), d)
    return np.floor(c + 0.5) if rounding == "half_up" else np.round(c)


def _carry_leak(leak, where: str):
    """The leak of a sample's first step when it continues a carried state: the neuron's float
    leak; a per-step leak list has none (refused)."""
    if isinstance(leak, (list, tuple)):
        raise ValueError(f"{where}: a neuron with per-step leaks cannot carry its state across calls")
    return leak


def neuron_step(params: dict, x: np.ndarray, t: int, state: Dict[str, np.ndarray],
                start: Optional[Dict[str, np.ndarray]] = None) -> Tuple[np.ndarray, Dict[str, np.ndarray]]:
    """One macro-step of the neuron described by ``params`` (the exporter's neuron rule: ``kind``
    ``integer_lif`` / ``dynamic_integer_lif`` / ``binary_lif`` and its constants) on the
    accumulated input current ``x``; ``t`` is the macro-step within the sample (0 starts from a
    reset state; ``state`` is then not read). Returns ``(q, new_state)``: the integer output (or
    the binary LIF's spikes) and the state the next macro-step needs. ``state`` is not changed. The
    formulas and their operation order are those of :mod:`spikedeploy.neurons`.

    ``start``: the state carried from the previous call (``{"m", "q"}``, binary ``{"u"}``), used at
    ``t == 0`` instead of the reset state (:class:`spikedeploy.neurons.NeuronState`: ``m_0 = (m - q /
    reset_norm) * leak + x``); a stateless neuron (leak None) ignores it."""
    kind = params["kind"]
    if kind == "binary_lif":
        u = (np.zeros_like(x) if start is None else start["u"]) if t == 0 else state["u"]
        h = params["beta"] * u + x
        s = ((h - params["threshold"]) > 0).astype(np.float64)
        return s, {"u": h - params["threshold"] * s}
    if kind == "dynamic_integer_lif":
        d_init = params["d_init"]
        mu = np.mean(x)
        alpha = 1.0 / (1.0 + np.exp(-(params["gate_w"] * mu + params["gate_b"])))
        d = float(np.clip(np.round(2.0 * alpha * d_init), 1.0, 2.0 * d_init))
        leak, reset_norm = params["leak"], 1.0
    else:  # integer_lif
        d = float(params["d"])
        leak, reset_norm = params["leak"], params["reset_norm"]
    if leak is not None and t == 0 and start is not None:
        m = (start["m"] - start["q"] / reset_norm) * _carry_leak(leak, "neuron") + x
    elif leak is None or t == 0:
        m = x
    else:
        lam = leak[t - 1] if isinstance(leak, (list, tuple)) else leak
        m = (state["m"] - state["q"] / reset_norm) * lam + x
    q = quantize(m, d, params["rounding"])
    return q, {"m": m, "q": q}


def neuron_output(q: np.ndarray, j: int, graded: bool) -> np.ndarray:
    """What a neuron of output ``q`` sends in sub-step ``j`` of its output window: binary, the
    thermometer code (a unit spike in each of the first q sub-steps); graded, one event carrying q
    in sub-step 0 and nothing after."""
    if graded:
        return np.array(q, dtype=np.float64) if j == 0 else np.zeros(np.shape(q))
    return (q > j).astype(np.float64)


# ---------------------------------------------------------------------------------------------
# synapses
# ---------------------------------------------------------------------------------------------


def sparse_product(matrix, x: np.ndarray, binary: bool) -> np.ndarray:
    """Lava ``Sparse`` in floating point (``PySparseModelFloat``): for 0-bit messages (unit
    spikes) the sum of the columns of the spiking inputs, ``W[:, s.astype(bool)].sum(axis=1)``;
    for graded messages ``W.dot(x)``. ``matrix`` is a ``scipy.sparse`` CSR matrix."""
    if binary:
        return np.asarray(matrix[:, np.asarray(x).astype(bool)].sum(axis=1)).reshape(-1)
    return np.asarray(matrix.dot(x)).reshape(-1)


def matmul_product(weight: np.ndarray, x: np.ndarray, rows: int) -> np.ndarray:
    """A dense layer on the last axis: ``y[r] = W @ x[r]`` for the ``rows`` rows of the flat ``x``
    (float64)."""
    return (np.asarray(x, dtype=np.float64).reshape(rows, -1) @ weight.T).reshape(-1)


def _torch_float64(a):
    import torch  # noqa: PLC0415 - only the kernels that convolve need torch

    if isinstance(a, torch.Tensor):
        return a
    return torch.from_numpy(np.array(a, dtype=np.float64))  # a writable copy (torch refuses read-only memory)


def conv_product(x: np.ndarray, kernel, in_shape, stride, padding, dilation, groups: int) -> np.ndarray:
    """A 2-D convolution synapse: PyTorch's float64 ``conv2d`` (cross-correlation, zero padding,
    no bias) of the flat input ``x`` of shape ``in_shape`` (C, H, W) with ``kernel`` ``[C_out,
    C/groups, kh, kw]`` (an array, or a float64 torch tensor a model keeps to avoid converting it
    every step), flattened row-major. The reference executor's arithmetic
    (:class:`spikedeploy.reference.ConvRule`)."""
    import torch  # noqa: PLC0415

    a = np.asarray(x, dtype=np.float64)
    if not a.flags.writeable:  # torch.from_numpy warns on read-only memory
        a = a.copy()
    xt = torch.from_numpy(a.reshape((1,) + tuple(in_shape)))
    y = torch.nn.functional.conv2d(xt, _torch_float64(kernel), None, tuple(stride), tuple(padding), tuple(dilation),
                                   int(groups))
    return y.reshape(-1).numpy().copy()


# ---------------------------------------------------------------------------------------------
# spike x spike products: attention, memory write and read
# ---------------------------------------------------------------------------------------------


def heads(x: np.ndarray, h: int, c: int, n: int) -> np.ndarray:
    """``[C, N]`` (flat) -> ``[H, N, C/H]``: channels split into ``h`` contiguous groups, as
    :meth:`spikedeploy.reference.AttentionRule._heads` (a view when ``x`` is contiguous)."""
    return np.asarray(x).reshape(h, c // h, n).transpose(0, 2, 1)


def merge_heads(y: np.ndarray) -> np.ndarray:
    """``[H, N, Cv/H]`` -> flat ``[Cv, N]`` (the inverse layout of :func:`heads`)."""
    hh, n, cv = y.shape
    return y.transpose(0, 2, 1).reshape(hh * cv * n)


def kv_pairs(k: np.ndarray, v: np.ndarray, ck: np.ndarray, cv: np.ndarray, h: int
             ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One sub-step of the spike-driven memory write ``kv = K^T V`` per head: the k spikes ``k``
    ``[C, N]`` and v spikes ``v`` ``[Cv, N]`` of this sub-step (unit spikes, or graded counts)
    pair with each other and with the spikes of the earlier sub-steps of the window (``ck`` ``[H,
    N, C/H]``, ``cv`` ``[H, N, Cv/H]``: their sums so far). Returns ``(inc, ck', cv')``: the memory
    increment ``[H, C/H, Cv/H]`` (the pairs k now x v before or now, plus k before x v now: exact
    integer counts) and the updated sums. Over a window, the increments add up to ``K^T V`` of the
    window's counts (:class:`spikedeploy.reference.MemoryWriteRule` before its scale)."""
    n = ck.shape[1]
    kh, vh = heads(k, h, h * ck.shape[2], n), heads(v, h, h * cv.shape[2], n)
    inc = kh.transpose(0, 2, 1) @ (cv + vh) + ck.transpose(0, 2, 1) @ vh
    return inc, ck + kh, cv + vh


def attention_read(q: np.ndarray, kv: np.ndarray, scale: float) -> np.ndarray:
    """The q spikes ``q`` ``[C, N]`` of one sub-step read their rows of the memory ``kv`` ``[H,
    C/H, Cv/H]``: ``scale * merge_heads(Q_h @ kv)`` ``[Cv, N]`` flat, float64 (numpy)."""
    hh, c, _ = kv.shape
    n = np.size(q) // (hh * c)
    y = heads(np.asarray(q, dtype=np.float64), hh, hh * c, n) @ kv  # [H, N, Cv/H]
    return merge_heads(y * scale)


def read_rows(x: np.ndarray, memory: np.ndarray) -> np.ndarray:
    """The memory rows read by the events ``x`` (q ``[C, N]`` flattened row-major: unit spikes,
    graded counts or real values) of one step: ``merge_heads(Q_h @ memory[h])`` ``[Cv*N]`` for
    ``memory`` ``[H, C/H, Cv/H]``, unscaled, float64. Only the tokens with at least one non-zero
    entry are read (the others read nothing: exactly zero); the product is PyTorch's float64
    ``matmul`` on the reference's head layout (:class:`spikedeploy.reference.MemoryReadRule`)."""
    import torch  # noqa: PLC0415 - a kernel process runs in a forked child that already has torch

    H, c, cv = memory.shape
    n = x.size // (H * c)
    q = np.asarray(x, dtype=np.float64).reshape(H * c, n)
    active = np.flatnonzero(q.any(axis=0))
    out = np.zeros((H, n, cv))
    if active.size:
        qh = q[:, active].reshape(H, c, active.size).transpose(0, 2, 1)  # [H, n_active, C/H]
        y = torch.from_numpy(np.ascontiguousarray(qh)) @ torch.from_numpy(np.ascontiguousarray(memory))
        out[:, active, :] = y.numpy()
    return out.transpose(0, 2, 1).reshape(H * cv * n)


def scaled_memory(kv: np.ndarray, scale: float) -> np.ndarray:
    """A completed memory as it is sent: ``scale * kv`` flat (``kv`` itself when the scale is 1,
    as :class:`spikedeploy.reference.MemoryWriteRule`), a new array."""
    return (kv * scale if scale != 1.0 else np.array(kv, dtype=np.float64)).reshape(-1)


# ---------------------------------------------------------------------------------------------
# space-time attention (SpikeVideoFormer's SDHA and dot product over token groups)
# ---------------------------------------------------------------------------------------------

def st_blocks(groupings) -> Tuple[Tuple[str, int, int], ...]:
    """``((grouping, first head, last head + 1), ...)``: one block of consecutive heads per grouping
    of the per-head ``groupings`` (:meth:`spikedeploy.ir.ops.SpaceTimeAttention.head_groupings`),
    as :func:`spikedeploy.reference.head_blocks` splits them (the process's layout, not arithmetic:
    not in ``__all__``)."""
    kinds = tuple(groupings)
    out, start = [], 0
    for i in range(1, len(kinds) + 1):
        if i == len(kinds) or kinds[i] != kinds[start]:
            out.append((kinds[start], start, i))
            start = i
    return tuple(out)


def st_pairs(k: np.ndarray, v: np.ndarray, ck: np.ndarray, cv: np.ndarray, grouping: str
             ) -> Tuple[np.ndarray, np.ndarray]:
    """One sub-step of a space-time attention's memory write for one head block: the k spikes
    ``k`` ``[h, N, d]`` and v spikes ``v`` ``[h, N, dv]`` of this sub-step (unit spikes or graded
    counts, head layout) pair with each other and with the earlier sub-steps of the same
    macro-step window (``ck``, ``cv``: their sums so far), on the same token only. Returns
    ``(kv, vs)``, the increments of the group's pair counts and v column counts::

        spatial, joint:  kv [h, 1, d, dv] = sum_n k_n^T (cv_n + v_n) + ck_n^T v_n;   vs [h, 1, dv] = sum_n v_n
        temporal:        kv [h, N, d, dv] per token n (one group per position);        vs [h, N, dv] = v

    Over a group's windows the increments add up to ``K_G^T V_G`` and ``1^T V_G`` of its counts
    (exact integers): :class:`spikedeploy.reference.SpaceTimeAttentionRule`'s ``kv`` and
    ``vg.sum(-2)``. Which windows form one group (one step: spatial; the sample's T steps: joint,
    temporal) is the caller's clock. The dtype follows the inputs (float64; int64 in fixed point:
    the same integers)."""
    k, v = np.asarray(k), np.asarray(v)
    later = cv + v
    if grouping == "temporal":
        kv = np.einsum("hnc,hne->hnce", k, later) + np.einsum("hnc,hne->hnce", ck, v)
        return kv, v.copy()
    kv = k.transpose(0, 2, 1) @ later + np.asarray(ck).transpose(0, 2, 1) @ v
    return kv[:, None], v.sum(axis=1)[:, None]


def st_memory(kv: np.ndarray, vs: np.ndarray, score: str) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    """A completed group's memory and the term its q reads subtract: ``(M, 1^T M)`` with
    ``M = 2 K^T V - 1^T V`` (``score="hamming"``: ``(2K - 1)^T V``, the column counts subtracted
    from every row) and ``1^T M`` its column sums ``[h, G, dv]`` (what the ``-1`` of ``(2Q - 1)``
    subtracts), or ``(K^T V, None)`` (``"dot"``). ``kv`` ``[h, G, d, dv]``, ``vs`` ``[h, G, dv]``;
    new arrays of their dtype."""
    if score == "dot":
        return np.array(kv), None
    m = 2 * np.asarray(kv) - np.asarray(vs)[:, :, None, :]
    return m, m.sum(axis=2)


def st_read(q: np.ndarray, memory: np.ndarray, grouping: str) -> np.ndarray:
    """The q spikes ``q`` ``[h, N, d]`` of one sub-step (or their counts) read their group's memory
    rows: ``[h, N, dv]`` = ``q_n @ M`` (spatial, joint: ``memory`` ``[h, 1, d, dv]``) or
    ``q_n @ M_n`` (temporal: ``[h, N, d, dv]``, one memory per position)."""
    q = np.asarray(q)
    if grouping == "temporal":
        return np.einsum("hnc,hnce->hne", q, memory)
    return q @ memory[:, 0]


def st_output(acc: np.ndarray, offset: Optional[np.ndarray], scale: float) -> np.ndarray:
    """A token's result from its rows read over the q window (``acc`` ``[h, N, dv]``):
    ``Y = 2 acc - 1^T M`` (Hamming; ``offset`` ``[h, 1 or N, dv]``, once per macro-step) or ``acc``
    (dot), times ``scale`` once when it is not 1 -- the reference's order (integers until the scale;
    fixed point: ``scale`` is the graph's integer factor and everything stays int64)."""
    y = np.asarray(acc) if offset is None else 2 * np.asarray(acc) - offset
    return y * scale if scale != 1 else np.array(y)


# ---------------------------------------------------------------------------------------------
# the template gate (SpikeTrack T = 3)
# ---------------------------------------------------------------------------------------------


def softmax_over_steps(logits: np.ndarray) -> np.ndarray:
    """HOST ``GateSoftmax`` of one sample: the gate logits ``[T, C]`` of its T macro-steps ->
    ``w[t, c] = exp(x[t, c]) / sum_u exp(x[u, c])`` flat ``[T*C]``, computed as
    :class:`spikedeploy.reference.GateSoftmaxRule` does (``F.softmax`` on the ``[B, C, T]``
    layout, float64)."""
    import torch  # noqa: PLC0415

    z = torch.from_numpy(np.array(logits, dtype=np.float64)[:, None, :])  # [T, B=1, C], as the reference's value
    w = torch.nn.functional.softmax(z.permute(1, 2, 0).contiguous(), dim=-1).permute(2, 0, 1)
    return w.reshape(-1).numpy().copy()


def template_gate_sum(xs: np.ndarray, w: np.ndarray, channels: int, scale: float, graded: bool) -> np.ndarray:
    """``TemplateGate`` of one sample: ``y = scale * sum_t w[t, c] * x[t, c, ...]`` with the spikes
    ``xs`` ``[T, in_len, size]`` of its T macro-steps per sub-step (graded: sub-step 0 carries the
    counts) and the weights ``w`` (``[T*C]`` or ``[T, C]``), summed in the reference's order
    (:class:`spikedeploy.reference.TemplateGateRule`: per sub-step the weighted sum over t, then
    the sum over sub-steps, then the scale). Returns ``[size]`` flat."""
    import torch  # noqa: PLC0415

    from spikedeploy.reference import TemplateGateRule  # the reference's arithmetic

    xs = np.asarray(xs, dtype=np.float64)
    n, in_len, size = xs.shape
    wt = torch.from_numpy(np.array(w, dtype=np.float64).reshape(n, 1, channels))
    r = (size // channels,)
    acc = None
    for j in range(1 if graded else in_len):
        s_j = torch.from_numpy(np.ascontiguousarray(xs[:, j]).reshape((n, 1, channels) + r))
        term = TemplateGateRule._weighted_sum(s_j, wt)
        acc = term if acc is None else acc + term
    if scale != 1.0:
        acc = acc * scale
    return acc.reshape(-1).numpy().copy()


# ---------------------------------------------------------------------------------------------
# fixed point (select_tag "fixed_pt"): int64 throughout, written here independently of
# spikedeploy.neurons (tests compare the two)
# ---------------------------------------------------------------------------------------------

#: float64 holds every integer below 2**53 exactly: a float64 kernel on integer operands whose
#: every partial sum stays below this bound computes the exact integer result in any order
FLOAT_EXACT = 2 ** 53


def exact_int64(a, what: str) -> np.ndarray:
    """``a`` as a new int64 array, refusing (``ValueError`` naming ``what``) any value that is not
    an exact integer of magnitude below 2**53: a fixed-point run never rounds silently."""
    x = np.asarray(a)
    if x.dtype.kind in "iub":
        return x.astype(np.int64)  # a new array (astype copies)
    if x.dtype.kind != "f":
        raise ValueError(f"{what}: expected integers, got dtype {x.dtype}")
    if x.size:
        bad = ~np.isfinite(x) | (x != np.floor(x)) | (np.abs(x) >= FLOAT_EXACT)
        if bad.any():
            raise ValueError(f"{what}: {int(bad.sum())} value(s) are not exact integers below 2**53 (e.g. "
                             f"{x[bad].flat[0]!r}); a fixed-point run takes quantized data only "
                             "(spikedeploy.passes.quantize)")
    return x.astype(np.int64)


def fixed_saturate(v: np.ndarray, bits: int) -> Tuple[np.ndarray, int]:
    """Clamp the int64 state ``v`` to the symmetric ``bits``-bit range ``[-(2**(bits-1) - 1),
    2**(bits-1) - 1]``; returns the clamped state and how many elements were clamped (counted,
    never wrapped)."""
    top = (1 << (int(bits) - 1)) - 1
    over = np.abs(v) > top
    n = int(np.count_nonzero(over))
    return (np.clip(v, -top, top) if n else v.copy()), n


def fixed_decay(p: np.ndarray, leak: int) -> np.ndarray:
    """Loihi's decay by a 12-bit fraction ``leak`` / 4096, truncated toward zero:
    ``sign(p) * ((|p| * leak) >> 12)``."""
    mag = (np.abs(p) * int(leak)) >> 12
    return np.where(p < 0, -mag, mag)


def fixed_round(v: np.ndarray, unit: int, rounding: str) -> np.ndarray:
    """``R(v / unit)`` in integers for a power-of-two ``unit`` >= 2: floor division, then the
    remainder decides (above half: up; exactly half: up for ``half_up``, to the even neighbour
    for ``half_even``)."""
    base, rem = np.divmod(v, int(unit))  # floor division: rem in [0, unit)
    half = int(unit) // 2
    up = rem > half
    tie = rem == half
    if rounding == "half_up":
        up = up | tie
    else:
        up = up | (tie & (base % 2 == 1))
    return base + up.astype(np.int64)


def fixed_neuron_step(params: dict, x: np.ndarray, t: int, state: Dict[str, np.ndarray],
                      start: Optional[Dict[str, np.ndarray]] = None) -> Tuple[np.ndarray, Dict[str, np.ndarray], int]:
    """One macro-step of a fixed-point neuron (``kind`` ``fixed_integer_lif``,
    ``fixed_dynamic_integer_lif`` (its D from :func:`fixed_dynamic_limit`) or ``fixed_binary_lif``,
    the constants of :class:`spikedeploy.ir.ops.FixedIntegerLIF` /
    :class:`~spikedeploy.ir.ops.FixedBinaryLIF`) on the int64 input current ``x`` (the window's
    sum plus the bias); ``t`` is the macro-step within the sample (0: from a reset state).
    Returns ``(q, new_state, saturated)``: the int64 count (or spike), the state for the next
    macro-step and the number of state elements clamped to ``state_bits`` in this step.
    ``start``: the carried integer state (``{"v", "q"}``, binary ``{"u"}``) used at ``t == 0``
    (:func:`spikedeploy.neurons.fixed_integer_lif`'s ``state``)."""
    x = np.asarray(x)
    if x.dtype != np.int64:
        x = exact_int64(x, "fixed-point neuron input")
    bits = int(params["state_bits"])
    if params["kind"] == "fixed_binary_lif":
        if t == 0:
            carried = np.zeros_like(x) if start is None else fixed_decay(start["u"], params["beta"])
        else:
            carried = fixed_decay(state["u"], params["beta"])
        h, sat = fixed_saturate(carried + x, bits)
        s = (h > int(params["threshold"])).astype(np.int64)
        return s, {"u": h - int(params["threshold"]) * s}, sat
    d = int(params["d"]) if params["kind"] == "fixed_integer_lif" else fixed_dynamic_limit(params, x)
    leak = params["leak"]
    if leak is not None and t == 0 and start is not None:
        v = fixed_decay(start["v"] - int(params["reset"]) * start["q"], _carry_leak(leak, "fixed-point neuron")) + x
    elif leak is None or t == 0:
        v = x
    else:
        lam = leak[t - 1] if isinstance(leak, (list, tuple)) else leak
        v = fixed_decay(state["v"] - int(params["reset"]) * state["q"], lam) + x
    v, sat = fixed_saturate(v, bits)
    q = np.clip(fixed_round(v, params["unit"], params["rounding"]), 0, d)
    return q, {"v": v, "q": q}, sat


#: a fixed DI-LIF's input sum must stay below this bound (the thresholds' range, 2**53)
DILIF_SUM_LIMIT = 1 << 53


def fixed_dynamic_limit(params: dict, x: np.ndarray) -> int:
    """The limit D of one macro-step of a fixed DI-LIF layer (``kind`` ``fixed_dynamic_integer_lif``,
    :class:`spikedeploy.ir.ops.FixedDynamicIntegerLIF`) from its int64 input current ``x`` (one
    sample: the whole layer): ``S = sum(x)`` exactly in int64, ``D = 1 + #{k : sign * S >=
    thresholds[k - 2]}`` (integer comparisons, as an accumulator and a compare on Loihi: no
    sigmoid). A sum that could leave int64 raises ``ValueError``."""
    xi = np.asarray(x, dtype=np.int64)
    if xi.size and int(np.abs(xi).max()) * xi.size >= DILIF_SUM_LIMIT:
        raise ValueError("fixed-point DI-LIF: the input sum may exceed 2**53 (the thresholds' range)")
    s = int(xi.sum()) * int(params["sign"])
    return 1 + sum(1 for th in params["thresholds"] if s >= int(th))


def fixed_sparse_product(matrix, x: np.ndarray) -> np.ndarray:
    """A ``Sparse`` synapse in integers: ``W @ x`` with ``W`` an int64 CSR matrix and ``x`` int64
    (unit spikes 0/1 or graded integers alike: for 0/1 inputs this is Lava's sum of the spiking
    columns). Exact: int64 has no rounding (the values are far below 2**63)."""
    return np.asarray(matrix.dot(np.asarray(x, dtype=np.int64))).reshape(-1).astype(np.int64)


def fixed_matmul_product(weight: np.ndarray, x: np.ndarray, rows: int) -> np.ndarray:
    """``y[r] = W @ x[r]`` per row in int64 (``weight`` int64)."""
    return (np.asarray(x, dtype=np.int64).reshape(rows, -1) @ weight.T).reshape(-1)


def fixed_conv_product(x: np.ndarray, kernel, in_shape, stride, padding, dilation, groups: int,
                       bound: float) -> np.ndarray:
    """A convolution synapse on integers: PyTorch's float64 ``conv2d`` (:func:`conv_product`) on the
    int64 input, whose every partial sum is an integer of magnitude at most ``max|x| * bound``
    (``bound``: the kernel's largest absolute row sum, ``sum |w|`` over one output's taps); that
    is checked to be below 2**53, where float64 is exact in any summation order, so the result is
    the exact integer convolution (returned as int64). A larger one raises ``ValueError``."""
    xi = np.asarray(x)
    peak = float(np.abs(xi).max()) if xi.size else 0.0
    if peak * float(bound) >= FLOAT_EXACT:
        raise ValueError(f"fixed-point convolution: partial sums up to {peak * bound:.3g} exceed 2**53, where "
                         "float64 is no longer exact")
    return conv_product(xi.astype(np.float64), kernel, in_shape, stride, padding, dilation, groups).astype(np.int64)


def fixed_attention_read(q: np.ndarray, kv: np.ndarray, scale: int) -> np.ndarray:
    """:func:`attention_read` in int64: ``scale * merge_heads(Q_h @ kv)`` (``kv`` int64 pair
    counts, ``scale`` the integer factor of the fixed-point graph)."""
    hh, c, _ = kv.shape
    n = np.size(q) // (hh * c)
    y = heads(np.asarray(q, dtype=np.int64), hh, hh * c, n) @ kv
    return merge_heads(y * int(scale))


def fixed_read_rows(x: np.ndarray, memory: np.ndarray) -> np.ndarray:
    """:func:`read_rows` in int64 (``memory`` ``[H, C/H, Cv/H]`` int64 mantissas): the rows read
    by the tokens with events, unscaled."""
    H, c, cv = memory.shape
    n = np.size(x) // (H * c)
    q = np.asarray(x, dtype=np.int64).reshape(H * c, n)
    active = np.flatnonzero(q.any(axis=0))
    out = np.zeros((H, n, cv), dtype=np.int64)
    if active.size:
        qh = q[:, active].reshape(H, c, active.size).transpose(0, 2, 1)  # [H, n_active, C/H]
        out[:, active, :] = qh @ memory
    return out.transpose(0, 2, 1).reshape(H * cv * n)
