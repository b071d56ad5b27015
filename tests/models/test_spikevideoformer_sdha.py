"""Spike-driven Hamming attention (SDHA, SpikeVideoFormer Eq. 10) and the dot-product spike
attention (Eq. 3) against brute force: explicit Hamming distances between every query and key of a
token group, summed over the values, in int64. Exact comparisons throughout (the modules' sums are
integers below 2**24, multiplied once by the scale)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from spikedeploy.models.neurons import BinaryLIF
from spikedeploy.models.spikevideoformer_blocks import TOKEN_MODES, SpikeDotAttention, SpikeHammingAttention


def _spikes(shape, rate, seed):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(shape, generator=g) < rate).to(torch.float64)


def _groups(T, N, heads, mode):
    """For each head, the token groups ``[(t, n), ...]`` of one sample under ``mode``."""
    out = []
    for h in range(heads):
        m = mode if mode != "factorized" else ("spatial" if h < heads // 2 else "temporal")
        if m == "joint":
            out.append([[(t, n) for t in range(T) for n in range(N)]])
        elif m == "spatial":
            out.append([[(t, n) for n in range(N)] for t in range(T)])
        else:
            out.append([[(t, n) for t in range(T)] for n in range(N)])
    return out


def brute_force(q, k, v, heads, mode, score="hamming"):
    """``sum_j s(q_i, k_j) v_j`` per token i of every group, s = d - 2 Hamming(q_i, k_j) (hamming)
    or q_i . k_j (dot); int64 ``[T, B, Cv, N]`` (no scale)."""
    q, k, v = (x.numpy().astype(np.int64) for x in (q, k, v))
    T, B, C, N = q.shape
    Cv = v.shape[2]
    d, dv = C // heads, Cv // heads
    out = np.zeros((T, B, Cv, N), np.int64)
    for b in range(B):
        for h, groups in enumerate(_groups(T, N, heads, mode)):
            qs, ks, vs = slice(h * d, (h + 1) * d), slice(h * d, (h + 1) * d), slice(h * dv, (h + 1) * dv)
            for group in groups:
                for (ti, ni) in group:
                    qi = q[ti, b, qs, ni]
                    acc = np.zeros(dv, np.int64)
                    for (tj, nj) in group:
                        kj = k[tj, b, ks, nj]
                        if score == "hamming":
                            s = d - 2 * int(np.sum(qi != kj))
                        else:
                            s = int(np.dot(qi, kj))
                        acc += s * v[tj, b, vs, nj]
                    out[ti, b, vs, ni] = acc
    return out


def test_hamming_identity():
    """(2q - 1).(2k - 1) = d - 2 Hamming(q, k) for every pair of binary vectors of length d = 6,
    and 1/2 + (2q - 1).(2k - 1) / (2d) is the normalized Hamming similarity of seed Eq. 6."""
    d = 6
    vecs = np.array(list(itertools.product((0, 1), repeat=d)), dtype=np.int64)  # all 64 vectors
    pm = 2 * vecs - 1
    dots = pm @ pm.T
    hamming = (vecs[:, None, :] != vecs[None, :, :]).sum(-1)
    assert np.array_equal(dots, d - 2 * hamming)
    # f_H = 1 - Hamming / d = 1/2 + dots / (2d), compared in integers (times 2d)
    assert np.array_equal(2 * d - 2 * hamming, d + dots)
    # Fig. 2 of the seed: an empty query scores every key 0 under the dot product, not under Hamming
    empty = np.zeros(d, np.int64)
    keys = vecs[[1, 6, 21, 63]]
    assert np.all(keys @ empty == 0)
    assert len(set((2 * keys - 1) @ (2 * empty - 1))) == 4


@pytest.mark.parametrize("mode", TOKEN_MODES)
@pytest.mark.parametrize("dims", [(8, 2), (10, 2)], ids=["d4", "d5"])
def test_sdha_equals_brute_force(mode, dims):
    C, heads = dims
    T, B, N, Cv = 3, 2, 5, 2 * heads * 3
    q, k, v = _spikes((T, B, C, N), 0.4, 1), _spikes((T, B, C, N), 0.5, 2), _spikes((T, B, Cv, N), 0.3, 3)
    attn = SpikeHammingAttention(heads, mode)
    out = attn(q, k, v)
    expect = torch.from_numpy(brute_force(q, k, v, heads, mode)).to(torch.float64)
    d = C // heads
    # the module multiplies the integer bracket by 1/(2d) once: bit for bit the same float64
    assert torch.equal(out, expect * (1.0 / (2 * d)))
    if d & (d - 1) == 0:  # 1/(2d) a power of two: the scaled output times 2d is the integer again
        assert torch.equal(out * (2 * d), expect)
    assert expect.abs().max() > 0


@pytest.mark.parametrize("mode", TOKEN_MODES)
def test_linear_and_quadratic_orders_agree(mode):
    """Q'(K'^T V) (linear in the tokens) and (Q'K'^T)V (quadratic) are equal exactly in float32."""
    T, B, C, N, heads = 4, 2, 16, 9, 4
    q, k, v = (_spikes((T, B, C, N), r, s).float() for r, s in ((0.3, 4), (0.6, 5), (0.5, 6)))
    lin = SpikeHammingAttention(heads, mode, order="linear")(q, k, v)
    quad = SpikeHammingAttention(heads, mode, order="quadratic")(q, k, v)
    assert torch.equal(lin, quad)
    assert lin.dtype == torch.float32
    expect = torch.from_numpy(brute_force(q.double(), k.double(), v.double(), heads, mode)).float() / (2 * C // heads)
    assert torch.equal(lin, expect)


@pytest.mark.parametrize("mode", ["joint", "spatial", "factorized"])
def test_dot_attention_equals_brute_force(mode):
    T, B, C, N, heads = 3, 2, 8, 4, 2
    q, k, v = _spikes((T, B, C, N), 0.5, 7), _spikes((T, B, C, N), 0.5, 8), _spikes((T, B, C, N), 0.5, 9)
    attn = SpikeDotAttention(heads, mode, scale=0.125)
    expect = torch.from_numpy(brute_force(q, k, v, heads, mode, score="dot")).to(torch.float64) * 0.125
    assert torch.equal(attn(q, k, v), expect)
    quad = SpikeDotAttention(heads, mode, order="quadratic", scale=0.125)(q, k, v)
    assert torch.equal(quad, expect)


def test_joint_attention_mixes_frames_and_spatial_does_not():
    """Joint SDHA: every frame's output depends on every frame's keys/values; spatial: only its own."""
    T, B, C, N, heads = 4, 1, 8, 6, 2
    q, k, v = _spikes((T, B, C, N), 0.5, 10), _spikes((T, B, C, N), 0.5, 11), _spikes((T, B, C, N), 0.5, 12)
    k2, v2 = k.clone(), v.clone()
    k2[3], v2[3] = 1 - k2[3], 1 - v2[3]  # change the last frame only
    for mode, frame0_changes in (("joint", True), ("spatial", False), ("temporal", True)):
        a = SpikeHammingAttention(heads, mode)
        changed = not torch.equal(a(q, k, v)[:3], a(q, k2, v2)[:3])
        assert changed == frame0_changes, mode


def test_scale_folds_into_the_next_neurons_threshold():
    """The binary LIF is homogeneous: spikes of SN(scale * X) with threshold u_th equal the spikes of
    SN(X) with threshold u_th / scale (the IR's fold of the 1/(2d) scale), here exactly for d = 4
    and d = 8 (powers of two, so every product is exact) over 16 frames."""
    T, B, C, N, heads = 16, 2, 16, 6, 2
    q, k, v = _spikes((T, B, C, N), 0.5, 13), _spikes((T, B, C, N), 0.4, 14), _spikes((T, B, C, N), 0.4, 15)
    for hh in (heads, 2 * heads):  # d = 8 and d = 4
        attn = SpikeHammingAttention(hh, "joint")
        scaled = attn(q, k, v)
        d = C // hh
        integer = scaled * (2 * d)
        assert torch.equal(integer, torch.round(integer))
        s1 = BinaryLIF(beta=0.5, threshold=1.0)(scaled)
        s2 = BinaryLIF(beta=0.5, threshold=1.0 * 2 * d)(integer)
        assert torch.equal(s1, s2)
        assert 0 < float(s1.mean()) < 1


def test_bad_inputs_are_refused():
    a = SpikeHammingAttention(2)
    with pytest.raises(ValueError, match="divisible by num_heads"):
        a(torch.zeros(1, 1, 3, 4), torch.zeros(1, 1, 3, 4), torch.zeros(1, 1, 2, 4))
    with pytest.raises(ValueError, match="expected q, k"):
        a(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 5), torch.zeros(1, 1, 4, 4))
    with pytest.raises(ValueError, match="odd"):
        SpikeHammingAttention(3, "factorized")
    with pytest.raises(ValueError, match="tokens must be"):
        SpikeHammingAttention(2, "diagonal")
