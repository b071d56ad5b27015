"""Trainable neuron modules and their registry."""

import pytest
import torch

from spikedeploy import neurons as sem
from spikedeploy.errors import ConfigError
from spikedeploy.models import neurons as mn

ALL_KINDS = ["ilif", "ilif_half_up", "leaky_ilif", "nilif", "integer_if", "binary_lif", "dilif"]


def _x(T=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(T, 2, 4, 5, generator=g) * 2 + 0.5


def test_registry_has_all_kinds():
    assert sorted(mn.NEURON_KINDS) == sorted(ALL_KINDS)
    for kind in ALL_KINDS:
        n = mn.make_neuron(kind)
        assert isinstance(n, mn.SpikingNeuron)
        assert n.kind == kind


def test_register_rejects_duplicates():
    with pytest.raises(ValueError, match="already registered"):
        mn.register_neuron("ilif", mn.MultiSpike)

    @mn.register_neuron("test_tmp_kind")
    class Tmp(mn.MultiSpike):
        pass

    try:
        assert mn.make_neuron("test_tmp_kind").__class__ is Tmp
        with pytest.raises(ValueError, match="test_tmp_kind"):
            mn.register_neuron("test_tmp_kind")(Tmp)
    finally:
        del mn.NEURON_KINDS["test_tmp_kind"]


def test_unknown_kind_lists_known_kinds():
    with pytest.raises(ConfigError) as exc:
        mn.make_neuron("lif9000")
    msg = str(exc.value)
    assert "lif9000" in msg
    for kind in ALL_KINDS:
        assert kind in msg


@pytest.mark.parametrize("kind,kw", [("ilif", {"d": 2.5}), ("nilif", {"d": 0}), ("integer_if", {"d": -3}),
                                     ("leaky_ilif", {"d": "4"}), ("dilif", {"d_init": 1.5})])
def test_bad_firing_limit(kind, kw):
    with pytest.raises(ConfigError, match=kind):
        mn.make_neuron(kind, **kw)
    cls = type(mn.make_neuron(kind))
    with pytest.raises(ValueError, match=cls.__name__):
        cls(**kw)


def test_bad_keyword_is_config_error():
    with pytest.raises(ConfigError, match="binary_lif"):
        mn.make_neuron("binary_lif", d=3)
    with pytest.raises(ConfigError, match="threshold"):
        mn.make_neuron("binary_lif", threshold=0.0)
    with pytest.raises(ConfigError, match="rounding"):
        mn.make_neuron("ilif", rounding="up")


def _reference(module, x):
    """The spikedeploy.neurons call the module must delegate to."""
    if isinstance(module, mn.MultiSpike):
        return sem.multispike(x, d=module.d, norm=module.norm, rounding=module.rounding)
    if isinstance(module, mn.LeakyIntegerLIF):
        return sem.leaky_integer(x, d=module.d, leak=module.leak)
    if isinstance(module, mn.NILIF):
        return sem.nilif(x, d=module.d, decay=module.decay, norm=module.norm)
    if isinstance(module, mn.IntegerIF):
        return sem.integer_if(x, d=module.d)
    if isinstance(module, mn.BinaryLIF):
        return sem.binary_lif(x, beta=module.beta, threshold=module.threshold)
    if isinstance(module, mn.DILIF):
        return sem.dynamic_integer(x, d_init=module.d_init, gate_w=module.gate_w, gate_b=module.gate_b,
                                   leak=module.leak)
    raise AssertionError(type(module))


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_module_matches_semantics(kind):
    n = mn.make_neuron(kind)
    x = _x()
    tr = n.trace(x)
    ref = _reference(n, x)
    assert (tr.q > 0).any()
    assert torch.equal(tr.q, ref.q)
    assert torch.equal(n(x), ref.value)
    assert n(x).shape == x.shape


def test_module_attributes():
    m = mn.MultiSpike(d=4, norm=1)
    assert (m.d, m.norm, m.rounding) == (4, 1.0, "half_even")
    h = mn.make_neuron("ilif_half_up")
    assert (h.rounding, h.kind, h.norm) == ("half_up", "ilif_half_up", 4.0)
    leaky = mn.LeakyIntegerLIF()
    assert (leaky.d, leaky.leak, leaky.norm) == (4, 0.25, 1.0)
    ni = mn.NILIF(time_steps=4)
    assert isinstance(ni.decay, torch.nn.Parameter) and ni.decay.shape == (3,)
    assert torch.allclose(ni.leaks, torch.full((3,), 0.25))
    assert ni.reset_scale == 0.25 and ni.norm == 4.0
    assert "decay" in dict(ni.named_parameters())
    iff = mn.IntegerIF()
    assert (iff.d, iff.norm) == (8, 8.0)
    b = mn.BinaryLIF(beta=0.7, threshold=0.5)
    assert (b.beta, b.threshold, b.d) == (0.7, 0.5, 1)
    di = mn.DILIF(d_init=3, gate_w=0.5, gate_b=-1.0)
    assert (di.d_init, di.d_max, di.norm) == (3, 6, 3.0)
    assert set(dict(di.named_parameters())) == {"gate_w", "gate_b"}
    assert di.gate_w.shape == () and float(di.gate_b.detach()) == -1.0


def test_nilif_rejects_too_many_steps():
    n = mn.NILIF(time_steps=3)
    n(_x(T=3))
    n(_x(T=1))
    with pytest.raises(ValueError, match=r"T=4.*time_steps=3"):
        n(_x(T=4))


def test_dilif_firing_limit_varies_per_sample():
    n = mn.DILIF(d_init=6, gate_w=2.0, gate_b=0.0)
    x = _x(T=2)
    x[:, 1] += 3.0
    d = n.firing_limit(x)
    assert d.shape == (2, 2)
    assert (d[:, 1] > d[:, 0]).all()
    tr = n.trace(x)
    assert (tr.q <= d.reshape(2, 2, 1, 1)).all()


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_training_reduces_loss(kind):
    torch.manual_seed(0)
    neuron = mn.make_neuron(kind)
    lin = torch.nn.Linear(6, 6)
    x = torch.randn(3, 8, 6)
    target = (torch.rand(3, 8, 6) < 0.5).float() * float(neuron(torch.full((1, 1, 1), 100.0)).max().detach())
    params = list(lin.parameters()) + list(neuron.parameters())
    opt = torch.optim.Adam(params, lr=0.05)

    def loss_fn():
        return ((neuron(lin(x) * 2) - target) ** 2).mean()

    first = float(loss_fn().detach())
    for _ in range(30):
        opt.zero_grad()
        loss = loss_fn()
        loss.backward()
        assert lin.weight.grad.abs().sum() > 0
        opt.step()
    assert float(loss_fn().detach()) < first


@pytest.mark.parametrize("kind", ["nilif", "dilif"])
def test_neuron_parameters_get_gradients(kind):
    neuron = mn.make_neuron(kind)
    x = _x(T=3).requires_grad_(True)
    neuron(x * 3).sum().backward()
    grads = [p.grad for p in neuron.parameters()]
    assert grads and all(g is not None for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)
