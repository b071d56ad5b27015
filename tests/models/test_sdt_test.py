"""SDTTestNet with every neuron kind: shapes, firing in every neuron layer, gradients."""

import pytest
import torch

from spikedeploy.errors import ConfigError
from spikedeploy.models import BUILTIN_MODELS, get_model
from spikedeploy.models.layers import FrozenBatchNorm2d, SpikeLinearAttention
from spikedeploy.models.neurons import NEURON_KINDS, NILIF, SpikingNeuron
from spikedeploy.models.sdt_test import SDTTestNet, init_for_spiking

KINDS = sorted(NEURON_KINDS)
N_NEURON_LAYERS = 14


def _record_traces(model):
    """Forward hooks on every SpikingNeuron: name -> NeuronTrace of its last call."""
    traces = {}
    for name, mod in model.named_modules():
        if isinstance(mod, SpikingNeuron):
            def hook(mod, inputs, output, name=name):
                traces[name] = mod.trace(inputs[0].detach())
            mod.register_forward_hook(hook)
    return traces


def _inputs(T, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(T, 2, 3, 16, 16, generator=g)


@pytest.mark.parametrize("T", [1, 3])
@pytest.mark.parametrize("kind", KINDS)
def test_every_layer_fires_and_none_saturates(kind, T):
    model = init_for_spiking(SDTTestNet(neuron=kind, time_steps=4), seed=0).eval()
    traces = _record_traces(model)
    with torch.no_grad():
        y = model(_inputs(T))
    assert y.shape == (T, 2, 10)
    assert torch.isfinite(y).all()
    assert len(traces) == N_NEURON_LAYERS
    for name, tr in traces.items():
        d = tr.d if isinstance(tr.d, int) else tr.d.reshape(tr.d.shape + (1,) * (tr.q.dim() - 2))
        fired = float((tr.q > 0).float().mean())
        saturated = float((tr.q >= d).float().mean())
        assert fired > 0.02, f"{kind} T={T}: {name} fires in only {fired:.3%} of places"
        assert saturated < 0.9, f"{kind} T={T}: {name} saturates in {saturated:.1%} of places"


@pytest.mark.parametrize("kind", KINDS)
def test_gradients_reach_the_stem(kind):
    model = init_for_spiking(SDTTestNet(neuron=kind, time_steps=4), seed=0)
    model(_inputs(3)).pow(2).mean().backward()
    assert model.stem_conv.weight.grad is not None
    assert model.stem_conv.weight.grad.abs().sum() > 0
    assert model.attn.pos_embed.grad.abs().sum() > 0


def test_init_is_deterministic_and_seed_dependent():
    a = init_for_spiking(SDTTestNet(), seed=3).state_dict()
    b = init_for_spiking(SDTTestNet(), seed=3).state_dict()
    c = init_for_spiking(SDTTestNet(), seed=4).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a if a[k].is_floating_point())


def test_init_restores_training_mode():
    model = SDTTestNet().train()
    init_for_spiking(model)
    assert all(m.training for m in model.modules())


def test_structure():
    model = SDTTestNet(neuron="nilif", time_steps=3)
    neurons = [m for m in model.modules() if isinstance(m, SpikingNeuron)]
    assert len(neurons) == N_NEURON_LAYERS
    assert all(isinstance(n, NILIF) and n.time_steps == 3 for n in neurons)
    assert any(isinstance(m, FrozenBatchNorm2d) for m in model.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    attn = [m for m in model.modules() if isinstance(m, SpikeLinearAttention)]
    assert len(attn) == 1 and attn[0].num_heads == 2 and attn[0].scale == pytest.approx(8 ** -0.5 * 2)
    assert model.attn.pos_embed.shape == (1, 16, 64)
    with pytest.raises(ValueError, match="T=4"):
        model(_inputs(4))


def test_neuron_kwargs_are_passed():
    model = SDTTestNet(neuron="ilif", neuron_kwargs={"d": 2})
    assert {m.d for m in model.modules() if isinstance(m, SpikingNeuron)} == {2}
    with pytest.raises(ConfigError, match="nope"):
        SDTTestNet(neuron="nope")


def test_builtin_registry():
    assert "sdt-test" in BUILTIN_MODELS
    model = get_model("sdt-test", neuron="binary_lif", num_classes=5)
    assert isinstance(model, SDTTestNet) and model.neuron_kind == "binary_lif"
    assert model.head.out_features == 5
    with pytest.raises(ConfigError, match="sdt-test"):
        get_model("resnet-9000")


def test_fx_traceable_with_neurons_and_attention_as_leaves():
    class Tracer(torch.fx.Tracer):
        def is_leaf_module(self, m, qualname):
            return isinstance(m, (SpikingNeuron, SpikeLinearAttention)) or super().is_leaf_module(m, qualname)

    model = init_for_spiking(SDTTestNet(neuron="ilif"), seed=0).eval()
    graph = Tracer().trace(model)
    gm = torch.fx.GraphModule(model, graph)
    x = _inputs(3)
    with torch.no_grad():
        assert torch.equal(gm(x), model(x))
    leaves = {n.target for n in graph.nodes if n.op == "call_module"}
    assert "attn.attn" in leaves and "down_spike" in leaves
