"""spikedeploy.neurons against hand-written loops of the design-notes formulas (exact equality)."""

import math

import pytest
import torch

from spikedeploy import neurons as sem


def _round_half_even(v: float) -> float:
    return float(round(v))  # Python's round() is round-half-to-even


def _round_half_up(v: float) -> float:
    return float(math.floor(v + 0.5))


def _clamp(v, lo, hi):
    return min(max(v, lo), hi)


def _rand(*shape, seed=0, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, generator=g, dtype=torch.float64) * scale + 1.0)


def _loop(x, step):
    """Apply ``step(t, index, x_value) -> q`` elementwise over [T, ...] in Python floats."""
    T = x.shape[0]
    flat = x.reshape(T, -1)
    out = torch.zeros_like(flat)
    for i in range(flat.shape[1]):
        state = {}
        for t in range(T):
            out[t, i] = step(t, i, float(flat[t, i]), state)
    return out.reshape(x.shape)


def _assert_fires(q):
    assert (q > 0).any(), "test input produced no spikes"


@pytest.mark.parametrize("d", [1, 4, 6])
def test_multispike_matches_formula(d):
    x = _rand(3, 2, 5, seed=d)
    tr = sem.multispike(x, d=d)
    ref = _loop(x, lambda t, i, v, s: _round_half_even(_clamp(v, 0, d)))
    _assert_fires(tr.q)
    assert torch.equal(tr.q, ref)
    assert torch.equal(tr.value, ref / d)
    assert tr.d == d
    head = sem.multispike(x, d=d, norm=1)
    assert torch.equal(head.value, ref)


def test_rounding_half_even_vs_half_up_at_exact_halves():
    x = torch.tensor([[[0.5, 1.5, 2.5, 3.5, -0.5, 4.5, 0.49, 2.51]]], dtype=torch.float64)
    even = sem.multispike(x, d=4, rounding="half_even").q.flatten().tolist()
    up = sem.multispike(x, d=4, rounding="half_up").q.flatten().tolist()
    assert even == [0.0, 2.0, 2.0, 4.0, 0.0, 4.0, 0.0, 3.0]
    assert up == [1.0, 2.0, 3.0, 4.0, 0.0, 4.0, 0.0, 3.0]
    ref_up = _loop(x, lambda t, i, v, s: _round_half_up(_clamp(v, 0, 4)))
    assert up == ref_up.flatten().tolist()


def test_leaky_integer_matches_formula():
    x = _rand(5, 2, 4, seed=1)
    d, leak = 4, 0.25

    def step(t, i, v, s):
        m = v if t == 0 else (s["m"] - s["q"]) * leak + v
        q = _round_half_even(_clamp(m, 0, d))
        s["m"], s["q"] = m, q
        return q

    tr = sem.leaky_integer(x, d=d, leak=leak)
    ref = _loop(x, step)
    _assert_fires(tr.q)
    assert torch.equal(tr.q, ref)
    assert torch.equal(tr.value, ref)  # SpikeYOLO emits q, not normalized


def _official_nilif(x, decay, d=4):
    """The official SpikeTrack ``mem_update.forward`` recurrence (Norm = D)."""
    out = torch.zeros_like(x)
    mem_old = 0
    spike = torch.zeros_like(x[0])
    for i in range(x.shape[0]):
        if i >= 1:
            mem = (mem_old - spike) * decay[i - 1].sigmoid() + x[i]
        else:
            mem = x[i]
        spike = torch.round(torch.clamp(mem, 0, d)) / d
        mem_old = mem.clone()
        out[i] = spike
    return out


def test_nilif_matches_official_recurrence_and_loop():
    x = _rand(3, 2, 6, seed=2)
    decay = torch.tensor([0.3, -1.2], dtype=torch.float64)
    tr = sem.nilif(x, d=4, decay=decay)
    _assert_fires(tr.q)
    assert torch.equal(tr.value, _official_nilif(x, decay))
    lam = torch.sigmoid(decay).tolist()

    def step(t, i, v, s):
        m = v if t == 0 else (s["m"] - s["q"] / 4) * lam[t - 1] + v  # subtracts the normalized spike
        q = _round_half_even(_clamp(m, 0, 4))
        s["m"], s["q"] = m, q
        return q

    assert torch.equal(tr.q, _loop(x, step))


def test_nilif_reset_uses_normalized_spike_not_integer():
    x = torch.tensor([[[4.0]], [[0.0]]], dtype=torch.float64)
    decay = torch.tensor([0.0], dtype=torch.float64)  # leak 0.5
    tr = sem.nilif(x, d=4, decay=decay)
    # m1 = (4 - 4/4) * 0.5 = 1.5 -> round half even = 2 (an integer reset would give 0)
    assert tr.q.flatten().tolist() == [4.0, 2.0]


def test_integer_if_hand_computed_sequence():
    x = torch.tensor([0.3, 0.4, 2.6, -1.0, 9.0, 0.0], dtype=torch.float64).reshape(6, 1, 1)
    # v: .3 -> q0 v.3 | .7 -> q1 v-.3 | 2.3 -> q2 v.3 | -.7 -> q0 v-.7 | 8.3 -> q8 v.3 | .3 -> q0
    tr = sem.integer_if(x, d=8)
    assert tr.q.flatten().tolist() == [0.0, 1.0, 2.0, 0.0, 8.0, 0.0]
    assert torch.equal(tr.value, tr.q / 8)


def test_integer_if_matches_loop():
    x = _rand(6, 3, 4, seed=3)

    def step(t, i, v, s):
        s["v"] = s.get("v", 0.0) + v
        q = _round_half_even(_clamp(s["v"], 0, 8))
        s["v"] -= q
        return q

    tr = sem.integer_if(x, d=8)
    _assert_fires(tr.q)
    assert torch.equal(tr.q, _loop(x, step))


def test_binary_lif_soft_reset():
    beta, th = 0.5, 1.0
    x = torch.tensor([0.8, 0.8, 0.1, 2.5, 0.0], dtype=torch.float64).reshape(5, 1, 1)
    # H: .8 (0) U.8 | 1.2 (1) U.2 | .2 (0) U.2 | 2.6 (1) U1.6 | .8 (0)
    tr = sem.binary_lif(x, beta=beta, threshold=th)
    assert tr.q.flatten().tolist() == [0.0, 1.0, 0.0, 1.0, 0.0]
    assert tr.d == 1

    y = _rand(5, 2, 4, seed=4, scale=1.0)

    def step(t, i, v, s, want_margin=False):
        h = beta * s.get("u", 0.0) + v
        spk = 1.0 if h > th else 0.0
        s["u"] = h - th * spk
        return abs(h - th) if want_margin else spk

    tr = sem.binary_lif(y, beta=beta, threshold=th)
    _assert_fires(tr.q)
    assert torch.equal(tr.q, _loop(y, step))
    assert torch.allclose(tr.margin, _loop(y, lambda t, i, v, s: step(t, i, v, s, True)))


def test_binary_lif_margin_is_distance_to_threshold():
    x = torch.tensor([0.7, 1.4], dtype=torch.float64).reshape(2, 1, 1)
    tr = sem.binary_lif(x, beta=0.5, threshold=1.0)
    # H0 = .7, H1 = .35 + 1.4 = 1.75
    assert torch.allclose(tr.margin.flatten(), torch.tensor([0.3, 0.75], dtype=torch.float64))


def test_margin_is_distance_to_nearest_half_boundary():
    x = torch.tensor([0.2, 0.5, 1.3, 2.9, 3.6, 7.0, -2.0], dtype=torch.float64).reshape(1, 1, -1)
    tr = sem.multispike(x, d=4)
    expected = [0.3, 0.0, 0.2, 0.4, 0.1, 3.5, 2.5]  # boundaries are 0.5, 1.5, 2.5, 3.5
    assert torch.allclose(tr.margin.flatten(), torch.tensor(expected, dtype=torch.float64))


def test_dilif_firing_limit_formula_and_range():
    d_init = 6
    g = torch.Generator().manual_seed(5)
    shifts = torch.linspace(-3, 3, 7, dtype=torch.float64)
    x = 3 * torch.randn(7, 3, 4, 4, generator=g, dtype=torch.float64) + shifts.reshape(7, 1, 1, 1)
    w, b = 1.3, -0.2
    d = sem.dynamic_firing_limit(x, d_init=d_init, gate_w=w, gate_b=b)
    assert d.shape == (7, 3)
    assert torch.equal(d, torch.round(d))
    assert d.min() >= 1 and d.max() <= 2 * d_init
    for t in range(7):
        for bi in range(3):
            mu = float(x[t, bi].mean())
            alpha = 1.0 / (1.0 + math.exp(-(w * mu + b)))
            assert d[t, bi] == _clamp(_round_half_even(2 * alpha * d_init), 1, 2 * d_init)
    # D follows the input mean: it grows along the time axis, whose mean was shifted upwards
    assert d[-1].min() > d[0].max()
    tr = sem.dynamic_integer(x, d_init=d_init, gate_w=w, gate_b=b)
    _assert_fires(tr.q)
    assert torch.equal(tr.d, d)
    assert (tr.q <= d.reshape(7, 3, 1, 1)).all()
    assert (tr.q == d.reshape(7, 3, 1, 1)).any()
    assert torch.equal(tr.value, tr.q / d_init)
    ref = torch.round(torch.minimum(x.clamp(min=0), d.reshape(7, 3, 1, 1)))
    assert torch.equal(tr.q, ref)


@pytest.mark.parametrize("bad", [0, -1, 2.5, True, "4", None])
def test_invalid_firing_limit_raises(bad):
    x = torch.zeros(1, 1, 2)
    for fn in (
        lambda: sem.multispike(x, d=bad),
        lambda: sem.leaky_integer(x, d=bad),
        lambda: sem.integer_if(x, d=bad),
        lambda: sem.nilif(x, d=bad, decay=torch.zeros(1)),
        lambda: sem.dynamic_integer(x, d_init=bad, gate_w=1.0, gate_b=0.0),
    ):
        with pytest.raises(ValueError, match="firing limit"):
            fn()


def test_check_firing_limit_accepts_integral_float_and_names_the_layer():
    assert sem.check_firing_limit(4.0) == 4
    with pytest.raises(ValueError, match="MyLayer"):
        sem.check_firing_limit(1.5, "MyLayer")


@pytest.mark.parametrize(
    "fn",
    [
        lambda x: sem.multispike(x, d=4),
        lambda x: sem.leaky_integer(x, d=4),
        lambda x: sem.integer_if(x, d=8),
        lambda x: sem.nilif(x, d=4, decay=torch.zeros(2, dtype=x.dtype)),
        lambda x: sem.dynamic_integer(x, d_init=6, gate_w=0.0, gate_b=0.0),
    ],
)
def test_straight_through_gradient_inside_range(fn):
    x = torch.tensor([0.3, 1.2, 2.7, 3.9], dtype=torch.float64).reshape(1, 1, 4).repeat(3, 1, 1)
    x.requires_grad_(True)
    fn(x).q.sum().backward()
    assert (x.grad[0] != 0).all()
    xs = torch.tensor([-1.0, 20.0], dtype=torch.float64).reshape(1, 1, 2).requires_grad_(True)
    sem.multispike(xs, d=4).q.sum().backward()
    assert xs.grad.flatten().tolist() == [0.0, 0.0]


def test_margin_is_computed_on_demand_from_the_membranes_of_that_call():
    """The margin is lazy (training and tracking never pay for it), but it still belongs to the
    call that made the trace: changing the input tensor afterwards (in place) does not change it,
    and a second access returns the same tensor."""
    x = torch.tensor([[0.2, 1.3]], dtype=torch.float64).reshape(2, 1, 1).clone()
    tr = sem.leaky_integer(x, d=4, leak=0.25)
    x.mul_(100.0)
    eager = sem.leaky_integer(x / 100.0, d=4, leak=0.25)
    assert torch.equal(tr.q, eager.q) and tr.q.sum() > 0
    assert torch.allclose(tr.margin, eager.margin) and tr.margin is tr.margin
    y = torch.tensor([0.2, 1.3, 2.6], dtype=torch.float64).reshape(1, 1, 3)
    st = sem.multispike(y, d=4)
    y.mul_(0.0)
    assert torch.allclose(st.margin.flatten(), torch.tensor([0.3, 0.2, 0.1], dtype=torch.float64))
